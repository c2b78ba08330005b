//! The `registry-gc restore` and `registry-gc purge` commands: settings to
//! storage, the operation, its summary and exit code.

use std::time::SystemTime;

use super::{format_runs, list_runs, purge, restore};
use crate::cli::{PurgeArgs, RestoreArgs};
use crate::error::{Error, Exit};
use crate::storage::open::open_storage;
use crate::storage::system_time_ms;

/// `registry-gc restore`, start to finish; returns the exit code.
pub async fn restore_command(args: &RestoreArgs, quiet: bool) -> Exit {
    report_exit(run_restore(args, quiet).await)
}

async fn run_restore(args: &RestoreArgs, quiet: bool) -> Result<Exit, Error> {
    let (settings, run_id) = args.resolve()?;
    let storage = open_storage(&settings.storage, &settings.backend)?;
    let concurrency = args.concurrency.unwrap_or(64) as usize;
    let Some(id) = run_id else {
        let runs = list_runs(storage.as_ref(), concurrency).await?;
        // the listing is the command's output: printed even with --quiet
        print!("{}", format_runs(&runs, system_time_ms(SystemTime::now())));
        return Ok(Exit::Success);
    };
    let out = restore(storage.as_ref(), &id, concurrency, 3).await?;
    if !quiet {
        print!("{}", out.summary());
    }
    if out.is_complete() {
        Ok(Exit::Success)
    } else {
        crate::say::error(&format!(
            "the restore of run {id} is incomplete ({} failed, {} missing, {} needed by its images and not in the registry, {} not checked for what its images need)",
            out.failures.len(),
            out.missing.len(),
            out.unmet.len(),
            out.unchecked.len()
        ));
        Ok(Exit::Incomplete)
    }
}

/// `registry-gc purge`, start to finish; returns the exit code.
pub async fn purge_command(args: &PurgeArgs, quiet: bool) -> Exit {
    report_exit(run_purge(args, quiet).await)
}

async fn run_purge(args: &PurgeArgs, quiet: bool) -> Result<Exit, Error> {
    let file = args.storage.config_file()?;
    let settings = args.storage.resolve(&file)?;
    let storage = open_storage(&settings.storage, &settings.backend)?;
    let concurrency = args.concurrency.unwrap_or(64) as usize;
    let out = purge(
        storage.as_ref(),
        args.older_than,
        SystemTime::now(),
        args.dry_run,
        args.include_unrecorded,
        concurrency,
    )
    .await?;
    if !quiet {
        print!("{}", out.summary());
    }
    for id in &out.unrecorded {
        crate::say::warning(&format!(
            "run {id} has no readable record, so its age is unknown: left in place (--include-unrecorded purges it, dated by the later of the start its id gives and its newest object)"
        ));
    }
    if out.failures.is_empty() {
        Ok(Exit::Success)
    } else {
        crate::say::error(&format!(
            "{} deletions failed; run the purge again to finish",
            out.failures.len()
        ));
        Ok(Exit::Incomplete)
    }
}

fn report_exit(result: Result<Exit, Error>) -> Exit {
    result.unwrap_or_else(|e| {
        crate::say::error(&e.to_string());
        e.exit()
    })
}
