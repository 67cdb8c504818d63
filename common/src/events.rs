//! An event recorder that writes core/v1 Events as upstream's does: a repeat
//! of the same event (same object, type, reason, message, source) within the
//! aggregation window bumps count and lastTimestamp on the existing Event
//! instead of creating another.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

/// How long a recorded event can absorb repeats.
const WINDOW: Duration = Duration::from_secs(600);

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

pub struct Recorder {
    client: kube::Client,
    component: String,
    host: Option<String>,
    /// aggregation key -> (namespace, event name, count, first seen)
    seen: Mutex<HashMap<String, (String, String, i32, Instant)>>,
    /// when `seen` was last pruned (pruning on every record would cost O(n) each)
    pruned: Mutex<Instant>,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &str, host: Option<&str>) -> Recorder {
        Recorder {
            client,
            component: component.to_string(),
            host: host.map(str::to_string),
            seen: Mutex::new(HashMap::new()),
            pruned: Mutex::new(Instant::now()),
        }
    }

    /// Record an event about `obj`. Failures are logged, never fatal, as upstream.
    pub async fn record(&self, obj: &ObjectReference, typ: EventType, reason: &str, message: &str) {
        if let Err(e) = self.try_record(obj, typ, reason, message).await {
            tracing::warn!(reason, error = %e, "recording an event");
        }
    }

    pub async fn try_record(
        &self,
        obj: &ObjectReference,
        typ: EventType,
        reason: &str,
        message: &str,
    ) -> Result<Event, kube::Error> {
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
            match merged
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
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
        let created = api.create(&PostParams::default(), &ev).await?;
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (ns, name, 1, Instant::now()));
        Ok(created)
    }
}
