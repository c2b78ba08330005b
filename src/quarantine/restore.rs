//! `restore`: puts a run's keys back, blobs before the links that point at
//! them, never over a key the registry has now (the live key wins).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use futures::StreamExt;

use super::record::write_record;
use super::{
    dirs_below, quarantine_key, read_record, record_key, run_prefix, Entry, QuarantineError,
    RunState,
};
use crate::plan::Reason;
use crate::report::{human_bytes, Failure};
use crate::storage::{MoveMode, Moved, Storage, StorageError};

/// Order of restore: blobs before the links that point at them, and a
/// manifest's revision link before a tag that names it, so that the registry
/// never serves a link to something not yet back (the sweep's order,
/// reversed).
fn restore_phase(reason: Reason) -> u8 {
    match reason {
        Reason::UnreferencedBlob => 0,
        Reason::DanglingLayerLink => 1,
        Reason::DanglingTag => 3,
        Reason::StaleUpload => 4,
        _ => 2,
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreOutcome {
    pub run_id: String,
    pub storage: String,
    /// Keys moved back to their place, and the bytes of the blobs and uploads among them.
    pub restored: u64,
    pub restored_bytes: u64,
    /// Keys found at their place and not in quarantine (restored before, or never moved).
    pub already_in_place: u64,
    /// Keys the registry has again (re-pushed since): left as they are, and the
    /// quarantined copy left in the run for `purge`.
    pub kept_live: Vec<String>,
    /// Keys gone before the quarantine could move them: nothing to restore.
    pub never_quarantined: u64,
    /// Keys neither in quarantine nor at their place.
    pub missing: Vec<String>,
    pub failures: Vec<Failure>,
    /// Phases not started because an earlier one had failures.
    pub stopped_early: bool,
}

impl RestoreOutcome {
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty() && self.missing.is_empty() && !self.stopped_early
    }

    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "registry-gc restore of run {} on {}",
            self.run_id, self.storage
        );
        let _ = writeln!(
            s,
            "restored: {} keys ({})",
            self.restored,
            human_bytes(self.restored_bytes)
        );
        if self.already_in_place > 0 {
            let _ = writeln!(s, "already in place: {} keys", self.already_in_place);
        }
        if self.never_quarantined > 0 {
            let _ = writeln!(
                s,
                "never quarantined (gone before the run moved them): {} keys",
                self.never_quarantined
            );
        }
        if !self.kept_live.is_empty() {
            let _ =
                writeln!(s, "kept the registry's current key ({} keys; their quarantined copies stay in the run):", self.kept_live.len());
            for k in self.kept_live.iter().take(20) {
                let _ = writeln!(s, "  {k}");
            }
        }
        for k in &self.missing {
            let _ = writeln!(s, "missing: {k}: neither in quarantine nor at its key");
        }
        for f in &self.failures {
            let _ = writeln!(s, "failed: {}: {}", f.key, f.error);
        }
        if self.stopped_early {
            let _ = writeln!(
                s,
                "the restore stopped after the failures above; run it again to finish"
            );
        }
        if self.restored > 0 {
            let _ = writeln!(
                s,
                "restart the registry (or flush its blob-descriptor cache), as after a collection"
            );
        }
        s
    }
}

/// Puts run `run`'s keys back where they were. Idempotent: a key already in
/// place counts as done, and a key the registry has again is left alone.
pub async fn restore(
    storage: &dyn Storage,
    run: &str,
    concurrency: usize,
    attempts: u32,
) -> Result<RestoreOutcome, QuarantineError> {
    let mut record = read_record(storage, run).await?;
    let record_at = record_key(run);
    for e in &record.entries {
        if !crate::sweep::in_registry_tree(&e.key) {
            return Err(QuarantineError::OutsideRegistryTree {
                record: record_at,
                key: e.key.clone(),
            });
        }
    }
    let gone: HashSet<&str> = record
        .header
        .gone_before_move
        .iter()
        .map(String::as_str)
        .collect();
    let mut order: Vec<&Entry> = record.entries.iter().collect();
    order.sort_by_key(|e| restore_phase(e.reason));
    let mut out = RestoreOutcome {
        run_id: run.to_string(),
        storage: storage.describe(),
        ..Default::default()
    };
    let batch = storage.max_delete_batch().max(1);
    let mut moved_back: Vec<String> = Vec::new();
    let mut not_in_quarantine: Vec<String> = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let phase = restore_phase(order[start].reason);
        let end = order[start..]
            .iter()
            .position(|e| restore_phase(e.reason) != phase)
            .map_or(order.len(), |n| start + n);
        let results: Vec<ChunkOutcome> = futures::stream::iter(order[start..end].chunks(batch))
            .map(|chunk| restore_chunk(storage, run, chunk, attempts))
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        for r in results {
            out.restored += r.restored.len() as u64;
            out.restored_bytes += r.restored.iter().map(|e| e.bytes).sum::<u64>();
            moved_back.extend(r.restored.iter().map(|e| quarantine_key(run, &e.key)));
            out.kept_live.extend(r.kept_live);
            out.failures.extend(r.failures);
            for key in r.source_missing {
                if gone.contains(key.as_str()) {
                    out.never_quarantined += 1;
                } else {
                    not_in_quarantine.push(key);
                }
            }
        }
        // not in quarantine: in place already (restored before, or never moved), or lost
        let checked: Vec<(String, Result<bool, StorageError>)> =
            futures::stream::iter(std::mem::take(&mut not_in_quarantine))
                .map(|key| async move {
                    let r = storage.exists(&key).await;
                    (key, r)
                })
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
        for (key, r) in checked {
            match r {
                Ok(true) => out.already_in_place += 1,
                Ok(false) => out.missing.push(key),
                Err(e) => out.failures.push(Failure {
                    key,
                    error: e.to_string(),
                }),
            }
        }
        if !out.failures.is_empty() {
            out.stopped_early = end < order.len();
            break;
        }
        start = end;
    }
    if storage.has_directories() {
        let _ = storage
            .remove_empty_dirs(&dirs_below(&run_prefix(run), &moved_back))
            .await;
    }
    if out.is_complete() {
        record.header.state = RunState::Restored;
        record.header.restored_at =
            Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        if let Err(e) = write_record(storage, &record.header, record.entries.into_iter()).await {
            out.failures.push(Failure {
                key: record_at,
                error: format!("the restore is done but its record was not updated: {e}"),
            });
        }
    }
    out.missing.sort();
    Ok(out)
}

#[derive(Default)]
struct ChunkOutcome<'a> {
    restored: Vec<&'a Entry>,
    kept_live: Vec<String>,
    /// Registry keys whose quarantined copy was not there.
    source_missing: Vec<String>,
    failures: Vec<Failure>,
}

async fn restore_chunk<'a>(
    storage: &dyn Storage,
    run: &str,
    chunk: &[&'a Entry],
    attempts: u32,
) -> ChunkOutcome<'a> {
    let mut out = ChunkOutcome::default();
    let mut pending: Vec<&'a Entry> = chunk.to_vec();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
        }
        let moves: Vec<(String, String)> = pending
            .iter()
            .map(|e| (quarantine_key(run, &e.key), e.key.clone()))
            .collect();
        let results = storage.move_batch(&moves, MoveMode::KeepExisting).await;
        let mut still = Vec::new();
        out.failures.clear();
        for (e, r) in pending.into_iter().zip(results) {
            match r {
                Ok(Moved::Moved) => out.restored.push(e),
                Ok(Moved::DestinationExists) => out.kept_live.push(e.key.clone()),
                Ok(Moved::SourceMissing) => out.source_missing.push(e.key.clone()),
                Err(err) => {
                    out.failures.push(Failure {
                        key: e.key.clone(),
                        error: err.to_string(),
                    });
                    still.push(e);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_puts_blobs_back_before_links() {
        assert!(restore_phase(Reason::UnreferencedBlob) < restore_phase(Reason::DanglingLayerLink));
        assert!(restore_phase(Reason::DanglingLayerLink) < restore_phase(Reason::UntaggedManifest));
        assert!(restore_phase(Reason::UnreferencedBlob) < restore_phase(Reason::DanglingTag));
        for revision in [Reason::UntaggedManifest, Reason::DanglingRevision] {
            assert!(restore_phase(revision) < restore_phase(Reason::DanglingTag));
        }
    }
}
