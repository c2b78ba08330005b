//! Quarantine: `gc --quarantine` moves what it would delete under
//! `<root>/registry-gc-quarantine/<RUN-ID>/`, keeping each key's path
//! (`.../<RUN-ID>/docker/registry/v2/blobs/...`), beside the registry tree
//! rather than in it: the registry and our own listing only ever read
//! `docker/registry/v2/`, so a quarantined run is invisible to both.
//!
//! Each run has a record, `<RUN-ID>/run.json`: the run id, time, storage,
//! options, state, and every planned key with its reason and size. It is written
//! before the first move and rewritten at the end, so a run stopped half way is
//! still restorable: `restore` takes each recorded key from wherever it is.
//! `restore` moves keys back (never over a key the registry has now: the live
//! key wins); `purge` deletes runs older than a duration.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::cli::{PurgeArgs, RestoreArgs};
use crate::error::{Error, Exit};
use crate::gc::GcOptions;
use crate::inventory::Inventory;
use crate::layout;
use crate::plan::{Plan, Reason};
use crate::report::{human_bytes, Failure};
use crate::storage::open::open_storage;
use crate::storage::{system_time_ms, MoveMode, Moved, Storage, StorageError};

/// The quarantine's top-level prefix, a sibling of `docker/`.
pub const PREFIX: &str = "registry-gc-quarantine/";
/// The run record's name inside a run's prefix.
pub const RECORD: &str = "run.json";
pub const RECORD_VERSION: u32 = 1;
/// The largest run record read back (about 100 bytes a key).
const MAX_RECORD_BYTES: u64 = 4 << 30;

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("RUN-ID {id:?}: not a run id (letters, digits, '.', '_' and '-'; `registry-gc restore --list STORAGE` shows them)")]
    BadRunId { id: String },
    #[error("{storage}: no quarantined run {id:?} (nothing at {key}); `registry-gc restore --list STORAGE` shows the runs")]
    NoSuchRun { storage: String, id: String, key: String },
    #[error("{key}: not a readable run record: {reason}")]
    BadRecord { key: String, reason: String },
    #[error("{record}: names {key}, outside {v2}; refusing to restore anything from this run", v2 = layout::V2)]
    OutsideRegistryTree { record: String, key: String },
}

/// `registry-gc-quarantine/<run>/`.
pub fn run_prefix(run: &str) -> String {
    format!("{PREFIX}{run}/")
}

/// Where `key` (a registry key) goes in run `run`.
pub fn quarantine_key(run: &str, key: &str) -> String {
    format!("{PREFIX}{run}/{key}")
}

pub fn record_key(run: &str) -> String {
    format!("{PREFIX}{run}/{RECORD}")
}

/// A new run id: the UTC start time (so ids sort by time) and a few hex
/// digits that keep two runs in one second apart.
pub fn new_run_id(now: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(now).to_string().replace(['-', ':'], "");
    let nanos = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{stamp}-{:06x}", (nanos ^ std::process::id().rotate_left(16)) & 0xff_ffff)
}

/// Run ids name one directory under the quarantine prefix: nothing that could
/// reach another.
pub fn check_run_id(id: &str) -> Result<(), QuarantineError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(QuarantineError::BadRunId { id: id.to_string() })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Written before the first move; still so if the run was stopped.
    Moving,
    /// Every planned key was moved.
    Complete,
    /// The sweep ended with failures (named in the record).
    Incomplete,
    /// `restore` put every key back (or found the live key in place).
    Restored,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunOptions {
    pub delete_untagged: bool,
    pub min_age_seconds: u64,
    pub upload_max_age_seconds: u64,
    pub delete_empty_repos: bool,
}

/// The run record without its entries.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunHeader {
    pub schema_version: u32,
    pub run_id: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub started_at_ms: i64,
    pub storage: String,
    pub options: RunOptions,
    pub state: RunState,
    /// Planned keys, and the bytes of the blobs and upload parts among them
    /// (links are not sized by the listing and count 0).
    pub keys: u64,
    pub bytes: u64,
    pub moved_keys: u64,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub failures: Vec<Failure>,
    /// Planned keys that were already gone when their move came: never quarantined.
    #[serde(default)]
    pub gone_before_move: Vec<String>,
    #[serde(default)]
    pub restored_at: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub key: String,
    pub reason: Reason,
    pub bytes: u64,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct RunRecord {
    #[serde(flatten)]
    pub header: RunHeader,
    pub entries: Vec<Entry>,
}

/// A quarantine run about to start: what its record says of it.
#[derive(Debug, Clone)]
pub struct QuarantineRun {
    pub id: String,
    pub started: SystemTime,
    pub options: RunOptions,
}

impl QuarantineRun {
    pub fn new(now: SystemTime, opts: &GcOptions) -> Self {
        let options = RunOptions {
            delete_untagged: opts.delete_untagged,
            min_age_seconds: (opts.min_age_ms / 1000).max(0) as u64,
            upload_max_age_seconds: (opts.upload_max_age_ms / 1000).max(0) as u64,
            delete_empty_repos: opts.delete_empty_repositories,
        };
        QuarantineRun { id: new_run_id(now), started: now, options }
    }

    fn header(&self, storage: &dyn Storage, inv: &Inventory, plan: &Plan, state: RunState) -> RunHeader {
        RunHeader {
            schema_version: RECORD_VERSION,
            run_id: self.id.clone(),
            started_at: humantime::format_rfc3339_seconds(self.started).to_string(),
            started_at_ms: system_time_ms(self.started),
            storage: storage.describe(),
            options: self.options.clone(),
            state,
            keys: plan.deletions.len() as u64,
            bytes: plan.deletions.iter().map(|d| inv.bytes_of(&d.target)).sum(),
            moved_keys: 0,
            finished_at: None,
            failures: Vec::new(),
            gone_before_move: Vec::new(),
            restored_at: None,
        }
    }

    /// Writes the record before anything moves: every planned key is in it.
    pub async fn begin(&self, storage: &dyn Storage, inv: &Inventory, plan: &Plan) -> Result<(), StorageError> {
        let header = self.header(storage, inv, plan, RunState::Moving);
        write_record(storage, &header, plan_entries(inv, plan)).await
    }

    /// Rewrites the record with how the sweep ended.
    pub async fn finish(
        &self,
        storage: &dyn Storage,
        inv: &Inventory,
        plan: &Plan,
        moved: u64,
        failures: &[Failure],
        gone: &[String],
    ) -> Result<(), StorageError> {
        let state = if failures.is_empty() { RunState::Complete } else { RunState::Incomplete };
        let mut header = self.header(storage, inv, plan, state);
        header.moved_keys = moved;
        header.finished_at = Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        header.failures = failures.to_vec();
        header.gone_before_move = gone.to_vec();
        write_record(storage, &header, plan_entries(inv, plan)).await
    }
}

fn plan_entries<'a>(inv: &'a Inventory, plan: &'a Plan) -> impl Iterator<Item = Entry> + 'a {
    plan.deletions.iter().map(|d| Entry { key: inv.key_of(&d.target), reason: d.reason, bytes: inv.bytes_of(&d.target) })
}

/// The record as one JSON object: the header's fields, then `entries`, rendered
/// one at a time (a plan's keys never exist as strings all at once).
fn record_bytes(header: &RunHeader, entries: impl Iterator<Item = Entry>) -> Vec<u8> {
    let mut out = serde_json::to_vec(header).expect("a run header always serializes");
    out.pop(); // its closing brace
    out.extend_from_slice(b",\"entries\":[\n");
    for (i, e) in entries.enumerate() {
        if i > 0 {
            out.extend_from_slice(b",\n");
        }
        serde_json::to_writer(&mut out, &e).expect("an entry always serializes");
    }
    out.extend_from_slice(b"\n]}\n");
    out
}

async fn write_record(storage: &dyn Storage, header: &RunHeader, entries: impl Iterator<Item = Entry>) -> Result<(), StorageError> {
    storage.put(&record_key(&header.run_id), Bytes::from(record_bytes(header, entries))).await
}

pub async fn read_record(storage: &dyn Storage, run: &str) -> Result<RunRecord, QuarantineError> {
    check_run_id(run)?;
    let key = record_key(run);
    let bytes = match storage.get(&key, MAX_RECORD_BYTES).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Err(QuarantineError::NoSuchRun { storage: storage.describe(), id: run.to_string(), key }),
        Err(e) => return Err(e.into()),
    };
    let record: RunRecord =
        serde_json::from_slice(&bytes).map_err(|e| QuarantineError::BadRecord { key: key.clone(), reason: e.to_string() })?;
    if record.header.run_id != run {
        return Err(QuarantineError::BadRecord { key, reason: format!("it is the record of run {:?}", record.header.run_id) });
    }
    Ok(record)
}

/// Order of restore: blobs before the links that point at them, so that the
/// registry never serves a link to a blob not yet back.
fn restore_phase(reason: Reason) -> u8 {
    match reason {
        Reason::UnreferencedBlob => 0,
        Reason::DanglingLayerLink => 1,
        Reason::StaleUpload => 3,
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
        let _ = writeln!(s, "registry-gc restore of run {} on {}", self.run_id, self.storage);
        let _ = writeln!(s, "restored: {} keys ({})", self.restored, human_bytes(self.restored_bytes));
        if self.already_in_place > 0 {
            let _ = writeln!(s, "already in place: {} keys", self.already_in_place);
        }
        if self.never_quarantined > 0 {
            let _ = writeln!(s, "never quarantined (gone before the run moved them): {} keys", self.never_quarantined);
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
            let _ = writeln!(s, "the restore stopped after the failures above; run it again to finish");
        }
        if self.restored > 0 {
            let _ = writeln!(s, "restart the registry (or flush its blob-descriptor cache), as after a collection");
        }
        s
    }
}

/// Puts run `run`'s keys back where they were. Idempotent: a key already in
/// place counts as done, and a key the registry has again is left alone.
pub async fn restore(storage: &dyn Storage, run: &str, concurrency: usize, attempts: u32) -> Result<RestoreOutcome, QuarantineError> {
    let mut record = read_record(storage, run).await?;
    let record_at = record_key(run);
    for e in &record.entries {
        if !crate::sweep::in_registry_tree(&e.key) {
            return Err(QuarantineError::OutsideRegistryTree { record: record_at, key: e.key.clone() });
        }
    }
    let gone: HashSet<&str> = record.header.gone_before_move.iter().map(String::as_str).collect();
    let mut order: Vec<&Entry> = record.entries.iter().collect();
    order.sort_by_key(|e| restore_phase(e.reason));
    let mut out = RestoreOutcome { run_id: run.to_string(), storage: storage.describe(), ..Default::default() };
    let batch = storage.max_delete_batch().max(1);
    let mut moved_back: Vec<String> = Vec::new();
    let mut not_in_quarantine: Vec<String> = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let phase = restore_phase(order[start].reason);
        let end = order[start..].iter().position(|e| restore_phase(e.reason) != phase).map_or(order.len(), |n| start + n);
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
        let checked: Vec<(String, Result<bool, StorageError>)> = futures::stream::iter(std::mem::take(&mut not_in_quarantine))
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
                Err(e) => out.failures.push(Failure { key, error: e.to_string() }),
            }
        }
        if !out.failures.is_empty() {
            out.stopped_early = end < order.len();
            break;
        }
        start = end;
    }
    if storage.has_directories() {
        let _ = storage.remove_empty_dirs(&dirs_below(&run_prefix(run), &moved_back)).await;
    }
    if out.is_complete() {
        record.header.state = RunState::Restored;
        record.header.restored_at = Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        if let Err(e) = write_record(storage, &record.header, record.entries.into_iter()).await {
            out.failures.push(Failure { key: record_at, error: format!("the restore is done but its record was not updated: {e}") });
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

async fn restore_chunk<'a>(storage: &dyn Storage, run: &str, chunk: &[&'a Entry], attempts: u32) -> ChunkOutcome<'a> {
    let mut out = ChunkOutcome::default();
    let mut pending: Vec<&'a Entry> = chunk.to_vec();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
        }
        let moves: Vec<(String, String)> = pending.iter().map(|e| (quarantine_key(run, &e.key), e.key.clone())).collect();
        let results = storage.move_batch(&moves, MoveMode::KeepExisting).await;
        let mut still = Vec::new();
        out.failures.clear();
        for (e, r) in pending.into_iter().zip(results) {
            match r {
                Ok(Moved::Moved) => out.restored.push(e),
                Ok(Moved::DestinationExists) => out.kept_live.push(e.key.clone()),
                Ok(Moved::SourceMissing) => out.source_missing.push(e.key.clone()),
                Err(err) => {
                    out.failures.push(Failure { key: e.key.clone(), error: err.to_string() });
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

/// The directories of `keys` strictly below `top` (which ends in `/`), deepest
/// first, and then `top` itself without its slash: the ones a filesystem may
/// be left with once the keys are gone.
fn dirs_below(top: &str, keys: &[String]) -> Vec<String> {
    let mut dirs: HashSet<String> = HashSet::new();
    for key in keys {
        let Some(rest) = key.strip_prefix(top) else { continue };
        let mut current = rest;
        while let Some(i) = current.rfind('/') {
            current = &current[..i];
            dirs.insert(format!("{top}{current}"));
        }
    }
    let mut dirs: Vec<String> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    dirs
}

/// One quarantined run as `restore --list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub run_id: String,
    /// The record's header; `None` if the run has no readable record.
    pub record: Option<RunHeader>,
    /// What the run's prefix holds now, besides the record.
    pub keys_present: u64,
    pub bytes_present: u64,
    /// Newest last-modified under the run's prefix.
    pub newest_ms: i64,
}

impl RunSummary {
    /// The run's time: its record's, else its newest object's.
    pub fn time_ms(&self) -> i64 {
        self.record.as_ref().map_or(self.newest_ms, |r| r.started_at_ms)
    }
}

/// Every run under the quarantine prefix, oldest first.
pub async fn list_runs(storage: &dyn Storage, concurrency: usize) -> Result<Vec<RunSummary>, QuarantineError> {
    let top = storage.list_dir(PREFIX).await?;
    let ids: Vec<String> =
        top.prefixes.iter().map(|p| p[PREFIX.len()..].trim_end_matches('/').to_string()).filter(|id| check_run_id(id).is_ok()).collect();
    let mut runs: Vec<RunSummary> =
        futures::stream::iter(ids).map(|id| summarize(storage, id)).buffered(concurrency.clamp(1, 16)).try_collect().await?;
    runs.sort_by(|a, b| (a.time_ms(), &a.run_id).cmp(&(b.time_ms(), &b.run_id)));
    Ok(runs)
}

async fn summarize(storage: &dyn Storage, id: String) -> Result<RunSummary, QuarantineError> {
    let record_at = record_key(&id);
    let mut s = RunSummary { run_id: id.clone(), record: None, keys_present: 0, bytes_present: 0, newest_ms: 0 };
    let mut objects = storage.list(&run_prefix(&id));
    while let Some(o) = objects.try_next().await? {
        s.newest_ms = s.newest_ms.max(o.last_modified_ms);
        if o.key != record_at && !o.key.ends_with('/') {
            s.keys_present += 1;
            s.bytes_present += o.size;
        }
    }
    drop(objects);
    // A record that cannot be read leaves the run listed, dated by its objects.
    s.record = match read_record(storage, &id).await {
        Ok(r) => Some(r.header),
        Err(QuarantineError::Storage(e)) if !e.is_not_found() => return Err(e.into()),
        Err(_) => None,
    };
    Ok(s)
}

/// `restore --list`: one line a run.
pub fn format_runs(runs: &[RunSummary], now_ms: i64) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if runs.is_empty() {
        s.push_str("no quarantined runs\n");
        return s;
    }
    let _ = writeln!(s, "{:<26} {:<11} {:>8} {:>10} {:>10} started", "RUN-ID", "STATE", "KEYS", "BYTES", "AGE");
    for r in runs {
        let state = r.record.as_ref().map_or("no-record", |h| match h.state {
            RunState::Moving => "moving",
            RunState::Complete => "complete",
            RunState::Incomplete => "incomplete",
            RunState::Restored => "restored",
        });
        let started = r.record.as_ref().map_or_else(|| "-".to_string(), |h| h.started_at.clone());
        let _ = writeln!(
            s,
            "{:<26} {:<11} {:>8} {:>10} {:>10} {started}",
            r.run_id,
            state,
            r.keys_present,
            human_bytes(r.bytes_present),
            format_age(now_ms - r.time_ms())
        );
    }
    s
}

fn format_age(ms: i64) -> String {
    let secs = (ms / 1000).max(0) as u64;
    match secs {
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct PurgeOutcome {
    pub storage: String,
    pub dry_run: bool,
    /// (run id, keys, bytes) of each run purged (or, in a dry run, to purge).
    pub purged: Vec<(String, u64, u64)>,
    pub kept_runs: u64,
    pub failures: Vec<Failure>,
}

impl PurgeOutcome {
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let verb = if self.dry_run { "would purge" } else { "purged" };
        let _ = writeln!(s, "registry-gc {} on {}", if self.dry_run { "purge dry run" } else { "purge" }, self.storage);
        for (id, keys, bytes) in &self.purged {
            let _ = writeln!(s, "{verb}: run {id}: {keys} keys ({})", human_bytes(*bytes));
        }
        let keys: u64 = self.purged.iter().map(|p| p.1).sum();
        let bytes: u64 = self.purged.iter().map(|p| p.2).sum();
        let _ = writeln!(s, "{verb}: {} runs, {keys} keys ({}); kept {} newer runs", self.purged.len(), human_bytes(bytes), self.kept_runs);
        for f in &self.failures {
            let _ = writeln!(s, "failed: {}: {}", f.key, f.error);
        }
        s
    }
}

/// Deletes every run whose time (its record's, else its newest object's) is
/// more than `older_than` before `now`. The record goes last, so that a purge
/// stopped half way leaves the run listed and purgeable.
pub async fn purge(
    storage: &dyn Storage,
    older_than: Duration,
    now: SystemTime,
    dry_run: bool,
    concurrency: usize,
) -> Result<PurgeOutcome, QuarantineError> {
    let fence = system_time_ms(now) - older_than.as_millis() as i64;
    let mut out = PurgeOutcome { storage: storage.describe(), dry_run, ..Default::default() };
    for run in list_runs(storage, concurrency).await? {
        if run.time_ms() >= fence {
            out.kept_runs += 1;
            continue;
        }
        let prefix = run_prefix(&run.run_id);
        let record_at = record_key(&run.run_id);
        let mut keys: Vec<String> =
            storage.list(&prefix).map_ok(|o| o.key).try_filter(|k| futures::future::ready(!k.ends_with('/'))).try_collect().await?;
        // only ever this run's keys, the record last
        keys.retain(|k| k.starts_with(&prefix) && *k != record_at);
        let n = keys.len() as u64;
        if !dry_run {
            keys.push(record_at.clone());
            let batch = storage.max_delete_batch().max(1);
            let (body, last) = keys.split_at(keys.len() - 1);
            let mut failed = false;
            for group in [body, last] {
                let results: Vec<Vec<Result<(), StorageError>>> = futures::stream::iter(group.chunks(batch))
                    .map(|c| storage.delete_batch(c))
                    .buffered(concurrency.max(1))
                    .collect()
                    .await;
                for (key, r) in group.iter().zip(results.into_iter().flatten()) {
                    if let Err(e) = r {
                        out.failures.push(Failure { key: key.clone(), error: e.to_string() });
                        failed = true;
                    }
                }
                if failed {
                    break;
                }
            }
            if storage.has_directories() {
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
    if !dry_run && storage.has_directories() && out.kept_runs == 0 && out.failures.is_empty() {
        let _ = storage.remove_empty_dirs(&[PREFIX.trim_end_matches('/').to_string()]).await;
    }
    Ok(out)
}

/// `registry-gc restore`, start to finish; returns the exit code.
pub async fn restore_command(args: &RestoreArgs, quiet: bool) -> Exit {
    report_exit(run_restore(args, quiet).await)
}

async fn run_restore(args: &RestoreArgs, quiet: bool) -> Result<Exit, Error> {
    let (settings, run_id) = args.resolve()?;
    let storage = open_storage(&settings.storage, &settings.backend)?;
    let concurrency = args.concurrency.unwrap_or(64) as usize;
    let Some(id) = run_id else {
        let runs = list_runs(storage.as_ref(), concurrency).await?;
        // the listing is the command's output: printed even with --quiet
        print!("{}", format_runs(&runs, system_time_ms(SystemTime::now())));
        return Ok(Exit::Success);
    };
    let out = restore(storage.as_ref(), &id, concurrency, 3).await?;
    if !quiet {
        print!("{}", out.summary());
    }
    if out.is_complete() {
        Ok(Exit::Success)
    } else {
        eprintln!("registry-gc: the restore of run {id} is incomplete ({} failed, {} missing)", out.failures.len(), out.missing.len());
        Ok(Exit::Incomplete)
    }
}

/// `registry-gc purge`, start to finish; returns the exit code.
pub async fn purge_command(args: &PurgeArgs, quiet: bool) -> Exit {
    report_exit(run_purge(args, quiet).await)
}

async fn run_purge(args: &PurgeArgs, quiet: bool) -> Result<Exit, Error> {
    let file = args.storage.config_file()?;
    let settings = args.storage.resolve(&file)?;
    let storage = open_storage(&settings.storage, &settings.backend)?;
    let concurrency = args.concurrency.unwrap_or(64) as usize;
    let out = purge(storage.as_ref(), args.older_than, SystemTime::now(), args.dry_run, concurrency).await?;
    if !quiet {
        print!("{}", out.summary());
    }
    if out.failures.is_empty() {
        Ok(Exit::Success)
    } else {
        eprintln!("registry-gc: {} deletions failed; run the purge again to finish", out.failures.len());
        Ok(Exit::Incomplete)
    }
}

fn report_exit(result: Result<Exit, Error>) -> Exit {
    result.unwrap_or_else(|e| {
        eprintln!("registry-gc: {e}");
        e.exit()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_stay_one_path_component() {
        let a = new_run_id(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let b = new_run_id(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_001));
        assert!(a.starts_with("20270115T080000Z-") && a < b, "{a} {b}");
        check_run_id(&a).unwrap();
        for bad in ["", "..", "../x", "a/b", ".hidden", "a b", "x\n"] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn record_round_trips_with_its_entries() {
        let header = RunHeader {
            schema_version: RECORD_VERSION,
            run_id: "r1".into(),
            started_at: "2026-11-29T02:00:00Z".into(),
            started_at_ms: 5,
            storage: "file:///x".into(),
            options: RunOptions { delete_untagged: true, min_age_seconds: 0, upload_max_age_seconds: 60, delete_empty_repos: false },
            state: RunState::Moving,
            keys: 2,
            bytes: 7,
            moved_keys: 0,
            finished_at: None,
            failures: Vec::new(),
            gone_before_move: Vec::new(),
            restored_at: None,
        };
        let entries = vec![
            Entry { key: "docker/registry/v2/blobs/x".into(), reason: Reason::UnreferencedBlob, bytes: 7 },
            Entry { key: "docker/registry/v2/repositories/a/_layers/sha256/y/link".into(), reason: Reason::DanglingLayerLink, bytes: 0 },
        ];
        let bytes = record_bytes(&header, entries.clone().into_iter());
        let back: RunRecord = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.header.run_id, "r1");
        assert_eq!(back.header.state, RunState::Moving);
        assert_eq!(back.entries.len(), 2);
        assert_eq!(back.entries[1].reason, Reason::DanglingLayerLink);
        let empty: RunRecord = serde_json::from_slice(&record_bytes(&header, std::iter::empty())).unwrap();
        assert!(empty.entries.is_empty());
    }

    #[test]
    fn restore_puts_blobs_back_before_links() {
        assert!(restore_phase(Reason::UnreferencedBlob) < restore_phase(Reason::DanglingLayerLink));
        assert!(restore_phase(Reason::DanglingLayerLink) < restore_phase(Reason::UntaggedManifest));
        assert!(restore_phase(Reason::UnreferencedBlob) < restore_phase(Reason::DanglingTag));
    }

    #[test]
    fn dirs_below_stop_at_the_top() {
        let top = "registry-gc-quarantine/r/";
        let dirs = dirs_below(top, &[format!("{top}docker/registry/v2/blobs/sha256/ab/abc/data"), "elsewhere/x".to_string()]);
        assert_eq!(dirs[0], format!("{top}docker/registry/v2/blobs/sha256/ab/abc"));
        assert_eq!(dirs.last().unwrap(), &format!("{top}docker"));
        assert_eq!(dirs.len(), 7);
    }
}
