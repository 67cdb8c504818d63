//! certificatesigningrequest-cleaner-controller (csrcleaner): once an hour
//! (and at start), deletes the CSRs upstream's retention lets go: approved and
//! issued an hour after approval, denied or failed an hour after that
//! condition, pending (no condition) a day after creation, and any whose
//! issued certificate has expired.

use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Preconditions};

use crate::csr;
use crate::{Ctx, Started};

pub const POLLING_INTERVAL: Duration = Duration::from_secs(3600);
pub const APPROVED_EXPIRATION: i64 = 3600;
pub const DENIED_EXPIRATION: i64 = 3600;
pub const PENDING_EXPIRATION: i64 = 24 * 3600;

fn older_than(t: Option<&Time>, secs: i64, now: i64) -> bool {
    t.is_some_and(|t| now - t.0.as_second() > secs)
}

/// Why the CSR is to be deleted now, if it is.
pub fn reason(csr: &CertificateSigningRequest, now: i64) -> Option<String> {
    let conditions = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let issued = csr::is_issued(csr);
    for c in &conditions {
        let t = c.last_update_time.as_ref();
        match c.type_.as_str() {
            "Approved" if issued => {
                if older_than(t, APPROVED_EXPIRATION, now) {
                    return Some("it is more than 1h0m0s old and approved".into());
                }
                let pem = csr.status.as_ref().and_then(|s| s.certificate.as_ref());
                if let Some(Ok(end)) = pem.map(|p| csr::cert_not_after(&p.0)) {
                    if now > end {
                        return Some("its certificate has expired".into());
                    }
                }
            }
            "Denied" if older_than(t, DENIED_EXPIRATION, now) => {
                return Some("it is more than 1h0m0s old and denied".into());
            }
            "Failed" if older_than(t, DENIED_EXPIRATION, now) => {
                return Some("it is more than 1h0m0s old and failed".into());
            }
            _ => {}
        }
    }
    if conditions.is_empty()
        && older_than(
            csr.metadata.creation_timestamp.as_ref(),
            PENDING_EXPIRATION,
            now,
        )
    {
        return Some("it is more than 24h0m0s old and unhandled".into());
    }
    None
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

async fn run(ctx: Ctx) {
    let csrs = ctx.informers.get::<CertificateSigningRequest>();
    let mut stop = ctx.stop.clone();
    tokio::select! {
        _ = csrs.wait_synced() => {}
        _ = common::stopped(&mut stop) => return,
    }
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    loop {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        for c in csrs.store().state() {
            let Some(why) = reason(&c, now) else { continue };
            let name = c.metadata.name.clone().unwrap_or_default();
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: c.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => tracing::info!(csr = %name, reason = %why, "cleaned up a CSR"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::warn!(csr = %name, error = %e, "unable to delete a CSR"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLLING_INTERVAL) => {}
            _ = common::stopped(&mut stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(t: i64) -> String {
        k8s_openapi::jiff::Timestamp::from_second(t)
            .expect("ts")
            .to_string()
    }

    fn csr(
        created: i64,
        conds: serde_json::Value,
        cert: Option<&str>,
    ) -> CertificateSigningRequest {
        let mut status = json!({"conditions": conds});
        if let Some(c) = cert {
            status["certificate"] =
                serde_json::to_value(k8s_openapi::ByteString(c.as_bytes().to_vec())).expect("b");
        }
        serde_json::from_value(json!({
            "metadata": {"name": "c", "creationTimestamp": at(created)},
            "spec": {"request": "", "signerName": "example.com/x"},
            "status": status,
        }))
        .expect("csr")
    }

    #[test]
    fn retention_is_upstreams() {
        let now = 1_800_000_000;
        let cond =
            |t: &str, when: i64| json!([{"type": t, "status": "True", "lastUpdateTime": at(when)}]);
        // pending: a day
        assert!(reason(&csr(now - 3600, json!([]), None), now).is_none());
        assert!(reason(&csr(now - 25 * 3600, json!([]), None), now).is_some());
        // denied and failed: an hour
        assert!(reason(&csr(now, cond("Denied", now - 60), None), now).is_none());
        assert!(reason(&csr(now, cond("Denied", now - 3700), None), now).is_some());
        assert!(reason(&csr(now, cond("Failed", now - 3700), None), now).is_some());
        // approved: an hour once issued; not issued, kept
        assert!(reason(&csr(now, cond("Approved", now - 3700), None), now).is_none());
        let (ca_pem, ca_key) = crate::csr::testutil::ca(3650);
        let ca = crate::csr::Ca::from_pem(ca_pem.as_bytes(), &ca_key).expect("ca");
        let req = crate::csr::parse(crate::csr::testutil::request("u", &[], &[]).as_bytes())
            .expect("req");
        let cert = ca
            .sign(
                &req,
                &["client auth".into()],
                Duration::from_secs(3600),
                now,
            )
            .expect("sign");
        assert!(reason(&csr(now, cond("Approved", now - 60), Some(&cert)), now).is_none());
        assert!(reason(&csr(now, cond("Approved", now - 3700), Some(&cert)), now).is_some());
        // issued and expired
        let later = now + 2 * 3600;
        let fresh = cond("Approved", later - 60);
        assert_eq!(
            reason(&csr(now, fresh, Some(&cert)), later).as_deref(),
            Some("its certificate has expired")
        );
    }
}
