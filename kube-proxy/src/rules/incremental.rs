//! The desired table kept up to date incrementally: each Service's
//! contribution (its chains, sets, map elements and UDP endpoints) is cached
//! under a fingerprint of everything it is computed from, so a sync after a
//! small change recomputes and diffs only the Services whose fingerprint
//! moved. `desired` stays the reference: for the same inputs, `ruleset()`
//! equals `desired(cfg, services, slices)` and the diff `update` returns
//! equals `Ruleset::render_diff(previous desired, new desired)` (tests check
//! both on random sequences of changes).
//!
//! Overlaps are resolved as `desired` resolves them: an item (chain, set or
//! map element) that several Services produce takes the value of the last of
//! them in input order, any Service's item wins over the skeleton's.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{
    add_service_port, desired, endpoints, normalize_cidr, service_ports, skeleton, Chain, Config,
    Ruleset, SERVICE_NAME_LABEL,
};

/// One element of the table that a Service (or the skeleton) contributes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Item {
    Chain(String),
    Set(String),
    /// (map, key)
    Elem(String, String),
}

/// The skeleton's owner id; it loses to every Service.
const SKELETON: u64 = 0;

struct Fragment {
    /// position in the last input (+1; the skeleton is 0)
    order: usize,
    fingerprint: u64,
    part: Ruleset,
}

/// What one `update` changed.
#[derive(Debug, Default)]
pub struct Change {
    /// Script from the previous state to the new one (empty when
    /// unchanged, or when not asked for).
    pub diff: String,
    /// UDP endpoints the previous state used and the new one does not.
    pub stale_udp: Vec<(IpAddr, u16)>,
}

/// The incremental counterpart of [`desired`] for one family.
pub struct Incremental {
    cfg: Config,
    current: Ruleset,
    skeleton: Ruleset,
    next_id: u64,
    by_name: HashMap<(String, String), u64>,
    frags: HashMap<u64, Fragment>,
    /// owners of every item of `current` (usually one)
    owners: HashMap<Item, Vec<u64>>,
    /// items with more than one owner: re-resolved on every update
    contested: HashSet<Item>,
    /// set name -> chains of `current` whose rules mention `@set`
    set_refs: HashMap<String, BTreeSet<String>>,
    udp: HashMap<(IpAddr, u16), usize>,
    /// `current` was computed without the cache: the next update starts over
    poisoned: bool,
}

impl Incremental {
    /// An empty state (the skeleton only) for `cfg`.
    pub fn new(cfg: &Config) -> Incremental {
        let skel = skeleton(cfg);
        let mut me = Incremental {
            cfg: cfg.clone(),
            current: empty_like(&skel),
            skeleton: skel.clone(),
            next_id: SKELETON + 1,
            by_name: HashMap::new(),
            frags: HashMap::new(),
            owners: HashMap::new(),
            contested: HashSet::new(),
            set_refs: HashMap::new(),
            udp: HashMap::new(),
            poisoned: false,
        };
        let mut touched = BTreeSet::new();
        for item in items(&skel) {
            me.owners.entry(item.clone()).or_default().push(SKELETON);
            touched.insert(item);
        }
        for item in &touched {
            me.resolve(item);
        }
        me
    }

    /// The desired table as of the last `update`.
    pub fn ruleset(&self) -> &Ruleset {
        &self.current
    }

    /// Brings the state to `desired(cfg, services, slices)`, recomputing only
    /// the Services whose inputs changed; with `want_diff`, also renders the
    /// script from the previous state (as `Ruleset::render_diff` would).
    pub fn update(
        &mut self,
        cfg: &Config,
        services: &[Service],
        slices: &[EndpointSlice],
        want_diff: bool,
    ) -> Change {
        if *cfg != self.cfg || self.poisoned || has_duplicates(services) {
            return self.rebuild(cfg, services, slices, want_diff);
        }
        let mut index: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
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
        let masq_cidr = cfg
            .cluster_cidr
            .as_deref()
            .and_then(|c| normalize_cidr(c, cfg.family));

        // Which Services are new, changed or gone.
        let mut seen: HashSet<u64> = HashSet::with_capacity(services.len());
        let mut changed: Vec<(u64, Option<Ruleset>)> = vec![];
        let mut reordered = false;
        for (i, svc) in services.iter().enumerate() {
            let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
            let name = svc.metadata.name.as_deref().unwrap_or("");
            let svc_slices = index
                .get(&(ns, name))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let fp = fingerprint(svc, svc_slices);
            let order = i + 1;
            let key = (ns.to_string(), name.to_string());
            let id = match self.by_name.get(&key) {
                Some(id) => *id,
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.by_name.insert(key, id);
                    id
                }
            };
            seen.insert(id);
            let compute = || {
                let mut part = empty_like(&self.skeleton);
                for sp in service_ports(cfg, svc) {
                    let eps = endpoints(cfg, &sp, svc_slices);
                    add_service_port(cfg, masq_cidr.as_deref(), &mut part, &sp, &eps);
                }
                part
            };
            match self.frags.get_mut(&id) {
                Some(f) => {
                    reordered |= f.order != order;
                    f.order = order;
                    if f.fingerprint != fp {
                        f.fingerprint = fp;
                        let part = compute();
                        changed.push((id, Some(part)));
                    }
                }
                None => {
                    let part = compute();
                    self.frags.insert(
                        id,
                        Fragment {
                            order,
                            fingerprint: fp,
                            part: empty_like(&self.skeleton),
                        },
                    );
                    changed.push((id, Some(part)));
                }
            }
        }
        if self.frags.len() > seen.len() {
            let gone: Vec<u64> = self
                .frags
                .keys()
                .filter(|id| !seen.contains(id))
                .copied()
                .collect();
            changed.extend(gone.into_iter().map(|id| (id, None)));
            self.by_name.retain(|_, id| seen.contains(id));
        }

        // Items whose value may change: those of the old and new fragments
        // of changed Services, and contested ones if the order moved.
        let mut touched: BTreeSet<Item> = BTreeSet::new();
        let mut udp_touched: BTreeSet<(IpAddr, u16)> = BTreeSet::new();
        for (id, _) in &changed {
            if let Some(f) = self.frags.get(id) {
                touched.extend(items(&f.part));
                udp_touched.extend(f.part.udp_endpoints.iter().copied());
            }
        }
        for (_, part) in &changed {
            if let Some(part) = part {
                touched.extend(items(part));
                udp_touched.extend(part.udp_endpoints.iter().copied());
            }
        }
        if reordered {
            touched.extend(self.contested.iter().cloned());
        }
        if touched.is_empty() && udp_touched.is_empty() {
            return Change::default();
        }
        // Chains that mention a set that may change are flushed by
        // render_diff when the set changes: they belong in the comparison.
        let sets: Vec<String> = touched
            .iter()
            .filter_map(|i| match i {
                Item::Set(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        for s in &sets {
            if let Some(chains) = self.set_refs.get(s) {
                touched.extend(chains.iter().cloned().map(Item::Chain));
            }
        }
        let old = want_diff.then(|| self.snapshot(&touched, &udp_touched));
        let udp_before: Vec<bool> = udp_touched
            .iter()
            .map(|e| self.current.udp_endpoints.contains(e))
            .collect();

        // Swap the fragments, then resolve every touched item.
        for (id, part) in changed {
            let old_part = match part {
                Some(part) => self
                    .frags
                    .get_mut(&id)
                    .map(|f| std::mem::replace(&mut f.part, part)),
                None => self.frags.remove(&id).map(|f| f.part),
            };
            if let Some(old_part) = old_part {
                for item in items(&old_part) {
                    self.disown(&item, id);
                }
                for e in &old_part.udp_endpoints {
                    if let Some(n) = self.udp.get_mut(e) {
                        *n -= 1;
                        if *n == 0 {
                            self.udp.remove(e);
                        }
                    }
                }
            }
            let new_items: Vec<Item> = self
                .frags
                .get(&id)
                .map(|f| items(&f.part).collect())
                .unwrap_or_default();
            for item in new_items {
                let owners = self.owners.entry(item.clone()).or_default();
                owners.push(id);
                if owners.len() > 1 {
                    self.contested.insert(item);
                }
            }
            if let Some(f) = self.frags.get(&id) {
                for e in &f.part.udp_endpoints {
                    *self.udp.entry(*e).or_default() += 1;
                }
            }
        }
        for item in &touched {
            self.resolve(item);
        }
        let mut stale = vec![];
        for (e, before) in udp_touched.iter().zip(udp_before) {
            let now = self.udp.contains_key(e);
            if now {
                self.current.udp_endpoints.insert(*e);
            } else {
                self.current.udp_endpoints.remove(e);
            }
            if before && !now {
                stale.push(*e);
            }
        }
        let diff = match old {
            Some(old) => Ruleset::render_diff(&old, &self.snapshot(&touched, &udp_touched)),
            None => String::new(),
        };
        Change {
            diff,
            stale_udp: stale,
        }
    }

    /// Starts over (a new Config, or input `desired` would treat unlike the
    /// cache); the diff is the reference one.
    fn rebuild(
        &mut self,
        cfg: &Config,
        services: &[Service],
        slices: &[EndpointSlice],
        want_diff: bool,
    ) -> Change {
        let old = std::mem::replace(self, Incremental::new(cfg));
        if has_duplicates(services) {
            // Several Services of one name: no per-name cache; keep the
            // reference result and drop the cache (the next update refills it).
            let new = desired(cfg, services, slices);
            let change = Change {
                diff: if want_diff {
                    Ruleset::render_diff(&old.current, &new)
                } else {
                    String::new()
                },
                stale_udp: super::stale_udp_endpoints(&old.current, &new),
            };
            self.current = new;
            self.poisoned = true;
            return change;
        }
        let _ = self.update(cfg, services, slices, false);
        Change {
            diff: if want_diff {
                Ruleset::render_diff(&old.current, &self.current)
            } else {
                String::new()
            },
            stale_udp: super::stale_udp_endpoints(&old.current, &self.current),
        }
    }

    fn disown(&mut self, item: &Item, id: u64) {
        if let Some(owners) = self.owners.get_mut(item) {
            owners.retain(|o| *o != id);
            if owners.len() <= 1 {
                self.contested.remove(item);
            }
            if owners.is_empty() {
                self.owners.remove(item);
            }
        }
    }

    /// Sets `current`'s value of `item` to that of its winning owner.
    fn resolve(&mut self, item: &Item) {
        let winner = self.owners.get(item).and_then(|owners| {
            owners
                .iter()
                .max_by_key(|id| self.frags.get(id).map_or(0, |f| f.order))
                .copied()
        });
        let source = match winner {
            Some(SKELETON) => Some(&self.skeleton),
            Some(id) => self.frags.get(&id).map(|f| &f.part),
            None => None,
        };
        match item {
            Item::Chain(name) => {
                let new = source.and_then(|s| s.chains.get(name)).cloned();
                if let Some(old) = self.current.chains.get(name) {
                    for set in set_mentions(old) {
                        if let Some(refs) = self.set_refs.get_mut(&set) {
                            refs.remove(name);
                            if refs.is_empty() {
                                self.set_refs.remove(&set);
                            }
                        }
                    }
                }
                match new {
                    Some(chain) => {
                        for set in set_mentions(&chain) {
                            self.set_refs.entry(set).or_default().insert(name.clone());
                        }
                        self.current.chains.insert(name.clone(), chain);
                    }
                    None => {
                        self.current.chains.remove(name);
                    }
                }
            }
            Item::Set(name) => match source.and_then(|s| s.sets.get(name)).cloned() {
                Some(body) => {
                    self.current.sets.insert(name.clone(), body);
                }
                None => {
                    self.current.sets.remove(name);
                }
            },
            Item::Elem(map, key) => {
                let v = source
                    .and_then(|s| s.maps.get(map))
                    .and_then(|m| m.elements.get(key))
                    .cloned();
                if let Some(m) = self.current.maps.get_mut(map) {
                    match v {
                        Some(v) => {
                            m.elements.insert(key.clone(), v);
                        }
                        None => {
                            m.elements.remove(key);
                        }
                    }
                }
            }
        }
    }

    /// The part of `current` that `touched` names, with every map declared.
    fn snapshot(&self, touched: &BTreeSet<Item>, udp: &BTreeSet<(IpAddr, u16)>) -> Ruleset {
        let mut out = empty_like(&self.current);
        for item in touched {
            match item {
                Item::Chain(n) => {
                    if let Some(c) = self.current.chains.get(n) {
                        out.chains.insert(n.clone(), c.clone());
                    }
                }
                Item::Set(n) => {
                    if let Some(b) = self.current.sets.get(n) {
                        out.sets.insert(n.clone(), b.clone());
                    }
                }
                Item::Elem(m, k) => {
                    let v = self.current.maps.get(m).and_then(|m| m.elements.get(k));
                    if let (Some(v), Some(om)) = (v, out.maps.get_mut(m)) {
                        om.elements.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        out.udp_endpoints = udp
            .iter()
            .filter(|e| self.current.udp_endpoints.contains(e))
            .copied()
            .collect();
        out
    }
}

/// A ruleset with `rs`'s family and maps (their types), and nothing else.
fn empty_like(rs: &Ruleset) -> Ruleset {
    Ruleset {
        family: rs.family,
        chains: BTreeMap::new(),
        sets: BTreeMap::new(),
        maps: rs
            .maps
            .iter()
            .map(|(n, m)| {
                let map = super::Map {
                    key_type: m.key_type.clone(),
                    elements: BTreeMap::new(),
                };
                (n.clone(), map)
            })
            .collect(),
        udp_endpoints: BTreeSet::new(),
    }
}

fn items(rs: &Ruleset) -> impl Iterator<Item = Item> + '_ {
    let chains = rs.chains.keys().map(|n| Item::Chain(n.clone()));
    let sets = rs.sets.keys().map(|n| Item::Set(n.clone()));
    let elems = rs.maps.iter().flat_map(|(m, map)| {
        map.elements
            .keys()
            .map(move |k| Item::Elem(m.clone(), k.clone()))
    });
    chains.chain(sets).chain(elems)
}

/// The set names a chain's rules mention as `@name` (a superset of what
/// render_diff's `references_any` can match).
fn set_mentions(chain: &Chain) -> BTreeSet<String> {
    chain
        .rules
        .iter()
        .flat_map(|r| r.split_whitespace())
        .filter_map(|tok| tok.strip_prefix('@'))
        .map(str::to_string)
        .collect()
}

fn has_duplicates(services: &[Service]) -> bool {
    let mut names = HashSet::with_capacity(services.len());
    !services.iter().all(|s| {
        names.insert((
            s.metadata.namespace.as_deref().unwrap_or("default"),
            s.metadata.name.as_deref().unwrap_or(""),
        ))
    })
}

/// A hash of every field of the Service and of its slices (in input order)
/// that `service_ports` and `endpoints` read.
fn fingerprint(svc: &Service, slices: &[&EndpointSlice]) -> u64 {
    let mut h = DefaultHasher::new();
    svc.metadata.namespace.hash(&mut h);
    svc.metadata.name.hash(&mut h);
    match svc.spec.as_ref() {
        None => 0u8.hash(&mut h),
        Some(spec) => {
            1u8.hash(&mut h);
            spec.type_.hash(&mut h);
            spec.cluster_ip.hash(&mut h);
            spec.cluster_ips.hash(&mut h);
            spec.external_ips.hash(&mut h);
            spec.session_affinity.hash(&mut h);
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .map(|c| c.timeout_seconds)
                .hash(&mut h);
            spec.internal_traffic_policy.hash(&mut h);
            spec.external_traffic_policy.hash(&mut h);
            let ports = spec.ports.as_deref().unwrap_or_default();
            ports.len().hash(&mut h);
            for p in ports {
                (&p.name, &p.protocol, p.port, p.node_port).hash(&mut h);
            }
        }
    }
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    ingress.len().hash(&mut h);
    for i in ingress {
        (&i.ip, &i.ip_mode).hash(&mut h);
    }
    slices.len().hash(&mut h);
    for s in slices {
        s.address_type.hash(&mut h);
        let ports = s.ports.as_deref().unwrap_or_default();
        ports.len().hash(&mut h);
        for p in ports {
            (&p.name, &p.protocol, p.port).hash(&mut h);
        }
        s.endpoints.len().hash(&mut h);
        for e in &s.endpoints {
            e.addresses.first().hash(&mut h);
            e.node_name.hash(&mut h);
            let c = e.conditions.as_ref();
            (
                c.and_then(|c| c.ready),
                c.and_then(|c| c.serving),
                c.and_then(|c| c.terminating),
            )
                .hash(&mut h);
        }
    }
    h.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rules::{stale_udp_endpoints, Family};
    use serde_json::json;

    /// xorshift64*: deterministic, no dependency.
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        pub(crate) fn chance(&mut self, pct: u64) -> bool {
            self.next() % 100 < pct
        }
    }

    pub(crate) fn cfg(family: Family) -> Config {
        Config {
            family,
            node_name: "node-a".into(),
            node_ips: vec![],
            cluster_cidr: Some(match family {
                Family::Ipv4 => "10.244.0.0/16".into(),
                Family::Ipv6 => "fd00:244::/48".into(),
            }),
            masquerade_all: false,
        }
    }

    /// Service `i` in one of many shapes; small pools of cluster and
    /// external IPs so that Services collide on map elements too.
    pub(crate) fn service(rng: &mut Rng, i: usize) -> Service {
        let typ = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"][rng.below(4)];
        let cip = if rng.chance(10) {
            "None".to_string()
        } else {
            format!("10.96.0.{}", 1 + rng.below(12))
        };
        let mut spec = json!({
            "type": typ,
            "clusterIP": cip,
            "clusterIPs": [cip, format!("fd00::{}", 1 + rng.below(12))],
            "ports": [],
        });
        let nports = 1 + rng.below(2);
        for p in 0..nports {
            let proto = ["TCP", "UDP", "SCTP"][rng.below(3)];
            let mut port =
                json!({"name": format!("p{p}"), "port": 80 + rng.below(3), "protocol": proto});
            if typ != "ClusterIP" {
                port["nodePort"] = json!(30000 + rng.below(6));
            }
            if let Some(ports) = spec["ports"].as_array_mut() {
                ports.push(port);
            }
        }
        if rng.chance(30) {
            spec["externalIPs"] = json!([format!("192.0.2.{}", rng.below(3)), "2001:db8::1"]);
        }
        if rng.chance(30) {
            spec["sessionAffinity"] = json!("ClientIP");
            if rng.chance(50) {
                spec["sessionAffinityConfig"] =
                    json!({"clientIP": {"timeoutSeconds": 60 * (1 + rng.below(3))}});
            }
        }
        if rng.chance(25) {
            spec["internalTrafficPolicy"] = json!("Local");
        }
        if rng.chance(25) {
            spec["externalTrafficPolicy"] = json!("Local");
        }
        let mut obj = json!({
            "metadata": {"namespace": format!("ns{}", i % 3), "name": format!("s{i}")},
            "spec": spec,
        });
        if typ == "LoadBalancer" && rng.chance(50) {
            obj["status"] = json!({"loadBalancer": {"ingress": [
                {"ip": format!("198.51.100.{}", rng.below(3))},
                {"ip": "198.51.100.9", "ipMode": "Proxy"}]}});
        }
        serde_json::from_value(obj).expect("service fixture")
    }

    pub(crate) fn slice(rng: &mut Rng, i: usize, k: usize) -> EndpointSlice {
        let v6 = rng.chance(20);
        let mut eps = vec![];
        for _ in 0..rng.below(4) {
            let ip = if v6 {
                format!("fd00:244::{}", 1 + rng.below(6))
            } else {
                format!("10.244.{}.{}", rng.below(2), 1 + rng.below(6))
            };
            let node = ["node-a", "node-b"][rng.below(2)];
            let mut ep = json!({"addresses": [ip], "nodeName": node});
            if rng.chance(40) {
                ep["conditions"] = json!({"ready": rng.chance(50),
                    "serving": rng.chance(50), "terminating": rng.chance(50)});
            }
            eps.push(ep);
        }
        let mut ports = vec![];
        for p in 0..2 {
            if rng.chance(80) {
                let proto = ["TCP", "UDP", "SCTP"][rng.below(3)];
                ports.push(json!({"name": format!("p{p}"), "port": 8080 + rng.below(2), "protocol": proto}));
            }
        }
        serde_json::from_value(json!({
            "metadata": {"namespace": format!("ns{}", i % 3), "name": format!("s{i}-{k}"),
                         "labels": {"kubernetes.io/service-name": format!("s{i}")}},
            "addressType": if v6 { "IPv6" } else { "IPv4" },
            "ports": ports,
            "endpoints": eps,
        }))
        .expect("slice fixture")
    }

    /// One random change: Services and slices come, go, change or swap
    /// places (which decides who wins a collision).
    pub(crate) fn mutate(
        rng: &mut Rng,
        svcs: &mut Vec<Service>,
        slices: &mut Vec<EndpointSlice>,
        next: &mut usize,
        step: usize,
    ) {
        match rng.below(9) {
            0 => {
                svcs.push(service(rng, *next));
                slices.push(slice(rng, *next, 0));
                *next += 1;
            }
            1 if !svcs.is_empty() => {
                svcs.remove(rng.below(svcs.len()));
            }
            2 if !svcs.is_empty() => {
                let i = rng.below(svcs.len());
                let n: usize = svcs[i].metadata.name.as_deref().unwrap_or("s0")[1..]
                    .parse()
                    .unwrap_or(0);
                svcs[i] = service(rng, n);
            }
            3 | 4 if !slices.is_empty() => {
                // endpoints come and go, get ready or not
                let i = rng.below(slices.len());
                let svc = slices[i].metadata.labels.as_ref().and_then(|l| {
                    l.get(SERVICE_NAME_LABEL)
                        .map(|s| s[1..].parse().unwrap_or(0))
                });
                slices[i] = slice(rng, svc.unwrap_or(0), i);
            }
            5 if !slices.is_empty() => {
                slices.remove(rng.below(slices.len()));
            }
            6 => {
                let n = rng.below((*next).max(1));
                slices.push(slice(rng, n, step + 100));
            }
            7 => {
                // order only: decides who wins a collision
                let a = rng.below(svcs.len().max(1));
                let b = rng.below(svcs.len().max(1));
                if a < svcs.len() && b < svcs.len() {
                    svcs.swap(a, b);
                }
                let a = rng.below(slices.len().max(1));
                let b = rng.below(slices.len().max(1));
                if a < slices.len() && b < slices.len() {
                    slices.swap(a, b);
                }
            }
            _ => {}
        }
    }

    fn as_set(v: Vec<(IpAddr, u16)>) -> BTreeSet<(IpAddr, u16)> {
        v.into_iter().collect()
    }

    /// For a random sequence of changes, the incremental state equals
    /// `desired`, its diff equals `render_diff(old desired, new desired)` and
    /// its stale UDP endpoints equal `stale_udp_endpoints(old, new)`.
    #[test]
    fn incremental_matches_desired_over_random_changes() {
        for (seed, family) in [(1u64, Family::Ipv4), (7, Family::Ipv6), (42, Family::Ipv4)] {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let cfg = cfg(family);
            let mut next = 0usize;
            let mut svcs: Vec<Service> = vec![];
            let mut slices: Vec<EndpointSlice> = vec![];
            for _ in 0..12 {
                svcs.push(service(&mut rng, next));
                slices.push(slice(&mut rng, next, 0));
                next += 1;
            }
            let mut inc = Incremental::new(&cfg);
            let mut prev = desired(&cfg, &[], &[]);
            let (mut diffs, mut stale, mut contested) = (0, 0, 0);
            assert_eq!(inc.ruleset(), &prev);
            for step in 0..300 {
                mutate(&mut rng, &mut svcs, &mut slices, &mut next, step);
                let want = desired(&cfg, &svcs, &slices);
                let change = inc.update(&cfg, &svcs, &slices, true);
                assert_eq!(inc.ruleset(), &want, "seed {seed} step {step}");
                assert_eq!(
                    inc.ruleset().render_full(),
                    want.render_full(),
                    "seed {seed} step {step}"
                );
                assert_eq!(
                    change.diff,
                    Ruleset::render_diff(&prev, &want),
                    "seed {seed} step {step}"
                );
                assert_eq!(
                    as_set(change.stale_udp.clone()),
                    as_set(stale_udp_endpoints(&prev, &want)),
                    "seed {seed} step {step}"
                );
                diffs += usize::from(!change.diff.is_empty());
                stale += usize::from(!change.stale_udp.is_empty());
                contested += usize::from(!inc.contested.is_empty());
                prev = want;
            }
            // the sequence did exercise diffs, UDP cleanup and collisions
            assert!(
                diffs > 50 && stale > 0 && contested > 50,
                "{diffs} {stale} {contested}"
            );
        }
    }

    #[test]
    fn config_change_and_duplicate_names_fall_back_to_the_reference() {
        let mut rng = Rng(99);
        let svcs: Vec<Service> = (0..6).map(|i| service(&mut rng, i)).collect();
        let slices: Vec<EndpointSlice> = (0..6).map(|i| slice(&mut rng, i, 0)).collect();
        let a = cfg(Family::Ipv4);
        let b = Config {
            masquerade_all: true,
            node_ips: vec!["192.168.1.10".parse().expect("ip")],
            ..a.clone()
        };
        let mut inc = Incremental::new(&a);
        inc.update(&a, &svcs, &slices, false);
        let change = inc.update(&b, &svcs, &slices, true);
        assert_eq!(inc.ruleset(), &desired(&b, &svcs, &slices));
        assert_eq!(
            change.diff,
            Ruleset::render_diff(&desired(&a, &svcs, &slices), &desired(&b, &svcs, &slices))
        );
        let mut dup = svcs.clone();
        dup.push(svcs[0].clone());
        dup.push(service(&mut rng, 0));
        inc.update(&b, &dup, &slices, true);
        assert_eq!(inc.ruleset(), &desired(&b, &dup, &slices));
        let change = inc.update(&b, &svcs, &slices, true);
        assert_eq!(inc.ruleset(), &desired(&b, &svcs, &slices));
        assert_eq!(
            change.diff,
            Ruleset::render_diff(&desired(&b, &dup, &slices), &desired(&b, &svcs, &slices))
        );
    }

    #[test]
    fn unchanged_inputs_give_an_empty_change() {
        let mut rng = Rng(5);
        let svcs: Vec<Service> = (0..20).map(|i| service(&mut rng, i)).collect();
        let slices: Vec<EndpointSlice> = (0..20).map(|i| slice(&mut rng, i, 0)).collect();
        let c = cfg(Family::Ipv4);
        let mut inc = Incremental::new(&c);
        inc.update(&c, &svcs, &slices, true);
        let change = inc.update(&c, &svcs, &slices, true);
        assert!(change.diff.is_empty() && change.stale_udp.is_empty());
    }
}
