//! End to end on the filesystem: trees written by the real registry (distribution
//! 2.8.2) through its HTTP API, collected by the built binary, then every image that
//! must survive pulled back through the real registry with each blob's sha256
//! checked, and every deleted key compared with the expected set.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::collector::{self, collect_and_verify, gc, mode_flags, pushed};
use common::model::Mode;
use common::registry::Registry;
use common::scenarios;
use common::tree;

#[test]
fn mixed_registry_default_mode() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let copy = collect_and_verify(&sc, Mode::Default);
    // every revision stays in default mode
    assert_eq!(tree::revisions(copy.path()), tree::revisions(&sc.root));
}

#[test]
fn mixed_registry_delete_untagged_keeps_multi_arch_images_and_referrers() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let copy = collect_and_verify(&sc, Mode::DeleteUntagged);
    let reg = Registry::start(copy.path());
    for label in [
        "alpine:multi",
        "app:v2",
        "app:v1.sbom",
        "app:v2/amd64.att",
        "svc:1.0.attestations",
    ] {
        let rec = sc.image(label);
        common::http::pull_verify(reg.url(), rec.repo(), rec.digest())
            .unwrap_or_else(|e| panic!("{label}: {e}"));
    }
    for label in ["app:v1-old", "cache@untagged", "app:v1-old.referrer"] {
        let rec = sc.image(label);
        assert!(
            common::http::pull_verify(reg.url(), rec.repo(), rec.digest()).is_err(),
            "{label} was collected"
        );
    }
}

#[test]
fn dry_run_writes_nothing_and_plans_what_the_real_run_does() {
    let (_dir, sc) = pushed(scenarios::mixed);
    for mode in Mode::ALL {
        let copy = tempfile::tempdir().unwrap();
        tree::copy_tree(&sc.root, copy.path());
        tree::age_tree(copy.path(), Duration::from_secs(2 * 3600));
        let before = tree::snapshot(copy.path());
        let dirs_before = tree::dirs(copy.path());
        let plan = copy
            .path()
            .join("..")
            .join(format!("plan-{}.json", std::process::id()));
        let plan_s = plan.display().to_string();
        let mut flags = mode_flags(mode);
        flags.extend([
            "--dry-run",
            "--upload-max-age",
            "1h",
            "--delete-empty-repos",
            "--report",
            &plan_s,
        ]);
        let out = gc(copy.path(), &flags, 0);
        let after = tree::snapshot(copy.path());
        assert!(
            before == after,
            "dry run changed the tree:\n{}",
            tree::snapshot_diff(&before, &after)
        );
        assert_eq!(
            dirs_before,
            tree::dirs(copy.path()),
            "dry run removed directories"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("would delete"), "{stdout}");

        let planned = collector::report_deletions(&collector::read_report(&plan));
        let keys_before = tree::keys(copy.path());
        gc(
            copy.path(),
            &[mode_flags(mode), vec!["--upload-max-age", "1h"]].concat(),
            0,
        );
        let deleted: BTreeSet<String> = keys_before
            .difference(&tree::keys(copy.path()))
            .cloned()
            .collect();
        assert_eq!(
            planned, deleted,
            "{mode:?}: the dry run's plan is not what the real run did"
        );
        std::fs::remove_file(plan).unwrap();
    }
}

#[test]
fn second_run_finds_nothing_to_do() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let copy = collect_and_verify(&sc, Mode::DeleteUntagged);
    let before = tree::snapshot(copy.path());
    let out = gc(
        copy.path(),
        &["--delete-untagged", "--upload-max-age", "1h"],
        0,
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to delete"));
    assert!(before == tree::snapshot(copy.path()));
}

#[test]
fn min_age_spares_what_is_recent() {
    // Fresh tree, default --min-age 1h: nothing may go.
    let dir = tempfile::tempdir().unwrap();
    let mut reg = Registry::start(dir.path());
    let sc = scenarios::mixed(&reg);
    reg.stop();
    let before = tree::snapshot(dir.path());
    let out = gc(
        dir.path(),
        &["--delete-untagged", "--upload-max-age", "0s"],
        0,
    );
    assert!(
        before == tree::snapshot(dir.path()),
        "{}",
        tree::snapshot_diff(&before, &tree::snapshot(dir.path()))
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("spared"));
    assert!(!sc.expected_deleted_blobs(Mode::DeleteUntagged).is_empty());
}

/// Directories the registry expects to exist; everything else left empty is
/// removed, whether the sweep emptied it or the registry left it (a manifest
/// deleted through the API leaves its revision directory).
fn is_structural(dir: &str) -> bool {
    dir == "blobs"
        || dir == "blobs/sha256"
        || dir == "repositories"
        || [
            "/_uploads",
            "/_manifests/tags",
            "/_manifests/revisions/sha256",
            "/_layers/sha256",
        ]
        .iter()
        .any(|s| dir.ends_with(s))
}

#[test]
fn empty_directories_are_removed_but_structure_stays() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let left_by_api: Vec<String> = tree::empty_dirs(&sc.root)
        .into_iter()
        .filter(|d| !is_structural(d))
        .collect();
    assert!(
        left_by_api
            .iter()
            .any(|d| d.contains("/_manifests/revisions/sha256/")),
        "{left_by_api:?}"
    );
    for mode in Mode::ALL {
        let copy = collect_and_verify(&sc, mode);
        let left: Vec<String> = tree::empty_dirs(copy.path())
            .into_iter()
            .filter(|d| !is_structural(d))
            .collect();
        assert!(
            left.is_empty(),
            "{mode:?}: empty directories left: {left:?}"
        );
        assert!(copy.path().join("docker/registry/v2/blobs/sha256").is_dir());
        for repo in ["team/app", "team/app/cache", "library/alpine"] {
            let base = copy
                .path()
                .join("docker/registry/v2/repositories")
                .join(repo);
            assert!(
                base.join("_manifests/tags").is_dir() && base.join("_layers/sha256").is_dir(),
                "{repo}"
            );
        }
    }
}

#[test]
fn empty_repositories_are_reported_and_removed_on_request() {
    let (_dir, sc) = pushed(scenarios::missing_manifests);
    let copy = tempfile::tempdir().unwrap();
    tree::copy_tree(&sc.root, copy.path());
    tree::age_tree(copy.path(), Duration::from_secs(7200));
    let repo_dir = copy.path().join("docker/registry/v2/repositories/testrepo");
    // Every manifest is gone, so every blob would go: the guard wants --force.
    let before = tree::snapshot(copy.path());
    let out = gc(copy.path(), &[], 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no manifest was found but 4 blobs were"),
        "{out:?}"
    );
    assert_eq!(
        tree::snapshot(copy.path()),
        before,
        "a refused run deletes nothing"
    );
    let out = gc(copy.path(), &["--dry-run"], 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("a real run would refuse"),
        "{out:?}"
    );
    let out = gc(copy.path(), &["--force"], 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("empty repositories (left): testrepo"));
    assert!(repo_dir.is_dir());
    // A later run still sees the empty repository (only directories remain) and
    // removes it when asked.
    tree::age_tree(copy.path(), Duration::from_secs(7200));
    let out = gc(copy.path(), &["--delete-empty-repos", "--force"], 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("empty repositories (removed): testrepo"));
    assert!(!repo_dir.exists());
    assert!(copy.path().join("docker/registry/v2/repositories").is_dir());
}

#[test]
fn delete_empty_repos_keeps_child_repositories_of_a_namespace() {
    let (_dir, sc) = pushed(|reg| {
        let mut p = common::scenarios::Pusher::new(reg);
        let parent = p.image(
            "ns/parent",
            &common::images::Image::docker("ns/parent", 1),
            None,
        );
        let child = p.image(
            "ns/parent/child",
            &common::images::Image::docker("ns/child", 1),
            Some("v1"),
        );
        p.expect("parent", &parent, true, false);
        p.expect("child", &child, true, true);
        p.finish("namespace")
    });
    let copy = collect_and_verify(&sc, Mode::DeleteUntagged);
    tree::age_tree(copy.path(), Duration::from_secs(7200));
    let out = gc(
        copy.path(),
        &["--delete-untagged", "--delete-empty-repos"],
        0,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("empty repositories (removed): ns/parent")
    );
    let repos = copy
        .path()
        .join("docker/registry/v2/repositories/ns/parent");
    assert!(!repos.join("_manifests").exists() && !repos.join("_layers").exists());
    assert!(repos
        .join("child/_manifests/tags/v1/current/link")
        .is_file());
    let reg = Registry::start(copy.path());
    sc.pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
        .unwrap();
}

#[test]
fn a_plan_over_the_delete_share_is_refused_without_force() {
    let (_dir, sc) = pushed(scenarios::deletion_has_effect);
    let copy = collector::aged_copy(&sc);
    let before = tree::snapshot(copy.path());
    let out = gc(copy.path(), &[], 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("more than --max-delete-percent 50%")
            && stderr.contains("nothing was deleted"),
        "{stderr}"
    );
    assert_eq!(
        tree::snapshot(copy.path()),
        before,
        "a refused run deletes nothing"
    );
    // the operator looked at the plan and raises the limit
    gc(copy.path(), &["--max-delete-percent", "100"], 0);
    assert_ne!(
        tree::keys(copy.path()),
        before.keys().cloned().collect(),
        "the collection ran"
    );
    let reg = Registry::start(copy.path());
    sc.pull_verify_survivors(reg.url(), Mode::Default).unwrap();
}

/// The blob store missing (a volume not mounted, `repositories/` restored
/// without `blobs/`): every tag and revision link looks dangling. The run is
/// refused, nothing is deleted, and once the blobs are back every image pulls.
#[test]
fn a_registry_whose_blobs_are_missing_is_refused_without_force() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let copy = collector::aged_copy(&sc);
    let blobs = copy.path().join("docker/registry/v2/blobs");
    let away = copy.path().join("blobs-not-mounted");
    std::fs::rename(&blobs, &away).unwrap();
    std::fs::create_dir(&blobs).unwrap();
    let before = tree::snapshot(copy.path());
    for mode in [&[][..], &["--delete-untagged"][..]] {
        let out = gc(copy.path(), mode, 3);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no blob was found but")
                && stderr.contains("not mounted")
                && stderr.contains("nothing was deleted"),
            "{stderr}"
        );
        assert_eq!(
            tree::snapshot(copy.path()),
            before,
            "a refused run deletes nothing"
        );
    }
    std::fs::remove_dir(&blobs).unwrap();
    std::fs::rename(&away, &blobs).unwrap();
    gc(copy.path(), &["--force"], 0);
    let reg = Registry::start(copy.path());
    sc.pull_verify_survivors(reg.url(), Mode::Default).unwrap();
}

#[test]
fn offline_skips_both_looks_and_deletes_what_an_online_run_does() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let mode = Mode::DeleteUntagged;
    let mut directory_reads = Vec::new();
    for offline in [false, true] {
        let copy = collector::aged_copy(&sc);
        let before = tree::keys(copy.path());
        let report = copy.path().join("report.json");
        let report_s = report.display().to_string();
        let mut flags = mode_flags(mode);
        flags.extend(["--force", "--upload-max-age", "1h", "--report", &report_s]);
        if offline {
            flags.push("--offline");
        }
        let out = gc(copy.path(), &flags, 0);
        let r = collector::read_report(&report);
        assert_eq!(r["offline"].as_bool(), Some(offline));
        let relisted = r["recheck"]["keys_listed"].as_u64().unwrap();
        let said = String::from_utf8_lossy(&out.stdout)
            .contains("offline: the registry was declared stopped or read-only");
        assert_eq!(
            (relisted == 0, said),
            (offline, offline),
            "offline {offline}: re-check listed {relisted} keys"
        );
        let expected = collector::expected_deletions(&sc, mode, &before, true);
        collector::assert_deleted_exactly(&before, &tree::keys(copy.path()), &expected);
        directory_reads.push(r["requests"]["list"].as_u64().unwrap());
        if offline {
            let reg = Registry::start(copy.path());
            sc.pull_verify_survivors(reg.url(), mode).unwrap();
        }
    }
    // the online run walked the repositories twice more: before and after the sweep
    assert!(
        directory_reads[1] < directory_reads[0],
        "directory reads online/offline: {directory_reads:?}"
    );
}

/// The listing names blobs and layer links without a stat, and only what the
/// plan would delete is stat'ed: each deleted blob is sized as it is on disk,
/// the totals nothing measured are null, and a garbage blob and layer link
/// written a moment ago into an old tree are spared by `--min-age` as before.
#[test]
fn only_what_would_be_deleted_is_sized_and_aged() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let copy = tempfile::tempdir().unwrap();
    tree::copy_tree(&sc.root, copy.path());
    tree::age_tree(copy.path(), Duration::from_secs(2 * 3600));
    // a layer uploaded just now, its manifest not put yet
    let fresh = tree::write_blob(copy.path(), b"a layer pushed a moment ago");
    tree::write_layer_link(copy.path(), "team/app", &fresh);
    // and one whose layer link is not written yet
    let unlinked = tree::write_blob(copy.path(), b"a layer being pushed, not linked yet");
    let report = copy
        .path()
        .join("..")
        .join(format!("sized-{}.json", std::process::id()));
    // offline: no re-check, whose listing stats every link again
    gc(
        copy.path(),
        &[
            "--dry-run",
            "--offline",
            "--report",
            &report.display().to_string(),
        ],
        0,
    );
    let r = collector::read_report(&report);
    std::fs::remove_file(&report).unwrap();
    assert!(
        r["seen"]["blob_bytes"].is_null() && r["kept_blob_bytes"].is_null(),
        "{}",
        r["seen"]
    );
    let mut blobs = 0;
    for d in r["deletions"].as_array().unwrap() {
        let key = d["key"]
            .as_str()
            .unwrap()
            .strip_prefix("docker/registry/v2/")
            .unwrap();
        assert!(
            !key.contains(&fresh[7..]) && !key.contains(&unlinked[7..]),
            "{key}: written a moment ago, planned"
        );
        if d["reason"] == "unreferenced-blob" {
            let on_disk = std::fs::metadata(tree::key_path(copy.path(), key))
                .unwrap()
                .len();
            assert_eq!(d["bytes"].as_u64(), Some(on_disk), "{key}");
            blobs += 1;
        }
    }
    assert_eq!(blobs, sc.expected_deleted_blobs(Mode::Default).len());
    // the linked one is kept by its young link, the other spared as young itself
    assert!(
        r["spared_by_min_age"].as_u64().unwrap() >= 1,
        "{}",
        r["spared_by_min_age"]
    );
    // the run stat'ed links and what it would delete, and no kept blob
    let (head, keys, kept) = (
        r["requests"]["head"].as_u64().unwrap(),
        r["seen"]["keys"].as_u64().unwrap(),
        r["kept_blobs"].as_u64().unwrap(),
    );
    assert!(
        kept > 0 && head + kept <= keys,
        "{head} stats, {kept} blobs kept, {keys} keys"
    );
}

/// Tag history is listed by name too (its ages matter only for what the plan
/// would delete): an entry written just now (a tag move in flight) still
/// keeps the manifest it names under `--delete-untagged`, an old one does
/// not, and a history directory without its `link` is an empty directory,
/// removed.
#[test]
fn tag_history_listed_by_name_keeps_young_entries_and_drops_linkless_ones() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let old = sc.image("app:v1-old");
    let entry = tree::tag_index_link_key("team/app", "v1", old.digest());
    assert!(
        tree::keys(&sc.root).contains(&entry),
        "the moved tag's history names {}",
        old.digest()
    );
    let linkless = format!("sha256:{}", "7a".repeat(32));
    let linkless_dir = tree::tag_index_link_key("team/app", "v1", &linkless)
        .strip_suffix("/link")
        .unwrap()
        .to_string();
    let aged = |copy: &std::path::Path| {
        tree::copy_tree(&sc.root, copy);
        std::fs::create_dir_all(tree::key_path(copy, &linkless_dir)).unwrap();
        tree::age_tree(copy, Duration::from_secs(2 * 3600));
    };

    // all old: the old manifest and its history entry go, the empty directory too
    let copy = tempfile::tempdir().unwrap();
    aged(copy.path());
    gc(copy.path(), &["--delete-untagged", "--offline"], 0);
    let keys = tree::keys(copy.path());
    assert!(
        !keys.contains(&entry)
            && !keys.contains(&tree::revision_link_key("team/app", old.digest())),
        "v1-old was kept"
    );
    assert!(
        !tree::dirs(copy.path()).contains(&linkless_dir),
        "{linkless_dir} left"
    );

    // the entry rewritten a moment ago: a root, so v1-old and its history stay
    let copy = tempfile::tempdir().unwrap();
    aged(copy.path());
    tree::write_key(copy.path(), &entry, old.digest().as_bytes());
    gc(copy.path(), &["--delete-untagged", "--offline"], 0);
    let keys = tree::keys(copy.path());
    assert!(
        keys.contains(&entry) && keys.contains(&tree::revision_link_key("team/app", old.digest())),
        "a young history entry's manifest was collected"
    );
    let reg = Registry::start(copy.path());
    common::http::pull_verify(reg.url(), old.repo(), old.digest())
        .unwrap_or_else(|e| panic!("v1-old: {e}"));
    sc.pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
        .unwrap();
}

/// A digest directory without its file (a layer link deleted through the API,
/// which removes the file and leaves the directory; a blob whose data a killed
/// sweep removed) is an empty directory, removed like any other, and a
/// revision naming such a blob is a link to a missing blob, not an error.
#[test]
fn digest_directories_without_their_file_are_removed_as_empty() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let copy = tempfile::tempdir().unwrap();
    tree::copy_tree(&sc.root, copy.path());
    let mut garbage_blobs = sc.expected_deleted_blobs(Mode::Default).into_iter();
    let garbage = garbage_blobs.next().expect("a garbage blob");
    // and one whose `data` is a directory (junk): not a blob, and not an error
    let junk = garbage_blobs.next().expect("a second garbage blob");
    tree::remove_key(copy.path(), &tree::blob_key_for_digest(&junk));
    tree::write_key(
        copy.path(),
        &format!("{}/stray", tree::blob_key_for_digest(&junk)),
        b"not a blob",
    );
    let links: Vec<String> = tree::keys(copy.path())
        .into_iter()
        .filter(|k| k.contains("/_layers/sha256/") && k.contains(&garbage[7..]))
        .collect();
    assert!(!links.is_empty(), "no layer link names {garbage}");
    tree::remove_key(copy.path(), &links[0]);
    tree::remove_key(copy.path(), &tree::blob_key_for_digest(&garbage));
    // an empty blob directory, and a revision link naming it
    let missing = format!("sha256:{}", "5e".repeat(32));
    std::fs::create_dir_all(
        tree::key_path(copy.path(), &tree::blob_key_for_digest(&missing))
            .parent()
            .unwrap(),
    )
    .unwrap();
    tree::write_revision_link(copy.path(), "team/app", &missing);
    tree::age_tree(copy.path(), Duration::from_secs(2 * 3600));
    let emptied: Vec<String> = [
        links[0].as_str(),
        &tree::blob_key_for_digest(&garbage),
        &tree::blob_key_for_digest(&missing),
    ]
    .iter()
    .map(|k| {
        k.strip_suffix("/link")
            .or_else(|| k.strip_suffix("/data"))
            .unwrap()
            .to_string()
    })
    .collect();

    let before = tree::snapshot(copy.path());
    let out = gc(copy.path(), &["--dry-run"], 0);
    assert!(
        before == tree::snapshot(copy.path()),
        "the dry run changed the tree"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("would remove: ") && text.contains("empty directories"),
        "{text}"
    );

    gc(copy.path(), &[], 0);
    assert!(
        tree::keys(copy.path()).contains(&format!("{}/stray", tree::blob_key_for_digest(&junk))),
        "the junk was deleted"
    );
    let dirs = tree::dirs(copy.path());
    for d in &emptied {
        assert!(!dirs.contains(d), "{d} left");
    }
    assert!(
        !tree::keys(copy.path()).contains(&tree::revision_link_key("team/app", &missing)),
        "the revision of a missing blob stayed"
    );
    let reg = Registry::start(copy.path());
    sc.pull_verify_survivors(reg.url(), Mode::Default).unwrap();
}
