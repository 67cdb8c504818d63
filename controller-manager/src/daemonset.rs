//! daemonset-controller: one pod of a DaemonSet on every node it should run
//! on, as upstream. A node qualifies when the template's nodeSelector and
//! required node affinity match it and its NoSchedule/NoExecute taints are
//! tolerated (DaemonSet pods tolerate not-ready/unreachable, the pressure
//! taints and unschedulable, which are added to every pod it creates). Pods
//! carry a required node affinity on `metadata.name`, so the default
//! scheduler puts each on its node. Pods on nodes that no longer qualify,
//! surplus pods, and failed pods are deleted (failed ones come back).
//! RollingUpdate replaces pods of an older template `maxUnavailable` (1) at
//! a time; OnDelete only uses the new template for new pods. Status and
//! events (SuccessfulCreate, SuccessfulDelete) as upstream.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use common::events::{EventType, Recorder};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::deployment::template_hash;
use crate::replicaset::{controller_of, Expectations};
use crate::{key_of, queue, run_workers, split_key, Ctx, Started, SyncResult};
use common::selectors::{node_term_matches, tolerated};

const HASH_LABEL: &str = "controller-revision-hash";

/// The tolerations upstream adds to every DaemonSet pod.
pub fn daemon_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// Should this DaemonSet run on this node?
pub fn should_run(ds: &DaemonSet, node: &Node) -> bool {
    let spec = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if let Some(sel) = spec.and_then(|s| s.node_selector.as_ref()) {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(r) = required {
        if !r
            .node_selector_terms
            .iter()
            .any(|t| node_term_matches(t, labels, name))
        {
            return false;
        }
    }
    let mut tols: Vec<Toleration> = spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
    tols.extend(daemon_tolerations());
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerated(&tols, t))
}

fn pod_node(p: &Pod) -> Option<String> {
    // bound pods name their node; pending ones carry it in their affinity
    if let Some(n) = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
    {
        return Some(n);
    }
    p.spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

fn hash_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

struct Controller {
    client: kube::Client,
    sets: Store<DaemonSet>,
    nodes: Store<Node>,
    pods: Store<Pod>,
    recorder: Recorder,
    expectations: Expectations,
}

async fn run(ctx: Ctx) {
    let sets = ctx.informers.get::<DaemonSet>();
    let nodes = ctx.informers.get::<Node>();
    let pods = ctx.informers.get::<Pod>();
    let q = queue();
    let feeder = crate::feed(q.clone(), &sets, &pods, "DaemonSet");
    // any node change may change where daemons belong
    let node_feeder = {
        let (q, store, mut changes) = (q.clone(), sets.store(), nodes.subscribe());
        tokio::spawn(async move {
            while !matches!(
                changes.recv().await,
                Err(tokio::sync::broadcast::error::RecvError::Closed)
            ) {
                store
                    .state()
                    .iter()
                    .for_each(|d| q.add(key_of(&d.metadata)));
            }
        })
    };
    sets.wait_synced().await;
    nodes.wait_synced().await;
    pods.wait_synced().await;
    for d in sets.store().state() {
        q.add(key_of(&d.metadata));
    }
    let c = Arc::new(Controller {
        recorder: Recorder::new(ctx.client.clone(), "daemonset-controller", None),
        client: ctx.client.clone(),
        sets: sets.store(),
        nodes: nodes.store(),
        pods: pods.store(),
        expectations: Expectations::default(),
    });
    run_workers(
        "daemonset",
        q,
        ctx.settings.concurrent_daemonset_syncs,
        ctx.stop.clone(),
        move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        },
    )
    .await;
    feeder.abort();
    node_feeder.abort();
}

impl Controller {
    async fn sync(&self, key: &str) -> SyncResult {
        let (ns, name) = split_key(key);
        let Some(ds) = self.sets.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(None);
        };
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = ds.spec.clone().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let hash = template_hash(
            &spec.template,
            ds.status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0),
        );
        let nodes = self.nodes.state();
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for p in self.pods.state() {
            if p.metadata.namespace.as_deref() != Some(ns)
                || controller_of(&p.metadata).is_none_or(|o| o.uid != uid)
                || p.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            if let Some(n) = pod_node(&p) {
                by_node.entry(n).or_default().push(p);
            }
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let (mut desired, mut scheduled, mut misscheduled, mut ready, mut updated) =
            (0usize, 0usize, 0usize, 0usize, 0usize);
        let manage = self.expectations.satisfied(key, &self.pods, ns);
        let mut to_create: Vec<String> = Vec::new();
        let mut to_delete: Vec<Arc<Pod>> = Vec::new();
        let mut old_ready: Vec<Arc<Pod>> = Vec::new();
        let mut unavailable = 0;
        for node in &nodes {
            let node_name = node.metadata.name.clone().unwrap_or_default();
            let mut pods = by_node.remove(&node_name).unwrap_or_default();
            pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            if !should_run(&ds, node) {
                misscheduled += usize::from(!pods.is_empty());
                to_delete.extend(pods);
                continue;
            }
            desired += 1;
            // failed pods go and come back
            let (failed, live): (Vec<_>, Vec<_>) = pods.into_iter().partition(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
            });
            to_delete.extend(failed);
            let mut live = live.into_iter();
            match live.next() {
                None => {
                    to_create.push(node_name);
                    unavailable += 1;
                }
                Some(p) => {
                    scheduled += 1;
                    ready += usize::from(crate::pod_ready(&p));
                    unavailable += usize::from(!crate::pod_ready(&p));
                    if hash_of(&p) == Some(hash.as_str()) {
                        updated += 1;
                    } else if crate::pod_ready(&p) {
                        old_ready.push(p.clone());
                    } else {
                        // an old pod that is not even ready: replace it now
                        to_delete.push(p.clone());
                    }
                }
            }
            to_delete.extend(live);
        }
        // pods on nodes that are gone
        to_delete.extend(by_node.into_values().flatten());
        if manage {
            let rolling = spec
                .update_strategy
                .as_ref()
                .and_then(|s| s.type_.as_deref())
                != Some("OnDelete");
            if rolling {
                let max_unavailable = spec
                    .update_strategy
                    .as_ref()
                    .and_then(|s| s.rolling_update.as_ref())
                    .and_then(|r| r.max_unavailable.clone())
                    .map(|v| match v {
                        IntOrString::Int(n) => n.max(0) as usize,
                        IntOrString::String(s) => {
                            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
                            (pct * desired as f64 / 100.0).floor() as usize
                        }
                    })
                    .unwrap_or(1)
                    .max(1);
                let budget = max_unavailable.saturating_sub(unavailable);
                to_delete.extend(old_ready.into_iter().take(budget));
            }
            for node in &to_create {
                self.create(&ds, key, node, &hash).await?;
            }
            for p in &to_delete {
                let pod_name = p.metadata.name.clone().unwrap_or_default();
                self.expectations
                    .expect(key, &[], std::slice::from_ref(&pod_name));
                match api.delete(&pod_name, &DeleteParams::default()).await {
                    Ok(_) => self.recorder.emit(
                        &crate::object_ref(&*ds),
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {pod_name}"),
                    ),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let status = json!({
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": scheduled,
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "updatedNumberScheduled": updated,
            "numberAvailable": ready,
            "numberUnavailable": desired.saturating_sub(ready),
            "observedGeneration": ds.metadata.generation,
        });
        let old = serde_json::to_value(ds.status.clone().unwrap_or_default()).unwrap_or_default();
        let changed = status
            .as_object()
            .is_some_and(|o| o.iter().any(|(k, v)| old.get(k).unwrap_or(&json!(0)) != v));
        if changed {
            let sets: Api<DaemonSet> = Api::namespaced(self.client.clone(), ns);
            match sets
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    async fn create(
        &self,
        ds: &DaemonSet,
        key: &str,
        node: &str,
        hash: &str,
    ) -> anyhow::Result<()> {
        let ns = ds.metadata.namespace.as_deref().unwrap_or_default();
        let name = ds.metadata.name.as_deref().unwrap_or_default();
        let spec = ds.spec.clone().unwrap_or_default();
        let mut template = serde_json::to_value(&spec.template)?;
        template["metadata"]["labels"][HASH_LABEL] = json!(hash);
        template["metadata"]["generateName"] = json!(format!("{name}-"));
        template["metadata"]["ownerReferences"] = json!([OwnerReference {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            name: name.into(),
            uid: ds.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        // pin to the node through required node affinity, replacing any
        // metadata.name field terms the template had
        let mut terms: Vec<serde_json::Value> = template["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if terms.is_empty() {
            terms.push(json!({}));
        }
        for t in &mut terms {
            t["matchFields"] =
                json!([{"key": "metadata.name", "operator": "In", "values": [node]}]);
        }
        template["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"] =
            json!({"nodeSelectorTerms": terms});
        let mut tols: Vec<Toleration> = spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        for t in daemon_tolerations() {
            if !tols.contains(&t) {
                tols.push(t);
            }
        }
        template["spec"]["tolerations"] = serde_json::to_value(tols)?;
        let pod: Pod = serde_json::from_value(
            json!({"metadata": template["metadata"], "spec": template["spec"]}),
        )?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        match api.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                let pod_name = p.metadata.name.unwrap_or_default();
                self.expectations
                    .expect(key, std::slice::from_ref(&pod_name), &[]);
                self.recorder.emit(
                    &crate::object_ref(ds),
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!("Created pod: {pod_name}"),
                );
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("being terminated") => {
                Ok(())
            }
            Err(e) => {
                self.recorder.emit(
                    &crate::object_ref(ds),
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Error creating: {e}"),
                );
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).expect("node")
    }

    #[test]
    fn which_nodes_a_daemon_runs_on() {
        let ds: DaemonSet =
            serde_json::from_value(json!({"spec": {"selector": {}, "template": {"spec": {
            "nodeSelector": {"role": "worker"}, "containers": []}}}}))
            .expect("ds");
        let worker = node(json!({"metadata": {"name": "w", "labels": {"role": "worker"}}}));
        let master = node(json!({"metadata": {"name": "m", "labels": {"role": "master"}}}));
        let tainted = node(
            json!({"metadata": {"name": "t", "labels": {"role": "worker"}},
            "spec": {"taints": [{"key": "dedicated", "effect": "NoSchedule"}]}}),
        );
        let unreachable = node(
            json!({"metadata": {"name": "u", "labels": {"role": "worker"}},
            "spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
                                {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}),
        );
        assert!(should_run(&ds, &worker));
        assert!(!should_run(&ds, &master));
        assert!(
            !should_run(&ds, &tainted),
            "an untolerated NoSchedule taint keeps it off"
        );
        assert!(
            should_run(&ds, &unreachable),
            "daemons tolerate unreachable and unschedulable"
        );
    }
}
