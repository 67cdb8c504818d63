//! events.k8s.io/v1 Events are stored as core/v1 Events (one storage, two
//! versions, as upstream): conversion both ways, field by field

use serde_json::{Map, Value};

/// (events.k8s.io/v1 field, core/v1 field)
const FIELDS: &[(&str, &str)] = &[
    ("metadata", "metadata"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
    ("action", "action"),
    ("reason", "reason"),
    ("regarding", "involvedObject"),
    ("related", "related"),
    ("note", "message"),
    ("type", "type"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn convert(obj: &Value, api_version: &str, from_v1: bool) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), api_version.into());
    out.insert("kind".into(), "Event".into());
    for (v1, core) in FIELDS {
        let (src, dst) = if from_v1 { (v1, core) } else { (core, v1) };
        if let Some(v) = obj.get(*src) {
            out.insert((*dst).to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// A core/v1 Event (as stored) seen as events.k8s.io/v1.
pub fn to_events_v1(core: &Value) -> Value {
    convert(core, "events.k8s.io/v1", false)
}

/// An events.k8s.io/v1 Event as the core/v1 object that is stored.
pub fn from_events_v1(ev: &Value) -> Value {
    convert(ev, "v1", true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hello", "reason": "Started",
            "type": "Normal", "reportingController": "kubelet", "deprecatedCount": 3,
        });
        let core = from_events_v1(&v1);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["reportingComponent"], "kubelet");
        assert_eq!(core["count"], 3);
        assert_eq!(to_events_v1(&core), v1);
    }
}
