//! The sweep: executes a plan in batches sized for the backend, phase by phase
//! (`phases`), retrying failed keys, treating "not found" as done. Each key is
//! deleted, or with `--quarantine` moved into the run's quarantine prefix
//! (same phases, batches, retries and checks).

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;

use crate::bits::Bits;
use crate::inventory::{listed_secs, Inventory, Secs};
use crate::layout;
use crate::phases::Phases;
use crate::plan::{Deletion, Plan, Reason, Target};
use crate::progress::Progress;
use crate::quarantine::{self, QuarantineRun};
use crate::report::Failure;
use crate::storage::{stat_many, MoveMode, Moved, Storage, StorageError};

#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub concurrency: usize,
    /// Attempts per key before it is reported as failed.
    pub attempts: u32,
    pub action: SweepAction,
    /// The plan's fence, for a run while the registry serves: a dangling
    /// tag whose `current/link` was written after it by the time its phase
    /// comes is kept. `None` with `--offline`, where nothing is written.
    pub fence: Option<Secs>,
}

/// What the sweep does with each planned key.
#[derive(Debug, Clone)]
pub enum SweepAction {
    Delete,
    /// Move it under `registry-gc-quarantine/<run>/`, recording the run first.
    Quarantine(QuarantineRun),
}

#[derive(Debug, Default)]
pub struct SweepOutcome {
    pub deleted_keys: u64,
    pub bytes_freed: u64,
    pub failures: Vec<Failure>,
    pub dirs_removed: usize,
    /// Phases not started because an earlier one had failures.
    pub stopped_early: bool,
    /// The quarantine run the keys were moved into.
    pub quarantine_run: Option<String>,
    /// The plan's deletions done (by index in `plan.deletions`): deleted,
    /// moved, or found already gone. Not those that failed, nor those of
    /// phases never started.
    pub done: Bits,
    /// Whether the empty repositories the plan names were removed (skipped
    /// after a failure, as the empty directories are).
    pub empty_repositories_removed: bool,
    /// Dangling tags kept because their `current/link` was written during
    /// the run (`REPO:TAG`): moved by a push, they name a manifest again.
    pub tags_moved_during_run: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{key}: refusing to delete a key outside {v2}; nothing was deleted", v2 = layout::V2)]
    OutsideRegistryTree { key: String },
    #[error("cannot write the quarantine run record: {0}; nothing was moved")]
    QuarantineRecord(StorageError),
}

/// Whether a key may be deleted at all (invariant 5): inside the registry tree,
/// no parent steps.
pub fn in_registry_tree(key: &str) -> bool {
    key.starts_with(layout::V2) && !key.split('/').any(|c| c == ".." || c == ".")
}

/// Checks every key of the plan before the first delete (invariant 5). Keys are
/// rendered from the inventory's names here and again when sent, one at a time.
pub fn check_plan(inv: &Inventory, plan: &Plan) -> Result<(), SweepError> {
    for d in &plan.deletions {
        let key = inv.key_of(&d.target(inv));
        if !in_registry_tree(&key) {
            return Err(SweepError::OutsideRegistryTree { key });
        }
    }
    Ok(())
}

pub async fn sweep(
    storage: &dyn Storage,
    inv: &Inventory,
    plan: &Plan,
    opts: SweepOptions,
    progress: &Progress,
) -> Result<SweepOutcome, SweepError> {
    check_plan(inv, plan)?;
    let mut outcome = SweepOutcome::default();
    let run = match &opts.action {
        // nothing to move: no run, no record
        SweepAction::Quarantine(run) if !plan.deletions.is_empty() => Some(run),
        _ => None,
    };
    if let Some(run) = run {
        run.begin(storage, inv, plan)
            .await
            .map_err(SweepError::QuarantineRecord)?;
        outcome.quarantine_run = Some(run.id.clone());
    }
    let mut gone = Vec::new();
    progress.start_phase(
        if run.is_some() {
            "quarantining"
        } else {
            "deleting"
        },
        plan.deletions.len() as u64,
    );
    let phases = Phases::of(inv, plan, storage.max_delete_batch());
    let in_flight = delete_batches_in_flight(storage, opts.concurrency);
    for p in 0..phases.len() {
        let dangling_tags = phases.is_phase_of(p, plan, Reason::DanglingTag);
        let batches: Box<dyn Iterator<Item = Vec<(usize, Deletion)>> + Send> =
            match opts.fence.filter(|_| dangling_tags) {
                Some(fence) => {
                    let (batches, moved, failures) = without_tags_moved_since(
                        storage,
                        inv,
                        phases.batches(p, plan),
                        fence,
                        opts.concurrency,
                    )
                    .await;
                    outcome.tags_moved_during_run.extend(moved);
                    outcome.failures.extend(failures);
                    Box::new(batches.into_iter())
                }
                None => Box::new(phases.batches(p, plan)),
            };
        let mut results = futures::stream::iter(batches)
            .map(|chunk| remove_batch(storage, inv, chunk, opts.attempts, run))
            .buffer_unordered(in_flight);
        while let Some(done) = results.next().await {
            let deleted = done.done.len() as u64;
            for i in done.done {
                outcome.done.insert(i);
            }
            progress.inc(deleted);
            outcome.deleted_keys += deleted;
            outcome.bytes_freed += done.bytes;
            outcome.dirs_removed += done.dirs_removed;
            outcome.failures.extend(done.failures);
            gone.extend(done.gone);
        }
        if !outcome.failures.is_empty() {
            // A later phase could delete blobs whose links failed to go; stop and
            // let the next run finish from a consistent state.
            outcome.stopped_early = p + 1 < phases.len();
            break;
        }
    }
    if let Some(run) = run {
        if let Err(e) = run
            .finish(
                storage,
                inv,
                plan,
                outcome.deleted_keys - gone.len() as u64,
                &outcome.failures,
                &gone,
            )
            .await
        {
            // the moves stand and restore still finds every key; the record just
            // does not say how the run ended
            let error = format!("the run's keys were moved but its record was not updated: {e}");
            outcome.failures.push(Failure {
                key: quarantine::record_key(&run.id),
                error,
            });
        }
    }
    if !outcome.failures.is_empty() {
        return Ok(outcome);
    }
    if storage.has_directories() && !plan.empty_dirs.is_empty() {
        for chunk in plan.empty_dirs.chunks(1024) {
            let dirs: Vec<String> = chunk
                .iter()
                .map(|i| inv.empty_dir(*i as usize).key)
                .collect();
            outcome.dirs_removed += storage.remove_empty_dirs(&dirs).await.unwrap_or(0);
        }
        outcome.dirs_removed += storage
            .remove_empty_dirs(&plan.empty_dir_parents)
            .await
            .unwrap_or(0);
    }
    if plan.remove_empty_repositories && storage.has_directories() {
        outcome.empty_repositories_removed = true;
        for repo in &plan.empty_repositories {
            outcome.dirs_removed += storage
                .remove_empty_dirs(&layout::empty_repository_dirs(repo))
                .await
                .unwrap_or(0);
        }
    }
    progress.finish();
    Ok(outcome)
}

/// Keys the sweep has in flight at most (each a rendered key, some 270 bytes
/// of heap with its copies: 64 batches of 256 on a filesystem were 6 MB at the
/// run's peak, 64 of S3's 1000 would be 25). A filesystem stays well below it
/// (a batch of 64 per blocking thread).
const KEYS_IN_FLIGHT: usize = 8192;

/// Delete batches in flight: as many as the store runs at once for
/// `concurrency` (a filesystem's blocking threads), and no more than make
/// `KEYS_IN_FLIGHT` keys. On S3 that is 8 DeleteObjects requests of 1000
/// keys, 8,000 deletes in flight, which is already more than the 3,500 a
/// second S3 takes on one prefix before it answers SlowDown.
fn delete_batches_in_flight(storage: &dyn Storage, concurrency: usize) -> usize {
    let by_keys = KEYS_IN_FLIGHT / storage.max_delete_batch().max(1);
    storage.batches_in_flight(concurrency).min(by_keys).max(1)
}

/// The dangling tags' batches less the tags a push moved since the fence
/// (their `current/link` written after it, seen by a stat just before their
/// delete), with those tags' `REPO:TAG`, and a failure for each tag whose
/// link could not be stat'ed (kept too: the next run decides). Few keys: a
/// tag dangles only when its manifest's blob is gone.
async fn without_tags_moved_since(
    storage: &dyn Storage,
    inv: &Inventory,
    batches: impl Iterator<Item = Vec<(usize, Deletion)>>,
    fence: Secs,
    concurrency: usize,
) -> (Vec<Vec<(usize, Deletion)>>, Vec<String>, Vec<Failure>) {
    let mut batches: Vec<Vec<(usize, Deletion)>> = batches.collect();
    let currents: Vec<((u32, u32), String)> = batches
        .iter()
        .flatten()
        .filter_map(|(_, d)| match d.target(inv) {
            target @ Target::TagCurrent { repo, tag } => Some(((repo, tag), inv.key_of(&target))),
            _ => None,
        })
        .collect();
    let mut keep = BTreeSet::new();
    let (mut moved, mut failures) = (Vec::new(), Vec::new());
    let mut stats = stat_many(storage, currents.into_iter(), concurrency);
    while let Some(((repo, tag), key, stat)) = stats.next().await {
        match stat {
            Ok(meta) if listed_secs(meta.last_modified_ms) <= fence => continue,
            // gone already: nothing of it to keep
            Err(e) if e.is_not_found() => continue,
            Ok(_) => {
                let r = &inv.repositories[repo as usize];
                moved.push(format!("{}:{}", r.name, r.tag_name(tag)));
            }
            Err(e) => failures.push(Failure {
                key,
                error: format!("kept: its tag could not be checked before its delete: {e}"),
            }),
        }
        keep.insert((repo, tag));
    }
    drop(stats);
    if !keep.is_empty() {
        let kept = |d: &Deletion| match d.target(inv) {
            Target::TagCurrent { repo, tag } | Target::TagIndex { repo, tag, .. } => {
                keep.contains(&(repo, tag))
            }
            _ => false,
        };
        for b in &mut batches {
            b.retain(|(_, d)| !kept(d));
        }
        batches.retain(|b| !b.is_empty());
    }
    (batches, moved, failures)
}

/// What one batch did.
struct BatchOutcome {
    bytes: u64,
    dirs_removed: usize,
    failures: Vec<Failure>,
    /// Keys a quarantine found already gone (nothing moved).
    gone: Vec<String>,
    /// The plan indexes of the deletions done (deleted, moved, or gone).
    done: Vec<usize>,
}

/// Deletes one batch (or moves it into the quarantine run), retrying the keys
/// that failed, then (on a filesystem) removes the directories its deletions
/// left empty. Each batch prunes its own keys' parents: a directory shared with
/// another batch is removed by whichever empties it last, since removal only
/// succeeds on an empty directory.
async fn remove_batch(
    storage: &dyn Storage,
    inv: &Inventory,
    chunk: Vec<(usize, Deletion)>,
    attempts: u32,
    run: Option<&QuarantineRun>,
) -> BatchOutcome {
    // keys and their deletions side by side, so that each attempt sends the
    // keys without copying them
    // each key at its length: `format!` leaves up to twice that in capacity
    let mut keys: Vec<String> = chunk
        .iter()
        .map(|(_, d)| {
            let mut key = inv.key_of(&d.target(inv));
            key.shrink_to_fit();
            key
        })
        .collect();
    let mut pending: Vec<&(usize, Deletion)> = chunk.iter().collect();
    let mut done: Vec<(String, &(usize, Deletion))> = Vec::with_capacity(chunk.len());
    let mut failures = Vec::new();
    let mut gone = Vec::new();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
        }
        // Ok(false): the key was not there to move
        let results: Vec<Result<bool, StorageError>> = match run {
            None => storage
                .delete_batch(&keys)
                .await
                .into_iter()
                .map(|r| r.map(|()| true))
                .collect(),
            Some(run) => {
                let moves: Vec<(String, String)> = keys
                    .iter()
                    .map(|k| (k.clone(), quarantine::quarantine_key(&run.id, k)))
                    .collect();
                let moved = storage.move_batch(&moves, MoveMode::Overwrite).await;
                moved
                    .into_iter()
                    .map(|r| r.map(|m| m != Moved::SourceMissing))
                    .collect()
            }
        };
        let (mut still_keys, mut still) = (Vec::new(), Vec::new());
        failures.clear();
        for ((key, d), r) in keys.into_iter().zip(pending).zip(results) {
            match r {
                Ok(true) => done.push((key, d)),
                Ok(false) => {
                    gone.push(key.clone());
                    done.push((key, d));
                }
                Err(e) => {
                    failures.push(Failure {
                        key: key.clone(),
                        error: e.to_string(),
                    });
                    still_keys.push(key);
                    still.push(d);
                }
            }
        }
        (keys, pending) = (still_keys, still);
        if pending.is_empty() {
            break;
        }
    }
    let mut dirs_removed = 0;
    if storage.has_directories() && !done.is_empty() {
        let dirs: BTreeSet<String> = done
            .iter()
            .flat_map(|(k, _)| layout::dirs_left_empty_by(k))
            .collect();
        let mut dirs: Vec<String> = dirs.into_iter().collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
        dirs_removed = storage.remove_empty_dirs(&dirs).await.unwrap_or(0);
    }
    BatchOutcome {
        bytes: done
            .iter()
            .map(|(_, (_, d))| inv.bytes_of(&d.target(inv)))
            .sum(),
        dirs_removed,
        failures,
        gone,
        done: done.iter().map(|(_, (i, _))| *i).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::FsStorage;
    use crate::storage::object::{ObjectStorage, Service};

    #[test]
    fn keys_in_flight_stay_bounded_on_every_backend() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsStorage::open(dir.path()).unwrap();
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("b")
            .with_region("us-east-1")
            .build()
            .unwrap();
        let s3 = ObjectStorage::new(std::sync::Arc::new(s3), Service::S3, "", "s3://b".into());
        // a filesystem runs as many batches as it has blocking threads for them
        assert_eq!(delete_batches_in_flight(&fs, 64), fs.batches_in_flight(64));
        assert_eq!(delete_batches_in_flight(&s3, 64), 8);
        for storage in [&fs as &dyn Storage, &s3] {
            for concurrency in [1, 4, 64, 1000] {
                let n = delete_batches_in_flight(storage, concurrency);
                assert!(n >= 1 && n <= concurrency.max(1), "{n} for {concurrency}");
                assert!(
                    n == 1 || n * storage.max_delete_batch() <= KEYS_IN_FLIGHT,
                    "{n} batches of {}",
                    storage.max_delete_batch()
                );
            }
        }
    }
}
