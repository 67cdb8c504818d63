//! resourcequota-controller: every ResourceQuota's `status.hard` follows its
//! `spec.hard`, and its `status.used` is recomputed from the objects of its
//! namespace that its scopes select (what `quota::usage` says each counts),
//! as upstream's:
//! - a quota is synced when it appears or its `spec.hard` changes (ahead of
//!   the rest when its status does not yet reflect its spec, or a constraint
//!   has no usage yet), but not when only its status changes;
//! - a change to a tracked object (created, deleted, or updated so that what
//!   it counts changes: a pod going Succeeded/Failed, a Service changing
//!   type) re-syncs the quotas of its namespace tracking that kind
//!   ("replenishment": deletions give back what the apiserver's admission
//!   charged at creation);
//! - every `--resource-quota-sync-period` (5m) every quota is recomputed.
//!
//! Usage is always recomputed from the objects, never added to: the
//! apiserver's ResourceQuota admission raises `status.used` on creates, and
//! a write of ours based on an older quota fails on its resourceVersion and
//! is retried. Resource names no tracked kind counts (`count/` of a kind this
//! controller does not watch) keep whatever `status.used` admission gave them.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use common::informers::{Change, Informers};
use common::workqueue::WorkQueue;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota, Secret, Service,
};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;
use quota::Usage;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::{key_of, queue, run_workers, split_key, Ctx, Started, SyncResult};

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

/// Could objects of `group`/`plural` count towards quota resource `name`?
/// (upstream's evaluators' MatchingResources, for the kinds watched here)
pub fn kind_tracks(group: &str, plural: &str, name: &str) -> bool {
    if name == quota::count_name(group, plural) {
        return true;
    }
    if !group.is_empty() {
        return false;
    }
    match plural {
        "pods" => {
            matches!(
                name,
                "pods"
                    | "cpu"
                    | "memory"
                    | "ephemeral-storage"
                    | "limits.cpu"
                    | "limits.memory"
                    | "limits.ephemeral-storage"
            ) || name
                .strip_prefix("requests.")
                .is_some_and(|r| !r.is_empty() && r != "storage")
        }
        "services" => name == "services" || name.starts_with("services."),
        "persistentvolumeclaims" => {
            matches!(name, "persistentvolumeclaims" | "requests.storage")
                || name.contains(".storageclass.storage.k8s.io/")
        }
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => name == plural,
        _ => false,
    }
}

/// The resource names a quota constrains (spec and status).
fn constrained(q: &Value) -> Vec<String> {
    let mut names: Vec<String> = quota::amounts(q.pointer("/spec/hard"))
        .into_keys()
        .chain(quota::amounts(q.pointer("/status/hard")).into_keys())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Should the quota be synced ahead of the others: its status does not yet
/// show its spec, or a constraint `known` can compute has no usage yet.
pub fn needs_priority(q: &Value, known: impl Fn(&str) -> bool) -> bool {
    let status_hard = q.pointer("/status/hard");
    if quota::amounts(q.pointer("/spec/hard")) != quota::amounts(status_hard) {
        return true;
    }
    let used = quota::amounts(q.pointer("/status/used"));
    quota::amounts(status_hard)
        .keys()
        .any(|k| !used.contains_key(k) && known(k))
}

/// The status the quota should have, given `computed` (the usage of the
/// objects it selects, for every resource name `known` can compute), or None
/// when its status already says so.
pub fn new_status(q: &Value, computed: &Usage, known: impl Fn(&str) -> bool) -> Option<Value> {
    let spec_hard = q.pointer("/spec/hard");
    let status_hard = q.pointer("/status/hard");
    let status_used = q.pointer("/status/used");
    let hard = quota::amounts(spec_hard);
    let old_used = quota::amounts(status_used);
    let mut used = Usage::new();
    for name in hard.keys() {
        if known(name) {
            used.insert(name.clone(), computed.get(name).copied().unwrap_or(0));
        } else if let Some(v) = old_used.get(name) {
            // nothing here counts it: keep what admission charged
            used.insert(name.clone(), *v);
        }
    }
    let dirty = status_hard.is_none_or(Value::is_null)
        || status_used.is_none_or(Value::is_null)
        || hard != quota::amounts(status_hard)
        || used != old_used;
    if !dirty {
        return None;
    }
    let shown: Usage = hard
        .iter()
        .filter(|(k, _)| used.contains_key(*k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let spec_hard = spec_hard
        .filter(|v| v.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    Some(json!({"hard": spec_hard, "used": quota::to_json(&used, &shown)}))
}

/// The objects of one kind in a namespace, as JSON.
type Lister = Arc<dyn Fn(&str) -> Vec<Value> + Send + Sync>;

/// A kind whose objects count against quotas.
#[derive(Clone)]
pub struct Kind {
    pub group: &'static str,
    pub plural: &'static str,
    pub list: Lister,
}

/// What the objects of `ns` that quota `q` selects count, for the resource
/// names it constrains (kinds it does not constrain are not listed).
pub fn usage_in(q: &Value, ns: &str, kinds: &[Kind]) -> Usage {
    let names = constrained(q);
    let mut total = Usage::new();
    for k in kinds {
        if !names.iter().any(|n| kind_tracks(k.group, k.plural, n)) {
            continue;
        }
        for obj in (k.list)(ns) {
            if !quota::scopes_match(q, k.group, k.plural, &obj) {
                continue;
            }
            for (name, v) in quota::usage(k.group, k.plural, &obj) {
                *total.entry(name).or_insert(0) += v;
            }
        }
    }
    total
}

/// Routes changes to quotas and tracked objects to the quotas' keys.
struct Feed {
    quotas: Store<ResourceQuota>,
    /// quotas synced in order
    primary: Arc<WorkQueue<String>>,
    /// quotas whose status does not yet reflect their spec
    missing: Arc<WorkQueue<String>>,
    /// the tracked kinds (to tell which names can be computed)
    kinds: Vec<(&'static str, &'static str)>,
    /// spec.hard last seen per quota key
    specs: Mutex<HashMap<String, Usage>>,
    /// a digest of what each tracked object counted when last seen
    counted: Mutex<HashMap<String, u64>>,
}

impl Feed {
    fn known(&self, name: &str) -> bool {
        self.kinds.iter().any(|(g, p)| kind_tracks(g, p, name))
    }

    /// upstream's addQuota: priority when the status lags the spec.
    fn add_quota(&self, q: &ResourceQuota) {
        let key = key_of(&q.metadata);
        let v = serde_json::to_value(q).unwrap_or_default();
        if needs_priority(&v, |n| self.known(n)) {
            self.missing.add(key);
        } else {
            self.primary.add(key);
        }
    }

    fn quota_changed(&self, change: Change<ResourceQuota>) {
        let mut specs = self.specs.lock().unwrap_or_else(|p| p.into_inner());
        match change {
            Change::Applied(q) => {
                let key = key_of(&q.metadata);
                let hard = quota::amounts(
                    serde_json::to_value(&q.spec)
                        .ok()
                        .as_ref()
                        .and_then(|s| s.get("hard")),
                );
                // a status update (ours, or admission's charge) is no reason
                if specs.insert(key, hard.clone()).as_ref() != Some(&hard) {
                    self.add_quota(&q);
                }
            }
            Change::Deleted(q) => {
                let key = key_of(&q.metadata);
                specs.remove(&key);
                self.primary.add(key);
            }
        }
    }

    /// Every quota, as after a lost change or at a full resync.
    fn all(&self) {
        for q in self.quotas.state() {
            self.primary.add(key_of(&q.metadata));
        }
    }

    /// The quotas of `ns` that constrain something `group/plural` counts
    /// (key, and the quota as JSON).
    fn tracking(&self, group: &str, plural: &str, ns: &str) -> Vec<(String, Value)> {
        self.quotas
            .state()
            .iter()
            .filter(|q| q.metadata.namespace.as_deref() == Some(ns))
            .filter_map(|q| {
                let v = serde_json::to_value(&**q).ok()?;
                constrained(&v)
                    .iter()
                    .any(|n| kind_tracks(group, plural, n))
                    .then(|| (key_of(&q.metadata), v))
            })
            .collect()
    }

    /// A tracked object was created, updated or deleted: its namespace's
    /// quotas are recomputed if what it counts changed.
    fn object_changed<K: Resource + Serialize>(
        &self,
        group: &str,
        plural: &str,
        obj: &K,
        deleted: bool,
    ) {
        let meta = obj.meta();
        let ns = meta.namespace.as_deref().unwrap_or_default();
        let id = format!("{group}/{plural}/{}", key_of(meta));
        let quotas = self.tracking(group, plural, ns);
        let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        if deleted {
            counted.remove(&id);
            drop(counted);
            quotas.into_iter().for_each(|(k, _)| self.primary.add(k));
            return;
        }
        if quotas.is_empty() {
            // nothing to replenish; seen again later, it counts as new
            counted.remove(&id);
            return;
        }
        let v = serde_json::to_value(obj).unwrap_or_default();
        let digest = digest(group, plural, &v, &quotas);
        if counted.insert(id, digest) != Some(digest) {
            drop(counted);
            quotas.into_iter().for_each(|(k, _)| self.primary.add(k));
        }
    }
}

/// What an object counts, and which of `quotas` select it, as one number.
fn digest(group: &str, plural: &str, obj: &Value, quotas: &[(String, Value)]) -> u64 {
    let mut h = DefaultHasher::new();
    quota::usage(group, plural, obj).hash(&mut h);
    for (k, q) in quotas {
        (k, quota::scopes_match(q, group, plural, obj)).hash(&mut h);
    }
    h.finish()
}

/// One watched kind: its lister, the task feeding its changes, and a wait
/// for its cache to fill.
type Tracked = (Kind, JoinHandle<()>, Started);

/// Watch one kind (the process's shared informer): its changes go to `feed`.
fn track<K>(
    informers: &Informers,
    group: &'static str,
    plural: &'static str,
    feed: Arc<Feed>,
) -> Tracked
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static,
{
    let inf = informers.get::<K>();
    let mut changes = inf.subscribe();
    let feeder = tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(Change::Applied(o)) => feed.object_changed(group, plural, &*o, false),
                Ok(Change::Deleted(o)) => feed.object_changed(group, plural, &*o, true),
                Err(RecvError::Lagged(_)) => feed.all(),
                Err(RecvError::Closed) => return,
            }
        }
    });
    let store = inf.store();
    let list: Lister = Arc::new(move |ns: &str| {
        store
            .state()
            .iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(ns))
            .filter_map(|o| serde_json::to_value(&**o).ok())
            .collect()
    });
    let synced: Started = Box::pin(async move { inf.wait_synced().await });
    (
        Kind {
            group,
            plural,
            list,
        },
        feeder,
        synced,
    )
}

/// Is core/v1 `replicationcontrollers` served?
async fn serves_replication_controllers(client: &kube::Client) -> bool {
    match client.list_core_api_resources("v1").await {
        Ok(list) => list
            .resources
            .iter()
            .any(|r| r.name == "replicationcontrollers"),
        Err(e) => {
            tracing::warn!(error = %e, "discovery of core/v1 failed; not counting replicationcontrollers");
            false
        }
    }
}

async fn run(ctx: Ctx) {
    let quotas = ctx.informers.get::<ResourceQuota>();
    let mut quota_changes = quotas.subscribe();
    let rc = serves_replication_controllers(&ctx.client).await;
    let mut names: Vec<(&'static str, &'static str)> = vec![
        ("", "pods"),
        ("", "services"),
        ("", "configmaps"),
        ("", "secrets"),
        ("", "persistentvolumeclaims"),
        ("", "resourcequotas"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    ];
    if rc {
        names.push(("", "replicationcontrollers"));
    }
    let feed = Arc::new(Feed {
        quotas: quotas.store(),
        primary: queue(),
        missing: queue(),
        kinds: names,
        specs: Mutex::new(HashMap::new()),
        counted: Mutex::new(HashMap::new()),
    });
    let quota_feeder = {
        let feed = feed.clone();
        tokio::spawn(async move {
            loop {
                match quota_changes.recv().await {
                    Ok(c) => feed.quota_changed(c),
                    Err(RecvError::Lagged(_)) => feed.all(),
                    Err(RecvError::Closed) => return,
                }
            }
        })
    };
    let i = &ctx.informers;
    let f = || feed.clone();
    let mut tracked = vec![
        track::<Pod>(i, "", "pods", f()),
        track::<Service>(i, "", "services", f()),
        track::<ConfigMap>(i, "", "configmaps", f()),
        track::<Secret>(i, "", "secrets", f()),
        track::<PersistentVolumeClaim>(i, "", "persistentvolumeclaims", f()),
        track::<ResourceQuota>(i, "", "resourcequotas", f()),
        track::<Deployment>(i, "apps", "deployments", f()),
        track::<ReplicaSet>(i, "apps", "replicasets", f()),
        track::<StatefulSet>(i, "apps", "statefulsets", f()),
        track::<DaemonSet>(i, "apps", "daemonsets", f()),
        track::<Job>(i, "batch", "jobs", f()),
        track::<CronJob>(i, "batch", "cronjobs", f()),
    ];
    if rc {
        tracked.push(track::<ReplicationController>(
            i,
            "",
            "replicationcontrollers",
            f(),
        ));
    }
    let mut kinds = Vec::new();
    let mut feeders = Vec::new();
    let mut waits = Vec::new();
    for (k, feeder, synced) in tracked {
        kinds.push(k);
        feeders.push(feeder);
        waits.push(synced);
    }
    // only count once every cache is full, as upstream
    let mut stop = ctx.stop.clone();
    tokio::select! {
        _ = futures::future::join_all(waits) => {}
        _ = common::stopped(&mut stop) => {
            quota_feeder.abort();
            feeders.iter().for_each(JoinHandle::abort);
            return;
        }
    }
    // every quota once the caches (the quotas' among them) are full
    for q in quotas.store().state() {
        feed.add_quota(&q);
    }
    let period = ctx.settings.resource_quota_sync_period;
    let resync = {
        let (feed, mut stop) = (feed.clone(), ctx.stop.clone());
        tokio::spawn(async move {
            if period.is_zero() {
                return;
            }
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => feed.all(),
                    _ = common::stopped(&mut stop) => return,
                }
            }
        })
    };
    let kinds = Arc::new(kinds);
    let (client, store) = (ctx.client.clone(), quotas.store());
    let sync = move |key: String| {
        let (client, store, kinds) = (client.clone(), store.clone(), kinds.clone());
        async move { sync(&client, &store, &kinds, &key).await }
    };
    let workers = ctx.settings.concurrent_resource_quota_syncs;
    tokio::join!(
        run_workers(
            "resourcequota",
            feed.primary.clone(),
            workers,
            ctx.stop.clone(),
            sync.clone(),
        ),
        run_workers(
            "resourcequota_priority",
            feed.missing.clone(),
            workers,
            ctx.stop.clone(),
            sync,
        ),
    );
    resync.abort();
    quota_feeder.abort();
    feeders.iter().for_each(JoinHandle::abort);
}

/// Recompute one quota's usage and write its status if it changed.
async fn sync(
    client: &kube::Client,
    quotas: &Store<ResourceQuota>,
    kinds: &[Kind],
    key: &str,
) -> SyncResult {
    let (ns, name) = split_key(key);
    let Some(rq) = quotas.get(&ObjectRef::new(name).within(ns)) else {
        return Ok(None);
    };
    let q = serde_json::to_value(&*rq)?;
    let used = usage_in(&q, ns, kinds);
    let known = |n: &str| kinds.iter().any(|k| kind_tracks(k.group, k.plural, n));
    let Some(status) = new_status(&q, &used, known) else {
        return Ok(None);
    };
    let mut updated = (*rq).clone();
    updated.status = Some(serde_json::from_value(status)?);
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
    match api
        .replace_status(name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => {
            tracing::debug!(quota = key, "updated quota usage");
            Ok(None)
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        // 409: the quota changed meanwhile (admission charged it): again, from the newer one
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NANO: i128 = 1_000_000_000;

    fn all_known(n: &str) -> bool {
        [
            ("", "pods"),
            ("", "services"),
            ("", "configmaps"),
            ("apps", "deployments"),
        ]
        .iter()
        .any(|(g, p)| kind_tracks(g, p, n))
    }

    #[test]
    fn which_kinds_count_what() {
        assert!(kind_tracks("", "pods", "pods"));
        assert!(kind_tracks("", "pods", "count/pods"));
        assert!(kind_tracks("", "pods", "requests.cpu"));
        assert!(kind_tracks("", "pods", "requests.nvidia.com/gpu"));
        assert!(kind_tracks("", "pods", "memory"));
        assert!(kind_tracks("", "pods", "limits.memory"));
        assert!(!kind_tracks("", "pods", "requests.storage"));
        assert!(!kind_tracks("", "pods", "services"));
        assert!(kind_tracks("", "services", "services.nodeports"));
        assert!(kind_tracks(
            "",
            "persistentvolumeclaims",
            "fast.storageclass.storage.k8s.io/requests.storage"
        ));
        assert!(kind_tracks(
            "",
            "persistentvolumeclaims",
            "requests.storage"
        ));
        assert!(kind_tracks("", "secrets", "secrets"));
        assert!(kind_tracks("apps", "deployments", "count/deployments.apps"));
        assert!(!kind_tracks("apps", "deployments", "deployments"));
        assert!(!kind_tracks("apps", "deployments", "count/deployments"));
        assert!(!kind_tracks("", "configmaps", "count/deployments.apps"));
    }

    fn quota(status: Value) -> Value {
        json!({
            "metadata": {"name": "q", "namespace": "d"},
            "spec": {"hard": {"pods": "2", "requests.cpu": "1", "count/deployments.apps": "1",
                              "count/widgets.example.com": "3"}},
            "status": status,
        })
    }

    #[test]
    fn a_new_quota_gets_hard_and_zero_usage() {
        let q = quota(Value::Null);
        assert!(needs_priority(&q, all_known));
        let s = new_status(&q, &Usage::new(), all_known).expect("dirty");
        assert_eq!(s["hard"], q["spec"]["hard"]);
        // a name nothing here counts stays unknown until admission charges it
        assert_eq!(
            s["used"],
            json!({"count/deployments.apps": "0", "pods": "0", "requests.cpu": "0"})
        );
    }

    #[test]
    fn usage_is_recomputed_not_added() {
        let q = quota(json!({
            "hard": {"pods": "2", "requests.cpu": "1", "count/deployments.apps": "1",
                     "count/widgets.example.com": "3"},
            // admission charged a pod since; widgets are not watched here
            "used": {"pods": "2", "requests.cpu": "500m", "count/deployments.apps": "0",
                     "count/widgets.example.com": "2"},
        }));
        assert!(!needs_priority(&q, all_known));
        let computed: Usage = [
            ("pods".to_string(), NANO),
            ("requests.cpu".to_string(), 250_000_000),
            ("count/deployments.apps".to_string(), NANO),
            ("configmaps".to_string(), 4 * NANO),
        ]
        .into();
        let s = new_status(&q, &computed, all_known).expect("dirty");
        assert_eq!(
            s["used"],
            json!({"count/deployments.apps": "1", "count/widgets.example.com": "2",
                   "pods": "1", "requests.cpu": "250m"})
        );
        // written back, it is what it should be: nothing to do
        let mut again = q.clone();
        again["status"] = s;
        assert_eq!(new_status(&again, &computed, all_known), None);
    }

    #[test]
    fn a_changed_spec_is_a_priority_and_rewrites_hard() {
        let mut q = quota(json!({
            "hard": {"pods": "2", "requests.cpu": "1", "count/deployments.apps": "1",
                     "count/widgets.example.com": "3"},
            "used": {"pods": "0", "requests.cpu": "0", "count/deployments.apps": "0"},
        }));
        assert!(!needs_priority(&q, all_known));
        assert_eq!(new_status(&q, &Usage::new(), all_known), None);
        q["spec"]["hard"] = json!({"pods": "5", "configmaps": "1"});
        assert!(needs_priority(&q, all_known));
        let s = new_status(&q, &Usage::new(), all_known).expect("dirty");
        assert_eq!(s["hard"], json!({"pods": "5", "configmaps": "1"}));
        assert_eq!(s["used"], json!({"configmaps": "0", "pods": "0"}));
        // the same amounts written differently are not a change
        let mut same = q.clone();
        same["status"] = json!({"hard": {"pods": "5000m", "configmaps": "1"},
                                "used": {"configmaps": "0", "pods": "0"}});
        assert!(!needs_priority(&same, all_known));
        assert_eq!(new_status(&same, &Usage::new(), all_known), None);
        // a constraint without usage is a priority
        let mut missing = same.clone();
        missing["status"]["used"] = json!({"pods": "0"});
        assert!(needs_priority(&missing, all_known));
    }

    fn lister(objs: Vec<Value>) -> Lister {
        Arc::new(move |ns: &str| {
            objs.iter()
                .filter(|o| o["metadata"]["namespace"] == ns)
                .cloned()
                .collect()
        })
    }

    #[test]
    fn usage_of_the_selected_objects_of_the_namespace() {
        let pod = |name: &str, ns: &str, cpu: &str, phase: &str| {
            json!({"metadata": {"name": name, "namespace": ns},
                   "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
                   "status": {"phase": phase}})
        };
        let kinds = vec![
            Kind {
                group: "",
                plural: "pods",
                list: lister(vec![
                    pod("a", "d", "250m", "Running"),
                    pod("b", "d", "500m", "Pending"),
                    pod("c", "d", "1", "Succeeded"),
                    pod("x", "other", "1", "Running"),
                ]),
            },
            Kind {
                group: "apps",
                plural: "deployments",
                list: lister(vec![json!({"metadata": {"name": "w", "namespace": "d"}})]),
            },
            Kind {
                group: "",
                plural: "configmaps",
                list: Arc::new(|_: &str| -> Vec<Value> { panic!("not constrained: not listed") }),
            },
        ];
        let u = usage_in(&quota(Value::Null), "d", &kinds);
        assert_eq!(u["pods"], 2 * NANO);
        assert_eq!(u["requests.cpu"], 750_000_000);
        assert_eq!(u["count/deployments.apps"], NANO);
        // a scoped quota selects pods only
        let mut scoped = quota(Value::Null);
        scoped["spec"]["scopes"] = json!(["NotBestEffort"]);
        let u = usage_in(&scoped, "d", &kinds);
        assert_eq!(u["pods"], 2 * NANO);
        assert!(!u.contains_key("count/deployments.apps"));
    }

    #[test]
    fn digests_change_with_what_an_object_counts() {
        let q = quota(Value::Null);
        let quotas = vec![("d/q".to_string(), q)];
        let running =
            json!({"spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running"}});
        let mut ready = running.clone();
        ready["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        let mut done = running.clone();
        done["status"]["phase"] = json!("Succeeded");
        let d = |o: &Value| digest("", "pods", o, &quotas);
        assert_eq!(d(&running), d(&ready));
        assert_ne!(d(&running), d(&done));
    }
}
