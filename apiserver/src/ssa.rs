//! server-side apply: field ownership in metadata.managedFields, merge of applied configurations, conflicts
//!
//! The model follows sigs.k8s.io/structured-merge-diff as the apiserver's field
//! manager drives it:
//!
//! * A *field set* is a set of paths. A path is a list of steps: a struct or
//!   map field (`f:name`), an item of a keyed list (`k:{"name":"web"}`) or a
//!   member of a set-like list of scalars (`v:"foo"`). FieldsV1 is the trie of
//!   those paths; a path that is itself in the set and also has children gets
//!   a `"."` entry.
//! * The set an applier owns is the set of its applied configuration: every
//!   scalar, every atomic list or map, every keyed list item (and the fields
//!   inside it), every member of a set-like list.
//! * Apply merges the configuration into the live object, removes what the
//!   applier applied last time, no longer applies and nobody else owns, and
//!   reports as conflicts the fields another manager owns whose value the
//!   apply adds or changes (unless forced: the fields then change hands).
//! * A create, update or patch records as its manager's the fields it added
//!   or changed (including newly created maps, lists and list items), takes
//!   them away from every other manager, and takes removed fields away from
//!   everyone.
//!
//! Without OpenAPI schemas, list and map types come from the strategic merge
//! tables (`crate::strategic`) plus a short list of well-known atomic structs
//! and maps (label selectors, node selectors, key/field references).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::strategic::{is_primitive_merge_list, merge_key};

#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The other manager as upstream prints it: `"name"`, then ` with
    /// subresource "status"` when it wrote through one, then ` using apps/v1`
    /// when its entry is an Update (an applier's version is not part of it).
    pub manager: String,
    pub field: String,
}

/// A managedFields entry's manager as conflicts name it (see `Conflict`).
fn describe_manager(e: &Entry) -> String {
    let mut s = format!("{:?}", e.get("manager"));
    if !e.get("subresource").is_empty() {
        s.push_str(&format!(" with subresource {:?}", e.get("subresource")));
    }
    if e.get("operation") == "Update" {
        s.push_str(&format!(" using {}", e.get("apiVersion")));
    }
    s
}

#[derive(Debug)]
pub enum ApplyError {
    /// 409 Conflict; `message()` gives upstream's text: `Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas` (plural "conflicts" and one line per conflict when several, as upstream).
    Conflicts(Vec<Conflict>),
    /// 400/422 style problem with the applied configuration (e.g. list item missing its merge key).
    Invalid(String),
}

impl ApplyError {
    pub fn message(&self) -> String {
        match self {
            ApplyError::Invalid(m) => m.clone(),
            ApplyError::Conflicts(cs) if cs.len() == 1 => format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                cs[0].manager, cs[0].field
            ),
            ApplyError::Conflicts(cs) => {
                // grouped by manager, managers sorted, paths in their order
                let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for c in cs {
                    by_manager
                        .entry(c.manager.as_str())
                        .or_default()
                        .push(c.field.as_str());
                }
                let mut lines = Vec::new();
                for (manager, fields) in by_manager {
                    lines.push(format!("conflicts with {manager}:"));
                    for f in fields {
                        lines.push(format!("- {f}"));
                    }
                }
                format!(
                    "Apply failed with {} conflicts: {}",
                    cs.len(),
                    lines.join("\n")
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------
// paths and field sets

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    /// a struct or map field
    Field(String),
    /// a keyed list item: (key field, compact JSON of its value), sorted by field
    Key(Vec<(String, String)>),
    /// a member of a set-like list of scalars, as compact JSON
    Val(String),
}

type Path = Vec<Seg>;
type FieldSet = BTreeSet<Path>;

fn field(name: &str) -> Seg {
    Seg::Field(name.to_string())
}

/// The FieldsV1 key of a step.
fn seg_key(seg: &Seg) -> String {
    match seg {
        Seg::Field(f) => format!("f:{f}"),
        Seg::Key(pairs) => format!("k:{}", key_json(pairs)),
        Seg::Val(v) => format!("v:{v}"),
    }
}

fn key_json(pairs: &[(String, String)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn parse_seg(key: &str) -> Option<Seg> {
    if let Some(f) = key.strip_prefix("f:") {
        return Some(Seg::Field(f.to_string()));
    }
    if let Some(k) = key.strip_prefix("k:") {
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(k) else {
            return None;
        };
        let mut pairs: Vec<(String, String)> =
            m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        pairs.sort();
        return Some(Seg::Key(pairs));
    }
    if let Some(v) = key.strip_prefix("v:") {
        let v: Value = serde_json::from_str(v).ok()?;
        return Some(Seg::Val(v.to_string()));
    }
    // "i:" (list positions) never occurs for the lists this server knows
    None
}

/// A path as upstream prints it: `.spec.containers[name="web"].image`.
fn render(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Seg::Key(pairs) => {
                let parts: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push('[');
                s.push_str(&parts.join(","));
                s.push(']');
            }
            Seg::Val(v) => {
                s.push_str("[=");
                s.push_str(v);
                s.push(']');
            }
        }
    }
    s
}

#[derive(Default)]
struct Trie {
    member: bool,
    children: BTreeMap<Seg, Trie>,
}

/// A field set as FieldsV1.
fn encode(set: &FieldSet) -> Value {
    let mut root = Trie::default();
    for path in set.iter().filter(|p| !p.is_empty()) {
        let mut node = &mut root;
        for seg in path {
            node = node.children.entry(seg.clone()).or_default();
        }
        node.member = true;
    }
    trie_json(&root)
}

fn trie_json(node: &Trie) -> Value {
    let mut m = Map::new();
    if node.member && !node.children.is_empty() {
        m.insert(".".into(), Value::Object(Map::new()));
    }
    for (seg, child) in &node.children {
        m.insert(seg_key(seg), trie_json(child));
    }
    Value::Object(m)
}

/// FieldsV1 as a field set.
fn decode(v: &Value, path: &mut Path, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    if m.is_empty() {
        if !path.is_empty() {
            out.insert(path.clone());
        }
        return;
    }
    for (k, child) in m {
        if k == "." {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            continue;
        }
        let Some(seg) = parse_seg(k) else { continue };
        path.push(seg);
        decode(child, path, out);
        path.pop();
    }
}

/// A set plus every named field on the way to its paths (struct fields, not
/// list items): what a removal of a previously applied set must consider.
fn with_parents(set: &FieldSet) -> FieldSet {
    let mut out = set.clone();
    for p in set {
        for n in 1..p.len() {
            if matches!(p[n - 1], Seg::Field(_)) {
                out.insert(p[..n].to_vec());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// the schema this module can know

fn names(path: &[Seg]) -> Vec<&str> {
    path.iter()
        .filter_map(|s| match s {
            Seg::Field(f) => Some(f.as_str()),
            _ => None,
        })
        .collect()
}

enum ListType {
    /// associative list: items identified by these key fields
    Keyed(Vec<&'static str>),
    /// set of scalars
    Set,
    /// replaced as a whole
    Atomic,
}

fn list_type(kind: &str, path: &[Seg]) -> ListType {
    let n = names(path);
    if let Some(key) = merge_key(kind, &n) {
        // container and service ports are keyed by port and protocol for apply
        if n.last() == Some(&"ports") && (key == "containerPort" || key == "port") {
            return ListType::Keyed(vec![key, "protocol"]);
        }
        return ListType::Keyed(vec![key]);
    }
    if is_primitive_merge_list(kind, &n) {
        ListType::Set
    } else {
        ListType::Atomic
    }
}

/// Key fields with a default value, used when an item leaves them out.
fn key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| Value::String("TCP".into()))
}

/// The identity of a keyed list item; Err names the missing key field.
fn item_key(item: &Value, keys: &[&str]) -> Result<Seg, String> {
    let mut pairs = Vec::with_capacity(keys.len());
    for k in keys {
        let v = item
            .get(*k)
            .filter(|v| !v.is_null())
            .cloned()
            .or_else(|| key_default(k));
        match v {
            Some(v) => pairs.push((k.to_string(), v.to_string())),
            None => return Err(k.to_string()),
        }
    }
    pairs.sort();
    Ok(Seg::Key(pairs))
}

/// Is `v` the value whose compact JSON is `json`?
fn json_is(v: &Value, json: &str) -> bool {
    serde_json::to_string(v).is_ok_and(|s| s == json)
}

fn key_matches(item: &Value, pairs: &[(String, String)]) -> bool {
    pairs.iter().all(
        |(k, want)| match item.get(k.as_str()).filter(|v| !v.is_null()) {
            Some(v) => json_is(v, want),
            None => key_default(k).is_some_and(|d| json_is(&d, want)),
        },
    )
}

/// Structs and maps that upstream marks atomic (`+structType=atomic`,
/// `+mapType=atomic`): owned and replaced as a whole.
fn is_atomic_map(kind: &str, path: &[Seg]) -> bool {
    let n = names(path);
    let last = n.last().copied().unwrap_or_default();
    let parent = if n.len() >= 2 { n[n.len() - 2] } else { "" };
    match last {
        // LabelSelector of the workloads, Jobs and PodDisruptionBudgets; the
        // selector maps of Services and ReplicationControllers
        "selector" => parent == "spec",
        "nodeSelector" | "labelSelector" | "namespaceSelector" | "podSelector" | "secretKeyRef"
        | "configMapKeyRef" | "fieldRef" | "resourceFieldRef" | "claimRef" => true,
        "requiredDuringSchedulingIgnoredDuringExecution" => parent == "nodeAffinity",
        "involvedObject" => kind == "Event" && n.len() == 1,
        _ => false,
    }
}

/// Fields that are never part of a field set.
const IGNORED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "clusterName",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

// ---------------------------------------------------------------------------
// field sets of objects, comparison, merge, removal

fn to_set(kind: &str, v: &Value, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) => {
            if !path.is_empty() && is_atomic_map(kind, path) {
                out.insert(path.clone());
                return;
            }
            for (k, child) in m {
                if ignored_member(path, k) {
                    continue;
                }
                path.push(Seg::Field(k.clone()));
                to_set(kind, child, path, out);
                path.pop();
            }
        }
        Value::Array(items) => match list_type(kind, path) {
            ListType::Atomic => {
                out.insert(path.clone());
            }
            ListType::Set => {
                for item in items {
                    path.push(Seg::Val(item.to_string()));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            ListType::Keyed(keys) => {
                for item in items {
                    let Ok(id) = item_key(item, &keys) else {
                        continue;
                    };
                    path.push(id);
                    out.insert(path.clone());
                    to_set(kind, item, path, out);
                    path.pop();
                }
            }
        },
        _ => {
            if !path.is_empty() {
                out.insert(path.clone());
            }
        }
    }
}

/// The field set of an object (ignored metadata left out).
fn set_of(kind: &str, obj: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    to_set(kind, obj, &mut Vec::new(), &mut out);
    out
}

#[derive(Default, Debug)]
struct Diff {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

impl Diff {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
    fn changed(&self) -> FieldSet {
        self.added.union(&self.modified).cloned().collect()
    }
}

#[derive(PartialEq, Clone, Copy)]
enum Shape {
    Map,
    List,
    Scalar,
}

fn shape(v: &Value) -> Shape {
    match v {
        Value::Object(_) => Shape::Map,
        Value::Array(_) => Shape::List,
        _ => Shape::Scalar,
    }
}

fn empty_or_absent(v: Option<&Value>) -> bool {
    match v {
        None => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

/// Index list items by identity (first occurrence wins, items without one are skipped).
fn index_items<'a>(kind: &str, path: &[Seg], items: &'a [Value]) -> Vec<(Seg, &'a Value)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let lt = list_type(kind, path);
    for item in items {
        let id = match &lt {
            ListType::Keyed(keys) => match item_key(item, keys) {
                Ok(id) => id,
                Err(_) => continue,
            },
            ListType::Set => Seg::Val(item.to_string()),
            ListType::Atomic => continue,
        };
        if seen.insert(id.clone()) {
            out.push((id, item));
        }
    }
    out
}

/// What a comparison knows besides the two values: the kind (for list and map
/// types) and, when `old` stands for a typed object, the struct fields such an
/// object always carries (compared as empty maps where `old` lacks them).
struct Cmp<'a> {
    kind: &'a str,
    skeleton: Vec<&'static [&'static str]>,
    empty: Value,
}

impl Cmp<'_> {
    /// Whether `path` + `name` is a struct field the typed `old` always has.
    fn in_skeleton(&self, path: &[Seg], name: &str) -> bool {
        self.skeleton.iter().any(|p| {
            p.len() == path.len() + 1
                && p.last() == Some(&name)
                && p.iter()
                    .zip(path)
                    .all(|(f, s)| matches!(s, Seg::Field(n) if n == f))
        })
    }
}

/// Whether a member of the map at `path` is never part of a field set
/// (apiVersion, kind and the metadata no manager owns), skipped in place.
fn ignored_member(path: &[Seg], name: &str) -> bool {
    match path {
        [] => name == "apiVersion" || name == "kind",
        [Seg::Field(m)] if m == "metadata" => IGNORED_META.contains(&name),
        _ => false,
    }
}

/// Compare two versions of a node: leaves (scalars, atomic lists and maps,
/// empty containers) are added, removed or modified; maps, lists and list
/// items are added or removed as nodes too.
fn compare(cx: &Cmp, l: Option<&Value>, r: Option<&Value>, path: &mut Path, d: &mut Diff) {
    let kind = cx.kind;
    let sh = match (l.map(shape), r.map(shape)) {
        (None, None) => return,
        (Some(a), Some(b)) if a != b => None,
        (Some(a), _) | (None, Some(a)) => Some(a),
    };
    let leaf = match sh {
        None | Some(Shape::Scalar) => true,
        Some(Shape::Map) => {
            (!path.is_empty() && is_atomic_map(kind, path))
                || (empty_or_absent_member(path, l) && empty_or_absent_member(path, r))
        }
        Some(Shape::List) => {
            matches!(list_type(kind, path), ListType::Atomic)
                || (empty_or_absent(l) && empty_or_absent(r))
        }
    };
    if leaf {
        match (l, r) {
            (None, Some(_)) => {
                d.added.insert(path.clone());
            }
            (Some(_), None) => {
                d.removed.insert(path.clone());
            }
            (Some(a), Some(b)) if !eq_member(path, a, b) => {
                d.modified.insert(path.clone());
            }
            _ => {}
        }
        return;
    }
    match sh {
        Some(Shape::Map) => {
            let empty = Map::new();
            let lm = l.and_then(Value::as_object).unwrap_or(&empty);
            let rm = r.and_then(Value::as_object).unwrap_or(&empty);
            for k in lm.keys().chain(rm.keys().filter(|k| !lm.contains_key(*k))) {
                if ignored_member(path, k) {
                    continue;
                }
                let rv = rm.get(k);
                let lv = match lm.get(k) {
                    None if rv.is_some_and(Value::is_object) && cx.in_skeleton(path, k) => {
                        Some(&cx.empty)
                    }
                    lv => lv,
                };
                path.push(Seg::Field(k.clone()));
                compare(cx, lv, rv, path, d);
                path.pop();
            }
        }
        Some(Shape::List) => {
            let empty = Vec::new();
            let la = l.and_then(Value::as_array).unwrap_or(&empty);
            let ra = r.and_then(Value::as_array).unwrap_or(&empty);
            let li: BTreeMap<Seg, &Value> = index_items(kind, path, la).into_iter().collect();
            let ri: BTreeMap<Seg, &Value> = index_items(kind, path, ra).into_iter().collect();
            let ids: BTreeSet<&Seg> = li.keys().chain(ri.keys()).collect();
            for id in ids {
                path.push(id.clone());
                compare(cx, li.get(id).copied(), ri.get(id).copied(), path, d);
                path.pop();
            }
        }
        _ => {}
    }
    if !path.is_empty() {
        if l.is_none() {
            d.added.insert(path.clone());
        } else if r.is_none() {
            d.removed.insert(path.clone());
        }
    }
}

/// `empty_or_absent` of a map, not counting the members a field set ignores.
fn empty_or_absent_member(path: &[Seg], v: Option<&Value>) -> bool {
    match v {
        Some(Value::Object(m)) if path.len() <= 1 => m.keys().all(|k| ignored_member(path, k)),
        v => empty_or_absent(v),
    }
}

/// Equality of two maps at `path`, not counting the members a field set ignores.
fn eq_member(path: &[Seg], a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) if path.len() <= 1 => {
            let keep = |m: &'_ Map<String, Value>| {
                m.iter().filter(|(k, _)| !ignored_member(path, k)).count()
            };
            keep(x) == keep(y)
                && x.iter()
                    .filter(|(k, _)| !ignored_member(path, k))
                    .all(|(k, v)| y.get(k) == Some(v))
        }
        _ => a == b,
    }
}

/// Compare two objects; the ignored metadata and `metadata` itself are left out.
/// With `typed_old`, `old` stands for the typed object: the struct fields it
/// always carries count as present (and empty) where `new` has them.
fn diff(kind: &str, old: &Value, new: &Value, typed_old: bool) -> Diff {
    let mut d = Diff::default();
    let cx = Cmp {
        kind,
        skeleton: if typed_old {
            skeleton_paths(kind)
        } else {
            Vec::new()
        },
        empty: Value::Object(Map::new()),
    };
    compare(&cx, Some(old), Some(new), &mut Vec::new(), &mut d);
    let meta = vec![field("metadata")];
    d.added.remove(&meta);
    d.modified.remove(&meta);
    d.removed.remove(&meta);
    d
}

/// Struct fields a freshly constructed object of the kind already carries
/// (non-pointer structs serialise as `{}`): they are not "added" on create.
fn skeleton_paths(kind: &str) -> Vec<&'static [&'static str]> {
    let mut v: Vec<&'static [&'static str]> = vec![&["metadata"], &["spec"], &["status"]];
    const TEMPLATE: [&[&str]; 3] = [
        &["spec", "template"],
        &["spec", "template", "metadata"],
        &["spec", "template", "spec"],
    ];
    match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => v.extend(TEMPLATE),
        "CronJob" => v.extend([
            &["spec", "jobTemplate"][..],
            &["spec", "jobTemplate", "metadata"],
            &["spec", "jobTemplate", "spec"],
            &["spec", "jobTemplate", "spec", "template"],
            &["spec", "jobTemplate", "spec", "template", "metadata"],
            &["spec", "jobTemplate", "spec", "template", "spec"],
        ]),
        "PodTemplate" => v.extend([
            &["template"][..],
            &["template", "metadata"],
            &["template", "spec"],
        ]),
        "Service" => v.push(&["status", "loadBalancer"]),
        "Event" => v.extend([&["involvedObject"][..], &["source"]]),
        _ => {}
    }
    match kind {
        "Deployment" => v.push(&["spec", "strategy"]),
        "StatefulSet" | "DaemonSet" => v.push(&["spec", "updateStrategy"]),
        _ => {}
    }
    v
}

/// The order of a merged list: items of `r` in their order, items only in
/// `l` kept where they were relative to the shared ones.
fn merge_order<'a>(
    l: &[(Option<Seg>, &'a Value)],
    r: &[(Seg, &'a Value)],
) -> Vec<(Option<&'a Value>, Option<&'a Value>, Option<Seg>)> {
    let rmap: BTreeMap<&Seg, &Value> = r.iter().map(|(id, v)| (id, *v)).collect();
    let lmap: BTreeMap<&Seg, &Value> = l
        .iter()
        .filter_map(|(id, v)| id.as_ref().map(|id| (id, *v)))
        .collect();
    let mut shared = r
        .iter()
        .map(|(id, _)| id)
        .filter(|id| lmap.contains_key(id));
    let mut next_shared = shared.next();
    let mut out = Vec::with_capacity(l.len().max(r.len()));
    let (mut i, mut j) = (0, 0);
    while i < l.len() || j < r.len() {
        let l_in_r = |i: usize| l[i].0.as_ref().is_some_and(|id| rmap.contains_key(id));
        if i < l.len() && j < r.len() {
            if let Some(lid) = &l[i].0 {
                if *lid == r[j].0 {
                    out.push((Some(l[i].1), Some(r[j].1), Some(lid.clone())));
                    i += 1;
                    j += 1;
                    next_shared = shared.next();
                    continue;
                }
                if rmap.contains_key(lid) && next_shared.is_some_and(|s| s != lid) {
                    i += 1;
                    continue;
                }
            }
        }
        if i < l.len() && !l_in_r(i) {
            out.push((Some(l[i].1), None, l[i].0.clone()));
            i += 1;
            continue;
        }
        if j < r.len() {
            let id = &r[j].0;
            out.push((lmap.get(id).copied(), Some(r[j].1), Some(id.clone())));
            j += 1;
            if next_shared == Some(id) {
                next_shared = shared.next();
            }
            continue;
        }
        // a shared item of `l` already placed at its position in `r`
        i += 1;
    }
    out
}

/// Merge an applied configuration `r` into `l`: `r` wins on leaves, maps
/// merge by field, keyed lists by item, set lists by value, atomic lists and
/// maps are replaced.
fn merge(kind: &str, l: &Value, r: &Value, path: &mut Path) -> Value {
    match (l, r) {
        (Value::Object(lm), Value::Object(rm)) if path.is_empty() || !is_atomic_map(kind, path) => {
            let mut out = lm.clone();
            for (k, rv) in rm {
                path.push(Seg::Field(k.clone()));
                let v = match lm.get(k) {
                    Some(lv) => merge(kind, lv, rv, path),
                    None => rv.clone(),
                };
                path.pop();
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        (Value::Array(la), Value::Array(ra)) => {
            let lt = list_type(kind, path);
            let id_of = |item: &Value| -> Option<Seg> {
                match &lt {
                    ListType::Keyed(keys) => item_key(item, keys).ok(),
                    ListType::Set => Some(Seg::Val(item.to_string())),
                    ListType::Atomic => None,
                }
            };
            if matches!(lt, ListType::Atomic) {
                return r.clone();
            }
            let mut seen = BTreeSet::new();
            let lids: Vec<(Option<Seg>, &Value)> = la
                .iter()
                .filter_map(|item| match id_of(item) {
                    Some(id) if !seen.insert(id.clone()) => None,
                    id => Some((id, item)),
                })
                .collect();
            let mut rseen = BTreeSet::new();
            let rids: Vec<(Seg, &Value)> = ra
                .iter()
                .filter_map(|item| id_of(item).map(|id| (id, item)))
                .filter(|(id, _)| rseen.insert(id.clone()))
                .collect();
            let mut out = Vec::new();
            for (lv, rv, id) in merge_order(&lids, &rids) {
                match (lv, rv, id) {
                    (Some(lv), Some(rv), Some(id)) if matches!(lt, ListType::Keyed(_)) => {
                        path.push(id);
                        out.push(merge(kind, lv, rv, path));
                        path.pop();
                    }
                    (_, Some(rv), _) => out.push(rv.clone()),
                    (Some(lv), None, _) => out.push(lv.clone()),
                    (None, None, _) => {}
                }
            }
            Value::Array(out)
        }
        _ => r.clone(),
    }
}

fn child_mut<'a>(v: &'a mut Value, seg: &Seg) -> Option<&'a mut Value> {
    match seg {
        Seg::Field(f) => v.as_object_mut()?.get_mut(f),
        Seg::Key(pairs) => v.as_array_mut()?.iter_mut().find(|i| key_matches(i, pairs)),
        Seg::Val(want) => v.as_array_mut()?.iter_mut().find(|i| json_is(i, want)),
    }
}

fn remove_child(v: &mut Value, seg: &Seg) -> bool {
    match seg {
        Seg::Field(f) => v
            .as_object_mut()
            .and_then(|m| m.shift_remove(f.as_str()))
            .is_some(),
        Seg::Key(pairs) => v.as_array_mut().is_some_and(|a| {
            let n = a.len();
            a.retain(|i| !key_matches(i, pairs));
            a.len() != n
        }),
        Seg::Val(want) => v.as_array_mut().is_some_and(|a| {
            let n = a.len();
            a.retain(|i| !json_is(i, want));
            a.len() != n
        }),
    }
}

/// Remove what `path` names; maps and lists the removal leaves empty go too
/// (never `metadata`).
fn remove_path(v: &mut Value, path: &[Seg], top: bool) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    if rest.is_empty() {
        return remove_child(v, first);
    }
    let removed = match child_mut(v, first) {
        Some(c) => remove_path(c, rest, false),
        None => false,
    };
    let protected = top && *first == field("metadata");
    if removed && !protected {
        let emptied = match child_mut(v, first) {
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if emptied {
            remove_child(v, first);
        }
    }
    removed
}

/// Drop the fields the configuration sets to null (a null pointer is an
/// absent field once the object is typed again).
fn drop_applied_nulls(kind: &str, target: &mut Value, cfg: &Value, path: &mut Path) {
    match cfg {
        Value::Object(cm) => {
            if !path.is_empty() && is_atomic_map(kind, path) {
                return;
            }
            let Some(tm) = target.as_object_mut() else {
                return;
            };
            for (k, cv) in cm {
                if cv.is_null() {
                    tm.shift_remove(k.as_str());
                } else if let Some(tv) = tm.get_mut(k) {
                    path.push(Seg::Field(k.clone()));
                    drop_applied_nulls(kind, tv, cv, path);
                    path.pop();
                }
            }
        }
        Value::Array(items) => {
            let ListType::Keyed(keys) = list_type(kind, path) else {
                return;
            };
            for item in items {
                let Ok(id) = item_key(item, &keys) else {
                    continue;
                };
                let Some(t) = child_mut(target, &id) else {
                    continue;
                };
                path.push(id);
                drop_applied_nulls(kind, t, item, path);
                path.pop();
            }
        }
        _ => {}
    }
}

fn gvk(api_version: &str, kind: &str) -> String {
    if api_version.contains('/') {
        format!("{api_version}, Kind={kind}")
    } else {
        format!("/{api_version}, Kind={kind}")
    }
}

/// Every keyed list item of the configuration names its key, and no two
/// items (or set members) are the same.
fn validate(kind: &str, v: &Value, path: &mut Path, gvk: &str) -> Result<(), ApplyError> {
    let invalid = |path: &Path, what: String| {
        ApplyError::Invalid(format!(
            "failed to create typed patch object ({gvk}): {}: {what}",
            render(path)
        ))
    };
    match v {
        Value::Object(m) => {
            if !path.is_empty() && is_atomic_map(kind, path) {
                return Ok(());
            }
            for (k, child) in m {
                path.push(Seg::Field(k.clone()));
                validate(kind, child, path, gvk)?;
                path.pop();
            }
        }
        Value::Array(items) => {
            let lt = list_type(kind, path);
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                let id = match &lt {
                    ListType::Atomic => return Ok(()),
                    ListType::Set => Seg::Val(item.to_string()),
                    ListType::Keyed(keys) => item_key(item, keys).map_err(|k| {
                        invalid(
                            path,
                            format!(
                                "element {i}: associative list with keys has an element that omits key field \"{k}\" (and doesn't have default value)"
                            ),
                        )
                    })?,
                };
                if !seen.insert(id.clone()) {
                    return Err(invalid(
                        path,
                        format!("duplicate entries for key {}", render(&[id])),
                    ));
                }
                if matches!(lt, ListType::Keyed(_)) {
                    path.push(id);
                    validate(kind, item, path, gvk)?;
                    path.pop();
                }
            }
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// managedFields entries

struct Entry {
    raw: Map<String, Value>,
    set: FieldSet,
}

impl Entry {
    fn new(manager: &str, operation: &str, api_version: &str, now: &str, set: FieldSet) -> Entry {
        let mut raw = Map::new();
        raw.insert("manager".into(), manager.into());
        raw.insert("operation".into(), operation.into());
        raw.insert("apiVersion".into(), api_version.into());
        raw.insert("time".into(), now.into());
        Entry { raw, set }
    }
    fn get(&self, k: &str) -> &str {
        self.raw.get(k).and_then(Value::as_str).unwrap_or_default()
    }
    fn is_apply_of(&self, manager: &str) -> bool {
        self.get("manager") == manager
            && self.get("operation") == "Apply"
            && self.get("subresource").is_empty()
    }
    fn is_update_of(&self, manager: &str, api_version: &str, subresource: &str) -> bool {
        self.get("manager") == manager
            && self.get("operation") == "Update"
            && self.get("apiVersion") == api_version
            && self.get("subresource") == subresource
    }
}

fn decode_entries(v: Option<&Value>) -> Vec<Entry> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let raw = e.as_object()?.clone();
            let mut set = FieldSet::new();
            if let Some(f) = raw.get("fieldsV1") {
                decode(f, &mut Vec::new(), &mut set);
            }
            Some(Entry { raw, set })
        })
        .filter(|e| !e.get("manager").is_empty() || !e.set.is_empty())
        .collect()
}

/// `managedFields: []` or `[{}]` in a write asks to reset ownership.
fn is_reset(v: Option<&Value>) -> bool {
    match v.and_then(Value::as_array) {
        Some(a) if a.is_empty() => true,
        Some(a) if a.len() == 1 => a[0].as_object().is_some_and(Map::is_empty),
        _ => false,
    }
}

/// At most this many Update entries; older ones merge into "ancient-changes".
const MAX_UPDATE_MANAGERS: usize = 10;

fn cap_updaters(entries: &mut Vec<Entry>) {
    let mut updaters: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].get("operation") != "Apply")
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort_by(|&a, &b| time_key(&entries[a]).cmp(time_key(&entries[b])));
    let mut bucket_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut dropped = BTreeSet::new();
    let mut count = updaters.len();
    for &i in &updaters {
        if count <= MAX_UPDATE_MANAGERS {
            break;
        }
        let version = entries[i].get("apiVersion").to_string();
        match bucket_of.get(&version) {
            Some(&b) => {
                let set = std::mem::take(&mut entries[i].set);
                let time = entries[i].raw.get("time").cloned();
                let bucket = &mut entries[b];
                bucket
                    .raw
                    .insert("manager".into(), "ancient-changes".into());
                bucket.raw.shift_remove("subresource");
                bucket.set.extend(set);
                if let Some(t) = time {
                    bucket.raw.insert("time".into(), t);
                }
                dropped.insert(i);
                count -= 1;
            }
            None => {
                bucket_of.insert(version, i);
            }
        }
    }
    let mut i = 0;
    entries.retain(|_| {
        let keep = !dropped.contains(&i);
        i += 1;
        keep
    });
}

/// Seconds-resolution sort key of an entry's time (RFC3339, UTC).
fn time_key(e: &Entry) -> &str {
    let t = e.get("time");
    t.get(..19).unwrap_or(t)
}

/// Write the entries (empty ones dropped, capped, sorted as upstream) into
/// the object's metadata.managedFields.
fn write_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    cap_updaters(&mut entries);
    entries.sort_by(|a, b| {
        (a.get("operation"), time_key(a), a.get("manager"))
            .cmp(&(b.get("operation"), time_key(b), b.get("manager")))
            .then_with(|| a.get("apiVersion").cmp(b.get("apiVersion")))
            .then_with(|| a.get("subresource").cmp(b.get("subresource")))
    });
    let list: Vec<Value> = entries
        .into_iter()
        .map(|mut e| {
            e.raw.insert("fieldsType".into(), "FieldsV1".into());
            e.raw.insert("fieldsV1".into(), encode(&e.set));
            Value::Object(e.raw)
        })
        .collect();
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(meta) = meta.as_object_mut() {
        if list.is_empty() {
            meta.shift_remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn without_managed_fields(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.shift_remove("managedFields");
    }
    out
}

/// A configuration that carries status next to other fields is meant for the
/// main resource, where status is not the applier's to set: leave it out. A
/// configuration of only status (and identity) is an apply to /status.
fn drop_main_resource_status(cfg: &mut Value) {
    let Some(m) = cfg.as_object_mut() else { return };
    let other = m
        .keys()
        .any(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
    if other {
        m.shift_remove("status");
    }
}

// ---------------------------------------------------------------------------
// the API

/// Server-side apply of `applied` (the user's configuration, already parsed from YAML/JSON) by `manager`
/// onto `live` (None = object does not exist yet: the result is the applied config itself).
/// Returns the new object with metadata.managedFields updated (an entry {manager, operation:"Apply", apiVersion, time, fieldsType:"FieldsV1", fieldsV1}).
/// Semantics: fields set in `applied` are merged into live (maps recursively, keyed lists by merge key, atomic lists replaced);
/// a field owned by another manager whose value would change is a conflict unless `force` (then ownership moves to `manager`);
/// fields this manager owned in its previous Apply entry that are absent from `applied` and owned by no one else are removed from the object;
/// a field applied with the same value as another manager's makes them co-owners (no conflict).
/// metadata.managedFields/resourceVersion/uid/creationTimestamp/generation in `applied` are ignored; `now` is an RFC3339 timestamp string.
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
        return Err(ApplyError::Invalid(format!(
            "failed to create typed patch object ({}): the applied configuration must be an object",
            gvk(api_version, kind)
        )));
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
            meta.shift_remove(f);
        }
    }
    drop_main_resource_status(&mut cfg);
    validate(kind, &cfg, &mut Vec::new(), &gvk(api_version, kind))?;
    let cfg_set = set_of(kind, &cfg);

    let Some(live) = live else {
        let mut obj = cfg.clone();
        drop_applied_nulls(kind, &mut obj, &cfg, &mut Vec::new());
        write_entries(
            &mut obj,
            vec![Entry::new(manager, "Apply", api_version, now, cfg_set)],
        );
        return Ok(obj);
    };

    let base = without_managed_fields(live);
    let mut entries = decode_entries(live.pointer("/metadata/managedFields"));
    if entries.is_empty() {
        // an object nobody tracked yet: what it holds belongs to a placeholder
        let empty = Value::Object(Map::new());
        let set = diff(kind, &empty, &base, true).changed();
        entries.push(Entry::new(
            "before-first-apply",
            "Update",
            api_version,
            now,
            set,
        ));
    }
    let own = entries.iter().position(|e| e.is_apply_of(manager));
    let last = own.map(|i| entries[i].set.clone()).unwrap_or_default();

    let mut merged = merge(kind, &base, &cfg, &mut Vec::new());

    // what this manager applied before, applies no longer, and nobody else owns goes
    if !last.is_empty() {
        let mut owned = cfg_set.clone();
        for (i, e) in entries.iter().enumerate() {
            if Some(i) != own {
                owned.extend(e.set.iter().cloned());
            }
        }
        let owned = with_parents(&owned);
        let metadata = vec![field("metadata")];
        for p in with_parents(&last) {
            if !owned.contains(&p) && p != metadata {
                remove_path(&mut merged, &p, true);
            }
        }
    }

    let d = diff(kind, &base, &merged, false);
    let changed = d.changed();
    let mut conflicts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) == own {
            continue;
        }
        for p in e.set.intersection(&changed) {
            let c = Conflict {
                manager: describe_manager(e),
                field: render(p),
            };
            if !conflicts.contains(&c) {
                conflicts.push(c);
            }
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.sort_by(|a, b| a.manager.cmp(&b.manager));
        return Err(ApplyError::Conflicts(conflicts));
    }
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) != own {
            e.set
                .retain(|p| !changed.contains(p) && !d.removed.contains(p));
        }
    }
    match own {
        Some(i) => {
            let e = &mut entries[i];
            e.set = cfg_set;
            e.raw.insert("apiVersion".into(), api_version.into());
            if !d.is_empty() || e.get("time").is_empty() {
                e.raw.insert("time".into(), now.into());
            }
        }
        None => entries.push(Entry::new(manager, "Apply", api_version, now, cfg_set)),
    }
    drop_applied_nulls(kind, &mut merged, &cfg, &mut Vec::new());
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// The fields a create records, as FieldsV1, built straight from the object:
/// what `diff` of the typed empty object against `new` counts as changed,
/// without building path sets and encoding them again.
fn created_fields(kind: &str, new: &Value) -> Map<String, Value> {
    let cx = Cmp {
        kind,
        skeleton: skeleton_paths(kind),
        empty: Value::Object(Map::new()),
    };
    let (_, children) = created_node(&cx, true, new, &mut Vec::new());
    trie_node(false, children)
}

/// Whether `path` is a member of a create's field set, and its children's
/// FieldsV1; `typed` when the empty object already has it (a struct field).
fn created_node(cx: &Cmp, typed: bool, r: &Value, path: &mut Path) -> (bool, Vec<(Seg, Value)>) {
    let kind = cx.kind;
    let leaf = match r {
        Value::Object(_) => {
            (!path.is_empty() && is_atomic_map(kind, path)) || empty_or_absent_member(path, Some(r))
        }
        Value::Array(a) => matches!(list_type(kind, path), ListType::Atomic) || a.is_empty(),
        _ => true,
    };
    if leaf {
        // added, or for a struct field the empty object has: modified unless empty
        let member = !typed || !eq_member(path, &cx.empty, r);
        return (member, Vec::new());
    }
    let mut children = Vec::new();
    match r {
        Value::Object(m) => {
            for (k, v) in m {
                if ignored_member(path, k) {
                    continue;
                }
                let typed = v.is_object() && cx.in_skeleton(path, k);
                path.push(Seg::Field(k.clone()));
                let (mut member, ch) = created_node(cx, typed, v, path);
                // `metadata` itself is never part of a set
                if path.len() == 1 && k == "metadata" {
                    member = false;
                }
                let seg = path.pop();
                if let Some(seg) = seg.filter(|_| member || !ch.is_empty()) {
                    children.push((seg, Value::Object(trie_node(member, ch))));
                }
            }
        }
        Value::Array(items) => {
            let indexed = index_items(kind, path, items);
            for (id, item) in indexed {
                path.push(id);
                let (member, ch) = created_node(cx, false, item, path);
                let seg = path.pop();
                if let Some(seg) = seg.filter(|_| member || !ch.is_empty()) {
                    children.push((seg, Value::Object(trie_node(member, ch))));
                }
            }
        }
        _ => {}
    }
    (!typed && !path.is_empty(), children)
}

/// One FieldsV1 node, its children in the order `encode` writes them.
fn trie_node(member: bool, mut children: Vec<(Seg, Value)>) -> Map<String, Value> {
    children.sort_by(|a, b| a.0.cmp(&b.0));
    let mut m = Map::new();
    if member && !children.is_empty() {
        m.insert(".".into(), Value::Object(Map::new()));
    }
    for (seg, v) in children {
        m.insert(seg_key(&seg), v);
    }
    m
}

/// Who makes a non-apply write, and through what.
pub struct Writer<'a> {
    pub manager: &'a str,
    /// "" for the object itself, else "status", ... (recorded in the entry,
    /// which is the manager's own for that subresource, as upstream)
    pub subresource: &'a str,
    /// The write cannot set status (the object itself of a kind with a status
    /// subresource: the strategy keeps or resets it), so it owns none of it,
    /// as upstream's reset fields.
    pub resets_status: bool,
}

impl<'a> Writer<'a> {
    /// `manager` writing the object itself, status included.
    pub fn of(manager: &'a str) -> Writer<'a> {
        Writer {
            manager,
            subresource: "",
            resets_status: false,
        }
    }

    fn entry(&self, api_version: &str, now: &str, set: FieldSet) -> Entry {
        let mut e = Entry::new(self.manager, "Update", api_version, now, set);
        if !self.subresource.is_empty() {
            e.raw.insert("subresource".into(), self.subresource.into());
        }
        e
    }
}

/// After a non-apply write (create, update, patch) by `by`: records the fields that changed between `old` (None on create) and `new`
/// as owned by its manager with operation "Update" (merging into that manager's existing Update entry for the same subresource),
/// and removes them from other managers' sets.
/// Writes the result into new's metadata.managedFields. Entries whose field set becomes empty are dropped.
pub fn track_update(
    kind: &str,
    api_version: &str,
    old: Option<&Value>,
    new: &mut Value,
    by: &Writer,
    now: &str,
) {
    // ownership as the write carries it (a client may edit managedFields), else as stored
    let sent = new.pointer("/metadata/managedFields");
    let mut entries = if is_reset(sent) {
        Vec::new()
    } else {
        let e = decode_entries(sent);
        if e.is_empty() {
            old.map(|o| decode_entries(o.pointer("/metadata/managedFields")))
                .unwrap_or_default()
        } else {
            e
        }
    };
    if old.is_some() && entries.is_empty() {
        // an untracked object stays untracked until its first apply
        write_entries(new, Vec::new());
        return;
    }
    if old.is_none() && entries.is_empty() {
        // a create: one entry, its fields straight from the object
        let mut fields = created_fields(kind, new);
        if by.resets_status {
            fields.shift_remove("f:status");
        }
        let entry = (!fields.is_empty()).then(|| {
            let mut e = by.entry(api_version, now, FieldSet::new()).raw;
            e.insert("fieldsType".into(), "FieldsV1".into());
            e.insert("fieldsV1".into(), Value::Object(fields));
            Value::Object(e)
        });
        if let Some(meta) = new
            .as_object_mut()
            .map(|o| {
                o.entry("metadata")
                    .or_insert_with(|| Value::Object(Map::new()))
            })
            .and_then(Value::as_object_mut)
        {
            match entry {
                Some(e) => {
                    meta.insert("managedFields".into(), Value::Array(vec![e]));
                }
                None => {
                    meta.shift_remove("managedFields");
                }
            }
        }
        return;
    }
    let empty = Value::Object(Map::new());
    let d = diff(kind, old.unwrap_or(&empty), new, true);
    let mut changed = d.changed();
    for e in entries.iter_mut() {
        e.set
            .retain(|p| !changed.contains(p) && !d.removed.contains(p));
    }
    if by.resets_status {
        let status = field("status");
        changed.retain(|p| p.first() != Some(&status));
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.is_update_of(by.manager, api_version, by.subresource))
        {
            Some(e) => {
                e.set.extend(changed);
                e.raw.insert("time".into(), now.into());
            }
            None => entries.push(by.entry(api_version, now, changed)),
        }
    }
    write_entries(new, entries);
}

/// The field set of an object in FieldsV1 form (used for tests and by track_update), excluding apiVersion, kind and the
/// metadata no manager owns (name, namespace, managedFields, resourceVersion, uid, creationTimestamp, generation, ...).
/// Status is included: this function has no `include_status` switch, callers drop status themselves if they must.
pub fn field_set(kind: &str, obj: &Value) -> Value {
    encode(&set_of(kind, obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const AV: &str = "apps/v1";
    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T00:01:00Z";
    const T2: &str = "2026-01-01T00:02:00Z";

    /// An update of the object itself by `manager`, status included.
    fn update(
        kind: &str,
        av: &str,
        old: Option<&Value>,
        new: &mut Value,
        manager: &str,
        now: &str,
    ) {
        track_update(kind, av, old, new, &Writer::of(manager), now);
    }

    fn deploy(replicas: i64, labels: Value) -> Value {
        json!({"apiVersion": AV, "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "ns", "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}})
    }

    fn entry<'a>(o: &'a Value, manager: &str, op: &str) -> Option<&'a Value> {
        o["metadata"]["managedFields"]
            .as_array()?
            .iter()
            .find(|e| e["manager"] == manager && e["operation"] == op)
    }

    fn fields<'a>(o: &'a Value, manager: &str, op: &str) -> &'a Value {
        entry(o, manager, op)
            .map(|e| &e["fieldsV1"])
            .unwrap_or(&Value::Null)
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

    fn container_names(o: &Value) -> Vec<String> {
        o["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    }

    /// `kubectl scale`-like write by another manager.
    fn scale(o: &Value, replicas: i64, manager: &str, now: &str) -> Value {
        let mut new = o.clone();
        new["spec"]["replicas"] = json!(replicas);
        update("Deployment", AV, Some(o), &mut new, manager, now);
        new
    }

    fn create(applied: &Value, manager: &str) -> Value {
        apply("Deployment", AV, None, applied, manager, false, T0).expect("create by apply")
    }

    #[test]
    fn create_by_apply_records_the_applied_fields() {
        let o = create(&deploy(1, json!({"app": "d"})), "kubectl");
        let e = entry(&o, "kubectl", "Apply").expect("entry");
        assert_eq!(e["apiVersion"], AV);
        assert_eq!(e["time"], T0);
        assert_eq!(e["fieldsType"], "FieldsV1");
        assert_eq!(
            e["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {}, "f:image": {}, "f:name": {}}}}
                    }
                }
            })
        );
        assert_eq!(o["spec"]["replicas"], 1);
        assert_eq!(o["metadata"]["name"], "d");
    }

    #[test]
    fn field_set_format() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "n", "uid": "u", "resourceVersion": "5",
                "generation": 2, "creationTimestamp": "x", "generateName": "p-",
                "finalizers": ["a/b", "c"], "labels": {"app.kubernetes.io/name": "x"},
                "managedFields": [{"manager": "m"}]},
            "spec": {"nodeSelector": {"disk": "ssd"},
                "containers": [{"name": "c", "args": ["a", "b"],
                    "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
                    "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}]},
            "status": {"phase": "Running"}});
        assert_eq!(
            field_set("Pod", &obj),
            json!({
                "f:metadata": {
                    "f:finalizers": {"v:\"a/b\"": {}, "v:\"c\"": {}},
                    "f:generateName": {},
                    "f:labels": {"f:app.kubernetes.io/name": {}}
                },
                "f:spec": {
                    "f:containers": {"k:{\"name\":\"c\"}": {
                        ".": {},
                        "f:args": {},
                        "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {},
                            "f:valueFrom": {"f:fieldRef": {}}}},
                        "f:name": {},
                        "f:ports": {
                            "k:{\"containerPort\":53,\"protocol\":\"UDP\"}": {".": {}, "f:containerPort": {}, "f:protocol": {}},
                            "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}
                        }
                    }},
                    "f:nodeSelector": {}
                },
                "f:status": {"f:phase": {}}
            })
        );
    }

    #[test]
    fn fields_v1_round_trips() {
        let obj = json!({"metadata": {"finalizers": ["x"]},
            "spec": {"template": {"spec": {"containers": [{"name": "w", "ports": [{"containerPort": 1}]}]}}}});
        let set = set_of("Deployment", &obj);
        let mut back = FieldSet::new();
        decode(&encode(&set), &mut Vec::new(), &mut back);
        assert_eq!(set, back);
    }

    #[test]
    fn reapply_without_a_label_removes_it() {
        let o = create(&deploy(1, json!({"a": "1", "b": "2"})), "m");
        let o = apply(
            "Deployment",
            AV,
            Some(&o),
            &deploy(1, json!({"a": "1"})),
            "m",
            false,
            T1,
        )
        .expect("reapply");
        assert_eq!(o["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(
            fields(&o, "m", "Apply")["f:metadata"],
            json!({"f:labels": {"f:a": {}}})
        );
        // dropping the last label drops the map
        let mut cfg = deploy(1, json!({}));
        cfg["metadata"]
            .as_object_mut()
            .expect("meta")
            .shift_remove("labels");
        let o = apply("Deployment", AV, Some(&o), &cfg, "m", false, T2).expect("reapply");
        assert!(o["metadata"].get("labels").is_none(), "{o}");
        assert_eq!(o["metadata"]["name"], "d");
    }

    #[test]
    fn a_field_someone_else_changed_is_a_conflict() {
        let o = create(&deploy(1, json!({})), "kubectl");
        let o = scale(&o, 5, "kubectl-client-side-apply", T1);
        let s = fields(&o, "kubectl-client-side-apply", "Update");
        assert_eq!(*s, json!({"f:spec": {"f:replicas": {}}}));
        assert!(
            fields(&o, "kubectl", "Apply")["f:spec"]
                .get("f:replicas")
                .is_none(),
            "the update took replicas away from the applier"
        );
        let err = apply(
            "Deployment",
            AV,
            Some(&o),
            &deploy(4, json!({})),
            "kubectl",
            false,
            T2,
        )
        .expect_err("conflict");
        match &err {
            ApplyError::Conflicts(cs) => assert_eq!(
                cs,
                &vec![Conflict {
                    manager: "\"kubectl-client-side-apply\" using apps/v1".into(),
                    field: ".spec.replicas".into()
                }]
            ),
            ApplyError::Invalid(m) => panic!("{m}"),
        }
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
    }

    #[test]
    fn force_takes_ownership() {
        let o = create(&deploy(1, json!({})), "kubectl");
        let o = scale(&o, 5, "scaler", T1);
        let o = apply(
            "Deployment",
            AV,
            Some(&o),
            &deploy(4, json!({})),
            "kubectl",
            true,
            T2,
        )
        .expect("forced");
        assert_eq!(o["spec"]["replicas"], 4);
        assert!(
            entry(&o, "scaler", "Update").is_none(),
            "scaler lost its only field"
        );
        assert_eq!(
            fields(&o, "kubectl", "Apply")["f:spec"]["f:replicas"],
            json!({})
        );
        assert_eq!(entry(&o, "kubectl", "Apply").expect("entry")["time"], T2);
    }

    #[test]
    fn the_same_value_makes_co_owners() {
        let o = create(&deploy(1, json!({})), "kubectl");
        let o = scale(&o, 5, "scaler", T1);
        let o = apply(
            "Deployment",
            AV,
            Some(&o),
            &deploy(5, json!({})),
            "kubectl",
            false,
            T2,
        )
        .expect("no conflict");
        assert_eq!(
            fields(&o, "scaler", "Update"),
            &json!({"f:spec": {"f:replicas": {}}})
        );
        assert_eq!(
            fields(&o, "kubectl", "Apply")["f:spec"]["f:replicas"],
            json!({})
        );
        // now both own it: a change by either applier is a conflict with the other
        let err = apply(
            "Deployment",
            AV,
            Some(&o),
            &deploy(6, json!({})),
            "kubectl",
            false,
            T2,
        )
        .expect_err("conflict");
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"scaler\" using apps/v1: .spec.replicas"
        );
        // giving the field up leaves it to the co-owner
        let mut cfg = deploy(5, json!({}));
        cfg["spec"]
            .as_object_mut()
            .expect("spec")
            .shift_remove("replicas");
        let o = apply("Deployment", AV, Some(&o), &cfg, "kubectl", false, T2).expect("apply");
        assert_eq!(o["spec"]["replicas"], 5);
    }

    #[test]
    fn several_conflicts_are_listed_by_manager() {
        let o = create(&deploy(1, json!({"a": "1"})), "kubectl");
        let o = scale(&o, 5, "scaler", T1);
        let mut new = o.clone();
        new["metadata"]["labels"]["a"] = json!("2");
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("httpd");
        update("Deployment", AV, Some(&o), &mut new, "editor", T2);
        let err = apply(
            "Deployment",
            AV,
            Some(&new),
            &deploy(3, json!({"a": "1"})),
            "kubectl",
            false,
            T2,
        )
        .expect_err("conflicts");
        assert_eq!(
            err.message(),
            "Apply failed with 3 conflicts: conflicts with \"editor\" using apps/v1:\n\
             - .metadata.labels.a\n\
             - .spec.template.spec.containers[name=\"web\"].image\n\
             conflicts with \"scaler\" using apps/v1:\n\
             - .spec.replicas"
        );
    }

    #[test]
    fn keyed_lists_merge_by_key_and_keep_other_managers_items() {
        let o = create(&deploy(1, json!({})), "a");
        let mut side = o.clone();
        side["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("list")
            .push(json!({"name": "side", "image": "busybox"}));
        update("Deployment", AV, Some(&o), &mut side, "b", T1);
        assert_eq!(
            fields(&side, "b", "Update"),
            &json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"side\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
        let mut cfg = deploy(1, json!({}));
        cfg["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        let again = apply("Deployment", AV, Some(&side), &cfg, "a", false, T2).expect("apply");
        assert_eq!(container_names(&again), vec!["web", "side"]);
        assert_eq!(
            again["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );
        assert_eq!(
            again["spec"]["template"]["spec"]["containers"][1]["image"],
            "busybox"
        );
    }

    #[test]
    fn an_item_no_longer_applied_is_removed_unless_owned() {
        let mut two = deploy(1, json!({}));
        two["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("list")
            .push(json!({"name": "side", "image": "busybox"}));
        let o = create(&two, "a");
        let one = apply(
            "Deployment",
            AV,
            Some(&o),
            &deploy(1, json!({})),
            "a",
            false,
            T1,
        )
        .expect("apply");
        assert_eq!(container_names(&one), vec!["web"]);
        // another applier applying the same item keeps it alive
        let other = json!({"apiVersion": AV, "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "side", "image": "busybox"}]}}}});
        let o = apply("Deployment", AV, Some(&o), &other, "b", false, T1).expect("apply b");
        let kept = apply(
            "Deployment",
            AV,
            Some(&o),
            &deploy(1, json!({})),
            "a",
            false,
            T2,
        )
        .expect("apply a");
        assert_eq!(container_names(&kept), vec!["web", "side"]);
    }

    #[test]
    fn applied_order_wins_for_shared_items() {
        let mut cfg = deploy(1, json!({}));
        cfg["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]);
        let o = create(&cfg, "m");
        cfg["spec"]["template"]["spec"]["containers"] = json!([{"name": "b", "image": "2"}, {"name": "a", "image": "1"}, {"name": "c", "image": "3"}]);
        let o = apply("Deployment", AV, Some(&o), &cfg, "m", false, T1).expect("apply");
        assert_eq!(container_names(&o), vec!["b", "a", "c"]);
    }

    #[test]
    fn atomic_lists_are_replaced_and_conflict_as_a_whole() {
        let mut cfg = deploy(1, json!({}));
        cfg["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["a", "b"]);
        let o = create(&cfg, "m");
        let mut edited = o.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["c"]);
        update("Deployment", AV, Some(&o), &mut edited, "editor", T1);
        let err =
            apply("Deployment", AV, Some(&edited), &cfg, "m", false, T2).expect_err("conflict");
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"editor\" using apps/v1: .spec.template.spec.containers[name=\"web\"].args"
        );
        let o = apply("Deployment", AV, Some(&edited), &cfg, "m", true, T2).expect("force");
        assert_eq!(
            o["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["a", "b"])
        );
    }

    #[test]
    fn set_lists_merge_by_value() {
        let o = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "finalizers": ["x"]}, "data": {"k": "v"}});
        let mut o2 = o.clone();
        update("ConfigMap", "v1", None, &mut o2, "creator", T0);
        let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "finalizers": ["y"]}});
        let o3 = apply("ConfigMap", "v1", Some(&o2), &cfg, "m", false, T1).expect("apply");
        assert_eq!(o3["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(
            fields(&o3, "m", "Apply"),
            &json!({"f:metadata": {"f:finalizers": {"v:\"y\"": {}}}})
        );
        let o4 = apply(
            "ConfigMap",
            "v1",
            Some(&o3),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            "m",
            false,
            T2,
        )
        .expect("apply");
        assert_eq!(o4["metadata"]["finalizers"], json!(["x"]));
        assert!(
            entry(&o4, "m", "Apply").is_none(),
            "an empty set drops the entry"
        );
    }

    #[test]
    fn created_fields_match_the_diff_of_the_empty_object() {
        let objects = [
            (
                "Pod",
                json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "d", "uid": "u", "labels": {"app": "a"},
                    "annotations": {}, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "x", "controller": true}],
                    "finalizers": ["a", "b", "a"]},
                "spec": {"containers": [
                    {"name": "c", "image": "i", "ports": [{"containerPort": 80}, {"containerPort": 80, "protocol": "UDP"}],
                     "env": [{"name": "E", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}], "resources": {}, "args": ["a", "b"]},
                    {"name": "c", "image": "dup"}, {"image": "nameless"}],
                    "nodeSelector": {"k": "v"}, "tolerations": [{"key": "t", "operator": "Exists"}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
                    "securityContext": {}, "volumes": []},
                "status": {}}),
            ),
            (
                "Deployment",
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "d", "generation": 1},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "a"}},
                    "strategy": {}, "template": {"metadata": {"labels": {"app": "a"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
            ),
            (
                "Deployment",
                json!({"metadata": {"name": "d"}, "spec": {"template": {"metadata": {}}}}),
            ),
            (
                "Event",
                json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "d"},
                "involvedObject": {"kind": "Pod", "name": "p"}, "source": {}, "reason": "R", "count": 1}),
            ),
            (
                "Service",
                json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}, {"port": 80}],
                "selector": {"a": "b"}}, "status": {"loadBalancer": {}}}),
            ),
            (
                "ConfigMap",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": ""}}),
            ),
            (
                "ConfigMap",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            ),
            ("Widget", json!({"metadata": "odd", "spec": [1, 2]})),
        ];
        let empty = json!({});
        for (kind, obj) in objects {
            let slow = encode(&diff(kind, &empty, &obj, true).changed());
            let fast = Value::Object(created_fields(kind, &obj));
            assert_eq!(
                serde_json::to_string(&fast).expect("json"),
                serde_json::to_string(&slow).expect("json"),
                "{kind}: {obj}"
            );
        }
        // and through track_update: one Update entry, none for nothing to own
        let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        update("ConfigMap", "v1", None, &mut o, "m", T1);
        assert_eq!(
            o["metadata"]["managedFields"],
            json!([{"manager": "m", "operation": "Update",
            "apiVersion": "v1", "time": T1, "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:a": {}}}}])
        );
        let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "managedFields": []}});
        update("ConfigMap", "v1", None, &mut o, "m", T1);
        assert!(o["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn track_update_on_create_marks_new_maps() {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "b"}}, "data": {"a": "1"}});
        update("ConfigMap", "v1", None, &mut cm, "creator", T0);
        assert_eq!(
            fields(&cm, "creator", "Update"),
            &json!({"f:data": {".": {}, "f:a": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
        );
        let mut d = deploy(1, json!({}));
        d["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({});
        update("Deployment", AV, None, &mut d, "creator", T0);
        let f = fields(&d, "creator", "Update");
        assert!(
            f["f:spec"].get(".").is_none(),
            "spec exists on an empty Deployment"
        );
        assert!(f["f:spec"]["f:template"].get(".").is_none());
        assert_eq!(f["f:spec"]["f:selector"], json!({}));
        assert_eq!(
            f["f:spec"]["f:template"]["f:spec"]["f:containers"],
            json!({".": {}, "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}, "f:resources": {}}})
        );
        // an empty map is a leaf: owned, no "."
        assert_eq!(f["f:metadata"]["f:labels"], json!({}));
    }

    #[test]
    fn track_update_moves_ownership() {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"a": "1", "z": "0"}});
        update("ConfigMap", "v1", None, &mut cm, "creator", T0);
        let old = cm.clone();
        cm["data"]["a"] = json!("2");
        cm["data"]["b"] = json!("3");
        cm["data"].as_object_mut().expect("data").shift_remove("z");
        update("ConfigMap", "v1", Some(&old), &mut cm, "editor", T1);
        assert_eq!(fields(&cm, "creator", "Update"), &json!({"f:data": {}}));
        assert_eq!(
            fields(&cm, "editor", "Update"),
            &json!({"f:data": {"f:a": {}, "f:b": {}}})
        );
        assert_eq!(
            entry(&cm, "creator", "Update").expect("creator")["time"],
            T0
        );
        // the same manager again: one entry, fields merged, time moved
        let old = cm.clone();
        cm["data"]["c"] = json!("4");
        update("ConfigMap", "v1", Some(&old), &mut cm, "editor", T2);
        assert_eq!(managers(&cm).len(), 2);
        let e = entry(&cm, "editor", "Update").expect("editor");
        assert_eq!(
            e["fieldsV1"],
            json!({"f:data": {"f:a": {}, "f:b": {}, "f:c": {}}})
        );
        assert_eq!(e["time"], T2);
        // a write that changes nothing keeps everything as it was
        let old = cm.clone();
        update(
            "ConfigMap",
            "v1",
            Some(&old),
            &mut cm,
            "noop",
            "2030-01-01T00:00:00Z",
        );
        assert_eq!(cm, old);
    }

    #[test]
    fn reset_managed_fields_stops_tracking_until_apply() {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"a": "1"}});
        update("ConfigMap", "v1", None, &mut cm, "creator", T0);
        let old = cm.clone();
        cm["metadata"]["managedFields"] = json!([{}]);
        update("ConfigMap", "v1", Some(&old), &mut cm, "resetter", T1);
        assert!(cm["metadata"].get("managedFields").is_none());
        let old = cm.clone();
        cm["data"]["a"] = json!("2");
        update("ConfigMap", "v1", Some(&old), &mut cm, "editor", T1);
        assert!(cm["metadata"].get("managedFields").is_none());
        // the first apply finds everything owned by "before-first-apply"
        let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "3"}});
        let err = apply("ConfigMap", "v1", Some(&cm), &cfg, "m", false, T2).expect_err("conflict");
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"before-first-apply\" using v1: .data.a"
        );
        let o = apply("ConfigMap", "v1", Some(&cm), &cfg, "m", true, T2).expect("forced");
        assert_eq!(
            fields(&o, "before-first-apply", "Update"),
            &json!({"f:data": {}})
        );
    }

    #[test]
    fn managed_fields_sent_by_a_client_are_used() {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"a": "1"}});
        update("ConfigMap", "v1", None, &mut cm, "creator", T0);
        let old = cm.clone();
        cm["metadata"]["managedFields"] = json!([{"manager": "someone", "operation": "Update",
            "apiVersion": "v1", "time": T0, "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}]);
        update("ConfigMap", "v1", Some(&old), &mut cm, "editor", T1);
        assert_eq!(
            managers(&cm),
            vec![("someone".to_string(), "Update".to_string())]
        );
    }

    #[test]
    fn missing_or_duplicate_merge_keys_are_invalid() {
        let bad = json!({"apiVersion": AV, "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        match apply("Deployment", AV, None, &bad, "m", false, T0) {
            Err(e @ ApplyError::Invalid(_)) => assert_eq!(
                e.message(),
                "failed to create typed patch object (apps/v1, Kind=Deployment): .spec.template.spec.containers: element 0: associative list with keys has an element that omits key field \"name\" (and doesn't have default value)"
            ),
            other => panic!("{other:?}"),
        }
        let dup = json!({"apiVersion": AV, "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}});
        match apply("Deployment", AV, None, &dup, "m", false, T0) {
            Err(e @ ApplyError::Invalid(_)) => assert!(
                e.message()
                    .ends_with("duplicate entries for key [name=\"a\"]"),
                "{}",
                e.message()
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            apply("Deployment", AV, None, &json!([1]), "m", false, T0),
            Err(ApplyError::Invalid(_))
        ));
    }

    #[test]
    fn ignored_metadata_in_the_configuration() {
        let mut cfg = deploy(1, json!({}));
        cfg["metadata"]["resourceVersion"] = json!("7");
        cfg["metadata"]["uid"] = json!("u");
        cfg["metadata"]["managedFields"] = json!([{"manager": "evil"}]);
        let o = create(&cfg, "m");
        assert!(o["metadata"].get("resourceVersion").is_none());
        assert!(o["metadata"].get("uid").is_none());
        assert_eq!(managers(&o), vec![("m".to_string(), "Apply".to_string())]);
    }

    #[test]
    fn null_in_the_configuration_clears_the_field() {
        let mut cfg = deploy(1, json!({}));
        cfg["spec"]["paused"] = json!(true);
        let o = create(&cfg, "m");
        cfg["spec"]["paused"] = Value::Null;
        let o = apply("Deployment", AV, Some(&o), &cfg, "m", false, T1).expect("apply");
        assert!(o["spec"].get("paused").is_none(), "{o}");
    }

    #[test]
    fn status_is_not_applied_to_the_main_resource() {
        let mut cfg = deploy(1, json!({}));
        cfg["status"] = json!({"replicas": 9});
        let o = create(&cfg, "m");
        assert!(o.get("status").is_none());
        assert!(fields(&o, "m", "Apply").get("f:status").is_none());
        let status_only = json!({"apiVersion": AV, "kind": "Deployment", "metadata": {"name": "d"},
            "status": {"replicas": 9}});
        let o = apply("Deployment", AV, Some(&o), &status_only, "ctl", false, T1).expect("apply");
        assert_eq!(o["status"]["replicas"], 9);
        assert_eq!(
            fields(&o, "ctl", "Apply"),
            &json!({"f:status": {"f:replicas": {}}})
        );
    }

    #[test]
    fn a_noop_apply_keeps_the_time() {
        let o = create(&deploy(1, json!({})), "m");
        let again = apply(
            "Deployment",
            AV,
            Some(&o),
            &deploy(1, json!({})),
            "m",
            false,
            T2,
        )
        .expect("apply");
        assert_eq!(again, o);
    }

    #[test]
    fn entries_are_sorted_and_capped() {
        let mut o = create(&deploy(0, json!({})), "applier");
        for i in 0..12 {
            let mut new = o.clone();
            let mut ann = o["metadata"]["annotations"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            ann.insert(format!("k{i}"), json!("v"));
            new["metadata"]["annotations"] = Value::Object(ann);
            let now = format!("2026-01-01T00:00:{i:02}Z");
            update(
                "Deployment",
                AV,
                Some(&o),
                &mut new,
                &format!("u{i:02}"),
                &now,
            );
            o = new;
        }
        let ms = managers(&o);
        assert_eq!(ms[0], ("applier".to_string(), "Apply".to_string()));
        let updaters: Vec<&str> = ms[1..].iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(updaters.len(), MAX_UPDATE_MANAGERS);
        assert_eq!(updaters[0], "ancient-changes");
        assert_eq!(updaters[1], "u03");
        let ancient = fields(&o, "ancient-changes", "Update");
        for k in ["f:k0", "f:k1", "f:k2"] {
            assert!(
                ancient["f:metadata"]["f:annotations"].get(k).is_some(),
                "{ancient}"
            );
        }
    }

    #[test]
    fn paths_render_as_upstream() {
        let p = vec![
            field("spec"),
            field("ports"),
            Seg::Key(vec![
                ("port".into(), "80".into()),
                ("protocol".into(), "\"TCP\"".into()),
            ]),
            field("name"),
        ];
        assert_eq!(render(&p), ".spec.ports[port=80,protocol=\"TCP\"].name");
        assert_eq!(
            render(&[
                field("metadata"),
                field("finalizers"),
                Seg::Val("\"x\"".into())
            ]),
            ".metadata.finalizers[=\"x\"]"
        );
        assert_eq!(seg_key(&p[2]), "k:{\"port\":80,\"protocol\":\"TCP\"}");
    }

    #[test]
    fn service_ports_merge_by_port_and_protocol() {
        let svc = |ports: Value| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                "spec": {"selector": {"app": "x"}, "ports": ports}})
        };
        let o = apply(
            "Service",
            "v1",
            None,
            &svc(json!([{"port": 80, "name": "http"}])),
            "m",
            false,
            T0,
        )
        .expect("create");
        let o = apply(
            "Service",
            "v1",
            Some(&o),
            &svc(json!([{"port": 80, "protocol": "TCP", "name": "web"}])),
            "m",
            false,
            T1,
        )
        .expect("apply");
        assert_eq!(
            o["spec"]["ports"],
            json!([{"port": 80, "name": "web", "protocol": "TCP"}])
        );
        assert_eq!(fields(&o, "m", "Apply")["f:spec"]["f:selector"], json!({}));
    }

    #[test]
    fn merge_order_terminates_and_keeps_every_item() {
        let names = ["a", "b", "c", "d"];
        let item = |n: &str| json!({"name": n});
        let lists: Vec<Vec<&str>> = vec![
            vec![],
            vec!["a"],
            vec!["a", "b"],
            vec!["b", "a"],
            vec!["a", "b", "c"],
            vec!["c", "a"],
            vec!["d", "c", "b", "a"],
            vec!["b", "d"],
            vec!["c", "a", "d", "b"],
        ];
        for l in &lists {
            for r in &lists {
                let live = json!({"spec": {"template": {"spec": {"containers":
                    l.iter().map(|n| item(n)).collect::<Vec<_>>()}}}});
                let cfg = json!({"spec": {"template": {"spec": {"containers":
                    r.iter().map(|n| item(n)).collect::<Vec<_>>()}}}});
                let out = merge("Deployment", &live, &cfg, &mut Vec::new());
                let got = container_names(&out);
                for n in names {
                    let want = usize::from(l.contains(&n) || r.contains(&n));
                    assert_eq!(
                        got.iter().filter(|g| *g == n).count(),
                        want,
                        "{l:?} + {r:?} = {got:?}"
                    );
                }
                // the applied items keep their relative order
                let applied: Vec<&str> = got
                    .iter()
                    .map(String::as_str)
                    .filter(|g| r.contains(g))
                    .collect();
                assert_eq!(applied, *r);
            }
        }
        // upstream's placement of an item only the live list has
        let live = json!({"spec": {"template": {"spec": {"containers": [item("a"), item("b"), item("c")]}}}});
        let cfg = json!({"spec": {"template": {"spec": {"containers": [item("c"), item("a")]}}}});
        let out = merge("Deployment", &live, &cfg, &mut Vec::new());
        assert_eq!(container_names(&out), vec!["b", "c", "a"]);
    }

    #[test]
    fn status_written_by_a_controller_never_conflicts_with_an_applier() {
        let o = create(&deploy(1, json!({})), "kubectl");
        let mut s = o.clone();
        s["status"] =
            json!({"replicas": 1, "conditions": [{"type": "Available", "status": "True"}]});
        update(
            "Deployment",
            AV,
            Some(&o),
            &mut s,
            "kube-controller-manager",
            T1,
        );
        // status exists (empty) on any Deployment: no "." for it
        assert_eq!(
            fields(&s, "kube-controller-manager", "Update"),
            &json!({"f:status": {
                "f:conditions": {".": {}, "k:{\"type\":\"Available\"}": {".": {}, "f:status": {}, "f:type": {}}},
                "f:replicas": {}}})
        );
        let mut cfg = deploy(2, json!({}));
        cfg["status"] = json!({"replicas": 7});
        let o = apply("Deployment", AV, Some(&s), &cfg, "kubectl", false, T2).expect("no conflict");
        assert_eq!(o["status"]["replicas"], 1);
        assert_eq!(o["spec"]["replicas"], 2);
    }

    #[test]
    fn update_entries_are_per_api_version() {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        update("ConfigMap", "v1", None, &mut cm, "m", T0);
        let old = cm.clone();
        cm["data"]["b"] = json!("2");
        update("ConfigMap", "v2", Some(&old), &mut cm, "m", T1);
        let versions: Vec<&str> = cm["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["apiVersion"].as_str())
            .collect();
        assert_eq!(versions, vec!["v1", "v2"]);
    }

    #[test]
    fn before_first_apply_co_owns_unchanged_values() {
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"a": "1", "b": "2"}});
        let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"a": "1", "c": "3"}});
        let o = apply("ConfigMap", "v1", Some(&live), &cfg, "m", false, T1).expect("apply");
        assert_eq!(o["data"], json!({"a": "1", "b": "2", "c": "3"}));
        assert_eq!(
            fields(&o, "before-first-apply", "Update"),
            &json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}})
        );
        assert_eq!(
            fields(&o, "m", "Apply"),
            &json!({"f:data": {"f:a": {}, "f:c": {}}})
        );
    }

    #[test]
    fn status_is_owned_through_its_subresource_only() {
        // a create of the object itself owns no status, though the object has one
        let main = Writer {
            manager: "kubectl-create",
            subresource: "",
            resets_status: true,
        };
        let mut d = deploy(3, json!({"app": "d"}));
        d["status"] = json!({"replicas": 0});
        track_update("Deployment", AV, None, &mut d, &main, T0);
        assert!(fields(&d, "kubectl-create", "Update")["f:spec"].is_object());
        assert!(fields(&d, "kubectl-create", "Update")["f:status"].is_null());
        // the controller's status write: its own entry, marked with the subresource
        let status = Writer {
            manager: "kube-controller-manager",
            subresource: "status",
            resets_status: false,
        };
        let mut s = d.clone();
        s["status"] = json!({"replicas": 3, "readyReplicas": 3});
        track_update("Deployment", AV, Some(&d), &mut s, &status, T1);
        let entries = s["metadata"]["managedFields"].as_array().expect("entries");
        let kcm: Vec<&Value> = entries
            .iter()
            .filter(|e| e["manager"] == "kube-controller-manager")
            .collect();
        assert_eq!(kcm.len(), 1, "{entries:?}");
        assert_eq!(kcm[0]["subresource"], "status");
        assert_eq!(
            kcm[0]["fieldsV1"],
            json!({"f:status": {"f:readyReplicas": {}, "f:replicas": {}}})
        );
        // the same manager writing the object itself gets a second entry, without one
        let main_kcm = Writer {
            manager: "kube-controller-manager",
            subresource: "",
            resets_status: true,
        };
        let mut a = s.clone();
        a["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "1"});
        track_update("Deployment", AV, Some(&s), &mut a, &main_kcm, T2);
        let entries = a["metadata"]["managedFields"].as_array().expect("entries");
        let subs: Vec<(&str, Option<&str>)> = entries
            .iter()
            .filter(|e| e["manager"] == "kube-controller-manager")
            .map(|e| {
                (
                    e["time"].as_str().unwrap_or_default(),
                    e["subresource"].as_str(),
                )
            })
            .collect();
        assert_eq!(subs, vec![(T1, Some("status")), (T2, None)], "{entries:?}");
    }

    #[test]
    fn a_conflict_names_the_subresource_the_other_manager_wrote_through() {
        let apply_replicas = |o: &Value, n: i64, manager: &str, force: bool| {
            apply(
                "Deployment",
                AV,
                Some(o),
                &deploy(n, json!({})),
                manager,
                force,
                T2,
            )
        };
        let mut o = deploy(1, json!({}));
        update("Deployment", AV, None, &mut o, "creator", T0);
        let scale = Writer {
            manager: "kubectl",
            subresource: "scale",
            resets_status: true,
        };
        let mut scaled = o.clone();
        scaled["spec"]["replicas"] = json!(3);
        track_update("Deployment", AV, Some(&o), &mut scaled, &scale, T1);
        let err = apply_replicas(&scaled, 2, "deployer", false).expect_err("conflict");
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"
        );
        // an applier is named without a version
        let forced = apply_replicas(&scaled, 2, "deployer", true).expect("forced");
        let err = apply_replicas(&forced, 7, "other", false).expect_err("conflict");
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"deployer\": .spec.replicas"
        );
    }
}
