//! A wrapper that counts storage requests per class, so that every run can report
//! what it cost in the units operators pay for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::{DirListing, ObjectMeta, Storage, StorageError};

#[derive(Debug, Default)]
pub struct RequestCounts {
    pub list: AtomicU64,
    pub get: AtomicU64,
    pub delete: AtomicU64,
    pub keys_deleted: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestTotals {
    /// Listing calls: one per `list` stream or `list_dir` call. On object stores
    /// the backend adds one per extra page.
    pub list: u64,
    pub get: u64,
    /// Delete requests (one per batch).
    pub delete: u64,
}

impl RequestCounts {
    pub fn totals(&self) -> RequestTotals {
        RequestTotals {
            list: self.list.load(Ordering::Relaxed),
            get: self.get.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
pub struct CountingStorage {
    inner: Box<dyn Storage>,
    counts: Arc<RequestCounts>,
}

impl CountingStorage {
    pub fn new(inner: Box<dyn Storage>) -> Self {
        CountingStorage { inner, counts: Arc::new(RequestCounts::default()) }
    }

    pub fn counts(&self) -> Arc<RequestCounts> {
        self.counts.clone()
    }
}

#[async_trait]
impl Storage for CountingStorage {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        self.counts.list.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix).boxed()
    }

    async fn list_dir(&self, prefix: &str) -> Result<DirListing, StorageError> {
        self.counts.list.fetch_add(1, Ordering::Relaxed);
        self.inner.list_dir(prefix).await
    }

    async fn get(&self, key: &str, limit: u64) -> Result<Bytes, StorageError> {
        self.counts.get.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key, limit).await
    }

    async fn delete_batch(&self, keys: &[String]) -> Vec<Result<(), StorageError>> {
        self.counts.delete.fetch_add(1, Ordering::Relaxed);
        self.counts.keys_deleted.fetch_add(keys.len() as u64, Ordering::Relaxed);
        self.inner.delete_batch(keys).await
    }

    fn max_delete_batch(&self) -> usize {
        self.inner.max_delete_batch()
    }

    fn has_directories(&self) -> bool {
        self.inner.has_directories()
    }

    async fn remove_empty_dirs(&self, dirs: &[String]) -> Result<usize, StorageError> {
        self.inner.remove_empty_dirs(dirs).await
    }
}
