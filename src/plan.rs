//! The plan: a pure function from what was listed and read to what to delete,
//! each deletion with its reason and size. No I/O here, so it can be tested on
//! any graph and a dry run prints exactly what a real run would do.

use std::collections::{BTreeSet, HashMap};

use crate::digest_table::{DigestId, DigestSet};
use crate::inventory::{Inventory, Repository, Secs, NOT_STATED};
use crate::layout;
use crate::mark::{Marks, TagTarget};
use crate::report::Warning;

#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// Collect manifests that no tag reaches (per repository).
    pub delete_untagged: bool,
    /// Objects modified after `now_ms - min_age_ms` are never deleted.
    pub min_age_ms: i64,
    /// Uploads idle for longer than this are deleted.
    pub upload_max_age_ms: i64,
    /// Remove the directories of repositories left with nothing in them.
    pub delete_empty_repositories: bool,
    /// When listing started, in milliseconds since the epoch.
    pub now_ms: i64,
    /// Take objects listed by name only (`inventory::NOT_STATED`) to be old:
    /// the first of `candidates`' two plans, which finds what to stat. The
    /// plan that is swept never sets it, and treats them as young.
    pub unstated_are_old: bool,
}

/// Why a key is deleted.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Revision link of a manifest no tag reaches (`--delete-untagged`).
    UntaggedManifest,
    /// Tag-index entry of a collected manifest.
    UntaggedTagIndex,
    /// Revision link whose manifest blob is gone.
    DanglingRevision,
    /// Tag-index entry whose manifest blob is gone.
    DanglingTagIndex,
    /// Tag (current link and history) whose current manifest is gone.
    DanglingTag,
    /// Blob that no kept manifest references.
    UnreferencedBlob,
    /// `_layers` link whose blob is gone or deleted.
    DanglingLayerLink,
    /// Upload idle for longer than `--upload-max-age`.
    StaleUpload,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::UntaggedManifest,
        Reason::UntaggedTagIndex,
        Reason::DanglingRevision,
        Reason::DanglingTagIndex,
        Reason::DanglingTag,
        Reason::UnreferencedBlob,
        Reason::DanglingLayerLink,
        Reason::StaleUpload,
    ];

    /// Sweep order. Manifest links go first, so that nothing the registry can
    /// still serve points at a blob being deleted; layer links go after blobs,
    /// so that a client probing a layer through its repository sees it gone only
    /// once its data is gone. Stale uploads are bound to neither and go with
    /// the first phase: each phase ends in a partial batch, and that one
    /// usually has room for them (a DELETE fewer than a phase of their own).
    /// The sweep fills what room is left with later deletions that wait for
    /// nothing still to come (`phases`).
    ///
    /// Dangling tags go last: a tag that names no manifest serves nothing, so
    /// nothing waits for it, and the sweep looks at each one's `current/link`
    /// just before: a tag moved during the run (a rollback onto a manifest of
    /// its history) is kept, and the look after the sweep sees it (deleted
    /// with the rest, it would leave nothing to see).
    pub fn phase(self) -> u8 {
        match self {
            Reason::UntaggedManifest
            | Reason::UntaggedTagIndex
            | Reason::DanglingRevision
            | Reason::DanglingTagIndex
            | Reason::StaleUpload => 0,
            Reason::UnreferencedBlob => 1,
            Reason::DanglingLayerLink => 2,
            Reason::DanglingTag => 3,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Reason::UntaggedManifest => "untagged manifest revisions",
            Reason::UntaggedTagIndex => "tag history entries of untagged manifests",
            Reason::DanglingRevision => "revision links to missing manifests",
            Reason::DanglingTagIndex => "tag history entries of missing manifests",
            Reason::DanglingTag => "tag links to missing manifests",
            Reason::UnreferencedBlob => "unreferenced blobs",
            Reason::DanglingLayerLink => "layer links to missing blobs",
            Reason::StaleUpload => "stale upload files",
        }
    }
}

/// What a deletion removes, by ids into the inventory: keys are rendered only
/// when a batch is sent, so a plan of millions of deletions stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Blob(DigestId),
    Revision {
        repo: u32,
        digest: DigestId,
    },
    TagCurrent {
        repo: u32,
        tag: u32,
    },
    TagIndex {
        repo: u32,
        tag: u32,
        digest: DigestId,
    },
    LayerLink {
        repo: u32,
        digest: DigestId,
    },
    Upload {
        repo: u32,
        upload: u32,
        part: u32,
    },
}

/// One key to delete, in 8 bytes: a plan holds one per key (443,000 at a
/// million keys under `--delete-untagged`), and the enum pair would take 20. The
/// first word holds the target's kind (3 bits), the reason (3 bits) and the
/// repository id (26 bits); the second the one id that completes the target: a
/// digest, a tag, or, for a tag history entry and an upload part, its place in
/// the repository's `history` and in its uploads' parts (which the inventory
/// turns back into tag and digest, upload and part).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Deletion([u32; 2]);

const REPO_BITS: u32 = 26;

impl Deletion {
    pub fn new(inv: &Inventory, target: Target, reason: Reason) -> Self {
        let (kind, repo, id) = match target {
            Target::Blob(digest) => (0, 0, digest),
            Target::Revision { repo, digest } => (1, repo, digest),
            Target::TagCurrent { repo, tag } => (2, repo, tag),
            Target::TagIndex { repo, tag, digest } => {
                let entry = inv.repositories[repo as usize].history_entry(tag, digest);
                (
                    3,
                    repo,
                    entry.expect("a tag history entry the listing found"),
                )
            }
            Target::LayerLink { repo, digest } => (4, repo, digest),
            Target::Upload { repo, upload, part } => (
                5,
                repo,
                inv.repositories[repo as usize].upload_part_number(upload, part),
            ),
        };
        assert!(
            repo < 1 << REPO_BITS,
            "a registry of fewer than 2^26 repositories"
        );
        Deletion([kind << 29 | (reason as u32) << REPO_BITS | repo, id])
    }

    pub fn target(&self, inv: &Inventory) -> Target {
        let [head, id] = self.0;
        let repo = head & ((1 << REPO_BITS) - 1);
        match head >> 29 {
            0 => Target::Blob(id),
            1 => Target::Revision { repo, digest: id },
            2 => Target::TagCurrent { repo, tag: id },
            3 => {
                let h = inv.repositories[repo as usize].history[id as usize];
                Target::TagIndex {
                    repo,
                    tag: h.tag,
                    digest: h.link.digest,
                }
            }
            4 => Target::LayerLink { repo, digest: id },
            _ => {
                let (upload, part) = inv.repositories[repo as usize].upload_part_at(id);
                Target::Upload { repo, upload, part }
            }
        }
    }

    pub fn reason(&self) -> Reason {
        // `ALL` lists the reasons in declaration order, so a reason's
        // discriminant is its index there
        Reason::ALL[(self.0[0] >> REPO_BITS & 7) as usize]
    }
}

impl std::fmt::Debug for Deletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deletion")
            .field("kind", &(self.0[0] >> 29))
            .field("id", &self.0[1])
            .field("reason", &self.reason())
            .finish()
    }
}

impl Inventory {
    /// The bytes a deletion frees: a blob's or an upload part's size.
    pub fn bytes_of(&self, target: &Target) -> u64 {
        match *target {
            Target::Blob(d) => self.blob(d).map_or(0, |b| b.size),
            Target::Upload { repo, upload, part } => {
                self.repositories[repo as usize].uploads[upload as usize].parts[part as usize].size
            }
            _ => 0,
        }
    }

    /// The storage key a deletion removes.
    pub fn key_of(&self, target: &Target) -> String {
        let repo = |r: u32| self.repositories[r as usize].name.as_str();
        let tag = |r: u32, t: u32| self.repositories[r as usize].tag_name(t);
        match *target {
            Target::Blob(d) => layout::blob_data_key(self.digests.get(d)),
            Target::Revision { repo: r, digest } => {
                layout::revision_key(repo(r), self.digests.get(digest))
            }
            Target::TagCurrent { repo: r, tag: t } => layout::tag_current_key(repo(r), tag(r, t)),
            Target::TagIndex {
                repo: r,
                tag: t,
                digest,
            } => layout::tag_index_key(repo(r), tag(r, t), self.digests.get(digest)),
            Target::LayerLink { repo: r, digest } => {
                layout::layer_link_key(repo(r), self.digests.get(digest))
            }
            Target::Upload {
                repo: r,
                upload,
                part,
            } => {
                let u = &self.repositories[r as usize].uploads[upload as usize];
                layout::upload_key(repo(r), &u.uuid, &u.parts[part as usize].part)
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Sorted by sweep phase.
    pub deletions: Vec<Deletion>,
    /// Repositories with nothing left in them after the sweep.
    pub empty_repositories: Vec<String>,
    /// Empty directories the registry (or an earlier run) left behind, older than
    /// the fence, below the structural ones (filesystems only): indexes into the
    /// inventory's `empty_dirs`.
    pub empty_dirs: Vec<u32>,
    /// Their parents that may be left empty in turn, deepest first.
    pub empty_dir_parents: Vec<String>,
    pub remove_empty_repositories: bool,
    pub kept_blobs: u64,
    /// `None` when a kept blob was listed by name only (a filesystem's
    /// listing sizes only the blobs the plan would delete).
    pub kept_blob_bytes: Option<u64>,
    /// Objects that would have been deleted but are younger than `--min-age`.
    pub spared_young: u64,
    pub warnings: Vec<Warning>,
    /// Blobs the plan deletes that no manifest link it deletes names or
    /// reaches: the sweep may delete them with its first phase (`phases`).
    /// Empty in a plan made by hand: then every blob waits for that phase.
    pub early_blobs: DigestSet,
}

impl Plan {
    pub fn deleted_blobs(&self) -> impl Iterator<Item = &Deletion> {
        self.deletions
            .iter()
            .filter(|d| d.reason() == Reason::UnreferencedBlob)
    }

    /// The ids of the blobs the plan deletes.
    pub fn deleted_blob_ids<'a>(
        &'a self,
        inv: &'a Inventory,
    ) -> impl Iterator<Item = DigestId> + 'a {
        self.deleted_blobs().filter_map(|d| {
            if let Target::Blob(id) = d.target(inv) {
                Some(id)
            } else {
                None
            }
        })
    }

    /// Where the plan deletes `target`, if it does: a binary search, the
    /// deletions being sorted by sweep phase and target (`plan` sorts them,
    /// and taking some out keeps the order), and a target's kind saying its
    /// phase.
    pub fn find(&self, inv: &Inventory, target: Target) -> Option<usize> {
        let search = |phase: u8| {
            self.deletions
                .binary_search_by(|d| (d.reason().phase(), d.target(inv)).cmp(&(phase, target)))
                .ok()
        };
        match target {
            Target::Blob(_) => search(Reason::UnreferencedBlob.phase()),
            Target::LayerLink { .. } => search(Reason::DanglingLayerLink.phase()),
            Target::Revision { .. } => search(Reason::DanglingRevision.phase()),
            Target::TagCurrent { .. } => search(Reason::DanglingTag.phase()),
            // a history entry goes alone (untagged, or naming a missing
            // manifest) or with its dangling tag
            Target::TagIndex { .. } => search(Reason::UntaggedTagIndex.phase())
                .or_else(|| search(Reason::DanglingTag.phase())),
            Target::Upload { .. } => search(Reason::StaleUpload.phase()),
        }
    }

    /// The deletions by sweep phase, then as their keys nest in the layout:
    /// the order a report and a quarantine record list them in. The plan's
    /// own order follows digest ids, which the concurrent listing hands out
    /// in the order keys arrive, so two dry runs of one registry would list
    /// the same deletions in a different order and not compare equal. Costs
    /// a permutation, 4 bytes a deletion (`into_key_order` costs none).
    pub fn in_key_order<'a>(&'a self, inv: &'a Inventory) -> impl Iterator<Item = Deletion> + 'a {
        let mut order: Vec<u32> = (0..self.deletions.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            let at = |i: u32| KeyOrder::of(inv, &self.deletions[i as usize]);
            at(a).cmp(&at(b))
        });
        order.into_iter().map(|i| self.deletions[i as usize])
    }

    /// The deletions in `in_key_order`'s order, sorted in place: for the
    /// report, written last, when the plan is searched no more (at a million
    /// keys the report is written near the run's peak memory).
    pub fn into_key_order(self, inv: &Inventory) -> Vec<Deletion> {
        let mut deletions = self.deletions;
        deletions.sort_unstable_by(|a, b| KeyOrder::of(inv, a).cmp(&KeyOrder::of(inv, b)));
        deletions
    }
}

/// A deletion's place in `Plan::in_key_order`, borrowed from the inventory
/// (sorting allocates nothing): the sweep phase, then the key's bytes as the
/// layout writes them, compared without writing the key. Blobs have no
/// repository and come first (`blobs/` sorts before `repositories/`); a
/// repository key is compared from the repository's name on, so that a
/// nested repository (`a/0x/…`) and a name that starts another (`a-b/…`)
/// fall where their keys do. What follows a digest in a key is the same for
/// every key of its kind, and kinds differ before it: it is left out.
#[derive(PartialEq, Eq)]
struct KeyOrder<'a> {
    phase: u8,
    repo: Option<&'a str>,
    /// What follows the repository's name, up to the digest.
    parts: [&'a str; 4],
    digest: Option<&'a crate::digest::Digest>,
}

impl<'a> KeyOrder<'a> {
    fn of(inv: &'a Inventory, d: &Deletion) -> Self {
        let repo = |r: u32| &inv.repositories[r as usize];
        let digest = |id: DigestId| Some(inv.digests.get(id));
        let (repo, parts, digest): (Option<&str>, [&str; 4], _) = match d.target(inv) {
            Target::Blob(id) => (None, [""; 4], digest(id)),
            Target::LayerLink {
                repo: r,
                digest: id,
            } => (
                Some(&repo(r).name),
                ["/_layers/sha256/", "", "", ""],
                digest(id),
            ),
            Target::Revision {
                repo: r,
                digest: id,
            } => (
                Some(&repo(r).name),
                ["/_manifests/revisions/sha256/", "", "", ""],
                digest(id),
            ),
            Target::TagCurrent { repo: r, tag } => (
                Some(&repo(r).name),
                [
                    "/_manifests/tags/",
                    repo(r).tag_name(tag),
                    "/current/link",
                    "",
                ],
                None,
            ),
            Target::TagIndex {
                repo: r,
                tag,
                digest: id,
            } => (
                Some(&repo(r).name),
                [
                    "/_manifests/tags/",
                    repo(r).tag_name(tag),
                    "/index/sha256/",
                    "",
                ],
                digest(id),
            ),
            Target::Upload {
                repo: r,
                upload,
                part,
            } => {
                let u = &repo(r).uploads[upload as usize];
                (
                    Some(&repo(r).name),
                    ["/_uploads/", &u.uuid, "/", &u.parts[part as usize].part],
                    None,
                )
            }
        };
        KeyOrder {
            phase: d.reason().phase(),
            repo,
            parts,
            digest,
        }
    }

    /// The key from the repository's name up to the digest, in pieces.
    fn pieces(&self) -> [&'a [u8]; 5] {
        let [a, b, c, d] = self.parts.map(str::as_bytes);
        [self.repo.unwrap_or_default().as_bytes(), a, b, c, d]
    }
}

impl Ord for KeyOrder<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        (self.phase, self.repo.is_some())
            .cmp(&(other.phase, other.repo.is_some()))
            .then_with(|| {
                let (a, b) = (self.pieces(), other.pieces());
                match cmp_concatenated(&a, &b) {
                    Concatenated::Differ(order) => order,
                    // the same key up to the digest, whose hex digits sort
                    // as its bytes do
                    Concatenated::Same => {
                        let digest = |k: &Self| k.digest.map(|d| d.as_bytes());
                        digest(self).cmp(&digest(other))
                    }
                    // one key's digest faces the other's text (no two keys
                    // of the layout's names do): compare its hex digits
                    Concatenated::Prefix(_) => {
                        let (ha, hb) = (
                            self.digest.map(|d| d.hex_digits()),
                            other.digest.map(|d| d.hex_digits()),
                        );
                        let da = ha.as_ref().map_or(&b""[..], |h| h.as_str().as_bytes());
                        let db = hb.as_ref().map_or(&b""[..], |h| h.as_str().as_bytes());
                        match cmp_concatenated(
                            &[a[0], a[1], a[2], a[3], a[4], da],
                            &[b[0], b[1], b[2], b[3], b[4], db],
                        ) {
                            Concatenated::Differ(order) => order,
                            Concatenated::Same => Ordering::Equal,
                            Concatenated::Prefix(order) => order,
                        }
                    }
                }
            })
    }
}

/// How the concatenations of two lists of byte strings compare.
enum Concatenated {
    /// They differ at a byte both have.
    Differ(std::cmp::Ordering),
    /// They are the same.
    Same,
    /// One is the start of the other: `Less` when the first is.
    Prefix(std::cmp::Ordering),
}

/// Compares the concatenations of two lists of byte strings, without making
/// them.
fn cmp_concatenated(a: &[&[u8]], b: &[&[u8]]) -> Concatenated {
    use std::cmp::Ordering;
    let mut a = a.iter().copied().filter(|s| !s.is_empty());
    let mut b = b.iter().copied().filter(|s| !s.is_empty());
    let (mut x, mut y): (&[u8], &[u8]) = (&[], &[]);
    loop {
        if x.is_empty() {
            x = a.next().unwrap_or_default();
        }
        if y.is_empty() {
            y = b.next().unwrap_or_default();
        }
        match (x.is_empty(), y.is_empty()) {
            (true, true) => return Concatenated::Same,
            (true, false) => return Concatenated::Prefix(Ordering::Less),
            (false, true) => return Concatenated::Prefix(Ordering::Greater),
            (false, false) => {}
        }
        let n = x.len().min(y.len());
        match x[..n].cmp(&y[..n]) {
            Ordering::Equal => (x, y) = (&x[n..], &y[n..]),
            unequal => return Concatenated::Differ(unequal),
        }
    }
}

impl PartialOrd for KeyOrder<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The blobs kept manifests need, across repositories: each kept manifest itself,
/// its config and layers, and its children's manifest blobs. A child's own
/// layers are kept through the child's revision (see `kept_in_repository`).
fn keep_manifest(marks: &Marks, kept: &mut DigestSet, d: DigestId) {
    kept.insert(d);
    if let Some(refs) = marks.manifest(d) {
        for b in refs
            .blobs
            .iter()
            .chain(refs.children)
            .chain(marks.other_algorithm_blobs(d))
        {
            kept.insert(*b);
        }
    }
}

/// Keeps what the children of `kept_indexes` that `repo` links only through
/// `_layers` reference (2.8 serves a manifest through its repository's layer
/// link when it has no revision link: 2.1.0 linked manifests so), down
/// through such children that are indexes themselves. `indexes` are the
/// manifests that may list children (`Marks::listing_children`: manifests
/// pinned by scan among them). Rare: the walk costs a look at each kept
/// index's children.
fn keep_layer_linked_children(
    repo: &Repository,
    marks: &Marks,
    indexes: &DigestSet,
    kept_indexes: impl Iterator<Item = DigestId>,
    kept: &mut DigestSet,
) {
    let mut stack: Vec<DigestId> = kept_indexes.collect();
    let mut walked: BTreeSet<DigestId> = BTreeSet::new();
    while let Some(m) = stack.pop() {
        let Some(refs) = marks.manifest(m) else {
            continue;
        };
        for c in refs.children.iter().copied() {
            if repo.linked_only_through_layers(c) && walked.insert(c) {
                keep_manifest(marks, kept, c);
                if indexes.contains(c) {
                    stack.push(c);
                }
            }
        }
    }
}

/// The revisions a repository keeps. Without `delete_untagged`: all of them.
/// With it: what its tags point at, the children of kept indexes that are
/// revisions here (recursively), untagged referrers whose `subject` is kept,
/// revisions younger than the fence, and revisions that could not be parsed.
/// Returns also whether the repository had to be kept whole because a tag link
/// could not be read.
fn kept_in_repository(
    repo: &Repository,
    targets: &[TagTarget],
    marks: &Marks,
    opts: &PlanOptions,
    young: impl Fn(Secs) -> bool,
) -> (Vec<DigestId>, bool) {
    let uncertain = targets.iter().any(|t| matches!(t, TagTarget::Junk(_)));
    if !opts.delete_untagged || uncertain {
        return (
            repo.revisions.iter().map(|l| l.digest).collect(),
            uncertain && opts.delete_untagged,
        );
    }
    let mut referrers: HashMap<DigestId, Vec<DigestId>> = HashMap::new();
    let mut roots: Vec<DigestId> = targets.iter().filter_map(|t| t.known()).collect();
    for l in &repo.revisions {
        if let Some(refs) = marks.manifest(l.digest) {
            if let Some(subject) = refs.subject {
                referrers.entry(subject).or_default().push(l.digest);
            }
            if refs.is_pinned_by_scan() {
                roots.push(l.digest); // cannot tell what it is: keep it
            }
        }
        if young(l.modified) {
            roots.push(l.digest);
        }
    }
    // A tag written since the fence is evidence of a push or a tag move in
    // flight: what its history names stays.
    roots.extend(
        repo.history
            .iter()
            .filter(|h| young(h.link.modified))
            .map(|h| h.link.digest),
    );
    let mut kept = DigestSet::default();
    let mut out = Vec::new();
    while let Some(d) = roots.pop() {
        // A manifest linked here only through `_layers` is served through
        // that link (2.8 tries it after the revision link): it has no
        // revision to keep, but what it lists and what refers to it are
        // reached through it, as through a revision (a tagged index whose
        // layer-linked child index lists an untagged revision).
        let revision = repo.has_revision(d);
        if !(revision || repo.has_layer_link(d)) || !kept.insert(d) {
            continue;
        }
        if revision {
            out.push(d);
        }
        if let Some(refs) = marks.manifest(d) {
            roots.extend(refs.children.iter().copied());
        }
        if let Some(rs) = referrers.get(&d) {
            roots.extend(rs.iter().copied());
        }
    }
    out.sort_unstable();
    (out, false)
}

impl PlanOptions {
    /// The fence, in whole seconds: objects modified after it are young. Times
    /// are rounded up for objects and down for the fence, and the fence is one
    /// more second back because S3 (and stores like it) report last-modified
    /// truncated to the second: an object written at 10.9 s shows as 10 s, and
    /// must still count as newer than a fence at 10.3 s.
    pub fn fence(&self) -> Secs {
        let floor = self.now_ms.saturating_sub(self.min_age_ms).max(0) / 1000;
        Secs::try_from((floor - 1).max(0)).unwrap_or(Secs::MAX)
    }
}

pub fn plan(inv: &Inventory, marks: &Marks, opts: &PlanOptions) -> Plan {
    let fence = opts.fence();
    let upload_cutoff: Secs =
        Secs::try_from(opts.now_ms.saturating_sub(opts.upload_max_age_ms).max(0) / 1000)
            .unwrap_or(Secs::MAX);
    let young = |t: Secs| t > fence && !(opts.unstated_are_old && t == NOT_STATED);
    let mut out = Plan {
        remove_empty_repositories: opts.delete_empty_repositories,
        kept_blob_bytes: Some(0),
        ..Plan::default()
    };

    // 1. What each repository keeps, and the blobs all kept manifests reach.
    let mut kept = DigestSet::with_len(inv.digests.len());
    let indexes = marks.listing_children(inv.digests.len());
    let mut kept_by_repo: Vec<Vec<DigestId>> = Vec::with_capacity(inv.repositories.len());
    for (ri, repo) in inv.repositories.iter().enumerate() {
        let targets = &marks.tag_targets[ri];
        let (repo_kept, uncertain) = kept_in_repository(repo, targets, marks, opts, young);
        if uncertain {
            out.warnings.push(Warning::new(
                &layout::repository_prefix(&repo.name),
                "a tag link could not be read: every revision of this repository is kept",
            ));
        }
        for d in &repo_kept {
            keep_manifest(marks, &mut kept, *d);
        }
        // A layer link written since the fence is a push in flight (an upload,
        // a cross-repository mount, or a client that found the blob by HEAD and
        // will now put a manifest naming it): its blob stays, however old.
        for l in repo.layers.iter().filter(|l| young(l.modified)) {
            kept.insert(l.digest);
        }
        // A tag pointing at a digest with no revision here cannot be served
        // by v3, but its blob is not ours to judge garbage: keep it. 2.8
        // serves it through a `_layers` link (what 2.1.0 wrote for
        // manifests), and then what it references, read in the mark phase,
        // is kept with it.
        for id in targets.iter().filter_map(|t| t.known()) {
            if repo.has_layer_link(id) {
                keep_manifest(marks, &mut kept, id);
            } else {
                kept.insert(id);
            }
        }
        // An index's child linked here only through `_layers` is served
        // through it too, as the index's own manifest may be: what it
        // references (read in the mark phase) is kept, and so on down.
        let kept_indexes = repo_kept
            .iter()
            .copied()
            .chain(targets.iter().filter_map(|t| t.known()))
            .filter(|m| indexes.contains(*m));
        keep_layer_linked_children(repo, marks, &indexes, kept_indexes, &mut kept);
        kept_by_repo.push(repo_kept);
    }

    // 2. Blobs nothing keeps.
    let mut deleted_blobs = DigestSet::with_len(inv.digests.len());
    for (id, info) in inv.blobs() {
        let spared = !kept.contains(id) && young(info.modified);
        if kept.contains(id) || spared {
            out.spared_young += u64::from(spared);
            out.kept_blobs += 1;
            out.kept_blob_bytes = out
                .kept_blob_bytes
                .zip(info.known_size())
                .map(|(a, b)| a + b);
        } else {
            deleted_blobs.insert(id);
            out.deletions.push(Deletion::new(
                inv,
                Target::Blob(id),
                Reason::UnreferencedBlob,
            ));
        }
    }
    let present_after = |d: DigestId| inv.has_blob(d) && !deleted_blobs.contains(d);

    // 3. Links and uploads, per repository.
    for (ri, repo) in inv.repositories.iter().enumerate() {
        let r = ri as u32;
        let repo_kept = &kept_by_repo[ri];
        let targets = &marks.tag_targets[ri];
        let mut spared = 0u64;
        let mut remove =
            |deletions: &mut Vec<Deletion>, target: Target, reason: Reason, t: Secs| {
                if young(t) {
                    spared += 1;
                    false
                } else {
                    deletions.push(Deletion::new(inv, target, reason));
                    true
                }
            };
        let collected = |d: DigestId| opts.delete_untagged && repo_kept.binary_search(&d).is_err();
        let deletions = &mut out.deletions;

        let mut revisions_left = repo.revisions.len();
        for l in &repo.revisions {
            let reason = if collected(l.digest) && inv.has_blob(l.digest) {
                Some(Reason::UntaggedManifest)
            } else if !present_after(l.digest) {
                Some(Reason::DanglingRevision)
            } else {
                None
            };
            if let Some(reason) = reason {
                if remove(
                    deletions,
                    Target::Revision {
                        repo: r,
                        digest: l.digest,
                    },
                    reason,
                    l.modified,
                ) {
                    revisions_left -= 1;
                }
            }
        }

        let mut tags_left = 0;
        for (ti, tag) in repo.tags.iter().enumerate() {
            let t = ti as u32;
            let history = history_of(repo, t);
            let current = match &targets[ti] {
                TagTarget::Known(id) => Some(Some(*id)),
                TagTarget::Unknown(_) => Some(None),
                _ => None,
            };
            let all_old = tag.current.is_none_or(|m| !young(m))
                && history.iter().all(|h| !young(h.link.modified));
            if let (Some(cur), Some(cur_t)) = (current, tag.current) {
                if !cur.is_some_and(present_after) && all_old {
                    remove(
                        deletions,
                        Target::TagCurrent { repo: r, tag: t },
                        Reason::DanglingTag,
                        cur_t,
                    );
                    for h in history {
                        remove(
                            deletions,
                            Target::TagIndex {
                                repo: r,
                                tag: t,
                                digest: h.link.digest,
                            },
                            Reason::DanglingTag,
                            h.link.modified,
                        );
                    }
                    continue;
                }
            }
            let mut entries_left = 0;
            for h in history {
                let d = h.link.digest;
                let reason = if current == Some(Some(d)) {
                    None
                } else if collected(d) {
                    Some(Reason::UntaggedTagIndex)
                } else if !present_after(d) {
                    Some(Reason::DanglingTagIndex)
                } else {
                    None
                };
                let removed = match reason {
                    Some(reason) => remove(
                        deletions,
                        Target::TagIndex {
                            repo: r,
                            tag: t,
                            digest: d,
                        },
                        reason,
                        h.link.modified,
                    ),
                    None => false,
                };
                if !removed {
                    entries_left += 1;
                }
            }
            if tag.current.is_some() || entries_left > 0 {
                tags_left += 1;
            }
        }

        let mut layers_left = repo.layers.len();
        for l in &repo.layers {
            if !present_after(l.digest)
                && remove(
                    deletions,
                    Target::LayerLink {
                        repo: r,
                        digest: l.digest,
                    },
                    Reason::DanglingLayerLink,
                    l.modified,
                )
            {
                layers_left -= 1;
            }
        }

        let mut uploads_left = 0;
        for (ui, upload) in repo.uploads.iter().enumerate() {
            let newest = upload.newest();
            if newest < upload_cutoff && !young(newest) {
                for (pi, part) in upload.parts.iter().enumerate() {
                    let target = Target::Upload {
                        repo: r,
                        upload: ui as u32,
                        part: pi as u32,
                    };
                    remove(deletions, target, Reason::StaleUpload, part.modified);
                }
            } else {
                uploads_left += 1;
            }
        }

        out.spared_young += spared;
        let empty = revisions_left == 0
            && tags_left == 0
            && layers_left == 0
            && uploads_left == 0
            && repo.alt_links.is_empty()
            && repo.stray_keys == 0;
        if empty {
            out.empty_repositories.push(repo.name.clone());
        }
    }

    // A directory may be empty only because a registry write is about to fill it;
    // those are young, and stay.
    let mut parents: BTreeSet<String> = BTreeSet::new();
    for i in 0..inv.empty_dirs.len() {
        let (removable, modified) = inv.empty_dirs.removable_and_modified(i);
        if !removable || young(modified) {
            continue;
        }
        out.empty_dirs.push(i as u32);
        let d = inv.empty_dir(i);
        // its parents may be left empty by its removal (a tag directory whose
        // `current/` and `index/` are both empty)
        let mut dir = &d.key[..];
        while let Some(i) = dir.rfind('/') {
            dir = &dir[..i];
            if !layout::is_removable_empty_dir(dir) || !parents.insert(dir.to_string()) {
                break;
            }
        }
    }
    out.empty_dir_parents = parents.into_iter().collect();
    out.empty_dir_parents
        .sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));

    out.deletions
        .sort_unstable_by_key(|d| (d.reason().phase(), d.target(inv)));
    out.early_blobs = early_blobs(inv, marks, &out);
    out
}

/// The deleted blobs that wait for no manifest link. While a revision link,
/// a tag or a tag history entry stands, the registry may serve the manifest
/// it names and, through it, its config, layers, children (and theirs) and
/// subject: those blobs go only after the first phase has removed the links
/// (a tag history entry is not served, but is kept to the same rule).
fn early_blobs(inv: &Inventory, marks: &Marks, plan: &Plan) -> DigestSet {
    let mut reached = DigestSet::with_len(inv.digests.len());
    let mut stack: Vec<DigestId> = Vec::new();
    for d in plan.deletions.iter().filter(|d| d.reason().phase() == 0) {
        match d.target(inv) {
            Target::Revision { digest, .. } | Target::TagIndex { digest, .. } => stack.push(digest),
            Target::TagCurrent { repo, tag } => {
                stack.extend(marks.tag_targets[repo as usize][tag as usize].known())
            }
            Target::Blob(_) | Target::LayerLink { .. } | Target::Upload { .. } => {}
        }
    }
    while let Some(d) = stack.pop() {
        if !reached.insert(d) {
            continue;
        }
        if let Some(refs) = marks.manifest(d) {
            stack.extend(
                refs.blobs
                    .iter()
                    .chain(refs.children)
                    .chain(marks.other_algorithm_blobs(d))
                    .chain(&refs.subject),
            );
        }
    }
    let mut early = DigestSet::with_len(inv.digests.len());
    for id in plan
        .deleted_blob_ids(inv)
        .filter(|id| !reached.contains(*id))
    {
        early.insert(id);
    }
    early
}

/// A tag's history entries (the repository's history is sorted by tag).
fn history_of(repo: &Repository, tag: u32) -> &[crate::inventory::TagHistory] {
    let start = repo.history.partition_point(|h| h.tag < tag);
    let end = repo.history.partition_point(|h| h.tag <= tag);
    &repo.history[start..end]
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
