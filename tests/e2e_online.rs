//! Online collection: the real registry keeps serving pushes while registry-gc
//! collects with its defaults. The pushes land after the listing (they are made
//! from inside the mark phase's first read, so the timing is exact, not luck):
//! a layer that is garbage at mark time re-pushed the way clients do it (HEAD,
//! then only the manifest), the same layer uploaded into a new repository, a
//! brand-new image and a tag moved onto an untagged manifest. Afterwards every
//! image pushed, before or during the run, pulls back with sha256 intact.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use common::cloud::Emulator;
use common::http;
use common::images::{layer_blob, sha256_digest, Image, ImageKind, PushedImage};
use common::registry::{s3_driver_yaml, Registry};
use common::tree;
use registry_gc::gc::{self, GcOptions};
use registry_gc::guard::GuardOptions;
use registry_gc::progress::Progress;
use registry_gc::report::Report;
use registry_gc::storage::open::open_storage;
use registry_gc::storage::wrapper::StorageWrapper;
use registry_gc::storage::{DirListing, ObjectMeta, Storage, StorageError};

type Hook = Box<dyn FnOnce() + Send>;

/// A storage that runs `hook` (on a blocking thread) at a chosen moment of a
/// collection.
#[derive(Debug)]
struct WritesDuringRun {
    inner: Box<dyn Storage>,
    hook: HookSlot,
    when: When,
    /// Whether anything was stat'ed yet (a filesystem's candidates are, after
    /// the mark phase).
    stated: AtomicBool,
}

impl WritesDuringRun {
    fn new(inner: Box<dyn Storage>, hook: Hook, when: When) -> Self {
        WritesDuringRun {
            inner,
            hook: HookSlot(Mutex::new(Some(hook))),
            when,
            stated: AtomicBool::new(false),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum When {
    /// Before the first read: the listing is complete, nothing is planned yet.
    FirstRead,
    /// Before the first delete of blob data: planned, re-checked, sweeping.
    FirstBlobDelete,
    /// Before the re-check's listing, on a filesystem: the plan's candidates
    /// stat'ed, the plan made, nothing re-checked yet.
    ReCheck,
    /// Before the first delete batch holding a key that contains this text.
    FirstDeleteOf(&'static str),
}

impl WritesDuringRun {
    async fn fire(&self, now: When) {
        if now != self.when {
            return;
        }
        let hook = self.hook.0.lock().unwrap().take();
        if let Some(hook) = hook {
            tokio::task::spawn_blocking(hook)
                .await
                .expect("the pushes made during the run failed");
        }
    }
}

struct HookSlot(Mutex<Option<Hook>>);

impl std::fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookSlot")
    }
}

#[async_trait]
impl StorageWrapper for WritesDuringRun {
    fn inner(&self) -> &dyn Storage {
        self.inner.as_ref()
    }
    async fn get(&self, key: &str, limit: u64) -> Result<Bytes, StorageError> {
        self.fire(When::FirstRead).await;
        self.inner.get(key, limit).await
    }
    async fn delete_batch(&self, keys: &[String]) -> Vec<Result<(), StorageError>> {
        if keys
            .iter()
            .any(|k| k.starts_with("docker/registry/v2/blobs/"))
        {
            self.fire(When::FirstBlobDelete).await;
        }
        if let When::FirstDeleteOf(text) = self.when {
            if keys.iter().any(|k| k.contains(text)) {
                self.fire(self.when).await;
            }
        }
        self.inner.delete_batch(keys).await
    }
    async fn stat_batch(&self, keys: &[String]) -> Vec<Result<ObjectMeta, StorageError>> {
        self.stated.store(true, Ordering::SeqCst);
        self.inner.stat_batch(keys).await
    }
    // the re-check on a filesystem starts by listing `repositories/`
    async fn list_dir(&self, prefix: &str) -> Result<DirListing, StorageError> {
        if self.stated.load(Ordering::SeqCst) {
            self.fire(When::ReCheck).await;
        }
        self.inner.list_dir(prefix).await
    }
}

/// Pushes like a client: a blob is uploaded only when HEAD says the repository
/// does not have it; then the manifest.
fn push_like_client(base: &str, repo: &str, image: &Image, tag: &str) -> PushedImage {
    for b in image.blobs() {
        if !http::blob_exists(base, repo, &b.digest) {
            http::upload_blob(base, repo, &b.bytes);
        }
    }
    let bytes = image.manifest_bytes();
    let digest = http::put_manifest(base, repo, tag, image.media_type(), &bytes);
    PushedImage {
        repo: repo.into(),
        digest,
        media_type: image.media_type().into(),
        bytes,
        blobs: image.blob_digests(),
        children: vec![],
        subject: None,
        artifact_type: None,
        tag: Some(tag.into()),
    }
}

/// What the registry held before the run, and what the pushes during it add.
struct Online {
    /// Pushed, then deleted through the API before the run: garbage at mark time.
    garbage: Image,
    /// Another such image, whose layer only a manifest put by digest during the
    /// run names again.
    garbage_by_digest: Image,
    /// An orphan layer nothing ever references again: the run must delete it.
    orphan: String,
    /// An orphan layer uploaded again into its repository during the run
    /// (its layer link rewritten, no manifest yet): a push in flight, it stays.
    relinked: String,
    /// `app:moving` points at this before the run (kept in default mode)...
    moving_from: PushedImage,
    /// ...and at this untagged manifest after the move.
    moving_to: PushedImage,
}

fn seed(base: &str) -> Online {
    // tagged before the run; must survive
    push_like_client(base, "base", &Image::docker("online-kept", 2), "v1");
    let garbage = Image::docker("online-garbage", 2);
    let g = push_like_client(base, "app", &garbage, "old");
    http::delete_manifest(base, "app", &g.digest);
    let garbage_by_digest = Image::docker("online-garbage-by-digest", 1);
    let g = push_like_client(base, "app", &garbage_by_digest, "old-2");
    http::delete_manifest(base, "app", &g.digest);
    let orphan = http::upload_blob(base, "app", &layer_blob("online-orphan").bytes);
    let relinked = http::upload_blob(base, "app", &layer_blob("online-relinked").bytes);
    let moving_from = push_like_client(base, "app", &Image::docker("online-from", 1), "moving");
    let to = Image::docker("online-to", 1);
    for b in to.blobs() {
        http::upload_blob(base, "app", &b.bytes);
    }
    let bytes = to.manifest_bytes();
    let digest = http::put_manifest(base, "app", &sha256_digest(&bytes), to.media_type(), &bytes);
    let moving_to = PushedImage {
        repo: "app".into(),
        digest,
        media_type: to.media_type().into(),
        bytes,
        blobs: to.blob_digests(),
        children: vec![],
        subject: None,
        artifact_type: None,
        tag: None,
    };
    Online {
        garbage,
        garbage_by_digest,
        orphan,
        relinked,
        moving_from,
        moving_to,
    }
}

/// The writes made while registry-gc is between its listing and its plan.
/// Returns the references that must pull afterwards.
fn pushes_during_the_run(
    base: &str,
    garbage: &Image,
    garbage_by_digest: &Image,
    moving_to: &PushedImage,
) -> Vec<(String, String)> {
    // The garbage image again: its layers are still linked in `app`, so a
    // client uploads nothing and only puts the manifest.
    let again = push_like_client(base, "app", garbage, "again");
    // One of its layers into a repository that never had it: uploaded again,
    // which leaves the (old) blob data as it was and links it.
    let fresh = Image::from_layers(
        ImageKind::Docker,
        "online-fresh",
        vec![garbage.layers[0].clone(), layer_blob("online-new")],
    );
    push_like_client(base, "fresh", &fresh, "v1");
    // The tag moved onto the untagged manifest.
    http::put_manifest(
        base,
        "app",
        "moving",
        &moving_to.media_type,
        &moving_to.bytes,
    );
    // A garbage layer uploaded again (a client that does not ask first): the
    // registry rewrites its layer link, which the plan would delete; the
    // manifest naming it is not put yet.
    http::upload_blob(base, "app", &layer_blob("online-relinked").bytes);
    // A manifest put by digest only (as a multi-arch child is, before its
    // index) naming a garbage layer: nothing but its new revision link says so.
    let child = Image::from_layers(
        ImageKind::Docker,
        "online-child",
        vec![
            garbage_by_digest.layers[0].clone(),
            layer_blob("online-child"),
        ],
    );
    for b in child.blobs() {
        if !http::blob_exists(base, "app", &b.digest) {
            http::upload_blob(base, "app", &b.bytes);
        }
    }
    let child_bytes = child.manifest_bytes();
    let child_digest = http::put_manifest(
        base,
        "app",
        &sha256_digest(&child_bytes),
        child.media_type(),
        &child_bytes,
    );
    vec![
        ("app".into(), child_digest),
        ("app".into(), "again".into()),
        ("app".into(), again.digest),
        ("fresh".into(), "v1".into()),
        ("app".into(), "moving".into()),
        ("app".into(), moving_to.digest.clone()),
    ]
}

fn options(delete_untagged: bool, min_age: Duration) -> GcOptions {
    GcOptions {
        dry_run: false,
        delete_untagged,
        min_age_ms: min_age.as_millis() as i64,
        upload_max_age_ms: 7 * 24 * 3_600_000,
        delete_empty_repositories: false,
        concurrency: 16,
        max_manifest_bytes: 64 << 20,
        cache_dir: None,
        // these small registries are mostly garbage
        guard: GuardOptions {
            force: true,
            ..GuardOptions::default()
        },
        quarantine: false,
        offline: false,
    }
}

/// A collection over `storage` with `hook`'s writes made `when` it says.
fn collect_with_writes(
    storage: Box<dyn Storage>,
    hook: Hook,
    when: When,
    opts: GcOptions,
) -> Report {
    let storage = Box::new(WritesDuringRun::new(storage, hook, when));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(gc::run(storage, opts, &Progress::new(false), None))
        .expect("collection runs")
}

/// A registry on disk seeded for these tests, everything in it two hours old:
/// the default --min-age 1h fence lets the collector work, and the pushes
/// during the run are young.
fn seeded_on_disk() -> (tempfile::TempDir, Registry, Online) {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path());
    let o = seed(reg.url());
    tree::age_tree(dir.path(), Duration::from_secs(2 * 3600));
    (dir, reg, o)
}

fn on_disk(dir: &Path) -> Box<dyn Storage> {
    open_storage(&dir.display().to_string(), &Default::default()).unwrap()
}

fn collect_while_pushing(
    storage: Box<dyn Storage>,
    base: &str,
    o: &Online,
    opts: GcOptions,
) -> (Report, Vec<(String, String)>) {
    let pushed = Arc::new(Mutex::new(Vec::new()));
    let (base_s, garbage, by_digest, moving_to, sink) = (
        base.to_string(),
        o.garbage.clone(),
        o.garbage_by_digest.clone(),
        o.moving_to.clone(),
        pushed.clone(),
    );
    let hook: Hook = Box::new(move || {
        *sink.lock().unwrap() = pushes_during_the_run(&base_s, &garbage, &by_digest, &moving_to)
    });
    let report = collect_with_writes(storage, hook, When::FirstRead, opts);
    let pushed = pushed.lock().unwrap().clone();
    assert!(!pushed.is_empty(), "the pushes ran during the mark phase");
    (report, pushed)
}

fn assert_everything_pulls(
    base: &str,
    o: &Online,
    pushed: &[(String, String)],
    delete_untagged: bool,
) {
    let mut refs: Vec<(String, String)> = vec![("base".into(), "v1".into())];
    if !delete_untagged {
        // untagged by the move: collected under --delete-untagged, kept otherwise
        refs.push(("app".into(), o.moving_from.digest.clone()));
    }
    refs.extend(pushed.iter().cloned());
    for (repo, reference) in refs {
        http::pull_verify(base, &repo, &reference)
            .unwrap_or_else(|e| panic!("{repo}:{reference} after an online collection: {e}"));
    }
    assert!(
        !http::blob_exists(base, "app", &o.orphan),
        "the orphan layer is garbage and goes"
    );
    assert!(
        http::blob_exists(base, "app", &o.relinked),
        "a layer uploaded again during the run was deleted"
    );
}

fn assert_rescued(report: &Report) {
    assert!(report.recheck.recent_keys > 0, "{report:?}");
    // the re-pushed garbage image: its manifest, config and two layers
    assert!(
        report.recheck.withdrawn >= 4,
        "withdrawn {}: {}",
        report.recheck.withdrawn,
        report.summary()
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
}

#[test]
fn pushes_during_a_collection_on_disk_survive_in_both_modes() {
    for delete_untagged in [false, true] {
        let (dir, reg, o) = seeded_on_disk();
        let (report, pushed) = collect_while_pushing(
            on_disk(dir.path()),
            reg.url(),
            &o,
            options(delete_untagged, Duration::from_secs(3600)),
        );
        assert_rescued(&report);
        assert!(
            report.deleted_keys > 0,
            "the run collected the real garbage: {}",
            report.summary()
        );
        assert_everything_pulls(reg.url(), &o, &pushed, delete_untagged);
        check_second_run_is_quiet(dir.path(), delete_untagged);
    }
}

/// A garbage layer uploaded again between the plan and the re-check: the
/// registry rewrites its layer link in place and no manifest names it yet.
/// The re-check names layer links without a stat but for those the plan
/// would delete and those it did not know, and so finds this one young and
/// keeps the blob; and another layer of garbage linked into a new repository.
#[test]
fn a_layer_uploaded_again_just_before_the_recheck_stays() {
    let (dir, reg, o) = seeded_on_disk();
    let base = reg.url().to_string();
    // and a layer of the deleted image into a repository that never had it
    let moved = o.garbage.layers[1].clone();
    let moved_digest = moved.digest.clone();
    let hook: Hook = Box::new(move || {
        http::upload_blob(&base, "app", &layer_blob("online-relinked").bytes);
        http::upload_blob(&base, "elsewhere", &moved.bytes);
    });
    let report = collect_with_writes(
        on_disk(dir.path()),
        hook,
        When::ReCheck,
        options(false, Duration::from_secs(3600)),
    );
    // the blob and its layer link
    assert!(
        report.recheck.recent_keys >= 1 && report.recheck.withdrawn >= 2,
        "{:?}: {}",
        report.recheck,
        report.summary()
    );
    assert!(
        http::blob_exists(reg.url(), "app", &o.relinked),
        "a layer uploaded again before the re-check was deleted"
    );
    assert!(
        http::blob_exists(reg.url(), "elsewhere", &moved_digest),
        "a layer linked into a new repository before the re-check was deleted"
    );
    assert!(
        !http::blob_exists(reg.url(), "app", &o.orphan),
        "the orphan layer is garbage and goes"
    );
    http::pull_verify(reg.url(), "base", "v1").unwrap();
}

/// A second collection (no pushes) keeps every image: what the first run
/// withdrew was needed, not merely postponed.
fn check_second_run_is_quiet(root: &Path, delete_untagged: bool) {
    tree::age_tree(root, Duration::from_secs(2 * 3600));
    let reg = Registry::start(root);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt
        .block_on(gc::run(
            on_disk(root),
            options(delete_untagged, Duration::from_secs(3600)),
            &Progress::new(false),
            None,
        ))
        .unwrap();
    assert!(report.failures.is_empty());
    for (repo, reference) in [
        ("app", "again"),
        ("fresh", "v1"),
        ("app", "moving"),
        ("base", "v1"),
    ] {
        http::pull_verify(reg.url(), repo, reference)
            .unwrap_or_else(|e| panic!("{repo}:{reference} after a second run: {e}"));
    }
}

#[test]
fn pushes_during_a_collection_on_s3_survive() {
    let emulator = Emulator::Moto;
    emulator.require();
    let root = Emulator::unique_root("online");
    let reg = Registry::start_with_driver(&s3_driver_yaml(
        &emulator.endpoint(),
        common::cloud::BUCKET,
        &root,
    ));
    let o = seed(reg.url());
    // Object stores cannot back-date objects: the fence is the start of the
    // run (--min-age 0s), so what was pushed before is old and what is pushed
    // during the run is young.
    std::thread::sleep(Duration::from_millis(2100));
    let storage = open_storage(&emulator.url(&root), &emulator.backend_options()).unwrap();
    let (report, pushed) =
        collect_while_pushing(storage, reg.url(), &o, options(false, Duration::ZERO));
    assert_rescued(&report);
    assert_everything_pulls(reg.url(), &o, &pushed, false);
}

/// A push during the sweep that uploads a garbage layer into a repository
/// that never linked it (a rebuilt image: new config and manifest, one old
/// layer) writes the layer's link before its manifest; the sweep then deletes
/// the layer, and the look after the sweep must name the manifest, not take
/// the blob for an upload without one.
#[test]
fn a_rebuilt_image_pushed_during_the_sweep_is_named_by_its_manifest() {
    let (dir, reg, o) = seeded_on_disk();
    let base = reg.url().to_string();
    let old_layer = o.garbage.layers[0].clone();
    let rebuilt = Image::from_layers(
        ImageKind::Docker,
        "online-rebuilt",
        vec![old_layer.clone(), layer_blob("online-rebuilt-new")],
    );
    let pushed = Arc::new(Mutex::new(String::new()));
    let sink = pushed.clone();
    let image = rebuilt.clone();
    let hook: Hook = Box::new(move || {
        *sink.lock().unwrap() = push_like_client(&base, "rebuilt", &image, "v1").digest
    });
    let report = collect_with_writes(
        on_disk(dir.path()),
        hook,
        When::FirstBlobDelete,
        options(false, Duration::from_secs(3600)),
    );
    let digest = pushed.lock().unwrap().clone();
    assert!(!digest.is_empty(), "the push ran during the sweep");
    let named: Vec<(String, String, String)> = report
        .broken_by_concurrent_pushes
        .iter()
        .map(|b| (b.repository.clone(), b.manifest.clone(), b.blob.clone()))
        .collect();
    assert!(
        named.contains(&(
            "rebuilt".to_string(),
            digest.clone(),
            old_layer.digest.clone()
        )),
        "{named:?}\n{}",
        report.summary()
    );
    assert!(
        http::pull_verify(reg.url(), "rebuilt", "v1").is_err(),
        "the old layer was deleted under the new image"
    );
    push_like_client(reg.url(), "rebuilt", &rebuilt, "v1");
    http::pull_verify(reg.url(), "rebuilt", "v1").unwrap();
}

/// The window the re-check leaves, closed by looking again after the sweep: a
/// manifest put while the sweep runs, naming garbage blobs still there (the
/// registry accepts it), is named in the report so that it can be pushed again.
#[test]
fn a_push_during_the_sweep_that_the_sweep_breaks_is_named() {
    let (dir, reg, o) = seeded_on_disk();
    let (base, garbage) = (reg.url().to_string(), o.garbage.clone());
    let repushed = Arc::new(Mutex::new(String::new()));
    let sink = repushed.clone();
    let hook: Hook = Box::new(move || {
        *sink.lock().unwrap() = push_like_client(&base, "app", &garbage, "during-sweep").digest
    });
    let report = collect_with_writes(
        on_disk(dir.path()),
        hook,
        When::FirstBlobDelete,
        options(false, Duration::from_secs(3600)),
    );
    let digest = repushed.lock().unwrap().clone();
    assert!(!digest.is_empty(), "the push ran during the sweep");
    let named: std::collections::BTreeSet<(String, String)> = report
        .broken_by_concurrent_pushes
        .iter()
        .map(|b| (b.repository.clone(), b.manifest.clone()))
        .collect();
    assert_eq!(
        named,
        [("app".to_string(), digest.clone())].into(),
        "{}",
        report.summary()
    );
    let blobs: std::collections::BTreeSet<String> = report
        .broken_by_concurrent_pushes
        .iter()
        .map(|b| b.blob.clone())
        .collect();
    let mut needed: std::collections::BTreeSet<String> =
        o.garbage.blob_digests().into_iter().collect();
    needed.insert(digest.clone());
    // its manifest blob at least (once deleted, what it named cannot be read)
    assert!(
        blobs.contains(&digest) && blobs.is_subset(&needed),
        "{blobs:?}"
    );
    assert!(report.summary().contains("push the image again"));
    // and it really is broken: what the report says is what a pull finds
    assert!(http::pull_verify(reg.url(), "app", "during-sweep").is_err());
    // pushing it again (as the report says) repairs it
    push_like_client(reg.url(), "app", &o.garbage, "during-sweep");
    http::pull_verify(reg.url(), "app", "during-sweep").unwrap();
}

/// Under `--delete-untagged` a kept image keeps its referrers (signatures,
/// SBOMs: manifests naming it as their `subject`), and so must an image that
/// a tag put during the run makes kept: the re-check follows referrers as
/// the plan does. Two untagged images, each with an untagged signature, both
/// garbage when the run looks: one is tagged during the run, and the other,
/// whose signature was pushed before it (OCI allows a referrer first), is
/// pushed with a tag during the run. Both signatures still pull afterwards;
/// a third signed image left untagged goes, signature and all.
#[test]
fn an_image_tagged_during_the_run_keeps_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path());
    let base = reg.url().to_string();
    let by_digest = |image: &Image| push_like_client(&base, "signed", image, &image.digest());
    let signed = by_digest(&Image::oci("referrers-tagged-later", 1));
    let signature =
        by_digest(&Image::cosign_signature("signed", &signed.digest).with_subject(&signed));
    let arrives = Image::oci("referrers-pushed-later", 1);
    let arrives_digest = arrives.digest();
    let subject = common::images::Descriptor::new(
        arrives.media_type(),
        &arrives_digest,
        arrives.manifest_bytes().len() as u64,
    );
    let early = by_digest(
        &Image::cosign_signature("signed", &arrives_digest).with_subject_descriptor(subject),
    );
    let dropped = by_digest(&Image::oci("referrers-left-untagged", 1));
    let dropped_signature =
        by_digest(&Image::cosign_signature("signed", &dropped.digest).with_subject(&dropped));
    push_like_client(&base, "base", &Image::docker("referrers-kept", 1), "v1");
    tree::age_tree(dir.path(), Duration::from_secs(2 * 3600));

    let (hook_base, hook_signed) = (base.clone(), signed.clone());
    let hook: Hook = Box::new(move || {
        hook_signed.put_again(&hook_base, "signed", "v1");
        push_like_client(&hook_base, "signed", &arrives, "v2");
    });
    let report = collect_with_writes(
        on_disk(dir.path()),
        hook,
        When::FirstRead,
        options(true, Duration::from_secs(3600)),
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    for reference in ["v1", "v2", signature.digest.as_str(), early.digest.as_str()] {
        http::pull_verify(reg.url(), "signed", reference).unwrap_or_else(|e| {
            panic!(
                "signed@{reference} after the run: {e}\n{}",
                report.summary()
            )
        });
    }
    http::pull_verify(reg.url(), "base", "v1").unwrap();
    for gone in [&dropped, &dropped_signature] {
        assert!(
            http::pull_verify(reg.url(), "signed", &gone.digest).is_err(),
            "{} is garbage and goes",
            gone.digest
        );
    }
}

/// Tagged images in `base`, so that what the tests below plan stays under
/// the default guard's share.
fn kept_images(base: &str) {
    for i in 0..4 {
        push_like_client(
            base,
            "base",
            &Image::docker(&format!("online-kept-{i}"), 2),
            &format!("v{i}"),
        );
    }
}

/// A registry on disk with kept images in `base` and, in `app`, an image
/// (`Image::docker(seed, 2)`) tagged with each of `tags` whose manifest's
/// blob is lost: every tag dangling. Everything two hours old.
fn dangling_on_disk(
    seed: &str,
    tags: &[&str],
) -> (tempfile::TempDir, Registry, String, PushedImage) {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path());
    let base = reg.url().to_string();
    kept_images(&base);
    let image = Image::docker(seed, 2);
    let pushed = push_like_client(&base, "app", &image, tags[0]);
    for tag in &tags[1..] {
        http::put_manifest(&base, "app", tag, image.media_type(), &pushed.bytes);
    }
    let blob = tree::key_path(dir.path(), &tree::blob_key_for_digest(&pushed.digest));
    std::fs::remove_dir_all(blob.parent().unwrap()).unwrap();
    for tag in tags {
        assert!(
            http::get_manifest(&base, "app", tag).is_err(),
            "{tag} dangling before the run"
        );
    }
    tree::age_tree(dir.path(), Duration::from_secs(2 * 3600));
    (dir, reg, base, pushed)
}

/// The names the report gives of what the sweep broke: (repository, manifest
/// or tag, deleted key).
fn named_broken(report: &Report) -> std::collections::BTreeSet<(String, String, String)> {
    report
        .broken_by_concurrent_pushes
        .iter()
        .map(|b| {
            let what = b.tag.clone().unwrap_or_else(|| b.manifest.clone());
            (b.repository.clone(), what, b.deleted_key.clone())
        })
        .collect()
}

/// Two tags name a manifest whose blob is lost: both are dangling when the
/// run looks. During the run a CI job pushes that manifest again to one of
/// them; the other serves it again too, and the re-check must keep it (it
/// was not written, but what it names was).
#[test]
fn a_dangling_tag_whose_manifest_is_pushed_again_during_the_run_stays() {
    let (dir, _reg, base, pushed) = dangling_on_disk("online-dangling", &["latest", "v1.2"]);

    let (hook_base, hook_pushed) = (base.clone(), pushed.clone());
    let hook: Hook = Box::new(move || {
        hook_pushed.put_again(&hook_base, "app", "latest");
        http::pull_verify(&hook_base, "app", "v1.2")
            .expect("v1.2 serves the manifest pushed again");
    });
    let report = collect_with_writes(
        on_disk(dir.path()),
        hook,
        When::FirstRead,
        options(false, Duration::from_secs(3600)),
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    for reference in ["latest", "v1.2", pushed.digest.as_str()] {
        http::pull_verify(&base, "app", reference)
            .unwrap_or_else(|e| panic!("app:{reference} after the run: {e}\n{}", report.summary()));
    }
}

/// The window after the re-check, for links: under `--delete-untagged` a
/// manifest pushed by digest only into `a` (kept in `b`, where it is tagged)
/// loses its revision link in `a`. A client tags it in `a` after the
/// re-check and before that delete: the tag is broken, and the run must say
/// so. Pushing it again repairs it.
#[test]
fn a_tag_put_during_the_sweep_onto_a_deleted_revision_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path());
    let base = reg.url().to_string();
    kept_images(&base);
    let image = Image::docker("online-shared", 2);
    let tagged = push_like_client(&base, "b", &image, "v1");
    push_like_client(&base, "a", &image, &tagged.digest);
    tree::age_tree(dir.path(), Duration::from_secs(2 * 3600));

    let (hook_base, hook_tagged) = (base.clone(), tagged.clone());
    let hook: Hook = Box::new(move || {
        hook_tagged.put_again(&hook_base, "a", "v1");
    });
    let report = collect_with_writes(
        on_disk(dir.path()),
        hook,
        When::FirstDeleteOf("/_manifests/revisions/"),
        options(true, Duration::from_secs(3600)),
    );
    assert!(
        http::pull_verify(&base, "a", "v1").is_err(),
        "the tag was broken by the sweep"
    );
    assert_eq!(
        named_broken(&report),
        [(
            "a".to_string(),
            tagged.digest.clone(),
            format!(
                "docker/registry/v2/{}",
                tree::revision_link_key("a", &tagged.digest)
            )
        )]
        .into(),
        "{}",
        report.summary()
    );
    assert!(report.summary().contains("push the image again"));
    http::pull_verify(&base, "b", "v1").unwrap();
    push_like_client(&base, "a", &image, "v1");
    http::pull_verify(&base, "a", "v1").unwrap();
}

/// The same window for a layer link: `app`'s link to a layer whose blob was
/// lost is dangling, planned for deletion. During the sweep a client pushes
/// an image with that layer (HEAD says it is missing, so it uploads it,
/// which writes the blob and rewrites the link), then the sweep deletes the
/// link: the image is broken and must be named.
#[test]
fn a_layer_uploaded_again_during_the_sweep_that_loses_its_link_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path());
    let base = reg.url().to_string();
    kept_images(&base);
    let layer = layer_blob("online-relinked-in-sweep");
    http::upload_blob(&base, "app", &layer.bytes);
    let data = tree::key_path(dir.path(), &tree::blob_key_for_digest(&layer.digest));
    std::fs::remove_dir_all(data.parent().unwrap()).unwrap();
    tree::age_tree(dir.path(), Duration::from_secs(2 * 3600));
    // no blob descriptor cache, but restart anyway: nothing remembered
    drop(reg);
    let reg = Registry::start(dir.path());
    let base = reg.url().to_string();

    let image = Image::from_layers(
        ImageKind::Docker,
        "online-relinked-image",
        vec![layer.clone(), layer_blob("online-relinked-other")],
    );
    let pushed = Arc::new(Mutex::new(String::new()));
    let (hook_base, hook_image, sink) = (base.clone(), image.clone(), pushed.clone());
    let hook: Hook = Box::new(move || {
        let p = push_like_client(&hook_base, "app", &hook_image, "new");
        http::pull_verify(&hook_base, "app", "new").expect("pulls right after the push");
        *sink.lock().unwrap() = p.digest;
    });
    let report = collect_with_writes(
        on_disk(dir.path()),
        hook,
        When::FirstDeleteOf("/_layers/"),
        options(false, Duration::from_secs(3600)),
    );
    let digest = pushed.lock().unwrap().clone();
    assert!(!digest.is_empty(), "the push ran during the sweep");
    assert!(
        http::pull_verify(&base, "app", "new").is_err(),
        "the sweep broke it"
    );
    assert_eq!(
        named_broken(&report),
        [(
            "app".to_string(),
            digest,
            format!(
                "docker/registry/v2/{}",
                tree::layer_link_key("app", &layer.digest)
            )
        )]
        .into(),
        "{}",
        report.summary()
    );
}

/// A delete that fails stops the sweep after its phase: what the later
/// phases would have deleted is still there, so the report counts only what
/// went, the look after the sweep names nothing that still pulls, and empty
/// repositories are not reported removed.
#[test]
fn a_sweep_stopped_early_reports_what_it_deleted_and_breaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path());
    let base = reg.url().to_string();
    kept_images(&base);
    let garbage = Image::docker("online-stopped", 2);
    let g = push_like_client(&base, "app", &garbage, &garbage.digest());
    std::fs::create_dir_all(
        tree::key_path(dir.path(), &tree::repo_key("emptyrepo")).join("_layers"),
    )
    .unwrap();
    tree::age_tree(dir.path(), Duration::from_secs(2 * 3600));
    let before = tree::keys(dir.path());

    let (hook_base, hook_g) = (base.clone(), g.clone());
    let hook: Hook = Box::new(move || {
        hook_g.put_again(&hook_base, "app", "during");
    });
    let storage = Box::new(FailingDeletes {
        inner: on_disk(dir.path()),
        text: "/_manifests/revisions/",
    });
    let opts = GcOptions {
        delete_empty_repositories: true,
        ..options(true, Duration::from_secs(3600))
    };
    let report = collect_with_writes(
        storage,
        hook,
        When::FirstDeleteOf("/_manifests/revisions/"),
        opts,
    );
    let deleted: Vec<String> = before
        .difference(&tree::keys(dir.path()))
        .cloned()
        .collect();
    assert!(
        report.sweep_stopped_early && !report.failures.is_empty(),
        "{}",
        report.summary()
    );
    http::pull_verify(&base, "app", "during").expect("nothing it needs was deleted");
    assert!(
        report.broken_by_concurrent_pushes.is_empty(),
        "{:?}",
        report.broken_by_concurrent_pushes
    );
    let counted: u64 = report.planned.values().map(|c| c.count).sum();
    assert_eq!(
        counted,
        deleted.len() as u64,
        "counted {counted}, deleted {deleted:?}\n{}",
        report.summary()
    );
    assert_eq!(report.deleted_keys, deleted.len() as u64);
    assert!(
        !report.summary().contains("unreferenced blobs"),
        "no blob was deleted:\n{}",
        report.summary()
    );
    assert!(
        report.empty_repositories.contains(&"emptyrepo".to_string())
            && !report.empty_repositories_removed,
        "{}",
        report.summary()
    );
    assert!(tree::key_path(dir.path(), &tree::repo_key("emptyrepo")).exists());
}

/// Deletes of keys containing `text` fail (as a 503 would); the rest go.
#[derive(Debug)]
struct FailingDeletes {
    inner: Box<dyn Storage>,
    text: &'static str,
}

#[async_trait]
impl StorageWrapper for FailingDeletes {
    fn inner(&self) -> &dyn Storage {
        self.inner.as_ref()
    }
    async fn delete_batch(&self, keys: &[String]) -> Vec<Result<(), StorageError>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if k.contains(self.text) {
                out.push(Err(StorageError::Remote {
                    key: k.clone(),
                    reason: "503 SlowDown (injected)".into(),
                }));
            } else {
                out.extend(self.inner.delete_batch(std::slice::from_ref(k)).await);
            }
        }
        out
    }
}

/// Fails every stat of the keys `failing` picks once the sweep has deleted
/// anything, as a store answering 503 would: the look after the sweep, or
/// the check of the dangling tags just before their delete.
#[derive(Debug)]
struct StatsFailingAfterFirstDelete {
    inner: Box<dyn Storage>,
    failing: fn(&str) -> bool,
    swept: AtomicBool,
}

impl StatsFailingAfterFirstDelete {
    fn new(inner: Box<dyn Storage>, failing: fn(&str) -> bool) -> Box<Self> {
        Box::new(StatsFailingAfterFirstDelete {
            inner,
            failing,
            swept: AtomicBool::new(false),
        })
    }

    /// Blob data: the look after the sweep.
    fn of_blobs(inner: Box<dyn Storage>) -> Box<Self> {
        Self::new(inner, |k| k.starts_with("docker/registry/v2/blobs/"))
    }
}

#[async_trait]
impl StorageWrapper for StatsFailingAfterFirstDelete {
    fn inner(&self) -> &dyn Storage {
        self.inner.as_ref()
    }
    async fn delete_batch(&self, keys: &[String]) -> Vec<Result<(), StorageError>> {
        self.swept.store(true, Ordering::SeqCst);
        self.inner.delete_batch(keys).await
    }
    async fn stat_batch(&self, keys: &[String]) -> Vec<Result<ObjectMeta, StorageError>> {
        let results = self.inner.stat_batch(keys).await;
        if !self.swept.load(Ordering::SeqCst) {
            return results;
        }
        keys.iter()
            .zip(results)
            .map(|(k, r)| {
                if (self.failing)(k) {
                    Err(StorageError::Remote {
                        key: k.clone(),
                        reason: "503 Slow Down (injected)".into(),
                    })
                } else {
                    r
                }
            })
            .collect()
    }
}

/// The look after the sweep stats each key it names: one it cannot stat
/// is still named (an image broken and not named would exit 0).
#[test]
fn a_push_broken_by_the_sweep_is_named_when_its_key_cannot_be_stated() {
    let (dir, reg, o) = seeded_on_disk();
    let (base, garbage) = (reg.url().to_string(), o.garbage.clone());
    let repushed = Arc::new(Mutex::new(String::new()));
    let sink = repushed.clone();
    let hook: Hook = Box::new(move || {
        *sink.lock().unwrap() = push_like_client(&base, "app", &garbage, "during-sweep").digest
    });
    let storage = StatsFailingAfterFirstDelete::of_blobs(on_disk(dir.path()));
    let report = collect_with_writes(
        storage,
        hook,
        When::FirstBlobDelete,
        options(false, Duration::from_secs(3600)),
    );
    let digest = repushed.lock().unwrap().clone();
    assert!(!digest.is_empty(), "the push ran during the sweep");
    assert!(http::pull_verify(reg.url(), "app", "during-sweep").is_err());
    assert!(
        report
            .broken_by_concurrent_pushes
            .iter()
            .any(|b| b.repository == "app" && b.manifest == digest),
        "{}",
        report.summary()
    );
}

/// A dangling tag pushed again after the re-check: the push rewrites the
/// very links the sweep then deletes as dangling (the revision link, and the
/// layers' blobs, unreferenced when the run looked). The tag itself, swept
/// last, is seen moved and kept; the manifest it names now needs what the
/// sweep deleted: named, and a push again repairs it.
#[test]
fn a_dangling_tag_pushed_again_during_the_sweep_is_named() {
    let image = Image::docker("online-dangling-in-sweep", 2);
    let (dir, _reg, base, pushed) = dangling_on_disk("online-dangling-in-sweep", &["latest"]);

    let (hook_base, hook_pushed) = (base.clone(), pushed.clone());
    let hook: Hook = Box::new(move || {
        hook_pushed.put_again(&hook_base, "app", "latest");
        http::pull_verify(&hook_base, "app", "latest").expect("pulls right after the push");
    });
    let report = collect_with_writes(
        on_disk(dir.path()),
        hook,
        When::FirstDeleteOf("/_manifests/"),
        options(false, Duration::from_secs(3600)),
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(
        http::pull_verify(&base, "app", "latest").is_err(),
        "the sweep broke it"
    );
    let named = named_broken(&report);
    assert!(
        named.contains(&(
            "app".to_string(),
            pushed.digest.clone(),
            format!(
                "docker/registry/v2/{}",
                tree::revision_link_key("app", &pushed.digest)
            )
        )),
        "{named:?}\n{}",
        report.summary()
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.key == "app:latest" && w.message.contains("moved during the run")),
        "{:?}",
        report.warnings
    );
    // as the report says: pushing it again repairs it
    push_like_client(&base, "app", &image, "latest");
    http::pull_verify(&base, "app", "latest").unwrap();
}

/// A tag dangling before the run, nothing pushed during it, and a stat that
/// fails after the sweep: not named as broken by a push (which would send
/// an operator to push an image nobody pushed, and exit 4).
#[test]
fn a_dangling_tag_nobody_pushed_is_not_named_when_a_stat_fails() {
    let (dir, _reg, _base, _pushed) = dangling_on_disk("online-dangling-no-push", &["latest"]);
    let storage = StatsFailingAfterFirstDelete::of_blobs(on_disk(dir.path()));
    let report = collect_with_writes(
        storage,
        Box::new(|| {}),
        When::FirstDeleteOf("/_manifests/"),
        options(false, Duration::from_secs(3600)),
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(
        report.broken_by_concurrent_pushes.is_empty(),
        "named with no push: {:?}",
        named_broken(&report)
    );
}

/// A rollback during the sweep: `latest` dangles (its newest manifest's
/// blob is lost), and its history also names an older image, still stored.
/// The plan deletes the tag whole (`current/link` and every history entry).
/// After the re-check and before that delete, a client tags the older image
/// `latest` again: the registry rewrites the older image's revision link,
/// its history entry and `current/link`, the last two then deleted by the
/// sweep. Afterwards `latest` must pull, or it or the image it names must be
/// named (exit 4): README, "each tag whose `current/link` it deleted", "each
/// manifest written during the run that needs a key the sweep deleted".
fn rollback_during_the_sweep(delete_untagged: bool, when: When) {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path());
    let base = reg.url().to_string();
    kept_images(&base);
    let seed = format!("online-rollback-{delete_untagged}");
    let older = push_like_client(
        &base,
        "app",
        &Image::docker(&format!("{seed}-older"), 2),
        "latest",
    );
    let newer = push_like_client(
        &base,
        "app",
        &Image::docker(&format!("{seed}-newer"), 2),
        "latest",
    );
    let blob = tree::key_path(dir.path(), &tree::blob_key_for_digest(&newer.digest));
    std::fs::remove_dir_all(blob.parent().unwrap()).unwrap();
    assert!(
        http::get_manifest(&base, "app", "latest").is_err(),
        "latest dangles"
    );
    http::pull_verify(&base, "app", &older.digest).expect("the older image is intact");
    tree::age_tree(dir.path(), Duration::from_secs(2 * 3600));

    let (hook_base, hook_older) = (base.clone(), older.clone());
    let hook: Hook = Box::new(move || {
        hook_older.put_again(&hook_base, "app", "latest");
        http::pull_verify(&hook_base, "app", "latest").expect("pulls right after the rollback");
    });
    let report = collect_with_writes(
        on_disk(dir.path()),
        hook,
        when,
        options(delete_untagged, Duration::from_secs(3600)),
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let pulls = http::pull_verify(&base, "app", "latest");
    let named = named_broken(&report);
    assert!(
        pulls.is_ok()
            || named
                .iter()
                .any(|(repo, what, _)| repo == "app" && (what == "latest" || *what == older.digest)),
        "app:latest, tagged during the sweep, does not pull ({:?}) and is not named: {named:?}\n{}",
        pulls.err(),
        report.summary()
    );
}

/// Just before the tag's own delete (dangling tags go last).
#[test]
fn a_dangling_tag_rolled_back_during_the_sweep_pulls_or_is_named() {
    rollback_during_the_sweep(false, When::FirstDeleteOf("/_manifests/tags/"));
}

/// Under `--delete-untagged` the older image's revision link went in the
/// first phase; the rollback, just before its blobs go, writes it again and
/// moves the tag, which the sweep then sees and keeps: the image needs the
/// blobs the sweep deletes next, and is named. (At the tag's own delete, the
/// older image's blobs are gone and the registry refuses the rollback.)

#[test]
fn a_dangling_tag_rolled_back_during_the_sweep_pulls_or_is_named_under_delete_untagged() {
    rollback_during_the_sweep(true, When::FirstBlobDelete);
}

/// The look after the sweep that cannot be made (its listing fails: here a
/// symbolic link out of the root appears under `repositories/` during the
/// sweep) leaves the run unverified: the report says why, and the run has
/// something left to do (exit 4), not a success with a warning.
#[test]
fn a_look_after_the_sweep_that_fails_is_left_to_do() {
    let (dir, _reg, _o) = seeded_on_disk();
    let outside = tempfile::tempdir().unwrap();
    let (link, target) = (
        tree::v2_dir(dir.path()).join("repositories/elsewhere"),
        outside.path().to_path_buf(),
    );
    let hook: Hook = Box::new(move || std::os::unix::fs::symlink(&target, &link).unwrap());
    let report = collect_with_writes(
        on_disk(dir.path()),
        hook,
        When::FirstBlobDelete,
        options(true, Duration::from_secs(3600)),
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let why = report
        .check_after_sweep_error
        .clone()
        .unwrap_or_else(|| panic!("the look did not fail:\n{}", report.summary()));
    assert!(why.contains("repositories/elsewhere"), "{why}");
    let left = report.left_to_do();
    assert!(
        left.iter()
            .any(|l| l.contains("the look for pushes made during it failed")),
        "{left:?}"
    );
}

/// A dangling tag whose `current/link` cannot be stat'ed just before its
/// delete is kept, and reported as a failure (the run has something left to
/// do; the next run decides): deleting it unchecked could take a tag a push
/// just moved.
#[test]
fn a_dangling_tag_that_cannot_be_checked_before_its_delete_is_kept_and_reported() {
    let (dir, _reg, _base, _pushed) = dangling_on_disk("online-dangling-unchecked", &["latest"]);
    let storage =
        StatsFailingAfterFirstDelete::new(on_disk(dir.path()), |k| k.ends_with("/current/link"));
    let report = collect_with_writes(
        storage,
        Box::new(|| {}),
        When::FirstRead,
        options(false, Duration::from_secs(3600)),
    );
    let key = format!(
        "docker/registry/v2/{}",
        tree::tag_current_link_key("app", "latest")
    );
    assert_eq!(
        report
            .failures
            .iter()
            .map(|f| f.key.as_str())
            .collect::<Vec<_>>(),
        vec![key.as_str()],
        "{}",
        report.summary()
    );
    assert!(report.failures[0].error.contains("could not be checked"));
    assert!(tree::key_path(dir.path(), &tree::tag_current_link_key("app", "latest")).exists());
    assert!(!report.left_to_do().is_empty());
}
