//! Settings from the three places an operator sets them, merged once into plain
//! data: command-line flags override the config file (`--config`, TOML), which
//! overrides the environment (`AWS_*`, `AZURE_*`, `GOOGLE_*`, read by the backend).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The config file. Every command-line option has a place here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub gc: GcSection,
    /// `object_store` S3 settings (`endpoint`, `region`, `access_key_id`, ...),
    /// plus `force_path_style` and `profile` (an AWS profile; aws-profile feature).
    #[serde(default)]
    pub s3: BTreeMap<String, toml::Value>,
    /// `object_store` Azure settings (`account_name`, `access_key`, `sas_token`,
    /// `endpoint`, `use_emulator`, `client_id`, ...).
    #[serde(default)]
    pub azure: BTreeMap<String, toml::Value>,
    /// `object_store` GCS settings (`service_account_path`, `base_url`, ...).
    #[serde(default)]
    pub gcs: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// The STORAGE argument: a path, `file://`, `s3://`, `az://`, `gs://` URL.
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcSection {
    pub dry_run: Option<bool>,
    pub delete_untagged: Option<bool>,
    pub min_age: Option<String>,
    pub upload_max_age: Option<String>,
    pub delete_empty_repos: Option<bool>,
    pub report: Option<PathBuf>,
    pub metrics: Option<PathBuf>,
    pub concurrency: Option<u16>,
    pub max_manifest_size: Option<u64>,
    pub cache_dir: Option<PathBuf>,
    pub no_cache: Option<bool>,
    pub max_delete_percent: Option<f64>,
    pub force: Option<bool>,
    pub quarantine: Option<bool>,
    pub offline: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--config {path}: {reason}")]
    File { path: String, reason: String },
    #[error("--config {path}: [gc] {key}: {reason}")]
    Value {
        path: String,
        key: String,
        reason: String,
    },
    #[error("no STORAGE given: pass it as an argument, set [storage] url in --config, or use --registry-config")]
    NoStorage,
    #[error(transparent)]
    Registry(#[from] crate::registry_config::RegistryConfigError),
    #[error(
        "--registry-config and [storage] url in --config {path} both name the storage; keep one"
    )]
    TwoStorages { path: String },
    #[error("STORAGE {storage:?} and --registry-config both name the storage; keep one")]
    StorageAndRegistryConfig { storage: String },
    #[error("missing {what}")]
    Missing { what: String },
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: shown,
            reason: e.to_string().trim().to_string(),
        })
    }

    pub fn duration(
        &self,
        path: &Path,
        key: &str,
        value: &Option<String>,
    ) -> Result<Option<Duration>, ConfigError> {
        value
            .as_deref()
            .map(|v| {
                humantime::parse_duration(v).map_err(|e| ConfigError::Value {
                    path: path.display().to_string(),
                    key: key.to_string(),
                    reason: format!("{v:?}: {e}"),
                })
            })
            .transpose()
    }
}

/// Backend settings as `object_store` configuration keys and string values, in
/// increasing precedence (later entries win), each with where it came from.
#[derive(Debug, Default, Clone)]
pub struct BackendOptions {
    pub entries: Vec<BackendOption>,
}

#[derive(Debug, Clone)]
pub struct BackendOption {
    /// `s3`, `azure`, `gcs`: the config file section it came from; `None` for
    /// command-line options, which apply to whichever backend STORAGE names.
    pub section: Option<&'static str>,
    pub key: String,
    pub value: String,
    /// e.g. `--config registry-gc.toml [s3]`, `--endpoint`. Shown in errors; the
    /// value never is.
    pub source: String,
}

impl BackendOptions {
    pub fn push(&mut self, key: &str, value: &str, source: &str) {
        let (key, value, source) = (key.to_string(), value.to_string(), source.to_string());
        self.entries.push(BackendOption {
            section: None,
            key,
            value,
            source,
        });
    }

    /// Adds an entry for one backend only (`s3`, `azure`, `gcs`).
    pub fn push_section(&mut self, section: &'static str, key: &str, value: &str, source: &str) {
        let (key, value, source) = (key.to_string(), value.to_string(), source.to_string());
        self.entries.push(BackendOption {
            section: Some(section),
            key,
            value,
            source,
        });
    }

    /// Adds a config file section's entries.
    pub fn extend_from_section(
        &mut self,
        name: &'static str,
        section: &BTreeMap<String, toml::Value>,
        file: &Path,
    ) {
        for (k, v) in section {
            let value = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let source = format!("--config {} [{name}]", file.display());
            self.entries.push(BackendOption {
                section: Some(name),
                key: k.clone(),
                value,
                source,
            });
        }
    }

    /// The options that apply to the backend of config file section `name`.
    pub fn for_section(&self, name: &str) -> impl Iterator<Item = &BackendOption> {
        let name = name.to_string();
        self.entries
            .iter()
            .filter(move |o| o.section.is_none_or(|s| s == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_section_and_refuses_unknown_keys() {
        let text = r#"
            [storage]
            url = "s3://bucket/root"
            [gc]
            delete_untagged = true
            min_age = "2h"
            concurrency = 128
            [s3]
            endpoint = "http://127.0.0.1:9000"
            force_path_style = true
        "#;
        let c: ConfigFile = toml::from_str(text).unwrap();
        assert_eq!(c.storage.url.as_deref(), Some("s3://bucket/root"));
        assert_eq!(c.gc.delete_untagged, Some(true));
        assert_eq!(c.gc.concurrency, Some(128));
        let mut o = BackendOptions::default();
        o.extend_from_section("s3", &c.s3, Path::new("f.toml"));
        o.extend_from_section(
            "azure",
            &BTreeMap::from([("use_emulator".to_string(), toml::Value::Boolean(true))]),
            Path::new("f.toml"),
        );
        o.push("region", "eu-west-1", "--region");
        let s3: Vec<_> = o
            .for_section("s3")
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            s3,
            vec![
                ("endpoint", "http://127.0.0.1:9000"),
                ("force_path_style", "true"),
                ("region", "eu-west-1")
            ]
        );
        assert_eq!(o.for_section("azure").count(), 2);
        assert!(toml::from_str::<ConfigFile>("[gc]\nmin_agee = \"1h\"").is_err());
        assert!(toml::from_str::<ConfigFile>("[swift]\nx = 1").is_err());
    }
}
