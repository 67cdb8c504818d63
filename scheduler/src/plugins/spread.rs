//! PodTopologySpread: `whenUnsatisfiable: DoNotSchedule` constraints filter
//! nodes whose domain would exceed `maxSkew` over the least loaded domain;
//! `ScheduleAnyway` constraints score nodes in emptier domains higher, as
//! upstream. Matching pods are counted once per cycle (PreFilter/PreScore)
//! per domain over the nodes the constraint's inclusion policies admit.
//!
//! Not supported: upstream's system default constraints (hostname maxSkew 3,
//! zone maxSkew 5, ScheduleAnyway, for pods owned by a Service, ReplicaSet or
//! StatefulSet): a pod without constraints is skipped.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::framework::{
    CycleState, Filter, NodeInfo, Plugin, PreFilter, PreScore, Score, Snapshot, Status,
    MAX_NODE_SCORE,
};
use crate::plugins::core::{node_matches_pod, tolerated};
use crate::plugins::interpod::{labels, namespace};
use common::selectors::label_selector_matches;

pub const NAME: &str = "PodTopologySpread";
const FILTER_KEY: &str = "PreFilterPodTopologySpread";
const SCORE_KEY: &str = "PreScorePodTopologySpread";
const HOSTNAME: &str = "kubernetes.io/hostname";

pub const REASON_SKEW: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// One constraint, with `matchLabelKeys` merged into its selector.
#[derive(Debug, Clone)]
struct Constraint {
    max_skew: i64,
    key: String,
    /// None: no selector, which selects no pod
    selector: Option<LabelSelector>,
    min_domains: i64,
    /// nodeAffinityPolicy Honor (default): only nodes the pod may run on count
    honor_affinity: bool,
    /// nodeTaintsPolicy Honor (default Ignore): only nodes whose taints the pod tolerates count
    honor_taints: bool,
}

impl Constraint {
    fn new(pod: &Pod, c: &TopologySpreadConstraint) -> Constraint {
        let own = labels(pod);
        let selector = c.label_selector.clone().map(|mut sel| {
            for key in c.match_label_keys.iter().flatten() {
                if let Some(v) = own.get(key) {
                    sel.match_expressions.get_or_insert_with(Vec::new).push(
                        LabelSelectorRequirement {
                            key: key.clone(),
                            operator: "In".into(),
                            values: Some(vec![v.clone()]),
                        },
                    );
                }
            }
            sel
        });
        Constraint {
            max_skew: i64::from(c.max_skew),
            key: c.topology_key.clone(),
            selector,
            min_domains: c.min_domains.map_or(1, i64::from),
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    fn selects(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| label_selector_matches(s, labels))
    }

    /// Matching pods on the node: same namespace as `pod`, not terminating.
    fn count(&self, pod: &Pod, node: &NodeInfo) -> i64 {
        let ns = namespace(pod);
        node.pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && namespace(p) == ns
                    && self.selects(super::interpod::labels(p))
            })
            .count() as i64
    }

    /// Does the node count for this constraint (its inclusion policies)?
    fn admits(&self, pod: &Pod, node: &NodeInfo) -> bool {
        if self.honor_affinity && !node_matches_pod(pod, node) {
            return false;
        }
        if self.honor_taints {
            let tols = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.as_deref())
                .unwrap_or_default();
            let taints = node
                .node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_deref())
                .unwrap_or_default();
            if taints
                .iter()
                .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .any(|t| !tolerated(tols, t))
            {
                return false;
            }
        }
        true
    }
}

/// The pod's constraints with this `whenUnsatisfiable`.
fn constraints(pod: &Pod, when: &str) -> Vec<Constraint> {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| Constraint::new(pod, c))
        .collect()
}

fn has_all_keys(node: &NodeInfo, cs: &[Constraint]) -> bool {
    let l = node.labels();
    cs.iter().all(|c| l.contains_key(&c.key))
}

struct FilterState {
    constraints: Vec<Constraint>,
    /// per constraint: domain -> matching pods
    counts: Vec<HashMap<String, i64>>,
    /// per constraint: the global minimum (0 while fewer than minDomains domains exist)
    mins: Vec<i64>,
    /// per constraint: does the incoming pod match its own selector?
    self_match: Vec<bool>,
    /// the snapshot counted, to tell a preemption trial (a node with fewer pods) from the real node
    snapshot: Snapshot,
}

#[derive(Default)]
pub struct PodTopologySpread;

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl PreFilter for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, snapshot: &Snapshot) -> Status {
        let cs = constraints(pod, "DoNotSchedule");
        if cs.is_empty() {
            return Status::skip();
        }
        let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); cs.len()];
        for node in snapshot.nodes.iter() {
            if !has_all_keys(node, &cs) {
                continue;
            }
            let l = node.labels();
            for (c, by_domain) in cs.iter().zip(counts.iter_mut()) {
                if !c.admits(pod, node) {
                    continue;
                }
                let Some(v) = l.get(&c.key) else { continue };
                let n = c.count(pod, node);
                match by_domain.get_mut(v) {
                    Some(x) => *x += n,
                    None => {
                        by_domain.insert(v.clone(), n);
                    }
                }
            }
        }
        let mins = cs
            .iter()
            .zip(&counts)
            .map(|(c, by_domain)| {
                if (by_domain.len() as i64) < c.min_domains {
                    0
                } else {
                    by_domain.values().copied().min().unwrap_or(i64::MAX)
                }
            })
            .collect();
        let own = labels(pod);
        state.write(
            FILTER_KEY,
            FilterState {
                self_match: cs.iter().map(|c| c.selects(own)).collect(),
                constraints: cs,
                counts,
                mins,
                snapshot: snapshot.clone(),
            },
        );
        Status::success()
    }
}

impl Filter for PodTopologySpread {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<FilterState>(FILTER_KEY) else {
            return Status::success();
        };
        let l = node.labels();
        // preemption tries the node without some of its pods
        let orig = s
            .snapshot
            .get(node.name())
            .filter(|o| o.pods.len() != node.pods.len() && has_all_keys(o, &s.constraints));
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(v) = l.get(&c.key) else {
                return Status::unresolvable(NAME, REASON_MISSING_LABEL);
            };
            let mut count = s.counts[i].get(v).copied().unwrap_or(0);
            let mut min = s.mins[i];
            if let Some(o) = orig {
                if c.admits(pod, node) && s.counts[i].contains_key(v) {
                    count += c.count(pod, node) - c.count(pod, o);
                    // only this domain changed, and it can only have shrunk
                    min = min.min(count);
                }
            }
            let skew = count
                .saturating_add(i64::from(s.self_match[i]))
                .saturating_sub(min);
            if skew > c.max_skew {
                return Status::unschedulable(NAME, REASON_SKEW);
            }
        }
        Status::success()
    }
}

struct ScoreState {
    constraints: Vec<Constraint>,
    /// feasible nodes lacking one of the topology keys: they score 0
    ignored: HashSet<String>,
    /// per constraint (none for hostname, counted per node in Score): domain -> matching pods
    counts: Vec<HashMap<String, i64>>,
    /// per constraint: ln(number of domains + 2), so more domains weigh more
    weights: Vec<f64>,
}

/// What Score gives a node it ignores; normalize turns it into 0.
const IGNORED: i64 = -1;

impl PreScore for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
        snapshot: &Snapshot,
    ) -> Status {
        let cs = constraints(pod, "ScheduleAnyway");
        if cs.is_empty() {
            return Status::skip();
        }
        let mut ignored = HashSet::new();
        let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); cs.len()];
        for node in nodes {
            if !has_all_keys(node, &cs) {
                ignored.insert(node.name().to_string());
                continue;
            }
            let l = node.labels();
            for (c, by_domain) in cs.iter().zip(counts.iter_mut()) {
                if c.key == HOSTNAME {
                    continue;
                }
                if let Some(v) = l.get(&c.key) {
                    by_domain.entry(v.clone()).or_insert(0);
                }
            }
        }
        let weights = cs
            .iter()
            .zip(&counts)
            .map(|(c, by_domain)| {
                let size = if c.key == HOSTNAME {
                    nodes.len() - ignored.len()
                } else {
                    by_domain.len()
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        // count matching pods in the feasible nodes' domains, over all nodes
        for node in snapshot.nodes.iter() {
            if !has_all_keys(node, &cs) {
                continue;
            }
            let l = node.labels();
            for (c, by_domain) in cs.iter().zip(counts.iter_mut()) {
                if c.key == HOSTNAME {
                    continue;
                }
                let Some(slot) = l.get(&c.key).and_then(|v| by_domain.get_mut(v)) else {
                    continue;
                };
                if c.admits(pod, node) {
                    *slot += c.count(pod, node);
                }
            }
        }
        state.write(
            SCORE_KEY,
            ScoreState {
                constraints: cs,
                ignored,
                counts,
                weights,
            },
        );
        Status::success()
    }
}

impl Score for PodTopologySpread {
    /// Raw: more matching pods in the node's domains score higher (normalize reverses it).
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<ScoreState>(SCORE_KEY) else {
            return Ok(0);
        };
        if s.ignored.contains(node.name()) {
            return Ok(IGNORED);
        }
        let l = node.labels();
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(v) = l.get(&c.key) else { continue };
            let count = if c.key == HOSTNAME {
                c.count(pod, node)
            } else {
                s.counts[i].get(v).copied().unwrap_or(0)
            };
            score += count as f64 * s.weights[i] + (c.max_skew - 1) as f64;
        }
        Ok(score.round() as i64)
    }

    /// The node with the fewest matching pods gets MAX; ignored nodes get 0.
    fn normalize(&self, state: &CycleState, _: &Pod, scores: &mut [i64]) {
        if state.read::<ScoreState>(SCORE_KEY).is_none() {
            return;
        }
        let counted = || scores.iter().copied().filter(|s| *s != IGNORED);
        let min = counted().min().unwrap_or(0);
        let max = counted().max().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = if *s == IGNORED {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::node_info;
    use crate::framework::Code;
    use serde_json::json;
    use std::sync::Arc;

    fn app_pod(name: &str, app: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d", "labels": {"app": app}}, "spec": {"containers": []}}))
                .expect("pod"),
        )
    }

    /// Nodes (name, labels, number of app=web pods).
    fn cluster(nodes: Vec<(&str, serde_json::Value, usize)>) -> Snapshot {
        Snapshot::from_nodes(
            nodes
                .into_iter()
                .map(|(name, labels, n)| {
                    let pods = (0..n)
                        .map(|i| app_pod(&format!("{name}-{i}"), "web"))
                        .collect();
                    Arc::new(node_info(
                        Arc::new(
                            serde_json::from_value(
                                json!({"metadata": {"name": name, "labels": labels}}),
                            )
                            .expect("node"),
                        ),
                        pods,
                    ))
                })
                .collect(),
        )
    }

    fn incoming(constraint: serde_json::Value, extra: serde_json::Value) -> Pod {
        let mut spec = json!({"containers": [], "topologySpreadConstraints": [constraint]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(json!({"metadata": {"name": "new", "namespace": "d", "labels": {"app": "web"}}, "spec": spec}))
            .expect("pod")
    }

    fn zone_constraint(max_skew: i32, when: &str) -> serde_json::Value {
        json!({"maxSkew": max_skew, "topologyKey": "zone", "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}})
    }

    /// (node, code, reason) for every node after PreFilter.
    fn filter_all(p: &Pod, snap: &Snapshot) -> Vec<(String, Code, String)> {
        let mut st = CycleState::default();
        let pre = PodTopologySpread.pre_filter(&mut st, p, snap);
        assert_eq!(pre.code, Code::Success);
        snap.nodes
            .iter()
            .map(|n| {
                let s = PodTopologySpread.filter(&st, p, n);
                (
                    n.name().to_string(),
                    s.code,
                    s.reasons.first().cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    fn feasible(p: &Pod, snap: &Snapshot) -> Vec<String> {
        filter_all(p, snap)
            .into_iter()
            .filter(|(_, c, _)| *c == Code::Success)
            .map(|(n, _, _)| n)
            .collect()
    }

    #[test]
    fn skew_over_three_zones() {
        struct Case {
            name: &'static str,
            pods: [usize; 3],
            max_skew: i32,
            feasible: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "even: anywhere",
                pods: [1, 1, 1],
                max_skew: 1,
                feasible: vec!["a", "b", "c"],
            },
            Case {
                name: "only the emptiest",
                pods: [2, 1, 2],
                max_skew: 1,
                feasible: vec!["b"],
            },
            Case {
                name: "two at the minimum",
                pods: [1, 0, 0],
                max_skew: 1,
                feasible: vec!["b", "c"],
            },
            Case {
                name: "maxSkew 2 tolerates one more",
                pods: [1, 0, 0],
                max_skew: 2,
                feasible: vec!["a", "b", "c"],
            },
            Case {
                name: "maxSkew 2 at its limit",
                pods: [2, 0, 1],
                max_skew: 2,
                feasible: vec!["b", "c"],
            },
        ];
        for c in cases {
            let snap = cluster(vec![
                ("a", json!({"zone": "a"}), c.pods[0]),
                ("b", json!({"zone": "b"}), c.pods[1]),
                ("c", json!({"zone": "c"}), c.pods[2]),
            ]);
            let p = incoming(zone_constraint(c.max_skew, "DoNotSchedule"), json!({}));
            assert_eq!(feasible(&p, &snap), c.feasible, "{}", c.name);
        }
        // the reason and code
        let snap = cluster(vec![
            ("a", json!({"zone": "a"}), 1),
            ("b", json!({"zone": "b"}), 0),
            ("nolabel", json!({}), 0),
        ]);
        let p = incoming(zone_constraint(1, "DoNotSchedule"), json!({}));
        assert_eq!(
            filter_all(&p, &snap),
            vec![
                ("a".into(), Code::Unschedulable, REASON_SKEW.into()),
                ("b".into(), Code::Success, String::new()),
                (
                    "nolabel".into(),
                    Code::UnschedulableAndUnresolvable,
                    REASON_MISSING_LABEL.into()
                ),
            ]
        );
        // a pod that does not match its own selector does not add to the skew
        let mut other = p.clone();
        other.metadata.labels = Some([("app".to_string(), "other".to_string())].into());
        assert_eq!(feasible(&other, &snap), vec!["a", "b"]);
    }

    #[test]
    fn min_domains_counts_missing_domains_as_empty() {
        let snap = cluster(vec![
            ("a", json!({"zone": "a"}), 1),
            ("b", json!({"zone": "b"}), 1),
        ]);
        let mut c = zone_constraint(1, "DoNotSchedule");
        assert_eq!(
            feasible(&incoming(c.clone(), json!({})), &snap),
            vec!["a", "b"]
        );
        // three domains wanted, two exist: the global minimum is 0, so 1 + 1 - 0 > 1
        c["minDomains"] = json!(3);
        assert!(feasible(&incoming(c, json!({})), &snap).is_empty());
    }

    #[test]
    fn node_affinity_policy_and_match_label_keys() {
        // zone c is full of matching pods but the pod may not run there
        let snap = cluster(vec![
            ("a", json!({"zone": "a", "pool": "x"}), 1),
            ("b", json!({"zone": "b", "pool": "x"}), 0),
            ("c", json!({"zone": "c", "pool": "y"}), 0),
        ]);
        let sel = json!({"nodeSelector": {"pool": "x"}});
        // Honor (default): zone c does not count, so the minimum is b's 0
        assert_eq!(
            feasible(
                &incoming(zone_constraint(1, "DoNotSchedule"), sel.clone()),
                &snap
            ),
            vec!["b", "c"],
            "c passes this filter; NodeAffinity rejects it"
        );
        let snap = cluster(vec![
            ("a", json!({"zone": "a", "pool": "x"}), 1),
            ("b", json!({"zone": "b", "pool": "x"}), 1),
            ("c", json!({"zone": "c", "pool": "y"}), 0),
        ]);
        assert_eq!(
            feasible(
                &incoming(zone_constraint(1, "DoNotSchedule"), sel.clone()),
                &snap
            ),
            vec!["a", "b", "c"]
        );
        // Ignore: the empty zone c sets the minimum to 0
        let mut ignore = zone_constraint(1, "DoNotSchedule");
        ignore["nodeAffinityPolicy"] = json!("Ignore");
        assert_eq!(feasible(&incoming(ignore, sel), &snap), vec!["c"]);

        // matchLabelKeys: only pods with the same version count
        let mut v2 = zone_constraint(1, "DoNotSchedule");
        v2["matchLabelKeys"] = json!(["version"]);
        let mut p = incoming(v2, json!({}));
        p.metadata.labels = Some(
            [
                ("app".to_string(), "web".to_string()),
                ("version".to_string(), "2".to_string()),
            ]
            .into(),
        );
        // none of the existing web pods carry version 2: all zones at 0
        assert_eq!(feasible(&p, &snap), vec!["a", "b", "c"]);
    }

    #[test]
    fn terminating_and_other_namespace_pods_do_not_count() {
        let gone: Pod = serde_json::from_value(json!({"metadata": {"name": "gone", "namespace": "d", "labels": {"app": "web"}, "deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"containers": []}}))
            .expect("pod");
        let mut elsewhere = (*app_pod("elsewhere", "web")).clone();
        elsewhere.metadata.namespace = Some("other".into());
        let node = |name: &str, zone: &str, pods: Vec<Arc<Pod>>| {
            Arc::new(node_info(
                Arc::new(
                    serde_json::from_value(
                        json!({"metadata": {"name": name, "labels": {"zone": zone}}}),
                    )
                    .expect("node"),
                ),
                pods,
            ))
        };
        let snap = Snapshot::from_nodes(vec![
            node("a", "a", vec![Arc::new(gone), Arc::new(elsewhere)]),
            node("b", "b", vec![]),
        ]);
        let p = incoming(zone_constraint(1, "DoNotSchedule"), json!({}));
        assert_eq!(feasible(&p, &snap), vec!["a", "b"]);
        // a preemption trial without a's pods agrees
        let mut st = CycleState::default();
        PodTopologySpread.pre_filter(&mut st, &p, &snap);
        let empty_a = node_info(snap.nodes[0].node.clone(), Vec::new());
        assert!(PodTopologySpread.filter(&st, &p, &empty_a).is_success());
    }

    #[test]
    fn preemption_trial_recounts_the_node() {
        let snap = cluster(vec![
            ("a", json!({"zone": "a"}), 2),
            ("b", json!({"zone": "b"}), 1),
        ]);
        let p = incoming(zone_constraint(1, "DoNotSchedule"), json!({}));
        let mut st = CycleState::default();
        PodTopologySpread.pre_filter(&mut st, &p, &snap);
        assert!(!PodTopologySpread
            .filter(&st, &p, &snap.nodes[0])
            .is_success());
        // without one of a's pods: 1 + 1 - 1 <= 1
        let fewer = node_info(
            snap.nodes[0].node.clone(),
            vec![snap.nodes[0].pods[0].clone()],
        );
        assert!(PodTopologySpread.filter(&st, &p, &fewer).is_success());
    }

    #[test]
    fn skip_without_constraints() {
        let snap = cluster(vec![("a", json!({"zone": "a"}), 0)]);
        let plain = app_pod("p", "web");
        let mut st = CycleState::default();
        assert_eq!(
            PodTopologySpread.pre_filter(&mut st, &plain, &snap).code,
            Code::Skip
        );
        assert_eq!(
            PodTopologySpread
                .pre_score(&mut st, &plain, &snap.infos(), &snap)
                .code,
            Code::Skip
        );
        assert!(PodTopologySpread
            .filter(&st, &plain, &snap.nodes[0])
            .is_success());
        // a DoNotSchedule-only pod has nothing to score
        let p = incoming(zone_constraint(1, "DoNotSchedule"), json!({}));
        assert_eq!(
            PodTopologySpread
                .pre_score(&mut st, &p, &snap.infos(), &snap)
                .code,
            Code::Skip
        );
    }

    #[test]
    fn schedule_anyway_prefers_emptier_domains() {
        let snap = cluster(vec![
            ("a1", json!({"zone": "a"}), 2),
            ("a2", json!({"zone": "a"}), 1),
            ("b1", json!({"zone": "b"}), 1),
            ("c1", json!({"zone": "c"}), 0),
            ("nolabel", json!({}), 0),
        ]);
        let p = incoming(zone_constraint(1, "ScheduleAnyway"), json!({}));
        let mut st = CycleState::default();
        assert!(PodTopologySpread
            .pre_score(&mut st, &p, &snap.infos(), &snap)
            .is_success());
        let mut scores: Vec<i64> = snap
            .nodes
            .iter()
            .map(|n| PodTopologySpread.score(&st, &p, n).expect("score"))
            .collect();
        // zones a 3, b 1, c 0 pods; weight ln(3 + 2)
        let w = 5f64.ln();
        let raw = |n: f64| (n * w).round() as i64;
        assert_eq!(scores, vec![raw(3.0), raw(3.0), raw(1.0), 0, IGNORED]);
        PodTopologySpread.normalize(&st, &p, &mut scores);
        let (max, b) = (raw(3.0), raw(1.0));
        assert_eq!(
            scores,
            vec![0, 0, 100 * (max - b) / max, 100, 0],
            "fewer pods score higher; the unlabelled node gets 0"
        );
    }
}
