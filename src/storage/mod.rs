//! The storage trait every backend implements: the local filesystem (`fs`) and
//! object stores through `object_store` (`object`: S3 and S3-compatibles, Azure
//! Blob, Google Cloud Storage). `open` turns a STORAGE argument into one.
//!
//! Keys are `/`-separated and relative to the registry driver's root directory.
//! The trait is deliberately small so that object stores (S3, Azure Blob, GCS
//! through `object_store`) and the local filesystem have the same shape:
//! list a prefix as a stream, list one level with a delimiter, read a small
//! object, delete a batch with a result per key. `--quarantine`, `restore` and
//! `purge` add the only writes: a small run record (`put`) and server-side moves
//! (`move_batch`).

#[cfg(feature = "aws-profile")]
pub mod aws_profile;
pub mod bulk_answers;
pub mod counts;
pub mod faults;
pub mod fs;
pub mod object;
pub mod open;
pub mod redact;
pub mod wrapper;

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

/// One object as a listing reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    pub etag: Option<String>,
}

impl ObjectMeta {
    /// `last_modified_ms` of an object a listing names without having stat'ed
    /// it (a `Leaf::named`): its size (0 here) and age are unknown until
    /// `stat_batch` is asked.
    pub const NOT_STATED: i64 = i64::MIN;

    pub fn is_stated(&self) -> bool {
        self.last_modified_ms != Self::NOT_STATED
    }
}

/// What `Storage::list_probing` may probe for instead of listing.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// For a directory (its key, ending in `/`), what each of its
    /// subdirectories is probed for, if they are probed.
    pub leaf_of: fn(&str) -> Option<Leaf>,
}

/// What a probed subdirectory holds that the caller needs: one regular file,
/// and possibly one directory below it to list as usual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// The file, as a path relative to the subdirectory (`link`, `current/link`).
    pub file: &'static str,
    /// A directory, relative to the subdirectory, whose contents are listed
    /// (and probed) as any other's, reached without reading the directories
    /// between (`index/sha256` in a tag's directory).
    pub then_list: Option<&'static str>,
    /// Whether the caller needs the file's size and mtime now. When it does
    /// not, a filesystem takes the file to be there from the subdirectory's
    /// name alone and lists it with size 0 and `ObjectMeta::NOT_STATED`, with no system call
    /// per subdirectory; the caller stats the few it turns out to need.
    pub stat: bool,
}

impl Leaf {
    /// A subdirectory that holds one file the caller needs, and nothing else.
    pub const fn file(file: &'static str) -> Leaf {
        Leaf {
            file,
            then_list: None,
            stat: true,
        }
    }

    /// Like `file`, for a caller that needs only the file's key for now.
    pub const fn named(file: &'static str) -> Leaf {
        Leaf {
            file,
            then_list: None,
            stat: false,
        }
    }
}

/// The start of a paged listing: its first page, and the rest.
pub struct FirstPage<'a> {
    /// The first page's objects, sorted by key.
    pub objects: Vec<ObjectMeta>,
    /// The rest of the listing, continuing where the page ended (no request is
    /// made until it is polled); `None` when the page held everything.
    pub rest: Option<BoxStream<'a, Result<ObjectMeta, StorageError>>>,
}

/// One level of a listing with `/` as delimiter.
#[derive(Debug, Default, Clone)]
pub struct DirListing {
    /// Child "directories", each ending with `/`.
    pub prefixes: Vec<String>,
    pub objects: Vec<ObjectMeta>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{key}: not found")]
    NotFound { key: String },
    #[error("{key}: {source}")]
    Io { key: String, source: std::io::Error },
    #[error(
        "{key}: symbolic link {reason}; registry-gc never follows links out of the registry root"
    )]
    Symlink { key: String, reason: String },
    #[error("{key}: object is {size} bytes, larger than the {limit}-byte limit for reading")]
    TooLarge { key: String, size: u64, limit: u64 },
    #[error("{key}: refused: {reason}")]
    Refused { key: String, reason: String },
    /// Credentials missing or rejected, or no permission for the operation.
    #[error("{location}: access denied: {reason}")]
    Access { location: String, reason: String },
    /// Any other failure of a remote store (after its retries).
    #[error("{key}: {reason}")]
    Remote { key: String, reason: String },
}

/// What a move does when its destination already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveMode {
    /// Replace it (quarantine: the destination is the run's own new key, and a
    /// retried move rewrites the same bytes).
    Overwrite,
    /// Leave both where they are (restore: the key the registry has now wins).
    /// A key moved lands dated now, as a copy on an object store is: put back
    /// into a registry in service, it is a write as a push's is, and the
    /// online collection's fence (`--min-age`) must see it as one.
    KeepExisting,
}

/// How one move ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// The object is at the destination and gone from the source.
    Moved,
    /// There was nothing at the source (already moved, or never there).
    SourceMissing,
    /// `KeepExisting` found the destination taken; nothing changed.
    DestinationExists,
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// Where this storage is, for messages and reports. Never contains secrets.
    fn describe(&self) -> String;

    /// The requests this storage has made so far.
    fn counts(&self) -> &counts::RequestCounts;

    /// Every object whose key starts with `prefix` (a plain string prefix), as a
    /// stream (no ordering promised). A prefix with no objects is an empty stream, not an error.
    /// On stores that page, an object whose key is `prefix` itself is not
    /// listed (object_store's Azure client leaves it out, so all of them do):
    /// see `lists`.
    /// Backends with directories also report each empty directory, as a key
    /// ending in `/` with size 0 (object stores have none).
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StorageError>>;

    /// Lists like `list`, for a caller that needs, of the subdirectories of the
    /// directories `probe` names, only their one regular file `leaf` when there
    /// is one (`gc`: blob directories' `data`, digest directories' `link`, a
    /// tag's `current/link`), and the contents of the leaf's `then_list`
    /// directory (a tag's `index/sha256/`). A filesystem stats
    /// `<subdirectory>/<leaf>` (and opens `<subdirectory>/<then_list>`) instead
    /// of reading the directories on the way, and leaves out the rest of a
    /// subdirectory that has them; one without them is read in full. Object
    /// stores list everything, as `list` does.
    fn list_probing(
        &self,
        prefix: &str,
        probe: Probe,
    ) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        let _ = probe;
        self.list(prefix)
    }

    /// One level below `prefix` (which ends with `/` or is empty; on stores
    /// that page, any string prefix, with the same exception as `list`).
    async fn list_dir(&self, prefix: &str) -> Result<DirListing, StorageError>;

    /// Keys one listing request returns, for stores that page (S3 and GCS 1000,
    /// Azure 5000); `None` for a filesystem, where listing is directory reads.
    fn list_page_size(&self) -> Option<usize> {
        None
    }

    /// From now on, at most `most` LIST requests in flight at once (`None`:
    /// no limit, the default), however many listings run: a listing that
    /// splits itself (`listing::running_split`) adds listings as it goes, and
    /// `--concurrency` bounds them all. Stores that page; a filesystem's
    /// walkers are bounded where they are made.
    fn limit_list_requests(&self, most: Option<usize>) {
        let _ = most;
    }

    /// Why a store with nothing under `docker/registry/v2/` may still hold a
    /// registry registry-gc cannot reach: for the "no registry" message, in
    /// place of "point STORAGE at the registry's rootdirectory".
    async fn unreachable_registry(&self) -> Result<Option<String>, StorageError> {
        Ok(None)
    }

    /// The first page of a listing of `prefix` and the rest of it. Only for
    /// stores that page.
    async fn list_first_page(&self, prefix: &str) -> Result<Option<FirstPage<'_>>, StorageError> {
        let _ = prefix;
        Ok(None)
    }

    /// The whole content of one object. Objects larger than `limit` are refused
    /// before they are read.
    async fn get(&self, key: &str, limit: u64) -> Result<Bytes, StorageError>;

    /// How many keys one `get_batch` call should carry: 1 where every read is
    /// a request of its own (object stores, whose reads the caller keeps in
    /// flight concurrently), more where a read costs less than handing it to
    /// another thread and back (a filesystem).
    fn max_get_batch(&self) -> usize {
        1
    }

    /// How many `get_batch` / `stat_batch` calls to keep in flight for
    /// `--concurrency` reads: as many as make `concurrency` keys where every
    /// read is a request of its own.
    fn batches_in_flight(&self, concurrency: usize) -> usize {
        concurrency.div_ceil(self.max_get_batch().max(1)).max(1)
    }

    /// Reads several small objects, returning one result per key in the same
    /// order, as `get` would (each counted as one GET). Read through `get_many`,
    /// which sizes the batches.
    async fn get_batch(&self, keys: &[String], limit: u64) -> Vec<Result<Bytes, StorageError>> {
        let mut results = Vec::with_capacity(keys.len());
        for key in keys {
            results.push(self.get(key, limit).await);
        }
        results
    }

    /// What a listing says of each key (size and mtime; no ETag needed), one
    /// result per key in the same order, each counted as one HEAD: for keys a
    /// listing named without stat'ing them. A filesystem stats in batches of
    /// `max_get_batch`, an object store makes one HEAD request per key (its
    /// listings never leave a key unstated, so this is not on its hot path).
    /// A missing key is `NotFound`, and so, on a filesystem, is a directory
    /// asked for as an object (a key without a trailing `/`): a listing
    /// reports no directory as an object either. A directory asked for as one
    /// (`dir/`) gives its mtime. A symbolic link is resolved and checked as a
    /// listing does.
    async fn stat_batch(&self, keys: &[String]) -> Vec<Result<ObjectMeta, StorageError>>;

    /// The content of one object as a stream of chunks, in order: for reading
    /// objects of any size in bounded memory (`fsck --verify-content` hashes
    /// every blob this way). Counted as one GET. Both backends stream; this
    /// default (one chunk, through `get`) serves wrappers that do not forward it.
    async fn get_stream(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        let bytes = self.get(key, u64::MAX).await?;
        Ok(futures::stream::once(async move { Ok(bytes) }).boxed())
    }

    /// Deletes the keys, returning one result per key in the same order. A key
    /// that is already gone is a success.
    async fn delete_batch(&self, keys: &[String]) -> Vec<Result<(), StorageError>>;

    /// Writes one small object whole (the quarantine's run record), replacing any
    /// object at the key.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError>;

    /// Whether an object exists at `key`.
    async fn exists(&self, key: &str) -> Result<bool, StorageError>;

    /// Moves objects `(from, to)`, returning one result per pair in the same
    /// order: a rename on disk (parent directories created), a server-side copy
    /// then a delete on object stores. A pair whose copy landed but whose source
    /// could not be deleted is an error; moving it again finishes it.
    async fn move_batch(
        &self,
        moves: &[(String, String)],
        mode: MoveMode,
    ) -> Vec<Result<Moved, StorageError>>;

    /// How many keys one `delete_batch` call should carry.
    fn max_delete_batch(&self) -> usize;

    /// How many keys one delete *request* removes (S3 1000, Azure 256; 1 where
    /// there is no bulk delete), for the request floor.
    fn bulk_delete_size(&self) -> usize {
        1
    }

    /// Whether deleting keys can leave empty directories behind (filesystems).
    fn has_directories(&self) -> bool {
        false
    }

    /// Removes the given directories if they are empty, in order; returns how many
    /// were removed. Object stores have no directories and do nothing.
    async fn remove_empty_dirs(&self, dirs: &[String]) -> Result<usize, StorageError> {
        let _ = dirs;
        Ok(0)
    }
}

/// Whether a listing of `prefix` returns `key`: it starts with the prefix
/// and is longer (a store that pages never lists the object that is the
/// prefix itself; such an object comes from its parent's listing instead).
pub fn lists(prefix: &str, key: &str) -> bool {
    key.len() > prefix.len() && key.starts_with(prefix)
}

/// Reads many small objects, `concurrency` of them in flight, in batches of the
/// store's `max_get_batch`, `batches_in_flight` at once (on a filesystem,
/// `concurrency / 4` threads each reading 16 files in turn); each result comes
/// with the item it was asked for and its key, in the order the reads finish.
pub fn get_many<'a, T: Send + 'a>(
    storage: &'a dyn Storage,
    items: impl Iterator<Item = (T, String)> + Send + 'a,
    limit: u64,
    concurrency: usize,
) -> BoxStream<'a, (T, String, Result<Bytes, StorageError>)> {
    in_batches(storage, items, concurrency, move |storage, keys| {
        async move {
            let results = match keys.as_slice() {
                [key] => vec![storage.get(key, limit).await],
                _ => storage.get_batch(&keys, limit).await,
            };
            (keys, results)
        }
        .boxed()
    })
}

/// Stats many objects as `get_many` reads them: `stat_batch` per batch.
pub fn stat_many<'a, T: Send + 'a>(
    storage: &'a dyn Storage,
    items: impl Iterator<Item = (T, String)> + Send + 'a,
    concurrency: usize,
) -> BoxStream<'a, (T, String, Result<ObjectMeta, StorageError>)> {
    in_batches(storage, items, concurrency, |storage, keys| {
        async move {
            let results = storage.stat_batch(&keys).await;
            (keys, results)
        }
        .boxed()
    })
}

/// `items` in batches of the store's `max_get_batch`, `batches_in_flight` of
/// them sent at once with `request`; the keys of a batch are taken from
/// `items` only when it is sent.
fn in_batches<'a, T: Send + 'a, R: Send + 'a>(
    storage: &'a dyn Storage,
    items: impl Iterator<Item = (T, String)> + Send + 'a,
    concurrency: usize,
    request: impl Fn(
            &'a dyn Storage,
            Vec<String>,
        ) -> futures::future::BoxFuture<'a, (Vec<String>, Vec<Result<R, StorageError>>)>
        + Send
        + 'a,
) -> BoxStream<'a, (T, String, Result<R, StorageError>)> {
    let batch = storage.max_get_batch().max(1);
    futures::stream::iter(items)
        .chunks(batch)
        .map(move |chunk| {
            let (items, keys): (Vec<T>, Vec<String>) = chunk.into_iter().unzip();
            let sent = request(storage, keys);
            async move {
                let (keys, results) = sent.await;
                futures::stream::iter(
                    items
                        .into_iter()
                        .zip(keys)
                        .zip(results)
                        .map(|((item, key), result)| (item, key, result)),
                )
            }
        })
        .buffer_unordered(storage.batches_in_flight(concurrency))
        .flatten()
        .boxed()
}

pub fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => duration_ms(d),
        Err(e) => -duration_ms(e.duration()),
    }
}

/// A duration in milliseconds, saturating: an age past what an `i64` holds
/// (`--min-age 1000000000y`, meant as "never") stays the longest age, never
/// wrapping into a negative one that would make everything old.
pub fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
