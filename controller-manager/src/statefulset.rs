//! statefulset-controller: pods with stable names (`NAME-0`, `NAME-1`, ...),
//! stable storage and ordered change, as upstream. Each pod gets hostname
//! and subdomain (spec.serviceName), the pod-name and pod-index labels, and
//! a PersistentVolumeClaim per volumeClaimTemplate (`CLAIM-NAME-ORDINAL`),
//! created before the pod and kept when the pod goes. OrderedReady creates
//! pods one at a time in ordinal order, each after the previous one is
//! Running and Ready, and removes them from the highest ordinal; Parallel
//! does both at once. RollingUpdate replaces pods of an older template from
//! the highest ordinal down to `partition`, one at a time and only when all
//! others are ready; OnDelete leaves them. Failed pods are recreated.
//! Status replicas, readyReplicas, availableReplicas, currentReplicas,
//! updatedReplicas, currentRevision, updateRevision, observedGeneration.

use std::collections::BTreeMap;
use std::sync::Arc;

use common::events::{EventType, Recorder};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::deployment::template_hash;
use crate::replicaset::{controller_of, Expectations};
use crate::{key_of, queue, run_workers, split_key, Ctx, Started, SyncResult};

const HASH_LABEL: &str = "controller-revision-hash";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The ordinal of `pod` if it is `set`'s (NAME-N).
pub fn ordinal(set: &str, pod: &str) -> Option<usize> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn running_and_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && crate::pod_ready(p)
}

fn revision(set: &str, hash: &str) -> String {
    format!("{set}-{hash}")
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

struct Controller {
    client: kube::Client,
    sets: Store<StatefulSet>,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
    recorder: Recorder,
    expectations: Expectations,
}

async fn run(ctx: Ctx) {
    let sets = ctx.informers.get::<StatefulSet>();
    let pods = ctx.informers.get::<Pod>();
    let claims = ctx.informers.get::<PersistentVolumeClaim>();
    let q = queue();
    let feeder = crate::feed(q.clone(), &sets, &pods, "StatefulSet");
    sets.wait_synced().await;
    pods.wait_synced().await;
    claims.wait_synced().await;
    for s in sets.store().state() {
        q.add(key_of(&s.metadata));
    }
    let c = Arc::new(Controller {
        recorder: Recorder::new(ctx.client.clone(), "statefulset-controller", None),
        client: ctx.client.clone(),
        sets: sets.store(),
        pods: pods.store(),
        claims: claims.store(),
        expectations: Expectations::default(),
    });
    run_workers(
        "statefulset",
        q,
        ctx.settings.concurrent_statefulset_syncs,
        ctx.stop.clone(),
        move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        },
    )
    .await;
    feeder.abort();
}

impl Controller {
    async fn sync(&self, key: &str) -> SyncResult {
        let (ns, name) = split_key(key);
        let Some(set) = self.sets.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(None);
        };
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = set.spec.clone().unwrap_or_default();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
        let hash = template_hash(
            &spec.template,
            set.status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0),
        );
        let update_revision = revision(name, &hash);
        let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
        let mut by_ordinal: BTreeMap<usize, Arc<Pod>> = BTreeMap::new();
        for p in self.pods.state() {
            if p.metadata.namespace.as_deref() != Some(ns)
                || controller_of(&p.metadata).is_none_or(|o| o.uid != uid)
            {
                continue;
            }
            if let Some(i) = p.metadata.name.as_deref().and_then(|n| ordinal(name, n)) {
                by_ordinal.insert(i, p);
            }
        }
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        if self.expectations.satisfied(key, &self.pods, ns) {
            self.manage(&set, key, &pods_api, &by_ordinal, replicas, &hash, parallel)
                .await?;
        }
        // status
        let live: Vec<&Arc<Pod>> = by_ordinal
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let ready = live.iter().filter(|p| running_and_ready(p)).count();
        let updated = live
            .iter()
            .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(&hash))
            .count();
        let old = set.status.clone().unwrap_or_default();
        let current_revision = if updated == live.len() && live.len() == replicas {
            update_revision.clone()
        } else {
            old.current_revision
                .clone()
                .unwrap_or_else(|| update_revision.clone())
        };
        let current = live
            .iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(HASH_LABEL))
                    .map(|h| revision(name, h))
                    == Some(current_revision.clone())
            })
            .count();
        let status = json!({
            "replicas": live.len(), "readyReplicas": ready, "availableReplicas": ready,
            "currentReplicas": current, "updatedReplicas": updated,
            "currentRevision": current_revision, "updateRevision": update_revision,
            "observedGeneration": set.metadata.generation,
        });
        let was = serde_json::to_value(&old).unwrap_or_default();
        let changed = status
            .as_object()
            .is_some_and(|o| o.iter().any(|(k, v)| was.get(k).unwrap_or(&json!(0)) != v));
        if changed {
            let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), ns);
            match api
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

    #[allow(clippy::too_many_arguments)]
    async fn manage(
        &self,
        set: &StatefulSet,
        key: &str,
        api: &Api<Pod>,
        pods: &BTreeMap<usize, Arc<Pod>>,
        replicas: usize,
        hash: &str,
        parallel: bool,
    ) -> anyhow::Result<()> {
        let name = set.metadata.name.as_deref().unwrap_or_default();
        // failed pods are replaced
        for (i, p) in pods {
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
                && p.metadata.deletion_timestamp.is_none()
            {
                self.delete(set, key, api, p).await?;
                tracing::info!(set = name, ordinal = i, "recreating a failed pod");
                if !parallel {
                    return Ok(());
                }
            }
        }
        // create the missing ones below replicas, in order
        for i in 0..replicas {
            match pods.get(&i) {
                None => {
                    self.create(set, key, api, i, hash).await?;
                    if !parallel {
                        return Ok(());
                    }
                }
                Some(p)
                    if !parallel
                        && (p.metadata.deletion_timestamp.is_some() || !running_and_ready(p)) =>
                {
                    // OrderedReady: wait for this one before the next
                    return Ok(());
                }
                Some(_) => {}
            }
        }
        // remove ordinals at or above replicas, highest first
        let extra: Vec<&Arc<Pod>> = pods.range(replicas..).rev().map(|(_, p)| p).collect();
        for p in &extra {
            if p.metadata.deletion_timestamp.is_some() {
                if parallel {
                    continue;
                }
                return Ok(());
            }
            self.delete(set, key, api, p).await?;
            if !parallel {
                return Ok(());
            }
        }
        if !extra.is_empty() {
            return Ok(());
        }
        // rolling update: highest ordinal first, down to the partition, one at a time
        let strategy = set
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.clone())
            .unwrap_or_default();
        if strategy.type_.as_deref() == Some("OnDelete") {
            return Ok(());
        }
        let partition = strategy
            .rolling_update
            .and_then(|r| r.partition)
            .unwrap_or(0)
            .max(0) as usize;
        let all_ready = pods
            .values()
            .all(|p| p.metadata.deletion_timestamp.is_none() && running_and_ready(p));
        if !all_ready {
            return Ok(());
        }
        for i in (partition..replicas).rev() {
            if let Some(p) = pods.get(&i) {
                if p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(HASH_LABEL))
                    .map(String::as_str)
                    != Some(hash)
                {
                    self.delete(set, key, api, p).await?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn create(
        &self,
        set: &StatefulSet,
        key: &str,
        api: &Api<Pod>,
        i: usize,
        hash: &str,
    ) -> anyhow::Result<()> {
        let ns = set.metadata.namespace.as_deref().unwrap_or_default();
        let name = set.metadata.name.as_deref().unwrap_or_default();
        let spec = set.spec.clone().unwrap_or_default();
        let pod_name = format!("{name}-{i}");
        // storage first: one claim per template, kept across pod restarts
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let mut volumes: Vec<serde_json::Value> = Vec::new();
        for t in spec.volume_claim_templates.iter().flatten() {
            let claim_template = t.metadata.name.clone().unwrap_or_default();
            let claim = format!("{claim_template}-{pod_name}");
            if self
                .claims
                .get(&ObjectRef::new(&claim).within(ns))
                .is_none()
            {
                let mut pvc = t.clone();
                pvc.metadata.name = Some(claim.clone());
                pvc.metadata.namespace = Some(ns.into());
                let labels = pvc.metadata.labels.get_or_insert_with(Default::default);
                for (k, v) in spec.selector.match_labels.iter().flatten() {
                    labels.insert(k.clone(), v.clone());
                }
                pvc.status = None;
                match claims.create(&PostParams::default(), &pvc).await {
                    Ok(_) => self.recorder.emit(
                        &crate::object_ref(set),
                        EventType::Normal,
                        "SuccessfulCreate",
                        &format!(
                            "create Claim {claim} Pod {pod_name} in StatefulSet {name} success"
                        ),
                    ),
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            volumes.push(
                json!({"name": claim_template, "persistentVolumeClaim": {"claimName": claim}}),
            );
        }
        let mut pod = serde_json::to_value(&spec.template)?;
        pod["metadata"]["name"] = json!(pod_name);
        pod["metadata"]["namespace"] = json!(ns);
        pod["metadata"]["labels"][HASH_LABEL] = json!(hash);
        pod["metadata"]["labels"][POD_NAME_LABEL] = json!(pod_name);
        pod["metadata"]["labels"][POD_INDEX_LABEL] = json!(i.to_string());
        pod["metadata"]["ownerReferences"] = json!([OwnerReference {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: name.into(),
            uid: set.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        pod["spec"]["hostname"] = json!(pod_name);
        if let Some(svc) = spec.service_name.as_deref().filter(|s| !s.is_empty()) {
            pod["spec"]["subdomain"] = json!(svc);
        }
        if !volumes.is_empty() {
            let mut vs = pod["spec"]["volumes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            vs.retain(|v| !volumes.iter().any(|n| n["name"] == v["name"]));
            vs.extend(volumes);
            pod["spec"]["volumes"] = json!(vs);
        }
        let pod: Pod =
            serde_json::from_value(json!({"metadata": pod["metadata"], "spec": pod["spec"]}))?;
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                self.expectations
                    .expect(key, std::slice::from_ref(&pod_name), &[]);
                self.recorder.emit(
                    &crate::object_ref(set),
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!("create Pod {pod_name} in StatefulSet {name} successful"),
                );
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => {
                self.recorder.emit(
                    &crate::object_ref(set),
                    EventType::Warning,
                    "FailedCreate",
                    &format!("create Pod {pod_name} in StatefulSet {name} failed error: {e}"),
                );
                Err(e.into())
            }
        }
    }

    async fn delete(
        &self,
        set: &StatefulSet,
        key: &str,
        api: &Api<Pod>,
        p: &Pod,
    ) -> anyhow::Result<()> {
        let name = set.metadata.name.as_deref().unwrap_or_default();
        let pod_name = p.metadata.name.clone().unwrap_or_default();
        self.expectations
            .expect(key, &[], std::slice::from_ref(&pod_name));
        match api.delete(&pod_name, &DeleteParams::default()).await {
            Ok(_) => {
                self.recorder.emit(
                    &crate::object_ref(set),
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("delete Pod {pod_name} in StatefulSet {name} successful"),
                );
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_from_names() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "webby-1"), None);
        assert_eq!(ordinal("web", "other-1"), None);
    }
}
