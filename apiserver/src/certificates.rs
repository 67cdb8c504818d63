//! certificates.k8s.io/v1 CertificateSigningRequests, as upstream's registry
//! and admission plugins:
//!
//! - strategy: on create spec.username/uid/groups come from the requester
//!   and status starts empty; the main resource never changes spec or status,
//!   `/status` sets status (the Approved/Denied conditions kept as they were),
//!   `/approval` sets only status.conditions; condition timestamps are filled in.
//! - validation: spec.request is a PEM CERTIFICATE REQUEST whose
//!   self-signature verifies, usages from the known set without duplicates,
//!   a qualified signerName, expirationSeconds >= 600, conditions well formed
//!   (Approved and Denied exclusive, never removed), status.certificate PEM
//!   CERTIFICATE blocks that cannot change once set.
//! - admission: CertificateApproval (`/approval` needs `approve` on the
//!   synthetic `signers` resource), CertificateSigning (a changed
//!   status.certificate needs `sign`), CertificateSubjectRestriction
//!   (kubernetes.io/kube-apiserver-client refuses `O=system:masters`).
//!
//! Upstream checks a signer's own rules (e.g. kube-apiserver-client-kubelet's
//! `CN=system:node:<name>, O=system:nodes`) in its signing and approving
//! controllers, not in the API; [`validate_kubelet_client_csr`] and
//! [`validate_kubelet_serving_csr`] are those rules for the controllers.

use std::collections::BTreeSet;
use std::net::IpAddr;

use base64::Engine;
use serde_json::{json, Value};
use x509_parser::prelude::FromDer;

use crate::error::{ApiError, ApiResult};
use crate::rbac::Attributes;
use crate::store::Ctx;
use crate::validation::FieldError;

pub const GROUP: &str = "certificates.k8s.io";
pub const KIND: &str = "CertificateSigningRequest";
pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
pub const LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";

/// Upstream's known key usages.
pub const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

const APPROVED: &str = "Approved";
const DENIED: &str = "Denied";
const FAILED: &str = "Failed";

// ---------------------------------------------------------------------------
// PKCS#10 parsing
// ---------------------------------------------------------------------------

/// What the controllers and admission read from a certificate request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedCsr {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub emails: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub uris: Vec<String>,
}

fn first_pem(data: &[u8]) -> Option<x509_parser::pem::Pem> {
    x509_parser::pem::Pem::iter_from_buffer(data).next()?.ok()
}

fn parse_der(
    der: &[u8],
) -> Result<x509_parser::certification_request::X509CertificationRequest<'_>, String> {
    let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|e| format!("asn1: structure error: {e}"))?;
    if !rest.is_empty() {
        return Err("asn1: syntax error: trailing data".into());
    }
    Ok(csr)
}

fn details(csr: &x509_parser::certification_request::X509CertificationRequest<'_>) -> ParsedCsr {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let subject = &csr.certification_request_info.subject;
    let mut out = ParsedCsr {
        common_name: subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string(),
        organizations: subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect(),
        ..Default::default()
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for n in &san.general_names {
                match n {
                    GeneralName::DNSName(d) => out.dns_names.push(d.to_string()),
                    GeneralName::RFC822Name(e) => out.emails.push(e.to_string()),
                    GeneralName::URI(u) => out.uris.push(u.to_string()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            out.ip_addresses.push(IpAddr::from(a));
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            out.ip_addresses.push(IpAddr::from(a));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// Upstream's ParseCSR: the first PEM block must be a CERTIFICATE REQUEST
/// that parses (the signature is not checked).
pub fn parse_csr(pem: &[u8]) -> Result<ParsedCsr, String> {
    let block = first_pem(pem)
        .filter(|p| p.label == "CERTIFICATE REQUEST")
        .ok_or("PEM block type must be CERTIFICATE REQUEST")?;
    Ok(details(&parse_der(&block.contents)?))
}

/// ParseCSR and CheckSignature: the request is signed by its own key.
pub fn verify_csr(pem: &[u8]) -> Result<ParsedCsr, String> {
    let block = first_pem(pem)
        .filter(|p| p.label == "CERTIFICATE REQUEST")
        .ok_or("PEM block type must be CERTIFICATE REQUEST")?;
    let csr = parse_der(&block.contents)?;
    match csr.verify_signature() {
        Ok(()) => Ok(details(&csr)),
        Err(x509_parser::error::X509Error::SignatureUnsupportedAlgorithm) => {
            Err("x509: cannot verify signature: algorithm unimplemented".into())
        }
        Err(_) => {
            let alg = csr
                .certification_request_info
                .subject_pki
                .algorithm
                .algorithm
                .to_id_string();
            Err(match alg.as_str() {
                "1.2.840.113549.1.1.1" => "crypto/rsa: verification error",
                "1.2.840.10045.2.1" => "x509: ECDSA verification failure",
                "1.3.101.112" => "x509: Ed25519 verification failure",
                _ => "x509: signature verification failure",
            }
            .into())
        }
    }
}

/// Upstream's status.certificate rule: one or more CERTIFICATE blocks, no
/// headers, each parsing as X.509 (empty is fine).
pub fn validate_certificate_pem(pem: &[u8]) -> Result<(), String> {
    if pem.is_empty() {
        return Ok(());
    }
    let mut blocks = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|_| "no PEM block headers are permitted".to_string())?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "only CERTIFICATE PEM blocks are allowed, found {:?}",
                block.label
            ));
        }
        blocks += 1;
        x509_parser::parse_x509_certificate(&block.contents)
            .map_err(|e| format!("x509: malformed certificate: {e}"))?;
    }
    if blocks == 0 {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    Ok(())
}

fn usage_set(usages: &[String]) -> BTreeSet<&str> {
    usages.iter().map(String::as_str).collect()
}

fn usages_error(want: &[&str]) -> String {
    let mut w = want.to_vec();
    w.sort_unstable();
    format!("usages did not match [{}]", w.join(" "))
}

/// Upstream's ValidateKubeletClientCSR (the kube-apiserver-client-kubelet
/// signer's rule): O is exactly system:nodes, no SANs, CN system:node:*,
/// usages {digital signature, client auth} (key encipherment allowed).
pub fn validate_kubelet_client_csr(csr: &ParsedCsr, usages: &[String]) -> Result<(), String> {
    if csr.organizations != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if !csr.dns_names.is_empty() {
        return Err("DNS subjectAltNames are not allowed".into());
    }
    if !csr.emails.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !csr.ip_addresses.is_empty() {
        return Err("IP subjectAltNames are not allowed".into());
    }
    if !csr.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    if !csr.common_name.starts_with("system:node:") {
        return Err("subject common name does not begin with system:node:".into());
    }
    let full = ["digital signature", "key encipherment", "client auth"];
    let got = usage_set(usages);
    if got != full.into_iter().collect()
        && got != ["digital signature", "client auth"].into_iter().collect()
    {
        return Err(usages_error(&full));
    }
    Ok(())
}

/// Upstream's ValidateKubeletServingCSR (the kubelet-serving signer's rule).
pub fn validate_kubelet_serving_csr(csr: &ParsedCsr, usages: &[String]) -> Result<(), String> {
    if csr.organizations != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if csr.dns_names.is_empty() && csr.ip_addresses.is_empty() {
        return Err("DNS or IP subjectAltName is required".into());
    }
    if !csr.emails.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !csr.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    let full = ["digital signature", "key encipherment", "server auth"];
    let got = usage_set(usages);
    if got != full.into_iter().collect()
        && got != ["digital signature", "server auth"].into_iter().collect()
    {
        return Err(usages_error(&full));
    }
    if !csr.common_name.starts_with("system:node:") {
        return Err("subject common name does not begin with system:node:".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// JSON access
// ---------------------------------------------------------------------------

/// A `[]byte` field (base64 in JSON): Ok(None) when absent, Err(offset) when not base64.
fn bytes_at(obj: &Value, pointer: &str) -> Result<Option<Vec<u8>>, String> {
    match obj.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Some)
            .map_err(|e| match e {
                base64::DecodeError::InvalidByte(at, _) => {
                    format!("illegal base64 data at input byte {at}")
                }
                base64::DecodeError::InvalidLastSymbol(at, _) => {
                    format!("illegal base64 data at input byte {at}")
                }
                _ => format!("illegal base64 data at input byte {}", s.len()),
            }),
        Some(other) => Err(format!(
            "json: cannot unmarshal {} into Go value of type []uint8",
            json_type(other)
        )),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        _ => "string",
    }
}

fn bytes_lossy(obj: &Value, pointer: &str) -> Option<Vec<u8>> {
    bytes_at(obj, pointer).ok().flatten()
}

fn strings(obj: &Value, pointer: &str) -> Vec<String> {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn str_at<'v>(obj: &'v Value, pointer: &str) -> &'v str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn conditions(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn of_type(obj: &Value, t: &str) -> Vec<Value> {
    conditions(obj)
        .into_iter()
        .filter(|c| c.get("type").and_then(Value::as_str) == Some(t))
        .collect()
}

fn has_condition(obj: &Value, t: &str) -> bool {
    !of_type(obj, t).is_empty()
}

// ---------------------------------------------------------------------------
// field errors, as upstream's field.Error bodies
// ---------------------------------------------------------------------------

/// Go's `%q`.
fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// Go's `%#v` of a `[]byte`.
fn go_bytes(b: Option<&[u8]>) -> String {
    match b {
        None => "[]byte(nil)".into(),
        Some(b) => format!(
            "[]byte{{{}}}",
            b.iter()
                .map(|x| format!("0x{x:x}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn fe(reason: &'static str, field: impl Into<String>, message: String) -> FieldError {
    FieldError {
        reason,
        field: field.into(),
        message,
    }
}

fn invalid(field: impl Into<String>, rendered: &str, detail: &str) -> FieldError {
    fe(
        "FieldValueInvalid",
        field,
        format!("Invalid value: {rendered}: {detail}"),
    )
}

fn required(field: impl Into<String>) -> FieldError {
    fe("FieldValueRequired", field, "Required value".into())
}

fn forbidden(field: impl Into<String>, detail: &str) -> FieldError {
    fe("FieldValueForbidden", field, format!("Forbidden: {detail}"))
}

fn duplicate(field: impl Into<String>, v: &str) -> FieldError {
    fe(
        "FieldValueDuplicate",
        field,
        format!("Duplicate value: {}", quote(v)),
    )
}

fn not_supported(field: impl Into<String>, v: &str, supported: &[&str]) -> FieldError {
    let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
    fe(
        "FieldValueNotSupported",
        field,
        format!(
            "Unsupported value: {}: supported values: {}",
            quote(v),
            list.join(", ")
        ),
    )
}

fn too_long(field: impl Into<String>, max: usize) -> FieldError {
    fe(
        "FieldValueTooLong",
        field,
        format!("Too long: must have at most {max} bytes"),
    )
}

/// Upstream's ValidateSignerName: `<domain>/<path>`, the domain a DNS name
/// with at least two labels, the path dot-separated subdomains.
pub fn validate_signer_name(field: &str, name: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if name.is_empty() {
        errs.push(required(field));
        return errs;
    }
    let segments: Vec<&str> = name.split('/').collect();
    if segments.len() != 2 {
        errs.push(invalid(
            field,
            &quote(name),
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
        return errs;
    }
    let (domain, path) = (segments[0], segments[1]);
    if domain.len() > 253 {
        errs.push(too_long(field, 253));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    for l in &labels {
        let bad = crate::validation::dns1123_label(l);
        if !bad.is_empty() {
            for m in bad {
                errs.push(invalid(
                    field,
                    &quote(domain),
                    &format!("validating label {}: {m}", quote(l)),
                ));
            }
            break;
        }
    }
    if labels.len() < 2 {
        errs.push(invalid(
            field,
            &quote(domain),
            "should be a domain with at least two segments separated by dots",
        ));
    }
    for l in path.split('.') {
        let bad = crate::validation::dns1123_subdomain(l);
        if !bad.is_empty() {
            for m in bad {
                errs.push(invalid(
                    field,
                    &quote(path),
                    &format!("validating label {}: {m}", quote(l)),
                ));
            }
            break;
        }
    }
    let max = 253 + (253 + 63 + 1) + 1;
    if name.len() > max {
        errs.push(too_long(field, max));
    }
    errs
}

// ---------------------------------------------------------------------------
// validation
// ---------------------------------------------------------------------------

/// Upstream's certificateValidationOptions: what an update path may do, and
/// what is tolerated because the stored object already has it.
#[derive(Debug, Default, Clone, Copy)]
struct Opts {
    setting_approval: bool,
    setting_certificate: bool,
    both_approved_and_denied: bool,
    legacy_signer: bool,
    duplicate_condition_types: bool,
    empty_condition_type: bool,
    arbitrary_certificate: bool,
    unknown_usages: bool,
    duplicate_usages: bool,
}

fn has_duplicates<'a>(xs: impl Iterator<Item = &'a str>) -> bool {
    let mut seen = BTreeSet::new();
    xs.into_iter().any(|x| !seen.insert(x))
}

fn opts(new: &Value, old: Option<&Value>) -> Opts {
    let Some(old) = old else {
        return Opts::default();
    };
    let types: Vec<String> = conditions(old)
        .iter()
        .map(|c| str_at(c, "/type").to_string())
        .collect();
    let old_usages = strings(old, "/spec/usages");
    let old_cert = bytes_lossy(old, "/status/certificate").unwrap_or_default();
    let new_cert = bytes_lossy(new, "/status/certificate").unwrap_or_default();
    Opts {
        both_approved_and_denied: has_condition(old, APPROVED) && has_condition(old, DENIED),
        legacy_signer: str_at(old, "/spec/signerName") == LEGACY_UNKNOWN,
        duplicate_condition_types: has_duplicates(types.iter().map(String::as_str)),
        empty_condition_type: types.iter().any(String::is_empty),
        arbitrary_certificate: old_cert == new_cert || validate_certificate_pem(&old_cert).is_err(),
        unknown_usages: old_usages.iter().any(|u| !USAGES.contains(&u.as_str())),
        duplicate_usages: has_duplicates(old_usages.iter().map(String::as_str)),
        ..Opts::default()
    }
}

fn validate_csr(obj: &Value, o: &Opts) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let request = bytes_lossy(obj, "/spec/request");
    if let Err(e) = verify_csr(request.as_deref().unwrap_or_default()) {
        errs.push(invalid("spec.request", &go_bytes(request.as_deref()), &e));
    }
    let usages = strings(obj, "/spec/usages");
    if usages.is_empty() {
        errs.push(required("spec.usages"));
    }
    if !o.unknown_usages {
        let mut supported = USAGES.to_vec();
        supported.sort_unstable();
        for (i, u) in usages.iter().enumerate() {
            if !USAGES.contains(&u.as_str()) {
                errs.push(not_supported(format!("spec.usages[{i}]"), u, &supported));
            }
        }
    }
    if !o.duplicate_usages {
        let mut seen = BTreeSet::new();
        for (i, u) in usages.iter().enumerate() {
            if !seen.insert(u.as_str()) {
                errs.push(duplicate(format!("spec.usages[{i}]"), u));
            }
        }
    }
    let signer = str_at(obj, "/spec/signerName");
    if !o.legacy_signer && signer == LEGACY_UNKNOWN {
        errs.push(invalid(
            "spec.signerName",
            &quote(signer),
            "the legacy signerName is not allowed via this API version",
        ));
    } else {
        errs.extend(validate_signer_name("spec.signerName", signer));
    }
    if let Some(secs) = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
    {
        if secs < 600 {
            errs.push(invalid(
                "spec.expirationSeconds",
                &secs.to_string(),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    validate_conditions(obj, o, &mut errs);
    if !o.arbitrary_certificate {
        let cert = bytes_lossy(obj, "/status/certificate").unwrap_or_default();
        if let Err(e) = validate_certificate_pem(&cert) {
            errs.push(invalid(
                "status.certificate",
                &quote("<certificate data>"),
                &e,
            ));
        }
    }
    errs
}

fn validate_conditions(obj: &Value, o: &Opts, errs: &mut Vec<FieldError>) {
    let mut seen = BTreeSet::new();
    let (mut approved, mut denied) = (false, false);
    for (i, c) in conditions(obj).iter().enumerate() {
        let path = format!("status.conditions[{i}]");
        let t = str_at(c, "/type");
        let status = str_at(c, "/status");
        if !o.empty_condition_type && t.is_empty() {
            errs.push(required(format!("{path}.type")));
        }
        let allowed: &[&str] = if matches!(t, APPROVED | DENIED | FAILED) {
            &["True"]
        } else {
            &["False", "True", "Unknown"]
        };
        if status.is_empty() {
            errs.push(required(format!("{path}.status")));
        } else if !allowed.contains(&status) {
            errs.push(not_supported(format!("{path}.status"), status, allowed));
        }
        if !o.both_approved_and_denied {
            let exclusive = || {
                invalid(
                    format!("{path}.type"),
                    &quote(t),
                    "Approved and Denied conditions are mutually exclusive",
                )
            };
            match t {
                APPROVED => {
                    approved = true;
                    if denied {
                        errs.push(exclusive());
                    }
                }
                DENIED => {
                    denied = true;
                    if approved {
                        errs.push(exclusive());
                    }
                }
                _ => {}
            }
        }
        if !o.duplicate_condition_types && !seen.insert(t.to_string()) {
            errs.push(duplicate(format!("{path}.type"), t));
        }
    }
}

/// Validation of a new CSR (metadata is checked by the generic validation).
pub fn validate_create(obj: &Value) -> Vec<FieldError> {
    validate_csr(obj, &opts(obj, None))
}

/// Validation of an update of the CSR itself (`sub` None), its `/status` or
/// its `/approval`.
pub fn validate_update(sub: Option<&str>, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut o = opts(new, Some(old));
    match sub {
        Some("status") => o.setting_certificate = true,
        Some("approval") => o.setting_approval = true,
        _ => {}
    }
    let mut errs = validate_csr(new, &o);
    for t in [APPROVED, DENIED, FAILED] {
        if of_type(new, t).len() < of_type(old, t).len() {
            errs.push(forbidden(
                "status.conditions",
                &format!("updates may not remove a condition of type {}", quote(t)),
            ));
        }
    }
    if !o.setting_approval {
        for t in [APPROVED, DENIED] {
            let (was, is) = (of_type(old, t), of_type(new, t));
            if is.len() > was.len() {
                errs.push(forbidden(
                    "status.conditions",
                    &format!("updates may not add a condition of type {}", quote(t)),
                ));
            } else if is.len() == was.len() && is != was {
                errs.push(forbidden(
                    "status.conditions",
                    &format!("updates may not modify a condition of type {}", quote(t)),
                ));
            }
        }
    }
    let old_cert = bytes_lossy(old, "/status/certificate").unwrap_or_default();
    let new_cert = bytes_lossy(new, "/status/certificate").unwrap_or_default();
    if old_cert != new_cert {
        if !o.setting_certificate {
            errs.push(forbidden(
                "status.certificate",
                "updates may not set certificate content",
            ));
        } else if !old_cert.is_empty() {
            errs.push(forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
    }
    errs
}

// ---------------------------------------------------------------------------
// strategy
// ---------------------------------------------------------------------------

/// PrepareForCreate: the requester's identity replaces whatever the client
/// sent, and nobody creates a pre-approved request. A `[]byte` field that is
/// not base64 fails to decode, as upstream's decoder (400).
pub fn prepare_create(ctx: &Ctx<'_>, obj: &mut Value) -> ApiResult<()> {
    if ctx.res.kind != KIND {
        return Ok(());
    }
    for p in ["/spec/request", "/status/certificate"] {
        bytes_at(obj, p).map_err(|e| {
            ApiError::bad_request(format!(
                "{KIND} in version \"v1\" cannot be handled as a {KIND}: {e}"
            ))
        })?;
    }
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let user = ctx.user;
    if let Some(spec) = obj["spec"].as_object_mut() {
        for f in ["username", "uid", "groups", "extra"] {
            spec.remove(f);
        }
        if !user.name.is_empty() {
            spec.insert("username".into(), json!(user.name));
        }
        if !user.uid.is_empty() {
            spec.insert("uid".into(), json!(user.uid));
        }
        if !user.groups.is_empty() {
            spec.insert("groups".into(), json!(user.groups));
        }
    }
    obj["status"] = json!({});
    Ok(())
}

fn is_zero_time(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty() || s.starts_with("0001-01-01T00:00:00"),
        _ => false,
    }
}

/// populateConditionTimestamps: lastUpdateTime now when unset;
/// lastTransitionTime from the old condition of the same type and status,
/// else now.
fn populate_timestamps(new: &mut Value, old: &Value, now: &str) {
    let olds = conditions(old);
    let Some(cs) = new
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for c in cs.iter_mut() {
        let Some(m) = c.as_object_mut() else { continue };
        if is_zero_time(m.get("lastUpdateTime")) {
            m.insert("lastUpdateTime".into(), json!(now));
        }
        if is_zero_time(m.get("lastTransitionTime")) {
            let (t, s) = (
                m.get("type").cloned().unwrap_or(Value::Null),
                m.get("status").cloned().unwrap_or(Value::Null),
            );
            let kept = olds
                .iter()
                .find(|o| {
                    o.get("type") == Some(&t)
                        && o.get("status") == Some(&s)
                        && !is_zero_time(o.get("lastTransitionTime"))
                })
                .and_then(|o| o.get("lastTransitionTime").cloned());
            m.insert(
                "lastTransitionTime".into(),
                kept.unwrap_or_else(|| json!(now)),
            );
        }
    }
}

/// preserveConditionInstances: when `/status` keeps the number of conditions
/// of type `t`, they keep their old values.
fn preserve_instances(new: &mut Value, old: &Value, t: &str) {
    let idx = |v: &Value| -> Vec<usize> {
        conditions(v)
            .iter()
            .enumerate()
            .filter(|(_, c)| c.get("type").and_then(Value::as_str) == Some(t))
            .map(|(i, _)| i)
            .collect()
    };
    let (oi, ni) = (idx(old), idx(new));
    if oi.len() != ni.len() {
        return;
    }
    let olds = conditions(old);
    if let Some(cs) = new
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        for (o, n) in oi.into_iter().zip(ni) {
            if let (Some(slot), Some(v)) = (cs.get_mut(n), olds.get(o)) {
                *slot = v.clone();
            }
        }
    }
}

fn set_status(obj: &mut Value, status: Option<Value>) {
    match status {
        Some(s) => obj["status"] = s,
        None => {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
    }
}

/// PrepareForUpdate of the CSR (`sub` None: spec and status stay), of
/// `/status` (spec stays, Approved/Denied conditions keep their values) and of
/// `/approval` (only status.conditions change). Metadata is the caller's.
pub fn prepare_update(sub: Option<&str>, new: &mut Value, old: &Value) {
    let now = crate::store::now();
    match sub {
        Some("status") => {
            let mut status_obj = json!({"status": new.get("status").cloned().unwrap_or(json!({}))});
            preserve_instances(&mut status_obj, old, APPROVED);
            preserve_instances(&mut status_obj, old, DENIED);
            populate_timestamps(&mut status_obj, old, &now);
            let status = status_obj.get("status").cloned();
            *new = old.clone();
            set_status(new, status);
        }
        Some("approval") => {
            populate_timestamps(new, old, &now);
            let conds = new.pointer("/status/conditions").cloned();
            *new = old.clone();
            if !new.get("status").is_some_and(Value::is_object) {
                new["status"] = json!({});
            }
            if let Some(s) = new["status"].as_object_mut() {
                match conds {
                    Some(c) if !c.is_null() => {
                        s.insert("conditions".into(), c);
                    }
                    _ => {
                        s.remove("conditions");
                    }
                }
            }
        }
        _ => {
            match old.get("spec") {
                Some(s) => new["spec"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("spec");
                    }
                }
            }
            set_status(new, old.get("status").cloned());
        }
    }
}

// ---------------------------------------------------------------------------
// admission
// ---------------------------------------------------------------------------

fn admission_forbidden(name: &str, why: &str) -> ApiError {
    let mut e = ApiError::forbidden(format!(
        "certificatesigningrequests.{GROUP} {} is forbidden: {why}",
        quote(name)
    ));
    e.details = Some(json!({"name": name, "group": GROUP, "kind": "certificatesigningrequests"}));
    e
}

/// Upstream's IsAuthorizedForSignerName: `verb` on `signers` named
/// `signer`, or `<domain>/*`.
pub fn authorized_for_signer(
    api: &crate::Api,
    user: &crate::authn::User,
    verb: &str,
    signer: &str,
) -> bool {
    let check = |name: &str| {
        let a = Attributes::resource(user, verb, GROUP, "signers").with_name(name);
        api.authz.authorize(api, &a).0
    };
    if check(signer) {
        return true;
    }
    let domain = signer.split('/').next().unwrap_or_default();
    check(&format!("{domain}/*"))
}

/// CertificateSubjectRestriction, on create.
pub fn admit_create(ctx: &Ctx<'_>, obj: &Value) -> ApiResult<()> {
    if ctx.res.kind != KIND || str_at(obj, "/spec/signerName") != KUBE_APISERVER_CLIENT {
        return Ok(());
    }
    let name = str_at(obj, "/metadata/name");
    let request = bytes_lossy(obj, "/spec/request").unwrap_or_default();
    match parse_csr(&request) {
        Err(e) => Err(admission_forbidden(name, &format!("failed to parse CSR: {e}"))),
        Ok(csr) if csr.organizations.iter().any(|o| o == "system:masters") => {
            Err(admission_forbidden(
                name,
                &format!("use of {KUBE_APISERVER_CLIENT} signer with system:masters group is not allowed"),
            ))
        }
        Ok(_) => Ok(()),
    }
}

/// CertificateApproval and CertificateSigning, on update (checked against the
/// stored signerName).
pub fn admit_update(ctx: &Ctx<'_>, sub: Option<&str>, new: &Value, old: &Value) -> ApiResult<()> {
    if ctx.res.kind != KIND {
        return Ok(());
    }
    let signer = str_at(old, "/spec/signerName");
    let name = str_at(old, "/metadata/name");
    match sub {
        Some("approval") if !authorized_for_signer(ctx.api, ctx.user, "approve", signer) => {
            Err(admission_forbidden(
                name,
                &format!(
                    "user not permitted to approve requests with signerName {}",
                    quote(signer)
                ),
            ))
        }
        Some("status")
            if bytes_lossy(old, "/status/certificate")
                != bytes_lossy(new, "/status/certificate")
                && !authorized_for_signer(ctx.api, ctx.user, "sign", signer) =>
        {
            Err(admission_forbidden(
                name,
                &format!(
                    "user not permitted to sign requests with signerName {}",
                    quote(signer)
                ),
            ))
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// table printing
// ---------------------------------------------------------------------------

/// The CONDITION column: Denied, Approved or Pending, then ",Failed" and
/// ",Issued".
pub fn condition_text(obj: &Value) -> String {
    let mut s = if has_condition(obj, DENIED) {
        DENIED.to_string()
    } else if has_condition(obj, APPROVED) {
        APPROVED.to_string()
    } else {
        "Pending".to_string()
    };
    if has_condition(obj, FAILED) {
        s.push_str(",Failed");
    }
    if obj
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty())
    {
        s.push_str(",Issued");
    }
    s
}

/// The REQUESTEDDURATION column.
pub fn requested_duration(obj: &Value) -> String {
    match obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
    {
        Some(s) => crate::table::human_duration(chrono::Duration::seconds(s)),
        None => "<none>".into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn csr_pem(cn: &str, orgs: &[&str], dns: &[&str]) -> String {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            p.distinguished_name.push(DnType::OrganizationName, *o);
        }
        for d in dns {
            p.subject_alt_names
                .push(SanType::DnsName((*d).try_into().unwrap()));
        }
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(pem: &str, signer: &str, usages: &[&str]) -> Value {
        json!({"apiVersion": "certificates.k8s.io/v1", "kind": KIND,
               "metadata": {"name": "c"},
               "spec": {"request": b64(pem.as_bytes()), "signerName": signer, "usages": usages}})
    }

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn parses_and_verifies() {
        let pem = csr_pem("system:node:n1", &["system:nodes"], &[]);
        let p = verify_csr(pem.as_bytes()).unwrap();
        assert_eq!(p.common_name, "system:node:n1");
        assert_eq!(p.organizations, vec!["system:nodes"]);
        assert!(validate_kubelet_client_csr(
            &p,
            &["digital signature".into(), "client auth".into()]
        )
        .is_ok());
        assert_eq!(
            validate_kubelet_client_csr(&p, &["server auth".into()]).unwrap_err(),
            "usages did not match [client auth digital signature key encipherment]"
        );
        let with_dns =
            verify_csr(csr_pem("system:node:n1", &["system:nodes"], &["n1"]).as_bytes()).unwrap();
        assert_eq!(with_dns.dns_names, vec!["n1"]);
        assert_eq!(
            validate_kubelet_client_csr(
                &with_dns,
                &["client auth".into(), "digital signature".into()]
            )
            .unwrap_err(),
            "DNS subjectAltNames are not allowed"
        );
        assert!(validate_kubelet_serving_csr(
            &with_dns,
            &["digital signature".into(), "server auth".into()]
        )
        .is_ok());
        // a flipped byte in the signed body breaks the self-signature
        let block = first_pem(pem.as_bytes()).unwrap();
        let mut der = block.contents.clone();
        let at = der.len() / 3;
        der[at] ^= 0x01;
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            b64(&der)
        );
        assert!(verify_csr(tampered.as_bytes()).is_err());
        assert_eq!(
            parse_csr(b"not a pem").unwrap_err(),
            "PEM block type must be CERTIFICATE REQUEST"
        );
        let cert_block = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(parse_csr(cert_block.as_bytes()).is_err());
    }

    #[test]
    fn create_validation() {
        let pem = csr_pem("system:node:n1", &["system:nodes"], &[]);
        let good = csr(
            &pem,
            KUBE_APISERVER_CLIENT_KUBELET,
            &["digital signature", "client auth"],
        );
        assert!(
            validate_create(&good).is_empty(),
            "{:?}",
            fields(&validate_create(&good))
        );

        let bad = csr("garbage", "example.com/x", &["client auth"]);
        let f = fields(&validate_create(&bad));
        assert_eq!(f.len(), 1);
        assert!(f[0].starts_with("spec.request: Invalid value: []byte{0x67, 0x61,"));
        assert!(f[0].ends_with(": PEM block type must be CERTIFICATE REQUEST"));

        let mut v = csr(&pem, "noslash", &["client auth", "client auth", "flying"]);
        v["spec"]["expirationSeconds"] = json!(300);
        let f = fields(&validate_create(&v));
        assert!(
            f.contains(&"spec.usages[1]: Duplicate value: \"client auth\"".to_string()),
            "{f:?}"
        );
        assert!(f.iter().any(|e| e.starts_with("spec.usages[2]: Unsupported value: \"flying\": supported values: \"any\", \"cert sign\", \"client auth\",")), "{f:?}");
        assert!(f.contains(&"spec.signerName: Invalid value: \"noslash\": must be a fully qualified domain and path of the form 'example.com/signer-name'".to_string()), "{f:?}");
        assert!(f.contains(&"spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 600 seconds (10 minutes)".to_string()), "{f:?}");

        let mut v = csr(&pem, "", &[]);
        v["spec"].as_object_mut().unwrap().remove("usages");
        let f = fields(&validate_create(&v));
        assert!(f.contains(&"spec.usages: Required value".to_string()));
        assert!(f.contains(&"spec.signerName: Required value".to_string()));
        let f = fields(&validate_create(&csr(&pem, LEGACY_UNKNOWN, &["any"])));
        assert_eq!(f, vec!["spec.signerName: Invalid value: \"kubernetes.io/legacy-unknown\": the legacy signerName is not allowed via this API version"]);
        let f = fields(&validate_create(&csr(&pem, "localhost/x", &["any"])));
        assert_eq!(f, vec!["spec.signerName: Invalid value: \"localhost\": should be a domain with at least two segments separated by dots"]);
        assert!(validate_signer_name("s", "Example.com/x").len() == 1);
        assert!(validate_signer_name("s", "example.com/a.b-c").is_empty());
    }

    #[test]
    fn approval_and_status_updates() {
        let pem = csr_pem("u", &[], &[]);
        let old = csr(&pem, "example.com/x", &["client auth"]);
        // approval: conditions only, timestamps filled
        let mut new = old.clone();
        new["spec"]["signerName"] = json!("example.com/other");
        new["status"] = json!({"conditions": [{"type": "Approved", "status": "True", "reason": "R", "lastTransitionTime": null}],
                               "certificate": b64(b"x")});
        prepare_update(Some("approval"), &mut new, &old);
        assert_eq!(new["spec"]["signerName"], "example.com/x");
        assert!(new["status"].get("certificate").is_none());
        let c = &new["status"]["conditions"][0];
        assert!(c["lastUpdateTime"].is_string() && c["lastTransitionTime"].is_string());
        assert!(validate_update(Some("approval"), &new, &old).is_empty());
        // the same change through the main resource or /status is forbidden
        let f = fields(&validate_update(Some("status"), &new, &old));
        assert_eq!(f, vec!["status.conditions: Forbidden: updates may not add a condition of type \"Approved\""]);
        // approved and denied are exclusive; an approval is never removed
        let mut both = new.clone();
        both["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "Denied", "status": "True"}));
        let f = fields(&validate_update(Some("approval"), &both, &new));
        assert_eq!(f, vec!["status.conditions[1].type: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive"]);
        let mut removed = new.clone();
        removed["status"]["conditions"] = json!([]);
        let f = fields(&validate_update(Some("approval"), &removed, &new));
        assert_eq!(f, vec!["status.conditions: Forbidden: updates may not remove a condition of type \"Approved\""]);
        let mut bad_status = old.clone();
        bad_status["status"] =
            json!({"conditions": [{"type": "Failed", "status": "False"}, {"type": ""}]});
        let f = fields(&validate_update(Some("status"), &bad_status, &old));
        assert!(f.contains(&"status.conditions[0].status: Unsupported value: \"False\": supported values: \"True\"".to_string()), "{f:?}");
        assert!(
            f.contains(&"status.conditions[1].type: Required value".to_string()),
            "{f:?}"
        );
        assert!(
            f.contains(&"status.conditions[1].status: Required value".to_string()),
            "{f:?}"
        );

        // /status: the certificate may be set once, as PEM CERTIFICATE blocks
        let ca = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        let mut signed = new.clone();
        signed["status"]["certificate"] = json!(b64(ca.as_bytes()));
        let mut prepared = signed.clone();
        prepared["status"]["conditions"][0]["reason"] = json!("changed");
        prepare_update(Some("status"), &mut prepared, &new);
        assert_eq!(
            prepared["status"]["conditions"][0]["reason"], "R",
            "approval kept"
        );
        assert!(validate_update(Some("status"), &prepared, &new).is_empty());
        let f = fields(&validate_update(None, &signed, &new));
        assert_eq!(
            f,
            vec!["status.certificate: Forbidden: updates may not set certificate content"]
        );
        let mut again = signed.clone();
        let other = rcgen::CertificateParams::new(vec!["y".to_string()])
            .unwrap()
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        again["status"]["certificate"] = json!(b64(other.as_bytes()));
        let f = fields(&validate_update(Some("status"), &again, &signed));
        assert_eq!(
            f,
            vec!["status.certificate: Forbidden: updates may not modify existing certificate content"]
        );
        let mut not_cert = new.clone();
        not_cert["status"]["certificate"] = json!(b64(pem.as_bytes()));
        let f = fields(&validate_update(Some("status"), &not_cert, &new));
        assert_eq!(f, vec!["status.certificate: Invalid value: \"<certificate data>\": only CERTIFICATE PEM blocks are allowed, found \"CERTIFICATE REQUEST\""]);

        // the main resource keeps spec and status
        let mut main = signed.clone();
        main["spec"]["usages"] = json!(["server auth"]);
        main["metadata"]["labels"] = json!({"a": "b"});
        prepare_update(None, &mut main, &new);
        assert_eq!(main["spec"], new["spec"]);
        assert_eq!(main["status"], new["status"]);
        assert_eq!(main["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn table_cells() {
        let mut v = json!({"spec": {}});
        assert_eq!(condition_text(&v), "Pending");
        assert_eq!(requested_duration(&v), "<none>");
        v["spec"]["expirationSeconds"] = json!(3600);
        assert_eq!(requested_duration(&v), "60m");
        v["status"] = json!({"conditions": [{"type": "Approved"}], "certificate": "eA=="});
        assert_eq!(condition_text(&v), "Approved,Issued");
        v["status"] =
            json!({"conditions": [{"type": "Approved"}, {"type": "Denied"}, {"type": "Failed"}]});
        assert_eq!(condition_text(&v), "Denied,Failed");
    }

    #[test]
    fn go_renderings() {
        assert_eq!(go_bytes(None), "[]byte(nil)");
        assert_eq!(go_bytes(Some(b"-A\n")), "[]byte{0x2d, 0x41, 0xa}");
        assert_eq!(
            bytes_at(&json!({"r": "a!=="}), "/r").unwrap_err(),
            "illegal base64 data at input byte 1"
        );
    }
}
