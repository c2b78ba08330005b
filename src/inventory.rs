//! The inventory: everything one streamed listing says about the registry.
//!
//! Built from keys alone (link files are trusted by key, not read), in one pass
//! over disjoint prefixes listed concurrently: the blob prefixes
//! (`blobs/sha256/<xx>/`) and the top-level repository directories.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;

use crate::digest::Digest;
use crate::layout::{self, AltLinkKind, KeyKind, OtherReason};
use crate::progress::Progress;
use crate::storage::{ObjectMeta, Storage, StorageError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    pub modified_ms: i64,
}

#[derive(Debug, Default)]
pub struct Tag {
    /// Last-modified of `current/link`, if the tag has one.
    pub current_modified_ms: Option<i64>,
    /// The MD5 of `current/link`'s content, when the listing's ETag is one (S3
    /// and GCS single-part objects): lets the mark phase know the link's content
    /// without reading it.
    pub current_md5: Option<[u8; 16]>,
    /// Every digest the tag has pointed at, with the index link's last-modified.
    pub index: HashMap<Digest, i64>,
}

#[derive(Debug, Clone)]
pub struct UploadPart {
    pub part: String,
    pub size: u64,
    pub modified_ms: i64,
}

#[derive(Debug, Default)]
pub struct Upload {
    pub parts: Vec<UploadPart>,
}

impl Upload {
    /// The newest last-modified of any part: an upload receiving chunks is active.
    pub fn newest_ms(&self) -> i64 {
        self.parts.iter().map(|p| p.modified_ms).max().unwrap_or(i64::MIN)
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
    pub modified_ms: i64,
}

#[derive(Debug, Default)]
pub struct Repository {
    pub revisions: HashMap<Digest, i64>,
    pub tags: BTreeMap<String, Tag>,
    pub layers: HashMap<Digest, i64>,
    pub alt_links: Vec<AltLink>,
    pub uploads: BTreeMap<String, Upload>,
    /// Unrecognised keys under this repository's metadata directories.
    pub stray_keys: u64,
}

/// An empty directory found by the listing (filesystems only).
#[derive(Debug, Clone)]
pub struct EmptyDir {
    /// The directory's key, without the trailing `/`.
    pub key: String,
    pub modified_ms: i64,
    /// Below the structural directories the registry expects: safe to remove.
    pub removable: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StrayKey {
    pub key: String,
    pub size: u64,
    pub reason: OtherReason,
}

#[derive(Debug, Default)]
pub struct Inventory {
    pub blobs: HashMap<Digest, BlobInfo>,
    pub repositories: BTreeMap<String, Repository>,
    pub strays: Vec<StrayKey>,
    pub empty_dirs: Vec<EmptyDir>,
    pub keys_listed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("no registry at {location}: {V2} does not exist there; point STORAGE at the registry's rootdirectory (the directory holding docker/)", V2 = layout::V2)]
    NotARegistry { location: String },
    #[error("listing failed, nothing will be deleted: {0}")]
    Listing(#[from] StorageError),
}

impl Inventory {
    /// Records one listed object.
    pub fn insert(&mut self, meta: ObjectMeta) {
        let t = meta.last_modified_ms;
        if !meta.key.ends_with('/') {
            self.keys_listed += 1;
        }
        match layout::classify(&meta.key) {
            KeyKind::EmptyDir { repo, removable } => {
                if let Some(repo) = repo {
                    // a repository that is only empty directories still exists, empty
                    let repo = repo.to_string();
                    self.repo(&repo);
                }
                let key = meta.key.trim_end_matches('/').to_string();
                self.empty_dirs.push(EmptyDir { key, modified_ms: t, removable });
            }
            KeyKind::BlobData(d) => {
                self.blobs.insert(d, BlobInfo { size: meta.size, modified_ms: t });
            }
            KeyKind::Revision { repo, digest } => {
                self.repo(repo).revisions.insert(digest, t);
            }
            KeyKind::TagCurrent { repo, tag } => {
                let md5 = meta.etag.as_deref().and_then(etag_md5);
                let tag = self.tag(repo, tag);
                tag.current_modified_ms = Some(t);
                tag.current_md5 = md5;
            }
            KeyKind::TagIndex { repo, tag, digest } => {
                self.tag(repo, tag).index.insert(digest, t);
            }
            KeyKind::LayerLink { repo, digest } => {
                self.repo(repo).layers.insert(digest, t);
            }
            KeyKind::AltLink { repo, what, algorithm, encoded } => {
                let link = AltLink { what, algorithm: algorithm.to_string(), encoded: encoded.to_string(), modified_ms: t };
                self.repo(repo).alt_links.push(link);
            }
            KeyKind::Upload { repo, uuid, part } => {
                let part = UploadPart { part: part.to_string(), size: meta.size, modified_ms: t };
                self.repo(repo).uploads.entry(uuid.to_string()).or_default().parts.push(part);
            }
            KeyKind::Other(reason) => {
                if reason == OtherReason::UnknownRepositoryMetadata {
                    if let Some((repo, _)) = meta.key.strip_prefix(layout::REPOSITORIES).and_then(layout::split_repository_path) {
                        let repo = repo.to_string();
                        self.repo(&repo).stray_keys += 1;
                    }
                }
                self.strays.push(StrayKey { key: meta.key, size: meta.size, reason });
            }
        }
    }

    fn repo(&mut self, name: &str) -> &mut Repository {
        if !self.repositories.contains_key(name) {
            self.repositories.insert(name.to_string(), Repository::default());
        }
        self.repositories.get_mut(name).expect("inserted above")
    }

    fn tag(&mut self, repo: &str, tag: &str) -> &mut Tag {
        let r = self.repo(repo);
        if !r.tags.contains_key(tag) {
            r.tags.insert(tag.to_string(), Tag::default());
        }
        r.tags.get_mut(tag).expect("inserted above")
    }

    pub fn revision_count(&self) -> usize {
        self.repositories.values().map(|r| r.revisions.len()).sum()
    }

    pub fn tag_count(&self) -> usize {
        self.repositories.values().map(|r| r.tags.len()).sum()
    }

    pub fn blob_bytes(&self) -> u64 {
        self.blobs.values().map(|b| b.size).sum()
    }

    /// Lists the whole registry tree. Any listing error aborts: a partial picture
    /// must never reach the planner (invariant 1).
    pub async fn build(storage: &dyn Storage, concurrency: usize, progress: &Progress) -> Result<Inventory, InventoryError> {
        let mut inventory = Inventory::default();
        let plan = ListingPlan::make(storage, &mut inventory).await?;
        progress.set_listing_prefixes(plan.partitions.len() as u64);
        let mut stream = futures::stream::iter(plan.partitions)
            .map(|prefix| storage.list(&prefix))
            .flatten_unordered(concurrency.max(1));
        while let Some(item) = stream.next().await {
            inventory.insert(item?);
            progress.listed_key();
        }
        Ok(inventory)
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

/// How to list the tree: disjoint string prefixes whose union is everything
/// under `docker/registry/v2/`, listed concurrently, each a paginated stream.
///
/// On paged stores every prefix costs at most one partial page beyond the keys
/// it holds, so the number of prefixes follows the registry's size: one flat
/// listing when a single page holds it all; the 16 or 256 blob prefixes and
/// the top-level repository directories (grouped by first letters when there
/// are many) otherwise. On a filesystem, the finest split (every `<xx>`
/// directory, every top-level repository) spreads the directory reads.
struct ListingPlan {
    partitions: Vec<String>,
}

/// Split blobs by `<x>` (16 prefixes) up to this many estimated pages, by `<xx>`
/// (256) beyond.
const COARSE_BLOB_PAGES: usize = 64;
/// Top-level repository directories listed one by one up to this many.
const MAX_REPOSITORY_PARTITIONS: usize = 256;

impl ListingPlan {
    async fn make(storage: &dyn Storage, inv: &mut Inventory) -> Result<ListingPlan, InventoryError> {
        let mut blob_pages = usize::MAX; // unknown: split finely
        if let Some((first, complete)) = storage.list_first_page(layout::V2).await? {
            if complete {
                if first.is_empty() {
                    return Err(InventoryError::NotARegistry { location: storage.describe() });
                }
                first.into_iter().for_each(|o| inv.insert(o));
                return Ok(ListingPlan { partitions: Vec::new() });
            }
            blob_pages = estimate_blob_pages(&first, storage.list_page_size().unwrap_or(1000));
        }
        let fine = storage.list_page_size().is_none();
        let top = storage.list_dir(layout::V2).await?;
        if top.prefixes.is_empty() && top.objects.is_empty() {
            // Either no registry here, or one that has never stored anything: the
            // registry creates docker/registry/v2 with its first write.
            let parent = storage.list_dir("docker/registry/").await?;
            if !parent.prefixes.iter().any(|p| p == layout::V2) {
                return Err(InventoryError::NotARegistry { location: storage.describe() });
            }
        }
        let mut plan = ListingPlan { partitions: Vec::new() };
        for prefix in &top.prefixes {
            if prefix == layout::BLOBS && (fine || blob_pages > 2) {
                let level = storage.list_dir(prefix).await?;
                plan.keep_objects(inv, level.objects);
                for algorithm in level.prefixes {
                    if algorithm != format!("{}sha256/", layout::BLOBS) {
                        plan.partitions.push(algorithm);
                        continue;
                    }
                    let hex_level = storage.list_dir(&algorithm).await?;
                    let children = hex_level.prefixes;
                    let groups = if fine || blob_pages > COARSE_BLOB_PAGES { children } else { group_by_first_chars(&algorithm, children, 1) };
                    plan.keep_objects_outside(inv, hex_level.objects, &groups);
                    plan.partitions.extend(groups);
                }
            } else if prefix == layout::REPOSITORIES {
                let level = storage.list_dir(prefix).await?;
                let groups = if fine || level.prefixes.len() <= MAX_REPOSITORY_PARTITIONS {
                    level.prefixes
                } else {
                    group_by_first_chars(prefix, level.prefixes, 2)
                };
                plan.keep_objects_outside(inv, level.objects, &groups);
                plan.partitions.extend(groups);
            } else {
                plan.partitions.push(prefix.clone());
            }
        }
        plan.keep_objects(inv, top.objects);
        Ok(plan)
    }

    fn keep_objects(&self, inv: &mut Inventory, objects: Vec<ObjectMeta>) {
        objects.into_iter().for_each(|o| inv.insert(o));
    }

    /// Objects a `list_dir` returned at a level whose children are listed by
    /// group prefixes: those a group prefix covers will come again from it.
    fn keep_objects_outside(&self, inv: &mut Inventory, objects: Vec<ObjectMeta>, groups: &[String]) {
        for o in objects {
            if !groups.iter().any(|g| o.key.starts_with(g.as_str())) {
                inv.insert(o);
            }
        }
    }
}

/// Estimated pages of blob keys, from the first (sorted) page of the whole tree:
/// if that page ends at `blobs/sha256/<xx>/`, it covered (xx+1)/256 of them.
fn estimate_blob_pages(first: &[ObjectMeta], page_size: usize) -> usize {
    let sha = format!("{}sha256/", layout::BLOBS);
    let Some(last) = first.last() else { return 0 };
    let Some(rest) = last.key.strip_prefix(sha.as_str()) else {
        // the page went past the blobs (or never reached sha256): they fit in it
        return if last.key.as_str() > sha.as_str() { 1 } else { usize::MAX };
    };
    let covered = rest.get(..2).and_then(|h| u8::from_str_radix(h, 16).ok()).map_or(1, |v| v as usize + 1);
    let blob_keys = first.iter().filter(|o| o.key.starts_with(sha.as_str())).count();
    (blob_keys * 256 / covered).div_ceil(page_size)
}

/// Groups child prefixes (`parent` + name + `/`) by the first `depth` characters
/// of their names, as string prefixes. A name shorter than `depth` stays whole.
/// Each group prefix covers exactly its members, so the groups stay disjoint and
/// their union is the children's.
fn group_by_first_chars(parent: &str, children: Vec<String>, depth: usize) -> Vec<String> {
    let mut groups: Vec<String> = children
        .into_iter()
        .map(|child| {
            let name = &child[parent.len()..child.len() - 1];
            match name.char_indices().nth(depth) {
                Some((i, _)) => format!("{parent}{}", &name[..i]),
                None => child,
            }
        })
        .collect();
    groups.sort();
    groups.dedup();
    // a whole child `a/` and a group `a` would overlap: keep the group
    let set: std::collections::BTreeSet<String> = groups.iter().filter(|g| !g.ends_with('/')).cloned().collect();
    groups.retain(|g| !g.ends_with('/') || !set.iter().any(|s| g.starts_with(s.as_str())));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: String, t: i64) -> ObjectMeta {
        ObjectMeta { key, size: 7, last_modified_ms: t, etag: None }
    }

    #[test]
    fn etags_shaped_like_md5() {
        let md5 = [0x9e, 0x10, 0x7d, 0x9d, 0x37, 0x2b, 0xb6, 0x82, 0x6b, 0xd8, 0x1d, 0x35, 0x42, 0xa4, 0x19, 0xd6];
        assert_eq!(etag_md5("\"9e107d9d372bb6826bd81d3542a419d6\""), Some(md5));
        assert_eq!(etag_md5("nhB9nTcrtoJr2B01QqQZ1g=="), Some(md5));
        assert_eq!(etag_md5("\"9e107d9d372bb6826bd81d3542a419d6-2\""), None); // multipart
        assert_eq!(etag_md5("0x8DBB6C1E5A2D6F0"), None); // Azure
    }

    #[test]
    fn groups_cover_their_children_exactly_once() {
        let parent = "docker/registry/v2/repositories/";
        let children: Vec<String> = ["a/", "ab/", "abc/", "b/", "team-1/", "team-2/", "x/"].iter().map(|c| format!("{parent}{c}")).collect();
        let groups = group_by_first_chars(parent, children.clone(), 2);
        assert_eq!(groups, ["a/", "ab", "b/", "te", "x/"].iter().map(|g| format!("{parent}{g}")).collect::<Vec<_>>());
        for c in &children {
            assert_eq!(groups.iter().filter(|g| c.starts_with(g.as_str())).count(), 1, "{c}");
        }
    }

    #[test]
    fn blob_pages_are_estimated_from_the_first_page() {
        let page: Vec<ObjectMeta> = (0..1000).map(|i| meta(format!("{}sha256/{:02x}/{i:060}/data", layout::BLOBS, i / 250), 0)).collect();
        // 1000 blob keys covering 4 of 256 prefixes: about 64,000 blob keys
        assert_eq!(estimate_blob_pages(&page, 1000), 64);
        let past = vec![meta(format!("{}x/_layers/sha256/a/link", layout::REPOSITORIES), 0)];
        assert_eq!(estimate_blob_pages(&past, 1000), 1);
    }

    #[test]
    fn sorts_keys_into_repositories_tags_links_uploads_and_strays() {
        let d = Digest::from_hex(&"a".repeat(64)).unwrap();
        let mut inv = Inventory::default();
        inv.insert(meta(layout::blob_data_key(&d), 1));
        inv.insert(meta(layout::revision_key("a/b", &d), 2));
        inv.insert(meta(layout::tag_current_key("a/b", "v1"), 3));
        inv.insert(meta(layout::tag_index_key("a/b", "v1", &d), 4));
        inv.insert(meta(layout::layer_link_key("a", &d), 5));
        inv.insert(meta(layout::upload_key("a", "u1", "data"), 6));
        inv.insert(meta(layout::upload_key("a", "u1", "startedat"), 9));
        inv.insert(meta(format!("{}a/_manifests/revisions/sha256/zz/link", layout::REPOSITORIES), 7));
        inv.insert(meta(format!("{}blobs/sha256/aa/tmp-123", layout::V2), 8));

        assert_eq!(inv.keys_listed, 9);
        assert_eq!(inv.blobs[&d], BlobInfo { size: 7, modified_ms: 1 });
        let ab = &inv.repositories["a/b"];
        assert_eq!(ab.revisions[&d], 2);
        assert_eq!(ab.tags["v1"].current_modified_ms, Some(3));
        assert_eq!(ab.tags["v1"].index[&d], 4);
        let a = &inv.repositories["a"];
        assert_eq!(a.layers[&d], 5);
        assert_eq!(a.uploads["u1"].newest_ms(), 9);
        assert_eq!(a.uploads["u1"].bytes(), 14);
        assert_eq!(a.stray_keys, 1);
        assert_eq!(inv.strays.len(), 2);
    }
}
