//! The runtime for real, as root: a container from a busybox layer through
//! the shim and libcontainer, its logs in the CRI format, its exit code, a
//! memory limit enforced as OOMKilled, and nothing left behind (mount,
//! cgroups, directories). Skipped without root or busybox, except under CI.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kubelet::runtime::{ContainerState, Launch, Runtime};
use oci_spec::runtime::{
    LinuxBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, ProcessBuilder, Spec,
};

fn can_run() -> bool {
    let ok = nix::unistd::Uid::effective().is_root() && Path::new("/bin/busybox").exists();
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "CI must run this as root with busybox-static installed"
    );
    ok
}

/// A one-layer busybox root filesystem.
fn busybox_layer(dir: &Path) -> PathBuf {
    let layer = dir.join("layer");
    std::fs::create_dir_all(layer.join("bin")).unwrap();
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(layer.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", layer.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "sleep", "cat", "tr", "head"] {
        std::os::unix::fs::symlink("busybox", layer.join("bin").join(applet)).unwrap();
    }
    layer
}

fn spec(args: &[&str], cgroup: &str, memory: Option<i64>) -> Spec {
    let mut spec = Spec::default();
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .env(vec!["PATH=/bin".to_string()])
        .cwd("/")
        .build()
        .unwrap();
    spec.set_process(Some(process));
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build().unwrap())
    .collect::<Vec<_>>();
    let mut resources = LinuxResourcesBuilder::default();
    if let Some(m) = memory {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(m)
                .swap(m)
                .build()
                .unwrap(),
        );
    }
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(cgroup))
        .resources(resources.build().unwrap())
        .build()
        .unwrap();
    spec.set_linux(Some(linux));
    spec.set_hostname(None);
    spec
}

async fn wait_exit(rt: &Runtime, id: &str) -> ContainerState {
    for _ in 0..400 {
        let s = rt.state(id);
        if matches!(s, ContainerState::Exited { .. }) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("container {id} did not exit: {:?}", rt.state(id));
}

struct Cleanup(Runtime, Vec<String>, String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let rt = self.0.clone();
        let ids = self.1.clone();
        let handle = std::thread::spawn(move || {
            let Ok(r) = tokio::runtime::Runtime::new() else {
                return;
            };
            r.block_on(async {
                for id in ids {
                    rt.stop(&id, Duration::from_millis(100)).await;
                    let _ = rt.remove(&id).await;
                }
            });
        });
        let _ = handle.join();
        kubelet::cgroups::remove(&self.2);
    }
}

#[tokio::test]
async fn container_runs_logs_and_exits() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layer = busybox_layer(tmp.path());
    let rt = Runtime::new(
        &tmp.path().join("root"),
        env!("CARGO_BIN_EXE_kubelet").into(),
    )
    .unwrap();
    let cg_root = format!("/ironkube-test-{}", std::process::id());
    let guard = Cleanup(rt.clone(), vec!["c1".into(), "c2".into()], cg_root.clone());

    let log = tmp.path().join("logs/0.log");
    let s = spec(
        &["sh", "-c", "echo hello; echo oops >&2; exit 3"],
        &format!("{cg_root}/c1"),
        None,
    );
    let pid = rt
        .start(&Launch {
            id: "c1",
            spec: &s,
            layers: std::slice::from_ref(&layer),
            log: &log,
            log_max_size: 1 << 20,
            log_max_files: 2,
        })
        .await
        .expect("start");
    assert!(pid > 0);
    let ContainerState::Exited { exit, .. } = wait_exit(&rt, "c1").await else {
        unreachable!()
    };
    assert_eq!(exit.exit_code, 3);
    assert!(!exit.oom_killed);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" stdout F hello\n"), "{text}");
    assert!(text.contains(" stderr F oops\n"), "{text}");

    // 16 MiB limit, 64 MiB written to memory: OOMKilled
    let s = spec(
        &[
            "sh",
            "-c",
            "x=$(head -c 67108864 /dev/zero | tr '\\000' a); echo ${#x}",
        ],
        &format!("{cg_root}/c2"),
        Some(16 << 20),
    );
    rt.start(&Launch {
        id: "c2",
        spec: &s,
        layers: std::slice::from_ref(&layer),
        log: &tmp.path().join("logs/c2.log"),
        log_max_size: 1 << 20,
        log_max_files: 2,
    })
    .await
    .expect("start c2");
    let ContainerState::Exited { exit, .. } = wait_exit(&rt, "c2").await else {
        unreachable!()
    };
    assert_eq!((exit.exit_code, exit.oom_killed), (137, true), "{exit:?}");

    for id in ["c1", "c2"] {
        rt.remove(id).await.expect("remove");
        assert!(!rt.dir(id).exists());
    }
    assert!(!kubelet::runtime::is_mounted(&rt.dir("c1").join("rootfs")));
    assert!(!kubelet::cgroups::exists(&format!("{cg_root}/c1")));
    drop(guard);
    assert!(!kubelet::cgroups::exists(&cg_root));
}
