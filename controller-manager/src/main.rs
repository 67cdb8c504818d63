//! kube-controller-manager: flags, logging, health and metrics, leader
//! election, then the selected controllers over one shared informer cache.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use common::leaderelection::{LeaderElectionFlags, LeaderElector, Outcome};
use controllers::{selected, Ctx, Settings};

#[derive(Parser, Debug)]
#[command(
    name = "kube-controller-manager",
    about = "Runs the control loops that make objects come alive"
)]
struct Flags {
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Controllers to run: '*' for all, 'foo' to add one, '-foo' to leave one out.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    #[arg(long, default_value_t = 5)]
    concurrent_endpoint_syncs: usize,
    #[arg(long, default_value_t = 5)]
    concurrent_service_endpoint_syncs: usize,
    #[arg(long, default_value_t = 5)]
    concurrent_serviceaccount_syncs: usize,
    #[arg(long, default_value_t = 5)]
    concurrent_replicaset_syncs: usize,
    #[arg(long, default_value_t = 5)]
    concurrent_deployment_syncs: usize,
    #[arg(long, default_value_t = 20)]
    concurrent_gc_syncs: usize,
    #[arg(long, default_value_t = 5)]
    concurrent_job_syncs: usize,
    #[arg(long, default_value_t = 2)]
    concurrent_daemonset_syncs: usize,
    #[arg(long, default_value_t = 5)]
    concurrent_cron_job_syncs: usize,
    #[arg(long, default_value_t = 5)]
    concurrent_statefulset_syncs: usize,
    #[arg(long, default_value_t = 10)]
    concurrent_namespace_syncs: usize,
    /// ResourceQuotas synced at once (per queue).
    #[arg(long, default_value_t = 5)]
    concurrent_resource_quota_syncs: usize,
    /// How often every ResourceQuota's usage is recomputed in full.
    #[arg(long, default_value = "5m0s", value_parser = common::parse_duration)]
    resource_quota_sync_period: std::time::Duration,
    /// How often every PersistentVolume and PersistentVolumeClaim is synced again.
    #[arg(long, default_value = "15s", value_parser = common::parse_duration)]
    pvclaimbinder_sync_period: std::time::Duration,
    /// The cluster's CA bundle, published in every namespace as the kube-root-ca.crt ConfigMap.
    #[arg(long)]
    root_ca_file: Option<PathBuf>,
    /// PEM CA certificate issuing the certificates of every built-in signer
    /// (no --cluster-signing-<signer>-* flag may be given with it).
    #[arg(long)]
    cluster_signing_cert_file: Option<PathBuf>,
    /// PEM key of --cluster-signing-cert-file.
    #[arg(long)]
    cluster_signing_key_file: Option<PathBuf>,
    /// CA certificate for kubernetes.io/kubelet-serving.
    #[arg(long)]
    cluster_signing_kubelet_serving_cert_file: Option<PathBuf>,
    #[arg(long)]
    cluster_signing_kubelet_serving_key_file: Option<PathBuf>,
    /// CA certificate for kubernetes.io/kube-apiserver-client-kubelet.
    #[arg(long)]
    cluster_signing_kubelet_client_cert_file: Option<PathBuf>,
    #[arg(long)]
    cluster_signing_kubelet_client_key_file: Option<PathBuf>,
    /// CA certificate for kubernetes.io/kube-apiserver-client.
    #[arg(long)]
    cluster_signing_kube_apiserver_client_cert_file: Option<PathBuf>,
    #[arg(long)]
    cluster_signing_kube_apiserver_client_key_file: Option<PathBuf>,
    /// CA certificate for kubernetes.io/legacy-unknown.
    #[arg(long)]
    cluster_signing_legacy_unknown_cert_file: Option<PathBuf>,
    #[arg(long)]
    cluster_signing_legacy_unknown_key_file: Option<PathBuf>,
    /// The longest certificate the signers issue (a CSR's expirationSeconds may ask for less).
    #[arg(long, default_value = "8760h0m0s", value_parser = common::parse_duration)]
    cluster_signing_duration: std::time::Duration,
    /// Run each controller as its own service account in kube-system.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    use_service_account_credentials: bool,
    /// Give every node a pod CIDR from --cluster-cidr.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    allocate_node_cidrs: bool,
    /// The pods' CIDR (IPv4), which node pod CIDRs are carved from.
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// The prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Terminated pods kept before the oldest are deleted (0 turns it off).
    #[arg(long, default_value_t = 12500)]
    terminated_pod_gc_threshold: usize,
    /// How often node health is checked.
    #[arg(long, default_value = "5s", value_parser = common::parse_duration)]
    node_monitor_period: std::time::Duration,
    /// How long a node may stay silent (no Lease renewal, no status) before it is marked Unknown.
    #[arg(long, default_value = "40s", value_parser = common::parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// Nodes per second tainted for eviction in a healthy zone.
    #[arg(long, default_value_t = 0.1)]
    node_eviction_rate: f64,
    /// Nodes per second tainted in a partially unhealthy large zone.
    #[arg(long, default_value_t = 0.01)]
    secondary_node_eviction_rate: f64,
    /// The fraction of unhealthy nodes that makes a zone partially disrupted.
    #[arg(long, default_value_t = 0.55)]
    unhealthy_zone_threshold: f64,
    /// Zones larger than this keep the secondary rate when partially disrupted.
    #[arg(long, default_value_t = 50)]
    large_cluster_size_threshold: usize,
    /// The most endpoints one EndpointSlice holds.
    #[arg(long, default_value_t = 100)]
    max_endpoints_per_slice: usize,
    /// The IP address on which to listen for the --secure-port port.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// The port on which to serve HTTPS with authentication and authorization
    /// (/healthz, /livez, /readyz, /metrics). If 0, don't serve HTTPS at all.
    #[arg(long, default_value_t = 10257)]
    secure_port: u16,
    #[command(flatten)]
    serving: common::secure::SecureServingFlags,
    #[command(flatten)]
    leader: LeaderElectionFlags,
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    verbosity: u8,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    common::init_logging(flags.verbosity);
    let chosen = selected(&flags.controllers).map_err(anyhow::Error::msg)?;
    if !(1..=1000).contains(&flags.max_endpoints_per_slice) {
        anyhow::bail!("--max-endpoints-per-slice must be between 1 and 1000");
    }
    let node_cidrs = match (flags.allocate_node_cidrs, flags.cluster_cidr.as_deref()) {
        (false, _) => None,
        (true, None) => anyhow::bail!("--allocate-node-cidrs needs --cluster-cidr"),
        (true, Some(c)) => Some(
            controllers::nodeipam::Ranges::new(c, flags.node_cidr_mask_size)
                .map_err(anyhow::Error::msg)?,
        ),
    };
    let root_ca = match &flags.root_ca_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("--root-ca-file {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let signing = controllers::csrsigning::SigningFlags {
        cert_file: flags.cluster_signing_cert_file.clone(),
        key_file: flags.cluster_signing_key_file.clone(),
        kubelet_serving: (
            flags.cluster_signing_kubelet_serving_cert_file.clone(),
            flags.cluster_signing_kubelet_serving_key_file.clone(),
        ),
        kubelet_client: (
            flags.cluster_signing_kubelet_client_cert_file.clone(),
            flags.cluster_signing_kubelet_client_key_file.clone(),
        ),
        kube_apiserver_client: (
            flags
                .cluster_signing_kube_apiserver_client_cert_file
                .clone(),
            flags.cluster_signing_kube_apiserver_client_key_file.clone(),
        ),
        legacy_unknown: (
            flags.cluster_signing_legacy_unknown_cert_file.clone(),
            flags.cluster_signing_legacy_unknown_key_file.clone(),
        ),
    };
    let csr_signers = signing.signers().map_err(anyhow::Error::msg)?;
    if chosen
        .iter()
        .any(|e| e.name == "certificatesigningrequest-signing-controller")
    {
        // a CA that cannot be read stops the start, as upstream
        for s in &csr_signers {
            controllers::csr::Ca::load(&s.cert_file, &s.key_file)
                .map_err(|e| anyhow::anyhow!("the {} signer: {e}", s.signer))?;
        }
    }
    let settings = Arc::new(Settings {
        csr_signers,
        cluster_signing_duration: flags.cluster_signing_duration,
        root_ca,
        node_cidrs,
        terminated_pod_gc_threshold: flags.terminated_pod_gc_threshold,
        concurrent_job_syncs: flags.concurrent_job_syncs,
        concurrent_daemonset_syncs: flags.concurrent_daemonset_syncs,
        concurrent_cron_job_syncs: flags.concurrent_cron_job_syncs,
        concurrent_statefulset_syncs: flags.concurrent_statefulset_syncs,
        pvclaimbinder_sync_period: flags.pvclaimbinder_sync_period,
        concurrent_endpoint_syncs: flags.concurrent_endpoint_syncs,
        concurrent_service_endpoint_syncs: flags.concurrent_service_endpoint_syncs,
        concurrent_serviceaccount_syncs: flags.concurrent_serviceaccount_syncs,
        concurrent_replicaset_syncs: flags.concurrent_replicaset_syncs,
        concurrent_deployment_syncs: flags.concurrent_deployment_syncs,
        concurrent_gc_syncs: flags.concurrent_gc_syncs,
        concurrent_namespace_syncs: flags.concurrent_namespace_syncs,
        concurrent_resource_quota_syncs: flags.concurrent_resource_quota_syncs,
        resource_quota_sync_period: flags.resource_quota_sync_period,
        max_endpoints_per_slice: flags.max_endpoints_per_slice,
        node_monitor_period: flags.node_monitor_period,
        node_monitor_grace_period: flags.node_monitor_grace_period,
        node_eviction_rate: flags.node_eviction_rate,
        secondary_node_eviction_rate: flags.secondary_node_eviction_rate,
        unhealthy_zone_threshold: flags.unhealthy_zone_threshold,
        large_cluster_size_threshold: flags.large_cluster_size_threshold,
    });
    let base = common::config(
        flags.kubeconfig.as_deref(),
        "kube-controller-manager/v1.33.0",
    )
    .await?;
    let client = kube::Client::try_from(base.clone())?;
    let use_sa = flags.use_service_account_credentials;
    let shutdown = common::shutdown_on_signals();
    let registry = prometheus::Registry::new();
    let health = common::server::Health::new();
    common::secure::serve(
        &flags.serving,
        "kube-controller-manager",
        SocketAddr::new(flags.bind_address, flags.secure_port),
        client.clone(),
        health,
        registry,
        shutdown.clone(),
    )
    .await?;
    // each term of leadership starts every controller afresh, with its own informers
    let work = move |stop: tokio::sync::watch::Receiver<bool>| {
        let (client, base, chosen, settings) = (
            client.clone(),
            base.clone(),
            chosen.clone(),
            settings.clone(),
        );
        async move {
            let informers = common::informers::Informers::new(client.clone(), None, stop.clone());
            let credentials = if use_sa {
                let names: Vec<&str> = chosen.iter().map(|e| e.name).collect();
                loop {
                    match controllers::sacredentials::Credentials::new(&client, &base, &names).await
                    {
                        Ok(c) => break Some(std::sync::Arc::new(c)),
                        Err(e) => {
                            tracing::warn!(error = %e, "service-account credentials for the controllers; retrying");
                            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                        }
                    }
                }
            } else {
                None
            };
            if let Some(c) = &credentials {
                let (c, root, stop) = (c.clone(), client.clone(), stop.clone());
                tokio::spawn(async move { c.renew(root, stop).await });
            }
            let ctx = Ctx {
                client,
                informers,
                settings,
                stop,
            };
            let mut running = Vec::new();
            for e in chosen {
                tracing::info!(controller = e.name, "starting");
                let mut own = ctx.clone();
                if let Some(c) = credentials.as_ref().and_then(|c| c.client_for(e.name)) {
                    own.client = c;
                }
                running.push(tokio::spawn((e.start)(own)));
            }
            for r in running {
                let _ = r.await;
            }
        }
    };
    if !flags.leader.leader_elect {
        work(shutdown).await;
        return Ok(());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let identity = format!("{}_{}", host.trim(), std::process::id());
    let el_client = common::client(
        flags.kubeconfig.as_deref(),
        "kube-controller-manager/leader-election",
    )
    .await?;
    let el = LeaderElector::new(
        el_client,
        flags.leader.config("kube-controller-manager", &identity)?,
    );
    if el.run_terms(shutdown, work).await == Outcome::Lost {
        anyhow::bail!("leader election lost, and the controllers did not stop in time");
    }
    Ok(())
}
