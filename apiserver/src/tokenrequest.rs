//! `serviceaccounts/{name}/token` (TokenRequest, authentication.k8s.io/v1):
//! a signed, audience-scoped, expiring token for a service account,
//! optionally bound to a Pod, Secret or Node that must exist and whose
//! deletion invalidates it (for pods: checked by the authenticator).

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult, Cause};
use crate::store::{self, Ctx};

/// Upstream's minimum; the default is an hour.
const MIN_SECONDS: i64 = 600;

fn invalid(name: &str, field: &str, message: &str) -> ApiError {
    let res = crate::registry::lookup("", "v1", "serviceaccounts");
    match res {
        Some(r) => ApiError::invalid(
            r,
            name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                field: field.into(),
                message: message.into(),
            }],
        ),
        None => ApiError::bad_request(message.to_string()),
    }
}

pub async fn create(ctx: &Ctx<'_>, name: &str, body: &Value) -> ApiResult<Value> {
    let Some(signer) = ctx.api.sa_signer.clone() else {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server cannot issue service account tokens: start it with --service-account-signing-key-file and --service-account-issuer",
        ));
    };
    let ns = ctx.ns.clone().unwrap_or_default();
    crate::authz::admit_node(
        ctx.api,
        ctx.user,
        crate::nodeauthz::Operation::Create,
        ctx.res,
        "token",
        &ns,
        name,
        Some(body),
        None,
    )?;
    let sa = store::get(ctx, name).await?;
    let sa_uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => 3600,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| invalid(name, "spec.expirationSeconds", "must be an integer"))?,
    };
    if seconds < MIN_SECONDS {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            "may not specify a duration less than 10 minutes",
        ));
    }
    if seconds > 1 << 32 {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let mut audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences = ctx.api.sa_verifier.audiences.clone();
    }
    let now = chrono::Utc::now().timestamp();
    let mut k8s = json!({"namespace": ns, "serviceaccount": {"name": name, "uid": sa_uid}});
    if let Some(r) = spec.get("boundObjectRef").filter(|r| !r.is_null()) {
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
        let bname = r.get("name").and_then(Value::as_str).unwrap_or_default();
        let plural = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            "Node" => "nodes",
            _ => {
                return Err(invalid(
                    name,
                    "spec.boundObjectRef.kind",
                    &format!("supported values: \"Pod\", \"Secret\", \"Node\", not {kind:?}"),
                ))
            }
        };
        let res = crate::registry::lookup("", "v1", plural)
            .ok_or_else(|| ApiError::internal(format!("{plural} are not registered")))?;
        let key = res.key(
            &ctx.api.prefix,
            (plural != "nodes").then_some(ns.as_str()),
            bname,
        );
        let obj: Value = match ctx.api.cache.get(&key) {
            Some(e) => {
                serde_json::from_slice(&e.data).map_err(|e| ApiError::internal(e.to_string()))?
            }
            None => return Err(ApiError::not_found(res, bname)),
        };
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(want) = r
            .get("uid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
        {
            if want != uid {
                return Err(ApiError::conflict(
                    res,
                    bname,
                    &format!("the UID in the bound object reference ({want}) does not match the UID in record ({uid}); the object might have been deleted and then recreated"),
                ));
            }
        }
        let field = kind.to_ascii_lowercase();
        k8s[field] = json!({"name": bname, "uid": uid});
        if kind == "Pod" {
            if let Some(node) = obj.pointer("/spec/nodeName").and_then(Value::as_str) {
                k8s["node"] = json!({"name": node});
            }
        }
    }
    let exp = now + seconds;
    let claims = json!({
        "aud": audiences,
        "exp": exp,
        "iat": now,
        "nbf": now,
        "jti": uuid::Uuid::new_v4().to_string(),
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "kubernetes.io": k8s,
    });
    let token = signer.sign(claims).map_err(ApiError::internal)?;
    let expires = chrono::DateTime::from_timestamp(exp, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let mut spec_out = spec.clone();
    spec_out["audiences"] = json!(audiences);
    spec_out["expirationSeconds"] = json!(seconds);
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": store::now()},
        "spec": spec_out,
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}
