//! Streaming endpoints of the kubelet: exec, attach and port-forward over
//! the protocols kubectl and the client libraries speak.
//!
//! - exec and attach: WebSocket with the channel protocol (`v5.channel.k8s.io`,
//!   `v4.channel.k8s.io`): binary messages whose first byte is the channel
//!   (0 stdin, 1 stdout, 2 stderr, 3 error: a metav1.Status at the end,
//!   4 resize: `{"Width":..,"Height":..}`, v5's 255 closes a channel).
//! - port-forward: SPDY/3.1 (`portforward.k8s.io`), raw after an HTTP
//!   upgrade or tunneled through a WebSocket (`SPDY/3.1+portforward.k8s.io`,
//!   what kubectl >= 1.31 tries first), one error and one data stream per
//!   connection; and the WebSocket channel protocol of other clients
//!   (`?ports=`, channels 2i data and 2i+1 error of the i-th port, each
//!   opened by the port number in two little-endian bytes).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::pods::{ContainerHandle, Kubelet};
use crate::server::{full, query_pairs, status, Body};
use crate::spdy;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";
const CHANNEL: &str = "channel.k8s.io";
const SPDY_PF_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
const PF: &str = "portforward.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

fn bad_request(message: &str) -> Response<Body> {
    status(400, "BadRequest", message)
}

fn header_list(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn is_websocket(h: &HeaderMap) -> bool {
    header_list(h, "upgrade")
        .iter()
        .any(|u| u.eq_ignore_ascii_case("websocket"))
}

fn is_spdy(h: &HeaderMap) -> bool {
    header_list(h, "upgrade")
        .iter()
        .any(|u| u.eq_ignore_ascii_case("SPDY/3.1"))
}

/// Answer a WebSocket handshake choosing the first of `supported` the
/// client offers (`Ok(None)` when it offers none). The caller gets the
/// response to return and the upgrade to await.
#[allow(clippy::result_large_err)]
fn websocket_accept(
    req: &mut Request<Incoming>,
    supported: &[&str],
) -> Result<(Response<Body>, Option<String>, hyper::upgrade::OnUpgrade), Response<Body>> {
    let h = req.headers();
    let Some(key) = h.get("sec-websocket-key") else {
        return Err(bad_request("missing Sec-WebSocket-Key"));
    };
    let offered = header_list(h, "sec-websocket-protocol");
    let proto = supported
        .iter()
        .find(|s| offered.iter().any(|o| o == *s))
        .map(|s| s.to_string());
    if proto.is_none() && !offered.is_empty() {
        return Err(bad_request(&format!(
            "none of the offered subprotocols {offered:?} is supported (want one of {supported:?})"
        )));
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = r.headers_mut();
    hs.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    hs.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        hs.insert("sec-websocket-accept", v);
    }
    if let Some(p) = proto.as_deref().and_then(|p| HeaderValue::from_str(p).ok()) {
        hs.insert("sec-websocket-protocol", p);
    }
    let on = hyper::upgrade::on(req);
    Ok((r, proto, on))
}

async fn upgraded_ws(on: hyper::upgrade::OnUpgrade) -> Option<Ws> {
    match on.await {
        Ok(u) => Some(WebSocketStream::from_raw_socket(TokioIo::new(u), Role::Server, None).await),
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            None
        }
    }
}

/// End a WebSocket with a normal-closure frame: clients (client-go's
/// gorilla) take only that as the end of every stream, not a bare close.
async fn close_normally(sink: &mut futures::stream::SplitSink<Ws, Message>) {
    use tokio_tungstenite::tungstenite::protocol::frame::{coding::CloseCode, CloseFrame};
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.flush().await;
}

/// What an exec or attach asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecParams {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The parameters from the query, under the apiserver's names (stdin,
/// stdout, stderr) or the kubelet's (input, output, error).
pub fn exec_params(pairs: &[(String, String)]) -> ExecParams {
    let on = |names: &[&str]| {
        pairs.iter().any(|(k, v)| {
            names.contains(&k.as_str()) && matches!(v.as_str(), "1" | "true" | "True")
        })
    };
    ExecParams {
        command: pairs
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect(),
        stdin: on(&["stdin", "input"]),
        stdout: on(&["stdout", "output"]),
        stderr: on(&["stderr", "error"]),
        tty: on(&["tty"]),
    }
}

/// `/exec/{ns}/{pod}/{container}` and `/attach/...`.
pub fn exec(
    kl: &Arc<Kubelet>,
    mut req: Request<Incoming>,
    pod: &Pod,
    container: &str,
    h: ContainerHandle,
    attach: bool,
) -> Response<Body> {
    let mut p = exec_params(&query_pairs(&req));
    if !attach && p.command.is_empty() {
        return bad_request("you must specify at least 1 command");
    }
    if !(p.stdin || p.stdout || p.stderr) {
        return bad_request("you must specify at least one of stdin, stdout, stderr");
    }
    if p.tty {
        // a terminal has one output stream
        p.stderr = false;
    }
    let Some(pid) = h.pid else {
        return bad_request(&format!(
            "container {container} is not running (pod {})",
            pod.metadata.name.as_deref().unwrap_or_default()
        ));
    };
    if !is_websocket(req.headers()) {
        if is_spdy(req.headers()) {
            return bad_request(
                "exec and attach speak WebSocket (v5.channel.k8s.io, v4.channel.k8s.io) here, not SPDY: use kubectl >= 1.30 or a WebSocket client",
            );
        }
        return bad_request("exec and attach need a WebSocket upgrade");
    }
    let (resp, proto, on) = match websocket_accept(&mut req, &[V5, V4, CHANNEL]) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let v5 = proto.as_deref() == Some(V5);
    let status_json = proto.as_deref().is_some_and(|p| p == V5 || p == V4);
    let label = format!(
        "{}/{}/{container}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let kl = kl.clone();
    tokio::spawn(async move {
        let Some(ws) = upgraded_ws(on).await else {
            return;
        };
        let session = Session {
            v5,
            status_json,
            label,
        };
        if attach {
            session.attach(ws, &kl, h, p).await;
        } else {
            session.exec(ws, pid, p).await;
        }
    });
    resp
}

struct Session {
    v5: bool,
    status_json: bool,
    label: String,
}

fn channel_message(ch: u8, data: &[u8]) -> Message {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(ch);
    m.extend_from_slice(data);
    Message::Binary(Bytes::from(m))
}

/// What the client sends on an exec stream.
enum Input {
    Stdin(Bytes),
    CloseStdin,
    Resize(u16, u16),
}

/// Read the client's messages into `tx` until it closes.
async fn read_client(mut rx: futures::stream::SplitStream<Ws>, tx: mpsc::Sender<Input>, v5: bool) {
    while let Some(m) = rx.next().await {
        let data = match m {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let Some((&ch, rest)) = data.split_first() else {
            continue;
        };
        let input = match ch {
            STDIN => Input::Stdin(Bytes::copy_from_slice(rest)),
            RESIZE => {
                let v: serde_json::Value = serde_json::from_slice(rest).unwrap_or_default();
                let w = v.get("Width").and_then(|x| x.as_u64()).unwrap_or(0);
                let h = v.get("Height").and_then(|x| x.as_u64()).unwrap_or(0);
                Input::Resize(w.min(u16::MAX as u64) as u16, h.min(u16::MAX as u64) as u16)
            }
            CLOSE if v5 && rest.first() == Some(&STDIN) => Input::CloseStdin,
            _ => continue,
        };
        if tx.send(input).await.is_err() {
            break;
        }
    }
}

/// The final status of an exec, on the error channel.
fn exit_status(code: Option<i32>, command: &[String]) -> serde_json::Value {
    match code {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(c) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {c}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": c.to_string()}]},
        }),
        None => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("error executing command {command:?}: killed by a signal"),
            "reason": "InternalError",
        }),
    }
}

impl Session {
    fn error_message(&self, v: &serde_json::Value) -> Message {
        if self.status_json {
            channel_message(ERROR, v.to_string().as_bytes())
        } else {
            let text = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
            channel_message(ERROR, text.as_bytes())
        }
    }

    async fn exec(self, ws: Ws, pid: i32, p: ExecParams) {
        let (mut sink, stream) = ws.split();
        let (in_tx, mut in_rx) = mpsc::channel::<Input>(16);
        let reader = tokio::spawn(read_client(stream, in_tx, self.v5));
        let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
            close_normally(&mut sink).await;
        });
        let code = if p.tty {
            run_tty(pid, &p, &mut in_rx, &out_tx).await
        } else {
            run_pipes(pid, &p, &mut in_rx, &out_tx).await
        };
        let st = match code {
            Ok(c) => exit_status(c, &p.command),
            Err(e) => {
                json!({"metadata": {}, "status": "Failure", "message": e, "reason": "InternalError"})
            }
        };
        tracing::debug!(container = %self.label, command = ?p.command, status = %st, "exec ended");
        let _ = out_tx.send(self.error_message(&st)).await;
        drop(out_tx);
        let _ = writer.await;
        reader.abort();
    }

    /// Attach: the container's output from now on (its log), until it ends.
    /// Its stdin is not connected: the shim gives containers /dev/null.
    async fn attach(self, ws: Ws, kl: &Kubelet, h: ContainerHandle, p: ExecParams) {
        let (mut sink, mut stream) = ws.split();
        let offset = std::fs::metadata(&h.log).map(|m| m.len()).unwrap_or(0);
        let mut tail = crate::logs::Tail::new(&h.log, offset);
        loop {
            // whether it ran before the read: its last lines are not lost
            let running = matches!(
                kl.runtime.state(&h.id),
                crate::runtime::ContainerState::Running { .. }
            );
            let records = tail.next().await.unwrap_or_default();
            if !records.is_empty() {
                for rec in records {
                    let ch = if rec.stream == crate::logs::Stream::Stderr && !p.tty {
                        STDERR
                    } else {
                        STDOUT
                    };
                    if (ch == STDOUT && !p.stdout) || (ch == STDERR && !p.stderr) {
                        continue;
                    }
                    if sink.send(channel_message(ch, &rec.content)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            if !running {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                m = stream.next() => match m {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    _ => {}
                },
            }
        }
        let st = json!({"metadata": {}, "status": "Success"});
        let _ = sink.send(self.error_message(&st)).await;
        close_normally(&mut sink).await;
    }
}

/// Pump a reader into channel messages.
async fn pump(mut r: impl tokio::io::AsyncRead + Unpin, ch: u8, out: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(channel_message(ch, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn run_pipes(
    pid: i32,
    p: &ExecParams,
    input: &mut mpsc::Receiver<Input>,
    out: &mpsc::Sender<Message>,
) -> Result<Option<i32>, String> {
    use std::process::Stdio;
    let mut cmd = crate::probes::exec_command(pid, &p.command)?;
    let io = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    cmd.stdin(io(p.stdin))
        .stdout(io(p.stdout))
        .stderr(io(p.stderr))
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the command: {e}"))?;
    let mut stdin = child.stdin.take();
    let mut pumps = Vec::new();
    if let Some(o) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(o, STDOUT, out.clone())));
    }
    if let Some(e) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(e, STDERR, out.clone())));
    }
    let mut client_open = true;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.map_err(|e| e.to_string())?,
            m = input.recv(), if client_open => match m {
                Some(Input::Stdin(b)) => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&b).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some(Input::CloseStdin) => stdin = None,
                Some(Input::Resize(..)) => {}
                None => {
                    // the client went: nobody to report to
                    client_open = false;
                    stdin = None;
                    let _ = child.start_kill();
                }
            },
        }
    };
    drop(stdin);
    for p in pumps {
        let _ = p.await;
    }
    Ok(status.code())
}

async fn run_tty(
    pid: i32,
    p: &ExecParams,
    input: &mut mpsc::Receiver<Input>,
    out: &mpsc::Sender<Message>,
) -> Result<Option<i32>, String> {
    use std::os::fd::AsFd;
    use std::process::Stdio;
    let pty = nix::pty::openpty(None, None).map_err(|e| format!("opening a pty: {e}"))?;
    let master = std::fs::File::from(pty.master);
    let slave = std::fs::File::from(pty.slave);
    let inner = crate::probes::exec_command(pid, &p.command)?;
    // `setsid --ctty`: a session of its own with the pty as its terminal
    let mut cmd = tokio::process::Command::new("setsid");
    cmd.args(["--ctty", "--wait"]);
    let std_inner = inner.as_std();
    cmd.arg(std_inner.get_program()).args(std_inner.get_args());
    cmd.env_clear();
    let mut has_term = false;
    for (k, v) in std_inner.get_envs() {
        if let Some(v) = v {
            has_term |= k == "TERM";
            cmd.env(k, v);
        }
    }
    if !has_term {
        cmd.env("TERM", "xterm");
    }
    let dup = |f: &std::fs::File| f.try_clone().map_err(|e| format!("pty: {e}"));
    cmd.stdin(Stdio::from(dup(&slave)?))
        .stdout(Stdio::from(dup(&slave)?))
        .stderr(Stdio::from(slave))
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the command: {e}"))?;
    drop(cmd);
    let resize_fd = dup(&master)?;
    let mut w = tokio::fs::File::from_std(dup(&master)?);
    let r = tokio::fs::File::from_std(master);
    let pumped = tokio::spawn(pump(r, STDOUT, out.clone()));
    let mut client_open = true;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.map_err(|e| e.to_string())?,
            m = input.recv(), if client_open => match m {
                Some(Input::Stdin(b)) => {
                    let _ = w.write_all(&b).await;
                    let _ = w.flush().await;
                }
                // a terminal's end of input is ^D
                Some(Input::CloseStdin) => {
                    let _ = w.write_all(&[4]).await;
                }
                Some(Input::Resize(cols, rows)) if cols > 0 && rows > 0 => {
                    let ws = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
                    let _ = rustix::termios::tcsetwinsize(resize_fd.as_fd(), ws);
                }
                Some(Input::Resize(..)) => {}
                None => {
                    client_open = false;
                    let _ = child.start_kill();
                }
            },
        }
    };
    // the reader ends with EIO once the last holder of the terminal is gone
    let _ = tokio::time::timeout(Duration::from_secs(5), pumped).await;
    Ok(status.code())
}

/// Open a TCP connection to `port` on the loopback of a network namespace
/// (None: the kubelet's own), as upstream's port-forward does.
pub async fn connect_in(
    netns: Option<PathBuf>,
    port: u16,
) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // a thread of its own: setns changes only the calling thread, which then ends
    std::thread::spawn(move || {
        let r = (|| -> std::io::Result<std::net::TcpStream> {
            if let Some(ns) = &netns {
                let f = std::fs::File::open(ns)?;
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
            }
            let t = Duration::from_secs(10);
            let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            let s = std::net::TcpStream::connect_timeout(&v4, t)
                .or_else(|e| std::net::TcpStream::connect_timeout(&v6, t).map_err(|_| e))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })();
        let _ = tx.send(r);
    });
    let s = rx
        .await
        .map_err(|_| std::io::Error::other("the connecting thread died"))??;
    tokio::net::TcpStream::from_std(s)
}

/// `/portForward/{ns}/{pod}`.
pub fn port_forward(
    mut req: Request<Incoming>,
    pod: &Pod,
    netns: Option<PathBuf>,
) -> Response<Body> {
    let label = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if is_websocket(req.headers()) {
        let pairs = query_pairs(&req);
        let (resp, proto, on) = match websocket_accept(&mut req, &[SPDY_PF_TUNNEL, V4, PF, CHANNEL])
        {
            Ok(x) => x,
            Err(r) => return r,
        };
        tracing::debug!(pod = %label, protocol = ?proto, "port-forward over a WebSocket");
        if proto.as_deref() == Some(SPDY_PF_TUNNEL) {
            tokio::spawn(async move {
                if let Some(ws) = upgraded_ws(on).await {
                    let (a, b) = tokio::io::duplex(256 * 1024);
                    tokio::spawn(tunnel(ws, b));
                    spdy_forward(a, netns, label, uid).await;
                }
            });
            return resp;
        }
        let mut ports = Vec::new();
        for v in pairs.iter().filter(|(k, _)| k == "ports").map(|(_, v)| v) {
            for p in v.split(',') {
                match p.trim().parse::<u16>() {
                    Ok(n) if n > 0 => ports.push(n),
                    _ => return bad_request(&format!("invalid port {p:?}")),
                }
            }
        }
        if ports.is_empty() {
            return bad_request("query parameter \"ports\" is required");
        }
        tokio::spawn(async move {
            if let Some(ws) = upgraded_ws(on).await {
                ws_forward(ws, netns, ports, label).await;
            }
        });
        return resp;
    }
    if is_spdy(req.headers()) {
        let versions = header_list(req.headers(), "x-stream-protocol-version");
        if !versions.is_empty() && !versions.iter().any(|v| v == PF) {
            return bad_request(&format!(
                "none of the stream protocols {versions:?} is supported (want {PF})"
            ));
        }
        tracing::debug!(pod = %label, "port-forward over SPDY");
        let on = hyper::upgrade::on(&mut req);
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let hs = r.headers_mut();
        hs.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        hs.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        hs.insert("x-stream-protocol-version", HeaderValue::from_static(PF));
        tokio::spawn(async move {
            match on.await {
                Ok(u) => spdy_forward(TokioIo::new(u), netns, label, uid).await,
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
        return r;
    }
    bad_request("port-forward needs a SPDY/3.1 or WebSocket upgrade")
}

/// Carry a byte stream in a WebSocket's binary messages, both ways.
async fn tunnel(ws: Ws, mut local: tokio::io::DuplexStream) {
    let (mut sink, mut stream) = ws.split();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            n = local.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() { break },
            },
            m = stream.next() => match m {
                Some(Ok(Message::Binary(b))) => if local.write_all(&b).await.is_err() { break },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    close_normally(&mut sink).await;
}

/// Port-forward over a SPDY session: a pair of streams (error, data) per
/// connection, matched by their requestID header.
async fn spdy_forward<IO>(io: IO, netns: Option<PathBuf>, label: String, uid: String)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (session, mut incoming) = spdy::Session::new(io);
    // the session ends by itself when the connection does; streams already
    // open outlive a GOAWAY
    tokio::spawn(session.run());
    let mut errors: std::collections::HashMap<String, spdy::Stream> = Default::default();
    while let Some(stream) = incoming.recv().await {
        let get = |k: &str| {
            stream
                .headers()
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let (kind, port, request) = (get("streamtype"), get("port"), get("requestid"));
        match kind.as_str() {
            "error" => {
                errors.insert(request, stream);
            }
            "data" => {
                let err = errors.remove(&request);
                let netns = netns.clone();
                let label = label.clone();
                let uid = uid.clone();
                tokio::spawn(async move {
                    forward_one(stream, err, netns, &port, &label, &uid).await;
                });
            }
            other => {
                tracing::debug!(pod = %label, stream_type = %other, "unknown port-forward stream");
                stream.reset();
            }
        }
    }
}

async fn forward_one(
    mut data: spdy::Stream,
    err: Option<spdy::Stream>,
    netns: Option<PathBuf>,
    port: &str,
    label: &str,
    uid: &str,
) {
    let p = port.parse::<u16>();
    let connected = match p {
        Ok(p) => connect_in(netns, p).await.map_err(|e| {
            format!(
                "error forwarding port {p} to pod {label}, uid {uid}: failed to connect to localhost:{p} inside the pod's network namespace: {e}"
            )
        }),
        Err(_) => Err(format!("invalid port {port:?}")),
    };
    let mut tcp = match connected {
        Ok(t) => t,
        Err(msg) => {
            tracing::debug!(pod = %label, %msg, "port-forward failed");
            let _ = data.shutdown().await;
            if let Some(mut e) = err {
                let _ = e.write_all(msg.as_bytes()).await;
                let _ = e.shutdown().await;
            }
            return;
        }
    };
    let _ = tokio::io::copy_bidirectional(&mut data, &mut tcp).await;
    let _ = data.shutdown().await;
    if let Some(mut e) = err {
        let _ = e.shutdown().await;
    }
}

/// Port-forward with the WebSocket channel protocol: one connection per
/// requested port for the life of the WebSocket.
async fn ws_forward(ws: Ws, netns: Option<PathBuf>, ports: Vec<u16>, label: String) {
    let (mut sink, mut stream) = ws.split();
    // every channel opens with its port
    for (i, p) in ports.iter().enumerate() {
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            if sink
                .send(channel_message(ch, &p.to_le_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
    let mut writers: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        match connect_in(netns.clone(), *p).await {
            Ok(t) => {
                let (r, w) = t.into_split();
                tokio::spawn(pump(r, 2 * i as u8, out_tx.clone()));
                writers.push(Some(w));
            }
            Err(e) => {
                let msg = format!(
                    "error forwarding port {p} to pod {label}: failed to connect to localhost:{p}: {e}"
                );
                let _ = out_tx
                    .send(channel_message(2 * i as u8 + 1, msg.as_bytes()))
                    .await;
                writers.push(None);
            }
        }
    }
    drop(out_tx);
    let mut outputs_open = true;
    loop {
        tokio::select! {
            m = out_rx.recv(), if outputs_open => match m {
                Some(m) => if sink.send(m).await.is_err() { return },
                None => outputs_open = false,
            },
            m = stream.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    let Some((&ch, rest)) = b.split_first() else { continue };
                    if ch % 2 == 0 {
                        if let Some(Some(w)) = writers.get_mut(usize::from(ch / 2)) {
                            if w.write_all(rest).await.is_err() {
                                writers[usize::from(ch / 2)] = None;
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
        if !outputs_open && writers.iter().all(Option::is_none) {
            break;
        }
    }
    close_normally(&mut sink).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exec_parameters_under_both_names() {
        let q: Vec<(String, String)> = [
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo hi"),
            ("stdin", "true"),
            ("output", "1"),
            ("stderr", "false"),
            ("tty", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let p = exec_params(&q);
        assert_eq!(p.command, vec!["sh", "-c", "echo hi"]);
        assert!(p.stdin && p.stdout && !p.stderr && p.tty);
    }

    #[test]
    fn exit_codes_become_statuses_kubectl_understands() {
        let ok = exit_status(Some(0), &["true".into()]);
        assert_eq!(ok["status"], "Success");
        let failed = exit_status(Some(3), &["sh".into()]);
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(None, &[])["status"], "Failure");
    }

    #[test]
    fn channel_messages_lead_with_their_channel() {
        match channel_message(STDERR, b"x") {
            Message::Binary(b) => assert_eq!(&b[..], &[2, b'x']),
            m => panic!("unexpected {m:?}"),
        }
    }
}
