//! The scheduling queue, as upstream's: activeQ ordered by priority then age
//! (PrioritySort), a backoffQ (1 s doubling to 10 s per attempt), and the
//! unschedulable pods, moved back when the cluster changes (a node appears or
//! changes, a pod goes) or after 5 minutes at the latest.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cache::pod_key;

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const UNSCHEDULABLE_MAX_STAY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct QueuedPod {
    pub pod: Arc<Pod>,
    pub key: String,
    pub attempts: u32,
    /// when the pod was first queued (ordering among equal priorities)
    pub since: Instant,
    /// when it last failed (for backoff and the 5-minute flush)
    pub failed_at: Option<Instant>,
}

impl QueuedPod {
    fn priority(&self) -> i32 {
        self.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
    }
    fn backoff_until(&self) -> Instant {
        let d = INITIAL_BACKOFF
            .saturating_mul(1u32 << self.attempts.saturating_sub(1).min(10))
            .min(MAX_BACKOFF);
        self.failed_at.unwrap_or(self.since) + d
    }
}

struct Active(QueuedPod);
impl PartialEq for Active {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Active {}
impl PartialOrd for Active {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Active {
    /// PrioritySort: higher priority first, then the pod queued earlier
    fn cmp(&self, o: &Self) -> Ordering {
        self.0
            .priority()
            .cmp(&o.0.priority())
            .then_with(|| o.0.since.cmp(&self.0.since))
    }
}

#[derive(Default)]
struct State {
    active: BinaryHeap<Active>,
    backoff: Vec<QueuedPod>,
    unschedulable: HashMap<String, QueuedPod>,
    /// every key queued anywhere (or being scheduled), with its latest pod object
    known: HashMap<String, Arc<Pod>>,
    /// bumped on every cluster event, to catch events during a cycle
    moves: u64,
    closed: bool,
}

pub struct SchedulingQueue {
    st: Mutex<State>,
    ready: Notify,
}

/// What `pop` hands out: the pod and the move counter at that moment.
pub struct Popped {
    pub qp: QueuedPod,
    pub moves: u64,
}

impl SchedulingQueue {
    pub fn new() -> Arc<SchedulingQueue> {
        Arc::new(SchedulingQueue {
            st: Mutex::new(State::default()),
            ready: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new unscheduled pod, or a changed one.
    pub fn add_or_update(&self, pod: Arc<Pod>) {
        let key = pod_key(&pod);
        let mut st = self.lock();
        if st.closed {
            return;
        }
        if st.known.contains_key(&key) {
            st.known.insert(key.clone(), pod.clone());
            // an update may make an unschedulable pod fit
            if let Some(mut qp) = st.unschedulable.remove(&key) {
                qp.pod = pod;
                st.backoff.push(qp);
            }
            return;
        }
        st.known.insert(key.clone(), pod.clone());
        st.active.push(Active(QueuedPod {
            pod,
            key,
            attempts: 0,
            since: Instant::now(),
            failed_at: None,
        }));
        drop(st);
        self.ready.notify_one();
    }

    pub fn delete(&self, key: &str) {
        let mut st = self.lock();
        st.known.remove(key);
        st.unschedulable.remove(key);
        st.backoff.retain(|q| q.key != key);
    }

    /// The latest object for a queued key (None once deleted).
    pub fn current(&self, key: &str) -> Option<Arc<Pod>> {
        self.lock().known.get(key).cloned()
    }

    /// A pod is done with (bound): forget it.
    pub fn done(&self, key: &str) {
        self.lock().known.remove(key);
    }

    fn promote(st: &mut State) {
        let now = Instant::now();
        let (ready, wait): (Vec<QueuedPod>, Vec<QueuedPod>) = std::mem::take(&mut st.backoff)
            .into_iter()
            .partition(|q| q.backoff_until() <= now);
        st.backoff = wait;
        for q in ready {
            st.active.push(Active(q));
        }
        let stale: Vec<String> = st
            .unschedulable
            .iter()
            .filter(|(_, q)| {
                q.failed_at
                    .is_some_and(|f| now.duration_since(f) > UNSCHEDULABLE_MAX_STAY)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(q) = st.unschedulable.remove(&k) {
                st.active.push(Active(q));
            }
        }
    }

    /// The next pod to schedule; None once closed.
    pub async fn pop(&self) -> Option<Popped> {
        loop {
            let notified = self.ready.notified();
            {
                let mut st = self.lock();
                if st.closed {
                    return None;
                }
                Self::promote(&mut st);
                while let Some(Active(mut qp)) = st.active.pop() {
                    // skip pods deleted while queued; take the newest object
                    let Some(latest) = st.known.get(&qp.key).cloned() else {
                        continue;
                    };
                    qp.pod = latest;
                    qp.attempts += 1;
                    return Some(Popped {
                        qp,
                        moves: st.moves,
                    });
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// A pod that did not fit: to backoff if the cluster changed during its
    /// cycle (it may fit now), else to the unschedulable pods.
    pub fn unschedulable(&self, mut qp: QueuedPod, moves_at_pop: u64) {
        let mut st = self.lock();
        if !st.known.contains_key(&qp.key) {
            return;
        }
        qp.failed_at = Some(Instant::now());
        if st.moves > moves_at_pop {
            st.backoff.push(qp);
        } else {
            st.unschedulable.insert(qp.key.clone(), qp);
        }
    }

    /// A pod whose bind failed or whose cycle erred: retry after its backoff.
    pub fn retry(&self, mut qp: QueuedPod) {
        let mut st = self.lock();
        if st.known.contains_key(&qp.key) {
            qp.failed_at = Some(Instant::now());
            st.backoff.push(qp);
        }
    }

    /// The cluster changed in a way that may let unschedulable pods fit.
    pub fn move_all(&self) {
        let mut st = self.lock();
        st.moves += 1;
        let moved: Vec<QueuedPod> = st.unschedulable.drain().map(|(_, q)| q).collect();
        st.backoff.extend(moved);
        drop(st);
        self.ready.notify_one();
    }

    /// Sizes of (active, backoff, unschedulable), for scheduler_pending_pods.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let st = self.lock();
        (st.active.len(), st.backoff.len(), st.unschedulable.len())
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, priority: i32) -> Arc<Pod> {
        Arc::new(serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"priority": priority, "containers": []}})).expect("pod"))
    }

    #[tokio::test(start_paused = true)]
    async fn priority_then_age() {
        let q = SchedulingQueue::new();
        q.add_or_update(pod("low", 0));
        tokio::time::sleep(Duration::from_millis(1)).await;
        q.add_or_update(pod("high", 100));
        tokio::time::sleep(Duration::from_millis(1)).await;
        q.add_or_update(pod("low2", 0));
        let order: Vec<String> = vec![q.pop().await, q.pop().await, q.pop().await]
            .into_iter()
            .flatten()
            .map(|p| p.qp.key)
            .collect();
        assert_eq!(order, vec!["d/high", "d/low", "d/low2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_waits_for_a_cluster_event_then_backs_off() {
        let q = SchedulingQueue::new();
        q.add_or_update(pod("p", 0));
        let popped = q.pop().await.expect("pod");
        q.unschedulable(popped.qp, popped.moves);
        assert_eq!(q.sizes(), (0, 0, 1));
        q.move_all();
        assert_eq!(q.sizes(), (0, 1, 0));
        // first retry after 1 s of backoff
        let t = Instant::now();
        let again = q.pop().await.expect("pod");
        assert!(
            t.elapsed() >= Duration::from_millis(800),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(again.qp.attempts, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_during_the_cycle_sends_the_pod_to_backoff() {
        let q = SchedulingQueue::new();
        q.add_or_update(pod("p", 0));
        let popped = q.pop().await.expect("pod");
        q.move_all(); // a node appeared while we were scheduling
        q.unschedulable(popped.qp, popped.moves);
        assert_eq!(q.sizes(), (0, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn deleted_pods_are_skipped() {
        let q = SchedulingQueue::new();
        q.add_or_update(pod("gone", 0));
        q.add_or_update(pod("stays", 0));
        q.delete("d/gone");
        assert_eq!(q.pop().await.map(|p| p.qp.key).as_deref(), Some("d/stays"));
    }
}
