//! Shared informers: one list+watch per resource type per process, whatever
//! number of controllers read it. Each informer keeps a kube-runtime reflector
//! store (readers are cheap clones) and broadcasts every change so controllers
//! can enqueue keys; a periodic resync re-announces every object.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
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
        let informer = Informer {
            store: store.clone(),
            changes: changes.clone(),
            synced,
        };
        started.insert(TypeId::of::<K>(), Box::new(informer.clone()));
        let api: Api<K> = Api::all(self.client.clone());
        let mut shutdown = self.shutdown.clone();
        let resync = self.resync;
        tokio::spawn(async move {
            let stream = reflector::reflector(
                writer,
                watcher(api, watcher::Config::default()).default_backoff(),
            );
            futures::pin_mut!(stream);
            let mut tick =
                tokio::time::interval(resync.unwrap_or(Duration::from_secs(86_400 * 365)));
            tick.tick().await;
            loop {
                tokio::select! {
                    ev = stream.next() => match ev {
                        Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => {
                            let _ = changes.send(Change::Applied(Arc::new(o)));
                        }
                        Some(Ok(watcher::Event::Delete(o))) => {
                            let _ = changes.send(Change::Deleted(Arc::new(o)));
                        }
                        Some(Ok(watcher::Event::InitDone)) => {
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
