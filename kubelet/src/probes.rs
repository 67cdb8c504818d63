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
        let tls = h.scheme.as_deref() == Some("HTTPS");
        let scheme = if tls { "https" } else { "http" };
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> = h
            .http_headers
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect();
        return match tokio::time::timeout(timeout, http_get(&host, port, &path, &headers, tls))
            .await
        {
            Ok(o) => o,
            Err(_) => Outcome::Failure(format!(
                "Get \"{scheme}://{host}:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
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
    if let Some(g) = &p.grpc {
        let Ok(port) = u16::try_from(g.port) else {
            return Outcome::Failure(format!("invalid port {}", g.port));
        };
        let service = g.service.clone().unwrap_or_default();
        return match tokio::time::timeout(timeout, grpc_check(&pod_ip, port, &service)).await {
            Ok(o) => o,
            Err(_) => Outcome::Failure(format!(
                "timeout: health rpc did not complete within {}s",
                timeout.as_secs()
            )),
        };
    }
    Outcome::Failure("the probe has no handler".into())
}

/// Run a lifecycle hook (postStart, preStop): exec, httpGet, tcpSocket or
/// sleep, within `timeout`. Ok, or upstream-like failure text.
pub async fn run_hook(
    kl: &Kubelet,
    pod: &Pod,
    c: &Container,
    id: &str,
    h: &k8s_openapi::api::core::v1::LifecycleHandler,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    let probe = Probe {
        exec: h.exec.clone(),
        http_get: h.http_get.clone(),
        tcp_socket: h.tcp_socket.clone(),
        timeout_seconds: Some(timeout.as_secs().clamp(1, i32::MAX as u64) as i32),
        ..Default::default()
    };
    match run_probe(kl, pod, c, id, &probe).await {
        Outcome::Success => Ok(()),
        Outcome::Failure(why) => Err(why),
    }
}

/// gRPC health checking (grpc.health.v1.Health/Check) over cleartext
/// HTTP/2, as upstream's grpc probe: SERVING passes, anything else fails.
pub async fn grpc_check(host: &str, port: u16, service: &str) -> Outcome {
    use http_body_util::BodyExt;
    let target = format!("{host}:{port}");
    let tcp = match tokio::net::TcpStream::connect((host, port)).await {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service \"{target}\" within 1s: {e}"
            ))
        }
    };
    let (mut send, conn) = match hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return Outcome::Failure(format!("failed to connect service \"{target}\": {e}")),
    };
    tokio::spawn(conn);
    // HealthCheckRequest { service = 1 } in a gRPC message frame
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        let mut n = service.len();
        while n >= 0x80 {
            msg.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        msg.push(n as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let req = http::Request::post(format!("http://{target}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/1.33")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)));
    let req = match req {
        Ok(r) => r,
        Err(e) => return Outcome::Failure(e.to_string()),
    };
    let resp = match send.send_request(req).await {
        Ok(r) => r,
        Err(e) => return Outcome::Failure(format!("health rpc failed: {e}")),
    };
    let grpc_status = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let mut status = grpc_status(resp.headers());
    let collected = match resp.into_body().collect().await {
        Ok(c) => c,
        Err(e) => return Outcome::Failure(format!("health rpc failed: {e}")),
    };
    if let Some(t) = collected.trailers() {
        status = grpc_status(t).or(status);
    }
    let data = collected.to_bytes();
    if status.as_deref().unwrap_or("0") != "0" {
        return Outcome::Failure(format!(
            "health rpc did not complete: grpc-status {}",
            status.unwrap_or_default()
        ));
    }
    // HealthCheckResponse { status = 1 (enum) } after the 5-byte frame header
    let serving = match data.get(5..) {
        Some([0x08, v, ..]) => *v,
        Some([]) => 0,
        _ => 0,
    };
    let name = match serving {
        1 => return Outcome::Success,
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    };
    Outcome::Failure(format!("service unhealthy (responded with \"{name}\")"))
}

/// Upstream does not verify a probed server's certificate.
#[derive(Debug)]
struct AnyServer(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)))
}

async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    tls: bool,
) -> Outcome {
    let url = format!(
        "{}://{host}:{port}{path}",
        if tls { "https" } else { "http" }
    );
    let tcp = match tokio::net::TcpStream::connect((host, port)).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failure(format!("Get \"{url}\": dial tcp {host}:{port}: {e}")),
    };
    if !tls {
        return http_exchange(tcp, &url, host, port, path, headers).await;
    }
    let connector = match tls_connector() {
        Ok(c) => c,
        Err(e) => return Outcome::Failure(format!("Get \"{url}\": {e}")),
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
        rustls::pki_types::ServerName::try_from("localhost").expect("a valid name")
    });
    match connector.connect(name, tcp).await {
        Ok(s) => http_exchange(s, &url, host, port, path, headers).await,
        Err(e) => Outcome::Failure(format!("Get \"{url}\": remote error: {e}")),
    }
}

async fn http_exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    url: &str,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Outcome {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A TLS server answering every request with `code`; its port.
    async fn https_server(code: u16) -> u16 {
        let kp = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["pod.local".into()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(kp.serialize_der()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn https_probes_skip_verification_and_read_the_status() {
        let ok = https_server(200).await;
        assert_eq!(
            http_get("127.0.0.1", ok, "/healthz", &[], true).await,
            Outcome::Success
        );
        let bad = https_server(503).await;
        assert_eq!(
            http_get("127.0.0.1", bad, "/healthz", &[], true).await,
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );
        // plain HTTP to a TLS port fails rather than hangs
        assert!(matches!(
            tokio::time::timeout(
                Duration::from_secs(5),
                http_get("127.0.0.1", ok, "/", &[], false)
            )
            .await,
            Ok(Outcome::Failure(_))
        ));
    }

    /// A gRPC health server over cleartext HTTP/2 answering `status` for
    /// the service "db" and SERVICE_UNKNOWN (3) for others; its port.
    async fn grpc_server(status: u8) -> u16 {
        use http_body_util::BodyExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| async move {
                            assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            // frame header, then field 1 (service) if any
                            let service = body
                                .get(7..)
                                .map(|s| String::from_utf8_lossy(s).to_string())
                                .unwrap_or_default();
                            let st = if service.is_empty() || service == "db" {
                                status
                            } else {
                                3
                            };
                            let msg = [0u8, 0, 0, 0, 2, 0x08, st];
                            let frames = futures::stream::iter(vec![
                                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                    bytes::Bytes::copy_from_slice(&msg),
                                )),
                                Ok(hyper::body::Frame::trailers({
                                    let mut t = http::HeaderMap::new();
                                    t.insert("grpc-status", http::HeaderValue::from_static("0"));
                                    t
                                })),
                            ]);
                            let mut resp =
                                http::Response::new(http_body_util::StreamBody::new(frames));
                            resp.headers_mut().insert(
                                "content-type",
                                http::HeaderValue::from_static("application/grpc"),
                            );
                            Ok::<_, std::convert::Infallible>(resp)
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn grpc_probes_ask_the_health_service() {
        let serving = grpc_server(1).await;
        assert_eq!(grpc_check("127.0.0.1", serving, "").await, Outcome::Success);
        assert_eq!(
            grpc_check("127.0.0.1", serving, "db").await,
            Outcome::Success
        );
        assert_eq!(
            grpc_check("127.0.0.1", serving, "other").await,
            Outcome::Failure("service unhealthy (responded with \"SERVICE_UNKNOWN\")".into())
        );
        let not = grpc_server(2).await;
        assert_eq!(
            grpc_check("127.0.0.1", not, "").await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert!(matches!(
            grpc_check("127.0.0.1", closed, "").await,
            Outcome::Failure(_)
        ));
    }
}
