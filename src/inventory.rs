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
                self.tag(repo, tag).current_modified_ms = Some(t);
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
        let top = storage.list_dir(layout::V2).await?;
        if top.prefixes.is_empty() && top.objects.is_empty() {
            // Either no registry here, or a registry that has never stored anything;
            // the registry creates docker/registry/v2 with its first write.
            let parent = storage.list_dir("docker/registry/").await?;
            if !parent.prefixes.iter().any(|p| p == layout::V2) {
                return Err(InventoryError::NotARegistry { location: storage.describe() });
            }
        }
        for object in top.objects {
            inventory.insert(object);
        }
        let mut leaves: Vec<String> = Vec::new();
        for prefix in top.prefixes {
            if prefix == layout::BLOBS || prefix == layout::REPOSITORIES {
                // Split one level further (two for blobs) so the prefixes can be
                // listed concurrently.
                let level = storage.list_dir(&prefix).await?;
                level.objects.into_iter().for_each(|o| inventory.insert(o));
                for sub in level.prefixes {
                    if prefix == layout::BLOBS {
                        let algorithm_level = storage.list_dir(&sub).await?;
                        algorithm_level.objects.into_iter().for_each(|o| inventory.insert(o));
                        leaves.extend(algorithm_level.prefixes);
                    } else {
                        leaves.push(sub);
                    }
                }
            } else {
                leaves.push(prefix);
            }
        }
        progress.set_listing_prefixes(leaves.len() as u64);
        let mut stream = futures::stream::iter(leaves)
            .map(|prefix| storage.list(&prefix))
            .flatten_unordered(concurrency.max(1));
        while let Some(item) = stream.next().await {
            inventory.insert(item?);
            progress.listed_key();
        }
        Ok(inventory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: String, t: i64) -> ObjectMeta {
        ObjectMeta { key, size: 7, last_modified_ms: t, etag: None }
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
