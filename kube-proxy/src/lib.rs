//! kube-proxy in nftables mode: `rules` computes the desired tables as pure
//! data, `proxier` keeps the kernel in step with the cluster, `config` reads
//! upstream's flags and KubeProxyConfiguration.

pub mod config;
pub mod netlink;
pub mod proxier;
pub mod rules;
