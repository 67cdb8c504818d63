//! node-ipam-controller: with `--allocate-node-cidrs`, every node gets a
//! podCIDR of `--node-cidr-mask-size` (24) bits carved from `--cluster-cidr`
//! (IPv4), never one another node holds; a deleted node's range is freed.
//! One worker, and the ranges handed out are remembered at once, so two
//! nodes never get the same range however far behind the cache is.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use common::events::{EventType, Recorder};
use common::informers::Change;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::{queue, run_workers, Ctx, Started, SyncResult};

/// The cluster CIDR cut into node-sized ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranges {
    base: u32,
    cluster_bits: u8,
    node_bits: u8,
}

impl Ranges {
    pub fn new(cluster_cidr: &str, node_mask: u8) -> Result<Ranges, String> {
        let (ip, bits) = cluster_cidr
            .split_once('/')
            .ok_or_else(|| format!("--cluster-cidr {cluster_cidr:?} is not a CIDR"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("--cluster-cidr {cluster_cidr:?}: only IPv4 is supported"))?;
        let bits: u8 =
            bits.parse().ok().filter(|b| *b <= 32).ok_or_else(|| {
                format!("--cluster-cidr {cluster_cidr:?} has a bad prefix length")
            })?;
        if node_mask < bits || node_mask > 30 {
            return Err(format!(
                "--node-cidr-mask-size {node_mask} must be between the cluster CIDR's /{bits} and /30"
            ));
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
        Ok(Ranges {
            base: u32::from(ip) & mask,
            cluster_bits: bits,
            node_bits: node_mask,
        })
    }

    pub fn count(&self) -> u32 {
        1u32.checked_shl(u32::from(self.node_bits - self.cluster_bits))
            .unwrap_or(u32::MAX)
    }

    pub fn cidr(&self, index: u32) -> String {
        let step = 1u32
            .checked_shl(32 - u32::from(self.node_bits))
            .unwrap_or(0);
        let ip = Ipv4Addr::from(self.base.wrapping_add(index.wrapping_mul(step)));
        format!("{ip}/{}", self.node_bits)
    }

    /// The index of a range this allocator hands out, if `cidr` is one.
    pub fn index(&self, cidr: &str) -> Option<u32> {
        (0..self.count()).find(|i| self.cidr(*i) == cidr)
    }
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

fn pod_cidr(n: &Node) -> Option<String> {
    n.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .filter(|c| !c.is_empty())
}

async fn run(ctx: Ctx) {
    let Some(ranges) = ctx.settings.node_cidrs.clone() else {
        tracing::info!("--allocate-node-cidrs is off: node-ipam-controller idle");
        return;
    };
    let nodes = ctx.informers.get::<Node>();
    let q = queue();
    let mut changes = nodes.subscribe();
    nodes.wait_synced().await;
    let used: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    for n in nodes.store().state() {
        if let Some(i) = pod_cidr(&n).and_then(|c| ranges.index(&c)) {
            used.lock().unwrap_or_else(|p| p.into_inner()).insert(i);
        }
        q.add(n.metadata.name.clone().unwrap_or_default());
    }
    let feeder = {
        let (q, used, ranges) = (q.clone(), used.clone(), ranges.clone());
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(Change::Applied(n)) => q.add(n.metadata.name.clone().unwrap_or_default()),
                    Ok(Change::Deleted(n)) => {
                        if let Some(i) = pod_cidr(&n).and_then(|c| ranges.index(&c)) {
                            used.lock().unwrap_or_else(|p| p.into_inner()).remove(&i);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    Err(_) => {}
                }
            }
        })
    };
    let recorder = Recorder::new(ctx.client.clone(), "cidrAllocator", None);
    let (client, store) = (ctx.client.clone(), nodes.store());
    // one worker: allocation is sequential by design
    run_workers("nodeipam", q, 1, ctx.stop.clone(), move |name| {
        let (client, store, used, ranges, recorder) = (
            client.clone(),
            store.clone(),
            used.clone(),
            ranges.clone(),
            recorder.clone(),
        );
        async move { sync(&client, &store, &used, &ranges, &recorder, &name).await }
    })
    .await;
    feeder.abort();
}

async fn sync(
    client: &kube::Client,
    store: &Store<Node>,
    used: &Mutex<BTreeSet<u32>>,
    ranges: &Ranges,
    recorder: &Recorder,
    name: &str,
) -> SyncResult {
    let Some(node) = store.get(&ObjectRef::new(name)) else {
        return Ok(None);
    };
    if let Some(c) = pod_cidr(&node) {
        if let Some(i) = ranges.index(&c) {
            used.lock().unwrap_or_else(|p| p.into_inner()).insert(i);
        }
        return Ok(None);
    }
    let picked = {
        let mut u = used.lock().unwrap_or_else(|p| p.into_inner());
        let free = (0..ranges.count()).find(|i| !u.contains(i));
        if let Some(i) = free {
            u.insert(i);
        }
        free
    };
    let Some(i) = picked else {
        let obj = ObjectReference {
            kind: Some("Node".into()),
            name: Some(name.to_string()),
            uid: node.metadata.uid.clone(),
            ..Default::default()
        };
        recorder.emit(
            &obj,
            EventType::Normal,
            "CIDRNotAvailable",
            &format!("Node {name} status is now: CIDRNotAvailable"),
        );
        anyhow::bail!("no pod CIDR left for node {name}");
    };
    let cidr = ranges.cidr(i);
    let api: Api<Node> = Api::all(client.clone());
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(node = name, %cidr, "allocated a pod CIDR");
            Ok(None)
        }
        Err(e) => {
            used.lock().unwrap_or_else(|p| p.into_inner()).remove(&i);
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_a_cluster_cidr() {
        let r = Ranges::new("10.244.0.0/16", 24).expect("ranges");
        assert_eq!(r.count(), 256);
        assert_eq!(r.cidr(0), "10.244.0.0/24");
        assert_eq!(r.cidr(255), "10.244.255.0/24");
        assert_eq!(r.index("10.244.7.0/24"), Some(7));
        assert_eq!(r.index("10.245.0.0/24"), None);
        let r = Ranges::new("10.1.2.3/20", 26).expect("ranges");
        assert_eq!(r.cidr(1), "10.1.0.64/26");
        assert!(Ranges::new("10.0.0.0/24", 16).is_err());
        assert!(Ranges::new("fd00::/48", 64).is_err());
        assert!(Ranges::new("nonsense", 24).is_err());
    }
}
