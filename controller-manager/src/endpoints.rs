//! endpoints-controller: the legacy core/v1 Endpoints of every Service with a
//! selector, kept in step with the same pod selection as the EndpointSlices:
//! ready pods under `addresses`, not-ready ones under `notReadyAddresses`,
//! terminating ones left out (unless publishNotReadyAddresses), one subset per
//! distinct port set.

use std::collections::BTreeMap;

use common::informers::Change;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{json, Value};

use crate::endpointslice::{endpoints_of, managed_selector, services_for_pod, Port};
use crate::{key_of, queue, run_workers, split_key, Ctx, Started, SyncResult};

/// The subsets of the Service's Endpoints object.
pub fn desired_subsets(svc: &Service, pods: &[std::sync::Arc<Pod>]) -> Value {
    let mut groups: BTreeMap<Vec<Port>, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    let mut eps = endpoints_of(svc, pods, "IPv4");
    eps.sort_by(|a, b| a.ip.cmp(&b.ip));
    for e in eps {
        if e.terminating || e.ports.is_empty() {
            continue;
        }
        let mut addr = json!({"ip": e.ip, "targetRef": {"kind": "Pod", "namespace": e.pod.metadata.namespace,
                              "name": e.pod.metadata.name, "uid": e.pod.metadata.uid}});
        if let Some(n) = &e.node {
            addr["nodeName"] = json!(n);
        }
        let g = groups.entry(e.ports.clone()).or_default();
        if e.ready {
            g.0.push(addr);
        } else {
            g.1.push(addr);
        }
    }
    let subsets: Vec<Value> = groups
        .into_iter()
        .map(|(ports, (ready, not_ready))| {
            let ports: Vec<Value> = ports
                .iter()
                .map(|(name, protocol, port)| json!({"name": name, "protocol": protocol, "port": port}))
                .collect();
            let mut s = json!({"ports": ports});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            s
        })
        .collect();
    json!(subsets)
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

async fn run(ctx: Ctx) {
    let services = ctx.informers.get::<Service>();
    let pods = ctx.informers.get::<Pod>();
    let endpoints = ctx.informers.get::<Endpoints>();
    let q = queue();
    let (mut svc_c, mut pod_c, mut ep_c) = (
        services.subscribe(),
        pods.subscribe(),
        endpoints.subscribe(),
    );
    services.wait_synced().await;
    pods.wait_synced().await;
    endpoints.wait_synced().await;
    for s in services.store().state() {
        q.add(key_of(&s.metadata));
    }
    let feeder = {
        let (q, svc_store) = (q.clone(), services.store());
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            let all = |q: &std::sync::Arc<common::workqueue::WorkQueue<String>>| {
                svc_store
                    .state()
                    .iter()
                    .for_each(|s| q.add(key_of(&s.metadata)))
            };
            loop {
                tokio::select! {
                    c = svc_c.recv() => match c {
                        Ok(Change::Applied(s) | Change::Deleted(s)) => q.add(key_of(&s.metadata)),
                        Err(RecvError::Closed) => return,
                        Err(RecvError::Lagged(_)) => all(&q),
                    },
                    c = pod_c.recv() => match c {
                        Ok(Change::Applied(p) | Change::Deleted(p)) => services_for_pod(&svc_store, &p).into_iter().for_each(|k| q.add(k)),
                        Err(RecvError::Closed) => return,
                        Err(RecvError::Lagged(_)) => all(&q),
                    },
                    c = ep_c.recv() => match c {
                        Ok(Change::Applied(e) | Change::Deleted(e)) => q.add(key_of(&e.metadata)),
                        Err(RecvError::Closed) => return,
                        Err(RecvError::Lagged(_)) => all(&q),
                    },
                }
            }
        })
    };
    let (client, svc_store, pod_store, ep_store) = (
        ctx.client.clone(),
        services.store(),
        pods.store(),
        endpoints.store(),
    );
    run_workers(
        "endpoint",
        q,
        ctx.settings.concurrent_endpoint_syncs,
        ctx.stop.clone(),
        move |key| {
            let (client, s, p, e) = (
                client.clone(),
                svc_store.clone(),
                pod_store.clone(),
                ep_store.clone(),
            );
            async move { sync(&client, &s, &p, &e, &key).await }
        },
    )
    .await;
    feeder.abort();
}

async fn sync(
    client: &kube::Client,
    services: &Store<Service>,
    pods: &Store<Pod>,
    endpoints: &Store<Endpoints>,
    key: &str,
) -> SyncResult {
    let (ns, name) = split_key(key);
    let api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    let current = endpoints.get(&ObjectRef::new(name).within(ns));
    let svc = services.get(&ObjectRef::new(name).within(ns));
    let Some(svc) = svc else {
        // the Service is gone: so are its Endpoints (the apiserver's own
        // `kubernetes` Endpoints belong to a Service that stays)
        if current.is_some() {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(None);
    };
    if managed_selector(&svc).is_none() {
        return Ok(None);
    }
    let subsets = desired_subsets(&svc, &pods.state());
    let mut obj = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns, "labels": svc.metadata.labels.clone().unwrap_or_default()},
        "subsets": subsets});
    let want: Endpoints = serde_json::from_value(obj.clone())?;
    match current {
        Some(cur) => {
            let same = cur.subsets.clone().unwrap_or_default()
                == want.subsets.clone().unwrap_or_default()
                && cur.metadata.labels.clone().unwrap_or_default()
                    == want.metadata.labels.clone().unwrap_or_default();
            if same {
                return Ok(None);
            }
            obj["metadata"]["resourceVersion"] = json!(cur.metadata.resource_version);
            let e: Endpoints = serde_json::from_value(obj)?;
            api.replace(name, &PostParams::default(), &e).await?;
        }
        None => match api.create(&PostParams::default(), &want).await {
            Ok(_) => {}
            // our cache is behind: the next event brings it and we compare again
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Ok(Some(std::time::Duration::from_millis(200)))
            }
            Err(e) => return Err(e.into()),
        },
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn ready_and_not_ready_addresses() {
        let pod = |name: &str, ip: &str, ready: &str| -> Arc<Pod> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": "d", "labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                    "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]},
                }))
                .expect("pod"),
            )
        };
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "d"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }))
        .expect("svc");
        let subsets = desired_subsets(
            &svc,
            &[pod("a", "10.0.0.2", "True"), pod("b", "10.0.0.1", "False")],
        );
        assert_eq!(subsets.as_array().map(Vec::len), Some(1));
        assert_eq!(subsets[0]["addresses"][0]["ip"], "10.0.0.2");
        assert_eq!(subsets[0]["notReadyAddresses"][0]["ip"], "10.0.0.1");
        assert_eq!(
            subsets[0]["ports"],
            json!([{"name": "", "protocol": "TCP", "port": 8080}])
        );
    }
}
