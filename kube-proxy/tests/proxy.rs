//! kube-proxy for real, as root: a real apiserver and etcd, a "node" network
//! namespace running the kube-proxy binary, two backend pod namespaces and a
//! client pod namespace routed through the node (a veth each, like a routed
//! CNI), and an outside namespace reaching a NodePort on the node's IP.
//! Everything the test makes (namespaces, processes, the socket) is removed
//! on drop, also when an assertion fails. Needs root, nft, ip, socat, curl
//! and python3: skipped without them, except under CI, where that fails.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use apiserver::testing::{NetnsRelay, TestServer};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn has(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn can_run() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let ok = root
        && ["nft", "ip", "socat", "curl", "python3"]
            .iter()
            .all(|c| has(c));
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "CI must run this as root with nft, ip, socat, curl and python3"
    );
    ok
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces and processes of one test; all removed on drop.
struct Lab {
    tag: String,
    children: Vec<Child>,
    proxy: Option<Child>,
    relay: Option<NetnsRelay>,
    netns: Vec<String>,
}

const NODE_IP: &str = "10.250.0.1";
const OUTSIDE_IP: &str = "10.250.0.2";

impl Lab {
    fn new() -> Lab {
        let tag = format!("{}", std::process::id() % 100_000);
        let mut lab = Lab {
            relay: None,
            tag,
            children: Vec::new(),
            proxy: None,
            netns: Vec::new(),
        };
        let node = lab.ns("node");
        must(&["ip", "netns", "add", &node]);
        lab.netns.push(node.clone());
        must(&["ip", "-n", &node, "link", "set", "lo", "up"]);
        must(&[
            "ip",
            "netns",
            "exec",
            &node,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        lab
    }

    fn ns(&self, what: &str) -> String {
        format!("kp{what}-{}", self.tag)
    }

    /// A pod namespace with `ip`, routed through the node over its own veth.
    fn pod(&mut self, name: &str, ip: &str) {
        let ns = self.ns(name);
        let node = self.ns("node");
        must(&["ip", "netns", "add", &ns]);
        self.netns.push(ns.clone());
        let host_if = format!("v{name}");
        must(&[
            "ip", "-n", &node, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        must(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/32"),
            "dev",
            "eth0",
        ]);
        must(&["ip", "-n", &ns, "route", "add", "10.244.0.1", "dev", "eth0"]);
        must(&[
            "ip",
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            "10.244.0.1",
        ]);
        must(&["ip", "-n", &node, "link", "set", &host_if, "up"]);
        must(&[
            "ip",
            "-n",
            &node,
            "addr",
            "add",
            "10.244.0.1/32",
            "dev",
            &host_if,
        ]);
        must(&[
            "ip",
            "-n",
            &node,
            "route",
            "add",
            &format!("{ip}/32"),
            "dev",
            &host_if,
        ]);
    }

    /// A namespace outside the cluster on the node's network.
    fn outside(&mut self) {
        let ns = self.ns("out");
        let node = self.ns("node");
        must(&["ip", "netns", "add", &ns]);
        self.netns.push(ns.clone());
        must(&[
            "ip", "-n", &node, "link", "add", "vout", "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        must(&[
            "ip",
            "-n",
            &node,
            "addr",
            "add",
            &format!("{NODE_IP}/24"),
            "dev",
            "vout",
        ]);
        must(&["ip", "-n", &node, "link", "set", "vout", "up"]);
        must(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{OUTSIDE_IP}/24"),
            "dev",
            "eth0",
        ]);
        must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &ns, "route", "add", "default", "via", NODE_IP]);
    }

    /// An HTTP server in pod `name` on :8080 answering its name.
    fn backend(&mut self, name: &str) {
        let code = format!(
            "import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n  def do_GET(self):\n    self.send_response(200); self.end_headers(); self.wfile.write(b'{name}')\n  def log_message(self, *a): pass\nhttp.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()\n"
        );
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(name), "python3", "-c", &code])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start backend");
        self.children.push(child);
    }

    /// Make the apiserver (on the host's loopback) reachable as
    /// https://127.0.0.1:6443 inside the node.
    fn relay(&mut self, api: std::net::SocketAddr) {
        self.relay = Some(NetnsRelay::start(&self.ns("node"), 6443, api));
    }

    fn start_proxy(&mut self, kubeconfig: &std::path::Path) {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("node"),
                env!("CARGO_BIN_EXE_kube-proxy"),
            ])
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args([
                "--hostname-override=node-1",
                "--cluster-cidr=10.244.0.0/16",
                "--min-sync-period=100ms",
                "--sync-period=2s",
                "--healthz-bind-address=127.0.0.1:10256",
                "--metrics-bind-address=127.0.0.1:10249",
                "-v=2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kube-proxy");
        self.proxy = Some(child);
    }

    /// `curl` from namespace `from`: (exit code, body).
    fn curl(&self, from: &str, url: &str) -> (i32, String) {
        let out = run(&[
            "ip",
            "netns",
            "exec",
            &self.ns(from),
            "curl",
            "-s",
            "--max-time",
            "3",
            url,
        ]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Bodies of `n` requests.
    fn answers(&self, from: &str, url: &str, n: usize) -> Vec<String> {
        (0..n).map(|_| self.curl(from, url).1).collect()
    }

    fn node_nft(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec"];
        let node = self.ns("node");
        all.push(&node);
        all.push("nft");
        all.extend_from_slice(args);
        run(&all)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.netns.iter().rev() {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        self.relay = None;
    }
}

/// Poll `f` until it returns Some, for up to 30 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn slice(b_ready: bool) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.0.2"], "conditions": {"ready": true}, "nodeName": "node-1"},
            {"addresses": ["10.244.0.3"], "conditions": {"ready": b_ready}, "nodeName": "node-1"},
        ],
    }))
    .expect("slice")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reach_their_endpoints_through_nftables() {
    if !can_run() {
        eprintln!("skipping: needs root, nft, ip, socat, curl and python3");
        return;
    }
    let ts = TestServer::start();
    let client = ts.client().await;
    let mut lab = Lab::new();
    lab.pod("a", "10.244.0.2");
    lab.pod("b", "10.244.0.3");
    lab.pod("c", "10.244.0.4");
    lab.outside();
    lab.backend("a");
    lab.backend("b");
    lab.relay(ts.addr);
    let kubeconfig = ts.dir.path().join("node.kubeconfig");
    apiserver::testing::write_kubeconfig(
        &kubeconfig,
        "127.0.0.1:6443".parse().expect("addr"),
        &ts.pki.ca_pem,
        &ts.pki.admin_cert,
        &ts.pki.admin_key,
    );

    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "node-1"}})).expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("node");
    nodes
        .patch_status(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}}),
            ),
        )
        .await
        .expect("node status");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .expect("svc");
    let web = services
        .create(&PostParams::default(), &web)
        .await
        .expect("web");
    let spec = web.spec.clone().unwrap_or_default();
    let cluster_ip = spec.cluster_ip.clone().expect("clusterIP");
    let node_port = spec.ports.unwrap_or_default()[0]
        .node_port
        .expect("nodePort");
    let empty: Service = serde_json::from_value(json!({
        "metadata": {"name": "empty"},
        "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]},
    }))
    .expect("svc");
    let empty = services
        .create(&PostParams::default(), &empty)
        .await
        .expect("empty");
    let empty_ip = empty.spec.and_then(|s| s.cluster_ip).expect("clusterIP");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    slices
        .create(&PostParams::default(), &slice(true))
        .await
        .expect("slice");

    lab.start_proxy(&kubeconfig);
    let url = format!("http://{cluster_ip}/");

    // the ClusterIP spreads requests over both backends
    eventually("the ClusterIP to answer", || {
        let a = lab.answers("c", &url, 1);
        (a[0] == "a" || a[0] == "b").then_some(())
    });
    let spread = lab.answers("c", &url, 30);
    assert!(
        spread.iter().any(|a| a == "a") && spread.iter().any(|a| a == "b"),
        "requests did not reach both backends: {spread:?}"
    );
    assert!(spread.iter().all(|a| a == "a" || a == "b"), "{spread:?}");

    // a NodePort on the node's address, from outside the cluster
    let np = format!("http://{NODE_IP}:{node_port}/");
    let outside = lab.answers("out", &np, 30);
    assert!(
        outside.iter().any(|a| a == "a") && outside.iter().any(|a| a == "b"),
        "NodePort did not reach both backends: {outside:?}"
    );

    // a Service without endpoints is rejected at once (connection refused,
    // curl's 7), not left to time out (curl's 28)
    let (code, _) = lab.curl("c", &format!("http://{empty_ip}/"));
    assert_eq!(code, 7, "a Service without endpoints must be rejected");

    // b goes unready: no new connection reaches it
    slices
        .replace("web-1", &PostParams::default(), &{
            let mut s = slice(false);
            s.metadata.resource_version = slices
                .get("web-1")
                .await
                .expect("get")
                .metadata
                .resource_version;
            s
        })
        .await
        .expect("unready");
    eventually("b to stop receiving connections", || {
        lab.answers("c", &url, 20)
            .iter()
            .all(|a| a == "a")
            .then_some(())
    });

    // sessionAffinity ClientIP: b is ready again, and one client sticks to one backend
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"sessionAffinity": "ClientIP"}})),
        )
        .await
        .expect("affinity");
    slices
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::to_value(slice(true)).expect("json")),
        )
        .await
        .expect("ready again");
    eventually("affinity rules", || {
        let out = lab.node_nft(&["list", "table", "ip", "kube-proxy"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.contains("affinity-") && text.matches("dnat to").count() >= 3).then_some(())
    });
    let sticky = lab.answers("c", &url, 20);
    assert!(
        sticky.iter().all(|a| a == &sticky[0]) && !sticky[0].is_empty(),
        "affinity did not stick: {sticky:?}"
    );

    // someone deletes the table: the periodic full sync puts it back
    let out = lab.node_nft(&["delete", "table", "ip", "kube-proxy"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the table to be restored", || {
        let (code, body) = lab.curl("c", &url);
        (code == 0 && !body.is_empty()).then_some(())
    });

    // health and metrics as upstream names them
    let health = run(&[
        "ip",
        "netns",
        "exec",
        &lab.ns("node"),
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://127.0.0.1:10256/healthz",
    ]);
    assert_eq!(String::from_utf8_lossy(&health.stdout), "200");
    let metrics = run(&[
        "ip",
        "netns",
        "exec",
        &lab.ns("node"),
        "curl",
        "-s",
        "http://127.0.0.1:10249/metrics",
    ]);
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("kubeproxy_sync_proxy_rules_duration_seconds_count")
            && metrics.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds"),
        "{metrics}"
    );

    // SIGTERM: a clean exit; then --cleanup removes the table
    let mut proxy = lab.proxy.take().expect("proxy");
    must(&["kill", "-TERM", &proxy.id().to_string()]);
    let status = proxy.wait().expect("wait");
    assert!(status.success(), "kube-proxy exited with {status}");
    let out = run(&[
        "ip",
        "netns",
        "exec",
        &lab.ns("node"),
        env!("CARGO_BIN_EXE_kube-proxy"),
        "--cleanup",
        "--hostname-override=node-1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tables = lab.node_nft(&["list", "tables"]);
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains("kube-proxy"),
        "--cleanup left the table"
    );
}
