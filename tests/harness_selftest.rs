//! Validates the test harness (tests/common) against the real registry and the reference
//! collector of distribution 2.8.2: the fixtures push what they claim, the model matches the
//! tree the registry wrote, and the reference GC in default mode leaves exactly the blobs the
//! expectations keep, with every surviving image still pullable byte for byte.

mod common;

use std::collections::BTreeSet;

use common::model::Mode;
use common::registry::{run_reference_gc, Registry, RegistryConfig};
use common::scenarios::{self, Scenario};
use common::tree;

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir")
}

/// Copies `sc.root` to a fresh dir, runs the reference GC there, and returns the copy.
fn reference_gc_on_copy(sc: &Scenario, delete_untagged: bool) -> tempfile::TempDir {
    let copy = tempdir("harness-gc-copy-");
    tree::copy_tree(&sc.root, copy.path());
    let cfg = RegistryConfig::for_root(copy.path());
    let out = run_reference_gc(cfg.path(), delete_untagged, false);
    assert!(
        out.status.success(),
        "reference GC (delete_untagged={delete_untagged}) failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    copy
}

fn assert_blobs_eq(what: &str, want: &BTreeSet<String>, got: &BTreeSet<String>) {
    let missing: Vec<_> = want.difference(got).collect();
    let extra: Vec<_> = got.difference(want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: expected but gone: {missing:?}\nunexpectedly still there: {extra:?}"
    );
}

#[test]
fn mixed_scenario_matches_reference_gc_default_mode() {
    let root = tempdir("harness-mixed-");
    let mut reg = Registry::start(root.path());
    let sc = scenarios::mixed(&reg);
    eprintln!("{}", sc.summary());

    // The model is exactly what the registry wrote.
    sc.check_tree(None)
        .unwrap_or_else(|e| panic!("model vs tree:\n{e}"));
    // Tags as the API lists them agree with the model.
    for (repo, tags) in scenarios::model_tags(&sc.model) {
        assert_eq!(
            common::http::list_tags(reg.url(), &repo),
            tags,
            "tags of {repo}"
        );
    }
    // Everything that should exist before GC pulls byte for byte.
    let n = sc
        .pull_verify_present(reg.url())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(n >= 20, "only {n} pulls");
    // Deleted images are really gone from the API.
    for r in sc
        .images
        .iter()
        .filter(|r| !sc.present().iter().any(|p| p.label == r.label))
    {
        assert!(
            common::http::pull_verify(reg.url(), r.repo(), r.digest()).is_err(),
            "[{}] deleted but still pullable",
            r.label
        );
    }
    // Abandoned uploads are on disk.
    let uploads = tree::uploads(root.path());
    for (repo, uuid) in &sc.uploads {
        assert!(
            uploads.get(repo).map(|u| u.contains(uuid)).unwrap_or(false),
            "upload {repo}/{uuid} missing"
        );
    }
    reg.stop();

    // Reference collector, default mode, on a copy.
    let before = tree::snapshot(root.path());
    let copy = reference_gc_on_copy(&sc, false);
    assert_eq!(
        before,
        tree::snapshot(root.path()),
        "the original tree changed"
    );
    let exp = sc.expectation(Mode::Default);
    assert!(!exp.deleted_blobs.is_empty());
    assert_blobs_eq(
        "reference GC default mode",
        &exp.kept_blobs,
        &tree::blob_digests(copy.path()),
    );
    // The reference collector touches only blobs in default mode.
    let revs = tree::revisions(copy.path());
    for (repo, want) in &exp.kept_revisions {
        assert_eq!(
            revs.get(repo).cloned().unwrap_or_default(),
            *want,
            "revisions of {repo}"
        );
    }

    // Every survivor pulls through a registry started on the collected copy.
    let reg2 = Registry::start(copy.path());
    let n = sc
        .pull_verify_survivors(reg2.url(), Mode::Default)
        .unwrap_or_else(|e| panic!("after GC: {e}"));
    eprintln!("after reference GC (default): {n} pulls verified");
    drop(reg2);

    // Delete-untagged: 2.8.2 is known to keep less than these expectations (it does not follow
    // index children nor keep referrers); check it keeps a subset and report the difference.
    let copy_m = reference_gc_on_copy(&sc, true);
    let exp_m = sc.expectation(Mode::DeleteUntagged);
    // The moved tag's history still names the old revision, which -m collects.
    let b1 = sc.image("app:v1-old");
    assert_eq!(
        exp_m
            .dangling_tag_index
            .get("team/app")
            .and_then(|t| t.get("v1")),
        Some(&BTreeSet::from([b1.digest().to_string()]))
    );
    assert!(exp_m.dangling_layer_links["team/app"].contains(&b1.image.blobs[0]));
    let kept_by_ref = tree::blob_digests(copy_m.path());
    let extra: Vec<_> = kept_by_ref.difference(&exp_m.kept_blobs).collect();
    assert!(
        extra.is_empty(),
        "2.8.2 -m kept blobs the expectations delete: {extra:?}"
    );
    let lost: BTreeSet<String> = exp_m.kept_blobs.difference(&kept_by_ref).cloned().collect();
    assert!(
        !lost.is_empty(),
        "2.8.2 -m is expected to lose index children / referrers here"
    );
    let lost_images: Vec<&str> = sc
        .survivors(Mode::DeleteUntagged)
        .into_iter()
        .filter(|r| !sc.needed_blobs(r).is_disjoint(&lost))
        .map(|r| r.label.as_str())
        .collect();
    eprintln!("2.8.2 --delete-untagged breaks (expected, known bug): {lost_images:?}");
}

#[test]
fn small_scenarios_match_reference_gc_default_mode() {
    let root = tempdir("harness-small-");
    let mut reg = Registry::start(root.path());
    let parts = scenarios::all_small(&reg);
    // The list whose children were deleted is not pullable; check the registry agrees.
    let deleteref = parts.last().unwrap();
    let list = deleteref.image("list");
    assert!(common::http::pull_verify(reg.url(), list.repo(), "test").is_err());
    let sc = scenarios::merge("small", parts);
    eprintln!("{}", sc.summary());
    sc.check_tree(None)
        .unwrap_or_else(|e| panic!("model vs tree:\n{e}"));
    sc.pull_verify_present(reg.url())
        .unwrap_or_else(|e| panic!("{e}"));
    reg.stop();

    let copy = reference_gc_on_copy(&sc, false);
    let exp = sc.expectation(Mode::Default);
    // The list whose children were DELETEd keeps the child manifest blobs but not the
    // children's configs and layers: the registry can no longer serve the children.
    let list = sc.image("tagged_list_with_deleted_references/list");
    let children_blobs: BTreeSet<String> = list
        .image
        .children
        .iter()
        .flat_map(|c| c.blobs.iter().cloned())
        .collect();
    assert_eq!(children_blobs.len(), 6);
    assert!(children_blobs.is_subset(&exp.deleted_blobs));
    assert_blobs_eq(
        "reference GC default mode (small)",
        &exp.kept_blobs,
        &tree::blob_digests(copy.path()),
    );
    let reg2 = Registry::start(copy.path());
    sc.pull_verify_survivors(reg2.url(), Mode::Default)
        .unwrap_or_else(|e| panic!("after GC: {e}"));
}

#[test]
fn disk_edit_scenarios_build_and_match_the_model() {
    let root = tempdir("harness-disk-");
    let mut reg = Registry::start(root.path());
    let parts = scenarios::all_disk_edits(&reg);
    let sc = scenarios::merge("disk", parts);
    eprintln!("{}", sc.summary());
    sc.check_tree(None)
        .unwrap_or_else(|e| panic!("model vs tree:\n{e}"));
    // The trailing-newline link is really there.
    let k = tree::tag_current_link_key("newline/repo", "latest");
    assert_eq!(tree::read_key(root.path(), &k).last(), Some(&b'\n'));
    // The big manifest is really > 4 MiB.
    let big = sc.image("big_manifest/big:big");
    assert!(big.image.bytes.len() > 4 * 1024 * 1024);
    reg.stop();

    // Ageing works on every file.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    tree::set_mtime_recursive(root.path(), old);
    let snap = tree::snapshot(root.path());
    assert!(snap
        .values()
        .all(|f| f.mtime <= old + std::time::Duration::from_secs(1)));
    assert!(snap.contains_key(&tree::blob_key(big.image.hex())));
}

#[test]
fn dry_run_of_reference_gc_writes_nothing() {
    let root = tempdir("harness-dry-");
    let mut reg = Registry::start(root.path());
    let sc = scenarios::deletion_has_effect(&reg);
    reg.stop();
    let before = tree::snapshot(root.path());
    let keys_before = tree::keys(root.path());
    let cfg = RegistryConfig::for_root(root.path());
    let out = run_reference_gc(cfg.path(), false, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = tree::snapshot(root.path());
    assert!(
        before == after,
        "dry run changed the tree:\n{}",
        tree::snapshot_diff(&before, &after)
    );
    assert_eq!(keys_before, tree::keys(root.path()));
    assert!(!sc.expected_deleted_blobs(Mode::Default).is_empty());
}
