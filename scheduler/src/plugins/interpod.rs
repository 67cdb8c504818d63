//! InterPodAffinity: required pod affinity and anti-affinity as a filter
//! (including the symmetric rule that existing pods' required anti-affinity
//! keeps the incoming pod out of their topology domain), and preferred terms
//! of both sides as a score, as upstream.
//!
//! Counting runs once per cycle in PreFilter/PreScore over the snapshot, per
//! (topologyKey, value) domain; Filter and Score only look up the node's
//! domains. Pods without affinity terms cost a pointer comparison per node:
//! which nodes hold pods with affinity terms is remembered per node info and
//! recomputed only for node infos that changed.
//!
//! Not supported: `namespaceSelector` beyond the empty selector `{}` (all
//! namespaces), as there is no namespace informer yet, and `matchLabelKeys`/
//! `mismatchLabelKeys` on affinity terms.

use std::collections::{BTreeMap, HashMap};

use common::selectors::label_selector_matches;
use k8s_openapi::api::core::v1::{Affinity, Pod, PodAffinityTerm, WeightedPodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::framework::{
    CycleState, Filter, NodeInfo, Plugin, PreFilter, PreScore, Score, Snapshot, Status,
    MAX_NODE_SCORE,
};

pub const NAME: &str = "InterPodAffinity";
const FILTER_KEY: &str = "PreFilterInterPodAffinity";
const SCORE_KEY: &str = "PreScoreInterPodAffinity";
/// Upstream's default hardPodAffinityWeight: what an existing pod's required
/// affinity term toward the incoming pod adds to the score.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

pub(crate) fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

pub(crate) fn labels(pod: &Pod) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

/// Does `term`, declared by a pod in namespace `owner_ns`, select `target`?
/// Namespaces: the listed ones, or the owner's own when none are listed; an
/// empty `namespaceSelector: {}` selects every namespace. A non-empty
/// namespaceSelector would need namespace labels (no namespace informer yet):
/// it is ignored, as if it were absent.
fn term_selects(term: &PodAffinityTerm, owner_ns: &str, target: &Pod) -> bool {
    let Some(sel) = &term.label_selector else {
        // a term without a selector selects no pod
        return false;
    };
    let all_namespaces = term
        .namespace_selector
        .as_ref()
        .is_some_and(selector_is_empty);
    if !all_namespaces {
        let target_ns = namespace(target);
        let ok = match term.namespaces.as_deref() {
            Some(list) if !list.is_empty() => list.iter().any(|n| n == target_ns),
            _ => owner_ns == target_ns,
        };
        if !ok {
            return false;
        }
    }
    label_selector_matches(sel, labels(target))
}

fn affinity(pod: &Pod) -> Option<&Affinity> {
    pod.spec.as_ref().and_then(|s| s.affinity.as_ref())
}

fn required_affinity(pod: &Pod) -> &[PodAffinityTerm] {
    affinity(pod)
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
}

pub fn required_anti_affinity(pod: &Pod) -> &[PodAffinityTerm] {
    affinity(pod)
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
}

fn preferred_affinity(pod: &Pod) -> &[WeightedPodAffinityTerm] {
    affinity(pod)
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
}

fn preferred_anti_affinity(pod: &Pod) -> &[WeightedPodAffinityTerm] {
    affinity(pod)
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
}

/// Does the pod carry any pod affinity or anti-affinity term?
pub fn has_any_terms(pod: &Pod) -> bool {
    !required_affinity(pod).is_empty()
        || !required_anti_affinity(pod).is_empty()
        || !preferred_affinity(pod).is_empty()
        || !preferred_anti_affinity(pod).is_empty()
}

/// topologyKey -> topology value -> count (or score).
type Counts = HashMap<String, HashMap<String, i64>>;

fn add(counts: &mut Counts, key: &str, value: &str, n: i64) {
    let by_value = match counts.get_mut(key) {
        Some(m) => m,
        None => counts.entry(key.to_string()).or_default(),
    };
    match by_value.get_mut(value) {
        Some(c) => *c += n,
        None => {
            by_value.insert(value.to_string(), n);
        }
    }
}

fn get(counts: &Counts, key: &str, value: &str) -> i64 {
    counts
        .get(key)
        .and_then(|m| m.get(value))
        .copied()
        .unwrap_or(0)
}

/// What the pods of some nodes contribute to the filter's counts.
#[derive(Debug, Default)]
struct FilterCounts {
    /// existing pods matching all the incoming pod's required affinity terms, per term's domain
    affinity: Counts,
    /// sum of `affinity`: zero means no pod matches (the self-affinity special case)
    affinity_total: i64,
    /// existing pods matching one of the incoming pod's required anti-affinity terms
    anti_affinity: Counts,
    /// existing pods whose required anti-affinity terms select the incoming pod
    existing_anti_affinity: Counts,
}

impl FilterCounts {
    /// Count the pods of `node` for `pod`; `own_terms`: whether the incoming
    /// pod's own terms need counting (else only existing pods' anti-affinity).
    fn count_node(&mut self, pod: &Pod, node: &NodeInfo, own_terms: bool) {
        let node_labels = node.labels();
        let affinity = required_affinity(pod);
        let anti = required_anti_affinity(pod);
        let ns = namespace(pod);
        for existing in &node.pods {
            if own_terms {
                if !affinity.is_empty() && affinity.iter().all(|t| term_selects(t, ns, existing)) {
                    for t in affinity {
                        if let Some(v) = node_labels.get(&t.topology_key) {
                            add(&mut self.affinity, &t.topology_key, v, 1);
                            self.affinity_total += 1;
                        }
                    }
                }
                for t in anti {
                    if term_selects(t, ns, existing) {
                        if let Some(v) = node_labels.get(&t.topology_key) {
                            add(&mut self.anti_affinity, &t.topology_key, v, 1);
                        }
                    }
                }
            }
            let existing_ns = namespace(existing);
            for t in required_anti_affinity(existing) {
                if term_selects(t, existing_ns, pod) {
                    if let Some(v) = node_labels.get(&t.topology_key) {
                        add(&mut self.existing_anti_affinity, &t.topology_key, v, 1);
                    }
                }
            }
        }
    }
}

struct FilterState {
    counts: FilterCounts,
    /// the incoming pod's required terms (for their topology keys)
    affinity: Vec<PodAffinityTerm>,
    anti_affinity: Vec<PodAffinityTerm>,
    /// does the incoming pod match all its own required affinity terms?
    self_match: bool,
    /// whether the incoming pod's own terms were counted
    own_terms: bool,
    /// the snapshot counted, to tell a preemption trial (a node with fewer pods) from the real node
    snapshot: Snapshot,
}

#[derive(Default)]
pub struct InterPodAffinity;

impl InterPodAffinity {
    /// Indexes of the nodes holding pods with required anti-affinity terms,
    /// and of those holding pods with any affinity term (kept by the cache
    /// as pods come and go, instead of a walk over every node per cycle).
    fn nodes_with_terms(&self, snap: &Snapshot) -> (Vec<usize>, Vec<usize>) {
        (
            snap.anti_nodes.iter().copied().collect(),
            snap.term_nodes.iter().copied().collect(),
        )
    }
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl PreFilter for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, snapshot: &Snapshot) -> Status {
        let affinity = required_affinity(pod);
        let anti = required_anti_affinity(pod);
        let own_terms = !affinity.is_empty() || !anti.is_empty();
        let mut counts = FilterCounts::default();
        if own_terms {
            for node in snapshot.nodes.iter() {
                counts.count_node(pod, node, true);
            }
        } else {
            let (with_anti, _) = self.nodes_with_terms(snapshot);
            if with_anti.is_empty() {
                return Status::skip();
            }
            for i in with_anti {
                if let Some(node) = snapshot.nodes.get(i) {
                    counts.count_node(pod, node, false);
                }
            }
        }
        let ns = namespace(pod);
        state.write(
            FILTER_KEY,
            FilterState {
                counts,
                self_match: affinity.iter().all(|t| term_selects(t, ns, pod)),
                affinity: affinity.to_vec(),
                anti_affinity: anti.to_vec(),
                own_terms,
                snapshot: snapshot.clone(),
            },
        );
        Status::success()
    }
}

impl Filter for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<FilterState>(FILTER_KEY) else {
            // PreFilter skipped: nothing to check
            return Status::success();
        };
        // Preemption tries the node without some of its pods: count what the
        // node holds now instead of what it held in the snapshot.
        let trial = match s.snapshot.get(node.name()) {
            Some(orig) if orig.pods.len() != node.pods.len() => {
                let (mut before, mut after) = (FilterCounts::default(), FilterCounts::default());
                before.count_node(pod, orig, s.own_terms);
                after.count_node(pod, node, s.own_terms);
                Some((before, after))
            }
            _ => None,
        };
        let count = |pick: fn(&FilterCounts) -> &Counts, key: &str, value: &str| {
            let global = get(pick(&s.counts), key, value);
            match &trial {
                Some((before, after)) => {
                    global - get(pick(before), key, value) + get(pick(after), key, value)
                }
                None => global,
            }
        };
        let node_labels = node.labels();

        // required affinity: every term's domain must hold a matching pod
        let mut pods_exist = true;
        for t in &s.affinity {
            let Some(v) = node_labels.get(&t.topology_key) else {
                return Status::unresolvable(NAME, REASON_AFFINITY);
            };
            if count(|c| &c.affinity, &t.topology_key, v) <= 0 {
                pods_exist = false;
            }
        }
        if !pods_exist {
            let total = s.counts.affinity_total
                + trial
                    .as_ref()
                    .map_or(0, |(b, a)| a.affinity_total - b.affinity_total);
            // the first of a group of pods with affinity to each other
            if !(total == 0 && s.self_match) {
                return Status::unresolvable(NAME, REASON_AFFINITY);
            }
        }

        // required anti-affinity: no matching pod in any term's domain
        for t in &s.anti_affinity {
            if let Some(v) = node_labels.get(&t.topology_key) {
                if count(|c| &c.anti_affinity, &t.topology_key, v) > 0 {
                    return Status::unschedulable(NAME, REASON_ANTI_AFFINITY);
                }
            }
        }

        // existing pods' required anti-affinity toward the incoming pod
        let mut keys: Vec<&String> = s.counts.existing_anti_affinity.keys().collect();
        if let Some((_, after)) = &trial {
            keys.extend(after.existing_anti_affinity.keys());
        }
        for key in keys {
            if let Some(v) = node_labels.get(key) {
                if count(|c| &c.existing_anti_affinity, key, v) > 0 {
                    return Status::unschedulable(NAME, REASON_EXISTING_ANTI_AFFINITY);
                }
            }
        }
        Status::success()
    }
}

/// Add what one existing pod on `node` contributes to the incoming pod's
/// score per topology domain: the incoming pod's preferred terms toward it,
/// and its required-affinity and preferred terms toward the incoming pod.
fn score_existing(scores: &mut Counts, pod: &Pod, existing: &Pod, node: &NodeInfo) {
    let node_labels = node.labels();
    let mut credit = |term: &PodAffinityTerm, owner_ns: &str, target: &Pod, weight: i64| {
        if weight == 0 {
            return;
        }
        if let Some(v) = node_labels.get(&term.topology_key) {
            if term_selects(term, owner_ns, target) {
                add(scores, &term.topology_key, v, weight);
            }
        }
    };
    let ns = namespace(pod);
    for w in preferred_affinity(pod) {
        credit(&w.pod_affinity_term, ns, existing, i64::from(w.weight));
    }
    for w in preferred_anti_affinity(pod) {
        credit(&w.pod_affinity_term, ns, existing, -i64::from(w.weight));
    }
    let existing_ns = namespace(existing);
    for t in required_affinity(existing) {
        credit(t, existing_ns, pod, HARD_POD_AFFINITY_WEIGHT);
    }
    for w in preferred_affinity(existing) {
        credit(&w.pod_affinity_term, existing_ns, pod, i64::from(w.weight));
    }
    for w in preferred_anti_affinity(existing) {
        credit(&w.pod_affinity_term, existing_ns, pod, -i64::from(w.weight));
    }
}

impl PreScore for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        _: &[&NodeInfo],
        snapshot: &Snapshot,
    ) -> Status {
        let has_preferred =
            !preferred_affinity(pod).is_empty() || !preferred_anti_affinity(pod).is_empty();
        let mut scores = Counts::new();
        let mut score_node = |node: &NodeInfo| {
            for existing in &node.pods {
                score_existing(&mut scores, pod, existing, node);
            }
        };
        if has_preferred {
            snapshot.nodes.iter().for_each(|n| score_node(n));
        } else {
            // only pods with terms of their own can say anything about this pod
            let (_, with_terms) = self.nodes_with_terms(snapshot);
            for i in with_terms {
                if let Some(n) = snapshot.nodes.get(i) {
                    score_node(n);
                }
            }
        }
        if scores.is_empty() {
            return Status::skip();
        }
        state.write(SCORE_KEY, scores);
        Status::success()
    }
}

impl Score for InterPodAffinity {
    fn score(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some(scores) = state.read::<Counts>(SCORE_KEY) else {
            return Ok(0);
        };
        let node_labels = node.labels();
        Ok(scores
            .iter()
            .filter_map(|(key, by_value)| node_labels.get(key).and_then(|v| by_value.get(v)))
            .sum())
    }

    /// Min-max normalisation: the lowest raw score gets 0, the highest MAX.
    fn normalize(&self, state: &CycleState, _: &Pod, scores: &mut [i64]) {
        if state.read::<Counts>(SCORE_KEY).is_none() {
            return;
        }
        let (Some(min), Some(max)) = (scores.iter().copied().min(), scores.iter().copied().max())
        else {
            return;
        };
        let spread = max - min;
        for s in scores.iter_mut() {
            *s = if spread > 0 {
                (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / spread as f64)) as i64
            } else {
                0
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

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    /// A pod in namespace "d" with these labels and this affinity.
    fn labelled(name: &str, labels: serde_json::Value, affinity: serde_json::Value) -> Arc<Pod> {
        Arc::new(pod(
            json!({"metadata": {"name": name, "namespace": "d", "labels": labels}, "spec": {"containers": [], "affinity": affinity}}),
        ))
    }

    /// A node's name, its zone (if labelled) and its pods.
    type TestNode<'a> = (&'a str, Option<&'a str>, Vec<Arc<Pod>>);

    /// Nodes with the pods on them; hostname labels on all.
    fn cluster(nodes: Vec<TestNode<'_>>) -> Snapshot {
        Snapshot::from_nodes(
            nodes
                .into_iter()
                .map(|(name, zone, pods)| {
                    let mut labels = json!({"kubernetes.io/hostname": name});
                    if let Some(z) = zone {
                        labels["zone"] = json!(z);
                    }
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

    fn term(kind: &str, app: &str, key: &str) -> serde_json::Value {
        json!({kind: {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}})
    }

    /// Run PreFilter and Filter on every node: (node, code, reason) for each.
    fn filter_all(p: &Pod, snap: &Snapshot) -> Vec<(String, Code, String)> {
        let pl = InterPodAffinity;
        let mut st = CycleState::default();
        let pre = pl.pre_filter(&mut st, p, snap);
        snap.nodes
            .iter()
            .map(|n| {
                let s = if pre.code == Code::Skip {
                    Status::success()
                } else {
                    pl.filter(&st, p, n)
                };
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
    fn required_affinity_and_anti_affinity() {
        let db = labelled("db", json!({"app": "db"}), json!(null));
        let other_ns = Arc::new(pod(
            json!({"metadata": {"name": "db2", "namespace": "elsewhere", "labels": {"app": "db"}}, "spec": {"containers": []}}),
        ));
        let snap = cluster(vec![
            ("a1", Some("a"), vec![]),
            ("a2", Some("a"), vec![other_ns]),
            ("b1", Some("b"), vec![db]),
            ("b2", Some("b"), vec![]),
            ("nolabel", None, vec![]),
        ]);
        struct Case {
            name: &'static str,
            affinity: serde_json::Value,
            feasible: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "affinity to the db's zone",
                affinity: term("podAffinity", "db", "zone"),
                feasible: vec!["b1", "b2"],
            },
            Case {
                name: "affinity nobody matches: nowhere",
                affinity: term("podAffinity", "cache", "zone"),
                feasible: vec![],
            },
            Case {
                name: "anti-affinity per zone (the db in another namespace does not count)",
                affinity: term("podAntiAffinity", "db", "zone"),
                feasible: vec!["a1", "a2", "nolabel"],
            },
            Case {
                name: "anti-affinity per host",
                affinity: term("podAntiAffinity", "db", "kubernetes.io/hostname"),
                feasible: vec!["a1", "a2", "b2", "nolabel"],
            },
            Case {
                name: "all namespaces with namespaceSelector {}",
                affinity: json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "db"}}, "namespaceSelector": {}, "topologyKey": "kubernetes.io/hostname"}]}}),
                feasible: vec!["a1", "b2", "nolabel"],
            },
        ];
        for c in cases {
            let p = labelled("new", json!({"app": "web"}), c.affinity);
            assert_eq!(feasible(&p, &snap), c.feasible, "{}", c.name);
        }
        // the reasons and codes, as upstream
        let p = labelled(
            "new",
            json!({"app": "web"}),
            term("podAffinity", "db", "zone"),
        );
        let out = filter_all(&p, &snap);
        assert!(out.contains(&(
            "a1".into(),
            Code::UnschedulableAndUnresolvable,
            REASON_AFFINITY.into()
        )));
        assert!(
            out.contains(&(
                "nolabel".into(),
                Code::UnschedulableAndUnresolvable,
                REASON_AFFINITY.into()
            )),
            "a node without the topology label fails affinity"
        );
        let p = labelled(
            "new",
            json!({"app": "web"}),
            term("podAntiAffinity", "db", "zone"),
        );
        assert!(filter_all(&p, &snap).contains(&(
            "b2".into(),
            Code::Unschedulable,
            REASON_ANTI_AFFINITY.into()
        )));
    }

    #[test]
    fn self_affinity_lets_the_first_pod_in() {
        let snap = cluster(vec![
            ("a1", Some("a"), vec![]),
            ("b1", Some("b"), vec![]),
            ("nolabel", None, vec![]),
        ]);
        let first = labelled(
            "w1",
            json!({"app": "web"}),
            term("podAffinity", "web", "zone"),
        );
        assert_eq!(feasible(&first, &snap), vec!["a1", "b1"]);
        // a pod that does not match its own term gets no such exception
        let stranger = labelled(
            "s",
            json!({"app": "other"}),
            term("podAffinity", "web", "zone"),
        );
        assert!(feasible(&stranger, &snap).is_empty());
        // once one exists, the rest follow it
        let snap = cluster(vec![
            ("a1", Some("a"), vec![]),
            ("b1", Some("b"), vec![first.clone()]),
        ]);
        let second = labelled(
            "w2",
            json!({"app": "web"}),
            term("podAffinity", "web", "zone"),
        );
        assert_eq!(feasible(&second, &snap), vec!["b1"]);
    }

    #[test]
    fn existing_pods_anti_affinity_is_symmetric() {
        let loner = labelled(
            "loner",
            json!({"app": "loner"}),
            term("podAntiAffinity", "web", "zone"),
        );
        let snap = cluster(vec![
            ("a1", Some("a"), vec![loner]),
            ("a2", Some("a"), vec![]),
            ("b1", Some("b"), vec![]),
        ]);
        // the incoming pod has no terms of its own
        let web = labelled("web", json!({"app": "web"}), json!(null));
        let out = filter_all(&web, &snap);
        assert_eq!(
            out.iter()
                .filter(|(_, c, _)| *c == Code::Success)
                .map(|(n, _, _)| n.as_str())
                .collect::<Vec<_>>(),
            vec!["b1"]
        );
        assert!(out.contains(&(
            "a2".into(),
            Code::Unschedulable,
            REASON_EXISTING_ANTI_AFFINITY.into()
        )));
        // a pod the loner does not select goes anywhere
        let db = labelled("db", json!({"app": "db"}), json!(null));
        assert_eq!(feasible(&db, &snap), vec!["a1", "a2", "b1"]);
    }

    #[test]
    fn skip_without_terms_and_preemption_trial() {
        let plain = labelled("p", json!({"app": "web"}), json!(null));
        let snap = cluster(vec![("a1", Some("a"), vec![plain.clone()])]);
        let pl = InterPodAffinity;
        let mut st = CycleState::default();
        assert_eq!(pl.pre_filter(&mut st, &plain, &snap).code, Code::Skip);
        assert!(pl.filter(&st, &plain, &snap.nodes[0]).is_success());
        let mut st = CycleState::default();
        assert_eq!(
            pl.pre_score(&mut st, &plain, &snap.infos(), &snap).code,
            Code::Skip
        );

        // anti-affinity fails on a1 while `plain` runs there, passes once it is gone
        let anti = labelled(
            "x",
            json!({"app": "x"}),
            term("podAntiAffinity", "web", "zone"),
        );
        let mut st = CycleState::default();
        assert!(pl.pre_filter(&mut st, &anti, &snap).is_success());
        assert_eq!(
            pl.filter(&st, &anti, &snap.nodes[0]).code,
            Code::Unschedulable
        );
        let without = node_info(snap.nodes[0].node.clone(), Vec::new());
        assert!(pl.filter(&st, &anti, &without).is_success());
    }

    #[test]
    fn memo_follows_changed_nodes() {
        let pl = InterPodAffinity;
        let loner = labelled(
            "l",
            json!({"app": "l"}),
            term("podAntiAffinity", "web", "zone"),
        );
        let snap = cluster(vec![("a1", Some("a"), vec![]), ("b1", Some("b"), vec![])]);
        assert_eq!(pl.nodes_with_terms(&snap), (vec![], vec![]));
        let snap = cluster(vec![
            ("a1", Some("a"), vec![]),
            ("b1", Some("b"), vec![loner]),
        ]);
        assert_eq!(pl.nodes_with_terms(&snap), (vec![1], vec![1]));
        let snap2 = Snapshot::from_nodes(vec![snap.nodes[1].clone()]);
        assert_eq!(pl.nodes_with_terms(&snap2), (vec![0], vec![0]));
    }

    /// Run PreScore, Score and normalize over every node of the snapshot.
    fn scores(p: &Pod, snap: &Snapshot) -> Vec<i64> {
        let pl = InterPodAffinity;
        let mut st = CycleState::default();
        pl.pre_score(&mut st, p, &snap.infos(), snap);
        let mut s: Vec<i64> = snap
            .nodes
            .iter()
            .map(|n| pl.score(&st, p, n).expect("score"))
            .collect();
        pl.normalize(&st, p, &mut s);
        s
    }

    #[test]
    fn preferred_terms_order_nodes() {
        let db = labelled("db", json!({"app": "db"}), json!(null));
        let cache = labelled("cache", json!({"app": "cache"}), json!(null));
        let snap = cluster(vec![
            ("a1", Some("a"), vec![db]),
            ("b1", Some("b"), vec![cache]),
            ("c1", Some("c"), vec![]),
        ]);
        let p = labelled(
            "web",
            json!({"app": "web"}),
            json!({
                "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 5, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}}]}
            }),
        );
        // raw: a 10, b -5, c 0 -> min-max
        assert_eq!(scores(&p, &snap), vec![100, 0, 33]);

        // symmetric: an existing pod preferring pods like the incoming one, and one requiring them
        let fan = labelled(
            "fan",
            json!({"app": "fan"}),
            json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}}]}}),
        );
        let needy = labelled(
            "needy",
            json!({"app": "needy"}),
            term("podAffinity", "web", "zone"),
        );
        let hater = labelled(
            "hater",
            json!({"app": "hater"}),
            json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 20, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}}]}}),
        );
        let snap = cluster(vec![
            ("a1", Some("a"), vec![fan]),
            ("b1", Some("b"), vec![needy]),
            ("c1", Some("c"), vec![hater]),
            ("nolabel", None, vec![]),
        ]);
        let plain = labelled("web", json!({"app": "web"}), json!(null));
        // raw: a 50, b 1 (hard weight), c -20, nolabel 0
        assert_eq!(scores(&plain, &snap), vec![100, 30, 0, 28]);
    }
}
