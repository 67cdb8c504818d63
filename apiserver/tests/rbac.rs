//! RBAC in the request path, with the real kubectl: an apiserver with
//! `--authorization-mode=Node,RBAC` and upstream's bootstrap roles; a user
//! with no bindings is refused with upstream's 403, `kubectl auth can-i`
//! answers from RBAC, a RoleBinding to `view` opens reads but not secrets,
//! and nobody grants what they do not hold.

use std::path::PathBuf;
use std::process::{Command, Output};

use apiserver::testing::{kubectl_path, write_kubeconfig, TestServer};

fn user_kubeconfig(ts: &TestServer, user: &str, groups: &[&str]) -> PathBuf {
    let (cert, key) = ts.pki.client(user, groups);
    let path = ts.dir.path().join(format!("{user}.kubeconfig"));
    write_kubeconfig(&path, ts.addr, &ts.pki.ca_pem, &cert, &key);
    path
}

fn kubectl_as(kc: &PathBuf, args: &[&str]) -> Output {
    Command::new(kubectl_path())
        .arg(format!("--kubeconfig={}", kc.display()))
        .args(args)
        .output()
        .expect("kubectl")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).trim().to_string(),
    )
}

#[test]
fn rbac_decides() {
    let ts = TestServer::start_with(|cfg| {
        cfg.authorization = vec![apiserver::authz::Mode::Node, apiserver::authz::Mode::Rbac];
    });
    // the bootstrap policy is there
    let roles = ts.kubectl_ok(&["get", "clusterroles", "-o", "name"]);
    for r in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:kube-scheduler",
        "system:node-proxier",
    ] {
        assert!(
            roles.contains(&format!("clusterrole.rbac.authorization.k8s.io/{r}\n")),
            "{r} in\n{roles}"
        );
    }
    let bindings = ts.kubectl_ok(&[
        "get",
        "clusterrolebinding",
        "cluster-admin",
        "-o",
        "jsonpath={.subjects[0].name}",
    ]);
    assert_eq!(bindings, "system:masters");

    let jane = user_kubeconfig(&ts, "jane", &[]);
    // discovery is open to every authenticated user, pods are not
    let raw = kubectl_as(&jane, &["get", "--raw", "/api"]);
    assert!(raw.status.success(), "{}", text(&raw).1);
    let denied = kubectl_as(&jane, &["get", "pods"]);
    assert!(!denied.status.success());
    assert!(
        text(&denied).1.contains("pods is forbidden: User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{}",
        text(&denied).1
    );
    let can = kubectl_as(&jane, &["auth", "can-i", "list", "pods"]);
    assert_eq!(
        (can.status.code(), text(&can).0.as_str()),
        (Some(1), "no"),
        "{}",
        text(&can).1
    );

    // view in default: reads, not secrets, not writes
    ts.kubectl_ok(&[
        "create",
        "rolebinding",
        "jane-view",
        "--clusterrole=view",
        "--user=jane",
    ]);
    ts.kubectl_ok(&["create", "configmap", "c1", "--from-literal=a=b"]);
    let mut listed = None;
    for _ in 0..50 {
        let o = kubectl_as(&jane, &["get", "configmaps", "-o", "name"]);
        if o.status.success() {
            listed = Some(text(&o).0);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        listed.is_some_and(|l| l.contains("configmap/c1")),
        "view reads configmaps"
    );
    let can = kubectl_as(&jane, &["auth", "can-i", "list", "pods"]);
    assert_eq!(text(&can).0, "yes");
    let secrets = kubectl_as(&jane, &["get", "secrets"]);
    assert!(
        text(&secrets)
            .1
            .contains("cannot list resource \"secrets\""),
        "{}",
        text(&secrets).1
    );
    let create = kubectl_as(&jane, &["auth", "can-i", "create", "deployments.apps"]);
    assert_eq!(text(&create).0, "no");
    let other_ns = kubectl_as(
        &jane,
        &["auth", "can-i", "list", "pods", "-n", "kube-system"],
    );
    assert_eq!(text(&other_ns).0, "no");
    let rules = kubectl_as(&jane, &["auth", "can-i", "--list"]);
    assert!(text(&rules).0.contains("pods"), "{}", text(&rules).0);

    // nobody grants what they do not hold
    ts.kubectl_ok(&[
        "create",
        "role",
        "binder",
        "--verb=create",
        "--resource=rolebindings.rbac.authorization.k8s.io",
    ]);
    ts.kubectl_ok(&[
        "create",
        "rolebinding",
        "jane-binder",
        "--role=binder",
        "--user=jane",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let grab = kubectl_as(
        &jane,
        &[
            "create",
            "rolebinding",
            "jane-admin",
            "--clusterrole=admin",
            "--user=jane",
        ],
    );
    assert!(!grab.status.success());
    assert!(
        text(&grab)
            .1
            .contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        text(&grab).1
    );
    // what she holds she may hand on
    let share = kubectl_as(
        &jane,
        &[
            "create",
            "rolebinding",
            "bob-view",
            "--clusterrole=view",
            "--user=bob",
        ],
    );
    assert!(share.status.success(), "{}", text(&share).1);

    // a SubjectAccessReview about someone else, by an admin
    let sar = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"bob","resourceAttributes":{"namespace":"default","verb":"get","resource":"pods"}}}"#;
    let out = ts.kubectl_stdin_ok(
        &[
            "create",
            "--raw",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            "-f",
            "-",
        ],
        sar,
    );
    assert!(out.contains("\"allowed\":true"), "{out}");
    let sar = sar.replace("\"get\"", "\"delete\"");
    let out = ts.kubectl_stdin_ok(
        &[
            "create",
            "--raw",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            "-f",
            "-",
        ],
        &sar,
    );
    assert!(out.contains("\"allowed\":false"), "{out}");
    // the review kinds are in discovery, so kubectl creates them as objects
    // (client-side validation off: for kinds without PATCH kubectl validates
    // against the protobuf OpenAPI v2 document, which is not served yet)
    let out = ts.kubectl_stdin_ok(
        &[
            "create",
            "--validate=false",
            "-f",
            "-",
            "-o",
            "jsonpath={.status.allowed}",
        ],
        &sar,
    );
    assert_eq!(out, "false");
    let listed = ts.kubectl_ok(&[
        "api-resources",
        "--api-group=authorization.k8s.io",
        "-o",
        "name",
    ]);
    for r in [
        "localsubjectaccessreviews.authorization.k8s.io",
        "selfsubjectaccessreviews.authorization.k8s.io",
        "selfsubjectrulesreviews.authorization.k8s.io",
        "subjectaccessreviews.authorization.k8s.io",
    ] {
        assert!(listed.lines().any(|l| l == r), "{r} in {listed}");
    }
}

/// `kubectl --as`: an admin acts as another user and gets that user's
/// answers; someone without `impersonate` is refused.
#[test]
fn impersonation() {
    let ts = TestServer::start_with(|cfg| {
        cfg.authorization = vec![apiserver::authz::Mode::Node, apiserver::authz::Mode::Rbac];
    });
    ts.kubectl_ok(&[
        "create",
        "rolebinding",
        "jane-view",
        "--clusterrole=view",
        "--user=jane",
    ]);
    // the admin, as jane: jane's rights, not the admin's
    ts.kubectl_ok(&["--as=jane", "get", "pods"]);
    let out = ts.kubectl(&["--as=jane", "get", "secrets"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains(r#"secrets is forbidden: User "jane" cannot list resource "secrets" in API group "" in the namespace "default""#),
        "{}",
        text(&out).1
    );
    assert_eq!(
        text(&ts.kubectl(&["--as=jane", "auth", "can-i", "delete", "pods"])).0,
        "no"
    );
    // a group brings its rights along
    assert_eq!(
        text(&ts.kubectl(&[
            "--as=jane",
            "--as-group=system:masters",
            "auth",
            "can-i",
            "delete",
            "pods"
        ]))
        .0,
        "yes"
    );
    let who = ts.kubectl_ok(&[
        "--as=jane",
        "--as-group=devs",
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo}",
    ]);
    let who: serde_json::Value = serde_json::from_str(&who).expect("whoami");
    assert_eq!(who["username"], "jane");
    assert_eq!(
        who["groups"],
        serde_json::json!(["devs", "system:authenticated"])
    );

    // bob may not impersonate
    let bob = user_kubeconfig(&ts, "bob", &[]);
    let out = kubectl_as(&bob, &["--as=jane", "get", "pods"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains(r#"users "jane" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{}",
        text(&out).1
    );
}
