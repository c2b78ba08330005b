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
//!
//! This module holds what every part shares: the run ids, the keys a run
//! lives at, and the errors. The rest is one concern a file: `record` (the run
//! record, and the sweep's side of a run), `restore`, `list` (`restore --list`),
//! `purge`, and `command` (the `restore` and `purge` commands).

use std::collections::HashSet;
use std::time::SystemTime;

use crate::layout;
use crate::storage::StorageError;

mod command;
mod list;
mod purge;
mod record;
mod restore;

pub use command::{purge_command, restore_command};
pub use list::{format_runs, list_runs, RunSummary};
pub use purge::{purge, PurgeOutcome};
pub use record::{read_record, Entry, QuarantineRun, RunHeader, RunOptions, RunRecord, RunState};
pub use restore::{restore, RestoreOutcome, UnmetNeed};

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
    NoSuchRun {
        storage: String,
        id: String,
        key: String,
    },
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
    let stamp = humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(['-', ':'], "");
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{stamp}-{:06x}",
        (nanos ^ std::process::id().rotate_left(16)) & 0xff_ffff
    )
}

/// When a run started, read back from its id (`new_run_id`'s UTC stamp);
/// `None` for an id not of that shape.
pub fn run_id_started_ms(id: &str) -> Option<i64> {
    let b = id.as_bytes();
    if b.len() < 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let part =
        |r: std::ops::Range<usize>| id.get(r).filter(|p| p.bytes().all(|c| c.is_ascii_digit()));
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        part(0..4)?,
        part(4..6)?,
        part(6..8)?,
        part(9..11)?,
        part(11..13)?,
        part(13..15)?
    );
    humantime::parse_rfc3339(&text)
        .ok()
        .map(crate::storage::system_time_ms)
}

/// Run ids name one directory under the quarantine prefix: nothing that could
/// reach another.
pub fn check_run_id(id: &str) -> Result<(), QuarantineError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(QuarantineError::BadRunId { id: id.to_string() })
    }
}

/// The directories of `keys` strictly below `top` (which ends in `/`), deepest
/// first, and then `top` itself without its slash: the ones a filesystem may
/// be left with once the keys are gone.
fn dirs_below(top: &str, keys: &[String]) -> Vec<String> {
    let mut dirs: HashSet<String> = HashSet::new();
    for key in keys {
        let Some(rest) = key.strip_prefix(top) else {
            continue;
        };
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
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn run_ids_sort_by_time_and_stay_one_path_component() {
        let a = new_run_id(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let b = new_run_id(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_001));
        assert!(a.starts_with("20270115T080000Z-") && a < b, "{a} {b}");
        assert_eq!(run_id_started_ms(&a), Some(1_800_000_000_000));
        for other in [
            "",
            "x",
            "20270115T0800",
            "2027011XT080000Z-1",
            "20271315T080000Z-1",
        ] {
            assert_eq!(run_id_started_ms(other), None, "{other:?}");
        }
        check_run_id(&a).unwrap();
        for bad in ["", "..", "../x", "a/b", ".hidden", "a b", "x\n"] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dirs_below_stop_at_the_top() {
        let top = "registry-gc-quarantine/r/";
        let dirs = dirs_below(
            top,
            &[
                format!("{top}docker/registry/v2/blobs/sha256/ab/abc/data"),
                "elsewhere/x".to_string(),
            ],
        );
        assert_eq!(
            dirs[0],
            format!("{top}docker/registry/v2/blobs/sha256/ab/abc")
        );
        assert_eq!(dirs.last().unwrap(), &format!("{top}docker"));
        assert_eq!(dirs.len(), 7);
    }
}
