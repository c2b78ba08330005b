//! The plan: a pure function from what was listed and read to what to delete,
//! each deletion with its reason and size. No I/O here, so it can be tested on
//! any graph and a dry run prints exactly what a real run would do.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::digest::Digest;
use crate::inventory::{Inventory, Repository};
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
}

/// Why a key is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
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
    /// once its data is gone.
    pub fn phase(self) -> u8 {
        match self {
            Reason::UntaggedManifest
            | Reason::UntaggedTagIndex
            | Reason::DanglingRevision
            | Reason::DanglingTagIndex
            | Reason::DanglingTag => 0,
            Reason::UnreferencedBlob => 1,
            Reason::DanglingLayerLink => 2,
            Reason::StaleUpload => 3,
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

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Deletion {
    pub key: String,
    pub reason: Reason,
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Sorted by sweep phase, then key.
    pub deletions: Vec<Deletion>,
    /// Repositories with nothing left in them after the sweep.
    pub empty_repositories: Vec<String>,
    /// Empty directories the registry (or an earlier run) left behind, older than
    /// the fence, below the structural ones (filesystems only), deepest first.
    pub empty_dirs: Vec<String>,
    pub remove_empty_repositories: bool,
    pub kept_blobs: u64,
    pub kept_blob_bytes: u64,
    /// Objects that would have been deleted but are younger than `--min-age`.
    pub spared_young: u64,
    pub warnings: Vec<Warning>,
}

impl Plan {
    pub fn deleted_blobs(&self) -> impl Iterator<Item = &Deletion> {
        self.deletions.iter().filter(|d| d.reason == Reason::UnreferencedBlob)
    }
}

/// The blobs kept manifests need, across repositories: each kept manifest itself,
/// its config and layers, and its children's manifest blobs. A child's own
/// layers are kept through the child's revision (see `kept_in_repository`).
struct KeptBlobs<'a> {
    marks: &'a Marks,
    kept: HashSet<Digest>,
    expanded: HashSet<Digest>,
}

impl KeptBlobs<'_> {
    fn keep_manifest(&mut self, d: Digest) {
        if !self.expanded.insert(d) {
            return;
        }
        self.kept.insert(d);
        let Some(refs) = self.marks.manifests.get(&d) else { return };
        self.kept.extend(refs.blobs.iter().copied());
        self.kept.extend(refs.children.iter().copied());
        for other in &refs.other_algorithm {
            if let Some(sha256) = self.marks.alternate_digests.get(other) {
                self.kept.insert(*sha256);
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
    tags: Option<&BTreeMap<String, TagTarget>>,
    marks: &Marks,
    opts: &PlanOptions,
    fence: i64,
) -> (HashSet<Digest>, bool) {
    let uncertain = tags.is_some_and(|t| t.values().any(|t| matches!(t, TagTarget::Junk(_))));
    if !opts.delete_untagged || uncertain {
        return (repo.revisions.keys().copied().collect(), uncertain && opts.delete_untagged);
    }
    let mut referrers: HashMap<Digest, Vec<Digest>> = HashMap::new();
    let mut roots: Vec<Digest> = tags
        .into_iter()
        .flat_map(|t| t.values())
        .filter_map(|t| if let TagTarget::Digest(d) = t { Some(*d) } else { None })
        .collect();
    for (d, modified) in &repo.revisions {
        if let Some(refs) = marks.manifests.get(d) {
            if let Some(subject) = refs.subject {
                referrers.entry(subject).or_default().push(*d);
            }
            if refs.is_pinned_by_scan() {
                roots.push(*d); // cannot tell what it is: keep it
            }
        }
        if *modified > fence {
            roots.push(*d);
        }
    }
    let mut kept = HashSet::new();
    while let Some(d) = roots.pop() {
        if !repo.revisions.contains_key(&d) || !kept.insert(d) {
            continue;
        }
        if let Some(refs) = marks.manifests.get(&d) {
            roots.extend(refs.children.iter().copied());
        }
        if let Some(rs) = referrers.get(&d) {
            roots.extend(rs.iter().copied());
        }
    }
    (kept, false)
}

pub fn plan(inv: &Inventory, marks: &Marks, opts: &PlanOptions) -> Plan {
    let fence = opts.now_ms - opts.min_age_ms;
    let young = |t: i64| t > fence;
    let mut out = Plan { remove_empty_repositories: opts.delete_empty_repositories, ..Plan::default() };

    // 1. What each repository keeps, and the blobs all kept manifests reach.
    let mut graph = KeptBlobs { marks, kept: HashSet::new(), expanded: HashSet::new() };
    let mut kept_by_repo: HashMap<&str, HashSet<Digest>> = HashMap::new();
    for (name, repo) in &inv.repositories {
        let (kept, uncertain) = kept_in_repository(repo, marks.tag_targets.get(name), marks, opts, fence);
        if uncertain {
            out.warnings.push(Warning::new(
                &layout::repository_prefix(name),
                "a tag link could not be read: every revision of this repository is kept",
            ));
        }
        for d in &kept {
            graph.keep_manifest(*d);
        }
        // A tag pointing at a digest with no revision here cannot be served, but
        // its blob is not ours to judge garbage: keep it.
        for target in marks.tag_targets.get(name).into_iter().flat_map(|t| t.values()) {
            if let TagTarget::Digest(d) = target {
                graph.kept.insert(*d);
            }
        }
        kept_by_repo.insert(name.as_str(), kept);
    }

    // 2. Blobs nothing keeps.
    let mut deleted_blobs: HashSet<Digest> = HashSet::new();
    for (d, info) in &inv.blobs {
        if graph.kept.contains(d) {
            out.kept_blobs += 1;
            out.kept_blob_bytes += info.size;
        } else if young(info.modified_ms) {
            out.spared_young += 1;
            out.kept_blobs += 1;
            out.kept_blob_bytes += info.size;
        } else {
            deleted_blobs.insert(*d);
            out.deletions.push(Deletion { key: layout::blob_data_key(d), reason: Reason::UnreferencedBlob, bytes: info.size });
        }
    }
    let present_after = |d: &Digest| inv.blobs.contains_key(d) && !deleted_blobs.contains(d);

    // 3. Links and uploads, per repository.
    for (name, repo) in &inv.repositories {
        let kept = &kept_by_repo[name.as_str()];
        let mut deletions: Vec<Deletion> = Vec::new();
        let mut spared = 0u64;
        let mut remove = |deletions: &mut Vec<Deletion>, key: String, reason: Reason, t: i64, bytes: u64| {
            if young(t) {
                spared += 1;
                false
            } else {
                deletions.push(Deletion { key, reason, bytes });
                true
            }
        };
        let collected = |d: &Digest| opts.delete_untagged && !kept.contains(d);

        let mut revisions_left = repo.revisions.len();
        for (d, t) in &repo.revisions {
            let reason = if collected(d) && inv.blobs.contains_key(d) {
                Some(Reason::UntaggedManifest)
            } else if !present_after(d) {
                Some(Reason::DanglingRevision)
            } else {
                None
            };
            if let Some(reason) = reason {
                if remove(&mut deletions, layout::revision_key(name, d), reason, *t, 0) {
                    revisions_left -= 1;
                }
            }
        }

        let targets = marks.tag_targets.get(name);
        let mut tags_left = 0;
        for (tag_name, tag) in &repo.tags {
            let target = targets.and_then(|t| t.get(tag_name));
            let current = match target {
                Some(TagTarget::Digest(d)) => Some(*d),
                _ => None,
            };
            let all_old = tag.current_modified_ms.is_none_or(|t| !young(t)) && tag.index.values().all(|t| !young(*t));
            if let (Some(cur), Some(cur_t)) = (current, tag.current_modified_ms) {
                if !present_after(&cur) && all_old {
                    remove(&mut deletions, layout::tag_current_key(name, tag_name), Reason::DanglingTag, cur_t, 0);
                    for (d, t) in &tag.index {
                        remove(&mut deletions, layout::tag_index_key(name, tag_name, d), Reason::DanglingTag, *t, 0);
                    }
                    continue;
                }
            }
            let mut entries_left = 0;
            for (d, t) in &tag.index {
                let reason = if current == Some(*d) {
                    None
                } else if collected(d) {
                    Some(Reason::UntaggedTagIndex)
                } else if !present_after(d) {
                    Some(Reason::DanglingTagIndex)
                } else {
                    None
                };
                let removed = match reason {
                    Some(reason) => remove(&mut deletions, layout::tag_index_key(name, tag_name, d), reason, *t, 0),
                    None => false,
                };
                if !removed {
                    entries_left += 1;
                }
            }
            if tag.current_modified_ms.is_some() || entries_left > 0 {
                tags_left += 1;
            }
        }

        let mut layers_left = repo.layers.len();
        for (d, t) in &repo.layers {
            if !present_after(d) && remove(&mut deletions, layout::layer_link_key(name, d), Reason::DanglingLayerLink, *t, 0) {
                layers_left -= 1;
            }
        }

        let mut uploads_left = 0;
        for (uuid, upload) in &repo.uploads {
            let newest = upload.newest_ms();
            let stale = newest < opts.now_ms - opts.upload_max_age_ms && !young(newest);
            if stale {
                for part in &upload.parts {
                    let key = layout::upload_key(name, uuid, &part.part);
                    remove(&mut deletions, key, Reason::StaleUpload, part.modified_ms, part.size);
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
            out.empty_repositories.push(name.clone());
        }
        out.deletions.extend(deletions);
    }

    // A directory may be empty only because a registry write is about to fill it;
    // those are young, and stay.
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for d in inv.empty_dirs.iter().filter(|d| d.removable && !young(d.modified_ms)) {
        // its parents may be left empty by its removal (a tag directory whose
        // `current/` and `index/` are both empty)
        let mut dir = d.key.as_str();
        while layout::is_removable_empty_dir(dir) && dirs.insert(dir.to_string()) {
            match dir.rfind('/') {
                Some(i) => dir = &dir[..i],
                None => break,
            }
        }
    }
    out.empty_dirs = dirs.into_iter().collect();
    out.empty_dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));

    out.deletions.sort_by(|a, b| (a.reason.phase(), &a.key).cmp(&(b.reason.phase(), &b.key)));
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
