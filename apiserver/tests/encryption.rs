//! Secrets encrypted at rest: with an EncryptionConfiguration (aescbc) the
//! value in etcd is ciphertext in upstream's format, while kubectl reads and
//! lists the Secret in plain; ConfigMaps, not listed, stay plain.

use std::process::Command;

use apiserver::testing::TestServer;

fn etcd_value(endpoint: &str, key: &str) -> Vec<u8> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints={endpoint}"),
            "get",
            key,
            "--print-value-only",
        ])
        .output()
        .expect("etcdctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn secrets_are_ciphertext_in_etcd() {
    let config = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: key1\n        secret: c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/MTIzNDU=\n  - identity: {}\n";
    let ts = TestServer::start_with(|cfg| {
        cfg.encryption = apiserver::encryption::Transformer::parse(config, &|r| {
            (r == "secrets").then(|| "/registry/secrets/".to_string())
        })
        .expect("config");
    });
    ts.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=password=hunter2",
    ]);
    ts.kubectl_ok(&["create", "configmap", "c1", "--from-literal=colour=blue"]);
    let raw = etcd_value(&ts.etcd.endpoint, "/registry/secrets/default/s1");
    assert!(
        raw.starts_with(b"k8s:enc:aescbc:v1:key1:"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let b64 = b"aHVudGVyMg=="; // base64("hunter2")
    assert!(
        !raw.windows(b64.len()).any(|w| w == b64),
        "the secret's data is not in etcd in clear"
    );
    let plain = etcd_value(&ts.etcd.endpoint, "/registry/configmaps/default/c1");
    assert!(String::from_utf8_lossy(&plain).contains("blue"));
    // through the API: plain, by get, list and after an update
    assert_eq!(
        ts.kubectl_ok(&["get", "secret", "s1", "-o", "jsonpath={.data.password}"]),
        "aHVudGVyMg=="
    );
    assert!(ts
        .kubectl_ok(&["get", "secrets", "-o", "name"])
        .contains("secret/s1"));
    ts.kubectl_ok(&["label", "secret", "s1", "tier=db"]);
    assert_eq!(
        ts.kubectl_ok(&[
            "get",
            "secret",
            "s1",
            "-o",
            "jsonpath={.metadata.labels.tier}"
        ]),
        "db"
    );
    let raw = etcd_value(&ts.etcd.endpoint, "/registry/secrets/default/s1");
    assert!(raw.starts_with(b"k8s:enc:aescbc:v1:key1:"));
}
