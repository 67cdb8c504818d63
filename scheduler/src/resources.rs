//! Resource quantities and a pod's effective requests, as the scheduler counts
//! them: the sum over app containers, at least the largest init container,
//! plus pod overhead.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::framework::Resources;

/// Upstream's requests assumed for scoring when a container has none.
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// A quantity in base units ×1000 (so "100m" CPU is 100 and "1" is 1000).
pub fn milli(q: &str) -> Option<i64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with('e') || s.starts_with('E') => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some((n * mult * 1000.0).round() as i64)
}

fn value(q: &Quantity) -> i64 {
    milli(&q.0).map(|m| (m + 999) / 1000).unwrap_or(0)
}

fn add(r: &mut Resources, list: Option<&BTreeMap<String, Quantity>>) {
    for (k, q) in list.into_iter().flatten() {
        match k.as_str() {
            "cpu" => r.milli_cpu += milli(&q.0).unwrap_or(0),
            "memory" => r.memory += value(q),
            "ephemeral-storage" => r.ephemeral_storage += value(q),
            "pods" => r.pods += value(q),
            other => *r.scalar.entry(other.to_string()).or_insert(0) += value(q),
        }
    }
}

fn max_into(acc: &mut Resources, r: &Resources) {
    acc.milli_cpu = acc.milli_cpu.max(r.milli_cpu);
    acc.memory = acc.memory.max(r.memory);
    acc.ephemeral_storage = acc.ephemeral_storage.max(r.ephemeral_storage);
    for (k, v) in &r.scalar {
        let e = acc.scalar.entry(k.clone()).or_insert(0);
        *e = (*e).max(*v);
    }
}

fn container_requests(c: &Container, non_zero: bool) -> Resources {
    let mut r = Resources::default();
    let res = c.resources.as_ref();
    add(&mut r, res.and_then(|x| x.requests.as_ref()));
    // a limit without a request defaults the request to it
    if let Some(lim) = res.and_then(|x| x.limits.as_ref()) {
        let req = res.and_then(|x| x.requests.as_ref());
        for (k, q) in lim {
            if req.is_none_or(|rq| !rq.contains_key(k)) {
                add(&mut r, Some(&BTreeMap::from([(k.clone(), q.clone())])));
            }
        }
    }
    if non_zero {
        if r.milli_cpu == 0 {
            r.milli_cpu = DEFAULT_MILLI_CPU;
        }
        if r.memory == 0 {
            r.memory = DEFAULT_MEMORY;
        }
    }
    r
}

/// What a pod asks for (`non_zero`: with upstream's defaults for empty requests).
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resources {
    let mut total = Resources::default();
    let Some(spec) = pod.spec.as_ref() else {
        return total;
    };
    for c in &spec.containers {
        let r = container_requests(c, non_zero);
        total.milli_cpu += r.milli_cpu;
        total.memory += r.memory;
        total.ephemeral_storage += r.ephemeral_storage;
        for (k, v) in r.scalar {
            *total.scalar.entry(k).or_insert(0) += v;
        }
    }
    // sidecars (restartPolicy Always) run beside the app containers; the others one at a time
    let mut sidecars = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c, non_zero);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.milli_cpu += r.milli_cpu;
            sidecars.memory += r.memory;
        } else {
            let mut with_sidecars = r;
            with_sidecars.milli_cpu += sidecars.milli_cpu;
            with_sidecars.memory += sidecars.memory;
            max_into(&mut total, &with_sidecars);
        }
    }
    total.milli_cpu += sidecars.milli_cpu;
    total.memory += sidecars.memory;
    add(&mut total, spec.overhead.as_ref());
    total.pods = 1;
    total
}

/// A node's allocatable resources (capacity when allocatable is absent).
pub fn allocatable(node: &Node) -> Resources {
    let mut r = Resources::default();
    let status = node.status.as_ref();
    add(
        &mut r,
        status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref())),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("1"), Some(1000));
        assert_eq!(milli("0.5"), Some(500));
        assert_eq!(milli("64Mi"), Some(64 * 1024 * 1024 * 1000));
        assert_eq!(milli("1G"), Some(1_000_000_000_000));
        assert_eq!(milli("1e3"), Some(1_000_000));
        assert_eq!(milli("bogus"), None);
    }

    #[test]
    fn pod_requests_sum_containers_and_take_the_largest_init() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {
            "initContainers": [{"name": "i", "image": "x", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}],
            "containers": [
                {"name": "a", "image": "x", "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}}},
                {"name": "b", "image": "x", "resources": {"limits": {"cpu": "1", "memory": "256Mi"}}}
            ]}}))
        .expect("pod");
        let r = pod_requests(&pod, false);
        assert_eq!(r.milli_cpu, 2000, "init container dominates cpu");
        assert_eq!(r.memory, 1024 * 1024 * 1024);
        assert_eq!(r.pods, 1);
        let empty: Pod = serde_json::from_value(
            serde_json::json!({"spec": {"containers": [{"name": "a", "image": "x"}]}}),
        )
        .expect("pod");
        assert_eq!(pod_requests(&empty, false).milli_cpu, 0);
        assert_eq!(pod_requests(&empty, true).milli_cpu, DEFAULT_MILLI_CPU);
    }
}
