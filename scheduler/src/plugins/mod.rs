//! The plugins and the default profile (upstream's default plugin set and score weights).

pub mod core;
pub mod interpod;
pub mod scoring;
pub mod spread;

use std::sync::Arc;

use crate::config::ProfileConfig;
use crate::scheduler::Profile;
use core::{
    NodeAffinity, NodeName, NodePorts, NodeResourcesFit, NodeUnschedulable, TaintToleration,
};

/// Build a profile from the (possibly defaulted) configuration.
pub fn profile(cfg: &ProfileConfig, percentage: u32) -> Profile {
    let on = |name: &str| !cfg.disabled.iter().any(|d| d == name || d == "*");
    let weight = |name: &str, default: i64| cfg.weights.get(name).copied().unwrap_or(default);
    let fit = Arc::new(NodeResourcesFit {
        most_allocated: cfg.most_allocated,
    });
    let mut p = Profile {
        scheduler_name: cfg.scheduler_name.clone(),
        pre_filters: Vec::new(),
        filters: Vec::new(),
        pre_scores: Vec::new(),
        scores: Vec::new(),
        percentage_of_nodes_to_score: percentage,
        pool: None,
    };
    // filters in upstream's order; NodeName, NodeUnschedulable and fit are never off
    p.filters.push(Arc::new(NodeUnschedulable));
    p.filters.push(Arc::new(NodeName));
    if on("TaintToleration") {
        p.filters.push(Arc::new(TaintToleration));
        p.scores
            .push((Arc::new(TaintToleration), weight("TaintToleration", 3)));
    }
    if on("NodeAffinity") {
        p.filters.push(Arc::new(NodeAffinity));
        p.scores
            .push((Arc::new(NodeAffinity), weight("NodeAffinity", 2)));
    }
    if on("NodePorts") {
        p.filters.push(Arc::new(NodePorts));
    }
    p.pre_filters.push(fit.clone());
    p.filters.push(fit.clone());
    if on("NodeResourcesFit") {
        p.scores.push((fit, weight("NodeResourcesFit", 1)));
    }
    if on("PodTopologySpread") {
        let spread = Arc::new(spread::PodTopologySpread);
        p.pre_filters.push(spread.clone());
        p.filters.push(spread.clone());
        p.pre_scores.push(spread.clone());
        p.scores.push((spread, weight("PodTopologySpread", 2)));
    }
    if on("InterPodAffinity") {
        let affinity = Arc::new(interpod::InterPodAffinity);
        p.pre_filters.push(affinity.clone());
        p.filters.push(affinity.clone());
        p.pre_scores.push(affinity.clone());
        p.scores.push((affinity, weight("InterPodAffinity", 2)));
    }
    if on("NodeResourcesBalancedAllocation") {
        p.scores.push((
            Arc::new(scoring::BalancedAllocation),
            weight("NodeResourcesBalancedAllocation", 1),
        ));
    }
    if on("ImageLocality") {
        p.pre_scores.push(Arc::new(scoring::ImageLocality));
        p.scores
            .push((Arc::new(scoring::ImageLocality), weight("ImageLocality", 1)));
    }
    p
}
