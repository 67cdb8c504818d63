//! High availability, on a `local-up-cluster.sh --ha` cluster: three etcd
//! members, three apiservers behind haproxy, two controller-managers and two
//! schedulers, one worker node.
//!
//! - The `kubernetes` endpoints list the three apiservers, two after one is
//!   killed, three again after it is back.
//! - 500 ClusterIP and 500 NodePort Services created concurrently through the
//!   three apiservers get no duplicate IP or port.
//! - A watch-consistency auditor: writers create 10,000 ConfigMaps through the
//!   load balancer while three watchers (through the load balancer too, each
//!   resuming from its last resourceVersion whenever its stream breaks) record
//!   every event. Meanwhile an apiserver is killed and restarted, an etcd member
//!   is killed and restarted, and the controller-manager and scheduler leaders
//!   are killed. Every watcher must see every committed change exactly once, in
//!   resourceVersion order, and no acknowledged write may be missing.
//! - In the same run a Deployment rolls out to completion and no container
//!   restarts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{eventually, Cluster, Options};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

const OBJECTS: usize = 10_000;
const WRITERS: usize = 8;
const WATCHERS: usize = 3;
const APISERVERS: [&str; 3] = ["10.240.0.11", "10.240.0.12", "10.240.0.13"];

fn rv_of(meta: &kube::api::ObjectMeta) -> i64 {
    meta.resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

async fn endpoint_ips(client: &kube::Client) -> Option<Vec<String>> {
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let e = eps.get("kubernetes").await.ok()?;
    let mut ips: Vec<String> = e
        .subsets
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.addresses.unwrap_or_default())
        .map(|a| a.ip)
        .collect();
    ips.sort();
    Some(ips)
}

async fn wait_endpoints(client: &kube::Client, want: &[&str]) -> Duration {
    let start = Instant::now();
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    eventually(
        &format!("the kubernetes endpoints to be {want:?}"),
        60,
        || {
            let want = want.clone();
            async move { (endpoint_ips(client).await? == want).then_some(()) }
        },
    )
    .await;
    start.elapsed()
}

/// A client for one apiserver, not the load balancer.
async fn client_for(c: &Cluster, ip: &str) -> kube::Client {
    let mut kc = kube::config::Kubeconfig::read_from(&c.kubeconfig).expect("admin kubeconfig");
    for cl in &mut kc.clusters {
        if let Some(cluster) = cl.cluster.as_mut() {
            cluster.server = Some(format!("https://{ip}:6443"));
        }
    }
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("client config");
    kube::Client::try_from(cfg).expect("client")
}

/// The pid in a leader's holderIdentity (`host_pid`), and which replica's pid file names it.
fn leader_replica(c: &Cluster, holder: &str, component: &str) -> Option<String> {
    let pid = holder.rsplit('_').next()?;
    (1..=2).map(|i| format!("{component}-{i}")).find(|name| {
        std::fs::read_to_string(c.out.join(format!("{name}.pid")))
            .map(|p| p.trim() == pid)
            .unwrap_or(false)
    })
}

async fn holder(client: &kube::Client, lease: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    leases.get(lease).await.ok()?.spec?.holder_identity
}

/// SIGKILL the current leader of `component`; how long until another replica holds the lease.
async fn kill_leader(c: &Cluster, client: &kube::Client, component: &str) -> Duration {
    let old = eventually(&format!("a {component} leader"), 60, || async {
        holder(client, component).await
    })
    .await;
    let name = leader_replica(c, &old, component)
        .unwrap_or_else(|| panic!("{old} is not one of the {component} replicas"));
    c.fault(&["kill", &name]);
    let killed = Instant::now();
    eventually(&format!("a new {component} leader"), 90, || {
        let old = old.clone();
        async move { holder(client, component).await.filter(|h| *h != old) }
    })
    .await;
    let took = killed.elapsed();
    c.fault(&["start", &name]);
    eprintln!("{component}: leader {name} killed; a new leader after {took:.1?}");
    took
}

/// 500 ClusterIP and 500 NodePort Services through the three apiservers at once:
/// no IP or port handed out twice.
async fn no_duplicate_allocations(clients: &[kube::Client], lb: &kube::Client) {
    let ns: Api<Namespace> = Api::all(lb.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "alloc"}})).expect("ns"),
    )
    .await
    .expect("namespace alloc");
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..12 {
        let api: Api<Service> = Api::namespaced(clients[w % clients.len()].clone(), "alloc");
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 1000 {
                    return got;
                }
                let typ = if i % 2 == 0 { "ClusterIP" } else { "NodePort" };
                let svc: Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("s{i}")},
                    "spec": {"type": typ, "ports": [{"port": 80}], "selector": {"app": "none"}},
                }))
                .expect("service");
                let mut tries = 0;
                let created = loop {
                    match api.create(&PostParams::default(), &svc).await {
                        Ok(s) => break s,
                        Err(e) => {
                            tries += 1;
                            assert!(tries < 20, "creating service s{i}: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                got.push(created);
            }
        }));
    }
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    let mut n = 0;
    for t in tasks {
        for s in t.await.expect("service writer") {
            n += 1;
            let spec = s.spec.unwrap_or_default();
            let ip = spec.cluster_ip.unwrap_or_default();
            assert!(!ip.is_empty(), "every Service got a ClusterIP");
            assert!(ips.insert(ip.clone()), "ClusterIP {ip} handed out twice");
            for p in spec.ports.unwrap_or_default() {
                if let Some(np) = p.node_port {
                    assert!(ports.insert(np), "NodePort {np} handed out twice");
                }
            }
        }
    }
    assert_eq!(n, 1000);
    assert_eq!(ports.len(), 500, "every NodePort Service got its port");
    eprintln!(
        "1000 Services through 3 apiservers: {} distinct IPs, {} distinct ports",
        ips.len(),
        ports.len()
    );
    let _ = ns.delete("alloc", &DeleteParams::default()).await;
}

/// What one watcher saw.
#[derive(Default)]
struct Seen {
    events: Vec<(String, i64, &'static str)>,
    /// 410 Gone answers: the watcher could not resume and would have to relist
    gone: usize,
    reconnects: usize,
}

/// Watch ConfigMaps in `ns` from `rv`, resuming from the last resourceVersion
/// seen (events or bookmarks) whenever the stream ends, until `want` ADDED
/// events arrived (or a 410).
async fn watcher(api: Api<ConfigMap>, mut rv: String, want: usize, seen: Arc<Mutex<Seen>>) {
    let mut added = 0;
    loop {
        let wp = WatchParams::default().timeout(30);
        let stream = match api.watch(&wp, &rv).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                seen.lock().expect("seen").reconnects += 1;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            let mut s = seen.lock().expect("seen");
            let (cm, typ) = match ev {
                Ok(WatchEvent::Added(cm)) => (cm, "ADDED"),
                Ok(WatchEvent::Modified(cm)) => (cm, "MODIFIED"),
                Ok(WatchEvent::Deleted(cm)) => (cm, "DELETED"),
                Ok(WatchEvent::Bookmark(b)) => {
                    rv = b.metadata.resource_version;
                    continue;
                }
                Ok(WatchEvent::Error(e)) if e.code == 410 => {
                    s.gone += 1;
                    return;
                }
                Ok(WatchEvent::Error(_)) | Err(_) => break,
            };
            rv = cm.metadata.resource_version.clone().unwrap_or_default();
            let name = cm.metadata.name.clone().unwrap_or_default();
            // the root-ca publisher's kube-root-ca.crt is not the auditor's
            if !name.starts_with("cm-") {
                continue;
            }
            s.events.push((name, rv_of(&cm.metadata), typ));
            if typ == "ADDED" {
                added += 1;
            }
            if added >= want {
                return;
            }
        }
        seen.lock().expect("seen").reconnects += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn high_availability() {
    if !e2e::can_run() {
        return;
    }
    let c = Cluster::up_with(&Options {
        nodes: 1,
        ha: true,
        out_dir: "e2e-ha",
        // room for 1000 ClusterIPs
        env: &[("SERVICE_CLUSTER_IP_RANGE", "10.0.0.0/20")],
        ..Options::default()
    });
    let lb = c.client().await;
    let mut direct = Vec::new();
    for ip in APISERVERS {
        direct.push(client_for(&c, ip).await);
    }

    // every apiserver in the kubernetes endpoints; kubectl says so too
    wait_endpoints(&lb, &APISERVERS).await;
    let shown = c.kubectl_ok(&[
        "get",
        "endpoints",
        "kubernetes",
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ]);
    assert_eq!(
        shown.split_whitespace().count(),
        3,
        "kubectl get endpoints kubernetes: {shown}"
    );

    no_duplicate_allocations(&direct, &lb).await;

    // a Deployment to roll out during the faults
    c.apply(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "web", "image": c.busybox, "command": ["sleep", "100000"], "env": [{"name": "ROUND", "value": "1"}]}]}}}
    }));
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);

    // the auditor
    let nsapi: Api<Namespace> = Api::all(lb.clone());
    nsapi
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "audit"}})).expect("ns"),
        )
        .await
        .expect("namespace audit");
    let cms: Api<ConfigMap> = Api::namespaced(lb.clone(), "audit");
    let start_rv = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut watchers = Vec::new();
    let mut seens = Vec::new();
    for _ in 0..WATCHERS {
        let seen = Arc::new(Mutex::new(Seen::default()));
        seens.push(seen.clone());
        // each watcher its own client: its own connections through the load balancer
        let api: Api<ConfigMap> = Api::namespaced(c.client().await, "audit");
        watchers.push(tokio::spawn(watcher(api, start_rv.clone(), OBJECTS, seen)));
    }
    let written = Arc::new(AtomicUsize::new(0));
    let allowed = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let api = cms.clone();
        let (written, allowed, next, retries, acked) = (
            written.clone(),
            allowed.clone(),
            next.clone(),
            retries.clone(),
            acked.clone(),
        );
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= OBJECTS {
                    return;
                }
                while i >= allowed.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let name = format!("cm-{i:05}");
                let cm: ConfigMap = serde_json::from_value(
                    json!({"metadata": {"name": name}, "data": {"i": i.to_string()}}),
                )
                .expect("configmap");
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    match api.create(&PostParams::default(), &cm).await {
                        Ok(made) => {
                            acked
                                .lock()
                                .expect("acked")
                                .insert(name.clone(), rv_of(&made.metadata));
                            break;
                        }
                        // an earlier try was committed though its answer was lost
                        Err(kube::Error::Api(e)) if e.code == 409 => break,
                        Err(e) => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            assert!(
                                Instant::now() < deadline,
                                "creating {name} for 2 minutes: {e}"
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                written.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let until = |n: usize| {
        let (written, allowed) = (written.clone(), allowed.clone());
        async move {
            allowed.store(n, Ordering::Relaxed);
            eventually(&format!("{n} objects written"), 300, || {
                let written = written.clone();
                async move { (written.load(Ordering::Relaxed) >= n).then_some(()) }
            })
            .await;
        }
    };
    let t0 = Instant::now();
    until(1500).await;

    // an apiserver dies: it leaves the endpoints, writes go on; then it comes back
    c.fault(&["kill", "kube-apiserver-1"]);
    until(3000).await;
    let left = wait_endpoints(&lb, &APISERVERS[1..]).await;
    eprintln!("kube-apiserver-1 killed: out of the kubernetes endpoints within {left:.1?}");
    c.fault(&["start", "kube-apiserver-1"]);
    wait_endpoints(&lb, &APISERVERS).await;
    until(4500).await;

    // an etcd member dies, writes go on; then it comes back
    c.fault(&["kill", "etcd-2"]);
    until(6000).await;
    c.fault(&["start", "etcd-2"]);
    until(7000).await;

    // a rollout while the controller-manager and scheduler leaders die
    c.kubectl_ok(&["set", "env", "deployment/web", "ROUND=2"]);
    let cm_failover = kill_leader(&c, &lb, "kube-controller-manager").await;
    until(8500).await;
    let sched_failover = kill_leader(&c, &lb, "kube-scheduler").await;
    until(OBJECTS).await;
    for w in writers {
        w.await.expect("writer");
    }
    eprintln!(
        "{OBJECTS} ConfigMaps written in {:.1?} ({} retried requests)",
        t0.elapsed(),
        retries.load(Ordering::Relaxed)
    );
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=300s"]);

    // every watcher saw everything, once, in order
    let all = tokio::time::timeout(
        Duration::from_secs(180),
        futures::future::join_all(watchers),
    )
    .await;
    assert!(
        all.is_ok(),
        "the watchers did not see all {OBJECTS} objects within 3 minutes"
    );
    let listed = cms.list(&ListParams::default()).await.expect("list");
    let ours: Vec<&ConfigMap> = listed
        .items
        .iter()
        .filter(|cm| {
            cm.metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .starts_with("cm-")
        })
        .collect();
    assert_eq!(ours.len(), OBJECTS, "every object was committed");
    let truth: BTreeMap<String, i64> = ours
        .iter()
        .map(|cm| {
            (
                cm.metadata.name.clone().unwrap_or_default(),
                rv_of(&cm.metadata),
            )
        })
        .collect();
    let acked = acked.lock().expect("acked").clone();
    for (name, rv) in &acked {
        assert_eq!(
            truth.get(name),
            Some(rv),
            "acknowledged write {name}@{rv} is what is stored"
        );
    }
    let mut first: Option<Vec<(String, i64, &'static str)>> = None;
    for (i, seen) in seens.iter().enumerate() {
        let s = seen.lock().expect("seen");
        assert_eq!(
            s.gone, 0,
            "watcher {i} was told 410 Gone: it could not resume"
        );
        let mut last = 0;
        let mut names = HashSet::new();
        for (name, rv, typ) in &s.events {
            assert_eq!(*typ, "ADDED", "watcher {i}: unexpected {typ} {name}@{rv}");
            assert!(
                *rv > last,
                "watcher {i}: {name}@{rv} after revision {last}: out of order or repeated"
            );
            last = *rv;
            assert!(names.insert(name.clone()), "watcher {i} saw {name} twice");
            assert_eq!(
                truth.get(name),
                Some(rv),
                "watcher {i}: {name}@{rv} is not what was committed"
            );
        }
        assert_eq!(
            names.len(),
            OBJECTS,
            "watcher {i} saw every committed object"
        );
        eprintln!(
            "watcher {i}: {} events, {} reconnects",
            s.events.len(),
            s.reconnects
        );
        match &first {
            None => first = Some(s.events.clone()),
            Some(f) => assert!(
                *f == s.events,
                "watcher {i} saw the same history as watcher 0"
            ),
        }
    }

    // no container restarted through all this
    let pods: Api<Pod> = Api::namespaced(lb.clone(), "default");
    for p in pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods")
        .items
    {
        for cs in p
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default()
        {
            assert_eq!(cs.restart_count, 0, "{:?} restarted", p.metadata.name);
        }
    }
    eprintln!("leader failover after SIGKILL: controller-manager {cm_failover:.1?}, scheduler {sched_failover:.1?} (lease 15 s)");
}
