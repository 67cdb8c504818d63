//! The kube-scheduler binary's `--secure-port` against a real apiserver and
//! etcd with RBAC on: HTTPS only, health for anyone, `/metrics` for whom the
//! apiserver allows (a TokenReview for a bearer token, a client certificate of
//! `--client-ca-file`, then a SubjectAccessReview), plain HTTP refused. Every
//! request is made with the real curl.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiserver::testing::{free_port, TestServer, TEST_TOKEN};
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

/// The binary, killed on drop.
struct Scheduler(Child);

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (status code, body) of a curl run; code 0 when no HTTP answer came.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn write(dir: &Path, name: &str, data: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write file");
    p.display().to_string()
}

fn message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    assert_eq!(v["kind"], "Status", "a Status body: {body}");
    v["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_port_delegates_authentication_and_authorization() {
    let ts = TestServer::start_with(|cfg| {
        cfg.authorization = vec![apiserver::authz::Mode::Rbac];
        cfg.tokens = apiserver::authn::TokenFile::parse(&format!(
            "{TEST_TOKEN},token-user,42,\"system:masters\"\n\
             monitor-token,prometheus,7,\"system:monitoring\"\n\
             nobody-token,nobody,8\n"
        ))
        .expect("tokens");
    });
    let client = ts.client().await;
    // the bootstrap RBAC (system:monitoring and its binding) is in place
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while roles
        .get_opt("system:monitoring")
        .await
        .ok()
        .flatten()
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "no system:monitoring ClusterRole"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // the apiserver's TokenReview answers from its own authenticators
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review = |token: &str| -> TokenReview {
        serde_json::from_value(json!({"apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview", "metadata": {}, "spec": {"token": token}}))
        .expect("review")
    };
    let r = reviews
        .create(&PostParams::default(), &review("monitor-token"))
        .await
        .expect("token review");
    let st = serde_json::to_value(r.status).expect("status");
    assert_eq!(st["authenticated"], true, "{st}");
    assert_eq!(st["user"]["username"], "prometheus");
    assert_eq!(st["user"]["uid"], "7");
    assert_eq!(
        st["user"]["groups"],
        json!(["system:monitoring", "system:authenticated"])
    );
    let r = reviews
        .create(&PostParams::default(), &review("no-such-token"))
        .await
        .expect("token review");
    let st = serde_json::to_value(r.status).expect("status");
    assert_ne!(st["authenticated"], true, "{st}");
    let err = reviews
        .create(&PostParams::default(), &review(""))
        .await
        .expect_err("an empty token");
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 400 && e.message.contains("token is required")),
        "{err}"
    );

    let dir = ts.dir.path();
    let cert_dir: PathBuf = dir.join("scheduler-certs");
    let ca = write(dir, "client-ca.pem", &ts.pki.ca_pem);
    let port = free_port();
    let _sched = Scheduler(
        Command::new(env!("CARGO_BIN_EXE_kube-scheduler"))
            .arg(format!("--kubeconfig={}", ts.kubeconfig.display()))
            .args(["--bind-address=127.0.0.1", "--leader-elect=false"])
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", cert_dir.display()))
            .arg(format!("--client-ca-file={ca}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kube-scheduler"),
    );
    let base = format!("https://127.0.0.1:{port}");
    let serving_ca = cert_dir.join("kube-scheduler.crt").display().to_string();

    // /healthz for anyone, over TLS verified with the self-signed pair of --cert-dir
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = curl(&["--cacert", &serving_ca, &format!("{base}/healthz")]);
        if code == 200 {
            assert_eq!(body, "ok");
            break;
        }
        assert!(Instant::now() < deadline, "no /healthz: {code} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(cert_dir.join("kube-scheduler.key").exists());
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(&["-k", &format!("{base}/readyz")]).0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(curl(&["-k", &format!("{base}/livez")]), (200, "ok".into()));

    // /metrics: anonymous is forbidden, with upstream's message
    let (code, body) = curl(&["-k", &format!("{base}/metrics")]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        message(&body),
        "forbidden: User \"system:anonymous\" cannot get path \"/metrics\""
    );
    // a token of system:monitoring may read it (TokenReview, then SubjectAccessReview)
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let (code, body) = curl(&[
        "-k",
        "-H",
        &bearer("monitor-token"),
        &format!("{base}/metrics"),
    ]);
    assert_eq!(code, 200, "{body}");
    // the text format (nothing observed yet may mean no family at all)
    assert!(!body.contains("\"kind\""), "{body}");
    // an authenticated user without the role is not
    let (code, body) = curl(&[
        "-k",
        "-H",
        &bearer("nobody-token"),
        &format!("{base}/metrics"),
    ]);
    assert_eq!(code, 403, "{body}");
    assert!(
        message(&body).starts_with("forbidden: User \"nobody\" cannot get path \"/metrics\""),
        "{body}"
    );
    // a token the apiserver does not know is a 401, even on an always-allowed path
    for path in ["/metrics", "/healthz"] {
        let (code, body) = curl(&["-k", "-H", &bearer("bogus"), &format!("{base}{path}")]);
        assert_eq!(code, 401, "{path}: {body}");
        assert_eq!(message(&body), "Unauthorized");
    }
    // a client certificate of --client-ca-file in group system:monitoring
    let (c, k) = ts.pki.client("metrics-scraper", &["system:monitoring"]);
    let (c, k) = (write(dir, "scraper.crt", &c), write(dir, "scraper.key", &k));
    let (code, body) = curl(&["-k", "--cert", &c, "--key", &k, &format!("{base}/metrics")]);
    assert_eq!(code, 200, "{body}");
    let (c, k) = ts.pki.client("someone", &[]);
    let (c, k) = (write(dir, "someone.crt", &c), write(dir, "someone.key", &k));
    let (code, body) = curl(&["-k", "--cert", &c, "--key", &k, &format!("{base}/metrics")]);
    assert_eq!(code, 403, "{body}");
    assert!(message(&body).contains("User \"someone\""), "{body}");
    // system:masters needs no review
    let (c, k) = (
        write(dir, "admin.crt", &ts.pki.admin_cert),
        write(dir, "admin.key", &ts.pki.admin_key),
    );
    assert_eq!(
        curl(&["-k", "--cert", &c, "--key", &k, &format!("{base}/metrics")]).0,
        200
    );

    // no plaintext: plain HTTP gets upstream's 400, and TLS older than 1.2 no answer
    let (code, body) = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("Client sent an HTTP request to an HTTPS server."),
        "{body}"
    );
    let (code, _) = curl(&[
        "-k",
        "--tlsv1.0",
        "--tls-max",
        "1.1",
        &format!("{base}/healthz"),
    ]);
    assert_eq!(code, 0, "TLS 1.1 must be refused");
}
