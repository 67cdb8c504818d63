//! Pod workers: one task per pod bound to this node. A worker syncs what
//! should run (the Pod) against what runs (the runtime's containers and the
//! pod's state on disk), starts and restarts containers as restartPolicy and
//! CrashLoopBackOff say, runs the probes, tears the pod down on deletion with
//! its grace period, and reports the pod's status when it changes.
//!
//! Static pods (`static_pods`) come from the file source, not from the
//! apiserver: their workers report status on their mirror pods, whose watch
//! events never start or stop a worker.
//!
//! The state a restarted kubelet needs (the sandbox, which container is the
//! current one for each name, restart counts, the last termination) is kept
//! in `<root-dir>/pods/<uid>/state.json`, so running containers are adopted,
//! never restarted, across kubelet restarts.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Container, ContainerState as KState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, ObjectReference, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use common::events::{EventType, Recorder};

use crate::backoff::Backoff;
use crate::cni::{Cni, PortMapping};
use crate::config::Settings;
use crate::image::ImageStore;
use crate::probes::Prober;
use crate::runtime::{ContainerState, Launch, Runtime};
use crate::sandbox::{self, Sandbox, SandboxSpec};
use crate::shim::ExitRecord;
use crate::static_pods;

/// A container's record in the pod's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CState {
    /// the current container (the latest started)
    pub id: String,
    pub restart_count: i32,
    pub image: String,
    pub image_id: String,
    /// the previous container's id (for `kubectl logs --previous`) and end
    #[serde(default)]
    pub previous: Option<String>,
    #[serde(default)]
    pub last: Option<Ended>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ended {
    pub container_id: String,
    pub started_at: String,
    pub exit: ExitRecord,
}

/// What the kubelet keeps on disk per pod.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub sandbox: Option<Sandbox>,
    pub containers: BTreeMap<String, CState>,
    /// waiting reasons of containers not running (reason, message)
    #[serde(skip)]
    pub waiting: BTreeMap<String, (String, String)>,
}

/// A container as the kubelet's server reaches it.
#[derive(Debug, Clone)]
pub struct ContainerHandle {
    pub id: String,
    /// the container's init while it runs
    pub pid: Option<i32>,
    /// the current container's log
    pub log: PathBuf,
    /// the log of the container before the last restart
    pub previous_log: Option<PathBuf>,
    pub netns: Option<PathBuf>,
}

/// Everything pod workers share.
pub struct Kubelet {
    pub client: kube::Client,
    pub settings: Settings,
    pub runtime: Runtime,
    pub images: Arc<ImageStore>,
    pub recorder: Recorder,
    /// the pod network, once the node has a podCIDR
    pub cni: watch::Receiver<Option<Cni>>,
    pub backoff: Mutex<Backoff>,
    pub prober: Prober,
    workers: Mutex<HashMap<String, watch::Sender<Option<Arc<Pod>>>>>,
    /// the static pods that have a worker (running or being torn down):
    /// UID -> `<namespace>/<name>`
    statics: Mutex<HashMap<String, String>>,
    /// the mirror pods in the apiserver, by `<namespace>/<name>`
    mirrors: Mutex<HashMap<String, Arc<Pod>>>,
}

impl Kubelet {
    pub fn new(
        client: kube::Client,
        settings: Settings,
        runtime: Runtime,
        images: Arc<ImageStore>,
        cni: watch::Receiver<Option<Cni>>,
    ) -> Arc<Kubelet> {
        let recorder = Recorder::new(client.clone(), "kubelet", Some(&settings.node_name));
        Arc::new(Kubelet {
            client,
            settings,
            runtime,
            images,
            recorder,
            cni,
            backoff: Mutex::new(Backoff::new(
                Duration::from_secs(10),
                Duration::from_secs(300),
            )),
            prober: Prober::default(),
            workers: Mutex::new(HashMap::new()),
            statics: Mutex::new(HashMap::new()),
            mirrors: Mutex::new(HashMap::new()),
        })
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.settings.root_dir.join("pods").join(uid)
    }

    /// How many pods have a worker.
    pub fn pod_count(&self) -> usize {
        self.workers.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// The pods the workers run now.
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        workers
            .values()
            .filter_map(|tx| tx.borrow().clone())
            .collect()
    }

    /// The pod this kubelet runs with that namespace and name (the one not
    /// being deleted, when a static pod's new version waits for the old).
    pub fn pod_by_name(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        let mut found: Vec<Arc<Pod>> = workers
            .values()
            .filter_map(|tx| {
                let pod = tx.borrow().clone()?;
                (pod.metadata.namespace.as_deref() == Some(namespace)
                    && pod.metadata.name.as_deref() == Some(name))
                .then_some(pod)
            })
            .collect();
        found.sort_by_key(|p| p.metadata.deletion_timestamp.is_some());
        found.into_iter().next()
    }

    /// Where a container of a running pod is: its current container, its
    /// init's pid while it runs, its logs and the pod's network namespace.
    pub fn container_handle(&self, pod: &Pod, name: &str) -> Option<ContainerHandle> {
        let uid = pod.metadata.uid.as_deref()?;
        let st = load_state(self, uid);
        let c = st.containers.get(name)?;
        let pid = match self.runtime.state(&c.id) {
            ContainerState::Running { pid, .. } if pid > 0 => Some(pid),
            _ => None,
        };
        let dir = log_dir(self, pod).join(name);
        Some(ContainerHandle {
            id: c.id.clone(),
            pid,
            log: dir.join(format!("{}.log", c.restart_count)),
            previous_log: (c.previous.is_some() && c.restart_count > 0)
                .then(|| dir.join(format!("{}.log", c.restart_count - 1))),
            netns: st.sandbox.as_ref().and_then(|s| s.netns.clone()),
        })
    }

    /// The pod's network namespace (None: the node's, for hostNetwork pods).
    pub fn pod_netns(&self, pod: &Pod) -> Option<PathBuf> {
        let uid = pod.metadata.uid.as_deref()?;
        load_state(self, uid).sandbox.and_then(|s| s.netns)
    }

    fn dispatch(self: &Arc<Self>, uid: &str, pod: Option<Arc<Pod>>) {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pod.as_deref().filter(|p| static_pods::is_static(p)) {
            self.statics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(uid.to_string(), static_pods::full_name(p));
        }
        if let Some(tx) = workers.get(uid) {
            tx.send_replace(pod);
            return;
        }
        let (tx, rx) = watch::channel(pod);
        workers.insert(uid.to_string(), tx);
        let kl = self.clone();
        let uid = uid.to_string();
        tokio::spawn(async move {
            loop {
                worker(kl.clone(), uid.clone(), rx.clone()).await;
                let mut workers = kl.workers.lock().unwrap_or_else(|p| p.into_inner());
                // a static pod's file came back (same content, same UID)
                // while its pod was torn down: run it again
                let again = workers.get(&uid).is_some_and(|tx| {
                    tx.borrow().as_deref().is_some_and(|p| {
                        static_pods::is_static(p) && p.metadata.deletion_timestamp.is_none()
                    })
                });
                if again {
                    continue;
                }
                workers.remove(&uid);
                kl.statics
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&uid);
                return;
            }
        });
    }

    /// Run a static pod from the file source (or tear it down: a pod with a
    /// deletionTimestamp).
    pub(crate) fn dispatch_static(self: &Arc<Self>, pod: Arc<Pod>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if !uid.is_empty() {
            self.dispatch(&uid, Some(pod));
        }
    }

    /// Whether another static pod of that name (an earlier version of the
    /// file) still has a worker: the new one starts once it is torn down.
    fn static_blocked(&self, uid: &str, pod: &Pod) -> bool {
        let name = static_pods::full_name(pod);
        let statics = self.statics.lock().unwrap_or_else(|p| p.into_inner());
        statics.iter().any(|(u, n)| u != uid && *n == name)
    }

    /// The mirror pod of that `<namespace>/<name>`, as last seen.
    pub fn mirror(&self, full_name: &str) -> Option<Arc<Pod>> {
        let mirrors = self.mirrors.lock().unwrap_or_else(|p| p.into_inner());
        mirrors.get(full_name).cloned()
    }

    /// Record a mirror pod as the watch (or a create) shows it; an older
    /// resourceVersion than the one recorded does not replace it.
    pub(crate) fn remember_mirror(&self, pod: Pod) -> Arc<Pod> {
        let pod = Arc::new(pod);
        let rv = |p: &Pod| {
            p.metadata
                .resource_version
                .as_deref()
                .and_then(|r| r.parse::<u64>().ok())
        };
        let mut mirrors = self.mirrors.lock().unwrap_or_else(|p| p.into_inner());
        let key = static_pods::full_name(&pod);
        if let Some(old) = mirrors.get(&key) {
            if let (Some(a), Some(b)) = (rv(old), rv(&pod)) {
                if b < a {
                    return old.clone();
                }
            }
        }
        mirrors.insert(key, pod.clone());
        pod
    }

    /// Forget a mirror pod (that incarnation only).
    pub(crate) fn forget_mirror(&self, pod: &Pod) {
        let mut mirrors = self.mirrors.lock().unwrap_or_else(|p| p.into_inner());
        let key = static_pods::full_name(pod);
        if mirrors
            .get(&key)
            .is_some_and(|m| m.metadata.uid == pod.metadata.uid)
        {
            mirrors.remove(&key);
        }
    }

    /// Delete the mirror pods whose static pod is gone (and torn down).
    async fn delete_orphaned_mirrors(&self) {
        let statics: std::collections::HashSet<String> = self
            .statics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let orphans: Vec<Arc<Pod>> = self
            .mirrors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|m| !statics.contains(&static_pods::full_name(m)))
            .cloned()
            .collect();
        for m in orphans {
            static_pods::delete_mirror(self, &m).await;
        }
    }
}

/// Run the static pods of the file source, watch the pods bound to this
/// node and feed their workers; pods on disk that neither the apiserver nor
/// the file source has are torn down after the first list. Mirror pods are
/// only recorded (their static pods' workers keep them), and those without
/// a static pod are deleted.
pub async fn run(kl: Arc<Kubelet>, mut shutdown: watch::Receiver<bool>) {
    // the static pods first, so the clean-up after the first list knows them
    if let Some(dir) = kl.settings.pod_manifest_path.clone() {
        static_pods::start(kl.clone(), dir, shutdown.clone()).await;
    }
    let api: Api<Pod> = Api::all(kl.client.clone());
    let cfg =
        watcher::Config::default().fields(&format!("spec.nodeName={}", kl.settings.node_name));
    let stream = watcher(api, cfg);
    futures::pin_mut!(stream);
    let mut listed: Option<std::collections::HashSet<String>> = None;
    let mut listed_mirrors: Option<std::collections::HashSet<String>> = None;
    let mut seen = std::collections::HashSet::new();
    let mut synced = false;
    let mut sweep: Option<tokio::task::JoinHandle<()>> = None;
    // upstream's housekeeping period
    let mut housekeeping = tokio::time::interval(Duration::from_secs(2));
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = housekeeping.tick() => {
                // in the background, so a slow apiserver holds no events up
                if synced && sweep.as_ref().is_none_or(|h| h.is_finished()) {
                    let kl = kl.clone();
                    sweep = Some(tokio::spawn(async move { kl.delete_orphaned_mirrors().await }));
                }
                continue;
            }
            _ = common::stopped(&mut shutdown) => return,
        };
        match ev {
            Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                if uid.is_empty() {
                    continue;
                }
                if static_pods::is_mirror(&p) {
                    // status only: the static pod's worker runs the pod
                    if let Some(l) = listed_mirrors.as_mut() {
                        l.insert(uid);
                    }
                    kl.remember_mirror(p);
                    continue;
                }
                seen.insert(uid.clone());
                if let Some(l) = listed.as_mut() {
                    l.insert(uid.clone());
                }
                kl.dispatch(&uid, Some(Arc::new(p)));
            }
            Some(Ok(watcher::Event::Delete(p))) => {
                if static_pods::is_mirror(&p) {
                    kl.forget_mirror(&p);
                    continue;
                }
                if let Some(uid) = p.metadata.uid.clone() {
                    kl.dispatch(&uid, None);
                }
            }
            Some(Ok(watcher::Event::Init)) => {
                listed = Some(std::collections::HashSet::new());
                listed_mirrors = Some(std::collections::HashSet::new());
            }
            Some(Ok(watcher::Event::InitDone)) => {
                let present = listed.take().unwrap_or_default();
                let mirrors = listed_mirrors.take().unwrap_or_default();
                kl.mirrors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|_, m| m.metadata.uid.as_ref().is_some_and(|u| mirrors.contains(u)));
                let statics: std::collections::HashSet<String> = kl
                    .statics
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .keys()
                    .cloned()
                    .collect();
                // pods on disk (from before a restart) that neither the
                // apiserver nor the file source has
                if let Ok(rd) = std::fs::read_dir(kl.settings.root_dir.join("pods")) {
                    for e in rd.flatten() {
                        let uid = e.file_name().to_string_lossy().to_string();
                        if !present.contains(&uid) && !statics.contains(&uid) {
                            kl.dispatch(&uid, None);
                        }
                    }
                }
                // pods seen before that the relist no longer has
                for uid in seen.clone() {
                    if !present.contains(&uid) {
                        kl.dispatch(&uid, None);
                        seen.remove(&uid);
                    }
                }
                synced = true;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "watching this node's pods");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => return,
        }
    }
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..Default::default()
    }
}

pub(crate) fn container_ref(pod: &Pod, c: &str, init: bool) -> ObjectReference {
    let mut r = pod_ref(pod);
    r.field_path = Some(if init {
        format!("spec.initContainers{{{c}}}")
    } else {
        format!("spec.containers{{{c}}}")
    });
    r
}

fn time(s: &str) -> Option<Time> {
    s.parse::<k8s_openapi::jiff::Timestamp>().ok().map(Time)
}

fn load_state(kl: &Kubelet, uid: &str) -> PodState {
    std::fs::read(kl.pod_dir(uid).join("state.json"))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default()
}

fn save_state(kl: &Kubelet, uid: &str, st: &PodState) {
    let dir = kl.pod_dir(uid);
    let _ = std::fs::create_dir_all(&dir);
    if let Err(e) = crate::shim::write_atomic(&dir.join("state.json"), st) {
        tracing::warn!(%uid, error = %e, "saving the pod's state");
    }
}

/// One pod's worker: sync on every change of the Pod and every second.
async fn worker(kl: Arc<Kubelet>, uid: String, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
    let mut st = load_state(&kl, &uid);
    // the status last reported, and on which pod (UID)
    let mut last_status: Option<(String, PodStatus)> = None;
    let mut last_pod: Option<Arc<Pod>> = None;
    // a static pod's status as last computed: no apiserver feeds it back
    let mut static_status: Option<PodStatus> = None;
    let mut mirror_retry: Option<Instant> = None;
    loop {
        let pod = rx.borrow_and_update().clone();
        match pod {
            None => {
                // gone from the apiserver: kill everything now
                let grace = Duration::from_secs(2);
                teardown(&kl, &uid, last_pod.as_deref(), &mut st, grace).await;
                return;
            }
            Some(pod) => {
                last_pod = Some(pod.clone());
                if pod.metadata.deletion_timestamp.is_some() {
                    let grace = pod
                        .metadata
                        .deletion_grace_period_seconds
                        .or_else(|| {
                            pod.spec
                                .as_ref()
                                .and_then(|s| s.termination_grace_period_seconds)
                        })
                        .unwrap_or(30)
                        .max(0) as u64;
                    teardown(&kl, &uid, Some(&pod), &mut st, Duration::from_secs(grace)).await;
                    if static_pods::is_static(&pod) {
                        // its file is gone: so is its mirror
                        let name = static_pods::full_name(&pod);
                        if let Some(m) = kl
                            .mirror(&name)
                            .filter(|m| static_pods::is_mirror_of(m, &pod))
                        {
                            static_pods::delete_mirror(&kl, &m).await;
                        }
                    } else {
                        finish_delete(&kl, &pod).await;
                    }
                    return;
                }
                if !static_pods::is_static(&pod) {
                    let status = sync(&kl, &pod, &mut st).await;
                    let reported = (uid.clone(), status);
                    if last_status.as_ref() != Some(&reported)
                        && patch_status(&kl, &pod, &reported.1).await
                    {
                        last_status = Some(reported);
                    }
                } else if !kl.static_blocked(&uid, &pod) {
                    // the mirror first (as upstream's syncPod), so a
                    // restarted kubelet goes on from the status it reported
                    let mirror = static_pods::ensure_mirror(&kl, &pod, &mut mirror_retry).await;
                    if static_status.is_none() {
                        static_status = mirror.as_ref().and_then(|m| m.status.clone());
                    }
                    let mut current = (*pod).clone();
                    if static_status.is_some() {
                        current.status = static_status.clone();
                    }
                    let status = sync(&kl, &Arc::new(current), &mut st).await;
                    static_status = Some(status.clone());
                    if let Some(m) = mirror {
                        let reported = (m.metadata.uid.clone().unwrap_or_default(), status);
                        if last_status.as_ref() != Some(&reported)
                            && patch_status(&kl, &m, &reported.1).await
                        {
                            last_status = Some(reported);
                        }
                    }
                }
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Report the status on `pod` (a static pod's: on its mirror pod), only on
/// that incarnation of it.
async fn patch_status(kl: &Kubelet, pod: &Pod, status: &PodStatus) -> bool {
    let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
        return false;
    };
    let api: Api<Pod> = Api::namespaced(kl.client.clone(), ns);
    let patch = serde_json::json!({
        "metadata": { "uid": pod.metadata.uid },
        "status": status,
    });
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => false,
        Err(e) => {
            tracing::warn!(pod = %name, error = %e, "updating the pod's status");
            false
        }
    }
}

/// The pod is gone from this node once nothing of it runs: remove the API
/// object for good (grace 0, only this incarnation).
async fn finish_delete(kl: &Kubelet, pod: &Pod) {
    let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(kl.client.clone(), ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    if let Err(e) = api.delete(name, &dp).await {
        if !matches!(&e, kube::Error::Api(a) if a.code == 404 || a.code == 409) {
            tracing::warn!(pod = %name, error = %e, "deleting the pod");
        }
    }
}

/// Stop every container (SIGTERM, grace, SIGKILL), remove them, the
/// sandbox, the volumes and the pod's directory.
async fn teardown(kl: &Kubelet, uid: &str, pod: Option<&Pod>, st: &mut PodState, grace: Duration) {
    let mut stops = Vec::new();
    for (name, c) in &st.containers {
        if matches!(kl.runtime.state(&c.id), ContainerState::Running { .. }) {
            if let Some(pod) = pod {
                let init = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.init_containers.as_ref())
                    .is_some_and(|ic| ic.iter().any(|x| &x.name == name));
                kl.recorder.emit(
                    &container_ref(pod, name, init),
                    EventType::Normal,
                    "Killing",
                    &format!("Stopping container {name}"),
                );
            }
            let rt = kl.runtime.clone();
            let id = c.id.clone();
            let hook = pod.and_then(|p| {
                let spec = p.spec.as_ref()?;
                let ctr = spec
                    .containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                    .find(|x| &x.name == name)?;
                ctr.lifecycle.as_ref()?.pre_stop.as_ref()?;
                Some((p.clone(), ctr.clone()))
            });
            stops.push(async move {
                let left = match hook {
                    Some((p, ctr)) => pre_stop(kl, &p, &ctr, &id, grace).await,
                    None => grace,
                };
                rt.stop(&id, left).await
            });
        }
    }
    futures::future::join_all(stops).await;
    for c in st.containers.values() {
        for id in std::iter::once(&c.id).chain(c.previous.iter()) {
            if let Err(e) = kl.runtime.remove(id).await {
                tracing::warn!(%uid, error = %e, "removing a container");
            }
        }
    }
    let cni = kl.cni.borrow().clone();
    if let Err(e) = sandbox::remove(&kl.pod_dir(uid), uid, cni.as_ref()).await {
        tracing::warn!(%uid, error = %e, "removing the sandbox");
    }
    crate::volumes::teardown(&kl.pod_dir(uid)).await;
    if let Some(pod) = pod {
        let qos = crate::qos::qos_class(pod);
        crate::cgroups::remove(&pod_cgroup(kl, qos, uid));
        let _ = tokio::fs::remove_dir_all(log_dir(kl, pod)).await;
    } else {
        for qos in [
            crate::qos::QosClass::Guaranteed,
            crate::qos::QosClass::Burstable,
            crate::qos::QosClass::BestEffort,
        ] {
            crate::cgroups::remove(&pod_cgroup(kl, qos, uid));
        }
    }
    let _ = tokio::fs::remove_dir_all(kl.pod_dir(uid)).await;
    kl.prober.forget_pod(uid);
    crate::volumes::forget_tokens(uid);
    if let Ok(mut b) = kl.backoff.lock() {
        b.forget_pod(uid);
    }
    *st = PodState::default();
    tracing::info!(%uid, "pod torn down");
}

pub fn pod_cgroup(kl: &Kubelet, qos: crate::qos::QosClass, uid: &str) -> String {
    let base = kl.settings.cgroup_root.trim_end_matches('/');
    format!("{base}{}", crate::spec::qos_cgroup_parent(qos, uid))
}

fn log_dir(kl: &Kubelet, pod: &Pod) -> PathBuf {
    let m = &pod.metadata;
    kl.settings.log_dir.join(format!(
        "{}_{}_{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    ))
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Whether an ended container is started again under the pod's policy.
fn should_restart(policy: &str, exit: &ExitRecord) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit.exit_code != 0,
        _ => true,
    }
}

/// One pass over the pod: make what runs match the Pod; returns the status.
async fn sync(kl: &Arc<Kubelet>, pod: &Arc<Pod>, st: &mut PodState) -> PodStatus {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = pod.spec.as_ref() else {
        return pod.status.clone().unwrap_or_default();
    };
    let phase_now = pod.status.as_ref().and_then(|s| s.phase.clone());
    let terminal = matches!(phase_now.as_deref(), Some("Succeeded") | Some("Failed"));
    if terminal {
        // a finished pod keeps its status; nothing of it runs any more
        for c in st.containers.values() {
            if matches!(kl.runtime.state(&c.id), ContainerState::Running { .. }) {
                kl.runtime.stop(&c.id, Duration::from_secs(0)).await;
            }
        }
        if st.sandbox.is_some() {
            let cni = kl.cni.borrow().clone();
            let _ = sandbox::remove(&kl.pod_dir(&uid), &uid, cni.as_ref()).await;
            st.sandbox = None;
            save_state(kl, &uid, st);
        }
        return pod.status.clone().unwrap_or_default();
    }

    // the sandbox
    if st.sandbox.is_none() {
        match make_sandbox(kl, pod).await {
            Ok(sb) => {
                st.sandbox = Some(sb);
                save_state(kl, &uid, st);
            }
            Err(msg) => {
                kl.recorder.emit(
                    &pod_ref(pod),
                    EventType::Warning,
                    "FailedCreatePodSandBox",
                    &format!("Failed to create pod sandbox: {msg}"),
                );
                return status_of(kl, pod, st, false);
            }
        }
    }

    // the pod's cgroup and its limits, once, before any container
    let cgroup = pod_cgroup(kl, crate::qos::qos_class(pod), &uid);
    if !crate::cgroups::exists(&cgroup) {
        if let Err(e) = crate::cgroups::apply_pod(&cgroup, &crate::spec::pod_cgroup_resources(pod))
        {
            tracing::warn!(pod = %uid, error = %e, "setting the pod's cgroup limits");
        }
    }

    // volumes (configMaps and secrets are refreshed in place)
    let volumes = match crate::volumes::setup(kl, pod, &kl.pod_dir(&uid)).await {
        Ok(v) => v,
        Err(msg) => {
            kl.recorder.emit(
                &pod_ref(pod),
                EventType::Warning,
                "FailedMount",
                &format!("MountVolume.SetUp failed: {msg}"),
            );
            return status_of(kl, pod, st, false);
        }
    };

    let policy = restart_policy(pod).to_string();
    // init containers, in order, each to a successful end
    let mut initialized = true;
    for c in spec.init_containers.as_deref().unwrap_or_default() {
        let state = st
            .containers
            .get(&c.name)
            .map(|s| kl.runtime.state(&s.id))
            .unwrap_or(ContainerState::Unknown);
        match state {
            ContainerState::Exited { ref exit, .. } if exit.exit_code == 0 => continue,
            ContainerState::Running { .. } => {
                initialized = false;
                break;
            }
            ContainerState::Exited { .. } if policy == "Never" => {
                initialized = false;
                break;
            }
            _ => {
                ensure_started(kl, pod, c, true, st, &volumes, &policy).await;
                initialized = false;
                break;
            }
        }
    }
    if initialized {
        for c in &spec.containers {
            let state = st
                .containers
                .get(&c.name)
                .map(|s| kl.runtime.state(&s.id))
                .unwrap_or(ContainerState::Unknown);
            match state {
                ContainerState::Running { .. } => {
                    let id = st
                        .containers
                        .get(&c.name)
                        .map(|s| s.id.clone())
                        .unwrap_or_default();
                    if kl.prober.liveness_failed(kl, pod, c, &id).await {
                        kl.recorder.emit(
                            &container_ref(pod, &c.name, false),
                            EventType::Normal,
                            "Killing",
                            &format!(
                                "Container {} failed liveness probe, will be restarted",
                                c.name
                            ),
                        );
                        let grace = grace_of(pod);
                        let left = pre_stop(kl, pod, c, &id, grace).await;
                        kl.runtime.stop(&id, left).await;
                    }
                }
                ContainerState::Exited { ref exit, .. } if !should_restart(&policy, exit) => {}
                _ => ensure_started(kl, pod, c, false, st, &volumes, &policy).await,
            }
        }
    }
    status_of(kl, pod, st, initialized)
}

async fn make_sandbox(kl: &Kubelet, pod: &Pod) -> Result<Sandbox, String> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let host_network = spec.host_network.unwrap_or(false);
    let cni = kl.cni.borrow().clone();
    if cni.is_none() && !host_network {
        return Err("network is not ready: the node has no podCIDR yet".into());
    }
    let mut ports = Vec::new();
    for c in &spec.containers {
        for p in c.ports.as_deref().unwrap_or_default() {
            if let Some(hp) = p.host_port.filter(|h| *h > 0) {
                ports.push(PortMapping {
                    host_port: hp,
                    container_port: p.container_port,
                    protocol: p
                        .protocol
                        .clone()
                        .unwrap_or_else(|| "TCP".into())
                        .to_lowercase(),
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                });
            }
        }
    }
    let hostname = spec
        .hostname
        .clone()
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_else(|| "pod".into());
    let hostname: String = hostname.chars().take(63).collect();
    let s = SandboxSpec {
        uid: &uid,
        hostname: if host_network {
            &kl.settings.node_name
        } else {
            &hostname
        },
        host_network,
        host_ipc: spec.host_ipc.unwrap_or(false),
        node_ips: &kl.settings.node_ips,
        ports: &ports,
        share_pid: spec
            .share_process_namespace
            .unwrap_or(false)
            .then(|| kl.runtime.exe()),
    };
    sandbox::create(&kl.pod_dir(&uid), &s, cni.as_ref())
        .await
        .map_err(|e| e.to_string())
}

/// A container that could not be started: event Failed and a waiting reason.
fn fail_container(
    kl: &Kubelet,
    cref: &ObjectReference,
    st: &mut PodState,
    name: &str,
    reason: &str,
    msg: String,
) {
    kl.recorder
        .emit(cref, EventType::Warning, "Failed", &format!("Error: {msg}"));
    st.waiting
        .insert(name.to_string(), (reason.to_string(), msg));
}

fn new_container_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// Start (or restart) container `c` unless it is backing off.
async fn ensure_started(
    kl: &Arc<Kubelet>,
    pod: &Arc<Pod>,
    c: &Container,
    init: bool,
    st: &mut PodState,
    volumes: &crate::volumes::Volumes,
    policy: &str,
) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let key = crate::backoff::backoff_key(&uid, &c.name);
    let cref = container_ref(pod, &c.name, init);
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    // a container that failed to start backs off like one that crashed
    let failing = {
        let b = kl.backoff.lock().unwrap_or_else(|p| p.into_inner());
        b.in_backoff(&key, Instant::now())
    };
    if let (Some(left), Some((reason, _))) = (failing, st.waiting.get(&c.name).cloned()) {
        if reason == "RunContainerError" || reason == "CrashLoopBackOff" {
            st.waiting.insert(
                c.name.clone(),
                (
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off {}s restarting failed container={} pod={}_{}({})",
                        left.as_secs().max(1),
                        c.name,
                        pod_name,
                        ns,
                        uid
                    ),
                ),
            );
            return;
        }
    }
    // a container that ran before: record how it ended, then back off
    let mut restarting = false;
    if let Some(prev) = st.containers.get(&c.name).cloned() {
        if let ContainerState::Exited { started_at, exit } = kl.runtime.state(&prev.id) {
            restarting = true;
            let ran_for = chrono::DateTime::parse_from_rfc3339(&started_at)
                .ok()
                .and_then(|s| {
                    chrono::DateTime::parse_from_rfc3339(&exit.finished_at)
                        .ok()
                        .map(|f| f - s)
                })
                .and_then(|d| d.to_std().ok())
                .unwrap_or_default();
            let remaining = {
                let mut b = kl.backoff.lock().unwrap_or_else(|p| p.into_inner());
                b.reset_if_stable(&key, ran_for);
                b.in_backoff(&key, Instant::now())
            };
            if let Some(left) = remaining {
                st.waiting.insert(
                    c.name.clone(),
                    (
                        "CrashLoopBackOff".into(),
                        format!(
                            "back-off {}s restarting failed container={} pod={}_{}({})",
                            left.as_secs().max(1),
                            c.name,
                            pod_name,
                            ns,
                            uid
                        ),
                    ),
                );
                kl.recorder.emit(
                    &cref,
                    EventType::Warning,
                    "BackOff",
                    &format!(
                        "Back-off restarting failed container {} in pod {}_{}({})",
                        c.name, pod_name, ns, uid
                    ),
                );
                return;
            }
            let _ = policy;
        }
    }

    // the image
    let image = match crate::images::ensure_image(kl, pod, c, &cref).await {
        Ok(i) => i,
        Err((reason, message)) => {
            st.waiting.insert(c.name.clone(), (reason, message));
            return;
        }
    };

    // the environment
    let env = match crate::volumes::container_env(kl, pod, c, st, &image.config).await {
        Ok(e) => e,
        Err(msg) => {
            fail_container(kl, &cref, st, &c.name, "CreateContainerConfigError", msg);
            return;
        }
    };

    let id = new_container_id();
    let restart_count = match st.containers.get(&c.name) {
        Some(prev) if restarting => prev.restart_count + 1,
        Some(prev) => prev.restart_count,
        None => 0,
    };
    let qos = crate::qos::qos_class(pod);
    let cgroup = format!("{}/{}", pod_cgroup(kl, qos, &uid), id);
    let Some(sandbox) = st.sandbox.clone() else {
        return;
    };
    let mounts = match volumes.mounts_for(kl, pod, c, &id, &sandbox).await {
        Ok(m) => m,
        Err(msg) => {
            fail_container(kl, &cref, st, &c.name, "CreateContainerConfigError", msg);
            return;
        }
    };
    let namespaces = crate::spec::SandboxNamespaces {
        net: sandbox.netns.clone().unwrap_or_default(),
        ipc: sandbox.ipc.clone().unwrap_or_default(),
        uts: sandbox.uts.clone().unwrap_or_default(),
        pid: sandbox
            .pid_holder
            .map(|p| PathBuf::from(format!("/proc/{p}/ns/pid"))),
    };
    let rootfs = match kl.runtime.prepare(&id, &image.layers).await {
        Ok(r) => r,
        Err(e) => {
            let msg = e.to_string();
            fail_container(kl, &cref, st, &c.name, "CreateContainerError", msg);
            let _ = kl.runtime.remove(&id).await;
            return;
        }
    };
    let inputs = crate::spec::ContainerInputs {
        pod,
        container: c,
        image_config: &image.config,
        env: &env,
        rootfs: &rootfs,
        namespaces: &namespaces,
        mounts: &mounts,
        cgroups_path: &cgroup,
        tty: c.tty.unwrap_or(false),
    };
    let spec = match crate::spec::container_spec(&inputs) {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            fail_container(kl, &cref, st, &c.name, "CreateContainerConfigError", msg);
            let _ = kl.runtime.remove(&id).await;
            return;
        }
    };
    let log = log_dir(kl, pod)
        .join(&c.name)
        .join(format!("{restart_count}.log"));
    // the previous container goes once the new one is about to start
    if let Some(prev) = st.containers.get(&c.name).cloned() {
        if let ContainerState::Exited { started_at, exit } = kl.runtime.state(&prev.id) {
            if let Some(old) = prev.previous.as_ref() {
                let _ = kl.runtime.remove(old).await;
            }
            let entry = st.containers.entry(c.name.clone()).or_default();
            entry.previous = Some(prev.id.clone());
            entry.last = Some(Ended {
                container_id: prev.id.clone(),
                started_at,
                exit,
            });
        }
    }
    kl.recorder.emit(
        &cref,
        EventType::Normal,
        "Created",
        &format!("Created container: {}", c.name),
    );
    let launch = Launch {
        id: &id,
        spec: &spec,
        layers: &image.layers,
        log: &log,
        log_max_size: kl.settings.log_max_size,
        log_max_files: kl.settings.log_max_files,
    };
    let entry = st.containers.entry(c.name.clone()).or_default();
    entry.image = c.image.clone().unwrap_or_default();
    entry.image_id = image.repo_digest.clone();
    match kl.runtime.start(&launch).await {
        Ok(_) => {
            entry.id = id;
            entry.restart_count = restart_count;
            st.waiting.remove(&c.name);
            if restarting {
                let mut b = kl.backoff.lock().unwrap_or_else(|p| p.into_inner());
                b.next(&key, Instant::now());
            }
            kl.recorder.emit(
                &cref,
                EventType::Normal,
                "Started",
                &format!("Started container {}", c.name),
            );
            kl.prober.started(&uid, &c.name);
            if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
                let grace = grace_of(pod);
                if let Err(why) = crate::probes::run_hook(kl, pod, c, &entry.id, h, grace).await {
                    // as upstream: the container is killed, and restarted by policy
                    kl.recorder.emit(
                        &cref,
                        EventType::Warning,
                        "FailedPostStartHook",
                        &format!("PostStartHook failed: {why}"),
                    );
                    kl.runtime.stop(&entry.id, grace).await;
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::warn!(pod = %pod_name, container = %c.name, error = %msg, "starting a container");
            fail_container(kl, &cref, st, &c.name, "RunContainerError", msg);
            let _ = kl.runtime.remove(&id).await;
            let mut b = kl.backoff.lock().unwrap_or_else(|p| p.into_inner());
            b.next(&key, Instant::now());
        }
    }
    save_state(kl, &uid, st);
}

/// The pod's termination grace period (default 30 s).
fn grace_of(pod: &Pod) -> Duration {
    Duration::from_secs(
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64,
    )
}

/// Run the container's preStop hook within `grace`; what is left of the
/// grace period for SIGTERM (at least 2 s, as upstream).
async fn pre_stop(kl: &Kubelet, pod: &Pod, c: &Container, id: &str, grace: Duration) -> Duration {
    let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
        return grace;
    };
    let start = Instant::now();
    match tokio::time::timeout(grace, crate::probes::run_hook(kl, pod, c, id, h, grace)).await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => kl.recorder.emit(
            &container_ref(pod, &c.name, false),
            EventType::Warning,
            "FailedPreStopHook",
            &format!("PreStopHook failed: {why}"),
        ),
        Err(_) => kl.recorder.emit(
            &container_ref(pod, &c.name, false),
            EventType::Warning,
            "FailedPreStopHook",
            &format!(
                "PreStopHook failed: did not finish within the grace period of {}s",
                grace.as_secs()
            ),
        ),
    }
    grace
        .saturating_sub(start.elapsed())
        .max(Duration::from_secs(2))
}

fn terminated(id: &str, started_at: &str, exit: &ExitRecord) -> ContainerStateTerminated {
    let reason = if exit.oom_killed {
        "OOMKilled"
    } else if exit.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    ContainerStateTerminated {
        exit_code: exit.exit_code,
        signal: exit.signal,
        reason: Some(reason.into()),
        started_at: time(started_at),
        finished_at: time(&exit.finished_at),
        container_id: Some(format!("{}{id}", crate::CONTAINER_ID_PREFIX)),
        message: None,
    }
}

fn condition(
    typ: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    prev: Option<&PodStatus>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let before = prev
        .and_then(|p| p.conditions.as_ref())
        .and_then(|c| c.iter().find(|x| x.type_ == typ));
    let transition = match before {
        Some(b) if b.status == status => b.last_transition_time.clone(),
        _ => Some(Time(k8s_openapi::jiff::Timestamp::now())),
    };
    PodCondition {
        type_: typ.into(),
        status: status.into(),
        reason: if ok { None } else { reason.map(String::from) },
        message: if ok { None } else { message },
        last_transition_time: transition,
        last_probe_time: None,
        observed_generation: None,
    }
}

/// The pod's status from the runtime's view of its containers.
fn status_of(kl: &Kubelet, pod: &Pod, st: &PodState, initialized: bool) -> PodStatus {
    let prev = pod.status.as_ref();
    let Some(spec) = pod.spec.as_ref() else {
        return PodStatus::default();
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let policy = restart_policy(pod);
    let status_for = |c: &Container, init: bool| -> (ContainerStatus, Option<i32>) {
        let rec = st.containers.get(&c.name);
        let mut s = ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: rec.map(|r| r.image_id.clone()).unwrap_or_default(),
            restart_count: rec.map(|r| r.restart_count).unwrap_or(0),
            ready: false,
            started: Some(false),
            ..Default::default()
        };
        let mut exit_code = None;
        if let Some(last) = rec.and_then(|r| r.last.as_ref()) {
            s.last_state = Some(KState {
                terminated: Some(terminated(&last.container_id, &last.started_at, &last.exit)),
                ..Default::default()
            });
        }
        let waiting = st.waiting.get(&c.name);
        let state = rec.map(|r| kl.runtime.state(&r.id));
        match (state.clone(), waiting) {
            (Some(ContainerState::Running { started_at, .. }), _) => {
                let id = rec.map(|r| r.id.clone()).unwrap_or_default();
                s.container_id = Some(format!("{}{id}", crate::CONTAINER_ID_PREFIX));
                s.started = Some(kl.prober.is_started(&uid, c));
                s.ready = !init && kl.prober.is_ready(&uid, c);
                s.state = Some(KState {
                    running: Some(ContainerStateRunning {
                        started_at: time(&started_at),
                    }),
                    ..Default::default()
                });
            }
            (_, Some((reason, message))) => {
                if let Some(r) = rec.filter(|r| !r.id.is_empty()) {
                    s.container_id = Some(format!("{}{}", crate::CONTAINER_ID_PREFIX, r.id));
                }
                if let Some(ContainerState::Exited { started_at, exit }) = state {
                    // backing off: what ended is the last state
                    if let Some(r) = rec {
                        s.last_state = Some(KState {
                            terminated: Some(terminated(&r.id, &started_at, &exit)),
                            ..Default::default()
                        });
                    }
                }
                s.state = Some(KState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.clone()),
                        message: Some(message.clone()).filter(|m| !m.is_empty()),
                    }),
                    ..Default::default()
                });
            }
            (Some(ContainerState::Exited { started_at, exit }), None) => {
                let id = rec.map(|r| r.id.clone()).unwrap_or_default();
                s.container_id = Some(format!("{}{id}", crate::CONTAINER_ID_PREFIX));
                exit_code = Some(exit.exit_code);
                s.state = Some(KState {
                    terminated: Some(terminated(&id, &started_at, &exit)),
                    ..Default::default()
                });
            }
            _ => {
                s.state = Some(KState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(if init || initialized {
                            "ContainerCreating".into()
                        } else {
                            "PodInitializing".into()
                        }),
                        message: None,
                    }),
                    ..Default::default()
                });
            }
        }
        (s, exit_code)
    };
    let init_statuses: Vec<ContainerStatus> = spec
        .init_containers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| status_for(c, true).0)
        .collect();
    let mut statuses = Vec::new();
    let mut exits = Vec::new();
    for c in &spec.containers {
        let (s, code) = status_for(c, false);
        exits.push(code);
        statuses.push(s);
    }
    let init_failed = policy == "Never"
        && init_statuses.iter().any(|s| {
            s.state
                .as_ref()
                .and_then(|x| x.terminated.as_ref())
                .is_some_and(|t| t.exit_code != 0)
        });
    let all_running_or_done = statuses.iter().all(|s| {
        s.state
            .as_ref()
            .is_some_and(|x| x.running.is_some() || x.terminated.is_some())
    });
    let any_running = statuses
        .iter()
        .any(|s| s.state.as_ref().is_some_and(|x| x.running.is_some()));
    let all_exited = exits.iter().all(|e| e.is_some());
    let phase = if init_failed {
        "Failed"
    } else if !initialized {
        "Pending"
    } else if all_exited && policy != "Always" {
        let failed = exits.iter().any(|e| e.is_some_and(|c| c != 0));
        if failed && policy == "Never" {
            "Failed"
        } else if !failed {
            "Succeeded"
        } else {
            "Running"
        }
    } else if any_running || (all_running_or_done && statuses.iter().any(|s| s.restart_count > 0)) {
        "Running"
    } else if statuses.iter().any(|s| s.restart_count > 0) {
        "Running"
    } else {
        "Pending"
    };
    let containers_ready = statuses.iter().all(|s| s.ready);
    let not_ready: Vec<String> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.clone())
        .collect();
    let not_ready_msg = format!("containers with unready status: [{}]", not_ready.join(" "));
    let gates_ok = spec
        .readiness_gates
        .as_deref()
        .unwrap_or_default()
        .iter()
        .all(|g| {
            prev.and_then(|p| p.conditions.as_ref())
                .and_then(|c| c.iter().find(|x| x.type_ == g.condition_type))
                .is_some_and(|x| x.status == "True")
        });
    let sandbox_ready = st.sandbox.is_some();
    let mut conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, None, prev),
        condition(
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                spec.init_containers
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .zip(&init_statuses)
                    .filter(|(_, s)| !s
                        .state
                        .as_ref()
                        .and_then(|x| x.terminated.as_ref())
                        .is_some_and(|t| t.exit_code == 0))
                    .map(|(c, _)| c.name.clone())
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
            prev,
        ),
        condition(
            "Ready",
            containers_ready && gates_ok && phase == "Running",
            Some(if phase == "Succeeded" || phase == "Failed" {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
            Some(not_ready_msg.clone()),
            prev,
        ),
        condition(
            "ContainersReady",
            containers_ready && phase == "Running",
            Some(if phase == "Succeeded" || phase == "Failed" {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
            Some(not_ready_msg),
            prev,
        ),
    ];
    if let Some(sched) = prev
        .and_then(|p| p.conditions.as_ref())
        .and_then(|c| c.iter().find(|x| x.type_ == "PodScheduled"))
    {
        conditions.push(sched.clone());
    } else if static_pods::is_static(pod) {
        // no scheduler saw it: the kubelet says so, as upstream's does
        conditions.push(condition("PodScheduled", true, None, None, prev));
    }
    // conditions other components own (readiness gates, DisruptionTarget) stay
    if let Some(others) = prev.and_then(|p| p.conditions.as_ref()) {
        for o in others {
            if !conditions.iter().any(|c| c.type_ == o.type_) {
                conditions.push(o.clone());
            }
        }
    }
    let ips = st
        .sandbox
        .as_ref()
        .map(|s| s.ips.clone())
        .unwrap_or_default();
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: kl.settings.node_ips.first().cloned(),
        host_ips: Some(
            kl.settings
                .node_ips
                .iter()
                .map(|ip| k8s_openapi::api::core::v1::HostIP { ip: ip.clone() })
                .collect(),
        ),
        pod_ip: ips.first().cloned(),
        pod_ips: (!ips.is_empty()).then(|| ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        start_time: prev
            .and_then(|p| p.start_time.clone())
            .or_else(|| Some(Time(k8s_openapi::jiff::Timestamp::now()))),
        qos_class: Some(crate::qos::qos_class(pod).as_str().into()),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_decides() {
        let ok = ExitRecord {
            exit_code: 0,
            signal: None,
            finished_at: "2026-01-01T00:00:00Z".into(),
            oom_killed: false,
        };
        let bad = ExitRecord {
            exit_code: 2,
            ..ok.clone()
        };
        assert!(should_restart("Always", &ok));
        assert!(!should_restart("OnFailure", &ok));
        assert!(should_restart("OnFailure", &bad));
        assert!(!should_restart("Never", &bad));
    }
}
