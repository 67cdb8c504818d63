//! LimitRanger and ResourceQuota admission with the real kubectl: LimitRange
//! defaults land in a pod (and the limit-ranger annotation), its max refuses a
//! pod; a quota without a status refuses (the controller has not seen it), a
//! quota with room charges status.used, a full one refuses with upstream's
//! message, compute quotas want requests; concurrent creates never overrun.
//! (The resourcequota controller, which fills status.hard and gives back
//! what deletions free, is tested in the controller-manager.)

use apiserver::testing::TestServer;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn pod(name: &str, cpu: Option<&str>) -> String {
    let resources = match cpu {
        Some(c) => json!({"requests": {"cpu": c}}),
        None => json!({}),
    };
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "busybox", "resources": resources}]}})
    .to_string()
}

/// What the resourcequota controller would write: status.hard from spec.hard.
fn publish_hard(ts: &TestServer, ns: &str, name: &str, hard: serde_json::Value) {
    ts.kubectl_ok(&[
        "patch",
        "resourcequota",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &json!({"status": {"hard": hard}}).to_string(),
    ]);
}

#[test]
fn limit_ranges_default_and_bound_pods() {
    let ts = TestServer::start();
    ts.kubectl_ok(&["create", "namespace", "lr"]);
    let lr = json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits"},
        "spec": {"limits": [{"type": "Container",
            "default": {"cpu": "500m", "memory": "128Mi"},
            "defaultRequest": {"cpu": "100m"},
            "max": {"cpu": "1"}}]}});
    let out = ts.kubectl_stdin(&["create", "-n", "lr", "-f", "-"], &lr.to_string());
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = ts.kubectl_ok(&["get", "limitrange", "-n", "lr"]);
    assert!(
        shown.starts_with("NAME") && shown.contains("limits"),
        "{shown}"
    );

    let out = ts.kubectl_stdin(&["create", "-n", "lr", "-f", "-"], &pod("defaulted", None));
    assert!(out.status.success(), "{}", stderr(&out));
    let res = ts.kubectl_ok(&[
        "get",
        "pod",
        "defaulted",
        "-n",
        "lr",
        "-o",
        "jsonpath={.spec.containers[0].resources}",
    ]);
    let res: serde_json::Value = serde_json::from_str(&res).expect("resources json");
    assert_eq!(res["limits"]["cpu"], "500m", "{res}");
    assert_eq!(res["limits"]["memory"], "128Mi", "{res}");
    assert_eq!(res["requests"]["cpu"], "100m", "{res}");
    // defaultRequest memory defaults to default memory
    assert_eq!(res["requests"]["memory"], "128Mi", "{res}");
    let note = ts.kubectl_ok(&[
        "get",
        "pod",
        "defaulted",
        "-n",
        "lr",
        "-o",
        "jsonpath={.metadata.annotations.kubernetes\\.io/limit-ranger}",
    ]);
    assert!(note.starts_with("LimitRanger plugin set: "), "{note}");
    assert!(note.contains("limit for container app"), "{note}");

    let big = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
        "spec": {"containers": [{"name": "app", "image": "busybox", "resources": {"limits": {"cpu": "2"}}}]}});
    let out = ts.kubectl_stdin(&["create", "-n", "lr", "-f", "-"], &big.to_string());
    assert!(!out.status.success(), "a pod over max is refused");
    assert!(
        stderr(&out).contains(
            r#"pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2"#
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn resource_quotas_charge_and_refuse() {
    let ts = TestServer::start();
    ts.kubectl_ok(&["create", "namespace", "rq"]);
    ts.kubectl_ok(&[
        "create",
        "quota",
        "q",
        "-n",
        "rq",
        "--hard=pods=2,requests.cpu=1",
    ]);
    // no status yet: the controller has not seen the quota
    let out = ts.kubectl_stdin(
        &["create", "-n", "rq", "-f", "-"],
        &pod("early", Some("100m")),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("status unknown for quota: q"),
        "{}",
        stderr(&out)
    );
    publish_hard(&ts, "rq", "q", json!({"pods": "2", "requests.cpu": "1"}));

    // compute quotas want requests
    let out = ts.kubectl_stdin(&["create", "-n", "rq", "-f", "-"], &pod("bare", None));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"pods "bare" is forbidden: failed quota: q: must specify requests.cpu for: app"#
        ),
        "{}",
        stderr(&out)
    );

    for name in ["p1", "p2"] {
        let out = ts.kubectl_stdin(&["create", "-n", "rq", "-f", "-"], &pod(name, Some("400m")));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let used = ts.kubectl_ok(&[
        "get",
        "quota",
        "q",
        "-n",
        "rq",
        "-o",
        "jsonpath={.status.used}",
    ]);
    let used: serde_json::Value = serde_json::from_str(&used).expect("used");
    assert_eq!(used, json!({"pods": "2", "requests.cpu": "800m"}));
    let table = ts.kubectl_ok(&["get", "quota", "-n", "rq"]);
    assert!(table.contains("pods: 2/2, requests.cpu: 800m/1"), "{table}");

    let out = ts.kubectl_stdin(&["create", "-n", "rq", "-f", "-"], &pod("p3", Some("100m")));
    assert!(!out.status.success(), "a third pod is over the quota");
    assert!(
        stderr(&out).contains(r#"pods "p3" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"#),
        "{}",
        stderr(&out)
    );
    // a kind the quota does not limit is not affected
    ts.kubectl_ok(&["create", "configmap", "free", "-n", "rq"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_never_overrun_a_quota() {
    let ts = TestServer::start();
    ts.kubectl_ok(&["create", "namespace", "race"]);
    ts.kubectl_ok(&["create", "quota", "cm", "-n", "race", "--hard=configmaps=5"]);
    publish_hard(&ts, "race", "cm", json!({"configmaps": "5"}));
    let client = ts.client().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "race");
        tasks.push(tokio::spawn(async move {
            let cm: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}}))
                    .expect("configmap");
            api.create(&PostParams::default(), &cm).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 403, "{e:?}");
                assert!(e.message.contains("exceeded quota: cm"), "{}", e.message);
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 5, "exactly the quota's worth of creates succeed");
    let used = ts.kubectl_ok(&[
        "get",
        "quota",
        "cm",
        "-n",
        "race",
        "-o",
        "jsonpath={.status.used.configmaps}",
    ]);
    assert_eq!(used, "5");
}
