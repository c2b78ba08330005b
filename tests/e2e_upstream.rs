//! Counterparts of the reference collector's own GC tests
//! (registry/storage/garbagecollect_test.go in distribution v3), and of the failures
//! listed in the layout doc, on trees the real registry wrote. Each runs registry-gc
//! in both modes on copies and checks every deleted key and every surviving pull.

mod common;

use std::time::Duration;

use common::collector::{aged_copy, collect_and_verify, gc, pushed};
use common::images::{Image, Index, IndexKind};
use common::model::Mode;
use common::registry::Registry;
use common::scenarios::{self, Pusher, Scenario};
use common::tree;

/// Pushes the scenario, then collects a copy in each mode and verifies it. The
/// returned directory holds the scenario's (uncollected) tree.
fn both_modes(build: impl FnOnce(&Registry) -> Scenario) -> (tempfile::TempDir, Scenario) {
    let (dir, sc) = pushed(build);
    for mode in Mode::ALL {
        collect_and_verify(&sc, mode);
    }
    (dir, sc)
}

/// The images written straight into storage are ones the registry itself cannot
/// serve, before any collection: they are checked on disk instead of pulled.
fn assert_registry_cannot_serve(sc: &Scenario) {
    let reg = Registry::start(&sc.root);
    let unservable: Vec<_> = sc.images.iter().filter(|r| !r.servable).collect();
    assert!(!unservable.is_empty());
    for r in unservable {
        assert!(
            common::http::pull_verify(reg.url(), r.repo(), r.digest()).is_err(),
            "{} is servable after all",
            r.label
        );
    }
}

#[test]
fn no_deletion_no_effect() {
    let (_tree, sc) = both_modes(scenarios::no_deletion_no_effect);
    assert!(sc.expected_deleted_blobs(Mode::Default).is_empty());
}

#[test]
fn delete_manifest_if_tag_not_found() {
    let (_tree, sc) = both_modes(scenarios::delete_manifest_if_tag_not_found);
    assert!(!sc.expected_deleted_blobs(Mode::DeleteUntagged).is_empty());
}

#[test]
fn missing_manifests_directory() {
    let (_tree, sc) = both_modes(scenarios::missing_manifests);
    assert_eq!(
        sc.expected_kept_blobs(Mode::Default).len(),
        0,
        "every blob is garbage"
    );
}

#[test]
fn deletion_has_effect() {
    let (_tree, sc) = both_modes(scenarios::deletion_has_effect);
    assert!(sc.expected_deleted_blobs(Mode::Default).len() >= 4);
}

#[test]
fn deletion_with_shared_layer() {
    both_modes(scenarios::deletion_with_shared_layer);
}

#[test]
fn orphan_blob_deleted() {
    let (_tree, sc) = both_modes(scenarios::orphan_blob_deleted);
    assert!(sc
        .orphan_blobs
        .is_subset(&sc.expected_deleted_blobs(Mode::Default)));
}

#[test]
fn tagged_manifest_list_with_untagged_children() {
    let (_tree, sc) = both_modes(scenarios::tagged_list_with_untagged_children);
    assert!(sc.expected_deleted_blobs(Mode::DeleteUntagged).is_empty());
}

#[test]
fn untagged_manifest_list_with_untagged_children() {
    let (_tree, sc) = both_modes(scenarios::untagged_list_with_untagged_children);
    assert!(sc.expected_kept_blobs(Mode::DeleteUntagged).is_empty());
}

#[test]
fn untagged_manifest_list_with_tagged_children() {
    both_modes(scenarios::untagged_list_with_tagged_children);
}

#[test]
fn tagged_manifest_list_with_deleted_references() {
    both_modes(|r| scenarios::tagged_list_with_deleted_references(r, true));
    both_modes(|r| scenarios::tagged_list_with_deleted_references(r, false));
}

/// TestDeleteManifestIndexWithDanglingReferences: a tagged OCI index over two
/// images, one of them deleted by digest: its layers go, the index and the other
/// image stay.
#[test]
fn index_with_dangling_references() {
    let (_tree, sc) = both_modes(|reg| {
        let mut p = Pusher::new(reg);
        let repo = "deletemanifests";
        let i1 = p.image(repo, &Image::oci("dangling/1", 2), None);
        let i2 = p.image(repo, &Image::oci("dangling/2", 2), None);
        let ii = p.index(
            repo,
            &Index::with_default_platforms(IndexKind::OciIndex, vec![i1.clone(), i2.clone()]),
            Some("test"),
        );
        p.delete(&i2);
        p.expect("image1", &i1, true, true);
        p.expect("image2", &i2, false, false);
        p.expect("index", &ii, true, true);
        p.finish("index_with_dangling_references")
    });
    let i2 = sc.image("image2");
    for mode in Mode::ALL {
        let deleted = sc.expected_deleted_blobs(mode);
        assert!(
            i2.image.blobs.iter().all(|b| deleted.contains(b)),
            "{mode:?}"
        );
        assert!(
            !deleted.contains(i2.digest()),
            "the index still references the child's manifest blob"
        );
    }
}

/// TestDeleteManifestIndexIfTagNotFound: a tagged OCI index keeps everything under
/// `--delete-untagged`; once untagged, everything goes.
#[test]
fn index_untagged_later() {
    let (_dir, sc) = pushed(|reg| {
        let mut p = Pusher::new(reg);
        let repo = "deletemanifests";
        let i1 = p.image(repo, &Image::oci("untaglater/1", 2), None);
        let i2 = p.image(repo, &Image::oci("untaglater/2", 2), None);
        let ii = p.index(
            repo,
            &Index::with_default_platforms(IndexKind::OciIndex, vec![i1.clone(), i2.clone()]),
            Some("test"),
        );
        p.expect("image1", &i1, true, true);
        p.expect("image2", &i2, true, true);
        p.expect("index", &ii, true, true);
        p.finish("index_untagged_later")
    });
    let copy = collect_and_verify(&sc, Mode::DeleteUntagged);
    assert_eq!(
        tree::blob_digests(copy.path()),
        tree::blob_digests(&sc.root)
    );
    // untag (distribution's Tags().Untag removes the tag directory)
    tree::remove_dir(
        copy.path(),
        "repositories/deletemanifests/_manifests/tags/test",
    );
    tree::age_tree(copy.path(), Duration::from_secs(7200));
    gc(copy.path(), &["--delete-untagged", "--force"], 0);
    assert!(tree::blob_digests(copy.path()).is_empty());
    assert!(tree::revisions(copy.path()).values().all(|r| r.is_empty()));
}

/// TestGCWithUnusedLayerLinkPath: after a `--delete-untagged` run, the `_layers`
/// links of the deleted blobs are gone too.
#[test]
fn unused_layer_links() {
    let (_tree, sc) = both_modes(scenarios::unused_layer_links);
    let copy = collect_and_verify(&sc, Mode::DeleteUntagged);
    assert!(tree::layer_links(copy.path())
        .values()
        .all(|l| l.is_empty()));
}

/// TestGCWithUnknownRepository (and the layout doc's "repo without tags/", which
/// aborts 2.8.2): a repository whose `_manifests/tags` directory is missing.
#[test]
fn repository_without_tags_directory() {
    both_modes(scenarios::repo_without_tags_dir);
}

/// Schema1 manifests (which v3 cannot read and aborts on): parsed, their layers kept.
#[test]
fn schema1_manifest() {
    let (_tree, sc) = both_modes(scenarios::schema1_manifest);
    assert_registry_cannot_serve(&sc);
}

/// A manifest over 4 MiB (distribution's reader refuses those and aborts).
#[test]
fn manifest_over_4_mib() {
    let (_tree, sc) = both_modes(scenarios::big_manifest);
    assert_registry_cannot_serve(&sc);
    let copy = aged_copy(&sc);
    // and a limit below it stops the run before anything is deleted
    tree::write_blob(copy.path(), b"an orphan that would be deleted");
    tree::age_tree(copy.path(), Duration::from_secs(7200));
    let before = tree::snapshot(copy.path());
    let out = gc(copy.path(), &["--max-manifest-size", "1048576"], 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-manifest-size"));
    assert!(before == tree::snapshot(copy.path()));
}

/// Links ending with a newline (distribution #2650 aborts on them).
#[test]
fn trailing_newline_links() {
    let (_tree, sc) = both_modes(scenarios::trailing_newline_links);
    assert_registry_cannot_serve(&sc);
}

/// Pushes an image as `legacy:v1` through `reg`, then links its manifest as
/// 2.1.0 did: its revision link replaced by a `_layers` link.
fn linked_as_a_layer(reg: &Registry, root: &std::path::Path, seed: &str) -> Image {
    use common::http;
    let image = Image::docker(seed, 2);
    for b in image.blobs() {
        http::upload_blob(reg.url(), "legacy", &b.bytes);
    }
    let digest = http::put_manifest(
        reg.url(),
        "legacy",
        "v1",
        image.media_type(),
        &image.manifest_bytes(),
    );
    tree::relink_through_layers(root, "legacy", &digest);
    image
}

/// 2.1.0 linked pushed manifests into `_layers` instead of as revisions, and
/// 2.8 still serves a manifest found that way (its manifest store looks in
/// both); 2.8's own collector enumerates revisions only and deletes it. The
/// image kept here: a tagged image whose revision link is replaced by a
/// `_layers` link, which 2.8 pulls before and after a collection in both modes.
#[test]
fn a_manifest_linked_as_a_layer_as_2_1_0_did_stays_pullable() {
    use common::http;
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path());
    linked_as_a_layer(&reg, dir.path(), "linked-as-a-layer");
    let orphan = http::upload_blob(reg.url(), "legacy", b"a layer nothing names");
    drop(reg);
    tree::age_tree(dir.path(), Duration::from_secs(7200));
    let reg = Registry::start(dir.path());
    common::http::pull_verify(reg.url(), "legacy", "v1")
        .expect("2.8 serves a manifest through its _layers link");
    drop(reg);
    for flags in [&["--force"][..], &["--force", "--delete-untagged"][..]] {
        gc(dir.path(), flags, 0);
        let reg = Registry::start(dir.path());
        http::pull_verify(reg.url(), "legacy", "v1")
            .unwrap_or_else(|e| panic!("legacy:v1 after gc {flags:?}: {e}"));
        assert!(
            !http::blob_exists(reg.url(), "legacy", &orphan),
            "the orphan layer is garbage and goes"
        );
    }
}

/// An index's child linked in its repository only through `_layers` (as
/// 2.1.0 linked manifests) is served by 2.8 through that link, with its
/// config and layers: the mark phase reads it like the tag's own target, and
/// the plan keeps what it references, in both modes.
#[test]
fn an_index_child_linked_as_a_layer_stays_pullable() {
    use common::http;
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path());
    let mut pusher = Pusher::new(&reg);
    let children: Vec<_> = ["legacy-child-amd64", "legacy-child-arm64"]
        .iter()
        .map(|seed| pusher.image("legacy", &Image::docker(seed, 2), None))
        .collect();
    let index = Index::with_default_platforms(IndexKind::OciIndex, children.clone());
    pusher.index("legacy", &index, Some("multi"));
    let orphan = http::upload_blob(reg.url(), "legacy", b"a layer nothing names");
    drop(reg);
    let child = &children[1].digest;
    tree::relink_through_layers(dir.path(), "legacy", child);
    tree::age_tree(dir.path(), Duration::from_secs(7200));
    let reg = Registry::start(dir.path());
    http::pull_verify(reg.url(), "legacy", "multi")
        .expect("2.8 serves the index's child through its _layers link");
    drop(reg);
    for flags in [&["--force"][..], &["--force", "--delete-untagged"][..]] {
        gc(dir.path(), flags, 0);
        let reg = Registry::start(dir.path());
        http::pull_verify(reg.url(), "legacy", "multi")
            .unwrap_or_else(|e| panic!("legacy:multi after gc {flags:?}: {e}"));
        assert!(
            !http::blob_exists(reg.url(), "legacy", &orphan),
            "the orphan layer is garbage and goes"
        );
    }
}

/// Children 2.8 serves through a `_layers` link alone, under indexes the
/// plain walk missed: an index of a shape registry-gc does not know (an OCI
/// index carrying a stray `blobs`, which 2.8 serves as an index) whose child
/// is linked so, and, under `--delete-untagged`, a tagged index whose child
/// index is linked so and lists an untagged image. Both stay pullable.
#[test]
fn children_served_through_layer_links_under_odd_or_nested_indexes_stay_pullable() {
    use common::http;
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path());
    let mut pusher = Pusher::new(&reg);
    let odd_child = pusher.image("odd", &Image::docker("odd-index-child", 2), None);
    let index = Index::with_default_platforms(IndexKind::OciIndex, vec![odd_child.clone()]);
    let mut odd: serde_json::Value = serde_json::from_slice(&index.manifest_bytes()).unwrap();
    // the draft artifact manifest's field (2.8.2 refuses an index with
    // `layers` or `config` as ambiguous, but not this)
    odd["blobs"] = serde_json::json!([]);
    let odd = serde_json::to_vec(&odd).unwrap();
    http::put_manifest(
        reg.url(),
        "odd",
        "multi",
        common::images::MT_OCI_INDEX,
        &odd,
    );
    let image = pusher.image("nested", &Image::docker("nested-untagged-image", 2), None);
    let middle = Index::with_default_platforms(IndexKind::OciIndex, vec![image]);
    let middle = pusher.index("nested", &middle, None);
    let top = Index::with_default_platforms(IndexKind::OciIndex, vec![middle.clone()]);
    pusher.index("nested", &top, Some("multi"));
    let orphan = http::upload_blob(reg.url(), "nested", b"a layer nothing names");
    drop(reg);
    for (repo, child) in [("odd", &odd_child.digest), ("nested", &middle.digest)] {
        tree::relink_through_layers(dir.path(), repo, child);
    }
    tree::age_tree(dir.path(), Duration::from_secs(7200));
    let reg = Registry::start(dir.path());
    for repo in ["odd", "nested"] {
        http::pull_verify(reg.url(), repo, "multi")
            .unwrap_or_else(|e| panic!("2.8 serves {repo}:multi through the layer link: {e}"));
    }
    drop(reg);
    for flags in [&["--force"][..], &["--force", "--delete-untagged"][..]] {
        gc(dir.path(), flags, 0);
        let reg = Registry::start(dir.path());
        for repo in ["odd", "nested"] {
            http::pull_verify(reg.url(), repo, "multi")
                .unwrap_or_else(|e| panic!("{repo}:multi after gc {flags:?}: {e}"));
        }
        assert!(
            !http::blob_exists(reg.url(), "nested", &orphan),
            "the orphan layer is garbage and goes"
        );
    }
}

/// A tag's target held only through a `_layers` link and larger than
/// `--max-manifest-size` is kept unread only when no registry could have
/// taken it as a manifest (2.8 refuses a manifest over 4 MiB): below that it
/// may be one, whose layers are unknown, and the run stops as for a revision.
#[test]
fn a_manifest_linked_as_a_layer_over_the_manifest_size_limit_stops_the_run() {
    use common::http;
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path());
    let image = linked_as_a_layer(&reg, dir.path(), "linked-as-a-layer-large");
    drop(reg);
    tree::age_tree(dir.path(), Duration::from_secs(7200));
    let before = tree::keys(dir.path());
    let limit = (image.manifest_bytes().len() - 1).to_string();
    for flags in [&["--force"][..], &["--force", "--delete-untagged"][..]] {
        let mut flags = flags.to_vec();
        flags.extend(["--max-manifest-size", &limit]);
        let out = gc(dir.path(), &flags, 1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--max-manifest-size"),
            "{flags:?}: {stderr}"
        );
        assert_eq!(tree::keys(dir.path()), before, "{flags:?}");
    }
    let reg = Registry::start(dir.path());
    http::pull_verify(reg.url(), "legacy", "v1").expect("legacy:v1 is whole");
}

/// A tag naming a layer larger than any manifest the registry takes is kept
/// unread, and the run goes on, whatever `--max-manifest-size` says.
#[test]
fn a_tag_naming_a_layer_larger_than_any_manifest_is_kept_unread() {
    use common::http;
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path());
    let layer = common::images::det_bytes("tag-naming-a-large-layer", (4 << 20) + 1);
    let digest = http::upload_blob(reg.url(), "junk", &layer);
    let orphan = http::upload_blob(reg.url(), "junk", b"a layer nothing names");
    drop(reg);
    tree::write_link(
        dir.path(),
        "repositories/junk/_manifests/tags/big/current/link",
        &digest,
    );
    tree::age_tree(dir.path(), Duration::from_secs(7200));
    gc(
        dir.path(),
        &["--force", "--max-manifest-size", "1048576"],
        0,
    );
    let reg = Registry::start(dir.path());
    assert!(
        http::blob_exists(reg.url(), "junk", &digest),
        "the tagged layer stays"
    );
    assert!(
        !http::blob_exists(reg.url(), "junk", &orphan),
        "the orphan goes"
    );
}
