//! The kube-controller-manager binary against a real apiserver and etcd:
//! pods are created and their status written by hand (no kubelet), and the
//! controllers' objects are read back with kube-rs and the real kubectl.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiserver::testing::TestServer;
use k8s_openapi::api::core::v1::{
    Endpoints, Event, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service,
    ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

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

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn running_pod(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox",
                 "ports": [{"name": "http", "containerPort": 8080}]}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    set_ready(pods, name, ip, ready).await;
}

async fn set_ready(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status");
}

/// (ready, not ready) endpoint addresses of the Service's slices.
async fn slice_view(slices: &Api<EndpointSlice>, svc: &str) -> (Vec<String>, Vec<String>) {
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .expect("list slices");
    let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
    for s in list.items {
        for e in s.endpoints {
            let r = e.conditions.and_then(|c| c.ready).unwrap_or(false);
            for a in e.addresses {
                if r {
                    ready.push(a);
                } else {
                    not_ready.push(a);
                }
            }
        }
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_slices_and_service_accounts() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let _kcm = Kcm::start(&ts, &["--leader-elect=false"]);

    // serviceaccount-controller: a default ServiceAccount in every namespace
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "shop"}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("ns");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "shop");
    eventually("the default ServiceAccount", || async {
        sas.get_opt("default").await.ok().flatten()
    })
    .await;
    sas.delete("default", &DeleteParams::default())
        .await
        .expect("delete sa");
    eventually("the default ServiceAccount to come back", || async {
        sas.get_opt("default").await.ok().flatten()
    })
    .await;

    // endpointslice and endpoint controllers
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    running_pod(&pods, "web-a", "10.244.1.2", true).await;
    running_pod(&pods, "web-b", "10.244.1.3", false).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "shop");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }))
    .expect("svc");
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("svc");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "shop");
    eventually(
        "a slice with one ready and one unready endpoint",
        || async {
            let v = slice_view(&slices, "web").await;
            (v == (
                vec!["10.244.1.2".to_string()],
                vec!["10.244.1.3".to_string()],
            ))
                .then_some(())
        },
    )
    .await;
    let list = slices.list(&ListParams::default()).await.expect("list");
    let slice = &list.items[0];
    assert_eq!(slice.address_type, "IPv4");
    let ports = slice.ports.clone().unwrap_or_default();
    assert_eq!(
        ports[0].port,
        Some(8080),
        "the named targetPort resolves to the container port"
    );
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("endpointslice.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("endpointslice-controller.k8s.io")
    );
    let owner = &slice.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Service", "web", Some(true))
    );
    assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("node-1"));

    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "shop");
    eventually("Endpoints in step", || async {
        let e = endpoints.get_opt("web").await.ok().flatten()?;
        let s = e.subsets.unwrap_or_default();
        let ready: Vec<String> = s
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .map(|a| a.ip.clone())
            .collect();
        let not: Vec<String> = s
            .iter()
            .flat_map(|s| s.not_ready_addresses.iter().flatten())
            .map(|a| a.ip.clone())
            .collect();
        (ready == ["10.244.1.2"] && not == ["10.244.1.3"]).then_some(())
    })
    .await;

    // readiness changes and a pod deletion follow
    set_ready(&pods, "web-b", "10.244.1.3", true).await;
    pods.delete("web-a", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod");
    eventually("web-b ready, web-a gone", || async {
        let v = slice_view(&slices, "web").await;
        (v == (vec!["10.244.1.3".to_string()], vec![])).then_some(())
    })
    .await;

    // kubectl reads them as on any cluster
    let out = ts.kubectl_ok(&["get", "endpointslices", "-n", "shop"]);
    assert!(
        out.contains("IPv4") && out.contains("8080") && out.contains("10.244.1.3"),
        "{out}"
    );
    let out = ts.kubectl_ok(&["get", "endpoints", "web", "-n", "shop"]);
    assert!(out.contains("10.244.1.3:8080"), "{out}");

    // in a steady state nothing is rewritten
    let rvs = || async {
        let s = slices.list(&ListParams::default()).await.expect("list");
        let e = endpoints.get("web").await.expect("endpoints");
        (
            s.items
                .iter()
                .map(|i| i.metadata.resource_version.clone())
                .collect::<Vec<_>>(),
            e.metadata.resource_version,
        )
    };
    let before = rvs().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        before,
        rvs().await,
        "controllers kept rewriting unchanged objects"
    );

    // the Service goes: so do its slices and Endpoints
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete svc");
    eventually("slices and Endpoints removed", || async {
        let s = slices.list(&ListParams::default()).await.ok()?;
        let e = endpoints.get_opt("web").await.ok()?;
        (s.items.is_empty() && e.is_none()).then_some(())
    })
    .await;
}

#[test]
fn unknown_controllers_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-controller-manager"))
        .args(["--controllers=*,bogus"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"bogus\" is not a known controller"), "{err}");
}

/// (name, controller uid) of the active pods labelled app=rs in `ns`.
async fn rs_pods(pods: &Api<Pod>) -> Vec<(String, String)> {
    let list = pods
        .list(&ListParams::default().labels("app=rs"))
        .await
        .expect("list pods");
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let owner = p
                .metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid)
                .unwrap_or_default();
            (p.metadata.name.unwrap_or_default(), owner)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicasets_keep_their_pods() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let _kcm = Kcm::start(
        &ts,
        &[
            "--leader-elect=false",
            "--controllers=replicaset-controller",
        ],
    );
    ts.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: rs}}\n  template:\n    metadata: {labels: {app: rs}}\n    spec: {containers: [{name: c, image: busybox}]}\n",
    );
    let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        Api::namespaced(client.clone(), "default");
    let uid = sets
        .get("web")
        .await
        .expect("rs")
        .metadata
        .uid
        .expect("uid");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually("3 pods owned by the ReplicaSet", || async {
        let p = rs_pods(&pods).await;
        (p.len() == 3 && p.iter().all(|(n, o)| o == &uid && n.starts_with("web-"))).then_some(())
    })
    .await;
    // and no more: expectations keep a stale cache from over-creating
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rs_pods(&pods).await.len(), 3);

    // an orphan with matching labels is adopted; one pod too many goes
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stray", "labels": {"app": "rs"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &orphan)
        .await
        .expect("orphan");
    eventually("back to 3 pods, all owned", || async {
        let p = rs_pods(&pods).await;
        (p.len() == 3 && p.iter().all(|(_, o)| o == &uid)).then_some(())
    })
    .await;

    // a pod whose labels stop matching is released and replaced
    let victim = rs_pods(&pods).await[0].0.clone();
    pods.patch(
        &victim,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .expect("relabel");
    eventually("the relabelled pod released and replaced", || async {
        let released = pods.get(&victim).await.ok()?;
        let owners = released.metadata.owner_references.unwrap_or_default();
        (owners.is_empty() && rs_pods(&pods).await.len() == 3).then_some(())
    })
    .await;

    // status follows readiness; kubectl shows it
    for (name, _) in rs_pods(&pods).await {
        pods.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .expect("ready");
    }
    eventually("readyReplicas 3", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.replicas == 3 && s.ready_replicas == Some(3) && s.available_replicas == Some(3))
            .then_some(())
    })
    .await;
    let out = ts.kubectl_ok(&["get", "rs", "web"]);
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().collect::<Vec<_>>()[1..4] == ["3", "3", "3"]),
        "{out}"
    );

    // scale down: the surplus goes, with events as upstream's
    ts.kubectl_ok(&["scale", "rs", "web", "--replicas=1"]);
    eventually("1 pod left", || async {
        (rs_pods(&pods).await.len() == 1).then_some(())
    })
    .await;
    let events = eventually("SuccessfulCreate and SuccessfulDelete events", || async {
        let out = ts.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
        ]);
        (out.contains("SuccessfulCreate") && out.contains("SuccessfulDelete")).then_some(out)
    })
    .await;
    assert!(events.contains("Created pod: web-"), "{events}");
}

/// Play the kubelet's part: every active pod in `ns` becomes Running and Ready.
fn mark_pods_ready(client: kube::Client, ns: &str) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(client, ns);
    tokio::spawn(async move {
        loop {
            if let Ok(list) = pods.list(&ListParams::default()).await {
                for p in list.items {
                    let ready = p
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    if ready || p.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let status = json!({"status": {"phase": "Running", "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}});
                    let name = p.metadata.name.unwrap_or_default();
                    let _ = pods
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    })
}

/// The ReplicaSets of app=`app` as "image=replicas@revision ...".
fn images(ts: &TestServer, app: &str) -> String {
    ts.kubectl_ok(&[
        "get", "rs", "-l", &format!("app={app}"), "-o",
        "jsonpath={range .items[*]}{.spec.template.spec.containers[0].image}={.spec.replicas}@{.metadata.annotations.deployment\\.kubernetes\\.io/revision} {end}",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_roll_out_and_back() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let _kcm = Kcm::start(
        &ts,
        &[
            "--leader-elect=false",
            "--controllers=deployment-controller,replicaset-controller",
        ],
    );
    let ready = mark_pods_ready(client.clone(), "default");
    ts.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: roll}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: roll}}\n  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}\n  template:\n    metadata: {labels: {app: roll}}\n    spec: {containers: [{name: c, image: 'busybox:1'}]}\n",
    );
    let out = ts.kubectl_ok(&["rollout", "status", "deployment/roll", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let get = ts.kubectl_ok(&["get", "deploy", "roll"]);
    assert!(get.contains("3/3"), "{get}");
    assert_eq!(images(&ts, "roll").trim(), "busybox:1=3@1");

    // a new image rolls out through a second ReplicaSet
    // count ready pods through the whole rollout: maxUnavailable 0 means never below 3
    let watcher = {
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        tokio::spawn(async move {
            let mut min = usize::MAX;
            for _ in 0..60 {
                if let Ok(list) = pods.list(&ListParams::default().labels("app=roll")).await {
                    let ready = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .filter(|p| {
                            p.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|c| {
                                    c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                })
                        })
                        .count();
                    min = min.min(ready);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            min
        })
    };
    ts.kubectl_ok(&["set", "image", "deployment/roll", "c=busybox:2"]);
    let out = ts.kubectl_ok(&["rollout", "status", "deployment/roll", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let rs = images(&ts, "roll");
    assert!(
        rs.contains("busybox:2=3@2") && rs.contains("busybox:1=0@1"),
        "{rs}"
    );
    let min_ready = watcher.await.expect("watcher");
    assert!(
        min_ready >= 3,
        "ready pods dropped to {min_ready} during the rollout"
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let live: Vec<String> = pods
        .list(&ListParams::default().labels("app=roll"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            p.spec
                .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
        })
        .collect();
    assert_eq!(live, vec!["busybox:2"; 3]);

    // rollout undo brings the first template back as revision 3
    ts.kubectl_ok(&["rollout", "undo", "deployment/roll"]);
    ts.kubectl_ok(&["rollout", "status", "deployment/roll", "--timeout=60s"]);
    let rs = images(&ts, "roll");
    assert!(
        rs.contains("busybox:1=3@3") && rs.contains("busybox:2=0@2"),
        "{rs}"
    );
    // the first ReplicaSet came back, no third one was made
    assert_eq!(rs.split_whitespace().count(), 2, "{rs}");
    let history = ts.kubectl_ok(&["rollout", "history", "deployment/roll"]);
    assert!(history.contains('2') && history.contains('3'), "{history}");

    // paused: a template change waits for resume
    ts.kubectl_ok(&["rollout", "pause", "deployment/roll"]);
    ts.kubectl_ok(&["set", "image", "deployment/roll", "c=busybox:3"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !images(&ts, "roll").contains("busybox:3"),
        "a paused Deployment rolled out"
    );
    ts.kubectl_ok(&["rollout", "resume", "deployment/roll"]);
    ts.kubectl_ok(&["rollout", "status", "deployment/roll", "--timeout=60s"]);
    assert!(
        images(&ts, "roll").contains("busybox:3=3@4"),
        "{}",
        images(&ts, "roll")
    );

    let events = ts.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Deployment",
    ]);
    assert!(
        events.contains("ScalingReplicaSet")
            && events.contains("Scaled up replica set roll-")
            && events.contains(" from 0 to 3"),
        "{events}"
    );

    // the same for a Deployment `kubectl create` sent as protobuf (Go writes
    // zero fields there that its JSON leaves out)
    ts.kubectl_ok(&["create", "deployment", "pb", "--image=busybox:1"]);
    ts.kubectl_ok(&["rollout", "status", "deployment/pb", "--timeout=60s"]);
    ts.kubectl_ok(&["set", "image", "deployment/pb", "busybox=busybox:2"]);
    ts.kubectl_ok(&["rollout", "status", "deployment/pb", "--timeout=60s"]);
    ts.kubectl_ok(&["rollout", "undo", "deployment/pb"]);
    ts.kubectl_ok(&["rollout", "status", "deployment/pb", "--timeout=60s"]);
    let sets = images(&ts, "pb");
    assert_eq!(
        sets.split_whitespace().collect::<BTreeSet<_>>(),
        BTreeSet::from(["busybox:1=1@3", "busybox:2=0@2"]),
        "{sets}"
    );
    ready.abort();
}

async fn count_pods(pods: &Api<Pod>, selector: &str) -> usize {
    pods.list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items.len())
        .unwrap_or(usize::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_cascades() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let controllers =
        "--controllers=deployment-controller,replicaset-controller,garbage-collector-controller";
    let kcm = Kcm::start(&ts, &["--leader-elect=false", controllers]);
    let deploy = |name: &str| {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n")
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        Api::namespaced(client.clone(), "default");
    for name in ["bg", "fg", "orphan", "offline"] {
        ts.kubectl_stdin_ok(&["apply", "-f", "-"], &deploy(name));
    }
    for name in ["bg", "fg", "orphan", "offline"] {
        let sel = format!("app={name}");
        eventually("2 pods per Deployment", || async {
            (count_pods(&pods, &sel).await == 2).then_some(())
        })
        .await;
    }

    // background (kubectl's default): the Deployment goes at once, its
    // ReplicaSet and pods after it
    ts.kubectl_ok(&["delete", "deployment", "bg"]);
    eventually("bg's ReplicaSet and pods collected", || async {
        let rs = sets
            .list(&ListParams::default().labels("app=bg"))
            .await
            .ok()?;
        (rs.items.is_empty() && count_pods(&pods, "app=bg").await == 0).then_some(())
    })
    .await;

    // foreground: the Deployment stays until its dependents are gone
    ts.kubectl_ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    eventually("fg and everything it owned gone", || async {
        let d: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(client.clone(), "default");
        let gone = d.get_opt("fg").await.ok()?.is_none();
        (gone && count_pods(&pods, "app=fg").await == 0).then_some(())
    })
    .await;

    // orphan: the ReplicaSet stays, without its owner reference
    ts.kubectl_ok(&["delete", "deployment", "orphan", "--cascade=orphan"]);
    eventually("orphan's ReplicaSet released", || async {
        let rs = sets
            .list(&ListParams::default().labels("app=orphan"))
            .await
            .ok()?;
        (rs.items.len() == 1
            && rs.items[0]
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default()
                .is_empty())
        .then_some(())
    })
    .await;
    assert_eq!(count_pods(&pods, "app=orphan").await, 2);

    // across a restart: a Deployment deleted while no collector runs
    drop(kcm);
    let d: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), "default");
    d.delete("offline", &DeleteParams::default())
        .await
        .expect("delete offline");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count_pods(&pods, "app=offline").await,
        2,
        "nothing collects while it is down"
    );
    let _kcm = Kcm::start(&ts, &["--leader-elect=false", controllers]);
    eventually(
        "offline's dependents collected after the restart",
        || async {
            let rs = sets
                .list(&ListParams::default().labels("app=offline"))
                .await
                .ok()?;
            (rs.items.is_empty() && count_pods(&pods, "app=offline").await == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_empties_it() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let _kcm = Kcm::start(&ts, &["--leader-elect=false"]);
    ts.kubectl_ok(&["create", "namespace", "doomed"]);
    ts.kubectl_ok(&[
        "-n",
        "doomed",
        "create",
        "configmap",
        "c1",
        "--from-literal=a=b",
    ]);
    ts.kubectl_ok(&[
        "-n",
        "doomed",
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=a=b",
    ]);
    ts.kubectl_ok(&[
        "-n",
        "doomed",
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
    ]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "doomed");
    eventually("the Deployment's pods", || async {
        (count_pods(&pods, "app=web").await == 2).then_some(())
    })
    .await;
    ts.kubectl_ok(&["delete", "namespace", "doomed", "--wait=false"]);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually("the namespace emptied and removed", || async {
        namespaces
            .get_opt("doomed")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    // nothing of it is left in etcd
    let keys = ts.etcd.keys("/registry/");
    let left: Vec<&String> = keys.iter().filter(|k| k.contains("/doomed/")).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Renew node `name`'s Lease every 300 ms until dropped.
fn heartbeat(client: kube::Client, name: &str) -> tokio::task::JoinHandle<()> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client, "kube-node-lease");
    let name = name.to_string();
    tokio::spawn(async move {
        loop {
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}});
            let _ = leases
                .patch(
                    &name,
                    &PatchParams::apply("test-kubelet").force(),
                    &Patch::Apply(&lease),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

/// Is the pod gone or being deleted?
async fn evicted(pods: &Api<Pod>, name: &str) -> bool {
    match pods.get_opt(name).await {
        Ok(Some(p)) => p.metadata.deletion_timestamp.is_some(),
        Ok(None) => true,
        Err(_) => false,
    }
}

fn node_taints(n: &Node) -> Vec<String> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_nodes_are_tainted_and_their_pods_evicted() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
        "reason": "KubeletReady", "lastHeartbeatTime": k8s_openapi::jiff::Timestamp::now().to_string()}]}});
    // two nodes in one zone: when every node of every zone is silent,
    // upstream suspects its own side and evicts nothing
    for name in ["n1", "n2"] {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": name,
            "labels": {"topology.kubernetes.io/zone": "z1"}}}))
        .expect("node");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("node");
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&ready))
            .await
            .expect("ready");
    }
    let beat = heartbeat(client.clone(), "n1");
    let _beat2 = heartbeat(client.clone(), "n2");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // the apiserver's DefaultTolerationSeconds gives a pod without
    // tolerations 300 s: "at once" is a toleration of 0 s
    for (name, tols) in [
        (
            "fragile",
            json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 0}]),
        ),
        ("defaulted", json!([])),
        (
            "patient",
            json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 4}]),
        ),
        ("forever", json!([{"operator": "Exists"}])),
    ] {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"nodeName": "n1", "tolerations": tols,
                     "containers": [{"name": "c", "image": "busybox"}]}}))
        .expect("pod");
        pods.create(&PostParams::default(), &p).await.expect("pod");
    }
    let defaulted = pods.get("defaulted").await.expect("pod");
    let tols = defaulted
        .spec
        .and_then(|s| s.tolerations)
        .unwrap_or_default();
    assert!(
        tols.iter().any(
            |t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")
                && t.toleration_seconds == Some(300)
        ),
        "{tols:?}"
    );
    let _kcm = Kcm::start(
        &ts,
        &[
            "--leader-elect=false",
            "--controllers=node-lifecycle-controller,taint-eviction-controller",
            "--node-monitor-period=200ms",
            "--node-monitor-grace-period=3s",
        ],
    );
    // a node renewing its lease stays healthy past the grace period
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = nodes.get("n1").await.expect("node");
    assert!(node_taints(&n).is_empty(), "{:?}", node_taints(&n));
    assert!(!evicted(&pods, "fragile").await);

    // the kubelet falls silent
    beat.abort();
    let n = eventually("Ready Unknown and the unreachable taint", || async {
        let n = nodes.get("n1").await.ok()?;
        let unknown = n.status.as_ref()?.conditions.as_ref()?.iter().any(|c| {
            c.type_ == "Ready"
                && c.status == "Unknown"
                && c.message.as_deref() == Some("Kubelet stopped posting node status.")
        });
        (unknown && node_taints(&n) == ["node.kubernetes.io/unreachable:NoExecute"]).then_some(n)
    })
    .await;
    assert!(n
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t[0].time_added.is_some()));
    eventually("the intolerant pod evicted at once", || async {
        evicted(&pods, "fragile").await.then_some(())
    })
    .await;
    assert!(
        !evicted(&pods, "patient").await,
        "evicted before its tolerationSeconds"
    );
    eventually(
        "the tolerating pod evicted after tolerationSeconds",
        || async { evicted(&pods, "patient").await.then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !evicted(&pods, "forever").await,
        "a pod tolerating forever was evicted"
    );
    let events = ts.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=TaintManagerEviction",
    ]);
    assert!(
        events.contains("Marking for deletion Pod default/fragile"),
        "{events}"
    );

    // it comes back: the taint goes
    let _beat = heartbeat(client.clone(), "n1");
    nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .expect("ready again");
    eventually("the taint removed", || async {
        let n = nodes.get("n1").await.ok()?;
        node_taints(&n).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_pod_cidrs() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    // one node already holds a range: it is not handed out again
    let taken: Node = serde_json::from_value(json!({"metadata": {"name": "old"},
        "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}}))
    .expect("node");
    nodes
        .create(&PostParams::default(), &taken)
        .await
        .expect("node");
    let _kcm = Kcm::start(
        &ts,
        &[
            "--leader-elect=false",
            "--controllers=node-ipam-controller",
            "--allocate-node-cidrs=true",
            "--cluster-cidr=10.244.0.0/16",
        ],
    );
    for name in ["a", "b", "c"] {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": name}})).expect("node");
        nodes
            .create(&PostParams::default(), &n)
            .await
            .expect("node");
    }
    let cidrs = eventually("a pod CIDR on every node", || async {
        let list = nodes.list(&ListParams::default()).await.ok()?;
        let cidrs: Vec<String> = list
            .items
            .iter()
            .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
            .collect();
        (cidrs.len() == 4).then_some(cidrs)
    })
    .await;
    let mut unique = cidrs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "{cidrs:?}");
    assert!(
        cidrs
            .iter()
            .all(|c| c.starts_with("10.244.") && c.ends_with(".0/24")),
        "{cidrs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_pods_over_the_threshold_are_collected() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..4 {
        let p: Pod = serde_json::from_value(
            json!({"metadata": {"name": format!("done-{i}"), "labels": {"app": "done"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}),
        )
        .expect("pod");
        pods.create(&PostParams::default(), &p).await.expect("pod");
        pods.patch_status(
            &format!("done-{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .expect("status");
        // distinct creation timestamps (seconds) so "oldest" is well defined
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let _kcm = Kcm::start(
        &ts,
        &[
            "--leader-elect=false",
            "--controllers=pod-garbage-collector-controller",
            "--terminated-pod-gc-threshold=2",
        ],
    );
    let left = eventually("two terminated pods left", || async {
        let l = pods
            .list(&ListParams::default().labels("app=done"))
            .await
            .ok()?;
        let mut names: Vec<String> = l
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        (names.len() == 2).then_some(names)
    })
    .await;
    assert_eq!(left, vec!["done-2", "done-3"], "the oldest go first");
}

/// Play the kubelet for job pods: each active pod labelled job-name=JOB ends in `phase`.
fn finish_job_pods(
    client: kube::Client,
    job: &str,
    phase: &'static str,
) -> tokio::task::JoinHandle<usize> {
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let selector = format!("batch.kubernetes.io/job-name={job}");
    tokio::spawn(async move {
        loop {
            if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
                let active: Vec<String> = list
                    .items
                    .iter()
                    .filter(|p| {
                        !matches!(
                            p.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Succeeded" | "Failed")
                        )
                    })
                    .filter_map(|p| p.metadata.name.clone())
                    .collect();
                if let Some(name) = active.first() {
                    let _ = pods
                        .patch_status(
                            name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": {"phase": phase}})),
                        )
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_to_completion_or_fail() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let _kcm = Kcm::start(
        &ts,
        &[
            "--leader-elect=false",
            "--controllers=job-controller,ttl-after-finished-controller,garbage-collector-controller",
        ],
    );
    let kubelet = finish_job_pods(client.clone(), "work", "Succeeded");
    ts.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: work}\nspec:\n  completions: 4\n  parallelism: 2\n  template:\n    spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}\n",
    );
    let out = ts.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/work",
        "--timeout=60s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), "default");
    let status = jobs.get("work").await.expect("job").status.expect("status");
    assert_eq!(status.succeeded, Some(4));
    assert!(status.completion_time.is_some() && status.start_time.is_some());
    kubelet.abort();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=work"))
        .await
        .expect("pods")
        .items
        .len();
    assert_eq!(created, 4, "exactly completions pods, never more");
    let events = ts.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=work",
    ]);
    assert!(
        events.contains("Created pod: work-") && events.contains("Job completed"),
        "{events}"
    );

    // a job whose pods keep failing stops at its backoff limit
    let failing = finish_job_pods(client.clone(), "doomed", "Failed");
    ts.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: doomed}\nspec:\n  backoffLimit: 1\n  template:\n    spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}\n",
    );
    let out = ts.kubectl_ok(&[
        "wait",
        "--for=condition=failed",
        "job/doomed",
        "--timeout=60s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let status = jobs
        .get("doomed")
        .await
        .expect("job")
        .status
        .expect("status");
    assert_eq!(status.failed, Some(2));
    let reason = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .and_then(|c| c.reason);
    assert_eq!(reason.as_deref(), Some("BackoffLimitExceeded"));
    failing.abort();

    // a finished job with ttlSecondsAfterFinished goes, and its pods with it
    ts.kubectl_ok(&[
        "patch",
        "job",
        "work",
        "--type=merge",
        "-p",
        "{\"spec\":{\"ttlSecondsAfterFinished\":1}}",
    ]);
    eventually(
        "the finished job and its pods deleted after the TTL",
        || async {
            let gone = jobs.get_opt("work").await.ok()?.is_none();
            let left = count_pods(&pods, "batch.kubernetes.io/job-name=work").await;
            (gone && left == 0).then_some(())
        },
    )
    .await;
}

/// node name -> image of the DaemonSet's live pods, from their node affinity.
async fn daemon_pods(pods: &Api<Pod>) -> std::collections::BTreeMap<String, String> {
    let list = pods
        .list(&ListParams::default().labels("app=daemon"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let spec = p.spec?;
            let node = spec
                .affinity?
                .node_affinity?
                .required_during_scheduling_ignored_during_execution?
                .node_selector_terms
                .first()?
                .match_fields
                .as_ref()?
                .first()?
                .values
                .as_ref()?
                .first()?
                .clone();
            Some((node, spec.containers.first()?.image.clone()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonsets_run_one_pod_per_eligible_node() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, role) in [("w1", "worker"), ("w2", "worker"), ("m1", "master")] {
        let n: Node =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"role": role}}}))
                .expect("node");
        nodes
            .create(&PostParams::default(), &n)
            .await
            .expect("node");
    }
    let _kcm = Kcm::start(
        &ts,
        &["--leader-elect=false", "--controllers=daemonset-controller"],
    );
    let ready = mark_pods_ready(client.clone(), "default");
    ts.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: daemon}\nspec:\n  selector: {matchLabels: {app: daemon}}\n  template:\n    metadata: {labels: {app: daemon}}\n    spec: {nodeSelector: {role: worker}, containers: [{name: c, image: 'busybox:1'}]}\n",
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let want = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, i)| (n.to_string(), i.to_string()))
            .collect()
    };
    eventually("a pod on each worker", || async {
        (daemon_pods(&pods).await == want(&[("w1", "busybox:1"), ("w2", "busybox:1")]))
            .then_some(())
    })
    .await;
    let sets: Api<k8s_openapi::api::apps::v1::DaemonSet> =
        Api::namespaced(client.clone(), "default");
    eventually("status: 2 desired, 2 ready", || async {
        let s = sets.get("daemon").await.ok()?.status?;
        (s.desired_number_scheduled == 2 && s.number_ready == 2 && s.number_misscheduled == 0)
            .then_some(())
    })
    .await;

    // a node becomes eligible: it gets a pod; one stops being eligible: its pod goes
    ts.kubectl_ok(&["label", "node", "m1", "role=worker", "--overwrite"]);
    ts.kubectl_ok(&["label", "node", "w2", "role=gone", "--overwrite"]);
    eventually("pods follow the node labels", || async {
        (daemon_pods(&pods).await == want(&[("m1", "busybox:1"), ("w1", "busybox:1")]))
            .then_some(())
    })
    .await;

    // a new template rolls over every node
    ts.kubectl_ok(&["set", "image", "daemonset/daemon", "c=busybox:2"]);
    eventually("every pod on the new template", || async {
        (daemon_pods(&pods).await == want(&[("m1", "busybox:2"), ("w1", "busybox:2")]))
            .then_some(())
    })
    .await;
    let get = ts.kubectl_ok(&["get", "ds", "daemon"]);
    assert!(get.contains("daemon"), "{get}");
    ready.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjobs_start_jobs_when_due() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let _kcm = Kcm::start(
        &ts,
        &["--leader-elect=false", "--controllers=cronjob-controller"],
    );
    ts.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: tick}\nspec:\n  schedule: '* * * * *'\n  concurrencyPolicy: Forbid\n  jobTemplate:\n    spec:\n      template:\n        spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}\n",
    );
    let crons: Api<k8s_openapi::api::batch::v1::CronJob> =
        Api::namespaced(client.clone(), "default");
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), "default");
    // pretend the last run was minutes ago: a run is due now
    let rewind = || async {
        let past = k8s_openapi::jiff::Timestamp::now().as_second() / 60 * 60 - 180;
        let t = k8s_openapi::jiff::Timestamp::from_second(past)
            .expect("ts")
            .to_string();
        crons
            .patch_status(
                "tick",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"lastScheduleTime": t}})),
            )
            .await
            .expect("rewind");
    };
    rewind().await;
    let job = eventually("a Job for the due time", || async {
        jobs.list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    let name = job.metadata.name.clone().unwrap_or_default();
    let minute = k8s_openapi::jiff::Timestamp::now().as_second() / 60;
    assert!(
        name == format!("tick-{minute}") || name == format!("tick-{}", minute - 1),
        "{name}"
    );
    assert!(job
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp")));
    eventually("status.active names the job", || async {
        let s = crons.get("tick").await.ok()?.status?;
        (s.active?
            .iter()
            .any(|r| r.name.as_deref() == Some(name.as_str())))
        .then_some(())
    })
    .await;

    // Forbid: while it runs, a due time starts nothing
    rewind().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        jobs.list(&ListParams::default())
            .await
            .expect("jobs")
            .items
            .len(),
        1
    );

    // it completes: lastSuccessfulTime
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    jobs.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"completionTime": now, "startTime": now,
            "conditions": [{"type": "Complete", "status": "True"}]}})),
    )
    .await
    .expect("complete");
    // (a new minute may start the next run meanwhile: only the finished job
    // must be gone from active)
    eventually(
        "lastSuccessfulTime and the finished job not active",
        || async {
            let s = crons.get("tick").await.ok()?.status?;
            let still = s
                .active
                .unwrap_or_default()
                .iter()
                .any(|r| r.name.as_deref() == Some(name.as_str()));
            (s.last_successful_time.is_some() && !still).then_some(())
        },
    )
    .await;
    let events = ts.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=tick",
    ]);
    assert!(events.contains(&format!("Created job {name}")), "{events}");
}

async fn sts_pods(pods: &Api<Pod>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pods
        .list(&ListParams::default().labels("app=sts"))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let image = p.spec.as_ref()?.containers.first()?.image.clone()?;
            Some((p.metadata.name?, image))
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulsets_keep_names_order_and_storage() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let _kcm = Kcm::start(
        &ts,
        &[
            "--leader-elect=false",
            "--controllers=statefulset-controller",
        ],
    );
    ts.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  replicas: 3\n  serviceName: db\n  selector: {matchLabels: {app: sts}}\n  template:\n    metadata: {labels: {app: sts}}\n    spec: {containers: [{name: c, image: 'busybox:1'}]}\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let one = |n: &str, i: &str| (n.to_string(), i.to_string());
    eventually("db-0 first", || async {
        (sts_pods(&pods).await == [one("db-0", "busybox:1")]).then_some(())
    })
    .await;
    // OrderedReady: nothing more until db-0 is Running and Ready
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sts_pods(&pods).await, [one("db-0", "busybox:1")]);
    let p0 = pods.get("db-0").await.expect("db-0");
    let spec = p0.spec.expect("spec");
    assert_eq!(
        (spec.hostname.as_deref(), spec.subdomain.as_deref()),
        (Some("db-0"), Some("db"))
    );
    let claim = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find_map(|v| v.persistent_volume_claim)
        .map(|c| c.claim_name);
    assert_eq!(claim.as_deref(), Some("data-db-0"));

    let ready = mark_pods_ready(client.clone(), "default");
    eventually("db-0, db-1, db-2", || async {
        (sts_pods(&pods).await
            == [
                one("db-0", "busybox:1"),
                one("db-1", "busybox:1"),
                one("db-2", "busybox:1"),
            ])
        .then_some(())
    })
    .await;
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), "default");
    for c in ["data-db-0", "data-db-1", "data-db-2"] {
        assert!(claims.get_opt(c).await.expect("claim").is_some(), "{c}");
    }

    // a new template rolls from the highest ordinal down
    ts.kubectl_ok(&["set", "image", "statefulset/db", "c=busybox:2"]);
    eventually("every pod on the new template", || async {
        (sts_pods(&pods).await
            == [
                one("db-0", "busybox:2"),
                one("db-1", "busybox:2"),
                one("db-2", "busybox:2"),
            ])
        .then_some(())
    })
    .await;
    let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(client.clone(), "default");
    eventually("currentRevision caught up with updateRevision", || async {
        let s = sets.get("db").await.ok()?.status?;
        (s.current_revision.is_some()
            && s.current_revision == s.update_revision
            && s.ready_replicas == Some(3))
        .then_some(())
    })
    .await;

    // scale down removes the highest ordinals; claims stay
    ts.kubectl_ok(&["scale", "statefulset", "db", "--replicas=1"]);
    eventually("only db-0 left", || async {
        (sts_pods(&pods).await == [one("db-0", "busybox:2")]).then_some(())
    })
    .await;
    assert!(
        claims.get_opt("data-db-2").await.expect("claim").is_some(),
        "claims outlive their pods"
    );
    ready.abort();
}

/// A PersistentVolume with a hostPath, created.
async fn host_path_volume(
    pvs: &Api<PersistentVolume>,
    name: &str,
    size: &str,
    spec: serde_json::Value,
) {
    let mut pv = json!({
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": format!("/tmp/ironkube-test-{name}")}},
    });
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        pv["spec"][k] = v;
    }
    let pv: PersistentVolume = serde_json::from_value(pv).expect("pv");
    pvs.create(&PostParams::default(), &pv)
        .await
        .expect("create pv");
}

fn pv_phase(pv: &PersistentVolume) -> Option<String> {
    pv.status.as_ref()?.phase.clone()
}

fn annotation(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<String> {
    meta.annotations.as_ref()?.get(key).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_volumes_bind_release_and_delete() {
    let ts = TestServer::start();
    let client = ts.client().await;
    // the alias upstream still accepts, and a short resync to show the
    // pending claim's event is not repeated
    let _kcm = Kcm::start(
        &ts,
        &[
            "--leader-elect=false",
            "--controllers=persistentvolume-binder,statefulset-controller",
            "--pvclaimbinder-sync-period=1s",
        ],
    );
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    host_path_volume(
        &pvs,
        "pv-small",
        "1Gi",
        json!({"persistentVolumeReclaimPolicy": "Retain"}),
    )
    .await;
    host_path_volume(
        &pvs,
        "pv-big",
        "5Gi",
        json!({"persistentVolumeReclaimPolicy": "Delete"}),
    )
    .await;
    eventually("both volumes Available", || async {
        let l = pvs.list(&ListParams::default()).await.ok()?;
        (l.items.len() == 2
            && l.items
                .iter()
                .all(|v| pv_phase(v).as_deref() == Some("Available")))
        .then_some(())
    })
    .await;

    // a StatefulSet's two claims (made at once) get one volume each
    ts.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  replicas: 2\n  podManagementPolicy: Parallel\n  serviceName: db\n  selector: {matchLabels: {app: pv}}\n  template:\n    metadata: {labels: {app: pv}}\n    spec: {containers: [{name: c, image: 'busybox:1'}]}\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let bound = eventually("data-db-0 and data-db-1 Bound", || async {
        let mut out = Vec::new();
        for name in ["data-db-0", "data-db-1"] {
            let c = claims.get_opt(name).await.ok()??;
            if c.status.as_ref()?.phase.as_deref() != Some("Bound") {
                return None;
            }
            out.push(c);
        }
        Some(out)
    })
    .await;
    let mut volumes: Vec<String> = bound
        .iter()
        .map(|c| {
            c.spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .unwrap_or_default()
        })
        .collect();
    volumes.sort();
    assert_eq!(volumes, ["pv-big", "pv-small"], "each claim its own volume");
    let mut retained = String::new();
    let mut deleted = String::new();
    for c in &bound {
        let name = c.metadata.name.clone().unwrap_or_default();
        let volume = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        assert_eq!(
            annotation(&c.metadata, "pv.kubernetes.io/bind-completed").as_deref(),
            Some("yes"),
            "{name}"
        );
        assert_eq!(
            annotation(&c.metadata, "pv.kubernetes.io/bound-by-controller").as_deref(),
            Some("yes"),
            "{name}"
        );
        let status = c.status.clone().unwrap_or_default();
        assert_eq!(
            status.access_modes,
            Some(vec!["ReadWriteOnce".to_string()]),
            "{name}"
        );
        let pv = eventually("the volume Bound", || async {
            let pv = pvs.get(&volume).await.ok()?;
            (pv_phase(&pv).as_deref() == Some("Bound")).then_some(pv)
        })
        .await;
        let size = pv
            .spec
            .as_ref()
            .and_then(|s| s.capacity.clone())
            .unwrap_or_default()["storage"]
            .clone();
        assert_eq!(
            status.capacity.unwrap_or_default().get("storage"),
            Some(&size),
            "{name}: the volume's capacity"
        );
        let r = pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.clone())
            .expect("claimRef");
        assert_eq!(
            (
                r.kind.as_deref(),
                r.api_version.as_deref(),
                r.namespace.as_deref(),
                r.name.as_deref()
            ),
            (
                Some("PersistentVolumeClaim"),
                Some("v1"),
                Some("default"),
                Some(name.as_str())
            )
        );
        assert_eq!(r.uid, c.metadata.uid, "{name}");
        assert!(r.resource_version.is_some());
        assert_eq!(
            annotation(&pv.metadata, "pv.kubernetes.io/bound-by-controller").as_deref(),
            Some("yes")
        );
        if volume == "pv-small" {
            retained = name;
        } else {
            deleted = name;
        }
    }

    // a claim naming its volume (pre-bound by the user)
    host_path_volume(
        &pvs,
        "pv-pinned",
        "2Gi",
        json!({"storageClassName": "manual"}),
    )
    .await;
    let mine: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "mine"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual", "volumeName": "pv-pinned",
                 "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .expect("pvc");
    let mine = claims
        .create(&PostParams::default(), &mine)
        .await
        .expect("create pvc");
    let c = eventually("mine Bound", || async {
        let c = claims.get("mine").await.ok()?;
        (c.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(c)
    })
    .await;
    assert_eq!(
        annotation(&c.metadata, "pv.kubernetes.io/bind-completed").as_deref(),
        Some("yes")
    );
    assert_eq!(
        annotation(&c.metadata, "pv.kubernetes.io/bound-by-controller"),
        None,
        "the user chose"
    );
    let pinned = eventually("pv-pinned Bound", || async {
        let pv = pvs.get("pv-pinned").await.ok()?;
        (pv_phase(&pv).as_deref() == Some("Bound")).then_some(pv)
    })
    .await;
    assert_eq!(
        pinned.spec.and_then(|s| s.claim_ref).and_then(|r| r.uid),
        mine.metadata.uid
    );

    // nothing fits: Pending, with one FailedBinding event however many resyncs
    let lonely: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "lonely"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": "100Gi"}}},
    }))
    .expect("pvc");
    claims
        .create(&PostParams::default(), &lonely)
        .await
        .expect("create pvc");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().fields("involvedObject.name=lonely");
    eventually("a FailedBinding event", || async {
        let l = events.list(&lp).await.ok()?;
        l.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("FailedBinding"))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let l = events.list(&lp).await.expect("events");
    assert_eq!(l.items.len(), 1, "{:?}", l.items);
    let e = &l.items[0];
    assert_eq!(
        (
            e.type_.as_deref(),
            e.reason.as_deref(),
            e.message.as_deref(),
            e.count
        ),
        (
            Some("Normal"),
            Some("FailedBinding"),
            Some("no persistent volumes available for this claim and no storage class is set"),
            Some(1)
        )
    );
    assert_eq!(
        e.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("persistentvolume-controller")
    );
    let c = claims.get("lonely").await.expect("lonely");
    assert_eq!(c.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    assert_eq!(c.spec.and_then(|s| s.volume_name), None);

    // a volume reserved (claimRef without uid) for a claim made later wins
    // over a smaller free one; the volume is not marked bound-by-controller,
    // the claim is (the controller set its volumeName)
    host_path_volume(&pvs, "pv-spare", "1Gi", json!({})).await;
    host_path_volume(
        &pvs,
        "pv-reserved",
        "3Gi",
        json!({"claimRef": {"namespace": "default", "name": "reserved"}}),
    )
    .await;
    eventually("pv-spare and pv-reserved Available", || async {
        let a = pv_phase(&pvs.get("pv-spare").await.ok()?);
        let b = pv_phase(&pvs.get("pv-reserved").await.ok()?);
        (a.as_deref() == Some("Available") && b.as_deref() == Some("Available")).then_some(())
    })
    .await;
    let reserved: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "reserved"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .expect("pvc");
    let reserved = claims
        .create(&PostParams::default(), &reserved)
        .await
        .expect("create pvc");
    let c = eventually("reserved Bound", || async {
        let c = claims.get("reserved").await.ok()?;
        (c.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(c)
    })
    .await;
    assert_eq!(
        c.spec.and_then(|s| s.volume_name).as_deref(),
        Some("pv-reserved")
    );
    assert_eq!(
        annotation(&c.metadata, "pv.kubernetes.io/bound-by-controller").as_deref(),
        Some("yes")
    );
    let pv = pvs.get("pv-reserved").await.expect("pv-reserved");
    assert_eq!(
        pv.spec.and_then(|s| s.claim_ref).and_then(|r| r.uid),
        reserved.metadata.uid
    );
    assert_eq!(
        annotation(&pv.metadata, "pv.kubernetes.io/bound-by-controller"),
        None
    );

    // a half-done binding (the volume points at the claim, the claim not yet
    // at the volume) is finished
    let lonely_uid = claims
        .get("lonely")
        .await
        .expect("lonely")
        .metadata
        .uid
        .expect("uid");
    host_path_volume(
        &pvs,
        "pv-half",
        "200Gi",
        json!({"claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
               "namespace": "default", "name": "lonely", "uid": lonely_uid}}),
    )
    .await;
    let c = eventually("lonely Bound to pv-half", || async {
        let c = claims.get("lonely").await.ok()?;
        (c.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(c)
    })
    .await;
    assert_eq!(
        c.spec.and_then(|s| s.volume_name).as_deref(),
        Some("pv-half")
    );
    assert_eq!(
        annotation(&c.metadata, "pv.kubernetes.io/bind-completed").as_deref(),
        Some("yes")
    );
    eventually("pv-half Bound", || async {
        let pv = pvs.get("pv-half").await.ok()?;
        (pv_phase(&pv).as_deref() == Some("Bound")).then_some(())
    })
    .await;
    assert_eq!(
        pv_phase(&pvs.get("pv-spare").await.expect("pv-spare")).as_deref(),
        Some("Available"),
        "nothing took the spare volume"
    );

    // the claims go: Retain keeps its volume Released, Delete deletes it
    for name in [&retained, &deleted] {
        claims
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete pvc");
    }
    eventually("pv-small Released", || async {
        let pv = pvs.get("pv-small").await.ok()?;
        (pv_phase(&pv).as_deref() == Some("Released")).then_some(())
    })
    .await;
    eventually("pv-big deleted", || async {
        pvs.get_opt("pv-big").await.ok()?.is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let small = pvs.get("pv-small").await.expect("pv-small kept");
    assert_eq!(pv_phase(&small).as_deref(), Some("Released"));
    assert_eq!(
        small
            .spec
            .and_then(|s| s.claim_ref)
            .and_then(|r| r.name)
            .as_deref(),
        Some(retained.as_str()),
        "a released volume keeps its claimRef"
    );
    // and the others are untouched
    assert_eq!(
        pv_phase(&pvs.get("pv-pinned").await.expect("pinned")).as_deref(),
        Some("Bound")
    );
}
