//! kube-apiserver: the Kubernetes REST API over etcd.
//!
//! A request goes: TLS (client certificate) -> authentication (certificate or
//! bearer token) -> routing -> the generic store (defaults, strategy,
//! validation) -> etcd with compare-and-swap. LIST and WATCH are served from
//! the watch cache, which one etcd watch keeps current. See docs/architecture.md.

pub mod admission;
pub mod allocator;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod bootstraptoken;
pub mod cache;
pub mod certificates;
pub mod config;
pub mod defaults;
pub mod discovery;
pub mod encryption;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod http;
pub mod metrics;
pub mod nodeauthz;
pub mod openapi;
pub mod podsecurity;
pub mod protobuf;
pub mod proxy;
pub mod quotas;
pub mod rbac;
pub mod registry;
pub mod satoken;
pub mod selectors;
pub mod services;
pub mod ssa;
pub mod storage;
pub mod store;
pub mod strategic;
pub mod strategy;
pub mod table;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokenrequest;
pub mod tokenreview;
pub mod validation;
pub mod webhooks;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::allocator::Range;
use crate::authn::{TokenFile, User};
use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::storage::Storage;

/// The Kubernetes version whose API this server speaks.
pub const GIT_VERSION: &str = "v1.33.0";

pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": option_env!("IRONKUBE_GIT_COMMIT").unwrap_or("unknown"),
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// State shared by every request.
pub struct Api {
    pub prefix: String,
    pub storage: Storage,
    pub cache: Arc<Cache>,
    pub metrics: Metrics,
    pub openapi: openapi::OpenApi,
    pub protobuf: protobuf::Decoder,
    pub service_ips: Range,
    pub node_ports: Range,
    pub event_ttl: Duration,
    event_lease: tokio::sync::Mutex<Option<(i64, Instant)>>,
    pub shutdown: watch::Receiver<bool>,
    shutting_down: AtomicBool,
    /// The system namespaces and the `kubernetes` Service exist (upstream's post-start hook).
    bootstrapped: AtomicBool,
    advertise: IpAddr,
    port: u16,
    /// how pod logs, exec and port-forward reach kubelets
    pub kubelets: proxy::KubeletClient,
    pub sa_signer: Option<Arc<satoken::Signer>>,
    pub sa_verifier: satoken::Verifier,
    pub authz: authz::Authorizer,
    pub audit: Option<Arc<audit::Auditor>>,
    /// `--token-auth-file`
    pub tokens: Arc<TokenFile>,
    /// `--enable-bootstrap-token-auth`
    pub bootstrap_tokens: bool,
}

impl Api {
    pub fn server_address(&self) -> String {
        SocketAddr::new(self.advertise, self.port).to_string()
    }

    /// The user a bearer token names: the authenticator chain every request
    /// and every TokenReview goes through.
    pub fn token_user(&self, token: &str) -> Option<authn::User> {
        self.authenticate_token(token, None).map(|(u, _)| u)
    }

    /// The token authenticators under `audiences` (None: the API audiences,
    /// `--api-audiences` or the issuer), as upstream's chain: the user and the
    /// audiences the token is good for. `--token-auth-file` tokens are
    /// audience-agnostic: they answer for the API audiences the request shares.
    pub fn authenticate_token(
        &self,
        token: &str,
        audiences: Option<&[String]>,
    ) -> Option<(authn::User, Vec<String>)> {
        let api = &self.sa_verifier.audiences;
        let wanted: Vec<String> = audiences.map_or_else(|| api.clone(), <[String]>::to_vec);
        let audience_agnostic = self.tokens.lookup(token).cloned();
        if let Some(u) = audience_agnostic.or_else(|| bootstraptoken::authenticate(self, token)) {
            if audiences.is_none() {
                return Some((u.clone(), wanted));
            }
            let shared: Vec<String> = wanted.into_iter().filter(|a| api.contains(a)).collect();
            return (!shared.is_empty()).then(|| (u.clone(), shared));
        }
        match audiences {
            None => self.service_account_user(token).map(|u| (u, wanted)),
            Some(auds) => {
                let mut v = self.sa_verifier.clone();
                v.audiences = auds.to_vec();
                let (u, token_auds) = self.service_account_user_with(token, &v)?;
                let shared = auds.iter().filter(|a| token_auds.contains(a)).cloned();
                Some((u, shared.collect()))
            }
        }
    }

    /// The user of a valid service-account token whose service account (and,
    /// for a bound token, pod) still exist with the UIDs it names.
    pub fn service_account_user(&self, token: &str) -> Option<authn::User> {
        self.service_account_user_with(token, &self.sa_verifier)
            .map(|(u, _)| u)
    }

    /// As `service_account_user`, through `verifier` (its audiences); with the token's audiences.
    fn service_account_user_with(
        &self,
        token: &str,
        verifier: &satoken::Verifier,
    ) -> Option<(authn::User, Vec<String>)> {
        if verifier.is_empty() || !satoken::looks_like_jwt(token) {
            return None;
        }
        let claims = match verifier.verify(token, chrono::Utc::now().timestamp()) {
            Ok(c) => c,
            Err(why) => {
                tracing::debug!(%why, "service-account token refused");
                return None;
            }
        };
        let sub = claims.get("sub").and_then(|v| v.as_str())?;
        let rest = sub.strip_prefix("system:serviceaccount:")?;
        let (ns, name) = rest.split_once(':')?;
        let k8s = claims.get("kubernetes.io");
        let uid_of = |plural: &str, ns: &str, name: &str| -> Option<String> {
            let res = registry::lookup("", "v1", plural)?;
            let e = self.cache.get(&res.key(&self.prefix, Some(ns), name))?;
            let v: serde_json::Value = serde_json::from_slice(&e.data).ok()?;
            v.pointer("/metadata/uid")
                .and_then(|u| u.as_str())
                .map(String::from)
        };
        let sa_uid = uid_of("serviceaccounts", ns, name)?;
        let want = |p: &str| {
            k8s.and_then(|k| k.pointer(p))
                .and_then(|v| v.as_str())
                .map(String::from)
        };
        if want("/serviceaccount/uid").is_some_and(|u| u != sa_uid) {
            return None;
        }
        if let Some(pod) = want("/pod/name") {
            // a bound token dies with its pod
            let uid = uid_of("pods", ns, &pod)?;
            if want("/pod/uid").is_some_and(|u| u != uid) {
                return None;
            }
        }
        let auds = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        Some((authn::User::service_account(ns, name, &sa_uid), auds))
    }

    /// A lease for events, shared by the events created within a minute, as upstream.
    pub async fn event_lease(&self) -> Result<i64, storage::StorageError> {
        let mut g = self.event_lease.lock().await;
        if let Some((id, at)) = *g {
            if at.elapsed() < Duration::from_secs(60) {
                return Ok(id);
            }
        }
        let id = self
            .storage
            .grant_lease(self.event_ttl.as_secs() as i64 + 60)
            .await?;
        *g = Some((id, Instant::now()));
        Ok(id)
    }

    /// /readyz: etcd answers, the watch cache is synced, and we are not shutting down.
    pub async fn readiness(&self) -> (bool, String) {
        let etcd = self.storage.healthy().await;
        let cache = self.cache.is_ready();
        let live = !self.shutting_down.load(Ordering::Relaxed);
        let boot = self.bootstrapped.load(Ordering::Relaxed);
        let line = |ok: bool, name: &str| {
            format!(
                "{}{name} {}\n",
                if ok { "[+]" } else { "[-]" },
                if ok { "ok" } else { "failed" }
            )
        };
        let ready = etcd && cache && live && boot;
        let report = format!(
            "{}{}{}{}{}readyz check {}\n",
            line(true, "ping"),
            line(etcd, "etcd"),
            line(cache, "informer-sync"),
            line(boot, "poststarthook/bootstrap-controller"),
            line(live, "shutdown"),
            if ready { "passed" } else { "failed" },
        );
        (ready, report)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("tls: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to etcd: {0}")]
    Etcd(#[from] storage::StorageError),
}

fn tls_config(cfg: &Config) -> Result<rustls::ServerConfig, ServeError> {
    let tls = |e: &dyn std::fmt::Display| ServeError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut cfg.tls_cert_pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| tls(&e))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(
            "--tls-cert-file holds no certificate".into(),
        ));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut cfg.tls_key_pem.as_slice())
        .map_err(|e| tls(&e))?
        .ok_or_else(|| ServeError::Tls("--tls-private-key-file holds no private key".into()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| tls(&e))?;
    let verifier = match &cfg.client_ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut ca.as_slice()) {
                roots.add(c.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls(&e))?
        }
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let mut sc = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(sc)
}

/// A bound, ready-to-serve apiserver (tests start one in-process on port 0).
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    api: Arc<Api>,
    shutdown_tx: watch::Sender<bool>,
    cfg: Config,
}

impl Server {
    /// Connect to etcd, bind the port, and start the watch cache.
    pub async fn bind(cfg: Config) -> Result<Server, ServeError> {
        let acceptor = TlsAcceptor::from(Arc::new(tls_config(&cfg)?));
        let storage = Storage::connect(&cfg.etcd_servers, &cfg.etcd_tls)
            .await?
            .with_transformer(cfg.encryption.clone());
        let addr = SocketAddr::new(cfg.bind_address, cfg.secure_port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen { addr, source })?;
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(cfg.secure_port);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let openapi = openapi::OpenApi::build();
        let protobuf = protobuf::Decoder::new(&openapi);
        let cache = Cache::new(storage.clone(), &cfg.etcd_prefix, cfg.watch_cache_size);
        tokio::spawn(cache.clone().run(shutdown.clone()));
        let api = Arc::new(Api {
            prefix: cfg.etcd_prefix.clone(),
            service_ips: Range::service_ips(
                &cfg.etcd_prefix,
                cfg.service_cidr.0,
                cfg.service_cidr.1,
            ),
            node_ports: Range::node_ports(&cfg.etcd_prefix, cfg.node_ports.0, cfg.node_ports.1),
            storage,
            cache,
            metrics: Metrics::new(),
            openapi,
            protobuf,
            event_ttl: cfg.event_ttl,
            event_lease: tokio::sync::Mutex::new(None),
            shutdown,
            shutting_down: AtomicBool::new(false),
            bootstrapped: AtomicBool::new(false),
            advertise: cfg.advertise_address,
            port,
            kubelets: cfg.kubelets.clone(),
            sa_signer: cfg.sa_signer.clone(),
            sa_verifier: cfg.sa_verifier.clone(),
            authz: authz::Authorizer::new(cfg.authorization.clone()),
            audit: cfg.audit.clone(),
            tokens: Arc::new(cfg.tokens.clone()),
            bootstrap_tokens: cfg.bootstrap_token_auth,
        });
        Ok(Server {
            listener,
            acceptor,
            api,
            shutdown_tx,
            cfg,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn api(&self) -> Arc<Api> {
        self.api.clone()
    }

    /// Serve until `stop` fires, then drain: readyz fails, watches end, connections close.
    pub async fn serve(self, mut stop: watch::Receiver<bool>) {
        let Server {
            listener,
            acceptor,
            api,
            shutdown_tx,
            cfg,
        } = self;
        tracing::info!(addr = ?listener.local_addr().ok(), "serving securely");
        let compaction = (!cfg.compaction_interval.is_zero())
            .then(|| tokio::spawn(compactor(api.clone(), cfg.compaction_interval)));
        let delay = cfg.shutdown_delay;
        let leases = cfg.endpoint_leases;
        let reconciler =
            leases.then(|| tokio::spawn(endpoints::run(api.clone(), api.shutdown.clone())));
        let boot = tokio::spawn(bootstrap(api.clone(), cfg));
        let mut conns = tokio::task::JoinSet::new();
        let serve = Serving {
            listener: &listener,
            acceptor: &acceptor,
            api: &api,
        };
        serve.until(&mut conns, crate::stopped(&mut stop)).await;
        // Shutdown, as upstream: /readyz fails and this apiserver leaves the
        // `kubernetes` endpoints first; requests are still served for
        // --shutdown-delay-duration so load balancers notice; then the listener
        // closes, watches end (clients resume elsewhere) and requests drain.
        tracing::info!(delay = ?delay, "shutting down: readyz fails, then in-flight requests drain");
        api.shutting_down.store(true, Ordering::Relaxed);
        boot.abort();
        if let Some(c) = compaction {
            c.abort();
        }
        if let Some(r) = reconciler {
            r.abort();
            endpoints::remove_self(&api).await;
        }
        if !delay.is_zero() {
            serve.until(&mut conns, tokio::time::sleep(delay)).await;
        }
        drop(listener);
        let _ = shutdown_tx.send(true);
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(60), drain)
            .await
            .is_err()
        {
            tracing::warn!("connections still open after 60s; closing them");
        }
    }
}

/// What accepting connections needs.
struct Serving<'a> {
    listener: &'a TcpListener,
    acceptor: &'a TlsAcceptor,
    api: &'a Arc<Api>,
}

impl Serving<'_> {
    /// Accept and serve connections until `until` resolves.
    async fn until(
        &self,
        conns: &mut tokio::task::JoinSet<()>,
        until: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(until);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let Ok((tcp, peer)) = accepted else { continue };
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(serve_conn(tcp, peer, self.acceptor.clone(), self.api.clone()));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = &mut until => return,
            }
        }
    }
}

async fn serve_conn(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    api: Arc<Api>,
) {
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let cert_user: Option<User> = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| authn::user_from_cert(c.as_ref()));
    let api2 = api.clone();
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(http::Peer(peer));
        let api = api2.clone();
        let user = cert_user.clone().or_else(|| {
            let token = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(authn::bearer)?;
            api.token_user(token)
        });
        async move { Ok::<_, Infallible>(http::handle(api, user, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let mut shutdown = api.shutdown.clone();
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        }
        _ = crate::stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        }
    }
}

/// Compact etcd history every `interval`, to the revision seen one interval
/// earlier, as upstream does. Several apiservers take turns through a version
/// check on `compact_rev_key`, so each interval compacts once.
async fn compactor(api: Arc<Api>, interval: Duration) {
    const KEY: &str = "compact_rev_key";
    let mut shutdown = api.shutdown.clone();
    let (mut version, mut rev) = (0i64, 0i64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped(&mut shutdown) => return,
        }
        match api.storage.claim_compaction(KEY, version).await {
            Ok((true, v, now)) => {
                if rev > 0 {
                    match api.storage.compact(rev).await {
                        Ok(()) => tracing::info!(revision = rev, "compacted etcd history"),
                        Err(e) => tracing::warn!(revision = rev, error = %e, "compacting etcd"),
                    }
                }
                (version, rev) = (v, now);
            }
            // another apiserver compacted this round: follow its count
            Ok((false, v, now)) => (version, rev) = (v, now),
            Err(e) => tracing::warn!(error = %e, "compaction round"),
        }
    }
}

/// What every cluster has from the start: the system namespaces and the
/// `kubernetes` Service pointing at this apiserver.
async fn bootstrap(api: Arc<Api>, cfg: Config) {
    let system = User::system_apiserver();
    loop {
        if api.cache.is_ready() {
            match bootstrap_once(&api, &system, &cfg).await {
                Ok(()) => {
                    api.bootstrapped.store(true, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e.message, "bootstrapping system objects; retrying")
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn bootstrap_once(api: &Arc<Api>, user: &User, cfg: &Config) -> Result<(), error::ApiError> {
    let ctx = |res: &'static str, ns: Option<&str>| system_ctx(api, user, res, ns);
    let exists = |e: &error::ApiError| e.code == 409 && e.reason == "AlreadyExists";
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        match store::create(&ctx("namespaces", None)?, json!({"metadata": {"name": ns}})).await {
            Ok(_) => tracing::info!(namespace = ns, "created system namespace"),
            Err(e) if exists(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if api.authz.rbac_on() {
        bootstrap_rbac(api, user).await?;
    }
    for (name, value, description) in admission::SYSTEM_PRIORITY_CLASSES {
        let pc = json!({"metadata": {"name": name}, "value": value, "description": description});
        match store::create(&ctx("priorityclasses", None)?, pc).await {
            Ok(_) => tracing::info!(priority_class = name, "created system priority class"),
            Err(e) if exists(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let ip = api.service_ips.first();
    let svc = json!({
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api.port}], "sessionAffinity": "None", "type": "ClusterIP"},
    });
    match store::create(&ctx("services", Some("default"))?, svc).await {
        Ok(_) => tracing::info!(cluster_ip = %ip, "created the kubernetes service"),
        Err(e) if exists(&e) => {}
        Err(e) if e.code == 422 && e.message.contains("already allocated") => {}
        Err(e) => return Err(e),
    }
    if cfg.endpoint_leases {
        // the lease reconciler lists this apiserver once it runs; do it now so
        // the Service has endpoints from the start
        endpoints::announce(api, user).await?;
    }
    Ok(())
}

/// A store context for the apiserver's own writes to `res` (a core, discovery
/// or RBAC resource) in namespace `ns`.
pub(crate) fn system_ctx<'a>(
    api: &'a Api,
    user: &'a User,
    res: &'static str,
    ns: Option<&str>,
) -> Result<store::Ctx<'a>, error::ApiError> {
    let (group, version) = match res {
        "endpointslices" => ("discovery.k8s.io", "v1"),
        "priorityclasses" => ("scheduling.k8s.io", "v1"),
        "clusterroles" | "clusterrolebindings" | "roles" | "rolebindings" => {
            ("rbac.authorization.k8s.io", "v1")
        }
        _ => ("", "v1"),
    };
    Ok(store::Ctx {
        api,
        res: registry::lookup(group, version, res)
            .ok_or_else(|| error::ApiError::internal(format!("no {res}")))?,
        ns: ns.map(str::to_string),
        user,
        dry_run: false,
        manager: "kube-apiserver".into(),
        field_validation: store::FieldValidation::Ignore,
        warnings: std::sync::Mutex::new(Vec::new()),
    })
}

/// Upstream's bootstrap roles and bindings, reconciled at every start: missing
/// ones created, missing rules and subjects added, `autoupdate: "false"` left
/// alone.
async fn bootstrap_rbac(api: &Api, user: &User) -> Result<(), error::ApiError> {
    let ctx = |res: &'static str, ns: Option<&str>| system_ctx(api, user, res, ns);
    let mut changed = 0;
    for wanted in rbac::bootstrap_objects() {
        let plural = match wanted.get("kind").and_then(|k| k.as_str()) {
            Some("ClusterRole") => "clusterroles",
            Some("ClusterRoleBinding") => "clusterrolebindings",
            Some("Role") => "roles",
            Some("RoleBinding") => "rolebindings",
            _ => continue,
        };
        let ns = wanted
            .pointer("/metadata/namespace")
            .and_then(|n| n.as_str())
            .map(str::to_string);
        let name = wanted
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        let c = ctx(plural, ns.as_deref())?;
        let existing = match store::get(&c, &name).await {
            Ok(v) => Some(v),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e),
        };
        match rbac::reconcile_op(existing.as_ref(), &wanted) {
            None => {}
            Some(rbac::Reconcile::Create(v)) => {
                store::create(&c, v).await?;
                changed += 1;
            }
            Some(rbac::Reconcile::Update(v)) => {
                store::update(&c, &name, None, v).await?;
                changed += 1;
            }
            Some(rbac::Reconcile::Recreate(v)) => {
                let _ = store::delete(&c, &name, &store::DeleteOpts::default()).await;
                let mut v = v;
                if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                    m.remove("resourceVersion");
                }
                store::create(&c, v).await?;
                changed += 1;
            }
        }
    }
    if changed > 0 {
        tracing::info!(changed, "reconciled the bootstrap RBAC roles and bindings");
    }
    Ok(())
}

/// Resolves once a shutdown channel says stop (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Run until SIGTERM or SIGINT.
pub async fn run(cfg: Config) -> Result<(), ServeError> {
    let server = Server::bind(cfg).await?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = tx.send(true);
    });
    server.serve(rx).await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("received SIGTERM"),
                _ = int.recv() => tracing::info!("received SIGINT"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
