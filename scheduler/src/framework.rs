//! The scheduling framework: one trait per extension point, plugins with a
//! name, a `Status` with upstream's codes, and `NodeInfo`, the per-node view
//! (node, its pods, what they request) each cycle reads from an immutable
//! snapshot. Plugins are pure functions of (pod, node info, cycle state).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

/// Upstream's status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Success,
    /// the pod does not fit, but preemption may help
    Unschedulable,
    /// the pod does not fit and preemption cannot help
    UnschedulableAndUnresolvable,
    /// the plugin has nothing to say about this pod (skip its later steps)
    Skip,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    /// human reasons, as they appear in FailedScheduling messages ("Insufficient cpu")
    pub reasons: Vec<String>,
    pub plugin: &'static str,
}

impl Status {
    pub fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }
    pub fn skip() -> Status {
        Status {
            code: Code::Skip,
            reasons: Vec::new(),
            plugin: "",
        }
    }
    pub fn unschedulable(plugin: &'static str, reason: impl Into<String>) -> Status {
        Status {
            code: Code::Unschedulable,
            reasons: vec![reason.into()],
            plugin,
        }
    }
    pub fn unresolvable(plugin: &'static str, reason: impl Into<String>) -> Status {
        Status {
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![reason.into()],
            plugin,
        }
    }
    pub fn error(plugin: &'static str, reason: impl Into<String>) -> Status {
        Status {
            code: Code::Error,
            reasons: vec![reason.into()],
            plugin,
        }
    }
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
}

/// Quantities the scheduler counts: CPU in millicores, memory in bytes, pods,
/// and every other resource by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    pub scalar: BTreeMap<String, i64>,
}

/// One node and what is placed on it (bound or assumed pods).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub pods: Vec<Arc<Pod>>,
    /// sum of the pods' effective requests
    pub requested: Resources,
    /// like `requested` but counting pods without requests as upstream's
    /// non-zero defaults (100m CPU, 200 MiB) for scoring
    pub non_zero_requested: Resources,
    pub allocatable: Resources,
    /// host ports in use: (protocol, hostIP, port)
    pub used_ports: HashSet<(String, String, i32)>,
    /// the node's images (normalised names) and their sizes, from its status
    pub images: Arc<HashMap<String, i64>>,
    /// schedulable and without taints: the taint plugins need not look at the
    /// node object (which would cost a cache miss per node per cycle)
    pub plain: bool,
    /// how many of its pods have required anti-affinity terms, and any
    /// (anti-)affinity terms at all (InterPodAffinity's starting points)
    pub anti_pods: u32,
    pub term_pods: u32,
}

impl NodeInfo {
    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.node.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }
}

/// Everything one cycle sees: node infos in a stable order, fixed for the
/// cycle. Taking one costs a few pointer copies: the cache changes its copy
/// only once no snapshot holds it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub nodes: Arc<Vec<Arc<NodeInfo>>>,
    /// node name -> index in `nodes`; shared between snapshots until the node set changes
    pub by_name: Arc<HashMap<String, usize>>,
    /// image -> how many nodes hold it (ImageLocality's spread)
    pub images: Arc<HashMap<String, usize>>,
    /// indexes of the nodes holding pods with required anti-affinity terms,
    /// and of those holding pods with any (anti-)affinity terms
    pub anti_nodes: Arc<BTreeSet<usize>>,
    pub term_nodes: Arc<BTreeSet<usize>>,
}

impl Snapshot {
    /// A snapshot of these nodes, with its indexes computed.
    pub fn from_nodes(nodes: Vec<Arc<NodeInfo>>) -> Snapshot {
        let by_name = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name().to_string(), i))
            .collect();
        let mut images = HashMap::new();
        for n in &nodes {
            for img in n.images.keys() {
                *images.entry(img.clone()).or_insert(0) += 1;
            }
        }
        let with = |f: fn(&NodeInfo) -> bool| {
            Arc::new(
                nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| f(n))
                    .map(|(i, _)| i)
                    .collect(),
            )
        };
        Snapshot {
            anti_nodes: with(|n| n.anti_pods > 0),
            term_nodes: with(|n| n.term_pods > 0),
            nodes: Arc::new(nodes),
            by_name: Arc::new(by_name),
            images: Arc::new(images),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.by_name.get(name).and_then(|&i| self.nodes.get(i))
    }

    /// Every node, borrowed (what PreScore takes when all nodes are feasible).
    pub fn infos(&self) -> Vec<&NodeInfo> {
        self.nodes.iter().map(|n| &**n).collect()
    }
}

/// Per-cycle data plugins pass from PreFilter/PreScore to Filter/Score.
/// A handful of entries read once per node per plugin: a short list beats a
/// hash map here (this was ~6% of the scheduler's CPU with SipHash).
#[derive(Default)]
pub struct CycleState {
    data: Vec<(&'static str, Box<dyn Any + Send + Sync>)>,
}

impl CycleState {
    pub fn write<T: Any + Send + Sync>(&mut self, key: &'static str, v: T) {
        match self.data.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = Box::new(v),
            None => self.data.push((key, Box::new(v))),
        }
    }
    pub fn read<T: Any + Send + Sync>(&self, key: &'static str) -> Option<&T> {
        self.data
            .iter()
            .find(|(k, _)| std::ptr::eq(*k, key) || *k == key)
            .and_then(|(_, b)| b.downcast_ref())
    }
}

/// The highest score a plugin gives a node, after normalisation.
pub const MAX_NODE_SCORE: i64 = 100;

pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
}

pub trait PreFilter: Plugin {
    /// Compute what Filter needs, once per cycle; Skip means "Filter has nothing to check".
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, snapshot: &Snapshot) -> Status;
}

pub trait Filter: Plugin {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status;
}

pub trait PreScore: Plugin {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
        snapshot: &Snapshot,
    ) -> Status;
}

pub trait Score: Plugin {
    /// A raw score for one feasible node.
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status>;
    /// Bring raw scores into 0..=MAX_NODE_SCORE (default: leave them).
    fn normalize(&self, _state: &CycleState, _pod: &Pod, _scores: &mut [i64]) {}
}

/// Normalise scores to 0..=MAX so the highest raw score gets MAX (`reverse`: the lowest does).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = MAX_NODE_SCORE * *s / max;
        *s = if reverse { MAX_NODE_SCORE - v } else { v };
    }
}
