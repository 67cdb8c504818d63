//! Audit logging, as upstream's log backend: `--audit-policy-file` (an
//! audit.k8s.io/v1 Policy) decides per request the level (None, Metadata,
//! Request, RequestResponse) by its first matching rule, and
//! `--audit-log-path` receives one audit.k8s.io/v1 Event per line and stage
//! (RequestReceived, ResponseStarted for watches, ResponseComplete), rotated
//! by `--audit-log-maxsize` (MB) and pruned by `--audit-log-maxbackup` and
//! `--audit-log-maxage` (days).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::authn::User;
use crate::rbac::Attributes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
    Panic,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Rule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    omit_managed_fields: Option<bool>,
}

/// An audit.k8s.io/v1 Policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    omit_managed_fields: bool,
}

/// What the policy says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub level: Level,
    omit_stages: Vec<Stage>,
    omit_managed_fields: bool,
}

impl Policy {
    pub fn parse(text: &str) -> Result<Policy, String> {
        let p: Policy = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        if p.kind != "Policy" {
            return Err(format!("kind {:?} is not Policy", p.kind));
        }
        if !matches!(
            p.api_version.as_str(),
            "audit.k8s.io/v1" | "audit.k8s.io/v1beta1"
        ) {
            return Err(format!(
                "apiVersion {:?} is not audit.k8s.io/v1",
                p.api_version
            ));
        }
        if p.rules.is_empty() {
            return Err("a policy needs at least one rule".into());
        }
        Ok(p)
    }

    /// The first rule that matches decides; no rule: None.
    pub fn decide(&self, a: &Attributes) -> Decision {
        let rule = self.rules.iter().find(|r| r.matches(a));
        let mut omit = self.omit_stages.clone();
        if let Some(r) = rule {
            omit.extend(r.omit_stages.iter().copied());
        }
        Decision {
            level: rule.map_or(Level::None, |r| r.level),
            omit_stages: omit,
            omit_managed_fields: rule
                .and_then(|r| r.omit_managed_fields)
                .unwrap_or(self.omit_managed_fields),
        }
    }
}

fn wildcard(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

impl Rule {
    fn matches(&self, a: &Attributes) -> bool {
        if !self.users.is_empty() && !self.users.iter().any(|u| *u == a.user.name) {
            return false;
        }
        if !self.user_groups.is_empty()
            && !self.user_groups.iter().any(|g| a.user.groups.contains(g))
        {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.iter().any(|v| *v == a.verb) {
            return false;
        }
        if a.resource_request {
            if !self.non_resource_urls.is_empty()
                && self.resources.is_empty()
                && self.namespaces.is_empty()
            {
                return false;
            }
            if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| *n == a.namespace) {
                return false;
            }
            if !self.resources.is_empty() {
                let full = if a.subresource.is_empty() {
                    a.resource.clone()
                } else {
                    format!("{}/{}", a.resource, a.subresource)
                };
                let hit = self.resources.iter().any(|gr| {
                    gr.group == a.api_group
                        && (gr.resources.is_empty()
                            || gr.resources.iter().any(|r| {
                                *r == full
                                    || *r == "*"
                                    || (r.strip_prefix("*/").is_some_and(|s| s == a.subresource))
                                    || (r.strip_suffix("/*").is_some_and(|p| p == a.resource))
                            }))
                        && (gr.resource_names.is_empty() || gr.resource_names.contains(&a.name))
                });
                if !hit {
                    return false;
                }
            }
            true
        } else {
            if !self.resources.is_empty() || !self.namespaces.is_empty() {
                return false;
            }
            self.non_resource_urls.is_empty()
                || self.non_resource_urls.iter().any(|u| wildcard(u, &a.path))
        }
    }
}

/// Where events go: a file rotated by size, or stdout (`-`).
struct Sink {
    path: Option<PathBuf>,
    file: Option<File>,
    written: u64,
    max_bytes: u64,
    max_backups: usize,
    max_age_days: u64,
}

impl Sink {
    fn write(&mut self, line: &[u8]) {
        let Some(path) = self.path.clone() else {
            let _ = std::io::stdout().write_all(line);
            return;
        };
        if self.max_bytes > 0 && self.written + line.len() as u64 > self.max_bytes {
            self.rotate(&path);
        }
        if self.file.is_none() {
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => {
                    self.written = f.metadata().map(|m| m.len()).unwrap_or(0);
                    self.file = Some(f);
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "opening the audit log");
                    return;
                }
            }
        }
        if let Some(f) = self.file.as_mut() {
            match f.write_all(line) {
                Ok(()) => self.written += line.len() as u64,
                Err(e) => tracing::error!(error = %e, "writing the audit log"),
            }
        }
    }

    /// Move the log aside as `<stem>-<UTC time>.<ext>` (as upstream's
    /// lumberjack names backups) and drop backups over the count or age limit.
    fn rotate(&mut self, path: &Path) {
        self.file = None;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("audit");
        let ext = path
            .extension()
            .and_then(|s| s.to_str())
            .map(|e| format!(".{e}"))
            .unwrap_or_default();
        let stamp = chrono::Utc::now().format("%Y-%m-%dT%H-%M-%S%.3f");
        let backup = path.with_file_name(format!("{stem}-{stamp}{ext}"));
        if let Err(e) = std::fs::rename(path, &backup) {
            tracing::error!(error = %e, "rotating the audit log");
        }
        self.written = 0;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut backups: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let is_backup = name.starts_with(&format!("{stem}-")) && name.ends_with(&ext);
                let modified = e.metadata().ok()?.modified().ok()?;
                is_backup.then(|| (modified, e.path()))
            })
            .collect();
        backups.sort_by(|a, b| b.0.cmp(&a.0));
        let now = std::time::SystemTime::now();
        for (i, (modified, p)) in backups.iter().enumerate() {
            let too_many = self.max_backups > 0 && i >= self.max_backups;
            let too_old = self.max_age_days > 0
                && now
                    .duration_since(*modified)
                    .is_ok_and(|d| d.as_secs() > self.max_age_days * 86_400);
            if too_many || too_old {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// The configured audit backend.
pub struct Auditor {
    policy: Policy,
    sink: Mutex<Sink>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("policy", &self.policy)
            .finish()
    }
}

/// One request being audited.
pub struct Record {
    pub decision: Decision,
    event: Value,
}

impl Auditor {
    /// `path` "-" is stdout; max_size_mb 0 never rotates.
    pub fn new(
        policy: Policy,
        path: &str,
        max_size_mb: u64,
        max_backups: usize,
        max_age_days: u64,
    ) -> Auditor {
        Auditor {
            policy,
            sink: Mutex::new(Sink {
                path: (path != "-").then(|| PathBuf::from(path)),
                file: None,
                written: 0,
                max_bytes: max_size_mb * 1024 * 1024,
                max_backups,
                max_age_days,
            }),
        }
    }

    /// Start auditing a request: the RequestReceived event (unless omitted).
    /// None when the policy says level None.
    pub fn begin(
        &self,
        a: &Attributes,
        method_uri: (&str, &str),
        source_ip: &str,
        user_agent: &str,
        body: &dyn Fn() -> Option<Value>,
    ) -> Option<Record> {
        let decision = self.policy.decide(a);
        if decision.level == Level::None {
            return None;
        }
        let now = timestamp();
        let mut event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": decision.level.as_str(),
            "auditID": uuid::Uuid::new_v4().to_string(),
            "requestURI": method_uri.1,
            "verb": a.verb,
            "user": user_json(a.user),
            "sourceIPs": [source_ip],
            "userAgent": user_agent,
            "requestReceivedTimestamp": now,
        });
        if a.resource_request {
            let mut r = json!({"resource": a.resource, "apiVersion": a.api_version});
            for (k, v) in [
                ("namespace", &a.namespace),
                ("name", &a.name),
                ("apiGroup", &a.api_group),
                ("subresource", &a.subresource),
            ] {
                if !v.is_empty() {
                    r[k] = v.as_str().into();
                }
            }
            event["objectRef"] = r;
        }
        if decision.level >= Level::Request {
            if let Some(mut obj) = body() {
                if decision.omit_managed_fields {
                    strip_managed_fields(&mut obj);
                }
                event["requestObject"] = obj;
            }
        }
        let rec = Record { decision, event };
        self.emit(&rec, Stage::RequestReceived, &now);
        Some(rec)
    }

    /// The response is known: ResponseStarted (a watch's stream begins) or
    /// ResponseComplete, with its status and, at RequestResponse, its body.
    pub fn finish(
        &self,
        rec: &mut Record,
        stage: Stage,
        code: u16,
        body: Option<Value>,
        authz: Option<(&str, &str)>,
    ) {
        let mut status = json!({"metadata": {}, "code": code});
        if code >= 400 {
            if let Some(v) = &body {
                for k in ["status", "message", "reason"] {
                    if let Some(x) = v.get(k) {
                        status[k] = x.clone();
                    }
                }
            }
        }
        rec.event["responseStatus"] = status;
        if let Some((decision, reason)) = authz {
            rec.event["annotations"] = json!({
                "authorization.k8s.io/decision": decision,
                "authorization.k8s.io/reason": reason,
            });
        }
        if rec.decision.level == Level::RequestResponse && stage == Stage::ResponseComplete {
            if let Some(mut v) = body {
                if rec.decision.omit_managed_fields {
                    strip_managed_fields(&mut v);
                }
                rec.event["responseObject"] = v;
            }
        }
        self.emit(rec, stage, &timestamp());
    }

    fn emit(&self, rec: &Record, stage: Stage, at: &str) {
        if rec.decision.omit_stages.contains(&stage) {
            return;
        }
        let mut e = rec.event.clone();
        e["stage"] = stage.as_str().into();
        e["stageTimestamp"] = at.into();
        let mut line = e.to_string().into_bytes();
        line.push(b'\n');
        if let Ok(mut s) = self.sink.lock() {
            s.write(&line);
        }
    }
}

fn timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn user_json(u: &User) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = u.uid.as_str().into();
    }
    v
}

fn strip_managed_fields(v: &mut Value) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
        for i in items {
            strip_managed_fields(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz"]
- level: None
  users: ["system:kube-proxy"]
  verbs: ["watch"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["secrets"]
- level: Request
  resources:
  - group: "apps"
    resources: ["deployments/scale"]
  namespaces: ["prod"]
- level: Metadata
"#;

    fn user(name: &str) -> User {
        User {
            name: name.into(),
            uid: String::new(),
            groups: vec!["system:authenticated".into()],
        }
    }

    #[test]
    fn first_matching_rule_decides() {
        let p = Policy::parse(POLICY).expect("policy");
        let u = user("jane");
        let secrets = Attributes::resource(&u, "get", "", "secrets").with_namespace("default");
        assert_eq!(p.decide(&secrets).level, Level::RequestResponse);
        let mut scale =
            Attributes::resource(&u, "update", "apps", "deployments").with_namespace("prod");
        scale.subresource = "scale".into();
        assert_eq!(p.decide(&scale).level, Level::Request);
        scale.namespace = "dev".into();
        assert_eq!(p.decide(&scale).level, Level::Metadata);
        let proxy = user("system:kube-proxy");
        let watch = Attributes::resource(&proxy, "watch", "", "services");
        assert_eq!(p.decide(&watch).level, Level::None);
        let mut health = Attributes::resource(&u, "get", "", "");
        health.resource_request = false;
        health.path = "/healthz/ping".into();
        assert_eq!(p.decide(&health).level, Level::None);
        health.path = "/version".into();
        assert_eq!(p.decide(&health).level, Level::Metadata);
        assert!(p
            .decide(&secrets)
            .omit_stages
            .contains(&Stage::RequestReceived));
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(Policy::parse("kind: Policy\napiVersion: audit.k8s.io/v1\nrules: []\n").is_err());
        assert!(Policy::parse("kind: Pod\napiVersion: v1\nrules: [{level: None}]\n").is_err());
        assert!(Policy::parse(
            "kind: Policy\napiVersion: audit.k8s.io/v1\nrules: [{level: Loud}]\n"
        )
        .is_err());
    }

    #[test]
    fn events_go_to_the_file_and_rotate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let p = Policy::parse(POLICY).expect("policy");
        let a = Auditor::new(p, &path.to_string_lossy(), 0, 0, 0);
        let u = user("jane");
        let attrs = Attributes::resource(&u, "create", "", "secrets").with_namespace("default");
        let body: Value = serde_json::from_str(
            r#"{"metadata":{"name":"s","managedFields":[{}]},"data":{"k":"dg=="}}"#,
        )
        .expect("json");
        let mut rec = a
            .begin(
                &attrs,
                ("POST", "/api/v1/namespaces/default/secrets"),
                "10.0.0.9",
                "kubectl",
                &|| Some(body.clone()),
            )
            .expect("audited");
        a.finish(
            &mut rec,
            Stage::ResponseComplete,
            201,
            Some(body.clone()),
            Some(("allow", "")),
        );
        let text = std::fs::read_to_string(&path).expect("log");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        // RequestReceived is omitted by the policy
        assert_eq!(lines.len(), 1, "{text}");
        let e = &lines[0];
        assert_eq!(e["stage"], "ResponseComplete");
        assert_eq!(e["level"], "RequestResponse");
        assert_eq!(e["objectRef"]["resource"], "secrets");
        assert_eq!(e["objectRef"]["namespace"], "default");
        assert_eq!(e["responseStatus"]["code"], 201);
        assert_eq!(e["requestObject"]["data"]["k"], "dg==");
        assert_eq!(e["user"]["username"], "jane");
        assert_eq!(e["sourceIPs"][0], "10.0.0.9");
        assert_eq!(e["annotations"]["authorization.k8s.io/decision"], "allow");

        // rotation: a tiny size limit moves full files aside, keeping 2 backups
        let p = Policy::parse(POLICY).expect("policy");
        let small = Auditor::new(p, &path.to_string_lossy(), 0, 2, 0);
        small.sink.lock().expect("sink").max_bytes = 300;
        for _ in 0..6 {
            let mut rec = small
                .begin(&attrs, ("POST", "/x"), "1.2.3.4", "ua", &|| None)
                .expect("audited");
            small.finish(&mut rec, Stage::ResponseComplete, 201, None, None);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let backups = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("audit-"))
            .count();
        assert_eq!(backups, 2, "only maxbackup backups are kept");
        assert!(path.exists());
    }
}
