//! Secure serving for kube-controller-manager and kube-scheduler, as
//! upstream's SecureServingOptions with DelegatingAuthenticationOptions and
//! DelegatingAuthorizationOptions:
//!
//! - HTTPS only (TLS 1.2 or newer), with `--tls-cert-file`/`--tls-private-key-file`,
//!   or a self-signed certificate for localhost/127.0.0.1 made at start
//!   (written to `--cert-dir` as `<component>.crt`/`.key` when given, kept
//!   in memory otherwise). A plain-HTTP request gets upstream's 400.
//! - Authentication: a client certificate signed by `--client-ca-file` (CN
//!   the user, O the groups); a bearer token checked with a TokenReview at the
//!   apiserver (answers cached `--authentication-token-webhook-cache-ttl`);
//!   no credentials: `system:anonymous` in `system:unauthenticated`. A token
//!   the apiserver does not accept is a 401.
//! - Authorization: `system:masters` and the `--authorization-always-allow-paths`
//!   (exact, or a prefix with a trailing `*`) pass; anything else needs a
//!   SubjectAccessReview (nonResourceAttributes path and verb) the apiserver
//!   allows (answers cached 10 s), or it is a 403.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::api::PostParams;
use prometheus::Registry;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::server::Health;

/// Upstream's secure-serving, delegated authentication and authorization flags.
#[derive(clap::Args, Debug, Clone)]
pub struct SecureServingFlags {
    /// File containing the default x509 certificate for HTTPS (CA cert, if
    /// any, concatenated after server cert). Without it and
    /// --tls-private-key-file, a self-signed certificate and key are generated
    /// for localhost and 127.0.0.1 (saved to --cert-dir when given).
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// File containing the default x509 private key matching --tls-cert-file.
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// The directory where the TLS certs are located. If --tls-cert-file and
    /// --tls-private-key-file are provided, this flag will be ignored.
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// Minimum TLS version supported: VersionTLS12 or VersionTLS13 (older
    /// versions are refused here).
    #[arg(long, default_value = "VersionTLS12")]
    pub tls_min_version: String,
    /// Comma-separated list of cipher suites for the server (TLS 1.2; TLS 1.3
    /// suites are not configurable). If omitted, the default suites are used.
    #[arg(long, value_delimiter = ',')]
    pub tls_cipher_suites: Vec<String>,
    /// If set, any request presenting a client certificate signed by one of
    /// the authorities in the client-ca-file is authenticated with an identity
    /// corresponding to the CommonName of the client certificate.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// kubeconfig file pointing at the 'core' kubernetes server with enough
    /// rights to create tokenreviews.authentication.k8s.io. Empty: the
    /// component's --kubeconfig client is used (upstream falls back to the
    /// in-cluster configuration).
    #[arg(long)]
    pub authentication_kubeconfig: Option<PathBuf>,
    /// If false, the authentication-kubeconfig will be used to lookup missing
    /// authentication configuration from the cluster (accepted and ignored:
    /// there is no requestheader lookup here).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub authentication_skip_lookup: bool,
    /// If true, failures to look up missing authentication configuration from
    /// the cluster are not considered fatal (accepted and ignored).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub authentication_tolerate_lookup_failure: bool,
    /// The duration to cache responses from the webhook token authenticator.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    pub authentication_token_webhook_cache_ttl: Duration,
    /// kubeconfig file pointing at the 'core' kubernetes server with enough
    /// rights to create subjectaccessreviews.authorization.k8s.io. Empty: the
    /// component's --kubeconfig client is used (upstream falls back to the
    /// in-cluster configuration).
    #[arg(long)]
    pub authorization_kubeconfig: Option<PathBuf>,
    /// A list of HTTP paths to skip during authorization, i.e. these are
    /// authorized without contacting the 'core' kubernetes server.
    #[arg(long, value_delimiter = ',', default_value = "/healthz,/readyz,/livez")]
    pub authorization_always_allow_paths: Vec<String>,
    /// The duration to cache 'authorized' responses from the webhook authorizer.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    pub authorization_webhook_cache_authorized_ttl: Duration,
    /// The duration to cache 'unauthorized' responses from the webhook authorizer.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    pub authorization_webhook_cache_unauthorized_ttl: Duration,
}

/// Who a request comes from, as upstream's user.Info.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
            extra: BTreeMap::new(),
        }
    }

    /// An authenticated user joins `system:authenticated`, as upstream's group adder.
    fn authenticated(mut self) -> UserInfo {
        if !self.groups.iter().any(|g| g == "system:authenticated") {
            self.groups.push("system:authenticated".into());
        }
        self
    }
}

/// `--authorization-always-allow-paths`: exact paths, or prefixes ending in
/// `*`; a leading `/` is optional, as upstream's path authorizer.
#[derive(Debug, Clone, Default)]
pub struct AlwaysAllowPaths {
    exact: HashSet<String>,
    prefixes: Vec<String>,
}

impl AlwaysAllowPaths {
    pub fn new(paths: &[String]) -> Result<AlwaysAllowPaths, String> {
        let mut out = AlwaysAllowPaths::default();
        // an empty flag value (--authorization-always-allow-paths=) is an empty list
        for p in paths.iter().filter(|p| !p.is_empty()) {
            let p = p.strip_prefix('/').unwrap_or(p);
            if p.is_empty() {
                out.exact.insert(String::new());
                continue;
            }
            let (head, _) = p.split_at(p.len() - p.chars().last().map_or(0, char::len_utf8));
            if head.contains('*') {
                return Err(format!("only trailing * allowed in {p:?}"));
            }
            match p.strip_suffix('*') {
                Some(prefix) => out.prefixes.push(prefix.to_string()),
                None => {
                    out.exact.insert(p.to_string());
                }
            }
        }
        Ok(out)
    }

    pub fn allows(&self, path: &str) -> bool {
        let p = path.strip_prefix('/').unwrap_or(path);
        self.exact.contains(p) || self.prefixes.iter().any(|x| p.starts_with(x.as_str()))
    }
}

/// Go's `%q` of a string.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Upstream's 403 message for a non-resource request:
/// `forbidden: User "system:anonymous" cannot get path "/metrics"`.
pub fn forbidden_message(user: &str, verb: &str, path: &str, reason: &str) -> String {
    let msg = format!(
        "User {} cannot {verb} path {}",
        go_quote(user),
        go_quote(path)
    )
    .replace('&', "&amp;")
    .replace('<', "&lt;")
    .replace('>', "&gt;");
    if reason.is_empty() {
        format!("forbidden: {msg}")
    } else {
        format!("forbidden: {msg}: {reason}")
    }
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The TLS versions `--tls-min-version` allows.
pub fn tls_versions(
    min: &str,
) -> Result<&'static [&'static rustls::SupportedProtocolVersion], String> {
    match min {
        "" | "VersionTLS12" => Ok(rustls::ALL_VERSIONS),
        "VersionTLS13" => Ok(TLS13_ONLY),
        "VersionTLS10" | "VersionTLS11" => Err(format!(
            "--tls-min-version {min}: TLS 1.2 is the oldest version served"
        )),
        _ => Err(format!(
            "--tls-min-version {min:?}: not one of VersionTLS12, VersionTLS13"
        )),
    }
}

/// The crypto provider with `--tls-cipher-suites` (IANA names) applied to TLS 1.2.
fn provider(suites: &[String]) -> Result<rustls::crypto::CryptoProvider, String> {
    let mut p = rustls::crypto::ring::default_provider();
    let wanted: Vec<&str> = suites
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if wanted.is_empty() {
        return Ok(p);
    }
    for w in &wanted {
        if !p
            .cipher_suites
            .iter()
            .any(|s| s.suite().as_str() == Some(*w))
        {
            return Err(format!("Cipher suite {w} not supported or doesn't exist"));
        }
    }
    p.cipher_suites.retain(|s| {
        s.version().version == rustls::ProtocolVersion::TLSv1_3
            || s.suite().as_str().is_some_and(|n| wanted.contains(&n))
    });
    Ok(p)
}

/// A self-signed serving certificate as upstream's
/// GenerateSelfSignedCertKey: a CA `host-ca@<unix>` and a certificate
/// `host@<unix>` it signs, for `host` and the alternate IPs and DNS names, a
/// year long. Returns (certificate then CA in PEM, key in PEM).
pub fn self_signed_cert(
    host: &str,
    alternate_ips: &[IpAddr],
    alternate_dns: &[String],
) -> anyhow::Result<(String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let now = chrono::Utc::now();
    let day = |t: chrono::DateTime<chrono::Utc>| {
        use chrono::Datelike;
        rcgen::date_time_ymd(t.year(), t.month() as u8, t.day() as u8)
    };
    // from the start of yesterday (clock skew), as upstream backdates an hour
    let from = day(now - chrono::Duration::days(1));
    let until = day(now + chrono::Duration::days(365));
    let stamp = now.timestamp();

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, format!("{host}-ca@{stamp}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    ca.not_before = from;
    ca.not_after = until;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::CommonName, format!("{host}@{stamp}"));
    p.key_usages = vec![
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = from;
    p.not_after = until;
    let mut sans = Vec::new();
    match host.parse::<IpAddr>() {
        Ok(ip) => sans.push(SanType::IpAddress(ip)),
        Err(_) => sans.push(SanType::DnsName(host.try_into()?)),
    }
    for ip in alternate_ips {
        sans.push(SanType::IpAddress(*ip));
    }
    for d in alternate_dns {
        sans.push(SanType::DnsName(d.as_str().try_into()?));
    }
    sans.dedup();
    p.subject_alt_names = sans;
    let cert = p.signed_by(&key, &issuer)?;
    Ok((
        format!("{}{}", cert.pem(), ca_cert.pem()),
        key.serialize_pem(),
    ))
}

/// The serving certificate and key (PEM): the files given, the pair in
/// `--cert-dir` (made there when missing, as upstream's
/// MaybeDefaultWithSelfSignedCerts), or one made in memory.
fn serving_pair(
    flags: &SecureServingFlags,
    pair_name: &str,
    bind: IpAddr,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    match (&flags.tls_cert_file, &flags.tls_private_key_file) {
        (Some(c), Some(k)) => return Ok((read(c)?, read(k)?)),
        (None, None) => {}
        _ => anyhow::bail!("--tls-cert-file and --tls-private-key-file go together"),
    }
    // localhost and 127.0.0.1, and the bind address when it names one
    let (mut ips, mut dns) = (vec![IpAddr::from([127, 0, 0, 1])], Vec::new());
    if bind.is_unspecified() {
        dns.push("localhost".to_string());
    } else {
        ips.push(bind);
    }
    let Some(dir) = flags
        .cert_dir
        .as_ref()
        .filter(|d| !d.as_os_str().is_empty())
    else {
        let (c, k) = self_signed_cert("localhost", &ips, &dns)?;
        tracing::info!("generated a self-signed serving certificate in memory");
        return Ok((c.into_bytes(), k.into_bytes()));
    };
    let cert = dir.join(format!("{pair_name}.crt"));
    let key = dir.join(format!("{pair_name}.key"));
    if let (Ok(c), Ok(k)) = (std::fs::read(&cert), std::fs::read(&key)) {
        return Ok((c, k));
    }
    let (c, k) = self_signed_cert("localhost", &ips, &dns)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&cert, &c).with_context(|| format!("writing {}", cert.display()))?;
    write_private(&key, k.as_bytes()).with_context(|| format!("writing {}", key.display()))?;
    tracing::info!(cert = %cert.display(), key = %key.display(), "generated a self-signed serving certificate");
    Ok((c.into_bytes(), k.into_bytes()))
}

/// A file only its owner reads (a private key).
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

/// The rustls configuration: the serving pair, TLS versions and suites, and
/// optional client certificates verified against `--client-ca-file`.
pub fn tls_config(
    flags: &SecureServingFlags,
    pair_name: &str,
    bind: IpAddr,
) -> anyhow::Result<rustls::ServerConfig> {
    let (cert_pem, key_pem) = serving_pair(flags, pair_name, bind)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .context("serving certificate")?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in the serving certificate file");
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .context("serving key")?
        .ok_or_else(|| anyhow::anyhow!("no private key in the serving key file"))?;
    let provider = Arc::new(provider(&flags.tls_cipher_suites).map_err(anyhow::Error::msg)?);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(
            tls_versions(&flags.tls_min_version).map_err(anyhow::Error::msg)?,
        )?;
    let builder = match &flags.client_ca_file {
        Some(ca) => {
            let pem =
                std::fs::read(ca).with_context(|| format!("--client-ca-file {}", ca.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots
                    .add(c.with_context(|| format!("--client-ca-file {}", ca.display()))?)
                    .with_context(|| format!("--client-ca-file {}", ca.display()))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let mut sc = builder.with_single_cert(certs, key)?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(sc)
}

/// The user (CN) and groups (O) of a verified client certificate.
fn user_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(
        UserInfo {
            name,
            uid: String::new(),
            groups,
            extra: BTreeMap::new(),
        }
        .authenticated(),
    )
}

/// Answers kept for a while, bounded in number.
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

const CACHE_MAX: usize = 4096;

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn new() -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, k: &K) -> Option<V> {
        let g = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        g.get(k)
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, k: K, v: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut g = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() >= CACHE_MAX {
            let now = Instant::now();
            g.retain(|_, (until, _)| now < *until);
            if g.len() >= CACHE_MAX {
                g.clear();
            }
        }
        g.insert(k, (Instant::now() + ttl, v));
    }
}

/// How long a TokenReview or SubjectAccessReview may take.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Bearer tokens checked with TokenReviews (upstream's webhook token authenticator).
struct TokenAuthenticator {
    client: kube::Client,
    ttl: Duration,
    cache: TtlCache<String, Option<UserInfo>>,
}

impl TokenAuthenticator {
    /// The token's user; None when the apiserver does not authenticate it.
    async fn authenticate(&self, token: &str) -> Result<Option<UserInfo>, String> {
        if let Some(hit) = self.cache.get(&token.to_string()) {
            return Ok(hit);
        }
        let review: TokenReview = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "metadata": {}, "spec": {"token": token},
        }))
        .map_err(|e| e.to_string())?;
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| "TokenReview timed out".to_string())?
                .map_err(|e| format!("TokenReview: {e}"))?;
        let status = serde_json::to_value(&answer)
            .map_err(|e| e.to_string())?
            .get("status")
            .cloned()
            .unwrap_or(Value::Null);
        let user = if status.get("authenticated").and_then(Value::as_bool) == Some(true) {
            let u = status.get("user").cloned().unwrap_or(Value::Null);
            let s = |k: &str| {
                u.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let groups = u
                .get("groups")
                .and_then(Value::as_array)
                .map(|g| {
                    g.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let extra = u
                .get("extra")
                .and_then(|e| serde_json::from_value(e.clone()).ok())
                .unwrap_or_default();
            Some(
                UserInfo {
                    name: s("username"),
                    uid: s("uid"),
                    groups,
                    extra,
                }
                .authenticated(),
            )
        } else {
            if let Some(e) = status.get("error").and_then(Value::as_str) {
                tracing::debug!(error = e, "token not authenticated");
            }
            None
        };
        self.cache.put(token.to_string(), user.clone(), self.ttl);
        Ok(user)
    }
}

/// The delegating authorizer: privileged groups, always-allowed paths, then
/// SubjectAccessReviews at the apiserver.
struct Authorizer {
    client: kube::Client,
    always_allow: AlwaysAllowPaths,
    allow_ttl: Duration,
    deny_ttl: Duration,
    cache: TtlCache<(UserInfo, String, String), (bool, String)>,
}

impl Authorizer {
    /// (allowed, reason); Err when the apiserver could not be asked.
    async fn authorize(
        &self,
        user: &UserInfo,
        verb: &str,
        path: &str,
    ) -> Result<(bool, String), String> {
        if user.groups.iter().any(|g| g == "system:masters") || self.always_allow.allows(path) {
            return Ok((true, String::new()));
        }
        let key = (user.clone(), verb.to_string(), path.to_string());
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let mut spec = json!({
            "user": user.name, "groups": user.groups,
            "nonResourceAttributes": {"path": path, "verb": verb},
        });
        if !user.uid.is_empty() {
            spec["uid"] = json!(user.uid);
        }
        if !user.extra.is_empty() {
            spec["extra"] = json!(user.extra);
        }
        let review: SubjectAccessReview = serde_json::from_value(json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "metadata": {}, "spec": spec,
        }))
        .map_err(|e| e.to_string())?;
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| "SubjectAccessReview timed out".to_string())?
                .map_err(|e| format!("SubjectAccessReview: {e}"))?;
        let status = answer.status.unwrap_or_default();
        let out = (status.allowed, status.reason.unwrap_or_default());
        let ttl = if out.0 { self.allow_ttl } else { self.deny_ttl };
        self.cache.put(key, out.clone(), ttl);
        Ok(out)
    }
}

/// Everything a connection needs.
struct Delegation {
    tokens: TokenAuthenticator,
    authz: Authorizer,
    health: Arc<Health>,
    registry: Registry,
}

fn status_response(code: u16, reason: &str, message: &str, details: bool) -> Response<Full<Bytes>> {
    let mut v = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason,
    });
    if details {
        v["details"] = json!({});
    }
    v["code"] = json!(code);
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&v).unwrap_or_default(),
    )));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(
        "x-content-type-options",
        http::HeaderValue::from_static("nosniff"),
    );
    r
}

/// Authenticate, authorize, then answer (health, readiness, metrics).
async fn handle<B>(
    d: &Delegation,
    cert_user: Option<UserInfo>,
    req: Request<B>,
) -> Response<Full<Bytes>> {
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let user = match (cert_user, bearer) {
        (Some(u), _) => u,
        (None, Some(token)) => match d.tokens.authenticate(&token).await {
            Ok(Some(u)) => u,
            Ok(None) => return status_response(401, "Unauthorized", "Unauthorized", false),
            Err(e) => {
                tracing::warn!(error = %e, "authenticating a bearer token");
                return status_response(401, "Unauthorized", "Unauthorized", false);
            }
        },
        (None, None) => UserInfo::anonymous(),
    };
    let path = req.uri().path().to_string();
    let verb = req.method().as_str().to_ascii_lowercase();
    match d.authz.authorize(&user, &verb, &path).await {
        Ok((true, _)) => crate::server::route(&d.health, &d.registry, &req),
        Ok((false, reason)) => {
            tracing::debug!(user = %user.name, %path, %reason, "forbidden");
            status_response(
                403,
                "Forbidden",
                &forbidden_message(&user.name, &verb, &path, &reason),
                true,
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, %path, "authorizing a request");
            let uri = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or(&path);
            let body = format!("Internal Server Error: {}: {e}", go_quote(uri))
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            let mut r = Response::new(Full::new(Bytes::from(body + "\n")));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
    }
}

/// Whether the first bytes of a connection are an HTTP request, as Go's TLS server checks.
pub fn looks_like_http(first: &[u8]) -> bool {
    matches!(
        first.get(..5),
        Some(b"GET /" | b"HEAD " | b"POST " | b"PUT /" | b"OPTIO")
    )
}

/// Upstream's answer to plain HTTP on a TLS port.
const PLAIN_HTTP_ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

async fn serve_conn(
    d: Arc<Delegation>,
    acceptor: TlsAcceptor,
    mut tcp: TcpStream,
    peer: SocketAddr,
) {
    // a TLS connection opens with a handshake record (0x16); plain HTTP gets a 400
    let mut first = [0u8; 5];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
            Ok(Ok(n)) => n,
            _ => return,
        };
        if n == 0 {
            return;
        }
        if first[0] == 0x16 {
            break;
        }
        if n >= 5 {
            if looks_like_http(&first) {
                let _ = tcp.write_all(PLAIN_HTTP_ANSWER).await;
                let _ = tcp.shutdown().await;
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let cert_user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| user_from_cert(c.as_ref()));
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let (d, cert_user) = (d.clone(), cert_user.clone());
        async move { Ok::<_, Infallible>(handle(&d, cert_user, req).await) }
    });
    if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), svc)
        .await
    {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// Serve `/healthz`, `/livez`, `/readyz` and `/metrics` over HTTPS on
/// `addr` with delegated authentication and authorization, until `shutdown`.
/// `pair_name` names the self-signed pair in `--cert-dir` (the component);
/// `client` is used for the reviews unless `--authentication-kubeconfig` or
/// `--authorization-kubeconfig` name another. Port 0 serves nothing, as
/// upstream's `--secure-port=0`; otherwise the bound address.
pub async fn serve(
    flags: &SecureServingFlags,
    pair_name: &str,
    addr: SocketAddr,
    client: kube::Client,
    health: Arc<Health>,
    registry: Registry,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<SocketAddr>> {
    if addr.port() == 0 {
        tracing::info!("--secure-port is 0: not serving HTTPS");
        return Ok(None);
    }
    let tls = tls_config(flags, pair_name, addr.ip())?;
    let always_allow = AlwaysAllowPaths::new(&flags.authorization_always_allow_paths)
        .map_err(|e| anyhow::anyhow!("--authorization-always-allow-paths: {e}"))?;
    let review_client = |kc: &Option<PathBuf>, what: &'static str| {
        let (kc, client) = (kc.clone(), client.clone());
        let ua = format!("{pair_name}/{what}");
        async move {
            match kc {
                Some(p) => crate::client(Some(p.as_path()), &ua)
                    .await
                    .with_context(|| format!("--{what}-kubeconfig {}", p.display())),
                None => Ok(client),
            }
        }
    };
    let authn_client = review_client(&flags.authentication_kubeconfig, "authentication").await?;
    let authz_client = review_client(&flags.authorization_kubeconfig, "authorization").await?;
    let d = Arc::new(Delegation {
        tokens: TokenAuthenticator {
            client: authn_client,
            ttl: flags.authentication_token_webhook_cache_ttl,
            cache: TtlCache::new(),
        },
        authz: Authorizer {
            client: authz_client,
            always_allow,
            allow_ttl: flags.authorization_webhook_cache_authorized_ttl,
            deny_ttl: flags.authorization_webhook_cache_unauthorized_ttl,
            cache: TtlCache::new(),
        },
        health,
        registry,
    });
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    tracing::info!(addr = %bound, "serving securely");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((tcp, peer)) = accepted else { continue };
                    tokio::spawn(serve_conn(d.clone(), acceptor.clone(), tcp, peer));
                }
                _ = crate::stopped(&mut shutdown) => return,
            }
        }
    });
    Ok(Some(bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(p: &[&str]) -> AlwaysAllowPaths {
        AlwaysAllowPaths::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid paths")
    }

    #[test]
    fn always_allow_default_paths() {
        let a = paths(&["/healthz", "/readyz", "/livez"]);
        assert!(a.allows("/healthz"));
        assert!(a.allows("/readyz"));
        assert!(a.allows("/livez"));
        assert!(!a.allows("/metrics"));
        // exact: sub-paths are not included without a '*'
        assert!(!a.allows("/healthz/ping"));
        assert!(!a.allows("/"));
    }

    #[test]
    fn always_allow_trailing_star_is_a_prefix() {
        let a = paths(&["/healthz*", "metrics/slis", "/debug/*"]);
        assert!(a.allows("/healthz"));
        assert!(a.allows("/healthz/ping"));
        assert!(a.allows("/healthzzz"));
        // a leading '/' is optional on both sides
        assert!(a.allows("/metrics/slis"));
        assert!(a.allows("metrics/slis"));
        assert!(!a.allows("/metrics"));
        assert!(a.allows("/debug/pprof"));
        assert!(!a.allows("/debug"));
        let all = paths(&["*"]);
        assert!(all.allows("/anything"));
        assert!(all.allows("/"));
    }

    #[test]
    fn always_allow_root_and_empty() {
        let root = paths(&["/"]);
        assert!(root.allows("/"));
        assert!(!root.allows("/metrics"));
        // --authorization-always-allow-paths= : nothing is always allowed
        let none = paths(&[""]);
        assert!(!none.allows("/"));
        assert!(!none.allows("/healthz"));
    }

    #[test]
    fn always_allow_refuses_inner_star() {
        let err = AlwaysAllowPaths::new(&["/a*/b".to_string()]).expect_err("inner star");
        assert_eq!(err, "only trailing * allowed in \"a*/b\"");
        assert!(AlwaysAllowPaths::new(&["/a**".to_string()]).is_err());
    }

    #[test]
    fn forbidden_message_as_upstream() {
        assert_eq!(
            forbidden_message("system:anonymous", "get", "/metrics", ""),
            "forbidden: User \"system:anonymous\" cannot get path \"/metrics\""
        );
        assert_eq!(
            forbidden_message("bob", "post", "/a<b>", "no RBAC policy matched"),
            "forbidden: User \"bob\" cannot post path \"/a&lt;b&gt;\": no RBAC policy matched"
        );
    }

    #[test]
    fn tls_min_versions() {
        assert_eq!(tls_versions("VersionTLS12").map(|v| v.len()), Ok(2));
        assert_eq!(tls_versions("VersionTLS13").map(|v| v.len()), Ok(1));
        assert!(tls_versions("VersionTLS10").is_err());
        assert!(tls_versions("VersionTLS11").is_err());
        assert!(tls_versions("TLS12").is_err());
    }

    #[test]
    fn cipher_suites_by_iana_name() {
        let p = provider(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()]).expect("known suite");
        let tls12: Vec<_> = p
            .cipher_suites
            .iter()
            .filter(|s| s.version().version == rustls::ProtocolVersion::TLSv1_2)
            .collect();
        assert_eq!(tls12.len(), 1);
        assert!(p.cipher_suites.len() > 1, "TLS 1.3 suites stay");
        let err = provider(&["TLS_RSA_WITH_RC4_128_SHA".into()]).expect_err("unknown");
        assert!(err.contains("not supported"), "{err}");
    }

    #[test]
    fn plain_http_is_recognized() {
        assert!(looks_like_http(b"GET /healthz HTTP/1.1\r\n"));
        assert!(looks_like_http(b"HEAD / HTTP/1.1"));
        assert!(looks_like_http(b"OPTIONS * HTTP/1.1"));
        assert!(!looks_like_http(&[0x16, 3, 1, 0, 0xc8]));
        assert!(!looks_like_http(b"GET"));
    }

    fn flags(dir: Option<PathBuf>) -> SecureServingFlags {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct F {
            #[command(flatten)]
            s: SecureServingFlags,
        }
        let mut f = F::parse_from(["test"]).s;
        f.cert_dir = dir;
        f
    }

    #[test]
    fn flag_defaults_are_upstreams() {
        let f = flags(None);
        assert_eq!(f.tls_min_version, "VersionTLS12");
        assert_eq!(
            f.authorization_always_allow_paths,
            vec!["/healthz", "/readyz", "/livez"]
        );
        assert_eq!(
            f.authentication_token_webhook_cache_ttl,
            Duration::from_secs(10)
        );
        assert_eq!(
            f.authorization_webhook_cache_authorized_ttl,
            Duration::from_secs(10)
        );
        assert_eq!(
            f.authorization_webhook_cache_unauthorized_ttl,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn self_signed_pair_is_written_once_to_cert_dir() {
        let dir = std::env::temp_dir().join(format!("ironkube-secure-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let f = flags(Some(dir.clone()));
        let (c1, k1) =
            serving_pair(&f, "kube-scheduler", IpAddr::from([0, 0, 0, 0])).expect("pair");
        let crt = std::fs::read(dir.join("kube-scheduler.crt")).expect("crt written");
        assert_eq!(crt, c1);
        assert_eq!(
            std::fs::read(dir.join("kube-scheduler.key")).expect("key"),
            k1
        );
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("kube-scheduler.key"))
                .expect("key meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // the certificate, then its CA; for localhost and 127.0.0.1
        let certs: Vec<_> = rustls_pemfile::certs(&mut c1.as_slice())
            .collect::<Result<_, _>>()
            .expect("pem");
        assert_eq!(certs.len(), 2);
        let (_, leaf) = x509_parser::parse_x509_certificate(certs[0].as_ref()).expect("leaf");
        let (_, ca) = x509_parser::parse_x509_certificate(certs[1].as_ref()).expect("ca");
        assert!(ca.is_ca());
        assert!(!leaf.is_ca());
        assert_eq!(leaf.issuer().to_string(), ca.subject().to_string());
        let cn = leaf
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok());
        assert!(cn.is_some_and(|c| c.starts_with("localhost@")), "{cn:?}");
        let san = leaf
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|e| e.value.general_names.clone())
            .unwrap_or_default();
        use x509_parser::extensions::GeneralName;
        assert!(san.contains(&GeneralName::DNSName("localhost")), "{san:?}");
        assert!(
            san.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])),
            "{san:?}"
        );
        // a second start reuses the pair
        let (c2, _) =
            serving_pair(&f, "kube-scheduler", IpAddr::from([0, 0, 0, 0])).expect("again");
        assert_eq!(c1, c2);
        assert!(tls_config(&f, "kube-scheduler", IpAddr::from([127, 0, 0, 1])).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cert_and_key_files_go_together() {
        let mut f = flags(None);
        f.tls_cert_file = Some("/nonexistent.crt".into());
        let err = serving_pair(&f, "x", IpAddr::from([127, 0, 0, 1])).expect_err("alone");
        assert!(err.to_string().contains("go together"));
    }

    #[test]
    fn ttl_cache_expires() {
        let c: TtlCache<String, bool> = TtlCache::new();
        c.put("a".into(), true, Duration::from_millis(30));
        c.put("b".into(), true, Duration::ZERO);
        assert_eq!(c.get(&"a".to_string()), Some(true));
        assert_eq!(c.get(&"b".to_string()), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(&"a".to_string()), None);
    }
}
