//! Sizes and ages for the plan's candidates only.
//!
//! On a filesystem, a stat per file is most of the cost of listing a
//! registry (and, cold, nearly all of it: each stat reads two inodes). The
//! collection's listing therefore names blobs, layer links and tag history
//! entries by their directories without stat'ing them
//! (`listing::LAYOUT_LEAVES_BY_NAME`); most are kept, and the plan needs the
//! size and age only of what it would delete. So the plan is made twice. The
//! first takes every unstated object to be old, which can only add deletions
//! (the fence spares young objects and what young links name; it never
//! deletes more): it names every deletion any fence could leave in. Those
//! are stat'ed here. The plan that is swept is then made with what the stats
//! said, and anything still unstated counts as young there: a mistake in
//! this reasoning keeps garbage, it cannot delete a live blob.
//!
//! A named blob or link whose file is missing (an empty digest directory left
//! by a blob deleted through the API, or by a killed sweep), or is not a file,
//! is taken out of the inventory and its directory recorded as empty, with
//! the directory's age: what a full listing would have reported (removing it
//! leaves it if it is not empty).
//!
//! The stats cost one HEAD each, counted as such.

use futures::stream::FuturesOrdered;
use futures::StreamExt;

use crate::digest_table::DigestId;
use crate::inventory::{secs_ceil, Inventory, Secs, NOT_STATED};
use crate::plan::{Deletion, Plan, Target};
use crate::storage::{ObjectMeta, Storage, StorageError};

#[derive(Debug, thiserror::Error)]
#[error("reading the size and age of what the plan would delete failed, nothing was deleted: {0}")]
pub struct CandidatesError(pub StorageError);

/// A planned deletion whose object was listed by name only: a blob, a
/// repository's layer link, or a tag history entry. Eight bytes, as a planned
/// `Deletion` is, so that the candidates' plan is turned into these in place:
/// under `--delete-untagged` at 1M keys they are 382,000, and holding both at
/// once would set the run's peak memory.
#[derive(Debug, Clone, Copy)]
struct Unstated {
    /// The layer link's repository, the history entry's with `HISTORY` set,
    /// or `BLOB`.
    repo: u32,
    /// The blob or layer link's digest, or the entry's place in its
    /// repository's `history`.
    id: u32,
}

const BLOB: u32 = u32::MAX;
/// Repository ids are below 2^26 (see `plan::Deletion`).
const HISTORY: u32 = 1 << 30;

const _: () = assert!(
    std::mem::size_of::<Unstated>() == std::mem::size_of::<Deletion>()
        && std::mem::align_of::<Unstated>() == std::mem::align_of::<Deletion>(),
    "the candidates' plan is turned into `Unstated`s in place"
);

impl Unstated {
    fn of(inv: &Inventory, target: Target) -> Option<Unstated> {
        let repository = |r: u32| &inv.repositories[r as usize];
        match target {
            Target::Blob(id) if inv.blob(id).is_some_and(|b| !b.is_stated()) => {
                Some(Unstated { repo: BLOB, id })
            }
            Target::LayerLink { repo, digest }
                if repository(repo)
                    .layer(digest)
                    .is_some_and(|l| l.modified == NOT_STATED) =>
            {
                Some(Unstated { repo, id: digest })
            }
            Target::TagIndex { repo, tag, digest } => {
                let entry = repository(repo).history_entry(tag, digest)?;
                (repository(repo).history[entry as usize].link.modified == NOT_STATED).then_some(
                    Unstated {
                        repo: repo | HISTORY,
                        id: entry,
                    },
                )
            }
            _ => None,
        }
    }

    fn target(self, inv: &Inventory) -> Target {
        match self.repo {
            BLOB => Target::Blob(self.id),
            r if r & HISTORY != 0 => {
                let repo = r & !HISTORY;
                let h = inv.repositories[repo as usize].history[self.id as usize];
                Target::TagIndex {
                    repo,
                    tag: h.tag,
                    digest: h.link.digest,
                }
            }
            repo => Target::LayerLink {
                repo,
                digest: self.id,
            },
        }
    }

    fn record(self, inv: &mut Inventory, size: u64, modified: Secs) {
        match self.repo {
            BLOB => inv.stat_blob(self.id, size, modified),
            r if r & HISTORY != 0 => inv.stat_history_entry(r & !HISTORY, self.id, modified),
            repo => inv.stat_layer_link(repo, self.id, modified),
        }
    }

    fn forget(self, inv: &mut Inventory) {
        match self.repo {
            BLOB => inv.forget_blob(self.id),
            r if r & HISTORY != 0 => inv.forget_history_entry(r & !HISTORY, self.id),
            repo => inv.forget_layer_link(repo, self.id),
        }
    }
}

/// Stats every deletion in `candidates` (a plan made with
/// `unstated_are_old`) that the listing named without a stat, and records
/// the sizes and ages in `inv`; `missing_blobs` (revisions' blobs the mark
/// phase found without data, already forgotten) have their directories
/// recorded as empty, as a missing file's are here. Any error but a missing
/// file stops the run: the plan would rest on a guess.
pub async fn stat(
    storage: &dyn Storage,
    inv: &mut Inventory,
    candidates: Plan,
    missing_blobs: &[DigestId],
    concurrency: usize,
) -> Result<(), CandidatesError> {
    // in place: the plan's vector becomes this one (`Vec`'s in-place collect)
    let mut unstated: Vec<Unstated> = candidates
        .deletions
        .into_iter()
        .filter_map(|d| Unstated::of(inv, d.target(inv)))
        .collect();
    // by directory, so that a filesystem's batches share the one they stat
    // in: blobs by their prefix, links by repository (a tag's history
    // entries are together in it)
    unstated.sort_unstable_by_key(|u| match u.repo {
        BLOB => (0, u32::from(inv.digests.get(u.id).as_bytes()[0]), u.id),
        repo => (1, repo, u.id),
    });
    let mut missing: Vec<(Unstated, String)> = missing_blobs
        .iter()
        .map(|id| {
            (
                Unstated {
                    repo: BLOB,
                    id: *id,
                },
                parent_of(&inv.key_of(&Target::Blob(*id))),
            )
        })
        .collect();
    let key = |inv: &Inventory, u: &Unstated| inv.key_of(&u.target(inv));
    stat_each(
        storage,
        inv,
        unstated,
        concurrency,
        key,
        |inv, which, key, result| {
            match result {
                Ok(meta) => which.record(inv, meta.size, secs_ceil(meta.last_modified_ms)),
                Err(StorageError::NotFound { .. }) => missing.push((which, parent_of(&key))),
                Err(e) => return Err(CandidatesError(e)),
            }
            Ok(())
        },
    )
    .await?;
    // Files missing from their directories: the object is not there, and its
    // directory is an empty one, as old as it is. A directory gone too was
    // removed since the listing: nothing is left to plan. Last first: taking
    // a history entry out moves those after it, which are then done.
    missing.reverse();
    let dir = |_: &Inventory, (_, dir): &(Unstated, String)| dir.clone();
    stat_each(
        storage,
        inv,
        missing,
        concurrency,
        dir,
        |inv, (which, dir), _, result| {
            match result {
                Ok(meta) => {
                    inv.add_empty_dir(dir.trim_end_matches('/'), secs_ceil(meta.last_modified_ms))
                }
                Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(CandidatesError(e)),
            }
            which.forget(inv);
            Ok(())
        },
    )
    .await
}

/// Stats the keys of `items` in the store's batches, `concurrency` keys in
/// flight, and hands each result to `apply` in order. A batch's keys are
/// made when it is sent, so that only the batches in flight are held (every
/// candidate's key at once would be most of the run's memory), and `inv` is
/// free to change between them.
async fn stat_each<T>(
    storage: &dyn Storage,
    inv: &mut Inventory,
    items: Vec<T>,
    concurrency: usize,
    key: impl Fn(&Inventory, &T) -> String,
    mut apply: impl FnMut(
        &mut Inventory,
        T,
        String,
        Result<ObjectMeta, StorageError>,
    ) -> Result<(), CandidatesError>,
) -> Result<(), CandidatesError> {
    let batch = storage.max_get_batch().max(1);
    let in_flight = storage.batches_in_flight(concurrency);
    let mut items = items.into_iter().peekable();
    let mut out = FuturesOrdered::new();
    loop {
        while out.len() < in_flight && items.peek().is_some() {
            let chunk: Vec<T> = items.by_ref().take(batch).collect();
            let keys: Vec<String> = chunk.iter().map(|t| key(inv, t)).collect();
            out.push_back(async move {
                let results = storage.stat_batch(&keys).await;
                (chunk, keys, results)
            });
        }
        let Some((chunk, keys, results)) = out.next().await else {
            return Ok(());
        };
        for ((item, key), result) in chunk.into_iter().zip(keys).zip(results) {
            apply(inv, item, key, result)?;
        }
    }
}

/// `blobs/sha256/ab/<digest>/` of `blobs/sha256/ab/<digest>/data`: a
/// directory, asked for as one.
fn parent_of(key: &str) -> String {
    key.rsplit_once('/')
        .map_or(String::new(), |(dir, _)| format!("{dir}/"))
}
