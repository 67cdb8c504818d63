//! Resource quota arithmetic, as upstream's quota evaluators: what an object
//! counts against a ResourceQuota (`pods`, `requests.cpu`, `services.nodeports`,
//! `count/deployments.apps`, ...), exact quantities to add and compare, and the
//! check of a change against a quota's `status.hard` / `status.used`.
//!
//! Pure functions over JSON objects, shared by the apiserver (ResourceQuota
//! admission) and the controller-manager (the resourcequota controller).

use std::collections::BTreeMap;

use serde_json::Value;

/// Amounts per resource name, in nano-units ("1Ki" is 1024e9, "500m" is 5e8).
pub type Usage = BTreeMap<String, i128>;

const NANO: i128 = 1_000_000_000;

/// A quantity string ("500m", "1Gi", "2", "1e3") in nano-units, exactly.
pub fn parse(q: &str) -> Option<i128> {
    let q = q.trim();
    let (neg, rest) = match q.as_bytes().first() {
        Some(b'-') => (true, &q[1..]),
        Some(b'+') => (false, &q[1..]),
        _ => (false, q),
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(end);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    // the value as digits / 10^frac_len, scaled by the suffix, in nanos
    let mut digits: i128 = 0;
    for d in int.bytes().chain(frac.bytes()) {
        digits = digits.checked_mul(10)?.checked_add(i128::from(d - b'0'))?;
    }
    let (bin, exp10): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        other => {
            let e = other.strip_prefix(['e', 'E'])?;
            (0, e.parse().ok()?)
        }
    };
    let scaled = digits.checked_mul(1i128.checked_shl(bin)?)?;
    let exp = exp10 + 9 - frac.len() as i32;
    let v = if exp >= 0 {
        scaled.checked_mul(10i128.checked_pow(exp as u32)?)?
    } else {
        let p = 10i128.checked_pow((-exp) as u32)?;
        // upstream rounds a fraction of a nano up
        scaled / p + i128::from(scaled % p != 0)
    };
    Some(if neg { -v } else { v })
}

/// The amount at `v` (a JSON string or number) in nano-units.
pub fn parse_value(v: &Value) -> Option<i128> {
    match v {
        Value::String(s) => parse(s),
        Value::Number(n) => n
            .as_i64()
            .map(|i| i128::from(i) * NANO)
            .or_else(|| n.as_f64().map(|f| (f * 1e9).ceil() as i128)),
        _ => None,
    }
}

/// A nano amount as a quantity string, in the form upstream would print it for
/// this resource: bytes in binary units when exact ("64Mi"), cpu in
/// millicores when fractional ("250m"), counts as integers.
pub fn format(resource: &str, nanos: i128) -> String {
    let whole = nanos / NANO;
    if nanos % NANO != 0 {
        let milli = nanos / 1_000_000 + i128::from(nanos % 1_000_000 != 0);
        return format!("{milli}m");
    }
    let bytes = resource.ends_with("memory")
        || resource.ends_with("storage")
        || resource.starts_with("hugepages-")
        || resource.contains("/hugepages-");
    if bytes && whole != 0 {
        for (unit, shift) in [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ] {
            let m = 1i128 << shift;
            if whole % m == 0 {
                return format!("{}{unit}", whole / m);
            }
        }
    }
    whole.to_string()
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or_default()
}

fn add(u: &mut Usage, name: &str, amount: i128) {
    *u.entry(name.to_string()).or_insert(0) += amount;
}

/// The resource name `count/<plural>[.<group>]` of an object kind.
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// Whether a pod still counts: not terminal, and not past its deletion grace.
pub fn pod_counts(pod: &Value) -> bool {
    if matches!(str_at(pod, &["status", "phase"]), "Succeeded" | "Failed") {
        return false;
    }
    // a pod being deleted stops counting once its grace period is over
    let deleting = str_at(pod, &["metadata", "deletionTimestamp"]);
    if deleting.is_empty() {
        return true;
    }
    let grace = get(pod, &["metadata", "deletionGracePeriodSeconds"])
        .and_then(Value::as_i64)
        .unwrap_or(0);
    match chrono_free_parse(deleting) {
        Some(at) => now_unix() < at + grace,
        None => true,
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Seconds since the epoch of an RFC 3339 UTC time such as 2026-11-23T15:04:05Z.
fn chrono_free_parse(t: &str) -> Option<i64> {
    let (date, time) = t.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut h = time.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    // days from the civil date (Howard Hinnant's algorithm)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// A pod's requests or limits (`what`): the larger of the containers' sum and
/// any one init container, plus the pod overhead, as upstream's PodRequests.
fn pod_resources(pod: &Value, what: &str) -> Usage {
    let mut sum = Usage::new();
    let list = |key: &str| -> Vec<&Value> {
        get(pod, &["spec", key])
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    };
    let amounts = |c: &Value| -> Usage {
        let mut u = Usage::new();
        if let Some(m) = get(c, &["resources", what]).and_then(Value::as_object) {
            for (k, v) in m {
                if let Some(n) = parse_value(v) {
                    add(&mut u, k, n);
                }
            }
        }
        u
    };
    for c in list("containers") {
        for (k, v) in amounts(c) {
            add(&mut sum, &k, v);
        }
    }
    for c in list("initContainers") {
        // a sidecar (restartPolicy Always) runs beside the containers
        if str_at(c, &["restartPolicy"]) == "Always" {
            for (k, v) in amounts(c) {
                add(&mut sum, &k, v);
            }
            continue;
        }
        for (k, v) in amounts(c) {
            let e = sum.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
    }
    if let Some(m) = get(pod, &["spec", "overhead"]).and_then(Value::as_object) {
        for (k, v) in m {
            if let Some(n) = parse_value(v) {
                add(&mut sum, k, n);
            }
        }
    }
    sum
}

/// What one object counts against quota, by resource name.
pub fn usage(group: &str, plural: &str, obj: &Value) -> Usage {
    let mut u = Usage::new();
    add(&mut u, &count_name(group, plural), NANO);
    match (group, plural) {
        ("", "pods") => {
            if !pod_counts(obj) {
                return Usage::new();
            }
            add(&mut u, "pods", NANO);
            for (k, v) in pod_resources(obj, "requests") {
                add(&mut u, &format!("requests.{k}"), v);
                if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    add(&mut u, &k, v);
                }
            }
            for (k, v) in pod_resources(obj, "limits") {
                if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    add(&mut u, &format!("limits.{k}"), v);
                }
            }
        }
        ("", "services") => {
            add(&mut u, "services", NANO);
            let typ = str_at(obj, &["spec", "type"]);
            if typ == "LoadBalancer" {
                add(&mut u, "services.loadbalancers", NANO);
            }
            if matches!(typ, "NodePort" | "LoadBalancer") {
                let ports = get(obj, &["spec", "ports"])
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                add(&mut u, "services.nodeports", ports as i128 * NANO);
            }
        }
        ("", "persistentvolumeclaims") => {
            add(&mut u, "persistentvolumeclaims", NANO);
            let storage = get(obj, &["spec", "resources", "requests", "storage"])
                .and_then(parse_value)
                .unwrap_or(0);
            add(&mut u, "requests.storage", storage);
            let class = str_at(obj, &["spec", "storageClassName"]);
            if !class.is_empty() {
                let prefix = format!("{class}.storageclass.storage.k8s.io/");
                add(&mut u, &format!("{prefix}persistentvolumeclaims"), NANO);
                add(&mut u, &format!("{prefix}requests.storage"), storage);
            }
        }
        ("", p @ ("configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas")) => {
            add(&mut u, p, NANO);
        }
        _ => {}
    }
    u
}

/// Whether a quota's scopes (spec.scopes, spec.scopeSelector) select this
/// pod. Other kinds are only selected by a quota without scopes.
pub fn scopes_match(quota: &Value, group: &str, plural: &str, obj: &Value) -> bool {
    let mut scopes: Vec<(String, &str, Vec<String>)> = get(quota, &["spec", "scopes"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| (s.to_string(), "Exists", Vec::new()))
        .collect();
    for e in get(quota, &["spec", "scopeSelector", "matchExpressions"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        scopes.push((
            str_at(e, &["scopeName"]).to_string(),
            e.get("operator")
                .and_then(Value::as_str)
                .unwrap_or("Exists"),
            values,
        ));
    }
    if scopes.is_empty() {
        return true;
    }
    if (group, plural) != ("", "pods") {
        return false;
    }
    let terminating = get(obj, &["spec", "activeDeadlineSeconds"]).is_some_and(|v| !v.is_null());
    let best_effort = ["requests", "limits"].iter().all(|w| {
        pod_resources(obj, w)
            .iter()
            .all(|(k, _)| !matches!(k.as_str(), "cpu" | "memory"))
    });
    let priority = str_at(obj, &["spec", "priorityClassName"]);
    scopes
        .iter()
        .all(|(scope, op, values)| match scope.as_str() {
            "Terminating" => terminating,
            "NotTerminating" => !terminating,
            "BestEffort" => best_effort,
            "NotBestEffort" => !best_effort,
            "PriorityClass" => match *op {
                "In" => values.iter().any(|v| v == priority),
                "NotIn" => !values.iter().any(|v| v == priority),
                "DoesNotExist" => priority.is_empty(),
                _ => !priority.is_empty(),
            },
            _ => false,
        })
}

/// The amounts of a quantity map (status.hard, status.used, spec.hard).
pub fn amounts(v: Option<&Value>) -> Usage {
    v.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), parse_value(v)?)))
        .collect()
}

/// A usage as a JSON quantity map, limited to the names in `hard`.
pub fn to_json(used: &Usage, hard: &Usage) -> Value {
    let m: serde_json::Map<String, Value> = hard
        .keys()
        .map(|k| {
            let n = used.get(k).copied().unwrap_or(0);
            (k.clone(), Value::String(format(k, n)))
        })
        .collect();
    Value::Object(m)
}

/// Why a change of `delta` does not fit in quota `name` with `hard` and `used`:
/// upstream's "exceeded quota" message, or None when it fits.
pub fn exceeded(name: &str, hard: &Usage, used: &Usage, delta: &Usage) -> Option<String> {
    let over: Vec<&String> = hard
        .iter()
        .filter(|(k, h)| {
            let d = delta.get(*k).copied().unwrap_or(0);
            d > 0 && used.get(*k).copied().unwrap_or(0) + d > **h
        })
        .map(|(k, _)| k)
        .collect();
    if over.is_empty() {
        return None;
    }
    let list = |m: &Usage| -> String {
        over.iter()
            .map(|k| format!("{k}={}", format(k, m.get(*k).copied().unwrap_or(0))))
            .collect::<Vec<_>>()
            .join(",")
    };
    Some(format!(
        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
        list(delta),
        list(used),
        list(hard)
    ))
}

/// For a pod against a quota that limits compute resources: which containers
/// leave a tracked request or limit unset (upstream refuses such a pod with
/// "must specify ..."). Returns upstream's message body, or None.
pub fn missing_compute(hard: &Usage, pod: &Value) -> Option<String> {
    let mut missing: Vec<String> = Vec::new();
    let tracked = |name: &str| hard.contains_key(name);
    for (quota_name, what, res) in [
        ("limits.cpu", "limits", "cpu"),
        ("limits.memory", "limits", "memory"),
        ("requests.cpu", "requests", "cpu"),
        ("requests.memory", "requests", "memory"),
    ] {
        let alias = if what == "requests" { res } else { "" };
        if !tracked(quota_name) && !(!alias.is_empty() && tracked(alias)) {
            continue;
        }
        let lacking: Vec<&str> = ["initContainers", "containers"]
            .iter()
            .flat_map(|k| {
                get(pod, &["spec", k])
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter(|c| get(c, &["resources", what, res]).is_none())
            .map(|c| str_at(c, &["name"]))
            .collect();
        if !lacking.is_empty() {
            missing.push(format!("{quota_name} for: {}", lacking.join(",")));
        }
    }
    (!missing.is_empty()).then(|| format!("must specify {}", missing.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities() {
        assert_eq!(parse("500m"), Some(500_000_000));
        assert_eq!(parse("1"), Some(NANO));
        assert_eq!(parse("1.5"), Some(1_500_000_000));
        assert_eq!(parse("1Ki"), Some(1024 * NANO));
        assert_eq!(parse("2Gi"), Some(2 * (1 << 30) * NANO));
        assert_eq!(parse("1e3"), Some(1000 * NANO));
        assert_eq!(parse("1k"), Some(1000 * NANO));
        assert_eq!(parse("-2"), Some(-2 * NANO));
        assert_eq!(parse("abc"), None);
        assert_eq!(parse("1.2.3"), None);
        assert_eq!(parse_value(&json!(3)), Some(3 * NANO));
        assert_eq!(format("requests.cpu", 250_000_000), "250m");
        assert_eq!(format("requests.cpu", 2 * NANO), "2");
        assert_eq!(format("requests.memory", 64 * (1 << 20) * NANO), "64Mi");
        assert_eq!(format("requests.memory", 1000 * NANO), "1000");
        assert_eq!(format("pods", 3 * NANO), "3");
        assert_eq!(format("requests.storage", 0), "0");
    }

    fn pod(containers: Value) -> Value {
        json!({"spec": {"containers": containers}, "status": {"phase": "Running"}})
    }

    #[test]
    fn pod_usage() {
        let p = pod(json!([
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m"}}}
        ]));
        let u = usage("", "pods", &p);
        assert_eq!(u["pods"], NANO);
        assert_eq!(u["count/pods"], NANO);
        assert_eq!(u["requests.cpu"], 500_000_000);
        assert_eq!(u["cpu"], 500_000_000);
        assert_eq!(u["requests.memory"], 64 * (1 << 20) * NANO);
        assert_eq!(u["limits.cpu"], NANO);
        assert!(!u.contains_key("limits.memory"));
        // an init container larger than the sum wins
        let mut p2 = p.clone();
        p2["spec"]["initContainers"] =
            json!([{"name": "i", "resources": {"requests": {"cpu": "2"}}}]);
        assert_eq!(usage("", "pods", &p2)["requests.cpu"], 2 * NANO);
        // a pod deleted long ago with its grace over counts no more; one in its grace does
        let mut gone = p.clone();
        gone["metadata"] =
            json!({"deletionTimestamp": "2020-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30});
        assert!(usage("", "pods", &gone).is_empty());
        assert_eq!(chrono_free_parse("1970-01-02T00:00:01Z"), Some(86_401));
        assert_eq!(chrono_free_parse("2000-03-01T00:00:00Z"), Some(951_868_800));
        let mut grace = p.clone();
        grace["metadata"] =
            json!({"deletionTimestamp": "2999-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30});
        assert_eq!(usage("", "pods", &grace)["pods"], NANO);
        // terminal pods count for nothing
        let mut done = p;
        done["status"]["phase"] = json!("Succeeded");
        assert!(usage("", "pods", &done).is_empty());
    }

    #[test]
    fn service_and_claim_usage() {
        let s = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}});
        let u = usage("", "services", &s);
        assert_eq!((u["services"], u["services.nodeports"]), (NANO, 2 * NANO));
        assert!(!u.contains_key("services.loadbalancers"));
        let c = json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}});
        let u = usage("", "persistentvolumeclaims", &c);
        assert_eq!(u["requests.storage"], (1 << 30) * NANO);
        assert_eq!(
            u["fast.storageclass.storage.k8s.io/persistentvolumeclaims"],
            NANO
        );
        let d = usage("apps", "deployments", &json!({}));
        assert_eq!(d["count/deployments.apps"], NANO);
    }

    #[test]
    fn exceeding() {
        let hard: Usage = [
            ("pods".to_string(), 2 * NANO),
            ("requests.cpu".to_string(), NANO),
        ]
        .into();
        let used: Usage = [("pods".to_string(), 2 * NANO)].into();
        let delta: Usage = [
            ("pods".to_string(), NANO),
            ("requests.cpu".to_string(), 500_000_000),
        ]
        .into();
        assert_eq!(
            exceeded("q", &hard, &used, &delta).as_deref(),
            Some("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2")
        );
        let room: Usage = [("pods".to_string(), NANO)].into();
        assert_eq!(exceeded("q", &hard, &room, &delta), None);
        // a resource the quota does not track never exceeds it
        let other: Usage = [("secrets".to_string(), 9 * NANO)].into();
        assert_eq!(exceeded("q", &hard, &used, &other), None);
    }

    #[test]
    fn missing_compute_resources() {
        let hard: Usage = [
            ("requests.cpu".to_string(), NANO),
            ("limits.memory".to_string(), NANO),
        ]
        .into();
        let p = pod(
            json!([{"name": "app"}, {"name": "side", "resources": {"requests": {"cpu": "1"}}}]),
        );
        assert_eq!(
            missing_compute(&hard, &p).as_deref(),
            Some("must specify limits.memory for: app,side; requests.cpu for: app")
        );
        let pods_only: Usage = [("pods".to_string(), NANO)].into();
        assert_eq!(missing_compute(&pods_only, &p), None);
    }

    #[test]
    fn scopes() {
        let q = json!({"spec": {"scopes": ["BestEffort"]}});
        let be = pod(json!([{"name": "a"}]));
        let burst = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
        assert!(scopes_match(&q, "", "pods", &be));
        assert!(!scopes_match(&q, "", "pods", &burst));
        assert!(!scopes_match(&q, "", "services", &json!({})));
        let pc = json!({"spec": {"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        let mut high = be.clone();
        high["spec"]["priorityClassName"] = json!("high");
        assert!(scopes_match(&pc, "", "pods", &high));
        assert!(!scopes_match(&pc, "", "pods", &be));
        assert!(scopes_match(&json!({}), "", "services", &json!({})));
    }
}
