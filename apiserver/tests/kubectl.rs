//! The real kubectl against an apiserver on a real etcd.

use apiserver::testing as common;

use common::TestServer;

const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:1.36
        command: ["httpd", "-f"]
        ports:
        - containerPort: 80
"#;

#[test]
fn apply_get_and_output_formats() {
    let ts = TestServer::start();
    let out = ts.kubectl_stdin_ok(&["apply", "-f", "-"], DEPLOY);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    // defaults as upstream
    let json: serde_json::Value =
        serde_json::from_str(&ts.kubectl_ok(&["get", "deploy", "web", "-o", "json"]))
            .expect("json");
    assert_eq!(json["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(json["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(json["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(
        json["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(json["metadata"]["generation"], 1);
    assert!(
        json["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    // re-apply unchanged is a no-op
    let out = ts.kubectl_stdin_ok(&["apply", "-f", "-"], DEPLOY);
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    // apply a change: configured, generation bumps
    let out = ts.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &DEPLOY.replace("replicas: 2", "replicas: 3"),
    );
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert_eq!(
        ts.kubectl_ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas}/{.metadata.generation}"
        ]),
        "3/2"
    );
    // table output has upstream's columns
    let table = ts.kubectl_ok(&["get", "deployments"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(table.contains("web"), "{table}");
    let wide = ts.kubectl_ok(&["get", "deployments", "-o", "wide"]);
    assert!(
        wide.contains("CONTAINERS") && wide.contains("busybox:1.36") && wide.contains("app=web"),
        "{wide}"
    );
    let yaml = ts.kubectl_ok(&["get", "deploy", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );
    // diff shows a pending change and exits 1
    let out = ts.kubectl_stdin(
        &["diff", "-f", "-"],
        &DEPLOY.replace("busybox:1.36", "busybox:1.37"),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("busybox:1.37"));
}

#[test]
fn label_annotate_patch_replace_delete() {
    let ts = TestServer::start();
    ts.kubectl_stdin_ok(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"},"data":{"a":"1"}}"#,
    );
    ts.kubectl_ok(&["label", "configmap", "cfg", "tier=backend"]);
    ts.kubectl_ok(&["annotate", "configmap", "cfg", "note=hello"]);
    assert_eq!(
        ts.kubectl_ok(&["get", "cm", "-l", "tier=backend", "-o", "name"])
            .trim(),
        "configmap/cfg"
    );
    assert_eq!(
        ts.kubectl_ok(&["get", "cm", "-l", "tier in (frontend)", "-o", "name"])
            .trim(),
        ""
    );
    ts.kubectl_ok(&[
        "patch",
        "configmap",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    ts.kubectl_ok(&[
        "patch",
        "configmap",
        "cfg",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/data/a","value":"9"}]"#,
    ]);
    ts.kubectl_ok(&["patch", "configmap", "cfg", "-p", r#"{"data":{"c":"3"}}"#]);
    assert_eq!(
        ts.kubectl_ok(&[
            "get",
            "cm",
            "cfg",
            "-o",
            "jsonpath={.data.a}{.data.b}{.data.c}"
        ]),
        "923"
    );
    // strategic merge on a pod keeps the other container
    ts.kubectl_stdin_ok(&["create", "-f", "-"], r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"busybox"},{"name":"b","image":"busybox"}]}}"#);
    ts.kubectl_ok(&[
        "patch",
        "pod",
        "p",
        "-p",
        r#"{"spec":{"containers":[{"name":"b","image":"busybox:2"}]}}"#,
    ]);
    assert_eq!(
        ts.kubectl_ok(&[
            "get",
            "pod",
            "p",
            "-o",
            "jsonpath={.spec.containers[*].image}"
        ]),
        "busybox busybox:2"
    );
    // replace
    let mut cm: serde_json::Value =
        serde_json::from_str(&ts.kubectl_ok(&["get", "cm", "cfg", "-o", "json"])).expect("json");
    cm["data"] = serde_json::json!({"only": "this"});
    ts.kubectl_stdin_ok(&["replace", "-f", "-"], &cm.to_string());
    assert_eq!(
        ts.kubectl_ok(&["get", "cm", "cfg", "-o", "jsonpath={.data}"]),
        r#"{"only":"this"}"#
    );
    // replace with the old resourceVersion is a conflict
    let out = ts.kubectl_stdin(&["replace", "-f", "-"], &cm.to_string());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the object has been modified; please apply your changes to the latest version and try again"), "{err}");
    let out = ts.kubectl_ok(&["delete", "configmap", "cfg"]);
    assert!(out.contains("configmap \"cfg\" deleted"), "{out}");
    let out = ts.kubectl(&["get", "configmap", "cfg"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("configmaps \"cfg\" not found"));
    assert!(ts.etcd.keys("/registry/configmaps/default/").is_empty());
}

#[test]
fn server_side_apply_and_conflicts() {
    let ts = TestServer::start();
    let out = ts.kubectl_stdin_ok(&["apply", "--server-side", "-f", "-"], DEPLOY);
    assert!(out.contains("serverside-applied"), "{out}");
    let mf = ts.kubectl_ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
        "--show-managed-fields",
    ]);
    assert!(mf.contains("kubectl"), "{mf}");
    // another manager takes replicas, then our apply with a different value conflicts
    ts.kubectl_ok(&["scale", "deploy", "web", "--replicas=5"]);
    let out = ts.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &DEPLOY.replace("replicas: 2", "replicas: 4"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("conflict") && err.contains(".spec.replicas"),
        "{err}"
    );
    ts.kubectl_stdin_ok(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &DEPLOY.replace("replicas: 2", "replicas: 4"),
    );
    assert_eq!(
        ts.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
}

#[test]
fn discovery_explain_and_chunking() {
    let ts = TestServer::start();
    let res = ts.kubectl_ok(&["api-resources"]);
    for want in [
        "pods",
        "deployments",
        "endpointslices",
        "leases",
        "cronjobs",
    ] {
        assert!(res.contains(want), "api-resources lacks {want}:\n{res}");
    }
    let explain = ts.kubectl_ok(&["explain", "pods.spec.containers.image"]);
    assert!(explain.contains("FIELD: image"), "{explain}");
    let explain = ts.kubectl_ok(&["explain", "deployment.spec"]);
    assert!(explain.contains("replicas"), "{explain}");
    for i in 0..25 {
        ts.kubectl_stdin_ok(
            &["create", "-f", "-"],
            &format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"c{i:02}"}}}}"#),
        );
    }
    let out = ts.kubectl_ok(&["get", "configmaps", "--chunk-size=7", "-o", "name"]);
    let names: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("configmap/c"))
        .collect();
    assert_eq!(names.len(), 25, "{out}");
    let v: serde_json::Value = serde_json::from_str(&ts.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?limit=10",
    ]))
    .expect("json");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(10));
    assert!(v["metadata"]["continue"].is_string());
    assert!(v["metadata"]["remainingItemCount"].as_i64().unwrap_or(0) >= 15);
    let version = ts.kubectl_ok(&["version", "-o", "json"]);
    assert!(version.contains("v1.33"), "{version}");
}

#[test]
fn get_watch_streams_changes() {
    let ts = TestServer::start();
    let cm = |n: &str| {
        format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{n}"}}}}"#)
    };
    ts.kubectl_stdin_ok(&["create", "-f", "-"], &cm("w1"));
    let child = ts
        .kubectl_cmd()
        .args(["get", "configmaps", "-w", "--request-timeout=8s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl get -w");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    ts.kubectl_stdin_ok(&["create", "-f", "-"], &cm("w2"));
    ts.kubectl_ok(&["delete", "configmap", "w1"]);
    let out = child.wait_with_output().expect("watch output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("w1"), "{text}");
    assert!(
        text.contains("w2"),
        "watch did not show the new configmap:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn generator_commands_send_protobuf() {
    // kubectl's `create <kind>`, `run` and `expose` encode their objects as protobuf
    let ts = TestServer::start();
    ts.kubectl_ok(&["create", "namespace", "gen"]);
    let n = |args: &[&str]| -> String {
        let mut a = vec!["-n", "gen"];
        a.extend_from_slice(args);
        ts.kubectl_ok(&a)
    };
    n(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=two",
    ]);
    assert_eq!(
        n(&["get", "cm", "cfg", "-o", "jsonpath={.data.a},{.data.b}"]),
        "1,two"
    );
    n(&[
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=password=hunter2",
    ]);
    assert_eq!(
        n(&["get", "secret", "s", "-o", "jsonpath={.data.password}"]),
        "aHVudGVyMg=="
    );
    n(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=3",
        "--port=8080",
    ]);
    let d: serde_json::Value =
        serde_json::from_str(&n(&["get", "deploy", "web", "-o", "json"])).expect("json");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.36"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    n(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
        "--type=NodePort",
    ]);
    let svc: serde_json::Value =
        serde_json::from_str(&n(&["get", "svc", "web", "-o", "json"])).expect("json");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert!(svc["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .is_some_and(|p| p >= 30000));
    n(&[
        "run",
        "once",
        "--image=busybox",
        "--restart=Never",
        "--labels=x=y",
        "--",
        "sh",
        "-c",
        "echo hi",
    ]);
    let pod: serde_json::Value =
        serde_json::from_str(&n(&["get", "pod", "once", "-o", "json"])).expect("json");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        serde_json::json!(["sh", "-c", "echo hi"])
    );
    n(&["create", "job", "j", "--image=busybox", "--", "true"]);
    n(&[
        "create",
        "cronjob",
        "cj",
        "--image=busybox",
        "--schedule=*/5 * * * *",
        "--",
        "true",
    ]);
    n(&["create", "serviceaccount", "robot"]);
    let all = n(&["get", "all", "-o", "name"]);
    for want in [
        "pod/once",
        "service/web",
        "deployment.apps/web",
        "job.batch/j",
        "cronjob.batch/cj",
    ] {
        assert!(all.contains(want), "{want} missing from:\n{all}");
    }
    // timestamps survive the protobuf round trip
    assert!(n(&[
        "get",
        "cm",
        "cfg",
        "-o",
        "jsonpath={.metadata.creationTimestamp}"
    ])
    .ends_with('Z'));
}

/// A Secret's stringData is write-only: merged into data (its keys winning),
/// never stored or returned.
#[test]
fn secret_string_data_lands_in_data() {
    let ts = TestServer::start();
    let secret = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"keep":"YQ==","over":"b2xk"},"stringData":{"over":"new","plain":"text"}}"#;
    let out = ts.kubectl_stdin(&["apply", "-f", "-"], secret);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = ts.kubectl_ok(&["get", "secret", "s", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&got).expect("json");
    assert_eq!(v.get("stringData"), None, "{got}");
    assert_eq!(
        v["data"],
        serde_json::json!({"keep": "YQ==", "over": "bmV3", "plain": "dGV4dA=="})
    );
    // an update through stringData changes one key
    ts.kubectl_ok(&[
        "patch",
        "secret",
        "s",
        "--type=merge",
        "-p",
        r#"{"stringData":{"plain":"changed"}}"#,
    ]);
    let plain = ts.kubectl_ok(&["get", "secret", "s", "-o", "jsonpath={.data.plain}"]);
    assert_eq!(plain, "Y2hhbmdlZA==");
}
