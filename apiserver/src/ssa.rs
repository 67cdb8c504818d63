//! server-side apply: field ownership in metadata.managedFields (FieldsV1),
//! merge of applied configurations, conflicts between managers, and the
//! ownership that plain updates record

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::strategic::{is_primitive_merge_list, merge_key};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    /// a map or struct field
    Field(String),
    /// a list item identified by its merge key, as compact JSON ({"name":"web"})
    Key(String),
    /// a member of a set-like list of scalars, as JSON
    Val(String),
}

type Path = Vec<Seg>;
type FieldSet = BTreeSet<Path>;

#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub field: String,
}

#[derive(Debug)]
pub enum ApplyError {
    Conflicts(Vec<Conflict>),
    Invalid(String),
}

impl ApplyError {
    pub fn message(&self, api_version: &str) -> String {
        match self {
            ApplyError::Invalid(m) => m.clone(),
            ApplyError::Conflicts(cs) if cs.len() == 1 => {
                format!(
                    "Apply failed with 1 conflict: conflict with \"{}\" using {api_version}: {}",
                    cs[0].manager, cs[0].field
                )
            }
            ApplyError::Conflicts(cs) => {
                let lines: Vec<String> = cs
                    .iter()
                    .map(|c| {
                        format!(
                            "- conflict with \"{}\" using {api_version}: {}",
                            c.manager, c.field
                        )
                    })
                    .collect();
                format!(
                    "Apply failed with {} conflicts: {}",
                    cs.len(),
                    lines.join("\n")
                )
            }
        }
    }
}

/// metadata fields the system owns: never part of a field set
const SYSTEM_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generateName",
];

fn names(path: &Path) -> Vec<&str> {
    path.iter()
        .filter_map(|s| {
            if let Seg::Field(f) = s {
                Some(f.as_str())
            } else {
                None
            }
        })
        .collect()
}

fn collect(kind: &str, v: &Value, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "status") {
                    continue;
                }
                if path.len() == 1
                    && path[0] == Seg::Field("metadata".into())
                    && SYSTEM_META.contains(&k.as_str())
                {
                    continue;
                }
                path.push(Seg::Field(k.clone()));
                collect(kind, child, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            let field_names = names(path);
            if let Some(mk) = merge_key(kind, &field_names) {
                for item in items {
                    let Some(kv) = item.get(mk) else { continue };
                    path.push(Seg::Key(json!({ mk: kv }).to_string()));
                    out.insert(path.clone());
                    collect(kind, item, path, out);
                    path.pop();
                }
            } else if is_primitive_merge_list(kind, &field_names) {
                for item in items {
                    path.push(Seg::Val(item.to_string()));
                    out.insert(path.clone());
                    path.pop();
                }
            } else {
                out.insert(path.clone());
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

fn set_of(kind: &str, obj: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    collect(kind, obj, &mut Vec::new(), &mut out);
    out
}

fn seg_str(s: &Seg) -> String {
    match s {
        Seg::Field(f) => format!("f:{f}"),
        Seg::Key(k) => format!("k:{k}"),
        Seg::Val(v) => format!("v:{v}"),
    }
}

fn encode(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        insert_path(&mut root, path, matches!(path.last(), Some(Seg::Key(_))));
    }
    Value::Object(root)
}

fn insert_path(node: &mut Map<String, Value>, path: &[Seg], item: bool) {
    match path.split_first() {
        None => {
            if item {
                node.insert(".".into(), json!({}));
            }
        }
        Some((s, rest)) => {
            let entry = node.entry(seg_str(s)).or_insert_with(|| json!({}));
            if let Some(m) = entry.as_object_mut() {
                insert_path(m, rest, item);
            }
        }
    }
}

fn decode(v: &Value, path: &mut Path, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    if m.is_empty() && !path.is_empty() {
        out.insert(path.clone());
        return;
    }
    for (k, child) in m {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        let seg = if let Some(f) = k.strip_prefix("f:") {
            Seg::Field(f.to_string())
        } else if let Some(key) = k.strip_prefix("k:") {
            Seg::Key(key.to_string())
        } else if let Some(val) = k.strip_prefix("v:") {
            Seg::Val(val.to_string())
        } else {
            continue;
        };
        path.push(seg);
        decode(child, path, out);
        path.pop();
    }
}

/// The field set of an object in FieldsV1 form.
pub fn field_set(kind: &str, obj: &Value) -> Value {
    encode(&set_of(kind, obj))
}

/// The value a path names in an object.
fn value_at<'a>(obj: &'a Value, path: &Path) -> Option<&'a Value> {
    let mut cur = obj;
    for s in path {
        cur = match s {
            Seg::Field(f) => cur.get(f)?,
            Seg::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).ok()?;
                cur.as_array()?
                    .iter()
                    .find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))?
            }
            Seg::Val(v) => {
                let want: Value = serde_json::from_str(v).ok()?;
                cur.as_array()?.iter().find(|x| **x == want)?
            }
        };
    }
    Some(cur)
}

/// Remove what a path names from an object.
fn remove_at(obj: &mut Value, path: &Path) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for s in parents {
        let next = match s {
            Seg::Field(f) => cur.get_mut(f),
            Seg::Key(k) => {
                let key: Map<String, Value> = match serde_json::from_str(k) {
                    Ok(k) => k,
                    Err(_) => return,
                };
                cur.as_array_mut().and_then(|a| {
                    a.iter_mut()
                        .find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))
                })
            }
            Seg::Val(_) => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Seg::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        Seg::Key(k) => {
            if let (Ok(key), Some(a)) = (
                serde_json::from_str::<Map<String, Value>>(k),
                cur.as_array_mut(),
            ) {
                a.retain(|item| !key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)));
            }
        }
        Seg::Val(v) => {
            if let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut()) {
                a.retain(|x| *x != want);
            }
        }
    }
}

fn render(path: &Path) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Seg::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = key.iter().map(|(kk, kv)| format!("{kk}={kv}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            Seg::Val(v) => s.push_str(&format!("[{v}]")),
        }
    }
    s
}

/// Merge an applied configuration into the live object.
fn merge(kind: &str, live: &mut Value, applied: &Value, path: &mut Vec<String>) {
    match (live.as_object_mut(), applied.as_object()) {
        (Some(l), Some(a)) => {
            for (k, av) in a {
                path.push(k.clone());
                let refs: Vec<&str> = path.iter().map(String::as_str).collect();
                match (l.get_mut(k), av) {
                    (Some(lv), Value::Object(_)) if lv.is_object() => merge(kind, lv, av, path),
                    (Some(Value::Array(litems)), Value::Array(aitems)) => {
                        if let Some(mk) = merge_key(kind, &refs) {
                            for ai in aitems {
                                match litems
                                    .iter_mut()
                                    .find(|li| li.get(mk).is_some() && li.get(mk) == ai.get(mk))
                                {
                                    Some(li) => merge(kind, li, ai, path),
                                    None => litems.push(ai.clone()),
                                }
                            }
                        } else if is_primitive_merge_list(kind, &refs) {
                            for ai in aitems {
                                if !litems.contains(ai) {
                                    litems.push(ai.clone());
                                }
                            }
                        } else {
                            *litems = aitems.clone();
                        }
                    }
                    _ => {
                        l.insert(k.clone(), av.clone());
                    }
                }
                path.pop();
            }
        }
        _ => *live = applied.clone(),
    }
}

struct Entry {
    raw: Map<String, Value>,
    set: FieldSet,
}

fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let raw = e.as_object()?.clone();
            let mut set = FieldSet::new();
            decode(
                raw.get("fieldsV1").unwrap_or(&Value::Null),
                &mut Vec::new(),
                &mut set,
            );
            Some(Entry { raw, set })
        })
        .collect()
}

fn is(e: &Entry, manager: &str, operation: &str) -> bool {
    e.raw.get("manager").and_then(Value::as_str) == Some(manager)
        && e.raw.get("operation").and_then(Value::as_str) == Some(operation)
}

fn write_entries(obj: &mut Value, list: Vec<Entry>) {
    let out: Vec<Value> = list
        .into_iter()
        .filter(|e| !e.set.is_empty())
        .map(|mut e| {
            e.raw.insert("fieldsType".into(), "FieldsV1".into());
            e.raw.insert("fieldsV1".into(), encode(&e.set));
            Value::Object(e.raw)
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if out.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(out));
        }
    }
}

fn new_entry(manager: &str, operation: &str, api_version: &str, now: &str, set: FieldSet) -> Entry {
    let raw =
        json!({"manager": manager, "operation": operation, "apiVersion": api_version, "time": now});
    Entry {
        raw: raw.as_object().cloned().unwrap_or_default(),
        set,
    }
}

/// Does `p` lie under or over `q` (one is a prefix of the other)?
fn overlaps(p: &Path, q: &Path) -> bool {
    p.starts_with(q) || q.starts_with(p)
}

/// Server-side apply of `applied` by `manager` onto `live` (None: a new object).
pub fn apply(
    kind: &str,
    api_version: &str,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    if !applied.is_object() {
        return Err(ApplyError::Invalid(
            "the applied configuration must be an object".into(),
        ));
    }
    let mut cfg = applied.clone();
    if let Some(meta) = cfg.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            meta.remove(f);
        }
    }
    // every keyed list item must carry its key
    check_keys(kind, &cfg, &mut Vec::new())?;
    let applied_set = set_of(kind, &cfg);
    let Some(live) = live else {
        let mut obj = cfg;
        write_entries(
            &mut obj,
            vec![new_entry(manager, "Apply", api_version, now, applied_set)],
        );
        return Ok(obj);
    };
    let mut list = entries(live);
    // conflicts: a leaf we set to a different value that another manager owns
    let mut conflicts = Vec::new();
    let mut taken: Vec<Path> = Vec::new();
    for e in list.iter().filter(|e| !is(e, manager, "Apply")) {
        let other = e
            .raw
            .get("manager")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        for p in &applied_set {
            if !e.set.contains(p) {
                continue;
            }
            let differs = match (value_at(live, p), value_at(&cfg, p)) {
                (Some(a), Some(b)) => {
                    !matches!(p.last(), Some(Seg::Key(_) | Seg::Val(_)))
                        && a != b
                        && !(a.is_object() && b.is_object())
                }
                _ => false,
            };
            if differs {
                conflicts.push(Conflict {
                    manager: other.clone(),
                    field: render(p),
                });
                taken.push(p.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for e in list.iter_mut().filter(|e| !is(e, manager, "Apply")) {
        e.set.retain(|p| !taken.contains(p));
    }
    // fields we applied before and no longer apply, owned by no one else, go
    let previous: FieldSet = list
        .iter()
        .filter(|e| is(e, manager, "Apply"))
        .flat_map(|e| e.set.iter().cloned())
        .collect();
    let mut obj = live.clone();
    let others: Vec<&Path> = list
        .iter()
        .filter(|e| !is(e, manager, "Apply"))
        .flat_map(|e| e.set.iter())
        .collect();
    let mut dropped: Vec<&Path> = previous
        .iter()
        .filter(|p| !applied_set.contains(*p))
        .filter(|p| !others.iter().any(|o| overlaps(o, p)))
        .collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove_at(&mut obj, p);
    }
    merge(kind, &mut obj, &cfg, &mut Vec::new());
    list.retain(|e| !is(e, manager, "Apply"));
    list.push(new_entry(manager, "Apply", api_version, now, applied_set));
    write_entries(&mut obj, list);
    Ok(obj)
}

fn check_keys(kind: &str, v: &Value, path: &mut Vec<String>) -> Result<(), ApplyError> {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                path.push(k.clone());
                check_keys(kind, c, path)?;
                path.pop();
            }
        }
        Value::Array(items) => {
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Some(mk) = merge_key(kind, &refs) {
                for item in items {
                    if item.get(mk).is_none() {
                        return Err(ApplyError::Invalid(format!(
                            ".{}: element {item} is missing its merge key \"{mk}\"",
                            path.join(".")
                        )));
                    }
                    check_keys(kind, item, path)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Record the fields a create, update or patch by `manager` changed.
pub fn track_update(
    kind: &str,
    api_version: &str,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    now: &str,
) {
    let new_set = set_of(kind, new);
    let old_set = old.map(|o| set_of(kind, o)).unwrap_or_default();
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| match old {
            None => true,
            Some(o) => !old_set.contains(*p) || value_at(o, p) != value_at(new, p),
        })
        .cloned()
        .collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    // ownership as the new object carries it (a client may send managedFields back unchanged)
    let mut list = match old {
        Some(o) => entries(o),
        None => entries(new),
    };
    for e in list.iter_mut() {
        let mine = is(e, manager, "Update");
        e.set
            .retain(|p| !removed.contains(p) && (mine || !changed.contains(p)));
        e.set.retain(|p| new_set.contains(p));
    }
    if changed.is_empty() && old.is_some() {
        write_entries(new, list);
        return;
    }
    match list.iter_mut().find(|e| is(e, manager, "Update")) {
        Some(e) => {
            e.set.extend(changed);
            e.raw.insert("time".into(), now.into());
            e.raw.insert("apiVersion".into(), api_version.into());
        }
        None => list.push(new_entry(manager, "Update", api_version, now, changed)),
    }
    write_entries(new, list);
}

#[cfg(test)]
mod tests {
    use super::*;

    const AV: &str = "apps/v1";
    const NOW: &str = "2026-01-01T00:00:00Z";

    fn deploy(replicas: i64, labels: Value) -> Value {
        json!({"apiVersion": AV, "kind": "Deployment", "metadata": {"name": "d", "labels": labels},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}})
    }

    fn managers(o: &Value) -> Vec<(String, String)> {
        o["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap_or_default().to_string(),
                    e["operation"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn create_records_fields_v1() {
        let o = apply(
            "Deployment",
            AV,
            None,
            &deploy(1, json!({"app": "x"})),
            "kubectl",
            false,
            NOW,
        )
        .expect("apply");
        let f = &o["metadata"]["managedFields"][0]["fieldsV1"];
        assert_eq!(f["f:metadata"]["f:labels"]["f:app"], json!({}));
        assert_eq!(f["f:spec"]["f:replicas"], json!({}));
        assert_eq!(
            f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["."],
            json!({})
        );
        assert!(f["f:metadata"].get("f:name").is_none());
    }

    #[test]
    fn reapply_without_a_label_removes_it() {
        let o = apply(
            "Deployment",
            AV,
            None,
            &deploy(1, json!({"a": "1", "b": "2"})),
            "m",
            false,
            NOW,
        )
        .expect("apply");
        let o = apply(
            "Deployment",
            AV,
            Some(&o),
            &deploy(1, json!({"a": "1"})),
            "m",
            false,
            NOW,
        )
        .expect("apply");
        assert_eq!(o["metadata"]["labels"], json!({"a": "1"}));
    }

    #[test]
    fn conflict_with_an_updater_and_force() {
        let mut o = apply(
            "Deployment",
            AV,
            None,
            &deploy(1, json!({})),
            "kubectl",
            false,
            NOW,
        )
        .expect("apply");
        let old = o.clone();
        o["spec"]["replicas"] = json!(5);
        track_update("Deployment", AV, Some(&old), &mut o, "kubectl-scale", NOW);
        assert!(managers(&o).contains(&("kubectl-scale".into(), "Update".into())));
        let err = apply(
            "Deployment",
            AV,
            Some(&o),
            &deploy(4, json!({})),
            "kubectl",
            false,
            NOW,
        )
        .expect_err("conflict");
        assert_eq!(err.message(AV), "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1: .spec.replicas");
        // same value: shared, no conflict
        apply(
            "Deployment",
            AV,
            Some(&o),
            &deploy(5, json!({})),
            "kubectl",
            false,
            NOW,
        )
        .expect("same value");
        let forced = apply(
            "Deployment",
            AV,
            Some(&o),
            &deploy(4, json!({})),
            "kubectl",
            true,
            NOW,
        )
        .expect("force");
        assert_eq!(forced["spec"]["replicas"], 4);
        assert!(
            !managers(&forced).contains(&("kubectl-scale".into(), "Update".into())),
            "scale lost its only field"
        );
    }

    #[test]
    fn keyed_lists_merge_and_keep_other_managers_items() {
        let o = apply(
            "Deployment",
            AV,
            None,
            &deploy(1, json!({})),
            "a",
            false,
            NOW,
        )
        .expect("apply");
        let mut side = o.clone();
        side["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("list")
            .push(json!({"name": "side", "image": "busybox"}));
        track_update("Deployment", AV, Some(&o), &mut side, "b", NOW);
        let again = apply(
            "Deployment",
            AV,
            Some(&side),
            &deploy(1, json!({})),
            "a",
            false,
            NOW,
        )
        .expect("apply");
        let names: Vec<&str> = again["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, vec!["web", "side"]);
    }

    #[test]
    fn missing_merge_key_is_invalid() {
        let bad = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        assert!(matches!(
            apply("Deployment", AV, None, &bad, "m", false, NOW),
            Err(ApplyError::Invalid(_))
        ));
    }

    #[test]
    fn updates_move_ownership() {
        let mut cm = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        track_update("ConfigMap", "v1", None, &mut cm, "creator", NOW);
        let old = cm.clone();
        cm["data"]["a"] = json!("2");
        cm["data"]["b"] = json!("3");
        track_update("ConfigMap", "v1", Some(&old), &mut cm, "editor", NOW);
        let ms = managers(&cm);
        assert_eq!(
            ms,
            vec![("editor".to_string(), "Update".to_string())],
            "creator lost data.a, its only field"
        );
        assert_eq!(
            cm["metadata"]["managedFields"][0]["fieldsV1"]["f:data"],
            json!({"f:a": {}, "f:b": {}})
        );
    }
}
