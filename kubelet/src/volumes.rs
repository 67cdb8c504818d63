//! Volumes and the files every container gets: emptyDir (disk, or tmpfs with
//! medium Memory and sizeLimit), hostPath (with its type checks), configMap,
//! secret (on tmpfs), downwardAPI, projected, and persistentVolumeClaim bound
//! to hostPath/local PVs; /etc/hosts, /etc/resolv.conf, /etc/hostname and the
//! termination log. Files of configMap, secret, downwardAPI and projected
//! volumes are written as upstream's atomic writer does: a timestamped
//! directory, a `..data` symlink swapped with a rename, and user-visible
//! names that are symlinks through `..data`, so a reader never sees half an
//! update. They are refreshed in place while the pod runs.
//!
//! Also the container's environment: the referenced ConfigMaps and Secrets
//! and the namespace's Services are read here and handed to `env`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams};

use crate::pods::{Kubelet, PodState};
use crate::sandbox::Sandbox;
use crate::spec::MountSpec;

/// How often configMap/secret/downwardAPI volumes are re-read.
const REFRESH: Duration = Duration::from_secs(10);

/// The pod's prepared volumes: name -> host directory (or file).
#[derive(Debug, Clone, Default)]
pub struct Volumes {
    pub paths: HashMap<String, PathBuf>,
    /// volumes that are read-only whatever the mount says (configMap, secret, ...)
    pub read_only: std::collections::HashSet<String>,
}

fn refreshed() -> &'static std::sync::Mutex<HashMap<String, Instant>> {
    static R: std::sync::OnceLock<std::sync::Mutex<HashMap<String, Instant>>> =
        std::sync::OnceLock::new();
    R.get_or_init(Default::default)
}

fn vol_dir(pod_dir: &Path, plugin: &str, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(plugin).join(name)
}

async fn mkdir(p: &Path) -> Result<(), String> {
    tokio::fs::create_dir_all(p)
        .await
        .map_err(|e| format!("creating {}: {e}", p.display()))
}

fn mount_tmpfs(p: &Path, size: Option<u64>) -> Result<(), String> {
    if crate::runtime::is_mounted(p) {
        return Ok(());
    }
    let opts = match size {
        Some(s) => format!("mode=0755,size={s}"),
        None => "mode=0755".to_string(),
    };
    nix::mount::mount(
        Some("tmpfs"),
        p,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| format!("mounting tmpfs on {}: {e}", p.display()))
}

/// Prepare every volume of the pod (idempotent; refreshes file-backed ones).
pub async fn setup(kl: &Kubelet, pod: &Pod, pod_dir: &Path) -> Result<Volumes, String> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = Volumes::default();
    let refresh = {
        let mut r = refreshed().lock().unwrap_or_else(|p| p.into_inner());
        let due = r.get(&uid).is_none_or(|t| t.elapsed() >= REFRESH);
        if due {
            r.insert(uid.clone(), Instant::now());
        }
        due
    };
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in &volumes {
        let name = &v.name;
        if let Some(ed) = &v.empty_dir {
            let d = vol_dir(pod_dir, "kubernetes.io~empty-dir", name);
            mkdir(&d).await?;
            if ed.medium.as_deref() == Some("Memory") {
                let size = ed
                    .size_limit
                    .as_ref()
                    .and_then(crate::qos::parse_quantity)
                    .map(|b| b as u64);
                mount_tmpfs(&d, size)?;
            }
            out.paths.insert(name.clone(), d);
        } else if let Some(hp) = &v.host_path {
            let p = PathBuf::from(&hp.path);
            check_host_path(&p, hp.type_.as_deref().unwrap_or("")).await?;
            out.paths.insert(name.clone(), p);
        } else if let Some(pvc) = &v.persistent_volume_claim {
            let p = pvc_path(kl, &ns, &pvc.claim_name).await?;
            if pvc.read_only.unwrap_or(false) {
                out.read_only.insert(name.clone());
            }
            out.paths.insert(name.clone(), p);
        } else {
            let (plugin, tmpfs) = if v.secret.is_some() {
                ("kubernetes.io~secret", true)
            } else if v.config_map.is_some() {
                ("kubernetes.io~configmap", false)
            } else if v.downward_api.is_some() {
                ("kubernetes.io~downward-api", false)
            } else if v.projected.is_some() {
                ("kubernetes.io~projected", true)
            } else {
                return Err(format!(
                    "volume {name:?}: this volume type is not supported"
                ));
            };
            let d = vol_dir(pod_dir, plugin, name);
            let fresh = !d.join("..data").exists();
            mkdir(&d).await?;
            if tmpfs {
                mount_tmpfs(&d, None)?;
            }
            if fresh || refresh {
                let files = volume_files(kl, pod, v).await?;
                if let Some(files) = files {
                    atomic_write(&d, &files)
                        .map_err(|e| format!("writing volume {name:?}: {e}"))?;
                }
            }
            out.read_only.insert(name.clone());
            out.paths.insert(name.clone(), d);
        }
    }
    Ok(out)
}

async fn check_host_path(p: &Path, typ: &str) -> Result<(), String> {
    let meta = tokio::fs::metadata(p).await.ok();
    use std::os::unix::fs::FileTypeExt;
    let bad = |what: &str| {
        Err(format!(
            "hostPath type check failed: {} is not a {what}",
            p.display()
        ))
    };
    match typ {
        "DirectoryOrCreate" => {
            if meta.is_none() {
                mkdir(p).await?;
            }
            Ok(())
        }
        "FileOrCreate" => {
            if meta.is_none() {
                if let Some(d) = p.parent() {
                    mkdir(d).await?;
                }
                tokio::fs::write(p, b"")
                    .await
                    .map_err(|e| format!("creating {}: {e}", p.display()))?;
            }
            Ok(())
        }
        "Directory" => match meta {
            Some(m) if m.is_dir() => Ok(()),
            _ => bad("directory"),
        },
        "File" => match meta {
            Some(m) if m.is_file() => Ok(()),
            _ => bad("file"),
        },
        "Socket" => match meta {
            Some(m) if m.file_type().is_socket() => Ok(()),
            _ => bad("socket"),
        },
        "CharDevice" => match meta {
            Some(m) if m.file_type().is_char_device() => Ok(()),
            _ => bad("character device"),
        },
        "BlockDevice" => match meta {
            Some(m) if m.file_type().is_block_device() => Ok(()),
            _ => bad("block device"),
        },
        _ => Ok(()),
    }
}

async fn pvc_path(kl: &Kubelet, ns: &str, claim: &str) -> Result<PathBuf, String> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kl.client.clone(), ns);
    let pvc = pvcs
        .get(claim)
        .await
        .map_err(|e| format!("persistentvolumeclaim {claim:?}: {e}"))?;
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("persistentvolumeclaim {claim:?} is not bound"))?;
    let pvs: Api<PersistentVolume> = Api::all(kl.client.clone());
    let pv = pvs
        .get(&pv_name)
        .await
        .map_err(|e| format!("persistentvolume {pv_name:?}: {e}"))?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or_else(|| spec.local.map(|l| l.path))
        .ok_or_else(|| {
            format!("persistentvolume {pv_name:?}: only hostPath and local volumes are supported")
        })?;
    let p = PathBuf::from(path);
    if !p.exists() {
        mkdir(&p).await?;
    }
    Ok(p)
}

/// A file of a projected-style volume: relative path, content, mode.
type Files = Vec<(String, Vec<u8>, u32)>;

fn items<'a>(
    data: &'a BTreeMap<String, Vec<u8>>,
    items: Option<&'a [KeyToPath]>,
    mode: u32,
    what: &str,
) -> Result<Files, String> {
    let mut out = Vec::new();
    match items {
        Some(items) => {
            for it in items {
                let v = data.get(&it.key).ok_or_else(|| {
                    format!("configuration error: key {:?} not found in {what}", it.key)
                })?;
                out.push((
                    it.path.clone(),
                    v.clone(),
                    it.mode.map(|m| m as u32).unwrap_or(mode),
                ));
            }
        }
        None => {
            for (k, v) in data {
                out.push((k.clone(), v.clone(), mode));
            }
        }
    }
    Ok(out)
}

async fn config_map(
    kl: &Kubelet,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<ConfigMap> = Api::namespaced(kl.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(cm)) => {
            let mut m: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            for (k, v) in cm.binary_data.unwrap_or_default() {
                m.insert(k, v.0);
            }
            Ok(Some(m))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(format!("reading configmap {name:?}: {e}")),
    }
}

async fn secret(
    kl: &Kubelet,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<Secret> = Api::namespaced(kl.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(s)) => {
            let mut m: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v): (String, ByteString)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                m.insert(k, v.into_bytes());
            }
            Ok(Some(m))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(format!("reading secret {name:?}: {e}")),
    }
}

fn downward_value(pod: &Pod, field: &str) -> Option<String> {
    let m = &pod.metadata;
    let fmt_map = |map: &Option<BTreeMap<String, String>>| {
        map.as_ref()
            .map(|l| {
                l.iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    match field {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "metadata.labels" => Some(fmt_map(&m.labels)),
        "metadata.annotations" => Some(fmt_map(&m.annotations)),
        f => {
            if let Some(k) = f
                .strip_prefix("metadata.labels['")
                .and_then(|r| r.strip_suffix("']"))
            {
                m.labels.as_ref().and_then(|l| l.get(k).cloned())
            } else if let Some(k) = f
                .strip_prefix("metadata.annotations['")
                .and_then(|r| r.strip_suffix("']"))
            {
                m.annotations.as_ref().and_then(|l| l.get(k).cloned())
            } else {
                None
            }
        }
    }
}

fn downward_files(
    pod: &Pod,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
    mode: u32,
) -> Files {
    let mut out = Vec::new();
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            downward_value(pod, &f.field_path)
        } else if let Some(r) = &it.resource_field_ref {
            let cname = r.container_name.clone().unwrap_or_default();
            pod.spec.as_ref().and_then(|s| {
                s.containers.iter().find(|c| c.name == cname).and_then(|c| {
                    let res = c.resources.as_ref()?;
                    let (kind, key) = r.resource.split_once('.')?;
                    let map = if kind == "limits" {
                        res.limits.as_ref()
                    } else {
                        res.requests.as_ref()
                    };
                    map.and_then(|m| m.get(key)).map(|q| q.0.clone())
                })
            })
        } else {
            None
        };
        out.push((
            it.path.clone(),
            value.unwrap_or_default().into_bytes(),
            it.mode.map(|m| m as u32).unwrap_or(mode),
        ));
    }
    out
}

/// The files of a configMap/secret/downwardAPI/projected volume; None when
/// an optional source is missing and nothing is to be written.
async fn volume_files(
    kl: &Kubelet,
    pod: &Pod,
    v: &k8s_openapi::api::core::v1::Volume,
) -> Result<Option<Files>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    if let Some(cm) = &v.config_map {
        let mode = cm.default_mode.unwrap_or(0o644) as u32;
        return match config_map(kl, &ns, &cm.name).await? {
            Some(d) => items(
                &d,
                cm.items.as_deref(),
                mode,
                &format!("configmap {:?}", cm.name),
            )
            .map(Some),
            None if cm.optional.unwrap_or(false) => Ok(Some(Vec::new())),
            None => Err(format!("configmap \"{}\" not found", cm.name)),
        };
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        return match secret(kl, &ns, &name).await? {
            Some(d) => items(&d, s.items.as_deref(), mode, &format!("secret {name:?}")).map(Some),
            None if s.optional.unwrap_or(false) => Ok(Some(Vec::new())),
            None => Err(format!("secret \"{name}\" not found")),
        };
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(0o644) as u32;
        return Ok(Some(downward_files(
            pod,
            d.items.as_deref().unwrap_or_default(),
            mode,
        )));
    }
    if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        let mut files = Vec::new();
        for src in p.sources.as_deref().unwrap_or_default() {
            if let Some(cm) = &src.config_map {
                match config_map(kl, &ns, &cm.name).await? {
                    Some(d) => files.extend(items(
                        &d,
                        cm.items.as_deref(),
                        mode,
                        &format!("configmap {:?}", cm.name),
                    )?),
                    None if cm.optional.unwrap_or(false) => {}
                    None => return Err(format!("configmap \"{}\" not found", cm.name)),
                }
            }
            if let Some(s) = &src.secret {
                match secret(kl, &ns, &s.name).await? {
                    Some(d) => files.extend(items(
                        &d,
                        s.items.as_deref(),
                        mode,
                        &format!("secret {:?}", s.name),
                    )?),
                    None if s.optional.unwrap_or(false) => {}
                    None => return Err(format!("secret \"{}\" not found", s.name)),
                }
            }
            if let Some(d) = &src.downward_api {
                files.extend(downward_files(
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    mode,
                ));
            }
            if let Some(t) = &src.service_account_token {
                let token = service_account_token(kl, pod, t).await?;
                files.push((t.path.clone(), token.into_bytes(), mode));
            }
        }
        return Ok(Some(files));
    }
    Ok(None)
}

/// A token handed out: the token, when it was issued, its lifetime.
type Issued = (String, Instant, Duration);

/// Tokens handed out, by pod UID, service account, audience and lifetime.
fn tokens() -> &'static std::sync::Mutex<HashMap<String, Issued>> {
    static T: std::sync::OnceLock<std::sync::Mutex<HashMap<String, Issued>>> =
        std::sync::OnceLock::new();
    T.get_or_init(Default::default)
}

/// Forget the tokens of a pod that is gone.
pub fn forget_tokens(uid: &str) {
    let mut t = tokens().lock().unwrap_or_else(|p| p.into_inner());
    t.retain(|k, _| !k.starts_with(&format!("{uid}/")));
}

/// A bound token for the pod's service account through the TokenRequest
/// API, asked for again once 80% of its lifetime (or 24 h) has passed, as
/// upstream's token manager does.
async fn service_account_token(
    kl: &Kubelet,
    pod: &Pod,
    t: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
) -> Result<String, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let seconds = t.expiration_seconds.unwrap_or(3607);
    let key = format!(
        "{}/{sa}/{}/{seconds}",
        pod.metadata.uid.as_deref().unwrap_or_default(),
        t.audience.as_deref().unwrap_or_default()
    );
    if let Some((tok, at, ttl)) = tokens()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned()
    {
        let renew = (ttl.mul_f64(0.8)).min(Duration::from_secs(24 * 3600));
        if at.elapsed() < renew {
            return Ok(tok);
        }
    }
    let token = request_token(kl, pod, t, &ns, &sa, seconds).await?;
    tokens().lock().unwrap_or_else(|p| p.into_inner()).insert(
        key,
        (
            token.clone(),
            Instant::now(),
            Duration::from_secs(seconds.max(0) as u64),
        ),
    );
    Ok(token)
}

async fn request_token(
    kl: &Kubelet,
    pod: &Pod,
    t: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
    ns: &str,
    sa: &str,
    seconds: i64,
) -> Result<String, String> {
    let body = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": t.audience.as_ref().map(|a| vec![a.clone()]).unwrap_or_default(),
            "expirationSeconds": seconds,
            "boundObjectRef": {
                "apiVersion": "v1", "kind": "Pod",
                "name": pod.metadata.name, "uid": pod.metadata.uid,
            }
        }
    });
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"
    ))
    .header("content-type", "application/json")
    .body(body.to_string().into_bytes())
    .map_err(|e| e.to_string())?;
    let v: serde_json::Value = kl
        .client
        .request(req)
        .await
        .map_err(|e| format!("requesting a token for service account {ns}/{sa}: {e}"))?;
    v.pointer("/status/token")
        .and_then(|t| t.as_str())
        .map(String::from)
        .ok_or_else(|| format!("the token request for {ns}/{sa} returned no token"))
}

/// Write `files` into `dir` the atomic-writer way.
pub fn atomic_write(dir: &Path, files: &Files) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let stamp = chrono::Utc::now()
        .format("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let ts_dir = dir.join(&stamp);
    // unchanged content: nothing to do
    let data_link = dir.join("..data");
    if let Ok(cur) = std::fs::read_link(&data_link) {
        let cur_dir = dir.join(&cur);
        let same = files
            .iter()
            .all(|(p, content, _)| std::fs::read(cur_dir.join(p)).is_ok_and(|c| &c == content))
            && count_files(&cur_dir) == files.len();
        if same {
            return Ok(());
        }
    }
    std::fs::create_dir_all(&ts_dir)?;
    for (p, content, mode) in files {
        if p.split('/').any(|c| c == "..") || p.starts_with('/') {
            return Err(std::io::Error::other(format!("invalid path {p:?}")));
        }
        let f = ts_dir.join(p);
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&f, content)?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode & 0o7777))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    let old = std::fs::read_link(&data_link).ok();
    std::fs::rename(&tmp, &data_link)?;
    // user-visible names: top-level entries through ..data
    let mut tops: Vec<String> = files
        .iter()
        .map(|(p, _, _)| p.split('/').next().unwrap_or(p).to_string())
        .collect();
    tops.sort();
    tops.dedup();
    for t in &tops {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(t), &link)?;
        }
    }
    // names no longer present go
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if !n.starts_with("..") && !tops.contains(&n) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// Unmount the pod's tmpfs volumes (the directory itself goes with the pod's).
pub async fn teardown(pod_dir: &Path) {
    let vols = pod_dir.join("volumes");
    let Ok(mut plugins) = tokio::fs::read_dir(&vols).await else {
        return;
    };
    while let Ok(Some(p)) = plugins.next_entry().await {
        let Ok(mut rd) = tokio::fs::read_dir(p.path()).await else {
            continue;
        };
        while let Ok(Some(v)) = rd.next_entry().await {
            let path = v.path();
            if crate::runtime::is_mounted(&path) {
                if let Err(e) = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
                    tracing::warn!(path = %path.display(), error = %e, "unmounting a volume");
                }
            }
        }
    }
}

impl Volumes {
    /// The bind mounts of container `c`: its volumeMounts plus /etc/hosts,
    /// /etc/resolv.conf, /etc/hostname and the termination log.
    pub async fn mounts_for(
        &self,
        kl: &Kubelet,
        pod: &Pod,
        c: &Container,
        id: &str,
        sandbox: &Sandbox,
    ) -> Result<Vec<MountSpec>, String> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let pod_dir = kl.pod_dir(&uid);
        let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
        let mut mounts = Vec::new();
        for vm in c.volume_mounts.as_deref().unwrap_or_default() {
            let base = self
                .paths
                .get(&vm.name)
                .ok_or_else(|| format!("volume {:?} not found in the pod", vm.name))?;
            let mut host = base.clone();
            if let Some(sub) = vm.sub_path.as_ref().filter(|s| !s.is_empty()) {
                if sub.split('/').any(|x| x == "..") || sub.starts_with('/') {
                    return Err(format!("invalid subPath {sub:?}"));
                }
                host = host.join(sub);
                if tokio::fs::metadata(&host).await.is_err() {
                    mkdir(&host).await?;
                }
            }
            mounts.push(MountSpec {
                host_path: host,
                container_path: vm.mount_path.clone(),
                read_only: vm.read_only.unwrap_or(false) || self.read_only.contains(&vm.name),
                propagation: vm.mount_propagation.clone(),
            });
        }
        let etc = pod_dir.join("etc");
        mkdir(&etc).await?;
        let host_network = spec.host_network.unwrap_or(false);
        let hostname = if host_network {
            kl.settings.node_name.clone()
        } else {
            spec.hostname
                .clone()
                .or_else(|| pod.metadata.name.clone())
                .unwrap_or_default()
        };
        let fqdn = spec.subdomain.as_ref().map(|sd| {
            format!(
                "{hostname}.{sd}.{}.svc.{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                kl.settings.cluster_domain
            )
        });
        let mut hosts = String::from(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        if let Some(ip) = sandbox.ips.first() {
            match &fqdn {
                Some(f) => hosts.push_str(&format!("{ip}\t{f}\t{hostname}\n")),
                None => hosts.push_str(&format!("{ip}\t{hostname}\n")),
            }
        }
        for ha in spec.host_aliases.as_deref().unwrap_or_default() {
            hosts.push_str(&format!(
                "\n# Entries added by HostAliases.\n{}\t{}\n",
                ha.ip,
                ha.hostnames.as_deref().unwrap_or_default().join("\t")
            ));
        }
        write_if_changed(&etc.join("hosts"), hosts.as_bytes()).await?;
        write_if_changed(&etc.join("hostname"), format!("{hostname}\n").as_bytes()).await?;
        write_if_changed(&etc.join("resolv.conf"), resolv_conf(kl, pod).as_bytes()).await?;
        let term_dir = pod_dir.join("containers").join(&c.name);
        mkdir(&term_dir).await?;
        let term = term_dir.join(id);
        tokio::fs::write(&term, b"")
            .await
            .map_err(|e| format!("creating {}: {e}", term.display()))?;
        let has = |p: &str| mounts.iter().any(|m: &MountSpec| m.container_path == p);
        let mut extra = Vec::new();
        if !has("/etc/hosts") && !host_network {
            extra.push(("/etc/hosts", etc.join("hosts")));
        }
        if !has("/etc/hostname") {
            extra.push(("/etc/hostname", etc.join("hostname")));
        }
        if !has("/etc/resolv.conf") {
            extra.push(("/etc/resolv.conf", etc.join("resolv.conf")));
        }
        let term_path = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        for (p, h) in extra {
            mounts.push(MountSpec {
                host_path: h,
                container_path: p.to_string(),
                read_only: false,
                propagation: None,
            });
        }
        mounts.push(MountSpec {
            host_path: term,
            container_path: term_path,
            read_only: false,
            propagation: None,
        });
        Ok(mounts)
    }
}

async fn write_if_changed(p: &Path, data: &[u8]) -> Result<(), String> {
    if tokio::fs::read(p).await.is_ok_and(|d| d == data) {
        return Ok(());
    }
    tokio::fs::write(p, data)
        .await
        .map_err(|e| format!("writing {}: {e}", p.display()))
}

/// resolv.conf as upstream builds it for the pod's dnsPolicy.
pub fn resolv_conf(kl: &Kubelet, pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.clone())
        .unwrap_or_else(|| "ClusterFirst".into());
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let d = &kl.settings.cluster_domain;
    let cluster = !kl.settings.cluster_dns.is_empty()
        && (policy == "ClusterFirstWithHostNet" || (policy == "ClusterFirst" && !host_network));
    let mut servers: Vec<String> = Vec::new();
    let mut searches: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    if policy == "None" {
        // only what dnsConfig says
    } else if cluster {
        servers = kl.settings.cluster_dns.clone();
        searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
        options.push("ndots:5".into());
    } else {
        for l in host.lines() {
            let mut it = l.split_whitespace();
            match it.next() {
                Some("nameserver") => servers.extend(it.map(String::from)),
                Some("search") => searches.extend(it.map(String::from)),
                Some("options") => options.extend(it.map(String::from)),
                _ => {}
            }
        }
    }
    if let Some(dc) = spec.and_then(|s| s.dns_config.as_ref()) {
        servers.extend(dc.nameservers.clone().unwrap_or_default());
        searches.extend(dc.searches.clone().unwrap_or_default());
        for o in dc.options.as_deref().unwrap_or_default() {
            let name = o.name.clone().unwrap_or_default();
            options.retain(|x| x.split(':').next() != Some(name.as_str()));
            options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for s in servers.iter().take(3) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The container's environment: reads what env/envFrom reference, and the
/// namespace's Services for the service links, then resolves with `env`.
pub async fn container_env(
    kl: &Kubelet,
    pod: &Pod,
    c: &Container,
    st: &PodState,
    image: &crate::image::ImageConfig,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut cms: BTreeMap<String, Option<BTreeMap<String, String>>> = BTreeMap::new();
    let mut secrets: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>> = BTreeMap::new();
    let mut want_cm = Vec::new();
    let mut want_secret = Vec::new();
    for e in c.env.as_deref().unwrap_or_default() {
        if let Some(vf) = &e.value_from {
            if let Some(r) = &vf.config_map_key_ref {
                want_cm.push(r.name.clone());
            }
            if let Some(r) = &vf.secret_key_ref {
                want_secret.push(r.name.clone());
            }
        }
    }
    for ef in c.env_from.as_deref().unwrap_or_default() {
        if let Some(r) = &ef.config_map_ref {
            want_cm.push(r.name.clone());
        }
        if let Some(r) = &ef.secret_ref {
            want_secret.push(r.name.clone());
        }
    }
    for n in want_cm {
        if !cms.contains_key(&n) {
            let v = config_map(kl, &ns, &n).await?.map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).to_string()))
                    .collect()
            });
            cms.insert(n, v);
        }
    }
    for n in want_secret {
        if !secrets.contains_key(&n) {
            let v = secret(kl, &ns, &n).await?;
            secrets.insert(n, v);
        }
    }
    let service_env = service_env(kl, pod).await;
    let sandbox_ips = st
        .sandbox
        .as_ref()
        .map(|s| s.ips.clone())
        .unwrap_or_default();
    let allocatable = node_allocatable();
    let cm_fn = |n: &str| cms.get(n).cloned().flatten();
    let secret_fn = |n: &str| secrets.get(n).cloned().flatten();
    let src = crate::env::EnvSources {
        pod,
        node_name: &kl.settings.node_name,
        pod_ip: sandbox_ips.first().map(String::as_str),
        pod_ips: &sandbox_ips,
        host_ip: kl.settings.node_ips.first().map(String::as_str),
        host_ips: &kl.settings.node_ips,
        config_maps: &cm_fn,
        secrets: &secret_fn,
        service_env,
        node_allocatable: allocatable,
    };
    crate::env::container_env(c, &image.env, &src).map_err(|e| e.to_string())
}

fn node_allocatable() -> BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity> {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = crate::node::meminfo("MemTotal").unwrap_or(0);
    BTreeMap::from([
        ("cpu".to_string(), Quantity(cpus.to_string())),
        ("memory".to_string(), Quantity(mem.to_string())),
    ])
}

/// Docker-links style variables for the namespace's Services (and the
/// `kubernetes` Service's KUBERNETES_* from default), as upstream.
async fn service_env(kl: &Kubelet, pod: &Pod) -> Vec<(String, String)> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut services: Vec<Service> = Vec::new();
    if links {
        if let Ok(l) = Api::<Service>::namespaced(kl.client.clone(), &ns)
            .list(&ListParams::default())
            .await
        {
            services.extend(l.items);
        }
    }
    if ns != "default" || !links {
        if let Ok(Some(k)) = Api::<Service>::namespaced(kl.client.clone(), "default")
            .get_opt("kubernetes")
            .await
        {
            services.retain(|s| s.metadata.name.as_deref() != Some("kubernetes"));
            services.push(k);
        }
    }
    let mut out = Vec::new();
    for s in services {
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        let Some(ip) = spec
            .cluster_ip
            .clone()
            .filter(|i| !i.is_empty() && i != "None")
        else {
            continue;
        };
        let name = s
            .metadata
            .name
            .clone()
            .unwrap_or_default()
            .to_uppercase()
            .replace('-', "_");
        let ports = spec.ports.clone().unwrap_or_default();
        out.push((format!("{name}_SERVICE_HOST"), ip.clone()));
        if let Some(p0) = ports.first() {
            out.push((format!("{name}_SERVICE_PORT"), p0.port.to_string()));
        }
        for p in &ports {
            if let Some(pn) = &p.name {
                out.push((
                    format!(
                        "{name}_SERVICE_PORT_{}",
                        pn.to_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        if let Some(p0) = ports.first() {
            let proto = p0.protocol.clone().unwrap_or_else(|| "TCP".into());
            out.push((
                format!("{name}_PORT"),
                format!("{}://{ip}:{}", proto.to_lowercase(), p0.port),
            ));
        }
        for p in &ports {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let pre = format!("{name}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.push((
                pre.clone(),
                format!("{}://{ip}:{}", proto.to_lowercase(), p.port),
            ));
            out.push((format!("{pre}_PROTO"), proto.to_lowercase()));
            out.push((format!("{pre}_PORT"), p.port.to_string()));
            out.push((format!("{pre}_ADDR"), ip.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn atomic_writer_swaps_data() {
        let d = tempfile::tempdir().unwrap();
        let files: Files = vec![
            ("a".into(), b"1".to_vec(), 0o644),
            ("b".into(), b"2".to_vec(), 0o600),
        ];
        atomic_write(d.path(), &files).unwrap();
        assert_eq!(read(&d.path().join("a")), "1");
        let first = std::fs::read_link(d.path().join("..data")).unwrap();
        // same content: no new generation
        atomic_write(d.path(), &files).unwrap();
        assert_eq!(std::fs::read_link(d.path().join("..data")).unwrap(), first);
        let files: Files = vec![("a".into(), b"3".to_vec(), 0o644)];
        atomic_write(d.path(), &files).unwrap();
        assert_eq!(read(&d.path().join("a")), "3");
        assert!(!d.path().join("b").exists(), "a removed key disappears");
        assert!(
            !d.path().join(&first).exists(),
            "the old generation is removed"
        );
        let bad: Files = vec![("../x".into(), b"".to_vec(), 0o644)];
        assert!(atomic_write(d.path(), &bad).is_err());
    }
}
