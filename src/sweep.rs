//! The sweep: executes a plan in batches sized for the backend, phase by phase,
//! retrying failed keys, treating "not found" as done.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;

use crate::layout;
use crate::plan::{Deletion, Plan};
use crate::progress::Progress;
use crate::report::Failure;
use crate::storage::Storage;

#[derive(Debug, Clone, Copy)]
pub struct SweepOptions {
    pub concurrency: usize,
    /// Attempts per key before it is reported as failed.
    pub attempts: u32,
}

#[derive(Debug, Default)]
pub struct SweepOutcome {
    pub deleted_keys: u64,
    pub bytes_freed: u64,
    pub failures: Vec<Failure>,
    pub dirs_removed: usize,
    /// Phases not started because an earlier one had failures.
    pub stopped_early: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{key}: refusing to delete a key outside {v2}; nothing was deleted", v2 = layout::V2)]
    OutsideRegistryTree { key: String },
}

/// Checks the whole plan before the first delete (invariant 5).
pub fn check_plan(plan: &Plan) -> Result<(), SweepError> {
    match plan.deletions.iter().find(|d| !d.key.starts_with(layout::V2) || d.key.contains("/../") || d.key.ends_with("/..")) {
        Some(d) => Err(SweepError::OutsideRegistryTree { key: d.key.clone() }),
        None => Ok(()),
    }
}

pub async fn sweep(storage: &dyn Storage, plan: &Plan, opts: SweepOptions, progress: &Progress) -> Result<SweepOutcome, SweepError> {
    check_plan(plan)?;
    let mut outcome = SweepOutcome::default();
    progress.start_phase("deleting", plan.deletions.len() as u64);
    let batch = storage.max_delete_batch().max(1);
    let mut start = 0;
    while start < plan.deletions.len() {
        let phase = plan.deletions[start].reason.phase();
        let end = plan.deletions[start..].iter().position(|d| d.reason.phase() != phase).map_or(plan.deletions.len(), |n| start + n);
        let group = &plan.deletions[start..end];
        let results = futures::stream::iter(group.chunks(batch))
            .map(|chunk| delete_with_retries(storage, chunk, opts.attempts))
            .buffer_unordered(opts.concurrency.max(1));
        let results: Vec<_> = results.inspect(|(done, _)| progress.inc(done.len() as u64)).collect().await;
        let mut deleted: Vec<&Deletion> = Vec::new();
        for (done, failed) in results {
            deleted.extend(done);
            outcome.failures.extend(failed);
        }
        outcome.deleted_keys += deleted.len() as u64;
        outcome.bytes_freed += deleted.iter().map(|d| d.bytes).sum::<u64>();
        if storage.has_directories() {
            outcome.dirs_removed += remove_dirs_left_empty(storage, &deleted).await;
        }
        if !outcome.failures.is_empty() {
            // A later phase could delete blobs whose links failed to go; stop and
            // let the next run finish from a consistent state.
            outcome.stopped_early = end < plan.deletions.len();
            return Ok(outcome);
        }
        start = end;
    }
    if storage.has_directories() && !plan.empty_dirs.is_empty() {
        outcome.dirs_removed += storage.remove_empty_dirs(&plan.empty_dirs).await.unwrap_or(0);
    }
    if plan.remove_empty_repositories && storage.has_directories() {
        for repo in &plan.empty_repositories {
            outcome.dirs_removed += storage.remove_empty_dirs(&layout::empty_repository_dirs(repo)).await.unwrap_or(0);
        }
    }
    progress.finish();
    Ok(outcome)
}

async fn delete_with_retries<'a>(storage: &dyn Storage, chunk: &'a [Deletion], attempts: u32) -> (Vec<&'a Deletion>, Vec<Failure>) {
    let mut pending: Vec<&Deletion> = chunk.iter().collect();
    let mut done = Vec::with_capacity(chunk.len());
    let mut last_errors = Vec::new();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
        }
        let keys: Vec<String> = pending.iter().map(|d| d.key.clone()).collect();
        let results = storage.delete_batch(&keys).await;
        let mut still = Vec::new();
        last_errors.clear();
        for (d, r) in pending.into_iter().zip(results) {
            match r {
                Ok(()) => done.push(d),
                Err(e) => {
                    last_errors.push(Failure { key: d.key.clone(), error: e.to_string() });
                    still.push(d);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
    }
    (done, last_errors)
}

/// Removes directories the deletions left empty (filesystem only), deepest first.
async fn remove_dirs_left_empty(storage: &dyn Storage, deleted: &[&Deletion]) -> usize {
    let dirs: BTreeSet<String> = deleted.iter().flat_map(|d| layout::dirs_left_empty_by(&d.key)).collect();
    let mut dirs: Vec<String> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    storage.remove_empty_dirs(&dirs).await.unwrap_or(0)
}
