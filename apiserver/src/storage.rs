//! etcd storage: the only code that talks to etcd. Values are JSON objects
//! stored without metadata.resourceVersion; an object's resourceVersion is its
//! key's mod revision, and every write is compare-and-swap on it.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} not found")]
    NotFound { key: String },
    /// The key's mod revision is not the expected one.
    #[error("key {key} was modified (expected revision {expected})")]
    Conflict { key: String, expected: i64 },
    #[error("revision {requested} has been compacted (compacted at {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("etcd: {0}")]
    Etcd(String),
}

impl From<etcd_client::Error> for StorageError {
    fn from(e: etcd_client::Error) -> Self {
        let s = e.to_string();
        if s.contains("required revision has been compacted") {
            return StorageError::Compacted {
                requested: 0,
                compacted: 0,
            };
        }
        StorageError::Etcd(s)
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// TLS material for the etcd client (`--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    pub ca_pem: Option<Vec<u8>>,
    pub cert_pem: Option<Vec<u8>>,
    pub key_pem: Option<Vec<u8>>,
}

/// A key's value and mod revision.
#[derive(Debug, Clone)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// Clients for every `--etcd-servers` endpoint; requests go to the current one
/// and move on to the next when it cannot be reached.
#[derive(Clone)]
pub struct Storage {
    clients: Arc<Vec<Client>>,
    current: Arc<AtomicUsize>,
    /// encryption at rest (identity unless --encryption-provider-config)
    transformer: Arc<crate::encryption::Transformer>,
}

/// Did the request provably never reach etcd (safe to send again, even a write)?
fn not_sent(e: &etcd_client::Error) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    s.contains("connection refused")
        || s.contains("tcp connect error")
        || s.contains("error trying to connect")
}

/// Is etcd unreachable or without a leader (a read may go to another member)?
fn unavailable(e: &etcd_client::Error) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    not_sent(e)
        || s.contains("unavailable")
        || s.contains("transport error")
        || s.contains("no leader")
}

const MAX_MSG: usize = 64 * 1024 * 1024;

impl Storage {
    /// Connect to every endpoint; the client balances and fails over between them.
    pub async fn connect(endpoints: &[String], tls: &EtcdTls) -> StorageResult<Storage> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let uses_tls = endpoints.iter().any(|e| e.starts_with("https://"));
        if uses_tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                t = t.ca_certificate(Certificate::from_pem(ca));
            }
            if let (Some(c), Some(k)) = (&tls.cert_pem, &tls.key_pem) {
                t = t.identity(Identity::from_pem(c, k));
            }
            opts = opts.with_tls(t);
        }
        let mut clients = Vec::new();
        for e in endpoints {
            clients.push(Client::connect([e], Some(opts.clone())).await?);
        }
        Ok(Storage {
            clients: Arc::new(clients),
            current: Arc::new(AtomicUsize::new(0)),
            transformer: Arc::default(),
        })
    }

    /// Values of the configured resources are encrypted on their way to etcd.
    pub fn with_transformer(mut self, t: crate::encryption::Transformer) -> Storage {
        self.transformer = Arc::new(t);
        self
    }

    /// The plain value of a stored one (watch events carry stored values).
    pub fn decrypt(&self, key: &str, stored: &[u8]) -> StorageResult<Vec<u8>> {
        self.transformer
            .decrypt(key, stored)
            .map_err(StorageError::Etcd)
    }

    fn to_kv(&self, kv: &etcd_client::KeyValue) -> StorageResult<Kv> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let value = self.decrypt(&key, kv.value())?;
        Ok(Kv {
            key,
            value,
            mod_revision: kv.mod_revision(),
        })
    }

    fn client(&self) -> (usize, &Client) {
        let i = self.current.load(Ordering::Relaxed) % self.clients.len();
        (i, &self.clients[i])
    }

    /// Send `op` to the current endpoint; on an unreachable endpoint move to the
    /// next and send again when that is safe (`read`, or the request never left).
    async fn call<T, F, Fut>(&self, read: bool, op: F) -> Result<T, etcd_client::Error>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for _ in 0..self.clients.len() {
            let (i, c) = self.client();
            match op(c.clone()).await {
                Err(e) if unavailable(&e) => {
                    if self.clients.len() > 1 {
                        let _ = self.current.compare_exchange(
                            i,
                            (i + 1) % self.clients.len(),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                        tracing::warn!(endpoint = i, error = %e, "etcd endpoint unavailable; trying the next");
                    }
                    let retry = read || not_sent(&e);
                    last = Some(e);
                    if !retry {
                        break;
                    }
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| etcd_client::Error::InvalidArgs("no etcd endpoints".into())))
    }

    /// The current revision of the whole store (a cheap read).
    pub async fn current_revision(&self) -> StorageResult<i64> {
        let resp = self
            .call(true, |c| async move {
                kv(&c)
                    .get("\0", Some(GetOptions::new().with_count_only()))
                    .await
            })
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    pub async fn get(&self, key: &str) -> StorageResult<Option<Kv>> {
        let resp = self
            .call(true, |c| async move { kv(&c).get(key, None).await })
            .await?;
        resp.kvs().first().map(|kv| self.to_kv(kv)).transpose()
    }

    /// One page of a range read: keys from `start` (inclusive) up to `end` (exclusive) at
    /// `revision` (0 = latest). Returns the keys, whether more follow, and the read's revision.
    pub async fn range(
        &self,
        start: &str,
        end: &str,
        revision: i64,
        limit: i64,
    ) -> StorageResult<(Vec<Kv>, bool, i64)> {
        let mut opts = GetOptions::new().with_range(end);
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        if limit > 0 {
            opts = opts.with_limit(limit);
        }
        let resp = self
            .call(true, |c| {
                let opts = opts.clone();
                async move { kv(&c).get(start, Some(opts)).await }
            })
            .await
            .map_err(|e| {
                let err = StorageError::from(e);
                match err {
                    StorageError::Compacted { .. } => StorageError::Compacted {
                        requested: revision,
                        compacted: 0,
                    },
                    other => other,
                }
            })?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| self.to_kv(kv))
            .collect::<StorageResult<Vec<_>>>()?;
        Ok((kvs, resp.more(), rev))
    }

    /// Create `key` only if it does not exist. Returns the new mod revision.
    pub async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<i64>,
    ) -> StorageResult<i64> {
        let put = lease.map(|id| PutOptions::new().with_lease(id));
        let value = self.transformer.encrypt(key, value);
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, put)]);
        let resp = self
            .call(false, |c| {
                let txn = txn.clone();
                async move { kv(&c).txn(txn).await }
            })
            .await?;
        if !resp.succeeded() {
            return Err(StorageError::AlreadyExists {
                key: key.to_string(),
            });
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Replace `key` if its mod revision is still `expected`. Returns the new mod revision.
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
        lease: Option<i64>,
    ) -> StorageResult<i64> {
        let put = lease.map(|id| PutOptions::new().with_lease(id));
        let value = self.transformer.encrypt(key, value);
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, value, put)])
            .or_else([TxnOp::get(key, Some(GetOptions::new().with_count_only()))]);
        let resp = self
            .call(false, |c| {
                let txn = txn.clone();
                async move { kv(&c).txn(txn).await }
            })
            .await?;
        if !resp.succeeded() {
            return Err(conflict_or_missing(key, expected, &resp.op_responses()));
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Delete `key` if its mod revision is still `expected`. Returns the deletion's revision.
    pub async fn delete(&self, key: &str, expected: i64) -> StorageResult<i64> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::delete(key, None::<DeleteOptions>)])
            .or_else([TxnOp::get(key, Some(GetOptions::new().with_count_only()))]);
        let resp = self
            .call(false, |c| {
                let txn = txn.clone();
                async move { kv(&c).txn(txn).await }
            })
            .await?;
        if !resp.succeeded() {
            return Err(conflict_or_missing(key, expected, &resp.op_responses()));
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Write `key` whatever is there, attached to `lease` (master leases).
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: Option<i64>) -> StorageResult<i64> {
        let put = lease.map(|id| PutOptions::new().with_lease(id));
        let value = self.transformer.encrypt(key, value);
        let resp = self
            .call(false, |c| {
                let (value, put) = (value.clone(), put.clone());
                async move { kv(&c).put(key, value, put).await }
            })
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Delete `key` whatever its revision.
    pub async fn remove(&self, key: &str) -> StorageResult<()> {
        self.call(false, |c| async move {
            kv(&c).delete(key, None::<DeleteOptions>).await
        })
        .await?;
        Ok(())
    }

    /// A lease that expires after `ttl` seconds (events' `--event-ttl`).
    pub async fn grant_lease(&self, ttl: i64) -> StorageResult<i64> {
        let resp = self
            .call(
                false,
                |c| async move { c.lease_client().grant(ttl, None).await },
            )
            .await?;
        Ok(resp.id())
    }

    /// Watch every key under `prefix` from `from_rev` (inclusive). Without
    /// previous values: the watch cache holds them, and asking etcd for them
    /// costs it a read of its backend per event.
    pub async fn watch(&self, prefix: &str, from_rev: i64) -> StorageResult<WatchStream> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_progress_notify()
            .with_start_revision(from_rev);
        Ok(self
            .call(true, |c| {
                let opts = opts.clone();
                async move { c.watch_client().watch(prefix, Some(opts)).await }
            })
            .await?)
    }

    /// One compactor round's claim: bump `key`'s version if it is still `expected`.
    /// Returns whether we won, the key's version now, and the store's revision.
    pub async fn claim_compaction(
        &self,
        key: &str,
        expected: i64,
    ) -> StorageResult<(bool, i64, i64)> {
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, "", None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self
            .call(false, |c| {
                let txn = txn.clone();
                async move { kv(&c).txn(txn).await }
            })
            .await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        if resp.succeeded() {
            return Ok((true, expected + 1, rev));
        }
        let version = resp
            .op_responses()
            .iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.version()),
                _ => None,
            })
            .unwrap_or(0);
        Ok((false, version, rev))
    }

    /// Compact history up to `rev` (tests and the compactor).
    pub async fn compact(&self, rev: i64) -> StorageResult<()> {
        self.call(
            true,
            |c| async move { c.kv_client().compact(rev, None).await },
        )
        .await?;
        Ok(())
    }

    /// Is etcd answering? (readyz)
    pub async fn healthy(&self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.current_revision()).await,
            Ok(Ok(_))
        )
    }
}

fn kv(c: &Client) -> etcd_client::KvClient {
    c.kv_client().max_decoding_message_size(MAX_MSG)
}

fn conflict_or_missing(key: &str, expected: i64, ops: &[TxnOpResponse]) -> StorageError {
    let exists = ops
        .iter()
        .any(|op| matches!(op, TxnOpResponse::Get(g) if g.count() > 0));
    if exists {
        StorageError::Conflict {
            key: key.to_string(),
            expected,
        }
    } else {
        StorageError::NotFound {
            key: key.to_string(),
        }
    }
}

/// The end of a prefix range: the prefix with its last byte incremented.
pub fn prefix_end(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    while let Some(last) = b.pop() {
        if last < 0xff {
            b.push(last + 1);
            return String::from_utf8_lossy(&b).into_owned();
        }
    }
    "\0".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/registry/pods/"), "/registry/pods0");
        assert_eq!(prefix_end("a"), "b");
    }
}
