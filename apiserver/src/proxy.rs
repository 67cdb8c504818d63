//! Pod subresources served by the pod's kubelet: `log`, `exec`, `attach`,
//! `portforward`. The apiserver finds the node, connects to its kubelet over
//! TLS with `--kubelet-client-certificate`, and relays: a log as a streamed
//! body, the others as an upgraded connection (WebSocket or SPDY) spliced
//! both ways, so the kubelet speaks the streaming protocol with the client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::{ApiError, ApiResult};
use crate::http::Body;
use crate::Api;

/// How the apiserver reaches kubelets.
#[derive(Clone)]
pub struct KubeletClient {
    connector: TlsConnector,
    /// `--kubelet-preferred-address-types`
    preferred: Vec<String>,
}

impl std::fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletClient")
            .field("preferred", &self.preferred)
            .finish()
    }
}

/// Without `--kubelet-certificate-authority` the kubelet's serving
/// certificate is not verified, as upstream.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl KubeletClient {
    pub fn new(
        cert_pem: Option<&[u8]>,
        key_pem: Option<&[u8]>,
        ca_pem: Option<&[u8]>,
        preferred: Vec<String>,
    ) -> Result<KubeletClient, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match ca_pem {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_pemfile::certs(&mut &ca[..]) {
                    let c = c.map_err(|e| format!("--kubelet-certificate-authority: {e}"))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("--kubelet-certificate-authority: {e}"))?;
                }
                builder.with_root_certificates(roots)
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServer(provider))),
        };
        let mut cfg = match (cert_pem, key_pem) {
            (Some(c), Some(k)) => {
                let certs = rustls_pemfile::certs(&mut &c[..])
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("--kubelet-client-certificate: {e}"))?;
                let key = rustls_pemfile::private_key(&mut &k[..])
                    .map_err(|e| format!("--kubelet-client-key: {e}"))?
                    .ok_or("--kubelet-client-key holds no private key")?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| format!("--kubelet-client-certificate: {e}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(
                    "--kubelet-client-certificate and --kubelet-client-key go together".into(),
                )
            }
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            connector: TlsConnector::from(Arc::new(cfg)),
            preferred,
        })
    }

    /// The node's kubelet: (address, port), by the preferred address types.
    fn endpoint(&self, node: &Value) -> Option<(String, u16)> {
        let addrs = node.pointer("/status/addresses")?.as_array()?;
        let addr = self.preferred.iter().find_map(|t| {
            addrs
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
                .and_then(|a| a.get("address").and_then(Value::as_str))
        })?;
        let port = node
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .unwrap_or(10250);
        Some((addr.to_string(), port))
    }

    async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> ApiResult<tokio_rustls::client::TlsStream<TcpStream>> {
        let url = format!("https://{}/", join_host_port(host, port));
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect(join_host_port(host, port)),
        )
        .await
        .map_err(|_| ApiError::internal(format!("dial {url}: i/o timeout")))?
        .map_err(|e| ApiError::internal(format!("dial {url}: {e}")))?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| ApiError::internal(format!("{host}: {e}")))?;
        tokio::time::timeout(Duration::from_secs(10), self.connector.connect(name, tcp))
            .await
            .map_err(|_| ApiError::internal(format!("TLS handshake with {url}: timeout")))?
            .map_err(|e| ApiError::internal(format!("TLS handshake with {url}: {e}")))
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The container a request names, defaulted when the pod has one.
fn container_of(pod: &Value, name: &str, asked: Option<&str>) -> ApiResult<String> {
    let names = |k: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{k}"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (app, init, eph) = (
        names("containers"),
        names("initContainers"),
        names("ephemeralContainers"),
    );
    match asked.filter(|c| !c.is_empty()) {
        Some(c) => {
            if app.iter().chain(&init).chain(&eph).any(|n| n == c) {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None if app.len() == 1 => Ok(app[0].clone()),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                app.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

/// The query without `container` (it is in the kubelet's path).
fn forward_query(query: Option<&str>) -> String {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k != "container")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Where a pod's subresource is on its kubelet: (node, kubelet path).
fn kubelet_path(pod: &Value, ns: &str, name: &str, sub: &str, parts: &Parts) -> ApiResult<String> {
    let q = form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.into_owned());
    let query = forward_query(parts.uri.query());
    let path = match sub {
        "portforward" => format!("/portForward/{ns}/{name}"),
        _ => {
            let c = container_of(pod, name, q.as_deref())?;
            let base = match sub {
                "log" => "containerLogs",
                "exec" => "exec",
                _ => "attach",
            };
            format!("/{base}/{ns}/{name}/{c}")
        }
    };
    Ok(if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    })
}

/// Serve `pods/{name}/{sub}` through the pod's kubelet.
pub async fn serve(
    api: &Arc<Api>,
    pod: Value,
    ns: &str,
    name: &str,
    sub: &str,
    mut parts: Parts,
) -> ApiResult<Response<Body>> {
    if sub != "log"
        && pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .is_some_and(|p| p == "Succeeded" || p == "Failed")
    {
        return Err(ApiError::bad_request(format!(
            "cannot {} into a container in a completed pod; current phase is {}",
            if sub == "portforward" {
                "port-forward"
            } else {
                sub
            },
            pod.pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or_default()
        )));
    }
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let path = kubelet_path(&pod, ns, name, sub, &parts)?;
    let nodes = crate::registry::lookup("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not registered"))?;
    let key = nodes.key(&api.prefix, None, node_name);
    let node: Value = match api.cache.get(&key) {
        Some(e) => {
            serde_json::from_slice(&e.data).map_err(|e| ApiError::internal(e.to_string()))?
        }
        None => return Err(ApiError::not_found(nodes, node_name)),
    };
    let (host, port) = api.kubelets.endpoint(&node).ok_or_else(|| {
        ApiError::internal(format!(
            "no address of the preferred types {:?} on node {node_name}",
            api.kubelets.preferred
        ))
    })?;
    let tls = api.kubelets.connect(&host, port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| ApiError::internal(format!("talking to the kubelet on {node_name}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended");
        }
    });
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(&path)
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    // the upgrade negotiation is the client's with the kubelet
    for (k, v) in &parts.headers {
        if k == header::AUTHORIZATION || k == header::HOST || k == header::CONTENT_LENGTH {
            continue;
        }
        req.headers_mut().append(k.clone(), v.clone());
    }
    if let Ok(h) = HeaderValue::from_str(&join_host_port(&host, port)) {
        req.headers_mut().insert(header::HOST, h);
    }
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ApiError::internal(format!("talking to the kubelet on {node_name}: {e}")))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let client_up = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or_else(|| {
                ApiError::bad_request("the connection cannot be upgraded (HTTP/2?): use HTTP/1.1")
            })?;
        let (rparts, _) = resp.into_parts();
        let kubelet_resp = Response::from_parts(rparts.clone(), Empty::<Bytes>::new());
        tokio::spawn(async move {
            let (c, k) = tokio::join!(client_up, hyper::upgrade::on(kubelet_resp));
            match (c, k) {
                (Ok(c), Ok(k)) => {
                    let (mut c, mut k) = (TokioIo::new(c), TokioIo::new(k));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut k).await;
                }
                (c, k) => tracing::debug!(client = ?c.err(), kubelet = ?k.err(), "upgrade failed"),
            }
        });
        let mut out = Response::new(crate::http::full(Bytes::new()));
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *out.headers_mut() = rparts.headers;
        return Ok(out);
    }
    // a log (or an error from the kubelet): its body streamed on
    let (rparts, body) = resp.into_parts();
    let body: Body = body.map_err(std::io::Error::other).boxed();
    Ok(Response::from_parts(rparts, body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_named_or_defaulted() {
        let one = json!({"spec": {"containers": [{"name": "app"}]}});
        assert_eq!(container_of(&one, "p", None).unwrap(), "app");
        assert_eq!(container_of(&one, "p", Some("app")).unwrap(), "app");
        let e = container_of(&one, "p", Some("nope")).unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(e.message, "container nope is not valid for pod p");
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        let e = container_of(&two, "p", None).unwrap_err();
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(container_of(&two, "p", Some("i")).unwrap(), "i");
    }

    #[test]
    fn the_query_goes_on_without_the_container() {
        assert_eq!(
            forward_query(Some("container=a&command=sh&command=-c&stdout=true")),
            "command=sh&command=-c&stdout=true"
        );
        assert_eq!(forward_query(None), "");
    }

    #[test]
    fn the_kubelet_is_found_by_address_type() {
        let c = KubeletClient::new(
            None,
            None,
            None,
            vec!["InternalIP".into(), "Hostname".into()],
        )
        .unwrap();
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.2"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": 10555}}}});
        assert_eq!(c.endpoint(&node), Some(("10.0.0.2".into(), 10555)));
        let bare = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}});
        assert_eq!(c.endpoint(&bare), Some(("n1".into(), 10250)));
        assert_eq!(c.endpoint(&json!({})), None);
    }
}
