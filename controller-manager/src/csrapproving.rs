//! certificatesigningrequest-approving-controller (csrapproving): approves
//! kubelet client certificate requests (signer
//! kubernetes.io/kube-apiserver-client-kubelet, CN system:node:NAME, O
//! system:nodes, no SANs, usages digital signature + client auth [+ key
//! encipherment]) when a SubjectAccessReview says the requestor may `create`
//! `certificatesigningrequests/nodeclient` (a new node, e.g. a bootstrap
//! token) or, for a node renewing its own certificate,
//! `certificatesigningrequests/selfnodeclient`; the Approved condition
//! (reason AutoApproved) goes through the /approval subresource. Anything
//! else is left for a person or another approver, as upstream.

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::csr::{self, Request};
use crate::{queue, run_workers, split_key, Ctx, Started, SyncResult};

/// A kind of request the approver knows, the permission that approves it,
/// and the message of its approval.
#[derive(Debug, PartialEq, Eq)]
pub struct Recognizer {
    pub subresource: &'static str,
    pub message: &'static str,
}

pub const SELF_NODE_CLIENT: Recognizer = Recognizer {
    subresource: "selfnodeclient",
    message: "Auto approving self kubelet client certificate after SubjectAccessReview.",
};

pub const NODE_CLIENT: Recognizer = Recognizer {
    subresource: "nodeclient",
    message: "Auto approving kubelet client certificate after SubjectAccessReview.",
};

/// The recognizers that match the request, in the order they are tried: a
/// kubelet client certificate is a `nodeclient` request, and also a
/// `selfnodeclient` one when the requestor is the node it names.
pub fn recognize(csr: &CertificateSigningRequest, req: &Request) -> Vec<&'static Recognizer> {
    if csr.spec.signer_name != csr::KUBELET_CLIENT {
        return Vec::new();
    }
    let usages = csr.spec.usages.clone().unwrap_or_default();
    if let Err(e) = csr::validate_kubelet_client(req, &usages) {
        tracing::debug!(csr = ?csr.metadata.name, reason = %e, "not a kubelet client certificate request");
        return Vec::new();
    }
    if csr.spec.username.as_deref() == Some(req.common_name.as_str()) {
        vec![&SELF_NODE_CLIENT, &NODE_CLIENT]
    } else {
        vec![&NODE_CLIENT]
    }
}

/// The review that asks whether the CSR's requestor may `create` the subresource.
pub fn review(csr: &CertificateSigningRequest, subresource: &str) -> serde_json::Value {
    let s = &csr.spec;
    json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": s.username,
            "groups": s.groups,
            "uid": s.uid,
            "extra": s.extra,
            "resourceAttributes": {
                "group": "certificates.k8s.io",
                "resource": "certificatesigningrequests",
                "verb": "create",
                "subresource": subresource,
                "version": "*",
            },
        },
    })
}

/// The CSR with the Approved condition added.
pub fn approved(csr: &CertificateSigningRequest, message: &str) -> CertificateSigningRequest {
    let mut out = csr.clone();
    out.status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("AutoApproved".into()),
            message: Some(message.into()),
            last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        });
    out
}

/// Does the approver still have something to decide?
pub fn undecided(csr: &CertificateSigningRequest) -> bool {
    !csr::is_issued(csr)
        && !csr::has_condition(csr, "Approved")
        && !csr::has_condition(csr, "Denied")
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

async fn run(ctx: Ctx) {
    let csrs = ctx.informers.get::<CertificateSigningRequest>();
    let q = queue();
    let feeder = csr::feed(q.clone(), &csrs);
    csrs.wait_synced().await;
    let (client, store) = (ctx.client.clone(), csrs.store());
    run_workers("csrapproving", q, 5, ctx.stop.clone(), move |key| {
        let (client, store) = (client.clone(), store.clone());
        async move { sync(&client, &store, &key).await }
    })
    .await;
    feeder.abort();
}

async fn authorize(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
    subresource: &str,
) -> anyhow::Result<bool> {
    let sar: SubjectAccessReview = serde_json::from_value(review(csr, subresource))?;
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let got = api.create(&PostParams::default(), &sar).await?;
    Ok(got.status.is_some_and(|s| s.allowed))
}

async fn sync(
    client: &kube::Client,
    store: &Store<CertificateSigningRequest>,
    key: &str,
) -> SyncResult {
    let name = split_key(key).1;
    let Some(obj) = store.get(&ObjectRef::new(name)) else {
        return Ok(None);
    };
    if !undecided(&obj) {
        return Ok(None);
    }
    let req = csr::parse(&obj.spec.request.0)
        .map_err(|e| anyhow::anyhow!("unable to parse csr {name:?}: {e}"))?;
    let mut tried = Vec::new();
    for r in recognize(&obj, &req) {
        tried.push(r.subresource);
        if authorize(client, &obj, r.subresource).await? {
            let api: Api<CertificateSigningRequest> = Api::all(client.clone());
            api.replace_subresource(
                "approval",
                name,
                &PostParams::default(),
                &approved(&obj, r.message),
            )
            .await
            .map_err(|e| anyhow::anyhow!("error updating approval for csr: {e}"))?;
            tracing::info!(csr = name, permission = r.subresource, "approved");
            return Ok(None);
        }
    }
    if !tried.is_empty() {
        // tried again with backoff: a binding may come
        anyhow::bail!(
            "recognized csr {name:?} as [{}] but subject access review was not approved",
            tried.join(" ")
        );
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr::testutil::request;
    use k8s_openapi::ByteString;

    fn csr(
        signer: &str,
        user: &str,
        pem: &str,
        usages: &[&str],
    ) -> (CertificateSigningRequest, Request) {
        let c: CertificateSigningRequest = serde_json::from_value(json!({
            "metadata": {"name": "node-csr-1"},
            "spec": {
                "request": ByteString(pem.as_bytes().to_vec()),
                "signerName": signer,
                "usages": usages,
                "username": user,
                "groups": ["system:bootstrappers", "system:authenticated"],
                "extra": {"k": ["v"]},
            },
        }))
        .expect("csr");
        (c, crate::csr::parse(pem.as_bytes()).expect("parse"))
    }

    #[test]
    fn kubelet_client_requests_are_recognized() {
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let ok = ["digital signature", "client auth"];
        let (c, r) = csr(csr::KUBELET_CLIENT, "system:bootstrap:abcdef", &pem, &ok);
        assert_eq!(recognize(&c, &r), vec![&NODE_CLIENT]);
        // the node renewing its own certificate
        let (c, r) = csr(csr::KUBELET_CLIENT, "system:node:n1", &pem, &ok);
        assert_eq!(recognize(&c, &r), vec![&SELF_NODE_CLIENT, &NODE_CLIENT]);
        // another signer, other usages, another subject: not ours
        let (c, r) = csr(csr::KUBE_APISERVER_CLIENT, "system:node:n1", &pem, &ok);
        assert!(recognize(&c, &r).is_empty());
        let (c, r) = csr(
            csr::KUBELET_CLIENT,
            "system:node:n1",
            &pem,
            &["digital signature", "client auth", "server auth"],
        );
        assert!(recognize(&c, &r).is_empty());
        let admin = request("system:node:n1", &["system:masters"], &[]);
        let (c, r) = csr(csr::KUBELET_CLIENT, "system:node:n1", &admin, &ok);
        assert!(recognize(&c, &r).is_empty());
    }

    #[test]
    fn the_review_asks_for_the_requestor() {
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let (c, _) = csr(
            csr::KUBELET_CLIENT,
            "system:bootstrap:abcdef",
            &pem,
            &["digital signature", "client auth"],
        );
        let sar: SubjectAccessReview =
            serde_json::from_value(review(&c, "nodeclient")).expect("sar");
        let spec = sar.spec;
        assert_eq!(spec.user.as_deref(), Some("system:bootstrap:abcdef"));
        assert_eq!(
            spec.groups,
            Some(vec![
                "system:bootstrappers".to_string(),
                "system:authenticated".to_string()
            ])
        );
        assert!(spec.extra.is_some());
        let ra = spec.resource_attributes.expect("resource attributes");
        assert_eq!(ra.group.as_deref(), Some("certificates.k8s.io"));
        assert_eq!(ra.resource.as_deref(), Some("certificatesigningrequests"));
        assert_eq!(ra.subresource.as_deref(), Some("nodeclient"));
        assert_eq!(ra.verb.as_deref(), Some("create"));
    }

    #[test]
    fn approval_is_upstreams_condition_and_decided_requests_are_left_alone() {
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let (c, _) = csr(csr::KUBELET_CLIENT, "u", &pem, &["client auth"]);
        assert!(undecided(&c));
        let a = approved(&c, NODE_CLIENT.message);
        let cond = a
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.first())
            .expect("condition");
        assert_eq!(cond.type_, "Approved");
        assert_eq!(cond.status, "True");
        assert_eq!(cond.reason.as_deref(), Some("AutoApproved"));
        assert_eq!(
            cond.message.as_deref(),
            Some("Auto approving kubelet client certificate after SubjectAccessReview.")
        );
        assert!(!undecided(&a));
        let mut denied = c.clone();
        denied.status = Some(
            serde_json::from_value(json!({"conditions": [{"type": "Denied", "status": "True"}]}))
                .expect("status"),
        );
        assert!(!undecided(&denied));
    }
}
