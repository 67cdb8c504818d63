//! root-ca-certificate-publisher-controller: every active namespace has a
//! `kube-root-ca.crt` ConfigMap holding the cluster's CA bundle
//! (`--root-ca-file`), which service-account token volumes mount as ca.crt;
//! one deleted or changed is put back.

use std::collections::BTreeMap;

use common::informers::Change;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;

use crate::{queue, run_workers, Ctx, Started, SyncResult};

pub const NAME: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

/// The ConfigMap a namespace should have.
pub fn desired(ns: &str, ca: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(ns.into()),
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/description".to_string(),
                DESCRIPTION.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("ca.crt".to_string(), ca.to_string())])),
        ..Default::default()
    }
}

async fn run(ctx: Ctx) {
    let Some(ca) = ctx.settings.root_ca.clone() else {
        tracing::info!("no --root-ca-file: not publishing kube-root-ca.crt");
        let mut stop = ctx.stop.clone();
        common::stopped(&mut stop).await;
        return;
    };
    let namespaces = ctx.informers.get::<Namespace>();
    let maps = ctx.informers.get::<ConfigMap>();
    let q = queue();
    let (mut ns_changes, mut cm_changes) = (namespaces.subscribe(), maps.subscribe());
    namespaces.wait_synced().await;
    maps.wait_synced().await;
    for ns in namespaces.store().state() {
        if let Some(n) = &ns.metadata.name {
            q.add(n.clone());
        }
    }
    let feeder = {
        let q = q.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    c = ns_changes.recv() => match c {
                        Ok(Change::Applied(ns)) => q.add(ns.metadata.name.clone().unwrap_or_default()),
                        Ok(Change::Deleted(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        Err(_) => {}
                    },
                    c = cm_changes.recv() => match c {
                        Ok(Change::Applied(cm) | Change::Deleted(cm)) if cm.metadata.name.as_deref() == Some(NAME) => {
                            q.add(cm.metadata.namespace.clone().unwrap_or_default())
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        _ => {}
                    },
                }
            }
        })
    };
    let (client, ns_store, cm_store) = (ctx.client.clone(), namespaces.store(), maps.store());
    run_workers(
        "root-ca-cert-publisher",
        q,
        1,
        ctx.stop.clone(),
        move |ns| {
            let (client, ns_store, cm_store, ca) = (
                client.clone(),
                ns_store.clone(),
                cm_store.clone(),
                ca.clone(),
            );
            async move { sync(&client, &ns_store, &cm_store, &ca, &ns).await }
        },
    )
    .await;
    feeder.abort();
}

async fn sync(
    client: &kube::Client,
    namespaces: &kube::runtime::reflector::Store<Namespace>,
    maps: &kube::runtime::reflector::Store<ConfigMap>,
    ca: &str,
    ns: &str,
) -> SyncResult {
    let Some(namespace) = namespaces.get(&ObjectRef::new(ns)) else {
        return Ok(None);
    };
    let terminating = namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(None);
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let want = desired(ns, ca);
    match maps.get(&ObjectRef::new(NAME).within(ns)) {
        None => match api.create(&PostParams::default(), &want).await {
            Ok(_) => Ok(None),
            // the cache was behind, or the namespace started terminating
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => Ok(None),
            Err(e) => Err(e.into()),
        },
        Some(cm) if cm.data != want.data => {
            let mut fixed = (*cm).clone();
            fixed.data = want.data;
            let mut ann = fixed.metadata.annotations.take().unwrap_or_default();
            ann.insert("kubernetes.io/description".into(), DESCRIPTION.into());
            fixed.metadata.annotations = Some(ann);
            match api.replace(NAME, &PostParams::default(), &fixed).await {
                Ok(_) => Ok(None),
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                    Ok(Some(std::time::Duration::from_secs(1)))
                }
                Err(e) => Err(e.into()),
            }
        }
        Some(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configmap_holds_the_bundle() {
        let cm = desired("team-a", "PEM");
        assert_eq!(cm.metadata.name.as_deref(), Some("kube-root-ca.crt"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            cm.data
                .as_ref()
                .and_then(|d| d.get("ca.crt"))
                .map(String::as_str),
            Some("PEM")
        );
    }
}
