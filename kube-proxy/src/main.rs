//! kube-proxy: flags and config file into settings, logging, informers, the
//! sync loop, /healthz on 10256 and /metrics on 10249.

use clap::Parser;
use proxy::config::{settings, Flags};
use proxy::proxier::{self, Proxier};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    common::init_logging(flags.verbosity);
    let file = match &flags.config {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let settings = settings(&flags, file.as_deref()).map_err(anyhow::Error::msg)?;
    if flags.cleanup {
        proxier::cleanup().map_err(anyhow::Error::msg)?;
        tracing::info!("removed the kube-proxy tables");
        return Ok(());
    }
    let client = common::client(settings.kubeconfig.as_deref(), "kube-proxy/v1.33.0").await?;
    let shutdown = common::shutdown_on_signals();
    let registry = prometheus::Registry::new();
    let proxier = Proxier::new(settings.clone(), &registry);
    let health = common::server::Health::new();
    let p = proxier.clone();
    health.add("proxier-sync", move || p.healthy());
    common::server::serve(
        settings.healthz,
        health.clone(),
        registry.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("serving /healthz on {}: {e}", settings.healthz))?;
    if settings.metrics != settings.healthz {
        common::server::serve(settings.metrics, health, registry, shutdown.clone())
            .await
            .map_err(|e| anyhow::anyhow!("serving /metrics on {}: {e}", settings.metrics))?;
    }
    let informers = common::informers::Informers::new(
        client,
        Some(settings.config_sync_period),
        shutdown.clone(),
    );
    tracing::info!(node = %settings.hostname, "kube-proxy starting (nftables mode)");
    proxier::run(proxier, informers, shutdown).await;
    tracing::info!("kube-proxy stopped");
    Ok(())
}
