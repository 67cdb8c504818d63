//! OpenAPI v2 and v3 documents generated from the k8s-openapi types (their
//! schemars JSON schemas), and strict field validation against those schemas.
//!
//! What clients read: kubectl explain fetches `/openapi/v3`, then the document
//! of one group-version, and finds the schema whose
//! `x-kubernetes-group-version-kind` names the kind. kubectl apply/create decide
//! whether the server validates fields by looking, in the same document, for the
//! operation with `x-kubernetes-action: patch` and the kind's GVK and checking
//! that it lists a `fieldValidation` query parameter. We serve JSON only; a
//! client asking for the protobuf form gets JSON, which client-go accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;
use k8s_openapi::api;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{json, Map, Value};

use crate::registry::{Resource, RESOURCES};

const REF_V3: &str = "#/components/schemas/";

/// The schema name (k8s-openapi's) of each served kind.
fn root_schemas(
    g: &mut SchemaGenerator,
) -> BTreeMap<(&'static str, &'static str, &'static str), String> {
    macro_rules! roots {
        ($($group:literal $version:literal $kind:literal => $t:ty),* $(,)?) => {{
            let mut m = BTreeMap::new();
            $(
                let s = g.subschema_for::<$t>();
                let name = s.get("$ref").and_then(Value::as_str).map(|r| r.trim_start_matches(REF_V3).to_string()).unwrap_or_default();
                m.insert(($group, $version, $kind), name);
            )*
            m
        }};
    }
    roots! {
        "" "v1" "Namespace" => api::core::v1::Namespace,
        "" "v1" "Pod" => api::core::v1::Pod,
        "" "v1" "Service" => api::core::v1::Service,
        "" "v1" "Endpoints" => api::core::v1::Endpoints,
        "" "v1" "ConfigMap" => api::core::v1::ConfigMap,
        "" "v1" "Secret" => api::core::v1::Secret,
        "" "v1" "ServiceAccount" => api::core::v1::ServiceAccount,
        "" "v1" "Node" => api::core::v1::Node,
        "" "v1" "Event" => api::core::v1::Event,
        "" "v1" "PersistentVolume" => api::core::v1::PersistentVolume,
        "" "v1" "PersistentVolumeClaim" => api::core::v1::PersistentVolumeClaim,
        "" "v1" "Binding" => api::core::v1::Binding,
        "apps" "v1" "Deployment" => api::apps::v1::Deployment,
        "apps" "v1" "ReplicaSet" => api::apps::v1::ReplicaSet,
        "apps" "v1" "StatefulSet" => api::apps::v1::StatefulSet,
        "apps" "v1" "DaemonSet" => api::apps::v1::DaemonSet,
        "batch" "v1" "Job" => api::batch::v1::Job,
        "batch" "v1" "CronJob" => api::batch::v1::CronJob,
        "coordination.k8s.io" "v1" "Lease" => api::coordination::v1::Lease,
        "discovery.k8s.io" "v1" "EndpointSlice" => api::discovery::v1::EndpointSlice,
        "events.k8s.io" "v1" "Event" => api::events::v1::Event,
        "autoscaling" "v1" "Scale" => api::autoscaling::v1::Scale,
        "meta.k8s.io" "v1" "Status" => k8s_openapi::apimachinery::pkg::apis::meta::v1::Status,
        "meta.k8s.io" "v1" "DeleteOptions" => k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions,
    }
}

pub struct OpenApi {
    v2: Bytes,
    v3_index: Bytes,
    v3_docs: BTreeMap<String, Bytes>,
    /// every schema by name, for strict field validation
    schemas: Map<String, Value>,
    /// (group, version, kind) -> schema name
    kinds: BTreeMap<(String, String, String), String>,
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn hash_hex(b: &[u8]) -> String {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    format!("{:016X}", h.finish())
}

/// Names of every schema reachable from `roots`.
fn closure(
    schemas: &Map<String, Value>,
    roots: impl IntoIterator<Item = String>,
) -> BTreeSet<String> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r.trim_start_matches(REF_V3).to_string());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut seen = BTreeSet::new();
    let mut stack: Vec<String> = roots.into_iter().collect();
    while let Some(n) = stack.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        if let Some(s) = schemas.get(&n) {
            refs(s, &mut stack);
        }
    }
    seen
}

fn param(name: &str, location: &str, v3: bool) -> Value {
    if v3 {
        json!({"name": name, "in": location, "required": location == "path", "schema": {"type": "string", "uniqueItems": true}})
    } else {
        json!({"name": name, "in": location, "required": location == "path", "type": "string", "uniqueItems": true})
    }
}

/// Paths and operations of one resource, for a v3 (`v3 == true`) or v2 document.
fn resource_paths(r: &Resource, schema: &str, v3: bool) -> Vec<(String, Value)> {
    let prefix = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let scope = if r.namespaced {
        "/namespaces/{namespace}"
    } else {
        ""
    };
    let collection = format!("{prefix}{scope}/{}", r.plural);
    let item = format!("{collection}/{{name}}");
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let reference = if v3 {
        format!("{REF_V3}{schema}")
    } else {
        format!("#/definitions/{schema}")
    };
    let response = |code: &str| -> Value {
        if v3 {
            json!({code: {"description": "OK", "content": {"application/json": {"schema": {"$ref": reference}}}}})
        } else {
            json!({code: {"description": "OK", "schema": {"$ref": reference}}})
        }
    };
    let op = |action: &str, id: String, extra: &[&str], code: &str| -> Value {
        let mut params: Vec<Value> = extra.iter().map(|p| param(p, "query", v3)).collect();
        if matches!(action, "post" | "put" | "patch") {
            for p in ["dryRun", "fieldManager", "fieldValidation"] {
                params.push(param(p, "query", v3));
            }
        }
        if action == "patch" {
            params.push(param("force", "query", v3));
        }
        json!({
            "operationId": id,
            "parameters": params,
            "responses": response(code),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        })
    };
    let mut common = vec![param("pretty", "query", v3)];
    if r.namespaced {
        common.push(param("namespace", "path", v3));
    }
    let mut item_common = common.clone();
    item_common.push(param("name", "path", v3));
    let id = |verb: &str| {
        format!(
            "{verb}{}{}",
            if r.namespaced { "Namespaced" } else { "" },
            r.kind
        )
    };
    let list_params = [
        "labelSelector",
        "fieldSelector",
        "limit",
        "continue",
        "resourceVersion",
        "resourceVersionMatch",
        "watch",
        "allowWatchBookmarks",
        "sendInitialEvents",
        "timeoutSeconds",
    ];
    vec![
        (
            collection,
            json!({
                "get": op("list", id("list"), &list_params, "200"),
                "post": op("post", id("create"), &[], "201"),
                "delete": op("deletecollection", id("deleteCollection"), &list_params, "200"),
                "parameters": common,
            }),
        ),
        (
            item,
            json!({
                "get": op("get", id("read"), &[], "200"),
                "put": op("put", id("replace"), &[], "200"),
                "patch": op("patch", id("patch"), &[], "200"),
                "delete": op("delete", id("delete"), &["gracePeriodSeconds", "propagationPolicy"], "200"),
                "parameters": item_common,
            }),
        ),
    ]
}

fn rewrite_refs(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(rest) = r.strip_prefix(from) {
                    *r = format!("{to}{rest}");
                }
            }
            m.values_mut().for_each(|x| rewrite_refs(x, from, to));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_refs(x, from, to)),
        _ => {}
    }
}

impl OpenApi {
    pub fn build() -> OpenApi {
        let mut g = SchemaSettings::openapi3().into_generator();
        let roots = root_schemas(&mut g);
        let mut schemas = g.take_definitions(true);
        let mut kinds = BTreeMap::new();
        for ((group, version, kind), name) in &roots {
            kinds.insert(
                (group.to_string(), version.to_string(), kind.to_string()),
                name.clone(),
            );
            if let Some(s) = schemas.get_mut(name).and_then(Value::as_object_mut) {
                let gvks = s
                    .entry("x-kubernetes-group-version-kind")
                    .or_insert_with(|| json!([]));
                if let Some(a) = gvks.as_array_mut() {
                    a.push(json!({"group": group, "version": version, "kind": kind}));
                }
            }
        }
        let info = json!({"title": "Kubernetes", "version": crate::GIT_VERSION});
        // one v3 document per served group-version
        let mut v3_docs = BTreeMap::new();
        let mut index = Map::new();
        let mut gvs: Vec<(&str, &str)> = RESOURCES.iter().map(|r| (r.group, r.version)).collect();
        gvs.dedup();
        gvs.sort();
        gvs.dedup();
        let mut v2_paths = Map::new();
        for (group, version) in gvs {
            let mut paths = Map::new();
            let mut wanted: Vec<String> = Vec::new();
            for r in RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == version)
            {
                let Some(name) = kinds.get(&(
                    r.group.to_string(),
                    r.version.to_string(),
                    r.kind.to_string(),
                )) else {
                    continue;
                };
                wanted.push(name.clone());
                for (p, item) in resource_paths(r, name, true) {
                    paths.insert(p, item);
                }
                for (p, item) in resource_paths(r, name, false) {
                    v2_paths.insert(p, item);
                }
            }
            for (k, n) in &kinds {
                if k.0 == "meta.k8s.io" || k.0 == "autoscaling" {
                    wanted.push(n.clone());
                }
            }
            let names = closure(&schemas, wanted);
            let comps: Map<String, Value> = names
                .iter()
                .filter_map(|n| schemas.get(n).map(|s| (n.clone(), s.clone())))
                .collect();
            let doc = json!({"openapi": "3.0.0", "info": info, "paths": paths, "components": {"schemas": comps}});
            let bytes = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
            let path = gv_path(group, version);
            index.insert(path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", hash_hex(&bytes))}));
            v3_docs.insert(path, bytes);
        }
        let mut definitions = Value::Object(schemas.clone());
        rewrite_refs(&mut definitions, REF_V3, "#/definitions/");
        let mut v2_paths = Value::Object(v2_paths);
        rewrite_refs(&mut v2_paths, REF_V3, "#/definitions/");
        let v2 =
            json!({"swagger": "2.0", "info": info, "paths": v2_paths, "definitions": definitions});
        OpenApi {
            v2: Bytes::from(serde_json::to_vec(&v2).unwrap_or_default()),
            v3_index: Bytes::from(serde_json::to_vec(&json!({"paths": index})).unwrap_or_default()),
            v3_docs,
            schemas,
            kinds,
        }
    }

    pub fn v2(&self) -> Bytes {
        self.v2.clone()
    }

    pub fn v3_index(&self) -> Bytes {
        self.v3_index.clone()
    }

    pub fn v3_document(&self, gv_path: &str) -> Option<Bytes> {
        self.v3_docs.get(gv_path.trim_matches('/')).cloned()
    }

    /// The property names a schema declares (empty for unknown schemas).
    pub fn property_names(&self, schema: &str) -> Vec<String> {
        self.schemas
            .get(schema)
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The schema name of a kind, from its apiVersion ("v1", "apps/v1") and kind.
    pub fn schema_of(&self, api_version: &str, kind: &str) -> Option<String> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.kinds
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
            .cloned()
    }

    /// Fields of `obj` its kind's schema does not declare, as ".spec.foo" paths.
    pub fn unknown_fields(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        obj: &Value,
    ) -> Vec<String> {
        let Some(name) =
            self.kinds
                .get(&(group.to_string(), version.to_string(), kind.to_string()))
        else {
            return Vec::new();
        };
        let Some(schema) = self.schemas.get(name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        self.walk(schema, obj, String::new(), &mut out, 0);
        out
    }

    /// Follow `$ref` and `allOf` to the schema that describes a value.
    fn resolve<'a>(&'a self, s: &'a Value, depth: usize) -> Option<&'a Value> {
        if depth > 64 {
            return None;
        }
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            return self.resolve(self.schemas.get(r.trim_start_matches(REF_V3))?, depth + 1);
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            if s.get("properties").is_none() && all.len() == 1 {
                return self.resolve(&all[0], depth + 1);
            }
        }
        Some(s)
    }

    fn walk(&self, schema: &Value, v: &Value, path: String, out: &mut Vec<String>, depth: usize) {
        let Some(s) = self.resolve(schema, depth) else {
            return;
        };
        if s.get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return;
        }
        match v {
            Value::Object(m) => {
                if let Some(props) = s.get("properties").and_then(Value::as_object) {
                    for (k, child) in m {
                        match props.get(k) {
                            Some(cs) => self.walk(cs, child, format!("{path}.{k}"), out, depth + 1),
                            None if depth == 0 && matches!(k.as_str(), "apiVersion" | "kind") => {}
                            None => out.push(format!("{path}.{k}")),
                        }
                    }
                } else if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                    for (k, child) in m {
                        self.walk(ap, child, format!("{path}.{k}"), out, depth + 1);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(is) = s.get("items") {
                    for (i, child) in items.iter().enumerate() {
                        self.walk(is, child, format!("{path}[{i}]"), out, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_kinds_and_field_validation() {
        let o = OpenApi::build();
        let index: Value = serde_json::from_slice(&o.v3_index()).expect("index");
        assert!(index["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .is_some_and(|u| u.starts_with("/openapi/v3/api/v1?hash=")));
        assert!(index["paths"]["apis/apps/v1"].is_object());
        let doc: Value = serde_json::from_slice(&o.v3_document("apis/apps/v1").expect("apps doc"))
            .expect("json");
        let dep = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            dep["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-action"], "patch");
        assert!(patch["parameters"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x["name"] == "fieldValidation")));
        // every reference resolves inside the document
        let text = serde_json::to_string(&doc).expect("text");
        for r in text.split("\"$ref\":\"").skip(1) {
            let name = r
                .split('"')
                .next()
                .unwrap_or_default()
                .trim_start_matches(REF_V3);
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling ref {name}"
            );
        }
        let v2: Value = serde_json::from_slice(&o.v2()).expect("v2");
        assert!(v2["definitions"]["io.k8s.api.core.v1.Pod"].is_object());
        assert!(!String::from_utf8_lossy(&o.v2()).contains(REF_V3));
    }

    #[test]
    fn unknown_fields_are_found() {
        let o = OpenApi::build();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"anything": "goes"}},
            "spec": {"foo": 1, "containers": [{"name": "c", "image": "i", "bogus": true, "resources": {"limits": {"cpu": "1"}}}]}});
        assert_eq!(
            o.unknown_fields("", "v1", "Pod", &pod),
            vec![".spec.foo", ".spec.containers[0].bogus"]
        );
        let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "annotations": {"a": "b"}}, "data": {"k": "v"}});
        assert!(o.unknown_fields("", "v1", "ConfigMap", &ok).is_empty());
        let dep = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "nope": 1}]}]}}}});
        assert_eq!(
            o.unknown_fields("apps", "v1", "Deployment", &dep),
            vec![".spec.template.spec.containers[0].ports[0].nope"]
        );
        assert!(o.unknown_fields("x", "v1", "Unknown", &dep).is_empty());
    }
}
