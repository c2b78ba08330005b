//! What the read-only commands (`du`, `fsck`) share with `gc`: the same listing
//! and mark phases, never a sweep. Nothing here writes to storage.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::cache::ManifestCache;
use crate::config::ConfigFile;
use crate::error::Error;
use crate::inventory::Inventory;
use crate::listing;
use crate::mark::{self, MarkOptions, Marks};
use crate::progress::Progress;
use crate::report::Warning;
use crate::storage::{Storage, StorageError};

/// Output formats of the inspection commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON object (`schema_version: 1`).
    Json,
    /// Comma-separated values with a header line.
    Csv,
}

/// How the registry is read: the `gc` options that shape the listing and the
/// mark phase.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Storage requests in flight at once [default: 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,

    /// Refuse to read a manifest larger than this many bytes (the command
    /// stops, exit 1) [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub max_manifest_size: Option<u64>,
}

/// The read settings, merged with `[gc]` of the config file.
#[derive(Debug, Clone)]
pub struct ReadSettings {
    pub concurrency: usize,
    pub max_manifest_bytes: u64,
}

impl ReadArgs {
    pub fn resolve(&self, file: &ConfigFile) -> ReadSettings {
        ReadSettings {
            concurrency: self
                .concurrency
                .or(file.gc.concurrency)
                .unwrap_or(64)
                .max(1) as usize,
            max_manifest_bytes: self
                .max_manifest_size
                .or(file.gc.max_manifest_size)
                .unwrap_or(crate::mark::DEFAULT_MAX_MANIFEST_BYTES),
        }
    }
}

/// The manifest cache setting (`du` uses it like `gc`; `fsck` reads everything
/// from storage, so that it checks what the registry would serve).
pub fn cache_for(storage: &dyn Storage, dir: Option<PathBuf>, no_cache: bool) -> Option<PathBuf> {
    if no_cache {
        return None;
    }
    // Manifests are worth caching only when reading them costs a request.
    dir.or_else(|| {
        if storage.list_page_size().is_some() {
            ManifestCache::default_dir()
        } else {
            None
        }
    })
}

/// A read that `du` or `fsck` needed failed: the command could not complete.
#[derive(Debug, thiserror::Error)]
#[error("reading failed: {0}")]
pub struct ReadError(#[from] pub StorageError);

/// Lists the registry and reads its tag links and manifests: `gc`'s picture
/// of it, for a command that only reports. Every key is listed (`gc` probes
/// digest directories for their one file), so that strays anywhere are seen.
/// With `keep_corrupt` (`fsck`), a manifest whose bytes do not match its digest
/// is kept in `Marks::corrupt_manifests` and the reads go on; otherwise (`du`,
/// whose figures are `gc`'s plan) it stops the command, as it stops `gc`.
pub async fn load(
    storage: &dyn Storage,
    read: &ReadSettings,
    cache_dir: Option<PathBuf>,
    keep_corrupt: bool,
    progress: &Progress,
) -> Result<(Inventory, Marks, Vec<Warning>), Error> {
    let mut inventory = Inventory::default();
    listing::list_registry(storage, &mut inventory, None, read.concurrency, progress).await?;
    inventory.finish();
    let mut warnings = Vec::new();
    let cache = ManifestCache::open_or_warn(cache_dir.as_deref(), &mut warnings);
    let mark_opts = MarkOptions {
        concurrency: read.concurrency,
        max_manifest_bytes: read.max_manifest_bytes,
        cache,
    };
    let marks = if keep_corrupt {
        mark::mark_reporting_corrupt(storage, &inventory, &mark_opts, progress).await?
    } else {
        mark::mark(storage, &inventory, &mark_opts, progress).await?
    };
    Ok((inventory, marks, warnings))
}
