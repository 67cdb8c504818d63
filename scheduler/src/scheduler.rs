//! One scheduling cycle per pod, over an immutable snapshot: PreFilter,
//! Filter (stopping once enough feasible nodes are found, as upstream's
//! adaptive percentageOfNodesToScore), PreScore, Score with weights, pick the
//! best node (ties at random), assume it, and bind in the background.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::cache::{pod_key, Cache};
use crate::framework::{
    Code, CycleState, Filter, NodeInfo, PreFilter, PreScore, Score, Snapshot, Status,
};
use crate::queue::{Popped, SchedulingQueue};
use common::events::{EventType, Recorder};

/// The plugins of one profile, in upstream's default order and weights.
pub struct Profile {
    pub scheduler_name: String,
    pub pre_filters: Vec<Arc<dyn PreFilter>>,
    pub filters: Vec<Arc<dyn Filter>>,
    pub pre_scores: Vec<Arc<dyn PreScore>>,
    pub scores: Vec<(Arc<dyn Score>, i64)>,
    /// 0 = adaptive, as upstream
    pub percentage_of_nodes_to_score: u32,
    /// where filters run in parallel (upstream's `parallelism`); None = in this thread
    pub pool: Option<Arc<rayon::ThreadPool>>,
}

/// Why a pod fits nowhere: reasons with the number of nodes that gave them.
#[derive(Debug, Default)]
pub struct Diagnosis {
    pub nodes: usize,
    pub reasons: BTreeMap<String, usize>,
    pub error: Option<String>,
    /// nodes that failed only with Unschedulable: preemption may help there
    pub preemptible: Vec<String>,
    /// the PostFilter's own account, appended to the message
    pub preemption: Option<String>,
}

impl Diagnosis {
    /// Upstream's FailedScheduling message: "0/3 nodes are available: 1 node(s) had untolerated taint {...}, 2 Insufficient cpu."
    pub fn message(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        if self.nodes == 0 {
            return "no nodes available to schedule pods".into();
        }
        let mut msg = format!(
            "0/{} nodes are available: {}.",
            self.nodes,
            parts.join(", ")
        );
        if let Some(p) = &self.preemption {
            msg.push_str(" preemption: ");
            msg.push_str(p);
        }
        msg
    }
}

/// How many feasible nodes to look for before scoring (upstream's numFeasibleNodesToFind).
pub fn nodes_to_find(total: usize, percentage: u32) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if total < MIN_FEASIBLE {
        return total;
    }
    let pct = if percentage == 0 {
        (50 - (total / 125) as i64).max(5) as usize
    } else {
        percentage.min(100) as usize
    };
    (total * pct / 100).max(MIN_FEASIBLE)
}

/// The pool filters run on: `parallelism` threads, but no more than the
/// machine has cores (upstream's goroutines are cheaper than threads). None on
/// a single core, or if the threads cannot be started.
pub fn filter_pool(parallelism: usize) -> Option<Arc<rayon::ThreadPool>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = parallelism.min(cores);
    if threads < 2 {
        return None;
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("filter-{i}"))
        .build()
        .map_err(
            |e| tracing::warn!(error = %e, "starting the filter pool; filtering in one thread"),
        )
        .ok()
        .map(Arc::new)
}

/// Nodes per unit of parallel filtering work (upstream's chunking).
const FILTER_CHUNK: usize = 64;
/// Searches for fewer feasible nodes than this run in the scheduling thread:
/// measured on 2 cores, waking the pool for the adaptive 500 of 5,000 nodes
/// cost more CPU (idle workers spin) than the filters themselves.
const PARALLEL_MIN_NODES: usize = 1000;

/// A node's filter outcome: None when it passed, else the plugin and status that failed it.
type FilterOutcome = Option<(&'static str, Status)>;

fn filter_node(
    filters: &[&Arc<dyn Filter>],
    state: &CycleState,
    pod: &Pod,
    node: &NodeInfo,
) -> FilterOutcome {
    for f in filters {
        let st = f.filter(state, pod, node);
        if !st.is_success() {
            return Some((f.name(), st));
        }
    }
    None
}

impl Profile {
    /// Run the filters over nodes `start..start+n` (wrapping), in parallel
    /// chunks on the profile's pool when there is one and the cluster is big
    /// enough, stopping once `want` nodes passed. Returns (offset from
    /// `start`, outcome) in offset order, possibly past the point where `want`
    /// were found.
    fn run_filters(
        &self,
        filters: &[&Arc<dyn Filter>],
        state: &CycleState,
        pod: &Pod,
        snap: &Snapshot,
        start: usize,
        want: usize,
    ) -> Vec<(usize, FilterOutcome)> {
        let n = snap.nodes.len();
        let check = |i: usize| {
            (
                i,
                filter_node(filters, state, pod, &snap.nodes[(start + i) % n]),
            )
        };
        match &self.pool {
            Some(pool) if n > 2 * FILTER_CHUNK && want >= PARALLEL_MIN_NODES => {
                use rayon::prelude::*;
                let found = AtomicUsize::new(0);
                pool.install(|| {
                    let chunks: Vec<Vec<(usize, FilterOutcome)>> = (0..n.div_ceil(FILTER_CHUNK))
                        .into_par_iter()
                        .map(|c| {
                            if found.load(Ordering::Relaxed) >= want {
                                return Vec::new();
                            }
                            let lo = c * FILTER_CHUNK;
                            let out: Vec<_> = (lo..(lo + FILTER_CHUNK).min(n)).map(check).collect();
                            let passed = out.iter().filter(|(_, o)| o.is_none()).count();
                            found.fetch_add(passed, Ordering::Relaxed);
                            out
                        })
                        .collect();
                    // chunks skipped once enough nodes passed were never examined
                    chunks.into_iter().flatten().collect::<Vec<_>>()
                })
            }
            _ => {
                let mut outcomes = Vec::new();
                let mut passed = 0;
                for i in 0..n {
                    if passed >= want {
                        break;
                    }
                    let o = check(i);
                    passed += usize::from(o.1.is_none());
                    outcomes.push(o);
                }
                outcomes
            }
        }
    }

    /// Find the best node for `pod`, or say why there is none.
    pub fn find_node(
        &self,
        pod: &Pod,
        snap: &Snapshot,
        start: usize,
    ) -> Result<(String, usize), Diagnosis> {
        let mut state = CycleState::default();
        let mut diag = Diagnosis {
            nodes: snap.nodes.len(),
            ..Default::default()
        };
        let mut skip_filters: Vec<&'static str> = Vec::new();
        for pf in &self.pre_filters {
            let st = pf.pre_filter(&mut state, pod, snap);
            match st.code {
                Code::Success => {}
                Code::Skip => skip_filters.push(pf.name()),
                Code::Error => {
                    diag.error = Some(format!(
                        "running PreFilter plugin {:?}: {}",
                        pf.name(),
                        st.reasons.join(", ")
                    ));
                    return Err(diag);
                }
                _ => {
                    for r in st.reasons {
                        *diag.reasons.entry(r).or_insert(0) += snap.nodes.len();
                    }
                    return Err(diag);
                }
            }
        }
        let want = nodes_to_find(snap.nodes.len(), self.percentage_of_nodes_to_score);
        let n = snap.nodes.len();
        let filters: Vec<&Arc<dyn Filter>> = self
            .filters
            .iter()
            .filter(|f| !skip_filters.contains(&f.name()))
            .collect();
        let outcomes = self.run_filters(&filters, &state, pod, snap, start, want);
        // borrowed from the snapshot: no reference count touched per node
        let mut feasible: Vec<&NodeInfo> = Vec::new();
        let mut examined = 0;
        // in node order from `start`, as a sequential search would have seen
        // them; what parallel workers examined past the cut-off is ignored
        for (i, failed) in outcomes {
            if feasible.len() >= want {
                break;
            }
            examined = i + 1;
            let node = &snap.nodes[(start + i) % n];
            let Some((plugin, st)) = failed else {
                feasible.push(node);
                continue;
            };
            match st.code {
                Code::Error => {
                    diag.error = Some(format!(
                        "running Filter plugin {plugin:?}: {}",
                        st.reasons.join(", ")
                    ));
                    return Err(diag);
                }
                Code::Unschedulable => diag.preemptible.push(node.name().to_string()),
                _ => {}
            }
            for r in st.reasons {
                *diag.reasons.entry(r).or_insert(0) += 1;
            }
        }
        if feasible.is_empty() {
            return Err(diag);
        }
        let next_start = (start + examined) % n.max(1);
        if feasible.len() == 1 {
            return Ok((feasible[0].name().to_string(), next_start));
        }
        for ps in &self.pre_scores {
            let st = ps.pre_score(&mut state, pod, &feasible, snap);
            if st.code == Code::Error {
                diag.error = Some(format!(
                    "running PreScore plugin {:?}: {}",
                    ps.name(),
                    st.reasons.join(", ")
                ));
                return Err(diag);
            }
        }
        // node by node, every plugin while the node is at hand (each node is a
        // cache miss at thousands of nodes), then each plugin's normalisation
        let mut scores: Vec<Vec<i64>> = self
            .scores
            .iter()
            .map(|_| Vec::with_capacity(feasible.len()))
            .collect();
        for node in &feasible {
            for ((plugin, _), s) in self.scores.iter().zip(scores.iter_mut()) {
                s.push(plugin.score(&state, pod, node).unwrap_or(0));
            }
        }
        let mut totals = vec![0i64; feasible.len()];
        for ((plugin, weight), mut s) in self.scores.iter().zip(scores) {
            plugin.normalize(&state, pod, &mut s);
            for (t, v) in totals.iter_mut().zip(s) {
                *t += v * weight;
            }
        }
        // the highest total; ties broken at random (reservoir sampling)
        let mut best = 0;
        let mut ties = 0u32;
        for (i, t) in totals.iter().enumerate() {
            if *t > totals[best] {
                best = i;
                ties = 1;
            } else if *t == totals[best] {
                ties += 1;
                if rand::random::<u32>() % ties == 0 {
                    best = i;
                }
            }
        }
        Ok((feasible[best].name().to_string(), next_start))
    }
}

#[derive(Clone)]
pub struct Metrics {
    pub attempts: IntCounterVec,
    pub attempt_duration: HistogramVec,
    pub pending: IntGaugeVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Metrics {
        let attempts = IntCounterVec::new(
            Opts::new(
                "scheduler_schedule_attempts_total",
                "Number of attempts to schedule pods, by the result.",
            ),
            &["result", "profile"],
        )
        .expect("static metric");
        let attempt_duration = HistogramVec::new(
            HistogramOpts::new(
                "scheduler_scheduling_attempt_duration_seconds",
                "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 15).unwrap_or_default()),
            &["result", "profile"],
        )
        .expect("static metric");
        let pending = IntGaugeVec::new(
            Opts::new(
                "scheduler_pending_pods",
                "Number of pending pods, by the queue type.",
            ),
            &["queue"],
        )
        .expect("static metric");
        for c in [
            Box::new(attempts.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(attempt_duration.clone()),
            Box::new(pending.clone()),
        ] {
            let _ = registry.register(c);
        }
        Metrics {
            attempts,
            attempt_duration,
            pending,
        }
    }
}

pub struct Scheduler {
    pub client: kube::Client,
    pub cache: Mutex<Cache>,
    pub queue: Arc<SchedulingQueue>,
    pub profile: Profile,
    pub recorder: Recorder,
    pub metrics: Metrics,
    next_start: AtomicUsize,
    /// binds in flight: bounded so the client reuses its connections instead of
    /// opening (and TLS-handshaking) one per pod
    binds: Arc<tokio::sync::Semaphore>,
}

fn object_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..Default::default()
    }
}

impl Scheduler {
    pub fn new(client: kube::Client, profile: Profile, registry: &Registry) -> Arc<Scheduler> {
        Scheduler::with_metrics(client, profile, Metrics::new(registry))
    }

    /// A scheduler reporting to metrics registered before (each leadership
    /// term starts a fresh scheduler; the series go on).
    pub fn with_metrics(
        client: kube::Client,
        profile: Profile,
        metrics: Metrics,
    ) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            recorder: Recorder::new(client.clone(), &profile.scheduler_name, None),
            client,
            cache: Mutex::new(Cache::default()),
            queue: SchedulingQueue::new(),
            profile,
            metrics,
            next_start: AtomicUsize::new(0),
            binds: Arc::new(tokio::sync::Semaphore::new(64)),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Is this pod ours to schedule?
    pub fn wants(&self, pod: &Pod) -> bool {
        let spec = pod.spec.as_ref();
        let name = spec
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler");
        name == self.profile.scheduler_name
            && spec
                .and_then(|s| s.node_name.as_deref())
                .is_none_or(str::is_empty)
            && pod.metadata.deletion_timestamp.is_none()
            && !matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
    }

    /// Schedule one pod from the queue. Returns false once the queue is closed.
    pub async fn schedule_one(self: &Arc<Self>) -> bool {
        let Some(Popped { qp, moves }) = self.queue.pop().await else {
            return false;
        };
        let start = Instant::now();
        let pod = qp.pod.clone();
        if !self.wants(&pod) {
            self.queue.done(&qp.key);
            return true;
        }
        let (a, b, u) = self.queue.sizes();
        self.metrics
            .pending
            .with_label_values(&["active"])
            .set(a as i64);
        self.metrics
            .pending
            .with_label_values(&["backoff"])
            .set(b as i64);
        self.metrics
            .pending
            .with_label_values(&["unschedulable"])
            .set(u as i64);
        let snap = self.cache().snapshot();
        let start_at = self.next_start.load(Ordering::Relaxed);
        let profile = self.profile.scheduler_name.clone();
        match self.profile.find_node(&pod, &snap, start_at) {
            Ok((node, next)) => {
                self.next_start.store(next, Ordering::Relaxed);
                // let go of the snapshot first, so the cache updates its list in place
                drop(snap);
                self.cache().assume(&pod, &node);
                let me = self.clone();
                let Ok(permit) = self.binds.clone().acquire_owned().await else {
                    return false;
                };
                tokio::spawn(async move {
                    let _permit = permit;
                    match me.bind(&pod, &node).await {
                        Ok(()) => {
                            me.queue.done(&qp.key);
                            me.metrics
                                .attempts
                                .with_label_values(&["scheduled", &profile])
                                .inc();
                            me.metrics
                                .attempt_duration
                                .with_label_values(&["scheduled", &profile])
                                .observe(start.elapsed().as_secs_f64());
                            let msg = format!("Successfully assigned {} to {node}", pod_key(&pod));
                            me.recorder.emit(
                                &object_ref(&pod),
                                EventType::Normal,
                                "Scheduled",
                                &msg,
                            );
                        }
                        Err(e) => {
                            tracing::warn!(pod = %qp.key, %node, error = %e, "binding failed");
                            me.cache().remove_pod(&qp.key);
                            me.metrics
                                .attempts
                                .with_label_values(&["error", &profile])
                                .inc();
                            let gone = matches!(&e, kube::Error::Api(s) if s.code == 404);
                            if gone {
                                me.queue.done(&qp.key);
                            } else {
                                me.recorder.emit(
                                    &object_ref(&pod),
                                    EventType::Warning,
                                    "FailedScheduling",
                                    &format!("binding rejected: {e}"),
                                );
                                me.queue.retry(qp);
                            }
                        }
                    }
                });
            }
            Err(mut diag) => {
                if diag.error.is_none() && diag.nodes > 0 {
                    match crate::preemption::find_candidate(
                        &self.profile,
                        &pod,
                        &snap,
                        &diag.preemptible,
                    ) {
                        Ok(c) => self.preempt(&pod, c).await,
                        Err(why) => diag.preemption = Some(why),
                    }
                }
                let msg = diag.message();
                let result = if diag.error.is_some() {
                    "error"
                } else {
                    "unschedulable"
                };
                self.metrics
                    .attempts
                    .with_label_values(&[result, &profile])
                    .inc();
                self.metrics
                    .attempt_duration
                    .with_label_values(&[result, &profile])
                    .observe(start.elapsed().as_secs_f64());
                tracing::info!(pod = %qp.key, %msg, "unable to schedule pod");
                self.recorder.emit(
                    &object_ref(&pod),
                    EventType::Warning,
                    "FailedScheduling",
                    &msg,
                );
                if let Err(e) = self.set_unschedulable_condition(&pod, &msg).await {
                    tracing::debug!(pod = %qp.key, error = %e, "setting the PodScheduled condition");
                }
                if diag.error.is_some() {
                    self.queue.retry(qp);
                } else {
                    self.queue.unschedulable(qp, moves);
                }
            }
        }
        true
    }

    /// Evict the victims (gracefully) and nominate the node for `pod`.
    async fn preempt(&self, pod: &Pod, c: crate::preemption::Candidate) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        for v in &c.victims {
            let ns = v.metadata.namespace.as_deref().unwrap_or("default");
            let name = v.metadata.name.as_deref().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            match api.delete(name, &kube::api::DeleteParams::default()).await {
                Ok(_) => {
                    let msg = format!("Preempted by pod {uid} on node {}", c.node);
                    self.recorder
                        .emit(&object_ref(v), EventType::Normal, "Preempted", &msg);
                }
                Err(e) => {
                    tracing::warn!(victim = %pod_key(v), error = %e, "evicting a preemption victim")
                }
            }
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let patch = serde_json::json!({"status": {"nominatedNodeName": c.node}});
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(pod = %pod_key(pod), error = %e, "nominating a node");
        }
        tracing::info!(pod = %pod_key(pod), node = %c.node, victims = c.victims.len(), "preempted");
    }

    async fn bind(&self, pod: &Pod, node: &str) -> Result<(), kube::Error> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let binding = serde_json::json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "uid": pod.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        api.create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
        .map(|_| ())
    }

    async fn set_unschedulable_condition(&self, pod: &Pod, msg: &str) -> Result<(), kube::Error> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let patch = serde_json::json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg,
            "lastProbeTime": null, "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_percentage() {
        assert_eq!(nodes_to_find(50, 0), 50);
        assert_eq!(nodes_to_find(1000, 0), 420);
        assert_eq!(nodes_to_find(5000, 0), 500);
        assert_eq!(nodes_to_find(5000, 100), 5000);
        assert_eq!(nodes_to_find(200, 10), 100);
    }

    /// 1,000 nodes, of which only every 100th has room: parallel filtering
    /// finds the same feasible nodes as one thread and says why the rest failed.
    #[test]
    fn parallel_filtering_agrees_with_sequential() {
        let mut cache = Cache::default();
        for i in 0..1000 {
            let cpu = if i % 100 == 7 { "4" } else { "1" };
            cache.upsert_node(Arc::new(
                serde_json::from_value(serde_json::json!({"metadata": {"name": format!("n{i:04}")}, "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}}))
                    .expect("node"),
            ));
        }
        let snap = cache.snapshot();
        let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "2"}}}]}})).expect("pod");
        let sequential = crate::plugins::profile(&Default::default(), 100);
        let mut parallel = crate::plugins::profile(&Default::default(), 100);
        parallel.pool = Some(Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(4)
                .build()
                .expect("pool"),
        ));
        for start in [0, 333, 999] {
            let (a, _) = sequential
                .find_node(&pod, &snap, start)
                .expect("sequential");
            let (b, _) = parallel.find_node(&pod, &snap, start).expect("parallel");
            assert!(a.ends_with('7') && b.ends_with('7'), "{a} {b}");
        }
        let huge: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "q", "namespace": "d"}, "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "8"}}}]}})).expect("pod");
        let d = parallel
            .find_node(&huge, &snap, 5)
            .expect_err("fits nowhere");
        assert_eq!(
            d.message(),
            "0/1000 nodes are available: 1000 Insufficient cpu."
        );
        assert_eq!(d.preemptible.len(), 1000);
    }

    #[test]
    fn failed_scheduling_message() {
        let mut d = Diagnosis {
            nodes: 3,
            ..Default::default()
        };
        d.reasons.insert("Insufficient cpu".into(), 2);
        d.reasons
            .insert("node(s) had untolerated taint {a: b}".into(), 1);
        assert_eq!(
            d.message(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {a: b}, 2 Insufficient cpu."
        );
    }
}
