//! The sanity guard: plans that look like a mistake rather than garbage are
//! refused unless the operator says `--force`.
//!
//! A collector pointed at the wrong root, or run after the repositories were
//! lost (a bad restore, a half-synced bucket), sees every blob as garbage. Both
//! look like this: no manifest at all beside blobs, or most blobs planned.
//! The other way round, with the blobs lost (a blob store on a volume that is
//! not mounted, a restore of `repositories/` without `blobs/`), every tag and
//! revision link looks dangling, and deleting them would lose which image
//! each tag named for good: no blob at all beside links, or most tags and
//! revision links planned as dangling.

use crate::inventory::Inventory;
use crate::plan::{Plan, Reason, Target};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardOptions {
    /// Largest share of all blobs one run may delete, in percent.
    pub max_delete_percent: f64,
    pub force: bool,
}

impl Default for GuardOptions {
    fn default() -> Self {
        GuardOptions {
            max_delete_percent: 50.0,
            force: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("no manifest was found but {blobs} blobs were: every blob would be deleted; is STORAGE the registry's root? (--force to collect anyway)")]
    NoManifests { blobs: u64 },
    #[error("the plan deletes {planned} of {blobs} blobs ({percent:.1}%), more than --max-delete-percent {limit}%; check a --dry-run, then run with --force or a higher limit")]
    TooMuch {
        planned: u64,
        blobs: u64,
        percent: f64,
        limit: f64,
    },
    #[error("no blob was found but {links} tags and revision links were: every one would be deleted as dangling; is the blob store (blobs/) missing, not mounted or not restored yet? (--force to collect anyway)")]
    NoBlobs { links: u64 },
    #[error("the plan deletes {planned} of {links} tags and revision links ({percent:.1}%) as dangling (their manifest blob is missing), more than --max-delete-percent {limit}%; are blobs missing from the store? check a --dry-run, then run with --force or a higher limit")]
    TooManyDangling {
        planned: u64,
        links: u64,
        percent: f64,
        limit: f64,
    },
}

/// Why this plan must not be swept without `--force`, if it must not.
pub fn check(inv: &Inventory, plan: &Plan, opts: &GuardOptions) -> Option<Refusal> {
    if opts.force {
        return None;
    }
    let blobs = inv.blob_count() as u64;
    let planned = plan.deleted_blobs().count() as u64;
    let manifests = inv
        .repositories
        .iter()
        .flat_map(|r| &r.revisions)
        .any(|l| inv.has_blob(l.digest));
    if blobs > 0 && !manifests && planned > 0 {
        return Some(Refusal::NoManifests { blobs });
    }
    let links = inv
        .repositories
        .iter()
        .map(|r| r.revisions.len() + r.tags.len())
        .sum::<usize>() as u64;
    let dangling = plan
        .deletions
        .iter()
        .filter(|d| match d.reason() {
            Reason::DanglingRevision => true,
            Reason::DanglingTag => matches!(d.target(inv), Target::TagCurrent { .. }),
            _ => false,
        })
        .count() as u64;
    if blobs == 0 && dangling > 0 {
        return Some(Refusal::NoBlobs { links });
    }
    let limit = opts.max_delete_percent;
    let percent = if blobs == 0 {
        0.0
    } else {
        planned as f64 * 100.0 / blobs as f64
    };
    if percent > limit {
        return Some(Refusal::TooMuch {
            planned,
            blobs,
            percent,
            limit,
        });
    }
    let percent = if links == 0 {
        0.0
    } else {
        dangling as f64 * 100.0 / links as f64
    };
    (percent > limit).then_some(Refusal::TooManyDangling {
        planned: dangling,
        links,
        percent,
        limit,
    })
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
        let mut put = |key: String| {
            inv.insert(ObjectMeta {
                key,
                size: 1,
                last_modified_ms: 0,
                etag: None,
            })
        };
        for n in 0..blobs {
            put(layout::blob_data_key(&dg(n)));
        }
        for n in 0..revisions {
            put(layout::revision_key("r", &dg(n)));
        }
        inv.finish();
        let deletions = (revisions..revisions + planned)
            .map(|n| {
                Deletion::new(
                    &inv,
                    Target::Blob(inv.digests.find(&dg(n)).unwrap()),
                    Reason::UnreferencedBlob,
                )
            })
            .collect();
        (
            inv,
            Plan {
                deletions,
                ..Plan::default()
            },
        )
    }

    #[test]
    fn refuses_half_and_more_and_passes_with_force_or_a_higher_limit() {
        let defaults = GuardOptions::default();
        let (inv, plan) = case(10, 2, 5);
        assert_eq!(
            check(&inv, &plan, &defaults),
            None,
            "exactly half is allowed"
        );
        let (inv, plan) = case(10, 2, 6);
        assert!(matches!(
            check(&inv, &plan, &defaults),
            Some(Refusal::TooMuch {
                planned: 6,
                blobs: 10,
                ..
            })
        ));
        assert_eq!(
            check(
                &inv,
                &plan,
                &GuardOptions {
                    max_delete_percent: 60.0,
                    force: false
                }
            ),
            None
        );
        assert_eq!(
            check(
                &inv,
                &plan,
                &GuardOptions {
                    force: true,
                    ..defaults
                }
            ),
            None
        );
    }

    /// Revisions and tags of `revisions` manifests, the first `present` of
    /// whose blobs are stored, and a plan deleting the links of the others
    /// as dangling (as `plan` does).
    fn lost_blobs(revisions: u8, present: u8) -> (Inventory, Plan) {
        let mut inv = Inventory::default();
        let mut put = |key: String| {
            inv.insert(ObjectMeta {
                key,
                size: 1,
                last_modified_ms: 0,
                etag: None,
            })
        };
        for n in 0..revisions {
            put(layout::revision_key("r", &dg(n)));
            put(layout::tag_current_key("r", &format!("t{n}")));
        }
        for n in 0..present {
            put(layout::blob_data_key(&dg(n)));
        }
        inv.finish();
        let mut deletions = Vec::new();
        for n in present..revisions {
            let repo = 0;
            let tag = inv.repositories[0]
                .tag_names()
                .position(|t| t == format!("t{n}"))
                .unwrap() as u32;
            deletions.push(Deletion::new(
                &inv,
                Target::TagCurrent { repo, tag },
                Reason::DanglingTag,
            ));
            deletions.push(Deletion::new(
                &inv,
                Target::Revision {
                    repo,
                    digest: inv.digests.find(&dg(n)).unwrap(),
                },
                Reason::DanglingRevision,
            ));
        }
        (
            inv,
            Plan {
                deletions,
                ..Plan::default()
            },
        )
    }

    #[test]
    fn refuses_links_without_any_blob_or_mostly_dangling() {
        let defaults = GuardOptions::default();
        let (inv, plan) = lost_blobs(4, 0);
        assert_eq!(
            check(&inv, &plan, &defaults),
            Some(Refusal::NoBlobs { links: 8 })
        );
        let (inv, plan) = lost_blobs(4, 1);
        assert!(
            matches!(
                check(&inv, &plan, &defaults),
                Some(Refusal::TooManyDangling {
                    planned: 6,
                    links: 8,
                    ..
                })
            ),
            "{:?}",
            check(&inv, &plan, &defaults)
        );
        let (inv, plan) = lost_blobs(4, 2);
        assert_eq!(
            check(&inv, &plan, &defaults),
            None,
            "exactly half is allowed"
        );
        let (inv, plan) = lost_blobs(4, 0);
        assert_eq!(
            check(
                &inv,
                &plan,
                &GuardOptions {
                    force: true,
                    ..defaults
                }
            ),
            None
        );
        let (inv, plan) = lost_blobs(4, 1);
        assert_eq!(
            check(
                &inv,
                &plan,
                &GuardOptions {
                    max_delete_percent: 80.0,
                    force: false
                }
            ),
            None
        );
    }

    #[test]
    fn refuses_blobs_without_any_manifest() {
        let (inv, plan) = case(10, 0, 1);
        assert_eq!(
            check(&inv, &plan, &GuardOptions::default()),
            Some(Refusal::NoManifests { blobs: 10 })
        );
        // nothing to delete: nothing to refuse
        let (inv, plan) = case(10, 0, 0);
        assert_eq!(check(&inv, &plan, &GuardOptions::default()), None);
        let (inv, plan) = case(0, 0, 0);
        assert_eq!(check(&inv, &plan, &GuardOptions::default()), None);
    }
}
