//! Command-line flags (upstream's names) and the validated configuration they produce

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::authn::TokenFile;
use crate::storage::EtcdTls;

/// kube-apiserver flags. Flags of upstream that do not apply are accepted where an
/// operator's unit file is likely to carry them, and ignored with a log line.
#[derive(Debug, Parser)]
#[command(name = "kube-apiserver", version = crate::GIT_VERSION, about = "The Kubernetes API server, on etcd")]
pub struct Flags {
    /// etcd servers to connect to (scheme://ip:port), comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub etcd_servers: Vec<String>,
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    #[arg(long)]
    pub etcd_certfile: Option<PathBuf>,
    #[arg(long)]
    pub etcd_keyfile: Option<PathBuf>,
    /// Prefix of every key in etcd.
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    #[arg(long)]
    pub tls_cert_file: PathBuf,
    #[arg(long)]
    pub tls_private_key_file: PathBuf,
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// Bearer tokens `<id>.<secret>` authenticate against the Secrets
    /// `kube-system/bootstrap-token-<id>` (TLS bootstrapping of nodes).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    pub enable_bootstrap_token_auth: bool,
    #[arg(long, default_value = "10.0.0.0/24")]
    pub service_cluster_ip_range: String,
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// The address published to members of the cluster (the `kubernetes` Service's endpoint).
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// How long events are kept (Go duration).
    #[arg(long, default_value = "1h0m0s")]
    pub event_ttl: String,
    /// An EncryptionConfiguration: which resources are encrypted in etcd, with which keys.
    #[arg(long)]
    pub encryption_provider_config: Option<PathBuf>,
    /// Authorizers, in order: AlwaysAllow, AlwaysDeny, Node, RBAC (comma separated).
    #[arg(long, default_value = "AlwaysAllow")]
    pub authorization_mode: String,
    #[arg(long, default_value_t = false)]
    pub allow_privileged: bool,
    /// How often etcd history is compacted (Go duration; 0 turns it off).
    #[arg(long, default_value = "5m0s")]
    pub etcd_compaction_interval: String,
    /// How many recent events the watch cache keeps for watchers resuming from an older resourceVersion.
    #[arg(long, default_value_t = 10_000)]
    pub default_watch_cache_size: usize,
    /// The client certificate the apiserver presents to kubelets (logs, exec, port-forward).
    #[arg(long)]
    pub kubelet_client_certificate: Option<PathBuf>,
    #[arg(long)]
    pub kubelet_client_key: Option<PathBuf>,
    /// The CA of kubelets' serving certificates; without it they are not verified (as upstream).
    #[arg(long)]
    pub kubelet_certificate_authority: Option<PathBuf>,
    /// Which node address reaches a kubelet, in order of preference.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP"
    )]
    pub kubelet_preferred_address_types: Vec<String>,
    /// The `iss` of service-account tokens; the first signs, all are accepted (repeatable).
    #[arg(long)]
    pub service_account_issuer: Vec<String>,
    /// PEM files of keys that verify service-account tokens (public or private keys; repeatable).
    #[arg(long)]
    pub service_account_key_file: Vec<PathBuf>,
    /// The private key that signs service-account tokens (TokenRequest).
    #[arg(long)]
    pub service_account_signing_key_file: Option<PathBuf>,
    /// Audiences the API accepts in tokens (default: the issuers).
    #[arg(long, value_delimiter = ',')]
    pub api_audiences: Vec<String>,
    /// How the `kubernetes` Service's endpoints are kept: `lease` (every live
    /// apiserver renews a 15 s lease in etcd; the endpoints list those alive) or `none`.
    #[arg(long, default_value = "lease")]
    pub endpoint_reconciler_type: String,
    /// On SIGTERM, how long to keep serving with /readyz failing before closing
    /// the listener, so load balancers take this replica out first (Go duration).
    #[arg(long, default_value = "0s")]
    pub shutdown_delay_duration: String,
    /// An audit.k8s.io/v1 Policy: which requests are audited, at which level.
    #[arg(long)]
    pub audit_policy_file: Option<PathBuf>,
    /// Where audit events go, one JSON object per line ("-": stdout).
    #[arg(long)]
    pub audit_log_path: Option<String>,
    /// Days to keep rotated audit logs (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxage: u64,
    /// How many rotated audit logs to keep (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxbackup: usize,
    /// Size in megabytes at which the audit log is rotated (0: never).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxsize: u64,
    /// Format of audit events: json (the only one served).
    #[arg(long, default_value = "json")]
    pub audit_log_format: String,
    /// Log verbosity (0-10), mapped onto tracing levels.
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    pub verbosity: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid --{flag}: {why}")]
    Invalid { flag: &'static str, why: String },
}

/// A validated configuration: everything the server needs, files already read.
#[derive(Debug, Clone)]
pub struct Config {
    pub etcd_servers: Vec<String>,
    pub etcd_tls: EtcdTls,
    pub etcd_prefix: String,
    pub bind_address: IpAddr,
    pub secure_port: u16,
    pub tls_cert_pem: Vec<u8>,
    pub tls_key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
    pub tokens: TokenFile,
    /// --enable-bootstrap-token-auth
    pub bootstrap_token_auth: bool,
    pub service_cidr: (Ipv4Addr, u8),
    pub node_ports: (u16, u16),
    pub advertise_address: IpAddr,
    pub event_ttl: Duration,
    pub watch_cache_size: usize,
    pub compaction_interval: Duration,
    /// keep the `kubernetes` endpoints by master leases (false: `none`)
    pub endpoint_leases: bool,
    pub shutdown_delay: Duration,
    pub kubelets: crate::proxy::KubeletClient,
    /// signs TokenRequest tokens (None: the API answers TokenRequest with an error)
    pub sa_signer: Option<std::sync::Arc<crate::satoken::Signer>>,
    pub sa_verifier: crate::satoken::Verifier,
    pub authorization: Vec<crate::authz::Mode>,
    /// --audit-policy-file with --audit-log-path; None: no auditing
    pub audit: Option<std::sync::Arc<crate::audit::Auditor>>,
    pub encryption: crate::encryption::Transformer,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })
}

impl Flags {
    /// The audit backend of --audit-policy-file and --audit-log-path (both
    /// needed, as upstream: a log path without a policy audits nothing).
    fn auditor(&self) -> Result<Option<std::sync::Arc<crate::audit::Auditor>>, ConfigError> {
        if self.audit_log_format != "json" {
            return Err(ConfigError::Invalid {
                flag: "audit-log-format",
                why: format!("{:?} is not supported (json)", self.audit_log_format),
            });
        }
        let (Some(policy), Some(path)) = (&self.audit_policy_file, &self.audit_log_path) else {
            if self.audit_log_path.is_some() {
                tracing::warn!("--audit-log-path without --audit-policy-file: nothing is audited");
            }
            return Ok(None);
        };
        let text = std::fs::read_to_string(policy).map_err(|source| ConfigError::Read {
            path: policy.clone(),
            source,
        })?;
        let policy = crate::audit::Policy::parse(&text).map_err(|why| ConfigError::Invalid {
            flag: "audit-policy-file",
            why,
        })?;
        Ok(Some(std::sync::Arc::new(crate::audit::Auditor::new(
            policy,
            path,
            self.audit_log_maxsize,
            self.audit_log_maxbackup,
            self.audit_log_maxage,
        ))))
    }
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let invalid = |flag: &'static str, why: String| ConfigError::Invalid { flag, why };
        if self.etcd_servers.is_empty() {
            return Err(invalid(
                "etcd-servers",
                "at least one server is required".into(),
            ));
        }
        let mut tokens = TokenFile::default();
        if let Some(p) = &self.token_auth_file {
            let text = String::from_utf8_lossy(&read(p)?).into_owned();
            tokens =
                TokenFile::parse(&text).map_err(|e| invalid("token-auth-file", e.to_string()))?;
        }
        let mut authorization = Vec::new();
        for m in self
            .authorization_mode
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            let mode = match m {
                "AlwaysAllow" => crate::authz::Mode::AlwaysAllow,
                "AlwaysDeny" => crate::authz::Mode::AlwaysDeny,
                "Node" => crate::authz::Mode::Node,
                "RBAC" => crate::authz::Mode::Rbac,
                other => {
                    return Err(invalid(
                        "authorization-mode",
                        format!("authorization mode {other:?} is not supported (AlwaysAllow, AlwaysDeny, Node, RBAC)"),
                    ))
                }
            };
            if authorization.contains(&mode) {
                return Err(invalid(
                    "authorization-mode",
                    format!("{m} is given more than once"),
                ));
            }
            authorization.push(mode);
        }
        if authorization.is_empty() {
            return Err(invalid(
                "authorization-mode",
                "at least one mode is required".into(),
            ));
        }
        let kubelets = crate::proxy::KubeletClient::new(
            self.kubelet_client_certificate
                .as_ref()
                .map(read)
                .transpose()?
                .as_deref(),
            self.kubelet_client_key
                .as_ref()
                .map(read)
                .transpose()?
                .as_deref(),
            self.kubelet_certificate_authority
                .as_ref()
                .map(read)
                .transpose()?
                .as_deref(),
            self.kubelet_preferred_address_types.clone(),
        )
        .map_err(|why| invalid("kubelet-client-certificate", why))?;
        let issuers = self.service_account_issuer.clone();
        let audiences = if self.api_audiences.is_empty() {
            issuers.clone()
        } else {
            self.api_audiences.clone()
        };
        let mut sa_verifier = crate::satoken::Verifier::new(issuers.clone(), audiences);
        for p in &self.service_account_key_file {
            sa_verifier
                .add_pem(&p.display().to_string(), &read(p)?)
                .map_err(|e| invalid("service-account-key-file", e.to_string()))?;
        }
        let sa_signer = match &self.service_account_signing_key_file {
            Some(p) => {
                let issuer = issuers.first().ok_or_else(|| {
                    invalid(
                        "service-account-issuer",
                        "required with --service-account-signing-key-file".into(),
                    )
                })?;
                let s =
                    crate::satoken::Signer::from_pem(&p.display().to_string(), &read(p)?, issuer)
                        .map_err(|e| invalid("service-account-signing-key-file", e.to_string()))?;
                if sa_verifier.is_empty() {
                    // its own tokens verify with its public half, as upstream defaults
                    sa_verifier
                        .add_pem(&p.display().to_string(), &read(p)?)
                        .map_err(|e| invalid("service-account-signing-key-file", e.to_string()))?;
                }
                Some(std::sync::Arc::new(s))
            }
            None => None,
        };
        let encryption = match &self.encryption_provider_config {
            Some(p) => {
                let text = String::from_utf8_lossy(&read(p)?).into_owned();
                crate::encryption::Transformer::parse(&text, &|name| {
                    let (plural, group) = name.split_once('.').unwrap_or((name, ""));
                    crate::registry::RESOURCES
                        .iter()
                        .find(|r| r.plural == plural && r.group == group)
                        .map(|r| {
                            format!("{}/{}/", self.etcd_prefix.trim_end_matches('/'), r.storage)
                        })
                })
                .map_err(|why| invalid("encryption-provider-config", why))?
            }
            None => Default::default(),
        };
        let audit = self.auditor()?;
        Ok(Config {
            encryption,
            audit,
            authorization,
            kubelets,
            sa_signer,
            sa_verifier,
            etcd_tls: EtcdTls {
                ca_pem: self.etcd_cafile.as_ref().map(read).transpose()?,
                cert_pem: self.etcd_certfile.as_ref().map(read).transpose()?,
                key_pem: self.etcd_keyfile.as_ref().map(read).transpose()?,
            },
            etcd_servers: self.etcd_servers,
            etcd_prefix: self.etcd_prefix.trim_end_matches('/').to_string(),
            bind_address: self.bind_address,
            secure_port: self.secure_port,
            tls_cert_pem: read(&self.tls_cert_file)?,
            tls_key_pem: read(&self.tls_private_key_file)?,
            client_ca_pem: self.client_ca_file.as_ref().map(read).transpose()?,
            tokens,
            bootstrap_token_auth: self.enable_bootstrap_token_auth,
            service_cidr: parse_cidr(&self.service_cluster_ip_range)
                .map_err(|why| invalid("service-cluster-ip-range", why))?,
            node_ports: parse_port_range(&self.service_node_port_range)
                .map_err(|why| invalid("service-node-port-range", why))?,
            advertise_address: self.advertise_address.unwrap_or(match self.bind_address {
                a if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                a => a,
            }),
            event_ttl: parse_duration(&self.event_ttl).map_err(|why| invalid("event-ttl", why))?,
            watch_cache_size: self.default_watch_cache_size.max(1),
            compaction_interval: parse_duration(&self.etcd_compaction_interval)
                .map_err(|why| invalid("etcd-compaction-interval", why))?,
            endpoint_leases: match self.endpoint_reconciler_type.as_str() {
                "lease" => true,
                "none" => false,
                other => {
                    return Err(invalid(
                        "endpoint-reconciler-type",
                        format!("{other:?} is not one of lease, none"),
                    ))
                }
            },
            shutdown_delay: parse_duration(&self.shutdown_delay_duration)
                .map_err(|why| invalid("shutdown-delay-duration", why))?,
        })
    }
}

/// An IPv4 CIDR such as 10.0.0.0/24.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, bits) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a CIDR"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
    let bits: u8 = bits
        .parse()
        .map_err(|_| format!("{bits:?} is not a prefix length"))?;
    if !(8..=30).contains(&bits) {
        return Err(format!("prefix length {bits} must be between 8 and 30"));
    }
    let mask = u32::MAX << (32 - bits);
    Ok((Ipv4Addr::from(u32::from(ip) & mask), bits))
}

pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a range like 30000-32767"))?;
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a port"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a port"))?;
    if a == 0 || a > b {
        return Err(format!("{s:?} is not a valid range"));
    }
    Ok((a, b))
}

/// A Go duration string ("1h0m0s", "90s", "1.5h", "300ms").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("{s:?} is not a duration");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h0m0s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn cidrs_and_ranges() {
        assert_eq!(
            parse_cidr("10.0.0.7/24"),
            Ok((Ipv4Addr::new(10, 0, 0, 0), 24))
        );
        assert!(parse_cidr("10.0.0.0").is_err());
        assert!(parse_cidr("10.0.0.0/31").is_err());
        assert_eq!(parse_port_range("30000-32767"), Ok((30000, 32767)));
        assert!(parse_port_range("32767-30000").is_err());
    }
}
