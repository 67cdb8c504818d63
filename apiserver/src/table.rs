//! server-side Table printing: the columns `kubectl get` shows, per resource
//!
//! The behaviour follows the kube-apiserver's built-in printers: the same
//! column names, order, priorities and cell formats. The server always renders
//! the wide (priority 1) cells too; clients hide them unless `-o wide`.
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: &'static str,
    pub type_: &'static str, // "string" | "integer" | "number" | "boolean" | "date"
    pub format: &'static str, // "name" for the Name column, "" otherwise
    pub description: &'static str,
    pub priority: i32,
}

// ---------------------------------------------------------------------------
// column helpers
// ---------------------------------------------------------------------------

const fn col(
    name: &'static str,
    type_: &'static str,
    description: &'static str,
    priority: i32,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority,
    }
}

const fn name_col() -> Column {
    Column {
        name: "Name",
        type_: "string",
        format: "name",
        description:
            "Name of the object, unique within its namespace (or cluster for cluster-scoped kinds).",
        priority: 0,
    }
}

const fn age_col() -> Column {
    col("Age", "string", "How long ago the object was created.", 0)
}

const CONTAINERS_DESC: &str = "Container names of the pod template.";
const IMAGES_DESC: &str = "Container images of the pod template.";

fn default_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Created At",
            "date",
            "When the object was created (RFC 3339).",
            0,
        ),
    ]
}

fn event_columns() -> Vec<Column> {
    vec![
        col(
            "Last Seen",
            "string",
            "Time since the event was last observed.",
            0,
        ),
        col(
            "Type",
            "string",
            "Event type, such as Normal or Warning.",
            0,
        ),
        col(
            "Reason",
            "string",
            "Short machine-readable reason for the event.",
            0,
        ),
        col(
            "Object",
            "string",
            "The object the event is about, as kind/name.",
            0,
        ),
        col(
            "Subobject",
            "string",
            "Field path inside the object, if any.",
            1,
        ),
        col(
            "Source",
            "string",
            "Component (and host) that reported the event.",
            1,
        ),
        col(
            "Message",
            "string",
            "Human-readable description of the event.",
            0,
        ),
        col(
            "First Seen",
            "string",
            "Time since the event was first observed.",
            1,
        ),
        col(
            "Count",
            "string",
            "How many times the event has occurred.",
            1,
        ),
        Column {
            priority: 1,
            ..name_col()
        },
    ]
}

/// Columns for a resource. `group` is "" for core, e.g. ("", "pods"), ("apps", "deployments").
/// Unknown resources get the default two columns: Name, Created At (type "date").
pub fn columns(group: &str, resource: &str) -> Vec<Column> {
    match (group, resource) {
        ("", "pods") => vec![
            name_col(),
            col(
                "Ready",
                "string",
                "Ready containers out of all containers.",
                0,
            ),
            col(
                "Status",
                "string",
                "Summary of the pod and container states.",
                0,
            ),
            col(
                "Restarts",
                "string",
                "Container restarts, with the time since the last one.",
                0,
            ),
            age_col(),
            col("IP", "string", "Primary IP address of the pod.", 1),
            col("Node", "string", "Node the pod is bound to.", 1),
            col(
                "Nominated Node",
                "string",
                "Node nominated by preemption, if any.",
                1,
            ),
            col(
                "Readiness Gates",
                "string",
                "Satisfied readiness gates out of all gates.",
                1,
            ),
        ],
        ("", "namespaces") => vec![
            name_col(),
            col("Status", "string", "Lifecycle phase of the namespace.", 0),
            age_col(),
        ],
        ("", "nodes") => vec![
            name_col(),
            col(
                "Status",
                "string",
                "Readiness and schedulability of the node.",
                0,
            ),
            col("Roles", "string", "Roles taken from node-role labels.", 0),
            age_col(),
            col(
                "Version",
                "string",
                "Kubelet version reported by the node.",
                0,
            ),
            col(
                "Internal-IP",
                "string",
                "First InternalIP address of the node.",
                1,
            ),
            col(
                "External-IP",
                "string",
                "First ExternalIP address of the node.",
                1,
            ),
            col(
                "OS-Image",
                "string",
                "Operating system image of the node.",
                1,
            ),
            col("Kernel-Version", "string", "Kernel version of the node.", 1),
            col(
                "Container-Runtime",
                "string",
                "Container runtime name and version.",
                1,
            ),
        ],
        ("", "services") => vec![
            name_col(),
            col("Type", "string", "How the service is exposed.", 0),
            col("Cluster-IP", "string", "Virtual IP inside the cluster.", 0),
            col(
                "External-IP",
                "string",
                "Addresses reachable from outside.",
                0,
            ),
            col(
                "Port(s)",
                "string",
                "Service ports, with node ports if any.",
                0,
            ),
            age_col(),
            col(
                "Selector",
                "string",
                "Labels selecting the backing pods.",
                1,
            ),
        ],
        ("", "endpoints") => vec![
            name_col(),
            col(
                "Endpoints",
                "string",
                "Addresses and ports behind the service.",
                0,
            ),
            age_col(),
        ],
        ("", "configmaps") => vec![
            name_col(),
            col("Data", "string", "Number of data and binaryData keys.", 0),
            age_col(),
        ],
        ("", "secrets") => vec![
            name_col(),
            col("Type", "string", "Secret type.", 0),
            col("Data", "string", "Number of data keys.", 0),
            age_col(),
        ],
        ("", "serviceaccounts") => vec![
            name_col(),
            col(
                "Secrets",
                "string",
                "Number of secrets listed on the account.",
                0,
            ),
            age_col(),
        ],
        ("", "events") | ("events.k8s.io", "events") => event_columns(),
        ("", "persistentvolumes") => vec![
            name_col(),
            col("Capacity", "string", "Storage capacity of the volume.", 0),
            col("Access Modes", "string", "Supported access modes.", 0),
            col(
                "Reclaim Policy",
                "string",
                "What happens when the claim is released.",
                0,
            ),
            col("Status", "string", "Phase of the volume.", 0),
            col(
                "Claim",
                "string",
                "Claim bound to the volume, as namespace/name.",
                0,
            ),
            col("StorageClass", "string", "Storage class of the volume.", 0),
            col(
                "VolumeAttributesClass",
                "string",
                "Volume attributes class of the volume.",
                0,
            ),
            col("Reason", "string", "Reason for a failed phase, if any.", 0),
            age_col(),
            col("VolumeMode", "string", "Filesystem or Block.", 1),
        ],
        ("", "resourcequotas") => vec![
            name_col(),
            age_col(),
            col(
                "Request",
                "string",
                "Request represents a minimum amount of cpu/memory that a container may consume.",
                0,
            ),
            col(
                "Limit",
                "string",
                "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
                0,
            ),
        ],
        ("", "persistentvolumeclaims") => vec![
            name_col(),
            col("Status", "string", "Phase of the claim.", 0),
            col("Volume", "string", "Name of the bound volume.", 0),
            col("Capacity", "string", "Capacity of the bound volume.", 0),
            col(
                "Access Modes",
                "string",
                "Access modes of the bound volume.",
                0,
            ),
            col("StorageClass", "string", "Storage class of the claim.", 0),
            col(
                "VolumeAttributesClass",
                "string",
                "Volume attributes class of the claim.",
                0,
            ),
            age_col(),
            col("VolumeMode", "string", "Filesystem or Block.", 1),
        ],
        ("", "replicationcontrollers") => vec![
            name_col(),
            col("Desired", "integer", "Requested number of replicas.", 0),
            col("Current", "integer", "Observed number of replicas.", 0),
            col("Ready", "integer", "Number of ready replicas.", 0),
            age_col(),
            col("Containers", "string", CONTAINERS_DESC, 1),
            col("Images", "string", IMAGES_DESC, 1),
            col(
                "Selector",
                "string",
                "Labels selecting the managed pods.",
                1,
            ),
        ],
        ("apps", "deployments") => vec![
            name_col(),
            col(
                "Ready",
                "string",
                "Ready replicas out of desired replicas.",
                0,
            ),
            col(
                "Up-to-date",
                "string",
                "Replicas running the latest template.",
                0,
            ),
            col("Available", "string", "Replicas available to serve.", 0),
            age_col(),
            col("Containers", "string", CONTAINERS_DESC, 1),
            col("Images", "string", IMAGES_DESC, 1),
            col(
                "Selector",
                "string",
                "Label selector of the managed pods.",
                1,
            ),
        ],
        ("apps", "replicasets") => vec![
            name_col(),
            col("Desired", "integer", "Requested number of replicas.", 0),
            col("Current", "integer", "Observed number of replicas.", 0),
            col("Ready", "integer", "Number of ready replicas.", 0),
            age_col(),
            col("Containers", "string", CONTAINERS_DESC, 1),
            col("Images", "string", IMAGES_DESC, 1),
            col(
                "Selector",
                "string",
                "Label selector of the managed pods.",
                1,
            ),
        ],
        ("apps", "statefulsets") => vec![
            name_col(),
            col(
                "Ready",
                "string",
                "Ready replicas out of desired replicas.",
                0,
            ),
            age_col(),
            col("Containers", "string", CONTAINERS_DESC, 1),
            col("Images", "string", IMAGES_DESC, 1),
        ],
        ("apps", "daemonsets") => vec![
            name_col(),
            col(
                "Desired",
                "integer",
                "Nodes that should run the daemon pod.",
                0,
            ),
            col(
                "Current",
                "integer",
                "Nodes running at least one daemon pod.",
                0,
            ),
            col("Ready", "integer", "Nodes with a ready daemon pod.", 0),
            col(
                "Up-to-date",
                "integer",
                "Nodes running the latest template.",
                0,
            ),
            col(
                "Available",
                "integer",
                "Nodes with an available daemon pod.",
                0,
            ),
            col(
                "Node Selector",
                "string",
                "Node selector of the pod template.",
                0,
            ),
            age_col(),
            col("Containers", "string", CONTAINERS_DESC, 1),
            col("Images", "string", IMAGES_DESC, 1),
            col(
                "Selector",
                "string",
                "Label selector of the managed pods.",
                1,
            ),
        ],
        ("batch", "jobs") => vec![
            name_col(),
            col("Status", "string", "Overall state of the job.", 0),
            col(
                "Completions",
                "string",
                "Succeeded pods out of required completions.",
                0,
            ),
            col(
                "Duration",
                "string",
                "How long the job ran (or has been running).",
                0,
            ),
            age_col(),
            col("Containers", "string", CONTAINERS_DESC, 1),
            col("Images", "string", IMAGES_DESC, 1),
            col("Selector", "string", "Label selector of the job's pods.", 1),
        ],
        ("batch", "cronjobs") => vec![
            name_col(),
            col("Schedule", "string", "Cron schedule expression.", 0),
            col(
                "Timezone",
                "string",
                "Time zone the schedule is evaluated in.",
                0,
            ),
            col("Suspend", "boolean", "Whether new runs are suspended.", 0),
            col("Active", "integer", "Number of running jobs.", 0),
            col(
                "Last Schedule",
                "string",
                "Time since the last scheduled run.",
                0,
            ),
            age_col(),
            col("Containers", "string", CONTAINERS_DESC, 1),
            col("Images", "string", IMAGES_DESC, 1),
            col(
                "Selector",
                "string",
                "Label selector of the job template.",
                1,
            ),
        ],
        ("coordination.k8s.io", "leases") => vec![
            name_col(),
            col(
                "Holder",
                "string",
                "Identity of the current lease holder.",
                0,
            ),
            age_col(),
        ],
        ("discovery.k8s.io", "endpointslices") => vec![
            name_col(),
            col("AddressType", "string", "IPv4, IPv6 or FQDN.", 0),
            col("Ports", "string", "Ports exposed by the slice.", 0),
            col("Endpoints", "string", "Endpoint addresses in the slice.", 0),
            age_col(),
        ],
        ("rbac.authorization.k8s.io", "rolebindings")
        | ("rbac.authorization.k8s.io", "clusterrolebindings") => vec![
            name_col(),
            col("Role", "string", "The referenced role, as Kind/name.", 0),
            age_col(),
            col("Users", "string", "Users bound by this binding.", 1),
            col("Groups", "string", "Groups bound by this binding.", 1),
            col(
                "ServiceAccounts",
                "string",
                "Service accounts bound, as namespace/name.",
                1,
            ),
        ],
        ("networking.k8s.io", "ingresses") => vec![
            name_col(),
            col("Class", "string", "IngressClass handling this ingress.", 0),
            col("Hosts", "string", "Host names matched by the rules.", 0),
            col("Address", "string", "Load-balancer addresses.", 0),
            col("Ports", "string", "Ports served.", 0),
            age_col(),
        ],
        ("networking.k8s.io", "ingressclasses") => vec![
            name_col(),
            col(
                "Controller",
                "string",
                "Controller implementing the class.",
                0,
            ),
            col(
                "Parameters",
                "string",
                "Reference to extra class parameters.",
                0,
            ),
            age_col(),
        ],
        ("networking.k8s.io", "networkpolicies") => vec![
            name_col(),
            col("Pod-Selector", "string", "Pods the policy applies to.", 0),
            age_col(),
        ],
        ("policy", "poddisruptionbudgets") => vec![
            name_col(),
            col(
                "Min Available",
                "string",
                "Pods that must stay available.",
                0,
            ),
            col(
                "Max Unavailable",
                "string",
                "Pods that may be unavailable.",
                0,
            ),
            col(
                "Allowed Disruptions",
                "integer",
                "Pod disruptions currently allowed.",
                0,
            ),
            age_col(),
        ],
        ("storage.k8s.io", "storageclasses") => vec![
            name_col(),
            col("Provisioner", "string", "Volume provisioner.", 0),
            col(
                "ReclaimPolicy",
                "string",
                "Reclaim policy of provisioned volumes.",
                0,
            ),
            col("VolumeBindingMode", "string", "When volumes are bound.", 0),
            col(
                "AllowVolumeExpansion",
                "string",
                "Whether volumes may be expanded.",
                0,
            ),
            age_col(),
        ],
        ("certificates.k8s.io", "certificatesigningrequests") => vec![
            name_col(),
            age_col(),
            col("SignerName", "string", "The signer the request is for.", 0),
            col("Requestor", "string", "Who created the request.", 0),
            col(
                "RequestedDuration",
                "string",
                "The validity the requester asked for (spec.expirationSeconds).",
                0,
            ),
            col(
                "Condition",
                "string",
                "Approved or Denied (or Pending), Failed, Issued.",
                0,
            ),
        ],
        ("scheduling.k8s.io", "priorityclasses") => vec![
            name_col(),
            col("Value", "integer", "Priority value.", 0),
            col(
                "Global-Default",
                "boolean",
                "Whether this is the default class.",
                0,
            ),
            age_col(),
            col(
                "PreemptionPolicy",
                "string",
                "Preemption policy of the class.",
                0,
            ),
        ],
        ("node.k8s.io", "runtimeclasses") => vec![
            name_col(),
            col("Handler", "string", "CRI handler of the runtime class.", 0),
            age_col(),
        ],
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
        | ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => vec![
            name_col(),
            col(
                "Webhooks",
                "integer",
                "Number of webhooks in the configuration.",
                0,
            ),
            age_col(),
        ],
        _ => default_columns(),
    }
}

/// The cells of one row, in the order of `columns`, for one object (a JSON object as stored).
/// `now` is used for ages. Missing fields never panic: use "<none>", "<unknown>", 0 as upstream does.
pub fn cells(group: &str, resource: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    match (group, resource) {
        ("", "pods") => pod_cells(obj, now),
        ("", "namespaces") => namespace_cells(obj, now),
        ("", "nodes") => node_cells(obj, now),
        ("", "services") => service_cells(obj, now),
        ("", "endpoints") => endpoints_cells(obj, now),
        ("", "configmaps") => vec![
            name_of(obj),
            Value::from((len_of(obj, &["data"]) + len_of(obj, &["binaryData"])) as i64),
            age_of(obj, now),
        ],
        ("", "secrets") => vec![
            name_of(obj),
            Value::from(st(obj, &["type"])),
            Value::from(len_of(obj, &["data"]) as i64),
            age_of(obj, now),
        ],
        ("", "serviceaccounts") => vec![
            name_of(obj),
            Value::from(len_of(obj, &["secrets"]) as i64),
            age_of(obj, now),
        ],
        ("", "events") => event_cells(obj, now, &CORE_EVENT_FIELDS, &V1_EVENT_FIELDS),
        ("events.k8s.io", "events") => event_cells(obj, now, &V1_EVENT_FIELDS, &CORE_EVENT_FIELDS),
        ("", "persistentvolumes") => pv_cells(obj, now),
        ("", "persistentvolumeclaims") => pvc_cells(obj, now),
        ("", "resourcequotas") => quota_cells(obj, now),
        ("", "replicationcontrollers") => rc_cells(obj, now),
        ("apps", "deployments") => deployment_cells(obj, now),
        ("apps", "replicasets") => replicaset_cells(obj, now),
        ("apps", "statefulsets") => statefulset_cells(obj, now),
        ("apps", "daemonsets") => daemonset_cells(obj, now),
        ("batch", "jobs") => job_cells(obj, now),
        ("batch", "cronjobs") => cronjob_cells(obj, now),
        ("coordination.k8s.io", "leases") => vec![
            name_of(obj),
            Value::from(st(obj, &["spec", "holderIdentity"])),
            age_of(obj, now),
        ],
        ("discovery.k8s.io", "endpointslices") => endpointslice_cells(obj, now),
        ("rbac.authorization.k8s.io", "rolebindings")
        | ("rbac.authorization.k8s.io", "clusterrolebindings") => binding_cells(obj, now),
        ("networking.k8s.io", "ingresses") => ingress_cells(obj, now),
        ("networking.k8s.io", "ingressclasses") => ingressclass_cells(obj, now),
        ("networking.k8s.io", "networkpolicies") => vec![
            name_of(obj),
            Value::from(format_label_selector(get(obj, &["spec", "podSelector"]))),
            age_of(obj, now),
        ],
        ("policy", "poddisruptionbudgets") => vec![
            name_of(obj),
            Value::from(int_or_string(get(obj, &["spec", "minAvailable"]))),
            Value::from(int_or_string(get(obj, &["spec", "maxUnavailable"]))),
            Value::from(int_of(obj, &["status", "disruptionsAllowed"])),
            age_of(obj, now),
        ],
        ("storage.k8s.io", "storageclasses") => storageclass_cells(obj, now),
        ("certificates.k8s.io", "certificatesigningrequests") => vec![
            name_of(obj),
            age_of(obj, now),
            Value::from(match st(obj, &["spec", "signerName"]) {
                "" => "<none>",
                s => s,
            }),
            Value::from(st(obj, &["spec", "username"])),
            Value::from(crate::certificates::requested_duration(obj)),
            Value::from(crate::certificates::condition_text(obj)),
        ],
        ("scheduling.k8s.io", "priorityclasses") => vec![
            name_of(obj),
            Value::from(int_of(obj, &["value"])),
            Value::from(bool_of(obj, &["globalDefault"])),
            age_of(obj, now),
            Value::from(st(obj, &["preemptionPolicy"])),
        ],
        ("node.k8s.io", "runtimeclasses") => vec![
            name_of(obj),
            Value::from(st(obj, &["handler"])),
            age_of(obj, now),
        ],
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
        | ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => vec![
            name_of(obj),
            Value::from(len_of(obj, &["webhooks"]) as i64),
            age_of(obj, now),
        ],
        _ => vec![name_of(obj), Value::from(created_at_rfc3339(obj))],
    }
}

/// Upstream's short human duration (k8s.io/apimachinery/pkg/util/duration.HumanDuration): "5s", "3m20s", "2d3h", "<invalid>" for negative beyond a small skew ...
pub fn human_duration(d: chrono::Duration) -> String {
    // whole seconds, truncated toward zero; up to 1s of clock skew reads as "now"
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d.num_minutes();
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d.num_hours();
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, h)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{}d", hours / 24 / 365, dy)
        };
    }
    format!("{}y", hours / 24 / 365)
}

// ---------------------------------------------------------------------------
// JSON access helpers (never panic, JSON null counts as absent)
// ---------------------------------------------------------------------------

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.as_object()?.get(*key)?;
    }
    if cur.is_null() {
        None
    } else {
        Some(cur)
    }
}

fn has(v: &Value, path: &[&str]) -> bool {
    get(v, path).is_some()
}

/// String field, "" when absent or not a string.
fn st<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

fn opt_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

fn as_int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
        .or_else(|| v.as_f64().map(|f| f as i64))
}

fn opt_int(v: &Value, path: &[&str]) -> Option<i64> {
    get(v, path).and_then(as_int)
}

/// Integer field, 0 when absent.
fn int_of(v: &Value, path: &[&str]) -> i64 {
    opt_int(v, path).unwrap_or(0)
}

fn bool_of(v: &Value, path: &[&str]) -> bool {
    get(v, path).and_then(Value::as_bool).unwrap_or(false)
}

fn arr<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Number of entries of an object or array field, 0 when absent.
fn len_of(v: &Value, path: &[&str]) -> usize {
    match get(v, path) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

/// Go's zero time (0001-01-01T00:00:00Z) as a unix timestamp.
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    if t.timestamp() == GO_ZERO_TIME_UNIX && t.timestamp_subsec_nanos() == 0 {
        None
    } else {
        Some(t)
    }
}

fn time_of(v: &Value, path: &[&str]) -> Option<DateTime<Utc>> {
    opt_str(v, path).and_then(parse_time)
}

/// Age since a timestamp, "<unknown>" when absent.
fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => human_duration(now.signed_duration_since(t)),
        None => "<unknown>".to_string(),
    }
}

/// "pods: 1/10, requests.cpu: 0/2" (requests and counts) and the limits.* ones apart.
fn quota_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (mut req, mut lim) = (Vec::new(), Vec::new());
    let used = obj.pointer("/status/used");
    if let Some(hard) = obj.pointer("/status/hard").and_then(Value::as_object) {
        for (k, h) in hard {
            let u = used
                .and_then(|u| u.get(k))
                .and_then(Value::as_str)
                .unwrap_or("0");
            let cell = format!("{k}: {u}/{}", h.as_str().unwrap_or_default());
            if k.starts_with("limits.") {
                lim.push(cell);
            } else {
                req.push(cell);
            }
        }
    }
    vec![
        name_of(obj),
        age_of(obj, now),
        Value::from(req.join(", ")),
        Value::from(lim.join(", ")),
    ]
}

fn name_of(obj: &Value) -> Value {
    Value::from(st(obj, &["metadata", "name"]))
}

fn age_of(obj: &Value, now: DateTime<Utc>) -> Value {
    Value::from(since(time_of(obj, &["metadata", "creationTimestamp"]), now))
}

fn is_deleting(obj: &Value) -> bool {
    has(obj, &["metadata", "deletionTimestamp"])
}

/// The default convertor's "Created At" cell: RFC 3339 in UTC, whole seconds.
fn created_at_rfc3339(obj: &Value) -> String {
    match time_of(obj, &["metadata", "creationTimestamp"]) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "0001-01-01T00:00:00Z".to_string(),
    }
}

/// Comma-joined container names and images, as two strings.
fn container_cells(containers: &[Value]) -> (Value, Value) {
    let names: Vec<&str> = containers.iter().map(|c| st(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| st(c, &["image"])).collect();
    (Value::from(names.join(",")), Value::from(images.join(",")))
}

/// A `map[string]string` label set as "k=v,k2=v2" sorted by key, "<none>" when empty.
fn format_labels(v: Option<&Value>) -> String {
    let mut pairs: BTreeMap<&str, &str> = BTreeMap::new();
    if let Some(m) = v.and_then(Value::as_object) {
        for (k, val) in m {
            pairs.insert(k.as_str(), val.as_str().unwrap_or(""));
        }
    }
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Renders a metav1.LabelSelector the way labels.Selector.String() does.
/// Err(()) when the selector cannot be converted (bad operator / values).
fn selector_string(sel: Option<&Value>) -> Result<String, ()> {
    let Some(sel) = sel else {
        return Ok(String::new());
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = st(e, &["key"]);
            let mut values: Vec<&str> = arr(e, &["values"])
                .iter()
                .map(|v| v.as_str().unwrap_or(""))
                .collect();
            values.sort_unstable();
            let rendered = match st(e, &["operator"]) {
                "In" | "NotIn" if values.is_empty() => return Err(()),
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" | "DoesNotExist" if !values.is_empty() => return Err(()),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                _ => return Err(()),
            };
            reqs.push((key.to_string(), rendered));
        }
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(","))
}

/// metav1.FormatLabelSelector: "<none>" for an empty selector, "<error>" for a bad one.
fn format_label_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
        Err(()) => "<error>".to_string(),
    }
}

/// IntOrString rendered as text, "N/A" when absent.
fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(other) => as_int(other).map_or_else(|| other.to_string(), |i| i.to_string()),
        None => "N/A".to_string(),
    }
}

/// A resource.Quantity as stored (string, or a bare number), "0" when absent.
fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

/// "True" / "False" / "<unset>" like upstream's printBoolPtr.
fn bool_ptr(v: Option<&Value>) -> String {
    match v.and_then(Value::as_bool) {
        Some(true) => "True".to_string(),
        Some(false) => "False".to_string(),
        None => "<unset>".to_string(),
    }
}

/// net.JoinHostPort: IPv6 literals get brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// "a,b,c" or "a,b,c + N more..." or "<unset>" (upstream listWithMoreString).
fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count.saturating_sub(max));
    }
    if ret.is_empty() {
        "<unset>".to_string()
    } else {
        ret
    }
}

/// Spec replicas of a workload; the API defaults a missing value to 1.
fn spec_replicas(obj: &Value) -> i64 {
    opt_int(obj, &["spec", "replicas"]).unwrap_or(1)
}

fn condition_true(conditions: &[Value], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| st(c, &["type"]) == type_ && st(c, &["status"]) == "True")
}

/// The first condition of the type decides (upstream hasJobCondition / isPodInitializedConditionTrue).
fn first_condition_true(conditions: &[Value], type_: &str) -> bool {
    conditions
        .iter()
        .find(|c| st(c, &["type"]) == type_)
        .is_some_and(|c| st(c, &["status"]) == "True")
}

fn later(cur: Option<DateTime<Utc>>, t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (cur, t) {
        (Some(c), Some(t)) if t > c => Some(t),
        (None, Some(t)) => Some(t),
        (c, _) => c,
    }
}

// ---------------------------------------------------------------------------
// core/v1
// ---------------------------------------------------------------------------

fn terminated_reason(term: &Value, prefix: &str) -> String {
    let reason = st(term, &["reason"]);
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    let signal = int_of(term, &["signal"]);
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int_of(term, &["exitCode"]))
    }
}

fn pod_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let phase = st(obj, &["status", "phase"]);
    let conditions = arr(obj, &["status", "conditions"]);
    let mut reason = phase.to_string();
    let status_reason = st(obj, &["status", "reason"]);
    if !status_reason.is_empty() {
        reason = status_reason.to_string();
    }
    if conditions
        .iter()
        .any(|c| st(c, &["type"]) == "PodScheduled" && st(c, &["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let containers = arr(obj, &["spec", "containers"]);
    let init_specs = arr(obj, &["spec", "initContainers"]);
    // sidecars: init containers that keep running beside the main ones
    let sidecars: HashSet<&str> = init_specs
        .iter()
        .filter(|c| st(c, &["restartPolicy"]) == "Always")
        .map(|c| st(c, &["name"]))
        .collect();
    let total = containers.len()
        + init_specs
            .iter()
            .filter(|c| st(c, &["restartPolicy"]) == "Always")
            .count();

    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut ready: i64 = 0;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_sidecar_restart: Option<DateTime<Utc>> = None;
    let mut initializing = false;

    for (i, cs) in arr(obj, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let count = int_of(cs, &["restartCount"]);
        restarts += count;
        let finished = if has(cs, &["lastState", "terminated"]) {
            time_of(cs, &["lastState", "terminated", "finishedAt"])
        } else {
            None
        };
        last_restart = later(last_restart, finished);
        let is_sidecar = sidecars.contains(st(cs, &["name"]));
        if is_sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = later(last_sidecar_restart, finished);
        }
        let terminated = get(cs, &["state", "terminated"]);
        let waiting_reason = st(cs, &["state", "waiting", "reason"]);
        if terminated.is_some_and(|t| int_of(t, &["exitCode"]) == 0) {
            continue;
        }
        if is_sidecar && get(cs, &["started"]).and_then(Value::as_bool) == Some(true) {
            if bool_of(cs, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(t) = terminated {
            terminated_reason(t, "Init:")
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{}/{}", i, init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || first_condition_true(conditions, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for cs in arr(obj, &["status", "containerStatuses"]).iter().rev() {
            restarts += int_of(cs, &["restartCount"]);
            if has(cs, &["lastState", "terminated"]) {
                last_restart = later(
                    last_restart,
                    time_of(cs, &["lastState", "terminated", "finishedAt"]),
                );
            }
            let waiting_reason = st(cs, &["state", "waiting", "reason"]);
            let terminated = get(cs, &["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                reason = terminated_reason(t, "");
            } else if bool_of(cs, &["ready"]) && has(cs, &["state", "running"]) {
                has_running = true;
                ready += 1;
            }
        }
        // a pod whose first container completed but others still run is not "Completed"
        if reason == "Completed" && has_running {
            reason = if condition_true(conditions, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    if is_deleting(obj) && status_reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if is_deleting(obj) && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };

    // wide
    let mut ip = arr(obj, &["status", "podIPs"])
        .first()
        .map(|p| st(p, &["ip"]))
        .unwrap_or("");
    if ip.is_empty() {
        ip = st(obj, &["status", "podIP"]);
    }
    let or_none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    let gates = arr(obj, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let satisfied = gates
            .iter()
            .filter(|g| {
                let t = st(g, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| st(c, &["type"]) == t)
                    .is_some_and(|c| st(c, &["status"]) == "True")
            })
            .count();
        format!("{satisfied}/{}", gates.len())
    };

    vec![
        name_of(obj),
        Value::from(format!("{ready}/{total}")),
        Value::from(reason),
        Value::from(restarts_cell),
        age_of(obj, now),
        Value::from(or_none(ip)),
        Value::from(or_none(st(obj, &["spec", "nodeName"]))),
        Value::from(or_none(st(obj, &["status", "nominatedNodeName"]))),
        Value::from(readiness_gates),
    ]
}

fn namespace_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // the API defaults an empty phase to Active
    let phase = opt_str(obj, &["status", "phase"])
        .filter(|p| !p.is_empty())
        .unwrap_or("Active");
    vec![name_of(obj), Value::from(phase), age_of(obj, now)]
}

fn node_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    // the last condition of a type wins, as in upstream's map
    if let Some(c) = arr(obj, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| st(c, &["type"]) == "Ready")
    {
        if st(c, &["status"]) == "True" {
            status.push("Ready".to_string());
        } else {
            status.push("NotReady".to_string());
        }
    }
    if status.is_empty() {
        status.push("Unknown".to_string());
    }
    if bool_of(obj, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled".to_string());
    }

    let mut roles: BTreeSet<&str> = BTreeSet::new();
    if let Some(labels) = get(obj, &["metadata", "labels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role);
                }
            } else if k == "kubernetes.io/role" {
                let v = v.as_str().unwrap_or("");
                if !v.is_empty() {
                    roles.insert(v);
                }
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };

    let address = |kind: &str| {
        arr(obj, &["status", "addresses"])
            .iter()
            .find(|a| st(a, &["type"]) == kind)
            .map(|a| st(a, &["address"]).to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let info = |field: &str| {
        let v = st(obj, &["status", "nodeInfo", field]);
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };

    vec![
        name_of(obj),
        Value::from(status.join(",")),
        Value::from(roles),
        age_of(obj, now),
        Value::from(st(obj, &["status", "nodeInfo", "kubeletVersion"])),
        Value::from(address("InternalIP")),
        Value::from(address("ExternalIP")),
        Value::from(info("osImage")),
        Value::from(info("kernelVersion")),
        Value::from(info("containerRuntimeVersion")),
    ]
}

fn service_external_ip(obj: &Value, svc_type: &str) -> String {
    let external_ips: Vec<&str> = arr(obj, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match svc_type {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let mut lb: BTreeSet<&str> = BTreeSet::new();
            for ing in arr(obj, &["status", "loadBalancer", "ingress"]) {
                let ip = st(ing, &["ip"]);
                let host = st(ing, &["hostname"]);
                if !ip.is_empty() {
                    lb.insert(ip);
                } else if !host.is_empty() {
                    lb.insert(host);
                }
            }
            let mut all: Vec<&str> = lb.into_iter().collect();
            all.extend(external_ips);
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => st(obj, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn service_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // the API defaults type to ClusterIP and protocol to TCP
    let svc_type = opt_str(obj, &["spec", "type"])
        .filter(|t| !t.is_empty())
        .unwrap_or("ClusterIP");
    let mut cluster_ip = arr(obj, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or("");
    if cluster_ip.is_empty() {
        cluster_ip = st(obj, &["spec", "clusterIP"]);
    }
    let cluster_ip = if cluster_ip.is_empty() {
        "<none>"
    } else {
        cluster_ip
    };
    let ports: Vec<String> = arr(obj, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_of(p, &["port"]);
            let proto = opt_str(p, &["protocol"])
                .filter(|s| !s.is_empty())
                .unwrap_or("TCP");
            let node_port = int_of(p, &["nodePort"]);
            if node_port > 0 {
                format!("{port}:{node_port}/{proto}")
            } else {
                format!("{port}/{proto}")
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        name_of(obj),
        Value::from(svc_type),
        Value::from(cluster_ip),
        Value::from(service_external_ip(obj, svc_type)),
        Value::from(ports),
        age_of(obj, now),
        Value::from(format_labels(get(obj, &["spec", "selector"]))),
    ]
}

fn format_endpoints(obj: &Value) -> String {
    let subsets = arr(obj, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = arr(ss, &["addresses"]);
        let ports = arr(ss, &["ports"]);
        if ports.is_empty() {
            // headless services may have no ports
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(st(a, &["ip"]).to_string());
            }
            continue;
        }
        for p in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(st(a, &["ip"]), int_of(p, &["port"])));
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count.saturating_sub(MAX))
    } else {
        ret
    }
}

fn endpoints_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name_of(obj),
        Value::from(format_endpoints(obj)),
        age_of(obj, now),
    ]
}

/// Where the event fields live in one API version.
struct EventFields {
    regarding: &'static str,
    message: &'static str,
    source: &'static str,
    first: &'static str,
    last: &'static str,
    count: &'static str,
    reporting_controller: &'static str,
}

const CORE_EVENT_FIELDS: EventFields = EventFields {
    regarding: "involvedObject",
    message: "message",
    source: "source",
    first: "firstTimestamp",
    last: "lastTimestamp",
    count: "count",
    reporting_controller: "reportingComponent",
};

const V1_EVENT_FIELDS: EventFields = EventFields {
    regarding: "regarding",
    message: "note",
    source: "deprecatedSource",
    first: "deprecatedFirstTimestamp",
    last: "deprecatedLastTimestamp",
    count: "deprecatedCount",
    reporting_controller: "reportingController",
};

fn event_cells(obj: &Value, now: DateTime<Utc>, f: &EventFields, alt: &EventFields) -> Vec<Value> {
    // read the version's own field name, falling back to the other version's
    let field = |a: &'static str, b: &'static str| get(obj, &[a]).or_else(|| get(obj, &[b]));
    let fstr = |a: &'static str, b: &'static str| field(a, b).and_then(Value::as_str).unwrap_or("");
    let ftime =
        |a: &'static str, b: &'static str| field(a, b).and_then(Value::as_str).and_then(parse_time);

    let first_ts = ftime(f.first, alt.first);
    let first = match first_ts {
        Some(t) => since(Some(t), now),
        None => since(time_of(obj, &["eventTime"]), now),
    };
    let mut last = match ftime(f.last, alt.last) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = field(f.count, alt.count).and_then(as_int).unwrap_or(0);
    if let Some(series) = get(obj, &["series"]) {
        last = since(time_of(series, &["lastObservedTime"]), now);
        count = int_of(series, &["count"]);
    } else if count == 0 {
        // singleton events carry no count in the new API
        count = 1;
    }

    let regarding = field(f.regarding, alt.regarding).unwrap_or(&Value::Null);
    let kind = st(regarding, &["kind"]).to_lowercase();
    let target_name = st(regarding, &["name"]);
    let target = if target_name.is_empty() {
        kind
    } else {
        format!("{kind}/{target_name}")
    };

    let source = field(f.source, alt.source).unwrap_or(&Value::Null);
    let component = match st(source, &["component"]) {
        "" => fstr(f.reporting_controller, alt.reporting_controller),
        c => c,
    };
    let instance = match st(source, &["host"]) {
        "" => st(obj, &["reportingInstance"]),
        h => h,
    };
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };

    vec![
        Value::from(last),
        Value::from(st(obj, &["type"])),
        Value::from(st(obj, &["reason"])),
        Value::from(target),
        Value::from(st(regarding, &["fieldPath"])),
        Value::from(source),
        Value::from(fstr(f.message, alt.message).trim()),
        Value::from(first),
        Value::from(count),
        name_of(obj),
    ]
}

fn access_modes(modes: &[Value]) -> String {
    let has_mode = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    let mut out: Vec<&str> = Vec::new();
    for (mode, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if has_mode(mode) {
            out.push(short);
        }
    }
    out.join(",")
}

/// Storage class name: the beta annotation wins over spec.storageClassName.
fn storage_class(obj: &Value) -> String {
    if let Some(c) = get(obj, &["metadata", "annotations"])
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
        .and_then(Value::as_str)
    {
        return c.to_string();
    }
    st(obj, &["spec", "storageClassName"]).to_string()
}

fn unset_or(obj: &Value, path: &[&str]) -> String {
    opt_str(obj, path).unwrap_or("<unset>").to_string()
}

fn pv_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let claim = match get(obj, &["spec", "claimRef"]) {
        Some(c) => format!("{}/{}", st(c, &["namespace"]), st(c, &["name"])),
        None => String::new(),
    };
    let phase = if is_deleting(obj) {
        "Terminating"
    } else {
        st(obj, &["status", "phase"])
    };
    vec![
        name_of(obj),
        Value::from(quantity(get(obj, &["spec", "capacity", "storage"]))),
        Value::from(access_modes(arr(obj, &["spec", "accessModes"]))),
        Value::from(st(obj, &["spec", "persistentVolumeReclaimPolicy"])),
        Value::from(phase),
        Value::from(claim),
        Value::from(storage_class(obj)),
        Value::from(unset_or(obj, &["spec", "volumeAttributesClassName"])),
        Value::from(st(obj, &["status", "reason"])),
        age_of(obj, now),
        Value::from(unset_or(obj, &["spec", "volumeMode"])),
    ]
}

fn pvc_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let phase = if is_deleting(obj) {
        "Terminating"
    } else {
        st(obj, &["status", "phase"])
    };
    let volume = st(obj, &["spec", "volumeName"]);
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(get(obj, &["status", "capacity", "storage"])),
            access_modes(arr(obj, &["status", "accessModes"])),
        )
    };
    vec![
        name_of(obj),
        Value::from(phase),
        Value::from(volume),
        Value::from(capacity),
        Value::from(modes),
        Value::from(storage_class(obj)),
        Value::from(unset_or(obj, &["spec", "volumeAttributesClassName"])),
        age_of(obj, now),
        Value::from(unset_or(obj, &["spec", "volumeMode"])),
    ]
}

fn rc_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(arr(obj, &["spec", "template", "spec", "containers"]));
    vec![
        name_of(obj),
        Value::from(spec_replicas(obj)),
        Value::from(int_of(obj, &["status", "replicas"])),
        Value::from(int_of(obj, &["status", "readyReplicas"])),
        age_of(obj, now),
        names,
        images,
        Value::from(format_labels(get(obj, &["spec", "selector"]))),
    ]
}

// ---------------------------------------------------------------------------
// apps/v1
// ---------------------------------------------------------------------------

fn template_containers(obj: &Value) -> (Value, Value) {
    container_cells(arr(obj, &["spec", "template", "spec", "containers"]))
}

fn deployment_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(obj);
    let selector = selector_string(get(obj, &["spec", "selector"]))
        .unwrap_or_else(|()| "<invalid>".to_string());
    vec![
        name_of(obj),
        Value::from(format!(
            "{}/{}",
            int_of(obj, &["status", "readyReplicas"]),
            spec_replicas(obj)
        )),
        Value::from(int_of(obj, &["status", "updatedReplicas"])),
        Value::from(int_of(obj, &["status", "availableReplicas"])),
        age_of(obj, now),
        names,
        images,
        Value::from(selector),
    ]
}

fn replicaset_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(obj);
    vec![
        name_of(obj),
        Value::from(spec_replicas(obj)),
        Value::from(int_of(obj, &["status", "replicas"])),
        Value::from(int_of(obj, &["status", "readyReplicas"])),
        age_of(obj, now),
        names,
        images,
        Value::from(format_label_selector(get(obj, &["spec", "selector"]))),
    ]
}

fn statefulset_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(obj);
    vec![
        name_of(obj),
        Value::from(format!(
            "{}/{}",
            int_of(obj, &["status", "readyReplicas"]),
            spec_replicas(obj)
        )),
        age_of(obj, now),
        names,
        images,
    ]
}

fn daemonset_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(obj);
    vec![
        name_of(obj),
        Value::from(int_of(obj, &["status", "desiredNumberScheduled"])),
        Value::from(int_of(obj, &["status", "currentNumberScheduled"])),
        Value::from(int_of(obj, &["status", "numberReady"])),
        Value::from(int_of(obj, &["status", "updatedNumberScheduled"])),
        Value::from(int_of(obj, &["status", "numberAvailable"])),
        Value::from(format_labels(get(
            obj,
            &["spec", "template", "spec", "nodeSelector"],
        ))),
        age_of(obj, now),
        names,
        images,
        Value::from(format_label_selector(get(obj, &["spec", "selector"]))),
    ]
}

// ---------------------------------------------------------------------------
// batch/v1
// ---------------------------------------------------------------------------

fn job_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let succeeded = int_of(obj, &["status", "succeeded"]);
    let completions = match opt_int(obj, &["spec", "completions"]) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = int_of(obj, &["spec", "parallelism"]);
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let duration = match (
        time_of(obj, &["status", "startTime"]),
        time_of(obj, &["status", "completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now.signed_duration_since(start)),
        (Some(start), Some(done)) => human_duration(done.signed_duration_since(start)),
    };
    let conditions = arr(obj, &["status", "conditions"]);
    let status = if first_condition_true(conditions, "Complete") {
        "Complete"
    } else if first_condition_true(conditions, "Failed") {
        "Failed"
    } else if is_deleting(obj) {
        "Terminating"
    } else if first_condition_true(conditions, "Suspended") {
        "Suspended"
    } else if first_condition_true(conditions, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = template_containers(obj);
    vec![
        name_of(obj),
        Value::from(status),
        Value::from(completions),
        Value::from(duration),
        age_of(obj, now),
        names,
        images,
        Value::from(format_label_selector(get(obj, &["spec", "selector"]))),
    ]
}

fn cronjob_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let last_schedule = if has(obj, &["status", "lastScheduleTime"]) {
        since(time_of(obj, &["status", "lastScheduleTime"]), now)
    } else {
        "<none>".to_string()
    };
    let job_spec = get(obj, &["spec", "jobTemplate", "spec"]).unwrap_or(&Value::Null);
    let (names, images) = container_cells(arr(job_spec, &["template", "spec", "containers"]));
    vec![
        name_of(obj),
        Value::from(st(obj, &["spec", "schedule"])),
        Value::from(opt_str(obj, &["spec", "timeZone"]).unwrap_or("<none>")),
        Value::from(bool_ptr(get(obj, &["spec", "suspend"]))),
        Value::from(len_of(obj, &["status", "active"]) as i64),
        Value::from(last_schedule),
        age_of(obj, now),
        names,
        images,
        Value::from(format_label_selector(get(job_spec, &["selector"]))),
    ]
}

// ---------------------------------------------------------------------------
// other groups
// ---------------------------------------------------------------------------

fn endpointslice_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    const MAX: usize = 3;
    let mut ports: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for p in arr(obj, &["ports"]) {
        if ports.len() < MAX {
            let s = match (opt_int(p, &["port"]), opt_str(p, &["name"])) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".to_string(),
            };
            ports.push(s);
        } else {
            more = true;
        }
        count += 1;
    }
    let ports = list_with_more(&ports, more, count, MAX);

    let mut addrs: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ep in arr(obj, &["endpoints"]) {
        for a in arr(ep, &["addresses"]) {
            if addrs.len() < MAX {
                addrs.push(a.as_str().unwrap_or("").to_string());
            } else {
                more = true;
            }
            count += 1;
        }
    }
    let endpoints = list_with_more(&addrs, more, count, MAX);

    vec![
        name_of(obj),
        Value::from(st(obj, &["addressType"])),
        Value::from(ports),
        Value::from(endpoints),
        age_of(obj, now),
    ]
}

fn binding_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let role = format!(
        "{}/{}",
        st(obj, &["roleRef", "kind"]),
        st(obj, &["roleRef", "name"])
    );
    let mut users: Vec<String> = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    let mut sas: Vec<String> = Vec::new();
    for s in arr(obj, &["subjects"]) {
        match st(s, &["kind"]) {
            "User" => users.push(st(s, &["name"]).to_string()),
            "Group" => groups.push(st(s, &["name"]).to_string()),
            "ServiceAccount" => sas.push(format!("{}/{}", st(s, &["namespace"]), st(s, &["name"]))),
            _ => {}
        }
    }
    vec![
        name_of(obj),
        Value::from(role),
        age_of(obj, now),
        Value::from(users.join(", ")),
        Value::from(groups.join(", ")),
        Value::from(sas.join(", ")),
    ]
}

fn ingress_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    const MAX: usize = 3;
    let rules = arr(obj, &["spec", "rules"]);
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for r in rules {
        if hosts.len() == MAX {
            more = true;
        }
        let host = st(r, &["host"]);
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    let hosts = if hosts.is_empty() {
        "*".to_string()
    } else if more {
        format!(
            "{} + {} more...",
            hosts.join(","),
            rules.len().saturating_sub(MAX)
        )
    } else {
        hosts.join(",")
    };
    let mut lb: BTreeSet<&str> = BTreeSet::new();
    for ing in arr(obj, &["status", "loadBalancer", "ingress"]) {
        let ip = st(ing, &["ip"]);
        let host = st(ing, &["hostname"]);
        if !ip.is_empty() {
            lb.insert(ip);
        } else if !host.is_empty() {
            lb.insert(host);
        }
    }
    let address = lb.into_iter().collect::<Vec<_>>().join(",");
    let ports = if arr(obj, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name_of(obj),
        Value::from(opt_str(obj, &["spec", "ingressClassName"]).unwrap_or("<none>")),
        Value::from(hosts),
        Value::from(address),
        Value::from(ports),
        age_of(obj, now),
    ]
}

fn ingressclass_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let parameters = match get(obj, &["spec", "parameters"]) {
        Some(p) => {
            let mut s = st(p, &["kind"]).to_string();
            if let Some(g) = opt_str(p, &["apiGroup"]) {
                s.push('.');
                s.push_str(g);
            }
            format!("{s}/{}", st(p, &["name"]))
        }
        None => "<none>".to_string(),
    };
    vec![
        name_of(obj),
        Value::from(st(obj, &["spec", "controller"])),
        Value::from(parameters),
        age_of(obj, now),
    ]
}

fn storageclass_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let annotations = get(obj, &["metadata", "annotations"]);
    let is_default = [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|k| annotations.and_then(|a| a.get(*k)).and_then(Value::as_str) == Some("true"));
    let mut name = st(obj, &["metadata", "name"]).to_string();
    if is_default {
        name.push_str(" (default)");
    }
    vec![
        Value::from(name),
        Value::from(st(obj, &["provisioner"])),
        Value::from(opt_str(obj, &["reclaimPolicy"]).unwrap_or("Delete")),
        Value::from(opt_str(obj, &["volumeBindingMode"]).unwrap_or("Immediate")),
        Value::from(bool_of(obj, &["allowVolumeExpansion"])),
        age_of(obj, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0)
            .single()
            .unwrap_or_default()
    }

    /// RFC 3339 of `now - secs`.
    fn ago(secs: i64) -> String {
        (now() - Duration::seconds(secs))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn strs(cells: &[Value]) -> Vec<String> {
        cells
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "p", "creationTimestamp": ago(300)},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]},
            "status": status,
        })
    }

    fn pod_cells_of(obj: &Value) -> Vec<String> {
        strs(&cells("", "pods", obj, now()))
    }

    // ---- human_duration ----

    #[test]
    fn human_duration_boundaries() {
        let cases: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (8 * 86400 - 1, "7d23h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (731 * 86400, "2y1d"),
            (8 * 365 * 86400, "8y"),
            (20 * 365 * 86400, "20y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::seconds(*secs)), *want, "{secs}s");
        }
    }

    #[test]
    fn human_duration_negative_skew() {
        assert_eq!(human_duration(Duration::milliseconds(-500)), "0s");
        assert_eq!(human_duration(Duration::seconds(-1)), "0s");
        assert_eq!(human_duration(Duration::milliseconds(-1999)), "0s");
        assert_eq!(human_duration(Duration::seconds(-2)), "<invalid>");
        assert_eq!(human_duration(Duration::days(-3)), "<invalid>");
        assert_eq!(human_duration(Duration::milliseconds(1999)), "1s");
    }

    // ---- columns ----

    #[test]
    fn name_column_shape() {
        for (g, r) in [("", "pods"), ("apps", "deployments"), ("x", "unknown")] {
            let cols = columns(g, r);
            assert_eq!(
                cols[0],
                Column {
                    name: "Name",
                    type_: "string",
                    format: "name",
                    description: cols[0].description,
                    priority: 0
                }
            );
            assert!(!cols[0].description.is_empty());
        }
    }

    #[test]
    fn pod_columns() {
        let cols = columns("", "pods");
        let names: Vec<_> = cols.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        let prio: Vec<_> = cols.iter().map(|c| c.priority).collect();
        assert_eq!(prio, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
    }

    #[test]
    fn default_columns_for_unknown_and_roles() {
        for (g, r) in [
            ("example.com", "widgets"),
            ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "clusterroles"),
        ] {
            let cols = columns(g, r);
            assert_eq!(cols.len(), 2);
            assert_eq!(cols[1].name, "Created At");
            assert_eq!(cols[1].type_, "date");
        }
        let obj =
            json!({"metadata": {"name": "admin", "creationTimestamp": "2024-01-02T03:04:05Z"}});
        assert_eq!(
            cells("rbac.authorization.k8s.io", "clusterroles", &obj, now()),
            vec![json!("admin"), json!("2024-01-02T03:04:05Z")]
        );
        assert_eq!(
            cells("x", "y", &json!({}), now()),
            vec![json!(""), json!("0001-01-01T00:00:00Z")]
        );
    }

    #[test]
    fn event_columns_order() {
        for g in ["", "events.k8s.io"] {
            let cols = columns(g, "events");
            let names: Vec<_> = cols.iter().map(|c| (c.name, c.priority)).collect();
            assert_eq!(
                names,
                [
                    ("Last Seen", 0),
                    ("Type", 0),
                    ("Reason", 0),
                    ("Object", 0),
                    ("Subobject", 1),
                    ("Source", 1),
                    ("Message", 0),
                    ("First Seen", 1),
                    ("Count", 1),
                    ("Name", 1)
                ]
            );
            assert_eq!(cols[9].format, "name");
        }
    }

    const ALL: &[(&str, &str)] = &[
        ("", "pods"),
        ("", "namespaces"),
        ("", "nodes"),
        ("", "services"),
        ("", "endpoints"),
        ("", "configmaps"),
        ("", "secrets"),
        ("", "serviceaccounts"),
        ("", "events"),
        ("", "persistentvolumes"),
        ("", "persistentvolumeclaims"),
        ("", "resourcequotas"),
        ("", "replicationcontrollers"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("coordination.k8s.io", "leases"),
        ("discovery.k8s.io", "endpointslices"),
        ("events.k8s.io", "events"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
        ("networking.k8s.io", "ingresses"),
        ("networking.k8s.io", "ingressclasses"),
        ("networking.k8s.io", "networkpolicies"),
        ("policy", "poddisruptionbudgets"),
        ("storage.k8s.io", "storageclasses"),
        ("scheduling.k8s.io", "priorityclasses"),
        ("certificates.k8s.io", "certificatesigningrequests"),
        ("node.k8s.io", "runtimeclasses"),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
        ),
        (
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
        ),
        ("example.com", "widgets"),
    ];

    #[test]
    fn missing_fields_never_panic_and_match_column_count() {
        let weird = [
            json!({}),
            json!(null),
            json!([]),
            json!("str"),
            json!({"metadata": null, "spec": null, "status": null}),
            json!({"metadata": {"name": 5, "creationTimestamp": "not a time"},
                   "spec": {"containers": "x", "ports": [null, 1, {"port": "x"}], "selector": 3,
                            "template": {"spec": {"containers": [null, {"name": 1}]}}},
                   "status": {"conditions": [null, 1], "containerStatuses": [null, {"state": 1}],
                              "initContainerStatuses": [{"state": {"terminated": {}}}, {}]},
                   "subsets": [{"addresses": [null], "ports": [null]}],
                   "endpoints": [null, {"addresses": [null, 3]}],
                   "ports": [null, {}],
                   "subjects": [null, {"kind": "User"}],
                   "series": {}}),
        ];
        for (g, r) in ALL {
            let n = columns(g, r).len();
            for obj in &weird {
                let row = cells(g, r, obj, now());
                assert_eq!(row.len(), n, "{g}/{r} with {obj}");
            }
        }
    }

    #[test]
    fn empty_object_defaults() {
        let empty = json!({});
        assert_eq!(
            pod_cells_of(&empty),
            [
                "",
                "0/0",
                "",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "<none>"
            ]
        );
        assert_eq!(
            strs(&cells("", "nodes", &empty, now())),
            [
                "",
                "Unknown",
                "<none>",
                "<unknown>",
                "",
                "<none>",
                "<none>",
                "<unknown>",
                "<unknown>",
                "<unknown>"
            ]
        );
        assert_eq!(
            strs(&cells("", "services", &empty, now())),
            [
                "",
                "ClusterIP",
                "<none>",
                "<none>",
                "<none>",
                "<unknown>",
                "<none>"
            ]
        );
        assert_eq!(
            strs(&cells("", "endpoints", &empty, now())),
            ["", "<none>", "<unknown>"]
        );
        assert_eq!(
            strs(&cells("batch", "jobs", &empty, now())),
            ["", "Running", "0/1", "", "<unknown>", "", "", "<none>"]
        );
        assert_eq!(
            strs(&cells("batch", "cronjobs", &empty, now())),
            [
                "",
                "",
                "<none>",
                "<unset>",
                "0",
                "<none>",
                "<unknown>",
                "",
                "",
                "<none>"
            ]
        );
        assert_eq!(
            strs(&cells("discovery.k8s.io", "endpointslices", &empty, now())),
            ["", "", "<unset>", "<unset>", "<unknown>"]
        );
        assert_eq!(
            strs(&cells("", "events", &empty, now())),
            ["<unknown>", "", "", "", "", "", "", "<unknown>", "1", ""]
        );
    }

    // ---- pods ----

    #[test]
    fn pod_running() {
        let p = json!({
            "metadata": {"name": "web-1", "creationTimestamp": ago(200)},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "node-1"},
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.5",
                "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": ago(100)}}},
                    {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}}
                ]
            }
        });
        let row = cells("", "pods", &p, now());
        assert_eq!(
            row,
            vec![
                json!("web-1"),
                json!("2/2"),
                json!("Running"),
                json!("0"),
                json!("3m20s"),
                json!("10.0.0.5"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn pod_pending_no_statuses() {
        let p = pod(json!({"phase": "Pending"}));
        assert_eq!(&pod_cells_of(&p)[1..4], ["0/1", "Pending", "0"]);
    }

    #[test]
    fn pod_crashloop_with_restarts_ago() {
        let p = pod(json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}}
            }]
        }));
        assert_eq!(
            &pod_cells_of(&p)[1..4],
            ["0/1", "CrashLoopBackOff", "2 (5m ago)"]
        );
    }

    #[test]
    fn pod_restarts_without_last_state_is_plain_number() {
        let p = pod(json!({
            "phase": "Running",
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 4, "state": {"running": {}}}]
        }));
        assert_eq!(&pod_cells_of(&p)[1..4], ["1/1", "Running", "4"]);
    }

    #[test]
    fn pod_completed() {
        let p = pod(json!({
            "phase": "Succeeded",
            "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}
            }]
        }));
        assert_eq!(&pod_cells_of(&p)[1..4], ["0/1", "Completed", "0"]);
    }

    #[test]
    fn pod_completed_but_other_container_running() {
        let status = |ready: &str| {
            json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": ready}],
                "containerStatuses": [
                    {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "b", "ready": true, "state": {"running": {}}}
                ]
            })
        };
        let mut p = pod(status("True"));
        p["spec"]["containers"] = json!([{"name": "a"}, {"name": "b"}]);
        assert_eq!(&pod_cells_of(&p)[1..3], ["1/2", "Running"]);
        p["status"] = status("False");
        assert_eq!(&pod_cells_of(&p)[1..3], ["1/2", "NotReady"]);
    }

    #[test]
    fn pod_terminated_without_reason() {
        let p = pod(json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 137}}}]
        }));
        assert_eq!(pod_cells_of(&p)[2], "ExitCode:137");
        let p = pod(json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 0, "signal": 9}}}]
        }));
        assert_eq!(pod_cells_of(&p)[2], "Signal:9");
    }

    #[test]
    fn pod_init_states() {
        let with_init = |init_status: Value| {
            let mut p = pod(
                json!({"phase": "Pending", "initContainerStatuses": [init_status],
                "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}]}),
            );
            p["spec"]["initContainers"] = json!([{"name": "init"}]);
            pod_cells_of(&p)
        };
        assert_eq!(
            with_init(json!({"name": "init", "state": {"running": {}}}))[2],
            "Init:0/1"
        );
        assert_eq!(
            with_init(json!({"name": "init", "state": {"waiting": {"reason": "PodInitializing"}}}))
                [2],
            "Init:0/1"
        );
        assert_eq!(
            with_init(
                json!({"name": "init", "state": {"waiting": {"reason": "ImagePullBackOff"}}})
            )[2],
            "Init:ImagePullBackOff"
        );
        assert_eq!(
            with_init(json!({"name": "init", "state": {"terminated": {"exitCode": 2}}}))[2],
            "Init:ExitCode:2"
        );
        assert_eq!(
            with_init(
                json!({"name": "init", "state": {"terminated": {"exitCode": 2, "signal": 15}}})
            )[2],
            "Init:Signal:15"
        );
        assert_eq!(
            with_init(
                json!({"name": "init", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}})
            )[2],
            "Init:Error"
        );
        // init finished: main container state is reported
        assert_eq!(
            with_init(
                json!({"name": "init", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}})
            )[2],
            "PodInitializing"
        );
    }

    #[test]
    fn pod_init_second_of_two_and_restarts() {
        let mut p = pod(json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
            {"name": "i2", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(60)}}}
        ]}));
        p["spec"]["initContainers"] = json!([{"name": "i1"}, {"name": "i2"}]);
        assert_eq!(
            &pod_cells_of(&p)[1..4],
            ["0/1", "Init:CrashLoopBackOff", "3 (60s ago)"]
        );
        p["status"]["initContainerStatuses"][1]["state"] = json!({"running": {}});
        assert_eq!(pod_cells_of(&p)[2], "Init:1/2");
    }

    #[test]
    fn pod_sidecar_counts_in_ready() {
        let mut p = pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
            "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "restartCount": 1,
                "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(3600)}}}],
            "containerStatuses": [{"name": "app", "ready": true, "state": {"running": {}}}]
        }));
        p["spec"]["initContainers"] = json!([{"name": "proxy", "restartPolicy": "Always"}]);
        assert_eq!(&pod_cells_of(&p)[1..4], ["2/2", "Running", "1 (60m ago)"]);
    }

    #[test]
    fn pod_terminating_and_unknown() {
        let mut p = pod(json!({
            "phase": "Running",
            "containerStatuses": [{"name": "app", "ready": true, "state": {"running": {}}}]
        }));
        p["metadata"]["deletionTimestamp"] = json!(ago(0));
        assert_eq!(pod_cells_of(&p)[2], "Terminating");
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(pod_cells_of(&p)[2], "Unknown");
        // terminal pods keep their state while being deleted
        let mut done = pod(json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "app", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}));
        done["metadata"]["deletionTimestamp"] = json!(ago(0));
        assert_eq!(pod_cells_of(&done)[2], "Completed");
    }

    #[test]
    fn pod_status_reason_and_scheduling_gated() {
        let p = pod(json!({"phase": "Failed", "reason": "Evicted"}));
        assert_eq!(pod_cells_of(&p)[2], "Evicted");
        let p = pod(json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}));
        assert_eq!(pod_cells_of(&p)[2], "SchedulingGated");
    }

    #[test]
    fn pod_wide_columns() {
        let mut p = pod(json!({
            "phase": "Pending",
            "nominatedNodeName": "node-9",
            "conditions": [{"type": "example.com/a", "status": "True"}, {"type": "example.com/b", "status": "False"}]
        }));
        p["spec"]["readinessGates"] =
            json!([{"conditionType": "example.com/a"}, {"conditionType": "example.com/b"}]);
        let row = pod_cells_of(&p);
        assert_eq!(&row[5..], ["<none>", "<none>", "node-9", "1/2"]);
    }

    // ---- nodes ----

    #[test]
    fn node_status_roles_and_wide() {
        let n = json!({
            "metadata": {"name": "n1", "creationTimestamp": ago(86400 * 3),
                "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/": "",
                           "kubernetes.io/role": "master", "other": "x"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "192.168.0.10"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian", "kernelVersion": "6.1",
                             "containerRuntimeVersion": "containerd://2.0"}
            }
        });
        assert_eq!(
            strs(&cells("", "nodes", &n, now())),
            [
                "n1",
                "Ready,SchedulingDisabled",
                "control-plane,master",
                "3d",
                "v1.33.0",
                "192.168.0.10",
                "<none>",
                "Debian",
                "6.1",
                "containerd://2.0"
            ]
        );
        let n = json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(
            strs(&cells("", "nodes", &n, now()))[1..3],
            ["NotReady", "<none>"]
        );
    }

    // ---- services / endpoints ----

    #[test]
    fn service_nodeport() {
        let s = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(7200)},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                     "selector": {"app": "web", "tier": "fe"}}
        });
        assert_eq!(
            cells("", "services", &s, now()),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("120m"),
                json!("app=web,tier=fe")
            ]
        );
    }

    #[test]
    fn service_external_ips() {
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.1",
            "ports": [{"port": 443}], "externalIPs": ["1.1.1.1"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "5.5.5.5"}, {"hostname": "a.example.com"}, {"ip": "5.5.5.5"}]}}});
        let row = strs(&cells("", "services", &lb, now()));
        assert_eq!(row[3], "5.5.5.5,a.example.com,1.1.1.1");
        assert_eq!(row[4], "443/TCP");
        let pending = json!({"spec": {"type": "LoadBalancer"}});
        assert_eq!(
            strs(&cells("", "services", &pending, now()))[3],
            "<pending>"
        );
        let ext = json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(
            strs(&cells("", "services", &ext, now()))[3],
            "db.example.com"
        );
        let headless =
            json!({"spec": {"clusterIP": "None", "externalIPs": ["2.2.2.2", "3.3.3.3"]}});
        let row = strs(&cells("", "services", &headless, now()));
        assert_eq!(&row[1..4], ["ClusterIP", "None", "2.2.2.2,3.3.3.3"]);
    }

    #[test]
    fn endpoints_format() {
        let e = json!({"metadata": {"name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]},
            {"addresses": [{"ip": "10.0.0.3"}, {"ip": "fd00::1"}], "ports": [{"port": 8080}]}
        ]});
        assert_eq!(
            strs(&cells("", "endpoints", &e, now()))[1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:8080 + 1 more..."
        );
        let e = json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
        assert_eq!(strs(&cells("", "endpoints", &e, now()))[1], "[fd00::1]:80");
        let headless =
            json!({"subsets": [{"addresses": [{"ip": "10.1.1.1"}, {"ip": "10.1.1.2"}]}]});
        assert_eq!(
            strs(&cells("", "endpoints", &headless, now()))[1],
            "10.1.1.1,10.1.1.2"
        );
        let not_ready = json!({"subsets": [{"notReadyAddresses": [{"ip": "10.1.1.1"}], "ports": [{"port": 80}]}]});
        assert_eq!(strs(&cells("", "endpoints", &not_ready, now()))[1], "");
    }

    #[test]
    fn endpointslice_format() {
        let s = json!({"metadata": {"name": "web-abc", "creationTimestamp": ago(10)}, "addressType": "IPv4",
            "ports": [{"port": 80, "name": "http"}, {"name": "named"}, {}, {"port": 9090}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3", "10.0.0.4"]}]});
        assert_eq!(
            strs(&cells("discovery.k8s.io", "endpointslices", &s, now())),
            [
                "web-abc",
                "IPv4",
                "80,named,* + 1 more...",
                "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...",
                "10s"
            ]
        );
    }

    // ---- simple core kinds ----

    #[test]
    fn configmap_secret_sa_namespace() {
        let cm = json!({"metadata": {"name": "cfg", "creationTimestamp": ago(5)}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(
            cells("", "configmaps", &cm, now()),
            vec![json!("cfg"), json!(3), json!("5s")]
        );
        let sec = json!({"metadata": {"name": "tok"}, "type": "Opaque", "data": {"k": "dg=="}});
        assert_eq!(
            cells("", "secrets", &sec, now()),
            vec![json!("tok"), json!("Opaque"), json!(1), json!("<unknown>")]
        );
        let sa = json!({"metadata": {"name": "default"}, "secrets": [{"name": "x"}]});
        assert_eq!(cells("", "serviceaccounts", &sa, now())[1], json!(1));
        let ns = json!({"metadata": {"name": "kube-system"}, "status": {"phase": "Terminating"}});
        assert_eq!(cells("", "namespaces", &ns, now())[1], json!("Terminating"));
        let ns = json!({"metadata": {"name": "fresh"}});
        assert_eq!(cells("", "namespaces", &ns, now())[1], json!("Active"));
    }

    #[test]
    fn persistent_volumes_and_claims() {
        let pv = json!({"metadata": {"name": "pv1", "creationTimestamp": ago(60)},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "fast",
                     "claimRef": {"namespace": "default", "name": "data"}, "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"}});
        assert_eq!(
            strs(&cells("", "persistentvolumes", &pv, now())),
            [
                "pv1",
                "10Gi",
                "RWO,RWX",
                "Retain",
                "Bound",
                "default/data",
                "fast",
                "<unset>",
                "",
                "60s",
                "Filesystem"
            ]
        );
        let pvc = json!({"metadata": {"name": "data", "annotations": {"volume.beta.kubernetes.io/storage-class": "legacy"}},
            "spec": {"volumeName": "pv1", "storageClassName": "fast", "resources": {"requests": {"storage": "5Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOncePod"]}});
        assert_eq!(
            strs(&cells("", "persistentvolumeclaims", &pvc, now())),
            [
                "data",
                "Bound",
                "pv1",
                "10Gi",
                "RWOP",
                "legacy",
                "<unset>",
                "<unknown>",
                "<unset>"
            ]
        );
        let mut pending = json!({"metadata": {"name": "p"}, "spec": {"storageClassName": "fast"}, "status": {"phase": "Pending"}});
        assert_eq!(
            strs(&cells("", "persistentvolumeclaims", &pending, now()))[1..6],
            ["Pending", "", "", "", "fast"]
        );
        pending["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(
            strs(&cells("", "persistentvolumeclaims", &pending, now()))[1],
            "Terminating"
        );
    }

    // ---- events ----

    #[test]
    fn core_event() {
        let ev = json!({
            "metadata": {"name": "web.17a", "creationTimestamp": ago(600)},
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "message": "  image pulled \n", "type": "Normal",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(30), "count": 4
        });
        assert_eq!(
            cells("", "events", &ev, now()),
            vec![
                json!("30s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web"),
                json!("spec.containers{app}"),
                json!("kubelet, node-1"),
                json!("image pulled"),
                json!("10m"),
                json!(4),
                json!("web.17a")
            ]
        );
    }

    #[test]
    fn core_event_new_style_fields() {
        let ev = json!({
            "metadata": {"name": "e"},
            "involvedObject": {"kind": "Node"},
            "eventTime": "2024-06-01T11:59:00.123456Z",
            "reportingComponent": "scheduler", "reportingInstance": "sched-1",
            "series": {"count": 7, "lastObservedTime": "2024-06-01T11:59:50.000000Z"}
        });
        let row = strs(&cells("", "events", &ev, now()));
        assert_eq!(row[0], "10s");
        assert_eq!(row[3], "node");
        assert_eq!(row[5], "scheduler, sched-1");
        assert_eq!(row[7], "59s");
        assert_eq!(row[8], "7");
    }

    #[test]
    fn events_k8s_io_event() {
        let ev = json!({
            "metadata": {"name": "web.18b", "creationTimestamp": ago(120)},
            "regarding": {"kind": "Deployment", "name": "web"},
            "note": "Scaled up replica set web-abc to 3", "reason": "ScalingReplicaSet", "type": "Normal",
            "reportingController": "deployment-controller",
            "eventTime": ago(120),
            "deprecatedCount": 2,
            "deprecatedLastTimestamp": ago(90)
        });
        assert_eq!(
            strs(&cells("events.k8s.io", "events", &ev, now())),
            [
                "90s",
                "Normal",
                "ScalingReplicaSet",
                "deployment/web",
                "",
                "deployment-controller",
                "Scaled up replica set web-abc to 3",
                "2m",
                "2",
                "web.18b"
            ]
        );
    }

    // ---- apps ----

    #[test]
    fn deployment_row() {
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(86400 * 2 + 3600 * 3)},
            "spec": {"replicas": 3,
                     "selector": {"matchLabels": {"app": "web"},
                                  "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]},
                                                       {"key": "canary", "operator": "DoesNotExist"}]},
                     "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"},
                                                          {"name": "sidecar", "image": "busybox"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            cells("apps", "deployments", &d, now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("2d3h"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,busybox"),
                json!("app=web,!canary,env in (dev,prod)")
            ]
        );
        let cols = columns("apps", "deployments");
        assert_eq!(cols.len(), 8);
        assert_eq!(cols[5].priority, 1);
    }

    #[test]
    fn deployment_defaults_and_bad_selector() {
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}});
        let row = strs(&cells("apps", "deployments", &d, now()));
        assert_eq!(row[1], "0/1");
        assert_eq!(row[7], "<invalid>");
        let d = json!({"spec": {"replicas": 0}});
        assert_eq!(strs(&cells("apps", "deployments", &d, now()))[1], "0/0");
        assert_eq!(strs(&cells("apps", "deployments", &d, now()))[7], "");
    }

    #[test]
    fn replicaset_statefulset_daemonset() {
        let rs = json!({"metadata": {"name": "web-abc"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}, "status": {"replicas": 2, "readyReplicas": 1}});
        assert_eq!(
            cells("apps", "replicasets", &rs, now()),
            vec![
                json!("web-abc"),
                json!(2),
                json!(2),
                json!(1),
                json!("<unknown>"),
                json!("c"),
                json!("i"),
                json!("app=web")
            ]
        );
        let sts = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
        assert_eq!(
            strs(&cells("apps", "statefulsets", &sts, now())),
            ["db", "3/3", "<unknown>", "", ""]
        );
        let ds = json!({"metadata": {"name": "agent"}, "spec": {"selector": {},
            "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [{"name": "a", "image": "b"}]}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                       "updatedNumberScheduled": 3, "numberAvailable": 2}});
        assert_eq!(
            cells("apps", "daemonsets", &ds, now()),
            vec![
                json!("agent"),
                json!(3),
                json!(3),
                json!(2),
                json!(3),
                json!(2),
                json!("kubernetes.io/os=linux"),
                json!("<unknown>"),
                json!("a"),
                json!("b"),
                json!("<none>")
            ]
        );
    }

    // ---- batch ----

    #[test]
    fn job_rows() {
        let complete = json!({"metadata": {"name": "pi", "creationTimestamp": ago(600)},
            "spec": {"completions": 1, "parallelism": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                     "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"succeeded": 1, "startTime": ago(600), "completionTime": ago(555),
                       "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}});
        assert_eq!(
            strs(&cells("batch", "jobs", &complete, now())),
            [
                "pi",
                "Complete",
                "1/1",
                "45s",
                "10m",
                "pi",
                "perl",
                "batch.kubernetes.io/controller-uid=u1"
            ]
        );
        let running =
            json!({"spec": {"parallelism": 3}, "status": {"startTime": ago(200), "active": 3}});
        let row = strs(&cells("batch", "jobs", &running, now()));
        assert_eq!(&row[1..4], ["Running", "0/1 of 3", "3m20s"]);
        let failed = json!({"spec": {"completions": 5}, "status": {"succeeded": 2, "conditions": [
            {"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}]}});
        assert_eq!(
            &strs(&cells("batch", "jobs", &failed, now()))[1..3],
            ["Failed", "2/5"]
        );
        let suspended =
            json!({"status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(
            strs(&cells("batch", "jobs", &suspended, now()))[1],
            "Suspended"
        );
        let deleting = json!({"metadata": {"deletionTimestamp": ago(1)},
            "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(
            strs(&cells("batch", "jobs", &deleting, now()))[1],
            "Terminating"
        );
        let target =
            json!({"status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}});
        assert_eq!(
            strs(&cells("batch", "jobs", &target, now()))[1],
            "FailureTarget"
        );
    }

    #[test]
    fn cronjob_row() {
        let cj = json!({"metadata": {"name": "hello", "creationTimestamp": ago(3600 * 5)},
            "spec": {"schedule": "*/5 * * * *", "timeZone": "Etc/UTC", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "h", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "hello-1"}], "lastScheduleTime": ago(90)}});
        assert_eq!(
            cells("batch", "cronjobs", &cj, now()),
            vec![
                json!("hello"),
                json!("*/5 * * * *"),
                json!("Etc/UTC"),
                json!("False"),
                json!(1),
                json!("90s"),
                json!("5h"),
                json!("h"),
                json!("busybox"),
                json!("<none>")
            ]
        );
    }

    // ---- other groups ----

    #[test]
    fn lease_and_bindings() {
        let l = json!({"metadata": {"name": "kube-scheduler"}, "spec": {"holderIdentity": "node-1_abc"}});
        assert_eq!(
            strs(&cells("coordination.k8s.io", "leases", &l, now())),
            ["kube-scheduler", "node-1_abc", "<unknown>"]
        );
        let b = json!({"metadata": {"name": "admins", "creationTimestamp": ago(30)},
            "roleRef": {"kind": "ClusterRole", "name": "cluster-admin", "apiGroup": "rbac.authorization.k8s.io"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "ops"},
                         {"kind": "ServiceAccount", "namespace": "kube-system", "name": "ctrl"},
                         {"kind": "User", "name": "bob"}]});
        assert_eq!(
            strs(&cells(
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                &b,
                now()
            )),
            [
                "admins",
                "ClusterRole/cluster-admin",
                "30s",
                "alice, bob",
                "ops",
                "kube-system/ctrl"
            ]
        );
    }

    #[test]
    fn ingress_storageclass_pdb_misc() {
        let ing = json!({"metadata": {"name": "web"}, "spec": {"ingressClassName": "nginx",
            "rules": [{"host": "a.com"}, {}, {"host": "b.com"}, {"host": "c.com"}, {"host": "d.com"}],
            "tls": [{"hosts": ["a.com"]}]}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}});
        assert_eq!(
            strs(&cells("networking.k8s.io", "ingresses", &ing, now())),
            [
                "web",
                "nginx",
                "a.com,b.com,c.com + 2 more...",
                "1.2.3.4",
                "80, 443",
                "<unknown>"
            ]
        );
        let sc = json!({"metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        assert_eq!(
            cells("storage.k8s.io", "storageclasses", &sc, now()),
            vec![
                json!("standard (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(false),
                json!("<unknown>")
            ]
        );
        let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            cells("policy", "poddisruptionbudgets", &pdb, now()),
            vec![
                json!("p"),
                json!("50%"),
                json!("N/A"),
                json!(1),
                json!("<unknown>")
            ]
        );
        let np = json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
        assert_eq!(
            cells("networking.k8s.io", "networkpolicies", &np, now())[1],
            json!("<none>")
        );
        let ic = json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx",
            "parameters": {"kind": "IngressParameters", "apiGroup": "k8s.example.com", "name": "ext"}}});
        assert_eq!(
            cells("networking.k8s.io", "ingressclasses", &ic, now())[2],
            json!("IngressParameters.k8s.example.com/ext")
        );
        let wh = json!({"metadata": {"name": "w"}, "webhooks": [{}, {}]});
        assert_eq!(
            cells(
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                &wh,
                now()
            )[1],
            json!(2)
        );
        let rc = json!({"metadata": {"name": "rc"}, "spec": {"replicas": 2, "selector": {"app": "x"}}, "status": {"replicas": 2}});
        assert_eq!(
            strs(&cells("", "replicationcontrollers", &rc, now())),
            ["rc", "2", "2", "0", "<unknown>", "", "", "app=x"]
        );
    }

    #[test]
    fn ages_use_now_and_bad_timestamps() {
        let obj =
            json!({"metadata": {"name": "x", "creationTimestamp": "2024-06-01T11:59:59.5+00:00"}});
        assert_eq!(cells("", "configmaps", &obj, now())[2], json!("0s"));
        let future =
            json!({"metadata": {"name": "x", "creationTimestamp": "2024-06-01T12:00:05Z"}});
        assert_eq!(
            cells("", "configmaps", &future, now())[2],
            json!("<invalid>")
        );
        let bad = json!({"metadata": {"name": "x", "creationTimestamp": "yesterday"}});
        assert_eq!(cells("", "configmaps", &bad, now())[2], json!("<unknown>"));
        let zero = json!({"metadata": {"name": "x", "creationTimestamp": "0001-01-01T00:00:00Z"}});
        assert_eq!(cells("", "configmaps", &zero, now())[2], json!("<unknown>"));
    }
}
