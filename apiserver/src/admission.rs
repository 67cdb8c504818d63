//! Mutating admission of pods on create, as upstream's plugins of the same
//! names: ServiceAccount (the pod's service account, and its token mounted
//! through a projected `kube-api-access-*` volume) and
//! DefaultTolerationSeconds (300 s tolerations of the not-ready and
//! unreachable taints).

use serde_json::{json, Value};

use crate::store::Ctx;

pub const TOKEN_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Admit a pod being created.
pub fn pod_create(ctx: &Ctx<'_>, pod: &mut Value) {
    let mirror = pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some();
    if !mirror {
        service_account(ctx, pod);
    }
    default_toleration_seconds(pod);
}

fn service_account(ctx: &Ctx<'_>, pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let name = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.get("serviceAccount")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(name));
    spec.insert("serviceAccount".into(), json!(name));
    // a token only where the server can issue one and the account exists
    // (upstream refuses the pod when the account is missing; here the pod
    // runs without a token instead, so a namespace made a moment ago works)
    if ctx.api.sa_signer.is_none() {
        return;
    }
    let ns = ctx.ns.clone().unwrap_or_default();
    let Some(res) = crate::registry::lookup("", "v1", "serviceaccounts") else {
        return;
    };
    let Some(sa) = ctx
        .api
        .cache
        .get(&res.key(&ctx.api.prefix, Some(&ns), &name))
        .and_then(|e| serde_json::from_slice::<Value>(&e.data).ok())
    else {
        return;
    };
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if !automount {
        return;
    }
    let mounted = ["containers", "initContainers"].iter().any(|k| {
        spec.get(*k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| {
                c.get("volumeMounts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT))
    });
    if mounted {
        return;
    }
    let volume = format!("kube-api-access-{}", crate::store::random_suffix());
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    if let Some(v) = volumes.as_array_mut() {
        v.push(json!({
            "name": volume,
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                ]
            }
        }));
    }
    for k in ["containers", "initContainers"] {
        for c in spec
            .get_mut(k)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(c) = c.as_object_mut() {
                let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
                if let Some(m) = mounts.as_array_mut() {
                    m.push(json!({"name": volume, "readOnly": true, "mountPath": TOKEN_MOUNT}));
                }
            }
        }
    }
}

/// Tolerate node.kubernetes.io/not-ready and unreachable (NoExecute) for
/// 300 s unless the pod already tolerates them.
pub fn default_toleration_seconds(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let tols = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tols.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = list.iter().any(|t| {
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
            (effect.is_empty() || effect == "NoExecute")
                && (k == key || (k.is_empty() && op == "Exists"))
        });
        if !tolerated {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_are_added_once() {
        let mut pod = json!({"spec": {"containers": []}});
        default_toleration_seconds(&mut pod);
        let t = pod["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["tolerationSeconds"], 300);
        assert_eq!(t[1]["key"], "node.kubernetes.io/unreachable");
        // a pod's own choice stays
        let mut own = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
        default_toleration_seconds(&mut own);
        let t = own["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["tolerationSeconds"], 5);
        // tolerating everything tolerates these
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&mut all);
        assert_eq!(all["spec"]["tolerations"].as_array().map(Vec::len), Some(1));
    }
}

/// The PodSecurity admission plugin, as upstream's: pods are checked against
/// the namespace's `pod-security.kubernetes.io/enforce` level (403 when they
/// violate it) and `warn` level (a warning); workloads with a pod template are
/// checked against `warn` only; a namespace's labels must be valid, and
/// tightening `enforce` warns about the pods already there that violate it.
/// Updates of a pod are checked only when they change its containers or
/// images (upstream's "significant" updates); subresources are not checked.
pub fn pod_security(
    ctx: &Ctx<'_>,
    sub: Option<&str>,
    obj: &Value,
    old: Option<&Value>,
) -> crate::error::ApiResult<()> {
    use crate::podsecurity as ps;
    if sub.is_some() {
        return Ok(());
    }
    let kind = ctx.res.kind;
    if kind == "Namespace" && ctx.res.group.is_empty() {
        return namespace_labels(ctx, obj, old);
    }
    let pod = kind == "Pod" && ctx.res.group.is_empty();
    if !pod && !ps::has_pod_spec(kind) {
        return Ok(());
    }
    if let (true, Some(old)) = (pod, old) {
        if !ps::is_significant_pod_update(obj, old) {
            return Ok(());
        }
    }
    let Some(labels) = namespace_labels_of(ctx) else {
        return Ok(());
    };
    let (policy, errs) = ps::policy_to_evaluate(&labels);
    let eval = if pod {
        ps::evaluate(&policy, &errs, &obj["metadata"], &obj["spec"], true)
    } else {
        match ps::pod_template(kind, obj) {
            Some((meta, spec)) => ps::evaluate(&policy, &errs, meta, spec, false),
            None => return Ok(()),
        }
    };
    for w in eval.warnings {
        ctx.warn(w);
    }
    match eval.forbidden {
        Some(why) => Err(crate::error::ApiError::forbidden(format!(
            "pods {:?} is forbidden: {why}",
            obj.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ))),
        None => Ok(()),
    }
}

/// The labels of the namespace a request writes into (from the watch cache).
fn namespace_labels_of(ctx: &Ctx<'_>) -> Option<std::collections::BTreeMap<String, String>> {
    let ns = ctx.ns.as_deref()?;
    let res = crate::registry::lookup("", "v1", "namespaces")?;
    let e = ctx.api.cache.get(&res.key(&ctx.api.prefix, None, ns))?;
    Some(e.labels.clone())
}

fn namespace_labels(ctx: &Ctx<'_>, ns: &Value, old: Option<&Value>) -> crate::error::ApiResult<()> {
    use crate::podsecurity as ps;
    let new_labels = ps::object_labels(ns);
    let old_labels = old.map(ps::object_labels);
    let errs = ps::validate_namespace_labels(&new_labels, old_labels.as_ref());
    let name = ns
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !errs.is_empty() {
        return Err(crate::error::ApiError::invalid(
            ctx.res,
            name,
            crate::store::causes(errs),
        ));
    }
    // a tightened enforce level: which pods already there would it refuse?
    let (Some(old_labels), Ok(new_policy)) = (old_labels, ps::from_namespace_labels(&new_labels))
    else {
        return Ok(());
    };
    let old_policy = ps::from_namespace_labels(&old_labels).unwrap_or_default();
    if !ps::enforce_tightened(&old_policy, &new_policy) {
        return Ok(());
    }
    let Some(pods) = crate::registry::lookup("", "v1", "pods") else {
        return Ok(());
    };
    let prefix = pods.key(&ctx.api.prefix, Some(name), "");
    let page = ctx
        .api
        .cache
        .list(&prefix, None, ps::NAMESPACE_MAX_PODS_TO_CHECK, &|_, _| true);
    let pods: Vec<Value> = page
        .items
        .iter()
        .filter_map(|e| serde_json::from_slice(&e.data).ok())
        .collect();
    for w in ps::namespace_pod_warnings(name, new_policy.enforce, &pods) {
        ctx.warn(w);
    }
    Ok(())
}

/// The value of the system classes every cluster has (upstream's
/// scheduling bootstrap): (name, value, description).
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The Priority admission plugin, as upstream's: a pod's priorityClassName
/// (or the globalDefault class, or none: 0) gives its spec.priority and
/// preemptionPolicy; an unknown class or a hand-written priority that
/// disagrees is refused. A PriorityClass may be the globalDefault only if no
/// other one is.
pub fn priority(ctx: &Ctx<'_>, obj: &mut Value) -> crate::error::ApiResult<()> {
    use crate::error::ApiError;
    let is_pod = ctx.res.kind == "Pod" && ctx.res.group.is_empty();
    if ctx.res.kind != "PriorityClass" && !is_pod {
        return Ok(());
    }
    let Some(res) = crate::registry::lookup("scheduling.k8s.io", "v1", "priorityclasses") else {
        return Ok(());
    };
    /// The fields of a PriorityClass admission reads; the rest is skipped unparsed.
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Class {
        metadata: ClassMeta,
        #[serde(default)]
        value: i64,
        #[serde(default)]
        global_default: bool,
        preemption_policy: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct ClassMeta {
        #[serde(default)]
        name: String,
    }
    let classes: Vec<Class> = ctx
        .api
        .cache
        .list(&res.key(&ctx.api.prefix, None, ""), None, 0, &|_, _| true)
        .items
        .iter()
        .filter_map(|e| serde_json::from_slice(&e.data).ok())
        .collect();
    let name_of = |v: &Value| {
        v.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if ctx.res.kind == "PriorityClass" {
        if obj.get("globalDefault").and_then(Value::as_bool) == Some(true) {
            let me = name_of(obj);
            if let Some(other) = classes
                .iter()
                .find(|c| c.global_default && c.metadata.name != me)
            {
                return Err(ApiError::forbidden(format!(
                    "priorityclasses.scheduling.k8s.io {me:?} is forbidden: PriorityClass {} is already marked as default. Only one default can exist",
                    other.metadata.name
                )));
            }
        }
        return Ok(());
    }
    let pod_name = name_of(obj);
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let wanted = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let class = if wanted.is_empty() {
        classes.iter().find(|c| c.global_default)
    } else {
        match classes.iter().find(|c| c.metadata.name == wanted) {
            Some(c) => Some(c),
            None => {
                return Err(ApiError::forbidden(format!(
                    "pods {pod_name:?} is forbidden: no PriorityClass with name {wanted} was found"
                )))
            }
        }
    };
    let (value, policy) = match class {
        Some(c) => {
            spec.insert("priorityClassName".into(), c.metadata.name.clone().into());
            (
                c.value,
                c.preemption_policy
                    .clone()
                    .unwrap_or_else(|| "PreemptLowerPriority".to_string()),
            )
        }
        None => (0, "PreemptLowerPriority".to_string()),
    };
    if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
        if given != value {
            return Err(ApiError::forbidden(format!(
                "pods {pod_name:?} is forbidden: the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
            )));
        }
    }
    spec.insert("priority".into(), value.into());
    spec.insert("preemptionPolicy".into(), policy.into());
    Ok(())
}

/// The annotations that mark a StorageClass as the cluster's default.
const DEFAULT_CLASS_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// The default StorageClass among `classes`, as upstream picks it: of those
/// annotated as default, the newest (then the first by name).
pub fn default_storage_class(classes: &[Value]) -> Option<&Value> {
    classes
        .iter()
        .filter(|c| {
            DEFAULT_CLASS_ANNOTATIONS.iter().any(|a| {
                c.pointer("/metadata/annotations")
                    .and_then(|m| m.get(*a))
                    .and_then(Value::as_str)
                    == Some("true")
            })
        })
        .max_by(|a, b| {
            let ts = |v: &Value| {
                v.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let name = |v: &Value| {
                v.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            ts(a).cmp(&ts(b)).then_with(|| name(b).cmp(&name(a)))
        })
}

/// The DefaultStorageClass admission plugin, as upstream's: a new
/// PersistentVolumeClaim that names no class (neither spec.storageClassName,
/// even empty, nor the beta annotation) gets the default class, if there is one.
pub fn default_storage_class_admit(ctx: &Ctx<'_>, obj: &mut Value) {
    if ctx.res.plural != "persistentvolumeclaims" || !ctx.res.group.is_empty() {
        return;
    }
    let has_class = obj
        .pointer("/spec/storageClassName")
        .is_some_and(|v| !v.is_null())
        || obj
            .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
            .is_some();
    if has_class {
        return;
    }
    let Some(res) = crate::registry::lookup("storage.k8s.io", "v1", "storageclasses") else {
        return;
    };
    let classes: Vec<Value> = ctx
        .api
        .cache
        .list(&res.key(&ctx.api.prefix, None, ""), None, 0, &|_, _| true)
        .items
        .iter()
        .filter_map(|e| serde_json::from_slice(&e.data).ok())
        .collect();
    let Some(name) = default_storage_class(&classes)
        .and_then(|c| c.pointer("/metadata/name"))
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return;
    };
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("storageClassName".into(), name.into());
    }
}

#[cfg(test)]
mod default_storage_class_tests {
    use super::default_storage_class;
    use serde_json::json;

    fn class(name: &str, created: &str, default: Option<&str>) -> serde_json::Value {
        let mut c =
            json!({"metadata": {"name": name, "creationTimestamp": created}, "provisioner": "x"});
        if let Some(v) = default {
            c["metadata"]["annotations"] =
                json!({"storageclass.kubernetes.io/is-default-class": v});
        }
        c
    }

    #[test]
    fn the_newest_default_wins_and_false_is_not_default() {
        let classes = vec![
            class("old", "2026-01-01T00:00:00Z", Some("true")),
            class("new", "2026-02-01T00:00:00Z", Some("true")),
            class("newest-not-default", "2026-03-01T00:00:00Z", Some("false")),
            class("plain", "2026-04-01T00:00:00Z", None),
        ];
        let name = |v: Option<&serde_json::Value>| {
            v.and_then(|c| c["metadata"]["name"].as_str().map(str::to_string))
        };
        assert_eq!(name(default_storage_class(&classes)), Some("new".into()));
        assert_eq!(name(default_storage_class(&classes[2..])), None);
        let beta = json!({"metadata": {"name": "beta", "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {"storageclass.beta.kubernetes.io/is-default-class": "true"}}});
        assert_eq!(
            name(default_storage_class(std::slice::from_ref(&beta))),
            Some("beta".into())
        );
    }
}
