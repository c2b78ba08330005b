//! The `fsck` report: what was checked, the findings sorted and counted, the
//! text for people (the JSON is the report serialized) and the exit code.

use std::collections::BTreeMap;

use super::{Finding, Kind, SCHEMA_VERSION};
use crate::error::Exit;
use crate::report::human_bytes;

/// What was checked, for the summary.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Checked {
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub links_read: u64,
    /// Blobs re-hashed (`--verify-content`); `None` without it.
    pub blobs_verified: Option<u64>,
    pub bytes_verified: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FsckReport {
    pub schema_version: u32,
    pub storage: String,
    pub strict: bool,
    pub checked: Checked,
    /// Findings that count for the exit code.
    pub problems: u64,
    pub informational: u64,
    /// Per kind: how many.
    pub counts: BTreeMap<Kind, u64>,
    /// Sorted by kind, then key.
    pub findings: Vec<FindingOut>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FindingOut {
    pub kind: Kind,
    pub severity: &'static str,
    pub key: String,
    pub images: Vec<String>,
    pub message: String,
}

impl FsckReport {
    pub fn new(
        storage: String,
        strict: bool,
        checked: Checked,
        findings: Vec<Finding>,
    ) -> FsckReport {
        let mut counts = BTreeMap::new();
        let (mut problems, mut informational) = (0, 0);
        let findings: Vec<FindingOut> = findings
            .into_iter()
            .map(|f| {
                *counts.entry(f.kind).or_insert(0) += 1;
                let problem = f.kind.is_problem() || strict;
                if problem {
                    problems += 1;
                } else {
                    informational += 1;
                }
                let severity = if f.kind.is_problem() {
                    "problem"
                } else {
                    "info"
                };
                FindingOut {
                    kind: f.kind,
                    severity,
                    key: f.key,
                    images: f.images,
                    message: f.message,
                }
            })
            .collect();
        FsckReport {
            schema_version: SCHEMA_VERSION,
            storage,
            strict,
            checked,
            problems,
            informational,
            counts,
            findings,
        }
    }

    pub fn exit(&self) -> Exit {
        if self.problems > 0 {
            Exit::Problems
        } else {
            Exit::Success
        }
    }

    /// Findings grouped by kind, problems first, with counts.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let c = &self.checked;
        let mut out = format!("registry-gc fsck on {}\n", self.storage);
        let _ = write!(
            out,
            "checked: {} repositories, {} manifests, {} tags, {} blobs ({}), {} links read",
            c.repositories,
            c.manifests,
            c.tags,
            c.blobs,
            human_bytes(c.blob_bytes),
            c.links_read
        );
        match (c.blobs_verified, c.bytes_verified) {
            (Some(n), Some(b)) => {
                let _ = writeln!(out, ", {n} blobs re-hashed ({})", human_bytes(b));
            }
            _ => out.push_str("; content not re-hashed (--verify-content)\n"),
        }
        for (title, problem) in [("problems", true), ("informational", false)] {
            let group: Vec<&FindingOut> = self
                .findings
                .iter()
                .filter(|f| f.kind.is_problem() == problem)
                .collect();
            if group.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{title} ({}):", group.len());
            let mut kinds: Vec<Kind> = group.iter().map(|f| f.kind).collect();
            kinds.dedup();
            for kind in kinds {
                let of_kind: Vec<&&FindingOut> = group.iter().filter(|f| f.kind == kind).collect();
                let _ = writeln!(out, "  {} ({}):", kind.describe(), of_kind.len());
                for f in of_kind {
                    let images = if f.images.is_empty() {
                        String::new()
                    } else {
                        format!("{}: ", f.images.join(", "))
                    };
                    let _ = writeln!(out, "    {images}{}\n      {}", f.message, f.key);
                }
            }
        }
        let _ = writeln!(
            out,
            "\n{}",
            match (self.problems, self.informational) {
                (0, 0) => "clean: no findings".to_string(),
                (0, i) => format!("no problems; {i} informational findings"),
                (p, i) => format!(
                    "{p} problems, {i} informational findings (exit {})",
                    Exit::Problems as u8
                ),
            }
        );
        out
    }
}
