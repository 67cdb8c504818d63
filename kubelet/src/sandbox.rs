//! A pod's sandbox without a pause container: a named network namespace
//! (bind-mounted on /var/run/netns/ik-<uid>, as `ip netns add` does), and
//! persistent IPC and UTS namespaces bind-mounted under the pod's directory,
//! all made in-process by a short-lived thread (no command per pod), which
//! every container of the pod joins by path. The network is set up by the CNI
//! plugins (see `cni`). Host-network pods have no network namespace. A pod
//! with `shareProcessNamespace` gets a PID namespace whose init is the
//! kubelet binary run as `kubelet --pause` (it reaps orphans), which the
//! containers join through `/proc/<pid>/ns/pid`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::cni::{Cni, PortMapping};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what}: {message}")]
    Command { what: String, message: String },
    #[error("{0}")]
    Cni(#[from] crate::cni::CniError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a pod's containers join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    /// None for hostNetwork pods
    pub netns: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub ips: Vec<String>,
    /// the init of the pod's shared PID namespace (shareProcessNamespace)
    #[serde(default)]
    pub pid_holder: Option<i32>,
}

pub fn netns_name(uid: &str) -> String {
    format!("ik-{uid}")
}

async fn run(what: &str, cmd: &mut Command) -> Result<(), SandboxError> {
    let out = cmd.output().await.map_err(|e| SandboxError::Command {
        what: what.to_string(),
        message: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SandboxError::Command {
            what: what.to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Options a sandbox is made with.
pub struct SandboxSpec<'a> {
    pub uid: &'a str,
    pub hostname: &'a str,
    pub host_network: bool,
    pub host_ipc: bool,
    pub node_ips: &'a [String],
    pub ports: &'a [PortMapping],
    /// shareProcessNamespace: the kubelet binary, to run as the PID namespace's init
    pub share_pid: Option<&'a Path>,
}

/// Make the sandbox of a pod under `pod_dir`; safe to call again for a
/// sandbox made halfway (each step checks what is there).
pub async fn create(
    pod_dir: &Path,
    s: &SandboxSpec<'_>,
    cni: Option<&Cni>,
) -> Result<Sandbox, SandboxError> {
    let nsdir = pod_dir.join("ns");
    tokio::fs::create_dir_all(&nsdir)
        .await
        .map_err(|source| SandboxError::Io {
            what: "creating",
            path: nsdir.clone(),
            source,
        })?;
    let ipc = nsdir.join("ipc");
    let uts = nsdir.join("uts");
    let mut sandbox = Sandbox {
        netns: None,
        ipc: (!s.host_ipc).then(|| ipc.clone()),
        uts: (!s.host_network).then(|| uts.clone()),
        ips: Vec::new(),
        pid_holder: None,
    };
    if let Some(exe) = s.share_pid {
        sandbox.pid_holder = Some(pid_namespace(pod_dir, exe).await?);
    }
    if !crate::runtime::is_mounted(&uts) || !crate::runtime::is_mounted(&ipc) {
        for f in [&ipc, &uts] {
            if crate::runtime::is_mounted(f) {
                let _ = nix::mount::umount2(f.as_path(), nix::mount::MntFlags::MNT_DETACH);
            }
            tokio::fs::write(f, b"")
                .await
                .map_err(|source| SandboxError::Io {
                    what: "creating",
                    path: f.to_path_buf(),
                    source,
                })?;
        }
        let files = vec![(ipc.clone(), "ipc"), (uts.clone(), "uts")];
        let flags = nix::sched::CloneFlags::CLONE_NEWIPC | nix::sched::CloneFlags::CLONE_NEWUTS;
        if let Err(message) = persist_namespaces(flags, files, Some(s.hostname.to_string())).await {
            // drop what was made, so the next attempt makes them again
            for f in [&ipc, &uts] {
                let _ = nix::mount::umount2(f.as_path(), nix::mount::MntFlags::MNT_DETACH);
            }
            return Err(SandboxError::Command {
                what: "making the pod's ipc and uts namespaces".into(),
                message,
            });
        }
    }
    if s.host_network {
        sandbox.ips = s.node_ips.to_vec();
        return Ok(sandbox);
    }
    let name = netns_name(s.uid);
    let path = PathBuf::from("/var/run/netns").join(&name);
    if !crate::runtime::is_mounted(&path) {
        let made = async {
            tokio::fs::create_dir_all("/var/run/netns")
                .await
                .map_err(|e| e.to_string())?;
            tokio::fs::write(&path, b"")
                .await
                .map_err(|e| e.to_string())?;
            persist_namespaces(
                nix::sched::CloneFlags::CLONE_NEWNET,
                vec![(path.clone(), "net")],
                None,
            )
            .await
        };
        if let Err(message) = made.await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(SandboxError::Command {
                what: "making the pod's network namespace".into(),
                message,
            });
        }
    }
    run(
        "bringing up lo",
        Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]),
    )
    .await?;
    sandbox.netns = Some(path.clone());
    if let Some(cni) = cni {
        let result = cni.add(s.uid, &path, s.ports).await?;
        sandbox.ips = result;
    }
    Ok(sandbox)
}

/// Start the init of a new PID namespace (`unshare --pid --fork kubelet
/// --pause`, in a session of its own so it outlives the kubelet) and return
/// its pid as the machine sees it. A holder left from before is reused.
async fn pid_namespace(pod_dir: &Path, exe: &Path) -> Result<i32, SandboxError> {
    let record = pod_dir.join("ns").join("pid-holder");
    if let Some(pid) = live_holder(&record) {
        return Ok(pid);
    }
    let child = Command::new("setsid")
        .arg("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(exe)
        .arg(PAUSE_FLAG)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| SandboxError::Command {
            what: "starting the pod's PID namespace".into(),
            message: e.to_string(),
        })?;
    let unshare = child.id().unwrap_or(0);
    // the pause process is unshare's child; unshare waits for it
    for _ in 0..100 {
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<i32>().ok())
        {
            let _ = tokio::fs::create_dir_all(pod_dir.join("ns")).await;
            tokio::fs::write(&record, pid.to_string())
                .await
                .map_err(|source| SandboxError::Io {
                    what: "writing",
                    path: record.clone(),
                    source,
                })?;
            return Ok(pid);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err(SandboxError::Command {
        what: "starting the pod's PID namespace".into(),
        message: "its init did not start".into(),
    })
}

/// The PID namespace init recorded in `record`, if it still runs (the pid
/// is a `kubelet --pause`, not a process that took the number since).
fn live_holder(record: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(record).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline
        .windows(PAUSE_FLAG.len())
        .any(|w| w == PAUSE_FLAG.as_bytes())
        .then_some(pid)
}

/// New namespaces of `flags`, kept by bind-mounting them onto `files`
/// ((path, "net" | "ipc" | "uts")), with `hostname` set in a new UTS
/// namespace: made in a thread of its own (namespaces are per thread), which
/// then ends, without running a command.
async fn persist_namespaces(
    flags: nix::sched::CloneFlags,
    files: Vec<(PathBuf, &'static str)>,
    hostname: Option<String>,
) -> Result<(), String> {
    let work = move || -> Result<(), String> {
        nix::sched::unshare(flags).map_err(|e| format!("unshare: {e}"))?;
        if let Some(h) = &hostname {
            nix::unistd::sethostname(h).map_err(|e| format!("sethostname {h:?}: {e}"))?;
        }
        for (file, kind) in &files {
            let src = format!("/proc/thread-self/ns/{kind}");
            nix::mount::mount(
                Some(src.as_str()),
                file.as_path(),
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("bind-mounting {src} on {}: {e}", file.display()))?;
        }
        Ok(())
    };
    tokio::task::spawn_blocking(move || {
        // a fresh thread, not one of the pool's, which would keep the namespaces
        std::thread::spawn(work)
            .join()
            .unwrap_or_else(|_| Err("the namespace thread panicked".into()))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The argument that makes the kubelet binary a PID namespace's init.
pub const PAUSE_FLAG: &str = "--pause";

/// `kubelet --pause`: the init of a pod's shared PID namespace. It reaps
/// the orphans that land on it and otherwise waits to be killed.
pub fn pause() -> ! {
    loop {
        match nix::sys::wait::wait() {
            Ok(_) => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
    }
}

/// Tear the sandbox down: CNI DEL, the network namespace, the ipc/uts mounts.
pub async fn remove(pod_dir: &Path, uid: &str, cni: Option<&Cni>) -> Result<(), SandboxError> {
    let name = netns_name(uid);
    let path = PathBuf::from("/var/run/netns").join(&name);
    if path.exists() {
        if let Some(cni) = cni {
            if let Err(e) = cni.del(uid, &path).await {
                tracing::warn!(%uid, error = %e, "CNI DEL");
            }
        }
        run(
            "removing the pod's network namespace",
            Command::new("ip").args(["netns", "del", &name]),
        )
        .await?;
    } else if let Some(cni) = cni {
        // the namespace is gone (someone removed it): still free the IP
        let _ = cni.del(uid, &path).await;
    }
    // the PID namespace's init, and with it the namespace
    let record = pod_dir.join("ns").join("pid-holder");
    if let Some(pid) = live_holder(&record) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = tokio::fs::remove_file(&record).await;
    for f in ["ipc", "uts"] {
        let p = pod_dir.join("ns").join(f);
        if crate::runtime::is_mounted(&p) {
            let _ = nix::mount::umount2(p.as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = tokio::fs::remove_file(&p).await;
    }
    Ok(())
}
