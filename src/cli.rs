//! The command line: parsed once into plain data, merged with the config file,
//! then turned into the objects that do the work.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{BackendOptions, ConfigError, ConfigFile};
use crate::gc::GcOptions;
use crate::guard::GuardOptions;

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
  2  bad command line or settings (also a --report or --metrics file that
     cannot be written): nothing was done
  3  refused for safety (not a registry root, a symbolic link out of the root,
     a key outside docker/registry/v2; without --force, a plan over
     --max-delete-percent of the blobs or of the tags and revision links, blobs
     but no manifests, or tags and revision links but no blob): nothing was
     deleted
  4  the sweep ran but some deletions failed (named in the output and report);
     the next run finishes the work. Or something pushed or tagged during the
     sweep needs a key it deleted (named; push it again), or the look for
     such pushes failed, or the report or metrics could not be written after
     the sweep
  5  fsck found problems (listed in its output); informational findings alone
     (orphan blobs, leftover links, stray keys) exit 0 unless --strict

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

    /// Log lines on stderr as text, or as JSON (one object per line, for log collectors).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// parsed once per process: the size of the largest variant costs nothing
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Delete blobs and links that no kept manifest needs (like `registry garbage-collect`).
    #[command(after_help = AFTER_HELP)]
    Gc(GcArgs),
    /// Print a shell completion script on stdout, e.g.
    /// `registry-gc completions bash > /etc/bash_completion.d/registry-gc`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout, e.g. `registry-gc man > /usr/local/share/man/man1/registry-gc.1`.
    Man,
    /// Bytes per repository (exclusive, shared) and what `gc` would free; read-only.
    #[command(after_help = AFTER_HELP, long_about = crate::du::LONG_ABOUT)]
    Du(crate::du::DuArgs),
    /// Check the registry's integrity (missing blobs, broken tags and images,
    /// junk links, orphans, stray keys); read-only. Exit 5 when problems are found.
    #[command(after_help = AFTER_HELP, long_about = crate::fsck::LONG_ABOUT)]
    Fsck(crate::fsck::FsckArgs),
    /// Put a `gc --quarantine` run's keys back, or list the quarantined runs (--list).
    Restore(RestoreArgs),
    /// Delete quarantined runs older than a duration.
    Purge(PurgeArgs),
}

/// Where the registry is and how to reach it: shared by every command that
/// reads a registry.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// The registry's storage (see STORAGE below). May be set in --config, or read from --registry-config, instead;
    /// a file given here (`registry garbage-collect`'s config.yml argument) is read as --registry-config.
    #[arg(value_name = "STORAGE")]
    pub storage: Option<String>,

    /// A TOML file holding any of these options ([storage], [gc], [s3], [azure], [gcs]).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The registry's own config.yml: its `storage:` section (filesystem, s3,
    /// azure, gcs), with the REGISTRY_STORAGE_* environment overrides the registry
    /// applies. Replaces STORAGE; flags and --config sections override its values.
    // Not a clap conflict with STORAGE: for `restore --registry-config FILE
    // RUN-ID` the lone positional is the run id, which only `resolve` knows.
    #[arg(long, value_name = "FILE")]
    pub registry_config: Option<PathBuf>,

    /// Object store endpoint: an S3-compatible server (MinIO, Ceph, R2,
    /// LocalStack), an Azure or GCS emulator. Also AWS_ENDPOINT_URL.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// S3 region. Also AWS_REGION.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// AWS profile for S3 credentials and region, from ~/.aws/config and
    /// ~/.aws/credentials (static keys, SSO, assume-role, credential_process).
    /// Also AWS_PROFILE. Needs a build with the aws-profile feature.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

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

/// The environment as `--registry-config` reads it. `std::env::vars` would
/// panic on a variable that is not UTF-8 (any variable: a locale's, a
/// secret's), ending the run with exit code 101. Such a variable is left out,
/// unless it is one of the registry's storage settings (`REGISTRY_STORAGE`,
/// `REGISTRY_STORAGE_*`, the only ones read here): the registry would use its
/// bytes, and registry-gc cannot, so it is refused by name (exit code 2)
/// rather than the file's value used in its place. Other `REGISTRY_*`
/// variables (an HTTP secret of random bytes) have no bearing on the storage.
fn registry_env() -> Result<Vec<(String, String)>, ConfigError> {
    use std::os::unix::ffi::OsStrExt;
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        match (name.to_str(), value.to_str()) {
            (Some(n), Some(v)) => vars.push((n.to_string(), v.to_string())),
            _ if name.as_bytes() == b"REGISTRY_STORAGE"
                || name.as_bytes().starts_with(b"REGISTRY_STORAGE_") =>
            {
                return Err(crate::registry_config::RegistryConfigError::Env {
                    var: name.to_string_lossy().into_owned(),
                    reason: "is not valid UTF-8: registry-gc cannot read the setting the \
                             registry would use; correct it or unset it"
                        .into(),
                }
                .into())
            }
            _ => {}
        }
    }
    Ok(vars)
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
        // `registry garbage-collect [flags] config.yml` takes the registry's
        // config as its argument, and operators type it that way here too. A
        // registry root is a directory, so a regular file given as STORAGE is
        // read as --registry-config (whose errors then name it).
        let given_as_storage = self
            .storage
            .as_deref()
            .filter(|s| self.registry_config.is_none() && !s.contains("://"))
            .filter(|s| std::path::Path::new(s).is_file());
        if let Some(path) = given_as_storage {
            let as_config = StorageArgs {
                storage: None,
                registry_config: Some(PathBuf::from(path)),
                ..self.clone()
            };
            return as_config.resolve(file);
        }
        let mut backend = BackendOptions::default();
        // the registry's config is the lowest layer: what the registry itself
        // uses, which --config sections and flags may adjust
        let from_registry = match &self.registry_config {
            Some(_) if self.storage.is_some() => {
                return Err(ConfigError::StorageAndRegistryConfig {
                    storage: self.storage.clone().unwrap_or_default(),
                })
            }
            Some(path) => {
                if file.storage.url.is_some() {
                    return Err(ConfigError::TwoStorages {
                        path: self
                            .config
                            .clone()
                            .unwrap_or_default()
                            .display()
                            .to_string(),
                    });
                }
                let r = crate::registry_config::load(path, registry_env()?)?;
                if let Some(section) = r.section {
                    for o in &r.options {
                        backend.push_section(section, o.key, &o.value, &o.origin);
                    }
                }
                Some(r.url)
            }
            None => None,
        };
        let storage = self
            .storage
            .clone()
            .or(file.storage.url.clone())
            .or(from_registry)
            .ok_or(ConfigError::NoStorage)?;
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
        if let Some(p) = &self.profile {
            backend.push("profile", p, "--profile");
        }
        if self.allow_http {
            backend.push("allow_http", "true", "--allow-http");
        }
        if self.virtual_hosted_style {
            backend.push(
                "virtual_hosted_style_request",
                "true",
                "--virtual-hosted-style",
            );
        }
        for kv in &self.storage_options {
            let (k, v) = kv.split_once('=').ok_or_else(|| ConfigError::File {
                path: "-o".into(),
                reason: format!(
                    "{:?} is not KEY=VALUE",
                    kv.split('=').next().unwrap_or_default()
                ),
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

    /// The registry is stopped or read-only for the whole run, as `registry
    /// garbage-collect` requires: skip the re-check before the sweep and the
    /// look for pushes after it (on S3, two listings of repositories/). Unsafe
    /// while the registry accepts pushes.
    #[arg(long)]
    pub offline: bool,

    /// Remove repositories left with no manifests, tags, layers or uploads
    /// (filesystem only; object stores have no directories). Without this flag
    /// they are only reported.
    #[arg(long)]
    pub delete_empty_repos: bool,

    /// Write the run's JSON report to this file (also in a dry run).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Write the run's metrics to this Prometheus textfile (node_exporter's
    /// textfile collector), atomically; also when the run fails.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,

    /// Storage requests in flight at once [default: 64]. Deletes keep at most
    /// 8,192 keys in flight (8 bulk requests on S3)
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

    /// Refuse to sweep when the plan deletes more than this share of all blobs,
    /// or of all tags and revision links as dangling (their manifest blob
    /// missing) [default: 50]. A dry run reports the refusal as a warning.
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub max_delete_percent: Option<f64>,

    /// Sweep even a plan the guard refuses (over --max-delete-percent, blobs
    /// but no manifests at all, or tags and revision links but no blob at
    /// all). Check a --dry-run first.
    #[arg(long)]
    pub force: bool,

    /// Move what would be deleted under <STORAGE>/registry-gc-quarantine/<RUN-ID>/
    /// instead of deleting it (undo with `restore`, free with `purge`).
    #[arg(long)]
    pub quarantine: bool,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is not between 0 and 100"))
    }
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub storage: StorageArgs,

    /// The run to restore, as `gc --quarantine` printed it (see --list). With
    /// [storage] url in --config, `restore --config FILE RUN-ID` is enough, and
    /// so is `restore --registry-config FILE RUN-ID`.
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
    /// argument is the run id when --config or --registry-config names the storage.
    pub fn resolve(&self) -> Result<(StorageSettings, Option<String>), ConfigError> {
        let file = self.storage.config_file()?;
        let storage_elsewhere =
            file.storage.url.is_some() || self.storage.registry_config.is_some();
        let (storage_arg, run_id) = match (&self.storage.storage, &self.run_id) {
            (Some(one), None) if !self.list && storage_elsewhere => (None, Some(one.clone())),
            (s, r) => (s.clone(), r.clone()),
        };
        if !self.list && run_id.is_none() {
            return Err(ConfigError::Missing {
                what: "RUN-ID (or --list)".into(),
            });
        }
        let args = StorageArgs {
            storage: storage_arg,
            ..self.storage.clone()
        };
        Ok((args.resolve(&file)?, run_id))
    }
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub storage: StorageArgs,

    /// Delete the runs last written longer ago than this (e.g. 7d, 12h): the
    /// later of their start and their newest object.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub older_than: Duration,

    /// Show what would be purged; delete nothing.
    #[arg(short = 'd', long)]
    pub dry_run: bool,

    /// Also purge runs whose record cannot be read, dated by the later of the
    /// start their id gives and their newest object. Without it they are left,
    /// with a warning: on disk a quarantine move keeps each file's mtime, so
    /// by its objects alone such a run may look old the moment it is made.
    #[arg(long)]
    pub include_unrecorded: bool,

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
    pub metrics: Option<PathBuf>,
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
        let min_age = self
            .min_age
            .or(file.duration(&path, "min_age", &gc.min_age)?)
            .unwrap_or(Duration::from_secs(3600));
        let upload_max_age = self
            .upload_max_age
            .or(file.duration(&path, "upload_max_age", &gc.upload_max_age)?)
            .unwrap_or(Duration::from_secs(7 * 86400));
        let options = GcOptions {
            dry_run: self.dry_run || gc.dry_run.unwrap_or(false),
            delete_untagged: self.delete_untagged || gc.delete_untagged.unwrap_or(false),
            min_age_ms: crate::storage::duration_ms(min_age),
            upload_max_age_ms: crate::storage::duration_ms(upload_max_age),
            delete_empty_repositories: self.delete_empty_repos
                || gc.delete_empty_repos.unwrap_or(false),
            concurrency: self.concurrency.or(gc.concurrency).unwrap_or(64).max(1) as usize,
            max_manifest_bytes: self
                .max_manifest_size
                .or(gc.max_manifest_size)
                .unwrap_or(crate::mark::DEFAULT_MAX_MANIFEST_BYTES),
            cache_dir: if self.no_cache || gc.no_cache.unwrap_or(false) {
                None
            } else {
                self.cache_dir.clone().or(gc.cache_dir.clone())
            },
            guard: GuardOptions {
                max_delete_percent: match self.max_delete_percent {
                    Some(p) => p,
                    None => gc
                        .max_delete_percent
                        .map(|p| parse_percent(&p.to_string()))
                        .transpose()
                        .map_err(|reason| ConfigError::Value {
                            path: path.display().to_string(),
                            key: "max_delete_percent".into(),
                            reason,
                        })?
                        .unwrap_or(50.0),
                },
                force: self.force || gc.force.unwrap_or(false),
            },
            quarantine: self.quarantine || gc.quarantine.unwrap_or(false),
            offline: self.offline || gc.offline.unwrap_or(false),
        };
        let default_cache = !self.no_cache && !gc.no_cache.unwrap_or(false);
        let metrics = self.metrics.clone().or(gc.metrics.clone());
        Ok(GcSettings {
            storage,
            options,
            report: self.report.clone().or(gc.report.clone()),
            metrics,
            backend,
            default_cache,
        })
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
        assert_eq!(
            s.options.guard,
            GuardOptions {
                max_delete_percent: 50.0,
                force: false
            }
        );
        assert!(
            !s.options.dry_run
                && !s.options.delete_untagged
                && !s.options.delete_empty_repositories
        );
    }

    #[test]
    fn accepts_zero_min_age_and_reference_short_flags() {
        let s = resolve(&["-d", "-m", "--min-age", "0s", "x"]).unwrap();
        assert_eq!(s.options.min_age_ms, 0);
        assert!(s.options.dry_run && s.options.delete_untagged);
    }

    #[test]
    fn guard_limits_are_percentages() {
        let s = resolve(&["--max-delete-percent", "80%", "--force", "x"]).unwrap();
        assert_eq!(
            s.options.guard,
            GuardOptions {
                max_delete_percent: 80.0,
                force: true
            }
        );
        assert!(
            Cli::try_parse_from(["registry-gc", "gc", "--max-delete-percent", "120", "x"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["registry-gc", "gc", "--max-delete-percent", "lots", "x"])
                .is_err()
        );
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
        let s = resolve(&[
            "--config",
            f,
            "--min-age",
            "5m",
            "--region",
            "us-east-2",
            "gs://other",
        ])
        .unwrap();
        assert_eq!(s.storage, "gs://other");
        assert_eq!(s.options.min_age_ms, 300_000);
        let region: Vec<_> = s
            .backend
            .for_section("s3")
            .filter(|o| o.key == "region")
            .map(|o| o.value.as_str())
            .collect();
        assert_eq!(region, vec!["eu-west-1", "us-east-2"], "later entries win");

        std::fs::write(&file, "[gc]\nmin_age = \"soon\"\n").unwrap();
        let err = resolve(&["--config", f, "x"]).unwrap_err().to_string();
        assert!(err.contains("min_age") && err.contains("c.toml"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn registry_config_names_the_storage_and_flags_adjust_it() {
        let dir = tempfile_dir("regcfg");
        let yml = dir.join("config.yml");
        std::fs::write(&yml, "version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: eu-west-1\n    rootdirectory: /r\n").unwrap();
        let y = yml.to_str().unwrap();
        let s = resolve(&["--registry-config", y, "--region", "us-east-2"]).unwrap();
        assert_eq!(s.storage, "s3://b/r");
        let region: Vec<_> = s
            .backend
            .for_section("s3")
            .filter(|o| o.key == "region")
            .map(|o| o.value.as_str())
            .collect();
        assert_eq!(
            region,
            vec!["eu-west-1", "us-east-2"],
            "the flag comes later and wins"
        );
        assert_eq!(
            s.backend.for_section("azure").count(),
            1,
            "only the flag applies to other backends"
        );
        // STORAGE and --registry-config are two answers to one question
        let err = resolve(&["--registry-config", y, "/var/lib/registry"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--registry-config both name the storage"),
            "{err}"
        );
        let toml = dir.join("c.toml");
        std::fs::write(&toml, "[storage]\nurl = \"/x\"\n").unwrap();
        let err = resolve(&["--registry-config", y, "--config", toml.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--registry-config and [storage] url"), "{err}");
        std::fs::write(&yml, "storage:\n  swift:\n    container: c\n").unwrap();
        let err = resolve(&["--registry-config", y]).unwrap_err().to_string();
        assert!(
            err.contains("\"swift\" is not supported") && err.contains(y),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("registry-gc-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn quarantine_from_the_flag_or_the_config_file_and_restore_arguments() {
        assert!(!resolve(&["x"]).unwrap().options.quarantine);
        assert!(resolve(&["--quarantine", "x"]).unwrap().options.quarantine);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("q.toml");
        std::fs::write(
            &file,
            "[storage]\nurl = \"s3://b/r\"\n[gc]\nquarantine = true\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        assert!(resolve(&["--config", f]).unwrap().options.quarantine);
        assert!(!resolve(&["--config", f]).unwrap().options.offline);
        assert!(
            resolve(&["--offline", "--config", f])
                .unwrap()
                .options
                .offline
        );
        std::fs::write(
            &file,
            "[storage]\nurl = \"s3://b/r\"\n[gc]\noffline = true\n",
        )
        .unwrap();
        assert!(resolve(&["--config", f]).unwrap().options.offline);

        let restore = |args: &[&str]| {
            let mut full = vec!["registry-gc", "restore"];
            full.extend_from_slice(args);
            match Cli::try_parse_from(full).map(|c| c.command) {
                Ok(Command::Restore(r)) => r
                    .resolve()
                    .map(|(s, run)| (s.storage, run))
                    .map_err(|e| e.to_string()),
                Ok(_) => unreachable!("parsed as restore"),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(
            restore(&["/srv/reg", "RUN1"]),
            Ok(("/srv/reg".to_string(), Some("RUN1".to_string())))
        );
        assert_eq!(
            restore(&["--list", "/srv/reg"]),
            Ok(("/srv/reg".to_string(), None))
        );
        // with the storage in --config, the lone argument is the run
        assert_eq!(
            restore(&["--config", f, "RUN1"]),
            Ok(("s3://b/r".to_string(), Some("RUN1".to_string())))
        );
        assert!(restore(&["/srv/reg"]).unwrap_err().contains("RUN-ID"));
        assert!(restore(&["--list", "/srv/reg", "RUN1"]).is_err());
        // and so it is with the storage in the registry's config.yml
        let yml = dir.path().join("config.yml");
        std::fs::write(
            &yml,
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /srv/from-yml\n",
        )
        .unwrap();
        let y = yml.to_str().unwrap();
        assert_eq!(
            restore(&["--registry-config", y, "RUN1"]),
            Ok(("/srv/from-yml".to_string(), Some("RUN1".to_string())))
        );
        assert_eq!(
            restore(&["--list", "--registry-config", y]),
            Ok(("/srv/from-yml".to_string(), None))
        );
        let err = restore(&["--registry-config", y, "/srv/reg", "RUN1"]).unwrap_err();
        assert!(err.contains("both name the storage"), "{err}");
        assert!(restore(&["--registry-config", y])
            .unwrap_err()
            .contains("RUN-ID"));
    }

    #[test]
    fn storage_is_required_somewhere() {
        assert!(matches!(resolve(&[]), Err(ConfigError::NoStorage)));
        assert!(resolve(&["-o", "novalue", "x"]).is_err());
    }
}
