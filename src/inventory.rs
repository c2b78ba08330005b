//! The inventory: everything one streamed listing says about the registry.
//!
//! Built from keys alone (link files are trusted by key, not read). Memory is the
//! budget here: digests are interned once (`DigestTable`) and referred to by a
//! 4-byte id, links are 8-byte records in sorted vectors, times are seconds, and
//! no per-key string is kept; keys are rendered back from meaning when needed.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::digest::Digest;
use crate::digest_table::{DigestId, DigestTable};
use crate::layout::{self, AltLinkKind, KeyKind, OtherReason};
use crate::storage::{ObjectMeta, StorageError};

/// Seconds since the Unix epoch. Object times are rounded *up*, so an object is
/// never taken for older than it is.
pub type Secs = u32;

/// The time of an object listed by name only (`ObjectMeta::NOT_STATED`):
/// newer than any fence, so that until it is stat'ed nothing treats it as old.
pub const NOT_STATED: Secs = Secs::MAX;

/// Whole seconds, rounded up, of a listed mtime; `NOT_STATED` for an object
/// listed without one.
pub fn listed_secs(ms: i64) -> Secs {
    if ms == ObjectMeta::NOT_STATED {
        NOT_STATED
    } else {
        secs_ceil(ms)
    }
}

pub fn secs_ceil(ms: i64) -> Secs {
    if ms <= 0 {
        0
    } else {
        Secs::try_from((ms + 999) / 1000).unwrap_or(Secs::MAX)
    }
}

/// `blob_sizes` entries: a digest seen only in links, and a blob of 4 GiB or
/// more (its size is in `large_blobs`). Sizes fit in 32 bits for nearly every
/// blob, and this vector has one entry per digest.
const NO_BLOB: u32 = u32::MAX;
const LARGE_BLOB: u32 = u32::MAX - 1;
/// A blob listed by name only: size unknown until stat'ed.
const UNSIZED_BLOB: u32 = u32::MAX - 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    /// 0 while not stated.
    pub size: u64,
    /// `NOT_STATED` until the blob is stat'ed.
    pub modified: Secs,
}

impl BlobInfo {
    /// Whether the size and mtime are known (see `listed_secs`).
    pub fn is_stated(&self) -> bool {
        self.modified != NOT_STATED
    }

    /// The size, if known.
    pub fn known_size(&self) -> Option<u64> {
        self.is_stated().then_some(self.size)
    }
}

/// A link file: the digest in its key, and its last-modified time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link {
    pub digest: DigestId,
    pub modified: Secs,
}

/// A tag. Its name is in its repository's `tag_names` (see `Repository::tag_name`):
/// one string per repository instead of an allocation per tag, 12 bytes a tag
/// instead of 24 and a 32-byte heap chunk.
#[derive(Debug, Clone, Copy)]
pub struct Tag {
    /// Where the name ends in `Repository::tag_names`; it starts where the
    /// previous tag's ends.
    name_end: u32,
    /// Last-modified of `current/link`, if the tag has one.
    pub current: Option<Secs>,
}

/// One entry of a tag's history (`tags/<tag>/index/sha256/<hex>/link`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TagHistory {
    pub tag: u32,
    pub link: Link,
}

#[derive(Debug, Clone)]
pub struct UploadPart {
    pub part: String,
    pub size: u64,
    pub modified: Secs,
}

#[derive(Debug, Default)]
pub struct Upload {
    pub uuid: String,
    pub parts: Vec<UploadPart>,
}

impl Upload {
    /// The newest last-modified of any part: an upload receiving chunks is active.
    pub fn newest(&self) -> Secs {
        self.parts.iter().map(|p| p.modified).max().unwrap_or(0)
    }
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }
}

#[derive(Debug, Clone)]
pub struct AltLink {
    pub what: AltLinkKind,
    pub algorithm: String,
    pub encoded: String,
    pub modified: Secs,
}

#[derive(Debug, Default)]
pub struct Repository {
    pub name: String,
    /// Sorted by digest id, one per digest.
    pub revisions: Vec<Link>,
    pub layers: Vec<Link>,
    /// Sorted by name.
    pub tags: Vec<Tag>,
    /// The tags' names, in order, end to end.
    tag_names: Box<str>,
    /// (tag id, MD5 of its `current/link`'s content), sorted, for the tags
    /// whose listing ETag is one (S3 and GCS single-part objects): lets the mark
    /// phase know the link's content without reading it. Apart from the tags,
    /// which a filesystem or Azure listing never fills.
    tag_md5s: Vec<(u32, [u8; 16])>,
    pub history: Vec<TagHistory>,
    pub alt_links: Vec<AltLink>,
    /// Sorted by uuid.
    pub uploads: Vec<Upload>,
    /// For each upload, how many parts the uploads before it have: parts are
    /// numbered across the repository (`upload_part_number`).
    upload_part_base: Vec<u32>,
    /// Unrecognised keys under this repository's metadata directories.
    pub stray_keys: u64,
}

impl Repository {
    pub fn has_revision(&self, d: DigestId) -> bool {
        self.revisions
            .binary_search_by_key(&d, |l| l.digest)
            .is_ok()
    }

    pub fn has_layer_link(&self, d: DigestId) -> bool {
        self.layers.binary_search_by_key(&d, |l| l.digest).is_ok()
    }

    /// Whether `d` is linked here through `_layers` and not as a revision:
    /// a manifest so linked (as 2.1.0 linked them) is served through that
    /// link by 2.8, whose manifest store tries the revision link first.
    pub fn linked_only_through_layers(&self, d: DigestId) -> bool {
        !self.has_revision(d) && self.has_layer_link(d)
    }

    /// The layer link to `d`, if the repository has one.
    pub fn layer(&self, d: DigestId) -> Option<&Link> {
        self.layer_place(d).map(|i| &self.layers[i])
    }

    /// Where the layer link to `d` is in `layers` (sorted by digest id, one
    /// per digest).
    fn layer_place(&self, d: DigestId) -> Option<usize> {
        self.layers.binary_search_by_key(&d, |l| l.digest).ok()
    }

    /// The id of the tag named `name` (tags are sorted by name).
    pub fn tag_id(&self, name: &str) -> Option<u32> {
        let (mut lo, mut hi) = (0, self.tags.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.tag_name(mid as u32).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid as u32),
            }
        }
        None
    }

    /// The place in `history` of tag `tag`'s entry for `digest`.
    pub fn history_entry(&self, tag: u32, digest: DigestId) -> Option<u32> {
        self.history
            .binary_search_by_key(&(tag, digest), |h| (h.tag, h.link.digest))
            .ok()
            .map(|i| i as u32)
    }

    /// Part `part` of upload `upload`, numbered across the repository's uploads.
    pub fn upload_part_number(&self, upload: u32, part: u32) -> u32 {
        self.upload_part_base[upload as usize] + part
    }

    /// The (upload, part) numbered `n` by `upload_part_number`.
    pub fn upload_part_at(&self, n: u32) -> (u32, u32) {
        let upload = self.upload_part_base.partition_point(|base| *base <= n) - 1;
        (upload as u32, n - self.upload_part_base[upload])
    }

    /// The name of tag `tag`.
    pub fn tag_name(&self, tag: u32) -> &str {
        let start = match tag.checked_sub(1) {
            Some(before) => self.tags[before as usize].name_end,
            None => 0,
        };
        &self.tag_names[start as usize..self.tags[tag as usize].name_end as usize]
    }

    /// The tags' names, in tag order.
    pub fn tag_names(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.tags.len() as u32).map(|t| self.tag_name(t))
    }

    /// The MD5 of tag `tag`'s `current/link` content, when the listing gave it.
    pub fn tag_md5(&self, tag: u32) -> Option<[u8; 16]> {
        self.tag_md5s
            .binary_search_by_key(&tag, |(t, _)| *t)
            .ok()
            .map(|i| self.tag_md5s[i].1)
    }
}

/// What the listing found, staged until `finish` hands each repository its
/// share. Links and tags arrive interleaved across thousands of repositories;
/// gathered in one vector per kind (large, so mapped and grown in place), they
/// are copied once into exactly sized per-repository vectors, instead of
/// thousands of per-repository vectors growing by doubling and leaving their
/// outgrown buffers as holes in the heap (measured: 9 MiB of free but resident
/// heap at 1M keys).
#[derive(Debug, Default)]
struct Staging {
    /// (repository id, link), in listing order.
    revisions: Vec<(u32, Link)>,
    layers: Vec<(u32, Link)>,
    /// Every tag seen; `tag_index` finds one by repository and name.
    tags: Vec<StagedTag>,
    /// The staged tags' names, end to end (one growing string, not a small
    /// allocation per tag freed at the end, leaving holes).
    tag_names: String,
    tag_index: HashTable<u32>,
    /// Keyed: tag names come from users.
    hasher: RandomState,
    /// (index into `tags`, MD5 of its current link), for the few listings
    /// whose ETags are MD5s.
    tag_md5s: Vec<(u32, [u8; 16])>,
    /// (index into `tags`, link).
    history: Vec<(u32, Link)>,
}

/// A tag as the listing stages it: its repository, where its name is in
/// `Staging::tag_names`, and its `current/link`'s last-modified.
#[derive(Debug)]
struct StagedTag {
    repo: u32,
    name: [u32; 2],
    current: Option<Secs>,
}

impl StagedTag {
    fn name<'a>(&self, names: &'a str) -> &'a str {
        &names[self.name[0] as usize..self.name[1] as usize]
    }
}

impl Staging {
    fn tag_hash(hasher: &RandomState, repo: u32, name: &str) -> u64 {
        hasher.hash_one((repo, name))
    }

    /// The staged tag `name` of repository `repo`, added if new.
    fn tag(&mut self, repo: u32, name: &str) -> u32 {
        let hasher = &self.hasher;
        let hash = Self::tag_hash(hasher, repo, name);
        let (tags, names) = (&self.tags, &self.tag_names);
        if let Some(i) = self.tag_index.find(hash, |&i| {
            tags[i as usize].repo == repo && tags[i as usize].name(names) == name
        }) {
            return *i;
        }
        let i = u32::try_from(self.tags.len()).expect("fewer than 4 billion tags");
        let start = u32::try_from(self.tag_names.len()).ok();
        let end = start
            .and_then(|s| s.checked_add(u32::try_from(name.len()).ok()?))
            .expect("tag names of fewer than 4 GiB in all");
        self.tag_names.push_str(name);
        self.tags.push(StagedTag {
            repo,
            name: [start.unwrap_or_default(), end],
            current: None,
        });
        let (tags, names) = (&self.tags, &self.tag_names);
        self.tag_index.insert_unique(hash, i, |&i| {
            Self::tag_hash(hasher, tags[i as usize].repo, tags[i as usize].name(names))
        });
        i
    }

    /// Hands each repository its links, tags (sorted by name) and tag history
    /// (sorted by tag, then digest), deduplicated, each vector allocated once.
    fn distribute(self, repositories: &mut [Repository]) {
        let Staging {
            revisions,
            layers,
            tags,
            tag_names,
            tag_index,
            hasher: _,
            tag_md5s,
            history,
        } = self;
        drop(tag_index);
        hand_out(
            revisions,
            |a, b| a.digest == b.digest,
            |r, links| repositories[r as usize].revisions = links,
        );
        hand_out(
            layers,
            |a, b| a.digest == b.digest,
            |r, links| repositories[r as usize].layers = links,
        );
        // a tag's id is its place among its repository's tags, sorted by name
        let name = |i: u32| tags[i as usize].name(&tag_names);
        let mut order: Vec<u32> = (0..tags.len() as u32).collect();
        order.sort_unstable_by(|a, b| {
            (tags[*a as usize].repo, name(*a)).cmp(&(tags[*b as usize].repo, name(*b)))
        });
        let mut local_id = vec![0u32; tags.len()];
        for run in order.chunk_by(|a, b| tags[*a as usize].repo == tags[*b as usize].repo) {
            let mut names = String::with_capacity(run.iter().map(|i| name(*i).len()).sum());
            let mut repo_tags = Vec::with_capacity(run.len());
            for (local, staged) in run.iter().enumerate() {
                local_id[*staged as usize] = local as u32;
                names.push_str(name(*staged));
                // fits: no longer than all staged names, whose ends fit in u32
                repo_tags.push(Tag {
                    name_end: names.len() as u32,
                    current: tags[*staged as usize].current,
                });
            }
            let repo = &mut repositories[tags[run[0] as usize].repo as usize];
            repo.tags = repo_tags;
            repo.tag_names = names.into_boxed_str();
        }
        drop((order, tag_names));
        let tag_repo: Vec<u32> = tags.into_iter().map(|t| t.repo).collect();
        // a tag listed twice with two different ETags proves nothing: it is read
        let mut md5s: Vec<(u32, (u32, [u8; 16]))> = tag_md5s
            .into_iter()
            .map(|(t, md5)| (tag_repo[t as usize], (local_id[t as usize], md5)))
            .collect();
        md5s.sort_unstable();
        md5s.dedup();
        let ambiguous: Vec<(u32, u32)> = md5s
            .windows(2)
            .filter(|w| (w[0].0, w[0].1 .0) == (w[1].0, w[1].1 .0))
            .map(|w| (w[0].0, w[0].1 .0))
            .collect();
        md5s.retain(|(r, (t, _))| ambiguous.binary_search(&(*r, *t)).is_err());
        hand_out(
            md5s,
            |a, b| a.0 == b.0,
            |r, m| repositories[r as usize].tag_md5s = m,
        );
        let history = history
            .into_iter()
            .map(|(t, link)| {
                (
                    tag_repo[t as usize],
                    TagHistory {
                        tag: local_id[t as usize],
                        link,
                    },
                )
            })
            .collect();
        hand_out(
            history,
            |a, b| (a.tag, a.link.digest) == (b.tag, b.link.digest),
            |r, h| repositories[r as usize].history = h,
        );
    }
}

/// Sorts staged `(repository, item)` pairs, drops duplicates (`same`, keeping
/// the last in sort order: of a link listed twice, the newer time), and gives
/// each repository its items in a vector of exactly their number.
fn hand_out<T: Ord + Copy>(
    mut staged: Vec<(u32, T)>,
    same: impl Fn(&T, &T) -> bool,
    mut give: impl FnMut(u32, Vec<T>),
) {
    staged.sort_unstable();
    staged.dedup_by(|later, kept| {
        let duplicate = later.0 == kept.0 && same(&kept.1, &later.1);
        if duplicate {
            *kept = *later;
        }
        duplicate
    });
    for run in staged.chunk_by(|a, b| a.0 == b.0) {
        give(run[0].0, run.iter().map(|(_, item)| *item).collect());
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StrayKey {
    pub key: String,
    pub size: u64,
    pub reason: OtherReason,
}

/// An empty directory found by the listing (filesystems only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyDir {
    /// The directory's key, without the trailing `/`.
    pub key: String,
    pub modified: Secs,
    /// Below the structural directories the registry expects: safe to remove.
    pub removable: bool,
}

/// The empty directories, their keys in one string: a registry whose manifests
/// were deleted through the API has tens of thousands of them, and as many small
/// heap strings would cost a third more than the keys themselves.
#[derive(Debug, Default)]
pub struct EmptyDirs {
    /// Keys without the trailing `/`, compressed as `flags` say: a common
    /// prefix cut; under a repository, the repository's id (4 bytes) in place of
    /// its name, and the revision or layer directory's path cut; a final
    /// component of 64 lowercase hex digits (revision, layer and blob
    /// directories) stored as its 32 bytes. About 40 bytes for the common case.
    text: Vec<u8>,
    /// Where each key ends in `text`.
    ends: Vec<u32>,
    modified: Vec<Secs>,
    flags: Vec<u8>,
}

const REMOVABLE: u8 = 1;
const UNDER_REPOSITORIES: u8 = 2;
const UNDER_V2: u8 = 4;
const HEX_TAIL: u8 = 8;
/// The text starts with a repository id, for `<repositories>/<name>/`.
const REPO_ID: u8 = 16;
/// After the id: `_manifests/revisions/sha256/` or `_layers/sha256/`, cut.
const IN_REVISIONS: u8 = 32;
const IN_LAYERS: u8 = 64;
const REVISIONS_DIR: &str = "_manifests/revisions/sha256/";
const LAYERS_DIR: &str = "_layers/sha256/";

impl EmptyDirs {
    /// Adds `key`; `repo` is the repository it lies in, with its id.
    fn push(&mut self, key: &str, modified: Secs, removable: bool, repo: Option<(u32, &str)>) {
        let mut flags = if removable { REMOVABLE } else { 0 };
        let in_repo = repo.and_then(|(id, name)| {
            let rest = key
                .strip_prefix(layout::REPOSITORIES)?
                .strip_prefix(name)?
                .strip_prefix('/')?;
            Some((id, rest))
        });
        let rest = if let Some((id, rest)) = in_repo {
            flags |= REPO_ID;
            self.text.extend_from_slice(&id.to_le_bytes());
            if let Some(r) = rest.strip_prefix(REVISIONS_DIR) {
                flags |= IN_REVISIONS;
                r
            } else if let Some(r) = rest.strip_prefix(LAYERS_DIR) {
                flags |= IN_LAYERS;
                r
            } else {
                rest
            }
        } else if let Some(rest) = key.strip_prefix(layout::REPOSITORIES) {
            flags |= UNDER_REPOSITORIES;
            rest
        } else if let Some(rest) = key.strip_prefix(layout::V2) {
            flags |= UNDER_V2;
            rest
        } else {
            key
        };
        let tail = rest
            .len()
            .checked_sub(64)
            .filter(|i| rest.is_char_boundary(*i))
            .map(|i| (&rest[..i], &rest.as_bytes()[i..]));
        match tail {
            Some((head, hex))
                if (head.is_empty() || head.ends_with('/'))
                    && hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(hex, &mut bytes).expect("64 hex digits");
                flags |= HEX_TAIL;
                self.text.extend_from_slice(head.as_bytes());
                self.text.extend_from_slice(&bytes);
            }
            _ => self.text.extend_from_slice(rest.as_bytes()),
        }
        self.ends
            .push(u32::try_from(self.text.len()).expect("empty directory keys under 4 GiB"));
        self.modified.push(modified);
        self.flags.push(flags);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Where the `i`th key lies in `text`.
    fn bounds(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        start..self.ends[i] as usize
    }

    /// The `i`th directory, its key rendered; `repo_name` names a repository id.
    fn get<'a>(&self, i: usize, repo_name: impl Fn(u32) -> &'a str) -> EmptyDir {
        let flags = self.flags[i];
        let mut rest = &self.text[self.bounds(i)];
        let mut key = String::new();
        if flags & REPO_ID != 0 {
            let id = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
            rest = &rest[4..];
            key.push_str(layout::REPOSITORIES);
            key.push_str(repo_name(id));
            key.push('/');
            if flags & IN_REVISIONS != 0 {
                key.push_str(REVISIONS_DIR);
            } else if flags & IN_LAYERS != 0 {
                key.push_str(LAYERS_DIR);
            }
        } else if flags & UNDER_REPOSITORIES != 0 {
            key.push_str(layout::REPOSITORIES);
        } else if flags & UNDER_V2 != 0 {
            key.push_str(layout::V2);
        }
        let mut tail = String::new();
        if flags & HEX_TAIL != 0 {
            tail = hex::encode(&rest[rest.len() - 32..]);
            rest = &rest[..rest.len() - 32];
        }
        key.push_str(std::str::from_utf8(rest).expect("stored from a str, cut at a char boundary"));
        key.push_str(&tail);
        EmptyDir {
            key,
            modified: self.modified[i],
            removable: flags & REMOVABLE != 0,
        }
    }

    /// Whether the `i`th directory is removable and when it was modified,
    /// without rendering its key.
    pub fn removable_and_modified(&self, i: usize) -> (bool, Secs) {
        (self.flags[i] & REMOVABLE != 0, self.modified[i])
    }

    /// Rewrites repository ids after the repositories were renumbered.
    fn renumber(&mut self, new_id: &[u32]) {
        for i in 0..self.len() {
            if self.flags[i] & REPO_ID != 0 {
                let start = self.bounds(i).start;
                let old =
                    u32::from_le_bytes(self.text[start..start + 4].try_into().expect("4 bytes"));
                self.text[start..start + 4].copy_from_slice(&new_id[old as usize].to_le_bytes());
            }
        }
    }

    fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.modified.shrink_to_fit();
        self.flags.shrink_to_fit();
    }
}

#[derive(Debug, Default)]
pub struct Inventory {
    pub digests: DigestTable,
    /// By digest id: the blob's size (`NO_BLOB`, `LARGE_BLOB` or the size), and
    /// its last-modified (two vectors: 8 bytes a digest, no padding).
    blob_sizes: Vec<u32>,
    large_blobs: HashMap<DigestId, u64>,
    blob_times: Vec<Secs>,
    /// Sorted by name once the listing is finished.
    pub repositories: Vec<Repository>,
    repo_ids: HashMap<String, u32>,
    /// The repository of the last key inserted (an id into `repositories`
    /// while listing).
    last_repo: u32,
    staging: Staging,
    pub strays: Vec<StrayKey>,
    pub empty_dirs: EmptyDirs,
    pub keys_listed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("no registry at {location}: {V2} does not exist there; {}", hint.as_deref().unwrap_or("point STORAGE at the registry's rootdirectory (the directory holding docker/)"), V2 = layout::V2)]
    NotARegistry {
        location: String,
        /// What the store says of a registry it holds out of reach.
        hint: Option<String>,
    },
    #[error("listing failed, nothing will be deleted: {0}")]
    Listing(#[from] StorageError),
}

impl Inventory {
    /// Records one listed object.
    pub fn insert(&mut self, meta: ObjectMeta) {
        let t = listed_secs(meta.last_modified_ms);
        if !meta.key.ends_with('/') {
            self.keys_listed += 1;
        }
        match layout::classify(&meta.key) {
            KeyKind::EmptyDir { repo, removable } => {
                // a repository that is only empty directories still exists, empty
                let repo = repo.map(|name| (self.repo_id(name), name));
                self.empty_dirs
                    .push(meta.key.trim_end_matches('/'), t, removable, repo);
            }
            KeyKind::BlobData(d) => {
                let id = self.intern(d);
                if meta.is_stated() {
                    // listed twice: as old as the newer listing
                    let t = if self.has_blob(id) {
                        t.max(self.blob_times[id as usize])
                    } else {
                        t
                    };
                    self.set_blob(id, meta.size, t);
                } else {
                    self.blob_sizes[id as usize] = UNSIZED_BLOB;
                    self.blob_times[id as usize] = NOT_STATED;
                }
            }
            KeyKind::Revision { repo, digest } => {
                let link = Link {
                    digest: self.intern(digest),
                    modified: t,
                };
                let r = self.repo_id(repo);
                self.staging.revisions.push((r, link));
            }
            KeyKind::TagCurrent { repo, tag } => {
                let md5 = meta.etag.as_deref().and_then(etag_md5);
                let r = self.repo_id(repo);
                let i = self.staging.tag(r, tag);
                // listed twice: as old as the newer listing
                let current = &mut self.staging.tags[i as usize].current;
                *current = Some(current.map_or(t, |c| c.max(t)));
                if let Some(md5) = md5 {
                    self.staging.tag_md5s.push((i, md5));
                }
            }
            KeyKind::TagIndex { repo, tag, digest } => {
                let link = Link {
                    digest: self.intern(digest),
                    modified: t,
                };
                let r = self.repo_id(repo);
                let i = self.staging.tag(r, tag);
                self.staging.history.push((i, link));
            }
            KeyKind::LayerLink { repo, digest } => {
                let link = Link {
                    digest: self.intern(digest),
                    modified: t,
                };
                let r = self.repo_id(repo);
                self.staging.layers.push((r, link));
            }
            KeyKind::AltLink {
                repo,
                what,
                algorithm,
                encoded,
            } => {
                let link = AltLink {
                    what,
                    algorithm: algorithm.to_string(),
                    encoded: encoded.to_string(),
                    modified: t,
                };
                self.repo(repo).alt_links.push(link);
            }
            KeyKind::Upload { repo, uuid, part } => {
                let part = UploadPart {
                    part: part.to_string(),
                    size: meta.size,
                    modified: t,
                };
                let r = self.repo(repo);
                match r.uploads.iter_mut().find(|u| u.uuid == uuid) {
                    Some(u) => u.parts.push(part),
                    None => r.uploads.push(Upload {
                        uuid: uuid.to_string(),
                        parts: vec![part],
                    }),
                }
            }
            KeyKind::Other(reason) => {
                if reason == OtherReason::UnknownRepositoryMetadata {
                    if let Some((repo, _)) = meta
                        .key
                        .strip_prefix(layout::REPOSITORIES)
                        .and_then(layout::split_repository_path)
                    {
                        let repo = repo.to_string();
                        self.repo(&repo).stray_keys += 1;
                    }
                }
                self.strays.push(StrayKey {
                    key: meta.key,
                    size: meta.size,
                    reason,
                });
            }
        }
    }

    fn set_blob(&mut self, id: DigestId, size: u64, t: Secs) {
        self.blob_sizes[id as usize] = match u32::try_from(size) {
            Ok(size) if size < UNSIZED_BLOB => size,
            _ => {
                self.large_blobs.insert(id, size);
                LARGE_BLOB
            }
        };
        self.blob_times[id as usize] = t;
    }

    /// Records what a stat said of a blob listed by name (`candidates`).
    pub fn stat_blob(&mut self, id: DigestId, size: u64, t: Secs) {
        if self.has_blob(id) {
            self.set_blob(id, size, t);
        }
    }

    /// Records what a stat said of a layer link listed by name.
    pub fn stat_layer_link(&mut self, repo: u32, digest: DigestId, t: Secs) {
        let r = &mut self.repositories[repo as usize];
        if let Some(i) = r.layer_place(digest) {
            r.layers[i].modified = t;
        }
    }

    /// Records what a stat said of a tag history entry listed by name
    /// (`entry`: its place in the repository's `history`).
    pub fn stat_history_entry(&mut self, repo: u32, entry: u32, t: Secs) {
        self.repositories[repo as usize].history[entry as usize]
            .link
            .modified = t;
    }

    /// Takes a blob listed by name out: its directory turned out to hold no
    /// data (the mark phase found none to read, or a stat none to size).
    pub fn forget_blob(&mut self, id: DigestId) {
        if let Some(size) = self.blob_sizes.get_mut(id as usize) {
            *size = NO_BLOB;
        }
    }

    /// Takes a layer link listed by name out: its directory holds no `link`.
    pub fn forget_layer_link(&mut self, repo: u32, digest: DigestId) {
        let r = &mut self.repositories[repo as usize];
        if let Some(i) = r.layer_place(digest) {
            r.layers.remove(i);
        }
    }

    /// Takes a tag history entry listed by name out: its directory holds no
    /// `link`. The entries after it move up one place.
    pub fn forget_history_entry(&mut self, repo: u32, entry: u32) {
        self.repositories[repo as usize]
            .history
            .remove(entry as usize);
    }

    /// Records, after `finish`, a directory found without the file its name
    /// promised: for the plan, an empty directory as a full listing would
    /// have reported it (a removal that finds it not empty leaves it).
    pub fn add_empty_dir(&mut self, key: &str, modified: Secs) {
        let dir = format!("{key}/");
        let KeyKind::EmptyDir { repo, removable } = layout::classify(&dir) else {
            return;
        };
        let repo = match repo {
            Some(name) => match self.repository_id(name) {
                Some(id) => Some((id, name)),
                None => return,
            },
            None => None,
        };
        self.empty_dirs.push(key, modified, removable, repo);
    }

    fn intern(&mut self, d: Digest) -> DigestId {
        let id = self.digests.intern(d);
        if id as usize >= self.blob_sizes.len() {
            self.blob_sizes.resize(id as usize + 1, NO_BLOB);
            self.blob_times.resize(id as usize + 1, 0);
        }
        id
    }

    fn repo(&mut self, name: &str) -> &mut Repository {
        let id = self.repo_id(name);
        &mut self.repositories[id as usize]
    }

    fn repo_id(&mut self, name: &str) -> u32 {
        // keys come in runs from one directory: most are the last one's
        if self
            .repositories
            .get(self.last_repo as usize)
            .is_some_and(|r| r.name == name)
        {
            return self.last_repo;
        }
        let id = match self.repo_ids.get(name) {
            Some(id) => *id,
            None => {
                let id = u32::try_from(self.repositories.len())
                    .expect("fewer than 4 billion repositories");
                self.repositories.push(Repository {
                    name: name.to_string(),
                    ..Repository::default()
                });
                self.repo_ids.insert(name.to_string(), id);
                id
            }
        };
        self.last_repo = id;
        id
    }

    /// Sorts what the listing added and releases what only building needed.
    /// Call once, after the last `insert`.
    pub fn finish(&mut self) {
        std::mem::take(&mut self.staging).distribute(&mut self.repositories);
        // repositories by name; empty directories name theirs by the id the
        // listing gave, which `repo_ids` still maps each name to
        self.repositories.sort_by(|a, b| a.name.cmp(&b.name));
        let mut new_id = vec![0u32; self.repositories.len()];
        for (new, r) in self.repositories.iter_mut().enumerate() {
            new_id[self.repo_ids[&r.name] as usize] = new as u32;
            r.uploads.sort_by(|a, b| a.uuid.cmp(&b.uuid));
            let mut parts = 0u32;
            r.upload_part_base = r
                .uploads
                .iter()
                .map(|u| {
                    let base = parts;
                    parts += u.parts.len() as u32;
                    base
                })
                .collect();
        }
        self.empty_dirs.renumber(&new_id);
        self.repo_ids = HashMap::new();
        self.last_repo = u32::MAX;
        self.empty_dirs.shrink_to_fit();
        self.digests.shrink_to_fit();
        self.blob_sizes.shrink_to_fit();
        self.blob_times.shrink_to_fit();
    }

    /// The `i`th empty directory, its key rendered.
    pub fn empty_dir(&self, i: usize) -> EmptyDir {
        self.empty_dirs
            .get(i, |repo| self.repositories[repo as usize].name.as_str())
    }

    pub fn blob(&self, id: DigestId) -> Option<BlobInfo> {
        let size = match *self.blob_sizes.get(id as usize)? {
            NO_BLOB => return None,
            LARGE_BLOB => self.large_blobs[&id],
            UNSIZED_BLOB => 0,
            size => u64::from(size),
        };
        Some(BlobInfo {
            size,
            modified: self.blob_times[id as usize],
        })
    }

    /// Every blob with data, by id.
    pub fn blobs(&self) -> impl Iterator<Item = (DigestId, BlobInfo)> + '_ {
        (0..self.blob_sizes.len() as DigestId).filter_map(|id| self.blob(id).map(|b| (id, b)))
    }

    pub fn blob_count(&self) -> usize {
        self.blob_sizes.iter().filter(|s| **s != NO_BLOB).count()
    }

    /// Whether the listing named any blob, layer link or tag history entry
    /// without stat'ing it.
    pub fn has_unstated(&self) -> bool {
        self.blob_sizes.contains(&UNSIZED_BLOB)
            || self.repositories.iter().any(|r| {
                let mut links = r.layers.iter().chain(r.history.iter().map(|h| &h.link));
                links.any(|l| l.modified == NOT_STATED)
            })
    }

    /// The bytes of all blobs; `None` when some were listed by name only.
    pub fn blob_bytes(&self) -> Option<u64> {
        self.blobs().map(|(_, b)| b.known_size()).sum()
    }

    pub fn has_blob(&self, id: DigestId) -> bool {
        self.blob(id).is_some()
    }

    pub fn repository(&self, name: &str) -> Option<&Repository> {
        self.repository_id(name)
            .map(|i| &self.repositories[i as usize])
    }

    /// The id of the repository named `name` (after `finish`).
    pub fn repository_id(&self, name: &str) -> Option<u32> {
        self.repositories
            .binary_search_by(|r| r.name.as_str().cmp(name))
            .ok()
            .map(|i| i as u32)
    }

    /// About how many keys the repositories at or below `name` (a repository
    /// or namespace path, `team` or `team/app`) were listed with: their links,
    /// tags, tag history and upload files. After `finish`.
    pub fn keys_below(&self, name: &str) -> u64 {
        // the names sorted from `name` up to `name/...`: `/` sorts before `0`,
        // so `name0` bounds them (names sorting between, as `name-x` or
        // `name.x`, are skipped by the check)
        let start = self
            .repositories
            .partition_point(|r| r.name.as_str() < name);
        let end = format!("{name}0");
        self.repositories[start..]
            .iter()
            .take_while(|r| r.name.as_str() < end.as_str())
            .filter(|r| {
                r.name == name
                    || r.name
                        .strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .map(|r| {
                let uploads: usize = r.uploads.iter().map(|u| u.parts.len()).sum();
                (r.revisions.len()
                    + r.layers.len()
                    + r.tags.len()
                    + r.history.len()
                    + r.alt_links.len()
                    + uploads) as u64
                    + r.stray_keys
            })
            .sum()
    }

    pub fn tag_count(&self) -> usize {
        self.repositories.iter().map(|r| r.tags.len()).sum()
    }

    /// Distinct manifests linked as revisions anywhere.
    pub fn manifest_count(&self) -> usize {
        let mut seen = crate::digest_table::DigestSet::with_len(self.digests.len());
        self.repositories
            .iter()
            .flat_map(|r| &r.revisions)
            .filter(|l| seen.insert(l.digest))
            .count()
    }
}

/// An ETag that has the shape of an MD5 (32 hex characters, as S3 and GCS's XML
/// API give for single-part objects, or 16 bytes in base64). Whether it really
/// is the content's MD5 is decided where it is used: only a match against the
/// MD5 of known content counts.
pub fn etag_md5(etag: &str) -> Option<[u8; 16]> {
    use base64::Engine;
    let e = etag.trim().trim_start_matches("W/").trim_matches('"');
    let mut out = [0u8; 16];
    if e.len() == 32 && hex::decode_to_slice(e, &mut out).is_ok() {
        return Some(out);
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(e).ok()?;
    out.copy_from_slice(decoded.get(..16).filter(|_| decoded.len() == 16)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: String, t: i64) -> ObjectMeta {
        ObjectMeta {
            key,
            size: 7,
            last_modified_ms: t,
            etag: None,
        }
    }

    #[test]
    fn keys_below_a_name_count_its_repositories_and_those_nested_in_it_only() {
        let mut inv = Inventory::default();
        let hex = |i: usize| format!("{i:064x}");
        let repos = [
            ("team", 2),
            ("team/app", 3),
            ("team/app/cache", 1),
            ("team-x", 5),
            ("team.y", 7),
            ("teams", 11),
            ("tea", 13),
        ];
        for (repo, links) in repos {
            for i in 0..links {
                inv.insert(meta(
                    format!(
                        "{}{repo}/_layers/sha256/{}/link",
                        layout::REPOSITORIES,
                        hex(i)
                    ),
                    1000,
                ));
            }
        }
        inv.insert(meta(
            format!(
                "{}team/app/_manifests/tags/v1/current/link",
                layout::REPOSITORIES
            ),
            1000,
        ));
        inv.insert(meta(
            format!("{}team/app/_uploads/u1/data", layout::REPOSITORIES),
            1000,
        ));
        inv.finish();
        assert_eq!(inv.keys_below("team"), 2 + 3 + 1 + 2);
        assert_eq!(inv.keys_below("team/app"), 3 + 1 + 2);
        assert_eq!(inv.keys_below("team-x"), 5);
        assert_eq!(inv.keys_below("te"), 0);
        assert_eq!(inv.keys_below("nothing"), 0);
    }

    #[test]
    fn etags_shaped_like_md5() {
        let md5 = [
            0x9e, 0x10, 0x7d, 0x9d, 0x37, 0x2b, 0xb6, 0x82, 0x6b, 0xd8, 0x1d, 0x35, 0x42, 0xa4,
            0x19, 0xd6,
        ];
        assert_eq!(etag_md5("\"9e107d9d372bb6826bd81d3542a419d6\""), Some(md5));
        assert_eq!(etag_md5("nhB9nTcrtoJr2B01QqQZ1g=="), Some(md5));
        assert_eq!(etag_md5("\"9e107d9d372bb6826bd81d3542a419d6-2\""), None); // multipart
        assert_eq!(etag_md5("0x8DBB6C1E5A2D6F0"), None); // Azure
    }

    #[test]
    fn times_round_up_to_seconds() {
        assert_eq!(secs_ceil(0), 0);
        assert_eq!(secs_ceil(-5), 0);
        assert_eq!(secs_ceil(1000), 1);
        assert_eq!(secs_ceil(1001), 2);
    }

    #[test]
    fn sorts_keys_into_repositories_tags_links_uploads_and_strays() {
        let d = Digest::from_hex(&"a".repeat(64)).unwrap();
        let mut inv = Inventory::default();
        inv.insert(meta(layout::blob_data_key(&d), 1000));
        inv.insert(meta(layout::revision_key("a/b", &d), 2000));
        inv.insert(meta(layout::tag_current_key("a/b", "v1"), 3000));
        inv.insert(meta(layout::tag_index_key("a/b", "v1", &d), 4000));
        inv.insert(meta(layout::layer_link_key("a", &d), 5000));
        inv.insert(meta(layout::upload_key("a", "u1", "data"), 6000));
        inv.insert(meta(layout::upload_key("a", "u1", "startedat"), 9000));
        inv.insert(meta(
            format!(
                "{}a/_manifests/revisions/sha256/zz/link",
                layout::REPOSITORIES
            ),
            7000,
        ));
        inv.insert(meta(format!("{}blobs/sha256/aa/tmp-123", layout::V2), 8000));
        inv.insert(meta(layout::revision_key("a/b", &d), 2000)); // listed twice
        inv.finish();

        assert_eq!(inv.keys_listed, 10);
        let id = inv.digests.find(&d).unwrap();
        assert_eq!(
            inv.blob(id),
            Some(BlobInfo {
                size: 7,
                modified: 1
            })
        );
        let ab = inv.repository("a/b").unwrap();
        assert_eq!(
            ab.revisions,
            vec![Link {
                digest: id,
                modified: 2
            }]
        );
        assert!(ab.has_revision(id));
        assert_eq!(ab.tag_name(0), "v1");
        assert_eq!(ab.tags[0].current, Some(3));
        assert_eq!(
            ab.history,
            vec![TagHistory {
                tag: 0,
                link: Link {
                    digest: id,
                    modified: 4
                }
            }]
        );
        let a = inv.repository("a").unwrap();
        assert_eq!(a.layers[0].modified, 5);
        assert_eq!(a.uploads[0].newest(), 9);
        assert_eq!(a.uploads[0].bytes(), 14);
        assert_eq!(a.stray_keys, 1);
        assert_eq!(inv.strays.len(), 2);
        assert_eq!(inv.manifest_count(), 1);
    }

    #[test]
    fn blob_sizes_of_four_gib_and_more_are_kept_whole() {
        let mut inv = Inventory::default();
        let sizes = [
            0,
            7,
            u64::from(u32::MAX) - 2,
            u64::from(LARGE_BLOB),
            u64::from(NO_BLOB),
            5 << 30,
        ];
        let digests: Vec<Digest> = (0..sizes.len() as u8)
            .map(|n| Digest::from_bytes([n; 32]))
            .collect();
        for (d, size) in digests.iter().zip(sizes) {
            inv.insert(ObjectMeta {
                key: layout::blob_data_key(d),
                size,
                last_modified_ms: 1000,
                etag: None,
            });
        }
        inv.insert(meta(
            layout::layer_link_key("r", &Digest::from_bytes([99; 32])),
            1000,
        ));
        inv.finish();
        for (d, size) in digests.iter().zip(sizes) {
            assert_eq!(
                inv.blob(inv.digests.find(d).unwrap()),
                Some(BlobInfo { size, modified: 1 })
            );
        }
        assert_eq!(
            inv.blob(inv.digests.find(&Digest::from_bytes([99; 32])).unwrap()),
            None
        );
        assert_eq!(inv.blob_count(), sizes.len());
        assert_eq!(inv.blob_bytes(), Some(sizes.iter().sum::<u64>()));
    }

    /// A key listed twice (a listing that splits, a store that repeats a
    /// key) with two times is as old as the newer: the older could let a
    /// link written during the run pass for one older than `--min-age`.
    #[test]
    fn a_key_listed_twice_is_as_old_as_its_newer_listing() {
        let d = Digest::from_bytes([7; 32]);
        let mut inv = Inventory::default();
        inv.insert(meta(layout::blob_data_key(&d), 9000));
        inv.insert(meta(layout::blob_data_key(&d), 1000));
        for t in [5000, 2000] {
            inv.insert(meta(layout::revision_key("r", &d), t));
            inv.insert(meta(layout::layer_link_key("r", &d), t + 1000));
            inv.insert(meta(layout::tag_index_key("r", "v1", &d), t + 2000));
            inv.insert(meta(layout::tag_current_key("r", "v1"), t + 3000));
        }
        inv.finish();
        let r = inv.repository("r").unwrap();
        assert_eq!(r.revisions.len(), 1);
        assert_eq!(r.revisions[0].modified, 5);
        assert_eq!(r.layers[0].modified, 6);
        assert_eq!(r.history[0].link.modified, 7);
        assert_eq!(r.tags.len(), 1);
        assert_eq!(r.tags[0].current, Some(8));
        let id = inv.digests.find(&d).unwrap();
        assert_eq!(inv.blob(id).map(|b| b.modified), Some(9));
    }

    #[test]
    fn a_tag_md5_is_kept_only_when_its_listings_agree() {
        let with_etag = |repo: &str, tag: &str, etag: &str| ObjectMeta {
            etag: Some(etag.to_string()),
            ..meta(layout::tag_current_key(repo, tag), 1000)
        };
        let (a, b) = ("a".repeat(32), "b".repeat(32));
        let mut inv = Inventory::default();
        inv.insert(with_etag("r", "same", &format!("\"{a}\"")));
        inv.insert(with_etag("r", "same", &format!("\"{a}\"")));
        inv.insert(with_etag("r", "differs", &format!("\"{a}\"")));
        inv.insert(with_etag("r", "differs", &format!("\"{b}\"")));
        inv.insert(meta(layout::tag_current_key("r", "none"), 1000));
        inv.finish();
        let r = &inv.repositories[0];
        let md5 = |name: &str| r.tag_md5(r.tag_names().position(|t| t == name).unwrap() as u32);
        assert_eq!(md5("same"), Some([0xaa; 16]));
        assert_eq!(
            md5("differs"),
            None,
            "two ETags for one link prove nothing: it is read"
        );
        assert_eq!(md5("none"), None);
    }

    #[test]
    fn empty_directories_keep_their_keys() {
        let mut inv = Inventory::default();
        let keys = [
            format!(
                "{}a/b/_manifests/revisions/sha256/{}/",
                layout::REPOSITORIES,
                "c".repeat(64)
            ),
            format!("{}a/_uploads/", layout::REPOSITORIES),
            format!("{}blobs/sha256/ab/", layout::V2),
            format!(
                "{}blobs/sha256/ab/{}/",
                layout::V2,
                "0123456789abcdef".repeat(4)
            ),
            format!(
                "{}x/_layers/sha256/{}/",
                layout::REPOSITORIES,
                "A".repeat(64)
            ),
            format!(
                "{}x/_layers/sha256/x{}/",
                layout::REPOSITORIES,
                "a".repeat(64)
            ),
            format!(
                "{}x/_layers/sha256/{}/",
                layout::REPOSITORIES,
                "d".repeat(64)
            ),
            format!(
                "{}0-first/_manifests/revisions/sha256/{}/",
                layout::REPOSITORIES,
                "e".repeat(64)
            ),
            format!("{}{}/", layout::REPOSITORIES, "b".repeat(64)),
            format!("{}é{}/", layout::REPOSITORIES, "c".repeat(63)),
        ];
        for (i, k) in keys.iter().enumerate() {
            inv.insert(meta(k.clone(), 1000 * (i as i64 + 1)));
        }
        inv.finish();
        assert_eq!(inv.keys_listed, 0);
        assert_eq!(inv.empty_dirs.len(), keys.len());
        let got: Vec<EmptyDir> = (0..inv.empty_dirs.len())
            .map(|i| inv.empty_dir(i))
            .collect();
        for (i, (d, k)) in got.iter().zip(&keys).enumerate() {
            assert_eq!(d.key, k.trim_end_matches('/'));
            assert_eq!(d.modified, i as Secs + 1);
            assert_eq!(
                inv.empty_dirs.removable_and_modified(i),
                (d.removable, d.modified)
            );
        }
        assert!(got[0].removable);
        for (d, k) in got.iter().zip(&keys) {
            assert!(
                matches!(layout::classify(k), KeyKind::EmptyDir { removable, .. } if removable == d.removable),
                "{k}"
            );
        }
    }

    #[test]
    fn tags_are_sorted_by_name_with_history_renumbered() {
        let d1 = Digest::from_hex(&"1".repeat(64)).unwrap();
        let d2 = Digest::from_hex(&"2".repeat(64)).unwrap();
        let mut inv = Inventory::default();
        inv.insert(meta(layout::tag_index_key("r", "zeta", &d1), 1000));
        inv.insert(meta(layout::tag_index_key("r", "alpha", &d2), 1000));
        inv.finish();
        let r = inv.repository("r").unwrap();
        let names: Vec<&str> = r.tag_names().collect();
        assert_eq!(names, ["alpha", "zeta"]);
        for h in &r.history {
            let want = if r.tag_name(h.tag) == "alpha" { d2 } else { d1 };
            assert_eq!(inv.digests.get(h.link.digest), &want);
        }
    }
}
