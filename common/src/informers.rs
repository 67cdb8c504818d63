//! Shared informers: one list+watch per resource type per process, whatever
//! number of controllers read it. Each informer keeps a kube-runtime reflector
//! store (readers are cheap clones) and broadcasts every change so controllers
//! can enqueue keys; a periodic resync re-announces every object. Cached
//! objects carry no managedFields (upstream's components trim them too).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::RwLock;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};

/// A change an informer announces.
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// created, updated, or re-announced by a resync
    Applied(Arc<K>),
    Deleted(Arc<K>),
}

/// One resource type's shared cache.
pub struct Informer<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
    synced: watch::Receiver<bool>,
    index: Arc<RwLock<Index<K>>>,
}

/// The store's objects by controller (and those without one by namespace),
/// as upstream's indexers: a controller reads its own objects without
/// scanning every one.
pub struct Index<K> {
    /// index key -> object key ("ns/name") -> object
    by: HashMap<String, HashMap<String, Arc<K>>>,
    /// object key -> its index key
    key_of: HashMap<String, String>,
    /// kept up to date only once somebody read it (most informers never are)
    enabled: bool,
}

impl<K> Default for Index<K> {
    fn default() -> Self {
        Index {
            by: HashMap::new(),
            key_of: HashMap::new(),
            enabled: false,
        }
    }
}

impl<K: Resource> Index<K> {
    fn object_key(o: &K) -> String {
        let m = o.meta();
        format!(
            "{}/{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default()
        )
    }

    fn index_key(o: &K) -> String {
        let m = o.meta();
        let controller = m
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true));
        match controller {
            Some(c) => format!("ctrl/{}", c.uid),
            None => format!("orphan/{}", m.namespace.as_deref().unwrap_or_default()),
        }
    }

    fn insert(&mut self, o: Arc<K>) {
        if !self.enabled {
            return;
        }
        let k = Self::object_key(&o);
        self.remove_key(&k);
        let i = Self::index_key(&o);
        self.by.entry(i.clone()).or_default().insert(k.clone(), o);
        self.key_of.insert(k, i);
    }

    fn remove(&mut self, o: &K) {
        if self.enabled {
            self.remove_key(&Self::object_key(o));
        }
    }

    fn remove_key(&mut self, k: &str) {
        let Some(i) = self.key_of.remove(k) else {
            return;
        };
        if let Some(m) = self.by.get_mut(&i) {
            m.remove(k);
            if m.is_empty() {
                self.by.remove(&i);
            }
        }
    }

    /// Index `all` from scratch, keeping it up to date from now on.
    fn rebuild(&mut self, all: Vec<Arc<K>>) {
        *self = Index {
            enabled: true,
            ..Index::default()
        };
        for o in all {
            self.insert(o);
        }
    }

    fn get(&self, key: &str) -> Vec<Arc<K>> {
        self.by
            .get(key)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl<K: Resource + Clone + 'static> Clone for Informer<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn clone(&self) -> Self {
        Informer {
            store: self.store.clone(),
            changes: self.changes.clone(),
            synced: self.synced.clone(),
            index: self.index.clone(),
        }
    }
}

impl<K: Resource + Clone + 'static> Informer<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// The store: a read-only view of every object, cheap to clone.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Changes from now on (a lagging receiver misses some: resync catches up).
    pub fn subscribe(&self) -> broadcast::Receiver<Change<K>> {
        self.changes.subscribe()
    }

    /// Wait until the first list has filled the store.
    pub async fn wait_synced(&self) {
        let mut s = self.synced.clone();
        let _ = s.wait_for(|v| *v).await;
    }

    pub fn has_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// The index, built from the store on the first read: events the
    /// informer applies meanwhile are in the store, or wait for the lock.
    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index<K>> {
        let read = || self.index.read().unwrap_or_else(|p| p.into_inner());
        if read().enabled {
            return read();
        }
        let mut w = self.index.write().unwrap_or_else(|p| p.into_inner());
        if !w.enabled {
            w.rebuild(self.store.state());
        }
        drop(w);
        read()
    }

    /// The objects whose controller (ownerReference with controller: true) has `uid`.
    pub fn controlled_by(&self, uid: &str) -> Vec<Arc<K>> {
        self.index().get(&format!("ctrl/{uid}"))
    }

    /// The objects of namespace `ns` without a controller.
    pub fn orphans(&self, ns: &str) -> Vec<Arc<K>> {
        self.index().get(&format!("orphan/{ns}"))
    }
}

/// The process's informers, one per type, started on first use.
pub struct Informers {
    client: kube::Client,
    resync: Option<Duration>,
    shutdown: watch::Receiver<bool>,
    started: Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
}

impl Informers {
    pub fn new(
        client: kube::Client,
        resync: Option<Duration>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Informers> {
        Arc::new(Informers {
            client,
            resync,
            shutdown,
            started: Mutex::new(HashMap::new()),
        })
    }

    /// The informer of every `K` in the cluster (all namespaces).
    pub fn get<K>(&self) -> Informer<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = started
            .get(&TypeId::of::<K>())
            .and_then(|b| b.downcast_ref::<Informer<K>>())
        {
            return i.clone();
        }
        let (store, writer) = reflector::store::<K>();
        let (changes, _) = broadcast::channel(4096);
        let (synced_tx, synced) = watch::channel(false);
        let index = Arc::new(RwLock::new(Index::default()));
        let informer = Informer {
            store: store.clone(),
            changes: changes.clone(),
            synced,
            index: index.clone(),
        };
        started.insert(TypeId::of::<K>(), Box::new(informer.clone()));
        let api: Api<K> = Api::all(self.client.clone());
        let mut shutdown = self.shutdown.clone();
        let resync = self.resync;
        tokio::spawn(async move {
            let stream = reflector::reflector(
                writer,
                watcher(api, watcher::Config::default())
                    .default_backoff()
                    // nobody reads them from a cache: dropped before it keeps
                    // (or copies) them, as upstream's components trim theirs
                    .modify(|o| o.meta_mut().managed_fields = None),
            );
            futures::pin_mut!(stream);
            let mut tick =
                tokio::time::interval(resync.unwrap_or(Duration::from_secs(86_400 * 365)));
            tick.tick().await;
            loop {
                tokio::select! {
                    ev = stream.next() => match ev {
                        Some(Ok(watcher::Event::Apply(o))) => {
                            // the reflector stored it already: share its copy
                            let o = store
                                .get(&reflector::ObjectRef::from_obj(&o))
                                .unwrap_or_else(|| Arc::new(o));
                            index.write().unwrap_or_else(|p| p.into_inner()).insert(o.clone());
                            let _ = changes.send(Change::Applied(o));
                        }
                        Some(Ok(watcher::Event::InitApply(o))) => {
                            // the store takes a relist's objects at InitDone
                            let _ = changes.send(Change::Applied(Arc::new(o)));
                        }
                        Some(Ok(watcher::Event::Delete(o))) => {
                            index.write().unwrap_or_else(|p| p.into_inner()).remove(&o);
                            let _ = changes.send(Change::Deleted(Arc::new(o)));
                        }
                        Some(Ok(watcher::Event::InitDone)) => {
                            let mut ix = index.write().unwrap_or_else(|p| p.into_inner());
                            if ix.enabled {
                                ix.rebuild(store.state());
                            }
                            drop(ix);
                            synced_tx.send_replace(true);
                        }
                        Some(Ok(watcher::Event::Init)) => {}
                        Some(Err(e)) => tracing::warn!(kind = %K::kind(&()), error = %e, "informer watch failed; retrying"),
                        None => return,
                    },
                    _ = tick.tick(), if resync.is_some() => {
                        for o in store.state() {
                            let _ = changes.send(Change::Applied(o));
                        }
                    }
                    _ = crate::stopped(&mut shutdown) => return,
                }
            }
        });
        informer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(name: &str, owner: Option<&str>) -> Arc<Pod> {
        let mut v = serde_json::json!({"metadata": {"name": name, "namespace": "d"}});
        if let Some(uid) = owner {
            v["metadata"]["ownerReferences"] = serde_json::json!([
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "other"},
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true}]);
        }
        Arc::new(serde_json::from_value(v).expect("pod"))
    }

    fn names(v: Vec<Arc<Pod>>) -> Vec<String> {
        let mut n: Vec<String> = v.iter().filter_map(|p| p.metadata.name.clone()).collect();
        n.sort();
        n
    }

    #[test]
    fn index_follows_controllers_and_orphans() {
        let mut ix = Index::default();
        ix.insert(pod("a", Some("u1")));
        assert!(
            ix.get("ctrl/u1").is_empty(),
            "an index nobody read is not kept"
        );
        ix.rebuild(vec![pod("a", Some("u1"))]);
        ix.insert(pod("b", Some("u1")));
        ix.insert(pod("c", None));
        assert_eq!(names(ix.get("ctrl/u1")), ["a", "b"]);
        assert_eq!(names(ix.get("orphan/d")), ["c"]);
        assert!(
            ix.get("ctrl/other").is_empty(),
            "only the controller counts"
        );
        // released, adopted elsewhere, deleted
        ix.insert(pod("a", None));
        ix.insert(pod("c", Some("u2")));
        ix.remove(&pod("b", Some("u1")));
        assert!(ix.get("ctrl/u1").is_empty());
        assert!(!ix.by.contains_key("ctrl/u1"), "empty entries go");
        assert_eq!(names(ix.get("orphan/d")), ["a"]);
        assert_eq!(names(ix.get("ctrl/u2")), ["c"]);
        ix.rebuild(vec![pod("z", None)]);
        assert_eq!(names(ix.get("orphan/d")), ["z"]);
        assert!(ix.get("ctrl/u2").is_empty());
    }
}
