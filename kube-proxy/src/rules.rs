//! The nftables proxy mode as pure data: `desired` turns Services,
//! EndpointSlices and this node's identity into the complete `kube-proxy`
//! table (one per IP family), and the renderers turn that into `nft -f`
//! scripts, either a full atomic replacement or an incremental diff whose size
//! follows what changed, not how many Services exist. No I/O happens here.
//!
//! Shape of the table (upstream's design, our own code):
//! - base chains `filter-input|forward|output` consult the
//!   `no-endpoint-services` / `no-endpoint-nodeports` vmaps to reject (or drop,
//!   for a traffic policy of Local with no local endpoints) new connections
//!   before DNAT; `nat-prerouting`/`nat-output` jump to `services`, which
//!   dispatches through the `service-ips` and `service-nodeports` vmaps;
//!   `nat-postrouting` jumps to `masquerading`, which only masquerades packets
//!   marked by `mark-for-masquerade`.
//! - per service port: `service-…` (Cluster policy endpoints), `local-…`
//!   (this node's endpoints), `external-…` (NodePort/externalIPs/LB IPs), and
//!   one `endpoint-…` chain (plus an `affinity-…` set with ClientIP affinity)
//!   per endpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

mod incremental;
/// The random Services, slices and changes of the incremental tests.
#[cfg(test)]
pub(crate) use incremental::tests as random;
pub use incremental::{Change, Incremental};

/// Name of the table in both families.
pub const TABLE: &str = "kube-proxy";
/// The packet mark that requests SNAT in `masquerading`.
pub const MASQ_MARK: &str = "0x4000";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
const MAX_AFFINITY_TIMEOUT: u32 = 86400;
/// nft object names are at most 255 bytes (256 with the NUL).
const NAME_MAX: usize = 255;

const FILTER_INPUT: &str = "filter-input";
const FILTER_FORWARD: &str = "filter-forward";
const FILTER_OUTPUT: &str = "filter-output";
const NAT_PREROUTING: &str = "nat-prerouting";
const NAT_OUTPUT: &str = "nat-output";
const NAT_POSTROUTING: &str = "nat-postrouting";
const SERVICES: &str = "services";
const MASQUERADING: &str = "masquerading";
const MARK_MASQ: &str = "mark-for-masquerade";
const REJECT_CHAIN: &str = "reject-chain";
const SERVICE_EP_CHECK: &str = "service-endpoints-check";
const NODEPORT_EP_CHECK: &str = "nodeport-endpoints-check";
const SERVICE_IPS: &str = "service-ips";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const NO_EP_SERVICES: &str = "no-endpoint-services";
const NO_EP_NODEPORTS: &str = "no-endpoint-nodeports";

/// IP family of one `kube-proxy` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The nft table family, which is also the address-match keyword.
    pub fn nft(self) -> &'static str {
        match self {
            Family::Ipv4 => "ip",
            Family::Ipv6 => "ip6",
        }
    }
    fn addr_type(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4_addr",
            Family::Ipv6 => "ipv6_addr",
        }
    }
    fn loopback(self) -> &'static str {
        match self {
            Family::Ipv4 => "127.0.0.0/8",
            Family::Ipv6 => "::1",
        }
    }
    fn slice_address_type(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }
    fn has(self, ip: &IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::Ipv4, IpAddr::V4(_)) | (Family::Ipv6, IpAddr::V6(_))
        )
    }
}

/// Node-level settings of the proxier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub family: Family,
    pub node_name: String,
    /// Addresses NodePorts answer on; empty means any local address.
    pub node_ips: Vec<IpAddr>,
    /// Pod CIDR; ClusterIP traffic from outside it is masqueraded.
    pub cluster_cidr: Option<String>,
    pub masquerade_all: bool,
}

/// One chain: its base-chain declaration (`type … hook … priority …`) if it
/// is a base chain, and its rules in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub hook: Option<String>,
    pub rules: Vec<String>,
}

/// A verdict map: key type (`… : verdict` is implied) and elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Map {
    pub key_type: String,
    pub elements: BTreeMap<String, String>,
}

/// The complete desired content of one `kube-proxy` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    pub family: Family,
    pub chains: BTreeMap<String, Chain>,
    /// Set name -> declaration body (`type …; flags …; timeout …;`).
    pub sets: BTreeMap<String, String>,
    pub maps: BTreeMap<String, Map>,
    /// UDP endpoints (ip, port) in use, for conntrack cleanup.
    pub udp_endpoints: BTreeSet<(IpAddr, u16)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    fn parse(p: Option<&str>) -> Option<Proto> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }
    fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One service port of one Service, with everything the rules need.
struct SvcPort {
    namespace: String,
    name: String,
    port_name: String,
    proto: Proto,
    port: u16,
    node_port: Option<u16>,
    cluster_ip: IpAddr,
    external_ips: Vec<IpAddr>,
    itp_local: bool,
    etp_local: bool,
    affinity_timeout: Option<u32>,
}

#[derive(Clone, Copy, Debug)]
struct Ep {
    ip: IpAddr,
    port: u16,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
}

/// Computes the desired table for `cfg.family`.
pub fn desired(cfg: &Config, services: &[Service], slices: &[EndpointSlice]) -> Ruleset {
    let mut rs = skeleton(cfg);
    let index = index_slices(slices);
    let masq_cidr = cfg
        .cluster_cidr
        .as_deref()
        .and_then(|c| normalize_cidr(c, cfg.family));
    for svc in services {
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let name = svc.metadata.name.as_deref().unwrap_or("");
        let svc_slices = index
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for sp in service_ports(cfg, svc) {
            let eps = endpoints(cfg, &sp, svc_slices);
            add_service_port(cfg, masq_cidr.as_deref(), &mut rs, &sp, &eps);
        }
    }
    rs
}

/// UDP endpoints that `old` used and `new` no longer does; their conntrack
/// entries should be flushed so clients stop talking to a dead backend.
pub fn stale_udp_endpoints(old: &Ruleset, new: &Ruleset) -> Vec<(IpAddr, u16)> {
    old.udp_endpoints
        .difference(&new.udp_endpoints)
        .copied()
        .collect()
}

fn skeleton(cfg: &Config) -> Ruleset {
    let ip = cfg.family.nft();
    let mut chains = BTreeMap::new();
    let mut base = |name: &str, hook: &str, rules: Vec<String>| {
        let hook = format!("{hook} ; policy accept ;");
        chains.insert(
            name.to_string(),
            Chain {
                hook: Some(hook),
                rules,
            },
        );
    };
    let new_jump = |c: &str| format!("ct state new jump {c}");
    base(
        FILTER_INPUT,
        "type filter hook input priority -110",
        vec![new_jump(NODEPORT_EP_CHECK), new_jump(SERVICE_EP_CHECK)],
    );
    base(
        FILTER_FORWARD,
        "type filter hook forward priority -110",
        vec![new_jump(SERVICE_EP_CHECK)],
    );
    base(
        FILTER_OUTPUT,
        "type filter hook output priority -110",
        vec![new_jump(SERVICE_EP_CHECK)],
    );
    base(
        NAT_PREROUTING,
        "type nat hook prerouting priority dstnat",
        vec![format!("jump {SERVICES}")],
    );
    // `priority dstnat` is refused on the output hook.
    base(
        NAT_OUTPUT,
        "type nat hook output priority -100",
        vec![format!("jump {SERVICES}")],
    );
    base(
        NAT_POSTROUTING,
        "type nat hook postrouting priority srcnat",
        vec![format!("jump {MASQUERADING}")],
    );

    let mut plain = |name: &str, rules: Vec<String>| {
        chains.insert(name.to_string(), Chain { hook: None, rules });
    };
    plain(MARK_MASQ, vec![format!("mark set mark or {MASQ_MARK}")]);
    plain(
        MASQUERADING,
        vec![
            format!("mark and {MASQ_MARK} == 0 return"),
            format!("mark set mark xor {MASQ_MARK}"),
            "masquerade fully-random".to_string(),
        ],
    );
    plain(REJECT_CHAIN, vec!["reject".to_string()]);
    let dispatch = format!("{ip} daddr . meta l4proto . th dport vmap");
    plain(
        SERVICE_EP_CHECK,
        vec![format!("{dispatch} @{NO_EP_SERVICES}")],
    );
    let nodeport_ips = nodeport_addresses(cfg);
    let np = "meta l4proto . th dport vmap";
    let loopback = format!("{ip} daddr != {}", cfg.family.loopback());
    let (np_check, np_dispatch) = match &nodeport_ips {
        NodePortAddrs::Any => (
            vec![format!("{loopback} {np} @{NO_EP_NODEPORTS}")],
            vec![format!(
                "fib daddr type local {loopback} {np} @{SERVICE_NODEPORTS}"
            )],
        ),
        NodePortAddrs::Only(set) => (
            vec![format!("{ip} daddr {set} {np} @{NO_EP_NODEPORTS}")],
            vec![format!("{ip} daddr {set} {np} @{SERVICE_NODEPORTS}")],
        ),
        NodePortAddrs::None => (vec![], vec![]),
    };
    plain(NODEPORT_EP_CHECK, np_check);
    let mut services = vec![format!("{dispatch} @{SERVICE_IPS}")];
    services.extend(np_dispatch);
    plain(SERVICES, services);

    let addr_key = format!("{} . inet_proto . inet_service", cfg.family.addr_type());
    let port_key = "inet_proto . inet_service".to_string();
    let maps = [
        (SERVICE_IPS, &addr_key),
        (NO_EP_SERVICES, &addr_key),
        (SERVICE_NODEPORTS, &port_key),
        (NO_EP_NODEPORTS, &port_key),
    ]
    .into_iter()
    .map(|(n, k)| {
        let map = Map {
            key_type: k.clone(),
            elements: BTreeMap::new(),
        };
        (n.to_string(), map)
    })
    .collect();

    Ruleset {
        family: cfg.family,
        chains,
        sets: BTreeMap::new(),
        maps,
        udp_endpoints: BTreeSet::new(),
    }
}

enum NodePortAddrs {
    /// Any local address (except loopback).
    Any,
    /// Only these addresses, rendered as an anonymous set.
    Only(String),
    /// node_ips were given but none is of this family: no NodePorts here.
    None,
}

fn nodeport_addresses(cfg: &Config) -> NodePortAddrs {
    if cfg.node_ips.is_empty() {
        return NodePortAddrs::Any;
    }
    let ips: BTreeSet<IpAddr> = cfg
        .node_ips
        .iter()
        .filter(|ip| cfg.family.has(ip) && !ip.is_loopback())
        .copied()
        .collect();
    if ips.is_empty() {
        return NodePortAddrs::None;
    }
    let list: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    NodePortAddrs::Only(format!("{{ {} }}", list.join(", ")))
}

/// Parses `addr/len` of the right family and clears host bits.
fn normalize_cidr(cidr: &str, family: Family) -> Option<String> {
    let (addr, len) = cidr.trim().split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    if !family.has(&addr) {
        return None;
    }
    let net: IpAddr = match addr {
        IpAddr::V4(a) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
        _ => return None,
    };
    Some(format!("{net}/{len}"))
}

type SliceIndex<'a> = BTreeMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>;

fn index_slices(slices: &[EndpointSlice]) -> SliceIndex<'_> {
    let mut index: SliceIndex<'_> = BTreeMap::new();
    for slice in slices {
        let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
        let svc = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        if let Some(svc) = svc {
            index.entry((ns, svc.as_str())).or_default().push(slice);
        }
    }
    index
}

fn port_u16(p: Option<i32>) -> Option<u16> {
    p.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0)
}

/// The proxied ports of a Service for this family; empty for headless,
/// ExternalName, or a Service without a ClusterIP of this family.
fn service_ports(cfg: &Config, svc: &Service) -> Vec<SvcPort> {
    let Some(spec) = svc.spec.as_ref() else {
        return vec![];
    };
    let typ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !matches!(typ, "ClusterIP" | "NodePort" | "LoadBalancer") {
        return vec![];
    }
    let primary = spec.cluster_ip.as_deref().unwrap_or("");
    if primary == "None" || primary.is_empty() {
        return vec![];
    }
    let cluster_ip = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .chain(std::iter::once(primary))
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .find(|ip| cfg.family.has(ip));
    let Some(cluster_ip) = cluster_ip else {
        return vec![];
    };
    let mut external_ips: BTreeSet<IpAddr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .filter(|ip| cfg.family.has(ip))
        .collect();
    if typ == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for ing in ingress.into_iter().flatten() {
            // ipMode Proxy: the load balancer delivers to the node, not the VIP.
            if ing.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            let ip = ing.ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok());
            external_ips.extend(ip.filter(|ip| cfg.family.has(ip)));
        }
    }
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| (1..=MAX_AFFINITY_TIMEOUT).contains(t))
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let namespace = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or("");
    let mut seen = BTreeSet::new();
    let mut out = vec![];
    for p in spec.ports.iter().flatten() {
        let Some(sp) = one_port(p, typ) else { continue };
        if !seen.insert((sp.0.nft(), sp.1.clone())) {
            continue;
        }
        let (proto, port_name, port, node_port) = sp;
        out.push(SvcPort {
            namespace: namespace.to_string(),
            name: name.to_string(),
            port_name,
            proto,
            port,
            node_port,
            cluster_ip,
            external_ips: external_ips.iter().copied().collect(),
            itp_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            etp_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            affinity_timeout,
        });
    }
    out
}

fn one_port(p: &ServicePort, typ: &str) -> Option<(Proto, String, u16, Option<u16>)> {
    let proto = Proto::parse(p.protocol.as_deref())?;
    let port = port_u16(Some(p.port))?;
    let node_port = if matches!(typ, "NodePort" | "LoadBalancer") {
        port_u16(p.node_port)
    } else {
        None
    };
    Some((proto, p.name.clone().unwrap_or_default(), port, node_port))
}

/// Endpoints of one service port from its slices, deduplicated by ip:port.
fn endpoints(cfg: &Config, sp: &SvcPort, slices: &[&EndpointSlice]) -> Vec<Ep> {
    let mut eps: BTreeMap<(IpAddr, u16), Ep> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != cfg.family.slice_address_type() {
            continue;
        }
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name.as_deref().unwrap_or("") == sp.port_name
                    && Proto::parse(p.protocol.as_deref()) == Some(sp.proto)
            })
            .and_then(|p| port_u16(p.port));
        let Some(port) = port else { continue };
        for e in &slice.endpoints {
            let ip = e.addresses.first().and_then(|a| a.parse::<IpAddr>().ok());
            let Some(ip) = ip.filter(|ip| cfg.family.has(ip)) else {
                continue;
            };
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let ep = Ep {
                ip,
                port,
                ready,
                serving: c.and_then(|c| c.serving).unwrap_or(ready),
                terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                local: !cfg.node_name.is_empty()
                    && e.node_name.as_deref() == Some(cfg.node_name.as_str()),
            };
            match eps.get(&(ip, port)) {
                Some(old) if old.ready || !ep.ready => {}
                _ => {
                    eps.insert((ip, port), ep);
                }
            }
        }
    }
    eps.into_values().collect()
}

/// Ready endpoints, or if there are none, the serving-and-terminating ones.
fn usable<'a>(eps: impl Iterator<Item = &'a Ep> + Clone) -> Vec<Ep> {
    let ready: Vec<Ep> = eps.clone().filter(|e| e.ready).copied().collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.filter(|e| e.serving && e.terminating)
        .copied()
        .collect()
}

/// `<8 base32 chars of FNV-1a 64 of raw>-<sanitized raw>`, capped so that
/// `prefix` + this fits in an nft name.
fn hashed_name(prefix: &str, raw: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in raw.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut name = String::from(prefix);
    for i in 0..8 {
        let idx = (h >> (59 - 5 * i)) & 31;
        name.push(char::from(ALPHABET[idx as usize]));
    }
    name.push('-');
    // nft names allow [A-Za-z0-9_./-]; anything else would break the script.
    name.extend(raw.chars().map(|c| {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-') {
            c
        } else {
            '_'
        }
    }));
    name.truncate(NAME_MAX);
    name
}

fn endpoint_raw(svc_raw: &str, ep: &Ep) -> String {
    // Colons are not allowed in nft names.
    let ip = ep.ip.to_string().replace(':', ".");
    format!("{svc_raw}__{ip}/{}", ep.port)
}

fn add_service_port(
    cfg: &Config,
    masq_cidr: Option<&str>,
    rs: &mut Ruleset,
    sp: &SvcPort,
    eps: &[Ep],
) {
    let ip = cfg.family.nft();
    let proto = sp.proto.nft();
    let raw = format!("{}/{}/{proto}/{}", sp.namespace, sp.name, sp.port_name);
    let cluster_chain = hashed_name("service-", &raw);
    let local_chain = hashed_name("local-", &raw);
    let external_chain = hashed_name("external-", &raw);

    let cluster_eps = usable(eps.iter());
    let local_eps = usable(eps.iter().filter(|e| e.local));
    let has_endpoints = !cluster_eps.is_empty() || !local_eps.is_empty();
    let externally = sp.node_port.is_some() || !sp.external_ips.is_empty();
    let uses_cluster = !cluster_eps.is_empty() && (!sp.itp_local || externally);
    let uses_local = !local_eps.is_empty() && (sp.itp_local || (sp.etp_local && externally));
    let (internal_chain, has_internal) = if sp.itp_local {
        (&local_chain, !local_eps.is_empty())
    } else {
        (&cluster_chain, has_endpoints)
    };
    let (external_policy_chain, has_external) = if sp.etp_local {
        (&local_chain, !local_eps.is_empty())
    } else {
        (&cluster_chain, has_endpoints)
    };
    let uses_external = has_endpoints && externally;
    // No endpoints anywhere: reject. Endpoints, but none for this traffic
    // policy: drop (as upstream).
    let filter_verdict = if has_endpoints {
        "drop".to_string()
    } else {
        format!("goto {REJECT_CHAIN}")
    };

    // Dispatch map elements.
    let port_key = |addr: &IpAddr| format!("{addr} . {proto} . {}", sp.port);
    let mut put = |map: &str, key: String, verdict: String| {
        if let Some(m) = rs.maps.get_mut(map) {
            m.elements.insert(key, verdict);
        }
    };
    if has_internal {
        put(
            SERVICE_IPS,
            port_key(&sp.cluster_ip),
            format!("goto {internal_chain}"),
        );
    } else {
        put(
            NO_EP_SERVICES,
            port_key(&sp.cluster_ip),
            filter_verdict.clone(),
        );
    }
    for eip in &sp.external_ips {
        if has_endpoints {
            put(SERVICE_IPS, port_key(eip), format!("goto {external_chain}"));
        }
        if !has_external {
            put(NO_EP_SERVICES, port_key(eip), filter_verdict.clone());
        }
    }
    if let Some(np) = sp.node_port {
        let key = format!("{proto} . {np}");
        if has_endpoints {
            put(
                SERVICE_NODEPORTS,
                key.clone(),
                format!("goto {external_chain}"),
            );
        }
        if !has_external {
            put(NO_EP_NODEPORTS, key, filter_verdict.clone());
        }
    }

    // Masquerade off-cluster (or all) traffic to the ClusterIP.
    let masq_rule = if cfg.masquerade_all {
        Some(format!(
            "{ip} daddr {} {proto} dport {} jump {MARK_MASQ}",
            sp.cluster_ip, sp.port
        ))
    } else {
        masq_cidr.map(|cidr| {
            format!(
                "{ip} daddr {} {proto} dport {} {ip} saddr != {cidr} jump {MARK_MASQ}",
                sp.cluster_ip, sp.port
            )
        })
    };

    if uses_external {
        let mut rules = vec![];
        if !sp.etp_local {
            rules.push(format!("jump {MARK_MASQ}"));
        } else {
            if let Some(cidr) = masq_cidr {
                // Pod -> external IP traffic acts as if it went out and back in.
                rules.push(format!("{ip} saddr {cidr} goto {cluster_chain}"));
            }
            rules.push(format!("fib saddr type local jump {MARK_MASQ}"));
            rules.push(format!("fib saddr type local goto {cluster_chain}"));
        }
        if has_external {
            rules.push(format!("goto {external_policy_chain}"));
        }
        rs.chains
            .insert(external_chain.clone(), Chain { hook: None, rules });
    }

    let mut used: BTreeMap<(IpAddr, u16), Ep> = BTreeMap::new();
    let mut policy_chain = |chain: &String, list: &[Ep], rs: &mut Ruleset| {
        let mut rules = vec![];
        if has_internal && chain == internal_chain {
            rules.extend(masq_rule.clone());
        }
        let mut arms = vec![];
        for (i, ep) in list.iter().enumerate() {
            let ep_raw = endpoint_raw(&raw, ep);
            let ep_chain = hashed_name("endpoint-", &ep_raw);
            if sp.affinity_timeout.is_some() {
                let set = hashed_name("affinity-", &ep_raw);
                rules.push(format!("{ip} saddr @{set} goto {ep_chain}"));
            }
            arms.push(format!("{i} : goto {ep_chain}"));
            used.insert((ep.ip, ep.port), *ep);
        }
        rules.push(format!(
            "numgen random mod {} vmap {{ {} }}",
            list.len(),
            arms.join(", ")
        ));
        rs.chains.insert(chain.clone(), Chain { hook: None, rules });
    };
    if uses_cluster {
        policy_chain(&cluster_chain, &cluster_eps, rs);
    }
    if uses_local {
        policy_chain(&local_chain, &local_eps, rs);
    }

    for ep in used.values() {
        let ep_raw = endpoint_raw(&raw, ep);
        let mut rules = vec![format!("{ip} saddr {} jump {MARK_MASQ}", ep.ip)];
        if let Some(timeout) = sp.affinity_timeout {
            let set = hashed_name("affinity-", &ep_raw);
            rules.push(format!("update @{set} {{ {ip} saddr }}"));
            let body = format!(
                "type {} ; flags dynamic,timeout ; timeout {timeout}s ;",
                cfg.family.addr_type()
            );
            rs.sets.insert(set, body);
        }
        let dest = match ep.ip {
            IpAddr::V4(a) => format!("{a}:{}", ep.port),
            IpAddr::V6(a) => format!("[{a}]:{}", ep.port),
        };
        rules.push(format!("meta l4proto {proto} dnat to {dest}"));
        let chain = hashed_name("endpoint-", &ep_raw);
        rs.chains.insert(chain, Chain { hook: None, rules });
        if sp.proto == Proto::Udp {
            rs.udp_endpoints.insert((ep.ip, ep.port));
        }
    }
}

impl Ruleset {
    fn table(&self) -> String {
        format!("{} {TABLE}", self.family.nft())
    }

    /// A complete script that atomically replaces the table.
    pub fn render_full(&self) -> String {
        let t = self.table();
        let mut out = String::new();
        // add+delete so the delete cannot fail on a missing table.
        out.push_str(&format!("add table {t}\ndelete table {t}\nadd table {t}\n"));
        for (name, chain) in &self.chains {
            out.push_str(&add_chain(&t, name, chain));
        }
        for (name, body) in &self.sets {
            out.push_str(&format!("add set {t} {name} {{ {body} }}\n"));
        }
        for (name, map) in &self.maps {
            out.push_str(&add_map(&t, name, map));
        }
        for (name, chain) in &self.chains {
            push_rules(&mut out, &t, name, chain);
        }
        for (name, map) in &self.maps {
            for (k, v) in &map.elements {
                out.push_str(&format!("add element {t} {name} {{ {k} : {v} }}\n"));
            }
        }
        out
    }

    /// A script taking a kernel table built from `old` to `new`, touching
    /// only what changed; empty when nothing did. Falls back to
    /// `new.render_full()` when the family, a base chain or a map type changed.
    pub fn render_diff(old: &Ruleset, new: &Ruleset) -> String {
        if old == new {
            return String::new();
        }
        if needs_full(old, new) {
            return new.render_full();
        }
        let t = new.table();
        let mut out = String::new();

        // Sets whose declaration changed are recreated; sets that go away are
        // deleted. Every chain referencing either must be flushed first.
        let changed_sets: BTreeSet<&String> = old
            .sets
            .iter()
            .filter(|(n, b)| new.sets.get(*n).is_some_and(|nb| nb != *b))
            .map(|(n, _)| n)
            .collect();
        let removed_sets: Vec<&String> = old
            .sets
            .keys()
            .filter(|n| !new.sets.contains_key(*n))
            .collect();
        let touched_sets: BTreeSet<String> = changed_sets
            .iter()
            .chain(removed_sets.iter())
            .map(|n| format!("@{n}"))
            .collect();
        let dirty: Vec<&String> = old
            .chains
            .iter()
            .filter(|(n, c)| new.chains.get(*n) != Some(*c) || references_any(c, &touched_sets))
            .map(|(n, _)| n)
            .collect();

        for (name, chain) in &new.chains {
            if !old.chains.contains_key(name) {
                out.push_str(&add_chain(&t, name, chain));
            }
        }
        for (name, body) in &new.sets {
            if !old.sets.contains_key(name) {
                out.push_str(&format!("add set {t} {name} {{ {body} }}\n"));
            }
        }
        for name in &dirty {
            out.push_str(&format!("flush chain {t} {name}\n"));
        }
        for name in &changed_sets {
            let body = new.sets.get(*name).map(String::as_str).unwrap_or_default();
            out.push_str(&format!("delete set {t} {name}\n"));
            out.push_str(&format!("add set {t} {name} {{ {body} }}\n"));
        }
        for (name, map) in &new.maps {
            let Some(old_map) = old.maps.get(name) else {
                continue;
            };
            for (k, v) in &old_map.elements {
                if map.elements.get(k) != Some(v) {
                    out.push_str(&format!("delete element {t} {name} {{ {k} }}\n"));
                }
            }
        }
        let dirty_set: BTreeSet<&String> = dirty.iter().copied().collect();
        for (name, chain) in &new.chains {
            if !old.chains.contains_key(name) || dirty_set.contains(name) {
                push_rules(&mut out, &t, name, chain);
            }
        }
        for (name, map) in &new.maps {
            let old_elements = old.maps.get(name).map(|m| &m.elements);
            for (k, v) in &map.elements {
                if old_elements.and_then(|e| e.get(k)) != Some(v) {
                    out.push_str(&format!("add element {t} {name} {{ {k} : {v} }}\n"));
                }
            }
        }
        for name in old.chains.keys() {
            if !new.chains.contains_key(name) {
                out.push_str(&format!("delete chain {t} {name}\n"));
            }
        }
        for name in removed_sets {
            out.push_str(&format!("delete set {t} {name}\n"));
        }
        out
    }
}

/// Whether an incremental script cannot express the change.
fn needs_full(old: &Ruleset, new: &Ruleset) -> bool {
    if old.family != new.family {
        return true;
    }
    let hooks = |rs: &Ruleset| -> BTreeMap<String, String> {
        rs.chains
            .iter()
            .filter_map(|(n, c)| c.hook.clone().map(|h| (n.clone(), h)))
            .collect()
    };
    let types = |rs: &Ruleset| -> BTreeMap<String, String> {
        rs.maps
            .iter()
            .map(|(n, m)| (n.clone(), m.key_type.clone()))
            .collect()
    };
    hooks(old) != hooks(new) || types(old) != types(new)
}

fn references_any(chain: &Chain, names: &BTreeSet<String>) -> bool {
    !names.is_empty()
        && chain
            .rules
            .iter()
            .any(|r| r.split_whitespace().any(|tok| names.contains(tok)))
}

fn add_chain(t: &str, name: &str, chain: &Chain) -> String {
    match &chain.hook {
        Some(h) => format!("add chain {t} {name} {{ {h} }}\n"),
        None => format!("add chain {t} {name}\n"),
    }
}

fn add_map(t: &str, name: &str, map: &Map) -> String {
    format!(
        "add map {t} {name} {{ type {} : verdict ; }}\n",
        map.key_type
    )
}

fn push_rules(out: &mut String, t: &str, name: &str, chain: &Chain) {
    for r in &chain.rules {
        out.push_str(&format!("add rule {t} {name} {r}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn cfg4() -> Config {
        Config {
            family: Family::Ipv4,
            node_name: "node-a".into(),
            node_ips: vec![],
            cluster_cidr: Some("10.244.0.0/16".into()),
            masquerade_all: false,
        }
    }

    fn cfg6() -> Config {
        Config {
            family: Family::Ipv6,
            cluster_cidr: Some("fd00:244::/48".into()),
            ..cfg4()
        }
    }

    fn svc(ns: &str, name: &str, spec: Value) -> Service {
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
            .expect("service fixture")
    }

    fn slice(ns: &str, svc: &str, family: &str, ports: Value, eps: Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": format!("{svc}-abc"),
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": family, "ports": ports, "endpoints": eps,
        }))
        .expect("slice fixture")
    }

    fn ep(ip: &str, node: &str) -> Value {
        json!({"addresses": [ip], "nodeName": node})
    }

    fn web(eps: Value) -> (Vec<Service>, Vec<EndpointSlice>) {
        let s = svc(
            "ns1",
            "web",
            json!({"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}),
        );
        let sl = slice(
            "ns1",
            "web",
            "IPv4",
            json!([{"name": "http", "port": 8080}]),
            eps,
        );
        (vec![s], vec![sl])
    }

    /// Lines of the full script that the Services added on top of the skeleton.
    fn service_lines(cfg: &Config, svcs: &[Service], slices: &[EndpointSlice]) -> String {
        let base = desired(cfg, &[], &[]).render_full();
        let base: BTreeSet<&str> = base.lines().collect();
        let full = desired(cfg, svcs, slices).render_full();
        full.lines()
            .filter(|l| !base.contains(l))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Expands `{name}` placeholders so goldens stay readable.
    fn expand(text: &str, names: &[(&str, &str)]) -> String {
        let mut out = text.trim_start().to_string();
        for (k, v) in names {
            out = out.replace(&format!("{{{k}}}"), v);
        }
        out
    }

    const WEB: (&str, &str) = ("SVC", "service-7G74BWT3-ns1/web/tcp/http");
    const WEB_EP12: (&str, &str) = (
        "EP12",
        "endpoint-HHW3H6BX-ns1/web/tcp/http__10.244.1.2/8080",
    );
    const WEB_EP23: (&str, &str) = (
        "EP23",
        "endpoint-RTQN6FCA-ns1/web/tcp/http__10.244.2.3/8080",
    );
    const WEB_EP24: (&str, &str) = (
        "EP24",
        "endpoint-IQ6A4DRD-ns1/web/tcp/http__10.244.2.4/8080",
    );

    #[test]
    fn cluster_ip_two_endpoints_full_script() {
        let (s, e) = web(json!([
            ep("10.244.1.2", "node-a"),
            ep("10.244.2.3", "node-b")
        ]));
        let got = desired(&cfg4(), &s, &e).render_full();
        let want = expand(
            r"
add table ip kube-proxy
delete table ip kube-proxy
add table ip kube-proxy
add chain ip kube-proxy {EP12}
add chain ip kube-proxy {EP23}
add chain ip kube-proxy filter-forward { type filter hook forward priority -110 ; policy accept ; }
add chain ip kube-proxy filter-input { type filter hook input priority -110 ; policy accept ; }
add chain ip kube-proxy filter-output { type filter hook output priority -110 ; policy accept ; }
add chain ip kube-proxy mark-for-masquerade
add chain ip kube-proxy masquerading
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; policy accept ; }
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority srcnat ; policy accept ; }
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority dstnat ; policy accept ; }
add chain ip kube-proxy nodeport-endpoints-check
add chain ip kube-proxy reject-chain
add chain ip kube-proxy {SVC}
add chain ip kube-proxy service-endpoints-check
add chain ip kube-proxy services
add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; }
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; }
add rule ip kube-proxy {EP12} ip saddr 10.244.1.2 jump mark-for-masquerade
add rule ip kube-proxy {EP12} meta l4proto tcp dnat to 10.244.1.2:8080
add rule ip kube-proxy {EP23} ip saddr 10.244.2.3 jump mark-for-masquerade
add rule ip kube-proxy {EP23} meta l4proto tcp dnat to 10.244.2.3:8080
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x4000
add rule ip kube-proxy masquerading masquerade fully-random
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nodeport-endpoints-check ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy {SVC} ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy {SVC} numgen random mod 2 vmap { 0 : goto {EP12}, 1 : goto {EP23} }
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
add element ip kube-proxy service-ips { 10.96.0.10 . tcp . 80 : goto {SVC} }
",
            &[WEB, WEB_EP12, WEB_EP23],
        );
        assert_eq!(got, want);
    }

    #[test]
    fn headless_and_external_name_are_skipped() {
        let (_, e) = web(json!([ep("10.244.1.2", "node-a")]));
        let headless = svc(
            "ns1",
            "web",
            json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}),
        );
        let ext = svc(
            "ns1",
            "web",
            json!({"type": "ExternalName", "externalName": "example.com",
            "ports": [{"name": "http", "port": 80}]}),
        );
        let no_spec: Service =
            serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("svc");
        let skeleton = desired(&cfg4(), &[], &[]);
        assert_eq!(desired(&cfg4(), &[headless, ext, no_spec], &e), skeleton);
    }

    #[test]
    fn not_ready_endpoints_are_excluded_and_duplicates_merged() {
        let (s, mut e) = web(json!([
            ep("10.244.1.2", "node-a"),
            {"addresses": ["10.244.2.3"], "conditions": {"ready": false}},
            {"addresses": ["10.244.2.4"], "conditions": {"ready": true}},
        ]));
        // The same endpoint again in another slice, plus an IPv6 slice.
        e.push(slice(
            "ns1",
            "web",
            "IPv4",
            json!([{"name": "http", "port": 8080}]),
            json!([ep("10.244.1.2", "node-a")]),
        ));
        e.push(slice(
            "ns1",
            "web",
            "IPv6",
            json!([{"name": "http", "port": 8080}]),
            json!([ep("fd00::1", "node-a")]),
        ));
        let want = expand(
            r"
add chain ip kube-proxy {EP12}
add chain ip kube-proxy {EP24}
add chain ip kube-proxy {SVC}
add rule ip kube-proxy {EP12} ip saddr 10.244.1.2 jump mark-for-masquerade
add rule ip kube-proxy {EP12} meta l4proto tcp dnat to 10.244.1.2:8080
add rule ip kube-proxy {EP24} ip saddr 10.244.2.4 jump mark-for-masquerade
add rule ip kube-proxy {EP24} meta l4proto tcp dnat to 10.244.2.4:8080
add rule ip kube-proxy {SVC} ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy {SVC} numgen random mod 2 vmap { 0 : goto {EP12}, 1 : goto {EP24} }
add element ip kube-proxy service-ips { 10.96.0.10 . tcp . 80 : goto {SVC} }
",
            &[WEB, WEB_EP12, WEB_EP24],
        );
        assert_eq!(service_lines(&cfg4(), &s, &e), want);
    }

    #[test]
    fn serving_terminating_endpoints_are_the_fallback() {
        let terminating = json!([
            {"addresses": ["10.244.1.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.244.1.4"], "conditions": {"ready": false, "serving": false, "terminating": true}},
            {"addresses": ["10.244.2.3"], "conditions": {"ready": false}},
        ]);
        let (s, e) = web(terminating.clone());
        let ep13 = (
            "EP13",
            "endpoint-P2HAEPM3-ns1/web/tcp/http__10.244.1.3/8080",
        );
        let want = expand(
            r"
add chain ip kube-proxy {EP13}
add chain ip kube-proxy {SVC}
add rule ip kube-proxy {EP13} ip saddr 10.244.1.3 jump mark-for-masquerade
add rule ip kube-proxy {EP13} meta l4proto tcp dnat to 10.244.1.3:8080
add rule ip kube-proxy {SVC} ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy {SVC} numgen random mod 1 vmap { 0 : goto {EP13} }
add element ip kube-proxy service-ips { 10.96.0.10 . tcp . 80 : goto {SVC} }
",
            &[WEB, ep13],
        );
        assert_eq!(service_lines(&cfg4(), &s, &e), want);

        // With a ready endpoint around, terminating ones are not used.
        let mut eps = terminating.as_array().cloned().unwrap_or_default();
        eps.push(ep("10.244.1.2", "node-b"));
        let (s, e) = web(Value::Array(eps));
        let got = service_lines(&cfg4(), &s, &e);
        assert!(
            got.contains("numgen random mod 1 vmap { 0 : goto endpoint-HHW3H6BX-"),
            "{got}"
        );
        assert!(!got.contains("10.244.1.3"), "{got}");
    }

    #[test]
    fn no_endpoints_are_rejected_in_filter() {
        let np = svc(
            "ns1",
            "np",
            json!({"type": "NodePort", "clusterIP": "10.96.0.11",
            "ports": [{"name": "p", "port": 8080, "nodePort": 30080}]}),
        );
        let dead = slice(
            "ns1",
            "np",
            "IPv4",
            json!([{"name": "p", "port": 9090}]),
            json!([{"addresses": ["10.244.1.9"], "conditions": {"ready": false}}]),
        );
        let want = "\
add element ip kube-proxy no-endpoint-nodeports { tcp . 30080 : goto reject-chain }
add element ip kube-proxy no-endpoint-services { 10.96.0.11 . tcp . 8080 : goto reject-chain }
";
        assert_eq!(service_lines(&cfg4(), std::slice::from_ref(&np), &[]), want);
        assert_eq!(service_lines(&cfg4(), &[np], &[dead]), want);
    }

    fn np_local(node: &str) -> String {
        let np = svc(
            "ns1",
            "np",
            json!({"type": "NodePort", "clusterIP": "10.96.0.11",
            "externalTrafficPolicy": "Local",
            "ports": [{"name": "p", "port": 8080, "nodePort": 30080}]}),
        );
        let sl = slice(
            "ns1",
            "np",
            "IPv4",
            json!([{"name": "p", "port": 9090}]),
            json!([ep("10.244.1.9", "node-a"), ep("10.244.2.9", "node-b")]),
        );
        let cfg = Config {
            node_name: node.into(),
            ..cfg4()
        };
        service_lines(&cfg, &[np], &[sl])
    }

    const NP: [(&str, &str); 5] = [
        ("SVC", "service-V4KIG2I3-ns1/np/tcp/p"),
        ("LOCAL", "local-V4KIG2I3-ns1/np/tcp/p"),
        ("EXT", "external-V4KIG2I3-ns1/np/tcp/p"),
        ("EPA", "endpoint-RQN65JF5-ns1/np/tcp/p__10.244.1.9/9090"),
        ("EPB", "endpoint-2DHHB6F2-ns1/np/tcp/p__10.244.2.9/9090"),
    ];

    #[test]
    fn nodeport_external_traffic_policy_local() {
        let want = expand(
            r"
add chain ip kube-proxy {EPB}
add chain ip kube-proxy {EPA}
add chain ip kube-proxy {EXT}
add chain ip kube-proxy {LOCAL}
add chain ip kube-proxy {SVC}
add rule ip kube-proxy {EPB} ip saddr 10.244.2.9 jump mark-for-masquerade
add rule ip kube-proxy {EPB} meta l4proto tcp dnat to 10.244.2.9:9090
add rule ip kube-proxy {EPA} ip saddr 10.244.1.9 jump mark-for-masquerade
add rule ip kube-proxy {EPA} meta l4proto tcp dnat to 10.244.1.9:9090
add rule ip kube-proxy {EXT} ip saddr 10.244.0.0/16 goto {SVC}
add rule ip kube-proxy {EXT} fib saddr type local jump mark-for-masquerade
add rule ip kube-proxy {EXT} fib saddr type local goto {SVC}
add rule ip kube-proxy {EXT} goto {LOCAL}
add rule ip kube-proxy {LOCAL} numgen random mod 1 vmap { 0 : goto {EPA} }
add rule ip kube-proxy {SVC} ip daddr 10.96.0.11 tcp dport 8080 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy {SVC} numgen random mod 2 vmap { 0 : goto {EPA}, 1 : goto {EPB} }
add element ip kube-proxy service-ips { 10.96.0.11 . tcp . 8080 : goto {SVC} }
add element ip kube-proxy service-nodeports { tcp . 30080 : goto {EXT} }
",
            &NP,
        );
        assert_eq!(np_local("node-a"), want);

        // No endpoint on this node: external traffic that is not from a pod or
        // the node itself falls through and is dropped (not rejected).
        let want = expand(
            r"
add chain ip kube-proxy {EPB}
add chain ip kube-proxy {EPA}
add chain ip kube-proxy {EXT}
add chain ip kube-proxy {SVC}
add rule ip kube-proxy {EPB} ip saddr 10.244.2.9 jump mark-for-masquerade
add rule ip kube-proxy {EPB} meta l4proto tcp dnat to 10.244.2.9:9090
add rule ip kube-proxy {EPA} ip saddr 10.244.1.9 jump mark-for-masquerade
add rule ip kube-proxy {EPA} meta l4proto tcp dnat to 10.244.1.9:9090
add rule ip kube-proxy {EXT} ip saddr 10.244.0.0/16 goto {SVC}
add rule ip kube-proxy {EXT} fib saddr type local jump mark-for-masquerade
add rule ip kube-proxy {EXT} fib saddr type local goto {SVC}
add rule ip kube-proxy {SVC} ip daddr 10.96.0.11 tcp dport 8080 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy {SVC} numgen random mod 2 vmap { 0 : goto {EPA}, 1 : goto {EPB} }
add element ip kube-proxy no-endpoint-nodeports { tcp . 30080 : drop }
add element ip kube-proxy service-ips { 10.96.0.11 . tcp . 8080 : goto {SVC} }
add element ip kube-proxy service-nodeports { tcp . 30080 : goto {EXT} }
",
            &NP,
        );
        assert_eq!(np_local("node-c"), want);
    }

    #[test]
    fn session_affinity_client_ip() {
        let s = svc(
            "ns2",
            "sticky",
            json!({"clusterIP": "10.96.0.12", "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
            "ports": [{"port": 443}]}),
        );
        let e = slice(
            "ns2",
            "sticky",
            "IPv4",
            json!([{"port": 443}]),
            json!([ep("10.244.1.5", "node-a"), ep("10.244.2.5", "node-b")]),
        );
        let want = expand(
            r"
add chain ip kube-proxy {EP1}
add chain ip kube-proxy {EP2}
add chain ip kube-proxy {SVC}
add set ip kube-proxy {AFF1} { type ipv4_addr ; flags dynamic,timeout ; timeout 600s ; }
add set ip kube-proxy {AFF2} { type ipv4_addr ; flags dynamic,timeout ; timeout 600s ; }
add rule ip kube-proxy {EP1} ip saddr 10.244.1.5 jump mark-for-masquerade
add rule ip kube-proxy {EP1} update @{AFF1} { ip saddr }
add rule ip kube-proxy {EP1} meta l4proto tcp dnat to 10.244.1.5:443
add rule ip kube-proxy {EP2} ip saddr 10.244.2.5 jump mark-for-masquerade
add rule ip kube-proxy {EP2} update @{AFF2} { ip saddr }
add rule ip kube-proxy {EP2} meta l4proto tcp dnat to 10.244.2.5:443
add rule ip kube-proxy {SVC} ip daddr 10.96.0.12 tcp dport 443 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy {SVC} ip saddr @{AFF1} goto {EP1}
add rule ip kube-proxy {SVC} ip saddr @{AFF2} goto {EP2}
add rule ip kube-proxy {SVC} numgen random mod 2 vmap { 0 : goto {EP1}, 1 : goto {EP2} }
add element ip kube-proxy service-ips { 10.96.0.12 . tcp . 443 : goto {SVC} }
",
            &[
                ("SVC", "service-DKJJMEBV-ns2/sticky/tcp/"),
                ("EP1", "endpoint-CCKYQXTX-ns2/sticky/tcp/__10.244.1.5/443"),
                ("EP2", "endpoint-XFDRCD4B-ns2/sticky/tcp/__10.244.2.5/443"),
                ("AFF1", "affinity-CCKYQXTX-ns2/sticky/tcp/__10.244.1.5/443"),
                ("AFF2", "affinity-XFDRCD4B-ns2/sticky/tcp/__10.244.2.5/443"),
            ],
        );
        assert_eq!(
            service_lines(&cfg4(), std::slice::from_ref(&s), std::slice::from_ref(&e)),
            want
        );

        // Default timeout is three hours.
        let mut s = s;
        if let Some(spec) = s.spec.as_mut() {
            spec.session_affinity_config = None;
        }
        let got = service_lines(&cfg4(), &[s], &[e]);
        assert!(got.contains("timeout 10800s ;"), "{got}");
    }

    #[test]
    fn ipv6_family() {
        let s = svc(
            "ns6",
            "web6",
            json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::10"],
            "ipFamilies": ["IPv4", "IPv6"], "ports": [{"name": "http", "port": 80}]}),
        );
        let ports = json!([{"name": "http", "port": 8080}]);
        let e = vec![
            slice(
                "ns6",
                "web6",
                "IPv4",
                ports.clone(),
                json!([ep("10.244.1.2", "node-a")]),
            ),
            slice(
                "ns6",
                "web6",
                "IPv6",
                ports,
                json!([ep("fd00:244::2", "node-a")]),
            ),
        ];
        let want = expand(
            r"
add chain ip6 kube-proxy {EP}
add chain ip6 kube-proxy {SVC}
add rule ip6 kube-proxy {EP} ip6 saddr fd00:244::2 jump mark-for-masquerade
add rule ip6 kube-proxy {EP} meta l4proto tcp dnat to [fd00:244::2]:8080
add rule ip6 kube-proxy {SVC} ip6 daddr fd00::10 tcp dport 80 ip6 saddr != fd00:244::/48 jump mark-for-masquerade
add rule ip6 kube-proxy {SVC} numgen random mod 1 vmap { 0 : goto {EP} }
add element ip6 kube-proxy service-ips { fd00::10 . tcp . 80 : goto {SVC} }
",
            &[
                ("SVC", "service-YMPSZZ5P-ns6/web6/tcp/http"),
                (
                    "EP",
                    "endpoint-V4WR6ZBM-ns6/web6/tcp/http__fd00.244..2/8080",
                ),
            ],
        );
        assert_eq!(service_lines(&cfg6(), std::slice::from_ref(&s), &e), want);

        let full = desired(&cfg6(), &[], &[]).render_full();
        for line in [
            "add table ip6 kube-proxy\n",
            "add map ip6 kube-proxy service-ips { type ipv6_addr . inet_proto . inet_service : verdict ; }\n",
            "add rule ip6 kube-proxy services ip6 daddr . meta l4proto . th dport vmap @service-ips\n",
            "add rule ip6 kube-proxy services fib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap @service-nodeports\n",
        ] {
            assert!(full.contains(line), "missing {line}");
        }
        // The same objects give the IPv4 half to the ip table.
        let v4 = service_lines(&cfg4(), &[s], &e);
        assert!(
            v4.contains("{ 10.96.0.20 . tcp . 80 : goto service-"),
            "{v4}"
        );
        assert!(
            v4.contains("dnat to 10.244.1.2:8080") && !v4.contains("fd00"),
            "{v4}"
        );
    }

    #[test]
    fn diff_of_one_endpoint_touches_only_that_service() {
        let (mut s, mut e) = web(json!([
            ep("10.244.1.2", "node-a"),
            ep("10.244.2.3", "node-b")
        ]));
        s.push(svc(
            "ns1",
            "np",
            json!({"type": "NodePort", "clusterIP": "10.96.0.11",
            "ports": [{"name": "p", "port": 8080, "nodePort": 30080}]}),
        ));
        e.push(slice(
            "ns1",
            "np",
            "IPv4",
            json!([{"name": "p", "port": 9090}]),
            json!([ep("10.244.1.9", "node-a")]),
        ));
        let old = desired(&cfg4(), &s, &e);
        e[0] = web(json!([
            ep("10.244.1.2", "node-a"),
            ep("10.244.2.4", "node-b")
        ]))
        .1
        .remove(0);
        let new = desired(&cfg4(), &s, &e);
        let want = expand(
            r"
add chain ip kube-proxy {EP24}
flush chain ip kube-proxy {EP23}
flush chain ip kube-proxy {SVC}
add rule ip kube-proxy {EP24} ip saddr 10.244.2.4 jump mark-for-masquerade
add rule ip kube-proxy {EP24} meta l4proto tcp dnat to 10.244.2.4:8080
add rule ip kube-proxy {SVC} ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy {SVC} numgen random mod 2 vmap { 0 : goto {EP12}, 1 : goto {EP24} }
delete chain ip kube-proxy {EP23}
",
            &[WEB, WEB_EP12, WEB_EP23, WEB_EP24],
        );
        assert_eq!(Ruleset::render_diff(&old, &new), want);
    }

    #[test]
    fn diff_removing_a_service_deletes_elements_before_chains() {
        let (s, e) = web(json!([ep("10.244.1.2", "node-a")]));
        let old = desired(&cfg4(), &s, &e);
        let new = desired(&cfg4(), &[], &e);
        let want = expand(
            r"
flush chain ip kube-proxy {EP12}
flush chain ip kube-proxy {SVC}
delete element ip kube-proxy service-ips { 10.96.0.10 . tcp . 80 }
delete chain ip kube-proxy {EP12}
delete chain ip kube-proxy {SVC}
",
            &[WEB, WEB_EP12],
        );
        assert_eq!(Ruleset::render_diff(&old, &new), want);
        // And back: chains first, then rules, then the element.
        let back = Ruleset::render_diff(&new, &old);
        let first = |needle: &str| back.find(needle).unwrap_or(usize::MAX);
        assert!(first("add chain") < first("add rule"), "{back}");
        assert!(first("add rule") < first("add element"), "{back}");
    }

    #[test]
    fn diff_is_empty_when_unchanged_and_output_is_deterministic() {
        let (mut s, mut e) = web(json!([
            ep("10.244.2.3", "node-b"),
            ep("10.244.1.2", "node-a")
        ]));
        s.push(svc(
            "ns2",
            "other",
            json!({"clusterIP": "10.96.0.30", "ports": [{"port": 53, "protocol": "UDP"}]}),
        ));
        e.push(slice(
            "ns2",
            "other",
            "IPv4",
            json!([{"port": 53, "protocol": "UDP"}]),
            json!([ep("10.244.3.3", "x")]),
        ));
        let a = desired(&cfg4(), &s, &e);
        s.reverse();
        e.reverse();
        let b = desired(&cfg4(), &s, &e);
        assert_eq!(a, b);
        assert_eq!(a.render_full(), b.render_full());
        assert_eq!(Ruleset::render_diff(&a, &b), "");
    }

    fn many(n: usize, changed_ip: &str) -> (Vec<Service>, Vec<EndpointSlice>) {
        let mut svcs = vec![];
        let mut slices = vec![];
        for i in 0..n {
            let name = format!("svc{i}");
            let cip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
            let eip = if i == 7 {
                changed_ip.to_string()
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
                "IPv4",
                json!([{"name": "h", "port": 8080}]),
                json!([ep(&eip, "n")]),
            ));
        }
        (svcs, slices)
    }

    #[test]
    fn diff_size_does_not_grow_with_service_count() {
        let diff_for = |n: usize| {
            let (s0, e0) = many(n, "10.250.0.1");
            let (s1, e1) = many(n, "10.250.0.2");
            Ruleset::render_diff(&desired(&cfg4(), &s0, &e0), &desired(&cfg4(), &s1, &e1))
        };
        let small = diff_for(10);
        let large = diff_for(10_000);
        assert!(!small.is_empty());
        assert_eq!(small, large);
        assert!(large.lines().all(|l| l.contains("bulk/svc7/")), "{large}");
    }

    #[test]
    fn stale_udp_endpoints_lists_only_removed_udp_backends() {
        let s = svc(
            "ns1",
            "dns",
            json!({"clusterIP": "10.96.0.10",
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "tcp", "port": 53}]}),
        );
        let ports = json!([{"name": "dns", "port": 5353, "protocol": "UDP"}, {"name": "tcp", "port": 5353}]);
        let old_e = slice(
            "ns1",
            "dns",
            "IPv4",
            ports.clone(),
            json!([ep("10.244.1.2", "a"), ep("10.244.2.3", "b")]),
        );
        let new_e = slice("ns1", "dns", "IPv4", ports, json!([ep("10.244.1.2", "a")]));
        let old = desired(&cfg4(), std::slice::from_ref(&s), &[old_e]);
        let new = desired(&cfg4(), &[s], &[new_e]);
        let gone: Vec<(IpAddr, u16)> = vec![("10.244.2.3".parse().expect("ip"), 5353)];
        assert_eq!(stale_udp_endpoints(&old, &new), gone);
        assert!(stale_udp_endpoints(&new, &old).is_empty());
    }

    #[test]
    fn internal_traffic_policy_local_uses_only_this_nodes_endpoints() {
        let s = svc(
            "ns1",
            "web",
            json!({"clusterIP": "10.96.0.10", "internalTrafficPolicy": "Local",
            "ports": [{"name": "http", "port": 80}]}),
        );
        let (_, e) = web(json!([
            ep("10.244.1.2", "node-a"),
            ep("10.244.2.3", "node-b")
        ]));
        let got = service_lines(&cfg4(), std::slice::from_ref(&s), &e);
        let local = "local-7G74BWT3-ns1/web/tcp/http";
        assert!(
            got.contains(&format!("{{ 10.96.0.10 . tcp . 80 : goto {local} }}")),
            "{got}"
        );
        assert!(got.contains(&format!("add rule ip kube-proxy {local} ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade\n")), "{got}");
        assert!(
            got.contains("numgen random mod 1 vmap { 0 : goto endpoint-HHW3H6BX-"),
            "{got}"
        );
        assert!(
            !got.contains("10.244.2.3") && !got.contains("service-7G74BWT3"),
            "{got}"
        );

        // Endpoints exist, but none here: dropped, not rejected.
        let (_, e) = web(json!([ep("10.244.2.3", "node-b")]));
        assert_eq!(
            service_lines(&cfg4(), &[s], &e),
            "add element ip kube-proxy no-endpoint-services { 10.96.0.10 . tcp . 80 : drop }\n"
        );
    }

    #[test]
    fn external_ips_and_masquerade_settings() {
        let s = svc(
            "ns1",
            "web",
            json!({"clusterIP": "10.96.0.10", "externalIPs": ["192.0.2.1", "2001:db8::1"],
            "ports": [{"name": "http", "port": 80}]}),
        );
        let (_, e) = web(json!([ep("10.244.1.2", "node-a")]));
        let ext = "external-7G74BWT3-ns1/web/tcp/http";
        let svc_chain = WEB.1;
        let got = service_lines(&cfg4(), std::slice::from_ref(&s), &e);
        assert!(
            got.contains(&format!(
                "add element ip kube-proxy service-ips {{ 192.0.2.1 . tcp . 80 : goto {ext} }}\n"
            )),
            "{got}"
        );
        assert!(got.contains(&format!("add rule ip kube-proxy {ext} jump mark-for-masquerade\nadd rule ip kube-proxy {ext} goto {svc_chain}\n")), "{got}");
        assert!(!got.contains("2001:db8"), "{got}");

        let all = Config {
            masquerade_all: true,
            ..cfg4()
        };
        let got = service_lines(&all, std::slice::from_ref(&s), &e);
        assert!(
            got.contains(&format!(
                "{svc_chain} ip daddr 10.96.0.10 tcp dport 80 jump mark-for-masquerade\n"
            )),
            "{got}"
        );
        let none = Config {
            cluster_cidr: None,
            ..cfg4()
        };
        let got = service_lines(&none, std::slice::from_ref(&s), &e);
        assert!(!got.contains("dport 80"), "{got}");
        // Host bits are cleared; a CIDR of the wrong family is ignored.
        let sloppy = Config {
            cluster_cidr: Some("10.244.7.7/16".into()),
            ..cfg4()
        };
        assert!(service_lines(&sloppy, std::slice::from_ref(&s), &e)
            .contains("ip saddr != 10.244.0.0/16 jump"));
        let wrong = Config {
            cluster_cidr: Some("fd00::/48".into()),
            ..cfg4()
        };
        assert!(!service_lines(&wrong, &[s], &e).contains("saddr !="));
    }

    #[test]
    fn nodeport_addresses_restrict_the_dispatch_rule() {
        let cfg = Config {
            node_ips: vec![
                "192.168.1.11".parse().expect("ip"),
                "192.168.1.10".parse().expect("ip"),
                "fd00::1".parse().expect("ip"),
            ],
            ..cfg4()
        };
        let full = desired(&cfg, &[], &[]).render_full();
        assert!(full.contains("add rule ip kube-proxy services ip daddr { 192.168.1.10, 192.168.1.11 } meta l4proto . th dport vmap @service-nodeports\n"), "{full}");
        assert!(full.contains("add rule ip kube-proxy nodeport-endpoints-check ip daddr { 192.168.1.10, 192.168.1.11 } meta l4proto . th dport vmap @no-endpoint-nodeports\n"), "{full}");
        assert!(!full.contains("fib daddr"), "{full}");
        // Only addresses of the other family: no NodePorts in this table.
        let v6_only = Config {
            node_ips: vec!["fd00::1".parse().expect("ip")],
            ..cfg4()
        };
        assert!(!desired(&v6_only, &[], &[])
            .render_full()
            .contains("@service-nodeports"));
    }

    #[test]
    fn hostile_names_are_sanitized_and_bounded() {
        let long = "x".repeat(300);
        let s = svc(
            "bad ns;",
            &long,
            json!({"clusterIP": "10.96.0.10", "ports": [{"name": "a b{}", "port": 80}]}),
        );
        let e = slice(
            "bad ns;",
            &long,
            "IPv4",
            json!([{"name": "a b{}", "port": 8080}]),
            json!([ep("10.244.1.2", "n")]),
        );
        let rs = desired(&cfg4(), &[s], &[e]);
        assert_eq!(rs.chains.len(), desired(&cfg4(), &[], &[]).chains.len() + 2);
        for name in rs.chains.keys() {
            assert!(name.len() <= NAME_MAX, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c)),
                "{name}"
            );
        }
    }

    #[test]
    fn diff_recreates_changed_affinity_sets_and_flushes_their_users() {
        let mk = |timeout: i32| {
            let s = svc(
                "ns2",
                "sticky",
                json!({"clusterIP": "10.96.0.12", "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}}, "ports": [{"port": 443}]}),
            );
            let e = slice(
                "ns2",
                "sticky",
                "IPv4",
                json!([{"port": 443}]),
                json!([ep("10.244.1.5", "node-a")]),
            );
            desired(&cfg4(), &[s], &[e])
        };
        let diff = Ruleset::render_diff(&mk(600), &mk(900));
        let want = expand(
            r"
flush chain ip kube-proxy {EP1}
flush chain ip kube-proxy {SVC}
delete set ip kube-proxy {AFF1}
add set ip kube-proxy {AFF1} { type ipv4_addr ; flags dynamic,timeout ; timeout 900s ; }
add rule ip kube-proxy {EP1} ip saddr 10.244.1.5 jump mark-for-masquerade
add rule ip kube-proxy {EP1} update @{AFF1} { ip saddr }
add rule ip kube-proxy {EP1} meta l4proto tcp dnat to 10.244.1.5:443
add rule ip kube-proxy {SVC} ip daddr 10.96.0.12 tcp dport 443 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy {SVC} ip saddr @{AFF1} goto {EP1}
add rule ip kube-proxy {SVC} numgen random mod 1 vmap { 0 : goto {EP1} }
",
            &[
                ("SVC", "service-DKJJMEBV-ns2/sticky/tcp/"),
                ("EP1", "endpoint-CCKYQXTX-ns2/sticky/tcp/__10.244.1.5/443"),
                ("AFF1", "affinity-CCKYQXTX-ns2/sticky/tcp/__10.244.1.5/443"),
            ],
        );
        assert_eq!(diff, want);
    }

    #[test]
    fn diff_falls_back_to_full_on_family_or_base_change() {
        let v4 = desired(&cfg4(), &[], &[]);
        let v6 = desired(&cfg6(), &[], &[]);
        assert_eq!(Ruleset::render_diff(&v4, &v6), v6.render_full());
        let mut other = v4.clone();
        if let Some(c) = other.chains.get_mut(NAT_OUTPUT) {
            c.hook = Some("type nat hook output priority -99 ; policy accept ;".into());
        }
        assert_eq!(Ruleset::render_diff(&v4, &other), other.render_full());
    }
}
