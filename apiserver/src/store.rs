//! The generic registry store: create, update, patch and delete of any resource,
//! parameterised by the resource's strategy. Writes are compare-and-swap on the
//! key's mod revision; without a client precondition, conflicts are retried.

use std::sync::Mutex;

use serde_json::{json, Value};

use crate::authn::User;
use crate::error::{ApiError, ApiResult, Cause};
use crate::registry::{self, Resource};
use crate::storage::{Kv, StorageError};
use crate::{defaults, ssa, strategic, strategy, validation, webhooks, Api};

const MAX_RETRIES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

/// Everything a verb needs to know about its request.
pub struct Ctx<'a> {
    pub api: &'a Api,
    pub res: &'static Resource,
    pub ns: Option<String>,
    pub user: &'a User,
    pub dry_run: bool,
    pub manager: String,
    pub field_validation: FieldValidation,
    pub warnings: Mutex<Vec<String>>,
}

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn storage_err(ctx: &Ctx, name: &str, e: StorageError) -> ApiError {
    match e {
        StorageError::AlreadyExists { .. } => ApiError::already_exists(ctx.res, name),
        StorageError::NotFound { .. } => ApiError::not_found(ctx.res, name),
        StorageError::Conflict { .. } => ApiError::stale(ctx.res, name),
        StorageError::Compacted { .. } => ApiError::gone(e.to_string()),
        StorageError::Etcd(m) => ApiError::internal(m),
    }
}

pub(crate) fn causes(errs: Vec<validation::FieldError>) -> Vec<Cause> {
    errs.into_iter()
        .map(|e| Cause {
            reason: e.reason.to_string(),
            field: e.field,
            message: e.message,
        })
        .collect()
}

/// Resources stored in another version's shape (events.k8s.io/v1 Events are core/v1 Events).
fn stored_as_core_event(res: &Resource) -> bool {
    res.group == "events.k8s.io"
}

/// A stored object as `res` presents it.
pub fn present(res: &Resource, stored: Value) -> Value {
    if stored_as_core_event(res) {
        crate::events::to_events_v1(&stored)
    } else {
        stored
    }
}

/// Parse a stored value, fill in its resourceVersion, and present it as `res`.
pub fn decode(res: &Resource, kv: &Kv) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    v["metadata"]["resourceVersion"] = kv.mod_revision.to_string().into();
    Ok(present(res, v))
}

/// Serialise for etcd, in the storage shape and without resourceVersion, as upstream stores objects.
fn encode(res: &Resource, obj: &Value) -> ApiResult<Vec<u8>> {
    let mut o = if stored_as_core_event(res) {
        crate::events::from_events_v1(obj)
    } else {
        obj.clone()
    };
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&o).map_err(|e| ApiError::internal(e.to_string()))
}

fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn rv_of(obj: &Value) -> ApiResult<Option<i64>> {
    match obj["metadata"]["resourceVersion"].as_str() {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}"))),
    }
}

impl Ctx<'_> {
    fn key(&self, name: &str) -> String {
        self.res.key(&self.api.prefix, self.ns.as_deref(), name)
    }

    /// This request's manager writing through `sub` (None: the object itself,
    /// which owns none of a status the kind keeps behind its subresource).
    fn writer<'a>(&'a self, sub: Option<&'a str>) -> ssa::Writer<'a> {
        ssa::Writer {
            manager: &self.manager,
            subresource: sub.unwrap_or_default(),
            resets_status: sub.is_none() && self.res.has_sub("status"),
        }
    }

    pub(crate) fn warn(&self, w: String) {
        if let Ok(mut g) = self.warnings.lock() {
            g.push(w);
        }
    }

    /// Check apiVersion/kind of a body against the URL, filling them in when absent.
    pub fn check_kind(&self, obj: &mut Value) -> ApiResult<()> {
        let Some(o) = obj.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        };
        let want_av = self.res.api_version();
        match o.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                o.insert("apiVersion".into(), want_av.clone().into());
            }
            Some(av) if av == want_av => {}
            Some(av) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({want_av})"
                )))
            }
        }
        match o.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                o.insert("kind".into(), self.res.kind.into());
            }
            Some(k) if k == self.res.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    self.res.kind
                )))
            }
        }
        if !o.get("metadata").is_some_and(Value::is_object) {
            if o.get("metadata").is_some_and(|m| !m.is_null()) {
                return Err(ApiError::bad_request("metadata must be an object"));
            }
            o.insert("metadata".into(), json!({}));
        }
        Ok(())
    }

    /// The namespace in the body must match the URL's; fill it in.
    fn check_namespace(&self, obj: &mut Value) -> ApiResult<()> {
        let meta = &mut obj["metadata"];
        match (&self.ns, meta.get("namespace").and_then(Value::as_str)) {
            (Some(ns), Some(b)) if !b.is_empty() && b != ns => Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            (Some(ns), _) if self.res.namespaced => {
                meta["namespace"] = ns.clone().into();
                Ok(())
            }
            _ => {
                if !self.res.namespaced {
                    if let Some(m) = meta.as_object_mut() {
                        m.remove("namespace");
                    }
                }
                Ok(())
            }
        }
    }

    /// fieldValidation: unknown fields are an error (Strict), a warning (Warn) or ignored.
    fn check_fields(&self, obj: &Value) -> ApiResult<()> {
        if self.field_validation == FieldValidation::Ignore {
            return Ok(());
        }
        let unknown =
            self.api
                .openapi
                .unknown_fields(self.res.group, self.res.version, self.res.kind, obj);
        if unknown.is_empty() {
            return Ok(());
        }
        let msgs: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{}\"", f.trim_start_matches('.')))
            .collect();
        if self.field_validation == FieldValidation::Strict {
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                msgs.join(", ")
            )));
        }
        for m in msgs {
            self.warn(m);
        }
        Ok(())
    }

    fn validate_create(&self, obj: &Value) -> ApiResult<()> {
        let name = name_of(obj);
        let mut errs = validation::validate(self.res.kind, obj, self.res.namespaced);
        // a name must never reach the etcd key as a path: guard even kinds validation is lax about
        let flagged = errs.iter().any(|e| e.field == "metadata.name");
        if !flagged && (name.contains('/') || name.contains('%') || name == "." || name == "..") {
            errs.push(validation::FieldError {
                reason: "FieldValueInvalid",
                field: "metadata.name".into(),
                message: format!("Invalid value: {name:?}: may not contain '/' or '%' and may not be '.' or '..'"),
            });
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.res, &name, causes(errs)))
        }
    }

    /// The namespace of a namespaced write must exist and not be terminating.
    async fn check_namespace_live(&self) -> ApiResult<()> {
        let Some(ns) = self.ns.as_deref().filter(|_| self.res.namespaced) else {
            return Ok(());
        };
        let ns_res = registry::lookup("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("no namespaces resource"))?;
        let key = ns_res.key(&self.api.prefix, None, ns);
        let obj = match self.api.cache.get(&key) {
            Some(e) => serde_json::from_slice::<Value>(&e.data).ok(),
            None => match self
                .api
                .storage
                .get(&key)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
            {
                Some(kv) => serde_json::from_slice::<Value>(&kv.value).ok(),
                None => None,
            },
        };
        match obj {
            None => Err(ApiError::namespace_not_found(ns)),
            Some(o) if o["status"]["phase"] == "Terminating" || o["metadata"].get("deletionTimestamp").is_some_and(|t| !t.is_null()) => {
                Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    self.res.qualified(),
                    "",
                )))
            }
            Some(_) => Ok(()),
        }
    }

    async fn lease(&self) -> ApiResult<Option<i64>> {
        if self.res.kind != "Event" {
            return Ok(None);
        }
        self.api
            .event_lease()
            .await
            .map(Some)
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// For a read-modify-write: the watch cache's copy on a first attempt (no
    /// etcd round trip; the write's compare-and-swap catches a stale copy), etcd
    /// on a retry. Returns whether the copy came from the cache, so a cached read
    /// never decides an outcome on its own (a precondition, "nothing changed").
    async fn read_for_update(
        &self,
        name: &str,
        fresh: bool,
    ) -> ApiResult<Option<(Kv, Value, bool)>> {
        if !fresh {
            let key = self.key(name);
            if let Some(e) = self.api.cache.get(&key) {
                let kv = Kv {
                    key,
                    value: e.data.to_vec(),
                    mod_revision: e.rev,
                };
                let v = decode(self.res, &kv)?;
                return Ok(Some((kv, v, true)));
            }
        }
        Ok(self.read(name).await?.map(|(kv, v)| (kv, v, false)))
    }

    async fn read(&self, name: &str) -> ApiResult<Option<(Kv, Value)>> {
        match self.api.storage.get(&self.key(name)).await {
            Ok(Some(kv)) => {
                let v = decode(self.res, &kv)?;
                Ok(Some((kv, v)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(storage_err(self, name, e)),
        }
    }
}

/// GET of one object, straight from etcd (a quorum read).
pub async fn get(ctx: &Ctx<'_>, name: &str) -> ApiResult<Value> {
    match ctx.read(name).await? {
        Some((_, v)) => Ok(v),
        None => Err(ApiError::not_found(ctx.res, name)),
    }
}

/// POST to a collection.
pub async fn create(ctx: &Ctx<'_>, mut obj: Value) -> ApiResult<Value> {
    ctx.check_kind(&mut obj)?;
    ctx.check_namespace(&mut obj)?;
    ctx.check_fields(&obj)?;
    let meta = &mut obj["metadata"];
    let name = meta["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        if let Some(gen) = meta["generateName"].as_str().filter(|g| !g.is_empty()) {
            meta["name"] = format!("{gen}{}", random_suffix()).into();
        }
    }
    if let Some(m) = meta.as_object_mut() {
        for f in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "generation",
            "managedFields",
        ] {
            m.remove(f);
        }
        m.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        m.insert("creationTimestamp".into(), now().into());
    }
    strategy::prepare_create(ctx.res, &mut obj);
    if ctx.res.plural == "pods" && ctx.res.group.is_empty() {
        crate::admission::pod_create(ctx, &mut obj);
    }
    defaults::apply(ctx.res.kind, &mut obj);
    crate::quotas::limit_ranger(ctx, &mut obj)?;
    crate::admission::priority(ctx, &mut obj)?;
    crate::admission::default_storage_class_admit(ctx, &mut obj);
    let attrs = webhooks::Attributes::create(ctx, None, &name);
    admit_create(ctx, &attrs, &mut obj).await?;
    crate::certificates::prepare_create(ctx, &mut obj)?;
    rbac_guard(ctx, &obj, None)?;
    crate::authz::admit_node(
        ctx.api,
        ctx.user,
        crate::nodeauthz::Operation::Create,
        ctx.res,
        "",
        ctx.ns.as_deref().unwrap_or_default(),
        &name_of(&obj),
        Some(&obj),
        None,
    )?;
    crate::admission::pod_security(ctx, None, &obj, None)?;
    ctx.validate_create(&obj)?;
    crate::certificates::admit_create(ctx, &obj)?;
    ctx.check_namespace_live().await?;
    webhooks::validate(ctx, &attrs, Some(&obj), None).await?;
    crate::quotas::resource_quota(ctx, None, &obj, None).await?;
    let name = name_of(&obj);
    let allocated = crate::services::allocate(ctx, &mut obj, None).await?;
    ssa::track_update(
        ctx.res.kind,
        &ctx.res.api_version(),
        None,
        &mut obj,
        &ctx.writer(None),
        &now(),
    );
    if ctx.dry_run {
        crate::services::release(ctx, &allocated).await;
        return Ok(obj);
    }
    let lease = ctx.lease().await?;
    let body = encode(ctx.res, &obj)?;
    match ctx.api.storage.create(&ctx.key(&name), body, lease).await {
        Ok(rev) => {
            obj["metadata"]["resourceVersion"] = rev.to_string().into();
            Ok(obj)
        }
        Err(e) => {
            crate::services::release(ctx, &allocated).await;
            Err(storage_err(ctx, &name, e))
        }
    }
}

/// The mutating admission webhooks of a create. Upstream calls them before
/// the store names and stamps the object, so they see neither a generated
/// name nor uid and creationTimestamp, and what they do to those is replaced;
/// a changed object is prepared for create again.
async fn admit_create(
    ctx: &Ctx<'_>,
    attrs: &webhooks::Attributes,
    obj: &mut Value,
) -> ApiResult<()> {
    let mut stamped = serde_json::Map::new();
    if let Some(m) = obj["metadata"].as_object_mut() {
        let mut fields = vec!["uid", "creationTimestamp"];
        if attrs.name.is_empty() {
            fields.push("name");
        }
        for f in fields {
            if let Some(v) = m.remove(f) {
                stamped.insert(f.into(), v);
            }
        }
    }
    let admitted = webhooks::admit(ctx, attrs, Some(&mut *obj), None).await;
    if let Some(m) = obj["metadata"].as_object_mut() {
        for (k, v) in stamped {
            let named = k == "name"
                && m.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty());
            if !named {
                m.insert(k, v);
            }
        }
    }
    if admitted? {
        strategy::prepare_create(ctx.res, obj);
        ctx.check_kind(obj)?;
        ctx.check_namespace(obj)?;
    }
    Ok(())
}

/// With RBAC on, nobody grants what they do not hold: roles and bindings are
/// checked against the writer's own permissions (upstream's escalation check).
fn rbac_guard(ctx: &Ctx<'_>, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    if !ctx.api.authz.rbac_on() || ctx.res.group != "rbac.authorization.k8s.io" {
        return Ok(());
    }
    let snap = ctx.api.authz.snapshot(ctx.api);
    let ns = ctx.ns.as_deref().unwrap_or_default();
    match ctx.res.plural {
        "roles" | "clusterroles" => {
            crate::rbac::check_role_write(&snap, ctx.user, ctx.res.plural, ns, obj, old)
        }
        "rolebindings" | "clusterrolebindings" => {
            crate::rbac::check_binding_write(&snap, ctx.user, ctx.res.plural, ns, obj, old)
        }
        _ => Ok(()),
    }
}

/// Five characters of upstream's generateName alphabet.
pub(crate) fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// How an update of an existing object ends.
enum Write {
    Done(Value),
    Retry,
}

#[allow(clippy::too_many_arguments)]
/// Finish an update of `old` (read at `kv`) into `new`: strategy, admission
/// (webhooks unless the caller ran them, as /scale does), validation,
/// ownership, then compare-and-swap (or a deletion once finalizers are gone).
async fn write_update(
    ctx: &Ctx<'_>,
    name: &str,
    sub: Option<&str>,
    kv: &Kv,
    old: &Value,
    mut new: Value,
    track: bool,
    precondition: bool,
    cached: bool,
    hooks: bool,
) -> ApiResult<Write> {
    defaults::apply(ctx.res.kind, &mut new);
    let attrs = webhooks::Attributes::update(ctx, sub, name);
    if hooks && webhooks::admit(ctx, &attrs, Some(&mut new), Some(old)).await? {
        ctx.check_kind(&mut new)?;
        ctx.check_namespace(&mut new)?;
    }
    strategy::prepare_update(ctx.res, sub, &mut new, old);
    rbac_guard(ctx, &new, Some(old))?;
    crate::authz::admit_node(
        ctx.api,
        ctx.user,
        crate::nodeauthz::Operation::Update,
        ctx.res,
        sub.unwrap_or_default(),
        ctx.ns.as_deref().unwrap_or_default(),
        name,
        Some(&new),
        Some(old),
    )?;
    crate::admission::pod_security(ctx, sub, &new, Some(old))?;
    let mut errs = validation::validate_update(ctx.res.kind, &new, old, ctx.res.namespaced);
    if ctx.res.kind == crate::certificates::KIND {
        errs.extend(crate::certificates::validate_update(sub, &new, old));
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(ctx.res, name, causes(errs)));
    }
    crate::certificates::admit_update(ctx, sub, &new, old)?;
    if hooks {
        webhooks::validate(ctx, &attrs, Some(&new), Some(old)).await?;
    }
    crate::quotas::resource_quota(ctx, sub, &new, Some(old)).await?;
    crate::services::allocate(ctx, &mut new, Some(old)).await?;
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    if track {
        ssa::track_update(
            ctx.res.kind,
            &ctx.res.api_version(),
            Some(old),
            &mut new,
            &ctx.writer(sub),
            &now(),
        );
    }
    if same_but_managed_times(&new, old) {
        // "nothing to write" is only an answer when `old` is what etcd holds
        if cached {
            return Ok(Write::Retry);
        }
        return Ok(Write::Done(old.clone()));
    }
    if ctx.dry_run {
        return Ok(Write::Done(new));
    }
    if strategy::finished_finalizing(ctx.res, &new) {
        return match ctx
            .api
            .storage
            .delete(&ctx.key(name), kv.mod_revision)
            .await
        {
            Ok(_) => {
                crate::services::release_all(ctx, &new).await;
                Ok(Write::Done(new))
            }
            Err(StorageError::Conflict { .. }) if !precondition => Ok(Write::Retry),
            Err(e) => Err(storage_err(ctx, name, e)),
        };
    }
    let lease = ctx.lease().await?;
    match ctx
        .api
        .storage
        .update(
            &ctx.key(name),
            encode(ctx.res, &new)?,
            kv.mod_revision,
            lease,
        )
        .await
    {
        Ok(rev) => {
            new["metadata"]["resourceVersion"] = rev.to_string().into();
            Ok(Write::Done(new))
        }
        Err(StorageError::Conflict { .. }) if !precondition => Ok(Write::Retry),
        Err(e) => Err(storage_err(ctx, name, e)),
    }
}

/// managedFields timestamps change on every write: whether two objects are
/// equal but for them (compared in place, nothing copied).
fn same_but_managed_times(a: &Value, b: &Value) -> bool {
    fn same_map(
        a: &serde_json::Map<String, Value>,
        b: &serde_json::Map<String, Value>,
        eq: impl Fn(&str, &Value, &Value) -> bool,
    ) -> bool {
        a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| eq(k, v, w)))
    }
    let entries = |x: &Value, y: &Value| match (x.as_array(), y.as_array()) {
        (Some(x), Some(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(e, f)| match (e.as_object(), f.as_object()) {
                        (Some(e), Some(f)) => {
                            let n = |m: &serde_json::Map<String, Value>| {
                                m.len() - usize::from(m.contains_key("time"))
                            };
                            n(e) == n(f)
                                && e.iter()
                                    .filter(|(k, _)| *k != "time")
                                    .all(|(k, v)| f.get(k) == Some(v))
                        }
                        _ => e == f,
                    })
        }
        _ => x == y,
    };
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => same_map(a, b, |k, x, y| match (k, x.as_object(), y.as_object()) {
            ("metadata", Some(x), Some(y)) => same_map(x, y, |k, x, y| {
                if k == "managedFields" {
                    entries(x, y)
                } else {
                    x == y
                }
            }),
            _ => x == y,
        }),
        _ => a == b,
    }
}

/// Resources whose PUT creates a missing object (upstream's AllowCreateOnUpdate).
fn create_on_update(res: &Resource) -> bool {
    matches!(res.kind, "Endpoints" | "Lease" | "Event")
}

/// PUT of an object or its status.
pub async fn update(
    ctx: &Ctx<'_>,
    name: &str,
    sub: Option<&str>,
    mut obj: Value,
) -> ApiResult<(Value, bool)> {
    ctx.check_kind(&mut obj)?;
    ctx.check_namespace(&mut obj)?;
    match obj["metadata"]["name"].as_str() {
        None | Some("") => obj["metadata"]["name"] = name.into(),
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
        Some(_) => {}
    }
    ctx.check_fields(&obj)?;
    let precondition = rv_of(&obj)?;
    for attempt in 0..MAX_RETRIES {
        let Some((kv, old, cached)) = ctx.read_for_update(name, attempt > 0).await? else {
            if create_on_update(ctx.res) && sub.is_none() {
                return create(ctx, obj).await.map(|v| (v, true));
            }
            return Err(ApiError::not_found(ctx.res, name));
        };
        if precondition.is_some_and(|p| p != kv.mod_revision) {
            if cached {
                continue;
            }
            return Err(ApiError::stale(ctx.res, name));
        }
        match write_update(
            ctx,
            name,
            sub,
            &kv,
            &old,
            obj.clone(),
            true,
            precondition.is_some(),
            cached,
            true,
        )
        .await?
        {
            Write::Done(v) => return Ok((v, false)),
            Write::Retry => continue,
        }
    }
    Err(ApiError::stale(ctx.res, name))
}

/// PATCH of an object or its status, in any of the four patch types.
pub async fn patch(
    ctx: &Ctx<'_>,
    name: &str,
    sub: Option<&str>,
    typ: PatchType,
    patch: &Value,
    force: bool,
) -> ApiResult<(Value, bool)> {
    for attempt in 0..MAX_RETRIES {
        let Some((kv, old, cached)) = ctx.read_for_update(name, attempt > 0).await? else {
            if typ == PatchType::Apply && sub.is_none() {
                let mut applied = patch.clone();
                ctx.check_kind(&mut applied)?;
                if applied["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n != name)
                {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        name_of(&applied)
                    )));
                }
                applied["metadata"]["name"] = name.into();
                let obj = ssa::apply(
                    ctx.res.kind,
                    &ctx.res.api_version(),
                    None,
                    &applied,
                    &ctx.manager,
                    force,
                    &now(),
                )
                .map_err(|e| apply_error(&e))?;
                let created = create_applied(ctx, obj).await?;
                return Ok((created, true));
            }
            return Err(ApiError::not_found(ctx.res, name));
        };
        let patched = apply_patch(ctx, &old, typ, patch, force)?;
        // a resourceVersion in the patch is a precondition
        let precondition = match rv_of(&patched)? {
            Some(p) if p != kv.mod_revision => {
                if cached {
                    continue;
                }
                return Err(ApiError::stale(ctx.res, name));
            }
            Some(_) => patch.pointer("/metadata/resourceVersion").is_some(),
            None => false,
        };
        let mut patched = patched;
        ctx.check_kind(&mut patched)?;
        ctx.check_fields(&patched)?;
        if name_of(&patched) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(&patched)
            )));
        }
        match write_update(
            ctx,
            name,
            sub,
            &kv,
            &old,
            patched,
            typ != PatchType::Apply,
            precondition,
            cached,
            true,
        )
        .await?
        {
            Write::Done(v) => return Ok((v, false)),
            Write::Retry => continue,
        }
    }
    Err(ApiError::stale(ctx.res, name))
}

/// Create from an applied configuration: the ownership recorded by apply is kept.
async fn create_applied(ctx: &Ctx<'_>, obj: Value) -> ApiResult<Value> {
    let managed = obj["metadata"]["managedFields"].clone();
    let mut created = create(ctx, obj).await?;
    if !managed.is_null() {
        created["metadata"]["managedFields"] = managed;
        if !ctx.dry_run {
            // keep apply's ownership instead of the Update entry create recorded
            let name = name_of(&created);
            let rev = rv_of(&created)?.unwrap_or(0);
            match ctx
                .api
                .storage
                .update(
                    &ctx.key(&name),
                    encode(ctx.res, &created)?,
                    rev,
                    ctx.lease().await?,
                )
                .await
            {
                Ok(r) => created["metadata"]["resourceVersion"] = r.to_string().into(),
                Err(StorageError::Conflict { .. }) => {}
                Err(e) => return Err(storage_err(ctx, &name, e)),
            }
        }
    }
    Ok(created)
}

fn apply_error(e: &ssa::ApplyError) -> ApiError {
    let msg = e.message();
    match e {
        ssa::ApplyError::Conflicts(cs) => {
            let causes: Vec<Value> = cs
                .iter()
                .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager), "field": c.field}))
                .collect();
            let mut err = ApiError::new(409, "Conflict", msg);
            err.details = Some(json!({"causes": causes}));
            err
        }
        ssa::ApplyError::Invalid(_) => ApiError::new(422, "Invalid", msg),
    }
}

fn apply_patch(
    ctx: &Ctx,
    old: &Value,
    typ: PatchType,
    patch: &Value,
    force: bool,
) -> ApiResult<Value> {
    match typ {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("json patch: {e}")))?;
            let mut doc = old.clone();
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
            Ok(doc)
        }
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            let mut doc = old.clone();
            json_patch::merge(&mut doc, patch);
            Ok(doc)
        }
        PatchType::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "strategic merge patch must be a JSON object",
                ));
            }
            strategic::apply(ctx.res.kind, old, patch).map_err(|e| ApiError::new(422, "Invalid", e))
        }
        PatchType::Apply => {
            let mut applied = patch.clone();
            ctx.check_kind(&mut applied)?;
            ssa::apply(
                ctx.res.kind,
                &ctx.res.api_version(),
                Some(old),
                &applied,
                &ctx.manager,
                force,
                &now(),
            )
            .map_err(|e| apply_error(&e))
        }
    }
}

/// DeleteOptions a client may send.
#[derive(Debug, Default, Clone)]
pub struct DeleteOpts {
    pub grace_period: Option<i64>,
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    /// `dryRun: ["All"]` in the DeleteOptions body (the query's dryRun is on the Ctx)
    pub dry_run: bool,
}

impl DeleteOpts {
    /// From a DeleteOptions body (may be empty) and the query's overrides.
    pub fn from_body(body: &Value) -> DeleteOpts {
        DeleteOpts {
            grace_period: body["gracePeriodSeconds"].as_i64(),
            propagation: body["propagationPolicy"]
                .as_str()
                .map(str::to_string)
                .or_else(|| {
                    body["orphanDependents"]
                        .as_bool()
                        .map(|o| if o { "Orphan" } else { "Background" }.to_string())
                }),
            precondition_uid: body["preconditions"]["uid"].as_str().map(str::to_string),
            precondition_rv: body["preconditions"]["resourceVersion"]
                .as_str()
                .map(str::to_string),
            dry_run: body["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|v| v == "All")),
        }
    }
}

/// DELETE of one object: graceful for pods, finalizers and propagation recorded for the
/// garbage collector, otherwise removed. Returns the object's last state.
/// Namespaces NamespaceLifecycle refuses to delete, as upstream's.
const IMMORTAL_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

pub async fn delete(ctx: &Ctx<'_>, name: &str, opts: &DeleteOpts) -> ApiResult<Value> {
    crate::authz::admit_node(
        ctx.api,
        ctx.user,
        crate::nodeauthz::Operation::Delete,
        ctx.res,
        "",
        ctx.ns.as_deref().unwrap_or_default(),
        name,
        None,
        None,
    )?;
    // NamespaceLifecycle: the namespaces the apiserver keeps are immortal
    if ctx.res.plural == "namespaces"
        && ctx.res.group.is_empty()
        && IMMORTAL_NAMESPACES.contains(&name)
    {
        return Err(ApiError::forbidden(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        )));
    }
    let dry_run = ctx.dry_run || opts.dry_run;
    if let Some(p) = opts.propagation.as_deref() {
        if !matches!(p, "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::invalid(
                ctx.res,
                name,
                vec![Cause {
                    reason: "FieldValueNotSupported".into(),
                    field: "propagationPolicy".into(),
                    message: format!("Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""),
                }],
            ));
        }
    }
    for attempt in 0..MAX_RETRIES {
        let Some((kv, old, cached)) = ctx.read_for_update(name, attempt > 0).await? else {
            return Err(ApiError::not_found(ctx.res, name));
        };
        if let Some(uid) = &opts.precondition_uid {
            let have = old["metadata"]["uid"].as_str().unwrap_or_default();
            if have != uid {
                if cached {
                    continue;
                }
                return Err(ApiError::conflict(ctx.res, name, &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}")));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            let have = kv.mod_revision.to_string();
            if &have != rv {
                if cached {
                    continue;
                }
                return Err(ApiError::conflict(ctx.res, name, &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in meta: {have}")));
            }
        }
        let mut next = old.clone();
        let mut graceful = false;
        let now_ts = chrono::Utc::now();
        let terminating = old["metadata"]
            .get("deletionTimestamp")
            .is_some_and(|t| !t.is_null());
        if ctx.res.kind == "Pod" {
            let phase = old["status"]["phase"].as_str().unwrap_or_default();
            let bound = old["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            let mut grace = opts
                .grace_period
                .or_else(|| old["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30)
                .max(0);
            if !bound || matches!(phase, "Succeeded" | "Failed") {
                grace = 0;
            }
            let current = old["metadata"]["deletionGracePeriodSeconds"].as_i64();
            if grace > 0 && current.is_none_or(|c| grace < c) {
                next["metadata"]["deletionTimestamp"] = (now_ts + chrono::Duration::seconds(grace))
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
                    .into();
                next["metadata"]["deletionGracePeriodSeconds"] = grace.into();
                graceful = true;
            } else if grace > 0 {
                // already terminating with a shorter grace period
                return Ok(old);
            } else {
                next["metadata"]["deletionGracePeriodSeconds"] = 0.into();
            }
        }
        if ctx.res.kind == "Namespace" {
            let has_fin = next["spec"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
            if has_fin {
                if terminating {
                    return Ok(old);
                }
                next["status"]["phase"] = "Terminating".into();
                graceful = true;
            }
        }
        // validating admission sees the object being deleted
        let attrs = webhooks::Attributes::delete(ctx, name, opts);
        webhooks::validate(ctx, &attrs, None, Some(&old)).await?;
        // propagation policies the garbage collector acts on
        let fin = match opts.propagation.as_deref() {
            Some("Orphan") => Some("orphan"),
            Some("Foreground") => Some("foregroundDeletion"),
            _ => None,
        };
        if let Some(f) = fin {
            let list = next["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !list.iter().any(|x| x == f) {
                let mut list = list;
                list.push(f.into());
                next["metadata"]["finalizers"] = list.into();
            }
        }
        let has_finalizers = next["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers || graceful {
            if !terminating || next != old {
                if next["metadata"]
                    .get("deletionTimestamp")
                    .is_none_or(Value::is_null)
                {
                    next["metadata"]["deletionTimestamp"] =
                        now_ts.format("%Y-%m-%dT%H:%M:%SZ").to_string().into();
                    if next["metadata"].get("deletionGracePeriodSeconds").is_none() {
                        next["metadata"]["deletionGracePeriodSeconds"] = 0.into();
                    }
                }
                if dry_run {
                    return Ok(next);
                }
                match ctx
                    .api
                    .storage
                    .update(
                        &ctx.key(name),
                        encode(ctx.res, &next)?,
                        kv.mod_revision,
                        ctx.lease().await?,
                    )
                    .await
                {
                    Ok(rev) => {
                        next["metadata"]["resourceVersion"] = rev.to_string().into();
                        return Ok(next);
                    }
                    Err(StorageError::Conflict { .. } | StorageError::NotFound { .. }) => continue,
                    Err(e) => return Err(storage_err(ctx, name, e)),
                }
            }
            return Ok(old);
        }
        if dry_run {
            return Ok(old);
        }
        match ctx
            .api
            .storage
            .delete(&ctx.key(name), kv.mod_revision)
            .await
        {
            Ok(_) => {
                crate::services::release_all(ctx, &old).await;
                return Ok(old);
            }
            Err(StorageError::Conflict { .. }) => continue,
            Err(StorageError::NotFound { .. }) => return Err(ApiError::not_found(ctx.res, name)),
            Err(e) => return Err(storage_err(ctx, name, e)),
        }
    }
    Err(ApiError::stale(ctx.res, name))
}

/// pods/binding: assign a pod to a node, once.
pub async fn bind(ctx: &Ctx<'_>, name: &str, binding: &Value) -> ApiResult<Value> {
    // pods/binding is a create of a Binding for admission
    let mut binding = binding.clone();
    let attrs = webhooks::Attributes::create(ctx, Some("binding"), name);
    webhooks::admit(ctx, &attrs, Some(&mut binding), None).await?;
    webhooks::validate(ctx, &attrs, Some(&binding), None).await?;
    let node = binding["target"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if node.is_empty() {
        let res = ctx.res;
        return Err(ApiError::invalid(
            res,
            name,
            vec![Cause {
                reason: "FieldValueRequired".into(),
                field: "target.name".into(),
                message: "Required value".into(),
            }],
        ));
    }
    for attempt in 0..MAX_RETRIES {
        let Some((kv, old, cached)) = ctx.read_for_update(name, attempt > 0).await? else {
            return Err(ApiError::not_found(ctx.res, name));
        };
        if let Some(uid) = binding["metadata"]["uid"].as_str() {
            if old["metadata"]["uid"].as_str() != Some(uid) {
                if cached {
                    continue;
                }
                return Err(ApiError::conflict(
                    ctx.res,
                    name,
                    "the UID in the binding does not match the pod",
                ));
            }
        }
        if old["metadata"]
            .get("deletionTimestamp")
            .is_some_and(|t| !t.is_null())
        {
            return Err(ApiError::conflict(
                ctx.res,
                name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(cur) = old["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict(
                ctx.res,
                &format!("{name}/binding"),
                &format!("pod {name} is already assigned to node \"{cur}\""),
            ));
        }
        let mut new = old.clone();
        new["spec"]["nodeName"] = node.clone().into();
        let ts = now();
        let mut conds: Vec<Value> = new["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conds.retain(|c| c["type"] != "PodScheduled");
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": ts}));
        new["status"]["conditions"] = conds.into();
        if ctx.dry_run {
            return Ok(crate::error::success_status(None));
        }
        match ctx
            .api
            .storage
            .update(
                &ctx.key(name),
                encode(ctx.res, &new)?,
                kv.mod_revision,
                None,
            )
            .await
        {
            Ok(_) => return Ok(crate::error::success_status(None)),
            Err(StorageError::Conflict { .. }) => continue,
            Err(e) => return Err(storage_err(ctx, name, e)),
        }
    }
    Err(ApiError::stale(ctx.res, name))
}

/// The autoscaling/v1 Scale view of a workload.
pub fn to_scale(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": strategy::selector_string(&obj["spec"]["selector"]),
        },
    })
}

/// PUT or PATCH of /scale: change spec.replicas only.
pub async fn update_scale(
    ctx: &Ctx<'_>,
    name: &str,
    change: &(dyn Fn(Value) -> ApiResult<Value> + Send + Sync),
) -> ApiResult<Value> {
    for attempt in 0..MAX_RETRIES {
        let Some((kv, old, cached)) = ctx.read_for_update(name, attempt > 0).await? else {
            return Err(ApiError::not_found(ctx.res, name));
        };
        let old_scale = to_scale(&old);
        let mut scale = change(old_scale.clone())?;
        // admission sees the Scale (upstream's scale subresource), not the workload
        let attrs = webhooks::Attributes::update(ctx, Some("scale"), name);
        if webhooks::admit(ctx, &attrs, Some(&mut scale), Some(&old_scale)).await? {
            ctx.check_namespace(&mut scale)?;
        }
        if let Some(rv) = rv_of(&scale)? {
            if rv != kv.mod_revision {
                if cached {
                    continue;
                }
                return Err(ApiError::stale(ctx.res, name));
            }
        }
        let Some(replicas) = scale["spec"]["replicas"].as_i64() else {
            return Err(ApiError::bad_request("spec.replicas must be an integer"));
        };
        if replicas < 0 {
            let scale_res = ctx.res;
            return Err(ApiError::invalid(
                scale_res,
                name,
                vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    field: "spec.replicas".into(),
                    message: format!(
                        "Invalid value: {replicas}: must be greater than or equal to 0"
                    ),
                }],
            ));
        }
        webhooks::validate(ctx, &attrs, Some(&scale), Some(&old_scale)).await?;
        let mut new = old.clone();
        new["spec"]["replicas"] = replicas.into();
        match write_update(
            ctx,
            name,
            Some("scale"),
            &kv,
            &old,
            new,
            true,
            false,
            cached,
            false,
        )
        .await?
        {
            Write::Done(v) => return Ok(to_scale(&v)),
            Write::Retry => continue,
        }
    }
    Err(ApiError::stale(ctx.res, name))
}

/// namespaces/finalize: replace spec.finalizers; a terminating namespace with none left goes.
pub async fn finalize_namespace(ctx: &Ctx<'_>, name: &str, body: &Value) -> ApiResult<Value> {
    for attempt in 0..MAX_RETRIES {
        let Some((kv, old, _cached)) = ctx.read_for_update(name, attempt > 0).await? else {
            return Err(ApiError::not_found(ctx.res, name));
        };
        let mut new = old.clone();
        new["spec"]["finalizers"] = body["spec"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into();
        let attrs = webhooks::Attributes::update(ctx, Some("finalize"), name);
        if webhooks::admit(ctx, &attrs, Some(&mut new), Some(&old)).await? {
            // the finalize subresource changes spec.finalizers only
            let finalizers = new["spec"]["finalizers"].clone();
            new = old.clone();
            new["spec"]["finalizers"] = finalizers;
        }
        webhooks::validate(ctx, &attrs, Some(&new), Some(&old)).await?;
        if ctx.dry_run {
            return Ok(new);
        }
        let res = if strategy::finished_finalizing(ctx.res, &new) {
            ctx.api
                .storage
                .delete(&ctx.key(name), kv.mod_revision)
                .await
        } else {
            ctx.api
                .storage
                .update(
                    &ctx.key(name),
                    encode(ctx.res, &new)?,
                    kv.mod_revision,
                    None,
                )
                .await
        };
        match res {
            Ok(rev) => {
                new["metadata"]["resourceVersion"] = rev.to_string().into();
                return Ok(new);
            }
            Err(StorageError::Conflict { .. }) => continue,
            Err(e) => return Err(storage_err(ctx, name, e)),
        }
    }
    Err(ApiError::stale(ctx.res, name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn same_but_managed_times_ignores_only_the_times() {
        let a = json!({"metadata": {"name": "x", "managedFields": [
            {"manager": "m", "time": "2026-01-01T00:00:00Z", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"a": 1}});
        let mut b = a.clone();
        b["metadata"]["managedFields"][0]["time"] = "2026-02-02T00:00:00Z".into();
        assert!(same_but_managed_times(&a, &b));
        let mut c = b.clone();
        c["spec"]["a"] = 2.into();
        assert!(!same_but_managed_times(&a, &c));
        let mut c = b.clone();
        c["metadata"]["managedFields"][0]["manager"] = "n".into();
        assert!(!same_but_managed_times(&a, &c));
        let mut c = b.clone();
        c["metadata"]["managedFields"][0]
            .as_object_mut()
            .unwrap()
            .remove("time");
        assert!(same_but_managed_times(&a, &c));
        c["metadata"]["labels"] = json!({"l": "v"});
        assert!(!same_but_managed_times(&a, &c));
        let mut c = b.clone();
        c["metadata"]["managedFields"]
            .as_array_mut()
            .unwrap()
            .push(json!({"manager": "o"}));
        assert!(!same_but_managed_times(&a, &c));
    }
}
