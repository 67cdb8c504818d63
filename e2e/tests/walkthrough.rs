//! The seeds' walk-through on a whole local cluster: two worker nodes in
//! network namespaces, every component a real process, driven with the real
//! kubectl and kube-rs. One test, steps in order (later steps disturb the
//! cluster: a killed container, a stopped node).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use e2e::{can_run, eventually, Cluster};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::json;

fn names(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

async fn pods_of(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn rv(e: &Event) -> u64 {
    e.metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(u64::MAX)
}

fn web(image: &str) -> serde_json::Value {
    let toleration = |key: &str| json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5});
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "tolerations": [toleration("node.kubernetes.io/unreachable"), toleration("node.kubernetes.io/not-ready")],
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}}],
                    "containers": [{
                        "name": "web", "image": image,
                        "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && echo serving && exec httpd -f -p 8080 -h /www"],
                        "ports": [{"containerPort": 8080}],
                        "resources": {"requests": {"cpu": "100m", "memory": "16Mi"}},
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
                    }]
                }
            }
        }
    })
}

/// A Deployment of 3 spreads over both nodes, rolls out, and leaves the
/// events of its making in causal order.
async fn deployment(c: &Cluster, client: &kube::Client) {
    c.apply(&web(&c.busybox));
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running = pods_of(&pods, "app=web").await;
    assert_eq!(running.iter().filter(|p| ready(p)).count(), 3);
    let nodes: BTreeSet<String> = running.iter().map(node_of).collect();
    assert_eq!(nodes.len(), 2, "the pods spread over both nodes: {nodes:?}");
    let deploy: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = deploy.get("web").await.expect("get deployment");
    let st = d.status.unwrap_or_default();
    assert_eq!(
        (
            st.ready_replicas,
            st.updated_replicas,
            st.available_replicas
        ),
        (Some(3), Some(3), Some(3))
    );

    let text = c.kubectl_ok(&["get", "events"]);
    for reason in [
        "ScalingReplicaSet",
        "SuccessfulCreate",
        "Scheduled",
        "Pulling",
        "Pulled",
        "Created",
        "Started",
    ] {
        assert!(
            text.contains(reason),
            "kubectl get events shows {reason}:\n{text}"
        );
    }
    // causal order by resourceVersion: the deployment scaled its replica
    // set, which created a pod, which was scheduled, pulled, created, started.
    // Each component writes its events from its own queue after the fact (as
    // upstream's), so events of different writers that follow one change are
    // not ordered among themselves: ScalingReplicaSet and SuccessfulCreate
    // both follow the ReplicaSet's creation, and the scheduler may bind the
    // pod and write Scheduled before the controller's SuccessfulCreate lands.
    // Checked: all three land before the kubelet, which starts only on the
    // bound pod and sets up its sandbox first, pulls (a margin of tens of
    // milliseconds, not a few); the kubelet's own events are in order.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let all = events
        .list(&Default::default())
        .await
        .expect("events")
        .items;
    let first = |reason: &str, name_prefix: &str| {
        all.iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.involved_object
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(name_prefix))
            })
            .map(rv)
            .min()
    };
    let pulled_pod = all
        .iter()
        .find(|e| e.reason.as_deref() == Some("Pulling"))
        .and_then(|e| e.involved_object.name.clone())
        .expect("a Pulling event");
    let chain = [
        first("ScalingReplicaSet", "web"),
        first("SuccessfulCreate", "web-"),
        first("Scheduled", &pulled_pod),
        first("Pulling", &pulled_pod),
        first("Pulled", &pulled_pod),
        first("Created", &pulled_pod),
        first("Started", &pulled_pod),
    ];
    let rvs: Vec<u64> = chain
        .iter()
        .map(|r| r.expect("every event of the chain"))
        .collect();
    assert!(
        rvs[..3].iter().all(|r| *r < rvs[3]) && rvs[3..].windows(2).all(|w| w[0] < w[1]),
        "events in causal order: {rvs:?}"
    );
}

/// A pod that sleeps on a given node (a client for the Service checks).
fn client_pod(c: &Cluster, name: &str, node: usize) {
    c.apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": format!("node-{node}"), "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": c.busybox, "command": ["sleep", "100000"]}]}
    }));
}

/// A ClusterIP Service reaches the pods on both nodes from a pod on either
/// node, spreading the traffic; a NodePort answers on a node's address.
async fn services(c: &Cluster, client: &kube::Client) {
    c.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
        "--type=NodePort",
    ]);
    client_pod(c, "client-1", 1);
    client_pod(c, "client-2", 2);
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/client-1",
        "pod/client-2",
        "--timeout=120s",
    ]);
    let ip = c.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let node_port = c.kubectl_ok(&[
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let host_node: BTreeMap<String, String> = pods_of(&pods, "app=web")
        .await
        .iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), node_of(p)))
        .collect();
    // a new Service is programmed on each node within moments (kube-proxy's
    // sync); a SYN sent before that is not translated, and its retransmits
    // follow the same untranslated conntrack entry: wait until the
    // ClusterIP answers each client once, as upstream's reachability checks
    let once = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 80 | tail -n 1");
    for client in ["client-1", "client-2"] {
        eventually(&format!("the ClusterIP to answer {client}"), 30, || async {
            let out = c.kubectl(&["exec", client, "--", "sh", "-c", &once]);
            names(&String::from_utf8_lossy(&out.stdout))
                .iter()
                .any(|n| n.starts_with("web-"))
                .then_some(())
        })
        .await;
    }
    let script = format!(
        "for i in $(seq 1 20); do r=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} 80 | tail -n 1); echo \"${{r:-no-answer-to-request-$i}}\"; done"
    );
    for client in ["client-1", "client-2"] {
        let out = c.kubectl_ok(&["exec", client, "--", "sh", "-c", &script]);
        // a request without an answer shows as no-answer-to-request-N
        let answered: Vec<String> = names(&out)
            .into_iter()
            .filter(|n| n.starts_with("web-"))
            .collect();
        assert_eq!(
            answered.len(),
            20,
            "every request answered from {client}: {out}"
        );
        let backends: BTreeSet<&String> = answered.iter().collect();
        let on: BTreeSet<&String> = backends.iter().filter_map(|h| host_node.get(*h)).collect();
        assert!(
            backends.len() >= 2 && on.len() == 2,
            "from {client} the Service spreads over pods on both nodes: {answered:?} ({host_node:?})"
        );
    }
    // a NodePort from another node, at node-1's address
    let url = format!("http://{}:{node_port}/", c.node_ip(1));
    let out = c.on_node(2, &["curl", "-s", "--max-time", "5", &url]);
    let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        host_node.contains_key(&body),
        "the NodePort answers with a web pod's name, got {body:?}"
    );
    // the ClusterIP from a node itself (hostNetwork pods, the kubelet)
    let out = c.on_node(
        1,
        &["curl", "-s", "--max-time", "5", &format!("http://{ip}/")],
    );
    let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        host_node.contains_key(&body),
        "the ClusterIP answers a node's own request with a web pod's name, got {body:?}"
    );
    // in-cluster clients reach the apiserver through the kubernetes Service
    let out = c.kubectl_ok(&[
        "exec",
        "client-1",
        "--",
        "sh",
        "-c",
        "nc -w 3 10.0.0.1 443 </dev/null && echo reached || echo unreachable",
    ]);
    assert!(
        out.contains("reached") && !out.contains("unreachable"),
        "a pod reaches the kubernetes Service (10.0.0.1:443): {out}"
    );
}

/// ConfigMap and Secret as env and as volumes; a changed ConfigMap reaches
/// the mounted file in place, not the environment.
async fn config(c: &Cluster) {
    eventually("the default ServiceAccount", 60, || async {
        c.kubectl(&["get", "serviceaccount", "default"])
            .status
            .success()
            .then_some(())
    })
    .await;
    c.kubectl_ok(&[
        "create",
        "configmap",
        "app-config",
        "--from-literal=greeting=hello",
    ]);
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "app-secret",
        "--from-literal=token=t0ken",
    ]);
    c.apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "cfg"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": c.busybox,
            "command": ["sh", "-c", "echo ready; sleep 100000"],
            "env": [
                {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "greeting"}}},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "token"}}}
            ],
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "sec", "mountPath": "/etc/sec"}]
        }],
        "volumes": [{"name": "cfg", "configMap": {"name": "app-config"}}, {"name": "sec", "secret": {"secretName": "app-secret"}}]}
    }));
    c.kubectl_ok(&["wait", "--for=condition=Ready", "pod/cfg", "--timeout=120s"]);
    // the pod's service-account token, the cluster CA and its namespace are
    // mounted; the token is the pod's service account to the API
    let sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let ns = c.kubectl_ok(&["exec", "cfg", "--", "cat", &format!("{sa_dir}/namespace")]);
    assert_eq!(ns, "default");
    let ca = c.kubectl_ok(&["exec", "cfg", "--", "cat", &format!("{sa_dir}/ca.crt")]);
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let token = c.kubectl_ok(&["exec", "cfg", "--", "cat", &format!("{sa_dir}/token")]);
    let who = Command::new(&c.kubectl)
        .args([
            "--kubeconfig=/dev/null",
            "--server=https://127.0.0.1:6443",
            &format!(
                "--certificate-authority={}",
                c.out.join("pki/ca.crt").display()
            ),
            &format!("--token={token}"),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .expect("kubectl");
    let who = String::from_utf8_lossy(&who.stdout);
    assert_eq!(who, "system:serviceaccount:default:default");
    let show = [
        "exec",
        "cfg",
        "--",
        "sh",
        "-c",
        "echo $GREETING $TOKEN $(cat /etc/cfg/greeting) $(cat /etc/sec/token)",
    ];
    assert_eq!(c.kubectl_ok(&show).trim(), "hello t0ken hello t0ken");
    let changed = c.kubectl_ok(&[
        "create",
        "configmap",
        "app-config",
        "--from-literal=greeting=bonjour",
        "--dry-run=client",
        "-o",
        "json",
    ]);
    c.kubectl_stdin(&["apply", "-f", "-"], &changed);
    let now = eventually("the mounted ConfigMap updated in place", 120, || async {
        let out = c.kubectl_ok(&show);
        out.contains("bonjour").then_some(out)
    })
    .await;
    assert_eq!(
        now.trim(),
        "hello t0ken bonjour t0ken",
        "env keeps the value it started with"
    );
}

/// kubectl logs, exec and port-forward.
async fn streams(c: &Cluster) {
    assert_eq!(c.kubectl_ok(&["logs", "cfg"]), "ready\n");
    assert_eq!(c.kubectl_ok(&["logs", "deployment/web"]), "serving\n");
    let out = c.kubectl_stdin(
        &["exec", "-i", "cfg", "--", "sh", "-c", "read x; echo got $x"],
        "it\n",
    );
    assert_eq!(out, "got it\n");
    // kubectl cp both ways (tar through exec)
    let tmp = c.out.join("cp");
    let _ = std::fs::create_dir_all(&tmp);
    let up = tmp.join("up.txt");
    std::fs::write(&up, "uploaded\n").expect("write");
    c.kubectl_ok(&["cp", &up.to_string_lossy(), "cfg:/tmp/up.txt"]);
    assert_eq!(
        c.kubectl_ok(&["exec", "cfg", "--", "cat", "/tmp/up.txt"]),
        "uploaded\n"
    );
    c.kubectl_ok(&[
        "exec",
        "cfg",
        "--",
        "sh",
        "-c",
        "echo downloaded > /tmp/down.txt",
    ]);
    let down = tmp.join("down.txt");
    c.kubectl_ok(&["cp", "cfg:/tmp/down.txt", &down.to_string_lossy()]);
    assert_eq!(
        std::fs::read_to_string(&down).unwrap_or_default(),
        "downloaded\n"
    );
    let _ = std::fs::remove_dir_all(&tmp);
    // a kubelet's API asks the apiserver: another node may not use it
    let pki = c.out.join("pki");
    let denied = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "--cacert",
        ])
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("node-2.crt"))
        .arg("--key")
        .arg(pki.join("node-2.key"))
        .arg(format!("https://{}:10250/pods", c.node_ip(1)))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&denied.stdout),
        "403",
        "node-2 on node-1's kubelet"
    );
    let code = c.kubectl(&["exec", "cfg", "--", "sh", "-c", "exit 4"]);
    assert_eq!(code.status.code(), Some(4));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().map(|a| a.port()).unwrap_or(0)
    };
    let mut pf = c
        .kubectl_cmd()
        .args(["port-forward", "deployment/web", &format!("{port}:8080")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl port-forward");
    let body = eventually("an answer through kubectl port-forward", 30, || async {
        let o = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "3",
                &format!("http://127.0.0.1:{port}/"),
            ])
            .output()
            .ok()?;
        (o.status.success() && !o.stdout.is_empty())
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    })
    .await;
    let _ = pf.kill();
    let _ = pf.wait();
    assert!(body.starts_with("web-"), "a web pod answered: {body}");
}

/// A Job runs to completion, a DaemonSet has a pod on every node, a
/// StatefulSet makes its pods in order.
async fn workloads(c: &Cluster, client: &kube::Client) {
    c.kubectl_ok(&[
        "create",
        "job",
        "hello",
        &format!("--image={}", c.busybox),
        "--",
        "sh",
        "-c",
        "echo hello from a job",
    ]);
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Complete",
        "job/hello",
        "--timeout=120s",
    ]);
    assert_eq!(c.kubectl_ok(&["logs", "job/hello"]), "hello from a job\n");

    c.apply(&json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "a", "image": c.busybox, "command": ["sleep", "100000"]}]}}}
    }));
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    eventually("the DaemonSet ready on both nodes", 120, || async {
        let st = ds.get("agent").await.ok()?.status?;
        (st.desired_number_scheduled == 2 && st.number_ready == 2).then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let on: BTreeSet<String> = pods_of(&pods, "app=agent")
        .await
        .iter()
        .map(node_of)
        .collect();
    assert_eq!(
        on,
        BTreeSet::from(["node-1".to_string(), "node-2".to_string()])
    );

    // two hostPath volumes for the StatefulSet's claims
    for i in 0..2 {
        let path = c.out.join(format!("pv/vol-{i}"));
        c.apply(&json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": format!("vol-{i}")},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                "hostPath": {"path": path, "type": "DirectoryOrCreate"}}
        }));
    }
    c.kubectl_ok(&["create", "service", "clusterip", "db", "--clusterip=None"]);
    c.apply(&json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "replicas": 2, "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "d", "image": c.busybox,
                    "command": ["sh", "-c", "hostname > /data/me; sleep 100000"],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "readinessProbe": {"exec": {"command": ["cat", "/data/me"]}, "periodSeconds": 1}}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}}]}
    }));
    c.kubectl_ok(&["rollout", "status", "statefulset/db", "--timeout=180s"]);
    let db0 = pods.get("db-0").await.expect("db-0");
    let db1 = pods.get("db-1").await.expect("db-1");
    let ready_at = db0
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.clone())
        .expect("db-0 Ready");
    let created = db1
        .metadata
        .creation_timestamp
        .clone()
        .expect("db-1 created");
    assert!(ready_at.0 <= created.0, "db-1 made after db-0 was Ready");
    assert_eq!(
        c.kubectl_ok(&["exec", "db-1", "--", "hostname"]).trim(),
        "db-1"
    );
    // each pod its own claim, bound to its own volume, holding its own data
    let mut volumes = BTreeSet::new();
    for pod in ["db-0", "db-1"] {
        let claim = format!("data-{pod}");
        let bound = c.kubectl_ok(&[
            "get",
            "pvc",
            &claim,
            "-o",
            "jsonpath={.status.phase} {.spec.volumeName}",
        ]);
        let (phase, volume) = bound.split_once(' ').unwrap_or_default();
        assert_eq!(phase, "Bound", "{claim}: {bound}");
        volumes.insert(volume.to_string());
        let path = c.out.join(format!("pv/{volume}/me"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_default().trim(),
            pod,
            "{}",
            path.display()
        );
    }
    assert_eq!(volumes.len(), 2, "two claims, two volumes: {volumes:?}");
}

/// Scale up and down, roll to a new image, undo.
async fn rollout(c: &Cluster, client: &kube::Client) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    c.kubectl_ok(&["scale", "deployment/web", "--replicas=4"]);
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    eventually("4 web pods", 60, || async {
        (pods_of(&pods, "app=web")
            .await
            .iter()
            .filter(|p| ready(p))
            .count()
            == 4)
            .then_some(())
    })
    .await;
    c.kubectl_ok(&["scale", "deployment/web", "--replicas=2"]);
    eventually("2 web pods", 60, || async {
        (pods_of(&pods, "app=web").await.len() == 2).then_some(())
    })
    .await;

    // the same image under a new tag, in the harness registry
    let (registry, _) = c.busybox.split_once('/').expect("registry/name");
    let v2 = format!("{registry}/busybox:v2");
    let copy = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{}", c.busybox),
            &format!("docker://{v2}"),
        ])
        .output()
        .expect("skopeo");
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    c.kubectl_ok(&["set", "image", "deployment/web", &format!("web={v2}")]);
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    let images = |ps: &[Pod]| -> BTreeSet<String> {
        ps.iter()
            .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
            .collect()
    };
    eventually("only v2 pods", 60, || async {
        let ps = pods_of(&pods, "app=web").await;
        (images(&ps) == BTreeSet::from([v2.clone()]) && ps.len() == 2).then_some(())
    })
    .await;
    let history = c.kubectl_ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    c.kubectl_ok(&["rollout", "undo", "deployment/web"]);
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    eventually("back on the first image", 60, || async {
        let ps = pods_of(&pods, "app=web").await;
        (images(&ps) == BTreeSet::from([c.busybox.clone()]) && ps.len() == 2).then_some(())
    })
    .await;
}

/// A killed container is restarted, a deleted pod replaced, the pods of a
/// stopped node recreated on the other one.
async fn self_healing(c: &Cluster, client: &kube::Client) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // a restarted kubelet adopts the containers it left running: same
    // containers, no restarts, still Ready
    let ids = |ps: &[Pod]| -> BTreeMap<String, (String, i32)> {
        ps.iter()
            .filter(|p| node_of(p) == "node-1")
            .filter_map(|p| {
                let cs = p
                    .status
                    .as_ref()?
                    .container_statuses
                    .as_ref()?
                    .first()?
                    .clone();
                Some((
                    p.metadata.name.clone()?,
                    (cs.container_id?, cs.restart_count),
                ))
            })
            .collect()
    };
    let before = ids(&pods_of(&pods, "app in (web, agent)").await);
    assert!(!before.is_empty(), "pods on node-1");
    c.fault(&["restart", "node-1/kubelet"]);
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let ps = pods_of(&pods, "app in (web, agent)").await;
    assert_eq!(
        ids(&ps),
        before,
        "the same containers after a kubelet restart"
    );
    assert!(ps.iter().filter(|p| node_of(p) == "node-1").all(ready));
    // cut off from the control plane for a while, the node keeps its pods running
    c.fault(&["partition", "1"]);
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    c.fault(&["heal", "1"]);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let ps = pods_of(&pods, "app in (web, agent)").await;
    assert_eq!(ids(&ps), before, "the same containers after a partition");
    let victim = pods_of(&pods, "app=web")
        .await
        .into_iter()
        .find(ready)
        .expect("a web pod");
    let name = victim.metadata.name.clone().unwrap_or_default();
    let node: usize = node_of(&victim)
        .trim_start_matches("node-")
        .parse()
        .expect("node number");
    let id = victim
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|cs| cs.container_id.clone())
        .unwrap_or_default();
    let id = id.trim_start_matches("libcontainer://");
    let pidline =
        std::fs::read_to_string(c.node_root(node).join("containers").join(id).join("pid"))
            .expect("the container's pid file");
    let pid = pidline.split_whitespace().next().unwrap_or_default();
    let killed = Command::new("kill")
        .args(["-9", pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    eventually("the killed container restarted", 90, || async {
        let p = pods.get(&name).await.ok()?;
        let cs = p
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .clone();
        (cs.restart_count >= 1 && ready(&p)).then_some(())
    })
    .await;

    c.kubectl_ok(&["delete", "pod", &name, "--wait=false"]);
    eventually("the deleted pod replaced", 90, || async {
        let ps = pods_of(&pods, "app=web").await;
        let fresh = ps
            .iter()
            .filter(|p| ready(p) && p.metadata.name.as_deref() != Some(name.as_str()))
            .count();
        (fresh == 2).then_some(())
    })
    .await;

    // node-2's kubelet stops: the node goes NotReady, its pods are evicted
    // after their 5 s tolerations and made again on node-1
    c.fault(&["stop", "node-2/kubelet"]);
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("node-2 not Ready", 120, || async {
        let n = nodes.get("node-2").await.ok()?;
        let cond = n
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (cond.status != "True").then_some(())
    })
    .await;
    eventually("the web pods all on node-1", 180, || async {
        let ps = pods_of(&pods, "app=web").await;
        let live: Vec<&Pod> = ps.iter().filter(|p| ready(p)).collect();
        (live.len() == 2 && live.iter().all(|p| node_of(p) == "node-1")).then_some(())
    })
    .await;
    c.fault(&["start", "node-2/kubelet"]);
    eventually("node-2 Ready again", 120, || async {
        let n = nodes.get("node-2").await.ok()?;
        let cond = n
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (cond.status == "True").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough() {
    if !can_run() {
        return;
    }
    let c = Cluster::up(2, "--node-monitor-grace-period=20s");
    let client = c.client().await;
    let steps = std::time::Instant::now();
    deployment(&c, &client).await;
    eprintln!("deployment: ok ({:?})", steps.elapsed());
    services(&c, &client).await;
    eprintln!("services: ok ({:?})", steps.elapsed());
    config(&c).await;
    eprintln!("config: ok ({:?})", steps.elapsed());
    streams(&c).await;
    eprintln!("logs, exec, port-forward: ok ({:?})", steps.elapsed());
    workloads(&c, &client).await;
    eprintln!("job, daemonset, statefulset: ok ({:?})", steps.elapsed());
    rollout(&c, &client).await;
    eprintln!("scale, rollout, undo: ok ({:?})", steps.elapsed());
    self_healing(&c, &client).await;
    eprintln!("self-healing: ok ({:?})", steps.elapsed());
}
