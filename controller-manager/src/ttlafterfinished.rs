//! ttl-after-finished-controller: a finished Job (Complete or Failed) with
//! `ttlSecondsAfterFinished` is deleted that long after it finished, its
//! pods with it (background propagation), as upstream.

use std::time::Duration;

use common::informers::Change;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::{key_of, queue, run_workers, split_key, Ctx, Started, SyncResult};

/// When the job finished (unix seconds), if it did.
pub fn finished_at(job: &Job) -> Option<i64> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(0, |t| t.0.as_second())
        })
}

/// Seconds until the job may be deleted: None = never (no TTL, not finished).
pub fn remaining(job: &Job, now: i64) -> Option<i64> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let done = finished_at(job)?;
    Some((done + i64::from(ttl) - now).max(0))
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

async fn run(ctx: Ctx) {
    let jobs = ctx.informers.get::<Job>();
    let q = queue();
    let mut changes = jobs.subscribe();
    jobs.wait_synced().await;
    for j in jobs.store().state() {
        q.add(key_of(&j.metadata));
    }
    let feeder = {
        let q = q.clone();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(Change::Applied(j)) => q.add(key_of(&j.metadata)),
                    Ok(Change::Deleted(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    Err(_) => {}
                }
            }
        })
    };
    let (client, store) = (ctx.client.clone(), jobs.store());
    run_workers("ttlafterfinished", q, 5, ctx.stop.clone(), move |key| {
        let (client, store) = (client.clone(), store.clone());
        async move { sync(&client, &store, &key).await }
    })
    .await;
    feeder.abort();
}

async fn sync(client: &kube::Client, store: &Store<Job>, key: &str) -> SyncResult {
    let (ns, name) = split_key(key);
    let Some(job) = store.get(&ObjectRef::new(name).within(ns)) else {
        return Ok(None);
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    match remaining(&job, now) {
        None => Ok(None),
        Some(left) if left > 0 => Ok(Some(Duration::from_secs(u64::try_from(left).unwrap_or(1)))),
        Some(_) => {
            let api: Api<Job> = Api::namespaced(client.clone(), ns);
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: job.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match api.delete(name, &dp).await {
                Ok(_) => {
                    tracing::info!(job = key, "deleted a finished job after its TTL");
                    Ok(None)
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ttl_counts_from_the_finish() {
        let job = |ttl: serde_json::Value, cond: serde_json::Value| -> Job {
            serde_json::from_value(
                json!({"spec": {"ttlSecondsAfterFinished": ttl, "template": {}},
                "status": {"conditions": cond}}),
            )
            .expect("job")
        };
        let done = json!([{"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        let finished = "2026-01-01T00:00:00Z"
            .parse::<k8s_openapi::jiff::Timestamp>()
            .expect("ts")
            .as_second();
        assert_eq!(
            remaining(&job(json!(100), done.clone()), finished + 30),
            Some(70)
        );
        assert_eq!(
            remaining(&job(json!(100), done.clone()), finished + 300),
            Some(0)
        );
        assert_eq!(remaining(&job(json!(null), done), finished), None);
        assert_eq!(remaining(&job(json!(100), json!([])), finished), None);
    }
}
