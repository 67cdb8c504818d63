//! Pod QoS classification and resource quantity helpers.
//!
//! The QoS rules follow upstream's `ComputePodQOS`: regular and init
//! containers are considered (ephemeral containers are not), only `cpu` and
//! `memory` count, a request defaults to the limit when only the limit is
//! set (what API defaulting does), and:
//!
//! * no positive cpu/memory request or limit anywhere -> `BestEffort`;
//! * every container has positive cpu and memory limits and the (summed)
//!   requests equal the (summed) limits -> `Guaranteed`;
//! * otherwise -> `Burstable`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The QoS class of a pod (`status.qosClass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The API spelling (`Guaranteed`, `Burstable`, `BestEffort`).
    pub fn as_str(&self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

impl std::fmt::Display for QosClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

/// Computes the QoS class of a pod.
///
/// `status.qosClass` is not consulted; the class is always derived from the
/// spec (pod-level `spec.resources`, alpha in 1.33, is not considered).
pub fn qos_class(pod: &Pod) -> QosClass {
    let Some(spec) = pod.spec.as_ref() else {
        return QosClass::BestEffort;
    };
    let mut requests: BTreeMap<&'static str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&'static str, i128> = BTreeMap::new();
    let mut guaranteed = true;

    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in all {
        let reqs = container_requests(c);
        for name in QOS_RESOURCES {
            if let Some(v) = reqs.get(name).and_then(|q| quantity_nanos(&q.0)) {
                if v > 0 {
                    *requests.entry(name).or_insert(0) += v;
                }
            }
        }
        let lims = container_limits(c);
        let mut found = 0;
        for name in QOS_RESOURCES {
            if let Some(v) = lims.get(name).and_then(|q| quantity_nanos(&q.0)) {
                if v > 0 {
                    found += 1;
                    *limits.entry(name).or_insert(0) += v;
                }
            }
        }
        if found != QOS_RESOURCES.len() {
            guaranteed = false;
        }
    }

    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed {
        for (name, req) in &requests {
            if limits.get(name) != Some(req) {
                guaranteed = false;
                break;
            }
        }
    }
    if guaranteed && requests.len() == limits.len() {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// A container's effective requests: `resources.requests`, with any
/// resource that only has a limit defaulted to that limit (as API
/// defaulting does for new pods).
pub fn container_requests(c: &Container) -> BTreeMap<String, Quantity> {
    let res = c.resources.as_ref();
    let mut out = res.and_then(|r| r.requests.clone()).unwrap_or_default();
    if let Some(limits) = res.and_then(|r| r.limits.as_ref()) {
        for (k, v) in limits {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    out
}

/// A container's `resources.limits` (empty when unset).
pub fn container_limits(c: &Container) -> BTreeMap<String, Quantity> {
    c.resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .unwrap_or_default()
}

/// Whether `c` (taken from `initContainers`) is a sidecar
/// (`restartPolicy: Always`).
pub fn is_restartable_init_container(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Parses a quantity to a floating point value in base units
/// (`"250m"` -> 0.25, `"64Mi"` -> 67108864.0, `"1e3"` -> 1000.0).
pub fn parse_quantity(q: &Quantity) -> Option<f64> {
    let p = parse_parts(&q.0)?;
    let mut text = String::with_capacity(p.int.len() + p.frac.len() + 2);
    if p.negative {
        text.push('-');
    }
    text.push_str(if p.int.is_empty() { "0" } else { p.int });
    if !p.frac.is_empty() {
        text.push('.');
        text.push_str(p.frac);
    }
    let v: f64 = text.parse().ok()?;
    let scale = match p.base {
        Base::Two => 2f64.powi(p.exp),
        Base::Ten => 10f64.powi(p.exp),
    };
    Some(v * scale)
}

/// `Quantity.MilliValue()`: the value in thousandths, rounded up.
pub fn cpu_millis(q: &Quantity) -> Option<i64> {
    let n = quantity_nanos(&q.0)?;
    Some(saturate(ceil_div(n, 1_000_000)))
}

/// `Quantity.Value()`: the value in base units (bytes), rounded up.
pub fn memory_bytes(q: &Quantity) -> Option<i64> {
    let n = quantity_nanos(&q.0)?;
    Some(saturate(ceil_div(n, 1_000_000_000)))
}

/// The exact value of a quantity in nano-units, rounded up to the next
/// nano (the precision upstream keeps). `None` when the text is not a
/// quantity or the value does not fit.
pub(crate) fn quantity_nanos(s: &str) -> Option<i128> {
    let p = parse_parts(s)?;
    let digits = format!("{}{}", p.int, p.frac);
    let digits = digits.trim_start_matches('0');
    let mut mantissa: i128 = if digits.is_empty() {
        0
    } else if digits.len() > 36 {
        return None;
    } else {
        digits.parse().ok()?
    };
    if p.negative {
        mantissa = -mantissa;
    }
    let frac_len = i32::try_from(p.frac.len()).ok()?;
    // value = mantissa * 10^-frac_len * base^exp ; nanos = value * 10^9
    let (ten_pow, two_pow) = match p.base {
        Base::Ten => (9 - frac_len + p.exp, 0),
        Base::Two => (9 - frac_len, p.exp),
    };
    let mut v = mantissa;
    if two_pow > 0 {
        if two_pow >= 126 {
            return None;
        }
        v = v.checked_mul(1i128 << two_pow)?;
    }
    if ten_pow >= 0 {
        if ten_pow > 38 {
            return if v == 0 { Some(0) } else { None };
        }
        v = v.checked_mul(10i128.checked_pow(u32::try_from(ten_pow).ok()?)?)?;
    } else {
        let d = -ten_pow;
        if d > 38 {
            return Some(if v > 0 { 1 } else { 0 });
        }
        v = ceil_div(v, 10i128.checked_pow(u32::try_from(d).ok()?)?);
    }
    Some(v)
}

/// Compares two quantities exactly (`Quantity.Cmp`). `None` if either
/// does not parse.
pub fn quantity_cmp(a: &Quantity, b: &Quantity) -> Option<std::cmp::Ordering> {
    Some(quantity_nanos(&a.0)?.cmp(&quantity_nanos(&b.0)?))
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Ceiling division for a positive divisor.
pub(crate) fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && a > 0 {
        q + 1
    } else {
        q
    }
}

enum Base {
    Two,
    Ten,
}

struct Parts<'a> {
    negative: bool,
    int: &'a str,
    frac: &'a str,
    base: Base,
    exp: i32,
}

fn parse_parts(s: &str) -> Option<Parts<'_>> {
    let s = s.trim();
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let int_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let int = &rest[..int_end];
    let mut rest = &rest[int_end..];
    let mut frac = "";
    if let Some(r) = rest.strip_prefix('.') {
        let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        frac = &r[..end];
        rest = &r[end..];
    }
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let (base, exp) = match rest {
        "" => (Base::Ten, 0),
        "n" => (Base::Ten, -9),
        "u" => (Base::Ten, -6),
        "m" => (Base::Ten, -3),
        "k" => (Base::Ten, 3),
        "M" => (Base::Ten, 6),
        "G" => (Base::Ten, 9),
        "T" => (Base::Ten, 12),
        "P" => (Base::Ten, 15),
        "E" => (Base::Ten, 18),
        "Ki" => (Base::Two, 10),
        "Mi" => (Base::Two, 20),
        "Gi" => (Base::Two, 30),
        "Ti" => (Base::Two, 40),
        "Pi" => (Base::Two, 50),
        "Ei" => (Base::Two, 60),
        other => {
            let e = other.strip_prefix(['e', 'E'])?;
            let body = e.strip_prefix(['+', '-']).unwrap_or(e);
            if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (Base::Ten, e.parse::<i32>().ok()?)
        }
    };
    Some(Parts {
        negative,
        int,
        frac,
        base,
        exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    fn q(s: &str) -> Quantity {
        Quantity(s.to_string())
    }

    fn container(name: &str, req: &[(&str, &str)], lim: &[(&str, &str)]) -> Container {
        let map = |v: &[(&str, &str)]| {
            if v.is_empty() {
                None
            } else {
                Some(
                    v.iter()
                        .map(|(k, v)| (k.to_string(), q(v)))
                        .collect::<BTreeMap<_, _>>(),
                )
            }
        };
        Container {
            name: name.to_string(),
            resources: Some(ResourceRequirements {
                requests: map(req),
                limits: map(lim),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                init_containers: if init.is_empty() { None } else { Some(init) },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn parse_quantities() {
        assert_eq!(parse_quantity(&q("250m")), Some(0.25));
        assert_eq!(parse_quantity(&q("64Mi")), Some(67108864.0));
        assert_eq!(parse_quantity(&q("1Gi")), Some(1073741824.0));
        assert_eq!(parse_quantity(&q("1.5")), Some(1.5));
        assert_eq!(parse_quantity(&q("1e3")), Some(1000.0));
        assert_eq!(parse_quantity(&q("1E3")), Some(1000.0));
        assert_eq!(parse_quantity(&q("2k")), Some(2000.0));
        assert_eq!(parse_quantity(&q("1E")), Some(1e18));
        assert_eq!(parse_quantity(&q("-2")), Some(-2.0));
        assert_eq!(parse_quantity(&q(".5")), Some(0.5));
        assert_eq!(parse_quantity(&q("1Ei")), Some(2f64.powi(60)));
        assert_eq!(parse_quantity(&q("")), None);
        assert_eq!(parse_quantity(&q("abc")), None);
        assert_eq!(parse_quantity(&q("1e")), None);
        assert_eq!(parse_quantity(&q("1Xi")), None);
        assert_eq!(parse_quantity(&q("1.2.3")), None);
    }

    #[test]
    fn milli_and_value_round_up() {
        assert_eq!(cpu_millis(&q("250m")), Some(250));
        assert_eq!(cpu_millis(&q("1")), Some(1000));
        assert_eq!(cpu_millis(&q("0.5")), Some(500));
        assert_eq!(cpu_millis(&q("100u")), Some(1));
        assert_eq!(cpu_millis(&q("1n")), Some(1));
        assert_eq!(memory_bytes(&q("64Mi")), Some(67_108_864));
        assert_eq!(memory_bytes(&q("128M")), Some(128_000_000));
        assert_eq!(memory_bytes(&q("1.5Ki")), Some(1536));
        assert_eq!(memory_bytes(&q("500m")), Some(1));
        assert_eq!(memory_bytes(&q("12e6")), Some(12_000_000));
        assert_eq!(
            quantity_cmp(&q("1Gi"), &q("1024Mi")),
            Some(std::cmp::Ordering::Equal)
        );
        assert_eq!(
            quantity_cmp(&q("1"), &q("1000m")),
            Some(std::cmp::Ordering::Equal)
        );
        assert_eq!(
            quantity_cmp(&q("1G"), &q("1Gi")),
            Some(std::cmp::Ordering::Less)
        );
    }

    #[test]
    fn best_effort() {
        assert_eq!(
            qos_class(&pod(vec![container("a", &[], &[])], vec![])),
            QosClass::BestEffort
        );
        // Only non-QoS resources -> still BestEffort.
        assert_eq!(
            qos_class(&pod(
                vec![container("a", &[("ephemeral-storage", "1Gi")], &[])],
                vec![]
            )),
            QosClass::BestEffort
        );
        // Zero quantities do not count.
        assert_eq!(
            qos_class(&pod(vec![container("a", &[("cpu", "0")], &[])], vec![])),
            QosClass::BestEffort
        );
        assert_eq!(qos_class(&Pod::default()), QosClass::BestEffort);
        assert_eq!(QosClass::BestEffort.as_str(), "BestEffort");
    }

    #[test]
    fn guaranteed() {
        let full = [("cpu", "500m"), ("memory", "64Mi")];
        assert_eq!(
            qos_class(&pod(vec![container("a", &full, &full)], vec![])),
            QosClass::Guaranteed
        );
        // Limits only: requests default to limits.
        assert_eq!(
            qos_class(&pod(
                vec![container("a", &[], &full), container("b", &[], &full)],
                vec![]
            )),
            QosClass::Guaranteed
        );
        // Equal in value though spelled differently.
        assert_eq!(
            qos_class(&pod(
                vec![container(
                    "a",
                    &[("cpu", "0.5"), ("memory", "65536Ki")],
                    &full
                )],
                vec![]
            )),
            QosClass::Guaranteed
        );
        assert_eq!(QosClass::Guaranteed.to_string(), "Guaranteed");
    }

    #[test]
    fn burstable() {
        let full = [("cpu", "500m"), ("memory", "64Mi")];
        // requests < limits
        assert_eq!(
            qos_class(&pod(
                vec![container(
                    "a",
                    &[("cpu", "250m"), ("memory", "64Mi")],
                    &full
                )],
                vec![]
            )),
            QosClass::Burstable
        );
        // only cpu limit
        assert_eq!(
            qos_class(&pod(vec![container("a", &[], &[("cpu", "1")])], vec![])),
            QosClass::Burstable
        );
        // one guaranteed container, one best effort
        assert_eq!(
            qos_class(&pod(
                vec![container("a", &full, &full), container("b", &[], &[])],
                vec![]
            )),
            QosClass::Burstable
        );
        // requests only
        assert_eq!(
            qos_class(&pod(
                vec![container("a", &[("memory", "1Gi")], &[])],
                vec![]
            )),
            QosClass::Burstable
        );
    }

    #[test]
    fn init_containers_count() {
        let full = [("cpu", "500m"), ("memory", "64Mi")];
        // Guaranteed app container, init container without resources.
        assert_eq!(
            qos_class(&pod(
                vec![container("a", &full, &full)],
                vec![container("init", &[], &[])]
            )),
            QosClass::Burstable
        );
        // Both guaranteed.
        assert_eq!(
            qos_class(&pod(
                vec![container("a", &full, &full)],
                vec![container("init", &full, &full)]
            )),
            QosClass::Guaranteed
        );
        // Only the init container has requests.
        assert_eq!(
            qos_class(&pod(
                vec![container("a", &[], &[])],
                vec![container("init", &[("cpu", "100m")], &[])]
            )),
            QosClass::Burstable
        );
    }
}
