//! An event recorder that writes core/v1 Events as upstream's does: a repeat
//! of the same event (same object, type, reason, message, source) within the
//! aggregation window bumps count and lastTimestamp on the existing Event
//! instead of creating another.
//!
//! Controllers call [`Recorder::emit`], which never waits on the apiserver: the
//! event goes into a bounded queue (4,096 here; upstream's broadcaster keeps
//! 1,000 and drops beyond that) written by a background task, so recording an event
//! never slows the work it describes. As upstream's sink, the writer has one
//! event in flight, so in a burst (a thousand pods created) events yield the
//! apiserver to the work itself; unlike upstream, it writes more at once when
//! the queue passes half full rather than drop events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

/// How long a recorded event can absorb repeats.
const WINDOW: Duration = Duration::from_secs(600);
/// Events queued for writing before new ones are dropped (upstream drops
/// beyond 1,000, its maxQueuedEvents; a queued event is a few hundred bytes).
const QUEUED: usize = 4096;
/// Events written at once by the background writer when its queue fills up
/// (one at a time otherwise).
const IN_FLIGHT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Writes events; cheap to clone (clones share the aggregation state and queue).
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
    queue: tokio::sync::mpsc::Sender<Queued>,
}

struct Queued {
    obj: ObjectReference,
    typ: EventType,
    reason: String,
    message: String,
}

struct Inner {
    client: kube::Client,
    component: String,
    host: Option<String>,
    /// aggregation key -> (namespace, event name, count, first seen)
    seen: Mutex<HashMap<String, (String, String, i32, Instant)>>,
    /// when `seen` was last pruned (pruning on every record would cost O(n) each)
    pruned: Mutex<Instant>,
}

impl Recorder {
    /// A recorder for `component` (the event's source); starts its writer task,
    /// so it must be called inside a tokio runtime.
    pub fn new(client: kube::Client, component: &str, host: Option<&str>) -> Recorder {
        let inner = Arc::new(Inner {
            client,
            component: component.to_string(),
            host: host.map(str::to_string),
            seen: Mutex::new(HashMap::new()),
            pruned: Mutex::new(Instant::now()),
        });
        let (queue, rx) = tokio::sync::mpsc::channel::<Queued>(QUEUED);
        tokio::spawn(write_queued(inner.clone(), rx));
        Recorder { inner, queue }
    }

    /// Queue an event about `obj` without waiting; dropped (and logged) when
    /// the queue is full, as upstream's broadcaster does.
    pub fn emit(&self, obj: &ObjectReference, typ: EventType, reason: &str, message: &str) {
        let q = Queued {
            obj: obj.clone(),
            typ,
            reason: reason.to_string(),
            message: message.to_string(),
        };
        if self.queue.try_send(q).is_err() {
            tracing::warn!(reason, "event queue full, dropping an event");
        }
    }

    /// Record an event about `obj` now. Failures are logged, never fatal, as upstream.
    pub async fn record(&self, obj: &ObjectReference, typ: EventType, reason: &str, message: &str) {
        self.inner.record(obj, typ, reason, message).await
    }

    /// Record an event about `obj` now, returning the written Event's identity
    /// (name, namespace, uid, resourceVersion: `write::create`).
    pub async fn try_record(
        &self,
        obj: &ObjectReference,
        typ: EventType,
        reason: &str,
        message: &str,
    ) -> Result<ObjectMeta, kube::Error> {
        self.inner.try_record(obj, typ, reason, message).await
    }
}

/// How many events may be written at once with `queued` waiting.
fn writers_for(queued: usize) -> usize {
    if queued >= QUEUED / 2 {
        IN_FLIGHT
    } else {
        1
    }
}

/// The background writer: drains the queue until every Recorder is gone.
async fn write_queued(inner: Arc<Inner>, mut rx: tokio::sync::mpsc::Receiver<Queued>) {
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut running = FuturesUnordered::new();
    let mut open = true;
    while open || !running.is_empty() {
        if running.len() >= writers_for(rx.len()) {
            running.next().await;
            continue;
        }
        tokio::select! {
            q = rx.recv(), if open => match q {
                Some(q) => {
                    let w = inner.clone();
                    running.push(async move { w.record(&q.obj, q.typ, &q.reason, &q.message).await });
                }
                None => open = false,
            },
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
}

impl Inner {
    async fn record(&self, obj: &ObjectReference, typ: EventType, reason: &str, message: &str) {
        if let Err(e) = self.try_record(obj, typ, reason, message).await {
            tracing::warn!(reason, error = %e, "recording an event");
        }
    }

    /// Create or aggregate the event. Nobody reads the written event back:
    /// its metadata is all the apiserver is asked to answer.
    async fn try_record(
        &self,
        obj: &ObjectReference,
        typ: EventType,
        reason: &str,
        message: &str,
    ) -> Result<ObjectMeta, kube::Error> {
        let ns = obj
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let key = format!(
            "{}/{}/{}/{}/{}/{}/{}",
            obj.uid.as_deref().unwrap_or_default(),
            obj.kind.as_deref().unwrap_or_default(),
            obj.name.as_deref().unwrap_or_default(),
            typ.as_str(),
            reason,
            message,
            self.component
        );
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let existing = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let mut pruned = self.pruned.lock().unwrap_or_else(|p| p.into_inner());
            if pruned.elapsed() > WINDOW / 10 {
                seen.retain(|_, (_, _, _, at)| at.elapsed() < WINDOW);
                *pruned = Instant::now();
            }
            seen.get(&key)
                .filter(|(_, _, _, at)| at.elapsed() < WINDOW)
                .cloned()
        };
        if let Some((ns_seen, name, count, at)) = existing {
            let patch = serde_json::json!({"count": count + 1, "lastTimestamp": now});
            let merged: Api<Event> = Api::namespaced(self.client.clone(), &ns_seen);
            let pp = PatchParams::default();
            match crate::write::patch(
                &self.client,
                &merged,
                &name,
                None,
                &pp,
                &Patch::Merge(&patch),
            )
            .await
            {
                Ok(ev) => {
                    self.seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, (ns_seen, name, count + 1, at));
                    return Ok(ev);
                }
                // the event expired or was deleted: write a new one
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let base = obj.name.clone().unwrap_or_else(|| "object".into());
        let name = format!(
            "{base}.{:x}",
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: obj.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(typ.as_str().to_string()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: self.host.clone(),
            ..Default::default()
        };
        let created = crate::write::create(&self.client, &api, &PostParams::default(), &ev).await?;
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (ns, name, 1, Instant::now()));
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_until_the_queue_is_half_full() {
        assert_eq!(writers_for(0), 1);
        assert_eq!(writers_for(QUEUED / 2 - 1), 1);
        assert_eq!(writers_for(QUEUED / 2), IN_FLIGHT);
        assert_eq!(writers_for(QUEUED), IN_FLIGHT);
    }
}
