//! Plan semantics on hand-built registries, and invariants on random ones.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::*;
use crate::digest::Digest;
use crate::manifest::{ManifestKind, References};
use crate::mark::TagLink;
use crate::phases::Phases;
use crate::storage::ObjectMeta;

const NOW: i64 = 1_000_000_000_000;
const OLD: i64 = NOW - 10 * 3_600_000;
const HOUR: i64 = 3_600_000;

fn dg(n: u32) -> Digest {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[31] = 1;
    Digest::from_bytes(b)
}

/// A registry described by its keys, the manifests' contents and the tags'
/// targets, from which an inventory and marks are built for each plan.
#[derive(Default)]
struct Fx {
    objects: BTreeMap<String, i64>,
    manifests: BTreeMap<Digest, References>,
    targets: BTreeMap<(String, String), TagLink>,
    alternates: Vec<(String, Digest)>,
}

/// A plan with the inventory it refers to.
struct Planned {
    inv: Inventory,
    plan: Plan,
}

impl std::ops::Deref for Planned {
    type Target = Plan;
    fn deref(&self) -> &Plan {
        &self.plan
    }
}

impl Fx {
    fn put(&mut self, key: String, t: i64) {
        self.objects.insert(key, t);
    }
    fn blob(&mut self, d: Digest) -> &mut Self {
        self.objects.entry(layout::blob_data_key(&d)).or_insert(OLD);
        self
    }
    fn remove_blob(&mut self, d: Digest) {
        self.objects.remove(&layout::blob_data_key(&d));
    }
    fn has_blob(&self, d: &Digest) -> bool {
        self.objects.contains_key(&layout::blob_data_key(d))
    }
    fn image(&mut self, m: Digest, blobs: &[Digest]) -> &mut Self {
        self.blob(m);
        for b in blobs {
            self.blob(*b);
        }
        self.manifests
            .insert(m, refs(ManifestKind::Image, blobs, &[], None));
        self
    }
    fn index(&mut self, m: Digest, children: &[Digest]) -> &mut Self {
        self.blob(m);
        self.manifests
            .insert(m, refs(ManifestKind::Index, &[], children, None));
        self
    }
    fn referrer(&mut self, m: Digest, blobs: &[Digest], subject: Digest) -> &mut Self {
        self.image(m, blobs);
        self.manifests.get_mut(&m).unwrap().subject = Some(subject);
        self
    }
    fn revision(&mut self, repo: &str, d: Digest) -> &mut Self {
        self.put(layout::revision_key(repo, &d), OLD);
        self
    }
    fn layer_link(&mut self, repo: &str, d: Digest) -> &mut Self {
        self.put(layout::layer_link_key(repo, &d), OLD);
        self
    }
    fn tag(&mut self, repo: &str, tag: &str, d: Digest) -> &mut Self {
        self.put(layout::tag_current_key(repo, tag), OLD);
        self.put(layout::tag_index_key(repo, tag, &d), OLD);
        self.targets
            .insert((repo.into(), tag.into()), TagLink::Digest(d));
        self
    }
    /// Revisions per repository, from the keys.
    fn revisions(&self) -> BTreeMap<String, BTreeSet<Digest>> {
        let mut out: BTreeMap<String, BTreeSet<Digest>> = BTreeMap::new();
        for k in self.objects.keys() {
            if let layout::KeyKind::Revision { repo, digest } = layout::classify(k) {
                out.entry(repo.to_string()).or_default().insert(digest);
            }
        }
        out
    }
    fn plan(&self, delete_untagged: bool) -> Planned {
        self.plan_with(&opts(delete_untagged))
    }
    fn plan_with(&self, opts: &PlanOptions) -> Planned {
        self.plan_listed(opts, self.objects.iter())
    }
    /// The plan of the keys listed in the order `listing` gives them (digest
    /// ids are handed out in that order).
    fn plan_listed<'a>(
        &self,
        opts: &PlanOptions,
        listing: impl Iterator<Item = (&'a String, &'a i64)>,
    ) -> Planned {
        let mut inv = Inventory::default();
        for (key, t) in listing {
            inv.insert(ObjectMeta {
                key: key.clone(),
                size: 10,
                last_modified_ms: *t,
                etag: None,
            });
        }
        inv.finish();
        let mut marks = Marks::default();
        marks.set_tag_links(&inv, |repo, tag| {
            self.targets
                .get(&(repo.to_string(), tag.to_string()))
                .cloned()
                .unwrap_or(TagLink::None)
        });
        marks
            .alternate_digests
            .extend(self.alternates.iter().cloned());
        for (d, r) in &self.manifests {
            if let Some(id) = inv.digests.find(d).filter(|id| inv.has_blob(*id)) {
                marks.record(&inv, id, r);
            }
        }
        let plan = plan(&inv, &marks, opts);
        Planned { inv, plan }
    }
}

fn opts(delete_untagged: bool) -> PlanOptions {
    PlanOptions {
        delete_untagged,
        min_age_ms: HOUR,
        upload_max_age_ms: 7 * 24 * HOUR,
        delete_empty_repositories: false,
        now_ms: NOW,
        unstated_are_old: false,
    }
}

fn refs(
    kind: ManifestKind,
    blobs: &[Digest],
    children: &[Digest],
    subject: Option<Digest>,
) -> References {
    References {
        kind,
        blobs: blobs.to_vec(),
        children: children.to_vec(),
        subject,
        other_algorithm: vec![],
        invalid: vec![],
        undecodable: None,
    }
}

fn deleted_blobs(p: &Planned) -> HashSet<Digest> {
    p.deleted_blobs()
        .map(|d| match d.target(&p.inv) {
            Target::Blob(id) => *p.inv.digests.get(id),
            other => panic!("not a blob: {other:?}"),
        })
        .collect()
}

/// The keys deleted for `reason`, sorted.
fn keys_with(p: &Planned, reason: Reason) -> Vec<String> {
    let mut keys: Vec<String> = p
        .deletions
        .iter()
        .filter(|d| d.reason() == reason)
        .map(|d| p.inv.key_of(&d.target(&p.inv)))
        .collect();
    keys.sort();
    keys
}

fn set(ds: &[Digest]) -> HashSet<Digest> {
    ds.iter().copied().collect()
}

#[test]
fn default_mode_keeps_every_revision_and_deletes_orphans_and_their_layer_links() {
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10), dg(11)])
        .revision("r", dg(1))
        .tag("r", "v1", dg(1));
    fx.image(dg(2), &[dg(20)]).revision("r", dg(2)); // untagged but linked
    fx.blob(dg(99))
        .layer_link("r", dg(99))
        .layer_link("r", dg(10)); // orphan blob, pushed then abandoned
    let p = fx.plan(false);
    assert_eq!(deleted_blobs(&p), set(&[dg(99)]));
    assert_eq!(
        keys_with(&p, Reason::DanglingLayerLink),
        vec![layout::layer_link_key("r", &dg(99))]
    );
    assert!(keys_with(&p, Reason::UntaggedManifest).is_empty());
    assert_eq!(p.kept_blobs, 5);
}

#[test]
fn delete_untagged_collects_untagged_revisions_their_history_and_exclusive_layers() {
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10), dg(12)])
        .revision("r", dg(1))
        .tag("r", "v1", dg(1));
    fx.image(dg(2), &[dg(20), dg(12)]).revision("r", dg(2));
    // the tag used to point at dg(2): its history entry must go with it
    fx.put(layout::tag_index_key("r", "v1", &dg(2)), OLD);
    let p = fx.plan(true);
    assert_eq!(deleted_blobs(&p), set(&[dg(2), dg(20)]));
    assert_eq!(
        keys_with(&p, Reason::UntaggedManifest),
        vec![layout::revision_key("r", &dg(2))]
    );
    assert_eq!(
        keys_with(&p, Reason::UntaggedTagIndex),
        vec![layout::tag_index_key("r", "v1", &dg(2))]
    );
    // the default mode keeps it all
    assert!(fx.plan(false).deletions.is_empty());
}

#[test]
fn delete_untagged_keeps_children_of_tagged_indexes_unlike_distribution_2_8() {
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10)]).revision("r", dg(1));
    fx.image(dg(2), &[dg(20)]).revision("r", dg(2));
    fx.index(dg(3), &[dg(1), dg(2)])
        .revision("r", dg(3))
        .tag("r", "latest", dg(3));
    let p = fx.plan(true);
    assert!(p.deletions.is_empty(), "{:?}", p.deletions);
}

#[test]
fn nested_indexes_keep_grandchildren() {
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10)]).revision("r", dg(1));
    fx.index(dg(2), &[dg(1)]).revision("r", dg(2));
    fx.index(dg(3), &[dg(2)])
        .revision("r", dg(3))
        .tag("r", "t", dg(3));
    assert!(fx.plan(true).deletions.is_empty());
}

#[test]
fn untagged_referrers_follow_their_subject() {
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10)])
        .revision("r", dg(1))
        .tag("r", "v1", dg(1));
    fx.referrer(dg(2), &[dg(20)], dg(1)).revision("r", dg(2)); // signature of a kept image
    fx.referrer(dg(3), &[dg(30)], dg(2)).revision("r", dg(3)); // signature of the signature
    fx.image(dg(4), &[dg(40)]).revision("r", dg(4)); // untagged image
    fx.referrer(dg(5), &[dg(50)], dg(4)).revision("r", dg(5)); // its SBOM: orphaned with it
    let p = fx.plan(true);
    assert_eq!(deleted_blobs(&p), set(&[dg(4), dg(40), dg(5), dg(50)]));
}

#[test]
fn referrers_of_index_children_are_kept() {
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10)]).revision("r", dg(1));
    fx.index(dg(2), &[dg(1)])
        .revision("r", dg(2))
        .tag("r", "t", dg(2));
    fx.referrer(dg(3), &[dg(30)], dg(1)).revision("r", dg(3));
    assert!(fx.plan(true).deletions.is_empty());
}

#[test]
fn collection_is_per_repository_but_blobs_are_global() {
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10)])
        .revision("a", dg(1))
        .tag("a", "t", dg(1));
    fx.revision("b", dg(1)); // same manifest, untagged in b
    let p = fx.plan(true);
    assert_eq!(
        keys_with(&p, Reason::UntaggedManifest),
        vec![layout::revision_key("b", &dg(1))]
    );
    assert!(deleted_blobs(&p).is_empty());
}

#[test]
fn index_child_without_revision_keeps_its_blob_but_not_its_layers() {
    // distribution's TestDeleteManifestIndexWithDanglingReferences: the child was
    // deleted by digest, so the registry cannot serve it through this repository.
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10)]).revision("r", dg(1));
    fx.image(dg(2), &[dg(20)]); // no revision link any more
    fx.index(dg(3), &[dg(1), dg(2)])
        .revision("r", dg(3))
        .tag("r", "test", dg(3));
    for mode in [false, true] {
        assert_eq!(
            deleted_blobs(&fx.plan(mode)),
            set(&[dg(20)]),
            "delete_untagged={mode}"
        );
    }
}

#[test]
fn dangling_links_and_tags_are_cleaned() {
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10)])
        .revision("r", dg(1))
        .tag("r", "ok", dg(1));
    // manifest dg(2) and layer dg(20) are gone from blobs, their links remain
    fx.revision("r", dg(2))
        .tag("r", "broken", dg(2))
        .layer_link("r", dg(20));
    fx.put(layout::tag_index_key("r", "ok", &dg(2)), OLD);
    for mode in [false, true] {
        let p = fx.plan(mode);
        assert_eq!(
            keys_with(&p, Reason::DanglingRevision),
            vec![layout::revision_key("r", &dg(2))]
        );
        assert_eq!(
            keys_with(&p, Reason::DanglingTag),
            vec![
                layout::tag_current_key("r", "broken"),
                layout::tag_index_key("r", "broken", &dg(2))
            ]
        );
        assert_eq!(
            keys_with(&p, Reason::DanglingTagIndex),
            vec![layout::tag_index_key("r", "ok", &dg(2))]
        );
        assert_eq!(
            keys_with(&p, Reason::DanglingLayerLink),
            vec![layout::layer_link_key("r", &dg(20))]
        );
        assert!(deleted_blobs(&p).is_empty());
    }
}

#[test]
fn objects_younger_than_min_age_are_never_deleted() {
    let mut fx = Fx::default();
    let young = NOW - HOUR / 2;
    fx.put(layout::blob_data_key(&dg(1)), young); // fresh orphan-looking blob
    fx.image(dg(2), &[dg(20)]);
    fx.put(layout::revision_key("r", &dg(2)), young); // freshly pushed untagged manifest
    fx.put(layout::layer_link_key("r", &dg(30)), young); // layer link whose blob is not there yet
    let p = fx.plan(true);
    assert!(p.deletions.is_empty(), "{:?}", p.deletions);
    assert_eq!(p.spared_young, 2);
}

#[test]
fn a_young_layer_link_keeps_an_old_unreferenced_blob() {
    // A client re-pushing a layer that is garbage finds it by HEAD (or mounts
    // it) and writes a fresh `_layers` link; its manifest comes next.
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10)])
        .revision("r", dg(1))
        .tag("r", "v1", dg(1));
    fx.blob(dg(20)).blob(dg(21));
    fx.put(layout::layer_link_key("r", &dg(20)), NOW - 60_000);
    fx.put(layout::layer_link_key("r", &dg(21)), OLD);
    for delete_untagged in [false, true] {
        let p = fx.plan(delete_untagged);
        assert_eq!(
            deleted_blobs(&p),
            set(&[dg(21)]),
            "untagged={delete_untagged}"
        );
        assert_eq!(
            keys_with(&p, Reason::DanglingLayerLink),
            vec![layout::layer_link_key("r", &dg(21))]
        );
    }
}

#[test]
fn objects_listed_by_name_only_are_old_to_the_candidates_plan_and_young_to_the_swept_one() {
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10)])
        .revision("r", dg(1))
        .tag("r", "v1", dg(1));
    fx.image(dg(2), &[dg(11)]).revision("r", dg(2));
    for key in [
        layout::blob_data_key(&dg(10)),
        layout::blob_data_key(&dg(20)),
        layout::layer_link_key("r", &dg(20)),
    ] {
        fx.put(key, ObjectMeta::NOT_STATED);
    }
    fx.blob(dg(11)).blob(dg(21));
    for delete_untagged in [false, true] {
        let candidates = fx.plan_with(&PlanOptions {
            unstated_are_old: true,
            ..opts(delete_untagged)
        });
        let swept = fx.plan(delete_untagged);
        // the candidates' plan deletes the unstated garbage blob and its link
        assert!(
            deleted_blobs(&candidates).contains(&dg(20)),
            "untagged={delete_untagged}"
        );
        assert_eq!(
            keys_with(&candidates, Reason::DanglingLayerLink),
            vec![layout::layer_link_key("r", &dg(20))]
        );
        // the swept plan spares them until stat'ed, and never deletes more
        assert!(
            !deleted_blobs(&swept).contains(&dg(20)) && deleted_blobs(&swept).contains(&dg(21))
        );
        assert!(keys_with(&swept, Reason::DanglingLayerLink).is_empty());
        let all: BTreeSet<_> = candidates
            .deletions
            .iter()
            .map(|d| d.target(&candidates.inv))
            .collect();
        assert!(
            swept
                .deletions
                .iter()
                .all(|d| all.contains(&d.target(&swept.inv))),
            "untagged={delete_untagged}"
        );
        // a kept blob of unknown size: no total
        assert_eq!(swept.kept_blob_bytes, None);
    }
}

#[test]
fn a_young_tag_history_entry_keeps_its_manifest_in_delete_untagged_mode() {
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10)])
        .revision("r", dg(1))
        .tag("r", "v1", dg(1));
    fx.image(dg(2), &[dg(20)]).revision("r", dg(2));
    // `v1` was just moved to dg(2): its history entry is new, the current link
    // read earlier still said dg(1)
    fx.put(layout::tag_index_key("r", "v1", &dg(2)), NOW - 1000);
    let p = fx.plan(true);
    assert!(deleted_blobs(&p).is_empty(), "{:?}", p.deletions);
    assert!(keys_with(&p, Reason::UntaggedManifest).is_empty());
}

#[test]
fn junk_tag_link_keeps_the_whole_repository_in_delete_untagged_mode() {
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10)]).revision("r", dg(1));
    fx.put(layout::tag_current_key("r", "bad"), OLD);
    fx.targets
        .insert(("r".into(), "bad".into()), TagLink::Junk("x".into()));
    let p = fx.plan(true);
    assert!(p.deletions.is_empty());
    assert_eq!(p.warnings.len(), 1);
}

#[test]
fn unparseable_revision_is_kept_and_pins_what_it_mentions() {
    let mut fx = Fx::default();
    fx.blob(dg(1)).blob(dg(10)).revision("r", dg(1));
    fx.manifests.insert(
        dg(1),
        refs(ManifestKind::Unparseable, &[dg(10)], &[dg(10)], None),
    );
    let p = fx.plan(true);
    assert!(p.deletions.is_empty(), "{:?}", p.deletions);
}

#[test]
fn alternate_algorithm_references_resolve_through_links() {
    let mut fx = Fx::default();
    fx.blob(dg(1)).blob(dg(10)).revision("r", dg(1));
    let mut r = refs(ManifestKind::Image, &[], &[], None);
    r.other_algorithm = vec!["sha512:ab".into()];
    fx.manifests.insert(dg(1), r);
    fx.alternates.push(("sha512:ab".into(), dg(10)));
    assert!(fx.plan(false).deletions.is_empty());
}

#[test]
fn stale_uploads_go_and_fresh_ones_stay() {
    let mut fx = Fx::default();
    fx.put(layout::upload_key("r", "old", "data"), NOW - 8 * 24 * HOUR);
    fx.put(
        layout::upload_key("r", "old", "startedat"),
        NOW - 8 * 24 * HOUR,
    );
    fx.put(
        layout::upload_key("r", "busy", "startedat"),
        NOW - 8 * 24 * HOUR,
    );
    fx.put(layout::upload_key("r", "busy", "data"), NOW - 2 * HOUR); // still receiving chunks
    let p = fx.plan(false);
    assert_eq!(
        keys_with(&p, Reason::StaleUpload),
        vec![
            layout::upload_key("r", "old", "data"),
            layout::upload_key("r", "old", "startedat")
        ]
    );
    assert!(p.empty_repositories.is_empty());
}

#[test]
fn repositories_left_with_nothing_are_reported_empty() {
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10)])
        .revision("gone", dg(1))
        .layer_link("gone", dg(10));
    fx.image(dg(2), &[dg(20)])
        .revision("stays", dg(2))
        .tag("stays", "t", dg(2));
    let p = fx.plan(true);
    assert_eq!(p.empty_repositories, vec!["gone".to_string()]);
}

#[test]
fn sweep_phases_put_manifest_links_before_blobs_before_layer_links() {
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10)])
        .revision("r", dg(1))
        .layer_link("r", dg(10));
    fx.put(layout::upload_key("r", "old", "data"), NOW - 8 * 24 * HOUR);
    let p = fx.plan(true);
    let phases: Vec<(u8, Reason)> = p
        .deletions
        .iter()
        .map(|d| (d.reason().phase(), d.reason()))
        .collect();
    assert_eq!(
        phases,
        vec![
            (0, Reason::UntaggedManifest),
            // bound to nothing else: in the first phase's partial batch
            (0, Reason::StaleUpload),
            (1, Reason::UnreferencedBlob),
            (1, Reason::UnreferencedBlob),
            (2, Reason::DanglingLayerLink)
        ]
    );
}

/// The phase each deletion's key is swept in, checking on the way that every
/// deletion is swept once and no batch is larger than `batch`.
fn swept_phases(p: &Planned, batch: usize) -> (BTreeMap<String, usize>, usize) {
    let phases = Phases::of(&p.inv, &p.plan, batch);
    let mut out = BTreeMap::new();
    let mut requests = 0;
    for ph in 0..phases.len() {
        for chunk in phases.batches(ph, &p.plan) {
            assert!(!chunk.is_empty() && chunk.len() <= batch);
            requests += 1;
            for (i, d) in chunk {
                assert_eq!(p.plan.deletions[i], d);
                assert!(
                    out.insert(p.inv.key_of(&d.target(&p.inv)), ph).is_none(),
                    "swept twice"
                );
            }
        }
    }
    assert_eq!(out.len(), p.deletions.len());
    assert_eq!(requests, phases.batch_count());
    (out, requests)
}

#[test]
fn later_phases_fill_the_room_in_earlier_batches_with_what_waits_for_nothing() {
    let mut fx = Fx::default();
    // default mode: a stale upload, three garbage blobs with their layer
    // links, and a layer link whose blob was gone before the run
    fx.put(layout::upload_key("r", "old", "data"), NOW - 8 * 24 * HOUR);
    for b in [dg(10), dg(11), dg(12)] {
        fx.blob(b).layer_link("r", b);
    }
    fx.layer_link("r", dg(13));
    let p = fx.plan(false);
    assert_eq!(p.deletions.len(), 8);
    let (phase, requests) = swept_phases(&p, 2);
    // by reason alone: 1 + 2 + 2 batches of two; the floor is 4
    assert_eq!(requests, 4);
    let blob_phases: Vec<usize> = [10, 11, 12]
        .iter()
        .map(|n| phase[&layout::blob_data_key(&dg(*n))])
        .collect();
    assert_eq!(
        blob_phases,
        vec![0, 1, 1],
        "one blob fills the upload's batch"
    );
    for n in [10, 11, 12] {
        assert!(
            phase[&layout::blob_data_key(&dg(n))] < phase[&layout::layer_link_key("r", &dg(n))]
        );
    }

    // --delete-untagged: an untagged image's layer waits for its revision
    // link (and so does the manifest's own blob); an orphan blob does not
    let mut fx = Fx::default();
    fx.image(dg(1), &[dg(10)]).revision("r", dg(1));
    fx.blob(dg(20));
    let p = fx.plan(true);
    let (phase, requests) = swept_phases(&p, 2);
    assert_eq!(requests, 2);
    assert_eq!(phase[&layout::revision_key("r", &dg(1))], 0);
    assert_eq!(phase[&layout::blob_data_key(&dg(20))], 0);
    assert_eq!(phase[&layout::blob_data_key(&dg(10))], 1);
    assert_eq!(phase[&layout::blob_data_key(&dg(1))], 1);

    // a layer link fills the blobs' batch only when its blob was gone
    let mut fx = Fx::default();
    fx.blob(dg(10))
        .layer_link("r", dg(10))
        .layer_link("r", dg(11));
    let p = fx.plan(false);
    let (phase, requests) = swept_phases(&p, 3);
    assert_eq!(requests, 2);
    assert_eq!(phase[&layout::layer_link_key("r", &dg(11))], 0);
    assert_eq!(phase[&layout::layer_link_key("r", &dg(10))], 1);
}

/// Checks on one plan that the sweep's phases delete no blob before a link the
/// plan deletes that can still lead the registry to it (computed here from
/// the fixture), no layer link before its blob, and take no more requests
/// than phases by reason alone.
fn assert_swept_in_order(fx: &Fx, p: &Planned, seed: u64) {
    let deleted = deleted_blobs(p);
    for batch in [1, 2, 3, 5] {
        let (phase, requests) = swept_phases(p, batch);
        let mut by_reason = [0usize; 4];
        p.deletions
            .iter()
            .for_each(|d| by_reason[d.reason().phase() as usize] += 1);
        assert!(
            requests <= by_reason.iter().map(|n| n.div_ceil(batch)).sum(),
            "seed {seed}: more requests than before"
        );
        for d in &p.deletions {
            let target = d.target(&p.inv);
            let key = p.inv.key_of(&target);
            let named = match target {
                // a dangling tag's history goes with it, last: the registry
                // serves a tag through its `current/link` only, which names
                // no manifest, so it leads nowhere
                Target::TagIndex { .. } if d.reason() == Reason::DanglingTag => None,
                Target::Revision { digest, .. } | Target::TagIndex { digest, .. } => {
                    Some(*p.inv.digests.get(digest))
                }
                Target::TagCurrent { repo, tag } => {
                    let r = &p.inv.repositories[repo as usize];
                    match fx
                        .targets
                        .get(&(r.name.clone(), r.tag_name(tag).to_string()))
                    {
                        Some(TagLink::Digest(d)) => Some(*d),
                        _ => None,
                    }
                }
                Target::LayerLink { digest, .. } => {
                    let blob = p.inv.digests.get(digest);
                    if deleted.contains(blob) {
                        let blob_key = layout::blob_data_key(blob);
                        assert!(
                            phase[&blob_key] < phase[&key],
                            "seed {seed} batch {batch}: {key} before its blob"
                        );
                    }
                    None
                }
                Target::Blob(_) | Target::Upload { .. } => None,
            };
            let mut reach: Vec<Digest> = named.into_iter().collect();
            let mut seen = HashSet::new();
            while let Some(m) = reach.pop() {
                if !seen.insert(m) {
                    continue;
                }
                if deleted.contains(&m) {
                    let blob_key = layout::blob_data_key(&m);
                    assert!(
                        phase[&key] < phase[&blob_key],
                        "seed {seed} batch {batch}: {blob_key} swept with or before {key}"
                    );
                }
                // a manifest whose blob is gone cannot be served, nor lead anywhere
                if let Some(r) = fx.manifests.get(&m).filter(|_| fx.has_blob(&m)) {
                    reach.extend(r.blobs.iter().chain(&r.children).chain(&r.subject));
                }
            }
        }
    }
}

/// A small deterministic generator, so that failures reproduce from the seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Invariant 2 and 3 on random registries: nothing a tag can reach through the
/// registry (manifest, children that are revisions, their blobs, referrers of
/// kept manifests) and nothing young is ever planned for deletion.
#[test]
fn random_registries_never_lose_what_tags_reach() {
    for seed in 1..400u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut fx = Fx::default();
        let repos = ["a", "a/b", "c"];
        let n_manifests = 2 + rng.below(12) as u32;
        let n_layers = 1 + rng.below(15) as u32;
        let mut young_blobs = HashSet::new();
        for l in 0..n_layers {
            let d = dg(1000 + l);
            let t = if rng.below(8) == 0 {
                young_blobs.insert(d);
                NOW
            } else {
                OLD
            };
            fx.put(layout::blob_data_key(&d), t);
            if rng.below(8) == 0 {
                // an old blob a push in flight just linked
                fx.put(
                    layout::layer_link_key(repos[rng.below(3) as usize], &d),
                    NOW,
                );
                young_blobs.insert(d);
            } else if rng.below(2) == 0 {
                fx.layer_link(repos[rng.below(3) as usize], d);
            }
        }
        for l in 0..rng.below(3) as u32 {
            // a layer link whose blob is gone
            fx.layer_link(repos[rng.below(3) as usize], dg(2000 + l));
        }
        for m in 0..n_manifests {
            let d = dg(m);
            let kind = rng.below(4);
            if kind == 0 && m > 0 {
                let children: Vec<Digest> = (0..1 + rng.below(3))
                    .map(|_| dg(rng.below(m as u64) as u32))
                    .collect();
                fx.index(d, &children);
            } else {
                let layers: Vec<Digest> = (0..1 + rng.below(4))
                    .map(|_| dg(1000 + rng.below(n_layers as u64) as u32))
                    .collect();
                let subject = (kind == 1 && m > 0).then(|| dg(rng.below(m as u64) as u32));
                fx.image(d, &layers);
                fx.manifests.get_mut(&d).unwrap().subject = subject;
            }
            if rng.below(6) == 0 {
                // the manifest blob itself is missing
                fx.remove_blob(d);
            }
            for repo in repos {
                if rng.below(2) == 0 {
                    fx.revision(repo, d);
                    if rng.below(3) == 0 {
                        fx.tag(repo, &format!("t{m}"), d);
                    }
                }
            }
        }
        for delete_untagged in [false, true] {
            let p = fx.plan(delete_untagged);
            let deleted = deleted_blobs(&p);
            for d in &young_blobs {
                assert!(!deleted.contains(d), "seed {seed}: young blob deleted");
            }
            let deleted_keys: HashSet<String> = p
                .deletions
                .iter()
                .map(|x| p.inv.key_of(&x.target(&p.inv)))
                .collect();
            for (name, revisions) in fx.revisions() {
                // independently computed: what this repository serves
                let mut reach: Vec<Digest> = if delete_untagged {
                    fx.targets
                        .iter()
                        .filter(|((r, _), _)| *r == name)
                        .filter_map(|(_, t)| {
                            if let TagLink::Digest(d) = t {
                                Some(*d)
                            } else {
                                None
                            }
                        })
                        .collect()
                } else {
                    revisions.iter().copied().collect()
                };
                let mut seen = HashSet::new();
                while let Some(d) = reach.pop() {
                    if !revisions.contains(&d) || !fx.has_blob(&d) || !seen.insert(d) {
                        continue;
                    }
                    assert!(!deleted.contains(&d), "seed {seed} untagged={delete_untagged}: kept manifest {d:?} deleted in {name}");
                    let r = &fx.manifests[&d];
                    for b in r.blobs.iter().chain(&r.children) {
                        assert!(!deleted.contains(b), "seed {seed} untagged={delete_untagged}: blob {b:?} of kept {d:?} in {name} deleted");
                    }
                    reach.extend(r.children.iter().copied());
                    for (other, rr) in &fx.manifests {
                        if rr.subject == Some(d) {
                            reach.push(*other);
                        }
                    }
                    let link = layout::revision_key(&name, &d);
                    assert!(
                        !deleted_keys.contains(&link),
                        "seed {seed}: revision link of kept {d:?} deleted"
                    );
                }
            }
            // `Plan::find` (the re-check's lookup) finds every deletion
            // and nothing else the inventory holds
            for (i, x) in p.deletions.iter().enumerate() {
                assert_eq!(
                    p.find(&p.inv, x.target(&p.inv)),
                    Some(i),
                    "seed {seed}: {x:?}"
                );
            }
            for (ri, repo) in p.inv.repositories.iter().enumerate() {
                let r = ri as u32;
                let links = repo.revisions.iter().map(|l| Target::Revision {
                    repo: r,
                    digest: l.digest,
                });
                let layers = repo.layers.iter().map(|l| Target::LayerLink {
                    repo: r,
                    digest: l.digest,
                });
                let history = repo.history.iter().map(|h| Target::TagIndex {
                    repo: r,
                    tag: h.tag,
                    digest: h.link.digest,
                });
                for target in links.chain(layers).chain(history) {
                    let key = p.inv.key_of(&target);
                    assert_eq!(
                        p.find(&p.inv, target).is_some(),
                        deleted_keys.contains(&key),
                        "seed {seed}: {key}"
                    );
                }
            }
            assert_swept_in_order(&fx, &p, seed);
            // dry-run equivalence: planning is deterministic
            let again = fx.plan(delete_untagged);
            let keys = |p: &Planned| {
                p.deletions
                    .iter()
                    .map(|x| (p.inv.key_of(&x.target(&p.inv)), x.reason()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(keys(&p), keys(&again));
        }
    }
}

#[test]
fn a_packed_deletion_gives_back_its_target_and_reason() {
    // tag history entries and upload parts are packed by their place in the
    // inventory: a real one, with several of each in the second repository
    let mut inv = Inventory::default();
    let d = |n: u32| Digest::from_hex(&format!("{n:064x}")).unwrap();
    let mut put = |key: String| {
        inv.insert(ObjectMeta {
            key,
            size: 3,
            last_modified_ms: 0,
            etag: None,
        })
    };
    put(layout::tag_current_key("a", "latest"));
    for (tag, n) in [("v1", 1), ("v1", 2), ("v2", 2), ("v3", 7)] {
        put(layout::tag_index_key("b", tag, &d(n)));
    }
    for (uuid, part) in [
        ("u1", "data"),
        ("u1", "startedat"),
        ("u2", "data"),
        ("u2", "hashstates/sha256/0"),
        ("u2", "startedat"),
        ("u3", "data"),
    ] {
        put(layout::upload_key("b", uuid, part));
    }
    inv.finish();
    let b = &inv.repositories[1];
    let mut targets = vec![
        Target::Blob(u32::MAX),
        Target::Revision { repo: 1, digest: 7 },
        Target::TagCurrent {
            repo: 0,
            tag: u32::MAX,
        },
        Target::LayerLink {
            repo: 1,
            digest: u32::MAX,
        },
    ];
    targets.extend(b.history.iter().map(|h| Target::TagIndex {
        repo: 1,
        tag: h.tag,
        digest: h.link.digest,
    }));
    for (ui, u) in b.uploads.iter().enumerate() {
        targets.extend((0..u.parts.len()).map(|pi| Target::Upload {
            repo: 1,
            upload: ui as u32,
            part: pi as u32,
        }));
    }
    assert_eq!(targets.len(), 4 + 4 + 6);
    for target in targets {
        for reason in Reason::ALL {
            let del = Deletion::new(&inv, target, reason);
            assert_eq!((del.target(&inv), del.reason()), (target, reason));
        }
    }
    assert_eq!(std::mem::size_of::<Deletion>(), 8);
}

/// 2.8 serves a manifest through its repository's `_layers` link as well as
/// its revision link (2.1.0 linked manifests into `_layers`): a tag naming
/// such a manifest keeps what it references, in both modes. Without the link
/// (no way for any registry to serve it) the manifest blob alone is kept.
#[test]
fn a_manifest_served_through_its_layer_link_keeps_what_it_references() {
    let (m, config, layer) = (dg(1), dg(2), dg(3));
    for delete_untagged in [false, true] {
        let mut fx = Fx::default();
        fx.image(m, &[config, layer])
            .layer_link("old", m)
            .layer_link("old", config)
            .layer_link("old", layer)
            .tag("old", "v1", m);
        let p = fx.plan(delete_untagged);
        assert!(
            deleted_blobs(&p).is_empty(),
            "-m {delete_untagged}: {:?}",
            deleted_blobs(&p)
        );

        let mut fx = Fx::default();
        fx.image(m, &[config, layer])
            .layer_link("old", config)
            .layer_link("old", layer)
            .tag("old", "v1", m);
        let p = fx.plan(delete_untagged);
        assert_eq!(
            deleted_blobs(&p),
            HashSet::from([config, layer]),
            "-m {delete_untagged}"
        );
    }
}

#[test]
fn a_report_lists_deletions_as_their_keys_sort_whatever_order_the_listing_gave() {
    let mut fx = Fx::default();
    for n in 1..=5 {
        fx.image(dg(n), &[dg(100 + n)])
            .revision("b", dg(n))
            .revision("a", dg(n))
            .layer_link("a", dg(100 + n))
            .layer_link("b", dg(100 + n));
        // a tag whose manifest is gone, with some history
        fx.tag("a", &format!("t{n}"), dg(50 + n));
        fx.put(layout::tag_index_key("a", &format!("t{n}"), &dg(n)), OLD);
    }
    // names one of which is the other's start: `a-b/` sorts before `a/`,
    // `v1.0/` before `v1/`, as keys do
    for repo in ["a-b", "a/0x"] {
        fx.image(dg(60), &[dg(160)])
            .revision(repo, dg(60))
            .layer_link(repo, dg(160));
    }
    fx.tag("a", "t1.0", dg(70));
    for (uuid, part) in [("u2", "startedat"), ("u2", "data"), ("u1", "data")] {
        fx.put(layout::upload_key("b", uuid, part), OLD - 8 * 24 * HOUR);
    }
    // listed backwards: ids run against the digests' order
    let p = fx.plan_listed(&opts(true), fx.objects.iter().rev());
    let rows: Vec<(u8, String)> = p
        .in_key_order(&p.inv)
        .map(|d| (d.reason().phase(), p.inv.key_of(&d.target(&p.inv))))
        .collect();
    assert_eq!(rows.len(), p.deletions.len());
    let mut sorted = rows.clone();
    sorted.sort();
    assert_eq!(rows, sorted);
    // every kind is there, so the order is checked across kinds
    let reasons: BTreeSet<Reason> = p.deletions.iter().map(|d| d.reason()).collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    // and the plan's own order (by id) differs: the test shows something
    let by_id: Vec<(u8, String)> = p
        .deletions
        .iter()
        .map(|d| (d.reason().phase(), p.inv.key_of(&d.target(&p.inv))))
        .collect();
    assert_ne!(rows, by_id);
    // sorted in place, for the report, the same
    let Planned { inv, plan } = p;
    let in_place: Vec<(u8, String)> = plan
        .into_key_order(&inv)
        .into_iter()
        .map(|d| (d.reason().phase(), inv.key_of(&d.target(&inv))))
        .collect();
    assert_eq!(in_place, rows);
}

#[test]
fn an_index_child_linked_only_through_layers_keeps_what_it_references() {
    let (index, by_revision, by_layer_link, unlinked) = (dg(1), dg(2), dg(3), dg(4));
    let (l2, l3, l4, nested, l5) = (dg(12), dg(13), dg(14), dg(5), dg(15));
    for delete_untagged in [false, true] {
        let mut fx = Fx::default();
        fx.image(by_revision, &[l2])
            .image(by_layer_link, &[l3])
            .image(unlinked, &[l4])
            .image(nested, &[l5])
            // a child index linked so, whose own child is linked so too
            .index(dg(6), &[nested])
            .index(index, &[by_revision, by_layer_link, unlinked, dg(6)])
            .revision("r", index)
            .revision("r", by_revision)
            .layer_link("r", by_layer_link)
            .layer_link("r", dg(6))
            .layer_link("r", nested)
            .tag("r", "multi", index);
        let p = fx.plan(delete_untagged);
        // the unlinked child is referenced, so its blob stays; nothing serves
        // its layer
        assert_eq!(
            deleted_blobs(&p),
            HashSet::from([l4]),
            "-m {delete_untagged}"
        );
    }
}

#[test]
fn what_a_layer_linked_child_index_lists_or_is_referred_by_stays_in_delete_untagged_mode() {
    // top (tagged) -> middle (linked only through `_layers`) -> image, an
    // untagged revision: 2.8 serves all three, so image's revision and layer
    // stay, as does a signature of middle and one of a tag target that has a
    // layer link only.
    let (top, middle, image, layer) = (dg(1), dg(2), dg(3), dg(13));
    let (signature, signed_blob) = (dg(4), dg(14));
    let (legacy, legacy_layer, legacy_signature, legacy_signed) = (dg(5), dg(15), dg(6), dg(16));
    let mut fx = Fx::default();
    fx.image(image, &[layer])
        .index(middle, &[image])
        .index(top, &[middle])
        .referrer(signature, &[signed_blob], middle)
        .image(legacy, &[legacy_layer])
        .referrer(legacy_signature, &[legacy_signed], legacy)
        .revision("r", top)
        .tag("r", "multi", top)
        .layer_link("r", middle)
        .revision("r", image)
        .revision("r", signature)
        .layer_link("r", legacy)
        .tag("r", "legacy", legacy)
        .revision("r", legacy_signature);
    for delete_untagged in [false, true] {
        let p = fx.plan(delete_untagged);
        assert_eq!(deleted_blobs(&p), HashSet::new(), "-m {delete_untagged}");
        assert_eq!(
            keys_with(&p, Reason::UntaggedManifest),
            Vec::<String>::new(),
            "-m {delete_untagged}"
        );
    }
}

#[test]
fn a_child_of_an_index_pinned_by_scan_linked_only_through_layers_keeps_what_it_references() {
    // An index of a shape registry-gc does not know (an OCI index carrying a
    // stray `blobs`, which 2.8 serves as an index) lists a child linked in
    // the repository only through `_layers`: the child's layer stays.
    let (index, child, layer, garbage) = (dg(1), dg(2), dg(12), dg(20));
    for kind in [ManifestKind::Unknown, ManifestKind::Unparseable] {
        for delete_untagged in [false, true] {
            let mut fx = Fx::default();
            fx.image(child, &[layer])
                .blob(index)
                .blob(garbage)
                .revision("r", index)
                .tag("r", "multi", index)
                .layer_link("r", child);
            // pinned by scan: every digest mentioned is both blob and child
            fx.manifests
                .insert(index, refs(kind, &[child], &[child], None));
            let p = fx.plan(delete_untagged);
            assert_eq!(
                deleted_blobs(&p),
                set(&[garbage]),
                "{kind:?}, -m {delete_untagged}"
            );
        }
    }
}
