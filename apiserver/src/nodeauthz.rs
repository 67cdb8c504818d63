//! The Node authorizer (`--authorization-mode=Node`) and the NodeRestriction
//! admission plugin, as upstream's `plugin/pkg/auth/authorizer/node` and
//! `plugin/pkg/admission/noderestriction`.
//!
//! Both apply only to kubelets: users named `system:node:<name>` in the group
//! `system:nodes`. Everyone else gets NoOpinion from [`authorize`] and passes
//! [`admit`] untouched.
//!
//! The authorizer answers from a [`Graph`] of what each node may see: the pods
//! bound to it and, through them, the secrets, configmaps, persistent volume
//! claims, service accounts and resource claims they reference; the persistent
//! volumes whose `claimRef` names such a claim (and the secrets those volumes
//! hand the kubelet); volume attachments and resource slices naming the node.
//! The graph is built from the watch cache: [`Graph::from_cache`] builds one
//! from scratch; [`GraphCache`] (for the request path) keeps one, reparsing only
//! objects whose revision moved and reassembling the graph only when an edge
//! changed. Upstream instead updates one graph from informer events.
//!
//! Malformed objects never panic: a missing or mistyped field reads as absent.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Display;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Map, Value};

use crate::authn::User;
use crate::cache::{Cache, Entry};
use crate::error::ApiError;
use crate::rbac::{node_rules, Attributes, Decision, PolicyRule};
use crate::selectors::{object_labels, FieldSelector};

/// The group every kubelet's credentials carry.
pub const NODES_GROUP: &str = "system:nodes";
/// Kubelet user names are this followed by the node's name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The annotation marking a mirror pod (a static pod's API shadow).
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The namespace of node heartbeat leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Label namespace kubelets may never set on their Node.
pub const NODE_RESTRICTION_LABEL_NAMESPACE: &str = "node-restriction.kubernetes.io";

/// Labels under `kubernetes.io`/`k8s.io` a kubelet may set on its own Node
/// (upstream's `kubeletapis.KubeletLabels`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// Label namespaces (and their subdomains) a kubelet may set freely.
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

// ---------------------------------------------------------------------------
// Node identity
// ---------------------------------------------------------------------------

/// Upstream's `NodeIdentity`: `None` for a user that is not a node; for a node,
/// its name (empty when the user is exactly `system:node:`, which both the
/// authorizer and the admission plugin refuse).
pub fn node_identity(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    user.groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

// ---------------------------------------------------------------------------
// The graph
// ---------------------------------------------------------------------------

/// What a graph vertex stands for (upstream's vertex types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VertexType {
    ConfigMap,
    ResourceSlice,
    Node,
    Pod,
    Pvc,
    Pv,
    ResourceClaim,
    Secret,
    VolumeAttachment,
    ServiceAccount,
}

type VertexKey = (VertexType, String, String);

/// Which objects relate to which nodes. Edges point towards nodes:
/// `secret, configmap, pvc, serviceaccount, resourceclaim -> pod -> node`,
/// `pv -> pvc`, `secret -> pv`, `volumeattachment -> node`,
/// `resourceslice -> node`.
///
/// An edge created from a pod is recorded with the node it leads to, so a
/// vertex knows every node it reaches through pods directly (upstream's
/// destination index, kept for every vertex here). Only `secret -> pv` and
/// `pv -> pvc` carry no node and are walked.
#[derive(Debug, Default, Clone)]
pub struct Graph {
    ids: HashMap<VertexKey, usize>,
    /// Per vertex: the node vertices its destination edges lead to.
    destinations: Vec<HashSet<usize>>,
    /// Per vertex: edges without a known destination (`secret -> pv`, `pv -> pvc`).
    plain: Vec<Vec<usize>>,
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn array<'v>(v: &'v Value, pointer: &str) -> &'v [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Every container of a pod: init, regular and ephemeral.
fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    [
        "/spec/initContainers",
        "/spec/containers",
        "/spec/ephemeralContainers",
    ]
    .into_iter()
    .flat_map(move |p| array(pod, p))
}

fn insert_name(out: &mut BTreeSet<String>, name: &str) {
    if !name.is_empty() {
        out.insert(name.to_string());
    }
}

/// The secrets a pod references (upstream's `VisitPodSecretNames` over all
/// containers): image pull secrets, env and envFrom, and volume sources.
pub fn pod_secret_names(pod: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in array(pod, "/spec/imagePullSecrets") {
        insert_name(&mut out, str_at(r, "/name"));
    }
    for c in containers(pod) {
        for e in array(c, "/envFrom") {
            insert_name(&mut out, str_at(e, "/secretRef/name"));
        }
        for e in array(c, "/env") {
            insert_name(&mut out, str_at(e, "/valueFrom/secretKeyRef/name"));
        }
    }
    for v in array(pod, "/spec/volumes") {
        for p in [
            "/azureFile/secretName",
            "/cephfs/secretRef/name",
            "/cinder/secretRef/name",
            "/flexVolume/secretRef/name",
            "/rbd/secretRef/name",
            "/secret/secretName",
            "/scaleIO/secretRef/name",
            "/iscsi/secretRef/name",
            "/storageos/secretRef/name",
            "/csi/nodePublishSecretRef/name",
        ] {
            insert_name(&mut out, str_at(v, p));
        }
        for s in array(v, "/projected/sources") {
            insert_name(&mut out, str_at(s, "/secret/name"));
        }
    }
    out
}

/// The configmaps a pod references (upstream's `VisitPodConfigmapNames`).
pub fn pod_configmap_names(pod: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in containers(pod) {
        for e in array(c, "/envFrom") {
            insert_name(&mut out, str_at(e, "/configMapRef/name"));
        }
        for e in array(c, "/env") {
            insert_name(&mut out, str_at(e, "/valueFrom/configMapKeyRef/name"));
        }
    }
    for v in array(pod, "/spec/volumes") {
        insert_name(&mut out, str_at(v, "/configMap/name"));
        for s in array(v, "/projected/sources") {
            insert_name(&mut out, str_at(s, "/configMap/name"));
        }
    }
    out
}

/// The claims a pod's volumes use: `persistentVolumeClaim` volumes, and the
/// `<pod>-<volume>` claim of each generic ephemeral volume.
pub fn pod_pvc_names(pod: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let pod_name = str_at(pod, "/metadata/name");
    for v in array(pod, "/spec/volumes") {
        let claim = str_at(v, "/persistentVolumeClaim/claimName");
        if !claim.is_empty() {
            out.insert(claim.to_string());
        } else if v.get("ephemeral").is_some_and(Value::is_object) {
            let vol = str_at(v, "/name");
            if !pod_name.is_empty() && !vol.is_empty() {
                out.insert(format!("{pod_name}-{vol}"));
            }
        }
    }
    out
}

/// The ResourceClaims a pod uses: named ones, those generated from templates
/// (as recorded in `status.resourceClaimStatuses`), and the extended-resource claim.
fn pod_resource_claim_names(pod: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let statuses = array(pod, "/status/resourceClaimStatuses");
    for rc in array(pod, "/spec/resourceClaims") {
        let direct = str_at(rc, "/resourceClaimName");
        if !direct.is_empty() {
            out.insert(direct.to_string());
            continue;
        }
        if str_at(rc, "/resourceClaimTemplateName").is_empty() {
            continue;
        }
        let name = str_at(rc, "/name");
        if let Some(s) = statuses.iter().find(|s| str_at(s, "/name") == name) {
            insert_name(&mut out, str_at(s, "/resourceClaimName"));
        }
    }
    insert_name(
        &mut out,
        str_at(pod, "/status/extendedResourceClaimStatus/resourceClaimName"),
    );
    out
}

/// The secrets a PersistentVolume hands the kubelet (upstream's
/// `VisitPVSecretNames`, kubelet-visible ones): `(namespace, name)`, where a
/// reference without a namespace is in the namespace of the volume's claim.
fn pv_secret_refs(pv: &Value) -> Vec<(String, String)> {
    let claim_ns = str_at(pv, "/spec/claimRef/namespace");
    let mut out = Vec::new();
    let mut push = |ns: &str, name: &str| {
        if !name.is_empty() {
            out.push((ns.to_string(), name.to_string()));
        }
    };
    fn or<'s>(ns: &'s str, fallback: &'s str) -> &'s str {
        if ns.is_empty() {
            fallback
        } else {
            ns
        }
    }
    let spec = pv.get("spec").unwrap_or(&Value::Null);
    if let Some(af) = spec.get("azureFile") {
        push(
            or(str_at(af, "/secretNamespace"), claim_ns),
            str_at(af, "/secretName"),
        );
    }
    for src in [
        "cephfs",
        "cinder",
        "flexVolume",
        "rbd",
        "scaleIO",
        "iscsi",
        "storageos",
    ] {
        if let Some(r) = spec.get(src).and_then(|s| s.get("secretRef")) {
            push(or(str_at(r, "/namespace"), claim_ns), str_at(r, "/name"));
        }
    }
    if let Some(csi) = spec.get("csi") {
        for r in [
            "nodePublishSecretRef",
            "nodeStageSecretRef",
            "nodeExpandSecretRef",
        ] {
            if let Some(r) = csi.get(r) {
                push(str_at(r, "/namespace"), str_at(r, "/name"));
            }
        }
    }
    out
}

/// What one object adds to the graph: all the graph keeps of it, so an
/// object that changed elsewhere (a pod's status) changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Edges {
    None,
    Pod {
        namespace: String,
        name: String,
        node: String,
        /// What the pod references, in its namespace (none for a mirror pod).
        refs: Vec<(VertexType, String)>,
    },
    Pv {
        name: String,
        claim_namespace: String,
        claim: String,
        secrets: Vec<(String, String)>,
    },
    NodeScoped {
        ty: VertexType,
        name: String,
        node: String,
    },
}

impl Edges {
    fn of_pod(pod: &Value) -> Edges {
        let node = str_at(pod, "/spec/nodeName");
        let name = str_at(pod, "/metadata/name");
        if node.is_empty() || name.is_empty() {
            return Edges::None;
        }
        let mut refs: Vec<(VertexType, String)> = Vec::new();
        // a node must never gain access to anything through a pod it can create
        let mirror = pod
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION));
        if !mirror {
            let sa = str_at(pod, "/spec/serviceAccountName");
            if !sa.is_empty() {
                refs.push((VertexType::ServiceAccount, sa.to_string()));
            }
            let typed =
                |ty: VertexType, names: BTreeSet<String>| names.into_iter().map(move |n| (ty, n));
            refs.extend(typed(VertexType::Secret, pod_secret_names(pod)));
            refs.extend(typed(VertexType::ConfigMap, pod_configmap_names(pod)));
            refs.extend(typed(VertexType::Pvc, pod_pvc_names(pod)));
            refs.extend(typed(
                VertexType::ResourceClaim,
                pod_resource_claim_names(pod),
            ));
        }
        Edges::Pod {
            namespace: str_at(pod, "/metadata/namespace").to_string(),
            name: name.to_string(),
            node: node.to_string(),
            refs,
        }
    }

    fn of_pv(pv: &Value) -> Edges {
        let name = str_at(pv, "/metadata/name");
        let claim = str_at(pv, "/spec/claimRef/name");
        if name.is_empty() || claim.is_empty() {
            return Edges::None;
        }
        Edges::Pv {
            name: name.to_string(),
            claim_namespace: str_at(pv, "/spec/claimRef/namespace").to_string(),
            claim: claim.to_string(),
            secrets: pv_secret_refs(pv),
        }
    }

    fn of_node_scoped(ty: VertexType, obj: &Value) -> Edges {
        let name = str_at(obj, "/metadata/name");
        let node = str_at(obj, "/spec/nodeName");
        if name.is_empty() || node.is_empty() {
            return Edges::None;
        }
        Edges::NodeScoped {
            ty,
            name: name.to_string(),
            node: node.to_string(),
        }
    }

    /// The edges of an object stored in graph folder `folder` (an index into
    /// [`GRAPH_FOLDERS`]); `None` for bytes that are not JSON.
    fn of_stored(folder: usize, data: &[u8]) -> Edges {
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return Edges::None;
        };
        match folder {
            0 => Edges::of_pod(&v),
            1 => Edges::of_pv(&v),
            2 => Edges::of_node_scoped(VertexType::VolumeAttachment, &v),
            3 => Edges::of_node_scoped(VertexType::ResourceSlice, &v),
            _ => Edges::None,
        }
    }
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// A graph of these objects (as JSON): pods, PersistentVolumes,
    /// VolumeAttachments and ResourceSlices.
    pub fn from_objects(
        pods: &[Value],
        pvs: &[Value],
        volume_attachments: &[Value],
        resource_slices: &[Value],
    ) -> Graph {
        let mut g = Graph::new();
        for p in pods {
            g.add_pod(p);
        }
        for pv in pvs {
            g.add_pv(pv);
        }
        for va in volume_attachments {
            g.add_volume_attachment(va);
        }
        for s in resource_slices {
            g.add_resource_slice(s);
        }
        g
    }

    /// From the watch cache: every object under `{etcd_prefix}/pods/`,
    /// `/persistentvolumes/`, `/volumeattachments/` and `/resourceslices/`.
    pub fn from_cache(cache: &Cache, etcd_prefix: &str) -> Graph {
        let mut g = Graph::new();
        for (folder, list) in list_graph_objects(cache, etcd_prefix).iter().enumerate() {
            for (_, e) in list {
                g.apply(&Edges::of_stored(folder, &e.data));
            }
        }
        g
    }

    fn vertex(&mut self, ty: VertexType, ns: &str, name: &str) -> usize {
        if let Some(&id) = self.ids.get(&(ty, ns.to_string(), name.to_string())) {
            return id;
        }
        let id = self.destinations.len();
        self.destinations.push(HashSet::new());
        self.plain.push(Vec::new());
        self.ids.insert((ty, ns.to_string(), name.to_string()), id);
        id
    }

    fn find(&self, ty: VertexType, ns: &str, name: &str) -> Option<usize> {
        self.ids
            .get(&(ty, ns.to_string(), name.to_string()))
            .copied()
    }

    /// A pod bound to a node (`spec.nodeName` set; others are ignored, as
    /// upstream): `pod -> node`, and unless it is a mirror pod, edges to the pod
    /// from its service account, secrets, configmaps, claims and resource claims.
    pub fn add_pod(&mut self, pod: &Value) {
        self.apply(&Edges::of_pod(pod));
    }

    /// A PersistentVolume with a `claimRef`: `pv -> pvc`, and `secret -> pv`
    /// for the secrets it hands the kubelet.
    pub fn add_pv(&mut self, pv: &Value) {
        self.apply(&Edges::of_pv(pv));
    }

    /// A VolumeAttachment: `volumeattachment -> node` when `spec.nodeName` is set.
    pub fn add_volume_attachment(&mut self, va: &Value) {
        self.apply(&Edges::of_node_scoped(VertexType::VolumeAttachment, va));
    }

    /// A ResourceSlice: `resourceslice -> node` when `spec.nodeName` is set.
    pub fn add_resource_slice(&mut self, slice: &Value) {
        self.apply(&Edges::of_node_scoped(VertexType::ResourceSlice, slice));
    }

    fn apply(&mut self, edges: &Edges) {
        match edges {
            Edges::None => {}
            Edges::Pod {
                namespace,
                name,
                node,
                refs,
            } => {
                let pod_id = self.vertex(VertexType::Pod, namespace, name);
                let node_id = self.vertex(VertexType::Node, "", node);
                self.destinations[pod_id].insert(node_id);
                for (ty, n) in refs {
                    let id = self.vertex(*ty, namespace, n);
                    self.destinations[id].insert(node_id);
                }
            }
            Edges::Pv {
                name,
                claim_namespace,
                claim,
                secrets,
            } => {
                let pv_id = self.vertex(VertexType::Pv, "", name);
                let pvc_id = self.vertex(VertexType::Pvc, claim_namespace, claim);
                self.plain[pv_id].push(pvc_id);
                for (ns, secret) in secrets {
                    let s = self.vertex(VertexType::Secret, ns, secret);
                    self.plain[s].push(pv_id);
                }
            }
            Edges::NodeScoped { ty, name, node } => {
                let id = self.vertex(*ty, "", name);
                let node_id = self.vertex(VertexType::Node, "", node);
                self.destinations[id].insert(node_id);
            }
        }
    }

    /// Is there a path from the object to the node? (upstream's `hasPathFrom`)
    pub fn has_path(&self, node: &str, ty: VertexType, namespace: &str, name: &str) -> bool {
        let (Some(node_id), Some(start)) = (
            self.find(VertexType::Node, "", node),
            self.find(ty, namespace, name),
        ) else {
            return false;
        };
        let mut seen = HashSet::new();
        let mut stack = vec![start];
        while let Some(v) = stack.pop() {
            if !seen.insert(v) {
                continue;
            }
            if self.destinations[v].contains(&node_id) {
                return true;
            }
            stack.extend(self.plain[v].iter().copied());
        }
        false
    }

    /// How many vertices the graph holds.
    pub fn len(&self) -> usize {
        self.destinations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }
}

/// Etcd folders the graph is built from, as upstream stores them.
const GRAPH_FOLDERS: [&str; 4] = [
    "pods",
    "persistentvolumes",
    "volumeattachments",
    "resourceslices",
];

/// The objects of each graph folder, with their keys, in key order.
fn list_graph_objects(cache: &Cache, etcd_prefix: &str) -> [Vec<(String, Arc<Entry>)>; 4] {
    let base = etcd_prefix.trim_end_matches('/');
    GRAPH_FOLDERS.map(|folder| {
        // the listing keeps every entry, in order: collect the keys alongside
        let keys = RefCell::new(Vec::new());
        let page = cache.list(&format!("{base}/{folder}/"), None, 0, &|k, _| {
            keys.borrow_mut().push(k.to_string());
            true
        });
        keys.into_inner().into_iter().zip(page.items).collect()
    })
}

/// What a [`GraphCache`] built its graph from.
struct Built {
    /// The cache revision the objects were last listed at.
    rev: i64,
    /// Per stored object: its revision and edges.
    edges: HashMap<String, (i64, Edges)>,
    graph: Arc<Graph>,
}

/// A [`Graph`] for the request path, kept as fresh as the watch cache at a
/// cost proportional to what changed: nothing is listed while the cache's
/// revision stands still; after a write the four folders are listed (shared
/// entries, no copies), only objects with a new revision are parsed, and the
/// graph is reassembled only when some object's edges changed or an object
/// came or went (a pod's status update changes no edge and costs one parse).
#[derive(Default)]
pub struct GraphCache {
    built: Mutex<Option<Built>>,
}

impl GraphCache {
    pub fn new() -> GraphCache {
        GraphCache::default()
    }

    pub fn get(&self, cache: &Cache, etcd_prefix: &str) -> Arc<Graph> {
        // read before listing: what is listed is at least this new
        let rev = cache.revision();
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = built.as_ref() {
            if b.rev == rev {
                return b.graph.clone();
            }
        }
        let lists = list_graph_objects(cache, etcd_prefix);
        let next = Built::next(built.take(), rev, &lists);
        let graph = next.graph.clone();
        *built = Some(next);
        graph
    }
}

impl Built {
    /// The graph of `lists`, reusing what `previous` parsed and built.
    fn next(
        mut previous: Option<Built>,
        rev: i64,
        lists: &[Vec<(String, Arc<Entry>)>; 4],
    ) -> Built {
        let mut edges = HashMap::new();
        let mut changed = previous.is_none();
        for (folder, list) in lists.iter().enumerate() {
            for (key, entry) in list {
                let old = previous.as_mut().and_then(|p| p.edges.remove(key));
                let e = match old {
                    Some((r, e)) if r == entry.rev => e,
                    Some((_, e)) => {
                        let new = Edges::of_stored(folder, &entry.data);
                        changed |= new != e;
                        new
                    }
                    None => {
                        let new = Edges::of_stored(folder, &entry.data);
                        changed |= new != Edges::None;
                        new
                    }
                };
                edges.insert(key.clone(), (entry.rev, e));
            }
        }
        // whatever is left was deleted
        let graph = match previous {
            Some(p) if !changed && p.edges.values().all(|(_, e)| *e == Edges::None) => p.graph,
            _ => {
                let mut g = Graph::new();
                for (_, e) in edges.values() {
                    g.apply(e);
                }
                Arc::new(g)
            }
        };
        Built { rev, edges, graph }
    }
}

// ---------------------------------------------------------------------------
// The authorizer
// ---------------------------------------------------------------------------

fn static_rules() -> &'static [PolicyRule] {
    static RULES: OnceLock<Vec<PolicyRule>> = OnceLock::new();
    RULES.get_or_init(node_rules)
}

fn allow() -> (Decision, String) {
    (Decision::Allow, String::new())
}

fn deny(reason: impl Into<String>) -> (Decision, String) {
    (Decision::NoOpinion, reason.into())
}

/// Does the field selector require `field` to equal `value` (`=` or `==`)?
/// An unparsable selector requires nothing.
fn selector_requires(selector: Option<&str>, field: &str, value: &str) -> bool {
    let Some(s) = selector else { return false };
    if FieldSelector::parse(s).is_err() {
        return false;
    }
    s.split(',').any(|term| {
        if term.contains("!=") {
            return false;
        }
        let (k, v) = match term.split_once("==") {
            Some(kv) => kv,
            None => match term.split_once('=') {
                Some(kv) => kv,
                None => return false,
            },
        };
        k.trim() == field && v == value
    })
}

/// Upstream's Node authorizer for a request without a field selector; see
/// [`authorize_with_field_selector`].
pub fn authorize(graph: &Graph, a: &Attributes) -> (Decision, String) {
    authorize_with_field_selector(graph, a, None)
}

/// Upstream's Node authorizer (with `AuthorizeNodeWithSelectors`, on by
/// default since 1.32). `field_selector` is the request's raw `fieldSelector`
/// query value: a node may list/watch pods with `spec.nodeName=<itself>` and
/// resource slices with `nodeName=<itself>`. Never denies: what it does not
/// allow it has no opinion on, with upstream's reason.
pub fn authorize_with_field_selector(
    graph: &Graph,
    a: &Attributes,
    field_selector: Option<&str>,
) -> (Decision, String) {
    let Some(node) = node_identity(a.user) else {
        return deny("");
    };
    if node.is_empty() {
        return deny(format!("unknown node for user {}", go_quote(&a.user.name)));
    }
    if a.resource_request {
        match (a.api_group.as_str(), a.resource.as_str()) {
            ("", "secrets") => return read_namespaced(graph, node, VertexType::Secret, a),
            ("", "configmaps") => return read_namespaced(graph, node, VertexType::ConfigMap, a),
            ("", "persistentvolumeclaims") => {
                return if a.subresource == "status" {
                    status_update(graph, node, VertexType::Pvc, a)
                } else {
                    get_only(graph, node, VertexType::Pvc, a)
                };
            }
            ("", "persistentvolumes") => return get_only(graph, node, VertexType::Pv, a),
            ("resource.k8s.io", "resourceclaims") => {
                return get_only(graph, node, VertexType::ResourceClaim, a)
            }
            ("storage.k8s.io", "volumeattachments") => {
                return get_only(graph, node, VertexType::VolumeAttachment, a)
            }
            ("", "serviceaccounts") => return create_token(graph, node, a),
            ("coordination.k8s.io", "leases") => return lease(node, a),
            ("storage.k8s.io", "csinodes") => return csi_node(node, a),
            ("resource.k8s.io", "resourceslices") => {
                return resource_slice(graph, node, a, field_selector)
            }
            ("", "nodes") => return node_object(node, a),
            ("", "pods") => return pod(graph, node, a, field_selector),
            _ => {}
        }
    }
    if static_rules().iter().any(|r| r.allows(a)) {
        allow()
    } else {
        deny("")
    }
}

fn related(graph: &Graph, node: &str, ty: VertexType, a: &Attributes) -> (Decision, String) {
    if a.name.is_empty() {
        return deny("No Object name found");
    }
    if graph.has_path(node, ty, &a.namespace, &a.name) {
        allow()
    } else {
        deny(format!(
            "no relationship found between node '{node}' and this object"
        ))
    }
}

fn status_update(graph: &Graph, node: &str, ty: VertexType, a: &Attributes) -> (Decision, String) {
    if !matches!(a.verb.as_str(), "update" | "patch") {
        return deny("can only get/update/patch this type");
    }
    if a.subresource != "status" {
        return deny("can only update status subresource");
    }
    related(graph, node, ty, a)
}

fn get_only(graph: &Graph, node: &str, ty: VertexType, a: &Attributes) -> (Decision, String) {
    if a.verb != "get" {
        return deny("can only get individual resources of this type");
    }
    if !a.subresource.is_empty() {
        return deny("cannot get subresource");
    }
    related(graph, node, ty, a)
}

/// get, and list/watch of a single named object (`metadata.name` field selector).
fn read_namespaced(
    graph: &Graph,
    node: &str,
    ty: VertexType,
    a: &Attributes,
) -> (Decision, String) {
    if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
        return deny("can only read resources of this type");
    }
    if !a.subresource.is_empty() {
        return deny("cannot read subresource");
    }
    if a.namespace.is_empty() {
        return deny("can only read namespaced object of this type");
    }
    related(graph, node, ty, a)
}

fn create_token(graph: &Graph, node: &str, a: &Attributes) -> (Decision, String) {
    if a.verb != "create" || a.name.is_empty() {
        return deny("can only create tokens for individual service accounts");
    }
    if a.subresource != "token" {
        return deny("can only create token subresource of serviceaccount");
    }
    related(graph, node, VertexType::ServiceAccount, a)
}

fn lease(node: &str, a: &Attributes) -> (Decision, String) {
    if !matches!(
        a.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return deny("can only get, create, update, patch, or delete a node lease");
    }
    if a.namespace != NODE_LEASE_NAMESPACE {
        return deny(format!(
            "can only access leases in the {} system namespace",
            go_quote(NODE_LEASE_NAMESPACE)
        ));
    }
    // on create the name is in the body: NodeRestriction checks it
    if a.verb != "create" && a.name != node {
        return deny("can only access node lease with the same name as the requesting node");
    }
    allow()
}

fn csi_node(node: &str, a: &Attributes) -> (Decision, String) {
    if !matches!(
        a.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return deny("can only get, create, update, patch, or delete a CSINode");
    }
    if !a.subresource.is_empty() {
        return deny("cannot authorize CSINode subresources");
    }
    if a.verb != "create" && a.name != node {
        return deny("can only access CSINode with the same name as the requesting node");
    }
    allow()
}

fn resource_slice(
    graph: &Graph,
    node: &str,
    a: &Attributes,
    field_selector: Option<&str>,
) -> (Decision, String) {
    if !a.subresource.is_empty() {
        return deny("cannot authorize ResourceSlice subresources");
    }
    match a.verb.as_str() {
        // NodeRestriction checks spec.nodeName of what is created
        "create" => allow(),
        "get" | "update" | "patch" | "delete" => {
            related(graph, node, VertexType::ResourceSlice, a)
        }
        "watch" | "list" | "deletecollection" => {
            if selector_requires(field_selector, "nodeName", node) {
                allow()
            } else {
                deny("can only list/watch/deletecollection resourceslices with nodeName field selector")
            }
        }
        _ => deny("only the following verbs are allowed for a ResourceSlice: get, watch, list, create, update, patch, delete, deletecollection"),
    }
}

fn node_object(node: &str, a: &Attributes) -> (Decision, String) {
    match (a.subresource.as_str(), a.verb.as_str()) {
        // NodeRestriction limits a node to its own object
        ("", "create" | "update" | "patch") => allow(),
        // by name, not the graph: a kubelet reads its Node before creating it
        ("", "get" | "list" | "watch") => {
            if a.name == node {
                allow()
            } else if a.name.is_empty() {
                deny(format!(
                    "node '{node}' cannot read all nodes, only its own Node object"
                ))
            } else {
                deny(format!(
                    "node '{node}' cannot read '{}', only its own Node object",
                    a.name
                ))
            }
        }
        ("status", "update" | "patch") => allow(),
        _ => deny(""),
    }
}

fn pod(
    graph: &Graph,
    node: &str,
    a: &Attributes,
    field_selector: Option<&str>,
) -> (Decision, String) {
    match (a.subresource.as_str(), a.verb.as_str()) {
        ("", "get") => get_only(graph, node, VertexType::Pod, a),
        ("", "list" | "watch") => {
            if selector_requires(field_selector, "spec.nodeName", node) {
                allow()
            } else if !a.name.is_empty() {
                related(graph, node, VertexType::Pod, a)
            } else {
                deny("can only list/watch pods with spec.nodeName field selector")
            }
        }
        // mirror pods; NodeRestriction checks they are bound to this node
        ("", "create" | "delete") => allow(),
        // NodeRestriction checks the pod is bound to this node
        ("status", "update" | "patch") | ("eviction", "create") => allow(),
        _ => deny(""),
    }
}

use crate::rbac::go_quote;

// ---------------------------------------------------------------------------
// NodeRestriction admission
// ---------------------------------------------------------------------------

/// An admission operation (PATCH is an UPDATE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// One write as the NodeRestriction plugin sees it (upstream's admission
/// attributes). `name` is the object's name: from the URL, or on create from
/// the body (upstream fills it in before admission; empty here is taken from
/// `object`). `object` is the new object (the body: a Pod, Node, Lease,
/// TokenRequest, Eviction, ...), `old_object` the stored one on update (and,
/// optionally, on delete).
#[derive(Debug, Clone, Copy)]
pub struct AdmissionRequest<'a> {
    pub user: &'a User,
    pub operation: Operation,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub object: Option<&'a Value>,
    pub old_object: Option<&'a Value>,
}

/// Stored objects the admission plugin consults (upstream's pod and node listers).
pub trait Lookup {
    fn pod(&self, namespace: &str, name: &str) -> Option<Value>;
    fn node(&self, name: &str) -> Option<Value>;
}

/// [`Lookup`] from the watch cache.
pub struct CacheLookup<'a> {
    pub cache: &'a Cache,
    pub etcd_prefix: &'a str,
}

impl CacheLookup<'_> {
    fn get(&self, folder: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let base = self.etcd_prefix.trim_end_matches('/');
        let key = match ns {
            Some(ns) => format!("{base}/{folder}/{ns}/{name}"),
            None => format!("{base}/{folder}/{name}"),
        };
        let e = self.cache.get(&key)?;
        serde_json::from_slice(&e.data).ok()
    }
}

impl Lookup for CacheLookup<'_> {
    fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        let folder = crate::registry::lookup("", "v1", "pods").map_or("pods", |r| r.storage);
        self.get(folder, Some(namespace), name)
    }

    fn node(&self, name: &str) -> Option<Value> {
        let folder = crate::registry::lookup("", "v1", "nodes").map_or("minions", |r| r.storage);
        self.get(folder, None, name)
    }
}

/// What an admission check refuses with: upstream's `admission.NewForbidden`,
/// `<resource>[.<group>] "<name>" is forbidden: <why>`.
fn forbidden(req: &AdmissionRequest, name: &str, why: impl Display) -> ApiError {
    let qualified = if req.group.is_empty() {
        req.resource.to_string()
    } else {
        format!("{}.{}", req.resource, req.group)
    };
    let shown = if !name.is_empty() {
        name.to_string()
    } else {
        req.object
            .map(|o| {
                let n = str_at(o, "/metadata/name");
                if n.is_empty() {
                    str_at(o, "/metadata/generateName")
                } else {
                    n
                }
            })
            .filter(|n| !n.is_empty())
            .unwrap_or("Unknown")
            .to_string()
    };
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!("{qualified} {} is forbidden: {why}", go_quote(&shown)),
        details: Some(json!({"name": shown, "group": req.group, "kind": req.resource})),
    }
}

/// A lister's NotFound (`pod "x" not found`), which upstream passes through.
fn lister_not_found(kind: &str, name: &str) -> ApiError {
    let plural = format!("{kind}s");
    ApiError {
        code: 404,
        reason: "NotFound",
        message: format!("{kind} {} not found", go_quote(name)),
        details: Some(json!({"name": name, "kind": plural})),
    }
}

/// Upstream's message for a body or stored object of the wrong type (Go's `%T`).
fn unexpected_type(obj: Option<&Value>) -> String {
    match obj {
        None => "unexpected type <nil>".into(),
        Some(_) => "unexpected type of object".into(),
    }
}

/// The object when it is a JSON object (what upstream's type assertion checks).
fn as_object(obj: Option<&Value>) -> Option<&Value> {
    obj.filter(|o| o.is_object())
}

/// Upstream's NodeRestriction: limits what a kubelet may write. Ok for anyone
/// not a node and for operations other than CREATE, UPDATE and DELETE;
/// otherwise a 403 Forbidden in upstream's words, or the 404 NotFound upstream
/// passes through when a pod or node it must look at does not exist.
pub fn admit(req: &AdmissionRequest, lookup: &dyn Lookup) -> Result<(), ApiError> {
    if req.operation == Operation::Connect {
        return Ok(());
    }
    let Some(node) = node_identity(req.user) else {
        return Ok(());
    };
    // upstream names a created object from its body before admission
    let name = if req.name.is_empty() && req.operation == Operation::Create {
        req.object.map_or("", |o| str_at(o, "/metadata/name"))
    } else {
        req.name
    };
    let r = &Restriction {
        req,
        node,
        name,
        lookup,
    };
    if node.is_empty() {
        return Err(r.forbid(format!(
            "could not determine node from user {}",
            go_quote(&req.user.name)
        )));
    }
    match (req.group, req.resource) {
        ("", "pods") => match req.subresource {
            "" => r.pod(),
            "status" => r.pod_status(),
            "eviction" => r.pod_eviction(),
            other => Err(r.forbid(format!(
                "unexpected pod subresource {}, only 'status' and 'eviction' are allowed",
                go_quote(other)
            ))),
        },
        ("", "nodes") => r.node(),
        ("", "persistentvolumeclaims") => match req.subresource {
            "status" => r.pvc_status(),
            _ => Err(r.forbid("may only update PVC status")),
        },
        ("", "serviceaccounts") => r.service_account(),
        ("coordination.k8s.io", "leases") => r.lease(),
        ("storage.k8s.io", "csinodes") => r.csi_node(),
        _ => Ok(()),
    }
}

struct Restriction<'a> {
    req: &'a AdmissionRequest<'a>,
    node: &'a str,
    name: &'a str,
    lookup: &'a dyn Lookup,
}

impl Restriction<'_> {
    fn forbid(&self, why: impl Display) -> ApiError {
        forbidden(self.req, self.name, why)
    }

    fn q(&self) -> String {
        go_quote(self.node)
    }

    fn pod(&self) -> Result<(), ApiError> {
        match self.req.operation {
            Operation::Create => self.pod_create(),
            Operation::Delete => {
                let existing = match as_object(self.req.old_object) {
                    Some(p) => p.clone(),
                    None => self
                        .lookup
                        .pod(self.req.namespace, self.name)
                        .ok_or_else(|| lister_not_found("pod", self.name))?,
                };
                if str_at(&existing, "/spec/nodeName") != self.node {
                    return Err(self.forbid(format!(
                        "node {} can only delete pods with spec.nodeName set to itself",
                        self.q()
                    )));
                }
                Ok(())
            }
            op => Err(self.forbid(format!(
                "unexpected operation {}, node {} can only create and delete mirror pods",
                go_quote(op.as_str()),
                self.q()
            ))),
        }
    }

    fn pod_create(&self) -> Result<(), ApiError> {
        let node = self.q();
        let Some(pod) = as_object(self.req.object) else {
            return Err(self.forbid(unexpected_type(self.req.object)));
        };
        let mirror = pod
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION));
        if !mirror {
            return Err(self.forbid(format!(
                "pod does not have {} annotation, node {node} can only create mirror pods",
                go_quote(MIRROR_POD_ANNOTATION)
            )));
        }
        if str_at(pod, "/spec/nodeName") != self.node {
            return Err(self.forbid(format!(
                "node {node} can only create pods with spec.nodeName set to itself"
            )));
        }
        let owners = array(pod, "/metadata/ownerReferences");
        match owners {
            [] => {
                return Err(self.forbid(format!(
                    "node {node} can only create pods with an owner reference set to itself"
                )))
            }
            [owner] => {
                if str_at(owner, "/apiVersion") != "v1"
                    || str_at(owner, "/kind") != "Node"
                    || str_at(owner, "/name") != self.node
                {
                    return Err(self.forbid(format!(
                        "node {node} can only create pods with an owner reference set to itself"
                    )));
                }
                if owner.get("controller").and_then(Value::as_bool) != Some(true) {
                    return Err(self.forbid(format!(
                        "node {node} can only create pods with a controller owner reference set to itself"
                    )));
                }
                if owner.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
                    return Err(self.forbid(format!(
                        "node {node} must not set blockOwnerDeletion on an owner reference"
                    )));
                }
                let stored = self
                    .lookup
                    .node(self.node)
                    .ok_or_else(|| lister_not_found("node", self.node))?;
                let (want, have) = (str_at(owner, "/uid"), str_at(&stored, "/metadata/uid"));
                if want != have {
                    return Err(self.forbid(format!(
                        "node {} UID mismatch: expected {want} got {have}",
                        self.node
                    )));
                }
            }
            _ => {
                return Err(self.forbid(format!(
                    "node {node} can only create pods with a single owner reference set to itself"
                )))
            }
        }
        if !str_at(pod, "/spec/serviceAccountName").is_empty() {
            return Err(self.forbid(format!(
                "node {node} can not create pods that reference a service account"
            )));
        }
        if !pod_secret_names(pod).is_empty() {
            return Err(self.forbid(format!(
                "node {node} can not create pods that reference secrets"
            )));
        }
        if !pod_configmap_names(pod).is_empty() {
            return Err(self.forbid(format!(
                "node {node} can not create pods that reference configmaps"
            )));
        }
        let volumes = array(pod, "/spec/volumes");
        if volumes.iter().any(|v| {
            array(v, "/projected/sources")
                .iter()
                .any(|s| s.get("clusterTrustBundle").is_some_and(|b| !b.is_null()))
        }) {
            return Err(self.forbid(format!(
                "node {node} can not create pods that reference clustertrustbundles"
            )));
        }
        if volumes
            .iter()
            .any(|v| v.get("persistentVolumeClaim").is_some_and(|c| !c.is_null()))
        {
            return Err(self.forbid(format!(
                "node {node} can not create pods that reference persistentvolumeclaims"
            )));
        }
        Ok(())
    }

    fn pod_status(&self) -> Result<(), ApiError> {
        if self.req.operation != Operation::Update {
            return Err(self.forbid(format!(
                "unexpected operation {}",
                go_quote(self.req.operation.as_str())
            )));
        }
        let node = self.q();
        let Some(old) = as_object(self.req.old_object) else {
            return Err(self.forbid(unexpected_type(self.req.old_object)));
        };
        if str_at(old, "/spec/nodeName") != self.node {
            return Err(self.forbid(format!(
                "node {node} can only update pod status for pods with spec.nodeName set to itself"
            )));
        }
        let Some(new) = as_object(self.req.object) else {
            return Err(self.forbid(unexpected_type(self.req.object)));
        };
        if object_labels(old) != object_labels(new) {
            return Err(self.forbid(format!(
                "node {node} cannot update labels through pod status"
            )));
        }
        let claims = |p: &Value| -> Vec<(String, Option<String>)> {
            array(p, "/status/resourceClaimStatuses")
                .iter()
                .map(|s| {
                    (
                        str_at(s, "/name").to_string(),
                        s.get("resourceClaimName")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    )
                })
                .collect()
        };
        if claims(old) != claims(new) {
            // upstream's spelling
            return Err(self.forbid(format!("node {node} cannot update resource claim statues")));
        }
        Ok(())
    }

    fn pod_eviction(&self) -> Result<(), ApiError> {
        if self.req.operation != Operation::Create {
            return Err(self.forbid(format!(
                "unexpected operation {}",
                self.req.operation.as_str()
            )));
        }
        let Some(eviction) = as_object(self.req.object) else {
            return Err(self.forbid(unexpected_type(self.req.object)));
        };
        // the pod named by the URL, else by the Eviction
        let pod_name = if self.req.name.is_empty() {
            str_at(eviction, "/metadata/name")
        } else {
            self.req.name
        };
        if pod_name.is_empty() {
            return Err(self.forbid("could not determine pod from request data"));
        }
        let existing = self
            .lookup
            .pod(self.req.namespace, pod_name)
            .ok_or_else(|| lister_not_found("pod", pod_name))?;
        if str_at(&existing, "/spec/nodeName") != self.node {
            return Err(self.forbid(format!(
                "node {} can only evict pods with spec.nodeName set to itself",
                self.node
            )));
        }
        Ok(())
    }

    fn pvc_status(&self) -> Result<(), ApiError> {
        if self.req.operation != Operation::Update {
            return Err(self.forbid(format!(
                "unexpected operation {}",
                go_quote(self.req.operation.as_str())
            )));
        }
        let Some(old) = as_object(self.req.old_object) else {
            return Err(self.forbid(unexpected_type(self.req.old_object)));
        };
        let Some(new) = as_object(self.req.object) else {
            return Err(self.forbid(unexpected_type(self.req.object)));
        };
        let strip = |pvc: &Value| -> Value {
            let mut pvc = pvc.clone();
            for (parent, key) in [
                ("/metadata", "resourceVersion"),
                ("/metadata", "managedFields"),
                ("/status", "capacity"),
                ("/status", "conditions"),
                // RecoverVolumeExpansionFailure (on by default)
                ("/status", "allocatedResourceStatuses"),
                ("/status", "allocatedResources"),
            ] {
                if let Some(m) = pvc.pointer_mut(parent).and_then(Value::as_object_mut) {
                    m.remove(key);
                }
            }
            normalize(&pvc)
        };
        let (a, b) = (strip(old), strip(new));
        if a != b {
            let mut diff = Vec::new();
            json_diff("", &a, &b, &mut diff);
            return Err(self.forbid(format!(
                "node {} is not allowed to update fields other than status.capacity and status.conditions: {}",
                self.q(),
                diff.join(", ")
            )));
        }
        Ok(())
    }

    fn node(&self) -> Result<(), ApiError> {
        let node = self.q();
        if self.name != self.node {
            return Err(self.forbid(format!(
                "node {node} is not allowed to modify node {}",
                go_quote(self.name)
            )));
        }
        match self.req.operation {
            Operation::Create => {
                let Some(obj) = as_object(self.req.object) else {
                    return Err(self.forbid(unexpected_type(self.req.object)));
                };
                if obj
                    .pointer("/spec/configSource")
                    .is_some_and(|c| !c.is_null())
                {
                    // upstream's words ("pods" sic)
                    return Err(self.forbid(format!(
                        "node {node} is not allowed to create pods with a non-nil configSource"
                    )));
                }
                let forbidden =
                    forbidden_labels(&modified_labels(&object_labels(obj), &BTreeMap::new()));
                if !forbidden.is_empty() {
                    return Err(self.forbid(format!(
                        "node {node} is not allowed to set the following labels: {}",
                        forbidden.into_iter().collect::<Vec<_>>().join(", ")
                    )));
                }
                Ok(())
            }
            Operation::Update => {
                let Some(new) = as_object(self.req.object) else {
                    return Err(self.forbid(unexpected_type(self.req.object)));
                };
                let Some(old) = as_object(self.req.old_object) else {
                    return Err(self.forbid(unexpected_type(self.req.object)));
                };
                let config = |n: &Value| {
                    n.pointer("/spec/configSource")
                        .filter(|c| !c.is_null())
                        .map(normalize)
                };
                if config(new).is_some() && config(new) != config(old) {
                    return Err(self.forbid(format!(
                        "node {node} is not allowed to update configSource to a new non-nil configSource"
                    )));
                }
                let taints =
                    |n: &Value| normalize(n.pointer("/spec/taints").unwrap_or(&Value::Null));
                if taints(new) != taints(old) {
                    return Err(self.forbid(format!("node {node} is not allowed to modify taints")));
                }
                let forbidden =
                    forbidden_labels(&modified_labels(&object_labels(new), &object_labels(old)));
                if !forbidden.is_empty() {
                    return Err(self.forbid(format!(
                        "is not allowed to modify labels: {}",
                        forbidden.into_iter().collect::<Vec<_>>().join(", ")
                    )));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn service_account(&self) -> Result<(), ApiError> {
        if self.req.operation != Operation::Create || self.req.subresource != "token" {
            return Ok(());
        }
        let Some(tr) = as_object(self.req.object) else {
            return Err(self.forbid(unexpected_type(self.req.object)));
        };
        let r = tr.pointer("/spec/boundObjectRef").filter(|r| r.is_object());
        let Some(r) = r.filter(|r| {
            str_at(r, "/apiVersion") == "v1"
                && str_at(r, "/kind") == "Pod"
                && !str_at(r, "/name").is_empty()
        }) else {
            return Err(self.forbid("node requested token not bound to a pod"));
        };
        let uid = str_at(r, "/uid");
        if uid.is_empty() {
            return Err(self.forbid("node requested token with a pod binding without a uid"));
        }
        let pod_name = str_at(r, "/name");
        let pod = self
            .lookup
            .pod(self.req.namespace, pod_name)
            .ok_or_else(|| lister_not_found("pod", pod_name))?;
        if uid != str_at(&pod, "/metadata/uid") {
            return Err(self.forbid(format!(
                "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
            )));
        }
        if str_at(&pod, "/spec/nodeName") != self.node {
            return Err(
                self.forbid("node requested token bound to a pod scheduled on a different node")
            );
        }
        Ok(())
    }

    fn lease(&self) -> Result<(), ApiError> {
        if self.req.namespace != NODE_LEASE_NAMESPACE {
            return Err(self.forbid(format!(
                "can only access leases in the {} system namespace",
                go_quote(NODE_LEASE_NAMESPACE)
            )));
        }
        self.own_name_only("can only access node lease with the same name as the requesting node")
    }

    fn csi_node(&self) -> Result<(), ApiError> {
        self.own_name_only("can only access CSINode with the same name as the requesting node")
    }

    /// On create the name in the body, otherwise the request's, must be the node's.
    fn own_name_only(&self, why: &str) -> Result<(), ApiError> {
        let name = if self.req.operation == Operation::Create {
            let Some(obj) = as_object(self.req.object) else {
                return Err(self.forbid(unexpected_type(self.req.object)));
            };
            str_at(obj, "/metadata/name")
        } else {
            self.req.name
        };
        if name != self.node {
            return Err(self.forbid(why));
        }
        Ok(())
    }
}

/// Label keys added, removed or changed between two label sets.
fn modified_labels(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (k, v) in a {
        if b.get(k) != Some(v) {
            out.insert(k.clone());
        }
    }
    for (k, v) in b {
        if a.get(k) != Some(v) {
            out.insert(k.clone());
        }
    }
    out
}

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn in_namespace(ns: &str, domain: &str) -> bool {
    ns == domain
        || ns
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

fn is_kubernetes_label(key: &str) -> bool {
    let ns = label_namespace(key);
    in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io")
}

/// A label a kubelet may set on its own Node (upstream's `IsKubeletLabel`).
pub fn is_kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|d| in_namespace(label_namespace(key), d))
}

/// Of the modified labels, those a node may not add, remove or change: any
/// under `node-restriction.kubernetes.io` (or a subdomain), and any other
/// `kubernetes.io`/`k8s.io` label that is not a kubelet label.
pub fn forbidden_labels(modified: &BTreeSet<String>) -> BTreeSet<String> {
    modified
        .iter()
        .filter(|k| {
            in_namespace(label_namespace(k), NODE_RESTRICTION_LABEL_NAMESPACE)
                || (is_kubernetes_label(k) && !is_kubelet_label(k))
        })
        .cloned()
        .collect()
}

/// For semantic comparison, as upstream's `Semantic.DeepEqual`: empty arrays
/// and objects read as absent, nulls are dropped.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let out: Map<String, Value> = m
                .iter()
                .map(|(k, v)| (k.clone(), normalize(v)))
                .filter(|(_, v)| !v.is_null())
                .collect();
            if out.is_empty() {
                Value::Null
            } else {
                Value::Object(out)
            }
        }
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// The paths at which two (normalized) values differ, for messages.
fn json_diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                json_diff(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push(if path.is_empty() {
            ".".into()
        } else {
            path.to_string()
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_user(name: &str) -> User {
        User {
            name: format!("{NODE_USER_PREFIX}{name}"),
            uid: String::new(),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
        }
    }

    fn pod(ns: &str, name: &str, node: &str, spec: Value) -> Value {
        let mut spec = spec;
        spec["nodeName"] = json!(node);
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{name}")},
            "spec": spec,
        })
    }

    fn graph() -> Graph {
        let p1 = pod(
            "default",
            "p1",
            "n1",
            json!({
                "serviceAccountName": "sa1",
                "imagePullSecrets": [{"name": "pull"}],
                "containers": [{
                    "name": "c",
                    "env": [{"name": "E", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}}],
                    "envFrom": [{"secretRef": {"name": "s-envfrom"}}],
                }],
                "volumes": [
                    {"name": "s", "secret": {"secretName": "s1"}},
                    {"name": "proj", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "claim1"}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                ],
            }),
        );
        let p2 = pod(
            "default",
            "p2",
            "n2",
            json!({
                "serviceAccountName": "sa2",
                "containers": [{"name": "c"}],
                "volumes": [
                    {"name": "s", "secret": {"secretName": "s2"}},
                    {"name": "proj", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}},
                ],
            }),
        );
        let mut mirror = pod(
            "kube-system",
            "static-n1",
            "n1",
            json!({"volumes": [{"name": "s", "secret": {"secretName": "s3"}}]}),
        );
        mirror["metadata"]["annotations"] = json!({MIRROR_POD_ANNOTATION: "hash"});
        let unscheduled = json!({
            "metadata": {"namespace": "default", "name": "pending"},
            "spec": {"volumes": [{"name": "s", "secret": {"secretName": "s4"}}]},
        });
        let pv1 = json!({
            "metadata": {"name": "pv1"},
            "spec": {
                "claimRef": {"namespace": "default", "name": "claim1"},
                "csi": {"driver": "d", "volumeHandle": "h", "nodePublishSecretRef": {"namespace": "default", "name": "pv-secret"},
                        "controllerPublishSecretRef": {"namespace": "default", "name": "controller-secret"}},
            },
        });
        let pv2 = json!({"metadata": {"name": "pv2"}, "spec": {"claimRef": {"namespace": "default", "name": "other"}}});
        let va = json!({"metadata": {"name": "va1"}, "spec": {"nodeName": "n1"}});
        Graph::from_objects(
            &[
                p1,
                p2,
                mirror,
                unscheduled,
                json!("garbage"),
                json!({"spec": 5}),
            ],
            &[pv1, pv2, json!(null)],
            &[va],
            &[],
        )
    }

    #[test]
    fn graph_cache_reuses_what_did_not_change() {
        let entry = |rev: i64, v: &Value| {
            Arc::new(Entry {
                rev,
                data: bytes::Bytes::from(v.to_string()),
                labels: BTreeMap::new(),
            })
        };
        let secret_pod = |secret: &str, phase: &str| {
            let mut p = pod(
                "default",
                "p1",
                "n1",
                json!({"volumes": [{"name": "s", "secret": {"secretName": secret}}]}),
            );
            p["status"] = json!({"phase": phase});
            p
        };
        let lists = |pods: Vec<(String, Arc<Entry>)>| [pods, vec![], vec![], vec![]];
        let key = "/registry/pods/default/p1".to_string();
        let unscheduled = json!({"metadata": {"namespace": "default", "name": "p0"}, "spec": {}});
        let b1 = Built::next(
            None,
            5,
            &lists(vec![
                ("/registry/pods/default/p0".into(), entry(4, &unscheduled)),
                (key.clone(), entry(5, &secret_pod("s1", "Pending"))),
            ]),
        );
        assert!(b1.graph.has_path("n1", VertexType::Secret, "default", "s1"));
        let g1 = b1.graph.clone();
        // a status update and a deleted unscheduled pod: same graph
        let b2 = Built::next(
            Some(b1),
            7,
            &lists(vec![(key.clone(), entry(7, &secret_pod("s1", "Running")))]),
        );
        assert!(Arc::ptr_eq(&g1, &b2.graph));
        // a pod whose references changed: rebuilt
        let b3 = Built::next(
            Some(b2),
            8,
            &lists(vec![(key.clone(), entry(8, &secret_pod("s2", "Running")))]),
        );
        assert!(!Arc::ptr_eq(&g1, &b3.graph));
        assert!(!b3.graph.has_path("n1", VertexType::Secret, "default", "s1"));
        assert!(b3.graph.has_path("n1", VertexType::Secret, "default", "s2"));
        // the pod is gone: so is the access
        let b4 = Built::next(Some(b3), 9, &lists(vec![]));
        assert!(!b4.graph.has_path("n1", VertexType::Secret, "default", "s2"));
        assert!(b4.graph.is_empty());
        // garbage in the cache is skipped
        let junk = Arc::new(Entry {
            rev: 10,
            data: bytes::Bytes::from_static(b"{not json"),
            labels: BTreeMap::new(),
        });
        let b5 = Built::next(Some(b4), 10, &lists(vec![(key, junk)]));
        assert!(b5.graph.is_empty());
    }

    fn attrs<'a>(
        user: &'a User,
        verb: &str,
        resource: &str,
        ns: &str,
        name: &str,
    ) -> Attributes<'a> {
        let (group, resource) = match resource.split_once('.') {
            Some((r, g)) => (g, r),
            None => ("", resource),
        };
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        Attributes::resource(user, verb, group, resource)
            .with_namespace(ns)
            .with_name(name)
            .with_subresource(sub)
    }

    const NO_REL: &str = "no relationship found between node 'n1' and this object";

    #[test]
    fn identity() {
        assert_eq!(node_identity(&node_user("n1")), Some("n1"));
        let mut wrong_group = node_user("n1");
        wrong_group.groups = vec!["system:authenticated".into()];
        assert_eq!(node_identity(&wrong_group), None);
        let bob = User {
            name: "bob".into(),
            uid: String::new(),
            groups: vec![NODES_GROUP.into()],
        };
        assert_eq!(node_identity(&bob), None);
        assert_eq!(node_identity(&node_user("")), Some(""));
    }

    #[test]
    fn non_nodes_get_no_opinion() {
        let g = graph();
        let bob = User {
            name: "bob".into(),
            uid: String::new(),
            groups: vec!["system:authenticated".into()],
        };
        let r = authorize(&g, &attrs(&bob, "get", "secrets", "default", "s1"));
        assert_eq!(r, (Decision::NoOpinion, String::new()));
        // right name, wrong group
        let mut impostor = node_user("n1");
        impostor.groups = vec!["system:authenticated".into()];
        let r = authorize(&g, &attrs(&impostor, "get", "secrets", "default", "s1"));
        assert_eq!(r, (Decision::NoOpinion, String::new()));
        let r = authorize(&g, &attrs(&impostor, "list", "services", "", ""));
        assert_eq!(r, (Decision::NoOpinion, String::new()));
        // right group, no node name
        let nameless = node_user("");
        let r = authorize(&g, &attrs(&nameless, "list", "services", "", ""));
        assert_eq!(
            r,
            (
                Decision::NoOpinion,
                "unknown node for user \"system:node:\"".into()
            )
        );
    }

    #[test]
    fn secrets_and_configmaps_of_bound_pods() {
        let g = graph();
        let n1 = node_user("n1");
        for s in ["s1", "pull", "s-envfrom", "pv-secret"] {
            let r = authorize(&g, &attrs(&n1, "get", "secrets", "default", s));
            assert_eq!(r, (Decision::Allow, String::new()), "{s}");
        }
        for s in ["s2", "s3", "s4", "controller-secret", "nothing"] {
            let ns = if s == "s3" { "kube-system" } else { "default" };
            let r = authorize(&g, &attrs(&n1, "get", "secrets", ns, s));
            assert_eq!(r, (Decision::NoOpinion, NO_REL.into()), "{s}");
        }
        // the right name in the wrong namespace
        let r = authorize(&g, &attrs(&n1, "get", "secrets", "other", "s1"));
        assert_eq!(r.0, Decision::NoOpinion);
        for cm in ["cm-env", "kube-root-ca.crt"] {
            let r = authorize(&g, &attrs(&n1, "get", "configmaps", "default", cm));
            assert_eq!(r.0, Decision::Allow, "{cm}");
        }
        // n2 shares kube-root-ca.crt but not s1
        let n2 = node_user("n2");
        assert_eq!(
            authorize(
                &g,
                &attrs(&n2, "get", "configmaps", "default", "kube-root-ca.crt")
            )
            .0,
            Decision::Allow
        );
        assert_eq!(
            authorize(&g, &attrs(&n2, "get", "secrets", "default", "s1")),
            (
                Decision::NoOpinion,
                "no relationship found between node 'n2' and this object".into()
            )
        );
        // a node no pod is bound to
        let n9 = node_user("n9");
        assert_eq!(
            authorize(
                &g,
                &attrs(&n9, "get", "configmaps", "default", "kube-root-ca.crt")
            )
            .0,
            Decision::NoOpinion
        );
    }

    #[test]
    fn secrets_cannot_be_listed_or_written() {
        let g = graph();
        let n1 = node_user("n1");
        for verb in ["list", "watch"] {
            let r = authorize(&g, &attrs(&n1, verb, "secrets", "default", ""));
            assert_eq!(r, (Decision::NoOpinion, "No Object name found".into()));
            let r = authorize(&g, &attrs(&n1, verb, "secrets", "", ""));
            assert_eq!(
                r,
                (
                    Decision::NoOpinion,
                    "can only read namespaced object of this type".into()
                )
            );
            // a single-object list/watch (fieldSelector=metadata.name=s1), as upstream
            let r = authorize(&g, &attrs(&n1, verb, "secrets", "default", "s1"));
            assert_eq!(r.0, Decision::Allow);
        }
        for verb in ["create", "update", "delete"] {
            let r = authorize(&g, &attrs(&n1, verb, "secrets", "default", "s1"));
            assert_eq!(
                r,
                (
                    Decision::NoOpinion,
                    "can only read resources of this type".into()
                )
            );
        }
    }

    #[test]
    fn volumes() {
        let g = graph();
        let n1 = node_user("n1");
        let get =
            |res: &str, ns: &str, name: &str| authorize(&g, &attrs(&n1, "get", res, ns, name));
        assert_eq!(
            get("persistentvolumeclaims", "default", "claim1").0,
            Decision::Allow
        );
        assert_eq!(
            get("persistentvolumeclaims", "default", "p1-scratch").0,
            Decision::Allow
        );
        assert_eq!(get("persistentvolumes", "", "pv1").0, Decision::Allow);
        assert_eq!(get("persistentvolumes", "", "pv2").0, Decision::NoOpinion);
        assert_eq!(
            get("volumeattachments.storage.k8s.io", "", "va1").0,
            Decision::Allow
        );
        assert_eq!(
            authorize(
                &g,
                &attrs(
                    &node_user("n2"),
                    "get",
                    "volumeattachments.storage.k8s.io",
                    "",
                    "va1"
                )
            )
            .0,
            Decision::NoOpinion
        );
        assert_eq!(
            authorize(&g, &attrs(&n1, "list", "persistentvolumes", "", "")),
            (
                Decision::NoOpinion,
                "can only get individual resources of this type".into()
            )
        );
        assert_eq!(
            authorize(
                &g,
                &attrs(
                    &n1,
                    "patch",
                    "persistentvolumeclaims/status",
                    "default",
                    "claim1"
                )
            )
            .0,
            Decision::Allow
        );
        assert_eq!(
            authorize(
                &g,
                &attrs(
                    &n1,
                    "get",
                    "persistentvolumeclaims/status",
                    "default",
                    "claim1"
                )
            ),
            (
                Decision::NoOpinion,
                "can only get/update/patch this type".into()
            )
        );
    }

    #[test]
    fn service_account_tokens() {
        let g = graph();
        let n1 = node_user("n1");
        let r = authorize(
            &g,
            &attrs(&n1, "create", "serviceaccounts/token", "default", "sa1"),
        );
        assert_eq!(r, (Decision::Allow, String::new()));
        let r = authorize(
            &g,
            &attrs(&n1, "create", "serviceaccounts/token", "default", "sa2"),
        );
        assert_eq!(r, (Decision::NoOpinion, NO_REL.into()));
        let r = authorize(&g, &attrs(&n1, "get", "serviceaccounts", "default", "sa1"));
        assert_eq!(
            r,
            (
                Decision::NoOpinion,
                "can only create tokens for individual service accounts".into()
            )
        );
        let r = authorize(
            &g,
            &attrs(&n1, "create", "serviceaccounts", "default", "sa1"),
        );
        assert_eq!(
            r,
            (
                Decision::NoOpinion,
                "can only create token subresource of serviceaccount".into()
            )
        );
    }

    #[test]
    fn nodes_and_pods() {
        let g = graph();
        let n1 = node_user("n1");
        assert_eq!(
            authorize(&g, &attrs(&n1, "get", "nodes", "", "n1")).0,
            Decision::Allow
        );
        assert_eq!(
            authorize(&g, &attrs(&n1, "get", "nodes", "", "n2")),
            (
                Decision::NoOpinion,
                "node 'n1' cannot read 'n2', only its own Node object".into()
            )
        );
        assert_eq!(
            authorize(&g, &attrs(&n1, "list", "nodes", "", "")),
            (
                Decision::NoOpinion,
                "node 'n1' cannot read all nodes, only its own Node object".into()
            )
        );
        // writes pass to NodeRestriction
        for (verb, res, name) in [
            ("create", "nodes", ""),
            ("patch", "nodes/status", "n1"),
            ("update", "nodes/status", "n2"),
        ] {
            assert_eq!(
                authorize(&g, &attrs(&n1, verb, res, "", name)).0,
                Decision::Allow
            );
        }
        assert_eq!(
            authorize(&g, &attrs(&n1, "delete", "nodes", "", "n1")),
            (Decision::NoOpinion, String::new())
        );

        let list = attrs(&n1, "list", "pods", "", "");
        assert_eq!(
            authorize_with_field_selector(&g, &list, Some("spec.nodeName=n1")).0,
            Decision::Allow
        );
        assert_eq!(
            authorize_with_field_selector(
                &g,
                &list,
                Some("status.phase!=Failed,spec.nodeName==n1")
            )
            .0,
            Decision::Allow
        );
        for sel in [
            None,
            Some("spec.nodeName=n2"),
            Some("spec.nodeName!=n1"),
            Some("=,"),
        ] {
            assert_eq!(
                authorize_with_field_selector(&g, &list, sel),
                (
                    Decision::NoOpinion,
                    "can only list/watch pods with spec.nodeName field selector".into()
                ),
                "{sel:?}"
            );
        }
        assert_eq!(
            authorize(&g, &attrs(&n1, "get", "pods", "default", "p1")).0,
            Decision::Allow
        );
        assert_eq!(
            authorize(&g, &attrs(&n1, "get", "pods", "kube-system", "static-n1")).0,
            Decision::Allow
        );
        assert_eq!(
            authorize(&g, &attrs(&n1, "get", "pods", "default", "p2")),
            (Decision::NoOpinion, NO_REL.into())
        );
        assert_eq!(
            authorize(&g, &attrs(&n1, "watch", "pods", "default", "p1")).0,
            Decision::Allow
        );
        for (verb, res) in [
            ("create", "pods"),
            ("delete", "pods"),
            ("patch", "pods/status"),
            ("create", "pods/eviction"),
        ] {
            assert_eq!(
                authorize(&g, &attrs(&n1, verb, res, "default", "p2")).0,
                Decision::Allow,
                "{verb} {res}"
            );
        }
        assert_eq!(
            authorize(&g, &attrs(&n1, "get", "pods/log", "default", "p1")).0,
            Decision::NoOpinion
        );
    }

    #[test]
    fn static_rules_leases_and_csinodes() {
        let g = graph();
        let n1 = node_user("n1");
        for (verb, res) in [
            ("list", "services"),
            ("get", "endpoints"),
            ("create", "events"),
            ("create", "tokenreviews.authentication.k8s.io"),
            ("create", "subjectaccessreviews.authorization.k8s.io"),
            ("create", "certificatesigningrequests.certificates.k8s.io"),
            ("watch", "runtimeclasses.node.k8s.io"),
            ("list", "csidrivers.storage.k8s.io"),
        ] {
            assert_eq!(
                authorize(&g, &attrs(&n1, verb, res, "", "")).0,
                Decision::Allow,
                "{verb} {res}"
            );
        }
        for (verb, res) in [
            ("list", "deployments.apps"),
            ("delete", "services"),
            ("get", "namespaces"),
        ] {
            assert_eq!(
                authorize(&g, &attrs(&n1, verb, res, "", "")),
                (Decision::NoOpinion, String::new()),
                "{verb} {res}"
            );
        }
        let lease = |verb: &str, ns: &str, name: &str| {
            authorize(
                &g,
                &attrs(&n1, verb, "leases.coordination.k8s.io", ns, name),
            )
        };
        assert_eq!(
            lease("update", NODE_LEASE_NAMESPACE, "n1").0,
            Decision::Allow
        );
        assert_eq!(lease("create", NODE_LEASE_NAMESPACE, "").0, Decision::Allow);
        assert_eq!(
            lease("update", NODE_LEASE_NAMESPACE, "n2"),
            (
                Decision::NoOpinion,
                "can only access node lease with the same name as the requesting node".into()
            )
        );
        assert_eq!(
            lease("get", "default", "n1"),
            (
                Decision::NoOpinion,
                "can only access leases in the \"kube-node-lease\" system namespace".into()
            )
        );
        assert_eq!(
            lease("list", NODE_LEASE_NAMESPACE, ""),
            (
                Decision::NoOpinion,
                "can only get, create, update, patch, or delete a node lease".into()
            )
        );
        let csi = |verb: &str, name: &str| {
            authorize(&g, &attrs(&n1, verb, "csinodes.storage.k8s.io", "", name))
        };
        assert_eq!(csi("patch", "n1").0, Decision::Allow);
        assert_eq!(csi("delete", "n2").0, Decision::NoOpinion);
        let slices = attrs(&n1, "list", "resourceslices.resource.k8s.io", "", "");
        assert_eq!(
            authorize_with_field_selector(&g, &slices, Some("nodeName=n1")).0,
            Decision::Allow
        );
        assert_eq!(authorize(&g, &slices).0, Decision::NoOpinion);
        // non-resource requests are not for the node authorizer
        let healthz = Attributes::non_resource(&n1, "get", "/healthz");
        assert_eq!(
            authorize(&g, &healthz),
            (Decision::NoOpinion, String::new())
        );
    }

    // -- admission --

    #[derive(Default)]
    struct Objects {
        pods: Vec<Value>,
        nodes: Vec<Value>,
    }

    impl Lookup for Objects {
        fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
            self.pods
                .iter()
                .find(|p| {
                    str_at(p, "/metadata/namespace") == namespace
                        && str_at(p, "/metadata/name") == name
                })
                .cloned()
        }
        fn node(&self, name: &str) -> Option<Value> {
            self.nodes
                .iter()
                .find(|n| str_at(n, "/metadata/name") == name)
                .cloned()
        }
    }

    fn objects() -> Objects {
        Objects {
            pods: vec![
                pod("default", "p1", "n1", json!({"serviceAccountName": "sa1"})),
                pod("default", "p2", "n2", json!({"serviceAccountName": "sa1"})),
            ],
            nodes: vec![
                json!({"metadata": {"name": "n1", "uid": "node-uid-1"}}),
                json!({"metadata": {"name": "n2", "uid": "node-uid-2"}}),
            ],
        }
    }

    fn request<'a>(
        user: &'a User,
        operation: Operation,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
        object: Option<&'a Value>,
        old_object: Option<&'a Value>,
    ) -> AdmissionRequest<'a> {
        let (resource, group) = resource.split_once('.').unwrap_or((resource, ""));
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        AdmissionRequest {
            user,
            operation,
            group,
            resource,
            subresource,
            namespace,
            name,
            object,
            old_object,
        }
    }

    fn message(r: Result<(), ApiError>) -> String {
        match r {
            Ok(()) => "ok".into(),
            Err(e) => format!("{} {}", e.code, e.message),
        }
    }

    fn mirror_pod(node: &str, uid: &str) -> Value {
        json!({
            "metadata": {
                "namespace": "kube-system", "name": format!("static-{node}"),
                "annotations": {MIRROR_POD_ANNOTATION: "hash"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid, "controller": true}],
            },
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
        })
    }

    #[test]
    fn admission_leaves_others_alone() {
        let o = objects();
        let bob = User {
            name: "bob".into(),
            uid: String::new(),
            groups: vec![],
        };
        let p = json!({"metadata": {"name": "x"}, "spec": {"nodeName": "n2"}});
        let r = request(
            &bob,
            Operation::Create,
            "pods",
            "default",
            "",
            Some(&p),
            None,
        );
        assert_eq!(message(admit(&r, &o)), "ok");
        let nameless = node_user("");
        let r = request(
            &nameless,
            Operation::Create,
            "pods",
            "default",
            "",
            Some(&p),
            None,
        );
        assert_eq!(
            message(admit(&r, &o)),
            "403 pods \"x\" is forbidden: could not determine node from user \"system:node:\""
        );
        // resources it does not restrict
        let n1 = node_user("n1");
        let ev = json!({"metadata": {"name": "e"}});
        let r = request(
            &n1,
            Operation::Create,
            "events",
            "default",
            "",
            Some(&ev),
            None,
        );
        assert_eq!(message(admit(&r, &o)), "ok");
    }

    #[test]
    fn mirror_pods_only() {
        let o = objects();
        let n1 = node_user("n1");
        let create = |p: &Value| {
            message(admit(
                &request(
                    &n1,
                    Operation::Create,
                    "pods",
                    "kube-system",
                    "",
                    Some(p),
                    None,
                ),
                &o,
            ))
        };
        assert_eq!(create(&mirror_pod("n1", "node-uid-1")), "ok");

        let mut normal = mirror_pod("n1", "node-uid-1");
        normal["metadata"]["annotations"] = json!({});
        assert_eq!(
            create(&normal),
            "403 pods \"static-n1\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"n1\" can only create mirror pods"
        );
        let elsewhere = mirror_pod("n2", "node-uid-2");
        assert_eq!(
            create(&elsewhere),
            "403 pods \"static-n2\" is forbidden: node \"n1\" can only create pods with spec.nodeName set to itself"
        );
        let mut no_owner = mirror_pod("n1", "node-uid-1");
        no_owner["metadata"]["ownerReferences"] = json!([]);
        assert!(create(&no_owner)
            .ends_with("can only create pods with an owner reference set to itself"));
        let mut not_controller = mirror_pod("n1", "node-uid-1");
        not_controller["metadata"]["ownerReferences"][0]["controller"] = json!(false);
        assert!(
            create(&not_controller).ends_with("with a controller owner reference set to itself")
        );
        assert_eq!(
            create(&mirror_pod("n1", "stale")),
            "403 pods \"static-n1\" is forbidden: node n1 UID mismatch: expected stale got node-uid-1"
        );
        let mut with_secret = mirror_pod("n1", "node-uid-1");
        with_secret["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "s1"}}]);
        assert!(create(&with_secret)
            .ends_with("node \"n1\" can not create pods that reference secrets"));
        let mut with_cm = mirror_pod("n1", "node-uid-1");
        with_cm["spec"]["containers"][0]["envFrom"] = json!([{"configMapRef": {"name": "c"}}]);
        assert!(create(&with_cm).ends_with("can not create pods that reference configmaps"));
        let mut with_sa = mirror_pod("n1", "node-uid-1");
        with_sa["spec"]["serviceAccountName"] = json!("default");
        assert!(create(&with_sa).ends_with("can not create pods that reference a service account"));
        let mut with_pvc = mirror_pod("n1", "node-uid-1");
        with_pvc["spec"]["volumes"] =
            json!([{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]);
        assert!(create(&with_pvc)
            .ends_with("can not create pods that reference persistentvolumeclaims"));
        // the node's object is missing
        let n3 = node_user("n3");
        let mirror_n3 = mirror_pod("n3", "u");
        let r = request(
            &n3,
            Operation::Create,
            "pods",
            "kube-system",
            "",
            Some(&mirror_n3),
            None,
        );
        assert_eq!(message(admit(&r, &o)), "404 node \"n3\" not found");
        // malformed bodies are refused, not panicked on
        assert!(create(&json!("nonsense")).starts_with("403 pods \"Unknown\" is forbidden"));
        assert!(create(&json!({"metadata": 7, "spec": []})).starts_with("403"));
    }

    #[test]
    fn pod_delete_status_and_eviction() {
        let o = objects();
        let n1 = node_user("n1");
        let del = |name: &str| {
            message(admit(
                &request(&n1, Operation::Delete, "pods", "default", name, None, None),
                &o,
            ))
        };
        assert_eq!(del("p1"), "ok");
        assert_eq!(
            del("p2"),
            "403 pods \"p2\" is forbidden: node \"n1\" can only delete pods with spec.nodeName set to itself"
        );
        assert_eq!(del("gone"), "404 pod \"gone\" not found");
        let upd = request(
            &n1,
            Operation::Update,
            "pods",
            "default",
            "p1",
            Some(&o.pods[0]),
            Some(&o.pods[0]),
        );
        assert!(message(admit(&upd, &o))
            .ends_with("node \"n1\" can only create and delete mirror pods"));

        let status = |old: &Value, new: &Value| {
            message(admit(
                &request(
                    &n1,
                    Operation::Update,
                    "pods/status",
                    "default",
                    str_at(old, "/metadata/name"),
                    Some(new),
                    Some(old),
                ),
                &o,
            ))
        };
        let mut p1_new = o.pods[0].clone();
        p1_new["status"] = json!({"phase": "Running"});
        assert_eq!(status(&o.pods[0], &p1_new), "ok");
        assert_eq!(
            status(&o.pods[1], &o.pods[1]),
            "403 pods \"p2\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
        );
        p1_new["metadata"]["labels"] = json!({"x": "y"});
        assert!(status(&o.pods[0], &p1_new).ends_with("cannot update labels through pod status"));

        let evict = |name: &str| {
            let ev = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}});
            message(admit(
                &request(
                    &n1,
                    Operation::Create,
                    "pods/eviction",
                    "default",
                    name,
                    Some(&ev),
                    None,
                ),
                &o,
            ))
        };
        assert_eq!(evict("p1"), "ok");
        assert_eq!(
            evict("p2"),
            "403 pods \"p2\" is forbidden: node n1 can only evict pods with spec.nodeName set to itself"
        );
        assert_eq!(evict("gone"), "404 pod \"gone\" not found");
    }

    #[test]
    fn own_node_only() {
        let o = objects();
        let n1 = node_user("n1");
        let node = |name: &str, labels: Value, taints: Value| json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}, "status": {}});
        let old = node("n1", json!({"kubernetes.io/hostname": "n1"}), json!([]));
        let update = |res: &str, name: &str, new: &Value, old: &Value| {
            message(admit(
                &request(&n1, Operation::Update, res, "", name, Some(new), Some(old)),
                &o,
            ))
        };
        let mut new = old.clone();
        new["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        assert_eq!(update("nodes/status", "n1", &new, &old), "ok");
        assert_eq!(update("nodes", "n1", &new, &old), "ok");
        let other = node("n2", json!({}), json!(null));
        assert_eq!(
            update("nodes/status", "n2", &other, &other),
            "403 nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
        );
        // taints: [] and absent are the same; a new taint is not
        let mut untainted = old.clone();
        untainted["spec"] = json!({});
        assert_eq!(update("nodes/status", "n1", &untainted, &old), "ok");
        let tainted = node(
            "n1",
            json!({"kubernetes.io/hostname": "n1"}),
            json!([{"key": "k", "effect": "NoSchedule"}]),
        );
        assert_eq!(
            update("nodes", "n1", &old, &tainted),
            "403 nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints"
        );
        // labels
        let relabeled = node(
            "n1",
            json!({
                "kubernetes.io/hostname": "n1", "example.com/x": "y", "node.kubernetes.io/foo": "1",
                "sub.kubelet.kubernetes.io/a": "b", "node-role.kubernetes.io/control-plane": "",
                "node-restriction.kubernetes.io/pool": "p", "kubernetes.io/os": "linux",
            }),
            json!([]),
        );
        assert_eq!(
            update("nodes", "n1", &relabeled, &old),
            "403 nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/pool, node-role.kubernetes.io/control-plane"
        );
        let create = |n: &Value| {
            message(admit(
                &request(&n1, Operation::Create, "nodes", "", "", Some(n), None),
                &o,
            ))
        };
        assert_eq!(create(&old), "ok");
        assert_eq!(
            create(&relabeled),
            "403 nodes \"n1\" is forbidden: node \"n1\" is not allowed to set the following labels: node-restriction.kubernetes.io/pool, node-role.kubernetes.io/control-plane"
        );
        assert!(create(&node("n2", json!({}), json!([])))
            .ends_with("is not allowed to modify node \"n2\""));
        let mut with_config = old.clone();
        with_config["spec"]["configSource"] = json!({"configMap": {"name": "c"}});
        assert!(create(&with_config)
            .ends_with("is not allowed to create pods with a non-nil configSource"));
        // malformed stored object
        assert!(update("nodes", "n1", &new, &json!(3)).starts_with("403"));
    }

    #[test]
    fn bound_service_account_tokens() {
        let o = objects();
        let n1 = node_user("n1");
        let token = |bound: Value| {
            let tr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": ["a"], "boundObjectRef": bound}});
            message(admit(
                &request(
                    &n1,
                    Operation::Create,
                    "serviceaccounts/token",
                    "default",
                    "sa1",
                    Some(&tr),
                    None,
                ),
                &o,
            ))
        };
        assert_eq!(
            token(json!({"apiVersion": "v1", "kind": "Pod", "name": "p1", "uid": "uid-p1"})),
            "ok"
        );
        assert_eq!(
            token(json!({"apiVersion": "v1", "kind": "Pod", "name": "p2", "uid": "uid-p2"})),
            "403 serviceaccounts \"sa1\" is forbidden: node requested token bound to a pod scheduled on a different node"
        );
        assert_eq!(
            token(json!({"apiVersion": "v1", "kind": "Pod", "name": "p1", "uid": "old"})),
            "403 serviceaccounts \"sa1\" is forbidden: the UID in the bound object reference (old) does not match the UID in record. The object might have been deleted and then recreated"
        );
        assert_eq!(
            token(json!(null)),
            "403 serviceaccounts \"sa1\" is forbidden: node requested token not bound to a pod"
        );
        assert_eq!(
            token(json!({"apiVersion": "v1", "kind": "Secret", "name": "s", "uid": "u"})),
            "403 serviceaccounts \"sa1\" is forbidden: node requested token not bound to a pod"
        );
        assert!(
            token(json!({"apiVersion": "v1", "kind": "Pod", "name": "p1"}))
                .ends_with("with a pod binding without a uid")
        );
        assert_eq!(
            token(json!({"apiVersion": "v1", "kind": "Pod", "name": "gone", "uid": "u"})),
            "404 pod \"gone\" not found"
        );
    }

    #[test]
    fn leases_csinodes_and_pvc_status() {
        let o = objects();
        let n1 = node_user("n1");
        let lease = |op: Operation, ns: &str, name: &str, body: Value| {
            message(admit(
                &request(
                    &n1,
                    op,
                    "leases.coordination.k8s.io",
                    ns,
                    name,
                    Some(&body),
                    None,
                ),
                &o,
            ))
        };
        assert_eq!(
            lease(
                Operation::Create,
                NODE_LEASE_NAMESPACE,
                "",
                json!({"metadata": {"name": "n1"}})
            ),
            "ok"
        );
        assert_eq!(
            lease(Operation::Create, NODE_LEASE_NAMESPACE, "", json!({"metadata": {"name": "n2"}})),
            "403 leases.coordination.k8s.io \"n2\" is forbidden: can only access node lease with the same name as the requesting node"
        );
        assert_eq!(
            lease(Operation::Update, NODE_LEASE_NAMESPACE, "n1", json!({})),
            "ok"
        );
        assert!(lease(Operation::Delete, NODE_LEASE_NAMESPACE, "n2", json!({})).starts_with("403"));
        assert!(lease(Operation::Update, "default", "n1", json!({}))
            .ends_with("can only access leases in the \"kube-node-lease\" system namespace"));
        let csi = |op: Operation, name: &str, body: Value| {
            message(admit(
                &request(
                    &n1,
                    op,
                    "csinodes.storage.k8s.io",
                    "",
                    name,
                    Some(&body),
                    None,
                ),
                &o,
            ))
        };
        assert_eq!(
            csi(Operation::Create, "", json!({"metadata": {"name": "n1"}})),
            "ok"
        );
        assert!(csi(Operation::Update, "n2", json!({}))
            .ends_with("can only access CSINode with the same name as the requesting node"));

        let old = json!({"metadata": {"name": "c", "namespace": "default", "resourceVersion": "1"},
                         "spec": {"volumeName": "pv1"}, "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}});
        let mut new = old.clone();
        new["metadata"]["resourceVersion"] = json!("2");
        new["status"]["capacity"] = json!({"storage": "2Gi"});
        new["status"]["conditions"] = json!([{"type": "Resizing", "status": "True"}]);
        let pvc = |res: &str, new: &Value| {
            message(admit(
                &request(
                    &n1,
                    Operation::Update,
                    res,
                    "default",
                    "c",
                    Some(new),
                    Some(&old),
                ),
                &o,
            ))
        };
        assert_eq!(pvc("persistentvolumeclaims/status", &new), "ok");
        new["metadata"]["labels"] = json!({"a": "b"});
        assert_eq!(
            pvc("persistentvolumeclaims/status", &new),
            "403 persistentvolumeclaims \"c\" is forbidden: node \"n1\" is not allowed to update fields other than status.capacity and status.conditions: .metadata.labels"
        );
        assert_eq!(
            pvc("persistentvolumeclaims", &new),
            "403 persistentvolumeclaims \"c\" is forbidden: may only update PVC status"
        );
    }

    #[test]
    fn labels() {
        for k in [
            "kubernetes.io/hostname",
            "node.kubernetes.io/instance-type",
            "a.node.kubernetes.io/b",
            "kubelet.kubernetes.io/x",
        ] {
            assert!(is_kubelet_label(k), "{k}");
        }
        let modified: BTreeSet<String> = [
            "example.com/a",
            "plain",
            "kubernetes.io/hostname",
            "foo.k8s.io/x",
            "xkubernetes.io/y",
            "a.node-restriction.kubernetes.io/b",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let f: Vec<String> = forbidden_labels(&modified).into_iter().collect();
        assert_eq!(f, ["a.node-restriction.kubernetes.io/b", "foo.k8s.io/x"]);
    }
}
