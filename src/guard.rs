//! The sanity guard: plans that look like a mistake rather than garbage are
//! refused unless the operator says `--force`.
//!
//! A collector pointed at the wrong root, or run after the repositories were
//! lost (a bad restore, a half-synced bucket), sees every blob as garbage. Both
//! look like this: no manifest at all beside blobs, or most blobs planned.

use crate::inventory::Inventory;
use crate::plan::Plan;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardOptions {
    /// Largest share of all blobs one run may delete, in percent.
    pub max_delete_percent: f64,
    pub force: bool,
}

impl Default for GuardOptions {
    fn default() -> Self {
        GuardOptions { max_delete_percent: 50.0, force: false }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("no manifest was found but {blobs} blobs were: every blob would be deleted; is STORAGE the registry's root? (--force to collect anyway)")]
    NoManifests { blobs: u64 },
    #[error("the plan deletes {planned} of {blobs} blobs ({percent:.1}%), more than --max-delete-percent {limit}%; check a --dry-run, then run with --force or a higher limit")]
    TooMuch { planned: u64, blobs: u64, percent: f64, limit: f64 },
}

/// Why this plan must not be swept without `--force`, if it must not.
pub fn check(inv: &Inventory, plan: &Plan, opts: &GuardOptions) -> Option<Refusal> {
    if opts.force {
        return None;
    }
    let blobs = inv.blob_count() as u64;
    let planned = plan.deleted_blobs().count() as u64;
    let manifests = inv.repositories.iter().flat_map(|r| &r.revisions).any(|l| inv.has_blob(l.digest));
    if blobs > 0 && !manifests && planned > 0 {
        return Some(Refusal::NoManifests { blobs });
    }
    let percent = if blobs == 0 { 0.0 } else { planned as f64 * 100.0 / blobs as f64 };
    (percent > opts.max_delete_percent).then_some(Refusal::TooMuch { planned, blobs, percent, limit: opts.max_delete_percent })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::layout;
    use crate::plan::{Deletion, Reason, Target};
    use crate::storage::ObjectMeta;

    fn dg(n: u8) -> Digest {
        Digest::from_bytes([n; 32])
    }

    /// An inventory of `blobs` blobs, the first `revisions` of them linked as
    /// revisions, and a plan deleting the first `planned` of the others.
    fn case(blobs: u8, revisions: u8, planned: u8) -> (Inventory, Plan) {
        let mut inv = Inventory::default();
        let mut put = |key: String| inv.insert(ObjectMeta { key, size: 1, last_modified_ms: 0, etag: None });
        for n in 0..blobs {
            put(layout::blob_data_key(&dg(n)));
        }
        for n in 0..revisions {
            put(layout::revision_key("r", &dg(n)));
        }
        inv.finish();
        let deletions = (revisions..revisions + planned)
            .map(|n| Deletion::new(&inv, Target::Blob(inv.digests.find(&dg(n)).unwrap()), Reason::UnreferencedBlob))
            .collect();
        (inv, Plan { deletions, ..Plan::default() })
    }

    #[test]
    fn refuses_half_and_more_and_passes_with_force_or_a_higher_limit() {
        let defaults = GuardOptions::default();
        let (inv, plan) = case(10, 2, 5);
        assert_eq!(check(&inv, &plan, &defaults), None, "exactly half is allowed");
        let (inv, plan) = case(10, 2, 6);
        assert!(matches!(check(&inv, &plan, &defaults), Some(Refusal::TooMuch { planned: 6, blobs: 10, .. })));
        assert_eq!(check(&inv, &plan, &GuardOptions { max_delete_percent: 60.0, force: false }), None);
        assert_eq!(check(&inv, &plan, &GuardOptions { force: true, ..defaults }), None);
    }

    #[test]
    fn refuses_blobs_without_any_manifest() {
        let (inv, plan) = case(10, 0, 1);
        assert_eq!(check(&inv, &plan, &GuardOptions::default()), Some(Refusal::NoManifests { blobs: 10 }));
        // nothing to delete: nothing to refuse
        let (inv, plan) = case(10, 0, 0);
        assert_eq!(check(&inv, &plan, &GuardOptions::default()), None);
        let (inv, plan) = case(0, 0, 0);
        assert_eq!(check(&inv, &plan, &GuardOptions::default()), None);
    }
}
