//! The local filesystem backend: a native walker rather than a generic client,
//! because listing is the cost to beat on disk. Directories are recognised from
//! the directory entry (no stat); only files are stat'ed, for size and mtime.
//!
//! Symbolic links are resolved, never trusted: one that points inside the root is
//! followed (with loop detection), one that is broken or points outside the root
//! is an error, so the listing is incomplete and nothing is deleted.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc;

use std::sync::Arc;

use super::counts::RequestCounts;
use super::{system_time_ms, DirListing, MoveMode, Moved, ObjectMeta, Storage, StorageError};

/// Keys removed per blocking task; batches run concurrently in the sweep.
const DELETE_BATCH: usize = 256;
/// Keys buffered per listing stream: enough to keep a walker busy, few enough
/// that dozens of concurrent streams hold little memory.
const LIST_CHANNEL: usize = 64;
/// Bytes read per blocking task when streaming an object.
const STREAM_CHUNK: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
    counts: Arc<RequestCounts>,
}

impl FsStorage {
    /// Opens the registry root (the directory that holds `docker/registry/v2`).
    /// The root itself may be a symbolic link; it is resolved once here.
    pub fn open(root: &Path) -> Result<Self, StorageError> {
        let shown = root.display().to_string();
        let root = fs::canonicalize(root).map_err(|source| StorageError::Io { key: shown.clone(), source })?;
        if !root.is_dir() {
            return Err(StorageError::Io {
                key: shown,
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
            });
        }
        Ok(FsStorage { root, counts: Arc::default() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps a key to a path under the root, refusing anything that could escape it.
    fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        let rel = Path::new(key.trim_end_matches('/'));
        let clean = rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !clean || key.contains("//") {
            return Err(StorageError::Refused { key: key.to_string(), reason: "not a plain relative key".into() });
        }
        Ok(self.root.join(rel))
    }

    /// Resolves a path through any symbolic links and checks it stays in the root.
    fn inside_root(&self, key: &str, path: &Path) -> Result<PathBuf, StorageError> {
        match fs::canonicalize(path) {
            Ok(real) if real.starts_with(&self.root) => Ok(real),
            Ok(real) => Err(StorageError::Symlink {
                key: key.to_string(),
                reason: format!("points outside the registry root, to {}", real.display()),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(path).is_ok() => {
                Err(StorageError::Symlink { key: key.to_string(), reason: "is broken (its target does not exist)".into() })
            }
            Err(source) => Err(io_error(key, source)),
        }
    }
}

fn io_error(key: &str, source: io::Error) -> StorageError {
    if source.kind() == io::ErrorKind::NotFound {
        StorageError::NotFound { key: key.to_string() }
    } else {
        StorageError::Io { key: key.to_string(), source }
    }
}

/// A blocking task that did not finish (panicked or was cancelled).
fn task_failed(key: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StorageError {
    StorageError::Io { key: key.to_string(), source: io::Error::other(e) }
}

fn meta_of(key: String, md: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: md.len(),
        last_modified_ms: md.modified().map(system_time_ms).unwrap_or(0),
        etag: None,
    }
}

/// What one directory entry turned out to be after resolving links.
enum Entry {
    /// A directory to descend into, by name (its key and path are rebuilt from
    /// the parent's when it is read: a walker holds thousands of pending
    /// directories, and full keys and paths for each would be most of the
    /// listing's memory). `real` is the resolved path of a followed link.
    Dir { name: Box<str>, real: Option<PathBuf> },
    File(ObjectMeta),
}

/// A directory being walked: the subdirectories still to read.
struct Frame {
    dir: PathBuf,
    prefix: String,
    pending: Vec<(Box<str>, Option<PathBuf>)>,
}

impl FsStorage {
    /// What a directory entry is. Directories are known from the entry itself (no
    /// stat); files are stat'ed relative to the open directory (`fstatat`), for
    /// size and mtime; links are resolved and checked.
    fn resolve_entry(&self, prefix: &str, name: &str, entry: &fs::DirEntry, ft: fs::FileType) -> Result<Entry, StorageError> {
        if ft.is_dir() {
            return Ok(Entry::Dir { name: name.into(), real: None });
        }
        let key = format!("{prefix}{name}");
        if ft.is_symlink() {
            let real = self.inside_root(&key, &entry.path())?;
            let md = fs::metadata(&real).map_err(|e| io_error(&key, e))?;
            return Ok(if md.is_dir() { Entry::Dir { name: name.into(), real: Some(real) } } else { Entry::File(meta_of(key, &md)) });
        }
        let md = entry.metadata().map_err(|e| io_error(&key, e))?;
        Ok(Entry::File(meta_of(key, &md)))
    }

    /// Reads one directory level. `prefix` is the key of `dir` with a trailing
    /// `/` (or empty for the root); `filter` keeps only names starting with it.
    fn read_level(&self, dir: &Path, prefix: &str, filter: Option<&str>) -> Result<Vec<Entry>, StorageError> {
        self.counts.list(1);
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(prefix.trim_end_matches('/'), e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(prefix.trim_end_matches('/'), e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                let key = format!("{prefix}{}", name.to_string_lossy());
                return Err(StorageError::Refused { key, reason: "file name is not valid UTF-8".into() });
            };
            if filter.is_some_and(|f| !name.starts_with(f)) {
                continue;
            }
            let ft = entry.file_type().map_err(|e| io_error(&format!("{prefix}{name}"), e))?;
            out.push(self.resolve_entry(prefix, name, &entry, ft)?);
        }
        Ok(out)
    }

    /// Depth-first walk sending every file below `dir` to `tx`. Paths on the
    /// stack are resolved (the start is canonicalized once, and links are
    /// resolved when followed), so a link whose target contains the directory
    /// it is found in is a loop, caught without resolving every directory.
    fn walk(&self, dir: PathBuf, prefix: String, filter: Option<String>, tx: &mpsc::Sender<Result<ObjectMeta, StorageError>>) {
        let start = match self.inside_root(prefix.trim_end_matches('/'), &dir) {
            Ok(real) => real,
            Err(StorageError::NotFound { .. }) => return, // nothing under this prefix
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let mut followed: HashSet<PathBuf> = HashSet::new();
        let mut frames: Vec<Frame> = Vec::new();
        let mut next = Some((start, prefix, filter));
        loop {
            let (dir, prefix, filter) = match next.take() {
                Some(level) => level,
                None => {
                    let Some(top) = frames.last_mut() else { return };
                    let Some((name, real)) = top.pending.pop() else {
                        frames.pop();
                        continue;
                    };
                    let key = format!("{}{name}", top.prefix);
                    let via_link = real.is_some();
                    let path = real.unwrap_or_else(|| top.dir.join(&*name));
                    if via_link && (top.dir.starts_with(&path) || !followed.insert(path.clone())) {
                        let reason = "forms a loop or a second path to one directory".to_string();
                        let _ = tx.blocking_send(Err(StorageError::Symlink { key, reason }));
                        return;
                    }
                    (path, format!("{key}/"), None)
                }
            };
            let entries = match self.read_level(&dir, &prefix, filter.as_deref()) {
                Ok(entries) => entries,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            if entries.is_empty() && filter.is_none() && !prefix.is_empty() {
                // An empty directory: reported so that the collector can remove the
                // ones the registry leaves behind (a manifest deleted through the API
                // leaves its revision directory).
                let modified = fs::metadata(&dir).ok().and_then(|m| m.modified().ok()).map(system_time_ms).unwrap_or(0);
                let meta = ObjectMeta { key: prefix.clone(), size: 0, last_modified_ms: modified, etag: None };
                if tx.blocking_send(Ok(meta)).is_err() {
                    return;
                }
            }
            let mut pending = Vec::new();
            for entry in entries {
                match entry {
                    Entry::Dir { name, real } => pending.push((name, real)),
                    Entry::File(meta) => {
                        if tx.blocking_send(Ok(meta)).is_err() {
                            return; // the consumer stopped listening
                        }
                    }
                }
            }
            if !pending.is_empty() {
                frames.push(Frame { dir, prefix, pending });
            }
        }
    }

    /// The directory to read for a prefix, and the name filter for its first level.
    fn split_prefix(&self, prefix: &str) -> Result<(PathBuf, String, Option<String>), StorageError> {
        if prefix.is_empty() {
            return Ok((self.root.clone(), String::new(), None));
        }
        match prefix.rfind('/') {
            Some(i) if i + 1 == prefix.len() => Ok((self.path_of(prefix)?, prefix.to_string(), None)),
            Some(i) => Ok((self.path_of(&prefix[..=i])?, prefix[..=i].to_string(), Some(prefix[i + 1..].to_string()))),
            None => Ok((self.root.clone(), String::new(), Some(prefix.to_string()))),
        }
    }
}

#[async_trait]
impl Storage for FsStorage {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn counts(&self) -> &RequestCounts {
        &self.counts
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        let (dir, key_prefix, filter) = match self.split_prefix(prefix) {
            Ok(parts) => parts,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        let (tx, mut rx) = mpsc::channel(LIST_CHANNEL);
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.walk(dir, key_prefix, filter, &tx));
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }

    async fn list_dir(&self, prefix: &str) -> Result<DirListing, StorageError> {
        let (dir, key_prefix, filter) = self.split_prefix(prefix)?;
        let this = self.clone();
        let level_prefix = key_prefix.clone();
        let entries = tokio::task::spawn_blocking(move || this.read_level(&dir, &key_prefix, filter.as_deref()))
            .await
            .map_err(|e| task_failed(prefix, e))??;
        let mut listing = DirListing::default();
        for entry in entries {
            match entry {
                Entry::Dir { name, .. } => listing.prefixes.push(format!("{level_prefix}{name}/")),
                Entry::File(meta) => listing.objects.push(meta),
            }
        }
        listing.prefixes.sort();
        listing.objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listing)
    }

    async fn get(&self, key: &str, limit: u64) -> Result<Bytes, StorageError> {
        let path = self.path_of(key)?;
        self.counts.get(1);
        let this = self.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let real = this.inside_root(&key, &path)?;
            let md = fs::metadata(&real).map_err(|e| io_error(&key, e))?;
            if md.len() > limit {
                return Err(StorageError::TooLarge { key, size: md.len(), limit });
            }
            fs::read(&real).map(Bytes::from).map_err(|e| io_error(&key, e))
        })
        .await
        .map_err(|e| task_failed("", e))?
    }

    async fn get_stream(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        let path = self.path_of(key)?;
        self.counts.get(1);
        let this = self.clone();
        let owned = key.to_string();
        let file = tokio::task::spawn_blocking(move || {
            let real = this.inside_root(&owned, &path)?;
            fs::File::open(&real).map_err(|e| io_error(&owned, e))
        })
        .await
        .map_err(|e| task_failed(key, e))??;
        // Each chunk is read on the blocking pool; the file moves in and out of
        // the task, so the stream holds one open file and one chunk.
        let key = key.to_string();
        let chunks = futures::stream::unfold(Some(file), move |state| {
            let key = key.clone();
            async move {
                let mut file = state?;
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; STREAM_CHUNK];
                    let n = io::Read::read(&mut file, &mut buf)?;
                    buf.truncate(n);
                    Ok::<_, io::Error>((file, buf))
                })
                .await;
                match read {
                    Ok(Ok((_, buf))) if buf.is_empty() => None,
                    Ok(Ok((file, buf))) => Some((Ok(Bytes::from(buf)), Some(file))),
                    Ok(Err(e)) => Some((Err(io_error(&key, e)), None)),
                    Err(e) => Some((Err(task_failed(&key, e)), None)),
                }
            }
        });
        Ok(chunks.boxed())
    }

    async fn delete_batch(&self, keys: &[String]) -> Vec<Result<(), StorageError>> {
        let this = self.clone();
        let keys = keys.to_vec();
        let n = keys.len();
        tokio::task::spawn_blocking(move || keys.iter().map(|k| this.delete_one(k)).collect())
            .await
            .unwrap_or_else(|e| {
                let reason = e.to_string();
                (0..n).map(|_| Err(task_failed("", reason.clone()))).collect()
            })
    }

    fn max_delete_batch(&self) -> usize {
        DELETE_BATCH
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        self.counts.put(1);
        let this = self.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            this.make_parent(&key, &path)?;
            // written beside and renamed over, so that a reader never sees half a record
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            fs::write(&tmp, &bytes).map_err(|e| io_error(&key, e))?;
            fs::rename(&tmp, &path).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                io_error(&key, e)
            })
        })
        .await
        .map_err(|e| task_failed("", e))?
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let path = self.path_of(key)?;
        self.counts.head(1);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(key, e)),
        }
    }

    async fn move_batch(&self, moves: &[(String, String)], mode: MoveMode) -> Vec<Result<Moved, StorageError>> {
        let this = self.clone();
        let moves = moves.to_vec();
        let n = moves.len();
        tokio::task::spawn_blocking(move || moves.iter().map(|(from, to)| this.move_one(from, to, mode)).collect())
            .await
            .unwrap_or_else(|e| {
                let reason = e.to_string();
                (0..n).map(|_| Err(task_failed("", reason.clone()))).collect()
            })
    }

    fn has_directories(&self) -> bool {
        true
    }

    async fn remove_empty_dirs(&self, dirs: &[String]) -> Result<usize, StorageError> {
        let this = self.clone();
        let dirs = dirs.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            for dir in &dirs {
                let path = this.path_of(dir)?;
                if path == this.root {
                    continue;
                }
                // not empty, already gone, or not a directory: leave it be
                if fs::remove_dir(&path).is_ok() {
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| task_failed("", e))?
    }
}

impl FsStorage {
    /// Creates the parent directories of `path`, refusing to create them through
    /// a link that leads out of the root.
    fn make_parent(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let Some(parent) = path.parent() else { return Ok(()) };
        let existing = parent.ancestors().find(|a| fs::symlink_metadata(a).is_ok()).unwrap_or(&self.root);
        self.inside_root(key, existing)?;
        fs::create_dir_all(parent).map_err(|e| io_error(key, e))?;
        self.inside_root(key, parent).map(|_| ())
    }

    /// One move: a rename, both ends inside the root (one filesystem, so never a
    /// copy). Without overwriting, a hard link claims the destination atomically
    /// (it fails if the destination exists) and the source is then unlinked; the
    /// file keeps its inode, bytes and mtime either way.
    fn move_one(&self, from: &str, to: &str, mode: MoveMode) -> Result<Moved, StorageError> {
        let src = self.path_of(from)?;
        let dst = self.path_of(to)?;
        self.counts.put(1);
        if let Some(parent) = src.parent() {
            match self.inside_root(from, parent) {
                Ok(_) => {}
                Err(StorageError::NotFound { .. }) => return Ok(Moved::SourceMissing),
                Err(e) => return Err(e),
            }
        }
        match fs::symlink_metadata(&src) {
            Ok(md) if md.is_dir() => return Err(StorageError::Refused { key: from.to_string(), reason: "is a directory, not an object".into() }),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Moved::SourceMissing),
            Err(e) => return Err(io_error(from, e)),
        }
        self.make_parent(to, &dst)?;
        let rename = || match fs::rename(&src, &dst) {
            Ok(()) => Ok(Moved::Moved),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Moved::SourceMissing),
            Err(e) => Err(io_error(from, e)),
        };
        match mode {
            MoveMode::Overwrite => rename(),
            MoveMode::KeepExisting => match fs::hard_link(&src, &dst) {
                Ok(()) => match fs::remove_file(&src) {
                    Ok(()) => Ok(Moved::Moved),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Moved::Moved),
                    Err(e) => Err(io_error(from, e)),
                },
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Moved::DestinationExists),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Moved::SourceMissing),
                // a filesystem without hard links: check, then rename
                Err(_) if fs::symlink_metadata(&dst).is_ok() => Ok(Moved::DestinationExists),
                Err(_) => rename(),
            },
        }
    }

    fn delete_one(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        self.counts.delete(1);
        // The parent must resolve inside the root: a directory link that points
        // elsewhere must not turn a delete here into a delete there.
        if let Some(parent) = path.parent() {
            match self.inside_root(key, parent) {
                Ok(_) => {}
                Err(StorageError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(key, e)),
        }
    }
}
