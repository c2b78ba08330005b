//! Hostile trees beyond tests/e2e_bad_input.rs: names with spaces, unicode,
//! percent signs and newlines; binary link content; a file name that is not
//! UTF-8; the root pointed at the wrong directory. Each ends in a clear one-line
//! message naming the key or path, and nothing that is not garbage is deleted.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use common::collector::{aged_copy, gc, pushed};
use common::model::Mode;
use common::registry::Registry;
use common::scenarios;
use common::tree;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn odd_characters_in_names_keep_what_they_link_and_are_reported_on_one_line() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let copy = aged_copy(&sc);
    // garbage unless something links it: the odd repository's tag keeps it
    let rec = sc.image("app:old");
    let hex = &rec.digest()[7..];
    let repo = "we ird/\u{fc}%20n\nx";
    let tag = "v 1%2F\u{4e2d}\n";
    tree::write_key(
        copy.path(),
        &format!("repositories/{repo}/_manifests/revisions/sha256/{hex}/link"),
        rec.digest().as_bytes(),
    );
    tree::write_key(
        copy.path(),
        &format!("repositories/{repo}/_manifests/tags/{tag}/current/link"),
        rec.digest().as_bytes(),
    );
    tree::write_key(
        copy.path(),
        &format!("repositories/{repo}/_manifests/tags/{tag}/index/sha256/{hex}/link"),
        rec.digest().as_bytes(),
    );
    // a tag link holding binary bytes: its repository is kept whole
    let binary_tag = "repositories/team/app/_manifests/tags/bin\u{e9}/current/link";
    tree::write_key(copy.path(), binary_tag, &[0xff, 0xfe, 0, 1, b'\n', 0x80]);
    // strays with odd names are reported, never deleted
    let strays = [
        "blobs/sha256/ab/name with space\nand newline".to_string(),
        "repositories/team/app/_uploads/%zz\u{2028}".to_string(),
    ];
    for s in &strays {
        tree::write_key(copy.path(), s, b"junk");
    }
    tree::age_tree(copy.path(), Duration::from_secs(7200));
    let app_revisions = tree::revisions(copy.path())["team/app"].clone();

    let out = gc(
        copy.path(),
        &["--delete-untagged", "--upload-max-age", "1h"],
        0,
    );
    let text = stdout(&out);
    let keys = tree::keys(copy.path());
    let blobs = tree::blob_digests(copy.path());
    assert!(
        blobs.contains(rec.digest()),
        "the manifest an odd-named tag holds was deleted"
    );
    for b in &rec.image.blobs {
        assert!(
            blobs.contains(b),
            "layer {b} of a manifest an odd-named tag holds was deleted"
        );
    }
    for s in &strays {
        assert!(keys.contains(s), "stray {s:?} was deleted");
    }
    assert!(keys.contains(binary_tag));
    assert_eq!(
        tree::revisions(copy.path())["team/app"],
        app_revisions,
        "team/app lost revisions despite a junk tag"
    );
    // every line names its key; a newline in a name is shown escaped
    assert!(
        text.contains("repositories/we ird/\u{fc}%20n\\nx/: repository name does not follow"),
        "{text}"
    );
    assert!(
        text.contains("tags/bin\u{e9}/current/link: tag link does not hold a sha256 digest"),
        "{text}"
    );
    assert!(text.contains("name with space\\nand newline"), "{text}");
    for line in text.lines() {
        assert!(
            !line.starts_with("and newline") && !line.starts_with("x/"),
            "a key was split over lines:\n{text}"
        );
    }
    let reg = Registry::start(copy.path());
    sc.pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
        .unwrap();
}

#[test]
fn a_file_name_that_is_not_utf8_stops_the_run_naming_it() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let copy = aged_copy(&sc);
    let dir = tree::v2_dir(copy.path()).join("repositories/team");
    let bad = dir.join(std::ffi::OsStr::from_bytes(b"bad-\xff\xfe"));
    std::fs::create_dir_all(bad.join("_layers")).unwrap();
    std::fs::write(bad.join("_layers/x"), b"x").unwrap();
    let before = tree::snapshot(copy.path());
    let out = gc(copy.path(), &["--delete-untagged"], 3);
    let err = stderr(&out);
    assert!(
        err.contains("repositories/team/bad-") && err.contains("not valid UTF-8"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        before == tree::snapshot(copy.path()),
        "something was deleted"
    );
}

#[test]
fn a_root_at_the_wrong_directory_is_refused_and_left_alone() {
    let (_dir, sc) = pushed(scenarios::mixed);
    // the parent of the registry root
    let parent = tempfile::tempdir().unwrap();
    tree::copy_tree(&sc.root, &parent.path().join("registry"));
    let before = tree::snapshot(&parent.path().join("registry"));
    let out = gc(parent.path(), &["--delete-untagged"], 3);
    let err = stderr(&out);
    assert!(
        err.contains(&parent.path().display().to_string())
            && err.contains("docker/registry/v2/ does not exist there"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(before == tree::snapshot(&parent.path().join("registry")));

    // a directory with other things in it, and a docker/ without registry/v2
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("docker/volumes/x")).unwrap();
    std::fs::write(other.path().join("docker/volumes/x/data"), b"keep").unwrap();
    std::fs::write(other.path().join("notes.txt"), b"keep").unwrap();
    let out = gc(other.path(), &["--delete-untagged"], 3);
    assert!(
        stderr(&out).contains("point STORAGE at the registry's rootdirectory"),
        "{}",
        stderr(&out)
    );
    assert!(
        other.path().join("docker/volumes/x/data").exists()
            && other.path().join("notes.txt").exists()
    );

    // the v2 directory itself
    let out = gc(&tree::v2_dir(&sc.root), &["--dry-run"], 3);
    assert!(
        stderr(&out).contains("does not exist there"),
        "{}",
        stderr(&out)
    );
}
