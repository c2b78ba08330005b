//! The sweep's phases, cut into batches.
//!
//! A plan is swept in up to four phases (`Reason::phase`): manifest links
//! and stale uploads, then blobs, then layer links, then tags planned as
//! dangling (rare, and checked just before by the sweep), each started once
//! the one before has finished. Every phase ends in a partial batch, and on a store
//! that deletes a thousand keys a request (S3) each of those is a request: a
//! plan of 2,474 deletions in three phases took four DELETE requests where
//! three carry it. Most deletions of a later phase wait for nothing still to
//! come, though: a blob that no manifest link the plan deletes names or
//! reaches (`Plan::early_blobs`), a layer link whose blob was gone before the
//! run. Such deletions fill the room in an earlier phase's last batch.
//! Nothing moves ahead of what it waits for, and no phase gets more batches
//! than it had.

use std::ops::Range;

use crate::bits::Bits;
use crate::inventory::Inventory;
use crate::plan::{Deletion, Plan, Reason, Target};

/// The plan's phases, by indexes into `plan.deletions` (a plan of 440,000
/// deletions is not copied).
#[derive(Debug)]
pub struct Phases {
    phases: Vec<Phase>,
    /// Deletions moved into an earlier phase's last batch.
    moved: Bits,
    batch: usize,
}

#[derive(Debug)]
struct Phase {
    /// The deletions of this phase in the plan (sorted by phase).
    own: Range<usize>,
    /// Deletions of later phases that fill this phase's last batch.
    taken: Vec<usize>,
}

impl Phases {
    /// The phases of `plan` in batches of at most `batch` deletions.
    pub fn of(inv: &Inventory, plan: &Plan, batch: usize) -> Self {
        let batch = batch.max(1);
        let deletions = &plan.deletions;
        let mut phases = Vec::new();
        let mut start = 0;
        while start < deletions.len() {
            let phase = deletions[start].reason().phase();
            let end = deletions[start..]
                .iter()
                .position(|d| d.reason().phase() != phase)
                .map_or(deletions.len(), |n| start + n);
            phases.push(Phase {
                own: start..end,
                taken: Vec::new(),
            });
            start = end;
        }
        let mut deleted_blobs = Bits::default();
        for id in plan.deleted_blob_ids(inv) {
            deleted_blobs.insert(id as usize);
        }
        let waits_for_nothing = |d: &Deletion| match d.target(inv) {
            Target::Blob(id) => plan.early_blobs.contains(id),
            Target::LayerLink { digest, .. } => !deleted_blobs.contains(digest as usize),
            _ => false,
        };
        let mut moved = Bits::default();
        let mut moved_out = vec![0; phases.len()];
        for p in 0..phases.len() {
            let size = phases[p].own.len() - moved_out[p];
            let mut room = if size == 0 {
                0
            } else {
                (batch - size % batch) % batch
            };
            for q in p + 1..phases.len() {
                for i in phases[q].own.clone() {
                    if room == 0 {
                        break;
                    }
                    if !moved.contains(i) && waits_for_nothing(&deletions[i]) {
                        moved.insert(i);
                        phases[p].taken.push(i);
                        moved_out[q] += 1;
                        room -= 1;
                    }
                }
            }
        }
        let phases = phases
            .into_iter()
            .zip(moved_out)
            .filter(|(p, out)| p.own.len() - out + p.taken.len() > 0)
            .map(|(p, _)| p)
            .collect();
        Phases {
            phases,
            moved,
            batch,
        }
    }

    pub fn len(&self) -> usize {
        self.phases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.phases.is_empty()
    }

    /// Whether phase `p` holds the deletions of `reason`'s phase (a phase
    /// holds its own reason's deletions first; later ones only fill its end).
    pub fn is_phase_of(&self, p: usize, plan: &Plan, reason: Reason) -> bool {
        let own = &self.phases[p].own;
        own.start < own.end && plan.deletions[own.start].reason().phase() == reason.phase()
    }

    /// Phase `p`'s batches, in order: its own deletions that stayed, then
    /// those it took from later phases (in its last batch). Each deletion
    /// comes with its index in the plan, by which the sweep says what it did.
    pub fn batches<'a>(
        &'a self,
        p: usize,
        plan: &'a Plan,
    ) -> impl Iterator<Item = Vec<(usize, Deletion)>> + Send + 'a {
        let phase = &self.phases[p];
        let mut indexes = phase
            .own
            .clone()
            .filter(|i| !self.moved.contains(*i))
            .chain(phase.taken.iter().copied());
        let batch = self.batch;
        std::iter::from_fn(move || {
            let chunk: Vec<(usize, Deletion)> = indexes
                .by_ref()
                .take(batch)
                .map(|i| (i, plan.deletions[i]))
                .collect();
            (!chunk.is_empty()).then_some(chunk)
        })
    }

    /// How many batches (requests, on a store that deletes in bulk) the
    /// sweep sends, retries aside.
    pub fn batch_count(&self) -> usize {
        (0..self.phases.len())
            .map(|p| self.size(p).div_ceil(self.batch))
            .sum()
    }

    fn size(&self, p: usize) -> usize {
        let phase = &self.phases[p];
        phase
            .own
            .clone()
            .filter(|i| !self.moved.contains(*i))
            .count()
            + phase.taken.len()
    }
}
