//! `restore --list`: every run under the quarantine prefix, what it holds
//! now, and the one-line-a-run table.

use futures::{StreamExt, TryStreamExt};

use super::{
    check_run_id, read_record, record_key, run_prefix, QuarantineError, RunHeader, RunState, PREFIX,
};
use crate::report::human_bytes;
use crate::storage::Storage;

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
    /// The run's time: its last write, the later of its start (its
    /// record's, or without one the start its id gives) and its newest
    /// object. A gc writes its record when the sweep starts and ends, and a
    /// move on S3 or Azure is a fresh copy, so a run being filled now is not
    /// dated by a start hours ago (a long listing); a move on disk keeps each
    /// file's mtime, so objects alone can make a run made a moment ago look
    /// old: a run is dated old only when both say so.
    pub fn time_ms(&self) -> i64 {
        let started = match &self.record {
            Some(r) => Some(r.started_at_ms),
            None => super::run_id_started_ms(&self.run_id),
        };
        started.map_or(self.newest_ms, |t| t.max(self.newest_ms))
    }
}

/// Every run under the quarantine prefix, oldest first.
pub async fn list_runs(
    storage: &dyn Storage,
    concurrency: usize,
) -> Result<Vec<RunSummary>, QuarantineError> {
    let top = storage.list_dir(PREFIX).await?;
    let ids: Vec<String> = top
        .prefixes
        .iter()
        .map(|p| p[PREFIX.len()..].trim_end_matches('/').to_string())
        .filter(|id| check_run_id(id).is_ok())
        .collect();
    let mut runs: Vec<RunSummary> = futures::stream::iter(ids)
        .map(|id| summarize(storage, id))
        .buffered(concurrency.clamp(1, 16))
        .try_collect()
        .await?;
    runs.sort_by(|a, b| (a.time_ms(), &a.run_id).cmp(&(b.time_ms(), &b.run_id)));
    Ok(runs)
}

async fn summarize(storage: &dyn Storage, id: String) -> Result<RunSummary, QuarantineError> {
    let record_at = record_key(&id);
    let mut s = RunSummary {
        run_id: id.clone(),
        record: None,
        keys_present: 0,
        bytes_present: 0,
        newest_ms: 0,
    };
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
    let _ = writeln!(
        s,
        "{:<26} {:<11} {:>8} {:>10} {:>10} started",
        "RUN-ID", "STATE", "KEYS", "BYTES", "AGE"
    );
    for r in runs {
        let state = r.record.as_ref().map_or("no-record", |h| match h.state {
            RunState::Moving => "moving",
            RunState::Complete => "complete",
            RunState::Incomplete => "incomplete",
            RunState::Restored => "restored",
        });
        let started = r
            .record
            .as_ref()
            .map_or_else(|| "-".to_string(), |h| h.started_at.clone());
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
