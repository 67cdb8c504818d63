//! The container runtime the pod workers drive: bundles on disk, overlayfs
//! root filesystems over the image store's layers, a shim process per
//! container (see `shim`), and the container's state read back from disk, so a
//! restarted kubelet finds everything it had.
//!
//! Layout under `<root-dir>/containers/<id>/`: `config.json` (the OCI spec),
//! `rootfs/` (the overlay mount), `upper/` and `work/`, `pid` once started,
//! `exit.json` once ended, `shim.log` (the shim's own log). libcontainer keeps
//! its state under `<root-dir>/runtime/<id>/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use oci_spec::runtime::Spec;
use tokio::io::AsyncBufReadExt;

use crate::shim::{ExitRecord, ShimArgs};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mounting the root filesystem of {id}: {message}")]
    Mount { id: String, message: String },
    #[error("starting container {id}: {message}")]
    Start { id: String, message: String },
    #[error("container {id}: {message}")]
    Other { id: String, message: String },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.to_path_buf();
    move |source| RuntimeError::Io { what, path, source }
}

/// What the runtime knows about a container.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerState {
    Running {
        pid: i32,
        started_at: String,
    },
    Exited {
        started_at: String,
        exit: ExitRecord,
    },
    /// created but never started, or unknown to the runtime
    Unknown,
}

/// Everything needed to start one container.
pub struct Launch<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    /// image layers, bottom first
    pub layers: &'a [PathBuf],
    pub log: &'a Path,
    pub log_max_size: u64,
    pub log_max_files: usize,
}

#[derive(Clone)]
pub struct Runtime {
    root: PathBuf,
    exe: PathBuf,
}

impl Runtime {
    /// `root` is the kubelet's `--root-dir`; `exe` the kubelet binary (run as the shim).
    /// The kubelet binary (what shims and pod PID namespace inits run).
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    pub fn new(root: &Path, exe: PathBuf) -> Result<Runtime, RuntimeError> {
        for d in ["containers", "runtime"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io("creating", &p))?;
        }
        Ok(Runtime {
            root: root.to_path_buf(),
            exe,
        })
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    fn state_root(&self) -> PathBuf {
        self.root.join("runtime")
    }

    /// Mount the container's root filesystem (overlayfs over the image's
    /// layers) and return it; `start` uses it.
    pub async fn prepare(&self, id: &str, layers: &[PathBuf]) -> Result<PathBuf, RuntimeError> {
        let dir = self.dir(id);
        for d in [dir.join("rootfs"), dir.join("upper"), dir.join("work")] {
            tokio::fs::create_dir_all(&d)
                .await
                .map_err(io("creating", &d))?;
        }
        mount_overlay(id, layers, &dir).await?;
        Ok(dir.join("rootfs"))
    }

    /// Create and start a container; returns its pid. The shim keeps running
    /// after this returns; a task reaps it when it ends.
    pub async fn start(&self, l: &Launch<'_>) -> Result<i32, RuntimeError> {
        let dir = self.dir(l.id);
        let rootfs = dir.join("rootfs");
        for d in [&rootfs, &dir.join("upper"), &dir.join("work")] {
            tokio::fs::create_dir_all(d)
                .await
                .map_err(io("creating", d))?;
        }
        let config = dir.join("config.json");
        let mut spec = l.spec.clone();
        let mut root = spec.root().clone().unwrap_or_default();
        root.set_path(rootfs.clone());
        spec.set_root(Some(root));
        let cgroup = spec
            .linux()
            .as_ref()
            .and_then(|x| x.cgroups_path().clone())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let data = serde_json::to_vec_pretty(&spec).map_err(|e| RuntimeError::Other {
            id: l.id.to_string(),
            message: format!("encoding the OCI spec: {e}"),
        })?;
        tokio::fs::write(&config, data)
            .await
            .map_err(io("writing", &config))?;
        mount_overlay(l.id, l.layers, &dir).await?;

        let args = ShimArgs {
            id: l.id.to_string(),
            state_root: self.state_root(),
            bundle: dir.clone(),
            log: l.log.to_path_buf(),
            exit_file: dir.join("exit.json"),
            cgroup,
            log_max_size: l.log_max_size,
            log_max_files: l.log_max_files,
        };
        let shim_log = dir.join("shim.log");
        let log_file = std::fs::File::create(&shim_log).map_err(io("creating", &shim_log))?;
        let mut child = tokio::process::Command::new(&self.exe)
            .args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(false)
            .spawn()
            .map_err(io("running the shim", &self.exe))?;
        let shim_pid = child.id().unwrap_or(0);
        let Some(stdout) = child.stdout.take() else {
            return Err(RuntimeError::Start {
                id: l.id.to_string(),
                message: "the shim has no stdout".into(),
            });
        };
        let mut line = String::new();
        let read = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        // reap the shim whenever it ends
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let message = match read {
            Err(_) => "the shim did not answer in 60s".to_string(),
            Ok(Err(e)) => format!("reading the shim's answer: {e}"),
            Ok(Ok(_)) => match serde_json::from_str::<serde_json::Value>(line.trim()) {
                Ok(v) => {
                    if let Some(pid) = v.get("pid").and_then(|p| p.as_i64()) {
                        let started =
                            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                        let pidf = dir.join("pid");
                        tokio::fs::write(&pidf, format!("{pid} {started} {shim_pid}"))
                            .await
                            .map_err(io("writing", &pidf))?;
                        return Ok(pid as i32);
                    }
                    v.get("error")
                        .and_then(|e| e.as_str())
                        .unwrap_or("the shim answered nothing")
                        .to_string()
                }
                Err(_) => {
                    let log = tokio::fs::read_to_string(&shim_log)
                        .await
                        .unwrap_or_default();
                    format!("the shim failed: {}", last_line(&log))
                }
            },
        };
        // libcontainer says where it failed in the shim's log
        let log = tokio::fs::read_to_string(&shim_log)
            .await
            .unwrap_or_default();
        let detail: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        let message = if detail.is_empty() {
            message
        } else {
            format!("{message} ({})", detail.join("; "))
        };
        Err(RuntimeError::Start {
            id: l.id.to_string(),
            message,
        })
    }

    /// The container's state as recorded on disk and seen in /proc.
    pub fn state(&self, id: &str) -> ContainerState {
        let dir = self.dir(id);
        let Ok(pidline) = std::fs::read_to_string(dir.join("pid")) else {
            return ContainerState::Unknown;
        };
        let mut parts = pidline.split_whitespace();
        let pid: i32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let started_at = parts.next().unwrap_or_default().to_string();
        let shim: i32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let read_exit = || {
            std::fs::read(dir.join("exit.json"))
                .ok()
                .and_then(|d| serde_json::from_slice::<ExitRecord>(&d).ok())
        };
        if let Some(exit) = read_exit() {
            return ContainerState::Exited { started_at, exit };
        }
        // while the shim lives it will record the exit: until then, running
        if (shim > 0 && alive(shim)) || (pid > 0 && alive(pid)) {
            return ContainerState::Running { pid, started_at };
        }
        // the shim may have written the record just now
        if let Some(exit) = read_exit() {
            return ContainerState::Exited { started_at, exit };
        }
        // the init is gone and the shim did not record it (killed with it)
        ContainerState::Exited {
            started_at,
            exit: ExitRecord {
                exit_code: 137,
                signal: Some(9),
                finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                oom_killed: false,
            },
        }
    }

    /// Send a signal to the container's init.
    pub fn signal(&self, id: &str, sig: nix::sys::signal::Signal) {
        if let ContainerState::Running { pid, .. } = self.state(id) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }

    /// SIGTERM, up to `grace` for it to end, then SIGKILL to every process of
    /// the container. Returns once the init has exited.
    pub async fn stop(&self, id: &str, grace: Duration) {
        use nix::sys::signal::Signal;
        if !matches!(self.state(id), ContainerState::Running { .. }) {
            return;
        }
        self.signal(id, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if !matches!(self.state(id), ContainerState::Running { .. }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rt = self.clone();
        let id2 = id.to_string();
        let _ = tokio::task::spawn_blocking(move || rt.kill_all(&id2)).await;
        for _ in 0..200 {
            if !matches!(self.state(id), ContainerState::Running { .. }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn kill_all(&self, id: &str) {
        match libcontainer::container::Container::load(self.state_root().join(id)) {
            Ok(mut c) => {
                if let Err(e) = c.kill(nix::sys::signal::Signal::SIGKILL, true) {
                    tracing::debug!(%id, error = %e, "libcontainer kill");
                    self.signal(id, nix::sys::signal::Signal::SIGKILL);
                }
            }
            Err(_) => self.signal(id, nix::sys::signal::Signal::SIGKILL),
        }
    }

    /// Remove an exited container: libcontainer's state and cgroup, the
    /// overlay mount and the directory. The log file stays (the kubelet
    /// removes logs with the pod).
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let rt = self.clone();
        let id2 = id.to_string();
        let cgroup = tokio::task::spawn_blocking(move || {
            let state = rt.state_root().join(&id2);
            let mut cgroup = None;
            if let Ok(mut c) = libcontainer::container::Container::load(state.clone()) {
                cgroup = c.spec().ok().map(|s| s.cgroup_path.display().to_string());
                if let Err(e) = c.delete(true) {
                    tracing::warn!(id = %id2, error = %e, "libcontainer delete");
                }
            }
            let _ = std::fs::remove_dir_all(&state);
            cgroup
        })
        .await
        .ok()
        .flatten();
        if let Some(cg) = cgroup {
            crate::cgroups::remove(&cg);
        }
        let dir = self.dir(id);
        let rootfs = dir.join("rootfs");
        if is_mounted(&rootfs) {
            nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
                RuntimeError::Mount {
                    id: id.to_string(),
                    message: format!("unmounting {}: {e}", rootfs.display()),
                }
            })?;
        }
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Io {
                what: "removing",
                path: dir,
                source: e,
            }),
        }
    }

    /// Every container directory on disk (for re-adoption and cleanup).
    pub fn list(&self) -> Vec<String> {
        let mut ids = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join("containers")) {
            for e in rd.flatten() {
                if let Some(n) = e.file_name().to_str() {
                    ids.push(n.to_string());
                }
            }
        }
        ids
    }
}

async fn mount_overlay(id: &str, layers: &[PathBuf], dir: &Path) -> Result<(), RuntimeError> {
    let rootfs = dir.join("rootfs");
    if is_mounted(&rootfs) {
        return Ok(());
    }
    if layers.is_empty() {
        return Err(RuntimeError::Mount {
            id: id.to_string(),
            message: "the image has no layers".into(),
        });
    }
    // overlayfs wants the top layer first
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    nix::mount::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| RuntimeError::Mount {
        id: id.to_string(),
        message: format!("overlay on {}: {e}", rootfs.display()),
    })
}

/// Whether `path` is a mount point (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.display().to_string();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == want))
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn last_line(s: &str) -> &str {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
}
