//! OpenAPI v2 and v3 documents generated from the k8s-openapi types, and strict field validation against them
//!
//! The schemas are the schemars (1.x) JSON schemas that k8s-openapi implements
//! for every type, generated once with OpenAPI 3.0 settings (references
//! `#/components/schemas/<name>`, a `$ref` with a description beside it
//! wrapped in a one-element `allOf`, as upstream writes them). The v2 document
//! carries the same schemas under `#/definitions/<name>`. On top of them we add
//! what upstream's generator adds from Go struct tags and registration:
//! `x-kubernetes-group-version-kind` on every kind (lists and meta kinds
//! included), `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key`
//! on the fields that have them, and the `<Kind>List` schemas (k8s-openapi has
//! a generic `List<T>` with no schema of its own).
//!
//! What the clients read, and how they ask for it (kubectl 1.33 / client-go,
//! checked against a real kubectl 1.33.1):
//! - `GET /openapi/v3` (the index) is sent with `Accept: application/json, */*`
//!   and decoded as `{"paths": {"<api/v1|apis/g/v>": {"serverRelativeURL":
//!   "/openapi/v3/...?hash=..."}}}`. A URL that starts with `/openapi/v3`
//!   keeps the client's own path prefix; the hash is only a cache key.
//! - A group-version document is fetched from that URL with
//!   `Accept: application/json` (openapi3.Root and `kubectl explain` both ask
//!   for JSON; a protobuf form of v3 exists but kubectl never asks for it).
//! - `kubectl explain` takes the GVK of an operation (get/post/put/patch/delete,
//!   `x-kubernetes-group-version-kind` as one object) on
//!   `<prefix>/<v>[/namespaces/{namespace}]/<plural>[/{name}]`, then the
//!   component schema whose GVK list contains exactly that
//!   `{group, version, kind}`; it follows `$ref`, `allOf`, `items` and
//!   `additionalProperties`.
//! - `kubectl apply/create/replace` (server-side validation): in the
//!   group-version document, the first PATCH operation whose GVK object is the
//!   kind (Go map order: any of them) must list a parameter named
//!   `fieldValidation`, else kubectl says the server does not support it. So
//!   every PATCH operation (status and scale too) carries it.
//! - Client-side `kubectl apply` of an existing object: if that PATCH
//!   operation's requestBody lists `application/strategic-merge-patch+json`,
//!   kubectl computes the strategic merge patch from our v3 schema, reading
//!   `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` on the
//!   fields; hence [`PATCH_META`], upstream's struct tags for our kinds.
//! - `GET /openapi/v2` is sent by client-go's `OpenAPISchema()` with
//!   `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`
//!   only, and the body is proto-unmarshalled. We serve JSON only, so that call
//!   fails against us ("proto: cannot parse invalid wire-format data").
//!   kubectl 1.33 needs it only as a fallback when the v3 checks above fail,
//!   and for `kubectl explain --output=plaintext-openapiv2`. Tools that ask
//!   for `Accept: application/json` get the Swagger 2.0 document.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;
use k8s_openapi::api::{apps, autoscaling, batch, coordination, core, discovery, events, policy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::registry::{Resource, RESOURCES};

const REF_V3: &str = "#/components/schemas/";
const REF_V2: &str = "#/definitions/";
/// The Kubernetes version the k8s-openapi feature (`v1_33`) describes.
const INFO_VERSION: &str = "v1.33.0";
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";

/// (group, version, kind)
type Gvk = (String, String, String);

fn gvk(group: &str, version: &str, kind: &str) -> Gvk {
    (group.to_string(), version.to_string(), kind.to_string())
}

/// The kinds whose schemas carry `x-kubernetes-group-version-kind`, as
/// (gvk, schema name), and the list schemas to synthesize (list, item).
struct Registered {
    kinds: Vec<(Gvk, String)>,
    lists: Vec<(String, String)>,
}

impl Registered {
    /// Register `T` (and, with `list`, `<T>List`) under one group-version.
    fn add<T: JsonSchema>(
        &mut self,
        g: &mut SchemaGenerator,
        group: &str,
        version: &str,
        list: bool,
    ) {
        g.subschema_for::<T>();
        let name = T::schema_name().to_string();
        let kind = name.rsplit('.').next().unwrap_or_default().to_string();
        if list {
            let list_name = format!("{name}List");
            let list_kind = format!("{kind}List");
            self.kinds
                .push((gvk(group, version, &list_kind), list_name.clone()));
            self.lists.push((list_name, name.clone()));
        }
        self.kinds.push((gvk(group, version, &kind), name));
    }
}

fn register(g: &mut SchemaGenerator) -> Registered {
    let mut r = Registered {
        kinds: Vec::new(),
        lists: Vec::new(),
    };
    use core::v1 as c;
    r.add::<c::Namespace>(g, "", "v1", true);
    r.add::<c::Pod>(g, "", "v1", true);
    r.add::<c::Service>(g, "", "v1", true);
    r.add::<c::Endpoints>(g, "", "v1", true);
    r.add::<c::ConfigMap>(g, "", "v1", true);
    r.add::<c::Secret>(g, "", "v1", true);
    r.add::<c::ServiceAccount>(g, "", "v1", true);
    r.add::<c::Node>(g, "", "v1", true);
    r.add::<c::Event>(g, "", "v1", true);
    r.add::<c::PersistentVolume>(g, "", "v1", true);
    r.add::<c::PersistentVolumeClaim>(g, "", "v1", true);
    r.add::<c::ResourceQuota>(g, "", "v1", true);
    r.add::<c::LimitRange>(g, "", "v1", true);
    r.add::<c::Binding>(g, "", "v1", false);
    r.add::<apps::v1::Deployment>(g, "apps", "v1", true);
    r.add::<apps::v1::ReplicaSet>(g, "apps", "v1", true);
    r.add::<apps::v1::StatefulSet>(g, "apps", "v1", true);
    r.add::<apps::v1::DaemonSet>(g, "apps", "v1", true);
    r.add::<batch::v1::Job>(g, "batch", "v1", true);
    r.add::<batch::v1::CronJob>(g, "batch", "v1", true);
    r.add::<coordination::v1::Lease>(g, "coordination.k8s.io", "v1", true);
    r.add::<discovery::v1::EndpointSlice>(g, "discovery.k8s.io", "v1", true);
    r.add::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(
        g,
        "certificates.k8s.io",
        "v1",
        true,
    );
    r.add::<k8s_openapi::api::scheduling::v1::PriorityClass>(g, "scheduling.k8s.io", "v1", true);
    r.add::<k8s_openapi::api::storage::v1::StorageClass>(g, "storage.k8s.io", "v1", true);
    {
        use k8s_openapi::api::rbac::v1 as rbac;
        let group = "rbac.authorization.k8s.io";
        r.add::<rbac::Role>(g, group, "v1", true);
        r.add::<rbac::RoleBinding>(g, group, "v1", true);
        r.add::<rbac::ClusterRole>(g, group, "v1", true);
        r.add::<rbac::ClusterRoleBinding>(g, group, "v1", true);
    }
    {
        use k8s_openapi::api::admissionregistration::v1 as ar;
        let group = "admissionregistration.k8s.io";
        r.add::<ar::MutatingWebhookConfiguration>(g, group, "v1", true);
        r.add::<ar::ValidatingWebhookConfiguration>(g, group, "v1", true);
    }
    r.add::<events::v1::Event>(g, "events.k8s.io", "v1", true);
    r.add::<autoscaling::v1::Scale>(g, "autoscaling", "v1", false);
    r.add::<policy::v1::Eviction>(g, "policy", "v1", false);
    r.add::<meta::Status>(g, "", "v1", false);
    r.add::<meta::APIVersions>(g, "", "v1", false);
    r.add::<meta::APIGroupList>(g, "", "v1", false);
    r.add::<meta::APIGroup>(g, "", "v1", false);
    r.add::<meta::APIResourceList>(g, "", "v1", false);
    g.subschema_for::<meta::Patch>();
    g.subschema_for::<k8s_openapi::apimachinery::pkg::version::Info>();
    // options and watch events belong to every group-version, as upstream registers them
    let mut gvs: Vec<(&str, &str)> = vec![("", "v1"), ("meta.k8s.io", "v1")];
    for res in RESOURCES {
        if !gvs.contains(&(res.group, res.version)) {
            gvs.push((res.group, res.version));
        }
    }
    for (group, version) in gvs {
        r.add::<meta::DeleteOptions>(g, group, version, false);
        r.add::<meta::WatchEvent<c::Pod>>(g, group, version, false);
    }
    r
}

/// Patch metadata from upstream's struct tags, for the types our kinds use, one
/// field a line: `<schema> <field> <x-kubernetes-patch-strategy> [<merge key>]`
/// (schema names without their `io.k8s.api.` / `io.k8s.apimachinery.pkg.apis.` prefix).
const PATCH_META: &str = "
meta.v1.ObjectMeta finalizers merge
meta.v1.ObjectMeta ownerReferences merge uid
core.v1.PodSpec volumes merge,retainKeys name
core.v1.PodSpec initContainers merge name
core.v1.PodSpec containers merge name
core.v1.PodSpec ephemeralContainers merge name
core.v1.PodSpec imagePullSecrets merge name
core.v1.PodSpec hostAliases merge ip
core.v1.PodSpec topologySpreadConstraints merge topologyKey
core.v1.PodSpec schedulingGates merge name
core.v1.PodSpec resourceClaims merge,retainKeys name
core.v1.Container ports merge containerPort
core.v1.Container env merge name
core.v1.Container volumeMounts merge mountPath
core.v1.Container volumeDevices merge devicePath
core.v1.EphemeralContainer ports merge containerPort
core.v1.EphemeralContainer env merge name
core.v1.EphemeralContainer volumeMounts merge mountPath
core.v1.EphemeralContainer volumeDevices merge devicePath
core.v1.ContainerStatus volumeMounts merge mountPath
core.v1.ContainerStatus allocatedResourcesStatus merge name
core.v1.PodStatus conditions merge type
core.v1.PodStatus hostIPs merge ip
core.v1.PodStatus podIPs merge ip
core.v1.PodStatus resourceClaimStatuses merge,retainKeys name
core.v1.ServiceSpec ports merge port
core.v1.ServiceStatus conditions merge type
core.v1.ServiceAccount secrets merge name
core.v1.NodeSpec podCIDRs merge
core.v1.NodeStatus conditions merge type
core.v1.NodeStatus addresses merge type
core.v1.NamespaceStatus conditions merge type
core.v1.PersistentVolumeClaimStatus conditions merge type
apps.v1.DeploymentSpec strategy retainKeys
apps.v1.DeploymentStatus conditions merge type
apps.v1.ReplicaSetStatus conditions merge type
apps.v1.StatefulSetStatus conditions merge type
apps.v1.DaemonSetStatus conditions merge type
batch.v1.JobStatus conditions merge type
";

/// The entries of [`PATCH_META`]: (schema, field, strategy, merge key).
fn patch_meta() -> impl Iterator<Item = (String, &'static str, &'static str, Option<&'static str>)>
{
    PATCH_META.lines().filter_map(|l| {
        let mut w = l.split_whitespace();
        let (schema, field, strategy) = (w.next()?, w.next()?, w.next()?);
        let full = match schema.strip_prefix("meta.") {
            Some(rest) => format!("io.k8s.apimachinery.pkg.apis.meta.{rest}"),
            None => format!("io.k8s.api.{schema}"),
        };
        Some((full, field, strategy, w.next()))
    })
}

/// Every schema by name, finished: lists synthesized, patch metadata and GVKs added.
fn schemas() -> (Map<String, Value>, BTreeMap<Gvk, String>) {
    let mut g = SchemaSettings::openapi3().into_generator();
    let reg = register(&mut g);
    let mut defs = g.take_definitions(true);
    for (list, item) in &reg.lists {
        let kind = list.rsplit('.').next().unwrap_or_default();
        let item_kind = item.rsplit('.').next().unwrap_or_default();
        defs.insert(
            list.clone(),
            json!({
                "description": format!("{kind} is a list of {item_kind} objects."),
                "type": "object",
                "properties": {
                    "apiVersion": {"description": "The versioned schema of this representation of an object.", "type": "string"},
                    "items": {"description": format!("The {item_kind} objects."), "type": "array", "items": {"$ref": format!("{REF_V3}{item}")}},
                    "kind": {"description": "The REST resource this object represents.", "type": "string"},
                    "metadata": {"allOf": [{"$ref": format!("{REF_V3}{META}ListMeta")}], "description": "Standard list metadata."},
                },
                "required": ["items"],
            }),
        );
    }
    for (schema, field, strategy, key) in patch_meta() {
        let Some(prop) = defs
            .get_mut(&schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        prop.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        if let Some(key) = key {
            prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
    }
    let mut kinds = BTreeMap::new();
    for ((group, version, kind), name) in &reg.kinds {
        kinds.insert(gvk(group, version, kind), name.clone());
        let Some(s) = defs.get_mut(name).and_then(Value::as_object_mut) else {
            continue;
        };
        // k8s-openapi marks metadata required (it is not an Option in Rust); upstream does not
        if let Some(req) = s.get_mut("required").and_then(Value::as_array_mut) {
            req.retain(|f| f != "metadata");
            if req.is_empty() {
                s.remove("required");
            }
        }
        let list = s
            .entry("x-kubernetes-group-version-kind")
            .or_insert_with(|| json!([]));
        if let Some(a) = list.as_array_mut() {
            let entry = json!({"group": group, "kind": kind, "version": version});
            if !a.contains(&entry) {
                a.push(entry);
            }
        }
    }
    (defs, kinds)
}

pub struct OpenApi {
    v2: Bytes,
    v3_index: Bytes,
    v3_docs: BTreeMap<String, Bytes>,
    /// every schema by name, for strict field validation
    schemas: Map<String, Value>,
    /// (group, version, kind) -> schema name
    kinds: BTreeMap<Gvk, String>,
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn api_prefix(group: &str, version: &str) -> String {
    format!("/{}", gv_path(group, version))
}

/// A content hash for the index's `hash=` (clients cache documents by URL).
fn hash_hex(b: &[u8]) -> String {
    let mut out = String::new();
    for seed in [0x6b75_6265u64, 0x6f70_656e] {
        let mut h = DefaultHasher::new();
        seed.hash(&mut h);
        b.hash(&mut h);
        out.push_str(&format!("{:016X}", h.finish()));
    }
    out
}

/// The names referenced (`$ref`) anywhere inside `v`.
fn refs_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                out.push(r.trim_start_matches(REF_V3).to_string());
            }
            m.values().for_each(|x| refs_in(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs_in(x, out)),
        _ => {}
    }
}

/// Names of every schema reachable from `roots`.
fn closure(schemas: &Map<String, Value>, roots: Vec<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = roots;
    while let Some(n) = stack.pop() {
        if !schemas.contains_key(&n) || !seen.insert(n.clone()) {
            continue;
        }
        if let Some(s) = schemas.get(&n) {
            refs_in(s, &mut stack);
        }
    }
    seen
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

// ---- paths and operations -------------------------------------------------

/// `<name> <in> <type> <description>` of every parameter we document.
const PARAMS: &str = "
name path string name of the object
namespace path string the namespace the objects are in
pretty query string when 'true', the output is indented
allowWatchBookmarks query boolean ask for BOOKMARK watch events; servers may ignore it
continue query string the continue token of the previous page of a paginated list
fieldSelector query string restrict the objects by their fields (e.g. metadata.name=x); defaults to everything
labelSelector query string restrict the objects by their labels; defaults to everything
limit query integer the most items one page of a list may hold; the rest is reached with continue
resourceVersion query string which version of the data a list or get may be served from (see the API concepts for its rules)
resourceVersionMatch query string how resourceVersion applies to a list: Exact or NotOlderThan
sendInitialEvents query boolean with watch=true, start with synthetic ADDED events for the current state, ended by a bookmark
timeoutSeconds query integer how long a list or watch call may last
watch query boolean watch for changes to the described objects and stream them as add, update and remove notifications
dryRun query string when All, the request is fully processed but nothing is persisted
fieldManager query string the name of the actor making the change, recorded in managedFields
fieldValidation query string how to treat fields the schema does not know, or duplicated fields: Ignore, Warn or Strict
force query boolean for apply patches: take over the fields other managers own
gracePeriodSeconds query integer seconds before the object is deleted; zero deletes at once
ignoreStoreReadErrorWithClusterBreakingPotential query boolean delete an object that cannot be read from storage (unsafe)
orphanDependents query boolean deprecated: use propagationPolicy
propagationPolicy query string whether and how dependents are garbage collected: Orphan, Background or Foreground
";

const LIST_PARAMS: &[&str] = &[
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];
const WRITE_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
const PATCH_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];
const DELETE_PARAMS: &[&str] = &[
    "dryRun",
    "gracePeriodSeconds",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "orphanDependents",
    "propagationPolicy",
];
const DELETECOLLECTION_PARAMS: &[&str] = &[
    "continue",
    "dryRun",
    "fieldSelector",
    "gracePeriodSeconds",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "labelSelector",
    "limit",
    "orphanDependents",
    "propagationPolicy",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
];
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];
const PRODUCES: &[&str] = &["application/json", "application/yaml"];
const PRODUCES_WATCH: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json;stream=watch",
];

#[derive(Clone, Copy, PartialEq)]
enum Body {
    None,
    /// the object itself (create, replace)
    Object,
    Patch,
    DeleteOptions,
}

/// One kind of operation: its method, action, operation-id verb, wording,
/// query parameters, body and responses.
#[derive(Clone, Copy)]
struct Verb {
    method: &'static str,
    action: &'static str,
    id: &'static str,
    phrase: &'static str,
    query: &'static [&'static str],
    body: Body,
    codes: &'static [&'static str],
    produces: &'static [&'static str],
}

const LIST: Verb = Verb {
    method: "get",
    action: "list",
    id: "list",
    phrase: "list or watch",
    query: LIST_PARAMS,
    body: Body::None,
    codes: &["200"],
    produces: PRODUCES_WATCH,
};
const CREATE: Verb = Verb {
    method: "post",
    action: "post",
    id: "create",
    phrase: "create",
    query: WRITE_PARAMS,
    body: Body::Object,
    codes: &["200", "201", "202"],
    produces: PRODUCES,
};
const DELETECOLLECTION: Verb = Verb {
    method: "delete",
    action: "deletecollection",
    id: "delete",
    phrase: "delete",
    query: DELETECOLLECTION_PARAMS,
    body: Body::DeleteOptions,
    codes: &["200"],
    produces: PRODUCES,
};
const READ: Verb = Verb {
    method: "get",
    action: "get",
    id: "read",
    phrase: "read",
    query: &[],
    body: Body::None,
    codes: &["200"],
    produces: PRODUCES,
};
const REPLACE: Verb = Verb {
    method: "put",
    action: "put",
    id: "replace",
    phrase: "replace",
    query: WRITE_PARAMS,
    body: Body::Object,
    codes: &["200", "201"],
    produces: PRODUCES,
};
const PATCH: Verb = Verb {
    method: "patch",
    action: "patch",
    id: "patch",
    phrase: "partially update",
    query: PATCH_PARAMS,
    body: Body::Patch,
    codes: &["200", "201"],
    produces: PRODUCES,
};
const DELETE: Verb = Verb {
    method: "delete",
    action: "delete",
    id: "delete",
    phrase: "delete",
    query: DELETE_PARAMS,
    body: Body::DeleteOptions,
    codes: &["200", "202"],
    produces: PRODUCES,
};
const WATCH: Verb = Verb {
    method: "get",
    action: "watch",
    id: "watch",
    phrase: "watch changes to",
    query: &[],
    body: Body::None,
    codes: &["200"],
    produces: PRODUCES_WATCH,
};
const WATCHLIST: Verb = Verb {
    action: "watchlist",
    ..WATCH
};

struct Op {
    verb: Verb,
    id: String,
    description: String,
    /// schema of the body (create, replace) and of the responses
    schema: String,
    gvk: Gvk,
}

impl Verb {
    fn op(self, id: String, subject: &str, schema: &str, gvk: &Gvk) -> Op {
        Op {
            verb: self,
            id,
            description: format!("{} {subject}", self.phrase),
            schema: schema.to_string(),
            gvk: gvk.clone(),
        }
    }
}

struct PathItem {
    path: String,
    params: Vec<&'static str>,
    ops: Vec<Op>,
}

fn param(name: &str, v3: bool) -> Value {
    let found = PARAMS.lines().find_map(|l| {
        let mut w = l.splitn(4, ' ');
        (w.next()? == name).then_some(())?;
        Some((w.next()?, w.next()?, w.next()?))
    });
    let (location, ty, description) = found.unwrap_or(("query", "string", ""));
    let mut p = Map::new();
    p.insert("name".into(), json!(name));
    p.insert("in".into(), json!(location));
    p.insert("description".into(), json!(description));
    if location == "path" {
        p.insert("required".into(), json!(true));
    }
    if v3 {
        p.insert("schema".into(), json!({"type": ty}));
    } else {
        p.insert("type".into(), json!(ty));
    }
    Value::Object(p)
}

fn status_text(code: &str) -> &'static str {
    match code {
        "201" => "Created",
        "202" => "Accepted",
        _ => "OK",
    }
}

fn reference(name: &str, v3: bool) -> Value {
    json!({"$ref": format!("{}{name}", if v3 { REF_V3 } else { REF_V2 })})
}

/// Responses (and the 401 every operation may return) with one schema.
fn responses(codes: &[&str], produces: &[&str], schema: &str, v3: bool) -> Value {
    let mut out = Map::new();
    for code in codes {
        let r = if v3 {
            let content: Map<String, Value> = produces
                .iter()
                .map(|ct| (ct.to_string(), json!({"schema": reference(schema, true)})))
                .collect();
            json!({"description": status_text(code), "content": content})
        } else {
            json!({"description": status_text(code), "schema": reference(schema, false)})
        };
        out.insert(code.to_string(), r);
    }
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(out)
}

fn render_op(op: &Op, tag: &str, v3: bool) -> Value {
    let v = &op.verb;
    let body_schema = match v.body {
        Body::None => None,
        Body::Object => Some(op.schema.clone()),
        Body::Patch => Some(format!("{META}Patch")),
        Body::DeleteOptions => Some(format!("{META}DeleteOptions")),
    };
    let required = v.body != Body::DeleteOptions;
    let consumes: &[&str] = if v.body == Body::Patch {
        PATCH_TYPES
    } else {
        &["*/*"]
    };
    let mut parameters: Vec<Value> = v.query.iter().map(|p| param(p, v3)).collect();
    let mut o = Map::new();
    o.insert("tags".into(), json!([tag]));
    o.insert("description".into(), json!(op.description));
    o.insert("operationId".into(), json!(op.id));
    if let Some(b) = &body_schema {
        if v3 {
            let content: Map<String, Value> = consumes
                .iter()
                .map(|ct| (ct.to_string(), json!({"schema": reference(b, true)})))
                .collect();
            let mut rb = Map::new();
            rb.insert("content".into(), Value::Object(content));
            if required {
                rb.insert("required".into(), json!(true));
            }
            o.insert("requestBody".into(), Value::Object(rb));
        } else {
            let body = json!({"name": "body", "in": "body", "required": required, "schema": reference(b, false)});
            parameters.insert(0, body);
        }
    }
    if !v3 {
        o.insert("consumes".into(), json!(consumes));
        o.insert("produces".into(), json!(v.produces));
        o.insert("schemes".into(), json!(["https"]));
    }
    if !parameters.is_empty() {
        o.insert("parameters".into(), Value::Array(parameters));
    }
    o.insert(
        "responses".into(),
        responses(v.codes, v.produces, &op.schema, v3),
    );
    o.insert("x-kubernetes-action".into(), json!(v.action));
    let (g, ver, k) = &op.gvk;
    o.insert(
        "x-kubernetes-group-version-kind".into(),
        json!({"group": g, "kind": k, "version": ver}),
    );
    Value::Object(o)
}

fn render_path(p: &PathItem, tag: &str, v3: bool) -> Value {
    let mut m = Map::new();
    for op in &p.ops {
        m.insert(op.verb.method.to_string(), render_op(op, tag, v3));
    }
    if !p.params.is_empty() {
        let params: Vec<Value> = p.params.iter().map(|n| param(n, v3)).collect();
        m.insert("parameters".into(), Value::Array(params));
    }
    Value::Object(m)
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// "Core", "Apps", "Coordination", "RbacAuthorization": the group in operation ids.
fn group_word(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split('.')
        .map(upper_first)
        .collect()
}

/// "core", "apps", "coordination", "rbacAuthorization": the group in tags.
fn group_tag(group: &str) -> String {
    let w = group_word(group);
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The paths and operations of one resource.
fn resource_paths(r: &Resource, kinds: &BTreeMap<Gvk, String>) -> Vec<PathItem> {
    let own = gvk(r.group, r.version, r.kind);
    let Some(schema) = kinds.get(&own).cloned() else {
        return Vec::new();
    };
    let list_schema = kinds
        .get(&gvk(r.group, r.version, &format!("{}List", r.kind)))
        .cloned()
        .unwrap_or_else(|| schema.clone());
    let status = format!("{META}Status");
    let watch_event = format!("{META}WatchEvent");
    let prefix = api_prefix(r.group, r.version);
    let scope = if r.namespaced {
        "/namespaces/{namespace}"
    } else {
        ""
    };
    let ns_word = if r.namespaced { "Namespaced" } else { "" };
    let gv = format!("{}{}", group_word(r.group), upper_first(r.version));
    let kind = r.kind;
    let id = |v: &Verb, suffix: &str| format!("{}{gv}{ns_word}{kind}{suffix}", v.id);
    let named = format!("the named {kind}");
    // upstream answers a delete with the pod (graceful deletion), with a Status for the rest
    let deleted = if kind == "Pod" { &schema } else { &status };

    let mut scope_params = vec!["pretty"];
    if r.namespaced {
        scope_params.insert(0, "namespace");
    }
    let mut item_params = vec!["name"];
    item_params.extend(scope_params.iter().copied());
    let collection = format!("{prefix}{scope}/{}", r.plural);
    let item = format!("{collection}/{{name}}");
    let mut out = vec![
        PathItem {
            path: collection,
            params: scope_params.clone(),
            ops: vec![
                LIST.op(
                    id(&LIST, ""),
                    &format!("objects of kind {kind}"),
                    &list_schema,
                    &own,
                ),
                CREATE.op(id(&CREATE, ""), &format!("a {kind}"), &schema, &own),
                DELETECOLLECTION.op(
                    format!("delete{gv}Collection{ns_word}{kind}"),
                    &format!("a collection of {kind}"),
                    &status,
                    &own,
                ),
            ],
        },
        PathItem {
            path: item.clone(),
            params: item_params.clone(),
            ops: vec![
                READ.op(id(&READ, ""), &named, &schema, &own),
                REPLACE.op(id(&REPLACE, ""), &named, &schema, &own),
                PATCH.op(id(&PATCH, ""), &named, &schema, &own),
                DELETE.op(id(&DELETE, ""), &format!("a {kind}"), deleted, &own),
            ],
        },
    ];
    for sub in r.subresources {
        let word = upper_first(sub);
        let subject = format!("the {sub} of the named {kind}");
        let (verbs, g): (&[Verb], Gvk) = match *sub {
            "status" | "approval" => (&[READ, REPLACE, PATCH], own.clone()),
            "finalize" => (&[REPLACE], own.clone()),
            "scale" => (&[READ, REPLACE, PATCH], gvk("autoscaling", "v1", "Scale")),
            "binding" => (&[CREATE], gvk("", "v1", "Binding")),
            "eviction" => (&[CREATE], gvk("policy", "v1", "Eviction")),
            _ => continue,
        };
        let Some(s) = kinds.get(&g) else { continue };
        out.push(PathItem {
            path: format!("{item}/{sub}"),
            params: item_params.clone(),
            ops: verbs
                .iter()
                .map(|v| v.op(id(v, &word), &subject, s, &g))
                .collect(),
        });
    }
    let with_list = |params: &[&'static str]| {
        let mut p = LIST_PARAMS.to_vec();
        p.extend(params.iter().copied());
        p
    };
    let deprecated = "; deprecated: use the 'watch' parameter with a list operation";
    let watch_collection = format!("{prefix}/watch{scope}/{}", r.plural);
    out.push(PathItem {
        path: format!("{watch_collection}/{{name}}"),
        params: with_list(&item_params),
        ops: vec![WATCH.op(
            id(&WATCH, ""),
            &format!("one {kind}{deprecated} and a fieldSelector"),
            &watch_event,
            &own,
        )],
    });
    out.push(PathItem {
        path: watch_collection,
        params: with_list(&scope_params),
        ops: vec![WATCHLIST.op(
            id(&WATCHLIST, "List"),
            &format!("a list of {kind}{deprecated}"),
            &watch_event,
            &own,
        )],
    });
    if r.namespaced {
        let every = Verb { query: &[], ..LIST };
        out.push(PathItem {
            path: format!("{prefix}/{}", r.plural),
            params: with_list(&["pretty"]),
            ops: vec![every.op(
                format!("list{gv}{kind}ForAllNamespaces"),
                &format!("objects of kind {kind} in every namespace"),
                &list_schema,
                &own,
            )],
        });
        out.push(PathItem {
            path: format!("{prefix}/watch/{}", r.plural),
            params: with_list(&["pretty"]),
            ops: vec![WATCHLIST.op(
                format!("watch{gv}{kind}ListForAllNamespaces"),
                &format!("a list of {kind} in every namespace{deprecated}"),
                &watch_event,
                &own,
            )],
        });
    }
    out
}

/// A discovery GET (`/api/v1/`, `/apis/`, `/version/`...) as a path item.
fn discovery_path(id: &str, description: &str, schema: &str, tag: &str, v3: bool) -> Value {
    let mut op = Map::new();
    op.insert("tags".into(), json!([tag]));
    op.insert("description".into(), json!(description));
    op.insert("operationId".into(), json!(id));
    if !v3 {
        op.insert("consumes".into(), json!(PRODUCES));
        op.insert("produces".into(), json!(PRODUCES));
        op.insert("schemes".into(), json!(["https"]));
    }
    op.insert(
        "responses".into(),
        responses(&["200"], PRODUCES, schema, v3),
    );
    json!({ "get": op })
}

fn security_scheme() -> Value {
    json!({"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}})
}

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

impl OpenApi {
    /// Build every document once (called at startup; should take well under a second).
    pub fn build() -> OpenApi {
        let (schemas, kinds) = schemas();
        let info = json!({"title": "Kubernetes", "version": INFO_VERSION});
        let mut gvs: Vec<(&str, &str)> = Vec::new();
        for r in RESOURCES {
            if !gvs.contains(&(r.group, r.version)) {
                gvs.push((r.group, r.version));
            }
        }

        let mut v3_docs = BTreeMap::new();
        let mut index = Map::new();
        let mut v2_paths = Map::new();
        let api_versions = format!("{META}APIVersions");
        let group_list = format!("{META}APIGroupList");
        let resource_list = format!("{META}APIResourceList");
        let version_info = "io.k8s.apimachinery.pkg.version.Info";
        v2_paths.insert(
            "/api/".into(),
            discovery_path(
                "getCoreAPIVersions",
                "the available API versions",
                &api_versions,
                "core",
                false,
            ),
        );
        v2_paths.insert(
            "/apis/".into(),
            discovery_path(
                "getAPIVersions",
                "the available API groups",
                &group_list,
                "apis",
                false,
            ),
        );
        v2_paths.insert(
            "/version/".into(),
            discovery_path(
                "getCodeVersion",
                "the version of the server",
                version_info,
                "version",
                false,
            ),
        );
        for (group, version) in gvs {
            let tag = format!("{}_{version}", group_tag(group));
            let gv = format!("{}{}", group_word(group), upper_first(version));
            let discovery_id = format!("get{gv}APIResources");
            let discovery = format!("{}/", api_prefix(group, version));
            let what = "the resources of this group-version";
            let mut paths3 = Map::new();
            paths3.insert(
                discovery.clone(),
                discovery_path(&discovery_id, what, &resource_list, &tag, true),
            );
            v2_paths.insert(
                discovery,
                discovery_path(&discovery_id, what, &resource_list, &tag, false),
            );
            if !group.is_empty() {
                let id = format!("get{}APIGroup", group_word(group));
                let schema = format!("{META}APIGroup");
                let item = discovery_path(
                    &id,
                    "the versions of this group",
                    &schema,
                    &group_tag(group),
                    false,
                );
                v2_paths.insert(format!("/apis/{group}/"), item);
            }
            // the document holds the group-version's kinds and whatever its paths use
            let mut wanted: Vec<String> = kinds
                .iter()
                .filter(|((g, v, _), _)| g == group && v == version)
                .map(|(_, n)| n.clone())
                .collect();
            for r in RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == version)
            {
                for p in resource_paths(r, &kinds) {
                    v2_paths.insert(p.path.clone(), render_path(&p, &tag, false));
                    paths3.insert(p.path.clone(), render_path(&p, &tag, true));
                }
            }
            refs_in(&Value::Object(paths3.clone()), &mut wanted);
            let comps: Map<String, Value> = closure(&schemas, wanted)
                .into_iter()
                .filter_map(|n| schemas.get(&n).map(|s| (n, s.clone())))
                .collect();
            let doc = json!({
                "openapi": "3.0.0",
                "info": info,
                "paths": paths3,
                "components": {"schemas": comps, "securitySchemes": security_scheme()},
                "security": [{"BearerToken": []}],
            });
            let bytes = to_bytes(&doc);
            let path = gv_path(group, version);
            let url = format!("/openapi/v3/{path}?hash={}", hash_hex(&bytes));
            index.insert(path.clone(), json!({ "serverRelativeURL": url }));
            v3_docs.insert(path, bytes);
        }

        let mut definitions = Value::Object(schemas.clone());
        rewrite_refs(&mut definitions, REF_V3, REF_V2);
        let v2 = json!({
            "swagger": "2.0",
            "info": info,
            "paths": v2_paths,
            "definitions": definitions,
            "securityDefinitions": security_scheme(),
            "security": [{"BearerToken": []}],
        });
        OpenApi {
            v2: to_bytes(&v2),
            v3_index: to_bytes(&json!({ "paths": index })),
            v3_docs,
            schemas,
            kinds,
        }
    }

    /// The Swagger 2.0 document (JSON) served at /openapi/v2, with paths for every resource and its verbs (GET/LIST/WATCH/POST/PUT/PATCH/DELETE and subresources) and a `fieldValidation`, `dryRun`, `fieldManager` parameter on writes, and `x-kubernetes-group-version-kind` / `x-kubernetes-action` on operations.
    pub fn v2(&self) -> Bytes {
        self.v2.clone()
    }

    /// The /openapi/v3 index (JSON).
    pub fn v3_index(&self) -> Bytes {
        self.v3_index.clone()
    }

    /// The OpenAPI 3.0 document for "api/v1" or "apis/<group>/<version>" (JSON), None when unknown.
    pub fn v3_document(&self, gv_path: &str) -> Option<Bytes> {
        let p = gv_path.split('?').next().unwrap_or_default();
        self.v3_docs.get(p.trim_matches('/')).cloned()
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
        self.kinds.get(&gvk(group, version, kind)).cloned()
    }

    /// Strict field validation: paths of fields in `obj` that the kind's schema does not declare, in upstream's form (e.g. ".spec.foo", ".spec.containers[0].bogus"), following $refs, treating additionalProperties maps (labels, data...) and x-kubernetes-preserve-unknown-fields as open. Unknown kinds return empty.
    pub fn unknown_fields(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        obj: &Value,
    ) -> Vec<String> {
        let Some(schema) = self
            .kinds
            .get(&gvk(group, version, kind))
            .and_then(|n| self.schemas.get(n))
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut path = String::new();
        self.walk(schema, obj, &mut path, &mut out, true);
        out
    }

    /// Follow `$ref` and one-element `allOf` wrappers to the schema that describes a value.
    fn resolve<'a>(&'a self, mut s: &'a Value) -> Option<&'a Value> {
        for _ in 0..32 {
            if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                s = self.schemas.get(r.trim_start_matches(REF_V3))?;
                continue;
            }
            match s.get("allOf").and_then(Value::as_array) {
                Some(all) if all.len() == 1 && s.get("properties").is_none() => {
                    s = all.first()?;
                }
                _ => return Some(s),
            }
        }
        None
    }

    fn walk(
        &self,
        schema: &Value,
        v: &Value,
        path: &mut String,
        out: &mut Vec<String>,
        root: bool,
    ) {
        let Some(s) = self.resolve(schema) else {
            return;
        };
        if s.get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return;
        }
        let len = path.len();
        match v {
            Value::Object(m) => {
                if let Some(props) = s.get("properties").and_then(Value::as_object) {
                    for (k, child) in m {
                        path.push('.');
                        path.push_str(k);
                        match props.get(k) {
                            Some(cs) => self.walk(cs, child, path, out, false),
                            None if root && matches!(k.as_str(), "apiVersion" | "kind") => {}
                            None => out.push(path.clone()),
                        }
                        path.truncate(len);
                    }
                } else if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                    for (k, child) in m {
                        path.push('.');
                        path.push_str(k);
                        self.walk(ap, child, path, out, false);
                        path.truncate(len);
                    }
                }
                // no properties and no value schema: an open object (RawExtension, FieldsV1)
            }
            Value::Array(items) => {
                if let Some(is) = s.get("items") {
                    for (i, child) in items.iter().enumerate() {
                        path.push_str(&format!("[{i}]"));
                        self.walk(is, child, path, out, false);
                        path.truncate(len);
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

    fn parse(b: &Bytes) -> Value {
        serde_json::from_slice(b).expect("json")
    }

    fn doc(o: &OpenApi, gv: &str) -> Value {
        parse(&o.v3_document(gv).expect("document"))
    }

    /// The references in `text` (a document) that name no schema in `names`.
    fn dangling(text: &str, prefix: &str, names: &Value) -> Vec<String> {
        text.split("\"$ref\":\"")
            .skip(1)
            .filter_map(|r| {
                let name = r.split('"').next().unwrap_or_default();
                let short = name.strip_prefix(prefix).unwrap_or(name);
                names.get(short).is_none().then(|| name.to_string())
            })
            .collect()
    }

    fn query_names(op: &Value) -> Vec<&str> {
        op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect()
    }

    #[test]
    fn pod_schema_carries_its_gvk() {
        let o = OpenApi::build();
        let d = doc(&o, "api/v1");
        let schemas = &d["components"]["schemas"];
        let pod = &schemas["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        assert!(pod["properties"]["spec"].is_object());
        assert!(
            pod.get("required").is_none(),
            "metadata is not required upstream"
        );
        let list = &schemas["io.k8s.api.core.v1.PodList"];
        assert_eq!(
            list["x-kubernetes-group-version-kind"][0]["kind"],
            "PodList"
        );
        assert_eq!(
            list["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Pod"
        );
        let status = &schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Status"];
        assert_eq!(
            status["x-kubernetes-group-version-kind"][0]["kind"],
            "Status"
        );
        let v2 = parse(&o.v2());
        assert_eq!(v2["swagger"], "2.0");
        let pod2 = &v2["definitions"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod2["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
    }

    #[test]
    fn index_lists_every_group_version() {
        let o = OpenApi::build();
        let index = parse(&o.v3_index());
        for r in RESOURCES {
            let gv = gv_path(r.group, r.version);
            let url = index["paths"][&gv]["serverRelativeURL"]
                .as_str()
                .expect("url");
            assert!(url.starts_with(&format!("/openapi/v3/{gv}?hash=")), "{url}");
            assert!(o.v3_document(&gv).is_some());
            assert!(o.v3_document(&format!("/{gv}")).is_some());
        }
        assert!(index["paths"]["api/v1"].is_object());
        assert!(index["paths"]["apis/apps/v1"].is_object());
        assert!(o.v3_document("apis/nope/v1").is_none());
        assert!(o.v3_document("").is_none());
        // each document has its own hash
        let hash = |gv: &str| {
            index["paths"][gv]["serverRelativeURL"]
                .as_str()
                .map(String::from)
        };
        assert_ne!(hash("api/v1"), hash("apis/apps/v1"));
    }

    /// kubectl's server-side validation check: the first PATCH operation carrying
    /// the kind's GVK, in any order, must list fieldValidation; client-side apply
    /// wants strategic merge patch in its request body.
    #[test]
    fn every_patch_operation_supports_field_validation() {
        let o = OpenApi::build();
        for r in RESOURCES {
            let d = doc(&o, &gv_path(r.group, r.version));
            let want = json!({"group": r.group, "kind": r.kind, "version": r.version});
            let mut found = 0;
            for (path, item) in d["paths"].as_object().expect("paths") {
                let Some(patch) = item.get("patch") else {
                    continue;
                };
                assert!(
                    patch["x-kubernetes-group-version-kind"].is_object(),
                    "{path}"
                );
                let names = query_names(patch);
                for n in ["fieldValidation", "dryRun", "fieldManager", "force"] {
                    assert!(names.contains(&n), "{path} lacks {n}");
                }
                let content = &patch["requestBody"]["content"];
                assert!(content["application/strategic-merge-patch+json"].is_object());
                assert!(content["application/apply-patch+yaml"].is_object());
                assert_eq!(patch["x-kubernetes-action"], "patch");
                if patch["x-kubernetes-group-version-kind"] == want {
                    found += 1;
                }
            }
            assert!(found >= 1, "no PATCH for {}", r.kind);
        }
    }

    /// kubectl explain: the GVK of an operation on the resource's path, then the
    /// one schema whose GVK list holds exactly it.
    #[test]
    fn explain_finds_every_kind() {
        let o = OpenApi::build();
        for r in RESOURCES {
            let d = doc(&o, &gv_path(r.group, r.version));
            let prefix = api_prefix(r.group, r.version);
            let candidates = [
                format!("{prefix}/{}", r.plural),
                format!("{prefix}/{}/{{name}}", r.plural),
                format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            ];
            let gvk_of = |item: &Value| {
                ["get", "post", "put", "patch", "delete"]
                    .iter()
                    .find_map(|m| {
                        item.get(*m)?
                            .get("x-kubernetes-group-version-kind")
                            .cloned()
                    })
            };
            let found: Vec<Value> = candidates
                .iter()
                .filter_map(|p| d["paths"].get(p))
                .filter_map(gvk_of)
                .collect();
            let want = json!({"group": r.group, "kind": r.kind, "version": r.version});
            assert!(
                !found.is_empty() && found.iter().all(|g| *g == want),
                "{}",
                r.kind
            );
            let hits = d["components"]["schemas"]
                .as_object()
                .expect("schemas")
                .values()
                .filter(|s| {
                    s["x-kubernetes-group-version-kind"]
                        .as_array()
                        .is_some_and(|a| a.contains(&want))
                })
                .count();
            assert_eq!(hits, 1, "{}", r.kind);
        }
    }

    #[test]
    fn operations_cover_verbs_and_subresources() {
        let o = OpenApi::build();
        let d = doc(&o, "api/v1");
        let p = &d["paths"];
        let pods = "/api/v1/namespaces/{namespace}/pods";
        let action = |path: &str, m: &str| p[path][m]["x-kubernetes-action"].clone();
        assert_eq!(action(pods, "get"), "list");
        assert_eq!(action(pods, "post"), "post");
        assert_eq!(action(pods, "delete"), "deletecollection");
        assert_eq!(
            query_names(&p[pods]["post"]),
            ["dryRun", "fieldManager", "fieldValidation"]
        );
        assert_eq!(
            query_names(&p[format!("{pods}/{{name}}")]["put"]),
            WRITE_PARAMS
        );
        assert_eq!(action(&format!("{pods}/{{name}}"), "delete"), "delete");
        assert_eq!(action(&format!("{pods}/{{name}}/status"), "put"), "put");
        let binding = &p[format!("{pods}/{{name}}/binding")]["post"];
        assert_eq!(
            binding["x-kubernetes-group-version-kind"]["kind"],
            "Binding"
        );
        let eviction = &p[format!("{pods}/{{name}}/eviction")]["post"];
        assert_eq!(
            eviction["x-kubernetes-group-version-kind"]["group"],
            "policy"
        );
        assert_eq!(
            action("/api/v1/watch/namespaces/{namespace}/pods", "get"),
            "watchlist"
        );
        assert_eq!(
            action("/api/v1/watch/namespaces/{namespace}/pods/{name}", "get"),
            "watch"
        );
        assert_eq!(
            p["/api/v1/pods"]["get"]["operationId"],
            "listCoreV1PodForAllNamespaces"
        );
        let finalize = &p["/api/v1/namespaces/{name}/finalize"]["put"];
        assert_eq!(finalize["operationId"], "replaceCoreV1NamespaceFinalize");
        assert_eq!(
            p["/api/v1/nodes/{name}"]["patch"]["operationId"],
            "patchCoreV1Node"
        );
        assert!(p["/api/v1/"]["get"].is_object());

        let apps = doc(&o, "apis/apps/v1");
        let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["patch"]["x-kubernetes-group-version-kind"],
            json!({"group": "autoscaling", "kind": "Scale", "version": "v1"})
        );
        assert!(apps["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"].is_object());

        let v2 = parse(&o.v2());
        let patch =
            &v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        let consumes = patch["consumes"].as_array().expect("consumes");
        assert!(consumes.contains(&json!("application/strategic-merge-patch+json")));
        assert!(query_names(patch).contains(&"fieldValidation"));
        assert_eq!(patch["x-kubernetes-action"], "patch");
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(v2["paths"]["/api/v1/watch/nodes/{name}"]["get"].is_object());
        assert!(v2["paths"]["/apis/batch/"]["get"].is_object());
    }

    #[test]
    fn references_resolve_and_patch_metadata_is_there() {
        let o = OpenApi::build();
        for r in RESOURCES {
            let d = doc(&o, &gv_path(r.group, r.version));
            let text = serde_json::to_string(&d).expect("text");
            let names = &d["components"]["schemas"];
            assert_eq!(dangling(&text, REF_V3, names), Vec::<String>::new());
        }
        let v2 = parse(&o.v2());
        let text = String::from_utf8_lossy(&o.v2()).to_string();
        assert!(!text.contains("#/components/"));
        assert_eq!(
            dangling(&text, REF_V2, &v2["definitions"]),
            Vec::<String>::new()
        );

        let d = doc(&o, "api/v1");
        let schemas = &d["components"]["schemas"];
        let spec = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"];
        assert_eq!(spec["containers"]["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(spec["containers"]["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(
            spec["volumes"]["x-kubernetes-patch-strategy"],
            "merge,retainKeys"
        );
        let meta = &schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"];
        assert_eq!(meta["finalizers"]["x-kubernetes-patch-strategy"], "merge");
        assert!(meta["finalizers"]
            .get("x-kubernetes-patch-merge-key")
            .is_none());
        // every table entry names a real field
        assert_eq!(patch_meta().count(), 39);
        for (schema, field, _, _) in patch_meta() {
            let names = o.property_names(&schema);
            assert!(names.iter().any(|p| p == field), "{schema}.{field}");
        }
    }

    #[test]
    fn unknown_fields_are_found() {
        let o = OpenApi::build();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"anything": "goes"}},
            "spec": {"foo": 1, "containers": [{"name": "c", "image": "i", "bogus": true,
                "resources": {"limits": {"cpu": "1"}}}]}});
        assert_eq!(
            o.unknown_fields("", "v1", "Pod", &pod),
            vec![".spec.foo", ".spec.containers[0].bogus"]
        );
        let dep = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "i", "ports": [{"containerPort": 80, "nope": 1}]}]}}}});
        assert_eq!(
            o.unknown_fields("apps", "v1", "Deployment", &dep),
            vec![".spec.template.spec.containers[0].ports[0].nope"]
        );
        let typo = json!({"metadata": {"name": "p", "lables": {}}, "extra": null});
        assert_eq!(
            o.unknown_fields("", "v1", "Pod", &typo),
            vec![".metadata.lables", ".extra"]
        );
        assert!(o.unknown_fields("x", "v1", "Unknown", &dep).is_empty());
    }

    #[test]
    fn valid_objects_have_no_unknown_fields() {
        let o = OpenApi::build();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default",
                "labels": {"app": "web", "tier": "x"}, "annotations": {"a/b": "c"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                    "uid": "u", "controller": true}],
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}}}}}}]},
            "spec": {"containers": [{"name": "c", "image": "nginx",
                    "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}},
                    "livenessProbe": {"httpGet": {"path": "/", "port": "http"}}}],
                "nodeSelector": {"disk": "ssd"},
                "volumes": [{"name": "v", "configMap": {"name": "cm"}}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "In", "values": ["a"]}]}]}}}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(
            o.unknown_fields("", "v1", "Pod", &pod),
            Vec::<String>::new()
        );
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"x": "y"}},
            "data": {"any.key": "v"}, "binaryData": {"b": "AA=="}});
        assert!(o.unknown_fields("", "v1", "ConfigMap", &cm).is_empty());
        let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert!(o
            .unknown_fields("apps", "v1", "Deployment", &dep)
            .is_empty());
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
            "spec": {"holderIdentity": "a", "renewTime": "2024-01-01T00:00:00.000000Z"}});
        assert!(o
            .unknown_fields("coordination.k8s.io", "v1", "Lease", &lease)
            .is_empty());
    }

    #[test]
    fn kinds_map_for_the_decoder() {
        let o = OpenApi::build();
        let of = |av: &str, kind: &str| o.schema_of(av, kind);
        assert_eq!(of("v1", "Pod").as_deref(), Some("io.k8s.api.core.v1.Pod"));
        assert_eq!(
            of("apps/v1", "DeploymentList").as_deref(),
            Some("io.k8s.api.apps.v1.DeploymentList")
        );
        assert_eq!(
            of("policy/v1", "Eviction").as_deref(),
            Some("io.k8s.api.policy.v1.Eviction")
        );
        assert_eq!(
            of("meta.k8s.io/v1", "DeleteOptions").as_deref(),
            Some("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions")
        );
        assert!(of("v1", "Nope").is_none());
        let container = o.property_names("io.k8s.api.core.v1.Container");
        assert!(container.iter().any(|p| p == "image"));
        assert!(o.property_names("nope").is_empty());
    }
}
