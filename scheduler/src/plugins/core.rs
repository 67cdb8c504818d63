//! The node-local plugins: NodeName, NodeUnschedulable, NodeResourcesFit,
//! NodePorts, NodeAffinity and TaintToleration. Reasons are upstream's, as
//! they appear in FailedScheduling messages.

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

use crate::framework::{
    default_normalize, CycleState, Filter, NodeInfo, Plugin, PreFilter, Resources, Score, Snapshot,
    Status, MAX_NODE_SCORE,
};
use crate::resources::pod_requests;
pub use common::selectors::{node_term_matches, tolerated};

pub struct NodeName;
impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }
}
impl Filter for NodeName {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        match pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
        {
            Some(n) if n != node.name() => {
                Status::unresolvable(self.name(), "node(s) didn't match the requested node name")
            }
            _ => Status::success(),
        }
    }
}

pub struct NodeUnschedulable;
impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }
}
impl Filter for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        if node.plain {
            return Status::success();
        }
        let unschedulable = node
            .node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !unschedulable {
            return Status::success();
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if unschedulable && !tolerated(tolerations(pod), &taint) {
            return Status::unresolvable(self.name(), "node(s) were unschedulable");
        }
        Status::success()
    }
}

/// NodeResourcesFit: requests against allocatable; scores LeastAllocated (default) or MostAllocated.
pub struct NodeResourcesFit {
    pub most_allocated: bool,
}
impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
}
const FIT_KEY: &str = "PreFilterNodeResourcesFit";

/// The pod's requests as NodeResourcesFit's PreFilter computed them: (effective, non-zero).
pub fn fit_requests(state: &CycleState) -> Option<&(Resources, Resources)> {
    state.read::<(Resources, Resources)>(FIT_KEY)
}
impl PreFilter for NodeResourcesFit {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, _: &Snapshot) -> Status {
        state.write(FIT_KEY, (pod_requests(pod, false), pod_requests(pod, true)));
        Status::success()
    }
}
impl Filter for NodeResourcesFit {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let computed;
        let req = match fit_requests(state) {
            Some((r, _)) => r,
            None => {
                computed = pod_requests(pod, false);
                &computed
            }
        };
        let mut reasons = Vec::new();
        if node.pods.len() as i64 + 1 > node.allocatable.pods {
            reasons.push("Too many pods".to_string());
        }
        if req.milli_cpu > 0
            && node.requested.milli_cpu + req.milli_cpu > node.allocatable.milli_cpu
        {
            reasons.push("Insufficient cpu".into());
        }
        if req.memory > 0 && node.requested.memory + req.memory > node.allocatable.memory {
            reasons.push("Insufficient memory".into());
        }
        if req.ephemeral_storage > 0
            && node.requested.ephemeral_storage + req.ephemeral_storage
                > node.allocatable.ephemeral_storage
        {
            reasons.push("Insufficient ephemeral-storage".into());
        }
        for (k, v) in &req.scalar {
            let have = node.allocatable.scalar.get(k).copied().unwrap_or(0);
            let used = node.requested.scalar.get(k).copied().unwrap_or(0);
            if *v > 0 && used + v > have {
                reasons.push(format!("Insufficient {k}"));
            }
        }
        if reasons.is_empty() {
            Status::success()
        } else {
            Status {
                code: crate::framework::Code::Unschedulable,
                reasons,
                plugin: self.name(),
            }
        }
    }
}
impl Score for NodeResourcesFit {
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let computed;
        let nz = match fit_requests(state) {
            Some((_, nz)) => nz,
            None => {
                computed = pod_requests(pod, true);
                &computed
            }
        };
        let part = |requested: i64, capacity: i64| -> i64 {
            if capacity <= 0 || requested > capacity {
                return 0;
            }
            if self.most_allocated {
                requested * MAX_NODE_SCORE / capacity
            } else {
                (capacity - requested) * MAX_NODE_SCORE / capacity
            }
        };
        let cpu = part(
            node.non_zero_requested.milli_cpu + nz.milli_cpu,
            node.allocatable.milli_cpu,
        );
        let mem = part(
            node.non_zero_requested.memory + nz.memory,
            node.allocatable.memory,
        );
        Ok((cpu + mem) / 2)
    }
}

pub struct NodePorts;
impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }
}
/// (protocol, hostIP, hostPort) of every container port that claims a host port.
pub fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| {
            (
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.host_ip
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                p.host_port.unwrap_or(0),
            )
        })
        .collect()
}
impl Filter for NodePorts {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        for (proto, ip, port) in host_ports(pod) {
            let clash = node.used_ports.iter().any(|(p, i, n)| {
                *p == proto && *n == port && (i == &ip || i == "0.0.0.0" || ip == "0.0.0.0")
            });
            if clash {
                return Status::unschedulable(
                    self.name(),
                    "node(s) didn't have free ports for the requested pod ports",
                );
            }
        }
        Status::success()
    }
}

/// nodeSelector and required node affinity: does the node qualify for the pod?
pub fn node_matches_pod(pod: &Pod, node: &NodeInfo) -> bool {
    let spec = match pod.spec.as_ref() {
        Some(s) => s,
        None => return true,
    };
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if spec.node_selector.is_none() && required.is_none() {
        // nothing to match: the node object is not touched (a cache miss
        // per node per cycle, a fifth of a cycle's time at 5,000 nodes)
        return true;
    }
    let labels = node.labels();
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    match required {
        Some(r) => r
            .node_selector_terms
            .iter()
            .any(|t| node_term_matches(t, labels, node.name())),
        None => true,
    }
}

pub struct NodeAffinity;
impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }
}
impl Filter for NodeAffinity {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        if node_matches_pod(pod, node) {
            Status::success()
        } else {
            Status::unresolvable(
                self.name(),
                "node(s) didn't match Pod's node affinity/selector",
            )
        }
    }
}
impl Score for NodeAffinity {
    fn score(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let preferred = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        Ok(preferred
            .into_iter()
            .flatten()
            .filter(|p| node_term_matches(&p.preference, node.labels(), node.name()))
            .map(|p| i64::from(p.weight))
            .sum())
    }
    fn normalize(&self, _: &CycleState, _: &Pod, scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

pub struct TaintToleration;
impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }
}
impl Filter for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        if node.plain {
            return Status::success();
        }
        let taints = node
            .node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default();
        for t in taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        {
            if !tolerated(tolerations(pod), t) {
                return Status::unresolvable(
                    self.name(),
                    format!(
                        "node(s) had untolerated taint {{{}: {}}}",
                        t.key,
                        t.value.as_deref().unwrap_or_default()
                    ),
                );
            }
        }
        Status::success()
    }
}
impl Score for TaintToleration {
    fn score(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        if node.plain {
            return Ok(0);
        }
        let taints = node
            .node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default();
        let prefer: Vec<Toleration> = tolerations(pod)
            .iter()
            .filter(|t| {
                t.effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
            })
            .cloned()
            .collect();
        Ok(taints
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(&prefer, t))
            .count() as i64)
    }
    fn normalize(&self, _: &CycleState, _: &Pod, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::node_info;
    use serde_json::json;

    fn node(v: serde_json::Value) -> NodeInfo {
        node_info(
            std::sync::Arc::new(serde_json::from_value(v).expect("node")),
            Vec::new(),
        )
    }
    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }
    fn small_node(name: &str) -> serde_json::Value {
        json!({"metadata": {"name": name, "labels": {"zone": "a", "disk": "ssd"}}, "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}})
    }

    #[test]
    fn resources_fit_names_every_shortage() {
        let n = node(small_node("n1"));
        let big = pod(
            json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "3", "memory": "8Gi"}}}]}}),
        );
        let st = NodeResourcesFit {
            most_allocated: false,
        }
        .filter(&CycleState::default(), &big, &n);
        assert_eq!(st.reasons, vec!["Insufficient cpu", "Insufficient memory"]);
        let ok = pod(
            json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}]}}),
        );
        assert!(NodeResourcesFit {
            most_allocated: false
        }
        .filter(&CycleState::default(), &ok, &n)
        .is_success());
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let empty = node(small_node("empty"));
        let busy_pod = std::sync::Arc::new(pod(
            json!({"spec": {"nodeName": "busy", "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1500m", "memory": "3Gi"}}}]}}),
        ));
        let busy = node_info(
            std::sync::Arc::new(serde_json::from_value(small_node("busy")).expect("node")),
            vec![busy_pod],
        );
        let p = pod(json!({"spec": {"containers": [{"name": "c", "image": "i"}]}}));
        let fit = NodeResourcesFit {
            most_allocated: false,
        };
        let st = CycleState::default();
        assert!(
            fit.score(&st, &p, &empty).expect("score") > fit.score(&st, &p, &busy).expect("score")
        );
        let most = NodeResourcesFit {
            most_allocated: true,
        };
        assert!(
            most.score(&st, &p, &empty).expect("score")
                < most.score(&st, &p, &busy).expect("score")
        );
    }

    #[test]
    fn taints_and_tolerations() {
        let n = node(
            json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}, "status": {"allocatable": {"pods": "10"}}}),
        );
        let plain = pod(json!({"spec": {"containers": []}}));
        assert_eq!(
            TaintToleration
                .filter(&CycleState::default(), &plain, &n)
                .reasons,
            vec!["node(s) had untolerated taint {dedicated: gpu}"]
        );
        let tol = pod(
            json!({"spec": {"containers": [], "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}}),
        );
        assert!(TaintToleration
            .filter(&CycleState::default(), &tol, &n)
            .is_success());
        let all = pod(json!({"spec": {"containers": [], "tolerations": [{"operator": "Exists"}]}}));
        assert!(TaintToleration
            .filter(&CycleState::default(), &all, &n)
            .is_success());
    }

    #[test]
    fn node_affinity_and_selector() {
        let n = node(small_node("n1"));
        let sel = pod(json!({"spec": {"containers": [], "nodeSelector": {"disk": "ssd"}}}));
        assert!(NodeAffinity
            .filter(&CycleState::default(), &sel, &n)
            .is_success());
        let other = pod(json!({"spec": {"containers": [], "nodeSelector": {"disk": "hdd"}}}));
        assert_eq!(
            NodeAffinity.filter(&CycleState::default(), &other, &n).code,
            crate::framework::Code::UnschedulableAndUnresolvable
        );
        let req = pod(
            json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}}),
        );
        assert!(
            NodeAffinity
                .filter(&CycleState::default(), &req, &n)
                .is_success(),
            "terms are ORed"
        );
        let pref = pod(
            json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 30, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}]}}}}),
        );
        assert_eq!(
            NodeAffinity
                .score(&CycleState::default(), &pref, &n)
                .expect("score"),
            30
        );
    }

    #[test]
    fn node_name_ports_and_unschedulable() {
        let n = node(
            json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}, "status": {"allocatable": {"pods": "10"}}}),
        );
        let p = pod(json!({"spec": {"nodeName": "n2", "containers": []}}));
        assert!(!NodeName.filter(&CycleState::default(), &p, &n).is_success());
        assert_eq!(
            NodeUnschedulable
                .filter(&CycleState::default(), &p, &n)
                .reasons,
            vec!["node(s) were unschedulable"]
        );
        let holder = std::sync::Arc::new(pod(
            json!({"spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        ));
        let with_port = node_info(
            std::sync::Arc::new(serde_json::from_value(small_node("n1")).expect("node")),
            vec![holder],
        );
        let wants = pod(
            json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        );
        assert!(!NodePorts
            .filter(&CycleState::default(), &wants, &with_port)
            .is_success());
        let udp = pod(
            json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]}]}}),
        );
        assert!(NodePorts
            .filter(&CycleState::default(), &udp, &with_port)
            .is_success());
    }
}
