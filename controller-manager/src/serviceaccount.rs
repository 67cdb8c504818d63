//! serviceaccount-controller: every active namespace has a `default`
//! ServiceAccount; one deleted is created again.

use common::informers::Change;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;

use crate::{queue, run_workers, Ctx, Started, SyncResult};

const DEFAULT: &str = "default";

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

async fn run(ctx: Ctx) {
    let namespaces = ctx.informers.get::<Namespace>();
    let accounts = ctx.informers.get::<ServiceAccount>();
    let q = queue();
    let (mut ns_changes, mut sa_changes) = (namespaces.subscribe(), accounts.subscribe());
    namespaces.wait_synced().await;
    accounts.wait_synced().await;
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
                    c = sa_changes.recv() => match c {
                        Ok(Change::Deleted(sa)) if sa.metadata.name.as_deref() == Some(DEFAULT) => {
                            q.add(sa.metadata.namespace.clone().unwrap_or_default())
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        _ => {}
                    },
                }
            }
        })
    };
    let (client, ns_store, sa_store) = (ctx.client.clone(), namespaces.store(), accounts.store());
    let workers = ctx.settings.concurrent_serviceaccount_syncs;
    run_workers("serviceaccount", q, workers, ctx.stop.clone(), move |ns| {
        let (client, ns_store, sa_store) = (client.clone(), ns_store.clone(), sa_store.clone());
        async move { sync(&client, &ns_store, &sa_store, &ns).await }
    })
    .await;
    feeder.abort();
}

async fn sync(
    client: &kube::Client,
    namespaces: &kube::runtime::reflector::Store<Namespace>,
    accounts: &kube::runtime::reflector::Store<ServiceAccount>,
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
    if accounts.get(&ObjectRef::new(DEFAULT).within(ns)).is_some() {
        return Ok(None);
    }
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa = ServiceAccount {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(DEFAULT.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => {
            tracing::info!(namespace = ns, "created the default ServiceAccount");
            Ok(None)
        }
        // the cache was behind, or the namespace started terminating: nothing to do
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => Ok(None),
        Err(e) => Err(e.into()),
    }
}
