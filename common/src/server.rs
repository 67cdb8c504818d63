//! The health and metrics server every component runs: `/healthz`, `/livez`,
//! `/readyz` (with named checks, `?verbose` lists them) and Prometheus `/metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;

type Check = Arc<dyn Fn() -> bool + Send + Sync>;

/// Named readiness checks; liveness is the process answering.
#[derive(Default)]
pub struct Health {
    checks: Mutex<Vec<(String, Check)>>,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    /// Add a readiness check (e.g. "informer-sync", "leader-election").
    pub fn add(&self, name: &str, check: impl Fn() -> bool + Send + Sync + 'static) {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), Arc::new(check)));
    }

    /// (all passed, a verbose report)
    pub fn ready(&self) -> (bool, String) {
        let checks = self
            .checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut ok = true;
        let mut report = String::from("[+]ping ok\n");
        for (name, check) in checks {
            let pass = check();
            ok &= pass;
            report.push_str(&format!(
                "{}{name} {}\n",
                if pass { "[+]" } else { "[-]" },
                if pass { "ok" } else { "failed" }
            ));
        }
        report.push_str(if ok {
            "readyz check passed\n"
        } else {
            "readyz check failed\n"
        });
        (ok, report)
    }
}

fn reply(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

pub(crate) fn route<B>(
    health: &Health,
    registry: &Registry,
    req: &Request<B>,
) -> Response<Full<Bytes>> {
    let text = "text/plain; charset=utf-8";
    match req.uri().path() {
        "/healthz" | "/livez" | "/healthz/ping" | "/livez/ping" => {
            reply(StatusCode::OK, text, "ok")
        }
        "/readyz" => {
            let (ok, report) = health.ready();
            let verbose = req.uri().query().is_some_and(|q| q.contains("verbose"));
            let body = if verbose {
                report
            } else if ok {
                "ok".into()
            } else {
                "readyz check failed".into()
            };
            reply(
                if ok {
                    StatusCode::OK
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                },
                text,
                body,
            )
        }
        "/metrics" => {
            let mut buf = Vec::new();
            if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
                tracing::error!(error = %e, "encoding metrics");
            }
            reply(StatusCode::OK, "text/plain; version=0.0.4", buf)
        }
        _ => reply(StatusCode::NOT_FOUND, text, "404 page not found\n"),
    }
}

/// Bind `addr` (port 0 picks a free port) and serve until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    registry: Registry,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let registry = Arc::new(registry);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { continue };
                    let (health, registry) = (health.clone(), registry.clone());
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            let resp = route(&health, &registry, &req);
                            async move { Ok::<_, Infallible>(resp) }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tcp), svc)
                            .await;
                    });
                }
                _ = crate::stopped(&mut shutdown) => return,
            }
        }
    });
    Ok(bound)
}
