//! Pod networking through the standard CNI plugins (CNI spec 1.0.0): a
//! network list of `bridge` (with `host-local` IPAM over the node's podCIDR)
//! and, for pods with hostPorts, `portmap`. Plugins run as child processes of
//! the kubelet, so the bridge lives in the kubelet's network namespace (the
//! node's). No masquerade: pod traffic never leaves the cluster's networks.
//!
//! ADD runs the plugins in order, each given the previous result; DEL runs
//! them in reverse with the cached result. Results are cached per pod under
//! `<root-dir>/cni/results/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

pub const NETWORK_NAME: &str = "ironkube";
pub const CNI_VERSION: &str = "1.0.0";

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI plugin {plugin} {command}: {message}")]
    Plugin {
        plugin: String,
        command: &'static str,
        message: String,
    },
    #[error("CNI: {0}")]
    Other(String),
}

/// A hostPort mapping, in the portmap plugin's runtimeConfig shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    pub protocol: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub host_ip: String,
}

#[derive(Debug, Clone)]
pub struct Cni {
    pub bin_dir: PathBuf,
    pub root: PathBuf,
    pub pod_cidr: String,
    pub bridge: String,
}

impl Cni {
    pub fn new(bin_dir: PathBuf, root: &Path, pod_cidr: String) -> Cni {
        Cni {
            bin_dir,
            root: root.join("cni"),
            pod_cidr,
            bridge: "cni0".into(),
        }
    }

    /// The network list the kubelet runs.
    pub fn plugins(&self, ports: &[PortMapping]) -> Vec<Value> {
        let mut v = vec![json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": self.pod_cidr }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": self.root.join("networks").display().to_string(),
            }
        })];
        if !ports.is_empty() {
            v.push(json!({
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true,
                "runtimeConfig": { "portMappings": ports },
            }));
        }
        v
    }

    fn result_path(&self, uid: &str) -> PathBuf {
        self.root.join("results").join(format!("{uid}.json"))
    }

    /// Attach the pod's namespace; returns its IP addresses (without prefix).
    pub async fn add(
        &self,
        uid: &str,
        netns: &Path,
        ports: &[PortMapping],
    ) -> Result<Vec<String>, CniError> {
        let plugins = self.plugins(ports);
        let mut prev: Option<Value> = None;
        for p in &plugins {
            let out = self.exec("ADD", p, uid, netns, prev.as_ref()).await?;
            prev = Some(out);
        }
        let result = prev.unwrap_or(Value::Null);
        let cache = json!({ "plugins": plugins, "result": result });
        let path = self.result_path(uid);
        if let Some(d) = path.parent() {
            let _ = tokio::fs::create_dir_all(d).await;
        }
        tokio::fs::write(&path, cache.to_string())
            .await
            .map_err(|e| {
                CniError::Other(format!("caching the result in {}: {e}", path.display()))
            })?;
        Ok(ips_of(&result))
    }

    /// Detach the pod; a pod with no cached result is detached from the bridge alone.
    pub async fn del(&self, uid: &str, netns: &Path) -> Result<(), CniError> {
        let path = self.result_path(uid);
        let cached: Option<Value> = tokio::fs::read(&path)
            .await
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok());
        let (plugins, result) = match cached {
            Some(c) => (
                c.get("plugins")
                    .and_then(|p| p.as_array().cloned())
                    .unwrap_or_else(|| self.plugins(&[])),
                c.get("result").cloned(),
            ),
            None => (self.plugins(&[]), None),
        };
        let mut first_err = None;
        for p in plugins.iter().rev() {
            if let Err(e) = self.exec("DEL", p, uid, netns, result.as_ref()).await {
                first_err.get_or_insert(e);
            }
        }
        let _ = tokio::fs::remove_file(&path).await;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn exec(
        &self,
        command: &'static str,
        plugin: &Value,
        uid: &str,
        netns: &Path,
        prev: Option<&Value>,
    ) -> Result<Value, CniError> {
        let typ = plugin
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_string();
        let mut conf = plugin.clone();
        if let Some(o) = conf.as_object_mut() {
            o.insert("cniVersion".into(), json!(CNI_VERSION));
            o.insert("name".into(), json!(NETWORK_NAME));
            if let Some(prev) = prev {
                if !prev.is_null() {
                    o.insert("prevResult".into(), prev.clone());
                }
            }
        }
        let err = |message: String| CniError::Plugin {
            plugin: typ.clone(),
            command,
            message,
        };
        let mut child = tokio::process::Command::new(self.bin_dir.join(&typ))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", uid)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.bin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                err(format!(
                    "running {}: {e}",
                    self.bin_dir.join(&typ).display()
                ))
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(conf.to_string().as_bytes())
                .await
                .map_err(|e| err(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| err(e.to_string()))?;
        let body: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !out.status.success() {
            let msg = body
                .get("msg")
                .and_then(|m| m.as_str())
                .map(|m| {
                    let details = body.get("details").and_then(|d| d.as_str()).unwrap_or("");
                    if details.is_empty() {
                        m.to_string()
                    } else {
                        format!("{m}: {details}")
                    }
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
            return Err(err(msg));
        }
        Ok(body)
    }
}

/// The addresses (without prefix length) of a CNI result.
pub fn ips_of(result: &Value) -> Vec<String> {
    result
        .get("ips")
        .and_then(|i| i.as_array())
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip.get("address").and_then(|a| a.as_str()))
                .map(|a| a.split('/').next().unwrap_or(a).to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_addresses() {
        let r = json!({"cniVersion":"1.0.0","ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":2}]});
        assert_eq!(ips_of(&r), vec!["10.244.1.5".to_string()]);
        assert!(ips_of(&Value::Null).is_empty());
    }

    #[test]
    fn portmap_only_with_host_ports() {
        let c = Cni::new(
            "/usr/lib/cni".into(),
            Path::new("/var/lib/kubelet"),
            "10.244.1.0/24".into(),
        );
        assert_eq!(c.plugins(&[]).len(), 1);
        let p = PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        };
        let v = c.plugins(&[p]);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1]["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert_eq!(v[0]["ipMasq"], false);
    }
}
