//! TLS bootstrap of the kubelet's client certificate (`--bootstrap-kubeconfig`),
//! as upstream: when the `--kubeconfig` file is missing, unreadable, or holds
//! an expired client certificate, the kubelet makes an ECDSA P-256 key and a
//! CertificateSigningRequest for `system:node:<node>` in `system:nodes`
//! (signer kubernetes.io/kube-apiserver-client-kubelet, usages digital
//! signature and client auth) with the bootstrap credentials, waits for it to
//! be approved and issued, keeps key and certificate in
//! `<cert-dir>/kubelet-client-<time>.pem` (mode 0600) behind the symlink
//! `kubelet-client-current.pem`, and writes `--kubeconfig` with the bootstrap
//! kubeconfig's server and CA and that file as its credentials. A valid
//! `kubelet-client-current.pem` from an earlier run is used without a new
//! request; the key of a request still pending is kept
//! (`kubelet-client.key.tmp`), so a restarted kubelet waits for the same CSR.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use serde_json::json;
use sha2::Digest;

/// The signer of kubelet client certificates.
pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// What a kubelet client certificate is for (an ECDSA key: no key encipherment).
pub const USAGES: [&str; 2] = ["digital signature", "client auth"];
/// The symlink to the current key and certificate.
pub const CURRENT: &str = "kubelet-client-current.pem";
const KEY_TMP: &str = "kubelet-client.key.tmp";
/// How long the kubelet waits for its certificate, as upstream.
pub const WAIT: Duration = Duration::from_secs(3600);

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Make sure `kubeconfig` holds usable client credentials, bootstrapping a
/// certificate with `bootstrap` when it does not.
pub async fn load_client_cert(
    kubeconfig: &Path,
    bootstrap: &Path,
    cert_dir: &Path,
    node_name: &str,
) -> anyhow::Result<()> {
    match kubeconfig_still_valid(kubeconfig) {
        Ok(true) => {
            tracing::info!(kubeconfig = %kubeconfig.display(), "the kubeconfig's credentials are valid: no bootstrap");
            return Ok(());
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(kubeconfig = %kubeconfig.display(), error = %e, "the kubeconfig is not usable; bootstrapping")
        }
    }
    let bootstrap_kc = Kubeconfig::read_from(bootstrap)
        .map_err(|e| anyhow::anyhow!("--bootstrap-kubeconfig {}: {e}", bootstrap.display()))?;
    let cluster = cluster_of(&bootstrap_kc)
        .map_err(|e| anyhow::anyhow!("--bootstrap-kubeconfig {}: {e}", bootstrap.display()))?;
    create_private_dir(cert_dir)?;
    let cert_dir = cert_dir
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("--cert-dir {}: {e}", cert_dir.display()))?;
    let current = cert_dir.join(CURRENT);
    let now = chrono::Utc::now().timestamp();
    if pair_valid(&current, now) {
        tracing::info!(file = %current.display(), "using the client certificate from an earlier bootstrap");
        return write_kubeconfig(kubeconfig, &cluster, &current);
    }
    let key = load_or_make_key(&cert_dir.join(KEY_TMP))?;
    let request = make_request(&key, node_name)?;
    let cfg = kube::Config::from_custom_kubeconfig(
        bootstrap_kc,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("--bootstrap-kubeconfig {}: {e}", bootstrap.display()))?;
    let client = kube::Client::try_from(cfg)?;
    let cert = request_certificate(&client, &request, &key, node_name, WAIT).await?;
    let pem = store_pair(&cert_dir, &cert, &key.serialize_pem(), chrono::Utc::now())?;
    let _ = std::fs::remove_file(cert_dir.join(KEY_TMP));
    tracing::info!(file = %pem.display(), "bootstrapped the kubelet's client certificate");
    write_kubeconfig(kubeconfig, &cluster, &current)
}

/// The bootstrap kubeconfig's cluster: what the new kubeconfig copies.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterInfo {
    pub server: String,
    pub ca: Option<Vec<u8>>,
    pub insecure: bool,
}

fn cluster_of(kc: &Kubeconfig) -> anyhow::Result<ClusterInfo> {
    let ctx_name = kc
        .current_context
        .clone()
        .or_else(|| kc.contexts.first().map(|c| c.name.clone()))
        .ok_or_else(|| anyhow::anyhow!("no context"))?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| anyhow::anyhow!("no context {ctx_name:?}"))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| anyhow::anyhow!("no cluster {:?}", ctx.cluster))?;
    let server = cluster
        .server
        .clone()
        .ok_or_else(|| anyhow::anyhow!("cluster {:?} has no server", ctx.cluster))?;
    let ca = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(d), _) => Some(
            b64()
                .decode(d.trim())
                .map_err(|e| anyhow::anyhow!("certificate-authority-data: {e}"))?,
        ),
        (None, Some(p)) => {
            Some(std::fs::read(p).map_err(|e| anyhow::anyhow!("certificate-authority {p}: {e}"))?)
        }
        (None, None) => None,
    };
    Ok(ClusterInfo {
        server,
        ca,
        insecure: cluster.insecure_skip_tls_verify.unwrap_or(false),
    })
}

/// Does `path` exist with credentials that still work? A client certificate
/// any part of which has expired (or that cannot be read) does not; other
/// credentials (a token) are taken as they are.
pub fn kubeconfig_still_valid(path: &Path) -> anyhow::Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    let kc = Kubeconfig::read_from(path)?;
    let ctx_name = kc
        .current_context
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no current-context"))?;
    let user = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone())
        .ok_or_else(|| anyhow::anyhow!("context {ctx_name:?} has no user"))?;
    let Some(auth) = kc
        .auth_infos
        .iter()
        .find(|a| a.name == user)
        .and_then(|a| a.auth_info.as_ref())
    else {
        anyhow::bail!("no user {user:?}");
    };
    let pem = match (&auth.client_certificate_data, &auth.client_certificate) {
        (Some(d), _) => b64().decode(d.trim())?,
        (None, Some(p)) => std::fs::read(p)?,
        (None, None) => return Ok(true),
    };
    let now = chrono::Utc::now().timestamp();
    let ends = cert_ends(&pem);
    if ends.is_empty() {
        anyhow::bail!("no certificate in the kubeconfig's client certificate");
    }
    if let Some(end) = ends.iter().find(|e| **e < now) {
        tracing::info!(
            not_after = end,
            "the kubeconfig's client certificate has expired"
        );
        return Ok(false);
    }
    Ok(true)
}

/// When each certificate of a PEM bundle ends (unix seconds).
fn cert_ends(pem: &[u8]) -> Vec<i64> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .filter_map(|p| {
            x509_parser::parse_x509_certificate(&p.contents)
                .ok()
                .map(|(_, c)| c.validity().not_after.timestamp())
        })
        .collect()
}

/// A stored key and certificate that parse and have not expired.
fn pair_valid(path: &Path, now: i64) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let ends = cert_ends(text.as_bytes());
    !ends.is_empty() && ends.iter().all(|e| *e > now) && key_of(&text).is_some()
}

/// The private key of a PEM bundle (PKCS#8, PKCS#1 or SEC1).
fn key_of(pem: &str) -> Option<KeyPair> {
    let der = rustls_pemfile::private_key(&mut pem.as_bytes()).ok()??;
    KeyPair::try_from(&der).ok()
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("creating --cert-dir {}: {e}", dir.display()))
}

/// Write `data` to `path` with mode 0600, through a file beside it renamed over it.
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("writing");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// The key of a pending request, or a new ECDSA P-256 one (kept until the certificate comes).
fn load_or_make_key(path: &Path) -> anyhow::Result<KeyPair> {
    if let Ok(text) = std::fs::read_to_string(path) {
        match KeyPair::from_pem(&text) {
            Ok(k) => return Ok(k),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "an unreadable key; making a new one")
            }
        }
    }
    let key = KeyPair::generate()?;
    write_private(path, key.serialize_pem().as_bytes())?;
    Ok(key)
}

/// The PKCS#10 request (PEM) of a node's client certificate.
pub fn make_request(key: &KeyPair, node_name: &str) -> anyhow::Result<String> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    p.distinguished_name
        .push(DnType::CommonName, format!("system:node:{node_name}"));
    Ok(p.serialize_request(key)?.pem()?)
}

/// The CSR's name: a digest of what it asks for (public key, subject,
/// usages), so the same request always has the same name and a restarted
/// kubelet finds the one it made.
pub fn request_name(public_key_der: &[u8], node_name: &str) -> String {
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut h = sha2::Sha512_256::new();
    let cn = format!("system:node:{node_name}");
    let parts: Vec<&[u8]> = [public_key_der, cn.as_bytes(), b"system:nodes".as_slice()]
        .into_iter()
        .chain(USAGES.iter().map(|u| u.as_bytes()))
        .collect();
    for part in parts {
        // '|' is outside the encoding's alphabet: no two inputs hash alike
        h.update(enc.encode(part).as_bytes());
        h.update(b"|");
    }
    format!("node-csr-{}", enc.encode(h.finalize()))
}

/// How a CSR ended, once it did.
pub fn outcome(csr: &CertificateSigningRequest) -> Option<Result<Vec<u8>, String>> {
    let status = csr.status.as_ref()?;
    for c in status.conditions.iter().flatten() {
        let why = || {
            format!(
                "reason: {}, message: {}",
                c.reason.as_deref().unwrap_or_default(),
                c.message.as_deref().unwrap_or_default()
            )
        };
        if c.type_ == "Denied" && c.status == "True" {
            return Some(Err(format!(
                "certificate signing request is denied, {}",
                why()
            )));
        }
        if c.type_ == "Failed" && c.status == "True" {
            return Some(Err(format!(
                "certificate signing request failed, {}",
                why()
            )));
        }
    }
    status
        .certificate
        .as_ref()
        .filter(|c| !c.0.is_empty())
        .map(|c| Ok(c.0.clone()))
}

/// Create the CSR (or find the one made before with this key), then wait up
/// to `wait` for its certificate.
pub async fn request_certificate(
    client: &kube::Client,
    request_pem: &str,
    key: &KeyPair,
    node_name: &str,
    wait: Duration,
) -> anyhow::Result<Vec<u8>> {
    let name = request_name(
        &rcgen::PublicKeyData::subject_public_key_info(key),
        node_name,
    );
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": b64().encode(request_pem),
            "signerName": SIGNER,
            "usages": USAGES,
        },
    }))?;
    match api.create(&PostParams::default(), &csr).await {
        Ok(_) => tracing::info!(csr = %name, "requested the kubelet's client certificate"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // made by an earlier run with this key: it must ask for the same
            let existing = api.get(&name).await?;
            let same_key = std::str::from_utf8(&existing.spec.request.0)
                .ok()
                .and_then(|p| rcgen::CertificateSigningRequestParams::from_pem(p).ok())
                .is_some_and(|p| {
                    rcgen::PublicKeyData::der_bytes(&p.public_key) == key.public_key_raw()
                });
            if !same_key
                || existing.spec.signer_name != SIGNER
                || existing.spec.usages.clone().unwrap_or_default() != USAGES
            {
                anyhow::bail!("a different certificate signing request named {name} exists");
            }
            tracing::info!(csr = %name, "waiting for the request made before");
        }
        Err(e) => anyhow::bail!("cannot create certificate signing request: {e}"),
    }
    tracing::info!(csr = %name, "waiting for the client certificate to be issued");
    let done = |o: Option<&CertificateSigningRequest>| o.and_then(outcome).is_some();
    let got = tokio::time::timeout(
        wait,
        kube::runtime::wait::await_condition(api.clone(), &name, done),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out waiting for certificate signing request {name}"))?
    .map_err(|e| anyhow::anyhow!("watching certificate signing request {name}: {e}"))?;
    let got =
        got.ok_or_else(|| anyhow::anyhow!("certificate signing request {name} was deleted"))?;
    match outcome(&got) {
        Some(Ok(cert)) => Ok(cert),
        Some(Err(e)) => Err(anyhow::anyhow!(e)),
        None => Err(anyhow::anyhow!(
            "certificate signing request {name} has no certificate"
        )),
    }
}

/// Keep certificate and key in `kubelet-client-<time>.pem` and point
/// `kubelet-client-current.pem` at it.
pub fn store_pair(
    dir: &Path,
    cert: &[u8],
    key_pem: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<PathBuf> {
    if cert_ends(cert).is_empty() {
        anyhow::bail!("the issued certificate is not a PEM certificate");
    }
    let file = dir.join(format!(
        "kubelet-client-{}.pem",
        now.format("%Y-%m-%d-%H-%M-%S")
    ));
    let mut data = cert.to_vec();
    if !data.ends_with(b"\n") {
        data.push(b'\n');
    }
    data.extend_from_slice(key_pem.as_bytes());
    write_private(&file, &data)?;
    let link = dir.join(CURRENT);
    let tmp = dir.join(format!("{CURRENT}.updating"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&file, &tmp)
        .map_err(|e| anyhow::anyhow!("linking {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &link).map_err(|e| anyhow::anyhow!("linking {}: {e}", link.display()))?;
    Ok(file)
}

/// The kubelet's kubeconfig: the bootstrap cluster, `pem` (key and
/// certificate in one file) as the credentials.
pub fn write_kubeconfig(path: &Path, cluster: &ClusterInfo, pem: &Path) -> anyhow::Result<()> {
    let mut c = json!({"server": cluster.server});
    if let Some(ca) = &cluster.ca {
        c["certificate-authority-data"] = json!(b64().encode(ca));
    }
    if cluster.insecure {
        c["insecure-skip-tls-verify"] = json!(true);
    }
    let pem = pem.to_string_lossy();
    let kc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default-cluster", "cluster": c}],
        "users": [{"name": "default-auth", "user": {"client-certificate": pem, "client-key": pem}}],
        "contexts": [{"name": "default-context", "context": {
            "cluster": "default-cluster", "user": "default-auth", "namespace": "default"}}],
        "current-context": "default-context",
    });
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    write_private(path, serde_yaml::to_string(&kc)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_request_is_a_node_client_certificate() {
        let key = KeyPair::generate().expect("key");
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        let pem = make_request(&key, "node-1").expect("csr");
        let p = rcgen::CertificateSigningRequestParams::from_pem(&pem).expect("parse");
        let dn: Vec<_> = p.params.distinguished_name.iter().collect();
        assert!(dn.contains(&(
            &DnType::CommonName,
            &rcgen::DnValue::Utf8String("system:node:node-1".into())
        )));
        assert!(dn.contains(&(
            &DnType::OrganizationName,
            &rcgen::DnValue::Utf8String("system:nodes".into())
        )));
        assert!(p.params.subject_alt_names.is_empty());
        let n1 = request_name(
            &rcgen::PublicKeyData::subject_public_key_info(&key),
            "node-1",
        );
        assert!(n1.starts_with("node-csr-"));
        assert_eq!(
            n1,
            request_name(
                &rcgen::PublicKeyData::subject_public_key_info(&key),
                "node-1"
            )
        );
        assert_ne!(
            n1,
            request_name(
                &rcgen::PublicKeyData::subject_public_key_info(&key),
                "node-2"
            )
        );
    }

    #[test]
    fn outcomes() {
        let csr = |status: serde_json::Value| -> CertificateSigningRequest {
            serde_json::from_value(json!({"metadata": {"name": "c"},
                "spec": {"request": "", "signerName": SIGNER}, "status": status}))
            .expect("csr")
        };
        assert!(outcome(&csr(json!({}))).is_none());
        assert!(outcome(&csr(
            json!({"conditions": [{"type": "Approved", "status": "True"}]})
        ))
        .is_none());
        assert_eq!(
            outcome(&csr(
                json!({"conditions": [{"type": "Approved", "status": "True"}],
                "certificate": "Y2VydA=="})
            )),
            Some(Ok(b"cert".to_vec()))
        );
        assert_eq!(
            outcome(&csr(
                json!({"conditions": [{"type": "Denied", "status": "True",
                "reason": "No", "message": "not you"}]})
            )),
            Some(Err(
                "certificate signing request is denied, reason: No, message: not you".into()
            ))
        );
        assert!(outcome(&csr(
            json!({"conditions": [{"type": "Failed", "status": "True"}]})
        ))
        .is_some_and(|r| r.is_err()));
    }

    fn self_signed(days: i64) -> (String, KeyPair) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        let now = chrono::Utc::now().timestamp();
        p.not_before = rcgen::date_time_ymd(1970, 1, 1)
            + Duration::from_secs(u64::try_from(now - 86400 * 2).expect("now"));
        p.not_after = rcgen::date_time_ymd(1970, 1, 1)
            + Duration::from_secs(u64::try_from(now + 86400 * days).expect("end"));
        (p.self_signed(&key).expect("cert").pem(), key)
    }

    #[test]
    fn the_pair_is_stored_private_behind_a_symlink_and_the_kubeconfig_points_at_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = self_signed(30);
        let now = chrono::Utc::now();
        let file =
            store_pair(dir.path(), cert.as_bytes(), &key.serialize_pem(), now).expect("store");
        let current = dir.path().join(CURRENT);
        assert_eq!(std::fs::read_link(&current).expect("symlink"), file);
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(pair_valid(&current, now.timestamp()));
        let kc = dir.path().join("kubelet.kubeconfig");
        let cluster = ClusterInfo {
            server: "https://10.0.0.1:6443".into(),
            ca: Some(b"CA".to_vec()),
            insecure: false,
        };
        write_kubeconfig(&kc, &cluster, &current).expect("kubeconfig");
        let mode = std::fs::metadata(&kc).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let read = Kubeconfig::read_from(&kc).expect("read");
        assert_eq!(cluster_of(&read).expect("cluster"), cluster);
        assert!(kubeconfig_still_valid(&kc).expect("valid"));
        // an expired certificate is not
        let (old, key) = self_signed(-1);
        store_pair(
            dir.path(),
            old.as_bytes(),
            &key.serialize_pem(),
            now + chrono::Duration::seconds(1),
        )
        .expect("store");
        assert!(!kubeconfig_still_valid(&kc).expect("expired"));
        assert!(!pair_valid(&current, now.timestamp()));
        assert!(!kubeconfig_still_valid(&dir.path().join("missing")).expect("missing"));
    }

    #[test]
    fn embedded_and_token_credentials_are_read_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = self_signed(30);
        let kc = dir.path().join("kubelet.conf");
        let write = |user: serde_json::Value| {
            let text = serde_yaml::to_string(&json!({
                "apiVersion": "v1", "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443"}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }))
            .expect("yaml");
            std::fs::write(&kc, text).expect("write");
        };
        write(json!({"client-certificate-data": b64().encode(&cert),
            "client-key-data": b64().encode(key.serialize_pem())}));
        assert!(kubeconfig_still_valid(&kc).expect("embedded"));
        let (old, key) = self_signed(-1);
        write(json!({"client-certificate-data": b64().encode(&old),
            "client-key-data": b64().encode(key.serialize_pem())}));
        assert!(!kubeconfig_still_valid(&kc).expect("expired"));
        write(json!({"token": "abc"}));
        assert!(kubeconfig_still_valid(&kc).expect("token"));
        std::fs::write(&kc, "not: [a kubeconfig").expect("write");
        assert!(kubeconfig_still_valid(&kc).is_err());
    }
}
