//! Container images for the kubelet: a Docker Registry v2 / OCI distribution client and a
//! local content-addressed store.
//!
//! Layout under the store root (e.g. `/var/lib/kubelet/images`):
//!
//! * `blobs/sha256/<hex>`: verified blobs (manifests, configs, compressed layers)
//! * `layers/sha256/<layer digest hex>/`: unpacked layers with overlayfs-style whiteouts,
//!   usable directly as overlayfs lower directories
//! * `images/<sha256 of the normalized reference>.json`: one record per pulled reference
//! * `tmp/`: partial downloads and unpacks, renamed into place when complete

mod auth;
mod layer;
mod manifest;
mod reference;
mod registry;
mod store;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use auth::{all_auths_from_dockerconfigjson, auths_from_dockerconfigjson, Auth};
pub use layer::{is_whiteout, unpack_tar};
pub use reference::ImageRef;
pub use store::ImageStore;

/// The parts of an image's configuration a container runtime needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// A pulled image, present in the local store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:<config digest>`
    pub id: String,
    /// `<registry>/<repository>@sha256:<manifest digest>`; for a multi-platform image the
    /// digest is the index's, as docker and containerd report it.
    pub repo_digest: String,
    pub config: ImageConfig,
    /// Unpacked layer directories, bottom first (overlayfs wants `lowerdir` top first).
    pub layers: Vec<PathBuf>,
    /// Compressed size of the config and layers, as listed in the manifest.
    pub size: u64,
}

/// Errors from parsing references, talking to registries and storing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The registry does not know the repository, tag or digest.
    #[error("image {image} not found")]
    NotFound { image: String },
    /// The registry refused the credentials (or their absence).
    #[error("unauthorized to pull image {image}")]
    Unauthorized { image: String },
    /// Any other unexpected HTTP status.
    #[error("registry answered {status} for {image}: {body}")]
    Registry {
        image: String,
        status: u16,
        body: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bad references, malformed or unsupported manifests, digest mismatches, bad layers.
    #[error("{0}")]
    Invalid(String),
    /// Connecting, TLS, timeouts, broken transfers.
    #[error("pulling {image}: {error}")]
    Network { image: String, error: String },
}

impl ImageError {
    /// The HTTP status behind the error, when a registry answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ImageError::NotFound { .. } => Some(404),
            ImageError::Unauthorized { .. } => Some(401),
            ImageError::Registry { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ImageError {
        ImageError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The OCI architecture name of this machine (`amd64`, `arm64`, ...).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        other => other,
    }
}
