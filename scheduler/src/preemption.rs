//! DefaultPreemption (the PostFilter): when a pod fits nowhere, find the node
//! where evicting lower-priority pods lets it fit, evicting as few and as
//! low-priority pods as possible, as upstream does. Pure: the scheduler
//! deletes the victims (gracefully) and nominates the node.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::cache::node_info;
use crate::framework::{CycleState, Snapshot};
use crate::scheduler::Profile;

fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// A node and the pods to evict there.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<Pod>>,
}

/// Does `pod` pass every filter on `node` holding only `pods`?
fn fits(
    profile: &Profile,
    state: &CycleState,
    pod: &Pod,
    node: &crate::framework::NodeInfo,
    pods: Vec<Arc<Pod>>,
) -> bool {
    let trial = node_info(node.node.clone(), pods);
    profile
        .filters
        .iter()
        .all(|f| f.filter(state, pod, &trial).is_success())
}

/// The best candidate among `nodes` (those that failed only as Unschedulable),
/// or why there is none (upstream's PostFilter message).
pub fn find_candidate(
    profile: &Profile,
    pod: &Pod,
    snap: &Snapshot,
    nodes: &[String],
) -> Result<Candidate, String> {
    let total = snap.nodes.len();
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
        == Some("Never")
    {
        return Err("not eligible due to preemptionPolicy=Never.".into());
    }
    // already nominated where a lower-priority pod is still going: wait for it
    let mine_prio = priority(pod);
    if let Some(nominated) = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())
    {
        let terminating = snap.get(nominated).is_some_and(|n| {
            n.pods
                .iter()
                .any(|p| p.metadata.deletion_timestamp.is_some() && priority(p) < mine_prio)
        });
        if terminating {
            return Err("not eligible due to a terminating pod on the nominated node.".into());
        }
    }
    let mut state = CycleState::default();
    for pf in &profile.pre_filters {
        pf.pre_filter(&mut state, pod, snap);
    }
    let mine = priority(pod);
    let mut best: Option<(Candidate, (i32, i64, usize))> = None;
    for name in nodes {
        let Some(node) = snap.get(name) else { continue };
        let (mut lower, keep): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) =
            node.pods.iter().cloned().partition(|p| priority(p) < mine);
        if lower.is_empty() || !fits(profile, &state, pod, node, keep.clone()) {
            continue;
        }
        // reprieve victims, most important first, while the pod still fits
        lower.sort_by_key(|p| std::cmp::Reverse(priority(p)));
        let mut kept = keep;
        let mut victims = Vec::new();
        for v in lower {
            let mut with = kept.clone();
            with.push(v.clone());
            if fits(profile, &state, pod, node, with.clone()) {
                kept = with;
            } else {
                victims.push(v);
            }
        }
        // upstream's order: lowest highest-priority victim, then smallest sum, then fewest
        let rank = (
            victims
                .iter()
                .map(|v| priority(v))
                .max()
                .unwrap_or(i32::MIN),
            victims.iter().map(|v| i64::from(priority(v))).sum::<i64>(),
            victims.len(),
        );
        if best.as_ref().is_none_or(|(_, r)| rank < *r) {
            best = Some((
                Candidate {
                    node: name.clone(),
                    victims,
                },
                rank,
            ));
        }
    }
    match best {
        Some((c, _)) => Ok(c),
        None => {
            let hopeless = total - nodes.len();
            let mut parts = Vec::new();
            if !nodes.is_empty() {
                parts.push(format!(
                    "{} No preemption victims found for incoming pod",
                    nodes.len()
                ));
            }
            if hopeless > 0 {
                parts.push(format!(
                    "{hopeless} Preemption is not helpful for scheduling"
                ));
            }
            Err(format!(
                "0/{total} nodes are available: {}.",
                parts.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use serde_json::json;

    fn pod(name: &str, node: &str, cpu: &str, prio: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"nodeName": node, "priority": prio,
                "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]}}))
            .expect("pod"),
        )
    }

    fn cluster() -> Cache {
        let mut c = Cache::default();
        for n in ["n1", "n2"] {
            c.upsert_node(Arc::new(serde_json::from_value(json!({"metadata": {"name": n}, "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "10"}}})).expect("node")));
        }
        c.upsert_pod(pod("n1-low", "n1", "1", 0));
        c.upsert_pod(pod("n1-low2", "n1", "1", 0));
        c.upsert_pod(pod("n2-mid", "n2", "1", 5));
        c.upsert_pod(pod("n2-high", "n2", "1", 1000));
        c
    }

    #[test]
    fn evicts_the_fewest_lowest_priority_pods() {
        let c = cluster();
        let profile = crate::plugins::profile(&Default::default(), 0);
        let p = pod("important", "", "1", 100);
        let cand = find_candidate(&profile, &p, &c.snapshot(), &["n1".into(), "n2".into()])
            .expect("candidate");
        // n1: one priority-0 victim suffices (the other is reprieved); n2 would need priority 5
        assert_eq!(cand.node, "n1");
        assert_eq!(cand.victims.len(), 1);
    }

    #[test]
    fn no_victims_and_never_policy() {
        let c = cluster();
        let profile = crate::plugins::profile(&Default::default(), 0);
        let low = pod("low", "", "1", 0);
        let err = find_candidate(&profile, &low, &c.snapshot(), &["n1".into(), "n2".into()])
            .expect_err("none");
        assert_eq!(
            err,
            "0/2 nodes are available: 2 No preemption victims found for incoming pod."
        );
        let mut never = (*pod("never", "", "1", 100)).clone();
        if let Some(s) = never.spec.as_mut() {
            s.preemption_policy = Some("Never".into());
        }
        assert!(find_candidate(&profile, &never, &c.snapshot(), &["n1".into()]).is_err());
    }
}
