//! kube-apiserver: parse flags into a validated config, set up logging, run.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let flags = apiserver::config::Flags::parse();
    let level = match flags.verbosity {
        0 => "warn",
        1..=2 => "info",
        3..=5 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = flags.into_config()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(apiserver::run(cfg))?;
    Ok(())
}
