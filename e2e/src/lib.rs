//! The e2e harness: a whole cluster brought up by `hack/local-up-cluster.sh`
//! (etcd, the control plane, worker nodes in network namespaces, a registry
//! with the busybox image) from the workspace's freshly built binaries, in
//! its own output directory, and removed by `hack/local-down-cluster.sh` when
//! the [`Cluster`] is dropped, including after a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where cargo put the workspace's binaries: the test executable lives in
/// `<target>/<profile>/deps/`.
pub fn bin_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.to_path_buf();
    let all = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
    ];
    all.iter().all(|b| dir.join(b).exists()).then_some(dir)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether the suite can run here; under CI it must.
pub fn can_run() -> bool {
    let ci = std::env::var_os("CI").is_some();
    let why = if !is_root() {
        Some("needs root".to_string())
    } else if bin_dir().is_none() {
        Some("the workspace's binaries are not built (hack/test.sh builds them)".to_string())
    } else if Path::new("/sys/class/net/ikbr0").exists() {
        Some("a local cluster is running (hack/local-down-cluster.sh stops it)".to_string())
    } else {
        None
    };
    match why {
        None => true,
        Some(w) => {
            assert!(!ci, "CI must run the e2e suite: {w}");
            eprintln!("skipping the e2e suite: {w}");
            false
        }
    }
}

/// How to bring a cluster up.
pub struct Options<'a> {
    pub nodes: usize,
    /// added to the controller-managers' flags (e.g. a short --node-monitor-grace-period)
    pub controller_manager_flags: &'a str,
    /// three etcd members, three apiservers behind haproxy, two
    /// controller-managers and schedulers (local-up-cluster.sh --ha)
    pub ha: bool,
    /// under _output/
    pub out_dir: &'a str,
    /// more environment for local-up-cluster.sh
    pub env: &'a [(&'a str, &'a str)],
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            nodes: 2,
            controller_manager_flags: "",
            ha: false,
            out_dir: "e2e",
            env: &[],
        }
    }
}

/// A running local cluster; dropped, it is removed.
pub struct Cluster {
    pub out: PathBuf,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    /// the busybox image in the harness registry
    pub busybox: String,
    pub nodes: usize,
}

fn run(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("running {cmd:?}: {e}"),
    }
}

fn ok_text(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Cluster {
    /// Bring up a cluster of `nodes` worker nodes. `controller_manager_flags`
    /// are added to the controller-manager's (e.g. a short
    /// --node-monitor-grace-period).
    pub fn up(nodes: usize, controller_manager_flags: &str) -> Cluster {
        Cluster::up_with(&Options {
            nodes,
            controller_manager_flags,
            ..Options::default()
        })
    }

    /// Bring up a cluster as `opts` say.
    pub fn up_with(opts: &Options) -> Cluster {
        let Options {
            nodes,
            controller_manager_flags,
            ha,
            out_dir,
            env,
        } = opts;
        let nodes = *nodes;
        let out = root().join("_output").join(out_dir);
        let bin = bin_dir().unwrap_or_default();
        let c = Cluster {
            kubeconfig: out.join("admin.kubeconfig"),
            kubectl: PathBuf::from(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())),
            busybox: String::new(),
            out,
            nodes,
        };
        let started = Instant::now();
        let up = Command::new("bash")
            .arg(root().join("hack/local-up-cluster.sh"))
            .arg(format!("--nodes={nodes}"))
            .args(ha.then_some("--ha"))
            .envs(env.iter().copied())
            .env("OUT_DIR", &c.out)
            .env("IRONKUBE_BIN", &bin)
            .env("CONTROLLER_MANAGER_FLAGS", controller_manager_flags)
            .stdin(Stdio::null())
            .output();
        let up = match up {
            Ok(o) => o,
            Err(e) => panic!("running local-up-cluster.sh: {e}"),
        };
        // from here on, drop removes whatever was made
        let mut c = c;
        if !up.status.success() {
            c.dump_logs();
            panic!(
                "hack/local-up-cluster.sh failed:\n{}",
                String::from_utf8_lossy(&up.stderr)
            );
        }
        eprintln!("cluster up in {:?}", started.elapsed());
        let env = std::fs::read_to_string(c.out.join("images.env")).unwrap_or_default();
        c.busybox = env
            .lines()
            .find_map(|l| l.strip_prefix("BUSYBOX_IMAGE="))
            .unwrap_or_default()
            .to_string();
        assert!(!c.busybox.is_empty(), "images.env names the busybox image");
        c
    }

    pub fn kubectl_cmd(&self) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        c
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        run(self.kubectl_cmd().args(args))
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        ok_text(&format!("kubectl {args:?}"), self.kubectl(args))
    }

    /// kubectl with `input` on stdin, which must succeed.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> String {
        use std::io::Write;
        let mut child = match self
            .kubectl_cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("kubectl: {e}"),
        };
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(input.as_bytes());
        }
        match child.wait_with_output() {
            Ok(o) => ok_text(&format!("kubectl {args:?}"), o),
            Err(e) => panic!("kubectl: {e}"),
        }
    }

    /// `kubectl apply -f -` of a manifest.
    pub fn apply(&self, manifest: &serde_json::Value) -> String {
        self.kubectl_stdin(&["apply", "-f", "-"], &manifest.to_string())
    }

    /// hack/fault.sh against this cluster.
    pub fn fault(&self, args: &[&str]) -> String {
        ok_text(
            &format!("hack/fault.sh {args:?}"),
            run(Command::new("bash")
                .arg(root().join("hack/fault.sh"))
                .args(args)
                .env("OUT_DIR", &self.out)),
        )
    }

    /// A command in node i's network namespace.
    pub fn on_node(&self, i: usize, args: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &format!("ironkube-node-{i}")])
            .args(args))
    }

    /// The node IP of node i (as the harness assigns them).
    pub fn node_ip(&self, i: usize) -> String {
        format!("10.240.0.{}", 10 + i)
    }

    pub fn node_root(&self, i: usize) -> PathBuf {
        self.out.join(format!("nodes/node-{i}/root"))
    }

    pub async fn client(&self) -> kube::Client {
        let kc = match kube::config::Kubeconfig::read_from(&self.kubeconfig) {
            Ok(k) => k,
            Err(e) => panic!("reading {}: {e}", self.kubeconfig.display()),
        };
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await;
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => panic!("a client configuration for the cluster: {e}"),
        };
        match kube::Client::try_from(cfg) {
            Ok(c) => c,
            Err(e) => panic!("a client for the cluster: {e}"),
        }
    }

    /// Print the tail of every component's log (on failure).
    pub fn dump_logs(&self) {
        let mut logs: Vec<PathBuf> = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.out.join("logs")) {
            logs.extend(rd.flatten().map(|e| e.path()));
        }
        for i in 1..=self.nodes {
            if let Ok(rd) = std::fs::read_dir(self.out.join(format!("nodes/node-{i}/logs"))) {
                logs.extend(rd.flatten().map(|e| e.path()));
            }
        }
        for l in logs {
            let text = std::fs::read_to_string(&l).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(120).collect();
            eprintln!("--- {} ---", l.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let down = Command::new("bash")
            .arg(root().join("hack/local-down-cluster.sh"))
            .env("OUT_DIR", &self.out)
            .output();
        // the hostPath volumes the tests made
        let _ = std::fs::remove_dir_all(self.out.join("pv"));
        if let Ok(o) = down {
            if !o.status.success() {
                eprintln!(
                    "local-down-cluster.sh: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
}

/// Poll `f` every half second until it gives a value, up to `secs`.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
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
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
