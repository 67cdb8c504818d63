//! common/ against a real apiserver on a real etcd.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use apiserver::testing::TestServer;
use common::events::{EventType, Recorder};
use common::informers::{Change, Informers};
use common::leaderelection::{LeaderElectionConfig, LeaderElector, Outcome};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, ObjectReference};
use kube::api::{Api, ListParams, PostParams};
use tokio::sync::watch;

fn election(identity: &str) -> LeaderElectionConfig {
    LeaderElectionConfig {
        namespace: "kube-system".into(),
        name: "test-component".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
    }
}

async fn holder(client: &kube::Client) -> (Option<String>, i32) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let l = leases.get("test-component").await.expect("lease");
    let spec = l.spec.unwrap_or_default();
    (spec.holder_identity, spec.lease_transitions.unwrap_or(0))
}

async fn wait_for<F: Fn() -> bool>(what: &str, secs: u64, f: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs an elector whose work counts its ticks while leading.
fn candidate(
    client: &kube::Client,
    id: &str,
    shutdown: watch::Receiver<bool>,
    ticks: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Outcome> {
    let el = LeaderElector::new(client.clone(), election(id));
    tokio::spawn(el.run(shutdown, move |mut stop| async move {
        while !*stop.borrow() {
            ticks.fetch_add(1, Ordering::SeqCst);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.changed() => {}
            }
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_failover() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let (stop_a, rx_a) = watch::channel(false);
    let (_stop_b, rx_b) = watch::channel(false);
    let (a_ticks, b_ticks) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a = candidate(&client, "a", rx_a, a_ticks.clone());
    wait_for("a to lead", 10, || a_ticks.load(Ordering::SeqCst) > 0).await;
    let b = candidate(&client, "b", rx_b, b_ticks.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b_ticks.load(Ordering::SeqCst), 0, "only one leader works");
    assert_eq!(holder(&client).await.0.as_deref(), Some("a"));
    // a clean shutdown releases the lease: b takes over well within a lease duration
    stop_a.send(true).expect("stop a");
    assert_eq!(a.await.expect("a"), Outcome::Shutdown);
    let released_at = tokio::time::Instant::now();
    wait_for("b to lead", 10, || b_ticks.load(Ordering::SeqCst) > 0).await;
    assert!(
        released_at.elapsed() < Duration::from_secs(3),
        "took {:?}",
        released_at.elapsed()
    );
    let (h, transitions) = holder(&client).await;
    assert_eq!(h.as_deref(), Some("b"));
    assert_eq!(transitions, 1);
    // a leader that dies without releasing: a new candidate waits for the lease to expire
    b.abort();
    let (_stop_c, rx_c) = watch::channel(false);
    let c_ticks = Arc::new(AtomicUsize::new(0));
    let died_at = tokio::time::Instant::now();
    let _c = candidate(&client, "c", rx_c, c_ticks.clone());
    wait_for("c to lead", 15, || c_ticks.load(Ordering::SeqCst) > 0).await;
    assert!(
        died_at.elapsed() >= Duration::from_secs(2),
        "c took a live lease after {:?}",
        died_at.elapsed()
    );
    assert_eq!(holder(&client).await.0.as_deref(), Some("c"));
}

/// A leader whose lease is taken from it stops its work, campaigns again,
/// and once the lease is free leads again with a fresh work: losing the
/// lease is not the end of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_the_work_and_is_campaigned_for_again() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let (_stop, shutdown) = watch::channel(false);
    let terms = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let el = LeaderElector::new(client.clone(), election("a"));
    let (t, r) = (terms.clone(), running.clone());
    let elector = tokio::spawn(el.run_terms(shutdown, move |mut stop| {
        t.fetch_add(1, Ordering::SeqCst);
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
            r.fetch_sub(1, Ordering::SeqCst);
        }
    }));
    wait_for("a to lead", 10, || running.load(Ordering::SeqCst) == 1).await;
    // someone else takes the lease (as a partitioned leader finds on return)
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let mut lease = leases.get("test-component").await.expect("lease");
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = Some("intruder".into());
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        ));
    }
    leases
        .replace("test-component", &PostParams::default(), &lease)
        .await
        .expect("take the lease");
    wait_for("a's work to stop", 10, || {
        running.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(terms.load(Ordering::SeqCst), 1);
    assert!(!elector.is_finished(), "the elector campaigns on");
    // the intruder never renews: a leads again after the lease runs out
    wait_for("a to lead again", 15, || {
        running.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(terms.load(Ordering::SeqCst), 2);
    assert_eq!(holder(&client).await.0.as_deref(), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informers_share_one_watch_per_type() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let (_stop, shutdown) = watch::channel(false);
    let informers = Informers::new(client.clone(), None, shutdown);
    let first = informers.get::<ConfigMap>();
    let second = informers.get::<ConfigMap>();
    let mut changes = second.subscribe();
    first.wait_synced().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "shared"}, "data": {"k": "v"}}),
    )
    .expect("cm");
    let created = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("create");
    assert!(
        created.metadata.managed_fields.is_some(),
        "the apiserver tracks the create"
    );
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Change::Applied(o)) = changes.recv().await {
                if o.metadata.name.as_deref() == Some("shared") {
                    return;
                }
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "the change was not announced");
    let cached = first
        .store()
        .state()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some("shared"))
        .expect("in the cache");
    // the cache keeps no managedFields, as upstream's components trim theirs
    assert_eq!(cached.metadata.managed_fields, None);
    // both consumers read the same cache, fed by a single WATCH request
    let metrics = ts.kubectl_ok(&["get", "--raw", "/metrics"]);
    let watches: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains("verb=\"WATCH\"")
                && l.contains("resource=\"configmaps\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(watches, 1, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_events_are_aggregated() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let rec = Recorder::new(client.clone(), "test-controller", Some("host-1"));
    let obj = ObjectReference {
        kind: Some("ConfigMap".into()),
        name: Some("thing".into()),
        namespace: Some("default".into()),
        uid: Some("u-1".into()),
        api_version: Some("v1".into()),
        ..Default::default()
    };
    rec.try_record(&obj, EventType::Normal, "Synced", "all good")
        .await
        .expect("first");
    rec.try_record(&obj, EventType::Normal, "Synced", "all good")
        .await
        .expect("second");
    rec.try_record(&obj, EventType::Warning, "Failed", "not good")
        .await
        .expect("other");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let list = events
        .list(&ListParams::default().fields("involvedObject.name=thing"))
        .await
        .expect("list");
    assert_eq!(list.items.len(), 2);
    let synced = list
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("Synced"))
        .expect("synced");
    assert_eq!(synced.count, Some(2));
    assert_eq!(
        synced.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("test-controller")
    );
    let table = ts.kubectl_ok(&["get", "events"]);
    assert!(
        table.contains("Synced") && table.contains("all good"),
        "{table}"
    );
}

#[tokio::test]
async fn health_and_metrics_endpoints() {
    let health = common::server::Health::new();
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = ready.clone();
    health.add("informer-sync", move || r.load(Ordering::SeqCst));
    let registry = prometheus::Registry::new();
    let c = prometheus::IntCounter::new("test_things_total", "things").expect("counter");
    registry.register(Box::new(c.clone())).expect("register");
    c.inc();
    let (_stop, shutdown) = watch::channel(false);
    let addr = common::server::serve(
        "127.0.0.1:0".parse().expect("addr"),
        health,
        registry,
        shutdown,
    )
    .await
    .expect("serve");
    let get = move |path: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                &format!("http://{addr}{path}"),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let g = tokio::task::spawn_blocking(move || {
        (get("/healthz"), get("/readyz?verbose"), get("/metrics"))
    });
    let (healthz, not_ready, metrics) = g.await.expect("curl");
    assert!(healthz.ends_with("ok\n200"), "{healthz}");
    assert!(
        not_ready.contains("[-]informer-sync failed") && not_ready.ends_with("500"),
        "{not_ready}"
    );
    assert!(metrics.contains("test_things_total 1"), "{metrics}");
    ready.store(true, Ordering::SeqCst);
    let again = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{addr}/readyz"),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    assert_eq!(again.await.expect("curl"), "200");
}
