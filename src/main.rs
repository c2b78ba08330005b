//! The `registry-gc` binary: a thin shell over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use clap::Parser;
use registry_gc::cache::ManifestCache;
use registry_gc::cli::{Cli, Command, GcArgs, LogFormat};
use registry_gc::error::{Error, Exit};
use registry_gc::progress::Progress;
use registry_gc::storage::open::{open_storage, shown_spec};
use registry_gc::{gc, generate, metrics, report::Report};

use registry_gc::say::error as say;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    // Blocking threads do the filesystem work. Sixteen keep a disk's queue full
    // when the page cache is cold; more only contend for the two allocator arenas
    // and the CPUs when it is warm (measured at 1M keys: 32 threads cost 3 MiB
    // more and no time), and each costs a stack and a directory buffer.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(Exit::Error as u8);
        }
    };
    let exit = match &cli.command {
        Command::Gc(args) => runtime.block_on(gc_command(args, cli.quiet)),
        Command::Completions { shell } => {
            match generate::completions(*shell, &mut std::io::stdout()) {
                Ok(()) => Exit::Success,
                Err(e) => {
                    say(&format!("cannot write the completion script: {e}"));
                    Exit::Error
                }
            }
        }
        Command::Man => match generate::man(&mut std::io::stdout()) {
            Ok(()) => Exit::Success,
            Err(e) => {
                say(&format!("cannot write the man page: {e}"));
                Exit::Error
            }
        },
        Command::Du(args) => runtime.block_on(registry_gc::du::command(args, cli.quiet)),
        Command::Fsck(args) => runtime.block_on(registry_gc::fsck::command(args, cli.quiet)),
        Command::Restore(args) => {
            runtime.block_on(registry_gc::quarantine::restore_command(args, cli.quiet))
        }
        Command::Purge(args) => {
            runtime.block_on(registry_gc::quarantine::purge_command(args, cli.quiet))
        }
    };
    ExitCode::from(exit as u8)
}

/// Says each thing a finished run leaves to do, and exits 4 if there is any.
fn say_what_is_left_to_do(report: &Report) -> Exit {
    let left = report.left_to_do();
    for line in &left {
        say(line);
    }
    if left.is_empty() {
        Exit::Success
    } else {
        Exit::Incomplete
    }
}

/// What is known of a run for its metrics, filled in as the run gets further.
struct Known {
    storage: String,
    dry_run: bool,
    metrics: Option<PathBuf>,
}

async fn gc_command(args: &GcArgs, quiet: bool) -> Exit {
    let started = Instant::now();
    let mut known = Known {
        storage: shown_spec(&args.storage.storage.clone().unwrap_or_default()),
        dry_run: args.dry_run,
        metrics: args.metrics.clone(),
    };
    let result = run_gc(args, quiet, &mut known).await;
    let exit = match &result {
        Ok(report) => say_what_is_left_to_do(report),
        Err(e) => {
            say(&e.to_string());
            e.exit()
        }
    };
    // written whatever happened, so that a failing cron job is seen failing
    if let Some(path) = &known.metrics {
        let m = metrics::RunMetrics {
            storage: &known.storage,
            dry_run: known.dry_run,
            finished: SystemTime::now(),
            duration_seconds: started.elapsed().as_secs_f64(),
            exit_code: exit as u8,
            report: result.as_ref().ok(),
        };
        if let Err(e) = metrics::write_atomic(path, &metrics::render(&m)) {
            say(&format!("--metrics {}: {e}", path.display()));
            // checked writable before the run, so this is a failure on the
            // way; after a real sweep, "nothing was deleted" (1) would be false
            if exit == Exit::Success {
                return if known.dry_run {
                    Exit::Error
                } else {
                    Exit::Incomplete
                };
            }
        }
    }
    exit
}

async fn run_gc(args: &GcArgs, quiet: bool, known: &mut Known) -> Result<Report, Error> {
    let mut settings = args.resolve()?;
    known.storage = shown_spec(&settings.storage);
    known.dry_run = settings.options.dry_run;
    known.metrics = settings.metrics.clone();
    if let Some(path) = &settings.metrics {
        registry_gc::report::check_writable(path, registry_gc::report::WrittenAs::Renamed)
            .map_err(|e| {
                // the metrics are not written at the end either: said once, here
                known.metrics = None;
                Error::Usage(format!(
                    "--metrics {}: {e}; nothing was done",
                    path.display()
                ))
            })?;
    }
    let storage = open_storage(&settings.storage, &settings.backend)?;
    // Manifests are worth caching only when reading them costs a request.
    if settings.options.cache_dir.is_none()
        && settings.default_cache
        && storage.list_page_size().is_some()
    {
        settings.options.cache_dir = ManifestCache::default_dir();
    }
    let progress = Progress::new(!quiet);
    tracing::info!(storage = %storage.describe(), dry_run = settings.options.dry_run, delete_untagged = settings.options.delete_untagged, "collection starting");
    let report = gc::run(
        storage,
        settings.options,
        &progress,
        settings.report.as_deref(),
    )
    .await?;
    tracing::info!(
        storage = %report.storage,
        deleted_keys = report.deleted_keys,
        bytes_freed = report.bytes_freed,
        failures = report.failures.len(),
        duration_seconds = report.duration_seconds,
        "collection finished"
    );
    if !quiet {
        print!("{}", report.summary());
    }
    Ok(report)
}

fn init_logging(verbose: u8, format: LogFormat) {
    // aws-config (the aws-profile feature) logs a failed credential fetch as a
    // warning that repeats the run's own error, and the key ID it loaded as
    // info: one level quieter than ours until -vv
    let level = match verbose {
        0 => "warn,aws_config=error",
        1 => "info,aws_config=warn",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("REGISTRY_GC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => {
            registry_gc::say::use_json_log();
            builder.json().init();
        }
    }
}

/// glibc gives each thread that allocates its own arena, and each arena keeps
/// what was freed in it: with dozens of I/O threads that is most of the memory a
/// large run uses beyond its data. Two arenas serve two cores.
///
/// The mmap threshold is fixed too: glibc otherwise raises it to the size of
/// each large block freed (up to 32 MiB), so once the inventory's vectors have
/// grown, blocks of megabytes come from the heap, where what is freed around
/// long-lived data stays resident. Fixed at 64 KiB (above the 32 KiB a
/// directory read allocates), large vectors are mapped on their own: freed to
/// the system when dropped, grown by remapping rather than copying, and their
/// unused capacity never touched.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
    }
}
