//! The HTTP surface: routing of Kubernetes API paths, content negotiation, request
//! bodies, LIST with pagination, and streaming WATCH

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};

use crate::authn::User;
use crate::cache::{CacheError, Entry, EventType, Feed};
use crate::error::{success_status, ApiError, ApiResult};
use crate::metrics::RequestLabels;
use crate::registry::{self, Resource};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{self, Ctx, DeleteOpts, FieldValidation, PatchType};
use crate::{discovery, strategy, table, Api};

pub type Body = BoxBody<Bytes, std::io::Error>;

pub const MAX_BODY: usize = 3 * 1024 * 1024;

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

pub fn error_response(e: &ApiError) -> Response<Body> {
    let body = serde_json::to_vec(&e.status()).unwrap_or_default();
    let mut r = respond(e.code, "application/json", body);
    if e.code == 504 || e.code == 429 || e.code == 503 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    r
}

fn text(code: u16, s: &str) -> Response<Body> {
    respond(code, "text/plain; charset=utf-8", s.to_string())
}

/// What the client asked to get back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    /// JSON built from converted values rather than cached bytes.
    JsonValues,
    Yaml,
    Table,
    Pom,
    Discovery(&'static str),
}

/// Pick the first acceptable media type of an Accept header among `allowed`.
pub fn negotiate(accept: &str, allowed: &[Output]) -> ApiResult<Output> {
    if accept.trim().is_empty() {
        return Ok(Output::Json);
    }
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let typ = parts.next().unwrap_or_default().to_ascii_lowercase();
        let params: HashMap<String, String> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let json_like = matches!(
            typ.as_str(),
            "application/json" | "application/*" | "*/*" | "*"
        );
        let out = match (
            params.get("as").map(String::as_str),
            params.get("g").map(String::as_str),
            params.get("v").map(String::as_str),
        ) {
            (Some("Table"), Some("meta.k8s.io"), Some("v1" | "v1beta1")) if json_like => {
                Some(Output::Table)
            }
            (
                Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                Some("meta.k8s.io"),
                Some("v1" | "v1beta1"),
            ) if json_like => Some(Output::Pom),
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2"))
                if json_like =>
            {
                Some(Output::Discovery("v2"))
            }
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2beta1"))
                if json_like =>
            {
                Some(Output::Discovery("v2beta1"))
            }
            (None, _, _) if json_like => Some(Output::Json),
            (None, _, _) if typ == "application/yaml" => Some(Output::Yaml),
            _ => None,
        };
        if let Some(o) = out {
            if allowed.contains(&o) || o == Output::Json {
                return Ok(o);
            }
        }
    }
    Err(ApiError::not_acceptable(accept))
}

/// Query parameters, decoded.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
    fn int(&self, k: &str) -> ApiResult<Option<i64>> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {k}: {v:?}"))),
        }
    }
}

/// A Kubernetes API path taken apart.
#[derive(Debug)]
struct Target {
    res: &'static Resource,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    watch_path: bool,
}

/// Parse `/api/v1/...` or `/apis/G/V/...` after the group-version.
fn parse_target(group: &str, version: &str, segs: &[&str]) -> Option<Target> {
    let mut segs = segs.to_vec();
    let mut watch_path = false;
    if segs.first() == Some(&"watch") {
        watch_path = true;
        segs.remove(0);
    }
    let mut ns = None;
    if segs.len() >= 3 && segs[0] == "namespaces" && !matches!(segs[2], "status" | "finalize") {
        ns = Some(segs[1].to_string());
        segs.drain(0..2);
    }
    let res = registry::lookup(group, version, segs.first()?)?;
    if !res.namespaced && ns.is_some() {
        return None;
    }
    let name = segs.get(1).map(|s| s.to_string());
    let sub = segs.get(2).map(|s| s.to_string());
    if segs.len() > 3 {
        return None;
    }
    if let Some(s) = &sub {
        if !res.has_sub(s) {
            return None;
        }
    }
    Some(Target {
        res,
        ns,
        name,
        sub,
        watch_path,
    })
}

/// Serve one authenticated (or anonymous, for the public paths) request.
pub async fn handle(api: Arc<Api>, user: Option<User>, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let mut labels = RequestLabels {
        verb: "GET",
        scope: "",
        ..Default::default()
    };
    // read the body first (bounded), so that an early error still reaches a
    // client that is sending one (HTTP/2 would otherwise reset the stream)
    let (parts, incoming) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let body = if parts.method == Method::GET || parts.method == Method::HEAD {
        Ok(Bytes::new())
    } else if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        Err(ApiError::too_large())
    } else {
        read_body(incoming).await
    };
    let mut audit = begin_audit(&api, user.as_ref(), &parts, body.as_ref().ok());
    let req = Request::from_parts(parts, body);
    let resp = match route(&api, user, req, &mut labels).await {
        Ok(r) => r,
        Err(e) => {
            if e.code >= 500 {
                tracing::error!(code = e.code, message = %e.message, "request failed");
            }
            error_response(&e)
        }
    };
    let resp = match audit.as_mut() {
        Some((auditor, rec, watch)) => finish_audit(&api, auditor, rec, *watch, resp).await,
        None => resp,
    };
    if !labels.resource.is_empty() || labels.verb != "GET" {
        api.metrics.observe(
            &labels,
            resp.status().as_u16(),
            start.elapsed().as_secs_f64(),
        );
    }
    resp
}

/// The client's address, put in a request's extensions by the connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

type Audit = (Arc<crate::audit::Auditor>, crate::audit::Record, bool);

/// The RequestReceived audit event, when the policy audits this request.
fn begin_audit(
    api: &Arc<Api>,
    user: Option<&User>,
    parts: &hyper::http::request::Parts,
    body: Option<&Bytes>,
) -> Option<Audit> {
    let auditor = api.audit.clone()?;
    let anonymous = User {
        name: "system:anonymous".into(),
        uid: String::new(),
        groups: vec!["system:unauthenticated".into()],
    };
    let user = user.unwrap_or(&anonymous);
    let attrs = crate::rbac::Attributes::from_request(
        user,
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query(),
    )
    .ok()?;
    let source = parts
        .extensions
        .get::<Peer>()
        .map(|p| p.0.ip().to_string())
        .unwrap_or_default();
    let agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or_default();
    let decode = || {
        let b = body.filter(|b| !b.is_empty())?;
        decode_body(api, &parts.headers, b, parts.method == Method::PATCH)
            .ok()
            .map(|(v, _)| v)
    };
    let rec = auditor.begin(
        &attrs,
        (parts.method.as_str(), uri),
        &source,
        agent,
        &decode,
    )?;
    let watch = attrs.verb == "watch";
    Some((auditor, rec, watch))
}

/// ResponseStarted (a watch) or ResponseComplete, with the response's status
/// and, where the level wants it, its JSON body (read and put back).
async fn finish_audit(
    api: &Api,
    auditor: &crate::audit::Auditor,
    rec: &mut crate::audit::Record,
    watch: bool,
    resp: Response<Body>,
) -> Response<Body> {
    use http_body_util::BodyExt;
    let code = resp.status().as_u16();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let protobuf = ct.starts_with("application/vnd.kubernetes.protobuf");
    let json = ct.starts_with("application/json") || protobuf;
    let wants_body = rec.decision.level >= crate::audit::Level::RequestResponse || code >= 400;
    if watch || code == 101 || !json || !wants_body {
        let stage = if watch || code == 101 {
            crate::audit::Stage::ResponseStarted
        } else {
            crate::audit::Stage::ResponseComplete
        };
        auditor.finish(rec, stage, code, None, None);
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let obj = if protobuf {
        api.protobuf
            .decode(&bytes, &|av, kind| api.openapi.schema_of(av, kind))
            .ok()
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    auditor.finish(rec, crate::audit::Stage::ResponseComplete, code, obj, None);
    Response::from_parts(parts, full(bytes))
}

async fn route(
    api: &Arc<Api>,
    user: Option<User>,
    req: Request<ApiResult<Bytes>>,
    labels: &mut RequestLabels,
) -> ApiResult<Response<Body>> {
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();
    match path.as_str() {
        "/healthz" | "/livez" | "/livez/ping" | "/healthz/ping" => return Ok(text(200, "ok")),
        "/readyz" | "/readyz/etcd" => {
            let (ok, report) = api.readiness().await;
            let body = if query.get("verbose").is_some() {
                report
            } else if ok {
                "ok".into()
            } else {
                "readyz check failed".into()
            };
            return Ok(text(if ok { 200 } else { 500 }, &body));
        }
        "/version" | "/version/" => return Ok(json_response(200, &crate::version_info())),
        _ => {}
    }
    let Some(user) = user else {
        return Err(ApiError::unauthorized());
    };
    let user = crate::authz::impersonate(api, user, req.headers())?;
    tracing::debug!(user = %user.name, %method, %path, "request");
    let attrs =
        crate::rbac::Attributes::from_request(&user, method.as_str(), &path, req.uri().query())
            .map_err(ApiError::internal)?;
    api.authz.check(api, &attrs, query.get("fieldSelector"))?;
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["metrics"] => {
            return Ok(respond(
                200,
                "text/plain; version=0.0.4",
                api.metrics.render(),
            ))
        }
        ["api"] => {
            return Ok(
                match negotiate(
                    &accept,
                    &[Output::Discovery("v2"), Output::Discovery("v2beta1")],
                )? {
                    Output::Discovery(v) => discovery_response(&discovery::aggregated(true, v), v),
                    _ => json_response(200, &discovery::api_versions(&api.server_address())),
                },
            )
        }
        ["apis"] => {
            return Ok(
                match negotiate(
                    &accept,
                    &[Output::Discovery("v2"), Output::Discovery("v2beta1")],
                )? {
                    Output::Discovery(v) => discovery_response(&discovery::aggregated(false, v), v),
                    _ => json_response(200, &discovery::api_group_list()),
                },
            )
        }
        ["api", "v1"] => {
            return discovery::resource_list("", "v1")
                .map(|v| json_response(200, &v))
                .ok_or_else(ApiError::not_found_path)
        }
        ["apis", g] => {
            return discovery::api_group(g)
                .map(|v| json_response(200, &v))
                .ok_or_else(ApiError::not_found_path)
        }
        ["apis", g, v] => {
            return discovery::resource_list(g, v)
                .map(|d| json_response(200, &d))
                .ok_or_else(ApiError::not_found_path)
        }
        ["openapi", "v2"] => return Ok(respond(200, "application/json", api.openapi.v2())),
        ["openapi", "v3"] => return Ok(respond(200, "application/json", api.openapi.v3_index())),
        ["openapi", "v3", rest @ ..] => {
            return api
                .openapi
                .v3_document(&rest.join("/"))
                .map(|d| respond(200, "application/json", d))
                .ok_or_else(ApiError::not_found_path)
        }
        _ => {}
    }
    let review = match segs.as_slice() {
        ["apis", "authorization.k8s.io", "v1", plural] => Some((None, *plural)),
        ["apis", "authorization.k8s.io", "v1", "namespaces", ns, "localsubjectaccessreviews"] => {
            Some((Some(ns.to_string()), "localsubjectaccessreviews"))
        }
        _ => None,
    };
    if let Some((ns, plural)) = review {
        if method != Method::POST {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "access reviews only take create (POST)",
            ));
        }
        labels.verb = "POST";
        let body = req.body().clone()?;
        let (v, _) = decode_body(api, req.headers(), &body, false)?;
        let out = crate::authz::review(api, &user, plural, ns.as_deref(), &v)?;
        return Ok(json_response(201, &out));
    }
    if let ["apis", "authentication.k8s.io", "v1", "tokenreviews"] = segs.as_slice() {
        if method != Method::POST {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "tokenreviews only take create (POST)",
            ));
        }
        labels.verb = "POST";
        let body = req.body().clone()?;
        let (v, _) = decode_body(api, req.headers(), &body, false)?;
        return Ok(json_response(201, &crate::tokenreview::review(api, &v)?));
    }
    if let ["apis", "authentication.k8s.io", v @ ("v1" | "v1beta1"), "selfsubjectreviews"] =
        segs.as_slice()
    {
        // `kubectl auth whoami`: who the server takes the caller for
        if method != Method::POST {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "selfsubjectreviews only take create (POST)",
            ));
        }
        labels.verb = "POST";
        let review = json!({
            "kind": "SelfSubjectReview",
            "apiVersion": format!("authentication.k8s.io/{v}"),
            "metadata": {"creationTimestamp": store::now()},
            "status": {"userInfo": {"username": user.name, "uid": user.uid, "groups": user.groups}},
        });
        return Ok(json_response(201, &review));
    }
    let target = match segs.as_slice() {
        ["api", "v1", rest @ ..] => parse_target("", "v1", rest),
        ["apis", g, v, rest @ ..] => parse_target(g, v, rest),
        _ => None,
    }
    .ok_or_else(ApiError::not_found_path)?;
    labels.group = target.res.group.to_string();
    labels.version = target.res.version.to_string();
    labels.resource = target.res.plural.to_string();
    labels.subresource = target.sub.clone().unwrap_or_default();
    labels.scope = if target.name.is_some() {
        "resource"
    } else if target.ns.is_some() {
        "namespace"
    } else {
        "cluster"
    };
    labels.dry_run = query.get("dryRun") == Some("All");
    serve_resource(api, &user, req, target, query, &accept, labels).await
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    respond(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn discovery_response(v: &Value, version: &str) -> Response<Body> {
    respond(
        200,
        &format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"),
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

/// Past this much, an oversized body is no longer drained: the connection is cut.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Read a request body, at most MAX_BODY bytes. A larger body is read on (and
/// dropped, up to DRAIN_LIMIT) so the client gets to read the 413 we answer.
async fn read_body(mut body: Incoming) -> ApiResult<Bytes> {
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > DRAIN_LIMIT {
                break;
            }
            if seen <= MAX_BODY {
                buf.extend_from_slice(&data);
            }
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large());
    }
    Ok(buf.freeze())
}

/// Decode a JSON, YAML or (for whole objects) protobuf body into a JSON value.
fn decode_body(
    api: &Api,
    headers: &HeaderMap,
    body: &[u8],
    patch: bool,
) -> ApiResult<(Value, Option<PatchType>)> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mt = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if mt == "application/vnd.kubernetes.protobuf" && !patch {
        let v = api
            .protobuf
            .decode(body, &|av, kind| {
                api.openapi.schema_of(av, kind).or_else(|| {
                    // request-only kinds with no resource of their own
                    let (g, v) = av.rsplit_once('/')?;
                    let g = g.strip_suffix(".k8s.io").unwrap_or(g);
                    matches!(g, "authentication" | "authorization")
                        .then(|| format!("io.k8s.api.{g}.{v}.{kind}"))
                })
            })
            .map_err(|e| ApiError::bad_request(format!("error decoding protobuf: {e}")))?;
        return Ok((v, None));
    }
    let (yaml, ptype) = match mt.as_str() {
        "application/json-patch+json" if patch => (false, Some(PatchType::Json)),
        "application/merge-patch+json" if patch => (false, Some(PatchType::Merge)),
        "application/strategic-merge-patch+json" if patch => (false, Some(PatchType::Strategic)),
        "application/apply-patch+yaml" | "application/apply-patch+json" if patch => {
            (true, Some(PatchType::Apply))
        }
        "application/json" | "" if !patch => (false, None),
        "application/yaml" | "application/x-yaml" | "text/yaml" if !patch => (true, None),
        _ => return Err(ApiError::unsupported_media_type(ct)),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let v: Value = if yaml {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?
    };
    Ok((v, ptype))
}

fn manager_of(q: &Query, headers: &HeaderMap) -> ApiResult<String> {
    if let Some(m) = q.get("fieldManager") {
        if m.len() > 128 {
            return Err(ApiError::bad_request(
                "fieldManager must be at most 128 characters",
            ));
        }
        return Ok(m.to_string());
    }
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    Ok(ua
        .split('/')
        .next()
        .unwrap_or("unknown")
        .chars()
        .take(128)
        .collect())
}

async fn serve_resource(
    api: &Arc<Api>,
    user: &User,
    req: Request<ApiResult<Bytes>>,
    t: Target,
    q: Query,
    accept: &str,
    labels: &mut RequestLabels,
) -> ApiResult<Response<Body>> {
    let (parts, body) = req.into_parts();
    let dry_run = match q.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "unsupported dryRun value {o:?}: only \"All\" is supported"
            )))
        }
    };
    let field_validation = match q.get("fieldValidation") {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, not {o:?}"
            )))
        }
    };
    let ctx = Ctx {
        api,
        res: t.res,
        ns: t.ns.clone(),
        user,
        dry_run,
        manager: manager_of(&q, &parts.headers)?,
        field_validation,
        warnings: Mutex::new(Vec::new()),
    };
    match serve_verb(api, &ctx, parts, body, t, q, accept, labels).await {
        Ok(resp) => Ok(with_warnings(resp, &ctx)),
        // warnings (an admission webhook's) go with a refusal too, as upstream
        Err(e) if ctx.warnings.lock().is_ok_and(|w| !w.is_empty()) => {
            if e.code >= 500 {
                tracing::error!(code = e.code, message = %e.message, "request failed");
            }
            Ok(with_warnings(error_response(&e), &ctx))
        }
        Err(e) => Err(e),
    }
}

/// The verb of a resource request, with its store context.
#[allow(clippy::too_many_arguments)]
async fn serve_verb(
    api: &Arc<Api>,
    ctx: &Ctx<'_>,
    mut parts: http::request::Parts,
    body: ApiResult<Bytes>,
    t: Target,
    q: Query,
    accept: &str,
    labels: &mut RequestLabels,
) -> ApiResult<Response<Body>> {
    let method = parts.method.clone();
    let res = t.res;
    if res.namespaced && t.ns.is_none() && t.name.is_some() {
        return Err(ApiError::not_found_path());
    }
    let allowed = [Output::Table, Output::Pom, Output::Yaml];
    let name = t.name.clone();
    let sub = t.sub.as_deref();
    let resp = match (&method, name.as_deref(), sub) {
        (&Method::GET, Some(n), Some("log"))
        | (&Method::GET | &Method::POST, Some(n), Some("exec" | "attach" | "portforward"))
            if res.plural == "pods" =>
        {
            labels.verb = if sub == Some("log") { "GET" } else { "CONNECT" };
            let sub = sub.unwrap_or_default().to_string();
            let pod = store::get(ctx, n).await?;
            let ns = t.ns.clone().unwrap_or_default();
            let parts = std::mem::replace(&mut parts, Request::new(()).into_parts().0);
            return crate::proxy::serve(api, pod, &ns, n, &sub, parts).await;
        }
        (&Method::GET, None, None) => {
            let out = negotiate(accept, &allowed)?;
            if t.watch_path || q.flag("watch") {
                labels.verb = "WATCH";
                return watch(api, ctx, &q, out).await;
            }
            labels.verb = "LIST";
            list(api, ctx, &q, out).await?
        }
        (&Method::GET, Some(n), None | Some("status" | "approval")) => {
            labels.verb = "GET";
            let out = negotiate(accept, &allowed)?;
            if t.watch_path || q.flag("watch") {
                labels.verb = "WATCH";
                return Err(ApiError::bad_request(
                    "watch of a single object: use a list with fieldSelector=metadata.name=NAME",
                ));
            }
            let obj = if q.get("resourceVersion") == Some("0") {
                let key = res.key(&api.prefix, t.ns.as_deref(), n);
                match api.cache.get(&key) {
                    Some(e) => store::present(
                        res,
                        serde_json::from_slice(&e.data)
                            .map_err(|e| ApiError::internal(e.to_string()))?,
                    ),
                    None => return Err(ApiError::not_found(res, n)),
                }
            } else {
                store::get(ctx, n).await?
            };
            object_response(res, 200, obj, out, &q)
        }
        (&Method::GET, Some(n), Some("scale")) => {
            labels.verb = "GET";
            json_response(200, &store::to_scale(&store::get(ctx, n).await?))
        }
        (&Method::POST, None, None) => {
            labels.verb = "POST";
            if res.namespaced && t.ns.is_none() {
                return Err(ApiError::not_found_path());
            }
            let out = negotiate(accept, &allowed)?;
            let (v, _) = decode_body(api, &parts.headers, &body.clone()?, false)?;
            let created = store::create(ctx, v).await?;
            object_response(res, 201, created, out, &q)
        }
        (&Method::POST, Some(n), Some("binding")) => {
            labels.verb = "POST";
            let (v, _) = decode_body(api, &parts.headers, &body.clone()?, false)?;
            json_response(201, &store::bind(ctx, n, &v).await?)
        }
        (&Method::POST, Some(n), Some("token")) if res.plural == "serviceaccounts" => {
            labels.verb = "POST";
            let (v, _) = decode_body(api, &parts.headers, &body.clone()?, false)?;
            json_response(201, &crate::tokenrequest::create(ctx, n, &v).await?)
        }
        (&Method::POST, Some(n), Some("eviction")) => {
            labels.verb = "POST";
            let (v, _) = decode_body(api, &parts.headers, &body.clone()?, false)?;
            let opts = DeleteOpts::from_body(&v["deleteOptions"]);
            store::delete(ctx, n, &opts).await?;
            json_response(201, &success_status(None))
        }
        (&Method::PUT, Some(n), None | Some("status" | "approval")) => {
            labels.verb = "PUT";
            let out = negotiate(accept, &allowed)?;
            let (v, _) = decode_body(api, &parts.headers, &body.clone()?, false)?;
            let (obj, created) = store::update(ctx, n, sub, v).await?;
            object_response(res, if created { 201 } else { 200 }, obj, out, &q)
        }
        (&Method::PUT, Some(n), Some("scale")) => {
            labels.verb = "PUT";
            let (v, _) = decode_body(api, &parts.headers, &body.clone()?, false)?;
            let scale = store::update_scale(ctx, n, &|_| Ok(v.clone())).await?;
            json_response(200, &scale)
        }
        (&Method::PUT, Some(n), Some("finalize")) => {
            labels.verb = "PUT";
            let (v, _) = decode_body(api, &parts.headers, &body.clone()?, false)?;
            json_response(200, &store::finalize_namespace(ctx, n, &v).await?)
        }
        (&Method::PATCH, Some(n), None | Some("status" | "approval")) => {
            labels.verb = "PATCH";
            let out = negotiate(accept, &allowed)?;
            let (v, ptype) = decode_body(api, &parts.headers, &body.clone()?, true)?;
            let ptype = ptype.ok_or_else(|| ApiError::unsupported_media_type("none"))?;
            if ptype != PatchType::Apply && q.get("force").is_some() {
                return Err(ApiError::bad_request(
                    "force is only supported for apply patches",
                ));
            }
            let (obj, created) = store::patch(ctx, n, sub, ptype, &v, q.flag("force")).await?;
            object_response(res, if created { 201 } else { 200 }, obj, out, &q)
        }
        (&Method::PATCH, Some(n), Some("scale")) => {
            labels.verb = "PATCH";
            let (v, ptype) = decode_body(api, &parts.headers, &body.clone()?, true)?;
            let scale = store::update_scale(ctx, n, &|mut cur: Value| {
                match ptype {
                    Some(PatchType::Json) => {
                        let ops: json_patch::Patch = serde_json::from_value(v.clone())
                            .map_err(|e| ApiError::bad_request(e.to_string()))?;
                        json_patch::patch(&mut cur, &ops)
                            .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
                    }
                    _ => json_patch::merge(&mut cur, &v),
                }
                Ok(cur)
            })
            .await?;
            json_response(200, &scale)
        }
        (&Method::DELETE, Some(n), None) => {
            labels.verb = "DELETE";
            let out = negotiate(accept, &allowed)?;
            let opts = delete_opts(api, &parts.headers, body, &q).await?;
            let obj = store::delete(ctx, n, &opts).await?;
            object_response(res, 200, obj, out, &q)
        }
        (&Method::DELETE, None, None) => {
            labels.verb = "DELETE";
            if res.namespaced && t.ns.is_none() {
                return Err(ApiError::not_found_path());
            }
            let opts = delete_opts(api, &parts.headers, body, &q).await?;
            delete_collection(api, ctx, &q, &opts).await?
        }
        _ => return Err(ApiError::method_not_allowed(method.as_str(), res)),
    };
    Ok(resp)
}

fn with_warnings(mut resp: Response<Body>, ctx: &Ctx) -> Response<Body> {
    if let Ok(ws) = ctx.warnings.lock() {
        for w in ws.iter() {
            let v = format!("299 - \"{}\"", w.replace('"', "\\\""));
            if let Ok(h) = header::HeaderValue::from_str(&v) {
                resp.headers_mut().append(header::WARNING, h);
            }
        }
    }
    resp
}

async fn delete_opts(
    api: &Api,
    headers: &HeaderMap,
    body: ApiResult<Bytes>,
    q: &Query,
) -> ApiResult<DeleteOpts> {
    let raw = body?;
    let mut opts = if raw.iter().all(u8::is_ascii_whitespace) {
        DeleteOpts::default()
    } else {
        let (v, _) = decode_body(api, headers, &raw, false)?;
        DeleteOpts::from_body(&v)
    };
    if let Some(g) = q.int("gracePeriodSeconds")? {
        opts.grace_period = Some(g);
    }
    if let Some(p) = q.get("propagationPolicy") {
        opts.propagation = Some(p.to_string());
    }
    if let Some(o) = q.get("orphanDependents") {
        opts.propagation = Some(if o == "true" { "Orphan" } else { "Background" }.into());
    }
    Ok(opts)
}

/// One object in the requested form.
fn object_response(
    res: &Resource,
    code: u16,
    obj: Value,
    out: Output,
    q: &Query,
) -> Response<Body> {
    match out {
        Output::Table => json_response(code, &table_of(res, &[obj], None, q)),
        Output::Pom => respond(code, "application/json", partial_bytes(&obj)),
        Output::Yaml => respond(
            code,
            "application/yaml",
            serde_yaml::to_string(&obj).unwrap_or_default(),
        ),
        _ => json_response(code, &obj),
    }
}

fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// `obj` as a PartialObjectMetadata, encoded without copying its metadata.
fn partial_bytes(obj: &Value) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Pom<'a> {
        kind: &'static str,
        #[serde(rename = "apiVersion")]
        api_version: &'static str,
        metadata: &'a Value,
    }
    serde_json::to_vec(&Pom {
        kind: "PartialObjectMetadata",
        api_version: "meta.k8s.io/v1",
        metadata: &obj["metadata"],
    })
    .unwrap_or_default()
}

fn table_of(res: &Resource, objs: &[Value], meta: Option<Value>, q: &Query) -> Value {
    let now = chrono::Utc::now();
    let cols: Vec<Value> = table::columns(res.group, res.plural)
        .iter()
        .map(|c| json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect();
    let include = q.get("includeObject").unwrap_or("Metadata");
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut row = json!({"cells": table::cells(res.group, res.plural, o, now)});
            match include {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => row["object"] = partial(o),
            }
            row
        })
        .collect();
    let meta = meta.unwrap_or_else(|| json!({"resourceVersion": objs.first().map(|o| o["metadata"]["resourceVersion"].clone()).unwrap_or(Value::Null)}));
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": cols, "rows": rows})
}

/// Label and field selectors of a LIST or WATCH, checked against the resource.
struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn from_query(res: &Resource, q: &Query) -> ApiResult<Filter> {
        let labels = match q.get("labelSelector") {
            Some(s) if !s.is_empty() => LabelSelector::parse(s).map_err(ApiError::bad_request)?,
            _ => LabelSelector::everything(),
        };
        let fields = match q.get("fieldSelector") {
            Some(s) if !s.is_empty() => FieldSelector::parse(s).map_err(ApiError::bad_request)?,
            _ => FieldSelector::everything(),
        };
        for f in fields.fields() {
            if !res.supports_field(f) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {f}"
                )));
            }
        }
        Ok(Filter { labels, fields })
    }

    fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    fn matches(&self, e: &Entry) -> bool {
        if !self.labels.matches(&e.labels) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&e.data) else {
            return false;
        };
        // events.k8s.io field labels name the stored core/v1 fields differently
        self.fields.matches(&|f: &str| {
            let stored = match f.strip_prefix("regarding.") {
                Some(rest) => format!("involvedObject.{rest}"),
                None if f == "reportingController" => "reportingComponent".to_string(),
                None => f.to_string(),
            };
            strategy::field_value(&v, &stored)
        })
    }
}

fn cache_err(e: CacheError) -> ApiError {
    match e {
        CacheError::Gone { .. } => ApiError::gone(e.to_string()),
        CacheError::TooLarge { .. } => {
            let mut err = ApiError::timeout(e.to_string());
            err.details = Some(
                json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
            );
            err
        }
        CacheError::NotReady => ApiError::unavailable("the watch cache is not ready yet, retry"),
        CacheError::Storage(s) => ApiError::internal(s.to_string()),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, start: &str) -> String {
    let t = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: start.to_string(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&t).unwrap_or_default())
}

fn decode_continue(s: &str) -> ApiResult<ContinueToken> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if t.v != "meta.k8s.io/v1" || t.rv <= 0 || t.start.contains("..") {
        return Err(bad());
    }
    Ok(t)
}

struct Page {
    items: Vec<Arc<Entry>>,
    rev: i64,
    next: Option<String>,
    remaining: Option<usize>,
}

async fn list(api: &Arc<Api>, ctx: &Ctx<'_>, q: &Query, out: Output) -> ApiResult<Response<Body>> {
    let res = ctx.res;
    let filter = Filter::from_query(res, q)?;
    let limit = q.int("limit")?.unwrap_or(0).max(0) as usize;
    let prefix = res.list_prefix(&api.prefix, ctx.ns.as_deref());
    let rv = q.get("resourceVersion").unwrap_or_default();
    let rvm = q.get("resourceVersionMatch").unwrap_or_default();
    let keep = |_: &str, e: &Entry| filter.matches(e);
    let page = if let Some(c) = q.get("continue").filter(|c| !c.is_empty()) {
        if !rv.is_empty() {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let tok = decode_continue(c)?;
        let after = format!("{prefix}{}", tok.start.trim_end_matches('\0'));
        if api.cache.revision() == tok.rv {
            let p = api.cache.list(&prefix, Some(&after), limit, &keep);
            Page {
                items: p.items,
                rev: tok.rv,
                next: p.next,
                remaining: Some(p.remaining),
            }
        } else {
            etcd_page(api, &prefix, &format!("{after}\0"), tok.rv, limit, &filter).await?
        }
    } else {
        match (rvm, rv) {
            ("Exact", "") => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch=Exact requires a resourceVersion",
                ))
            }
            ("Exact", r) => {
                let r: i64 = r
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {r:?}")))?;
                etcd_page(api, &prefix, &prefix, r, limit, &filter).await?
            }
            ("" | "NotOlderThan", r) => {
                match r {
                    "0" => {}
                    "" => {
                        api.cache.wait_fresh().await.map_err(cache_err)?;
                    }
                    r => {
                        let r: i64 = r.parse().map_err(|_| {
                            ApiError::bad_request(format!("invalid resourceVersion {r:?}"))
                        })?;
                        api.cache.wait_for(r).await.map_err(cache_err)?;
                    }
                }
                if !api.cache.is_ready() {
                    return Err(cache_err(CacheError::NotReady));
                }
                let p = api.cache.list(&prefix, None, limit, &keep);
                Page {
                    items: p.items,
                    rev: p.rev,
                    next: p.next,
                    remaining: Some(p.remaining),
                }
            }
            (o, _) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported resourceVersionMatch {o:?}"
                )))
            }
        }
    };
    let mut meta = json!({"resourceVersion": page.rev.to_string()});
    if let Some(next) = &page.next {
        let rel = next.strip_prefix(&prefix).unwrap_or(next);
        meta["continue"] = encode_continue(page.rev, &format!("{rel}\0")).into();
        if let Some(n) = page.remaining.filter(|_| filter.is_empty()) {
            meta["remainingItemCount"] = n.into();
        }
    }
    let values = || -> Vec<Value> {
        page.items
            .iter()
            .filter_map(|e| serde_json::from_slice(&e.data).ok())
            .map(|v| store::present(res, v))
            .collect()
    };
    // objects stored in another version's shape are converted one by one
    let out = if out == Output::Json && res.group == "events.k8s.io" {
        Output::JsonValues
    } else {
        out
    };
    match out {
        Output::Table => {
            let objs = values();
            Ok(json_response(200, &table_of(res, &objs, Some(meta), q)))
        }
        Output::Pom => {
            let items: Vec<Value> = values().iter().map(partial).collect();
            Ok(json_response(
                200,
                &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
            ))
        }
        Output::Yaml | Output::JsonValues => {
            let doc = json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": meta, "items": values()});
            if out == Output::JsonValues {
                return Ok(json_response(200, &doc));
            }
            Ok(respond(
                200,
                "application/yaml",
                serde_yaml::to_string(&doc).unwrap_or_default(),
            ))
        }
        _ => {
            // concatenate the cached bytes: no re-encoding of the objects
            let head = format!(
                "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
                res.kind,
                res.api_version(),
                meta
            );
            let mut buf = Vec::with_capacity(
                head.len() + page.items.iter().map(|e| e.data.len() + 1).sum::<usize>() + 2,
            );
            buf.extend_from_slice(head.as_bytes());
            for (i, e) in page.items.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                buf.extend_from_slice(&e.data);
            }
            buf.extend_from_slice(b"]}");
            Ok(respond(200, "application/json", buf))
        }
    }
}

/// A page read from etcd at a fixed revision (continuations and Exact reads).
async fn etcd_page(
    api: &Api,
    prefix: &str,
    start: &str,
    rev: i64,
    limit: usize,
    filter: &Filter,
) -> ApiResult<Page> {
    let end = crate::storage::prefix_end(prefix);
    let mut items = Vec::new();
    let mut from = start.to_string();
    let mut last_key: Option<String>;
    loop {
        let batch = if limit > 0 {
            (limit as i64 - items.len() as i64).max(1) + 1
        } else {
            1000
        };
        let (kvs, more, _) = api.storage.range(&from, &end, rev, batch).await.map_err(|e| match e {
            crate::storage::StorageError::Compacted { .. } => ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ),
            other => ApiError::internal(other.to_string()),
        })?;
        last_key = kvs.last().map(|k| k.key.clone());
        for kv in &kvs {
            if limit > 0 && items.len() == limit {
                // there is at least one more match candidate: stop before it
                let prev: Option<String> =
                    items.last().map(|(k, _): &(String, Arc<Entry>)| k.clone());
                return Ok(Page {
                    items: items.into_iter().map(|(_, e)| e).collect(),
                    rev,
                    next: prev,
                    remaining: None,
                });
            }
            if let Some(e) = crate::cache::entry(&kv.value, kv.mod_revision) {
                if filter.matches(&e) {
                    items.push((kv.key.clone(), Arc::new(e)));
                }
            }
        }
        match (&last_key, more) {
            (Some(k), true) => from = format!("{k}\0"),
            _ => break,
        }
    }
    Ok(Page {
        items: items.into_iter().map(|(_, e)| e).collect(),
        rev,
        next: None,
        remaining: None,
    })
}

async fn delete_collection(
    api: &Arc<Api>,
    ctx: &Ctx<'_>,
    q: &Query,
    opts: &DeleteOpts,
) -> ApiResult<Response<Body>> {
    let filter = Filter::from_query(ctx.res, q)?;
    api.cache.wait_fresh().await.map_err(cache_err)?;
    let prefix = ctx.res.list_prefix(&api.prefix, ctx.ns.as_deref());
    let page = api.cache.list(&prefix, None, 0, &|_, e| filter.matches(e));
    let mut items = Vec::new();
    for e in page.items {
        let Ok(v) = serde_json::from_slice::<Value>(&e.data) else {
            continue;
        };
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match store::delete(ctx, &name, opts).await {
            Ok(o) => items.push(o),
            Err(err) if err.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    Ok(json_response(
        200,
        &json!({"kind": format!("{}List", ctx.res.kind), "apiVersion": ctx.res.api_version(), "metadata": {}, "items": items}),
    ))
}

type Frames = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

fn event_frame(typ: &str, obj: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(obj.len() + 32);
    b.extend_from_slice(b"{\"type\":\"");
    b.extend_from_slice(typ.as_bytes());
    b.extend_from_slice(b"\",\"object\":");
    b.extend_from_slice(obj);
    b.extend_from_slice(b"}\n");
    Bytes::from(b)
}

/// Encode an object for a watch event in the negotiated form.
fn watch_object(res: &Resource, data: &[u8], out: Output, q: &Query) -> Option<Vec<u8>> {
    let value = || {
        serde_json::from_slice::<Value>(data)
            .ok()
            .map(|v| store::present(res, v))
    };
    match out {
        Output::Table => serde_json::to_vec(&table_of(res, &[value()?], None, q)).ok(),
        Output::Pom => Some(partial_bytes(&value()?)),
        _ if res.group == "events.k8s.io" => serde_json::to_vec(&value()?).ok(),
        _ => Some(data.to_vec()),
    }
}

async fn watch(api: &Arc<Api>, ctx: &Ctx<'_>, q: &Query, out: Output) -> ApiResult<Response<Body>> {
    let res = ctx.res;
    let filter = Filter::from_query(res, q)?;
    let prefix = res.list_prefix(&api.prefix, ctx.ns.as_deref());
    let rv = q.get("resourceVersion").unwrap_or_default().to_string();
    let send_initial = match q.get("sendInitialEvents") {
        Some("true") => {
            if !q.flag("allowWatchBookmarks")
                || q.get("resourceVersionMatch") != Some("NotOlderThan")
            {
                return Err(ApiError::new(422, "Invalid", "sendInitialEvents requires allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan"));
            }
            true
        }
        _ => false,
    };
    let since = if send_initial {
        match rv.as_str() {
            "" => {
                api.cache.wait_fresh().await.map_err(cache_err)?;
            }
            "0" => {}
            r => {
                let r: i64 = r
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {r:?}")))?;
                api.cache.wait_for(r).await.map_err(cache_err)?;
            }
        }
        None
    } else {
        match rv.as_str() {
            "" => {
                api.cache.wait_fresh().await.map_err(cache_err)?;
                None
            }
            "0" => None,
            r => Some(
                r.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {r:?}")))?,
            ),
        }
    };
    let sub = api.cache.subscribe(&prefix, since).map_err(cache_err)?;
    let timeout = match q.int("timeoutSeconds")? {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        _ => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
    };
    let bookmarks = q.flag("allowWatchBookmarks");
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    let api2 = api.clone();
    let q2 = Query(q.0.clone());
    api.metrics.inflight_watches.inc();
    tokio::spawn(async move {
        run_watch(
            &api2,
            res,
            prefix,
            sub,
            filter,
            out,
            q2,
            send_initial,
            bookmarks,
            timeout,
            tx,
        )
        .await;
        api2.metrics.inflight_watches.dec();
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = Response::new(BodyExt::boxed(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::TRANSFER_ENCODING,
        header::HeaderValue::from_static("chunked"),
    );
    Ok(r)
}

/// How many bytes of queued watch events one write carries at most.
const WATCH_BATCH_BYTES: usize = 256 * 1024;

#[allow(clippy::too_many_arguments)]
async fn run_watch(
    api: &Arc<Api>,
    res: &'static Resource,
    prefix: String,
    mut sub: crate::cache::Subscription,
    filter: Filter,
    out: Output,
    q: Query,
    send_initial: bool,
    bookmarks: bool,
    timeout: Duration,
    tx: Frames,
) {
    let send = |b: Bytes| {
        let tx = tx.clone();
        async move { tx.send(Ok(Frame::data(b))).await.is_ok() }
    };
    let bookmark = |rev: i64, initial_end: bool| {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta});
        event_frame("BOOKMARK", &serde_json::to_vec(&obj).unwrap_or_default())
    };
    for (_, e) in &sub.initial {
        if filter.matches(e) {
            if let Some(o) = watch_object(res, &e.data, out, &q) {
                if !send(event_frame("ADDED", &o)).await {
                    return;
                }
            }
        }
    }
    if send_initial && !send(bookmark(sub.rev, true)).await {
        return;
    }
    let mut last = sub.rev;
    let emit = |ev: &crate::cache::CacheEvent| -> Option<Bytes> {
        let now = filter.matches(&ev.obj);
        let before = ev.prev.as_ref().is_some_and(|p| filter.matches(p));
        let typ = match (ev.typ, before, now) {
            (EventType::Deleted, _, true) => EventType::Deleted,
            (EventType::Deleted, _, false) => return None,
            (_, true, true) => EventType::Modified,
            (_, false, true) => EventType::Added,
            (_, true, false) => EventType::Deleted,
            (_, false, false) => return None,
        };
        watch_object(res, &ev.obj.data, out, &q).map(|o| event_frame(typ.as_str(), &o))
    };
    for ev in std::mem::take(&mut sub.backlog) {
        last = last.max(ev.rev);
        if let Some(f) = emit(&ev) {
            if !send(f).await {
                return;
            }
        }
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.tick().await;
    let mut shutdown = api.shutdown.clone();
    loop {
        tokio::select! {
            msg = sub.rx.recv() => match msg {
                Ok(Feed::Event(ev)) => {
                    // what else is already queued goes out in the same write
                    let mut batch = Vec::new();
                    let mut end = false;
                    let mut next = Some(ev);
                    while let Some(ev) = next.take() {
                        if ev.rev > last && ev.key.starts_with(&prefix) {
                            last = ev.rev;
                            if let Some(f) = emit(&ev) {
                                batch.extend_from_slice(&f);
                            }
                        }
                        if batch.len() >= WATCH_BATCH_BYTES {
                            break;
                        }
                        match sub.rx.try_recv() {
                            Ok(Feed::Event(ev)) => next = Some(ev),
                            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {}
                            Ok(Feed::Reset) | Err(_) => end = true,
                        }
                    }
                    if !batch.is_empty() && !send(Bytes::from(batch)).await {
                        return;
                    }
                    if end {
                        return;
                    }
                }
                Ok(Feed::Reset) | Err(_) => return,
            },
            _ = tick.tick(), if bookmarks => {
                // a bookmark is only honest once every event up to it was delivered
                if let Some(rev) = api.cache.bookmark_rev(&sub.rx) {
                    if !send(bookmark(rev.max(last), false)).await {
                        return;
                    }
                }
            }
            _ = &mut deadline => return,
            _ = crate::stopped(&mut shutdown) => return,
            _ = tx.closed() => return,
        }
    }
}
