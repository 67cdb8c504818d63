//! Leader election on coordination.k8s.io/v1 Leases, with upstream's flags and
//! timing (lease 15 s, renew deadline 10 s, retry 2 s). Expiry is judged by
//! when this process last saw the lease change, not by the holder's clock, as
//! client-go does; a candidate watches the lease, so it sees each renewal when
//! it happens rather than at its next poll, and takes over a lease duration
//! after the holder's last renewal. Losing the lease stops the work; a clean
//! shutdown releases it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::parse_duration;

/// Upstream's leader election flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaderElectionFlags {
    /// Start a leader election client and gain leadership before doing work.
    #[arg(long = "leader-elect", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    #[arg(long = "leader-elect-lease-duration", default_value = "15s")]
    pub lease_duration: String,
    #[arg(long = "leader-elect-renew-deadline", default_value = "10s")]
    pub renew_deadline: String,
    #[arg(long = "leader-elect-retry-period", default_value = "2s")]
    pub retry_period: String,
    /// Only "leases" is supported, as in upstream today.
    #[arg(long = "leader-elect-resource-lock", default_value = "leases")]
    pub resource_lock: String,
    #[arg(long = "leader-elect-resource-name")]
    pub resource_name: Option<String>,
    #[arg(
        long = "leader-elect-resource-namespace",
        default_value = "kube-system"
    )]
    pub resource_namespace: String,
}

#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid --{flag}: {why}")]
    Invalid { flag: &'static str, why: String },
}

impl LeaderElectionFlags {
    /// The election config for component `default_name`, held by `identity`.
    pub fn config(
        &self,
        default_name: &str,
        identity: &str,
    ) -> Result<LeaderElectionConfig, ConfigError> {
        let d = |flag: &'static str, v: &str| {
            parse_duration(v).map_err(|why| ConfigError::Invalid { flag, why })
        };
        if self.resource_lock != "leases" {
            return Err(ConfigError::Invalid {
                flag: "leader-elect-resource-lock",
                why: format!("{:?}: only \"leases\" is supported", self.resource_lock),
            });
        }
        let cfg = LeaderElectionConfig {
            namespace: self.resource_namespace.clone(),
            name: self
                .resource_name
                .clone()
                .unwrap_or_else(|| default_name.to_string()),
            identity: identity.to_string(),
            lease_duration: d("leader-elect-lease-duration", &self.lease_duration)?,
            renew_deadline: d("leader-elect-renew-deadline", &self.renew_deadline)?,
            retry_period: d("leader-elect-retry-period", &self.retry_period)?,
        };
        // upstream's rules: lease > renew deadline > retry period (with jitter)
        if cfg.lease_duration <= cfg.renew_deadline {
            return Err(ConfigError::Invalid {
                flag: "leader-elect-lease-duration",
                why: "must be greater than the renew deadline".into(),
            });
        }
        if cfg.renew_deadline.as_secs_f64() <= 1.2 * cfg.retry_period.as_secs_f64() {
            return Err(ConfigError::Invalid {
                flag: "leader-elect-renew-deadline",
                why: "must be greater than 1.2 x the retry period".into(),
            });
        }
        Ok(cfg)
    }
}

/// How a `run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// shutdown was asked for (the lease was released)
    Shutdown,
    /// the lease could not be renewed in time: the work was stopped
    Lost,
}

pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaderElectionConfig,
    /// the spec we last saw and when we saw it change
    observed: Option<(LeaseSpec, Instant)>,
    /// when the other holder's lease runs out, as last observed
    expires: Option<Instant>,
    /// the lease's spec as a watch last delivered it, and when
    watched: std::sync::Arc<std::sync::Mutex<Option<(LeaseSpec, Instant)>>>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaderElector {
    pub fn new(client: kube::Client, cfg: LeaderElectionConfig) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
            expires: None,
            watched: Default::default(),
        }
    }

    /// Record every change of the lease as it happens (while campaigning).
    fn watch_lease(&self) -> tokio::task::JoinHandle<()> {
        use futures::StreamExt;
        use kube::runtime::{watcher, WatchStreamExt};
        let api = self.api.clone();
        let seen = self.watched.clone();
        let fields = format!("metadata.name={}", self.cfg.name);
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default().fields(&fields)).default_backoff();
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                if let Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) = ev {
                    let spec = l.spec.unwrap_or_default();
                    if let Ok(mut g) = seen.lock() {
                        if g.as_ref().is_none_or(|(s, _)| *s != spec) {
                            *g = Some((spec, Instant::now()));
                        }
                    }
                }
            }
        })
    }

    /// Take or renew the lease. Ok(true): we hold it now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let me = self.cfg.identity.clone();
        let secs = self.cfg.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let spec = LeaseSpec {
                holder_identity: Some(me),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(spec.clone()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.observed = Some((spec, Instant::now()));
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != spec) {
            // seen earlier through the watch: it changed then, not now
            let at = self
                .watched
                .lock()
                .ok()
                .and_then(|g| g.as_ref().filter(|(s, _)| *s == spec).map(|(_, t)| *t))
                .unwrap_or_else(Instant::now);
            self.observed = Some((spec.clone(), at));
        }
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let held_by_other = !holder.is_empty() && holder != me;
        let duration =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(secs).max(0) as u64);
        let seen_at = self
            .observed
            .as_ref()
            .map(|(_, t)| *t)
            .unwrap_or_else(Instant::now);
        if held_by_other && seen_at + duration > Instant::now() {
            self.expires = Some(seen_at + duration);
            return Ok(false);
        }
        self.expires = None;
        let mut next = spec.clone();
        if holder != me {
            next.acquire_time = Some(now());
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        next.holder_identity = Some(me);
        next.lease_duration_seconds = Some(secs);
        next.renew_time = Some(now());
        lease.spec = Some(next.clone());
        // compare-and-swap on the resourceVersion we read
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observed = Some((next, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Give the lease up (holder cleared, one-second duration), as upstream's ReleaseOnCancel.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        spec.acquire_time = Some(now());
        lease.spec = Some(spec);
        self.api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    fn jittered(&self) -> Duration {
        self.cfg
            .retry_period
            .mul_f64(1.0 + rand::random::<f64>() * 1.2)
    }

    /// Campaign until leader, then run `work` (given a receiver that turns true
    /// when it must stop) while renewing. Returns when shutdown was asked for
    /// (work stopped, lease released) or the lease was lost (work stopped).
    pub async fn run<F, Fut>(mut self, mut shutdown: watch::Receiver<bool>, work: F) -> Outcome
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.term(&mut shutdown, work).await.0
    }

    /// As `run`, but a lost lease is not the end: once the work has stopped
    /// (within the time the next leader waits for the lease to expire), this
    /// campaigns again and, leading again, starts a fresh `work`. Returns
    /// `Shutdown` when asked to stop, or `Lost` when the work did not stop in
    /// time after a loss, so the caller exits, as upstream does on every loss.
    pub async fn run_terms<F, Fut>(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut work: F,
    ) -> Outcome
    where
        F: FnMut(watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        loop {
            match self.term(&mut shutdown, &mut work).await {
                (Outcome::Lost, true) => {
                    tracing::warn!(lease = %self.cfg.name, "the work stopped after the lease was lost; campaigning again");
                    self.observed = None;
                    self.expires = None;
                }
                (outcome, _) => return outcome,
            }
        }
    }

    /// One term: campaign, lead, stop. The flag says whether the work had
    /// stopped by the time this returned.
    async fn term<F, Fut>(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        work: F,
    ) -> (Outcome, bool)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let watching = self.watch_lease();
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.cfg.name, error = %e, "acquiring the leader lease")
                }
            }
            // a lease seen expiring before the next jittered try is tried at once
            // when it expires, so a dead leader is replaced a lease after it was
            // last seen renewing, not up to a retry period later
            let mut wait = self.jittered();
            if let Some(at) = self.expires {
                wait = wait
                    .min(at.saturating_duration_since(Instant::now()) + Duration::from_millis(20));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = crate::stopped(shutdown) => {
                    watching.abort();
                    return (Outcome::Shutdown, true);
                }
            }
        }
        watching.abort();
        tracing::info!(lease = %format!("{}/{}", self.cfg.namespace, self.cfg.name), identity = %self.cfg.identity, "became leader");
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut task = tokio::spawn(work(stop_rx));
        let mut last_renew = Instant::now();
        let outcome = loop {
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.retry_period) => {
                    match tokio::time::timeout(self.cfg.renew_deadline, self.try_acquire_or_renew()).await {
                        Ok(Ok(true)) => last_renew = Instant::now(),
                        Ok(Ok(false)) => {
                            tracing::error!(lease = %self.cfg.name, "lost the leader lease to another holder");
                            break Outcome::Lost;
                        }
                        Ok(Err(e)) => tracing::warn!(lease = %self.cfg.name, error = %e, "renewing the leader lease"),
                        Err(_) => {}
                    }
                    if last_renew.elapsed() > self.cfg.renew_deadline {
                        tracing::error!(lease = %self.cfg.name, "could not renew the leader lease within the renew deadline");
                        break Outcome::Lost;
                    }
                }
                _ = crate::stopped(shutdown) => break Outcome::Shutdown,
                _ = &mut task => {
                    // the work ended by itself: hand the lease on
                    break Outcome::Shutdown;
                }
            }
        };
        let _ = stop_tx.send(true);
        // after a loss another candidate may lead once the lease expires: the
        // work must be gone by then
        let grace = match outcome {
            Outcome::Shutdown => Duration::from_secs(30),
            Outcome::Lost => self
                .cfg
                .lease_duration
                .saturating_sub(self.cfg.renew_deadline),
        };
        let stopped = task.is_finished() || tokio::time::timeout(grace, &mut task).await.is_ok();
        if !stopped {
            task.abort();
        }
        if outcome == Outcome::Shutdown {
            if let Err(e) = self.release().await {
                tracing::warn!(lease = %self.cfg.name, error = %e, "releasing the leader lease");
            }
        }
        (outcome, stopped)
    }
}
