//! namespace-controller: a namespace being deleted (Terminating) is emptied:
//! every namespaced resource the apiserver serves (found through discovery)
//! is deleted in it, and once nothing is left the `kubernetes` finalizer is
//! removed through `namespaces/{name}/finalize`, which lets the apiserver
//! remove the namespace. Status conditions say what is still in the way.

use common::informers::Change;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::reflector::{ObjectRef, Store};
use std::time::Duration;

use crate::{queue, run_workers, Ctx, Started, SyncResult};

const FINALIZER: &str = "kubernetes";

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

async fn run(ctx: Ctx) {
    let namespaces = ctx.informers.get::<Namespace>();
    let q = queue();
    let mut changes = namespaces.subscribe();
    namespaces.wait_synced().await;
    for ns in namespaces.store().state() {
        if ns.metadata.deletion_timestamp.is_some() {
            q.add(ns.metadata.name.clone().unwrap_or_default());
        }
    }
    let feeder = {
        let q = q.clone();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(Change::Applied(ns)) if ns.metadata.deletion_timestamp.is_some() => {
                        q.add(ns.metadata.name.clone().unwrap_or_default())
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    _ => {}
                }
            }
        })
    };
    let (client, store) = (ctx.client.clone(), namespaces.store());
    run_workers(
        "namespace",
        q,
        ctx.settings.concurrent_namespace_syncs,
        ctx.stop.clone(),
        move |name| {
            let (client, store) = (client.clone(), store.clone());
            async move { sync(&client, &store, &name).await }
        },
    )
    .await;
    feeder.abort();
}

async fn sync(client: &kube::Client, store: &Store<Namespace>, name: &str) -> SyncResult {
    let Some(ns) = store.get(&ObjectRef::new(name)) else {
        return Ok(None);
    };
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if ns.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(None);
    }
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut remaining: Vec<String> = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), name, &ar);
            if caps.supports_operation(verbs::DELETE_COLLECTION) {
                match api
                    .delete_collection(&DeleteParams::background(), &ListParams::default())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => {}
                    Err(e) => return Err(e.into()),
                }
            } else if caps.supports_operation(verbs::DELETE) {
                for o in api.list(&ListParams::default()).await?.items {
                    if let Some(n) = o.metadata.name.as_deref() {
                        let _ = api.delete(n, &DeleteParams::background()).await;
                    }
                }
            }
            let left = api.list(&ListParams::default().limit(1)).await?;
            if !left.items.is_empty() {
                remaining.push(ar.plural.clone());
            }
        }
    }
    if !remaining.is_empty() {
        tracing::info!(
            namespace = name,
            ?remaining,
            "waiting for the namespace's content to go"
        );
        return Ok(Some(Duration::from_secs(2)));
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let mut current = api.get(name).await?;
    if let Some(spec) = current.spec.as_mut() {
        if let Some(f) = spec.finalizers.as_mut() {
            f.retain(|x| x != FINALIZER);
        }
    }
    match api
        .replace_subresource("finalize", name, &PostParams::default(), &current)
        .await
    {
        Ok(_) => {
            tracing::info!(namespace = name, "namespace emptied and finalized");
            Ok(None)
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}
