//! `purge`: deletes the runs older than a duration, each run's record last.

use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};

use super::{dirs_below, list_runs, record_key, run_prefix, QuarantineError, PREFIX};
use crate::report::{human_bytes, Failure};
use crate::storage::{system_time_ms, Storage, StorageError};

#[derive(Debug, Default, serde::Serialize)]
pub struct PurgeOutcome {
    pub storage: String,
    pub dry_run: bool,
    /// (run id, keys, bytes) of each run purged (or, in a dry run, to purge).
    pub purged: Vec<(String, u64, u64)>,
    pub kept_runs: u64,
    /// Runs left because their record could not be read (their age is
    /// unknown), without `include_unrecorded`.
    pub unrecorded: Vec<String>,
    pub failures: Vec<Failure>,
}

impl PurgeOutcome {
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let verb = if self.dry_run {
            "would purge"
        } else {
            "purged"
        };
        let _ = writeln!(
            s,
            "registry-gc {} on {}",
            if self.dry_run {
                "purge dry run"
            } else {
                "purge"
            },
            self.storage
        );
        for (id, keys, bytes) in &self.purged {
            let _ = writeln!(s, "{verb}: run {id}: {keys} keys ({})", human_bytes(*bytes));
        }
        let keys: u64 = self.purged.iter().map(|p| p.1).sum();
        let bytes: u64 = self.purged.iter().map(|p| p.2).sum();
        let _ = writeln!(
            s,
            "{verb}: {} runs, {keys} keys ({}); kept {} newer runs",
            self.purged.len(),
            human_bytes(bytes),
            self.kept_runs
        );
        for id in &self.unrecorded {
            let _ = writeln!(s, "left: run {id}: no readable record");
        }
        for f in &self.failures {
            let _ = writeln!(s, "failed: {}: {}", f.key, f.error);
        }
        s
    }
}

/// Deletes every run whose time (its record's) is more than `older_than`
/// before `now`. The record goes last, so that a purge stopped half way leaves
/// the run listed and purgeable.
///
/// A run whose record cannot be read has no known start: it is left (named in
/// `unrecorded`) unless `include_unrecorded`, which dates it by the later of
/// the start its id gives and its newest object (`run_id_started_ms`): its
/// objects alone can make it far too old, as on disk a quarantine move is a
/// rename, which keeps each file's mtime, so a run made a moment ago can look
/// as old as the blobs it holds.
pub async fn purge(
    storage: &dyn Storage,
    older_than: Duration,
    now: SystemTime,
    dry_run: bool,
    include_unrecorded: bool,
    concurrency: usize,
) -> Result<PurgeOutcome, QuarantineError> {
    let fence = system_time_ms(now).saturating_sub(crate::storage::duration_ms(older_than));
    let mut out = PurgeOutcome {
        storage: storage.describe(),
        dry_run,
        ..Default::default()
    };
    for run in list_runs(storage, concurrency).await? {
        if run.record.is_none() && !include_unrecorded {
            out.unrecorded.push(run.run_id);
            continue;
        }
        if run.time_ms() >= fence {
            out.kept_runs += 1;
            continue;
        }
        let prefix = run_prefix(&run.run_id);
        let record_at = record_key(&run.run_id);
        let listed: Vec<String> = storage
            .list(&prefix)
            .map_ok(|o| o.key)
            .try_collect()
            .await?;
        // only ever this run's keys, the record last; the empty directories
        // (keys ending in `/`, on disk) are removed with the rest
        let (empty_dirs, mut keys): (Vec<String>, Vec<String>) = listed
            .into_iter()
            .filter(|k| k.starts_with(&prefix))
            .partition(|k| k.ends_with('/'));
        keys.retain(|k| *k != record_at);
        let n = keys.len() as u64;
        if !dry_run {
            keys.push(record_at.clone());
            let batch = storage.max_delete_batch().max(1);
            let (body, last) = keys.split_at(keys.len() - 1);
            let mut failed = false;
            for group in [body, last] {
                let results: Vec<Vec<Result<(), StorageError>>> =
                    futures::stream::iter(group.chunks(batch))
                        .map(|c| storage.delete_batch(c))
                        .buffered(concurrency.max(1))
                        .collect()
                        .await;
                for (key, r) in group.iter().zip(results.into_iter().flatten()) {
                    if let Err(e) = r {
                        out.failures.push(Failure {
                            key: key.clone(),
                            error: e.to_string(),
                        });
                        failed = true;
                    }
                }
                if failed {
                    break;
                }
            }
            if storage.has_directories() {
                keys.extend(empty_dirs);
                let mut dirs = dirs_below(&prefix, &keys);
                dirs.push(prefix.trim_end_matches('/').to_string());
                let _ = storage.remove_empty_dirs(&dirs).await;
            }
            if failed {
                continue;
            }
        }
        out.purged.push((run.run_id, n, run.bytes_present));
    }
    if !dry_run
        && storage.has_directories()
        && out.kept_runs == 0
        && out.unrecorded.is_empty()
        && out.failures.is_empty()
    {
        let _ = storage
            .remove_empty_dirs(&[PREFIX.trim_end_matches('/').to_string()])
            .await;
    }
    Ok(out)
}
