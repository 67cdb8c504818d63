//! The scheduler's cache: every node with the pods bound or assumed on it. A
//! cycle works on a snapshot (Arc clones of the node infos), so binds that
//! land meanwhile never change what one cycle sees.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::framework::{NodeInfo, Snapshot};
use crate::plugins::core::host_ports;
use crate::resources::{allocatable, pod_requests};

pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A node's info from the node and the pods on it.
pub fn node_info(node: Arc<Node>, pods: Vec<Arc<Pod>>) -> NodeInfo {
    let mut info = NodeInfo {
        allocatable: allocatable(&node),
        node,
        pods: Vec::new(),
        requested: Default::default(),
        non_zero_requested: Default::default(),
        used_ports: Default::default(),
    };
    for p in pods {
        add_pod(&mut info, p);
    }
    info
}

fn add_pod(info: &mut NodeInfo, p: Arc<Pod>) {
    let r = pod_requests(&p, false);
    let nz = pod_requests(&p, true);
    info.requested.milli_cpu += r.milli_cpu;
    info.requested.memory += r.memory;
    info.requested.ephemeral_storage += r.ephemeral_storage;
    info.requested.pods += 1;
    for (k, v) in r.scalar {
        *info.requested.scalar.entry(k).or_insert(0) += v;
    }
    info.non_zero_requested.milli_cpu += nz.milli_cpu;
    info.non_zero_requested.memory += nz.memory;
    info.used_ports.extend(host_ports(&p));
    info.pods.push(p);
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

#[derive(Default)]
pub struct Cache {
    nodes: HashMap<String, Arc<Node>>,
    /// pod key -> (node, pod) for bound and assumed pods
    pods: HashMap<String, (String, Arc<Pod>)>,
    infos: HashMap<String, Arc<NodeInfo>>,
    /// node names in a stable order
    order: Vec<String>,
}

impl Cache {
    fn rebuild(&mut self, node: &str) {
        let Some(n) = self.nodes.get(node) else {
            self.infos.remove(node);
            return;
        };
        let pods: Vec<Arc<Pod>> = self
            .pods
            .values()
            .filter(|(nn, _)| nn == node)
            .map(|(_, p)| p.clone())
            .collect();
        self.infos
            .insert(node.to_string(), Arc::new(node_info(n.clone(), pods)));
    }

    pub fn upsert_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if !self.nodes.contains_key(&name) {
            self.order.push(name.clone());
        }
        self.nodes.insert(name.clone(), node);
        self.rebuild(&name);
    }

    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
        self.infos.remove(name);
        self.order.retain(|n| n != name);
    }

    /// A pod seen by the informer: counted on its node while bound and not finished.
    pub fn upsert_pod(&mut self, pod: Arc<Pod>) {
        let key = pod_key(&pod);
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let old = self.pods.remove(&key).map(|(n, _)| n);
        if !node.is_empty() && !terminal(&pod) {
            self.pods.insert(key, (node.clone(), pod));
            self.rebuild(&node);
        }
        if let Some(o) = old.filter(|o| *o != node) {
            self.rebuild(&o);
        }
    }

    pub fn remove_pod(&mut self, key: &str) {
        if let Some((node, _)) = self.pods.remove(key) {
            self.rebuild(&node);
        }
    }

    /// Count `pod` on `node` before the bind lands, so the next cycle sees it.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        let mut p = pod.clone();
        if let Some(s) = p.spec.as_mut() {
            s.node_name = Some(node.to_string());
        }
        self.pods
            .insert(pod_key(pod), (node.to_string(), Arc::new(p)));
        self.rebuild(node);
    }

    pub fn snapshot(&self) -> Snapshot {
        let nodes: Vec<Arc<NodeInfo>> = self
            .order
            .iter()
            .filter_map(|n| self.infos.get(n).cloned())
            .collect();
        let by_name = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name().to_string(), i))
            .collect();
        Snapshot { nodes, by_name }
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}
