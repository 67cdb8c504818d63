//! Service-account tokens end to end: the real kubectl asks for a token
//! (`kubectl create token`, the TokenRequest API), signed with an RSA key
//! made by openssl; a client with only that token is the service account
//! (`kubectl auth whoami`) and may use the API; a token bound to a pod dies
//! with the pod; bad requests get upstream's 422.

use std::path::Path;
use std::process::Command;

use apiserver::testing::{kubectl_path, TestServer};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A kubeconfig with the server's CA and only a bearer token.
fn token_kubeconfig(ts: &TestServer, path: &Path, token: &str) {
    let ca = ts.dir.path().join("ca.pem");
    std::fs::write(&ca, &ts.pki.ca_pem).expect("ca");
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: default}}\ncurrent-context: c\n",
            ts.addr,
            ca.display()
        ),
    )
    .expect("kubeconfig");
}

fn as_token(kc: &Path, args: &[&str]) -> std::process::Output {
    Command::new(kubectl_path())
        .arg(format!("--kubeconfig={}", kc.display()))
        .args(args)
        .output()
        .expect("kubectl")
}

#[test]
fn service_account_tokens() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key = keys.path().join("sa.key");
    let public = keys.path().join("sa.pub");
    openssl(&["genrsa", "-out", &key.to_string_lossy(), "2048"]);
    openssl(&[
        "rsa",
        "-in",
        &key.to_string_lossy(),
        "-pubout",
        "-out",
        &public.to_string_lossy(),
    ]);
    let key_pem = std::fs::read(&key).expect("key");
    let pub_pem = std::fs::read(&public).expect("pub");
    let ts = TestServer::start_with(|cfg| {
        let signer =
            apiserver::satoken::Signer::from_pem("sa.key", &key_pem, ISSUER).expect("signer");
        let mut v = apiserver::satoken::Verifier::new(vec![ISSUER.into()], vec![ISSUER.into()]);
        v.add_pem("sa.pub", &pub_pem).expect("verifier");
        cfg.sa_signer = Some(std::sync::Arc::new(signer));
        cfg.sa_verifier = v;
    });
    ts.kubectl_ok(&["create", "serviceaccount", "robot"]);
    ts.kubectl_ok(&["run", "p", "--image=busybox", "--restart=Never"]);

    // a token bound to the pod
    let bound = ts.kubectl_ok(&[
        "create",
        "token",
        "robot",
        "--bound-object-kind=Pod",
        "--bound-object-name=p",
        "--duration=10m",
    ]);
    let free = ts.kubectl_ok(&["create", "token", "robot"]);
    let bound_kc = ts.dir.path().join("bound.kubeconfig");
    let free_kc = ts.dir.path().join("free.kubeconfig");
    token_kubeconfig(&ts, &bound_kc, bound.trim());
    token_kubeconfig(&ts, &free_kc, free.trim());

    let who = as_token(
        &bound_kc,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
    );
    let who_text = String::from_utf8_lossy(&who.stdout);
    assert!(
        who.status.success(),
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    assert!(
        who_text.starts_with("system:serviceaccount:default:robot "),
        "{who_text}"
    );
    assert!(
        who_text.contains("system:serviceaccounts:default"),
        "{who_text}"
    );
    let pods = as_token(&bound_kc, &["get", "pods", "-o", "name"]);
    assert_eq!(String::from_utf8_lossy(&pods.stdout).trim(), "pod/p");

    // the pod goes: its token with it; the unbound one lives on
    ts.kubectl_ok(&[
        "delete",
        "pod",
        "p",
        "--wait=false",
        "--grace-period=0",
        "--force",
    ]);
    let mut refused = false;
    for _ in 0..50 {
        let out = as_token(&bound_kc, &["get", "pods"]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("Unauthorized"), "{err}");
            refused = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(refused, "a token bound to a deleted pod is refused");
    let still = as_token(
        &free_kc,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&still.stdout),
        "system:serviceaccount:default:robot"
    );

    // a deleted service account takes its tokens with it
    ts.kubectl_ok(&["delete", "serviceaccount", "robot"]);
    let gone = as_token(&free_kc, &["get", "pods"]);
    assert!(!gone.status.success());

    // upstream's validation
    ts.kubectl_ok(&["create", "serviceaccount", "robot2"]);
    let short = ts.kubectl(&["create", "token", "robot2", "--duration=1m"]);
    let err = String::from_utf8_lossy(&short.stderr);
    assert!(
        !short.status.success() && err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let missing = ts.kubectl(&[
        "create",
        "token",
        "robot2",
        "--bound-object-kind=Pod",
        "--bound-object-name=nope",
    ]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && err.contains("pods \"nope\" not found"),
        "{err}"
    );
    let nosa = ts.kubectl(&["create", "token", "ghost"]);
    assert!(String::from_utf8_lossy(&nosa.stderr).contains("serviceaccounts \"ghost\" not found"));
}
