//! deployment-controller: a Deployment's pod template becomes a ReplicaSet
//! named by the template's hash (`pod-template-hash`), and a rollout moves
//! replicas from the old ReplicaSets to the new one: RollingUpdate within
//! maxSurge / maxUnavailable, or Recreate (old pods gone before new ones).
//! As upstream: revision annotations (a template seen before takes the next
//! revision back, which is how `kubectl rollout undo` works), the revision
//! history limit, pause/resume, progressDeadlineSeconds, the Available and
//! Progressing conditions `kubectl rollout status` reads, and
//! ScalingReplicaSet events.
//!
//! Left out for now: proportional scaling of several active ReplicaSets
//! when replicas change mid-rollout (the rollout logic settles it instead),
//! and adopting orphaned ReplicaSets that match the selector.

use std::collections::BTreeMap;
use std::sync::Arc;

use common::events::{EventType, Recorder};
use common::informers::Change;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{json, Value};

use crate::{key_of, queue, run_workers, split_key, Ctx, Started, SyncResult};

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX: &str = "deployment.kubernetes.io/max-replicas";

/// Upstream's alphabet for hashes in names (no vowels, no look-alikes).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A short, name-safe hash of the pod template (and the collision count).
pub fn template_hash(template: &PodTemplateSpec, collisions: i32) -> String {
    let text = serde_json::to_string(template).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes().chain(collisions.to_le_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let mut out = String::new();
    let mut v = h;
    for _ in 0..10 {
        out.push(char::from(SAFE[(v % SAFE.len() as u32) as usize]));
        v /= SAFE.len() as u32;
        if v == 0 {
            break;
        }
    }
    out
}

/// The template without our hash label, for comparing an RS with the Deployment.
fn strip_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
        if l.is_empty() {
            if let Some(m) = t.metadata.as_mut() {
                m.labels = None;
            }
        }
    }
    t
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// A percentage or count of `total`, rounded up (surge) or down (unavailable).
fn scaled(v: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> i32 {
    let v = v.cloned().unwrap_or(IntOrString::String(default.into()));
    match v {
        IntOrString::Int(n) => n.max(0),
        IntOrString::String(s) => {
            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let x = pct * f64::from(total) / 100.0;
            (if round_up { x.ceil() } else { x.floor() }) as i32
        }
    }
}

/// (maxSurge, maxUnavailable) as numbers; both zero would stall, so
/// unavailable becomes 1 then, as upstream.
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let ru = spec
        .strategy
        .and_then(|s| s.rolling_update)
        .unwrap_or_default();
    let surge = scaled(ru.max_surge.as_ref(), "25%", replicas, true);
    let mut unavailable = scaled(ru.max_unavailable.as_ref(), "25%", replicas, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

/// What the RollingUpdate strategy sets the new ReplicaSet to.
pub fn new_rs_target(d_replicas: i32, surge: i32, new: i32, all: i32) -> i32 {
    if new >= d_replicas {
        return d_replicas;
    }
    let max_total = d_replicas + surge;
    if all >= max_total {
        return new;
    }
    new + (max_total - all).min(d_replicas - new)
}

/// How many old replicas RollingUpdate may take down now.
pub fn old_scale_down(
    d_replicas: i32,
    unavailable: i32,
    all: i32,
    all_available: i32,
    new_unavailable: i32,
) -> i32 {
    let min_available = d_replicas - unavailable;
    let by_count = all - min_available - new_unavailable;
    let by_availability = all_available - min_available;
    by_count.min(by_availability).max(0)
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

struct Controller {
    client: kube::Client,
    deployments: Store<Deployment>,
    sets: Store<ReplicaSet>,
    /// ReplicaSets and pods by controller
    set_index: common::informers::Informer<ReplicaSet>,
    pod_index: common::informers::Informer<Pod>,
    recorder: Recorder,
}

async fn run(ctx: Ctx) {
    let deployments = ctx.informers.get::<Deployment>();
    let sets = ctx.informers.get::<ReplicaSet>();
    let pods = ctx.informers.get::<Pod>();
    let q = queue();
    let feeder = crate::feed(q.clone(), &deployments, &sets, "Deployment");
    // Recreate waits for old pods to be gone
    let pod_feeder = {
        let (q, rs_store, mut changes) = (q.clone(), sets.store(), pods.subscribe());
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match changes.recv().await {
                    Ok(Change::Deleted(p)) => {
                        let rs = crate::owner_key(&p.metadata, "ReplicaSet").and_then(|k| {
                            let (ns, name) = split_key(&k);
                            rs_store.get(&ObjectRef::new(name).within(ns))
                        });
                        if let Some(k) =
                            rs.and_then(|rs| crate::owner_key(&rs.metadata, "Deployment"))
                        {
                            q.add(k);
                        }
                    }
                    Err(RecvError::Closed) => return,
                    _ => {}
                }
            }
        })
    };
    deployments.wait_synced().await;
    sets.wait_synced().await;
    pods.wait_synced().await;
    for d in deployments.store().state() {
        q.add(key_of(&d.metadata));
    }
    let c = Arc::new(Controller {
        recorder: Recorder::new(ctx.client.clone(), "deployment-controller", None),
        client: ctx.client.clone(),
        deployments: deployments.store(),
        sets: sets.store(),
        set_index: sets.clone(),
        pod_index: pods.clone(),
    });
    run_workers(
        "deployment",
        q,
        ctx.settings.concurrent_deployment_syncs,
        ctx.stop.clone(),
        move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        },
    )
    .await;
    feeder.abort();
    pod_feeder.abort();
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

impl Controller {
    async fn sync(&self, key: &str) -> SyncResult {
        let (ns, name) = split_key(key);
        let Some(d) = self.deployments.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(None);
        };
        let spec = d.spec.clone().unwrap_or_default();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let selector_empty = spec
            .selector
            .match_labels
            .as_ref()
            .is_none_or(|m| m.is_empty())
            && spec
                .selector
                .match_expressions
                .as_ref()
                .is_none_or(|m| m.is_empty());
        if selector_empty {
            self.recorder.emit(
                &crate::object_ref(&*d),
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            );
            return Ok(None);
        }
        let mut rss: Vec<Arc<ReplicaSet>> = self
            .set_index
            .controlled_by(&uid)
            .into_iter()
            .filter(|rs| rs.metadata.namespace.as_deref() == Some(ns))
            .collect();
        rss.sort_by(|a, b| {
            a.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .then(a.metadata.name.cmp(&b.metadata.name))
        });
        if d.metadata.deletion_timestamp.is_some() {
            return self.update_status(&d, &rss, None, None).await.map(|_| None);
        }
        let template = strip_hash(&spec.template);
        let new_pos = rss.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .map(strip_hash)
                .as_ref()
                == Some(&template)
        });
        let max_old_revision = rss
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new_pos)
            .map(|(_, rs)| revision(rs))
            .max()
            .unwrap_or(0);
        let paused = spec.paused.unwrap_or(false);
        let (surge, unavailable) = surge_and_unavailable(&d);
        let replicas = spec.replicas.unwrap_or(1);
        let mut created = None;
        let new_rs: Option<Arc<ReplicaSet>> = match new_pos {
            Some(i) => {
                let rs = rss[i].clone();
                // a template seen before (a rollback) takes the next revision
                if revision(&rs) <= max_old_revision && !paused {
                    Some(Arc::new(
                        self.annotate(&rs, max_old_revision + 1, replicas, surge)
                            .await?,
                    ))
                } else {
                    Some(rs)
                }
            }
            None if paused => None,
            None => {
                let rs = self
                    .create_rs(&d, max_old_revision + 1, replicas, surge, &rss)
                    .await?;
                created = rs.metadata.name.clone();
                let rs = Arc::new(rs);
                rss.push(rs.clone());
                Some(rs)
            }
        };
        let new_name = new_rs.as_ref().and_then(|r| r.metadata.name.clone());
        let olds: Vec<Arc<ReplicaSet>> = rss
            .iter()
            .filter(|rs| rs.metadata.name != new_name)
            .cloned()
            .collect();
        let mut progressed = created.is_some();
        if !paused {
            if let Some(new) = &new_rs {
                let recreate =
                    spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
                progressed |= if recreate {
                    self.recreate(&d, new, &olds).await?
                } else {
                    self.rolling(&d, new, &olds, surge, unavailable).await?
                };
            }
        }
        self.cleanup(&d, &olds).await?;
        let rss: Vec<Arc<ReplicaSet>> = rss
            .iter()
            .filter_map(|rs| {
                let n = rs.metadata.name.as_deref().unwrap_or_default();
                self.sets
                    .get(&ObjectRef::new(n).within(ns))
                    .or_else(|| Some(rs.clone()))
            })
            .collect();
        let new_rs = new_name.as_deref().and_then(|n| {
            rss.iter()
                .find(|r| r.metadata.name.as_deref() == Some(n))
                .cloned()
        });
        self.update_status(
            &d,
            &rss,
            new_rs.as_deref(),
            created
                .map(|c| (c, progressed))
                .or(Some((String::new(), progressed))),
        )
        .await?;
        // come back to judge the progress deadline
        let deadline = spec.progress_deadline_seconds.unwrap_or(600);
        Ok(Some(std::time::Duration::from_secs(
            u64::try_from(deadline).unwrap_or(600).clamp(1, 600),
        )))
    }

    async fn create_rs(
        &self,
        d: &Deployment,
        rev: i64,
        replicas: i32,
        surge: i32,
        existing: &[Arc<ReplicaSet>],
    ) -> anyhow::Result<ReplicaSet> {
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let name = d.metadata.name.as_deref().unwrap_or_default();
        let spec = d.spec.clone().unwrap_or_default();
        let collisions = d
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let hash = template_hash(&spec.template, collisions);
        let mut template = spec.template.clone();
        let meta = template.metadata.get_or_insert_with(Default::default);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let labels = meta.labels.clone();
        // the first ReplicaSet of a Deployment starts at full size, a later one at zero
        let start = if existing.iter().all(|rs| spec_replicas(rs) == 0)
            && spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) != Some("Recreate")
        {
            replicas
        } else {
            0
        };
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": format!("{name}-{hash}"), "namespace": ns, "labels": labels,
                "annotations": {REVISION: rev.to_string(), DESIRED: replicas.to_string(), MAX: (replicas + surge).to_string()},
                "ownerReferences": [OwnerReference {
                    api_version: "apps/v1".into(), kind: "Deployment".into(), name: name.into(),
                    uid: d.metadata.uid.clone().unwrap_or_default(), controller: Some(true), block_owner_deletion: Some(true),
                }],
            },
            "spec": {"replicas": start, "minReadySeconds": spec.min_ready_seconds.unwrap_or(0),
                     "selector": selector, "template": template},
        });
        let rs: ReplicaSet = serde_json::from_value(rs)?;
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        match api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if start > 0 {
                    self.scaled_event(d, &created, 0, start);
                }
                Ok(created)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // a name taken by a ReplicaSet with another template: count the
                // collision so the next hash differs, as upstream
                let current = api.get(&format!("{name}-{hash}")).await?;
                let ours = current
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .map(strip_hash)
                    == Some(strip_hash(&spec.template));
                if ours {
                    return Ok(current);
                }
                let dapi: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
                dapi.patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"collisionCount": collisions + 1}})),
                )
                .await?;
                anyhow::bail!(
                    "hash collision for ReplicaSet {name}-{hash}; retrying with a new hash"
                )
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn annotate(
        &self,
        rs: &ReplicaSet,
        rev: i64,
        replicas: i32,
        surge: i32,
    ) -> anyhow::Result<ReplicaSet> {
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string(), DESIRED: replicas.to_string(), MAX: (replicas + surge).to_string()}}});
        Ok(api
            .patch(
                rs.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?)
    }

    fn scaled_event(&self, d: &Deployment, rs: &ReplicaSet, from: i32, to: i32) {
        let dir = if to > from { "up" } else { "down" };
        self.recorder.emit(
            &crate::object_ref(d),
            EventType::Normal,
            "ScalingReplicaSet",
            &format!(
                "Scaled {dir} replica set {} from {from} to {to}",
                rs.metadata.name.as_deref().unwrap_or_default()
            ),
        );
    }

    /// Set an RS's replicas (and its desired/max annotations); true if it changed.
    async fn scale(&self, d: &Deployment, rs: &ReplicaSet, to: i32) -> anyhow::Result<bool> {
        let from = spec_replicas(rs);
        if from == to {
            return Ok(false);
        }
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let (surge, _) = surge_and_unavailable(d);
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let patch = json!({"metadata": {"annotations": {DESIRED: replicas.to_string(), MAX: (replicas + surge).to_string()}},
                           "spec": {"replicas": to}});
        api.patch(
            rs.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        self.scaled_event(d, rs, from, to);
        Ok(true)
    }

    async fn rolling(
        &self,
        d: &Deployment,
        new: &ReplicaSet,
        olds: &[Arc<ReplicaSet>],
        surge: i32,
        unavailable: i32,
    ) -> anyhow::Result<bool> {
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let all: i32 = spec_replicas(new) + olds.iter().map(|r| spec_replicas(r)).sum::<i32>();
        let target = new_rs_target(replicas, surge, spec_replicas(new), all);
        if self.scale(d, new, target).await? {
            return Ok(true);
        }
        let old_count: i32 = olds.iter().map(|r| spec_replicas(r)).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let all_available: i32 = available(new) + olds.iter().map(|r| available(r)).sum::<i32>();
        let new_unavailable = (spec_replicas(new) - available(new)).max(0);
        let mut budget = old_scale_down(replicas, unavailable, all, all_available, new_unavailable);
        // old ReplicaSets' unavailable pods cost nothing to remove: take them first
        let unhealthy: i32 = olds
            .iter()
            .map(|r| (spec_replicas(r) - available(r)).max(0))
            .sum();
        let min_available = replicas - unavailable;
        budget = budget.max(
            (all - min_available - new_unavailable)
                .min(unhealthy)
                .max(0),
        );
        let mut changed = false;
        for rs in olds {
            if budget <= 0 {
                break;
            }
            let down = spec_replicas(rs).min(budget);
            if down > 0 {
                changed |= self.scale(d, rs, spec_replicas(rs) - down).await?;
                budget -= down;
            }
        }
        Ok(changed)
    }

    async fn recreate(
        &self,
        d: &Deployment,
        new: &ReplicaSet,
        olds: &[Arc<ReplicaSet>],
    ) -> anyhow::Result<bool> {
        let mut changed = false;
        for rs in olds {
            changed |= self.scale(d, rs, 0).await?;
        }
        if changed {
            return Ok(true);
        }
        // wait until no pod of an old ReplicaSet is left running
        let old_pods = olds
            .iter()
            .filter_map(|r| r.metadata.uid.as_deref())
            .flat_map(|uid| self.pod_index.controlled_by(uid))
            .any(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            });
        if old_pods {
            return Ok(false);
        }
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        self.scale(d, new, replicas).await
    }

    /// Delete old, empty ReplicaSets beyond revisionHistoryLimit, oldest revisions first.
    async fn cleanup(&self, d: &Deployment, olds: &[Arc<ReplicaSet>]) -> anyhow::Result<()> {
        let limit = d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let mut empty: Vec<&Arc<ReplicaSet>> = olds
            .iter()
            .filter(|r| spec_replicas(r) == 0 && r.status.as_ref().is_none_or(|s| s.replicas == 0))
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .collect();
        if empty.len() <= limit {
            return Ok(());
        }
        empty.sort_by_key(|r| revision(r));
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        for rs in &empty[..empty.len() - limit] {
            match api
                .delete(
                    rs.metadata.name.as_deref().unwrap_or_default(),
                    &DeleteParams::default(),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn update_status(
        &self,
        d: &Deployment,
        rss: &[Arc<ReplicaSet>],
        new: Option<&ReplicaSet>,
        progress: Option<(String, bool)>,
    ) -> anyhow::Result<()> {
        let spec = d.spec.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1);
        let (_, unavailable) = surge_and_unavailable(d);
        let sum = |f: &dyn Fn(&ReplicaSet) -> i32| rss.iter().map(|r| f(r)).sum::<i32>();
        let total = sum(&|r| r.status.as_ref().map_or(0, |s| s.replicas));
        let ready = sum(&|r| {
            r.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        });
        let avail = sum(&|r| available(r));
        let updated = new
            .and_then(|n| n.status.as_ref())
            .map_or(0, |s| s.replicas);
        let old = d.status.clone().unwrap_or_default();
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let set = |conds: &mut Vec<DeploymentCondition>,
                   type_: &str,
                   status: &str,
                   reason: &str,
                   message: String,
                   touch: bool| {
            let t = now();
            match conds.iter_mut().find(|c| c.type_ == type_) {
                Some(c) => {
                    let changed = c.status != status
                        || c.reason.as_deref() != Some(reason)
                        || c.message.as_deref() != Some(message.as_str());
                    if c.status != status {
                        c.last_transition_time = Some(t.clone());
                    }
                    if changed || touch {
                        c.last_update_time = Some(t);
                    }
                    c.status = status.into();
                    c.reason = Some(reason.into());
                    c.message = Some(message);
                }
                None => conds.push(DeploymentCondition {
                    type_: type_.into(),
                    status: status.into(),
                    reason: Some(reason.into()),
                    message: Some(message),
                    last_update_time: Some(t.clone()),
                    last_transition_time: Some(t),
                }),
            }
        };
        if avail >= replicas - unavailable {
            set(
                &mut conditions,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                false,
            );
        } else {
            set(
                &mut conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                false,
            );
        }
        let new_name = new
            .and_then(|n| n.metadata.name.clone())
            .unwrap_or_default();
        let (created, progressed) = progress.unwrap_or_default();
        if spec.paused.unwrap_or(false) {
            set(
                &mut conditions,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
                false,
            );
        } else if new.is_some() {
            let complete = updated == replicas
                && avail >= replicas
                && total == replicas
                && new
                    .and_then(|n| n.status.as_ref())
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0)
                    >= replicas;
            let was_paused = conditions.iter().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("DeploymentPaused")
            });
            if complete {
                set(
                    &mut conditions,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                    false,
                );
            } else if was_paused {
                set(
                    &mut conditions,
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed".into(),
                    true,
                );
            } else if !created.is_empty() {
                set(
                    &mut conditions,
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{new_name}\""),
                    true,
                );
            } else if progressed || !conditions.iter().any(|c| c.type_ == "Progressing") {
                set(
                    &mut conditions,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{new_name}\" is progressing."),
                    true,
                );
            } else {
                // no progress this time: past the deadline, say so
                let deadline = i64::from(spec.progress_deadline_seconds.unwrap_or(600));
                let last = conditions
                    .iter()
                    .find(|c| c.type_ == "Progressing")
                    .and_then(|c| c.last_update_time.as_ref())
                    .map(|t| t.0.as_second());
                let stale = last.is_some_and(|l| now().0.as_second() - l > deadline);
                let already = conditions.iter().any(|c| {
                    c.type_ == "Progressing"
                        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                });
                if stale && !already {
                    set(
                        &mut conditions,
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                        true,
                    );
                }
            }
        }
        let status = json!({
            "observedGeneration": d.metadata.generation,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": avail,
            "unavailableReplicas": (replicas - avail).max(0),
            "conditions": conditions,
        });
        let mut want: Value = serde_json::to_value(&old).unwrap_or_default();
        if let (Some(w), Some(s)) = (want.as_object_mut(), status.as_object()) {
            w.extend(s.clone());
        }
        let rev = new.map(revision);
        let rev_changed = rev.is_some_and(|r| {
            d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .map(String::as_str)
                != Some(r.to_string().as_str())
        });
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let name = d.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        if !rev_changed && want == serde_json::to_value(&old).unwrap_or_default() {
            return Ok(());
        }
        // the revision annotation goes with the status, in one write (a
        // Deployment's status write may change its annotations, as upstream)
        let mut patch = json!({"status": status});
        if rev_changed {
            patch["metadata"] = json!({"annotations": {REVISION: rev.unwrap_or(0).to_string()}});
        }
        Ok(common::write::merge_status(&self.client, &api, name, &patch).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(v: Value) -> Deployment {
        serde_json::from_value(v).expect("deployment")
    }

    #[test]
    fn surge_and_unavailable_as_upstream() {
        let d = deploy(json!({"spec": {"replicas": 10, "selector": {}, "template": {}}}));
        assert_eq!(surge_and_unavailable(&d), (3, 2));
        let d = deploy(
            json!({"spec": {"replicas": 3, "selector": {}, "template": {},
            "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}}),
        );
        assert_eq!(surge_and_unavailable(&d), (0, 1));
        let d = deploy(
            json!({"spec": {"replicas": 4, "selector": {}, "template": {},
            "strategy": {"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 1}}}}),
        );
        assert_eq!(surge_and_unavailable(&d), (2, 1));
    }

    #[test]
    fn rolling_update_steps() {
        // 3 replicas, surge 1, unavailable 0: one new pod at a time
        assert_eq!(new_rs_target(3, 1, 0, 3), 1);
        assert_eq!(new_rs_target(3, 1, 1, 4), 1);
        assert_eq!(new_rs_target(3, 1, 3, 3), 3);
        assert_eq!(new_rs_target(3, 1, 5, 5), 3);
        // the new pod is not available yet: nothing old may go
        assert_eq!(old_scale_down(3, 0, 4, 3, 1), 0);
        // it is: one old may go
        assert_eq!(old_scale_down(3, 0, 4, 4, 0), 1);
    }

    #[test]
    fn template_hash_is_stable_and_name_safe() {
        let t: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))
            .expect("template");
        let a = template_hash(&t, 0);
        assert_eq!(a, template_hash(&t, 0));
        assert_ne!(a, template_hash(&t, 1));
        assert!(a.bytes().all(|b| SAFE.contains(&b)), "{a}");
    }
}
