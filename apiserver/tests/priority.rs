//! PriorityClasses and the Priority admission plugin with the real kubectl:
//! the system classes exist from the start; a pod gets its class's priority
//! (or the global default's); an unknown class, a second global default, a
//! reserved name or an oversized value are refused.

use apiserver::testing::TestServer;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn priority_classes_give_pods_their_priority() {
    let ts = TestServer::start();
    let listed = ts.kubectl_ok(&["get", "priorityclass"]);
    assert!(
        listed.contains("system-node-critical") && listed.contains("2000001000"),
        "{listed}"
    );
    assert!(listed.contains("system-cluster-critical"), "{listed}");

    // no class, no default: 0
    ts.kubectl_ok(&["run", "plain", "--image=busybox"]);
    let p = ts.kubectl_ok(&[
        "get",
        "pod",
        "plain",
        "-o",
        "jsonpath={.spec.priority}/{.spec.preemptionPolicy}",
    ]);
    assert_eq!(p, "0/PreemptLowerPriority");

    ts.kubectl_ok(&[
        "create",
        "priorityclass",
        "high",
        "--value=1000",
        "--global-default",
    ]);
    let out = ts.kubectl(&[
        "create",
        "priorityclass",
        "other",
        "--value=5",
        "--global-default",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "PriorityClass high is already marked as default. Only one default can exist"
        ),
        "{}",
        stderr(&out)
    );
    // the global default applies to a pod without a class
    ts.kubectl_ok(&["run", "defaulted", "--image=busybox"]);
    let p = ts.kubectl_ok(&[
        "get",
        "pod",
        "defaulted",
        "-o",
        "jsonpath={.spec.priorityClassName}/{.spec.priority}",
    ]);
    assert_eq!(p, "high/1000");

    let pod = |class: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p-{class}"}},"spec":{{"priorityClassName":"{class}","containers":[{{"name":"c","image":"busybox"}}]}}}}"#
        )
    };
    let out = ts.kubectl_stdin(&["create", "-f", "-"], &pod("system-node-critical"));
    assert!(out.status.success(), "{}", stderr(&out));
    let p = ts.kubectl_ok(&[
        "get",
        "pod",
        "p-system-node-critical",
        "-o",
        "jsonpath={.spec.priority}",
    ]);
    assert_eq!(p, "2000001000");
    let out = ts.kubectl_stdin(&["create", "-f", "-"], &pod("nope"));
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains(r#"pods "p-nope" is forbidden: no PriorityClass with name nope was found"#),
        "{}",
        stderr(&out)
    );

    let out = ts.kubectl(&["create", "priorityclass", "system-mine", "--value=5"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("reserved for system use only"),
        "{}",
        stderr(&out)
    );
    let out = ts.kubectl(&["create", "priorityclass", "huge", "--value=2000000000"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("maximum allowed value of a user defined priority is 1000000000"),
        "{}",
        stderr(&out)
    );
}
