//! Storage requests per class, counted by each backend where it makes them, so
//! that a run reports what it cost in the units operators pay for: one LIST per
//! listing page (or directory read on disk), one GET per object read, and one
//! DELETE per delete request (a DeleteObjects or Blob Batch call counts once, a
//! GCS or disk delete once per key).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct RequestCounts {
    list: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    put: AtomicU64,
    delete: AtomicU64,
    /// LIST requests in flight now, and the most there were at once.
    lists_in_flight: AtomicU64,
    most_lists_in_flight: AtomicU64,
}

/// One LIST request in flight, until dropped.
pub struct ListInFlight<'a>(&'a RequestCounts);

impl Drop for ListInFlight<'_> {
    fn drop(&mut self) {
        self.0.lists_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Requests per class, in the columns a bill shows. A collection sends no HEAD
/// or PUT; `--quarantine` and `restore` do (a server-side copy is billed as a
/// PUT, an existence check as a HEAD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestTotals {
    pub list: u64,
    pub get: u64,
    pub head: u64,
    pub put: u64,
    pub delete: u64,
}

/// The fewest requests the layout allows for a run: every key listed once in
/// full pages, every tag link and manifest read once, deletes in full batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestFloor {
    pub list: u64,
    pub get: u64,
    pub delete: u64,
}

impl RequestCounts {
    pub fn list(&self, n: u64) {
        self.list.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self, n: u64) {
        self.get.fetch_add(n, Ordering::Relaxed);
    }
    pub fn head(&self, n: u64) {
        self.head.fetch_add(n, Ordering::Relaxed);
    }
    pub fn put(&self, n: u64) {
        self.put.fetch_add(n, Ordering::Relaxed);
    }
    pub fn delete(&self, n: u64) {
        self.delete.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts one LIST request and holds it as in flight while the guard lives.
    pub fn list_in_flight(&self) -> ListInFlight<'_> {
        self.list(1);
        let now = self.lists_in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.most_lists_in_flight.fetch_max(now, Ordering::Relaxed);
        ListInFlight(self)
    }

    /// The most LIST requests in flight at once since the last call.
    pub fn take_most_lists_in_flight(&self) -> u64 {
        self.most_lists_in_flight.swap(
            self.lists_in_flight.load(Ordering::Relaxed),
            Ordering::Relaxed,
        )
    }

    pub fn totals(&self) -> RequestTotals {
        RequestTotals {
            list: self.list.load(Ordering::Relaxed),
            get: self.get.load(Ordering::Relaxed),
            head: self.head.load(Ordering::Relaxed),
            put: self.put.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
        }
    }
}
