//! PodSecurity admission with the real kubectl: a namespace labelled
//! `enforce=restricted` refuses a plain pod with upstream's 403 message and
//! admits a hardened one; `warn` levels warn (pods and workload templates);
//! invalid labels are refused; tightening `enforce` warns about existing pods.

use apiserver::testing::TestServer;

const HARDENED: &str = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hardened"},
  "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "app", "image": "busybox", "securityContext":
      {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}"#;

const HOST_NETWORK: &str = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostnet"},
  "spec": {"hostNetwork": true, "containers": [{"name": "app", "image": "busybox"}]}}"#;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn pod_security_levels_from_namespace_labels() {
    let ts = TestServer::start();
    ts.kubectl_ok(&["create", "namespace", "strict"]);
    ts.kubectl_ok(&[
        "label",
        "namespace",
        "strict",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ]);

    // a plain pod violates restricted: 403 with every reason
    let out = ts.kubectl(&["run", "plain", "-n", "strict", "--image=busybox"]);
    assert!(!out.status.success(), "a plain pod is refused");
    let err = stderr(&out);
    assert!(
        err.contains(r#"pods "plain" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false"#),
        "{err}"
    );
    for reason in [
        "unrestricted capabilities",
        "runAsNonRoot != true",
        "seccompProfile",
    ] {
        assert!(err.contains(reason), "{reason} in {err}");
    }
    assert!(!ts
        .kubectl(&["get", "pod", "plain", "-n", "strict"])
        .status
        .success());

    // a hardened pod is admitted, without warnings
    let out = ts.kubectl_stdin(&["create", "-n", "strict", "-f", "-"], HARDENED);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Warning"), "{}", stderr(&out));

    // a workload whose template violates the level is created, with a warning
    let out = ts.kubectl(&[
        "create",
        "deployment",
        "web",
        "-n",
        "strict",
        "--image=busybox",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(r#"Warning: would violate PodSecurity "restricted:latest""#),
        "{}",
        stderr(&out)
    );

    // warn only: admitted with a warning
    ts.kubectl_ok(&["create", "namespace", "warned"]);
    ts.kubectl_ok(&[
        "label",
        "namespace",
        "warned",
        "pod-security.kubernetes.io/warn=baseline",
    ]);
    let out = ts.kubectl_stdin(&["create", "-n", "warned", "-f", "-"], HOST_NETWORK);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            r#"would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#
        ),
        "{}",
        stderr(&out)
    );

    // invalid labels are refused
    let out = ts.kubectl(&[
        "label",
        "namespace",
        "warned",
        "pod-security.kubernetes.io/enforce=bogus",
    ]);
    assert!(!out.status.success(), "an invalid level is refused");
    assert!(stderr(&out).contains("is invalid"), "{}", stderr(&out));

    // tightening enforce warns about the pods already there
    let out = ts.kubectl(&[
        "label",
        "namespace",
        "warned",
        "pod-security.kubernetes.io/enforce=baseline",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(r#"existing pods in namespace "warned" violate the new PodSecurity enforce level "baseline:latest""#),
        "{}",
        stderr(&out)
    );
    // and from now on it is enforced
    let out = ts.kubectl_stdin(
        &["create", "-n", "warned", "-f", "-"],
        &HOST_NETWORK.replace("\"hostnet\"", "\"hostnet2\""),
    );
    assert!(!out.status.success(), "baseline now refuses hostNetwork");
    assert!(
        stderr(&out).contains(r#"violates PodSecurity "baseline:latest": host namespaces"#),
        "{}",
        stderr(&out)
    );
}
