//! README's first newcomer command, run exactly as written, on the sample registry
//! shipped in the repository (written by the real registry, distribution 2.8.2).

mod common;

use std::path::Path;

use common::tree;

fn readme_sample_args() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| {
            l.trim_start().starts_with("cargo run --release -- gc") && l.contains("sample-registry")
        })
        .expect("README has the sample command");
    line.split_once(" -- ")
        .unwrap()
        .1
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn readme_sample_command_plans_a_collection_and_changes_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample = root.join("tests/fixtures/sample-registry");
    let before = tree::snapshot(&sample);
    assert!(
        before.len() > 100,
        "the sample registry is in the repository"
    );
    let args = readme_sample_args();
    assert!(
        args.iter().any(|a| a == "--dry-run"),
        "the README command must be a dry run: {args:?}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_registry-gc"))
        .args(&args)
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "seen: 4 repositories, 20 manifests, 9 tags, 66 blobs",
        "would delete: 4 untagged manifest revisions",
        "unreferenced blobs",
        "layer links to missing blobs",
        "stale upload files",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(
        before == tree::snapshot(&sample),
        "the dry run changed the sample"
    );
}
