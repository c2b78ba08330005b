//! One collection, start to finish: list, mark, plan, sweep, report.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::cache::ManifestCache;
use crate::candidates;
use crate::error::Error;
use crate::guard::{self, GuardOptions};
use crate::inventory::Inventory;
use crate::listing;
use crate::mark::{self, MarkOptions};
use crate::plan::{self, Plan, PlanOptions, Target};
use crate::progress::Progress;
use crate::quarantine::QuarantineRun;
use crate::recheck::{self, RecheckOptions, RecheckOutcome};
use crate::report::{self, PhaseSeconds, Report, Seen, Warning, SCHEMA_VERSION};
use crate::storage::counts::RequestFloor;
use crate::storage::{system_time_ms, Storage};
use crate::sweep::{self, SweepAction, SweepOptions};

#[derive(Debug, Clone)]
pub struct GcOptions {
    pub dry_run: bool,
    pub delete_untagged: bool,
    pub min_age_ms: i64,
    pub upload_max_age_ms: i64,
    pub delete_empty_repositories: bool,
    pub concurrency: usize,
    pub max_manifest_bytes: u64,
    /// The manifest cache directory, if one is used.
    pub cache_dir: Option<PathBuf>,
    /// When to refuse a plan that looks like a mistake.
    pub guard: GuardOptions,
    /// Move what would be deleted into a quarantine run instead (see `quarantine`).
    pub quarantine: bool,
    /// The registry is stopped or read-only: nothing can be written during the
    /// run, so neither the re-check nor the look after the sweep is needed.
    pub offline: bool,
}

/// Runs one collection. With `report_path`, the JSON report (every deletion
/// with its key, reason and size) is written there, streamed from the plan.
pub async fn run(
    storage: Box<dyn Storage>,
    opts: GcOptions,
    progress: &Progress,
    report_path: Option<&Path>,
) -> Result<Report, Error> {
    let started = Instant::now();
    let now = SystemTime::now();
    let storage = storage.as_ref();
    let mut times = PhaseSeconds::default();
    let mut lap = Lap(Instant::now());
    if let Some(path) = report_path {
        report::check_writable(path, report::WrittenAs::InPlace).map_err(|e| {
            Error::Usage(format!(
                "--report {}: {e}; nothing was done",
                path.display()
            ))
        })?;
    }

    let mut inventory = Inventory::default();
    listing::list_registry(
        storage,
        &mut inventory,
        Some(listing::LAYOUT_LEAVES_BY_NAME),
        opts.concurrency,
        progress,
    )
    .await?;
    inventory.finish();
    times.listing = lap.next();

    let mut warnings = Vec::new();
    let cache = ManifestCache::open_or_warn(opts.cache_dir.as_deref(), &mut warnings);
    let mark_opts = MarkOptions {
        concurrency: opts.concurrency,
        max_manifest_bytes: opts.max_manifest_bytes,
        cache,
    };
    let marks = mark::mark(storage, &inventory, &mark_opts, progress).await?;
    for id in &marks.missing_blobs {
        inventory.forget_blob(*id);
    }
    times.mark = lap.next();
    let plan_opts = PlanOptions {
        delete_untagged: opts.delete_untagged,
        min_age_ms: opts.min_age_ms,
        upload_max_age_ms: opts.upload_max_age_ms,
        delete_empty_repositories: opts.delete_empty_repositories,
        now_ms: system_time_ms(now),
        unstated_are_old: false,
    };
    // What the plan would delete, sized and aged (a filesystem's listing
    // named most blobs and layer links without a stat); object stores'
    // listings leave nothing unstated, and nothing is asked.
    if inventory.has_unstated() || !marks.missing_blobs.is_empty() {
        progress.start_phase("reading the size and age of what would be deleted", 0);
        let candidates = plan::plan(
            &inventory,
            &marks,
            &PlanOptions {
                unstated_are_old: true,
                ..plan_opts
            },
        );
        candidates::stat(
            storage,
            &mut inventory,
            candidates,
            &marks.missing_blobs,
            opts.concurrency,
        )
        .await?;
    }
    times.stat = lap.next();
    let mut plan = plan::plan(&inventory, &marks, &plan_opts);
    times.plan = lap.next();
    // The registry may have been written to since the listing: what a recent
    // write needs leaves the plan. A dry run does it too, so that it plans what
    // a real run would.
    let recheck_opts = RecheckOptions {
        fence: plan_opts.fence(),
        concurrency: opts.concurrency,
        max_manifest_bytes: opts.max_manifest_bytes,
    };
    // A plan with nothing in it has nothing a write could need back: a run on
    // a registry with nothing to collect costs its listing alone.
    let nothing_to_withdraw = plan.deletions.is_empty() && plan.empty_repositories.is_empty();
    let recheck = if opts.offline || nothing_to_withdraw {
        RecheckOutcome::default()
    } else {
        progress.start_phase("re-checking repositories", 0);
        recheck::recheck(storage, &inventory, &marks, &mut plan, &recheck_opts).await?
    };
    times.recheck = lap.next();
    if let Some(refusal) = guard::check(&inventory, &plan, &opts.guard) {
        if !opts.dry_run {
            return Err(refusal.into());
        }
        warnings.push(Warning::new(
            &storage.describe(),
            &format!("a real run would refuse: {refusal}"),
        ));
    }
    // The sweep checks every key before its first delete (invariant 5); a dry
    // run refuses the same plans.
    if opts.dry_run {
        sweep::check_plan(&inventory, &plan)?;
    }

    let action = if opts.quarantine {
        SweepAction::Quarantine(QuarantineRun::new(now, &opts))
    } else {
        SweepAction::Delete
    };
    let sweep_opts = SweepOptions {
        concurrency: opts.concurrency,
        attempts: 3,
        action,
        fence: (!opts.offline).then(|| plan_opts.fence()),
    };
    let outcome = if opts.dry_run {
        None
    } else {
        Some(sweep::sweep(storage, &inventory, &plan, sweep_opts, progress).await?)
    };
    times.sweep = lap.next();
    // From here on a real run's plan is what the sweep did (a failed key, and
    // a phase never started, are not deleted): the look after the sweep, the
    // counts, the summary and the report speak of what was deleted.
    if let Some(o) = &outcome {
        o.done.retain_in(&mut plan.deletions);
        for tag in &o.tags_moved_during_run {
            warnings.push(Warning::new(
                tag,
                "tag planned as dangling was moved during the run (its current link is newer than the fence): kept",
            ));
        }
    }
    // The window the re-check leaves: a push or a tag between it and a
    // delete. Look once more, so that what the sweep broke is named, not left
    // silently broken. Only a deleted blob, manifest link, layer link or tag
    // link can break what the registry serves: a run that deleted none has
    // nothing to look for.
    let mut broken_by_race = Vec::new();
    let mut check_after_sweep_error = None;
    let look = outcome.is_some()
        && !opts.offline
        && plan
            .deletions
            .iter()
            .any(|d| can_break_a_pull(&d.target(&inventory)));
    if look {
        progress.start_phase("checking pushes made during the sweep", 0);
        // The sweep has run: a failure here must not read as "nothing deleted".
        match recheck::check_after_sweep(storage, &inventory, &marks, &plan, &recheck_opts).await {
            Ok(broken) => broken_by_race = broken,
            Err(e) => {
                let cause = match e {
                    recheck::RecheckError::Storage(e) => e.to_string(),
                    other => other.to_string(),
                };
                check_after_sweep_error = Some(cause);
            }
        }
    }
    times.check_after_sweep = lap.next();
    progress.finish();

    for r in inventory
        .repositories
        .iter()
        .filter(|r| !crate::layout::is_conventional_repository_name(&r.name))
    {
        let msg =
            "repository name does not follow distribution's grammar; collected like any other";
        warnings.push(Warning::new(
            &crate::layout::repository_prefix(&r.name),
            msg,
        ));
    }
    warnings.extend(marks.warnings.iter().cloned());
    warnings.extend(recheck::kept_unread_warnings([&recheck], &marks.warnings));
    warnings.extend(plan.warnings.iter().cloned());
    let floor = storage.list_page_size().map(|page| RequestFloor {
        list: inventory.keys_listed.div_ceil(page as u64).max(1),
        get: inventory
            .repositories
            .iter()
            .flat_map(|r| &r.tags)
            .filter(|t| t.current.is_some())
            .count() as u64
            + marks.manifests_read() as u64,
        delete: (plan.deletions.len() as u64).div_ceil(storage.bulk_delete_size() as u64),
    });
    let seen = Seen {
        keys: inventory.keys_listed,
        repositories: inventory.repositories.len() as u64,
        manifests: inventory.manifest_count() as u64,
        tags: inventory.tag_count() as u64,
        blobs: inventory.blob_count() as u64,
        blob_bytes: inventory.blob_bytes(),
        uploads: inventory
            .repositories
            .iter()
            .map(|r| r.uploads.len() as u64)
            .sum(),
    };
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        storage: storage.describe(),
        dry_run: opts.dry_run,
        delete_untagged: opts.delete_untagged,
        min_age_seconds: (opts.min_age_ms / 1000).max(0) as u64,
        offline: opts.offline,
        started_at: humantime::format_rfc3339_seconds(now).to_string(),
        duration_seconds: started.elapsed().as_secs_f64(),
        phase_seconds: times,
        seen,
        planned: Report::tally(&inventory, &plan.deletions),
        deleted_keys: outcome.as_ref().map_or(0, |o| o.deleted_keys),
        bytes_freed: outcome.as_ref().map_or(0, |o| o.bytes_freed),
        kept_blobs: plan.kept_blobs,
        kept_blob_bytes: plan.kept_blob_bytes,
        spared_by_min_age: plan.spared_young,
        empty_repositories: plan.empty_repositories.clone(),
        empty_repositories_removed: outcome
            .as_ref()
            .is_some_and(|o| o.empty_repositories_removed),
        empty_directories: plan.empty_dirs.len() as u64,
        directories_removed: outcome.as_ref().map_or(0, |o| o.dirs_removed as u64),
        sweep_stopped_early: outcome.as_ref().is_some_and(|o| o.stopped_early),
        quarantine: opts.quarantine,
        quarantine_run: outcome.as_ref().and_then(|o| o.quarantine_run.clone()),
        failures: outcome.map(|o| o.failures).unwrap_or_default(),
        warnings,
        strays: std::mem::take(&mut inventory.strays),
        requests: storage.counts().totals(),
        request_floor: floor,
        tags_matched_by_etag: marks.tags_matched_by_etag,
        manifest_cache_hits: marks.manifest_cache_hits,
        manifest_bytes_read: marks.manifest_bytes_read,
        recheck,
        broken_by_concurrent_pushes: broken_by_race,
        check_after_sweep_error,
        unwritten_report: None,
    };
    if let Some(path) = report_path {
        match write_report(path, &report, &inventory, plan) {
            Ok(()) => {}
            // nothing was deleted: the run stops with the error
            Err(e) if opts.dry_run => return Err(e),
            // the sweep ran: its summary must not be lost with the report
            Err(e) => report.unwritten_report = Some(e.to_string()),
        }
    }
    Ok(report)
}

/// Whether deleting `target` can break a pull: a blob, or a link the
/// registry reads to serve a manifest or a blob (not a tag's history entry,
/// nor an upload's part).
fn can_break_a_pull(target: &Target) -> bool {
    matches!(
        target,
        Target::Blob(_)
            | Target::Revision { .. }
            | Target::LayerLink { .. }
            | Target::TagCurrent { .. }
    )
}

/// A stopwatch read at each phase's end.
struct Lap(Instant);

impl Lap {
    /// Seconds since the last call (or the start), and restarts.
    fn next(&mut self) -> f64 {
        let now = Instant::now();
        let secs = now.duration_since(self.0).as_secs_f64();
        self.0 = now;
        secs
    }
}

fn write_report(path: &Path, report: &Report, inv: &Inventory, plan: Plan) -> Result<(), Error> {
    let fail = |source| Error::Report {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::create(path).map_err(fail)?;
    let mut out = std::io::BufWriter::new(file);
    let deletions = plan.into_key_order(inv).into_iter().map(|d| {
        let target = d.target(inv);
        (inv.key_of(&target), d.reason(), inv.bytes_of(&target))
    });
    report::write_json(&mut out, report, deletions).map_err(fail)?;
    std::io::Write::flush(&mut out).map_err(fail)
}
