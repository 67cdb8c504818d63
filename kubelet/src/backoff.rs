//! CrashLoopBackOff bookkeeping, modelled on the kubelet's use of its
//! exponential back-off helper: one entry per (pod uid, container name);
//! the first restart waits `initial` (10 s), each further restart doubles
//! the wait up to `max` (5 min); an entry whose last restart is more than
//! `2 * max` (10 min) in the past has expired, so the next restart starts
//! again from `initial`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Default initial back-off (upstream: 10 s).
pub const DEFAULT_INITIAL: Duration = Duration::from_secs(10);
/// Default back-off cap (upstream `MaxContainerBackOff`: 300 s).
pub const DEFAULT_MAX: Duration = Duration::from_secs(300);

/// Identifies a container for back-off purposes: (pod uid, container name).
pub type BackoffKey = (String, String);

/// Builds a [`BackoffKey`].
pub fn backoff_key(pod_uid: &str, container: &str) -> BackoffKey {
    (pod_uid.to_string(), container.to_string())
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    backoff: Duration,
    last_update: Instant,
}

/// Per-container exponential restart back-off.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<BackoffKey, Entry>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(DEFAULT_INITIAL, DEFAULT_MAX)
    }
}

impl Backoff {
    /// A back-off starting at `initial` and doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    fn expired(&self, e: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(e.last_update) > self.max.saturating_mul(2)
    }

    /// Records a restart of `key` at `now` and returns how long the restart
    /// must wait: `initial` for a new (or expired) entry, otherwise the
    /// previous wait doubled, capped at `max`.
    pub fn next(&mut self, key: &BackoffKey, now: Instant) -> Duration {
        let backoff = match self.entries.get(key) {
            Some(e) if !self.expired(e, now) => e.backoff.saturating_mul(2).min(self.max),
            _ => self.initial.min(self.max),
        };
        self.entries.insert(
            key.clone(),
            Entry {
                backoff,
                last_update: now,
            },
        );
        backoff
    }

    /// The time left before `key` may be restarted, or `None` when it is
    /// not in back-off (no entry, entry expired, or its wait has elapsed).
    pub fn in_backoff(&self, key: &BackoffKey, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if self.expired(e, now) {
            return None;
        }
        let elapsed = now.saturating_duration_since(e.last_update);
        if elapsed < e.backoff {
            Some(e.backoff - elapsed)
        } else {
            None
        }
    }

    /// The current back-off of `key` (the wait recorded by the last
    /// [`Backoff::next`]), used in the `back-off 40s restarting failed
    /// container` message.
    pub fn current(&self, key: &BackoffKey) -> Option<Duration> {
        self.entries.get(key).map(|e| e.backoff)
    }

    /// Forgets `key` when its container ran for longer than `2 * max`
    /// (10 min by default) before exiting, so the next restart starts from
    /// `initial` again.
    pub fn reset_if_stable(&mut self, key: &BackoffKey, ran_for: Duration) {
        if ran_for > self.max.saturating_mul(2) {
            self.entries.remove(key);
        }
    }

    /// Drops the entry of `key` (container or pod removed).
    pub fn forget(&mut self, key: &BackoffKey) {
        self.entries.remove(key);
    }

    /// Drops every entry of a pod.
    pub fn forget_pod(&mut self, pod_uid: &str) {
        self.entries.retain(|(uid, _), _| uid != pod_uid);
    }

    /// Removes expired entries (periodic garbage collection).
    pub fn gc(&mut self, now: Instant) {
        let limit = self.max.saturating_mul(2);
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last_update) <= limit);
    }

    /// Number of tracked entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Formats a duration as Go's `time.Duration.String()` does for whole and
/// fractional seconds (`10s`, `5m0s`, `1h2m3s`, `1.5s`, `0s`).
pub fn go_duration(d: Duration) -> String {
    let total = d.as_secs();
    let nanos = d.subsec_nanos();
    if total == 0 && nanos == 0 {
        return "0s".to_string();
    }
    if total == 0 {
        // Sub-second values: ms/µs/ns like Go.
        if nanos.is_multiple_of(1_000_000) {
            return format!("{}ms", nanos / 1_000_000);
        }
        if nanos < 1_000 {
            return format!("{nanos}ns");
        }
        if nanos < 1_000_000 {
            return format!("{}µs", trim_frac(nanos as u64, 1_000));
        }
        return format!("{}ms", trim_frac(nanos as u64, 1_000_000));
    }
    let h = total / 3600;
    let m = (total % 3600) / 60;
    let s = total % 60;
    let secs = if nanos == 0 {
        format!("{s}s")
    } else {
        let frac = format!("{nanos:09}");
        format!("{s}.{}s", frac.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

fn trim_frac(v: u64, unit: u64) -> String {
    let whole = v / unit;
    let rem = v % unit;
    if rem == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let frac = format!("{rem:0width$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// The kubelet's CrashLoopBackOff status message:
/// `back-off 40s restarting failed container=app pod=web_default(uid)`.
pub fn crash_loop_message(
    wait: Duration,
    container: &str,
    pod_name: &str,
    namespace: &str,
    pod_uid: &str,
) -> String {
    format!(
        "back-off {} restarting failed container={container} pod={pod_name}_{namespace}({pod_uid})",
        go_duration(wait)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn sequence_doubles_and_caps() {
        let mut b = Backoff::default();
        let k = backoff_key("uid-1", "app");
        let t0 = Instant::now();
        let mut now = t0;
        let mut seen = Vec::new();
        for _ in 0..8 {
            let wait = b.next(&k, now);
            seen.push(wait.as_secs());
            // Container restarts after the wait and crashes 1 s later.
            now += wait + S(1);
        }
        assert_eq!(seen, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(b.current(&k), Some(S(300)));
    }

    #[test]
    fn in_backoff_remaining() {
        let mut b = Backoff::default();
        let k = backoff_key("uid-1", "app");
        let t0 = Instant::now();
        assert_eq!(b.in_backoff(&k, t0), None);
        assert_eq!(b.next(&k, t0), S(10));
        assert_eq!(b.in_backoff(&k, t0), Some(S(10)));
        assert_eq!(b.in_backoff(&k, t0 + S(4)), Some(S(6)));
        assert_eq!(b.in_backoff(&k, t0 + S(10)), None);
        assert_eq!(b.in_backoff(&k, t0 + S(11)), None);
        // Another container of the same pod is independent.
        assert_eq!(b.in_backoff(&backoff_key("uid-1", "other"), t0), None);
    }

    #[test]
    fn reset_after_stable_run() {
        let mut b = Backoff::default();
        let k = backoff_key("uid-1", "app");
        let t0 = Instant::now();
        b.next(&k, t0);
        b.next(&k, t0 + S(11));
        assert_eq!(b.next(&k, t0 + S(32)), S(40));
        // Ran for 9 minutes: not long enough.
        b.reset_if_stable(&k, S(9 * 60));
        assert_eq!(b.current(&k), Some(S(40)));
        // Ran for more than 10 minutes: reset.
        b.reset_if_stable(&k, S(10 * 60 + 1));
        assert_eq!(b.current(&k), None);
        assert_eq!(b.next(&k, t0 + S(700)), S(10));
    }

    #[test]
    fn expiry_resets_without_explicit_reset() {
        let mut b = Backoff::default();
        let k = backoff_key("uid-1", "app");
        let t0 = Instant::now();
        b.next(&k, t0);
        assert_eq!(b.next(&k, t0 + S(20)), S(20));
        // Next failure more than 10 minutes after the last restart.
        assert_eq!(b.next(&k, t0 + S(20 + 601)), S(10));
        // Expired entries are not in back-off and get collected.
        assert_eq!(b.in_backoff(&k, t0 + S(20 + 601 + 601)), None);
        b.gc(t0 + S(20 + 601 + 601));
        assert!(b.is_empty());
    }

    #[test]
    fn forget() {
        let mut b = Backoff::new(S(1), S(4));
        let t0 = Instant::now();
        let a = backoff_key("p1", "a");
        let c = backoff_key("p1", "c");
        let d = backoff_key("p2", "a");
        assert_eq!(b.next(&a, t0), S(1));
        assert_eq!(b.next(&a, t0), S(2));
        assert_eq!(b.next(&a, t0), S(4));
        assert_eq!(b.next(&a, t0), S(4));
        b.next(&c, t0);
        b.next(&d, t0);
        b.forget(&a);
        assert_eq!(b.next(&a, t0), S(1));
        b.forget_pod("p1");
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn messages() {
        assert_eq!(go_duration(S(10)), "10s");
        assert_eq!(go_duration(S(300)), "5m0s");
        assert_eq!(go_duration(S(160)), "2m40s");
        assert_eq!(go_duration(S(3723)), "1h2m3s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(
            crash_loop_message(S(300), "app", "web", "default", "u1"),
            "back-off 5m0s restarting failed container=app pod=web_default(u1)"
        );
    }
}
