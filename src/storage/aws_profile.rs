//! S3 credentials from an AWS shared config profile (`~/.aws/config` and
//! `~/.aws/credentials`: static keys, SSO, assume-role through `source_profile`,
//! `credential_process`), read by the AWS SDK's `aws-config` and handed to
//! `object_store` through its credential provider API. `object_store` alone reads
//! only the environment, web identity, container and instance credentials.
//!
//! The profile's files are read once when the storage is opened, so that an
//! unknown profile is a settings error before any request; credentials are
//! fetched on the first request and again shortly before they expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::Region;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_runtime::env_config::file::EnvConfigFiles;
use aws_types::os_shim_internal::{Env, Fs};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
use object_store::CredentialProvider;

/// The region object_store signs for when none is configured anywhere.
const DEFAULT_REGION: &str = "us-east-1";

/// Credentials are fetched again this long before they expire, so that no
/// request is signed with credentials that lapse while it is in flight.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// The profile to take S3 credentials from, and the setting that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileChoice {
    pub name: String,
    /// `--profile`, `--config FILE [s3]`, `AWS_PROFILE`: shown in errors.
    pub source: String,
}

/// What opening the storage needs from the profile's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSettings {
    pub region: Option<String>,
    /// The profile signs in through IAM Identity Center, whose token `aws sso
    /// login` leaves in a cache; errors then say so.
    pub uses_sso: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{source_name}: AWS profile {name:?} is not defined in {files}")]
    Unknown {
        source_name: String,
        name: String,
        files: String,
    },
    #[error("{source_name}: AWS profile {name:?}: cannot read {files}: {reason}")]
    Unreadable {
        source_name: String,
        name: String,
        files: String,
        reason: String,
    },
}

/// The credential provider of a profile failed (a `credential_process` that
/// exited non-zero, an expired SSO token, a refused role).
#[derive(Debug, thiserror::Error)]
#[error("AWS profile {profile:?} gave no credentials: {reason}")]
pub struct NoCredentials {
    profile: String,
    reason: String,
}

/// Reads the profile `choice` names from the config and credentials files that
/// `env` points to (`AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`, or the
/// defaults under `~/.aws/`).
pub fn read_profile(choice: &ProfileChoice, env: &Env) -> Result<ProfileSettings, ProfileError> {
    let files = shown_files(env);
    // aws-config reads the files with blocking std::fs calls behind an async
    // signature: nothing in it waits on a runtime, so blocking here is no more
    // than the read itself
    let loaded = futures::executor::block_on(aws_config::profile::load(
        &Fs::real(),
        env,
        &EnvConfigFiles::default(),
        Some(choice.name.clone().into()),
    ));
    let profiles = loaded.map_err(|e| ProfileError::Unreadable {
        source_name: choice.source.clone(),
        name: choice.name.clone(),
        files: files.clone(),
        reason: error_chain(&e),
    })?;
    let profile = profiles
        .get_profile(&choice.name)
        .ok_or_else(|| ProfileError::Unknown {
            source_name: choice.source.clone(),
            name: choice.name.clone(),
            files,
        })?;
    Ok(ProfileSettings {
        region: profile.get("region").map(str::to_string),
        uses_sso: profile.get("sso_session").is_some() || profile.get("sso_start_url").is_some(),
    })
}

/// Makes `builder` sign with the profile's credentials, and take the profile's
/// region when none was configured (flags, `--config`, `AWS_REGION`).
pub fn apply(
    mut builder: AmazonS3Builder,
    choice: &ProfileChoice,
) -> Result<AmazonS3Builder, ProfileError> {
    let settings = read_profile(choice, &Env::real())?;
    if builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .is_none()
    {
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        }
    }
    let region = builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        tracing::warn!(profile = %choice.name, "AWS_ACCESS_KEY_ID is set, but {} selects AWS profile {:?}: the profile's credentials are used", choice.source, choice.name);
    }
    tracing::info!(profile = %choice.name, region = %region, "S3 credentials from an AWS profile");
    let provider = ProfileCredentials::new(&choice.name, &region, settings.uses_sso);
    Ok(builder.with_credentials(Arc::new(provider)))
}

/// `object_store`'s view of a profile's credentials.
#[derive(Debug)]
pub struct ProfileCredentials {
    profile: String,
    uses_sso: bool,
    provider: SharedCredentialsProvider,
    /// aws-config's profile provider runs the whole chain (a process, an STS or
    /// SSO request) on every call, and object_store asks for every request.
    cached: tokio::sync::Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    credential: Arc<AwsCredential>,
    /// `None`: the credentials do not expire (static keys).
    refresh_at: Option<SystemTime>,
}

impl ProfileCredentials {
    /// `region` is where assume-role asks STS for credentials (SSO uses the
    /// profile's own `sso_region`).
    pub fn new(profile: &str, region: &str, uses_sso: bool) -> ProfileCredentials {
        let config =
            ProviderConfig::without_region().with_region(Some(Region::new(region.to_string())));
        let provider = ProfileFileCredentialsProvider::builder()
            .configure(&config)
            .profile_name(profile)
            .build();
        ProfileCredentials {
            profile: profile.to_string(),
            uses_sso,
            provider: SharedCredentialsProvider::new(provider),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    fn no_credentials(&self, e: &(dyn std::error::Error + 'static)) -> NoCredentials {
        let mut reason = error_chain(e);
        if self.uses_sso {
            reason.push_str(&format!(
                " (an SSO profile: run `aws sso login --profile {}` first)",
                self.profile
            ));
        }
        NoCredentials {
            profile: self.profile.clone(),
            reason,
        }
    }
}

#[async_trait]
impl CredentialProvider for ProfileCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        // held across the fetch: concurrent requests wait for one refresh
        // instead of each running the profile's provider
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some(c) = cached
            .as_ref()
            .filter(|c| c.refresh_at.is_none_or(|at| now < at))
        {
            return Ok(c.credential.clone());
        }
        let fresh = self.provider.provide_credentials().await.map_err(|e| {
            object_store::Error::Generic {
                store: "S3",
                source: Box::new(self.no_credentials(&e)),
            }
        })?;
        let credential = Arc::new(AwsCredential {
            key_id: fresh.access_key_id().to_string(),
            secret_key: fresh.secret_access_key().to_string(),
            token: fresh.session_token().map(str::to_string),
        });
        *cached = Some(Cached {
            credential: credential.clone(),
            refresh_at: fresh.expiry().map(|e| refresh_time(e, now)),
        });
        Ok(credential)
    }
}

/// When credentials that expire at `expiry` are fetched again: a margin before
/// it, or halfway there for credentials issued with less than twice the margin
/// left; already expired ones at once.
fn refresh_time(expiry: SystemTime, now: SystemTime) -> SystemTime {
    let left = expiry.duration_since(now).unwrap_or_default();
    expiry - REFRESH_BEFORE_EXPIRY.min(left / 2)
}

/// The files a profile is read from, for messages.
fn shown_files(env: &Env) -> String {
    let config = env
        .get("AWS_CONFIG_FILE")
        .unwrap_or_else(|_| "~/.aws/config".into());
    let credentials = env
        .get("AWS_SHARED_CREDENTIALS_FILE")
        .unwrap_or_else(|_| "~/.aws/credentials".into());
    format!("{config} or {credentials}")
}

/// An error and its sources on one line: aws-config's errors keep the useful
/// part (a process's stderr, STS's answer) in their sources.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_refreshed_before_they_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert_eq!(
            refresh_time(now + hour, now),
            now + hour - REFRESH_BEFORE_EXPIRY
        );
        // issued with two minutes left: used for one
        assert_eq!(
            refresh_time(now + Duration::from_secs(120), now),
            now + Duration::from_secs(60)
        );
        // already expired: fetched again on the next request
        assert!(refresh_time(now - hour, now) <= now);
    }

    #[test]
    fn an_error_chain_is_one_line_without_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("exit status 3: no token"));
        assert_eq!(error_chain(&e), "outer: exit status 3: no token");
    }
}
