//! The matching rules the scheduler and the controllers share: label
//! selectors (matchLabels + matchExpressions), node selector terms
//! (matchExpressions on labels, matchFields on metadata.name), and
//! tolerations against taints, as upstream defines them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Does a label selector match these labels? `matchLabels` and
/// `matchExpressions` are ANDed; an empty selector matches everything, an
/// unknown operator nothing.
pub fn label_selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    sel.match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel.match_expressions.iter().flatten().all(|r| {
            let vals = r.values.as_deref().unwrap_or_default();
            let value = labels.get(&r.key);
            match r.operator.as_str() {
                "In" => value.is_some_and(|v| vals.contains(v)),
                "NotIn" => value.is_none_or(|v| !vals.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// One node selector requirement against a label (or field) value.
pub fn node_requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let vals = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| vals.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !vals.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                vals.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Does a node selector term match a node? An empty term matches nothing.
pub fn node_term_matches(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    name: &str,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| node_requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && node_requirement_matches(r, Some(name)))
}

/// Does `tol` tolerate `taint` (upstream's ToleratesTaint)? An empty key is
/// only a wildcard with the Exists operator.
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = tol.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => tol
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            tol.key.as_deref() == Some(taint.key.as_str())
                && tol.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
    }
}

/// Does any of `tols` tolerate `taint`?
pub fn tolerated(tols: &[Toleration], taint: &Taint) -> bool {
    tols.iter().any(|t| tolerates(t, taint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: serde_json::Value) -> BTreeMap<String, String> {
        serde_json::from_value(v).expect("labels")
    }

    #[test]
    fn label_selectors() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                 {"key": "canary", "operator": "DoesNotExist"}],
        }))
        .expect("selector");
        assert!(label_selector_matches(
            &sel,
            &labels(json!({"app": "web", "tier": "a"}))
        ));
        assert!(!label_selector_matches(
            &sel,
            &labels(json!({"app": "web", "tier": "c"}))
        ));
        assert!(!label_selector_matches(&sel, &BTreeMap::new()));
        assert!(label_selector_matches(
            &LabelSelector::default(),
            &BTreeMap::new()
        ));
    }

    #[test]
    fn node_terms() {
        let term: NodeSelectorTerm = serde_json::from_value(json!({
            "matchExpressions": [{"key": "cpus", "operator": "Gt", "values": ["4"]}],
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}],
        }))
        .expect("term");
        assert!(node_term_matches(
            &term,
            &labels(json!({"cpus": "8"})),
            "n1"
        ));
        assert!(!node_term_matches(
            &term,
            &labels(json!({"cpus": "2"})),
            "n1"
        ));
        assert!(!node_term_matches(
            &term,
            &labels(json!({"cpus": "8"})),
            "n2"
        ));
        assert!(!node_term_matches(
            &NodeSelectorTerm::default(),
            &BTreeMap::new(),
            "n1"
        ));
    }

    #[test]
    fn tolerations() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let tol =
            |v: serde_json::Value| -> Toleration { serde_json::from_value(v).expect("toleration") };
        assert!(tolerates(&tol(json!({"key": "k", "value": "v"})), &taint));
        assert!(!tolerates(&tol(json!({"key": "k", "value": "w"})), &taint));
        assert!(tolerates(&tol(json!({"operator": "Exists"})), &taint));
        assert!(
            !tolerates(&tol(json!({"value": "v"})), &taint),
            "an empty key needs Exists"
        );
        assert!(!tolerates(
            &tol(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})),
            &taint
        ));
        assert!(tolerated(
            &[
                tol(json!({"key": "x"})),
                tol(json!({"key": "k", "operator": "Exists"}))
            ],
            &taint
        ));
    }
}
