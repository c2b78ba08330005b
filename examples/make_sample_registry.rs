//! Builds a sample registry tree with the real registry (distribution 2.8.2):
//!
//!     cargo run --example make_sample_registry -- <OUTPUT_ROOT>
//!
//! Starts `docker-registry serve` on OUTPUT_ROOT, pushes the `mixed` test scenario
//! (4 repositories, one nested in another's path; Docker and OCI images, a manifest list and
//! an OCI index with untagged children, cosign-style signatures, referrers with `subject`,
//! a moved tag, manifests deleted by digest, orphan blobs, abandoned uploads), stops the
//! registry and prints a summary. OUTPUT_ROOT then holds `docker/registry/v2/...`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use common::model::Mode;
use common::registry::Registry;
use common::{scenarios, tree};

fn main() {
    let root: PathBuf = match std::env::args_os().nth(1) {
        Some(r) => r.into(),
        None => {
            eprintln!("usage: make_sample_registry <OUTPUT_ROOT>");
            std::process::exit(2);
        }
    };
    if tree::v2_dir(&root).exists() && !tree::keys(&root).is_empty() {
        eprintln!(
            "{} already holds a registry tree; choose an empty directory",
            root.display()
        );
        std::process::exit(2);
    }
    let mut reg = Registry::start(&root);
    let sc = scenarios::mixed(&reg);
    if let Err(e) = sc.pull_verify_present(reg.url()) {
        panic!("sample registry does not verify: {e}");
    }
    reg.stop();
    if let Err(e) = sc.check_tree(None) {
        panic!("tree differs from the scenario model:\n{e}");
    }

    let keys = tree::keys(&root);
    print!("{}", sc.summary());
    println!("root: {}", root.display());
    println!("keys under docker/registry/v2/: {}", keys.len());
    for r in &sc.images {
        println!(
            "  {:<28} {:<16} {}  default:{:<4} delete-untagged:{}",
            r.label,
            r.repo(),
            &r.digest()[..19],
            if r.survives(Mode::Default) {
                "keep"
            } else {
                "drop"
            },
            if r.survives(Mode::DeleteUntagged) {
                "keep"
            } else {
                "drop"
            },
        );
    }
    for (mode, name) in [
        (Mode::Default, "default"),
        (Mode::DeleteUntagged, "delete-untagged"),
    ] {
        let e = sc.expectation(mode);
        println!("expected deleted blobs ({name}): {}", e.deleted_blobs.len());
        for d in &e.deleted_blobs {
            println!("    {d}");
        }
    }
    for n in &sc.notes {
        println!("note: {n}");
    }
}
