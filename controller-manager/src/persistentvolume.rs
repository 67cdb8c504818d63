//! persistentvolume-binder-controller (alias `persistentvolume-binder`):
//! binds PersistentVolumeClaims to pre-created PersistentVolumes and reclaims
//! volumes whose claim went away, as upstream's
//! pkg/controller/volume/persistentvolume does for static provisioning.
//!
//! The binding is the two-way pointer of upstream: PV.spec.claimRef first
//! (then the PV's status phase Bound), PVC.spec.volumeName with the
//! `pv.kubernetes.io/bind-completed` (and, when the controller chose the
//! volume, `pv.kubernetes.io/bound-by-controller`) annotations second (then
//! the PVC's status: phase Bound, capacity and accessModes of the volume).
//! Each step is skipped when already done, so a sync that finds a half-done
//! binding (a claimRef without the claim's volumeName, a volumeName without
//! the annotation, statuses behind) finishes it.
//!
//! A claim without spec.volumeName gets the best Available volume: of the
//! volumes whose access modes include all of the claim's (those with the
//! fewest modes first, as upstream's access-mode index), one pre-bound to
//! this claim by claimRef if any, else the smallest with enough capacity,
//! the same storage class (unset counts as ""), the same volumeMode
//! (Filesystem when unset) and labels matching the claim's selector. A claim
//! naming its volume is bound to it when it fits. A claim that nothing fits
//! stays Pending: with no class, a FailedBinding event; with a class in
//! WaitForFirstConsumer mode, a WaitForFirstConsumer (or WaitForPodScheduled)
//! event, since upstream binds those at scheduling; with another class, the
//! claim is handed to the class's external provisioner by annotation
//! (in-tree `kubernetes.io/` provisioners do not exist here: a
//! ProvisioningFailed event). Those events are written once per outcome of a
//! claim, not at every resync.
//!
//! Volumes without a claim are Available. A volume whose claim is gone is
//! Released, then its persistentVolumeReclaimPolicy applies: Retain keeps it
//! Released; Delete deletes the PV object (only the object: nothing removes
//! the hostPath or local directory's data, there being no volume plugin to do
//! it); Recycle, deprecated upstream, is treated as Retain.
//!
//! One queue and one worker handle claims (`pvc:NS/NAME`) and volumes
//! (`pv:NAME`), so no two syncs race for one volume; objects this controller
//! wrote are remembered until the informers catch up, so the next sync does
//! not act on an older version. Every `--pvclaimbinder-sync-period` every
//! claim and volume is synced again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use common::events::{EventType, Recorder};
use common::informers::Change;
use common::selectors::label_selector_matches;
use common::workqueue::WorkQueue;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;

use crate::{key_of, queue, run_workers, split_key, Ctx, Started, SyncResult};

/// On claims: binding has been done once (its value does not matter).
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// On volumes and claims: the controller (not the user) made the binding.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// On volumes: the plugin that provisioned it dynamically.
const ANN_DYNAMICALLY_PROVISIONED: &str = "pv.kubernetes.io/provisioned-by";
/// The storage class before spec.storageClassName; still honoured first.
const ANN_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// On claims: the node the scheduler chose for a WaitForFirstConsumer claim.
const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// On claims: the external provisioner asked to provision it.
const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// On volumes: handled by a CSI driver through migration; stand down.
const ANN_MIGRATED_TO: &str = "pv.kubernetes.io/migrated-to";
/// The event source upstream's controller records with.
const COMPONENT: &str = "persistentvolume-controller";

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

// ---------------------------------------------------------------------------
// matching (pure)

/// A quantity in nano-units ("1Ki" is 1024e9), exact for storage sizes.
pub fn quantity_nanos(q: &str) -> Option<i128> {
    quota::parse(q)
}

/// The storage quantity of a resource list (zero when absent or unparseable,
/// as a Go zero Quantity).
fn storage(list: Option<&BTreeMap<String, Quantity>>) -> i128 {
    list.and_then(|l| l.get("storage"))
        .and_then(|q| quantity_nanos(&q.0))
        .unwrap_or(0)
}

fn requested(claim: &PersistentVolumeClaim) -> i128 {
    storage(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
}

fn capacity(volume: &PersistentVolume) -> i128 {
    storage(volume.spec.as_ref().and_then(|s| s.capacity.as_ref()))
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn has_annotation(meta: &ObjectMeta, key: &str) -> bool {
    annotation(meta, key).is_some()
}

fn set_annotation(meta: &mut ObjectMeta, key: &str, value: &str) {
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(key.to_string(), value.to_string());
}

/// The claim's storage class: the beta annotation, else spec.storageClassName,
/// else "" (upstream's GetPersistentVolumeClaimClass).
pub fn claim_class(claim: &PersistentVolumeClaim) -> String {
    annotation(&claim.metadata, ANN_STORAGE_CLASS)
        .map(str::to_string)
        .or_else(|| claim.spec.as_ref()?.storage_class_name.clone())
        .unwrap_or_default()
}

/// The volume's storage class, the same way.
pub fn volume_class(volume: &PersistentVolume) -> String {
    annotation(&volume.metadata, ANN_STORAGE_CLASS)
        .map(str::to_string)
        .or_else(|| volume.spec.as_ref()?.storage_class_name.clone())
        .unwrap_or_default()
}

fn claim_volume_name(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or_default()
}

fn claim_modes(claim: &PersistentVolumeClaim) -> BTreeSet<&str> {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_ref())
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

fn volume_modes(volume: &PersistentVolume) -> BTreeSet<&str> {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_ref())
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

/// Do the volume's access modes include all of the claim's?
pub fn access_modes_fit(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    claim_modes(claim).is_subset(&volume_modes(volume))
}

/// Do the volumeModes differ (unset is Filesystem on both sides)?
pub fn volume_mode_mismatch(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let c = claim.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    let v = volume.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    c.unwrap_or("Filesystem") != v.unwrap_or("Filesystem")
}

fn attributes_class_mismatch(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let c = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_attributes_class_name.as_deref());
    let v = volume
        .spec
        .as_ref()
        .and_then(|s| s.volume_attributes_class_name.as_deref());
    c.unwrap_or_default() != v.unwrap_or_default()
}

/// Is the volume pre-bound or bound to this claim: claimRef with the claim's
/// namespace and name, and its uid when the claimRef has one?
pub fn is_volume_bound_to_claim(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(r) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    if r.name.as_deref() != claim.metadata.name.as_deref()
        || r.namespace.as_deref().unwrap_or_default()
            != claim.metadata.namespace.as_deref().unwrap_or_default()
    {
        return false;
    }
    let uid = r.uid.as_deref().unwrap_or_default();
    uid.is_empty() || Some(uid) == claim.metadata.uid.as_deref()
}

fn volume_phase(volume: &PersistentVolume) -> &str {
    volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// Upstream's findMatchingVolume over volumes of one access-mode set: a
/// volume pre-bound to the claim wins; else the smallest Available one that
/// fits. With `delay_binding` only pre-bound volumes are returned (the rest
/// is left to scheduling).
fn find_matching_volume<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &[&'a Arc<PersistentVolume>],
    delay_binding: bool,
) -> Option<&'a Arc<PersistentVolume>> {
    let want = requested(claim);
    let class = claim_class(claim);
    let selector = claim.spec.as_ref().and_then(|s| s.selector.as_ref());
    let empty = BTreeMap::new();
    let mut smallest: Option<(&'a Arc<PersistentVolume>, i128)> = None;
    for &volume in volumes {
        if volume
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some()
            && !is_volume_bound_to_claim(volume, claim)
        {
            continue;
        }
        let size = capacity(volume);
        if size < want
            || volume_mode_mismatch(claim, volume)
            || attributes_class_mismatch(claim, volume)
            || volume.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        if is_volume_bound_to_claim(volume, claim) {
            return Some(volume);
        }
        if delay_binding {
            continue;
        }
        if volume_phase(volume) != "Available" {
            // volumes that fit become Available soon; binding one now would
            // most likely fail on a conflict
            continue;
        }
        if selector.is_some_and(|s| {
            !label_selector_matches(s, volume.metadata.labels.as_ref().unwrap_or(&empty))
        }) {
            continue;
        }
        if volume_class(volume) != class {
            continue;
        }
        if smallest.is_none_or(|(_, s)| s > size) {
            smallest = Some((volume, size));
        }
    }
    smallest.map(|(v, _)| v)
}

/// The best volume for a claim without spec.volumeName (upstream's
/// findBestMatchForClaim): the volumes are grouped by their set of access
/// modes; only sets that include all of the claim's modes are searched,
/// those with the fewest modes first, and the first group with a match wins.
pub fn find_best_match(
    claim: &PersistentVolumeClaim,
    volumes: &[Arc<PersistentVolume>],
    delay_binding: bool,
) -> Option<Arc<PersistentVolume>> {
    let wanted = claim_modes(claim);
    let mut groups: BTreeMap<(usize, Vec<&str>), Vec<&Arc<PersistentVolume>>> = BTreeMap::new();
    for v in volumes {
        let modes = volume_modes(v);
        if wanted.is_subset(&modes) {
            groups
                .entry((modes.len(), modes.into_iter().collect()))
                .or_default()
                .push(v);
        }
    }
    groups
        .values()
        .find_map(|vs| find_matching_volume(claim, vs, delay_binding))
        .cloned()
}

/// Can a claim that names this unclaimed volume be bound to it (upstream's
/// checkVolumeSatisfyClaim)? The error is upstream's wording.
pub fn check_volume_satisfy_claim(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<(), String> {
    let name = volume.metadata.name.as_deref().unwrap_or_default();
    if volume.metadata.deletion_timestamp.is_some() {
        return Err(format!("the volume is marked for deletion {name:?}"));
    }
    if capacity(volume) < requested(claim) {
        return Err("requested PV is too small".into());
    }
    if volume_class(volume) != claim_class(claim) {
        return Err("storageClassName does not match".into());
    }
    if volume_mode_mismatch(claim, volume) {
        return Err("incompatible volumeMode".into());
    }
    if !access_modes_fit(claim, volume) {
        return Err("incompatible accessMode".into());
    }
    Ok(())
}

/// The volume with its claimRef pointing at `claim` and, unless it was
/// already (pre-)bound to it, the bound-by-controller annotation; `None` when
/// nothing changes (upstream's GetBindVolumeToClaim).
pub fn volume_bound_to(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Option<PersistentVolume> {
    let by_controller = !is_volume_bound_to_claim(volume, claim);
    let mut v = volume.clone();
    let mut dirty = false;
    let spec = v.spec.get_or_insert_with(Default::default);
    let same = spec.claim_ref.as_ref().is_some_and(|r| {
        r.name == claim.metadata.name
            && r.namespace.as_deref().unwrap_or_default()
                == claim.metadata.namespace.as_deref().unwrap_or_default()
            && r.uid.as_deref().unwrap_or_default()
                == claim.metadata.uid.as_deref().unwrap_or_default()
    });
    if !same {
        spec.claim_ref = Some(crate::object_ref(claim));
        dirty = true;
    }
    if by_controller && !has_annotation(&v.metadata, ANN_BOUND_BY_CONTROLLER) {
        set_annotation(&mut v.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
        dirty = true;
    }
    dirty.then_some(v)
}

/// The claim with spec.volumeName (bound-by-controller when the controller
/// sets it) and bind-completed; `None` when nothing changes.
pub fn claim_bound_to(
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
) -> Option<PersistentVolumeClaim> {
    let name = volume.metadata.name.as_deref().unwrap_or_default();
    let mut c = claim.clone();
    let mut dirty = false;
    if claim_volume_name(claim) != name {
        c.spec.get_or_insert_with(Default::default).volume_name = Some(name.to_string());
        if !has_annotation(&c.metadata, ANN_BOUND_BY_CONTROLLER) {
            set_annotation(&mut c.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
        }
        dirty = true;
    }
    if !has_annotation(&c.metadata, ANN_BIND_COMPLETED) {
        set_annotation(&mut c.metadata, ANN_BIND_COMPLETED, "yes");
        dirty = true;
    }
    dirty.then_some(c)
}

// ---------------------------------------------------------------------------
// the controller

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn resource_version(meta: &ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Versions this controller wrote, kept until the informer has them (or newer).
struct Written<K>(Mutex<HashMap<String, Arc<K>>>);

impl<K: Resource<DynamicType = ()>> Written<K> {
    fn new() -> Self {
        Written(Mutex::new(HashMap::new()))
    }

    fn store(&self, key: String, obj: K) -> Arc<K> {
        let obj = Arc::new(obj);
        let mut m = lock(&self.0);
        let newer = m.get(&key).is_none_or(|o| {
            o.meta().uid != obj.meta().uid
                || resource_version(o.meta()) <= resource_version(obj.meta())
        });
        if newer {
            m.insert(key, obj.clone());
        }
        obj
    }

    fn forget(&self, key: &str) {
        lock(&self.0).remove(key);
    }

    /// The newer of the informer's object and the one written here; nothing
    /// when the informer no longer has it (this controller never creates, so
    /// that means deleted).
    fn newest(&self, key: &str, cached: Option<Arc<K>>) -> Option<Arc<K>> {
        let mut m = lock(&self.0);
        match (cached, m.get(key).cloned()) {
            (Some(c), Some(w)) => {
                if c.meta().uid != w.meta().uid
                    || resource_version(c.meta()) >= resource_version(w.meta())
                {
                    m.remove(key);
                    Some(c)
                } else {
                    Some(w)
                }
            }
            (Some(c), None) => Some(c),
            (None, Some(_)) => {
                m.remove(key);
                None
            }
            (None, None) => None,
        }
    }
}

struct Controller {
    client: kube::Client,
    volumes: Store<PersistentVolume>,
    claims: Store<PersistentVolumeClaim>,
    /// none while the apiserver serves no storage.k8s.io/v1 StorageClasses
    /// (then no class exists)
    classes: Mutex<Option<Store<StorageClass>>>,
    pods: Store<Pod>,
    recorder: Recorder,
    queue: Arc<WorkQueue<String>>,
    written_volumes: Written<PersistentVolume>,
    written_claims: Written<PersistentVolumeClaim>,
    /// object key -> (uid, reason, message) last reported about a state that
    /// repeats at every sync, so it is reported once
    reported: Mutex<HashMap<String, (String, String, String)>>,
}

fn claim_key(ns: &str, name: &str) -> String {
    format!("pvc:{ns}/{name}")
}

fn volume_key(name: &str) -> String {
    format!("pv:{name}")
}

async fn run(ctx: Ctx) {
    let volumes = ctx.informers.get::<PersistentVolume>();
    let claims = ctx.informers.get::<PersistentVolumeClaim>();
    let pods = ctx.informers.get::<Pod>();
    let (mut pv_c, mut pvc_c) = (volumes.subscribe(), claims.subscribe());
    volumes.wait_synced().await;
    claims.wait_synced().await;
    pods.wait_synced().await;
    // classes decide which claims wait for their first consumer: have them
    // before the first sync, when the apiserver serves them
    let classes = match storage_classes_served(&ctx.client).await {
        Ok(true) => {
            let i = ctx.informers.get::<StorageClass>();
            i.wait_synced().await;
            Some(i.store())
        }
        _ => None,
    };
    let look_for_classes = classes.is_none();
    let q = queue();
    let c = Arc::new(Controller {
        client: ctx.client.clone(),
        volumes: volumes.store(),
        claims: claims.store(),
        classes: Mutex::new(classes),
        pods: pods.store(),
        recorder: Recorder::new(ctx.client.clone(), COMPONENT, None),
        queue: q.clone(),
        written_volumes: Written::new(),
        written_claims: Written::new(),
        reported: Mutex::new(HashMap::new()),
    });
    c.enqueue_all();
    let classes_later = look_for_classes.then(|| {
        let (c, informers) = (c.clone(), ctx.informers.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                if let Ok(true) = storage_classes_served(&c.client).await {
                    let i = informers.get::<StorageClass>();
                    i.wait_synced().await;
                    *lock(&c.classes) = Some(i.store());
                    c.enqueue_all();
                    return;
                }
            }
        })
    });
    let feeder = {
        let c = c.clone();
        let period = ctx.settings.pvclaimbinder_sync_period;
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            let mut resync = tokio::time::interval(period.max(std::time::Duration::from_secs(1)));
            resync.tick().await;
            loop {
                tokio::select! {
                    ch = pv_c.recv() => match ch {
                        Ok(Change::Applied(v)) => c.volume_changed(&v),
                        Ok(Change::Deleted(v)) => c.volume_deleted(&v),
                        Err(RecvError::Closed) => return,
                        Err(RecvError::Lagged(_)) => c.enqueue_all(),
                    },
                    ch = pvc_c.recv() => match ch {
                        Ok(Change::Applied(p)) => c.queue.add(claim_key_of(&p)),
                        Ok(Change::Deleted(p)) => c.claim_deleted(&p),
                        Err(RecvError::Closed) => return,
                        Err(RecvError::Lagged(_)) => c.enqueue_all(),
                    },
                    _ = resync.tick() => c.enqueue_all(),
                }
            }
        })
    };
    // one worker: two syncs at once could bind one volume to two claims (the
    // apiserver's conflicts would sort it out, slower), as upstream keeps
    // one goroutine per queue
    run_workers("persistentvolume-binder", q, 1, ctx.stop.clone(), {
        let c = c.clone();
        move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        }
    })
    .await;
    feeder.abort();
    if let Some(t) = classes_later {
        t.abort();
    }
}

/// Does the apiserver serve storage.k8s.io/v1 StorageClasses?
async fn storage_classes_served(client: &kube::Client) -> anyhow::Result<bool> {
    match client.list_api_group_resources("storage.k8s.io/v1").await {
        Ok(l) => Ok(l.resources.iter().any(|r| r.name == "storageclasses")),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn claim_key_of(claim: &PersistentVolumeClaim) -> String {
    format!("pvc:{}", key_of(&claim.metadata))
}

impl Controller {
    fn enqueue_all(&self) {
        for v in self.volumes.state() {
            self.queue
                .add(volume_key(v.metadata.name.as_deref().unwrap_or_default()));
        }
        for p in self.claims.state() {
            self.queue.add(claim_key_of(&p));
        }
    }

    fn volume_changed(&self, v: &PersistentVolume) {
        self.queue
            .add(volume_key(v.metadata.name.as_deref().unwrap_or_default()));
        // a volume that may be free for a claim: try the waiting claims now
        // rather than at the next resync
        match v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            None => {
                for p in self.claims.state() {
                    if !has_annotation(&p.metadata, ANN_BIND_COMPLETED) {
                        self.queue.add(claim_key_of(&p));
                    }
                }
            }
            Some(r) if r.uid.as_deref().unwrap_or_default().is_empty() => {
                self.queue.add(claim_key(
                    r.namespace.as_deref().unwrap_or_default(),
                    r.name.as_deref().unwrap_or_default(),
                ));
            }
            Some(_) => {}
        }
    }

    fn volume_deleted(&self, v: &PersistentVolume) {
        let name = v.metadata.name.as_deref().unwrap_or_default();
        self.written_volumes.forget(name);
        self.queue.add(volume_key(name));
        if let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            self.queue.add(claim_key(
                r.namespace.as_deref().unwrap_or_default(),
                r.name.as_deref().unwrap_or_default(),
            ));
        }
    }

    fn claim_deleted(&self, p: &PersistentVolumeClaim) {
        self.written_claims.forget(&key_of(&p.metadata));
        self.queue.add(claim_key_of(p));
        let volume = claim_volume_name(p);
        if !volume.is_empty() {
            self.queue.add(volume_key(volume));
        }
    }

    fn class(&self, name: &str) -> Option<Arc<StorageClass>> {
        lock(&self.classes).as_ref()?.get(&ObjectRef::new(name))
    }

    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.written_volumes
            .newest(name, self.volumes.get(&ObjectRef::new(name)))
    }

    fn claim(&self, ns: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.written_claims.newest(
            &format!("{ns}/{name}"),
            self.claims.get(&ObjectRef::new(name).within(ns)),
        )
    }

    fn all_volumes(&self) -> Vec<Arc<PersistentVolume>> {
        self.volumes
            .state()
            .into_iter()
            .filter_map(|v| {
                let name = v.metadata.name.clone().unwrap_or_default();
                self.written_volumes.newest(&name, Some(v))
            })
            .collect()
    }

    fn store_volume(&self, v: PersistentVolume) -> Arc<PersistentVolume> {
        let name = v.metadata.name.clone().unwrap_or_default();
        self.written_volumes.store(name, v)
    }

    fn store_claim(&self, c: PersistentVolumeClaim) -> Arc<PersistentVolumeClaim> {
        self.written_claims.store(key_of(&c.metadata), c)
    }

    /// Is this (uid, reason, message) new for the object at `key`? Remembers it.
    fn first_time(&self, key: String, uid: &str, reason: &str, message: &str) -> bool {
        let entry = (uid.to_string(), reason.to_string(), message.to_string());
        let mut r = lock(&self.reported);
        if r.get(&key) == Some(&entry) {
            return false;
        }
        r.insert(key, entry);
        true
    }

    /// An event about a state a claim stays in across syncs: written when the
    /// state is new for the claim, not at every resync.
    fn claim_event_once(
        &self,
        claim: &PersistentVolumeClaim,
        typ: EventType,
        reason: &str,
        message: &str,
    ) {
        let uid = claim.metadata.uid.as_deref().unwrap_or_default();
        if self.first_time(claim_key_of(claim), uid, reason, message) {
            self.recorder
                .emit(&crate::object_ref(claim), typ, reason, message);
        }
    }

    fn volume_event_once(
        &self,
        volume: &PersistentVolume,
        typ: EventType,
        reason: &str,
        message: &str,
    ) {
        let uid = volume.metadata.uid.as_deref().unwrap_or_default();
        let key = volume_key(volume.metadata.name.as_deref().unwrap_or_default());
        if self.first_time(key, uid, reason, message) {
            self.recorder
                .emit(&crate::object_ref(volume), typ, reason, message);
        }
    }

    async fn sync(&self, key: &str) -> SyncResult {
        if let Some(k) = key.strip_prefix("pvc:") {
            let (ns, name) = split_key(k);
            match self.claim(ns, name) {
                None => {
                    lock(&self.reported).remove(key);
                }
                Some(claim) => {
                    if has_annotation(&claim.metadata, ANN_BIND_COMPLETED) {
                        self.sync_bound_claim(&claim).await?;
                    } else {
                        self.sync_unbound_claim(&claim).await?;
                    }
                }
            }
        } else if let Some(name) = key.strip_prefix("pv:") {
            match self.volume(name) {
                None => {
                    lock(&self.reported).remove(key);
                }
                Some(volume) => self.sync_volume(&volume).await?,
            }
        }
        Ok(None)
    }

    /// Is the claim's class in WaitForFirstConsumer mode?
    fn is_delay_binding_mode(&self, claim: &PersistentVolumeClaim) -> anyhow::Result<bool> {
        let class = claim_class(claim);
        if class.is_empty() {
            return Ok(false);
        }
        let Some(sc) = self.class(&class) else {
            return Ok(false);
        };
        match sc.volume_binding_mode.as_deref() {
            None => anyhow::bail!("VolumeBindingMode not set for StorageClass {class:?}"),
            Some(m) => Ok(m == "WaitForFirstConsumer"),
        }
    }

    async fn sync_unbound_claim(&self, claim: &Arc<PersistentVolumeClaim>) -> anyhow::Result<()> {
        let wanted = claim_volume_name(claim).to_string();
        if wanted.is_empty() {
            // the user did not care which volume they get
            let delay = self.is_delay_binding_mode(claim)?;
            let Some(volume) = find_best_match(claim, &self.all_volumes(), delay) else {
                // nothing fits (upstream would first assign the default class
                // to a claim without one: the apiserver here refuses that update)
                if delay && !has_annotation(&claim.metadata, ANN_SELECTED_NODE) {
                    // binding waits for scheduling, which upstream's
                    // scheduler does (this one does not bind volumes)
                    self.event_for_unbound_delay_binding_claim(claim);
                } else if !claim_class(claim).is_empty() {
                    return self.provision_claim(claim).await;
                } else {
                    self.claim_event_once(
                        claim,
                        EventType::Normal,
                        "FailedBinding",
                        "no persistent volumes available for this claim and no storage class is set",
                    );
                }
                self.update_claim_status(claim, "Pending", None).await?;
                return Ok(());
            };
            return self.bind(&volume, claim).await;
        }
        // the user asked for a specific volume
        let Some(volume) = self.volume(&wanted) else {
            // not there (yet): Pending, retried at resync
            self.update_claim_status(claim, "Pending", None).await?;
            return Ok(());
        };
        let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        if claim_ref.is_none() {
            if let Err(e) = check_volume_satisfy_claim(&volume, claim) {
                self.claim_event_once(
                    claim,
                    EventType::Warning,
                    "VolumeMismatch",
                    &format!("Cannot bind to requested volume {wanted:?}: {e}"),
                );
                self.update_claim_status(claim, "Pending", None).await?;
                return Ok(());
            }
            return self.bind(&volume, claim).await;
        }
        if is_volume_bound_to_claim(&volume, claim) {
            // claimed by this claim: finish the binding (adds the claim's uid)
            return self.bind(&volume, claim).await;
        }
        let msg = format!("volume {wanted:?} already bound to a different claim.");
        self.claim_event_once(claim, EventType::Warning, "FailedBinding", &msg);
        if !has_annotation(&claim.metadata, ANN_BOUND_BY_CONTROLLER) {
            // bound to another claim by its user: wait
            self.update_claim_status(claim, "Pending", None).await?;
            return Ok(());
        }
        // someone removed bind-completed from a claim this controller bound
        anyhow::bail!(
            "invalid binding of claim {:?} to volume {wanted:?}: volume already claimed by {:?}",
            key_of(&claim.metadata),
            claim_ref.map(|r| format!(
                "{}/{}",
                r.namespace.as_deref().unwrap_or_default(),
                r.name.as_deref().unwrap_or_default()
            ))
        )
    }

    fn event_for_unbound_delay_binding_claim(&self, claim: &PersistentVolumeClaim) {
        let ns = claim.metadata.namespace.as_deref().unwrap_or_default();
        let name = claim.metadata.name.as_deref().unwrap_or_default();
        let mut waiting: Vec<String> = self
            .pods
            .state()
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .filter(|p| !pod_terminated(p))
            .filter(|p| {
                p.spec
                    .as_ref()
                    .is_some_and(|s| s.node_name.as_deref().unwrap_or_default().is_empty())
            })
            .filter(|p| pod_uses_claim(p, name))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        waiting.sort();
        let (reason, message) = match waiting.len() {
            0 => (
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding".to_string(),
            ),
            1 => (
                "WaitForPodScheduled",
                format!("waiting for pod {} to be scheduled", waiting[0]),
            ),
            _ => (
                "WaitForPodScheduled",
                format!("waiting for pods {} to be scheduled", waiting.join(",")),
            ),
        };
        self.claim_event_once(claim, EventType::Normal, reason, &message);
    }

    /// Hand the claim to its class's provisioner: external ones by the
    /// storage-provisioner annotation, as upstream; there are no in-tree
    /// (`kubernetes.io/`) provisioners here.
    async fn provision_claim(&self, claim: &Arc<PersistentVolumeClaim>) -> anyhow::Result<()> {
        let class = claim_class(claim);
        let Some(sc) = self.class(&class) else {
            self.claim_event_once(
                claim,
                EventType::Warning,
                "ProvisioningFailed",
                &format!("storageclass.storage.k8s.io {class:?} not found"),
            );
            return Ok(());
        };
        let provisioner = sc.provisioner.as_str();
        if provisioner.starts_with("kubernetes.io/") {
            self.claim_event_once(
                claim,
                EventType::Warning,
                "ProvisioningFailed",
                &format!("no volume plugin matched name: {provisioner}"),
            );
            return Ok(());
        }
        let mut claim = claim.clone();
        if annotation(&claim.metadata, ANN_STORAGE_PROVISIONER) != Some(provisioner) {
            let mut c = (*claim).clone();
            set_annotation(&mut c.metadata, ANN_BETA_STORAGE_PROVISIONER, provisioner);
            set_annotation(&mut c.metadata, ANN_STORAGE_PROVISIONER, provisioner);
            let api: Api<PersistentVolumeClaim> = Api::namespaced(
                self.client.clone(),
                c.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let name = c.metadata.name.clone().unwrap_or_default();
            match api.replace(&name, &PostParams::default(), &c).await {
                Ok(new) => claim = self.store_claim(new),
                Err(e) => {
                    self.claim_event_once(
                        &claim,
                        EventType::Warning,
                        "ProvisioningFailed",
                        &format!("Error saving claim: {e}"),
                    );
                    return Err(e.into());
                }
            }
        }
        self.claim_event_once(
            &claim,
            EventType::Normal,
            "ExternalProvisioning",
            &format!(
                "Waiting for a volume to be created either by the external provisioner '{provisioner}' \
                 or manually by the system administrator. If volume creation is delayed, please verify \
                 that the provisioner is running and correctly registered."
            ),
        );
        Ok(())
    }

    async fn sync_bound_claim(&self, claim: &Arc<PersistentVolumeClaim>) -> anyhow::Result<()> {
        let wanted = claim_volume_name(claim).to_string();
        if wanted.is_empty() {
            return self
                .update_claim_status_with_event(
                    claim,
                    "Lost",
                    EventType::Warning,
                    "ClaimLost",
                    "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
                )
                .await;
        }
        let Some(volume) = self.volume(&wanted) else {
            return self
                .update_claim_status_with_event(
                    claim,
                    "Lost",
                    EventType::Warning,
                    "ClaimLost",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                )
                .await;
        };
        match volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            // the volume came unbound, or its update has not been seen yet:
            // bind it again
            None => self.bind(&volume, claim).await,
            // all is well (bind fixes statuses that lag)
            Some(r) if r.uid == claim.metadata.uid => self.bind(&volume, claim).await,
            Some(_) => {
                self.update_claim_status_with_event(
                    claim,
                    "Lost",
                    EventType::Warning,
                    "ClaimMisbound",
                    "Two claims are bound to the same volume, this one is bound incorrectly",
                )
                .await
            }
        }
    }

    async fn sync_volume(&self, volume: &Arc<PersistentVolume>) -> anyhow::Result<()> {
        let Some(r) = volume.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
            // unused
            self.update_volume_phase(volume, "Available", "").await?;
            return Ok(());
        };
        let uid = r.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            // reserved for a claim not bound yet: the claim's sync binds it
            self.update_volume_phase(volume, "Available", "").await?;
            return Ok(());
        }
        let (ns, name) = (
            r.namespace.clone().unwrap_or_default(),
            r.name.clone().unwrap_or_default(),
        );
        let phase = volume_phase(volume);
        let mut claim = self.claim(&ns, &name);
        if claim.is_none() && phase != "Released" && phase != "Failed" {
            // the informer may not have seen a claim created moments ago:
            // make sure before releasing the volume
            claim = self.get_claim(&ns, &name).await?;
        }
        if claim
            .as_ref()
            .is_some_and(|c| c.metadata.uid.as_deref() != Some(uid.as_str()))
        {
            // the claim was deleted and another made with the same name, or
            // the cache is behind: ask the apiserver
            claim = self
                .get_claim(&ns, &name)
                .await?
                .filter(|c| c.metadata.uid.as_deref() == Some(uid.as_str()));
        }
        let Some(claim) = claim else {
            // the claim is gone: release the volume (once) and reclaim it
            let mut volume = volume.clone();
            if phase != "Released" && phase != "Failed" {
                tracing::info!(
                    volume = volume.metadata.name.as_deref().unwrap_or_default(),
                    policy = reclaim_policy(&volume),
                    "volume is released and its reclaim policy will be executed"
                );
                volume = self.update_volume_phase(&volume, "Released", "").await?;
            }
            return self.reclaim_volume(&volume).await;
        };
        let volume_name = volume.metadata.name.as_deref().unwrap_or_default();
        let claim_volume = claim_volume_name(&claim);
        if claim_volume.is_empty() {
            if volume_mode_mismatch(&claim, volume) {
                // findBestMatch will never pick it: say why, on both
                let claim_name = claim.metadata.name.as_deref().unwrap_or_default();
                self.volume_event_once(
                    volume,
                    EventType::Warning,
                    "VolumeMismatch",
                    &format!("Cannot bind PersistentVolume to requested PersistentVolumeClaim {claim_name:?} due to incompatible volumeMode."),
                );
                self.claim_event_once(
                    &claim,
                    EventType::Warning,
                    "VolumeMismatch",
                    &format!("Cannot bind PersistentVolume {volume_name:?} to requested PersistentVolumeClaim due to incompatible volumeMode."),
                );
                return Ok(());
            }
            // bound on this side only (by this controller, not finished, or
            // by the user): the claim's sync finishes it
            self.queue.add(claim_key_of(&claim));
            return Ok(());
        }
        if claim_volume == volume_name {
            self.update_volume_phase(volume, "Bound", "").await?;
            return Ok(());
        }
        // the claim is bound to another volume
        if has_annotation(&volume.metadata, ANN_DYNAMICALLY_PROVISIONED)
            && reclaim_policy(volume) == "Delete"
        {
            // provisioned for the claim, which got another volume: not needed
            let mut volume = volume.clone();
            if phase != "Released" && phase != "Failed" {
                volume = self.update_volume_phase(&volume, "Released", "").await?;
            }
            return self.reclaim_volume(&volume).await;
        }
        // bound by this controller: undo it; pre-bound by the user: keep the
        // reservation, drop the uid
        self.unbind_volume(volume).await
    }

    async fn get_claim(
        &self,
        ns: &str,
        name: &str,
    ) -> anyhow::Result<Option<Arc<PersistentVolumeClaim>>> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        Ok(api.get_opt(name).await?.map(Arc::new))
    }

    async fn update_claim_status(
        &self,
        claim: &Arc<PersistentVolumeClaim>,
        phase: &str,
        volume: Option<&PersistentVolume>,
    ) -> anyhow::Result<Arc<PersistentVolumeClaim>> {
        let mut c = (**claim).clone();
        let becoming = claim_phase(claim) != phase;
        let status = c.status.get_or_insert_with(Default::default);
        let mut dirty = false;
        if becoming {
            status.phase = Some(phase.to_string());
            dirty = true;
        }
        match volume {
            None => {
                if status.access_modes.take().is_some() {
                    dirty = true;
                }
                if status.capacity.take().is_some() {
                    dirty = true;
                }
            }
            Some(v) => {
                let spec = v.spec.clone().unwrap_or_default();
                if status.access_modes != spec.access_modes {
                    status.access_modes = spec.access_modes.clone();
                    dirty = true;
                }
                // the capacity is set when the claim becomes bound, not after
                // (a difference can be a resize in progress)
                if becoming {
                    let cap = spec
                        .capacity
                        .as_ref()
                        .and_then(|c| c.get("storage"))
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "PersistentVolume {:?} is without a storage capacity",
                                v.metadata.name.as_deref().unwrap_or_default()
                            )
                        })?;
                    let have = status
                        .capacity
                        .as_ref()
                        .and_then(|c| c.get("storage"))
                        .and_then(|q| quantity_nanos(&q.0));
                    if have != quantity_nanos(&cap.0) {
                        status.capacity = spec.capacity.clone();
                        dirty = true;
                    }
                }
            }
        }
        if !dirty {
            return Ok(claim.clone());
        }
        let ns = c.metadata.namespace.clone().unwrap_or_default();
        let name = c.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let new = api
            .replace_status(&name, &PostParams::default(), &c)
            .await?;
        tracing::info!(claim = %format!("{ns}/{name}"), phase, "claim entered phase");
        Ok(self.store_claim(new))
    }

    /// Set the claim's phase and, only when it changes, write the event.
    async fn update_claim_status_with_event(
        &self,
        claim: &Arc<PersistentVolumeClaim>,
        phase: &str,
        typ: EventType,
        reason: &str,
        message: &str,
    ) -> anyhow::Result<()> {
        if claim_phase(claim) == phase {
            return Ok(());
        }
        let new = self.update_claim_status(claim, phase, None).await?;
        self.recorder
            .emit(&crate::object_ref(&*new), typ, reason, message);
        Ok(())
    }

    async fn update_volume_phase(
        &self,
        volume: &Arc<PersistentVolume>,
        phase: &str,
        message: &str,
    ) -> anyhow::Result<Arc<PersistentVolume>> {
        if volume_phase(volume) == phase {
            return Ok(volume.clone());
        }
        let mut v = (**volume).clone();
        let status = v.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.to_string());
        status.message = (!message.is_empty()).then(|| message.to_string());
        let name = v.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let new = api
            .replace_status(&name, &PostParams::default(), &v)
            .await?;
        tracing::info!(volume = %name, phase, "volume entered phase");
        Ok(self.store_volume(new))
    }

    async fn update_volume_phase_with_event(
        &self,
        volume: &Arc<PersistentVolume>,
        phase: &str,
        typ: EventType,
        reason: &str,
        message: &str,
    ) -> anyhow::Result<()> {
        if volume_phase(volume) == phase {
            return Ok(());
        }
        let new = self.update_volume_phase(volume, phase, message).await?;
        self.recorder
            .emit(&crate::object_ref(&*new), typ, reason, message);
        Ok(())
    }

    /// Bind both ways and mark both Bound: volume first, then the claim.
    /// Every step is skipped when done; an error leaves the rest to the next
    /// sync.
    async fn bind(
        &self,
        volume: &Arc<PersistentVolume>,
        claim: &Arc<PersistentVolumeClaim>,
    ) -> anyhow::Result<()> {
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let mut volume = volume.clone();
        if let Some(v) = volume_bound_to(&volume, claim) {
            let name = v.metadata.name.clone().unwrap_or_default();
            let new = pvs.replace(&name, &PostParams::default(), &v).await?;
            tracing::info!(volume = %name, claim = %key_of(&claim.metadata), "claim bound to volume");
            volume = self.store_volume(new);
        }
        let volume = self.update_volume_phase(&volume, "Bound", "").await?;
        let mut claim = claim.clone();
        if let Some(c) = claim_bound_to(&claim, &volume) {
            let ns = c.metadata.namespace.clone().unwrap_or_default();
            let name = c.metadata.name.clone().unwrap_or_default();
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
            let new = pvcs.replace(&name, &PostParams::default(), &c).await?;
            tracing::info!(volume = volume.metadata.name.as_deref().unwrap_or_default(), claim = %format!("{ns}/{name}"), "volume bound to claim");
            claim = self.store_claim(new);
        }
        let claim = self
            .update_claim_status(&claim, "Bound", Some(&volume))
            .await?;
        lock(&self.reported).remove(&claim_key_of(&claim));
        Ok(())
    }

    /// Undo this controller's binding of the volume (claimRef and the
    /// annotation gone), or, for a user's pre-binding, only the claim's uid;
    /// then Available.
    async fn unbind_volume(&self, volume: &Arc<PersistentVolume>) -> anyhow::Result<()> {
        let mut v = (**volume).clone();
        if has_annotation(&v.metadata, ANN_BOUND_BY_CONTROLLER) {
            if let Some(s) = v.spec.as_mut() {
                s.claim_ref = None;
            }
            if let Some(a) = v.metadata.annotations.as_mut() {
                a.remove(ANN_BOUND_BY_CONTROLLER);
                if a.is_empty() {
                    v.metadata.annotations = None;
                }
            }
        } else if let Some(r) = v.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
            r.uid = None;
        }
        let name = v.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let new = api.replace(&name, &PostParams::default(), &v).await?;
        tracing::info!(volume = %name, "volume binding rolled back");
        let new = self.store_volume(new);
        self.update_volume_phase(&new, "Available", "").await?;
        Ok(())
    }

    /// Apply the released volume's persistentVolumeReclaimPolicy.
    async fn reclaim_volume(&self, volume: &Arc<PersistentVolume>) -> anyhow::Result<()> {
        if annotation(&volume.metadata, ANN_MIGRATED_TO).is_some_and(|m| !m.is_empty()) {
            // a CSI driver's external provisioner handles it
            return Ok(());
        }
        let name = volume.metadata.name.as_deref().unwrap_or_default();
        match reclaim_policy(volume) {
            "Retain" => Ok(()),
            "Recycle" => {
                // deprecated upstream (its recycler pod scrubs the volume);
                // here it is kept as Retain would
                let uid = volume.metadata.uid.as_deref().unwrap_or_default();
                if self.first_time(volume_key(name), uid, "Recycle", "") {
                    tracing::info!(volume = name, "reclaim policy Recycle is deprecated and treated as Retain: the volume stays Released");
                }
                Ok(())
            }
            "Delete" => self.delete_volume(volume).await,
            _ => {
                self.update_volume_phase_with_event(
                    volume,
                    "Failed",
                    EventType::Warning,
                    "VolumeUnknownReclaimPolicy",
                    "Volume has unrecognized PersistentVolumeReclaimPolicy",
                )
                .await
            }
        }
    }

    /// The Delete policy: the PV object is deleted once it is still released
    /// on a fresh read. Nothing deletes the storage behind it (hostPath and
    /// local data stay on the node); volumes provisioned by an external
    /// provisioner or backed by a CSI driver are left to their deleter, as
    /// upstream.
    async fn delete_volume(&self, volume: &Arc<PersistentVolume>) -> anyhow::Result<()> {
        let name = volume.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let Some(fresh) = api.get_opt(&name).await? else {
            return Ok(());
        };
        if fresh.metadata.deletion_timestamp.is_some() || !self.is_volume_released(&fresh) {
            return Ok(());
        }
        let external = annotation(&fresh.metadata, ANN_DYNAMICALLY_PROVISIONED)
            .is_some_and(|p| !p.is_empty() && !p.starts_with("kubernetes.io/"))
            || fresh.spec.as_ref().is_some_and(|s| s.csi.is_some());
        if external {
            return Ok(());
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: fresh.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {
                tracing::info!(volume = %name, "released volume deleted (reclaim policy Delete)");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Is the volume bound to a claim that is gone or bound elsewhere?
    fn is_volume_released(&self, volume: &PersistentVolume) -> bool {
        let Some(r) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
            return false;
        };
        let uid = r.uid.as_deref().unwrap_or_default();
        if uid.is_empty() {
            return false;
        }
        let claim = self.claim(
            r.namespace.as_deref().unwrap_or_default(),
            r.name.as_deref().unwrap_or_default(),
        );
        match claim {
            Some(c) if c.metadata.uid.as_deref() == Some(uid) => {
                let bound_to = claim_volume_name(&c);
                !bound_to.is_empty() && Some(bound_to) != volume.metadata.name.as_deref()
            }
            _ => true,
        }
    }
}

fn reclaim_policy(volume: &PersistentVolume) -> &str {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or_default()
}

/// Upstream's IsPodTerminated: Failed or Succeeded, or being deleted with no
/// container running.
fn pod_terminated(p: &Pod) -> bool {
    let status = p.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Failed" | "Succeeded")) {
        return true;
    }
    p.metadata.deletion_timestamp.is_some()
        && status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .all(|c| {
                c.state
                    .as_ref()
                    .is_none_or(|st| st.running.is_none() && st.waiting.is_none())
            })
}

/// Does the pod use the claim, directly or as its generic ephemeral volume?
fn pod_uses_claim(p: &Pod, claim: &str) -> bool {
    let pod = p.metadata.name.as_deref().unwrap_or_default();
    p.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .any(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name == claim)
                || (v.ephemeral.is_some() && format!("{pod}-{}", v.name) == claim)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn pv(name: &str, size: &str, modes: &[&str], extra: Value) -> Arc<PersistentVolume> {
        let mut v = json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "1"},
            "spec": {"capacity": {"storage": size}, "accessModes": modes,
                     "hostPath": {"path": format!("/tmp/{name}")}},
            "status": {"phase": "Available"},
        });
        merge(&mut v, extra);
        Arc::new(serde_json::from_value(v).expect("pv"))
    }

    fn pvc(name: &str, size: &str, modes: &[&str], extra: Value) -> PersistentVolumeClaim {
        let mut c = json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "resourceVersion": "7"},
            "spec": {"accessModes": modes, "resources": {"requests": {"storage": size}}},
            "status": {"phase": "Pending"},
        });
        merge(&mut c, extra);
        serde_json::from_value(c).expect("pvc")
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn best(claim: &PersistentVolumeClaim, vols: &[Arc<PersistentVolume>]) -> Option<String> {
        find_best_match(claim, vols, false).and_then(|v| v.metadata.name.clone())
    }

    const RWO: &[&str] = &["ReadWriteOnce"];

    #[test]
    fn quantities() {
        assert_eq!(quantity_nanos("1Gi"), Some(1_073_741_824_000_000_000));
        assert_eq!(quantity_nanos("1G"), Some(1_000_000_000_000_000_000));
        assert_eq!(quantity_nanos("1.5Gi"), quantity_nanos("1536Mi"));
        assert_eq!(quantity_nanos("1e3"), quantity_nanos("1k"));
        assert_eq!(quantity_nanos("1E"), Some(10i128.pow(27)));
        assert_eq!(quantity_nanos("100m"), Some(100_000_000));
        assert_eq!(quantity_nanos("-2"), Some(-2_000_000_000));
        assert!(quantity_nanos("500Mi") < quantity_nanos("1Gi"));
        assert!(quantity_nanos("1Gi") > quantity_nanos("1G"));
        for bad in ["", "Gi", "1.2.3", "1Qi", "1e"] {
            assert_eq!(quantity_nanos(bad), None, "{bad}");
        }
    }

    #[test]
    fn smallest_volume_that_fits() {
        let vols = [
            pv("big", "10Gi", RWO, json!({})),
            pv("small", "1Gi", RWO, json!({})),
            pv("mid", "5Gi", RWO, json!({})),
            pv("tiny", "500Mi", RWO, json!({})),
        ];
        assert_eq!(
            best(&pvc("c", "1Gi", RWO, json!({})), &vols).as_deref(),
            Some("small")
        );
        assert_eq!(
            best(&pvc("c", "2Gi", RWO, json!({})), &vols).as_deref(),
            Some("mid")
        );
        assert_eq!(
            best(&pvc("c", "100Mi", RWO, json!({})), &vols).as_deref(),
            Some("tiny")
        );
        assert_eq!(best(&pvc("c", "11Gi", RWO, json!({})), &vols), None);
        // a claim without a request takes the smallest
        let mut c = pvc("c", "1Gi", RWO, json!({}));
        c.spec.as_mut().expect("spec").resources = None;
        assert_eq!(best(&c, &vols).as_deref(), Some("tiny"));
    }

    #[test]
    fn only_available_unclaimed_volumes() {
        let vols = [
            pv(
                "pending",
                "1Gi",
                RWO,
                json!({"status": {"phase": "Pending"}}),
            ),
            pv(
                "released",
                "1Gi",
                RWO,
                json!({"status": {"phase": "Released"}}),
            ),
            pv(
                "other",
                "1Gi",
                RWO,
                json!({"spec": {"claimRef": {"namespace": "ns", "name": "else", "uid": "x"}}}),
            ),
            pv(
                "going",
                "1Gi",
                RWO,
                json!({"metadata": {"deletionTimestamp": "2020-01-01T00:00:00Z"}}),
            ),
        ];
        assert_eq!(best(&pvc("c", "1Gi", RWO, json!({})), &vols), None);
        let mut more = vols.to_vec();
        more.push(pv("free", "2Gi", RWO, json!({})));
        assert_eq!(
            best(&pvc("c", "1Gi", RWO, json!({})), &more).as_deref(),
            Some("free")
        );
    }

    #[test]
    fn storage_class_must_match() {
        let vols = [
            pv(
                "gold",
                "1Gi",
                RWO,
                json!({"spec": {"storageClassName": "gold"}}),
            ),
            pv("plain", "2Gi", RWO, json!({})),
            pv(
                "empty",
                "3Gi",
                RWO,
                json!({"spec": {"storageClassName": ""}}),
            ),
            pv(
                "beta",
                "500Mi",
                RWO,
                json!({"metadata": {"annotations": {ANN_STORAGE_CLASS: "gold"}}}),
            ),
        ];
        let gold = pvc(
            "c",
            "1Gi",
            RWO,
            json!({"spec": {"storageClassName": "gold"}}),
        );
        assert_eq!(best(&gold, &vols).as_deref(), Some("gold"));
        // unset and "" both mean no class: volumes without one
        let unset = pvc("c", "1Gi", RWO, json!({}));
        assert_eq!(best(&unset, &vols).as_deref(), Some("plain"));
        let empty = pvc(
            "c",
            "2500Mi",
            RWO,
            json!({"spec": {"storageClassName": ""}}),
        );
        assert_eq!(best(&empty, &vols).as_deref(), Some("empty"));
        let beta = pvc(
            "c",
            "100Mi",
            RWO,
            json!({"metadata": {"annotations": {ANN_STORAGE_CLASS: "gold"}}}),
        );
        assert_eq!(best(&beta, &vols).as_deref(), Some("beta"));
        let silver = pvc(
            "c",
            "1Gi",
            RWO,
            json!({"spec": {"storageClassName": "silver"}}),
        );
        assert_eq!(best(&silver, &vols), None);
    }

    #[test]
    fn access_modes_fewest_first() {
        let vols = [
            pv(
                "rwo-rox",
                "1Gi",
                &["ReadWriteOnce", "ReadOnlyMany"],
                json!({}),
            ),
            pv(
                "all",
                "1Gi",
                &["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
                json!({}),
            ),
            pv("big-rwo", "10Gi", RWO, json!({})),
        ];
        // the exact mode set wins over a smaller volume with more modes
        assert_eq!(
            best(&pvc("c", "1Gi", RWO, json!({})), &vols).as_deref(),
            Some("big-rwo")
        );
        assert_eq!(
            best(&pvc("c", "1Gi", &["ReadOnlyMany"], json!({})), &vols).as_deref(),
            Some("rwo-rox")
        );
        assert_eq!(
            best(
                &pvc("c", "1Gi", &["ReadWriteMany", "ReadOnlyMany"], json!({})),
                &vols
            )
            .as_deref(),
            Some("all")
        );
        assert_eq!(
            best(&pvc("c", "1Gi", &["ReadWriteOncePod"], json!({})), &vols),
            None
        );
        assert!(access_modes_fit(&pvc("c", "1", RWO, json!({})), &vols[1]));
        assert!(!access_modes_fit(
            &pvc("c", "1", &["ReadWriteMany"], json!({})),
            &vols[0]
        ));
    }

    #[test]
    fn volume_mode_must_match() {
        let vols = [
            pv(
                "block",
                "1Gi",
                RWO,
                json!({"spec": {"volumeMode": "Block"}}),
            ),
            pv(
                "fs",
                "2Gi",
                RWO,
                json!({"spec": {"volumeMode": "Filesystem"}}),
            ),
            pv("unset", "3Gi", RWO, json!({})),
        ];
        assert_eq!(
            best(&pvc("c", "1Gi", RWO, json!({})), &vols).as_deref(),
            Some("fs")
        );
        let block = pvc("c", "1Gi", RWO, json!({"spec": {"volumeMode": "Block"}}));
        assert_eq!(best(&block, &vols).as_deref(), Some("block"));
        let fs = pvc(
            "c",
            "2500Mi",
            RWO,
            json!({"spec": {"volumeMode": "Filesystem"}}),
        );
        assert_eq!(best(&fs, &vols).as_deref(), Some("unset"));
    }

    #[test]
    fn selector_matches_volume_labels() {
        let vols = [
            pv(
                "fast",
                "5Gi",
                RWO,
                json!({"metadata": {"labels": {"speed": "fast", "zone": "a"}}}),
            ),
            pv(
                "slow",
                "1Gi",
                RWO,
                json!({"metadata": {"labels": {"speed": "slow"}}}),
            ),
            pv("bare", "1Gi", RWO, json!({})),
        ];
        let by_label = pvc(
            "c",
            "1Gi",
            RWO,
            json!({"spec": {"selector": {"matchLabels": {"speed": "fast"}}}}),
        );
        assert_eq!(best(&by_label, &vols).as_deref(), Some("fast"));
        let by_expr = pvc(
            "c",
            "1Gi",
            RWO,
            json!({"spec": {"selector": {"matchExpressions": [
            {"key": "speed", "operator": "In", "values": ["slow", "fast"]},
            {"key": "zone", "operator": "DoesNotExist"}]}}}),
        );
        assert_eq!(best(&by_expr, &vols).as_deref(), Some("slow"));
        let none = pvc(
            "c",
            "1Gi",
            RWO,
            json!({"spec": {"selector": {"matchLabels": {"speed": "warp"}}}}),
        );
        assert_eq!(best(&none, &vols), None);
        // an empty selector selects everything
        let all = pvc("c", "1Gi", RWO, json!({"spec": {"selector": {}}}));
        assert!(best(&all, &vols).is_some());
    }

    #[test]
    fn volume_pre_bound_by_claim_ref() {
        let vols = [
            pv("small", "1Gi", RWO, json!({})),
            pv(
                "reserved",
                "5Gi",
                RWO,
                json!({"spec": {"claimRef": {"namespace": "ns", "name": "c"}},
                                               "status": {"phase": "Pending"}}),
            ),
        ];
        // the reservation wins over a smaller free volume, whatever its phase
        assert_eq!(
            best(&pvc("c", "1Gi", RWO, json!({})), &vols).as_deref(),
            Some("reserved")
        );
        // but only for that claim (namespace and name)
        assert_eq!(
            best(&pvc("d", "1Gi", RWO, json!({})), &vols).as_deref(),
            Some("small")
        );
        let mut other_ns = pvc("c", "1Gi", RWO, json!({}));
        other_ns.metadata.namespace = Some("elsewhere".into());
        assert_eq!(best(&other_ns, &vols).as_deref(), Some("small"));
        // and if it fits
        assert_eq!(best(&pvc("c", "6Gi", RWO, json!({})), &vols), None);
        // a claimRef with a uid must be this claim's
        let with_uid = [pv(
            "mine",
            "5Gi",
            RWO,
            json!({"spec": {"claimRef": {"namespace": "ns", "name": "c", "uid": "uid-c"}}}),
        )];
        assert_eq!(
            best(&pvc("c", "1Gi", RWO, json!({})), &with_uid).as_deref(),
            Some("mine")
        );
        let recreated = pvc("c", "1Gi", RWO, json!({"metadata": {"uid": "new"}}));
        assert_eq!(best(&recreated, &with_uid), None);
        // waiting for the first consumer: only the reservation is taken
        let c = pvc("c", "1Gi", RWO, json!({}));
        assert_eq!(
            find_best_match(&c, &vols, true)
                .and_then(|v| v.metadata.name.clone())
                .as_deref(),
            Some("reserved")
        );
        assert!(find_best_match(&pvc("d", "1Gi", RWO, json!({})), &vols, true).is_none());
    }

    #[test]
    fn claim_naming_its_volume() {
        let v = pv(
            "pv1",
            "2Gi",
            RWO,
            json!({"spec": {"storageClassName": "gold"}}),
        );
        let ok = pvc(
            "c",
            "1Gi",
            RWO,
            json!({"spec": {"volumeName": "pv1", "storageClassName": "gold"}}),
        );
        assert_eq!(check_volume_satisfy_claim(&v, &ok), Ok(()));
        let big = pvc(
            "c",
            "3Gi",
            RWO,
            json!({"spec": {"volumeName": "pv1", "storageClassName": "gold"}}),
        );
        assert_eq!(
            check_volume_satisfy_claim(&v, &big),
            Err("requested PV is too small".into())
        );
        let class = pvc("c", "1Gi", RWO, json!({"spec": {"volumeName": "pv1"}}));
        assert_eq!(
            check_volume_satisfy_claim(&v, &class),
            Err("storageClassName does not match".into())
        );
        let modes = pvc(
            "c",
            "1Gi",
            &["ReadWriteMany"],
            json!({"spec": {"volumeName": "pv1", "storageClassName": "gold"}}),
        );
        assert_eq!(
            check_volume_satisfy_claim(&v, &modes),
            Err("incompatible accessMode".into())
        );
        let block = pvc(
            "c",
            "1Gi",
            RWO,
            json!({"spec": {"volumeName": "pv1", "storageClassName": "gold", "volumeMode": "Block"}}),
        );
        assert_eq!(
            check_volume_satisfy_claim(&v, &block),
            Err("incompatible volumeMode".into())
        );

        // binding it: the claim is not marked bound-by-controller (the user chose)
        let bound = claim_bound_to(&ok, &v).expect("changes");
        let ann = bound.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(ann.get(ANN_BIND_COMPLETED).map(String::as_str), Some("yes"));
        assert!(!ann.contains_key(ANN_BOUND_BY_CONTROLLER));
        assert!(claim_bound_to(&bound, &v).is_none(), "idempotent");
        // a claim the controller chose for is
        let chosen = claim_bound_to(&pvc("c", "1Gi", RWO, json!({})), &v).expect("changes");
        assert_eq!(
            chosen.spec.as_ref().and_then(|s| s.volume_name.as_deref()),
            Some("pv1")
        );
        assert!(has_annotation(&chosen.metadata, ANN_BOUND_BY_CONTROLLER));
    }

    #[test]
    fn volume_claim_ref_as_upstream() {
        let claim = pvc("c", "1Gi", RWO, json!({}));
        let free = pv("pv1", "1Gi", RWO, json!({}));
        let bound = volume_bound_to(&free, &claim).expect("changes");
        let r = bound
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.clone())
            .expect("claimRef");
        assert_eq!(r.kind.as_deref(), Some("PersistentVolumeClaim"));
        assert_eq!(r.api_version.as_deref(), Some("v1"));
        assert_eq!(
            (r.namespace.as_deref(), r.name.as_deref()),
            (Some("ns"), Some("c"))
        );
        assert_eq!(r.uid.as_deref(), Some("uid-c"));
        assert_eq!(r.resource_version.as_deref(), Some("7"));
        assert!(has_annotation(&bound.metadata, ANN_BOUND_BY_CONTROLLER));
        assert!(volume_bound_to(&bound, &claim).is_none(), "idempotent");
        // pre-bound by the user: the uid is filled in, no annotation
        let reserved = pv(
            "pv2",
            "1Gi",
            RWO,
            json!({"spec": {"claimRef": {"namespace": "ns", "name": "c"}}}),
        );
        let done = volume_bound_to(&reserved, &claim).expect("uid added");
        assert_eq!(
            done.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|r| r.uid.as_deref()),
            Some("uid-c")
        );
        assert!(!has_annotation(&done.metadata, ANN_BOUND_BY_CONTROLLER));
    }
}
