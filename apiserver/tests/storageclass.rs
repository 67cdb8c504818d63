//! StorageClasses and the DefaultStorageClass admission plugin with the real
//! kubectl, and NamespaceLifecycle's immortal namespaces: `kubectl get sc`
//! marks the default class; a claim without a class gets the newest default,
//! a claim with `storageClassName: ""` keeps none; a class's provisioner and
//! parameters are fixed; bad classes are 422; default, kube-system and
//! kube-public may not be deleted.

use apiserver::testing::TestServer;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn class(name: &str, default: bool) -> String {
    format!(
        r#"{{"apiVersion":"storage.k8s.io/v1","kind":"StorageClass","metadata":{{"name":"{name}","annotations":{{"storageclass.kubernetes.io/is-default-class":"{default}"}}}},"provisioner":"example.com/hostpath","parameters":{{"type":"fast"}}}}"#
    )
}

fn claim(name: &str, class: Option<&str>) -> String {
    let class = class.map_or(String::new(), |c| format!(r#","storageClassName":"{c}""#));
    format!(
        r#"{{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{{"name":"{name}"}},"spec":{{"accessModes":["ReadWriteOnce"],"resources":{{"requests":{{"storage":"1Gi"}}}}{class}}}}}"#
    )
}

#[test]
fn default_storage_class_is_given_to_claims_without_one() {
    let ts = TestServer::start();
    let create = |body: &str| {
        let out = ts.kubectl_stdin(&["create", "-f", "-"], body);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    let class_of =
        |pvc: &str| ts.kubectl_ok(&["get", "pvc", pvc, "-o", "jsonpath={.spec.storageClassName}"]);

    // no class at all: the claim stays without one
    create(&claim("before", None));
    assert_eq!(class_of("before"), "");

    create(&class("slow", false));
    create(&class("standard", true));
    let listed = ts.kubectl_ok(&["get", "sc"]);
    assert!(
        listed.contains("standard (default)")
            && listed.contains("example.com/hostpath")
            && listed.contains("Delete")
            && listed.contains("Immediate"),
        "{listed}"
    );
    assert!(!listed.contains("slow (default)"), "{listed}");

    create(&claim("defaulted", None));
    assert_eq!(class_of("defaulted"), "standard");
    create(&claim("explicit", Some("slow")));
    assert_eq!(class_of("explicit"), "slow");
    create(&claim("none", Some("")));
    assert_eq!(class_of("none"), "");

    // two defaults: the newest wins
    std::thread::sleep(std::time::Duration::from_millis(1100));
    create(&class("newer", true));
    create(&claim("second", None));
    assert_eq!(class_of("second"), "newer");

    // a class's provisioner and parameters are fixed at creation
    let out = ts.kubectl(&[
        "patch",
        "sc",
        "slow",
        "--type=merge",
        "-p",
        r#"{"provisioner":"example.com/other","parameters":{"type":"slow"}}"#,
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("provisioner: Forbidden: updates to provisioner are forbidden.")
            && err.contains("parameters: Forbidden: updates to parameters are forbidden."),
        "{err}"
    );
    // but its annotations may change
    ts.kubectl_ok(&[
        "annotate",
        "sc",
        "slow",
        "storageclass.kubernetes.io/is-default-class=true",
        "--overwrite",
    ]);

    let bad = r#"{"apiVersion":"storage.k8s.io/v1","kind":"StorageClass","metadata":{"name":"bad"},"provisioner":"","reclaimPolicy":"Recycle","volumeBindingMode":"Later"}"#;
    let out = ts.kubectl_stdin(&["create", "-f", "-"], bad);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("is invalid")
            && err.contains("provisioner: Required value")
            && err.contains("reclaimPolicy: Unsupported value: \"Recycle\"")
            && err.contains("volumeBindingMode: Unsupported value: \"Later\""),
        "{err}"
    );
}

#[test]
fn immortal_namespaces_may_not_be_deleted() {
    let ts = TestServer::start();
    for ns in ["default", "kube-system", "kube-public"] {
        let out = ts.kubectl(&["delete", "namespace", ns]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(&format!(
                "Error from server (Forbidden): namespaces \"{ns}\" is forbidden: this namespace may not be deleted"
            )),
            "{}",
            stderr(&out)
        );
    }
    assert!(ts
        .kubectl_ok(&["get", "ns", "default", "-o", "jsonpath={.status.phase}"])
        .contains("Active"));
    ts.kubectl_ok(&["create", "namespace", "mortal"]);
    ts.kubectl_ok(&["delete", "namespace", "mortal", "--wait=false"]);
}
