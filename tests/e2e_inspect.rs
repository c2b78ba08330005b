//! `du` and `fsck` on trees written by the real registry (distribution 2.8.2):
//! du's bytes against sizes computed from the pushed images and against what a
//! real `gc` then frees; fsck against damage done on disk, each problem named by
//! kind, key and image. Neither command may write anything. The same trees are
//! checked again in the S3 emulator (moto).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::cloud::Emulator;
use common::collector::{self, aged_copy, gc, pushed, run};
use common::http;
use common::images::{layer_blob, Blob, Image, Index, IndexKind};
use common::registry::Registry;
use common::scenarios::{Pusher, Scenario};
use common::tree;
use serde_json::Value;

const V2: &str = "docker/registry/v2/";

/// A finding as the JSON output has it: (kind, key, images).
type Found = (String, String, Vec<String>);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `registry-gc <args>` and returns (exit code, stdout as JSON when it is JSON).
fn run_json(args: &[&str]) -> (i32, Value, String) {
    let out = run(args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    let code = out.status.code().expect("exited");
    assert!(
        code == 0 || code == 5,
        "registry-gc {args:?} exited {code}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, json, stdout)
}

fn fsck(root: &Path, extra: &[&str]) -> (i32, Value) {
    let root_s = root.display().to_string();
    let mut args = vec!["fsck", "--format", "json"];
    args.extend_from_slice(extra);
    args.push(&root_s);
    let (code, json, _) = run_json(&args);
    (code, json)
}

fn du(root: &str, extra: &[&str]) -> Value {
    let mut args = vec!["du", "--format", "json"];
    args.extend_from_slice(extra);
    args.push(root);
    let (code, json, stdout) = run_json(&args);
    assert_eq!(code, 0, "{stdout}");
    json
}

/// (kind, key, images) of every finding.
fn findings(report: &Value) -> BTreeSet<Found> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            let images = f["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap().to_string())
                .collect();
            (
                f["kind"].as_str().unwrap().to_string(),
                f["key"].as_str().unwrap().to_string(),
                images,
            )
        })
        .collect()
}

fn finding(kind: &str, key: &str, images: &[&str]) -> Found {
    (
        kind.to_string(),
        format!("{V2}{key}"),
        images.iter().map(|s| s.to_string()).collect(),
    )
}

// ---------------------------------------------------------------- du

struct DuScenario {
    sc: Scenario,
    /// Sizes of what each repository alone holds, and of the shared base layer.
    one_exclusive: u64,
    two_exclusive: u64,
    base: u64,
    /// What the untagged image in `one` adds (manifest, config, layer).
    one_untagged: u64,
    orphan: u64,
}

/// The manifest, config and layers of a pushed image, but `skip`.
fn image_bytes(img: &Image, manifest: &common::images::PushedImage, skip: Option<&Blob>) -> u64 {
    manifest.size()
        + img
            .blobs()
            .iter()
            .filter(|b| skip.is_none_or(|s| s.digest != b.digest))
            .map(|b| b.size())
            .sum::<u64>()
}

fn du_scenario() -> (tempfile::TempDir, DuScenario) {
    let mut sizes = None;
    let (dir, sc) = pushed(|reg| {
        let mut p = Pusher::new(reg);
        let base = layer_blob("du/base");
        let i1 = Image::docker("du/one", 1).with_layer(base.clone());
        let i2 = Image::oci("du/two", 2).with_layer(base.clone());
        let iu = Image::docker("du/one-untagged", 1);
        let m1 = p.image("du/one", &i1, Some("v1"));
        let mu = p.image("du/one", &iu, None);
        let m2 = p.image("du/two", &i2, Some("v1"));
        let orphan = p.orphan_blob("du/two", "du-orphan");
        p.abandoned_upload("du/one", "du-upload");
        p.expect("one:v1", &m1, true, true);
        p.expect("one@untagged", &mu, true, false);
        p.expect("two:v1", &m2, true, true);
        // the harness's orphan blob, as Pusher::orphan_blob makes it
        let orphan_blob = layer_blob("orphan:du-orphan");
        assert_eq!(orphan_blob.digest, orphan);
        sizes = Some((
            image_bytes(&i1, &m1, Some(&base)) + image_bytes(&iu, &mu, None),
            image_bytes(&i2, &m2, Some(&base)) + orphan_blob.size(),
            base.size(),
            image_bytes(&iu, &mu, None),
            orphan_blob.size(),
        ));
        p.finish("du")
    });
    let (one_exclusive, two_exclusive, base, one_untagged, orphan) = sizes.unwrap();
    (
        dir,
        DuScenario {
            sc,
            one_exclusive,
            two_exclusive,
            base,
            one_untagged,
            orphan,
        },
    )
}

fn repo<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["repository"] == name)
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

/// Bytes of one repository's upload files on disk.
fn upload_bytes(root: &Path, repo: &str) -> u64 {
    let prefix = format!("repositories/{repo}/_uploads/");
    tree::keys(root)
        .iter()
        .filter(|k| k.starts_with(&prefix))
        .map(|k| tree::read_key(root, k).len() as u64)
        .sum()
}

#[test]
fn du_attributes_a_shared_base_layer_and_predicts_what_gc_frees() {
    let (_dir, s) = du_scenario();
    let copy = aged_copy(&s.sc);
    let root = copy.path().display().to_string();
    let uploads = upload_bytes(copy.path(), "du/one");
    assert!(uploads > 0);

    let before = tree::snapshot(copy.path());
    let dirs_before = tree::dirs(copy.path());
    let r = du(&root, &["--upload-max-age", "1h"]);
    // table and csv too: none of them may write
    let table = run(&["du", "--upload-max-age", "1h", &root]);
    let csv = run(&["du", "--format", "csv", "--bytes", &root]);
    let after = tree::snapshot(copy.path());
    assert!(
        before == after,
        "du changed the tree:\n{}",
        tree::snapshot_diff(&before, &after)
    );
    assert_eq!(
        dirs_before,
        tree::dirs(copy.path()),
        "du changed directories"
    );

    let (one, two) = (repo(&r, "du/one"), repo(&r, "du/two"));
    assert_eq!(one["exclusive_bytes"], s.one_exclusive, "{r}");
    assert_eq!(one["shared_bytes"], s.base);
    assert_eq!(two["exclusive_bytes"], s.two_exclusive);
    assert_eq!(two["shared_bytes"], s.base);
    assert_eq!(
        (one["tags"].as_u64(), one["manifests"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        (two["tags"].as_u64(), two["manifests"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(one["upload_bytes"], uploads);
    let t = &r["totals"];
    assert_eq!(t["shared_bytes"], s.base, "the shared layer counts once");
    assert_eq!(t["blob_bytes"], s.one_exclusive + s.two_exclusive + s.base);
    // default mode frees the orphan (held by du/two through its layer link) and the stale upload
    assert_eq!(two["gc_frees_bytes"], s.orphan);
    assert_eq!(one["gc_frees_bytes"], uploads);
    assert_eq!(one["gc_untagged_frees_bytes"], uploads + s.one_untagged);
    assert_eq!(t["gc"]["bytes"], s.orphan + uploads);
    assert_eq!(
        t["gc_untagged"]["bytes"],
        s.orphan + uploads + s.one_untagged
    );
    assert_eq!(
        r["repositories"][0]["repository"], "du/two",
        "sorted by exclusive bytes: {r}"
    );

    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.starts_with("REPOSITORY") && table.contains("du/one") && table.contains("KiB"),
        "{table}"
    );
    let csv = String::from_utf8_lossy(&csv.stdout);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("repository,tags,manifests,exclusive_bytes,shared_bytes,upload_bytes,gc_frees_bytes,gc_untagged_frees_bytes")
    );
    assert!(
        csv.contains(&format!(
            "du/one,1,2,{},{},{uploads},",
            s.one_exclusive, s.base
        )),
        "{csv}"
    );

    // what a real gc frees, in each mode, on the same tree
    for (flags, predicted) in [
        (vec![], &t["gc"]["bytes"]),
        (vec!["--delete-untagged"], &t["gc_untagged"]["bytes"]),
    ] {
        let run_copy = aged_copy(&s.sc);
        let report = run_copy
            .path()
            .join("..")
            .join(format!("du-gc-{}.json", std::process::id()));
        let report_s = report.display().to_string();
        let mut f = flags.clone();
        f.extend(["--upload-max-age", "1h", "--report", &report_s]);
        gc(run_copy.path(), &f, 0);
        let freed = collector::read_report(&report)["bytes_freed"].clone();
        assert_eq!(
            &freed, predicted,
            "{flags:?}: du predicted {predicted}, gc freed {freed}"
        );
        std::fs::remove_file(report).unwrap();
    }

    // --min-age spares as in gc: the tree is two hours old
    let r = du(&root, &["--upload-max-age", "1h", "--min-age", "3h"]);
    assert_eq!(
        (
            r["totals"]["gc"]["bytes"].as_u64(),
            r["totals"]["gc_untagged"]["bytes"].as_u64()
        ),
        (Some(0), Some(0)),
        "{r}"
    );
}

// ---------------------------------------------------------------- fsck

struct Damaged {
    sc: Scenario,
    /// (kind, key, images) fsck must report without --verify-content.
    expected: BTreeSet<Found>,
    /// and the one only --verify-content finds.
    corrupted: Found,
}

/// Pushes a small registry: a docker image sharing a base layer with another
/// repository, an OCI index of two children, an OCI image.
fn shop(
    reg: &common::registry::Registry,
) -> (Scenario, Vec<Image>, Vec<common::images::PushedImage>) {
    let mut p = Pusher::new(reg);
    let base = layer_blob("shop/base");
    let web_v1 = Image::docker("shop/web-v1", 2).with_layer(base.clone());
    let amd = Image::oci("shop/web-amd64", 1);
    let arm = Image::oci("shop/web-arm64", 1);
    let web_v2 = Image::oci("shop/web-v2", 1);
    let api = Image::docker("shop/api-v1", 1).with_layer(base);
    let m_v1 = p.image("shop/web", &web_v1, Some("v1"));
    let m_amd = p.image("shop/web", &amd, None);
    let m_arm = p.image("shop/web", &arm, None);
    let m_multi = p.index(
        "shop/web",
        &Index::with_default_platforms(IndexKind::OciIndex, vec![m_amd.clone(), m_arm.clone()]),
        Some("multi"),
    );
    let m_v2 = p.image("shop/web", &web_v2, Some("v2"));
    let m_api = p.image("shop/api", &api, Some("v1"));
    for (label, m) in [
        ("web:v1", &m_v1),
        ("web:multi", &m_multi),
        ("web:v2", &m_v2),
        ("api:v1", &m_api),
    ] {
        p.expect(label, m, true, true);
    }
    let sc = p.finish("shop");
    (
        sc,
        vec![web_v1, amd, arm, web_v2, api],
        vec![m_v1, m_amd, m_arm, m_multi, m_v2, m_api],
    )
}

/// Damages an aged copy of the shop registry on disk; returns what fsck must say.
fn damage(
    root: &Path,
    images: &[Image],
    pushed_images: &[common::images::PushedImage],
) -> (BTreeSet<Found>, Found) {
    let (web_v1, web_v2, api) = (&images[0], &images[3], &images[4]);
    let m_amd = &pushed_images[1];
    let mut expected = BTreeSet::new();

    // a layer's data removed: web:v1 is broken; its layer link now dangles
    let lost = &web_v1.layers[0];
    tree::remove_key(root, &tree::blob_key(lost.hex()));
    expected.insert(finding(
        "missing-blob",
        &tree::blob_key(lost.hex()),
        &["shop/web:v1"],
    ));
    expected.insert(finding(
        "dangling-layer-link",
        &tree::layer_link_key("shop/web", &lost.digest),
        &[],
    ));

    // a child manifest's blob removed: the index tagged multi is broken
    tree::remove_key(root, &tree::blob_key(m_amd.hex()));
    expected.insert(finding(
        "missing-child",
        &tree::blob_key(m_amd.hex()),
        &["shop/web:multi"],
    ));
    expected.insert(finding(
        "revision-manifest-missing",
        &tree::revision_link_key("shop/web", &m_amd.digest),
        &["shop/web:multi"],
    ));

    // junk in a layer link and in a tag link
    // (the registry answers 500 for that layer: the image does not pull; its
    // tag's link is junk too, so it is named by digest)
    let junk_layer = tree::layer_link_key("shop/web", &web_v2.layers[0].digest);
    tree::write_key(root, &junk_layer, b"sha256:not-a-digest\n");
    let m_v2 = format!("shop/web@{}", pushed_images[4].digest);
    expected.insert(finding("junk-link", &junk_layer, &[&m_v2]));
    let junk_tag = tree::tag_current_link_key("shop/web", "v2");
    tree::write_key(root, &junk_tag, b"\x00\x01garbage");
    expected.insert(finding("junk-link", &junk_tag, &["shop/web:v2"]));
    // a trailing newline: gc tolerates it, the registry cannot parse it
    let newline_tag = tree::tag_current_link_key("shop/web", "v1");
    tree::append_newline(root, &newline_tag);
    expected.insert(finding("junk-link", &newline_tag, &["shop/web:v1"]));

    // a config's layer link removed: the blob is there, the registry will not serve it
    let unlinked = tree::layer_link_key("shop/api", &api.config.digest);
    tree::remove_key(root, &unlinked);
    expected.insert(finding("blob-not-linked", &unlinked, &["shop/api:v1"]));

    // stray keys of each kind
    for key in [
        "blobs/sha256/aa/tmp-upload-1",
        "repositories/shop/web/README",
        "repositories/shop/web/_manifests/notes.txt",
        "stray-at-root",
    ] {
        tree::write_key(root, key, b"stray");
        expected.insert(finding("stray-key", key, &[]));
    }

    // an orphan blob: data and no link
    let orphan = tree::write_blob(root, b"an orphan nobody links");
    expected.insert(finding(
        "orphan-blob",
        &tree::blob_key_for_digest(&orphan),
        &[],
    ));

    // a blob's bytes corrupted, same length: only --verify-content sees it
    let bad = &api.layers[0];
    let key = tree::blob_key(bad.hex());
    let mut bytes = tree::read_key(root, &key);
    bytes[0] ^= 0xff;
    tree::write_key(root, &key, &bytes);
    let corrupted = finding("content-mismatch", &key, &["shop/api:v1"]);
    (expected, corrupted)
}

fn damaged() -> (tempfile::TempDir, tempfile::TempDir, Damaged) {
    let mut parts = None;
    let (dir, sc) = pushed(|reg| {
        let (sc, images, pushed_images) = shop(reg);
        parts = Some((images, pushed_images));
        sc
    });
    let (images, pushed_images) = parts.unwrap();
    let copy = aged_copy(&sc);
    let (expected, corrupted) = damage(copy.path(), &images, &pushed_images);
    (
        dir,
        copy,
        Damaged {
            sc,
            expected,
            corrupted,
        },
    )
}

#[test]
fn fsck_on_a_clean_registry_exits_zero_with_no_findings() {
    let (_dir, sc) = pushed(|reg| shop(reg).0);
    let copy = aged_copy(&sc);
    for extra in [vec![], vec!["--verify-content"], vec!["--strict"]] {
        let (code, r) = fsck(copy.path(), &extra);
        assert_eq!(code, 0, "{extra:?}: {r}");
        assert_eq!(
            r["findings"].as_array().map(Vec::len),
            Some(0),
            "{extra:?}: {r}"
        );
    }
    let out = run(&["fsck", &copy.path().display().to_string()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("clean: no findings"));
}

#[test]
fn fsck_on_the_mixed_scenario_finds_no_problems() {
    // every manifest kind, referrers, deleted images, orphans: garbage, not corruption
    let (_dir, sc) = pushed(common::scenarios::mixed);
    let copy = aged_copy(&sc);
    let (code, r) = fsck(copy.path(), &["--verify-content"]);
    assert_eq!((code, r["problems"].as_u64()), (0, Some(0)), "{r}");
    let kinds: BTreeSet<String> = findings(&r).into_iter().map(|f| f.0).collect();
    assert!(
        kinds.contains("orphan-blob"),
        "the deleted images' blobs are orphans: {r}"
    );
    let (code, r) = fsck(copy.path(), &["--strict"]);
    assert_eq!(code, 5, "--strict counts informational findings: {r}");

    // what a collection leaves is clean, even strictly
    for mode in common::model::Mode::ALL {
        let collected = collector::collect_and_verify(&sc, mode);
        let (code, r) = fsck(collected.path(), &["--strict", "--verify-content"]);
        assert_eq!(
            (code, r["findings"].as_array().map(Vec::len)),
            (0, Some(0)),
            "{mode:?}: {r}"
        );
    }
}

#[test]
fn fsck_names_each_kind_of_damage_and_writes_nothing() {
    let (_dir, copy, d) = damaged();
    let before = tree::snapshot(copy.path());
    let dirs_before = tree::dirs(copy.path());

    let (code, plain) = fsck(copy.path(), &[]);
    assert_eq!(code, 5, "{plain}");
    let got = findings(&plain);
    let missing: Vec<_> = d.expected.difference(&got).collect();
    let extra: Vec<_> = got.difference(&d.expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not found: {missing:#?}\nunexpected: {extra:#?}"
    );
    assert!(
        plain["checked"]["blobs_verified"].is_null(),
        "plain fsck re-hashes nothing"
    );
    let problems = d
        .expected
        .iter()
        .filter(|f| !["orphan-blob", "stray-key", "dangling-layer-link"].contains(&f.0.as_str()))
        .count();
    assert_eq!(plain["problems"].as_u64(), Some(problems as u64));

    let (code, verified) = fsck(copy.path(), &["--verify-content"]);
    assert_eq!(code, 5);
    let mut want = d.expected.clone();
    want.insert(d.corrupted.clone());
    assert_eq!(findings(&verified), want);
    assert_eq!(
        verified["checked"]["blobs_verified"].as_u64(),
        Some(tree::blob_digests(copy.path()).len() as u64)
    );

    let text = run(&["fsck", &copy.path().display().to_string()]);
    assert_eq!(text.status.code(), Some(5));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("images with a missing config or layer (1):") && text.contains("shop/web:v1"),
        "{text}"
    );

    let after = tree::snapshot(copy.path());
    assert!(
        before == after,
        "fsck changed the tree:\n{}",
        tree::snapshot_diff(&before, &after)
    );
    assert_eq!(dirs_before, tree::dirs(copy.path()));
    drop(d.sc);
}

#[test]
fn fsck_and_du_on_s3_moto_agree_with_the_filesystem() {
    let emulator = Emulator::Moto;
    emulator.require();
    let rt = runtime();
    let args = emulator.gc_args();
    let with = |cmd: &str, extra: &[&str], url: &str| -> (i32, Value) {
        let mut a: Vec<&str> = vec![cmd, "--format", "json"];
        a.extend(args.iter().map(String::as_str));
        a.extend_from_slice(extra);
        a.push(url);
        let (code, json, _) = run_json(&a);
        (code, json)
    };

    // fsck: the damaged tree, key for key in the bucket
    let (_dir, copy, d) = damaged();
    let root = Emulator::unique_root("inspect-fsck");
    rt.block_on(emulator.upload_tree(copy.path(), &root));
    let keys = rt.block_on(emulator.keys(&root));
    let (code, r) = with("fsck", &["--verify-content"], &emulator.url(&root));
    assert_eq!(code, 5, "{r}");
    let mut want = d.expected.clone();
    want.insert(d.corrupted.clone());
    assert_eq!(findings(&r), want, "moto: {r}");
    assert_eq!(
        rt.block_on(emulator.keys(&root)),
        keys,
        "fsck changed the bucket"
    );

    // du: same numbers as on disk (objects cannot be back-dated: no fence here)
    let (_dir2, s) = du_scenario();
    let root = Emulator::unique_root("inspect-du");
    rt.block_on(emulator.upload_tree(&s.sc.root, &root));
    let keys = rt.block_on(emulator.keys(&root));
    let flags = ["--min-age", "0s", "--upload-max-age", "0s"];
    let (code, in_bucket) = with("du", &flags, &emulator.url(&root));
    assert_eq!(code, 0);
    let on_disk = du(&s.sc.root.display().to_string(), &flags);
    assert_eq!(in_bucket["repositories"], on_disk["repositories"]);
    assert_eq!(in_bucket["totals"], on_disk["totals"]);
    assert_eq!(repo(&in_bucket, "du/one")["shared_bytes"], s.base);
    assert_eq!(
        rt.block_on(emulator.keys(&root)),
        keys,
        "du changed the bucket"
    );
}

#[test]
fn fsck_that_cannot_complete_exits_one_and_du_takes_gc_settings() {
    let (_dir, sc) = pushed(|reg| shop(reg).0);
    let root = sc.root.display().to_string();
    // a manifest over the read limit stops the check: exit 1, not "problems found"
    let out = run(&["fsck", "--max-manifest-size", "16", &root]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fsck could not complete"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // not a registry: refused like gc
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        run(&["fsck", &empty.path().display().to_string()])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        run(&["du", &empty.path().display().to_string()])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        run(&["du", "--min-age", "soon", &root]).status.code(),
        Some(2)
    );
    // [gc] min_age from --config applies to du's "would free" columns
    let config = sc
        .root
        .join("..")
        .join(format!("du-config-{}.toml", std::process::id()));
    std::fs::write(&config, "[gc]\nmin_age = \"3h\"\n").unwrap();
    let r = du(&root, &["--config", &config.display().to_string()]);
    assert_eq!(r["min_age_seconds"].as_u64(), Some(3 * 3600), "{r}");
    let r = du(
        &root,
        &["--config", &config.display().to_string(), "--min-age", "0s"],
    );
    assert_eq!(r["min_age_seconds"].as_u64(), Some(0), "the flag wins: {r}");
    std::fs::remove_file(config).unwrap();
}

/// A manifest blob whose bytes no longer match its digest (one bit flipped) is
/// a `content-mismatch` problem naming it and its image, with or without
/// `--verify-content` (once), and the check goes on; what only that manifest
/// references is not called garbage. `gc` and `du` still refuse to work on it.
#[test]
fn fsck_reports_a_corrupt_manifest_and_goes_on() {
    let mut parts = None;
    let (_dir, sc) = pushed(|reg| {
        let (sc, images, pushed_images) = shop(reg);
        parts = Some((images, pushed_images));
        sc
    });
    let (images, pushed_images) = parts.unwrap();
    let copy = aged_copy(&sc);
    let root = copy.path();
    let (web_v2, m_v2) = (&images[3], &pushed_images[4]);
    let key = tree::blob_key(m_v2.hex());
    let mut bytes = tree::read_key(root, &key);
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    tree::write_key(root, &key, &bytes);
    // and its config referenced by it alone: no layer link names it any more
    tree::remove_key(
        root,
        &tree::layer_link_key("shop/web", &web_v2.config.digest),
    );
    let before = tree::snapshot(root);

    let want: BTreeSet<Found> = [finding("content-mismatch", &key, &["shop/web:v2"])].into();
    for extra in [&[][..], &["--verify-content"][..]] {
        let (code, r) = fsck(root, extra);
        assert_eq!(code, 5, "fsck {extra:?}: {r}");
        assert_eq!(findings(&r), want, "fsck {extra:?}: {r}");
        assert_eq!(r["checked"]["manifests"].as_u64(), Some(6), "{r}");
    }
    // --strict: the config is not an orphan
    let (code, r) = fsck(root, &["--strict"]);
    assert_eq!((code, findings(&r)), (5, want.clone()), "{r}");

    let root_s = root.display().to_string();
    for args in [
        vec!["gc", "-m", "--min-age", "0s", "--force", &root_s],
        vec!["du", &root_s],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("does not match its digest"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after = tree::snapshot(root);
    assert!(before == after, "{}", tree::snapshot_diff(&before, &after));
    drop(sc);
}

/// A tag directory without its `current/link` (a tag delete or a copy cut
/// short; on a filesystem also an empty tag directory), or any file in
/// `_manifests/tags/` (2.8 lists its entries, directories or not): 2.8 still
/// lists the tag in `tags/list`, and fails when it is pulled. fsck names it as
/// a problem, by the link that is missing.
#[test]
fn fsck_reports_a_tag_the_registry_lists_but_cannot_serve() {
    let (_dir, sc) = pushed(|reg| shop(reg).0);
    let copy = aged_copy(&sc);
    let root = copy.path();
    // shop/web:v2 keeps its history entry; shop/api:gone is an empty directory
    tree::remove_dir(root, "repositories/shop/web/_manifests/tags/v2/current");
    std::fs::create_dir_all(tree::key_path(
        root,
        "repositories/shop/api/_manifests/tags/gone",
    ))
    .unwrap();
    // a file where a tag's directory would be, and a directory with only a file
    let readme = "repositories/shop/web/_manifests/tags/README";
    let notes = "repositories/shop/api/_manifests/tags/notes/todo.txt";
    tree::write_key(root, readme, b"stray");
    tree::write_key(root, notes, b"stray");
    tree::age_tree(root, std::time::Duration::from_secs(7200));
    {
        let reg = Registry::start(root);
        for (repo, tag) in [
            ("shop/web", "v2"),
            ("shop/api", "gone"),
            ("shop/web", "README"),
            ("shop/api", "notes"),
        ] {
            assert!(
                http::list_tags(reg.url(), repo).contains(&tag.to_string()),
                "the registry lists {repo}:{tag}"
            );
            assert!(
                http::get_manifest(reg.url(), repo, tag).is_err(),
                "and cannot serve it"
            );
        }
        assert!(http::pull_verify(reg.url(), "shop/web", "v1").is_ok());
    }
    let before = tree::snapshot(root);
    let (code, r) = fsck(root, &[]);
    let want: BTreeSet<Found> = [
        finding(
            "tag-link-missing",
            &tree::tag_current_link_key("shop/web", "v2"),
            &["shop/web:v2"],
        ),
        finding(
            "tag-link-missing",
            &tree::tag_current_link_key("shop/api", "gone"),
            &["shop/api:gone"],
        ),
        finding(
            "tag-link-missing",
            &tree::tag_current_link_key("shop/web", "README"),
            &["shop/web:README"],
        ),
        finding(
            "tag-link-missing",
            &tree::tag_current_link_key("shop/api", "notes"),
            &["shop/api:notes"],
        ),
        finding("stray-key", readme, &[]),
        finding("stray-key", notes, &[]),
    ]
    .into();
    assert_eq!((code, findings(&r)), (5, want), "{r}");
    let after = tree::snapshot(root);
    assert!(before == after, "{}", tree::snapshot_diff(&before, &after));
    drop(sc);
}

/// The directory of a revision link (what 2.1.0 never wrote).
fn revision_dir_key(repo: &str, digest: &str) -> String {
    let link = tree::revision_link_key(repo, digest);
    link.strip_suffix("/link").unwrap().to_string()
}

/// 2.1.0 linked manifests into the repository's `_layers` instead of its
/// revisions, and 2.8 still serves them through that link (its manifest store
/// tries the revision link, then the layer link): a tag, or an index's child,
/// whose manifest is linked only so is a note, not a problem. What such a
/// tag's image lacks is a problem, as for any tag, and so is junk in the link
/// it is served through.
#[test]
fn fsck_follows_2_8_to_manifests_linked_only_in_layers() {
    let mut parts = None;
    let (_dir, sc) = pushed(|reg| {
        let (sc, images, pushed_images) = shop(reg);
        parts = Some((images, pushed_images));
        sc
    });
    let (images, pushed_images) = parts.unwrap();
    let copy = aged_copy(&sc);
    let root = copy.path();
    let (m_v1, m_amd) = (&pushed_images[0], &pushed_images[1]);
    for m in [m_v1, m_amd] {
        tree::remove_dir(root, &revision_dir_key("shop/web", &m.digest));
        tree::write_layer_link(root, "shop/web", &m.digest);
    }
    let reg = Registry::start(root);
    for tag in ["v1", "multi", "v2"] {
        http::pull_verify(reg.url(), "shop/web", tag)
            .unwrap_or_else(|e| panic!("2.8 serves shop/web:{tag}: {e}"));
    }
    for m in [m_v1, m_amd] {
        http::pull_verify(reg.url(), "shop/web", &m.digest)
            .unwrap_or_else(|e| panic!("2.8 serves shop/web@{}: {e}", m.digest));
    }
    let v1_link = tree::layer_link_key("shop/web", &m_v1.digest);
    let notes: BTreeSet<Found> = [
        finding("layer-linked-manifest", &v1_link, &["shop/web:v1"]),
        finding(
            "layer-linked-manifest",
            &tree::layer_link_key("shop/web", &m_amd.digest),
            &["shop/web:multi"],
        ),
    ]
    .into();
    let (code, r) = fsck(root, &[]);
    assert_eq!((code, findings(&r)), (0, notes.clone()), "{r}");
    assert_eq!(r["problems"].as_u64(), Some(0), "{r}");
    let (code, _) = fsck(root, &["--strict"]);
    assert_eq!(code, 5, "--strict counts the notes");

    // a layer lost, of the image shop/web:v1, then of the index's child
    // linked so: 2.8 cannot pull the tag that reaches it, and fsck names it
    for (image, tag) in [(&images[0], "v1"), (&images[1], "multi")] {
        let lost = &image.layers[0];
        tree::remove_key(root, &tree::blob_key(lost.hex()));
        assert!(http::pull_verify(reg.url(), "shop/web", tag).is_err());
        let mut want = notes.clone();
        want.insert(finding(
            "missing-blob",
            &tree::blob_key(lost.hex()),
            &[&format!("shop/web:{tag}")],
        ));
        want.insert(finding(
            "dangling-layer-link",
            &tree::layer_link_key("shop/web", &lost.digest),
            &[],
        ));
        let (code, r) = fsck(root, &[]);
        assert_eq!((code, findings(&r)), (5, want), "{tag}: {r}");
        tree::write_key(root, &tree::blob_key(lost.hex()), &lost.bytes);
    }

    // junk in the link the manifest is served through: 2.8 answers 500
    tree::write_key(root, &v1_link, b"sha256:not-a-digest");
    assert!(http::get_manifest(reg.url(), "shop/web", "v1").is_err());
    let mut want = notes;
    want.insert(finding("junk-link", &v1_link, &["shop/web:v1"]));
    let (code, r) = fsck(root, &[]);
    assert_eq!((code, findings(&r)), (5, want), "{r}");
    drop(reg);
    drop(sc);
}

/// 2.8 never reads a tag's history entries (`index/sha256/<hex>/link`): it
/// resolves a tag by its `current/link` alone, lists tags by directory, and a
/// push or a delete writes or removes the entries without reading them. One
/// that does not hold its digest (junk, another digest, a trailing newline)
/// breaks nothing: a note, not a problem.
#[test]
fn fsck_counts_junk_tag_history_links_as_notes() {
    let mut parts = None;
    let (_dir, sc) = pushed(|reg| {
        let (sc, _, pushed_images) = shop(reg);
        parts = Some(pushed_images);
        sc
    });
    let pushed_images = parts.unwrap();
    let copy = aged_copy(&sc);
    let root = copy.path();
    let (m_v1, m_v2, m_api) = (&pushed_images[0], &pushed_images[4], &pushed_images[5]);
    let junk = tree::tag_index_link_key("shop/web", "v1", &m_v1.digest);
    tree::write_key(root, &junk, b"not a digest");
    let other = tree::tag_index_link_key("shop/web", "v2", &m_v2.digest);
    tree::write_key(root, &other, m_v1.digest.as_bytes());
    let newline = tree::tag_index_link_key("shop/api", "v1", &m_api.digest);
    tree::append_newline(root, &newline);
    let want: BTreeSet<Found> = [
        finding("junk-tag-index", &junk, &["shop/web:v1"]),
        finding("junk-tag-index", &other, &["shop/web:v2"]),
        finding("junk-tag-index", &newline, &["shop/api:v1"]),
    ]
    .into();
    let (code, r) = fsck(root, &[]);
    assert_eq!((code, findings(&r)), (0, want), "{r}");
    assert_eq!(r["problems"].as_u64(), Some(0), "{r}");

    let reg = Registry::start(root);
    assert_eq!(
        http::list_tags(reg.url(), "shop/web"),
        vec!["multi".to_string(), "v1".to_string(), "v2".to_string()]
    );
    for (repo, tag) in [("shop/web", "v1"), ("shop/web", "v2"), ("shop/api", "v1")] {
        http::pull_verify(reg.url(), repo, tag)
            .unwrap_or_else(|e| panic!("2.8 serves {repo}:{tag}: {e}"));
    }
    // a delete through the API goes through too (202), untagging shop/web:v1
    http::delete_manifest(reg.url(), "shop/web", &m_v1.digest);
    assert_eq!(
        http::list_tags(reg.url(), "shop/web"),
        vec!["multi".to_string(), "v2".to_string()]
    );
    drop(reg);
    drop(sc);
}

/// Manifests distribution 2.8.2 cannot decode, as a tree written another way
/// (a newer or other registry, a copy tool) holds them: its own PUT refuses
/// them, and its GET of one, by tag or by digest, fails (500, or for a
/// manifest without `mediaType` whose `manifests` it cannot read, a crashed
/// request). An index listing one is served, and a pull of that child
/// fails. fsck names each as `undecodable-manifest`, a problem, by every tag
/// reaching it (through indexes) or by digest.
#[test]
fn fsck_reports_manifests_the_registry_cannot_decode() {
    let mut parts = None;
    let (_dir, sc) = pushed(|reg| {
        let (sc, images, pushed_images) = shop(reg);
        parts = Some((images, pushed_images));
        sc
    });
    let (images, pushed_images) = parts.unwrap();
    let copy = aged_copy(&sc);
    let root = copy.path();
    let repo = "shop/web";
    // descriptors of blobs shop/web links, and of manifests it has as revisions
    let web_v2 = &images[3];
    let (m_amd, m_arm) = (&pushed_images[1], &pushed_images[2]);
    let blob_desc = |b: &Blob, media_type: &str| serde_json::json!({"mediaType": media_type, "digest": b.digest, "size": b.bytes.len()});
    let config = blob_desc(&web_v2.config, "application/vnd.oci.image.config.v1+json");
    let layer = blob_desc(
        &web_v2.layers[0],
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    let manifest_desc = |m: &common::images::PushedImage| {
        serde_json::json!({"mediaType": m.media_type, "digest": m.digest, "size": m.bytes.len(),
            "platform": {"architecture": "amd64", "os": "linux"}})
    };
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let image = |version: Value, media_type: Value| {
        let mut m = serde_json::json!({"config": config, "layers": [layer]});
        if !version.is_null() {
            m["schemaVersion"] = version;
        }
        if !media_type.is_null() {
            m["mediaType"] = media_type;
        }
        m
    };
    let schema1 = |v1_compatibility: Value| {
        serde_json::json!({"schemaVersion": 1, "name": repo, "tag": "old", "architecture": "amd64",
            "fsLayers": [{"blobSum": web_v2.layers[0].digest}],
            "history": [{"v1Compatibility": v1_compatibility}]})
    };
    let mut bad_layer = layer.clone();
    bad_layer["size"] = Value::from(bad_layer["size"].to_string());
    let mut bad_child = manifest_desc(m_amd);
    bad_child["size"] = Value::from(bad_child["size"].to_string());

    // each tagged as named; why 2.8.2 cannot decode it
    let undecodable: Vec<(&str, Value)> = vec![
        // the OCI 1.1 draft artifact manifest: no schemaVersion, a media type 2.8 never knew
        (
            "artifact",
            serde_json::json!({"mediaType": "application/vnd.oci.artifact.manifest.v1+json",
                "artifactType": "application/spdx+json", "blobs": [layer],
                "subject": manifest_desc(m_amd)}),
        ),
        (
            "unknown-media-type",
            image(2.into(), "application/x-future".into()),
        ),
        ("no-schema-version", image(Value::Null, oci.into())),
        ("schema-version-3", image(3.into(), oci.into())),
        ("schema-version-string", image("2".into(), oci.into())),
        (
            "schema-version-float",
            image(serde_json::json!(2.5), oci.into()),
        ),
        ("media-type-number", image(2.into(), 5.into())),
        // schema version 2 with schema1's media type: no version-2 type
        (
            "schema1-media-type",
            image(
                2.into(),
                "application/vnd.docker.distribution.manifest.v1+json".into(),
            ),
        ),
        // a field of the structure 2.8 decodes into, of a JSON type Go refuses
        (
            "size-string",
            serde_json::json!({"schemaVersion": 2, "mediaType": oci, "config": config, "layers": [bad_layer]}),
        ),
        (
            "annotation-number",
            serde_json::json!({"schemaVersion": 2, "mediaType": oci, "config": config,
                "layers": [layer], "annotations": {"n": 1}}),
        ),
        ("schema1-history-number", schema1(5.into())),
        // no mediaType: 2.8 reads it as an index first, and that read failing
        // crashes the request
        (
            "index-without-media-type",
            serde_json::json!({"schemaVersion": 2, "manifests": [bad_child]}),
        ),
    ];
    // served by 2.8.2 and pulled through it: no problem
    let served: Vec<(&str, Value)> = vec![
        ("schema1-unsigned", schema1("{}".into())),
        ("oci-without-media-type", image(2.into(), Value::Null)),
        (
            "index-without-media-type-ok",
            serde_json::json!({"schemaVersion": 2, "manifests": [manifest_desc(m_amd), manifest_desc(m_arm)]}),
        ),
        (
            "artifact-type-and-subject",
            serde_json::json!({"schemaVersion": 2, "mediaType": oci,
                "artifactType": "application/spdx+json", "config": config, "layers": [layer],
                "subject": manifest_desc(m_amd)}),
        ),
        // what schema2 does not read (annotations), of any type; a config's
        // platform `features`, which only an index's entries have
        (
            "schema2-annotation-number",
            serde_json::json!({"schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": config, "layers": [layer], "annotations": {"n": 1}}),
        ),
    ];
    // fields of two kinds: served as the image its media type says (a note)
    let two_kinds = serde_json::json!({"schemaVersion": 2, "mediaType": oci, "config": config,
        "layers": [layer], "fsLayers": [{"blobSum": web_v2.layers[0].digest}]});

    let write = |tag: Option<&str>, m: &Value| {
        tree::write_manifest(root, repo, tag, &serde_json::to_vec(m).unwrap())
    };
    let mut want = BTreeSet::new();
    let mut bad = Vec::new();
    for (tag, m) in &undecodable {
        let d = write(Some(tag), m);
        let images = [format!("{repo}:{tag}")];
        let images: Vec<&str> = images.iter().map(String::as_str).collect();
        want.insert(finding(
            "undecodable-manifest",
            &tree::blob_key(&d[7..]),
            &images,
        ));
        bad.push((tag.to_string(), d));
    }
    let digest_of = |tag: &str| bad.iter().find(|(t, _)| t == tag).unwrap().1.clone();
    // pinned by scan as well (a media type that is no string; schema1's
    // media type with an image's fields): a note besides the problem
    for tag in ["media-type-number", "schema1-media-type"] {
        let d = digest_of(tag);
        want.insert(finding(
            "unknown-manifest",
            &tree::blob_key(&d[7..]),
            &[&format!("{repo}:{tag}")],
        ));
    }
    // untagged: named by digest
    let untagged = write(None, &image(3.into(), "application/x-untagged".into()));
    let by_digest = format!("{repo}@{untagged}");
    want.insert(finding(
        "undecodable-manifest",
        &tree::blob_key(&untagged[7..]),
        &[&by_digest],
    ));
    // the child of an index: the index is served, its child is not
    let mut child = image(Value::Null, oci.into());
    child["annotations"] = serde_json::json!({"platform": "arm64"});
    let child = write(None, &child);
    let child_desc = serde_json::json!({"mediaType": oci, "digest": child, "size": 1,
        "platform": {"architecture": "arm64", "os": "linux"}});
    let index = write(
        Some("multi-with-bad-child"),
        &serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [manifest_desc(m_amd), child_desc]}),
    );
    want.insert(finding(
        "undecodable-manifest",
        &tree::blob_key(&child[7..]),
        &["shop/web:multi-with-bad-child"],
    ));
    let mut good = Vec::new();
    for (tag, m) in &served {
        good.push((tag.to_string(), write(Some(tag), m)));
    }
    let mixed = write(Some("two-kinds"), &two_kinds);
    want.insert(finding(
        "unknown-manifest",
        &tree::blob_key(&mixed[7..]),
        &["shop/web:two-kinds"],
    ));
    good.push(("two-kinds".to_string(), mixed));
    tree::age_tree(root, std::time::Duration::from_secs(7200));

    {
        let reg = Registry::start(root);
        for (tag, d) in &bad {
            for reference in [tag.as_str(), d.as_str()] {
                assert!(
                    http::get_manifest(reg.url(), repo, reference).is_err(),
                    "2.8.2 cannot serve {repo}:{reference} ({tag})"
                );
            }
        }
        for reference in [&untagged, &child] {
            assert!(http::get_manifest(reg.url(), repo, reference).is_err());
        }
        // the index is served; pulling it (its bad child) fails
        http::get_manifest(reg.url(), repo, "multi-with-bad-child").unwrap();
        http::get_manifest(reg.url(), repo, &index).unwrap();
        assert!(http::pull_verify(reg.url(), repo, "multi-with-bad-child").is_err());
        for (tag, d) in &good {
            for reference in [tag.as_str(), d.as_str()] {
                // 2.8 serves schema1 signed with its own key: other bytes than
                // those stored, which pull_verify would call corrupt
                let served = if tag.starts_with("schema1") {
                    http::get_manifest(reg.url(), repo, reference).map(|_| Vec::new())
                } else {
                    http::pull_verify(reg.url(), repo, reference)
                };
                served.unwrap_or_else(|e| panic!("2.8.2 serves {repo}:{reference}: {e}"));
            }
        }
    }

    let before = tree::snapshot(root);
    let (code, r) = fsck(root, &[]);
    let got = findings(&r);
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not found: {missing:#?}\nunexpected: {extra:#?}"
    );
    assert_eq!(code, 5, "{r}");
    let problems = want
        .iter()
        .filter(|f| f.0 == "undecodable-manifest")
        .count();
    assert_eq!(r["problems"].as_u64(), Some(problems as u64), "{r}");
    let text = run(&["fsck", &root.display().to_string()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("shop/web:artifact")
            && text.contains("application/vnd.oci.artifact.manifest.v1+json"),
        "{text}"
    );

    let after = tree::snapshot(root);
    assert!(before == after, "{}", tree::snapshot_diff(&before, &after));

    // gc keeps everything they mention, as before: nothing here is garbage
    let blobs = tree::blob_digests(root);
    gc(root, &[], 0);
    assert_eq!(tree::blob_digests(root), blobs);
    drop(sc);
}

/// du's "would free" columns are the plan of `gc --dry-run` with the same
/// flags, re-check included: `gc` withdraws from its plan what a link written
/// since the fence names. Here, through the real registry on S3 (moto), an
/// old image was put as `latest`, `latest` moved on, and the image deleted by
/// digest, all within `--min-age`: the history entry is young, and `gc` keeps
/// the image's blobs.
#[test]
fn du_agrees_with_gc_dry_run_after_recent_writes_on_s3() {
    let emulator = Emulator::Moto;
    emulator.require();
    let root = Emulator::unique_root("inspect-du-recent");
    let reg = Registry::start_with_driver(&common::registry::s3_driver_yaml(
        &emulator.endpoint(),
        common::cloud::BUCKET,
        &root,
    ));
    let repo = "young/app";
    let push = |img: &Image, tag: &str| {
        for b in img.blobs() {
            http::upload_blob(reg.url(), repo, &b.bytes);
        }
        let bytes = img.manifest_bytes();
        let digest = http::put_manifest(reg.url(), repo, tag, img.media_type(), &bytes);
        (digest, bytes)
    };
    let (old_image, new_image) = (Image::docker("young/old", 2), Image::docker("young/new", 1));
    let (old, old_bytes) = push(&old_image, "old");
    let (_, new_bytes) = push(&new_image, "keep");
    http::upload_blob(reg.url(), repo, &layer_blob("young/orphan").bytes);
    // Object stores cannot back-date objects: what was pushed before the
    // pause is older than --min-age, what follows is younger
    std::thread::sleep(std::time::Duration::from_secs(12));
    http::put_manifest(
        reg.url(),
        repo,
        "latest",
        old_image.media_type(),
        &old_bytes,
    );
    http::put_manifest(
        reg.url(),
        repo,
        "latest",
        new_image.media_type(),
        &new_bytes,
    );
    http::delete_manifest(reg.url(), repo, &old);
    drop(reg);

    let url = emulator.url(&root);
    let mut args: Vec<String> = emulator.gc_args();
    args.extend(["--min-age", "9s"].map(String::from));
    let out = tempfile::tempdir().unwrap();
    for (field, mode) in [("gc", None), ("gc_untagged", Some("--delete-untagged"))] {
        let report = out.path().join(format!("{field}.json"));
        let report_s = report.display().to_string();
        let mut a: Vec<&str> = vec!["gc", "--dry-run", "--report", &report_s];
        a.extend(mode);
        a.extend(args.iter().map(String::as_str));
        a.push(&url);
        let gc_out = run(&a);
        assert_eq!(
            gc_out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&gc_out.stderr)
        );
        let mut a: Vec<&str> = vec!["du", "--format", "json"];
        a.extend(args.iter().map(String::as_str));
        a.push(&url);
        let (_, usage, _) = run_json(&a);
        let r = collector::read_report(&report);
        assert!(
            r["recheck"]["withdrawn"].as_u64() > Some(0),
            "the re-check withdraws what the recent links name: {r}"
        );
        let planned = |reason: &str| r["planned"][reason]["bytes"].as_u64().unwrap_or(0);
        let gc_plans = planned("unreferenced-blob") + planned("stale-upload");
        assert_eq!(
            usage["totals"][field]["bytes"].as_u64(),
            Some(gc_plans),
            "{mode:?}: du {usage}\ngc --dry-run {r}"
        );
    }
}
