//! token-cleaner-controller (tokencleaner; off unless named in
//! `--controllers`, as upstream): deletes a bootstrap token Secret (type
//! bootstrap.kubernetes.io/token in kube-system) once the RFC 3339 time in
//! its `expiration` key has passed; one that cannot be read counts as
//! expired, as upstream.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::{queue, run_workers, split_key, Ctx, Started, SyncResult};

pub const TOKEN_NAMESPACE: &str = "kube-system";
pub const TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";

/// What a token's `expiration` says at `now`.
#[derive(Debug, PartialEq)]
pub enum Expiry {
    Never,
    In(Duration),
    Expired,
}

pub fn expiry(secret: &Secret, now: i64) -> Expiry {
    let Some(raw) = secret
        .data
        .as_ref()
        .and_then(|d| d.get("expiration"))
        .filter(|v| !v.0.is_empty())
    else {
        return Expiry::Never;
    };
    let Some(at) = std::str::from_utf8(&raw.0)
        .ok()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s.trim()).ok())
    else {
        tracing::info!(secret = ?secret.metadata.name, "unparseable expiration time; treating the token as expired");
        return Expiry::Expired;
    };
    let left = at.timestamp() - now;
    if left <= 0 {
        Expiry::Expired
    } else {
        Expiry::In(Duration::from_secs(left.unsigned_abs()))
    }
}

fn is_token(s: &Secret) -> bool {
    s.metadata.namespace.as_deref() == Some(TOKEN_NAMESPACE)
        && s.type_.as_deref() == Some(TOKEN_TYPE)
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

async fn run(ctx: Ctx) {
    let secrets = ctx.informers.get::<Secret>();
    let q = queue();
    let feeder = crate::csr::feed(q.clone(), &secrets);
    secrets.wait_synced().await;
    let (client, store) = (ctx.client.clone(), secrets.store());
    run_workers("tokencleaner", q, 1, ctx.stop.clone(), move |key| {
        let (client, store) = (client.clone(), store.clone());
        async move { sync(&client, &store, &key).await }
    })
    .await;
    feeder.abort();
}

async fn sync(client: &kube::Client, store: &Store<Secret>, key: &str) -> SyncResult {
    let (ns, name) = split_key(key);
    if ns != TOKEN_NAMESPACE {
        return Ok(None);
    }
    let Some(secret) = store.get(&ObjectRef::new(name).within(ns)) else {
        return Ok(None);
    };
    if !is_token(&secret) || secret.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    match expiry(&secret, k8s_openapi::jiff::Timestamp::now().as_second()) {
        Expiry::Never => Ok(None),
        Expiry::In(d) => Ok(Some(d)),
        Expiry::Expired => {
            let api: Api<Secret> = Api::namespaced(client.clone(), ns);
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: secret.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(name, &dp).await {
                Ok(_) => {
                    tracing::info!(secret = key, "deleted an expired bootstrap token");
                    Ok(None)
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(exp: Option<&str>) -> Secret {
        let mut data = json!({"token-id": "YWJjZGVm"});
        if let Some(e) = exp {
            data["expiration"] =
                serde_json::to_value(k8s_openapi::ByteString(e.as_bytes().to_vec())).expect("b");
        }
        serde_json::from_value(json!({
            "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "type": TOKEN_TYPE,
            "data": data,
        }))
        .expect("secret")
    }

    #[test]
    fn tokens_expire_at_their_expiration() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("t")
            .timestamp();
        assert_eq!(expiry(&token(None), now), Expiry::Never);
        assert_eq!(
            expiry(&token(Some("2026-01-01T01:00:00Z")), now),
            Expiry::In(Duration::from_secs(3600))
        );
        assert_eq!(
            expiry(&token(Some("2025-12-31T23:00:00+00:00")), now),
            Expiry::Expired
        );
        assert_eq!(expiry(&token(Some("tomorrow")), now), Expiry::Expired);
        assert!(is_token(&token(None)));
        let mut other = token(None);
        other.type_ = Some("Opaque".into());
        assert!(!is_token(&other));
    }
}
