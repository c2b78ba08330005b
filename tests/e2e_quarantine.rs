//! `gc --quarantine`, `restore` and `purge` end to end: trees written by the real
//! registry (distribution 2.8.2), quarantined by the built binary, served and
//! pulled back through the real registry with sha256 checks, restored byte for
//! byte; and the same key sets on moto and Azurite.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::cloud::Emulator;
use common::collector::{self, aged_copy, gc, mode_flags, pushed, run};
use common::model::Mode;
use common::registry::Registry;
use common::scenarios::{self, Scenario};
use common::tree;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use registry_gc::quarantine;
use registry_gc::storage::open::open_storage;
use registry_gc::storage::Storage;

const QUARANTINE: &str = "registry-gc-quarantine";

fn flags(extra: &[&str]) -> Vec<String> {
    let mut f: Vec<String> = mode_flags(Mode::DeleteUntagged)
        .into_iter()
        .map(String::from)
        .collect();
    // small scenarios, mostly garbage: past the guard's share
    f.extend(["--min-age", "0s", "--upload-max-age", "1h", "--force"].map(String::from));
    f.extend(extra.iter().map(|s| s.to_string()));
    f
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs `registry-gc <args>` expecting `code`, returning stdout.
fn expect(args: &[&str], code: i32) -> (String, String) {
    let out = run(args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "registry-gc {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// The run directories under the quarantine prefix.
fn runs_on_disk(root: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(root.join(QUARANTINE)) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Each key's bytes, without its time: a restore dates what it puts back.
fn contents(snapshot: &BTreeMap<String, tree::FileState>) -> BTreeMap<String, (String, u64)> {
    snapshot
        .iter()
        .map(|(k, f)| (k.clone(), (f.sha256.clone(), f.len)))
        .collect()
}

/// What a plain collection with the same flags leaves: keys and directories.
fn plain_gc_result(sc: &Scenario) -> (BTreeSet<String>, BTreeSet<String>) {
    let copy = aged_copy(sc);
    gc(copy.path(), &strs(&flags(&[])), 0);
    (tree::keys(copy.path()), tree::dirs(copy.path()))
}

#[test]
fn quarantine_restore_and_purge_on_disk_with_the_real_registry() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let (plain_keys, plain_dirs) = plain_gc_result(&sc);
    let copy = aged_copy(&sc);
    let root = copy.path();
    let root_s = root.display().to_string();
    let before = tree::snapshot(root);

    // a dry run with --quarantine writes nothing
    let dirs_before = tree::dirs(root);
    gc(root, &strs(&flags(&["--quarantine", "--dry-run"])), 0);
    assert!(
        before == tree::snapshot(root),
        "{}",
        tree::snapshot_diff(&before, &tree::snapshot(root))
    );
    assert_eq!(dirs_before, tree::dirs(root));
    assert!(
        !root.join(QUARANTINE).exists(),
        "a dry run created the quarantine"
    );

    // the real run: the registry tree ends exactly as after a plain collection
    let report = root.join("../quarantine-report.json");
    let report_s = report.display().to_string();
    let out = gc(
        root,
        &strs(&flags(&["--quarantine", "--report", &report_s])),
        0,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("quarantined:") && stdout.contains("quarantine run:"),
        "{stdout}"
    );
    assert_eq!(
        tree::keys(root),
        plain_keys,
        "registry keys differ from a plain collection"
    );
    assert_eq!(
        tree::dirs(root),
        plain_dirs,
        "registry directories differ from a plain collection"
    );
    let top: BTreeSet<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        top,
        BTreeSet::from(["docker".to_string(), QUARANTINE.to_string()])
    );
    let r = collector::read_report(&report);
    std::fs::remove_file(&report).unwrap();
    let run_id = r["quarantine_run"]
        .as_str()
        .expect("the report names the run")
        .to_string();
    assert_eq!(runs_on_disk(root), BTreeSet::from([run_id.clone()]));
    assert!(stdout.contains(&run_id));

    // the run holds exactly the keys the plain collection deletes, same bytes
    // and times (a rename), and its record says so
    let run_dir = root.join(QUARANTINE).join(&run_id);
    let moved = tree::snapshot(&run_dir);
    let deleted: BTreeSet<String> = before
        .keys()
        .filter(|k| !plain_keys.contains(*k))
        .cloned()
        .collect();
    assert!(deleted.len() > 20, "{}", deleted.len());
    assert_eq!(moved.keys().cloned().collect::<BTreeSet<_>>(), deleted);
    for (k, state) in &moved {
        assert_eq!(&before[k], state, "{k}");
    }
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["state"], "complete");
    assert_eq!(record["run_id"], run_id.as_str());
    assert_eq!(record["options"]["delete_untagged"], true);
    let recorded: BTreeSet<String> = record["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["key"]
                .as_str()
                .unwrap()
                .strip_prefix("docker/registry/v2/")
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(recorded, deleted);
    assert_eq!(record["moved_keys"].as_u64(), Some(deleted.len() as u64));

    // the registry serves every kept image and not the collected ones
    let mut reg = Registry::start(root);
    sc.pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
        .unwrap_or_else(|e| panic!("after quarantine: {e}"));
    let gone = sc.image("app:v1-old");
    assert!(
        common::http::pull_verify(reg.url(), gone.repo(), gone.digest()).is_err(),
        "app:v1-old still pulls"
    );
    reg.stop();

    // a second collection sees nothing to do and no strays: the quarantine is not part of the registry
    let report2 = root.join("../quarantine-report2.json");
    let report2_s = report2.display().to_string();
    let out = gc(root, &strs(&flags(&["--report", &report2_s])), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to delete"));
    let r2 = collector::read_report(&report2);
    std::fs::remove_file(&report2).unwrap();
    assert!(
        r2["strays"].as_array().unwrap().is_empty(),
        "{}",
        r2["strays"]
    );
    assert!(
        moved == tree::snapshot(&run_dir),
        "the second collection touched the quarantine"
    );

    // --list shows the run with its keys
    let (list, _) = expect(&["restore", "--list", &root_s], 0);
    let line = list
        .lines()
        .find(|l| l.starts_with(&run_id))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        line.contains("complete")
            && line.split_whitespace().nth(2) == Some(&deleted.len().to_string()),
        "{line}"
    );

    // restore: every key back, byte for byte, dated by the restore (a write
    // into the registry in service); the keys it did not move keep their times
    let (out, _) = expect(&["restore", &root_s, &run_id], 0);
    assert!(
        out.contains(&format!("restored: {} keys", deleted.len())),
        "{out}"
    );
    let after = tree::snapshot(root);
    assert!(
        contents(&before) == contents(&after),
        "restore is not byte for byte:\n{}",
        tree::snapshot_diff(&before, &after)
    );
    for (k, state) in &after {
        assert_eq!(
            state.mtime > before[k].mtime,
            deleted.contains(k),
            "{k}: mtime {:?} before, {:?} after",
            before[k].mtime,
            state.mtime
        );
    }
    assert!(tree::snapshot(&run_dir).is_empty());
    let reg = Registry::start(root);
    common::http::pull_verify(reg.url(), gone.repo(), gone.digest())
        .unwrap_or_else(|e| panic!("app:v1-old after restore: {e}"));
    sc.pull_verify_present(reg.url())
        .unwrap_or_else(|e| panic!("after restore: {e}"));
    drop(reg);

    // idempotent
    let (out, _) = expect(&["restore", &root_s, &run_id], 0);
    assert!(
        out.contains("restored: 0 keys")
            && out.contains(&format!("already in place: {} keys", deleted.len())),
        "{out}"
    );
    assert!(after == tree::snapshot(root));

    // a run that does not exist, or an id that is not one: one clear line, exit 2
    let (_, err) = expect(&["restore", &root_s, "20990101T000000Z-000000"], 2);
    assert!(
        err.contains("no quarantined run \"20990101T000000Z-000000\"")
            && err.trim().lines().count() == 1,
        "{err}"
    );
    let (_, err) = expect(&["restore", &root_s, "../docker"], 2);
    assert!(err.contains("not a run id"), "{err}");

    // purge: only the runs older than the duration. The first run is dated ten
    // days back through its record; a second run is new.
    let record_path = run_dir.join("run.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    assert_eq!(record["state"], "restored");
    let old = record["started_at_ms"].as_i64().unwrap() - 10 * 86_400_000;
    record["started_at_ms"] = old.into();
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    // a run is as old as its last write: the record and what it holds too
    tree::age_tree(
        &root.join(QUARANTINE).join(&run_id),
        Duration::from_secs(10 * 86_400),
    );
    // and the restore is hours ago: its uploads are stale again
    tree::age_tree(&root.join("docker"), Duration::from_secs(2 * 3600));
    std::thread::sleep(Duration::from_millis(1100)); // a new run id
    let out = gc(
        root,
        &strs(&flags(&["--quarantine", "--report", &report_s])),
        0,
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("quarantine run:"));
    let run2 = collector::read_report(&report)["quarantine_run"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(&report).unwrap();
    assert_ne!(run2, run_id);
    assert_eq!(
        runs_on_disk(root),
        BTreeSet::from([run_id.clone(), run2.clone()])
    );
    let run2_files = tree::snapshot(&root.join(QUARANTINE).join(&run2));
    assert_eq!(run2_files.len(), deleted.len());

    let (out, _) = expect(&["purge", "--older-than", "7d", "--dry-run", &root_s], 0);
    assert!(
        out.contains(&format!("would purge: run {run_id}")) && !out.contains(&run2),
        "{out}"
    );
    assert_eq!(
        runs_on_disk(root),
        BTreeSet::from([run_id.clone(), run2.clone()])
    );
    let (out, _) = expect(&["purge", "--older-than", "7d", &root_s], 0);
    assert!(
        out.contains(&format!("purged: run {run_id}")) && out.contains("kept 1 newer runs"),
        "{out}"
    );
    assert_eq!(runs_on_disk(root), BTreeSet::from([run2.clone()]));
    assert!(
        run2_files == tree::snapshot(&root.join(QUARANTINE).join(&run2)),
        "purge touched the new run"
    );
    assert_eq!(tree::keys(root), plain_keys, "purge touched the registry");
    let (list, _) = expect(&["restore", "--list", &root_s], 0);
    assert!(list.contains(&run2) && !list.contains(&run_id), "{list}");

    // a short duration takes the rest, directories and all
    std::thread::sleep(Duration::from_millis(1100));
    expect(&["purge", "--older-than", "1s", &root_s], 0);
    assert!(
        !root.join(QUARANTINE).exists(),
        "the empty quarantine prefix is left"
    );
    assert_eq!(tree::keys(root), plain_keys);
}

/// A run stopped half way is restorable: the record is written before anything
/// moves, and restore takes each key from wherever it is.
#[test]
fn an_interrupted_quarantine_is_restored_from_its_record() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let copy = aged_copy(&sc);
    let root = copy.path();
    let root_s = root.display().to_string();
    let before = tree::snapshot(root);
    let run_id = quarantine_run(root);
    // undo half of the moves by hand and mark the record as still moving: the
    // state a killed run leaves
    let run_dir = root.join(QUARANTINE).join(&run_id);
    let moved: Vec<String> = tree::keys(&run_dir).into_iter().collect();
    for k in moved.iter().step_by(2) {
        let to = tree::key_path(root, k);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::rename(tree::key_path(&run_dir, k), to).unwrap();
    }
    let record_path = run_dir.join("run.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    record["state"] = "moving".into();
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    let (list, _) = expect(&["restore", "--list", &root_s], 0);
    assert!(list.contains("moving"), "{list}");

    let (out, _) = expect(&["restore", &root_s, &run_id], 0);
    let half = moved.len().div_ceil(2);
    assert!(
        out.contains(&format!("restored: {} keys", moved.len() - half))
            && out.contains(&format!("already in place: {half} keys")),
        "{out}"
    );
    assert!(
        contents(&before) == contents(&tree::snapshot(root)),
        "{}",
        tree::snapshot_diff(&before, &tree::snapshot(root))
    );
}

/// The live key wins: a key the registry has again (a blob pushed again since
/// the quarantine) is left as it is, and its quarantined copy stays in the run.
#[test]
fn restore_never_replaces_a_key_the_registry_has_again() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let copy = aged_copy(&sc);
    let root = copy.path();
    let root_s = root.display().to_string();
    let run_id = quarantine_run(root);
    let run_dir = root.join(QUARANTINE).join(&run_id);
    let blob = tree::keys(&run_dir)
        .into_iter()
        .find(|k| k.starts_with("blobs/"))
        .unwrap();
    // the registry writes the same content again (content-addressed)
    let bytes = tree::read_key(&run_dir, &blob);
    tree::write_key(root, &blob, &bytes);
    let live_mtime = tree::snapshot(root)[&blob].mtime;

    let (out, _) = expect(&["restore", &root_s, &run_id], 0);
    assert!(
        out.contains("kept the registry's current key (1 keys") && out.contains(&blob),
        "{out}"
    );
    assert_eq!(
        tree::snapshot(root)[&blob].mtime,
        live_mtime,
        "the live key was replaced"
    );
    assert_eq!(tree::keys(&run_dir), BTreeSet::from([blob.clone()]));
    let (list, _) = expect(&["restore", "--list", &root_s], 0);
    assert!(
        list.lines().any(|l| l.starts_with(&run_id)
            && l.contains("restored")
            && l.split_whitespace().nth(2) == Some("1")),
        "{list}"
    );
}

/// Keys under `prefix` in the emulator's bucket, relative to it.
async fn bucket_keys(emulator: Emulator, prefix: &str) -> BTreeSet<String> {
    emulator
        .store()
        .list(Some(&ObjectPath::from(prefix)))
        .map_ok(|m| {
            m.location
                .as_ref()
                .strip_prefix(prefix)
                .unwrap()
                .trim_start_matches('/')
                .to_string()
        })
        .try_collect()
        .await
        .unwrap()
}

/// `registry-gc CMD <emulator flags> EXTRA STORAGE TAIL`.
fn cloud_args(
    emulator: Emulator,
    cmd: &str,
    extra: &[&str],
    root: &str,
    tail: &[&str],
) -> Vec<String> {
    let mut args = vec![cmd.to_string()];
    args.extend(emulator.gc_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(emulator.url(root));
    args.extend(tail.iter().map(|s| s.to_string()));
    args
}

fn quarantine_on_cloud(emulator: Emulator) {
    emulator.require();
    let (_dir, sc) = pushed(scenarios::mixed);
    let (plain_keys, _) = {
        // the plain collection's result with the cloud flags
        let copy = aged_copy(&sc);
        gc(
            copy.path(),
            &[
                "--delete-untagged",
                "--min-age",
                "0s",
                "--upload-max-age",
                "0s",
            ],
            0,
        );
        (tree::keys(copy.path()), ())
    };
    let rt = runtime();
    let root = Emulator::unique_root(&format!("quarantine-{}", emulator.name()));
    rt.block_on(emulator.upload_tree(&sc.root, &root));
    let before = rt.block_on(emulator.keys(&root));
    let flags = [
        "--delete-untagged",
        "--min-age",
        "0s",
        "--upload-max-age",
        "0s",
        "--force",
    ];

    // dry run: nothing written
    let args = cloud_args(
        emulator,
        "gc",
        &[&flags[..], &["--quarantine", "--dry-run"]].concat(),
        &root,
        &[],
    );
    expect(&strs(&args), 0);
    assert_eq!(rt.block_on(emulator.keys(&root)), before);
    assert!(rt
        .block_on(bucket_keys(emulator, &format!("{root}/{QUARANTINE}")))
        .is_empty());

    let report = tempfile::NamedTempFile::new().unwrap();
    let report_s = report.path().display().to_string();
    let args = cloud_args(
        emulator,
        "gc",
        &[&flags[..], &["--quarantine", "--report", &report_s]].concat(),
        &root,
        &[],
    );
    expect(&strs(&args), 0);
    let r = collector::read_report(report.path());
    let run_id = r["quarantine_run"].as_str().unwrap().to_string();
    assert!(r["requests"]["put"].as_u64().unwrap() > 0);
    let after = rt.block_on(emulator.keys(&root));
    assert_eq!(
        after,
        plain_keys,
        "{}: registry keys differ from a plain collection on disk",
        emulator.name()
    );
    let deleted: BTreeSet<String> = before.difference(&after).cloned().collect();
    let run_prefix = format!("{root}/{QUARANTINE}/{run_id}");
    let mut in_run = rt.block_on(bucket_keys(emulator, &run_prefix));
    assert!(in_run.remove("run.json"), "no run record");
    let in_run: BTreeSet<String> = in_run
        .into_iter()
        .map(|k| k.strip_prefix("docker/registry/v2/").unwrap().to_string())
        .collect();
    assert_eq!(
        in_run,
        deleted,
        "{}: the run holds what was collected",
        emulator.name()
    );

    // a second collection does not see it
    let args = cloud_args(
        emulator,
        "gc",
        &[&flags[..], &["--report", &report_s]].concat(),
        &root,
        &[],
    );
    let (out, _) = expect(&strs(&args), 0);
    assert!(out.contains("nothing to delete"), "{out}");
    assert!(collector::read_report(report.path())["strays"]
        .as_array()
        .unwrap()
        .is_empty());

    let (list, _) = expect(
        &strs(&cloud_args(emulator, "restore", &["--list"], &root, &[])),
        0,
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with(&run_id) && l.contains("complete")),
        "{list}"
    );

    // restore: the keys and their bytes
    let (out, _) = expect(
        &strs(&cloud_args(emulator, "restore", &[], &root, &[&run_id])),
        0,
    );
    assert!(
        out.contains(&format!("restored: {} keys", deleted.len())),
        "{out}"
    );
    assert_eq!(
        rt.block_on(emulator.keys(&root)),
        before,
        "{}: restore",
        emulator.name()
    );
    let store = emulator.store();
    for k in &deleted {
        let got = rt.block_on(async {
            store
                .get(&ObjectPath::from(format!("{root}/docker/registry/v2/{k}")))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        });
        assert_eq!(&got[..], &tree::read_key(&sc.root, k)[..], "{k}");
    }
    assert_eq!(
        rt.block_on(bucket_keys(emulator, &run_prefix)),
        BTreeSet::from(["run.json".to_string()])
    );

    // purge: a run newer than the duration stays, then it goes
    let (out, _) = expect(
        &strs(&cloud_args(
            emulator,
            "purge",
            &["--older-than", "1h"],
            &root,
            &[],
        )),
        0,
    );
    assert!(
        out.contains("purged: 0 runs") && out.contains("kept 1 newer runs"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let (out, _) = expect(
        &strs(&cloud_args(
            emulator,
            "purge",
            &["--older-than", "1s"],
            &root,
            &[],
        )),
        0,
    );
    assert!(out.contains(&format!("purged: run {run_id}")), "{out}");
    assert!(rt
        .block_on(bucket_keys(emulator, &format!("{root}/{QUARANTINE}")))
        .is_empty());
    assert_eq!(rt.block_on(emulator.keys(&root)), before);
}

#[test]
fn quarantine_restore_and_purge_on_moto() {
    quarantine_on_cloud(Emulator::Moto);
}

#[test]
fn quarantine_restore_and_purge_on_azurite() {
    quarantine_on_cloud(Emulator::Azurite);
}

/// fake-gcs-server takes no uploads or copies through the XML API that
/// object_store uses: the run stops at its record, before anything moves.
#[test]
fn fake_gcs_refuses_quarantine_clearly_and_nothing_moves() {
    let emulator = Emulator::FakeGcs;
    emulator.require();
    let (_dir, sc) = pushed(scenarios::deletion_has_effect);
    let rt = runtime();
    let root = Emulator::unique_root("quarantine-gcs");
    rt.block_on(emulator.upload_tree(&sc.root, &root));
    let before = rt.block_on(emulator.keys(&root));
    let args = cloud_args(
        emulator,
        "gc",
        &["--min-age", "0s", "--force", "--quarantine"],
        &root,
        &[],
    );
    let (_, err) = expect(&strs(&args), 1);
    assert!(
        err.contains("cannot write the quarantine run record")
            && err.contains("XML API")
            && err.contains("nothing was moved"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(rt.block_on(emulator.keys(&root)), before);
}

/// The record is written before anything moves: when it cannot be, the run
/// stops with one line (exit 1) and the registry is untouched.
#[test]
fn no_record_no_moves() {
    let (_dir, sc) = pushed(scenarios::deletion_has_effect);
    let copy = aged_copy(&sc);
    let root = copy.path();
    // a file where the quarantine directory would go
    std::fs::write(root.join(QUARANTINE), b"not a directory").unwrap();
    let before = tree::snapshot(root);
    let out = gc(root, &strs(&flags(&["--quarantine"])), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot write the quarantine run record") && err.contains("nothing was moved"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        before == tree::snapshot(root),
        "{}",
        tree::snapshot_diff(&before, &tree::snapshot(root))
    );
}

/// A run whose quarantined files are gone (removed by hand, or a restore
/// that found them missing) leaves only directories and its record: purge
/// removes it whole, and it is not listed again as a run without a record
/// that every later purge "purges".
#[test]
fn purge_removes_a_run_left_with_empty_directories() {
    let (_dir, sc) = pushed(scenarios::deletion_has_effect);
    let copy = aged_copy(&sc);
    let root = copy.path();
    let root_s = root.display().to_string();
    gc(root, &strs(&flags(&["--quarantine"])), 0);
    let runs = runs_on_disk(root);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run_id = runs.iter().next().unwrap().clone();
    let run_dir = root.join(QUARANTINE).join(&run_id);
    fn remove_files_but_the_record(dir: &Path) -> usize {
        let mut removed = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                removed += remove_files_but_the_record(&p);
            } else if p.file_name().unwrap() != "run.json" {
                std::fs::remove_file(&p).unwrap();
                removed += 1;
            }
        }
        removed
    }
    assert!(remove_files_but_the_record(&run_dir) > 0);
    std::thread::sleep(Duration::from_millis(1100));
    let (out, _) = expect(&["purge", "--older-than", "1s", &root_s], 0);
    assert!(out.contains(&format!("purged: run {run_id}")), "{out}");
    assert!(
        !root.join(QUARANTINE).exists(),
        "left: {:?}",
        std::fs::read_dir(root.join(QUARANTINE))
            .map(|d| d.map(|e| e.unwrap().path()).collect::<Vec<_>>())
    );
    let (list, _) = expect(&["restore", "--list", &root_s], 0);
    assert!(!list.contains(&run_id), "{list}");
}

/// A run whose record cannot be read has no known start: on disk its keys keep
/// their mtimes through the move, so dated by its newest object a run made a
/// moment ago looks as old as the registry's blobs. `purge` leaves such a run
/// (with a warning) unless `--include-unrecorded` asks for it.
#[test]
fn purge_leaves_a_run_without_a_readable_record() {
    let (_dir, sc) = pushed(scenarios::deletion_has_effect);
    let copy = aged_copy(&sc);
    let root = copy.path();
    let root_s = root.display().to_string();
    // the registry's files are days old, as on any registry in service
    let days_ago = filetime::FileTime::from_system_time(
        std::time::SystemTime::now() - Duration::from_secs(10 * 86_400),
    );
    for k in tree::keys(root) {
        filetime::set_file_mtime(tree::key_path(root, &k), days_ago).unwrap();
    }
    gc(root, &strs(&flags(&["--quarantine"])), 0);
    let runs = runs_on_disk(root);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run_id = runs.iter().next().unwrap().clone();
    let run_dir = root.join(QUARANTINE).join(&run_id);
    // just made; its record lost (or damaged, dated as old as the rest)
    std::fs::remove_file(run_dir.join("run.json")).unwrap();
    let quarantined = tree::snapshot(&run_dir);

    for dry in [true, false] {
        let mut args = vec!["purge", "--older-than", "7d", &root_s];
        if dry {
            args.insert(1, "--dry-run");
        }
        let (out, err) = expect(&args, 0);
        assert!(
            !out.contains(&format!("purge: run {run_id}")),
            "{args:?} purged a run of unknown age:\n{out}"
        );
        assert!(
            err.contains(&run_id) && err.contains("--include-unrecorded"),
            "{args:?}: the run left is named: {err}"
        );
        assert!(quarantined == tree::snapshot(&run_dir), "{args:?}");
    }
    // asked to include it, purge dates it by the start its id gives, not by
    // objects a rename left ten days old: just made, it stays at 7d
    let include = |older_than: &str| {
        expect(
            &[
                "purge",
                "--older-than",
                older_than,
                "--include-unrecorded",
                &root_s,
            ],
            0,
        )
        .0
    };
    let out = include("7d");
    assert!(
        !out.contains(&format!("purged: run {run_id}")),
        "dated by its objects:\n{out}"
    );
    assert!(quarantined == tree::snapshot(&run_dir));
    std::thread::sleep(Duration::from_millis(1100));
    let out = include("1s");
    assert!(out.contains(&format!("purged: run {run_id}")), "{out}");
    assert!(runs_on_disk(root).is_empty());
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A run record as `gc --quarantine` writes it, for one unreferenced blob.
fn seeded_record(run: &str, started_ms: i64, state: &str, key: &str, bytes: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schema_version": 1,
        "run_id": run,
        "started_at": humantime::format_rfc3339_seconds(
            SystemTime::UNIX_EPOCH + Duration::from_millis(started_ms as u64)).to_string(),
        "started_at_ms": started_ms,
        "storage": "test",
        "options": {"delete_untagged": true, "min_age_seconds": 0,
                    "upload_max_age_seconds": 0, "delete_empty_repos": false},
        "state": state,
        "keys": 1, "bytes": bytes, "moved_keys": if state == "moving" { 0 } else { 1 },
        "entries": [{"key": key, "reason": "unreferenced-blob", "bytes": bytes}],
    }))
    .unwrap()
}

const BLOB: &str = "docker/registry/v2/blobs/sha256/2c/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824/data";

/// Seeds one quarantined blob and its run record.
async fn seed_one_quarantined_blob(storage: &dyn Storage, run: &str, started_ms: i64, state: &str) {
    storage
        .put(
            &quarantine::quarantine_key(run, BLOB),
            Bytes::from_static(b"hello"),
        )
        .await
        .unwrap();
    storage
        .put(
            &quarantine::record_key(run),
            Bytes::from(seeded_record(run, started_ms, state, BLOB, 5)),
        )
        .await
        .unwrap();
}

/// README: restore "is idempotent: a key already in place counts as done".
/// A second restore of a run finds each key it put back in place and its
/// quarantined copy gone: in place, not "the registry's current key", whose
/// quarantined copy would stay in the run (S3 said so, having looked at the
/// destination only).
fn restore_twice_counts_keys_as_in_place(emulator: Emulator) {
    emulator.require();
    let root = Emulator::unique_root(&format!("restore-twice-{}", emulator.name()));
    let storage = open_storage(&emulator.url(&root), &emulator.backend_options()).unwrap();
    let storage = storage.as_ref();
    let run = "20260101T000000Z-abcdef";
    let rt = runtime();
    rt.block_on(seed_one_quarantined_blob(
        storage,
        run,
        now_ms(),
        "complete",
    ));

    let first = rt
        .block_on(quarantine::restore(storage, run, 4, 1))
        .unwrap();
    assert_eq!(first.restored, 1, "{first:?}");
    assert!(!rt
        .block_on(storage.exists(&quarantine::quarantine_key(run, BLOB)))
        .unwrap());

    let second = rt
        .block_on(quarantine::restore(storage, run, 4, 1))
        .unwrap();
    assert!(
        second.kept_live.is_empty() && second.already_in_place == 1,
        "{}: the second restore misreports a key it put back itself:\n{}",
        emulator.name(),
        second.summary()
    );
}

#[test]
fn s3_restore_twice_counts_keys_as_in_place() {
    restore_twice_counts_keys_as_in_place(Emulator::Moto);
}

#[test]
fn azure_restore_twice_counts_keys_as_in_place() {
    restore_twice_counts_keys_as_in_place(Emulator::Azurite);
}

/// A collection that started two hours ago (a long listing) has just written
/// its record and is moving keys now: `purge --older-than 1h` must not take
/// the run a gc is still filling, nor keys quarantined a minute ago. A run is
/// as old as its last write, not its gc's start.
#[test]
fn purge_leaves_a_run_still_moving() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("docker/registry/v2")).unwrap();
    let storage = open_storage(&dir.path().display().to_string(), &Default::default()).unwrap();
    let storage = storage.as_ref();
    let rt = runtime();
    let started = SystemTime::now() - Duration::from_secs(2 * 3600);
    // the id a gc started two hours ago gets
    let id = {
        let stamp = humantime::format_rfc3339_seconds(started)
            .to_string()
            .replace(['-', ':'], "");
        format!("{stamp}-00beef")
    };
    let started_ms = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // record written just now (the sweep's start), first key moved just now
    rt.block_on(seed_one_quarantined_blob(
        storage, &id, started_ms, "moving",
    ));
    let out = rt
        .block_on(quarantine::purge(
            storage,
            Duration::from_secs(3600),
            SystemTime::now(),
            false,
            false,
            4,
        ))
        .unwrap();
    assert!(
        out.purged.is_empty(),
        "purged a run whose record and keys were written seconds ago (state moving):\n{}",
        out.summary()
    );
    assert!(rt
        .block_on(storage.exists(&quarantine::quarantine_key(&id, BLOB)))
        .unwrap());
}

/// The user a packaged registry runs as in these tests (`nobody`).
const REGISTRY_UID: u32 = 65534;

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail
    unsafe { libc::geteuid() == 0 }
}

/// Every directory under `dir` (itself included) that `uid` does not own, or
/// whose permission bits differ from `mode`.
fn dirs_not_like(dir: &Path, uid: u32, mode: u32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(dir).unwrap();
    let mut out = Vec::new();
    if md.uid() != uid || md.mode() & 0o7777 != mode {
        out.push(format!(
            "{} (uid {}, mode {:o})",
            dir.display(),
            md.uid(),
            md.mode() & 0o7777
        ));
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(dirs_not_like(&e.path(), uid, mode));
        }
    }
    out
}

/// A registry running as its own user, restored by root (an operator's
/// `sudo registry-gc restore`): the directories the restore creates again
/// (those the sweep left empty and removed) are the registry's, like the
/// ones around them, whatever root's umask. Created as root with its umask,
/// the registry could not write into them (a later push of a blob, a tag,
/// a manifest delete) and, under a umask of 077, not even read them: the
/// restored images did not pull.
#[test]
fn restored_directories_belong_to_the_registry_user() {
    if !running_as_root() {
        // CI runs as root: there this test must run, never pass by skipping
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "needs root, to restore as a user other than the registry's"
        );
        eprintln!("skipped: needs root, to restore as a user other than the registry's");
        return;
    }
    let (_dir, sc) = pushed(scenarios::mixed);
    let copy = aged_copy(&sc);
    let root = copy.path();
    let root_s = root.display().to_string();
    let owner = format!("{REGISTRY_UID}:{REGISTRY_UID}");
    let chown = std::process::Command::new("chown")
        .args(["-R", &owner, &root_s])
        .status()
        .unwrap();
    assert!(chown.success());
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert!(dirs_not_like(&root.join("docker"), REGISTRY_UID, 0o755).is_empty());

    let run_id = quarantine_run(root);

    // root's umask hardened, as some distributions ship it
    let restore = std::process::Command::new("sh")
        .args(["-c", "umask 077 && exec \"$0\" \"$@\""])
        .arg(collector::binary())
        .args(["restore", &root_s, &run_id])
        .output()
        .unwrap();
    assert_eq!(
        restore.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let reg = Registry::start_as(root, REGISTRY_UID, REGISTRY_UID);
    sc.pull_verify_present(reg.url())
        .unwrap_or_else(|e| panic!("after a restore by root: {e}"));
    drop(reg);
    let wrong = dirs_not_like(&root.join("docker"), REGISTRY_UID, 0o755);
    assert!(
        wrong.is_empty(),
        "directories the restore made are not the registry's:\n{}",
        wrong.join("\n")
    );
}

/// A restore writes into the live tree while the registry serves, as a push
/// does, and the online collection's fence (`--min-age`) sees writers by their
/// keys' times: a restored key is dated by its restore, as a copy back on S3,
/// Azure or GCS is. Put back with the times it had before the collection, the
/// next collection (the nightly one, default `--min-age 1h`) took the restored
/// image again at once, before anyone could tag it; and one that was listing
/// while the restore ran saw restored links without the blobs it had listed
/// before them, and deleted them as dangling.
#[test]
fn a_restored_image_is_a_fresh_write_the_next_collection_keeps() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let copy = aged_copy(&sc);
    let root = copy.path();
    let root_s = root.display().to_string();
    let run_id = quarantine_run(root);
    let restored = tree::keys(&root.join(QUARANTINE).join(&run_id));
    expect(&["restore", &root_s, &run_id], 0);

    // the next collection, with its default --min-age, keeps what was restored
    let mut next: Vec<&str> = mode_flags(Mode::DeleteUntagged);
    next.push("--force");
    let out = gc(root, &next, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to delete"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let reg = Registry::start(root);
    let old = sc.image("app:v1-old");
    common::http::pull_verify(reg.url(), old.repo(), old.digest())
        .unwrap_or_else(|e| panic!("app:v1-old, restored, then collected again: {e}"));
    sc.pull_verify_present(reg.url())
        .unwrap_or_else(|e| panic!("after restore and a collection: {e}"));
    let now = tree::snapshot(root);
    for k in &restored {
        let age = SystemTime::now()
            .duration_since(now[k].mtime)
            .unwrap_or_default();
        assert!(age < Duration::from_secs(600), "{k} restored {age:?} old");
    }
}

/// Runs `gc --quarantine` on `root` and returns its run id.
fn quarantine_run(root: &Path) -> String {
    let report = tempfile::NamedTempFile::new().unwrap();
    let report_s = report.path().display().to_string();
    gc(
        root,
        &strs(&flags(&["--quarantine", "--report", &report_s])),
        0,
    );
    collector::read_report(report.path())["quarantine_run"]
        .as_str()
        .expect("the run quarantined something")
        .to_string()
}

/// An image a run quarantined can need keys a later run took: a layer it
/// shared with an image that was tagged at the first collection and deleted
/// before the second. Restoring the first run alone puts back keys that do
/// not make an image: the restore says so, names the run that holds the rest
/// (exit 4), and once that run is restored too the image pulls.
#[test]
fn restore_names_the_later_run_holding_what_its_images_need() {
    use common::images::Image;
    let dir = tempfile::Builder::new()
        .prefix("e2e-fs-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    let root_s = root.display().to_string();
    let repo = "cross/app";
    let mut reg = Registry::start(root);
    let mut pusher = common::Pusher::new(&reg);
    let tagged = Image::docker("cross-run/tagged", 2);
    let untagged = Image::docker("cross-run/untagged", 1).with_layer(tagged.layers[0].clone());
    let tagged = pusher.image(repo, &tagged, Some("v1"));
    let untagged = pusher.image(repo, &untagged, None);
    reg.stop();
    tree::age_tree(root, Duration::from_secs(2 * 3600));

    // the first run takes the untagged image, not the layer it shares
    let first = quarantine_run(root);
    // the tagged one is deleted through the API; the second run takes it
    // and, now unreferenced, the shared layer
    let mut reg = Registry::start(root);
    common::delete_manifest(reg.url(), repo, &tagged.digest);
    reg.stop();
    tree::age_tree(&root.join("docker"), Duration::from_secs(2 * 3600));
    std::thread::sleep(Duration::from_millis(1100)); // a new run id
    let second = quarantine_run(root);
    let shared = format!(
        "docker/registry/v2/{}",
        tree::blob_key_for_digest(&tagged.blobs[1])
    );
    assert!(
        root.join(QUARANTINE).join(&second).join(&shared).is_file(),
        "the second run holds the shared layer"
    );

    let (out, err) = expect(&["restore", &root_s, &first], 4);
    assert!(
        out.contains(&format!("{repo}@{}", untagged.digest))
            && out.contains(&shared)
            && out.contains(&format!("run {second}")),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    let reg = Registry::start(root);
    assert!(
        common::http::pull_verify(reg.url(), repo, &untagged.digest).is_err(),
        "pulls without its layer"
    );
    drop(reg);
    // the first run's own keys are all back: its record says so
    let (list, _) = expect(&["restore", "--list", &root_s], 0);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&first) && l.contains("restored")),
        "{list}"
    );

    expect(&["restore", &root_s, &second], 0);
    let (out, _) = expect(&["restore", &root_s, &first], 0);
    assert!(out.contains("restored: 0 keys"), "{out}");
    let reg = Registry::start(root);
    common::http::pull_verify(reg.url(), repo, &untagged.digest)
        .unwrap_or_else(|e| panic!("after both restores: {e}"));
}
