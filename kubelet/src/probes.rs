//! Startup, readiness and liveness probes with upstream's timing fields
//! (initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold,
//! failureThreshold) and handlers: httpGet and tcpSocket from the kubelet
//! (which shares the node's network with the pod bridge), exec inside the
//! container's namespaces and root (`nsenter` into its init, with the
//! container's environment). Readiness drives the container's ready flag;
//! a failing liveness (or startup) probe asks the worker to restart it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::events::EventType;

use crate::pods::Kubelet;
use crate::runtime::ContainerState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

impl ProbeKind {
    fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
        }
    }
}

#[derive(Debug)]
struct PState {
    since: Instant,
    started: bool,
    ready: bool,
    successes: HashMap<ProbeKind, i32>,
    failures: HashMap<ProbeKind, i32>,
    last: HashMap<ProbeKind, Instant>,
}

impl PState {
    fn new() -> PState {
        PState {
            since: Instant::now(),
            started: false,
            ready: false,
            successes: HashMap::new(),
            failures: HashMap::new(),
            last: HashMap::new(),
        }
    }
}

#[derive(Default)]
pub struct Prober {
    state: Mutex<HashMap<(String, String), PState>>,
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success,
    Failure(String),
}

impl Prober {
    /// A container (re)started: its probes start over.
    pub fn started(&self, uid: &str, name: &str) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.insert((uid.to_string(), name.to_string()), PState::new());
    }

    pub fn forget_pod(&self, uid: &str) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|(u, _), _| u != uid);
    }

    pub fn is_started(&self, uid: &str, c: &Container) -> bool {
        if c.startup_probe.is_none() {
            return true;
        }
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.get(&(uid.to_string(), c.name.clone()))
            .is_some_and(|p| p.started)
    }

    pub fn is_ready(&self, uid: &str, c: &Container) -> bool {
        if !self.is_started(uid, c) {
            return false;
        }
        if c.readiness_probe.is_none() {
            return true;
        }
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.get(&(uid.to_string(), c.name.clone()))
            .is_some_and(|p| p.ready)
    }

    /// Run the probes that are due; true when the container must be
    /// restarted (liveness or startup failed failureThreshold times).
    pub async fn liveness_failed(&self, kl: &Kubelet, pod: &Pod, c: &Container, id: &str) -> bool {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = (uid.clone(), c.name.clone());
        let kinds: Vec<(ProbeKind, &Probe)> = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let st = s.entry(key.clone()).or_insert_with(PState::new);
            let mut v = Vec::new();
            if !st.started {
                if let Some(p) = &c.startup_probe {
                    v.push((ProbeKind::Startup, p));
                } else {
                    st.started = true;
                }
            }
            if st.started {
                if let Some(p) = &c.readiness_probe {
                    v.push((ProbeKind::Readiness, p));
                }
                if let Some(p) = &c.liveness_probe {
                    v.push((ProbeKind::Liveness, p));
                }
            }
            let now = Instant::now();
            v.retain(|(k, p)| {
                let delay = Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64);
                let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
                now.duration_since(st.since) >= delay
                    && st
                        .last
                        .get(k)
                        .is_none_or(|l| now.duration_since(*l) >= period)
            });
            for (k, _) in &v {
                st.last.insert(*k, now);
            }
            v
        };
        let mut restart = false;
        for (kind, probe) in kinds {
            let outcome = run_probe(kl, pod, c, id, probe).await;
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let Some(st) = s.get_mut(&key) else { break };
            let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
            let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
            match outcome {
                Outcome::Success => {
                    st.failures.insert(kind, 0);
                    let n = st.successes.entry(kind).or_insert(0);
                    *n += 1;
                    if *n >= success_threshold {
                        match kind {
                            ProbeKind::Startup => st.started = true,
                            ProbeKind::Readiness => st.ready = true,
                            ProbeKind::Liveness => {}
                        }
                    }
                }
                Outcome::Failure(msg) => {
                    st.successes.insert(kind, 0);
                    let n = st.failures.entry(kind).or_insert(0);
                    *n += 1;
                    let exceeded = *n >= failure_threshold;
                    drop(s);
                    kl.recorder.emit(
                        &crate::pods::container_ref(pod, &c.name, false),
                        EventType::Warning,
                        "Unhealthy",
                        &format!("{} probe failed: {msg}", kind.name()),
                    );
                    let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(st) = s.get_mut(&key) else { break };
                    if exceeded {
                        match kind {
                            ProbeKind::Readiness => st.ready = false,
                            ProbeKind::Liveness | ProbeKind::Startup => restart = true,
                        }
                    }
                }
            }
        }
        restart
    }
}

fn port_of(c: &Container, p: &IntOrString) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|x| x.name.as_deref() == Some(name))
            .and_then(|x| u16::try_from(x.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

async fn run_probe(kl: &Kubelet, pod: &Pod, c: &Container, id: &str, p: &Probe) -> Outcome {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .or_else(|| kl.settings.node_ips.first().cloned())
        .unwrap_or_else(|| "127.0.0.1".into());
    if let Some(h) = &p.http_get {
        let Some(port) = port_of(c, &h.port) else {
            return Outcome::Failure(format!("invalid port {:?}", h.port));
        };
        let host = h.host.clone().unwrap_or(pod_ip);
        if h.scheme.as_deref() == Some("HTTPS") {
            return Outcome::Failure("HTTPS probes are not supported yet".into());
        }
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> = h
            .http_headers
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect();
        return match tokio::time::timeout(timeout, http_get(&host, port, &path, &headers)).await {
            Ok(o) => o,
            Err(_) => Outcome::Failure(format!(
                "Get \"http://{host}:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
        };
    }
    if let Some(t) = &p.tcp_socket {
        let Some(port) = port_of(c, &t.port) else {
            return Outcome::Failure(format!("invalid port {:?}", t.port));
        };
        let host = t.host.clone().unwrap_or(pod_ip);
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(e)) => Outcome::Failure(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Outcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(e) = &p.exec {
        let cmd = e.command.clone().unwrap_or_default();
        let ContainerState::Running { pid, .. } = kl.runtime.state(id) else {
            return Outcome::Failure("the container is not running".into());
        };
        return match tokio::time::timeout(timeout, exec_in(pid, &cmd)).await {
            Ok(Ok((0, _))) => Outcome::Success,
            Ok(Ok((code, out))) => Outcome::Failure(if out.trim().is_empty() {
                format!("command {cmd:?} exited with {code}")
            } else {
                out.trim().to_string()
            }),
            Ok(Err(e)) => Outcome::Failure(e),
            Err(_) => Outcome::Failure(format!(
                "command timed out: {cmd:?} timed out after {}s",
                timeout.as_secs()
            )),
        };
    }
    Outcome::Failure("the probe has no supported handler (grpc is not supported yet)".into())
}

async fn http_get(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> Outcome {
    let url = format!("http://{host}:{port}{path}");
    let mut s = match tokio::net::TcpStream::connect((host, port)).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failure(format!("Get \"{url}\": dial tcp {host}:{port}: {e}")),
    };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return Outcome::Failure(format!("Get \"{url}\": {e}"));
    }
    let mut buf = vec![0u8; 1024];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]).await {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if buf[..got].windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            Err(e) => return Outcome::Failure(format!("Get \"{url}\": {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if (200..400).contains(&code) {
        Outcome::Success
    } else if code == 0 {
        Outcome::Failure(format!("Get \"{url}\": malformed HTTP response"))
    } else {
        Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Run `cmd` inside the container whose init is `pid`: its namespaces, its
/// root and working directory, its environment. Returns (exit code, output).
pub async fn exec_in(pid: i32, cmd: &[String]) -> Result<(i32, String), String> {
    let mut c = exec_command(pid, cmd)?;
    let out = c
        .output()
        .await
        .map_err(|e| format!("running nsenter: {e}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(128), text))
}

/// The command that runs `cmd` in the container of init `pid`.
pub fn exec_command(pid: i32, cmd: &[String]) -> Result<tokio::process::Command, String> {
    if cmd.is_empty() {
        return Err("empty command".into());
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ"))
        .map_err(|e| format!("reading the container's environment: {e}"))?;
    let mut c = tokio::process::Command::new("nsenter");
    c.env_clear();
    for kv in environ.split(|b| *b == 0).filter(|kv| !kv.is_empty()) {
        let kv = String::from_utf8_lossy(kv);
        if let Some((k, v)) = kv.split_once('=') {
            c.env(k, v);
        }
    }
    c.arg("-t")
        .arg(pid.to_string())
        .args(["-m", "-u", "-i", "-n", "-p", "-r", "-w", "--"])
        .args(cmd);
    Ok(c)
}
