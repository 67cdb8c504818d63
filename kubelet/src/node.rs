//! The node's side of the kubelet: register the Node (capacity and
//! allocatable from the machine, addresses, nodeInfo), renew its Lease in
//! kube-node-lease, and report the conditions (Ready, MemoryPressure,
//! DiskPressure, PIDPressure) when they change and every
//! nodeStatusReportFrequency, as upstream's node status manager does.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::watch;

use crate::config::Settings;

pub const KUBELET_VERSION: &str = "v1.33.0";
pub const RUNTIME_VERSION: &str = "libcontainer://0.7.0";

/// Memory the kubelet keeps back from allocatable (upstream's default hard
/// eviction threshold memory.available<100Mi).
const RESERVED_MEMORY: u64 = 100 << 20;

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub(crate) fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    })
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// (total, available) bytes of the filesystem holding `path`.
fn fs_space(path: &Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let f = s.fragment_size();
            (s.blocks() * f, s.blocks_available() * f)
        }
        Err(_) => (0, 0),
    }
}

fn q(s: String) -> Quantity {
    Quantity(s)
}

/// The Node this kubelet registers.
pub fn node_object(s: &Settings) -> Node {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), s.node_name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), arch().to_string()),
    ]);
    for (k, v) in &s.node_labels {
        labels.insert(k.clone(), v.clone());
    }
    Node {
        metadata: ObjectMeta {
            name: Some(s.node_name.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                "volumes.kubernetes.io/controller-managed-attach-detach".to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: s.pod_cidr.clone(),
            pod_cidrs: s.pod_cidr.clone().map(|c| vec![c]),
            taints: (!s.taints.is_empty()).then(|| s.taints.clone()),
            ..Default::default()
        }),
        status: None,
    }
}

/// What the machine looks like now.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub network_ready: Option<String>,
    pub memory_available: u64,
    pub disk_total: u64,
    pub disk_available: u64,
    pub pids_available: u64,
    pub pid_max: u64,
    pub images: Vec<ContainerImage>,
}

pub fn observe(
    s: &Settings,
    network_problem: Option<String>,
    images: Vec<ContainerImage>,
) -> Observed {
    let (disk_total, disk_available) = fs_space(&s.root_dir);
    let pid_max: u64 = read("/proc/sys/kernel/pid_max").parse().unwrap_or(32768);
    let procs = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count() as u64
        })
        .unwrap_or(0);
    Observed {
        network_ready: network_problem,
        memory_available: meminfo("MemAvailable").unwrap_or(0),
        disk_total,
        disk_available,
        pids_available: pid_max.saturating_sub(procs),
        pid_max,
        images,
    }
}

fn condition(
    typ: &str,
    ok: bool,
    good_status: &str,
    reasons: (&str, &str),
    messages: (&str, &str),
) -> NodeCondition {
    let (status, reason, message) = if ok {
        (good_status, reasons.0, messages.0)
    } else {
        (
            if good_status == "True" {
                "False"
            } else {
                "True"
            },
            reasons.1,
            messages.1,
        )
    };
    NodeCondition {
        type_: typ.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: None,
        last_transition_time: None,
    }
}

/// The node's status from what was observed (times are filled in by `stamp`).
pub fn node_status(s: &Settings, o: &Observed) -> NodeStatus {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = meminfo("MemTotal").unwrap_or(0);
    let mut capacity = BTreeMap::from([
        ("cpu".to_string(), q(cpus.to_string())),
        ("memory".to_string(), q(format!("{}Ki", mem / 1024))),
        ("pods".to_string(), q(s.max_pods.to_string())),
        (
            "ephemeral-storage".to_string(),
            q(format!("{}Ki", o.disk_total / 1024)),
        ),
        ("hugepages-2Mi".to_string(), q("0".into())),
    ]);
    let mut allocatable = capacity.clone();
    allocatable.insert(
        "memory".into(),
        q(format!("{}Ki", mem.saturating_sub(RESERVED_MEMORY) / 1024)),
    );
    allocatable.insert(
        "ephemeral-storage".into(),
        q(format!("{}", o.disk_total / 10 * 9)),
    );
    if o.disk_total == 0 {
        capacity.remove("ephemeral-storage");
        allocatable.remove("ephemeral-storage");
    }
    let memory_ok = o.memory_available >= RESERVED_MEMORY;
    let disk_ok = o.disk_total == 0 || o.disk_available * 10 >= o.disk_total;
    let pid_ok = o.pids_available * 10 >= o.pid_max;
    let conditions = vec![
        condition(
            "MemoryPressure",
            memory_ok,
            "False",
            ("KubeletHasSufficientMemory", "KubeletHasInsufficientMemory"),
            ("kubelet has sufficient memory available", "kubelet has insufficient memory available"),
        ),
        condition(
            "DiskPressure",
            disk_ok,
            "False",
            ("KubeletHasNoDiskPressure", "KubeletHasDiskPressure"),
            ("kubelet has no disk pressure", "kubelet has disk pressure"),
        ),
        condition(
            "PIDPressure",
            pid_ok,
            "False",
            ("KubeletHasSufficientPID", "KubeletHasInsufficientPID"),
            ("kubelet has sufficient PID available", "kubelet has insufficient PID available"),
        ),
        match &o.network_ready {
            None => condition(
                "Ready",
                true,
                "True",
                ("KubeletReady", ""),
                ("kubelet is posting ready status", ""),
            ),
            Some(problem) => NodeCondition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: Some("KubeletNotReady".into()),
                message: Some(format!(
                    "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:{problem}"
                )),
                last_heartbeat_time: None,
                last_transition_time: None,
            },
        },
    ];
    let mut addresses: Vec<NodeAddress> = s
        .node_ips
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".into(),
            address: ip.clone(),
        })
        .collect();
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: s.node_name.clone(),
    });
    let machine_id = read("/etc/machine-id");
    let system_uuid = {
        let u = read("/sys/class/dmi/id/product_uuid");
        if u.is_empty() {
            machine_id.clone()
        } else {
            u
        }
    };
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions),
        addresses: Some(addresses),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: s.server.port() as i32,
            }),
        }),
        node_info: Some(NodeSystemInfo {
            machine_id,
            system_uuid,
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            kernel_version: read("/proc/sys/kernel/osrelease"),
            os_image: os_image(),
            container_runtime_version: RUNTIME_VERSION.into(),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: String::new(),
            operating_system: "linux".into(),
            architecture: arch().into(),
            ..Default::default()
        }),
        images: (!o.images.is_empty()).then(|| o.images.clone()),
        ..Default::default()
    }
}

/// Fill heartbeat and transition times: a condition keeps its transition
/// time while its status stays the same.
pub fn stamp(status: &mut NodeStatus, previous: Option<&NodeStatus>, now: Time) {
    let prev = previous.and_then(|p| p.conditions.as_ref());
    if let Some(conds) = status.conditions.as_mut() {
        for c in conds.iter_mut() {
            c.last_heartbeat_time = Some(now.clone());
            let before = prev.and_then(|p| p.iter().find(|x| x.type_ == c.type_));
            c.last_transition_time = match before {
                Some(b) if b.status == c.status => {
                    b.last_transition_time.clone().or(Some(now.clone()))
                }
                _ => Some(now.clone()),
            };
        }
    }
}

/// Whether two statuses differ in anything but heartbeat times.
fn differs(a: &NodeStatus, b: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        if let Some(c) = s.conditions.as_mut() {
            for c in c.iter_mut() {
                c.last_heartbeat_time = None;
                c.last_transition_time = None;
            }
            c.sort_by(|x, y| x.type_.cmp(&y.type_));
        }
        s
    };
    strip(a) != strip(b)
}

/// Register the node (or adopt an existing registration) and return it.
pub async fn register(client: &kube::Client, s: &Settings) -> Result<Node, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let want = node_object(s);
    loop {
        match api.create(&PostParams::default(), &want).await {
            Ok(n) => {
                tracing::info!(node = %s.node_name, "registered the node");
                return Ok(n);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // already registered (a restart): keep it, refresh our labels
                let patch = serde_json::json!({
                    "metadata": { "labels": want.metadata.labels },
                });
                return api
                    .patch(&s.node_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
            Err(e) => {
                tracing::warn!(node = %s.node_name, error = %e, "registering the node; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// The node's dynamic inputs from the rest of the kubelet.
pub struct NodeInputs {
    /// Some(problem) while the pod network is not ready
    pub network: watch::Receiver<Option<String>>,
    pub images: Arc<dyn Fn() -> Vec<ContainerImage> + Send + Sync>,
}

/// Post the node's status every nodeStatusUpdateFrequency when it changed,
/// and at least every nodeStatusReportFrequency. Also publishes the node's
/// podCIDR as the controller-manager assigns it.
pub async fn run_status(
    client: kube::Client,
    s: Settings,
    mut inputs: NodeInputs,
    pod_cidr: watch::Sender<Option<String>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Node> = Api::all(client.clone());
    let mut last: Option<(NodeStatus, Instant)> = None;
    loop {
        if let Ok(node) = api.get(&s.node_name).await {
            let cidr = node.spec.as_ref().and_then(|sp| sp.pod_cidr.clone());
            if cidr.is_some() && *pod_cidr.borrow() != cidr {
                pod_cidr.send_replace(cidr);
            }
            let observed = observe(&s, inputs.network.borrow().clone(), (inputs.images)());
            let mut status = node_status(&s, &observed);
            let current = node.status.clone();
            let stale = last
                .as_ref()
                .is_none_or(|(_, at)| at.elapsed() >= s.node_status_report_frequency);
            let changed = current.as_ref().is_none_or(|c| differs(c, &status));
            if changed || stale {
                stamp(
                    &mut status,
                    current.as_ref(),
                    Time(k8s_openapi::jiff::Timestamp::now()),
                );
                let patch = serde_json::json!({ "status": status });
                match api
                    .patch_status(&s.node_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => last = Some((status, Instant::now())),
                    Err(e) => tracing::warn!(error = %e, "updating the node's status"),
                }
            }
        } else {
            tracing::warn!(node = %s.node_name, "reading the node; it will be registered again");
            let _ = register(&client, &s).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(s.node_status_update_frequency) => {}
            _ = inputs.network.changed() => {}
            _ = common::stopped(&mut shutdown) => return,
        }
    }
}

/// Renew the node's Lease in kube-node-lease every 10 s (a quarter of
/// nodeLeaseDurationSeconds, as upstream).
pub async fn run_lease(
    client: kube::Client,
    s: Settings,
    node_uid: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let every = Duration::from_secs((s.node_lease_duration_seconds as u64 / 4).max(1));
    loop {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(s.node_name.clone()),
                namespace: Some("kube-node-lease".into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: s.node_name.clone(),
                    uid: node_uid.clone(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(s.node_name.clone()),
                lease_duration_seconds: Some(s.node_lease_duration_seconds),
                renew_time: Some(now.clone()),
                ..Default::default()
            }),
        };
        let renewed = match api.get_opt(&s.node_name).await {
            Ok(Some(mut existing)) => {
                let spec = existing.spec.get_or_insert_with(Default::default);
                spec.holder_identity = Some(s.node_name.clone());
                spec.lease_duration_seconds = Some(s.node_lease_duration_seconds);
                spec.renew_time = Some(now);
                api.replace(&s.node_name, &PostParams::default(), &existing)
                    .await
                    .map(|_| ())
            }
            Ok(None) => api.create(&PostParams::default(), &lease).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = renewed {
            tracing::warn!(error = %e, "renewing the node lease");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = common::stopped(&mut shutdown) => return,
        }
    }
}
