//! The run as a Prometheus textfile (`--metrics FILE`), for node_exporter's
//! textfile collector: gauges describing the last run, rendered from the
//! [`Report`], and written even when the run failed (with what is known), so a
//! cron job that stopped working shows as `registry_gc_last_run_success 0`
//! instead of as stale numbers.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::SystemTime;

use crate::plan::Reason;
use crate::report::Report;

/// What is known of a run when it ends.
#[derive(Debug)]
pub struct RunMetrics<'a> {
    /// The STORAGE the run was given ("" when the settings could not be read):
    /// a label, so that files of several registries on one node never collide.
    pub storage: &'a str,
    pub dry_run: bool,
    pub finished: SystemTime,
    pub duration_seconds: f64,
    pub exit_code: u8,
    /// Present when the run got as far as a report (a complete or an incomplete
    /// sweep, or a dry run).
    pub report: Option<&'a Report>,
}

struct Out {
    text: String,
    labels: String,
}

impl Out {
    fn family(&mut self, name: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} gauge");
    }

    fn sample(&mut self, name: &str, extra: Option<(&str, &str)>, value: f64) {
        let mut labels = self.labels.clone();
        if let Some((k, v)) = extra {
            let _ = write!(labels, ",{k}=\"{}\"", escape(v));
        }
        let _ = writeln!(self.text, "{name}{{{labels}}} {}", number(value));
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, help);
        self.sample(name, None, value);
    }
}

/// A label value in the exposition format: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The textfile for one run.
pub fn render(m: &RunMetrics) -> String {
    let mut o = Out {
        text: String::new(),
        labels: format!(
            "storage=\"{}\",dry_run=\"{}\"",
            escape(m.storage),
            m.dry_run
        ),
    };
    let finished = m
        .finished
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    o.gauge(
        "registry_gc_last_run_timestamp_seconds",
        "When the last run ended, in seconds since the epoch.",
        finished,
    );
    o.gauge(
        "registry_gc_last_run_duration_seconds",
        "How long the last run took.",
        m.duration_seconds,
    );
    o.gauge(
        "registry_gc_last_run_success",
        "1 if the last run completed with every deletion done (or was a clean dry run), else 0.",
        f64::from(u8::from(m.exit_code == 0)),
    );
    o.gauge(
        "registry_gc_last_run_exit_code",
        "The last run's exit code (0 ok, 1 error, 2 usage, 3 refused, 4 incomplete).",
        f64::from(m.exit_code),
    );
    let Some(r) = m.report else {
        return o.text;
    };
    o.gauge(
        "registry_gc_last_run_deleted_keys",
        "Keys deleted by the last run (0 in a dry run).",
        r.deleted_keys as f64,
    );
    o.gauge(
        "registry_gc_last_run_bytes_freed",
        "Bytes of blobs and uploads deleted by the last run (0 in a dry run).",
        r.bytes_freed as f64,
    );
    o.family(
        "registry_gc_last_run_planned_keys",
        "Keys the last run deleted or, in a dry run, would delete, by reason.",
    );
    for reason in Reason::ALL {
        o.sample(
            "registry_gc_last_run_planned_keys",
            Some(("reason", reason_name(reason))),
            r.planned.get(&reason).map_or(0, |c| c.count) as f64,
        );
    }
    o.family(
        "registry_gc_last_run_planned_bytes",
        "Bytes the last run deleted or, in a dry run, would delete, by reason.",
    );
    for reason in Reason::ALL {
        o.sample(
            "registry_gc_last_run_planned_bytes",
            Some(("reason", reason_name(reason))),
            r.planned.get(&reason).map_or(0, |c| c.bytes) as f64,
        );
    }
    o.family(
        "registry_gc_last_run_requests",
        "Storage requests the last run sent, by class.",
    );
    let q = &r.requests;
    for (class, n) in [
        ("list", q.list),
        ("get", q.get),
        ("head", q.head),
        ("put", q.put),
        ("delete", q.delete),
    ] {
        o.sample(
            "registry_gc_last_run_requests",
            Some(("class", class)),
            n as f64,
        );
    }
    o.gauge(
        "registry_gc_last_run_failures",
        "Deletions that failed in the last run (the next run retries them).",
        r.failures.len() as f64,
    );
    o.gauge(
        "registry_gc_last_run_recheck_withdrawn",
        "Deletions the re-check before the sweep withdrew because writes during the run need them.",
        r.recheck.withdrawn as f64,
    );
    o.gauge(
        "registry_gc_last_run_broken_by_concurrent_pushes",
        "Blobs the last sweep deleted that a manifest pushed during it names (push those images again).",
        r.broken_by_concurrent_pushes.len() as f64,
    );
    o.gauge(
        "registry_gc_last_run_warnings",
        "Warnings of the last run (unparseable manifests, junk links, ...).",
        r.warnings.len() as f64,
    );
    o.gauge(
        "registry_gc_last_run_stray_keys",
        "Keys outside the registry layout, skipped by the last run.",
        r.strays.len() as f64,
    );
    o.gauge(
        "registry_gc_last_run_spared_by_min_age",
        "Objects the last run kept because they were younger than --min-age.",
        r.spared_by_min_age as f64,
    );
    o.gauge(
        "registry_gc_keys",
        "Keys in the registry's storage when the last run listed it.",
        r.seen.keys as f64,
    );
    o.gauge(
        "registry_gc_repositories",
        "Repositories seen by the last run.",
        r.seen.repositories as f64,
    );
    o.gauge(
        "registry_gc_manifests",
        "Manifest revisions seen by the last run.",
        r.seen.manifests as f64,
    );
    o.gauge(
        "registry_gc_tags",
        "Tags seen by the last run.",
        r.seen.tags as f64,
    );
    o.gauge(
        "registry_gc_blobs",
        "Blobs seen by the last run.",
        r.seen.blobs as f64,
    );
    // sizes a run did not measure (a filesystem sizes only what it deletes) are left out, not zero
    if let Some(bytes) = r.seen.blob_bytes {
        o.gauge(
            "registry_gc_blob_bytes",
            "Bytes of blobs seen by the last run.",
            bytes as f64,
        );
    }
    o.gauge(
        "registry_gc_uploads",
        "Upload directories seen by the last run.",
        r.seen.uploads as f64,
    );
    o.gauge(
        "registry_gc_kept_blobs",
        "Blobs the last run kept.",
        r.kept_blobs as f64,
    );
    if let Some(bytes) = r.kept_blob_bytes {
        o.gauge(
            "registry_gc_kept_blob_bytes",
            "Bytes of blobs the last run kept.",
            bytes as f64,
        );
    }
    o.gauge(
        "registry_gc_empty_repositories",
        "Repositories with nothing left in them after the last run's plan.",
        r.empty_repositories.len() as f64,
    );
    o.text
}

fn reason_name(r: Reason) -> &'static str {
    match r {
        Reason::UntaggedManifest => "untagged-manifest",
        Reason::UntaggedTagIndex => "untagged-tag-index",
        Reason::DanglingRevision => "dangling-revision",
        Reason::DanglingTagIndex => "dangling-tag-index",
        Reason::DanglingTag => "dangling-tag",
        Reason::UnreferencedBlob => "unreferenced-blob",
        Reason::DanglingLayerLink => "dangling-layer-link",
        Reason::StaleUpload => "stale-upload",
    }
}

/// Writes `text` to `path` so that a reader (the textfile collector) sees the
/// old file or the new one, never half of one: a temporary file in the same
/// directory (not ending in `.prom`, so the collector skips it), flushed to
/// disk, then renamed over `path`.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CountBytes, Seen, SCHEMA_VERSION};
    use std::collections::BTreeMap;

    fn report() -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            storage: "file:///r".into(),
            dry_run: false,
            delete_untagged: false,
            min_age_seconds: 3600,
            offline: false,
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_seconds: 1.5,
            seen: Seen {
                keys: 10,
                repositories: 2,
                manifests: 3,
                tags: 4,
                blobs: 5,
                blob_bytes: Some(600),
                uploads: 1,
            },
            planned: BTreeMap::from([(
                Reason::UnreferencedBlob,
                CountBytes {
                    count: 2,
                    bytes: 300,
                },
            )]),
            deleted_keys: 2,
            bytes_freed: 300,
            kept_blobs: 3,
            kept_blob_bytes: Some(300),
            spared_by_min_age: 0,
            empty_repositories: vec![],
            empty_repositories_removed: false,
            empty_directories: 0,
            directories_removed: 0,
            failures: vec![],
            warnings: vec![],
            strays: vec![],
            requests: Default::default(),
            request_floor: None,
            tags_matched_by_etag: 0,
            manifest_cache_hits: 0,
            manifest_bytes_read: 0,
            sweep_stopped_early: false,
            recheck: Default::default(),
            broken_by_concurrent_pushes: vec![],
            check_after_sweep_error: None,
            phase_seconds: Default::default(),
            quarantine: false,
            quarantine_run: None,
            unwritten_report: None,
        }
    }

    #[test]
    fn renders_gauges_with_help_type_and_escaped_labels() {
        let r = report();
        let m = RunMetrics {
            storage: "/srv/a \"b\"\\c",
            dry_run: false,
            finished: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            duration_seconds: 1.5,
            exit_code: 0,
            report: Some(&r),
        };
        let text = render(&m);
        let l = r#"storage="/srv/a \"b\"\\c",dry_run="false""#;
        assert!(
            text.contains(&format!(
                "registry_gc_last_run_timestamp_seconds{{{l}}} 1700000000\n"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "registry_gc_last_run_duration_seconds{{{l}}} 1.5\n"
        )));
        assert!(text.contains(&format!("registry_gc_last_run_success{{{l}}} 1\n")));
        assert!(text.contains(&format!(
            "registry_gc_last_run_planned_keys{{{l},reason=\"unreferenced-blob\"}} 2\n"
        )));
        assert!(
            text.contains(&format!(
                "registry_gc_last_run_planned_keys{{{l},reason=\"stale-upload\"}} 0\n"
            )),
            "every reason, zero too"
        );
        assert!(text.contains(&format!("registry_gc_blobs{{{l}}} 5\n")));
        assert!(
            text.contains("# HELP registry_gc_last_run_requests ")
                && text.contains("# TYPE registry_gc_last_run_requests gauge\n")
        );
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(
            helps,
            text.lines().filter(|l| l.starts_with("# TYPE ")).count()
        );
        // the names of the reasons are the report's
        for reason in Reason::ALL {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason_name(reason));
        }
    }

    /// A real run's tally is what it did; when every deletion failed it is
    /// empty, and the summary said "nothing to delete" above the failures.
    #[test]
    fn a_sweep_whose_deletions_all_failed_is_not_told_as_nothing_to_delete() {
        let mut r = report();
        r.planned.clear();
        r.deleted_keys = 0;
        r.bytes_freed = 0;
        r.failures = vec![crate::report::Failure {
            key: "docker/registry/v2/blobs/sha256/ab/ab/data".into(),
            error: "503 SlowDown".into(),
        }];
        let summary = r.summary();
        assert!(!summary.contains("nothing to delete"), "{summary}");
        assert!(summary.contains("nothing deleted"), "{summary}");
        r.failures.clear();
        assert!(r.summary().contains("nothing to delete"));
    }

    /// "N deletions failed" counts keys not deleted: with `--quarantine`,
    /// keys not moved; the run's record failing to be rewritten is said apart.
    #[test]
    fn what_is_left_to_do_counts_keys_and_says_a_record_failure_apart() {
        let failure = |key: &str| crate::report::Failure {
            key: key.into(),
            error: "503 SlowDown".into(),
        };
        let mut r = report();
        r.failures = vec![failure("docker/registry/v2/blobs/sha256/ab/ab/data")];
        assert_eq!(r.left_to_do(), ["1 deletion failed; run again to finish"]);
        r.quarantine = true;
        r.quarantine_run = Some("20261129T031443Z-353f22".into());
        r.failures
            .push(failure("docker/registry/v2/blobs/sha256/cd/cd/data"));
        r.failures.push(failure(&crate::quarantine::record_key(
            "20261129T031443Z-353f22",
        )));
        let left = r.left_to_do();
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(
            left[0],
            "2 keys were not moved into quarantine; run again to finish"
        );
        assert!(left[1].contains("record was not updated"), "{left:?}");
    }

    #[test]
    fn a_failed_run_reports_what_is_known() {
        let m = RunMetrics {
            storage: "",
            dry_run: true,
            finished: SystemTime::now(),
            duration_seconds: 0.25,
            exit_code: 1,
            report: None,
        };
        let text = render(&m);
        assert!(
            text.contains("registry_gc_last_run_success{storage=\"\",dry_run=\"true\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("registry_gc_last_run_exit_code{storage=\"\",dry_run=\"true\"} 1\n"));
        assert!(
            !text.contains("registry_gc_blobs"),
            "nothing is claimed about the registry"
        );
    }

    #[test]
    fn writes_atomically_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("registry-gc-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("registry_gc.prom");
        write_atomic(&path, "a 1\n").unwrap();
        write_atomic(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "only the .prom file is left"
        );
        assert!(write_atomic(&dir.join("missing/x.prom"), "a 1\n").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
