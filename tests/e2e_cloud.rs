//! The end-to-end suite on every object store: the tree the real registry wrote is
//! copied key for key into each emulator, registry-gc collects it there, and the
//! keys left must be exactly the keys the same run leaves on the filesystem. On S3
//! the real registry is then pointed at the bucket (its s3 driver) and every
//! surviving image is pulled back through it with sha256 checks.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::cloud::{Emulator, BUCKET};
use common::collector::{self, gc, mode_flags, pushed, run};
use common::model::Mode;
use common::registry::{s3_driver_yaml, Registry};
use common::scenarios::{self, Scenario};
use common::tree;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Flags for a collection on a tree written moments ago (object stores cannot
/// back-date last-modified, so the fence is off here; fences are tested on disk).
fn flags(mode: Mode) -> Vec<String> {
    let mut f: Vec<String> = mode_flags(mode).into_iter().map(String::from).collect();
    // small and mostly garbage: past the guard's share
    f.extend(["--min-age", "0s", "--upload-max-age", "0s", "--force"].map(String::from));
    f
}

/// What the same collection leaves on the filesystem.
fn filesystem_result(sc: &Scenario, mode: Mode) -> BTreeSet<String> {
    let copy = tempfile::tempdir().unwrap();
    tree::copy_tree(&sc.root, copy.path());
    // as old as the bucket's copy is by the time it is collected
    tree::age_tree(copy.path(), std::time::Duration::from_secs(60));
    let f = flags(mode);
    gc(
        copy.path(),
        &f.iter().map(String::as_str).collect::<Vec<_>>(),
        0,
    );
    tree::keys(copy.path())
}

fn run_on(emulator: Emulator, root: &str, extra: &[String], report: &Path) -> std::process::Output {
    let url = emulator.url(root);
    let mut args = vec!["gc".to_string()];
    args.extend(emulator.gc_args());
    args.extend(extra.iter().cloned());
    args.extend(["--report".to_string(), report.display().to_string(), url]);
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: {args:?}\n{}\n{}",
        emulator.name(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Copies the scenario's tree key for key into a fresh root on `emulator`;
/// returns the root and its keys.
fn upload_fresh(
    rt: &tokio::runtime::Runtime,
    emulator: Emulator,
    sc: &Scenario,
    label: &str,
) -> (String, BTreeSet<String>) {
    let root = Emulator::unique_root(label);
    let n = rt.block_on(emulator.upload_tree(&sc.root, &root));
    let before = rt.block_on(emulator.keys(&root));
    assert_eq!(before.len(), n);
    assert_eq!(before, tree::keys(&sc.root), "the upload is key for key");
    (root, before)
}

/// Collects `root` in `mode` and checks that it holds exactly the keys the same
/// run leaves on the filesystem; returns the keys left.
fn collect_as_on_disk(
    rt: &tokio::runtime::Runtime,
    emulator: Emulator,
    sc: &Scenario,
    root: &str,
    mode: Mode,
    extra: &[&str],
    report: &Path,
) -> BTreeSet<String> {
    let expected = filesystem_result(sc, mode);
    let mut f = flags(mode);
    f.extend(extra.iter().map(|x| x.to_string()));
    let out = run_on(emulator, root, &f, report);
    let after = rt.block_on(emulator.keys(root));
    let missing: Vec<_> = expected.difference(&after).collect();
    let extra: Vec<_> = after.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} {mode:?}: differs from the filesystem run\nmissing in bucket: {missing:#?}\nleft only in bucket: {extra:#?}\n{}",
        emulator.name(),
        String::from_utf8_lossy(&out.stdout)
    );
    after
}

/// Collects the scenario's tree in `emulator` in both modes and compares with
/// the filesystem. Returns the root of the `--delete-untagged` run.
fn same_as_filesystem(emulator: Emulator, sc: &Scenario) -> String {
    same_as_filesystem_with(emulator, sc, &[]).0
}

/// As `same_as_filesystem`, each run with `extra` flags; also returns what the
/// dry runs wrote to stderr.
fn same_as_filesystem_with(emulator: Emulator, sc: &Scenario, extra: &[&str]) -> (String, String) {
    emulator.require();
    let mut logs = String::new();
    let rt = runtime();
    let mut last_root = String::new();
    for mode in Mode::ALL {
        let (root, before) = upload_fresh(&rt, emulator, sc, &format!("e2e-{}", emulator.name()));

        // a dry run writes nothing
        let report = tempfile::NamedTempFile::new().unwrap();
        let mut dry = flags(mode);
        dry.extend(extra.iter().map(|f| f.to_string()));
        dry.push("--dry-run".into());
        let out = run_on(emulator, &root, &dry, report.path());
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            rt.block_on(emulator.keys(&root)),
            before,
            "{}: dry run changed the bucket",
            emulator.name()
        );
        let planned = collector::report_deletions(&collector::read_report(report.path()));

        let after = collect_as_on_disk(&rt, emulator, sc, &root, mode, extra, report.path());
        let deleted: BTreeSet<String> = before.difference(&after).cloned().collect();
        assert_eq!(
            planned,
            deleted,
            "{} {mode:?}: the dry run's plan is what the run did",
            emulator.name()
        );
        let r = collector::read_report(report.path());
        assert!(
            r["requests"]["list"].as_u64().unwrap() > 0
                && r["requests"]["delete"].as_u64().unwrap() > 0,
            "{r}"
        );
        last_root = root;
    }
    (last_root, logs)
}

#[test]
fn s3_moto_matches_the_filesystem_and_the_registry_pulls_every_survivor() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let root = same_as_filesystem(Emulator::Moto, &sc);
    let reg =
        Registry::start_with_driver(&s3_driver_yaml(&Emulator::Moto.endpoint(), BUCKET, &root));
    let n = sc
        .pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
        .unwrap_or_else(|e| panic!("through the s3 driver: {e}"));
    assert!(n >= 10);
    // and what was collected is gone through the registry too
    let gone = sc.image("app:v1-old");
    assert!(common::http::pull_verify(reg.url(), gone.repo(), gone.digest()).is_err());
}

/// Writes `n` layer links into `repo` to blobs that were never pushed.
fn write_links_to_blobs_never_pushed(root: &Path, repo: &str, n: usize) {
    for i in 0..n {
        let digest = common::images::sha256_digest(format!("never pushed {i}").as_bytes());
        tree::write_key(
            root,
            &tree::layer_link_key(repo, &digest),
            digest.as_bytes(),
        );
    }
}

/// Listed in pages of three keys, the registry's prefixes run long enough to
/// split as they go (`listing::running_split`, after 16 pages), and the
/// listing's other sizings see many pages too: the plans and the collections
/// are still exactly the filesystem's, and the registry pulls every survivor.
#[test]
fn listed_three_keys_a_page_the_listings_split_as_they_go_and_collect_as_on_disk() {
    let (_dir, sc) = pushed(scenarios::mixed);
    // more keys in one repository's `_layers` than 16 pages, which both
    // modes delete
    write_links_to_blobs_never_pushed(&sc.root, "team/app", 60);
    // not fake-gcs-server: its XML listing ignores max-keys (one page, always)
    for emulator in [Emulator::Moto, Emulator::Azurite] {
        let (root, logs) =
            same_as_filesystem_with(emulator, &sc, &["-o", "list_page_size=3", "-v"]);
        assert!(
            logs.contains("a long listing split"),
            "{}: no listing split\n{logs}",
            emulator.name()
        );
        if emulator == Emulator::Moto {
            let reg = Registry::start_with_driver(&s3_driver_yaml(
                &Emulator::Moto.endpoint(),
                BUCKET,
                &root,
            ));
            sc.pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
                .unwrap_or_else(|e| panic!("through the s3 driver: {e}"));
        }
    }
}

#[test]
fn azure_azurite_matches_the_filesystem() {
    let (_dir, sc) = pushed(scenarios::mixed);
    same_as_filesystem(Emulator::Azurite, &sc);
}

#[test]
fn gcs_fake_gcs_server_matches_the_filesystem() {
    let (_dir, sc) = pushed(scenarios::mixed);
    same_as_filesystem(Emulator::FakeGcs, &sc);
}

#[test]
#[ignore = "LocalStack runs outside CI: localstack/run-tests.sh"]
fn s3_localstack_matches_the_filesystem_and_the_registry_pulls_every_survivor() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let root = same_as_filesystem(Emulator::LocalStack, &sc);
    let reg = Registry::start_with_driver(&s3_driver_yaml(
        &Emulator::LocalStack.endpoint(),
        BUCKET,
        &root,
    ));
    sc.pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
        .unwrap_or_else(|e| panic!("through the s3 driver: {e}"));
}

#[test]
fn upstream_and_disk_edit_scenarios_match_the_filesystem_on_s3() {
    let (_dir, sc) = pushed(|reg| {
        let mut parts = scenarios::all_small(reg);
        parts.extend(scenarios::all_disk_edits(reg));
        scenarios::merge("upstream", parts)
    });
    same_as_filesystem(Emulator::Moto, &sc);
}

/// distribution 2.x's Azure driver names each blob by its path, leading `/`
/// and all; object_store cannot address such names. A registry written that
/// way is named for what it is (not "point STORAGE at the rootdirectory",
/// which no STORAGE could satisfy), the run is refused, and nothing changes.
#[test]
fn a_registry_written_by_distribution_2_on_azure_is_named_as_out_of_reach() {
    let emulator = Emulator::Azurite;
    emulator.require();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sample-registry");
    let root = Emulator::unique_root("azure-2x-names");
    let uploaded = emulator.upload_tree_with_leading_slash(&fixture, &root);
    assert!(uploaded > 10, "{uploaded} keys");
    let mut args = vec!["gc".to_string()];
    args.extend(emulator.gc_args());
    args.extend(flags(Mode::DeleteUntagged));
    args.push(emulator.url(&root));
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "under /{root}/docker/registry/v2/, with a leading `/`"
        )) && err.contains("cannot collect this registry")
            && !err.contains("point STORAGE"),
        "{err}"
    );
    assert_eq!(
        emulator.count_with_leading_slash(&root),
        uploaded,
        "every blob is still there, under the name the registry gave it"
    );
}

/// `--endpoint` wins over the environment's endpoints, the S3-only one of
/// the AWS SDKs (`AWS_ENDPOINT_URL_S3`, which object_store otherwise prefers
/// to any endpoint given) included; without a setting, that variable is the
/// endpoint, and the summary names it.
#[test]
fn the_endpoint_setting_wins_over_aws_endpoint_url_s3() {
    let emulator = Emulator::Moto;
    emulator.require();
    let root = Emulator::unique_root("endpoint-env");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sample-registry");
    runtime().block_on(emulator.upload_tree(&fixture, &root));
    let nowhere = "http://127.0.0.1:9";
    let with_env = |args: &[String], var: &str, value: &str| {
        std::process::Command::new(collector::binary())
            .args(args)
            .env_remove("REGISTRY_GC_LOG")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT")
            .env(var, value)
            .output()
            .unwrap()
    };
    let mut args = vec!["gc".to_string(), "--dry-run".to_string()];
    args.extend(emulator.gc_args());
    args.push(emulator.url(&root));
    let out = with_env(&args, "AWS_ENDPOINT_URL_S3", nowhere);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("at {}", emulator.endpoint())),
        "{stdout}"
    );

    // no endpoint setting: the variable is the endpoint, named in the error
    let at = args.iter().position(|a| a == "--endpoint").unwrap();
    args.drain(at..at + 2);
    let out = with_env(&args, "AWS_ENDPOINT_URL_S3", nowhere);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("at {nowhere}")), "{stderr}");
}

#[test]
fn a_wrong_credential_or_endpoint_fails_in_one_clear_line_before_any_work() {
    Emulator::Moto.require();
    // nothing listens on port 9: the endpoint is named
    let out = run(&[
        "gc",
        "--allow-http",
        "--endpoint",
        "http://127.0.0.1:9",
        "-o",
        "access_key_id=a",
        "-o",
        "secret_access_key=b",
        "s3://registry-gc-test/x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach s3://registry-gc-test/x at http://127.0.0.1:9"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // a bucket that does not exist
    let mut args = vec!["gc".to_string()];
    args.extend(Emulator::Moto.gc_args());
    args.push("s3://no-such-bucket-here/x".into());
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the bucket or container does not exist"));

    // Azurite checks signatures: a wrong key is refused and named as access
    Emulator::Azurite.require();
    let out = run(&[
        "gc",
        "--allow-http",
        "--endpoint",
        &Emulator::Azurite.endpoint(),
        "-o",
        "account_name=devstoreaccount1",
        "-o",
        "access_key=d3Jvbmcga2V5",
        "az://registry-gc-test/x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("access denied") && err.contains("AuthorizationFailure"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        !err.contains("d3Jvbmcga2V5"),
        "the key must never be printed: {err}"
    );
}

/// Tag links are known from their ETag (the MD5 of `sha256:<hex>` of a revision)
/// and manifests come from the local cache: a second run on an unchanged
/// registry costs its LIST pages and nothing else where ETags are MD5s (S3, GCS);
/// on Azure, whose ETags are opaque, it also reads the tag links.
#[test]
fn a_second_run_costs_little_more_than_its_listing() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let rt = runtime();
    let tags: u64 = tree::tags(&sc.root).values().map(|t| t.len() as u64).sum();
    let manifests: u64 = tree::revisions(&sc.root)
        .values()
        .flatten()
        .collect::<BTreeSet<_>>()
        .len() as u64;
    for emulator in [Emulator::Moto, Emulator::Azurite, Emulator::FakeGcs] {
        emulator.require();
        let root = Emulator::unique_root(&format!("second-{}", emulator.name()));
        rt.block_on(emulator.upload_tree(&sc.root, &root));
        let cache = tempfile::tempdir().unwrap();
        let report = tempfile::NamedTempFile::new().unwrap();
        let mut f = flags(Mode::Default);
        f.extend([
            "--cache-dir".to_string(),
            cache.path().display().to_string(),
        ]);
        run_on(emulator, &root, &f, report.path());
        let first = collector::read_report(report.path());
        let etag_md5 = emulator != Emulator::Azurite;
        let tag_reads = if etag_md5 { 0 } else { tags };
        assert_eq!(
            first["requests"]["get"].as_u64(),
            Some(tag_reads + manifests),
            "{}: first run {}",
            emulator.name(),
            first["requests"]
        );
        assert_eq!(first["requests"]["head"].as_u64(), Some(0));
        assert_eq!(first["requests"]["put"].as_u64(), Some(0));

        run_on(emulator, &root, &f, report.path());
        let second = collector::read_report(report.path());
        assert_eq!(
            second["requests"]["get"].as_u64(),
            Some(tag_reads),
            "{}: second run {}",
            emulator.name(),
            second["requests"]
        );
        assert_eq!(second["requests"]["delete"].as_u64(), Some(0));
        assert_eq!(second["manifest_cache_hits"].as_u64(), Some(manifests));
        assert_eq!(
            second["tags_matched_by_etag"].as_u64(),
            Some(tags - tag_reads)
        );
        // nothing to collect: no re-check (nothing a write could need back),
        // no look after the sweep: the listing's pages and nothing more
        assert_eq!(
            second["requests"]["list"],
            second["request_floor"]["list"],
            "{}: {second}",
            emulator.name()
        );
        assert_eq!(
            second["recheck"]["keys_listed"].as_u64(),
            Some(0),
            "{}: {second}",
            emulator.name()
        );

        // an abandoned upload, and nothing else: the re-check lists the
        // repositories (one page here), and with no blob deleted nothing can
        // have been broken by the sweep, so there is no listing after it
        let repo = tree::tags(&sc.root).keys().next().unwrap().clone();
        let upload = tree::upload_dir_key(&repo, "0b9f4f86-5d2c-4b1e-9a43-3c1f2f0e6a11");
        let store = emulator.store();
        let stale: Vec<String> = ["data", "startedat", "hashstates/sha256/0"]
            .iter()
            .map(|f| format!("{upload}/{f}"))
            .collect();
        rt.block_on(async {
            for key in &stale {
                emulator
                    .put(
                        store.as_ref(),
                        &format!("{root}/docker/registry/v2/{key}"),
                        b"2020-01-01T00:00:00Z",
                    )
                    .await;
            }
            // older than the fence's second of margin (see `upload_tree`)
            tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        });
        run_on(emulator, &root, &f, report.path());
        let third = collector::read_report(report.path());
        assert_eq!(
            collector::report_deletions(&third),
            stale.iter().cloned().collect::<BTreeSet<_>>(),
            "{}",
            emulator.name()
        );
        assert!(
            third["recheck"]["keys_listed"].as_u64().unwrap() > 0,
            "{}: {third}",
            emulator.name()
        );
        let floor = third["request_floor"]["list"].as_u64().unwrap();
        assert_eq!(
            third["requests"]["list"].as_u64(),
            Some(floor + 1),
            "{}: {third}",
            emulator.name()
        );
        assert!(
            rt.block_on(emulator.keys(&root))
                .iter()
                .all(|k| !k.starts_with(&upload)),
            "{}",
            emulator.name()
        );
    }
}

/// Uploads the scenario's tree as it is now to a new root in moto; a dry run
/// there with `--offline` (the listing alone, no re-check) gives the first
/// report; then a collection, whose report is the second, must leave what it
/// leaves on disk.
fn listing_report_then_same_as_disk(
    sc: &Scenario,
    test: &str,
) -> (serde_json::Value, serde_json::Value) {
    let emulator = Emulator::Moto;
    emulator.require();
    let rt = runtime();
    let (root, before) = upload_fresh(&rt, emulator, sc, test);
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut dry = flags(Mode::Default);
    dry.extend(["--dry-run", "--offline"].map(String::from));
    run_on(emulator, &root, &dry, report.path());
    let listed = collector::read_report(report.path());
    assert_eq!(
        listed["seen"]["keys"].as_u64(),
        Some(before.len() as u64),
        "{listed}"
    );
    collect_as_on_disk(&rt, emulator, sc, &root, Mode::Default, &[], report.path());
    (listed, collector::read_report(report.path()))
}

#[test]
fn a_registry_of_a_few_pages_is_listed_flat_at_the_floor_and_collected_as_on_disk() {
    let (_dir, sc) = pushed(scenarios::mixed);
    // 1,500 layer links (to blobs that are not there): a first page that gets
    // past the few blobs says nothing of the repositories, so they are split
    write_links_to_blobs_never_pushed(&sc.root, "many/links", 1500);
    let keys = tree::keys(&sc.root).len() as u64;
    let (r, collected) = listing_report_then_same_as_disk(&sc, "split-pages");
    assert!(
        r["requests"]["list"].as_u64().unwrap() > keys.div_ceil(1000) + 2,
        "listed by prefixes: {}",
        r["requests"]
    );
    // stale uploads, 8 blobs and 1,506 layer links whose blobs were never
    // there: three phases by reason, four DELETE; the links wait for nothing
    // and fill the first two phases' batches
    assert_eq!(
        collected["requests"]["delete"], collected["request_floor"]["delete"],
        "{collected}"
    );
    assert_eq!(collected["requests"]["delete"].as_u64(), Some(2));

    // 2,000 orphan blobs more: the first page ends among them and tells how
    // many there are, about two pages: listed flat, one LIST per page
    for i in 0..2000 {
        tree::write_blob(&sc.root, format!("orphan layer {i}").as_bytes());
    }
    let keys = tree::keys(&sc.root).len() as u64;
    assert!((3001..4000).contains(&keys), "{keys}");
    let (r, collected) = listing_report_then_same_as_disk(&sc, "flat-pages");
    // 12 upload files, 2,008 blobs, 1,506 links: 1 + 3 + 2 DELETE by reason,
    // 4 (the floor) once the first phase's batch takes 988 blobs
    assert_eq!(
        collected["requests"]["delete"].as_u64(),
        Some(4),
        "{collected}"
    );
    assert_eq!(collected["request_floor"]["delete"].as_u64(), Some(4));
    assert_eq!(
        r["requests"]["list"].as_u64(),
        Some(keys.div_ceil(1000)),
        "one LIST per page: {}",
        r["requests"]
    );
    assert_eq!(
        r["request_floor"]["list"].as_u64(),
        Some(keys.div_ceil(1000))
    );
}

/// Writes an OCI image (config, one layer, manifest, layer links) into `repo`
/// on disk, tagged `tag`; returns the manifest's, config's and layer's digests.
fn write_image(root: &Path, repo: &str, tag: &str, seed: &str) -> [String; 3] {
    let config = tree::write_blob(root, format!("{{\"seed\":\"{seed}\"}}").as_bytes());
    let layer = tree::write_blob(root, format!("layer {seed}").as_bytes());
    for d in [&config, &layer] {
        tree::write_layer_link(root, repo, d);
    }
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config}\",\"size\":1}},\
         \"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"{layer}\",\"size\":1}}]}}"
    );
    let manifest = tree::write_manifest(root, repo, Some(tag), manifest.as_bytes());
    [manifest, config, layer]
}

/// A tag may be named `InternalError` or `SlowDown`, and its history entries
/// are deleted with the untagged manifests they name. On S3 every
/// DeleteObjects request holding one failed after all its retries, for every
/// key in it (deleted, all of them), and the sweep stopped there: exit 4,
/// the whole first phase reported failed, no blob freed, on every run that
/// found such an entry.
#[test]
fn a_tag_named_like_an_s3_error_code_is_collected_on_s3() {
    Emulator::Moto.require();
    let rt = runtime();
    let disk = tempfile::tempdir().unwrap();
    let [old, old_config, old_layer] = write_image(disk.path(), "app", "InternalError", "old");
    // the tag moves on: the old manifest is untagged, its history entry stays
    let [new, ..] = write_image(disk.path(), "app", "InternalError", "new");
    write_image(disk.path(), "app", "SlowDown", "other");
    let root = Emulator::unique_root("tag-named-slowdown");
    rt.block_on(Emulator::Moto.upload_tree(disk.path(), &root));
    let before = rt.block_on(Emulator::Moto.keys(&root));

    let report_dir = tempfile::tempdir().unwrap();
    let report = report_dir.path().join("report.json");
    run_on(Emulator::Moto, &root, &flags(Mode::DeleteUntagged), &report);
    let r = collector::read_report(&report);
    assert_eq!(r["failures"].as_array().unwrap().len(), 0, "{r:#}");
    let after = rt.block_on(Emulator::Moto.keys(&root));
    let deleted: BTreeSet<String> = before.difference(&after).cloned().collect();
    let want: BTreeSet<String> = [
        tree::revision_link_key("app", &old),
        tree::tag_index_link_key("app", "InternalError", &old),
        tree::blob_key_for_digest(&old),
        tree::blob_key_for_digest(&old_config),
        tree::blob_key_for_digest(&old_layer),
        tree::layer_link_key("app", &old_config),
        tree::layer_link_key("app", &old_layer),
    ]
    .into_iter()
    .collect();
    assert_eq!(deleted, want);
    assert!(after.contains(&tree::tag_index_link_key("app", "InternalError", &new)));
}
