//! kube-controller-manager: control loops registered in one table, selected
//! with upstream's `--controllers`, sharing one informer cache, each driven by
//! a work queue of object keys with upstream's retry semantics.

pub mod cronjob;
pub mod csr;
pub mod csrapproving;
pub mod csrcleaner;
pub mod csrsigning;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod garbagecollector;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod rootca;
pub mod sacredentials;
pub mod serviceaccount;
pub mod statefulset;
pub mod tokencleaner;
pub mod ttlafterfinished;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use common::informers::{Change, Informer, Informers};
use common::workqueue::{RateLimits, WorkQueue};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use tokio::sync::watch;

/// What every controller is given.
#[derive(Clone)]
pub struct Ctx {
    pub client: kube::Client,
    pub informers: Arc<Informers>,
    pub settings: Arc<Settings>,
    pub stop: watch::Receiver<bool>,
}

/// The flags controllers read.
#[derive(Debug, Clone)]
pub struct Settings {
    pub concurrent_endpoint_syncs: usize,
    pub concurrent_service_endpoint_syncs: usize,
    pub concurrent_serviceaccount_syncs: usize,
    pub concurrent_replicaset_syncs: usize,
    pub concurrent_deployment_syncs: usize,
    pub concurrent_gc_syncs: usize,
    pub concurrent_namespace_syncs: usize,
    pub max_endpoints_per_slice: usize,
    pub node_monitor_period: Duration,
    pub node_monitor_grace_period: Duration,
    pub node_eviction_rate: f64,
    pub secondary_node_eviction_rate: f64,
    pub unhealthy_zone_threshold: f64,
    pub large_cluster_size_threshold: usize,
    /// node pod CIDRs to hand out (--allocate-node-cidrs with --cluster-cidr)
    pub node_cidrs: Option<nodeipam::Ranges>,
    /// terminated pods kept before the oldest are deleted (0: no limit)
    pub terminated_pod_gc_threshold: usize,
    pub concurrent_job_syncs: usize,
    pub concurrent_daemonset_syncs: usize,
    pub concurrent_cron_job_syncs: usize,
    pub concurrent_statefulset_syncs: usize,
    /// how often every PersistentVolume and claim is synced again
    pub pvclaimbinder_sync_period: Duration,
    /// the CA bundle published as kube-root-ca.crt (--root-ca-file)
    pub root_ca: Option<String>,
    pub concurrent_resource_quota_syncs: usize,
    /// how often every ResourceQuota's usage is recomputed in full
    pub resource_quota_sync_period: Duration,
    /// the CA files of each built-in signer (none: csrsigning does nothing)
    pub csr_signers: Vec<csrsigning::SignerFiles>,
    /// the longest certificate csrsigning issues (--cluster-signing-duration)
    pub cluster_signing_duration: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrent_endpoint_syncs: 5,
            concurrent_service_endpoint_syncs: 5,
            concurrent_serviceaccount_syncs: 5,
            concurrent_replicaset_syncs: 5,
            concurrent_deployment_syncs: 5,
            concurrent_gc_syncs: 20,
            concurrent_namespace_syncs: 10,
            max_endpoints_per_slice: 100,
            node_monitor_period: Duration::from_secs(5),
            node_monitor_grace_period: Duration::from_secs(40),
            node_eviction_rate: 0.1,
            secondary_node_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_size_threshold: 50,
            node_cidrs: None,
            terminated_pod_gc_threshold: 12500,
            concurrent_job_syncs: 5,
            concurrent_daemonset_syncs: 2,
            concurrent_cron_job_syncs: 5,
            concurrent_statefulset_syncs: 5,
            pvclaimbinder_sync_period: Duration::from_secs(15),
            root_ca: None,
            concurrent_resource_quota_syncs: 5,
            resource_quota_sync_period: Duration::from_secs(300),
            csr_signers: Vec::new(),
            cluster_signing_duration: Duration::from_secs(8760 * 3600),
        }
    }
}

pub type Started = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One row of the controller table.
pub struct Entry {
    /// upstream's name, as `--controllers` spells it
    pub name: &'static str,
    pub start: fn(Ctx) -> Started,
}

/// Every controller this binary has, in upstream's names.
pub const CONTROLLERS: &[Entry] = &[
    Entry {
        name: "certificatesigningrequest-approving-controller",
        start: csrapproving::start,
    },
    Entry {
        name: "certificatesigningrequest-cleaner-controller",
        start: csrcleaner::start,
    },
    Entry {
        name: "certificatesigningrequest-signing-controller",
        start: csrsigning::start,
    },
    Entry {
        name: "cronjob-controller",
        start: cronjob::start,
    },
    Entry {
        name: "daemonset-controller",
        start: daemonset::start,
    },
    Entry {
        name: "deployment-controller",
        start: deployment::start,
    },
    Entry {
        name: "endpoints-controller",
        start: endpoints::start,
    },
    Entry {
        name: "endpointslice-controller",
        start: endpointslice::start,
    },
    Entry {
        name: "garbage-collector-controller",
        start: garbagecollector::start,
    },
    Entry {
        name: "job-controller",
        start: job::start,
    },
    Entry {
        name: "namespace-controller",
        start: namespace::start,
    },
    Entry {
        name: "node-ipam-controller",
        start: nodeipam::start,
    },
    Entry {
        name: "node-lifecycle-controller",
        start: nodelifecycle::start,
    },
    Entry {
        name: "persistentvolume-binder-controller",
        start: persistentvolume::start,
    },
    Entry {
        name: "pod-garbage-collector-controller",
        start: podgc::start,
    },
    Entry {
        name: "replicaset-controller",
        start: replicaset::start,
    },
    Entry {
        name: "resourcequota-controller",
        start: resourcequota::start,
    },
    Entry {
        name: "root-ca-certificate-publisher-controller",
        start: rootca::start,
    },
    Entry {
        name: "serviceaccount-controller",
        start: serviceaccount::start,
    },
    Entry {
        name: "statefulset-controller",
        start: statefulset::start,
    },
    Entry {
        name: "taint-eviction-controller",
        start: nodelifecycle::start_taint_eviction,
    },
    Entry {
        name: "token-cleaner-controller",
        start: tokencleaner::start,
    },
    Entry {
        name: "ttl-after-finished-controller",
        start: ttlafterfinished::start,
    },
];

/// Controllers `*` leaves out: they run only when named, as upstream's.
pub const DISABLED_BY_DEFAULT: &[&str] = &["token-cleaner-controller"];

/// Upstream's older controller names, still accepted by `--controllers`.
pub const ALIASES: &[(&str, &str)] = &[
    (
        "csrapproving",
        "certificatesigningrequest-approving-controller",
    ),
    ("csrcleaner", "certificatesigningrequest-cleaner-controller"),
    ("csrsigning", "certificatesigningrequest-signing-controller"),
    ("cronjob", "cronjob-controller"),
    ("daemonset", "daemonset-controller"),
    ("deployment", "deployment-controller"),
    ("endpoint", "endpoints-controller"),
    ("endpointslice", "endpointslice-controller"),
    ("garbagecollector", "garbage-collector-controller"),
    ("job", "job-controller"),
    ("namespace", "namespace-controller"),
    ("nodeipam", "node-ipam-controller"),
    ("nodelifecycle", "node-lifecycle-controller"),
    (
        "persistentvolume-binder",
        "persistentvolume-binder-controller",
    ),
    ("podgc", "pod-garbage-collector-controller"),
    ("replicaset", "replicaset-controller"),
    ("resourcequota", "resourcequota-controller"),
    (
        "root-ca-cert-publisher",
        "root-ca-certificate-publisher-controller",
    ),
    ("serviceaccount", "serviceaccount-controller"),
    ("statefulset", "statefulset-controller"),
    ("tokencleaner", "token-cleaner-controller"),
    ("ttl-after-finished", "ttl-after-finished-controller"),
];

/// Which controllers `--controllers` turns on: `*` for all defaults (all but
/// [`DISABLED_BY_DEFAULT`]), `name`
/// to add one, `-name` to remove one (names or their aliases). Unknown names
/// are an error, as upstream.
pub fn selected(spec: &[String]) -> Result<Vec<&'static Entry>, String> {
    let known = |n: &str| CONTROLLERS.iter().any(|e| e.name == n);
    let canonical = |n: &str| -> String {
        let (minus, name) = match n.strip_prefix('-') {
            Some(rest) => ("-", rest),
            None => ("", n),
        };
        let name = ALIASES
            .iter()
            .find(|(alias, _)| *alias == name)
            .map_or(name, |(_, c)| *c);
        format!("{minus}{name}")
    };
    let spec: Vec<String> = spec.iter().map(|s| canonical(s)).collect();
    for s in &spec {
        let n = s.trim_start_matches('-');
        if n != "*" && !known(n) {
            return Err(format!(
                "--controllers: {s:?} is not a known controller (known: {})",
                CONTROLLERS
                    .iter()
                    .map(|e| e.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let star = spec.iter().any(|s| s == "*");
    Ok(CONTROLLERS
        .iter()
        .filter(|e| {
            if spec.iter().any(|s| s.strip_prefix('-') == Some(e.name)) {
                return false;
            }
            (star && !DISABLED_BY_DEFAULT.contains(&e.name)) || spec.iter().any(|s| s == e.name)
        })
        .collect())
}

/// What a sync asks for next.
pub type SyncResult = anyhow::Result<Option<Duration>>;

/// Run `workers` workers over `queue` until `stop`: each takes a key, syncs
/// it, and on error puts it back with backoff; `Ok(Some(d))` re-checks it
/// after `d`.
pub async fn run_workers<F, Fut>(
    name: &'static str,
    queue: Arc<WorkQueue<String>>,
    workers: usize,
    mut stop: watch::Receiver<bool>,
    sync: F,
) where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = SyncResult> + Send,
{
    let mut handles = Vec::new();
    for _ in 0..workers.max(1) {
        let (queue, sync) = (queue.clone(), sync.clone());
        handles.push(tokio::spawn(async move {
            while let Some(key) = queue.get().await {
                match sync(key.clone()).await {
                    Ok(again) => {
                        queue.forget(&key);
                        if let Some(d) = again {
                            queue.add_after(key.clone(), d);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(controller = name, %key, error = %e, "sync failed; retrying");
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        }));
    }
    common::stopped(&mut stop).await;
    queue.shut_down();
    for h in handles {
        let _ = h.await;
    }
}

/// A work queue with upstream's default limits.
pub fn queue() -> Arc<WorkQueue<String>> {
    WorkQueue::new(RateLimits::default())
}

/// Is the pod's Ready condition True?
pub fn pod_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A reference to `obj` for events.
pub fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let m = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        ..Default::default()
    }
}

/// "ns/NAME" of the controller of kind `kind` that owns the object, if any.
pub fn owner_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: &str,
) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == kind)
        .map(|o| {
            format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                o.name
            )
        })
}

/// Feed a controller's queue: a change to one of its own objects queues its
/// key, a change to a child queues the key of its `owner_kind` controller,
/// and a subscriber that fell behind queues every object. Call it before
/// waiting for the caches, so nothing between sync and subscription is lost.
pub fn feed<S, C>(
    q: Arc<WorkQueue<String>>,
    own: &Informer<S>,
    child: &Informer<C>,
    owner_kind: &'static str,
) -> tokio::task::JoinHandle<()>
where
    S: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    C: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    use tokio::sync::broadcast::error::RecvError;
    let (mut own_c, mut child_c, store) = (own.subscribe(), child.subscribe(), own.store());
    tokio::spawn(async move {
        let all =
            |q: &WorkQueue<String>| store.state().iter().for_each(|o| q.add(key_of(o.meta())));
        loop {
            tokio::select! {
                c = own_c.recv() => match c {
                    Ok(Change::Applied(o) | Change::Deleted(o)) => q.add(key_of(o.meta())),
                    Err(RecvError::Closed) => return,
                    Err(RecvError::Lagged(_)) => all(&q),
                },
                c = child_c.recv() => match c {
                    Ok(Change::Applied(o) | Change::Deleted(o)) => {
                        if let Some(k) = owner_key(o.meta(), owner_kind) {
                            q.add(k);
                        }
                    }
                    Err(RecvError::Closed) => return,
                    Err(RecvError::Lagged(_)) => all(&q),
                },
            }
        }
    })
}

/// "ns/name" of a namespaced object.
pub fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// ("ns", "name") from "ns/name".
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &[&str]) -> Result<Vec<&'static str>, String> {
        let spec: Vec<String> = spec.iter().map(|s| s.to_string()).collect();
        selected(&spec).map(|v| v.iter().map(|e| e.name).collect())
    }

    #[test]
    fn controllers_flag_as_upstream() {
        assert_eq!(
            names(&["*"]).expect("all").len(),
            CONTROLLERS.len() - DISABLED_BY_DEFAULT.len()
        );
        assert!(!names(&["*"])
            .expect("all")
            .contains(&"token-cleaner-controller"));
        assert!(names(&["*", "tokencleaner"])
            .expect("named")
            .contains(&"token-cleaner-controller"));
        assert_eq!(
            names(&["*", "-endpoints-controller"]).expect("minus"),
            vec![
                "certificatesigningrequest-approving-controller",
                "certificatesigningrequest-cleaner-controller",
                "certificatesigningrequest-signing-controller",
                "cronjob-controller",
                "daemonset-controller",
                "deployment-controller",
                "endpointslice-controller",
                "garbage-collector-controller",
                "job-controller",
                "namespace-controller",
                "node-ipam-controller",
                "node-lifecycle-controller",
                "persistentvolume-binder-controller",
                "pod-garbage-collector-controller",
                "replicaset-controller",
                "resourcequota-controller",
                "root-ca-certificate-publisher-controller",
                "serviceaccount-controller",
                "statefulset-controller",
                "taint-eviction-controller",
                "ttl-after-finished-controller"
            ]
        );
        assert_eq!(
            names(&["serviceaccount-controller"]).expect("one"),
            vec!["serviceaccount-controller"]
        );
        // upstream's older names are aliases
        assert_eq!(
            names(&["persistentvolume-binder", "statefulset"]).expect("aliases"),
            vec![
                "persistentvolume-binder-controller",
                "statefulset-controller"
            ]
        );
        assert!(!names(&["*", "-persistentvolume-binder"])
            .expect("minus alias")
            .contains(&"persistentvolume-binder-controller"));
        let e = names(&["*", "bogus"]).expect_err("unknown");
        assert!(e.contains("\"bogus\" is not a known controller"), "{e}");
    }
}
