//! ironkube kube-proxy: the nftables proxy mode, as pure rule computation.

pub mod rules;
