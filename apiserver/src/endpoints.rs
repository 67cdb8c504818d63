//! The `kubernetes` Service's endpoints with several apiservers: the lease
//! reconciler (`--endpoint-reconciler-type=lease`, as upstream). Every apiserver
//! keeps a key `<prefix>/masterleases/<ip>` alive under a 15 s etcd lease,
//! renewed every 10 s, and writes the Endpoints and EndpointSlice `kubernetes`
//! in `default` to list exactly the addresses whose keys exist, so an apiserver
//! that dies leaves the list within a lease and one that stops removes itself
//! at once.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::authn::User;
use crate::error::ApiError;
use crate::storage::prefix_end;
use crate::{store, system_ctx, Api};

/// How long a master lease lives without renewal (upstream's DefaultEndpointReconcilerTTL).
pub const LEASE_TTL: i64 = 15;
/// How often each apiserver renews its lease and reconciles (upstream's EndpointInterval).
pub const INTERVAL: Duration = Duration::from_secs(10);

fn lease_prefix(api: &Api) -> String {
    format!("{}/masterleases/", api.prefix)
}

/// Renew this apiserver's lease and reconcile, every INTERVAL, until `shutdown`;
/// then remove the lease and reconcile once more without it.
pub async fn run(api: Arc<Api>, mut shutdown: watch::Receiver<bool>) {
    let user = User::system_apiserver();
    loop {
        // the bootstrap announces this apiserver first, once `default` exists
        if api.bootstrapped.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = announce(&api, &user).await {
                tracing::warn!(error = %e.message, "renewing this apiserver's master lease");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = crate::stopped(&mut shutdown) => break,
        }
    }
}

/// Renew this apiserver's lease, then reconcile the endpoints.
pub async fn announce(api: &Api, user: &User) -> Result<(), ApiError> {
    renew(api)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    reconcile(api, user).await
}

/// Take this apiserver out of the `kubernetes` endpoints (graceful shutdown).
pub async fn remove_self(api: &Api) {
    let key = format!("{}{}", lease_prefix(api), api.advertise);
    if let Err(e) = api.storage.remove(&key).await {
        tracing::warn!(error = %e, "removing this apiserver's master lease");
        return;
    }
    match reconcile(api, &User::system_apiserver()).await {
        Ok(()) => {
            tracing::info!(address = %api.advertise, "removed this apiserver from the kubernetes endpoints")
        }
        Err(e) => tracing::warn!(error = %e.message, "reconciling the kubernetes endpoints"),
    }
}

async fn renew(api: &Api) -> Result<(), crate::storage::StorageError> {
    let ip = api.advertise.to_string();
    let lease = api.storage.grant_lease(LEASE_TTL).await?;
    let value = json!({
        "kind": "Endpoints",
        "apiVersion": "v1",
        "metadata": {"name": ip},
        "subsets": [{"addresses": [{"ip": ip}]}],
    });
    let key = format!("{}{ip}", lease_prefix(api));
    api.storage
        .put(&key, value.to_string().into_bytes(), Some(lease))
        .await?;
    Ok(())
}

/// The addresses of live apiservers: the master lease keys that exist now (read
/// from etcd, not the cache, so a lease this process just wrote counts).
async fn live(api: &Api) -> Result<Vec<IpAddr>, crate::storage::StorageError> {
    let prefix = lease_prefix(api);
    let (kvs, _, _) = api
        .storage
        .range(&prefix, &prefix_end(&prefix), 0, 0)
        .await?;
    let mut ips: Vec<IpAddr> = kvs
        .iter()
        .filter_map(|kv| kv.key.strip_prefix(&prefix)?.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// Write the Endpoints and EndpointSlice `kubernetes` to list the live apiservers,
/// when they list anything else.
pub async fn reconcile(api: &Api, user: &User) -> Result<(), ApiError> {
    let ips = live(api)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    write(api, user, &ips).await
}

/// The Endpoints `kubernetes` for these addresses.
pub fn endpoints(ips: &[IpAddr], port: u16) -> Value {
    let subsets = if ips.is_empty() {
        json!([])
    } else {
        let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
        json!([{"addresses": addresses, "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}])
    };
    json!({
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets,
    })
}

/// The EndpointSlice `kubernetes` for these addresses.
pub fn slice(ips: &[IpAddr], port: u16) -> Value {
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
        .collect();
    json!({
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    })
}

/// Make the stored objects say `ips`; untouched when they already do.
pub async fn write(api: &Api, user: &User, ips: &[IpAddr]) -> Result<(), ApiError> {
    for (res, want, field) in [
        ("endpoints", endpoints(ips, api.port), "subsets"),
        ("endpointslices", slice(ips, api.port), "endpoints"),
    ] {
        let ctx = system_ctx(api, user, res, Some("default"))?;
        match store::get(&ctx, "kubernetes").await {
            Ok(have) if same(&have, &want, field) => continue,
            Ok(_) => {
                store::update(&ctx, "kubernetes", None, want).await?;
            }
            Err(e) if e.code == 404 => {
                store::create(&ctx, want).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether the stored object already lists what we want (field by field, so the
/// apiserver's defaults do not count as a difference).
fn same(have: &Value, want: &Value, field: &str) -> bool {
    let norm = |v: &Value| -> Vec<(String, String)> {
        let mut out = Vec::new();
        if field == "subsets" {
            for s in v[field].as_array().into_iter().flatten() {
                for a in s["addresses"].as_array().into_iter().flatten() {
                    out.push(("a".into(), a["ip"].as_str().unwrap_or_default().into()));
                }
                for p in s["ports"].as_array().into_iter().flatten() {
                    out.push(("p".into(), p["port"].to_string()));
                }
            }
        } else {
            for e in v[field].as_array().into_iter().flatten() {
                for a in e["addresses"].as_array().into_iter().flatten() {
                    out.push(("a".into(), a.as_str().unwrap_or_default().into()));
                }
            }
            for p in v["ports"].as_array().into_iter().flatten() {
                out.push(("p".into(), p["port"].to_string()));
            }
        }
        out.sort();
        out
    };
    norm(have) == norm(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_ignores_order_and_defaults() {
        let a: IpAddr = "10.0.0.2".parse().expect("ip");
        let b: IpAddr = "10.0.0.1".parse().expect("ip");
        let mut stored = endpoints(&[a, b], 6443);
        stored["metadata"]["uid"] = json!("x");
        assert!(same(&stored, &endpoints(&[b, a], 6443), "subsets"));
        assert!(!same(&stored, &endpoints(&[a], 6443), "subsets"));
        assert!(!same(&stored, &endpoints(&[a, b], 443), "subsets"));
        let s = slice(&[a, b], 6443);
        assert!(same(&s, &slice(&[b, a], 6443), "endpoints"));
        assert!(!same(&s, &slice(&[b], 6443), "endpoints"));
        assert_eq!(endpoints(&[], 6443)["subsets"], json!([]));
    }
}
