//! Turns the STORAGE argument and the backend options into a storage.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::{BackoffConfig, RetryConfig};

use super::bulk_answers::CheckedBulkDeletes;
use super::fs::FsStorage;
use super::object::{Backend, ObjectStorage, Service};
use super::redact::redact;
use super::{Storage, StorageError};
use crate::config::{BackendOption, BackendOptions};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("STORAGE {spec:?}: {scheme}:// is not a supported storage; use a path, file://, s3://, az:// or gs://")]
    UnsupportedScheme { spec: String, scheme: String },
    #[error("STORAGE {spec:?}: not a valid URL: {reason}")]
    BadUrl { spec: String, reason: String },
    #[error("STORAGE {spec:?}: cannot open the registry root: {source}")]
    Root { spec: String, source: StorageError },
    #[error("{source_name}: {key:?} is not a {service} setting")]
    UnknownOption {
        source_name: String,
        key: String,
        service: &'static str,
    },
    #[error("{source_name}: {key}: {reason}")]
    BadOption {
        source_name: String,
        key: String,
        reason: String,
    },
    #[error("STORAGE {spec:?}: {reason}")]
    Backend { spec: String, reason: String },
    #[error("{source_name}: {key} names the {what}, which STORAGE names ({spec:?}); a second name would send every request to another {what} than the one reported")]
    TargetInOptions {
        source_name: String,
        key: String,
        what: &'static str,
        spec: String,
    },
    #[cfg(not(feature = "aws-profile"))]
    #[error(
        "{source_name}: AWS profiles need the `aws-profile` feature, and this registry-gc was built without it; \
         rebuild with `cargo install --path . --features aws-profile`, or give S3 credentials through \
         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    )]
    ProfileNeedsFeature { source_name: String },
    #[cfg(feature = "aws-profile")]
    #[error("{profile_source} names an AWS profile and {keys_source} gives S3 keys; keep one")]
    ProfileAndKeys {
        profile_source: String,
        keys_source: String,
    },
    #[cfg(feature = "aws-profile")]
    #[error(transparent)]
    Profile(#[from] super::aws_profile::ProfileError),
}

/// STORAGE as it may be shown (errors, metrics): a URL's user, password and
/// query replaced by `***`, since that is where someone would put a key or a
/// SAS token (which STORAGE does not take: `open_storage` refuses them).
pub fn shown_spec(spec: &str) -> String {
    let Ok(mut url) = url::Url::parse(spec) else {
        return spec.to_string();
    };
    if !spec.contains("://")
        || (url.username().is_empty() && url.password().is_none() && url.query().is_none())
    {
        return spec.to_string();
    }
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if !url.username().is_empty() {
        let _ = url.set_username("***");
    }
    if url.query().is_some() {
        url.set_query(Some("***"));
    }
    url.to_string()
}

/// Opens `spec`: a directory path, a `file://` URL, or an object store URL.
pub fn open_storage(spec: &str, options: &BackendOptions) -> Result<Box<dyn Storage>, OpenError> {
    let Some((scheme, _)) = spec.split_once("://") else {
        return open_fs(spec, Path::new(spec));
    };
    let url = url::Url::parse(spec).map_err(|e| OpenError::BadUrl {
        spec: shown_spec(spec),
        reason: e.to_string(),
    })?;
    // Credentials or a query in STORAGE would be ignored, and the run would
    // go on with whatever others it finds: refused, and never echoed.
    if !url.username().is_empty() || url.password().is_some() {
        let reason = "credentials in STORAGE are not used; give them as settings (-o, --config) or in the environment".into();
        return Err(OpenError::BadUrl {
            spec: shown_spec(spec),
            reason,
        });
    }
    if url.query().is_some() {
        let reason = "a query in STORAGE is not used; a SAS token is -o sas_token=... (or AZURE_STORAGE_SAS_TOKEN)".into();
        return Err(OpenError::BadUrl {
            spec: shown_spec(spec),
            reason,
        });
    }
    // a `#` starts a fragment, which the URL parser sets apart: the root
    // would end before it and the run would collect another prefix
    if url.fragment().is_some() {
        let reason = "a `#` in STORAGE starts a URL fragment, which is not part of the root; \
                      a `#` in the root's name is written %23"
            .into();
        return Err(OpenError::BadUrl {
            spec: shown_spec(spec),
            reason,
        });
    }
    let service = match scheme {
        "file" => {
            let path = url.to_file_path().map_err(|()| OpenError::BadUrl {
                spec: shown_spec(spec),
                reason: "not an absolute local path".into(),
            })?;
            return open_fs(spec, &path);
        }
        "s3" | "s3a" => Service::S3,
        "az" | "azure" => Service::Azure,
        "gs" | "gcs" => Service::Gcs,
        other => {
            return Err(OpenError::UnsupportedScheme {
                spec: shown_spec(spec),
                scheme: other.to_string(),
            })
        }
    };
    // `s3://bucket:9000/root`: the URL parser takes the port apart and the
    // bucket would be `bucket`, with the port dropped
    if raw_authority(spec).contains([':', '@']) {
        let reason = "STORAGE names the bucket or container alone, without a port or user; \
                      a server's address and port are the endpoint: --endpoint URL (or -o endpoint=URL)"
            .into();
        return Err(OpenError::BadUrl {
            spec: shown_spec(spec),
            reason,
        });
    }
    let bucket = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| OpenError::BadUrl {
            spec: shown_spec(spec),
            reason: "no bucket or container name".into(),
        })?;
    // the path as written, not as the URL parser gives it back: that resolves
    // `.` and `..` segments (`s3://b/team/../prod` would be the root `prod`);
    // a root with a space or a `#` comes percent-encoded
    // (a `%XX` that does not decode to UTF-8 is no key's prefix: refused,
    // not replaced by U+FFFD)
    let root = percent_encoding::percent_decode_str(raw_path(spec))
        .decode_utf8()
        .map_err(|_| OpenError::BadUrl {
            spec: shown_spec(spec),
            reason: "the root's %XX escapes do not decode to UTF-8 text, and keys are UTF-8".into(),
        })?
        .trim_matches('/')
        .to_string();
    if !root.is_empty()
        && root
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        let reason =
            "the root has an empty, . or .. segment; a URL would resolve it into another prefix \
                      than the one written, and the store has no such keys: registry-gc refuses it"
                .into();
        return Err(OpenError::BadUrl {
            spec: shown_spec(spec),
            reason,
        });
    }
    let ((store, where_), single_deletes, bulk_deletes, conditional_puts) = match service {
        Service::S3 => {
            let s3 = build_s3(spec, bucket, options)?;
            (
                (s3.store, s3.endpoint),
                Some(s3.single_deletes),
                s3.bulk_deletes,
                s3.conditional_puts,
            )
        }
        Service::Azure => (build_azure(spec, bucket, options)?, None, true, true),
        Service::Gcs => (build_gcs(spec, bucket, options)?, None, true, true),
    };
    let scheme = match service {
        Service::S3 => "s3",
        Service::Azure => "az",
        Service::Gcs => "gs",
    };
    let mut location = format!("{scheme}://{bucket}/{root}");
    if let Some(endpoint) = where_ {
        location.push_str(&format!(" at {endpoint}"));
    }
    let page = list_page_size(options, section_of(service), service.max_list_page())?;
    Ok(Box::new(
        ObjectStorage::new(store, service, &root, location)
            .with_list_page_size(page)
            .with_single_deletes(single_deletes)
            .with_bulk_deletes(bulk_deletes)
            .with_conditional_puts(conditional_puts),
    ))
}

/// The authority of a `scheme://authority/path` URL exactly as written: up
/// to the first `/`, `?` or `#`.
fn raw_authority(spec: &str) -> &str {
    let rest = spec.split_once("://").map_or(spec, |(_, rest)| rest);
    &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())]
}

/// The path of a `scheme://authority/path` URL exactly as written: from the
/// first `/` after the authority up to a query or fragment.
fn raw_path(spec: &str) -> &str {
    let rest = spec.split_once("://").map_or(spec, |(_, rest)| rest);
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    rest.find('/').map_or("", |slash| &rest[slash..])
}

/// The setting every object store takes besides object_store's own: keys a
/// listing request asks for, 1 up to the service's most (its default).
const LIST_PAGE_SIZE_KEY: &str = "list_page_size";

fn section_of(service: Service) -> &'static str {
    match service {
        Service::S3 => "s3",
        Service::Azure => "azure",
        Service::Gcs => "gcs",
    }
}

fn list_page_size(
    options: &BackendOptions,
    section: &str,
    most: usize,
) -> Result<Option<usize>, OpenError> {
    let Some(o) = options
        .for_section(section)
        .filter(|o| o.key == LIST_PAGE_SIZE_KEY)
        .last()
    else {
        return Ok(None);
    };
    match o.value.parse::<usize>() {
        Ok(n) if (1..=most).contains(&n) => Ok(Some(n)),
        _ => Err(OpenError::BadOption {
            source_name: o.source.clone(),
            key: o.key.clone(),
            reason: format!(
                "expected a number of keys from 1 to {most}, not {:?}",
                o.value
            ),
        }),
    }
}

fn open_fs(spec: &str, path: &Path) -> Result<Box<dyn Storage>, OpenError> {
    let fs = FsStorage::open(path).map_err(|source| OpenError::Root {
        spec: shown_spec(spec),
        source,
    })?;
    Ok(Box::new(fs))
}

/// Retries with backoff on throttling (503 SlowDown, 429) and transient errors,
/// so a busy bucket slows the run down instead of failing it; bounded so that a
/// wrong endpoint fails within a minute.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: 8,
        retry_timeout: Duration::from_secs(60),
    }
}

fn parse_bool(o: &BackendOption) -> Result<bool, OpenError> {
    match o.value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(OpenError::BadOption {
            source_name: o.source.clone(),
            key: o.key.clone(),
            reason: "expected true or false".into(),
        }),
    }
}

fn unknown(o: &BackendOption, service: &'static str) -> OpenError {
    OpenError::UnknownOption {
        source_name: o.source.clone(),
        key: o.key.clone(),
        service,
    }
}

fn built(spec: &str, e: object_store::Error) -> OpenError {
    let mut reason = redact(&e.to_string());
    if reason.contains("Account must be specified") {
        reason.push_str(" (set AZURE_STORAGE_ACCOUNT_NAME, [azure] account_name in --config, or -o account_name=NAME; -o use_emulator=true for Azurite)");
    }
    OpenError::Backend {
        spec: shown_spec(spec),
        reason,
    }
}

fn target_in_options(spec: &str, o: &BackendOption, what: &'static str) -> OpenError {
    OpenError::TargetInOptions {
        source_name: o.source.clone(),
        key: o.key.clone(),
        what,
        spec: shown_spec(spec),
    }
}

fn endpoint_of(
    options: &BackendOptions,
    section: &str,
    keys: &[&str],
    env: &[&str],
) -> Option<String> {
    let configured = options
        .for_section(section)
        .filter(|o| keys.contains(&o.key.as_str()))
        .last()
        .map(|o| o.value.clone());
    configured.or_else(|| env.iter().find_map(|k| std::env::var(k).ok()))
}

/// What `build_s3` makes.
struct S3Stores {
    store: Arc<dyn Backend>,
    /// Where it is, when not AWS's own endpoint.
    endpoint: Option<String>,
    /// The same store sending a plain DELETE per key
    /// (`ObjectStorage::with_single_deletes`).
    single_deletes: Arc<dyn Backend>,
    /// `store` deletes through DeleteObjects: not when the settings say
    /// `disable_bulk_delete` (a store without that API), where it sends a
    /// DELETE per key, and each is a request to count.
    bulk_deletes: bool,
    /// `store` writes under `If-None-Match`: not with `conditional_put=disabled`.
    conditional_puts: bool,
}

fn build_s3(spec: &str, bucket: &str, options: &BackendOptions) -> Result<S3Stores, OpenError> {
    #[cfg(feature = "aws-profile")]
    let profile = s3_profile(options)?;
    #[cfg(not(feature = "aws-profile"))]
    refuse_profile(options)?;
    let from_env = if s3_keys_in_settings(options) {
        s3_env_without_session_token(std::env::vars_os())
    } else {
        AmazonS3Builder::from_env()
    };
    let mut b = from_env
        .with_bucket_name(bucket)
        .with_retry(retry_config())
        .with_http_connector(CheckedBulkDeletes);
    for o in options.for_section("s3") {
        b = match o.key.as_str() {
            PROFILE_KEY | LIST_PAGE_SIZE_KEY => b,
            // the registry's s3 driver spells it this way
            "force_path_style" | "forcepathstyle" => {
                b.with_virtual_hosted_style_request(!parse_bool(o)?)
            }
            key => match key
                .parse::<AmazonS3ConfigKey>()
                .map_err(|_| unknown(o, "S3"))?
            {
                AmazonS3ConfigKey::Bucket => return Err(target_in_options(spec, o, "bucket")),
                key => b.with_config(key, &o.value),
            },
        };
    }
    #[cfg(feature = "aws-profile")]
    if let Some(choice) = &profile {
        b = super::aws_profile::apply(b, choice)?;
    }
    // object_store sends to AWS_ENDPOINT_URL_S3 (the AWS SDKs' S3-only
    // endpoint) before any endpoint given: one endpoint is set as both, a
    // setting's over the environment's, as everywhere else
    let mut endpoint = endpoint_of(
        options,
        "s3",
        &[
            "endpoint",
            "aws_endpoint",
            "endpoint_url",
            "aws_endpoint_url",
            "aws_endpoint_url_s3",
        ],
        &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"],
    );
    if let Some(e) = &endpoint {
        b = with_s3_endpoint(b, e);
    }
    // object_store takes an endpoint given with virtual-hosted addressing for
    // the bucket's own (it adds no bucket to it): the bucket goes in front of
    // the host, as the registry's driver addresses it with forcepathstyle off
    let virtual_hosted = b
        .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
        .is_some_and(|v| v == "true");
    if virtual_hosted {
        // a refusal names the setting that asked for virtual-hosted
        // addressing (the last one wins), else the environment variable
        let asked = options
            .for_section("s3")
            .filter(|o| {
                matches!(o.key.as_str(), "force_path_style" | "forcepathstyle")
                    || matches!(
                        o.key.parse::<AmazonS3ConfigKey>(),
                        Ok(AmazonS3ConfigKey::VirtualHostedStyleRequest)
                    )
            })
            .last();
        let refused = |reason: String| match asked {
            Some(o) => OpenError::BadOption {
                source_name: o.source.clone(),
                key: o.key.clone(),
                reason,
            },
            None => OpenError::Backend {
                spec: shown_spec(spec),
                reason: format!("AWS_VIRTUAL_HOSTED_STYLE_REQUEST: {reason}"),
            },
        };
        match b.get_config_value(&AmazonS3ConfigKey::Endpoint) {
            Some(given) => {
                let bucket_endpoint = bucket_host(&given, bucket).map_err(refused)?;
                b = with_s3_endpoint(b, &bucket_endpoint);
                endpoint = Some(bucket_endpoint);
            }
            // object_store puts the bucket in front of AWS's own host, over https
            None => {
                if let Err(reason) = bucket_in_host_name(bucket, "https") {
                    return Err(refused(reason));
                }
            }
        }
    }
    let single = b
        .clone()
        .with_disable_bulk_delete(true)
        .build()
        .map_err(|e| built(spec, e))?;
    let bulk_deletes = !b
        .get_config_value(&AmazonS3ConfigKey::DisableBulkDelete)
        .is_some_and(|v| object_store_truthy(&v));
    let conditional_puts = b
        .get_config_value(&AmazonS3ConfigKey::ConditionalPut)
        .is_none_or(|v| !v.eq_ignore_ascii_case("disabled"));
    let store = b.build().map_err(|e| built(spec, e))?;
    Ok(S3Stores {
        store: Arc::new(store),
        endpoint,
        single_deletes: Arc::new(single),
        bulk_deletes,
        conditional_puts,
    })
}

/// Whether object_store reads a boolean setting as true (its `Parse for
/// bool`, which takes any case): `disable_bulk_delete=1` (or `yes`, `on`, `y`,
/// in the settings or `AWS_DISABLE_BULK_DELETE`) makes it send a DELETE per
/// key, and the request counts must say so. A value it reads as neither
/// fails its `build`.
fn object_store_truthy(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "1" | "true" | "on" | "yes" | "y"
    )
}

/// `b` sending to `endpoint` whatever else set an endpoint.
fn with_s3_endpoint(b: AmazonS3Builder, endpoint: &str) -> AmazonS3Builder {
    b.with_endpoint(endpoint)
        .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint)
}

/// Whether the settings (the registry config's `accesskey`/`secretkey`,
/// `-o access_key_id=`, `[s3]` in --config) give the access key id or the
/// secret access key.
fn s3_keys_in_settings(options: &BackendOptions) -> bool {
    options.for_section("s3").any(|o| {
        matches!(
            o.key.parse::<AmazonS3ConfigKey>(),
            Ok(AmazonS3ConfigKey::AccessKeyId | AmazonS3ConfigKey::SecretAccessKey)
        )
    })
}

/// What `AmazonS3Builder::from_env` reads from `vars`, but for the session
/// token (`AWS_SESSION_TOKEN`, `AWS_TOKEN`). A session token belongs to the
/// keys it was issued with: sent with keys from the settings, S3 refuses the
/// request (403 InvalidToken), and the registry never mixes them. Settings
/// that give keys give their token too, if they have one. Leaving it out of
/// the builder is the only way: a token set to "" would still be sent, as an
/// empty `x-amz-security-token` header.
fn s3_env_without_session_token(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> AmazonS3Builder {
    let mut b = AmazonS3Builder::new();
    for (name, value) in vars {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
            continue;
        };
        if !name.starts_with("AWS_") {
            continue;
        }
        match name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            Ok(AmazonS3ConfigKey::Token) | Err(_) => {}
            Ok(key) => b = b.with_config(key, value),
        }
    }
    b
}

/// `endpoint` with `bucket.` in front of its host, unless it is there already.
fn bucket_host(endpoint: &str, bucket: &str) -> Result<String, String> {
    let mut url = url::Url::parse(endpoint).map_err(|e| format!("endpoint {endpoint}: {e}"))?;
    let host = url.host_str().unwrap_or_default().to_string();
    if host.starts_with(&format!("{bucket}.")) {
        return Ok(endpoint.to_string());
    }
    let named = matches!(url.host(), Some(url::Host::Domain(_)));
    if !named {
        return Err(format!("virtual-hosted addressing puts the bucket in the endpoint's host name, and {endpoint} has none; use path-style addressing"));
    }
    bucket_in_host_name(bucket, url.scheme())?;
    if url.set_host(Some(&format!("{bucket}.{host}"))).is_err() {
        return Err(format!("virtual-hosted addressing puts the bucket in the endpoint's host name, and {bucket}.{host} is not one; use path-style addressing"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Whether `bucket` can go in front of the host name of an endpoint reached
/// over `scheme`, as the registry's SDK (aws-sdk-go v1,
/// `hostCompatibleBucketName`) decides it: a DNS-compatible name, and over
/// https one without a dot, since a certificate for `*.host` covers a single
/// label in front of the host and the dots make several. Where it cannot, the
/// SDK addresses the bucket path-style.
pub fn bucket_in_host_name(bucket: &str, scheme: &str) -> Result<(), String> {
    if scheme.eq_ignore_ascii_case("https") && bucket.contains('.') {
        return Err(format!("virtual-hosted addressing puts the bucket in the endpoint's host name, and over https bucket {bucket} with its dots is not covered by the host's certificate; use path-style addressing"));
    }
    if !dns_compatible_bucket(bucket) {
        return Err(format!("virtual-hosted addressing puts the bucket in the endpoint's host name, and bucket {bucket} is not a DNS name (3 to 63 lowercase letters, digits, dots and hyphens, not an IP address); use path-style addressing"));
    }
    Ok(())
}

/// aws-sdk-go v1's `dnsCompatibleBucketName`: `^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`,
/// not an IPv4 address, no `..`.
fn dns_compatible_bucket(bucket: &str) -> bool {
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let shaped = match bucket.as_bytes() {
        [first, inner @ .., last] if (3..=63).contains(&bucket.len()) => {
            edge(*first) && edge(*last) && inner.iter().all(|&c| edge(c) || c == b'.' || c == b'-')
        }
        _ => false,
    };
    let groups: Vec<&str> = bucket.split('.').collect();
    let an_address = groups.len() == 4
        && groups
            .iter()
            .all(|g| !g.is_empty() && g.bytes().all(|c| c.is_ascii_digit()));
    shaped && !an_address && !bucket.contains("..")
}

/// The S3 setting that names an AWS profile: `[s3] profile` in --config,
/// `--profile`, `-o profile=NAME`.
const PROFILE_KEY: &str = "profile";

/// Static keys given as settings (not environment variables).
#[cfg(feature = "aws-profile")]
fn s3_keys(options: &BackendOptions) -> Option<&BackendOption> {
    options.for_section("s3").find(|o| {
        matches!(
            o.key.parse::<AmazonS3ConfigKey>(),
            Ok(AmazonS3ConfigKey::AccessKeyId
                | AmazonS3ConfigKey::SecretAccessKey
                | AmazonS3ConfigKey::Token)
        )
    })
}

/// The AWS profile to take S3 credentials from. As in the AWS CLI, a profile
/// named by a setting wins over keys in the environment, and keys in the
/// environment or the settings win over `AWS_PROFILE`.
#[cfg(feature = "aws-profile")]
fn s3_profile(
    options: &BackendOptions,
) -> Result<Option<super::aws_profile::ProfileChoice>, OpenError> {
    use super::aws_profile::ProfileChoice;
    if let Some(o) = options
        .for_section("s3")
        .filter(|o| o.key == PROFILE_KEY)
        .last()
    {
        if let Some(keys) = s3_keys(options) {
            return Err(OpenError::ProfileAndKeys {
                profile_source: o.source.clone(),
                keys_source: keys.source.clone(),
            });
        }
        return Ok(Some(ProfileChoice {
            name: o.value.clone(),
            source: o.source.clone(),
        }));
    }
    let from_env = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty());
    let keys_given = s3_keys(options).is_some() || std::env::var_os("AWS_ACCESS_KEY_ID").is_some();
    Ok(from_env.filter(|_| !keys_given).map(|name| ProfileChoice {
        name,
        source: "AWS_PROFILE".into(),
    }))
}

/// Without the feature a profile setting is refused, not ignored: the run would
/// otherwise go on with whatever other credentials it finds. `AWS_PROFILE` is
/// left alone, as before the feature existed.
#[cfg(not(feature = "aws-profile"))]
fn refuse_profile(options: &BackendOptions) -> Result<(), OpenError> {
    match options.for_section("s3").find(|o| o.key == PROFILE_KEY) {
        Some(o) => Err(OpenError::ProfileNeedsFeature {
            source_name: o.source.clone(),
        }),
        None => Ok(()),
    }
}

/// Azurite's public development account (the same object_store uses for
/// `use_emulator`).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn build_azure(
    spec: &str,
    container: &str,
    options: &BackendOptions,
) -> Result<(Arc<dyn Backend>, Option<String>), OpenError> {
    let mut b = MicrosoftAzureBuilder::from_env()
        .with_container_name(container)
        .with_retry(retry_config())
        .with_http_connector(CheckedBulkDeletes);
    let endpoint = endpoint_of(
        options,
        "azure",
        &["endpoint", "azure_endpoint", "azure_storage_endpoint"],
        &["AZURE_STORAGE_ENDPOINT"],
    );
    let mut emulator = false;
    for o in options
        .for_section("azure")
        .filter(|o| o.key != LIST_PAGE_SIZE_KEY)
    {
        let key = o
            .key
            .parse::<AzureConfigKey>()
            .map_err(|_| unknown(o, "Azure"))?;
        if matches!(key, AzureConfigKey::ContainerName) {
            return Err(target_in_options(spec, o, "container"));
        }
        if matches!(key, AzureConfigKey::UseEmulator) && parse_bool(o)? && endpoint.is_some() {
            // object_store's emulator mode ignores the endpoint; an Azurite on
            // another address is the same thing spelled out
            emulator = true;
            continue;
        }
        b = b.with_config(key, &o.value);
    }
    if emulator {
        let set = |k: &str| {
            options
                .for_section("azure")
                .any(|o| o.key.parse::<AzureConfigKey>().ok() == k.parse().ok())
        };
        if !set("account_name") {
            b = b.with_account(AZURITE_ACCOUNT);
        }
        if !set("access_key")
            && !set("sas_token")
            && std::env::var("AZURE_STORAGE_ACCOUNT_KEY").is_err()
        {
            b = b.with_access_key(AZURITE_KEY);
        }
        b = b.with_allow_http(true);
    }
    let shown = endpoint.or_else(|| {
        let emulated = options
            .for_section("azure")
            .any(|o| o.key == "use_emulator" && o.value == "true");
        emulated.then(|| {
            std::env::var("AZURITE_BLOB_STORAGE_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:10000".into())
        })
    });
    let store = b.build().map_err(|e| built(spec, e))?;
    Ok((Arc::new(store), shown))
}

fn build_gcs(
    spec: &str,
    bucket: &str,
    options: &BackendOptions,
) -> Result<(Arc<dyn Backend>, Option<String>), OpenError> {
    let mut b = GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry_config());
    for o in options
        .for_section("gcs")
        .filter(|o| o.key != LIST_PAGE_SIZE_KEY)
    {
        // `endpoint` (as --endpoint sets it) is object_store's `base_url` for GCS
        let key = if o.key == "endpoint" {
            "base_url"
        } else {
            o.key.as_str()
        };
        b = match key
            .parse::<GoogleConfigKey>()
            .map_err(|_| unknown(o, "GCS"))?
        {
            GoogleConfigKey::Bucket => return Err(target_in_options(spec, o, "bucket")),
            key => b.with_config(key, &o.value),
        };
    }
    let endpoint = endpoint_of(
        options,
        "gcs",
        &["endpoint", "base_url", "google_base_url"],
        &["GOOGLE_BASE_URL"],
    );
    let store = b.build().map_err(|e| built(spec, e))?;
    Ok((Arc::new(store), endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_page_size_is_a_number_of_keys_up_to_the_service_s_most() {
        let opened = |value: &str, spec: &str| {
            let mut options = BackendOptions::default();
            options.push("list_page_size", value, "-o");
            options.push("endpoint", "http://127.0.0.1:1", "--endpoint");
            options.push("access_key_id", "k", "-o");
            options.push("secret_access_key", "s", "-o");
            options.push("region", "us-east-1", "-o");
            open_storage(spec, &options)
        };
        assert_eq!(opened("3", "s3://b/r").unwrap().list_page_size(), Some(3));
        assert_eq!(
            opened("1000", "s3://b/r").unwrap().list_page_size(),
            Some(1000)
        );
        for bad in ["0", "1001", "many", "-1"] {
            let err = opened(bad, "s3://b/r").unwrap_err().to_string();
            assert!(
                err.contains("list_page_size") && err.contains("from 1 to 1000"),
                "{bad}: {err}"
            );
        }
        let mut options = BackendOptions::default();
        options.push_section("azure", "list_page_size", "5000", "--config c.toml [azure]");
        options.push_section("azure", "use_emulator", "true", "--config c.toml [azure]");
        assert_eq!(
            open_storage("az://c/r", &options).unwrap().list_page_size(),
            Some(5000)
        );
        // not a setting a filesystem takes, nor one another backend's section gives
        let mut options = BackendOptions::default();
        options.push_section("azure", "list_page_size", "7", "--config c.toml [azure]");
        options.push_section("s3", "region", "us-east-1", "--config c.toml [s3]");
        assert_eq!(
            open_storage("s3://b/r", &options).unwrap().list_page_size(),
            Some(1000)
        );
    }

    /// With virtual-hosted addressing an endpoint names the bucket's own host
    /// (object_store adds no bucket to it): the bucket is put in front of the
    /// host, once; an endpoint without a host name is refused.
    #[test]
    fn virtual_hosted_addressing_puts_the_bucket_in_the_endpoint() {
        let opened = |endpoint: &str| {
            let mut options = BackendOptions::default();
            options.push("endpoint", endpoint, "--endpoint");
            options.push(
                "virtual_hosted_style_request",
                "true",
                "--virtual-hosted-style",
            );
            options.push("region", "us-east-1", "-o");
            open_storage("s3://reg-bucket/root", &options)
        };
        for (given, used) in [
            (
                "https://minio.internal:9000",
                "https://reg-bucket.minio.internal:9000",
            ),
            (
                "https://reg-bucket.r2.example",
                "https://reg-bucket.r2.example",
            ),
        ] {
            let storage = opened(given).unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(
                storage.describe(),
                format!("s3://reg-bucket/root at {used}")
            );
        }
        let err = opened("http://127.0.0.1:9000")
            .err()
            .unwrap_or_else(|| panic!("an address has no host name to put the bucket in"))
            .to_string();
        assert!(err.contains("path-style"), "{err}");
        assert!(err.starts_with("--virtual-hosted-style: "), "{err}");
    }

    /// The refusal of virtual-hosted addressing with an endpoint given by
    /// address names the setting that asked for it: the registry config's
    /// `storage.s3.forcepathstyle`, or our own option where it was given.
    #[test]
    fn a_virtual_hosted_refusal_names_the_setting_that_asked_for_it() {
        let text = "storage:\n  s3:\n    bucket: reg\n    region: us-east-1\n    regionendpoint: http://127.0.0.1:9000\n    forcepathstyle: false\n";
        let r = crate::registry_config::parse(text, "config.yml", Vec::<(String, String)>::new())
            .unwrap();
        let mut options = BackendOptions::default();
        for o in &r.options {
            options.push_section(r.section.unwrap(), o.key, &o.value, &o.origin);
        }
        let err = open_storage(&r.url, &options)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("config.yml storage.s3.forcepathstyle") && err.contains("path-style"),
            "{err}"
        );
        let mut options = offline();
        options.push_section("s3", "force_path_style", "false", "--config c.toml [s3]");
        let err = open_storage("s3://b/r", &options)
            .expect_err("refused")
            .to_string();
        assert!(
            err.starts_with("--config c.toml [s3]: force_path_style: "),
            "{err}"
        );
    }

    /// Virtual-hosted addressing asked for by our own options, with a bucket
    /// that cannot be put in front of a host name (a dot over https, which
    /// the host's certificate does not cover, or no DNS name at all), is
    /// refused naming the setting, as the registry's SDK would have gone
    /// path-style; over http a dotted bucket is a host name like any other.
    #[test]
    fn a_bucket_that_cannot_be_in_a_host_name_refuses_virtual_hosted_addressing() {
        let opened = |bucket: &str, endpoint: Option<&str>| {
            let mut options = BackendOptions::default();
            if let Some(e) = endpoint {
                options.push("endpoint", e, "--endpoint");
            }
            options.push(
                "virtual_hosted_style_request",
                "true",
                "--virtual-hosted-style",
            );
            options.push("region", "us-east-1", "-o");
            open_storage(&format!("s3://{bucket}/root"), &options)
        };
        for (bucket, endpoint, why) in [
            (
                "reg.example.com",
                Some("https://minio.internal"),
                "over https",
            ),
            ("reg.example.com", None, "over https"),
            (
                "reg_bucket",
                Some("http://minio.internal"),
                "not a DNS name",
            ),
            ("1.2.3.4", Some("http://minio.internal"), "not a DNS name"),
            ("a..b", Some("http://minio.internal"), "not a DNS name"),
        ] {
            let err = opened(bucket, endpoint)
                .err()
                .unwrap_or_else(|| panic!("{bucket} at {endpoint:?} was not refused"))
                .to_string();
            assert!(
                err.starts_with("--virtual-hosted-style: ")
                    && err.contains(why)
                    && err.contains("path-style"),
                "{err}"
            );
        }
        let storage = opened("reg.example.com", Some("http://minio.internal")).unwrap();
        assert!(
            storage
                .describe()
                .ends_with(" at http://reg.example.com.minio.internal"),
            "{}",
            storage.describe()
        );
        // an endpoint that names the bucket's host itself is the operator's choice
        let storage = opened(
            "reg.example.com",
            Some("https://reg.example.com.minio.internal"),
        )
        .unwrap();
        assert!(
            storage
                .describe()
                .ends_with(" at https://reg.example.com.minio.internal"),
            "{}",
            storage.describe()
        );
    }

    /// Sets an environment variable until dropped, then puts back what it was,
    /// a failed assertion included. No other test reads the variables set.
    struct EnvVar {
        name: &'static str,
        before: Option<std::ffi::OsString>,
    }

    impl EnvVar {
        fn set(name: &'static str, value: &str) -> Self {
            let before = std::env::var_os(name);
            std::env::set_var(name, value);
            Self { name, before }
        }
    }

    impl Drop for EnvVar {
        fn drop(&mut self) {
            match &self.before {
                Some(v) => std::env::set_var(self.name, v),
                None => std::env::remove_var(self.name),
            }
        }
    }

    /// `disable_bulk_delete` is true to object_store in every spelling its
    /// boolean parser takes, so the request counts (a DELETE per key) follow
    /// what it sends; given as a setting or as `AWS_DISABLE_BULK_DELETE`.
    #[test]
    fn disable_bulk_delete_is_read_as_object_store_reads_it() {
        let bulk = |value: &str| {
            let mut options = offline();
            options.push_section("s3", "disable_bulk_delete", value, "--config c.toml [s3]");
            build_s3("s3://b/r", "b", &options)
                .unwrap_or_else(|e| panic!("{value}: {e}"))
                .bulk_deletes
        };
        for on in ["true", "TRUE", "1", "yes", "Yes", "on", "ON", "y"] {
            assert!(!bulk(on), "disable_bulk_delete={on} still counted as bulk");
        }
        for off in ["false", "0", "no", "off", "N"] {
            assert!(bulk(off), "disable_bulk_delete={off}");
        }
        let mut options = offline();
        options.push_section("s3", "disable_bulk_delete", "maybe", "--config c.toml [s3]");
        assert!(build_s3("s3://b/r", "b", &options).is_err());
        // the environment, read when the settings give no keys
        let _var = EnvVar::set("AWS_DISABLE_BULK_DELETE", "Yes");
        assert!(!build_s3("s3://b/r", "b", &offline()).unwrap().bulk_deletes);
    }

    /// Without the session token, the environment gives the builder what
    /// `from_env` takes from it.
    #[test]
    fn the_environment_without_its_session_token_is_the_rest_of_from_env() {
        let vars = [
            ("AWS_SESSION_TOKEN", "env-token"),
            ("AWS_TOKEN", "env-token-2"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_NOT_A_SETTING", "x"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.into(), v.into()));
        let b = s3_env_without_session_token(vars);
        assert_eq!(b.get_config_value(&AmazonS3ConfigKey::Token), None);
        for (key, value) in [
            (AmazonS3ConfigKey::Region, "eu-west-1"),
            (AmazonS3ConfigKey::AccessKeyId, "AKIAENV"),
            (
                AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                "true",
            ),
        ] {
            assert_eq!(b.get_config_value(&key).as_deref(), Some(value), "{key:?}");
        }
    }

    /// The registry's s3 driver signs with `accesskey`/`secretkey` from its
    /// config and no session token (2.8: none; v3: `sessiontoken`). With keys
    /// from the config, a session token left in the environment (an assumed
    /// role's shell) must not be sent with them: S3 refuses the pair.
    #[tokio::test]
    async fn keys_from_settings_are_not_sent_with_the_environments_session_token() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&buf).to_string());
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>b</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>";
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let _token = EnvVar::set("AWS_SESSION_TOKEN", "env-session-token");
        // the token the settings give goes with their keys, and none other
        for (more, token) in [
            ("", None),
            ("    sessiontoken: cfg-token\n", Some("cfg-token")),
        ] {
            let text = format!(
                "storage:\n  s3:\n    bucket: b\n    region: us-east-1\n    regionendpoint: http://127.0.0.1:{port}\n    accesskey: AKIACONFIG\n    secretkey: configsecret\n{more}"
            );
            let r =
                crate::registry_config::parse(&text, "config.yml", Vec::<(String, String)>::new())
                    .unwrap();
            let mut options = BackendOptions::default();
            for o in &r.options {
                options.push_section(r.section.unwrap(), o.key, &o.value, &o.origin);
            }
            let storage = open_storage(&r.url, &options).unwrap();
            let _ = storage.list_dir("docker/registry/v2/").await;
            let request = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap()
                .to_ascii_lowercase();
            assert!(request.contains("credential=akiaconfig/"), "{request}");
            let sent = request
                .lines()
                .find_map(|l| l.strip_prefix("x-amz-security-token: "));
            assert_eq!(
                sent,
                token.map(str::to_ascii_lowercase).as_deref(),
                "{request}"
            );
        }
    }

    /// A registry config's virtual-hosted endpoint is the host the registry's
    /// SDK sends to, the bucket always in front: bucket `minio` at
    /// `https://minio.corp` is `minio.minio.corp`, not `minio.corp` (which
    /// an endpoint given as our own option, with the bucket in it, may be).
    #[test]
    fn a_registry_configs_virtual_hosted_endpoint_gets_the_bucket_even_when_it_begins_with_it() {
        let text = "storage:\n  s3:\n    bucket: minio\n    region: us-east-1\n    regionendpoint: https://minio.corp\n    forcepathstyle: false\n";
        let r = crate::registry_config::parse(text, "config.yml", Vec::<(String, String)>::new())
            .unwrap();
        let mut options = BackendOptions::default();
        for o in &r.options {
            options.push_section(r.section.unwrap(), o.key, &o.value, &o.origin);
        }
        let storage = open_storage(&r.url, &options).unwrap();
        let shown = storage.describe();
        assert!(shown.ends_with(" at https://minio.minio.corp"), "{shown}");
    }

    /// Keys or a SAS token in STORAGE are refused (they would be ignored), and
    /// the message shows them as `***`; so does `shown_spec`, which metrics use.
    #[test]
    fn secrets_in_storage_are_refused_and_never_shown() {
        for spec in [
            "s3://AKIAEXAMPLE:wJalrSECRETKEY@bucket/root",
            "az://container/root?sv=2024&sig=SASSECRET",
            "gs://user@bucket/r",
        ] {
            let err = open_storage(spec, &BackendOptions::default())
                .err()
                .unwrap_or_else(|| panic!("{spec}: opened"))
                .to_string();
            for secret in ["AKIAEXAMPLE", "wJalrSECRETKEY", "SASSECRET", "user@"] {
                assert!(
                    !err.contains(secret) && !shown_spec(spec).contains(secret),
                    "{spec}: {err}"
                );
            }
            assert!(err.contains("not used") && err.contains("***"), "{err}");
        }
        assert_eq!(shown_spec("s3://bucket/root"), "s3://bucket/root");
        assert_eq!(shown_spec("/srv/registry"), "/srv/registry");
    }

    /// Settings that open `spec`'s backend without asking anyone anything.
    fn offline() -> BackendOptions {
        let mut options = BackendOptions::default();
        let c = "--config c.toml";
        options.push_section("s3", "region", "us-east-1", c);
        options.push_section("s3", "endpoint", "http://127.0.0.1:1", c);
        options.push_section("azure", "use_emulator", "true", c);
        options.push_section("gcs", "endpoint", "http://127.0.0.1:1", c);
        options.push_section("gcs", "bearer_token", "t", c);
        options
    }

    /// A `#` starts a URL fragment: the root would end before it, and the
    /// run would collect another prefix. Refused (a `#` in the root's name is
    /// %23), the message masking credentials as every STORAGE message does.
    #[test]
    fn a_fragment_in_storage_is_refused() {
        for spec in [
            "s3://bucket/reg#prod",
            "az://c/r#x",
            "gs://b#r",
            "file:///srv/reg#x",
        ] {
            let err = open_storage(spec, &offline())
                .err()
                .unwrap_or_else(|| panic!("{spec}: opened"))
                .to_string();
            assert!(
                err.contains("STORAGE") && err.contains("fragment") && err.contains("%23"),
                "{err}"
            );
        }
        let storage = open_storage("s3://bucket/reg%23prod", &offline()).unwrap();
        assert!(
            storage.describe().starts_with("s3://bucket/reg#prod "),
            "{}",
            storage.describe()
        );
    }

    /// A port after the bucket is not part of its name, and the URL parser
    /// would drop it: refused, pointing at the endpoint setting.
    #[test]
    fn a_port_after_the_bucket_is_refused() {
        for spec in [
            "s3://bucket:9000/root",
            "s3://bucket:/root",
            "s3://@bucket/root",
            "az://container:10000/r",
            "gs://bucket:4443",
        ] {
            let err = open_storage(spec, &offline())
                .err()
                .unwrap_or_else(|| panic!("{spec}: opened"))
                .to_string();
            assert!(
                err.contains(&format!("STORAGE {spec:?}")) && err.contains("--endpoint"),
                "{err}"
            );
        }
        // credentials keep their own message, which masks them
        let err = open_storage("s3://key:secret@bucket:9000/r", &offline())
            .err()
            .unwrap()
            .to_string();
        assert!(
            !err.contains("secret") && err.contains("credentials"),
            "{err}"
        );
    }

    /// A root whose `%XX` escapes are not UTF-8 is refused, not opened with
    /// U+FFFD in their place; a registry config's `%` is its own character.
    #[test]
    fn a_root_that_decodes_to_no_utf8_is_refused() {
        for spec in ["s3://bucket/a%FF", "gs://bucket/%C3", "az://c/r/%e9t%e9"] {
            let err = open_storage(spec, &offline())
                .err()
                .unwrap_or_else(|| panic!("{spec}: opened"))
                .to_string();
            assert!(
                err.contains(&format!("STORAGE {spec:?}")) && err.contains("UTF-8"),
                "{err}"
            );
        }
        let storage = open_storage("s3://bucket/%C3%A9t%C3%A9", &offline()).unwrap();
        assert!(
            storage.describe().starts_with("s3://bucket/été "),
            "{}",
            storage.describe()
        );
        let text = "storage:\n  s3:\n    bucket: b\n    rootdirectory: /a%FF\n";
        let r = crate::registry_config::parse(text, "config.yml", Vec::<(String, String)>::new())
            .unwrap();
        let storage = open_storage(&r.url, &offline()).unwrap();
        assert!(
            storage.describe().starts_with("s3://b/a%FF "),
            "{}",
            storage.describe()
        );
    }

    /// The URL parser resolves `.` and `..` segments (`s3://b/team/../prod`
    /// is the root `prod` to it), so the root is read as written, and one
    /// with a `.`, `..` or empty segment (encoded too) is refused, as the
    /// registry config's `rootdirectory` is; slashes at its ends are not
    /// segments.
    #[test]
    fn dot_and_empty_segments_in_the_root_are_refused() {
        for spec in [
            "s3://bucket/team/../prod",
            "s3://bucket/team/./prod",
            "s3://bucket/..",
            "s3://bucket/team//prod",
            "s3://bucket/team/%2e%2E/prod",
            "s3://bucket/team%2F%2Fprod",
            "az://container/a/../b",
            "gs://bucket/a/./b",
        ] {
            let err = open_storage(spec, &offline())
                .err()
                .unwrap_or_else(|| panic!("{spec}: opened"))
                .to_string();
            assert!(
                err.contains(&format!("STORAGE {spec:?}")) && err.contains("segment"),
                "{err}"
            );
        }
        for (spec, root) in [
            ("s3://bucket/team/prod/", "s3://bucket/team/prod at "),
            ("s3://bucket//team", "s3://bucket/team at "),
            (
                "s3://bucket/team.../..prod",
                "s3://bucket/team.../..prod at ",
            ),
            ("s3://bucket", "s3://bucket/ at "),
        ] {
            let storage = open_storage(spec, &offline()).unwrap();
            assert!(
                storage.describe().starts_with(root),
                "{spec}: {}",
                storage.describe()
            );
        }
    }

    /// STORAGE names the bucket or container: a setting naming another
    /// (object_store takes `bucket`, `aws_bucket`, `container_name`, ... as
    /// settings too) would send every request there while the summary and
    /// the report named STORAGE's. It is refused, naming where it came from.
    #[test]
    fn a_setting_naming_another_bucket_is_refused() {
        for (spec, section, key) in [
            ("s3://staging/reg", "s3", "bucket"),
            ("s3://staging/reg", "s3", "aws_bucket_name"),
            ("az://staging/reg", "azure", "container_name"),
            ("gs://staging/reg", "gcs", "bucket"),
            ("gs://staging/reg", "gcs", "google_bucket_name"),
        ] {
            let mut options = BackendOptions::default();
            options.push_section(section, key, "prod", "--config c.toml");
            let err = open_storage(spec, &options)
                .err()
                .unwrap_or_else(|| panic!("{spec} {key}: opened"))
                .to_string();
            assert!(
                err.contains("--config c.toml") && err.contains(key) && err.contains("staging"),
                "{err}"
            );
        }
    }
}
