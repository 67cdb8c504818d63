//! Node benchmarks: pod startup latency through a real cluster, and the
//! kubelet runtime's container start against `runc run` of the same bundle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // nearest rank
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn pod(name: &str, image: &str, node: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "pod-startup"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "100000"]}]}
    }))?)
}

/// Create `count` pods bound to `node` at once and time each one from its
/// create request to the watch event that shows it Running.
pub async fn pod_startup(
    client: kube::Client,
    namespace: &str,
    image: &str,
    node: &str,
    count: usize,
) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    // the image present first: one pod pulls it
    pods.create(&PostParams::default(), &pod("warmup", image, node)?)
        .await
        .context("creating the warm-up pod")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if pods
            .get("warmup")
            .await
            .map(|p| running(&p))
            .unwrap_or(false)
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the warm-up pod did not run in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rv = pods
        .list_metadata(&Default::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let stream = pods
        .watch(
            &WatchParams::default()
                .labels("bench=pod-startup")
                .timeout(290),
            &rv,
        )
        .await?;
    let mut created: HashMap<String, Instant> = HashMap::new();
    let start = Instant::now();
    let creates = futures::stream::iter(0..count)
        .map(|i| {
            let pods = pods.clone();
            let name = format!("startup-{i}");
            async move {
                let p = pod(&name, image, node)?;
                let at = Instant::now();
                pods.create(&PostParams::default(), &p).await?;
                Ok::<_, anyhow::Error>((name, at))
            }
        })
        .buffer_unordered(count.max(1))
        .collect::<Vec<_>>();
    futures::pin_mut!(stream);
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let (results, ()) = tokio::join!(creates, async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(280);
        while seen.len() < count {
            let ev = tokio::time::timeout_at(deadline, stream.next()).await;
            let p = match ev {
                Ok(Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)))) => p,
                Ok(Some(Ok(_))) => continue,
                _ => return,
            };
            let name = p.metadata.name.clone().unwrap_or_default();
            if name.starts_with("startup-") && running(&p) {
                seen.entry(name).or_insert_with(Instant::now);
            }
        }
    });
    for r in results {
        let (name, at) = r?;
        created.insert(name, at);
    }
    if seen.len() < count {
        bail!("only {} of {count} pods seen Running", seen.len());
    }
    let mut lat: Vec<f64> = seen
        .iter()
        .filter_map(|(n, t)| created.get(n).map(|c| t.duration_since(*c).as_secs_f64()))
        .collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({"what": "pod-startup", "count": count, "seconds": start.elapsed().as_secs_f64(),
            "p50": percentile(&lat, 50.0), "p99": percentile(&lat, 99.0), "max": lat.last()})
    );
    Ok(())
}

fn oci_spec(args: &[&str], cgroup: &str) -> Result<oci_spec::runtime::Spec> {
    use oci_spec::runtime::{
        LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, ProcessBuilder, Spec,
    };
    let mut spec = Spec::default();
    spec.set_process(Some(
        ProcessBuilder::default()
            .terminal(false)
            .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .env(vec!["PATH=/bin".to_string()])
            .cwd("/")
            .build()?,
    ));
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
    .collect::<Result<Vec<_>, _>>()?;
    spec.set_linux(Some(
        LinuxBuilder::default()
            .namespaces(namespaces)
            .cgroups_path(PathBuf::from(cgroup))
            .build()?,
    ));
    spec.set_hostname(None);
    Ok(spec)
}

/// A busybox root filesystem (`/bin/busybox` and `true`).
fn rootfs(dir: &Path) -> Result<PathBuf> {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin"))?;
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).context("copying /bin/busybox")?;
    std::os::unix::fs::symlink("busybox", root.join("bin/true"))?;
    Ok(root)
}

/// Start-to-exit of `true` in a container, `runs` times: the kubelet's
/// runtime (its shim and libcontainer, overlayfs over the rootfs) against
/// `runc run` of a bundle with the same rootfs and namespaces.
pub async fn container_start(kubelet: PathBuf, runs: usize) -> Result<()> {
    use kubelet::runtime::{ContainerState, Launch, Runtime};
    let tmp = std::env::temp_dir().join(format!("ironkube-container-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = async {
        let layer = rootfs(&tmp)?;
        let rt = Runtime::new(&tmp.join("root"), kubelet)?;
        let cg = format!("/ironkube-bench-{}", std::process::id());
        let mut ours = Vec::new();
        for i in 0..runs {
            let id = format!("b{i}");
            let spec = oci_spec(&["true"], &format!("{cg}/{id}"))?;
            let at = Instant::now();
            rt.start(&Launch {
                id: &id,
                spec: &spec,
                layers: std::slice::from_ref(&layer),
                log: &tmp.join(format!("logs/{id}.log")),
                log_max_size: 1 << 20,
                log_max_files: 2,
            })
            .await?;
            loop {
                if let ContainerState::Exited { .. } = rt.state(&id) {
                    break;
                }
                if at.elapsed() > Duration::from_secs(30) {
                    bail!("container {id} did not exit");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            ours.push(at.elapsed().as_secs_f64());
            rt.remove(&id).await?;
        }
        kubelet::cgroups::remove(&cg);

        // runc: the same rootfs and namespaces, from `runc spec`
        let bundle = tmp.join("bundle");
        std::fs::create_dir_all(&bundle)?;
        let st = std::process::Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(&bundle)
            .status()
            .context("runc spec (is runc installed?)")?;
        if !st.success() {
            bail!("runc spec failed");
        }
        let cfg_path = bundle.join("config.json");
        let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path)?)?;
        cfg["process"]["args"] = json!(["true"]);
        cfg["process"]["terminal"] = json!(false);
        cfg["root"] = json!({"path": layer, "readonly": true});
        std::fs::write(&cfg_path, serde_json::to_vec(&cfg)?)?;
        let mut runc = Vec::new();
        for i in 0..runs {
            let at = Instant::now();
            let st = std::process::Command::new("runc")
                .args(["--root"])
                .arg(tmp.join("runc-state"))
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(format!("bench-{}-{i}", std::process::id()))
                .stdin(std::process::Stdio::null())
                .status()?;
            if !st.success() {
                bail!("runc run failed: {st}");
            }
            runc.push(at.elapsed().as_secs_f64());
        }
        ours.sort_by(f64::total_cmp);
        runc.sort_by(f64::total_cmp);
        let (o, r) = (percentile(&ours, 50.0), percentile(&runc, 50.0));
        println!(
            "{}",
            json!({"what": "container-start", "runs": runs, "ours_p50": o, "runc_p50": r, "ratio": o / r})
        );
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=30).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 15.0);
        assert_eq!(percentile(&v, 99.0), 30.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
