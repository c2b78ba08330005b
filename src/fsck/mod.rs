//! `registry-gc fsck`: a read-only integrity check of a registry tree.
//!
//! It lists and marks like `gc` (manifests are read from storage, never from the
//! manifest cache), reads every link file, and optionally re-hashes every blob.
//! Findings are of two severities:
//!
//! - **problems**: something a client can see fail — a tag or image whose
//!   manifest, config, layer or child is missing, a tag listed without a
//!   current link, a tag pointing at a manifest its repository does not link,
//!   a revision link to a missing manifest, a link file the registry reads
//!   that does not hold its digest, a manifest that is not JSON, a manifest
//!   the registry cannot decode (its GET answers 500; an index listing one
//!   is served, pulling that child fails), a blob whose content does not
//!   match its digest (a manifest always, any blob with `--verify-content`);
//! - **informational**: garbage, leftovers and oddities that break nothing —
//!   orphan blobs, `_layers` links and tag-history entries whose blob is gone
//!   (what the reference collector leaves), tag-history entries that do not
//!   hold their digest (the registry never reads them), manifests served
//!   through a `_layers` link only (the 2.1.0 layout), manifests of a shape
//!   registry-gc does not know, stray keys.
//!
//! Exit codes: 0 no problems, `Exit::Problems` when problems were found (with
//! `--strict`, any finding), 1 when the check could not complete.
//!
//! This file holds the command: its arguments, and the run from settings to
//! exit code. `scan` does the reads beyond listing and marking (link files,
//! manifest roles, `--verify-content`), `checks` turns what was seen into
//! findings, and `render` makes the report (text and JSON) and its exit code.

use clap::Args;

use crate::cli::StorageArgs;
use crate::error::{Error, Exit};
use crate::inspect::{self, ReadArgs};
use crate::progress::Progress;
use crate::storage::open::open_storage;

mod checks;
mod render;
mod scan;

pub use checks::{findings, reference_roles, Finding, Kind, Mismatch, Observed, Role};
pub use render::{Checked, FindingOut, FsckReport};
use scan::{read_links, read_roles, verify_content};

pub const SCHEMA_VERSION: u32 = 1;

/// `fsck --help`: what counts as a problem.
pub const LONG_ABOUT: &str = "\
Check the registry's integrity. Read-only: nothing is written.

Problems (exit 5): tag-manifest-missing, tag-link-missing (a tag the
registry lists with no current link), tag-not-a-revision,
revision-manifest-missing, missing-blob (an image's config or layer),
missing-child (an index's child), child-not-a-revision, blob-not-linked (a
config or layer with no _layers link in the image's repository), junk-link (a
tag, revision or layer link not holding the digest of its path),
unparseable-manifest, undecodable-manifest (one the registry answers 500 for:
no or another schemaVersion, a media type it does not read such as the OCI
1.1 draft artifact manifest's, a field of a JSON type it refuses; an index
listing one is served, pulling that child fails), content-mismatch (a
manifest always, any blob with --verify-content). Broken images are named
repo:tag, or repo@digest when no tag reaches them.

Informational (exit 0 unless --strict): orphan-blob (garbage gc deletes),
dangling-layer-link and dangling-tag-index (leftovers of deleted blobs),
junk-tag-index (a tag history link not holding its digest: never read by the
registry), layer-linked-manifest (served through a _layers link only, the
2.1.0 layout), unknown-manifest, stray-key.

Every link file is read (one GET each on an object store); manifests are read
from storage, never from the manifest cache. --verify-content streams every
blob through sha256.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsckFormat {
    /// Findings grouped by kind, for people.
    Text,
    /// One JSON object (`schema_version: 1`).
    Json,
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    #[command(flatten)]
    pub storage: StorageArgs,

    /// Output format.
    #[arg(long, value_enum, default_value_t = FsckFormat::Text)]
    pub format: FsckFormat,

    /// Also read every blob and check its sha256 against its digest (streamed,
    /// a few blobs at a time: reads the whole registry).
    #[arg(long)]
    pub verify_content: bool,

    /// Count informational findings (orphan blobs, leftover links, stray keys,
    /// unknown manifest shapes) as problems for the exit code.
    #[arg(long)]
    pub strict: bool,

    #[command(flatten)]
    pub read: ReadArgs,
}

/// Runs `fsck` and prints its output; returns the exit code.
pub async fn command(args: &FsckArgs, quiet: bool) -> Exit {
    match run(args, quiet).await {
        Ok(report) => {
            match args.format {
                FsckFormat::Text => print!("{}", report.text()),
                FsckFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serializes")
                ),
            }
            report.exit()
        }
        Err(e) => {
            crate::say::error(&format!("fsck could not complete: {e}"));
            e.exit()
        }
    }
}

async fn run(args: &FsckArgs, quiet: bool) -> Result<FsckReport, Error> {
    let file = args.storage.config_file()?;
    let settings = args.storage.resolve(&file)?;
    let read = args.read.resolve(&file);
    let storage = open_storage(&settings.storage, &settings.backend)?;
    let storage = storage.as_ref();
    let progress = Progress::new(!quiet);
    // No manifest cache: the check is of what storage holds.
    let (inv, marks, _) = inspect::load(storage, &read, None, true, &progress).await?;

    let mut obs = Observed::default();
    let links_read =
        read_links(storage, &inv, &marks, read.concurrency, &progress, &mut obs).await?;
    read_roles(storage, &inv, &marks, &read, &mut obs).await?;
    let verified = if args.verify_content {
        Some(verify_content(storage, &inv, read.concurrency, &progress, &mut obs).await?)
    } else {
        None
    };
    progress.finish();

    let checked = Checked {
        repositories: inv.repositories.len() as u64,
        manifests: inv.manifest_count() as u64,
        tags: inv.tag_count() as u64,
        blobs: inv.blob_count() as u64,
        // fsck's listing stats every blob
        blob_bytes: inv.blob_bytes().unwrap_or_default(),
        links_read,
        blobs_verified: verified.map(|v| v.0),
        bytes_verified: verified.map(|v| v.1),
    };
    Ok(FsckReport::new(
        storage.describe(),
        args.strict,
        checked,
        findings(&inv, &marks, &obs),
    ))
}
