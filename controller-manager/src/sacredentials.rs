//! `--use-service-account-credentials`, as upstream: every controller talks to
//! the apiserver as its own service account in kube-system
//! (`system:serviceaccount:kube-system:deployment-controller`, ...), so RBAC
//! grants each only its bootstrap role `system:controller:<name>`, while the
//! shared informers keep the controller-manager's own identity.
//!
//! The accounts are created if missing; their tokens come from the
//! TokenRequest API (an hour long, renewed every 20 minutes) and are written
//! to files of a private directory that the clients re-read (kube-rs reloads a
//! token file at least once a minute), so a renewed token is picked up
//! without a new client.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::json;

const NAMESPACE: &str = "kube-system";
const LIFETIME_SECONDS: i64 = 3600;
const RENEW_EVERY: Duration = Duration::from_secs(20 * 60);

/// The service account upstream gives each controller (by our controller name).
pub fn account_of(controller: &str) -> &'static str {
    match controller {
        "certificatesigningrequest-approving-controller"
        | "certificatesigningrequest-cleaner-controller"
        | "certificatesigningrequest-signing-controller" => "certificate-controller",
        "cronjob-controller" => "cronjob-controller",
        "daemonset-controller" => "daemon-set-controller",
        "deployment-controller" => "deployment-controller",
        "endpoints-controller" => "endpoint-controller",
        "endpointslice-controller" => "endpointslice-controller",
        "garbage-collector-controller" => "generic-garbage-collector",
        "job-controller" => "job-controller",
        "namespace-controller" => "namespace-controller",
        "persistentvolume-binder-controller" => "persistent-volume-binder",
        "pod-garbage-collector-controller" => "pod-garbage-collector",
        "replicaset-controller" => "replicaset-controller",
        "resourcequota-controller" => "resourcequota-controller",
        "root-ca-certificate-publisher-controller" => "root-ca-cert-publisher",
        "serviceaccount-controller" => "service-account-controller",
        "statefulset-controller" => "statefulset-controller",
        "token-cleaner-controller" => "token-cleaner",
        "ttl-after-finished-controller" => "ttl-after-finished-controller",
        // node IPAM, node lifecycle and taint eviction act as upstream's node-controller
        _ => "node-controller",
    }
}

/// Clients per service account, with their token files kept fresh.
pub struct Credentials {
    dir: PathBuf,
    clients: BTreeMap<&'static str, kube::Client>,
}

impl Drop for Credentials {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private directory for the token files.
fn token_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .or_else(|| Some(PathBuf::from("/run")).filter(|p| p.is_dir() && writable(p)))
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("kube-controller-manager-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

fn writable(p: &Path) -> bool {
    let probe = p.join(format!(".kcm-probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

async fn ensure_account(root: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api: Api<ServiceAccount> = Api::namespaced(root.clone(), NAMESPACE);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "creating service account {NAMESPACE}/{name}: {e}"
        )),
    }
}

async fn request_token(root: &kube::Client, name: &str) -> anyhow::Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(root.clone(), NAMESPACE);
    let req: TokenRequest = serde_json::from_value(
        json!({"spec": {"audiences": [], "expirationSeconds": LIFETIME_SECONDS}}),
    )?;
    let got = api
        .create_token_request(name, &PostParams::default(), &req)
        .await
        .map_err(|e| anyhow::anyhow!("a token for {NAMESPACE}/{name}: {e}"))?;
    got.status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow::anyhow!("an empty token for {NAMESPACE}/{name}"))
}

fn write_token(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // write aside, then rename: a reader never sees half a token
    let tmp = path.with_extension("new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    std::fs::rename(&tmp, path)
}

impl Credentials {
    /// Accounts and first tokens for `controllers`; `base` is the
    /// controller-manager's own client configuration (server and CA).
    pub async fn new(
        root: &kube::Client,
        base: &kube::Config,
        controllers: &[&str],
    ) -> anyhow::Result<Credentials> {
        let dir = token_dir()?;
        let mut clients = BTreeMap::new();
        for c in controllers {
            let account = account_of(c);
            if clients.contains_key(account) {
                continue;
            }
            ensure_account(root, account).await?;
            let path = dir.join(format!("{account}.token"));
            write_token(&path, &request_token(root, account).await?)?;
            let mut cfg = base.clone();
            cfg.auth_info = kube::config::AuthInfo {
                token_file: Some(path.to_string_lossy().into_owned()),
                ..Default::default()
            };
            if let Ok(v) =
                http::HeaderValue::from_str(&format!("kube-controller-manager/v1.33.0 ({account})"))
            {
                cfg.headers.retain(|(k, _)| k != http::header::USER_AGENT);
                cfg.headers.push((http::header::USER_AGENT, v));
            }
            clients.insert(account, kube::Client::try_from(cfg)?);
        }
        Ok(Credentials { dir, clients })
    }

    /// The client controller `name` uses.
    pub fn client_for(&self, controller: &str) -> Option<kube::Client> {
        self.clients.get(account_of(controller)).cloned()
    }

    /// Renew every token every 20 minutes until `stop`.
    pub async fn renew(&self, root: kube::Client, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RENEW_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            for account in self.clients.keys() {
                let path = self.dir.join(format!("{account}.token"));
                match request_token(&root, account).await {
                    Ok(t) => {
                        if let Err(e) = write_token(&path, &t) {
                            tracing::warn!(%account, error = %e, "writing a renewed token");
                        }
                    }
                    Err(e) => tracing::warn!(%account, error = %e, "renewing a token"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_controller_has_upstreams_account() {
        assert_eq!(account_of("daemonset-controller"), "daemon-set-controller");
        assert_eq!(account_of("endpoints-controller"), "endpoint-controller");
        assert_eq!(
            account_of("garbage-collector-controller"),
            "generic-garbage-collector"
        );
        assert_eq!(account_of("node-lifecycle-controller"), "node-controller");
        assert_eq!(
            account_of("certificatesigningrequest-signing-controller"),
            "certificate-controller"
        );
        assert_eq!(account_of("token-cleaner-controller"), "token-cleaner");
        for e in crate::CONTROLLERS {
            assert!(!account_of(e.name).is_empty());
        }
    }

    #[test]
    fn tokens_are_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.token");
        write_token(&p, "t1").expect("write");
        write_token(&p, "t2").expect("rewrite");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "t2");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
