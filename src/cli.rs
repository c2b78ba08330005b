//! The command line: parsed once into plain data, merged with the config file,
//! then turned into the objects that do the work.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{BackendOptions, ConfigError, ConfigFile};
use crate::gc::GcOptions;

const AFTER_HELP: &str = "\
STORAGE:
  /var/lib/registry          the filesystem driver's rootdirectory
  file:///var/lib/registry   the same
  s3://BUCKET[/ROOT]         S3 or an S3-compatible store (MinIO, Ceph, R2, LocalStack)
  az://CONTAINER[/ROOT]      Azure Blob Storage (also azure://)
  gs://BUCKET[/ROOT]         Google Cloud Storage
  ROOT is the registry storage driver's `rootdirectory`.

Credentials come from each cloud's standard sources: AWS_* variables, web
identity (IRSA), ECS/EKS pod identity, instance metadata; AZURE_STORAGE_*
account key or SAS, AZURE_CLIENT_* service principal, workload and managed
identity, the Azure CLI; GOOGLE_SERVICE_ACCOUNT / GOOGLE_APPLICATION_CREDENTIALS,
or the metadata server. Flags override --config, which overrides the environment.

Exit codes:
  0  success (a dry run, or a collection with every deletion done)
  1  error before the sweep (listing, reading or credentials failed): nothing was deleted
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
    /// Put a `gc --quarantine` run's keys back, or list the quarantined runs (--list).
    Restore(RestoreArgs),
    /// Delete quarantined runs older than a duration.
    Purge(PurgeArgs),
}

/// Where the registry is and how to reach it: shared by every command that
/// reads a registry.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// The registry's storage (see STORAGE below). May be set in --config instead.
    #[arg(value_name = "STORAGE")]
    pub storage: Option<String>,

    /// A TOML file holding any of these options ([storage], [gc], [s3], [azure], [gcs]).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Object store endpoint: an S3-compatible server (MinIO, Ceph, R2,
    /// LocalStack), an Azure or GCS emulator. Also AWS_ENDPOINT_URL.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// S3 region. Also AWS_REGION.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// Allow a plain-http endpoint (local emulators).
    #[arg(long)]
    pub allow_http: bool,

    /// Address S3 buckets as https://BUCKET.host/ instead of https://host/BUCKET/.
    #[arg(long)]
    pub virtual_hosted_style: bool,

    /// Any object_store setting for the backend, e.g. `-o use_emulator=true`,
    /// `-o sas_token=...` (repeatable). See README for the keys.
    #[arg(short = 'o', long = "storage-option", value_name = "KEY=VALUE")]
    pub storage_options: Vec<String>,
}

/// The storage a command runs on, merged from flags and the config file.
#[derive(Debug)]
pub struct StorageSettings {
    pub storage: String,
    pub backend: BackendOptions,
}

impl StorageArgs {
    /// Loads `--config`, if given (an empty file otherwise).
    pub fn config_file(&self) -> Result<ConfigFile, ConfigError> {
        match &self.config {
            Some(path) => ConfigFile::load(path),
            None => Ok(ConfigFile::default()),
        }
    }

    pub fn resolve(&self, file: &ConfigFile) -> Result<StorageSettings, ConfigError> {
        let storage = self.storage.clone().or(file.storage.url.clone()).ok_or(ConfigError::NoStorage)?;
        let mut backend = BackendOptions::default();
        if let Some(p) = &self.config {
            backend.extend_from_section("s3", &file.s3, p);
            backend.extend_from_section("azure", &file.azure, p);
            backend.extend_from_section("gcs", &file.gcs, p);
        }
        if let Some(e) = &self.endpoint {
            backend.push("endpoint", e, "--endpoint");
        }
        if let Some(r) = &self.region {
            backend.push("region", r, "--region");
        }
        if self.allow_http {
            backend.push("allow_http", "true", "--allow-http");
        }
        if self.virtual_hosted_style {
            backend.push("virtual_hosted_style_request", "true", "--virtual-hosted-style");
        }
        for kv in &self.storage_options {
            let (k, v) = kv.split_once('=').ok_or_else(|| ConfigError::File {
                path: "-o".into(),
                reason: format!("{:?} is not KEY=VALUE", kv.split('=').next().unwrap_or_default()),
            })?;
            backend.push(k.trim(), v, &format!("-o {}", k.trim()));
        }
        Ok(StorageSettings { storage, backend })
    }
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub storage: StorageArgs,

    /// Plan and report, but write nothing.
    #[arg(short = 'd', long)]
    pub dry_run: bool,

    /// Also collect manifests no tag reaches, per repository. Children of kept
    /// indexes and untagged referrers (signatures, SBOMs) of kept manifests stay.
    #[arg(short = 'm', long)]
    pub delete_untagged: bool,

    /// Never delete objects modified more recently than this (e.g. 1h, 30m, 0s)
    /// [default: 1h]. Use 0s only when the registry is read-only or stopped.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub min_age: Option<Duration>,

    /// Delete uploads idle for longer than this [default: 7d].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub upload_max_age: Option<Duration>,

    /// Remove repositories left with no manifests, tags, layers or uploads
    /// (filesystem only; object stores have no directories). Without this flag
    /// they are only reported.
    #[arg(long)]
    pub delete_empty_repos: bool,

    /// Write the run's JSON report to this file (also in a dry run).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Storage requests in flight at once [default: 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,

    /// Refuse to read a manifest larger than this many bytes (the run stops;
    /// nothing is deleted) [default: 67108864]. Manifests over 4 MiB work.
    #[arg(long, value_name = "BYTES")]
    pub max_manifest_size: Option<u64>,

    /// Keep manifests read from an object store here, so later runs need not
    /// read them again [default: $XDG_CACHE_HOME/registry-gc or ~/.cache/registry-gc].
    /// Entries are verified by digest; the directory is always safe to delete.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Use no manifest cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,

    /// Move what would be deleted under <STORAGE>/registry-gc-quarantine/<RUN-ID>/
    /// instead of deleting it (undo with `restore`, free with `purge`).
    #[arg(long)]
    pub quarantine: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub storage: StorageArgs,

    /// The run to restore, as `gc --quarantine` printed it (see --list). With
    /// [storage] url in --config, `restore --config FILE RUN-ID` is enough.
    #[arg(value_name = "RUN-ID", conflicts_with = "list")]
    pub run_id: Option<String>,

    /// List the quarantined runs: state, keys and bytes still quarantined, age.
    #[arg(long)]
    pub list: bool,

    /// Storage requests in flight at once [default: 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
}

impl RestoreArgs {
    /// The storage and the run id (`None` for --list). A lone positional
    /// argument is the run id when --config names the storage.
    pub fn resolve(&self) -> Result<(StorageSettings, Option<String>), ConfigError> {
        let file = self.storage.config_file()?;
        let (storage_arg, run_id) = match (&self.storage.storage, &self.run_id) {
            (Some(one), None) if !self.list && file.storage.url.is_some() => (None, Some(one.clone())),
            (s, r) => (s.clone(), r.clone()),
        };
        if !self.list && run_id.is_none() {
            return Err(ConfigError::Missing { what: "RUN-ID (or --list)".into() });
        }
        let args = StorageArgs { storage: storage_arg, ..self.storage.clone() };
        Ok((args.resolve(&file)?, run_id))
    }
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub storage: StorageArgs,

    /// Delete the runs that started longer ago than this (e.g. 7d, 12h).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub older_than: Duration,

    /// Show what would be purged; delete nothing.
    #[arg(short = 'd', long)]
    pub dry_run: bool,

    /// Storage requests in flight at once [default: 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
}

/// Everything a `gc` run needs, merged from flags, config file and defaults.
#[derive(Debug)]
pub struct GcSettings {
    pub storage: String,
    pub options: GcOptions,
    pub report: Option<PathBuf>,
    pub backend: BackendOptions,
    /// No cache directory was given and none was refused: use the default one
    /// if the storage is remote.
    pub default_cache: bool,
}

impl GcArgs {
    pub fn resolve(&self) -> Result<GcSettings, ConfigError> {
        let file = self.storage.config_file()?;
        let StorageSettings { storage, backend } = self.storage.resolve(&file)?;
        let path = self.storage.config.clone().unwrap_or_default();
        let gc = &file.gc;
        let min_age = self.min_age.or(file.duration(&path, "min_age", &gc.min_age)?).unwrap_or(Duration::from_secs(3600));
        let upload_max_age =
            self.upload_max_age.or(file.duration(&path, "upload_max_age", &gc.upload_max_age)?).unwrap_or(Duration::from_secs(7 * 86400));
        let options = GcOptions {
            dry_run: self.dry_run || gc.dry_run.unwrap_or(false),
            delete_untagged: self.delete_untagged || gc.delete_untagged.unwrap_or(false),
            min_age_ms: min_age.as_millis() as i64,
            upload_max_age_ms: upload_max_age.as_millis() as i64,
            delete_empty_repositories: self.delete_empty_repos || gc.delete_empty_repos.unwrap_or(false),
            concurrency: self.concurrency.or(gc.concurrency).unwrap_or(64).max(1) as usize,
            max_manifest_bytes: self.max_manifest_size.or(gc.max_manifest_size).unwrap_or(64 * 1024 * 1024),
            cache_dir: if self.no_cache || gc.no_cache.unwrap_or(false) {
                None
            } else {
                self.cache_dir.clone().or(gc.cache_dir.clone())
            },
            quarantine: self.quarantine || gc.quarantine.unwrap_or(false),
        };
        let default_cache = !self.no_cache && !gc.no_cache.unwrap_or(false);
        Ok(GcSettings { storage, options, report: self.report.clone().or(gc.report.clone()), backend, default_cache })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str]) -> Result<GcSettings, ConfigError> {
        let mut full = vec!["registry-gc", "gc"];
        full.extend_from_slice(args);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Gc(args) => args.resolve(),
            #[allow(unreachable_patterns)]
            _ => unreachable!("parsed as gc"),
        }
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let s = resolve(&["/var/lib/registry"]).unwrap();
        assert_eq!(s.options.min_age_ms, 3_600_000);
        assert_eq!(s.options.upload_max_age_ms, 7 * 24 * 3_600_000);
        assert_eq!(s.options.concurrency, 64);
        assert!(!s.options.dry_run && !s.options.delete_untagged && !s.options.delete_empty_repositories);
    }

    #[test]
    fn accepts_zero_min_age_and_reference_short_flags() {
        let s = resolve(&["-d", "-m", "--min-age", "0s", "x"]).unwrap();
        assert_eq!(s.options.min_age_ms, 0);
        assert!(s.options.dry_run && s.options.delete_untagged);
    }

    #[test]
    fn rejects_a_bad_duration() {
        assert!(Cli::try_parse_from(["registry-gc", "gc", "--min-age", "soon", "x"]).is_err());
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = std::env::temp_dir().join(format!("registry-gc-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[storage]\nurl = \"s3://b/r\"\n[gc]\nmin_age = \"2h\"\nconcurrency = 8\ndelete_untagged = true\n[s3]\nregion = \"eu-west-1\"\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let s = resolve(&["--config", f]).unwrap();
        assert_eq!(s.storage, "s3://b/r");
        assert_eq!(s.options.min_age_ms, 7_200_000);
        assert_eq!(s.options.concurrency, 8);
        assert!(s.options.delete_untagged);
        let s = resolve(&["--config", f, "--min-age", "5m", "--region", "us-east-2", "gs://other"]).unwrap();
        assert_eq!(s.storage, "gs://other");
        assert_eq!(s.options.min_age_ms, 300_000);
        let region: Vec<_> = s.backend.for_section("s3").filter(|o| o.key == "region").map(|o| o.value.as_str()).collect();
        assert_eq!(region, vec!["eu-west-1", "us-east-2"], "later entries win");

        std::fs::write(&file, "[gc]\nmin_age = \"soon\"\n").unwrap();
        let err = resolve(&["--config", f, "x"]).unwrap_err().to_string();
        assert!(err.contains("min_age") && err.contains("c.toml"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn quarantine_from_the_flag_or_the_config_file_and_restore_arguments() {
        assert!(!resolve(&["x"]).unwrap().options.quarantine);
        assert!(resolve(&["--quarantine", "x"]).unwrap().options.quarantine);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("q.toml");
        std::fs::write(&file, "[storage]\nurl = \"s3://b/r\"\n[gc]\nquarantine = true\n").unwrap();
        let f = file.to_str().unwrap();
        assert!(resolve(&["--config", f]).unwrap().options.quarantine);

        let restore = |args: &[&str]| {
            let mut full = vec!["registry-gc", "restore"];
            full.extend_from_slice(args);
            match Cli::try_parse_from(full).map(|c| c.command) {
                Ok(Command::Restore(r)) => r.resolve().map(|(s, run)| (s.storage, run)).map_err(|e| e.to_string()),
                Ok(_) => unreachable!("parsed as restore"),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(restore(&["/srv/reg", "RUN1"]), Ok(("/srv/reg".to_string(), Some("RUN1".to_string()))));
        assert_eq!(restore(&["--list", "/srv/reg"]), Ok(("/srv/reg".to_string(), None)));
        // with the storage in --config, the lone argument is the run
        assert_eq!(restore(&["--config", f, "RUN1"]), Ok(("s3://b/r".to_string(), Some("RUN1".to_string()))));
        assert!(restore(&["/srv/reg"]).unwrap_err().contains("RUN-ID"));
        assert!(restore(&["--list", "/srv/reg", "RUN1"]).is_err());
    }

    #[test]
    fn storage_is_required_somewhere() {
        assert!(matches!(resolve(&[]), Err(ConfigError::NoStorage)));
        assert!(resolve(&["-o", "novalue", "x"]).is_err());
    }
}
