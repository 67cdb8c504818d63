//! job-controller: runs a Job's pods to completion, as upstream for
//! NonIndexed jobs: up to `parallelism` pods at once until `completions`
//! succeeded (or, without completions, until one succeeded and none is
//! still running), counting failures against `backoffLimit` (6) and giving
//! up after `activeDeadlineSeconds`. Pods carry upstream's labels
//! (`batch.kubernetes.io/controller-uid`, `batch.kubernetes.io/job-name`)
//! and a controller reference. Status: active, ready, succeeded, failed,
//! startTime, completionTime, and the Complete / Failed conditions
//! (BackoffLimitExceeded, DeadlineExceeded) that `kubectl wait` reads.
//! Events SuccessfulCreate, SuccessfulDelete, Completed, BackoffLimitExceeded.
//!
//! Succeeded and failed pods are counted while they exist (not through
//! upstream's tracking finalizers); Indexed jobs and pod failure policies
//! are not handled yet.

use std::sync::Arc;
use std::time::Duration;

use common::events::{EventType, Recorder};
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::replicaset::{controller_of, Expectations};
use crate::{key_of, queue, run_workers, split_key, Ctx, Started, SyncResult};

/// What the pods of a job say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub active: i32,
    pub ready: i32,
    pub succeeded: i32,
    pub failed: i32,
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Failed containers of a pod restarted in place (restartPolicy OnFailure)
/// count as failures too, as upstream.
fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum()
}

pub fn count(pods: &[Arc<Pod>]) -> Counts {
    let mut c = Counts::default();
    for p in pods {
        match phase(p) {
            "Succeeded" => c.succeeded += 1,
            "Failed" => c.failed += 1,
            _ if p.metadata.deletion_timestamp.is_some() => {}
            _ => {
                c.active += 1;
                c.failed += restarts(p);
                c.ready += i32::from(crate::pod_ready(p));
            }
        }
    }
    c
}

/// How many pods should be running now: (completions - succeeded) capped by
/// parallelism; without completions, parallelism until one succeeded.
pub fn wanted_active(completions: Option<i32>, parallelism: i32, c: &Counts) -> i32 {
    match completions {
        Some(n) => (n - c.succeeded).clamp(0, parallelism.max(0)),
        None if c.succeeded > 0 => 0,
        None => parallelism.max(0),
    }
}

/// Is the job complete by its counts?
pub fn complete(completions: Option<i32>, c: &Counts) -> bool {
    match completions {
        Some(n) => c.succeeded >= n,
        None => c.succeeded > 0 && c.active == 0,
    }
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

struct Controller {
    client: kube::Client,
    jobs: Store<Job>,
    pods: Store<Pod>,
    recorder: Recorder,
    /// pods created or deleted that the cache has not shown yet
    expectations: Expectations,
}

async fn run(ctx: Ctx) {
    let jobs = ctx.informers.get::<Job>();
    let pods = ctx.informers.get::<Pod>();
    let q = queue();
    let feeder = crate::feed(q.clone(), &jobs, &pods, "Job");
    jobs.wait_synced().await;
    pods.wait_synced().await;
    for j in jobs.store().state() {
        q.add(key_of(&j.metadata));
    }
    let c = Arc::new(Controller {
        recorder: Recorder::new(ctx.client.clone(), "job-controller", None),
        client: ctx.client.clone(),
        jobs: jobs.store(),
        pods: pods.store(),
        expectations: Expectations::default(),
    });
    run_workers(
        "job",
        q,
        ctx.settings.concurrent_job_syncs,
        ctx.stop.clone(),
        move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        },
    )
    .await;
    feeder.abort();
}

fn finished(j: &Job) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

impl Controller {
    async fn sync(&self, key: &str) -> SyncResult {
        let (ns, name) = split_key(key);
        let Some(job) = self.jobs.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(None);
        };
        if finished(&job) || job.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let spec = job.spec.clone().unwrap_or_default();
        let pods: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .filter(|p| controller_of(&p.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        let counts = count(&pods);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let start_time = job
            .status
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .unwrap_or_else(|| now.clone());
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let parallelism = spec.parallelism.unwrap_or(1);
        let suspended = spec.suspend.unwrap_or(false);
        let elapsed = now.0.as_second() - start_time.0.as_second();
        let mut failure: Option<(&str, String)> = None;
        if counts.failed > backoff_limit {
            failure = Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".into(),
            ));
        } else if spec.active_deadline_seconds.is_some_and(|d| elapsed >= d) {
            failure = Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline".into(),
            ));
        }
        let done = failure.is_none() && complete(spec.completions, &counts);
        let mut active = counts.active;
        if !self.expectations.satisfied(key, &self.pods, ns) {
            // our own creates or deletes are not in the cache yet: wait for them
        } else if failure.is_some() || done || suspended {
            // nothing more runs: remove what still does
            for p in pods.iter().filter(|p| {
                !matches!(phase(p), "Succeeded" | "Failed")
                    && p.metadata.deletion_timestamp.is_none()
            }) {
                self.delete_pod(key, &job, p).await?;
                active -= 1;
            }
        } else {
            let want = wanted_active(spec.completions, parallelism, &counts);
            if want > active {
                active += self.create_pods(key, &job, want - active).await?;
            } else if want < active {
                let running: Vec<&Arc<Pod>> = pods
                    .iter()
                    .filter(|p| {
                        !matches!(phase(p), "Succeeded" | "Failed")
                            && p.metadata.deletion_timestamp.is_none()
                    })
                    .collect();
                for p in running.iter().take((active - want) as usize) {
                    self.delete_pod(key, &job, p).await?;
                    active -= 1;
                }
            }
        }
        let mut conditions = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let mut completion_time = None;
        if let Some((reason, message)) = &failure {
            conditions.push(JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some(reason.to_string()),
                message: Some(message.clone()),
                last_probe_time: Some(now.clone()),
                last_transition_time: Some(now.clone()),
            });
            self.recorder.emit(
                &crate::object_ref(&*job),
                EventType::Warning,
                reason,
                message,
            );
        } else if done {
            conditions.push(JobCondition {
                type_: "Complete".into(),
                status: "True".into(),
                reason: Some("CompletionsReached".into()),
                message: Some("Reached expected number of succeeded pods".into()),
                last_probe_time: Some(now.clone()),
                last_transition_time: Some(now.clone()),
            });
            completion_time = Some(now.clone());
            self.recorder.emit(
                &crate::object_ref(&*job),
                EventType::Normal,
                "Completed",
                "Job completed",
            );
        }
        let status = json!({
            "active": active.max(0),
            "ready": counts.ready,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "startTime": start_time,
            "completionTime": completion_time,
            "conditions": conditions,
        });
        let old = job.status.clone().unwrap_or_default();
        let same = old.active.unwrap_or(0) == active.max(0)
            && old.ready.unwrap_or(0) == counts.ready
            && old.succeeded.unwrap_or(0) == counts.succeeded
            && old.failed.unwrap_or(0) == counts.failed
            && old.start_time.is_some()
            && failure.is_none()
            && !done;
        if !same {
            let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
            let mut status = status;
            if completion_time.is_none() {
                if let Some(o) = status.as_object_mut() {
                    o.remove("completionTime");
                }
            }
            api.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
        }
        // the deadline needs a look when it passes
        let again = spec
            .active_deadline_seconds
            .filter(|_| failure.is_none() && !done)
            .map(|d| Duration::from_secs(u64::try_from((d - elapsed).max(1)).unwrap_or(1)));
        Ok(again)
    }

    async fn create_pods(&self, key: &str, job: &Job, n: i32) -> anyhow::Result<i32> {
        let ns = job.metadata.namespace.as_deref().unwrap_or_default();
        let name = job.metadata.name.as_deref().unwrap_or_default();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let template = job
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let mut meta = template.metadata.clone().unwrap_or_default();
        let labels = meta.labels.get_or_insert_with(Default::default);
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", uid.as_str()),
            ("batch.kubernetes.io/job-name", name),
            ("controller-uid", uid.as_str()),
            ("job-name", name),
        ] {
            labels.insert(k.into(), v.into());
        }
        meta.name = None;
        meta.generate_name = Some(format!("{name}-"));
        meta.owner_references = Some(vec![OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: name.into(),
            uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        let pod = Pod {
            metadata: meta,
            spec: template.spec.clone(),
            status: None,
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let mut created = 0;
        for _ in 0..n.min(500) {
            match api.create(&PostParams::default(), &pod).await {
                Ok(p) => {
                    created += 1;
                    let pod_name = p.metadata.name.unwrap_or_default();
                    self.expectations
                        .expect(key, std::slice::from_ref(&pod_name), &[]);
                    self.recorder.emit(
                        &crate::object_ref(job),
                        EventType::Normal,
                        "SuccessfulCreate",
                        &format!("Created pod: {pod_name}"),
                    );
                }
                Err(kube::Error::Api(s))
                    if s.code == 403 && s.message.contains("being terminated") =>
                {
                    break
                }
                Err(e) => {
                    self.recorder.emit(
                        &crate::object_ref(job),
                        EventType::Warning,
                        "FailedCreate",
                        &format!("Error creating: {e}"),
                    );
                    return Err(e.into());
                }
            }
        }
        Ok(created)
    }

    async fn delete_pod(&self, key: &str, job: &Job, p: &Pod) -> anyhow::Result<()> {
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        let name = p.metadata.name.as_deref().unwrap_or_default();
        self.expectations.expect(key, &[], &[name.to_string()]);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                self.recorder.emit(
                    &crate::object_ref(job),
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
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

    fn pod(phase: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"spec": {"containers": []}, "status": {"phase": phase}}))
                .expect("pod"),
        )
    }

    #[test]
    fn counting_and_wanting() {
        let c = count(&[
            pod("Succeeded"),
            pod("Failed"),
            pod("Running"),
            pod("Pending"),
        ]);
        assert_eq!(
            c,
            Counts {
                active: 2,
                ready: 0,
                succeeded: 1,
                failed: 1
            }
        );
        assert_eq!(wanted_active(Some(5), 2, &c), 2);
        assert_eq!(wanted_active(Some(2), 3, &c), 1);
        assert_eq!(
            wanted_active(None, 3, &c),
            0,
            "a work queue job starts nothing once one succeeded"
        );
        assert_eq!(wanted_active(None, 3, &Counts::default()), 3);
        assert!(complete(Some(1), &c));
        assert!(!complete(None, &c), "work queue: wait for the running ones");
        assert!(complete(
            None,
            &Counts {
                succeeded: 1,
                ..Default::default()
            }
        ));
    }
}
