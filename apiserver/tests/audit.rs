//! Audit logging with the real kubectl: a policy audits secrets at
//! RequestResponse, everything else at Metadata, health checks not at all;
//! the log holds one audit.k8s.io/v1 Event per stage with the user, verb,
//! objectRef and response status upstream writes.

use std::sync::Arc;

use apiserver::audit::{Auditor, Policy};
use apiserver::testing::TestServer;
use serde_json::Value;

const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["secrets"]
- level: Metadata
"#;

#[test]
fn requests_are_audited_as_the_policy_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.log");
    let path = log.to_string_lossy().into_owned();
    let ts = TestServer::start_with(move |c| {
        let policy = Policy::parse(POLICY).expect("policy");
        c.audit = Some(Arc::new(Auditor::new(policy, &path, 0, 0, 0)));
    });
    ts.kubectl_ok(&["create", "secret", "generic", "s1", "--from-literal=k=v"]);
    ts.kubectl_ok(&["get", "pods"]);
    let missing = ts.kubectl(&["get", "configmap", "nope"]);
    assert!(!missing.status.success());
    ts.kubectl_ok(&["get", "--raw", "/healthz"]);

    let text = std::fs::read_to_string(&log).expect("audit log");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    assert!(events
        .iter()
        .all(|e| e["kind"] == "Event" && e["apiVersion"] == "audit.k8s.io/v1"));
    assert!(
        !events.iter().any(|e| e["requestURI"]
            .as_str()
            .is_some_and(|u| u.starts_with("/healthz"))),
        "health checks are not audited"
    );
    let find = |verb: &str, resource: &str, stage: &str| -> Value {
        events
            .iter()
            .find(|e| {
                e["verb"] == verb && e["objectRef"]["resource"] == resource && e["stage"] == stage
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {stage} event for {verb} {resource} in {text}"))
    };
    let created = find("create", "secrets", "ResponseComplete");
    assert_eq!(created["level"], "RequestResponse");
    assert_eq!(created["responseStatus"]["code"], 201);
    assert_eq!(created["objectRef"]["namespace"], "default");
    assert_eq!(created["requestObject"]["metadata"]["name"], "s1");
    assert_eq!(created["responseObject"]["metadata"]["name"], "s1");
    assert_eq!(created["user"]["username"], "admin");
    assert_eq!(created["sourceIPs"][0], "127.0.0.1");
    assert!(created["userAgent"]
        .as_str()
        .is_some_and(|a| a.starts_with("kubectl")));
    let received = find("create", "secrets", "RequestReceived");
    assert_eq!(
        received["auditID"], created["auditID"],
        "one audit ID per request"
    );

    let listed = find("list", "pods", "ResponseComplete");
    assert_eq!(listed["level"], "Metadata");
    assert!(
        listed.get("responseObject").is_none(),
        "Metadata carries no bodies"
    );
    let failed = find("get", "configmaps", "ResponseComplete");
    assert_eq!(failed["responseStatus"]["code"], 404);
    assert_eq!(failed["objectRef"]["name"], "nope");
    assert_eq!(failed["responseStatus"]["reason"], "NotFound");
}
