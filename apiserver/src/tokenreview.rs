//! `POST /apis/authentication.k8s.io/v1/tokenreviews` (TokenReview): a
//! bearer token checked by the apiserver's own token authenticators, for
//! servers that delegate authentication (kube-controller-manager,
//! kube-scheduler, the kubelet's webhook mode, aggregated API servers).
//!
//! As upstream: `spec.token` is required (400 otherwise); `spec.audiences`,
//! when given, replaces the API audiences the token must be meant for, and
//! `status.audiences` holds those the token is good for.

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::Api;

/// The review with its status filled in.
pub fn review(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let token = body
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let audiences: Option<Vec<String>> = body
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect::<Vec<_>>()
        })
        .filter(|a| !a.is_empty());
    let mut out = body.clone();
    out["kind"] = json!("TokenReview");
    out["apiVersion"] = json!("authentication.k8s.io/v1");
    if !out["metadata"].is_object() {
        out["metadata"] = json!({});
    }
    out["metadata"]["creationTimestamp"] = json!(null);
    out["status"] = match api.authenticate_token(token, audiences.as_deref()) {
        Some((user, auds)) => json!({
            "authenticated": true,
            "user": {"username": user.name, "uid": user.uid, "groups": user.groups},
            "audiences": auds,
        }),
        None => json!({"user": {}}),
    };
    Ok(out)
}
