//! Node TLS bootstrap through the controller-manager, against a real
//! apiserver with Node,RBAC and bootstrap token authentication: a bootstrap
//! token user (group system:bootstrappers, bound to system:node-bootstrapper
//! and to ...:nodeclient) creates a kubelet client CSR; csrapproving approves
//! it (AutoApproved, after a SubjectAccessReview) and csrsigning issues a
//! certificate that verifies against the signing CA. The controllers run as
//! their service account (certificate-controller). A request that is not a
//! node client certificate stays pending; a kube-apiserver-client request
//! approved by an admin is signed, one with a usage that signer refuses gets
//! a Failed condition, a denied one is never signed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiserver::testing::{write_kubeconfig, TestServer};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::json;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const TOKEN_ID: &str = "abcdef";
const TOKEN_SECRET: &str = "0123456789abcdef";
const KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

struct Kcm(Child);

impl Drop for Kcm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl {args:?}");
}

async fn until<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A CSR request (PEM) with CN and O, and its key.
fn request(cn: &str, org: &str) -> String {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, org);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serialize_request(&key).expect("csr").pem().expect("pem")
}

fn csr(name: &str, pem: &str, signer: &str, usages: &[&str]) -> CertificateSigningRequest {
    serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": k8s_openapi::ByteString(pem.as_bytes().to_vec()),
            "signerName": signer,
            "usages": usages,
        },
    }))
    .expect("csr")
}

fn condition<'a>(
    c: &'a CertificateSigningRequest,
    type_: &str,
) -> Option<&'a k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition> {
    c.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|x| x.type_ == type_)
}

fn certificate(c: &CertificateSigningRequest) -> Option<Vec<u8>> {
    c.status
        .as_ref()?
        .certificate
        .as_ref()
        .map(|b| b.0.clone())
        .filter(|b| !b.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_token_csrs_are_approved_and_signed() {
    let keys = tempfile::tempdir().expect("tempdir");
    // the service-account token keys (for --use-service-account-credentials)
    let (sa_key, sa_pub) = (keys.path().join("sa.key"), keys.path().join("sa.pub"));
    openssl(&["genrsa", "-out", &sa_key.to_string_lossy(), "2048"]);
    openssl(&[
        "rsa",
        "-in",
        &sa_key.to_string_lossy(),
        "-pubout",
        "-out",
        &sa_pub.to_string_lossy(),
    ]);
    // the signing CA
    let ca_key = KeyPair::generate().expect("ca key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "cluster-signing-ca");
    let ca_cert = p.self_signed(&ca_key).expect("ca");
    let (ca_crt, ca_key_file) = (keys.path().join("ca.crt"), keys.path().join("ca.key"));
    std::fs::write(&ca_crt, ca_cert.pem()).expect("ca.crt");
    std::fs::write(&ca_key_file, ca_key.serialize_pem()).expect("ca.key");

    let key_pem = std::fs::read(&sa_key).expect("key");
    let pub_pem = std::fs::read(&sa_pub).expect("pub");
    let ts = TestServer::start_with(|cfg| {
        let signer =
            apiserver::satoken::Signer::from_pem("sa.key", &key_pem, ISSUER).expect("signer");
        let mut v = apiserver::satoken::Verifier::new(vec![ISSUER.into()], vec![ISSUER.into()]);
        v.add_pem("sa.pub", &pub_pem).expect("verifier");
        cfg.sa_signer = Some(std::sync::Arc::new(signer));
        cfg.sa_verifier = v;
        cfg.authorization = vec![apiserver::authz::Mode::Node, apiserver::authz::Mode::Rbac];
        cfg.bootstrap_token_auth = true;
    });
    let (cert, ckey) = ts.pki.client("system:kube-controller-manager", &[]);
    let kc = ts.dir.path().join("kcm.kubeconfig");
    write_kubeconfig(&kc, ts.addr, &ts.pki.ca_pem, &cert, &ckey);
    let _kcm = Kcm(Command::new(env!("CARGO_BIN_EXE_kube-controller-manager"))
        .arg(format!("--kubeconfig={}", kc.display()))
        .arg(format!("--cluster-signing-cert-file={}", ca_crt.display()))
        .arg(format!(
            "--cluster-signing-key-file={}",
            ca_key_file.display()
        ))
        .args([
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--controllers=csrapproving,csrsigning,csrcleaner",
            "--use-service-account-credentials",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kube-controller-manager"));

    let admin = ts.client().await;
    // the bootstrap token and kubeadm's bindings
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "kube-system");
    let token: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("bootstrap-token-{TOKEN_ID}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        // data, not stringData: the apiserver does not fold stringData in yet
        "data": {
            "token-id": k8s_openapi::ByteString(TOKEN_ID.into()),
            "token-secret": k8s_openapi::ByteString(TOKEN_SECRET.into()),
            "usage-bootstrap-authentication": k8s_openapi::ByteString(b"true".to_vec()),
        },
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &token)
        .await
        .expect("create the token");
    ts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "kubelet-bootstrap",
        "--clusterrole=system:node-bootstrapper",
        "--group=system:bootstrappers",
    ]);
    ts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "node-autoapprove-bootstrap",
        "--clusterrole=system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        "--group=system:bootstrappers",
    ]);

    // the node, with nothing but its token
    use base64::Engine;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: node\n  user:\n    token: {TOKEN_ID}.{TOKEN_SECRET}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: node\ncurrent-context: local\n",
        ts.url(),
        base64::engine::general_purpose::STANDARD.encode(&ts.pki.ca_pem)
    );
    let cfg = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&kubeconfig).expect("kubeconfig"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("bootstrap config");
    let node = kube::Client::try_from(cfg).expect("bootstrap client");
    let node_csrs: Api<CertificateSigningRequest> = Api::all(node);
    let usages = ["digital signature", "client auth"];
    node_csrs
        .create(
            &PostParams::default(),
            &csr(
                "node-csr-n1",
                &request("system:node:n1", "system:nodes"),
                KUBELET_SIGNER,
                &usages,
            ),
        )
        .await
        .expect("the bootstrap user creates its CSR");
    // not a node client certificate: not for the approver
    node_csrs
        .create(
            &PostParams::default(),
            &csr(
                "node-csr-admin",
                &request("system:node:n2", "system:masters"),
                KUBELET_SIGNER,
                &usages,
            ),
        )
        .await
        .expect("a CSR the approver must leave alone");

    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let done = until("node-csr-n1 approved and issued", 60, || {
        let csrs = csrs.clone();
        async move {
            let c = csrs.get("node-csr-n1").await.ok()?;
            certificate(&c)?;
            Some(c)
        }
    })
    .await;
    assert_eq!(
        done.spec.username.as_deref(),
        Some("system:bootstrap:abcdef"),
        "the apiserver records the requestor"
    );
    let approved = condition(&done, "Approved").expect("Approved");
    assert_eq!(approved.reason.as_deref(), Some("AutoApproved"));
    assert_eq!(
        approved.message.as_deref(),
        Some("Auto approving kubelet client certificate after SubjectAccessReview.")
    );
    let pem = certificate(&done).expect("certificate");
    let block = x509_parser::pem::parse_x509_pem(&pem).expect("pem").1;
    let (_, leaf) = x509_parser::parse_x509_certificate(&block.contents).expect("cert");
    let ca_block = x509_parser::pem::parse_x509_pem(ca_cert.pem().as_bytes())
        .expect("pem")
        .1;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_block.contents).expect("ca");
    leaf.verify_signature(Some(ca.public_key()))
        .expect("the certificate verifies against the signing CA");
    let cn: Vec<_> = leaf
        .subject()
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    assert_eq!(cn, vec!["system:node:n1"]);
    let eku = leaf.extended_key_usage().expect("eku").expect("eku").value;
    assert!(eku.client_auth && !eku.server_auth);
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(life, 8760 * 3600, "the default --cluster-signing-duration");

    // kube-apiserver-client: signed once an admin approves, Failed with a usage it refuses
    let jane = csr(
        "jane",
        &request("jane", "dev"),
        "kubernetes.io/kube-apiserver-client",
        &["client auth"],
    );
    let mut jane = jane;
    jane.spec.expiration_seconds = Some(3600);
    csrs.create(&PostParams::default(), &jane)
        .await
        .expect("jane");
    csrs.create(
        &PostParams::default(),
        &csr(
            "serving-for-client",
            &request("bob", "dev"),
            "kubernetes.io/kube-apiserver-client",
            &["client auth", "server auth"],
        ),
    )
    .await
    .expect("bob");
    csrs.create(
        &PostParams::default(),
        &csr(
            "denied",
            &request("eve", "dev"),
            "kubernetes.io/kube-apiserver-client",
            &["client auth"],
        ),
    )
    .await
    .expect("eve");
    ts.kubectl_ok(&["certificate", "approve", "jane", "serving-for-client"]);
    ts.kubectl_ok(&["certificate", "deny", "denied"]);
    let jane = until("jane issued", 60, || {
        let csrs = csrs.clone();
        async move {
            let c = csrs.get("jane").await.ok()?;
            certificate(&c).map(|_| c)
        }
    })
    .await;
    let pem = certificate(&jane).expect("certificate");
    let block = x509_parser::pem::parse_x509_pem(&pem).expect("pem").1;
    let (_, leaf) = x509_parser::parse_x509_certificate(&block.contents).expect("cert");
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(life, 3600 + 300, "expirationSeconds, backdated 5 minutes");
    let failed = until("serving-for-client Failed", 60, || {
        let csrs = csrs.clone();
        async move {
            let c = csrs.get("serving-for-client").await.ok()?;
            condition(&c, "Failed").cloned()
        }
    })
    .await;
    assert_eq!(failed.reason.as_deref(), Some("SignerValidationFailure"));
    assert_eq!(
        failed.message.as_deref(),
        Some("invalid usage for client certificate: server auth")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let denied = csrs.get("denied").await.expect("denied");
    assert!(certificate(&denied).is_none(), "a denied CSR is not signed");
    let other = csrs.get("node-csr-admin").await.expect("node-csr-admin");
    assert!(
        condition(&other, "Approved").is_none(),
        "not a node client certificate: left pending"
    );
}
