//! Per-resource strategy: what the generic store does differently per kind
//! (status reset on create, the spec/status split, generation, field values)

use serde_json::{json, Map, Value};

use crate::registry::Resource;

/// Status a kind keeps from a create request (everything else starts empty).
pub fn prepare_create(res: &Resource, obj: &mut Value) {
    let keeps_status = matches!(
        res.kind,
        "Node" | "Event" | "Lease" | "EndpointSlice" | "Endpoints"
    );
    if res.has_sub("status") && !keeps_status {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
    if res.kind == "Pod" {
        let qos = qos_class(obj);
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }
    if res.tracks_generation {
        obj["metadata"]["generation"] = json!(1);
    }
}

/// Carry over what an update of the main resource (or of `sub`) may not change.
pub fn prepare_update(res: &Resource, sub: Option<&str>, new: &mut Value, old: &Value) {
    match sub {
        _ if res.kind == crate::certificates::KIND => {
            crate::certificates::prepare_update(sub, new, old)
        }
        Some("status") => {
            let status = new.get("status").cloned();
            // a Deployment's status write may change its metadata but labels
            // (upstream's status strategy: the deployment controller records
            // the revision annotation with the status in one write)
            let meta = match res.kind {
                "Deployment" => new.get_mut("metadata").map(Value::take),
                _ => None,
            };
            *new = old.clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            if let Some(mut meta) = meta.filter(Value::is_object) {
                match old["metadata"].get("labels") {
                    Some(l) => meta["labels"] = l.clone(),
                    None => {
                        if let Some(m) = meta.as_object_mut() {
                            m.remove("labels");
                        }
                    }
                }
                new["metadata"] = meta;
            }
        }
        _ => {
            if res.has_sub("status") {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            if res.kind == "Pod" {
                // qosClass is computed at creation and never changes
                if let Some(q) = old.pointer("/status/qosClass") {
                    new["status"]["qosClass"] = q.clone();
                }
            }
        }
    }
    // metadata the system owns
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "selfLink",
    ] {
        match old["metadata"].get(f) {
            Some(v) => new["metadata"][f] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(f);
                }
            }
        }
    }
    if res.tracks_generation && spec_of(new) != spec_of(old) {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        new["metadata"]["generation"] = json!(g);
    }
}

/// Everything but metadata and status: a change here bumps the generation.
fn spec_of(obj: &Value) -> Map<String, Value> {
    obj.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of a field selector label for an object ("" when absent).
pub fn field_value(obj: &Value, field: &str) -> Option<String> {
    let path = match field {
        "source" => "source.component",
        f => f,
    };
    let mut cur = obj;
    for seg in path.split('.') {
        cur = cur.get(seg)?;
    }
    Some(match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// Upstream's QoS class of a pod: Guaranteed, Burstable or BestEffort.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod["spec"][*f].as_array())
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c["resources"]["requests"].as_object();
        let lim = c["resources"]["limits"].as_object();
        let nonzero = |m: Option<&Map<String, Value>>, k: &str| {
            m.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .is_some_and(|v| !v.trim_start_matches('0').is_empty())
        };
        for r in ["cpu", "memory"] {
            if nonzero(req, r) || nonzero(lim, r) {
                any = true;
            }
            let l = lim.and_then(|m| m.get(r));
            let q = req.and_then(|m| m.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Should an update turn into a deletion? (a terminating object whose last finalizer went)
pub fn finished_finalizing(res: &Resource, obj: &Value) -> bool {
    let meta = &obj["metadata"];
    if meta.get("deletionTimestamp").is_none_or(Value::is_null) {
        return false;
    }
    let empty = |v: &Value| v.as_array().is_none_or(Vec::is_empty);
    let grace_done = meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(0) == 0;
    let ns_done = res.kind != "Namespace" || empty(&obj["spec"]["finalizers"]);
    empty(&meta["finalizers"]) && grace_done && ns_done
}

/// The label selector of a workload's spec.selector as a string (Scale's status.selector).
pub fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel["matchLabels"].as_object() {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default();
        let vals: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match e["operator"].as_str() {
            Some("In") => parts.push(format!("{key} in ({})", vals.join(","))),
            Some("NotIn") => parts.push(format!("{key} notin ({})", vals.join(","))),
            Some("Exists") => parts.push(key.to_string()),
            Some("DoesNotExist") => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;

    #[test]
    fn status_writes_keep_spec_and_only_a_deployment_may_change_metadata() {
        let old = json!({"metadata": {"name": "d", "labels": {"a": "1"}, "annotations": {"x": "1"}},
            "spec": {"replicas": 1}, "status": {"replicas": 0}});
        let sent = json!({"metadata": {"name": "d", "labels": {"a": "2"}, "annotations": {"x": "2"}},
            "spec": {"replicas": 5}, "status": {"replicas": 3}});
        let deploy = lookup("apps", "v1", "deployments").expect("deployments");
        let mut new = sent.clone();
        prepare_update(deploy, Some("status"), &mut new, &old);
        assert_eq!(new["spec"], json!({"replicas": 1}));
        assert_eq!(new["status"], json!({"replicas": 3}));
        assert_eq!(new["metadata"]["annotations"], json!({"x": "2"}));
        assert_eq!(new["metadata"]["labels"], json!({"a": "1"}));
        let rs = lookup("apps", "v1", "replicasets").expect("replicasets");
        let mut new = sent.clone();
        prepare_update(rs, Some("status"), &mut new, &old);
        assert_eq!(new["metadata"], old["metadata"]);
        assert_eq!(new["status"], json!({"replicas": 3}));
    }

    #[test]
    fn qos() {
        assert_eq!(
            qos_class(&json!({"spec": {"containers": [{"name": "a"}]}})),
            "BestEffort"
        );
        let g = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "100m"}}}]}});
        assert_eq!(qos_class(&b), "Burstable");
        let b2 = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}}]}});
        assert_eq!(qos_class(&b2), "Burstable");
    }

    #[test]
    fn generation_bumps_only_on_spec_change() {
        let deploy = lookup("apps", "v1", "deployments").expect("deployments");
        let old = json!({"metadata": {"name": "d", "generation": 3, "uid": "u"}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut same = json!({"metadata": {"name": "d", "labels": {"a": "b"}}, "spec": {"replicas": 1}, "status": {"replicas": 9}});
        prepare_update(deploy, None, &mut same, &old);
        assert_eq!(same["metadata"]["generation"], 3);
        assert_eq!(
            same["status"]["replicas"], 1,
            "main resource update keeps status"
        );
        assert_eq!(same["metadata"]["uid"], "u");
        let mut changed = json!({"metadata": {"name": "d"}, "spec": {"replicas": 2}});
        prepare_update(deploy, None, &mut changed, &old);
        assert_eq!(changed["metadata"]["generation"], 4);
        let mut status = json!({"metadata": {"name": "d", "labels": {"x": "y"}}, "spec": {"replicas": 7}, "status": {"replicas": 2}});
        prepare_update(deploy, Some("status"), &mut status, &old);
        assert_eq!(status["spec"]["replicas"], 1, "status update keeps spec");
        assert_eq!(status["status"]["replicas"], 2);
        assert!(status["metadata"].get("labels").is_none());
    }

    #[test]
    fn field_values() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "hostNetwork": true}, "status": {"phase": "Running"}});
        assert_eq!(field_value(&pod, "spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(
            field_value(&pod, "spec.hostNetwork").as_deref(),
            Some("true")
        );
        assert_eq!(field_value(&pod, "status.podIP"), None);
        let ev = json!({"source": {"component": "kubelet"}});
        assert_eq!(field_value(&ev, "source").as_deref(), Some("kubelet"));
    }

    #[test]
    fn finalizing() {
        let ns = lookup("", "v1", "namespaces").expect("ns");
        let t =
            json!({"metadata": {"deletionTimestamp": "x"}, "spec": {"finalizers": ["kubernetes"]}});
        assert!(!finished_finalizing(ns, &t));
        let d = json!({"metadata": {"deletionTimestamp": "x"}, "spec": {"finalizers": []}});
        assert!(finished_finalizing(ns, &d));
        let cm = lookup("", "v1", "configmaps").expect("cm");
        assert!(!finished_finalizing(
            cm,
            &json!({"metadata": {"deletionTimestamp": "x", "finalizers": ["a"]}})
        ));
        assert!(!finished_finalizing(cm, &json!({"metadata": {}})));
    }

    #[test]
    fn scale_selector() {
        let s = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]});
        assert_eq!(selector_string(&s), "app=web,tier in (a,b)");
    }
}
