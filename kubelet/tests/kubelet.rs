//! The kubelet for real, as root: a real apiserver and etcd, a busybox image
//! built from Debian's busybox-static and pushed to a real registry
//! (docker-registry), and the kubelet binary running in a "node" network
//! namespace (reaching the apiserver and registry through relays on its
//! loopback). Pods run through libcontainer with CNI networking: env and
//! volumes visible inside, exit codes, restart on liveness failure, a memory
//! limit, hostPort, and everything removed after deletion; static pods from
//! --pod-manifest-path and their mirror pods. Skipped without root and the
//! tools, except under CI, where that fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiserver::testing::{free_port, write_kubeconfig, NetnsRelay, TestServer};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

fn has(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn can_run() -> bool {
    let ok = nix::unistd::Uid::effective().is_root()
        && [
            "ip",
            "socat",
            "docker-registry",
            "skopeo",
            "umoci",
            "busybox",
            "nsenter",
            "unshare",
            "iptables",
        ]
        .iter()
        .all(|c| has(c))
        && Path::new("/usr/lib/cni/bridge").exists();
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "CI must run this as root with the node packages installed (hack/lib/common.sh)"
    );
    ok
}

fn images_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/lib/images.sh")
}

fn sh(script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -e; source {}; {script}",
            images_sh().display()
        ))
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const NODE_IP: &str = "10.252.0.2";

/// Every test's node has the same addresses, names and cgroup root: one at
/// a time (the tests of a binary run on several threads).
static ONE_NODE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The node: its namespace, relays, registry, kubelet; removed on drop.
struct Node1 {
    netns: String,
    dir: tempfile::TempDir,
    registry_dir: PathBuf,
    relays: Vec<NetnsRelay>,
    kubelet: Option<Child>,
    cgroup_root: String,
    /// the relay to the apiserver is up
    api_relay: bool,
}

impl Node1 {
    fn new() -> Node1 {
        let tag = std::process::id() % 100_000;
        let netns = format!("ikt-node-{tag}");
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        let registry_dir = dir.path().join("registry");
        // built first, so a failure below still removes what was made
        let node = Node1 {
            netns: netns.clone(),
            registry_dir,
            dir,
            relays: Vec::new(),
            kubelet: None,
            cgroup_root: format!("/ikt-{tag}"),
            api_relay: false,
        };
        let ok = |args: &[&str]| {
            let out = Command::new(args[0])
                .args(&args[1..])
                .output()
                .expect("run");
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ok(&["ip", "netns", "add", &netns]);
        ok(&["ip", "-n", &netns, "link", "set", "lo", "up"]);
        // the node's IP on a veth pair to the machine (10.252.0.1), so the
        // apiserver reaches the kubelet's HTTPS port as it would a node's
        let host_if = format!("ikth{tag}");
        ok(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        ok(&["ip", "addr", "add", "10.252.0.1/24", "dev", &host_if]);
        ok(&["ip", "link", "set", &host_if, "up"]);
        ok(&[
            "ip",
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{NODE_IP}/24"),
            "dev",
            "eth0",
        ]);
        ok(&["ip", "-n", &netns, "link", "set", "eth0", "up"]);
        node
    }

    fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// Build the busybox image, start a registry and push it; its reference
    /// as the node sees it (through the relay).
    fn image(&mut self) -> String {
        let layout = self.dir.path().join("layout");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        sh(&format!(
            "ironkube::build_busybox_image {} >/dev/null; ironkube::start_registry {} {addr} >/dev/null; ironkube::push_image {} {addr}/busybox:v1 >/dev/null",
            layout.display(),
            self.registry_dir.display(),
            layout.display()
        ));
        let reg: std::net::SocketAddr = addr.parse().expect("addr");
        self.relays.push(NetnsRelay::start(&self.netns, port, reg));
        format!("{addr}/busybox:v1")
    }

    /// Start the kubelet; with `manifests`, its --pod-manifest-path.
    fn start_kubelet(&mut self, ts: &TestServer, manifests: Option<&Path>) {
        if !self.api_relay {
            self.relays
                .push(NetnsRelay::start(&self.netns, 6443, ts.addr));
            self.api_relay = true;
        }
        let kc = self.dir.path().join("kubelet.kubeconfig");
        write_kubeconfig(
            &kc,
            "127.0.0.1:6443".parse().expect("addr"),
            &ts.pki.ca_pem,
            &ts.pki.admin_cert,
            &ts.pki.admin_key,
        );
        let ca = self.dir.path().join("ca.pem");
        std::fs::write(&ca, &ts.pki.ca_pem).expect("write ca");
        let config = self.dir.path().join("kubelet.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\npodLogsDir: {}\nnodeStatusUpdateFrequency: 2s\n",
                self.logs().display()
            ),
        )
        .expect("write config");
        let log = std::fs::File::create(self.dir.path().join("kubelet.log")).expect("log");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(env!("CARGO_BIN_EXE_kubelet"))
            .arg(format!("--kubeconfig={}", kc.display()))
            .arg(format!("--config={}", config.display()))
            .arg(format!("--root-dir={}", self.root().display()))
            .arg(format!("--cgroup-root={}", self.cgroup_root))
            .arg(format!("--client-ca-file={}", ca.display()))
            .arg("--anonymous-auth=false")
            .args([
                "--hostname-override=node-1",
                &format!("--node-ip={NODE_IP}"),
                "--pod-cidr=10.253.1.0/24",
                "--healthz-port=0",
                "-v=3",
            ]);
        if let Some(m) = manifests {
            cmd.arg(format!("--pod-manifest-path={}", m.display()));
        }
        let child = cmd
            .env("RUST_LOG", "info,kubelet=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start kubelet");
        self.kubelet = Some(child);
    }

    /// Kill the kubelet (its containers keep running).
    fn stop_kubelet(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            let _ = k.kill();
            let _ = k.wait();
        }
    }

    fn kubelet_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kubelet.log")).unwrap_or_default()
    }
}

impl Drop for Node1 {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.kubelet_log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- kubelet log (last lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Some(mut k) = self.kubelet.take() {
            let _ = k.kill();
            let _ = k.wait();
        }
        // whatever a failed test left running: the containers' shims and
        // processes, their mounts, the pod namespaces, the cgroups
        let root = self.root();
        let _ = Command::new("pkill")
            .args([
                "-KILL",
                "-f",
                &format!("runtime-shim .* {}", root.display()),
            ])
            .output();
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut mps: Vec<&str> = info
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| m.starts_with(&*self.dir.path().to_string_lossy()))
                .collect();
            mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mps {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        if let Ok(rd) = std::fs::read_dir(root.join("pods")) {
            for e in rd.flatten() {
                let ns = format!("ik-{}", e.file_name().to_string_lossy());
                let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            }
        }
        kubelet::cgroups::remove(&self.cgroup_root);
        self.relays.clear();
        let _ = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; ironkube::stop_registry {}",
                images_sh().display(),
                self.registry_dir.display()
            ))
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
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

async fn pod_where(
    api: &Api<Pod>,
    name: &str,
    what: &str,
    secs: u64,
    f: impl Fn(&Pod) -> bool,
) -> Pod {
    eventually(what, secs, || async {
        api.get_opt(name).await.ok().flatten().filter(|p| f(p))
    })
    .await
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn container_status(p: &Pod, i: usize) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    p.status.as_ref()?.container_statuses.as_ref()?.get(i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_runs_pods() {
    let _one = ONE_NODE.lock().await;
    if !can_run() {
        eprintln!("skipping: needs root and the node packages");
        return;
    }
    let ts = TestServer::start();
    let mut node = Node1::new();
    let image = node.image();
    node.start_kubelet(&ts, None);
    let client = ts.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let ready = eventually("node-1 Ready", 60, || async {
        let n = nodes.get_opt("node-1").await.ok().flatten()?;
        let ok = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ok.then_some(n)
    })
    .await;
    let st = ready.status.clone().unwrap_or_default();
    assert!(st
        .capacity
        .as_ref()
        .is_some_and(|c| c.contains_key("cpu") && c.contains_key("memory")));
    assert_eq!(
        st.addresses.as_ref().map(|a| a[0].address.as_str()),
        Some(NODE_IP)
    );
    let lease = ts.kubectl(&["get", "lease", "-n", "kube-node-lease", "node-1"]);
    assert!(lease.status.success(), "the node's lease exists");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    ts.kubectl_ok(&["create", "configmap", "cfg", "--from-literal=color=blue"]);
    ts.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=password=s3cret",
    ]);

    // env and volumes visible inside; the pod gets an IP from the podCIDR
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "env", "labels": {"app": "env"}},
        "spec": {
            "nodeName": "node-1",
            "containers": [{
                "name": "main", "image": image,
                "command": ["sh", "-c", "echo PLAIN=$PLAIN; echo POD=$POD_NAME; echo COLOR=$COLOR; echo PASS=$PASS; echo FILE=$(cat /cfg/color); echo SECRET=$(cat /sec/password); echo HOST=$(hostname); touch /data/x && echo EMPTYDIR=ok; sleep 3600"],
                "env": [
                    {"name": "PLAIN", "value": "v1"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
                    {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}}
                ],
                "volumeMounts": [
                    {"name": "cfg", "mountPath": "/cfg"},
                    {"name": "sec", "mountPath": "/sec"},
                    {"name": "data", "mountPath": "/data"}
                ],
                "resources": {"limits": {"memory": "32Mi", "cpu": "500m"}}
            }],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "sec", "secret": {"secretName": "sec"}},
                {"name": "data", "emptyDir": {}}
            ]
        }
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create env pod");
    let running = pod_where(&pods, "env", "env pod Running and Ready", 90, |p| {
        phase(p) == "Running" && container_status(p, 0).is_some_and(|c| c.ready)
    })
    .await
    .status
    .unwrap_or_default();
    let ip = running.pod_ip.clone().unwrap_or_default();
    assert!(ip.starts_with("10.253.1."), "pod IP {ip} from the podCIDR");
    let cs = running.container_statuses.clone().unwrap_or_default();
    assert!(cs[0]
        .container_id
        .as_deref()
        .unwrap_or("")
        .starts_with("libcontainer://"));
    assert!(cs[0].image_id.contains("@sha256:"), "{:?}", cs[0].image_id);
    // limits without requests: requests default to them, so Guaranteed
    assert_eq!(running.qos_class.as_deref(), Some("Guaranteed"));
    let uid = ts.kubectl_ok(&["get", "pod", "env", "-o", "jsonpath={.metadata.uid}"]);
    let log_file = node
        .logs()
        .join(format!("default_env_{uid}"))
        .join("main/0.log");
    let text = eventually("the env pod's log", 20, || async {
        let t = std::fs::read_to_string(&log_file).ok()?;
        t.contains("EMPTYDIR=ok").then_some(t)
    })
    .await;
    for want in [
        "PLAIN=v1",
        "POD=env",
        "COLOR=blue",
        "PASS=s3cret",
        "FILE=blue",
        "SECRET=s3cret",
        "HOST=env",
    ] {
        assert!(
            text.contains(&format!(" stdout F {want}\n")),
            "{want} in\n{text}"
        );
    }
    // the memory limit is on the container's cgroup
    let cg = format!("{}/kubepods/pod{uid}", node.cgroup_root);
    assert!(kubelet::cgroups::exists(&cg), "pod cgroup {cg}");
    // and the pod's cgroup carries the pod-level limits (the sum of its containers')
    let read_cg = |file: &str| {
        kubelet::cgroups::hierarchies().iter().find_map(|h| {
            std::fs::read_to_string(h.join(cg.trim_start_matches('/')).join(file))
                .ok()
                .map(|s| s.trim().to_string())
        })
    };
    let mem = read_cg("memory.limit_in_bytes").or_else(|| read_cg("memory.max"));
    assert_eq!(mem.as_deref(), Some("33554432"), "32Mi on the pod cgroup");
    let cpu = read_cg("cpu.cfs_quota_us").or_else(|| read_cg("cpu.max"));
    assert!(
        cpu.as_deref().is_some_and(|c| c.starts_with("50000")),
        "500m as the pod's quota: {cpu:?}"
    );
    // reachable from the node over the pod network
    let ping = node.exec(&["busybox", "ping", "-c", "1", "-W", "2", &ip]);
    assert!(
        ping.status.success(),
        "ping {ip}: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // kubectl logs, exec and port-forward: the apiserver relays to the
    // kubelet's HTTPS port, which wants the apiserver's client certificate
    let logs = ts.kubectl_ok(&["logs", "env"]);
    assert!(logs.contains("COLOR=blue\nPASS=s3cret\n"), "{logs}");
    let tail = ts.kubectl_ok(&["logs", "env", "--tail=1"]);
    assert_eq!(tail, "EMPTYDIR=ok\n");
    let stamped = ts.kubectl_ok(&["logs", "env", "--timestamps", "--tail=1"]);
    assert!(stamped.ends_with("Z EMPTYDIR=ok\n"), "{stamped}");
    let bad = ts.kubectl(&["logs", "env", "-c", "nope"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("container nope is not valid for pod env"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let out = ts.kubectl_ok(&[
        "exec",
        "env",
        "--",
        "sh",
        "-c",
        "echo $PLAIN; cat /cfg/color; echo err >&2",
    ]);
    assert_eq!(out, "v1\nblue", "stdout only, the file has no newline");
    let code = ts.kubectl(&["exec", "env", "--", "sh", "-c", "exit 7"]);
    assert_eq!(
        code.status.code(),
        Some(7),
        "kubectl exec passes the exit code on"
    );
    let echoed = ts.kubectl_stdin(
        &["exec", "-i", "env", "--", "sh", "-c", "tr a-z A-Z"],
        "hello stdin\n",
    );
    assert_eq!(String::from_utf8_lossy(&echoed.stdout), "HELLO STDIN\n");
    ts.kubectl_ok(&[
        "exec",
        "env",
        "--",
        "sh",
        "-c",
        "mkdir -p /www && echo forwarded > /www/index.html && httpd -p 8080 -h /www",
    ]);
    // kubectl >= 1.31 tunnels SPDY through a WebSocket; with the feature
    // off it upgrades to SPDY directly: both reach the pod
    for websockets in ["true", "false"] {
        let local = free_port();
        let mut pf = ts
            .kubectl_cmd()
            .args(["port-forward", "pod/env", &format!("{local}:8080")])
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl port-forward");
        let got = eventually("an answer through kubectl port-forward", 20, || async {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "--max-time",
                    "3",
                    &format!("http://127.0.0.1:{local}/"),
                ])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .await;
        // a second connection over the same session
        let again = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "3",
                &format!("http://127.0.0.1:{local}/"),
            ])
            .output()
            .expect("curl");
        let _ = pf.kill();
        let _ = pf.wait();
        assert_eq!(got, "forwarded\n", "websockets={websockets}");
        assert_eq!(String::from_utf8_lossy(&again.stdout), "forwarded\n");
    }

    // exit codes with restartPolicy Never
    let failing: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "fails"},
        "spec": {"nodeName": "node-1", "restartPolicy": "Never",
            "containers": [{"name": "c", "image": image, "command": ["sh", "-c", "exit 3"]}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &failing)
        .await
        .expect("create");
    let failed = pod_where(&pods, "fails", "pod Failed", 60, |p| phase(p) == "Failed").await;
    let term = container_status(&failed, 0)
        .and_then(|c| c.state.as_ref()?.terminated.clone())
        .expect("terminated state");
    assert_eq!((term.exit_code, term.reason.as_deref()), (3, Some("Error")));

    // shareProcessNamespace: the pod's containers see each other's processes
    let shared: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "shared"},
        "spec": {"nodeName": "node-1", "shareProcessNamespace": true, "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "a", "image": image, "command": ["sleep", "1001"]},
                {"name": "b", "image": image, "command": ["sleep", "1002"]}
            ]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &shared)
        .await
        .expect("create");
    pod_where(&pods, "shared", "shared running", 60, |p| {
        phase(p) == "Running"
            && p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| cs.len() == 2 && cs.iter().all(|c| c.ready))
    })
    .await;
    let ps = ts.kubectl_ok(&["exec", "shared", "-c", "b", "--", "ps", "-o", "pid,args"]);
    assert!(
        ps.contains("sleep 1001") && ps.contains("sleep 1002"),
        "{ps}"
    );
    assert!(
        ps.lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("--pause")),
        "the namespace's init reaps: {ps}"
    );
    let shared_uid = ts.kubectl_ok(&["get", "pod", "shared", "-o", "jsonpath={.metadata.uid}"]);
    let holder: i32 =
        std::fs::read_to_string(node.root().join(format!("pods/{shared_uid}/ns/pid-holder")))
            .expect("the pid holder")
            .trim()
            .parse()
            .expect("a pid");
    // without it, each container has its own
    let alone = ts.kubectl_ok(&["exec", "env", "--", "ps", "-o", "pid,args"]);
    assert!(!alone.contains("--pause"), "{alone}");

    // lifecycle hooks: postStart after the start, preStop before the stop
    let hooks_dir = node.dir.path().join("hooks");
    std::fs::create_dir_all(&hooks_dir).expect("hooks dir");
    let hooks: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hooks"},
        "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 5,
            "volumes": [{"name": "out", "hostPath": {"path": hooks_dir}}],
            "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "out", "mountPath": "/hooks"}],
                "lifecycle": {
                    "postStart": {"exec": {"command": ["sh", "-c", "echo post > /hooks/post"]}},
                    "preStop": {"exec": {"command": ["sh", "-c", "echo pre > /hooks/pre"]}}
                }}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &hooks)
        .await
        .expect("create");
    pod_where(&pods, "hooks", "hooks running", 60, |p| {
        phase(p) == "Running"
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(hooks_dir.join("post")).unwrap_or_default(),
        "post\n",
        "postStart ran"
    );
    assert!(!hooks_dir.join("pre").exists());
    let failing_hook: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "badhook"},
        "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 1, "restartPolicy": "Never",
            "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"],
                "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "exit 9"]}}}}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &failing_hook)
        .await
        .expect("create");
    pod_where(
        &pods,
        "badhook",
        "a failed postStart kills the container",
        60,
        |p| phase(p) == "Failed",
    )
    .await;
    let ev = ts.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=badhook",
    ]);
    assert!(ev.contains("FailedPostStartHook"), "{ev}");

    // kubectl logs -f follows a container until it ends
    let ticker: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ticker"},
        "spec": {"nodeName": "node-1", "restartPolicy": "Never",
            "containers": [{"name": "c", "image": image, "command": ["sh", "-c", "for i in 1 2 3; do echo tick-$i; sleep 1; done"]}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &ticker)
        .await
        .expect("create");
    pod_where(&pods, "ticker", "ticker running", 60, |p| {
        phase(p) == "Running"
    })
    .await;
    let followed = ts.kubectl_ok(&["logs", "-f", "ticker"]);
    assert_eq!(followed, "tick-1\ntick-2\ntick-3\n");

    // a failing liveness probe restarts the container
    let live: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "live"},
        "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": image,
                "command": ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600"],
                "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 1}}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &live)
        .await
        .expect("create");
    let restarted = pod_where(&pods, "live", "a liveness restart", 60, |p| {
        container_status(p, 0).is_some_and(|c| c.restart_count >= 1)
    })
    .await;
    let last = container_status(&restarted, 0)
        .and_then(|c| c.last_state.as_ref()?.terminated.clone())
        .expect("last state");
    assert_eq!(last.exit_code, 137, "{last:?}");
    let events = ts.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=live",
    ]);
    assert!(
        events.contains("Unhealthy") && events.contains("Killing"),
        "{events}"
    );

    // delete everything: nothing of the pods is left
    for name in [
        "env", "fails", "live", "ticker", "shared", "hooks", "badhook",
    ] {
        pods.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    eventually("the pods gone", 60, || async {
        let l = pods.list(&Default::default()).await.ok()?;
        l.items.is_empty().then_some(())
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(hooks_dir.join("pre")).unwrap_or_default(),
        "pre\n",
        "preStop ran before the stop"
    );
    let left: Vec<_> = std::fs::read_dir(node.root().join("containers"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "containers left: {left:?}\n{}",
        node.kubelet_log()
    );
    assert!(!kubelet::cgroups::exists(&cg), "pod cgroup {cg} removed");
    let holder_cmd = std::fs::read(format!("/proc/{holder}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&holder_cmd).contains("--pause"),
        "the shared PID namespace's init is gone"
    );
    assert!(!Path::new(&format!("/var/run/netns/ik-{uid}")).exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mounts.contains(&*node.root().to_string_lossy()),
        "mounts left under the root dir"
    );
    drop(node);
}

fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn static_manifest(image: &str, version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {{tier: static}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {image}\n    command: [sh, -c, 'echo {version}; exec sleep 3600']\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_runs_static_pods() {
    let _one = ONE_NODE.lock().await;
    if !can_run() {
        eprintln!("skipping: needs root and the node packages");
        return;
    }
    let ts = TestServer::start();
    let mut node = Node1::new();
    let image = node.image();
    let manifests = node.dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).expect("manifests dir");
    let web = manifests.join("web.yaml");
    std::fs::write(&web, static_manifest(&image, "version-1")).expect("write");
    // a dotfile and a file that is no pod make no pods
    std::fs::write(
        manifests.join(".hidden.yaml"),
        static_manifest(&image, "hidden").replace("name: web", "name: hidden"),
    )
    .expect("write");
    std::fs::write(
        manifests.join("broken.yaml"),
        "apiVersion: v1\nkind: Pod\nspec: [",
    )
    .expect("write");
    node.start_kubelet(&ts, Some(&manifests));
    let client = ts.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // the mirror pod: the static pod's identity, owned by the Node
    let mirror = pod_where(&pods, "web-node-1", "the mirror pod Running", 90, |p| {
        phase(p) == "Running" && container_status(p, 0).is_some_and(|c| c.ready)
    })
    .await;
    let node_uid = nodes
        .get("node-1")
        .await
        .expect("node")
        .metadata
        .uid
        .unwrap_or_default();
    let hash = annotation(&mirror, "kubernetes.io/config.hash")
        .expect("config.hash")
        .to_string();
    assert_eq!(hash.len(), 32, "{hash}");
    assert_eq!(
        annotation(&mirror, "kubernetes.io/config.mirror"),
        Some(hash.as_str())
    );
    assert_eq!(
        annotation(&mirror, "kubernetes.io/config.source"),
        Some("file")
    );
    assert!(annotation(&mirror, "kubernetes.io/config.seen").is_some());
    assert_eq!(
        mirror.metadata.labels.as_ref().and_then(|l| l.get("tier")),
        Some(&"static".to_string())
    );
    let owners = mirror.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (
            owners[0].api_version.as_str(),
            owners[0].kind.as_str(),
            owners[0].name.as_str(),
            owners[0].uid.as_str(),
            owners[0].controller
        ),
        ("v1", "Node", "node-1", node_uid.as_str(), Some(true))
    );
    let spec = mirror.spec.clone().unwrap_or_default();
    assert_eq!(spec.node_name.as_deref(), Some("node-1"));
    let mirror_uid = mirror.metadata.uid.clone().unwrap_or_default();
    assert_ne!(mirror_uid, hash, "the mirror is an object of its own");
    let first = container_status(&mirror, 0).expect("status").clone();
    assert_eq!(first.restart_count, 0);
    let container_id = first.container_id.clone().unwrap_or_default();
    assert!(
        container_id.starts_with("libcontainer://"),
        "{container_id}"
    );
    let st = mirror.status.clone().unwrap_or_default();
    assert!(st
        .pod_ip
        .as_deref()
        .is_some_and(|ip| ip.starts_with("10.253.1.")));
    assert!(st
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.status == "True"));

    // the container really runs, under the static pod's UID (the hash)
    let log_file = node
        .logs()
        .join(format!("default_web-node-1_{hash}"))
        .join("c/0.log");
    eventually("the static pod's log", 20, || async {
        let t = std::fs::read_to_string(&log_file).ok()?;
        t.contains(" stdout F version-1\n").then_some(())
    })
    .await;
    assert_eq!(ts.kubectl_ok(&["logs", "web-node-1"]), "version-1\n");
    assert_eq!(
        ts.kubectl_ok(&["exec", "web-node-1", "--", "hostname"]),
        "web-node-1\n"
    );
    let listed = pods.list(&Default::default()).await.expect("list");
    let names: Vec<_> = listed
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["web-node-1"], "no pods from the other files");
    let log = node.kubelet_log();
    assert!(
        log.contains("could not process manifest file") && log.contains("broken.yaml"),
        "the bad file is logged"
    );

    // deleting the mirror pod does not stop the static pod: it comes back,
    // the container untouched
    pods.delete("web-node-1", &DeleteParams::default())
        .await
        .expect("delete the mirror");
    let back = pod_where(&pods, "web-node-1", "the mirror pod made again", 60, |p| {
        p.metadata.uid.as_deref() != Some(mirror_uid.as_str())
            && p.metadata.deletion_timestamp.is_none()
            && phase(p) == "Running"
            && container_status(p, 0).is_some_and(|c| c.ready)
    })
    .await;
    let again = container_status(&back, 0).expect("status");
    assert_eq!(again.restart_count, 0);
    assert_eq!(again.container_id.as_deref(), Some(container_id.as_str()));
    assert_eq!(
        annotation(&back, "kubernetes.io/config.mirror"),
        Some(hash.as_str())
    );
    assert_eq!(ts.kubectl_ok(&["logs", "web-node-1"]), "version-1\n");

    // a restarted kubelet finds the same static pod (same UID): it adopts
    // the container, keeps the mirror pod and the status it reported
    let back_uid = back.metadata.uid.clone().unwrap_or_default();
    let started = back.status.as_ref().and_then(|s| s.start_time.clone());
    assert!(started.is_some());
    node.stop_kubelet();
    node.start_kubelet(&ts, Some(&manifests));
    eventually(
        "the restarted kubelet syncing the static pod",
        30,
        || async {
            let log = node.kubelet_log();
            log.contains("static pod added").then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = pods.get("web-node-1").await.expect("the mirror pod");
    assert_eq!(after.metadata.uid.as_deref(), Some(back_uid.as_str()));
    assert_eq!(
        after.status.as_ref().and_then(|s| s.start_time.clone()),
        started
    );
    assert_eq!(phase(&after), "Running");
    let adopted = container_status(&after, 0).expect("status");
    assert_eq!(adopted.restart_count, 0);
    assert_eq!(adopted.container_id.as_deref(), Some(container_id.as_str()));
    assert!(adopted.ready);

    // a changed file: the pod is replaced by one with the new spec, and the
    // outdated mirror by a new one
    std::fs::write(&web, static_manifest(&image, "version-2")).expect("write");
    let v2 = pod_where(&pods, "web-node-1", "the new version Running", 90, |p| {
        annotation(p, "kubernetes.io/config.mirror").is_some_and(|h| h != hash)
            && phase(p) == "Running"
            && container_status(p, 0).is_some_and(|c| c.ready)
    })
    .await;
    let hash2 = annotation(&v2, "kubernetes.io/config.hash")
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        annotation(&v2, "kubernetes.io/config.mirror"),
        Some(hash2.as_str())
    );
    let c2 = container_status(&v2, 0).expect("status");
    assert_ne!(c2.container_id.as_deref(), Some(container_id.as_str()));
    assert_eq!(c2.restart_count, 0);
    assert_eq!(ts.kubectl_ok(&["logs", "web-node-1"]), "version-2\n");
    assert!(
        !node.root().join("pods").join(&hash).exists(),
        "the old version is torn down"
    );

    // the file removed: the pod is torn down and its mirror deleted
    std::fs::remove_file(&web).expect("remove");
    eventually("the mirror pod gone", 60, || async {
        let gone = pods.get_opt("web-node-1").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    eventually("nothing of the static pod left", 30, || async {
        let left = std::fs::read_dir(node.root().join("containers"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        let pods_left = std::fs::read_dir(node.root().join("pods"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        (left == 0 && pods_left == 0).then_some(())
    })
    .await;
    assert!(!Path::new(&format!("/var/run/netns/ik-{hash2}")).exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mounts.contains(&*node.root().to_string_lossy()),
        "mounts left under the root dir"
    );
    drop(node);
}
