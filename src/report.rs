//! The run's report: one struct that the terminal summary and the JSON report
//! both render. Its JSON shape is versioned (`schema_version`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::inventory::{Inventory, StrayKey};
use crate::plan::{Deletion, Reason};
use crate::recheck::{BrokenByRace, RecheckOutcome};
use crate::storage::counts::{RequestFloor, RequestTotals};

pub const SCHEMA_VERSION: u32 = 2;

/// Something the operator should look at; never fatal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub key: String,
    pub message: String,
}

impl Warning {
    pub fn new(key: &str, message: &str) -> Self {
        Warning {
            key: key.to_string(),
            message: message.to_string(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct CountBytes {
    pub count: u64,
    pub bytes: u64,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Seen {
    pub keys: u64,
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    pub blobs: u64,
    /// `null` when not every blob was sized: a filesystem's listing stats only
    /// the blobs the plan would delete (`registry-gc du` sizes them all).
    pub blob_bytes: Option<u64>,
    pub uploads: u64,
}

/// Wall time of each phase, in seconds: where a run's time went.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct PhaseSeconds {
    /// Listing every key (the inventory).
    pub listing: f64,
    /// Reading tag links and manifests.
    pub mark: f64,
    /// Stat'ing what the plan would delete, where the listing named it only.
    pub stat: f64,
    pub plan: f64,
    /// Listing the repositories again before the sweep.
    pub recheck: f64,
    pub sweep: f64,
    /// Listing the repositories once more after the sweep.
    pub check_after_sweep: f64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    pub key: String,
    pub error: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub storage: String,
    pub dry_run: bool,
    pub delete_untagged: bool,
    pub min_age_seconds: u64,
    /// `--offline`: no re-check before the sweep, no look after it.
    pub offline: bool,
    pub started_at: String,
    pub duration_seconds: f64,
    pub phase_seconds: PhaseSeconds,
    pub seen: Seen,
    /// Per reason: what was deleted (or, in a dry run, would be).
    pub planned: BTreeMap<Reason, CountBytes>,
    /// Keys actually deleted (zero in a dry run).
    pub deleted_keys: u64,
    pub bytes_freed: u64,
    pub kept_blobs: u64,
    /// `null` when the kept blobs were not all sized (see `Seen::blob_bytes`).
    pub kept_blob_bytes: Option<u64>,
    pub spared_by_min_age: u64,
    pub empty_repositories: Vec<String>,
    pub empty_repositories_removed: bool,
    /// Empty directories left behind by the registry or earlier runs (filesystems),
    /// planned for removal.
    pub empty_directories: u64,
    /// Directories actually removed (those above, those the sweep emptied, and
    /// those of empty repositories when asked).
    pub directories_removed: u64,
    pub failures: Vec<Failure>,
    pub warnings: Vec<Warning>,
    pub strays: Vec<StrayKey>,
    pub requests: RequestTotals,
    /// The fewest requests the layout allows for this run (paged stores only).
    pub request_floor: Option<RequestFloor>,
    pub tags_matched_by_etag: u64,
    pub manifest_cache_hits: u64,
    /// Bytes of manifests read from storage or the cache.
    pub manifest_bytes_read: u64,
    /// A phase of the sweep had failures, so the later phases were not started.
    pub sweep_stopped_early: bool,
    /// The repositories listed again just before the sweep: what was written
    /// since the fence, and the deletions that took out of the plan.
    pub recheck: RecheckOutcome,
    /// Manifests pushed while the sweep ran that name a blob it deleted (the
    /// window the re-check leaves): push them again.
    pub broken_by_concurrent_pushes: Vec<BrokenByRace>,
    /// Why the look after the sweep could not be made (a listing or read
    /// that failed): what a push in the sweep's window needed may be gone
    /// unnoticed, so the run does not end as a success.
    pub check_after_sweep_error: Option<String>,
    /// `--quarantine`: keys were (or would be) moved into a quarantine run, not deleted.
    pub quarantine: bool,
    /// The quarantine run's id (not in a dry run).
    pub quarantine_run: Option<String>,
    /// Why `--report` could not be written after a real sweep (checked
    /// before the run; this is a failure on the way, a full disk): the run
    /// still ends with its summary, and exits 4.
    #[serde(skip)]
    pub unwritten_report: Option<String>,
}

/// How a file is written at the end of the run, which decides what must be
/// writable before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrittenAs {
    /// Created or truncated in place (`--report`): the file, or, when it does
    /// not exist yet, its directory.
    InPlace,
    /// Written beside and renamed over (`--metrics`): the directory.
    Renamed,
}

/// Checks, before a run changes anything, that `path` (a `--report` or
/// `--metrics` file) can be written as it will be: found out after the
/// sweep, it would hide what the sweep did. Leaves nothing behind and
/// changes no existing file: one is opened without truncating it, and a
/// probe (the file itself when it does not exist, or a uniquely named one
/// beside it) is removed at once.
pub fn check_writable(path: &Path, how: WrittenAs) -> std::io::Result<()> {
    if path.is_dir() {
        return Err(std::io::Error::other("is a directory"));
    }
    if how == WrittenAs::InPlace {
        // opened as the end of the run will open it (through a symbolic
        // link too), without truncating; created here, it is removed again
        // (a link's target, not the link)
        let existed = path.exists();
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)?;
        if !existed {
            std::fs::remove_file(std::fs::canonicalize(path)?)?;
        }
        return Ok(());
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // unique, so that a probe left by a killed run, or another run's, is
    // never in the way (in a container every run may be pid 1)
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let probe = dir.join(format!(".registry-gc-probe-{}-{nanos}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Writes the JSON report: the report's fields, then `deletions`, every key
/// with its reason and size, streamed so that a plan of millions of deletions
/// never exists as strings all at once.
pub fn write_json(
    out: &mut dyn std::io::Write,
    report: &Report,
    deletions: impl Iterator<Item = (String, Reason, u64)>,
) -> std::io::Result<()> {
    use serde::ser::{SerializeMap, SerializeSeq, Serializer};

    struct Deletions<I>(std::cell::RefCell<Option<I>>);
    impl<I: Iterator<Item = (String, Reason, u64)>> serde::Serialize for Deletions<I> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            #[derive(serde::Serialize)]
            struct Row<'a> {
                key: &'a str,
                reason: Reason,
                bytes: u64,
            }
            let mut seq = s.serialize_seq(None)?;
            for (key, reason, bytes) in self.0.borrow_mut().take().into_iter().flatten() {
                seq.serialize_element(&Row {
                    key: &key,
                    reason,
                    bytes,
                })?;
            }
            seq.end()
        }
    }

    let fields = serde_json::to_value(report).map_err(std::io::Error::other)?;
    let mut ser = serde_json::Serializer::pretty(out);
    let mut map = ser.serialize_map(None).map_err(std::io::Error::other)?;
    if let serde_json::Value::Object(fields) = fields {
        for (k, v) in fields {
            map.serialize_entry(&k, &v).map_err(std::io::Error::other)?;
        }
    }
    map.serialize_entry(
        "deletions",
        &Deletions(std::cell::RefCell::new(Some(deletions))),
    )
    .map_err(std::io::Error::other)?;
    SerializeMap::end(map).map_err(std::io::Error::other)
}

impl Report {
    /// What a finished run leaves to do, one line each (all of them: with
    /// `-q` these lines are all the binary says), in the order to read them.
    /// A run with any exits 4.
    pub fn left_to_do(&self) -> Vec<String> {
        let mut left = Vec::new();
        if let Some(why) = &self.unwritten_report {
            left.push(format!("the sweep ran, but {why}"));
        }
        // the quarantine run's record is not a planned key: its failure to be
        // rewritten leaves every move in place
        let record = self
            .quarantine_run
            .as_deref()
            .map(crate::quarantine::record_key);
        let (record_failures, key_failures): (Vec<&Failure>, Vec<&Failure>) = self
            .failures
            .iter()
            .partition(|f| record.as_ref() == Some(&f.key));
        if !key_failures.is_empty() {
            let n = key_failures.len();
            left.push(match (self.quarantine, n) {
                (false, 1) => "1 deletion failed; run again to finish".to_string(),
                (false, _) => format!("{n} deletions failed; run again to finish"),
                (true, 1) => "1 key was not moved into quarantine; run again to finish".to_string(),
                (true, _) => {
                    format!("{n} keys were not moved into quarantine; run again to finish")
                }
            });
        }
        if !record_failures.is_empty() {
            left.push(
                "the quarantine run's record was not updated (below): its keys were moved, and \
                 `registry-gc restore` still finds them"
                    .to_string(),
            );
        }
        if !self.broken_by_concurrent_pushes.is_empty() {
            let images: std::collections::BTreeSet<String> = self
                .broken_by_concurrent_pushes
                .iter()
                .map(|b| b.reference())
                .collect();
            left.push(format!(
                "{} images pushed or tagged during the sweep need keys it deleted; push them again: {}",
                images.len(),
                images.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if let Some(why) = &self.check_after_sweep_error {
            left.push(format!(
                "the sweep ran, but the look for pushes made during it failed ({why}): an image pushed \
                 or tagged in that window may need a key the sweep deleted; run again, or check with \
                 `registry-gc fsck`"
            ));
        }
        left
    }

    pub fn tally(inv: &Inventory, deletions: &[Deletion]) -> BTreeMap<Reason, CountBytes> {
        let mut planned = BTreeMap::new();
        for d in deletions {
            let e: &mut CountBytes = planned.entry(d.reason()).or_default();
            e.count += 1;
            e.bytes += inv.bytes_of(&d.target(inv));
        }
        planned
    }

    /// The closing summary for people; plain lines, no colour, so that it reads
    /// the same in a terminal, a cron mail and a CI log.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let verb = match (self.dry_run, self.quarantine) {
            (true, false) => "would delete",
            (false, false) => "deleted",
            (true, true) => "would quarantine",
            (false, true) => "quarantined",
        };
        let _ = writeln!(
            s,
            "registry-gc {} on {}",
            if self.dry_run {
                "dry run"
            } else {
                "collection"
            },
            self.storage
        );
        let _ = writeln!(
            s,
            "seen: {} repositories, {} manifests, {} tags, {} blobs{}, {} uploads, {} keys",
            self.seen.repositories,
            self.seen.manifests,
            self.seen.tags,
            self.seen.blobs,
            in_parentheses(self.seen.blob_bytes),
            self.seen.uploads,
            self.seen.keys
        );
        for reason in Reason::ALL {
            if let Some(c) = self.planned.get(&reason) {
                let bytes = if c.bytes > 0 {
                    format!(" ({})", human_bytes(c.bytes))
                } else {
                    String::new()
                };
                let _ = writeln!(s, "{verb}: {} {}{}", c.count, reason.describe(), bytes);
            }
        }
        if self.planned.is_empty() {
            // a real run's tally is what it did: a sweep whose every deletion
            // failed had something to delete all the same
            let nothing = if self.dry_run || self.failures.is_empty() {
                "nothing to delete"
            } else {
                "nothing deleted: every deletion failed (below)"
            };
            let _ = writeln!(s, "{nothing}");
        }
        let freed = self
            .planned
            .get(&Reason::UnreferencedBlob)
            .map_or(0, |c| c.bytes)
            + self
                .planned
                .get(&Reason::StaleUpload)
                .map_or(0, |c| c.bytes);
        let freed_verb = match (self.dry_run, self.quarantine) {
            (true, false) => "would free",
            (false, false) => "freed",
            // quarantined bytes are still stored (and billed) until purged
            (true, true) => "would move to quarantine",
            (false, true) => "moved to quarantine",
        };
        let _ = writeln!(
            s,
            "{}: {}; kept {} blobs{}",
            freed_verb,
            human_bytes(if self.dry_run {
                freed
            } else {
                self.bytes_freed
            }),
            self.kept_blobs,
            in_parentheses(self.kept_blob_bytes)
        );
        if self.empty_directories > 0 || self.directories_removed > 0 {
            if self.dry_run {
                let _ = writeln!(
                    s,
                    "would remove: {} empty directories left behind (and those the sweep empties)",
                    self.empty_directories
                );
            } else {
                let _ = writeln!(s, "removed: {} empty directories", self.directories_removed);
            }
        }
        if self.spared_by_min_age > 0 {
            let _ = writeln!(
                s,
                "spared {} objects younger than --min-age {}s",
                self.spared_by_min_age, self.min_age_seconds
            );
        }
        if self.offline {
            let _ = writeln!(s, "offline: the registry was declared stopped or read-only; no re-check before the sweep, no look after it");
        }
        if self.recheck.recent_keys > 0 {
            let _ = writeln!(
                s,
                "re-check before the sweep: {} keys written since the fence; withdrew {} deletions ({}) they need",
                self.recheck.recent_keys,
                self.recheck.withdrawn,
                human_bytes(self.recheck.withdrawn_bytes)
            );
        }
        if !self.empty_repositories.is_empty() {
            let action = if self.empty_repositories_removed && !self.dry_run {
                "removed"
            } else {
                "left"
            };
            let _ = writeln!(
                s,
                "empty repositories ({action}): {}",
                self.empty_repositories.join(", ")
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {}: {}", one_line_key(&w.key), w.message);
        }
        if !self.strays.is_empty() {
            let _ = writeln!(s, "stray keys (skipped): {}", self.strays.len());
            for stray in self.strays.iter().take(20) {
                let _ = writeln!(
                    s,
                    "  {} ({})",
                    one_line_key(&stray.key),
                    stray.reason.describe()
                );
            }
            if self.strays.len() > 20 {
                let _ = writeln!(
                    s,
                    "  ... and {} more (see --report)",
                    self.strays.len() - 20
                );
            }
        }
        for b in &self.broken_by_concurrent_pushes {
            let _ = writeln!(
                s,
                "broken by a push during the sweep: {} needs {}, deleted by this run; push the image again",
                b.reference(),
                b.deleted_key
            );
        }
        for f in &self.failures {
            let _ = writeln!(s, "failed: {}: {}", f.key, f.error);
        }
        if self.sweep_stopped_early {
            let _ = writeln!(s, "the sweep stopped after the failures above; later phases were not started (the next run finishes them)");
        }
        if let Some(run) = &self.quarantine_run {
            let _ = writeln!(s, "quarantine run: {run} (undo: registry-gc restore STORAGE {run}; free: registry-gc purge STORAGE --older-than DURATION)");
        }
        let r = &self.requests;
        let _ = write!(
            s,
            "requests: {} list, {} get, {} head, {} put, {} delete",
            r.list, r.get, r.head, r.put, r.delete
        );
        if let Some(f) = &self.request_floor {
            let _ = write!(
                s,
                " (floor: {} list, {} get, {} delete)",
                f.list, f.get, f.delete
            );
        }
        let _ = writeln!(s, "; {:.2}s", self.duration_seconds);
        let p = &self.phase_seconds;
        let _ = write!(s, "time: listing {:.2}s, mark {:.2}s", p.listing, p.mark);
        if p.stat > 0.0 {
            let _ = write!(s, ", sizing candidates {:.2}s", p.stat);
        }
        let _ = write!(s, ", plan {:.2}s, re-check {:.2}s", p.plan, p.recheck);
        if !self.dry_run {
            let _ = write!(
                s,
                ", sweep {:.2}s, check after the sweep {:.2}s",
                p.sweep, p.check_after_sweep
            );
        }
        s.push('\n');
        if self.tags_matched_by_etag > 0 || self.manifest_cache_hits > 0 {
            let _ = writeln!(
                s,
                "reads saved: {} tag links known from their ETag, {} manifests from the cache",
                self.tags_matched_by_etag, self.manifest_cache_hits
            );
        }
        s
    }
}

/// A key as the summary prints it: control characters (a newline in a name
/// another tool wrote) escaped, so that each warning stays one line. The JSON
/// report keeps the exact key.
pub fn one_line_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.chars().any(char::is_control) {
        key.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        key.into()
    }
}

/// ` (1.2 GiB)`, or nothing for bytes not measured.
fn in_parentheses(bytes: Option<u64>) -> String {
    bytes
        .map(|b| format!(" ({})", human_bytes(b)))
        .unwrap_or_default()
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_files_are_checked_as_they_are_written_and_probes_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // a probe left by a killed run of the same pid (pid 1 in containers)
        let leftover = dir
            .path()
            .join(format!(".registry-gc-probe-{}", std::process::id()));
        std::fs::write(&leftover, "").unwrap();
        let existing = dir.path().join("report.json");
        std::fs::write(&existing, "keep").unwrap();
        let before: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        for how in [WrittenAs::InPlace, WrittenAs::Renamed] {
            check_writable(&existing, how).unwrap();
            check_writable(&dir.path().join("new.prom"), how).unwrap();
        }
        let mut after: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        after.sort();
        let mut before = before;
        before.sort();
        assert_eq!(after, before, "nothing left behind, nothing removed");
        assert_eq!(
            std::fs::read_to_string(&existing).unwrap(),
            "keep",
            "not truncated"
        );
        // a report streamed to the terminal: nothing to create beside it
        check_writable(Path::new("/dev/null"), WrittenAs::InPlace).unwrap();
        // a link to a report not written yet: the link stays, no target is left
        std::fs::create_dir(dir.path().join("reports")).unwrap();
        let target = dir.path().join("reports/today.json");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        check_writable(&link, WrittenAs::InPlace).unwrap();
        assert!(!target.exists() && link.symlink_metadata().is_ok());
        for how in [WrittenAs::InPlace, WrittenAs::Renamed] {
            assert!(check_writable(dir.path(), how).is_err(), "a directory");
            assert!(check_writable(&dir.path().join("no/such/dir/r.json"), how).is_err());
        }
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
