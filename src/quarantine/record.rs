//! The run record, `<RUN-ID>/run.json`: its types, how it is written (one
//! entry at a time) and read back, and `QuarantineRun`, the sweep's side of a
//! run, which writes the record before the first move and again at the end.

use std::time::SystemTime;

use bytes::Bytes;

use super::{
    check_run_id, new_run_id, record_key, QuarantineError, MAX_RECORD_BYTES, RECORD_VERSION,
};
use crate::gc::GcOptions;
use crate::inventory::Inventory;
use crate::plan::{Plan, Reason};
use crate::report::Failure;
use crate::storage::{system_time_ms, Storage, StorageError};

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
        QuarantineRun {
            id: new_run_id(now),
            started: now,
            options,
        }
    }

    fn header(
        &self,
        storage: &dyn Storage,
        inv: &Inventory,
        plan: &Plan,
        state: RunState,
    ) -> RunHeader {
        RunHeader {
            schema_version: RECORD_VERSION,
            run_id: self.id.clone(),
            started_at: humantime::format_rfc3339_seconds(self.started).to_string(),
            started_at_ms: system_time_ms(self.started),
            storage: storage.describe(),
            options: self.options.clone(),
            state,
            keys: plan.deletions.len() as u64,
            bytes: plan
                .deletions
                .iter()
                .map(|d| inv.bytes_of(&d.target(inv)))
                .sum(),
            moved_keys: 0,
            finished_at: None,
            failures: Vec::new(),
            gone_before_move: Vec::new(),
            restored_at: None,
        }
    }

    /// Writes the record before anything moves: every planned key is in it.
    pub async fn begin(
        &self,
        storage: &dyn Storage,
        inv: &Inventory,
        plan: &Plan,
    ) -> Result<(), StorageError> {
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
        let state = if failures.is_empty() {
            RunState::Complete
        } else {
            RunState::Incomplete
        };
        let mut header = self.header(storage, inv, plan, state);
        header.moved_keys = moved;
        header.finished_at = Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        header.failures = failures.to_vec();
        header.gone_before_move = gone.to_vec();
        write_record(storage, &header, plan_entries(inv, plan)).await
    }
}

fn plan_entries<'a>(inv: &'a Inventory, plan: &'a Plan) -> impl Iterator<Item = Entry> + 'a {
    plan.in_key_order(inv).map(|d| {
        let target = d.target(inv);
        Entry {
            key: inv.key_of(&target),
            reason: d.reason(),
            bytes: inv.bytes_of(&target),
        }
    })
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

pub(super) async fn write_record(
    storage: &dyn Storage,
    header: &RunHeader,
    entries: impl Iterator<Item = Entry>,
) -> Result<(), StorageError> {
    storage
        .put(
            &record_key(&header.run_id),
            Bytes::from(record_bytes(header, entries)),
        )
        .await
}

pub async fn read_record(storage: &dyn Storage, run: &str) -> Result<RunRecord, QuarantineError> {
    check_run_id(run)?;
    let key = record_key(run);
    let bytes = match storage.get(&key, MAX_RECORD_BYTES).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            return Err(QuarantineError::NoSuchRun {
                storage: storage.describe(),
                id: run.to_string(),
                key,
            })
        }
        Err(e) => return Err(e.into()),
    };
    let record: RunRecord =
        serde_json::from_slice(&bytes).map_err(|e| QuarantineError::BadRecord {
            key: key.clone(),
            reason: e.to_string(),
        })?;
    if record.header.run_id != run {
        return Err(QuarantineError::BadRecord {
            key,
            reason: format!("it is the record of run {:?}", record.header.run_id),
        });
    }
    Ok(record)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_with_its_entries() {
        let header = RunHeader {
            schema_version: RECORD_VERSION,
            run_id: "r1".into(),
            started_at: "2026-11-29T02:00:00Z".into(),
            started_at_ms: 5,
            storage: "file:///x".into(),
            options: RunOptions {
                delete_untagged: true,
                min_age_seconds: 0,
                upload_max_age_seconds: 60,
                delete_empty_repos: false,
            },
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
            Entry {
                key: "docker/registry/v2/blobs/x".into(),
                reason: Reason::UnreferencedBlob,
                bytes: 7,
            },
            Entry {
                key: "docker/registry/v2/repositories/a/_layers/sha256/y/link".into(),
                reason: Reason::DanglingLayerLink,
                bytes: 0,
            },
        ];
        let bytes = record_bytes(&header, entries.clone().into_iter());
        let back: RunRecord = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.header.run_id, "r1");
        assert_eq!(back.header.state, RunState::Moving);
        assert_eq!(back.entries.len(), 2);
        assert_eq!(back.entries[1].reason, Reason::DanglingLayerLink);
        let empty: RunRecord =
            serde_json::from_slice(&record_bytes(&header, std::iter::empty())).unwrap();
        assert!(empty.entries.is_empty());
    }
}
