//! kube-scheduler: watches pods and nodes, keeps a cache of nodes with the
//! pods bound or assumed on them, and binds each pending pod to the best node
//! found by its profile's plugins. Leader-elected; see docs/architecture.md.

pub mod cache;
pub mod config;
pub mod framework;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod resources;
pub mod scheduler;

use std::sync::Arc;

use common::informers::{Change, Informers};
use k8s_openapi::api::core::v1::{Node, Pod};
use tokio::sync::watch;

use crate::cache::pod_key;
use crate::scheduler::Scheduler;

/// Feed the scheduler from informers and schedule until `stop`.
pub async fn run(
    sched: Arc<Scheduler>,
    informers: Arc<Informers>,
    mut stop: watch::Receiver<bool>,
) {
    let nodes = informers.get::<Node>();
    let pods = informers.get::<Pod>();
    let (mut node_changes, mut pod_changes) = (nodes.subscribe(), pods.subscribe());
    nodes.wait_synced().await;
    pods.wait_synced().await;
    {
        let mut cache = sched.cache.lock().unwrap_or_else(|p| p.into_inner());
        for n in nodes.store().state() {
            cache.upsert_node(n);
        }
        for p in pods.store().state() {
            if sched.wants(&p) {
                sched.queue.add_or_update(p.clone());
            } else {
                cache.upsert_pod(p);
            }
        }
    }
    tracing::info!(
        nodes = nodes.store().state().len(),
        "caches synced; scheduling"
    );
    let feeder = {
        let sched = sched.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Ok(c) = node_changes.recv() => {
                        {
                            let mut cache = sched.cache.lock().unwrap_or_else(|p| p.into_inner());
                            match &c {
                                Change::Applied(n) => cache.upsert_node(n.clone()),
                                Change::Deleted(n) => cache.remove_node(n.metadata.name.as_deref().unwrap_or_default()),
                            }
                        }
                        if matches!(c, Change::Applied(_)) {
                            sched.queue.move_all();
                        }
                    }
                    Ok(c) = pod_changes.recv() => match c {
                        Change::Applied(p) => {
                            if sched.wants(&p) {
                                sched.queue.add_or_update(p);
                            } else {
                                let key = pod_key(&p);
                                sched.queue.done(&key);
                                sched.cache.lock().unwrap_or_else(|p| p.into_inner()).upsert_pod(p);
                            }
                        }
                        Change::Deleted(p) => {
                            let key = pod_key(&p);
                            sched.queue.delete(&key);
                            sched.cache.lock().unwrap_or_else(|p| p.into_inner()).remove_pod(&key);
                            sched.queue.move_all();
                        }
                    },
                    _ = common::stopped(&mut stop) => return,
                }
            }
        })
    };
    loop {
        tokio::select! {
            more = sched.schedule_one() => if !more { break },
            _ = common::stopped(&mut stop) => break,
        }
    }
    sched.queue.close();
    feeder.abort();
}
