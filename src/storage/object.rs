//! Object stores (S3 and S3-compatibles, Azure Blob, Google Cloud Storage) through
//! Apache Arrow's `object_store`, behind the project's storage trait.
//!
//! Listing uses `object_store`'s paginated API directly, so that every page is one
//! counted LIST request and a prefix is a plain string prefix. Deletes use each
//! store's bulk API where it has one: S3 DeleteObjects (1000 keys a request), Azure
//! Blob Batch (256); GCS has none in its XML API, so its keys are deleted with wide
//! concurrency.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::bulk_answers::delete_result_entries;
use super::counts::RequestCounts;
use super::redact::redact;
use super::{lists, DirListing, FirstPage, MoveMode, Moved, ObjectMeta, Storage, StorageError};

/// Everything `ObjectStorage` needs from a store.
pub trait Backend: ObjectStore + PaginatedListStore {}
impl<T: ObjectStore + PaginatedListStore> Backend for T {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    S3,
    Azure,
    Gcs,
}

/// An error's text without what names objects: URLs (a request's holds the
/// bucket, root and key) and every other word with a `/` in it (keys and
/// paths, as in "precondition failure for path KEY" or a body's
/// "/bucket/key"; a key in this layout always has one). What is left are the
/// store's and object_store's own words, which a repository named
/// `metadata-api`, a tag `AccessDenied` or a bucket `credential-store`
/// cannot put there. An XML body's tags are taken apart first, so that a
/// closing tag's `/` does not take the code or message next to it along.
fn own_words(text: &str) -> String {
    text.replace(['<', '>'], " ")
        .split_whitespace()
        .filter(|w| !w.contains('/'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The URLs in an error's text, as far as they parse (a word from
/// `http://` or `https://` up to whitespace, without closing punctuation).
fn urls(text: &str) -> impl Iterator<Item = url::Url> + '_ {
    text.split_whitespace().filter_map(|w| {
        let start = w.find("http://").or_else(|| w.find("https://"))?;
        let url = w[start..].trim_end_matches([')', ',', ':', ';', '"', '\'']);
        url::Url::parse(url).ok()
    })
}

/// The store answered that the credentials are wrong or lack permission.
fn is_refusal(text: &str) -> bool {
    let words = own_words(text);
    [
        "403 Forbidden",
        "401 Unauthorized",
        "AuthorizationFailure",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AuthenticationFailed",
    ]
    .iter()
    .any(|m| words.contains(m))
}

/// An error as one line: an XML error body (S3, Azure) shrinks to its code and
/// message, whitespace runs to one space.
fn one_line(text: &str) -> String {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(
            text[start..end]
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        )
    };
    let text = match (text.find("<?xml"), tag("Code")) {
        (Some(xml), Some(code)) => format!(
            "{}{code}: {}",
            &text[..xml],
            tag("Message").unwrap_or_default()
        ),
        _ => text.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The store answered that the bucket or container itself does not exist
/// (S3 and GCS `NoSuchBucket`, Azure `ContainerNotFound`): a "not found" that
/// is the request's, never a key's. The text also holds the key, whose tag
/// or repository may be named `NoSuchBucket`: an error code counts only
/// where a key's name cannot put it, not joined to a name character or `/`
/// on either side (the messages have spaces in them, which keys do not).
fn names_missing_bucket(text: &str) -> bool {
    let name_char = |c: char| c.is_ascii_alphanumeric() || "_.-/".contains(c);
    let standalone = |code: &str| {
        text.match_indices(code).any(|(i, _)| {
            let before = text[..i].chars().next_back();
            let after = text[i + code.len()..].chars().next();
            !before.is_some_and(name_char) && !after.is_some_and(name_char)
        })
    };
    standalone("NoSuchBucket")
        || standalone("ContainerNotFound")
        || [
            "The specified bucket does not exist",
            "The specified container does not exist",
        ]
        .iter()
        .any(|m| text.contains(m))
}

/// Whether an S3 DeleteObjects answer that names `path` would read as an
/// error: object_store retries a 200 answer to it with `InternalError` or
/// `SlowDown` anywhere in its body (S3's way of failing it after the
/// status), and the answer names every key it deleted. A tag called
/// `SlowDown` would fail its whole request, after every retry, each time
/// it is sent; such a key is deleted by a request of its own (a plain
/// DELETE, whose answer has no body: `ObjectStorage::with_single_deletes`).
fn answer_reads_as_error(service: Service, path: &Path) -> bool {
    service == Service::S3
        && ["InternalError", "SlowDown"]
            .iter()
            .any(|code| path.as_ref().contains(code))
}

/// A failed request's error without the keys object_store names in it: S3's
/// DeleteObjects puts every key of the request, joined by commas, in the
/// error for a 401, 403, 404, 409 or 412, and each key's failure would
/// repeat all of them (a thousand keys in each of a thousand failures).
/// What is left is the request's method, URL, status and answer.
fn request_error(e: &object_store::Error) -> String {
    use object_store::Error as E;
    match e {
        E::NotFound { source, .. }
        | E::PermissionDenied { source, .. }
        | E::Unauthenticated { source, .. }
        | E::Precondition { source, .. }
        | E::AlreadyExists { source, .. }
        | E::NotModified { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// A store that takes no conditional writes: object_store's own answer
/// (`conditional_put=disabled`), or the server's 501 (as S3 gave before
/// 2024, and stores made like it still do).
fn refuses_conditional_puts(e: &object_store::Error) -> bool {
    if matches!(e, object_store::Error::NotImplemented { .. }) {
        return true;
    }
    let text = e.to_string();
    text.contains("status code: 501") || text.contains("<Code>NotImplemented</Code>")
}

/// A request for credentials went to one of these hosts: the AWS and Azure
/// instance metadata service (and AWS's over IPv6), ECS and EKS Pod Identity
/// container credentials, the GCE metadata server.
const CREDENTIAL_HOSTS: &[&str] = &[
    "169.254.169.254",
    "[fd00:ec2::254]",
    "169.254.170.2",
    "169.254.170.23",
    "[fd00:ec2::23]",
    "metadata.google.internal",
];

/// A failure to obtain credentials (rather than to use them): a request to
/// the metadata service or for container credentials that failed, a token
/// exchange object_store reports ("Error performing token request", "Error
/// getting token response body": Azure's and GCP's), STS's for a web
/// identity (the one request object_store shows as `POST REDACTED`, its URL
/// holding the token), a token file it could not read, an AWS profile that
/// gave none. Matched on the request's host and on the words outside keys
/// and URLs only: the bucket, root and key of a failed data request are in
/// its URL.
fn is_credential_failure(text: &str) -> bool {
    let words = own_words(text).to_ascii_lowercase();
    urls(text).any(|u| u.host_str().is_some_and(|h| CREDENTIAL_HOSTS.contains(&h)))
        || [
            "credential",
            "performing post redacted",
            "token request",
            "token response",
            "token file",
            "assumerolewithwebidentity",
            "createsession",
            "get-access-token",
            "azure cli",
            "service account file",
        ]
        .iter()
        .any(|m| words.contains(m))
}

#[cfg(feature = "aws-profile")]
const S3_CREDENTIAL_SOURCES: &str = "credentials are taken from the AWS profile named by --profile or [s3] profile, \
     AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, [s3] in --config, the AWS_PROFILE profile, web identity \
     (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), container credentials, then instance metadata";
#[cfg(not(feature = "aws-profile"))]
const S3_CREDENTIAL_SOURCES: &str = "credentials are taken from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, [s3] in --config, web identity \
     (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), container credentials, then instance metadata \
     (~/.aws/config profiles need a build with the aws-profile feature)";

impl Service {
    /// Where credentials come from, for error messages (names, never values).
    fn credential_sources(self) -> &'static str {
        match self {
            Service::S3 => S3_CREDENTIAL_SOURCES,
            Service::Azure => {
                "credentials are taken from AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN, AZURE_CLIENT_ID/SECRET/TENANT_ID, \
                 AZURE_FEDERATED_TOKEN_FILE (workload identity), AZURE_USE_AZURE_CLI, [azure] in --config, then managed identity"
            }
            Service::Gcs => {
                "credentials are taken from GOOGLE_SERVICE_ACCOUNT(_PATH/_KEY), GOOGLE_APPLICATION_CREDENTIALS, \
                 [gcs] in --config, then the metadata server"
            }
        }
    }

    /// Keys one listing request returns at most.
    pub fn max_list_page(self) -> usize {
        match self {
            Service::Azure => 5000,
            Service::S3 | Service::Gcs => 1000,
        }
    }

    /// Keys one delete request carries.
    fn delete_batch(self) -> usize {
        match self {
            Service::S3 => 1000,
            Service::Azure => 256,
            // no bulk delete: a "batch" is a group of concurrent single deletes
            Service::Gcs => 100,
        }
    }
}

/// What a store that mishandles conditional writes needs.
const NO_CONDITIONAL_PUTS: &str = "the link is put back under If-None-Match: *; a store that \
     refuses or mishandles conditional writes needs -o conditional_put=disabled";

/// The most a link written back under a condition is read for: a link holds
/// one digest (71 bytes for sha256); anything larger is no link of the
/// registry's, and is copied as any other object is.
const LINK_BYTES: u64 = 1024;

pub struct ObjectStorage {
    store: Arc<dyn Backend>,
    service: Service,
    /// `rootdirectory` with a trailing `/`, or empty.
    root: String,
    /// For messages: `s3://bucket/root`. Never holds credentials.
    location: String,
    /// Concurrent single deletes within one GCS batch, and concurrent copies
    /// within one move batch.
    gcs_delete_concurrency: usize,
    /// Keys a listing request asks for, when not the service's most.
    page_size: Option<usize>,
    /// S3: the same store sending a plain DELETE per key (object_store's
    /// `disable_bulk_delete`), for the keys `answer_reads_as_error` names.
    /// Without it those go in DeleteObjects requests like any other.
    single_deletes: Option<Arc<dyn Backend>>,
    /// `store` deletes through the service's bulk API; else a request a key
    /// (S3 with `disable_bulk_delete`).
    bulk_deletes: bool,
    /// Places for LIST requests in flight (`limit_list_requests`).
    list_places: std::sync::RwLock<Option<Arc<tokio::sync::Semaphore>>>,
    /// The store refused a conditional write: links are restored by the
    /// checked copy (`put_back_link`).
    no_conditional_puts: AtomicBool,
    counts: RequestCounts,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the store's own Debug may print configuration; keep it out
        f.debug_struct("ObjectStorage")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl ObjectStorage {
    pub fn new(store: Arc<dyn Backend>, service: Service, root: &str, location: String) -> Self {
        let root = root.trim_matches('/');
        let root = if root.is_empty() {
            String::new()
        } else {
            format!("{root}/")
        };
        ObjectStorage {
            store,
            service,
            root,
            location,
            gcs_delete_concurrency: 16,
            page_size: None,
            single_deletes: None,
            bulk_deletes: true,
            list_places: Default::default(),
            no_conditional_puts: AtomicBool::new(false),
            counts: RequestCounts::default(),
        }
    }

    /// Asks for `keys` a listing page instead of the service's most
    /// (`list_page_size`): for a store that returns fewer than it is asked,
    /// so that the listing's sizes and the floor count its real pages, and for
    /// tests, to list a small registry in many pages.
    pub fn with_list_page_size(mut self, keys: Option<usize>) -> Self {
        self.page_size = keys;
        self
    }

    /// Deletes the keys `answer_reads_as_error` names through `store`, which
    /// sends a plain DELETE per key (an S3 store built with
    /// `disable_bulk_delete`): object_store's own single delete is a
    /// DeleteObjects request of one key.
    pub fn with_single_deletes(mut self, store: Option<Arc<dyn Backend>>) -> Self {
        self.single_deletes = store;
        self
    }

    /// Whether `store` writes under a condition (`If-None-Match: *`): not an
    /// S3 store built with `conditional_put=disabled`, where a link is
    /// restored by the checked copy without trying.
    pub fn with_conditional_puts(self, on: bool) -> Self {
        self.no_conditional_puts.store(!on, Ordering::Relaxed);
        self
    }

    /// Whether `store` deletes through the service's bulk API (DeleteObjects,
    /// Blob Batch): an S3 store built with `disable_bulk_delete` sends a DELETE
    /// per key, and the request counts say so.
    pub fn with_bulk_deletes(mut self, on: bool) -> Self {
        self.bulk_deletes = on;
        self
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn path(&self, key: &str) -> Result<Path, StorageError> {
        Path::parse(self.full(key)).map_err(|e| StorageError::Refused {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    /// A listed location back to a key relative to the root.
    fn key_of(&self, location: &str) -> String {
        location
            .strip_prefix(self.root.as_str())
            .unwrap_or(location)
            .to_string()
    }

    fn meta(&self, m: object_store::ObjectMeta) -> ObjectMeta {
        ObjectMeta {
            key: self.key_of(m.location.as_ref()),
            size: m.size,
            last_modified_ms: m.last_modified.timestamp_millis(),
            etag: m.e_tag,
        }
    }

    /// A key with where it is, for messages: `docker/... (in s3://bucket/root
    /// at http://endpoint)`, which cannot be read as one URL (the endpoint
    /// followed by the key would be, and it names no object: it leaves out
    /// the bucket and the root).
    fn key_in(&self, key: &str) -> String {
        format!("{key} (in {})", self.location)
    }

    fn error(&self, key: &str, e: object_store::Error) -> StorageError {
        let text = one_line(&redact(&e.to_string()));
        let access = |reason: String| StorageError::Access {
            location: format!("{} ({key})", self.location),
            reason,
        };
        match e {
            _ if names_missing_bucket(&text) => StorageError::Remote {
                key: key.to_string(),
                reason: format!("{}: the bucket or container does not exist", self.location),
            },
            object_store::Error::NotFound { .. } => StorageError::NotFound { key: key.to_string() },
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                access(format!("{text}; {}", self.service.credential_sources()))
            }
            _ if is_refusal(&text) => access(format!("{text}; {}", self.service.credential_sources())),
            _ if is_credential_failure(&text) => {
                access(format!("no usable credentials ({}); {text}", self.service.credential_sources()))
            }
            // fake-gcs-server answers every XML API PUT (upload or copy) this way
            _ if self.service == Service::Gcs && text.contains("invalid uploadType") => StorageError::Remote {
                key: key.to_string(),
                reason: format!(
                    "{}: the server does not take uploads or copies through the GCS XML API (fake-gcs-server does not; \
                     Google Cloud Storage does); --quarantine and restore need them",
                    self.location
                ),
            },
            // reqwest refuses a plain-http URL without allow_http as "builder error"
            _ if text.contains("builder error") && self.location.contains(" at http://") => StorageError::Remote {
                key: key.to_string(),
                reason: format!(
                    "{}: the endpoint is plain http, which is refused unless asked for: add --allow-http (or -o allow_http=true)",
                    self.location
                ),
            },
            _ if text.contains("error sending request") || text.contains("Connection refused") || text.contains("dns error") => {
                StorageError::Remote { key: key.to_string(), reason: format!("cannot reach {}: {text}", self.location) }
            }
            _ => StorageError::Remote { key: self.key_in(key), reason: text },
        }
    }

    /// A delete's "not found" that is the key's own (it was gone already, so
    /// the delete is done), not the request's. S3 reports a missing key as
    /// deleted, so a 404 there is always the request's (no such bucket); with
    /// one key in the batch the count of results cannot tell the two apart.
    /// Azure and GCS say which in the answer.
    fn key_was_gone(&self, e: &object_store::Error) -> bool {
        matches!(e, object_store::Error::NotFound { .. })
            && self.service != Service::S3
            && !names_missing_bucket(&redact(&e.to_string()))
    }

    /// A failed delete: never "not found", which callers take for done.
    fn delete_error(&self, key: &str, e: object_store::Error) -> StorageError {
        let text = one_line(&redact(&e.to_string()));
        match self.error(key, e) {
            StorageError::NotFound { .. } => StorageError::Remote {
                key: key.to_string(),
                reason: format!("{}: {text}", self.location),
            },
            other => other,
        }
    }

    /// Deletes `paths` through the store's bulk delete (S3 DeleteObjects,
    /// Azure Blob Batch), one result per path in order. A request that
    /// failed as a whole fails each of its paths, with the request's error
    /// told once per path, not the paths of the whole request (`request_error`).
    async fn delete_in_bulk(&self, paths: Vec<Path>) -> Vec<Result<(), object_store::Error>> {
        let n = paths.len();
        if n == 0 {
            return Vec::new();
        }
        let stream = futures::stream::iter(paths.clone().into_iter().map(Ok)).boxed();
        let got: Vec<_> = self
            .store
            .delete_stream(stream)
            .map_ok(|_| ())
            .collect()
            .await;
        if got.len() == n {
            return got;
        }
        // the whole request failed: every key of it did, but for what the
        // answer says of each (below)
        let error = got.into_iter().find_map(|r| r.err());
        let reason = error
            .as_ref()
            .map(|e| redact(&request_error(e)))
            .unwrap_or_default();
        let failed = |reason: String| object_store::Error::Generic {
            store: "delete",
            source: reason.into(),
        };
        // S3 answers 200 with a `DeleteResult` that names a key's
        // `InternalError` or `SlowDown`; object_store retries the whole
        // request for it, and once its retries are spent fails every key,
        // though the answer says which went (and the look after the sweep
        // must see those). Each key as its last answer says.
        let answered: HashMap<String, Option<String>> = match &error {
            Some(e) if self.service == Service::S3 => {
                delete_result_entries(&e.to_string()).into_iter().collect()
            }
            _ => HashMap::new(),
        };
        paths
            .iter()
            .map(|p| match answered.get(p.as_ref()) {
                Some(None) => Ok(()),
                Some(Some(error)) => Err(failed(redact(&format!(
                    "DeleteObjects request failed for key {p}: {error} (after object_store's retries)"
                )))),
                None => Err(failed(reason.clone())),
            })
            .collect()
    }

    /// Copies one object server-side (one PUT-class request; S3 adds a HEAD when
    /// the destination must not be replaced: it has no conditional copy, and a
    /// link is then written back under a condition, `put_back_link`).
    async fn copy_one(&self, from: &str, to: &str, mode: MoveMode) -> Result<Moved, StorageError> {
        let (src, dst) = (self.path(from)?, self.path(to)?);
        if mode == MoveMode::KeepExisting && self.service == Service::S3 && self.exists(to).await? {
            // a move done before (a restore run again) leaves no source:
            // that is "nothing to move", as the other services answer it
            return Ok(if self.exists(from).await? {
                Moved::DestinationExists
            } else {
                Moved::SourceMissing
            });
        }
        if mode == MoveMode::KeepExisting
            && self.service == Service::S3
            && to.ends_with("/link")
            && !self.no_conditional_puts.load(Ordering::Relaxed)
        {
            if let Some(moved) = self.put_back_link(from, to, &dst).await? {
                return Ok(moved);
            }
        }
        self.counts.put(1);
        let copied = match mode {
            MoveMode::KeepExisting if self.service != Service::S3 => {
                self.store.copy_if_not_exists(&src, &dst).await
            }
            _ => self.store.copy(&src, &dst).await,
        };
        match copied {
            Ok(()) => Ok(Moved::Moved),
            Err(object_store::Error::NotFound { .. }) => Ok(Moved::SourceMissing),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Moved::DestinationExists),
            Err(e) => Err(self.error(from, e)),
        }
    }

    /// Puts a link back on S3, after the HEAD that found its key free, without
    /// replacing one written since: its bytes read and written under
    /// `If-None-Match: *` (S3's one conditional create; a copy has none). A
    /// copy would leave a window between the HEAD and the copy, and a tag's
    /// `current/link`, whose bytes its key does not fix (a blob's and every
    /// other link's it does), moved in that window would go back to its old
    /// target, the manifest it moved to left untagged. On a store that
    /// ignores the condition the HEAD still keeps what was there before.
    /// `None` where the store takes no conditional writes (object_store's
    /// `conditional_put=disabled`, or a 501 answer; remembered for the rest
    /// of the run) or the link is larger than any link: the checked copy
    /// then does it.
    async fn put_back_link(
        &self,
        from: &str,
        to: &str,
        dst: &Path,
    ) -> Result<Option<Moved>, StorageError> {
        let bytes = match self.get(from, LINK_BYTES).await {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => return Ok(Some(Moved::SourceMissing)),
            Err(StorageError::TooLarge { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.counts.put(1);
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(dst, PutPayload::from(bytes.clone()), create)
            .await
        {
            Ok(_) => Ok(Some(Moved::Moved)),
            // S3 answers 412 for a key written since the HEAD, but object_store
            // also reads a 409 (a conflicting write in flight) so, and a write
            // of ours that landed and was retried answers 412 as well: the key
            // is read to tell
            Err(object_store::Error::AlreadyExists { .. }) => {
                match self.get(to, LINK_BYTES).await {
                    Ok(there) if there == bytes => Ok(Some(Moved::Moved)),
                    Ok(_) | Err(StorageError::TooLarge { .. }) => {
                        Ok(Some(Moved::DestinationExists))
                    }
                    Err(StorageError::NotFound { .. }) => Err(StorageError::Remote {
                        key: self.key_in(to),
                        reason: format!(
                            "not put back: the store answered that the key exists or a write \
                             to it was in conflict, and it is not there; run the restore again \
                             ({NO_CONDITIONAL_PUTS})"
                        ),
                    }),
                    Err(e) => Err(e),
                }
            }
            Err(e) if refuses_conditional_puts(&e) => {
                self.no_conditional_puts.store(true, Ordering::Relaxed);
                Ok(None)
            }
            // a 4xx other than the ones above may be the store refusing the
            // condition itself: said so (not for 5xx or a missing bucket,
            // where turning the condition off would only reopen the window)
            Err(e) => Err(match self.error(to, e) {
                StorageError::Remote { key, reason } if reason.contains("status code: 4") => {
                    StorageError::Remote {
                        key,
                        reason: format!("{reason} ({NO_CONDITIONAL_PUTS})"),
                    }
                }
                other => other,
            }),
        }
    }

    /// A listing of `prefix` as a stream, from its start or from the page
    /// `token` names: one request per page, made as the stream is polled.
    fn pages_from(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        let prefix = prefix.to_string();
        // state: the next page's token (None for the first), or None once the last page was read
        futures::stream::try_unfold(Some(token), move |state| {
            let prefix = prefix.clone();
            async move {
                let Some(token) = state else { return Ok(None) };
                let page = self.page(&prefix, false, token).await?;
                let items: Vec<Result<ObjectMeta, StorageError>> = page
                    .result
                    .objects
                    .into_iter()
                    .map(|m| Ok(self.meta(m)))
                    .collect();
                let next = page.page_token.map(Some);
                Ok(Some((futures::stream::iter(items), next)))
            }
        })
        .try_flatten()
        .boxed()
    }

    /// A page that came back full and without a continuation token is checked
    /// with one more request, for one key after its last: an S3-compatible
    /// store that knows only ListObjects version 1 ignores `list-type=2` and
    /// answers every request with the first page, `IsTruncated` and no token,
    /// which object_store reads as the end of the listing. A registry listed
    /// in part looks like one whose manifests are gone. A store that follows
    /// ListObjectsV2 answers the check with nothing; one that ignores
    /// `start-after` too answers with the first key again. Costs a request
    /// only when the last page of a listing is exactly full.
    async fn check_last_page(
        &self,
        prefix: &str,
        prefix_arg: Option<&str>,
        delimiter: bool,
        page: &object_store::ListResult,
    ) -> Result<(), StorageError> {
        let asked = self.page_size.unwrap_or(self.service.max_list_page());
        let listed = page.objects.len() + page.common_prefixes.len();
        if listed < asked {
            return Ok(());
        }
        // past everything the page holds: its greatest key, or past every key
        // under its greatest common prefix (registry keys are ASCII)
        let last_key = page.objects.iter().map(|m| m.location.to_string()).max();
        let past_prefix = page
            .common_prefixes
            .iter()
            .map(|p| format!("{p}/\u{10FFFF}"))
            .max();
        let Some(offset) = last_key.max(past_prefix) else {
            return Ok(());
        };
        let opts = PaginatedListOptions {
            delimiter: delimiter.then_some(Cow::Borrowed("/")),
            max_keys: Some(1),
            offset: Some(offset),
            ..Default::default()
        };
        let after = self.list_request(prefix, prefix_arg, opts).await?;
        if after.result.objects.is_empty() && after.result.common_prefixes.is_empty() {
            return Ok(());
        }
        Err(StorageError::Remote {
            key: prefix.to_string(),
            reason: format!(
                "{}: a listing ended on a full page of {listed} keys without a continuation token, yet the \
                 store lists keys after the page's last; it does not follow ListObjectsV2 (list-type=2) and \
                 cut the listing short (registry-gc needs ListObjectsV2; if the store answers fewer keys a \
                 page than it is asked, set list_page_size to its page size)",
                self.location
            ),
        })
    }

    /// One LIST request, counted (and held as in flight) while it runs, for
    /// the raw `prefix_arg` (the root included); errors name `prefix`.
    async fn list_request(
        &self,
        prefix: &str,
        prefix_arg: Option<&str>,
        opts: PaginatedListOptions,
    ) -> Result<object_store::list::PaginatedListResult, StorageError> {
        let _in_flight = self.counts.list_in_flight();
        self.store
            .list_paginated(prefix_arg, opts)
            .await
            .map_err(|e| self.error(prefix, e))
    }

    /// One page of a listing: one request.
    async fn page(
        &self,
        prefix: &str,
        delimiter: bool,
        token: Option<String>,
    ) -> Result<object_store::list::PaginatedListResult, StorageError> {
        let places = self.list_places.read().expect("not poisoned").clone();
        let _place = match &places {
            Some(places) => Some(places.acquire().await.expect("never closed")),
            None => None,
        };
        let full = self.full(prefix);
        let opts = PaginatedListOptions {
            delimiter: delimiter.then_some(Cow::Borrowed("/")),
            page_token: token,
            max_keys: self.page_size,
            ..Default::default()
        };
        let prefix_arg = if full.is_empty() {
            None
        } else {
            Some(full.as_str())
        };
        let mut page = self.list_request(prefix, prefix_arg, opts).await?;
        if page.page_token.is_none() && self.service == Service::S3 {
            self.check_last_page(prefix, prefix_arg, delimiter, &page.result)
                .await?;
        }
        // the object that is the prefix itself: object_store's Azure client
        // leaves it out, so every service does
        page.result
            .objects
            .retain(|m| lists(&full, m.location.as_ref()));
        Ok(page)
    }
}

#[async_trait]
impl Storage for ObjectStorage {
    fn describe(&self) -> String {
        self.location.clone()
    }

    fn counts(&self) -> &RequestCounts {
        &self.counts
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        self.pages_from(prefix, None)
    }

    async fn list_dir(&self, prefix: &str) -> Result<DirListing, StorageError> {
        let mut listing = DirListing::default();
        let mut token = None;
        loop {
            let page = self.page(prefix, true, token).await?;
            listing.prefixes.extend(
                page.result
                    .common_prefixes
                    .iter()
                    .map(|p| format!("{}/", self.key_of(p.as_ref()))),
            );
            listing
                .objects
                .extend(page.result.objects.into_iter().map(|m| self.meta(m)));
            match page.page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        listing.prefixes.sort();
        listing.prefixes.dedup();
        listing.objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listing)
    }

    async fn get(&self, key: &str, limit: u64) -> Result<Bytes, StorageError> {
        let path = self.path(key)?;
        self.counts.get(1);
        let result = self
            .store
            .get_opts(&path, GetOptions::default())
            .await
            .map_err(|e| self.error(key, e))?;
        if result.meta.size > limit {
            return Err(StorageError::TooLarge {
                key: key.to_string(),
                size: result.meta.size,
                limit,
            });
        }
        result.bytes().await.map_err(|e| self.error(key, e))
    }

    async fn get_stream(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        let path = self.path(key)?;
        self.counts.get(1);
        let result = self
            .store
            .get_opts(&path, GetOptions::default())
            .await
            .map_err(|e| self.error(key, e))?;
        // A failure mid-stream (after the request succeeded) is a transfer error.
        let key = self.key_in(key);
        Ok(result
            .into_stream()
            .map_err(move |e| StorageError::Remote {
                key: key.clone(),
                reason: one_line(&redact(&e.to_string())),
            })
            .boxed())
    }

    async fn delete_batch(&self, keys: &[String]) -> Vec<Result<(), StorageError>> {
        let mut paths = Vec::with_capacity(keys.len());
        let mut results: Vec<Option<Result<(), StorageError>>> = Vec::with_capacity(keys.len());
        for key in keys {
            match self.path(key) {
                Ok(p) => {
                    paths.push(p);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        // Each path goes in a bulk request (S3, Azure) or alone: GCS has no
        // bulk delete, and an S3 key that names an error code object_store
        // retries would make every DeleteObjects answer that names it read as
        // that error (`answer_reads_as_error`).
        let alone: Vec<bool> = paths
            .iter()
            .map(|p| {
                self.service == Service::Gcs
                    || (self.single_deletes.is_some() && answer_reads_as_error(self.service, p))
            })
            .collect();
        let (mut single, mut bulk) = (Vec::new(), Vec::new());
        for (p, alone) in paths.into_iter().zip(&alone) {
            if *alone {
                single.push(p);
            } else {
                bulk.push(p);
            }
        }
        let bulk_requests = if self.bulk_deletes {
            bulk.len().div_ceil(self.service.delete_batch())
        } else {
            bulk.len()
        };
        self.counts.delete((single.len() + bulk_requests) as u64);
        let mut bulk_results = self.delete_in_bulk(bulk).await.into_iter();
        let single_store = self.single_deletes.as_ref().unwrap_or(&self.store);
        let mut single_results = futures::stream::iter(single)
            .map(|p| async move { single_store.delete(&p).await })
            .buffered(self.gcs_delete_concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter();
        let outcome: Vec<Option<Result<(), object_store::Error>>> = alone
            .iter()
            .map(|alone| {
                if *alone {
                    single_results.next()
                } else {
                    bulk_results.next()
                }
            })
            .collect();
        let mut outcome = outcome.into_iter();
        results
            .into_iter()
            .zip(keys)
            .map(|(r, key)| match r {
                Some(err) => err,
                None => match outcome.next().flatten() {
                    Some(Ok(())) => Ok(()),
                    Some(Err(e)) if self.key_was_gone(&e) => Ok(()),
                    Some(Err(e)) => Err(self.delete_error(key, e)),
                    None => Err(StorageError::Remote {
                        key: key.clone(),
                        reason: "no result for this key".into(),
                    }),
                },
            })
            .collect()
    }

    fn max_delete_batch(&self) -> usize {
        self.service.delete_batch()
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        let path = self.path(key)?;
        self.counts.put(1);
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.error(key, e))
    }

    async fn stat_batch(&self, keys: &[String]) -> Vec<Result<ObjectMeta, StorageError>> {
        let mut results = Vec::with_capacity(keys.len());
        for key in keys {
            let path = match self.path(key) {
                Ok(path) => path,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            self.counts.head(1);
            results.push(
                self.store
                    .head(&path)
                    .await
                    .map(|m| self.meta(m))
                    .map_err(|e| self.error(key, e)),
            );
        }
        results
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let path = self.path(key)?;
        self.counts.head(1);
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(key, e)),
        }
    }

    async fn move_batch(
        &self,
        moves: &[(String, String)],
        mode: MoveMode,
    ) -> Vec<Result<Moved, StorageError>> {
        // Copies first, concurrently (no store has a bulk copy); then the sources
        // of the copies that landed, in one bulk delete.
        let mut results: Vec<Result<Moved, StorageError>> = futures::stream::iter(0..moves.len())
            .map(|i| self.copy_one(&moves[i].0, &moves[i].1, mode))
            .buffered(self.gcs_delete_concurrency)
            .collect()
            .await;
        let copied: Vec<usize> = (0..moves.len())
            .filter(|&i| matches!(results[i], Ok(Moved::Moved)))
            .collect();
        let sources: Vec<String> = copied.iter().map(|&i| moves[i].0.clone()).collect();
        for (i, deleted) in copied.into_iter().zip(self.delete_batch(&sources).await) {
            if let Err(e) = deleted {
                results[i] = Err(e);
            }
        }
        results
    }

    fn bulk_delete_size(&self) -> usize {
        match self.service {
            Service::S3 | Service::Azure => self.service.delete_batch(),
            Service::Gcs => 1,
        }
    }

    fn list_page_size(&self) -> Option<usize> {
        Some(self.page_size.unwrap_or(self.service.max_list_page()))
    }

    fn limit_list_requests(&self, most: Option<usize>) {
        *self.list_places.write().expect("not poisoned") =
            most.map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1))));
    }

    /// distribution 2.x's Azure driver names each blob by its path, leading
    /// `/` and all (`/docker/registry/v2/...`, a folder with no name in the
    /// portal); distribution 3's driver, and GitLab's with
    /// `trimlegacyrootprefix`, write names without it. object_store's paths
    /// cannot begin with `/`, so such a registry can be seen (a listing takes
    /// any prefix) but not read or deleted from.
    async fn unreachable_registry(&self) -> Result<Option<String>, StorageError> {
        if self.service != Service::Azure {
            return Ok(None);
        }
        let legacy = format!("/{}", self.full(crate::layout::V2));
        let opts = PaginatedListOptions {
            max_keys: Some(1),
            ..Default::default()
        };
        let page = self.list_request(&legacy, Some(&legacy), opts).await?;
        if page.result.objects.is_empty() {
            return Ok(None);
        }
        Ok(Some(format!(
            "the container holds a registry under {legacy}, with a leading `/`, as distribution 2.x's \
             Azure driver names blobs; registry-gc's storage client (object_store) cannot address names \
             that begin with `/`, so it cannot collect this registry (distribution 3's Azure driver, and \
             GitLab's with trimlegacyrootprefix: true, write names without it)"
        )))
    }

    async fn list_first_page(&self, prefix: &str) -> Result<Option<FirstPage<'_>>, StorageError> {
        let page = self.page(prefix, false, None).await?;
        let mut objects: Vec<ObjectMeta> = page
            .result
            .objects
            .into_iter()
            .map(|m| self.meta(m))
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let rest = page
            .page_token
            .map(|token| self.pages_from(prefix, Some(token)));
        Ok(Some(FirstPage { objects, rest }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_error_bodies_become_one_line() {
        let raw = "Error performing GET http://h/c in 5ms - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?>\n<Error>\n  <Code>AuthorizationFailure</Code>\n  <Message>Server failed to authenticate the request.\nRequestId:b6</Message>\n</Error>";
        assert_eq!(
            one_line(raw),
            "Error performing GET http://h/c in 5ms - Server returned non-2xx status code: 403 Forbidden: AuthorizationFailure: Server failed to authenticate the request."
        );
        assert_eq!(one_line("a\n  b"), "a b");
    }

    /// object_store's own wording of a failure to get credentials is one,
    /// wherever the request went; a data request's failure is not, whatever
    /// its bucket, root or key are named.
    #[test]
    fn credential_failures_are_told_by_object_stores_words_not_by_keys() {
        for text in [
            "Generic S3 error: Error performing PUT http://169.254.169.254/latest/api/token in 1.002s, after 3 retries, max_retries: 3, retry_timeout: 180s  - HTTP error: error sending request",
            "Generic S3 error: Error performing GET http://[fd00:ec2::254]/latest/meta-data/iam/security-credentials/ in 3ms - Server returned non-2xx status code: 404 Not Found: ",
            "Generic S3 error: Error performing GET http://169.254.170.2/v2/credentials/8d2f in 2ms - HTTP error: error sending request",
            "Generic S3 error: Error performing POST REDACTED in 84ms - HTTP error: error sending request",
            "Generic S3 error: Failed to read token file '/var/run/secrets/eks.amazonaws.com/serviceaccount/token': No such file or directory (os error 2)",
            "Generic S3 error: Invalid AssumeRoleWithWebIdentity response: missing field `AssumeRoleWithWebIdentityResult`",
            "Generic S3 error: Error performing CreateSession request: Error performing GET https://b--use1-az4--x-s3.s3express-use1-az4.us-east-1.amazonaws.com/?session in 9ms - HTTP error: error sending request",
            "Generic S3 error: AWS profile \"prod\" gave no credentials: the SSO session has expired",
            "Generic MicrosoftAzure error: Error performing token request: Error performing POST https://login.microsoftonline.com/tid/oauth2/v2.0/token in 120ms - Server returned non-2xx status code: 400 Bad Request: {\"error\":\"invalid_client\"}",
            "Generic MicrosoftAzure error: Error performing token request: Error performing GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=2019-08-01&resource=https://storage.azure.com in 3ms - HTTP error: error sending request",
            "Generic MicrosoftAzure error: Error reading federated token file ",
            "Generic MicrosoftAzure error: 'az account get-access-token' command failed: Please run 'az login' to setup account.",
            "Generic GCS error: Error performing token request: Error performing GET http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token in 2ms - HTTP error: error sending request",
            "Generic GCS error: Error getting token response body: HTTP error: error decoding response body",
        ] {
            let text = one_line(&redact(text));
            assert!(is_credential_failure(&text), "{text}");
        }
        for text in [
            "Generic S3 error: Error performing GET http://127.0.0.1:9000/credential-bucket/r/docker/registry/v2/repositories/ml/metadata-api/_manifests/tags/v1/current/link in 1ms - Server returned non-2xx status code: 400 Bad Request: <?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InvalidArgument</Code><Message>Invalid argument.</Message><Key>docker/registry/v2/repositories/ml/metadata-api/_manifests/tags/v1/current/link</Key></Error>",
            "Generic S3 error: Error performing GET https://s3.eu-west-1.amazonaws.com/token-request.credentials.corp/docker/registry/v2/repositories/token-file/_layers/ in 5ms - HTTP error: error sending request",
            "Generic S3 error: Error performing GET http://metadata-store.corp:9000/reg/docker/registry/v2/blobs/ in 5ms - Server returned non-2xx status code: 500 Internal Server Error: InternalError: We encountered an internal error, please try again.",
            "Request precondition failure for path docker/registry/v2/repositories/ml/credentials/_manifests/tags/latest/current/link: Error performing PUT http://minio:9000/b/docker/registry/v2/repositories/ml/credentials/_manifests/tags/latest/current/link in 3ms - Server returned non-2xx status code: 412 Precondition Failed: PreconditionFailed: At least one of the pre-conditions you specified did not hold",
            "Generic S3 error: Unable to extract metadata from headers: ETag Header missing from response",
        ] {
            let text = one_line(&redact(text));
            assert!(!is_credential_failure(&text), "{text}");
        }
    }

    /// A refusal is the store's answer, not a tag or repository of that name.
    #[test]
    fn refusals_are_told_by_the_answer_not_by_keys() {
        for text in [
            "The operation lacked the necessary privileges to complete for path docker/registry/v2/blobs/: Error performing GET http://minio:9000/b?list-type=2&prefix=docker%2Fregistry%2Fv2%2Fblobs%2F in 2ms - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access Denied.</Message></Error>",
            "Generic S3 error: Error performing GET http://ceph:7480/b/docker/registry/v2/repositories/app/_layers/ in 4ms - Server returned non-2xx status code: 400 Bad Request: <Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error>",
            "Generic MicrosoftAzure error: Error performing GET https://acct.blob.core.windows.net/c?restype=container&comp=list in 30ms - Server returned non-2xx status code: 403 This request is not authorized to perform this operation.: <?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthorizationFailure</Code><Message>This request is not authorized to perform this operation.\nRequestId:b6</Message></Error>",
        ] {
            let text = one_line(&redact(text));
            assert!(is_refusal(&text), "{text}");
        }
        for text in [
            "Generic S3 error: Error performing GET http://minio:9000/b/docker/registry/v2/repositories/AccessDenied/_manifests/tags/SignatureDoesNotMatch/current/link in 2ms - Server returned non-2xx status code: 400 Bad Request: InvalidArgument: Invalid argument.",
            "Request precondition failure for path docker/registry/v2/repositories/app/_manifests/tags/AccessDenied/current/link: Error performing PUT http://minio:9000/b/docker/registry/v2/repositories/app/_manifests/tags/AccessDenied/current/link in 3ms - Server returned non-2xx status code: 412 Precondition Failed: PreconditionFailed: At least one of the pre-conditions you specified did not hold",
        ] {
            let text = one_line(&redact(text));
            assert!(!is_refusal(&text), "{text}");
        }
    }
}
