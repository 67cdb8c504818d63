//! The scheduler's cache: every node with the pods bound or assumed on it. A
//! cycle works on a snapshot (an Arc of the node infos), so binds that land
//! meanwhile never change what one cycle sees; the cache copies its list only
//! when a snapshot still holds it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::framework::{NodeInfo, Snapshot};
use crate::plugins::core::host_ports;
use crate::plugins::interpod::{has_any_terms, required_anti_affinity};
use crate::plugins::scoring::node_images;
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
        images: Arc::new(node_images(&node)),
        plain: node.spec.as_ref().is_none_or(|s| {
            !s.unschedulable.unwrap_or(false) && s.taints.as_ref().is_none_or(Vec::is_empty)
        }),
        node,
        pods: Vec::new(),
        requested: Default::default(),
        non_zero_requested: Default::default(),
        used_ports: Default::default(),
        anti_pods: 0,
        term_pods: 0,
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
    info.anti_pods += u32::from(!required_anti_affinity(&p).is_empty());
    info.term_pods += u32::from(has_any_terms(&p));
    info.pods.push(p);
}

/// Do two versions of a pod count the same on their node (requests, host
/// ports, labels and affinity, which is all node infos and plugins read)?
fn same_for_scheduling(a: &Pod, b: &Pod) -> bool {
    a.metadata.labels == b.metadata.labels
        && a.metadata.namespace == b.metadata.namespace
        && a.metadata.deletion_timestamp.is_some() == b.metadata.deletion_timestamp.is_some()
        && pod_requests(a, false) == pod_requests(b, false)
        && pod_requests(a, true) == pod_requests(b, true)
        && host_ports(a) == host_ports(b)
        && a.spec.as_ref().map(|s| &s.affinity) == b.spec.as_ref().map(|s| &s.affinity)
        && a.spec.as_ref().map(|s| &s.topology_spread_constraints)
            == b.spec.as_ref().map(|s| &s.topology_spread_constraints)
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Nodes and the pods on them; node infos are updated in place (copied only
/// when a snapshot still holds them), so a cycle costs O(nodes) pointer copies.
#[derive(Default)]
pub struct Cache {
    nodes: HashMap<String, Arc<Node>>,
    /// pod key -> node it is bound or assumed to
    pod_node: HashMap<String, String>,
    /// node -> pod key -> pod
    node_pods: HashMap<String, HashMap<String, Arc<Pod>>>,
    /// node infos in a stable order, and each name's position
    infos: Arc<Vec<Arc<NodeInfo>>>,
    index: Arc<HashMap<String, usize>>,
    /// image -> number of nodes holding it
    images: Arc<HashMap<String, usize>>,
    /// nodes whose pods carry required anti-affinity terms / any terms
    anti_nodes: Arc<BTreeSet<usize>>,
    term_nodes: Arc<BTreeSet<usize>>,
}

impl Cache {
    fn reindex(&mut self) {
        let index = self
            .infos
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name().to_string(), i))
            .collect();
        self.index = Arc::new(index);
        self.anti_nodes = Arc::default();
        self.term_nodes = Arc::default();
        for i in 0..self.infos.len() {
            self.note_terms(i);
        }
    }

    /// Keep the sets of nodes with affinity terms in step with node `i`'s info.
    fn note_terms(&mut self, i: usize) {
        let Some(info) = self.infos.get(i) else {
            return;
        };
        let (anti, any) = (info.anti_pods > 0, info.term_pods > 0);
        for (set, on) in [(&mut self.anti_nodes, anti), (&mut self.term_nodes, any)] {
            if set.contains(&i) != on {
                let s = Arc::make_mut(set);
                if on {
                    s.insert(i);
                } else {
                    s.remove(&i);
                }
            }
        }
    }

    /// Recompute one node's info from its pods.
    fn rebuild(&mut self, node: &str) {
        let Some(n) = self.nodes.get(node).cloned() else {
            return;
        };
        let pods: Vec<Arc<Pod>> = self
            .node_pods
            .get(node)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let info = Arc::new(node_info(n, pods));
        let (old, at) = match self.index.get(node).copied() {
            Some(i) => (
                Some(std::mem::replace(
                    &mut Arc::make_mut(&mut self.infos)[i],
                    info.clone(),
                )),
                i,
            ),
            None => {
                Arc::make_mut(&mut self.infos).push(info.clone());
                let i = self.infos.len() - 1;
                Arc::make_mut(&mut self.index).insert(node.to_string(), i);
                (None, i)
            }
        };
        self.note_terms(at);
        let old_images = old.map(|o| o.images.clone()).unwrap_or_default();
        if !Arc::ptr_eq(&old_images, &info.images) && *old_images != *info.images {
            self.count_images(&old_images, -1);
            self.count_images(&info.images, 1);
        }
    }

    fn count_images(&mut self, images: &HashMap<String, i64>, by: isize) {
        if images.is_empty() {
            return;
        }
        let counts = Arc::make_mut(&mut self.images);
        for img in images.keys() {
            let c = counts.entry(img.clone()).or_insert(0);
            *c = c.saturating_add_signed(by);
            if *c == 0 {
                counts.remove(img);
            }
        }
    }

    pub fn upsert_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        self.nodes.insert(name.clone(), node);
        self.rebuild(&name);
    }

    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
        if let Some(i) = self.index.get(name).copied() {
            let gone = Arc::make_mut(&mut self.infos).remove(i);
            self.count_images(&gone.images.clone(), -1);
            self.reindex();
        }
    }

    fn place(&mut self, key: String, node: &str, pod: Arc<Pod>) {
        if let Some(old) = self.pod_node.insert(key.clone(), node.to_string()) {
            if old != node {
                if let Some(m) = self.node_pods.get_mut(&old) {
                    m.remove(&key);
                }
                self.rebuild(&old);
            }
        }
        let previous = self
            .node_pods
            .entry(node.to_string())
            .or_default()
            .insert(key, pod.clone());
        match (previous, self.index.get(node).copied()) {
            // a new pod on a known node: add it to the node's info without a rebuild
            (None, Some(i)) => {
                add_pod(Arc::make_mut(&mut Arc::make_mut(&mut self.infos)[i]), pod);
                self.note_terms(i);
            }
            // the bind of an assumed pod, or an update nothing here reads:
            // the node's info stays as it is (no copy of the node list)
            (Some(prev), Some(_)) if same_for_scheduling(&prev, &pod) => {}
            _ => self.rebuild(node),
        }
    }

    /// A pod seen by the informer: counted on its node while bound and not finished.
    pub fn upsert_pod(&mut self, pod: Arc<Pod>) {
        let key = pod_key(&pod);
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if node.is_empty() || terminal(&pod) {
            self.remove_pod(&key);
            return;
        }
        self.place(key, &node, pod);
    }

    pub fn remove_pod(&mut self, key: &str) {
        if let Some(node) = self.pod_node.remove(key) {
            if let Some(m) = self.node_pods.get_mut(&node) {
                m.remove(key);
            }
            self.rebuild(&node);
        }
    }

    /// Count `pod` on `node` before the bind lands, so the next cycle sees it.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        let mut p = pod.clone();
        if let Some(s) = p.spec.as_mut() {
            s.node_name = Some(node.to_string());
        }
        self.place(pod_key(pod), node, Arc::new(p));
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            nodes: self.infos.clone(),
            by_name: self.index.clone(),
            images: self.images.clone(),
            anti_nodes: self.anti_nodes.clone(),
            term_nodes: self.term_nodes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, cpu: &str) -> Arc<Pod> {
        Arc::new(serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]}})).expect("pod"))
    }
    fn node(name: &str) -> Arc<Node> {
        Arc::new(serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": "4", "pods": "10"}}})).expect("node"))
    }

    #[test]
    fn nodes_with_affinity_terms_follow_their_pods() {
        let mut c = Cache::default();
        c.upsert_node(node("a"));
        c.upsert_node(node("b"));
        let anti: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "x", "namespace": "d"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "affinity": {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "w"}}, "topologyKey": "zone"}]}}}}))
        .expect("pod");
        let sets = |c: &Cache| {
            let s = c.snapshot();
            let names = |set: &BTreeSet<usize>| -> Vec<String> {
                set.iter().map(|&i| s.nodes[i].name().to_string()).collect()
            };
            (names(&s.anti_nodes), names(&s.term_nodes))
        };
        assert_eq!(sets(&c), (vec![], vec![]));
        c.assume(&anti, "b");
        assert_eq!(sets(&c), (vec!["b".to_string()], vec!["b".to_string()]));
        c.upsert_pod(pod("p", "b", "1"));
        assert_eq!(sets(&c).0, ["b"]);
        // a node before it goes: the indexes shift and the sets with them
        c.remove_node("a");
        assert_eq!(sets(&c), (vec!["b".to_string()], vec!["b".to_string()]));
        c.remove_pod("d/x");
        assert_eq!(sets(&c), (vec![], vec![]));
    }

    #[test]
    fn pods_move_and_snapshots_stay_put() {
        let mut c = Cache::default();
        c.upsert_node(node("a"));
        c.upsert_node(node("b"));
        c.upsert_pod(pod("p", "a", "1"));
        let before = c.snapshot();
        c.assume(&pod("q", "", "2"), "a");
        let after = c.snapshot();
        assert_eq!(
            before.get("a").map(|n| n.requested.milli_cpu),
            Some(1000),
            "an old snapshot does not change"
        );
        assert_eq!(after.get("a").map(|n| n.requested.milli_cpu), Some(3000));
        // the informer reports q bound to b after all
        c.upsert_pod(pod("q", "b", "2"));
        let s = c.snapshot();
        assert_eq!(s.get("a").map(|n| n.requested.milli_cpu), Some(1000));
        assert_eq!(s.get("b").map(|n| n.pods.len()), Some(1));
        c.remove_pod("d/p");
        c.remove_node("b");
        let s = c.snapshot();
        assert_eq!(s.nodes.len(), 1);
        assert_eq!(s.get("a").map(|n| n.requested.milli_cpu), Some(0));
        assert!(s.get("b").is_none());
    }

    #[test]
    fn a_bind_confirming_an_assumption_copies_nothing() {
        let mut c = Cache::default();
        c.upsert_node(node("a"));
        c.assume(&pod("q", "", "2"), "a");
        let held = c.snapshot();
        // the informer reports the bind: same node, same requests
        c.upsert_pod(pod("q", "a", "2"));
        assert!(
            Arc::ptr_eq(&held.nodes, &c.snapshot().nodes),
            "the node list was copied for a bind that changes nothing"
        );
        // a change that matters is seen
        c.upsert_pod(pod("q", "a", "3"));
        assert_eq!(
            c.snapshot().get("a").map(|n| n.requested.milli_cpu),
            Some(3000)
        );
    }
}
