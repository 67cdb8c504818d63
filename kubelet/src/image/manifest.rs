//! Manifest, index and image-config documents.

use serde::Deserialize;

use super::reference::parse_digest;
use super::{ImageConfig, ImageError};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The `Accept` header for manifest requests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// What a manifest endpoint returned.
#[derive(Debug)]
pub enum Document {
    Index(Vec<Descriptor>),
    Manifest {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// Parses a manifest or index; `content_type` is the response's `Content-Type`, used when the
/// document does not name its own media type.
pub fn parse_document(bytes: &[u8], content_type: Option<&str>) -> Result<Document, ImageError> {
    let raw: RawDocument = serde_json::from_slice(bytes)
        .map_err(|e| ImageError::Invalid(format!("invalid manifest: {e}")))?;
    let header_type = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
        .filter(|c| !c.is_empty() && c != "application/json" && c != "text/plain");
    let media_type = raw.media_type.clone().or(header_type).unwrap_or_default();
    if raw.schema_version == Some(1)
        || media_type == DOCKER_SCHEMA1
        || media_type == DOCKER_SCHEMA1_SIGNED
    {
        return Err(ImageError::Invalid(
            "docker schema 1 manifests are not supported".into(),
        ));
    }
    let is_index = match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        "" => raw.manifests.is_some(),
        other => {
            return Err(ImageError::Invalid(format!(
                "unsupported manifest media type {other:?}"
            )))
        }
    };
    if is_index {
        let manifests = raw.manifests.unwrap_or_default();
        for m in &manifests {
            parse_digest(&m.digest).map_err(ImageError::Invalid)?;
        }
        return Ok(Document::Index(manifests));
    }
    let config = raw
        .config
        .ok_or_else(|| ImageError::Invalid("manifest has no config".into()))?;
    parse_digest(&config.digest).map_err(ImageError::Invalid)?;
    let layers = raw.layers.unwrap_or_default();
    for l in &layers {
        parse_digest(&l.digest).map_err(ImageError::Invalid)?;
    }
    Ok(Document::Manifest { config, layers })
}

/// Picks the manifest for `linux/<arch>` from an index (the arm64 variant must be v8 or
/// absent; for 32-bit arm the highest variant wins).
pub fn select_platform<'a>(manifests: &'a [Descriptor], arch: &str) -> Option<&'a Descriptor> {
    let mut candidates = manifests.iter().filter(|m| {
        m.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == arch)
    });
    let variant = |m: &Descriptor| {
        m.platform
            .as_ref()
            .and_then(|p| p.variant.clone())
            .unwrap_or_default()
    };
    match arch {
        "arm64" => candidates.find(|m| matches!(variant(m).as_str(), "" | "v8")),
        "arm" => candidates.max_by_key(|m| variant(m)),
        _ => candidates.next(),
    }
}

/// What we keep from an image config blob.
pub struct ParsedConfig {
    pub config: ImageConfig,
    pub diff_ids: Vec<String>,
}

pub fn parse_config(bytes: &[u8]) -> Result<ParsedConfig, ImageError> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        config: Option<Inner>,
        #[serde(default)]
        rootfs: Option<RootFs>,
    }
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "PascalCase")]
    struct Inner {
        #[serde(default)]
        env: Option<Vec<String>>,
        #[serde(default)]
        entrypoint: Option<Vec<String>>,
        #[serde(default)]
        cmd: Option<Vec<String>>,
        #[serde(default)]
        working_dir: Option<String>,
        #[serde(default)]
        user: Option<String>,
    }
    #[derive(Deserialize)]
    struct RootFs {
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    let f: File = serde_json::from_slice(bytes)
        .map_err(|e| ImageError::Invalid(format!("invalid image config: {e}")))?;
    let inner = f.config.unwrap_or_default();
    let diff_ids = f.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    Ok(ParsedConfig {
        config: ImageConfig {
            env: inner.env.unwrap_or_default(),
            entrypoint: inner.entrypoint.unwrap_or_default(),
            cmd: inner.cmd.unwrap_or_default(),
            working_dir: inner.working_dir.filter(|s| !s.is_empty()),
            user: inner.user.filter(|s| !s.is_empty()),
        },
        diff_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    #[test]
    fn index_platform_selection() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"unknown","os":"unknown"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"windows"}}}}
            ]}}"#,
            d(1),
            d(2),
            d(3),
            d(4)
        );
        let Document::Index(m) = parse_document(json.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(select_platform(&m, "amd64").unwrap().digest, d(2));
        assert_eq!(select_platform(&m, "arm64").unwrap().digest, d(1));
        assert!(select_platform(&m, "s390x").is_none());
    }

    #[test]
    fn manifests_and_media_types() {
        let json = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":10}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":20}}]}}"#,
            d(5),
            d(6)
        );
        match parse_document(json.as_bytes(), Some(DOCKER_MANIFEST)).unwrap() {
            Document::Manifest { config, layers } => {
                assert_eq!(config.digest, d(5));
                assert_eq!(layers.len(), 1);
                assert_eq!(layers[0].size, 20);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_document(br#"{"schemaVersion":1,"fsLayers":[]}"#, None).is_err());
        assert!(parse_document(
            br#"{"schemaVersion":2,"config":{"digest":"sha256:../../etc","size":1}}"#,
            None
        )
        .is_err());
        assert!(parse_document(b"{}", Some("application/x-weird")).is_err());
    }

    #[test]
    fn config_fields() {
        let c = parse_config(
            br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],
            "Entrypoint":null,"WorkingDir":"","User":"65534"},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#,
        )
        .unwrap();
        assert_eq!(c.config.env, vec!["PATH=/bin"]);
        assert_eq!(c.config.cmd, vec!["/bin/sh"]);
        assert!(c.config.entrypoint.is_empty());
        assert_eq!(c.config.working_dir, None);
        assert_eq!(c.config.user.as_deref(), Some("65534"));
        assert_eq!(c.diff_ids, vec!["sha256:aa"]);
        assert_eq!(parse_config(b"{}").unwrap().config, ImageConfig::default());
    }
}
