//! upstream's defaulting for the built-in kinds, applied on create and update
//!
//! This follows the defaulting functions of the Kubernetes API groups
//! (core/v1, apps/v1, batch/v1, discovery/v1, networking/v1, rbac/v1,
//! scheduling/v1, storage/v1), including the declarative `+default` markers,
//! plus the few values upstream's registry strategies fill on create
//! (Namespace finalizers, Service IP family fields and clusterIPs).
//!
//! Objects are handled as the JSON a client sent, so every rule here is
//! "if the field is absent (or null), set it"; values the client did send are
//! never replaced.

use serde_json::{json, Map, Value};

/// Apply defaults in place. `kind` is e.g. "Pod", "Deployment"; unknown kinds are left alone.
pub fn apply(kind: &str, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match kind {
        "Pod" => pod(obj),
        "PodTemplate" => {
            if let Some(t) = field_mut(obj, "template") {
                pod_template(t);
            }
        }
        "ReplicationController" => replication_controller(obj),
        "ReplicaSet" => replica_set(obj),
        "Deployment" => deployment(obj),
        "StatefulSet" => stateful_set(obj),
        "DaemonSet" => daemon_set(obj),
        "Job" => job(obj),
        "CronJob" => cron_job(obj),
        "Service" => service(obj),
        "Namespace" => namespace(obj),
        "Secret" => {
            set_default(obj, "type", json!("Opaque"));
            merge_string_data(obj);
        }
        "PersistentVolume" => persistent_volume(obj),
        "PersistentVolumeClaim" => persistent_volume_claim(obj),
        "Endpoints" => endpoints(obj),
        "EndpointSlice" => endpoint_slice(obj),
        "Node" => node(obj),
        "LimitRange" => limit_range(obj),
        "NetworkPolicy" => network_policy(obj),
        "StorageClass" => {
            set_default(obj, "reclaimPolicy", json!("Delete"));
            set_default(obj, "volumeBindingMode", json!("Immediate"));
        }
        "PriorityClass" => {
            set_default(obj, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        "RoleBinding" | "ClusterRoleBinding" => role_binding(obj),
        "MutatingWebhookConfiguration" => each_item(obj, "webhooks", |w| webhook(w, true)),
        "ValidatingWebhookConfiguration" => each_item(obj, "webhooks", |w| webhook(w, false)),
        _ => {}
    }
}

/// A Secret's write-only `stringData` is merged into `data` (base64-encoded,
/// its keys winning), as upstream's conversion does: it is never stored.
fn merge_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(string_data) = map.remove("stringData") else {
        return;
    };
    let Value::Object(entries) = string_data else {
        map.insert("stringData".into(), string_data);
        return;
    };
    if entries.is_empty() {
        return;
    }
    if !entries.values().all(Value::is_string) {
        // left for the type checks to refuse
        map.insert("stringData".into(), Value::Object(entries));
        return;
    }
    let data = map
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    if let Some(data) = data.as_object_mut() {
        for (k, v) in entries {
            let text = v.as_str().unwrap_or_default();
            data.insert(
                k,
                base64::engine::general_purpose::STANDARD
                    .encode(text)
                    .into(),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// JSON helpers

/// True when the key is absent or explicitly null.
fn is_unset(obj: &Value, key: &str) -> bool {
    obj.get(key).is_none_or(Value::is_null)
}

/// Set `key` to `value` when it is absent or null. Does nothing on non-objects.
fn set_default(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        match map.get(key) {
            Some(v) if !v.is_null() => {}
            _ => {
                map.insert(key.to_string(), value);
            }
        }
    }
}

/// Set `key` to `value` when it is absent, null or an empty string.
fn set_default_str(obj: &mut Value, key: &str, value: &str) {
    if let Some(map) = obj.as_object_mut() {
        let empty = match map.get(key) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if empty {
            map.insert(key.to_string(), Value::String(value.to_string()));
        }
    }
}

/// The object under `key`, created as `{}` when absent or null.
/// Returns None when `obj` is not an object or the value is not an object.
fn ensure_object<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let map = obj.as_object_mut()?;
    let slot = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    if slot.is_object() {
        Some(slot)
    } else {
        None
    }
}

/// The existing object under `key` (never created).
fn field_mut<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    match obj.get_mut(key) {
        Some(v) if v.is_object() => Some(v),
        _ => None,
    }
}

/// Mutable iteration over the objects of the array under `key`.
fn each_item(obj: &mut Value, key: &str, mut f: impl FnMut(&mut Value)) {
    if let Some(Value::Array(items)) = obj.get_mut(key) {
        for item in items.iter_mut().filter(|i| i.is_object()) {
            f(item);
        }
    }
}

fn str_of<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.get(key).and_then(Value::as_str).unwrap_or("")
}

fn non_empty_object(v: Option<&Value>) -> bool {
    v.and_then(Value::as_object).is_some_and(|m| !m.is_empty())
}

// ---------------------------------------------------------------------------
// core/v1: pods and pod templates

fn pod(obj: &mut Value) {
    let Some(spec) = ensure_object(obj, "spec") else {
        return;
    };
    pod_spec(spec);
    // SetDefaults_Pod: only for real pods, not for templates.
    for key in ["containers", "initContainers"] {
        each_item(spec, key, requests_from_limits);
    }
    set_default(spec, "enableServiceLinks", json!(true));
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        for key in ["containers", "initContainers"] {
            each_item(spec, key, |c| {
                each_item(c, "ports", |p| {
                    let host = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
                    if host == 0 {
                        if let Some(cp) = p.get("containerPort").cloned() {
                            if let Some(m) = p.as_object_mut() {
                                m.insert("hostPort".into(), cp);
                            }
                        }
                    }
                });
            });
        }
    }
}

/// Limits given without requests: each missing request defaults to its limit.
fn requests_from_limits(container: &mut Value) {
    let Some(res) = field_mut(container, "resources") else {
        return;
    };
    let limits = match res.get("limits").and_then(Value::as_object) {
        Some(l) => l.clone(),
        None => return,
    };
    let Some(requests) = ensure_object(res, "requests").and_then(Value::as_object_mut) else {
        return;
    };
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

fn pod_template(template: &mut Value) {
    if let Some(spec) = ensure_object(template, "spec") {
        pod_spec(spec);
    }
}

/// SetDefaults_PodSpec plus everything nested in a PodSpec.
fn pod_spec(spec: &mut Value) {
    set_default_str(spec, "dnsPolicy", "ClusterFirst");
    set_default_str(spec, "restartPolicy", "Always");
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default_str(spec, "schedulerName", "default-scheduler");
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        each_item(spec, key, container);
    }
    each_item(spec, "volumes", volume);
}

/// The image tag as upstream's image-name parser sees it: "latest" when the
/// reference has neither tag nor digest, "" when it only has a digest.
fn image_tag(image: &str) -> &str {
    let (name, has_digest) = match image.find('@') {
        Some(i) => (&image[..i], true),
        None => (image, false),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => &name[last_slash + i + 1..],
        None if has_digest => "",
        None if image.is_empty() => "",
        None => "latest",
    }
}

fn container(c: &mut Value) {
    if is_unset(c, "imagePullPolicy") || str_of(c, "imagePullPolicy").is_empty() {
        let policy = if image_tag(str_of(c, "image")) == "latest" {
            "Always"
        } else {
            "IfNotPresent"
        };
        set_default_str(c, "imagePullPolicy", policy);
    }
    set_default_str(c, "terminationMessagePath", "/dev/termination-log");
    set_default_str(c, "terminationMessagePolicy", "File");
    set_default(c, "resources", json!({}));
    each_item(c, "ports", |p| set_default_str(p, "protocol", "TCP"));
    each_item(c, "env", |e| {
        if let Some(vf) = field_mut(e, "valueFrom") {
            if let Some(fr) = field_mut(vf, "fieldRef") {
                set_default_str(fr, "apiVersion", "v1");
            }
        }
    });
    for probe_key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = field_mut(c, probe_key) {
            probe(p);
        }
    }
    if let Some(lc) = field_mut(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = field_mut(lc, hook) {
                if let Some(g) = field_mut(h, "httpGet") {
                    http_get(g);
                }
            }
        }
    }
}

fn probe(p: &mut Value) {
    for (key, value) in [
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ] {
        let zero = p
            .get(key)
            .is_none_or(|v| v.is_null() || v.as_i64() == Some(0));
        if zero {
            if let Some(m) = p.as_object_mut() {
                m.insert(key.into(), json!(value));
            }
        }
    }
    if let Some(g) = field_mut(p, "httpGet") {
        http_get(g);
    }
    if let Some(g) = field_mut(p, "grpc") {
        set_default(g, "service", json!(""));
    }
}

fn http_get(g: &mut Value) {
    set_default_str(g, "path", "/");
    set_default_str(g, "scheme", "HTTP");
}

/// The volume source keys of a core/v1 Volume.
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

fn volume(v: &mut Value) {
    let has_source = VOLUME_SOURCES
        .iter()
        .any(|k| v.get(*k).is_some_and(|s| !s.is_null()));
    if !has_source {
        if let Some(m) = v.as_object_mut() {
            m.insert("emptyDir".into(), json!({}));
        }
    }
    if let Some(s) = field_mut(v, "secret") {
        set_default(s, "defaultMode", json!(420));
    }
    if let Some(s) = field_mut(v, "configMap") {
        set_default(s, "defaultMode", json!(420));
    }
    if let Some(s) = field_mut(v, "downwardAPI") {
        set_default(s, "defaultMode", json!(420));
        each_item(s, "items", downward_api_file);
    }
    if let Some(s) = field_mut(v, "projected") {
        set_default(s, "defaultMode", json!(420));
        each_item(s, "sources", |src| {
            if let Some(t) = field_mut(src, "serviceAccountToken") {
                set_default(t, "expirationSeconds", json!(3600));
            }
            if let Some(d) = field_mut(src, "downwardAPI") {
                each_item(d, "items", downward_api_file);
            }
        });
    }
    if let Some(s) = field_mut(v, "hostPath") {
        set_default(s, "type", json!(""));
    }
    if let Some(s) = field_mut(v, "iscsi") {
        set_default_str(s, "iscsiInterface", "default");
    }
    if let Some(s) = field_mut(v, "rbd") {
        rbd(s);
    }
    if let Some(s) = field_mut(v, "azureDisk") {
        azure_disk(s);
    }
    if let Some(s) = field_mut(v, "scaleIO") {
        scale_io(s);
    }
    if let Some(e) = field_mut(v, "ephemeral") {
        if let Some(t) = field_mut(e, "volumeClaimTemplate") {
            if let Some(spec) = ensure_object(t, "spec") {
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
        }
    }
}

fn downward_api_file(item: &mut Value) {
    if let Some(fr) = field_mut(item, "fieldRef") {
        set_default_str(fr, "apiVersion", "v1");
    }
}

fn rbd(s: &mut Value) {
    set_default_str(s, "pool", "rbd");
    set_default_str(s, "user", "admin");
    set_default_str(s, "keyring", "/etc/ceph/keyring");
}

fn azure_disk(s: &mut Value) {
    set_default(s, "cachingMode", json!("ReadWrite"));
    set_default(s, "fsType", json!("ext4"));
    set_default(s, "readOnly", json!(false));
    set_default(s, "kind", json!("Shared"));
}

fn scale_io(s: &mut Value) {
    set_default_str(s, "storageMode", "ThinProvisioned");
    set_default_str(s, "fsType", "xfs");
}

// ---------------------------------------------------------------------------
// workloads

fn replication_controller(obj: &mut Value) {
    let template_labels = obj
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .filter(|l| l.is_object())
        .cloned();
    let Some(spec) = ensure_object(obj, "spec") else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    if let Some(labels) = &template_labels {
        if !non_empty_object(spec.get("selector")) {
            if let Some(m) = spec.as_object_mut() {
                m.insert("selector".into(), labels.clone());
            }
        }
    }
    if let Some(t) = field_mut(spec, "template") {
        pod_template(t);
    }
    if let Some(labels) = template_labels {
        if let Some(meta) = ensure_object(obj, "metadata") {
            if !non_empty_object(meta.get("labels")) {
                if let Some(m) = meta.as_object_mut() {
                    m.insert("labels".into(), labels);
                }
            }
        }
    }
}

fn workload_template(spec: &mut Value) {
    if let Some(t) = ensure_object(spec, "template") {
        pod_template(t);
    }
}

fn replica_set(obj: &mut Value) {
    let Some(spec) = ensure_object(obj, "spec") else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    workload_template(spec);
}

fn deployment(obj: &mut Value) {
    let Some(spec) = ensure_object(obj, "spec") else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    if let Some(strategy) = ensure_object(spec, "strategy") {
        set_default_str(strategy, "type", "RollingUpdate");
        if str_of(strategy, "type") == "RollingUpdate" {
            if let Some(ru) = ensure_object(strategy, "rollingUpdate") {
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
        }
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    workload_template(spec);
}

fn daemon_set(obj: &mut Value) {
    let Some(spec) = ensure_object(obj, "spec") else {
        return;
    };
    if let Some(strategy) = ensure_object(spec, "updateStrategy") {
        set_default_str(strategy, "type", "RollingUpdate");
        if str_of(strategy, "type") == "RollingUpdate" {
            if let Some(ru) = ensure_object(strategy, "rollingUpdate") {
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "maxSurge", json!(0));
            }
        }
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    workload_template(spec);
}

fn stateful_set(obj: &mut Value) {
    let Some(spec) = ensure_object(obj, "spec") else {
        return;
    };
    set_default_str(spec, "podManagementPolicy", "OrderedReady");
    if let Some(strategy) = ensure_object(spec, "updateStrategy") {
        if str_of(strategy, "type").is_empty() {
            set_default_str(strategy, "type", "RollingUpdate");
            set_default(strategy, "rollingUpdate", json!({}));
        }
        if str_of(strategy, "type") == "RollingUpdate" {
            if let Some(ru) = field_mut(strategy, "rollingUpdate") {
                set_default(ru, "partition", json!(0));
            }
        }
    }
    if let Some(policy) = ensure_object(spec, "persistentVolumeClaimRetentionPolicy") {
        set_default_str(policy, "whenDeleted", "Retain");
        set_default_str(policy, "whenScaled", "Retain");
    }
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    workload_template(spec);
    each_item(spec, "volumeClaimTemplates", persistent_volume_claim);
}

/// The labels upstream's job strategy generates when it owns the selector.
fn generate_job_selector(obj: &mut Value) {
    let uid = obj
        .get("metadata")
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(spec) = field_mut(obj, "spec") else {
        return;
    };
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    if uid.is_empty() || !is_unset(spec, "selector") {
        return;
    }
    if let Some(m) = spec.as_object_mut() {
        m.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
    }
    if let Some(t) = ensure_object(spec, "template") {
        if let Some(meta) = ensure_object(t, "metadata") {
            if let Some(labels) = ensure_object(meta, "labels").and_then(Value::as_object_mut) {
                for (k, v) in [
                    ("controller-uid", uid.as_str()),
                    ("batch.kubernetes.io/controller-uid", uid.as_str()),
                    ("job-name", name.as_str()),
                    ("batch.kubernetes.io/job-name", name.as_str()),
                ] {
                    labels.entry(k.to_string()).or_insert_with(|| json!(v));
                }
            }
        }
    }
}

fn job(obj: &mut Value) {
    generate_job_selector(obj);
    let template_labels = obj
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .filter(|l| l.is_object())
        .cloned();
    let Some(spec) = ensure_object(obj, "spec") else {
        return;
    };
    job_spec(spec);
    if let Some(labels) = template_labels {
        if let Some(meta) = ensure_object(obj, "metadata") {
            if !non_empty_object(meta.get("labels")) {
                if let Some(m) = meta.as_object_mut() {
                    m.insert("labels".into(), labels);
                }
            }
        }
    }
}

fn job_spec(spec: &mut Value) {
    if is_unset(spec, "completions") && is_unset(spec, "parallelism") {
        set_default(spec, "completions", json!(1));
        set_default(spec, "parallelism", json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    if is_unset(spec, "backoffLimit") {
        let limit = if is_unset(spec, "backoffLimitPerIndex") {
            6
        } else {
            i64::from(i32::MAX)
        };
        set_default(spec, "backoffLimit", json!(limit));
    }
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    if let Some(pfp) = field_mut(spec, "podFailurePolicy") {
        each_item(pfp, "rules", |rule| {
            each_item(rule, "onPodConditions", |c| {
                set_default_str(c, "status", "True")
            });
        });
    }
    if is_unset(spec, "podReplacementPolicy") {
        let policy = if is_unset(spec, "podFailurePolicy") {
            "TerminatingOrFailed"
        } else {
            "Failed"
        };
        set_default(spec, "podReplacementPolicy", json!(policy));
    }
    set_default(spec, "manualSelector", json!(false));
    workload_template(spec);
}

fn cron_job(obj: &mut Value) {
    let Some(spec) = ensure_object(obj, "spec") else {
        return;
    };
    set_default_str(spec, "concurrencyPolicy", "Allow");
    set_default(spec, "suspend", json!(false));
    set_default(spec, "successfulJobsHistoryLimit", json!(3));
    set_default(spec, "failedJobsHistoryLimit", json!(1));
    // Only the pod template inside the job template is defaulted; the job
    // template's own spec is defaulted when a Job is created from it.
    if let Some(jt) = field_mut(spec, "jobTemplate") {
        if let Some(js) = field_mut(jt, "spec") {
            if let Some(t) = field_mut(js, "template") {
                pod_template(t);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// core/v1: everything else

fn service(obj: &mut Value) {
    let Some(spec) = ensure_object(obj, "spec") else {
        return;
    };
    set_default_str(spec, "sessionAffinity", "None");
    match str_of(spec, "sessionAffinity") {
        "None" => {
            if let Some(m) = spec.as_object_mut() {
                m.remove("sessionAffinityConfig");
            }
        }
        "ClientIP" => {
            let has_timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| c.get("timeoutSeconds"))
                .is_some_and(|t| !t.is_null());
            if !has_timeout {
                if let Some(m) = spec.as_object_mut() {
                    m.insert(
                        "sessionAffinityConfig".into(),
                        json!({"clientIP": {"timeoutSeconds": 10800}}),
                    );
                }
            }
        }
        _ => {}
    }
    set_default_str(spec, "type", "ClusterIP");
    each_item(spec, "ports", |p| {
        set_default_str(p, "protocol", "TCP");
        let target_unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if target_unset {
            if let Some(port) = p.get("port").cloned() {
                if let Some(m) = p.as_object_mut() {
                    m.insert("targetPort".into(), port);
                }
            }
        }
    });
    let svc_type = str_of(spec, "type").to_string();
    let has_external_ips = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let externally_accessible = svc_type == "LoadBalancer"
        || svc_type == "NodePort"
        || (svc_type == "ClusterIP" && has_external_ips);
    if externally_accessible {
        set_default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(svc_type.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP") {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if svc_type == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if svc_type == "ExternalName" {
        return;
    }
    // What upstream's service registry fills on create: clusterIPs mirrors
    // clusterIP, and the IP family fields of a single-stack IPv4 cluster.
    let cluster_ip = str_of(spec, "clusterIP").to_string();
    let has_cluster_ips = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !cluster_ip.is_empty() && !has_cluster_ips {
        if let Some(m) = spec.as_object_mut() {
            m.insert("clusterIPs".into(), json!([cluster_ip]));
        }
    }
    let headless = cluster_ip == "None";
    let selectorless = !non_empty_object(spec.get("selector"));
    if is_unset(spec, "ipFamilyPolicy") {
        let policy = if headless && selectorless {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        set_default(spec, "ipFamilyPolicy", json!(policy));
    }
    let families_empty = spec
        .get("ipFamilies")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if families_empty {
        let family = if cluster_ip.contains(':') {
            "IPv6"
        } else {
            "IPv4"
        };
        if let Some(m) = spec.as_object_mut() {
            m.insert("ipFamilies".into(), json!([family]));
        }
    }
}

fn namespace(obj: &mut Value) {
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !name.is_empty() {
        if let Some(meta) = ensure_object(obj, "metadata") {
            if let Some(labels) = ensure_object(meta, "labels").and_then(Value::as_object_mut) {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
    }
    if let Some(spec) = ensure_object(obj, "spec") {
        let empty = spec
            .get("finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if empty {
            if let Some(m) = spec.as_object_mut() {
                m.insert("finalizers".into(), json!(["kubernetes"]));
            }
        }
    }
    if let Some(status) = ensure_object(obj, "status") {
        set_default_str(status, "phase", "Active");
    }
}

fn persistent_volume(obj: &mut Value) {
    if let Some(spec) = ensure_object(obj, "spec") {
        set_default_str(spec, "persistentVolumeReclaimPolicy", "Retain");
        set_default(spec, "volumeMode", json!("Filesystem"));
        if let Some(s) = field_mut(spec, "hostPath") {
            set_default(s, "type", json!(""));
        }
        if let Some(s) = field_mut(spec, "iscsi") {
            set_default_str(s, "iscsiInterface", "default");
        }
        if let Some(s) = field_mut(spec, "rbd") {
            rbd(s);
        }
        if let Some(s) = field_mut(spec, "azureDisk") {
            azure_disk(s);
        }
        if let Some(s) = field_mut(spec, "scaleIO") {
            scale_io(s);
        }
    }
    if let Some(status) = ensure_object(obj, "status") {
        set_default_str(status, "phase", "Pending");
    }
}

fn persistent_volume_claim(obj: &mut Value) {
    if let Some(spec) = ensure_object(obj, "spec") {
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = ensure_object(obj, "status") {
        set_default_str(status, "phase", "Pending");
    }
}

fn endpoints(obj: &mut Value) {
    each_item(obj, "subsets", |ss| {
        each_item(ss, "ports", |p| set_default_str(p, "protocol", "TCP"));
    });
}

fn endpoint_slice(obj: &mut Value) {
    each_item(obj, "ports", |p| {
        set_default(p, "name", json!(""));
        set_default(p, "protocol", json!("TCP"));
    });
}

fn node(obj: &mut Value) {
    let Some(status) = field_mut(obj, "status") else {
        return;
    };
    if is_unset(status, "allocatable") {
        if let Some(cap) = status.get("capacity").filter(|c| c.is_object()).cloned() {
            set_default(status, "allocatable", cap);
        }
    }
}

fn limit_range(obj: &mut Value) {
    let Some(spec) = field_mut(obj, "spec") else {
        return;
    };
    each_item(spec, "limits", |item| {
        if str_of(item, "type") != "Container" {
            return;
        }
        let max = item
            .get("max")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let min = item
            .get("min")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut default = item
            .get("default")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (k, v) in max {
            default.entry(k).or_insert(v);
        }
        let mut default_request = item
            .get("defaultRequest")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (k, v) in &default {
            default_request
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        for (k, v) in min {
            default_request.entry(k).or_insert(v);
        }
        if let Some(m) = item.as_object_mut() {
            m.insert("default".into(), Value::Object(default));
            m.insert("defaultRequest".into(), Value::Object(default_request));
        }
    });
}

// ---------------------------------------------------------------------------
// other groups

fn network_policy(obj: &mut Value) {
    let Some(spec) = ensure_object(obj, "spec") else {
        return;
    };
    for direction in ["ingress", "egress"] {
        each_item(spec, direction, |rule| {
            each_item(rule, "ports", |p| set_default_str(p, "protocol", "TCP"));
        });
    }
    let empty = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if empty {
        let has_egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        let types = if has_egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        if let Some(m) = spec.as_object_mut() {
            m.insert("policyTypes".into(), types);
        }
    }
}

fn role_binding(obj: &mut Value) {
    each_item(obj, "subjects", |s| {
        let group = match str_of(s, "kind") {
            "User" | "Group" => "rbac.authorization.k8s.io",
            _ => return,
        };
        set_default_str(s, "apiGroup", group);
    });
}

// ---------------------------------------------------------------------------
// admissionregistration/v1

/// A webhook of a Mutating- or ValidatingWebhookConfiguration (v1 defaults;
/// sideEffects and admissionReviewVersions have none in v1).
fn webhook(w: &mut Value, mutating: bool) {
    set_default(w, "failurePolicy", json!("Fail"));
    set_default(w, "matchPolicy", json!("Equivalent"));
    set_default(w, "namespaceSelector", json!({}));
    set_default(w, "objectSelector", json!({}));
    set_default(w, "timeoutSeconds", json!(10));
    if mutating {
        set_default(w, "reinvocationPolicy", json!("Never"));
    }
    each_item(w, "rules", |r| set_default(r, "scope", json!("*")));
    if let Some(svc) = field_mut(w, "clientConfig").and_then(|c| field_mut(c, "service")) {
        set_default(svc, "port", json!(443));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_string_data_is_merged_into_data() {
        let mut s = json!({"metadata": {"name": "s"}, "data": {"a": "YQ==", "b": "b2xk"}, "stringData": {"b": "new", "c": "x"}});
        apply("Secret", &mut s);
        assert_eq!(s.get("stringData"), None);
        assert_eq!(s["data"], json!({"a": "YQ==", "b": "bmV3", "c": "eA=="}));
        assert_eq!(s["type"], "Opaque");
    }

    use super::*;

    fn defaulted(kind: &str, mut v: Value) -> Value {
        apply(kind, &mut v);
        v
    }

    #[test]
    fn bare_pod() {
        let got = defaulted(
            "Pod",
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "default"},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}
            }),
        );
        let want = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "containers": [{
                    "name": "c", "image": "nginx",
                    "imagePullPolicy": "Always",
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "resources": {}
                }],
                "dnsPolicy": "ClusterFirst",
                "restartPolicy": "Always",
                "securityContext": {},
                "terminationGracePeriodSeconds": 30,
                "schedulerName": "default-scheduler",
                "enableServiceLinks": true
            }
        });
        assert_eq!(got, want);
    }

    #[test]
    fn pod_details() {
        let got = defaulted(
            "Pod",
            json!({
                "spec": {
                    "hostNetwork": true,
                    "containers": [{
                        "name": "c", "image": "registry:5000/app:1.2",
                        "ports": [{"containerPort": 8080}],
                        "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "livenessProbe": {"httpGet": {"port": 8080}},
                        "readinessProbe": {"grpc": {"port": 9000}, "periodSeconds": 5},
                        "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}}
                    }],
                    "initContainers": [{"name": "i", "image": "busybox@sha256:abc"}],
                    "volumes": [
                        {"name": "a"},
                        {"name": "b", "configMap": {"name": "cm"}},
                        {"name": "c", "secret": {"secretName": "s", "defaultMode": 256}},
                        {"name": "d", "hostPath": {"path": "/x"}},
                        {"name": "e", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}
                    ],
                    "tolerations": [{"key": "k", "operator": "Exists"}]
                }
            }),
        );
        let spec = &got["spec"];
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            c["ports"][0],
            json!({"containerPort": 8080, "protocol": "TCP", "hostPort": 8080})
        );
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"},
                   "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
        assert_eq!(c["readinessProbe"]["grpc"]["service"], "");
        assert_eq!(
            c["resources"]["requests"],
            json!({"memory": "1Gi", "cpu": "1"})
        );
        assert_eq!(spec["initContainers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
        assert_eq!(spec["volumes"][2]["secret"]["defaultMode"], 256);
        assert_eq!(spec["volumes"][3]["hostPath"]["type"], "");
        assert_eq!(spec["volumes"][4]["projected"]["defaultMode"], 420);
        assert_eq!(
            spec["volumes"][4]["projected"]["sources"][0]["serviceAccountToken"]
                ["expirationSeconds"],
            3600
        );
        assert_eq!(
            spec["tolerations"],
            json!([{"key": "k", "operator": "Exists"}])
        );
    }

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("nginx"), "latest");
        assert_eq!(image_tag("nginx:latest"), "latest");
        assert_eq!(image_tag("nginx:1.25"), "1.25");
        assert_eq!(image_tag("localhost:5000/nginx"), "latest");
        assert_eq!(image_tag("localhost:5000/nginx:v1"), "v1");
        assert_eq!(image_tag("nginx@sha256:0123"), "");
        assert_eq!(image_tag("nginx:latest@sha256:0123"), "latest");
    }

    #[test]
    fn bare_deployment() {
        let got = defaulted(
            "Deployment",
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "d", "namespace": "default"},
                "spec": {
                    "selector": {"matchLabels": {"app": "d"}},
                    "template": {
                        "metadata": {"labels": {"app": "d"}},
                        "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}
                    }
                }
            }),
        );
        let want = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "d"}},
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {
                        "containers": [{
                            "name": "c", "image": "nginx:1.25",
                            "imagePullPolicy": "IfNotPresent",
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File",
                            "resources": {}
                        }],
                        "dnsPolicy": "ClusterFirst",
                        "restartPolicy": "Always",
                        "securityContext": {},
                        "terminationGracePeriodSeconds": 30,
                        "schedulerName": "default-scheduler"
                    }
                },
                "replicas": 1,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600
            }
        });
        assert_eq!(got, want);
    }

    #[test]
    fn recreate_deployment_has_no_rolling_update() {
        let got = defaulted(
            "Deployment",
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        assert_eq!(got["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn statefulset_daemonset_replicaset() {
        let sts = defaulted(
            "StatefulSet",
            json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}}),
        );
        let s = &sts["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(s["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            s["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(
            s["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(
            s["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        assert_eq!(s["volumeClaimTemplates"][0]["status"]["phase"], "Pending");
        assert_eq!(s["template"]["spec"]["restartPolicy"], "Always");

        let on_delete = defaulted(
            "StatefulSet",
            json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}),
        );
        assert_eq!(
            on_delete["spec"]["updateStrategy"],
            json!({"type": "OnDelete"})
        );

        let ds = defaulted("DaemonSet", json!({"spec": {}}));
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);

        let rs = defaulted("ReplicaSet", json!({"spec": {"replicas": 0}}));
        assert_eq!(rs["spec"]["replicas"], 0);
    }

    #[test]
    fn job_and_cronjob() {
        let j = defaulted(
            "Job",
            json!({"metadata": {"name": "pi", "uid": "u-1"},
                   "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}}}}),
        );
        let s = &j["spec"];
        assert_eq!(s["completions"], 1);
        assert_eq!(s["parallelism"], 1);
        assert_eq!(s["backoffLimit"], 6);
        assert_eq!(s["completionMode"], "NonIndexed");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(s["manualSelector"], false);
        assert_eq!(
            s["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        assert_eq!(s["template"]["metadata"]["labels"]["job-name"], "pi");
        assert_eq!(
            j["metadata"]["labels"]["batch.kubernetes.io/job-name"],
            "pi"
        );

        let p = defaulted("Job", json!({"spec": {"parallelism": 3}}));
        assert!(p["spec"].get("completions").is_none());

        let cj = defaulted(
            "CronJob",
            json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}}}),
        );
        let s = &cj["spec"];
        assert_eq!(s["concurrencyPolicy"], "Allow");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["successfulJobsHistoryLimit"], 3);
        assert_eq!(s["failedJobsHistoryLimit"], 1);
        assert_eq!(
            s["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"],
            "Always"
        );
        assert!(s["jobTemplate"]["spec"].get("backoffLimit").is_none());
    }

    #[test]
    fn service_defaults() {
        let svc = defaulted(
            "Service",
            json!({"spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}}),
        );
        assert_eq!(
            svc["spec"],
            json!({
                "selector": {"app": "a"},
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                "sessionAffinity": "None",
                "type": "ClusterIP",
                "internalTrafficPolicy": "Cluster",
                "ipFamilyPolicy": "SingleStack",
                "ipFamilies": ["IPv4"]
            })
        );
        let np = defaulted(
            "Service",
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}]}}),
        );
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(np["spec"]["ports"][0]["targetPort"], "http");
        let lb = defaulted(
            "Service",
            json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.9"}}),
        );
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(lb["spec"]["clusterIPs"], json!(["10.0.0.9"]));
        let en = defaulted(
            "Service",
            json!({"spec": {"type": "ExternalName", "externalName": "x.example.com"}}),
        );
        assert!(en["spec"].get("ipFamilies").is_none());
        assert!(en["spec"].get("internalTrafficPolicy").is_none());
        let ca = defaulted("Service", json!({"spec": {"sessionAffinity": "ClientIP"}}));
        assert_eq!(
            ca["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
    }

    #[test]
    fn other_core_kinds() {
        let ns = defaulted("Namespace", json!({"metadata": {"name": "team"}}));
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team"
        );

        assert_eq!(defaulted("Secret", json!({}))["type"], "Opaque");
        assert_eq!(
            defaulted("Secret", json!({"type": "kubernetes.io/tls"}))["type"],
            "kubernetes.io/tls"
        );

        let pv = defaulted(
            "PersistentVolume",
            json!({"spec": {"hostPath": {"path": "/d"}}}),
        );
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pv["status"]["phase"], "Pending");

        let pvc = defaulted("PersistentVolumeClaim", json!({"spec": {}}));
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");

        let ep = defaulted("Endpoints", json!({"subsets": [{"ports": [{"port": 80}]}]}));
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
        let eps = defaulted("EndpointSlice", json!({"ports": [{"port": 80}]}));
        assert_eq!(
            eps["ports"][0],
            json!({"port": 80, "name": "", "protocol": "TCP"})
        );

        let unknown = json!({"spec": {"x": 1}});
        assert_eq!(defaulted("Widget", unknown.clone()), unknown);
    }
}
