//! strategic merge patch for the built-in kinds: maps merge recursively, lists
//! with a merge key merge item by item, other lists are replaced; with the
//! `$patch`, `$retainKeys`, `$setElementOrder/` and `$deleteFromPrimitiveList/`
//! directives

use serde_json::{Map, Value};

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// The key that items of the list at `path` merge by (None: the list is atomic).
pub fn merge_key(kind: &str, path: &[&str]) -> Option<&'static str> {
    let n = path.len();
    let last = *path.last()?;
    let parent = if n >= 2 { path[n - 2] } else { "" };
    let in_container = CONTAINER_LISTS.contains(&parent);
    match last {
        l if CONTAINER_LISTS.contains(&l) && parent == "spec" => Some("name"),
        "volumes" | "imagePullSecrets" | "resourceClaims" if parent == "spec" => Some("name"),
        "hostAliases" if parent == "spec" => Some("ip"),
        "topologySpreadConstraints" if parent == "spec" => Some("topologyKey"),
        "env" if in_container => Some("name"),
        "ports" if in_container => Some("containerPort"),
        "volumeMounts" if in_container => Some("mountPath"),
        "volumeDevices" if in_container => Some("devicePath"),
        "schedulingGates" | "resourceClaimStatuses" if parent == "spec" || parent == "status" => {
            Some("name")
        }
        "podIPs" | "hostIPs" if parent == "status" => Some("ip"),
        "ports" if kind == "Service" && path == ["spec", "ports"] => Some("port"),
        "ownerReferences" if parent == "metadata" => Some("uid"),
        "conditions" if parent == "status" => Some("type"),
        "addresses" if kind == "Node" && parent == "status" => Some("type"),
        "secrets" if kind == "ServiceAccount" && n == 1 => Some("name"),
        _ => None,
    }
}

/// Lists of scalars that merge as sets.
pub fn is_primitive_merge_list(kind: &str, path: &[&str]) -> bool {
    path == ["metadata", "finalizers"] || (kind == "Node" && path == ["spec", "podCIDRs"])
}

/// Apply a strategic merge patch to `original`.
pub fn apply(kind: &str, original: &Value, patch: &Value) -> Result<Value, String> {
    let (Some(o), Some(p)) = (original.as_object(), patch.as_object()) else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    match merge_map(kind, o, p, &mut Vec::new())? {
        Some(m) => Ok(Value::Object(m)),
        None => Err("the patch deletes the whole object".into()),
    }
}

/// Merge a patch map into a map. None: the directive `$patch: delete` removed it.
fn merge_map(
    kind: &str,
    orig: &Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<Option<Map<String, Value>>, String> {
    match patch.get("$patch").map(|v| v.as_str()) {
        None | Some(Some("merge")) => {}
        Some(Some("replace")) => return Ok(Some(strip_directives(patch))),
        Some(Some("delete")) => return Ok(None),
        Some(other) => return Err(format!("unknown patch type: {other:?} in map")),
    }
    let mut out = orig.clone();
    for (k, pv) in patch {
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            out.remove(k);
            continue;
        }
        path.push(k.clone());
        let merged = merge_value(kind, out.get(k), pv, path)?;
        path.pop();
        match merged {
            Some(v) => {
                out.insert(k.clone(), v);
            }
            None => {
                out.remove(k);
            }
        }
    }
    // directives that name sibling fields
    for (k, pv) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = pv.as_array().ok_or_else(|| format!("{k} must be a list"))?;
            if let Some(list) = out.get_mut(field).and_then(Value::as_array_mut) {
                list.retain(|v| !remove.contains(v));
            }
        }
    }
    for (k, pv) in patch {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let order = pv.as_array().ok_or_else(|| format!("{k} must be a list"))?;
            let refs: Vec<&str> = path
                .iter()
                .map(String::as_str)
                .chain(std::iter::once(field))
                .collect();
            let key = merge_key(kind, &refs);
            if let Some(list) = out.get_mut(field).and_then(Value::as_array_mut) {
                reorder(list, order, key);
            }
        }
    }
    if let Some(retain) = patch.get("$retainKeys") {
        let keep: Vec<&str> = retain
            .as_array()
            .ok_or("$retainKeys must be a list")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Some(out))
}

fn strip_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| {
            let v = match v {
                Value::Object(o) => Value::Object(strip_directives(o)),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

fn merge_value(
    kind: &str,
    orig: Option<&Value>,
    patch: &Value,
    path: &mut Vec<String>,
) -> Result<Option<Value>, String> {
    match (orig, patch) {
        (Some(Value::Object(o)), Value::Object(p)) => {
            Ok(merge_map(kind, o, p, path)?.map(Value::Object))
        }
        (_, Value::Object(p)) => Ok(merge_map(kind, &Map::new(), p, path)?.map(Value::Object)),
        (orig, Value::Array(items)) => {
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Some(key) = merge_key(kind, &refs) {
                let base = orig.and_then(Value::as_array).cloned().unwrap_or_default();
                merge_keyed_list(kind, base, items, key, path).map(|l| Some(Value::Array(l)))
            } else if is_primitive_merge_list(kind, &refs) {
                let mut base = orig.and_then(Value::as_array).cloned().unwrap_or_default();
                for v in items {
                    if !base.contains(v) {
                        base.push(v.clone());
                    }
                }
                Ok(Some(Value::Array(base)))
            } else {
                Ok(Some(Value::Array(
                    items
                        .iter()
                        .map(|v| match v {
                            Value::Object(o) => Value::Object(strip_directives(o)),
                            other => other.clone(),
                        })
                        .collect(),
                )))
            }
        }
        (_, v) => Ok(Some(v.clone())),
    }
}

fn merge_keyed_list(
    kind: &str,
    mut base: Vec<Value>,
    items: &[Value],
    key: &str,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, String> {
    // `{"$patch": "replace"}` as an item: the list becomes the other items
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(|i| match i {
                Value::Object(o) => Value::Object(strip_directives(o)),
                other => other.clone(),
            })
            .collect());
    }
    for item in items {
        let Some(obj) = item.as_object() else {
            return Err(format!(
                "a list merged by {key:?} must hold objects, got {item}"
            ));
        };
        let Some(kv) = obj.get(key) else {
            return Err(format!(
                "map: {item} does not contain declared merge key: {key}"
            ));
        };
        let pos = base.iter().position(|b| b.get(key) == Some(kv));
        let delete = obj.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                base.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                let merged = match base[i].as_object() {
                    Some(o) => merge_map(kind, o, obj, path)?,
                    None => Some(strip_directives(obj)),
                };
                match merged {
                    Some(m) => base[i] = Value::Object(m),
                    None => {
                        base.remove(i);
                    }
                }
            }
            (None, false) => base.push(Value::Object(strip_directives(obj))),
        }
    }
    Ok(base)
}

/// Put `list` in the order `order` gives (items by merge key, or scalars by value);
/// items the order does not name keep their relative order at the end.
fn reorder(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let mut rest = std::mem::take(list);
    for o in order {
        let want = id(o);
        if let Some(i) = rest.iter().position(|v| id(v) == want) {
            list.push(rest.remove(i));
        }
    }
    list.extend(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
        "spec": {"containers": [
            {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "busybox"}
        ]}})
    }

    #[test]
    fn container_image_patch_keeps_others() {
        let out = apply(
            "Pod",
            &pod(),
            &json!({"spec": {"containers": [{"name": "side", "image": "busybox:2"}]}}),
        )
        .expect("patch");
        assert_eq!(out["spec"]["containers"][0]["image"], "nginx:1");
        assert_eq!(out["spec"]["containers"][1]["image"], "busybox:2");
    }

    #[test]
    fn env_merges_by_name_and_nulls_delete_keys() {
        let p = json!({"metadata": {"labels": {"a": null}}, "spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "2"}]}]}});
        let out = apply("Pod", &pod(), &p).expect("patch");
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
    }

    #[test]
    fn delete_and_replace_directives() {
        let out = apply(
            "Pod",
            &pod(),
            &json!({"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}),
        )
        .expect("patch");
        assert_eq!(out["spec"]["containers"].as_array().map(Vec::len), Some(1));
        let out = apply("Pod", &pod(), &json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}})).expect("patch");
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
        let out = apply(
            "Pod",
            &pod(),
            &json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
        )
        .expect("patch");
        assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
    }

    #[test]
    fn finalizers_merge_as_a_set_and_delete_from_primitive_list() {
        let out = apply(
            "Pod",
            &pod(),
            &json!({"metadata": {"finalizers": ["y", "x"]}}),
        )
        .expect("patch");
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        let out = apply(
            "Pod",
            &pod(),
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
        )
        .expect("patch");
        assert_eq!(out["metadata"]["finalizers"], json!([]));
    }

    #[test]
    fn atomic_lists_are_replaced() {
        let o = json!({"spec": {"containers": [{"name": "c", "args": ["a", "b"]}]}});
        let out = apply(
            "Pod",
            &o,
            &json!({"spec": {"containers": [{"name": "c", "args": ["z"]}]}}),
        )
        .expect("patch");
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["z"]));
    }

    #[test]
    fn set_element_order_and_missing_key() {
        let p = json!({"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "web"}], "containers": [{"name": "web", "image": "nginx:2"}]}});
        let out = apply("Pod", &pod(), &p).expect("patch");
        assert_eq!(out["spec"]["containers"][0]["name"], "side");
        assert_eq!(out["spec"]["containers"][1]["image"], "nginx:2");
        let bad = apply(
            "Pod",
            &pod(),
            &json!({"spec": {"containers": [{"image": "x"}]}}),
        );
        assert!(bad.is_err_and(|e| e.contains("does not contain declared merge key: name")));
    }

    #[test]
    fn templates_and_services() {
        assert_eq!(
            merge_key("Deployment", &["spec", "template", "spec", "containers"]),
            Some("name")
        );
        assert_eq!(
            merge_key(
                "CronJob",
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "spec",
                    "containers",
                    "env"
                ]
            ),
            Some("name")
        );
        assert_eq!(merge_key("Service", &["spec", "ports"]), Some("port"));
        assert_eq!(merge_key("EndpointSlice", &["ports"]), None);
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let out = apply(
            "Service",
            &svc,
            &json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}),
        )
        .expect("patch");
        assert_eq!(out["spec"]["ports"][1]["targetPort"], 8443);
        assert_eq!(out["spec"]["ports"][0]["name"], "http");
    }

    #[test]
    fn retain_keys() {
        let d = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let p = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = apply("Deployment", &d, &p).expect("patch");
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn keys_kubectl_patches_with() {
        assert_eq!(merge_key("Pod", &["spec", "schedulingGates"]), Some("name"));
        assert_eq!(merge_key("Pod", &["status", "podIPs"]), Some("ip"));
        assert_eq!(
            merge_key("Pod", &["spec", "containers", "resizePolicy"]),
            None
        );
        assert!(is_primitive_merge_list("Node", &["spec", "podCIDRs"]));
        let pod = json!({"spec": {"schedulingGates": [{"name": "a"}, {"name": "b"}]}});
        let out = apply(
            "Pod",
            &pod,
            &json!({"spec": {"schedulingGates": [{"name": "b", "$patch": "delete"}]}}),
        )
        .expect("patch");
        assert_eq!(out["spec"]["schedulingGates"], json!([{"name": "a"}]));
    }
}
