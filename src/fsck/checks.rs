//! The findings computation, the pure part of `fsck`: from what was listed,
//! marked and observed, every problem and informational finding, with the
//! images (`repo:tag`, or `repo@digest`) each one breaks.

use std::collections::{HashMap, HashSet};

use crate::digest::Digest;
use crate::digest_table::{DigestId, DigestSet};
use crate::inventory::{Inventory, Repository};
use crate::layout::{self, KeyKind};
use crate::manifest::{ManifestKind, Undecodable};
use crate::mark::{Marks, TagTarget};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A tag's current link names a manifest whose blob is missing.
    TagManifestMissing,
    /// A tag the registry lists (`tags/list`: every entry of `_manifests/tags/`)
    /// without a `current/link`: it cannot serve it.
    TagLinkMissing,
    /// A tag's current link names a manifest its repository links neither as
    /// a revision nor through `_layers`: the registry answers MANIFEST_UNKNOWN.
    TagNotARevision,
    /// A revision link whose manifest blob is missing.
    RevisionManifestMissing,
    /// A manifest's config or layer blob is missing.
    MissingBlob,
    /// An index's child manifest blob is missing.
    MissingChild,
    /// An index's child manifest exists but the repository links it neither
    /// as a revision nor through `_layers`.
    ChildNotARevision,
    /// A config or layer in storage that the image's repository has no `_layers`
    /// link for: the registry answers BLOB_UNKNOWN when it is pulled through it.
    BlobNotLinked,
    /// A link file that does not hold the digest its path names.
    JunkLink,
    /// A manifest blob that is not a JSON object.
    UnparseableManifest,
    /// A manifest distribution 2.8 cannot decode (no `schemaVersion`, one it
    /// does not read, a media type it does not read, a field of a JSON type
    /// its Go reader refuses): it answers 500 to a GET of it, by tag or by
    /// digest. An index listing one is served; pulling that child fails.
    UndecodableManifest,
    /// A blob whose content does not hash to its digest (a manifest as it is
    /// read, any blob with `--verify-content`).
    ContentMismatch,
    /// A blob nothing links or references.
    OrphanBlob,
    /// A `_layers` link whose blob is missing.
    DanglingLayerLink,
    /// A tag-history entry whose manifest blob is missing.
    DanglingTagIndex,
    /// A tag-history entry whose link does not hold its digest: 2.8 never
    /// reads these (a tag resolves through its `current/link` alone).
    JunkTagIndex,
    /// A tag's manifest, or an index's child, linked in its repository only
    /// through `_layers` (what 2.1.0 wrote): 2.8 serves it through that link.
    LayerLinkedManifest,
    /// JSON of a shape registry-gc does not know (kept whole by `gc`).
    UnknownManifest,
    /// A key that is not part of the registry layout.
    StrayKey,
}

impl Kind {
    pub fn is_problem(self) -> bool {
        !matches!(
            self,
            Kind::OrphanBlob
                | Kind::DanglingLayerLink
                | Kind::DanglingTagIndex
                | Kind::JunkTagIndex
                | Kind::LayerLinkedManifest
                | Kind::UnknownManifest
                | Kind::StrayKey
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::TagManifestMissing => "tags whose manifest is missing",
            Kind::TagLinkMissing => "tags listed by the registry without a current link",
            Kind::TagNotARevision => "tags pointing at a manifest not linked in their repository",
            Kind::RevisionManifestMissing => "revision links whose manifest is missing",
            Kind::MissingBlob => "images with a missing config or layer",
            Kind::MissingChild => "indexes with a missing child manifest",
            Kind::ChildNotARevision => "indexes with a child not linked in their repository",
            Kind::BlobNotLinked => "images with a config or layer not linked in their repository",
            Kind::JunkLink => "link files that do not hold their digest",
            Kind::UnparseableManifest => "manifests that are not JSON",
            Kind::UndecodableManifest => "manifests the registry cannot decode (500 to a pull)",
            Kind::ContentMismatch => "blobs whose content does not match their digest",
            Kind::OrphanBlob => "orphan blobs (no link or reference anywhere)",
            Kind::DanglingLayerLink => "layer links whose blob is missing",
            Kind::DanglingTagIndex => "tag history entries whose manifest is missing",
            Kind::JunkTagIndex => {
                "tag history entries that do not hold their digest (unread by the registry)"
            }
            Kind::LayerLinkedManifest => {
                "manifests linked only through _layers (the 2.1.0 layout, served by the registry)"
            }
            Kind::UnknownManifest => "manifests of an unknown shape",
            Kind::StrayKey => "stray keys (not part of the registry layout)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub kind: Kind,
    /// The storage key at fault (for a missing blob: the key that is missing).
    pub key: String,
    /// The images affected, as `repo:tag` (or `repo@digest` when no tag reaches them).
    pub images: Vec<String>,
    pub message: String,
}

/// What a manifest descriptor is, for naming a missing reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Config,
    Layer,
    Child,
    /// A blob of an OCI 1.1 draft artifact manifest.
    Blob,
    /// A non-distributable ("foreign") layer: not expected in storage.
    Foreign,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Config => "config",
            Role::Layer => "layer",
            Role::Child => "child manifest",
            Role::Blob => "blob",
            Role::Foreign => "foreign layer",
        }
    }
}

/// What a blob's content turned out to be (`--verify-content`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub blob: DigestId,
    pub actual: Digest,
    pub actual_size: u64,
}

/// What the I/O phase saw beyond the inventory and the marks.
#[derive(Debug, Default)]
pub struct Observed {
    /// Link files whose content is not their digest: (key, what they hold).
    pub junk_links: Vec<(String, String)>,
    /// Roles of the missing references in `Marks::missing_refs`, by (manifest, digest).
    pub roles: HashMap<(DigestId, Digest), Role>,
    pub mismatches: Vec<Mismatch>,
}

/// The roles of the references of one manifest, from its bytes.
pub fn reference_roles(bytes: &[u8]) -> HashMap<Digest, Role> {
    let mut out = HashMap::new();
    let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(bytes)
    else {
        return out;
    };
    let mut add = |desc: &serde_json::Value, field: &str, role: Role| {
        if let Some(d) = desc
            .get(field)
            .and_then(|d| d.as_str())
            .and_then(|d| d.parse::<Digest>().ok())
        {
            let foreign = desc
                .get("mediaType")
                .and_then(|t| t.as_str())
                .is_some_and(|t| t.contains("foreign") || t.contains("nondistributable"))
                || desc
                    .get("urls")
                    .and_then(|u| u.as_array())
                    .is_some_and(|u| !u.is_empty());
            out.insert(
                d,
                if foreign && role == Role::Layer {
                    Role::Foreign
                } else {
                    role
                },
            );
        }
    };
    let list = |key: &str| {
        m.get(key)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    if let Some(c) = m.get("config") {
        add(c, "digest", Role::Config);
    }
    for l in list("layers") {
        add(&l, "digest", Role::Layer);
    }
    for l in list("fsLayers") {
        add(&l, "blobSum", Role::Layer);
    }
    for c in list("manifests") {
        add(&c, "digest", Role::Child);
    }
    for b in list("blobs") {
        add(&b, "digest", Role::Blob);
    }
    out
}

/// The manifests repository `ri` serves through a `_layers` link alone,
/// sorted, each once: its tags' targets that have no revision link but a layer
/// link, and the children of the indexes it serves that are linked so (down
/// through such children that are indexes). 2.8 serves them through that link
/// (its manifest store tries the revision link, then the layer link, because
/// 2.1.0 linked manifests into `_layers`), and `mark` reads them as it reads
/// revisions.
fn layer_linked_manifests(inv: &Inventory, marks: &Marks, ri: usize) -> Vec<DigestId> {
    let repo = &inv.repositories[ri];
    let linked_only_so = |id: &DigestId| inv.has_blob(*id) && repo.linked_only_through_layers(*id);
    let mut out: Vec<DigestId> = marks.tag_targets[ri]
        .iter()
        .filter_map(|t| t.known())
        .filter(linked_only_so)
        .collect();
    let mut seen: HashSet<DigestId> = out.iter().copied().collect();
    let mut stack: Vec<DigestId> = repo
        .revisions
        .iter()
        .map(|l| l.digest)
        .chain(out.iter().copied())
        .collect();
    while let Some(m) = stack.pop() {
        let Some(refs) = marks.manifest(m).filter(|r| r.kind == ManifestKind::Index) else {
            continue;
        };
        for c in refs.children.iter().filter(|c| linked_only_so(c)) {
            if seen.insert(*c) {
                out.push(*c);
                stack.push(*c);
            }
        }
    }
    out.sort_unstable();
    out
}

/// Names images by `repo:tag`, following index children up to the tags that
/// reach them.
struct Names<'a> {
    inv: &'a Inventory,
    repo: &'a Repository,
    /// Digest id -> the tags pointing at it directly.
    tags: HashMap<DigestId, Vec<&'a str>>,
    /// Child -> the indexes (served here) that list it.
    parents: HashMap<DigestId, Vec<DigestId>>,
    /// `layer_linked_manifests` of the repository.
    layer_linked: Vec<DigestId>,
}

impl<'a> Names<'a> {
    fn new(inv: &'a Inventory, marks: &Marks, ri: usize) -> Names<'a> {
        let repo = &inv.repositories[ri];
        let mut tags: HashMap<DigestId, Vec<&str>> = HashMap::new();
        for (ti, t) in marks.tag_targets[ri].iter().enumerate() {
            if let Some(id) = t.known() {
                tags.entry(id).or_default().push(repo.tag_name(ti as u32));
            }
        }
        let layer_linked = layer_linked_manifests(inv, marks, ri);
        let served = repo
            .revisions
            .iter()
            .map(|l| l.digest)
            .chain(layer_linked.iter().copied());
        let mut parents: HashMap<DigestId, Vec<DigestId>> = HashMap::new();
        for m in served {
            if let Some(refs) = marks.manifest(m) {
                if refs.kind == ManifestKind::Index {
                    for c in refs.children {
                        parents.entry(*c).or_default().push(m);
                    }
                }
            }
        }
        // an index's missing children are still its children, for naming
        for (m, d) in &marks.missing_refs {
            let served = repo.has_revision(*m) || layer_linked.binary_search(m).is_ok();
            if let (true, Some(c)) = (served, inv.digests.find(d)) {
                if marks
                    .manifest(*m)
                    .is_some_and(|r| r.kind == ManifestKind::Index)
                {
                    parents.entry(c).or_default().push(*m);
                }
            }
        }
        Names {
            inv,
            repo,
            tags,
            parents,
            layer_linked,
        }
    }

    /// The manifests the registry serves from the repository that were read:
    /// its revisions with a blob, and the tags' targets linked only through
    /// `_layers`.
    fn served(&self) -> impl Iterator<Item = DigestId> + '_ {
        self.repo
            .revisions
            .iter()
            .map(|l| l.digest)
            .filter(|id| self.inv.has_blob(*id))
            .chain(self.layer_linked.iter().copied())
    }

    /// Whether an index served here lists `id`.
    fn is_child(&self, id: DigestId) -> bool {
        self.parents.contains_key(&id)
    }

    fn is_layer_linked(&self, id: DigestId) -> bool {
        self.layer_linked.binary_search(&id).is_ok()
    }

    /// `repo:tag` for every tag reaching `id` (directly or through indexes), or
    /// `repo@digest` when none does.
    fn of(&self, id: DigestId) -> Vec<String> {
        let mut seen = vec![id];
        let mut queue = vec![id];
        let mut out = Vec::new();
        while let Some(d) = queue.pop() {
            for t in self.tags.get(&d).into_iter().flatten() {
                out.push(format!("{}:{t}", self.repo.name));
            }
            for p in self.parents.get(&d).into_iter().flatten() {
                if !seen.contains(p) {
                    seen.push(*p);
                    queue.push(*p);
                }
            }
        }
        if out.is_empty() {
            out.push(format!("{}@{}", self.repo.name, self.inv.digests.get(id)));
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The (repository, tag) the registry lists for a key below a repository's
/// `_manifests/tags/`: the name of the entry there.
fn listed_tag(key: &str) -> Option<(&str, &str)> {
    let (r, meta) = layout::split_repository_path(key.strip_prefix(layout::REPOSITORIES)?)?;
    let tag = meta.strip_prefix("_manifests/tags/")?.split('/').next()?;
    Some((r, tag)).filter(|_| !tag.is_empty())
}

const TAG_LISTED_FOR_A_STRAY: &str = "a stray key below _manifests/tags/ makes the registry list this tag, which has no current link: it cannot serve it; remove the stray key";

const TAG_LINK_MISSING: &str = "the tag has no current link: the registry lists it but cannot serve it (MANIFEST_UNKNOWN); push the tag again, or remove its directory";

/// Every finding, from what was listed, marked and observed: the pure part of `fsck`.
pub fn findings(inv: &Inventory, marks: &Marks, obs: &Observed) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |kind, key: String, images: Vec<String>, message: String| {
        out.push(Finding {
            kind,
            key,
            images,
            message,
        })
    };
    let mut missing_of: HashMap<DigestId, Vec<Digest>> = HashMap::new();
    for (m, d) in &marks.missing_refs {
        missing_of.entry(*m).or_default().push(*d);
    }
    let undecodable: HashMap<DigestId, &Undecodable> =
        marks.undecodable.iter().map(|(m, why)| (*m, why)).collect();

    for (ri, repo) in inv.repositories.iter().enumerate() {
        let names = Names::new(inv, marks, ri);
        let r = repo.name.as_str();

        for (ti, (tag, tag_name)) in repo.tags.iter().zip(repo.tag_names()).enumerate() {
            let key = layout::tag_current_key(r, tag_name);
            let image = vec![format!("{r}:{tag_name}")];
            if tag.current.is_none() {
                // a tag with history entries only
                push(Kind::TagLinkMissing, key, image, TAG_LINK_MISSING.into());
                continue;
            }
            let target = marks.tag_targets[ri][ti];
            if let Some(reason) = marks.junk_reason(target) {
                push(Kind::JunkLink, key, image, reason.to_string());
            } else if let Some(d) = marks.target_digest(inv, target) {
                match target.known().filter(|id| inv.has_blob(*id)) {
                    None => push(
                        Kind::TagManifestMissing,
                        key,
                        image,
                        format!("points at {d}, whose manifest blob is missing"),
                    ),
                    Some(id) if names.is_layer_linked(id) => push(
                        Kind::LayerLinkedManifest,
                        layout::layer_link_key(r, &d),
                        names.of(id),
                        format!("manifest {d} has no revision link in {r}, only a _layers link (the 2.1.0 layout): the registry serves it through that link, and `gc` keeps it; the registry's own garbage-collect marks from revision links only and deletes it (pushing it again links it as a revision)"),
                    ),
                    Some(id) if !repo.has_revision(id) => push(
                        Kind::TagNotARevision,
                        key,
                        image,
                        format!("points at {d}, which is not a revision of {r}"),
                    ),
                    Some(_) => {}
                }
            }
        }

        for l in repo.revisions.iter().filter(|l| !inv.has_blob(l.digest)) {
            let d = inv.digests.get(l.digest);
            let msg = format!("manifest {d} is linked but its blob is missing");
            push(
                Kind::RevisionManifestMissing,
                layout::revision_key(r, d),
                names.of(l.digest),
                msg,
            );
        }

        for id in names.served() {
            let d = inv.digests.get(id);
            let Some(refs) = marks.manifest(id) else {
                continue;
            };
            let manifest_key = layout::blob_data_key(d);
            if let Some(why) = undecodable.get(&id) {
                let mut msg = format!("manifest {d}: {why}; distribution 2.8 cannot decode it and answers 500 to a GET of it, by tag or by digest");
                if names.is_child(id) {
                    msg.push_str(" (an index listing it is served, but pulling this child fails)");
                }
                push(
                    Kind::UndecodableManifest,
                    manifest_key.clone(),
                    names.of(id),
                    msg,
                );
            }
            match refs.kind {
                ManifestKind::Unparseable => {
                    push(
                        Kind::UnparseableManifest,
                        manifest_key,
                        names.of(id),
                        format!("manifest {d} is not a JSON object"),
                    );
                    continue;
                }
                ManifestKind::Unknown => {
                    let msg = format!("manifest {d} has a shape registry-gc does not know; gc keeps every digest it mentions");
                    push(Kind::UnknownManifest, manifest_key, names.of(id), msg);
                    continue;
                }
                _ => {}
            }
            for missing in missing_of.get(&id).into_iter().flatten() {
                let role = obs.roles.get(&(id, *missing)).copied();
                let kind = match role {
                    Some(Role::Foreign) => continue,
                    // mentioned only in an unknown media type's other fields
                    None => continue,
                    Some(Role::Child) => Kind::MissingChild,
                    Some(_) => Kind::MissingBlob,
                };
                let role = role.map_or("reference", Role::name);
                let msg = format!("{role} {missing} of manifest {d} is missing");
                push(kind, layout::blob_data_key(missing), names.of(id), msg);
            }
            // An image manifest with "children" had an unknown media type: its
            // blobs include every digest it mentions, not only descriptors.
            let plain_image = matches!(
                refs.kind,
                ManifestKind::Image | ManifestKind::Schema1 | ManifestKind::Artifact
            ) && refs.children.is_empty();
            if plain_image {
                for b in refs
                    .blobs
                    .iter()
                    .filter(|b| repo.layers.binary_search_by_key(*b, |l| l.digest).is_err())
                {
                    let msg = format!(
                        "{} of manifest {d} is in storage but not linked in {r}: pulls fail with BLOB_UNKNOWN",
                        inv.digests.get(*b)
                    );
                    push(
                        Kind::BlobNotLinked,
                        layout::layer_link_key(r, inv.digests.get(*b)),
                        names.of(id),
                        msg,
                    );
                }
            }
            if refs.kind == ManifestKind::Index {
                for c in refs.children.iter().filter(|c| !repo.has_revision(**c)) {
                    let cd = inv.digests.get(*c);
                    if names.tags.contains_key(c) && names.is_layer_linked(*c) {
                        // a tag's target too: reported as such
                    } else if repo.has_layer_link(*c) {
                        let msg = format!("child manifest {cd} of index {d} has no revision link in {r}, only a _layers link (the 2.1.0 layout): the registry serves it through that link, and `gc` keeps it with what it references");
                        push(
                            Kind::LayerLinkedManifest,
                            layout::layer_link_key(r, cd),
                            names.of(id),
                            msg,
                        );
                    } else {
                        let msg = format!(
                            "child manifest {cd} of index {d} is not a revision of {r}: the registry cannot serve it here"
                        );
                        push(
                            Kind::ChildNotARevision,
                            layout::revision_key(r, cd),
                            names.of(id),
                            msg,
                        );
                    }
                }
            }
        }

        for l in repo.layers.iter().filter(|l| !inv.has_blob(l.digest)) {
            let d = inv.digests.get(l.digest);
            push(
                Kind::DanglingLayerLink,
                layout::layer_link_key(r, d),
                Vec::new(),
                format!("blob {d} is missing"),
            );
        }

        for h in &repo.history {
            let (tag, tag_name) = (&repo.tags[h.tag as usize], repo.tag_name(h.tag));
            // the current target's entry is reported with the tag
            let reported_with_tag = tag.current.is_some()
                && marks.tag_targets[ri][h.tag as usize] == TagTarget::Known(h.link.digest);
            if !inv.has_blob(h.link.digest) && !reported_with_tag {
                let d = inv.digests.get(h.link.digest);
                let msg = format!("tag history entry for {d}, whose manifest blob is missing");
                push(
                    Kind::DanglingTagIndex,
                    layout::tag_index_key(r, tag_name, d),
                    vec![format!("{r}:{tag_name}")],
                    msg,
                );
            }
        }
    }

    // The registry lists every entry of `_manifests/tags/` as a tag, file or
    // directory. A tag the listing knows was checked above; what else is
    // there is a tag with no current link: on a filesystem a directory with
    // nothing in it (or only empty directories), anywhere a stray key, there
    // or in a directory of its own.
    let unknown_tag = |(r, tag): &(&str, &str)| {
        inv.repository(r)
            .is_none_or(|repo| repo.tag_id(tag).is_none())
    };
    // One tag may be listed for several such keys: it is named once. An empty
    // directory in it wins over a stray key: removing the stray key would
    // leave the tag listed, removing its directory does not (the stray key is
    // a finding of its own).
    let mut unlinked_tags: HashMap<(String, String), &str> = HashMap::new();
    for s in &inv.strays {
        if let Some((r, tag)) = listed_tag(&s.key).filter(unknown_tag) {
            unlinked_tags
                .entry((r.to_string(), tag.to_string()))
                .or_insert(TAG_LISTED_FOR_A_STRAY);
        }
    }
    for i in 0..inv.empty_dirs.len() {
        let dir = inv.empty_dir(i);
        if let Some((r, tag)) = listed_tag(&dir.key).filter(unknown_tag) {
            unlinked_tags.insert((r.to_string(), tag.to_string()), TAG_LINK_MISSING);
        }
    }
    for ((r, tag), message) in unlinked_tags {
        push(
            Kind::TagLinkMissing,
            layout::tag_current_key(&r, &tag),
            vec![format!("{r}:{tag}")],
            message.into(),
        );
    }

    for (key, content) in &obs.junk_links {
        let images = match layout::classify(key) {
            // 2.8 resolves a tag by its current link alone: a push writes a
            // history entry, a delete removes it, nothing reads it
            KeyKind::TagIndex { repo, tag, .. } => {
                let msg = format!("holds {content}; the registry never reads tag history entries");
                push(
                    Kind::JunkTagIndex,
                    key.clone(),
                    vec![format!("{repo}:{tag}")],
                    msg,
                );
                continue;
            }
            KeyKind::TagCurrent { repo, tag } => vec![format!("{repo}:{tag}")],
            KeyKind::Revision { repo, digest } => {
                match (
                    inv.repositories
                        .binary_search_by(|r| r.name.as_str().cmp(repo)),
                    inv.digests.find(&digest),
                ) {
                    (Ok(ri), Some(id)) => Names::new(inv, marks, ri).of(id),
                    _ => Vec::new(),
                }
            }
            // the registry cannot serve the blob through this repository: the
            // images whose config or layer it is do not pull, nor a manifest
            // served through this link (the 2.1.0 layout)
            KeyKind::LayerLink { repo, digest } => {
                match (
                    inv.repositories
                        .binary_search_by(|r| r.name.as_str().cmp(repo)),
                    inv.digests.find(&digest),
                ) {
                    (Ok(ri), Some(id)) => {
                        let names = Names::new(inv, marks, ri);
                        let users = names.served().filter(|m| {
                            marks
                                .manifest(*m)
                                .is_some_and(|r| !r.is_pinned_by_scan() && r.blobs.contains(&id))
                        });
                        let served_here = Some(id).filter(|id| names.is_layer_linked(*id));
                        let mut images: Vec<String> =
                            users.chain(served_here).flat_map(|m| names.of(m)).collect();
                        images.sort();
                        images.dedup();
                        images
                    }
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        push(
            Kind::JunkLink,
            key.clone(),
            images,
            format!("holds {content}"),
        );
    }
    for w in &marks.warnings {
        if matches!(layout::classify(&w.key), KeyKind::AltLink { .. }) {
            push(Kind::JunkLink, w.key.clone(), Vec::new(), w.message.clone());
        }
    }

    // Blobs whose content is not their digest: those `--verify-content` hashed,
    // and the manifests the mark phase found so (without `--verify-content`
    // too), each once.
    let mut mismatches: Vec<Mismatch> = obs.mismatches.clone();
    for c in &marks.corrupt_manifests {
        if !mismatches.iter().any(|m| m.blob == c.id) {
            mismatches.push(Mismatch {
                blob: c.id,
                actual: c.actual,
                actual_size: c.len,
            });
        }
    }
    let corrupt_manifest = |id: DigestId| marks.corrupt_manifests.iter().any(|c| c.id == id);
    if !mismatches.is_empty() {
        // the images whose manifests reference (or are) a mismatched blob
        let bad: HashMap<DigestId, &Mismatch> = mismatches.iter().map(|m| (m.blob, m)).collect();
        let mut images: HashMap<DigestId, Vec<String>> = HashMap::new();
        for ri in 0..inv.repositories.len() {
            let names = Names::new(inv, marks, ri);
            for m in names.served() {
                let refs = marks.manifest(m);
                let all = std::iter::once(m).chain(
                    refs.iter()
                        .flat_map(|r| r.blobs.iter().chain(r.children).copied()),
                );
                for b in all.filter(|b| bad.contains_key(b)) {
                    images.entry(b).or_default().extend(names.of(m));
                }
            }
        }
        for m in &mismatches {
            let d = inv.digests.get(m.blob);
            let mut imgs = images.remove(&m.blob).unwrap_or_default();
            imgs.sort();
            imgs.dedup();
            let mut msg = format!("content hashes to {} ({} bytes)", m.actual, m.actual_size);
            if corrupt_manifest(m.blob) {
                msg.push_str(
                    "; a manifest: what it references is unknown, and `gc` refuses to run until it is repaired",
                );
            }
            push(Kind::ContentMismatch, layout::blob_data_key(d), imgs, msg);
        }
    }

    // Orphans: blobs no link and no read manifest names.
    let mut named = DigestSet::with_len(inv.digests.len());
    for (ri, repo) in inv.repositories.iter().enumerate() {
        for l in repo.revisions.iter().chain(&repo.layers) {
            named.insert(l.digest);
        }
        for h in &repo.history {
            named.insert(h.link.digest);
        }
        for t in &marks.tag_targets[ri] {
            if let Some(id) = t.known() {
                named.insert(id);
            }
        }
        let read = repo
            .revisions
            .iter()
            .map(|l| l.digest)
            .chain(layer_linked_manifests(inv, marks, ri));
        for m in read {
            if let Some(refs) = marks.manifest(m) {
                for b in refs
                    .blobs
                    .iter()
                    .chain(refs.children)
                    .chain(marks.other_algorithm_blobs(m))
                {
                    named.insert(*b);
                }
            }
        }
    }
    for d in marks.alternate_digests.values() {
        if let Some(id) = inv.digests.find(d) {
            named.insert(id);
        }
    }
    // A corrupt manifest's references are unknown: what its bytes still
    // mention is not called an orphan, and no other unnamed blob is called
    // garbage while one exists (it may be a reference whose digest the
    // corruption changed; `gc` refuses to run then anyway).
    for c in &marks.corrupt_manifests {
        for m in &c.mentions {
            named.insert(*m);
        }
    }
    let orphan_note = if marks.corrupt_manifests.is_empty() {
        "`gc` deletes it"
    } else {
        "no link or readable manifest names it, but a corrupt manifest's references are unknown: it may be one of them (`gc` refuses to run until that manifest is repaired)"
    };
    for (id, info) in inv.blobs().filter(|(id, _)| !named.contains(*id)) {
        let key = layout::blob_data_key(inv.digests.get(id));
        push(
            Kind::OrphanBlob,
            key,
            Vec::new(),
            format!("{} bytes; {orphan_note}", info.size),
        );
    }

    for s in &inv.strays {
        push(
            Kind::StrayKey,
            s.key.clone(),
            Vec::new(),
            s.reason.describe().to_string(),
        );
    }

    out.sort_by(|a, b| (a.kind, &a.key, &a.message).cmp(&(b.kind, &b.key, &b.message)));
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;
    use crate::fsck::{Checked, FsckReport};
    use crate::manifest::References;
    use crate::mark::TagLink;
    use crate::storage::ObjectMeta;

    fn dg(n: u8) -> Digest {
        Digest::from_bytes([n; 32])
    }

    fn refs(kind: ManifestKind, blobs: &[Digest], children: &[Digest]) -> References {
        References {
            kind,
            blobs: blobs.to_vec(),
            children: children.to_vec(),
            subject: None,
            other_algorithm: vec![],
            invalid: vec![],
            undecodable: None,
        }
    }

    /// A registry from its keys, the manifests' references and the tags' targets.
    fn build(
        keys: &[String],
        manifests: &[(Digest, References)],
        tags: &[(&str, &str, TagLink)],
    ) -> (Inventory, Marks) {
        let mut inv = Inventory::default();
        for k in keys {
            inv.insert(ObjectMeta {
                key: k.clone(),
                size: 10,
                last_modified_ms: 0,
                etag: None,
            });
        }
        inv.finish();
        let mut marks = Marks::default();
        marks.set_tag_links(&inv, |repo, tag| {
            tags.iter()
                .find(|t| t.0 == repo && t.1 == tag)
                .map_or(TagLink::None, |t| t.2.clone())
        });
        for (m, r) in manifests {
            if let Some(id) = inv.digests.find(m).filter(|id| inv.has_blob(*id)) {
                marks.record(&inv, id, r);
            }
        }
        (inv, marks)
    }

    fn kinds(f: &[Finding]) -> Vec<(Kind, String)> {
        f.iter().map(|f| (f.kind, f.key.clone())).collect()
    }

    #[test]
    fn a_healthy_registry_has_no_findings() {
        let (m, l1, cfg) = (dg(1), dg(2), dg(3));
        let keys = vec![
            layout::blob_data_key(&m),
            layout::blob_data_key(&l1),
            layout::blob_data_key(&cfg),
            layout::revision_key("a", &m),
            layout::layer_link_key("a", &l1),
            layout::layer_link_key("a", &cfg),
            layout::tag_current_key("a", "v1"),
            layout::tag_index_key("a", "v1", &m),
        ];
        let (inv, marks) = build(
            &keys,
            &[(m, refs(ManifestKind::Image, &[cfg, l1], &[]))],
            &[("a", "v1", TagLink::Digest(m))],
        );
        assert_eq!(findings(&inv, &marks, &Observed::default()), vec![]);
    }

    #[test]
    fn names_broken_images_by_tag_through_indexes() {
        let (child, idx, layer, cfg, gone_child) = (dg(1), dg(2), dg(3), dg(4), dg(5));
        let keys = vec![
            layout::blob_data_key(&child),
            layout::blob_data_key(&idx),
            layout::blob_data_key(&cfg),
            layout::layer_link_key("r", &cfg),
            // layer data missing, its link dangling
            layout::layer_link_key("r", &layer),
            layout::revision_key("r", &child),
            layout::revision_key("r", &idx),
            layout::tag_current_key("r", "multi"),
        ];
        let manifests = [
            (child, refs(ManifestKind::Image, &[cfg, layer], &[])),
            (idx, refs(ManifestKind::Index, &[], &[child, gone_child])),
        ];
        let (inv, marks) = build(&keys, &manifests, &[("r", "multi", TagLink::Digest(idx))]);
        let mut obs = Observed::default();
        let (cid, iid) = (
            inv.digests.find(&child).unwrap(),
            inv.digests.find(&idx).unwrap(),
        );
        obs.roles.insert((cid, layer), Role::Layer);
        obs.roles.insert((iid, gone_child), Role::Child);
        let f = findings(&inv, &marks, &obs);
        assert_eq!(
            kinds(&f),
            vec![
                (Kind::MissingBlob, layout::blob_data_key(&layer)),
                (Kind::MissingChild, layout::blob_data_key(&gone_child)),
                (Kind::DanglingLayerLink, layout::layer_link_key("r", &layer)),
            ]
        );
        assert_eq!(
            f[0].images,
            vec!["r:multi".to_string()],
            "the child is named by the tag of its index"
        );
        assert!(f[0].message.starts_with("layer "), "{}", f[0].message);
        assert_eq!(f[1].images, vec!["r:multi".to_string()]);
        assert!(f.iter().all(|f| f.kind != Kind::OrphanBlob));
    }

    #[test]
    fn tags_revisions_children_orphans_strays_and_junk() {
        let (m, gone, elsewhere, orphan, child) = (dg(1), dg(2), dg(3), dg(4), dg(5));
        let keys = vec![
            layout::blob_data_key(&m),
            layout::blob_data_key(&elsewhere),
            layout::blob_data_key(&orphan),
            layout::blob_data_key(&child),
            layout::revision_key("r", &m),
            layout::revision_key("r", &gone),
            layout::revision_key("other", &elsewhere),
            layout::revision_key("other", &child),
            layout::tag_current_key("r", "gone"),
            layout::tag_index_key("r", "gone", &gone),
            layout::tag_current_key("r", "foreign"),
            layout::tag_current_key("r", "junk"),
            layout::tag_index_key("r", "old", &gone),
            format!("{}blobs/sha256/aa/tmp-1", layout::V2),
        ];
        let manifests = [(m, refs(ManifestKind::Index, &[], &[child]))];
        let tags = [
            ("r", "gone", TagLink::Digest(gone)),
            ("r", "foreign", TagLink::Digest(elsewhere)),
            ("r", "junk", TagLink::Junk("not a digest".into())),
        ];
        let (inv, marks) = build(&keys, &manifests, &tags);
        let mut obs = Observed::default();
        obs.junk_links
            .push((layout::revision_key("r", &m), "\"x\"".into()));
        let f = findings(&inv, &marks, &obs);
        let mut want = vec![
            (
                Kind::TagManifestMissing,
                layout::tag_current_key("r", "gone"),
            ),
            (
                Kind::TagNotARevision,
                layout::tag_current_key("r", "foreign"),
            ),
            (
                Kind::RevisionManifestMissing,
                layout::revision_key("r", &gone),
            ),
            (Kind::ChildNotARevision, layout::revision_key("r", &child)),
            (Kind::JunkLink, layout::tag_current_key("r", "junk")),
            (Kind::JunkLink, layout::revision_key("r", &m)),
            (Kind::OrphanBlob, layout::blob_data_key(&orphan)),
            (
                Kind::DanglingTagIndex,
                layout::tag_index_key("r", "old", &gone),
            ),
            // a tag with history and no current link: listed, not served
            (Kind::TagLinkMissing, layout::tag_current_key("r", "old")),
            (
                Kind::StrayKey,
                format!("{}blobs/sha256/aa/tmp-1", layout::V2),
            ),
        ];
        want.sort();
        let mut got = kinds(&f);
        got.sort();
        assert_eq!(got, want);
        let junk = f
            .iter()
            .find(|f| f.key == layout::revision_key("r", &m))
            .unwrap();
        assert_eq!(
            junk.images,
            vec![format!("r@{m}")],
            "an untagged manifest is named by digest"
        );
    }

    #[test]
    fn foreign_layers_are_not_missing_and_mismatches_name_images() {
        let (m, foreign, layer) = (dg(1), dg(2), dg(3));
        let keys = vec![
            layout::blob_data_key(&m),
            layout::blob_data_key(&layer),
            layout::layer_link_key("r", &layer),
            layout::revision_key("r", &m),
            layout::tag_current_key("r", "v1"),
        ];
        let (inv, marks) = build(
            &keys,
            &[(m, refs(ManifestKind::Image, &[foreign, layer], &[]))],
            &[("r", "v1", TagLink::Digest(m))],
        );
        assert_eq!(
            marks.missing_refs,
            vec![(inv.digests.find(&m).unwrap(), foreign)]
        );
        let mut obs = Observed::default();
        obs.roles
            .insert((inv.digests.find(&m).unwrap(), foreign), Role::Foreign);
        obs.mismatches.push(Mismatch {
            blob: inv.digests.find(&layer).unwrap(),
            actual: dg(9),
            actual_size: 10,
        });
        let f = findings(&inv, &marks, &obs);
        assert_eq!(
            kinds(&f),
            vec![(Kind::ContentMismatch, layout::blob_data_key(&layer))]
        );
        assert_eq!(f[0].images, vec!["r:v1".to_string()]);

        let report = FsckReport::new("x".into(), false, Checked::default(), f);
        assert_eq!((report.problems, report.exit()), (1, Exit::Problems));
        assert!(
            report
                .text()
                .contains("blobs whose content does not match their digest (1):"),
            "{}",
            report.text()
        );
    }

    /// A manifest whose bytes are not its digest's is one content-mismatch
    /// (from the mark phase, or `--verify-content`, or both); what its bytes
    /// mention is not an orphan, and no unnamed blob is called garbage `gc`
    /// deletes while its references are unknown.
    #[test]
    fn a_corrupt_manifest_is_a_mismatch_and_no_blob_is_called_garbage() {
        let (m, cfg, stray) = (dg(1), dg(2), dg(3));
        let keys = vec![
            layout::blob_data_key(&m),
            layout::blob_data_key(&cfg),
            layout::blob_data_key(&stray),
            layout::revision_key("r", &m),
            layout::tag_current_key("r", "v1"),
        ];
        let (inv, mut marks) = build(&keys, &[], &[("r", "v1", TagLink::Digest(m))]);
        let id = |d: &Digest| inv.digests.find(d).unwrap();
        marks.corrupt_manifests.push(crate::mark::CorruptManifest {
            id: id(&m),
            actual: dg(9),
            len: 10,
            mentions: vec![id(&cfg)],
        });
        let mut obs = Observed::default();
        let once = |obs: &Observed| {
            let f = findings(&inv, &marks, obs);
            assert_eq!(
                kinds(&f),
                vec![
                    (Kind::ContentMismatch, layout::blob_data_key(&m)),
                    (Kind::OrphanBlob, layout::blob_data_key(&stray)),
                ]
            );
            assert_eq!(f[0].images, vec!["r:v1".to_string()]);
            assert!(f[0].message.contains("references is unknown"), "{f:?}");
            assert!(
                !f[1].message.contains("`gc` deletes it") && f[1].message.contains("corrupt"),
                "{f:?}"
            );
        };
        once(&obs);
        obs.mismatches.push(Mismatch {
            blob: id(&m),
            actual: dg(9),
            actual_size: 10,
        });
        once(&obs);
    }

    #[test]
    fn blobs_in_storage_but_not_linked_in_the_repository() {
        let (m, cfg, layer, odd) = (dg(1), dg(2), dg(3), dg(4));
        let keys = vec![
            layout::blob_data_key(&m),
            layout::blob_data_key(&cfg),
            layout::blob_data_key(&layer),
            layout::blob_data_key(&odd),
            layout::layer_link_key("r", &cfg),
            layout::layer_link_key("other", &layer), // linked elsewhere only
            layout::revision_key("r", &m),
            layout::revision_key("r", &odd),
            layout::tag_current_key("r", "v1"),
        ];
        // a manifest of an unknown media type: its scanned mentions are not descriptors
        let unknown = refs(ManifestKind::Image, &[cfg, layer], &[cfg, layer]);
        let manifests = [
            (m, refs(ManifestKind::Image, &[cfg, layer], &[])),
            (odd, unknown),
        ];
        let (inv, marks) = build(&keys, &manifests, &[("r", "v1", TagLink::Digest(m))]);
        let f = findings(&inv, &marks, &Observed::default());
        assert_eq!(
            kinds(&f),
            vec![(Kind::BlobNotLinked, layout::layer_link_key("r", &layer))]
        );
        assert_eq!(f[0].images, vec!["r:v1".to_string()]);
    }

    /// The registry lists every directory under `_manifests/tags/` as a tag:
    /// one with history entries only, or (on a filesystem) nothing at all in
    /// it, has no current link to serve.
    #[test]
    fn tags_listed_without_a_current_link() {
        let m = dg(1);
        let tags = format!("{}r/_manifests/tags/", layout::REPOSITORIES);
        let keys = vec![
            layout::blob_data_key(&m),
            layout::revision_key("r", &m),
            layout::tag_current_key("r", "v1"),
            layout::tag_index_key("r", "v1", &m),
            layout::tag_index_key("r", "cut", &m),
            format!("{tags}empty/"),
            format!("{tags}cut/current/"),
            // an empty directory in a tag that has its link is nothing
            format!("{tags}v1/index/sha512/"),
        ];
        let (inv, marks) = build(
            &keys,
            &[(m, refs(ManifestKind::Image, &[], &[]))],
            &[("r", "v1", TagLink::Digest(m))],
        );
        let f = findings(&inv, &marks, &Observed::default());
        assert_eq!(
            kinds(&f),
            vec![
                (Kind::TagLinkMissing, layout::tag_current_key("r", "cut")),
                (Kind::TagLinkMissing, layout::tag_current_key("r", "empty")),
            ]
        );
        assert_eq!(f[0].images, vec!["r:cut".to_string()]);
        assert!(f[0].message.contains("MANIFEST_UNKNOWN"), "{f:?}");
    }

    /// A tag directory holding both a stray key and an empty directory is
    /// listed for either: it is named once, and told to go as a directory
    /// (removing the stray key alone would leave it listed). The stray key is
    /// a note of its own.
    #[test]
    fn a_tag_listed_for_a_stray_and_an_empty_directory_is_named_once() {
        let tags = format!("{}r/_manifests/tags/", layout::REPOSITORIES);
        let keys = vec![
            format!("{tags}cut/notes.txt"),
            format!("{tags}cut/current/"),
        ];
        let (inv, marks) = build(&keys, &[], &[]);
        let f = findings(&inv, &marks, &Observed::default());
        assert_eq!(
            kinds(&f),
            vec![
                (Kind::TagLinkMissing, layout::tag_current_key("r", "cut")),
                (Kind::StrayKey, format!("{tags}cut/notes.txt")),
            ],
            "{f:#?}"
        );
        assert_eq!(f[0].images, vec!["r:cut".to_string()]);
        assert_eq!(f[0].message, TAG_LINK_MISSING);
    }

    /// 2.8 serves a manifest through the repository's `_layers` link when it
    /// has no revision link (2.1.0 linked manifests there): a note, and such a
    /// tag's image is checked like any other. Tag history links are never read
    /// by the registry: junk in one is a note too. Any key below
    /// `_manifests/tags/` is a tag to the registry.
    #[test]
    fn layer_linked_manifests_junk_history_and_strays_among_tags() {
        let (legacy, idx, child, lost, cfg, orphan_child) =
            (dg(1), dg(2), dg(3), dg(4), dg(5), dg(6));
        let tags = format!("{}r/_manifests/tags/", layout::REPOSITORIES);
        let keys = vec![
            layout::blob_data_key(&legacy),
            layout::blob_data_key(&idx),
            layout::blob_data_key(&child),
            layout::blob_data_key(&cfg),
            layout::blob_data_key(&orphan_child),
            layout::layer_link_key("r", &legacy),
            layout::layer_link_key("r", &child),
            layout::layer_link_key("r", &cfg),
            layout::revision_key("r", &idx),
            layout::tag_current_key("r", "old"),
            layout::tag_index_key("r", "old", &legacy),
            layout::tag_current_key("r", "multi"),
            format!("{tags}README"),
        ];
        let manifests = [
            (legacy, refs(ManifestKind::Image, &[cfg, lost], &[])),
            (idx, refs(ManifestKind::Index, &[], &[child, orphan_child])),
        ];
        let tag_links = [
            ("r", "old", TagLink::Digest(legacy)),
            ("r", "multi", TagLink::Digest(idx)),
        ];
        let (inv, marks) = build(&keys, &manifests, &tag_links);
        let mut obs = Observed::default();
        obs.roles
            .insert((inv.digests.find(&legacy).unwrap(), lost), Role::Layer);
        let history = layout::tag_index_key("r", "old", &legacy);
        obs.junk_links.push((history.clone(), "\"x\"".into()));
        let f = findings(&inv, &marks, &obs);
        let mut got = kinds(&f);
        got.sort();
        let mut want = vec![
            (Kind::TagLinkMissing, layout::tag_current_key("r", "README")),
            (Kind::MissingBlob, layout::blob_data_key(&lost)),
            (
                Kind::ChildNotARevision,
                layout::revision_key("r", &orphan_child),
            ),
            (Kind::JunkTagIndex, history),
            (
                Kind::LayerLinkedManifest,
                layout::layer_link_key("r", &legacy),
            ),
            (
                Kind::LayerLinkedManifest,
                layout::layer_link_key("r", &child),
            ),
            (Kind::StrayKey, format!("{tags}README")),
        ];
        want.sort();
        assert_eq!(got, want, "{f:#?}");
        let named = |k: Kind| f.iter().find(|f| f.kind == k).unwrap().images.clone();
        assert_eq!(named(Kind::MissingBlob), vec!["r:old".to_string()]);
        assert_eq!(named(Kind::JunkTagIndex), vec!["r:old".to_string()]);
        assert_eq!(named(Kind::ChildNotARevision), vec!["r:multi".to_string()]);
        let notes: Vec<_> = f
            .iter()
            .filter(|f| f.kind == Kind::LayerLinkedManifest)
            .map(|f| f.images.clone())
            .collect();
        assert_eq!(
            notes,
            vec![vec!["r:old".to_string()], vec!["r:multi".to_string()]]
        );
        assert!(!Kind::LayerLinkedManifest.is_problem() && !Kind::JunkTagIndex.is_problem());
    }

    /// A manifest 2.8 cannot decode is a problem named by every tag reaching
    /// it: its own, an index's that lists it (the index is served, the
    /// child's pull fails), or its digest when untagged. What it references
    /// is kept as any manifest's: nothing of it is an orphan.
    #[test]
    fn manifests_the_registry_cannot_decode_name_the_images_that_fail() {
        let (artifact, idx, child, untagged, layer) = (dg(1), dg(2), dg(3), dg(4), dg(5));
        let mut keys = vec![
            layout::blob_data_key(&layer),
            layout::layer_link_key("r", &layer),
        ];
        for m in [artifact, idx, child, untagged] {
            keys.push(layout::blob_data_key(&m));
            keys.push(layout::revision_key("r", &m));
        }
        keys.push(layout::tag_current_key("r", "sbom"));
        keys.push(layout::tag_current_key("r", "multi"));
        let undecodable = |kind, blobs: &[Digest], why| References {
            undecodable: Some(why),
            ..refs(kind, blobs, &[])
        };
        let manifests = [
            (
                artifact,
                undecodable(
                    ManifestKind::Artifact,
                    &[layer],
                    Undecodable::UnknownMediaType(crate::manifest::OCI_ARTIFACT.into()),
                ),
            ),
            (idx, refs(ManifestKind::Index, &[], &[child])),
            (
                child,
                undecodable(ManifestKind::Image, &[layer], Undecodable::NoSchemaVersion),
            ),
            (
                untagged,
                undecodable(
                    ManifestKind::Image,
                    &[],
                    Undecodable::UnknownSchemaVersion(3),
                ),
            ),
        ];
        let tags = [
            ("r", "sbom", TagLink::Digest(artifact)),
            ("r", "multi", TagLink::Digest(idx)),
        ];
        let (inv, marks) = build(&keys, &manifests, &tags);
        let f = findings(&inv, &marks, &Observed::default());
        let named = |d: &Digest| {
            let f = f
                .iter()
                .find(|f| f.key == layout::blob_data_key(d))
                .unwrap();
            (f.kind, f.images.clone(), f.message.clone())
        };
        assert_eq!(f.len(), 3, "{f:#?}");
        let (kind, images, msg) = named(&artifact);
        assert_eq!(
            (kind, images),
            (Kind::UndecodableManifest, vec!["r:sbom".to_string()])
        );
        assert!(
            msg.contains("draft artifact manifest") && msg.contains("500"),
            "{msg}"
        );
        let (kind, images, msg) = named(&child);
        assert_eq!(
            (kind, images),
            (Kind::UndecodableManifest, vec!["r:multi".to_string()])
        );
        assert!(msg.contains("pulling this child fails"), "{msg}");
        let (_, images, _) = named(&untagged);
        assert_eq!(images, vec![format!("r@{untagged}")]);
        assert!(Kind::UndecodableManifest.is_problem());
        let report = FsckReport::new("x".into(), false, Checked::default(), f);
        assert_eq!((report.problems, report.exit()), (3, Exit::Problems));
    }

    #[test]
    fn informational_findings_exit_zero_unless_strict() {
        let f = vec![Finding {
            kind: Kind::OrphanBlob,
            key: "k".into(),
            images: vec![],
            message: "m".into(),
        }];
        let lenient = FsckReport::new("x".into(), false, Checked::default(), f.clone());
        assert_eq!(
            (lenient.problems, lenient.informational, lenient.exit()),
            (0, 1, Exit::Success)
        );
        let strict = FsckReport::new("x".into(), true, Checked::default(), f);
        assert_eq!(strict.exit(), Exit::Problems);
    }

    #[test]
    fn roles_from_manifest_bytes() {
        let h = |c: char| c.to_string().repeat(64);
        let m = format!(
            r#"{{"config":{{"digest":"sha256:{}"}},"layers":[{{"digest":"sha256:{}"}},
            {{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"sha256:{}","urls":["https://x"]}}]}}"#,
            h('a'),
            h('b'),
            h('c')
        );
        let r = reference_roles(m.as_bytes());
        let d = |c: char| Digest::from_hex(&h(c)).unwrap();
        assert_eq!(r.get(&d('a')), Some(&Role::Config));
        assert_eq!(r.get(&d('b')), Some(&Role::Layer));
        assert_eq!(r.get(&d('c')), Some(&Role::Foreign));
        let idx = format!(r#"{{"manifests":[{{"digest":"sha256:{}"}}]}}"#, h('d'));
        assert_eq!(
            reference_roles(idx.as_bytes()).get(&d('d')),
            Some(&Role::Child)
        );
        assert!(reference_roles(b"not json").is_empty());
    }
}
