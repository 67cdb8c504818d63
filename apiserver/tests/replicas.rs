//! Several apiservers over one etcd, as in an HA control plane: the
//! `kubernetes` endpoints list every live apiserver (master leases) and lose
//! one the moment it shuts down; a watch resumes on another apiserver from a
//! resourceVersion the first one gave; Service IPs and ports handed out
//! concurrently by both are never the same; and a graceful shutdown fails
//! /readyz first while still serving for --shutdown-delay-duration.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use apiserver::testing::{Etcd, Pki, TestServer};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::json;

/// The sorted addresses a jsonpath finds in the `kubernetes` object of `kind`.
fn kubernetes_ips(ts: &TestServer, kind: &str, path: &str) -> Vec<String> {
    let out = ts.kubectl(&["get", kind, "kubernetes", "-o", &format!("jsonpath={path}")]);
    let mut ips: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    ips.sort();
    ips
}

fn endpoint_ips(ts: &TestServer) -> Vec<String> {
    kubernetes_ips(ts, "endpoints", "{.subsets[*].addresses[*].ip}")
}

fn slice_ips(ts: &TestServer) -> Vec<String> {
    kubernetes_ips(ts, "endpointslice", "{.endpoints[*].addresses[*]}")
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn replica(of: &TestServer, advertise: &str) -> TestServer {
    let ip = advertise.parse().expect("ip");
    TestServer::start_on(Etcd::attach(&of.etcd.endpoint), Pki::new(), move |c| {
        c.advertise_address = ip;
    })
}

#[test]
fn kubernetes_endpoints_list_live_apiservers() {
    let a = TestServer::start();
    wait_for("the first apiserver in its endpoints", 10, || {
        endpoint_ips(&a) == ["127.0.0.1"]
    });
    let b = replica(&a, "127.0.0.2");
    // b announced itself; a's cache sees it
    wait_for("both apiservers in the endpoints", 10, || {
        endpoint_ips(&a) == ["127.0.0.1", "127.0.0.2"]
    });
    wait_for("both apiservers in the EndpointSlice", 10, || {
        slice_ips(&a) == ["127.0.0.1", "127.0.0.2"]
    });
    assert_eq!(
        a.etcd.keys("/registry/masterleases/"),
        [
            "/registry/masterleases/127.0.0.1",
            "/registry/masterleases/127.0.0.2"
        ]
    );
    // b stops: it takes itself out at once, not after its lease runs out
    drop(b);
    wait_for("b gone from the endpoints", 3, || {
        endpoint_ips(&a) == ["127.0.0.1"]
    });
    assert_eq!(slice_ips(&a), ["127.0.0.1"]);
    assert_eq!(
        a.etcd.keys("/registry/masterleases/"),
        ["/registry/masterleases/127.0.0.1"]
    );
}

#[test]
fn endpoint_reconciler_none_leaves_endpoints_alone() {
    let ts = TestServer::start_with(|c| c.endpoint_leases = false);
    std::thread::sleep(Duration::from_millis(500));
    assert!(ts.etcd.keys("/registry/masterleases/").is_empty());
    let out = ts.kubectl(&["get", "endpoints", "kubernetes"]);
    assert!(!out.status.success(), "no endpoints written with none");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_apiserver() {
    let a = TestServer::start();
    let b = replica(&a, "127.0.0.2");
    let on_a: Api<ConfigMap> = Api::namespaced(a.client().await, "default");
    let on_b: Api<ConfigMap> = Api::namespaced(b.client().await, "default");
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("configmap")
    };
    let first = on_a
        .create(&PostParams::default(), &cm("first"))
        .await
        .expect("create first");
    let rv = first.metadata.resource_version.clone().expect("rv");
    let second = on_a
        .create(&PostParams::default(), &cm("second"))
        .await
        .expect("create second");
    // a resourceVersion from a, resumed on b: the next change, and only it
    let stream = on_b
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .expect("watch on b");
    let mut stream = std::pin::pin!(stream);
    let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("stream item")
        .expect("event");
    match ev {
        WatchEvent::Added(got) => {
            assert_eq!(got.metadata.name.as_deref(), Some("second"));
            assert_eq!(
                got.metadata.resource_version,
                second.metadata.resource_version
            );
        }
        other => panic!("expected ADDED second, got {other:?}"),
    }
    // a resourceVersion b has not seen yet (just written through a): b waits for
    // it rather than replaying older events
    let third = on_a
        .create(&PostParams::default(), &cm("third"))
        .await
        .expect("create third");
    let rv3 = third.metadata.resource_version.clone().expect("rv");
    let stream = on_b
        .watch(&WatchParams::default().timeout(10), &rv3)
        .await
        .expect("watch on b");
    let mut stream = std::pin::pin!(stream);
    on_a.create(&PostParams::default(), &cm("fourth"))
        .await
        .expect("create fourth");
    let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("stream item")
        .expect("event");
    match ev {
        WatchEvent::Added(got) => assert_eq!(got.metadata.name.as_deref(), Some("fourth")),
        other => panic!("expected ADDED fourth, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apiservers_never_hand_out_the_same_ip_or_port() {
    let a = TestServer::start();
    let b = replica(&a, "127.0.0.2");
    let mut tasks = Vec::new();
    for (w, client) in [
        a.client().await,
        b.client().await,
        a.client().await,
        b.client().await,
    ]
    .into_iter()
    .enumerate()
    {
        let api: Api<Service> = Api::namespaced(client, "default");
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..30 {
                let svc: Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("s{w}-{i}")},
                    "spec": {"type": "NodePort", "ports": [{"port": 80}]},
                }))
                .expect("service");
                got.push(
                    api.create(&PostParams::default(), &svc)
                        .await
                        .expect("create service"),
                );
            }
            got
        }));
    }
    let (mut ips, mut ports) = (HashSet::new(), HashSet::new());
    for t in tasks {
        for s in t.await.expect("writer") {
            let spec = s.spec.expect("spec");
            let ip = spec.cluster_ip.expect("clusterIP");
            assert!(ips.insert(ip.clone()), "{ip} handed out twice");
            let port = spec.ports.expect("ports")[0].node_port.expect("nodePort");
            assert!(ports.insert(port), "{port} handed out twice");
        }
    }
    assert_eq!((ips.len(), ports.len()), (120, 120));
}

#[test]
fn shutdown_fails_readyz_first_and_serves_through_the_delay() {
    let ts = TestServer::start_with(|c| c.shutdown_delay = Duration::from_secs(3));
    assert!(ts.kubectl(&["get", "--raw", "/readyz"]).status.success());
    ts.begin_shutdown();
    wait_for("readyz to fail", 2, || {
        !ts.kubectl(&["get", "--raw", "/readyz"]).status.success()
    });
    // still serving: the load balancer has time to notice
    let out = ts.kubectl(&["get", "namespace", "default", "-o", "name"]);
    assert!(
        out.status.success(),
        "requests during the shutdown delay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // and this apiserver has already left the kubernetes endpoints
    assert!(endpoint_ips(&ts).is_empty(), "{:?}", endpoint_ips(&ts));
    // then the listener closes
    wait_for("the listener to close", 10, || {
        std::net::TcpStream::connect(ts.addr).is_err()
    });
}
