//! Bad input: stray and junk keys, corrupt manifests, symbolic links, wrong roots.
//! Each gets a clear message naming the key or setting, and nothing live is lost.

mod common;

use std::os::unix::fs::symlink;
use std::time::Duration;

use common::collector::{aged_copy, gc, pushed, run};
use common::http::{get_blob, put_manifest, upload_blob};
use common::model::Mode;
use common::registry::Registry;
use common::scenarios::{self, Scenario};
use common::tree;

fn mixed() -> (tempfile::TempDir, Scenario) {
    pushed(scenarios::mixed)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn stray_files_are_reported_and_never_deleted() {
    let (_dir, sc) = mixed();
    let copy = aged_copy(&sc);
    let alpine = sc.image("alpine:3.19");
    let (prefix, hex) = (&alpine.digest()[7..9], &alpine.digest()[7..]);
    let seen_by_gc = [
        format!("blobs/sha256/{prefix}/tmp-upload-123"),
        "repositories/library/README".to_string(),
        "repositories/library/alpine/_junk/file".to_string(),
        "stray-at-v2-root".to_string(),
    ];
    // beside a blob's `data`, a revision's `link` and a tag's `current/link`:
    // gc stats those files instead of reading their directories, so only fsck
    // sees these
    let beside_a_leaf = [
        format!("blobs/sha256/{prefix}/{hex}/data.tmp"),
        format!("repositories/library/alpine/_manifests/revisions/sha256/{hex}/link.tmp"),
        "repositories/library/alpine/_manifests/tags/3.19/current/link~".to_string(),
        "repositories/library/alpine/_manifests/tags/3.19/notes".to_string(),
    ];
    let strays: Vec<&String> = seen_by_gc.iter().chain(&beside_a_leaf).collect();
    for k in &strays {
        tree::write_key(copy.path(), k, b"junk");
    }
    tree::age_tree(copy.path(), Duration::from_secs(7200));
    let fsck = run(&[
        "fsck",
        "--format",
        "json",
        &copy.path().display().to_string(),
    ]);
    let findings: serde_json::Value =
        serde_json::from_slice(&fsck.stdout).expect("fsck prints JSON");
    let stray_findings: Vec<&str> = findings["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "stray-key")
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    for k in &strays {
        assert!(
            stray_findings.contains(&format!("docker/registry/v2/{k}").as_str()),
            "fsck did not report {k}: {stray_findings:?}"
        );
    }

    let report = copy.path().join("r.json");
    let out = gc(
        copy.path(),
        &["--delete-untagged", "--report", report.to_str().unwrap()],
        0,
    );
    let keys = tree::keys(copy.path());
    for k in &strays {
        assert!(keys.contains(*k), "stray {k} was deleted");
    }
    assert!(
        stdout(&out).contains(&format!("stray keys (skipped): {}", seen_by_gc.len())),
        "{}",
        stdout(&out)
    );
    let r = common::collector::read_report(&report);
    let reported: Vec<&str> = r["strays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(reported.len(), seen_by_gc.len(), "{reported:?}");
    for k in &seen_by_gc {
        assert!(
            reported.contains(&format!("docker/registry/v2/{k}").as_str()),
            "gc did not report {k}: {reported:?}"
        );
    }
    let reg = Registry::start(copy.path());
    sc.pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
        .unwrap();
}

#[test]
fn junk_tag_link_keeps_its_repository_whole_and_is_named() {
    let (_dir, sc) = mixed();
    let copy = aged_copy(&sc);
    let key = tree::tag_current_link_key("team/app", "v1");
    tree::write_key(copy.path(), &key, b"this is not a digest");
    tree::age_tree(copy.path(), Duration::from_secs(7200));
    let revisions_before = tree::revisions(copy.path())["team/app"].clone();
    let out = gc(copy.path(), &["--delete-untagged"], 0);
    assert!(
        stdout(&out).contains(&format!(
            "warning: docker/registry/v2/{key}: tag link does not hold a sha256 digest"
        )),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        tree::revisions(copy.path())["team/app"],
        revisions_before,
        "team/app lost revisions"
    );
    // every manifest of team/app still has its blobs
    let blobs = tree::blob_digests(copy.path());
    for d in &revisions_before {
        assert!(blobs.contains(d));
        for b in &sc.model.manifests[d].blobs {
            assert!(blobs.contains(b), "{b} of {d}");
        }
    }
}

#[test]
fn corrupt_manifests_pin_what_they_mention_and_never_abort() {
    let (_dir, sc) = mixed();
    let copy = aged_copy(&sc);
    let layer = tree::write_blob(copy.path(), b"a layer only a truncated manifest mentions");
    let truncated = format!("{{\"schemaVersion\":2,\"layers\":[{{\"digest\":\"{layer}\"");
    let broken = tree::write_manifest(copy.path(), "corrupt/repo", Some("t"), truncated.as_bytes());
    let binary = tree::write_manifest(
        copy.path(),
        "corrupt/repo",
        None,
        &[0u8, 159, 146, 150, 255, 0, 1],
    );
    let orphan = tree::write_blob(copy.path(), b"an orphan nothing mentions");
    tree::age_tree(copy.path(), Duration::from_secs(7200));
    let out = gc(copy.path(), &["--delete-untagged"], 0);
    let blobs = tree::blob_digests(copy.path());
    for (what, d) in [
        ("truncated manifest", &broken),
        ("binary manifest", &binary),
        ("layer it mentions", &layer),
    ] {
        assert!(blobs.contains(d), "{what} {d} was deleted");
    }
    assert!(!blobs.contains(&orphan));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "{}: manifest could not be parsed",
            tree::blob_key_for_digest(&broken)
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}: manifest could not be parsed",
            tree::blob_key_for_digest(&binary)
        )),
        "{text}"
    );
}

#[test]
fn symlinks_out_of_the_root_or_broken_stop_the_run_before_any_deletion() {
    let (_dir, sc) = mixed();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("data"), b"not the registry's").unwrap();
    type Make<'a> = Box<dyn Fn(&std::path::Path) + 'a>;
    // a blob directory named for an orphan digest, linked to a kept blob's
    // directory: deleting the orphan's data through it would delete the kept
    // blob's
    let kept = tree::blob_key_for_digest(&sc.image("alpine:3.19").image.blobs[0]);
    let kept_dir = kept.trim_end_matches("/data").to_string();
    let alias = move |v2: &std::path::Path| {
        let orphan = "ab".repeat(32);
        std::fs::create_dir_all(v2.join("blobs/sha256/ab")).unwrap();
        symlink(
            v2.join(&kept_dir),
            v2.join(format!("blobs/sha256/ab/{orphan}")),
        )
        .unwrap();
    };
    let cases: [(&str, Make); 5] = [
        (
            "outside",
            Box::new(|v2: &std::path::Path| {
                symlink(outside.path(), v2.join("repositories/library/elsewhere")).unwrap()
            }),
        ),
        (
            "broken",
            Box::new(|v2: &std::path::Path| {
                symlink(v2.join("nowhere"), v2.join("blobs/sha256/dangling")).unwrap()
            }),
        ),
        (
            "loop",
            Box::new(|v2: &std::path::Path| {
                symlink(
                    v2.join("repositories/team"),
                    v2.join("repositories/team/app/loop"),
                )
                .unwrap()
            }),
        ),
        ("a second path to a blob directory", Box::new(alias)),
        (
            "a repository aliased",
            Box::new(|v2: &std::path::Path| {
                symlink(
                    v2.join("repositories/team/app"),
                    v2.join("repositories/alias"),
                )
                .unwrap()
            }),
        ),
    ];
    for (name, make) in cases {
        let copy = aged_copy(&sc);
        make(&tree::v2_dir(copy.path()));
        let before = tree::snapshot(copy.path());
        let out = gc(copy.path(), &["--delete-untagged"], 3);
        assert!(
            stderr(&out).contains("symbolic link"),
            "{name}: {}",
            stderr(&out)
        );
        assert!(
            before == tree::snapshot(copy.path()),
            "{name}: something was deleted"
        );
    }
    assert!(outside.path().join("data").exists());
}

#[test]
fn symlinked_root_and_directories_inside_it_work() {
    let (_dir, sc) = mixed();
    let copy = aged_copy(&sc);
    // the blob store moved to another directory inside the root, linked back
    let v2 = tree::v2_dir(copy.path());
    std::fs::rename(v2.join("blobs"), copy.path().join("blobstore")).unwrap();
    symlink(copy.path().join("blobstore"), v2.join("blobs")).unwrap();
    let link_root = tempfile::tempdir().unwrap();
    let root_link = link_root.path().join("registry");
    symlink(copy.path(), &root_link).unwrap();
    gc(&root_link, &["--delete-untagged"], 0);
    let reg = Registry::start(copy.path());
    sc.pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
        .unwrap();
    assert!(v2.join("blobs").is_symlink());
}

/// A repository name the registry would not create (another tool wrote it) is
/// still a repository: its manifests are kept, and the name is reported.
#[test]
fn unconventional_repository_names_are_collected_like_any_other_and_reported() {
    let (_dir, sc) = mixed();
    let copy = aged_copy(&sc);
    let rec = sc.image("app:old"); // deleted through the API: garbage unless Odd_Name keeps it
    tree::write_key(
        copy.path(),
        &format!(
            "repositories/Odd_Name/_manifests/revisions/sha256/{}/link",
            &rec.digest()[7..]
        ),
        rec.digest().as_bytes(),
    );
    tree::age_tree(copy.path(), Duration::from_secs(7200));
    let out = gc(copy.path(), &[], 0);
    assert!(
        stdout(&out).contains("repositories/Odd_Name/: repository name does not follow"),
        "{}",
        stdout(&out)
    );
    let blobs = tree::blob_digests(copy.path());
    assert!(blobs.contains(rec.digest()));
    for b in &rec.image.blobs {
        assert!(
            blobs.contains(b),
            "layer {b} of a manifest Odd_Name links was deleted"
        );
    }
}

#[test]
fn wrong_roots_and_bad_arguments_have_clear_errors_and_exit_codes() {
    let empty = tempfile::tempdir().unwrap();
    let out = gc(empty.path(), &[], 3);
    assert!(
        stderr(&out).contains("docker/registry/v2/ does not exist there"),
        "{}",
        stderr(&out)
    );

    let (_dir, sc) = mixed();
    // pointed one level too deep
    let out = gc(&sc.root.join("docker"), &[], 3);
    assert!(stderr(&out).contains("point STORAGE at the registry's rootdirectory"));

    let out = run(&["gc", "/definitely/not/here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/definitely/not/here"));

    let out = run(&["gc", "--min-age", "yesterday", sc.root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--min-age"));

    let out = run(&["gc", "swift://container/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("swift"));

    // a file:// URL is accepted and means the same as the path
    let copy = aged_copy(&sc);
    let url = format!("file://{}", copy.path().display());
    let out = run(&["gc", "--dry-run", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("would delete"));
}

#[test]
fn nothing_outside_the_registry_tree_is_touched() {
    let (_dir, sc) = mixed();
    let copy = aged_copy(&sc);
    // the registry root often holds other things
    std::fs::write(copy.path().join("config.yml"), b"version: 0.1").unwrap();
    std::fs::create_dir_all(copy.path().join("docker/registry/v1-leftovers")).unwrap();
    std::fs::write(copy.path().join("docker/registry/v1-leftovers/x"), b"x").unwrap();
    tree::age_tree(copy.path(), Duration::from_secs(7200));
    gc(
        copy.path(),
        &["--delete-untagged", "--delete-empty-repos"],
        0,
    );
    assert!(copy.path().join("config.yml").exists());
    assert!(copy.path().join("docker/registry/v1-leftovers/x").exists());
}

/// A binary built without the aws-profile feature refuses a profile setting
/// before opening anything, rather than going on with other credentials.
#[cfg(not(feature = "aws-profile"))]
#[test]
fn an_aws_profile_without_the_feature_is_a_usage_error_naming_the_setting() {
    let out = run(&[
        "gc",
        "--dry-run",
        "--profile",
        "prod",
        "s3://registry-bucket/docker",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--profile")
            && err.contains("`aws-profile` feature")
            && err.contains("--features aws-profile"),
        "{err}"
    );

    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[s3]\nprofile = \"prod\"\n").unwrap();
    let out = run(&[
        "du",
        "--config",
        config.path().to_str().unwrap(),
        "s3://registry-bucket/docker",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("[s3]") && err.contains("`aws-profile` feature"),
        "{err}"
    );
}

/// The registry reads a manifest by its `schemaVersion` and `mediaType` and
/// ignores fields it does not know, so it takes (and serves as an image) an
/// OCI image carrying a schema1 `fsLayers`, a Docker image carrying an
/// index's `manifests`, and an index carrying `fsLayers`. And Go's JSON
/// reader takes a key for a field ignoring case: an image's `"Layers"`, an
/// index's child descriptor's `"Digest"`. Each such manifest is no kind
/// registry-gc knows: it is named, and everything it mentions is kept, in
/// both modes; the run still collects what is garbage.
#[test]
fn manifests_go_reads_otherwise_than_their_kind_keep_what_they_name() {
    use common::http;
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path());
    let base = reg.url();
    let descriptor = |media_type: &str, bytes: &[u8]| json!({"mediaType": media_type, "digest": http::upload_blob(base, "mixed", bytes), "size": bytes.len()});
    let image = |media_type: &str, seed: &str, extra: (&str, serde_json::Value)| {
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": descriptor("application/vnd.oci.image.config.v1+json", format!("{{\"config\":\"{seed}\"}}").as_bytes()),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", format!("layer of {seed}").as_bytes())],
        });
        m[extra.0] = extra.1;
        serde_json::to_vec(&m).unwrap()
    };
    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    const DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    http::put_manifest(
        base,
        "mixed",
        "oci-fslayers",
        OCI,
        &image(OCI, "oci", ("fsLayers", json!([]))),
    );
    http::put_manifest(
        base,
        "mixed",
        "docker-manifests",
        DOCKER,
        &image(DOCKER, "docker", ("manifests", json!([]))),
    );
    let child = image(OCI, "child", ("annotations", json!({})));
    let child_digest = http::put_manifest(
        base,
        "mixed",
        &common::images::sha256_digest(&child),
        OCI,
        &child,
    );
    let index = json!({"schemaVersion": 2, "mediaType": INDEX, "fsLayers": [],
        "manifests": [{"mediaType": OCI, "digest": child_digest, "size": child.len(), "platform": {"os": "linux", "architecture": "amd64"}}]});
    http::put_manifest(
        base,
        "mixed",
        "index-fslayers",
        INDEX,
        &serde_json::to_vec(&index).unwrap(),
    );
    let mut cased = serde_json::from_slice::<serde_json::Value>(&image(
        OCI,
        "cased",
        ("annotations", json!({})),
    ))
    .unwrap();
    let cased_layer = cased["layers"][0]["digest"].as_str().unwrap().to_string();
    cased["Layers"] = cased["layers"].take();
    cased.as_object_mut().unwrap().remove("layers");
    http::put_manifest(
        base,
        "mixed",
        "oci-cased-layers",
        OCI,
        &serde_json::to_vec(&cased).unwrap(),
    );
    let child2 = image(OCI, "child-2", ("annotations", json!({})));
    let child2_digest = http::put_manifest(
        base,
        "mixed",
        &common::images::sha256_digest(&child2),
        OCI,
        &child2,
    );
    let index = json!({"schemaVersion": 2, "mediaType": INDEX,
        "manifests": [{"mediaType": OCI, "Digest": child2_digest, "size": child2.len(), "platform": {"os": "linux", "architecture": "amd64"}}]});
    http::put_manifest(
        base,
        "mixed",
        "index-cased-digest",
        INDEX,
        &serde_json::to_vec(&index).unwrap(),
    );
    let orphan = http::upload_blob(base, "mixed", b"a layer nothing names");
    drop(reg);
    tree::age_tree(dir.path(), Duration::from_secs(7200));

    for flags in [&["--force"][..], &["--force", "--delete-untagged"][..]] {
        let out = gc(dir.path(), flags, 0);
        let reg = Registry::start(dir.path());
        // (the harness reads descriptors as registry-gc did: the index whose
        // child says "Digest" is fetched, and its child pulled by digest)
        http::get_manifest(reg.url(), "mixed", "index-cased-digest")
            .unwrap_or_else(|e| panic!("mixed:index-cased-digest after gc {flags:?}: {e}"));
        for tag in [
            "oci-fslayers",
            "docker-manifests",
            "index-fslayers",
            "oci-cased-layers",
            child2_digest.as_str(),
        ] {
            http::pull_verify(reg.url(), "mixed", tag).unwrap_or_else(|e| {
                panic!("mixed:{tag} after gc {flags:?}: {e}\n{}", stdout(&out))
            });
        }
        // what only Go's reading of "Layers" names (a reader that ignores the
        // key would not ask for it)
        assert!(
            http::blob_exists(reg.url(), "mixed", &cased_layer),
            "the layer of \"Layers\" was deleted: {}",
            stdout(&out)
        );
        assert!(
            stdout(&out).contains("manifest has a shape registry-gc does not know"),
            "{}",
            stdout(&out)
        );
        assert!(
            !http::blob_exists(reg.url(), "mixed", &orphan),
            "the orphan layer is garbage and goes"
        );
    }
}

const DOCKER_SCHEMA2_MT: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// `sha256:<hex>` written with its colon as a JSON escape: the same string to
/// every JSON reader.
fn escaped(d: &str) -> String {
    d.replacen(':', "\\u003a", 1)
}

/// The real registry (2.8.2, Go's encoding/json) accepts a manifest with a key
/// holding a lone surrogate escape (Go decodes it to U+FFFD) and digests written
/// with escapes. serde_json refuses the lone surrogate, so the manifest is
/// "Unparseable" and pinned by scan, but the scan's decoded-string walk stops at
/// the same error: the escaped digests are never seen and the image's config
/// and layer are deleted although its tag still points at it.
#[test]
fn escaped_digests_after_a_lone_surrogate_key_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let reg = Registry::start(&root);
    let repo = "esc/app";
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = common::images::det_bytes("bad-input/escaped-layer", 4096);
    let cfg_d = upload_blob(reg.url(), repo, config);
    let layer_d = upload_blob(reg.url(), repo, &layer);
    let manifest = format!(
        r#"{{"\ud800":0,"schemaVersion":2,"mediaType":"{DOCKER_SCHEMA2_MT}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":{},"digest":"{}"}}]}}"#,
        config.len(),
        escaped(&cfg_d),
        layer.len(),
        escaped(&layer_d)
    );
    // accepted by the registry: it found both blobs the manifest names
    put_manifest(
        reg.url(),
        repo,
        "v1",
        DOCKER_SCHEMA2_MT,
        manifest.as_bytes(),
    );
    assert_eq!(get_blob(reg.url(), repo, &layer_d).unwrap(), layer);
    tree::age_tree(&root, Duration::from_secs(7200));

    // default mode: every revision is a root, and this one is tagged too
    gc(&root, &["--max-delete-percent", "100"], 0);

    for (what, d) in [("layer", &layer_d), ("config", &cfg_d)] {
        let path = tree::key_path(&root, &tree::blob_key_for_digest(d));
        assert!(
            path.exists(),
            "the tagged image's {what} {d} was deleted; GET now says: {:?}",
            get_blob(reg.url(), repo, d).err()
        );
    }
}

/// An unknown shape is pinned by scanning "every digest it mentions", escaped
/// ones included; a number Go reads (1e400 in a field it skips) stops the
/// decoded-string walk as the surrogate does, and what follows is not pinned.
#[test]
fn unknown_shape_pins_escaped_digests_after_a_huge_number() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let repo = "odd/app";
    let blob = common::images::det_bytes("bad-input/pinned-by-unknown", 1024);
    let d = tree::write_blob(&root, &blob);
    tree::write_layer_link(&root, repo, &d);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.example.thing.v1+json","n":1e400,"parts":[{{"ref":"{}"}}]}}"#,
        escaped(&d)
    );
    let m = tree::write_manifest(&root, repo, Some("v1"), manifest.as_bytes());
    // the parser's own view of it
    let refs = registry_gc::manifest::parse(manifest.as_bytes());
    tree::age_tree(&root, Duration::from_secs(7200));
    gc(&root, &["--max-delete-percent", "100"], 0);
    let path = tree::key_path(&root, &tree::blob_key_for_digest(&d));
    assert!(
        path.exists(),
        "{d}, mentioned by the unknown manifest {m} (tagged v1), was deleted; parse gave {refs:?}"
    );
}

/// A manifest of a shape registry-gc does not know (the fields of two kinds)
/// names a config and layers its repository links: each may be an index's
/// child 2.8 serves through that link, so they are read, but one that is no
/// manifest is not warned about, and a layer whose bytes do not match its
/// digest (bit rot) stops no collection: it is kept, with a warning naming it.
#[test]
fn the_blobs_an_unknown_shape_names_are_read_quietly_and_a_corrupt_layer_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let config = tree::write_blob(root, b"{}");
    let layer = tree::write_blob(root, b"\x1f\x8b\x08\x00 a gzip layer");
    let corrupt = tree::write_blob(root, b"\x1f\x8b\x08\x00 a layer before bit rot");
    let corrupt_key = tree::blob_key_for_digest(&corrupt);
    tree::write_key(
        root,
        &corrupt_key,
        b"\x1f\x8b\x08\x00 a layer after bit rot!",
    );
    let descriptor = |d: &str| format!(r#"{{"mediaType":"x","size":1,"digest":"{d}"}}"#);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_SCHEMA2_MT}","config":{},"layers":[{},{}],"manifests":[]}}"#,
        descriptor(&config),
        descriptor(&layer),
        descriptor(&corrupt)
    );
    tree::write_manifest(root, "odd", Some("v1"), manifest.as_bytes());
    for d in [&config, &layer, &corrupt] {
        tree::write_layer_link(root, "odd", d);
    }
    let orphan = tree::write_blob(root, b"a layer nothing names");
    tree::age_tree(root, Duration::from_secs(7200));
    for flags in [&["--force"][..], &["--force", "--delete-untagged"][..]] {
        let out = gc(root, flags, 0);
        let said = stdout(&out);
        assert_eq!(
            said.matches("manifest has a shape registry-gc does not know")
                .count(),
            1,
            "{flags:?}: the config read as a possible child was warned about: {said}"
        );
        assert!(!said.contains("could not be parsed"), "{flags:?}: {said}");
        assert!(
            said.contains(&corrupt_key) && said.contains("does not match its digest"),
            "{flags:?}: {said}"
        );
        for d in [&config, &layer, &corrupt] {
            assert!(
                tree::key_path(root, &tree::blob_key_for_digest(d)).is_file(),
                "{flags:?}: {d} was deleted"
            );
        }
        assert!(!tree::key_path(root, &tree::blob_key_for_digest(&orphan)).exists());
    }
}

/// Writes the blobs of an OCI image whose manifest is over 4 MiB (padded
/// with an annotation) for architecture `arch`: its manifest's, config's and
/// layer's digests, in that order.
fn large_image(root: &std::path::Path, arch: &str) -> [String; 3] {
    let layer = tree::write_blob(
        root,
        &[b"\x1f\x8b\x08\x00 layer of ", arch.as_bytes()].concat(),
    );
    let config = tree::write_blob(root, format!(r#"{{"architecture":"{arch}"}}"#).as_bytes());
    let padding = "x".repeat((4 << 20) + 1024);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":1,"digest":"{config}"}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":1,"digest":"{layer}"}}],"annotations":{{"padding":"{padding}"}}}}"#
    );
    [tree::write_blob(root, manifest.as_bytes()), config, layer]
}

/// An index's child linked only through `_layers` and larger than the 4 MiB
/// 2.8 takes in a push (an older registry wrote it; 2.8 serves it) is read up
/// to `--max-manifest-size` like any manifest: its layer stays. Only blobs a
/// manifest of unknown shape mentions are read no further than 4 MiB.
#[test]
fn a_layer_linked_index_child_over_4_mib_is_read_and_keeps_its_layer() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let [child, config, layer] = large_image(root, "amd64");
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"{child}"}}]}}"#
    );
    tree::write_manifest(root, "big", Some("multi"), index.as_bytes());
    for d in [&child, &config, &layer] {
        tree::write_layer_link(root, "big", d);
    }
    tree::age_tree(root, Duration::from_secs(7200));
    for flags in [&["--force"][..], &["--force", "--delete-untagged"][..]] {
        let out = gc(root, flags, 0);
        for d in [&child, &config, &layer] {
            assert!(
                tree::key_path(root, &tree::blob_key_for_digest(d)).is_file(),
                "{flags:?}: {d} was deleted: {}",
                stdout(&out)
            );
        }
    }
}

/// The same large child, also mentioned by a manifest of unknown shape read
/// first: read on speculation it is kept unread as too large, until the
/// nested index that lists it is read; then it is read as the manifest it is,
/// and its layer stays.
#[test]
fn a_large_child_first_met_as_a_mention_of_an_unknown_shape_is_read_once_an_index_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let [child, config, layer] = large_image(root, "arm64");
    let index_of = |d: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","size":1,"digest":"{d}"}}]}}"#
        )
    };
    let inner = tree::write_blob(root, index_of(&child).as_bytes());
    tree::write_manifest(root, "nest", Some("multi"), index_of(&inner).as_bytes());
    // a manifest of unknown shape (an image's fields and an index's) naming
    // the child among its layers
    let odd = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_SCHEMA2_MT}","config":{{"mediaType":"x","size":1,"digest":"{config}"}},"layers":[{{"mediaType":"x","size":1,"digest":"{child}"}}],"manifests":[]}}"#
    );
    tree::write_manifest(root, "nest", Some("odd"), odd.as_bytes());
    for d in [&inner, &child, &config, &layer] {
        tree::write_layer_link(root, "nest", d);
    }
    tree::age_tree(root, Duration::from_secs(7200));
    for flags in [&["--force"][..], &["--force", "--delete-untagged"][..]] {
        let out = gc(root, flags, 0);
        for d in [&inner, &child, &config, &layer] {
            assert!(
                tree::key_path(root, &tree::blob_key_for_digest(d)).is_file(),
                "{flags:?}: {d} was deleted: {}",
                stdout(&out)
            );
        }
    }
}
