//! The online re-check: between planning and the first delete, the
//! repositories' links are listed again, and whatever a write since the fence
//! made live is withdrawn from the plan.
//!
//! The registry keeps serving while we collect. A push that lands after the
//! listing (a new manifest naming layers that were garbage when we looked, a
//! tag moved onto an untagged manifest, a layer mounted or re-linked) leaves a
//! fresh link behind: every link, tag and upload part written since the fence
//! is a root here, and the manifests it names are read (from the mark phase's
//! results when already read) and kept with everything they reference.
//!
//! A filesystem names layer links and tag history without a stat
//! (`listing::LAYOUT_LEAVES_BY_NAME`). Of those, only links to a digest the
//! plan deletes something of can matter (what is withdrawn are deletions of
//! the digests recent writes name), and of these only two kinds can be a
//! write: one the plan would delete (rewritten since the fence, it is a push
//! or tag move in flight), and one the inventory does not hold (written since
//! the listing). Those are stat'ed; any other the plan keeps, and a rewrite
//! of it alone is no push: a layer link is kept with its blob, and a history
//! entry the plan keeps may name a manifest it deletes (one deleted through
//! the API), but a push or tag move that names that manifest again also
//! writes its revision link or the tag's `current/link`. Those two are
//! stat'ed as before (a tag moved onto an old manifest rewrites its
//! `current/link` in place). An object store lists every key's time, and
//! there a young history entry alone keeps what it names: more than needed,
//! never less.
//!
//! What remains is the window between this listing and the delete of each
//! key: a client that checks a garbage layer by HEAD in that window and then
//! puts a manifest naming it can lose it. README.md ("Online collection")
//! states it for operators.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use sha2::{Digest as _, Sha256};

use crate::bits::Bits;
use crate::digest::Digest;
use crate::digest_table::DigestId;
use crate::inventory::{secs_ceil, Inventory, Secs};
use crate::layout::{self, KeyKind};
use crate::listing;
use crate::manifest::{self, ManifestKind};
use crate::mark::Marks;
use crate::plan::{Plan, Reason, Target};
use crate::report::Warning;
use crate::storage::{get_many, stat_many, Storage, StorageError};

#[derive(Debug, Clone, Copy)]
pub struct RecheckOptions {
    /// The plan's fence: objects modified after this second are young.
    pub fence: Secs,
    pub concurrency: usize,
    pub max_manifest_bytes: u64,
}

/// What the re-check found and withdrew.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecheckOutcome {
    /// Keys under `repositories/` listed again.
    pub keys_listed: u64,
    /// Links, tags and upload parts written since the fence.
    pub recent_keys: u64,
    /// Manifests read because a recent link names them and the mark phase had not.
    pub manifests_read: u64,
    /// Planned deletions withdrawn because a recent write needs them.
    pub withdrawn: u64,
    pub withdrawn_bytes: u64,
    /// Blobs a recent layer link names that a manifest of unknown shape
    /// mentions, kept unread as no manifest: they do not match their digest
    /// (`mark::CORRUPT_SPECULATIVE_BLOB`). Keys, for the run's warnings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_unread: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecheckError {
    #[error("re-checking the repositories before the sweep failed, nothing was deleted: {0}")]
    Storage(StorageError),
    #[error("{key}: content does not hash to its digest (a truncated or corrupt read); nothing was deleted")]
    Corrupt { key: String },
}

/// The warnings for the blobs the re-checks kept unread
/// (`RecheckOutcome::kept_unread`), each once, less those `given` already
/// has (the mark phase kept the same blob, or the plans were re-checked
/// together and read the same links).
pub fn kept_unread_warnings<'a>(
    outcomes: impl IntoIterator<Item = &'a RecheckOutcome>,
    given: &[Warning],
) -> Vec<Warning> {
    let message = crate::mark::CORRUPT_SPECULATIVE_BLOB;
    let keys: std::collections::BTreeSet<&String> =
        outcomes.into_iter().flat_map(|o| &o.kept_unread).collect();
    keys.into_iter()
        .filter(|key| !given.iter().any(|w| w.key == **key && w.message == message))
        .map(|key| Warning::new(key, message))
        .collect()
}

/// What the links written since the fence ask to keep.
#[derive(Debug, Default)]
struct Recent {
    /// Manifests named by recent revision links, tag links and tag history,
    /// with the repository that names them.
    manifests: Vec<(String, Digest)>,
    /// Blobs named by recent layer links, with their repository.
    blobs: Vec<(String, Digest)>,
    /// Tag current links to read: (repository, tag).
    tag_links: Vec<(String, String)>,
    /// Alternate-algorithm links to read: (repository, key).
    alt_links: Vec<(String, String)>,
    /// Tags written since the fence: (repository, tag).
    tags: HashSet<(String, String)>,
    /// The manifest a recent tag history entry names, by (repository, tag).
    tag_heads: HashMap<(String, String), Digest>,
    /// Uploads written to since the fence: (repository, uuid).
    uploads: HashSet<(String, String)>,
    /// Repositories with anything written since the fence.
    repositories: HashSet<String>,
    /// Manifests followed only because a recent layer link names a digest
    /// that a manifest pinned by scan mentions and no index lists: most
    /// likely one of its layers (`follow_linked_children`), as the mark
    /// phase reads such a blob on speculation.
    speculative: HashSet<Digest>,
    keys: u64,
}

impl Recent {
    /// A recent layer link to a manifest an index lists serves it in that
    /// repository (2.8 reads a manifest through its layer link too): it is
    /// followed as a manifest, what it references kept with it. `children`
    /// are the listed children, sorted, and `by_index` those an index lists
    /// (the rest only a manifest pinned by scan mentions), sorted.
    fn follow_linked_children(
        &mut self,
        inv: &Inventory,
        children: &[DigestId],
        by_index: &[DigestId],
    ) {
        let served: Vec<(String, Digest)> = self
            .blobs
            .iter()
            .filter(|(_, d)| {
                inv.digests
                    .find(d)
                    .is_some_and(|id| children.binary_search(&id).is_ok())
            })
            .cloned()
            .collect();
        let named: HashSet<Digest> = self.manifests.iter().map(|(_, d)| *d).collect();
        let listed_by_index = |d: &Digest| {
            inv.digests
                .find(d)
                .is_some_and(|id| by_index.binary_search(&id).is_ok())
        };
        self.speculative.extend(
            served
                .iter()
                .map(|(_, d)| *d)
                .filter(|d| !named.contains(d) && !listed_by_index(d)),
        );
        self.manifests.extend(served);
    }

    fn note(&mut self, key: &str) {
        self.keys += 1;
        match layout::classify(key) {
            KeyKind::Revision { repo, digest } => {
                self.repositories.insert(repo.to_string());
                self.manifests.push((repo.to_string(), digest));
            }
            KeyKind::TagIndex { repo, tag, digest } => {
                self.repositories.insert(repo.to_string());
                self.tags.insert((repo.to_string(), tag.to_string()));
                self.tag_heads
                    .insert((repo.to_string(), tag.to_string()), digest);
                self.manifests.push((repo.to_string(), digest));
            }
            KeyKind::TagCurrent { repo, tag } => {
                self.repositories.insert(repo.to_string());
                self.tags.insert((repo.to_string(), tag.to_string()));
                self.tag_links.push((repo.to_string(), tag.to_string()));
            }
            KeyKind::LayerLink { repo, digest } => {
                self.repositories.insert(repo.to_string());
                self.blobs.push((repo.to_string(), digest));
            }
            KeyKind::AltLink { repo, .. } => {
                self.repositories.insert(repo.to_string());
                self.alt_links.push((repo.to_string(), key.to_string()));
            }
            KeyKind::Upload { repo, uuid, .. } => {
                self.repositories.insert(repo.to_string());
                self.uploads.insert((repo.to_string(), uuid.to_string()));
            }
            KeyKind::EmptyDir {
                repo: Some(repo), ..
            } => {
                self.repositories.insert(repo.to_string());
            }
            _ => self.keys -= 1,
        }
    }
}

/// Lists the repositories again and withdraws from `plan` every deletion a
/// write since the fence needs. Any error means the sweep must not start.
pub async fn recheck(
    storage: &dyn Storage,
    inv: &Inventory,
    marks: &Marks,
    plan: &mut Plan,
    opts: &RecheckOptions,
) -> Result<RecheckOutcome, RecheckError> {
    let mut outcomes = recheck_each(storage, inv, marks, &mut [plan], opts).await?;
    Ok(outcomes.pop().expect("an outcome per plan"))
}

/// `recheck` for several plans made from one inventory (`du`'s two modes),
/// on one listing of the repositories: each plan withdraws exactly what
/// `recheck` alone would withdraw from it (what a named link's stat decides
/// is decided per plan), and the listing, a LIST per 1,000 repository keys on
/// an object store, is paid once.
pub async fn recheck_each(
    storage: &dyn Storage,
    inv: &Inventory,
    marks: &Marks,
    plans: &mut [&mut Plan],
    opts: &RecheckOptions,
) -> Result<Vec<RecheckOutcome>, RecheckError> {
    let mut outcomes = vec![RecheckOutcome::default(); plans.len()];
    let listed: Vec<&Plan> = plans.iter().map(|p| &**p).collect();
    let recents = list_recent(storage, inv, marks, &listed, opts, &mut outcomes).await?;
    for ((plan, recent), outcome) in plans.iter_mut().zip(recents).zip(&mut outcomes) {
        if recent.keys == 0 {
            continue;
        }
        let reached = reach(
            storage,
            inv,
            marks,
            Roots {
                recent: &recent,
                repo: None,
            },
            &mut None,
            opts,
            outcome,
        )
        .await?;
        withdraw(inv, marks, plan, &reached, &recent, outcome);
    }
    Ok(outcomes)
}

/// Something written during the run that a delete of this run broke: a push
/// or a tag that landed in the window between the re-check and the delete.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct BrokenByRace {
    pub repository: String,
    /// The manifest written during the run (for a tag, the one its history
    /// names, when it names one written during the run).
    pub manifest: String,
    /// The tag, when what broke is a tag whose `current/link` was deleted.
    pub tag: Option<String>,
    /// The digest whose key the run deleted: a blob the manifest names, the
    /// manifest itself or a child (its revision link), a layer (its layer
    /// link), or what the tag named when the run looked.
    pub blob: String,
    /// The key the run deleted.
    pub deleted_key: String,
}

impl BrokenByRace {
    /// What to push again: `REPO:TAG` for a tag, else `REPO@DIGEST`.
    pub fn reference(&self) -> String {
        match &self.tag {
            Some(tag) => format!("{}:{tag}", self.repository),
            None => format!("{}@{}", self.repository, self.manifest),
        }
    }
}

/// After the sweep: lists the repositories once more and names everything
/// written since the fence that needs a key the sweep deleted (`done`: the
/// plan less what was not deleted): a manifest naming a deleted blob, a
/// manifest or child whose revision link in that repository went, a layer
/// whose layer link went, a tag whose `current/link` went. Once a blob's or
/// link's delete has returned, the registry refuses (or no longer serves)
/// what needs it, so a listing made after the sweep sees every write the
/// window let through. A key written again after its delete broke nothing:
/// each one named is stat'ed, and only those still missing are reported.
pub async fn check_after_sweep(
    storage: &dyn Storage,
    inv: &Inventory,
    marks: &Marks,
    done: &Plan,
    opts: &RecheckOptions,
) -> Result<Vec<BrokenByRace>, RecheckError> {
    let mut outcomes = [RecheckOutcome::default()];
    let recent = list_recent(storage, inv, marks, &[done], opts, &mut outcomes)
        .await?
        .pop()
        .expect("a listing per plan");
    let [mut outcome] = outcomes;
    let deleted = |t: Target| done.find(inv, t).is_some();
    let mut named: Vec<BrokenByRace> = Vec::new();
    let mut repositories: Vec<&str> = recent.manifests.iter().map(|(r, _)| r.as_str()).collect();
    repositories.sort_unstable();
    repositories.dedup();
    // One repository at a time: a revision or layer link is needed in the
    // repository the manifest was pushed to. The referrers index is built
    // once, by the first that needs it.
    let mut referrers = None;
    for repo in repositories {
        let reached = reach(
            storage,
            inv,
            marks,
            Roots {
                recent: &recent,
                repo: Some(repo),
            },
            &mut referrers,
            opts,
            &mut outcome,
        )
        .await?;
        let r = inv.repository_id(repo);
        let entry = |root: usize, d: &Digest, deleted_key: String| BrokenByRace {
            repository: repo.to_string(),
            manifest: recent.manifests[root].1.to_string(),
            tag: None,
            blob: d.to_string(),
            deleted_key,
        };
        // a layer link alone is an upload in progress, which the registry
        // refuses to complete into a manifest now that its blob or link is gone
        for (id, root) in reached
            .blobs
            .iter()
            .filter(|(_, root)| **root != usize::MAX)
        {
            let d = inv.digests.get(*id);
            if deleted(Target::Blob(*id)) {
                named.push(entry(*root, d, layout::blob_data_key(d)));
            }
            let is_manifest = reached.manifests.contains_key(d);
            if let Some(r) = r.filter(|_| !is_manifest) {
                if deleted(Target::LayerLink {
                    repo: r,
                    digest: *id,
                }) {
                    named.push(entry(*root, d, layout::layer_link_key(repo, d)));
                }
            }
        }
        let Some(r) = r else { continue };
        for (m, root) in &reached.manifests {
            let revision = inv.digests.find(m).map(|id| Target::Revision {
                repo: r,
                digest: id,
            });
            if revision.is_some_and(deleted) {
                named.push(entry(*root, m, layout::revision_key(repo, m)));
            }
        }
    }
    for (repo, tag) in &recent.tags {
        let Some(r) = inv.repository_id(repo) else {
            continue;
        };
        let Some(t) = inv.repositories[r as usize].tag_id(tag) else {
            continue;
        };
        if deleted(Target::TagCurrent { repo: r, tag: t }) {
            let target = marks.target_digest(inv, marks.tag_targets[r as usize][t as usize]);
            named.push(BrokenByRace {
                repository: repo.clone(),
                manifest: recent
                    .tag_heads
                    .get(&(repo.clone(), tag.clone()))
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                tag: Some(tag.clone()),
                blob: target.map(|d| d.to_string()).unwrap_or_default(),
                deleted_key: layout::tag_current_key(repo, tag),
            });
        }
    }
    named.extend(rolled_back_tags(inv, marks, done, &recent));
    named.extend(revived_by_a_push(storage, inv, marks, done, opts).await?);
    named.sort();
    named.dedup();
    let keys = named
        .iter()
        .enumerate()
        .map(|(i, b)| (i, b.deleted_key.clone()))
        .collect::<Vec<_>>();
    let mut still_missing = Bits::with_len(named.len());
    let mut stats = stat_many(storage, keys.into_iter(), opts.concurrency);
    while let Some((i, _, result)) = stats.next().await {
        match result {
            Ok(_) => {}
            // a key that cannot be stat'ed stays named: better a push named
            // that did not need it than a broken one not named at all
            Err(_) => {
                still_missing.insert(i);
            }
        }
    }
    drop(stats);
    still_missing.retain_in(&mut named);
    Ok(named)
}

/// Tags the sweep deleted as dangling that a push in the window moved back
/// onto a manifest their history names (a rollback): the push rewrote the
/// tag's `current/link` and history entry, which the sweep then deleted, so
/// no tag key is left to see. In 2.8 a tag is written only by a manifest PUT,
/// which writes that manifest's revision link first: one written since the
/// fence, in the tag's repository, for a manifest in the tag's history names
/// the tag. (It may name a tag nobody moved, when that manifest was pushed
/// under another name during the run: better named than silently gone.)
fn rolled_back_tags(
    inv: &Inventory,
    marks: &Marks,
    done: &Plan,
    recent: &Recent,
) -> Vec<BrokenByRace> {
    let mut named = Vec::new();
    for d in &done.deletions {
        let (Reason::DanglingTag, Target::TagCurrent { repo: r, tag: t }) =
            (d.reason(), d.target(inv))
        else {
            continue;
        };
        let repo = &inv.repositories[r as usize];
        let pushed = repo.history.iter().filter(|h| h.tag == t).find_map(|h| {
            let m = inv.digests.get(h.link.digest);
            recent
                .manifests
                .iter()
                .any(|(name, pushed)| *name == repo.name && pushed == m)
                .then_some(*m)
        });
        if let Some(m) = pushed {
            let target = marks.target_digest(inv, marks.tag_targets[r as usize][t as usize]);
            named.push(BrokenByRace {
                repository: repo.name.clone(),
                manifest: m.to_string(),
                tag: Some(repo.tag_name(t).to_string()),
                blob: target.map(|d| d.to_string()).unwrap_or_default(),
                deleted_key: layout::tag_current_key(&repo.name, repo.tag_name(t)),
            });
        }
    }
    named
}

/// Links the sweep deleted as dangling (what they name had no blob when the
/// run looked) that a push rewrote in the window: the push wrote the
/// manifest's blob, its revision link and its tag, and the sweep then
/// deleted the links, so no key written since the fence is left under
/// `repositories/` to see. The manifest's blob, which no plan holds, exists
/// again: each such link is named (if it is still missing, like any other).
async fn revived_by_a_push(
    storage: &dyn Storage,
    inv: &Inventory,
    marks: &Marks,
    done: &Plan,
    opts: &RecheckOptions,
) -> Result<Vec<BrokenByRace>, RecheckError> {
    let mut candidates = Vec::new();
    for d in &done.deletions {
        let target = d.target(inv);
        let (r, tag, manifest) = match (d.reason(), target) {
            (Reason::DanglingRevision, Target::Revision { repo, digest }) => {
                (repo, None, Some(*inv.digests.get(digest)))
            }
            (Reason::DanglingTag, Target::TagCurrent { repo, tag }) => {
                let named = marks.tag_targets[repo as usize][tag as usize];
                (repo, Some(tag), marks.target_digest(inv, named))
            }
            _ => continue,
        };
        let Some(m) = manifest else { continue };
        let repo = &inv.repositories[r as usize];
        let broken = BrokenByRace {
            repository: repo.name.clone(),
            manifest: m.to_string(),
            tag: tag.map(|t| repo.tag_name(t).to_string()),
            blob: m.to_string(),
            deleted_key: inv.key_of(&target),
        };
        candidates.push((broken, layout::blob_data_key(&m)));
    }
    let mut revived = Vec::new();
    let mut stats = stat_many(storage, candidates.into_iter(), opts.concurrency);
    while let Some((broken, _, result)) = stats.next().await {
        // gone as it was, or not known (a tag dangling before the run is not
        // named as broken by a push on a failed stat alone): not named
        if result.is_ok() {
            revived.push(broken);
        }
    }
    Ok(revived)
}

/// The links, tags and uploads under `repositories/` written since the fence.
async fn list_recent(
    storage: &dyn Storage,
    inv: &Inventory,
    marks: &Marks,
    plans: &[&Plan],
    opts: &RecheckOptions,
    outcomes: &mut [RecheckOutcome],
) -> Result<Vec<Recent>, RecheckError> {
    let mut recents: Vec<Recent> = plans.iter().map(|_| Recent::default()).collect();
    let concurrency = opts.concurrency.max(1);
    storage.limit_list_requests(Some(concurrency));
    let split = listing::repository_partitions(storage, inv)
        .await
        .map_err(RecheckError::Storage)?;
    // Only links, tags and uploads matter here: a filesystem stats each
    // revision's `link` and tag's `current/link` instead of reading the
    // directories, and names layer links and tag history.
    let listed = futures::stream::iter(split.prefixes)
        .map(|p| {
            listing::list_partition(
                storage,
                &p,
                Some(listing::LAYOUT_LEAVES_BY_NAME),
                concurrency,
            )
        })
        .flatten_unordered(concurrency);
    let mut stream = futures::stream::iter(split.objects.into_iter().map(Ok)).chain(listed);
    // the manifests indexes list, once: links to them are looked at, and
    // followed as manifests (`Recent::follow_linked_children`)
    let mut children: Vec<DigestId> = marks.listed_children().collect();
    children.sort_unstable();
    children.dedup();
    // of those, the ones indexes list (made when a recent link is followed)
    let mut by_index: Option<Vec<DigestId>> = None;
    let planned: Vec<PlannedDigests> = plans
        .iter()
        .map(|p| PlannedDigests::of(inv, p, &children))
        .collect();
    let mut to_stat: Vec<ToStat> = plans.iter().map(|p| ToStat::new(p)).collect();
    let mut keys_listed = 0;
    while let Some(item) = stream.next().await {
        let meta = item.map_err(RecheckError::Storage)?;
        if !meta.key.ends_with('/') {
            keys_listed += 1;
        }
        if !meta.is_stated() {
            let digest = named_link_digest(&meta.key);
            for ((plan, planned), to_stat) in plans.iter().zip(&planned).zip(&mut to_stat) {
                if digest.is_none_or(|d| planned.may_hold(&d)) {
                    to_stat.add(inv, plan, &meta.key);
                }
            }
        } else if secs_ceil(meta.last_modified_ms) > opts.fence {
            for recent in &mut recents {
                recent.note(&meta.key);
            }
        }
    }
    drop(stream);
    for (((plan, to_stat), recent), outcome) in plans
        .iter()
        .zip(to_stat)
        .zip(&mut recents)
        .zip(outcomes.iter_mut())
    {
        let mut stats = stat_many(storage, to_stat.keys(inv, plan), opts.concurrency);
        while let Some(((), key, result)) = stats.next().await {
            match result {
                Ok(meta) if secs_ceil(meta.last_modified_ms) > opts.fence => recent.note(&key),
                Ok(_) => {}
                // gone since it was listed: it keeps nothing
                Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(RecheckError::Storage(e)),
            }
        }
        drop(stats);
        outcome.keys_listed = keys_listed;
        outcome.recent_keys = recent.keys;
        if recent.keys > 0 {
            let links = read_links(storage, recent, opts.concurrency).await?;
            recent
                .manifests
                .extend(links.into_iter().filter_map(|(repo, d)| Some((repo, d?))));
            let by_index = by_index.get_or_insert_with(|| {
                let mut ids: Vec<DigestId> = marks.index_children().collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            });
            recent.follow_linked_children(inv, &children, by_index);
        }
    }
    Ok(recents)
}

/// The digests the plan deletes anything of (a blob, a revision, a layer
/// link, a tag history entry), as a Bloom filter: a named link to any other
/// digest cannot matter to the re-check, which withdraws only deletions of
/// the digests recent links name (a tag moved onto one rewrites its
/// `current/link` too, which is stat'ed). Most named links are such, and are
/// passed over without looking them up in the inventory; a false positive
/// costs that lookup and perhaps a stat, never a missed write.
struct PlannedDigests {
    bits: Vec<u64>,
    mask: u64,
}

impl PlannedDigests {
    fn of(inv: &Inventory, plan: &Plan, children: &[DigestId]) -> Self {
        // 8 to 16 bits a digest, two probes: at most 5% false positives
        let len = ((plan.deletions.len() + children.len()) * 8)
            .next_power_of_two()
            .max(64);
        let mut filter = PlannedDigests {
            bits: vec![0; len / 64],
            mask: len as u64 - 1,
        };
        for d in &plan.deletions {
            let id = match d.target(inv) {
                Target::Blob(id)
                | Target::Revision { digest: id, .. }
                | Target::LayerLink { digest: id, .. }
                | Target::TagIndex { digest: id, .. } => id,
                Target::TagCurrent { .. } | Target::Upload { .. } => continue,
            };
            filter.insert(inv.digests.get(id));
        }
        // A layer link written to an index's child makes 2.8 serve the
        // child in that repository, what it references with it (which the
        // plan may delete): such links are looked at too.
        for c in children {
            filter.insert(inv.digests.get(*c));
        }
        filter
    }

    fn insert(&mut self, d: &Digest) {
        for bit in self.probes(d) {
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// Two bit positions from two independent parts of the digest (sha256
    /// output: uniform; a crafted one can only cost a lookup).
    fn probes(&self, d: &Digest) -> [u64; 2] {
        let b = d.as_bytes();
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        [word(0) & self.mask, word(8) & self.mask]
    }

    fn may_hold(&self, d: &Digest) -> bool {
        self.probes(d)
            .iter()
            .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

/// The digest of a named link key, `…/sha256/<hex>/link`, read from its
/// end; `None` for any other shape (looked at in full by `ToStat::add`).
fn named_link_digest(key: &str) -> Option<Digest> {
    let dir = key.strip_suffix("/link")?;
    let hex = dir.get(dir.len().checked_sub(64)?..)?;
    dir[..dir.len() - 64]
        .ends_with("/sha256/")
        .then(|| Digest::from_hex(hex))?
}

/// The links the listing named without a stat that must be stat'ed: those
/// the plan deletes (a bit per planned deletion, in the plan's order: under
/// `--delete-untagged` at 1M keys they may be 250,000, and a list of them
/// set the run's peak memory), and those the inventory does not hold.
#[derive(Debug)]
struct ToStat {
    planned: Bits,
    unknown: Vec<String>,
}

impl ToStat {
    fn new(plan: &Plan) -> Self {
        ToStat {
            planned: Bits::with_len(plan.deletions.len()),
            unknown: Vec::new(),
        }
    }

    fn add(&mut self, inv: &Inventory, plan: &Plan, key: &str) {
        let target = match layout::classify(key) {
            KeyKind::LayerLink { repo, digest } => (|| {
                let r = inv.repository_id(repo)?;
                let d = inv.digests.find(&digest)?;
                inv.repositories[r as usize].layer(d)?;
                Some(Target::LayerLink { repo: r, digest: d })
            })(),
            KeyKind::TagIndex { repo, tag, digest } => (|| {
                let r = inv.repository_id(repo)?;
                let repository = &inv.repositories[r as usize];
                let (t, d) = (repository.tag_id(tag)?, inv.digests.find(&digest)?);
                repository.history_entry(t, d)?;
                Some(Target::TagIndex {
                    repo: r,
                    tag: t,
                    digest: d,
                })
            })(),
            // a digest directory named like no digest: nothing a push writes
            _ => return,
        };
        match target {
            Some(target) => {
                if let Some(i) = plan.find(inv, target) {
                    self.planned.insert(i);
                }
            }
            None => self.unknown.push(key.to_string()),
        }
    }

    /// The keys, the planned ones in the plan's order (by directory, which
    /// a filesystem's batches share).
    fn keys<'a>(
        self,
        inv: &'a Inventory,
        plan: &'a Plan,
    ) -> impl Iterator<Item = ((), String)> + Send + 'a {
        let planned = self
            .planned
            .into_indexes()
            .map(move |i| inv.key_of(&plan.deletions[i].target(inv)));
        planned.chain(self.unknown).map(|key| ((), key))
    }
}

/// Reads the recent tag current links and alternate-algorithm links: the
/// digests they hold, with their repository (`None` for a link gone since, or
/// holding junk, which keeps nothing more than the plan already does).
async fn read_links(
    storage: &dyn Storage,
    recent: &Recent,
    concurrency: usize,
) -> Result<Vec<(String, Option<Digest>)>, RecheckError> {
    let keys = recent
        .tag_links
        .iter()
        .map(|(r, t)| (r.clone(), layout::tag_current_key(r, t)))
        .chain(recent.alt_links.iter().cloned());
    let reads = get_many(storage, keys, crate::mark::LINK_READ_LIMIT, concurrency).map(
        |(repo, _, result)| match result {
            Ok(bytes) => Ok((repo, Digest::from_link(&bytes))),
            Err(StorageError::NotFound { .. } | StorageError::TooLarge { .. }) => Ok((repo, None)),
            Err(e) => Err(RecheckError::Storage(e)),
        },
    );
    reads.collect::<Vec<_>>().await.into_iter().collect()
}

/// The recent roots to follow: those of one repository, or all.
#[derive(Clone, Copy)]
struct Roots<'a> {
    recent: &'a Recent,
    repo: Option<&'a str>,
}

/// What the recent roots reach.
#[derive(Debug, Default)]
struct Reached {
    /// Each blob reached, with the index in `recent.manifests` of a root
    /// that reaches it, or `usize::MAX` for a blob only a layer link names.
    blobs: HashMap<DigestId, usize>,
    /// Each manifest reached (read or not: a recent link may name one whose
    /// blob is missing), with the index of a root that reaches it.
    manifests: HashMap<Digest, usize>,
}

/// Everything the recent roots (those of repository `repo`, or all) reach:
/// each manifest, its config and layers,
/// its children (recursively, as manifests), the manifests that name it as
/// their `subject` (as the plan keeps a kept manifest's referrers: a tag moved
/// onto an untagged image during the run keeps its signature), and the blobs
/// of recent layer links. Each blob maps to the index in `recent.manifests` of a root that
/// reaches it, or `usize::MAX` for a blob only a layer link names: a push
/// uploads its layers (writing their links) before its manifest, and the
/// manifest is what the look after the sweep must name.
async fn reach(
    storage: &dyn Storage,
    inv: &Inventory,
    marks: &Marks,
    roots: Roots<'_>,
    referrers: &mut Option<HashMap<Digest, Vec<DigestId>>>,
    opts: &RecheckOptions,
    outcome: &mut RecheckOutcome,
) -> Result<Reached, RecheckError> {
    let Roots { recent, repo } = roots;
    let wanted = |r: &str| repo.is_none_or(|repo| repo == r);
    let mut reached: HashMap<DigestId, usize> = recent
        .blobs
        .iter()
        .filter(|(r, _)| wanted(r))
        .filter_map(|(_, d)| inv.digests.find(d))
        .map(|id| (id, usize::MAX))
        .collect();
    let mut visited: HashMap<Digest, usize> = HashMap::new();
    let mut frontier: Vec<(Digest, usize)> = recent
        .manifests
        .iter()
        .enumerate()
        .filter(|(_, (r, _))| wanted(r))
        .map(|(i, (_, d))| (*d, i))
        .collect();
    if referrers.is_none() && !frontier.is_empty() {
        *referrers = Some(marks.referrers_by_subject(inv));
    }
    let no_referrers = HashMap::new();
    let referrers = referrers.as_ref().unwrap_or(&no_referrers);
    // Blobs kept unread as no manifest (`Recent::speculative`): should an
    // index read since list one, it was a manifest after all, and corrupt.
    let mut kept_unread: HashSet<Digest> = HashSet::new();
    let mut listed_by_indexes: HashSet<Digest> = HashSet::new();
    while !frontier.is_empty() {
        let mut to_read = Vec::new();
        let mut next = Vec::new();
        for (d, root) in frontier.drain(..) {
            if visited.insert(d, root).is_some() {
                continue;
            }
            next.extend(
                referrers
                    .get(&d)
                    .into_iter()
                    .flatten()
                    .map(|r| (*inv.digests.get(*r), root)),
            );
            let id = inv.digests.find(&d);
            let mut keep = |b: DigestId| reach_from(&mut reached, b, root);
            if let Some(id) = id {
                keep(id);
            }
            match id.and_then(|id| marks.manifest(id)) {
                Some(refs) => {
                    refs.blobs.iter().copied().for_each(&mut keep);
                    id.map(|id| marks.other_algorithm_blobs(id))
                        .unwrap_or_default()
                        .iter()
                        .copied()
                        .for_each(&mut keep);
                    next.extend(refs.children.iter().map(|c| (*inv.digests.get(*c), root)));
                }
                // A blob too large to be a manifest (a layer an unknown manifest
                // mentions) is kept as it is, unread.
                None if id
                    .and_then(|id| inv.blob(id))
                    .is_some_and(|b| b.size > opts.max_manifest_bytes) => {}
                None => to_read.push((d, root)),
            }
        }
        let keys = to_read
            .into_iter()
            .map(|(d, root)| ((d, root), layout::blob_data_key(&d)));
        let reads = get_many(storage, keys, opts.max_manifest_bytes, opts.concurrency)
            .collect::<Vec<_>>()
            .await;
        for ((d, root), key, result) in reads {
            let bytes = match result {
                Ok(bytes) => bytes,
                // A link to a manifest whose blob is missing (or not written
                // yet): nothing more to keep through it.
                Err(StorageError::NotFound { .. }) => continue,
                // Too large to be a manifest (a layer listed by name only, so
                // not known to be large): kept as it is, unread.
                Err(StorageError::TooLarge { .. }) => continue,
                Err(e) => return Err(RecheckError::Storage(e)),
            };
            if Sha256::digest(&bytes)[..] != d.as_bytes()[..] {
                // As the mark phase takes a blob it reads on speculation: a
                // layer that does not match its digest is no manifest 2.8
                // could serve, and is kept as it is (above). A manifest cut
                // short still starts as a JSON object, and stops the run.
                if recent.speculative.contains(&d) && !manifest::is_json_object(&bytes) {
                    kept_unread.insert(d);
                    outcome.kept_unread.push(key);
                    continue;
                }
                return Err(RecheckError::Corrupt { key });
            }
            outcome.manifests_read += 1;
            let refs = manifest::parse(&bytes);
            let named = refs.blobs.iter().filter_map(|b| inv.digests.find(b));
            let other = refs
                .other_algorithm
                .iter()
                .filter_map(|o| marks.alternate_digests.get(o))
                .filter_map(|b| inv.digests.find(b));
            for b in named.chain(other) {
                reach_from(&mut reached, b, root);
            }
            if refs.kind == ManifestKind::Index {
                listed_by_indexes.extend(refs.children.iter().copied());
            }
            next.extend(refs.children.iter().map(|c| (*c, root)));
        }
        // after the round's reads, against every index read so far: a blob
        // kept unread may come after the index that lists it, in a later
        // round (the look after the sweep follows one repository's roots)
        if let Some(c) = kept_unread
            .iter()
            .find(|c| listed_by_indexes.contains(*c))
            .copied()
        {
            let key = layout::blob_data_key(&c);
            return Err(RecheckError::Corrupt { key });
        }
        frontier = next;
    }
    Ok(Reached {
        blobs: reached,
        manifests: visited,
    })
}

/// Records that manifest root `root` reaches blob `b`, unless another manifest
/// already does; a layer link's mark gives way.
fn reach_from(reached: &mut HashMap<DigestId, usize>, b: DigestId, root: usize) {
    let by = reached.entry(b).or_insert(root);
    if *by == usize::MAX {
        *by = root;
    }
}

/// Takes out of the plan every deletion of a kept digest (its blob and the links
/// naming it, in any repository), of a recently written tag, and of an upload
/// written to since the fence.
fn withdraw(
    inv: &Inventory,
    marks: &Marks,
    plan: &mut Plan,
    reached: &Reached,
    recent: &Recent,
    outcome: &mut RecheckOutcome,
) {
    let kept = &reached.blobs;
    let repo_name = |r: u32| inv.repositories[r as usize].name.as_str();
    let tag_touched = |r: u32, t: u32| {
        let repo = &inv.repositories[r as usize];
        recent
            .tags
            .contains(&(repo.name.clone(), repo.tag_name(t).to_string()))
    };
    // Uploads by repository, so that the check does not build a key per deletion.
    let mut uploads: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (repo, uuid) in &recent.uploads {
        uploads
            .entry(repo.as_str())
            .or_default()
            .insert(uuid.as_str());
    }
    let needed = |target: &Target| match *target {
        Target::Blob(d)
        | Target::Revision { digest: d, .. }
        | Target::LayerLink { digest: d, .. } => kept.contains_key(&d),
        Target::TagIndex { repo, tag, digest } => {
            kept.contains_key(&digest) || tag_touched(repo, tag)
        }
        // A tag planned as dangling names a manifest whose blob was missing;
        // pushed again during the run, it is reached, and the tag serves it
        // again.
        Target::TagCurrent { repo, tag } => {
            tag_touched(repo, tag)
                || marks
                    .target_digest(inv, marks.tag_targets[repo as usize][tag as usize])
                    .is_some_and(|d| reached.manifests.contains_key(&d))
        }
        Target::Upload { repo, upload, .. } => uploads.get(repo_name(repo)).is_some_and(|u| {
            u.contains(
                inv.repositories[repo as usize].uploads[upload as usize]
                    .uuid
                    .as_str(),
            )
        }),
    };
    let before = plan.deletions.len();
    let mut withdrawn_bytes = 0;
    plan.deletions.retain(|d| {
        let target = d.target(inv);
        let keep = needed(&target);
        if keep {
            withdrawn_bytes += inv.bytes_of(&target);
            if let Target::Blob(id) = target {
                plan.kept_blobs += 1;
                let size = inv.blob(id).and_then(|b| b.known_size());
                plan.kept_blob_bytes = plan.kept_blob_bytes.zip(size).map(|(a, b)| a + b);
            }
        }
        !keep
    });
    outcome.withdrawn = (before - plan.deletions.len()) as u64;
    outcome.withdrawn_bytes = withdrawn_bytes;
    plan.empty_repositories
        .retain(|r| !recent.repositories.contains(r));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::{self, ReadSettings};
    use crate::plan::{self, PlanOptions};
    use crate::progress::Progress;
    use crate::storage::fs::FsStorage;

    /// A registry on disk, its files written two hours ago unless `young`.
    struct Disk(tempfile::TempDir);

    impl Disk {
        fn put(&self, key: &str, bytes: &[u8], young: bool) {
            let path = self.0.path().join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
            if !young {
                let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
                filetime::set_file_mtime(&path, filetime::FileTime::from_system_time(old)).unwrap();
            }
        }
        fn blob(&self, bytes: &[u8]) -> Digest {
            let d = Digest::from_bytes(Sha256::digest(bytes).into());
            self.put(&layout::blob_data_key(&d), bytes, false);
            d
        }
        fn image(&self, name: &str) -> Digest {
            let config = self.blob(format!("{{\"config\":\"{name}\"}}").as_bytes());
            let layer = self.blob(format!("layer of {name}").as_bytes());
            let desc = |media: &str, d: Digest| {
                format!("{{\"mediaType\":\"{media}\",\"size\":1,\"digest\":\"{d}\"}}")
            };
            self.blob(
                format!(
                    "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\",\"config\":{},\"layers\":[{}]}}",
                    desc("application/vnd.docker.container.image.v1+json", config),
                    desc("application/vnd.docker.image.rootfs.diff.tar.gzip", layer),
                )
                .as_bytes(),
            )
        }
        fn link(&self, key: &str, d: Digest, young: bool) {
            self.put(key, d.to_string().as_bytes(), young);
        }
        /// A blob pushed as `pushed` that now holds `now` (bit rot, a
        /// corrupt write): its digest.
        fn corrupt_blob(&self, pushed: &[u8], now: &[u8]) -> Digest {
            let d = Digest::from_bytes(Sha256::digest(pushed).into());
            self.put(&layout::blob_data_key(&d), now, false);
            d
        }
        /// An OCI index listing `child`, its blob written: its digest.
        fn index_of(&self, child: Digest) -> Digest {
            self.blob(
                format!(
                    "{{\"schemaVersion\":2,\"mediaType\":\"{}\",\"manifests\":[{{\"mediaType\":\"{}\",\"size\":1,\"digest\":\"{child}\"}}]}}",
                    manifest::OCI_INDEX,
                    manifest::DOCKER_SCHEMA2,
                )
                .as_bytes(),
            )
        }
        /// A manifest of a shape registry-gc does not know, mentioning
        /// `mentioned`, tagged `a:v1`: its digest.
        fn tagged_unknown_manifest(&self, mentioned: Digest) -> Digest {
            let unknown = self.blob(
                format!(
                    r#"{{"mediaType":"application/x-future","things":[{{"digest":"{mentioned}"}}]}}"#
                )
                .as_bytes(),
            );
            self.link(&layout::revision_key("a", &unknown), unknown, false);
            self.link(&layout::tag_current_key("a", "v1"), unknown, false);
            self.link(&layout::tag_index_key("a", "v1", &unknown), unknown, false);
            unknown
        }
        /// Lists and marks the registry, as a run's first phases do.
        async fn load(&self) -> (FsStorage, Inventory, Marks) {
            let storage = FsStorage::open(self.0.path()).unwrap();
            let read = ReadSettings {
                concurrency: 4,
                max_manifest_bytes: 1 << 20,
            };
            let (inv, marks, _) =
                inspect::load(&storage, &read, None, false, &Progress::new(false))
                    .await
                    .unwrap();
            (storage, inv, marks)
        }
    }

    #[tokio::test]
    async fn plans_rechecked_together_share_one_listing_and_withdraw_what_each_would_alone() {
        let disk = Disk(tempfile::tempdir().unwrap());
        let (tagged, untagged) = (disk.image("tagged"), disk.image("untagged"));
        let orphan = disk.blob(b"orphan layer");
        disk.link(&layout::revision_key("a", &tagged), tagged, false);
        disk.link(&layout::tag_current_key("a", "v1"), tagged, false);
        disk.link(&layout::tag_index_key("a", "v1", &tagged), tagged, false);
        disk.link(&layout::revision_key("a", &untagged), untagged, false);
        let (storage, inv, marks) = disk.load().await;
        let plans = || [false, true].map(|m| plan::plan(&inv, &marks, &plan_options(m)));
        // after the listing: a push of the untagged image to `b`, and of the
        // orphan as a layer to `c`
        disk.link(&layout::revision_key("b", &untagged), untagged, true);
        disk.link(&layout::layer_link_key("c", &orphan), orphan, true);
        let recheck_opts = recheck_options(false);

        let lists = || storage.counts().totals().list;
        let mut alone = plans();
        let mut alone_outcomes = Vec::new();
        let before = lists();
        for plan in &mut alone {
            alone_outcomes.push(
                recheck(&storage, &inv, &marks, plan, &recheck_opts)
                    .await
                    .unwrap(),
            );
        }
        let lists_alone = lists() - before;
        let mut together = plans();
        let [default, untagged_plan] = &mut together;
        let before = lists();
        let outcomes = recheck_each(
            &storage,
            &inv,
            &marks,
            &mut [default, untagged_plan],
            &recheck_opts,
        )
        .await
        .unwrap();
        let lists_together = lists() - before;

        assert_eq!(outcomes, alone_outcomes);
        // both withdrew something: the orphan, and under -m the untagged image
        assert!(
            outcomes[0].withdrawn >= 1 && outcomes[1].withdrawn > outcomes[0].withdrawn,
            "{outcomes:?}"
        );
        for (a, t) in alone.iter().zip(&together) {
            let keys = |p: &Plan| {
                p.in_key_order(&inv)
                    .map(|d| inv.key_of(&d.target(&inv)))
                    .collect::<Vec<_>>()
            };
            assert_eq!(keys(a), keys(t));
        }
        assert!(lists_together > 0);
        assert_eq!(
            lists_together * 2,
            lists_alone,
            "{lists_together} against {lists_alone}"
        );
    }

    /// A registry whose tagged index `a:v1` lists a child with no link in
    /// `a` (2.8 serves no such child there, so a plan deletes its config and
    /// layer), loaded; the child, and its config's and layer's digests.
    async fn an_index_listing_an_unlinked_child(
        disk: &Disk,
    ) -> (FsStorage, Inventory, Marks, Digest, [Digest; 2]) {
        let child = disk.image("child");
        let digest_of = |b: &[u8]| Digest::from_bytes(Sha256::digest(b).into());
        let child_blobs = [
            digest_of(b"{\"config\":\"child\"}"),
            digest_of(b"layer of child"),
        ];
        let index = disk.index_of(child);
        disk.link(&layout::revision_key("a", &index), index, false);
        disk.link(&layout::tag_current_key("a", "v1"), index, false);
        disk.link(&layout::tag_index_key("a", "v1", &index), index, false);
        let (storage, inv, marks) = disk.load().await;
        (storage, inv, marks, child, child_blobs)
    }

    fn plan_options(delete_untagged: bool) -> PlanOptions {
        PlanOptions {
            delete_untagged,
            min_age_ms: 3_600_000,
            upload_max_age_ms: 7 * 86_400_000,
            delete_empty_repositories: false,
            now_ms: crate::storage::system_time_ms(std::time::SystemTime::now()),
            unstated_are_old: false,
        }
    }

    fn recheck_options(delete_untagged: bool) -> RecheckOptions {
        RecheckOptions {
            fence: plan_options(delete_untagged).fence(),
            concurrency: 4,
            max_manifest_bytes: 1 << 20,
        }
    }

    fn deleted_blobs(inv: &Inventory, p: &Plan) -> HashSet<Digest> {
        p.deletions
            .iter()
            .filter_map(|d| match d.target(inv) {
                Target::Blob(id) => Some(*inv.digests.get(id)),
                _ => None,
            })
            .collect()
    }

    /// A layer link to the unlinked child written during the run makes 2.8
    /// serve it: the re-check keeps its config and layer.
    #[tokio::test]
    async fn a_layer_link_written_during_the_run_to_an_index_child_keeps_what_the_child_references()
    {
        let disk = Disk(tempfile::tempdir().unwrap());
        let (storage, inv, marks, child, child_blobs) =
            an_index_listing_an_unlinked_child(&disk).await;
        disk.link(&layout::layer_link_key("a", &child), child, true);
        for delete_untagged in [false, true] {
            let mut plan = plan::plan(&inv, &marks, &plan_options(delete_untagged));
            assert_eq!(
                deleted_blobs(&inv, &plan),
                HashSet::from(child_blobs),
                "-m {delete_untagged}: the child's config and layer are garbage when listed"
            );
            recheck(
                &storage,
                &inv,
                &marks,
                &mut plan,
                &recheck_options(delete_untagged),
            )
            .await
            .unwrap();
            assert_eq!(
                deleted_blobs(&inv, &plan),
                HashSet::new(),
                "-m {delete_untagged}: the child is served through its new layer link"
            );
        }
    }

    /// The same link written after the re-check, before the child's layer is
    /// deleted: the look after the sweep names the child as broken.
    #[tokio::test]
    async fn a_layer_link_to_an_index_child_written_in_the_sweeps_window_is_named_broken() {
        let disk = Disk(tempfile::tempdir().unwrap());
        let (storage, inv, marks, child, child_blobs) =
            an_index_listing_an_unlinked_child(&disk).await;
        let done = plan::plan(&inv, &marks, &plan_options(false));
        assert_eq!(deleted_blobs(&inv, &done), HashSet::from(child_blobs));
        for d in &child_blobs {
            std::fs::remove_file(disk.0.path().join(layout::blob_data_key(d))).unwrap();
        }
        disk.link(&layout::layer_link_key("a", &child), child, true);
        let broken = check_after_sweep(&storage, &inv, &marks, &done, &recheck_options(false))
            .await
            .unwrap();
        let named: HashSet<(String, String)> = broken
            .iter()
            .map(|b| (b.reference(), b.blob.clone()))
            .collect();
        let expected: HashSet<(String, String)> = child_blobs
            .iter()
            .map(|d| (format!("a@{child}"), d.to_string()))
            .collect();
        assert_eq!(named, expected, "{broken:?}");
    }

    /// A manifest of a shape registry-gc does not know mentions a layer whose
    /// blob no longer matches its digest (a corrupt layer), and a push links
    /// that layer during the run. The re-check follows the new layer link as
    /// it would to an index's child, reads the layer, and keeps it as it is,
    /// as the mark phase does such a blob: before, the mismatch refused the
    /// sweep (no deletion at all) on every run that saw such a link.
    #[tokio::test]
    async fn a_recent_link_to_a_corrupt_layer_an_unknown_manifest_mentions_keeps_it() {
        let disk = Disk(tempfile::tempdir().unwrap());
        let layer = disk.corrupt_blob(b"the layer as pushed", b"the layer, bits flipped");
        disk.tagged_unknown_manifest(layer);
        let orphan = disk.blob(b"orphan layer");
        let (storage, inv, marks) = disk.load().await;
        let layer_id = inv.digests.find(&layer).unwrap();
        assert!(marks.listed_children().any(|c| c == layer_id));
        disk.link(&layout::layer_link_key("b", &layer), layer, true);
        for delete_untagged in [false, true] {
            let mut plan = plan::plan(&inv, &marks, &plan_options(delete_untagged));
            let outcome = recheck(
                &storage,
                &inv,
                &marks,
                &mut plan,
                &recheck_options(delete_untagged),
            )
            .await
            .unwrap();
            assert!(outcome.recent_keys >= 1, "{outcome:?}");
            assert_eq!(outcome.kept_unread, [layout::blob_data_key(&layer)]);
            assert_eq!(deleted_blobs(&inv, &plan), HashSet::from([orphan]));
        }
    }

    /// The same link to a blob that starts as a JSON object and does not
    /// match its digest: a manifest cut short looks so, and what it would
    /// reference is not known. The sweep is refused.
    #[tokio::test]
    async fn a_recent_link_to_a_mismatched_json_blob_an_unknown_manifest_mentions_stops() {
        let disk = Disk(tempfile::tempdir().unwrap());
        let child = disk.corrupt_blob(b"{\"schemaVersion\":2}", b"{\"schemaVersi");
        disk.tagged_unknown_manifest(child);
        let (storage, inv, marks) = disk.load().await;
        disk.link(&layout::layer_link_key("b", &child), child, true);
        let mut plan = plan::plan(&inv, &marks, &plan_options(false));
        let err = recheck(&storage, &inv, &marks, &mut plan, &recheck_options(false))
            .await
            .unwrap_err();
        assert!(matches!(err, RecheckError::Corrupt { .. }), "{err}");
    }

    /// An index's child whose blob reads as no manifest and not its digest
    /// (a proxy's error page, a corrupt write), linked during the run through
    /// `_layers`: the index says it is a manifest, 2.8 serves it through the
    /// new link, and what it references is not known. The sweep is refused,
    /// as the mark phase stops on such a child; the leniency for a blob only
    /// a manifest of unknown shape mentions does not reach it. (A digest any
    /// index lists counts here, where the mark phase looks at the indexes of
    /// the child's repository: the re-check may refuse where the mark phase
    /// kept such a blob, never the reverse.)
    #[tokio::test]
    async fn a_recent_link_to_an_index_child_that_reads_corrupt_stops() {
        let disk = Disk(tempfile::tempdir().unwrap());
        let (storage, inv, marks, child, _) = an_index_listing_an_unlinked_child(&disk).await;
        disk.put(
            &layout::blob_data_key(&child),
            b"<html>502 Bad Gateway</html>",
            false,
        );
        disk.link(&layout::layer_link_key("a", &child), child, true);
        let mut plan = plan::plan(&inv, &marks, &plan_options(false));
        let err = recheck(&storage, &inv, &marks, &mut plan, &recheck_options(false))
            .await
            .unwrap_err();
        assert!(matches!(err, RecheckError::Corrupt { .. }), "{err}");
    }

    /// A corrupt layer a manifest of unknown shape mentions, kept unread
    /// through a recent layer link, that an index pushed during the run lists
    /// as its child: a manifest after all, and unreadable. The sweep is
    /// refused, whichever of the two the re-check reads first.
    #[tokio::test]
    async fn a_blob_kept_unread_that_a_recent_index_lists_stops() {
        let disk = Disk(tempfile::tempdir().unwrap());
        let layer = disk.corrupt_blob(b"the layer as pushed", b"the layer, bits flipped");
        disk.tagged_unknown_manifest(layer);
        let (storage, inv, marks) = disk.load().await;
        disk.link(&layout::layer_link_key("b", &layer), layer, true);
        let index = disk.index_of(layer);
        disk.link(&layout::revision_key("b", &index), index, true);
        let mut plan = plan::plan(&inv, &marks, &plan_options(false));
        let err = recheck(&storage, &inv, &marks, &mut plan, &recheck_options(false))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RecheckError::Corrupt { key } if *key == layout::blob_data_key(&layer)),
            "{err}"
        );
    }

    /// The same, seen by the look after the sweep, which follows each
    /// repository's roots apart: the index (in `b`) is read a round before
    /// the blob it lists, which a recent layer link in `a` made speculative.
    #[tokio::test]
    async fn a_blob_kept_unread_that_an_index_read_a_round_before_lists_stops_the_look_after() {
        let disk = Disk(tempfile::tempdir().unwrap());
        let layer = disk.corrupt_blob(b"the layer as pushed", b"the layer, bits flipped");
        disk.tagged_unknown_manifest(layer);
        disk.link(&layout::layer_link_key("b", &layer), layer, false);
        let (storage, inv, marks) = disk.load().await;
        let done = plan::plan(&inv, &marks, &plan_options(false));
        disk.link(&layout::layer_link_key("a", &layer), layer, true);
        let index = disk.index_of(layer);
        disk.link(&layout::revision_key("b", &index), index, true);
        let err = check_after_sweep(&storage, &inv, &marks, &done, &recheck_options(false))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RecheckError::Corrupt { key } if *key == layout::blob_data_key(&layer)),
            "{err}"
        );
    }

    /// A blob kept unread by both plans' re-checks, or already named by the
    /// mark phase, is warned about once.
    #[test]
    fn each_blob_kept_unread_is_named_once() {
        let kept = |keys: &[&str]| RecheckOutcome {
            kept_unread: keys.iter().map(|k| k.to_string()).collect(),
            ..RecheckOutcome::default()
        };
        let message = crate::mark::CORRUPT_SPECULATIVE_BLOB;
        let given = [
            Warning::new("a", message),
            Warning::new("c", "another warning"),
        ];
        let named = kept_unread_warnings(&[kept(&["b", "a", "c"]), kept(&["c", "b"])], &given);
        let named: Vec<(&str, &str)> = named
            .iter()
            .map(|w| (w.key.as_str(), w.message.as_str()))
            .collect();
        assert_eq!(named, [("b", message), ("c", message)]);
    }

    #[test]
    fn named_link_keys_give_their_digest() {
        let d = Digest::from_bytes([0xab; 32]);
        for key in [
            layout::layer_link_key("team/app", &d),
            layout::tag_index_key("team/app", "v1", &d),
        ] {
            assert_eq!(named_link_digest(&key), Some(d), "{key}");
        }
        let hex = d.to_string()[7..].to_string();
        for key in [
            "link".to_string(),
            format!("x/{hex}/link"),
            format!("x/sha512/{hex}/link"),
            format!("x/sha256/{}/link", hex.to_uppercase()),
            format!("x/sha256/{hex}/data"),
        ] {
            assert_eq!(named_link_digest(&key), None, "{key}");
        }
    }

    #[test]
    fn the_planned_digests_filter_holds_every_digest_put_in_and_few_others() {
        let digest = |n: u32, salt: u8| {
            Digest::from_bytes(Sha256::digest([&n.to_le_bytes()[..], &[salt]].concat()).into())
        };
        let mut filter = PlannedDigests {
            bits: vec![0; 16_384 / 64],
            mask: 16_383,
        };
        (0..1000).for_each(|n| filter.insert(&digest(n, 0)));
        assert!((0..1000).all(|n| filter.may_hold(&digest(n, 0))));
        let false_positives = (0..10_000)
            .filter(|n| filter.may_hold(&digest(*n, 1)))
            .count();
        assert!(false_positives < 500, "{false_positives} of 10,000");
    }
}
