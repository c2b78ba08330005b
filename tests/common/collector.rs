//! Running the built `registry-gc` binary on a tree, and the oracle for what it must
//! delete: computed from a scenario's model and expectations, independently of the
//! collector's own planner.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use super::model::Mode;
use super::registry::Registry;
use super::scenarios::Scenario;
use super::tree;

/// Pushes a scenario into a fresh registry, stops it, and ages every file by two hours
/// so that the collector's default `--min-age 1h` lets it work.
pub fn pushed(build: impl FnOnce(&Registry) -> Scenario) -> (tempfile::TempDir, Scenario) {
    let dir = tempfile::Builder::new()
        .prefix("e2e-fs-")
        .tempdir()
        .unwrap();
    let mut reg = Registry::start(dir.path());
    let sc = build(&reg);
    reg.stop();
    tree::age_tree(dir.path(), Duration::from_secs(2 * 3600));
    (dir, sc)
}

/// A copy of the scenario's tree, aged like the original.
pub fn aged_copy(sc: &Scenario) -> tempfile::TempDir {
    let copy = tempfile::Builder::new()
        .prefix("e2e-fs-copy-")
        .tempdir()
        .unwrap();
    tree::copy_tree(&sc.root, copy.path());
    tree::age_tree(copy.path(), Duration::from_secs(2 * 3600));
    copy
}

/// Collects a copy of the scenario's tree in `mode` with default flags (plus
/// `--upload-max-age 1h`, so the abandoned uploads count as stale), checks the
/// deleted keys, the report, and pulls every survivor back through the registry.
pub fn collect_and_verify(sc: &Scenario, mode: Mode) -> tempfile::TempDir {
    let copy = aged_copy(sc);
    let before = tree::keys(copy.path());
    let report = copy.path().join("report.json");
    let report_s = report.display().to_string();
    let mut flags = mode_flags(mode);
    // The scenarios are small and mostly garbage: past the guard's 50% share
    // (the guard has its own tests).
    flags.extend(["--force", "--upload-max-age", "1h", "--report", &report_s]);
    gc(copy.path(), &flags, 0);

    let expected = expected_deletions(sc, mode, &before, true);
    assert_deleted_exactly(&before, &tree::keys(copy.path()), &expected);
    let r = read_report(&report);
    assert_eq!(
        report_deletions(&r),
        expected,
        "{}: report deletions",
        sc.name
    );
    assert_eq!(r["deleted_keys"].as_u64(), Some(expected.len() as u64));
    assert!(r["failures"].as_array().unwrap().is_empty());

    sc.verify_survivors_on_disk(copy.path(), mode)
        .unwrap_or_else(|e| panic!("{} {mode:?}: on disk: {e}", sc.name));
    let reg = Registry::start(copy.path());
    sc.pull_verify_survivors(reg.url(), mode)
        .unwrap_or_else(|e| panic!("{} {mode:?}: after collection: {e}", sc.name));
    copy
}

/// The binary under test, built by cargo for integration tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_registry-gc")
}

/// Runs `registry-gc <args...>` and returns its output (never panics on a non-zero exit).
pub fn run(args: &[&str]) -> Output {
    // the default manifest cache of object-store runs goes to a test directory,
    // not the user's ~/.cache
    let cache = std::env::temp_dir().join("registry-gc-tests-cache");
    Command::new(binary())
        .args(args)
        .env_remove("REGISTRY_GC_LOG")
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("run registry-gc")
}

/// Runs `registry-gc gc <extra...> <root>`, asserting the exit code.
pub fn gc(root: &Path, extra: &[&str], want_code: i32) -> Output {
    let root_s = root.display().to_string();
    let mut args = vec!["gc"];
    args.extend_from_slice(extra);
    args.push(&root_s);
    let out = run(&args);
    assert_eq!(
        out.status.code(),
        Some(want_code),
        "registry-gc {args:?} exited {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn mode_flags(mode: Mode) -> Vec<&'static str> {
    match mode {
        Mode::Default => vec![],
        Mode::DeleteUntagged => vec!["--delete-untagged"],
    }
}

/// Every key (relative to `docker/registry/v2/`) a collection in `mode` must delete
/// from the tree whose keys are `before`: unreferenced blobs, revision links of
/// collected or missing manifests, tag-history entries of those, tags whose current
/// manifest is gone, layer links whose blob is gone, and (if `stale_uploads`) every
/// upload file.
pub fn expected_deletions(
    sc: &Scenario,
    mode: Mode,
    before: &BTreeSet<String>,
    stale_uploads: bool,
) -> BTreeSet<String> {
    let exp = sc.expectation(mode);
    let mut out: BTreeSet<String> = exp
        .deleted_blobs
        .iter()
        .map(|d| tree::blob_key_for_digest(d))
        .collect();
    let present_after = |d: &String| sc.model.blobs.contains(d) && !exp.deleted_blobs.contains(d);
    let none = BTreeSet::new();
    for (repo, r) in &sc.model.repos {
        let collected = exp.deleted_revisions.get(repo).unwrap_or(&none);
        for d in &r.revisions {
            if collected.contains(d) || !present_after(d) {
                out.insert(tree::revision_link_key(repo, d));
            }
        }
        for (tag, history) in &r.tag_index {
            let current = r.tags.get(tag);
            if current.is_some_and(|c| !present_after(c)) {
                out.insert(tree::tag_current_link_key(repo, tag));
                out.extend(
                    history
                        .iter()
                        .map(|d| tree::tag_index_link_key(repo, tag, d)),
                );
                continue;
            }
            for d in history {
                if Some(d) != current && (collected.contains(d) || !present_after(d)) {
                    out.insert(tree::tag_index_link_key(repo, tag, d));
                }
            }
        }
        for d in &r.layer_links {
            if !present_after(d) {
                out.insert(tree::layer_link_key(repo, d));
            }
        }
        if stale_uploads {
            for uuid in &r.uploads {
                let prefix = format!("{}/", tree::upload_dir_key(repo, uuid));
                out.extend(before.iter().filter(|k| k.starts_with(&prefix)).cloned());
            }
        }
    }
    out
}

/// Asserts that exactly `expected` keys disappeared and nothing appeared.
pub fn assert_deleted_exactly(
    before: &BTreeSet<String>,
    after: &BTreeSet<String>,
    expected: &BTreeSet<String>,
) {
    let appeared: Vec<_> = after.difference(before).collect();
    assert!(appeared.is_empty(), "keys appeared: {appeared:?}");
    let deleted: BTreeSet<String> = before.difference(after).cloned().collect();
    let unexpected: Vec<_> = deleted.difference(expected).collect();
    let missed: Vec<_> = expected.difference(&deleted).collect();
    assert!(
        unexpected.is_empty() && missed.is_empty(),
        "deleted but not expected: {unexpected:#?}\nexpected but not deleted: {missed:#?}"
    );
}

/// The JSON report written by `--report`.
pub fn read_report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("report written")).expect("report is JSON")
}

/// Keys (relative to `docker/registry/v2/`) a report lists as deletions.
pub fn report_deletions(report: &serde_json::Value) -> BTreeSet<String> {
    report["deletions"]
        .as_array()
        .expect("deletions array")
        .iter()
        .map(|d| {
            d["key"]
                .as_str()
                .unwrap()
                .strip_prefix("docker/registry/v2/")
                .expect("key in the tree")
                .to_string()
        })
        .collect()
}
