//! The kubelet's settings: upstream's flags, and `--config` with a
//! KubeletConfiguration (kubelet.config.k8s.io/v1beta1) file. Flags given on
//! the command line win over the file, the file over the defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;

#[derive(Parser, Debug, Default)]
#[command(name = "kubelet", about = "Runs the pods bound to this node")]
pub struct Flags {
    /// Path to a kubeconfig file with the apiserver's address and credentials.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// A KubeletConfiguration (kubelet.config.k8s.io/v1beta1) file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's name, instead of the machine's hostname.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// The node's IP address(es), comma separated; default: the address of the default route's interface.
    #[arg(long)]
    pub node_ip: Option<String>,
    /// Where the kubelet keeps its files (pods, containers, images).
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub root_dir: PathBuf,
    /// A directory of static pod manifests.
    #[arg(long)]
    pub pod_manifest_path: Option<PathBuf>,
    /// DNS server IPs for pods, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Option<Vec<String>>,
    /// The cluster's DNS domain (e.g. cluster.local).
    #[arg(long)]
    pub cluster_domain: Option<String>,
    /// How many pods this node runs at most (default 110).
    #[arg(long)]
    pub max_pods: Option<i64>,
    /// The CIDR of this node's pods, when the controller-manager does not allocate one.
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// The cgroup under which the kubepods hierarchy is made (default "/").
    #[arg(long)]
    pub cgroup_root: Option<String>,
    /// Labels to add when registering the node, k=v comma separated.
    #[arg(long, value_delimiter = ',')]
    pub node_labels: Option<Vec<String>>,
    /// Taints to register the node with, key=value:Effect comma separated.
    #[arg(long, value_delimiter = ',')]
    pub register_with_taints: Option<Vec<String>>,
    /// The kubelet's HTTPS port (default 10250).
    #[arg(long)]
    pub port: Option<u16>,
    /// The address the HTTPS server listens on (default 0.0.0.0).
    #[arg(long)]
    pub address: Option<IpAddr>,
    /// The port of the plain-HTTP /healthz (default 10248; 0 disables it).
    #[arg(long)]
    pub healthz_port: Option<u16>,
    /// The address of /healthz (default 127.0.0.1).
    #[arg(long)]
    pub healthz_bind_address: Option<IpAddr>,
    /// Rotate a container's log at this size (default 10Mi).
    #[arg(long)]
    pub container_log_max_size: Option<String>,
    /// Keep at most this many log files per container (default 5).
    #[arg(long)]
    pub container_log_max_files: Option<usize>,
    /// Where the CNI plugins are (default /usr/lib/cni, Debian's containernetworking-plugins).
    #[arg(long)]
    pub cni_bin_dir: Option<PathBuf>,
    /// The HTTPS server's certificate (with --tls-private-key-file); without
    /// them a self-signed one is made in --cert-dir.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// Where the self-signed serving certificate and the bootstrapped client
    /// certificate are kept (default <root-dir>/pki, i.e. /var/lib/kubelet/pki).
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// A kubeconfig (e.g. with a bootstrap token) used to request a client
    /// certificate when the --kubeconfig file is missing or its certificate
    /// has expired; --kubeconfig is then written.
    #[arg(long)]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Renew the client certificate as it nears its end (accepted; an expired
    /// certificate is bootstrapped again at start).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub rotate_certificates: Option<bool>,
    /// Client certificates signed by this CA authenticate requests to the HTTPS server.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// AlwaysAllow, or Webhook: ask the apiserver (SubjectAccessReview) who may use the HTTPS API.
    #[arg(long)]
    pub authorization_mode: Option<String>,
    /// Serve requests without a client certificate as system:anonymous (default true, as upstream's flag).
    #[arg(long)]
    pub anonymous_auth: Option<bool>,
    /// Registries (host:port) pulled from over plain HTTP, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub insecure_registries: Option<Vec<String>>,
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    pub verbosity: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub kubeconfig: Option<PathBuf>,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub rotate_certificates: bool,
    pub node_name: String,
    pub node_ips: Vec<String>,
    pub root_dir: PathBuf,
    pub pod_manifest_path: Option<PathBuf>,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub max_pods: i64,
    pub pod_cidr: Option<String>,
    pub cgroup_root: String,
    pub node_labels: Vec<(String, String)>,
    pub taints: Vec<k8s_openapi::api::core::v1::Taint>,
    pub server: SocketAddr,
    pub healthz: Option<SocketAddr>,
    pub log_max_size: u64,
    pub log_max_files: usize,
    pub cni_bin_dir: PathBuf,
    pub insecure_registries: Vec<String>,
    pub node_status_update_frequency: Duration,
    pub node_status_report_frequency: Duration,
    pub node_lease_duration_seconds: i32,
    pub log_dir: PathBuf,
    pub tls: crate::server::TlsSettings,
}

/// Bytes in a Kubernetes quantity like "10Mi" or "500k".
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match unit {
        "" => 1,
        "k" | "K" => 1000,
        "M" => 1000_000,
        "G" => 1000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(format!("invalid size {s:?}")),
    };
    Ok(n * mult)
}

fn str_of(file: &Value, key: &str) -> Option<String> {
    file.get(key).and_then(|v| v.as_str()).map(String::from)
}

fn dur_of(file: &Value, key: &str) -> Result<Option<Duration>, String> {
    match file.get(key).and_then(|v| v.as_str()) {
        Some(s) => common::parse_duration(s).map(Some),
        None => Ok(None),
    }
}

fn parse_taint(s: &str) -> Result<k8s_openapi::api::core::v1::Taint, String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("invalid taint {s:?}: want key=value:Effect"))?;
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!("invalid taint effect {effect:?}"));
    }
    Ok(k8s_openapi::api::core::v1::Taint {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
        time_added: None,
    })
}

/// The machine's hostname, lower-cased as a node name must be.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

/// The address of the interface holding the default route, else the first
/// global address.
fn default_ip() -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "route", "get", "1.1.1.1"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    while let Some(w) = it.next() {
        if w == "src" {
            return it.next().map(String::from);
        }
    }
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        while let Some(w) = it.next() {
            if w == "inet" {
                return it
                    .next()
                    .map(|a| a.split('/').next().unwrap_or(a).to_string());
            }
        }
        None
    })
}

pub fn settings(f: &Flags, file: Option<&str>) -> Result<Settings, String> {
    let file: Value = match file {
        Some(text) => {
            let v: Value =
                serde_yaml::from_str(text).map_err(|e| format!("the --config file: {e}"))?;
            let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            if kind != "KubeletConfiguration" {
                return Err(format!(
                    "the --config file has kind {kind:?}, want KubeletConfiguration"
                ));
            }
            v
        }
        None => Value::Null,
    };
    let node_name = f
        .hostname_override
        .clone()
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_else(hostname);
    let node_ips: Vec<String> = match &f.node_ip {
        Some(s) => s.split(',').map(|x| x.trim().to_string()).collect(),
        None => default_ip().into_iter().collect(),
    };
    for ip in &node_ips {
        ip.parse::<IpAddr>()
            .map_err(|_| format!("--node-ip: invalid address {ip:?}"))?;
    }
    let cluster_dns = match &f.cluster_dns {
        Some(v) => v.clone(),
        None => file
            .get("clusterDNS")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let port = f
        .port
        .or_else(|| file.get("port").and_then(|v| v.as_u64()).map(|p| p as u16))
        .unwrap_or(10250);
    let address = f
        .address
        .or_else(|| str_of(&file, "address").and_then(|a| a.parse().ok()))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let hport = f
        .healthz_port
        .or_else(|| {
            file.get("healthzPort")
                .and_then(|v| v.as_u64())
                .map(|p| p as u16)
        })
        .unwrap_or(10248);
    let haddr = f
        .healthz_bind_address
        .or_else(|| str_of(&file, "healthzBindAddress").and_then(|a| a.parse().ok()))
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let log_max_size = match f
        .container_log_max_size
        .clone()
        .or_else(|| str_of(&file, "containerLogMaxSize"))
    {
        Some(s) => parse_size(&s)?,
        None => 10 << 20,
    };
    let mut node_labels = Vec::new();
    for l in f.node_labels.clone().unwrap_or_default() {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("--node-labels: invalid label {l:?}"))?;
        node_labels.push((k.to_string(), v.to_string()));
    }
    let mut taints = Vec::new();
    for t in f.register_with_taints.clone().unwrap_or_default() {
        taints.push(parse_taint(&t)?);
    }
    let x509_ca = file
        .pointer("/authentication/x509/clientCAFile")
        .and_then(|v| v.as_str())
        .map(PathBuf::from);
    let anonymous = f
        .anonymous_auth
        .or_else(|| {
            file.pointer("/authentication/anonymous/enabled")
                .and_then(|v| v.as_bool())
        })
        .unwrap_or(true);
    let authz = f
        .authorization_mode
        .clone()
        .or_else(|| {
            file.pointer("/authorization/mode")
                .and_then(|v| v.as_str())
                .map(String::from)
        })
        .unwrap_or_else(|| "AlwaysAllow".into());
    let webhook = match authz.as_str() {
        "AlwaysAllow" => false,
        "Webhook" => true,
        other => {
            return Err(format!(
                "--authorization-mode: {other:?} is not one of AlwaysAllow, Webhook"
            ))
        }
    };
    let tls = crate::server::TlsSettings {
        webhook,
        cert_file: f
            .tls_cert_file
            .clone()
            .or_else(|| str_of(&file, "tlsCertFile").map(PathBuf::from)),
        key_file: f
            .tls_private_key_file
            .clone()
            .or_else(|| str_of(&file, "tlsPrivateKeyFile").map(PathBuf::from)),
        cert_dir: f.cert_dir.clone().unwrap_or_else(|| f.root_dir.join("pki")),
        client_ca_file: f.client_ca_file.clone().or(x509_ca),
        anonymous,
    };
    Ok(Settings {
        tls,
        kubeconfig: f.kubeconfig.clone(),
        bootstrap_kubeconfig: f.bootstrap_kubeconfig.clone(),
        rotate_certificates: f
            .rotate_certificates
            .or_else(|| file.get("rotateCertificates").and_then(|v| v.as_bool()))
            .unwrap_or(false),
        node_name,
        node_ips,
        root_dir: f.root_dir.clone(),
        pod_manifest_path: f
            .pod_manifest_path
            .clone()
            .or_else(|| str_of(&file, "staticPodPath").map(PathBuf::from)),
        cluster_dns,
        cluster_domain: f
            .cluster_domain
            .clone()
            .or_else(|| str_of(&file, "clusterDomain"))
            .unwrap_or_else(|| "cluster.local".into()),
        max_pods: f
            .max_pods
            .or_else(|| file.get("maxPods").and_then(|v| v.as_i64()))
            .unwrap_or(110),
        pod_cidr: f.pod_cidr.clone().or_else(|| str_of(&file, "podCIDR")),
        cgroup_root: f
            .cgroup_root
            .clone()
            .or_else(|| str_of(&file, "cgroupRoot"))
            .unwrap_or_else(|| "/".into()),
        node_labels,
        taints,
        server: SocketAddr::new(address, port),
        healthz: (hport != 0).then(|| SocketAddr::new(haddr, hport)),
        log_max_size,
        log_max_files: f
            .container_log_max_files
            .or_else(|| {
                file.get("containerLogMaxFiles")
                    .and_then(|v| v.as_u64())
                    .map(|n| n as usize)
            })
            .unwrap_or(5)
            .max(2),
        cni_bin_dir: f
            .cni_bin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/usr/lib/cni")),
        insecure_registries: f.insecure_registries.clone().unwrap_or_default(),
        node_status_update_frequency: dur_of(&file, "nodeStatusUpdateFrequency")?
            .unwrap_or(Duration::from_secs(10)),
        node_status_report_frequency: dur_of(&file, "nodeStatusReportFrequency")?
            .unwrap_or(Duration::from_secs(300)),
        node_lease_duration_seconds: file
            .get("nodeLeaseDurationSeconds")
            .and_then(|v| v.as_i64())
            .map(|n| n as i32)
            .unwrap_or(40),
        log_dir: str_of(&file, "podLogsDir")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/log/pods")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let f = Flags::parse_from([
            "kubelet",
            "--hostname-override=Node-1",
            "--node-ip=10.0.0.5",
            "--max-pods=20",
            "--register-with-taints=dedicated=infra:NoSchedule",
        ]);
        let file = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 50\nclusterDNS: [10.96.0.10]\nclusterDomain: corp.local\ncontainerLogMaxSize: 1Mi\nnodeStatusUpdateFrequency: 4s\n";
        let s = settings(&f, Some(file)).unwrap();
        assert_eq!(s.node_name, "node-1");
        assert_eq!(s.max_pods, 20);
        assert_eq!(s.cluster_dns, vec!["10.96.0.10"]);
        assert_eq!(s.cluster_domain, "corp.local");
        assert_eq!(s.log_max_size, 1 << 20);
        assert_eq!(s.node_status_update_frequency, Duration::from_secs(4));
        assert_eq!(s.taints[0].effect, "NoSchedule");
        assert_eq!(s.taints[0].value.as_deref(), Some("infra"));
        assert_eq!(s.server.port(), 10250);
    }

    #[test]
    fn bad_input_is_an_error() {
        let f = Flags::parse_from(["kubelet", "--node-ip=nope"]);
        assert!(settings(&f, None).is_err());
        let f = Flags::parse_from(["kubelet", "--node-ip=10.0.0.1"]);
        assert!(settings(&f, Some("kind: KubeProxyConfiguration\n")).is_err());
        assert!(parse_size("10Qi").is_err());
        assert_eq!(parse_size("500k"), Ok(500_000));
    }
}
