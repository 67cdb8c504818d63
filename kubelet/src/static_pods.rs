//! Static pods: the kubelet's file source (`--pod-manifest-path`, the
//! KubeletConfiguration's `staticPodPath`) and their mirror pods.
//!
//! As upstream (pkg/kubelet/config/file.go, common.go): every regular file
//! of the directory whose name does not start with a dot holds one Pod
//! (YAML or JSON). The pod gets the name `<name>-<nodeName>`, the namespace
//! `default` unless it has one, this node as `spec.nodeName`, the defaults
//! the apiserver would apply, a toleration of every NoExecute taint, and a
//! UID that is a hash of the defaulted pod, the node's name and the file's
//! path (so the same file gives the same UID across kubelet restarts, and a
//! changed file a new pod). The hash is also its `kubernetes.io/config.hash`
//! annotation; `kubernetes.io/config.source: file` and
//! `kubernetes.io/config.seen` (when this kubelet first saw it) complete it.
//! The directory is re-read when its files change (checked every second)
//! and at least every 20 s (upstream's fileCheckFrequency); a file that
//! cannot be read or parsed is logged and skipped.
//!
//! The pod workers run static pods from here, never from the apiserver.
//! Each static pod has a mirror pod in the apiserver (same namespace and
//! name, `kubernetes.io/config.mirror: <hash>`, owned by the Node) that only
//! carries its status: one that is deleted or outdated is (deleted and)
//! made again, and one without a static pod is deleted once that pod is
//! torn down.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodStatus, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use sha2::{Digest, Sha256};

use crate::pods::Kubelet;

pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
pub const CONFIG_SEEN: &str = "kubernetes.io/config.seen";
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";
/// The value of `kubernetes.io/config.source` for pods from files.
pub const FILE_SOURCE: &str = "file";
/// Upstream's fileCheckFrequency: the directory is read in full this often.
pub const FILE_CHECK_FREQUENCY: Duration = Duration::from_secs(20);
/// How often the directory's files are looked at for changes.
const CHANGE_CHECK: Duration = Duration::from_secs(1);
/// Upstream's maxConfigLength: bigger files are not read.
const MAX_MANIFEST_BYTES: u64 = 10 << 20;

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// A pod from the file source (not from the apiserver).
pub fn is_static(pod: &Pod) -> bool {
    annotation(pod, CONFIG_SOURCE).is_some_and(|s| s != "api")
}

/// A mirror pod: the apiserver's copy of a static pod.
pub fn is_mirror(pod: &Pod) -> bool {
    annotation(pod, CONFIG_MIRROR).is_some()
}

/// The static pod's hash (`kubernetes.io/config.hash`).
pub fn config_hash(pod: &Pod) -> Option<&str> {
    annotation(pod, CONFIG_HASH)
}

/// `<namespace>/<name>`: how a mirror pod and its static pod find each other.
pub fn full_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether `mirror` is the mirror pod of static pod `pod` as it is now.
pub fn is_mirror_of(mirror: &Pod, pod: &Pod) -> bool {
    full_name(mirror) == full_name(pod)
        && annotation(mirror, CONFIG_MIRROR).is_some_and(|h| Some(h) == config_hash(pod))
}

// ---------------------------------------------------------------------------
// manifests

/// The image tag as upstream's image-name parser sees it: "latest" when the
/// reference has neither tag nor digest, "" when it only has a digest.
fn image_tag(image: &str) -> &str {
    let (name, has_digest) = match image.find('@') {
        Some(i) => (&image[..i], true),
        None => (image, false),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => &name[last_slash + i + 1..],
        None if has_digest || image.is_empty() => "",
        None => "latest",
    }
}

fn set_str(slot: &mut Option<String>, value: &str) {
    if slot.as_deref().is_none_or(str::is_empty) {
        *slot = Some(value.to_string());
    }
}

fn default_probe(p: &mut Option<k8s_openapi::api::core::v1::Probe>) {
    let Some(p) = p.as_mut() else { return };
    for (slot, v) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if slot.is_none_or(|x| x == 0) {
            *slot = Some(v);
        }
    }
    if let Some(g) = p.http_get.as_mut() {
        set_str(&mut g.path, "/");
        set_str(&mut g.scheme, "HTTP");
    }
}

fn default_container(c: &mut Container, pod_level: bool, host_network: bool) {
    if c.image_pull_policy.as_deref().is_none_or(str::is_empty) {
        let latest = image_tag(c.image.as_deref().unwrap_or_default()) == "latest";
        c.image_pull_policy = Some(if latest { "Always" } else { "IfNotPresent" }.into());
    }
    set_str(&mut c.termination_message_path, "/dev/termination-log");
    set_str(&mut c.termination_message_policy, "File");
    let res = c.resources.get_or_insert_with(Default::default);
    if pod_level {
        // limits without requests: each missing request is its limit
        if let Some(limits) = res.limits.clone() {
            let requests = res.requests.get_or_insert_with(BTreeMap::new);
            for (k, v) in limits {
                requests.entry(k).or_insert(v);
            }
        }
    }
    for p in c.ports.iter_mut().flatten() {
        set_str(&mut p.protocol, "TCP");
        if host_network && p.host_port.is_none_or(|h| h == 0) {
            p.host_port = Some(p.container_port);
        }
    }
    for e in c.env.iter_mut().flatten() {
        if let Some(f) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            set_str(&mut f.api_version, "v1");
        }
    }
    default_probe(&mut c.liveness_probe);
    default_probe(&mut c.readiness_probe);
    default_probe(&mut c.startup_probe);
}

/// The defaults the apiserver applies to a Pod (upstream's SetDefaults_Pod
/// and SetDefaults_PodSpec, and those of what a PodSpec holds), which the
/// decoder of upstream's file source applies too.
pub fn apply_defaults(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    set_str(&mut spec.dns_policy, "ClusterFirst");
    set_str(&mut spec.restart_policy, "Always");
    set_str(&mut spec.scheduler_name, "default-scheduler");
    spec.security_context.get_or_insert_with(Default::default);
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.enable_service_links.get_or_insert(true);
    let host_network = spec.host_network.unwrap_or(false);
    for c in spec.containers.iter_mut() {
        default_container(c, true, host_network);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        default_container(c, true, host_network);
    }
    for v in spec.volumes.iter_mut().flatten() {
        let has_source = serde_json::to_value(&*v)
            .ok()
            .and_then(|j| j.as_object().map(|m| m.len() > 1))
            .unwrap_or(true);
        if !has_source {
            v.empty_dir = Some(Default::default());
        }
        if let Some(s) = v.secret.as_mut() {
            s.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = v.config_map.as_mut() {
            s.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = v.downward_api.as_mut() {
            s.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = v.projected.as_mut() {
            s.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = v.host_path.as_mut() {
            s.type_.get_or_insert_with(String::new);
        }
    }
}

/// A static pod's hash: of the defaulted pod as the file has it, the node
/// and the file (upstream hashes the same three, with another hash).
pub fn pod_hash(pod: &Pod, node_name: &str, file: &Path) -> String {
    let mut h = Sha256::new();
    // the typed pod, so formatting, key order and unknown fields of the
    // file do not count
    h.update(serde_json::to_vec(pod).unwrap_or_default());
    h.update(format!("host:{node_name}").as_bytes());
    h.update(format!("file:{}", file.display()).as_bytes());
    hex::encode(&h.finalize()[..16])
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(dns_label)
}

/// What upstream's validation would refuse that the kubelet relies on.
fn validate(pod: &Pod) -> Result<(), String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if !dns_subdomain(name) {
        return Err(format!(
            "invalid pod: metadata.name {name:?} is not a valid DNS subdomain"
        ));
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    if !dns_label(ns) {
        return Err(format!(
            "invalid pod: metadata.namespace {ns:?} is not a valid DNS label"
        ));
    }
    let spec = pod.spec.as_ref().ok_or("invalid pod: no spec")?;
    if spec.containers.is_empty() {
        return Err("invalid pod: spec.containers: Required value".into());
    }
    let mut names = HashSet::new();
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for c in all {
        if !dns_label(&c.name) {
            return Err(format!(
                "invalid pod: container name {:?} is not a valid DNS label",
                c.name
            ));
        }
        if !names.insert(c.name.as_str()) {
            return Err(format!(
                "invalid pod: container name {:?} is used twice",
                c.name
            ));
        }
        if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            return Err(format!("invalid pod: container {:?} has no image", c.name));
        }
    }
    let policy = spec.restart_policy.as_deref().unwrap_or_default();
    if !matches!(policy, "Always" | "OnFailure" | "Never") {
        return Err(format!("invalid pod: unsupported restartPolicy {policy:?}"));
    }
    Ok(())
}

/// One manifest file into the static pod it defines (without the
/// `config.seen` annotation, which the source adds).
pub fn parse_manifest(file: &Path, data: &[u8], node_name: &str) -> Result<Pod, String> {
    // JSON is YAML
    let v: serde_json::Value = serde_yaml::from_slice(data).map_err(|e| e.to_string())?;
    let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
    let api_version = v
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    if kind != "Pod" || api_version != "v1" {
        return Err(format!(
            "couldn't parse as pod (apiVersion {api_version:?}, kind {kind:?}; want v1 Pod)"
        ));
    }
    let mut pod: Pod = serde_json::from_value(v).map_err(|e| format!("invalid pod: {e}"))?;
    if pod.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err("invalid pod: name is needed for the pod".into());
    }
    apply_defaults(&mut pod);
    let node = node_name.to_lowercase();
    let uid = match pod.metadata.uid.clone().filter(|u| !u.is_empty()) {
        Some(u) => u,
        None => pod_hash(&pod, &node, file),
    };
    let m = &mut pod.metadata;
    m.uid = Some(uid.clone());
    m.name = Some(format!("{}-{node}", m.name.as_deref().unwrap_or_default()));
    if m.namespace.as_deref().is_none_or(str::is_empty) {
        m.namespace = Some("default".into());
    }
    m.resource_version = None;
    m.self_link = None;
    let annotations = m.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_HASH.into(), uid);
    annotations.insert(CONFIG_SOURCE.into(), FILE_SOURCE.into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node);
    // static pods are not evicted for the node's NoExecute taints
    let everything = Toleration {
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        ..Default::default()
    };
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    if !tolerations.contains(&everything) {
        tolerations.push(everything);
    }
    pod.status = Some(PodStatus {
        phase: Some("Pending".into()),
        ..Default::default()
    });
    validate(&pod)?;
    Ok(pod)
}

/// The directory's manifests, in file-name order: each readable file's pod,
/// or why it is skipped.
pub fn read_dir(dir: &Path, node_name: &str) -> Vec<(PathBuf, Result<Pod, String>)> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            tracing::debug!(path = %dir.display(), error = %e, "reading the static pod path");
            return out;
        }
    };
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    paths.sort();
    for path in paths {
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                out.push((path, Err(format!("could not get metadata: {e}"))));
                continue;
            }
        };
        if meta.is_dir() {
            out.push((path, Err("a directory: not recursing into it".into())));
            continue;
        }
        if !meta.is_file() {
            out.push((path, Err("not a regular file".into())));
            continue;
        }
        if meta.len() > MAX_MANIFEST_BYTES {
            out.push((path, Err(format!("larger than {MAX_MANIFEST_BYTES} bytes"))));
            continue;
        }
        let parsed = match std::fs::read(&path) {
            Ok(data) => parse_manifest(&path, &data, node_name),
            // removed between the listing and the read: as if never listed
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => Err(e.to_string()),
        };
        out.push((path, parsed));
    }
    out
}

/// What changed in the static pods since the last read. A changed file is a
/// new pod (its hash, hence its UID, changed) and the removal of the old.
#[derive(Debug, Default)]
pub struct Changes {
    pub added: Vec<Arc<Pod>>,
    pub removed: Vec<Arc<Pod>>,
}

/// A directory entry as the change check sees it: name, modification time
/// (seconds, nanoseconds), size and inode.
type FileStamp = (String, i64, i64, u64, u64);

/// The file source: the static pods of the last read by UID, and when each
/// was first seen.
#[derive(Debug)]
pub struct FileSource {
    pub dir: PathBuf,
    pub node_name: String,
    pods: BTreeMap<String, Arc<Pod>>,
    fingerprint: Option<Vec<FileStamp>>,
    last_read: Option<Instant>,
    /// what was last logged about each file (to log a bad file once)
    reported: HashMap<PathBuf, String>,
    /// files skipped for defining a pod an earlier file defines
    duplicates: HashSet<PathBuf>,
}

impl FileSource {
    pub fn new(dir: PathBuf, node_name: &str) -> FileSource {
        FileSource {
            dir,
            node_name: node_name.to_lowercase(),
            pods: BTreeMap::new(),
            fingerprint: None,
            last_read: None,
            reported: HashMap::new(),
            duplicates: HashSet::new(),
        }
    }

    /// The static pods of the last read.
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.pods.values().cloned().collect()
    }

    /// Names, modification times, sizes and inodes of the directory's
    /// entries: when they change, the directory is read again.
    fn current_fingerprint(&self) -> Vec<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let mut fp: Vec<_> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().to_string();
                        if name.starts_with('.') {
                            return None;
                        }
                        let m = std::fs::metadata(e.path()).ok();
                        Some(match m {
                            Some(m) => (name, m.mtime(), m.mtime_nsec(), m.size(), m.ino()),
                            None => (name, 0, 0, 0, 0),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        fp.sort();
        fp
    }

    /// Read the directory again when its files changed or the last full
    /// read is FILE_CHECK_FREQUENCY old; None when nothing was read.
    pub fn poll(&mut self) -> Option<Changes> {
        let fp = self.current_fingerprint();
        let due = self
            .last_read
            .is_none_or(|t| t.elapsed() >= FILE_CHECK_FREQUENCY);
        if !due && self.fingerprint.as_ref() == Some(&fp) {
            return None;
        }
        self.fingerprint = Some(fp);
        Some(self.read())
    }

    /// Read the directory now and diff it against the last read.
    pub fn read(&mut self) -> Changes {
        self.last_read = Some(Instant::now());
        let entries = read_dir(&self.dir, &self.node_name);
        let mut pods = Vec::new();
        let mut reported = HashMap::new();
        for (path, parsed) in entries {
            match parsed {
                Ok(p) => pods.push((path, p)),
                Err(e) => {
                    if self.reported.get(&path) != Some(&e) {
                        tracing::error!(path = %path.display(), error = %e, "could not process manifest file");
                    }
                    reported.insert(path, e);
                }
            }
        }
        self.reported = reported;
        self.update(pods)
    }

    /// Take the pods just read (in file order) as the source's pods: the
    /// first file wins a name several define; a pod seen before keeps its
    /// first-seen time.
    pub fn update(&mut self, pods: Vec<(PathBuf, Pod)>) -> Changes {
        let mut next: BTreeMap<String, Arc<Pod>> = BTreeMap::new();
        let mut names: HashMap<String, PathBuf> = HashMap::new();
        let reported = std::mem::take(&mut self.duplicates);
        for (path, mut pod) in pods {
            let name = full_name(&pod);
            if let Some(first) = names.get(&name) {
                if !reported.contains(&path) {
                    tracing::error!(
                        path = %path.display(), pod = %name, first = %first.display(),
                        "a static pod of that name is already defined; skipping the file"
                    );
                }
                self.duplicates.insert(path);
                continue;
            }
            names.insert(name, path);
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let seen = self
                .pods
                .get(&uid)
                .and_then(|p| annotation(p, CONFIG_SEEN).map(String::from))
                .unwrap_or_else(|| {
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                });
            pod.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(CONFIG_SEEN.into(), seen);
            let pod = match self.pods.get(&uid) {
                Some(old) => old.clone(),
                None => Arc::new(pod),
            };
            next.insert(uid, pod);
        }
        let mut changes = Changes::default();
        for (uid, p) in &self.pods {
            if !next.contains_key(uid) {
                changes.removed.push(p.clone());
            }
        }
        for (uid, p) in &next {
            if !self.pods.contains_key(uid) {
                changes.added.push(p.clone());
            }
        }
        self.pods = next;
        changes
    }
}

/// A static pod being torn down: deleted now, with its own grace period.
pub fn deleted(pod: &Pod) -> Pod {
    let mut p = pod.clone();
    let grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0);
    p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    p.metadata.deletion_grace_period_seconds = Some(grace);
    p
}

/// Hand the changes to the pod workers: removals first, so a pod whose
/// file changed is torn down before its successor starts.
pub fn dispatch(kl: &Arc<Kubelet>, changes: Changes) {
    for p in changes.removed {
        tracing::info!(pod = %full_name(&p), uid = ?p.metadata.uid, "static pod removed");
        kl.dispatch_static(Arc::new(deleted(&p)));
    }
    for p in changes.added {
        tracing::info!(pod = %full_name(&p), uid = ?p.metadata.uid, "static pod added");
        kl.dispatch_static(p);
    }
}

/// Read the directory now (the pod workers start from this), then keep
/// watching it until shutdown.
pub async fn start(
    kl: Arc<Kubelet>,
    dir: PathBuf,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tracing::info!(path = %dir.display(), "watching the static pod path");
    let mut src = FileSource::new(dir, &kl.settings.node_name);
    if let Some(changes) = src.poll() {
        dispatch(&kl, changes);
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CHANGE_CHECK) => {}
                _ = common::stopped(&mut shutdown) => return,
            }
            if let Some(changes) = src.poll() {
                dispatch(&kl, changes);
            }
        }
    });
}

// ---------------------------------------------------------------------------
// mirror pods

/// The mirror pod to create for static pod `pod`, owned by `node`.
pub fn mirror_of(pod: &Pod, node: &Node) -> Pod {
    let mut m = Pod {
        metadata: pod.metadata.clone(),
        spec: pod.spec.clone(),
        status: None,
    };
    m.metadata.uid = None;
    m.metadata.resource_version = None;
    m.metadata.creation_timestamp = None;
    m.metadata.deletion_timestamp = None;
    m.metadata.deletion_grace_period_seconds = None;
    m.metadata.managed_fields = None;
    let hash = config_hash(pod).unwrap_or_default().to_string();
    m.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_MIRROR.into(), hash);
    m.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.metadata.name.clone().unwrap_or_default(),
        uid: node.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    m
}

/// Delete a mirror pod for good (grace 0, only that incarnation); true when
/// it is gone.
pub async fn delete_mirror(kl: &Kubelet, mirror: &Pod) -> bool {
    let (Some(ns), Some(name)) = (&mirror.metadata.namespace, &mirror.metadata.name) else {
        return true;
    };
    let api: Api<Pod> = Api::namespaced(kl.client.clone(), ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: mirror.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    let gone = match api.delete(name, &dp).await {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => true,
        Err(e) => {
            tracing::warn!(pod = %name, error = %e, "deleting a mirror pod");
            false
        }
    };
    if gone {
        tracing::info!(pod = %full_name(mirror), uid = ?mirror.metadata.uid, "deleted the mirror pod");
        kl.forget_mirror(mirror);
    }
    gone
}

async fn create_mirror(kl: &Kubelet, pod: &Pod) -> Result<Arc<Pod>, String> {
    let nodes: Api<Node> = Api::all(kl.client.clone());
    let node = nodes
        .get(&kl.settings.node_name)
        .await
        .map_err(|e| format!("getting the node: {e}"))?;
    if node.metadata.deletion_timestamp.is_some() {
        return Err("the node is being deleted".into());
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(kl.client.clone(), &ns);
    match api
        .create(&PostParams::default(), &mirror_of(pod, &node))
        .await
    {
        Ok(m) => {
            tracing::info!(pod = %full_name(pod), uid = ?m.metadata.uid, "created the mirror pod");
            Ok(kl.remember_mirror(m))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // ours already (the watch is behind), or another pod has the name
            match api.get_opt(&name).await {
                Ok(Some(m)) if is_mirror_of(&m, pod) => Ok(kl.remember_mirror(m)),
                Ok(_) => Err(format!(
                    "a pod that is not this static pod's mirror is named {ns}/{name}"
                )),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Make sure static pod `pod` has its mirror pod: a mirror being deleted or
/// of another version of the pod is deleted and made again. The mirror, if
/// it exists. `retry` holds failed creations back a while.
pub async fn ensure_mirror(
    kl: &Kubelet,
    pod: &Pod,
    retry: &mut Option<Instant>,
) -> Option<Arc<Pod>> {
    if let Some(m) = kl.mirror(&full_name(pod)) {
        if m.metadata.deletion_timestamp.is_none() && is_mirror_of(&m, pod) {
            return Some(m);
        }
        if !delete_mirror(kl, &m).await {
            return None;
        }
    }
    if retry.is_some_and(|t| Instant::now() < t) {
        return None;
    }
    match create_mirror(kl, pod).await {
        Ok(m) => {
            *retry = None;
            Some(m)
        }
        Err(e) => {
            tracing::warn!(pod = %full_name(pod), error = %e, "creating the mirror pod");
            *retry = Some(Instant::now() + Duration::from_secs(5));
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: reg:5000/busybox:v1\n    command: [sleep, '3600']\n    ports: [{containerPort: 80}]\n    livenessProbe: {httpGet: {port: 80}}\n";

    fn parse(text: &str) -> Result<Pod, String> {
        parse_manifest(
            Path::new("/etc/kubernetes/manifests/web.yaml"),
            text.as_bytes(),
            "Node-1",
        )
    }

    #[test]
    fn identity_of_a_static_pod() {
        let p = parse(MANIFEST).unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("web-node-1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        let uid = p.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        assert!(uid.bytes().all(|b| b.is_ascii_hexdigit()));
        let a = p.metadata.annotations.clone().unwrap();
        assert_eq!(a.get(CONFIG_HASH), Some(&uid));
        assert_eq!(a.get(CONFIG_SOURCE).map(String::as_str), Some("file"));
        assert!(is_static(&p) && !is_mirror(&p));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert!(spec
            .tolerations
            .as_ref()
            .unwrap()
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.effect.as_deref() == Some("NoExecute")
                && t.key.is_none()));
        assert_eq!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Pending")
        );
        assert_eq!(p.metadata.labels.unwrap().get("app").unwrap(), "web");

        // a namespace of its own stays
        let q = parse(&MANIFEST.replace("name: web\n", "name: web\n  namespace: kube-system\n"))
            .unwrap();
        assert_eq!(q.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(full_name(&q), "kube-system/web-node-1");
    }

    #[test]
    fn defaults_as_the_apiserver_applies_them() {
        let p = parse(MANIFEST).unwrap();
        let spec = p.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        assert_eq!(spec.enable_service_links, Some(true));
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        let port = &c.ports.as_ref().unwrap()[0];
        assert_eq!(port.protocol.as_deref(), Some("TCP"));
        let probe = c.liveness_probe.as_ref().unwrap();
        assert_eq!(
            (
                probe.period_seconds,
                probe.timeout_seconds,
                probe.failure_threshold
            ),
            (Some(10), Some(1), Some(3))
        );
        assert_eq!(probe.http_get.as_ref().unwrap().path.as_deref(), Some("/"));
        // :latest and untagged images are always pulled; values given stay
        let q = parse(
            &MANIFEST
                .replace("busybox:v1", "busybox")
                .replace("command:", "terminationMessagePath: /tmp/t\n    command:"),
        )
        .unwrap();
        let c = &q.spec.unwrap().containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(c.termination_message_path.as_deref(), Some("/tmp/t"));
        assert_eq!(image_tag("reg:5000/a/b"), "latest");
        assert_eq!(image_tag("reg:5000/a/b:1.0"), "1.0");
        assert_eq!(image_tag("b@sha256:abc"), "");
    }

    #[test]
    fn the_uid_is_stable_and_follows_content_node_and_file() {
        let a = parse(MANIFEST).unwrap();
        // the same pod written otherwise (JSON, another key order) is the same pod
        let json = r#"{"kind":"Pod","apiVersion":"v1","spec":{"containers":[{"command":["sleep","3600"],"image":"reg:5000/busybox:v1","name":"c","ports":[{"containerPort":80}],"livenessProbe":{"httpGet":{"port":80}}}]},"metadata":{"labels":{"app":"web"},"name":"web"}}"#;
        let b = parse(json).unwrap();
        assert_eq!(a.metadata.uid, b.metadata.uid);
        assert_eq!(a, b);
        // the content, the node and the file each make another pod
        let c = parse(&MANIFEST.replace("'3600'", "'3601'")).unwrap();
        assert_ne!(a.metadata.uid, c.metadata.uid);
        let d = parse_manifest(
            Path::new("/etc/kubernetes/manifests/web.yaml"),
            MANIFEST.as_bytes(),
            "node-2",
        )
        .unwrap();
        assert_ne!(a.metadata.uid, d.metadata.uid);
        let e = parse_manifest(
            Path::new("/etc/kubernetes/manifests/other.yaml"),
            MANIFEST.as_bytes(),
            "node-1",
        )
        .unwrap();
        assert_ne!(a.metadata.uid, e.metadata.uid);
        // a UID the manifest gives is kept
        let f = parse(&MANIFEST.replace("name: web\n", "name: web\n  uid: fixed-uid\n")).unwrap();
        assert_eq!(f.metadata.uid.as_deref(), Some("fixed-uid"));
        assert_eq!(config_hash(&f), Some("fixed-uid"));
    }

    #[test]
    fn bad_manifests_are_errors() {
        for bad in [
            "",
            "not: [valid",
            "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {containers: [{name: c, image: i}]}\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c}]}\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: X_Y}\nspec: {containers: [{name: c, image: i}]}\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c, image: i}, {name: c, image: i}]}\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: 7}\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {restartPolicy: Sometimes, containers: [{name: c, image: i}]}\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn the_directory_diffs_into_added_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("web.yaml", MANIFEST);
        write(
            ".hidden.yaml",
            &MANIFEST.replace("name: web\n", "name: hidden\n"),
        );
        write("broken.yaml", "apiVersion: v1\nkind: Pod\nspec: [");
        write(
            "db.json",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"db"},"spec":{"containers":[{"name":"c","image":"i:1"}]}}"#,
        );
        // a second definition of web-node-1: the first file (by name) wins
        write("zz-web-copy.yaml", &MANIFEST.replace("'3600'", "'1'"));
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut src = FileSource::new(dir.path().to_path_buf(), "node-1");

        let first = src.poll().expect("a first read");
        let mut added: Vec<String> = first.added.iter().map(|p| full_name(p)).collect();
        added.sort();
        assert_eq!(added, ["default/db-node-1", "default/web-node-1"]);
        assert!(first.removed.is_empty());
        let web = src
            .pods()
            .into_iter()
            .find(|p| full_name(p) == "default/web-node-1")
            .unwrap();
        let command = web.spec.as_ref().unwrap().containers[0].command.clone();
        assert_eq!(command, Some(vec!["sleep".to_string(), "3600".into()]));
        let seen = annotation(&web, CONFIG_SEEN).unwrap().to_string();
        assert!(
            seen.parse::<chrono::DateTime<chrono::Utc>>().is_ok(),
            "{seen}"
        );

        // nothing changed: no read before fileCheckFrequency, and a read
        // changes nothing (the first-seen time stays)
        assert!(src.poll().is_none());
        let again = src.read();
        assert!(again.added.is_empty() && again.removed.is_empty());
        let web2 = src
            .pods()
            .into_iter()
            .find(|p| full_name(p) == "default/web-node-1")
            .unwrap();
        assert_eq!(annotation(&web2, CONFIG_SEEN), Some(seen.as_str()));

        // a changed file: the old pod goes, the new one comes
        write("web.yaml", &MANIFEST.replace("'3600'", "'72000'"));
        let changed = src.poll().expect("the change is seen");
        assert_eq!(changed.removed.len(), 1);
        assert_eq!(changed.added.len(), 1);
        assert_eq!(changed.removed[0].metadata.uid, web.metadata.uid);
        assert_eq!(full_name(&changed.added[0]), "default/web-node-1");
        assert_ne!(changed.added[0].metadata.uid, web.metadata.uid);

        // a removed file: its pod goes
        std::fs::remove_file(dir.path().join("db.json")).unwrap();
        let removed = src.poll().expect("the removal is seen");
        assert!(removed.added.is_empty());
        assert_eq!(removed.removed.len(), 1);
        assert_eq!(full_name(&removed.removed[0]), "default/db-node-1");

        // a missing directory: no pods
        let mut none = FileSource::new(dir.path().join("nope"), "node-1");
        let c = none.poll().unwrap();
        assert!(c.added.is_empty() && none.pods().is_empty());
    }

    #[test]
    fn a_mirror_pod_is_the_static_pod_owned_by_the_node() {
        let p = parse(MANIFEST).unwrap();
        let node = Node {
            metadata: kube::api::ObjectMeta {
                name: Some("node-1".into()),
                uid: Some("node-uid".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let m = mirror_of(&p, &node);
        assert!(is_mirror(&m) && is_mirror_of(&m, &p));
        assert_eq!(m.metadata.uid, None);
        assert_eq!(m.status, None);
        assert_eq!(m.metadata.name.as_deref(), Some("web-node-1"));
        let a = m.metadata.annotations.as_ref().unwrap();
        assert_eq!(a.get(CONFIG_MIRROR), a.get(CONFIG_HASH));
        assert_eq!(a.get(CONFIG_SOURCE).map(String::as_str), Some("file"));
        let o = &m.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                o.api_version.as_str(),
                o.kind.as_str(),
                o.name.as_str(),
                o.uid.as_str()
            ),
            ("v1", "Node", "node-1", "node-uid")
        );
        assert_eq!(o.controller, Some(true));
        // another version of the pod is not its mirror's
        let q = parse(&MANIFEST.replace("'3600'", "'1'")).unwrap();
        assert!(!is_mirror_of(&m, &q));
        // a static pod being removed keeps its grace period
        let d = deleted(&p);
        assert!(d.metadata.deletion_timestamp.is_some());
        assert_eq!(d.metadata.deletion_grace_period_seconds, Some(30));
    }
}
