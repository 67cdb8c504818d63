//! Load drivers for hack/bench/*.sh. Each subcommand prints one line of JSON
//! with its figure, so the shell script can compute ratios measured in one run.

use std::time::Instant;

mod node;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// COUNT pods bound to NODE created at once, each timed from its create
    /// request to the watch event showing it Running (after a warm-up pod
    /// pulled the image); p50 and p99.
    PodStartup {
        #[arg(long)]
        kubeconfig: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        image: String,
        #[arg(long)]
        node: String,
        #[arg(long, default_value_t = 30)]
        count: usize,
    },
    /// `true` in a container, start to exit, RUNS times: the kubelet's
    /// runtime (the KUBELET binary as its shim) against `runc run` of a
    /// bundle with the same rootfs. Needs root.
    ContainerStart {
        #[arg(long)]
        kubelet: std::path::PathBuf,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// kube-proxy's full sync of SERVICES Services x ENDPOINTS endpoints into
    /// this network namespace's nftables, against `nft -f` of the same
    /// ruleset text, then the time to apply one endpoint change. Run it in a
    /// throwaway netns: it replaces the `kube-proxy` table there.
    ProxySync {
        #[arg(long, default_value_t = 10_000)]
        services: usize,
        #[arg(long, default_value_t = 3)]
        endpoints: usize,
        /// one-endpoint changes to time (the median is reported)
        #[arg(long, default_value_t = 9)]
        changes: usize,
    },
    /// Raw etcd puts of a ~1 KiB ConfigMap-shaped value under PREFIX.
    EtcdPut {
        #[arg(long)]
        endpoint: String,
        #[arg(long, default_value = "/bench/configmaps/")]
        prefix: String,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Write as the apiserver does: a create-if-absent transaction instead of a put.
        #[arg(long)]
        txn: bool,
        /// Keep a prefix watch with previous values open meanwhile, as the watch cache does.
        #[arg(long)]
        watch: bool,
    },
    /// Creates of ~1 KiB ConfigMaps (or pods) through the apiserver.
    ApiCreate {
        #[arg(long)]
        kubeconfig: String,
        #[arg(long, default_value = "configmaps")]
        resource: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// spec.schedulerName of created pods (another name keeps a running scheduler away)
        #[arg(long)]
        scheduler_name: Option<String>,
    },
    /// LIST of every object of RESOURCE through the apiserver, ITERATIONS times.
    ApiList {
        #[arg(long)]
        kubeconfig: String,
        #[arg(long, default_value = "pods")]
        resource: String,
        #[arg(long, default_value_t = 5)]
        iterations: usize,
    },
    /// Create COUNT nodes (4 CPU, 32 GiB, 110 pods each), as SchedulingBasic.
    ApiNodes {
        #[arg(long)]
        kubeconfig: String,
        #[arg(long, default_value_t = 5000)]
        count: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Create DEPLOYMENTS Deployments of REPLICAS pods each in NAMESPACE (a
    /// kube-controller-manager must run) and time until every pod exists.
    ApiDeployments {
        #[arg(long)]
        kubeconfig: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long, default_value_t = 100)]
        deployments: usize,
        #[arg(long, default_value_t = 10)]
        replicas: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
    },
    /// Wait until COUNT pods in NAMESPACE are bound; print when the last one was.
    WaitBound {
        #[arg(long)]
        kubeconfig: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
    },
    /// Bind COUNT pending pods round-robin over NODES nodes through pods/binding (no scheduling).
    ApiBind {
        #[arg(long)]
        kubeconfig: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 5000)]
        nodes: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// A raw etcd range read of every key under PREFIX, ITERATIONS times.
    EtcdRange {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 5)]
        iterations: usize,
    },
}

fn payload(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"payload": "x".repeat(900)}})
}

fn pod(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.local/busybox:1", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}})
}

async fn kube_client(path: &str) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// POST `count` JSON bodies (`make(i)` gives path and body), `concurrency` at a
/// time; fails if any failed (the first error of each is printed). Returns seconds.
async fn post_all(
    client: &kube::Client,
    what: &str,
    count: usize,
    concurrency: usize,
    make: impl Fn(usize) -> (String, serde_json::Value),
) -> Result<f64> {
    let start = Instant::now();
    let errors = futures::stream::iter(0..count)
        .map(|i| {
            let (path, body) = make(i);
            let client = client.clone();
            async move {
                let req = http::Request::post(path)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body).unwrap_or_default());
                let res = match req {
                    Ok(r) => client.request_text(r).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                res.map_err(|e| eprintln!("{what} failed: {e}")).is_err()
            }
        })
        .buffer_unordered(concurrency)
        .filter(|e| futures::future::ready(*e))
        .count()
        .await;
    if errors > 0 {
        bail!("{errors} of {count} requests ({what}) failed");
    }
    Ok(start.elapsed().as_secs_f64())
}

fn report(what: &str, n: usize, secs: f64, extra: serde_json::Value) {
    let mut v = json!({"what": what, "count": n, "seconds": secs, "per_second": n as f64 / secs});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    println!("{v}");
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::PodStartup {
            kubeconfig,
            namespace,
            image,
            node,
            count,
        } => {
            let client = kube_client(&kubeconfig).await?;
            node::pod_startup(client, &namespace, &image, &node, count).await?;
        }
        Cmd::ContainerStart { kubelet, runs } => node::container_start(kubelet, runs).await?,
        Cmd::EtcdPut {
            endpoint,
            prefix,
            concurrency,
            count,
            txn,
            watch,
        } => {
            let client = etcd_client::Client::connect([endpoint], None).await?;
            let watcher = if watch {
                let opts = etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_prev_key();
                let mut stream = client
                    .watch_client()
                    .watch(prefix.clone(), Some(opts))
                    .await?;
                Some(tokio::spawn(async move {
                    while let Ok(Some(_)) = stream.message().await {}
                }))
            } else {
                None
            };
            let start = Instant::now();
            let errors = futures::stream::iter(0..count)
                .map(|i| {
                    let mut kv = client.kv_client();
                    let key = format!("{prefix}cm-{i}");
                    let value =
                        serde_json::to_vec(&payload(&format!("cm-{i}"))).unwrap_or_default();
                    async move {
                        if txn {
                            let t = etcd_client::Txn::new()
                                .when([etcd_client::Compare::create_revision(
                                    key.clone(),
                                    etcd_client::CompareOp::Equal,
                                    0,
                                )])
                                .and_then([etcd_client::TxnOp::put(key, value, None)]);
                            kv.txn(t).await.map(|r| !r.succeeded()).unwrap_or(true)
                        } else {
                            kv.put(key, value, None).await.is_err()
                        }
                    }
                })
                .buffer_unordered(concurrency)
                .filter(|e| futures::future::ready(*e))
                .count()
                .await;
            if errors > 0 {
                bail!("{errors} etcd puts failed");
            }
            if let Some(w) = watcher {
                w.abort();
            }
            report(
                "etcd-put",
                count,
                start.elapsed().as_secs_f64(),
                json!({"concurrency": concurrency}),
            );
        }
        Cmd::ApiCreate {
            kubeconfig,
            resource,
            namespace,
            concurrency,
            count,
            scheduler_name,
        } => {
            let client = kube_client(&kubeconfig).await?;
            let secs = post_all(&client, "create", count, concurrency, |i| {
                match resource.as_str() {
                    "pods" => {
                        let mut p = pod(&format!("pod-{i}"));
                        if let Some(n) = &scheduler_name {
                            p["spec"]["schedulerName"] = n.clone().into();
                        }
                        (format!("/api/v1/namespaces/{namespace}/pods"), p)
                    }
                    _ => (
                        format!("/api/v1/namespaces/{namespace}/configmaps"),
                        payload(&format!("cm-{i}")),
                    ),
                }
            })
            .await?;
            report(
                "api-create",
                count,
                secs,
                json!({"concurrency": concurrency, "resource": resource}),
            );
        }
        Cmd::ApiDeployments {
            kubeconfig,
            namespace,
            deployments,
            replicas,
            concurrency,
            timeout_seconds,
        } => {
            let client = kube_client(&kubeconfig).await?;
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
                kube::Api::namespaced(client.clone(), &namespace);
            let rv = pods
                .list_metadata(&kube::api::ListParams::default().limit(1))
                .await?
                .metadata
                .resource_version
                .unwrap_or_default();
            let want = deployments * replicas;
            // count pods from a watch started before the first create
            let watcher = tokio::spawn(async move {
                let mut seen = std::collections::HashSet::new();
                let mut rv = rv;
                while seen.len() < want {
                    let stream = pods
                        .watch(&kube::api::WatchParams::default().timeout(60), &rv)
                        .await?;
                    futures::pin_mut!(stream);
                    while let Some(ev) = stream.next().await {
                        if let kube::api::WatchEvent::Added(p) = ev? {
                            rv = p.metadata.resource_version.clone().unwrap_or(rv);
                            seen.insert(p.metadata.name.unwrap_or_default());
                            if seen.len() >= want {
                                break;
                            }
                        }
                    }
                }
                anyhow::Ok(Instant::now())
            });
            let start = Instant::now();
            post_all(&client, "deployment", deployments, concurrency, |i| {
                let mut template = pod("x");
                template["metadata"] = json!({"labels": {"app": format!("d{i}")}});
                let body = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": format!("d{i}")},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": format!("d{i}")}},
                             "template": {"metadata": template["metadata"], "spec": template["spec"]}}});
                (format!("/apis/apps/v1/namespaces/{namespace}/deployments"), body)
            })
            .await?;
            let done =
                tokio::time::timeout(std::time::Duration::from_secs(timeout_seconds), watcher)
                    .await
                    .context("timed out waiting for the Deployments' pods")???;
            report(
                "api-deployments",
                want,
                done.duration_since(start).as_secs_f64(),
                json!({"deployments": deployments, "replicas": replicas}),
            );
        }
        Cmd::ApiList {
            kubeconfig,
            resource,
            iterations,
        } => {
            let client = kube_client(&kubeconfig).await?;
            let mut total = 0f64;
            let mut items = 0;
            for _ in 0..iterations {
                let req = http::Request::get(format!("/api/v1/{resource}")).body(Vec::new())?;
                let start = Instant::now();
                let text = client.request_text(req).await?;
                total += start.elapsed().as_secs_f64();
                let v: serde_json::Value = serde_json::from_str(&text).context("list body")?;
                items = v["items"].as_array().map(Vec::len).unwrap_or(0);
            }
            report(
                "api-list",
                iterations,
                total,
                json!({"items": items, "seconds_each": total / iterations as f64}),
            );
        }
        Cmd::ApiNodes {
            kubeconfig,
            count,
            concurrency,
        } => {
            let client = kube_client(&kubeconfig).await?;
            let secs = post_all(&client, "node create", count, concurrency, |i| {
                let n = json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": format!("node-{i}"), "labels": {"kubernetes.io/hostname": format!("node-{i}"), "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
                    "status": {"capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"}, "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
                        "conditions": [{"type": "Ready", "status": "True"}]}});
                ("/api/v1/nodes".to_string(), n)
            })
            .await?;
            report("api-nodes", count, secs, json!({}));
        }
        Cmd::WaitBound {
            kubeconfig,
            namespace,
            count,
            timeout_seconds,
        } => {
            let client = kube_client(&kubeconfig).await?;
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
                kube::Api::namespaced(client, &namespace);
            // count bindings from a watch: polling a field-selected LIST would make the
            // apiserver parse every pod many times a second and skew the measurement
            let start = Instant::now();
            let deadline = start + std::time::Duration::from_secs(timeout_seconds);
            let mut bound = std::collections::HashSet::new();
            let mut first_bound: Option<f64> = None;
            let mut rv = "0".to_string();
            while bound.len() < count {
                if Instant::now() > deadline {
                    bail!(
                        "only {} of {count} pods bound after {timeout_seconds}s",
                        bound.len()
                    );
                }
                // only bound pods, metadata only: the watcher shares the machine
                // with what it measures, so it should cost as little as it can
                let stream = pods
                    .watch_metadata(
                        &kube::api::WatchParams::default()
                            .fields("spec.nodeName!=")
                            .timeout(60),
                        &rv,
                    )
                    .await?;
                futures::pin_mut!(stream);
                while let Some(ev) = stream.next().await {
                    let p = match ev? {
                        kube::api::WatchEvent::Added(p) | kube::api::WatchEvent::Modified(p) => p,
                        kube::api::WatchEvent::Bookmark(b) => {
                            rv = b.metadata.resource_version;
                            continue;
                        }
                        _ => continue,
                    };
                    if let Some(v) = p.metadata.resource_version.clone() {
                        rv = v;
                    }
                    {
                        bound.insert(p.metadata.name.unwrap_or_default());
                        first_bound.get_or_insert_with(|| start.elapsed().as_secs_f64());
                    }
                    if bound.len() >= count {
                        break;
                    }
                }
            }
            let total = start.elapsed().as_secs_f64();
            // from the first bind seen to the last: the rate while scheduling,
            // as upstream's SchedulingThroughput samples it
            let steady = first_bound
                .map(|f| count.saturating_sub(1) as f64 / (total - f).max(1e-9))
                .unwrap_or(0.0);
            report(
                "wait-bound",
                count,
                total,
                json!({"first_bound_seconds": first_bound, "steady_per_second": steady}),
            );
        }
        Cmd::ApiBind {
            kubeconfig,
            namespace,
            count,
            nodes,
            concurrency,
        } => {
            let client = kube_client(&kubeconfig).await?;
            let secs = post_all(&client, "bind", count, concurrency, |i| {
                let b = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": format!("pod-{i}")},
                    "target": {"kind": "Node", "name": format!("node-{}", i % nodes.max(1))}});
                (format!("/api/v1/namespaces/{namespace}/pods/pod-{i}/binding"), b)
            })
            .await?;
            report("api-bind", count, secs, json!({"concurrency": concurrency}));
        }
        Cmd::ProxySync {
            services,
            endpoints,
            changes,
        } => proxy_sync(services, endpoints, changes)?,
        Cmd::EtcdRange {
            endpoint,
            prefix,
            iterations,
        } => {
            let client = etcd_client::Client::connect([endpoint], None).await?;
            let mut kv = client
                .kv_client()
                .max_decoding_message_size(256 * 1024 * 1024);
            let mut total = 0f64;
            let mut items = 0;
            for _ in 0..iterations {
                let start = Instant::now();
                let resp = kv
                    .get(
                        prefix.clone(),
                        Some(etcd_client::GetOptions::new().with_prefix()),
                    )
                    .await?;
                // decode like a client would, so both sides pay for parsing
                let parsed: Vec<serde_json::Value> = resp
                    .kvs()
                    .iter()
                    .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
                    .collect();
                total += start.elapsed().as_secs_f64();
                items = parsed.len();
            }
            report(
                "etcd-range",
                iterations,
                total,
                json!({"items": items, "seconds_each": total / iterations as f64}),
            );
        }
    }
    Ok(())
}

/// Services svc-N (ClusterIP 10.96.x.y, port 80) with ENDPOINTS ready
/// endpoints each in one EndpointSlice.
fn proxy_world(
    services: usize,
    endpoints: usize,
) -> Result<(
    Vec<k8s_openapi::api::core::v1::Service>,
    Vec<k8s_openapi::api::discovery::v1::EndpointSlice>,
)> {
    let mut svcs = Vec::with_capacity(services);
    let mut slices = Vec::with_capacity(services);
    for i in 0..services {
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        svcs.push(serde_json::from_value(json!({
            "metadata": {"name": format!("svc-{i}"), "namespace": "default"},
            "spec": {"clusterIP": ip, "type": "ClusterIP",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
        }))?);
        let eps: Vec<_> = (0..endpoints)
            .map(|e| {
                let n = i * endpoints + e;
                json!({"addresses": [format!("10.244.{}.{}", n / 250, n % 250 + 1)],
                       "conditions": {"ready": true}, "nodeName": "bench"})
            })
            .collect();
        slices.push(serde_json::from_value(json!({
            "metadata": {"name": format!("svc-{i}-x"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps,
        }))?);
    }
    Ok((svcs, slices))
}

fn proxy_sync(services: usize, endpoints: usize, changes: usize) -> Result<()> {
    use proxy::config::Settings;
    use proxy::proxier::{nft, Proxier};
    use std::time::Duration;
    let (svcs, mut slices) = proxy_world(services, endpoints)?;
    let settings = Settings {
        kubeconfig: None,
        hostname: "bench".into(),
        cluster_cidrs: vec!["10.244.0.0/16".into()],
        nodeport_addresses: Vec::new(),
        masquerade_all: false,
        sync_period: Duration::from_secs(30),
        min_sync_period: Duration::from_secs(1),
        config_sync_period: Duration::from_secs(900),
        healthz: "127.0.0.1:10256".parse()?,
        metrics: "127.0.0.1:10249".parse()?,
    };
    let p = Proxier::new(settings, &prometheus::Registry::new());
    // the baseline: nft -f of the very text a full sync produces
    let cfg = proxy::rules::Config {
        family: proxy::rules::Family::Ipv4,
        node_name: "bench".into(),
        node_ips: Vec::new(),
        cluster_cidr: Some("10.244.0.0/16".into()),
        masquerade_all: false,
    };
    let text = proxy::rules::desired(&cfg, &svcs, &slices).render_full();
    let file = std::env::temp_dir().join(format!("proxy-bench-{}.nft", std::process::id()));
    std::fs::write(&file, &text)?;
    let start = Instant::now();
    let out = std::process::Command::new("nft")
        .arg("-f")
        .arg(&file)
        .output()?;
    let nft_secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        bail!("nft -f: {}", String::from_utf8_lossy(&out.stderr));
    }
    // both start from a namespace without the table
    nft("delete table ip kube-proxy\n").map_err(anyhow::Error::msg)?;
    let start = Instant::now();
    p.sync(&svcs, &slices, None, true)
        .map_err(anyhow::Error::msg)?;
    let full_secs = start.elapsed().as_secs_f64();
    let mut times = Vec::with_capacity(changes);
    for c in 0..changes {
        // move one endpoint of one Service to another address
        let i = (c * 7919) % services.max(1);
        if let Some(ep) = slices[i].endpoints.get_mut(0) {
            ep.addresses = vec![format!("10.245.{}.{}", c / 250, c % 250 + 1)];
        }
        let start = Instant::now();
        p.sync(&svcs, &slices, None, false)
            .map_err(anyhow::Error::msg)?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let change = times.get(times.len() / 2).copied().unwrap_or(0.0);
    // the kernel's floor for any change holding a verdict (every endpoint
    // chain has a dnat, every service chain a vmap of gotos): one jump rule
    // in a new, unreferenced chain, as one netlink batch. Such a commit has
    // the kernel validate the whole table.
    let mut floor = Vec::with_capacity(changes);
    for c in 0..changes {
        let chain = format!("bench-floor-{c}");
        let start = Instant::now();
        proxy::netlink::apply(&format!(
            "add chain ip kube-proxy {chain}\nadd rule ip kube-proxy {chain} ip saddr 192.0.2.1 jump mark-for-masquerade\n"
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        floor.push(start.elapsed().as_secs_f64());
        proxy::netlink::apply(&format!(
            "flush chain ip kube-proxy {chain}\ndelete chain ip kube-proxy {chain}\n"
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    floor.sort_by(f64::total_cmp);
    let floor = floor.get(floor.len() / 2).copied().unwrap_or(0.0);
    println!(
        "{}",
        json!({"what": "proxy-sync", "services": services, "endpoints": endpoints,
               "rules_bytes": text.len(), "full_seconds": full_secs, "nft_seconds": nft_secs,
               "ratio": full_secs / nft_secs, "change_ms": change * 1000.0,
               "kernel_verdict_rule_ms": floor * 1000.0})
    );
    Ok(())
}
