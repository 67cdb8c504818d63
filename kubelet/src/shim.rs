//! The container shim: one small, single-threaded process per container, the
//! kubelet binary re-executed as `kubelet --runtime-shim ...` (the role of
//! containerd-shim / conmon).
//!
//! Why a process of its own: libcontainer forks and clones, which is only safe
//! from a single-threaded process (the kubelet is a multi-threaded tokio
//! program); the container's init process becomes the shim's child, so the
//! shim can wait for it and record how it ended; and the shim outlives a
//! kubelet restart, so a restarted kubelet finds the container still running
//! and, later, its exit status on disk.
//!
//! The shim creates and starts the container from an OCI bundle, prints one
//! JSON line to its stdout (`{"pid":N}` or `{"error":"..."}`), copies the
//! container's stdout and stderr into the CRI log file, waits for the
//! container's init to exit, writes the exit record atomically, and exits.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::logs::{LogWriter, Stream};

/// The first argument that turns the kubelet binary into a shim.
pub const SHIM_FLAG: &str = "--runtime-shim";

/// How a container's init process ended, as the shim records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    pub exit_code: i32,
    #[serde(default)]
    pub signal: Option<i32>,
    pub finished_at: String,
    #[serde(default)]
    pub oom_killed: bool,
}

/// What the shim is told on its command line.
#[derive(Debug, Clone, PartialEq)]
pub struct ShimArgs {
    pub id: String,
    /// libcontainer's state directory (one sub-directory per container)
    pub state_root: PathBuf,
    pub bundle: PathBuf,
    pub log: PathBuf,
    pub exit_file: PathBuf,
    /// the container's cgroup, relative to each hierarchy's mount (for OOM detection)
    pub cgroup: String,
    pub log_max_size: u64,
    pub log_max_files: usize,
}

impl ShimArgs {
    pub fn to_args(&self) -> Vec<String> {
        vec![
            SHIM_FLAG.to_string(),
            self.id.clone(),
            self.state_root.display().to_string(),
            self.bundle.display().to_string(),
            self.log.display().to_string(),
            self.exit_file.display().to_string(),
            self.cgroup.clone(),
            self.log_max_size.to_string(),
            self.log_max_files.to_string(),
        ]
    }

    pub fn parse(args: &[String]) -> Result<ShimArgs, String> {
        match args {
            [flag, id, state, bundle, log, exit, cgroup, size, files] if flag == SHIM_FLAG => {
                Ok(ShimArgs {
                    id: id.clone(),
                    state_root: state.into(),
                    bundle: bundle.into(),
                    log: log.into(),
                    exit_file: exit.into(),
                    cgroup: cgroup.clone(),
                    log_max_size: size.parse().map_err(|e| format!("log size {size}: {e}"))?,
                    log_max_files: files.parse().map_err(|e| format!("log files {files}: {e}"))?,
                })
            }
            _ => Err(format!("usage: kubelet {SHIM_FLAG} ID STATE_ROOT BUNDLE LOG EXIT_FILE CGROUP LOG_MAX_SIZE LOG_MAX_FILES")),
        }
    }
}

/// Run as the shim; returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let args = match ShimArgs::parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    // a session of its own: a signal to the kubelet's process group or
    // terminal does not reach the shim or the container
    let _ = nix::unistd::setsid();
    // the container's init is cloned as our child; being a subreaper also
    // collects anything it leaves behind
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let mut out = std::io::stdout();
    let (pid, readers) = match start(&args) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(id = %args.id, error = %e, "starting the container");
            let _ = writeln!(out, "{}", serde_json::json!({ "error": e }));
            let _ = out.flush();
            return 1;
        }
    };
    let _ = writeln!(out, "{}", serde_json::json!({ "pid": pid.as_raw() }));
    let _ = out.flush();
    let (exit_code, signal) = wait_for(pid);
    // the container's own pipes close when its last process goes; a daemon it
    // left holding them must not keep the record from being written
    for r in readers {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !r.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let record = ExitRecord {
        exit_code,
        signal,
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        oom_killed: signal == Some(9) && oom_kills(&args.cgroup) > 0,
    };
    if let Err(e) = write_atomic(&args.exit_file, &record) {
        tracing::error!(path = %args.exit_file.display(), error = %e, "writing the exit record");
        return 1;
    }
    0
}

type Readers = Vec<std::thread::JoinHandle<()>>;

/// Apply the spec's oom_score_adj to the shim itself (the container
/// inherits it); where the machine refuses it (a sandbox without
/// CAP_SYS_RESOURCE), drop it from the spec rather than fail the container.
fn settle_oom_score_adj(bundle: &Path) {
    let path = bundle.join("config.json");
    let Ok(data) = std::fs::read(&path) else {
        return;
    };
    let Ok(mut spec) = serde_json::from_slice::<serde_json::Value>(&data) else {
        return;
    };
    let Some(v) = spec
        .pointer("/process/oomScoreAdj")
        .and_then(|v| v.as_i64())
    else {
        return;
    };
    if std::fs::write("/proc/self/oom_score_adj", v.to_string()).is_ok() {
        return;
    }
    tracing::warn!(
        value = v,
        "this machine refuses oom_score_adj; the container runs without it"
    );
    if let Some(p) = spec.get_mut("process").and_then(|p| p.as_object_mut()) {
        p.remove("oomScoreAdj");
    }
    if let Ok(out) = serde_json::to_vec(&spec) {
        let _ = std::fs::write(&path, out);
    }
}

fn start(args: &ShimArgs) -> Result<(Pid, Readers), String> {
    settle_oom_score_adj(&args.bundle);
    let (out_r, out_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let null = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let writer = LogWriter::open(&args.log, args.log_max_size, args.log_max_files)
        .map_err(|e| format!("log file {}: {e}", args.log.display()))?;
    let writer = Arc::new(Mutex::new(writer));
    let mut container = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.state_root)
        .map_err(|e| e.to_string())?
        .with_stdin(OwnedFd::from(null))
        .with_stdout(OwnedFd::from(out_w))
        .with_stderr(OwnedFd::from(err_w))
        .validate_id()
        .map_err(|e| e.to_string())?
        .as_init(&args.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("creating container: {e}: {e:?}"))?;
    let readers = vec![
        copy_stream(out_r, Stream::Stdout, writer.clone()),
        copy_stream(err_r, Stream::Stderr, writer),
    ];
    container
        .start()
        .map_err(|e| format!("starting container: {e}"))?;
    let pid = container
        .pid()
        .ok_or_else(|| "the container has no pid after start".to_string())?;
    Ok((pid, readers))
}

fn copy_stream(
    mut from: std::io::PipeReader,
    stream: Stream,
    to: Arc<Mutex<LogWriter>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut w = to.lock().unwrap_or_else(|p| p.into_inner());
                    if let Err(e) = w.write(stream, &buf[..n]) {
                        tracing::warn!(error = %e, "writing the container log");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let mut w = to.lock().unwrap_or_else(|p| p.into_inner());
        let _ = w.flush_stream(stream);
    })
}

/// Reap children until `pid` ends; its exit code (128+signal when killed).
fn wait_for(pid: Pid) -> (i32, Option<i32>) {
    loop {
        match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return (code, None),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => {
                return (128 + sig as i32, Some(sig as i32))
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            // no children left: the init is gone without us seeing it
            Err(_) => return (255, None),
        }
    }
}

/// OOM kills counted by the container's memory cgroup (v1 or v2).
fn oom_kills(cgroup: &str) -> u64 {
    let rel = cgroup.trim_start_matches('/');
    let candidates = [
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ];
    for c in candidates {
        if let Ok(text) = std::fs::read_to_string(&c) {
            for line in text.lines() {
                if let Some(n) = line.strip_prefix("oom_kill ") {
                    return n.trim().parse().unwrap_or(0);
                }
            }
        }
    }
    0
}

/// Write JSON to `path` through a temporary file and a rename.
pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let data = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let a = ShimArgs {
            id: "abc".into(),
            state_root: "/run/x".into(),
            bundle: "/var/lib/kubelet/c/abc".into(),
            log: "/var/log/pods/ns_p_u/c/0.log".into(),
            exit_file: "/var/lib/kubelet/c/abc/exit.json".into(),
            cgroup: "/kubepods/besteffort/podu/abc".into(),
            log_max_size: 10 << 20,
            log_max_files: 5,
        };
        assert_eq!(ShimArgs::parse(&a.to_args()), Ok(a));
        assert!(ShimArgs::parse(&["--runtime-shim".to_string()]).is_err());
    }
}
