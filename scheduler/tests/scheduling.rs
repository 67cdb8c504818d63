//! kube-scheduler against a real apiserver and etcd, with nodes that have no kubelet.

use std::time::Duration;

use apiserver::testing::TestServer;
use common::informers::Informers;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

async fn start(ts: &TestServer) -> (kube::Client, watch::Sender<bool>) {
    let client = ts.client().await;
    let (stop, rx) = watch::channel(false);
    let registry = prometheus::Registry::new();
    let profile = scheduler::plugins::profile(&Default::default(), 0);
    let sched = scheduler::scheduler::Scheduler::new(client.clone(), profile, &registry);
    let informers = Informers::new(client.clone(), None, rx.clone());
    tokio::spawn(scheduler::run(sched, informers, rx));
    (client, stop)
}

async fn node(client: &kube::Client, name: &str, cpu: &str, extra: serde_json::Value) {
    let mut n = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}, "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}});
    json_patch::merge(&mut n, &extra);
    let n: Node = serde_json::from_value(n).expect("node");
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &n)
        .await
        .expect("create node");
}

async fn pod(client: &kube::Client, name: &str, cpu: &str, extra: serde_json::Value) {
    let mut p = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]}});
    json_patch::merge(&mut p, &extra);
    let p: Pod = serde_json::from_value(p).expect("pod");
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &p)
        .await
        .expect("create pod");
}

/// Poll `f` every 100 ms for up to `secs` seconds until it gives Some.
async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn node_of(client: &kube::Client, name: &str, secs: u64) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually(secs, || async {
        let p = pods.get(name).await.expect("get pod");
        p.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_decide_and_unschedulable_pods_wait_for_a_node() {
    let ts = TestServer::start();
    let (client, _stop) = start(&ts).await;
    node(&client, "n1", "2", json!({})).await;
    node(&client, "n2", "2", json!({})).await;
    pod(&client, "a", "1500m", json!({})).await;
    pod(&client, "b", "1500m", json!({})).await;
    let (na, nb) = (
        node_of(&client, "a", 20).await,
        node_of(&client, "b", 20).await,
    );
    assert!(na.is_some() && nb.is_some());
    assert_ne!(na, nb, "1.5 CPU each: one per node");
    // a third does not fit anywhere
    pod(&client, "c", "1500m", json!({})).await;
    assert_eq!(node_of(&client, "c", 3).await, None);
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let failed = events
        .list(&ListParams::default().fields("involvedObject.name=c,reason=FailedScheduling"))
        .await
        .expect("events");
    let msg = failed
        .items
        .first()
        .and_then(|e| e.message.clone())
        .unwrap_or_default();
    assert_eq!(msg, "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.");
    let c = Api::<Pod>::namespaced(client.clone(), "default")
        .get("c")
        .await
        .expect("pod c");
    let cond = c
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .expect("PodScheduled");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
    // a new node lets it schedule
    node(&client, "n3", "4", json!({})).await;
    assert_eq!(node_of(&client, "c", 20).await.as_deref(), Some("n3"));
    // the event follows the bind
    let scheduled = eventually(10, || async {
        let l = events
            .list(&ListParams::default().fields("involvedObject.name=c,reason=Scheduled"))
            .await
            .expect("events");
        l.items.first().and_then(|e| e.message.clone())
    })
    .await;
    assert_eq!(
        scheduled.as_deref(),
        Some("Successfully assigned default/c to n3")
    );
    let table = ts.kubectl_ok(&["get", "pods", "-o", "wide"]);
    assert!(table.contains("n3"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_selectors_and_affinity() {
    let ts = TestServer::start();
    let (client, _stop) = start(&ts).await;
    node(
        &client,
        "tainted",
        "8",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    )
    .await;
    node(
        &client,
        "plain",
        "1",
        json!({"metadata": {"labels": {"disk": "hdd"}}}),
    )
    .await;
    node(
        &client,
        "ssd",
        "1",
        json!({"metadata": {"labels": {"disk": "ssd"}}}),
    )
    .await;
    // the tainted node is roomier, but untolerated
    pod(
        &client,
        "no-toleration",
        "100m",
        json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "tainted"}}}),
    )
    .await;
    pod(&client, "tolerates", "100m", json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "tainted"}, "tolerations": [{"key": "dedicated", "operator": "Exists"}]}})).await;
    pod(&client, "wants-ssd", "100m", json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}}}})).await;
    assert_eq!(
        node_of(&client, "tolerates", 20).await.as_deref(),
        Some("tainted")
    );
    assert_eq!(
        node_of(&client, "wants-ssd", 20).await.as_deref(),
        Some("ssd")
    );
    assert_eq!(node_of(&client, "no-toleration", 2).await, None);
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let failed = events
        .list(
            &ListParams::default()
                .fields("involvedObject.name=no-toleration,reason=FailedScheduling"),
        )
        .await
        .expect("events");
    let msg = failed
        .items
        .first()
        .and_then(|e| e.message.clone())
        .unwrap_or_default();
    assert_eq!(msg, "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_one_active_and_failover() {
    use common::leaderelection::{LeaderElectionConfig, LeaderElector};
    let ts = TestServer::start();
    let client = ts.client().await;
    let cfg = |id: &str| LeaderElectionConfig {
        namespace: "kube-system".into(),
        name: "kube-scheduler".into(),
        identity: id.into(),
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
    };
    let spawn = |id: &'static str, rx: watch::Receiver<bool>| {
        let client = client.clone();
        let registry = prometheus::Registry::new();
        let sched = scheduler::scheduler::Scheduler::new(
            client.clone(),
            scheduler::plugins::profile(&Default::default(), 0),
            &registry,
        );
        let informers = Informers::new(client.clone(), None, rx.clone());
        let el = LeaderElector::new(client, cfg(id));
        tokio::spawn(el.run(rx, move |stop| scheduler::run(sched, informers, stop)))
    };
    let (stop_a, rx_a) = watch::channel(false);
    let (_stop_b, rx_b) = watch::channel(false);
    let a = spawn("sched-a", rx_a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _b = spawn("sched-b", rx_b);
    node(&client, "n1", "4", json!({})).await;
    pod(&client, "first", "100m", json!({})).await;
    assert_eq!(node_of(&client, "first", 20).await.as_deref(), Some("n1"));
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-system");
    let holder =
        |l: k8s_openapi::api::coordination::v1::Lease| l.spec.and_then(|s| s.holder_identity);
    assert_eq!(
        holder(leases.get("kube-scheduler").await.expect("lease")).as_deref(),
        Some("sched-a")
    );
    // the leader goes away; the standby takes over and keeps scheduling
    stop_a.send(true).expect("stop a");
    let _ = a.await;
    pod(&client, "second", "100m", json!({})).await;
    assert_eq!(node_of(&client, "second", 20).await.as_deref(), Some("n1"));
    assert_eq!(
        holder(leases.get("kube-scheduler").await.expect("lease")).as_deref(),
        Some("sched-b")
    );
    // exactly one Scheduled event per pod: never two active schedulers
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let total = eventually(10, || async {
        let l = events
            .list(&ListParams::default().fields("reason=Scheduled"))
            .await
            .expect("events");
        let t = l.items.iter().map(|e| e.count.unwrap_or(1)).sum::<i32>();
        (t >= 2).then_some(t)
    })
    .await;
    assert_eq!(total, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_pod_preempts_gracefully() {
    let ts = TestServer::start();
    let (client, _stop) = start(&ts).await;
    node(&client, "only", "2", json!({})).await;
    // priorities come from PriorityClasses (the Priority admission plugin)
    let vip: k8s_openapi::api::scheduling::v1::PriorityClass =
        serde_json::from_value(json!({"metadata": {"name": "vip"}, "value": 1000})).expect("class");
    Api::<k8s_openapi::api::scheduling::v1::PriorityClass>::all(client.clone())
        .create(&PostParams::default(), &vip)
        .await
        .expect("create priority class");
    pod(&client, "low-a", "1", json!({})).await;
    pod(&client, "low-b", "1", json!({})).await;
    assert!(
        node_of(&client, "low-a", 20).await.is_some()
            && node_of(&client, "low-b", 20).await.is_some()
    );
    pod(
        &client,
        "vip",
        "1",
        json!({"spec": {"priorityClassName": "vip"}}),
    )
    .await;
    // one victim is deleted gracefully: it turns terminating; the preemptor is nominated
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let victim = eventually(10, || async {
        for n in ["low-a", "low-b"] {
            if pods
                .get(n)
                .await
                .expect("get")
                .metadata
                .deletion_timestamp
                .is_some()
            {
                return Some(n);
            }
        }
        None
    })
    .await;
    let victim = victim.expect("a victim was evicted");
    let nominated = eventually(5, || async {
        pods.get("vip")
            .await
            .expect("vip")
            .status
            .and_then(|s| s.nominated_node_name)
    })
    .await;
    assert_eq!(nominated.as_deref(), Some("only"));
    // while the victim terminates, retries must not pick a second victim
    tokio::time::sleep(Duration::from_secs(2)).await;
    let survivor = if victim == "low-a" { "low-b" } else { "low-a" };
    assert!(
        pods.get(survivor)
            .await
            .expect("get")
            .metadata
            .deletion_timestamp
            .is_none(),
        "only one victim is needed"
    );
    // play the kubelet: the victim's containers stopped, the pod goes
    pods.delete(
        victim,
        &kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("finish deletion");
    assert_eq!(node_of(&client, "vip", 20).await.as_deref(), Some("only"));
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let preempted = events
        .list(
            &ListParams::default()
                .fields(&format!("involvedObject.name={victim},reason=Preempted")),
        )
        .await
        .expect("events");
    assert!(preempted
        .items
        .first()
        .and_then(|e| e.message.clone())
        .is_some_and(|m| m.starts_with("Preempted by pod ") && m.ends_with("on node only")));
}

/// The FailedScheduling message of a pod, once there is one.
async fn failed_scheduling(client: &kube::Client, name: &str, secs: u64) -> Option<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let fields = format!("involvedObject.name={name},reason=FailedScheduling");
    eventually(secs, || async {
        let l = events
            .list(&ListParams::default().fields(&fields))
            .await
            .expect("events");
        l.items.first().and_then(|e| e.message.clone())
    })
    .await
}

fn zone(z: &str) -> serde_json::Value {
    json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_affinity_follows_its_peer_into_a_zone() {
    let ts = TestServer::start();
    let (client, _stop) = start(&ts).await;
    // zone a is roomier: without affinity the resource scores would pick it
    node(&client, "a1", "16", zone("a")).await;
    node(&client, "a2", "16", zone("a")).await;
    node(&client, "b1", "2", zone("b")).await;
    node(&client, "b2", "2", zone("b")).await;
    pod(
        &client,
        "db",
        "100m",
        json!({"metadata": {"labels": {"app": "db"}}, "spec": {"nodeSelector": {"kubernetes.io/hostname": "b2"}}}),
    )
    .await;
    assert_eq!(node_of(&client, "db", 20).await.as_deref(), Some("b2"));
    let affinity = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "topology.kubernetes.io/zone"}]}});
    for name in ["web-1", "web-2", "web-3"] {
        pod(
            &client,
            name,
            "500m",
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"affinity": affinity}}),
        )
        .await;
    }
    for name in ["web-1", "web-2", "web-3"] {
        let n = node_of(&client, name, 20).await;
        assert!(
            matches!(n.as_deref(), Some("b1" | "b2")),
            "{name} runs in the db's zone b, not on {n:?}"
        );
    }
    // a pod plain pods would go to zone a
    pod(&client, "plain", "500m", json!({})).await;
    let n = node_of(&client, "plain", 20).await;
    assert!(matches!(n.as_deref(), Some("a1" | "a2")), "{n:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_anti_affinity_spreads_over_hostnames() {
    let ts = TestServer::start();
    let (client, _stop) = start(&ts).await;
    for n in ["h1", "h2", "h3"] {
        node(&client, n, "4", json!({})).await;
    }
    let anti = json!({"metadata": {"labels": {"app": "spread"}}, "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "spread"}}, "topologyKey": "kubernetes.io/hostname"}]}}}});
    for name in ["s1", "s2", "s3", "s4"] {
        pod(&client, name, "100m", anti.clone()).await;
    }
    let mut placed = Vec::new();
    for name in ["s1", "s2", "s3"] {
        placed.push(node_of(&client, name, 20).await.expect("placed"));
    }
    placed.sort();
    assert_eq!(placed, vec!["h1", "h2", "h3"], "one per hostname");
    assert_eq!(
        node_of(&client, "s4", 3).await,
        None,
        "a fourth fits nowhere"
    );
    let msg = failed_scheduling(&client, "s4", 10)
        .await
        .unwrap_or_default();
    assert!(
        msg.contains("3 node(s) didn't match pod anti-affinity rules"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_spread_balances_two_zones() {
    let ts = TestServer::start();
    let (client, _stop) = start(&ts).await;
    // zone a is roomier: without the constraint every pod would go there
    node(&client, "a1", "16", zone("a")).await;
    node(&client, "a2", "16", zone("a")).await;
    node(&client, "b1", "2", zone("b")).await;
    let spread = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
         "labelSelector": {"matchLabels": {"app": "web"}}}]}});
    for i in 1..=4 {
        pod(&client, &format!("web-{i}"), "100m", spread.clone()).await;
    }
    let mut in_b = 0;
    for i in 1..=4 {
        let n = node_of(&client, &format!("web-{i}"), 20)
            .await
            .expect("placed");
        in_b += usize::from(n == "b1");
    }
    assert_eq!(in_b, 2, "2 pods per zone");
    // the same without the constraint: all in zone a
    for i in 1..=2 {
        pod(
            &client,
            &format!("plain-{i}"),
            "100m",
            json!({"metadata": {"labels": {"app": "plain"}}}),
        )
        .await;
    }
    for i in 1..=2 {
        let n = node_of(&client, &format!("plain-{i}"), 20).await;
        assert!(matches!(n.as_deref(), Some("a1" | "a2")), "{n:?}");
    }
}
