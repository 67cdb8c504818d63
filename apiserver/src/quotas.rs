//! The LimitRanger and ResourceQuota admission plugins, as upstream's.
//!
//! LimitRanger: a pod being created gets the defaults of the LimitRanges of its
//! namespace (limits from `default`, requests from `defaultRequest`, recorded in
//! the `kubernetes.io/limit-ranger` annotation), then must fit their `min`,
//! `max` and `maxLimitRequestRatio` per Container and per Pod; a
//! PersistentVolumeClaim must fit their storage `min` / `max`.
//!
//! ResourceQuota: a create (or an update that grows what an object counts)
//! must fit every ResourceQuota of the namespace whose scopes select it;
//! `status.used` of each is raised by compare-and-swap in etcd before the
//! object is written, so concurrent writers through any apiserver never
//! overrun a quota together. The resourcequota controller recomputes
//! `status.used` from the objects (and gives back what deletions free).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::store::Ctx;

/// The objects of `plural` (core group) in the request's namespace, from the watch cache.
fn namespace_objects(ctx: &Ctx<'_>, plural: &str) -> Vec<Value> {
    let (Some(ns), Some(res)) = (ctx.ns.as_deref(), crate::registry::lookup("", "v1", plural))
    else {
        return Vec::new();
    };
    let prefix = res.key(&ctx.api.prefix, Some(ns), "");
    ctx.api
        .cache
        .list(&prefix, None, 0, &|_, _| true)
        .items
        .iter()
        .filter_map(|e| serde_json::from_slice(&e.data).ok())
        .collect()
}

fn forbidden(ctx: &Ctx<'_>, obj: &Value, errs: &[String]) -> ApiError {
    let joined = if errs.len() == 1 {
        errs[0].clone()
    } else {
        format!("[{}]", errs.join(", "))
    };
    ApiError::forbidden(format!(
        "{} {:?} is forbidden: {joined}",
        ctx.res.plural,
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    ))
}

// ---------------------------------------------------------------------------
// LimitRanger

/// Apply the namespace's LimitRange defaults to a pod or claim being created,
/// then check their bounds.
pub fn limit_ranger(ctx: &Ctx<'_>, obj: &mut Value) -> ApiResult<()> {
    if !ctx.res.group.is_empty() || !matches!(ctx.res.plural, "pods" | "persistentvolumeclaims") {
        return Ok(());
    }
    let ranges = namespace_objects(ctx, "limitranges");
    if ranges.is_empty() {
        return Ok(());
    }
    let items: Vec<Value> = ranges
        .iter()
        .flat_map(|r| {
            r.pointer("/spec/limits")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let mut errs = Vec::new();
    if ctx.res.plural == "pods" {
        set_defaults(obj, &items);
        for item in &items {
            match item.get("type").and_then(Value::as_str) {
                Some("Container") => {
                    for c in containers(obj) {
                        bounds(
                            item,
                            "Container",
                            &amounts(c, "requests"),
                            &amounts(c, "limits"),
                            &mut errs,
                        );
                    }
                }
                Some("Pod") => {
                    let (mut req, mut lim) = (BTreeMap::new(), BTreeMap::new());
                    for c in containers(obj) {
                        for (k, v) in amounts(c, "requests") {
                            *req.entry(k).or_insert(0) += v;
                        }
                        for (k, v) in amounts(c, "limits") {
                            *lim.entry(k).or_insert(0) += v;
                        }
                    }
                    bounds(item, "Pod", &req, &lim, &mut errs);
                }
                _ => {}
            }
        }
    } else {
        let req: BTreeMap<String, i128> = quota::amounts(obj.pointer("/spec/resources/requests"));
        let lim: BTreeMap<String, i128> = quota::amounts(obj.pointer("/spec/resources/limits"));
        for item in &items {
            if item.get("type").and_then(Value::as_str) == Some("PersistentVolumeClaim") {
                bounds(item, "PersistentVolumeClaim", &req, &lim, &mut errs);
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(forbidden(ctx, obj, &errs))
    }
}

fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| {
            pod.pointer(&format!("/spec/{k}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .collect()
}

fn amounts(c: &Value, what: &str) -> BTreeMap<String, i128> {
    quota::amounts(c.pointer(&format!("/resources/{what}")))
}

/// Missing limits from `default`, missing requests from `defaultRequest`, per
/// container, as upstream; what was set is named in the annotation.
fn set_defaults(pod: &mut Value, items: &[Value]) {
    let (mut default, mut default_request) = (serde_json::Map::new(), serde_json::Map::new());
    for item in items.iter().filter(|i| i["type"] == "Container") {
        for (k, v) in item["default"].as_object().into_iter().flatten() {
            default.entry(k.clone()).or_insert(v.clone());
        }
        for (k, v) in item["defaultRequest"].as_object().into_iter().flatten() {
            default_request.entry(k.clone()).or_insert(v.clone());
        }
    }
    if default.is_empty() && default_request.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for key in ["initContainers", "containers"] {
        let Some(list) = pod
            .pointer_mut(&format!("/spec/{key}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in list {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            for (what, defaults) in [("requests", &default_request), ("limits", &default)] {
                let mut set = Vec::new();
                for (k, v) in defaults {
                    if c.pointer(&format!("/resources/{what}/{k}")).is_none() {
                        if !c["resources"].is_object() {
                            c["resources"] = json!({});
                        }
                        if !c["resources"][what].is_object() {
                            c["resources"][what] = json!({});
                        }
                        c["resources"][what][k] = v.clone();
                        set.push(k.clone());
                    }
                }
                if !set.is_empty() {
                    let noun = if what == "requests" {
                        "request"
                    } else {
                        "limit"
                    };
                    notes.push(format!(
                        "{} {noun} for {} {name}",
                        set.join(", "),
                        container_word(key)
                    ));
                }
            }
        }
    }
    if !notes.is_empty() {
        if !pod["metadata"]["annotations"].is_object() {
            pod["metadata"]["annotations"] = json!({});
        }
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] =
            Value::String(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

fn container_word(key: &str) -> &'static str {
    if key == "initContainers" {
        "init container"
    } else {
        "container"
    }
}

/// min, max and maxLimitRequestRatio of one LimitRange item against requests and limits.
fn bounds(
    item: &Value,
    kind: &str,
    req: &BTreeMap<String, i128>,
    lim: &BTreeMap<String, i128>,
    errs: &mut Vec<String>,
) {
    let show = |k: &str, n: i128| quota::format(k, n);
    for (k, min) in quota::amounts(item.get("min")) {
        match req.get(&k) {
            None => errs.push(format!(
                "minimum {k} usage per {kind} is {}.  No request is specified",
                show(&k, min)
            )),
            Some(r) if *r < min => errs.push(format!(
                "minimum {k} usage per {kind} is {}, but request is {}",
                show(&k, min),
                show(&k, *r)
            )),
            _ => {}
        }
    }
    for (k, max) in quota::amounts(item.get("max")) {
        match lim.get(&k) {
            None => errs.push(format!(
                "maximum {k} usage per {kind} is {}.  No limit is specified",
                show(&k, max)
            )),
            Some(l) if *l > max => errs.push(format!(
                "maximum {k} usage per {kind} is {}, but limit is {}",
                show(&k, max),
                show(&k, *l)
            )),
            _ => {}
        }
    }
    for (k, ratio) in quota::amounts(item.get("maxLimitRequestRatio")) {
        let (Some(l), Some(r)) = (lim.get(&k), req.get(&k)) else {
            continue;
        };
        if *r <= 0 {
            continue;
        }
        let actual = *l as f64 / *r as f64;
        if actual * 1e9 > ratio as f64 {
            errs.push(format!(
                "{k} max limit to request ratio per {kind} is {}, but provided ratio is {actual:.6}",
                show(&k, ratio)
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// ResourceQuota

/// Check a create (old = None) or update against the namespace's quotas and
/// charge them. Status writes (the controller's) are not charged.
pub async fn resource_quota(
    ctx: &Ctx<'_>,
    sub: Option<&str>,
    obj: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    if sub.is_some() || !ctx.res.namespaced {
        return Ok(());
    }
    let quotas = namespace_objects(ctx, "resourcequotas");
    if quotas.is_empty() {
        return Ok(());
    }
    let (group, plural) = (ctx.res.group, ctx.res.plural);
    let mut delta = quota::usage(group, plural, obj);
    if let Some(old) = old {
        for (k, v) in quota::usage(group, plural, old) {
            *delta.entry(k).or_insert(0) -= v;
        }
    }
    delta.retain(|_, v| *v > 0);
    if delta.is_empty() {
        return Ok(());
    }
    let mut names: Vec<String> = Vec::new();
    for q in &quotas {
        if !quota::scopes_match(q, group, plural, obj) {
            continue;
        }
        let spec_hard = quota::amounts(q.pointer("/spec/hard"));
        if !spec_hard.keys().any(|k| delta.contains_key(k)) {
            continue;
        }
        let name = q["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if plural == "pods" && group.is_empty() && old.is_none() {
            if let Some(why) = quota::missing_compute(&spec_hard, obj) {
                return Err(forbidden(
                    ctx,
                    obj,
                    &[format!("failed quota: {name}: {why}")],
                ));
            }
        }
        names.push(name);
    }
    if ctx.dry_run {
        // check, do not charge
        for q in quotas
            .iter()
            .filter(|q| names.iter().any(|n| q["metadata"]["name"] == *n))
        {
            check(ctx, obj, q, &delta)?;
        }
        return Ok(());
    }
    for name in names {
        charge(ctx, obj, &name, &delta).await?;
    }
    Ok(())
}

fn check(ctx: &Ctx<'_>, obj: &Value, q: &Value, delta: &BTreeMap<String, i128>) -> ApiResult<()> {
    let name = q["metadata"]["name"].as_str().unwrap_or_default();
    let Some(hard) = q.pointer("/status/hard") else {
        let tracked: Vec<String> = quota::amounts(q.pointer("/spec/hard"))
            .into_keys()
            .filter(|k| delta.contains_key(k))
            .collect();
        return Err(forbidden(
            ctx,
            obj,
            &[format!(
                "status unknown for quota: {name}, resource: {}",
                tracked.join(",")
            )],
        ));
    };
    let hard = quota::amounts(Some(hard));
    let used = quota::amounts(q.pointer("/status/used"));
    match quota::exceeded(name, &hard, &used, delta) {
        Some(why) => Err(forbidden(ctx, obj, &[why])),
        None => Ok(()),
    }
}

/// Raise quota `name`'s status.used by `delta`, if it fits, with
/// compare-and-swap on its etcd key (re-read and re-checked on conflict).
async fn charge(
    ctx: &Ctx<'_>,
    obj: &Value,
    name: &str,
    delta: &BTreeMap<String, i128>,
) -> ApiResult<()> {
    let Some(res) = crate::registry::lookup("", "v1", "resourcequotas") else {
        return Ok(());
    };
    let key = res.key(&ctx.api.prefix, ctx.ns.as_deref(), name);
    let internal = |e: crate::storage::StorageError| ApiError::internal(e.to_string());
    for _ in 0..16 {
        let Some(kv) = ctx.api.storage.get(&key).await.map_err(internal)? else {
            // deleted meanwhile: nothing to charge
            return Ok(());
        };
        let mut q: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::internal(format!("stored quota {key}: {e}")))?;
        check(ctx, obj, &q, delta)?;
        let hard = quota::amounts(q.pointer("/status/hard"));
        let mut used = quota::amounts(q.pointer("/status/used"));
        for (k, v) in delta {
            if hard.contains_key(k) {
                *used.entry(k.clone()).or_insert(0) += v;
            }
        }
        q["status"]["used"] = quota::to_json(&used, &hard);
        if let Some(m) = q["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let body = serde_json::to_vec(&q).map_err(|e| ApiError::internal(e.to_string()))?;
        match ctx
            .api
            .storage
            .update(&key, body, kv.mod_revision, None)
            .await
        {
            Ok(_) => return Ok(()),
            Err(crate::storage::StorageError::Conflict { .. }) => continue,
            Err(e) => return Err(internal(e)),
        }
    }
    Err(ApiError::new(
        409,
        "Conflict",
        format!("Operation cannot be fulfilled on resourcequotas {name:?}: too many concurrent updates, try again"),
    ))
}
