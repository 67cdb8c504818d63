//! Container environment resolution, as the kubelet does it before handing
//! the container to the runtime (and as the runtime merges it over the
//! image's environment).
//!
//! Order and precedence (later wins, a replaced variable keeps its first
//! position):
//!
//! 1. the image's `Env` (`K=V` strings);
//! 2. service (Docker-links style) variables - only `KUBERNETES_*` ones when
//!    `spec.enableServiceLinks` is `false`;
//! 3. `envFrom` sources in declaration order (`prefix` prepended, keys that
//!    are not valid variable names skipped, `optional` sources that do not
//!    exist skipped);
//! 4. `env` entries in declaration order.
//!
//! `$(VAR)` references in `env[].value` are expanded against the variables
//! defined by `envFrom` and earlier `env` entries, then the service
//! variables (not the image's environment, which the kubelet never sees);
//! `$$` escapes a `$`, and references that cannot be resolved are left
//! verbatim.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::qos::{ceil_div, container_limits, container_requests, quantity_nanos};

/// Everything [`container_env`] needs besides the container itself.
#[allow(clippy::type_complexity)]
pub struct EnvSources<'a> {
    pub pod: &'a Pod,
    /// The node's name (used for `spec.nodeName` when the pod's own
    /// `spec.nodeName` is empty).
    pub node_name: &'a str,
    pub pod_ip: Option<&'a str>,
    /// All pod IPs, primary first; when non-empty, `pod_ips[0]` is
    /// `status.podIP`.
    pub pod_ips: &'a [String],
    pub host_ip: Option<&'a str>,
    /// All node IPs for `status.hostIPs`; when empty `host_ip` is used.
    pub host_ips: &'a [String],
    /// ConfigMap `data` of the pod's namespace by name; `None` = not found.
    pub config_maps: &'a dyn Fn(&str) -> Option<BTreeMap<String, String>>,
    /// Secret `data` of the pod's namespace by name; `None` = not found.
    pub secrets: &'a dyn Fn(&str) -> Option<BTreeMap<String, Vec<u8>>>,
    /// Docker-links style service variables (`FOO_SERVICE_HOST`, ...),
    /// including the `KUBERNETES_*` ones of the master service. May contain
    /// every service; filtering by `enableServiceLinks` is done here.
    pub service_env: Vec<(String, String)>,
    /// Node allocatable, the default for unset limits in
    /// `resourceFieldRef`.
    pub node_allocatable: BTreeMap<String, Quantity>,
}

/// Failure to build a container's environment. The kubelet reports these
/// as `CreateContainerConfigError` with the message as shown.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("unsupported pod version: {0}")]
    UnsupportedVersion(String),
    #[error("field label not supported: {0}")]
    FieldLabelNotSupported(String),
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    #[error("invalid quantity {0:?}")]
    InvalidQuantity(String),
    #[error("failed to get host IPs: node IP unknown")]
    HostIpUnknown,
}

/// Insertion-ordered map where re-setting a key keeps its position.
#[derive(Default)]
struct OrderedEnv {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl OrderedEnv {
    fn set(&mut self, k: String, v: String) {
        match self.index.get(&k) {
            Some(&i) => self.vars[i].1 = v,
            None => {
                self.index.insert(k.clone(), self.vars.len());
                self.vars.push((k, v));
            }
        }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.index.get(k).map(|&i| self.vars[i].1.as_str())
    }
}

/// Parses image `K=V` strings; entries without `=` are ignored.
pub fn parse_image_env(image_env: &[String]) -> Vec<(String, String)> {
    image_env
        .iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Replace-or-append `overrides` onto `base` (the runtime's merge of the
/// container's environment over the image's).
pub fn merge_env(
    base: &[(String, String)],
    overrides: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out = OrderedEnv::default();
    for (k, v) in base.iter().chain(overrides) {
        out.set(k.clone(), v.clone());
    }
    out.vars
}

/// The full environment of `c`: the image's environment with the
/// kubelet-provided variables ([`kubelet_env`]) merged over it.
pub fn container_env(
    c: &Container,
    image_env: &[String],
    src: &EnvSources,
) -> Result<Vec<(String, String)>, EnvError> {
    let kubelet = kubelet_env(c, src)?;
    Ok(merge_env(&parse_image_env(image_env), &kubelet))
}

/// The variables the kubelet itself provides (service variables, `envFrom`,
/// `env`), without the image's environment.
pub fn kubelet_env(c: &Container, src: &EnvSources) -> Result<Vec<(String, String)>, EnvError> {
    let pod = src.pod;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let service: Vec<(String, String)> = src
        .service_env
        .iter()
        .filter(|(k, _)| links || k.starts_with("KUBERNETES_"))
        .cloned()
        .collect();
    let service_map: HashMap<&str, &str> = service
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    let mut cm_cache: HashMap<String, Option<BTreeMap<String, String>>> = HashMap::new();
    let mut secret_cache: HashMap<String, Option<BTreeMap<String, Vec<u8>>>> = HashMap::new();
    let mut get_cm = |name: &str| -> Option<BTreeMap<String, String>> {
        cm_cache
            .entry(name.to_string())
            .or_insert_with(|| (src.config_maps)(name))
            .clone()
    };
    let mut get_secret = |name: &str| -> Option<BTreeMap<String, Vec<u8>>> {
        secret_cache
            .entry(name.to_string())
            .or_insert_with(|| (src.secrets)(name))
            .clone()
    };

    // Variables defined by envFrom and env (upstream's tmpEnv).
    let mut defined = OrderedEnv::default();

    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            let Some(data) = get_cm(&r.name) else {
                if optional {
                    continue;
                }
                return Err(EnvError::ConfigMapNotFound(r.name.clone()));
            };
            for (k, v) in data {
                let k = format!("{prefix}{k}");
                if is_env_var_name(&k) {
                    defined.set(k, v);
                }
            }
        } else if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            let Some(data) = get_secret(&r.name) else {
                if optional {
                    continue;
                }
                return Err(EnvError::SecretNotFound(r.name.clone()));
            };
            for (k, v) in data {
                let k = format!("{prefix}{k}");
                if is_env_var_name(&k) {
                    defined.set(k, String::from_utf8_lossy(&v).into_owned());
                }
            }
        }
    }

    for var in c.env.iter().flatten() {
        let literal = var.value.as_deref().unwrap_or("");
        let value = if !literal.is_empty() {
            expand(literal, |name| {
                defined
                    .get(name)
                    .or_else(|| service_map.get(name).copied())
                    .map(str::to_string)
            })
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                field_ref_value(f, src)?
            } else if let Some(r) = &from.resource_field_ref {
                resource_field_value(r, c, &src.node_allocatable)?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                let Some(data) = get_cm(&r.name) else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::ConfigMapNotFound(r.name.clone()));
                };
                match data.get(&r.key) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::ConfigMapKeyNotFound {
                            key: r.key.clone(),
                            namespace: namespace.clone(),
                            name: r.name.clone(),
                        })
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                let Some(data) = get_secret(&r.name) else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::SecretNotFound(r.name.clone()));
                };
                match data.get(&r.key) {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::SecretKeyNotFound {
                            key: r.key.clone(),
                            namespace: namespace.clone(),
                            name: r.name.clone(),
                        })
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        defined.set(var.name.clone(), value);
    }

    // Service variables never override envFrom/env ones.
    let mut out = OrderedEnv::default();
    for (k, v) in service {
        out.set(k, v);
    }
    for (k, v) in defined.vars {
        out.set(k, v);
    }
    Ok(out.vars)
}

/// Expands `$(VAR)` references in `input` with `lookup`, as upstream's
/// `expansion.Expand`: `$$` becomes `$`, `$(NAME)` becomes the value or
/// stays `$(NAME)` when `lookup` returns `None`, an unterminated `$(` and a
/// `$` followed by any other character are kept verbatim.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.extend_from_slice(&bytes[checkpoint..cursor]);
            let rest = &bytes[cursor + 1..];
            let advance = match rest[0] {
                b'$' => {
                    out.push(b'$');
                    1
                }
                b'(' => match rest.iter().position(|&b| b == b')') {
                    Some(end) => {
                        let name = String::from_utf8_lossy(&rest[1..end]);
                        match lookup(&name) {
                            Some(v) => out.extend_from_slice(v.as_bytes()),
                            None => {
                                out.extend_from_slice(b"$(");
                                out.extend_from_slice(name.as_bytes());
                                out.push(b')');
                            }
                        }
                        end + 1
                    }
                    None => {
                        out.extend_from_slice(b"$(");
                        1
                    }
                },
                other => {
                    out.push(b'$');
                    out.push(other);
                    1
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    if checkpoint < bytes.len() {
        out.extend_from_slice(&bytes[checkpoint..]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Upstream's `IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`, not `.`, `..`
/// nor starting with `..`.
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.bytes();
    let Some(first) = chars.next() else {
        return false;
    };
    let ok_first = first.is_ascii_alphabetic() || matches!(first, b'-' | b'.' | b'_');
    let ok_rest = chars.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    ok_first && ok_rest && name != "." && !name.starts_with("..")
}

/// Splits `metadata.labels['key']` into (`metadata.labels`, `key`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let open = path.find("['")?;
    let inner = path[open + 2..].strip_suffix("']")?;
    Some((&path[..open], inner))
}

fn field_ref_value(f: &ObjectFieldSelector, src: &EnvSources) -> Result<String, EnvError> {
    match f.api_version.as_deref() {
        None | Some("") | Some("v1") => {}
        Some(other) => return Err(EnvError::UnsupportedVersion(other.to_string())),
    }
    let pod = src.pod;
    let path = f.field_path.as_str();
    if let Some((base, key)) = split_subscript(path) {
        let map = match base {
            "metadata.labels" => pod.metadata.labels.as_ref(),
            "metadata.annotations" => pod.metadata.annotations.as_ref(),
            _ => return Err(EnvError::FieldLabelNotSupported(path.to_string())),
        };
        return Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    let spec = pod.spec.as_ref();
    let pod_ip = src
        .pod_ips
        .first()
        .map(String::as_str)
        .or(src.pod_ip)
        .unwrap_or("");
    let host_ips: Vec<&str> = if src.host_ips.is_empty() {
        src.host_ip.into_iter().collect()
    } else {
        src.host_ips.iter().map(String::as_str).collect()
    };
    Ok(match path {
        "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
        "metadata.namespace" => pod.metadata.namespace.clone().unwrap_or_default(),
        "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(pod.metadata.labels.as_ref()),
        "metadata.annotations" => format_map(pod.metadata.annotations.as_ref()),
        "spec.nodeName" => match spec.and_then(|s| s.node_name.clone()) {
            Some(n) if !n.is_empty() => n,
            _ => src.node_name.to_string(),
        },
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => host_ips
            .first()
            .map(|s| s.to_string())
            .ok_or(EnvError::HostIpUnknown)?,
        "status.hostIPs" => {
            if host_ips.is_empty() {
                return Err(EnvError::HostIpUnknown);
            }
            host_ips.join(",")
        }
        "status.podIP" => pod_ip.to_string(),
        "status.podIPs" => {
            if src.pod_ips.is_empty() {
                pod_ip.to_string()
            } else {
                src.pod_ips.join(",")
            }
        }
        // Valid downward API labels that env vars cannot use.
        "spec.restartPolicy" | "spec.schedulerName" | "status.phase" => {
            return Err(EnvError::UnsupportedFieldPath(path.to_string()))
        }
        _ => return Err(EnvError::FieldLabelNotSupported(path.to_string())),
    })
}

/// `k="v"` lines, sorted by key (upstream `FormatMap`).
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

fn resource_field_value(
    r: &ResourceFieldSelector,
    c: &Container,
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, EnvError> {
    let divisor = match &r.divisor {
        Some(d) => {
            let n = quantity_nanos(&d.0).ok_or_else(|| EnvError::InvalidQuantity(d.0.clone()))?;
            if n == 0 {
                1_000_000_000
            } else {
                n
            }
        }
        None => 1_000_000_000,
    };
    let mut limits = container_limits(c);
    for name in ["cpu", "memory", "ephemeral-storage"] {
        let unset = limits
            .get(name)
            .map(|q| quantity_nanos(&q.0).unwrap_or(0) == 0)
            .unwrap_or(true);
        if unset {
            if let Some(a) = allocatable.get(name) {
                limits.insert(name.to_string(), a.clone());
            }
        }
    }
    let requests = container_requests(c);
    let (list, name) = if let Some(n) = r.resource.strip_prefix("limits.") {
        (&limits, n)
    } else if let Some(n) = r.resource.strip_prefix("requests.") {
        (&requests, n)
    } else {
        return Err(EnvError::UnsupportedResource(r.resource.clone()));
    };
    let value = match list.get(name) {
        Some(q) => quantity_nanos(&q.0).ok_or_else(|| EnvError::InvalidQuantity(q.0.clone()))?,
        None => 0,
    };
    let result = match name {
        "cpu" => {
            // ceil(MilliValue(q) / MilliValue(divisor))
            let millis = ceil_div(value, 1_000_000);
            let div = ceil_div(divisor, 1_000_000).max(1);
            ceil_div(millis, div)
        }
        "memory" | "ephemeral-storage" => bytes_over_divisor(value, divisor),
        n if n.starts_with("hugepages-") => bytes_over_divisor(value, divisor),
        _ => return Err(EnvError::UnsupportedResource(r.resource.clone())),
    };
    Ok(result.to_string())
}

/// ceil(Value(q) / Value(divisor))
fn bytes_over_divisor(value_nanos: i128, divisor_nanos: i128) -> i128 {
    let v = ceil_div(value_nanos, 1_000_000_000);
    let d = ceil_div(divisor_nanos, 1_000_000_000).max(1);
    ceil_div(v, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource, PodSpec,
        ResourceRequirements, SecretEnvSource, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("uid-123".into()),
                labels: Some(BTreeMap::from([
                    ("app".to_string(), "web".to_string()),
                    ("tier".to_string(), "front".to_string()),
                ])),
                annotations: Some(BTreeMap::from([("note".to_string(), "hi".to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                service_account_name: Some("sa".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cms(name: &str) -> Option<BTreeMap<String, String>> {
        match name {
            "cfg" => Some(BTreeMap::from([
                ("LEVEL".to_string(), "debug".to_string()),
                ("COLOR".to_string(), "blue".to_string()),
                ("bad key".to_string(), "x".to_string()),
                ("1NUM".to_string(), "x".to_string()),
            ])),
            _ => None,
        }
    }

    fn secrets(name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        match name {
            "sec" => Some(BTreeMap::from([(
                "PASSWORD".to_string(),
                b"hunter2".to_vec(),
            )])),
            _ => None,
        }
    }

    fn src<'a>(pod: &'a Pod, pod_ips: &'a [String]) -> EnvSources<'a> {
        EnvSources {
            pod,
            node_name: "node-1",
            pod_ip: Some("10.0.0.5"),
            pod_ips,
            host_ip: Some("192.168.1.10"),
            host_ips: &[],
            config_maps: &cms,
            secrets: &secrets,
            service_env: vec![
                ("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into()),
                ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
                ("DB_SERVICE_HOST".into(), "10.96.0.7".into()),
            ],
            node_allocatable: BTreeMap::from([
                ("cpu".to_string(), Quantity("4".into())),
                ("memory".to_string(), Quantity("8Gi".into())),
            ]),
        }
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn var_from(name: &str, from: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(from),
        }
    }

    fn field(path: &str) -> EnvVarSource {
        EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: path.into(),
            }),
            ..Default::default()
        }
    }

    fn resource(res: &str, divisor: Option<&str>) -> EnvVarSource {
        EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: None,
                divisor: divisor.map(|d| Quantity(d.into())),
                resource: res.into(),
            }),
            ..Default::default()
        }
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn expansion_rules() {
        let look = |n: &str| match n {
            "A" => Some("alpha".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(expand("$(A)", look), "alpha");
        assert_eq!(expand("x-$(A)-y", look), "x-alpha-y");
        assert_eq!(expand("$$(A)", look), "$(A)");
        assert_eq!(expand("$$$(A)", look), "$alpha");
        assert_eq!(expand("$(B)", look), "$(B)");
        assert_eq!(expand("$(EMPTY)x", look), "x");
        assert_eq!(expand("$(A", look), "$(A");
        assert_eq!(expand("$A", look), "$A");
        assert_eq!(expand("cost $", look), "cost $");
        assert_eq!(expand("$$", look), "$");
        assert_eq!(expand("$()", look), "$()");
        assert_eq!(expand("é$(A)ü", look), "éalphaü");
        assert_eq!(expand("$é", look), "$é");
    }

    #[test]
    fn order_and_override() {
        let p = pod();
        let c = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cfg".into(),
                    optional: None,
                }),
                prefix: None,
                secret_ref: None,
            }]),
            env: Some(vec![
                var("PATH", "/custom"),
                var("LEVEL", "info"),
                var(
                    "GREETING",
                    "$(LEVEL)-$(COLOR)-$(DB_SERVICE_HOST)-$(HOME)-$(LATER)",
                ),
                var("LATER", "x"),
                var("ESC", "$$(LEVEL)"),
                var("DB_SERVICE_HOST", "override"),
            ]),
            ..Default::default()
        };
        let image = vec![
            "PATH=/usr/bin".to_string(),
            "HOME=/root".to_string(),
            "NOEQUALS".to_string(),
        ];
        let env = container_env(&c, &image, &src(&p, &[])).unwrap();
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "PATH",
                "HOME",
                "KUBERNETES_SERVICE_HOST",
                "KUBERNETES_SERVICE_PORT",
                "DB_SERVICE_HOST",
                "COLOR",
                "LEVEL",
                "GREETING",
                "LATER",
                "ESC",
            ]
        );
        assert_eq!(get(&env, "PATH"), Some("/custom"));
        assert_eq!(get(&env, "HOME"), Some("/root"));
        assert_eq!(get(&env, "LEVEL"), Some("info"));
        // Image vars (HOME) and later vars (LATER) are not expandable.
        assert_eq!(
            get(&env, "GREETING"),
            Some("info-blue-10.96.0.7-$(HOME)-$(LATER)")
        );
        assert_eq!(get(&env, "ESC"), Some("$(LEVEL)"));
        assert_eq!(get(&env, "DB_SERVICE_HOST"), Some("override"));
        // Invalid keys from envFrom are skipped.
        assert_eq!(get(&env, "bad key"), None);
        assert_eq!(get(&env, "1NUM"), None);
    }

    #[test]
    fn service_links_disabled() {
        let mut p = pod();
        if let Some(s) = p.spec.as_mut() {
            s.enable_service_links = Some(false);
        }
        let c = Container {
            name: "app".into(),
            ..Default::default()
        };
        let env = kubelet_env(&c, &src(&p, &[])).unwrap();
        assert_eq!(get(&env, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get(&env, "DB_SERVICE_HOST"), None);
    }

    #[test]
    fn env_from_prefix_and_secret() {
        let p = pod();
        let c = Container {
            name: "app".into(),
            env_from: Some(vec![
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "cfg".into(),
                        optional: None,
                    }),
                    prefix: Some("CFG_".into()),
                    secret_ref: None,
                },
                EnvFromSource {
                    config_map_ref: None,
                    prefix: None,
                    secret_ref: Some(SecretEnvSource {
                        name: "sec".into(),
                        optional: None,
                    }),
                },
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "absent".into(),
                        optional: Some(true),
                    }),
                    prefix: None,
                    secret_ref: None,
                },
            ]),
            ..Default::default()
        };
        let env = kubelet_env(&c, &src(&p, &[])).unwrap();
        assert_eq!(get(&env, "CFG_LEVEL"), Some("debug"));
        assert_eq!(get(&env, "CFG_COLOR"), Some("blue"));
        // With the prefix, "1NUM" becomes the valid "CFG_1NUM".
        assert_eq!(get(&env, "CFG_1NUM"), Some("x"));
        assert_eq!(get(&env, "LEVEL"), None);
        assert_eq!(get(&env, "PASSWORD"), Some("hunter2"));
    }

    #[test]
    fn missing_sources_are_errors_unless_optional() {
        let p = pod();
        let with_env = |e: EnvVar| Container {
            name: "app".into(),
            env: Some(vec![e]),
            ..Default::default()
        };
        let cm_key = |name: &str, key: &str, optional: Option<bool>| EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                key: key.into(),
                name: name.into(),
                optional,
            }),
            ..Default::default()
        };
        let sec_key = |name: &str, key: &str, optional: Option<bool>| EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                key: key.into(),
                name: name.into(),
                optional,
            }),
            ..Default::default()
        };
        let s = src(&p, &[]);
        let err = |e| kubelet_env(&with_env(e), &s).unwrap_err().to_string();
        assert_eq!(
            err(var_from("X", cm_key("absent", "k", None))),
            "configmap \"absent\" not found"
        );
        assert_eq!(
            err(var_from("X", cm_key("cfg", "nokey", Some(false)))),
            "couldn't find key nokey in ConfigMap prod/cfg"
        );
        assert_eq!(
            err(var_from("X", sec_key("absent", "k", None))),
            "secret \"absent\" not found"
        );
        assert_eq!(
            err(var_from("X", sec_key("sec", "nokey", None))),
            "couldn't find key nokey in Secret prod/sec"
        );
        let from_missing = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: None,
                prefix: None,
                secret_ref: Some(SecretEnvSource {
                    name: "gone".into(),
                    optional: Some(false),
                }),
            }]),
            ..Default::default()
        };
        assert_eq!(
            kubelet_env(&from_missing, &s).unwrap_err(),
            EnvError::SecretNotFound("gone".into())
        );

        // Optional: the variable is simply not set.
        let ok = Container {
            name: "app".into(),
            env: Some(vec![
                var_from("A", cm_key("absent", "k", Some(true))),
                var_from("B", cm_key("cfg", "nokey", Some(true))),
                var_from("C", sec_key("absent", "k", Some(true))),
                var_from("D", sec_key("sec", "nokey", Some(true))),
                var_from("E", cm_key("cfg", "LEVEL", Some(true))),
                var_from("F", sec_key("sec", "PASSWORD", None)),
            ]),
            ..Default::default()
        };
        let env = kubelet_env(&ok, &s).unwrap();
        for k in ["A", "B", "C", "D"] {
            assert_eq!(get(&env, k), None, "{k}");
        }
        assert_eq!(get(&env, "E"), Some("debug"));
        assert_eq!(get(&env, "F"), Some("hunter2"));
    }

    #[test]
    fn field_refs() {
        let p = pod();
        let ips = vec!["10.0.0.5".to_string(), "fd00::5".to_string()];
        let paths = [
            ("metadata.name", "web"),
            ("metadata.namespace", "prod"),
            ("metadata.uid", "uid-123"),
            ("metadata.labels['app']", "web"),
            ("metadata.labels['missing']", ""),
            ("metadata.annotations['note']", "hi"),
            ("metadata.labels", "app=\"web\"\ntier=\"front\""),
            ("spec.nodeName", "node-1"),
            ("spec.serviceAccountName", "sa"),
            ("status.hostIP", "192.168.1.10"),
            ("status.hostIPs", "192.168.1.10"),
            ("status.podIP", "10.0.0.5"),
            ("status.podIPs", "10.0.0.5,fd00::5"),
        ];
        let c = Container {
            name: "app".into(),
            env: Some(
                paths
                    .iter()
                    .enumerate()
                    .map(|(i, (p, _))| var_from(&format!("V{i}"), field(p)))
                    .collect(),
            ),
            ..Default::default()
        };
        let env = kubelet_env(&c, &src(&p, &ips)).unwrap();
        for (i, (path, want)) in paths.iter().enumerate() {
            assert_eq!(get(&env, &format!("V{i}")), Some(*want), "{path}");
        }

        let bad = Container {
            name: "app".into(),
            env: Some(vec![var_from("X", field("spec.bogus"))]),
            ..Default::default()
        };
        assert_eq!(
            kubelet_env(&bad, &src(&p, &ips)).unwrap_err().to_string(),
            "field label not supported: spec.bogus"
        );
        let mut s = src(&p, &ips);
        s.host_ip = None;
        let host = Container {
            name: "app".into(),
            env: Some(vec![var_from("X", field("status.hostIP"))]),
            ..Default::default()
        };
        assert_eq!(kubelet_env(&host, &s).unwrap_err(), EnvError::HostIpUnknown);
    }

    #[test]
    fn resource_field_refs() {
        let p = pod();
        let c = Container {
            name: "app".into(),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_string(), Quantity("250m".into())),
                    ("memory".to_string(), Quantity("32Mi".into())),
                ])),
                limits: Some(BTreeMap::from([(
                    "memory".to_string(),
                    Quantity("64Mi".into()),
                )])),
                ..Default::default()
            }),
            env: Some(vec![
                var_from("REQ_CPU", resource("requests.cpu", None)),
                var_from("REQ_CPU_M", resource("requests.cpu", Some("1m"))),
                var_from("LIM_CPU", resource("limits.cpu", None)),
                var_from("LIM_MEM", resource("limits.memory", None)),
                var_from("LIM_MEM_MI", resource("limits.memory", Some("1Mi"))),
                var_from("REQ_MEM_MI", resource("requests.memory", Some("1Mi"))),
                var_from("REQ_EPH", resource("requests.ephemeral-storage", None)),
                var_from("ZERO_DIV", resource("requests.cpu", Some("0"))),
            ]),
            ..Default::default()
        };
        let env = kubelet_env(&c, &src(&p, &[])).unwrap();
        assert_eq!(get(&env, "REQ_CPU"), Some("1"));
        assert_eq!(get(&env, "REQ_CPU_M"), Some("250"));
        // No cpu limit: node allocatable.
        assert_eq!(get(&env, "LIM_CPU"), Some("4"));
        assert_eq!(get(&env, "LIM_MEM"), Some("67108864"));
        assert_eq!(get(&env, "LIM_MEM_MI"), Some("64"));
        assert_eq!(get(&env, "REQ_MEM_MI"), Some("32"));
        assert_eq!(get(&env, "REQ_EPH"), Some("0"));
        assert_eq!(get(&env, "ZERO_DIV"), Some("1"));

        let bad = Container {
            name: "app".into(),
            env: Some(vec![var_from("X", resource("limits.gpu", None))]),
            ..Default::default()
        };
        assert_eq!(
            kubelet_env(&bad, &src(&p, &[])).unwrap_err().to_string(),
            "unsupported container resource : limits.gpu"
        );
    }

    #[test]
    fn env_var_names() {
        for ok in [
            "A",
            "a_b",
            "my.env-name",
            "MY_ENV.NAME",
            "MyEnvName1",
            "_x",
            "-x",
        ] {
            assert!(is_env_var_name(ok), "{ok}");
        }
        for bad in ["", "1A", "a b", ".", "..", "..a", "a=b", "ü"] {
            assert!(!is_env_var_name(bad), "{bad}");
        }
    }
}
