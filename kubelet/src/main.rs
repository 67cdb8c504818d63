//! kubelet: flags and config file into settings, logging, the node agent,
//! /healthz on 10248. Run as `kubelet --runtime-shim ...` the binary is a
//! container's shim instead (see `kubelet::shim`).

use clap::Parser;
use kubelet::config::{settings, Flags};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(kubelet::sandbox::PAUSE_FLAG) {
        kubelet::sandbox::pause();
    }
    if args.get(1).map(String::as_str) == Some(kubelet::shim::SHIM_FLAG) {
        return std::process::ExitCode::from(kubelet::shim::main(&args[1..]) as u8);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubelet: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubelet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
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
    if let Some(bootstrap) = &settings.bootstrap_kubeconfig {
        let kubeconfig = settings
            .kubeconfig
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("--bootstrap-kubeconfig needs --kubeconfig"))?;
        kubelet::bootstrap::load_client_cert(
            kubeconfig,
            bootstrap,
            &settings.tls.cert_dir,
            &settings.node_name,
        )
        .await?;
    }
    let client = common::client(settings.kubeconfig.as_deref(), "kubelet/v1.33.0").await?;
    let shutdown = common::shutdown_on_signals();
    let registry = prometheus::Registry::new();
    let health = common::server::Health::new();
    if let Some(addr) = settings.healthz {
        common::server::serve(addr, health, registry, shutdown.clone())
            .await
            .map_err(|e| anyhow::anyhow!("serving /healthz on {addr}: {e}"))?;
    }
    kubelet::agent::run(client, settings, shutdown).await?;
    tracing::info!("kubelet stopped; containers keep running");
    Ok(())
}
