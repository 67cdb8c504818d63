//! Writes whose answer the writer only needs the metadata of: the apiserver is
//! asked for a PartialObjectMetadata (`as=PartialObjectMetadata` in Accept,
//! which upstream honours for create and patch answers too), so neither side
//! spends time on a whole object nobody reads.

use http::header::{HeaderValue, ACCEPT};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::Serialize;

/// Metadata only, or the whole object from a server that cannot send less.
const METADATA_ONLY: &str =
    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";

/// What a writer reads of the answer: the written object's identity. The
/// rest of its metadata (managedFields above all) is skipped unparsed.
#[derive(serde::Deserialize)]
struct Answer {
    #[serde(default)]
    metadata: Identity,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Identity {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
}

async fn send(client: &Client, mut req: http::Request<Vec<u8>>) -> kube::Result<ObjectMeta> {
    req.headers_mut()
        .insert(ACCEPT, HeaderValue::from_static(METADATA_ONLY));
    let Answer { metadata: m } = client.request(req).await?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        generation: m.generation,
        ..Default::default()
    })
}

/// POST `obj` to `api`'s collection; the created object's name, namespace,
/// uid, resourceVersion and generation.
pub async fn create<K: kube::Resource + Serialize>(
    client: &Client,
    api: &Api<K>,
    pp: &PostParams,
    obj: &K,
) -> kube::Result<ObjectMeta> {
    let body = serde_json::to_vec(obj).map_err(kube::Error::SerdeError)?;
    let req = kube::core::Request::new(api.resource_url())
        .create(pp, body)
        .map_err(kube::Error::BuildRequest)?;
    send(client, req).await
}

/// PATCH `name` in `api` (its `subresource` when given); the result's
/// identity, as `create`.
pub async fn patch<K: kube::Resource, P: Serialize + std::fmt::Debug>(
    client: &Client,
    api: &Api<K>,
    name: &str,
    subresource: Option<&str>,
    pp: &PatchParams,
    patch: &Patch<P>,
) -> kube::Result<ObjectMeta> {
    let r = kube::core::Request::new(api.resource_url());
    let req = match subresource {
        Some(sub) => r.patch_subresource(sub, name, pp, patch),
        None => r.patch(name, pp, patch),
    }
    .map_err(kube::Error::BuildRequest)?;
    send(client, req).await
}

/// Merge-patch the status of `name`; an object already gone is no error (its
/// status has nobody left to read it).
pub async fn merge_status<K: kube::Resource>(
    client: &Client,
    api: &Api<K>,
    name: &str,
    patch: &serde_json::Value,
) -> kube::Result<()> {
    let pp = PatchParams::default();
    match self::patch(client, api, name, Some("status"), &pp, &Patch::Merge(patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
