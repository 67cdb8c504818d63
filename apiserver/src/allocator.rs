//! ClusterIP and NodePort allocation. The bitmaps live in etcd under
//! `<prefix>/ranges/` (as upstream's RangeAllocation objects) and every change is
//! compare-and-swap, so several apiservers never hand out the same IP or port.

use std::net::Ipv4Addr;

use base64::Engine;
use rand::Rng;
use serde_json::json;

use crate::storage::{Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("provided {what} is already allocated")]
    Taken { what: &'static str },
    #[error("provided {what} is not in the valid range. The range of valid {what}s is {range}")]
    OutOfRange { what: &'static str, range: String },
    #[error("range is full")]
    Full,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A contiguous range of values, numbered 0..size, stored as a bitmap at `key`.
#[derive(Debug, Clone)]
pub struct Range {
    key: String,
    what: &'static str,
    spec: String,
    size: usize,
}

impl Range {
    /// Service IPs: offsets 1..size-1 of the CIDR (network and broadcast excluded).
    pub fn service_ips(prefix: &str, net: Ipv4Addr, bits: u8) -> Range {
        Range {
            key: format!("{prefix}/ranges/serviceips"),
            what: "IP",
            spec: format!("{net}/{bits}"),
            size: 1usize << (32 - bits),
        }
    }

    pub fn node_ports(prefix: &str, lo: u16, hi: u16) -> Range {
        Range {
            key: format!("{prefix}/ranges/servicenodeports"),
            what: "port",
            spec: format!("{lo}-{hi}"),
            size: (hi - lo) as usize + 1,
        }
    }

    fn ip_base(&self) -> Option<u32> {
        let (ip, _) = self.spec.split_once('/')?;
        ip.parse::<Ipv4Addr>().ok().map(u32::from)
    }

    fn port_base(&self) -> Option<u32> {
        self.spec.split_once('-')?.0.parse().ok()
    }

    /// The offset of a value in this range, if it is a valid allocatable value.
    fn offset(&self, value: &str) -> Result<usize, AllocError> {
        let out = || AllocError::OutOfRange {
            what: self.what,
            range: self.spec.clone(),
        };
        let off = if self.what == "IP" {
            let ip: Ipv4Addr = value.parse().map_err(|_| out())?;
            let base = self.ip_base().ok_or_else(out)?;
            let off = u32::from(ip).checked_sub(base).ok_or_else(out)? as usize;
            if off == 0 || off >= self.size - 1 {
                return Err(out());
            }
            off
        } else {
            let p: u32 = value.parse().map_err(|_| out())?;
            p.checked_sub(self.port_base().ok_or_else(out)?)
                .ok_or_else(out)? as usize
        };
        if off >= self.size {
            return Err(out());
        }
        Ok(off)
    }

    fn value(&self, off: usize) -> String {
        if self.what == "IP" {
            Ipv4Addr::from(self.ip_base().unwrap_or(0) + off as u32).to_string()
        } else {
            (self.port_base().unwrap_or(0) + off as u32).to_string()
        }
    }

    /// The first usable value (the `kubernetes` Service's IP).
    pub fn first(&self) -> String {
        self.value(1)
    }

    fn allocatable(&self) -> std::ops::Range<usize> {
        if self.what == "IP" {
            1..self.size - 1
        } else {
            0..self.size
        }
    }

    /// Read-modify-CAS the bitmap until it sticks.
    async fn modify<T>(
        &self,
        storage: &Storage,
        mut change: impl FnMut(&mut Vec<u8>) -> Result<T, AllocError>,
    ) -> Result<T, AllocError> {
        for _ in 0..64 {
            let cur = storage.get(&self.key).await?;
            let mut bits = match &cur {
                Some(kv) => decode(&kv.value).unwrap_or_default(),
                None => Vec::new(),
            };
            bits.resize(self.size.div_ceil(8), 0);
            let out = change(&mut bits)?;
            let doc = json!({
                "kind": "RangeAllocation",
                "apiVersion": "v1",
                "metadata": {"creationTimestamp": null},
                "range": self.spec,
                "data": base64::engine::general_purpose::STANDARD.encode(&bits),
            });
            let body = serde_json::to_vec(&doc).map_err(|e| StorageError::Etcd(e.to_string()))?;
            let res = match &cur {
                Some(kv) => storage.update(&self.key, body, kv.mod_revision, None).await,
                None => storage.create(&self.key, body, None).await,
            };
            match res {
                Ok(_) => return Ok(out),
                Err(
                    StorageError::Conflict { .. }
                    | StorageError::AlreadyExists { .. }
                    | StorageError::NotFound { .. },
                ) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StorageError::Etcd(format!("too much contention on {}", self.key)).into())
    }

    /// Allocate `want` if given, else any free value.
    pub async fn allocate(
        &self,
        storage: &Storage,
        want: Option<&str>,
    ) -> Result<String, AllocError> {
        let fixed = want.map(|w| self.offset(w)).transpose()?;
        let span = self.allocatable();
        let off = self
            .modify(storage, |bits| {
                let off = match fixed {
                    Some(o) => {
                        if get(bits, o) {
                            return Err(AllocError::Taken { what: self.what });
                        }
                        o
                    }
                    None => {
                        let n = span.len();
                        let start = rand::rng().random_range(0..n.max(1));
                        (0..n)
                            .map(|i| span.start + (start + i) % n)
                            // keep the first IP for the `kubernetes` Service
                            .find(|&o| {
                                let reserved = self.what == "IP" && o == 1;
                                !get(bits, o) && !reserved
                            })
                            .ok_or(AllocError::Full)?
                    }
                };
                set(bits, off, true);
                Ok(off)
            })
            .await?;
        Ok(self.value(off))
    }

    pub async fn release(&self, storage: &Storage, value: &str) -> Result<(), AllocError> {
        let Ok(off) = self.offset(value) else {
            return Ok(());
        };
        self.modify(storage, |bits| {
            set(bits, off, false);
            Ok(())
        })
        .await
    }
}

fn decode(value: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    base64::engine::general_purpose::STANDARD
        .decode(v["data"].as_str()?)
        .ok()
}

fn get(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

fn set(bits: &mut [u8], i: usize, on: bool) {
    if let Some(b) = bits.get_mut(i / 8) {
        if on {
            *b |= 1 << (i % 8);
        } else {
            *b &= !(1 << (i % 8));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        let r = Range::service_ips("/registry", Ipv4Addr::new(10, 0, 0, 0), 24);
        assert_eq!(r.offset("10.0.0.1").ok(), Some(1));
        assert!(r.offset("10.0.0.0").is_err());
        assert!(r.offset("10.0.0.255").is_err());
        assert!(r.offset("10.0.1.1").is_err());
        assert_eq!(r.value(10), "10.0.0.10");
        assert_eq!(r.first(), "10.0.0.1");
        let p = Range::node_ports("/registry", 30000, 32767);
        assert_eq!(p.offset("30000").ok(), Some(0));
        assert!(p.offset("29999").is_err());
        assert!(p.offset("32768").is_err());
        assert_eq!(p.value(5), "30005");
    }

    #[test]
    fn bitmap() {
        let mut b = vec![0u8; 4];
        set(&mut b, 9, true);
        assert!(get(&b, 9));
        assert!(!get(&b, 8));
        set(&mut b, 9, false);
        assert!(!get(&b, 9));
        assert!(!get(&b, 1000));
    }
}
