//! Side by side with the reference collector (`docker-registry garbage-collect`,
//! distribution 2.8.2) on identical copies of registries the real registry wrote.

mod common;

use std::collections::BTreeSet;

use common::collector::{aged_copy, gc, pushed};
use common::images::{Image, Index, IndexKind};
use common::model::Mode;
use common::registry::{run_reference_gc_on_root, Registry};
use common::scenarios::{self, Pusher, Scenario};
use common::tree;

/// A registry with a realistic, seeded shape: several repositories (some nested),
/// shared base layers, multi-arch lists, moved tags, API deletes, orphan blobs.
fn generated(reg: &Registry, seed: u64) -> Scenario {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut p = Pusher::new(reg);
    let repos = [
        "base/os",
        "base/os/slim",
        "apps/web",
        "apps/api",
        "tools/ci",
    ];
    let bases: Vec<_> = (0..3)
        .map(|i| common::images::layer_blob(&format!("gen{seed}/base{i}")))
        .collect();
    for (ri, repo) in repos.iter().enumerate() {
        let mut pushed = Vec::new();
        for i in 0..(2 + next(4)) {
            let s = format!("gen{seed}/{ri}/{i}");
            let base = bases[next(bases.len() as u64) as usize].clone();
            let img = if next(2) == 0 {
                Image::docker(&s, 1 + next(3) as usize)
            } else {
                Image::oci(&s, 1 + next(3) as usize)
            };
            let img = img.with_layer(base);
            let tag = (next(3) != 0).then(|| format!("t{}", next(3)));
            pushed.push(p.image(repo, &img, tag.as_deref()));
        }
        if next(2) == 0 && pushed.len() >= 2 {
            let children = vec![pushed[0].clone(), pushed[1].clone()];
            let kind = if next(2) == 0 {
                IndexKind::DockerList
            } else {
                IndexKind::OciIndex
            };
            p.index(
                repo,
                &Index::with_default_platforms(kind, children),
                Some("multi"),
            );
        }
        if next(3) == 0 {
            let victim = pushed[next(pushed.len() as u64) as usize].clone();
            p.delete(&victim);
        }
        if next(2) == 0 {
            p.orphan_blob(repo, &format!("gen{seed}/{ri}/orphan"));
        }
    }
    p.finish(&format!("generated-{seed}"))
}

fn small(reg: &Registry) -> Scenario {
    scenarios::merge("small", scenarios::all_small(reg))
}

#[test]
fn default_mode_deletes_exactly_the_blobs_the_reference_deletes() {
    type Build = Box<dyn Fn(&Registry) -> Scenario>;
    let builders: Vec<(&str, Build)> = vec![
        ("mixed", Box::new(scenarios::mixed)),
        ("small", Box::new(small)),
        ("generated-1", Box::new(|r| generated(r, 1))),
        ("generated-2", Box::new(|r| generated(r, 2))),
        ("generated-3", Box::new(|r| generated(r, 3))),
    ];
    for (name, build) in builders {
        let (_dir, sc) = pushed(build);
        let theirs = aged_copy(&sc);
        let ours = aged_copy(&sc);
        run_reference_gc_on_root(theirs.path(), false, false);
        gc(ours.path(), &[], 0);
        let (b_theirs, b_ours) = (
            tree::blob_digests(theirs.path()),
            tree::blob_digests(ours.path()),
        );
        let before = tree::blob_digests(&sc.root);
        assert!(
            b_theirs.len() < before.len(),
            "{name}: the reference deleted nothing; not a useful comparison"
        );
        assert_eq!(
            b_ours, b_theirs,
            "{name}: blobs left differ from the reference collector's"
        );
        // Both keep every revision in default mode.
        assert_eq!(
            tree::revisions(ours.path()),
            tree::revisions(theirs.path()),
            "{name}"
        );
        // Ours also cleaned what the reference leaves: no layer link to a missing blob.
        for (repo, links) in tree::layer_links(ours.path()) {
            let dangling: Vec<_> = links.iter().filter(|d| !b_ours.contains(*d)).collect();
            assert!(
                dangling.is_empty(),
                "{name}: {repo} keeps layer links to deleted blobs: {dangling:?}"
            );
        }
        let reference_dangling: usize = tree::layer_links(theirs.path())
            .values()
            .map(|links| links.iter().filter(|d| !b_theirs.contains(*d)).count())
            .sum();
        assert!(
            reference_dangling > 0,
            "{name}: expected the reference to leave dangling layer links"
        );
    }
}

#[test]
fn delete_untagged_keeps_multi_arch_images_that_the_reference_breaks() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let theirs = aged_copy(&sc);
    let ours = aged_copy(&sc);
    run_reference_gc_on_root(theirs.path(), true, false);
    gc(ours.path(), &["--delete-untagged"], 0);

    let multi_arch: Vec<_> = sc
        .survivors(Mode::DeleteUntagged)
        .into_iter()
        .filter(|r| r.image.is_index() && r.image.tag.is_some())
        .collect();
    assert!(
        multi_arch.len() >= 2,
        "the scenario has tagged lists/indexes"
    );
    let mut reg = Registry::start(theirs.path());
    let broken: Vec<&str> = multi_arch
        .iter()
        .filter(|r| {
            common::http::pull_verify(reg.url(), r.repo(), r.image.tag.as_deref().unwrap()).is_err()
        })
        .map(|r| r.label.as_str())
        .collect();
    reg.stop();
    assert!(
        !broken.is_empty(),
        "2.8.2 --delete-untagged was expected to break multi-arch images"
    );

    let reg = Registry::start(ours.path());
    for r in &multi_arch {
        common::http::pull_verify(reg.url(), r.repo(), r.image.tag.as_deref().unwrap())
            .unwrap_or_else(|e| panic!("{}: registry-gc broke it: {e}", r.label));
    }
    sc.pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
        .unwrap();
    // Everything the reference keeps that a survivor needs, we keep too; what we
    // delete beyond it is garbage by the semantics.
    let ours_blobs = tree::blob_digests(ours.path());
    let expected: BTreeSet<String> = sc.expected_kept_blobs(Mode::DeleteUntagged);
    assert_eq!(ours_blobs, expected);
    eprintln!("2.8.2 -m broke {broken:?}; registry-gc kept them pullable");
}
