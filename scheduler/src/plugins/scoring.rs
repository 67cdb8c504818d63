//! Score plugins that weigh nodes without filtering them:
//! NodeResourcesBalancedAllocation (prefer nodes whose CPU and memory use
//! stay even) and ImageLocality (prefer nodes that already hold the pod's
//! images, discounted by how widely they are spread).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{
    CycleState, NodeInfo, Plugin, PreScore, Score, Snapshot, Status, MAX_NODE_SCORE,
};
use crate::resources::pod_requests;

pub struct BalancedAllocation;
impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }
}
impl Score for BalancedAllocation {
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let computed;
        let req = match crate::plugins::core::fit_requests(state) {
            Some((_, nz)) => nz,
            None => {
                computed = pod_requests(pod, true);
                &computed
            }
        };
        let frac = |used: i64, cap: i64| {
            if cap <= 0 {
                1.0
            } else {
                (used as f64 / cap as f64).min(1.0)
            }
        };
        let cpu = frac(
            node.non_zero_requested.milli_cpu + req.milli_cpu,
            node.allocatable.milli_cpu,
        );
        let mem = frac(
            node.non_zero_requested.memory + req.memory,
            node.allocatable.memory,
        );
        // the standard deviation of two fractions is half their distance
        let std = (cpu - mem).abs() / 2.0;
        Ok(((1.0 - std) * MAX_NODE_SCORE as f64) as i64)
    }
}

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;
const SPREAD_KEY: &str = "PreScoreImageLocality";

/// "busybox" and "docker.io/library/busybox:latest" name the same image.
pub fn normalize_image(name: &str) -> String {
    let (repo, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let mut full = repo.to_string();
    let first = repo.split('/').next().unwrap_or(repo);
    let has_registry =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_registry {
        full = if repo.contains('/') {
            format!("docker.io/{repo}")
        } else {
            format!("docker.io/library/{repo}")
        };
    }
    match digest {
        Some(d) => format!("{full}@{d}"),
        None if last.contains(':') => full,
        None => format!("{full}:latest"),
    }
}

/// A node's images by normalised name, with their sizes (kept on its NodeInfo).
pub fn node_images(node: &k8s_openapi::api::core::v1::Node) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for img in node
        .status
        .as_ref()
        .and_then(|s| s.images.as_deref())
        .unwrap_or_default()
    {
        for n in img.names.iter().flatten() {
            out.insert(normalize_image(n), img.size_bytes.unwrap_or(0));
        }
    }
    out
}

fn pod_images(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter_map(|c| c.image.as_deref())
        .map(normalize_image)
        .collect()
}

pub struct ImageLocality;
impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        "ImageLocality"
    }
}
impl PreScore for ImageLocality {
    /// How many nodes hold each of the pod's images, out of how many.
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        _: &[&NodeInfo],
        snap: &Snapshot,
    ) -> Status {
        let counts: HashMap<String, usize> = pod_images(pod)
            .into_iter()
            .map(|i| {
                let n = snap.images.get(&i).copied().unwrap_or(0);
                (i, n)
            })
            .collect();
        state.write(SPREAD_KEY, (counts, snap.nodes.len().max(1)));
        Status::success()
    }
}
impl Score for ImageLocality {
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some((counts, total)) = state.read::<(HashMap<String, usize>, usize)>(SPREAD_KEY)
        else {
            return Ok(0);
        };
        if node.images.is_empty() {
            return Ok(0);
        }
        let images = pod_images(pod);
        let sum: i64 = images
            .iter()
            .filter_map(|i| {
                node.images
                    .get(i)
                    .map(|size| (size, counts.get(i).copied().unwrap_or(0)))
            })
            .map(|(size, n)| (*size as f64 * n as f64 / *total as f64) as i64)
            .sum();
        let max = MAX_CONTAINER_THRESHOLD * images.len().max(1) as i64;
        let clamped = sum.clamp(MIN_THRESHOLD, max);
        Ok(MAX_NODE_SCORE * (clamped - MIN_THRESHOLD) / (max - MIN_THRESHOLD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::node_info;
    use serde_json::json;
    use std::sync::Arc;

    fn node(v: serde_json::Value) -> Arc<NodeInfo> {
        Arc::new(node_info(
            Arc::new(serde_json::from_value(v).expect("node")),
            Vec::new(),
        ))
    }

    #[test]
    fn image_names() {
        assert_eq!(
            normalize_image("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_image("busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(normalize_image("me/app"), "docker.io/me/app:latest");
        assert_eq!(
            normalize_image("127.0.0.1:5000/busybox:1"),
            "127.0.0.1:5000/busybox:1"
        );
        assert_eq!(
            normalize_image("registry.local/x@sha256:ab"),
            "registry.local/x@sha256:ab"
        );
    }

    #[test]
    fn balanced_prefers_even_use() {
        let p: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}})).expect("pod");
        let even = node(
            json!({"metadata": {"name": "even"}, "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "10"}}}),
        );
        let skewed = node(
            json!({"metadata": {"name": "skewed"}, "status": {"allocatable": {"cpu": "4", "memory": "64Gi", "pods": "10"}}}),
        );
        let st = CycleState::default();
        let (a, b) = (
            BalancedAllocation.score(&st, &p, &even).expect("s"),
            BalancedAllocation.score(&st, &p, &skewed).expect("s"),
        );
        assert_eq!(a, 100);
        assert!(b < a, "{b} < {a}");
    }

    #[test]
    fn image_present_scores_higher() {
        let with = node(
            json!({"metadata": {"name": "with"}, "status": {"images": [{"names": ["docker.io/library/big:1"], "sizeBytes": 600 * MB}]}}),
        );
        let without = node(json!({"metadata": {"name": "without"}}));
        let snap = Snapshot::from_nodes(vec![with.clone(), without.clone()]);
        let p: Pod = serde_json::from_value(
            json!({"spec": {"containers": [{"name": "c", "image": "big:1"}]}}),
        )
        .expect("pod");
        let mut st = CycleState::default();
        ImageLocality.pre_score(&mut st, &p, &snap.infos(), &snap);
        let (a, b) = (
            ImageLocality.score(&st, &p, &with).expect("s"),
            ImageLocality.score(&st, &p, &without).expect("s"),
        );
        assert!(a > 0 && b == 0, "{a} {b}");
    }
}
