//! A work queue with upstream's semantics (client-go util/workqueue): keys are
//! deduplicated, a key is never handed to two workers at once (a key added
//! while it is being processed waits until `done`), failures come back with
//! per-key exponential backoff (5 ms doubling to 1000 s) combined with an
//! overall token bucket (10 per second, burst 100), and keys can be added
//! after a delay.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Upstream's default controller rate limiter, as numbers.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub qps: f64,
    pub burst: f64,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(1000),
            qps: 10.0,
            burst: 100.0,
        }
    }
}

/// A token bucket as client-go's (golang.org/x/time/rate): up to `burst`
/// tokens, refilled at `qps`; each reservation takes one, ahead of time if
/// none is left, and says how long to wait for it.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    counted: Instant,
}

impl TokenBucket {
    /// A full bucket; an infinite `qps` never makes anyone wait.
    pub fn new(qps: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            qps,
            burst,
            tokens: burst,
            counted: now,
        }
    }

    /// Take a token at `now`: how long until it is there.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        if !self.qps.is_finite() {
            return Duration::ZERO;
        }
        let elapsed = now.saturating_duration_since(self.counted).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst) - 1.0;
        self.counted = self.counted.max(now);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        }
    }
}

struct State<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    processing: HashSet<K>,
    failures: HashMap<K, u32>,
    /// the overall limit on rate-limited adds
    bucket: TokenBucket,
    shutting_down: bool,
}

/// A rate-limited, delaying work queue of keys.
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    ready: Notify,
    limits: RateLimits,
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    pub fn new(limits: RateLimits) -> Arc<WorkQueue<K>> {
        let now = Instant::now();
        Arc::new(WorkQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                bucket: TokenBucket::new(limits.qps, limits.burst, now),
                shutting_down: false,
            }),
            ready: Notify::new(),
            limits,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `key` now (no-op if already queued; deferred if being processed).
    pub fn add(&self, key: K) {
        let mut st = self.lock();
        if st.shutting_down || st.dirty.contains(&key) {
            return;
        }
        st.dirty.insert(key.clone());
        if st.processing.contains(&key) {
            return;
        }
        st.queue.push_back(key);
        drop(st);
        self.ready.notify_one();
    }

    /// Queue `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let q = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// The delay the rate limiter gives `key` now (and counts the attempt).
    pub fn when(&self, key: &K) -> Duration {
        let mut st = self.lock();
        let n = st.failures.entry(key.clone()).or_insert(0);
        let exp = self.limits.base_delay.as_secs_f64() * 2f64.powi((*n).min(62) as i32);
        *n += 1;
        let per_key = Duration::from_secs_f64(exp.min(self.limits.max_delay.as_secs_f64()));
        // token bucket: one token per add; without tokens, wait for the next one
        let bucket = st.bucket.reserve(Instant::now());
        per_key.max(bucket)
    }

    /// Queue `key` again after the rate limiter's delay (after a failure).
    pub fn add_rate_limited(self: &Arc<Self>, key: K) {
        let d = self.when(&key);
        self.add_after(key, d);
    }

    /// How many times `key` has failed in a row.
    pub fn failures(&self, key: &K) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Stop tracking `key`'s failures (after a success).
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// Wait for the next key; None once the queue is shut down and drained.
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.ready.notified();
            {
                let mut st = self.lock();
                if let Some(key) = st.queue.pop_front() {
                    st.dirty.remove(&key);
                    st.processing.insert(key.clone());
                    return Some(key);
                }
                if st.shutting_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// A worker finished `key`: if it was added meanwhile, it is queued again.
    pub fn done(&self, key: &K) {
        let mut st = self.lock();
        st.processing.remove(key);
        if st.dirty.contains(key) {
            st.queue.push_back(key.clone());
            drop(st);
            self.ready.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stop accepting keys; workers drain what is queued, then `get` returns None.
    pub fn shut_down(&self) {
        self.lock().shutting_down = true;
        self.ready.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deduplicates_and_keeps_order() {
        let q = WorkQueue::new(RateLimits::default());
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await, Some("a"));
        assert_eq!(q.get().await, Some("b"));
    }

    #[tokio::test]
    async fn a_key_in_processing_is_not_handed_out_twice() {
        let q = WorkQueue::new(RateLimits::default());
        q.add("k");
        let k = q.get().await;
        assert_eq!(k, Some("k"));
        q.add("k"); // changed while processing
        assert!(q.is_empty(), "must wait for done");
        q.done(&"k");
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().await, Some("k"));
        q.done(&"k");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn backoff_doubles_per_key_and_caps() {
        let limits = RateLimits {
            qps: 1e9,
            burst: 1e9,
            ..RateLimits::default()
        };
        let q = WorkQueue::new(limits);
        let d: Vec<u128> = (0..4).map(|_| q.when(&"x").as_millis()).collect();
        assert_eq!(d, vec![5, 10, 20, 40]);
        assert_eq!(q.when(&"y").as_millis(), 5, "per key");
        for _ in 0..40 {
            q.when(&"x");
        }
        assert_eq!(q.when(&"x"), Duration::from_secs(1000));
        assert_eq!(q.failures(&"x"), 45);
        q.forget(&"x");
        assert_eq!(q.when(&"x").as_millis(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_limits_overall_rate() {
        let limits = RateLimits {
            base_delay: Duration::ZERO,
            qps: 10.0,
            burst: 2.0,
            ..RateLimits::default()
        };
        let q = WorkQueue::new(limits);
        assert_eq!(q.when(&1), Duration::ZERO);
        assert_eq!(q.when(&2), Duration::ZERO);
        assert_eq!(q.when(&3), Duration::from_millis(100));
        assert_eq!(q.when(&4), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_and_shutdown() {
        let q = WorkQueue::new(RateLimits::default());
        q.add_after("later", Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(q.get().await, Some("later"));
        q.shut_down();
        q.add("ignored");
        assert_eq!(q.get().await, None);
    }
}
