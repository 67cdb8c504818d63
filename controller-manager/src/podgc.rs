//! pod-garbage-collector-controller: every 20 s, as upstream, it removes
//! - terminated pods (Succeeded/Failed) beyond `--terminated-pod-gc-threshold`,
//!   oldest first;
//! - pods bound to a node that no longer exists, once the node has been
//!   missing for 40 s and the apiserver confirms it is gone;
//! - pods being deleted that were never scheduled (no kubelet will finish them).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};

use crate::{key_of, Ctx, Started};

const CHECK_PERIOD: Duration = Duration::from_secs(20);
const QUARANTINE: Duration = Duration::from_secs(40);

fn terminated(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Terminated pods to delete so that at most `threshold` remain (oldest first).
pub fn over_threshold(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut done: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| terminated(p) && p.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    if done.len() <= threshold {
        return Vec::new();
    }
    done.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let n = done.len() - threshold;
    done.truncate(n);
    done
}

/// Pods bound to nodes not in `nodes`.
pub fn orphaned<'a>(pods: &'a [Arc<Pod>], nodes: &HashSet<String>) -> Vec<&'a Arc<Pod>> {
    pods.iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty() && !nodes.contains(n))
        })
        .collect()
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

async fn force_delete(client: &kube::Client, pod: &Pod, why: &str) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    match api
        .delete(name, &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => tracing::info!(pod = %key_of(&pod.metadata), why, "garbage collected a pod"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => tracing::warn!(pod = %key_of(&pod.metadata), error = %e, "deleting a pod"),
    }
}

async fn run(ctx: Ctx) {
    let pods = ctx.informers.get::<Pod>();
    let nodes = ctx.informers.get::<Node>();
    pods.wait_synced().await;
    nodes.wait_synced().await;
    let threshold = ctx.settings.terminated_pod_gc_threshold;
    // node name -> when we first saw pods bound to it while it was missing
    let mut missing_since: HashMap<String, Instant> = HashMap::new();
    let mut stop = ctx.stop.clone();
    loop {
        let all = pods.store().state();
        for p in over_threshold(&all, threshold) {
            force_delete(&ctx.client, &p, "terminated pods over the threshold").await;
        }
        let known: HashSet<String> = nodes
            .store()
            .state()
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let orphans = orphaned(&all, &known);
        let wanted: HashSet<String> = orphans
            .iter()
            .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
            .collect();
        missing_since.retain(|n, _| wanted.contains(n));
        let node_api: Api<Node> = Api::all(ctx.client.clone());
        for n in &wanted {
            let since = *missing_since.entry(n.clone()).or_insert_with(Instant::now);
            if since.elapsed() < QUARANTINE {
                continue;
            }
            // the cache may lag: ask the apiserver before acting
            if !matches!(node_api.get_opt(n).await, Ok(None)) {
                continue;
            }
            for p in orphans.iter().filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(n.as_str())
            }) {
                force_delete(&ctx.client, p, "bound to a node that no longer exists").await;
            }
        }
        for p in all.iter().filter(|p| {
            p.metadata.deletion_timestamp.is_some()
                && p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_none_or(str::is_empty)
        }) {
            force_delete(&ctx.client, p, "terminating and never scheduled").await;
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_PERIOD) => {}
            _ = common::stopped(&mut stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, phase: &str, created: &str, node: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name, "creationTimestamp": created},
                "spec": {"nodeName": node, "containers": []}, "status": {"phase": phase}}),
            )
            .expect("pod"),
        )
    }

    #[test]
    fn oldest_terminated_pods_go_first() {
        let pods = vec![
            pod("new-done", "Succeeded", "2026-01-03T00:00:00Z", "n"),
            pod("running", "Running", "2026-01-01T00:00:00Z", "n"),
            pod("old-done", "Failed", "2026-01-01T00:00:00Z", "n"),
            pod("mid-done", "Succeeded", "2026-01-02T00:00:00Z", "n"),
        ];
        let gone: Vec<String> = over_threshold(&pods, 1)
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(gone, vec!["old-done", "mid-done"]);
        assert!(over_threshold(&pods, 3).is_empty());
        assert!(
            over_threshold(&pods, 0).is_empty(),
            "0 turns the threshold off"
        );
    }

    #[test]
    fn orphans_are_pods_on_missing_nodes() {
        let pods = vec![
            pod("a", "Running", "2026-01-01T00:00:00Z", "here"),
            pod("b", "Running", "2026-01-01T00:00:00Z", "gone"),
        ];
        let known: HashSet<String> = ["here".to_string()].into();
        let o: Vec<&str> = orphaned(&pods, &known)
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        assert_eq!(o, vec!["b"]);
    }
}
