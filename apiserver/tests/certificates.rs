//! Node TLS bootstrap on the apiserver side, with the real kubectl: bootstrap
//! token authentication (`--enable-bootstrap-token-auth`), the
//! certificates.k8s.io/v1 CertificateSigningRequest API (requester filled in
//! by the server, request validation, /approval and /status with upstream's
//! CertificateApproval, CertificateSigning and CertificateSubjectRestriction
//! admission), `kubectl certificate approve|deny` and `kubectl get csr`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use apiserver::testing::{kubectl_path, raw_request, write_kubeconfig, TestServer};
use serde_json::{json, Value};

const TOKEN: &str = "abcdef.0123456789abcdef";
const KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).trim().to_string(),
    )
}

fn kubectl_as(kc: &Path, args: &[&str]) -> Output {
    Command::new(kubectl_path())
        .arg(format!("--kubeconfig={}", kc.display()))
        .args(args)
        .output()
        .expect("kubectl")
}

fn token_kubeconfig(ts: &TestServer, name: &str, token: &str) -> PathBuf {
    use base64::Engine;
    let path = ts.dir.path().join(format!("{name}.kubeconfig"));
    let ca = base64::engine::general_purpose::STANDARD.encode(&ts.pki.ca_pem);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: https://{}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: {name}\ncurrent-context: local\n",
        ts.addr
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

fn cert_kubeconfig(ts: &TestServer, user: &str, groups: &[&str]) -> (PathBuf, String, String) {
    let (cert, key) = ts.pki.client(user, groups);
    let path = ts.dir.path().join(format!("{user}.kubeconfig"));
    write_kubeconfig(&path, ts.addr, &ts.pki.ca_pem, &cert, &key);
    (path, cert, key)
}

/// curl with a bearer token: (HTTP code, JSON body).
fn with_token(ts: &TestServer, token: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let ca = ts.dir.path().join("ca-token.pem");
    std::fs::write(&ca, &ts.pki.ca_pem).expect("ca");
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(&ca)
        .args(["-X", method, "-H", "Content-Type: application/json", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args(["--data-binary", body])
        .arg(format!("{}{path}", ts.url()))
        .output()
        .expect("curl");
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    let (resp, code) = t.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(resp).unwrap_or(Value::Null),
    )
}

fn whoami(ts: &TestServer, token: &str) -> (u16, Value) {
    with_token(
        ts,
        token,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
    )
}

/// A PEM certificate request made by openssl (EC P-256).
fn csr_pem(dir: &Path, subject: &str) -> String {
    let key = dir.join("csr.key");
    let req = dir.join("csr.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&req)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl req: {}", text(&out).1);
    std::fs::read_to_string(req).expect("csr pem")
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn csr_json(name: &str, pem: &str, signer: &str, usages: &[&str]) -> Value {
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": b64(pem),
            "signerName": signer,
            "usages": usages,
            "expirationSeconds": 86400,
            "username": "someone-else",
            "groups": ["system:masters"],
        },
    })
}

/// Retry `f` until it returns Some (RBAC changes reach the authorizer through the watch cache).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bootstrap_secret(ts: &TestServer, id: &str, secret: &str, extra: &[&str]) {
    let mut args = vec![
        "create".to_string(),
        "secret".into(),
        "generic".into(),
        format!("bootstrap-token-{id}"),
        "-n".into(),
        "kube-system".into(),
        "--type=bootstrap.kubernetes.io/token".into(),
        format!("--from-literal=token-id={id}"),
        format!("--from-literal=token-secret={secret}"),
        "--from-literal=usage-bootstrap-authentication=true".into(),
        "--from-literal=usage-bootstrap-signing=true".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ts.kubectl_ok(&args);
}

#[test]
fn node_tls_bootstrap_api() {
    let ts = TestServer::start_with(|cfg| {
        cfg.authorization = vec![apiserver::authz::Mode::Node, apiserver::authz::Mode::Rbac];
        cfg.bootstrap_token_auth = true;
    });

    // --- bootstrap tokens ---------------------------------------------------
    bootstrap_secret(
        &ts,
        "abcdef",
        "0123456789abcdef",
        &["--from-literal=auth-extra-groups=system:bootstrappers:kubeadm:default-node-token"],
    );
    bootstrap_secret(
        &ts,
        "expird",
        "0123456789abcdef",
        &["--from-literal=expiration=2020-01-01T00:00:00Z"],
    );
    let user = eventually("the bootstrap token to authenticate", || {
        let (code, v) = whoami(&ts, TOKEN);
        (code == 201).then_some(v)
    });
    assert_eq!(
        user["status"]["userInfo"]["username"],
        "system:bootstrap:abcdef"
    );
    assert_eq!(
        user["status"]["userInfo"]["groups"],
        json!([
            "system:bootstrappers",
            "system:bootstrappers:kubeadm:default-node-token",
            "system:authenticated"
        ])
    );
    // kubectl sees the same identity
    let boot = token_kubeconfig(&ts, "bootstrapper", TOKEN);
    let who = kubectl_as(
        &boot,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(text(&who).0, "system:bootstrap:abcdef", "{}", text(&who).1);
    // an expired token, a wrong secret, an unknown id: 401 as any bad token
    for bad in [
        "expird.0123456789abcdef",
        "abcdef.0123456789abcdee",
        "zzzzzz.0123456789abcdef",
    ] {
        let (code, v) = whoami(&ts, bad);
        assert_eq!(
            (code, v["reason"].as_str()),
            (401, Some("Unauthorized")),
            "{bad}: {v}"
        );
    }
    let denied = kubectl_as(
        &token_kubeconfig(&ts, "expired", "expird.0123456789abcdef"),
        &["auth", "whoami"],
    );
    assert!(
        text(&denied).1.contains("Unauthorized"),
        "{}",
        text(&denied).1
    );

    // --- a bootstrapper creates a CSR ---------------------------------------
    // (kubeadm's binding: system:bootstrappers may create CSRs)
    ts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "kubeadm:kubelet-bootstrap",
        "--clusterrole=system:node-bootstrapper",
        "--group=system:bootstrappers",
    ]);
    let pem = csr_pem(ts.dir.path(), "/O=system:nodes/CN=system:node:n1");
    let node_csr = csr_json(
        "node-csr",
        &pem,
        KUBELET_SIGNER,
        &["digital signature", "client auth"],
    );
    let created = eventually("the bootstrapper to create a CSR", || {
        let (code, v) = with_token(
            &ts,
            TOKEN,
            "POST",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests",
            &node_csr.to_string(),
        );
        (code != 403).then_some((code, v))
    });
    assert_eq!(created.0, 201, "{}", created.1);
    let spec = &created.1["spec"];
    assert_eq!(
        spec["username"], "system:bootstrap:abcdef",
        "requester from the server"
    );
    assert_eq!(
        spec["groups"],
        json!([
            "system:bootstrappers",
            "system:bootstrappers:kubeadm:default-node-token",
            "system:authenticated"
        ])
    );
    assert_eq!(created.1["status"], json!({}));
    // the bootstrapper reads it back (get on csr is in system:node-bootstrapper)
    let got = kubectl_as(
        &boot,
        &[
            "get",
            "csr",
            "node-csr",
            "-o",
            "jsonpath={.spec.signerName}",
        ],
    );
    assert_eq!(text(&got).0, KUBELET_SIGNER, "{}", text(&got).1);

    // an invalid request is 422 with a field cause
    let mut bad = csr_json(
        "bad-csr",
        "not a certificate request",
        KUBELET_SIGNER,
        &["client auth"],
    );
    bad["spec"]["expirationSeconds"] = json!(60);
    let (code, v) = with_token(
        &ts,
        TOKEN,
        "POST",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        &bad.to_string(),
    );
    assert_eq!((code, v["reason"].as_str()), (422, Some("Invalid")), "{v}");
    let causes: Vec<&str> = v["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(
        causes,
        vec!["spec.request", "spec.expirationSeconds"],
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("PEM block type must be CERTIFICATE REQUEST")),
        "{v}"
    );

    // --- approval -----------------------------------------------------------
    // jane may update csr/approval but holds no "approve" on any signer
    let role = |name: &str, rules: Value| {
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                          "metadata": {"name": name}, "rules": rules});
        ts.kubectl_stdin_ok(&["apply", "-f", "-"], &role.to_string());
    };
    role(
        "csr-updater",
        json!([
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["get", "list"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests/approval", "certificatesigningrequests/status"], "verbs": ["update"]},
        ]),
    );
    role(
        "kubelet-client-signer",
        json!([{"apiGroups": ["certificates.k8s.io"], "resources": ["signers"], "verbs": ["sign"],
                "resourceNames": ["kubernetes.io/*"]}]),
    );
    for u in ["jane", "signer"] {
        ts.kubectl_ok(&[
            "create",
            "clusterrolebinding",
            &format!("{u}-csr-updater"),
            "--clusterrole=csr-updater",
            &format!("--user={u}"),
        ]);
    }
    ts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "signer-signs",
        "--clusterrole=kubelet-client-signer",
        "--user=signer",
    ]);
    let (jane, _, _) = cert_kubeconfig(&ts, "jane", &[]);
    let refusal = eventually("jane to reach the approval admission", || {
        let o = kubectl_as(&jane, &["certificate", "approve", "node-csr"]);
        let err = text(&o).1;
        (!o.status.success() && err.contains("user not permitted")).then_some(err)
    });
    assert!(
        refusal.contains(&format!(
            "certificatesigningrequests.certificates.k8s.io \"node-csr\" is forbidden: user not permitted to approve requests with signerName \"{KUBELET_SIGNER}\""
        )),
        "{refusal}"
    );

    // an admin (system:masters) approves with the real kubectl
    let ok = ts.kubectl_ok(&["certificate", "approve", "node-csr"]);
    assert!(
        ok.contains("certificatesigningrequest.certificates.k8s.io/node-csr approved"),
        "{ok}"
    );
    let approved = ts.kubectl_ok(&["get", "csr", "node-csr", "-o", "json"]);
    let approved: Value = serde_json::from_str(&approved).expect("csr json");
    let cond = &approved["status"]["conditions"][0];
    assert_eq!(
        (cond["type"].as_str(), cond["status"].as_str()),
        (Some("Approved"), Some("True"))
    );
    assert_eq!(cond["reason"], "KubectlApprove");
    assert!(cond["lastUpdateTime"].is_string() && cond["lastTransitionTime"].is_string());
    let table = ts.kubectl_ok(&["get", "csr"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        vec![
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ]
    );
    let row: Vec<&str> = lines
        .find(|l| l.starts_with("node-csr "))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row.len(), 6, "{table}");
    assert_eq!(
        (row[2], row[3], row[4], row[5]),
        (KUBELET_SIGNER, "system:bootstrap:abcdef", "24h", "Approved"),
        "{table}"
    );

    // --- signing ------------------------------------------------------------
    let cert = &ts.pki.ca_pem;
    let mut signed = approved.clone();
    signed["status"]["certificate"] = json!(b64(cert));
    let status_path = "/apis/certificates.k8s.io/v1/certificatesigningrequests/node-csr/status";
    // jane may update /status but may not sign
    let (_, jane_cert, jane_key) = cert_kubeconfig(&ts, "jane", &[]);
    let jane_dir = tempfile::tempdir().expect("dir");
    let (code, v) = raw_request(
        &ts.url(),
        &jane_dir.path().join("ca.pem"),
        Some((&jane_cert, &jane_key, jane_dir.path())),
        "PUT",
        status_path,
        "application/json",
        signed.to_string().as_bytes(),
        &ts.pki.ca_pem,
    );
    assert_eq!(code, 403, "{v}");
    assert_eq!(
        v["message"],
        format!("certificatesigningrequests.certificates.k8s.io \"node-csr\" is forbidden: user not permitted to sign requests with signerName \"{KUBELET_SIGNER}\"")
    );
    // the signer (sign on kubernetes.io/*) sets the certificate
    let (_, signer_cert, signer_key) = cert_kubeconfig(&ts, "signer", &[]);
    let signer_dir = tempfile::tempdir().expect("dir");
    let (code, v) = eventually("the signer's grant", || {
        let r = raw_request(
            &ts.url(),
            &signer_dir.path().join("ca.pem"),
            Some((&signer_cert, &signer_key, signer_dir.path())),
            "PUT",
            status_path,
            "application/json",
            signed.to_string().as_bytes(),
            &ts.pki.ca_pem,
        );
        (r.0 != 403).then_some(r)
    });
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"]["certificate"], json!(b64(cert)));
    assert_eq!(
        v["status"]["conditions"][0]["type"], "Approved",
        "approval kept"
    );
    let cond = ts.kubectl_ok(&["get", "csr", "node-csr", "--no-headers"]);
    assert!(cond.trim_end().ends_with("Approved,Issued"), "{cond}");
    // once issued, the certificate does not change
    let mut again = v.clone();
    again["status"]["certificate"] = json!(b64(&ts.pki.admin_cert));
    let (code, v) = raw_request(
        &ts.url(),
        &signer_dir.path().join("ca.pem"),
        Some((&signer_cert, &signer_key, signer_dir.path())),
        "PUT",
        status_path,
        "application/json",
        again.to_string().as_bytes(),
        &ts.pki.ca_pem,
    );
    assert_eq!(code, 422, "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("updates may not modify existing certificate content")),
        "{v}"
    );
    // the main resource changes neither spec nor status
    let mut edited = again.clone();
    edited["spec"]["usages"] = json!(["server auth"]);
    edited["metadata"]["labels"] = json!({"seen": "yes"});
    if let Some(m) = edited["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    let (code, v) = ts.raw(
        "PUT",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests/node-csr",
        "application/json",
        edited.to_string().as_bytes(),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["spec"]["usages"],
        json!(["digital signature", "client auth"])
    );
    assert_eq!(v["status"]["certificate"], json!(b64(cert)));
    assert_eq!(v["metadata"]["labels"]["seen"], "yes");

    // --- deny, and the subject restriction ----------------------------------
    let other = csr_json(
        "other-csr",
        &pem,
        KUBELET_SIGNER,
        &["digital signature", "client auth"],
    );
    ts.kubectl_stdin_ok(&["create", "-f", "-"], &other.to_string());
    let out = ts.kubectl_ok(&["certificate", "deny", "other-csr"]);
    assert!(out.contains("other-csr denied"), "{out}");
    let row = ts.kubectl_ok(&["get", "csr", "other-csr", "--no-headers"]);
    assert!(row.trim_end().ends_with("Denied"), "{row}");
    // kubectl refuses to approve a denied request itself; the server too
    // (Approved and Denied are exclusive)
    let mut both: Value =
        serde_json::from_str(&ts.kubectl_ok(&["get", "csr", "other-csr", "-o", "json"]))
            .expect("csr json");
    if let Some(cs) = both["status"]["conditions"].as_array_mut() {
        cs.push(json!({"type": "Approved", "status": "True", "reason": "Sneaky"}));
    }
    let (code, v) = ts.raw(
        "PUT",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests/other-csr/approval",
        "application/json",
        both.to_string().as_bytes(),
    );
    assert_eq!(code, 422, "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("Approved and Denied conditions are mutually exclusive")),
        "{v}"
    );

    let masters = csr_pem(ts.dir.path(), "/O=system:masters/CN=evil");
    let evil = csr_json(
        "evil",
        &masters,
        "kubernetes.io/kube-apiserver-client",
        &["client auth"],
    );
    let (code, v) = ts.raw(
        "POST",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        "application/json",
        evil.to_string().as_bytes(),
    );
    assert_eq!(
        (code, v["reason"].as_str()),
        (403, Some("Forbidden")),
        "{v}"
    );
    assert_eq!(
        v["message"],
        "certificatesigningrequests.certificates.k8s.io \"evil\" is forbidden: use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"
    );

    // --- discovery and the bootstrap policy ---------------------------------
    let res = ts.kubectl_ok(&[
        "api-resources",
        "--api-group=certificates.k8s.io",
        "-o",
        "wide",
    ]);
    assert!(
        res.contains("certificatesigningrequests") && res.contains("csr"),
        "{res}"
    );
    let roles = ts.kubectl_ok(&["get", "clusterroles", "-o", "name"]);
    for r in [
        "system:node-bootstrapper",
        "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
        "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
        "system:controller:certificate-controller",
    ] {
        assert!(roles.contains(&format!("/{r}\n")), "{r} in\n{roles}");
    }
    let ns_roles = ts.kubectl_ok(&["get", "roles", "-A", "-o", "name"]);
    assert!(
        ns_roles.contains("role.rbac.authorization.k8s.io/system:controller:token-cleaner"),
        "{ns_roles}"
    );
    let public = ts.kubectl_ok(&[
        "get",
        "rolebinding",
        "-n",
        "kube-public",
        "system:controller:bootstrap-signer",
        "-o",
        "jsonpath={.subjects[0].name}",
    ]);
    assert_eq!(public, "bootstrap-signer");
}
