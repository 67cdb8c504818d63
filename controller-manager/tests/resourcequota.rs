//! The resourcequota controller of the kube-controller-manager binary against
//! a real apiserver (with its ResourceQuota admission) and etcd: status.hard
//! follows spec.hard, status.used is recomputed from the namespace's objects,
//! deletions and pods finishing give quota back, and kubectl shows it.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiserver::testing::TestServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, ResourceQuota, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

/// The binary, killed on drop.
struct Kcm(Child);

impl Kcm {
    fn start(ts: &TestServer, extra: &[&str]) -> Kcm {
        let child = Command::new(env!("CARGO_BIN_EXE_kube-controller-manager"))
            .arg(format!("--kubeconfig={}", ts.kubeconfig.display()))
            .args(["--bind-address=127.0.0.1", "--secure-port=0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kube-controller-manager");
        Kcm(child)
    }
}

impl Drop for Kcm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The quota's (status.hard, status.used), as strings.
async fn status(quotas: &Api<ResourceQuota>, name: &str) -> (Value, Value) {
    let q = quotas.get(name).await.expect("get quota");
    let s = serde_json::to_value(q.status.unwrap_or_default()).expect("status");
    (s["hard"].clone(), s["used"].clone())
}

/// Wait (30 s at most) until the quota's status.used is `want`.
async fn used_becomes(quotas: &Api<ResourceQuota>, name: &str, want: Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, used) = status(quotas, name).await;
        if used == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status.used of {name} is {used}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn used(pods: &str, cpu: &str, services: &str, deployments: &str) -> Value {
    json!({"count/deployments.apps": deployments, "pods": pods,
           "requests.cpu": cpu, "services": services})
}

async fn create_pod(pods: &Api<Pod>, name: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                 "resources": {"requests": {"cpu": "250m"}}}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
}

async fn create_service(services: &Api<Service>, name: &str) -> Result<Service, kube::Error> {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]},
    }))
    .expect("svc");
    services.create(&PostParams::default(), &svc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_usage_is_counted_and_replenished() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("ns");
    // the default full resync (5m) never comes in this test: every change
    // below is seen through its triggers
    let kcm = Kcm::start(
        &ts,
        &[
            "--leader-elect=false",
            "--controllers=resourcequota",
            "--concurrent-resource-quota-syncs=2",
        ],
    );

    // a new quota: status.hard from spec.hard, nothing used yet
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "team");
    let hard = json!({"pods": "2", "services": "1", "requests.cpu": "1",
                      "count/deployments.apps": "1"});
    let q: ResourceQuota =
        serde_json::from_value(json!({"metadata": {"name": "compute"}, "spec": {"hard": hard}}))
            .expect("quota");
    quotas
        .create(&PostParams::default(), &q)
        .await
        .expect("create quota");
    used_becomes(&quotas, "compute", used("0", "0", "0", "0")).await;
    let (status_hard, _) = status(&quotas, "compute").await;
    let as_map = |v: &Value| -> BTreeMap<String, String> {
        serde_json::from_value(v.clone()).expect("quantities")
    };
    assert_eq!(as_map(&status_hard), as_map(&hard));

    // a pod, a Service and a Deployment (no deployment controller here: it
    // is only counted)
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    create_pod(&pods, "p1").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "team");
    create_service(&services, "web").await.expect("create svc");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "team");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    used_becomes(&quotas, "compute", used("1", "250m", "1", "1")).await;

    // kubectl shows usage against the limits
    let out = ts.kubectl_ok(&["get", "quota", "-n", "team"]);
    assert!(out.contains("REQUEST"), "{out}");
    for cell in [
        "pods: 1/2",
        "requests.cpu: 250m/1",
        "services: 1/1",
        "count/deployments.apps: 1/1",
    ] {
        assert!(out.contains(cell), "{cell} missing in:\n{out}");
    }

    // over the limit, admission refuses; the deletion gives the Service back
    let err = create_service(&services, "more")
        .await
        .expect_err("over quota");
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 403 && e.message.contains("exceeded quota")),
        "{err}"
    );
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete svc");
    used_becomes(&quotas, "compute", used("1", "250m", "0", "1")).await;
    create_service(&services, "more")
        .await
        .expect("room again after the deletion");
    used_becomes(&quotas, "compute", used("1", "250m", "1", "1")).await;

    // deleting the pod gives back its count and its cpu
    pods.delete("p1", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod");
    used_becomes(&quotas, "compute", used("0", "0", "1", "1")).await;

    // a pod that finished counts no more
    create_pod(&pods, "p2").await;
    create_pod(&pods, "p3").await;
    used_becomes(&quotas, "compute", used("2", "500m", "1", "1")).await;
    pods.patch_status(
        "p2",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .expect("pod status");
    used_becomes(&quotas, "compute", used("1", "250m", "1", "1")).await;
    let out = ts.kubectl_ok(&["get", "quota", "compute", "-n", "team"]);
    assert!(out.contains("pods: 1/2"), "{out}");
    assert!(out.contains("requests.cpu: 250m/1"), "{out}");

    // a changed spec is reflected in status.hard, usage of new names counted
    quotas
        .patch(
            "compute",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"hard": {"pods": "5", "configmaps": "4"}}})),
        )
        .await
        .expect("patch quota");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (h, u) = status(&quotas, "compute").await;
        if h["pods"] == "5" && h["configmaps"] == "4" && u["configmaps"].is_string() {
            // the namespace has no ConfigMaps (no root-ca publisher here)
            assert_eq!(u["configmaps"], "0");
            assert_eq!(u["pods"], "1");
            break;
        }
        assert!(Instant::now() < deadline, "status {h} / {u}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // usage written by someone else is put right by the full resync
    // (--resource-quota-sync-period), not by the status update itself
    drop(kcm);
    let _kcm = Kcm::start(
        &ts,
        &[
            "--leader-elect=false",
            "--controllers=resourcequota",
            "--resource-quota-sync-period=2s",
        ],
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut q = quotas.get("compute").await.expect("get quota");
    let mut s = serde_json::to_value(q.status.take().unwrap_or_default()).expect("status");
    s["used"]["pods"] = json!("4");
    q.status = Some(serde_json::from_value(s).expect("status"));
    quotas
        .replace_status("compute", &PostParams::default(), &q)
        .await
        .expect("tamper with usage");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, u) = status(&quotas, "compute").await;
        if u["pods"] == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "usage not recomputed: {u}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
