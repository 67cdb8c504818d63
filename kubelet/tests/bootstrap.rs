//! The kubelet's TLS bootstrap (`--bootstrap-kubeconfig`) against a real
//! apiserver with bootstrap token authentication: with only a bootstrap
//! token, the kubelet requests its client certificate, and once it is
//! approved and issued (here by the test, as the controller-manager would,
//! with a CA the apiserver trusts for client certificates) writes its key and
//! certificate and a kubeconfig that authenticates as system:node:<name>. A
//! second start uses what it has; a denied request fails with upstream's
//! message.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use apiserver::testing::TestServer;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::json;

const TOKEN: &str = "abcdef.0123456789abcdef";

fn bootstrap_kubeconfig(ts: &TestServer, path: &Path) {
    use base64::Engine;
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: bootstrap\n  user:\n    token: {TOKEN}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: bootstrap\ncurrent-context: local\n",
        ts.url(),
        base64::engine::general_purpose::STANDARD.encode(&ts.pki.ca_pem)
    );
    std::fs::write(path, text).expect("bootstrap kubeconfig");
}

fn common_name(csr: &CertificateSigningRequest) -> String {
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let p = CertificateSigningRequestParams::from_pem(&pem).expect("request");
    match p.params.distinguished_name.get(&DnType::CommonName) {
        Some(DnValue::Utf8String(s)) => s.clone(),
        Some(DnValue::PrintableString(s)) => s.as_str().to_string(),
        other => panic!("common name {other:?}"),
    }
}

/// Approve (or deny, for `deny_cn`) and sign every kubelet CSR, as the
/// controller-manager's csrapproving and csrsigning would.
async fn play_controller_manager(
    client: kube::Client,
    ca_cert: String,
    ca_key: String,
    deny_cn: &'static str,
) {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let key = KeyPair::from_pem(&ca_key).expect("ca key");
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, key).expect("issuer");
    loop {
        for c in api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let name = c.metadata.name.clone().unwrap_or_default();
            let conds = c
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let issued = c
                .status
                .as_ref()
                .and_then(|s| s.certificate.as_ref())
                .is_some();
            if conds.is_empty() {
                let mut decided = c.clone();
                let (t, reason) = if common_name(&c) == deny_cn {
                    ("Denied", "NotThisNode")
                } else {
                    ("Approved", "AutoApproved")
                };
                decided.status = Some(
                    serde_json::from_value(json!({"conditions": [{
                        "type": t, "status": "True", "reason": reason, "message": "by the test"}]}))
                    .expect("status"),
                );
                let _ = api
                    .replace_subresource("approval", &name, &PostParams::default(), &decided)
                    .await;
            } else if !issued && conds.iter().any(|x| x.type_ == "Approved") {
                let pem = String::from_utf8_lossy(&c.spec.request.0).into_owned();
                let mut req = CertificateSigningRequestParams::from_pem(&pem).expect("request");
                req.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                req.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock");
                let epoch = rcgen::date_time_ymd(1970, 1, 1);
                req.params.not_before = epoch + now - Duration::from_secs(300);
                req.params.not_after = epoch + now + Duration::from_secs(86400);
                let cert = req.signed_by(&issuer).expect("sign");
                let mut signed = c.clone();
                if let Some(s) = signed.status.as_mut() {
                    s.certificate = Some(k8s_openapi::ByteString(cert.pem().into_bytes()));
                }
                let _ = api
                    .replace_status(&name, &PostParams::default(), &signed)
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_bootstraps_its_client_certificate() {
    // the signing CA, trusted by the apiserver for client certificates too
    let ca_key = KeyPair::generate().expect("ca key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "cluster-signing-ca");
    let ca_cert = p.self_signed(&ca_key).expect("ca").pem();
    let ca_for_server = ca_cert.clone();
    let ts = TestServer::start_with(move |cfg| {
        cfg.bootstrap_token_auth = true;
        let mut bundle = cfg.client_ca_pem.clone().unwrap_or_default();
        bundle.extend_from_slice(ca_for_server.as_bytes());
        cfg.client_ca_pem = Some(bundle);
    });
    let admin = ts.client().await;
    let (id, secret) = TOKEN.split_once('.').expect("token");
    let token: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "data": {
            "token-id": k8s_openapi::ByteString(id.into()),
            "token-secret": k8s_openapi::ByteString(secret.into()),
            "usage-bootstrap-authentication": k8s_openapi::ByteString(b"true".to_vec()),
        },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(admin.clone(), "kube-system")
        .create(&PostParams::default(), &token)
        .await
        .expect("the bootstrap token");
    let cm = tokio::spawn(play_controller_manager(
        admin.clone(),
        ca_cert.clone(),
        ca_key.serialize_pem(),
        "system:node:n2",
    ));

    let dir = tempfile::tempdir().expect("tempdir");
    let bootstrap = dir.path().join("bootstrap.kubeconfig");
    bootstrap_kubeconfig(&ts, &bootstrap);
    let kubeconfig = dir.path().join("etc/kubelet.kubeconfig");
    let cert_dir = dir.path().join("pki");
    tokio::time::timeout(
        Duration::from_secs(60),
        kubelet::bootstrap::load_client_cert(&kubeconfig, &bootstrap, &cert_dir, "n1"),
    )
    .await
    .expect("in time")
    .expect("bootstrapped");

    // the pair, private, behind the symlink; the kubeconfig points at it
    let current = cert_dir.join("kubelet-client-current.pem");
    let target = std::fs::read_link(&current).expect("a symlink");
    assert!(
        target
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("kubelet-client-2")),
        "{target:?}"
    );
    for f in [&target, &kubeconfig] {
        let mode = std::fs::metadata(f).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f:?}");
    }
    let kc_text = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    assert!(
        kc_text.contains(&current.to_string_lossy().into_owned()),
        "{kc_text}"
    );
    let node = common::client(Some(&kubeconfig), "test")
        .await
        .expect("the written kubeconfig");
    let review: SelfSubjectReview = serde_json::from_value(
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    )
    .expect("review");
    let me = Api::<SelfSubjectReview>::all(node)
        .create(&PostParams::default(), &review)
        .await
        .expect("whoami");
    let user = me.status.and_then(|s| s.user_info).expect("user info");
    assert_eq!(user.username.as_deref(), Some("system:node:n1"));
    assert!(user
        .groups
        .unwrap_or_default()
        .contains(&"system:nodes".to_string()));
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let made = csrs.list(&ListParams::default()).await.expect("list").items;
    assert_eq!(made.len(), 1);
    let c = &made[0];
    assert!(c
        .metadata
        .name
        .as_deref()
        .is_some_and(|n| n.starts_with("node-csr-")));
    assert_eq!(
        c.spec.signer_name,
        "kubernetes.io/kube-apiserver-client-kubelet"
    );
    assert_eq!(
        c.spec.usages.clone().unwrap_or_default(),
        vec!["digital signature", "client auth"]
    );
    assert_eq!(c.spec.username.as_deref(), Some("system:bootstrap:abcdef"));

    // started again: what it has is used, nothing is requested
    kubelet::bootstrap::load_client_cert(&kubeconfig, &bootstrap, &cert_dir, "n1")
        .await
        .expect("again");
    assert_eq!(
        csrs.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );

    // a denied request fails the start, with upstream's message
    let other = dir.path().join("n2");
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        kubelet::bootstrap::load_client_cert(
            &other.join("kubelet.kubeconfig"),
            &bootstrap,
            &other.join("pki"),
            "n2",
        ),
    )
    .await
    .expect("in time")
    .expect_err("denied");
    assert_eq!(
        err.to_string(),
        "certificate signing request is denied, reason: NotThisNode, message: by the test"
    );
    assert!(!other.join("kubelet.kubeconfig").exists());
    cm.abort();
}
