//! kubelet: runs the pods bound to its node. Pod workers (`pods`) compute
//! what should run from the Pod; the runtime (`runtime`, `shim`) runs
//! containers through youki's libcontainer in sandboxes (`sandbox`, `cni`)
//! over images from the local store (`image`, `images`), with volumes
//! (`volumes`), probes (`probes`) and logs (`logs`); `node` keeps the Node,
//! its Lease and its status; `server` is the HTTPS kubelet API with
//! `streaming` (exec, attach, port-forward over WebSocket and `spdy`);
//! `static_pods` reads `--pod-manifest-path` and keeps the mirror pods;
//! `agent` puts it together; `bootstrap` requests the client certificate
//! with `--bootstrap-kubeconfig`.

pub mod agent;
pub mod backoff;
pub mod bootstrap;
pub mod cgroups;
pub mod cni;
pub mod config;
pub mod env;
pub mod image;
pub mod images;
pub mod logs;
pub mod node;
pub mod pods;
pub mod probes;
pub mod qos;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod shim;
pub mod spdy;
pub mod spec;
pub mod static_pods;
pub mod streaming;
pub mod volumes;

/// How container IDs are reported in pod status (`<runtime>://<id>`).
pub const CONTAINER_ID_PREFIX: &str = "libcontainer://";
