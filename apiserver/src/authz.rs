//! Authorization (`--authorization-mode`): the authorizers in the order
//! given, as upstream's union authorizer: the first that allows or denies
//! decides; nobody allowing is a 403 with upstream's message. `system:masters`
//! is always allowed (upstream's privileged-group authorizer). Also the
//! access-review APIs (SelfSubjectAccessReview, SubjectAccessReview,
//! LocalSubjectAccessReview, SelfSubjectRulesReview) `kubectl auth can-i`
//! asks.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::authn::User;
use crate::error::ApiError;
use crate::rbac::{self, Attributes, Decision};
use crate::Api;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    AlwaysAllow,
    AlwaysDeny,
    Node,
    Rbac,
}

pub struct Authorizer {
    modes: Vec<Mode>,
    rbac: rbac::SnapshotCache,
    graphs: crate::nodeauthz::GraphCache,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("modes", &self.modes)
            .finish()
    }
}

impl Authorizer {
    pub fn new(modes: Vec<Mode>) -> Authorizer {
        Authorizer {
            modes,
            rbac: rbac::SnapshotCache::new(),
            graphs: crate::nodeauthz::GraphCache::new(),
        }
    }

    /// Whether the Node authorizer (and so NodeRestriction admission) is on.
    pub fn node_on(&self) -> bool {
        self.modes.contains(&Mode::Node)
    }

    /// Whether RBAC decides (and so guards writes of roles and bindings).
    pub fn rbac_on(&self) -> bool {
        self.modes.contains(&Mode::Rbac)
    }

    pub fn snapshot(&self, api: &Api) -> Arc<rbac::Snapshot> {
        self.rbac.get(&api.cache, &api.prefix)
    }

    /// (allowed, reason).
    pub fn authorize(&self, api: &Api, a: &Attributes) -> (bool, String) {
        self.authorize_selected(api, a, None)
    }

    /// As [`Authorizer::authorize`], with the request's raw fieldSelector
    /// (the Node authorizer lets a node list only its own pods).
    pub fn authorize_selected(
        &self,
        api: &Api,
        a: &Attributes,
        field_selector: Option<&str>,
    ) -> (bool, String) {
        if rbac::is_privileged(a.user) {
            return (true, String::new());
        }
        let mut reasons = Vec::new();
        for m in &self.modes {
            match m {
                Mode::AlwaysAllow => return (true, String::new()),
                Mode::AlwaysDeny => return (false, "Everything is forbidden.".into()),
                Mode::Node => {
                    let g = self.graphs.get(&api.cache, &api.prefix);
                    let (d, why) =
                        crate::nodeauthz::authorize_with_field_selector(&g, a, field_selector);
                    match d {
                        Decision::Allow => return (true, why),
                        Decision::NoOpinion if !why.is_empty() => reasons.push(why),
                        Decision::NoOpinion => {}
                    }
                }
                Mode::Rbac => {
                    let (d, why) = self.snapshot(api).authorize(a);
                    if d == Decision::Allow {
                        return (true, why);
                    }
                    if !why.is_empty() {
                        reasons.push(why);
                    }
                }
            }
        }
        (false, reasons.join("; "))
    }

    /// Authorize a request; a 403 in upstream's words when nobody allows it.
    pub fn check(
        &self,
        api: &Api,
        a: &Attributes,
        field_selector: Option<&str>,
    ) -> Result<(), ApiError> {
        let (ok, why) = self.authorize_selected(api, a, field_selector);
        if ok {
            Ok(())
        } else {
            Err(rbac::forbidden_error(a, &why))
        }
    }
}

/// The attributes of a SubjectAccessReview's spec for `user`.
fn review_attributes<'a>(user: &'a User, spec: &Value, namespace: Option<&str>) -> Attributes<'a> {
    let s = |p: &str| spec.pointer(p).and_then(Value::as_str).unwrap_or_default();
    if let Some(nr) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        let path = nr.get("path").and_then(Value::as_str).unwrap_or_default();
        let verb = nr.get("verb").and_then(Value::as_str).unwrap_or_default();
        return Attributes::non_resource(user, verb, path);
    }
    let a = Attributes::resource(
        user,
        s("/resourceAttributes/verb"),
        s("/resourceAttributes/group"),
        s("/resourceAttributes/resource"),
    )
    .with_namespace(namespace.unwrap_or(s("/resourceAttributes/namespace")))
    .with_name(s("/resourceAttributes/name"))
    .with_subresource(s("/resourceAttributes/subresource"));
    a.with_version(s("/resourceAttributes/version"))
}

/// `POST /apis/authorization.k8s.io/v1/{kind}` (and the namespaced
/// localsubjectaccessreviews): the review with its status filled in.
pub fn review(
    api: &Api,
    caller: &User,
    plural: &str,
    namespace: Option<&str>,
    body: &Value,
) -> Result<Value, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let kind = match plural {
        "selfsubjectaccessreviews" => "SelfSubjectAccessReview",
        "subjectaccessreviews" => "SubjectAccessReview",
        "localsubjectaccessreviews" => "LocalSubjectAccessReview",
        "selfsubjectrulesreviews" => "SelfSubjectRulesReview",
        _ => return Err(ApiError::not_found_path()),
    };
    let mut out = body.clone();
    out["kind"] = json!(kind);
    out["apiVersion"] = json!("authorization.k8s.io/v1");
    if !out["metadata"].is_object() {
        out["metadata"] = json!({});
    }
    out["metadata"]["creationTimestamp"] = json!(null);
    if plural == "selfsubjectrulesreviews" {
        let ns = spec
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let status = if rbac::is_privileged(caller) {
            json!({"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                   "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": false})
        } else {
            api.authz.snapshot(api).rules_review_status(caller, ns)
        };
        out["status"] = status;
        return Ok(out);
    }
    // whom the review is about
    let subject;
    let user = if plural == "selfsubjectaccessreviews" {
        caller
    } else {
        let name = spec.get("user").and_then(Value::as_str).unwrap_or_default();
        let groups: Vec<String> = spec
            .get("groups")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if name.is_empty() && groups.is_empty() {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!("{kind}.authorization.k8s.io \"\" is invalid: spec.user: Invalid value: \"\": at least one of user or group must be specified"),
            ));
        }
        subject = User {
            name: name.to_string(),
            uid: spec
                .get("uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            groups,
        };
        &subject
    };
    let a = review_attributes(user, &spec, namespace);
    let (allowed, reason) = api.authz.authorize(api, &a);
    out["status"] = json!({"allowed": allowed, "reason": reason});
    Ok(out)
}

/// NodeRestriction admission for a write by a node (with the Node mode on).
#[allow(clippy::too_many_arguments)]
pub fn admit_node(
    api: &Api,
    user: &User,
    operation: crate::nodeauthz::Operation,
    res: &crate::registry::Resource,
    subresource: &str,
    namespace: &str,
    name: &str,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if !api.authz.node_on() {
        return Ok(());
    }
    let req = crate::nodeauthz::AdmissionRequest {
        user,
        operation,
        group: res.group,
        resource: res.plural,
        subresource,
        namespace,
        name,
        object,
        old_object: old,
    };
    crate::nodeauthz::admit(
        &req,
        &crate::nodeauthz::CacheLookup {
            cache: &api.cache,
            etcd_prefix: &api.prefix,
        },
    )
}

/// Impersonation, as upstream: `Impersonate-User`, `Impersonate-Group`,
/// `Impersonate-Uid` and `Impersonate-Extra-*` headers make the request act as
/// another user, when the caller may `impersonate` that user (or service
/// account), each group, the uid and each extra value. The impersonated user
/// is `system:authenticated` (service accounts also in their groups).
pub fn impersonate(api: &Api, caller: User, headers: &hyper::HeaderMap) -> Result<User, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let users = values("impersonate-user");
    let groups = values("impersonate-group");
    let uids = values("impersonate-uid");
    let extras: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix("impersonate-extra-")?;
            Some((key.to_string(), v.to_str().ok()?.to_string()))
        })
        .collect();
    if users.is_empty() {
        if groups.is_empty() && uids.is_empty() && extras.is_empty() {
            return Ok(caller);
        }
        return Err(ApiError::new(
            500,
            "InternalError",
            "Internal error occurred: requested impersonation is not allowed without a user name",
        ));
    }
    if users.len() > 1 || uids.len() > 1 {
        return Err(ApiError::bad_request(
            "only one Impersonate-User and one Impersonate-Uid header are allowed",
        ));
    }
    let name = users[0].clone();
    let allow = |a: Attributes| -> Result<(), ApiError> {
        let (ok, why) = api.authz.authorize_selected(api, &a, None);
        if ok {
            Ok(())
        } else {
            Err(rbac::forbidden_error(&a, &why))
        }
    };
    let mut user_groups = groups.clone();
    match name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => {
            allow(
                Attributes::resource(&caller, "impersonate", "", "serviceaccounts")
                    .with_namespace(ns)
                    .with_name(sa),
            )?;
            for g in [
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{ns}"),
            ] {
                if !user_groups.contains(&g) {
                    user_groups.push(g);
                }
            }
        }
        None => allow(Attributes::resource(&caller, "impersonate", "", "users").with_name(&name))?,
    }
    for g in &groups {
        allow(Attributes::resource(&caller, "impersonate", "", "groups").with_name(g))?;
    }
    for u in &uids {
        allow(
            Attributes::resource(&caller, "impersonate", "authentication.k8s.io", "uids")
                .with_name(u),
        )?;
    }
    for (key, value) in &extras {
        allow(
            Attributes::resource(
                &caller,
                "impersonate",
                "authentication.k8s.io",
                "userextras",
            )
            .with_subresource(key)
            .with_name(value),
        )?;
    }
    if name != "system:anonymous" && !user_groups.iter().any(|g| g == "system:authenticated") {
        user_groups.push("system:authenticated".into());
    }
    tracing::debug!(caller = %caller.name, user = %name, "impersonating");
    Ok(User {
        name,
        uid: uids.into_iter().next().unwrap_or_default(),
        groups: user_groups,
    })
}
