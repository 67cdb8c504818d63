//! garbagecollector: an owner graph built from every followed object's
//! ownerReferences, acting as upstream's:
//! - an object whose owners are all gone (checked against the apiserver,
//!   not only the cache) is deleted in the background; one that keeps some
//!   owners loses the references to the missing ones;
//! - an owner being deleted with the `foregroundDeletion` finalizer has its
//!   dependents deleted (foreground too) and loses the finalizer once no
//!   dependent blocks it;
//! - an owner being deleted with the `orphan` finalizer has the references
//!   to it removed from its dependents, then loses the finalizer.
//!
//! Everything is derived from the objects themselves, so dependents of an
//! owner deleted while this process was down are found when it starts.
//!
//! Followed kinds are a fixed table of built-in resources; owners of any
//! other kind are never judged missing.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use common::informers::{Change, Informers};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::mpsc;

use crate::{queue, run_workers, Ctx, Started, SyncResult};

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// A followed kind: (group, version, kind, plural, namespaced).
type Kind = (&'static str, &'static str, &'static str, &'static str, bool);

const KINDS: &[Kind] = &[
    ("", "v1", "Pod", "pods", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "Endpoints", "endpoints", true),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    ("", "v1", "Node", "nodes", false),
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "ReplicaSet", "replicasets", true),
    ("apps", "v1", "StatefulSet", "statefulsets", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    ("batch", "v1", "Job", "jobs", true),
    ("batch", "v1", "CronJob", "cronjobs", true),
    (
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
    ("coordination.k8s.io", "v1", "Lease", "leases", true),
];

fn kind_index(api_version: &str, kind: &str) -> Option<usize> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    KINDS.iter().position(|k| k.0 == group && k.2 == kind)
}

fn api_resource(k: &Kind) -> ApiResource {
    ApiResource {
        group: k.0.into(),
        version: k.1.into(),
        api_version: if k.0.is_empty() {
            k.1.into()
        } else {
            format!("{}/{}", k.0, k.1)
        },
        kind: k.2.into(),
        plural: k.3.into(),
    }
}

/// One object of the graph.
#[derive(Debug, Clone)]
struct Node {
    kind: usize,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    /// owner uid -> dependent uids
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Record an object; returns the uids whose sync may now decide something.
    fn upsert(&mut self, uid: String, node: Node) -> Vec<String> {
        if let Some(old) = self.nodes.get(&uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(&uid);
                }
            }
        }
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        let mut touched = vec![uid.clone()];
        // an owner waiting in the foreground hears about its dependents
        touched.extend(node.owners.iter().map(|o| o.uid.clone()));
        self.nodes.insert(uid, node);
        touched
    }

    fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut touched: Vec<String> = self
            .dependents
            .get(uid)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if let Some(old) = self.nodes.remove(uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                }
                touched.push(o.uid.clone());
            }
        }
        touched
    }
}

enum Event {
    Applied(String, Node),
    Deleted(String),
}

fn node_of(kind: usize, meta: &ObjectMeta) -> Option<(String, Node)> {
    let uid = meta.uid.clone()?;
    Some((
        uid,
        Node {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            owners: meta.owner_references.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
        },
    ))
}

/// Feed one kind's informer into the graph's event channel.
async fn follow<K>(informers: Arc<Informers>, kind: usize, tx: mpsc::UnboundedSender<Event>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let inf = informers.get::<K>();
    let mut changes = inf.subscribe();
    inf.wait_synced().await;
    let send_all = |tx: &mpsc::UnboundedSender<Event>| {
        for o in inf.store().state() {
            if let Some((uid, n)) = node_of(kind, o.meta()) {
                let _ = tx.send(Event::Applied(uid, n));
            }
        }
    };
    send_all(&tx);
    loop {
        match changes.recv().await {
            Ok(Change::Applied(o)) => {
                if let Some((uid, n)) = node_of(kind, o.meta()) {
                    let _ = tx.send(Event::Applied(uid, n));
                }
            }
            Ok(Change::Deleted(o)) => {
                if let Some(uid) = o.meta().uid.clone() {
                    let _ = tx.send(Event::Deleted(uid));
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => send_all(&tx),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

async fn run(ctx: Ctx) {
    use k8s_openapi::api::{
        apps::v1 as apps, batch::v1 as batch, coordination::v1 as coord, core::v1 as core,
        discovery::v1 as disc,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let i = ctx.informers.clone();
    let mut followers = Vec::new();
    macro_rules! follow_kinds {
        ($($t:ty),*) => {{
            let mut idx = 0usize;
            $(
                followers.push(tokio::spawn(follow::<$t>(i.clone(), idx, tx.clone())));
                idx += 1;
            )*
            debug_assert_eq!(idx, KINDS.len());
        }};
    }
    follow_kinds!(
        core::Pod,
        core::Service,
        core::Endpoints,
        core::ConfigMap,
        core::Secret,
        core::ServiceAccount,
        core::PersistentVolumeClaim,
        core::Node,
        apps::Deployment,
        apps::ReplicaSet,
        apps::StatefulSet,
        apps::DaemonSet,
        batch::Job,
        batch::CronJob,
        disc::EndpointSlice,
        coord::Lease
    );
    drop(tx);
    let graph = Arc::new(Mutex::new(Graph::default()));
    let q = queue();
    let feeder = {
        let (graph, q) = (graph.clone(), q.clone());
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let touched = {
                    let mut g = graph.lock().unwrap_or_else(|p| p.into_inner());
                    match ev {
                        Event::Applied(uid, n) => g.upsert(uid, n),
                        Event::Deleted(uid) => g.remove(&uid),
                    }
                };
                for t in touched {
                    q.add(t);
                }
            }
        })
    };
    let client = ctx.client.clone();
    run_workers(
        "garbagecollector",
        q,
        ctx.settings.concurrent_gc_syncs,
        ctx.stop.clone(),
        move |uid| {
            let (client, graph) = (client.clone(), graph.clone());
            async move { sync(&client, &graph, &uid).await }
        },
    )
    .await;
    feeder.abort();
    for f in followers {
        f.abort();
    }
}

fn api_for(client: &kube::Client, kind: usize, ns: Option<&str>) -> Api<DynamicObject> {
    let ar = api_resource(&KINDS[kind]);
    match ns {
        Some(ns) if KINDS[kind].4 => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

/// Is the owner really gone? The cache may lag behind a just-created owner,
/// so ask the apiserver (by name, comparing the uid).
async fn owner_absent(
    client: &kube::Client,
    owner: &OwnerReference,
    ns: Option<&str>,
) -> anyhow::Result<bool> {
    let Some(kind) = kind_index(&owner.api_version, &owner.kind) else {
        // an owner we do not follow is never judged missing
        return Ok(false);
    };
    match api_for(client, kind, ns).get_opt(&owner.name).await? {
        Some(o) => Ok(o.metadata.uid.as_deref() != Some(owner.uid.as_str())),
        None => Ok(true),
    }
}

async fn delete(
    client: &kube::Client,
    uid: &str,
    n: &Node,
    policy: PropagationPolicy,
) -> anyhow::Result<()> {
    let dp = DeleteParams {
        propagation_policy: Some(policy),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api_for(client, n.kind, n.namespace.as_deref())
        .delete(&n.name, &dp)
        .await
    {
        Ok(_) => {
            tracing::info!(kind = KINDS[n.kind].2, name = %n.name, namespace = ?n.namespace, "garbage collected");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Rewrite an object's ownerReferences or finalizers, guarded by its resourceVersion.
async fn patch_meta(
    client: &kube::Client,
    n: &Node,
    edit: impl Fn(&mut ObjectMeta),
) -> anyhow::Result<()> {
    let api = api_for(client, n.kind, n.namespace.as_deref());
    let Some(obj) = api.get_opt(&n.name).await? else {
        return Ok(());
    };
    let mut meta = obj.metadata.clone();
    edit(&mut meta);
    let patch = json!({"metadata": {
        "resourceVersion": obj.metadata.resource_version,
        "ownerReferences": meta.owner_references.unwrap_or_default(),
        "finalizers": meta.finalizers.unwrap_or_default(),
    }});
    match api
        .patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn sync(client: &kube::Client, graph: &Mutex<Graph>, uid: &str) -> SyncResult {
    let (node, dependents) = {
        let g = graph.lock().unwrap_or_else(|p| p.into_inner());
        let Some(n) = g.nodes.get(uid).cloned() else {
            return Ok(None);
        };
        let deps: Vec<(String, Node)> = g
            .dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| g.nodes.get(d).map(|n| (d.clone(), n.clone())))
            .collect();
        (n, deps)
    };
    if node.deleting && node.finalizers.iter().any(|f| f == ORPHAN) {
        for (_, d) in &dependents {
            patch_meta(client, d, |m| {
                if let Some(o) = m.owner_references.as_mut() {
                    o.retain(|r| r.uid != uid);
                }
            })
            .await?;
        }
        patch_meta(client, &node, |m| {
            if let Some(f) = m.finalizers.as_mut() {
                f.retain(|x| x != ORPHAN);
            }
        })
        .await?;
        return Ok(None);
    }
    if node.deleting && node.finalizers.iter().any(|f| f == FOREGROUND) {
        let mut blocking = false;
        for (duid, d) in &dependents {
            let blocks = d
                .owners
                .iter()
                .any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
            blocking |= blocks;
            if !d.deleting {
                delete(client, duid, d, PropagationPolicy::Foreground).await?;
            }
        }
        if !blocking {
            patch_meta(client, &node, |m| {
                if let Some(f) = m.finalizers.as_mut() {
                    f.retain(|x| x != FOREGROUND);
                }
            })
            .await?;
        }
        return Ok(None);
    }
    if node.owners.is_empty() {
        return Ok(None);
    }
    // which owners are gone?
    let mut absent = Vec::new();
    for o in &node.owners {
        let in_graph = graph
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .nodes
            .contains_key(&o.uid);
        if !in_graph && owner_absent(client, o, node.namespace.as_deref()).await? {
            absent.push(o.uid.clone());
        }
    }
    if absent.is_empty() {
        return Ok(None);
    }
    if absent.len() == node.owners.len() {
        if !node.deleting {
            delete(client, uid, &node, PropagationPolicy::Background).await?;
        }
    } else {
        patch_meta(client, &node, |m| {
            if let Some(o) = m.owner_references.as_mut() {
                o.retain(|r| !absent.contains(&r.uid));
            }
        })
        .await?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(owners: &[&str]) -> Node {
        Node {
            kind: 0,
            namespace: Some("d".into()),
            name: "x".into(),
            owners: owners
                .iter()
                .map(|u| OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "rs".into(),
                    uid: u.to_string(),
                    ..Default::default()
                })
                .collect(),
            deleting: false,
            finalizers: Vec::new(),
        }
    }

    #[test]
    fn the_graph_tracks_dependents() {
        let mut g = Graph::default();
        g.upsert("rs".into(), node(&[]));
        let touched = g.upsert("p1".into(), node(&["rs"]));
        assert_eq!(touched, vec!["p1".to_string(), "rs".to_string()]);
        g.upsert("p2".into(), node(&["rs"]));
        assert_eq!(g.dependents["rs"].len(), 2);
        // an owner going away concerns its dependents
        let mut touched = g.remove("rs");
        touched.sort();
        assert_eq!(touched, vec!["p1".to_string(), "p2".to_string()]);
        // a dependent changing owners moves in the index
        g.upsert("p1".into(), node(&["other"]));
        assert!(!g.dependents["rs"].contains("p1"));
        assert!(g.dependents["other"].contains("p1"));
    }

    #[test]
    fn kinds_by_api_version() {
        assert_eq!(
            kind_index("apps/v1", "ReplicaSet").map(|i| KINDS[i].3),
            Some("replicasets")
        );
        assert_eq!(kind_index("v1", "Pod").map(|i| KINDS[i].3), Some("pods"));
        assert_eq!(kind_index("example.com/v1", "Widget"), None);
    }
}
