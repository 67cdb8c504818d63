//! A small Docker Registry v2 / OCI distribution client: manifests and blobs, with
//! bearer-token and basic authentication, redirects and digest verification.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{header, Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::auth::{parse_challenge, Auth, Challenge};
use super::manifest::MANIFEST_ACCEPT;
use super::ImageError;

pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Until the response headers arrive.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Between two chunks of a response body.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_REDIRECTS: usize = 8;
/// Manifests, indexes, configs and token responses are small documents.
pub(crate) const MAX_DOCUMENT: usize = 16 << 20;
const USER_AGENT: &str = concat!("ironkube-kubelet/", env!("CARGO_PKG_VERSION"));

/// An http+https client trusting the system's root certificates.
pub(crate) fn build_client() -> Result<HttpClient, ImageError> {
    use hyper_rustls::ConfigBuilderExt as _;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ImageError::Invalid(format!("tls setup: {e}")))?;
    let tls = match builder.clone().with_native_roots() {
        Ok(b) => b.with_no_client_auth(),
        Err(e) => {
            tracing::warn!(error = %e, "no usable system root certificates; https registries will fail");
            builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .build(connector))
}

/// One pull's conversation with one repository, remembering the authorization it obtained.
pub(crate) struct Session<'a> {
    client: &'a HttpClient,
    /// The reference being pulled, for error messages.
    image: String,
    /// `http://host:port` or `https://host`.
    base: String,
    /// The registry's authority; credentials are only sent there (and to token realms).
    authority: String,
    repo: String,
    auth: Option<&'a Auth>,
    authorization: Option<String>,
}

impl<'a> Session<'a> {
    pub(crate) fn new(
        client: &'a HttpClient,
        image: String,
        host: &str,
        repo: &str,
        plain_http: bool,
        auth: Option<&'a Auth>,
    ) -> Session<'a> {
        let scheme = if plain_http { "http" } else { "https" };
        Session {
            client,
            image,
            base: format!("{scheme}://{host}"),
            authority: host.to_ascii_lowercase(),
            repo: repo.to_string(),
            auth,
            authorization: None,
        }
    }

    /// Fetches a manifest or index by tag or digest: its bytes and `Content-Type`.
    pub(crate) async fn manifest(
        &mut self,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>), ImageError> {
        let path = format!("/v2/{}/manifests/{}", self.repo, reference);
        let resp = self.get(&path, Some(MANIFEST_ACCEPT)).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(ImageError::NotFound {
                image: self.image.clone(),
            });
        }
        if !status.is_success() {
            return Err(self.registry_error(resp).await);
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = self.read_body(resp, MAX_DOCUMENT).await?;
        Ok((body, content_type))
    }

    /// Downloads blob `digest` into the new file `tmp`, checking its size (when `size` is
    /// not 0) and sha256. Returns the number of bytes written.
    pub(crate) async fn blob_to_file(
        &mut self,
        digest: &str,
        size: u64,
        tmp: &Path,
    ) -> Result<u64, ImageError> {
        let path = format!("/v2/{}/blobs/{}", self.repo, digest);
        let resp = self.get(&path, None).await?;
        if !resp.status().is_success() {
            return Err(self.registry_error(resp).await);
        }
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .await
            .map_err(|e| ImageError::io(tmp, e))?;
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        let mut body = resp.into_body();
        loop {
            let frame = match tokio::time::timeout(READ_TIMEOUT, body.frame()).await {
                Err(_) => return Err(self.network(format!("reading blob {digest}: timed out"))),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(self.network(format!("reading blob {digest}: {}", chain(&e))))
                }
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            written += data.len() as u64;
            if size > 0 && written > size {
                return Err(ImageError::Invalid(format!(
                    "blob {digest} is larger than the {size} bytes its descriptor says"
                )));
            }
            hasher.update(&data);
            file.write_all(&data)
                .await
                .map_err(|e| ImageError::io(tmp, e))?;
        }
        file.flush().await.map_err(|e| ImageError::io(tmp, e))?;
        file.sync_all().await.map_err(|e| ImageError::io(tmp, e))?;
        if size > 0 && written != size {
            return Err(ImageError::Invalid(format!(
                "blob {digest} has {written} bytes, its descriptor says {size}"
            )));
        }
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if got != digest {
            return Err(ImageError::Invalid(format!(
                "blob {digest} downloaded with digest {got}"
            )));
        }
        Ok(written)
    }

    /// GET with authentication: anonymous (or with what an earlier request obtained) first,
    /// then once more after answering a 401's challenge. 401/403 in the end is
    /// `Unauthorized`; other statuses are the caller's business.
    async fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response<Incoming>, ImageError> {
        let url = format!("{}{}", self.base, path);
        let mut answered_challenge = false;
        loop {
            let authority = self.authority.clone();
            let authorization = self.authorization.clone();
            let resp = self
                .send(&url, accept, authorization.as_deref(), &authority)
                .await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !answered_challenge {
                answered_challenge = true;
                let challenges: Vec<Challenge> = resp
                    .headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .filter_map(parse_challenge)
                    .collect();
                self.authenticate(&challenges).await?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(ImageError::Unauthorized {
                    image: self.image.clone(),
                });
            }
            return Ok(resp);
        }
    }

    async fn authenticate(&mut self, challenges: &[Challenge]) -> Result<(), ImageError> {
        if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
            let Some(realm) = c.params.get("realm") else {
                return Err(ImageError::Invalid(format!(
                    "registry {} sent a bearer challenge without realm",
                    self.authority
                )));
            };
            let scope = c
                .params
                .get("scope")
                .cloned()
                .unwrap_or_else(|| format!("repository:{}:pull", self.repo));
            let token = self
                .fetch_token(realm, c.params.get("service").map(String::as_str), &scope)
                .await?;
            self.authorization = Some(format!("Bearer {token}"));
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            if let Some(auth) = self.auth {
                self.authorization = Some(auth.basic_header());
                return Ok(());
            }
        }
        Err(ImageError::Unauthorized {
            image: self.image.clone(),
        })
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, ImageError> {
        let mut url = realm.to_string();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("scope=");
        url.push_str(&percent_encode(scope));
        if let Some(s) = service {
            url.push_str("&service=");
            url.push_str(&percent_encode(s));
        }
        let uri: Uri = url
            .parse()
            .map_err(|e| ImageError::Invalid(format!("bad token realm {realm:?}: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(ImageError::Invalid(format!("bad token realm {realm:?}")));
        }
        let realm_authority = uri
            .authority()
            .map(|a| a.as_str().to_ascii_lowercase())
            .unwrap_or_default();
        let basic = self.auth.map(Auth::basic_header);
        let resp = self
            .send(
                &url,
                Some("application/json"),
                basic.as_deref(),
                &realm_authority,
            )
            .await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(ImageError::Unauthorized {
                image: self.image.clone(),
            });
        }
        if !status.is_success() {
            return Err(self.registry_error(resp).await);
        }
        let body = self.read_body(resp, MAX_DOCUMENT).await?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| ImageError::Invalid(format!("bad token response from {realm}: {e}")))?;
        t.token
            .filter(|t| !t.is_empty())
            .or(t.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| ImageError::Invalid(format!("token response from {realm} has no token")))
    }

    /// One GET following redirects. `authorization` is sent only to `auth_authority`, so a
    /// redirect to a storage backend does not receive the registry's credentials.
    async fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
        auth_authority: &str,
    ) -> Result<Response<Incoming>, ImageError> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let uri: Uri = url
                .parse()
                .map_err(|e| ImageError::Invalid(format!("bad url {url:?}: {e}")))?;
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_ascii_lowercase())
                .unwrap_or_default();
            let mut req = Request::get(uri.clone()).header(header::USER_AGENT, USER_AGENT);
            if let Some(a) = accept {
                req = req.header(header::ACCEPT, a);
            }
            if let Some(z) = authorization {
                if authority == auth_authority {
                    req = req.header(header::AUTHORIZATION, z);
                }
            }
            let req = req
                .body(Empty::new())
                .map_err(|e| ImageError::Invalid(format!("bad request for {url:?}: {e}")))?;
            let resp = match tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req)).await {
                Err(_) => return Err(self.network(format!("GET {url}: timed out"))),
                Ok(Err(e)) => return Err(self.network(format!("GET {url}: {}", chain(&e)))),
                Ok(Ok(r)) => r,
            };
            if resp.status().is_redirection() {
                if let Some(loc) = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                {
                    url = resolve_location(&uri, loc)?;
                    continue;
                }
            }
            return Ok(resp);
        }
        Err(self.network(format!("GET {url}: too many redirects")))
    }

    async fn read_body(
        &self,
        resp: Response<Incoming>,
        limit: usize,
    ) -> Result<Vec<u8>, ImageError> {
        let mut body = resp.into_body();
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout(READ_TIMEOUT, body.frame()).await {
                Err(_) => return Err(self.network("reading response: timed out".into())),
                Ok(None) => return Ok(out),
                Ok(Some(Err(e))) => {
                    return Err(self.network(format!("reading response: {}", chain(&e))))
                }
                Ok(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data() {
                        if out.len() + data.len() > limit {
                            return Err(ImageError::Invalid(format!(
                                "registry response for {} is larger than {limit} bytes",
                                self.image
                            )));
                        }
                        out.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// A `Registry` error carrying the status and the start of the body.
    async fn registry_error(&self, resp: Response<Incoming>) -> ImageError {
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut text = Vec::new();
        while text.len() < 4096 {
            match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        text.extend_from_slice(&d);
                    }
                }
                _ => break,
            }
        }
        text.truncate(4096);
        ImageError::Registry {
            image: self.image.clone(),
            status,
            body: String::from_utf8_lossy(&text).trim().to_string(),
        }
    }

    fn network(&self, error: String) -> ImageError {
        ImageError::Network {
            image: self.image.clone(),
            error,
        }
    }
}

/// An error and its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let msg = inner.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = inner.source();
    }
    s
}

fn resolve_location(base: &Uri, loc: &str) -> Result<String, ImageError> {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return Ok(loc.to_string());
    }
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or("");
    if let Some(rest) = loc.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest}"));
    }
    if loc.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{loc}"));
    }
    let path = base.path();
    let dir = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    Ok(format!("{scheme}://{authority}{dir}{loc}"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve() {
        let base: Uri = "http://127.0.0.1:5000/v2/x/blobs/sha256:ab"
            .parse()
            .unwrap();
        assert_eq!(
            resolve_location(&base, "https://s3.example/b?sig=1").unwrap(),
            "https://s3.example/b?sig=1"
        );
        assert_eq!(
            resolve_location(&base, "/other").unwrap(),
            "http://127.0.0.1:5000/other"
        );
        assert_eq!(
            resolve_location(&base, "//cdn.example/p").unwrap(),
            "http://cdn.example/p"
        );
        assert_eq!(
            resolve_location(&base, "rel").unwrap(),
            "http://127.0.0.1:5000/v2/x/blobs/rel"
        );
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(
            percent_encode("repository:library/busybox:pull"),
            "repository%3Alibrary%2Fbusybox%3Apull"
        );
    }
}
