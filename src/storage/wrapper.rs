//! Stores over stores: a wrapper changes some of what the store beneath it
//! does (`FaultyStorage`'s injected failures, a test's writes during a run)
//! and passes the rest through.
//!
//! A wrapper implements `StorageWrapper`, whose every method goes to
//! `inner()` unless overridden, and gets `Storage` from the impl below.
//! Implementing `Storage` by hand instead, a wrapper that missed a method
//! would get the trait's default, not the inner store's behaviour: a probing
//! listing would quietly become a full one, a backend's page size would
//! vanish. Adding a method to `Storage` fails to compile here until it is
//! forwarded.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use super::counts::RequestCounts;
use super::{DirListing, FirstPage, MoveMode, Moved, ObjectMeta, Probe, Storage, StorageError};

#[async_trait]
pub trait StorageWrapper: Send + Sync + std::fmt::Debug {
    /// The store beneath.
    fn inner(&self) -> &dyn Storage;

    fn describe(&self) -> String {
        self.inner().describe()
    }

    fn counts(&self) -> &RequestCounts {
        self.inner().counts()
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        self.inner().list(prefix)
    }

    fn list_probing(
        &self,
        prefix: &str,
        probe: Probe,
    ) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        self.inner().list_probing(prefix, probe)
    }

    async fn list_dir(&self, prefix: &str) -> Result<DirListing, StorageError> {
        self.inner().list_dir(prefix).await
    }

    fn list_page_size(&self) -> Option<usize> {
        self.inner().list_page_size()
    }

    fn limit_list_requests(&self, most: Option<usize>) {
        self.inner().limit_list_requests(most)
    }

    async fn list_first_page(&self, prefix: &str) -> Result<Option<FirstPage<'_>>, StorageError> {
        self.inner().list_first_page(prefix).await
    }

    async fn unreachable_registry(&self) -> Result<Option<String>, StorageError> {
        self.inner().unreachable_registry().await
    }

    async fn get(&self, key: &str, limit: u64) -> Result<Bytes, StorageError> {
        self.inner().get(key, limit).await
    }

    fn max_get_batch(&self) -> usize {
        self.inner().max_get_batch()
    }

    fn batches_in_flight(&self, concurrency: usize) -> usize {
        self.inner().batches_in_flight(concurrency)
    }

    /// Each key through this wrapper's own `get`, so that a wrapper that
    /// changes reads sees every one of them, batched or not. A wrapper that
    /// changes nothing per read may forward the batch to the store beneath.
    async fn get_batch(&self, keys: &[String], limit: u64) -> Vec<Result<Bytes, StorageError>> {
        let mut results = Vec::with_capacity(keys.len());
        for key in keys {
            results.push(StorageWrapper::get(self, key, limit).await);
        }
        results
    }

    async fn stat_batch(&self, keys: &[String]) -> Vec<Result<ObjectMeta, StorageError>> {
        self.inner().stat_batch(keys).await
    }

    async fn get_stream(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        self.inner().get_stream(key).await
    }

    async fn delete_batch(&self, keys: &[String]) -> Vec<Result<(), StorageError>> {
        self.inner().delete_batch(keys).await
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.inner().put(key, bytes).await
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        self.inner().exists(key).await
    }

    async fn move_batch(
        &self,
        moves: &[(String, String)],
        mode: MoveMode,
    ) -> Vec<Result<Moved, StorageError>> {
        self.inner().move_batch(moves, mode).await
    }

    fn max_delete_batch(&self) -> usize {
        self.inner().max_delete_batch()
    }

    fn bulk_delete_size(&self) -> usize {
        self.inner().bulk_delete_size()
    }

    fn has_directories(&self) -> bool {
        self.inner().has_directories()
    }

    async fn remove_empty_dirs(&self, dirs: &[String]) -> Result<usize, StorageError> {
        self.inner().remove_empty_dirs(dirs).await
    }
}

#[async_trait]
impl<W: StorageWrapper> Storage for W {
    fn describe(&self) -> String {
        StorageWrapper::describe(self)
    }

    fn counts(&self) -> &RequestCounts {
        StorageWrapper::counts(self)
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        StorageWrapper::list(self, prefix)
    }

    fn list_probing(
        &self,
        prefix: &str,
        probe: Probe,
    ) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        StorageWrapper::list_probing(self, prefix, probe)
    }

    async fn list_dir(&self, prefix: &str) -> Result<DirListing, StorageError> {
        StorageWrapper::list_dir(self, prefix).await
    }

    fn list_page_size(&self) -> Option<usize> {
        StorageWrapper::list_page_size(self)
    }

    fn limit_list_requests(&self, most: Option<usize>) {
        StorageWrapper::limit_list_requests(self, most)
    }

    async fn list_first_page(&self, prefix: &str) -> Result<Option<FirstPage<'_>>, StorageError> {
        StorageWrapper::list_first_page(self, prefix).await
    }

    async fn unreachable_registry(&self) -> Result<Option<String>, StorageError> {
        StorageWrapper::unreachable_registry(self).await
    }

    async fn get(&self, key: &str, limit: u64) -> Result<Bytes, StorageError> {
        StorageWrapper::get(self, key, limit).await
    }

    fn max_get_batch(&self) -> usize {
        StorageWrapper::max_get_batch(self)
    }

    fn batches_in_flight(&self, concurrency: usize) -> usize {
        StorageWrapper::batches_in_flight(self, concurrency)
    }

    async fn get_batch(&self, keys: &[String], limit: u64) -> Vec<Result<Bytes, StorageError>> {
        StorageWrapper::get_batch(self, keys, limit).await
    }

    async fn stat_batch(&self, keys: &[String]) -> Vec<Result<ObjectMeta, StorageError>> {
        StorageWrapper::stat_batch(self, keys).await
    }

    async fn get_stream(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        StorageWrapper::get_stream(self, key).await
    }

    async fn delete_batch(&self, keys: &[String]) -> Vec<Result<(), StorageError>> {
        StorageWrapper::delete_batch(self, keys).await
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        StorageWrapper::put(self, key, bytes).await
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        StorageWrapper::exists(self, key).await
    }

    async fn move_batch(
        &self,
        moves: &[(String, String)],
        mode: MoveMode,
    ) -> Vec<Result<Moved, StorageError>> {
        StorageWrapper::move_batch(self, moves, mode).await
    }

    fn max_delete_batch(&self) -> usize {
        StorageWrapper::max_delete_batch(self)
    }

    fn bulk_delete_size(&self) -> usize {
        StorageWrapper::bulk_delete_size(self)
    }

    fn has_directories(&self) -> bool {
        StorageWrapper::has_directories(self)
    }

    async fn remove_empty_dirs(&self, dirs: &[String]) -> Result<usize, StorageError> {
        StorageWrapper::remove_empty_dirs(self, dirs).await
    }
}
