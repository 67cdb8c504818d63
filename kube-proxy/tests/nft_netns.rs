//! Feeds rendered scripts to the real `nft`, only inside a throwaway network
//! namespace, and checks that a diff applied on top of `render_full(old)`
//! yields exactly the table `render_full(new)` builds. Needs root with `nft`
//! and `ip`; skipped without them, except under CI, where that is a failure.

use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy::rules::{desired, Config, Family, Ruleset};
use serde_json::{json, Value};

fn can_run() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let has = |cmd: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let ok = root && has("nft") && has("ip");
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "CI must run these as root with nft and ip installed"
    );
    ok
}

/// A network namespace deleted on drop, even when the test panics.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("kpscratch-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ip netns add {name} failed");
        Netns(name)
    }

    fn nft(&self, args: &[&str], script: Option<&str>) -> Result<String, String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0, "nft"]).args(args);
        let path = std::env::temp_dir().join(format!("{}-{}.nft", self.0, args.len()));
        if let Some(script) = script {
            std::fs::write(&path, script).map_err(|e| e.to_string())?;
            cmd.arg("-f").arg(&path);
        }
        let out = cmd.output().map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&path);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "nft {args:?} failed: {}\n--- script ---\n{}",
                String::from_utf8_lossy(&out.stderr),
                script.unwrap_or("")
            ))
        }
    }

    fn apply(&self, script: &str) {
        if let Err(e) = self.nft(&["-c"], Some(script)) {
            panic!("check: {e}");
        }
        if let Err(e) = self.nft(&[], Some(script)) {
            panic!("apply: {e}");
        }
    }

    /// The table as order-insensitive data: handles dropped, chain/set/map
    /// declarations keyed by name, set elements sorted, rules per chain in order.
    fn canonical(&self, family: Family) -> BTreeMap<String, Value> {
        let out = self
            .nft(&["-j", "list", "table", family.nft(), "kube-proxy"], None)
            .unwrap_or_else(|e| panic!("{e}"));
        let v: Value = serde_json::from_str(&out).expect("nft -j output");
        let mut canon: BTreeMap<String, Value> = BTreeMap::new();
        let items = v["nftables"].as_array().cloned().unwrap_or_default();
        for item in items {
            let Some((kind, body)) = item.as_object().and_then(|o| o.iter().next()) else {
                continue;
            };
            let mut body = body.clone();
            if let Some(o) = body.as_object_mut() {
                o.remove("handle");
                if let Some(Value::Array(elems)) = o.get_mut("elem") {
                    elems.sort_by_key(|e| e.to_string());
                }
            }
            match kind.as_str() {
                "chain" | "set" | "map" => {
                    canon.insert(format!("{kind} {}", body["name"]), body);
                }
                "rule" => {
                    let key = format!("rules {}", body["chain"]);
                    let entry = canon.entry(key).or_insert_with(|| json!([]));
                    if let Some(a) = entry.as_array_mut() {
                        a.push(body["expr"].clone());
                    }
                }
                _ => {}
            }
        }
        canon
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn svc(ns: &str, name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .expect("service fixture")
}

fn slice(ns: &str, svc: &str, v6: bool, ports: Value, eps: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": format!("{svc}-x"),
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "ports": ports, "endpoints": eps,
    }))
    .expect("slice fixture")
}

/// (services, slices) for a "before" (variant 0) and "after" (variant 1) world.
fn world(v6: bool, variant: u8) -> (Vec<Service>, Vec<EndpointSlice>) {
    let ip = |v4: &str, v6s: &str| if v6 { v6s.to_string() } else { v4.to_string() };
    let ep = |a: String, node: &str| json!({"addresses": [a], "nodeName": node});
    let mut services = vec![
        svc(
            "ns1",
            "web",
            json!({"clusterIP": ip("10.96.0.10", "fd00::10"),
            "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        ),
        svc(
            "ns1",
            "np",
            json!({"type": "NodePort", "clusterIP": ip("10.96.0.11", "fd00::11"),
            "externalTrafficPolicy": "Local",
            "externalIPs": [ip("192.0.2.7", "2001:db8::7")],
            "ports": [{"name": "p", "port": 8080, "nodePort": 30080}]}),
        ),
        svc(
            "ns2",
            "sticky",
            json!({"clusterIP": ip("10.96.0.12", "fd00::12"),
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": if variant == 0 { 600 } else { 900 }}},
            "ports": [{"port": 443, "protocol": "SCTP"}]}),
        ),
        svc(
            "ns2",
            "empty",
            json!({"type": "LoadBalancer", "clusterIP": ip("10.96.0.13", "fd00::13"),
            "ports": [{"name": "a", "port": 81, "nodePort": 30081}]}),
        ),
    ];
    let web_eps = if variant == 0 {
        json!([
            ep(ip("10.244.1.2", "fd00:244::2"), "n1"),
            ep(ip("10.244.2.3", "fd00:244::3"), "n2")
        ])
    } else {
        json!([
            ep(ip("10.244.1.2", "fd00:244::2"), "n1"),
            ep(ip("10.244.2.4", "fd00:244::4"), "n2")
        ])
    };
    let mut slices = vec![
        slice(
            "ns1",
            "web",
            v6,
            json!([{"name": "http", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
            web_eps,
        ),
        slice(
            "ns1",
            "np",
            v6,
            json!([{"name": "p", "port": 9090}]),
            if variant == 0 {
                json!([ep(ip("10.244.2.9", "fd00:244::9"), "n2")])
            } else {
                json!([
                    ep(ip("10.244.2.9", "fd00:244::9"), "n2"),
                    ep(ip("10.244.1.9", "fd00:244:1::9"), "n1")
                ])
            },
        ),
        slice(
            "ns2",
            "sticky",
            v6,
            json!([{"port": 4443, "protocol": "SCTP"}]),
            json!([
                ep(ip("10.244.1.5", "fd00:244::5"), "n1"),
                ep(ip("10.244.2.5", "fd00:244:2::5"), "n2")
            ]),
        ),
    ];
    if variant == 1 {
        services.push(svc(
            "ns3",
            "new",
            json!({"clusterIP": ip("10.96.0.14", "fd00::14"),
            "ports": [{"name": "x", "port": 82}]}),
        ));
        slices.push(slice(
            "ns3",
            "new",
            v6,
            json!([{"name": "x", "port": 8282}]),
            json!([ep(ip("10.244.3.1", "fd00:244:3::1"), "n3")]),
        ));
        // "empty" gets an endpoint, "web"'s dns port loses its endpoints.
        slices.push(slice(
            "ns2",
            "empty",
            v6,
            json!([{"name": "a", "port": 8181}]),
            json!([ep(ip("10.244.3.2", "fd00:244:3::2"), "n3")]),
        ));
        slices[0] = slice(
            "ns1",
            "web",
            v6,
            json!([{"name": "http", "port": 8080}]),
            json!([
                ep(ip("10.244.1.2", "fd00:244::2"), "n1"),
                ep(ip("10.244.2.4", "fd00:244::4"), "n2")
            ]),
        );
    }
    (services, slices)
}

fn config(v6: bool, node_ips: bool) -> Config {
    let family = if v6 { Family::Ipv6 } else { Family::Ipv4 };
    let ips = match (node_ips, v6) {
        (false, _) => vec![],
        (true, false) => vec![
            "192.168.1.10".parse().expect("ip"),
            "192.168.1.11".parse().expect("ip"),
        ],
        (true, true) => vec!["2001:db8:1::10".parse().expect("ip")],
    };
    Config {
        family,
        node_name: "n1".into(),
        node_ips: ips,
        cluster_cidr: Some(if v6 { "fd00:244::/48" } else { "10.244.0.0/16" }.into()),
        masquerade_all: false,
    }
}

fn roundtrip(v6: bool, node_ips: bool) {
    let cfg = config(v6, node_ips);
    let (s0, e0) = world(v6, 0);
    let (s1, e1) = world(v6, 1);
    let old = desired(&cfg, &s0, &e0);
    let new = desired(&cfg, &s1, &e1);
    let diff = Ruleset::render_diff(&old, &new);
    assert!(!diff.is_empty());
    assert!(
        !diff.contains("delete table"),
        "expected an incremental diff:\n{diff}"
    );

    let a = Netns::new(if v6 { "a6" } else { "a4" });
    let b = Netns::new(if v6 { "b6" } else { "b4" });
    a.apply(&old.render_full());
    a.apply(&old.render_full()); // idempotent over an existing table
    let before = a.canonical(cfg.family);
    a.apply(&diff);
    b.apply(&new.render_full());
    let after = a.canonical(cfg.family);
    assert!(after.len() > 20 && before != after, "vacuous comparison");
    assert_eq!(after, b.canonical(cfg.family), "diff old->new");

    // And back again.
    a.apply(&Ruleset::render_diff(&new, &old));
    b.apply(&old.render_full());
    assert_eq!(
        a.canonical(cfg.family),
        b.canonical(cfg.family),
        "diff new->old"
    );
}

#[test]
fn nft_accepts_full_and_diff_ipv4() {
    if !can_run() {
        eprintln!("skipping: needs root, nft and ip");
        return;
    }
    roundtrip(false, false);
    roundtrip(false, true);
}

#[test]
fn nft_accepts_full_and_diff_ipv6() {
    if !can_run() {
        eprintln!("skipping: needs root, nft and ip");
        return;
    }
    roundtrip(true, false);
    roundtrip(true, true);
}

#[test]
fn nft_applies_small_diff_on_large_table() {
    if !can_run() {
        eprintln!("skipping: needs root, nft and ip");
        return;
    }
    let bulk = |changed: &str| {
        let mut svcs = vec![];
        let mut slices = vec![];
        for i in 0..3000 {
            let name = format!("svc{i}");
            let cip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
            let ep_ip = if i == 7 {
                changed.to_string()
            } else {
                format!("10.244.{}.{}", i / 250, i % 250 + 1)
            };
            svcs.push(svc(
                "bulk",
                &name,
                json!({"clusterIP": cip, "ports": [{"name": "h", "port": 80}]}),
            ));
            slices.push(slice(
                "bulk",
                &name,
                false,
                json!([{"name": "h", "port": 8080}]),
                json!([{"addresses": [ep_ip], "nodeName": "n9"}]),
            ));
        }
        (svcs, slices)
    };
    let cfg = config(false, false);
    let (s0, e0) = bulk("10.250.0.1");
    let (s1, e1) = bulk("10.250.0.2");
    let old = desired(&cfg, &s0, &e0);
    let new = desired(&cfg, &s1, &e1);
    let diff = Ruleset::render_diff(&old, &new);
    assert!(diff.lines().count() < 10, "{diff}");

    let a = Netns::new("bulk-a");
    let b = Netns::new("bulk-b");
    let t = std::time::Instant::now();
    a.apply(&old.render_full());
    eprintln!(
        "full script of {} lines applied in {:?}",
        old.render_full().lines().count(),
        t.elapsed()
    );
    let t = std::time::Instant::now();
    a.apply(&diff);
    eprintln!(
        "diff of {} lines applied in {:?}",
        diff.lines().count(),
        t.elapsed()
    );
    b.apply(&new.render_full());
    assert_eq!(a.canonical(cfg.family), b.canonical(cfg.family));
}
