//! The mark phase's reads: tag `current/link` files, alternate-algorithm links,
//! and every manifest blob reachable from a revision or a tag, each read once,
//! concurrently. What to keep is decided later by the planner, from these facts.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::StreamExt;

use crate::cache::ManifestCache;
use crate::digest::Digest;
use crate::inventory::Inventory;
use crate::layout;
use crate::manifest::{self, References};
use crate::progress::Progress;
use crate::report::Warning;
use crate::storage::{Storage, StorageError};

/// Link files hold 71 bytes; anything much larger is not a link.
const LINK_READ_LIMIT: u64 = 4096;

#[derive(Debug, Clone)]
pub struct MarkOptions {
    pub concurrency: usize,
    /// A manifest larger than this is refused (the run stops, nothing deleted).
    pub max_manifest_bytes: u64,
    /// Where manifests read before are kept (object stores).
    pub cache: Option<ManifestCache>,
}

/// What a tag's `current/link` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagTarget {
    Digest(Digest),
    /// Unreadable content: the tag's repository is then treated conservatively.
    Junk(String),
    /// Listed, then gone before it could be read (deleted concurrently).
    Vanished,
}

#[derive(Debug, Default)]
pub struct Marks {
    /// repository -> tag -> target, for every tag that has a `current/link`.
    pub tag_targets: BTreeMap<String, BTreeMap<String, TagTarget>>,
    /// Every manifest read, by digest.
    pub manifests: HashMap<Digest, References>,
    /// `sha512:…` (and other algorithms) -> the sha256 blob their link names.
    pub alternate_digests: HashMap<String, Digest>,
    pub warnings: Vec<Warning>,
    pub manifest_bytes_read: u64,
    /// Tags whose target was known from the listing's ETag, without a read.
    pub tags_matched_by_etag: u64,
    /// Manifests found in the local cache, without a read.
    pub manifest_cache_hits: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error("reading failed, nothing will be deleted: {0}")]
    Read(StorageError),
    #[error("{key}: blob was listed but is gone now; another collector may be running; nothing will be deleted")]
    Vanished { key: String },
    #[error("{0}; raise --max-manifest-size if this manifest is genuine; nothing will be deleted")]
    TooLarge(StorageError),
}

pub async fn mark(storage: &dyn Storage, inv: &Inventory, opts: &MarkOptions, progress: &Progress) -> Result<Marks, MarkError> {
    let mut marks = Marks::default();
    read_tags(storage, inv, opts, &mut marks).await?;
    read_alternate_links(storage, inv, opts, &mut marks).await?;
    read_manifests(storage, inv, opts, progress, &mut marks).await?;
    Ok(marks)
}

/// Tag targets known without reading: a tag link holds `sha256:<hex>` of a
/// revision of its own repository (the registry writes the revision first), so
/// when the listing's ETag equals the MD5 of that exact text for one of the
/// repository's revisions, that is the content. Any other ETag (multipart, KMS,
/// Azure's opaque ones, a link with a newline) matches nothing and is read.
fn tags_known_by_etag(inv: &Inventory, marks: &mut Marks) -> Vec<(String, String)> {
    use md5::{Digest as _, Md5};
    let mut unknown = Vec::new();
    for (repo, r) in &inv.repositories {
        let current: Vec<(&String, &crate::inventory::Tag)> = r.tags.iter().filter(|(_, t)| t.current_modified_ms.is_some()).collect();
        let by_md5: HashMap<[u8; 16], Digest> = if current.iter().any(|(_, t)| t.current_md5.is_some()) {
            r.revisions.keys().map(|d| (Md5::digest(d.to_string().as_bytes()).into(), *d)).collect()
        } else {
            HashMap::new()
        };
        for (tag, t) in current {
            match t.current_md5.and_then(|m| by_md5.get(&m)) {
                Some(d) => {
                    marks.tags_matched_by_etag += 1;
                    marks.tag_targets.entry(repo.clone()).or_default().insert(tag.clone(), TagTarget::Digest(*d));
                }
                None => unknown.push((repo.clone(), tag.clone())),
            }
        }
    }
    unknown
}

async fn read_tags(storage: &dyn Storage, inv: &Inventory, opts: &MarkOptions, marks: &mut Marks) -> Result<(), MarkError> {
    let tags = tags_known_by_etag(inv, marks);
    let mut reads = futures::stream::iter(tags)
        .map(|(repo, tag)| async move {
            let key = layout::tag_current_key(&repo, &tag);
            let result = storage.get(&key, LINK_READ_LIMIT).await;
            (repo, tag, key, result)
        })
        .buffer_unordered(opts.concurrency.max(1));
    while let Some((repo, tag, key, result)) = reads.next().await {
        let target = match result {
            Ok(bytes) => match std::str::from_utf8(&bytes).ok().and_then(|s| s.parse::<Digest>().ok()) {
                Some(d) => TagTarget::Digest(d),
                None => {
                    let reason = format!("tag link does not hold a sha256 digest: {:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(80)]));
                    marks.warnings.push(Warning::new(&key, &reason));
                    TagTarget::Junk(reason)
                }
            },
            Err(StorageError::NotFound { .. }) => TagTarget::Vanished,
            Err(e @ StorageError::TooLarge { .. }) => {
                marks.warnings.push(Warning::new(&key, &e.to_string()));
                TagTarget::Junk(e.to_string())
            }
            Err(e) => return Err(MarkError::Read(e)),
        };
        marks.tag_targets.entry(repo).or_default().insert(tag, target);
    }
    Ok(())
}

async fn read_alternate_links(storage: &dyn Storage, inv: &Inventory, opts: &MarkOptions, marks: &mut Marks) -> Result<(), MarkError> {
    let links = inv.repositories.iter().flat_map(|(repo, r)| r.alt_links.iter().map(move |l| (repo.as_str(), l)));
    let mut reads = futures::stream::iter(links)
        .map(|(repo, link)| async move {
            let key = layout::alt_link_key(repo, link.what, &link.algorithm, &link.encoded);
            let result = storage.get(&key, LINK_READ_LIMIT).await;
            (link, key, result)
        })
        .buffer_unordered(opts.concurrency.max(1));
    while let Some((link, key, result)) = reads.next().await {
        match result {
            Ok(bytes) => match std::str::from_utf8(&bytes).ok().and_then(|s| s.parse::<Digest>().ok()) {
                Some(d) => {
                    marks.alternate_digests.insert(format!("{}:{}", link.algorithm, link.encoded), d);
                }
                None => marks.warnings.push(Warning::new(&key, "alternate-algorithm link does not hold a sha256 digest")),
            },
            Err(StorageError::NotFound { .. }) => {}
            Err(e @ StorageError::TooLarge { .. }) => marks.warnings.push(Warning::new(&key, &e.to_string())),
            Err(e) => return Err(MarkError::Read(e)),
        }
    }
    Ok(())
}

/// Reads every manifest a repository links as a revision, once per digest.
/// Only revisions are read: the registry serves a manifest, an index's children
/// included, only through a revision link in the repository asked, so a child
/// with no revision link keeps its own blob (it is referenced) but not its layers.
async fn read_manifests(
    storage: &dyn Storage,
    inv: &Inventory,
    opts: &MarkOptions,
    progress: &Progress,
    marks: &mut Marks,
) -> Result<(), MarkError> {
    let digests: HashSet<Digest> =
        inv.repositories.values().flat_map(|r| r.revisions.keys()).filter(|d| inv.blobs.contains_key(d)).copied().collect();
    progress.start_phase("reading manifests", digests.len() as u64);
    let mut reads = futures::stream::iter(digests)
        .map(|digest| async move {
            let key = layout::blob_data_key(&digest);
            if let Some(cache) = &opts.cache {
                let cache = cache.clone();
                if let Ok(Some(bytes)) = tokio::task::spawn_blocking(move || cache.get(&digest)).await {
                    return (digest, key, Ok(bytes), true);
                }
            }
            let result = storage.get(&key, opts.max_manifest_bytes).await;
            if let (Some(cache), Ok(bytes)) = (&opts.cache, &result) {
                let (cache, bytes) = (cache.clone(), bytes.clone());
                let _ = tokio::task::spawn_blocking(move || cache.put(&digest, &bytes)).await;
            }
            (digest, key, result, false)
        })
        .buffer_unordered(opts.concurrency.max(1));
    while let Some((digest, key, result, cached)) = reads.next().await {
        progress.inc(1);
        marks.manifest_cache_hits += cached as u64;
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => return Err(MarkError::Vanished { key }),
            Err(e @ StorageError::TooLarge { .. }) => return Err(MarkError::TooLarge(e)),
            Err(e) => return Err(MarkError::Read(e)),
        };
        marks.manifest_bytes_read += bytes.len() as u64;
        let refs = manifest::parse(&bytes);
        if refs.is_pinned_by_scan() {
            let msg = format!(
                "manifest could not be parsed ({:?}); keeping every digest it mentions ({})",
                refs.kind,
                refs.blobs.len()
            );
            marks.warnings.push(Warning::new(&key, &msg));
        }
        for bad in &refs.invalid {
            marks.warnings.push(Warning::new(&key, &format!("manifest names an invalid digest {bad:?}")));
        }
        marks.manifests.insert(digest, refs);
    }
    Ok(())
}
