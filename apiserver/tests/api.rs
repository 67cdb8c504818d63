//! kube-rs and raw HTTPS against an apiserver on a real etcd: semantics and bad input.

use apiserver::testing as common;

use common::TestServer;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .expect("configmap")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_crud_selectors_and_conflict() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let a = cms
        .create(
            &PostParams::default(),
            &cm("a", json!({"app": "x", "tier": "db"})),
        )
        .await
        .expect("create a");
    cms.create(&PostParams::default(), &cm("b", json!({"app": "y"})))
        .await
        .expect("create b");
    let uid = a.metadata.uid.clone().expect("uid");
    assert!(!uid.is_empty());
    assert!(a.metadata.creation_timestamp.is_some());
    // the key layout is upstream's
    assert_eq!(
        ts.etcd.keys("/registry/configmaps/default/"),
        vec![
            "/registry/configmaps/default/a",
            "/registry/configmaps/default/b"
        ]
    );
    let sel = |s: &str| ListParams::default().labels(s);
    assert_eq!(cms.list(&sel("app=x")).await.expect("list").items.len(), 1);
    assert_eq!(
        cms.list(&sel("app in (x,y)"))
            .await
            .expect("list")
            .items
            .len(),
        2
    );
    assert_eq!(
        cms.list(&sel("app,!tier")).await.expect("list").items.len(),
        1
    );
    assert_eq!(
        cms.list(&ListParams::default().fields("metadata.name=b"))
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    // a stale update is 409 Conflict
    let mut stale = a.clone();
    let mut fresh = a.clone();
    fresh.data = Some([("k".to_string(), "new".to_string())].into());
    cms.replace("a", &PostParams::default(), &fresh)
        .await
        .expect("replace");
    stale.data = Some([("k".to_string(), "stale".to_string())].into());
    match cms.replace("a", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "Conflict");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // AlreadyExists
    match cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // generateName
    let mut g = cm("", json!({}));
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let made = cms
        .create(&PostParams::default(), &g)
        .await
        .expect("generateName");
    assert!(made
        .metadata
        .name
        .as_deref()
        .is_some_and(|n| n.starts_with("gen-") && n.len() == 9));
    // dryRun writes nothing
    cms.create(
        &PostParams {
            dry_run: true,
            ..Default::default()
        },
        &cm("dry", json!({})),
    )
    .await
    .expect("dry run");
    assert!(ts.etcd.keys("/registry/configmaps/default/dry").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_resource_version_and_selectors() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms
        .create(&PostParams::default(), &cm("w0", json!({})))
        .await
        .expect("create");
    let rv0 = first.metadata.resource_version.clone().expect("rv");
    cms.create(&PostParams::default(), &cm("w1", json!({"sel": "yes"})))
        .await
        .expect("create");
    cms.delete("w0", &DeleteParams::default())
        .await
        .expect("delete");
    // from rv0: we see w1 ADDED and w0 DELETED, in order
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &rv0)
        .await
        .expect("watch")
        .boxed();
    let mut seen = Vec::new();
    while let Some(ev) = stream.try_next().await.expect("event") {
        match ev {
            WatchEvent::Added(c) => {
                seen.push(format!("ADDED {}", c.metadata.name.unwrap_or_default()))
            }
            WatchEvent::Deleted(c) => {
                seen.push(format!("DELETED {}", c.metadata.name.unwrap_or_default()))
            }
            WatchEvent::Modified(c) => {
                seen.push(format!("MODIFIED {}", c.metadata.name.unwrap_or_default()))
            }
            _ => {}
        }
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, vec!["ADDED w1", "DELETED w0"]);
    // a label-filtered watch with initial events
    let mut stream = cms
        .watch(&WatchParams::default().labels("sel=yes").timeout(3), "0")
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Added(c)) => assert_eq!(c.metadata.name.as_deref(), Some("w1")),
        other => panic!("expected ADDED w1, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_watch_and_continue_are_410() {
    // a watch cache of 20 events: resuming from before them is 410 Gone
    let ts = TestServer::start_with(|c| c.watch_cache_size = 20);
    let client = ts.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms
        .create(&PostParams::default(), &cm("x0", json!({})))
        .await
        .expect("create");
    let rv0 = first.metadata.resource_version.clone().expect("rv");
    for i in 1..40 {
        cms.create(&PostParams::default(), &cm(&format!("x{i:02}"), json!({})))
            .await
            .expect("create");
    }
    let (code, body) = ts.raw(
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv0}"),
        "application/json",
        b"",
    );
    assert_eq!(code, 410, "{body}");
    assert_eq!(body["reason"], "Expired", "{body}");
    // a continue token whose revision etcd has compacted away is 410 too
    let page = cms
        .list(&ListParams::default().limit(5))
        .await
        .expect("page");
    let token = page.metadata.continue_.clone().expect("continue");
    cms.create(&PostParams::default(), &cm("later", json!({})))
        .await
        .expect("create");
    let status = ts.etcd.ctl(&["endpoint", "status", "-w", "json"]);
    let rev: i64 = status
        .split("\"revision\":")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .expect("revision");
    ts.etcd.ctl(&["compaction", &rev.to_string()]);
    match cms
        .list(&ListParams::default().limit(5).continue_token(&token))
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"), "{s:?}")
        }
        other => panic!("expected 410 for a compacted continue token, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_cluster_ips_and_node_ports() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let mk = |name: &str, typ: &str| -> Service {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"type": typ, "selector": {"app": name}, "ports": [{"port": 80}]}})).expect("svc")
    };
    let a = svcs
        .create(&PostParams::default(), &mk("a", "ClusterIP"))
        .await
        .expect("a");
    let b = svcs
        .create(&PostParams::default(), &mk("b", "NodePort"))
        .await
        .expect("b");
    let ip_a = a
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .expect("ip a");
    let ip_b = b
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .expect("ip b");
    assert_ne!(ip_a, ip_b);
    assert!(ip_a.starts_with("10.0.0."), "{ip_a}");
    let port = b
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p[0].node_port)
        .expect("node port");
    assert!((30000..=32767).contains(&port));
    assert_eq!(
        a.spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .map(|p| p[0].protocol.clone()),
        Some(Some("TCP".into()))
    );
    // the kubernetes service holds the first IP
    let k = svcs.get("kubernetes").await.expect("kubernetes service");
    assert_eq!(
        k.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some("10.0.0.1")
    );
    // asking for a taken IP is 422
    let mut dup = mk("c", "ClusterIP");
    dup.spec.as_mut().expect("spec").cluster_ip = Some(ip_a.clone());
    match svcs.create(&PostParams::default(), &dup).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 422, "{s:?}"),
        other => panic!("expected 422, got {other:?}"),
    }
    // deleting releases the IP: asking for it now works
    svcs.delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    let c = svcs
        .create(&PostParams::default(), &dup)
        .await
        .expect("reuse released ip");
    assert_eq!(c.spec.and_then(|s| s.cluster_ip), Some(ip_a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_bind_and_delete_gracefully() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})).expect("pod");
    let made = pods
        .create(&PostParams::default(), &p)
        .await
        .expect("create pod");
    let spec = made.spec.clone().expect("spec");
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(
        spec.containers[0].image_pull_policy.as_deref(),
        Some("Always")
    );
    assert_eq!(
        made.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .as_deref(),
        Some("Pending")
    );
    assert_eq!(
        made.status
            .as_ref()
            .and_then(|s| s.qos_class.clone())
            .as_deref(),
        Some("BestEffort")
    );
    // bind through pods/binding
    let (code, _) = ts.raw(
        "POST",
        "/api/v1/namespaces/default/pods/p/binding",
        "application/json",
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}}).to_string().as_bytes(),
    );
    assert_eq!(code, 201);
    let (code, body) = ts.raw(
        "POST",
        "/api/v1/namespaces/default/pods/p/binding",
        "application/json",
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n2"}}).to_string().as_bytes(),
    );
    assert_eq!(code, 409, "{body}");
    let bound = pods.get("p").await.expect("get");
    assert_eq!(bound.spec.and_then(|s| s.node_name).as_deref(), Some("n1"));
    // a bound pod is deleted gracefully: deletionTimestamp set, object stays
    pods.delete("p", &DeleteParams::default())
        .await
        .expect("delete");
    let terminating = pods.get("p").await.expect("still there");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    // grace period 0 removes it
    pods.delete(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("delete now");
    assert!(pods.get_opt("p").await.expect("get_opt").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_finalizers_and_terminating() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).expect("ns");
    let made = nss
        .create(&PostParams::default(), &ns)
        .await
        .expect("create ns");
    assert_eq!(made.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    cms.create(&PostParams::default(), &cm("x", json!({})))
        .await
        .expect("cm in team");
    nss.delete("team", &DeleteParams::default())
        .await
        .expect("delete ns");
    let t = nss.get("team").await.expect("terminating ns");
    assert_eq!(
        t.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    match cms
        .create(&PostParams::default(), &cm("y", json!({})))
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("expected 403 in a terminating namespace, got {other:?}"),
    }
    // a missing namespace is 404
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    match missing
        .create(&PostParams::default(), &cm("z", json!({})))
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404, "{s:?}"),
        other => panic!("expected 404, got {other:?}"),
    }
    // finalize with no finalizers left removes it
    let (code, body) = ts.raw("PUT", "/api/v1/namespaces/team/finalize", "application/json", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}, "spec": {"finalizers": []}}).to_string().as_bytes());
    assert_eq!(code, 200, "{body}");
    assert!(nss.get_opt("team").await.expect("get").is_none());
}

#[test]
fn bad_input_gets_status_and_writes_nothing() {
    let ts = TestServer::start();
    let before = ts.etcd.keys("/registry/configmaps/");
    let cms = "/api/v1/namespaces/default/configmaps";
    // (what, path, content type, body, code, reason)
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("malformed json", cms, "application/json", b"{\"metadata\": ".to_vec(), 400, "BadRequest"),
        ("malformed yaml", cms, "application/yaml", b"metadata: [unclosed".to_vec(), 400, "BadRequest"),
        ("not an object", cms, "application/json", b"[1,2]".to_vec(), 400, "BadRequest"),
        ("wrong kind", cms, "application/json", br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#.to_vec(), 400, "BadRequest"),
        ("wrong apiVersion", cms, "application/json", br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#.to_vec(), 400, "BadRequest"),
        ("invalid name", cms, "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#.to_vec(), 422, "Invalid"),
        ("no name", cms, "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}"#.to_vec(), 422, "Invalid"),
        ("slash in name", cms, "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a/b"}}"#.to_vec(), 422, "Invalid"),
        ("oversized", cms, "application/json", format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"x":"{}"}}}}"#, "a".repeat(4 * 1024 * 1024)).into_bytes(), 413, "RequestEntityTooLarge"),
        ("unknown field strict", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"bogus":1}"#.to_vec(), 400, "BadRequest"),
        ("truncated protobuf", cms, "application/vnd.kubernetes.protobuf", b"\x6b\x38\x73\x00\x0a\x10\x01".to_vec(), 400, "BadRequest"),
        ("not protobuf", cms, "application/vnd.kubernetes.protobuf", b"{}".to_vec(), 400, "BadRequest"),
        ("cbor body", cms, "application/cbor", b"\xa0".to_vec(), 415, "UnsupportedMediaType"),
        ("unknown resource", "/api/v1/namespaces/default/widgets", "application/json", b"{}".to_vec(), 404, "NotFound"),
        ("namespace mismatch", cms, "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"other"}}"#.to_vec(), 400, "BadRequest"),
        ("bad dryRun", "/api/v1/namespaces/default/configmaps?dryRun=Some", "application/json", br#"{"metadata":{"name":"x"}}"#.to_vec(), 400, "BadRequest"),
    ];
    for (what, path, ct, body, code, reason) in cases {
        let (got, status) = ts.raw("POST", path, ct, &body);
        assert_eq!(got, code, "{what}: {status}");
        assert_eq!(status["kind"], "Status", "{what}: {status}");
        assert_eq!(status["reason"], reason, "{what}: {status}");
        assert_eq!(status["code"], code, "{what}: {status}");
    }
    let gets: Vec<(&str, &str, u16)> = vec![
        (
            "bad label selector",
            "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(",
            400,
        ),
        (
            "bad field selector",
            "/api/v1/pods?fieldSelector=spec.bogus%3Dx",
            400,
        ),
        ("bad limit", "/api/v1/configmaps?limit=ten", 400),
        (
            "bad continue",
            "/api/v1/configmaps?limit=1&continue=garbage",
            400,
        ),
        (
            "missing object",
            "/api/v1/namespaces/default/configmaps/nope",
            404,
        ),
        ("unknown group", "/apis/nope.example.com/v1", 404),
    ];
    for (what, path, code) in gets {
        let (got, status) = ts.raw("GET", path, "application/json", b"");
        assert_eq!(got, code, "{what}: {status}");
        assert_eq!(status["kind"], "Status", "{what}: {status}");
    }
    let invalid = ts.raw("POST", cms, "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ok","labels":{"bad key!":"v"}}}"#);
    assert_eq!(invalid.0, 422);
    assert!(
        invalid.1["details"]["causes"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{}",
        invalid.1
    );
    assert_eq!(
        ts.etcd.keys("/registry/configmaps/"),
        before,
        "bad input must write nothing"
    );
    // anonymous: 401 except health and version
    assert_eq!(ts.anonymous("GET", "/api/v1/namespaces"), 401);
    assert_eq!(ts.anonymous("GET", "/readyz"), 200);
    assert_eq!(ts.anonymous("GET", "/livez"), 200);
    assert_eq!(ts.anonymous("GET", "/version"), 200);
}

#[test]
fn health_metrics_and_token_auth() {
    let ts = TestServer::start();
    ts.kubectl_ok(&["get", "pods"]);
    let metrics = ts.kubectl_ok(&["get", "--raw", "/metrics"]);
    assert!(metrics.contains("apiserver_request_total{"), "{metrics}");
    assert!(
        metrics.contains("apiserver_request_duration_seconds_bucket{"),
        "{metrics}"
    );
    assert!(metrics.contains("resource=\"pods\""));
    let ready = ts.kubectl_ok(&["get", "--raw", "/readyz?verbose"]);
    assert!(ready.contains("[+]etcd ok"), "{ready}");
    // ready only once the system namespaces exist: a create right after is never a 404
    assert!(
        ready.contains("[+]poststarthook/bootstrap-controller ok"),
        "{ready}"
    );
    // a bearer token from the token file authenticates
    let out = std::process::Command::new(common::kubectl_path())
        .args([
            // no credentials from the caller's KUBECONFIG or ~/.kube/config
            "--kubeconfig=/dev/null",
            "--server",
            &ts.url(),
            "--insecure-skip-tls-verify",
            "--token",
            common::TEST_TOKEN,
            "get",
            "ns",
            "default",
            "-o",
            "name",
        ])
        .output()
        .expect("kubectl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/default",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(common::kubectl_path())
        .args([
            // no credentials from the caller's KUBECONFIG or ~/.kube/config
            "--kubeconfig=/dev/null",
            "--server",
            &ts.url(),
            "--insecure-skip-tls-verify",
            "--token",
            "wrong",
            "get",
            "ns",
        ])
        .output()
        .expect("kubectl");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pagination_is_consistent() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..12 {
        cms.create(&PostParams::default(), &cm(&format!("p{i:02}"), json!({})))
            .await
            .expect("create");
    }
    let first = cms
        .list(&ListParams::default().limit(5))
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 5);
    let token = first.metadata.continue_.clone().expect("continue");
    // a write between pages does not show up in the continuation (a snapshot read)
    cms.create(&PostParams::default(), &cm("p99", json!({})))
        .await
        .expect("create");
    let mut names: Vec<String> = first
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let mut tok = Some(token);
    while let Some(t) = tok {
        let page = cms
            .list(&ListParams::default().limit(5).continue_token(&t))
            .await
            .expect("page");
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        tok = page.metadata.continue_.filter(|c| !c.is_empty());
    }
    let expected: Vec<String> = (0..12).map(|i| format!("p{i:02}")).collect();
    assert_eq!(names, expected);
    let _ = cms
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .expect("watch")
        .boxed()
        .next()
        .await;
}

#[test]
fn etcd_history_is_compacted_periodically() {
    let ts =
        TestServer::start_with(|c| c.compaction_interval = std::time::Duration::from_millis(700));
    for i in 0..5 {
        ts.kubectl_stdin_ok(
            &["create", "-f", "-"],
            &format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"h{i}"}}}}"#),
        );
    }
    // two rounds compact to the revision the first round saw
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                &format!("--endpoints={}", ts.etcd.endpoint),
                "get",
                "--rev=2",
                "--prefix",
                "/registry",
            ])
            .output()
            .expect("etcdctl");
        if String::from_utf8_lossy(&out.stderr).contains("compacted") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "history at revision 2 was never compacted"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // the cache and the API carry on
    ts.kubectl_ok(&["get", "configmap", "h4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_list_metadata_and_event_versions() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("m1", json!({"team": "a"})))
        .await
        .expect("create");
    // watch-list: initial ADDED events, then a bookmark marking their end
    let (_, body) = ts.raw(
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1",
        "application/json",
        b"",
    );
    let text = body
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "ADDED" && e["object"]["metadata"]["name"] == "m1"),
        "{text}"
    );
    let end = events
        .iter()
        .position(|e| e["type"] == "BOOKMARK")
        .expect("a bookmark");
    assert_eq!(
        events[end]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert!(events[..end].iter().all(|e| e["type"] == "ADDED"));
    // PartialObjectMetadata lists
    let meta = cms
        .list_metadata(&ListParams::default().labels("team=a"))
        .await
        .expect("metadata list");
    assert_eq!(meta.items.len(), 1);
    assert_eq!(meta.items[0].metadata.name.as_deref(), Some("m1"));
    // events.k8s.io/v1 and core/v1 Events are one object in two shapes
    let ev: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "e1", "namespace": "default"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "test", "reportingInstance": "t1",
        "action": "Testing", "reason": "Checked", "type": "Normal", "note": "all good",
        "regarding": {"kind": "ConfigMap", "name": "m1", "namespace": "default"},
    }))
    .expect("event");
    let evs: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
    evs.create(&PostParams::default(), &ev)
        .await
        .expect("create events.k8s.io event");
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let c = core.get("e1").await.expect("core view");
    assert_eq!(c.message.as_deref(), Some("all good"));
    assert_eq!(c.involved_object.name.as_deref(), Some("m1"));
    assert_eq!(c.reporting_component.as_deref(), Some("test"));
    let listed = evs
        .list(&ListParams::default().fields("regarding.name=m1"))
        .await
        .expect("list v1");
    assert_eq!(
        listed.items.first().and_then(|e| e.note.clone()).as_deref(),
        Some("all good")
    );
    // events expire through an etcd lease (--event-ttl)
    let kv = ts
        .etcd
        .ctl(&["get", "/registry/events/default/e1", "-w", "json"]);
    let lease = kv
        .split("\"lease\":")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or("0");
    assert_ne!(lease, "0", "the event has no lease: {kv}");
    let table = ts.kubectl_ok(&["get", "events"]);
    assert!(
        table.contains("Checked") && table.contains("all good"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletecollection_and_dry_run_everywhere() {
    let ts = TestServer::start();
    let client = ts.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (n, team) in [("d1", "a"), ("d2", "a"), ("d3", "b")] {
        cms.create(&PostParams::default(), &cm(n, json!({"team": team})))
            .await
            .expect("create");
    }
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    // dry-run update and patch change nothing
    let mut c = cms.get("d1").await.expect("get");
    c.data = Some([("k".to_string(), "dry".to_string())].into());
    let out = cms.replace("d1", &dry, &c).await.expect("dry replace");
    assert_eq!(
        out.data
            .as_ref()
            .and_then(|d| d.get("k"))
            .map(String::as_str),
        Some("dry")
    );
    let patch = kube::api::Patch::Merge(json!({"data": {"k": "dry2"}}));
    cms.patch(
        "d1",
        &kube::api::PatchParams {
            dry_run: true,
            ..Default::default()
        },
        &patch,
    )
    .await
    .expect("dry patch");
    assert_eq!(
        cms.get("d1")
            .await
            .expect("get")
            .data
            .and_then(|d| d.get("k").cloned())
            .as_deref(),
        Some("v")
    );
    // dry-run delete keeps the object
    cms.delete(
        "d1",
        &DeleteParams {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .expect("dry delete");
    assert!(cms.get_opt("d1").await.expect("get").is_some());
    // deletecollection by label, dry run first
    cms.delete_collection(
        &DeleteParams {
            dry_run: true,
            ..Default::default()
        },
        &ListParams::default().labels("team=a"),
    )
    .await
    .expect("dry dc");
    assert_eq!(
        cms.list(&ListParams::default().labels("team"))
            .await
            .expect("list")
            .items
            .len(),
        3
    );
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("team=a"),
    )
    .await
    .expect("deletecollection");
    let left: Vec<String> = cms
        .list(&ListParams::default().labels("team"))
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, vec!["d3"]);
    assert_eq!(
        ts.etcd.keys("/registry/configmaps/default/"),
        vec!["/registry/configmaps/default/d3"]
    );
}

#[test]
fn garbage_never_gets_a_server_error() {
    // a seeded sweep of malformed bodies, paths and parameters: every answer is a
    // Status below 500
    let ts = TestServer::start();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let paths = [
        "/api/v1/namespaces/default/configmaps",
        "/api/v1/namespaces/default/pods",
        "/apis/apps/v1/namespaces/default/deployments",
        "/api/v1/namespaces/default/services",
        "/api/v1/namespaces",
        "/api/v1/nodes",
        "/apis/batch/v1/namespaces/default/cronjobs",
    ];
    let fragments: [&[u8]; 12] = [
        b"{",
        b"}",
        b"\"metadata\":",
        b"{\"name\":\"x\"}",
        b"[",
        b"]",
        b"null",
        b"\"spec\":",
        b"\xff\xfe",
        b"1e999",
        b"\"kind\":\"Pod\"",
        b",",
    ];
    let types = [
        "application/json",
        "application/yaml",
        "application/vnd.kubernetes.protobuf",
        "application/merge-patch+json",
        "text/plain",
    ];
    for i in 0..60 {
        let mut body = Vec::new();
        for _ in 0..(next() % 12) {
            body.extend_from_slice(fragments[(next() % fragments.len() as u64) as usize]);
        }
        let path = paths[(next() % paths.len() as u64) as usize];
        let ct = types[(next() % types.len() as u64) as usize];
        for (method, p) in [
            ("POST", path.to_string()),
            ("PUT", format!("{path}/x{i}")),
            ("PATCH", format!("{path}/x{i}")),
        ] {
            let (code, status) = ts.raw(method, &p, ct, &body);
            assert!(
                (400..500).contains(&code),
                "{method} {p} ({ct}) {:?}: {code} {status}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    for q in [
        "limit=-1",
        "timeoutSeconds=abc",
        "resourceVersion=xyz",
        "resourceVersionMatch=Exact",
        "continue=%00",
        "fieldSelector=a%3D%3D%3Db",
        "labelSelector=%21%21",
    ] {
        let (code, status) = ts.raw(
            "GET",
            &format!("/api/v1/namespaces/default/configmaps?{q}"),
            "application/json",
            b"",
        );
        assert!(code < 500, "{q}: {code} {status}");
    }
}

#[test]
fn etcd_over_tls_with_a_dead_endpoint_first() {
    let pki = common::Pki::new();
    let etcd = common::Etcd::start_tls(&pki);
    let (cert, key) = pki.client("kube-apiserver-etcd-client", &[]);
    let live = etcd.endpoint.clone();
    let dead = format!("https://127.0.0.1:{}", common::free_port());
    let ca = pki.ca_pem.clone();
    let ts = TestServer::start_on(etcd, pki, move |c| {
        c.etcd_servers = vec![dead, live];
        c.etcd_tls = apiserver::storage::EtcdTls {
            ca_pem: Some(ca.into_bytes()),
            cert_pem: Some(cert.into_bytes()),
            key_pem: Some(key.into_bytes()),
        };
    });
    ts.kubectl_stdin_ok(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"over-tls"}}"#,
    );
    assert_eq!(
        ts.kubectl_ok(&["get", "cm", "over-tls", "-o", "name"])
            .trim(),
        "configmap/over-tls"
    );
    let ready = ts.kubectl_ok(&["get", "--raw", "/readyz?verbose"]);
    assert!(ready.contains("[+]etcd ok"), "{ready}");
}
