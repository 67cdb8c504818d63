//! validation with upstream's rules and messages, as 422 Invalid causes
//!
//! Objects arrive as the JSON a client sent (after defaulting). Every check
//! here mirrors a rule of the upstream apiserver and reports it the way
//! upstream's `field.Error` does: a cause type, a field path and the error
//! body ("Required value", "Invalid value: \"x\": detail", ...).

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// upstream's cause type: "FieldValueRequired", "FieldValueInvalid", "FieldValueNotSupported",
    /// "FieldValueDuplicate", "FieldValueForbidden", "FieldValueTooLong", "FieldValueNotFound", ...
    pub reason: &'static str,
    /// e.g. "metadata.name", "spec.containers[0].image"
    pub field: String,
    /// upstream's per-cause text (field.Error.ErrorBody), e.g. "Required value"
    pub message: String,
}

// ---------------------------------------------------------------------------
// error constructors (upstream's field.Required / Invalid / ... ErrorBody)
// ---------------------------------------------------------------------------

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

fn required(field: impl Into<String>, detail: &str) -> FieldError {
    FieldError {
        reason: "FieldValueRequired",
        field: field.into(),
        message: with_detail("Required value".to_string(), detail),
    }
}

fn forbidden(field: impl Into<String>, detail: &str) -> FieldError {
    FieldError {
        reason: "FieldValueForbidden",
        field: field.into(),
        message: with_detail("Forbidden".to_string(), detail),
    }
}

fn too_long(field: impl Into<String>, max: usize) -> FieldError {
    FieldError {
        reason: "FieldValueTooLong",
        field: field.into(),
        message: format!("Too long: must have at most {max} bytes"),
    }
}

/// Invalid value with an already rendered bad value (as Go would print it).
fn invalid_raw(field: impl Into<String>, rendered: &str, detail: &str) -> FieldError {
    FieldError {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: with_detail(format!("Invalid value: {rendered}"), detail),
    }
}

fn invalid(field: impl Into<String>, value: &str, detail: &str) -> FieldError {
    invalid_raw(field, &go_quote(value), detail)
}

fn invalid_int(field: impl Into<String>, value: i64, detail: &str) -> FieldError {
    invalid_raw(field, &value.to_string(), detail)
}

/// Invalid value for an arbitrary JSON value, printed like Go prints the typed field.
fn invalid_json(field: impl Into<String>, value: &Value, detail: &str) -> FieldError {
    invalid_raw(field, &render(value), detail)
}

fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> FieldError {
    let detail = if supported.is_empty() {
        String::new()
    } else {
        format!(
            "supported values: {}",
            supported
                .iter()
                .map(|v| go_quote(v))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    FieldError {
        reason: "FieldValueNotSupported",
        field: field.into(),
        message: with_detail(format!("Unsupported value: {}", go_quote(value)), &detail),
    }
}

fn duplicate(field: impl Into<String>, value: &str) -> FieldError {
    FieldError {
        reason: "FieldValueDuplicate",
        field: field.into(),
        message: format!("Duplicate value: {}", go_quote(value)),
    }
}

fn duplicate_raw(field: impl Into<String>, rendered: &str) -> FieldError {
    FieldError {
        reason: "FieldValueDuplicate",
        field: field.into(),
        message: format!("Duplicate value: {rendered}"),
    }
}

fn not_found(field: impl Into<String>, value: &str) -> FieldError {
    FieldError {
        reason: "FieldValueNotFound",
        field: field.into(),
        message: format!("Not found: {}", go_quote(value)),
    }
}

/// Go's `%q` for a string.
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
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                let n = c as u32;
                if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Render a JSON value roughly as Go's `%v`/`%#v` would print the typed field.
fn render(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => go_quote(s),
        Value::Array(_) | Value::Object(_) => v.to_string(),
    }
}

/// `map[string]string{"a":"b", "c":"d"}` as Go's `%#v` prints a label map (keys sorted).
fn render_string_map(m: Option<&Map<String, Value>>) -> String {
    let Some(m) = m else {
        return "map[string]string(nil)".to_string();
    };
    let mut pairs: Vec<(&String, String)> = m
        .iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
        .collect();
    pairs.sort();
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
        .collect();
    format!("map[string]string{{{}}}", body.join(", "))
}

// ---------------------------------------------------------------------------
// JSON access helpers
// ---------------------------------------------------------------------------

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn obj<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn int(v: &Value, key: &str) -> Option<i64> {
    let x = v.get(key)?;
    x.as_i64().or_else(|| x.as_f64().map(|f| f as i64))
}

fn is_set(v: &Value, key: &str) -> bool {
    !matches!(v.get(key), None | Some(Value::Null))
}

fn join(base: &str, child: &str) -> String {
    if base.is_empty() {
        child.to_string()
    } else {
        format!("{base}.{child}")
    }
}

fn idx(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

fn key_path(base: &str, k: &str) -> String {
    format!("{base}[{k}]")
}

// ---------------------------------------------------------------------------
// name and string formats (apimachinery/pkg/util/validation)
// ---------------------------------------------------------------------------

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QNAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QNAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const CONFIG_KEY_MSG: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(e);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn match_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            is_lower_alnum(f)
                && is_lower_alnum(l)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

fn match_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(match_dns1123_label)
}

fn match_dns1035_label(s: &str) -> bool {
    match_dns1123_label(s) && s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
}

fn match_qname(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
        }
        _ => false,
    }
}

pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !match_dns1123_label(s) {
        if match_dns1123_subdomain(s) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !match_dns1123_subdomain(s) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

pub fn dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !match_dns1035_label(s) {
        errs.push(regex_error(
            DNS1035_LABEL_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

pub fn qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for m in dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {m}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QNAME_MSG, QNAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !match_qname(name) {
        errs.push(format!(
            "name part {}",
            regex_error(QNAME_MSG, QNAME_FMT, &["MyName", "my.name", "123-abc"])
        ));
    }
    errs
}

pub fn label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !s.is_empty() && !match_qname(s) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

fn config_map_key(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    let ok = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    if !ok {
        errs.push(regex_error(
            CONFIG_KEY_MSG,
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    errs.extend(chdir_prefix(s));
    errs
}

fn chdir_prefix(s: &str) -> Vec<String> {
    if s == "." {
        vec!["must not be '.'".to_string()]
    } else if s == ".." {
        vec!["must not be '..'".to_string()]
    } else if s.starts_with("..") {
        vec!["must not start with '..'".to_string()]
    } else {
        Vec::new()
    }
}

/// path.IsValidPathSegmentName (used for RBAC names).
fn path_segment_name(s: &str, prefix: bool) -> Vec<String> {
    let mut errs = Vec::new();
    if !prefix && (s == "." || s == "..") {
        errs.push(format!("may not be '{s}'"));
    }
    if s.contains('/') {
        errs.push("may not contain '/'".to_string());
    }
    if s.contains('%') {
        errs.push("may not contain '%'".to_string());
    }
    errs
}

/// For generateName prefixes upstream replaces one trailing '-' so that the
/// prefix itself can be validated as a name.
fn mask_trailing_dash(s: &str) -> String {
    if s.len() > 1 && s.ends_with('-') {
        format!("{}a", &s[..s.len() - 1])
    } else {
        s.to_string()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum NameRule {
    /// any name (CertificateSigningRequest: "We don't care what you call your certificate requests")
    Any,
    Subdomain,
    Label,
    Dns1035,
    PathSegment,
}

fn check_name(rule: NameRule, name: &str, prefix: bool) -> Vec<String> {
    let n = if prefix && rule != NameRule::PathSegment {
        mask_trailing_dash(name)
    } else {
        name.to_string()
    };
    match rule {
        NameRule::Subdomain => dns1123_subdomain(&n),
        NameRule::Label => dns1123_label(&n),
        NameRule::Dns1035 => dns1035_label(&n),
        NameRule::PathSegment => path_segment_name(&n, prefix),
        NameRule::Any => Vec::new(),
    }
}

fn name_rule(kind: &str) -> NameRule {
    match kind {
        "Namespace" | "StatefulSet" => NameRule::Label,
        "Service" => NameRule::Dns1035,
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => NameRule::PathSegment,
        "CertificateSigningRequest" => NameRule::Any,
        _ => NameRule::Subdomain,
    }
}

// ---------------------------------------------------------------------------
// ObjectMeta
// ---------------------------------------------------------------------------

const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

fn validate_labels(labels: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    let Some(m) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in m {
        for msg in qualified_name(k) {
            errs.push(invalid(field, k, &msg));
        }
        let val = v.as_str().unwrap_or_default();
        for msg in label_value(val) {
            errs.push(invalid(field, val, &msg));
        }
    }
}

fn validate_annotations(ann: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    let Some(m) = ann.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0usize;
    for (k, v) in m {
        for msg in qualified_name(&k.to_lowercase()) {
            errs.push(invalid(field, k, &msg));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE {
        errs.push(too_long(field, TOTAL_ANNOTATION_SIZE));
    }
}

/// apiVersion "group/version" or "version" → (group, version); malformed → empty.
fn parse_group_version(av: &str) -> (&str, &str) {
    match av.split('/').collect::<Vec<_>>().as_slice() {
        [v] => ("", v),
        [g, v] => (g, v),
        _ => ("", ""),
    }
}

fn validate_owner_references(refs: &[Value], field: &str, errs: &mut Vec<FieldError>) {
    let mut controllers: Vec<String> = Vec::new();
    for r in refs {
        let av = s(r, "apiVersion");
        let (_, version) = parse_group_version(av);
        if version.is_empty() {
            errs.push(invalid(
                join(field, "apiVersion"),
                av,
                "version must not be empty",
            ));
        }
        if s(r, "kind").is_empty() {
            errs.push(invalid(
                join(field, "kind"),
                s(r, "kind"),
                "must not be empty",
            ));
        }
        if s(r, "name").is_empty() {
            errs.push(invalid(
                join(field, "name"),
                s(r, "name"),
                "must not be empty",
            ));
        }
        if s(r, "uid").is_empty() {
            errs.push(invalid(
                join(field, "uid"),
                s(r, "uid"),
                "must not be empty",
            ));
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            controllers.push(format!("{}/{}", s(r, "kind"), s(r, "name")));
        }
    }
    if controllers.len() > 1 {
        errs.push(invalid_raw(
            field,
            &render(&Value::Array(refs.to_vec())),
            &format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        ));
    }
}

fn validate_finalizers(fins: &[Value], field: &str, errs: &mut Vec<FieldError>) {
    let names: Vec<&str> = fins.iter().filter_map(Value::as_str).collect();
    for f in &names {
        for msg in qualified_name(f) {
            errs.push(invalid(field, f, &msg));
        }
    }
    if names.contains(&"orphan") && names.contains(&"foregroundDeletion") {
        let rendered = format!(
            "[]string{{{}}}",
            names
                .iter()
                .map(|n| go_quote(n))
                .collect::<Vec<_>>()
                .join(", ")
        );
        errs.push(invalid_raw(
            field,
            &rendered,
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

/// ObjectMeta checks of an object (or a template's metadata at `field`).
fn validate_meta(
    meta: &Value,
    rule: NameRule,
    namespaced: bool,
    field: &str,
    errs: &mut Vec<FieldError>,
) {
    let gen_name = s(meta, "generateName");
    if !gen_name.is_empty() {
        for msg in check_name(rule, gen_name, true) {
            errs.push(invalid(join(field, "generateName"), gen_name, &msg));
        }
    }
    let name = s(meta, "name");
    if name.is_empty() {
        if gen_name.is_empty() {
            errs.push(required(
                join(field, "name"),
                "name or generateName is required",
            ));
        }
    } else {
        for msg in check_name(rule, name, false) {
            errs.push(invalid(join(field, "name"), name, &msg));
        }
    }
    let ns = s(meta, "namespace");
    if namespaced {
        if ns.is_empty() {
            errs.push(required(join(field, "namespace"), ""));
        } else {
            for msg in dns1123_label(ns) {
                errs.push(invalid(join(field, "namespace"), ns, &msg));
            }
        }
    } else if !ns.is_empty() {
        errs.push(forbidden(
            join(field, "namespace"),
            "not allowed on this type",
        ));
    }
    validate_common_meta(meta, field, errs);
}

/// The parts of ObjectMeta checked for every object, including templates.
fn validate_common_meta(meta: &Value, field: &str, errs: &mut Vec<FieldError>) {
    if let Some(g) = int(meta, "generation") {
        if g < 0 {
            errs.push(invalid_int(
                join(field, "generation"),
                g,
                "must be greater than or equal to 0",
            ));
        }
    }
    validate_labels(meta.get("labels"), &join(field, "labels"), errs);
    validate_annotations(meta.get("annotations"), &join(field, "annotations"), errs);
    validate_owner_references(
        arr(meta, "ownerReferences"),
        &join(field, "ownerReferences"),
        errs,
    );
    validate_finalizers(arr(meta, "finalizers"), &join(field, "finalizers"), errs);
}

// ---------------------------------------------------------------------------
// quantities (resource.Quantity: parse, compare, canonical String())
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum QFormat {
    DecimalSI,
    BinarySI,
    DecimalExponent,
}

/// A parsed quantity: |value| = nanos * 1e-9 (rounded up to a nano, as upstream does).
#[derive(Clone, Copy, Debug)]
struct Quantity {
    neg: bool,
    nanos: u128,
    format: QFormat,
}

const QUANTITY_ERR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

fn pow10(e: u32) -> Option<u128> {
    10u128.checked_pow(e)
}

fn parse_quantity(input: &str) -> Option<Quantity> {
    let s = input.trim();
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(num_end);
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return None;
    }
    // (format, base-2 exponent, base-10 exponent)
    let (format, exp2, exp10): (QFormat, u32, i32) = match suffix {
        "" => (QFormat::DecimalSI, 0, 0),
        "Ki" => (QFormat::BinarySI, 10, 0),
        "Mi" => (QFormat::BinarySI, 20, 0),
        "Gi" => (QFormat::BinarySI, 30, 0),
        "Ti" => (QFormat::BinarySI, 40, 0),
        "Pi" => (QFormat::BinarySI, 50, 0),
        "Ei" => (QFormat::BinarySI, 60, 0),
        "n" => (QFormat::DecimalSI, 0, -9),
        "u" => (QFormat::DecimalSI, 0, -6),
        "m" => (QFormat::DecimalSI, 0, -3),
        "k" => (QFormat::DecimalSI, 0, 3),
        "M" => (QFormat::DecimalSI, 0, 6),
        "G" => (QFormat::DecimalSI, 0, 9),
        "T" => (QFormat::DecimalSI, 0, 12),
        "P" => (QFormat::DecimalSI, 0, 15),
        "E" => (QFormat::DecimalSI, 0, 18),
        other => {
            let e = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))?;
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let v: i32 = e.parse().ok()?;
            (QFormat::DecimalExponent, 0, v)
        }
    };
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().unwrap_or(u128::MAX)
    };
    // value = mantissa * 2^exp2 * 10^(exp10 - frac_len); in nanos: * 10^9
    let scale = exp10 - frac_part.len() as i32 + 9;
    let with_bin = mantissa.saturating_mul(1u128 << exp2);
    let nanos = if scale >= 0 {
        pow10(scale as u32)
            .and_then(|p| with_bin.checked_mul(p))
            .unwrap_or(u128::MAX)
    } else {
        match pow10((-scale) as u32) {
            Some(p) => with_bin / p + u128::from(with_bin % p != 0),
            None => u128::from(with_bin != 0),
        }
    };
    Some(Quantity {
        neg: neg && nanos != 0,
        nanos,
        format,
    })
}

impl Quantity {
    fn cmp(&self, other: &Quantity) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self.neg, other.neg) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.nanos.cmp(&other.nanos),
            (true, true) => other.nanos.cmp(&self.nanos),
        }
    }

    fn is_negative(&self) -> bool {
        self.neg && self.nanos > 0
    }

    /// Upstream's canonical form (Quantity.String()).
    fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".to_string();
        }
        let sign = if self.neg { "-" } else { "" };
        let mut format = self.format;
        if format == QFormat::BinarySI {
            let exact_int = self.nanos % 1_000_000_000 == 0;
            if self.nanos < 1024 * 1_000_000_000 || !exact_int {
                format = QFormat::DecimalSI;
            }
        }
        if format == QFormat::BinarySI {
            let mut m = self.nanos / 1_000_000_000;
            let mut e = 0;
            while m % 1024 == 0 && e < 60 {
                m /= 1024;
                e += 10;
            }
            let suffix = match e {
                10 => "Ki",
                20 => "Mi",
                30 => "Gi",
                40 => "Ti",
                50 => "Pi",
                60 => "Ei",
                _ => "",
            };
            return format!("{sign}{m}{suffix}");
        }
        let mut m = self.nanos;
        let mut e: i32 = -9;
        while m % 10 == 0 {
            m /= 10;
            e += 1;
        }
        match e.rem_euclid(3) {
            1 => {
                m *= 10;
                e -= 1;
            }
            2 => {
                m *= 100;
                e -= 2;
            }
            _ => {}
        }
        let suffix = if format == QFormat::DecimalExponent {
            if e == 0 {
                String::new()
            } else {
                format!("e{e}")
            }
        } else {
            match e {
                0 => String::new(),
                -9 => "n".into(),
                -6 => "u".into(),
                -3 => "m".into(),
                3 => "k".into(),
                6 => "M".into(),
                9 => "G".into(),
                12 => "T".into(),
                15 => "P".into(),
                18 => "E".into(),
                e => format!("e{e}"),
            }
        };
        format!("{sign}{m}{suffix}")
    }
}

/// A quantity field of the JSON (string or number).
fn quantity_of(v: &Value) -> Option<Quantity> {
    match v {
        Value::String(s) => parse_quantity(s),
        Value::Number(n) => parse_quantity(&n.to_string()),
        _ => None,
    }
}

fn quantity_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// resource names
// ---------------------------------------------------------------------------

fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

fn is_overcommit_allowed(name: &str) -> bool {
    is_native_resource(name) && !is_hugepages(name)
}

fn is_standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || is_hugepages(name)
}

fn is_standard_resource(name: &str) -> bool {
    is_standard_container_resource(name)
        || matches!(
            name,
            "storage"
                | "pods"
                | "services"
                | "replicationcontrollers"
                | "resourcequotas"
                | "secrets"
                | "configmaps"
                | "persistentvolumeclaims"
                | "services.nodeports"
                | "services.loadbalancers"
                | "requests.cpu"
                | "requests.memory"
                | "requests.storage"
                | "requests.ephemeral-storage"
                | "limits.cpu"
                | "limits.memory"
                | "limits.ephemeral-storage"
        )
        || name.starts_with("requests.hugepages-")
}

fn is_extended_resource(name: &str) -> bool {
    if is_native_resource(name) || name.starts_with("requests.") {
        return false;
    }
    qualified_name(&format!("requests.{name}")).is_empty()
}

fn validate_container_resource_name(name: &str, field: &str, errs: &mut Vec<FieldError>) {
    let qn = qualified_name(name);
    if !qn.is_empty() {
        for m in qn {
            errs.push(invalid(field, name, &m));
        }
    } else if !name.contains('/') && !is_standard_resource(name) {
        errs.push(invalid(
            field,
            name,
            "must be a standard resource type or fully qualified",
        ));
    }
    if !name.contains('/') {
        if !is_standard_container_resource(name) {
            errs.push(invalid(
                field,
                name,
                "must be a standard resource for containers",
            ));
        }
    } else if !is_native_resource(name) && !is_extended_resource(name) {
        errs.push(invalid(
            field,
            name,
            "doesn't follow extended resource name standard",
        ));
    }
}

fn validate_resources(res: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let lim_path = join(field, "limits");
    let req_path = join(field, "requests");
    let limits = obj(res, "limits");
    let mut parsed_limits: Vec<(&str, Quantity)> = Vec::new();
    if let Some(l) = limits {
        for (name, v) in l {
            let p = key_path(&lim_path, name);
            validate_container_resource_name(name, &p, errs);
            match quantity_of(v) {
                None => errs.push(invalid(&p, &quantity_text(v), QUANTITY_ERR)),
                Some(q) => {
                    if q.is_negative() {
                        errs.push(invalid(
                            &p,
                            &q.canonical(),
                            "must be greater than or equal to 0",
                        ));
                    }
                    if !is_native_resource(name) && q.nanos % 1_000_000_000 != 0 {
                        errs.push(invalid_raw(&p, &q.canonical(), "must be an integer"));
                    }
                    parsed_limits.push((name.as_str(), q));
                }
            }
        }
    }
    if let Some(r) = obj(res, "requests") {
        for (name, v) in r {
            let p = key_path(&req_path, name);
            validate_container_resource_name(name, &p, errs);
            let Some(q) = quantity_of(v) else {
                errs.push(invalid(&p, &quantity_text(v), QUANTITY_ERR));
                continue;
            };
            if q.is_negative() {
                errs.push(invalid(
                    &p,
                    &q.canonical(),
                    "must be greater than or equal to 0",
                ));
            }
            if !is_native_resource(name) && q.nanos % 1_000_000_000 != 0 {
                errs.push(invalid_raw(&p, &q.canonical(), "must be an integer"));
            }
            match parsed_limits.iter().find(|(n, _)| *n == name) {
                Some((_, lim)) => {
                    let ord = q.cmp(lim);
                    if ord != std::cmp::Ordering::Equal && !is_overcommit_allowed(name) {
                        errs.push(invalid(
                            &req_path,
                            &q.canonical(),
                            &format!("must be equal to {name} limit of {}", lim.canonical()),
                        ));
                    } else if ord == std::cmp::Ordering::Greater {
                        errs.push(invalid(
                            &req_path,
                            &q.canonical(),
                            &format!(
                                "must be less than or equal to {name} limit of {}",
                                lim.canonical()
                            ),
                        ));
                    }
                }
                None => {
                    let has_limit = limits.is_some_and(|l| l.contains_key(name));
                    if !has_limit && !is_overcommit_allowed(name) {
                        errs.push(required(
                            &lim_path,
                            "Limit must be set for non overcommitable resources",
                        ));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// pod spec
// ---------------------------------------------------------------------------

const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";
const NONNEG_MSG: &str = "must be greater than or equal to 0";
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn valid_port_num(p: i64) -> bool {
    (1..=65535).contains(&p)
}

/// IsValidPortName (IANA_SVC_NAME).
fn port_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push(max_len_error(15));
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// IsRelaxedEnvVarName (the rule since RelaxedEnvironmentVariableValidation).
fn env_var_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.is_empty() {
        errs.push("environment variable name must be non-empty".to_string());
    }
    if s.chars().any(|c| !(' '..='~').contains(&c) || c == '=') {
        errs.push("a valid environment variable name must consist only of printable ASCII characters other than '='".to_string());
    }
    errs
}

fn dns_label_errs(value: &str, field: &str, errs: &mut Vec<FieldError>) {
    for m in dns1123_label(value) {
        errs.push(invalid(field, value, &m));
    }
}

fn nonneg(v: &Value, key: &str, base: &str, errs: &mut Vec<FieldError>) {
    if let Some(n) = int(v, key) {
        if n < 0 {
            errs.push(invalid_int(join(base, key), n, NONNEG_MSG));
        }
    }
}

fn validate_key_selector(sel: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let name = s(sel, "name");
    for m in dns1123_subdomain(name) {
        errs.push(invalid(join(field, "name"), name, &m));
    }
    let key = s(sel, "key");
    if key.is_empty() {
        errs.push(required(join(field, "key"), ""));
    } else {
        for m in config_map_key(key) {
            errs.push(invalid(join(field, "key"), key, &m));
        }
    }
}

const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

fn validate_field_ref(fr: &Value, field: &str, errs: &mut Vec<FieldError>) {
    if s(fr, "apiVersion").is_empty() {
        errs.push(required(join(field, "apiVersion"), ""));
        return;
    }
    let fp = s(fr, "fieldPath");
    if fp.is_empty() {
        errs.push(required(join(field, "fieldPath"), ""));
        return;
    }
    // metadata.labels['key'] / metadata.annotations['key']
    if let Some((base, rest)) = fp.split_once('[') {
        if matches!(base, "metadata.labels" | "metadata.annotations") {
            let key = rest.strip_suffix("']").and_then(|r| r.strip_prefix('\''));
            match key {
                Some(k) => {
                    let msgs = if base == "metadata.labels" {
                        qualified_name(k)
                    } else {
                        qualified_name(&k.to_lowercase())
                    };
                    for m in msgs {
                        errs.push(invalid(join(field, "fieldPath"), k, &m));
                    }
                }
                None => errs.push(invalid(
                    join(field, "fieldPath"),
                    fp,
                    "error converting fieldPath: field label not supported",
                )),
            }
            return;
        }
    }
    if !ENV_FIELD_PATHS.contains(&fp) {
        errs.push(not_supported(join(field, "fieldPath"), fp, ENV_FIELD_PATHS));
    }
}

fn validate_env(env: &[Value], field: &str, errs: &mut Vec<FieldError>) {
    for (i, ev) in env.iter().enumerate() {
        let p = idx(field, i);
        let name = s(ev, "name");
        if name.is_empty() {
            errs.push(required(join(&p, "name"), ""));
        } else {
            for m in env_var_name(name) {
                errs.push(invalid(join(&p, "name"), name, &m));
            }
        }
        let Some(vf) = ev.get("valueFrom").filter(|v| v.is_object()) else {
            continue;
        };
        let vp = join(&p, "valueFrom");
        let mut sources = 0;
        if let Some(fr) = vf.get("fieldRef").filter(|v| v.is_object()) {
            sources += 1;
            validate_field_ref(fr, &join(&vp, "fieldRef"), errs);
        }
        if let Some(rf) = vf.get("resourceFieldRef").filter(|v| v.is_object()) {
            sources += 1;
            if s(rf, "resource").is_empty() {
                errs.push(required(
                    join(&join(&vp, "resourceFieldRef"), "resource"),
                    "",
                ));
            }
        }
        if let Some(c) = vf.get("configMapKeyRef").filter(|v| v.is_object()) {
            sources += 1;
            validate_key_selector(c, &join(&vp, "configMapKeyRef"), errs);
        }
        if let Some(c) = vf.get("secretKeyRef").filter(|v| v.is_object()) {
            sources += 1;
            validate_key_selector(c, &join(&vp, "secretKeyRef"), errs);
        }
        if let Some(c) = vf.get("fileKeyRef").filter(|v| v.is_object()) {
            sources += 1;
            if s(c, "path").is_empty() {
                errs.push(required(join(&join(&vp, "fileKeyRef"), "path"), ""));
            }
            if s(c, "key").is_empty() {
                errs.push(required(join(&join(&vp, "fileKeyRef"), "key"), ""));
            }
        }
        if sources == 0 {
            errs.push(invalid(
                &vp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !s(ev, "value").is_empty() {
            errs.push(invalid(
                &vp,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if sources > 1 {
            errs.push(invalid(
                &vp,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
}

fn validate_env_from(env_from: &[Value], field: &str, errs: &mut Vec<FieldError>) {
    for (i, ef) in env_from.iter().enumerate() {
        let p = idx(field, i);
        let prefix = s(ef, "prefix");
        if !prefix.is_empty() {
            for m in env_var_name(prefix) {
                errs.push(invalid(join(&p, "prefix"), prefix, &m));
            }
        }
        let mut sources = 0;
        for key in ["configMapRef", "secretRef"] {
            if let Some(r) = ef.get(key).filter(|v| v.is_object()) {
                sources += 1;
                let name = s(r, "name");
                for m in dns1123_subdomain(name) {
                    errs.push(invalid(join(&join(&p, key), "name"), name, &m));
                }
            }
        }
        if sources == 0 {
            errs.push(invalid(
                &p,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if sources > 1 {
            errs.push(invalid(
                &p,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
}

fn validate_volume_mounts(
    mounts: &[Value],
    devices: &[Value],
    volumes: &[String],
    field: &str,
    errs: &mut Vec<FieldError>,
) {
    let mut paths: Vec<&str> = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let p = idx(field, i);
        let name = s(m, "name");
        if name.is_empty() {
            errs.push(required(join(&p, "name"), ""));
        }
        if !volumes.iter().any(|v| v == name) {
            errs.push(not_found(join(&p, "name"), name));
        }
        let path = s(m, "mountPath");
        if path.is_empty() {
            errs.push(required(join(&p, "mountPath"), ""));
        }
        if paths.contains(&path) {
            errs.push(invalid(join(&p, "mountPath"), path, "must be unique"));
        }
        paths.push(path);
        if devices.iter().any(|d| s(d, "name") == name) {
            errs.push(invalid(
                join(&p, "name"),
                name,
                "must not already exist in volumeDevices",
            ));
        }
        if devices.iter().any(|d| s(d, "devicePath") == path) {
            errs.push(invalid(
                join(&p, "mountPath"),
                path,
                "must not already exist as a path in volumeDevices",
            ));
        }
        let sub = s(m, "subPath");
        if !sub.is_empty() {
            validate_local_descending_path(sub, &join(field, "subPath"), errs);
        }
        if let Some(mp) = m.get("mountPropagation").and_then(Value::as_str) {
            let ok = ["Bidirectional", "HostToContainer", "None"];
            if !ok.contains(&mp) {
                errs.push(not_supported(join(&p, "mountPropagation"), mp, &ok));
            }
        }
    }
}

fn validate_local_descending_path(path: &str, field: &str, errs: &mut Vec<FieldError>) {
    if path.starts_with('/') {
        errs.push(invalid(field, path, "must be a relative path"));
    }
    if path.split(['/', '\\']).any(|seg| seg == "..") {
        errs.push(invalid(field, path, "must not contain '..'"));
    }
}

#[derive(Clone, Copy, PartialEq)]
enum CtrKind {
    Regular,
    Init,
    Ephemeral,
}

fn validate_probe(pr: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let handlers = ["exec", "httpGet", "tcpSocket", "grpc"];
    let n = handlers.iter().filter(|h| is_set(pr, h)).count();
    if n == 0 {
        errs.push(required(field, "must specify a handler type"));
    } else if n > 1 {
        let extra = handlers
            .iter()
            .filter(|h| is_set(pr, h))
            .nth(1)
            .copied()
            .unwrap_or("");
        errs.push(forbidden(
            join(field, extra),
            "may not specify more than 1 handler type",
        ));
    }
    for key in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        nonneg(pr, key, field, errs);
    }
    if let Some(g) = int(pr, "terminationGracePeriodSeconds") {
        if g <= 0 {
            errs.push(invalid_int(
                join(field, "terminationGracePeriodSeconds"),
                g,
                "must be greater than 0",
            ));
        }
    }
    if let Some(h) = pr.get("httpGet").filter(|v| v.is_object()) {
        validate_port_ref(h.get("port"), &join(&join(field, "httpGet"), "port"), errs);
        if let Some(scheme) = h.get("scheme").and_then(Value::as_str) {
            if !["HTTP", "HTTPS"].contains(&scheme) {
                errs.push(not_supported(
                    join(&join(field, "httpGet"), "scheme"),
                    scheme,
                    &["HTTP", "HTTPS"],
                ));
            }
        }
    }
    if let Some(t) = pr.get("tcpSocket").filter(|v| v.is_object()) {
        validate_port_ref(
            t.get("port"),
            &join(&join(field, "tcpSocket"), "port"),
            errs,
        );
    }
    if let Some(g) = pr.get("grpc").filter(|v| v.is_object()) {
        if let Some(p) = int(g, "port") {
            if !valid_port_num(p) {
                errs.push(invalid_int(
                    join(&join(field, "grpc"), "port"),
                    p,
                    PORT_RANGE_MSG,
                ));
            }
        }
    }
    if let Some(e) = pr.get("exec").filter(|v| v.is_object()) {
        if arr(e, "command").is_empty() {
            errs.push(required(join(&join(field, "exec"), "command"), ""));
        }
    }
}

/// An IntOrString port (probe/lifecycle handlers, service targetPort).
fn validate_port_ref(port: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    match port {
        Some(Value::Number(n)) => {
            let p = n.as_i64().unwrap_or(0);
            if !valid_port_num(p) {
                errs.push(invalid_int(field, p, PORT_RANGE_MSG));
            }
        }
        Some(Value::String(name)) => {
            for m in port_name(name) {
                errs.push(invalid(field, name, &m));
            }
        }
        // an unset IntOrString is the integer 0
        _ => errs.push(invalid_int(field, 0, PORT_RANGE_MSG)),
    }
}

fn validate_container(
    c: &Value,
    kind: CtrKind,
    volumes: &[String],
    field: &str,
    errs: &mut Vec<FieldError>,
) {
    let name = s(c, "name");
    if name.is_empty() {
        errs.push(required(join(field, "name"), ""));
    } else {
        dns_label_errs(name, &join(field, "name"), errs);
    }
    if s(c, "image").is_empty() {
        errs.push(required(join(field, "image"), ""));
    }
    match c.get("terminationMessagePolicy").and_then(Value::as_str) {
        None | Some("File") | Some("FallbackToLogsOnError") => {}
        Some("") => errs.push(required(join(field, "terminationMessagePolicy"), "")),
        Some(other) => errs.push(not_supported(
            join(field, "terminationMessagePolicy"),
            other,
            &["File", "FallbackToLogsOnError"],
        )),
    }
    // ports
    let ports_path = join(field, "ports");
    let mut port_names: Vec<&str> = Vec::new();
    for (i, p) in arr(c, "ports").iter().enumerate() {
        let pp = idx(&ports_path, i);
        let pname = s(p, "name");
        if !pname.is_empty() {
            let msgs = port_name(pname);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(invalid(join(&pp, "name"), pname, &m));
                }
            } else if port_names.contains(&pname) {
                errs.push(duplicate(join(&pp, "name"), pname));
            } else {
                port_names.push(pname);
            }
        }
        match int(p, "containerPort") {
            None | Some(0) => errs.push(required(join(&pp, "containerPort"), "")),
            Some(n) if !valid_port_num(n) => {
                errs.push(invalid_int(join(&pp, "containerPort"), n, PORT_RANGE_MSG))
            }
            _ => {}
        }
        if let Some(h) = int(p, "hostPort").filter(|h| *h != 0) {
            if !valid_port_num(h) {
                errs.push(invalid_int(join(&pp, "hostPort"), h, PORT_RANGE_MSG));
            }
        }
        match p.get("protocol").and_then(Value::as_str) {
            None => {}
            Some("") => errs.push(required(join(&pp, "protocol"), "")),
            Some(proto) if !PROTOCOLS.contains(&proto) => {
                errs.push(not_supported(join(&pp, "protocol"), proto, PROTOCOLS));
            }
            _ => {}
        }
    }
    validate_env(arr(c, "env"), &join(field, "env"), errs);
    validate_env_from(arr(c, "envFrom"), &join(field, "envFrom"), errs);
    validate_volume_mounts(
        arr(c, "volumeMounts"),
        arr(c, "volumeDevices"),
        volumes,
        &join(field, "volumeMounts"),
        errs,
    );
    match c.get("imagePullPolicy").and_then(Value::as_str) {
        None | Some("Always") | Some("IfNotPresent") | Some("Never") => {}
        Some("") => errs.push(required(join(field, "imagePullPolicy"), "")),
        Some(other) => errs.push(not_supported(
            join(field, "imagePullPolicy"),
            other,
            &["Always", "IfNotPresent", "Never"],
        )),
    }
    if let Some(r) = c.get("resources").filter(|v| v.is_object()) {
        validate_resources(r, &join(field, "resources"), errs);
    }
    let restart = c.get("restartPolicy").and_then(Value::as_str);
    let sidecar = kind == CtrKind::Init && restart == Some("Always");
    match kind {
        CtrKind::Regular => {}
        CtrKind::Init => {
            if let Some(r) = restart {
                if r != "Always" {
                    errs.push(not_supported(join(field, "restartPolicy"), r, &["Always"]));
                }
            }
        }
        CtrKind::Ephemeral => {}
    }
    let probes_allowed = kind == CtrKind::Regular || sidecar;
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(pr) = c.get(probe).filter(|v| v.is_object()) {
            if probes_allowed {
                validate_probe(pr, &join(field, probe), errs);
                if probe == "livenessProbe" || probe == "startupProbe" {
                    if let Some(st) = int(pr, "successThreshold") {
                        if st != 1 {
                            errs.push(invalid_int(
                                join(&join(field, probe), "successThreshold"),
                                st,
                                "must be 1",
                            ));
                        }
                    }
                }
            } else if kind == CtrKind::Init {
                errs.push(forbidden(
                    join(field, probe),
                    "may not be set for init containers without restartPolicy=Always",
                ));
            } else {
                errs.push(forbidden(
                    join(field, probe),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
    }
    if is_set(c, "lifecycle") {
        if kind == CtrKind::Init && !sidecar {
            errs.push(forbidden(
                join(field, "lifecycle"),
                "may not be set for init containers without restartPolicy=Always",
            ));
        } else if kind == CtrKind::Ephemeral {
            errs.push(forbidden(
                join(field, "lifecycle"),
                "cannot be set for an Ephemeral Container",
            ));
        }
    }
    if kind == CtrKind::Ephemeral {
        for key in ["ports", "resources"] {
            let set = match c.get(key) {
                Some(Value::Array(a)) => !a.is_empty(),
                Some(Value::Object(o)) => !o.is_empty(),
                Some(Value::Null) | None => false,
                Some(_) => true,
            };
            if set {
                errs.push(forbidden(
                    join(field, key),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
    }
}

fn validate_volumes(vols: &[Value], field: &str, errs: &mut Vec<FieldError>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (i, v) in vols.iter().enumerate() {
        let p = idx(field, i);
        let mut el = Vec::new();
        let set: Vec<&str> = VOLUME_SOURCES
            .iter()
            .copied()
            .filter(|k| is_set(v, k))
            .collect();
        match set.len() {
            0 => el.push(required(&p, "must specify a volume type")),
            1 => validate_volume_source(set[0], &v[set[0]], &join(&p, set[0]), &mut el),
            _ => el.push(forbidden(
                join(&p, set[1]),
                "may not specify more than 1 volume type",
            )),
        }
        let name = s(v, "name");
        if name.is_empty() {
            el.push(required(join(&p, "name"), ""));
        } else {
            dns_label_errs(name, &join(&p, "name"), &mut el);
        }
        if names.iter().any(|n| n == name) {
            el.push(duplicate(join(&p, "name"), name));
        }
        if el.is_empty() {
            names.push(name.to_string());
        } else {
            errs.extend(el);
        }
    }
    names
}

fn validate_volume_source(kind: &str, src: &Value, field: &str, errs: &mut Vec<FieldError>) {
    match kind {
        "hostPath" => {
            if s(src, "path").is_empty() {
                errs.push(required(join(field, "path"), ""));
            }
            if let Some(t) = src.get("type").and_then(Value::as_str) {
                let ok = [
                    "",
                    "DirectoryOrCreate",
                    "Directory",
                    "FileOrCreate",
                    "File",
                    "Socket",
                    "CharDevice",
                    "BlockDevice",
                ];
                if !ok.contains(&t) {
                    errs.push(not_supported(join(field, "type"), t, &ok));
                }
            }
        }
        "secret" => {
            let name = s(src, "secretName");
            if name.is_empty() {
                errs.push(required(join(field, "secretName"), ""));
            }
            validate_key_to_paths(arr(src, "items"), &join(field, "items"), errs);
        }
        "configMap" => {
            let name = s(src, "name");
            if name.is_empty() {
                errs.push(required(join(field, "name"), ""));
            } else {
                for m in dns1123_subdomain(name) {
                    errs.push(invalid(join(field, "name"), name, &m));
                }
            }
            validate_key_to_paths(arr(src, "items"), &join(field, "items"), errs);
        }
        "persistentVolumeClaim" if s(src, "claimName").is_empty() => {
            errs.push(required(join(field, "claimName"), ""));
        }
        "nfs" => {
            if s(src, "server").is_empty() {
                errs.push(required(join(field, "server"), ""));
            }
            let path = s(src, "path");
            if path.is_empty() {
                errs.push(required(join(field, "path"), ""));
            } else if !path.starts_with('/') {
                errs.push(invalid(
                    join(field, "path"),
                    path,
                    "must be an absolute path",
                ));
            }
        }
        "emptyDir" => {
            if let Some(m) = src.get("medium").and_then(Value::as_str) {
                let ok = ["", "Memory", "HugePages"];
                if !ok.contains(&m) && !m.starts_with("HugePages-") {
                    errs.push(not_supported(join(field, "medium"), m, &ok));
                }
            }
            if let Some(sl) = src.get("sizeLimit").filter(|v| !v.is_null()) {
                match quantity_of(sl) {
                    None => errs.push(invalid(
                        join(field, "sizeLimit"),
                        &quantity_text(sl),
                        QUANTITY_ERR,
                    )),
                    Some(q) if q.is_negative() => {
                        errs.push(forbidden(
                            join(field, "sizeLimit"),
                            "SizeLimit field must be a valid resource quantity",
                        ));
                    }
                    _ => {}
                }
            }
        }
        "csi" if s(src, "driver").is_empty() => {
            errs.push(required(join(field, "driver"), ""));
        }
        "image" if s(src, "reference").is_empty() => {
            errs.push(required(join(field, "reference"), ""));
        }
        _ => {}
    }
}

fn validate_key_to_paths(items: &[Value], field: &str, errs: &mut Vec<FieldError>) {
    for (i, it) in items.iter().enumerate() {
        let p = idx(field, i);
        let key = s(it, "key");
        if key.is_empty() {
            errs.push(required(join(&p, "key"), ""));
        }
        let path = s(it, "path");
        if path.is_empty() {
            errs.push(required(join(&p, "path"), ""));
        } else {
            validate_local_descending_path(path, &join(&p, "path"), errs);
            if path.starts_with("..") {
                errs.push(invalid(join(&p, "path"), path, "must not start with '..'"));
            }
        }
    }
}

fn validate_tolerations(tols: &[Value], field: &str, errs: &mut Vec<FieldError>) {
    for (i, t) in tols.iter().enumerate() {
        let p = idx(field, i);
        let key = s(t, "key");
        if !key.is_empty() {
            for m in qualified_name(key) {
                errs.push(invalid(join(&p, "key"), key, &m));
            }
        }
        let op = s(t, "operator");
        if key.is_empty() && op != "Exists" {
            errs.push(invalid(
                join(&p, "operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if is_set(t, "tolerationSeconds") && s(t, "effect") != "NoExecute" {
            errs.push(invalid(
                join(&p, "effect"),
                s(t, "effect"),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        let value = s(t, "value");
        match op {
            "" | "Equal" => {
                let msgs = label_value(value);
                if !msgs.is_empty() {
                    errs.push(invalid(join(&p, "operator"), value, &msgs.join(";")));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    let seconds = int(t, "tolerationSeconds")
                        .map_or_else(|| "(*int64)(nil)".to_string(), |n| format!("&{n}"));
                    let rendered = format!(
                        "core.Toleration{{Key:{}, Operator:{}, Value:{}, Effect:{}, TolerationSeconds:{seconds}}}",
                        go_quote(key),
                        go_quote(op),
                        go_quote(value),
                        go_quote(s(t, "effect")),
                    );
                    errs.push(invalid_raw(
                        join(&p, "operator"),
                        &rendered,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(not_supported(
                join(&p, "operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        let effect = s(t, "effect");
        if !effect.is_empty() && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
        {
            errs.push(not_supported(
                join(&p, "effect"),
                effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ));
        }
    }
}

/// ValidatePodSpec (plus the pod-only checks when `for_pod`).
fn validate_pod_spec(spec: &Value, field: &str, for_pod: bool, errs: &mut Vec<FieldError>) {
    let vols = validate_volumes(arr(spec, "volumes"), &join(field, "volumes"), errs);
    // containers
    let cpath = join(field, "containers");
    let containers = arr(spec, "containers");
    let mut names: Vec<&str> = Vec::new();
    if containers.is_empty() {
        errs.push(required(&cpath, ""));
    }
    for (i, c) in containers.iter().enumerate() {
        let p = idx(&cpath, i);
        validate_container(c, CtrKind::Regular, &vols, &p, errs);
        if for_pod {
            pod_only_container(c, &p, errs);
        }
        let name = s(c, "name");
        if names.contains(&name) {
            errs.push(duplicate(join(&p, "name"), name));
        } else {
            names.push(name);
        }
        if is_set(c, "restartPolicy") {
            errs.push(forbidden(
                join(&p, "restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    let ipath = join(field, "initContainers");
    for (i, c) in arr(spec, "initContainers").iter().enumerate() {
        let p = idx(&ipath, i);
        validate_container(c, CtrKind::Init, &vols, &p, errs);
        if for_pod {
            pod_only_container(c, &p, errs);
        }
        let name = s(c, "name");
        if names.contains(&name) {
            errs.push(duplicate(join(&p, "name"), name));
        } else {
            names.push(name);
        }
    }
    let epath = join(field, "ephemeralContainers");
    for (i, c) in arr(spec, "ephemeralContainers").iter().enumerate() {
        let p = idx(&epath, i);
        validate_container(c, CtrKind::Ephemeral, &vols, &p, errs);
        pod_only_container(c, &p, errs);
        let name = s(c, "name");
        if names.contains(&name) {
            errs.push(duplicate(join(&p, "name"), name));
        } else {
            names.push(name);
        }
    }
    // host ports: hostNetwork requires hostPort == containerPort, and no clashes
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    let mut host_ports: Vec<String> = Vec::new();
    for (list, path) in [("containers", &cpath), ("initContainers", &ipath)] {
        for (i, c) in arr(spec, list).iter().enumerate() {
            for (j, p) in arr(c, "ports").iter().enumerate() {
                let pp = idx(&join(&idx(path, i), "ports"), j);
                let hp = int(p, "hostPort").unwrap_or(0);
                if host_network && hp != int(p, "containerPort").unwrap_or(0) {
                    errs.push(invalid_int(
                        join(&pp, "hostPort"),
                        hp,
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
                if hp != 0 {
                    let key = format!("{}/{}/{}", s(p, "hostIP"), s(p, "protocol"), hp);
                    if host_ports.contains(&key) {
                        errs.push(duplicate(join(&pp, "hostPort"), &key));
                    } else {
                        host_ports.push(key);
                    }
                }
            }
        }
    }
    match spec.get("restartPolicy").and_then(Value::as_str) {
        None | Some("Always") | Some("OnFailure") | Some("Never") => {}
        Some("") => errs.push(required(join(field, "restartPolicy"), "")),
        Some(other) => errs.push(not_supported(
            join(field, "restartPolicy"),
            other,
            &["Always", "OnFailure", "Never"],
        )),
    }
    match spec.get("dnsPolicy").and_then(Value::as_str) {
        None
        | Some("ClusterFirstWithHostNet")
        | Some("ClusterFirst")
        | Some("Default")
        | Some("None") => {}
        Some("") => errs.push(required(join(field, "dnsPolicy"), "")),
        Some(other) => errs.push(not_supported(
            join(field, "dnsPolicy"),
            other,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    if s(spec, "dnsPolicy") == "None" {
        let has_ns = spec
            .get("dnsConfig")
            .is_some_and(|d| !arr(d, "nameservers").is_empty());
        if !has_ns {
            errs.push(required(
                join(&join(field, "dnsConfig"), "nameservers"),
                "must provide at least one DNS nameserver when DNSPolicy is None",
            ));
        }
    }
    validate_labels(spec.get("nodeSelector"), &join(field, "nodeSelector"), errs);
    for (i, sec) in arr(spec, "imagePullSecrets").iter().enumerate() {
        if s(sec, "name").is_empty() {
            errs.push(required(
                join(&idx(&join(field, "imagePullSecrets"), i), "name"),
                "",
            ));
        }
    }
    let sa = s(spec, "serviceAccountName");
    if !sa.is_empty() {
        for m in dns1123_subdomain(sa) {
            errs.push(invalid(join(field, "serviceAccountName"), sa, &m));
        }
    }
    let node = s(spec, "nodeName");
    if !node.is_empty() {
        for m in dns1123_subdomain(node) {
            errs.push(invalid(join(field, "nodeName"), node, &m));
        }
    }
    if let Some(ads) = int(spec, "activeDeadlineSeconds") {
        if !(1..=i64::from(u32::MAX)).contains(&ads) {
            errs.push(invalid_int(
                join(field, "activeDeadlineSeconds"),
                ads,
                "must be between 1 and 4294967295, inclusive",
            ));
        }
    }
    for key in ["hostname", "subdomain"] {
        let v = s(spec, key);
        if !v.is_empty() {
            dns_label_errs(v, &join(field, key), errs);
        }
    }
    validate_tolerations(arr(spec, "tolerations"), &join(field, "tolerations"), errs);
    let pc = s(spec, "priorityClassName");
    if !pc.is_empty() {
        for m in dns1123_subdomain(pc) {
            errs.push(invalid(join(field, "priorityClassName"), pc, &m));
        }
    }
    if let Some(os) = spec.get("os").filter(|v| v.is_object()) {
        let name = s(os, "name");
        if name.is_empty() {
            errs.push(required(join(&join(field, "os"), "name"), ""));
        } else if !["linux", "windows"].contains(&name) {
            errs.push(not_supported(
                join(&join(field, "os"), "name"),
                name,
                &["linux", "windows"],
            ));
        }
    }
    if let Some(pp) = spec.get("preemptionPolicy").and_then(Value::as_str) {
        let ok = ["Never", "PreemptLowerPriority"];
        if !ok.contains(&pp) {
            errs.push(not_supported(join(field, "preemptionPolicy"), pp, &ok));
        }
    }
    for (i, g) in arr(spec, "schedulingGates").iter().enumerate() {
        let name = s(g, "name");
        let p = join(&idx(&join(field, "schedulingGates"), i), "name");
        for m in qualified_name(name) {
            errs.push(invalid(&p, name, &m));
        }
    }
}

fn pod_only_container(c: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let image = s(c, "image");
    if image.len() != image.trim().len() {
        errs.push(invalid(
            join(field, "image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
}

/// ValidatePodTemplateSpec at `field` (e.g. "spec.template").
fn validate_pod_template(t: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    let empty = Value::Object(Map::new());
    let t = t.filter(|v| v.is_object()).unwrap_or(&empty);
    let meta = t.get("metadata").unwrap_or(&empty);
    validate_labels(
        meta.get("labels"),
        &join(&join(field, "metadata"), "labels"),
        errs,
    );
    validate_annotations(
        meta.get("annotations"),
        &join(&join(field, "metadata"), "annotations"),
        errs,
    );
    let spec = t.get("spec").unwrap_or(&empty);
    let spath = join(field, "spec");
    validate_pod_spec(spec, &spath, false, errs);
    if !arr(spec, "ephemeralContainers").is_empty() {
        errs.push(forbidden(
            join(&spath, "ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
}

fn validate_pod(pod: &Value, errs: &mut Vec<FieldError>) {
    let empty = Value::Object(Map::new());
    let spec = pod.get("spec").unwrap_or(&empty);
    validate_pod_spec(spec, "spec", true, errs);
}

// ---------------------------------------------------------------------------
// label selectors
// ---------------------------------------------------------------------------

/// `&LabelSelector{...}` as the generated String() prints a selector.
fn render_label_selector(sel: &Value) -> String {
    if !sel.is_object() {
        return "nil".to_string();
    }
    let mut labels: Vec<(String, String)> = obj(sel, "matchLabels")
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    labels.sort();
    let mut out = String::from("&LabelSelector{MatchLabels:map[string]string{");
    for (k, v) in &labels {
        out.push_str(&format!("{k}: {v},"));
    }
    out.push_str("},MatchExpressions:[]LabelSelectorRequirement{");
    for e in arr(sel, "matchExpressions") {
        let vals: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
        out.push_str(&format!(
            "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
            s(e, "key"),
            s(e, "operator"),
            vals.join(" ")
        ));
    }
    out.push_str("},}");
    out
}

fn validate_label_selector(sel: &Value, field: &str, errs: &mut Vec<FieldError>) {
    if !sel.is_object() {
        return;
    }
    validate_labels(sel.get("matchLabels"), &join(field, "matchLabels"), errs);
    for (i, e) in arr(sel, "matchExpressions").iter().enumerate() {
        let p = idx(&join(field, "matchExpressions"), i);
        let values = arr(e, "values");
        match s(e, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(required(
                        join(&p, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(forbidden(
                        join(&p, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => errs.push(invalid(
                join(&p, "operator"),
                op,
                "not a valid selector operator",
            )),
        }
        let key = s(e, "key");
        for m in qualified_name(key) {
            errs.push(invalid(join(&p, "key"), key, &m));
        }
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or_default();
            for m in label_value(v) {
                errs.push(invalid(idx(&join(&p, "values"), j), v, &m));
            }
        }
    }
}

/// What LabelSelectorAsSelector makes of a selector.
enum Selector<'a> {
    Nothing,
    Everything,
    Match(&'a Value),
    Broken,
}

fn as_selector(sel: Option<&Value>) -> Selector<'_> {
    let Some(sel) = sel.filter(|v| v.is_object()) else {
        return Selector::Nothing;
    };
    let labels = obj(sel, "matchLabels").map_or(0, Map::len);
    let exprs = arr(sel, "matchExpressions");
    if labels + exprs.len() == 0 {
        return Selector::Everything;
    }
    for e in exprs {
        let n = arr(e, "values").len();
        let ok = match s(e, "operator") {
            "In" | "NotIn" => n > 0,
            "Exists" | "DoesNotExist" => n == 0,
            _ => false,
        };
        if !ok || !qualified_name(s(e, "key")).is_empty() {
            return Selector::Broken;
        }
    }
    if let Some(m) = obj(sel, "matchLabels") {
        for (k, v) in m {
            if !qualified_name(k).is_empty()
                || !label_value(v.as_str().unwrap_or_default()).is_empty()
            {
                return Selector::Broken;
            }
        }
    }
    Selector::Match(sel)
}

fn selector_matches(sel: &Value, labels: Option<&Map<String, Value>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(m) = obj(sel, "matchLabels") {
        for (k, v) in m {
            if get(k) != v.as_str() {
                return false;
            }
        }
    }
    for e in arr(sel, "matchExpressions") {
        let have = get(s(e, "key"));
        let in_values = |x: &str| arr(e, "values").iter().any(|v| v.as_str() == Some(x));
        let ok = match s(e, "operator") {
            "In" => have.is_some_and(in_values),
            "NotIn" => !have.is_some_and(in_values),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn template_labels(spec: &Value) -> Option<&Map<String, Value>> {
    spec.get("template")
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
}

fn selector_mismatch(spec: &Value, field: &str) -> FieldError {
    invalid_raw(
        join(field, "template.metadata.labels"),
        &render_string_map(template_labels(spec)),
        "`selector` does not match template `labels`",
    )
}

/// Required, non-empty, well-formed selector (Deployment/ReplicaSet/StatefulSet);
/// returns the selector for the template-label check.
fn required_selector<'a>(
    spec: &'a Value,
    field: &str,
    what: &str,
    errs: &mut Vec<FieldError>,
) -> Selector<'a> {
    let sp = join(field, "selector");
    match spec.get("selector").filter(|v| v.is_object()) {
        None => errs.push(required(&sp, "")),
        Some(sel) => {
            validate_label_selector(sel, &sp, errs);
            if matches!(as_selector(Some(sel)), Selector::Everything) {
                errs.push(invalid_raw(
                    &sp,
                    &render_label_selector(sel),
                    &format!("empty selector is invalid for {what}"),
                ));
            }
        }
    }
    as_selector(spec.get("selector"))
}

/// How a workload's template labels are checked against its selector.
enum LabelCheck<'a> {
    /// ValidatePodTemplateSpecForReplicaSet / StatefulSet: a nil selector
    /// matches nothing, an empty one is not checked, a broken one is reported.
    Selector(Selector<'a>),
    /// Already checked by the caller (DaemonSet).
    Skip,
}

/// The template checks of Deployment/ReplicaSet/DaemonSet: labels must match the selector,
/// the pod template must be valid, restartPolicy must be Always and activeDeadlineSeconds is
/// not supported. StatefulSet templates only get their labels and annotations checked.
fn workload_template(
    spec: &Value,
    check: LabelCheck<'_>,
    field: &str,
    kind: &str,
    errs: &mut Vec<FieldError>,
) {
    let tpath = join(field, "template");
    if let LabelCheck::Selector(sel) = check {
        match sel {
            Selector::Broken => {
                let rendered = spec
                    .get("selector")
                    .map_or_else(|| "nil".to_string(), render_label_selector);
                let detail = if kind == "StatefulSet" {
                    ""
                } else {
                    "invalid label selector"
                };
                errs.push(invalid_raw(join(field, "selector"), &rendered, detail));
            }
            Selector::Match(sel) => {
                if !selector_matches(sel, template_labels(spec)) {
                    errs.push(selector_mismatch(spec, field));
                }
            }
            Selector::Nothing => errs.push(selector_mismatch(spec, field)),
            Selector::Everything => {}
        }
    }
    if kind == "StatefulSet" {
        let empty = Value::Object(Map::new());
        let meta = spec
            .get("template")
            .and_then(|t| t.get("metadata"))
            .unwrap_or(&empty);
        validate_labels(meta.get("labels"), &join(&tpath, "labels"), errs);
        validate_annotations(meta.get("annotations"), &join(&tpath, "annotations"), errs);
    } else {
        validate_pod_template(spec.get("template"), &tpath, errs);
    }
    let tspec = spec.get("template").and_then(|t| t.get("spec"));
    let rp = tspec.map_or("", |t| s(t, "restartPolicy"));
    if rp != "Always" {
        errs.push(not_supported(
            join(&tpath, "spec.restartPolicy"),
            rp,
            &["Always"],
        ));
    }
    if tspec.is_some_and(|t| is_set(t, "activeDeadlineSeconds")) {
        errs.push(forbidden(
            join(&tpath, "spec.activeDeadlineSeconds"),
            &format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
}

/// An IntOrString as its String() prints it (no quotes).
fn render_int_or_string(v: &Value) -> String {
    match v {
        Value::String(st) => st.clone(),
        other => other.to_string(),
    }
}

/// ValidatePositiveIntOrPercent; returns the value (percent or count) when usable.
fn int_or_percent(
    v: Option<&Value>,
    field: &str,
    errs: &mut Vec<FieldError>,
) -> Option<(i64, bool)> {
    match v? {
        Value::Number(n) => {
            let x = n.as_i64().unwrap_or(0);
            if x < 0 {
                errs.push(invalid_int(field, x, NONNEG_MSG));
            }
            Some((x, false))
        }
        Value::String(st) => {
            let ok = st
                .strip_suffix('%')
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
            if !ok {
                errs.push(invalid_raw(
                    field,
                    st,
                    &regex_error(
                        "a valid percent string must be a numeric string followed by an ending '%'",
                        "[0-9]+%",
                        &["1%", "93%"],
                    ),
                ));
                return None;
            }
            let x = st.trim_end_matches('%').parse::<i64>().unwrap_or(i64::MAX);
            Some((x, true))
        }
        Value::Null => None,
        other => {
            errs.push(invalid_raw(
                field,
                &other.to_string(),
                "must be an integer or percentage (e.g '5%')",
            ));
            None
        }
    }
}

/// IsNotMoreThan100Percent
fn not_over_100(
    v: Option<&Value>,
    parsed: Option<(i64, bool)>,
    field: &str,
    errs: &mut Vec<FieldError>,
) {
    if let (Some(v), Some((x, true))) = (v, parsed) {
        if x > 100 {
            errs.push(invalid_raw(
                field,
                &render_int_or_string(v),
                "must not be greater than 100%",
            ));
        }
    }
}

fn validate_deployment(obj_: &Value, errs: &mut Vec<FieldError>) {
    let empty = Value::Object(Map::new());
    let spec = obj_.get("spec").unwrap_or(&empty);
    nonneg(spec, "replicas", "spec", errs);
    let sel = required_selector(spec, "spec", "deployment", errs);
    workload_template(spec, LabelCheck::Selector(sel), "spec", "Deployment", errs);
    if let Some(st) = spec.get("strategy").filter(|v| v.is_object()) {
        match s(st, "type") {
            "Recreate" => {
                if is_set(st, "rollingUpdate") {
                    errs.push(forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
            }
            "RollingUpdate" => match st.get("rollingUpdate").filter(|v| v.is_object()) {
                None => errs.push(required(
                    "spec.strategy.rollingUpdate",
                    "this should be defaulted and never be nil",
                )),
                Some(ru) => {
                    let p = "spec.strategy.rollingUpdate";
                    let mu =
                        int_or_percent(ru.get("maxUnavailable"), &join(p, "maxUnavailable"), errs);
                    let ms = int_or_percent(ru.get("maxSurge"), &join(p, "maxSurge"), errs);
                    if mu.map_or(0, |v| v.0) == 0 && ms.map_or(0, |v| v.0) == 0 {
                        errs.push(invalid_raw(
                            join(p, "maxUnavailable"),
                            &ru.get("maxUnavailable")
                                .map_or_else(|| "0".to_string(), render_int_or_string),
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
                    not_over_100(
                        ru.get("maxUnavailable"),
                        mu,
                        &join(p, "maxUnavailable"),
                        errs,
                    );
                }
            },
            t => errs.push(not_supported(
                "spec.strategy.type",
                t,
                &["Recreate", "RollingUpdate"],
            )),
        }
    }
    nonneg(spec, "minReadySeconds", "spec", errs);
    if let Some(pds) = int(spec, "progressDeadlineSeconds") {
        if pds < 0 {
            errs.push(invalid_int("spec.progressDeadlineSeconds", pds, NONNEG_MSG));
        }
        if pds <= int(spec, "minReadySeconds").unwrap_or(0) {
            errs.push(invalid_int(
                "spec.progressDeadlineSeconds",
                pds,
                "must be greater than minReadySeconds",
            ));
        }
    }
    nonneg(spec, "revisionHistoryLimit", "spec", errs);
}

fn validate_replica_set(obj_: &Value, errs: &mut Vec<FieldError>) {
    let empty = Value::Object(Map::new());
    let spec = obj_.get("spec").unwrap_or(&empty);
    nonneg(spec, "replicas", "spec", errs);
    nonneg(spec, "minReadySeconds", "spec", errs);
    let sel = required_selector(spec, "spec", "deployment", errs);
    workload_template(spec, LabelCheck::Selector(sel), "spec", "ReplicaSet", errs);
}

fn validate_stateful_set(obj_: &Value, errs: &mut Vec<FieldError>) {
    let empty = Value::Object(Map::new());
    let spec = obj_.get("spec").unwrap_or(&empty);
    match spec.get("podManagementPolicy").and_then(Value::as_str) {
        None | Some("OrderedReady") | Some("Parallel") => {}
        Some("") => errs.push(required("spec.podManagementPolicy", "")),
        Some(other) => errs.push(invalid(
            "spec.podManagementPolicy",
            other,
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    if let Some(us) = spec.get("updateStrategy").filter(|v| v.is_object()) {
        match s(us, "type") {
            "" => errs.push(required("spec.updateStrategy", "")),
            "OnDelete" => {
                if is_set(us, "rollingUpdate") {
                    errs.push(invalid_json(
                        "spec.updateStrategy.rollingUpdate",
                        &us["rollingUpdate"],
                        "only allowed for updateStrategy 'RollingUpdate'",
                    ));
                }
            }
            "RollingUpdate" => {
                if let Some(ru) = us.get("rollingUpdate").filter(|v| v.is_object()) {
                    let p = "spec.updateStrategy.rollingUpdate";
                    nonneg(ru, "partition", p, errs);
                    if let Some(mu_v) = ru.get("maxUnavailable").filter(|v| !v.is_null()) {
                        let mp = join(p, "maxUnavailable");
                        let mu = int_or_percent(Some(mu_v), &mp, errs);
                        if mu.map_or(0, |v| v.0) == 0 {
                            errs.push(invalid_raw(&mp, &render_int_or_string(mu_v), "cannot be 0"));
                        }
                        not_over_100(Some(mu_v), mu, &mp, errs);
                    }
                }
            }
            _ => errs.push(invalid_json(
                "spec.updateStrategy",
                us,
                "must be 'RollingUpdate' or 'OnDelete'",
            )),
        }
    }
    if let Some(p) = spec
        .get("persistentVolumeClaimRetentionPolicy")
        .filter(|v| v.is_object())
    {
        for key in ["whenDeleted", "whenScaled"] {
            let v = s(p, key);
            if v != "Retain" && v != "Delete" {
                errs.push(not_supported(
                    join("spec.persistentVolumeClaimRetentionPolicy", key),
                    v,
                    &["Retain", "Delete"],
                ));
            }
        }
    }
    nonneg(spec, "replicas", "spec", errs);
    nonneg(spec, "minReadySeconds", "spec", errs);
    if let Some(o) = spec.get("ordinals").filter(|v| v.is_object()) {
        nonneg(o, "start", "spec.ordinals", errs);
    }
    let sel = required_selector(spec, "spec", "statefulset", errs);
    workload_template(spec, LabelCheck::Selector(sel), "spec", "StatefulSet", errs);
}

fn validate_daemon_set(obj_: &Value, errs: &mut Vec<FieldError>) {
    let empty = Value::Object(Map::new());
    let spec = obj_.get("spec").unwrap_or(&empty);
    let sel_v = spec.get("selector").filter(|v| v.is_object());
    if let Some(sel) = sel_v {
        validate_label_selector(sel, "spec.selector", errs);
    }
    match as_selector(sel_v) {
        Selector::Match(sel) => {
            if !selector_matches(sel, template_labels(spec)) {
                errs.push(selector_mismatch(spec, "spec"));
            }
        }
        Selector::Nothing => errs.push(selector_mismatch(spec, "spec")),
        Selector::Everything | Selector::Broken => {}
    }
    if let Some(sel) = sel_v {
        if matches!(as_selector(Some(sel)), Selector::Everything) {
            errs.push(invalid_raw(
                "spec.selector",
                &render_label_selector(sel),
                "empty selector is invalid for daemonset",
            ));
        }
    }
    workload_template(spec, LabelCheck::Skip, "spec", "DaemonSet", errs);
    nonneg(spec, "minReadySeconds", "spec", errs);
    nonneg(spec, "templateGeneration", "spec", errs);
    if let Some(us) = spec.get("updateStrategy").filter(|v| v.is_object()) {
        match s(us, "type") {
            "OnDelete" => {}
            "RollingUpdate" => match us.get("rollingUpdate").filter(|v| v.is_object()) {
                None => errs.push(required("spec.updateStrategy.rollingUpdate", "")),
                Some(ru) => {
                    let p = "spec.updateStrategy.rollingUpdate";
                    let (mup, msp) = (join(p, "maxUnavailable"), join(p, "maxSurge"));
                    let mu = int_or_percent(ru.get("maxUnavailable"), &mup, errs);
                    let ms = int_or_percent(ru.get("maxSurge"), &msp, errs);
                    not_over_100(ru.get("maxUnavailable"), mu, &mup, errs);
                    not_over_100(ru.get("maxSurge"), ms, &msp, errs);
                    let has_unavailable = mu.map_or(0, |v| v.0) != 0;
                    let has_surge = ms.map_or(0, |v| v.0) != 0;
                    if has_unavailable && has_surge {
                        errs.push(invalid_raw(
                            &msp,
                            &ru.get("maxSurge")
                                .map_or_else(String::new, render_int_or_string),
                            "may not be set when maxUnavailable is non-zero",
                        ));
                    } else if !has_unavailable && !has_surge {
                        errs.push(required(&mup, "cannot be 0 when maxSurge is 0"));
                    }
                }
            },
            "" => errs.push(required("spec.updateStrategy.type", "")),
            t => errs.push(not_supported(
                "spec.updateStrategy.type",
                t,
                &["OnDelete", "RollingUpdate"],
            )),
        }
    }
    nonneg(spec, "revisionHistoryLimit", "spec", errs);
}

// ---------------------------------------------------------------------------
// batch
// ---------------------------------------------------------------------------

/// validateJobSpec: the checks shared by Jobs and CronJob job templates.
fn validate_job_spec(spec: &Value, field: &str, errs: &mut Vec<FieldError>) {
    for key in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        nonneg(spec, key, field, errs);
    }
    if let Some(mode) = spec.get("completionMode").and_then(Value::as_str) {
        if mode != "NonIndexed" && mode != "Indexed" {
            errs.push(not_supported(
                join(field, "completionMode"),
                mode,
                &["NonIndexed", "Indexed"],
            ));
        }
        if mode == "Indexed" && !is_set(spec, "completions") {
            errs.push(required(
                join(field, "completions"),
                "when completion mode is Indexed",
            ));
        }
    }
    if is_set(spec, "backoffLimitPerIndex") && s(spec, "completionMode") != "Indexed" {
        errs.push(forbidden(
            join(field, "backoffLimitPerIndex"),
            "requires indexed completion mode",
        ));
    }
    nonneg(spec, "backoffLimitPerIndex", field, errs);
    if let Some(prp) = spec.get("podReplacementPolicy").and_then(Value::as_str) {
        let ok = ["TerminatingOrFailed", "Failed"];
        if !ok.contains(&prp) {
            errs.push(not_supported(join(field, "podReplacementPolicy"), prp, &ok));
        }
    }
    let tpath = join(field, "template");
    validate_pod_template(spec.get("template"), &tpath, errs);
    let rp = spec
        .get("template")
        .and_then(|t| t.get("spec"))
        .map_or("", |t| s(t, "restartPolicy"));
    if rp != "OnFailure" && rp != "Never" {
        errs.push(required(
            join(&tpath, "spec.restartPolicy"),
            "valid values: \"OnFailure\", \"Never\"",
        ));
    } else if rp == "OnFailure" && is_set(spec, "podFailurePolicy") {
        errs.push(invalid(
            join(&tpath, "spec.restartPolicy"),
            rp,
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
}

fn validate_job(obj_: &Value, errs: &mut Vec<FieldError>) {
    let empty = Value::Object(Map::new());
    let spec = obj_.get("spec").unwrap_or(&empty);
    validate_job_spec(spec, "spec", errs);
    let sel_v = spec.get("selector").filter(|v| v.is_object());
    match sel_v {
        None => errs.push(required("spec.selector", "")),
        Some(sel) => validate_label_selector(sel, "spec.selector", errs),
    }
    match as_selector(sel_v) {
        Selector::Match(sel) => {
            if !selector_matches(sel, template_labels(spec)) {
                errs.push(selector_mismatch(spec, "spec"));
            }
        }
        Selector::Nothing => errs.push(selector_mismatch(spec, "spec")),
        Selector::Everything | Selector::Broken => {}
    }
}

fn validate_cron_job(obj_: &Value, create: bool, errs: &mut Vec<FieldError>) {
    let name = obj_.get("metadata").map_or("", |m| s(m, "name"));
    if create && name.len() > 52 {
        errs.push(invalid(
            "metadata.name",
            name,
            "must be no more than 52 characters",
        ));
    }
    let empty = Value::Object(Map::new());
    let spec = obj_.get("spec").unwrap_or(&empty);
    let schedule = s(spec, "schedule");
    if schedule.is_empty() {
        errs.push(required("spec.schedule", ""));
    } else {
        if let Err(e) = parse_cron(schedule) {
            errs.push(invalid("spec.schedule", schedule, &e));
        }
        if schedule.contains("TZ") {
            errs.push(invalid(
                "spec.schedule",
                schedule,
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    nonneg(spec, "startingDeadlineSeconds", "spec", errs);
    if let Some(tz) = spec.get("timeZone").and_then(Value::as_str) {
        validate_time_zone(tz, errs);
    }
    match spec.get("concurrencyPolicy").and_then(Value::as_str) {
        None | Some("Allow") | Some("Forbid") | Some("Replace") => {}
        Some("") => errs.push(required("spec.concurrencyPolicy", "")),
        Some(other) => errs.push(not_supported(
            "spec.concurrencyPolicy",
            other,
            &["Allow", "Forbid", "Replace"],
        )),
    }
    let jt = spec.get("jobTemplate").unwrap_or(&empty);
    if let Some(meta) = jt.get("metadata") {
        validate_labels(meta.get("labels"), "spec.jobTemplate.metadata.labels", errs);
        validate_annotations(
            meta.get("annotations"),
            "spec.jobTemplate.metadata.annotations",
            errs,
        );
    }
    let js = jt.get("spec").unwrap_or(&empty);
    validate_job_spec(js, "spec.jobTemplate.spec", errs);
    if let Some(sel) = js.get("selector").filter(|v| !v.is_null()) {
        errs.push(invalid_raw(
            "spec.jobTemplate.spec.selector",
            &render_label_selector(sel),
            "`selector` will be auto-generated",
        ));
    }
    if js.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        errs.push(not_supported(
            "spec.jobTemplate.spec.manualSelector",
            "true",
            &["nil", "false"],
        ));
    }
    nonneg(spec, "successfulJobsHistoryLimit", "spec", errs);
    nonneg(spec, "failedJobsHistoryLimit", "spec", errs);
}

/// validateTimeZone (without the tz database lookup).
fn validate_time_zone(tz: &str, errs: &mut Vec<FieldError>) {
    if tz.is_empty() {
        errs.push(invalid(
            "spec.timeZone",
            tz,
            "timeZone must be nil or non-empty string",
        ));
        return;
    }
    let part_ok = |p: &str| {
        p != "."
            && p != ".."
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
    };
    if !tz.split('/').all(part_ok) {
        errs.push(invalid(
            "spec.timeZone",
            tz,
            &format!("unknown time zone {tz}"),
        ));
        return;
    }
    if tz.eq_ignore_ascii_case("Local") {
        errs.push(invalid(
            "spec.timeZone",
            tz,
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        ));
    }
}

// --- cron schedules (robfig/cron's standard parser, with its error texts) ---

struct CronBounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MONTH_NAMES: &[(&str, u32)] = &[
    ("jan", 1),
    ("feb", 2),
    ("mar", 3),
    ("apr", 4),
    ("may", 5),
    ("jun", 6),
    ("jul", 7),
    ("aug", 8),
    ("sep", 9),
    ("oct", 10),
    ("nov", 11),
    ("dec", 12),
];
const DOW_NAMES: &[(&str, u32)] = &[
    ("sun", 0),
    ("mon", 1),
    ("tue", 2),
    ("wed", 3),
    ("thu", 4),
    ("fri", 5),
    ("sat", 6),
];

/// Go's strconv.Atoi followed by cron's non-negative check.
fn cron_int(expr: &str) -> Result<u32, String> {
    let digits = expr.strip_prefix(['+', '-']).unwrap_or(expr);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing {}: invalid syntax",
            go_quote(expr)
        ));
    }
    let n: i64 = match expr.parse() {
        Ok(n) => n,
        Err(_) => {
            return Err(format!(
                "failed to parse int from {expr}: strconv.Atoi: parsing {}: value out of range",
                go_quote(expr)
            ))
        }
    };
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {expr}"));
    }
    u32::try_from(n).map_err(|_| format!("end of range ({n}) above maximum: {expr}"))
}

fn cron_int_or_name(expr: &str, b: &CronBounds) -> Result<u32, String> {
    let lower = expr.to_lowercase();
    if let Some((_, v)) = b.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    cron_int(expr)
}

fn cron_range(expr: &str, b: &CronBounds) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_high.len() == 1;
    let (start, mut end);
    if low_high[0] == "*" || low_high[0] == "?" {
        start = b.min;
        end = b.max;
    } else {
        start = cron_int_or_name(low_high[0], b)?;
        end = match low_high.len() {
            1 => start,
            2 => cron_int_or_name(low_high[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
    }
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let st = cron_int(range_and_step[1])?;
            if single {
                end = b.max;
            }
            st
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

/// Go's time.ParseDuration, for "@every <duration>".
fn parse_go_duration(s: &str) -> Result<(), String> {
    let orig = s;
    let bad = || format!("time: invalid duration {}", go_quote(orig));
    let mut rest = s.strip_prefix(['+', '-']).unwrap_or(s);
    if rest == "0" {
        return Ok(());
    }
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..n];
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..u];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {}", go_quote(orig)));
        }
        if !["ns", "us", "µs", "μs", "ms", "s", "m", "h"].contains(&unit) {
            return Err(format!(
                "time: unknown unit {} in duration {}",
                go_quote(unit),
                go_quote(orig)
            ));
        }
        rest = &rest[u..];
    }
    Ok(())
}

fn parse_cron(spec: &str) -> Result<(), String> {
    let mut spec = spec;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        // the zone itself is rejected separately ("cannot use TZ ...")
        spec = spec.find(' ').map_or("", |i| spec[i..].trim());
    }
    if spec.starts_with('@') {
        return match spec {
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight"
            | "@hourly" => Ok(()),
            _ => match spec.strip_prefix("@every ") {
                Some(d) => parse_go_duration(d)
                    .map_err(|e| format!("failed to parse duration {spec}: {e}")),
                None => Err(format!("unrecognized descriptor: {spec}")),
            },
        };
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    const NONE: &[(&str, u32)] = &[];
    let bounds = [
        CronBounds {
            min: 0,
            max: 59,
            names: NONE,
        },
        CronBounds {
            min: 0,
            max: 23,
            names: NONE,
        },
        CronBounds {
            min: 1,
            max: 31,
            names: NONE,
        },
        CronBounds {
            min: 1,
            max: 12,
            names: MONTH_NAMES,
        },
        CronBounds {
            min: 0,
            max: 6,
            names: DOW_NAMES,
        },
    ];
    for (f, b) in fields.iter().zip(bounds.iter()) {
        for expr in f.split(',').filter(|e| !e.is_empty()) {
            cron_range(expr, b)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// IP addresses
// ---------------------------------------------------------------------------

/// IsValidIPForLegacyField with strict validation.
fn validate_ip(value: &str, field: &str, errs: &mut Vec<FieldError>) {
    match value.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => {
            errs.push(invalid(
                field,
                value,
                "must not be an IPv4-mapped IPv6 address",
            ));
        }
        Ok(_) => {}
        Err(_) => {
            let sloppy_v4 = value.split('.').count() == 4
                && value.split('.').all(|o| {
                    !o.is_empty()
                        && o.len() <= 3
                        && o.bytes().all(|b| b.is_ascii_digit())
                        && o.parse::<u16>().is_ok_and(|n| n < 256)
                });
            if sloppy_v4 {
                errs.push(invalid(field, value, "must not have leading 0s"));
            } else {
                errs.push(invalid(
                    field,
                    value,
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// core/v1: Service
// ---------------------------------------------------------------------------

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

fn cluster_ips(spec: &Value) -> Vec<String> {
    let ips: Vec<String> = arr(spec, "clusterIPs")
        .iter()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    if ips.is_empty() && !s(spec, "clusterIP").is_empty() {
        return vec![s(spec, "clusterIP").to_string()];
    }
    ips
}

fn render_string_slice(v: &[String]) -> String {
    if v.is_empty() {
        return "[]string(nil)".to_string();
    }
    format!(
        "[]string{{{}}}",
        v.iter().map(|x| go_quote(x)).collect::<Vec<_>>().join(", ")
    )
}

fn validate_service(svc: &Value, create: bool, errs: &mut Vec<FieldError>) {
    let empty = Value::Object(Map::new());
    let spec = svc.get("spec").unwrap_or(&empty);
    let ips = cluster_ips(spec);
    let headless = ips.len() == 1 && ips[0] == "None";
    let typ = s(spec, "type");
    let ports = arr(spec, "ports");
    if ports.is_empty() && !headless && typ != "ExternalName" {
        errs.push(required("spec.ports", ""));
    }
    match typ {
        "LoadBalancer" | "NodePort" if headless => {
            errs.push(invalid(
                "spec.clusterIPs[0]",
                &ips[0],
                &format!("may not be set to 'None' for {typ} services"),
            ));
        }
        "ExternalName" => {
            if !ips.is_empty() {
                errs.push(forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
            if !arr(spec, "ipFamilies").is_empty() {
                errs.push(forbidden(
                    "spec.ipFamilies",
                    "may not be set for ExternalName services",
                ));
            }
            if is_set(spec, "ipFamilyPolicy") {
                errs.push(forbidden(
                    "spec.ipFamilyPolicy",
                    "may not be set for ExternalName services",
                ));
            }
            let cname = s(spec, "externalName");
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                errs.push(required("spec.externalName", ""));
            } else {
                for m in dns1123_subdomain(cname) {
                    errs.push(invalid("spec.externalName", cname, &m));
                }
            }
        }
        _ => {}
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = idx("spec.ports", i);
        let name = s(p, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.push(required(join(&pp, "name"), ""));
        } else if !name.is_empty() {
            dns_label_errs(name, &join(&pp, "name"), errs);
            if names.contains(&name) {
                errs.push(duplicate(join(&pp, "name"), name));
            } else {
                names.push(name);
            }
        }
        let port = int(p, "port").unwrap_or(0);
        if !valid_port_num(port) {
            errs.push(invalid_int(join(&pp, "port"), port, PORT_RANGE_MSG));
        }
        match p.get("protocol").and_then(Value::as_str) {
            None | Some("") => errs.push(required(join(&pp, "protocol"), "")),
            Some(proto) if !PROTOCOLS.contains(&proto) => {
                errs.push(not_supported(join(&pp, "protocol"), proto, PROTOCOLS))
            }
            _ => {}
        }
        validate_port_ref(p.get("targetPort"), &join(&pp, "targetPort"), errs);
        if let Some(ap) = p.get("appProtocol").and_then(Value::as_str) {
            for m in qualified_name(ap) {
                errs.push(invalid(join(&pp, "appProtocol"), ap, &m));
            }
        }
    }
    validate_labels(spec.get("selector"), "spec.selector", errs);
    match spec.get("sessionAffinity").and_then(Value::as_str) {
        None | Some("") => errs.push(required("spec.sessionAffinity", "")),
        Some("ClientIP") => {
            let t = spec
                .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
                .and_then(Value::as_i64);
            match t {
                None => errs.push(required(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    "",
                )),
                Some(t) if !(1..=86400).contains(&t) => errs.push(invalid_int(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    t,
                    "must be greater than 0 and less than 86400",
                )),
                _ => {}
            }
        }
        Some("None") => {
            if is_set(spec, "sessionAffinityConfig") {
                errs.push(forbidden(
                    "spec.sessionAffinityConfig",
                    "must not be set when session affinity is None",
                ));
            }
        }
        Some(other) => errs.push(not_supported(
            "spec.sessionAffinity",
            other,
            &["ClientIP", "None"],
        )),
    }
    // clusterIP / clusterIPs
    if typ != "ExternalName" {
        let cip = s(spec, "clusterIP");
        if !arr(spec, "clusterIPs").is_empty()
            && !cip.is_empty()
            && ips.first().map(String::as_str) != Some(cip)
        {
            errs.push(invalid_raw(
                "spec.clusterIPs",
                &render_string_slice(&ips),
                "first value must match `clusterIP`",
            ));
        }
        for (i, ip) in ips.iter().enumerate() {
            if ip == "None" {
                if i > 0 || ips.len() > 1 {
                    errs.push(invalid(
                        idx("spec.clusterIPs", i),
                        ip,
                        "'None' must be the first and only value",
                    ));
                }
                continue;
            }
            if !ip.is_empty() {
                validate_ip(ip, &idx("spec.clusterIPs", i), errs);
            }
        }
    }
    for (i, ip) in arr(spec, "externalIPs").iter().enumerate() {
        validate_ip(
            ip.as_str().unwrap_or_default(),
            &idx("spec.externalIPs", i),
            errs,
        );
    }
    match spec.get("type").and_then(Value::as_str) {
        None | Some("") => errs.push(required("spec.type", "")),
        Some(t) if !SERVICE_TYPES.contains(&t) => {
            errs.push(not_supported("spec.type", t, SERVICE_TYPES))
        }
        _ => {}
    }
    if typ == "ClusterIP" {
        for (i, p) in ports.iter().enumerate() {
            if int(p, "nodePort").unwrap_or(0) != 0 {
                errs.push(forbidden(
                    join(&idx("spec.ports", i), "nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports: Vec<(String, i64)> = Vec::new();
    let mut seen: Vec<(String, i64)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let proto = s(p, "protocol").to_string();
        let np = int(p, "nodePort").unwrap_or(0);
        if np != 0 {
            let key = (proto.clone(), np);
            if node_ports.contains(&key) {
                errs.push(duplicate_raw(
                    join(&idx("spec.ports", i), "nodePort"),
                    &np.to_string(),
                ));
            }
            node_ports.push(key);
        }
        let port = int(p, "port").unwrap_or(0);
        let key = (proto.clone(), port);
        if seen.contains(&key) {
            errs.push(duplicate_raw(
                idx("spec.ports", i),
                &format!(
                    "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    go_quote(&proto)
                ),
            ));
        }
        seen.push(key);
    }
    let has_external_ips = !arr(spec, "externalIPs").is_empty();
    let externally_accessible =
        typ == "LoadBalancer" || typ == "NodePort" || (typ == "ClusterIP" && has_external_ips);
    match spec.get("externalTrafficPolicy").and_then(Value::as_str) {
        // (on update the server may carry a stale value across a type change)
        Some(etp) if create && !etp.is_empty() && !externally_accessible => {
            errs.push(invalid(
                "spec.externalTrafficPolicy",
                etp,
                "may only be set for externally-accessible services",
            ));
        }
        Some(etp) if !etp.is_empty() && !["Cluster", "Local"].contains(&etp) => {
            errs.push(not_supported(
                "spec.externalTrafficPolicy",
                etp,
                &["Cluster", "Local"],
            ));
        }
        _ => {}
    }
    if let Some(itp) = spec.get("internalTrafficPolicy").and_then(Value::as_str) {
        if !["Cluster", "Local"].contains(&itp) {
            errs.push(not_supported(
                "spec.internalTrafficPolicy",
                itp,
                &["Cluster", "Local"],
            ));
        }
    }
    if let Some(pol) = spec.get("ipFamilyPolicy").and_then(Value::as_str) {
        let ok = ["PreferDualStack", "RequireDualStack", "SingleStack"];
        if !ok.contains(&pol) {
            errs.push(not_supported("spec.ipFamilyPolicy", pol, &ok));
        }
    }
    for (i, f) in arr(spec, "ipFamilies").iter().enumerate() {
        let f = f.as_str().unwrap_or_default();
        if !["IPv4", "IPv6"].contains(&f) {
            errs.push(not_supported(
                idx("spec.ipFamilies", i),
                f,
                &["IPv4", "IPv6"],
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// core/v1: ConfigMap, Secret
// ---------------------------------------------------------------------------

const MAX_SECRET_SIZE: usize = 1024 * 1024;

fn base64_decoded_len(s: &str) -> usize {
    let t = s.trim_end_matches('=');
    t.len() * 3 / 4
}

fn validate_config_map(cm: &Value, errs: &mut Vec<FieldError>) {
    let mut total = 0usize;
    let binary = obj(cm, "binaryData");
    if let Some(data) = obj(cm, "data") {
        for (k, v) in data {
            for m in config_map_key(k) {
                errs.push(invalid(key_path("data", k), k, &m));
            }
            if binary.is_some_and(|b| b.contains_key(k)) {
                errs.push(invalid(
                    key_path("data", k),
                    k,
                    "duplicate of key present in binaryData",
                ));
            }
            total += v.as_str().map_or(0, str::len);
        }
    }
    if let Some(b) = binary {
        for (k, v) in b {
            for m in config_map_key(k) {
                errs.push(invalid(key_path("binaryData", k), k, &m));
            }
            total += v.as_str().map_or(0, base64_decoded_len);
        }
    }
    if total > MAX_SECRET_SIZE {
        errs.push(too_long("", MAX_SECRET_SIZE));
    }
}

fn validate_secret(sec: &Value, errs: &mut Vec<FieldError>) {
    let mut total = 0usize;
    let mut keys: Vec<&str> = Vec::new();
    for (bag, decoded) in [("data", true), ("stringData", false)] {
        if let Some(data) = obj(sec, bag) {
            for (k, v) in data {
                if keys.contains(&k.as_str()) {
                    continue;
                }
                keys.push(k);
                for m in config_map_key(k) {
                    errs.push(invalid(key_path("data", k), k, &m));
                }
                let text = v.as_str().unwrap_or_default();
                total += if decoded {
                    base64_decoded_len(text)
                } else {
                    text.len()
                };
            }
        }
    }
    if total > MAX_SECRET_SIZE {
        errs.push(too_long("data", MAX_SECRET_SIZE));
    }
    let has = |k: &str| keys.contains(&k);
    let req = |k: &str, errs: &mut Vec<FieldError>| errs.push(required(key_path("data", k), ""));
    match s(sec, "type") {
        "kubernetes.io/service-account-token" => {
            let name = sec
                .pointer("/metadata/annotations")
                .and_then(|a| a.get("kubernetes.io/service-account.name"));
            if name.and_then(Value::as_str).unwrap_or("").is_empty() {
                errs.push(required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => {
            req(".dockercfg", errs);
        }
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            req(".dockerconfigjson", errs);
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            req("username", errs);
            req("password", errs);
        }
        "kubernetes.io/ssh-auth" => {
            let empty = sec
                .get("data")
                .and_then(|d| d.get("ssh-privatekey"))
                .or_else(|| sec.get("stringData").and_then(|d| d.get("ssh-privatekey")))
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if empty {
                req("ssh-privatekey", errs);
            }
        }
        "kubernetes.io/tls" => {
            if !has("tls.crt") {
                req("tls.crt", errs);
            }
            if !has("tls.key") {
                req("tls.key", errs);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// storage
// ---------------------------------------------------------------------------

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn validate_access_modes(spec: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let modes = arr(spec, "accessModes");
    if modes.is_empty() {
        errs.push(required(
            join(field, "accessModes"),
            "at least 1 access mode is required",
        ));
    }
    let (mut rwop, mut other) = (false, false);
    for m in modes {
        match m.as_str().unwrap_or_default() {
            "ReadWriteOncePod" => rwop = true,
            "ReadWriteOnce" | "ReadOnlyMany" | "ReadWriteMany" => other = true,
            bad => errs.push(not_supported(join(field, "accessModes"), bad, ACCESS_MODES)),
        }
    }
    if rwop && other {
        errs.push(forbidden(
            join(field, "accessModes"),
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

fn validate_pvc_spec(spec: &Value, field: &str, errs: &mut Vec<FieldError>) {
    validate_access_modes(spec, field, errs);
    if let Some(sel) = spec.get("selector").filter(|v| v.is_object()) {
        validate_label_selector(sel, &join(field, "selector"), errs);
    }
    let storage_path = key_path(&join(field, "resources"), "storage");
    match spec.pointer("/resources/requests/storage") {
        None | Some(Value::Null) => errs.push(required(&storage_path, "")),
        Some(v) => match quantity_of(v) {
            None => errs.push(invalid(&storage_path, &quantity_text(v), QUANTITY_ERR)),
            Some(q) if q.is_negative() || q.nanos == 0 => {
                errs.push(invalid(
                    &storage_path,
                    &q.canonical(),
                    "must be greater than zero",
                ));
            }
            _ => {}
        },
    }
    if let Some(sc) = spec
        .get("storageClassName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        for m in dns1123_subdomain(sc) {
            errs.push(invalid(join(field, "storageClassName"), sc, &m));
        }
    }
    if let Some(vm) = spec.get("volumeMode").and_then(Value::as_str) {
        if !["Block", "Filesystem"].contains(&vm) {
            errs.push(not_supported(
                join(field, "volumeMode"),
                vm,
                &["Block", "Filesystem"],
            ));
        }
    }
}

fn validate_pvc(pvc: &Value, errs: &mut Vec<FieldError>) {
    let empty = Value::Object(Map::new());
    validate_pvc_spec(pvc.get("spec").unwrap_or(&empty), "spec", errs);
}

fn validate_pv(pv: &Value, errs: &mut Vec<FieldError>) {
    let empty = Value::Object(Map::new());
    let spec = pv.get("spec").unwrap_or(&empty);
    validate_access_modes(spec, "spec", errs);
    match obj(spec, "capacity") {
        None => errs.push(required("spec.capacity", "")),
        Some(c) if c.is_empty() => errs.push(required("spec.capacity", "")),
        Some(c) => {
            if !c.contains_key("storage") || c.len() > 1 {
                errs.push(not_supported(
                    "spec.capacity",
                    &Value::Object(c.clone()).to_string(),
                    &["storage"],
                ));
            }
            if let Some(v) = c.get("storage") {
                match quantity_of(v) {
                    None => errs.push(invalid(
                        "spec.capacity[storage]",
                        &quantity_text(v),
                        QUANTITY_ERR,
                    )),
                    Some(q) if q.is_negative() || q.nanos == 0 => {
                        errs.push(invalid(
                            "spec.capacity[storage]",
                            &q.canonical(),
                            "must be greater than zero",
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    let sources: Vec<&str> = VOLUME_SOURCES
        .iter()
        .chain(["local"].iter())
        .copied()
        .filter(|k| {
            !matches!(
                *k,
                "emptyDir"
                    | "secret"
                    | "configMap"
                    | "downwardAPI"
                    | "projected"
                    | "gitRepo"
                    | "ephemeral"
                    | "image"
            )
        })
        .filter(|k| is_set(spec, k))
        .collect();
    match sources.len() {
        0 => errs.push(required("spec", "must specify a volume type")),
        1 => {}
        _ => errs.push(forbidden(
            join("spec", sources[1]),
            "may not specify more than 1 volume type",
        )),
    }
    if let Some(p) = spec
        .get("persistentVolumeReclaimPolicy")
        .and_then(Value::as_str)
    {
        let ok = ["Delete", "Recycle", "Retain"];
        if !ok.contains(&p) {
            errs.push(not_supported("spec.persistentVolumeReclaimPolicy", p, &ok));
        }
    }
    if let Some(vm) = spec.get("volumeMode").and_then(Value::as_str) {
        if !["Block", "Filesystem"].contains(&vm) {
            errs.push(not_supported(
                "spec.volumeMode",
                vm,
                &["Block", "Filesystem"],
            ));
        }
    }
    if let Some(sc) = spec
        .get("storageClassName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        for m in dns1123_subdomain(sc) {
            errs.push(invalid("spec.storageClassName", sc, &m));
        }
    }
}

// ---------------------------------------------------------------------------
// everything else
// ---------------------------------------------------------------------------

fn validate_namespace(ns: &Value, errs: &mut Vec<FieldError>) {
    for f in arr(ns.get("spec").unwrap_or(&Value::Null), "finalizers") {
        let f = f.as_str().unwrap_or_default();
        for m in qualified_name(f) {
            errs.push(invalid("spec.finalizers", f, &m));
        }
        if !f.contains('/') && !["kubernetes", "orphan", "foregroundDeletion"].contains(&f) {
            errs.push(invalid(
                "spec.finalizers",
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}

fn validate_node(node: &Value, errs: &mut Vec<FieldError>) {
    let empty = Value::Object(Map::new());
    let spec = node.get("spec").unwrap_or(&empty);
    let mut seen: Vec<(String, String)> = Vec::new();
    for (i, t) in arr(spec, "taints").iter().enumerate() {
        let p = idx("spec.taints", i);
        let key = s(t, "key");
        for m in qualified_name(key) {
            errs.push(invalid(join(&p, "key"), key, &m));
        }
        let value = s(t, "value");
        let msgs = label_value(value);
        if !msgs.is_empty() {
            errs.push(invalid(join(&p, "value"), value, &msgs.join(";")));
        }
        let effect = s(t, "effect");
        if effect.is_empty() {
            errs.push(required(join(&p, "effect"), ""));
        } else if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            errs.push(not_supported(
                join(&p, "effect"),
                effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ));
        }
        let k = (key.to_string(), effect.to_string());
        if seen.contains(&k) {
            errs.push(duplicate_raw(
                &p,
                &format!(
                    "core.Taint{{Key:{}, Value:{}, Effect:{}, TimeAdded:<nil>}}: taints must be unique by key and effect pair",
                    go_quote(key),
                    go_quote(value),
                    go_quote(effect)
                ),
            ));
            continue;
        }
        seen.push(k);
    }
    let cidrs: Vec<&str> = arr(spec, "podCIDRs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for (i, c) in cidrs.iter().enumerate() {
        let ok = c.split_once('/').is_some_and(|(ip, len)| {
            let max = if ip.contains(':') { 128 } else { 32 };
            ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= max)
        });
        if !ok {
            errs.push(invalid(
                idx("spec.podCIDRs", i),
                c,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
    let pod_cidr = s(spec, "podCIDR");
    if !cidrs.is_empty() && !pod_cidr.is_empty() && cidrs[0] != pod_cidr {
        errs.push(invalid(
            "spec.podCIDR",
            pod_cidr,
            "must match first element of podCIDRs",
        ));
    }
}

fn validate_endpoints(ep: &Value, errs: &mut Vec<FieldError>) {
    for (i, ss) in arr(ep, "subsets").iter().enumerate() {
        let sp = idx("subsets", i);
        let addrs = arr(ss, "addresses");
        let not_ready = arr(ss, "notReadyAddresses");
        let ports = arr(ss, "ports");
        if addrs.is_empty() && not_ready.is_empty() {
            errs.push(required(
                &sp,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (bag, list) in [("addresses", addrs), ("notReadyAddresses", not_ready)] {
            for (j, a) in list.iter().enumerate() {
                let ap = idx(&join(&sp, bag), j);
                validate_ip(s(a, "ip"), &join(&ap, "ip"), errs);
                let hn = s(a, "hostname");
                if !hn.is_empty() {
                    dns_label_errs(hn, &join(&ap, "hostname"), errs);
                }
                if let Some(n) = a
                    .get("nodeName")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                {
                    for m in dns1123_subdomain(n) {
                        errs.push(invalid(join(&ap, "nodeName"), n, &m));
                    }
                }
            }
        }
        let mut names: Vec<&str> = Vec::new();
        for (j, p) in ports.iter().enumerate() {
            let pp = idx(&join(&sp, "ports"), j);
            let name = s(p, "name");
            if ports.len() > 1 && name.is_empty() {
                errs.push(required(join(&pp, "name"), ""));
            } else if !name.is_empty() {
                dns_label_errs(name, &join(&pp, "name"), errs);
            }
            if !name.is_empty() || ports.len() > 1 {
                if names.contains(&name) {
                    errs.push(duplicate(join(&pp, "name"), name));
                } else {
                    names.push(name);
                }
            }
            let port = int(p, "port").unwrap_or(0);
            if !valid_port_num(port) {
                errs.push(invalid_int(join(&pp, "port"), port, PORT_RANGE_MSG));
            }
            match p.get("protocol").and_then(Value::as_str) {
                None | Some("") => errs.push(required(join(&pp, "protocol"), "")),
                Some(proto) if !PROTOCOLS.contains(&proto) => {
                    errs.push(not_supported(join(&pp, "protocol"), proto, PROTOCOLS))
                }
                _ => {}
            }
        }
    }
}

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];

fn validate_endpoint_slice(es: &Value, create: bool, errs: &mut Vec<FieldError>) {
    let at = s(es, "addressType");
    for (i, e) in arr(es, "endpoints").iter().enumerate() {
        let p = idx("endpoints", i);
        let addrs = arr(e, "addresses");
        if addrs.is_empty() {
            errs.push(required(
                join(&p, "addresses"),
                "must contain at least 1 address",
            ));
        } else if addrs.len() > 100 {
            errs.push(FieldError {
                reason: "FieldValueTooMany",
                field: join(&p, "addresses"),
                message: format!("Too many: {}: must have at most 100 items", addrs.len()),
            });
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or_default();
            let ap = idx(&join(&p, "addresses"), j);
            match at {
                "IPv4" => {
                    let ok = a.parse::<std::net::Ipv4Addr>().is_ok();
                    if !ok {
                        validate_ip(a, &ap, errs);
                        if a.parse::<std::net::IpAddr>().is_ok() {
                            errs.push(invalid(&ap, a, "must be a valid IPv4 address"));
                        }
                    }
                }
                "IPv6" => {
                    let ok = a.parse::<std::net::Ipv6Addr>().is_ok();
                    if !ok {
                        validate_ip(a, &ap, errs);
                        if a.parse::<std::net::IpAddr>().is_ok() {
                            errs.push(invalid(&ap, a, "must be a valid IPv6 address"));
                        }
                    }
                }
                "FQDN" => {
                    let name = a.strip_suffix('.').unwrap_or(a);
                    if name.is_empty() {
                        errs.push(required(&ap, ""));
                    } else {
                        for m in dns1123_subdomain(&name.to_lowercase()) {
                            errs.push(invalid(&ap, a, &m));
                        }
                        if name.split('.').count() < 2 {
                            errs.push(invalid(
                                &ap,
                                a,
                                "should be a domain with at least two segments separated by dots",
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(h) = e.get("hostname").and_then(Value::as_str) {
            dns_label_errs(h, &join(&p, "hostname"), errs);
        }
        if let Some(n) = e.get("nodeName").and_then(Value::as_str) {
            for m in dns1123_subdomain(n) {
                errs.push(invalid(join(&p, "nodeName"), n, &m));
            }
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, p) in arr(es, "ports").iter().enumerate() {
        let pp = idx("ports", i);
        let name = s(p, "name");
        if !name.is_empty() {
            dns_label_errs(name, &join(&pp, "name"), errs);
        }
        if names.contains(&name) {
            errs.push(duplicate(join(&pp, "name"), name));
        } else {
            names.push(name);
        }
        match p.get("protocol").and_then(Value::as_str) {
            None | Some("") => errs.push(required(join(&pp, "protocol"), "")),
            Some(proto) if !PROTOCOLS.contains(&proto) => {
                errs.push(not_supported(join(&pp, "protocol"), proto, PROTOCOLS))
            }
            _ => {}
        }
        if let Some(n) = int(p, "port") {
            if !(0..=65535).contains(&n) {
                errs.push(invalid_int(
                    join(&pp, "port"),
                    n,
                    "must be between 0 and 65535, inclusive",
                ));
            }
        }
        if let Some(ap) = p.get("appProtocol").and_then(Value::as_str) {
            for m in qualified_name(ap) {
                errs.push(invalid(join(&pp, "appProtocol"), ap, &m));
            }
        }
    }
    if create {
        if at.is_empty() {
            errs.push(required("addressType", ""));
        } else if !ADDRESS_TYPES.contains(&at) {
            errs.push(not_supported("addressType", at, ADDRESS_TYPES));
        }
    }
}

/// Names with `system-` are the system classes' (upstream's reserved prefix);
/// user classes stay at or below 1,000,000,000.
fn validate_priority_class(pc: &Value, errs: &mut Vec<FieldError>) {
    let name = pc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let system = crate::admission::SYSTEM_PRIORITY_CLASSES
        .iter()
        .find(|(n, ..)| *n == name);
    let value = int(pc, "value");
    match (system, value) {
        (_, None) => errs.push(FieldError {
            reason: "FieldValueRequired",
            field: "value".into(),
            message: "Required value".into(),
        }),
        (Some((_, v, _)), Some(given)) if given != *v => errs.push(invalid_int(
            "value",
            given,
            &format!("value of system priority class {name} must be {v}"),
        )),
        (None, Some(given)) if given > 1_000_000_000 => errs.push(invalid_int(
            "value",
            given,
            "maximum allowed value of a user defined priority is 1000000000",
        )),
        _ => {}
    }
    if system.is_none() && name.starts_with("system-") {
        errs.push(FieldError {
            reason: "FieldValueInvalid",
            field: "metadata.name".into(),
            message: format!("Invalid value: {name:?}: priority class names with 'system-' prefix are reserved for system use only"),
        });
    }
}

// ---------------------------------------------------------------------------
// storage.k8s.io/v1: StorageClass

/// Upstream's limits on a StorageClass's parameters.
const MAX_PROVISIONER_PARAMETERS: usize = 512;
const MAX_PROVISIONER_PARAMETERS_BYTES: usize = 256 * 1024;

fn validate_storage_class(sc: &Value, errs: &mut Vec<FieldError>) {
    let provisioner = s(sc, "provisioner");
    if provisioner.is_empty() {
        errs.push(required("provisioner", ""));
    } else {
        for e in qualified_name(&provisioner.to_lowercase()) {
            errs.push(invalid("provisioner", provisioner, &e));
        }
    }
    if let Some(params) = sc.get("parameters").and_then(Value::as_object) {
        if params.len() > MAX_PROVISIONER_PARAMETERS {
            errs.push(FieldError {
                reason: "FieldValueTooMany",
                field: "parameters".into(),
                message: format!(
                    "Too many: {}: must have at most {MAX_PROVISIONER_PARAMETERS} items",
                    params.len()
                ),
            });
        }
        let mut size = 0;
        for (k, v) in params {
            if k.is_empty() {
                errs.push(invalid("parameters", k, "field can not be empty."));
            }
            size += k.len() + v.as_str().map_or(0, str::len);
        }
        if size > MAX_PROVISIONER_PARAMETERS_BYTES {
            errs.push(too_long("parameters", MAX_PROVISIONER_PARAMETERS_BYTES));
        }
    }
    let reclaim = s(sc, "reclaimPolicy");
    if !matches!(reclaim, "Delete" | "Retain") {
        errs.push(not_supported(
            "reclaimPolicy",
            reclaim,
            &["Delete", "Retain"],
        ));
    }
    let mode = s(sc, "volumeBindingMode");
    if mode.is_empty() {
        errs.push(required("volumeBindingMode", ""));
    } else if !matches!(mode, "Immediate" | "WaitForFirstConsumer") {
        errs.push(not_supported(
            "volumeBindingMode",
            mode,
            &["Immediate", "WaitForFirstConsumer"],
        ));
    }
}

/// A StorageClass's provisioner, parameters and policies are fixed at creation.
fn validate_storage_class_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let empty = Value::Object(Map::new());
    let params = |v: &Value| {
        v.get("parameters")
            .filter(|p| !p.is_null())
            .unwrap_or(&empty)
            .clone()
    };
    if params(new) != params(old) {
        errs.push(forbidden(
            "parameters",
            "updates to parameters are forbidden.",
        ));
    }
    if s(new, "provisioner") != s(old, "provisioner") {
        errs.push(forbidden(
            "provisioner",
            "updates to provisioner are forbidden.",
        ));
    }
    if s(new, "reclaimPolicy") != s(old, "reclaimPolicy") {
        errs.push(forbidden(
            "reclaimPolicy",
            "updates to reclaimPolicy are forbidden.",
        ));
    }
    immutable(
        new.get("volumeBindingMode"),
        old.get("volumeBindingMode"),
        "volumeBindingMode",
        errs,
    );
}

// ---------------------------------------------------------------------------
// admissionregistration/v1: Mutating- and ValidatingWebhookConfiguration

/// Go's `%#v` of a string slice (`[]string{"a", "b"}`), under a type name.
fn render_str_slice(type_name: &str, items: &[Value]) -> String {
    let body: Vec<String> = items
        .iter()
        .map(|v| go_quote(v.as_str().unwrap_or_default()))
        .collect();
    format!("{type_name}{{{}}}", body.join(", "))
}

/// IsFullyQualifiedName: a DNS subdomain of at least three segments.
fn fully_qualified_name(field: &str, name: &str, errs: &mut Vec<FieldError>) {
    if name.is_empty() {
        errs.push(required(field, ""));
        return;
    }
    let bad = dns1123_subdomain(name);
    if !bad.is_empty() {
        errs.push(invalid(field, name, &bad.join(",")));
        return;
    }
    if name.split('.').count() < 3 {
        errs.push(invalid(
            field,
            name,
            "should be a domain with at least three segments separated by dots",
        ));
    }
}

fn has_wildcard(items: &[Value]) -> bool {
    items.iter().any(|v| v.as_str() == Some("*"))
}

/// A rule's resources: `x`, `x/y`, `*`, `x/*`, `*/y`, `*/*` without overlaps.
fn validate_rule_resources(resources: &[Value], field: &str, errs: &mut Vec<FieldError>) {
    if resources.is_empty() {
        errs.push(required(field, ""));
    }
    let mut res_with_wild_sub: Vec<&str> = Vec::new();
    let mut sub_with_wild_res: Vec<&str> = Vec::new();
    let (mut double, mut single, mut plain) = (false, false, false);
    for (i, r) in resources.iter().enumerate() {
        let rs = r.as_str().unwrap_or_default();
        if rs.is_empty() {
            errs.push(required(idx(field, i), ""));
            continue;
        }
        if rs == "*/*" {
            double = true;
        }
        if rs == "*" {
            single = true;
        }
        let Some((res, sub)) = rs.split_once('/') else {
            plain = rs != "*";
            continue;
        };
        if res_with_wild_sub.contains(&res) {
            errs.push(invalid(
                idx(field, i),
                rs,
                &format!("if '{res}/*' is present, must not specify {rs}"),
            ));
        }
        if sub_with_wild_res.contains(&sub) {
            errs.push(invalid(
                idx(field, i),
                rs,
                &format!("if '*/{sub}' is present, must not specify {rs}"),
            ));
        }
        if sub == "*" {
            res_with_wild_sub.push(res);
        }
        if res == "*" {
            sub_with_wild_res.push(sub);
        }
    }
    if resources.len() > 1 && double {
        errs.push(invalid_raw(
            field,
            &render_str_slice("[]string", resources),
            "if '*/*' is present, must not specify other resources",
        ));
    }
    if single && plain {
        errs.push(invalid_raw(
            field,
            &render_str_slice("[]string", resources),
            "if '*' is present, must not specify other resources without subresources",
        ));
    }
}

fn validate_webhook_rule(rule: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let ops = arr(rule, "operations");
    let ops_field = join(field, "operations");
    if ops.is_empty() {
        errs.push(required(&ops_field, ""));
    }
    if ops.len() > 1 && has_wildcard(ops) {
        errs.push(invalid_raw(
            &ops_field,
            &render_str_slice("[]admissionregistration.OperationType", ops),
            "if '*' is present, must not specify other operations",
        ));
    }
    for (i, op) in ops.iter().enumerate() {
        let op = op.as_str().unwrap_or_default();
        if !matches!(op, "*" | "CREATE" | "UPDATE" | "DELETE" | "CONNECT") {
            errs.push(not_supported(
                idx(&ops_field, i),
                op,
                &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"],
            ));
        }
    }
    let groups = arr(rule, "apiGroups");
    if groups.is_empty() {
        errs.push(required(join(field, "apiGroups"), ""));
    }
    if groups.len() > 1 && has_wildcard(groups) {
        errs.push(invalid_raw(
            join(field, "apiGroups"),
            &render_str_slice("[]string", groups),
            "if '*' is present, must not specify other API groups",
        ));
    }
    let versions = arr(rule, "apiVersions");
    if versions.is_empty() {
        errs.push(required(join(field, "apiVersions"), ""));
    }
    if versions.len() > 1 && has_wildcard(versions) {
        errs.push(invalid_raw(
            join(field, "apiVersions"),
            &render_str_slice("[]string", versions),
            "if '*' is present, must not specify other API versions",
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        if v.as_str().unwrap_or_default().is_empty() {
            errs.push(required(idx(&join(field, "apiVersions"), i), ""));
        }
    }
    validate_rule_resources(arr(rule, "resources"), &join(field, "resources"), errs);
    if is_set(rule, "scope") {
        let scope = s(rule, "scope");
        if !matches!(scope, "*" | "Cluster" | "Namespaced") {
            errs.push(not_supported(
                join(field, "scope"),
                scope,
                &["*", "Cluster", "Namespaced"],
            ));
        }
    }
}

/// ValidateWebhookURL: https, a host, no user, query or fragment.
fn validate_webhook_url(url: &str, field: &str, errs: &mut Vec<FieldError>) {
    const FORM: &str = "; desired format: https://host[/path]";
    let (scheme, rest) = match url.split_once(':') {
        Some((sch, rest))
            if sch.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && sch
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            (sch.to_ascii_lowercase(), rest)
        }
        _ => (String::new(), url),
    };
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = rest
        .strip_prefix("//")
        .map(|a| a.split('/').next().unwrap_or_default())
        .unwrap_or_default();
    let (user, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if scheme != "https" {
        errs.push(invalid(
            field,
            &scheme,
            &format!("'https' is the only allowed URL scheme{FORM}"),
        ));
    }
    if host.is_empty() {
        errs.push(invalid(
            field,
            host,
            &format!("host must be specified{FORM}"),
        ));
    }
    if let Some(u) = user {
        errs.push(invalid(
            field,
            u,
            "user information is not permitted in the URL",
        ));
    }
    if !fragment.is_empty() {
        errs.push(invalid(
            field,
            fragment,
            "fragments are not permitted in the URL",
        ));
    }
    if !query.is_empty() {
        errs.push(invalid(
            field,
            query,
            "query parameters are not permitted in the URL",
        ));
    }
}

/// ValidateWebhookService: name, namespace, port, and a path of DNS-subdomain segments.
fn validate_webhook_service(svc: &Value, field: &str, errs: &mut Vec<FieldError>) {
    if s(svc, "name").is_empty() {
        errs.push(required(join(field, "name"), "service name is required"));
    }
    if s(svc, "namespace").is_empty() {
        errs.push(required(
            join(field, "namespace"),
            "service namespace is required",
        ));
    }
    let port = int(svc, "port").unwrap_or(443);
    if !valid_port_num(port) {
        errs.push(invalid_int(
            join(field, "port"),
            port,
            "port is not valid: must be between 1 and 65535, inclusive",
        ));
    }
    let Some(path) = svc.get("path").and_then(Value::as_str) else {
        return;
    };
    let pf = join(field, "path");
    if path == "/" || path.is_empty() {
        return;
    }
    if path == "//" {
        errs.push(invalid(&pf, path, "segment[0] may not be empty"));
        return;
    }
    if !path.starts_with('/') {
        errs.push(invalid(&pf, path, "must start with a '/'"));
    }
    let check = path.get(1..).unwrap_or_default();
    let check = check.strip_suffix('/').unwrap_or(check);
    for (i, step) in check.split('/').enumerate() {
        if step.is_empty() {
            errs.push(invalid(
                &pf,
                path,
                &format!("segment[{i}] may not be empty"),
            ));
            continue;
        }
        for m in dns1123_subdomain(step) {
            errs.push(invalid(&pf, path, &format!("segment[{i}]: {m}")));
        }
    }
}

const ACCEPTED_REVIEW_VERSIONS: &[&str] = &["v1", "v1beta1"];

fn has_no_side_effects(w: &Value) -> bool {
    matches!(s(w, "sideEffects"), "None" | "NoneOnDryRun")
}

fn has_accepted_review_version(w: &Value) -> bool {
    let vs = arr(w, "admissionReviewVersions");
    vs.is_empty()
        || vs
            .iter()
            .any(|v| ACCEPTED_REVIEW_VERSIONS.contains(&v.as_str().unwrap_or_default()))
}

fn has_unique_names(hooks: &[Value]) -> bool {
    let mut seen = Vec::new();
    hooks.iter().all(|h| {
        let n = s(h, "name");
        let fresh = !seen.contains(&n);
        seen.push(n);
        fresh
    })
}

/// Upstream's ValidateMutating/ValidatingWebhookConfiguration(Update): on an
/// update, the stricter rules (no side effects, a known AdmissionReview
/// version, unique names) apply only if the old object already kept them.
/// CEL matchConditions are refused: this apiserver cannot evaluate them.
fn validate_webhook_configuration(
    cfg: &Value,
    old: Option<&Value>,
    mutating: bool,
    errs: &mut Vec<FieldError>,
) {
    let old_hooks = old.map(|o| arr(o, "webhooks")).unwrap_or_default();
    let require_no_side_effects = old_hooks.iter().all(has_no_side_effects);
    let require_known_version = old_hooks.iter().all(has_accepted_review_version);
    let require_unique = has_unique_names(old_hooks);
    let mut names: Vec<&str> = Vec::new();
    for (i, w) in arr(cfg, "webhooks").iter().enumerate() {
        let f = idx("webhooks", i);
        fully_qualified_name(&join(&f, "name"), s(w, "name"), errs);
        for (j, rule) in arr(w, "rules").iter().enumerate() {
            validate_webhook_rule(rule, &idx(&join(&f, "rules"), j), errs);
        }
        if is_set(w, "failurePolicy") && !matches!(s(w, "failurePolicy"), "Fail" | "Ignore") {
            errs.push(not_supported(
                join(&f, "failurePolicy"),
                s(w, "failurePolicy"),
                &["Fail", "Ignore"],
            ));
        }
        if is_set(w, "matchPolicy") && !matches!(s(w, "matchPolicy"), "Equivalent" | "Exact") {
            errs.push(not_supported(
                join(&f, "matchPolicy"),
                s(w, "matchPolicy"),
                &["Equivalent", "Exact"],
            ));
        }
        let allowed: &[&str] = if require_no_side_effects {
            &["None", "NoneOnDryRun"]
        } else {
            &["None", "NoneOnDryRun", "Some", "Unknown"]
        };
        if !is_set(w, "sideEffects") {
            errs.push(required(
                join(&f, "sideEffects"),
                &format!("must specify one of {}", allowed.join(", ")),
            ));
        } else if !allowed.contains(&s(w, "sideEffects")) {
            errs.push(not_supported(
                join(&f, "sideEffects"),
                s(w, "sideEffects"),
                allowed,
            ));
        }
        if let Some(t) = int(w, "timeoutSeconds").filter(|t| !(1..=30).contains(t)) {
            errs.push(invalid_int(
                join(&f, "timeoutSeconds"),
                t,
                "the timeout value must be between 1 and 30 seconds",
            ));
        }
        for sel in ["namespaceSelector", "objectSelector"] {
            if let Some(v) = w.get(sel).filter(|v| !v.is_null()) {
                validate_label_selector(v, &join(&f, sel), errs);
            }
        }
        if mutating
            && is_set(w, "reinvocationPolicy")
            && !matches!(s(w, "reinvocationPolicy"), "IfNeeded" | "Never")
        {
            errs.push(not_supported(
                join(&f, "reinvocationPolicy"),
                s(w, "reinvocationPolicy"),
                &["IfNeeded", "Never"],
            ));
        }
        let empty = Value::Object(Map::new());
        let cc = w.get("clientConfig").unwrap_or(&empty);
        let ccf = join(&f, "clientConfig");
        match (cc.get("url").and_then(Value::as_str), cc.get("service")) {
            (Some(url), None | Some(Value::Null)) => {
                validate_webhook_url(url, &join(&ccf, "url"), errs)
            }
            (None, Some(svc)) if !svc.is_null() => {
                validate_webhook_service(svc, &join(&ccf, "service"), errs)
            }
            _ => errs.push(required(&ccf, "exactly one of url or service is required")),
        }
        if !arr(w, "matchConditions").is_empty() {
            errs.push(forbidden(
                join(&f, "matchConditions"),
                "CEL match conditions are not supported by this apiserver",
            ));
        }
        // admissionReviewVersions
        let arv = arr(w, "admissionReviewVersions");
        let af = join(&f, "admissionReviewVersions");
        if arv.is_empty() {
            errs.push(required(
                &af,
                &format!(
                    "must specify one of {}",
                    ACCEPTED_REVIEW_VERSIONS.join(", ")
                ),
            ));
        } else {
            let mut seen: Vec<&str> = Vec::new();
            let mut known = false;
            for (j, v) in arv.iter().enumerate() {
                let v = v.as_str().unwrap_or_default();
                if seen.contains(&v) {
                    errs.push(invalid(idx(&af, j), v, "duplicate version"));
                    continue;
                }
                seen.push(v);
                for m in dns1035_label(v) {
                    errs.push(invalid(idx(&af, j), v, &m));
                }
                known |= ACCEPTED_REVIEW_VERSIONS.contains(&v);
            }
            if require_known_version && !known {
                errs.push(invalid_raw(
                    &af,
                    &render_str_slice("[]string", arv),
                    &format!(
                        "must include at least one of {}",
                        ACCEPTED_REVIEW_VERSIONS.join(", ")
                    ),
                ));
            }
        }
        let name = s(w, "name");
        if require_unique && !name.is_empty() {
            if names.contains(&name) {
                errs.push(duplicate(join(&f, "name"), name));
            } else {
                names.push(name);
            }
        }
    }
}

fn validate_lease(lease: &Value, errs: &mut Vec<FieldError>) {
    let empty = Value::Object(Map::new());
    let spec = lease.get("spec").unwrap_or(&empty);
    if let Some(d) = int(spec, "leaseDurationSeconds") {
        if d <= 0 {
            errs.push(invalid_int(
                "spec.leaseDurationSeconds",
                d,
                "must be greater than 0",
            ));
        }
    }
    nonneg(spec, "leaseTransitions", "spec", errs);
    if let Some(st) = spec.get("strategy").and_then(Value::as_str) {
        if st != "OldestEmulationVersion" {
            errs.push(not_supported(
                "spec.strategy",
                st,
                &["OldestEmulationVersion"],
            ));
        }
    }
}

fn validate_service_account(sa: &Value, errs: &mut Vec<FieldError>) {
    for (i, sec) in arr(sa, "secrets").iter().enumerate() {
        let n = s(sec, "name");
        if !n.is_empty() {
            for m in dns1123_subdomain(n) {
                errs.push(invalid(join(&idx("secrets", i), "name"), n, &m));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// updates
// ---------------------------------------------------------------------------

const POD_UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn immutable(new: Option<&Value>, old: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    let n = new.unwrap_or(&Value::Null);
    let o = old.unwrap_or(&Value::Null);
    if n != o {
        errs.push(invalid_json(field, n, "field is immutable"));
    }
}

/// A short "- old / + new" listing of the top-level fields that differ,
/// in the spirit of upstream's cmp.Diff output.
fn spec_diff(type_name: &str, old: &Value, new: &Value) -> String {
    let mut out = format!("  {type_name}{{\n");
    let empty = Map::new();
    let o = old.as_object().unwrap_or(&empty);
    let n = new.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let (a, b) = (o.get(k), n.get(k));
        if a == b {
            continue;
        }
        let mut name = k.clone();
        if let Some(f) = name.get_mut(0..1) {
            f.make_ascii_uppercase();
        }
        let show = |v: Option<&Value>| v.map_or_else(|| "nil".to_string(), Value::to_string);
        out.push_str(&format!(
            "- \t{name}: {},\n+ \t{name}: {},\n",
            show(a),
            show(b)
        ));
    }
    out.push_str("  }\n");
    out
}

fn validate_pod_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let null = Value::Null;
    let ns = new.get("spec").unwrap_or(&null);
    let os = old.get("spec").unwrap_or(&null);
    if arr(ns, "containers").len() != arr(os, "containers").len() {
        errs.push(forbidden(
            "spec.containers",
            "pod updates may not add or remove containers",
        ));
        return;
    }
    if arr(ns, "initContainers").len() != arr(os, "initContainers").len() {
        errs.push(forbidden(
            "spec.initContainers",
            "pod updates may not add or remove containers",
        ));
        return;
    }
    match (
        int(ns, "activeDeadlineSeconds"),
        int(os, "activeDeadlineSeconds"),
    ) {
        (Some(n), old_ads) => {
            if !(0..=i64::from(i32::MAX)).contains(&n) {
                errs.push(invalid_int(
                    "spec.activeDeadlineSeconds",
                    n,
                    "must be between 0 and 2147483647, inclusive",
                ));
                return;
            }
            if old_ads.is_some_and(|o| o < n) {
                errs.push(invalid_int(
                    "spec.activeDeadlineSeconds",
                    n,
                    "must be less than or equal to previous value",
                ));
                return;
            }
        }
        (None, Some(_)) => {
            errs.push(invalid_raw(
                "spec.activeDeadlineSeconds",
                "null",
                "must not update from a positive integer to nil value",
            ));
        }
        (None, None) => {}
    }
    // tolerations: only additions (tolerationSeconds of existing ones may change)
    let new_tols = arr(ns, "tolerations");
    for ot in arr(os, "tolerations") {
        let strip = |t: &Value| {
            let mut t = t.clone();
            if let Some(m) = t.as_object_mut() {
                m.remove("tolerationSeconds");
            }
            t
        };
        let o = strip(ot);
        if !new_tols.iter().any(|nt| strip(nt) == o) {
            errs.push(forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }
    // scheduling gates: only deletions
    let old_gates: Vec<&str> = arr(os, "schedulingGates")
        .iter()
        .map(|g| s(g, "name"))
        .collect();
    for g in arr(ns, "schedulingGates") {
        let name = s(g, "name");
        if !old_gates.contains(&name) {
            errs.push(forbidden(
                "spec.schedulingGates",
                &format!("only deletion is allowed, but found new scheduling gate '{name}'"),
            ));
            break;
        }
    }
    if ns == os {
        return;
    }
    let mut munged = ns.clone();
    for list in ["containers", "initContainers"] {
        if let Some(cs) = munged.get_mut(list).and_then(Value::as_array_mut) {
            for (i, c) in cs.iter_mut().enumerate() {
                let old_image = os
                    .get(list)
                    .and_then(|l| l.get(i))
                    .and_then(|c| c.get("image"))
                    .cloned();
                if let Some(m) = c.as_object_mut() {
                    match old_image {
                        Some(img) => {
                            m.insert("image".into(), img);
                        }
                        None => {
                            m.remove("image");
                        }
                    }
                }
            }
        }
    }
    if let Some(m) = munged.as_object_mut() {
        for key in ["activeDeadlineSeconds", "schedulingGates", "tolerations"] {
            match os.get(key) {
                Some(v) => {
                    m.insert(key.into(), v.clone());
                }
                None => {
                    m.remove(key);
                }
            }
        }
        let old_grace = int(os, "terminationGracePeriodSeconds");
        if old_grace.is_some_and(|g| g < 0) && int(ns, "terminationGracePeriodSeconds") == Some(1) {
            if let Some(g) = os.get("terminationGracePeriodSeconds") {
                m.insert("terminationGracePeriodSeconds".into(), g.clone());
            }
        }
        // gated pods may gain nodeSelector entries and node affinity terms
        if !old_gates.is_empty() {
            for key in ["nodeSelector", "affinity"] {
                match os.get(key) {
                    Some(v) => {
                        m.insert(key.into(), v.clone());
                    }
                    None => {
                        m.remove(key);
                    }
                }
            }
        }
    }
    if &munged != os {
        errs.push(forbidden(
            "spec",
            &format!(
                "pod updates may not change fields other than {POD_UPDATABLE}\n{}",
                spec_diff("core.PodSpec", os, &munged)
            ),
        ));
    }
}

fn selector_immutable(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let n = new.pointer("/spec/selector").filter(|v| !v.is_null());
    let o = old.pointer("/spec/selector").filter(|v| !v.is_null());
    if n != o {
        let rendered = n.map_or_else(|| "null".to_string(), render_label_selector);
        errs.push(invalid_raw(
            "spec.selector",
            &rendered,
            "field is immutable",
        ));
    }
}

fn validate_stateful_set_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let mut n = new.get("spec").cloned().unwrap_or(Value::Null);
    let o = old.get("spec").cloned().unwrap_or(Value::Null);
    if let Some(m) = n.as_object_mut() {
        for key in [
            "replicas",
            "template",
            "updateStrategy",
            "minReadySeconds",
            "ordinals",
            "persistentVolumeClaimRetentionPolicy",
        ] {
            match o.get(key) {
                Some(v) => {
                    m.insert(key.into(), v.clone());
                }
                None => {
                    m.remove(key);
                }
            }
        }
    }
    if n != o {
        errs.push(forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
    }
}

fn validate_job_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let null = Value::Null;
    let ns = new.get("spec").unwrap_or(&null);
    let os = old.get("spec").unwrap_or(&null);
    let indexed = s(ns, "completionMode") == "Indexed";
    if !indexed {
        immutable(
            ns.get("completions"),
            os.get("completions"),
            "spec.completions",
            errs,
        );
    } else if ns.get("completions") != os.get("completions")
        && ns.get("completions") != ns.get("parallelism")
    {
        errs.push(invalid_json(
            "spec.completions",
            ns.get("completions").unwrap_or(&null),
            "can only be modified in tandem with spec.parallelism",
        ));
    }
    selector_immutable(new, old, errs);
    // The template may only change (node affinity, tolerations, labels,
    // annotations, scheduling gates) while a never-started job is suspended.
    let mutable_scheduling = ns.get("suspend").and_then(Value::as_bool) == Some(true)
        && old.pointer("/status/startTime").is_none_or(Value::is_null);
    let mut nt = ns.get("template").cloned().unwrap_or(Value::Null);
    let ot = os.get("template").cloned().unwrap_or(Value::Null);
    if mutable_scheduling {
        for (parent, key) in [
            ("spec", "nodeSelector"),
            ("spec", "tolerations"),
            ("spec", "affinity"),
            ("spec", "schedulingGates"),
            ("metadata", "labels"),
            ("metadata", "annotations"),
        ] {
            let old_v = ot.get(parent).and_then(|p| p.get(key)).cloned();
            if let Some(p) = nt.get_mut(parent).and_then(Value::as_object_mut) {
                match old_v {
                    Some(v) => {
                        p.insert(key.into(), v);
                    }
                    None => {
                        p.remove(key);
                    }
                }
            }
        }
    }
    if nt != ot {
        errs.push(invalid_json(
            "spec.template",
            ns.get("template").unwrap_or(&null),
            "field is immutable",
        ));
    }
    for key in [
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "managedBy",
        "successPolicy",
    ] {
        immutable(ns.get(key), os.get(key), &join("spec", key), errs);
    }
}

fn validate_service_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let null = Value::Null;
    let ns = new.get("spec").unwrap_or(&null);
    let os = old.get("spec").unwrap_or(&null);
    if s(ns, "type") == "ExternalName" || s(os, "type") == "ExternalName" {
        return;
    }
    let new_ips = cluster_ips(ns);
    let old_ips = cluster_ips(os);
    if let (Some(n), Some(o)) = (new_ips.first(), old_ips.first()) {
        if !n.is_empty() && !o.is_empty() && n != o {
            errs.push(invalid_raw(
                "spec.clusterIPs[0]",
                &render_string_slice(&new_ips),
                "may not change once set",
            ));
        }
    }
    let (nc, oc) = (s(ns, "clusterIP"), s(os, "clusterIP"));
    if !nc.is_empty()
        && !oc.is_empty()
        && nc != oc
        && new_ips.first().map(String::as_str) != Some(nc)
    {
        errs.push(invalid("spec.clusterIP", nc, "field is immutable"));
    }
}

fn validate_pvc_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let null = Value::Null;
    let mut n = new.get("spec").cloned().unwrap_or(Value::Null);
    let mut o = old.get("spec").cloned().unwrap_or(Value::Null);
    // volumeName may be set once
    if s(&o, "volumeName").is_empty() {
        if let Some(m) = o.as_object_mut() {
            match n.get("volumeName") {
                Some(v) => {
                    m.insert("volumeName".into(), v.clone());
                }
                None => {
                    m.remove("volumeName");
                }
            }
        }
    }
    let bound = new.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
    let old_storage = old.pointer("/spec/resources/requests/storage").cloned();
    if bound {
        if let Some(req) = n
            .pointer_mut("/resources/requests")
            .and_then(Value::as_object_mut)
        {
            match &old_storage {
                Some(v) => {
                    req.insert("storage".into(), v.clone());
                }
                None => {
                    req.remove("storage");
                }
            }
        }
    }
    for sp in [&mut n, &mut o] {
        if let Some(m) = sp.as_object_mut() {
            m.remove("volumeAttributesClassName");
        }
    }
    if n != o {
        errs.push(forbidden(
            "spec",
            &format!(
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n{}",
                spec_diff("core.PersistentVolumeClaimSpec", &o, &n)
            ),
        ));
    }
    let new_size = new
        .pointer("/spec/resources/requests/storage")
        .and_then(quantity_of);
    let old_size = old_storage.as_ref().and_then(quantity_of);
    let status_size = old
        .pointer("/status/capacity/storage")
        .and_then(quantity_of);
    if let (Some(ns), Some(os)) = (new_size, old_size) {
        if ns.cmp(&os).is_lt() {
            let below_status = status_size.is_none_or(|st| ns.cmp(&st).is_le());
            if below_status {
                errs.push(forbidden(
                    "spec.resources.requests.storage",
                    "field can not be less than status.capacity",
                ));
            }
        }
    }
    immutable(
        new.pointer("/spec/volumeMode"),
        old.pointer("/spec/volumeMode"),
        "volumeMode",
        errs,
    );
    let _ = &null;
}

fn validate_immutable_data(new: &Value, old: &Value, binary: bool, errs: &mut Vec<FieldError>) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    let empty = |v: Option<&Value>| {
        v.filter(|d| d.as_object().is_some_and(|m| !m.is_empty()))
            .cloned()
    };
    if empty(new.get("data")) != empty(old.get("data")) {
        errs.push(forbidden(
            "data",
            "field is immutable when `immutable` is set",
        ));
    }
    if binary && empty(new.get("binaryData")) != empty(old.get("binaryData")) {
        errs.push(forbidden(
            "binaryData",
            "field is immutable when `immutable` is set",
        ));
    }
}

fn validate_node_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let old_cidrs = arr(old.get("spec").unwrap_or(&Value::Null), "podCIDRs");
    if !old_cidrs.is_empty() {
        let new_cidrs = arr(new.get("spec").unwrap_or(&Value::Null), "podCIDRs");
        if new_cidrs.len() != old_cidrs.len() || new_cidrs != old_cidrs {
            errs.push(forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
    }
    let old_pid = old
        .pointer("/spec/providerID")
        .and_then(Value::as_str)
        .unwrap_or("");
    let new_pid = new
        .pointer("/spec/providerID")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !old_pid.is_empty() && old_pid != new_pid {
        errs.push(forbidden(
            "spec.providerID",
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
}

// ---------------------------------------------------------------------------
// entry points
// ---------------------------------------------------------------------------

fn validate_object(kind: &str, obj: &Value, namespaced: bool, create: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let empty = Value::Object(Map::new());
    let meta = obj
        .get("metadata")
        .filter(|m| m.is_object())
        .unwrap_or(&empty);
    validate_meta(meta, name_rule(kind), namespaced, "metadata", &mut errs);
    match kind {
        "Pod" => validate_pod(obj, &mut errs),
        "PodTemplate" => validate_pod_template(obj.get("template"), "template", &mut errs),
        "Deployment" => validate_deployment(obj, &mut errs),
        "ReplicaSet" => validate_replica_set(obj, &mut errs),
        "StatefulSet" => validate_stateful_set(obj, &mut errs),
        "DaemonSet" => validate_daemon_set(obj, &mut errs),
        "Job" => validate_job(obj, &mut errs),
        "CronJob" => validate_cron_job(obj, create, &mut errs),
        "Service" => validate_service(obj, create, &mut errs),
        "ConfigMap" => validate_config_map(obj, &mut errs),
        "Secret" => validate_secret(obj, &mut errs),
        "PersistentVolumeClaim" => validate_pvc(obj, &mut errs),
        "PersistentVolume" => validate_pv(obj, &mut errs),
        "Namespace" => validate_namespace(obj, &mut errs),
        "Node" => validate_node(obj, &mut errs),
        "Endpoints" => validate_endpoints(obj, &mut errs),
        "EndpointSlice" => validate_endpoint_slice(obj, create, &mut errs),
        "Lease" => validate_lease(obj, &mut errs),
        "PriorityClass" => validate_priority_class(obj, &mut errs),
        "StorageClass" => validate_storage_class(obj, &mut errs),
        "ServiceAccount" => validate_service_account(obj, &mut errs),
        "CertificateSigningRequest" if create => {
            errs.extend(crate::certificates::validate_create(obj))
        }
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" if create => {
            validate_webhook_configuration(
                obj,
                None,
                kind == "MutatingWebhookConfiguration",
                &mut errs,
            )
        }
        _ => {}
    }
    errs
}

/// Validate an object on create. `namespaced` says whether metadata.namespace must be set
/// (it is filled in by the server before this is called).
pub fn validate(kind: &str, obj: &Value, namespaced: bool) -> Vec<FieldError> {
    validate_object(kind, obj, namespaced, true)
}

/// Validate an update: `validate` of the new object plus immutability rules.
pub fn validate_update(kind: &str, new: &Value, old: &Value, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let empty = Value::Object(Map::new());
    let nm = new
        .get("metadata")
        .filter(|m| m.is_object())
        .unwrap_or(&empty);
    let om = old
        .get("metadata")
        .filter(|m| m.is_object())
        .unwrap_or(&empty);
    // no new finalizers on an object that is being deleted
    if om.get("deletionTimestamp").is_some_and(|t| !t.is_null()) {
        let old_f: Vec<&str> = arr(om, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut extra: Vec<&str> = arr(nm, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .filter(|f| !old_f.contains(f))
            .collect();
        extra.sort_unstable();
        extra.dedup();
        if !extra.is_empty() {
            errs.push(forbidden(
                "metadata.finalizers",
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    extra.iter().map(|f| go_quote(f)).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    for key in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        let a = nm.get(key).filter(|v| !v.is_null());
        let b = om.get(key).filter(|v| !v.is_null());
        // an empty string and an absent field are the same (Go zero value)
        let blank = |v: Option<&Value>| v.is_none() || v == Some(&Value::String(String::new()));
        if a != b && !(blank(a) && blank(b)) {
            errs.push(invalid_json(
                join("metadata", key),
                a.unwrap_or(&Value::String(String::new())),
                "field is immutable",
            ));
        }
    }
    errs.extend(validate_object(kind, new, namespaced, false));
    match kind {
        "Pod" => validate_pod_update(new, old, &mut errs),
        "Deployment" | "ReplicaSet" | "DaemonSet" => selector_immutable(new, old, &mut errs),
        "StatefulSet" => validate_stateful_set_update(new, old, &mut errs),
        "Job" => validate_job_update(new, old, &mut errs),
        "Service" => validate_service_update(new, old, &mut errs),
        "PersistentVolumeClaim" => validate_pvc_update(new, old, &mut errs),
        "ConfigMap" => validate_immutable_data(new, old, true, &mut errs),
        "Secret" => {
            validate_immutable_data(new, old, false, &mut errs);
            let (nt, ot) = (s(new, "type"), s(old, "type"));
            if nt != ot {
                errs.push(invalid("type", nt, "field is immutable"));
            }
        }
        "EndpointSlice" => immutable(
            new.get("addressType"),
            old.get("addressType"),
            "addressType",
            &mut errs,
        ),
        "Node" => validate_node_update(new, old, &mut errs),
        "StorageClass" => validate_storage_class_update(new, old, &mut errs),
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            validate_webhook_configuration(
                new,
                Some(old),
                kind == "MutatingWebhookConfiguration",
                &mut errs,
            )
        }
        _ => {}
    }
    errs
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn name_formats() {
        assert!(dns1123_subdomain("example.com").is_empty());
        assert_eq!(
            dns1123_subdomain("Foo_"),
            vec!["a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()]
        );
        assert_eq!(
            dns1123_label("a.b"),
            vec!["must not contain dots".to_string()]
        );
        assert!(dns1123_label("abc-1").is_empty());
        assert!(!dns1035_label("1abc").is_empty());
        assert!(dns1035_label("abc-1").is_empty());
        assert!(qualified_name("example.com/My_name.1").is_empty());
        assert_eq!(
            qualified_name("/a"),
            vec!["prefix part must be non-empty".to_string()]
        );
        assert_eq!(qualified_name("a/b/c").len(), 1);
        assert!(label_value("").is_empty());
        assert!(!label_value("-a").is_empty());
        assert_eq!(
            label_value(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_string()]
        );
    }

    #[test]
    fn regex_error_format() {
        assert_eq!(
            config_map_key("a b"),
            vec!["a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".to_string()]
        );
    }

    #[test]
    fn meta_rules() {
        let errs = validate(
            "ConfigMap",
            &json!({"metadata": {"namespace": "default"}}),
            true,
        );
        assert_eq!(
            fields(&errs),
            vec!["metadata.name: Required value: name or generateName is required"]
        );
        let errs = validate(
            "ConfigMap",
            &json!({"metadata": {"generateName": "x-", "namespace": "default"}}),
            true,
        );
        assert!(errs.is_empty(), "{errs:?}");
        let errs = validate("ConfigMap", &json!({"metadata": {"name": "x"}}), true);
        assert_eq!(fields(&errs), vec!["metadata.namespace: Required value"]);
        let errs = validate(
            "Node",
            &json!({"metadata": {"name": "x", "namespace": "a"}}),
            false,
        );
        assert_eq!(
            fields(&errs),
            vec!["metadata.namespace: Forbidden: not allowed on this type"]
        );
        let errs = validate("Namespace", &json!({"metadata": {"name": "a.b"}}), false);
        assert_eq!(
            fields(&errs),
            vec!["metadata.name: Invalid value: \"a.b\": must not contain dots"]
        );
        let errs = validate(
            "Widget",
            &json!({"metadata": {"name": "a/b", "namespace": "d"}}),
            true,
        );
        assert_eq!(errs.len(), 1);
        let errs = validate(
            "ClusterRole",
            &json!({"metadata": {"name": "system:a%b"}}),
            false,
        );
        assert_eq!(
            fields(&errs),
            vec!["metadata.name: Invalid value: \"system:a%b\": may not contain '%'"]
        );
        let errs = validate(
            "ConfigMap",
            &json!({"metadata": {"name": "x", "namespace": "d", "labels": {"a b": "ok", "k": "-bad"}}}),
            true,
        );
        assert_eq!(errs.len(), 2);
        assert!(errs
            .iter()
            .all(|e| e.field == "metadata.labels" && e.reason == "FieldValueInvalid"));
        assert!(errs[0]
            .message
            .starts_with("Invalid value: \"a b\": name part must consist of"));
        assert!(errs[1]
            .message
            .starts_with("Invalid value: \"-bad\": a valid label must be"));
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE);
        let errs = validate(
            "ConfigMap",
            &json!({"metadata": {"name": "x", "namespace": "d", "annotations": {"a": big}}}),
            true,
        );
        assert_eq!(
            fields(&errs),
            vec!["metadata.annotations: Too long: must have at most 262144 bytes"]
        );
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    fn valid_pod_spec() -> Value {
        json!({
            "containers": [{
                "name": "app", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent",
                "terminationMessagePolicy": "File",
                "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}],
                "env": [{"name": "A", "value": "b"}, {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "1G"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"
        })
    }

    #[test]
    fn valid_pod_passes() {
        let errs = validate("Pod", &pod(valid_pod_spec()), true);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn pod_container_rules() {
        let errs = validate("Pod", &pod(json!({})), true);
        assert_eq!(fields(&errs), vec!["spec.containers: Required value"]);
        let errs = validate("Pod", &pod(json!({"containers": [{"name": "a"}]})), true);
        assert_eq!(
            fields(&errs),
            vec!["spec.containers[0].image: Required value"]
        );
        assert_eq!(errs[0].reason, "FieldValueRequired");
        let errs = validate(
            "Pod",
            &pod(
                json!({"containers": [{"name": "A_b", "image": "x"}, {"name": "A_b", "image": "y"}]}),
            ),
            true,
        );
        assert_eq!(errs.len(), 3);
        assert!(errs[0]
            .message
            .starts_with("Invalid value: \"A_b\": a lowercase RFC 1123 label must consist of"));
        assert_eq!(
            fields(&errs[2..]),
            vec!["spec.containers[1].name: Duplicate value: \"A_b\""]
        );
        let errs = validate(
            "Pod",
            &pod(
                json!({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 70000, "protocol": "XTP"}]}], "restartPolicy": "Sometimes"}),
            ),
            true,
        );
        assert_eq!(
            fields(&errs),
            vec![
                "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[0].protocol: Unsupported value: \"XTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ]
        );
        assert_eq!(errs[1].reason, "FieldValueNotSupported");
    }

    #[test]
    fn pod_volumes_env_resources() {
        let mut spec = valid_pod_spec();
        spec["containers"][0]["volumeMounts"] = json!([{"name": "x", "mountPath": "/x"}]);
        spec["volumes"] =
            json!([{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}}]);
        spec["containers"][0]["env"] = json!([{"name": "BAD=NAME"}, {"name": ""}]);
        spec["containers"][0]["resources"] = json!({"requests": {"cpu": "2", "memory": "1.5Gi"}, "limits": {"cpu": "1500m", "memory": "2Gi"}});
        let errs = validate("Pod", &pod(spec), true);
        assert_eq!(
            fields(&errs),
            vec![
                "spec.volumes[1].name: Duplicate value: \"data\"",
                "spec.containers[0].env[0].name: Invalid value: \"BAD=NAME\": a valid environment variable name must consist only of printable ASCII characters other than '='",
                "spec.containers[0].env[1].name: Required value",
                "spec.containers[0].volumeMounts[0].name: Not found: \"x\"",
                "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1500m",
            ]
        );
        assert_eq!(errs[3].reason, "FieldValueNotFound");
    }

    #[test]
    fn quantities() {
        let q = |s: &str| parse_quantity(s).unwrap();
        assert_eq!(q("100m").canonical(), "100m");
        assert_eq!(q("1000m").canonical(), "1");
        assert_eq!(q("0.5").canonical(), "500m");
        assert_eq!(q("64Mi").canonical(), "64Mi");
        assert_eq!(q("1.5Gi").canonical(), "1536Mi");
        assert_eq!(q("1G").canonical(), "1G");
        assert_eq!(q("1000M").canonical(), "1G");
        assert_eq!(q("1e3").canonical(), "1e3");
        assert_eq!(q("512Ki").canonical(), "512Ki");
        assert_eq!(q("0.5Ki").canonical(), "512");
        assert_eq!(q("-1").canonical(), "-1");
        assert_eq!(q("0").canonical(), "0");
        assert!(q("1").cmp(&q("1000m")).is_eq());
        assert!(q("1Gi").cmp(&q("1G")).is_gt());
        assert!(q("1e3").cmp(&q("1k")).is_eq());
        assert!(parse_quantity("abc").is_none());
        assert!(parse_quantity("1Xi").is_none());
        assert!(parse_quantity("").is_none());
    }

    fn deployment(selector: Value, labels: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 2, "selector": selector,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "template": {"metadata": {"labels": labels}, "spec": valid_pod_spec()}
            }
        })
    }

    #[test]
    fn workloads() {
        let ok = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web", "tier": "x"}),
        );
        assert!(validate("Deployment", &ok, true).is_empty());
        let bad = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "db"}));
        let errs = validate("Deployment", &bad, true);
        assert_eq!(
            fields(&errs),
            vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`"]
        );
        let empty = deployment(json!({}), json!({"app": "web"}));
        let errs = validate("Deployment", &empty, true);
        assert_eq!(
            fields(&errs),
            vec!["spec.selector: Invalid value: &LabelSelector{MatchLabels:map[string]string{},MatchExpressions:[]LabelSelectorRequirement{},}: empty selector is invalid for deployment"]
        );
        let mut neg = ok.clone();
        neg["spec"]["replicas"] = json!(-1);
        neg["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        neg["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
        let errs = validate("Deployment", &neg, true);
        assert_eq!(
            fields(&errs),
            vec![
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.containers[0].image: Required value",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            ]
        );
        let mut no_sel = ok.clone();
        no_sel["spec"].as_object_mut().unwrap().remove("selector");
        let errs = validate("ReplicaSet", &no_sel, true);
        assert_eq!(
            fields(&errs),
            vec![
                "spec.selector: Required value",
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\", \"tier\":\"x\"}: `selector` does not match template `labels`",
            ]
        );
        let mut ds = ok.clone();
        ds["spec"]["selector"] =
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]});
        let errs = validate("DaemonSet", &ds, true);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
        let mut sts = ok.clone();
        sts["spec"]["podManagementPolicy"] = json!("Random");
        let errs = validate("StatefulSet", &sts, true);
        assert_eq!(fields(&errs), vec!["spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'"]);
    }

    fn job(restart: &str) -> Value {
        let mut spec = valid_pod_spec();
        spec["restartPolicy"] = json!(restart);
        json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "default"},
            "spec": {
                "parallelism": 1, "completions": 1, "backoffLimit": 6, "completionMode": "NonIndexed",
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
                "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "u"}}, "spec": spec}
            }
        })
    }

    #[test]
    fn jobs_and_cronjobs() {
        assert!(validate("Job", &job("Never"), true).is_empty());
        let mut j = job("Always");
        j["spec"]["backoffLimit"] = json!(-1);
        let errs = validate("Job", &j, true);
        assert_eq!(
            fields(&errs),
            vec![
                "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
            ]
        );
        let cj = |schedule: &str| {
            let mut spec = valid_pod_spec();
            spec["restartPolicy"] = json!("OnFailure");
            json!({
                "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "default"},
                "spec": {"schedule": schedule, "concurrencyPolicy": "Allow",
                         "jobTemplate": {"spec": {"template": {"spec": spec}}}}
            })
        };
        for good in [
            "*/5 * * * *",
            "0 0 * * 0",
            "0 9-17/2 * jan-dec mon-fri",
            "@hourly",
            "@every 1h30m",
            "15,45 * 1 * ?",
        ] {
            let errs = validate("CronJob", &cj(good), true);
            assert!(errs.is_empty(), "{good}: {errs:?}");
        }
        let bad = |schedule: &str| fields(&validate("CronJob", &cj(schedule), true));
        assert_eq!(bad(""), vec!["spec.schedule: Required value"]);
        assert_eq!(bad("* * *"), vec!["spec.schedule: Invalid value: \"* * *\": expected exactly 5 fields, found 3: [* * *]"]);
        assert_eq!(bad("70 * * * *"), vec!["spec.schedule: Invalid value: \"70 * * * *\": end of range (70) above maximum (59): 70"]);
        assert_eq!(
            bad("x * * * *"),
            vec!["spec.schedule: Invalid value: \"x * * * *\": failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax"]
        );
        assert_eq!(
            bad("@sometimes"),
            vec![
                "spec.schedule: Invalid value: \"@sometimes\": unrecognized descriptor: @sometimes"
            ]
        );
        assert_eq!(bad("5-1 * * * *"), vec!["spec.schedule: Invalid value: \"5-1 * * * *\": beginning of range (5) beyond end of range (1): 5-1"]);
        assert_eq!(bad("* * 0 * *"), vec!["spec.schedule: Invalid value: \"* * 0 * *\": beginning of range (0) below minimum (1): 0"]);
    }

    fn service(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn services() {
        let ok = json!({"type": "ClusterIP", "sessionAffinity": "None", "selector": {"app": "x"},
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                                  {"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"}]});
        assert!(validate("Service", &service(ok.clone()), true).is_empty());
        let mut bad_name = service(ok.clone());
        bad_name["metadata"]["name"] = json!("Bad_Name");
        let errs = validate("Service", &bad_name, true);
        assert_eq!(
            fields(&errs),
            vec!["metadata.name: Invalid value: \"Bad_Name\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"]
        );
        let errs = validate(
            "Service",
            &service(json!({"type": "ClusterIP", "sessionAffinity": "None"})),
            true,
        );
        assert_eq!(fields(&errs), vec!["spec.ports: Required value"]);
        let headless = json!({"type": "ClusterIP", "sessionAffinity": "None", "clusterIP": "None", "clusterIPs": ["None"]});
        assert!(validate("Service", &service(headless), true).is_empty());
        let ext = json!({"type": "ExternalName", "sessionAffinity": "None"});
        assert_eq!(
            fields(&validate("Service", &service(ext), true)),
            vec!["spec.externalName: Required value"]
        );
        let weird = json!({"type": "Magic", "sessionAffinity": "None",
                           "ports": [{"port": 0, "protocol": "TCP", "targetPort": 1}, {"name": "b", "port": 80, "protocol": "HTTP", "targetPort": 1}]});
        assert_eq!(
            fields(&validate("Service", &service(weird), true)),
            vec![
                "spec.ports[0].name: Required value",
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            ]
        );
    }

    #[test]
    fn config_and_storage() {
        let cm = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"good.key": "v", "bad key": "v"}});
        let errs = validate("ConfigMap", &cm, true);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "data[bad key]");
        assert!(errs[0].message.starts_with("Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters"));
        let big = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"a": "x".repeat(MAX_SECRET_SIZE + 1)}});
        assert_eq!(
            fields(&validate("ConfigMap", &big, true)),
            vec![": Too long: must have at most 1048576 bytes"]
        );
        let tls = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        assert_eq!(
            fields(&validate("Secret", &tls, true)),
            vec!["data[tls.key]: Required value"]
        );
        let pvc = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {}});
        assert_eq!(
            fields(&validate("PersistentVolumeClaim", &pvc, true)),
            vec![
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value"
            ]
        );
        let es = json!({"metadata": {"name": "e", "namespace": "d"}, "endpoints": []});
        assert_eq!(
            fields(&validate("EndpointSlice", &es, true)),
            vec!["addressType: Required value"]
        );
        let es = json!({"metadata": {"name": "e", "namespace": "d"}, "addressType": "IPv5"});
        assert_eq!(
            fields(&validate("EndpointSlice", &es, true)),
            vec!["addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""]
        );
        let lease = json!({"metadata": {"name": "l", "namespace": "d"}, "spec": {"leaseDurationSeconds": 0}});
        assert_eq!(
            fields(&validate("Lease", &lease, true)),
            vec!["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
        );
    }

    #[test]
    fn updates() {
        let old = pod(valid_pod_spec());
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:1.26");
        new["spec"]["activeDeadlineSeconds"] = json!(30);
        new["spec"]["tolerations"] =
            json!([{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]);
        assert!(validate_update("Pod", &new, &old, true).is_empty());
        new["spec"]["nodeName"] = json!("node-1");
        let errs = validate_update("Pod", &new, &old, true);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec");
        assert_eq!(errs[0].reason, "FieldValueForbidden");
        assert!(errs[0].message.starts_with(
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
        ));
        assert!(errs[0].message.contains("NodeName"));

        let old = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
        );
        let new = deployment(
            json!({"matchLabels": {"app": "web", "v": "2"}}),
            json!({"app": "web", "v": "2"}),
        );
        assert_eq!(
            fields(&validate_update("Deployment", &new, &old, true)),
            vec!["spec.selector: Invalid value: &LabelSelector{MatchLabels:map[string]string{app: web,v: 2,},MatchExpressions:[]LabelSelectorRequirement{},}: field is immutable"]
        );
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(5);
        assert!(validate_update("Deployment", &scaled, &old, true).is_empty());

        let old_job = job("Never");
        let mut new_job = old_job.clone();
        new_job["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox");
        let errs = validate_update("Job", &new_job, &old_job, true);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.template");
        assert!(errs[0].message.ends_with(": field is immutable"));

        let base = json!({"type": "ClusterIP", "sessionAffinity": "None", "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"],
                          "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]});
        let old_svc = service(base.clone());
        let mut new_svc = old_svc.clone();
        new_svc["spec"]["clusterIP"] = json!("10.0.0.6");
        new_svc["spec"]["clusterIPs"] = json!(["10.0.0.6"]);
        assert_eq!(
            fields(&validate_update("Service", &new_svc, &old_svc, true)),
            vec!["spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.6\"}: may not change once set"]
        );
        let mut keep = old_svc.clone();
        keep["spec"]["clusterIP"] = json!("");
        keep["spec"].as_object_mut().unwrap().remove("clusterIPs");
        assert!(validate_update("Service", &keep, &old_svc, true).is_empty());

        let old_pvc = json!({"metadata": {"name": "p", "namespace": "d"},
                             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                             "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}});
        let mut grown = old_pvc.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert!(validate_update("PersistentVolumeClaim", &grown, &old_pvc, true).is_empty());
        let mut changed = old_pvc.clone();
        changed["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        let errs = validate_update("PersistentVolumeClaim", &changed, &old_pvc, true);
        assert_eq!(errs.len(), 1);
        assert!(errs[0]
            .message
            .starts_with("Forbidden: spec is immutable after creation except resources.requests"));
        let mut shrunk = old_pvc.clone();
        shrunk["spec"]["resources"]["requests"]["storage"] = json!("512Mi");
        assert_eq!(
            fields(&validate_update("PersistentVolumeClaim", &shrunk, &old_pvc, true)),
            vec!["spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"]
        );

        let old_cm = json!({"metadata": {"name": "c", "namespace": "d"}, "immutable": true, "data": {"a": "1"}});
        let mut new_cm = old_cm.clone();
        new_cm["data"]["a"] = json!("2");
        assert_eq!(
            fields(&validate_update("ConfigMap", &new_cm, &old_cm, true)),
            vec!["data: Forbidden: field is immutable when `immutable` is set"]
        );
    }

    #[test]
    fn more_update_rules() {
        let sts = json!({
            "metadata": {"name": "db", "namespace": "d"},
            "spec": {"replicas": 1, "serviceName": "db", "podManagementPolicy": "OrderedReady",
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                     "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}}, "spec": valid_pod_spec()}}
        });
        let mut scaled = sts.clone();
        scaled["spec"]["replicas"] = json!(3);
        scaled["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert!(validate_update("StatefulSet", &scaled, &sts, true).is_empty());
        let mut renamed = sts.clone();
        renamed["spec"]["serviceName"] = json!("other");
        let errs = validate_update("StatefulSet", &renamed, &sts, true);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec");
        assert!(errs[0].message.starts_with(
            "Forbidden: updates to statefulset spec for fields other than 'replicas'"
        ));

        let pvc = json!({"metadata": {"name": "p", "namespace": "d"},
                         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        let mut bigger = pvc.clone();
        bigger["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let errs = validate_update("PersistentVolumeClaim", &bigger, &pvc, true);
        assert_eq!(
            errs.len(),
            1,
            "an unbound claim may not be resized: {errs:?}"
        );
        let mut bound = pvc.clone();
        bound["spec"]["volumeName"] = json!("pv-1");
        assert!(validate_update("PersistentVolumeClaim", &bound, &pvc, true).is_empty());

        let sec = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "Opaque", "data": {"a": "eA=="}});
        let mut retyped = sec.clone();
        retyped["type"] = json!("kubernetes.io/basic-auth");
        retyped["data"] = json!({"username": "eA=="});
        assert_eq!(
            fields(&validate_update("Secret", &retyped, &sec, true)),
            vec!["type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"]
        );

        let es = json!({"metadata": {"name": "e", "namespace": "d"}, "addressType": "IPv4", "endpoints": []});
        let mut es6 = es.clone();
        es6["addressType"] = json!("IPv6");
        assert_eq!(
            fields(&validate_update("EndpointSlice", &es6, &es, true)),
            vec!["addressType: Invalid value: \"IPv6\": field is immutable"]
        );

        let mut moved = es.clone();
        moved["metadata"]["namespace"] = json!("other");
        assert_eq!(
            fields(&validate_update("EndpointSlice", &moved, &es, true)),
            vec!["metadata.namespace: Invalid value: \"other\": field is immutable"]
        );

        let p = pod(valid_pod_spec());
        let mut more = p.clone();
        more["spec"]["containers"] =
            json!([valid_pod_spec()["containers"][0].clone(), {"name": "b", "image": "x"}]);
        assert_eq!(
            fields(&validate_update("Pod", &more, &p, true)),
            vec!["spec.containers: Forbidden: pod updates may not add or remove containers"]
        );
        let mut tol = p.clone();
        tol["spec"]["tolerations"] =
            json!([{"key": "a", "operator": "Equal", "value": "1", "effect": "NoSchedule"}]);
        let mut tol2 = tol.clone();
        tol2["spec"]["tolerations"][0]["value"] = json!("2");
        assert_eq!(
            fields(&validate_update("Pod", &tol2, &tol, true)),
            vec!["spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"]
        );
    }

    #[test]
    fn misc_specs() {
        let mut spec = valid_pod_spec();
        spec["tolerations"] = json!([{"operator": "Equal", "value": "x"}, {"key": "k", "operator": "Exists", "value": "v"}]);
        spec["containers"][0]["image"] = json!(" nginx");
        spec["initContainers"] = json!([{"name": "init", "image": "x", "restartPolicy": "OnFailure", "livenessProbe": {"exec": {"command": ["true"]}}}]);
        let errs = validate("Pod", &pod(spec), true);
        assert_eq!(
            fields(&errs),
            vec![
                "spec.containers[0].image: Invalid value: \" nginx\": must not have leading or trailing whitespace",
                "spec.initContainers[0].restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\"",
                "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
                "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                "spec.tolerations[1].operator: Invalid value: core.Toleration{Key:\"k\", Operator:\"Exists\", Value:\"v\", Effect:\"\", TolerationSeconds:(*int64)(nil)}: value must be empty when `operator` is 'Exists'",
            ]
        );
        let ds = json!({
            "metadata": {"name": "ds", "namespace": "d"},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}},
                     "template": {"metadata": {"labels": {"a": "b"}}, "spec": valid_pod_spec()}}
        });
        assert_eq!(
            fields(&validate("DaemonSet", &ds, true)),
            vec!["spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"]
        );
        let node = json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}, {"key": "k", "effect": "NoSchedule"}, {"key": "x", "effect": "Sometimes"}]}});
        let errs = validate("Node", &node, false);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].reason, "FieldValueDuplicate");
        assert_eq!(errs[1].message, "Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"");
        let sts_name = json!({"metadata": {"name": "a.b", "namespace": "d"}});
        assert_eq!(
            fields(&validate("StatefulSet", &sts_name, true))[0],
            "metadata.name: Invalid value: \"a.b\": must not contain dots"
        );
        let long = json!({"metadata": {"name": "c".repeat(53), "namespace": "d"}, "spec": {"schedule": "@daily"}});
        assert!(fields(&validate("CronJob", &long, true))
            .iter()
            .any(|e| e.ends_with("must be no more than 52 characters")));
    }

    #[test]
    fn meta_immutable() {
        let old = json!({"metadata": {"name": "x", "namespace": "d", "uid": "1"}});
        let new = json!({"metadata": {"name": "x", "namespace": "d", "uid": "2"}});
        let errs = validate_update("ConfigMap", &new, &old, true);
        assert_eq!(
            fields(&errs),
            vec!["metadata.uid: Invalid value: \"2\": field is immutable"]
        );
    }

    #[test]
    fn webhook_configurations() {
        let cfg = |hooks: Value| json!({"metadata": {"name": "c"}, "webhooks": hooks});
        let hook = |resources: Value| {
            json!({"name": "a.example.com", "clientConfig": {"url": "https://h/x"},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": resources}],
                "sideEffects": "None", "admissionReviewVersions": ["v1"]})
        };
        let ok = cfg(json!([hook(json!(["pods", "pods/status", "*/scale"]))]));
        assert!(validate("ValidatingWebhookConfiguration", &ok, false).is_empty());
        let overlap = cfg(json!([hook(json!(["pods/*", "pods/status", "*/*"]))]));
        assert_eq!(
            fields(&validate("MutatingWebhookConfiguration", &overlap, false)),
            vec![
                "webhooks[0].rules[0].resources[1]: Invalid value: \"pods/status\": if 'pods/*' is present, must not specify pods/status",
                "webhooks[0].rules[0].resources: Invalid value: []string{\"pods/*\", \"pods/status\", \"*/*\"}: if '*/*' is present, must not specify other resources",
            ]
        );
        let mut bad = hook(json!(["pods"]));
        bad["reinvocationPolicy"] = json!("Sometimes");
        bad["clientConfig"] = json!({"url": "https://u@h/x#f"});
        assert_eq!(
            fields(&validate("MutatingWebhookConfiguration", &cfg(json!([bad])), false)),
            vec![
                "webhooks[0].reinvocationPolicy: Unsupported value: \"Sometimes\": supported values: \"IfNeeded\", \"Never\"",
                "webhooks[0].clientConfig.url: Invalid value: \"u\": user information is not permitted in the URL",
                "webhooks[0].clientConfig.url: Invalid value: \"f\": fragments are not permitted in the URL",
            ]
        );
        // an update keeps what the old object already had
        let mut some = hook(json!(["pods"]));
        some["sideEffects"] = json!("Some");
        let old = cfg(json!([some.clone()]));
        assert!(validate_update("ValidatingWebhookConfiguration", &old, &old, false).is_empty());
        assert_eq!(
            fields(&validate("ValidatingWebhookConfiguration", &old, false)),
            vec!["webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\""]
        );
        // CEL match conditions cannot be evaluated here
        let mut cel = hook(json!(["pods"]));
        cel["matchConditions"] = json!([{"name": "x", "expression": "true"}]);
        assert_eq!(
            fields(&validate("ValidatingWebhookConfiguration", &cfg(json!([cel])), false)),
            vec!["webhooks[0].matchConditions: Forbidden: CEL match conditions are not supported by this apiserver"]
        );
    }
}
