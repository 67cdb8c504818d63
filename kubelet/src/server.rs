//! The kubelet's HTTPS server (`--port`, 10250): what the apiserver proxies
//! `kubectl logs`, `exec`, `attach` and `port-forward` to, as upstream's
//! kubelet API (`/containerLogs`, `/exec`, `/attach`, `/portForward`,
//! `/pods`, `/healthz`).
//!
//! Authentication as upstream: x509 client certificates against
//! `--client-ca-file`; without a client certificate a request is anonymous,
//! refused unless `--anonymous-auth` allows it. Authorization as upstream's
//! `--authorization-mode`: AlwaysAllow, or Webhook, which asks the apiserver
//! (a SubjectAccessReview on `nodes/proxy`, `nodes/log`, `nodes/stats`, ...
//! of this node) and remembers answers for 5 minutes (allowed) or 30 seconds
//! (denied).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::logs::{self, LogOptions};
use crate::pods::Kubelet;
use crate::streaming;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// The server's TLS and authentication settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    /// `--tls-cert-file` / `--tls-private-key-file`; without them a
    /// self-signed certificate is made in `--cert-dir`
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub cert_dir: PathBuf,
    /// `--client-ca-file`
    pub client_ca_file: Option<PathBuf>,
    /// `--anonymous-auth`
    pub anonymous: bool,
    /// `--authorization-mode=Webhook`: ask the apiserver
    pub webhook: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("reading {path}: {message}")]
    File { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|e| ServerError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// A self-signed serving certificate for this node, kept in `dir` so it
/// survives restarts (as upstream's kubelet.crt / kubelet.key).
fn self_signed(dir: &Path, node: &str, ips: &[String]) -> Result<(PathBuf, PathBuf), ServerError> {
    let cert = dir.join("kubelet.crt");
    let key = dir.join("kubelet.key");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let mut names = vec![node.to_string()];
    names.extend(ips.iter().cloned());
    let kp = rcgen::KeyPair::generate().map_err(|e| ServerError::Tls(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| ServerError::Tls(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{node}@kubelet"));
    let c = params
        .self_signed(&kp)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let write = |p: &Path, data: String| {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(p, data))
            .map_err(|e| ServerError::File {
                path: p.display().to_string(),
                message: e.to_string(),
            })
    };
    write(&key, kp.serialize_pem())?;
    write(&cert, c.pem())?;
    Ok((cert, key))
}

/// The rustls configuration of the server.
pub fn tls_config(
    t: &TlsSettings,
    node: &str,
    ips: &[String],
) -> Result<rustls::ServerConfig, ServerError> {
    let (cert, key) = match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => self_signed(&t.cert_dir, node, ips)?,
        _ => {
            return Err(ServerError::Tls(
                "--tls-cert-file and --tls-private-key-file go together".into(),
            ))
        }
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut read(&cert)?.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| ServerError::Tls(format!("{}: {e}", cert.display())))?;
    let key = rustls_pemfile::private_key(&mut read(&key)?.as_slice())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| ServerError::Tls(format!("no private key in {}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let builder = match &t.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut read(ca)?.as_slice()) {
                let c = c.map_err(|e| ServerError::Tls(format!("{}: {e}", ca.display())))?;
                roots
                    .add(c)
                    .map_err(|e| ServerError::Tls(format!("{}: {e}", ca.display())))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = if t.anonymous {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder
                .with_client_cert_verifier(v.build().map_err(|e| ServerError::Tls(e.to_string()))?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut sc = builder
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    // upgrades (exec, port-forward) are HTTP/1.1
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(sc)
}

/// Listen on `addr` and serve until `shutdown`; returns the bound address.
pub async fn serve(
    kl: Arc<Kubelet>,
    addr: SocketAddr,
    tls: rustls::ServerConfig,
    anonymous: bool,
    mut shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr, ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((tcp, peer)) = accepted else { continue };
                    tokio::spawn(serve_conn(kl.clone(), acceptor.clone(), tcp, peer, anonymous));
                }
                _ = common::stopped(&mut shutdown) => return,
            }
        }
    });
    Ok(bound)
}

async fn serve_conn(
    kl: Arc<Kubelet>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    anonymous: bool,
) {
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let subject = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| subject_of(c.as_ref()));
    let svc = service_fn(move |req: Request<Incoming>| {
        let kl = kl.clone();
        let subject = subject.clone();
        async move {
            let resp = match subject {
                None if !anonymous => status(401, "Unauthorized", "Unauthorized"),
                _ => {
                    let (user, groups) = subject.unwrap_or_else(|| {
                        (
                            "system:anonymous".into(),
                            vec!["system:unauthenticated".into()],
                        )
                    });
                    tracing::debug!(%user, path = %req.uri().path(), "request");
                    match authorize(&kl, &user, &groups, &req).await {
                        Ok(()) => route(&kl, req).await,
                        Err(r) => r,
                    }
                }
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// The user (CN) and groups (O) of a client certificate, as upstream's x509
/// authenticator.
fn subject_of(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    let name = cn.as_str().ok().map(String::from)?;
    let mut groups: Vec<String> = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    groups.push("system:authenticated".into());
    Some((name, groups))
}

#[cfg(test)]
fn common_name(der: &[u8]) -> Option<String> {
    subject_of(der).map(|(n, _)| n)
}

/// The (verb, subresource of nodes) a request needs, as upstream's kubelet.
pub fn node_attributes(method: &Method, path: &str) -> (&'static str, &'static str) {
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    };
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let sub = match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" => "log",
        "spec" => "spec",
        "checkpoint" => "checkpoint",
        "configz" => "configz",
        "healthz" => "healthz",
        _ => "proxy",
    };
    (verb, sub)
}

type Decisions = std::sync::Mutex<std::collections::HashMap<String, (bool, std::time::Instant)>>;

fn decisions() -> &'static Decisions {
    static D: std::sync::OnceLock<Decisions> = std::sync::OnceLock::new();
    D.get_or_init(Default::default)
}

/// Webhook authorization through the apiserver (a no-op in AlwaysAllow mode).
#[allow(clippy::result_large_err)]
async fn authorize(
    kl: &Kubelet,
    user: &str,
    groups: &[String],
    req: &Request<Incoming>,
) -> Result<(), Response<Body>> {
    if !kl.settings.tls.webhook {
        return Ok(());
    }
    let (verb, sub) = node_attributes(req.method(), req.uri().path());
    let node = kl.settings.node_name.clone();
    let key = format!("{user}|{}|{verb}|{sub}", groups.join(","));
    let cached = decisions()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .copied();
    let allowed = match cached {
        Some((ok, at)) if at.elapsed() < Duration::from_secs(if ok { 300 } else { 30 }) => ok,
        _ => {
            let review = json!({
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": user, "groups": groups,
                    "resourceAttributes": {"verb": verb, "resource": "nodes", "subresource": sub, "name": node}}
            });
            let r = http::Request::post("/apis/authorization.k8s.io/v1/subjectaccessreviews")
                .header("content-type", "application/json")
                .body(review.to_string().into_bytes());
            let answer: Result<serde_json::Value, String> = match r {
                Ok(r) => kl.client.request(r).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match answer {
                Ok(v) => {
                    let ok = v.pointer("/status/allowed").and_then(|a| a.as_bool()) == Some(true);
                    decisions()
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, (ok, std::time::Instant::now()));
                    ok
                }
                Err(e) => {
                    tracing::warn!(error = %e, "asking the apiserver to authorize a request");
                    return Err(status(
                        500,
                        "InternalError",
                        &format!("Authorization error (user={user}, verb={verb}, resource=nodes, subresource={sub})"),
                    ));
                }
            }
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(status(
            403,
            "Forbidden",
            &format!("Forbidden (user={user}, verb={verb}, resource=nodes, subresource={sub})"),
        ))
    }
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn respond(code: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// A metav1.Status failure.
pub fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let s = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    respond(code, "application/json", s.to_string())
}

fn bad_request(message: &str) -> Response<Body> {
    status(400, "BadRequest", message)
}

fn not_found(message: &str) -> Response<Body> {
    status(404, "NotFound", message)
}

/// The query string as (key, value) pairs, repeated keys kept.
pub fn query_pairs(req: &Request<Incoming>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn q<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn flag(pairs: &[(String, String)], keys: &[&str]) -> bool {
    keys.iter()
        .any(|k| matches!(q(pairs, k), Some("1" | "true" | "True" | "")))
}

async fn route(kl: &Arc<Kubelet>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segs.as_slice()) {
        (&Method::GET, ["healthz"]) => respond(200, "text/plain", "ok"),
        (&Method::GET, ["pods"]) => pods(kl),
        (&Method::GET, ["containerLogs", ns, pod, container]) => {
            let pairs = query_pairs(&req);
            container_logs(kl, ns, pod, container, &pairs).await
        }
        (&Method::GET | &Method::POST, ["exec" | "attach", ns, pod, container]) => {
            let attach = segs[0] == "attach";
            match lookup(kl, ns, pod, container) {
                Ok((pod, h)) => streaming::exec(kl, req, &pod, container, h, attach),
                Err(r) => r,
            }
        }
        (&Method::GET | &Method::POST, ["portForward", ns, pod]) => match kl.pod_by_name(ns, pod) {
            Some(p) => {
                let netns = kl.pod_netns(&p);
                streaming::port_forward(req, &p, netns)
            }
            None => not_found(&format!("pod {ns}/{pod} not found on this node")),
        },
        _ => respond(404, "text/plain", "404 page not found\n"),
    }
}

/// The pods this kubelet runs, as a PodList.
fn pods(kl: &Kubelet) -> Response<Body> {
    let items: Vec<Pod> = kl.pods().iter().map(|p| (**p).clone()).collect();
    let list = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
    respond(200, "application/json", list.to_string())
}

/// The pod and the container, or the error response to give.
#[allow(clippy::result_large_err)]
fn lookup(
    kl: &Kubelet,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<(Arc<Pod>, crate::pods::ContainerHandle), Response<Body>> {
    let Some(p) = kl.pod_by_name(ns, pod) else {
        return Err(not_found(&format!("pod {ns}/{pod} not found on this node")));
    };
    let spec = p.spec.as_ref();
    let known = spec.is_some_and(|s| {
        s.containers.iter().any(|c| c.name == container)
            || s.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == container)
    });
    if !known {
        return Err(bad_request(&format!(
            "container {container} is not valid for pod {pod}"
        )));
    }
    match kl.container_handle(&p, container) {
        Some(h) => Ok((p, h)),
        None => {
            let reason = waiting_reason(&p, container).unwrap_or("ContainerCreating".into());
            Err(bad_request(&format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: {reason}"
            )))
        }
    }
}

fn waiting_reason(p: &Pod, container: &str) -> Option<String> {
    let st = p.status.as_ref()?;
    st.container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .find(|s| s.name == container)
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone())
}

fn log_options(pairs: &[(String, String)]) -> Result<LogOptions, String> {
    let num = |k: &str| -> Result<Option<i64>, String> {
        match q(pairs, k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("invalid {k} {v:?}: not an integer")),
        }
    };
    let mut since = None;
    if let Some(s) = num("sinceSeconds")? {
        if s <= 0 {
            return Err("sinceSeconds must be greater than 0".into());
        }
        since = Some(chrono::Utc::now() - chrono::Duration::seconds(s));
    }
    if let Some(t) = q(pairs, "sinceTime").filter(|t| !t.is_empty()) {
        let t = chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| format!("invalid sinceTime {t:?}: {e}"))?;
        since = Some(t.with_timezone(&chrono::Utc));
    }
    let tail_lines = num("tailLines")?;
    let limit_bytes = num("limitBytes")?;
    if limit_bytes.is_some_and(|b| b <= 0) {
        return Err("limitBytes must be greater than 0".into());
    }
    Ok(LogOptions {
        follow: flag(pairs, &["follow"]),
        tail_lines,
        since,
        timestamps: flag(pairs, &["timestamps"]),
        limit_bytes,
    })
}

async fn container_logs(
    kl: &Arc<Kubelet>,
    ns: &str,
    pod: &str,
    container: &str,
    pairs: &[(String, String)],
) -> Response<Body> {
    let opts = match log_options(pairs) {
        Ok(o) => o,
        Err(m) => return bad_request(&m),
    };
    let (_, h) = match lookup(kl, ns, pod, container) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let previous = flag(pairs, &["previous"]);
    let path = if previous {
        match h.previous_log.clone() {
            Some(p) => p,
            None => {
                return bad_request(&format!(
                    "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                ))
            }
        }
    } else {
        h.log.clone()
    };
    // where following starts: what is in the file now
    let start = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let head = match logs::read_logs(&path, &opts) {
        Ok(b) => b,
        Err(e) => {
            return status(
                500,
                "InternalError",
                &format!("reading the logs of {container}: {e}"),
            )
        }
    };
    if !opts.follow || previous {
        return respond(200, "text/plain", head);
    }
    let limit = opts.limit_bytes.map(|b| b.max(0) as u64);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    let sent = head.len() as u64;
    let kl = kl.clone();
    let id = h.id.clone();
    tokio::spawn(async move {
        if !head.is_empty() && tx.send(Ok(Frame::data(Bytes::from(head)))).await.is_err() {
            return;
        }
        follow(&kl, &id, &path, start, sent, limit, opts.timestamps, tx).await;
    });
    let body = StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }));
    let mut r = Response::new(BodyExt::boxed(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Send what the container writes to its log after `offset` until it ends
/// or the client goes.
#[allow(clippy::too_many_arguments)]
async fn follow(
    kl: &Kubelet,
    id: &str,
    path: &Path,
    offset: u64,
    mut sent: u64,
    limit: Option<u64>,
    timestamps: bool,
    tx: mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
) {
    let mut tail = logs::Tail::new(path, offset);
    let mut new_line = [true, true];
    loop {
        let running = matches!(
            kl.runtime.state(id),
            crate::runtime::ContainerState::Running { .. }
        );
        let records = tail.next().await.unwrap_or_default();
        if !records.is_empty() {
            let mut out = Vec::new();
            for rec in records {
                let i = usize::from(rec.stream == logs::Stream::Stderr);
                if timestamps && new_line[i] {
                    out.extend_from_slice(logs::format_rfc3339_nano(&rec.timestamp).as_bytes());
                    out.push(b' ');
                }
                out.extend_from_slice(&rec.content);
                new_line[i] = !rec.partial;
            }
            if let Some(l) = limit {
                let room = l.saturating_sub(sent) as usize;
                out.truncate(room);
            }
            sent += out.len() as u64;
            if !out.is_empty() && tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
                return;
            }
            if limit.is_some_and(|l| sent >= l) {
                return;
            }
            continue;
        }
        if !running {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pairs(s: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(s.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn requests_map_to_node_subresources() {
        assert_eq!(
            node_attributes(&Method::GET, "/containerLogs/ns/p/c"),
            ("get", "proxy")
        );
        assert_eq!(
            node_attributes(&Method::POST, "/exec/ns/p/c"),
            ("create", "proxy")
        );
        assert_eq!(
            node_attributes(&Method::GET, "/stats/summary"),
            ("get", "stats")
        );
        assert_eq!(
            node_attributes(&Method::GET, "/metrics"),
            ("get", "metrics")
        );
        assert_eq!(
            node_attributes(&Method::GET, "/logs/syslog"),
            ("get", "log")
        );
    }

    #[test]
    fn log_options_from_the_query() {
        let o = log_options(&pairs("follow=true&tailLines=5&timestamps=1&limitBytes=10")).unwrap();
        assert!(o.follow && o.timestamps);
        assert_eq!(o.tail_lines, Some(5));
        assert_eq!(o.limit_bytes, Some(10));
        let o = log_options(&pairs("sinceTime=2026-01-02T03:04:05Z")).unwrap();
        assert_eq!(
            o.since.map(|t| t.to_rfc3339()),
            Some("2026-01-02T03:04:05+00:00".to_string())
        );
        assert!(log_options(&pairs("tailLines=x")).is_err());
        assert!(log_options(&pairs("sinceSeconds=0")).is_err());
        assert!(log_options(&pairs("limitBytes=-1")).is_err());
        assert!(!log_options(&pairs("follow=false")).unwrap().follow);
    }

    #[test]
    fn a_client_certificate_names_its_user() {
        let kp = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        let c = p.self_signed(&kp).unwrap();
        assert_eq!(
            common_name(c.der()).as_deref(),
            Some("kube-apiserver-kubelet-client")
        );
        assert_eq!(common_name(b"garbage"), None);
    }
}
