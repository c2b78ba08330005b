//! A record of what a scenario put into storage, and the GC outcome it implies.
//!
//! The expectations follow the project's semantics (not the 2.8 reference collector's bugs):
//!
//! - **Default mode**: every manifest with a revision link in any repository is kept, with
//!   its config and layers and its children's manifest blobs (`subject` is NOT followed). A
//!   child's own layers are kept only through a revision link of the child. Every other blob
//!   is deleted. Revision links are not touched.
//! - **Delete-untagged mode**, per repository: roots are the manifests the repo's tags point
//!   at now; a kept list/index keeps its children's revisions recursively; an untagged revision whose
//!   `subject` is a kept manifest is kept (iterated to a fixpoint, so a referrer of a
//!   referrer is kept); every other revision is collected. A blob survives if any
//!   repository keeps a manifest that is it or references it (recursively).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::tree;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// `garbage-collect` without `--delete-untagged`.
    Default,
    /// `--delete-untagged` (`-m`).
    DeleteUntagged,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Default, Mode::DeleteUntagged];
}

/// What one manifest blob references (parsed leniently).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestInfo {
    pub media_type: String,
    /// Config + layers (+ schema1 `fsLayers[].blobSum`), foreign layers excluded.
    pub blobs: Vec<String>,
    /// Child manifests of a list / index.
    pub children: Vec<String>,
    pub subject: Option<String>,
}

impl ManifestInfo {
    /// Lenient parse: `mediaType` if present, else the shape decides.
    pub fn parse(bytes: &[u8]) -> ManifestInfo {
        let v: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(_) => return ManifestInfo::default(),
        };
        let mut info = ManifestInfo {
            media_type: v["mediaType"].as_str().unwrap_or("").to_string(),
            ..Default::default()
        };
        let digest_of = |d: &serde_json::Value| d["digest"].as_str().map(str::to_string);
        let foreign =
            |d: &serde_json::Value| d["urls"].as_array().map(|u| !u.is_empty()).unwrap_or(false);
        if let Some(c) = v.get("config") {
            if let Some(d) = digest_of(c) {
                info.blobs.push(d);
            }
        }
        for l in v["layers"].as_array().into_iter().flatten() {
            if !foreign(l) {
                if let Some(d) = digest_of(l) {
                    info.blobs.push(d);
                }
            }
        }
        for l in v["fsLayers"].as_array().into_iter().flatten() {
            if let Some(d) = l["blobSum"].as_str() {
                info.blobs.push(d.to_string());
            }
        }
        for c in v["manifests"].as_array().into_iter().flatten() {
            if let Some(d) = digest_of(c) {
                info.children.push(d);
            }
        }
        if let Some(s) = v.get("subject") {
            info.subject = digest_of(s);
        }
        if info.media_type.is_empty() {
            info.media_type = if v["schemaVersion"].as_u64() == Some(1) {
                super::images::MT_SCHEMA1.into()
            } else if v.get("manifests").is_some() {
                super::images::MT_OCI_INDEX.into()
            } else {
                super::images::MT_OCI_MANIFEST.into()
            };
        }
        info
    }
}

/// One repository's metadata as the model sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoState {
    /// Digests with `_manifests/revisions/sha256/<hex>/link`.
    pub revisions: BTreeSet<String>,
    /// tag -> digest of `tags/<tag>/current/link`.
    pub tags: BTreeMap<String, String>,
    /// tag -> every digest in `tags/<tag>/index/sha256/<hex>/link` (the tag's history).
    pub tag_index: BTreeMap<String, BTreeSet<String>>,
    /// Digests with `_layers/sha256/<hex>/link` (every blob uploaded through this repo).
    pub layer_links: BTreeSet<String>,
    /// Upload uuids left in `_uploads/`.
    pub uploads: BTreeSet<String>,
}

/// Everything in storage that matters to a GC.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub repos: BTreeMap<String, RepoState>,
    /// Every manifest blob ever stored (by digest), parsed.
    pub manifests: BTreeMap<String, ManifestInfo>,
    /// Every digest with `blobs/sha256/../<hex>/data` (layers, configs, manifests).
    pub blobs: BTreeSet<String>,
}

/// The expected outcome of a GC run in one mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub mode: Mode,
    /// repo -> revisions that must still have their link.
    pub kept_revisions: BTreeMap<String, BTreeSet<String>>,
    /// repo -> revisions the collector should remove (empty in default mode).
    pub deleted_revisions: BTreeMap<String, BTreeSet<String>>,
    /// Blob digests whose data must survive.
    pub kept_blobs: BTreeSet<String>,
    /// Blob digests whose data must be gone.
    pub deleted_blobs: BTreeSet<String>,
    /// Informational (what a thorough collector may also clean; 2.8.2 never does):
    /// repo -> `_layers` links whose blob will not exist after the GC.
    pub dangling_layer_links: BTreeMap<String, BTreeSet<String>>,
    /// Informational: repo -> tag -> tag-index entries naming a digest that will not be a
    /// kept revision of that repo after the GC (the tag's current digest excluded).
    pub dangling_tag_index: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Model {
    pub fn repo_mut(&mut self, repo: &str) -> &mut RepoState {
        self.repos.entry(repo.to_string()).or_default()
    }

    /// A blob uploaded through `repo` (adds the blob and the repo's `_layers` link).
    pub fn record_blob(&mut self, repo: &str, digest: &str) {
        self.blobs.insert(digest.to_string());
        self.repo_mut(repo).layer_links.insert(digest.to_string());
    }

    /// A manifest put into `repo` (by digest if `tag` is None).
    pub fn record_manifest(&mut self, repo: &str, digest: &str, bytes: &[u8], tag: Option<&str>) {
        self.blobs.insert(digest.to_string());
        self.manifests
            .insert(digest.to_string(), ManifestInfo::parse(bytes));
        let r = self.repo_mut(repo);
        r.revisions.insert(digest.to_string());
        if let Some(t) = tag {
            r.tags.insert(t.to_string(), digest.to_string());
            r.tag_index
                .entry(t.to_string())
                .or_default()
                .insert(digest.to_string());
        }
    }

    /// DELETE /v2/<repo>/manifests/<digest> as 2.8.2 does it: the revision link goes, and
    /// every tag whose current link points at the digest goes entirely (its whole
    /// `tags/<tag>/` directory, history included). Other tags' index entries stay.
    pub fn record_delete(&mut self, repo: &str, digest: &str) {
        let r = self.repo_mut(repo);
        r.revisions.remove(digest);
        let gone: Vec<String> = r
            .tags
            .iter()
            .filter(|(_, d)| *d == digest)
            .map(|(t, _)| t.clone())
            .collect();
        for t in gone {
            r.tags.remove(&t);
            r.tag_index.remove(&t);
        }
    }

    pub fn record_upload(&mut self, repo: &str, uuid: &str) {
        self.repo_mut(repo).uploads.insert(uuid.to_string());
    }

    /// Revisions each repository keeps. Traversal goes through revisions of the same
    /// repository only: the registry serves a manifest (an index's child included) only
    /// through a revision link in the repository asked, so a child with no revision link
    /// here is not kept as a manifest (its blob is still referenced, see `expect`).
    pub fn kept_manifests(&self, mode: Mode) -> BTreeMap<String, BTreeSet<String>> {
        let mut res = BTreeMap::new();
        for (name, r) in &self.repos {
            let mut kept: BTreeSet<String> = BTreeSet::new();
            let mut stack: Vec<String> = match mode {
                Mode::Default => r.revisions.iter().cloned().collect(),
                Mode::DeleteUntagged => r.tags.values().cloned().collect(),
            };
            loop {
                while let Some(d) = stack.pop() {
                    if !r.revisions.contains(&d) || !kept.insert(d.clone()) {
                        continue;
                    }
                    if let Some(info) = self.manifests.get(&d) {
                        stack.extend(info.children.iter().cloned());
                    }
                }
                // Referrers: untagged revisions whose subject is kept.
                for rev in &r.revisions {
                    if kept.contains(rev) {
                        continue;
                    }
                    if let Some(s) = self.manifests.get(rev).and_then(|i| i.subject.as_ref()) {
                        if kept.contains(s) {
                            stack.push(rev.clone());
                        }
                    }
                }
                if stack.is_empty() {
                    break;
                }
            }
            res.insert(name.clone(), kept);
        }
        res
    }

    pub fn expect(&self, mode: Mode) -> Expectation {
        let kept = self.kept_manifests(mode);
        let mut kept_revisions = BTreeMap::new();
        let mut deleted_revisions = BTreeMap::new();
        let mut reach = BTreeSet::new();
        for (name, r) in &self.repos {
            let k = &kept[name];
            kept_revisions.insert(
                name.clone(),
                r.revisions
                    .intersection(k)
                    .cloned()
                    .collect::<BTreeSet<_>>(),
            );
            deleted_revisions.insert(
                name.clone(),
                r.revisions.difference(k).cloned().collect::<BTreeSet<_>>(),
            );
            // A kept manifest keeps itself, its config and layers, and its children's
            // manifest blobs (their layers only through their own revisions). A tag's
            // target blob is kept even without a revision link.
            for d in k.iter().chain(r.tags.values()) {
                reach.insert(d.clone());
                if !k.contains(d) {
                    continue;
                }
                if let Some(info) = self.manifests.get(d) {
                    reach.extend(info.blobs.iter().cloned());
                    reach.extend(info.children.iter().cloned());
                }
            }
        }
        let kept_blobs: BTreeSet<String> = self.blobs.intersection(&reach).cloned().collect();
        let deleted_blobs = self.blobs.difference(&kept_blobs).cloned().collect();
        let mut dangling_layer_links = BTreeMap::new();
        let mut dangling_tag_index = BTreeMap::new();
        for (name, r) in &self.repos {
            let dl: BTreeSet<String> = r.layer_links.difference(&kept_blobs).cloned().collect();
            if !dl.is_empty() {
                dangling_layer_links.insert(name.clone(), dl);
            }
            let kr = &kept_revisions[name];
            let mut per_tag = BTreeMap::new();
            for (tag, hist) in &r.tag_index {
                let cur = r.tags.get(tag);
                let d: BTreeSet<String> = hist
                    .iter()
                    .filter(|d| !kr.contains(*d) && Some(*d) != cur)
                    .cloned()
                    .collect();
                if !d.is_empty() {
                    per_tag.insert(tag.clone(), d);
                }
            }
            if !per_tag.is_empty() {
                dangling_tag_index.insert(name.clone(), per_tag);
            }
        }
        Expectation {
            mode,
            kept_revisions,
            deleted_revisions,
            kept_blobs,
            deleted_blobs,
            dangling_layer_links,
            dangling_tag_index,
        }
    }

    /// Compares the model with a tree on disk (blobs, revision links, tag current links,
    /// layer links, uploads). Returns every difference found.
    pub fn check_tree(&self, root: &Path) -> Result<(), String> {
        let mut errs = Vec::new();
        let disk_blobs = tree::blob_digests(root);
        diff_sets("blobs", &self.blobs, &disk_blobs, &mut errs);
        let disk_revs = tree::revisions(root);
        let disk_tags = tree::tags(root);
        let disk_layers = tree::layer_links(root);
        let disk_uploads = tree::uploads(root);
        let disk_tag_index = tree::tag_index(root);
        let empty = BTreeSet::new();
        let names: BTreeSet<&String> = self
            .repos
            .keys()
            .chain(disk_revs.keys())
            .chain(disk_tags.keys())
            .collect();
        for name in names {
            let r = self.repos.get(name).cloned().unwrap_or_default();
            diff_sets(
                &format!("{name} revisions"),
                &r.revisions,
                disk_revs.get(name).unwrap_or(&empty),
                &mut errs,
            );
            diff_sets(
                &format!("{name} layer links"),
                &r.layer_links,
                disk_layers.get(name).unwrap_or(&empty),
                &mut errs,
            );
            diff_sets(
                &format!("{name} uploads"),
                &r.uploads,
                disk_uploads.get(name).unwrap_or(&empty),
                &mut errs,
            );
            let dti = disk_tag_index.get(name).cloned().unwrap_or_default();
            if dti != r.tag_index {
                errs.push(format!(
                    "{name} tag index: model {:?} disk {:?}",
                    r.tag_index, dti
                ));
            }
            let dt = disk_tags.get(name).cloned().unwrap_or_default();
            if dt != r.tags {
                errs.push(format!("{name} tags: model {:?} disk {:?}", r.tags, dt));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("\n"))
        }
    }
}

fn diff_sets(
    what: &str,
    model: &BTreeSet<String>,
    disk: &BTreeSet<String>,
    errs: &mut Vec<String>,
) {
    let missing: Vec<_> = model.difference(disk).collect();
    let extra: Vec<_> = disk.difference(model).collect();
    if !missing.is_empty() {
        errs.push(format!("{what}: in model, not on disk: {missing:?}"));
    }
    if !extra.is_empty() {
        errs.push(format!("{what}: on disk, not in model: {extra:?}"));
    }
}
