//! Dynamic admission webhooks, as upstream's MutatingAdmissionWebhook and
//! ValidatingAdmissionWebhook plugins (k8s.io/apiserver
//! pkg/admission/plugin/webhook).
//!
//! For a create, update or delete of any resource (the webhook configurations
//! themselves excepted, as upstream), the webhooks of the
//! `admissionregistration.k8s.io/v1` configurations in the watch cache whose
//! rules, namespaceSelector and objectSelector match are called over HTTPS
//! with an `admission.k8s.io/v1` (or v1beta1) AdmissionReview:
//!
//! - mutating webhooks one after another, by configuration name then webhook
//!   order; a JSONPatch in the response changes the object (then defaulted
//!   again); with `reinvocationPolicy: IfNeeded` a webhook runs a second time
//!   when a later one changed the object;
//! - validating webhooks all at once, after validation; the first refusal (in
//!   configuration order) is the answer.
//!
//! A refusal is upstream's `admission webhook "NAME" denied the request: ...`
//! with the webhook's status code (400 when it gives none below 400); a
//! webhook that cannot be called fails the request (`failurePolicy: Fail`,
//! 500 `failed calling webhook`) or is skipped (`Ignore`). Warnings reach the
//! client's Warning headers.
//!
//! Deviations: a `clientConfig.service` is reached at an address of the
//! Service's Endpoints (or EndpointSlices) when there is one, else at its
//! ClusterIP (upstream dials the ClusterIP), still verified as
//! `NAME.NAMESPACE.svc`; `matchPolicy: Equivalent` matches only the
//! requested resource (no equivalent group-versions are tried); CEL
//! `matchConditions` are refused at validation; no audit annotations.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::{ApiError, ApiResult};
use crate::registry::{self, Resource};
use crate::selectors::{object_labels, LabelSelector};
use crate::store::Ctx;

pub const GROUP: &str = "admissionregistration.k8s.io";

/// The largest AdmissionReview response read from a webhook.
const MAX_RESPONSE: usize = 16 << 20;

/// The admission operation of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// What a webhook is told about a request besides the objects
/// (upstream's admission.Attributes).
#[derive(Debug, Clone)]
pub struct Attributes {
    pub op: Operation,
    pub group: String,
    pub version: String,
    pub resource: String,
    /// "" for the main resource
    pub sub: String,
    /// (group, version, kind) of the objects sent
    pub kind: (String, String, String),
    /// "" for cluster-scoped objects; a Namespace's own name for namespaces
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
    /// CreateOptions, UpdateOptions or DeleteOptions
    pub options: Value,
}

fn meta_options(kind: &str, dry_run: bool, manager: &str) -> Value {
    let mut o = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
    if dry_run {
        o["dryRun"] = json!(["All"]);
    }
    if !manager.is_empty() {
        o["fieldManager"] = json!(manager);
    }
    o
}

impl Attributes {
    fn new(ctx: &Ctx<'_>, op: Operation, sub: Option<&str>, name: &str) -> Attributes {
        let res: &Resource = ctx.res;
        let kind = match sub {
            Some("scale") => ("autoscaling", "v1", "Scale"),
            Some("binding") => ("", "v1", "Binding"),
            _ => (res.group, res.version, res.kind),
        };
        let namespace = if res.group.is_empty() && res.plural == "namespaces" {
            name.to_string()
        } else if res.namespaced {
            ctx.ns.clone().unwrap_or_default()
        } else {
            String::new()
        };
        Attributes {
            op,
            group: res.group.into(),
            version: res.version.into(),
            resource: res.plural.into(),
            sub: sub.unwrap_or_default().into(),
            kind: (kind.0.into(), kind.1.into(), kind.2.into()),
            namespace,
            name: name.into(),
            dry_run: ctx.dry_run,
            options: Value::Null,
        }
    }

    /// A create (POST, or a PUT or apply that creates) of `name` ("" when generated).
    pub fn create(ctx: &Ctx<'_>, sub: Option<&str>, name: &str) -> Attributes {
        let mut a = Self::new(ctx, Operation::Create, sub, name);
        a.options = meta_options("CreateOptions", ctx.dry_run, &ctx.manager);
        a
    }

    /// An update (PUT or PATCH) of `name` or its subresource.
    pub fn update(ctx: &Ctx<'_>, sub: Option<&str>, name: &str) -> Attributes {
        let mut a = Self::new(ctx, Operation::Update, sub, name);
        a.options = meta_options("UpdateOptions", ctx.dry_run, &ctx.manager);
        a
    }

    /// A delete of `name`, with the request's DeleteOptions.
    pub fn delete(ctx: &Ctx<'_>, name: &str, opts: &crate::store::DeleteOpts) -> Attributes {
        let mut a = Self::new(ctx, Operation::Delete, None, name);
        a.dry_run = ctx.dry_run || opts.dry_run;
        let mut o = json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"});
        if let Some(g) = opts.grace_period {
            o["gracePeriodSeconds"] = json!(g);
        }
        if let Some(p) = &opts.propagation {
            o["propagationPolicy"] = json!(p);
        }
        if let Some(u) = &opts.precondition_uid {
            o["preconditions"]["uid"] = json!(u);
        }
        if let Some(rv) = &opts.precondition_rv {
            o["preconditions"]["resourceVersion"] = json!(rv);
        }
        if a.dry_run {
            o["dryRun"] = json!(["All"]);
        }
        a.options = o;
        a
    }

    /// Upstream exempts the admission configuration kinds from webhooks.
    fn exempt(&self) -> bool {
        self.kind.0 == GROUP
    }
}

// ---------------------------------------------------------------------------
// configurations and matching

/// One webhook of a configuration.
#[derive(Debug, Clone)]
struct Hook {
    /// the configuration's name
    config: String,
    spec: Value,
}

impl Hook {
    fn name(&self) -> &str {
        self.spec["name"].as_str().unwrap_or_default()
    }

    fn ignore_failures(&self) -> bool {
        self.spec["failurePolicy"].as_str() == Some("Ignore")
    }

    fn reinvoke_if_needed(&self) -> bool {
        self.spec["reinvocationPolicy"].as_str() == Some("IfNeeded")
    }

    fn timeout(&self) -> Duration {
        let s = self.spec["timeoutSeconds"]
            .as_u64()
            .filter(|s| (1..=30).contains(s))
            .unwrap_or(10);
        Duration::from_secs(s)
    }

    /// (configuration, webhook): the identity used for reinvocation.
    fn key(&self) -> (String, String) {
        (self.config.clone(), self.name().to_string())
    }
}

/// The webhooks of every mutating (or validating) configuration, ordered by
/// configuration name, then as listed.
fn configured(ctx: &Ctx<'_>, mutating: bool) -> Vec<Hook> {
    let plural = if mutating {
        "mutatingwebhookconfigurations"
    } else {
        "validatingwebhookconfigurations"
    };
    let Some(res) = registry::lookup(GROUP, "v1", plural) else {
        return Vec::new();
    };
    let prefix = res.key(&ctx.api.prefix, None, "");
    let mut configs: Vec<Value> = ctx
        .api
        .cache
        .list(&prefix, None, 0, &|_, _| true)
        .items
        .iter()
        .filter_map(|e| serde_json::from_slice(&e.data).ok())
        .collect();
    configs.sort_by(|a: &Value, b: &Value| {
        a.pointer("/metadata/name")
            .and_then(Value::as_str)
            .cmp(&b.pointer("/metadata/name").and_then(Value::as_str))
    });
    let mut out = Vec::new();
    for c in configs {
        let config = c
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        for w in c["webhooks"].as_array().into_iter().flatten() {
            out.push(Hook {
                config: config.clone(),
                spec: w.clone(),
            });
        }
    }
    out
}

fn exact_or_wildcard(items: &Value, requested: &str) -> bool {
    items
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|i| i == "*" || i == requested)
}

/// Whether one of a webhook's rules (operations, apiGroups, apiVersions,
/// resources with `*`, `x/*`, `*/y` and `*/*` forms, scope) matches.
fn rule_matches(rule: &Value, a: &Attributes) -> bool {
    let is_namespace = a.group.is_empty() && a.version == "v1" && a.resource == "namespaces";
    let scope = match rule["scope"].as_str() {
        None | Some("*") => true,
        Some("Namespaced") => !is_namespace && !a.namespace.is_empty(),
        Some("Cluster") => is_namespace || a.namespace.is_empty(),
        Some(_) => false,
    };
    let op = rule["operations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|o| o == "*" || o == a.op.as_str());
    let resource = rule["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|rs| {
            let (res, sub) = rs.split_once('/').unwrap_or((rs, ""));
            (res == "*" || res == a.resource) && (sub == "*" || sub == a.sub)
        });
    scope
        && op
        && exact_or_wildcard(&rule["apiGroups"], &a.group)
        && exact_or_wildcard(&rule["apiVersions"], &a.version)
        && resource
}

fn hook_rules_match(hook: &Hook, a: &Attributes) -> bool {
    hook.spec["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| rule_matches(r, a))
}

/// A webhook's label selector (absent or null: everything).
fn parse_selector(sel: &Value) -> Result<LabelSelector, String> {
    if sel.is_null() {
        return Ok(LabelSelector::everything());
    }
    LabelSelector::from_json(sel)
}

/// The labels namespaceSelector is matched against: a Namespace's own (from
/// the object) when one is created or updated, else the namespace's.
async fn namespace_labels(
    ctx: &Ctx<'_>,
    a: &Attributes,
    obj: Option<&Value>,
) -> ApiResult<BTreeMap<String, String>> {
    if a.group.is_empty()
        && a.resource == "namespaces"
        && a.sub.is_empty()
        && matches!(a.op, Operation::Create | Operation::Update)
    {
        return Ok(obj.map(object_labels).unwrap_or_default());
    }
    let res = registry::lookup("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("no namespaces resource"))?;
    let key = res.key(&ctx.api.prefix, None, &a.namespace);
    if let Some(e) = ctx.api.cache.get(&key) {
        return Ok(e.labels.clone());
    }
    // the cache may lag a namespace made a moment ago: ask etcd
    match ctx.api.storage.get(&key).await {
        Ok(Some(kv)) => Ok(serde_json::from_slice::<Value>(&kv.value)
            .map(|v| object_labels(&v))
            .unwrap_or_default()),
        Ok(None) => Err(ApiError::namespace_not_found(&a.namespace)),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// Upstream's ShouldCallHook: the rules, then the namespaceSelector and the
/// objectSelector (new or old object). Errors only for a hook whose rules match.
async fn should_call(
    ctx: &Ctx<'_>,
    hook: &Hook,
    a: &Attributes,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<bool> {
    if !hook_rules_match(hook, a) {
        return Ok(false);
    }
    let is_namespace = a.group.is_empty() && a.resource == "namespaces";
    if !a.namespace.is_empty() || is_namespace {
        let sel = parse_selector(&hook.spec["namespaceSelector"]).map_err(ApiError::internal)?;
        if !sel.is_empty() {
            let labels = namespace_labels(ctx, a, obj).await?;
            if !sel.matches(&labels) {
                return Ok(false);
            }
        }
    }
    let sel = parse_selector(&hook.spec["objectSelector"]).map_err(ApiError::internal)?;
    if sel.is_empty() {
        return Ok(true);
    }
    let matches = |o: Option<&Value>| o.is_some_and(|o| sel.matches(&object_labels(o)));
    Ok(matches(obj) || matches(old))
}

// ---------------------------------------------------------------------------
// calling a webhook

/// Why a webhook could not be called (upstream's ErrCallingWebhook): the
/// failure policy decides. Everything else is an ApiError for the client.
#[derive(Debug)]
enum CallError {
    Calling(String),
    Api(ApiError),
}

impl From<ApiError> for CallError {
    fn from(e: ApiError) -> Self {
        CallError::Api(e)
    }
}

/// What a webhook answered.
#[derive(Debug, Default)]
struct Reply {
    allowed: bool,
    patch: Option<Vec<u8>>,
    patch_type: Option<String>,
    status: Option<Value>,
    warnings: Vec<String>,
}

/// Where a webhook is: the address to dial, the name its certificate must
/// carry, and its URL (as upstream's errors print it).
#[derive(Debug, PartialEq)]
struct Target {
    host: String,
    port: u16,
    server_name: String,
    /// the Host header: the URL's authority, or the service's name and port
    authority: String,
    path: String,
    url: String,
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `https://host[:port][/path]` of `clientConfig.url`: (host, port, path,
/// the authority as written).
fn parse_url(url: &str) -> Result<(String, u16, String, String), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("Unparsable URL: unsupported scheme in {url:?}"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6
            .split_once(']')
            .ok_or_else(|| format!("Unparsable URL: bad host in {url:?}"))?;
        (h.to_string(), p.strip_prefix(':').unwrap_or_default())
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), ""),
        }
    };
    let port = if port.is_empty() {
        443
    } else {
        port.parse::<u16>()
            .map_err(|_| format!("Unparsable URL: invalid port {port:?}"))?
    };
    if host.is_empty() {
        return Err(format!("Unparsable URL: no host in {url:?}"));
    }
    let path = path
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_string();
    Ok((host, port, path, authority.to_string()))
}

fn with_timeout_param(path: &str, timeout: Duration) -> String {
    let p = if path.is_empty() { "/" } else { path };
    format!("{p}?timeout={}s", timeout.as_secs())
}

fn cached_object(ctx: &Ctx<'_>, plural: &str, ns: &str, name: &str) -> Option<Value> {
    let res = registry::lookup("", "v1", plural)?;
    let e = ctx
        .api
        .cache
        .get(&res.key(&ctx.api.prefix, Some(ns), name))?;
    serde_json::from_slice(&e.data).ok()
}

/// An address of a service's endpoints serving `port_name`: (ip, port).
fn endpoint_address(ctx: &Ctx<'_>, ns: &str, name: &str, port_name: &str) -> Option<(String, u16)> {
    if let Some(ep) = cached_object(ctx, "endpoints", ns, name) {
        for ss in ep["subsets"].as_array().into_iter().flatten() {
            let ip = ss["addresses"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(|a| a["ip"].as_str());
            let port = ss["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
                .and_then(|p| p["port"].as_u64())
                .and_then(|p| u16::try_from(p).ok());
            if let (Some(ip), Some(port)) = (ip, port) {
                return Some((ip.to_string(), port));
            }
        }
    }
    let res = registry::lookup("discovery.k8s.io", "v1", "endpointslices")?;
    let prefix = res.key(&ctx.api.prefix, Some(ns), "");
    let page = ctx.api.cache.list(&prefix, None, 0, &|_, e| {
        e.labels
            .get("kubernetes.io/service-name")
            .map(String::as_str)
            == Some(name)
    });
    for e in &page.items {
        let Ok(slice) = serde_json::from_slice::<Value>(&e.data) else {
            continue;
        };
        let port = slice["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok());
        let ip = slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|ep| ep["conditions"]["ready"].as_bool() != Some(false))
            .find_map(|ep| ep["addresses"].as_array()?.first()?.as_str());
        if let (Some(ip), Some(port)) = (ip, port) {
            return Some((ip.to_string(), port));
        }
    }
    None
}

/// Where `clientConfig` points. A service is dialled at one of its endpoints
/// (else its ClusterIP) but verified as `NAME.NAMESPACE.svc`.
fn target(ctx: &Ctx<'_>, cc: &Value, timeout: Duration) -> Result<Target, String> {
    if let Some(url) = cc["url"].as_str() {
        let (host, port, path, authority) = parse_url(url)?;
        let path = with_timeout_param(&path, timeout);
        return Ok(Target {
            server_name: host.clone(),
            host,
            port,
            url: format!("https://{authority}{path}"),
            authority,
            path,
        });
    }
    let svc = &cc["service"];
    let (Some(ns), Some(name)) = (svc["namespace"].as_str(), svc["name"].as_str()) else {
        return Err("webhook configuration must have either service or URL".into());
    };
    let port = svc["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(443);
    let path = with_timeout_param(svc["path"].as_str().unwrap_or_default(), timeout);
    let server_name = format!("{name}.{ns}.svc");
    let authority = join_host_port(&server_name, port);
    let url = format!("https://{authority}{path}");
    let service = cached_object(ctx, "services", ns, name)
        .ok_or_else(|| format!("Post {url:?}: service \"{name}\" not found"))?;
    let typ = service["spec"]["type"].as_str().unwrap_or("ClusterIP");
    if typ == "ExternalName" {
        let host = service["spec"]["externalName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        return Ok(Target {
            host,
            port,
            server_name,
            authority,
            path,
            url,
        });
    }
    if !matches!(typ, "ClusterIP" | "NodePort" | "LoadBalancer") {
        return Err(format!("Post {url:?}: unsupported service type {typ:?}"));
    }
    let svc_port = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_u64() == Some(u64::from(port)))
        .ok_or_else(|| {
            format!("Post {url:?}: no service port {port} found for service {name:?}")
        })?;
    let port_name = svc_port["name"].as_str().unwrap_or_default();
    if let Some((host, p)) = endpoint_address(ctx, ns, name, port_name) {
        return Ok(Target {
            host,
            port: p,
            server_name,
            authority,
            path,
            url,
        });
    }
    let cluster_ip = service["spec"]["clusterIP"].as_str().unwrap_or_default();
    if cluster_ip.is_empty() || cluster_ip == "None" {
        return Err(format!(
            "Post {url:?}: cannot route to service with ClusterIP {cluster_ip:?}"
        ));
    }
    Ok(Target {
        host: cluster_ip.to_string(),
        port,
        server_name,
        authority,
        path,
        url,
    })
}

/// The system's CA bundle, for webhooks without a caBundle (as Go's x509
/// system pool).
fn system_roots() -> Vec<u8> {
    let mut paths: Vec<String> = std::env::var("SSL_CERT_FILE").into_iter().collect();
    paths.extend(
        [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/ca-bundle.pem",
            "/etc/ssl/cert.pem",
        ]
        .map(String::from),
    );
    paths
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .unwrap_or_default()
}

fn tls_connector(ca_bundle: &Value) -> Result<TlsConnector, String> {
    let pem = match ca_bundle.as_str().filter(|s| !s.is_empty()) {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("could not get REST client: caBundle: {e}"))?,
        None => system_roots(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        let c = c.map_err(|e| {
            format!("could not get REST client: unable to load root certificates: {e}")
        })?;
        // a bundle may hold certificates rustls cannot use; skip those as Go's pool does
        let _ = roots.add(c);
    }
    if roots.is_empty() && ca_bundle.as_str().is_some_and(|s| !s.is_empty()) {
        return Err(
            "could not get REST client: unable to load root certificates: unable to parse bytes as PEM block"
                .into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("could not get REST client: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// Go's words for a failed dial.
fn dial_error(addr: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("dial tcp {addr}: connect: connection refused")
        }
        std::io::ErrorKind::TimedOut => format!("dial tcp {addr}: i/o timeout"),
        _ => format!("dial tcp {addr}: {e}"),
    }
}

/// What a non-2xx answer from a webhook becomes (client-go's generic errors).
fn http_error(code: StatusCode, body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if v["kind"] == "Status" {
            if let Some(m) = v["message"].as_str() {
                return m.to_string();
            }
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    if code.is_server_error() && !text.is_empty() {
        return format!(
            "an error on the server ({text:?}) has prevented the request from succeeding"
        );
    }
    format!(
        "the server responded with the status code {} but did not return more information",
        code.as_u16()
    )
}

/// POST the review to the webhook and read its answer (all within `timeout`).
async fn post(ctx: &Ctx<'_>, hook: &Hook, review: &Value) -> Result<Value, CallError> {
    let timeout = hook.timeout();
    let cc = &hook.spec["clientConfig"];
    let t = target(ctx, cc, timeout).map_err(|e| {
        CallError::Calling(if e.starts_with("Post ") {
            format!("failed to call webhook: {e}")
        } else {
            format!("could not get REST client: {e}")
        })
    })?;
    let connector = tls_connector(&cc["caBundle"]).map_err(CallError::Calling)?;
    let body = serde_json::to_vec(review)
        .map_err(|e| CallError::Calling(format!("could not create admission objects: {e}")))?;
    let url = t.url.clone();
    let exchange = async move {
        let addr = join_host_port(&t.host, t.port);
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|e| dial_error(&addr, &e))?;
        let name = ServerName::try_from(t.server_name.clone())
            .map_err(|e| format!("tls: server name {:?}: {e}", t.server_name))?;
        let tls = connector.connect(name, tcp).await.map_err(|e| {
            if e.to_string().contains("certificate") {
                format!("tls: failed to verify certificate: {e}")
            } else {
                format!("tls: {e}")
            }
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "webhook connection ended");
            }
        });
        let req = Request::post(&t.path)
            .header(header::HOST, t.authority.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, */*")
            .header(header::USER_AGENT, "kube-apiserver-admission")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let code = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| format!("reading the response: {e}"))?
            .to_bytes();
        Ok::<_, String>((code, bytes))
    };
    let (code, bytes) = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => {
            return Err(CallError::Calling(format!(
                "failed to call webhook: Post {url:?}: context deadline exceeded"
            )))
        }
        Ok(Err(e)) => {
            return Err(CallError::Calling(format!(
                "failed to call webhook: Post {url:?}: {e}"
            )))
        }
        Ok(Ok(r)) => r,
    };
    if !code.is_success() {
        return Err(CallError::Calling(format!(
            "failed to call webhook: {}",
            http_error(code, &bytes)
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| CallError::Calling(format!("failed to call webhook: {e}")))
}

/// The AdmissionReview version to speak: the first of the webhook's we know.
fn review_version(hook: &Hook) -> Option<&'static str> {
    hook.spec["admissionReviewVersions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|v| match v {
            "v1" => Some("v1"),
            "v1beta1" => Some("v1beta1"),
            _ => None,
        })
}

/// The AdmissionReview request (upstream's CreateV1AdmissionReview).
fn review(
    ctx: &Ctx<'_>,
    version: &str,
    uid: &str,
    a: &Attributes,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> Value {
    let gvk = json!({"group": a.kind.0, "version": a.kind.1, "kind": a.kind.2});
    let gvr = json!({"group": a.group, "version": a.version, "resource": a.resource});
    let mut user = json!({});
    if !ctx.user.name.is_empty() {
        user["username"] = json!(ctx.user.name);
    }
    if !ctx.user.uid.is_empty() {
        user["uid"] = json!(ctx.user.uid);
    }
    if !ctx.user.groups.is_empty() {
        user["groups"] = json!(ctx.user.groups);
    }
    let mut req = json!({
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "operation": a.op.as_str(),
        "userInfo": user,
        "object": obj.cloned().unwrap_or(Value::Null),
        "oldObject": old.cloned().unwrap_or(Value::Null),
        "dryRun": a.dry_run,
        "options": a.options,
    });
    if !a.sub.is_empty() {
        req["subResource"] = json!(a.sub);
        req["requestSubResource"] = json!(a.sub);
    }
    if !a.name.is_empty() {
        req["name"] = json!(a.name);
    }
    if !a.namespace.is_empty() {
        req["namespace"] = json!(a.namespace);
    }
    json!({
        "kind": "AdmissionReview",
        "apiVersion": format!("admission.k8s.io/{version}"),
        "request": req,
    })
}

/// Upstream's VerifyAdmissionResponse.
fn verify(version: &str, uid: &str, mutating: bool, v: &Value) -> Result<Reply, String> {
    let resp = v
        .get("response")
        .filter(|r| r.is_object())
        .ok_or("webhook response was absent")?;
    let patch = match resp.get("patch") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("illegal base64 data in response.patch: {e}"))?,
        ),
        Some(_) => return Err("response.patch must be a base64 string".into()),
    };
    let patch_type = match resp.get("patchType") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("response.patchType must be a string".into()),
    };
    let mut reply = Reply {
        allowed: resp["allowed"].as_bool().unwrap_or(false),
        status: resp.get("status").filter(|s| s.is_object()).cloned(),
        warnings: resp["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        ..Reply::default()
    };
    if version == "v1beta1" {
        // v1beta1 answers were never checked for uid, kind or patch type
        if mutating && patch.is_some() {
            reply.patch = patch;
            reply.patch_type = Some("JSONPatch".into());
        }
        return Ok(reply);
    }
    let got_uid = resp["uid"].as_str().unwrap_or_default();
    if got_uid != uid {
        return Err(format!("expected response.uid={uid:?}, got {got_uid:?}"));
    }
    let (av, kind) = (
        v["apiVersion"].as_str().unwrap_or_default(),
        v["kind"].as_str().unwrap_or_default(),
    );
    if av != "admission.k8s.io/v1" || kind != "AdmissionReview" {
        let (g, ver) = av.split_once('/').unwrap_or(("", av));
        return Err(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {g}/{ver}, Kind={kind}"
        ));
    }
    if mutating {
        match (&patch, &patch_type) {
            (Some(_), None) => {
                return Err("webhook returned response.patch but not response.patchType".into())
            }
            (None, Some(_)) => {
                return Err("webhook returned response.patchType but not response.patch".into())
            }
            (_, Some(t)) if t.is_empty() => {
                return Err(format!(
                    "webhook returned invalid response.patchType of {t:?}"
                ))
            }
            _ => {}
        }
        reply.patch = patch;
        reply.patch_type = patch_type;
    } else {
        if patch.is_some() {
            return Err("validating webhook may not return response.patch".into());
        }
        if patch_type.is_some() {
            return Err("validating webhook may not return response.patchType".into());
        }
    }
    Ok(reply)
}

/// Upstream's metav1.StatusReason values (any other is passed on as unknown).
fn known_reason(r: &str) -> &'static str {
    const REASONS: &[&str] = &[
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "StoreReadError",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
    ];
    REASONS.iter().find(|k| **k == r).copied().unwrap_or("")
}

/// Upstream's ToStatusErr: the webhook's status, at least 400, with
/// `admission webhook "NAME" denied the request: MESSAGE`.
fn denied(name: &str, status: Option<&Value>) -> ApiError {
    let empty = json!({});
    let st = status.unwrap_or(&empty);
    let code = st["code"].as_i64().unwrap_or(0);
    let code = match code {
        c if c < 400 => 400,
        c if c > 599 => 500,
        c => c as u16,
    };
    let by = format!("admission webhook {name:?} denied the request");
    let msg = st["message"].as_str().unwrap_or_default();
    let reason = st["reason"].as_str().unwrap_or_default();
    let message = if !msg.is_empty() {
        format!("{by}: {msg}")
    } else if !reason.is_empty() {
        format!("{by}: {reason}")
    } else {
        format!("{by} without explanation")
    };
    let mut e = ApiError::new(code, known_reason(reason), message);
    e.details = st.get("details").filter(|d| d.is_object()).cloned();
    e
}

/// Upstream's NewInternalError of an error: 500 with the text as its cause.
fn internal(text: String) -> ApiError {
    let mut e = ApiError::internal(text.clone());
    e.details = Some(json!({"causes": [{"message": text}]}));
    e
}

fn calling_failed(hook: &Hook, why: &str) -> ApiError {
    internal(format!("failed calling webhook {:?}: {why}", hook.name()))
}

fn warn_once(ctx: &Ctx<'_>, w: String) {
    if w.is_empty() {
        return;
    }
    if let Ok(mut g) = ctx.warnings.lock() {
        if !g.contains(&w) {
            g.push(w);
        }
    }
}

/// A dry run may only reach webhooks without side effects (or none on a dry run).
fn dry_run_allowed(hook: &Hook) -> Result<(), CallError> {
    match hook.spec["sideEffects"].as_str() {
        None => Err(CallError::Calling("Webhook SideEffects is nil".into())),
        Some("None" | "NoneOnDryRun") => Ok(()),
        Some(_) => Err(CallError::Api(ApiError::bad_request(format!(
            "admission webhook {:?} does not support dry run",
            hook.name()
        )))),
    }
}

/// Call one webhook: the dry-run check, the review, its verification and
/// warnings. Returns the verified reply.
async fn call(
    ctx: &Ctx<'_>,
    hook: &Hook,
    a: &Attributes,
    obj: Option<&Value>,
    old: Option<&Value>,
    mutating: bool,
) -> Result<Reply, CallError> {
    if a.dry_run {
        dry_run_allowed(hook)?;
    }
    let version = review_version(hook).ok_or_else(|| {
        CallError::Calling(
            "could not create admission objects: webhook does not accept known AdmissionReview versions (v1, v1beta1)"
                .into(),
        )
    })?;
    let uid = uuid::Uuid::new_v4().to_string();
    let request = review(ctx, version, &uid, a, obj, old);
    let answer = post(ctx, hook, &request).await?;
    let reply = verify(version, &uid, mutating, &answer)
        .map_err(|e| CallError::Calling(format!("received invalid webhook response: {e}")))?;
    for w in &reply.warnings {
        warn_once(ctx, w.clone());
    }
    Ok(reply)
}

// ---------------------------------------------------------------------------
// the two plugins

/// Apply a mutating webhook's JSONPatch to `obj`. Returns whether it changed.
fn apply_patch(
    hook: &Hook,
    reply: &Reply,
    kind: &str,
    obj: Option<&mut Value>,
) -> Result<bool, CallError> {
    let Some(raw) = reply.patch.as_ref() else {
        return Ok(false);
    };
    let ops: json_patch::Patch =
        serde_json::from_slice(raw).map_err(|e| CallError::Api(internal(e.to_string())))?;
    if ops.0.is_empty() {
        return Ok(false);
    }
    let Some(obj) = obj else {
        return Err(CallError::Api(internal(format!(
            "admission webhook {:?} attempted to modify the object, which is not supported for this operation",
            hook.name()
        ))));
    };
    match reply.patch_type.as_deref() {
        Some("JSONPatch") => {}
        other => {
            return Err(CallError::Calling(format!(
                "unsupported patch type {:?}",
                other.unwrap_or_default()
            )))
        }
    }
    let mut patched = obj.clone();
    json_patch::patch(&mut patched, &ops).map_err(|e| CallError::Api(internal(e.to_string())))?;
    if !patched.is_object() {
        return Err(CallError::Api(internal(
            "the patched object is not a JSON object".into(),
        )));
    }
    let changed = patched != *obj;
    crate::defaults::apply(kind, &mut patched);
    *obj = patched;
    Ok(changed)
}

/// Run the mutating webhooks over `obj` (None on a delete). Returns whether
/// any changed it.
pub async fn admit(
    ctx: &Ctx<'_>,
    a: &Attributes,
    mut obj: Option<&mut Value>,
    old: Option<&Value>,
) -> ApiResult<bool> {
    if a.exempt() {
        return Ok(false);
    }
    let hooks = configured(ctx, true);
    if hooks.is_empty() {
        return Ok(false);
    }
    let mut changed_any = false;
    // upstream's reinvocation context
    let mut invoked_reinvocable: Vec<(String, String)> = Vec::new();
    let mut reinvoke: Vec<(String, String)> = Vec::new();
    let mut should_reinvoke = false;
    for round in 0..2 {
        if round == 1 && !should_reinvoke {
            break;
        }
        for hook in &hooks {
            if !should_call(ctx, hook, a, obj.as_deref(), old).await? {
                continue;
            }
            // a second round calls only webhooks asked to run again
            if round == 1 && !reinvoke.contains(&hook.key()) {
                continue;
            }
            let result = match call(ctx, hook, a, obj.as_deref(), old, true).await {
                Ok(reply) if !reply.allowed => {
                    return Err(denied(hook.name(), reply.status.as_ref()))
                }
                Ok(reply) => apply_patch(hook, &reply, &a.kind.2, obj.as_deref_mut()),
                Err(e) => Err(e),
            };
            let changed = matches!(result, Ok(true));
            if changed {
                changed_any = true;
                should_reinvoke = true;
                reinvoke.append(&mut invoked_reinvocable);
            }
            if hook.reinvoke_if_needed() {
                invoked_reinvocable.push(hook.key());
            }
            match result {
                Ok(_) => {}
                Err(CallError::Calling(why)) if hook.ignore_failures() => {
                    tracing::warn!(webhook = hook.name(), %why, "failed calling webhook, failing open");
                }
                Err(CallError::Calling(why)) => {
                    tracing::warn!(webhook = hook.name(), %why, "failed calling webhook, failing closed");
                    return Err(calling_failed(hook, &why));
                }
                Err(CallError::Api(e)) => return Err(e),
            }
        }
    }
    Ok(changed_any)
}

/// Run the validating webhooks (all at once, as upstream); the first refusal
/// or failure, in configuration order, is the answer.
pub async fn validate(
    ctx: &Ctx<'_>,
    a: &Attributes,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<()> {
    if a.exempt() {
        return Ok(());
    }
    let hooks = configured(ctx, false);
    if hooks.is_empty() {
        return Ok(());
    }
    let mut relevant = Vec::new();
    for hook in &hooks {
        if should_call(ctx, hook, a, obj, old).await? {
            relevant.push(hook);
        }
    }
    let calls = relevant.iter().map(|hook| async move {
        match call(ctx, hook, a, obj, old, false).await {
            Ok(reply) if reply.allowed => Ok(()),
            Ok(reply) => Err(denied(hook.name(), reply.status.as_ref())),
            Err(CallError::Calling(why)) if hook.ignore_failures() => {
                tracing::warn!(webhook = hook.name(), %why, "failed calling webhook, failing open");
                Ok(())
            }
            Err(CallError::Calling(why)) => {
                tracing::warn!(webhook = hook.name(), %why, "failed calling webhook, failing closed");
                Err(calling_failed(hook, &why))
            }
            Err(CallError::Api(e)) => Err(e),
        }
    });
    for r in futures::future::join_all(calls).await {
        r?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn attrs(op: Operation, group: &str, resource: &str, sub: &str, ns: &str) -> Attributes {
        Attributes {
            op,
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            sub: sub.into(),
            kind: (group.into(), "v1".into(), "X".into()),
            namespace: ns.into(),
            name: "n".into(),
            dry_run: false,
            options: Value::Null,
        }
    }

    fn rule(ops: &[&str], groups: &[&str], resources: &[&str], scope: Option<&str>) -> Value {
        let mut r = json!({"operations": ops, "apiGroups": groups, "apiVersions": ["*"], "resources": resources});
        if let Some(s) = scope {
            r["scope"] = json!(s);
        }
        r
    }

    #[test]
    fn rules_match_operations_groups_and_versions() {
        let cm = attrs(Operation::Create, "", "configmaps", "", "default");
        assert!(rule_matches(
            &rule(&["CREATE"], &[""], &["configmaps"], None),
            &cm
        ));
        assert!(rule_matches(&rule(&["*"], &["*"], &["*"], None), &cm));
        assert!(!rule_matches(
            &rule(&["UPDATE", "DELETE"], &[""], &["configmaps"], None),
            &cm
        ));
        assert!(!rule_matches(
            &rule(&["CREATE"], &["apps"], &["configmaps"], None),
            &cm
        ));
        assert!(!rule_matches(
            &rule(&["CREATE"], &[""], &["secrets"], None),
            &cm
        ));
        let mut v = rule(&["CREATE"], &[""], &["configmaps"], None);
        v["apiVersions"] = json!(["v1beta1"]);
        assert!(!rule_matches(&v, &cm));
        v["apiVersions"] = json!(["v1beta1", "v1"]);
        assert!(rule_matches(&v, &cm));
        let deploy = attrs(Operation::Update, "apps", "deployments", "", "ns");
        assert!(rule_matches(
            &rule(&["UPDATE"], &["apps"], &["deployments"], None),
            &deploy
        ));
    }

    #[test]
    fn rules_match_subresources() {
        let status = attrs(Operation::Update, "", "pods", "status", "default");
        let pods = attrs(Operation::Update, "", "pods", "", "default");
        let r = |res: &[&str]| rule(&["UPDATE"], &[""], res, None);
        // a plain resource never matches its subresources
        assert!(!rule_matches(&r(&["pods"]), &status));
        assert!(rule_matches(&r(&["pods"]), &pods));
        assert!(rule_matches(&r(&["pods/status"]), &status));
        assert!(!rule_matches(&r(&["pods/status"]), &pods));
        assert!(rule_matches(&r(&["pods/*"]), &status));
        // upstream's matcher: a `*` subresource matches the resource itself too
        assert!(rule_matches(&r(&["pods/*"]), &pods));
        assert!(rule_matches(&r(&["*/status"]), &status));
        assert!(rule_matches(&r(&["*/*"]), &status));
        assert!(rule_matches(&r(&["*/*"]), &pods));
        // `*` is every resource but no subresource
        assert!(rule_matches(&r(&["*"]), &pods));
        assert!(!rule_matches(&r(&["*"]), &status));
        assert!(!rule_matches(&r(&["deployments/status"]), &status));
    }

    #[test]
    fn rules_match_scope() {
        let cm = attrs(Operation::Create, "", "configmaps", "", "default");
        let node = attrs(Operation::Create, "", "nodes", "", "");
        let ns = attrs(Operation::Create, "", "namespaces", "", "n");
        let r = |scope| rule(&["*"], &["*"], &["*"], Some(scope));
        assert!(rule_matches(&r("Namespaced"), &cm));
        assert!(!rule_matches(&r("Cluster"), &cm));
        assert!(rule_matches(&r("Cluster"), &node));
        assert!(!rule_matches(&r("Namespaced"), &node));
        // a Namespace is cluster-scoped even though its request names it as the namespace
        assert!(rule_matches(&r("Cluster"), &ns));
        assert!(!rule_matches(&r("Namespaced"), &ns));
        assert!(rule_matches(&r("*"), &ns));
        assert!(!rule_matches(&r("Elsewhere"), &ns));
    }

    #[test]
    fn selectors_match_labels() {
        let labels: BTreeMap<String, String> = [("inject".to_string(), "true".to_string())]
            .into_iter()
            .collect();
        let sel = |v: Value| parse_selector(&v).unwrap();
        assert!(sel(Value::Null).is_empty());
        assert!(sel(json!({})).is_empty());
        assert!(sel(json!({"matchLabels": {"inject": "true"}})).matches(&labels));
        assert!(!sel(json!({"matchLabels": {"inject": "false"}})).matches(&labels));
        assert!(!sel(json!({"matchLabels": {"inject": "true"}})).matches(&BTreeMap::new()));
        let expr = |op: &str, values: &[&str]| {
            sel(json!({"matchExpressions": [{"key": "inject", "operator": op, "values": values}]}))
        };
        assert!(expr("In", &["true", "yes"]).matches(&labels));
        assert!(!expr("NotIn", &["true"]).matches(&labels));
        assert!(expr("NotIn", &["true"]).matches(&BTreeMap::new()));
        assert!(expr("Exists", &[]).matches(&labels));
        assert!(expr("DoesNotExist", &[]).matches(&BTreeMap::new()));
        assert!(
            parse_selector(&json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}))
                .is_err()
        );
    }

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(
            parse_url("https://127.0.0.1:8443/mutate").unwrap(),
            (
                "127.0.0.1".into(),
                8443,
                "/mutate".into(),
                "127.0.0.1:8443".into()
            )
        );
        assert_eq!(
            parse_url("https://hooks.example.com").unwrap(),
            (
                "hooks.example.com".into(),
                443,
                "".into(),
                "hooks.example.com".into()
            )
        );
        assert_eq!(
            parse_url("https://[::1]:9443/v").unwrap(),
            ("::1".into(), 9443, "/v".into(), "[::1]:9443".into())
        );
        assert!(parse_url("http://x/").is_err());
        assert!(parse_url("https://x:99999/").is_err());
        assert_eq!(
            with_timeout_param("", Duration::from_secs(10)),
            "/?timeout=10s"
        );
    }

    #[test]
    fn denials_read_as_upstream() {
        let e = denied(
            "deny.example.com",
            Some(&json!({"code": 403, "reason": "Forbidden", "message": "no"})),
        );
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(
            e.message,
            "admission webhook \"deny.example.com\" denied the request: no"
        );
        // no status at all: 400, without explanation
        let e = denied("d.example.com", None);
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "admission webhook \"d.example.com\" denied the request without explanation"
        );
        // a reason stands in for a missing message; codes below 400 are raised
        let e = denied(
            "d.example.com",
            Some(&json!({"code": 200, "reason": "Invalid"})),
        );
        assert_eq!((e.code, e.reason), (400, "Invalid"));
        assert_eq!(
            e.message,
            "admission webhook \"d.example.com\" denied the request: Invalid"
        );
    }

    #[test]
    fn responses_are_verified() {
        let ok = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "u", "allowed": true, "warnings": ["careful"]}});
        let r = verify("v1", "u", false, &ok).unwrap();
        assert!(r.allowed);
        assert_eq!(r.warnings, vec!["careful".to_string()]);
        assert_eq!(
            verify("v1", "other", false, &ok).unwrap_err(),
            "expected response.uid=\"other\", got \"u\""
        );
        assert_eq!(
            verify("v1", "u", false, &json!({})).unwrap_err(),
            "webhook response was absent"
        );
        let bad_kind = json!({"apiVersion": "v1", "kind": "Status", "response": {"uid": "u"}});
        assert_eq!(
            verify("v1", "u", false, &bad_kind).unwrap_err(),
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got /v1, Kind=Status"
        );
        let patch = base64::engine::general_purpose::STANDARD.encode(b"[]");
        let mut p = ok.clone();
        p["response"]["patch"] = json!(patch);
        assert_eq!(
            verify("v1", "u", true, &p).unwrap_err(),
            "webhook returned response.patch but not response.patchType"
        );
        assert_eq!(
            verify("v1", "u", false, &p).unwrap_err(),
            "validating webhook may not return response.patch"
        );
        p["response"]["patchType"] = json!("JSONPatch");
        let r = verify("v1", "u", true, &p).unwrap();
        assert_eq!(r.patch.as_deref(), Some(&b"[]"[..]));
        // v1beta1: nothing checked, the patch type pinned
        let beta = json!({"response": {"allowed": true, "patch": patch}});
        let r = verify("v1beta1", "u", true, &beta).unwrap();
        assert_eq!(r.patch_type.as_deref(), Some("JSONPatch"));
    }

    #[test]
    fn dry_runs_reach_only_webhooks_without_side_effects() {
        let hook = |se: Value| Hook {
            config: "c".into(),
            spec: json!({"name": "h.example.com", "sideEffects": se}),
        };
        assert!(dry_run_allowed(&hook(json!("None"))).is_ok());
        assert!(dry_run_allowed(&hook(json!("NoneOnDryRun"))).is_ok());
        match dry_run_allowed(&hook(json!("Some"))) {
            Err(CallError::Api(e)) => {
                assert_eq!((e.code, e.reason), (400, "BadRequest"));
                assert_eq!(
                    e.message,
                    "admission webhook \"h.example.com\" does not support dry run"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            dry_run_allowed(&hook(Value::Null)),
            Err(CallError::Calling(_))
        ));
    }

    #[test]
    fn patches_apply_and_are_defaulted() {
        let hook = Hook {
            config: "c".into(),
            spec: json!({"name": "m.example.com"}),
        };
        let ops = br#"[{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]"#;
        let reply = Reply {
            allowed: true,
            patch: Some(ops.to_vec()),
            patch_type: Some("JSONPatch".into()),
            ..Reply::default()
        };
        let mut obj = json!({"metadata": {"name": "x"}});
        assert!(apply_patch(&hook, &reply, "ConfigMap", Some(&mut obj)).unwrap());
        assert_eq!(obj["metadata"]["labels"]["a"], "b");
        // the same patch again changes nothing
        assert!(!apply_patch(&hook, &reply, "ConfigMap", Some(&mut obj)).unwrap());
        // no object (a delete): upstream's internal error
        match apply_patch(&hook, &reply, "ConfigMap", None) {
            Err(CallError::Api(e)) => {
                assert_eq!(e.code, 500);
                assert!(
                    e.message.contains("attempted to modify the object"),
                    "{}",
                    e.message
                );
            }
            other => panic!("{other:?}"),
        }
        let other_type = Reply {
            patch_type: Some("MergePatch".into()),
            ..reply
        };
        match apply_patch(&hook, &other_type, "ConfigMap", Some(&mut obj)) {
            Err(CallError::Calling(why)) => {
                assert_eq!(why, "unsupported patch type \"MergePatch\"")
            }
            other => panic!("{other:?}"),
        }
    }
}
