//! RBAC authorization, as upstream's `plugin/pkg/auth/authorizer/rbac` with the
//! pieces around it: request attributes (upstream's `authorizer.Attributes` and
//! `RequestInfoFactory`), the 403 message, ClusterRole aggregation (upstream's
//! clusterrole-aggregation controller), escalation prevention for writes of
//! roles and bindings (`pkg/registry/rbac`), SelfSubjectRulesReview rules, and the
//! bootstrap policy with its reconciliation (`bootstrappolicy`, `reconciliation`).
//!
//! Everything here works on a [`Snapshot`] of the four RBAC resources, built from
//! `rbac.authorization.k8s.io/v1` objects as JSON (from the watch cache with
//! [`Snapshot::from_cache`] or [`SnapshotCache`]). Malformed objects never panic:
//! a missing field reads as empty, an object without a name is skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use crate::authn::User;
use crate::cache::{Cache, Entry};
use crate::error::ApiError;
use crate::selectors::{object_labels, FieldSelector, LabelSelector};

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";
/// Bootstrap objects carrying `"false"` here are left alone by reconciliation.
pub const AUTOUPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";
/// The label every bootstrap object carries (value [`BOOTSTRAP_LABEL_VALUE`]).
pub const BOOTSTRAP_LABEL: &str = "kubernetes.io/bootstrapping";
pub const BOOTSTRAP_LABEL_VALUE: &str = "rbac-defaults";
/// The group that may do anything (bound to cluster-admin by the bootstrap policy).
pub const SYSTEM_MASTERS: &str = "system:masters";
pub const ALL_AUTHENTICATED: &str = "system:authenticated";
pub const ALL_UNAUTHENTICATED: &str = "system:unauthenticated";
pub const ANONYMOUS_USER: &str = "system:anonymous";
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
pub const ALL_SERVICE_ACCOUNTS: &str = "system:serviceaccounts";

/// Etcd folders of the four RBAC resources, as upstream.
pub const STORAGE_ROLES: &str = "roles";
pub const STORAGE_CLUSTER_ROLES: &str = "clusterroles";
pub const STORAGE_ROLE_BINDINGS: &str = "rolebindings";
pub const STORAGE_CLUSTER_ROLE_BINDINGS: &str = "clusterrolebindings";

// ---------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------

/// The user of a request without credentials, as upstream's anonymous authenticator.
pub fn anonymous() -> User {
    User {
        name: ANONYMOUS_USER.into(),
        uid: String::new(),
        groups: vec![ALL_UNAUTHENTICATED.into()],
    }
}

/// `system:serviceaccount:NS:NAME`.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}")
}

/// A service account's user with the groups upstream's token authenticator gives it
/// (`system:serviceaccounts`, `system:serviceaccounts:NS`, `system:authenticated`).
/// RBAC matches Group subjects against `User::groups` only, so whatever
/// authenticates service-account tokens must add these groups.
pub fn service_account_user(namespace: &str, name: &str) -> User {
    User {
        name: service_account_username(namespace, name),
        uid: String::new(),
        groups: vec![
            ALL_SERVICE_ACCOUNTS.into(),
            format!("{ALL_SERVICE_ACCOUNTS}:{namespace}"),
            ALL_AUTHENTICATED.into(),
        ],
    }
}

/// Member of `system:masters`: upstream's authorizer chain puts a privileged-group
/// authorizer before RBAC, and the RBAC registry lets these users escalate.
pub fn is_privileged(user: &User) -> bool {
    user.groups.iter().any(|g| g == SYSTEM_MASTERS)
}

// ---------------------------------------------------------------------------
// Policy rules and their matching
// ---------------------------------------------------------------------------

/// An `rbac/v1` PolicyRule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn has(set: &[String], s: &str) -> bool {
    set.iter().any(|x| x == s)
}

fn owned(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

impl PolicyRule {
    /// From a PolicyRule object; missing or malformed fields read as empty.
    pub fn from_json(v: &Value) -> PolicyRule {
        PolicyRule {
            verbs: strings(v, "verbs"),
            api_groups: strings(v, "apiGroups"),
            resources: strings(v, "resources"),
            resource_names: strings(v, "resourceNames"),
            non_resource_urls: strings(v, "nonResourceURLs"),
        }
    }

    /// As upstream serializes it: `verbs` always, the rest when not empty.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("verbs".into(), json!(self.verbs));
        for (k, v) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !v.is_empty() {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    }

    /// Upstream's `CompactString`, used in escalation messages:
    /// `{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}`.
    pub fn compact_string(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}:{}", go_quote_list(v)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    fn group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == "*" || g == group)
    }

    /// `combined` is `resource` or `resource/subresource`; a rule's `*/sub` matches
    /// any resource's `sub`.
    fn resource_matches(&self, combined: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            r == "*"
                || r == combined
                || (!subresource.is_empty()
                    && r.len() == subresource.len() + 2
                    && r.starts_with("*/")
                    && r.ends_with(subresource))
        })
    }

    /// A rule with resourceNames matches only requests naming one of them: never
    /// a list, watch or create without a name.
    fn name_matches(&self, name: &str) -> bool {
        self.resource_names.is_empty() || has(&self.resource_names, name)
    }

    /// `*`, an exact path, or a rule ending in `*` matching the path's prefix.
    fn url_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|u| {
            u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
        })
    }

    /// Does this rule allow the request? (upstream's `RuleAllows`)
    pub fn allows(&self, a: &Attributes) -> bool {
        if a.resource_request {
            let combined = if a.subresource.is_empty() {
                a.resource.clone()
            } else {
                format!("{}/{}", a.resource, a.subresource)
            };
            self.verb_matches(&a.verb)
                && self.group_matches(&a.api_group)
                && self.resource_matches(&combined, &a.subresource)
                && self.name_matches(&a.name)
        } else {
            self.verb_matches(&a.verb) && self.url_matches(&a.path)
        }
    }
}

/// The `rules` of a Role or ClusterRole object.
pub fn rules_of(obj: &Value) -> Vec<PolicyRule> {
    obj.get("rules")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(PolicyRule::from_json).collect())
        .unwrap_or_default()
}

/// Go's `%q` of a string (what upstream's messages use).
pub(crate) fn go_quote(s: &str) -> String {
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

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quote_list(xs: &[String]) -> String {
    let quoted: Vec<String> = xs.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Upstream's aggregate error text: one message as is, several (deduplicated) in brackets.
fn aggregate_errors(errors: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    match seen.len() {
        0 => String::new(),
        1 => seen[0].to_string(),
        _ => format!("[{}]", seen.join(", ")),
    }
}

// ---------------------------------------------------------------------------
// Covers (escalation checks and reconciliation)
// ---------------------------------------------------------------------------

/// One rule per (group, resource, verb, name) and per (URL, verb), as upstream's BreakdownRule.
pub fn breakdown_rule(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for g in &rule.api_groups {
        for r in &rule.resources {
            for v in &rule.verbs {
                let base = PolicyRule {
                    verbs: vec![v.clone()],
                    api_groups: vec![g.clone()],
                    resources: vec![r.clone()],
                    ..Default::default()
                };
                if rule.resource_names.is_empty() {
                    out.push(base);
                } else {
                    for n in &rule.resource_names {
                        out.push(PolicyRule {
                            resource_names: vec![n.clone()],
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    for u in &rule.non_resource_urls {
        for v in &rule.verbs {
            out.push(PolicyRule {
                verbs: vec![v.clone()],
                non_resource_urls: vec![u.clone()],
                ..Default::default()
            });
        }
    }
    out
}

fn has_all(set: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| has(set, w))
}

fn resources_cover(owner: &[String], wanted: &[String]) -> bool {
    if has(owner, "*") || has_all(owner, wanted) {
        return true;
    }
    wanted.iter().all(|path| {
        if has(owner, path) {
            return true;
        }
        match path.split_once('/') {
            Some((_, sub)) => has(owner, &format!("*/{sub}")),
            None => false,
        }
    })
}

fn urls_cover(owner: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|path| {
        owner
            .iter()
            .any(|o| o == path || (o.ends_with('*') && path.starts_with(o.trim_end_matches('*'))))
    })
}

fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, "*") || has_all(&owner.api_groups, &sub.api_groups);
    let resources = resources_cover(&owner.resources, &sub.resources);
    let urls = urls_cover(&owner.non_resource_urls, &sub.non_resource_urls);
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs && groups && resources && names && urls
}

/// The parts of `wanted` (broken down to single rules) that `owner` does not
/// cover; empty when it covers them all (upstream's `Covers`).
pub fn uncovered(owner: &[PolicyRule], wanted: &[PolicyRule]) -> Vec<PolicyRule> {
    wanted
        .iter()
        .flat_map(breakdown_rule)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect()
}

/// Merge rules with one group, one resource and nothing but verbs (upstream's CompactRules).
fn compact_rules(rules: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    let mut simple: BTreeMap<(String, String), PolicyRule> = BTreeMap::new();
    for r in rules {
        let is_simple = r.resource_names.is_empty()
            && r.non_resource_urls.is_empty()
            && r.api_groups.len() == 1
            && r.resources.len() == 1;
        if is_simple {
            let key = (r.api_groups[0].clone(), r.resources[0].clone());
            match simple.get_mut(&key) {
                Some(existing) => existing.verbs.extend(r.verbs.iter().cloned()),
                None => {
                    simple.insert(key, r.clone());
                }
            }
        } else {
            out.push(r.clone());
        }
    }
    out.extend(simple.into_values());
    out
}

// ---------------------------------------------------------------------------
// Request attributes
// ---------------------------------------------------------------------------

/// What a request asks to do, as upstream's `authorizer.Attributes`.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub user: &'a User,
    /// get list watch create update patch delete deletecollection, or
    /// impersonate bind escalate use approve sign proxy ...; for non-resource
    /// requests the lowercased HTTP method.
    pub verb: String,
    pub resource_request: bool,
    pub namespace: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// The URL path (what non-resource rules match).
    pub path: String,
}

impl<'a> Attributes<'a> {
    /// A resource request at the cluster scope; chain `with_*` for the rest.
    pub fn resource(user: &'a User, verb: &str, api_group: &str, resource: &str) -> Self {
        Attributes {
            user,
            verb: verb.into(),
            resource_request: true,
            namespace: String::new(),
            api_group: api_group.into(),
            api_version: "*".into(),
            resource: resource.into(),
            subresource: String::new(),
            name: String::new(),
            path: String::new(),
        }
    }

    /// A non-resource request (`/healthz`, `/version`, `/api`, ...).
    pub fn non_resource(user: &'a User, verb: &str, path: &str) -> Self {
        Attributes {
            resource_request: false,
            path: path.into(),
            api_version: String::new(),
            ..Attributes::resource(user, verb, "", "")
        }
    }

    pub fn with_namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.into();
        self
    }

    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    pub fn with_subresource(mut self, subresource: &str) -> Self {
        self.subresource = subresource.into();
        self
    }

    pub fn with_version(mut self, version: &str) -> Self {
        self.api_version = version.into();
        self
    }

    /// The attributes of an HTTP request, as upstream's `RequestInfoFactory`
    /// (API prefixes `api` and `apis`): the verb from the method (`get` without a
    /// name is `list`, or `watch` with `?watch=true`; `delete` without a name is
    /// `deletecollection`), `/watch/` and `/proxy/` path verbs, namespaces and
    /// their `status`/`finalize` subresources, and a list/watch's name from a
    /// `fieldSelector=metadata.name=N`. Anything else is a non-resource request
    /// with the lowercased method as verb. Errs where upstream answers 500
    /// (`/api/v1/watch` with nothing after it).
    pub fn from_request(
        user: &'a User,
        method: &str,
        path: &str,
        query: Option<&str>,
    ) -> Result<Attributes<'a>, String> {
        let mut a = Attributes::non_resource(user, &method.to_ascii_lowercase(), path);
        let trimmed = path.trim_matches('/');
        let parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
            return Ok(a);
        }
        let mut cur = &parts[1..];
        if parts[0] == "apis" {
            if cur.len() < 3 {
                return Ok(a);
            }
            a.api_group = cur[0].into();
            cur = &cur[1..];
        }
        a.resource_request = true;
        a.api_version = cur[0].into();
        cur = &cur[1..];
        let Some(first) = cur.first() else {
            return Ok(a);
        };
        if matches!(*first, "proxy" | "watch") {
            if cur.len() < 2 {
                return Err(format!(
                    "unable to determine kind and namespace from url, {path}"
                ));
            }
            a.verb = first.to_string();
            cur = &cur[1..];
        } else {
            a.verb = match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
            .into();
        }
        if cur.first() == Some(&"namespaces") && cur.len() > 1 {
            a.namespace = cur[1].into();
            if cur.len() > 2 && !matches!(cur[2], "status" | "finalize") {
                cur = &cur[2..];
            }
        }
        if cur.len() >= 3 && a.verb != "proxy" {
            a.subresource = cur[2].into();
        }
        if cur.len() >= 2 {
            a.name = cur[1].into();
        }
        if let Some(r) = cur.first() {
            a.resource = r.to_string();
        }
        if a.name.is_empty() && a.verb == "get" {
            let mut watch = None;
            let mut field_selector = None;
            for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
                if k == "watch" && watch.is_none() {
                    watch = Some(v.to_string());
                } else if k == "fieldSelector" && field_selector.is_none() {
                    field_selector = Some(v.to_string());
                }
            }
            let watching = watch.is_some_and(|w| !(w == "0" || w.eq_ignore_ascii_case("false")));
            a.verb = if watching { "watch" } else { "list" }.into();
            if let Some(name) = field_selector.as_deref().and_then(exact_name) {
                a.name = name;
            }
        }
        if a.name.is_empty() && a.verb == "delete" {
            a.verb = "deletecollection".into();
        }
        Ok(a)
    }
}

/// The name a field selector requires (`metadata.name=N` or `==`), when it is
/// a valid selector and N a valid path segment.
fn exact_name(selector: &str) -> Option<String> {
    FieldSelector::parse(selector).ok()?;
    selector.split(',').find_map(|term| {
        let (k, v) = if let Some((k, v)) = term.split_once("==") {
            (k, v)
        } else {
            let (k, v) = term.split_once('=')?;
            if k.ends_with('!') {
                return None;
            }
            (k, v)
        };
        let valid = !v.is_empty() && v != "." && v != ".." && !v.contains(['/', '%']);
        (k.trim() == "metadata.name" && valid).then(|| v.to_string())
    })
}

// ---------------------------------------------------------------------------
// The 403 message
// ---------------------------------------------------------------------------

/// Upstream's 403 message for a denied request (`reason` is the authorizers'
/// reason, appended after `: ` when not empty):
/// `pods "p" is forbidden: User "bob" cannot get resource "pods" in API group "" in the namespace "ns"`,
/// `nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" at the cluster scope`,
/// `forbidden: User "system:anonymous" cannot get path "/api"`.
pub fn forbidden_message(a: &Attributes, reason: &str) -> String {
    let user = go_quote(&a.user.name);
    let inner = if !a.resource_request {
        format!("User {user} cannot {} path {}", a.verb, go_quote(&a.path))
    } else {
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {}", go_quote(&a.namespace))
        };
        format!(
            "User {user} cannot {} resource {} in API group {} {scope}",
            a.verb,
            go_quote(&resource),
            go_quote(&a.api_group)
        )
    };
    let inner = inner
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let err = if reason.is_empty() {
        inner
    } else {
        format!("{inner}: {reason}")
    };
    let (group, resource) = if a.resource_request {
        (a.api_group.as_str(), a.resource.as_str())
    } else {
        ("", "")
    };
    forbidden_text(group, resource, &a.name, &err)
}

/// Upstream's `NewForbidden` message for a group/resource/name.
fn forbidden_text(group: &str, resource: &str, name: &str, err: &str) -> String {
    if group.is_empty() && resource.is_empty() {
        return format!("forbidden: {err}");
    }
    let qualified = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    if name.is_empty() {
        format!("{qualified} is forbidden: {err}")
    } else {
        format!("{qualified} {} is forbidden: {err}", go_quote(name))
    }
}

fn forbidden_details(group: &str, resource: &str, name: &str) -> Option<Value> {
    let mut d = Map::new();
    for (k, v) in [("name", name), ("group", group), ("kind", resource)] {
        if !v.is_empty() {
            d.insert(k.into(), json!(v));
        }
    }
    (!d.is_empty()).then_some(Value::Object(d))
}

/// The 403 Forbidden a denied request gets (message from [`forbidden_message`],
/// details group/kind/name as upstream).
pub fn forbidden_error(a: &Attributes, reason: &str) -> ApiError {
    let (group, resource) = if a.resource_request {
        (a.api_group.as_str(), a.resource.as_str())
    } else {
        ("", "")
    };
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: forbidden_message(a, reason),
        details: forbidden_details(group, resource, &a.name),
    }
}

// ---------------------------------------------------------------------------
// Bindings
// ---------------------------------------------------------------------------

/// An `rbac/v1` Subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub kind: String,
    pub api_group: String,
    pub name: String,
    pub namespace: String,
}

impl Subject {
    pub fn from_json(v: &Value) -> Subject {
        Subject {
            kind: str_at(v, "/kind").into(),
            api_group: str_at(v, "/apiGroup").into(),
            name: str_at(v, "/name").into(),
            namespace: str_at(v, "/namespace").into(),
        }
    }

    /// Does this subject name the user? A ServiceAccount without a namespace
    /// means one in the binding's namespace (none for ClusterRoleBindings).
    fn applies_to(&self, user: &User, binding_namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => user.name == self.name,
            "Group" => has(&user.groups, &self.name),
            "ServiceAccount" => {
                let ns = if self.namespace.is_empty() {
                    binding_namespace
                } else {
                    &self.namespace
                };
                !ns.is_empty() && user.name == service_account_username(ns, &self.name)
            }
            _ => false,
        }
    }

    fn describe(&self, binding_namespace: &str) -> String {
        if self.kind == "ServiceAccount" {
            let ns = if self.namespace.is_empty() {
                binding_namespace
            } else {
                &self.namespace
            };
            format!("{} {}", self.kind, go_quote(&format!("{}/{ns}", self.name)))
        } else {
            format!("{} {}", self.kind, go_quote(&self.name))
        }
    }
}

/// A binding's `roleRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleRef {
    pub api_group: String,
    pub kind: String,
    pub name: String,
}

impl RoleRef {
    pub fn from_json(binding: &Value) -> RoleRef {
        RoleRef {
            api_group: str_at(binding, "/roleRef/apiGroup").into(),
            kind: str_at(binding, "/roleRef/kind").into(),
            name: str_at(binding, "/roleRef/name").into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Binding {
    name: String,
    /// empty for ClusterRoleBindings
    namespace: String,
    role_ref: RoleRef,
    subjects: Vec<Subject>,
}

impl Binding {
    fn from_json(v: &Value) -> Option<Binding> {
        let name = str_at(v, "/metadata/name");
        if name.is_empty() {
            return None;
        }
        Some(Binding {
            name: name.into(),
            namespace: str_at(v, "/metadata/namespace").into(),
            role_ref: RoleRef::from_json(v),
            subjects: v
                .get("subjects")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(Subject::from_json).collect())
                .unwrap_or_default(),
        })
    }

    fn describe(&self, subject: &Subject) -> String {
        if self.namespace.is_empty() {
            format!(
                "ClusterRoleBinding {} of {} {} to {}",
                go_quote(&self.name),
                self.role_ref.kind,
                go_quote(&self.role_ref.name),
                subject.describe("")
            )
        } else {
            format!(
                "RoleBinding {} of {} {} to {}",
                go_quote(&format!("{}/{}", self.name, self.namespace)),
                self.role_ref.kind,
                go_quote(&self.role_ref.name),
                subject.describe(&self.namespace)
            )
        }
    }
}

// ---------------------------------------------------------------------------
// Snapshot and authorizer
// ---------------------------------------------------------------------------

/// An authorizer's verdict. RBAC never denies outright: what it does not allow
/// it has no opinion on, and the next authorizer (or the final 403) decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    NoOpinion,
}

/// A rule of a SelfSubjectRulesReview on resources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
}

impl ResourceRule {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("verbs".into(), json!(self.verbs));
        for (k, v) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
        ] {
            if !v.is_empty() {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    }
}

/// A rule of a SelfSubjectRulesReview on non-resource URLs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NonResourceRule {
    pub verbs: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

impl NonResourceRule {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("verbs".into(), json!(self.verbs));
        if !self.non_resource_urls.is_empty() {
            m.insert("nonResourceURLs".into(), json!(self.non_resource_urls));
        }
        Value::Object(m)
    }
}

/// The RBAC objects at one moment, indexed for authorization. ClusterRoles with
/// an aggregationRule carry their aggregated rules (see [`aggregate`]).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// namespace -> name -> rules
    roles: HashMap<String, HashMap<String, Vec<PolicyRule>>>,
    cluster_role_bindings: Vec<Binding>,
    /// namespace -> bindings
    role_bindings: HashMap<String, Vec<Binding>>,
}

enum Visit<'s> {
    Rule(&'s Binding, &'s Subject, &'s PolicyRule),
    Error(String),
}

impl Snapshot {
    /// From Role, ClusterRole, RoleBinding and ClusterRoleBinding objects.
    pub fn new(
        roles: &[Value],
        cluster_roles: &[Value],
        role_bindings: &[Value],
        cluster_role_bindings: &[Value],
    ) -> Snapshot {
        let mut s = Snapshot::default();
        let aggregated = aggregate(cluster_roles);
        for cr in cluster_roles {
            let name = str_at(cr, "/metadata/name");
            if name.is_empty() {
                continue;
            }
            let rules = aggregated
                .get(name)
                .cloned()
                .unwrap_or_else(|| rules_of(cr));
            s.cluster_roles.insert(name.into(), rules);
        }
        for r in roles {
            let (ns, name) = (
                str_at(r, "/metadata/namespace"),
                str_at(r, "/metadata/name"),
            );
            if ns.is_empty() || name.is_empty() {
                continue;
            }
            s.roles
                .entry(ns.into())
                .or_default()
                .insert(name.into(), rules_of(r));
        }
        let mut crbs: Vec<Binding> = cluster_role_bindings
            .iter()
            .filter_map(Binding::from_json)
            .map(|mut b| {
                b.namespace.clear();
                b
            })
            .collect();
        crbs.sort_by(|a, b| a.name.cmp(&b.name));
        s.cluster_role_bindings = crbs;
        for b in role_bindings.iter().filter_map(Binding::from_json) {
            if !b.namespace.is_empty() {
                s.role_bindings
                    .entry(b.namespace.clone())
                    .or_default()
                    .push(b);
            }
        }
        for list in s.role_bindings.values_mut() {
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
        s
    }

    /// From any mix of the four kinds, told apart by `kind` (others are ignored).
    pub fn from_objects(objects: &[Value]) -> Snapshot {
        let pick = |kind: &str| -> Vec<Value> {
            objects
                .iter()
                .filter(|o| o.get("kind").and_then(Value::as_str) == Some(kind))
                .cloned()
                .collect()
        };
        Snapshot::new(
            &pick("Role"),
            &pick("ClusterRole"),
            &pick("RoleBinding"),
            &pick("ClusterRoleBinding"),
        )
    }

    /// From the watch cache: every object under `{etcd_prefix}/roles/`,
    /// `/clusterroles/`, `/rolebindings/` and `/clusterrolebindings/`.
    pub fn from_cache(cache: &Cache, etcd_prefix: &str) -> Snapshot {
        let [roles, cluster_roles, role_bindings, cluster_role_bindings] =
            list_rbac(cache, etcd_prefix).map(|entries| parse_entries(&entries));
        Snapshot::new(
            &roles,
            &cluster_roles,
            &role_bindings,
            &cluster_role_bindings,
        )
    }

    fn role_rules(&self, role_ref: &RoleRef, namespace: &str) -> Result<&[PolicyRule], String> {
        match role_ref.kind.as_str() {
            "Role" => self
                .roles
                .get(namespace)
                .and_then(|m| m.get(&role_ref.name))
                .map(Vec::as_slice)
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io {} not found",
                        go_quote(&role_ref.name)
                    )
                }),
            "ClusterRole" => self
                .cluster_roles
                .get(&role_ref.name)
                .map(Vec::as_slice)
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io {} not found",
                        go_quote(&role_ref.name)
                    )
                }),
            other => Err(format!(
                "unsupported role reference kind: {}",
                go_quote(other)
            )),
        }
    }

    /// The rules of the bindings naming the user, ClusterRoleBindings first, then
    /// the RoleBindings of `namespace` (if any); stops when `visit` says false.
    fn visit(&self, user: &User, namespace: &str, visit: &mut dyn FnMut(Visit) -> bool) {
        let namespaced = if namespace.is_empty() {
            None
        } else {
            self.role_bindings.get(namespace)
        };
        let bindings = self
            .cluster_role_bindings
            .iter()
            .chain(namespaced.into_iter().flatten());
        for b in bindings {
            let Some(subject) = b.subjects.iter().find(|s| s.applies_to(user, &b.namespace)) else {
                continue;
            };
            match self.role_rules(&b.role_ref, &b.namespace) {
                Ok(rules) => {
                    for r in rules {
                        if !visit(Visit::Rule(b, subject, r)) {
                            return;
                        }
                    }
                }
                Err(e) => {
                    if !visit(Visit::Error(e)) {
                        return;
                    }
                }
            }
        }
    }

    /// Upstream's RBAC `Authorize`: Allow with `RBAC: allowed by ...`, or
    /// NoOpinion with an empty reason, or `RBAC: <errors>` when bindings
    /// referred to roles that could not be found.
    pub fn authorize(&self, a: &Attributes) -> (Decision, String) {
        let mut allowed = None;
        let mut errors = Vec::new();
        self.visit(a.user, &a.namespace, &mut |v| match v {
            Visit::Rule(b, s, r) => {
                if r.allows(a) {
                    allowed = Some(format!("RBAC: allowed by {}", b.describe(s)));
                    false
                } else {
                    true
                }
            }
            Visit::Error(e) => {
                errors.push(e);
                true
            }
        });
        match allowed {
            Some(reason) => (Decision::Allow, reason),
            None if errors.is_empty() => (Decision::NoOpinion, String::new()),
            None => (
                Decision::NoOpinion,
                format!("RBAC: {}", aggregate_errors(&errors)),
            ),
        }
    }

    /// Shorthand for `authorize(a).0 == Decision::Allow`.
    pub fn allows(&self, a: &Attributes) -> bool {
        self.authorize(a).0 == Decision::Allow
    }

    /// Every rule the user holds in `namespace` (cluster-wide ones included), and
    /// the errors met resolving bindings (upstream's `RulesFor`).
    pub fn policy_rules_for(&self, user: &User, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        self.visit(user, namespace, &mut |v| {
            match v {
                Visit::Rule(_, _, r) => rules.push(r.clone()),
                Visit::Error(e) => errors.push(e),
            }
            true
        });
        (rules, errors)
    }

    /// A SelfSubjectRulesReview's rules: every held rule with resources as a
    /// resource rule, every one with nonResourceURLs as a non-resource rule.
    pub fn rules_for(
        &self,
        user: &User,
        namespace: &str,
    ) -> (Vec<ResourceRule>, Vec<NonResourceRule>) {
        let (rules, _) = self.policy_rules_for(user, namespace);
        let mut resource = Vec::new();
        let mut non_resource = Vec::new();
        for r in rules {
            if !r.resources.is_empty() {
                resource.push(ResourceRule {
                    verbs: r.verbs.clone(),
                    api_groups: r.api_groups.clone(),
                    resources: r.resources.clone(),
                    resource_names: r.resource_names.clone(),
                });
            }
            if !r.non_resource_urls.is_empty() {
                non_resource.push(NonResourceRule {
                    verbs: r.verbs,
                    non_resource_urls: r.non_resource_urls,
                });
            }
        }
        (resource, non_resource)
    }

    /// The `status` of a SelfSubjectRulesReview (`evaluationError` when some
    /// binding's role could not be found; `incomplete` is false for RBAC).
    pub fn rules_review_status(&self, user: &User, namespace: &str) -> Value {
        let (resource, non_resource) = self.rules_for(user, namespace);
        let (_, errors) = self.policy_rules_for(user, namespace);
        let mut status = json!({
            "resourceRules": resource.iter().map(ResourceRule::to_json).collect::<Vec<_>>(),
            "nonResourceRules": non_resource.iter().map(NonResourceRule::to_json).collect::<Vec<_>>(),
            "incomplete": false,
        });
        if !errors.is_empty() {
            status["evaluationError"] = json!(aggregate_errors(&errors));
        }
        status
    }
}

fn list_rbac(cache: &Cache, etcd_prefix: &str) -> [Vec<Arc<Entry>>; 4] {
    let base = etcd_prefix.trim_end_matches('/');
    [
        STORAGE_ROLES,
        STORAGE_CLUSTER_ROLES,
        STORAGE_ROLE_BINDINGS,
        STORAGE_CLUSTER_ROLE_BINDINGS,
    ]
    .map(|folder| {
        cache
            .list(&format!("{base}/{folder}/"), None, 0, &|_, _| true)
            .items
    })
}

fn parse_entries(entries: &[Arc<Entry>]) -> Vec<Value> {
    entries
        .iter()
        .filter_map(|e| serde_json::from_slice(&e.data).ok())
        .collect()
}

/// Per RBAC folder: how many objects, and the newest revision among them.
type Fingerprint = [(usize, i64); 4];

/// A [`Snapshot`] rebuilt only when the RBAC objects in the cache changed (their
/// count or newest revision), for the request path.
#[derive(Default)]
pub struct SnapshotCache {
    current: Mutex<Option<(Fingerprint, Arc<Snapshot>)>>,
}

impl SnapshotCache {
    pub fn new() -> SnapshotCache {
        SnapshotCache::default()
    }

    pub fn get(&self, cache: &Cache, etcd_prefix: &str) -> Arc<Snapshot> {
        let lists = list_rbac(cache, etcd_prefix);
        let fingerprint = lists
            .each_ref()
            .map(|l| (l.len(), l.iter().map(|e| e.rev).max().unwrap_or(0)));
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((f, snap)) = cur.as_ref() {
            if *f == fingerprint {
                return snap.clone();
            }
        }
        let [roles, cluster_roles, role_bindings, cluster_role_bindings] =
            lists.map(|entries| parse_entries(&entries));
        let snap = Arc::new(Snapshot::new(
            &roles,
            &cluster_roles,
            &role_bindings,
            &cluster_role_bindings,
        ));
        *cur = Some((fingerprint, snap.clone()));
        snap
    }
}

// ---------------------------------------------------------------------------
// ClusterRole aggregation
// ---------------------------------------------------------------------------

/// The rules of every ClusterRole with an `aggregationRule`, by name: the union
/// (in order, without duplicates) of the rules of the other ClusterRoles its
/// `clusterRoleSelectors` match, taken selector by selector and role by role in
/// name order, as upstream's clusterrole-aggregation controller. Aggregated
/// roles feed others (view -> edit -> admin): this iterates to the fixed point
/// the controller converges to. A role whose selectors do not parse keeps its
/// stored rules.
pub fn aggregate(cluster_roles: &[Value]) -> BTreeMap<String, Vec<PolicyRule>> {
    struct Role {
        name: String,
        labels: BTreeMap<String, String>,
        selectors: Option<Result<Vec<LabelSelector>, String>>,
    }
    let mut roles: Vec<Role> = Vec::new();
    let mut current: Vec<Vec<PolicyRule>> = Vec::new();
    let mut sorted: Vec<&Value> = cluster_roles
        .iter()
        .filter(|cr| !str_at(cr, "/metadata/name").is_empty())
        .collect();
    sorted.sort_by(|a, b| str_at(a, "/metadata/name").cmp(str_at(b, "/metadata/name")));
    sorted.dedup_by(|a, b| str_at(a, "/metadata/name") == str_at(b, "/metadata/name"));
    for cr in sorted {
        let selectors = cr
            .get("aggregationRule")
            .filter(|a| a.is_object())
            .map(|a| {
                a.get("clusterRoleSelectors")
                    .and_then(Value::as_array)
                    .map(|sels| sels.iter().map(LabelSelector::from_json).collect())
                    .unwrap_or_else(|| Ok(Vec::new()))
            });
        roles.push(Role {
            name: str_at(cr, "/metadata/name").into(),
            labels: object_labels(cr),
            selectors,
        });
        current.push(rules_of(cr));
    }
    for _ in 0..=roles.len() {
        let mut changed = false;
        for i in 0..roles.len() {
            let Some(Ok(selectors)) = &roles[i].selectors else {
                continue;
            };
            let mut rules: Vec<PolicyRule> = Vec::new();
            for sel in selectors {
                for (j, other) in roles.iter().enumerate() {
                    if j == i || !sel.matches(&other.labels) {
                        continue;
                    }
                    for r in &current[j] {
                        if !rules.contains(r) {
                            rules.push(r.clone());
                        }
                    }
                }
            }
            if rules != current[i] {
                current[i] = rules;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    roles
        .iter()
        .zip(current)
        .filter(|(r, _)| matches!(r.selectors, Some(Ok(_))))
        .map(|(r, rules)| (r.name.clone(), rules))
        .collect()
}

/// The ClusterRoles whose stored rules differ from their aggregated rules, with
/// the `rules` replaced: what the clusterrole-aggregation controller writes back.
pub fn aggregation_updates(cluster_roles: &[Value]) -> Vec<Value> {
    let aggregated = aggregate(cluster_roles);
    cluster_roles
        .iter()
        .filter_map(|cr| {
            let rules = aggregated.get(str_at(cr, "/metadata/name"))?;
            if *rules == rules_of(cr) {
                return None;
            }
            let mut out = cr.clone();
            out["rules"] = Value::Array(rules.iter().map(PolicyRule::to_json).collect());
            Some(out)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Escalation prevention
// ---------------------------------------------------------------------------

/// Upstream's `ConfirmNoEscalation`: the user may grant `rules` in `namespace`
/// ("" for cluster-wide) only if the rules they hold there cover them. The
/// refusal is upstream's text: `user "bob" (groups=["g"]) is attempting to grant
/// RBAC permissions not currently held:\n{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`
/// (one line per missing rule, sorted). This is the covers check alone: the
/// `system:masters`, `escalate` and `bind` exemptions are in
/// [`check_role_write`] and [`check_binding_write`].
pub fn can_grant(
    snapshot: &Snapshot,
    user: &User,
    namespace: &str,
    rules: &[PolicyRule],
) -> Result<(), String> {
    let (owner, errors) = snapshot.policy_rules_for(user, namespace);
    let missing = uncovered(&owner, rules);
    if missing.is_empty() {
        return Ok(());
    }
    let lines: BTreeSet<String> = compact_rules(&missing)
        .iter()
        .map(PolicyRule::compact_string)
        .collect();
    let mut msg = format!(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        go_quote(&user.name),
        go_quote_list(&user.groups),
        lines.into_iter().collect::<Vec<_>>().join("\n")
    );
    if !errors.is_empty() {
        msg.push_str(&format!(
            "; resolution errors: [{}]",
            aggregate_errors(&errors)
        ));
    }
    Err(msg)
}

/// Only `metadata.ownerReferences`/`finalizers` (and bookkeeping: resourceVersion,
/// managedFields) differ: upstream lets such updates through unchecked, so the
/// garbage collector can always finish its work.
fn only_gc_fields_change(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "ownerReferences",
                "finalizers",
                "resourceVersion",
                "managedFields",
            ] {
                m.remove(k);
            }
        }
        v
    };
    strip(new) == strip(old)
}

fn rbac_forbidden(resource: &str, name: &str, msg: &str) -> ApiError {
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: forbidden_text(GROUP, resource, name, msg),
        details: forbidden_details(GROUP, resource, name),
    }
}

/// May the user create (`old` None) or update (`old` the stored object) this Role
/// (`resource` "roles", `namespace` its namespace) or ClusterRole ("clusterroles",
/// ""), as upstream's RBAC registry: yes for `system:masters`, for an update
/// touching only ownerReferences/finalizers, with the `escalate` verb on the
/// resource (on create the request names no object, so `escalate` limited by
/// resourceNames does not count), or when [`can_grant`] passes for its rules.
/// The refusal is a 403 `roles.rbac.authorization.k8s.io "r" is forbidden: user ...`.
pub fn check_role_write(
    snapshot: &Snapshot,
    user: &User,
    resource: &str,
    namespace: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if is_privileged(user) {
        return Ok(());
    }
    let name = str_at(obj, "/metadata/name");
    let request_name = if old.is_some() { name } else { "" };
    let escalate = Attributes::resource(user, "escalate", GROUP, resource)
        .with_namespace(namespace)
        .with_name(request_name);
    if snapshot.allows(&escalate) {
        return Ok(());
    }
    if old.is_some_and(|old| only_gc_fields_change(obj, old)) {
        return Ok(());
    }
    can_grant(snapshot, user, namespace, &rules_of(obj))
        .map_err(|msg| rbac_forbidden(resource, name, &msg))
}

/// May the user create or update this RoleBinding (`resource` "rolebindings",
/// `namespace` its namespace) or ClusterRoleBinding ("clusterrolebindings", ""),
/// as upstream's RBAC registry: yes for `system:masters`, for GC-only updates,
/// with the `bind` verb on the referenced role (`roles`/`clusterroles` named by
/// the roleRef, in the binding's namespace), or when the user already holds every
/// rule of the referenced role there. A missing role is a 404 as upstream's.
pub fn check_binding_write(
    snapshot: &Snapshot,
    user: &User,
    resource: &str,
    namespace: &str,
    binding: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if is_privileged(user) {
        return Ok(());
    }
    if old.is_some_and(|old| only_gc_fields_change(binding, old)) {
        return Ok(());
    }
    let role_ref = RoleRef::from_json(binding);
    let role_resource = match role_ref.kind.as_str() {
        "ClusterRole" => Some("clusterroles"),
        "Role" => Some("roles"),
        _ => None,
    };
    if let Some(role_resource) = role_resource {
        let bind = Attributes::resource(user, "bind", &role_ref.api_group, role_resource)
            .with_namespace(namespace)
            .with_name(&role_ref.name);
        if snapshot.allows(&bind) {
            return Ok(());
        }
    }
    let rules = snapshot.role_rules(&role_ref, namespace).map_err(|msg| {
        let kind = if role_ref.kind == "Role" {
            "role"
        } else {
            "clusterrole"
        };
        ApiError {
            code: 404,
            reason: "NotFound",
            message: msg,
            details: forbidden_details(GROUP, kind, &role_ref.name),
        }
    })?;
    let name = str_at(binding, "/metadata/name");
    can_grant(snapshot, user, namespace, rules).map_err(|msg| rbac_forbidden(resource, name, &msg))
}

// ---------------------------------------------------------------------------
// Bootstrap policy (upstream 1.33, default feature gates)
// ---------------------------------------------------------------------------

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";
const CONTROLLER_PREFIX: &str = "system:controller:";

fn sorted(xs: &[&str]) -> Vec<String> {
    let mut v = owned(xs);
    v.sort();
    v
}

/// A resource rule, lists sorted as upstream's rule builder does.
fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: sorted(verbs),
        api_groups: sorted(groups),
        resources: sorted(resources),
        ..Default::default()
    }
}

fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
    PolicyRule {
        resource_names: sorted(names),
        ..rule(verbs, groups, resources)
    }
}

fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: sorted(verbs),
        non_resource_urls: sorted(urls),
        ..Default::default()
    }
}

fn events_rule() -> PolicyRule {
    rule(
        &["create", "update", "patch"],
        &["", "events.k8s.io"],
        &["events"],
    )
}

fn bootstrap_metadata(name: &str, extra_labels: &[(&str, &str)]) -> Value {
    let mut labels = Map::new();
    labels.insert(BOOTSTRAP_LABEL.into(), json!(BOOTSTRAP_LABEL_VALUE));
    for (k, v) in extra_labels {
        labels.insert(k.to_string(), json!(v));
    }
    json!({
        "name": name,
        "labels": labels,
        "annotations": {AUTOUPDATE_ANNOTATION: "true"},
    })
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": bootstrap_metadata(name, &[]),
        "rules": rules.iter().map(PolicyRule::to_json).collect::<Vec<_>>(),
    })
}

fn aggregated_role(name: &str, labels: &[(&str, &str)], selector_label: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": bootstrap_metadata(name, labels),
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {selector_label: "true"}}]},
        "rules": [],
    })
}

fn labeled_role(name: &str, label: &str, rules: Vec<PolicyRule>) -> Value {
    let mut role = cluster_role(name, rules);
    role["metadata"] = bootstrap_metadata(name, &[(label, "true")]);
    role
}

/// A subject of a bootstrap binding.
enum Who<'s> {
    User(&'s str),
    Group(&'s str),
    ServiceAccount(&'s str, &'s str),
}

fn cluster_role_binding(name: &str, role: &str, subjects: &[Who]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|s| match s {
            Who::User(n) => json!({"apiGroup": GROUP, "kind": "User", "name": n}),
            Who::Group(n) => json!({"apiGroup": GROUP, "kind": "Group", "name": n}),
            Who::ServiceAccount(ns, n) => {
                json!({"kind": "ServiceAccount", "name": n, "namespace": ns})
            }
        })
        .collect();
    let mut b = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": bootstrap_metadata(name, &[]),
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
    });
    if !subjects.is_empty() {
        b["subjects"] = Value::Array(subjects);
    }
    b
}

/// The rules of `system:node` (upstream's `NodeRules`; the Node authorizer
/// applies them to kubelets).
pub fn node_rules() -> Vec<PolicyRule> {
    vec![
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        rule(READ, &[""], &["services"]),
        rule(&["create", "get", "list", "watch"], &[""], &["nodes"]),
        rule(&["update", "patch"], &[""], &["nodes/status"]),
        rule(&["update", "patch"], &[""], &["nodes"]),
        rule(&["create", "update", "patch"], &[""], &["events"]),
        rule(READ, &[""], &["pods"]),
        rule(&["create", "delete"], &[""], &["pods"]),
        rule(&["update", "patch"], &[""], &["pods/status"]),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(&["get", "list", "watch"], &[""], &["secrets", "configmaps"]),
        rule(
            &["get"],
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        rule(&["get"], &[""], &["endpoints"]),
        rule(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        rule(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            &["get", "update", "patch"],
            &[""],
            &["persistentvolumeclaims/status"],
        ),
        rule(
            &["get", "watch", "list"],
            &["storage.k8s.io"],
            &["csidrivers"],
        ),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &["storage.k8s.io"],
            &["csinodes"],
        ),
        rule(
            &["get", "list", "watch"],
            &["node.k8s.io"],
            &["runtimeclasses"],
        ),
    ]
}

fn aggregate_to_edit_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
                "secrets",
                "services/proxy",
            ],
        ),
        rule(&["impersonate"], &[""], &["serviceaccounts"]),
        rule(
            WRITE,
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
            ],
        ),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(
            WRITE,
            &[""],
            &[
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/proxy",
                "persistentvolumeclaims",
                "configmaps",
                "secrets",
                "events",
            ],
        ),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            WRITE,
            &["apps"],
            &[
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "replicasets",
                "replicasets/scale",
            ],
        ),
        rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(WRITE, &["batch"], &["jobs", "cronjobs"]),
        rule(
            WRITE,
            &["extensions"],
            &[
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "ingresses",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
                "networkpolicies",
            ],
        ),
        rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
        rule(
            WRITE,
            &["networking.k8s.io"],
            &["networkpolicies", "ingresses"],
        ),
        rule(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
    ]
}

fn aggregate_to_view_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "configmaps",
            ],
        ),
        rule(
            READ,
            &[""],
            &[
                "limitranges",
                "resourcequotas",
                "bindings",
                "events",
                "pods/status",
                "resourcequotas/status",
                "namespaces/status",
                "replicationcontrollers/status",
                "pods/log",
            ],
        ),
        rule(READ, &[""], &["namespaces"]),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "statefulsets",
                "statefulsets/status",
                "statefulsets/scale",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/status",
                "deployments/scale",
                "replicasets",
                "replicasets/status",
                "replicasets/scale",
            ],
        ),
        rule(
            READ,
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
        ),
        rule(
            READ,
            &["batch"],
            &["jobs", "cronjobs", "cronjobs/status", "jobs/status"],
        ),
        rule(
            READ,
            &["extensions"],
            &[
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
                "networkpolicies",
            ],
        ),
        rule(
            READ,
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        rule(
            READ,
            &["networking.k8s.io"],
            &["networkpolicies", "ingresses", "ingresses/status"],
        ),
    ]
}

fn kube_scheduler_rules() -> Vec<PolicyRule> {
    vec![
        events_rule(),
        rule(&["create"], &["coordination.k8s.io"], &["leases"]),
        named(
            &["get", "update"],
            &["coordination.k8s.io"],
            &["leases"],
            &["kube-scheduler"],
        ),
        rule(READ, &[""], &["nodes"]),
        rule(&["get", "list", "watch", "delete"], &[""], &["pods"]),
        rule(&["create"], &[""], &["bindings", "pods/binding"]),
        rule(&["patch", "update"], &[""], &["pods/status"]),
        rule(READ, &[""], &["replicationcontrollers", "services"]),
        rule(READ, &["apps", "extensions"], &["replicasets"]),
        rule(READ, &["apps"], &["statefulsets"]),
        rule(READ, &["policy"], &["poddisruptionbudgets"]),
        rule(
            READ,
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
        ),
        rule(READ, &["storage.k8s.io"], &["csinodes"]),
        rule(READ, &[""], &["namespaces"]),
        rule(READ, &["storage.k8s.io"], &["csidrivers"]),
        rule(READ, &["storage.k8s.io"], &["csistoragecapacities"]),
    ]
}

fn kube_controller_manager_rules() -> Vec<PolicyRule> {
    vec![
        events_rule(),
        rule(&["create"], &["coordination.k8s.io"], &["leases"]),
        named(
            &["get", "update"],
            &["coordination.k8s.io"],
            &["leases"],
            &["kube-controller-manager"],
        ),
        rule(&["create"], &[""], &["secrets", "serviceaccounts"]),
        rule(&["delete"], &[""], &["secrets"]),
        rule(
            &["get"],
            &[""],
            &["namespaces", "secrets", "serviceaccounts", "configmaps"],
        ),
        rule(&["update"], &[""], &["secrets", "serviceaccounts"]),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
        ),
        rule(&["list", "watch"], &["*"], &["*"]),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
    ]
}

fn approver(signer: &str) -> Vec<PolicyRule> {
    vec![named(
        &["approve"],
        &["certificates.k8s.io"],
        &["signers"],
        &[signer],
    )]
}

/// The bootstrap ClusterRoles (upstream's `ClusterRoles()`).
pub fn bootstrap_cluster_roles() -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        cluster_role(
            "system:discovery",
            vec![urls(
                &["get"],
                &[
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/version",
                    "/version/",
                    "/openapi",
                    "/openapi/*",
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                ],
            )],
        ),
        cluster_role(
            "system:monitoring",
            vec![urls(
                &["get"],
                &[
                    "/metrics",
                    "/metrics/slis",
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/livez/*",
                    "/readyz/*",
                    "/healthz/*",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![urls(
                &["get"],
                &["/livez", "/readyz", "/healthz", "/version", "/version/"],
            )],
        ),
        aggregated_role("admin", &[], AGGREGATE_TO_ADMIN),
        aggregated_role("edit", &[(AGGREGATE_TO_ADMIN, "true")], AGGREGATE_TO_EDIT),
        aggregated_role("view", &[(AGGREGATE_TO_EDIT, "true")], AGGREGATE_TO_VIEW),
        labeled_role(
            "system:aggregate-to-admin",
            AGGREGATE_TO_ADMIN,
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                rule(READ_WRITE, &[GROUP], &["roles", "rolebindings"]),
            ],
        ),
        labeled_role(
            "system:aggregate-to-edit",
            AGGREGATE_TO_EDIT,
            aggregate_to_edit_rules(),
        ),
        labeled_role(
            "system:aggregate-to-view",
            AGGREGATE_TO_VIEW,
            aggregate_to_view_rules(),
        ),
        cluster_role(
            "system:heapster",
            vec![
                rule(READ, &[""], &["events", "pods", "nodes", "namespaces"]),
                rule(READ, &["extensions"], &["deployments"]),
            ],
        ),
        cluster_role("system:node", node_rules()),
        cluster_role(
            "system:node-problem-detector",
            vec![
                rule(&["get"], &[""], &["nodes"]),
                rule(&["patch"], &[""], &["nodes/status"]),
                events_rule(),
            ],
        ),
        cluster_role(
            "system:kubelet-api-admin",
            vec![
                rule(READ, &[""], &["nodes"]),
                rule(&["proxy"], &[""], &["nodes"]),
                rule(
                    &["*"],
                    &[""],
                    &["nodes/proxy", "nodes/metrics", "nodes/stats", "nodes/log"],
                ),
            ],
        ),
        cluster_role(
            "system:node-bootstrapper",
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            "system:auth-delegator",
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:kube-aggregator",
            vec![rule(READ, &[""], &["services", "endpoints"])],
        ),
        cluster_role(
            "system:kube-controller-manager",
            kube_controller_manager_rules(),
        ),
        cluster_role(
            "system:kube-dns",
            vec![rule(&["list", "watch"], &[""], &["endpoints", "services"])],
        ),
        cluster_role(
            "system:persistent-volume-provisioner",
            vec![
                rule(
                    &["get", "list", "watch", "create", "delete"],
                    &[""],
                    &["persistentvolumes"],
                ),
                rule(
                    &["get", "list", "watch", "update"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(&["watch"], &[""], &["events"]),
                events_rule(),
            ],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        cluster_role(
            "system:volume-scheduler",
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    &[""],
                    &["persistentvolumes"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
            ],
        ),
        cluster_role(
            "system:certificates.k8s.io:legacy-unknown-approver",
            approver("kubernetes.io/legacy-unknown"),
        ),
        cluster_role(
            "system:certificates.k8s.io:kubelet-serving-approver",
            approver("kubernetes.io/kubelet-serving"),
        ),
        cluster_role(
            "system:certificates.k8s.io:kube-apiserver-client-approver",
            approver("kubernetes.io/kube-apiserver-client"),
        ),
        cluster_role(
            "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
            approver("kubernetes.io/kube-apiserver-client-kubelet"),
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            vec![urls(
                &["get"],
                &["/.well-known/openid-configuration", "/openid/v1/jwks"],
            )],
        ),
        cluster_role(
            "system:node-proxier",
            vec![
                rule(&["list", "watch"], &[""], &["services", "endpoints"]),
                rule(READ, &[""], &["nodes"]),
                events_rule(),
                rule(
                    &["list", "watch"],
                    &["networking.k8s.io"],
                    &["servicecidrs"],
                ),
                rule(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        cluster_role("system:kube-scheduler", kube_scheduler_rules()),
    ]
}

/// The bootstrap ClusterRoleBindings (upstream's `ClusterRoleBindings()`).
pub fn bootstrap_cluster_role_bindings() -> Vec<Value> {
    vec![
        cluster_role_binding(
            "cluster-admin",
            "cluster-admin",
            &[Who::Group(SYSTEM_MASTERS)],
        ),
        cluster_role_binding(
            "system:monitoring",
            "system:monitoring",
            &[Who::Group("system:monitoring")],
        ),
        cluster_role_binding(
            "system:discovery",
            "system:discovery",
            &[Who::Group(ALL_AUTHENTICATED)],
        ),
        cluster_role_binding(
            "system:basic-user",
            "system:basic-user",
            &[Who::Group(ALL_AUTHENTICATED)],
        ),
        cluster_role_binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                Who::Group(ALL_AUTHENTICATED),
                Who::Group(ALL_UNAUTHENTICATED),
            ],
        ),
        cluster_role_binding(
            "system:node-proxier",
            "system:node-proxier",
            &[Who::User("system:kube-proxy")],
        ),
        cluster_role_binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[Who::User("system:kube-controller-manager")],
        ),
        cluster_role_binding(
            "system:kube-dns",
            "system:kube-dns",
            &[Who::ServiceAccount("kube-system", "kube-dns")],
        ),
        cluster_role_binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[Who::User("system:kube-scheduler")],
        ),
        cluster_role_binding(
            "system:volume-scheduler",
            "system:volume-scheduler",
            &[Who::User("system:kube-scheduler")],
        ),
        // no subjects: the Node authorizer grants nodes these rules
        cluster_role_binding("system:node", "system:node", &[]),
        cluster_role_binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &[Who::Group(ALL_SERVICE_ACCOUNTS)],
        ),
    ]
}

/// The controllers' own roles, `system:controller:NAME`, for
/// `--use-service-account-credentials` (upstream's controller_policy.go; the
/// ones behind feature gates off by default in 1.33 are left out).
fn controller_roles_rules() -> Vec<(&'static str, Vec<PolicyRule>)> {
    let ev = events_rule;
    vec![
        (
            "attachdetach-controller",
            vec![
                rule(
                    &["list", "watch"],
                    &[""],
                    &["persistentvolumes", "persistentvolumeclaims"],
                ),
                rule(READ, &[""], &["nodes"]),
                rule(&["patch", "update"], &[""], &["nodes/status"]),
                rule(&["list", "watch"], &[""], &["pods"]),
                ev(),
                rule(
                    &["get", "create", "delete", "list", "watch"],
                    &["storage.k8s.io"],
                    &["volumeattachments"],
                ),
                rule(READ, &["storage.k8s.io"], &["csidrivers"]),
                rule(READ, &["storage.k8s.io"], &["csinodes"]),
            ],
        ),
        (
            "clusterrole-aggregation-controller",
            vec![rule(
                &["escalate", "get", "list", "watch", "update", "patch"],
                &[GROUP],
                &["clusterroles"],
            )],
        ),
        (
            "cronjob-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update"],
                    &["batch"],
                    &["cronjobs"],
                ),
                rule(
                    &[
                        "get", "list", "watch", "create", "update", "delete", "patch",
                    ],
                    &["batch"],
                    &["jobs"],
                ),
                rule(&["update"], &["batch"], &["cronjobs/status"]),
                rule(&["update"], &["batch"], &["cronjobs/finalizers"]),
                rule(&["list", "delete", "watch"], &[""], &["pods"]),
                ev(),
            ],
        ),
        (
            "daemon-set-controller",
            vec![
                rule(READ, &["extensions", "apps"], &["daemonsets"]),
                rule(&["update"], &["extensions", "apps"], &["daemonsets/status"]),
                rule(
                    &["update"],
                    &["extensions", "apps"],
                    &["daemonsets/finalizers"],
                ),
                rule(&["list", "watch"], &[""], &["nodes"]),
                rule(
                    &["list", "watch", "create", "delete", "patch"],
                    &[""],
                    &["pods"],
                ),
                rule(&["create"], &[""], &["pods/binding"]),
                rule(
                    &[
                        "get", "list", "watch", "create", "delete", "update", "patch",
                    ],
                    &["apps"],
                    &["controllerrevisions"],
                ),
                ev(),
            ],
        ),
        (
            "deployment-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update"],
                    &["extensions", "apps"],
                    &["deployments"],
                ),
                rule(
                    &["update"],
                    &["extensions", "apps"],
                    &["deployments/status"],
                ),
                rule(
                    &["update"],
                    &["extensions", "apps"],
                    &["deployments/finalizers"],
                ),
                rule(
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete",
                    ],
                    &["extensions", "apps"],
                    &["replicasets"],
                ),
                rule(&["get", "list", "watch", "update"], &[""], &["pods"]),
                ev(),
            ],
        ),
        (
            "disruption-controller",
            vec![
                rule(READ, &["extensions", "apps"], &["deployments"]),
                rule(READ, &["extensions", "apps"], &["replicasets"]),
                rule(READ, &[""], &["replicationcontrollers"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(READ, &["apps"], &["statefulsets"]),
                rule(&["update"], &["policy"], &["poddisruptionbudgets/status"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(&["get"], &["*"], &["*/scale"]),
                ev(),
            ],
        ),
        (
            "endpoint-controller",
            vec![
                rule(READ, &[""], &["services", "pods"]),
                rule(
                    &["get", "list", "create", "update", "delete", "watch"],
                    &[""],
                    &["endpoints"],
                ),
                rule(&["create"], &[""], &["endpoints/restricted"]),
                ev(),
            ],
        ),
        (
            "endpointslice-controller",
            vec![
                rule(READ, &[""], &["services", "pods", "nodes"]),
                rule(&["update"], &[""], &["services/finalizers"]),
                rule(
                    &["get", "list", "create", "update", "delete", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                ev(),
            ],
        ),
        (
            "endpointslicemirroring-controller",
            vec![
                rule(READ, &[""], &["services", "endpoints"]),
                rule(&["update"], &[""], &["services/finalizers"]),
                rule(&["update"], &[""], &["endpoints/finalizers"]),
                rule(
                    &["get", "list", "create", "update", "delete", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                ev(),
            ],
        ),
        (
            "expand-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    &[""],
                    &["persistentvolumes"],
                ),
                rule(
                    &["update", "patch"],
                    &[""],
                    &["persistentvolumeclaims/status"],
                ),
                rule(READ, &[""], &["persistentvolumeclaims"]),
                ev(),
            ],
        ),
        (
            "ephemeral-volume-controller",
            vec![
                rule(READ, &[""], &["pods"]),
                rule(&["update"], &[""], &["pods/finalizers"]),
                rule(
                    &["get", "list", "watch", "create"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                ev(),
            ],
        ),
        (
            "generic-garbage-collector",
            vec![
                rule(
                    &["get", "list", "watch", "patch", "update", "delete"],
                    &["*"],
                    &["*"],
                ),
                ev(),
            ],
        ),
        (
            "horizontal-pod-autoscaler",
            vec![
                rule(READ, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(
                    &["update"],
                    &["autoscaling"],
                    &["horizontalpodautoscalers/status"],
                ),
                rule(&["get", "update"], &["*"], &["*/scale"]),
                rule(&["list", "watch"], &[""], &["pods"]),
                rule(&["list", "watch"], &["metrics.k8s.io"], &["pods"]),
                rule(READ, &["custom.metrics.k8s.io"], &["*"]),
                rule(READ, &["external.metrics.k8s.io"], &["*"]),
                ev(),
            ],
        ),
        (
            "job-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    &["batch"],
                    &["jobs"],
                ),
                rule(&["update"], &["batch"], &["jobs/status"]),
                rule(&["update"], &["batch"], &["jobs/finalizers"]),
                rule(
                    &["list", "watch", "create", "delete", "patch"],
                    &[""],
                    &["pods"],
                ),
                ev(),
            ],
        ),
        (
            "namespace-controller",
            vec![
                rule(&["get", "list", "watch", "delete"], &[""], &["namespaces"]),
                rule(
                    &["update"],
                    &[""],
                    &["namespaces/finalize", "namespaces/status"],
                ),
                rule(
                    &["get", "list", "delete", "deletecollection", "watch"],
                    &["*"],
                    &["*"],
                ),
            ],
        ),
        (
            "node-controller",
            vec![
                rule(
                    &["get", "list", "update", "delete", "patch", "watch"],
                    &[""],
                    &["nodes"],
                ),
                rule(&["patch", "update"], &[""], &["nodes/status"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(&["list", "delete", "get", "watch"], &[""], &["pods"]),
                ev(),
            ],
        ),
        (
            "persistent-volume-binder",
            vec![
                rule(
                    &["get", "list", "watch", "update", "create", "delete"],
                    &[""],
                    &["persistentvolumes"],
                ),
                rule(&["update"], &[""], &["persistentvolumes/status"]),
                rule(
                    &["get", "list", "watch", "update"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                rule(&["update"], &[""], &["persistentvolumeclaims/status"]),
                rule(
                    &["list", "watch", "get", "create", "delete"],
                    &[""],
                    &["pods"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(&["list", "watch"], &[""], &["nodes"]),
                ev(),
                rule(&["watch"], &[""], &["events"]),
            ],
        ),
        (
            "pod-garbage-collector",
            vec![
                rule(&["list", "watch", "delete"], &[""], &["pods"]),
                rule(READ, &[""], &["nodes"]),
                rule(&["patch"], &[""], &["pods/status"]),
            ],
        ),
        (
            "replicaset-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update"],
                    &["apps", "extensions"],
                    &["replicasets"],
                ),
                rule(
                    &["update"],
                    &["apps", "extensions"],
                    &["replicasets/status"],
                ),
                rule(
                    &["update"],
                    &["apps", "extensions"],
                    &["replicasets/finalizers"],
                ),
                rule(
                    &["list", "watch", "patch", "create", "delete"],
                    &[""],
                    &["pods"],
                ),
                ev(),
            ],
        ),
        (
            "replication-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update"],
                    &[""],
                    &["replicationcontrollers"],
                ),
                rule(&["update"], &[""], &["replicationcontrollers/status"]),
                rule(&["update"], &[""], &["replicationcontrollers/finalizers"]),
                rule(
                    &["list", "watch", "patch", "create", "delete"],
                    &[""],
                    &["pods"],
                ),
                ev(),
            ],
        ),
        (
            "resourcequota-controller",
            vec![
                rule(&["list", "watch"], &["*"], &["*"]),
                rule(&["update"], &[""], &["resourcequotas/status"]),
                ev(),
            ],
        ),
        (
            "route-controller",
            vec![
                rule(&["list", "watch"], &[""], &["nodes"]),
                rule(&["patch"], &[""], &["nodes/status"]),
                ev(),
            ],
        ),
        (
            "service-account-controller",
            vec![rule(&["create"], &[""], &["serviceaccounts"]), ev()],
        ),
        (
            "service-controller",
            vec![
                rule(READ, &[""], &["services"]),
                rule(&["patch", "update"], &[""], &["services/status"]),
                rule(&["list", "watch"], &[""], &["nodes"]),
                ev(),
            ],
        ),
        (
            "statefulset-controller",
            vec![
                rule(&["list", "watch"], &[""], &["pods"]),
                rule(READ, &["apps"], &["statefulsets"]),
                rule(&["update"], &["apps"], &["statefulsets/status"]),
                rule(&["update"], &["apps"], &["statefulsets/finalizers"]),
                rule(
                    &["get", "create", "delete", "update", "patch"],
                    &[""],
                    &["pods"],
                ),
                rule(
                    &[
                        "get", "create", "delete", "update", "patch", "list", "watch",
                    ],
                    &["apps"],
                    &["controllerrevisions"],
                ),
                rule(
                    &["get", "create", "list", "watch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                rule(&["update", "delete"], &[""], &["persistentvolumeclaims"]),
                rule(&["update"], &[""], &["pods/finalizers"]),
                ev(),
            ],
        ),
        (
            "ttl-controller",
            vec![
                rule(&["update", "patch", "list", "watch"], &[""], &["nodes"]),
                ev(),
            ],
        ),
        (
            "certificate-controller",
            vec![
                rule(
                    &["get", "list", "watch", "delete"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
                rule(
                    &["update"],
                    &["certificates.k8s.io"],
                    &[
                        "certificatesigningrequests/status",
                        "certificatesigningrequests/approval",
                    ],
                ),
                named(
                    &["approve"],
                    &["certificates.k8s.io"],
                    &["signers"],
                    &["kubernetes.io/kube-apiserver-client-kubelet"],
                ),
                named(
                    &["sign"],
                    &["certificates.k8s.io"],
                    &["signers"],
                    &[
                        "kubernetes.io/kube-apiserver-client",
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                        "kubernetes.io/legacy-unknown",
                    ],
                ),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                ev(),
            ],
        ),
        (
            "pvc-protection-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                rule(&["update"], &[""], &["persistentvolumeclaims/status"]),
                rule(READ, &[""], &["pods"]),
                ev(),
            ],
        ),
        (
            "pv-protection-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update"],
                    &[""],
                    &["persistentvolumes"],
                ),
                ev(),
            ],
        ),
        (
            "ttl-after-finished-controller",
            vec![
                rule(&["get", "list", "watch", "delete"], &["batch"], &["jobs"]),
                ev(),
            ],
        ),
        (
            "root-ca-cert-publisher",
            vec![rule(&["create", "update"], &[""], &["configmaps"]), ev()],
        ),
        (
            "validatingadmissionpolicy-status-controller",
            vec![
                rule(
                    READ,
                    &["admissionregistration.k8s.io"],
                    &["validatingadmissionpolicies"],
                ),
                rule(
                    &["get", "patch", "update"],
                    &["admissionregistration.k8s.io"],
                    &["validatingadmissionpolicies/status"],
                ),
                ev(),
            ],
        ),
        (
            "legacy-service-account-token-cleaner",
            vec![
                named(
                    &["get"],
                    &[""],
                    &["configmaps"],
                    &["kube-apiserver-legacy-service-account-token-tracking"],
                ),
                rule(&["patch", "delete"], &[""], &["secrets"]),
            ],
        ),
        (
            "service-cidrs-controller",
            vec![
                rule(
                    &["get", "list", "watch", "patch", "update"],
                    &["networking.k8s.io"],
                    &["servicecidrs"],
                ),
                rule(
                    &["patch", "update"],
                    &["networking.k8s.io"],
                    &["servicecidrs/finalizers"],
                ),
                rule(
                    &["patch", "update"],
                    &["networking.k8s.io"],
                    &["servicecidrs/status"],
                ),
                rule(READ, &["networking.k8s.io"], &["ipaddresses"]),
                ev(),
            ],
        ),
    ]
}

/// `system:controller:*` ClusterRoles. One deviation from upstream's: where
/// a role grants `update`, it also grants `patch`, because our controllers
/// write labels, annotations and status with merge patches where upstream's
/// Go controllers send updates (the same change, a smaller request).
pub fn bootstrap_controller_roles() -> Vec<Value> {
    controller_roles_rules()
        .into_iter()
        .map(|(name, rules)| {
            let rules = rules
                .into_iter()
                .map(|mut r| {
                    if r.verbs.iter().any(|v| v == "update")
                        && !r.verbs.iter().any(|v| v == "patch")
                    {
                        r.verbs.push("patch".into());
                        r.verbs.sort();
                    }
                    r
                })
                .collect();
            cluster_role(&format!("{CONTROLLER_PREFIX}{name}"), rules)
        })
        .collect()
}

/// `system:controller:*` ClusterRoleBindings, each to the service account
/// `kube-system/NAME` the controller-manager uses with
/// `--use-service-account-credentials`.
pub fn bootstrap_controller_role_bindings() -> Vec<Value> {
    controller_roles_rules()
        .into_iter()
        .map(|(name, _)| {
            let full = format!("{CONTROLLER_PREFIX}{name}");
            cluster_role_binding(&full, &full, &[Who::ServiceAccount("kube-system", name)])
        })
        .collect()
}

/// A bootstrap Role in `namespace`.
fn namespaced_role(namespace: &str, name: &str, rules: Vec<PolicyRule>) -> Value {
    let mut role = cluster_role(name, rules);
    role["kind"] = json!("Role");
    role["metadata"]["namespace"] = json!(namespace);
    role
}

/// A bootstrap RoleBinding in `namespace` of the Role `role` there.
fn namespaced_role_binding(namespace: &str, name: &str, role: &str, subjects: &[Who]) -> Value {
    let mut b = cluster_role_binding(name, role, subjects);
    b["kind"] = json!("RoleBinding");
    b["metadata"]["namespace"] = json!(namespace);
    b["roleRef"]["kind"] = json!("Role");
    b
}

/// Upstream's `NamespaceRoles()`: Roles in kube-system and kube-public
/// (the bootstrap signer and token cleaner among them).
pub fn bootstrap_namespace_roles() -> Vec<Value> {
    const SYS: &str = "kube-system";
    vec![
        namespaced_role(
            SYS,
            "extension-apiserver-authentication-reader",
            vec![named(
                READ,
                &[""],
                &["configmaps"],
                &["extension-apiserver-authentication"],
            )],
        ),
        namespaced_role(
            SYS,
            &format!("{CONTROLLER_PREFIX}bootstrap-signer"),
            vec![rule(READ, &[""], &["secrets"])],
        ),
        namespaced_role(
            SYS,
            &format!("{CONTROLLER_PREFIX}cloud-provider"),
            vec![rule(
                &["create", "get", "list", "watch"],
                &[""],
                &["configmaps"],
            )],
        ),
        namespaced_role(
            SYS,
            &format!("{CONTROLLER_PREFIX}token-cleaner"),
            vec![
                rule(&["get", "list", "watch", "delete"], &[""], &["secrets"]),
                events_rule(),
            ],
        ),
        namespaced_role(
            SYS,
            "system::leader-locking-kube-controller-manager",
            vec![
                rule(&["watch"], &[""], &["configmaps"]),
                named(
                    &["get", "update"],
                    &[""],
                    &["configmaps"],
                    &["kube-controller-manager"],
                ),
                rule(
                    &["get", "watch", "list", "create", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
            ],
        ),
        namespaced_role(
            SYS,
            "system::leader-locking-kube-scheduler",
            vec![
                rule(&["watch"], &[""], &["configmaps"]),
                named(
                    &["get", "update"],
                    &[""],
                    &["configmaps"],
                    &["kube-scheduler"],
                ),
            ],
        ),
        namespaced_role(
            "kube-public",
            &format!("{CONTROLLER_PREFIX}bootstrap-signer"),
            vec![
                rule(READ, &[""], &["configmaps"]),
                named(&["update"], &[""], &["configmaps"], &["cluster-info"]),
                events_rule(),
            ],
        ),
    ]
}

/// Upstream's `NamespaceRoleBindings()`.
pub fn bootstrap_namespace_role_bindings() -> Vec<Value> {
    const SYS: &str = "kube-system";
    let signer = format!("{CONTROLLER_PREFIX}bootstrap-signer");
    let cloud = format!("{CONTROLLER_PREFIX}cloud-provider");
    let cleaner = format!("{CONTROLLER_PREFIX}token-cleaner");
    vec![
        namespaced_role_binding(
            SYS,
            "system::extension-apiserver-authentication-reader",
            "extension-apiserver-authentication-reader",
            &[
                Who::User("system:kube-controller-manager"),
                Who::User("system:kube-scheduler"),
            ],
        ),
        namespaced_role_binding(
            SYS,
            "system::leader-locking-kube-controller-manager",
            "system::leader-locking-kube-controller-manager",
            &[
                Who::User("system:kube-controller-manager"),
                Who::ServiceAccount(SYS, "kube-controller-manager"),
            ],
        ),
        namespaced_role_binding(
            SYS,
            "system::leader-locking-kube-scheduler",
            "system::leader-locking-kube-scheduler",
            &[
                Who::User("system:kube-scheduler"),
                Who::ServiceAccount(SYS, "kube-scheduler"),
            ],
        ),
        namespaced_role_binding(
            SYS,
            &signer,
            &signer,
            &[Who::ServiceAccount(SYS, "bootstrap-signer")],
        ),
        namespaced_role_binding(
            SYS,
            &cloud,
            &cloud,
            &[Who::ServiceAccount(SYS, "cloud-provider")],
        ),
        namespaced_role_binding(
            SYS,
            &cleaner,
            &cleaner,
            &[Who::ServiceAccount(SYS, "token-cleaner")],
        ),
        namespaced_role_binding(
            "kube-public",
            &signer,
            &signer,
            &[Who::ServiceAccount(SYS, "bootstrap-signer")],
        ),
    ]
}

/// Everything the apiserver ensures at start (upstream's `storage_rbac`
/// post-start hook): cluster roles, their bindings, the controllers' roles and
/// bindings. Pass each with the stored object to [`reconcile`].
pub fn bootstrap_objects() -> Vec<Value> {
    let mut out = bootstrap_cluster_roles();
    out.extend(bootstrap_cluster_role_bindings());
    out.extend(bootstrap_controller_roles());
    out.extend(bootstrap_controller_role_bindings());
    out.extend(bootstrap_namespace_roles());
    out.extend(bootstrap_namespace_role_bindings());
    out
}

// ---------------------------------------------------------------------------
// Reconciliation
// ---------------------------------------------------------------------------

/// What reconciling one bootstrap object asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Reconcile {
    /// It does not exist: create it.
    Create(Value),
    /// Update the stored object (a copy of it, resourceVersion kept) to this.
    Update(Value),
    /// The binding's roleRef differs, and roleRef is immutable: delete the stored
    /// binding and create this one.
    Recreate(Value),
}

/// Upstream's reconciliation of a bootstrap role or binding (with
/// RemoveExtraPermissions/Subjects off): None when nothing is to be done, or
/// when the stored object's `rbac.authorization.kubernetes.io/autoupdate`
/// annotation is `"false"`. Otherwise missing labels and annotations are added
/// (stored values win), missing rules (broken down to single rules, as
/// upstream) or subjects appended, missing aggregation selectors added and an
/// unexpected aggregationRule removed; extra rules and subjects stay.
pub fn reconcile_op(existing: Option<&Value>, wanted: &Value) -> Option<Reconcile> {
    let Some(existing) = existing else {
        return Some(Reconcile::Create(wanted.clone()));
    };
    if existing
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(AUTOUPDATE_ANNOTATION))
        .and_then(Value::as_str)
        == Some("false")
    {
        return None;
    }
    let kind = str_at(wanted, "/kind");
    if kind.ends_with("Binding") || wanted.get("roleRef").is_some() {
        reconcile_binding(existing, wanted)
    } else {
        reconcile_role(existing, wanted)
    }
}

/// [`reconcile_op`]'s object to write, or None. With an existing object the
/// caller updates it, unless the roleRef of a binding changed (then it deletes
/// and creates it).
pub fn reconcile(existing: Option<&Value>, wanted: &Value) -> Option<Value> {
    reconcile_op(existing, wanted).map(|r| match r {
        Reconcile::Create(v) | Reconcile::Update(v) | Reconcile::Recreate(v) => v,
    })
}

/// Add the wanted labels or annotations the stored object lacks.
fn merge_meta(out: &mut Value, wanted: &Value, field: &str) -> bool {
    let Some(want) = wanted
        .pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_object)
    else {
        return false;
    };
    let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) else {
        return false;
    };
    let entry = meta
        .entry(field.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    let Some(have) = entry.as_object_mut() else {
        return false;
    };
    let mut changed = false;
    for (k, v) in want {
        if !have.contains_key(k) {
            have.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    changed
}

fn reconcile_role(existing: &Value, wanted: &Value) -> Option<Reconcile> {
    let mut out = existing.clone();
    if !out.is_object() {
        return Some(Reconcile::Update(wanted.clone()));
    }
    let mut changed = merge_meta(&mut out, wanted, "annotations");
    changed |= merge_meta(&mut out, wanted, "labels");

    let missing = uncovered(&rules_of(existing), &rules_of(wanted));
    if !missing.is_empty() {
        let mut rules = existing
            .get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        rules.extend(missing.iter().map(PolicyRule::to_json));
        out["rules"] = Value::Array(rules);
        changed = true;
    }

    let agg = |v: &Value| v.get("aggregationRule").filter(|a| a.is_object()).cloned();
    match (agg(wanted), agg(existing)) {
        (None, Some(_)) => {
            if let Some(m) = out.as_object_mut() {
                m.remove("aggregationRule");
            }
            changed = true;
        }
        (Some(want), have) => {
            let selectors = |v: &Option<Value>| -> Vec<Value> {
                v.as_ref()
                    .and_then(|a| a.get("clusterRoleSelectors"))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            let mut have_sels = selectors(&have);
            let missing: Vec<Value> = selectors(&Some(want))
                .into_iter()
                .filter(|s| !have_sels.contains(s))
                .collect();
            if !missing.is_empty() {
                have_sels.extend(missing);
                out["aggregationRule"] = json!({"clusterRoleSelectors": have_sels});
                changed = true;
            }
        }
        (None, None) => {}
    }
    changed.then_some(Reconcile::Update(out))
}

fn reconcile_binding(existing: &Value, wanted: &Value) -> Option<Reconcile> {
    if RoleRef::from_json(existing) != RoleRef::from_json(wanted) || !existing.is_object() {
        return Some(Reconcile::Recreate(wanted.clone()));
    }
    let mut out = existing.clone();
    let mut changed = merge_meta(&mut out, wanted, "annotations");
    changed |= merge_meta(&mut out, wanted, "labels");
    let subjects = |v: &Value| -> Vec<Value> {
        v.get("subjects")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut have = subjects(existing);
    let have_parsed: Vec<Subject> = have.iter().map(Subject::from_json).collect();
    let missing: Vec<Value> = subjects(wanted)
        .into_iter()
        .filter(|s| !have_parsed.contains(&Subject::from_json(s)))
        .collect();
    if !missing.is_empty() {
        have.extend(missing);
        out["subjects"] = Value::Array(have);
        changed = true;
    }
    changed.then_some(Reconcile::Update(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            uid: String::new(),
            groups: owned(groups),
        }
    }

    fn authed(name: &str) -> User {
        user(name, &[ALL_AUTHENTICATED])
    }

    fn role_json(ns: &str, name: &str, rules: Vec<PolicyRule>) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": ns},
            "rules": rules.iter().map(PolicyRule::to_json).collect::<Vec<_>>(),
        })
    }

    fn cluster_role_json(name: &str, rules: Vec<PolicyRule>) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules.iter().map(PolicyRule::to_json).collect::<Vec<_>>(),
        })
    }

    fn binding_json(ns: &str, name: &str, kind: &str, role: &str, subjects: Value) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": GROUP, "kind": kind, "name": role},
            "subjects": subjects,
        })
    }

    fn crb_json(name: &str, role: &str, subjects: Value) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
            "subjects": subjects,
        })
    }

    fn u(name: &str) -> Value {
        json!([{"apiGroup": GROUP, "kind": "User", "name": name}])
    }

    fn res<'a>(usr: &'a User, verb: &str, group: &str, resource: &str) -> Attributes<'a> {
        Attributes::resource(usr, verb, group, resource)
    }

    fn one(rule: PolicyRule, a: &Attributes) -> bool {
        rule.allows(a)
    }

    fn bootstrap() -> Snapshot {
        Snapshot::from_objects(&bootstrap_objects())
    }

    #[test]
    fn verb_group_resource_wildcards() {
        let bob = authed("bob");
        let a = res(&bob, "get", "apps", "deployments").with_namespace("ns");
        assert!(one(rule(&["*"], &["apps"], &["deployments"]), &a));
        assert!(one(rule(&["get"], &["*"], &["deployments"]), &a));
        assert!(one(rule(&["get"], &["apps"], &["*"]), &a));
        assert!(!one(rule(&["list"], &["apps"], &["deployments"]), &a));
        assert!(!one(rule(&["get"], &[""], &["deployments"]), &a));
        assert!(!one(rule(&["get"], &["apps"], &["replicasets"]), &a));
        // an empty rule allows nothing
        assert!(!one(PolicyRule::default(), &a));
        // resource rules never match non-resource requests and vice versa
        let n = Attributes::non_resource(&bob, "get", "/healthz");
        assert!(!one(rule(&["*"], &["*"], &["*"]), &n));
        assert!(!one(urls(&["*"], &["*"]), &a));
    }

    #[test]
    fn subresources() {
        let bob = authed("bob");
        let log = res(&bob, "get", "", "pods")
            .with_namespace("ns")
            .with_name("p")
            .with_subresource("log");
        assert!(!one(rule(&["get"], &[""], &["pods"]), &log));
        assert!(one(rule(&["get"], &[""], &["pods/log"]), &log));
        assert!(one(rule(&["get"], &[""], &["*/log"]), &log));
        assert!(one(rule(&["get"], &[""], &["*"]), &log));
        assert!(!one(rule(&["get"], &[""], &["*/status"]), &log));
        assert!(!one(rule(&["get"], &[""], &["pods/status"]), &log));
        let scale = res(&bob, "update", "apps", "deployments")
            .with_name("d")
            .with_subresource("scale");
        assert!(one(rule(&["update"], &["*"], &["*/scale"]), &scale));
        // `*/scale` is not a resource of its own
        let plain = res(&bob, "update", "apps", "deployments").with_name("d");
        assert!(!one(rule(&["update"], &["*"], &["*/scale"]), &plain));
        // `*/x` must be exactly `*/` + the subresource
        assert!(!one(rule(&["update"], &["*"], &["*/xscale"]), &scale));
    }

    #[test]
    fn resource_names() {
        let bob = authed("bob");
        let r = named(
            &["get", "list", "create", "update"],
            &[""],
            &["configmaps"],
            &["a"],
        );
        let get = |name: &str| {
            res(&bob, "get", "", "configmaps")
                .with_namespace("ns")
                .with_name(name)
        };
        assert!(one(r.clone(), &get("a")));
        assert!(!one(r.clone(), &get("b")));
        // list and create carry no name: a rule with resourceNames cannot match them
        let list = res(&bob, "list", "", "configmaps").with_namespace("ns");
        assert!(!one(r.clone(), &list));
        let create = res(&bob, "create", "", "configmaps").with_namespace("ns");
        assert!(!one(r.clone(), &create));
        // except a list narrowed to the name by a field selector
        let narrowed = Attributes::from_request(
            &bob,
            "GET",
            "/api/v1/namespaces/ns/configmaps",
            Some("fieldSelector=metadata.name%3Da"),
        )
        .expect("parses");
        assert_eq!(narrowed.verb, "list");
        assert_eq!(narrowed.name, "a");
        assert!(one(r, &narrowed));
    }

    #[test]
    fn non_resource_urls() {
        let bob = authed("bob");
        let get = |p: &str| Attributes::non_resource(&bob, "get", p);
        let star = urls(&["get"], &["/api/*"]);
        assert!(one(star.clone(), &get("/api/v1")));
        assert!(one(star.clone(), &get("/api/")));
        assert!(!one(star.clone(), &get("/api")));
        assert!(!one(star, &get("/apis/apps")));
        let prefix = urls(&["get"], &["/apis*"]);
        assert!(one(prefix.clone(), &get("/apis")));
        assert!(one(prefix.clone(), &get("/apisx/y")));
        assert!(!one(prefix, &get("/api")));
        assert!(one(urls(&["get"], &["*"]), &get("/anything")));
        assert!(one(urls(&["get"], &["/healthz"]), &get("/healthz")));
        assert!(!one(urls(&["get"], &["/healthz"]), &get("/healthz/etcd")));
        assert!(!one(urls(&["post"], &["/healthz"]), &get("/healthz")));
        assert!(one(urls(&["*"], &["/healthz"]), &get("/healthz")));
    }

    #[test]
    fn request_attributes_from_paths() {
        let bob = authed("bob");
        let parse = |m: &str, p: &str, q: Option<&str>| {
            Attributes::from_request(&bob, m, p, q).expect("parses")
        };
        let a = parse("GET", "/api/v1/namespaces/ns/pods/p", None);
        assert!(a.resource_request);
        assert_eq!(
            (
                a.verb.as_str(),
                a.api_group.as_str(),
                a.api_version.as_str()
            ),
            ("get", "", "v1")
        );
        assert_eq!(
            (a.namespace.as_str(), a.resource.as_str(), a.name.as_str()),
            ("ns", "pods", "p")
        );
        let a = parse("GET", "/api/v1/namespaces/ns/pods/p/log", None);
        assert_eq!(a.subresource, "log");
        let a = parse("GET", "/apis/apps/v1/deployments", None);
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str(), a.namespace.as_str()),
            ("list", "apps", "")
        );
        let a = parse(
            "GET",
            "/apis/apps/v1/namespaces/ns/deployments",
            Some("watch=true"),
        );
        assert_eq!(a.verb, "watch");
        let a = parse(
            "GET",
            "/apis/apps/v1/namespaces/ns/deployments",
            Some("watch=false"),
        );
        assert_eq!(a.verb, "list");
        let a = parse("GET", "/api/v1/watch/namespaces/ns/pods", None);
        assert_eq!(
            (a.verb.as_str(), a.namespace.as_str(), a.resource.as_str()),
            ("watch", "ns", "pods")
        );
        let a = parse("DELETE", "/api/v1/namespaces/ns/pods", None);
        assert_eq!(a.verb, "deletecollection");
        let a = parse("DELETE", "/api/v1/namespaces/ns/pods/p", None);
        assert_eq!(a.verb, "delete");
        let a = parse("POST", "/api/v1/namespaces/ns/pods/p/binding", None);
        assert_eq!(
            (a.verb.as_str(), a.subresource.as_str()),
            ("create", "binding")
        );
        let a = parse("PUT", "/api/v1/namespaces/ns/finalize", None);
        assert_eq!(
            (
                a.verb.as_str(),
                a.resource.as_str(),
                a.name.as_str(),
                a.subresource.as_str()
            ),
            ("update", "namespaces", "ns", "finalize")
        );
        let a = parse("PATCH", "/api/v1/namespaces/ns/status", None);
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.subresource.as_str()),
            ("namespaces", "ns", "status")
        );
        let a = parse("GET", "/api/v1/namespaces/ns", None);
        assert_eq!(
            (
                a.verb.as_str(),
                a.resource.as_str(),
                a.name.as_str(),
                a.namespace.as_str()
            ),
            ("get", "namespaces", "ns", "ns")
        );
        let a = parse("GET", "/api/v1/namespaces", None);
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.namespace.as_str()),
            ("list", "namespaces", "")
        );
        let a = parse("GET", "/api/v1/proxy/namespaces/ns/pods/p/some/path", None);
        assert_eq!(
            (a.verb.as_str(), a.name.as_str(), a.subresource.as_str()),
            ("proxy", "p", "")
        );
        for p in [
            "/api",
            "/api/v1",
            "/apis/apps/v1",
            "/healthz",
            "/version",
            "/",
        ] {
            let a = parse("GET", p, None);
            assert!(!a.resource_request, "{p}");
            assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", p));
        }
        let a = parse("POST", "/apis/apps", None);
        assert_eq!(a.verb, "post");
        assert!(Attributes::from_request(&bob, "GET", "/api/v1/watch", None).is_err());
        // an invalid selector names nothing
        let a = parse(
            "GET",
            "/api/v1/pods",
            Some("fieldSelector=metadata.name%3Da%2Cbad"),
        );
        assert_eq!(a.name, "");
        let a = parse(
            "GET",
            "/api/v1/pods",
            Some("fieldSelector=metadata.name%21%3Da"),
        );
        assert_eq!(a.name, "");
        let a = parse(
            "GET",
            "/api/v1/pods",
            Some("fieldSelector=spec.nodeName%3Dn%2Cmetadata.name%3D%3Dp"),
        );
        assert_eq!(a.name, "p");
    }

    #[test]
    fn namespaced_and_cluster_bindings() {
        let snap = Snapshot::new(
            &[role_json("a", "reader", vec![rule(READ, &[""], &["pods"])])],
            &[
                cluster_role_json("cm-editor", vec![rule(&["*"], &[""], &["configmaps"])]),
                cluster_role_json("node-reader", vec![rule(READ, &[""], &["nodes"])]),
            ],
            &[
                binding_json("a", "r", "Role", "reader", u("bob")),
                binding_json("a", "c", "ClusterRole", "cm-editor", u("bob")),
                // a RoleBinding to a Role of another namespace finds nothing
                binding_json("b", "r", "Role", "reader", u("bob")),
            ],
            &[crb_json("nodes", "node-reader", u("carol"))],
        );
        let bob = authed("bob");
        let carol = authed("carol");
        let pods = |usr, ns| snap.allows(&res(usr, "list", "", "pods").with_namespace(ns));
        assert!(pods(&bob, "a"));
        assert!(!pods(&bob, "b"));
        assert!(!pods(&bob, ""));
        assert!(!pods(&carol, "a"));
        // RoleBinding to a ClusterRole: only in the binding's namespace
        let cm = |ns| {
            res(&bob, "delete", "", "configmaps")
                .with_namespace(ns)
                .with_name("x")
        };
        assert!(snap.allows(&cm("a")));
        assert!(!snap.allows(&cm("b")));
        assert!(!snap.allows(&res(&bob, "list", "", "configmaps")));
        // ClusterRoleBinding: everywhere, cluster-scoped resources too
        assert!(snap.allows(&res(&carol, "get", "", "nodes").with_name("n")));
        assert!(snap.allows(&res(&carol, "list", "", "nodes").with_namespace("anything")));
        assert!(!snap.allows(&res(&bob, "get", "", "nodes").with_name("n")));
        // the reason names the binding
        let (d, why) = snap.authorize(
            &res(&bob, "get", "", "pods")
                .with_namespace("a")
                .with_name("p"),
        );
        assert_eq!(d, Decision::Allow);
        assert_eq!(
            why,
            r#"RBAC: allowed by RoleBinding "r/a" of Role "reader" to User "bob""#
        );
        let (_, why) = snap.authorize(&res(&carol, "get", "", "nodes"));
        assert_eq!(
            why,
            r#"RBAC: allowed by ClusterRoleBinding "nodes" of ClusterRole "node-reader" to User "carol""#
        );
        // b's binding refers to a Role b does not have
        let (d, why) = snap.authorize(&res(&bob, "get", "", "pods").with_namespace("b"));
        assert_eq!(d, Decision::NoOpinion);
        assert_eq!(
            why,
            r#"RBAC: role.rbac.authorization.k8s.io "reader" not found"#
        );
        let (d, why) = snap.authorize(&res(&bob, "get", "", "secrets").with_namespace("a"));
        assert_eq!((d, why.as_str()), (Decision::NoOpinion, ""));
    }

    #[test]
    fn missing_roles_give_reasons() {
        let snap = Snapshot::new(
            &[],
            &[],
            &[],
            &[
                crb_json("x", "nope", u("bob")),
                crb_json(
                    "y",
                    "gone",
                    json!([{"kind": "Group", "name": ALL_AUTHENTICATED}]),
                ),
                crb_json("z", "nope", u("bob")),
                json!({"kind": "ClusterRoleBinding", "metadata": {"name": "w"},
                       "roleRef": {"kind": "Thing", "name": "t"}, "subjects": u("bob")}),
            ],
        );
        let (d, why) = snap.authorize(&res(&authed("bob"), "get", "", "pods"));
        assert_eq!(d, Decision::NoOpinion);
        assert_eq!(
            why,
            r#"RBAC: [unsupported role reference kind: "Thing", clusterrole.rbac.authorization.k8s.io "nope" not found, clusterrole.rbac.authorization.k8s.io "gone" not found]"#
        );
    }

    #[test]
    fn service_account_subjects() {
        let snap = Snapshot::new(
            &[role_json("ns", "r", vec![rule(READ, &[""], &["pods"])])],
            &[
                cluster_role_json("sec", vec![rule(READ, &[""], &["secrets"])]),
                cluster_role_json("cm", vec![rule(READ, &[""], &["configmaps"])]),
                cluster_role_json("svc", vec![rule(READ, &[""], &["services"])]),
                cluster_role_json("ep", vec![rule(READ, &[""], &["endpoints"])]),
            ],
            &[
                // no namespace: the binding's own
                binding_json(
                    "ns",
                    "local",
                    "Role",
                    "r",
                    json!([{"kind": "ServiceAccount", "name": "builder"}]),
                ),
                binding_json(
                    "ns",
                    "sas",
                    "ClusterRole",
                    "cm",
                    json!([{"kind": "Group", "name": "system:serviceaccounts:ns"}]),
                ),
            ],
            &[
                crb_json(
                    "other",
                    "sec",
                    json!([{"kind": "ServiceAccount", "name": "robot", "namespace": "ops"}]),
                ),
                // no namespace in a ClusterRoleBinding: matches nobody
                crb_json(
                    "nons",
                    "svc",
                    json!([{"kind": "ServiceAccount", "name": "builder"}]),
                ),
                crb_json(
                    "all",
                    "ep",
                    json!([{"kind": "Group", "name": ALL_SERVICE_ACCOUNTS}]),
                ),
            ],
        );
        let builder = service_account_user("ns", "builder");
        assert_eq!(builder.name, "system:serviceaccount:ns:builder");
        let robot = service_account_user("ops", "robot");
        let get = |usr, resource, ns| {
            snap.allows(
                &res(usr, "get", "", resource)
                    .with_namespace(ns)
                    .with_name("x"),
            )
        };
        assert!(get(&builder, "pods", "ns"));
        assert!(!get(&robot, "pods", "ns"));
        assert!(get(&robot, "secrets", "anywhere"));
        assert!(!get(&builder, "secrets", "ns"));
        assert!(!get(&builder, "services", "ns"));
        assert!(get(&builder, "configmaps", "ns"));
        assert!(!get(&robot, "configmaps", "ns"));
        assert!(get(&builder, "endpoints", "x"));
        assert!(get(&robot, "endpoints", "x"));
        let bob = authed("bob");
        assert!(!get(&bob, "endpoints", "x"));
        // the name alone is not enough for groups: they come from authentication
        let bare = user("system:serviceaccount:ns:builder", &[]);
        assert!(get(&bare, "pods", "ns"));
        assert!(!get(&bare, "configmaps", "ns"));
        let (_, why) = snap.authorize(&res(&robot, "get", "", "secrets").with_namespace("q"));
        assert_eq!(
            why,
            r#"RBAC: allowed by ClusterRoleBinding "other" of ClusterRole "sec" to ServiceAccount "robot/ops""#
        );
        let (_, why) = snap.authorize(&res(&builder, "get", "", "pods").with_namespace("ns"));
        assert_eq!(
            why,
            r#"RBAC: allowed by RoleBinding "local/ns" of Role "r" to ServiceAccount "builder/ns""#
        );
    }

    #[test]
    fn malformed_objects_do_not_panic() {
        let objs = vec![
            json!(null),
            json!("role"),
            json!({"kind": "ClusterRole"}),
            json!({"kind": "ClusterRole", "metadata": {"name": "x"}, "rules": "nope"}),
            json!({"kind": "ClusterRole", "metadata": {"name": "y"}, "rules": [null, 3, {"verbs": "get"}, {"verbs": ["get"], "resources": [1, "pods"], "apiGroups": [""]}]}),
            json!({"kind": "ClusterRole", "metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": [{"matchExpressions": [{"key": "a", "operator": "Bogus"}]}]}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]}),
            json!({"kind": "ClusterRole", "metadata": {"name": "agg2"}, "aggregationRule": "x"}),
            json!({"kind": "Role", "metadata": {"name": "nons"}}),
            json!({"kind": "RoleBinding", "metadata": {"namespace": "ns"}}),
            json!({"kind": "RoleBinding", "metadata": {"name": "b", "namespace": "ns"}, "subjects": [null, {"kind": "User", "name": "bob"}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "c"}, "roleRef": {"kind": "ClusterRole", "name": "y"}, "subjects": {"kind": "User"}}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "d"}, "roleRef": {"kind": "ClusterRole", "name": "y"}, "subjects": u("bob")}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "e"}, "roleRef": {"kind": "ClusterRole", "name": "agg"}, "subjects": u("bob")}),
        ];
        let snap = Snapshot::from_objects(&objs);
        let bob = authed("bob");
        assert!(snap.allows(&res(&bob, "get", "", "pods").with_namespace("ns")));
        // a role whose selectors do not parse keeps its stored rules
        assert!(snap.allows(&res(&bob, "get", "", "secrets").with_namespace("ns")));
        assert!(!snap.allows(&res(&bob, "list", "", "pods")));
        let (_, why) = snap.authorize(&res(&bob, "list", "", "pods").with_namespace("ns"));
        assert_eq!(why, r#"RBAC: unsupported role reference kind: """#);
        let _ = snap.rules_review_status(&bob, "ns");
        let _ = aggregation_updates(&objs);
        let _ = reconcile(Some(&json!(null)), &bootstrap_cluster_roles()[0]);
        let _ = reconcile(Some(&json!("x")), &bootstrap_cluster_role_bindings()[0]);
        assert!(can_grant(&snap, &bob, "ns", &rules_of(&objs[4])).is_ok());
    }

    #[test]
    fn forbidden_messages() {
        let bob = authed("bob");
        let a = res(&bob, "get", "", "pods")
            .with_namespace("default")
            .with_name("p");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"pods "p" is forbidden: User "bob" cannot get resource "pods" in API group "" in the namespace "default""#
        );
        let a = res(&bob, "list", "apps", "deployments").with_namespace("ns");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"deployments.apps is forbidden: User "bob" cannot list resource "deployments" in API group "apps" in the namespace "ns""#
        );
        let a = res(&bob, "list", "", "nodes");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" at the cluster scope"#
        );
        let a = res(&bob, "create", "", "pods")
            .with_namespace("ns")
            .with_name("p")
            .with_subresource("exec");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"pods "p" is forbidden: User "bob" cannot create resource "pods/exec" in API group "" in the namespace "ns""#
        );
        let anon = anonymous();
        let a = Attributes::non_resource(&anon, "get", "/api");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"forbidden: User "system:anonymous" cannot get path "/api""#
        );
        let a = res(&bob, "get", "", "pods").with_namespace("default");
        assert_eq!(
            forbidden_message(
                &a,
                r#"RBAC: clusterrole.rbac.authorization.k8s.io "x" not found"#
            ),
            r#"pods is forbidden: User "bob" cannot get resource "pods" in API group "" in the namespace "default": RBAC: clusterrole.rbac.authorization.k8s.io "x" not found"#
        );
        let a = Attributes::non_resource(&anon, "get", "/<script>");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"forbidden: User "system:anonymous" cannot get path "/&lt;script&gt;""#
        );
        let e = forbidden_error(&res(&bob, "get", "apps", "deployments").with_name("d"), "");
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(
            e.details,
            Some(json!({"name": "d", "group": "apps", "kind": "deployments"}))
        );
        let e = forbidden_error(&Attributes::non_resource(&anon, "get", "/x"), "");
        assert_eq!(e.details, None);
    }

    #[test]
    fn aggregation() {
        let labeled = |name: &str, labels: Value, rules: Vec<PolicyRule>| {
            let mut v = cluster_role_json(name, rules);
            v["metadata"]["labels"] = labels;
            v
        };
        let roles = vec![
            json!({"kind": "ClusterRole", "metadata": {"name": "top"},
                   "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"to-top": "true"}}]}}),
            json!({"kind": "ClusterRole", "metadata": {"name": "mid", "labels": {"to-top": "true"}},
                   "aggregationRule": {"clusterRoleSelectors": [
                       {"matchLabels": {"to-mid": "true"}},
                       {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["x"]}]}]},
                   "rules": [{"verbs": ["stale"], "apiGroups": [""], "resources": ["old"]}]}),
            labeled(
                "b-source",
                json!({"to-mid": "true"}),
                vec![
                    rule(READ, &[""], &["pods"]),
                    rule(READ, &[""], &["services"]),
                ],
            ),
            labeled(
                "a-source",
                json!({"to-mid": "true"}),
                vec![rule(READ, &[""], &["services"])],
            ),
            labeled(
                "c-expr",
                json!({"tier": "x"}),
                vec![rule(&["create"], &["apps"], &["deployments"])],
            ),
            labeled(
                "direct",
                json!({"to-top": "true"}),
                vec![rule(READ, &[""], &["secrets"])],
            ),
            labeled(
                "unrelated",
                json!({"tier": "y"}),
                vec![rule(&["*"], &["*"], &["*"])],
            ),
        ];
        let agg = aggregate(&roles);
        assert_eq!(agg.len(), 2);
        // selector by selector, sources in name order, duplicates dropped
        assert_eq!(
            agg["mid"],
            vec![
                rule(READ, &[""], &["services"]),
                rule(READ, &[""], &["pods"]),
                rule(&["create"], &["apps"], &["deployments"]),
            ]
        );
        // mid's aggregated rules flow on into top (sources: direct, mid)
        assert_eq!(
            agg["top"],
            vec![
                rule(READ, &[""], &["secrets"]),
                rule(READ, &[""], &["services"]),
                rule(READ, &[""], &["pods"]),
                rule(&["create"], &["apps"], &["deployments"]),
            ]
        );
        let updates = aggregation_updates(&roles);
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[0]["metadata"]["name"], "top");
        assert_eq!(rules_of(&updates[1]), agg["mid"]);
        let written: Vec<Value> = roles
            .iter()
            .map(|r| {
                updates
                    .iter()
                    .find(|u| u["metadata"]["name"] == r["metadata"]["name"])
                    .unwrap_or(r)
                    .clone()
            })
            .collect();
        assert!(aggregation_updates(&written).is_empty());
        // the snapshot sees aggregated rules without a write-back
        let snap = Snapshot::new(&[], &roles, &[], &[crb_json("t", "top", u("bob"))]);
        let bob = authed("bob");
        assert!(snap.allows(&res(&bob, "create", "apps", "deployments").with_namespace("n")));
        assert!(!snap.allows(&res(&bob, "stale", "", "old")));
        assert!(!snap.allows(&res(&bob, "delete", "", "nodes")));
        // an aggregated role never aggregates itself
        let selfish = vec![
            json!({"kind": "ClusterRole", "metadata": {"name": "s", "labels": {"a": "b"}},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
        ];
        assert_eq!(aggregate(&selfish)["s"], Vec::<PolicyRule>::new());
    }

    #[test]
    fn bootstrap_aggregated_roles() {
        let agg = aggregate(&bootstrap_cluster_roles());
        let view = &agg["view"];
        let edit = &agg["edit"];
        let admin = &agg["admin"];
        assert_eq!(*view, aggregate_to_view_rules());
        assert!(uncovered(edit, view).is_empty());
        assert!(uncovered(edit, &aggregate_to_edit_rules()).is_empty());
        assert!(uncovered(admin, edit).is_empty());
        assert!(!uncovered(view, edit).is_empty());
        assert_eq!(
            admin.len(),
            view.len() + aggregate_to_edit_rules().len() + 2
        );
    }

    #[test]
    fn bootstrap_view_edit_admin() {
        let snap = bootstrap();
        let alice = authed("alice");
        let bind = |role: &str| {
            let mut objs = bootstrap_objects();
            objs.push(binding_json("team", "x", "ClusterRole", role, u("alice")));
            Snapshot::from_objects(&objs)
        };
        assert!(!snap.allows(&res(&alice, "get", "", "pods").with_namespace("team")));
        let view = bind("view");
        let can = |s: &Snapshot, verb, group, resource| {
            s.allows(
                &res(&alice, verb, group, resource)
                    .with_namespace("team")
                    .with_name("x"),
            )
        };
        assert!(can(&view, "get", "", "pods"));
        assert!(can(&view, "list", "apps", "deployments"));
        assert!(can(&view, "get", "discovery.k8s.io", "endpointslices"));
        assert!(!can(&view, "get", "", "secrets"));
        assert!(!can(&view, "create", "", "pods"));
        assert!(!can(&view, "get", GROUP, "roles"));
        assert!(!view.allows(&res(&alice, "get", "", "pods").with_namespace("other")));
        let edit = bind("edit");
        assert!(can(&edit, "create", "apps", "deployments"));
        assert!(edit.allows(
            &res(&alice, "update", "apps", "deployments")
                .with_namespace("team")
                .with_name("d")
                .with_subresource("scale")
        ));
        assert!(can(&edit, "get", "", "secrets"));
        assert!(can(&edit, "delete", "", "pods"));
        assert!(can(&edit, "create", "coordination.k8s.io", "leases"));
        assert!(edit.allows(
            &res(&alice, "create", "", "pods")
                .with_namespace("team")
                .with_name("p")
                .with_subresource("exec")
        ));
        assert!(!can(&edit, "create", GROUP, "roles"));
        assert!(!can(&edit, "create", GROUP, "rolebindings"));
        assert!(!can(&edit, "update", "", "resourcequotas"));
        let admin = bind("admin");
        assert!(can(&admin, "create", GROUP, "roles"));
        assert!(can(&admin, "create", GROUP, "rolebindings"));
        assert!(can(&admin, "create", "apps", "deployments"));
        assert!(can(
            &admin,
            "create",
            "authorization.k8s.io",
            "localsubjectaccessreviews"
        ));
        assert!(!admin.allows(&res(&alice, "create", GROUP, "roles").with_namespace("other")));
        assert!(!admin.allows(&res(&alice, "create", GROUP, "clusterroles")));
        assert!(!admin.allows(&res(&alice, "delete", "", "namespaces").with_name("team")));
    }

    #[test]
    fn bootstrap_system_components() {
        let snap = bootstrap();
        let sched = user("system:kube-scheduler", &[ALL_AUTHENTICATED]);
        let binding = res(&sched, "create", "", "pods")
            .with_namespace("ns")
            .with_name("p")
            .with_subresource("binding");
        assert!(snap.allows(&binding));
        assert!(snap.allows(
            &res(&sched, "update", "coordination.k8s.io", "leases")
                .with_namespace("kube-system")
                .with_name("kube-scheduler")
        ));
        assert!(snap.allows(
            &res(&sched, "create", "coordination.k8s.io", "leases").with_namespace("kube-system")
        ));
        assert!(!snap.allows(
            &res(&sched, "update", "coordination.k8s.io", "leases")
                .with_namespace("kube-system")
                .with_name("other")
        ));
        assert!(snap.allows(&res(&sched, "watch", "", "pods")));
        assert!(snap.allows(
            &res(&sched, "patch", "", "pods")
                .with_namespace("ns")
                .with_name("p")
                .with_subresource("status")
        ));
        assert!(snap.allows(&res(&sched, "update", "", "persistentvolumes").with_name("pv"))); // volume-scheduler
        assert!(!snap.allows(&res(&sched, "get", "", "secrets").with_namespace("ns")));
        assert!(!snap.allows(
            &res(&sched, "update", "", "pods")
                .with_namespace("ns")
                .with_name("p")
        ));

        let proxy = user("system:kube-proxy", &[ALL_AUTHENTICATED]);
        assert!(snap.allows(&res(&proxy, "list", "", "services")));
        assert!(snap.allows(&res(&proxy, "watch", "discovery.k8s.io", "endpointslices")));
        assert!(snap.allows(&res(&proxy, "get", "", "nodes").with_name("n")));
        assert!(snap
            .allows(&res(&proxy, "create", "events.k8s.io", "events").with_namespace("default")));
        assert!(!snap.allows(&res(&proxy, "list", "", "secrets")));
        assert!(!snap.allows(
            &res(&proxy, "get", "", "secrets")
                .with_namespace("kube-system")
                .with_name("s")
        ));
        assert!(!snap.allows(
            &res(&proxy, "update", "", "services")
                .with_namespace("default")
                .with_name("s")
        ));

        let kcm = user("system:kube-controller-manager", &[ALL_AUTHENTICATED]);
        assert!(snap.allows(&res(&kcm, "list", "apps", "deployments")));
        assert!(snap.allows(
            &res(&kcm, "create", "", "serviceaccounts")
                .with_namespace("kube-system")
                .with_name("sa")
                .with_subresource("token")
        ));
        assert!(!snap.allows(&res(&kcm, "create", "apps", "replicasets").with_namespace("ns")));

        // the controllers' own service accounts
        let dc = service_account_user("kube-system", "deployment-controller");
        assert!(snap.allows(&res(&dc, "create", "apps", "replicasets").with_namespace("ns")));
        assert!(snap.allows(
            &res(&dc, "update", "apps", "deployments")
                .with_namespace("ns")
                .with_name("d")
                .with_subresource("status")
        ));
        assert!(!snap.allows(&res(&dc, "create", "", "pods").with_namespace("ns")));
        let rs = service_account_user("kube-system", "replicaset-controller");
        assert!(snap.allows(&res(&rs, "create", "", "pods").with_namespace("ns")));
        let gc = service_account_user("kube-system", "generic-garbage-collector");
        assert!(snap.allows(
            &res(&gc, "delete", "anything.io", "widgets")
                .with_namespace("ns")
                .with_name("w")
        ));
        let nsc = service_account_user("kube-system", "namespace-controller");
        assert!(
            snap.allows(&res(&nsc, "deletecollection", "apps", "deployments").with_namespace("ns"))
        );
        assert!(snap.allows(
            &res(&nsc, "update", "", "namespaces")
                .with_name("ns")
                .with_subresource("finalize")
        ));
        let eps = service_account_user("kube-system", "endpointslice-controller");
        assert!(snap.allows(
            &res(&eps, "create", "discovery.k8s.io", "endpointslices").with_namespace("ns")
        ));
        let nc = service_account_user("kube-system", "node-controller");
        assert!(snap.allows(&res(&nc, "delete", "", "nodes").with_name("n")));
        let jc = service_account_user("kube-system", "job-controller");
        assert!(snap.allows(
            &res(&jc, "update", "batch", "jobs")
                .with_namespace("ns")
                .with_name("j")
                .with_subresource("finalizers")
        ));
        let ds = service_account_user("kube-system", "daemon-set-controller");
        assert!(
            snap.allows(&res(&ds, "create", "apps", "controllerrevisions").with_namespace("ns"))
        );
        let ss = service_account_user("kube-system", "statefulset-controller");
        assert!(snap.allows(&res(&ss, "create", "", "persistentvolumeclaims").with_namespace("ns")));
        let cj = service_account_user("kube-system", "cronjob-controller");
        assert!(snap.allows(&res(&cj, "create", "batch", "jobs").with_namespace("ns")));
        let sa = service_account_user("kube-system", "service-account-controller");
        assert!(snap.allows(&res(&sa, "create", "", "serviceaccounts").with_namespace("ns")));
        assert!(!snap.allows(
            &res(&sa, "create", "", "serviceaccounts")
                .with_namespace("ns")
                .with_name("x")
                .with_subresource("token")
        ));
        // the same name in another namespace is nobody
        let fake = service_account_user("default", "generic-garbage-collector");
        assert!(!snap.allows(
            &res(&fake, "delete", "", "pods")
                .with_namespace("ns")
                .with_name("p")
        ));

        // system:node has no subjects: nodes get nothing from RBAC
        let node = user("system:node:n1", &["system:nodes", ALL_AUTHENTICATED]);
        assert!(!snap.allows(&res(&node, "get", "", "pods").with_namespace("ns")));
    }

    #[test]
    fn bootstrap_masters_anonymous_and_everyone() {
        let snap = bootstrap();
        let admin = user("kubernetes-admin", &[SYSTEM_MASTERS, ALL_AUTHENTICATED]);
        for a in [
            res(&admin, "delete", "", "nodes").with_name("n"),
            res(&admin, "escalate", GROUP, "clusterroles").with_name("x"),
            res(&admin, "impersonate", "", "users").with_name("u"),
            res(&admin, "create", "made.up", "things")
                .with_namespace("ns")
                .with_name("t")
                .with_subresource("sub"),
            Attributes::non_resource(&admin, "post", "/anything/at/all"),
        ] {
            let (d, why) = snap.authorize(&a);
            assert_eq!(d, Decision::Allow, "{a:?}");
            assert_eq!(
                why,
                r#"RBAC: allowed by ClusterRoleBinding "cluster-admin" of ClusterRole "cluster-admin" to Group "system:masters""#
            );
        }
        let anon = anonymous();
        for p in ["/healthz", "/version", "/version/", "/livez", "/readyz"] {
            assert!(
                snap.allows(&Attributes::non_resource(&anon, "get", p)),
                "{p}"
            );
        }
        assert!(!snap.allows(&Attributes::non_resource(&anon, "get", "/api")));
        assert!(!snap.allows(&Attributes::non_resource(&anon, "get", "/api/v1/pods")));
        assert!(!snap.allows(&Attributes::non_resource(&anon, "get", "/healthz/etcd")));
        assert!(!snap.allows(&Attributes::non_resource(&anon, "post", "/healthz")));
        let pods = Attributes::from_request(&anon, "GET", "/api/v1/pods", None).expect("parses");
        assert!(!snap.allows(&pods));
        assert_eq!(
            forbidden_message(&pods, ""),
            r#"pods is forbidden: User "system:anonymous" cannot list resource "pods" in API group "" at the cluster scope"#
        );
        let bob = authed("bob");
        assert!(snap.allows(&Attributes::non_resource(&bob, "get", "/api")));
        assert!(snap.allows(&Attributes::non_resource(&bob, "get", "/apis/apps/v1")));
        assert!(snap.allows(&Attributes::non_resource(&bob, "get", "/openapi/v3")));
        assert!(snap.allows(&res(
            &bob,
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews"
        )));
        assert!(snap.allows(&res(
            &bob,
            "create",
            "authentication.k8s.io",
            "selfsubjectreviews"
        )));
        assert!(!snap.allows(&res(
            &anon,
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews"
        )));
        assert!(!snap.allows(&Attributes::non_resource(&bob, "get", "/metrics")));
        let mon = user("prom", &["system:monitoring"]);
        assert!(snap.allows(&Attributes::non_resource(&mon, "get", "/metrics")));
        assert!(snap.allows(&Attributes::non_resource(&mon, "get", "/readyz/etcd")));
        let sa = service_account_user("x", "y");
        assert!(snap.allows(&Attributes::non_resource(&sa, "get", "/openid/v1/jwks")));
        assert!(!snap.allows(&res(&bob, "list", "", "pods").with_namespace("default")));
    }

    #[test]
    fn bootstrap_objects_are_well_formed() {
        let objs = bootstrap_objects();
        let mut names = BTreeSet::new();
        for o in &objs {
            let kind = str_at(o, "/kind");
            let name = str_at(o, "/metadata/name");
            let ns = match str_at(o, "/metadata/namespace") {
                "" => String::new(),
                ns => format!("{ns}/"),
            };
            assert!(
                names.insert(format!("{kind}/{ns}{name}")),
                "duplicate {kind}/{ns}{name}"
            );
            assert_eq!(o["apiVersion"], "rbac.authorization.k8s.io/v1");
            assert_eq!(
                o["metadata"]["labels"][BOOTSTRAP_LABEL],
                BOOTSTRAP_LABEL_VALUE
            );
            assert_eq!(o["metadata"]["annotations"][AUTOUPDATE_ANNOTATION], "true");
            if kind.ends_with("Binding") {
                let role = str_at(o, "/roleRef/name");
                let role_kind = str_at(o, "/roleRef/kind");
                assert!(
                    names.contains(&format!("{role_kind}/{ns}{role}")),
                    "{name} -> {role}"
                );
            } else {
                for r in o["rules"].as_array().into_iter().flatten() {
                    let rule = PolicyRule::from_json(r);
                    assert!(!rule.verbs.is_empty(), "{name}");
                    let mut s = rule.verbs.clone();
                    s.sort();
                    assert_eq!(s, rule.verbs, "{name}: verbs sorted as upstream");
                }
            }
        }
        for name in [
            "cluster-admin",
            "admin",
            "edit",
            "view",
            "system:basic-user",
            "system:discovery",
            "system:public-info-viewer",
            "system:node-proxier",
            "system:kube-scheduler",
            "system:kube-controller-manager",
            "system:node",
            "system:volume-scheduler",
            "system:monitoring",
            "system:controller:deployment-controller",
            "system:controller:replicaset-controller",
            "system:controller:endpointslice-controller",
            "system:controller:namespace-controller",
            "system:controller:generic-garbage-collector",
            "system:controller:node-controller",
            "system:controller:job-controller",
            "system:controller:daemon-set-controller",
            "system:controller:statefulset-controller",
            "system:controller:cronjob-controller",
            "system:controller:service-account-controller",
        ] {
            assert!(names.contains(&format!("ClusterRole/{name}")), "{name}");
        }
        let admin = objs
            .iter()
            .find(|o| o["metadata"]["name"] == "edit")
            .cloned()
            .unwrap_or_default();
        assert_eq!(admin["metadata"]["labels"][AGGREGATE_TO_ADMIN], "true");
        assert_eq!(
            admin["aggregationRule"],
            json!({"clusterRoleSelectors": [{"matchLabels": {AGGREGATE_TO_EDIT: "true"}}]})
        );
        let crb = objs
            .iter()
            .find(|o| {
                o["kind"] == "ClusterRoleBinding"
                    && o["metadata"]["name"] == "system:public-info-viewer"
            })
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            crb["subjects"],
            json!([
                {"apiGroup": GROUP, "kind": "Group", "name": "system:authenticated"},
                {"apiGroup": GROUP, "kind": "Group", "name": "system:unauthenticated"},
            ])
        );
        let cad = objs
            .iter()
            .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == "cluster-admin")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            cad["rules"],
            json!([
                {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                {"verbs": ["*"], "nonResourceURLs": ["*"]},
            ])
        );
    }

    #[test]
    fn escalation_checks() {
        let mut objs = bootstrap_objects();
        objs.push(role_json(
            "ns",
            "pod-reader",
            vec![rule(READ, &[""], &["pods"])],
        ));
        objs.push(binding_json(
            "ns",
            "bob-reads",
            "Role",
            "pod-reader",
            u("bob"),
        ));
        objs.push(cluster_role_json(
            "escalator",
            vec![rule(&["escalate"], &[GROUP], &["roles"])],
        ));
        objs.push(binding_json(
            "ns2",
            "carol-escalates",
            "ClusterRole",
            "escalator",
            u("carol"),
        ));
        objs.push(cluster_role_json(
            "binder",
            vec![named(&["bind"], &[GROUP], &["clusterroles"], &["edit"])],
        ));
        objs.push(binding_json(
            "ns2",
            "carol-binds",
            "ClusterRole",
            "binder",
            u("carol"),
        ));
        let snap = Snapshot::from_objects(&objs);
        let bob = authed("bob");
        let carol = authed("carol");

        // held: allowed, in the namespace where it is held
        assert!(can_grant(
            &snap,
            &bob,
            "ns",
            &[rule(&["get", "list"], &[""], &["pods"])]
        )
        .is_ok());
        assert!(can_grant(
            &snap,
            &bob,
            "ns",
            &[named(&["get"], &[""], &["pods"], &["p"])]
        )
        .is_ok());
        // not held: upstream's message, missing rules compacted and sorted
        let err = can_grant(
            &snap,
            &bob,
            "ns",
            &[
                rule(&["get", "create", "delete"], &[""], &["pods", "secrets"]),
                urls(&["get"], &["/metrics"]),
            ],
        )
        .expect_err("escalates");
        assert_eq!(
            err,
            "user \"bob\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n\
             {APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"create\" \"delete\"]}\n\
             {APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"create\" \"delete\" \"get\"]}\n\
             {NonResourceURLs:[\"/metrics\"], Verbs:[\"get\"]}"
        );
        // held in ns, not elsewhere
        assert!(can_grant(&snap, &bob, "other", &[rule(&["get"], &[""], &["pods"])]).is_err());
        // wildcards need wildcards
        assert!(can_grant(&snap, &bob, "ns", &[rule(&["get"], &["*"], &["pods"])]).is_err());
        assert!(can_grant(&snap, &bob, "ns", &[rule(&["get"], &[""], &["*"])]).is_err());

        // Role writes
        let role = role_json("ns", "r", vec![rule(&["get"], &[""], &["pods"])]);
        assert!(check_role_write(&snap, &bob, "roles", "ns", &role, None).is_ok());
        let big = role_json("ns", "big", vec![rule(&["get"], &[""], &["secrets"])]);
        let e = check_role_write(&snap, &bob, "roles", "ns", &big, None).expect_err("refused");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "roles.rbac.authorization.k8s.io \"big\" is forbidden: user \"bob\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}"
        );
        assert_eq!(
            e.details,
            Some(json!({"name": "big", "group": GROUP, "kind": "roles"}))
        );
        // escalate on roles in ns2 lets carol write anything there, not elsewhere
        let big2 = role_json("ns2", "big", vec![rule(&["*"], &["*"], &["*"])]);
        assert!(check_role_write(&snap, &carol, "roles", "ns2", &big2, None).is_ok());
        assert!(check_role_write(&snap, &carol, "roles", "ns", &big, None).is_err());
        assert!(check_role_write(
            &snap,
            &carol,
            "clusterroles",
            "",
            &cluster_role_json("c", vec![rule(&["get"], &[""], &["pods"])]),
            None
        )
        .is_err());
        // system:masters may always
        let admin = user("root", &[SYSTEM_MASTERS]);
        assert!(check_role_write(
            &Snapshot::default(),
            &admin,
            "clusterroles",
            "",
            &cluster_role_json("c", vec![rule(&["*"], &["*"], &["*"])]),
            None
        )
        .is_ok());
        // GC-only updates pass
        let mut owned_big = big.clone();
        owned_big["metadata"]["finalizers"] = json!(["x"]);
        assert!(check_role_write(&snap, &bob, "roles", "ns", &owned_big, Some(&big)).is_ok());
        let mut grown = big.clone();
        grown["rules"] = json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]);
        assert!(check_role_write(&snap, &bob, "roles", "ns", &grown, Some(&big)).is_err());

        // binding writes
        let to_reader = binding_json("ns", "b", "Role", "pod-reader", u("dave"));
        assert!(check_binding_write(&snap, &bob, "rolebindings", "ns", &to_reader, None).is_ok());
        let to_edit = binding_json("ns", "b", "ClusterRole", "edit", u("dave"));
        let e = check_binding_write(&snap, &bob, "rolebindings", "ns", &to_edit, None)
            .expect_err("refused");
        assert_eq!(e.code, 403);
        assert!(e.message.starts_with(
            "rolebindings.rbac.authorization.k8s.io \"b\" is forbidden: user \"bob\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n"
        ), "{}", e.message);
        // bind on clusterroles/edit in ns2 lets carol bind edit there only
        let edit_ns2 = binding_json("ns2", "b", "ClusterRole", "edit", u("dave"));
        assert!(check_binding_write(&snap, &carol, "rolebindings", "ns2", &edit_ns2, None).is_ok());
        let admin_ns2 = binding_json("ns2", "b", "ClusterRole", "admin", u("dave"));
        assert!(
            check_binding_write(&snap, &carol, "rolebindings", "ns2", &admin_ns2, None).is_err()
        );
        assert!(check_binding_write(&snap, &carol, "rolebindings", "ns", &to_edit, None).is_err());
        let missing = binding_json("ns", "b", "ClusterRole", "nope", u("dave"));
        let e = check_binding_write(&snap, &bob, "rolebindings", "ns", &missing, None)
            .expect_err("missing");
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                404,
                r#"clusterrole.rbac.authorization.k8s.io "nope" not found"#
            )
        );
        // a namespace admin may hand out edit and view in their namespace
        let mut objs2 = objs.clone();
        objs2.push(binding_json(
            "team",
            "eve-admin",
            "ClusterRole",
            "admin",
            u("eve"),
        ));
        let snap2 = Snapshot::from_objects(&objs2);
        let eve = authed("eve");
        for role in ["view", "edit", "admin"] {
            let b = binding_json("team", "b", "ClusterRole", role, u("dave"));
            assert!(
                check_binding_write(&snap2, &eve, "rolebindings", "team", &b, None).is_ok(),
                "{role}"
            );
        }
        let crb = crb_json("b", "view", u("dave"));
        assert!(check_binding_write(&snap2, &eve, "clusterrolebindings", "", &crb, None).is_err());
    }

    #[test]
    fn rules_for_self_subject_rules_review() {
        let snap = Snapshot::new(
            &[role_json(
                "ns",
                "r",
                vec![named(&["get"], &[""], &["configmaps"], &["c"])],
            )],
            &[cluster_role_json(
                "mixed",
                vec![
                    PolicyRule {
                        verbs: owned(&["get"]),
                        api_groups: owned(&[""]),
                        resources: owned(&["pods"]),
                        non_resource_urls: owned(&["/x"]),
                        ..Default::default()
                    },
                    urls(&["get"], &["/healthz"]),
                ],
            )],
            &[
                binding_json("ns", "rb", "Role", "r", u("bob")),
                binding_json("ns", "gone", "Role", "missing", u("bob")),
            ],
            &[crb_json("c", "mixed", u("bob"))],
        );
        let bob = authed("bob");
        let (resource, non_resource) = snap.rules_for(&bob, "ns");
        assert_eq!(
            resource,
            vec![
                ResourceRule {
                    verbs: owned(&["get"]),
                    api_groups: owned(&[""]),
                    resources: owned(&["pods"]),
                    resource_names: vec![]
                },
                ResourceRule {
                    verbs: owned(&["get"]),
                    api_groups: owned(&[""]),
                    resources: owned(&["configmaps"]),
                    resource_names: owned(&["c"])
                },
            ]
        );
        assert_eq!(
            non_resource,
            vec![
                NonResourceRule {
                    verbs: owned(&["get"]),
                    non_resource_urls: owned(&["/x"])
                },
                NonResourceRule {
                    verbs: owned(&["get"]),
                    non_resource_urls: owned(&["/healthz"])
                },
            ]
        );
        let (resource, _) = snap.rules_for(&bob, "other");
        assert_eq!(resource.len(), 1);
        let status = snap.rules_review_status(&bob, "ns");
        assert_eq!(status["incomplete"], false);
        assert_eq!(
            status["evaluationError"],
            r#"role.rbac.authorization.k8s.io "missing" not found"#
        );
        assert_eq!(
            status["resourceRules"][1],
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["c"]})
        );
        assert_eq!(
            status["nonResourceRules"][1],
            json!({"verbs": ["get"], "nonResourceURLs": ["/healthz"]})
        );
        assert!(snap
            .rules_review_status(&bob, "other")
            .get("evaluationError")
            .is_none());
    }

    #[test]
    fn reconcile_roles() {
        let wanted = bootstrap_cluster_roles()
            .into_iter()
            .find(|o| o["metadata"]["name"] == "system:node-proxier")
            .unwrap_or_default();
        assert_eq!(
            reconcile_op(None, &wanted),
            Some(Reconcile::Create(wanted.clone()))
        );
        let mut stored = wanted.clone();
        stored["metadata"]["resourceVersion"] = json!("7");
        assert_eq!(reconcile(Some(&stored), &wanted), None);
        // an extra rule stays; a missing one is added broken down, as upstream
        let mut edited = stored.clone();
        let rules = edited["rules"].as_array_mut().expect("rules");
        rules.retain(|r| r["resources"] != json!(["servicecidrs"]));
        rules.push(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}));
        edited["metadata"]["labels"] = json!({"mine": "yes"});
        let Some(Reconcile::Update(out)) = reconcile_op(Some(&edited), &wanted) else {
            panic!("expected an update");
        };
        assert_eq!(out["metadata"]["resourceVersion"], "7");
        assert_eq!(
            out["metadata"]["labels"],
            json!({"mine": "yes", BOOTSTRAP_LABEL: BOOTSTRAP_LABEL_VALUE})
        );
        let out_rules = rules_of(&out);
        assert!(out_rules.contains(&rule(&["get"], &[""], &["secrets"])));
        assert!(out_rules.contains(&rule(&["list"], &["networking.k8s.io"], &["servicecidrs"])));
        assert!(out_rules.contains(&rule(&["watch"], &["networking.k8s.io"], &["servicecidrs"])));
        assert!(uncovered(&out_rules, &rules_of(&wanted)).is_empty());
        assert_eq!(reconcile(Some(&out), &wanted), None);
        // autoupdate false: left alone
        let mut protected = edited.clone();
        protected["metadata"]["annotations"] = json!({AUTOUPDATE_ANNOTATION: "false"});
        assert_eq!(reconcile(Some(&protected), &wanted), None);
        // no annotation at all: reconciled, and the annotation is added
        let mut bare = edited.clone();
        if let Some(m) = bare["metadata"].as_object_mut() {
            m.remove("annotations");
        }
        let out = reconcile(Some(&bare), &wanted).expect("updated");
        assert_eq!(
            out["metadata"]["annotations"][AUTOUPDATE_ANNOTATION],
            "true"
        );
    }

    #[test]
    fn reconcile_aggregated_roles() {
        let roles = bootstrap_cluster_roles();
        let admin = roles
            .iter()
            .find(|o| o["metadata"]["name"] == "admin")
            .cloned()
            .unwrap_or_default();
        // the aggregation controller's rules are not stomped
        let mut stored = admin.clone();
        stored["rules"] = json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]);
        assert_eq!(reconcile(Some(&stored), &admin), None);
        // a missing selector is added, extra ones kept
        let mut odd = stored.clone();
        odd["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]});
        let out = reconcile(Some(&odd), &admin).expect("updated");
        assert_eq!(
            out["aggregationRule"]["clusterRoleSelectors"],
            json!([{"matchLabels": {"x": "y"}}, {"matchLabels": {AGGREGATE_TO_ADMIN: "true"}}])
        );
        // a stored role that became aggregated where not wanted loses it
        let viewer = roles
            .iter()
            .find(|o| o["metadata"]["name"] == "system:aggregate-to-view")
            .cloned()
            .unwrap_or_default();
        let mut agg = viewer.clone();
        agg["aggregationRule"] = json!({"clusterRoleSelectors": []});
        let out = reconcile(Some(&agg), &viewer).expect("updated");
        assert!(out.get("aggregationRule").is_none());
    }

    #[test]
    fn reconcile_bindings() {
        let wanted = bootstrap_cluster_role_bindings()
            .into_iter()
            .find(|o| o["metadata"]["name"] == "system:public-info-viewer")
            .unwrap_or_default();
        assert_eq!(reconcile(Some(&wanted), &wanted), None);
        let mut fewer = wanted.clone();
        fewer["subjects"] = json!([
            {"apiGroup": GROUP, "kind": "Group", "name": "system:unauthenticated"},
            {"apiGroup": GROUP, "kind": "User", "name": "extra"},
        ]);
        let Some(Reconcile::Update(out)) = reconcile_op(Some(&fewer), &wanted) else {
            panic!("expected an update");
        };
        assert_eq!(
            out["subjects"],
            json!([
                {"apiGroup": GROUP, "kind": "Group", "name": "system:unauthenticated"},
                {"apiGroup": GROUP, "kind": "User", "name": "extra"},
                {"apiGroup": GROUP, "kind": "Group", "name": "system:authenticated"},
            ])
        );
        let mut moved = wanted.clone();
        moved["roleRef"]["name"] = json!("other");
        assert_eq!(
            reconcile_op(Some(&moved), &wanted),
            Some(Reconcile::Recreate(wanted.clone()))
        );
        moved["metadata"]["annotations"][AUTOUPDATE_ANNOTATION] = json!("false");
        assert_eq!(reconcile_op(Some(&moved), &wanted), None);
        // system:node has no subjects and gains none
        let node = bootstrap_cluster_role_bindings()
            .into_iter()
            .find(|o| o["metadata"]["name"] == "system:node")
            .unwrap_or_default();
        assert!(node.get("subjects").is_none());
        let mut with = node.clone();
        with["subjects"] = json!([{"apiGroup": GROUP, "kind": "Group", "name": "system:nodes"}]);
        assert_eq!(reconcile(Some(&with), &node), None);
    }

    #[test]
    fn covers_edge_cases() {
        let owner = vec![
            rule(&["get"], &[""], &["*/status"]),
            named(&["update"], &[""], &["configmaps"], &["a", "b"]),
            urls(&["get"], &["/logs/*"]),
        ];
        assert!(uncovered(
            &owner,
            &[rule(&["get"], &[""], &["pods/status", "nodes/status"])]
        )
        .is_empty());
        assert!(!uncovered(&owner, &[rule(&["get"], &[""], &["pods"])]).is_empty());
        assert!(uncovered(
            &owner,
            &[named(&["update"], &[""], &["configmaps"], &["a"])]
        )
        .is_empty());
        // names granted do not cover all names
        assert!(!uncovered(&owner, &[rule(&["update"], &[""], &["configmaps"])]).is_empty());
        assert!(uncovered(&owner, &[urls(&["get"], &["/logs/x", "/logs/"])]).is_empty());
        assert!(!uncovered(&owner, &[urls(&["get"], &["/logs"])]).is_empty());
        assert_eq!(
            breakdown_rule(&named(&["a", "b"], &["g"], &["r1", "r2"], &["n1", "n2"])).len(),
            8
        );
        assert_eq!(
            named(&["get"], &[""], &["signers"], &["x\"y"]).compact_string(),
            r#"{APIGroups:[""], Resources:["signers"], ResourceNames:["x\"y"], Verbs:["get"]}"#
        );
    }
}
