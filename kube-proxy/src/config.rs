//! kube-proxy's settings: upstream's flags, and `--config` with a
//! KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) file. Flags given
//! on the command line win over the file, the file over the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;

#[derive(Parser, Debug, Default)]
#[command(
    name = "kube-proxy",
    about = "Programs nftables so Services reach their endpoints"
)]
pub struct Flags {
    /// Path to a kubeconfig file with the apiserver's address and credentials.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// A KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's name, instead of the machine's hostname.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// The pods' CIDR(s), comma separated; traffic to a ClusterIP from outside it is masqueraded.
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// Only "nftables" is implemented.
    #[arg(long)]
    pub proxy_mode: Option<String>,
    /// CIDRs (comma separated) of the node addresses NodePorts answer on, or "primary" (the node's InternalIPs).
    #[arg(long, value_delimiter = ',')]
    pub nodeport_addresses: Option<Vec<String>>,
    /// SNAT all traffic sent to Service IPs.
    #[arg(long)]
    pub masquerade_all: Option<bool>,
    /// How often the rules are rewritten in full, repairing any drift (default 30s).
    #[arg(long, value_parser = common::parse_duration)]
    pub sync_period: Option<Duration>,
    /// The shortest time between two syncs; changes meanwhile are batched (default 1s).
    #[arg(long, value_parser = common::parse_duration)]
    pub min_sync_period: Option<Duration>,
    /// How often the informers re-announce every object (default 15m).
    #[arg(long, value_parser = common::parse_duration)]
    pub config_sync_period: Option<Duration>,
    /// ip:port of /healthz (default 0.0.0.0:10256).
    #[arg(long)]
    pub healthz_bind_address: Option<String>,
    /// ip:port of /metrics (default 127.0.0.1:10249).
    #[arg(long)]
    pub metrics_bind_address: Option<String>,
    /// Remove this proxy's nftables tables and exit.
    #[arg(long)]
    pub cleanup: bool,
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    pub verbosity: u8,
}

/// The settings in effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub kubeconfig: Option<PathBuf>,
    pub hostname: String,
    pub cluster_cidrs: Vec<String>,
    /// empty or ["primary"]: the node's InternalIPs
    pub nodeport_addresses: Vec<String>,
    pub masquerade_all: bool,
    pub sync_period: Duration,
    pub min_sync_period: Duration,
    pub config_sync_period: Duration,
    pub healthz: SocketAddr,
    pub metrics: SocketAddr,
}

fn addr(s: &str, default_port: u16, what: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| format!("{what}: {s:?} is not an ip:port"))
}

fn duration(v: &Value, what: &str) -> Result<Option<Duration>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => common::parse_duration(s)
            .map(Some)
            .map_err(|e| format!("{what}: {e}")),
        other => Err(format!("{what}: {other} is not a duration")),
    }
}

/// Combine the defaults, the `--config` file (its text) and the flags.
pub fn settings(flags: &Flags, file: Option<&str>) -> Result<Settings, String> {
    let f: Value = match file {
        Some(text) => serde_yaml::from_str(text)
            .map_err(|e| format!("parsing the kube-proxy configuration: {e}"))?,
        None => Value::Null,
    };
    if file.is_some() {
        match (f["apiVersion"].as_str(), f["kind"].as_str()) {
            (Some("kubeproxy.config.k8s.io/v1alpha1"), Some("KubeProxyConfiguration")) => {}
            (av, k) => {
                return Err(format!(
                    "unsupported configuration {av:?} {k:?}: want kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration"
                ))
            }
        }
    }
    let s = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let mode = flags.proxy_mode.clone().or_else(|| s(&f["mode"]));
    if let Some(m) = mode.as_deref().filter(|m| !m.is_empty()) {
        if m != "nftables" {
            return Err(format!(
                "proxy mode {m:?} is not supported: only \"nftables\" is"
            ));
        }
    }
    let hostname = match flags
        .hostname_override
        .clone()
        .or_else(|| s(&f["hostnameOverride"]))
    {
        Some(h) => h,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_err(|e| format!("reading the hostname: {e}"))?
            .trim()
            .to_string(),
    }
    .to_lowercase();
    let cidrs = flags
        .cluster_cidr
        .clone()
        .or_else(|| s(&f["clusterCIDR"]))
        .unwrap_or_default();
    let cluster_cidrs: Vec<String> = cidrs
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let nodeport_addresses = match &flags.nodeport_addresses {
        Some(v) => v.clone(),
        None => f["nodePortAddresses"]
            .as_array()
            .map(|a| a.iter().filter_map(s).collect())
            .unwrap_or_default(),
    };
    let file_masq = f["nftables"]["masqueradeAll"]
        .as_bool()
        .or(f["iptables"]["masqueradeAll"].as_bool())
        .or(f["linux"]["masqueradeAll"].as_bool());
    let sync_period = match flags.sync_period {
        Some(d) => Some(d),
        None => match duration(&f["syncPeriod"], "syncPeriod")? {
            Some(d) => Some(d),
            None => duration(&f["nftables"]["syncPeriod"], "nftables.syncPeriod")?,
        },
    }
    .unwrap_or(Duration::from_secs(30));
    let min_sync_period = match flags.min_sync_period {
        Some(d) => Some(d),
        None => match duration(&f["minSyncPeriod"], "minSyncPeriod")? {
            Some(d) => Some(d),
            None => duration(&f["nftables"]["minSyncPeriod"], "nftables.minSyncPeriod")?,
        },
    }
    .unwrap_or(Duration::from_secs(1));
    let config_sync_period = match flags.config_sync_period {
        Some(d) => Some(d),
        None => duration(&f["configSyncPeriod"], "configSyncPeriod")?,
    }
    .unwrap_or(Duration::from_secs(15 * 60));
    if sync_period.is_zero() {
        return Err("syncPeriod: Invalid value: must be greater than 0".into());
    }
    let healthz = flags
        .healthz_bind_address
        .clone()
        .or_else(|| s(&f["healthzBindAddress"]))
        .unwrap_or_else(|| "0.0.0.0:10256".into());
    let metrics = flags
        .metrics_bind_address
        .clone()
        .or_else(|| s(&f["metricsBindAddress"]))
        .unwrap_or_else(|| "127.0.0.1:10249".into());
    Ok(Settings {
        kubeconfig: flags
            .kubeconfig
            .clone()
            .or_else(|| s(&f["clientConnection"]["kubeconfig"]).map(PathBuf::from)),
        hostname,
        cluster_cidrs,
        nodeport_addresses,
        masquerade_all: flags.masquerade_all.or(file_masq).unwrap_or(false),
        sync_period,
        min_sync_period,
        config_sync_period,
        healthz: addr(&healthz, 10256, "healthzBindAddress")?,
        metrics: addr(&metrics, 10249, "metricsBindAddress")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut all = vec!["kube-proxy"];
        all.extend_from_slice(args);
        Flags::try_parse_from(all).expect("flags")
    }

    #[test]
    fn defaults_are_upstreams() {
        let s = settings(&flags(&["--hostname-override=Node-1"]), None).expect("settings");
        assert_eq!(s.hostname, "node-1");
        assert_eq!(s.sync_period, Duration::from_secs(30));
        assert_eq!(s.min_sync_period, Duration::from_secs(1));
        assert_eq!(s.healthz.to_string(), "0.0.0.0:10256");
        assert_eq!(s.metrics.to_string(), "127.0.0.1:10249");
        assert!(!s.masquerade_all);
    }

    #[test]
    fn file_then_flags() {
        let file = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\nclusterCIDR: 10.244.0.0/16\nhostnameOverride: n2\nminSyncPeriod: 2s\nnftables: {masqueradeAll: true, syncPeriod: 1m}\nnodePortAddresses: [10.0.0.0/8]\nhealthzBindAddress: 127.0.0.1\nclientConnection: {kubeconfig: /etc/kp.kubeconfig}\n";
        let s = settings(&flags(&["--min-sync-period=5s"]), Some(file)).expect("settings");
        assert_eq!(s.hostname, "n2");
        assert_eq!(s.cluster_cidrs, vec!["10.244.0.0/16"]);
        assert_eq!(s.min_sync_period, Duration::from_secs(5));
        assert_eq!(s.sync_period, Duration::from_secs(60));
        assert!(s.masquerade_all);
        assert_eq!(s.nodeport_addresses, vec!["10.0.0.0/8"]);
        assert_eq!(s.healthz.to_string(), "127.0.0.1:10256");
        assert_eq!(
            s.kubeconfig.as_deref(),
            Some(std::path::Path::new("/etc/kp.kubeconfig"))
        );
    }

    #[test]
    fn bad_settings_are_refused_clearly() {
        let e = settings(
            &flags(&["--proxy-mode=iptables", "--hostname-override=a"]),
            None,
        )
        .expect_err("iptables");
        assert!(e.contains("only \"nftables\""), "{e}");
        let e = settings(
            &flags(&["--hostname-override=a"]),
            Some("apiVersion: v1\nkind: Pod\n"),
        )
        .expect_err("kind");
        assert!(e.contains("KubeProxyConfiguration"), "{e}");
        let e = settings(
            &flags(&["--hostname-override=a", "--healthz-bind-address=nope"]),
            None,
        )
        .expect_err("addr");
        assert!(e.contains("healthzBindAddress"), "{e}");
        assert!(Flags::try_parse_from(["kube-proxy", "--sync-period=soon"]).is_err());
    }
}
