//! replicaset-controller: keeps `spec.replicas` pods of a ReplicaSet's
//! template running. As upstream: pods belong to their controller through
//! ownerReferences, orphans matching the selector are adopted and owned pods
//! that stop matching are released; creations go in slow-start batches
//! (1, 2, 4, ...) so a failing template fails fast; surplus pods are deleted
//! in upstream's order (unscheduled, pending, not ready first); and
//! expectations keep a sync from acting on a cache that has not yet seen
//! this controller's own creations and deletions, so it never over-creates.
//! Events SuccessfulCreate, FailedCreate, SuccessfulDelete; status replicas,
//! fullyLabeledReplicas, readyReplicas, availableReplicas, observedGeneration.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::events::{EventType, Recorder};
use common::informers::Change;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::{key_of, queue, run_workers, split_key, Ctx, Started, SyncResult};

/// The most pods created or deleted in one sync (upstream's burstReplicas).
const BURST: usize = 500;
/// Expectations older than this are given up on (upstream's 5 minutes).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);

/// Does a LabelSelector select these (possibly absent) labels?
pub fn selector_matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    common::selectors::label_selector_matches(sel, labels.unwrap_or(&EMPTY))
}

/// The owner reference that makes `pod` belong to a controller, if any.
pub fn controller_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Ready for at least `min_ready` seconds (by the Ready condition's transition time).
fn is_available(pod: &Pod, min_ready: i32, now: i64) -> bool {
    if !crate::pod_ready(pod) {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    let since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_second());
    since.is_some_and(|t| now - t >= i64::from(min_ready))
}

/// Upstream's deletion preference: the pod that should go first sorts first.
pub fn deletion_rank(pods: &mut [Arc<Pod>]) {
    let phase_rank = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    };
    let restarts = |p: &Pod| -> i32 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .map(|c| c.restart_count)
            .max()
            .unwrap_or(0)
    };
    let created = |p: &Pod| {
        p.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
    };
    pods.sort_by(|a, b| {
        let assigned = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        assigned(a)
            .cmp(&assigned(b))
            .then(phase_rank(a).cmp(&phase_rank(b)))
            .then(crate::pod_ready(a).cmp(&crate::pod_ready(b)))
            // more restarts go first
            .then(restarts(b).cmp(&restarts(a)))
            // newer pods go first
            .then(created(b).cmp(&created(a)))
    });
}

/// Names this controller created or deleted that the cache has not shown yet.
#[derive(Default)]
struct Expectation {
    creations: HashSet<String>,
    deletions: HashSet<String>,
    since: Option<Instant>,
}

#[derive(Default)]
pub struct Expectations(Mutex<HashMap<String, Expectation>>);

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectation>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn expect(&self, key: &str, created: &[String], deleted: &[String]) {
        let mut all = self.lock();
        let e = all.entry(key.to_string()).or_default();
        e.creations.extend(created.iter().cloned());
        e.deletions.extend(deleted.iter().cloned());
        e.since = Some(Instant::now());
    }

    /// Has the cache caught up with what this controller did for `key`?
    /// Creations must be visible; deletions gone or marked for deletion.
    pub fn satisfied(&self, key: &str, pods: &Store<Pod>, ns: &str) -> bool {
        let mut all = self.lock();
        let Some(e) = all.get_mut(key) else {
            return true;
        };
        e.creations
            .retain(|n| pods.get(&ObjectRef::new(n).within(ns)).is_none());
        e.deletions.retain(|n| {
            pods.get(&ObjectRef::new(n).within(ns))
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        });
        let expired = e.since.is_some_and(|t| t.elapsed() > EXPECTATIONS_TTL);
        if (e.creations.is_empty() && e.deletions.is_empty()) || expired {
            all.remove(key);
            return true;
        }
        false
    }
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

struct Controller {
    client: kube::Client,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    /// pods by controller and orphans by namespace
    pod_index: common::informers::Informer<Pod>,
    expectations: Expectations,
    recorder: Recorder,
}

/// The ReplicaSets a pod change concerns: its controller, or for an orphan
/// every ReplicaSet of its namespace whose selector matches (adoption).
fn sets_for_pod(sets: &Store<ReplicaSet>, pod: &Pod) -> Vec<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    if let Some(owner) = controller_of(&pod.metadata) {
        if owner.kind == "ReplicaSet" {
            return vec![format!("{ns}/{}", owner.name)];
        }
        return Vec::new();
    }
    sets.state()
        .iter()
        .filter(|rs| rs.metadata.namespace.as_deref() == Some(ns))
        .filter(|rs| {
            rs.spec
                .as_ref()
                .is_some_and(|s| selector_matches(&s.selector, pod.metadata.labels.as_ref()))
        })
        .map(|rs| key_of(&rs.metadata))
        .collect()
}

async fn run(ctx: Ctx) {
    let sets = ctx.informers.get::<ReplicaSet>();
    let pods = ctx.informers.get::<Pod>();
    let q = queue();
    let (mut rs_c, mut pod_c) = (sets.subscribe(), pods.subscribe());
    sets.wait_synced().await;
    pods.wait_synced().await;
    for rs in sets.store().state() {
        q.add(key_of(&rs.metadata));
    }
    let feeder = {
        let (q, rs_store) = (q.clone(), sets.store());
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            let all = |q: &Arc<common::workqueue::WorkQueue<String>>| {
                rs_store
                    .state()
                    .iter()
                    .for_each(|r| q.add(key_of(&r.metadata)))
            };
            loop {
                tokio::select! {
                    c = rs_c.recv() => match c {
                        Ok(Change::Applied(r) | Change::Deleted(r)) => q.add(key_of(&r.metadata)),
                        Err(RecvError::Closed) => return,
                        Err(RecvError::Lagged(_)) => all(&q),
                    },
                    c = pod_c.recv() => match c {
                        Ok(Change::Applied(p) | Change::Deleted(p)) => sets_for_pod(&rs_store, &p).into_iter().for_each(|k| q.add(k)),
                        Err(RecvError::Closed) => return,
                        Err(RecvError::Lagged(_)) => all(&q),
                    },
                }
            }
        })
    };
    let c = Arc::new(Controller {
        recorder: Recorder::new(ctx.client.clone(), "replicaset-controller", None),
        client: ctx.client.clone(),
        sets: sets.store(),
        pods: pods.store(),
        pod_index: pods.clone(),
        expectations: Expectations::default(),
    });
    run_workers(
        "replicaset",
        q,
        ctx.settings.concurrent_replicaset_syncs,
        ctx.stop.clone(),
        move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        },
    )
    .await;
    feeder.abort();
}

impl Controller {
    async fn sync(&self, key: &str) -> SyncResult {
        let (ns, name) = split_key(key);
        let Some(rs) = self.sets.get(&ObjectRef::new(name).within(ns)) else {
            // gone: its pods are the garbage collector's
            self.expectations.lock().remove(key);
            return Ok(None);
        };
        let spec = rs.spec.clone().unwrap_or_default();
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        // claim: ours that still match; orphans that match are adopted; ours
        // that stopped matching are released
        let mut owned: Vec<Arc<Pod>> = Vec::new();
        let candidates = self
            .pod_index
            .controlled_by(&uid)
            .into_iter()
            .chain(self.pod_index.orphans(ns));
        for pod in candidates {
            if pod.metadata.namespace.as_deref() != Some(ns) {
                continue;
            }
            let matches = selector_matches(&spec.selector, pod.metadata.labels.as_ref());
            match controller_of(&pod.metadata) {
                Some(o) if o.uid == uid => {
                    if matches {
                        owned.push(pod);
                    } else if rs.metadata.deletion_timestamp.is_none() {
                        self.release(&pods_api, &pod, &uid).await?;
                    }
                }
                Some(_) => {}
                None if matches
                    && is_active(&pod)
                    && rs.metadata.deletion_timestamp.is_none()
                    && pod.metadata.deletion_timestamp.is_none() =>
                {
                    let adopted = self.adopt(&pods_api, &pod, &rs).await?;
                    owned.extend(adopted.then_some(pod));
                }
                None => {}
            }
        }
        let active: Vec<Arc<Pod>> = owned.iter().filter(|p| is_active(p)).cloned().collect();
        let mut failure: Option<String> = None;
        let mut acted = false;
        if self.expectations.satisfied(key, &self.pods, ns)
            && rs.metadata.deletion_timestamp.is_none()
        {
            let want = spec.replicas.unwrap_or(1).max(0) as usize;
            if active.len() < want {
                failure = self.create(&rs, key, want - active.len()).await;
                acted = true;
            } else if active.len() > want {
                self.delete(&rs, key, active.clone(), active.len() - want)
                    .await?;
                acted = true;
            }
        }
        // after creating or deleting pods the status computed here is stale at
        // once: the sync that observes those pods (expectations) writes it
        if !acted || failure.is_some() {
            self.update_status(&rs, &owned, failure.clone()).await?;
        }
        if let Some(msg) = failure {
            // back off before trying the template again
            anyhow::bail!("creating pods: {msg}");
        }
        // availability after minReadySeconds needs a look once it has passed
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let pending_available = active
            .iter()
            .any(|p| crate::pod_ready(p) && !is_available(p, min_ready, now));
        Ok(pending_available
            .then(|| Duration::from_secs(u64::try_from(min_ready).unwrap_or(0).max(1))))
    }

    /// Create `n` pods (at most BURST) in slow-start batches; the message of
    /// the first failure, if any.
    async fn create(&self, rs: &ReplicaSet, key: &str, n: usize) -> Option<String> {
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let template = rs
            .spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default();
        let mut meta = template.metadata.clone().unwrap_or_default();
        meta.name = None;
        meta.generate_name = Some(format!("{name}-"));
        meta.namespace = Some(ns.to_string());
        meta.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: name.to_string(),
            uid: rs.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        let pod = Pod {
            metadata: meta,
            spec: template.spec.clone(),
            status: None,
        };
        let pp = PostParams::default();
        let mut remaining = n.min(BURST);
        let mut batch = 1;
        while remaining > 0 {
            let size = batch.min(remaining);
            // only the created pods' names are read: their metadata is all we ask for
            let results = futures::future::join_all(
                (0..size).map(|_| common::write::create(&self.client, &api, &pp, &pod)),
            )
            .await;
            let mut created = Vec::new();
            let mut failed = None;
            for r in results {
                match r {
                    Ok(meta) => {
                        let pod_name = meta.name.unwrap_or_default();
                        self.recorder.emit(
                            &crate::object_ref(rs),
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!("Created pod: {pod_name}"),
                        );
                        created.push(pod_name);
                    }
                    // the namespace is going away: nothing to report or retry, as upstream
                    Err(kube::Error::Api(s))
                        if s.code == 403 && s.message.contains("being terminated") => {}
                    Err(e) => {
                        let msg = match &e {
                            kube::Error::Api(s) => s.message.clone(),
                            other => other.to_string(),
                        };
                        self.recorder.emit(
                            &crate::object_ref(rs),
                            EventType::Warning,
                            "FailedCreate",
                            &format!("Error creating: {msg}"),
                        );
                        failed.get_or_insert(msg);
                    }
                }
            }
            self.expectations.expect(key, &created, &[]);
            if failed.is_some() {
                // a failing template fails once per batch, not once per pod
                return failed;
            }
            remaining -= size;
            batch *= 2;
        }
        None
    }

    async fn delete(
        &self,
        rs: &ReplicaSet,
        key: &str,
        mut active: Vec<Arc<Pod>>,
        n: usize,
    ) -> anyhow::Result<()> {
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        deletion_rank(&mut active);
        let victims: Vec<String> = active
            .iter()
            .take(n.min(BURST))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        self.expectations.expect(key, &[], &victims);
        for v in &victims {
            match api.delete(v, &DeleteParams::default()).await {
                Ok(_) => self.recorder.emit(
                    &crate::object_ref(rs),
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {v}"),
                ),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    self.recorder.emit(
                        &crate::object_ref(rs),
                        EventType::Warning,
                        "FailedDelete",
                        &format!("Error deleting: {e}"),
                    );
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Take an orphan: add our controller reference, guarded by the pod's uid.
    async fn adopt(&self, api: &Api<Pod>, pod: &Pod, rs: &ReplicaSet) -> anyhow::Result<bool> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
        refs.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: rs.metadata.name.clone().unwrap_or_default(),
            uid: rs.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        });
        let patch = json!({"metadata": {"uid": pod.metadata.uid, "ownerReferences": refs}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 || e.code == 422 => {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Let go of a pod that no longer matches the selector.
    async fn release(&self, api: &Api<Pod>, pod: &Pod, uid: &str) -> anyhow::Result<()> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let refs: Vec<OwnerReference> = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|o| o.uid != uid)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"uid": pod.metadata.uid, "ownerReferences": refs}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 || e.code == 422 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn update_status(
        &self,
        rs: &ReplicaSet,
        owned: &[Arc<Pod>],
        failure: Option<String>,
    ) -> anyhow::Result<()> {
        let spec = rs.spec.clone().unwrap_or_default();
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| is_active(p)).collect();
        let fully = active
            .iter()
            .filter(|p| {
                let l = p.metadata.labels.clone().unwrap_or_default();
                template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
            })
            .count();
        let ready = active.iter().filter(|p| crate::pod_ready(p)).count();
        let available = active
            .iter()
            .filter(|p| is_available(p, spec.min_ready_seconds.unwrap_or(0), now))
            .count();
        let old = rs.status.clone().unwrap_or_default();
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let had_failure = conditions.iter().any(|c| c.type_ == "ReplicaFailure");
        match &failure {
            Some(msg) if !had_failure => {
                conditions.push(k8s_openapi::api::apps::v1::ReplicaSetCondition {
                    type_: "ReplicaFailure".into(),
                    status: "True".into(),
                    reason: Some("FailedCreate".into()),
                    message: Some(msg.clone()),
                    last_transition_time: Some(
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            k8s_openapi::jiff::Timestamp::now(),
                        ),
                    ),
                })
            }
            None if had_failure => conditions.retain(|c| c.type_ != "ReplicaFailure"),
            _ => {}
        }
        let status = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": fully,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": rs.metadata.generation,
            "conditions": conditions,
        });
        let same = old.replicas as usize == active.len()
            && old.fully_labeled_replicas.unwrap_or(0) as usize == fully
            && old.ready_replicas.unwrap_or(0) as usize == ready
            && old.available_replicas.unwrap_or(0) as usize == available
            && old.observed_generation == rs.metadata.generation
            && old.conditions.clone().unwrap_or_default() == conditions;
        if same {
            return Ok(());
        }
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        let patch = json!({"status": status});
        Ok(common::write::merge_status(&self.client, &api, name, &patch).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).expect("pod"))
    }

    #[test]
    fn selectors_with_expressions() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                 {"key": "canary", "operator": "DoesNotExist"}],
        }))
        .expect("selector");
        let l = |v: serde_json::Value| -> BTreeMap<String, String> {
            serde_json::from_value(v).expect("labels")
        };
        assert!(selector_matches(
            &sel,
            Some(&l(json!({"app": "web", "tier": "a"})))
        ));
        assert!(!selector_matches(
            &sel,
            Some(&l(json!({"app": "web", "tier": "c"})))
        ));
        assert!(!selector_matches(
            &sel,
            Some(&l(json!({"app": "web", "tier": "a", "canary": "y"})))
        ));
        assert!(!selector_matches(&sel, None));
    }

    #[test]
    fn deletion_order_as_upstream() {
        let mut pods = vec![
            pod(
                json!({"metadata": {"name": "running-ready"}, "spec": {"nodeName": "n", "containers": []},
                       "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
            ),
            pod(
                json!({"metadata": {"name": "unscheduled"}, "spec": {"containers": []}, "status": {"phase": "Pending"}}),
            ),
            pod(
                json!({"metadata": {"name": "running-unready"}, "spec": {"nodeName": "n", "containers": []},
                       "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}),
            ),
            pod(
                json!({"metadata": {"name": "pending"}, "spec": {"nodeName": "n", "containers": []}, "status": {"phase": "Pending"}}),
            ),
        ];
        deletion_rank(&mut pods);
        let names: Vec<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        assert_eq!(
            names,
            vec!["unscheduled", "pending", "running-unready", "running-ready"]
        );
    }
}
