//! `--use-service-account-credentials` against a real apiserver with
//! Node,RBAC: the controller-manager (as system:kube-controller-manager)
//! creates each controller's service account in kube-system and runs the
//! controller with its token, so RBAC decides per controller: without its
//! bootstrap binding, the replicaset controller can no longer create pods
//! while the deployment controller still scales its ReplicaSet.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiserver::testing::{write_kubeconfig, TestServer};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

struct Kcm(Child);

impl Drop for Kcm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl {args:?}");
}

async fn until<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_act_as_their_own_service_accounts() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, public) = (keys.path().join("sa.key"), keys.path().join("sa.pub"));
    openssl(&["genrsa", "-out", &key.to_string_lossy(), "2048"]);
    openssl(&[
        "rsa",
        "-in",
        &key.to_string_lossy(),
        "-pubout",
        "-out",
        &public.to_string_lossy(),
    ]);
    let key_pem = std::fs::read(&key).expect("key");
    let pub_pem = std::fs::read(&public).expect("pub");
    let ts = TestServer::start_with(|cfg| {
        let signer =
            apiserver::satoken::Signer::from_pem("sa.key", &key_pem, ISSUER).expect("signer");
        let mut v = apiserver::satoken::Verifier::new(vec![ISSUER.into()], vec![ISSUER.into()]);
        v.add_pem("sa.pub", &pub_pem).expect("verifier");
        cfg.sa_signer = Some(std::sync::Arc::new(signer));
        cfg.sa_verifier = v;
        cfg.authorization = vec![apiserver::authz::Mode::Node, apiserver::authz::Mode::Rbac];
    });
    // the controller-manager's own identity, as the harness gives it
    let (cert, ckey) = ts.pki.client("system:kube-controller-manager", &[]);
    let kc = ts.dir.path().join("kcm.kubeconfig");
    write_kubeconfig(&kc, ts.addr, &ts.pki.ca_pem, &cert, &ckey);
    let _kcm = Kcm(Command::new(env!("CARGO_BIN_EXE_kube-controller-manager"))
        .arg(format!("--kubeconfig={}", kc.display()))
        .args([
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--controllers=deployment,replicaset",
            "--use-service-account-credentials",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kube-controller-manager"));
    let client = ts.client().await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "kube-system");
    for name in ["deployment-controller", "replicaset-controller"] {
        until(&format!("service account {name}"), 30, || {
            let sas = sas.clone();
            async move { sas.get(name).await.ok() }
        })
        .await;
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let count = |pods: Api<Pod>| async move {
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .map(|l| l.items.len())
            .unwrap_or(0)
    };
    until("two pods", 30, || {
        let pods = pods.clone();
        async move { (count(pods).await == 2).then_some(()) }
    })
    .await;

    // take the replicaset controller's binding away: its account may no longer create pods
    ts.kubectl_ok(&[
        "delete",
        "clusterrolebinding",
        "system:controller:replicaset-controller",
    ]);
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale");
    // the deployment controller (its own account, still bound) scales the ReplicaSet
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    until("the ReplicaSet scaled to 3", 30, || {
        let sets = sets.clone();
        async move {
            let l = sets
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            l.items
                .iter()
                .any(|rs| rs.spec.as_ref().and_then(|s| s.replicas) == Some(3))
                .then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count(pods.clone()).await,
        2,
        "the replicaset controller is refused by RBAC"
    );
    // bound again, it catches up
    ts.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "system:controller:replicaset-controller",
        "--clusterrole=system:controller:replicaset-controller",
        "--serviceaccount=kube-system:replicaset-controller",
    ]);
    until("the third pod once the account is bound again", 60, || {
        let pods = pods.clone();
        async move { (count(pods).await == 3).then_some(()) }
    })
    .await;
}
