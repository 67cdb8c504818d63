//! kube-scheduler: flags into a config, logging, leader election, run.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use common::leaderelection::{LeaderElectionFlags, LeaderElector, Outcome};

#[derive(Parser, Debug)]
#[command(name = "kube-scheduler", about = "Assigns pending pods to nodes")]
struct Flags {
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// A KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1) file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The IP address on which to listen for the --secure-port port.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// The port on which to serve HTTPS with authentication and authorization
    /// (/healthz, /livez, /readyz, /metrics). If 0, don't serve HTTPS at all.
    #[arg(long, default_value_t = 10259)]
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
    let cfg = match &flags.config {
        Some(p) => {
            scheduler::config::parse(&std::fs::read_to_string(p)?).map_err(anyhow::Error::msg)?
        }
        None => Default::default(),
    };
    let client = common::client(flags.kubeconfig.as_deref(), "kube-scheduler/v1.33.0").await?;
    let shutdown = common::shutdown_on_signals();
    let registry = prometheus::Registry::new();
    let health = common::server::Health::new();
    let metrics = scheduler::scheduler::Metrics::new(&registry);
    let pool = scheduler::scheduler::filter_pool(cfg.parallelism);
    // a scheduler with an empty queue and cache, for each term of leadership
    let fresh = {
        let client = client.clone();
        move || {
            let mut profile =
                scheduler::plugins::profile(&cfg.profile, cfg.percentage_of_nodes_to_score);
            profile.pool = pool.clone();
            scheduler::scheduler::Scheduler::with_metrics(client.clone(), profile, metrics.clone())
        }
    };
    let informers = common::informers::Informers::new(client.clone(), None, shutdown.clone());
    // ready once the pod and node caches have synced, as upstream's informer-sync check
    let (pods, nodes) = (
        informers.get::<k8s_openapi::api::core::v1::Pod>(),
        informers.get::<k8s_openapi::api::core::v1::Node>(),
    );
    health.add("informer-sync", move || {
        pods.has_synced() && nodes.has_synced()
    });
    common::secure::serve(
        &flags.serving,
        "kube-scheduler",
        SocketAddr::new(flags.bind_address, flags.secure_port),
        client.clone(),
        health,
        registry,
        shutdown.clone(),
    )
    .await?;
    if !flags.leader.leader_elect {
        scheduler::run(fresh(), informers, shutdown).await;
        return Ok(());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let identity = format!("{}_{}", host.trim(), std::process::id());
    let el = LeaderElector::new(client, flags.leader.config("kube-scheduler", &identity)?);
    // the informers outlive a term, so a candidate's caches stay warm
    let outcome = el
        .run_terms(shutdown, move |stop| {
            scheduler::run(fresh(), informers.clone(), stop)
        })
        .await;
    if outcome == Outcome::Lost {
        anyhow::bail!("leader election lost, and the scheduler did not stop in time");
    }
    Ok(())
}
