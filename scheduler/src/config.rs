//! `--config`: a KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1),
//! the parts this scheduler honours: percentageOfNodesToScore, parallelism, the first
//! profile's schedulerName, score plugins disabled or re-weighted, and the
//! NodeResourcesFit scoring strategy.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone)]
pub struct ProfileConfig {
    pub scheduler_name: String,
    pub disabled: Vec<String>,
    pub weights: BTreeMap<String, i64>,
    pub most_allocated: bool,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            scheduler_name: "default-scheduler".into(),
            disabled: Vec::new(),
            weights: BTreeMap::new(),
            most_allocated: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub percentage_of_nodes_to_score: u32,
    /// threads filtering nodes in parallel (upstream's default is 16)
    pub parallelism: usize,
    pub profile: ProfileConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            percentage_of_nodes_to_score: 0,
            parallelism: 16,
            profile: ProfileConfig::default(),
        }
    }
}

pub fn parse(text: &str) -> Result<SchedulerConfig, String> {
    let v: Value = serde_yaml::from_str(text)
        .map_err(|e| format!("parsing the scheduler configuration: {e}"))?;
    match (v["apiVersion"].as_str(), v["kind"].as_str()) {
        (Some("kubescheduler.config.k8s.io/v1"), Some("KubeSchedulerConfiguration")) => {}
        (av, k) => return Err(format!("unsupported configuration {av:?} {k:?}: want kubescheduler.config.k8s.io/v1 KubeSchedulerConfiguration")),
    }
    let mut cfg = SchedulerConfig {
        percentage_of_nodes_to_score: v["percentageOfNodesToScore"].as_u64().unwrap_or(0).min(100)
            as u32,
        ..Default::default()
    };
    if let Some(p) = v.get("parallelism").filter(|p| !p.is_null()) {
        match p.as_u64() {
            Some(n) if n > 0 => cfg.parallelism = n as usize,
            _ => {
                return Err(format!(
                    "parallelism: Invalid value: {p}: should be an integer value greater than zero"
                ))
            }
        }
    }
    let profiles = v["profiles"].as_array().cloned().unwrap_or_default();
    if profiles.len() > 1 {
        return Err("only one profile is supported".into());
    }
    if let Some(p) = profiles.first() {
        if let Some(n) = p["schedulerName"].as_str() {
            cfg.profile.scheduler_name = n.to_string();
        }
        for point in ["multiPoint", "score", "filter"] {
            for d in p["plugins"][point]["disabled"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(n) = d["name"].as_str() {
                    cfg.profile.disabled.push(n.to_string());
                }
            }
            for e in p["plugins"][point]["enabled"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let (Some(n), Some(w)) = (e["name"].as_str(), e["weight"].as_i64()) {
                    cfg.profile.weights.insert(n.to_string(), w);
                }
            }
        }
        for pc in p["pluginConfig"].as_array().into_iter().flatten() {
            if pc["name"] == "NodeResourcesFit"
                && pc["args"]["scoringStrategy"]["type"] == "MostAllocated"
            {
                cfg.profile.most_allocated = true;
            }
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_profile() {
        let cfg = parse(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\npercentageOfNodesToScore: 30\nprofiles:\n- schedulerName: bin-packer\n  plugins:\n    score:\n      disabled: [{name: TaintToleration}]\n      enabled: [{name: NodeResourcesFit, weight: 5}]\n  pluginConfig:\n  - name: NodeResourcesFit\n    args: {scoringStrategy: {type: MostAllocated}}\n",
        )
        .expect("config");
        assert_eq!(cfg.percentage_of_nodes_to_score, 30);
        assert_eq!(cfg.profile.scheduler_name, "bin-packer");
        assert_eq!(cfg.profile.disabled, vec!["TaintToleration"]);
        assert_eq!(cfg.profile.weights.get("NodeResourcesFit"), Some(&5));
        assert!(cfg.profile.most_allocated);
        assert!(parse("kind: Other").is_err());
    }
}
