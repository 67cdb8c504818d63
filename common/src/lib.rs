//! What every component but the apiserver shares: API clients from a
//! kubeconfig, shared informers, a work queue, leader election on Leases, an
//! event recorder, the health and metrics server (plain, and HTTPS with
//! delegated authentication and authorization), logging and signals.

pub mod events;
pub mod informers;
pub mod leaderelection;
pub mod secure;
pub mod selectors;
pub mod server;
pub mod workqueue;
pub mod write;

use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

/// A client from `--kubeconfig` (or, without one, the in-cluster config or
/// ~/.kube/config), sending `user_agent` as upstream components do.
pub async fn client(kubeconfig: Option<&Path>, user_agent: &str) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(
        config(kubeconfig, user_agent).await?,
    )?)
}

/// The client configuration `client` builds on (server, CA, credentials, user agent).
pub async fn config(kubeconfig: Option<&Path>, user_agent: &str) -> anyhow::Result<kube::Config> {
    let mut cfg = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => kube::Config::infer().await?,
    };
    if let Ok(v) = http::HeaderValue::from_str(user_agent) {
        cfg.headers.push((http::header::USER_AGENT, v));
    }
    Ok(cfg)
}

/// Logging through `tracing`, at upstream's `-v` verbosity (RUST_LOG overrides).
pub fn init_logging(verbosity: u8) {
    let level = match verbosity {
        0 => "warn",
        1..=2 => "info",
        3..=5 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A channel that turns true on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("received SIGTERM"),
                    _ = int.recv() => tracing::info!("received SIGINT"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        let _ = tx.send(true);
    });
    rx
}

/// Resolves once a shutdown channel says stop (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// A Go duration string ("15s", "1h0m0s", "1.5h", "300ms"), as upstream flags take.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("{s:?} is not a duration");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        total += n * match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1h0m0s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
    }
}
