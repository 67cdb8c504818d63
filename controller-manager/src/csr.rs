//! What the certificate controllers share: a CertificateSigningRequest's
//! PKCS#10 request parsed (and its signature checked), upstream's checks of
//! each built-in signer, the CSR's conditions, and a CA that issues
//! certificates from a request the way upstream's local signer does.
//!
//! The certificate is encoded here (DER through yasna) rather than through
//! rcgen's certificate builder, so the request's subject and public key are
//! carried over byte for byte: rcgen keeps one value per attribute type, and a
//! client certificate's groups are several O attributes. rcgen loads the CA
//! key and makes the signature.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use rcgen::{KeyPair, SigningKey};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use yasna::models::ObjectIdentifier;
use yasna::Tag;

pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
pub const LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";

/// How far back a certificate's NotBefore is set (clock skew), as upstream.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Certificates shorter than this are not backdated at their end.
pub const SHORT: Duration = Duration::from_secs(8 * 3600);

/// The parts of a PKCS#10 request the controllers look at, and the raw
/// subject and public key a certificate copies.
#[derive(Debug, Clone)]
pub struct Request {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub emails: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub uris: Vec<String>,
    subject_der: Vec<u8>,
    spki_der: Vec<u8>,
}

const OID_CN: &[u64] = &[2, 5, 4, 3];
const OID_O: &[u64] = &[2, 5, 4, 10];

fn oid_arcs(oid: &x509_parser::der_parser::oid::Oid<'_>) -> Vec<u64> {
    oid.iter().map(|i| i.collect()).unwrap_or_default()
}

/// Parse a CSR's `spec.request` (PEM) and check its signature.
pub fn parse(pem: &[u8]) -> Result<Request, String> {
    let wrong = || "PEM block type must be CERTIFICATE REQUEST".to_string();
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| wrong())?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err(wrong());
    }
    let (_, csr) = X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| format!("unable to parse certificate request: {e}"))?;
    csr.verify_signature()
        .map_err(|e| format!("unable to verify certificate request signature: {e}"))?;
    let info = &csr.certification_request_info;
    let mut req = Request {
        common_name: String::new(),
        organizations: Vec::new(),
        dns_names: Vec::new(),
        emails: Vec::new(),
        ips: Vec::new(),
        uris: Vec::new(),
        subject_der: info.subject.as_raw().to_vec(),
        spki_der: info.subject_pki.raw.to_vec(),
    };
    for attr in info.subject.iter_attributes() {
        let oid = oid_arcs(attr.attr_type());
        let Ok(value) = attr.as_str() else { continue };
        if oid == OID_CN {
            // the last one wins, as Go's pkix.Name does
            req.common_name = value.to_string();
        } else if oid == OID_O {
            req.organizations.push(value.to_string());
        }
    }
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(s) => req.dns_names.push(s.to_string()),
                    GeneralName::RFC822Name(s) => req.emails.push(s.to_string()),
                    GeneralName::URI(s) => req.uris.push(s.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => req
                            .ips
                            .push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                        16 => req
                            .ips
                            .push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                        _ => return Err("invalid IP address in subjectAltName".into()),
                    },
                    _ => {}
                }
            }
        }
    }
    Ok(req)
}

fn usage_set(usages: &[String]) -> BTreeSet<&str> {
    usages.iter().map(String::as_str).collect()
}

fn usages_match(usages: &[String], alternatives: &[&[&str]]) -> bool {
    let got = usage_set(usages);
    alternatives
        .iter()
        .any(|want| got == want.iter().copied().collect::<BTreeSet<_>>())
}

/// Upstream's check of a kubelet client certificate request (the
/// kube-apiserver-client-kubelet signer's, and the approver's recognizer).
pub fn validate_kubelet_client(req: &Request, usages: &[String]) -> Result<(), String> {
    if req.organizations != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if !req.dns_names.is_empty() {
        return Err("DNS subjectAltNames are not allowed".into());
    }
    if !req.emails.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !req.ips.is_empty() {
        return Err("IP subjectAltNames are not allowed".into());
    }
    if !req.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    if !req.common_name.starts_with("system:node:") {
        return Err("subject common name does not begin with system:node:".into());
    }
    if !usages_match(
        usages,
        &[
            &["digital signature", "key encipherment", "client auth"],
            &["digital signature", "client auth"],
        ],
    ) {
        return Err("usages did not match [client auth digital signature key encipherment]".into());
    }
    Ok(())
}

/// Upstream's check of a kubelet serving certificate request.
pub fn validate_kubelet_serving(req: &Request, usages: &[String]) -> Result<(), String> {
    if req.organizations != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if req.dns_names.is_empty() && req.ips.is_empty() {
        return Err("DNS or IP subjectAltName is required".into());
    }
    if !req.emails.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !req.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    if !usages_match(
        usages,
        &[
            &["digital signature", "key encipherment", "server auth"],
            &["digital signature", "server auth"],
        ],
    ) {
        return Err("usages did not match [digital signature key encipherment server auth]".into());
    }
    if !req.common_name.starts_with("system:node:") {
        return Err("subject common name does not begin with system:node:".into());
    }
    Ok(())
}

/// The kube-apiserver-client signer's check: client auth, and at most
/// digital signature and key encipherment besides.
pub fn validate_apiserver_client_usages(usages: &[String]) -> Result<(), String> {
    let mut client_auth = false;
    for u in usages {
        match u.as_str() {
            "digital signature" | "key encipherment" => {}
            "client auth" => client_auth = true,
            other => return Err(format!("invalid usage for client certificate: {other}")),
        }
    }
    if !client_auth {
        return Err("missing required usage for client certificate: client auth".into());
    }
    Ok(())
}

/// Is the request for `signer` (one of the four built-in names) acceptable?
/// Err: the signer refuses it (the CSR gets a Failed condition).
pub fn check_for_signer(signer: &str, req: &Request, usages: &[String]) -> Result<(), String> {
    match signer {
        KUBELET_SERVING => validate_kubelet_serving(req, usages),
        KUBELET_CLIENT => validate_kubelet_client(req, usages),
        KUBE_APISERVER_CLIENT => validate_apiserver_client_usages(usages),
        // no restrictions, for compatibility, as upstream
        _ => Ok(()),
    }
}

/// The request's usages as the certificate's key usage bits (bit 0 is
/// digitalSignature) and extended key usage OIDs, in Go's order.
pub fn key_usages(usages: &[String]) -> Result<(u16, Vec<&'static [u64]>), String> {
    const EKUS: &[(&str, usize, &[u64])] = &[
        ("any", 0, &[2, 5, 29, 37, 0]),
        ("server auth", 1, &[1, 3, 6, 1, 5, 5, 7, 3, 1]),
        ("client auth", 2, &[1, 3, 6, 1, 5, 5, 7, 3, 2]),
        ("code signing", 3, &[1, 3, 6, 1, 5, 5, 7, 3, 3]),
        ("email protection", 4, &[1, 3, 6, 1, 5, 5, 7, 3, 4]),
        ("s/mime", 4, &[1, 3, 6, 1, 5, 5, 7, 3, 4]),
        ("ipsec end system", 5, &[1, 3, 6, 1, 5, 5, 7, 3, 5]),
        ("ipsec tunnel", 6, &[1, 3, 6, 1, 5, 5, 7, 3, 6]),
        ("ipsec user", 7, &[1, 3, 6, 1, 5, 5, 7, 3, 7]),
        ("timestamping", 8, &[1, 3, 6, 1, 5, 5, 7, 3, 8]),
        ("ocsp signing", 9, &[1, 3, 6, 1, 5, 5, 7, 3, 9]),
        ("microsoft sgc", 10, &[1, 3, 6, 1, 4, 1, 311, 10, 3, 3]),
        ("netscape sgc", 11, &[2, 16, 840, 1, 113730, 4, 1]),
    ];
    let mut bits = 0u16;
    let mut ekus = std::collections::BTreeMap::new();
    let mut unknown = Vec::new();
    for u in usages {
        let bit = match u.as_str() {
            "signing" | "digital signature" => Some(0),
            "content commitment" => Some(1),
            "key encipherment" => Some(2),
            "data encipherment" => Some(3),
            "key agreement" => Some(4),
            "cert sign" => Some(5),
            "crl sign" => Some(6),
            "encipher only" => Some(7),
            "decipher only" => Some(8),
            _ => None,
        };
        if let Some(b) = bit {
            bits |= 1 << b;
        } else if let Some((_, order, oid)) = EKUS.iter().find(|(n, _, _)| n == u) {
            ekus.insert(*order, *oid);
        } else {
            unknown.push(format!("{u:?}"));
        }
    }
    if !unknown.is_empty() {
        return Err(format!(
            "unrecognized usage values: [{}]",
            unknown.join(" ")
        ));
    }
    Ok((bits, ekus.into_values().collect()))
}

/// The certificate's lifetime: the requested `expirationSeconds` when
/// shorter than `--cluster-signing-duration`, but never under 10 minutes.
pub fn duration(cert_ttl: Duration, expiration_seconds: Option<i32>) -> Duration {
    let Some(secs) = expiration_seconds else {
        return cert_ttl;
    };
    let requested = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    let min = Duration::from_secs(600);
    if requested > cert_ttl {
        cert_ttl
    } else if requested < min {
        min
    } else {
        requested
    }
}

/// (NotBefore, NotAfter) in unix seconds for a certificate of `ttl` issued at
/// `now` by a CA valid until `ca_not_after`: backdated by 5 minutes, a long
/// one ending 5 minutes early, none outliving the CA.
pub fn validity(now: i64, ttl: Duration, ca_not_after: i64) -> Result<(i64, i64), String> {
    let backdate = BACKDATE.as_secs() as i64;
    let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let not_before = now - backdate;
    let mut not_after = if ttl < SHORT {
        now.saturating_add(ttl_s)
    } else {
        now.saturating_add(ttl_s) - backdate
    };
    let ca_end = || {
        chrono::DateTime::from_timestamp(ca_not_after, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| ca_not_after.to_string())
    };
    if not_after >= ca_not_after {
        not_after = ca_not_after;
    }
    if not_before >= ca_not_after {
        return Err(format!("the signer has expired: NotAfter={}", ca_end()));
    }
    if now >= ca_not_after {
        return Err(format!(
            "refusing to sign a certificate that expired in the past: NotAfter={}",
            ca_end()
        ));
    }
    Ok((not_before, not_after))
}

/// Is there a condition of `type_` (status True, or unset as upstream reads it)?
pub fn has_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == type_ && (c.status.is_empty() || c.status == "True"))
        })
}

/// Approved and not Denied.
pub fn is_approved(csr: &CertificateSigningRequest) -> bool {
    has_condition(csr, "Approved") && !has_condition(csr, "Denied")
}

/// Has a certificate been issued?
pub fn is_issued(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

/// A CA: its certificate's subject and end, and its key.
pub struct Ca {
    subject_der: Vec<u8>,
    key_id: Option<Vec<u8>>,
    not_after: i64,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// A CA from its certificate (the first of the PEM file) and key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub fn from_pem(cert_pem: &[u8], key_pem: &str) -> Result<Ca, String> {
        let block = x509_parser::pem::Pem::iter_from_buffer(cert_pem)
            .filter_map(Result::ok)
            .find(|p| p.label == "CERTIFICATE")
            .ok_or("no CERTIFICATE in the CA file")?;
        let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
            .map_err(|e| format!("parsing the CA certificate: {e}"))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| format!("parsing the CA key: {e}"))?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err("the CA key does not match the CA certificate".into());
        }
        let key_id = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            });
        Ok(Ca {
            subject_der: cert.subject().as_raw().to_vec(),
            key_id,
            not_after: cert.validity().not_after.timestamp(),
            key,
        })
    }

    /// Load the CA from `--cluster-signing-cert-file` and `--cluster-signing-key-file`.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Ca, String> {
        let cert = std::fs::read(cert_file)
            .map_err(|e| format!("reading {}: {e}", cert_file.display()))?;
        let key = std::fs::read_to_string(key_file)
            .map_err(|e| format!("reading {}: {e}", key_file.display()))?;
        Ca::from_pem(&cert, &key)
            .map_err(|e| format!("{} / {}: {e}", cert_file.display(), key_file.display()))
    }

    /// When the CA's own certificate ends (unix seconds).
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The signature algorithm identifier of the CA key.
    fn signature_algorithm(&self) -> Result<(&'static [u64], bool), String> {
        let alg = self.key.algorithm();
        if alg == &rcgen::PKCS_RSA_SHA256 {
            Ok((&[1, 2, 840, 113549, 1, 1, 11], true))
        } else if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            Ok((&[1, 2, 840, 10045, 4, 3, 2], false))
        } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            Ok((&[1, 2, 840, 10045, 4, 3, 3], false))
        } else if alg == &rcgen::PKCS_ED25519 {
            Ok((&[1, 3, 101, 112], false))
        } else {
            Err(format!("unsupported CA key algorithm {alg:?}"))
        }
    }

    /// Issue a certificate (PEM) for `req` with `usages`, `ttl` long from `now`.
    pub fn sign(
        &self,
        req: &Request,
        usages: &[String],
        ttl: Duration,
        now: i64,
    ) -> Result<String, String> {
        let (bits, ekus) = key_usages(usages)?;
        let (not_before, not_after) = validity(now, ttl, self.not_after)?;
        let (sig_oid, sig_null) = self.signature_algorithm()?;
        let mut serial: [u8; 16] = rand::random();
        serial[0] &= 0x7f;
        let write_alg = |w: yasna::DERWriter| {
            w.write_sequence(|w| {
                w.next().write_oid(&ObjectIdentifier::from_slice(sig_oid));
                if sig_null {
                    w.next().write_null();
                }
            })
        };
        let empty_subject = req.subject_der == [0x30, 0x00];
        let tbs = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_tagged(Tag::context(0), |w| w.write_u8(2));
                w.next().write_bigint_bytes(&serial, true);
                write_alg(w.next());
                w.next().write_der(&self.subject_der);
                w.next().write_sequence(|w| {
                    w.next().write_der(&der_time(not_before));
                    w.next().write_der(&der_time(not_after));
                });
                w.next().write_der(&req.subject_der);
                w.next().write_der(&req.spki_der);
                w.next().write_tagged(Tag::context(3), |w| {
                    w.write_sequence(|w| {
                        if bits != 0 {
                            let len = 16 - bits.leading_zeros() as usize;
                            let v = bits.reverse_bits().to_be_bytes();
                            let n = len.div_ceil(8);
                            extension(w.next(), &[2, 5, 29, 15], true, |w| {
                                w.write_bitvec_bytes(&v[..n], len)
                            });
                        }
                        if !ekus.is_empty() {
                            extension(w.next(), &[2, 5, 29, 37], false, |w| {
                                w.write_sequence(|w| {
                                    for oid in &ekus {
                                        w.next().write_oid(&ObjectIdentifier::from_slice(oid));
                                    }
                                })
                            });
                        }
                        extension(w.next(), &[2, 5, 29, 19], true, |w| {
                            w.write_sequence(|_| {})
                        });
                        if let Some(id) = &self.key_id {
                            extension(w.next(), &[2, 5, 29, 35], false, |w| {
                                w.write_sequence(|w| {
                                    w.next().write_tagged_implicit(Tag::context(0), |w| {
                                        w.write_bytes(id)
                                    })
                                })
                            });
                        }
                        let has_sans = !(req.dns_names.is_empty()
                            && req.emails.is_empty()
                            && req.ips.is_empty()
                            && req.uris.is_empty());
                        if has_sans {
                            extension(w.next(), &[2, 5, 29, 17], empty_subject, |w| {
                                w.write_sequence(|w| {
                                    for e in &req.emails {
                                        w.next().write_tagged_implicit(Tag::context(1), |w| {
                                            w.write_ia5_string(e)
                                        });
                                    }
                                    for d in &req.dns_names {
                                        w.next().write_tagged_implicit(Tag::context(2), |w| {
                                            w.write_ia5_string(d)
                                        });
                                    }
                                    for u in &req.uris {
                                        w.next().write_tagged_implicit(Tag::context(6), |w| {
                                            w.write_ia5_string(u)
                                        });
                                    }
                                    for ip in &req.ips {
                                        let b = match ip {
                                            IpAddr::V4(a) => a.octets().to_vec(),
                                            IpAddr::V6(a) => a.octets().to_vec(),
                                        };
                                        w.next().write_tagged_implicit(Tag::context(7), |w| {
                                            w.write_bytes(&b)
                                        });
                                    }
                                })
                            });
                        }
                    })
                });
            })
        });
        let signature = self
            .key
            .sign(&tbs)
            .map_err(|e| format!("failed to sign certificate: {e}"))?;
        let der = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_der(&tbs);
                write_alg(w.next());
                w.next().write_bitvec_bytes(&signature, signature.len() * 8);
            })
        });
        Ok(pem_encode("CERTIFICATE", &der))
    }
}

/// One Extension: extnID, critical (only when true, DER's default), extnValue.
fn extension(
    w: yasna::DERWriter,
    oid: &[u64],
    critical: bool,
    value: impl FnOnce(yasna::DERWriter),
) {
    let v = yasna::construct_der(value);
    w.write_sequence(|w| {
        w.next().write_oid(&ObjectIdentifier::from_slice(oid));
        if critical {
            w.next().write_bool(true);
        }
        w.next().write_bytes(&v);
    });
}

/// UTCTime through 2049, GeneralizedTime after, as RFC 5280 asks.
fn der_time(t: i64) -> Vec<u8> {
    let dt = chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
    use chrono::Datelike;
    let (tag, s) = if (1950..2050).contains(&dt.year()) {
        (0x17u8, dt.format("%y%m%d%H%M%SZ").to_string())
    } else {
        (0x18u8, dt.format("%Y%m%d%H%M%SZ").to_string())
    };
    let mut out = vec![tag, s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// PEM with 64-character lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// When the first certificate of a PEM bundle ends (unix seconds).
pub fn cert_not_after(pem: &[u8]) -> Result<i64, String> {
    let block = x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .ok_or("expected the certificate associated with the CSR to be PEM encoded")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
        .map_err(|e| format!("unable to parse certificate data: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Queue the key of every object of `informer` that changes (all of them
/// when the subscriber fell behind), and every object once synced. Call it
/// before waiting for the cache.
pub fn feed<K>(
    q: std::sync::Arc<common::workqueue::WorkQueue<String>>,
    informer: &common::informers::Informer<K>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    use common::informers::Change;
    use tokio::sync::broadcast::error::RecvError;
    let (mut changes, store, informer) = (informer.subscribe(), informer.store(), informer.clone());
    tokio::spawn(async move {
        let all = |q: &common::workqueue::WorkQueue<String>| {
            store
                .state()
                .iter()
                .for_each(|o| q.add(crate::key_of(o.meta())))
        };
        let mut synced = false;
        loop {
            tokio::select! {
                c = changes.recv() => match c {
                    Ok(Change::Applied(o) | Change::Deleted(o)) => q.add(crate::key_of(o.meta())),
                    Err(RecvError::Closed) => return,
                    Err(RecvError::Lagged(_)) => all(&q),
                },
                _ = informer.wait_synced(), if !synced => {
                    synced = true;
                    all(&q);
                }
            }
        }
    })
}

#[cfg(test)]
pub mod testutil {
    //! A test CA and requests made with rcgen.
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

    pub fn ca(days: i64) -> (String, String) {
        let key = KeyPair::generate().expect("ca key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "test-ca");
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
        let cert = p.self_signed(&key).expect("ca cert");
        (cert.pem(), key.serialize_pem())
    }

    pub fn request(cn: &str, orgs: &[&str], sans: &[&str]) -> String {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name = rcgen::DistinguishedName::new();
        for o in orgs {
            // rcgen keeps one value per type: more are custom types of the same OID
            p.distinguished_name.push(
                if p.distinguished_name
                    .get(&DnType::OrganizationName)
                    .is_none()
                {
                    DnType::OrganizationName
                } else {
                    DnType::CustomDnType(vec![2, 5, 4, 10])
                },
                *o,
            );
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        for s in sans {
            p.subject_alt_names
                .push(match s.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName((*s).try_into().expect("dns")),
                });
        }
        p.serialize_request(&key).expect("csr").pem().expect("pem")
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use x509_parser::extensions::ParsedExtension;

    fn usages(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn requests_parse_and_kubelet_client_checks_are_upstreams() {
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let r = parse(pem.as_bytes()).expect("parse");
        assert_eq!(r.common_name, "system:node:n1");
        assert_eq!(r.organizations, vec!["system:nodes"]);
        let ok = usages(&["digital signature", "client auth"]);
        assert_eq!(validate_kubelet_client(&r, &ok), Ok(()));
        let rsa = usages(&["key encipherment", "digital signature", "client auth"]);
        assert_eq!(validate_kubelet_client(&r, &rsa), Ok(()));
        assert_eq!(
            validate_kubelet_client(&r, &usages(&["client auth", "server auth"])),
            Err("usages did not match [client auth digital signature key encipherment]".into())
        );
        let other = parse(request("system:node:n1", &["admins"], &[]).as_bytes()).expect("parse");
        assert_eq!(
            validate_kubelet_client(&other, &ok),
            Err("subject organization is not system:nodes".into())
        );
        let cn = parse(request("jane", &["system:nodes"], &[]).as_bytes()).expect("parse");
        assert_eq!(
            validate_kubelet_client(&cn, &ok),
            Err("subject common name does not begin with system:node:".into())
        );
        let san = parse(request("system:node:n1", &["system:nodes"], &["n1.example"]).as_bytes())
            .expect("parse");
        assert_eq!(
            validate_kubelet_client(&san, &ok),
            Err("DNS subjectAltNames are not allowed".into())
        );
        assert!(parse(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
        assert!(parse(b"garbage").is_err());
    }

    #[test]
    fn serving_and_apiserver_client_checks() {
        let r = parse(request("system:node:n1", &["system:nodes"], &["n1", "10.0.0.5"]).as_bytes())
            .expect("parse");
        assert_eq!(r.ips, vec!["10.0.0.5".parse::<IpAddr>().expect("ip")]);
        let serving = usages(&["digital signature", "server auth"]);
        assert_eq!(check_for_signer(KUBELET_SERVING, &r, &serving), Ok(()));
        let bare = parse(request("system:node:n1", &["system:nodes"], &[]).as_bytes()).expect("p");
        assert_eq!(
            check_for_signer(KUBELET_SERVING, &bare, &serving),
            Err("DNS or IP subjectAltName is required".into())
        );
        assert_eq!(
            check_for_signer(KUBE_APISERVER_CLIENT, &bare, &usages(&["server auth"])),
            Err("invalid usage for client certificate: server auth".into())
        );
        assert_eq!(
            check_for_signer(
                KUBE_APISERVER_CLIENT,
                &bare,
                &usages(&["digital signature"])
            ),
            Err("missing required usage for client certificate: client auth".into())
        );
        assert_eq!(check_for_signer(LEGACY_UNKNOWN, &bare, &serving), Ok(()));
    }

    #[test]
    fn durations_and_validity_as_upstream() {
        let year = Duration::from_secs(8760 * 3600);
        assert_eq!(duration(year, None), year);
        assert_eq!(duration(year, Some(3600)), Duration::from_secs(3600));
        assert_eq!(duration(year, Some(60)), Duration::from_secs(600));
        assert_eq!(duration(year, Some(i32::MAX)), year);
        let now = 1_800_000_000;
        // long: backdated at both ends
        assert_eq!(
            validity(now, year, now + 10 * 8760 * 3600),
            Ok((now - 300, now + 8760 * 3600 - 300))
        );
        // short: the end is not backdated
        assert_eq!(
            validity(now, Duration::from_secs(3600), now + 8760 * 3600),
            Ok((now - 300, now + 3600))
        );
        // never past the CA
        assert_eq!(validity(now, year, now + 100), Ok((now - 300, now + 100)));
        assert!(validity(now, year, now - 10)
            .expect_err("expired")
            .starts_with("refusing to sign a certificate that expired in the past"));
        assert!(validity(now, year, now - 1000)
            .expect_err("expired")
            .starts_with("the signer has expired"));
    }

    #[test]
    fn usages_become_key_usage_and_eku() {
        let (bits, ekus) = key_usages(&usages(&[
            "client auth",
            "digital signature",
            "key encipherment",
            "server auth",
        ]))
        .expect("usages");
        assert_eq!(bits, 0b101);
        assert_eq!(
            ekus,
            vec![
                &[1, 3, 6, 1, 5, 5, 7, 3, 1][..],
                &[1, 3, 6, 1, 5, 5, 7, 3, 2][..]
            ]
        );
        assert_eq!(
            key_usages(&usages(&["bogus"])),
            Err("unrecognized usage values: [\"bogus\"]".into())
        );
    }

    #[test]
    fn a_signed_certificate_has_the_requested_subject_expiry_and_eku() {
        let (ca_pem, ca_key) = ca(3650);
        let ca = Ca::from_pem(ca_pem.as_bytes(), &ca_key).expect("ca");
        let req = parse(request("jane", &["dev", "ops"], &[]).as_bytes()).expect("parse");
        assert_eq!(req.organizations, vec!["dev", "ops"]);
        let now = chrono::Utc::now().timestamp();
        let pem = ca
            .sign(
                &req,
                &usages(&["digital signature", "client auth"]),
                Duration::from_secs(3600),
                now,
            )
            .expect("sign");
        let block = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .expect("pem")
            .1;
        let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).expect("cert");
        let cns: Vec<_> = cert
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect();
        assert_eq!(cns, vec!["jane"]);
        let orgs: Vec<_> = cert
            .subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .collect();
        assert_eq!(orgs, vec!["dev", "ops"], "every group survives");
        assert_eq!(cert.validity().not_before.timestamp(), now - 300);
        assert_eq!(cert.validity().not_after.timestamp(), now + 3600);
        let eku = cert
            .extended_key_usage()
            .expect("eku")
            .expect("has eku")
            .value;
        assert!(eku.client_auth && !eku.server_auth);
        let ku = cert.key_usage().expect("ku").expect("has ku");
        assert!(ku.critical && ku.value.digital_signature() && !ku.value.key_encipherment());
        let bc = cert.basic_constraints().expect("bc").expect("has bc");
        assert!(!bc.value.ca);
        // signed by the CA
        let ca_block = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
            .expect("pem")
            .1;
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_block.contents).expect("ca");
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("verifies against the CA");
        assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
        let ca_has_ski = ca_cert.extensions().iter().any(|e| {
            matches!(
                e.parsed_extension(),
                ParsedExtension::SubjectKeyIdentifier(_)
            )
        });
        let has_aki = cert.extensions().iter().any(|e| {
            matches!(
                e.parsed_extension(),
                ParsedExtension::AuthorityKeyIdentifier(_)
            )
        });
        assert_eq!(has_aki, ca_has_ski);
    }

    #[test]
    fn serving_certificates_keep_their_names_and_the_ca_bounds_the_end() {
        let (ca_pem, ca_key) = ca(1);
        let ca = Ca::from_pem(ca_pem.as_bytes(), &ca_key).expect("ca");
        let req =
            parse(request("system:node:n1", &["system:nodes"], &["n1", "10.0.0.5"]).as_bytes())
                .expect("parse");
        let now = chrono::Utc::now().timestamp();
        let pem = ca
            .sign(
                &req,
                &usages(&["digital signature", "key encipherment", "server auth"]),
                Duration::from_secs(8760 * 3600),
                now,
            )
            .expect("sign");
        assert_eq!(cert_not_after(pem.as_bytes()), Ok(ca.not_after()));
        let block = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .expect("pem")
            .1;
        let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).expect("cert");
        let san = cert
            .subject_alternative_name()
            .expect("san")
            .expect("has san");
        let names = &san.value.general_names;
        assert!(names.contains(&GeneralName::DNSName("n1")), "{names:?}");
        assert!(
            names.contains(&GeneralName::IPAddress(&[10, 0, 0, 5])),
            "{names:?}"
        );
        assert!(
            cert.extended_key_usage()
                .expect("eku")
                .expect("eku")
                .value
                .server_auth
        );
    }

    #[test]
    fn an_rsa_ca_from_openssl_signs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (k, c) = (dir.path().join("ca.key"), dir.path().join("ca.crt"));
        let ok = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-days", "30",
            ])
            .arg("-keyout")
            .arg(&k)
            .arg("-out")
            .arg(&c)
            .args(["-subj", "/CN=rsa-ca"])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("no openssl: skipped");
            return;
        }
        let ca = Ca::load(&c, &k).expect("load");
        let req = parse(request("system:node:n1", &["system:nodes"], &[]).as_bytes()).expect("p");
        let pem = ca
            .sign(
                &req,
                &usages(&["digital signature", "client auth"]),
                Duration::from_secs(3600),
                chrono::Utc::now().timestamp(),
            )
            .expect("sign");
        std::fs::write(dir.path().join("leaf.crt"), &pem).expect("write");
        let out = std::process::Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(&c)
            .arg(dir.path().join("leaf.crt"))
            .output()
            .expect("openssl verify");
        assert!(
            out.status.success(),
            "openssl verify: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // a key that is not the CA's is refused
        let (_, other_key) = super::testutil::ca(1);
        let cert = std::fs::read(&c).expect("read");
        assert!(Ca::from_pem(&cert, &other_key).is_err());
    }
}
