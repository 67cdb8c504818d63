//! The sync loop: informers on Services, EndpointSlices and Nodes wake it;
//! syncs are rate-limited as upstream's bounded-frequency runner: up to two
//! in a burst, then one per `--min-sync-period`, changes arriving meanwhile
//! batched into one nft transaction;
//! the first sync, every `--sync-period` and any failure rewrite the whole
//! table (repairing drift, such as someone deleting it), other syncs apply
//! only the diff against what was last applied.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::informers::{Change, Informers};
use common::workqueue::TokenBucket;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};
use tokio::sync::{broadcast, watch};

use crate::config::Settings;
use crate::rules::{self, Family, Incremental};

/// Run `nft -f -` with `script` on stdin; the error carries nft's message.
pub fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether incremental syncs go straight to the kernel over netlink
/// (`IRONKUBE_PROXY_NETLINK=0` sends them through `nft -f` instead).
fn netlink_enabled() -> bool {
    !matches!(
        std::env::var("IRONKUBE_PROXY_NETLINK").as_deref(),
        Ok("0" | "false")
    )
}

/// Apply an incremental script as one netlink batch, without the ruleset
/// dump every `nft` run starts with; a script the encoder does not cover, or
/// a batch the kernel refuses (it then applied none of it), goes through
/// `nft -f` instead.
fn apply_diff(script: &str) -> Result<(), String> {
    match crate::netlink::apply(script) {
        Ok(()) => Ok(()),
        Err(e @ crate::netlink::Error::Unsupported(_)) => {
            tracing::debug!(error = %e, "applying the diff with nft -f");
            nft(script)
        }
        Err(e) => {
            tracing::warn!(error = %e, "netlink batch failed; applying the diff with nft -f");
            nft(script)
        }
    }
}

/// Remove our tables in both families (`--cleanup`, and on request in tests).
pub fn cleanup() -> Result<(), String> {
    for family in [Family::Ipv4, Family::Ipv6] {
        let t = format!("{} {}", family.nft(), rules::TABLE);
        // add first so the delete cannot fail on a missing table
        nft(&format!("add table {t}\ndelete table {t}\n"))?;
    }
    Ok(())
}

/// Forget conntrack entries of UDP flows to endpoints that went away, so
/// clients are re-balanced instead of blackholed (as upstream).
fn flush_conntrack(stale: &[(IpAddr, u16)]) {
    for (ip, port) in stale {
        let out = Command::new("conntrack")
            .args(["-D", "-p", "udp", "--reply-src"])
            .arg(ip.to_string())
            .args(["--reply-port-src", &port.to_string()])
            .output();
        match out {
            // exit 1 with "0 flow entries": nothing to forget
            Ok(_) => tracing::debug!(%ip, port, "flushed UDP conntrack entries"),
            Err(e) => tracing::warn!(%ip, port, error = %e, "running conntrack"),
        }
    }
}

pub struct Metrics {
    pub duration: Histogram,
    pub last_timestamp: IntGauge,
    pub failures: IntCounter,
}

impl Metrics {
    fn new(registry: &Registry) -> Metrics {
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "kubeproxy_sync_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 15).unwrap_or_default()),
        )
        .expect("static metric");
        let last_timestamp = IntGauge::with_opts(Opts::new(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
        ))
        .expect("static metric");
        let failures = IntCounter::with_opts(Opts::new(
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
            "Cumulative proxy nftables sync failures",
        ))
        .expect("static metric");
        for c in [
            Box::new(duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(last_timestamp.clone()),
            Box::new(failures.clone()),
        ] {
            let _ = registry.register(c);
        }
        Metrics {
            duration,
            last_timestamp,
            failures,
        }
    }
}

#[derive(Default)]
struct State {
    tables: Vec<Incremental>,
    applied: bool,
}

pub struct Proxier {
    settings: Settings,
    pub metrics: Metrics,
    /// the desired tables, per family, kept up to date incrementally; and
    /// whether the kernel holds exactly them (the last sync succeeded)
    state: Mutex<State>,
    /// when the last sync succeeded (unix seconds; 0 = never)
    last_ok: AtomicI64,
    /// a change arrived that no sync has applied yet
    pending: AtomicBool,
}

fn in_cidr(ip: &IpAddr, cidr: &str) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else {
        return cidr.parse::<IpAddr>().is_ok_and(|a| a == *ip);
    };
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(*a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(*a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// This machine's addresses (`ip -j addr`), for `--nodeport-addresses` CIDRs.
fn local_addresses() -> Vec<IpAddr> {
    let Ok(out) = Command::new("ip").args(["-j", "addr", "show"]).output() else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["local"].as_str().and_then(|s| s.parse().ok()))
        .collect()
}

impl Proxier {
    pub fn new(settings: Settings, registry: &Registry) -> Arc<Proxier> {
        Arc::new(Proxier {
            settings,
            metrics: Metrics::new(registry),
            state: Mutex::new(State::default()),
            last_ok: AtomicI64::new(0),
            pending: AtomicBool::new(true),
        })
    }

    /// Healthy as upstream's /healthz: nothing waits to be applied, or the
    /// last success is recent (within two sync periods).
    pub fn healthy(&self) -> bool {
        let last = self.last_ok.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let age = chrono::Utc::now().timestamp() - last;
        !self.pending.load(Ordering::Relaxed)
            || age <= 2 * self.settings.sync_period.as_secs() as i64
    }

    /// The per-family configs for this node: families from the node's
    /// addresses (IPv4 always), NodePort addresses as configured.
    fn configs(&self, node: Option<&Node>) -> Vec<rules::Config> {
        let node_ips: Vec<IpAddr> = node
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        let np = &self.settings.nodeport_addresses;
        let nodeport_ips: Vec<IpAddr> = if np.is_empty() || np.iter().any(|c| c == "primary") {
            node_ips.clone()
        } else {
            local_addresses()
                .into_iter()
                .filter(|ip| np.iter().any(|c| in_cidr(ip, c)))
                .collect()
        };
        let mut families = vec![Family::Ipv4];
        if node_ips.iter().any(IpAddr::is_ipv6) {
            families.push(Family::Ipv6);
        }
        families
            .into_iter()
            .map(|family| {
                let want_v6 = family == Family::Ipv6;
                rules::Config {
                    family,
                    node_name: self.settings.hostname.clone(),
                    node_ips: nodeport_ips
                        .iter()
                        .filter(|ip| ip.is_ipv6() == want_v6)
                        .copied()
                        .collect(),
                    cluster_cidr: self
                        .settings
                        .cluster_cidrs
                        .iter()
                        .find(|c| c.contains(':') == want_v6)
                        .cloned(),
                    masquerade_all: self.settings.masquerade_all,
                }
            })
            .collect()
    }

    /// Compute the desired tables and apply them: the diff against what was
    /// applied, or everything when `full` (or nothing was applied yet).
    /// Only Services whose inputs changed since the last sync are recomputed
    /// (see `rules::Incremental`).
    pub fn sync(
        &self,
        services: &[Service],
        slices: &[EndpointSlice],
        node: Option<&Node>,
        full: bool,
    ) -> Result<(), String> {
        let start = Instant::now();
        self.pending.store(false, Ordering::Relaxed);
        let configs = self.configs(node);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let same_families = state.tables.len() == configs.len()
            && state
                .tables
                .iter()
                .zip(&configs)
                .all(|(t, c)| t.ruleset().family == c.family);
        let diff = same_families && state.applied && !full;
        let mut script = String::new();
        if !same_families {
            // a family we no longer serve leaves with its table
            let keep: BTreeSet<Family> = configs.iter().map(|c| c.family).collect();
            let was_applied = state.applied;
            for old in state
                .tables
                .iter()
                .filter(|t| was_applied && !keep.contains(&t.ruleset().family))
            {
                let t = format!("{} {}", old.ruleset().family.nft(), rules::TABLE);
                script.push_str(&format!("add table {t}\ndelete table {t}\n"));
            }
            let mut old: Vec<Incremental> = std::mem::take(&mut state.tables);
            state.tables = configs
                .iter()
                .map(|c| {
                    let i = old.iter().position(|t| t.ruleset().family == c.family);
                    i.map(|i| old.swap_remove(i))
                        .unwrap_or_else(|| Incremental::new(c))
                })
                .collect();
        }
        let mut stale = Vec::new();
        let was_applied = state.applied;
        for (table, cfg) in state.tables.iter_mut().zip(&configs) {
            let change = table.update(cfg, services, slices, diff);
            if diff {
                script.push_str(&change.diff);
            } else {
                script.push_str(&table.ruleset().render_full());
            }
            if same_families && was_applied {
                stale.extend(change.stale_udp);
            }
        }
        let result = if script.is_empty() {
            Ok(())
        } else if diff && netlink_enabled() {
            apply_diff(&script)
        } else {
            nft(&script)
        };
        match &result {
            Ok(()) => {
                state.applied = true;
                self.last_ok
                    .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
                self.metrics
                    .last_timestamp
                    .set(chrono::Utc::now().timestamp());
                flush_conntrack(&stale);
            }
            Err(_) => {
                // the kernel's state is unknown: the next sync rewrites it all
                state.applied = false;
                self.pending.store(true, Ordering::Relaxed);
                self.metrics.failures.inc();
            }
        }
        self.metrics.duration.observe(start.elapsed().as_secs_f64());
        tracing::debug!(full, bytes = script.len(), took = ?start.elapsed(), ok = result.is_ok(), "synced proxy rules");
        result
    }
}

/// Upstream's BoundedFrequencyRunner limit: a token bucket holding up to
/// two syncs, refilled at one per `--min-sync-period` (0: unlimited). A
/// Service and the EndpointSlice that follows it a moment later are both
/// applied at once; a storm of changes is applied once per period.
fn sync_bucket(min_sync_period: Duration, now: tokio::time::Instant) -> TokenBucket {
    let qps = if min_sync_period.is_zero() {
        f64::INFINITY
    } else {
        1.0 / min_sync_period.as_secs_f64()
    };
    TokenBucket::new(qps, 2.0, now)
}

type Received<K> = Result<Change<K>, broadcast::error::RecvError>;

/// A change of this node (or a missed one, which might have been).
fn mine(c: &Received<Node>, me: &str) -> bool {
    match c {
        Ok(Change::Applied(n) | Change::Deleted(n)) => n.metadata.name.as_deref() == Some(me),
        Err(_) => true,
    }
}

/// Take every change already queued; whether any of them `matters`.
fn drain<K: Clone>(
    rx: &mut broadcast::Receiver<Change<K>>,
    matters: impl Fn(&Received<K>) -> bool,
) -> bool {
    let mut any = false;
    loop {
        let c = match rx.try_recv() {
            Ok(c) => Ok(c),
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                Err(broadcast::error::RecvError::Lagged(n))
            }
            Err(_) => return any,
        };
        any |= matters(&c);
    }
}

/// Keep the tables in step with the cluster until `stop`.
pub async fn run(
    proxier: Arc<Proxier>,
    informers: Arc<Informers>,
    mut stop: watch::Receiver<bool>,
) {
    let services = informers.get::<Service>();
    let slices = informers.get::<EndpointSlice>();
    let nodes = informers.get::<Node>();
    let (mut svc_changes, mut slice_changes, mut node_changes) =
        (services.subscribe(), slices.subscribe(), nodes.subscribe());
    services.wait_synced().await;
    slices.wait_synced().await;
    nodes.wait_synced().await;
    let period = proxier.settings.sync_period;
    let min = proxier.settings.min_sync_period;
    let me = proxier.settings.hostname.clone();
    let mut bucket = sync_bucket(min, tokio::time::Instant::now());
    let mut last_full: Option<Instant> = None;
    let mut dirty = true;
    loop {
        let full = last_full.is_none_or(|t| t.elapsed() >= period);
        if dirty || full {
            // out of tokens: batch what arrives until the next one
            let wait = bucket.reserve(tokio::time::Instant::now());
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = common::stopped(&mut stop) => return,
                }
            }
            let svcs: Vec<Service> = services
                .store()
                .state()
                .iter()
                .map(|s| (**s).clone())
                .collect();
            let eps: Vec<EndpointSlice> = slices
                .store()
                .state()
                .iter()
                .map(|s| (**s).clone())
                .collect();
            let node = nodes
                .store()
                .state()
                .into_iter()
                .find(|n| n.metadata.name.as_deref() == Some(me.as_str()));
            let p = proxier.clone();
            let full_now = full;
            let result =
                tokio::task::spawn_blocking(move || p.sync(&svcs, &eps, node.as_deref(), full_now))
                    .await
                    .unwrap_or_else(|e| Err(format!("sync task: {e}")));
            match result {
                Ok(()) => {
                    dirty = false;
                    if full {
                        last_full = Some(Instant::now());
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "syncing proxy rules; retrying in full");
                    last_full = None;
                }
            }
            continue;
        }
        let next_full = last_full.map_or(Duration::ZERO, |t| period.saturating_sub(t.elapsed()));
        tokio::select! {
            // a lagging receiver missed changes: that, too, calls for a sync
            _ = svc_changes.recv() => dirty = true,
            _ = slice_changes.recv() => dirty = true,
            c = node_changes.recv() => dirty |= mine(&c, &me),
            _ = tokio::time::sleep(next_full) => {}
            _ = common::stopped(&mut stop) => return,
        }
        // whatever else is queued is covered by the same sync (a backlog,
        // such as the initial list, must not cost one sync per object)
        dirty |= drain(&mut svc_changes, |_| true);
        dirty |= drain(&mut slice_changes, |_| true);
        dirty |= drain(&mut node_changes, |c| mine(c, &me));
        if dirty {
            proxier.pending.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_burst_two_then_one_per_min_period() {
        let t0 = tokio::time::Instant::now();
        let s = Duration::from_secs(1);
        let mut b = sync_bucket(s, t0);
        // a Service and its EndpointSlice: both at once
        assert_eq!(b.reserve(t0), Duration::ZERO);
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(b.reserve(t1), Duration::ZERO);
        // the third within the period waits for the next token
        let t2 = t0 + Duration::from_millis(40);
        let w = b.reserve(t2);
        assert!(w > Duration::from_millis(900) && w <= s, "{w:?}");
        // a quiet spell refills the burst, never beyond it
        let t3 = t2 + w + Duration::from_secs(10);
        assert_eq!(b.reserve(t3), Duration::ZERO);
        assert_eq!(b.reserve(t3), Duration::ZERO);
        assert!(b.reserve(t3) > Duration::ZERO);
        // --min-sync-period=0: never waits
        let mut z = sync_bucket(Duration::ZERO, t0);
        for _ in 0..5 {
            assert_eq!(z.reserve(t0), Duration::ZERO);
        }
    }

    #[test]
    fn cidr_membership() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(in_cidr(&ip("10.1.2.3"), "10.0.0.0/8"));
        assert!(!in_cidr(&ip("11.1.2.3"), "10.0.0.0/8"));
        assert!(in_cidr(&ip("10.1.2.3"), "0.0.0.0/0"));
        assert!(in_cidr(&ip("fd00::5"), "fd00::/64"));
        assert!(!in_cidr(&ip("fd00::5"), "10.0.0.0/8"));
        assert!(in_cidr(&ip("10.1.2.3"), "10.1.2.3"));
        assert!(!in_cidr(&ip("10.1.2.3"), "10.0.0.0/99"));
    }
}
