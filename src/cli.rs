//! The command line: parsed once into plain data, then turned into the objects
//! that do the work.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::gc::GcOptions;

const AFTER_HELP: &str = "\
Exit codes:
  0  success (a dry run, or a collection with every deletion done)
  1  error before the sweep (listing or reading failed): nothing was deleted
  2  bad command line or settings: nothing was done
  3  refused for safety (not a registry root, a symbolic link out of the root,
     a key outside docker/registry/v2): nothing was deleted
  4  the sweep ran but some deletions failed (named in the output and report);
     the next run finishes the work

After a collection, restart a running registry that uses a blob-descriptor
cache (inmemory or redis), or flush that cache: it still believes deleted blobs
exist (distribution #2945, #4269).";

#[derive(Debug, Parser)]
#[command(
    name = "registry-gc",
    version,
    about = "Garbage-collect a container registry stored in the distribution (docker registry v2) layout",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More log output on stderr (-v: info, -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// No progress display and no summary; errors still go to stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Delete blobs and links that no kept manifest needs (like `registry garbage-collect`).
    #[command(after_help = AFTER_HELP)]
    Gc(GcArgs),
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// The registry's storage: its root directory (the one holding
    /// docker/registry/v2, the filesystem driver's `rootdirectory`) or a file:// URL.
    #[arg(value_name = "STORAGE")]
    pub storage: String,

    /// Plan and report, but write nothing.
    #[arg(short = 'd', long)]
    pub dry_run: bool,

    /// Also collect manifests no tag reaches, per repository. Children of kept
    /// indexes and untagged referrers (signatures, SBOMs) of kept manifests stay.
    #[arg(short = 'm', long)]
    pub delete_untagged: bool,

    /// Never delete objects modified more recently than this (e.g. 1h, 30m, 0s).
    /// Use 0s only when the registry is read-only or stopped during the run.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub min_age: Duration,

    /// Delete uploads idle for longer than this.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub upload_max_age: Duration,

    /// Remove repositories left with no manifests, tags, layers or uploads
    /// (filesystem only; object stores have no directories). Without this flag
    /// they are only reported.
    #[arg(long)]
    pub delete_empty_repos: bool,

    /// Write the run's JSON report to this file (also in a dry run).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Storage requests (and filesystem tasks) in flight at once.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Refuse to read a manifest larger than this many bytes (the run stops;
    /// nothing is deleted). Manifests over distribution's 4 MiB limit work.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_manifest_size: u64,
}

impl GcArgs {
    pub fn options(&self) -> GcOptions {
        GcOptions {
            dry_run: self.dry_run,
            delete_untagged: self.delete_untagged,
            min_age_ms: self.min_age.as_millis() as i64,
            upload_max_age_ms: self.upload_max_age.as_millis() as i64,
            delete_empty_repositories: self.delete_empty_repos,
            concurrency: self.concurrency as usize,
            max_manifest_bytes: self.max_manifest_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let cli = Cli::try_parse_from(["registry-gc", "gc", "/var/lib/registry"]).unwrap();
        let Command::Gc(args) = cli.command;
        let o = args.options();
        assert_eq!(o.min_age_ms, 3_600_000);
        assert_eq!(o.upload_max_age_ms, 7 * 24 * 3_600_000);
        assert!(!o.dry_run && !o.delete_untagged && !o.delete_empty_repositories);
    }

    #[test]
    fn accepts_zero_min_age_and_reference_short_flags() {
        let cli = Cli::try_parse_from(["registry-gc", "gc", "-d", "-m", "--min-age", "0s", "x"]).unwrap();
        let Command::Gc(args) = cli.command;
        assert_eq!(args.options().min_age_ms, 0);
        assert!(args.dry_run && args.delete_untagged);
    }

    #[test]
    fn rejects_a_bad_duration() {
        assert!(Cli::try_parse_from(["registry-gc", "gc", "--min-age", "soon", "x"]).is_err());
    }
}
