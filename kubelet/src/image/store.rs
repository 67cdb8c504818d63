//! The local content-addressed image store and the pull logic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::auth::Auth;
use super::layer::unpack_layer_blob;
use super::manifest::{parse_config, parse_document, select_platform, Descriptor, Document};
use super::reference::{digest_hex, ImageRef};
use super::registry::{build_client, HttpClient, Session, MAX_DOCUMENT};
use super::{host_arch, Image, ImageError};

/// Leftovers in `tmp/` older than this are removed when the store is opened.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// What `images/<sha256 of reference>.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// The normalized reference that was pulled.
    reference: String,
    image: Image,
}

/// Pulled images under a root directory; see the module documentation for the layout.
pub struct ImageStore {
    root: PathBuf,
    insecure_registries: Vec<String>,
    client: HttpClient,
    /// Serializes concurrent pulls of the same reference within this process.
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.root)
            .field("insecure_registries", &self.insecure_registries)
            .finish()
    }
}

impl ImageStore {
    /// Opens (creating) the store at `root`. Registries in `insecure_registries` (`host:port`
    /// or `host`) are spoken to over plain http, as are 127.0.0.1, localhost and [::1].
    pub fn open(root: PathBuf, insecure_registries: Vec<String>) -> Result<ImageStore, ImageError> {
        for sub in ["blobs/sha256", "layers/sha256", "images", "tmp"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(|e| ImageError::io(&d, e))?;
        }
        let store = ImageStore {
            root,
            insecure_registries,
            client: build_client()?,
            pulls: Mutex::new(HashMap::new()),
        };
        store.clean_tmp();
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The image if it is present locally: by reference (`busybox`, `host/repo:tag`,
    /// `repo@sha256:...` matching a pulled manifest digest) or by image id
    /// (`sha256:<config digest>` or the bare hex).
    pub fn get(&self, image: &str) -> Option<Image> {
        if let Some(hex) = id_query(image) {
            let id = format!("sha256:{hex}");
            let suffix = format!("@sha256:{hex}");
            return self
                .records()
                .into_iter()
                .map(|r| r.image)
                .find(|i| (i.id == id || i.repo_digest.ends_with(&suffix)) && layers_present(i));
        }
        let r = ImageRef::parse(image).ok()?;
        if let Some(rec) = self.read_record(&r.to_string()) {
            if layers_present(&rec.image) {
                return Some(rec.image);
            }
        }
        let digest = r.digest.as_ref()?;
        let want = format!("{}@{}", r.name(), digest);
        self.records()
            .into_iter()
            .map(|r| r.image)
            .find(|i| i.repo_digest == want && layers_present(i))
    }

    /// Every image present, as (names, size): names are the pulled references and repo
    /// digests, as `node.status.images` wants them.
    pub fn list(&self) -> Vec<(Vec<String>, u64)> {
        let mut by_id: BTreeMap<String, (BTreeSet<String>, u64)> = BTreeMap::new();
        for rec in self.records() {
            if !layers_present(&rec.image) {
                continue;
            }
            let e = by_id
                .entry(rec.image.id.clone())
                .or_insert_with(|| (BTreeSet::new(), rec.image.size));
            e.0.insert(rec.image.repo_digest.clone());
            e.0.insert(rec.reference.clone());
        }
        by_id
            .into_values()
            .map(|(names, size)| (names.into_iter().collect(), size))
            .collect()
    }

    /// Pulls `image`, trying each of `auths` in turn and then anonymously. Blobs and layers
    /// already in the store are reused. When every attempt fails the error is `NotFound`
    /// if any attempt was told so, else the last error; errors other than not-found and
    /// unauthorized stop at once.
    pub async fn pull(&self, image: &str, auths: &[Auth]) -> Result<Image, ImageError> {
        let r = ImageRef::parse(image)?;
        let key = r.to_string();
        let lock = {
            let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
            pulls.entry(key.clone()).or_default().clone()
        };
        let _serialized = lock.lock().await;
        let attempts = auths.iter().map(Some).chain(std::iter::once(None));
        let mut not_found = None;
        let mut last = None;
        for auth in attempts {
            match self.pull_once(&r, &key, auth).await {
                Ok(img) => {
                    tracing::info!(image = %key, id = %img.id, "pulled image");
                    return Ok(img);
                }
                Err(e @ ImageError::NotFound { .. }) => not_found = Some(e),
                Err(e @ ImageError::Unauthorized { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(not_found
            .or(last)
            .unwrap_or_else(|| ImageError::Invalid(format!("pulling {key}: nothing attempted"))))
    }

    async fn pull_once(
        &self,
        r: &ImageRef,
        key: &str,
        auth: Option<&Auth>,
    ) -> Result<Image, ImageError> {
        let plain_http = self.plain_http(r);
        let mut session = Session::new(
            &self.client,
            key.to_string(),
            r.api_host(),
            &r.repository,
            plain_http,
            auth,
        );
        let (top, content_type) = session.manifest(r.manifest_reference()).await?;
        let top_digest = sha256_digest(&top);
        if let Some(d) = &r.digest {
            if *d != top_digest {
                return Err(ImageError::Invalid(format!(
                    "manifest of {key} has digest {top_digest}"
                )));
            }
        }
        let repo_digest = format!("{}@{}", r.name(), top_digest);
        let mut documents = vec![(top_digest, top)];
        let (config, layers) = match parse_document(&documents[0].1, content_type.as_deref())? {
            Document::Manifest { config, layers } => (config, layers),
            Document::Index(list) => {
                let arch = host_arch();
                let chosen = select_platform(&list, arch).ok_or_else(|| {
                    ImageError::Invalid(format!("image {key} has no manifest for linux/{arch}"))
                })?;
                let (bytes, ct) = session.manifest(&chosen.digest).await?;
                let d = sha256_digest(&bytes);
                if d != chosen.digest {
                    return Err(ImageError::Invalid(format!(
                        "manifest {} of {key} downloaded with digest {d}",
                        chosen.digest
                    )));
                }
                let doc = parse_document(&bytes, ct.as_deref())?;
                documents.push((d, bytes));
                match doc {
                    Document::Manifest { config, layers } => (config, layers),
                    Document::Index(_) => {
                        return Err(ImageError::Invalid(format!(
                            "image {key}: an index points to another index"
                        )))
                    }
                }
            }
        };

        // Fast path: the same manifest was pulled before and everything is still here.
        if let Some(rec) = self.read_record(key) {
            if rec.image.repo_digest == repo_digest
                && rec.image.id == config.digest
                && layers_present(&rec.image)
            {
                tracing::debug!(image = %key, "image up to date");
                return Ok(rec.image);
            }
        }
        for l in &layers {
            if l.media_type.contains("zstd") {
                return Err(ImageError::Invalid(format!(
                    "image {key}: layer {} is zstd-compressed ({}), which is not supported",
                    l.digest, l.media_type
                )));
            }
        }
        for (d, bytes) in &documents {
            self.store_blob_bytes(d, bytes)?;
        }

        let config_path = self.ensure_blob(&mut session, &config).await?;
        let parsed = parse_config(&read_limited(&config_path, MAX_DOCUMENT)?)?;
        if !parsed.diff_ids.is_empty() && parsed.diff_ids.len() != layers.len() {
            return Err(ImageError::Invalid(format!(
                "image {key}: the config lists {} layers, the manifest {}",
                parsed.diff_ids.len(),
                layers.len()
            )));
        }
        let mut dirs = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let dir = self.layer_dir(&layer.digest);
            if !dir.is_dir() {
                let blob = self.ensure_blob(&mut session, layer).await?;
                self.unpack(blob, layer, parsed.diff_ids.get(i).cloned(), dir.clone())
                    .await?;
            }
            dirs.push(dir);
        }
        let size = config.size + layers.iter().map(|l| l.size).sum::<u64>();
        let image = Image {
            id: config.digest.clone(),
            repo_digest,
            config: parsed.config,
            layers: dirs,
            size,
        };
        self.write_record(&Record {
            reference: key.to_string(),
            image: image.clone(),
        })?;
        Ok(image)
    }

    fn plain_http(&self, r: &ImageRef) -> bool {
        let host = strip_port(&r.registry);
        if matches!(host, "127.0.0.1" | "localhost" | "::1") {
            return true;
        }
        self.insecure_registries.iter().any(|e| {
            let e = e.trim();
            let e = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"))
                .unwrap_or(e)
                .trim_end_matches('/');
            e == r.registry || e == host || e == r.api_host()
        })
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(digest_hex(digest))
    }

    fn layer_dir(&self, digest: &str) -> PathBuf {
        self.root.join("layers/sha256").join(digest_hex(digest))
    }

    fn tmp_path(&self, what: &str, digest: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.root.join("tmp").join(format!(
            "{what}-{}-{}-{}-{nanos}",
            digest_hex(digest),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// The blob's path, downloading it first unless present.
    async fn ensure_blob(
        &self,
        session: &mut Session<'_>,
        desc: &Descriptor,
    ) -> Result<PathBuf, ImageError> {
        let path = self.blob_path(&desc.digest);
        if path.is_file() {
            return Ok(path);
        }
        let tmp = self.tmp_path("blob", &desc.digest);
        let result = session.blob_to_file(&desc.digest, desc.size, &tmp).await;
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(ImageError::io(&path, e));
        }
        tracing::debug!(digest = %desc.digest, "stored blob");
        Ok(path)
    }

    fn store_blob_bytes(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let path = self.blob_path(digest);
        if path.is_file() {
            return Ok(());
        }
        self.write_atomically(&path, digest, bytes)
    }

    fn write_atomically(&self, path: &Path, tag: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let tmp = self.tmp_path("file", tag);
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            ImageError::io(path, e)
        })
    }

    /// Unpacks a layer blob into a temporary directory and renames it into place; when
    /// another pull got there first its directory is kept and ours dropped.
    async fn unpack(
        &self,
        blob: PathBuf,
        layer: &Descriptor,
        diff_id: Option<String>,
        dir: PathBuf,
    ) -> Result<(), ImageError> {
        let tmp = self.tmp_path("layer", &layer.digest);
        let media_type = layer.media_type.clone();
        let digest = layer.digest.clone();
        let task = tokio::task::spawn_blocking(move || {
            fs::create_dir(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
            let started = std::time::Instant::now();
            if let Err(e) = unpack_layer_blob(&blob, &media_type, diff_id.as_deref(), &tmp) {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
            match fs::rename(&tmp, &dir) {
                Ok(()) => {
                    tracing::debug!(layer = %digest, elapsed = ?started.elapsed(), "unpacked layer");
                    Ok(())
                }
                Err(_) if dir.is_dir() => {
                    let _ = fs::remove_dir_all(&tmp);
                    Ok(())
                }
                Err(e) => {
                    let _ = fs::remove_dir_all(&tmp);
                    Err(ImageError::io(&dir, e))
                }
            }
        });
        task.await
            .map_err(|e| ImageError::Invalid(format!("unpacking layer: {e}")))?
    }

    fn record_path(&self, reference: &str) -> PathBuf {
        let h = hex::encode(Sha256::digest(reference.as_bytes()));
        self.root.join("images").join(format!("{h}.json"))
    }

    fn read_record(&self, reference: &str) -> Option<Record> {
        let path = self.record_path(reference);
        let bytes = fs::read(&path).ok()?;
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(r) if r.reference == reference => Some(r),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable image record");
                None
            }
        }
    }

    fn write_record(&self, rec: &Record) -> Result<(), ImageError> {
        let path = self.record_path(&rec.reference);
        let json = serde_json::to_vec_pretty(rec)
            .map_err(|e| ImageError::Invalid(format!("encoding image record: {e}")))?;
        self.write_atomically(&path, "record", &json)
    }

    fn records(&self) -> Vec<Record> {
        let dir = self.root.join("images");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&p).map(|b| serde_json::from_slice::<Record>(&b)) {
                Ok(Ok(r)) => out.push(r),
                Ok(Err(err)) => {
                    tracing::warn!(path = %p.display(), error = %err, "unreadable image record")
                }
                Err(_) => {}
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        out
    }

    fn clean_tmp(&self) {
        let dir = self.root.join("tmp");
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            if old {
                let p = e.path();
                let r = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                if let Err(err) = r {
                    tracing::warn!(path = %p.display(), error = %err, "cannot remove stale temporary file");
                }
            }
        }
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn layers_present(image: &Image) -> bool {
    image.layers.iter().all(|l| l.is_dir())
}

/// `sha256:<64 hex>` or 64 bare hex: an image id or manifest digest.
fn id_query(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

/// `host:port` -> `host`, `[::1]:5000` -> `::1`.
fn strip_port(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    }
}

fn read_limited(path: &Path, limit: usize) -> Result<Vec<u8>, ImageError> {
    let f = fs::File::open(path).map_err(|e| ImageError::io(path, e))?;
    let mut out = Vec::new();
    f.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ImageError::io(path, e))?;
    if out.len() > limit {
        return Err(ImageError::io(
            path,
            io::Error::new(io::ErrorKind::InvalidData, "file too large"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let s = ImageStore::open(
            tmp.path().to_path_buf(),
            vec!["reg.local:5000".into(), "http://other.local/".into()],
        )
        .unwrap();
        let plain = |r: &str| s.plain_http(&ImageRef::parse(r).unwrap());
        assert!(plain("127.0.0.1:5000/a"));
        assert!(plain("localhost/a"));
        assert!(plain("[::1]:5000/a"));
        assert!(plain("reg.local:5000/a"));
        assert!(!plain("reg.local:5001/a"));
        assert!(plain("other.local:1234/a"));
        assert!(!plain("busybox"));
        assert!(!plain("registry.k8s.io/pause"));
    }

    #[test]
    fn empty_store() {
        let tmp = tempfile::tempdir().unwrap();
        let s = ImageStore::open(tmp.path().join("images"), vec![]).unwrap();
        assert!(s.get("busybox").is_none());
        assert!(s.get(&format!("sha256:{}", "a".repeat(64))).is_none());
        assert!(s.list().is_empty());
        assert!(tmp.path().join("images/blobs/sha256").is_dir());
    }

    #[test]
    fn id_queries() {
        let h = "ab".repeat(32);
        assert_eq!(id_query(&format!("sha256:{h}")), Some(h.as_str()));
        assert_eq!(id_query(&h), Some(h.as_str()));
        assert_eq!(id_query("busybox"), None);
        assert_eq!(strip_port("[::1]:5000"), "::1");
        assert_eq!(strip_port("a.b:5000"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
    }
}
