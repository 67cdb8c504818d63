//! The watch cache: one etcd watch over the whole `/registry` prefix feeds an
//! ordered in-memory copy of every object and a ring of recent events. LIST and
//! WATCH are served from here, never by one etcd watch per client.
//!
//! Objects are kept as their JSON bytes with metadata.resourceVersion already
//! filled in, so a LIST is a concatenation; labels are parsed once on ingest.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, watch};

use crate::storage::{prefix_end, Storage, StorageError};

const LIST_PAGE: i64 = 1_000;

#[derive(Debug)]
pub struct Entry {
    pub rev: i64,
    pub data: Bytes,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct CacheEvent {
    pub rev: i64,
    pub key: String,
    pub typ: EventType,
    /// The object after the change; for a deletion, its last state with the deletion's revision.
    pub obj: Arc<Entry>,
    pub prev: Option<Arc<Entry>>,
}

/// What a watcher receives from the broadcast: an event, or a relist that ended every watch.
#[derive(Debug, Clone)]
pub enum Feed {
    Event(Arc<CacheEvent>),
    Reset,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: i64, oldest: i64 },
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLarge { requested: i64, current: i64 },
    #[error("the watch cache is not ready")]
    NotReady,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Arc<Entry>>,
    events: VecDeque<Arc<CacheEvent>>,
    rev: i64,
    /// Every event with a revision above this one is still in `events`.
    oldest: i64,
    ready: bool,
    /// One feed per watched prefix: an event wakes only the watchers of
    /// prefixes its key is under, not every watcher of every resource.
    feeds: BTreeMap<String, broadcast::Sender<Feed>>,
}

pub struct Cache {
    state: RwLock<State>,
    /// Capacity of each feed: how far a watcher may fall behind.
    feed_len: usize,
    rev: watch::Sender<i64>,
    progress: mpsc::Sender<()>,
    progress_rx: std::sync::Mutex<Option<mpsc::Receiver<()>>>,
    storage: Storage,
    prefix: String,
    /// How many recent events a watcher can resume from.
    ring: usize,
}

/// Why the cache's feed from etcd stopped.
enum Lost {
    Listing(CacheError),
    Watch(CacheError),
    Compacted(String),
}

/// A watcher's starting point, taken atomically with its subscription.
pub struct Subscription {
    /// Objects existing at `rev` (filled only when initial events were asked for).
    pub initial: Vec<(String, Arc<Entry>)>,
    /// Buffered events after the requested revision.
    pub backlog: Vec<Arc<CacheEvent>>,
    pub rx: broadcast::Receiver<Feed>,
    /// Events from `rx` at or below this revision were already delivered.
    pub rev: i64,
}

/// One page of a LIST.
pub struct ListPage {
    pub items: Vec<Arc<Entry>>,
    pub rev: i64,
    /// The key after which the next page starts, when there is one.
    pub next: Option<String>,
    pub remaining: usize,
}

impl Cache {
    pub fn new(storage: Storage, prefix: &str, ring: usize) -> Arc<Cache> {
        let (rev, _) = watch::channel(0);
        let (progress, progress_rx) = mpsc::channel(1);
        Arc::new(Cache {
            state: RwLock::new(State::default()),
            feed_len: ring.max(1024),
            rev,
            progress,
            progress_rx: std::sync::Mutex::new(Some(progress_rx)),
            storage,
            prefix: format!("{}/", prefix.trim_end_matches('/')),
            ring,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_ready(&self) -> bool {
        self.read().ready
    }

    pub fn revision(&self) -> i64 {
        self.read().rev
    }

    /// Feed the cache until `shutdown` fires: list, then watch. A watch that breaks
    /// (an etcd member gone) is resumed from the last revision seen, on whichever
    /// member answers, so watchers keep their place; only a compacted watch relists.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut progress_rx = match self.progress_rx.lock().ok().and_then(|mut g| g.take()) {
            Some(rx) => rx,
            None => return,
        };
        let mut listed = false;
        loop {
            tokio::select! {
                res = self.sync(&mut progress_rx, listed) => {
                    match res {
                        Ok(()) => {}
                        Err(Lost::Compacted(why)) => {
                            tracing::warn!(%why, "watch cache fell behind etcd's compaction; relisting");
                            listed = false;
                        }
                        Err(Lost::Listing(e)) => tracing::warn!(error = %e, "watch cache could not list etcd; retrying"),
                        Err(Lost::Watch(e)) => {
                            listed = true;
                            tracing::warn!(error = %e, revision = self.revision(), "watch cache lost its etcd watch; resuming")
                        }
                    }
                }
                _ = crate::stopped(&mut shutdown) => return,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Fill the cache from a LIST, then watch from the revision after it.
    async fn relist(&self) -> Result<i64, CacheError> {
        let end = prefix_end(&self.prefix);
        let mut objects = BTreeMap::new();
        let mut start = self.prefix.clone();
        let mut at = 0;
        loop {
            let (kvs, more, rev) = self.storage.range(&start, &end, at, LIST_PAGE).await?;
            if at == 0 {
                at = rev;
            }
            for kv in &kvs {
                if let Some(e) = entry(&kv.value, kv.mod_revision) {
                    objects.insert(kv.key.clone(), Arc::new(e));
                }
            }
            match kvs.last() {
                Some(last) if more => start = format!("{}\0", last.key),
                _ => break,
            }
        }
        {
            let mut st = self.write();
            let was_ready = st.ready;
            st.objects = objects;
            st.events.clear();
            st.rev = at;
            st.oldest = at;
            st.ready = true;
            if was_ready {
                for f in std::mem::take(&mut st.feeds).values() {
                    let _ = f.send(Feed::Reset);
                }
            }
        }
        self.rev.send_replace(at);
        tracing::info!(revision = at, "watch cache synced");
        Ok(at)
    }

    async fn sync(&self, progress_rx: &mut mpsc::Receiver<()>, listed: bool) -> Result<(), Lost> {
        let at = if listed {
            self.revision()
        } else {
            self.relist().await.map_err(Lost::Listing)?
        };
        let watch_err = |e: StorageError| Lost::Watch(e.into());
        let mut stream = self
            .storage
            .watch(&self.prefix, at + 1)
            .await
            .map_err(|e| match e {
                StorageError::Compacted { .. } => Lost::Compacted(e.to_string()),
                e => watch_err(e),
            })?;
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let resp = match msg.map_err(|e| watch_err(e.into()))? {
                        Some(r) => r,
                        None => return Err(watch_err(StorageError::Etcd("watch stream closed".into()))),
                    };
                    if resp.compact_revision() > 0 {
                        return Err(Lost::Compacted(format!("compacted at {}", resp.compact_revision())));
                    }
                    if resp.canceled() {
                        return Err(watch_err(StorageError::Etcd(format!("watch canceled: {}", resp.cancel_reason()))));
                    }
                    let header_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                    if resp.events().is_empty() {
                        self.advance(header_rev);
                        continue;
                    }
                    for ev in resp.events() {
                        self.apply(ev);
                    }
                }
                Some(()) = progress_rx.recv() => {
                    stream.request_progress().await.map_err(|e| watch_err(e.into()))?;
                }
            }
        }
    }

    fn advance(&self, rev: i64) {
        let mut st = self.write();
        if rev > st.rev {
            st.rev = rev;
            drop(st);
            self.rev.send_replace(rev);
        }
    }

    fn apply(&self, ev: &etcd_client::Event) {
        let Some(kv) = ev.kv() else { return };
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let rev = kv.mod_revision();
        let mut st = self.write();
        let prev = st.objects.get(&key).cloned();
        let event = match ev.event_type() {
            etcd_client::EventType::Put => {
                let plain = match self.storage.decrypt(&key, kv.value()) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(%key, error = %e, "a stored value cannot be decrypted");
                        return;
                    }
                };
                let Some(e) = entry(&plain, rev) else {
                    tracing::warn!(%key, "ignoring a value that is not a JSON object");
                    return;
                };
                let e = Arc::new(e);
                st.objects.insert(key.clone(), e.clone());
                let typ = if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                CacheEvent {
                    rev,
                    key,
                    typ,
                    obj: e,
                    prev,
                }
            }
            etcd_client::EventType::Delete => {
                st.objects.remove(&key);
                // the last state is the cached one: an object the cache never
                // held was never seen by a watcher either
                let last = prev.as_ref().and_then(|p| {
                    entry(&p.data, rev).map(|mut e| {
                        e.labels = p.labels.clone();
                        e
                    })
                });
                let Some(last) = last else { return };
                CacheEvent {
                    rev,
                    key,
                    typ: EventType::Deleted,
                    obj: Arc::new(last),
                    prev,
                }
            }
        };
        let event = Arc::new(event);
        if st.events.len() >= self.ring {
            if let Some(old) = st.events.pop_front() {
                st.oldest = old.rev;
            }
        }
        st.events.push_back(event.clone());
        st.rev = st.rev.max(rev);
        let now = st.rev;
        let mut idle = false;
        for (prefix, f) in &st.feeds {
            if event.key.starts_with(prefix.as_str()) {
                idle |= f.send(Feed::Event(event.clone())).is_err();
            }
        }
        if idle {
            st.feeds.retain(|_, f| f.receiver_count() > 0);
        }
        drop(st);
        self.rev.send_replace(now);
    }

    /// Wait until the cache has seen revision `target` (a consistent read asks for
    /// etcd's current revision and waits for it here).
    pub async fn wait_for(&self, target: i64) -> Result<(), CacheError> {
        let mut rx = self.rev.subscribe();
        if *rx.borrow() >= target && self.is_ready() {
            return Ok(());
        }
        let _ = self.progress.try_send(());
        let waited = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                if *rx.borrow_and_update() >= target && self.is_ready() {
                    return;
                }
                if tokio::time::timeout(Duration::from_millis(100), rx.changed())
                    .await
                    .is_err()
                {
                    let _ = self.progress.try_send(());
                }
            }
        })
        .await;
        match waited {
            Ok(()) => Ok(()),
            Err(_) => Err(CacheError::TooLarge {
                requested: target,
                current: self.revision(),
            }),
        }
    }

    /// Wait until the cache holds everything etcd has committed.
    pub async fn wait_fresh(&self) -> Result<i64, CacheError> {
        let rev = self.storage.current_revision().await?;
        self.wait_for(rev).await?;
        Ok(rev)
    }

    /// The revision a watcher may announce in a bookmark: the cache's, if the watcher
    /// has received every event up to it (checked under the lock the feeder sends under).
    pub fn bookmark_rev(&self, rx: &broadcast::Receiver<Feed>) -> Option<i64> {
        let st = self.read();
        rx.is_empty().then_some(st.rev)
    }

    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.read().objects.get(key).cloned()
    }

    /// Objects under `prefix` in key order, starting after `after`, at most `limit` (0 = all)
    /// of those `keep` accepts.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&str, &Entry) -> bool,
    ) -> ListPage {
        let st = self.read();
        let end = prefix_end(prefix);
        let lower = match after {
            Some(k) => Bound::Excluded(k.to_string()),
            None => Bound::Included(prefix.to_string()),
        };
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0;
        for (k, e) in st.objects.range((lower, Bound::Excluded(end))) {
            if !keep(k, e) {
                continue;
            }
            if limit > 0 && items.len() >= limit {
                remaining += 1;
                continue;
            }
            items.push(e.clone());
            if limit > 0 && items.len() == limit {
                next = Some(k.clone());
            }
        }
        if remaining == 0 {
            next = None;
        }
        ListPage {
            items,
            rev: st.rev,
            next,
            remaining,
        }
    }

    /// Start a watch: events after `since`, or (when `since` is None) a snapshot of
    /// the objects under `prefix` as initial events followed by what comes after it.
    pub fn subscribe(&self, prefix: &str, since: Option<i64>) -> Result<Subscription, CacheError> {
        let mut st = self.write();
        if !st.ready {
            return Err(CacheError::NotReady);
        }
        let len = self.feed_len;
        // feeds whose watchers all left go (an event to them would too)
        st.feeds.retain(|_, f| f.receiver_count() > 0);
        let rx = st
            .feeds
            .entry(prefix.to_string())
            .or_insert_with(|| broadcast::channel(len).0)
            .subscribe();
        match since {
            None => {
                let end = prefix_end(prefix);
                let initial = st
                    .objects
                    .range(prefix.to_string()..end)
                    .map(|(k, e)| (k.clone(), e.clone()))
                    .collect();
                Ok(Subscription {
                    initial,
                    backlog: Vec::new(),
                    rx,
                    rev: st.rev,
                })
            }
            Some(rv) => {
                if rv < st.oldest {
                    return Err(CacheError::Gone {
                        requested: rv,
                        oldest: st.oldest,
                    });
                }
                let backlog = st
                    .events
                    .iter()
                    .filter(|e| e.rev > rv && e.key.starts_with(prefix))
                    .cloned()
                    .collect();
                Ok(Subscription {
                    initial: Vec::new(),
                    backlog,
                    rx,
                    rev: st.rev.max(rv),
                })
            }
        }
    }
}

/// A cache entry from a stored value: resourceVersion filled in, labels parsed.
/// Only metadata is parsed; every other field is copied as it is stored.
pub(crate) fn entry(value: &[u8], rev: i64) -> Option<Entry> {
    use serde_json::value::RawValue;
    let top: RawObject = serde_json::from_slice(value).ok()?;
    let mut meta: RawObject<'_> = match top.get("metadata") {
        Some(m) => serde_json::from_str(m.get()).ok()?,
        None => RawObject(Vec::new()),
    };
    let labels = crate::selectors::labels_of(
        meta.get("labels")
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l.get()).ok())
            .as_ref(),
    );
    let rv = serde_json::to_string(&rev.to_string()).ok()?;
    let rv = RawValue::from_string(rv).ok()?;
    meta.set("resourceVersion", &rv);
    let meta = RawValue::from_string(meta.to_json()).ok()?;
    let mut top = top;
    top.set("metadata", &meta);
    Some(Entry {
        rev,
        data: Bytes::from(top.to_json().into_bytes()),
        labels,
    })
}

/// A JSON object as its members' unparsed values, in order.
struct RawObject<'a>(Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>);

impl<'a> RawObject<'a> {
    fn get(&self, k: &str) -> Option<&'a serde_json::value::RawValue> {
        self.0.iter().rev().find(|(n, _)| n == k).map(|(_, v)| *v)
    }
    fn set(&mut self, k: &'static str, v: &'a serde_json::value::RawValue) {
        match self.0.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v,
            None => self.0.push((k.into(), v)),
        }
    }
    fn to_json(&self) -> String {
        let mut out = String::with_capacity(
            2 + self
                .0
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>(),
        );
        out.push('{');
        for (k, v) in &self.0 {
            // keys were unescaped when read: quote (and escape) them again
            let Ok(key) = serde_json::to_string(k.as_ref()) else {
                continue;
            };
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&key);
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
        out
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    let v: &'de serde_json::value::RawValue = m.next_value()?;
                    out.push((k, v));
                }
                Ok(RawObject(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn entry_sets_the_resource_version_and_keeps_the_rest() {
        let stored = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p\"q", "resourceVersion": "7", "labels": {"app": "web", "n": 1}},
            "spec": {"containers": [{"name": "c", "image": "i\u{e9}"}]}});
        let e = entry(&serde_json::to_vec(&stored).unwrap(), 42).unwrap();
        let got: Value = serde_json::from_slice(&e.data).unwrap();
        let mut want = stored.clone();
        want["metadata"]["resourceVersion"] = "42".into();
        assert_eq!(got, want);
        // the order of fields is kept
        let keys: Vec<&String> = got.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec"]);
        assert_eq!(e.rev, 42);
        assert_eq!(
            e.labels,
            BTreeMap::from([("app".to_string(), "web".to_string())])
        );

        // without metadata, or without a resourceVersion, both are added
        let e = entry(br#"{"kind":"X"}"#, 5).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&e.data).unwrap(),
            json!({"kind": "X", "metadata": {"resourceVersion": "5"}})
        );
        assert!(e.labels.is_empty());
        // labels that are not an object are no labels
        let e = entry(br#"{"metadata":{"labels":null}}"#, 5).unwrap();
        assert!(e.labels.is_empty());
        // not an object: no entry
        assert!(entry(b"[1]", 1).is_none());
        assert!(entry(br#"{"metadata":3}"#, 1).is_none());
        assert!(entry(b"{", 1).is_none());
    }
}
