//! endpointslice-controller: for every Service with a selector, EndpointSlices
//! listing the ready, serving and terminating pods it selects, with ports
//! resolved per pod (named target ports), node names and pod references, at
//! most `--max-endpoints-per-slice` (100) endpoints per slice. Slices are
//! owned by their Service and labelled as upstream's, so kube-proxy and
//! `kubectl get endpointslices` read them as they would on any cluster.
//! The pod-selection logic here is shared with the legacy Endpoints controller.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::informers::Change;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{json, Value};

use crate::{key_of, queue, run_workers, split_key, Ctx, Started, SyncResult};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// One port of one endpoint: (name, protocol, port number).
pub type Port = (String, String, i32);

/// A pod as an endpoint of a Service.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub pod: Arc<Pod>,
    pub ip: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: Option<String>,
    pub ports: Vec<Port>,
}

/// Does `selector` (a Service's, equality-based) select these labels?
pub fn selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The pod's port for a Service port: a number as is, a name looked up among
/// the pod's container ports of the same protocol.
fn resolve(pod: &Pod, target: Option<&IntOrString>, port: i32, protocol: &str) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// The selector of a Service whose endpoints the controllers manage (None:
/// no selector, or ExternalName: leave its endpoints to whoever writes them).
pub fn managed_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// The Service's endpoints among `pods`, for addresses of `family` ("IPv4"/"IPv6").
pub fn endpoints_of(svc: &Service, pods: &[Arc<Pod>], family: &str) -> Vec<Endpoint> {
    let Some(selector) = managed_selector(svc) else {
        return Vec::new();
    };
    let ns = svc.metadata.namespace.as_deref();
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let mut out = Vec::new();
    for pod in pods {
        if pod.metadata.namespace.as_deref() != ns
            || !selects(selector, pod.metadata.labels.as_ref())
        {
            continue;
        }
        let status = pod.status.clone().unwrap_or_default();
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let ips: Vec<String> = status
            .pod_ips
            .iter()
            .flatten()
            .map(|p| p.ip.clone())
            .chain(status.pod_ip.clone())
            .collect();
        let Some(ip) = ips
            .into_iter()
            .find(|ip| (family == "IPv6") == ip.contains(':'))
        else {
            continue;
        };
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let ready = crate::pod_ready(pod);
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                let n = resolve(pod, p.target_port.as_ref(), p.port, &protocol)?;
                Some((p.name.clone().unwrap_or_default(), protocol, n))
            })
            .collect();
        out.push(Endpoint {
            pod: pod.clone(),
            ip,
            ready: publish || (ready && !terminating),
            serving: publish || ready,
            terminating: terminating && !publish,
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            ports,
        });
    }
    out.sort_by(|a, b| a.pod.metadata.name.cmp(&b.pod.metadata.name));
    out
}

/// The address families a Service's endpoints are published in.
fn families(svc: &Service) -> Vec<String> {
    let fams: Vec<String> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.clone())
        .unwrap_or_default();
    if fams.is_empty() {
        vec!["IPv4".into()]
    } else {
        fams
    }
}

/// The content of every slice the Service should have (metadata aside):
/// (addressType, ports, endpoints) as JSON, grouped by port set and chunked.
pub fn desired_slices(svc: &Service, pods: &[Arc<Pod>], max: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let families = families(svc);
    for family in &families {
        let family = family.as_str();
        let mut groups: BTreeMap<Vec<Port>, Vec<Endpoint>> = BTreeMap::new();
        for ep in endpoints_of(svc, pods, family) {
            groups.entry(ep.ports.clone()).or_default().push(ep);
        }
        for (ports, eps) in groups {
            let ports: Vec<Value> = ports
                .iter()
                .map(|(name, protocol, port)| json!({"name": name, "protocol": protocol, "port": port}))
                .collect();
            for chunk in eps.chunks(max.max(1)) {
                let endpoints: Vec<Value> = chunk
                    .iter()
                    .map(|e| {
                        let mut v = json!({
                            "addresses": [e.ip],
                            "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
                            "targetRef": {"kind": "Pod", "namespace": e.pod.metadata.namespace,
                                          "name": e.pod.metadata.name, "uid": e.pod.metadata.uid},
                        });
                        if let Some(n) = &e.node {
                            v["nodeName"] = json!(n);
                        }
                        v
                    })
                    .collect();
                out.push(json!({"addressType": family, "ports": ports, "endpoints": endpoints}));
            }
        }
    }
    // a Service with no endpoints yet still gets one (empty) slice, as upstream
    if out.is_empty() {
        let family = families.first().map_or("IPv4", String::as_str);
        out.push(json!({"addressType": family, "ports": [], "endpoints": []}));
    }
    out
}

/// The parts of an existing slice `desired_slices` speaks about, for comparison.
fn content(slice: &EndpointSlice) -> Value {
    let mut v = serde_json::to_value(slice).unwrap_or_default();
    let mut out = json!({"addressType": v["addressType"].take(), "ports": v["ports"].take(), "endpoints": v["endpoints"].take()});
    if out["ports"].is_null() {
        out["ports"] = json!([]);
    }
    if out["endpoints"].is_null() {
        out["endpoints"] = json!([]);
    }
    out
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

/// Services whose endpoints a change to `pod` may affect: those of its
/// namespace with a selector.
pub fn services_for_pod(services: &Store<Service>, pod: &Pod) -> Vec<String> {
    services
        .state()
        .iter()
        .filter(|s| s.metadata.namespace == pod.metadata.namespace && managed_selector(s).is_some())
        .map(|s| key_of(&s.metadata))
        .collect()
}

async fn run(ctx: Ctx) {
    let services = ctx.informers.get::<Service>();
    let pods = ctx.informers.get::<Pod>();
    let slices = ctx.informers.get::<EndpointSlice>();
    let q = queue();
    let (mut svc_c, mut pod_c, mut slice_c) =
        (services.subscribe(), pods.subscribe(), slices.subscribe());
    services.wait_synced().await;
    pods.wait_synced().await;
    slices.wait_synced().await;
    for s in services.store().state() {
        q.add(key_of(&s.metadata));
    }
    let feeder = {
        let (q, svc_store) = (q.clone(), services.store());
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                tokio::select! {
                    c = svc_c.recv() => match c {
                        Ok(Change::Applied(s) | Change::Deleted(s)) => q.add(key_of(&s.metadata)),
                        Err(RecvError::Closed) => return,
                        Err(RecvError::Lagged(_)) => svc_store.state().iter().for_each(|s| q.add(key_of(&s.metadata))),
                    },
                    c = pod_c.recv() => match c {
                        Ok(Change::Applied(p) | Change::Deleted(p)) => services_for_pod(&svc_store, &p).into_iter().for_each(|k| q.add(k)),
                        Err(RecvError::Closed) => return,
                        Err(RecvError::Lagged(_)) => svc_store.state().iter().for_each(|s| q.add(key_of(&s.metadata))),
                    },
                    c = slice_c.recv() => match c {
                        Ok(Change::Applied(s) | Change::Deleted(s)) => {
                            let labels = s.metadata.labels.clone().unwrap_or_default();
                            if labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY) {
                                if let Some(svc) = labels.get(SERVICE_NAME_LABEL) {
                                    q.add(format!("{}/{svc}", s.metadata.namespace.as_deref().unwrap_or_default()));
                                }
                            }
                        }
                        Err(RecvError::Closed) => return,
                        Err(RecvError::Lagged(_)) => svc_store.state().iter().for_each(|s| q.add(key_of(&s.metadata))),
                    },
                }
            }
        })
    };
    let (client, svc_store, pod_store, slice_store) = (
        ctx.client.clone(),
        services.store(),
        pods.store(),
        slices.store(),
    );
    let max = ctx.settings.max_endpoints_per_slice;
    run_workers(
        "endpointslice",
        q,
        ctx.settings.concurrent_service_endpoint_syncs,
        ctx.stop.clone(),
        move |key| {
            let (client, s, p, e) = (
                client.clone(),
                svc_store.clone(),
                pod_store.clone(),
                slice_store.clone(),
            );
            async move { sync(&client, &s, &p, &e, &key, max).await }
        },
    )
    .await;
    feeder.abort();
}

async fn sync(
    client: &kube::Client,
    services: &Store<Service>,
    pods: &Store<Pod>,
    slices: &Store<EndpointSlice>,
    key: &str,
    max: usize,
) -> SyncResult {
    let (ns, name) = split_key(key);
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let mut existing: Vec<Arc<EndpointSlice>> = slices
        .state()
        .into_iter()
        .filter(|s| {
            let l = s.metadata.labels.clone().unwrap_or_default();
            s.metadata.namespace.as_deref() == Some(ns)
                && l.get(SERVICE_NAME_LABEL).map(String::as_str) == Some(name)
                && l.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
        })
        .collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let svc = services.get(&ObjectRef::new(name).within(ns));
    if svc
        .as_deref()
        .is_some_and(|s| managed_selector(s).is_none())
    {
        // a Service without a selector gets no slices from this controller,
        // and keeps those others write (the apiserver's `kubernetes`), as upstream
        return Ok(None);
    }
    let desired = match svc.as_deref() {
        Some(s) if managed_selector(s).is_some() => desired_slices(s, &pods.state(), max),
        // gone, or no longer ours to manage: its slices go
        _ => Vec::new(),
    };
    // slices already right stay untouched; the rest are rewritten in place,
    // created, or deleted
    let mut todo: Vec<Value> = Vec::new();
    let mut spare: Vec<Arc<EndpointSlice>> = Vec::new();
    let mut matched = BTreeSet::new();
    for d in desired {
        // compare in the shape the server hands back (through the typed struct)
        let d = content(&serde_json::from_value::<EndpointSlice>(d)?);
        match existing
            .iter()
            .enumerate()
            .find(|(i, e)| !matched.contains(i) && content(e) == d)
        {
            Some((i, _)) => {
                matched.insert(i);
            }
            None => todo.push(d),
        }
    }
    for (i, e) in existing.iter().enumerate() {
        if !matched.contains(&i) {
            spare.push(e.clone());
        }
    }
    let Some(svc) = svc else {
        for s in spare {
            delete(&api, &s).await?;
        }
        return Ok(None);
    };
    let mut labels: BTreeMap<String, String> = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), name.into());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let owner = json!([{"apiVersion": "v1", "kind": "Service", "name": name,
                        "uid": svc.metadata.uid, "controller": true, "blockOwnerDeletion": true}]);
    let mut spare = spare.into_iter();
    for d in todo {
        let mut obj = d;
        obj["apiVersion"] = json!("discovery.k8s.io/v1");
        obj["kind"] = json!("EndpointSlice");
        match spare.next() {
            Some(old) => {
                obj["metadata"] = json!({"name": old.metadata.name, "namespace": ns,
                    "resourceVersion": old.metadata.resource_version,
                    "labels": labels, "ownerReferences": owner});
                let slice: EndpointSlice = serde_json::from_value(obj)?;
                api.replace(
                    old.metadata.name.as_deref().unwrap_or_default(),
                    &PostParams::default(),
                    &slice,
                )
                .await?;
            }
            None => {
                obj["metadata"] = json!({"generateName": format!("{name}-"), "namespace": ns,
                    "labels": labels, "ownerReferences": owner});
                let slice: EndpointSlice = serde_json::from_value(obj)?;
                api.create(&PostParams::default(), &slice).await?;
            }
        }
    }
    for s in spare {
        delete(&api, &s).await?;
    }
    Ok(None)
}

async fn delete(api: &Api<EndpointSlice>, s: &EndpointSlice) -> anyhow::Result<()> {
    match api
        .delete(
            s.metadata.name.as_deref().unwrap_or_default(),
            &DeleteParams::default(),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, labels: Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "d", "uid": format!("u-{name}"), "labels": labels},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                         "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"phase": "Running", "podIP": ip,
                           "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
            }))
            .expect("pod"),
        )
    }

    fn svc() -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "d", "uid": "s1"},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }))
        .expect("svc")
    }

    #[test]
    fn endpoints_follow_selector_readiness_and_named_ports() {
        let pods = vec![
            pod("a", "10.0.0.1", true, json!({"app": "web"})),
            pod("b", "10.0.0.2", false, json!({"app": "web"})),
            pod("c", "10.0.0.3", true, json!({"app": "other"})),
        ];
        let slices = desired_slices(&svc(), &pods, 100);
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(s["addressType"], "IPv4");
        assert_eq!(
            s["ports"],
            json!([{"name": "http", "protocol": "TCP", "port": 8080}])
        );
        let eps = s["endpoints"].as_array().expect("endpoints");
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0]["addresses"], json!(["10.0.0.1"]));
        assert_eq!(
            eps[0]["conditions"],
            json!({"ready": true, "serving": true, "terminating": false})
        );
        assert_eq!(eps[1]["conditions"]["ready"], false);
        assert_eq!(eps[0]["nodeName"], "n1");
        assert_eq!(eps[0]["targetRef"]["name"], "a");
    }

    #[test]
    fn chunks_of_max_and_terminating() {
        let mut pods: Vec<Arc<Pod>> = (0..5)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.0.0.{i}"),
                    true,
                    json!({"app": "web"}),
                )
            })
            .collect();
        let mut gone = (*pods[0]).clone();
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        pods[0] = Arc::new(gone);
        let slices = desired_slices(&svc(), &pods, 2);
        assert_eq!(slices.len(), 3);
        assert_eq!(
            slices[0]["endpoints"][0]["conditions"],
            json!({"ready": false, "serving": true, "terminating": true})
        );
        let mut no_selector = svc();
        if let Some(s) = no_selector.spec.as_mut() {
            s.selector = None;
        }
        assert!(endpoints_of(&no_selector, &pods, "IPv4").is_empty());
        let placeholder = desired_slices(&svc(), &[], 100);
        assert_eq!(
            placeholder,
            vec![json!({"addressType": "IPv4", "ports": [], "endpoints": []})]
        );
    }
}
