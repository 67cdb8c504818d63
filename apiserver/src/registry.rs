//! The table of resources this apiserver serves: names, scope, storage prefix,
//! subresources and the per-resource strategy switches the generic store reads

/// A served resource (one group/version/plural).
#[derive(Debug)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Folder under the etcd prefix, as upstream (`services/specs`, `minions`, ...).
    pub storage: &'static str,
    /// Subresources beyond the object itself: "status", "scale", "binding", "finalize", ...
    pub subresources: &'static [&'static str],
    /// metadata.generation is bumped when anything but metadata and status changes.
    pub tracks_generation: bool,
    /// Extra field selector labels beyond metadata.name / metadata.namespace.
    pub fields: &'static [&'static str],
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];
const API_EXTENSIONS: &[&str] = &["api-extensions"];

macro_rules! res {
    ($g:expr, $v:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, $short:expr, $cat:expr, $storage:expr, $sub:expr, $gen:expr, $fields:expr) => {
        Resource {
            group: $g,
            version: $v,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            storage: $storage,
            subresources: $sub,
            tracks_generation: $gen,
            fields: $fields,
        }
    };
}

pub static RESOURCES: &[Resource] = &[
    res!(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        NONE,
        "namespaces",
        &["status", "finalize"],
        false,
        &["status.phase"]
    ),
    res!(
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        ALL,
        "pods",
        &[
            "status",
            "binding",
            "eviction",
            "log",
            "exec",
            "attach",
            "portforward"
        ],
        false,
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName"
        ]
    ),
    res!(
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        ALL,
        "services/specs",
        &["status"],
        false,
        &["spec.clusterIP", "spec.type"]
    ),
    res!(
        "",
        "v1",
        "resourcequotas",
        "resourcequota",
        "ResourceQuota",
        true,
        &["quota"],
        NONE,
        "resourcequotas",
        &["status"],
        false,
        NONE
    ),
    res!(
        "",
        "v1",
        "limitranges",
        "limitrange",
        "LimitRange",
        true,
        &["limits"],
        NONE,
        "limitranges",
        NONE,
        false,
        NONE
    ),
    res!(
        "",
        "v1",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        NONE,
        "services/endpoints",
        NONE,
        false,
        NONE
    ),
    res!(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        NONE,
        "configmaps",
        NONE,
        false,
        NONE
    ),
    res!(
        "",
        "v1",
        "secrets",
        "secret",
        "Secret",
        true,
        NONE,
        NONE,
        "secrets",
        NONE,
        false,
        &["type"]
    ),
    res!(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        NONE,
        "serviceaccounts",
        &["token"],
        false,
        NONE
    ),
    res!(
        "",
        "v1",
        "nodes",
        "node",
        "Node",
        false,
        &["no"],
        NONE,
        "minions",
        &["status"],
        false,
        &["spec.unschedulable"]
    ),
    res!(
        "",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        NONE,
        "events",
        NONE,
        false,
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type"
        ]
    ),
    res!(
        "",
        "v1",
        "persistentvolumes",
        "persistentvolume",
        "PersistentVolume",
        false,
        &["pv"],
        NONE,
        "persistentvolumes",
        &["status"],
        false,
        NONE
    ),
    res!(
        "",
        "v1",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        NONE,
        "persistentvolumeclaims",
        &["status"],
        false,
        NONE
    ),
    res!(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        ALL,
        "deployments",
        &["status", "scale"],
        true,
        NONE
    ),
    res!(
        "apps",
        "v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        &["rs"],
        ALL,
        "replicasets",
        &["status", "scale"],
        true,
        &["status.replicas"]
    ),
    res!(
        "apps",
        "v1",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
        &["sts"],
        ALL,
        "statefulsets",
        &["status", "scale"],
        true,
        NONE
    ),
    res!(
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        &["ds"],
        ALL,
        "daemonsets",
        &["status"],
        true,
        NONE
    ),
    res!(
        "batch",
        "v1",
        "jobs",
        "job",
        "Job",
        true,
        NONE,
        ALL,
        "jobs",
        &["status"],
        true,
        &["status.successful"]
    ),
    res!(
        "batch",
        "v1",
        "cronjobs",
        "cronjob",
        "CronJob",
        true,
        &["cj"],
        ALL,
        "cronjobs",
        &["status"],
        true,
        NONE
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        NONE,
        NONE,
        "roles",
        NONE,
        false,
        NONE
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        NONE,
        NONE,
        "rolebindings",
        NONE,
        false,
        NONE
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        NONE,
        NONE,
        "clusterroles",
        NONE,
        false,
        NONE
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        NONE,
        NONE,
        "clusterrolebindings",
        NONE,
        false,
        NONE
    ),
    res!(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        NONE,
        NONE,
        "leases",
        NONE,
        false,
        NONE
    ),
    res!(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "storageclass",
        "StorageClass",
        false,
        &["sc"],
        NONE,
        "storageclasses",
        NONE,
        false,
        NONE
    ),
    res!(
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "priorityclass",
        "PriorityClass",
        false,
        &["pc"],
        NONE,
        "priorityclasses",
        NONE,
        false,
        NONE
    ),
    res!(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        NONE,
        NONE,
        "endpointslices",
        NONE,
        false,
        NONE
    ),
    res!(
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "certificatesigningrequest",
        "CertificateSigningRequest",
        false,
        &["csr"],
        NONE,
        "certificatesigningrequests",
        &["status", "approval"],
        false,
        &["spec.signerName"]
    ),
    res!(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        "MutatingWebhookConfiguration",
        false,
        NONE,
        API_EXTENSIONS,
        "mutatingwebhookconfigurations",
        NONE,
        false,
        NONE
    ),
    res!(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        "ValidatingWebhookConfiguration",
        false,
        NONE,
        API_EXTENSIONS,
        "validatingwebhookconfigurations",
        NONE,
        false,
        NONE
    ),
    res!(
        "events.k8s.io",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        NONE,
        "events",
        NONE,
        false,
        &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "reportingController",
            "type"
        ]
    ),
];

/// The groups in the order discovery lists them (core first).
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn group_versions(group: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        if !out.contains(&r.version) {
            out.push(r.version);
        }
    }
    out
}

impl Resource {
    /// `pods`, or `deployments.apps` as upstream's messages name a resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn has_sub(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// Field selector labels this resource supports.
    pub fn supports_field(&self, f: &str) -> bool {
        f == "metadata.name" || f == "metadata.namespace" || self.fields.contains(&f)
    }

    /// Key prefix of every object of this resource (with trailing slash).
    pub fn prefix(&self, etcd_prefix: &str) -> String {
        format!("{}/{}/", etcd_prefix, self.storage)
    }

    /// Key prefix of the objects in one namespace, or of all when `ns` is None.
    pub fn list_prefix(&self, etcd_prefix: &str, ns: Option<&str>) -> String {
        match (self.namespaced, ns) {
            (true, Some(ns)) => format!("{}{}/", self.prefix(etcd_prefix), ns),
            _ => self.prefix(etcd_prefix),
        }
    }

    pub fn key(&self, etcd_prefix: &str, ns: Option<&str>, name: &str) -> String {
        match (self.namespaced, ns) {
            (true, Some(ns)) => format!("{}{}/{}", self.prefix(etcd_prefix), ns, name),
            _ => format!("{}{}", self.prefix(etcd_prefix), name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_upstream_layout() {
        let pods = lookup("", "v1", "pods").expect("pods");
        assert_eq!(
            pods.key("/registry", Some("default"), "web-1"),
            "/registry/pods/default/web-1"
        );
        let nodes = lookup("", "v1", "nodes").expect("nodes");
        assert_eq!(nodes.key("/registry", None, "n1"), "/registry/minions/n1");
        let svc = lookup("", "v1", "services").expect("services");
        assert_eq!(
            svc.list_prefix("/registry", Some("ns")),
            "/registry/services/specs/ns/"
        );
        assert_eq!(
            lookup("apps", "v1", "deployments").map(|r| r.qualified()),
            Some("deployments.apps".into())
        );
    }

    #[test]
    fn storage_prefixes_do_not_nest() {
        // a list over one resource's prefix must never include another resource's keys
        for a in RESOURCES {
            for b in RESOURCES {
                if a.storage != b.storage {
                    assert!(
                        !b.prefix("/r").starts_with(&a.prefix("/r")),
                        "{} inside {}",
                        b.storage,
                        a.storage
                    );
                }
            }
        }
    }
}
