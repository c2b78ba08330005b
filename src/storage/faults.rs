//! Fault injection, a test tool: a [`Storage`] wrapper that makes a seeded share
//! of operations fail the way a remote store fails after its own retries gave up:
//! listings that break off midway, reads answered with a server error, throttling
//! or a timeout, reads cut short, delete batches that fail for some keys, fail as
//! a whole, or fail after the store applied them (the answer was lost).
//!
//! It is public so that integration tests can wrap any backend; registry-gc
//! never uses it on its own. Every decision is a pure function of the seed, the
//! operation, its key and how many times that key was asked for, so a run is
//! reproducible whatever order concurrent requests arrive in, and a retried
//! request draws again (as a transient fault would).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::wrapper::StorageWrapper;
use super::{DirListing, FirstPage, ObjectMeta, Probe, Storage, StorageError};

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// A listing stream yields some entries, then an error (connection reset).
    ListBreaksOff,
    /// A listing (stream, one level, or first page) fails before any entry.
    ListFails,
    /// A read answered 500/503 after the store's retries.
    GetServerError,
    /// A read throttled (503 SlowDown, 429) past the store's retry budget.
    GetThrottled,
    /// A read that timed out.
    GetTimeout,
    /// A read that returns fewer bytes than the object holds, as a body cut
    /// short would if the framing did not catch it. Only a blob's content can be
    /// checked against its name; a cut link reads as a junk link.
    GetCutShort,
    /// Some keys of a delete batch fail (per-key errors in a DeleteObjects answer);
    /// the others are deleted.
    DeleteSomeKeys,
    /// A whole delete request fails (500, 503 SlowDown): nothing deleted.
    DeleteBatchFails,
    /// A whole delete request reports failure after the store deleted its keys
    /// (the answer was lost): everything deleted, every key reported failed.
    DeleteAnswerLost,
}

impl Fault {
    pub const LISTING: [Fault; 2] = [Fault::ListBreaksOff, Fault::ListFails];
    pub const READS: [Fault; 3] = [
        Fault::GetServerError,
        Fault::GetThrottled,
        Fault::GetTimeout,
    ];
    pub const DELETES: [Fault; 3] = [
        Fault::DeleteSomeKeys,
        Fault::DeleteBatchFails,
        Fault::DeleteAnswerLost,
    ];

    fn is_list(self) -> bool {
        matches!(self, Fault::ListBreaksOff | Fault::ListFails)
    }
    fn is_get(self) -> bool {
        matches!(
            self,
            Fault::GetServerError | Fault::GetThrottled | Fault::GetTimeout | Fault::GetCutShort
        )
    }
    fn is_delete(self) -> bool {
        matches!(
            self,
            Fault::DeleteSomeKeys | Fault::DeleteBatchFails | Fault::DeleteAnswerLost
        )
    }
}

/// Which faults, how often, from which seed.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    pub seed: u64,
    /// Share of eligible operations that fail, 0.0 to 1.0.
    pub rate: f64,
    /// The faults to draw from (an operation's fault is one of those that apply to it).
    pub faults: Vec<Fault>,
    /// Keys per delete batch instead of the backend's, so that a small tree
    /// still has many batches to fail.
    pub delete_batch: Option<usize>,
}

/// The faults injected so far, each with the key or prefix it hit.
#[derive(Debug, Default)]
pub struct FaultLog {
    entries: Mutex<Vec<(Fault, String)>>,
}

impl FaultLog {
    pub fn entries(&self) -> Vec<(Fault, String)> {
        self.entries.lock().unwrap().clone()
    }
    pub fn count(&self, f: Fault) -> usize {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .filter(|(g, _)| *g == f)
            .count()
    }
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn push(&self, f: Fault, key: &str) {
        self.entries.lock().unwrap().push((f, key.to_string()));
    }
}

pub struct FaultyStorage {
    inner: Box<dyn Storage>,
    config: FaultConfig,
    /// Calls so far per (operation, key), so that a retry draws again.
    calls: Mutex<HashMap<(u8, String), u64>>,
    log: Arc<FaultLog>,
}

impl std::fmt::Debug for FaultyStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStorage")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit value from any input.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a, so that draws do not depend on std's randomly keyed hasher.
fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

const OP_LIST: u8 = 0;
const OP_LIST_DIR: u8 = 1;
const OP_FIRST_PAGE: u8 = 2;
const OP_GET: u8 = 3;
const OP_DELETE: u8 = 4;
const OP_STAT: u8 = 5;

impl FaultyStorage {
    pub fn new(inner: Box<dyn Storage>, config: FaultConfig) -> Self {
        FaultyStorage {
            inner,
            config,
            calls: Mutex::new(HashMap::new()),
            log: Arc::new(FaultLog::default()),
        }
    }

    /// The log of injected faults, to keep after the storage is handed to a run.
    pub fn log(&self) -> Arc<FaultLog> {
        self.log.clone()
    }

    /// A deterministic random value for the `n`th call of `op` on `key`.
    fn draw(&self, op: u8, key: &str) -> u64 {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            let c = calls.entry((op, key.to_string())).or_insert(0);
            *c += 1;
            *c
        };
        mix(self.config.seed ^ mix(hash_str(key) ^ mix(((op as u64) << 56) ^ n)))
    }

    /// The fault (if any) for this call, among those `applies` accepts.
    fn pick(&self, op: u8, key: &str, applies: fn(Fault) -> bool) -> Option<(Fault, u64)> {
        let eligible: Vec<Fault> = self
            .config
            .faults
            .iter()
            .copied()
            .filter(|f| applies(*f))
            .collect();
        if eligible.is_empty() {
            return None;
        }
        let r = self.draw(op, key);
        // the top 53 bits as a uniform value in [0, 1)
        let u = (r >> 11) as f64 / (1u64 << 53) as f64;
        if u >= self.config.rate {
            return None;
        }
        let f = eligible[(r % eligible.len() as u64) as usize];
        self.log.push(f, key);
        Some((f, mix(r)))
    }

    fn remote(&self, key: &str, reason: &str) -> StorageError {
        StorageError::Remote {
            key: key.to_string(),
            reason: format!("injected fault: {reason}"),
        }
    }

    /// `listing` of `prefix`, or, when a listing fault is picked, some of its
    /// entries (as many as it has, up to a random count; none for `ListFails`)
    /// and then an error.
    fn faulty_listing<'a>(
        &'a self,
        prefix: &str,
        listing: BoxStream<'a, Result<ObjectMeta, StorageError>>,
    ) -> BoxStream<'a, Result<ObjectMeta, StorageError>> {
        let Some((fault, r)) = self.pick(OP_LIST, prefix, Fault::is_list) else {
            return listing;
        };
        let err = self.remote(prefix, "connection reset by peer while listing");
        let keep = if fault == Fault::ListFails {
            0
        } else {
            (r % 64) as usize
        };
        listing
            .take(keep)
            .chain(futures::stream::once(async move { Err(err) }))
            .boxed()
    }
}

/// Faults on a collection's list, read and delete path. Reads streamed for
/// fsck, and the writes and moves of a quarantine run, pass through untouched.
#[async_trait]
impl StorageWrapper for FaultyStorage {
    fn inner(&self) -> &dyn Storage {
        self.inner.as_ref()
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        self.faulty_listing(prefix, self.inner.list(prefix))
    }

    fn list_probing(
        &self,
        prefix: &str,
        probe: Probe,
    ) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        self.faulty_listing(prefix, self.inner.list_probing(prefix, probe))
    }

    async fn list_dir(&self, prefix: &str) -> Result<DirListing, StorageError> {
        if self.pick(OP_LIST_DIR, prefix, Fault::is_list).is_some() {
            return Err(self.remote(prefix, "500 Internal Server Error listing one level"));
        }
        self.inner.list_dir(prefix).await
    }

    async fn list_first_page(&self, prefix: &str) -> Result<Option<FirstPage<'_>>, StorageError> {
        if self.inner.list_page_size().is_some()
            && self.pick(OP_FIRST_PAGE, prefix, Fault::is_list).is_some()
        {
            return Err(self.remote(prefix, "500 Internal Server Error listing the first page"));
        }
        let Some(first) = self.inner.list_first_page(prefix).await? else {
            return Ok(None);
        };
        Ok(Some(FirstPage {
            objects: first.objects,
            rest: first.rest.map(|rest| self.faulty_listing(prefix, rest)),
        }))
    }

    async fn get(&self, key: &str, limit: u64) -> Result<Bytes, StorageError> {
        match self.pick(OP_GET, key, Fault::is_get) {
            None => self.inner.get(key, limit).await,
            Some((Fault::GetServerError, _)) => {
                Err(self.remote(key, "503 Service Unavailable after 8 retries"))
            }
            Some((Fault::GetThrottled, _)) => Err(self.remote(
                key,
                "503 SlowDown: Please reduce your request rate (retries exhausted)",
            )),
            Some((Fault::GetTimeout, _)) => Err(self.remote(key, "operation timed out")),
            Some((_, r)) => {
                let bytes = self.inner.get(key, limit).await?;
                if bytes.is_empty() {
                    return Ok(bytes);
                }
                Ok(bytes.slice(..(r % bytes.len() as u64) as usize))
            }
        }
    }

    /// A stat is a HEAD request: it fails as a read does (a cut-short body
    /// has no stat counterpart).
    async fn stat_batch(&self, keys: &[String]) -> Vec<Result<ObjectMeta, StorageError>> {
        let mut results = Vec::with_capacity(keys.len());
        for key in keys {
            results.push(
                match self.pick(OP_STAT, key, |f| f.is_get() && f != Fault::GetCutShort) {
                    None => self
                        .inner
                        .stat_batch(std::slice::from_ref(key))
                        .await
                        .pop()
                        .expect("one result per key"),
                    Some((fault, _)) => Err(self.remote(
                        key,
                        &format!("HEAD failed after the store's retries ({fault:?})"),
                    )),
                },
            );
        }
        results
    }

    async fn delete_batch(&self, keys: &[String]) -> Vec<Result<(), StorageError>> {
        let Some(first) = keys.first() else {
            return Vec::new();
        };
        match self.pick(OP_DELETE, first, Fault::is_delete) {
            None => self.inner.delete_batch(keys).await,
            Some((Fault::DeleteBatchFails, _)) => keys
                .iter()
                .map(|k| Err(self.remote(k, "503 SlowDown: Please reduce your request rate")))
                .collect(),
            Some((Fault::DeleteAnswerLost, _)) => {
                let _ = self.inner.delete_batch(keys).await;
                keys.iter()
                    .map(|k| Err(self.remote(k, "connection closed before the answer (the request may have been applied)")))
                    .collect()
            }
            Some((_, r)) => {
                // every key fails with probability ~1/3, at least the first one
                let fails: Vec<bool> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| i == 0 || mix(r ^ hash_str(k)) % 3 == 0)
                    .collect();
                let to_delete: Vec<String> = keys
                    .iter()
                    .zip(&fails)
                    .filter(|(_, f)| !**f)
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut done = self.inner.delete_batch(&to_delete).await.into_iter();
                keys.iter()
                    .zip(&fails)
                    .map(|(k, f)| {
                        if *f {
                            Err(self.remote(k, "InternalError: We encountered an internal error"))
                        } else {
                            done.next().unwrap_or(Ok(()))
                        }
                    })
                    .collect()
            }
        }
    }

    fn max_delete_batch(&self) -> usize {
        self.config
            .delete_batch
            .unwrap_or_else(|| self.inner.max_delete_batch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_a_function_of_seed_operation_key_and_call() {
        let cfg = FaultConfig {
            seed: 7,
            rate: 0.5,
            faults: Fault::READS.to_vec(),
            delete_batch: None,
        };
        let a = FaultyStorage::new(
            Box::new(crate::storage::fs::FsStorage::open(std::path::Path::new("/")).unwrap()),
            cfg.clone(),
        );
        let b = FaultyStorage::new(
            Box::new(crate::storage::fs::FsStorage::open(std::path::Path::new("/")).unwrap()),
            cfg,
        );
        let seq = |s: &FaultyStorage| {
            (0..200)
                .map(|i| {
                    s.pick(OP_GET, &format!("k{}", i % 20), Fault::is_get)
                        .map(|x| x.0)
                })
                .collect::<Vec<_>>()
        };
        let (x, y) = (seq(&a), seq(&b));
        assert_eq!(x, y);
        let hits = x.iter().filter(|f| f.is_some()).count();
        assert!((60..140).contains(&hits), "rate 0.5 gave {hits} of 200");
        // a retried key draws again: not every call on one key has the same fate
        let per_key: Vec<_> = (0..20)
            .map(|_| a.pick(OP_GET, "same", Fault::is_get).is_some())
            .collect();
        assert!(per_key.contains(&true) && per_key.contains(&false));
        // nothing eligible: no fault
        assert!(a.pick(OP_DELETE, "k", Fault::is_delete).is_none());
    }
}
