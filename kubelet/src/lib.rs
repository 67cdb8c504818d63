//! kubelet: runs the pods bound to its node. Pod workers compute what should
//! run from the Pod, the runtime (`runtime`, `shim`) runs containers through
//! youki's libcontainer in sandboxes (`sandbox`, `cni`) over images from the
//! local store (`image`), and the status goes back to the apiserver.

pub mod cgroups;
pub mod cni;
pub mod logs;
pub mod runtime;
pub mod sandbox;
pub mod shim;
