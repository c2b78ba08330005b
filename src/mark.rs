//! The mark phase's reads: tag `current/link` files, alternate-algorithm links,
//! and every manifest a repository links as a revision, each read once,
//! concurrently. What to keep is decided later by the planner, from these facts.
//!
//! A manifest's references are kept as digest ids of blobs the listing saw: a
//! digest that is not in storage (a foreign layer, a child deleted long ago) can
//! be neither kept nor deleted, so it is not recorded.

use std::collections::HashMap;

use futures::StreamExt;
use sha2::{Digest as _, Sha256};

use crate::cache::ManifestCache;
use crate::digest::Digest;
use crate::digest_table::{DigestId, DigestSet};
use crate::inventory::Inventory;
use crate::layout;
use crate::manifest::{self, ManifestKind, References, Undecodable};
use crate::progress::Progress;
use crate::report::Warning;
use crate::storage::{get_many, Storage, StorageError};

/// Link files hold 71 bytes; anything much larger is not a link.
pub const LINK_READ_LIMIT: u64 = 4096;

#[derive(Debug, Clone)]
pub struct MarkOptions {
    pub concurrency: usize,
    /// A manifest larger than this is refused (the run stops, nothing deleted).
    pub max_manifest_bytes: u64,
    /// Where manifests read before are kept (object stores).
    pub cache: Option<ManifestCache>,
}

/// What a tag's `current/link` says, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagLink {
    Digest(Digest),
    /// Unreadable content: the tag's repository is then treated conservatively.
    Junk(String),
    /// Listed, then gone before it could be read (deleted concurrently), or the
    /// tag has no `current/link`.
    None,
}

/// What a tag's `current/link` says, as held for the run: 8 bytes per tag
/// rather than a full digest, the rare digests and reasons on the side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagTarget {
    /// A digest the listing saw: its id in the inventory's digest table.
    Known(DigestId),
    /// A digest the listing did not see (the manifest is gone):
    /// `Marks::unknown_targets[i]`.
    Unknown(u32),
    /// Unreadable content (`Marks::junk_reasons[i]`): the tag's repository is
    /// then treated conservatively.
    Junk(u32),
    /// Listed, then gone before it could be read (deleted concurrently), or the
    /// tag has no `current/link`.
    None,
}

impl TagTarget {
    /// The digest id, when the link names a digest the listing saw.
    pub fn known(self) -> Option<DigestId> {
        if let TagTarget::Known(id) = self {
            Some(id)
        } else {
            None
        }
    }
}

/// One manifest's references, as ranges of `Marks::refs`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The manifest.
    digest: DigestId,
    kind: ManifestKind,
    /// `NO_SUBJECT` or the id of the manifest's `subject`.
    subject: DigestId,
    start: u32,
    blobs: u32,
    children: u32,
}

const NO_SUBJECT: DigestId = DigestId::MAX;

/// What a manifest references, among the digests in storage.
#[derive(Debug, Clone, Copy)]
pub struct ManifestRefs<'a> {
    pub kind: ManifestKind,
    /// Config and layers (schema1: fsLayers); for unparseable manifests every
    /// digest mentioned.
    pub blobs: &'a [DigestId],
    /// Child manifests of an index (for unparseable ones, every digest mentioned).
    pub children: &'a [DigestId],
    pub subject: Option<DigestId>,
}

impl ManifestRefs<'_> {
    pub fn is_pinned_by_scan(&self) -> bool {
        matches!(self.kind, ManifestKind::Unknown | ManifestKind::Unparseable)
    }
}

#[derive(Debug, Default)]
pub struct Marks {
    /// Per repository (inventory order), per tag (inventory order).
    pub tag_targets: Vec<Vec<TagTarget>>,
    unknown_targets: Vec<Digest>,
    junk_reasons: Vec<String>,
    /// One per manifest read, sorted by digest once `index` has run (a sparse
    /// index: an entry per digest id would cost 4 bytes for every blob).
    entries: Vec<Entry>,
    /// An entry was recorded out of order since the last `index`.
    unsorted: bool,
    refs: Vec<DigestId>,
    /// Manifests' references under another algorithm (`sha512:…`), resolved.
    other_algorithm: HashMap<DigestId, Vec<DigestId>>,
    /// `sha512:…` (and other algorithms) -> the sha256 blob their link names.
    pub alternate_digests: HashMap<String, Digest>,
    pub warnings: Vec<Warning>,
    pub manifest_bytes_read: u64,
    /// Tags whose target was known from the listing's ETag, without a read.
    pub tags_matched_by_etag: u64,
    /// Manifests found in the local cache, without a read.
    pub manifest_cache_hits: u64,
    /// (manifest, digest) for each config, layer or child a parsed manifest
    /// names that is not in storage: rare (foreign layers, damage), and what
    /// `fsck` needs to name broken images. Manifests pinned by scan are left
    /// out: their digests are mentions, not references.
    pub missing_refs: Vec<(DigestId, Digest)>,
    /// Revisions' blobs listed by name only (`Leaf::named`) whose directory
    /// turned out to hold no `data`: missing, not vanished (see
    /// `Inventory::forget_blob`).
    pub missing_blobs: Vec<DigestId>,
    /// (manifest, subject) for each `subject` the listing did not see: a
    /// referrer pushed before its subject, which may arrive during the run.
    foreign_subjects: Vec<(DigestId, Digest)>,
    /// Manifest blobs whose bytes do not hash to their digest, kept by
    /// `mark_reporting_corrupt` (`fsck`); `mark` stops on the first instead.
    /// Their references are unknown: none is recorded as theirs.
    pub corrupt_manifests: Vec<CorruptManifest>,
    /// (manifest, why) for each manifest distribution 2.8 cannot decode (it
    /// answers 500 to a GET of one): rare (another registry or a copy tool
    /// wrote them), and what `fsck` needs to name the images that fail. The
    /// collector keeps what they mention like any other manifest's.
    pub undecodable: Vec<(DigestId, Undecodable)>,
}

/// A manifest blob whose content is not its digest's (bit rot, a bad copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptManifest {
    pub id: DigestId,
    /// What its bytes hash to, and how many there are.
    pub actual: Digest,
    pub len: u64,
    /// Blobs in storage whose digest its bytes mention: perhaps its
    /// references, perhaps not (the corruption may be in one of them).
    pub mentions: Vec<DigestId>,
}

impl Marks {
    /// `link` as held: a digest by id when the listing saw it.
    pub fn tag_target(&mut self, inv: &Inventory, link: TagLink) -> TagTarget {
        match link {
            TagLink::Digest(d) => match inv.digests.find(&d) {
                Some(id) => TagTarget::Known(id),
                None => {
                    self.unknown_targets.push(d);
                    TagTarget::Unknown(self.unknown_targets.len() as u32 - 1)
                }
            },
            TagLink::Junk(reason) => {
                self.junk_reasons.push(reason);
                TagTarget::Junk(self.junk_reasons.len() as u32 - 1)
            }
            TagLink::None => TagTarget::None,
        }
    }

    /// Sets every tag's target from what its link says (`link_of(repository,
    /// tag)`): how tests build marks without reading links.
    #[cfg(test)]
    pub(crate) fn set_tag_links(
        &mut self,
        inv: &Inventory,
        link_of: impl Fn(&str, &str) -> TagLink,
    ) {
        self.tag_targets = Vec::with_capacity(inv.repositories.len());
        for r in &inv.repositories {
            let row = r
                .tag_names()
                .map(|t| link_of(&r.name, t))
                .map(|l| self.tag_target(inv, l))
                .collect();
            self.tag_targets.push(row);
        }
    }

    /// The digest a tag's link names, whether or not the listing saw it.
    pub fn target_digest(&self, inv: &Inventory, t: TagTarget) -> Option<Digest> {
        match t {
            TagTarget::Known(id) => Some(*inv.digests.get(id)),
            TagTarget::Unknown(i) => Some(self.unknown_targets[i as usize]),
            TagTarget::Junk(_) | TagTarget::None => None,
        }
    }

    /// Why a tag's link could not be used, for a junk one.
    pub fn junk_reason(&self, t: TagTarget) -> Option<&str> {
        if let TagTarget::Junk(i) = t {
            Some(&self.junk_reasons[i as usize])
        } else {
            None
        }
    }

    /// The references of manifest `id`, if it was read.
    pub fn manifest(&self, id: DigestId) -> Option<ManifestRefs<'_>> {
        let e = if self.unsorted {
            self.entries.iter().find(|e| e.digest == id)?
        } else {
            &self.entries[self.entries.binary_search_by_key(&id, |e| e.digest).ok()?]
        };
        let (s, b, c) = (e.start as usize, e.blobs as usize, e.children as usize);
        let subject = Some(e.subject).filter(|s| *s != NO_SUBJECT);
        Some(ManifestRefs {
            kind: e.kind,
            blobs: &self.refs[s..s + b],
            children: &self.refs[s + b..s + b + c],
            subject,
        })
    }

    /// Sorts the entries by digest, for lookups by binary search. Called once
    /// the manifests are recorded; until then lookups scan.
    pub fn index(&mut self) {
        if self.unsorted {
            self.entries.sort_unstable_by_key(|e| e.digest);
            self.entries.dedup_by_key(|e| e.digest);
            self.unsorted = false;
        }
    }

    /// The manifests read that may list child manifests, as a set over
    /// `digests` ids: indexes, and manifests pinned by scan, whose every
    /// mentioned digest counts as a child (one of an unknown shape, or one
    /// serde refuses and Go reads, may be an index 2.8 serves).
    pub fn listing_children(&self, digests: usize) -> DigestSet {
        let mut out = DigestSet::with_len(digests);
        for e in self.entries.iter().filter(|e| {
            matches!(
                e.kind,
                ManifestKind::Index | ManifestKind::Unknown | ManifestKind::Unparseable
            )
        }) {
            out.insert(e.digest);
        }
        out
    }

    /// Every manifest the manifests read list as a child (and every digest
    /// one pinned by scan mentions), once for each manifest listing it.
    pub fn listed_children(&self) -> impl Iterator<Item = DigestId> + '_ {
        self.children_listed_by(|_| true)
    }

    /// The children that indexes list (not the digests a manifest pinned by
    /// scan mentions), once for each index listing it.
    pub fn index_children(&self) -> impl Iterator<Item = DigestId> + '_ {
        self.children_listed_by(|kind| kind == ManifestKind::Index)
    }

    fn children_listed_by(
        &self,
        lister: impl Fn(ManifestKind) -> bool + 'static,
    ) -> impl Iterator<Item = DigestId> + '_ {
        self.entries
            .iter()
            .filter(move |e| lister(e.kind))
            .flat_map(|e| {
                let start = e.start as usize + e.blobs as usize;
                self.refs[start..start + e.children as usize]
                    .iter()
                    .copied()
            })
    }

    pub fn manifests_read(&self) -> usize {
        self.entries.len()
    }

    /// The manifests read that name a `subject` (signatures, SBOMs,
    /// attestations), by that subject's digest, seen by the listing or not.
    pub fn referrers_by_subject(&self, inv: &Inventory) -> HashMap<Digest, Vec<DigestId>> {
        let mut by_subject: HashMap<Digest, Vec<DigestId>> = HashMap::new();
        let named = self
            .entries
            .iter()
            .filter(|e| e.subject != NO_SUBJECT)
            .map(|e| (e.digest, *inv.digests.get(e.subject)));
        for (referrer, subject) in named.chain(self.foreign_subjects.iter().copied()) {
            by_subject.entry(subject).or_default().push(referrer);
        }
        by_subject
    }

    /// Blobs a manifest names under another algorithm, resolved to stored blobs.
    pub fn other_algorithm_blobs(&self, id: DigestId) -> &[DigestId] {
        self.other_algorithm.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Records `refs` as manifest `id`'s, keeping only digests in storage.
    pub fn record(&mut self, inv: &Inventory, id: DigestId, refs: &References) {
        let stored = |d: &Digest| inv.digests.find(d).filter(|id| inv.has_blob(*id));
        if !refs.is_pinned_by_scan() {
            let missing = refs
                .blobs
                .iter()
                .chain(&refs.children)
                .filter(|d| stored(d).is_none());
            self.missing_refs.extend(missing.map(|d| (id, *d)));
        }
        let start = self.refs.len() as u32;
        self.refs.extend(refs.blobs.iter().filter_map(stored));
        let blobs = self.refs.len() as u32 - start;
        self.refs.extend(refs.children.iter().filter_map(stored));
        let children = self.refs.len() as u32 - start - blobs;
        let subject = refs
            .subject
            .as_ref()
            .and_then(|d| inv.digests.find(d))
            .unwrap_or(NO_SUBJECT);
        if let (Some(d), NO_SUBJECT) = (refs.subject, subject) {
            self.foreign_subjects.push((id, d));
        }
        if let Some(why) = &refs.undecodable {
            self.undecodable.push((id, why.clone()));
        }
        self.unsorted |= self.entries.last().is_some_and(|e| e.digest >= id);
        self.entries.push(Entry {
            digest: id,
            kind: refs.kind,
            subject,
            start,
            blobs,
            children,
        });
        let others: Vec<DigestId> = refs
            .other_algorithm
            .iter()
            .filter_map(|o| self.alternate_digests.get(o))
            .filter_map(stored)
            .collect();
        if !others.is_empty() {
            self.other_algorithm.insert(id, others);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error("reading failed, nothing will be deleted: {0}")]
    Read(StorageError),
    #[error("{key}: blob was listed but is gone now; another collector may be running; nothing will be deleted")]
    Vanished { key: String },
    #[error("{0}; raise --max-manifest-size if this manifest is genuine; nothing will be deleted")]
    TooLarge(StorageError),
    /// The bytes read are not the content the key names: a read cut short that
    /// the store's framing did not catch, or a corrupt blob. Parsing them could
    /// miss references, so the run stops.
    #[error("{key}: content read ({len} bytes) does not match its digest (read cut short, or the blob is corrupt); nothing will be deleted")]
    DigestMismatch { key: String, len: usize },
}

/// `--max-manifest-size` when not given: larger than any manifest a registry
/// serves, small enough that one read of it costs little.
pub const DEFAULT_MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Why a blob read on speculation was kept unread (the mark phase, and the
/// re-check following a link written during the run).
pub const CORRUPT_SPECULATIVE_BLOB: &str = "a manifest of a shape registry-gc does not know \
     mentions this blob, which does not match its digest and is no manifest: kept, unread";

/// The largest manifest distribution 2.8 takes in a PUT (its handler reads
/// at most 4 MiB): a blob larger than that was never pushed as a manifest.
const REGISTRY_MANIFEST_LIMIT: u64 = 4 << 20;

/// Reads what `gc` needs to plan. A manifest whose bytes do not match its
/// digest stops it (`MarkError::DigestMismatch`): its references are unknown.
pub async fn mark(
    storage: &dyn Storage,
    inv: &Inventory,
    opts: &MarkOptions,
    progress: &Progress,
) -> Result<Marks, MarkError> {
    mark_with(storage, inv, opts, progress, OnCorrupt::Stop).await
}

/// As `mark`, but a manifest whose bytes do not match its digest is kept in
/// `Marks::corrupt_manifests` (with no references) and the reads go on: for
/// `fsck`, which reports it. Never for planning deletions.
pub async fn mark_reporting_corrupt(
    storage: &dyn Storage,
    inv: &Inventory,
    opts: &MarkOptions,
    progress: &Progress,
) -> Result<Marks, MarkError> {
    mark_with(storage, inv, opts, progress, OnCorrupt::Keep).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnCorrupt {
    Stop,
    Keep,
}

async fn mark_with(
    storage: &dyn Storage,
    inv: &Inventory,
    opts: &MarkOptions,
    progress: &Progress,
    on_corrupt: OnCorrupt,
) -> Result<Marks, MarkError> {
    let mut marks = Marks {
        tag_targets: inv
            .repositories
            .iter()
            .map(|r| vec![TagTarget::None; r.tags.len()])
            .collect(),
        ..Marks::default()
    };
    read_tags(storage, inv, opts, &mut marks).await?;
    read_alternate_links(storage, inv, opts, &mut marks).await?;
    read_manifests(storage, inv, opts, progress, on_corrupt, &mut marks).await?;
    marks.index();
    Ok(marks)
}

/// Tag targets known without reading: a tag link holds `sha256:<hex>` of a
/// revision of its own repository (the registry writes the revision first), so
/// when the listing's ETag equals the MD5 of that exact text for one of the
/// repository's revisions, that is the content. Any other ETag (multipart, KMS,
/// Azure's opaque ones, a link with a newline) matches nothing and is read.
/// Returns the (repository, tag) indexes still to read.
fn tags_known_by_etag(inv: &Inventory, marks: &mut Marks) -> Vec<(usize, usize)> {
    use md5::{Digest as _, Md5};
    let mut unknown = Vec::new();
    for (ri, r) in inv.repositories.iter().enumerate() {
        let by_md5: HashMap<[u8; 16], Digest> = if r
            .tags
            .iter()
            .enumerate()
            .any(|(ti, t)| t.current.is_some() && r.tag_md5(ti as u32).is_some())
        {
            r.revisions
                .iter()
                .map(|l| {
                    let d = *inv.digests.get(l.digest);
                    (Md5::digest(d.to_string().as_bytes()).into(), d)
                })
                .collect()
        } else {
            HashMap::new()
        };
        for (ti, _) in r
            .tags
            .iter()
            .enumerate()
            .filter(|(_, t)| t.current.is_some())
        {
            match r.tag_md5(ti as u32).and_then(|m| by_md5.get(&m)) {
                Some(d) => {
                    marks.tags_matched_by_etag += 1;
                    marks.tag_targets[ri][ti] = marks.tag_target(inv, TagLink::Digest(*d));
                }
                None => unknown.push((ri, ti)),
            }
        }
    }
    unknown
}

async fn read_tags(
    storage: &dyn Storage,
    inv: &Inventory,
    opts: &MarkOptions,
    marks: &mut Marks,
) -> Result<(), MarkError> {
    let tags = tags_known_by_etag(inv, marks);
    let keys = tags.into_iter().map(|(ri, ti)| {
        (
            (ri, ti),
            layout::tag_current_key(
                &inv.repositories[ri].name,
                inv.repositories[ri].tag_name(ti as u32),
            ),
        )
    });
    let mut reads = get_many(storage, keys, LINK_READ_LIMIT, opts.concurrency);
    while let Some(((ri, ti), key, result)) = reads.next().await {
        let link = match result {
            Ok(bytes) => match Digest::from_link(&bytes) {
                Some(d) => TagLink::Digest(d),
                None => {
                    let reason = format!(
                        "tag link does not hold a sha256 digest: {:?}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
                    );
                    marks.warnings.push(Warning::new(&key, &reason));
                    TagLink::Junk(reason)
                }
            },
            Err(StorageError::NotFound { .. }) => TagLink::None,
            Err(e @ StorageError::TooLarge { .. }) => {
                marks.warnings.push(Warning::new(&key, &e.to_string()));
                TagLink::Junk(e.to_string())
            }
            Err(e) => return Err(MarkError::Read(e)),
        };
        marks.tag_targets[ri][ti] = marks.tag_target(inv, link);
    }
    Ok(())
}

async fn read_alternate_links(
    storage: &dyn Storage,
    inv: &Inventory,
    opts: &MarkOptions,
    marks: &mut Marks,
) -> Result<(), MarkError> {
    let links = inv.repositories.iter().flat_map(|r| {
        r.alt_links.iter().map(move |l| {
            (
                l,
                layout::alt_link_key(&r.name, l.what, &l.algorithm, &l.encoded),
            )
        })
    });
    let mut reads = get_many(storage, links, LINK_READ_LIMIT, opts.concurrency);
    while let Some((link, key, result)) = reads.next().await {
        match result {
            Ok(bytes) => match Digest::from_link(&bytes) {
                Some(d) => {
                    marks
                        .alternate_digests
                        .insert(format!("{}:{}", link.algorithm, link.encoded), d);
                }
                None => marks.warnings.push(Warning::new(
                    &key,
                    "alternate-algorithm link does not hold a sha256 digest",
                )),
            },
            Err(StorageError::NotFound { .. }) => {}
            Err(e @ StorageError::TooLarge { .. }) => {
                marks.warnings.push(Warning::new(&key, &e.to_string()))
            }
            Err(e) => return Err(MarkError::Read(e)),
        }
    }
    Ok(())
}

/// Reads every manifest a repository serves, once per digest: its revisions,
/// and (2.8 serving a manifest through the repository's `_layers` link when it
/// has no revision link) its tags' targets and its indexes' children linked
/// that way. A child with neither link is not served there: it keeps its own
/// blob (it is referenced) but not its layers.
async fn read_manifests(
    storage: &dyn Storage,
    inv: &Inventory,
    opts: &MarkOptions,
    progress: &Progress,
    on_corrupt: OnCorrupt,
    marks: &mut Marks,
) -> Result<(), MarkError> {
    let mut seen = DigestSet::with_len(inv.digests.len());
    let mut ids: Vec<DigestId> = inv
        .repositories
        .iter()
        .flat_map(|r| &r.revisions)
        .map(|l| l.digest)
        .filter(|id| inv.has_blob(*id) && seen.insert(*id))
        .collect();
    // 2.8 also serves a manifest through its repository's `_layers` link
    // (2.1.0 linked manifests there instead of as revisions): a tag's target
    // with no revision but such a link is read too, and what it references
    // is kept. It may be no manifest at all (a tag naming a layer): one
    // larger than the registry takes a manifest is kept unread.
    let revisions = ids.len();
    let served_by_layer_link =
        inv.repositories
            .iter()
            .zip(&marks.tag_targets)
            .flat_map(|(r, targets)| {
                targets
                    .iter()
                    .filter_map(|t| t.known())
                    .filter(move |id| r.linked_only_through_layers(*id))
            });
    ids.extend(
        served_by_layer_link
            .filter(|id| inv.has_blob(*id) && seen.insert(*id))
            .collect::<Vec<_>>(),
    );
    let mut legacy = DigestSet::with_len(inv.digests.len());
    for id in &ids[revisions..] {
        legacy.insert(*id);
    }
    progress.start_phase("reading manifests", ids.len() as u64);
    // Then the children of what was read that are linked in the repository
    // only through `_layers` (2.8 serves them through it, as it serves such a
    // tag target), until none is left: one more round per level of nesting,
    // and none at all on a registry 2.1.0 never wrote.
    let mut batch = ids;
    // Read because a manifest pinned by scan mentions them, and no index
    // lists them: likely layers. Read up to the size 2.8 takes a manifest at
    // (one larger is kept unread), kept out of the manifest cache, and one
    // that is no JSON object and does not match its digest is no manifest:
    // kept unread, as its mention pins it, rather than stopping every run
    // on a corrupt layer.
    let mut speculative = DigestSet::with_len(inv.digests.len());
    let speculative = &mut speculative;
    // Speculative blobs kept unread as too large: read again, as manifests,
    // should an index read later list one.
    let mut skipped: Vec<DigestId> = Vec::new();
    let speculative_limit = opts.max_manifest_bytes.min(REGISTRY_MANIFEST_LIMIT);
    while !batch.is_empty() {
        let is_speculative = &*speculative;
        let limit_of = move |id: DigestId| {
            if is_speculative.contains(id) {
                speculative_limit
            } else {
                opts.max_manifest_bytes
            }
        };
        let mut reads = match &opts.cache {
            // Without a cache (on a filesystem, or turned off), reads in the
            // store's batches: the manifests, then the blobs read on
            // speculation, with their lower limit.
            None => {
                // (split only when there is a speculative blob: the first
                // round's batch, every revision, is read as it is)
                let (blobs, manifests): (Vec<DigestId>, Vec<DigestId>) =
                    if batch.iter().any(|id| is_speculative.contains(*id)) {
                        batch
                            .into_iter()
                            .partition(|id| is_speculative.contains(*id))
                    } else {
                        (Vec::new(), batch)
                    };
                let keyed = |ids: Vec<DigestId>| {
                    ids.into_iter()
                        .map(|id| (id, layout::blob_data_key(inv.digests.get(id))))
                };
                let limit = opts.max_manifest_bytes;
                get_many(storage, keyed(manifests), limit, opts.concurrency)
                    .chain(get_many(
                        storage,
                        keyed(blobs),
                        speculative_limit,
                        opts.concurrency,
                    ))
                    .map(|(id, key, result)| (id, key, result, false))
                    .boxed()
            }
            Some(cache) => futures::stream::iter(batch)
                .map(move |id| async move {
                    let digest = *inv.digests.get(id);
                    let key = layout::blob_data_key(&digest);
                    let lookup = cache.clone();
                    let limit = limit_of(id);
                    // The cache knows a manifest's content, not that its blob is
                    // still there: only the listing does, and only where it saw
                    // the blob's data. One it named by its directory alone (a
                    // filesystem's) is read, and the read finds a `data` gone;
                    // such a run never takes from the cache, so it does not write
                    // to it either (a file and a sync per manifest, for nothing).
                    if !inv.blob(id).is_some_and(|b| b.is_stated()) {
                        let result = storage.get(&key, limit).await;
                        return (id, key, result, false);
                    }
                    let hit = tokio::task::spawn_blocking(move || lookup.get(&digest, limit))
                        .await
                        .ok()
                        .flatten();
                    if let Some(bytes) = hit {
                        // the limit is the manifest's, wherever it was read from:
                        // a warm cache must not let a run through that a cold one stops
                        let size = bytes.len() as u64;
                        if size > limit {
                            let e = StorageError::TooLarge {
                                key: key.clone(),
                                size,
                                limit,
                            };
                            return (id, key, Err(e), false);
                        }
                        return (id, key, Ok(bytes), true);
                    }
                    let result = storage.get(&key, limit).await;
                    if let Some(bytes) = result
                        .as_ref()
                        .ok()
                        .filter(|_| !is_speculative.contains(id))
                    {
                        let (cache, bytes) = (cache.clone(), bytes.clone());
                        let _ =
                            tokio::task::spawn_blocking(move || cache.put(&digest, &bytes)).await;
                    }
                    (id, key, result, false)
                })
                .buffer_unordered(opts.concurrency.max(1))
                .boxed(),
        };
        while let Some((id, key, result, cached)) = reads.next().await {
            progress.inc(1);
            marks.manifest_cache_hits += cached as u64;
            let bytes = match result {
                Ok(bytes) => bytes,
                // listed by its directory's name: the directory is there, the data is not
                Err(StorageError::NotFound { .. })
                    if inv.blob(id).is_some_and(|b| !b.is_stated()) =>
                {
                    marks.missing_blobs.push(id);
                    continue;
                }
                Err(StorageError::NotFound { .. }) => return Err(MarkError::Vanished { key }),
                // a tag naming a layer: larger than any manifest 2.8 takes
                Err(StorageError::TooLarge { size, .. })
                    if legacy.contains(id) && size > REGISTRY_MANIFEST_LIMIT =>
                {
                    if speculative.contains(id) {
                        skipped.push(id);
                    }
                    continue;
                }
                Err(e @ StorageError::TooLarge { .. }) => return Err(MarkError::TooLarge(e)),
                Err(e) => return Err(MarkError::Read(e)),
            };
            // A manifest blob is named by its sha256: bytes that do not hash to it
            // (cut short, corrupt) must not reach the parser, whose lenient scan
            // would keep only the references before the cut. Cached entries were
            // checked when the cache returned them.
            if !cached {
                let actual = Digest::from_bytes(Sha256::digest(&bytes).into());
                if actual != *inv.digests.get(id) {
                    if speculative.contains(id) && !manifest::is_json_object(&bytes) {
                        marks
                            .warnings
                            .push(Warning::new(&key, CORRUPT_SPECULATIVE_BLOB));
                        continue;
                    }
                    if on_corrupt == OnCorrupt::Stop {
                        return Err(MarkError::DigestMismatch {
                            key,
                            len: bytes.len(),
                        });
                    }
                    let mentions = Digest::scan_all(&bytes)
                        .iter()
                        .filter_map(|d| inv.digests.find(d))
                        .filter(|m| inv.has_blob(*m))
                        .collect();
                    marks.corrupt_manifests.push(CorruptManifest {
                        id,
                        actual,
                        len: bytes.len() as u64,
                        mentions,
                    });
                    continue;
                }
            }
            marks.manifest_bytes_read += bytes.len() as u64;
            let refs = manifest::parse(&bytes);
            // A blob read only because a manifest pinned by scan mentions
            // it is most likely a layer or a config: kept with what it
            // mentions, and not worth a warning.
            if refs.is_pinned_by_scan() && !speculative.contains(id) {
                let msg = match refs.kind {
                    ManifestKind::Unknown => "manifest has a shape registry-gc does not know (the fields of no kind, or of two)",
                    _ => "manifest could not be parsed (Unparseable)",
                };
                let msg = format!(
                    "{msg}; keeping every digest it mentions ({})",
                    refs.blobs.len()
                );
                marks.warnings.push(Warning::new(&key, &msg));
            }
            for bad in &refs.invalid {
                marks.warnings.push(Warning::new(
                    &key,
                    &format!("manifest names an invalid digest {bad:?}"),
                ));
            }
            marks.record(inv, id, &refs);
        }
        drop(reads);
        marks.index();
        batch = layer_linked_children(inv, marks, &mut seen, speculative, &mut skipped);
        progress.inc_length(batch.len() as u64);
        for id in &batch {
            legacy.insert(*id);
        }
    }
    Ok(())
}

/// The children of the indexes read so far (and of the manifests pinned by
/// scan, whose every mentioned digest may be one) that their repository links
/// only through `_layers`, have a blob, and were not read yet (`seen`). 2.8's
/// manifest store tries a repository's revision link, then its layer link
/// (2.1.0 linked manifests there): such a child is served, config and layers
/// with it. An index counts as served in a repository that links it either way.
///
/// Those no index lists (only manifests pinned by scan mention them: most are
/// their layers and configs) are also put in `speculative`.
///
/// A speculative blob kept unread as too large (`skipped`) that an index
/// read since lists is returned again, no longer speculative: it is read up
/// to `--max-manifest-size`, as the manifest it may be.
fn layer_linked_children(
    inv: &Inventory,
    marks: &Marks,
    seen: &mut DigestSet,
    speculative: &mut DigestSet,
    skipped: &mut Vec<DigestId>,
) -> Vec<DigestId> {
    let mut out = Vec::new();
    let mut listed_by_index = DigestSet::with_len(inv.digests.len());
    // indexes are few: links are matched against them, not looked up each
    let indexes = marks.listing_children(inv.digests.len());
    for repo in &inv.repositories {
        let served = repo
            .revisions
            .iter()
            .map(|l| l.digest)
            .chain(repo.layers.iter().map(|l| l.digest))
            .filter(|m| indexes.contains(*m));
        for m in served {
            let Some(refs) = marks.manifest(m) else {
                continue;
            };
            for c in refs.children {
                if repo.linked_only_through_layers(*c) && inv.has_blob(*c) {
                    if refs.kind == ManifestKind::Index {
                        listed_by_index.insert(*c);
                    }
                    if seen.insert(*c) {
                        out.push(*c);
                    }
                }
            }
        }
    }
    for c in &out {
        if !listed_by_index.contains(*c) {
            speculative.insert(*c);
        }
    }
    skipped.retain(|c| {
        let listed = listed_by_index.contains(*c);
        if listed {
            speculative.remove(*c);
            out.push(*c);
        }
        !listed
    });
    out
}
