//! Faults at the storage boundary, on trees the real registry wrote: the library's
//! run over `FaultyStorage` (a seeded share of listings, reads and delete batches
//! fail), many seeds each. A listing or read fault must stop the run with nothing
//! deleted; a delete fault may leave work undone (reported as failures) but never
//! removes anything a clean run keeps, and a rerun on the healthy store finishes
//! exactly where a clean run on a copy ends. Survivors are pulled back through the
//! real registry with sha256 checks.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::collector::{aged_copy, pushed};
use common::model::Mode;
use common::registry::Registry;
use common::scenarios::{self, Scenario};
use common::tree;
use registry_gc::gc::{self, GcOptions};
use registry_gc::progress::Progress;
use registry_gc::report::Report;
use registry_gc::storage::faults::{Fault, FaultConfig, FaultLog, FaultyStorage};
use registry_gc::storage::fs::FsStorage;
use registry_gc::storage::Storage;

fn options() -> GcOptions {
    GcOptions {
        dry_run: false,
        delete_untagged: true,
        min_age_ms: 3600 * 1000,
        upload_max_age_ms: 3600 * 1000,
        delete_empty_repositories: false,
        concurrency: 8,
        max_manifest_bytes: 64 * 1024 * 1024,
        cache_dir: None,
        // the mixed registry under -m is mostly garbage
        guard: registry_gc::guard::GuardOptions {
            force: true,
            ..Default::default()
        },
        quarantine: false,
        offline: false,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn healthy(root: &Path) -> Box<dyn Storage> {
    Box::new(FsStorage::open(root).unwrap())
}

fn collect(
    rt: &tokio::runtime::Runtime,
    storage: Box<dyn Storage>,
) -> Result<Report, registry_gc::error::Error> {
    rt.block_on(gc::run(storage, options(), &Progress::hidden(), None))
}

fn faulty(
    root: &Path,
    seed: u64,
    rate: f64,
    faults: &[Fault],
    delete_batch: Option<usize>,
) -> (Box<dyn Storage>, std::sync::Arc<FaultLog>) {
    let s = FaultyStorage::new(
        healthy(root),
        FaultConfig {
            seed,
            rate,
            faults: faults.to_vec(),
            delete_batch,
        },
    );
    let log = s.log();
    (Box::new(s), log)
}

/// The keys and directories a clean run leaves on a copy of the scenario's tree.
fn clean_result(
    rt: &tokio::runtime::Runtime,
    sc: &Scenario,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let copy = aged_copy(sc);
    let r = collect(rt, healthy(copy.path())).unwrap();
    assert!(r.failures.is_empty() && r.deleted_keys > 10, "{r:?}");
    (tree::keys(copy.path()), tree::dirs(copy.path()))
}

const SEEDS: u64 = 24;
const CUT_SEEDS: u64 = 40;
/// Fewer: each failing batch waits out the sweep's backoff.
const DELETE_SEEDS: u64 = 16;

/// Panics with the differences (not the whole sets) when `got` is not `want`.
fn assert_same(got: &BTreeSet<String>, want: &BTreeSet<String>, what: &str) {
    let extra: Vec<_> = got.difference(want).collect();
    let missing: Vec<_> = want.difference(got).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: left but not in the clean result: {extra:#?}\nmissing: {missing:#?}"
    );
}

/// Runs `SEEDS` seeds with `faults` at `rate`: every run that hit a fault must
/// fail (exit 1) naming it, with the tree byte for byte unchanged.
fn faults_stop_the_run(faults: &[Fault], rate: f64) {
    let (_dir, sc) = pushed(scenarios::mixed);
    let rt = runtime();
    let (clean, _) = clean_result(&rt, &sc);
    let mut faulted = 0;
    let mut kinds = BTreeSet::new();
    for seed in 0..SEEDS {
        let copy = aged_copy(&sc);
        let before = tree::snapshot(copy.path());
        let (storage, log) = faulty(copy.path(), seed, rate, faults, None);
        let result = collect(&rt, storage);
        if log.is_empty() {
            let r = result.unwrap_or_else(|e| panic!("seed {seed}: no fault injected, yet: {e}"));
            assert!(r.failures.is_empty());
            assert_same(
                &tree::keys(copy.path()),
                &clean,
                &format!("seed {seed}: no fault"),
            );
            continue;
        }
        faulted += 1;
        kinds.extend(log.entries().into_iter().map(|(f, _)| f));
        let err = match result {
            Ok(r) => panic!(
                "seed {seed}: faults {:?} injected, yet the run succeeded: {r:?}",
                log.entries()
            ),
            Err(e) => e,
        };
        assert_eq!(err.exit() as i32, 1, "seed {seed}: {err}");
        assert!(
            err.to_string().contains("injected fault"),
            "seed {seed}: the error names the failure: {err}"
        );
        let after = tree::snapshot(copy.path());
        assert!(
            before == after,
            "seed {seed}: faults {:?}; the tree changed:\n{}",
            log.entries(),
            tree::snapshot_diff(&before, &after)
        );
    }
    assert!(
        faulted >= SEEDS / 2,
        "only {faulted} of {SEEDS} seeds hit a fault"
    );
    for f in faults {
        assert!(kinds.contains(f), "{f:?} never injected: {kinds:?}");
    }
}

#[test]
fn listing_faults_stop_the_run_with_nothing_deleted() {
    faults_stop_the_run(&Fault::LISTING, 0.02);
}

/// Listing is healthy here (its faults come first and would hide these).
#[test]
fn read_faults_stop_the_run_with_nothing_deleted() {
    faults_stop_the_run(&Fault::READS, 0.15);
}

/// A body cut short where the store's framing did not catch it: a manifest's bytes
/// are checked against its digest and stop the run; a cut tag link reads as junk,
/// which keeps its repository whole. Either way nothing live is lost, and a rerun
/// on the healthy store reaches the clean result.
#[test]
fn reads_cut_short_never_reach_the_parser_as_a_manifest() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let rt = runtime();
    let (clean, _) = clean_result(&rt, &sc);
    let mut stopped = 0;
    let mut junk_tags = 0;
    // more seeds than the others: a seed that cuts only tag links is rarer
    for seed in 0..CUT_SEEDS {
        let copy = aged_copy(&sc);
        let before = tree::snapshot(copy.path());
        let (storage, log) = faulty(copy.path(), seed, 0.1, &[Fault::GetCutShort], None);
        let cut_manifest = log_hits_data(&log);
        match collect(&rt, storage) {
            Err(e) => {
                assert!(
                    cut_manifest(),
                    "seed {seed}: only links were cut ({:?}), yet: {e}",
                    log.entries()
                );
                assert!(
                    e.to_string().contains("does not match its digest"),
                    "seed {seed}: {e}"
                );
                assert!(
                    before == tree::snapshot(copy.path()),
                    "seed {seed}: the tree changed"
                );
                stopped += 1;
            }
            Ok(r) => {
                assert!(
                    !cut_manifest(),
                    "seed {seed}: a cut manifest {:?} was accepted",
                    log.entries()
                );
                assert!(r.failures.is_empty());
                // a cut link keeps at least everything the clean run keeps
                let after = tree::keys(copy.path());
                let lost: Vec<_> = clean.difference(&after).collect();
                assert!(
                    lost.is_empty(),
                    "seed {seed}: cut links {:?} lost {lost:?}",
                    log.entries()
                );
                junk_tags += !log.is_empty() as u32;
            }
        }
        collect(&rt, healthy(copy.path())).unwrap();
        assert_same(
            &tree::keys(copy.path()),
            &clean,
            &format!("seed {seed}: the rerun's end state"),
        );
    }
    assert!(stopped >= 5, "only {stopped} seeds cut a manifest");
    assert!(junk_tags >= 1, "no seed cut only tag links");
}

fn log_hits_data(log: &std::sync::Arc<FaultLog>) -> impl Fn() -> bool + '_ {
    move || log.entries().iter().any(|(_, k)| k.ends_with("/data"))
}

#[test]
fn delete_faults_lose_nothing_live_and_a_rerun_finishes_the_clean_result() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let rt = runtime();
    let (clean, clean_dirs) = clean_result(&rt, &sc);
    let (mut incomplete, mut pulled) = (0, 0);
    let mut kinds = BTreeSet::new();
    for seed in 0..DELETE_SEEDS {
        let copy = aged_copy(&sc);
        let before = tree::keys(copy.path());
        // small batches: each phase of the plan spans several, so a failure can
        // land between batches of one phase as well as between phases. At 20%
        // the sweep's three attempts absorb nearly every fault (the throttling
        // test below shows it); half of all requests failing leaves work undone.
        let (storage, log) = faulty(copy.path(), seed, 0.5, &Fault::DELETES, Some(4));
        let r = collect(&rt, storage)
            .unwrap_or_else(|e| panic!("seed {seed}: only deletes fail, yet: {e}"));
        kinds.extend(log.entries().into_iter().map(|(f, _)| f));
        let after = tree::keys(copy.path());
        let lost: Vec<_> = clean.difference(&after).collect();
        assert!(
            lost.is_empty(),
            "seed {seed}: faults {:?}: deleted what a clean run keeps: {lost:?}",
            log.entries()
        );
        assert!(after.is_subset(&before));
        if r.failures.is_empty() {
            assert_same(
                &after,
                &clean,
                &format!("seed {seed}: every deletion reported done"),
            );
        } else {
            incomplete += 1;
            // each failure names its key, and that key is either still there or
            // gone only because the store applied a delete whose answer was lost
            for f in &r.failures {
                let k = f.key.strip_prefix("docker/registry/v2/").unwrap();
                assert!(f.error.contains("injected fault"), "{f:?}");
                assert!(
                    after.contains(k) || log.count(Fault::DeleteAnswerLost) > 0,
                    "seed {seed}: {f:?} reported failed but gone"
                );
            }
            // an interrupted sweep leaves a registry that still serves every
            // image a clean run keeps
            if pulled < 4 {
                let reg = Registry::start(copy.path());
                sc.pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
                    .unwrap_or_else(|e| panic!("seed {seed}: partial sweep: {e}"));
                pulled += 1;
            }
        }
        // the next run comes later: a directory emptied by a delete whose answer
        // was lost is younger than --min-age now and kept until then
        tree::age_tree(copy.path(), std::time::Duration::from_secs(2 * 3600));
        let r2 = collect(&rt, healthy(copy.path())).unwrap();
        assert!(r2.failures.is_empty());
        assert_same(
            &tree::keys(copy.path()),
            &clean,
            &format!(
                "seed {seed}: faults {:?}: the rerun's end state",
                log.entries()
            ),
        );
        assert_same(
            &tree::dirs(copy.path()),
            &clean_dirs,
            &format!("seed {seed}: directories after the rerun"),
        );
        if seed < 3 {
            let reg = Registry::start(copy.path());
            sc.pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
                .unwrap_or_else(|e| panic!("seed {seed}: after the rerun: {e}"));
        }
    }
    assert!(
        incomplete >= 5,
        "only {incomplete} of {DELETE_SEEDS} seeds left failures"
    );
    assert_eq!(kinds.len(), Fault::DELETES.len(), "{kinds:?}");
}

/// The sweep retries a failed batch (3 attempts, with backoff): throttling at
/// 20% is absorbed; a store that throttles every request leaves the first
/// phase's keys in place, reports each one, and starts no later phase.
#[test]
fn the_sweep_retries_throttled_batches_and_stops_when_they_keep_failing() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let rt = runtime();
    let (clean, _) = clean_result(&rt, &sc);
    let mut absorbed = 0;
    for seed in 0..12 {
        let copy = aged_copy(&sc);
        let (storage, log) = faulty(copy.path(), seed, 0.2, &[Fault::DeleteBatchFails], Some(8));
        let r = collect(&rt, storage).unwrap();
        if r.failures.is_empty() {
            assert_same(&tree::keys(copy.path()), &clean, &format!("seed {seed}"));
            absorbed += (log.count(Fault::DeleteBatchFails) > 0) as u32;
        }
    }
    assert!(
        absorbed >= 6,
        "retries absorbed throttling in only {absorbed} of 12 seeds"
    );

    let copy = aged_copy(&sc);
    let before = tree::keys(copy.path());
    let (storage, log) = faulty(copy.path(), 1, 1.0, &[Fault::DeleteBatchFails], None);
    let r = collect(&rt, storage).unwrap();
    assert_eq!(
        tree::keys(copy.path()),
        before,
        "a store refusing every delete lost keys"
    );
    assert!(
        r.sweep_stopped_early,
        "later phases must not start after a failed one"
    );
    assert!(!r.failures.is_empty() && r.deleted_keys == 0);
    // one batch (the whole first phase fits in 256 keys), three attempts
    assert_eq!(log.count(Fault::DeleteBatchFails), 3, "{:?}", log.entries());
    let planned_first_phase = r.failures.len();
    assert!(
        planned_first_phase < before.len() - clean.len(),
        "only the first phase was attempted"
    );
}
