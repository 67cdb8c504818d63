//! certificatesigningrequest-signing-controller (csrsigning): issues the
//! certificate of every Approved (not Denied, not Failed) CSR of a built-in
//! signer that has CA files (`--cluster-signing-cert-file`/`-key-file`, or the
//! per-signer `--cluster-signing-<signer>-cert-file`/`-key-file`), writing
//! `status.certificate` through the /status subresource. A request its signer
//! refuses gets a Failed condition (reason SignerValidationFailure), as
//! upstream. The lifetime is `spec.expirationSeconds` capped by
//! `--cluster-signing-duration` (10 minutes at least) and by the CA's own end.
//! The CA files are read again for every certificate, so a renewed CA is used
//! without a restart. Without CA files the controller does nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::csr::{self, Ca};
use crate::{queue, run_workers, split_key, Ctx, Started, SyncResult};

/// The CA files one built-in signer issues with.
#[derive(Debug, Clone, PartialEq)]
pub struct SignerFiles {
    pub signer: &'static str,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The signing flags as given.
#[derive(Debug, Clone, Default)]
pub struct SigningFlags {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub kubelet_serving: (Option<PathBuf>, Option<PathBuf>),
    pub kubelet_client: (Option<PathBuf>, Option<PathBuf>),
    pub kube_apiserver_client: (Option<PathBuf>, Option<PathBuf>),
    pub legacy_unknown: (Option<PathBuf>, Option<PathBuf>),
}

impl SigningFlags {
    /// Which signer gets which files, as upstream decides: with any
    /// per-signer pair set, only those signers sign (and the general pair may
    /// not be given); otherwise the general pair serves all four; with no
    /// files at all, nothing is signed.
    pub fn signers(&self) -> Result<Vec<SignerFiles>, String> {
        let specific = [
            (
                csr::KUBELET_SERVING,
                "kubelet-serving",
                &self.kubelet_serving,
            ),
            (csr::KUBELET_CLIENT, "kubelet-client", &self.kubelet_client),
            (
                csr::KUBE_APISERVER_CLIENT,
                "kube-apiserver-client",
                &self.kube_apiserver_client,
            ),
            (csr::LEGACY_UNKNOWN, "legacy-unknown", &self.legacy_unknown),
        ];
        for (_, flag, (c, k)) in &specific {
            if c.is_some() != k.is_some() {
                return Err(format!(
                    "--cluster-signing-{flag}-cert-file and --cluster-signing-{flag}-key-file: cannot specify key without cert or cert without key"
                ));
            }
        }
        let any_specific = specific.iter().any(|(_, _, (c, _))| c.is_some());
        let general = self.cert_file.is_some() || self.key_file.is_some();
        if general && any_specific {
            return Err("cannot specify --cluster-signing-{cert,key}-file and other --cluster-signing-*-file flags at the same time".into());
        }
        if any_specific {
            return Ok(specific
                .iter()
                .filter_map(|(signer, _, (c, k))| {
                    Some(SignerFiles {
                        signer,
                        cert_file: c.clone()?,
                        key_file: k.clone()?,
                    })
                })
                .collect());
        }
        match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Ok(specific
                .iter()
                .map(|(signer, _, _)| SignerFiles {
                    signer,
                    cert_file: c.clone(),
                    key_file: k.clone(),
                })
                .collect()),
            (None, None) => Ok(Vec::new()),
            _ => {
                Err("--cluster-signing-cert-file and --cluster-signing-key-file go together".into())
            }
        }
    }
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

async fn run(ctx: Ctx) {
    let signers: Arc<Vec<SignerFiles>> = Arc::new(ctx.settings.csr_signers.clone());
    if signers.is_empty() {
        tracing::info!("skipping the CSR signer: no --cluster-signing-* cert/key files were given");
        return;
    }
    let csrs = ctx.informers.get::<CertificateSigningRequest>();
    let q = queue();
    let feeder = csr::feed(q.clone(), &csrs);
    csrs.wait_synced().await;
    let ttl = ctx.settings.cluster_signing_duration;
    let (client, store) = (ctx.client.clone(), csrs.store());
    run_workers("csrsigning", q, 5, ctx.stop.clone(), move |key| {
        let (client, store, signers) = (client.clone(), store.clone(), signers.clone());
        async move { sync(&client, &store, &signers, ttl, &key).await }
    })
    .await;
    feeder.abort();
}

/// A Failed condition for a request the signer refuses.
pub fn failed(csr: &CertificateSigningRequest, message: String) -> CertificateSigningRequest {
    let mut out = csr.clone();
    let status = out.status.get_or_insert_with(Default::default);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: Some("SignerValidationFailure".into()),
            message: Some(message),
            last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        });
    out
}

/// Should this signer act on the CSR at all?
pub fn wants(csr: &CertificateSigningRequest, signer: &str) -> bool {
    !csr::is_issued(csr)
        && csr::is_approved(csr)
        && !csr::has_condition(csr, "Failed")
        && csr.spec.signer_name == signer
}

async fn sync(
    client: &kube::Client,
    store: &Store<CertificateSigningRequest>,
    signers: &[SignerFiles],
    ttl: Duration,
    key: &str,
) -> SyncResult {
    let name = split_key(key).1;
    let Some(obj) = store.get(&ObjectRef::new(name)) else {
        return Ok(None);
    };
    let Some(files) = signers.iter().find(|s| wants(&obj, s.signer)) else {
        return Ok(None);
    };
    let req = csr::parse(&obj.spec.request.0)
        .map_err(|e| anyhow::anyhow!("unable to parse csr {name:?}: {e}"))?;
    let usages = obj.spec.usages.clone().unwrap_or_default();
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let pp = PostParams::default();
    if let Err(msg) = csr::check_for_signer(files.signer, &req, &usages) {
        tracing::info!(csr = name, signer = files.signer, reason = %msg, "refusing to sign");
        api.replace_status(name, &pp, &failed(&obj, msg))
            .await
            .map_err(|e| anyhow::anyhow!("error adding failure condition for csr: {e}"))?;
        return Ok(None);
    }
    let ca = Ca::load(&files.cert_file, &files.key_file).map_err(anyhow::Error::msg)?;
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let cert = ca
        .sign(
            &req,
            &usages,
            csr::duration(ttl, obj.spec.expiration_seconds),
            now,
        )
        .map_err(|e| anyhow::anyhow!("error auto signing csr: {e}"))?;
    let mut signed = (*obj).clone();
    signed
        .status
        .get_or_insert_with(Default::default)
        .certificate = Some(ByteString(cert.into_bytes()));
    api.replace_status(name, &pp, &signed)
        .await
        .map_err(|e| anyhow::anyhow!("error updating signature for csr: {e}"))?;
    tracing::info!(csr = name, signer = files.signer, "issued a certificate");
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }

    #[test]
    fn signing_files_as_upstream() {
        assert_eq!(SigningFlags::default().signers(), Ok(vec![]));
        let general = SigningFlags {
            cert_file: p("/ca.crt"),
            key_file: p("/ca.key"),
            ..Default::default()
        };
        let all = general.signers().expect("general");
        assert_eq!(all.len(), 4);
        assert!(all
            .iter()
            .all(|s| s.cert_file == std::path::Path::new("/ca.crt")));
        let one = SigningFlags {
            kubelet_client: (p("/k.crt"), p("/k.key")),
            ..Default::default()
        };
        assert_eq!(
            one.signers().expect("one"),
            vec![SignerFiles {
                signer: csr::KUBELET_CLIENT,
                cert_file: PathBuf::from("/k.crt"),
                key_file: PathBuf::from("/k.key"),
            }]
        );
        let both = SigningFlags {
            kubelet_client: (p("/k.crt"), p("/k.key")),
            ..general.clone()
        };
        assert!(both.signers().is_err());
        let half = SigningFlags {
            kubelet_serving: (p("/k.crt"), None),
            ..Default::default()
        };
        assert!(half.signers().is_err());
        let half = SigningFlags {
            cert_file: p("/ca.crt"),
            ..Default::default()
        };
        assert!(half.signers().is_err());
    }

    #[test]
    fn only_approved_unsigned_requests_of_the_signer_are_signed() {
        let csr = |conds: serde_json::Value, cert: bool| -> CertificateSigningRequest {
            let mut status = json!({"conditions": conds});
            if cert {
                status["certificate"] = json!("Y2VydA==");
            }
            serde_json::from_value(json!({
                "metadata": {"name": "c"},
                "spec": {"request": "", "signerName": csr::KUBELET_CLIENT},
                "status": status,
            }))
            .expect("csr")
        };
        let approved = json!([{"type": "Approved", "status": "True"}]);
        assert!(wants(&csr(approved.clone(), false), csr::KUBELET_CLIENT));
        assert!(!wants(&csr(approved.clone(), false), csr::KUBELET_SERVING));
        assert!(!wants(&csr(approved.clone(), true), csr::KUBELET_CLIENT));
        assert!(!wants(&csr(json!([]), false), csr::KUBELET_CLIENT));
        assert!(!wants(
            &csr(
                json!([{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]),
                false
            ),
            csr::KUBELET_CLIENT
        ));
        assert!(!wants(
            &csr(
                json!([{"type": "Approved", "status": "True"}, {"type": "Failed", "status": "True"}]),
                false
            ),
            csr::KUBELET_CLIENT
        ));
        let f = failed(&csr(approved, false), "nope".into());
        let c = f
            .status
            .and_then(|s| s.conditions)
            .and_then(|c| c.last().cloned())
            .expect("condition");
        assert_eq!(
            (c.type_.as_str(), c.reason.as_deref(), c.message.as_deref()),
            ("Failed", Some("SignerValidationFailure"), Some("nope"))
        );
    }
}
