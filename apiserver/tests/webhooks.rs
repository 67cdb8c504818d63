//! Dynamic admission webhooks with the real kubectl and a real HTTPS webhook
//! server in the test (hyper + tokio-rustls, its certificate from the test
//! PKI, the CA given as caBundle): a mutating webhook labels ConfigMaps in
//! selected namespaces (and is reinvoked when a later one changes the
//! object); a validating webhook refuses with upstream's message and code,
//! warns, and sees the old object of a DELETE; failurePolicy Fail refuses
//! when the webhook cannot be called, Ignore lets the request through; a
//! webhook is reached through a Service; configurations are validated and
//! defaulted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiserver::testing::TestServer;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

type Handler = Arc<dyn Fn(&str, &Value) -> Value + Send + Sync>;

/// An HTTPS admission webhook server on 127.0.0.1; answers with `handler`
/// (by path) and records every review it receives. `/slow` answers after 3 s.
struct WebhookServer {
    port: u16,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookServer {
    fn start((cert, key): (String, String), handler: Handler) -> WebhookServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind webhook");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let certs = rustls_pemfile::certs(&mut cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("certs");
                let key = rustls_pemfile::private_key(&mut key.as_bytes())
                    .expect("key")
                    .expect("a key");
                let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server config");
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
                loop {
                    let (tcp, _) = tokio::select! {
                        _ = &mut stopped => return,
                        c = listener.accept() => match c {
                            Ok(c) => c,
                            Err(_) => continue,
                        },
                    };
                    let (acceptor, handler, seen) =
                        (acceptor.clone(), handler.clone(), recorded.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let svc = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let (handler, seen) = (handler.clone(), seen.clone());
                                async move {
                                    let target = req
                                        .uri()
                                        .path_and_query()
                                        .map(|p| p.to_string())
                                        .unwrap_or_default();
                                    let path = req.uri().path().to_string();
                                    let body = req
                                        .into_body()
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    let review: Value =
                                        serde_json::from_slice(&body).unwrap_or(Value::Null);
                                    seen.lock().expect("seen").push((target, review.clone()));
                                    if path == "/slow" {
                                        tokio::time::sleep(Duration::from_secs(3)).await;
                                    }
                                    let out = handler(&path, &review);
                                    let mut resp = hyper::Response::new(Full::new(Bytes::from(
                                        serde_json::to_vec(&out).unwrap_or_default(),
                                    )));
                                    resp.headers_mut().insert(
                                        http::header::CONTENT_TYPE,
                                        http::HeaderValue::from_static("application/json"),
                                    );
                                    Ok::<_, Infallible>(resp)
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    });
                }
            });
        });
        WebhookServer {
            port,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The reviews received at `path` so far.
    fn reviews(&self, path: &str) -> Vec<Value> {
        self.seen
            .lock()
            .expect("seen")
            .iter()
            .filter(|(p, _)| p.split('?').next() == Some(path))
            .map(|(_, r)| r.clone())
            .collect()
    }

    fn targets(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("seen")
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn answer(review: &Value, response: Value) -> Value {
    let mut r = response;
    r["uid"] = review["request"]["uid"].clone();
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": r})
}

fn allow(review: &Value) -> Value {
    answer(review, json!({"allowed": true}))
}

fn patch(review: &Value, ops: Value) -> Value {
    answer(
        review,
        json!({"allowed": true, "patchType": "JSONPatch", "patch": b64(ops.to_string().as_bytes())}),
    )
}

/// JSONPatch ops setting one label, whether or not the object has labels.
fn set_label(obj: &Value, key: &str, value: &str) -> Value {
    if obj
        .pointer("/metadata/labels")
        .is_some_and(Value::is_object)
    {
        let escaped = key.replace('~', "~0").replace('/', "~1");
        json!([{"op": "add", "path": format!("/metadata/labels/{escaped}"), "value": value}])
    } else {
        json!([{"op": "add", "path": "/metadata/labels", "value": {key: value}}])
    }
}

fn rules(ops: &[&str], resources: &[&str]) -> Value {
    json!([{"operations": ops, "apiGroups": [""], "apiVersions": ["v1"], "resources": resources}])
}

/// One webhook of a configuration, called at `url` with the test CA.
fn hook(ts: &TestServer, name: &str, url: &str, rules: Value, extra: Value) -> Value {
    let mut h = json!({
        "name": name,
        "clientConfig": {"url": url, "caBundle": b64(ts.pki.ca_pem.as_bytes())},
        "rules": rules,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    if let (Some(h), Some(extra)) = (h.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            h.insert(k.clone(), v.clone());
        }
    }
    h
}

fn configuration(kind: &str, name: &str, hooks: Vec<Value>) -> String {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": name}, "webhooks": hooks})
    .to_string()
}

/// Create configurations and wait until a LIST (served from the watch cache,
/// which admission reads) shows them all.
fn install(ts: &TestServer, plural: &str, manifests: &[String]) {
    let mut names = Vec::new();
    for m in manifests {
        let v: Value = serde_json::from_str(m).expect("manifest");
        names.push(
            v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        ts.kubectl_stdin_ok(&["create", "-f", "-"], m);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ts.kubectl_ok(&["get", plural, "-o", "name"]);
        if names.iter().all(|n| out.contains(&format!("/{n}\n"))) {
            return;
        }
        assert!(Instant::now() < deadline, "{plural} not listed: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn configmap(name: &str, labels: Value, data: Value) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels}, "data": data})
    .to_string()
}

fn labels_of(ts: &TestServer, ns: &str, name: &str) -> Value {
    let out = ts.kubectl_ok(&[
        "get",
        "configmap",
        name,
        "-n",
        ns,
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    if out.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(&out).expect("labels json")
    }
}

#[test]
fn mutating_webhooks_patch_objects_in_selected_namespaces() {
    let ts = TestServer::start();
    let server = WebhookServer::start(
        ts.pki.serving("webhook"),
        Arc::new(|path: &str, review: &Value| {
            let obj = &review["request"]["object"];
            match path {
                "/inject" => patch(review, set_label(obj, "injected", "true")),
                // records whether it ran after /second
                "/first" => {
                    let saw = obj.pointer("/metadata/labels/second").is_some();
                    patch(
                        review,
                        set_label(obj, "first-saw-second", if saw { "true" } else { "false" }),
                    )
                }
                "/second" => patch(review, set_label(obj, "second", "true")),
                _ => allow(review),
            }
        }),
    );
    let reinvoke = json!({"objectSelector": {"matchLabels": {"reinvoke": "yes"}}});
    install(
        &ts,
        "mutatingwebhookconfigurations",
        &[
            configuration(
                "MutatingWebhookConfiguration",
                "inject",
                vec![hook(
                    &ts,
                    "inject.ironkube.test",
                    &server.url("/inject"),
                    rules(&["CREATE"], &["configmaps"]),
                    json!({"namespaceSelector": {"matchLabels": {"inject": "true"}}}),
                )],
            ),
            // configurations run by name: a-... before b-...
            configuration(
                "MutatingWebhookConfiguration",
                "a-first",
                vec![hook(
                    &ts,
                    "first.ironkube.test",
                    &server.url("/first"),
                    rules(&["CREATE"], &["configmaps"]),
                    json!({"reinvocationPolicy": "IfNeeded", "objectSelector": reinvoke["objectSelector"]}),
                )],
            ),
            configuration(
                "MutatingWebhookConfiguration",
                "b-second",
                vec![hook(
                    &ts,
                    "second.ironkube.test",
                    &server.url("/second"),
                    rules(&["CREATE"], &["configmaps"]),
                    reinvoke.clone(),
                )],
            ),
        ],
    );
    // kubectl get shows upstream's columns
    let table = ts.kubectl_ok(&["get", "mutatingwebhookconfigurations"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "WEBHOOKS", "AGE"], "{table}");
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("inject "))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row.get(1), Some(&"1"), "{table}");

    ts.kubectl_ok(&["create", "namespace", "injected"]);
    ts.kubectl_ok(&["label", "namespace", "injected", "inject=true"]);
    ts.kubectl_ok(&["create", "namespace", "plain"]);
    ts.kubectl_ok(&[
        "create",
        "configmap",
        "c",
        "-n",
        "injected",
        "--from-literal=a=b",
    ]);
    ts.kubectl_ok(&[
        "create",
        "configmap",
        "c",
        "-n",
        "plain",
        "--from-literal=a=b",
    ]);
    assert_eq!(labels_of(&ts, "injected", "c"), json!({"injected": "true"}));
    assert_eq!(labels_of(&ts, "plain", "c"), json!({}));

    // what the webhook was told
    let reviews = server.reviews("/inject");
    assert_eq!(reviews.len(), 1, "only the selected namespace: {reviews:?}");
    let r = &reviews[0];
    assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r["kind"], "AdmissionReview");
    let req = &r["request"];
    assert!(!req["uid"].as_str().unwrap_or_default().is_empty());
    assert_eq!(
        req["kind"],
        json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert_eq!(
        req["resource"],
        json!({"group": "", "version": "v1", "resource": "configmaps"})
    );
    assert_eq!(req["requestKind"], req["kind"]);
    assert_eq!(req["requestResource"], req["resource"]);
    assert_eq!(req["operation"], "CREATE");
    assert_eq!(req["name"], "c");
    assert_eq!(req["namespace"], "injected");
    assert_eq!(req["userInfo"]["username"], "admin");
    assert!(req["userInfo"]["groups"]
        .as_array()
        .is_some_and(|g| g.iter().any(|g| g == "system:masters")));
    assert_eq!(req["object"]["data"], json!({"a": "b"}));
    assert!(
        req["object"]["metadata"].get("uid").is_none(),
        "mutating webhooks run before the object is stamped"
    );
    assert!(req["oldObject"].is_null());
    assert_eq!(req["dryRun"], false);
    assert_eq!(req["options"]["kind"], "CreateOptions");
    assert_eq!(req["options"]["apiVersion"], "meta.k8s.io/v1");
    // the call carried upstream's timeout parameter
    assert!(
        server.targets().iter().any(|t| t == "/inject?timeout=10s"),
        "{:?}",
        server.targets()
    );

    // a server-side dry run is mutated too, and says so
    let out = ts.kubectl_ok(&[
        "create",
        "configmap",
        "d",
        "-n",
        "injected",
        "--dry-run=server",
        "-o",
        "jsonpath={.metadata.labels.injected}",
    ]);
    assert_eq!(out, "true");
    assert_eq!(
        server
            .reviews("/inject")
            .last()
            .map(|r| r["request"]["dryRun"].clone()),
        Some(json!(true))
    );

    // an update does not match a CREATE rule
    ts.kubectl_ok(&["label", "configmap", "c", "-n", "injected", "x=y"]);
    assert_eq!(server.reviews("/inject").len(), 2);

    // reinvocation: /first (IfNeeded) runs again after /second changed the object
    let out = ts.kubectl_stdin(
        &["create", "-n", "plain", "-f", "-"],
        &configmap("again", json!({"reinvoke": "yes"}), json!({})),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let labels = labels_of(&ts, "plain", "again");
    assert_eq!(labels["second"], "true", "{labels}");
    assert_eq!(labels["first-saw-second"], "true", "{labels}");
    assert_eq!(server.reviews("/first").len(), 2);
    assert_eq!(server.reviews("/second").len(), 1);
}

#[test]
fn validating_webhooks_refuse_warn_and_see_deletions() {
    let ts = TestServer::start();
    let server = WebhookServer::start(
        ts.pki.serving("webhook"),
        Arc::new(|path: &str, review: &Value| {
            let req = &review["request"];
            match path {
                "/deny" => {
                    let data = &req["object"]["data"];
                    let name = req["name"].as_str().unwrap_or_default();
                    if data.get("forbidden").is_some() {
                        answer(
                            review,
                            json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden",
                                "message": "the key \"forbidden\" is not allowed"}}),
                        )
                    } else if data.get("both").is_some() {
                        answer(
                            review,
                            json!({"allowed": false, "warnings": ["about to refuse"],
                                "status": {"code": 403, "reason": "Forbidden", "message": "refused with a warning"}}),
                        )
                    } else if data.get("bare").is_some() {
                        answer(review, json!({"allowed": false}))
                    } else if data.get("warn").is_some() {
                        answer(
                            review,
                            json!({"allowed": true, "warnings": [format!("ConfigMap {name}: keys named warn are deprecated")]}),
                        )
                    } else {
                        allow(review)
                    }
                }
                "/protect" => {
                    let old = &req["oldObject"];
                    if old.pointer("/metadata/labels/protected") == Some(&json!("true")) {
                        answer(
                            review,
                            json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden",
                                "message": format!("ConfigMap {} is protected", old["metadata"]["name"].as_str().unwrap_or_default())}}),
                        )
                    } else {
                        allow(review)
                    }
                }
                _ => allow(review),
            }
        }),
    );
    install(
        &ts,
        "validatingwebhookconfigurations",
        &[configuration(
            "ValidatingWebhookConfiguration",
            "policy",
            vec![
                hook(
                    &ts,
                    "deny.ironkube.test",
                    &server.url("/deny"),
                    rules(&["CREATE", "UPDATE"], &["configmaps"]),
                    json!({}),
                ),
                hook(
                    &ts,
                    "protect.ironkube.test",
                    &server.url("/protect"),
                    rules(&["DELETE"], &["configmaps"]),
                    json!({}),
                ),
            ],
        )],
    );
    let table = ts.kubectl_ok(&["get", "validatingwebhookconfigurations"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["policy", "2"])),
        "{table}"
    );

    let out = ts.kubectl_stdin(
        &["create", "-f", "-"],
        &configmap("fine", json!({}), json!({"k": "v"})),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // refused with the webhook's message and code
    let bad = configmap("bad", json!({}), json!({"forbidden": "1"}));
    let out = ts.kubectl_stdin(&["create", "-f", "-"], &bad);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"Error from server (Forbidden): error when creating "STDIN": admission webhook "deny.ironkube.test" denied the request: the key "forbidden" is not allowed"#
        ),
        "{}",
        stderr(&out)
    );
    let (code, status) = ts.raw(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        bad.as_bytes(),
    );
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(status["code"], 403);
    assert_eq!(
        status["message"],
        r#"admission webhook "deny.ironkube.test" denied the request: the key "forbidden" is not allowed"#
    );
    // a refusal without a status: 400, "without explanation"
    let (code, status) = ts.raw(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        configmap("bare", json!({}), json!({"bare": "1"})).as_bytes(),
    );
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        r#"admission webhook "deny.ironkube.test" denied the request without explanation"#
    );
    // an update is validated too, and so is a server-side dry run
    let out = ts.kubectl(&[
        "patch",
        "configmap",
        "fine",
        "--type=merge",
        "-p",
        r#"{"data":{"forbidden":"x"}}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"admission webhook "deny.ironkube.test" denied the request"#),
        "{}",
        stderr(&out)
    );
    let out = ts.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &bad);
    assert!(!out.status.success());
    let last = server.reviews("/deny").pop().unwrap_or_default();
    assert_eq!(last["request"]["dryRun"], true);
    assert_eq!(last["request"]["options"]["dryRun"], json!(["All"]));
    assert_eq!(
        server
            .reviews("/deny")
            .iter()
            .filter(|r| r["request"]["operation"] == "UPDATE")
            .map(|r| r["request"]["oldObject"]["data"].clone())
            .collect::<Vec<_>>(),
        vec![json!({"k": "v"})]
    );

    // a webhook's warning reaches kubectl
    let out = ts.kubectl_stdin(
        &["create", "-f", "-"],
        &configmap("warned", json!({}), json!({"warn": "1"})),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Warning: ConfigMap warned: keys named warn are deprecated"),
        "{}",
        stderr(&out)
    );

    // ... and goes with a refusal too
    let out = ts.kubectl_stdin(
        &["create", "-f", "-"],
        &configmap("both", json!({}), json!({"both": "1"})),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Warning: about to refuse")
            && stderr(&out).contains(r#"denied the request: refused with a warning"#),
        "{}",
        stderr(&out)
    );

    // a DELETE rule sees the old object
    let out = ts.kubectl_stdin(
        &["create", "-f", "-"],
        &configmap("keep", json!({"protected": "true"}), json!({"k": "v"})),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ts.kubectl(&["delete", "configmap", "keep"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"admission webhook "protect.ironkube.test" denied the request: ConfigMap keep is protected"#
        ),
        "{}",
        stderr(&out)
    );
    ts.kubectl_ok(&["get", "configmap", "keep"]);
    let deletes = server.reviews("/protect");
    let req = &deletes.last().expect("a DELETE review")["request"];
    assert_eq!(req["operation"], "DELETE");
    assert_eq!(req["name"], "keep");
    assert_eq!(req["namespace"], "default");
    assert!(req["object"].is_null());
    assert_eq!(req["oldObject"]["metadata"]["name"], "keep");
    assert_eq!(req["oldObject"]["data"], json!({"k": "v"}));
    assert_eq!(req["options"]["kind"], "DeleteOptions");
    ts.kubectl_ok(&["delete", "configmap", "fine"]);
    assert!(!ts.kubectl(&["get", "configmap", "fine"]).status.success());
}

#[test]
fn failure_policies_decide_when_a_webhook_cannot_be_called() {
    let ts = TestServer::start();
    let server = WebhookServer::start(
        ts.pki.serving("webhook"),
        Arc::new(|_: &str, review: &Value| allow(review)),
    );
    // a port nothing listens on
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a: SocketAddr| a.port())
        .expect("port");
    let dead_url = format!("https://127.0.0.1:{dead}/check");
    let only = |policy: &str| json!({"objectSelector": {"matchLabels": {"policy": policy}}});
    let mut untrusted = hook(
        &ts,
        "untrusted.ironkube.test",
        &server.url("/check"),
        rules(&["CREATE"], &["configmaps"]),
        only("untrusted"),
    );
    let other_ca = apiserver::testing::Pki::new().ca_pem;
    untrusted["clientConfig"]["caBundle"] = json!(b64(other_ca.as_bytes()));
    install(
        &ts,
        "validatingwebhookconfigurations",
        &[configuration(
            "ValidatingWebhookConfiguration",
            "failures",
            vec![
                hook(
                    &ts,
                    "closed.ironkube.test",
                    &dead_url,
                    rules(&["CREATE"], &["configmaps"]),
                    only("fail"),
                ),
                {
                    let mut h = hook(
                        &ts,
                        "open.ironkube.test",
                        &dead_url,
                        rules(&["CREATE"], &["configmaps"]),
                        only("ignore"),
                    );
                    h["failurePolicy"] = json!("Ignore");
                    h
                },
                hook(
                    &ts,
                    "slow.ironkube.test",
                    &server.url("/slow"),
                    rules(&["CREATE"], &["configmaps"]),
                    json!({"timeoutSeconds": 1, "objectSelector": {"matchLabels": {"policy": "slow"}}}),
                ),
                untrusted,
            ],
        )],
    );
    install(
        &ts,
        "mutatingwebhookconfigurations",
        &[configuration(
            "MutatingWebhookConfiguration",
            "mutating-failures",
            vec![hook(
                &ts,
                "mclosed.ironkube.test",
                &dead_url,
                rules(&["CREATE"], &["configmaps"]),
                only("mfail"),
            )],
        )],
    );
    let create = |name: &str, policy: &str| {
        ts.kubectl_stdin(
            &["create", "-f", "-"],
            &configmap(name, json!({"policy": policy}), json!({})),
        )
    };

    let out = create("closed", "fail");
    assert!(!out.status.success());
    let want = format!(
        r#"Internal error occurred: failed calling webhook "closed.ironkube.test": failed to call webhook: Post "https://127.0.0.1:{dead}/check?timeout=10s": dial tcp 127.0.0.1:{dead}: connect: connection refused"#
    );
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    let (code, status) = ts.raw(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        configmap("closed", json!({"policy": "fail"}), json!({})).as_bytes(),
    );
    assert_eq!(code, 500, "{status}");
    assert_eq!(status["reason"], "InternalError");
    assert!(!ts.kubectl(&["get", "configmap", "closed"]).status.success());

    let out = create("open", "ignore");
    assert!(out.status.success(), "{}", stderr(&out));
    ts.kubectl_ok(&["get", "configmap", "open"]);

    let out = create("mclosed", "mfail");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"failed calling webhook "mclosed.ironkube.test""#),
        "{}",
        stderr(&out)
    );

    // the webhook's timeout bounds the call
    let started = Instant::now();
    let out = create("slow", "slow");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"failed calling webhook "slow.ironkube.test""#)
            && stderr(&out).contains("context deadline exceeded"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // a server whose certificate the caBundle does not vouch for is not called
    let out = create("untrusted", "untrusted");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"failed calling webhook "untrusted.ironkube.test""#)
            && stderr(&out).contains("tls: failed to verify certificate"),
        "{}",
        stderr(&out)
    );
    assert!(server.reviews("/check").is_empty());
}

#[test]
fn webhooks_are_reached_through_a_service() {
    let ts = TestServer::start();
    let server = WebhookServer::start(
        ts.pki.serving_for("hook-svc", &["hook-svc.default.svc"]),
        Arc::new(|_: &str, review: &Value| {
            if review["request"]["object"]["data"]
                .get("forbidden")
                .is_some()
            {
                answer(
                    review,
                    json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": "no"}}),
                )
            } else {
                allow(review)
            }
        }),
    );
    // a Service without a selector, its Endpoints written by hand
    ts.kubectl_stdin_ok(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook-svc"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": server.port}]}})
        .to_string(),
    );
    ts.kubectl_stdin_ok(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "hook-svc"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": server.port}]}]})
        .to_string(),
    );
    let mut h = hook(
        &ts,
        "svc.ironkube.test",
        "",
        rules(&["CREATE"], &["configmaps"]),
        json!({}),
    );
    h["clientConfig"] = json!({"service": {"namespace": "default", "name": "hook-svc", "path": "/validate"},
        "caBundle": b64(ts.pki.ca_pem.as_bytes())});
    install(
        &ts,
        "validatingwebhookconfigurations",
        &[configuration(
            "ValidatingWebhookConfiguration",
            "svc",
            vec![h],
        )],
    );
    let port = ts.kubectl_ok(&[
        "get",
        "validatingwebhookconfiguration",
        "svc",
        "-o",
        "jsonpath={.webhooks[0].clientConfig.service.port}",
    ]);
    assert_eq!(port, "443", "the service port defaults to 443");
    let out = ts.kubectl_stdin(
        &["create", "-f", "-"],
        &configmap("bad", json!({}), json!({"forbidden": "1"})),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"Error from server (Forbidden): error when creating "STDIN": admission webhook "svc.ironkube.test" denied the request: no"#
        ),
        "{}",
        stderr(&out)
    );
    let out = ts.kubectl_stdin(
        &["create", "-f", "-"],
        &configmap("good", json!({}), json!({"k": "v"})),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        server.targets(),
        vec!["/validate?timeout=10s".to_string(); 2]
    );
}

#[test]
fn configurations_are_validated_and_defaulted() {
    let ts = TestServer::start();
    let bad = configuration(
        "ValidatingWebhookConfiguration",
        "bad",
        vec![
            json!({"name": "bad", "clientConfig": {"url": "http://example.com/x?y=1"},
                "rules": [{"operations": ["CREATE", "*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["*", "pods"]}],
                "timeoutSeconds": 31}),
            json!({"name": "a.b.c", "clientConfig": {}, "sideEffects": "Some", "admissionReviewVersions": ["v2"]}),
            json!({"name": "a.b.c", "clientConfig": {"service": {"namespace": "ns", "name": "s", "path": "no-slash"}},
                "sideEffects": "None", "admissionReviewVersions": ["v1"]}),
        ],
    );
    let out = ts.kubectl_stdin(&["create", "-f", "-"], &bad);
    assert!(!out.status.success());
    let err = stderr(&out);
    for want in [
        r#"The ValidatingWebhookConfiguration "bad" is invalid"#,
        r#"webhooks[0].name: Invalid value: "bad": should be a domain with at least three segments separated by dots"#,
        r#"webhooks[0].rules[0].operations: Invalid value: []admissionregistration.OperationType{"CREATE", "*"}: if '*' is present, must not specify other operations"#,
        r#"webhooks[0].rules[0].resources: Invalid value: []string{"*", "pods"}: if '*' is present, must not specify other resources without subresources"#,
        "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun",
        "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
        r#"webhooks[0].clientConfig.url: Invalid value: "http": 'https' is the only allowed URL scheme; desired format: https://host[/path]"#,
        r#"webhooks[0].clientConfig.url: Invalid value: "y=1": query parameters are not permitted in the URL"#,
        "webhooks[0].admissionReviewVersions: Required value: must specify one of v1, v1beta1",
        r#"webhooks[1].sideEffects: Unsupported value: "Some": supported values: "None", "NoneOnDryRun""#,
        "webhooks[1].clientConfig: Required value: exactly one of url or service is required",
        r#"webhooks[1].admissionReviewVersions: Invalid value: []string{"v2"}: must include at least one of v1, v1beta1"#,
        r#"webhooks[2].clientConfig.service.path: Invalid value: "no-slash": must start with a '/'"#,
        r#"webhooks[2].name: Duplicate value: "a.b.c""#,
    ] {
        assert!(err.contains(want), "missing {want}\nin: {err}");
    }

    let good = configuration(
        "MutatingWebhookConfiguration",
        "defaults",
        vec![json!({"name": "defaults.ironkube.test",
            "clientConfig": {"service": {"namespace": "ns", "name": "s"}},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"]})],
    );
    ts.kubectl_stdin_ok(&["create", "-f", "-"], &good);
    let got: Value = serde_json::from_str(&ts.kubectl_ok(&[
        "get",
        "mutatingwebhookconfiguration",
        "defaults",
        "-o",
        "json",
    ]))
    .expect("json");
    let w = &got["webhooks"][0];
    assert_eq!(w["failurePolicy"], "Fail");
    assert_eq!(w["matchPolicy"], "Equivalent");
    assert_eq!(w["timeoutSeconds"], 10);
    assert_eq!(w["reinvocationPolicy"], "Never");
    assert_eq!(w["namespaceSelector"], json!({}));
    assert_eq!(w["objectSelector"], json!({}));
    assert_eq!(w["rules"][0]["scope"], "*");
    assert_eq!(w["clientConfig"]["service"]["port"], 443);
    // cluster-scoped, listed by kubectl api-resources
    let res = ts.kubectl_ok(&["api-resources", "--api-group=admissionregistration.k8s.io"]);
    assert!(
        res.contains("mutatingwebhookconfigurations")
            && res.contains("validatingwebhookconfigurations"),
        "{res}"
    );
    // the configurations themselves are never sent to webhooks: a webhook on
    // everything that cannot be reached does not lock them
    let everything = configuration(
        "ValidatingWebhookConfiguration",
        "everything",
        vec![json!({"name": "everything.ironkube.test",
            "clientConfig": {"url": "https://127.0.0.1:1/"},
            "rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"]})],
    );
    install(&ts, "validatingwebhookconfigurations", &[everything]);
    let out = ts.kubectl(&["create", "configmap", "blocked"]);
    assert!(!out.status.success(), "everything else is refused");
    ts.kubectl_ok(&["delete", "validatingwebhookconfiguration", "everything"]);
}
