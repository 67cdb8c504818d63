//! node-lifecycle-controller and taint-eviction-controller.
//!
//! Node lifecycle, as upstream: a node is healthy while its kubelet renews
//! its Lease in kube-node-lease (or posts status). When neither has changed,
//! as this process observed it, for `--node-monitor-grace-period` (40 s),
//! its Ready (and pressure) conditions become Unknown ("Kubelet stopped
//! posting node status."). A node whose Ready is Unknown is tainted
//! node.kubernetes.io/unreachable:NoExecute, False gives
//! node.kubernetes.io/not-ready:NoExecute, True removes both. New taints are
//! rate-limited per zone: `--node-eviction-rate` per second normally; once
//! `--unhealthy-zone-threshold` of a zone is unhealthy, the secondary rate in
//! zones larger than `--large-cluster-size-threshold` and none in smaller
//! ones; and none anywhere when every zone is fully unhealthy (then the
//! fault is more likely this side's), so a partition does not empty the
//! cluster.
//!
//! Taint eviction: a pod on a node with NoExecute taints it does not
//! tolerate is deleted now; one tolerating them for tolerationSeconds is
//! deleted that long after the taint was added (event TaintManagerEviction).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::events::{EventType, Recorder};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::{Ctx, Started};
use common::selectors::tolerates;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const LEASE_NS: &str = "kube-node-lease";

/// The Ready condition's status ("True", "False", "Unknown"), None if absent.
fn ready_status(node: &Node) -> Option<String> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
}

/// The NoExecute taint a node's readiness calls for.
pub fn wanted_taint(ready: Option<&str>) -> Option<&'static str> {
    match ready {
        Some("True") => None,
        Some("False") => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    }
}

/// Zone health, as upstream names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

pub fn zone_state(not_ready: usize, total: usize, unhealthy_threshold: f64) -> ZoneState {
    if total > 0 && not_ready == total {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / total.max(1) as f64 >= unhealthy_threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// When a pod must go because of a node's NoExecute taints: None = it
/// tolerates them forever; Some(t) = at unix second t (now, if it does not
/// tolerate one at all).
pub fn eviction_time(pod: &Pod, taints: &[Taint], now: i64) -> Option<i64> {
    let tols: &[Toleration] = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let mut when: Option<i64> = None;
    for t in taints.iter().filter(|t| t.effect == "NoExecute") {
        let added = t.time_added.as_ref().map_or(now, |a| a.0.as_second());
        let matching: Vec<&Toleration> = tols.iter().filter(|tol| tolerates(tol, t)).collect();
        if matching.is_empty() {
            return Some(now);
        }
        // the shortest tolerationSeconds among the matching tolerations; none = forever
        if let Some(secs) = matching
            .iter()
            .filter_map(|tol| tol.toleration_seconds)
            .min()
        {
            let at = added + secs.max(0);
            when = Some(when.map_or(at, |w| w.min(at)));
        }
    }
    when
}

/// A token bucket of node taints per zone.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, rate: f64) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + rate * now.duration_since(self.at).as_secs_f64()).min(1.0);
        self.at = now;
        if rate > 0.0 && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(monitor(ctx))
}

pub fn start_taint_eviction(ctx: Ctx) -> Started {
    Box::pin(evict(ctx))
}

fn zone(node: &Node) -> String {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ZONE_LABEL))
        .cloned()
        .unwrap_or_default()
}

async fn monitor(ctx: Ctx) {
    let nodes = ctx.informers.get::<Node>();
    let leases = ctx.informers.get::<Lease>();
    nodes.wait_synced().await;
    leases.wait_synced().await;
    let s = ctx.settings.clone();
    // node -> (what we last saw of its heartbeats, when we saw it change)
    let mut observed: HashMap<String, (String, Instant)> = HashMap::new();
    let mut buckets: HashMap<String, Bucket> = HashMap::new();
    let mut stop = ctx.stop.clone();
    let started = Instant::now();
    loop {
        let all = nodes.store().state();
        let lease_store = leases.store();
        // per-zone health, for the rate of new taints
        let mut zones: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for n in &all {
            let z = zones.entry(zone(n)).or_default();
            z.1 += 1;
            if ready_status(n).as_deref() != Some("True") {
                z.0 += 1;
            }
        }
        let all_zones_down = !zones.is_empty()
            && zones.values().all(|&(nr, t)| {
                zone_state(nr, t, s.unhealthy_zone_threshold) == ZoneState::FullDisruption
            });
        for node in &all {
            let name = node.metadata.name.clone().unwrap_or_default();
            let lease = lease_store.get(&ObjectRef::new(&name).within(LEASE_NS));
            let heartbeat = format!(
                "{:?}/{:?}",
                lease
                    .as_ref()
                    .and_then(|l| l.spec.as_ref())
                    .and_then(|s| s.renew_time.clone())
                    .map(|t| t.0),
                node.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                    .and_then(|c| c.last_heartbeat_time.clone())
                    .map(|t| t.0)
            );
            let seen = observed
                .entry(name.clone())
                .or_insert_with(|| (heartbeat.clone(), Instant::now()));
            if seen.0 != heartbeat {
                *seen = (heartbeat, Instant::now());
            }
            // give every node a full grace period after this process starts
            let silent = seen.1.max(started).elapsed();
            if silent > s.node_monitor_grace_period
                && ready_status(node).as_deref() != Some("Unknown")
            {
                if let Err(e) = mark_unknown(&ctx.client, node).await {
                    tracing::warn!(node = %name, error = %e, "marking the node's status Unknown");
                }
                continue;
            }
            let z = zone(node);
            let (not_ready, total) = zones.get(&z).copied().unwrap_or_default();
            let rate = match zone_state(not_ready, total, s.unhealthy_zone_threshold) {
                _ if all_zones_down => 0.0,
                ZoneState::Normal | ZoneState::FullDisruption => s.node_eviction_rate,
                ZoneState::PartialDisruption if total > s.large_cluster_size_threshold => {
                    s.secondary_node_eviction_rate
                }
                ZoneState::PartialDisruption => 0.0,
            };
            let bucket = buckets.entry(z).or_insert_with(|| Bucket {
                tokens: 1.0,
                at: Instant::now(),
            });
            if let Err(e) = reconcile_taints(&ctx.client, node, bucket, rate).await {
                tracing::warn!(node = %name, error = %e, "updating the node's taints");
            }
        }
        observed.retain(|n, _| {
            all.iter()
                .any(|x| x.metadata.name.as_deref() == Some(n.as_str()))
        });
        tokio::select! {
            _ = tokio::time::sleep(s.node_monitor_period) => {}
            _ = common::stopped(&mut stop) => return,
        }
    }
}

async fn mark_unknown(client: &kube::Client, node: &Node) -> anyhow::Result<()> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for t in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        match conditions.iter_mut().find(|c| c.type_ == t) {
            Some(c) => {
                if c.status != "Unknown" {
                    c.last_transition_time = Some(now.clone());
                }
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
            }
            None => conditions.push(k8s_openapi::api::core::v1::NodeCondition {
                type_: t.into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_transition_time: Some(now.clone()),
                last_heartbeat_time: None,
            }),
        }
    }
    let api: Api<Node> = Api::all(client.clone());
    let name = node.metadata.name.as_deref().unwrap_or_default();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": conditions}})),
    )
    .await?;
    tracing::info!(
        node = name,
        "node stopped posting status; conditions now Unknown"
    );
    Ok(())
}

async fn reconcile_taints(
    client: &kube::Client,
    node: &Node,
    bucket: &mut Bucket,
    rate: f64,
) -> anyhow::Result<()> {
    let want = wanted_taint(ready_status(node).as_deref());
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let ours = |t: &Taint| (t.key == UNREACHABLE || t.key == NOT_READY) && t.effect == "NoExecute";
    let have: Vec<&Taint> = taints.iter().filter(|t| ours(t)).collect();
    let right = match want {
        None => have.is_empty(),
        Some(k) => have.len() == 1 && have[0].key == k,
    };
    if right {
        return Ok(());
    }
    // a new taint waits for the zone's rate limit; swapping or removing does not
    if want.is_some() && have.is_empty() && !bucket.take(rate) {
        return Ok(());
    }
    let mut next: Vec<Taint> = taints.iter().filter(|t| !ours(t)).cloned().collect();
    if let Some(k) = want {
        next.push(Taint {
            key: k.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            value: None,
        });
    }
    let api: Api<Node> = Api::all(client.clone());
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"taints": next}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(node = name, taint = ?want, "node taints updated");
    Ok(())
}

async fn evict(ctx: Ctx) {
    let nodes = ctx.informers.get::<Node>();
    let pods = ctx.informers.get::<Pod>();
    nodes.wait_synced().await;
    pods.wait_synced().await;
    let recorder = Recorder::new(ctx.client.clone(), "taint-eviction-controller", None);
    let evicted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut stop = ctx.stop.clone();
    loop {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let node_store: Store<Node> = nodes.store();
        for pod in pods.store().state() {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            let Some(node) = node_store.get(&ObjectRef::new(&node_name)) else {
                continue;
            };
            let taints = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            let Some(at) = eviction_time(&pod, &taints, now) else {
                continue;
            };
            if at > now {
                continue;
            }
            let key = crate::key_of(&pod.metadata);
            {
                let mut e = evicted.lock().unwrap_or_else(|p| p.into_inner());
                e.retain(|_, t| t.elapsed() < Duration::from_secs(60));
                if e.contains_key(&key) {
                    continue;
                }
                e.insert(key.clone(), Instant::now());
            }
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let obj = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            };
            recorder.emit(
                &obj,
                EventType::Normal,
                "TaintManagerEviction",
                &format!("Marking for deletion Pod {key}"),
            );
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(pod = %key, node = %node_name, "evicted for the node's NoExecute taints")
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(pod = %key, error = %e, "evicting");
                    evicted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = common::stopped(&mut stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, added: i64) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: k8s_openapi::jiff::Timestamp::from_second(added)
                .ok()
                .map(Time),
            value: None,
        }
    }

    fn pod(tols: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"spec": {"containers": [], "tolerations": tols}}))
            .expect("pod")
    }

    #[test]
    fn eviction_times_as_upstream() {
        let t = [taint(UNREACHABLE, 1000)];
        assert_eq!(eviction_time(&pod(json!([])), &t, 1005), Some(1005));
        let p = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        assert_eq!(eviction_time(&p, &t, 1005), Some(1300));
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_time(&forever, &t, 1005), None);
        let other = pod(json!([{"key": NOT_READY, "operator": "Exists", "effect": "NoExecute"}]));
        assert_eq!(eviction_time(&other, &t, 1005), Some(1005));
        assert_eq!(eviction_time(&pod(json!([])), &[], 1005), None);
    }

    #[test]
    fn zones_and_taints() {
        assert_eq!(wanted_taint(Some("True")), None);
        assert_eq!(wanted_taint(Some("False")), Some(NOT_READY));
        assert_eq!(wanted_taint(Some("Unknown")), Some(UNREACHABLE));
        assert_eq!(wanted_taint(None), Some(UNREACHABLE));
        assert_eq!(zone_state(0, 10, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(6, 10, 0.55), ZoneState::PartialDisruption);
        assert_eq!(zone_state(2, 3, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(3, 3, 0.55), ZoneState::FullDisruption);
    }

    #[test]
    fn the_bucket_limits_new_taints() {
        let mut b = Bucket {
            tokens: 1.0,
            at: Instant::now(),
        };
        assert!(b.take(0.1));
        assert!(!b.take(0.1), "a second node at once must wait");
        assert!(!b.take(0.0));
    }
}
