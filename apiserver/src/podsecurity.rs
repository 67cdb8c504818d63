//! Pod Security Standards, as upstream's PodSecurity admission
//! (k8s.io/pod-security-admission) evaluates them
//!
//! Pure functions over the JSON of pods and pod templates:
//!
//! - namespace labels `pod-security.kubernetes.io/{enforce,audit,warn}` and
//!   their `-version` labels resolve to a [`Policy`] ([`policy_to_evaluate`],
//!   [`from_namespace_labels`]); bad values are field errors with upstream's
//!   text, which reject a namespace create or update;
//! - [`check`] / [`check_version`] run the checks of a level (baseline, or
//!   baseline plus restricted) on a pod spec and its metadata and return each
//!   violation with upstream's reason and detail text, in upstream's order;
//! - [`forbidden_message`] / [`warning_message`] render the denial and the
//!   warning / audit annotation;
//! - [`pod_template`] / [`check_template`] reach the pod template of workload
//!   kinds, which upstream checks for `warn` and `audit` only;
//! - [`evaluate`] combines the three modes the way upstream's admission does
//!   for one object.
//!
//! Checks are versioned like upstream's: a policy version `v1.N` runs each
//! check as it stood in Kubernetes 1.N, and `latest` (or any newer version)
//! runs the newest form. Exemptions are not handled here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::validation::FieldError;

pub const ENFORCE_LEVEL_LABEL: &str = "pod-security.kubernetes.io/enforce";
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";
pub const AUDIT_LEVEL_LABEL: &str = "pod-security.kubernetes.io/audit";
pub const AUDIT_VERSION_LABEL: &str = "pod-security.kubernetes.io/audit-version";
pub const WARN_LEVEL_LABEL: &str = "pod-security.kubernetes.io/warn";
pub const WARN_VERSION_LABEL: &str = "pod-security.kubernetes.io/warn-version";

/// Audit annotation naming the enforced policy of an evaluated pod.
pub const ENFORCE_POLICY_ANNOTATION: &str = "pod-security.kubernetes.io/enforce-policy";
/// Audit annotation carrying the violations of the audit level.
pub const AUDIT_VIOLATIONS_ANNOTATION: &str = "pod-security.kubernetes.io/audit-violations";

const LEVEL_ERROR: &str = "must be one of privileged, baseline, restricted";
const VERSION_ERROR: &str = "must be \"latest\" or \"v1.x\"";

// ---------------------------------------------------------------------------
// levels, versions, policies
// ---------------------------------------------------------------------------

/// A Pod Security Standards level, ordered from least to most strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    /// Parse a label value: "privileged", "baseline" or "restricted".
    pub fn parse(s: &str) -> Result<Level, String> {
        match s {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            _ => Err(LEVEL_ERROR.to_string()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::parse(s)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy version: "latest" or "v1.N".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    Latest,
    /// `v1.N`, holding N
    V1(u64),
}

impl Version {
    /// Parse a label value: "latest", or "v1." and a minor number without
    /// leading zeros.
    pub fn parse(s: &str) -> Result<Version, String> {
        if s == "latest" {
            return Ok(Version::Latest);
        }
        let minor = s.strip_prefix("v1.").unwrap_or_default();
        let digits_ok = !minor.is_empty()
            && minor.bytes().all(|b| b.is_ascii_digit())
            && (minor.len() == 1 || !minor.starts_with('0'));
        if !digits_ok {
            return Err(VERSION_ERROR.to_string());
        }
        // upstream converts with a 64-bit signed integer
        match minor.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Version::V1(n.unsigned_abs())),
            _ => Err(VERSION_ERROR.to_string()),
        }
    }

    /// Whether checks introduced in Kubernetes 1.`minor` apply at this version.
    fn at_least(self, minor: u64) -> bool {
        match self {
            Version::Latest => true,
            Version::V1(n) => n >= minor,
        }
    }
}

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Latest => f.write_str("latest"),
            Version::V1(n) => write!(f, "v1.{n}"),
        }
    }
}

/// A level at a version, shown as upstream does: `restricted:latest`, `baseline:v1.30`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LevelVersion {
    pub level: Level,
    pub version: Version,
}

impl LevelVersion {
    pub const PRIVILEGED_LATEST: LevelVersion = LevelVersion {
        level: Level::Privileged,
        version: Version::Latest,
    };

    pub fn new(level: Level, version: Version) -> Self {
        LevelVersion { level, version }
    }
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level, self.version)
    }
}

/// The three modes of a namespace's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// violations deny the pod
    pub enforce: LevelVersion,
    /// violations are recorded in the audit annotation
    pub audit: LevelVersion,
    /// violations are returned as a warning
    pub warn: LevelVersion,
}

impl Default for Policy {
    /// Unlabelled namespaces: privileged in every mode.
    fn default() -> Self {
        Policy {
            enforce: LevelVersion::PRIVILEGED_LATEST,
            audit: LevelVersion::PRIVILEGED_LATEST,
            warn: LevelVersion::PRIVILEGED_LATEST,
        }
    }
}

impl Policy {
    pub fn fully_privileged(&self) -> bool {
        self.enforce.level == Level::Privileged
            && self.audit.level == Level::Privileged
            && self.warn.level == Level::Privileged
    }
}

fn label_error(label: &str, value: &str, detail: &str) -> FieldError {
    FieldError {
        reason: "FieldValueInvalid",
        field: format!("metadata.labels[{label}]"),
        message: format!("Invalid value: {}: {detail}", go_quote(value)),
    }
}

/// Resolve namespace labels to the policy to evaluate, as upstream does.
///
/// A usable policy is always returned, with the errors of the labels that
/// could not be parsed: a bad enforce level evaluates as restricted, a bad
/// audit or warn level as privileged, a bad version as latest. Unset modes
/// are privileged:latest; when warn is unset and enforce is set to a stricter
/// level, warn follows enforce (and its version, unless warn-version is set).
pub fn policy_to_evaluate(labels: &BTreeMap<String, String>) -> (Policy, Vec<FieldError>) {
    let mut p = Policy::default();
    let mut errs = Vec::new();
    let level = |label: &str, fallback: Level, errs: &mut Vec<FieldError>| {
        labels.get(label).map(|v| {
            Level::parse(v).map_err(|e| {
                errs.push(label_error(label, v, &e));
                fallback
            })
        })
    };
    let enforce_level = level(ENFORCE_LEVEL_LABEL, Level::Restricted, &mut errs);
    let has_enforce_level = matches!(enforce_level, Some(Ok(_)));
    if let Some(l) = enforce_level {
        p.enforce.level = l.unwrap_or_else(|l| l);
    }
    let version = |label: &str, errs: &mut Vec<FieldError>| {
        labels.get(label).map(|v| {
            Version::parse(v).unwrap_or_else(|e| {
                errs.push(label_error(label, v, &e));
                Version::Latest
            })
        })
    };
    if let Some(v) = version(ENFORCE_VERSION_LABEL, &mut errs) {
        p.enforce.version = v;
    }
    if let Some(l) = level(AUDIT_LEVEL_LABEL, Level::Privileged, &mut errs) {
        p.audit.level = l.unwrap_or_else(|l| l);
    }
    if let Some(v) = version(AUDIT_VERSION_LABEL, &mut errs) {
        p.audit.version = v;
    }
    let warn_level = level(WARN_LEVEL_LABEL, Level::Privileged, &mut errs);
    let has_warn_level = warn_level.is_some();
    if let Some(l) = warn_level {
        p.warn.level = l.unwrap_or_else(|l| l);
    }
    let warn_version = version(WARN_VERSION_LABEL, &mut errs);
    let has_warn_version = warn_version.is_some();
    if let Some(v) = warn_version {
        p.warn.version = v;
    }
    if !has_warn_level && has_enforce_level && p.enforce.level > p.warn.level {
        p.warn.level = p.enforce.level;
        if !has_warn_version {
            p.warn.version = p.enforce.version;
        }
    }
    (p, errs)
}

/// Render field errors the way upstream's aggregate error does:
/// `field: message`, several in brackets.
pub fn render_errors(errs: &[FieldError]) -> String {
    let list: Vec<String> = errs
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    if list.len() == 1 {
        list.join("")
    } else {
        format!("[{}]", list.join(", "))
    }
}

/// The policy of a namespace's labels, or the rendered label errors
/// (e.g. `metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value:
/// "foo": must be one of privileged, baseline, restricted`).
pub fn from_namespace_labels(labels: &BTreeMap<String, String>) -> Result<Policy, String> {
    let (policy, errs) = policy_to_evaluate(labels);
    if errs.is_empty() {
        Ok(policy)
    } else {
        Err(render_errors(&errs))
    }
}

/// The label errors that reject a namespace create (`old` = None) or update,
/// as upstream's namespace validation: an update whose bad labels are exactly
/// the ones the namespace already had is let through.
pub fn validate_namespace_labels(
    new: &BTreeMap<String, String>,
    old: Option<&BTreeMap<String, String>>,
) -> Vec<FieldError> {
    let (_, new_errs) = policy_to_evaluate(new);
    if new_errs.is_empty() {
        return new_errs;
    }
    if let Some(old) = old {
        let (_, old_errs) = policy_to_evaluate(old);
        if !old_errs.is_empty() && old_errs == new_errs {
            return Vec::new();
        }
    }
    new_errs
}

/// `metadata.labels` of an object, string values only.
pub fn object_labels(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a namespace update that changes the enforce policy from `old` to
/// `new` calls for checking the namespace's existing pods (upstream warns
/// about the pods that would violate a tightened enforce level).
pub fn enforce_tightened(old: &Policy, new: &Policy) -> bool {
    if new.enforce == old.enforce || new.enforce.level == Level::Privileged {
        return false;
    }
    !(new.enforce.version == old.enforce.version && new.enforce.level <= old.enforce.level)
}

// ---------------------------------------------------------------------------
// violations and messages
// ---------------------------------------------------------------------------

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// upstream's check id, e.g. "allowPrivilegeEscalation", "hostPorts"
    pub check: &'static str,
    /// upstream's forbidden reason, e.g. "allowPrivilegeEscalation != false"
    pub reason: String,
    /// upstream's forbidden detail, e.g.
    /// `container "app" must set securityContext.allowPrivilegeEscalation=false`
    pub detail: String,
}

/// Each violation as `reason (detail)`, joined with ", ".
pub fn forbidden_detail(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.clone()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The reasons alone, joined with ", " (upstream's summary of a pod in the
/// warnings about existing pods).
pub fn forbidden_reasons(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| v.reason.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The denial of a pod: `violates PodSecurity "restricted:latest": reason (detail), ...`
/// (upstream answers it as 403 Forbidden: `pods "name" is forbidden: <this>`).
pub fn forbidden_message(level: Level, version: Version, violations: &[Violation]) -> String {
    format!(
        "violates PodSecurity \"{}\": {}",
        LevelVersion::new(level, version),
        forbidden_detail(violations)
    )
}

/// The warning (warn mode) and audit annotation (audit mode):
/// `would violate PodSecurity "baseline:latest": reason (detail), ...`.
pub fn warning_message(level: Level, version: Version, violations: &[Violation]) -> String {
    format!(
        "would violate PodSecurity \"{}\": {}",
        LevelVersion::new(level, version),
        forbidden_detail(violations)
    )
}

// ---------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------

static NULL: Value = Value::Null;

/// A field that is present and not null.
fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Init containers, containers, then ephemeral containers, as upstream visits them.
fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |k| spec.get(k).and_then(Value::as_array).into_iter().flatten())
}

fn name(c: &Value) -> String {
    str_of(c, "name").to_string()
}

/// A non-null field of the container's (or the pod's) securityContext.
fn security<'a>(owner: &'a Value, key: &str) -> Option<&'a Value> {
    get(owner, "securityContext").and_then(|sc| get(sc, key))
}

fn is_windows(spec: &Value) -> bool {
    spec.pointer("/os/name").and_then(Value::as_str) == Some("windows")
}

/// `hostUsers: false`: the pod runs in a user namespace.
fn in_user_namespace(spec: &Value) -> bool {
    spec.get("hostUsers").and_then(Value::as_bool) == Some(false)
}

fn plural<'a>(singular: &'a str, many: &'a str, n: usize) -> &'a str {
    if n == 1 {
        singular
    } else {
        many
    }
}

/// `"a", "b"` (no escaping, as upstream).
fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let inner: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("\"{}\"", inner.join("\", \""))
}

fn set_list(set: &BTreeSet<String>) -> Vec<String> {
    set.iter().cloned().collect()
}

/// `container "a"` / `containers "a", "b"`.
fn containers_phrase(names: &[String]) -> String {
    format!(
        "{} {}",
        plural("container", "containers", names.len()),
        join_quote(names)
    )
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
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn violation(check: &'static str, reason: &str, detail: String) -> Option<Violation> {
    Some(Violation {
        check,
        reason: reason.to_string(),
        detail,
    })
}

// ---------------------------------------------------------------------------
// evaluation
// ---------------------------------------------------------------------------

/// The violations of `level` at the latest version.
pub fn check(level: Level, pod_spec: &Value, pod_meta: &Value) -> Vec<Violation> {
    check_version(level, Version::Latest, pod_spec, pod_meta)
}

/// The violations of `level` at `version`, in upstream's order: the baseline
/// checks by id, then the restricted ones by id. A restricted check replaces
/// the baseline check it supersedes (capabilities, hostPath volumes, seccomp,
/// procMount) from the version it was introduced in.
pub fn check_version(
    level: Level,
    version: Version,
    pod_spec: &Value,
    pod_meta: &Value,
) -> Vec<Violation> {
    if level == Level::Privileged {
        return Vec::new();
    }
    let spec = pod_spec;
    let meta = pod_meta;
    let restricted = level == Level::Restricted;
    let v = version;
    let mut checks: Vec<Option<Violation>> = vec![app_armor(meta, spec)];
    if !(restricted && v.at_least(22)) {
        checks.push(capabilities_baseline(spec));
    }
    checks.push(host_namespaces(spec));
    if !restricted {
        checks.push(host_path_volumes(spec));
    }
    checks.push(host_ports(spec));
    if v.at_least(34) {
        checks.push(host_probes_and_lifecycle(spec));
    }
    checks.push(privileged(spec));
    if !(restricted && v.at_least(35)) {
        let relaxed = v.at_least(35) && in_user_namespace(spec);
        if !relaxed {
            checks.push(proc_mount("procMount", spec));
        }
    }
    checks.push(se_linux_options(spec, v));
    if !(restricted && v.at_least(19)) {
        if v.at_least(19) {
            checks.push(seccomp_baseline(spec));
        } else {
            checks.push(seccomp_annotations(meta, spec));
        }
    }
    checks.push(sysctls(spec, v));
    checks.push(windows_host_process(spec));
    if restricted {
        // from 1.25 on, Windows pods are exempt from the Linux-only fields
        let windows_exempt = v.at_least(25) && is_windows(spec);
        let user_ns_relaxed = v.at_least(35) && in_user_namespace(spec);
        if v.at_least(8) && !windows_exempt {
            checks.push(allow_privilege_escalation(spec));
        }
        if v.at_least(22) && !windows_exempt {
            checks.push(capabilities_restricted(spec));
        }
        if v.at_least(35) {
            checks.push(proc_mount("procMount_restricted", spec));
        }
        checks.push(restricted_volumes(spec));
        if !user_ns_relaxed {
            checks.push(run_as_non_root(spec));
        }
        if v.at_least(23) && !user_ns_relaxed {
            checks.push(run_as_user(spec));
        }
        if v.at_least(19) && !windows_exempt {
            checks.push(seccomp_restricted(spec));
        }
    }
    checks.into_iter().flatten().collect()
}

// ---------------------------------------------------------------------------
// baseline checks
// ---------------------------------------------------------------------------

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

fn app_armor_type_allowed(t: &str) -> bool {
    matches!(t, "RuntimeDefault" | "Localhost")
}

fn app_armor_annotation_allowed(v: &str) -> bool {
    v.is_empty() || v == "runtime/default" || v.starts_with("localhost/")
}

/// AppArmor: profile types RuntimeDefault or Localhost, annotations
/// runtime/default or localhost/*.
fn app_armor(meta: &Value, spec: &Value) -> Option<Violation> {
    let mut setters = Vec::new();
    let mut bad_values = BTreeSet::new();
    if let Some(p) = security(spec, "appArmorProfile") {
        let t = str_of(p, "type");
        if !app_armor_type_allowed(t) {
            setters.push("pod".to_string());
            bad_values.insert(t.to_string());
        }
    }
    let mut bad_containers = Vec::new();
    for c in containers(spec) {
        if let Some(p) = security(c, "appArmorProfile") {
            let t = str_of(p, "type");
            if !app_armor_type_allowed(t) {
                bad_containers.push(name(c));
                bad_values.insert(t.to_string());
            }
        }
    }
    if !bad_containers.is_empty() {
        setters.push(containers_phrase(&bad_containers));
    }
    let mut annotations: Vec<String> = get(meta, "annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let v = v.as_str().unwrap_or_default();
            (k.starts_with(APPARMOR_ANNOTATION_PREFIX) && !app_armor_annotation_allowed(v))
                .then(|| format!("{k}={}", go_quote(v)))
        })
        .collect();
    let mut values = set_list(&bad_values);
    if !annotations.is_empty() {
        annotations.sort();
        setters.push(plural("annotation", "annotations", annotations.len()).to_string());
        values.extend(annotations);
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        "appArmorProfile",
        plural(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
    )
}

const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added_capabilities(c: &Value) -> impl Iterator<Item = &str> {
    security(c, "capabilities")
        .and_then(|caps| caps.get("add"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|x| x.as_str().unwrap_or_default())
}

/// Capabilities added beyond the container runtime's default set.
fn capabilities_baseline(spec: &Value) -> Option<Violation> {
    let mut bad_containers = Vec::new();
    let mut bad_caps = BTreeSet::new();
    for c in containers(spec) {
        let mut valid = true;
        for cap in added_capabilities(c) {
            if !BASELINE_CAPABILITIES.contains(&cap) {
                valid = false;
                bad_caps.insert(cap.to_string());
            }
        }
        if !valid {
            bad_containers.push(name(c));
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    violation(
        "capabilities_baseline",
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad_containers),
            join_quote(&set_list(&bad_caps))
        ),
    )
}

/// hostNetwork, hostPID, hostIPC.
fn host_namespaces(spec: &Value) -> Option<Violation> {
    let set: Vec<&str> = [
        ("hostNetwork", "hostNetwork=true"),
        ("hostPID", "hostPID=true"),
        ("hostIPC", "hostIPC=true"),
    ]
    .into_iter()
    .filter(|(k, _)| spec.get(*k).and_then(Value::as_bool) == Some(true))
    .map(|(_, text)| text)
    .collect();
    if set.is_empty() {
        return None;
    }
    violation("hostNamespaces", "host namespaces", set.join(", "))
}

fn volumes(spec: &Value) -> impl Iterator<Item = &Value> {
    spec.get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// hostPath volumes.
fn host_path_volumes(spec: &Value) -> Option<Violation> {
    let bad: Vec<String> = volumes(spec)
        .filter(|v| get(v, "hostPath").is_some())
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "hostPathVolumes",
        "hostPath volumes",
        format!(
            "{} {}",
            plural("volume", "volumes", bad.len()),
            join_quote(&bad)
        ),
    )
}

/// Non-zero hostPort on any container port.
fn host_ports(spec: &Value) -> Option<Violation> {
    let mut bad_containers = Vec::new();
    let mut ports = BTreeSet::new();
    for c in containers(spec) {
        let mut valid = true;
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let hp = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            if hp != 0 {
                valid = false;
                ports.insert(hp.to_string());
            }
        }
        if !valid {
            bad_containers.push(name(c));
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    let n = bad_containers.len();
    violation(
        "hostPorts",
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad_containers),
            plural("uses", "use", n),
            plural("hostPort", "hostPorts", ports.len()),
            set_list(&ports).join(", ")
        ),
    )
}

/// The non-empty `host` of a handler's httpGet and tcpSocket.
fn handler_hosts(handler: Option<&Value>) -> Vec<String> {
    let Some(h) = handler else {
        return Vec::new();
    };
    ["httpGet", "tcpSocket"]
        .into_iter()
        .filter_map(|k| get(h, k))
        .map(|x| str_of(x, "host"))
        .filter(|host| !host.is_empty())
        .map(str::to_string)
        .collect()
}

/// Probes and lifecycle handlers must not name a host (1.34+).
fn host_probes_and_lifecycle(spec: &Value) -> Option<Violation> {
    let mut bad_containers = BTreeSet::new();
    let mut hosts = BTreeSet::new();
    for c in containers(spec) {
        let lifecycle = get(c, "lifecycle");
        let handlers = [
            get(c, "livenessProbe"),
            get(c, "readinessProbe"),
            get(c, "startupProbe"),
            lifecycle.and_then(|l| get(l, "postStart")),
            lifecycle.and_then(|l| get(l, "preStop")),
        ];
        for h in handlers {
            let bad = handler_hosts(h);
            if !bad.is_empty() {
                bad_containers.insert(name(c));
                hosts.extend(bad);
            }
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    let n = bad_containers.len();
    violation(
        "hostProbesAndHostLifecycle",
        "probe or lifecycle host",
        format!(
            "{} {} {} {}",
            containers_phrase(&set_list(&bad_containers)),
            plural("uses", "use", n),
            plural(
                "probe or lifecycle host",
                "probe or lifecycle hosts",
                hosts.len()
            ),
            join_quote(&set_list(&hosts))
        ),
    )
}

/// Privileged containers.
fn privileged(spec: &Value) -> Option<Violation> {
    let bad: Vec<String> = containers(spec)
        .filter(|c| security(c, "privileged").and_then(Value::as_bool) == Some(true))
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "privileged",
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&bad)
        ),
    )
}

/// procMount other than Default (the baseline check, or its restricted twin).
fn proc_mount(check: &'static str, spec: &Value) -> Option<Violation> {
    let mut bad_containers = Vec::new();
    let mut types = BTreeSet::new();
    for c in containers(spec) {
        if let Some(pm) = security(c, "procMount") {
            let pm = pm.as_str().unwrap_or_default();
            if pm != "Default" {
                bad_containers.push(name(c));
                types.insert(pm.to_string());
            }
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    violation(
        check,
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad_containers),
            join_quote(&set_list(&types))
        ),
    )
}

/// SELinux: type from the container types, no user, no role.
fn se_linux_options(spec: &Value, v: Version) -> Option<Violation> {
    let allowed_type = |t: &str| {
        matches!(
            t,
            "" | "container_t" | "container_init_t" | "container_kvm_t"
        ) || (v.at_least(31) && t == "container_engine_t")
    };
    let mut bad_types = BTreeSet::new();
    let mut set_user = false;
    let mut set_role = false;
    let mut valid = |opts: &Value| {
        let mut ok = true;
        let t = str_of(opts, "type");
        if !allowed_type(t) {
            ok = false;
            bad_types.insert(t.to_string());
        }
        if !str_of(opts, "user").is_empty() {
            ok = false;
            set_user = true;
        }
        if !str_of(opts, "role").is_empty() {
            ok = false;
            set_role = true;
        }
        ok
    };
    let mut setters = Vec::new();
    if let Some(opts) = security(spec, "seLinuxOptions") {
        if !valid(opts) {
            setters.push("pod".to_string());
        }
    }
    let mut bad_containers = Vec::new();
    for c in containers(spec) {
        if let Some(opts) = security(c, "seLinuxOptions") {
            if !valid(opts) {
                bad_containers.push(name(c));
            }
        }
    }
    if !bad_containers.is_empty() {
        setters.push(containers_phrase(&bad_containers));
    }
    if setters.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !bad_types.is_empty() {
        data.push(format!(
            "{} {}",
            plural("type", "types", bad_types.len()),
            join_quote(&set_list(&bad_types))
        ));
    }
    if set_user {
        data.push("user may not be set".to_string());
    }
    if set_role {
        data.push("role may not be set".to_string());
    }
    violation(
        "seLinuxOptions",
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            data.join("; ")
        ),
    )
}

fn seccomp_type_allowed(t: &str) -> bool {
    matches!(t, "RuntimeDefault" | "Localhost")
}

const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

/// Seccomp before 1.19: the alpha annotations, no "unconfined".
fn seccomp_annotations(meta: &Value, spec: &Value) -> Option<Violation> {
    let annotations = get(meta, "annotations").unwrap_or(&NULL);
    let allowed =
        |v: &str| v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/");
    let mut bad = BTreeSet::new();
    let mut inspect = |key: String| {
        if let Some(v) = annotations.get(&key) {
            let v = v.as_str().unwrap_or_default();
            if !allowed(v) {
                bad.insert(format!("{key}={}", go_quote(v)));
            }
        }
    };
    inspect(SECCOMP_POD_ANNOTATION.to_string());
    for c in containers(spec) {
        inspect(format!(
            "{SECCOMP_CONTAINER_ANNOTATION_PREFIX}{}",
            str_of(c, "name")
        ));
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "seccompProfile_baseline",
        "seccompProfile",
        format!(
            "forbidden {} {}",
            plural("annotation", "annotations", bad.len()),
            set_list(&bad).join(", ")
        ),
    )
}

/// Pod and containers that set seccompProfile.type to a forbidden value,
/// the forbidden values, and whether the pod sets an allowed one.
struct SeccompScan {
    setters: Vec<String>,
    bad_values: BTreeSet<String>,
    /// containers without a seccompProfile of their own
    unset_containers: Vec<String>,
    pod_allowed: bool,
}

fn seccomp_scan(spec: &Value) -> SeccompScan {
    let mut scan = SeccompScan {
        setters: Vec::new(),
        bad_values: BTreeSet::new(),
        unset_containers: Vec::new(),
        pod_allowed: false,
    };
    if let Some(p) = security(spec, "seccompProfile") {
        let t = str_of(p, "type");
        if seccomp_type_allowed(t) {
            scan.pod_allowed = true;
        } else {
            scan.setters.push("pod".to_string());
            scan.bad_values.insert(t.to_string());
        }
    }
    let mut bad_containers = Vec::new();
    for c in containers(spec) {
        match security(c, "seccompProfile") {
            Some(p) => {
                let t = str_of(p, "type");
                if !seccomp_type_allowed(t) {
                    bad_containers.push(name(c));
                    scan.bad_values.insert(t.to_string());
                }
            }
            None => scan.unset_containers.push(name(c)),
        }
    }
    if !bad_containers.is_empty() {
        scan.setters.push(containers_phrase(&bad_containers));
    }
    scan
}

fn seccomp_explicit(scan: &SeccompScan, check: &'static str) -> Option<Violation> {
    if scan.setters.is_empty() {
        return None;
    }
    violation(
        check,
        "seccompProfile",
        format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            scan.setters.join(" and "),
            join_quote(&set_list(&scan.bad_values))
        ),
    )
}

/// Seccomp from 1.19: no Unconfined profile on the pod or a container.
fn seccomp_baseline(spec: &Value) -> Option<Violation> {
    seccomp_explicit(&seccomp_scan(spec), "seccompProfile_baseline")
}

/// Sysctls outside the namespaced, isolated "safe" set of the version.
fn sysctls(spec: &Value, v: Version) -> Option<Violation> {
    let allowed = |n: &str| {
        matches!(
            n,
            "kernel.shm_rmid_forced"
                | "net.ipv4.ip_local_port_range"
                | "net.ipv4.tcp_syncookies"
                | "net.ipv4.ping_group_range"
                | "net.ipv4.ip_unprivileged_port_start"
        ) || (v.at_least(27) && n == "net.ipv4.ip_local_reserved_ports")
            || (v.at_least(29)
                && matches!(
                    n,
                    "net.ipv4.tcp_keepalive_time"
                        | "net.ipv4.tcp_fin_timeout"
                        | "net.ipv4.tcp_keepalive_intvl"
                        | "net.ipv4.tcp_keepalive_probes"
                ))
            || (v.at_least(32) && matches!(n, "net.ipv4.tcp_rmem" | "net.ipv4.tcp_wmem"))
            || (v.at_least(37)
                && matches!(
                    n,
                    "net.ipv4.tcp_slow_start_after_idle" | "net.ipv4.tcp_notsent_lowat"
                ))
    };
    let bad: Vec<&str> = security(spec, "sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| str_of(s, "name"))
        .filter(|n| !allowed(n))
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation("sysctls", "forbidden sysctls", bad.join(", "))
}

fn host_process(owner: &Value) -> bool {
    security(owner, "windowsOptions")
        .and_then(|w| w.get("hostProcess"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// Windows HostProcess pods or containers.
fn windows_host_process(spec: &Value) -> Option<Violation> {
    let mut setters = Vec::new();
    if host_process(spec) {
        setters.push("pod".to_string());
    }
    let bad: Vec<String> = containers(spec)
        .filter(|c| host_process(c))
        .map(name)
        .collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        "windowsHostProcess",
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters.join(" and ")
        ),
    )
}

// ---------------------------------------------------------------------------
// restricted checks
// ---------------------------------------------------------------------------

/// Every container sets allowPrivilegeEscalation=false.
fn allow_privilege_escalation(spec: &Value) -> Option<Violation> {
    let bad: Vec<String> = containers(spec)
        .filter(|c| {
            security(c, "allowPrivilegeEscalation")
                .and_then(Value::as_bool)
                .unwrap_or(true)
        })
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation",
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&bad)
        ),
    )
}

/// Every container drops ALL and adds at most NET_BIND_SERVICE.
fn capabilities_restricted(spec: &Value) -> Option<Violation> {
    let mut missing_drop = Vec::new();
    let mut adding = Vec::new();
    let mut forbidden = BTreeSet::new();
    for c in containers(spec) {
        let Some(caps) = security(c, "capabilities") else {
            missing_drop.push(name(c));
            continue;
        };
        let drops_all = caps
            .get("drop")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|d| d.as_str() == Some("ALL"));
        if !drops_all {
            missing_drop.push(name(c));
        }
        let mut bad_add = false;
        for cap in added_capabilities(c) {
            if cap != "NET_BIND_SERVICE" {
                bad_add = true;
                forbidden.insert(cap.to_string());
            }
        }
        if bad_add {
            adding.push(name(c));
        }
    }
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(&set_list(&forbidden))
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation(
        "capabilities_restricted",
        "unrestricted capabilities",
        details.join("; "),
    )
}

const ALLOWED_VOLUME_SOURCES: [&str; 9] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The restricted volume sources, in the order upstream names them.
const RESTRICTED_VOLUME_SOURCES: [&str; 21] = [
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

/// Volumes only of the allowed (non-host, ephemeral or claim-based) types.
fn restricted_volumes(spec: &Value) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for vol in volumes(spec) {
        if ALLOWED_VOLUME_SOURCES.iter().any(|k| get(vol, k).is_some()) {
            continue;
        }
        bad.push(name(vol));
        let t = RESTRICTED_VOLUME_SOURCES
            .iter()
            .find(|k| get(vol, k).is_some())
            .copied()
            .unwrap_or("unknown");
        types.insert(t.to_string());
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "restrictedVolumes",
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            plural("volume", "volumes", bad.len()),
            join_quote(&bad),
            plural("uses", "use", bad.len()),
            plural(
                "restricted volume type",
                "restricted volume types",
                types.len()
            ),
            join_quote(&set_list(&types))
        ),
    )
}

/// runAsNonRoot=true on the pod or on every container; never false.
fn run_as_non_root(spec: &Value) -> Option<Violation> {
    let mut setters = Vec::new();
    let mut pod_true = false;
    if let Some(v) = security(spec, "runAsNonRoot").and_then(Value::as_bool) {
        if v {
            pod_true = true;
        } else {
            setters.push("pod".to_string());
        }
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in containers(spec) {
        match security(c, "runAsNonRoot").and_then(Value::as_bool) {
            Some(false) => explicit.push(name(c)),
            Some(true) => {}
            None if !pod_true => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return violation(
            "runAsNonRoot",
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        );
    }
    if implicit.is_empty() {
        return None;
    }
    violation(
        "runAsNonRoot",
        "runAsNonRoot != true",
        format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers_phrase(&implicit)
        ),
    )
}

/// No runAsUser=0 on the pod or a container.
fn run_as_user(spec: &Value) -> Option<Violation> {
    let is_root = |owner: &Value| security(owner, "runAsUser").and_then(Value::as_i64) == Some(0);
    let mut setters = Vec::new();
    if is_root(spec) {
        setters.push("pod".to_string());
    }
    let bad: Vec<String> = containers(spec).filter(|c| is_root(c)).map(name).collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        "runAsUser",
        "runAsUser=0",
        format!("{} must not set runAsUser=0", setters.join(" and ")),
    )
}

/// seccompProfile RuntimeDefault or Localhost, on the pod or on every container.
fn seccomp_restricted(spec: &Value) -> Option<Violation> {
    let scan = seccomp_scan(spec);
    if let Some(v) = seccomp_explicit(&scan, "seccompProfile_restricted") {
        return Some(v);
    }
    if scan.pod_allowed || scan.unset_containers.is_empty() {
        return None;
    }
    violation(
        "seccompProfile_restricted",
        "seccompProfile",
        format!(
            "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
            containers_phrase(&scan.unset_containers)
        ),
    )
}

// ---------------------------------------------------------------------------
// workloads
// ---------------------------------------------------------------------------

/// Whether objects of `kind` carry a pod spec upstream's admission checks.
pub fn has_pod_spec(kind: &str) -> bool {
    matches!(
        kind,
        "Pod"
            | "PodTemplate"
            | "ReplicationController"
            | "ReplicaSet"
            | "Deployment"
            | "DaemonSet"
            | "StatefulSet"
            | "Job"
            | "CronJob"
    )
}

/// The pod metadata and spec of an object: a Pod's own, or the pod template
/// of a PodTemplate, ReplicationController, ReplicaSet, Deployment,
/// DaemonSet, StatefulSet, Job (`spec.template`) or CronJob
/// (`spec.jobTemplate.spec.template`). None for other kinds and for objects
/// without a template (nothing to check). Missing parts read as null.
pub fn pod_template<'a>(kind: &str, obj: &'a Value) -> Option<(&'a Value, &'a Value)> {
    let template = match kind {
        "Pod" => obj,
        "PodTemplate" => get(obj, "template")?,
        "ReplicationController"
        | "ReplicaSet"
        | "Deployment"
        | "DaemonSet"
        | "StatefulSet"
        | "Job" => obj.pointer("/spec/template").filter(|t| !t.is_null())?,
        "CronJob" => obj
            .pointer("/spec/jobTemplate/spec/template")
            .filter(|t| !t.is_null())?,
        _ => return None,
    };
    Some((
        get(template, "metadata").unwrap_or(&NULL),
        get(template, "spec").unwrap_or(&NULL),
    ))
}

/// The violations of an object's pod (template) at `level`:`version`
/// (empty when the kind has no pod template).
pub fn check_template(level: Level, version: Version, kind: &str, obj: &Value) -> Vec<Violation> {
    match pod_template(kind, obj) {
        Some((meta, spec)) => check_version(level, version, spec, meta),
        None => Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// admission decisions
// ---------------------------------------------------------------------------

/// The outcome of evaluating one object against a namespace's policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evaluation {
    /// the denial message (enforce mode), when the pod violates the enforce level
    pub forbidden: Option<String>,
    /// warnings to return to the client (warn mode; only when allowed)
    pub warnings: Vec<String>,
    /// audit annotations (keys [`ENFORCE_POLICY_ANNOTATION`],
    /// [`AUDIT_VIOLATIONS_ANNOTATION`], "error")
    pub audit_annotations: BTreeMap<String, String>,
}

/// Evaluate a pod (`enforce` = true) or a workload's pod template
/// (`enforce` = false: warn and audit only) against the policy resolved from
/// the namespace labels, as upstream's admission does. `policy_errors` are
/// the label errors of [`policy_to_evaluate`], recorded in the audit
/// annotation "error".
pub fn evaluate(
    policy: &Policy,
    policy_errors: &[FieldError],
    pod_meta: &Value,
    pod_spec: &Value,
    enforce: bool,
) -> Evaluation {
    let mut out = Evaluation::default();
    if policy_errors.is_empty() {
        if enforce && policy.fully_privileged() {
            out.audit_annotations.insert(
                ENFORCE_POLICY_ANNOTATION.to_string(),
                LevelVersion::PRIVILEGED_LATEST.to_string(),
            );
            return out;
        }
        if !enforce
            && policy.warn.level == Level::Privileged
            && policy.audit.level == Level::Privileged
        {
            return out;
        }
    } else {
        out.audit_annotations.insert(
            "error".to_string(),
            format!("Failed to parse policy: {}", render_errors(policy_errors)),
        );
    }
    let run = |lv: &LevelVersion| check_version(lv.level, lv.version, pod_spec, pod_meta);
    let mut cache: Vec<(LevelVersion, Vec<Violation>)> = Vec::new();
    let mut cached = |lv: LevelVersion| -> Vec<Violation> {
        if let Some((_, v)) = cache.iter().find(|(k, _)| *k == lv) {
            return v.clone();
        }
        let v = run(&lv);
        cache.push((lv, v.clone()));
        v
    };
    if enforce {
        let lv = policy.enforce;
        out.audit_annotations
            .insert(ENFORCE_POLICY_ANNOTATION.to_string(), lv.to_string());
        let v = cached(lv);
        if !v.is_empty() {
            out.forbidden = Some(forbidden_message(lv.level, lv.version, &v));
        }
    }
    let audit = cached(policy.audit);
    if !audit.is_empty() {
        out.audit_annotations.insert(
            AUDIT_VIOLATIONS_ANNOTATION.to_string(),
            warning_message(policy.audit.level, policy.audit.version, &audit),
        );
    }
    if out.forbidden.is_none() {
        let warn = cached(policy.warn);
        if !warn.is_empty() {
            out.warnings.push(warning_message(
                policy.warn.level,
                policy.warn.version,
                &warn,
            ));
        }
    }
    out
}

/// Whether a pod update needs a new evaluation: upstream re-checks an
/// updated pod only when a container image changes or a container (or an
/// ephemeral container) is added or removed.
pub fn is_significant_pod_update(new_pod: &Value, old_pod: &Value) -> bool {
    let list = |pod: &'_ Value, key: &str| -> Vec<Value> {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for key in ["containers", "initContainers"] {
        let (new, old) = (list(new_pod, key), list(old_pod, key));
        if new.len() != old.len() {
            return true;
        }
        if new
            .iter()
            .zip(&old)
            .any(|(n, o)| str_of(n, "image") != str_of(o, "image"))
        {
            return true;
        }
    }
    let old_ephemeral = list(old_pod, "ephemeralContainers");
    list(new_pod, "ephemeralContainers").iter().any(|n| {
        match old_ephemeral
            .iter()
            .find(|o| str_of(o, "name") == str_of(n, "name"))
        {
            None => true,
            Some(o) => str_of(n, "image") != str_of(o, "image"),
        }
    })
}

/// At most this many existing pods are checked when a namespace's enforce
/// level is tightened.
pub const NAMESPACE_MAX_PODS_TO_CHECK: usize = 3000;

/// Warnings for a namespace update that tightens the enforce level (see
/// [`enforce_tightened`]): the existing pods that would violate it, grouped
/// by their reasons, as upstream reports them
/// (`pod-a (and 2 other pods): host namespaces, privileged`).
pub fn namespace_pod_warnings(
    namespace: &str,
    enforce: LevelVersion,
    pods: &[Value],
) -> Vec<String> {
    // one pod per controller first, so the limit covers as many workloads as it can
    let mut seen = BTreeSet::new();
    let mut first = Vec::new();
    let mut duplicates = Vec::new();
    for pod in pods {
        let controller = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            .map(|r| str_of(r, "uid").to_string());
        match controller {
            Some(uid) if seen.contains(&uid) => duplicates.push(pod),
            Some(uid) => {
                seen.insert(uid);
                first.push(pod);
            }
            None => first.push(pod),
        }
    }
    first.extend(duplicates);
    let total = first.len();
    first.truncate(NAMESPACE_MAX_PODS_TO_CHECK);
    // reason summary -> (first pod name by order, count)
    let mut by_reason: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for pod in &first {
        let (meta, spec) = (
            get(pod, "metadata").unwrap_or(&NULL),
            get(pod, "spec").unwrap_or(&NULL),
        );
        let v = check_version(enforce.level, enforce.version, spec, meta);
        if v.is_empty() {
            continue;
        }
        let pod_name = str_of(meta, "name").to_string();
        let entry = by_reason
            .entry(forbidden_reasons(&v))
            .or_insert_with(|| (pod_name.clone(), 0));
        if pod_name < entry.0 {
            entry.0 = pod_name;
        }
        entry.1 += 1;
    }
    let mut warnings = Vec::new();
    if first.len() < total {
        warnings.push(format!(
            "new PodSecurity enforce level only checked against the first {} of {} existing pods",
            first.len(),
            total
        ));
    }
    if !by_reason.is_empty() {
        warnings.push(format!(
            "existing pods in namespace {} violate the new PodSecurity enforce level {}",
            go_quote(namespace),
            go_quote(&enforce.to_string())
        ));
    }
    let mut pod_warnings: Vec<String> = by_reason
        .into_iter()
        .map(|(reasons, (pod, count))| match count {
            1 => format!("{pod}: {reasons}"),
            2 => format!("{pod} (and 1 other pod): {reasons}"),
            n => format!("{pod} (and {} other pods): {reasons}", n - 1),
        })
        .collect();
    pod_warnings.sort();
    warnings.extend(pod_warnings);
    warnings
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A container that passes restricted.
    fn good_container(name: &str) -> Value {
        json!({
            "name": name,
            "image": "nginx",
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
            },
        })
    }

    /// A pod spec that passes restricted (pod-level runAsNonRoot and seccomp).
    fn good_spec() -> Value {
        json!({
            "securityContext": {
                "runAsNonRoot": true,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [good_container("app")],
            "initContainers": [good_container("init")],
            "volumes": [
                {"name": "cm", "configMap": {"name": "x"}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "sec", "secret": {"secretName": "s"}},
                {"name": "proj", "projected": {"sources": []}},
            ],
        })
    }

    fn meta() -> Value {
        json!({"name": "p"})
    }

    /// Apply a mutation to the good spec.
    fn spec_with(f: impl FnOnce(&mut Value)) -> Value {
        let mut s = good_spec();
        f(&mut s);
        s
    }

    fn only(level: Level, spec: &Value, meta: &Value, id: &str) -> Option<Violation> {
        check(level, spec, meta).into_iter().find(|v| v.check == id)
    }

    #[test]
    fn level_parsing() {
        assert_eq!(Level::parse("privileged"), Ok(Level::Privileged));
        assert_eq!(Level::parse("baseline"), Ok(Level::Baseline));
        assert_eq!("restricted".parse::<Level>(), Ok(Level::Restricted));
        assert!(Level::parse("Restricted").is_err());
        assert!(Level::parse("").is_err());
        assert_eq!(
            Level::parse("strict").unwrap_err(),
            "must be one of privileged, baseline, restricted"
        );
        assert!(Level::Restricted > Level::Baseline && Level::Baseline > Level::Privileged);
    }

    #[test]
    fn version_parsing() {
        assert_eq!(Version::parse("latest"), Ok(Version::Latest));
        assert_eq!(Version::parse("v1.0"), Ok(Version::V1(0)));
        assert_eq!(Version::parse("v1.25"), Ok(Version::V1(25)));
        for bad in [
            "",
            "Latest",
            "v1",
            "v1.",
            "v1.01",
            "v2.3",
            "1.25",
            "v1.x",
            "v1.-1",
            "v1.2.3",
            "v1.99999999999999999999",
        ] {
            assert_eq!(
                Version::parse(bad),
                Err("must be \"latest\" or \"v1.x\"".to_string()),
                "{bad}"
            );
        }
        assert_eq!(Version::V1(30).to_string(), "v1.30");
        assert_eq!(
            LevelVersion::new(Level::Baseline, Version::Latest).to_string(),
            "baseline:latest"
        );
    }

    #[test]
    fn namespace_labels_to_policy() {
        let p = from_namespace_labels(&BTreeMap::new()).unwrap();
        assert_eq!(p, Policy::default());
        assert!(p.fully_privileged());

        let p = from_namespace_labels(&labels(&[
            (ENFORCE_LEVEL_LABEL, "baseline"),
            (ENFORCE_VERSION_LABEL, "v1.24"),
            (AUDIT_LEVEL_LABEL, "restricted"),
            (WARN_LEVEL_LABEL, "restricted"),
            (WARN_VERSION_LABEL, "latest"),
        ]))
        .unwrap();
        assert_eq!(
            p.enforce,
            LevelVersion::new(Level::Baseline, Version::V1(24))
        );
        assert_eq!(
            p.audit,
            LevelVersion::new(Level::Restricted, Version::Latest)
        );
        assert_eq!(
            p.warn,
            LevelVersion::new(Level::Restricted, Version::Latest)
        );

        // warn follows a stricter enforce when unset
        let p = from_namespace_labels(&labels(&[
            (ENFORCE_LEVEL_LABEL, "restricted"),
            (ENFORCE_VERSION_LABEL, "v1.30"),
        ]))
        .unwrap();
        assert_eq!(
            p.warn,
            LevelVersion::new(Level::Restricted, Version::V1(30))
        );
        assert_eq!(p.audit, LevelVersion::PRIVILEGED_LATEST);
        // ... but keeps its own version if set
        let p = from_namespace_labels(&labels(&[
            (ENFORCE_LEVEL_LABEL, "baseline"),
            (ENFORCE_VERSION_LABEL, "v1.30"),
            (WARN_VERSION_LABEL, "v1.28"),
        ]))
        .unwrap();
        assert_eq!(p.warn, LevelVersion::new(Level::Baseline, Version::V1(28)));
        // an explicit warn level is kept
        let p = from_namespace_labels(&labels(&[
            (ENFORCE_LEVEL_LABEL, "restricted"),
            (WARN_LEVEL_LABEL, "privileged"),
        ]))
        .unwrap();
        assert_eq!(p.warn.level, Level::Privileged);
    }

    #[test]
    fn namespace_labels_invalid() {
        let err = from_namespace_labels(&labels(&[(ENFORCE_LEVEL_LABEL, "foo")])).unwrap_err();
        assert_eq!(
            err,
            "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"foo\": must be one of privileged, baseline, restricted"
        );
        let err = from_namespace_labels(&labels(&[
            (AUDIT_LEVEL_LABEL, "bar"),
            (WARN_VERSION_LABEL, "v2.0"),
        ]))
        .unwrap_err();
        assert_eq!(
            err,
            "[metadata.labels[pod-security.kubernetes.io/audit]: Invalid value: \"bar\": must be one of privileged, baseline, restricted, \
             metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: \"v2.0\": must be \"latest\" or \"v1.x\"]"
        );

        // a usable policy is still resolved: enforce fails closed, audit/warn open
        let (p, errs) = policy_to_evaluate(&labels(&[
            (ENFORCE_LEVEL_LABEL, "x"),
            (ENFORCE_VERSION_LABEL, "y"),
            (AUDIT_LEVEL_LABEL, "x"),
            (WARN_LEVEL_LABEL, "x"),
        ]));
        assert_eq!(errs.len(), 4);
        assert!(errs.iter().all(|e| e.reason == "FieldValueInvalid"));
        assert_eq!(
            p.enforce,
            LevelVersion::new(Level::Restricted, Version::Latest)
        );
        assert_eq!(p.audit.level, Level::Privileged);
        assert_eq!(p.warn.level, Level::Privileged);
        // an invalid enforce level does not drag warn along
        let (p, _) = policy_to_evaluate(&labels(&[(ENFORCE_LEVEL_LABEL, "x")]));
        assert_eq!(p.warn.level, Level::Privileged);
    }

    #[test]
    fn namespace_label_update_validation() {
        let bad = labels(&[(ENFORCE_LEVEL_LABEL, "x")]);
        let good = labels(&[(ENFORCE_LEVEL_LABEL, "baseline")]);
        assert_eq!(validate_namespace_labels(&bad, None).len(), 1);
        assert!(validate_namespace_labels(&good, None).is_empty());
        // unchanged bad labels do not block other updates
        assert!(validate_namespace_labels(&bad, Some(&bad)).is_empty());
        assert_eq!(validate_namespace_labels(&bad, Some(&good)).len(), 1);
        let other_bad = labels(&[(ENFORCE_LEVEL_LABEL, "y")]);
        assert_eq!(validate_namespace_labels(&other_bad, Some(&bad)).len(), 1);

        let obj = json!({"metadata": {"labels": {ENFORCE_LEVEL_LABEL: "restricted", "n": 1}}});
        assert_eq!(
            object_labels(&obj),
            labels(&[(ENFORCE_LEVEL_LABEL, "restricted")])
        );
    }

    #[test]
    fn enforce_tightening() {
        let p = |l: Level, v: Version| Policy {
            enforce: LevelVersion::new(l, v),
            ..Policy::default()
        };
        use Level::*;
        use Version::*;
        assert!(enforce_tightened(
            &p(Privileged, Latest),
            &p(Baseline, Latest)
        ));
        assert!(enforce_tightened(
            &p(Baseline, Latest),
            &p(Restricted, Latest)
        ));
        assert!(!enforce_tightened(
            &p(Restricted, Latest),
            &p(Baseline, Latest)
        ));
        assert!(!enforce_tightened(
            &p(Baseline, Latest),
            &p(Baseline, Latest)
        ));
        assert!(!enforce_tightened(
            &p(Baseline, Latest),
            &p(Privileged, Latest)
        ));
        assert!(enforce_tightened(
            &p(Restricted, V1(20)),
            &p(Baseline, Latest)
        ));
    }

    #[test]
    fn restricted_pod_passes() {
        let spec = good_spec();
        assert_eq!(check(Level::Restricted, &spec, &meta()), vec![]);
        assert_eq!(check(Level::Baseline, &spec, &meta()), vec![]);
        // container-level settings instead of pod-level ones
        let spec = json!({
            "containers": [{
                "name": "app",
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                    "runAsNonRoot": true,
                    "runAsUser": 1000,
                    "seccompProfile": {"type": "Localhost", "localhostProfile": "x.json"},
                },
            }],
        });
        assert_eq!(check(Level::Restricted, &spec, &meta()), vec![]);
    }

    #[test]
    fn empty_pod_violates_restricted_in_order() {
        let spec = json!({"containers": [{"name": "app", "image": "nginx"}]});
        assert!(check(Level::Baseline, &spec, &meta()).is_empty());
        let v = check(Level::Restricted, &spec, &meta());
        let reasons: Vec<&str> = v.iter().map(|v| v.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "allowPrivilegeEscalation != false",
                "unrestricted capabilities",
                "runAsNonRoot != true",
                "seccompProfile"
            ]
        );
        assert_eq!(
            forbidden_message(Level::Restricted, Version::Latest, &v),
            "violates PodSecurity \"restricted:latest\": \
             allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"app\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"app\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"app\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        assert_eq!(
            warning_message(Level::Restricted, Version::V1(30), &v[..1]),
            "would violate PodSecurity \"restricted:v1.30\": allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false)"
        );
        assert_eq!(
            forbidden_reasons(&v),
            "allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile"
        );
    }

    #[test]
    fn message_without_detail() {
        let v = vec![Violation {
            check: "x",
            reason: "r".into(),
            detail: String::new(),
        }];
        assert_eq!(
            forbidden_message(Level::Baseline, Version::Latest, &v),
            "violates PodSecurity \"baseline:latest\": r"
        );
    }

    #[test]
    fn privileged_level_allows_everything() {
        let spec = json!({
            "hostNetwork": true,
            "containers": [{"name": "a", "securityContext": {"privileged": true}}],
        });
        assert!(check(Level::Privileged, &spec, &meta()).is_empty());
        assert_eq!(check(Level::Baseline, &spec, &meta()).len(), 2);
    }

    #[test]
    fn windows_host_process() {
        let spec = spec_with(|s| {
            s["securityContext"]["windowsOptions"] = json!({"hostProcess": true});
            s["containers"][0]["securityContext"]["windowsOptions"] = json!({"hostProcess": true});
        });
        let v = only(Level::Baseline, &spec, &meta(), "windowsHostProcess").unwrap();
        assert_eq!(v.reason, "hostProcess");
        assert_eq!(
            v.detail,
            "pod and container \"app\" must not set securityContext.windowsOptions.hostProcess=true"
        );
        let ok = spec_with(|s| {
            s["securityContext"]["windowsOptions"] = json!({"hostProcess": false});
        });
        assert!(only(Level::Baseline, &ok, &meta(), "windowsHostProcess").is_none());
    }

    #[test]
    fn host_namespaces() {
        let spec = spec_with(|s| {
            s["hostNetwork"] = json!(true);
            s["hostIPC"] = json!(true);
            s["hostPID"] = json!(false);
        });
        let v = only(Level::Baseline, &spec, &meta(), "hostNamespaces").unwrap();
        assert_eq!(v.reason, "host namespaces");
        assert_eq!(v.detail, "hostNetwork=true, hostIPC=true");
        let ok = spec_with(|s| s["hostPID"] = json!(false));
        assert!(check(Level::Baseline, &ok, &meta()).is_empty());
    }

    #[test]
    fn privileged_containers() {
        let spec = spec_with(|s| {
            s["containers"][0]["securityContext"]["privileged"] = json!(true);
            s["initContainers"][0]["securityContext"]["privileged"] = json!(true);
        });
        let v = only(Level::Baseline, &spec, &meta(), "privileged").unwrap();
        assert_eq!(v.reason, "privileged");
        // init containers are visited first
        assert_eq!(
            v.detail,
            "containers \"init\", \"app\" must not set securityContext.privileged=true"
        );
        let ok = spec_with(|s| s["containers"][0]["securityContext"]["privileged"] = json!(false));
        assert!(check(Level::Baseline, &ok, &meta()).is_empty());
    }

    #[test]
    fn ephemeral_containers_are_checked() {
        let spec = spec_with(|s| {
            s["ephemeralContainers"] =
                json!([{"name": "debug", "securityContext": {"privileged": true}}]);
        });
        let v = only(Level::Baseline, &spec, &meta(), "privileged").unwrap();
        assert_eq!(
            v.detail,
            "container \"debug\" must not set securityContext.privileged=true"
        );
    }

    #[test]
    fn baseline_capabilities() {
        let spec = spec_with(|s| {
            s["containers"][0]["securityContext"]["capabilities"]["add"] =
                json!(["NET_RAW", "CHOWN", "SYS_ADMIN"]);
            s["initContainers"][0]["securityContext"]["capabilities"]["add"] = json!(["NET_RAW"]);
        });
        let v = only(Level::Baseline, &spec, &meta(), "capabilities_baseline").unwrap();
        assert_eq!(v.reason, "non-default capabilities");
        assert_eq!(
            v.detail,
            "containers \"init\", \"app\" must not include \"NET_RAW\", \"SYS_ADMIN\" in securityContext.capabilities.add"
        );
        let ok = spec_with(|s| {
            s["containers"][0]["securityContext"]["capabilities"]["add"] =
                json!(["CHOWN", "KILL", "SYS_CHROOT", "AUDIT_WRITE"]);
        });
        assert!(check(Level::Baseline, &ok, &meta()).is_empty());
        // restricted replaces it with its own capabilities check
        assert!(only(Level::Restricted, &spec, &meta(), "capabilities_baseline").is_none());
        assert!(only(Level::Restricted, &spec, &meta(), "capabilities_restricted").is_some());
        // ... from 1.22 on only
        let v = check_version(Level::Restricted, Version::V1(21), &spec, &meta());
        assert!(v.iter().any(|v| v.check == "capabilities_baseline"));
        assert!(!v.iter().any(|v| v.check == "capabilities_restricted"));
    }

    #[test]
    fn host_path_volumes() {
        let spec = spec_with(|s| {
            s["volumes"] = json!([
                {"name": "a", "hostPath": {"path": "/"}},
                {"name": "b", "emptyDir": {}},
                {"name": "c", "hostPath": {"path": "/etc"}},
            ]);
        });
        let v = only(Level::Baseline, &spec, &meta(), "hostPathVolumes").unwrap();
        assert_eq!(v.reason, "hostPath volumes");
        assert_eq!(v.detail, "volumes \"a\", \"c\"");
        assert!(check(Level::Baseline, &good_spec(), &meta()).is_empty());
        // restricted reports it as a restricted volume type instead
        let r = check(Level::Restricted, &spec, &meta());
        assert!(!r.iter().any(|v| v.check == "hostPathVolumes"));
        let v = r.iter().find(|v| v.check == "restrictedVolumes").unwrap();
        assert_eq!(
            v.detail,
            "volumes \"a\", \"c\" use restricted volume type \"hostPath\""
        );
    }

    #[test]
    fn host_ports() {
        let spec = spec_with(|s| {
            s["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 8080}, {"containerPort": 443, "hostPort": 443}]);
            s["initContainers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 80}]);
        });
        let v = only(Level::Baseline, &spec, &meta(), "hostPorts").unwrap();
        assert_eq!(v.reason, "hostPort");
        // ports sorted as strings, as upstream
        assert_eq!(
            v.detail,
            "containers \"init\", \"app\" use hostPorts 443, 80, 8080"
        );
        let one = spec_with(|s| s["containers"][0]["ports"] = json!([{"hostPort": 20}]));
        assert_eq!(
            only(Level::Baseline, &one, &meta(), "hostPorts")
                .unwrap()
                .detail,
            "container \"app\" uses hostPort 20"
        );
        let ok = spec_with(|s| {
            s["containers"][0]["ports"] =
                json!([{"containerPort": 80}, {"containerPort": 81, "hostPort": 0}]);
        });
        assert!(check(Level::Baseline, &ok, &meta()).is_empty());
    }

    #[test]
    fn probe_and_lifecycle_hosts() {
        let spec = spec_with(|s| {
            s["containers"][0]["livenessProbe"] =
                json!({"httpGet": {"host": "10.0.0.1", "port": 80}});
            s["containers"][0]["lifecycle"] =
                json!({"preStop": {"tcpSocket": {"host": "evil", "port": 1}}});
            s["initContainers"][0]["readinessProbe"] =
                json!({"tcpSocket": {"host": "10.0.0.1", "port": 1}});
        });
        let v = only(
            Level::Baseline,
            &spec,
            &meta(),
            "hostProbesAndHostLifecycle",
        )
        .unwrap();
        assert_eq!(v.reason, "probe or lifecycle host");
        assert_eq!(
            v.detail,
            "containers \"app\", \"init\" use probe or lifecycle hosts \"10.0.0.1\", \"evil\""
        );
        // not checked before 1.34
        assert!(check_version(Level::Baseline, Version::V1(33), &spec, &meta()).is_empty());
        let ok = spec_with(|s| {
            s["containers"][0]["livenessProbe"] = json!({"httpGet": {"host": "", "port": 80}});
        });
        assert!(check(Level::Baseline, &ok, &meta()).is_empty());
    }

    #[test]
    fn app_armor() {
        let spec = spec_with(|s| {
            s["securityContext"]["appArmorProfile"] = json!({"type": "Unconfined"});
            s["containers"][0]["securityContext"]["appArmorProfile"] =
                json!({"type": "Unconfined"});
        });
        let v = only(Level::Baseline, &spec, &meta(), "appArmorProfile").unwrap();
        assert_eq!(v.reason, "forbidden AppArmor profile");
        assert_eq!(
            v.detail,
            "pod and container \"app\" must not set AppArmor profile type to \"Unconfined\""
        );
        let m = json!({"name": "p", "annotations": {
            "container.apparmor.security.beta.kubernetes.io/b": "unconfined",
            "container.apparmor.security.beta.kubernetes.io/a": "localhost/x",
            "container.apparmor.security.beta.kubernetes.io/c": "runtime/default",
            "container.apparmor.security.beta.kubernetes.io/d": "foo",
        }});
        let v = only(Level::Baseline, &good_spec(), &m, "appArmorProfile").unwrap();
        assert_eq!(v.reason, "forbidden AppArmor profiles");
        assert_eq!(
            v.detail,
            "annotations must not set AppArmor profile type to \
             \"container.apparmor.security.beta.kubernetes.io/b=\"unconfined\"\", \
             \"container.apparmor.security.beta.kubernetes.io/d=\"foo\"\""
        );
        let ok = spec_with(|s| {
            s["securityContext"]["appArmorProfile"] = json!({"type": "RuntimeDefault"});
            s["containers"][0]["securityContext"]["appArmorProfile"] =
                json!({"type": "Localhost", "localhostProfile": "p"});
        });
        let ok_meta = json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/app": "localhost/p"}});
        assert!(check(Level::Baseline, &ok, &ok_meta).is_empty());
    }

    #[test]
    fn se_linux_options() {
        let spec = spec_with(|s| {
            s["securityContext"]["seLinuxOptions"] = json!({"type": "foo", "user": "u"});
            s["containers"][0]["securityContext"]["seLinuxOptions"] =
                json!({"type": "bar", "role": "r"});
        });
        let v = only(Level::Baseline, &spec, &meta(), "seLinuxOptions").unwrap();
        assert_eq!(v.reason, "seLinuxOptions");
        assert_eq!(
            v.detail,
            "pod and container \"app\" set forbidden securityContext.seLinuxOptions: \
             types \"bar\", \"foo\"; user may not be set; role may not be set"
        );
        let ok = spec_with(|s| {
            s["securityContext"]["seLinuxOptions"] =
                json!({"type": "container_t", "level": "s0:c1"});
            s["containers"][0]["securityContext"]["seLinuxOptions"] =
                json!({"type": "container_engine_t"});
        });
        assert!(check(Level::Baseline, &ok, &meta()).is_empty());
        // container_engine_t is allowed from 1.31
        let v = check_version(Level::Baseline, Version::V1(30), &ok, &meta());
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].detail,
            "container \"app\" set forbidden securityContext.seLinuxOptions: type \"container_engine_t\""
        );
    }

    #[test]
    fn proc_mount() {
        let spec = spec_with(|s| {
            s["containers"][0]["securityContext"]["procMount"] = json!("Unmasked");
        });
        let v = only(Level::Baseline, &spec, &meta(), "procMount").unwrap();
        assert_eq!(v.reason, "procMount");
        assert_eq!(
            v.detail,
            "container \"app\" must not set securityContext.procMount to \"Unmasked\""
        );
        let ok =
            spec_with(|s| s["containers"][0]["securityContext"]["procMount"] = json!("Default"));
        assert!(check(Level::Baseline, &ok, &meta()).is_empty());
        // user-namespaced pods: baseline relaxes it (1.35+), restricted does not
        let userns = spec_with(|s| {
            s["hostUsers"] = json!(false);
            s["containers"][0]["securityContext"]["procMount"] = json!("Unmasked");
        });
        assert!(check(Level::Baseline, &userns, &meta()).is_empty());
        assert!(!check_version(Level::Baseline, Version::V1(34), &userns, &meta()).is_empty());
        let r = check(Level::Restricted, &userns, &meta());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].check, "procMount_restricted");
        assert_eq!(r[0].reason, "procMount");
    }

    #[test]
    fn seccomp_baseline() {
        let spec = spec_with(|s| {
            s["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"});
            s["containers"][0]["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"});
            s["initContainers"][0]["securityContext"]["seccompProfile"] = json!({"type": "Bogus"});
        });
        let v = only(Level::Baseline, &spec, &meta(), "seccompProfile_baseline").unwrap();
        assert_eq!(v.reason, "seccompProfile");
        assert_eq!(
            v.detail,
            "pod and containers \"init\", \"app\" must not set securityContext.seccompProfile.type to \"Bogus\", \"Unconfined\""
        );
        // baseline does not require a profile
        let unset = json!({"containers": [{"name": "a"}]});
        assert!(check(Level::Baseline, &unset, &meta()).is_empty());
        // before 1.19, the alpha annotations are checked instead
        let m = json!({"annotations": {
            "seccomp.security.alpha.kubernetes.io/pod": "unconfined",
            "container.seccomp.security.alpha.kubernetes.io/a": "docker/default",
        }});
        let v = check_version(Level::Baseline, Version::V1(18), &unset, &m);
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].detail,
            "forbidden annotation seccomp.security.alpha.kubernetes.io/pod=\"unconfined\""
        );
        assert!(check(Level::Baseline, &unset, &m).is_empty());
    }

    #[test]
    fn seccomp_restricted() {
        // unset on the pod and one container
        let spec = spec_with(|s| {
            s["securityContext"]
                .as_object_mut()
                .map(|o| o.remove("seccompProfile"));
            s["containers"][0]["securityContext"]["seccompProfile"] =
                json!({"type": "RuntimeDefault"});
        });
        let v = only(
            Level::Restricted,
            &spec,
            &meta(),
            "seccompProfile_restricted",
        )
        .unwrap();
        assert_eq!(v.reason, "seccompProfile");
        assert_eq!(
            v.detail,
            "pod or container \"init\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\""
        );
        // a container's Unconfined overrides the pod's RuntimeDefault and fails
        let spec = spec_with(|s| {
            s["containers"][0]["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"});
        });
        let v = only(
            Level::Restricted,
            &spec,
            &meta(),
            "seccompProfile_restricted",
        )
        .unwrap();
        assert_eq!(
            v.detail,
            "container \"app\" must not set securityContext.seccompProfile.type to \"Unconfined\""
        );
        // before 1.19 restricted does not require a profile yet
        let unset = json!({"containers": [{"name": "a", "securityContext": {
            "allowPrivilegeEscalation": false, "runAsNonRoot": true}}]});
        assert!(check_version(Level::Restricted, Version::V1(18), &unset, &meta()).is_empty());
        assert!(only(
            Level::Restricted,
            &unset,
            &meta(),
            "seccompProfile_restricted"
        )
        .is_some());
        // baseline check is replaced, not reported twice
        assert_eq!(
            check(Level::Restricted, &spec, &meta())
                .iter()
                .filter(|v| v.reason == "seccompProfile")
                .count(),
            1
        );
    }

    #[test]
    fn sysctls() {
        let spec = spec_with(|s| {
            s["securityContext"]["sysctls"] = json!([
                {"name": "kernel.shm_rmid_forced", "value": "1"},
                {"name": "kernel.msgmax", "value": "1"},
                {"name": "net.ipv4.tcp_rmem", "value": "1"},
                {"name": "net.core.somaxconn", "value": "1"},
            ]);
        });
        let v = only(Level::Baseline, &spec, &meta(), "sysctls").unwrap();
        assert_eq!(v.reason, "forbidden sysctls");
        assert_eq!(v.detail, "kernel.msgmax, net.core.somaxconn");
        // tcp_rmem became safe in 1.32
        let old = check_version(Level::Baseline, Version::V1(31), &spec, &meta());
        assert_eq!(
            old[0].detail,
            "kernel.msgmax, net.ipv4.tcp_rmem, net.core.somaxconn"
        );
        let ok = spec_with(|s| {
            s["securityContext"]["sysctls"] = json!([
                {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"},
                {"name": "net.ipv4.tcp_keepalive_time", "value": "60"},
                {"name": "net.ipv4.tcp_notsent_lowat", "value": "1"},
            ]);
        });
        assert!(check(Level::Baseline, &ok, &meta()).is_empty());
    }

    #[test]
    fn restricted_volume_types() {
        let spec = spec_with(|s| {
            s["volumes"] = json!([
                {"name": "a", "nfs": {"server": "x", "path": "/"}},
                {"name": "b", "csi": {"driver": "d"}},
                {"name": "c", "gitRepo": {"repository": "r"}},
                {"name": "d", "somethingNew": {}},
                {"name": "e", "persistentVolumeClaim": {"claimName": "c"}},
                {"name": "f", "ephemeral": {"volumeClaimTemplate": {}}},
                {"name": "g", "downwardAPI": {}},
                {"name": "h", "image": {"reference": "x"}},
            ]);
        });
        let v = only(Level::Restricted, &spec, &meta(), "restrictedVolumes").unwrap();
        assert_eq!(v.reason, "restricted volume types");
        assert_eq!(
            v.detail,
            "volumes \"a\", \"c\", \"d\" use restricted volume types \"gitRepo\", \"nfs\", \"unknown\""
        );
        // not a baseline concern
        assert!(check(Level::Baseline, &spec, &meta()).is_empty());
        assert!(only(
            Level::Restricted,
            &good_spec(),
            &meta(),
            "restrictedVolumes"
        )
        .is_none());
    }

    #[test]
    fn allow_privilege_escalation() {
        let spec = spec_with(|s| {
            s["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
            s["initContainers"][0]["securityContext"]
                .as_object_mut()
                .map(|o| o.remove("allowPrivilegeEscalation"));
        });
        let v = only(
            Level::Restricted,
            &spec,
            &meta(),
            "allowPrivilegeEscalation",
        )
        .unwrap();
        assert_eq!(v.reason, "allowPrivilegeEscalation != false");
        assert_eq!(
            v.detail,
            "containers \"init\", \"app\" must set securityContext.allowPrivilegeEscalation=false"
        );
        assert!(only(
            Level::Restricted,
            &good_spec(),
            &meta(),
            "allowPrivilegeEscalation"
        )
        .is_none());
        // Windows pods are exempt from the Linux-only restricted fields
        let windows = json!({
            "os": {"name": "windows"},
            "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "w"}],
        });
        assert!(check(Level::Restricted, &windows, &meta()).is_empty());
        assert!(!check_version(Level::Restricted, Version::V1(24), &windows, &meta()).is_empty());
    }

    #[test]
    fn restricted_capabilities() {
        let spec = spec_with(|s| {
            s["containers"][0]["securityContext"]["capabilities"] =
                json!({"drop": ["NET_RAW"], "add": ["NET_BIND_SERVICE", "SYS_TIME", "CHOWN"]});
            s["initContainers"][0]["securityContext"]
                .as_object_mut()
                .map(|o| o.remove("capabilities"));
        });
        let v = only(Level::Restricted, &spec, &meta(), "capabilities_restricted").unwrap();
        assert_eq!(v.reason, "unrestricted capabilities");
        assert_eq!(
            v.detail,
            "containers \"init\", \"app\" must set securityContext.capabilities.drop=[\"ALL\"]; \
             container \"app\" must not include \"CHOWN\", \"SYS_TIME\" in securityContext.capabilities.add"
        );
        let ok = spec_with(|s| {
            s["containers"][0]["securityContext"]["capabilities"] =
                json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]});
        });
        assert!(check(Level::Restricted, &ok, &meta()).is_empty());
    }

    #[test]
    fn run_as_non_root() {
        // pod says true, a container overrides with false
        let spec = spec_with(|s| {
            s["containers"][0]["securityContext"]["runAsNonRoot"] = json!(false);
        });
        let v = only(Level::Restricted, &spec, &meta(), "runAsNonRoot").unwrap();
        assert_eq!(v.reason, "runAsNonRoot != true");
        assert_eq!(
            v.detail,
            "container \"app\" must not set securityContext.runAsNonRoot=false"
        );
        // pod false
        let spec = spec_with(|s| s["securityContext"]["runAsNonRoot"] = json!(false));
        assert_eq!(
            only(Level::Restricted, &spec, &meta(), "runAsNonRoot")
                .unwrap()
                .detail,
            "pod must not set securityContext.runAsNonRoot=false"
        );
        // pod unset: every container must set it
        let spec = spec_with(|s| {
            s["securityContext"]
                .as_object_mut()
                .map(|o| o.remove("runAsNonRoot"));
            s["containers"][0]["securityContext"]["runAsNonRoot"] = json!(true);
        });
        assert_eq!(
            only(Level::Restricted, &spec, &meta(), "runAsNonRoot")
                .unwrap()
                .detail,
            "pod or container \"init\" must set securityContext.runAsNonRoot=true"
        );
        let ok = spec_with(|s| {
            s["securityContext"]
                .as_object_mut()
                .map(|o| o.remove("runAsNonRoot"));
            s["containers"][0]["securityContext"]["runAsNonRoot"] = json!(true);
            s["initContainers"][0]["securityContext"]["runAsNonRoot"] = json!(true);
        });
        assert!(check(Level::Restricted, &ok, &meta()).is_empty());
        // user namespaces relax it (1.35+)
        let userns = spec_with(|s| {
            s["hostUsers"] = json!(false);
            s["securityContext"]["runAsNonRoot"] = json!(false);
            s["securityContext"]["runAsUser"] = json!(0);
        });
        assert!(check(Level::Restricted, &userns, &meta()).is_empty());
        assert_eq!(
            check_version(Level::Restricted, Version::V1(34), &userns, &meta()).len(),
            2
        );
    }

    #[test]
    fn run_as_user() {
        let spec = spec_with(|s| {
            s["securityContext"]["runAsUser"] = json!(0);
            s["containers"][0]["securityContext"]["runAsUser"] = json!(0);
        });
        let v = only(Level::Restricted, &spec, &meta(), "runAsUser").unwrap();
        assert_eq!(v.reason, "runAsUser=0");
        assert_eq!(
            v.detail,
            "pod and container \"app\" must not set runAsUser=0"
        );
        // introduced in 1.23
        assert!(
            !check_version(Level::Restricted, Version::V1(22), &spec, &meta())
                .iter()
                .any(|v| v.check == "runAsUser")
        );
        let ok = spec_with(|s| s["securityContext"]["runAsUser"] = json!(1000));
        assert!(check(Level::Restricted, &ok, &meta()).is_empty());
        assert!(check(Level::Baseline, &spec, &meta()).is_empty());
    }

    #[test]
    fn restricted_order_combines_baseline() {
        let spec = spec_with(|s| {
            s["hostPID"] = json!(true);
            s["containers"][0]["securityContext"]["privileged"] = json!(true);
            s["containers"][0]["securityContext"]["runAsUser"] = json!(0);
        });
        let checks: Vec<&str> = check(Level::Restricted, &spec, &meta())
            .iter()
            .map(|v| v.check)
            .collect();
        assert_eq!(checks, ["hostNamespaces", "privileged", "runAsUser"]);
    }

    #[test]
    fn null_and_garbage_fields_are_tolerated() {
        let spec = json!({
            "securityContext": null,
            "hostNetwork": "yes",
            "volumes": [{"name": "v", "hostPath": null, "emptyDir": {}}],
            "containers": [{"name": 5, "securityContext": {"capabilities": null, "seccompProfile": null}}],
        });
        assert!(check(Level::Baseline, &spec, &meta()).is_empty());
        assert_eq!(check(Level::Restricted, &spec, &Value::Null).len(), 4);
        assert!(check(Level::Restricted, &Value::Null, &Value::Null).is_empty());
    }

    #[test]
    fn templates_of_workloads() {
        let tmpl = json!({
            "metadata": {"labels": {"app": "x"}},
            "spec": {"hostNetwork": true, "containers": [{"name": "c"}]},
        });
        for kind in [
            "Deployment",
            "ReplicaSet",
            "StatefulSet",
            "DaemonSet",
            "Job",
            "ReplicationController",
        ] {
            let obj = json!({"kind": kind, "spec": {"template": tmpl}});
            let v = check_template(Level::Baseline, Version::Latest, kind, &obj);
            assert_eq!(v.len(), 1, "{kind}");
            assert_eq!(v[0].detail, "hostNetwork=true");
            assert!(has_pod_spec(kind));
        }
        let cj = json!({"spec": {"jobTemplate": {"spec": {"template": tmpl}}}});
        assert_eq!(
            check_template(Level::Baseline, Version::Latest, "CronJob", &cj).len(),
            1
        );
        let pt = json!({"template": tmpl});
        assert_eq!(
            check_template(Level::Baseline, Version::Latest, "PodTemplate", &pt).len(),
            1
        );
        let pod = json!({"metadata": {"name": "p"}, "spec": tmpl["spec"]});
        let (m, s) = pod_template("Pod", &pod).unwrap();
        assert_eq!(m["name"], "p");
        assert_eq!(s["hostNetwork"], true);
        // no template, other kinds: nothing to check
        assert!(pod_template("Deployment", &json!({"spec": {}})).is_none());
        assert!(pod_template("ConfigMap", &json!({"data": {}})).is_none());
        assert!(!has_pod_spec("Service"));
    }

    #[test]
    fn evaluate_modes() {
        let spec = json!({"containers": [{"name": "app"}]});
        let m = meta();
        // enforce baseline passes, warn restricted
        let p = from_namespace_labels(&labels(&[
            (ENFORCE_LEVEL_LABEL, "baseline"),
            (WARN_LEVEL_LABEL, "restricted"),
            (AUDIT_LEVEL_LABEL, "restricted"),
        ]))
        .unwrap();
        let e = evaluate(&p, &[], &m, &spec, true);
        assert_eq!(e.forbidden, None);
        assert_eq!(e.warnings.len(), 1);
        assert!(e.warnings[0].starts_with(
            "would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"
        ));
        assert_eq!(
            e.audit_annotations[ENFORCE_POLICY_ANNOTATION],
            "baseline:latest"
        );
        assert_eq!(
            e.audit_annotations[AUDIT_VIOLATIONS_ANNOTATION],
            e.warnings[0]
        );

        // enforce restricted denies; no warning then
        let p = from_namespace_labels(&labels(&[(ENFORCE_LEVEL_LABEL, "restricted")])).unwrap();
        let e = evaluate(&p, &[], &m, &spec, true);
        assert!(e
            .forbidden
            .as_deref()
            .unwrap_or_default()
            .starts_with("violates PodSecurity \"restricted:latest\": "));
        assert!(e.warnings.is_empty());
        // controllers: warn only
        let e = evaluate(&p, &[], &m, &spec, false);
        assert_eq!(e.forbidden, None);
        assert_eq!(e.warnings.len(), 1);
        assert!(!e.audit_annotations.contains_key(ENFORCE_POLICY_ANNOTATION));

        // privileged namespace
        let e = evaluate(&Policy::default(), &[], &m, &spec, true);
        assert_eq!(e.forbidden, None);
        assert_eq!(
            e.audit_annotations[ENFORCE_POLICY_ANNOTATION],
            "privileged:latest"
        );

        // label errors are recorded; a bad enforce level enforces restricted
        let (p, errs) = policy_to_evaluate(&labels(&[(ENFORCE_LEVEL_LABEL, "bogus")]));
        let e = evaluate(&p, &errs, &m, &spec, true);
        assert!(e.forbidden.is_some());
        assert!(e.audit_annotations["error"].starts_with(
            "Failed to parse policy: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"bogus\""
        ));
    }

    #[test]
    fn significant_pod_updates() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}]}});
        let same = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}], "activeDeadlineSeconds": 5}});
        assert!(!is_significant_pod_update(&same, &old));
        let image = json!({"spec": {"containers": [{"name": "a", "image": "x:2"}]}});
        assert!(is_significant_pod_update(&image, &old));
        let eph = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}],
            "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}});
        assert!(is_significant_pod_update(&eph, &old));
        assert!(!is_significant_pod_update(&eph, &eph));
    }

    #[test]
    fn namespace_warnings() {
        let pod = |name: &str, spec: Value, owner: Option<&str>| {
            let mut p = json!({"metadata": {"name": name}, "spec": spec});
            if let Some(uid) = owner {
                p["metadata"]["ownerReferences"] = json!([{"uid": uid, "controller": true}]);
            }
            p
        };
        let host = json!({"hostNetwork": true, "containers": [{"name": "c"}]});
        let priv_ = json!({"containers": [{"name": "c", "securityContext": {"privileged": true}}]});
        let pods = vec![
            pod("web-2", host.clone(), Some("u1")),
            pod("web-1", host.clone(), Some("u1")),
            pod("solo", priv_, None),
            pod("web-3", host, Some("u1")),
            pod("fine", json!({"containers": [{"name": "c"}]}), None),
        ];
        let w = namespace_pod_warnings(
            "ns1",
            LevelVersion::new(Level::Baseline, Version::Latest),
            &pods,
        );
        assert_eq!(
            w,
            [
                "existing pods in namespace \"ns1\" violate the new PodSecurity enforce level \"baseline:latest\"",
                "solo: privileged",
                "web-1 (and 2 other pods): host namespaces",
            ]
        );
        assert!(namespace_pod_warnings("ns1", LevelVersion::PRIVILEGED_LATEST, &pods).is_empty());
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(go_quote("\u{1}"), "\"\\x01\"");
    }
}
