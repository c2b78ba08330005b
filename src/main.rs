//! The `registry-gc` binary: a thin shell over the library.

use std::process::ExitCode;

use clap::Parser;
use registry_gc::cache::ManifestCache;
use registry_gc::cli::{Cli, Command, GcArgs};
use registry_gc::error::{Error, Exit};
use registry_gc::progress::Progress;
use registry_gc::storage::open::open_storage;
use registry_gc::{gc, report::Report};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // Blocking threads do the filesystem work; a few dozen saturate a disk, and
    // each extra thread costs stack and allocator arenas.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(32).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("registry-gc: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Error as u8);
        }
    };
    let exit = match &cli.command {
        Command::Gc(args) => runtime.block_on(gc_command(args, cli.quiet)),
        Command::Restore(args) => runtime.block_on(registry_gc::quarantine::restore_command(args, cli.quiet)),
        Command::Purge(args) => runtime.block_on(registry_gc::quarantine::purge_command(args, cli.quiet)),
    };
    ExitCode::from(exit as u8)
}

async fn gc_command(args: &GcArgs, quiet: bool) -> Exit {
    match run_gc(args, quiet).await {
        Ok(report) if !report.failures.is_empty() => {
            eprintln!("registry-gc: {} deletions failed; run again to finish", report.failures.len());
            Exit::Incomplete
        }
        Ok(_) => Exit::Success,
        Err(e) => {
            eprintln!("registry-gc: {e}");
            e.exit()
        }
    }
}

async fn run_gc(args: &GcArgs, quiet: bool) -> Result<Report, Error> {
    let mut settings = args.resolve()?;
    let storage = open_storage(&settings.storage, &settings.backend)?;
    // Manifests are worth caching only when reading them costs a request.
    if settings.options.cache_dir.is_none() && settings.default_cache && storage.list_page_size().is_some() {
        settings.options.cache_dir = ManifestCache::default_dir();
    }
    let progress = Progress::new(!quiet);
    let report = gc::run(storage, settings.options, &progress, settings.report.as_deref()).await?;
    if !quiet {
        print!("{}", report.summary());
    }
    Ok(report)
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("REGISTRY_GC_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// glibc gives each thread that allocates its own arena, and each arena keeps
/// what was freed in it: with dozens of I/O threads that is most of the memory a
/// large run uses beyond its data. Two arenas serve two cores.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
