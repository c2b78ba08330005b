//! The local filesystem backend: a native walker rather than a generic client,
//! because listing is the cost to beat on disk. Directories are recognised from
//! the directory entry (no stat); only files are stat'ed, for size and mtime.
//!
//! Symbolic links are resolved, never trusted: one that points inside the root is
//! followed (with loop detection), one that is broken or points outside the root
//! is an error, so the listing is incomplete and nothing is deleted.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use rustix::fs::{
    openat, openat2, renameat_with, statat, AtFlags, FileType, Mode, OFlags, RawDir, RenameFlags,
    ResolveFlags, Stat, CWD,
};
use tokio::sync::mpsc;

use std::sync::Arc;

use super::counts::RequestCounts;
use super::{
    system_time_ms, DirListing, Leaf, MoveMode, Moved, ObjectMeta, Probe, Storage, StorageError,
};

/// Keys removed per blocking task; batches run concurrently in the sweep, one
/// per blocking thread (16 at the default concurrency). 64 keep a thread busy
/// for a millisecond or so, long enough that handing it work costs nothing
/// measurable, and hold the keys in flight to about 1,000: at 256 a batch, the
/// rendered keys and their copies for the thread were 1.5 MB of a real
/// `--delete-untagged` run's peak, which a dry run does not have.
const DELETE_BATCH: usize = 64;
/// Keys a walker hands over at once, and batches buffered per listing stream:
/// a sixty-fourth of the thread wake-ups of one key at a time; a batch is
/// some 8 KiB (`ListedBatch`), and at most two per running walker are held.
const LIST_BATCH: usize = 64;
const LIST_CHANNEL: usize = 1;
/// Bytes of directory entries read per `getdents` call (one walker's buffer):
/// a registry directory holds a handful of entries; a blob prefix holds a few
/// thousand and takes a few calls.
const GETDENTS_BUFFER: usize = 16 << 10;
/// Files one blocking task reads for `get_batch`: a sixteenth of the thread
/// hand-offs (two wake-ups each) of one task per file.
const GET_BATCH: usize = 16;
/// The buffer small reads start with: a link or a manifest fits in one read
/// (and the next says end-of-file); a larger file grows it.
const READ_CAPACITY: usize = 8 << 10;
/// Bytes read per blocking task when streaming an object.
const STREAM_CHUNK: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
    /// The root, open: keys are opened beneath it (`openat2` with
    /// `RESOLVE_BENEATH`), the kernel refusing any path that leaves it.
    root_fd: Arc<OwnedFd>,
    counts: Arc<RequestCounts>,
}

impl FsStorage {
    /// Opens the registry root (the directory that holds `docker/registry/v2`).
    /// The root itself may be a symbolic link; it is resolved once here.
    pub fn open(root: &Path) -> Result<Self, StorageError> {
        let shown = root.display().to_string();
        let root = fs::canonicalize(root).map_err(|source| StorageError::Io {
            key: shown.clone(),
            source,
        })?;
        if !root.is_dir() {
            return Err(StorageError::Io {
                key: shown,
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
            });
        }
        let root_fd = open_dir(&root).map_err(|source| StorageError::Io { key: shown, source })?;
        Ok(FsStorage {
            root,
            root_fd: Arc::new(root_fd),
            counts: Arc::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps a key to a path under the root, refusing anything that could escape it.
    fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        let rel = Path::new(key.trim_end_matches('/'));
        let clean = rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !clean || key.contains("//") {
            return Err(StorageError::Refused {
                key: key.to_string(),
                reason: "not a plain relative key".into(),
            });
        }
        Ok(self.root.join(rel))
    }

    /// Opens a key beneath the root in one call, the kernel checking that no
    /// component (links included) leads out of it. `None` when that does not
    /// succeed for any reason (missing, a link out of the root, an absolute link,
    /// a kernel without `openat2`): the caller then takes the resolving path,
    /// which says precisely what is wrong.
    fn open_beneath(&self, key: &str, flags: OFlags) -> Option<OwnedFd> {
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        openat2(
            self.root_fd.as_fd(),
            key.trim_end_matches('/'),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        )
        .ok()
    }

    /// Opens a key's file for reading: beneath the root, or resolved and checked.
    fn open_file(&self, key: &str, path: &Path) -> Result<fs::File, StorageError> {
        if let Some(fd) = self.open_beneath(key, OFlags::RDONLY) {
            return Ok(fs::File::from(fd));
        }
        let real = self.inside_root(key, path)?;
        fs::File::open(&real).map_err(|e| io_error(key, e))
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
                Err(StorageError::Symlink {
                    key: key.to_string(),
                    reason: "is broken (its target does not exist)".into(),
                })
            }
            Err(source) => Err(io_error(key, source)),
        }
    }
}

/// Sets a file's mtime to now, and its access time with it: both set to now
/// take write access to the file (a restorer in the registry's group), where
/// setting the mtime alone takes its ownership.
fn modified_now(path: &Path) -> io::Result<()> {
    use rustix::fs::{Timespec, Timestamps, UTIME_NOW};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        },
        last_modification: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        },
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)
}

/// Gives a directory just made the owner, group and permission bits of
/// `parent` (its parent's metadata), so that the registry, running as its own
/// user, reads and writes it as it does the parent (a push, a tag, a manifest
/// delete). Only root can give a file away: anyone else keeps the directory,
/// with the parent's group where the restorer may give it (as a member of that
/// group). The parent's mode is then the wrong one: the registry no longer
/// reaches the directory as its owner, and an `ops:ops 0750` directory under a
/// `registry:registry 0750` parent shuts it out. So a directory that did not
/// become the parent's own is only widened (see `widened_mode`), never
/// narrowed: the registry keeps at least what the umask gave it.
fn like_its_parent(dir: &Path, parent: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    match std::os::unix::fs::chown(dir, Some(parent.uid()), Some(parent.gid())) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            match std::os::unix::fs::chown(dir, None, Some(parent.gid())) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    let made = fs::symlink_metadata(dir)?;
    let mode = if made.uid() == parent.uid() && made.gid() == parent.gid() {
        parent.mode() & 0o7777
    } else {
        widened_mode(
            made.mode(),
            parent.mode(),
            made.uid() == parent.uid(),
            made.gid() == parent.gid(),
        )
    };
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

/// The mode of a directory that is not its parent's own (see
/// [`like_its_parent`]): never narrower than `made` (the umask's, under which
/// the restorer has at least owner access, to put the key in) or `parent`.
/// The registry's user, the parent's owner, reaches it as its owner when the
/// restorer is that user (nothing more to give: the others' bits are not
/// widened, a directory left open to anyone would stay so were the parent
/// opened later), else as a member of its group (a registry's user is of its
/// own) when it has the parent's group, which then gets the parent owner's
/// bits; otherwise as one of the others.
fn widened_mode(made: u32, parent: u32, same_owner: bool, same_group: bool) -> u32 {
    let mut mode = (made & 0o7777) | (parent & 0o777);
    let owner = (parent & 0o700) >> 6;
    if same_owner {
        // the registry's own: its owner's bits are what it uses
    } else if same_group {
        mode |= owner << 3;
    } else if parent & 0o001 == 0 {
        // a parent that others cannot pass through: only its owner, its
        // group (and whom its ACL names) reach this directory, so the bits
        // for others may carry the owner's; under a parent others do pass
        // through they stay the parent's and the umask's (a world-writable
        // directory is no fix: the registry reads it, and may not write)
        mode |= owner;
    }
    mode
}

fn io_error(key: &str, source: io::Error) -> StorageError {
    if source.kind() == io::ErrorKind::NotFound {
        StorageError::NotFound {
            key: key.to_string(),
        }
    } else {
        StorageError::Io {
            key: key.to_string(),
            source,
        }
    }
}

/// A blocking task that did not finish (panicked or was cancelled).
fn task_failed(key: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StorageError {
    StorageError::Io {
        key: key.to_string(),
        source: io::Error::other(e),
    }
}

/// One error per key of a batch whose blocking task did not finish.
fn each_failed<T>(n: usize, e: tokio::task::JoinError) -> Vec<Result<T, StorageError>> {
    let reason = e.to_string();
    (0..n)
        .map(|_| Err(task_failed("", reason.clone())))
        .collect()
}

fn meta_of(key: String, md: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: md.len(),
        last_modified_ms: md.modified().map(system_time_ms).unwrap_or(0),
        etag: None,
    }
}

/// Milliseconds since the epoch of a stat's mtime (negative before it).
#[allow(clippy::unnecessary_cast)] // the fields are 32-bit on 32-bit targets
fn stat_mtime_ms(st: &Stat) -> i64 {
    st.st_mtime as i64 * 1000 + st.st_mtime_nsec as i64 / 1_000_000
}

/// A stat's answer for `key`: a directory is one only when asked for as one
/// (`dir/`), a file only when not; otherwise not found, as in a listing.
fn object_or_dir(key: String, st: &Stat) -> Result<ObjectMeta, StorageError> {
    let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
    if is_dir != key.ends_with('/') {
        return Err(StorageError::NotFound { key });
    }
    Ok(stat_meta(key, st))
}

fn stat_meta(key: String, st: &Stat) -> ObjectMeta {
    ObjectMeta {
        key,
        size: st.st_size.max(0) as u64,
        last_modified_ms: stat_mtime_ms(st),
        etag: None,
    }
}

/// Opens a directory by path (the start of a walk, or a followed link's target).
fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens a subdirectory relative to its open parent: no path walk from the root
/// for each of a million directories. `NOFOLLOW` because the entry said it is a
/// directory; a link swapped in since then is refused, not followed.
fn open_subdir(parent: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    Ok(openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?)
}

/// What one directory entry turned out to be after resolving links.
enum Entry {
    /// A directory to descend into, by name (its key and path are rebuilt from
    /// the parent's when it is read: a walker holds thousands of pending
    /// directories, and full keys and paths for each would be most of the
    /// listing's memory). `real` is the resolved path of a followed link.
    Dir {
        name: Box<str>,
        real: Option<PathBuf>,
    },
    File(ObjectMeta),
}

/// A directory being walked: open, with the subdirectories still to read.
struct Frame {
    fd: OwnedFd,
    dir: PathBuf,
    prefix: String,
    pending: Vec<(Box<str>, Option<PathBuf>)>,
    /// What this directory's subdirectories are probed for, when the walk's
    /// probe applies to it.
    probe_leaf: Option<Leaf>,
}

/// Where a walk starts, and how it reads.
struct WalkStart {
    dir: PathBuf,
    /// The key of `dir`, with a trailing `/` (empty for the root).
    prefix: String,
    /// Only names in `dir` that start with this.
    filter: Option<String>,
    /// Probe some directories' subdirectories for one file instead of reading
    /// them (see `Storage::list_probing`).
    probe: Option<Probe>,
}

/// A subdirectory's regular file `leaf` (its size and mtime), found by one
/// `fstatat` of `<name>/<leaf>` relative to the open parent instead of opening
/// and reading `<name>` (and the directories between: five system calls each);
/// `path` is the walker's buffer for `<name>/<leaf>`. `None` for
/// anything else (missing, a link, a directory, an error): the caller then
/// reads the subdirectory, which reports it as a full listing would. The stat
/// follows `<name>` and any directory between it and the leaf (a tag's
/// `current`) were they links; the leaf's size and mtime could then come from
/// elsewhere, but nothing is read or deleted through them: reads and deletions
/// resolve beneath the root, and refuse a link out of it.
fn probe_leaf(
    parent: BorrowedFd<'_>,
    name: &str,
    leaf: &str,
    path: &mut String,
) -> Option<(u64, i64)> {
    path.clear();
    path.extend([name, "/", leaf]);
    let st = statat(parent, path.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok()?;
    (FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
        .then(|| (st.st_size.max(0) as u64, stat_mtime_ms(&st)))
}

/// Opens the directory `<name>/<below>` relative to the open parent in one
/// call, refusing links on the way (`None` for that, or anything else): the
/// caller then reads `<name>` in full, which resolves and checks them.
fn open_below(
    parent: BorrowedFd<'_>,
    name: &str,
    below: &str,
    path: &mut String,
) -> Option<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    path.clear();
    path.extend([name, "/", below]);
    openat2(
        parent,
        path.as_str(),
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
    )
    .ok()
}

/// Why a walk stopped early.
enum WalkStop {
    Failed(StorageError),
    /// The consumer dropped the stream.
    Disconnected,
}

/// Objects on their way from a walker to its stream: the keys one after
/// another in one string, so that a batch is two allocations rather than one
/// per key, and each key's `String` is made (and later freed) on the thread
/// that consumes the listing, not handed from thread to thread (freeing
/// another thread's allocations is what contended in the allocator).
struct ListedBatch {
    keys: String,
    /// Where each key ends in `keys`, its size and its mtime (ms).
    objects: Vec<(usize, u64, i64)>,
}

impl ListedBatch {
    fn with_capacity(objects: usize) -> Self {
        ListedBatch {
            keys: String::with_capacity(objects * 128),
            objects: Vec::with_capacity(objects),
        }
    }

    fn push(&mut self, key_parts: &[&str], size: u64, last_modified_ms: i64) {
        self.keys.extend(key_parts.iter().copied());
        self.objects.push((self.keys.len(), size, last_modified_ms));
    }

    fn into_objects(self) -> impl Iterator<Item = ObjectMeta> {
        let mut start = 0;
        self.objects
            .into_iter()
            .map(move |(end, size, last_modified_ms)| {
                let key = self.keys[start..end].to_string();
                start = end;
                ObjectMeta {
                    key,
                    size,
                    last_modified_ms,
                    etag: None,
                }
            })
    }
}

/// Sends a walk's objects in batches: one channel hand-off (and thread wake-up)
/// per batch rather than per key.
struct BatchSender<'a> {
    tx: &'a mpsc::Sender<Result<ListedBatch, StorageError>>,
    batch: ListedBatch,
}

impl BatchSender<'_> {
    fn push(&mut self, meta: ObjectMeta) -> Result<(), WalkStop> {
        self.push_key(&[&meta.key], meta.size, meta.last_modified_ms)
    }

    /// An object whose key is `key_parts` joined.
    fn push_key(
        &mut self,
        key_parts: &[&str],
        size: u64,
        last_modified_ms: i64,
    ) -> Result<(), WalkStop> {
        self.batch.push(key_parts, size, last_modified_ms);
        if self.batch.objects.len() >= LIST_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), WalkStop> {
        if self.batch.objects.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, ListedBatch::with_capacity(LIST_BATCH));
        self.tx
            .blocking_send(Ok(batch))
            .map_err(|_| WalkStop::Disconnected)
    }
}

impl FsStorage {
    /// What a directory entry is. Directories are known from the entry itself (no
    /// stat); files are stat'ed relative to the open directory (`fstatat`), for
    /// size and mtime; links are resolved and checked.
    fn resolve_entry(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        prefix: &str,
        name: &str,
        ft: FileType,
    ) -> Result<Entry, StorageError> {
        if ft == FileType::Directory {
            return Ok(Entry::Dir {
                name: name.into(),
                real: None,
            });
        }
        let key = format!("{prefix}{name}");
        if ft == FileType::Symlink {
            let real = self.inside_root(&key, &dir_path.join(name))?;
            let md = fs::metadata(&real).map_err(|e| io_error(&key, e))?;
            if !md.is_dir() {
                // deleting it unlinks the link, never its target
                return Ok(Entry::File(meta_of(key, &md)));
            }
            // A directory the listing also reads where it is would be listed
            // twice, under two names that mean different things (a blob
            // directory named for one digest holding another's data), and a
            // delete through the link would remove the target's file. Links
            // to directories outside the registry tree (`blobs` moved beside
            // it) are the supported kind.
            let tree = self.root.join(crate::layout::V2.trim_end_matches('/'));
            if fs::canonicalize(&tree).is_ok_and(|tree| real.starts_with(tree)) {
                let reason = format!("points to {}, inside the registry tree: a second path to a directory listed where it is", real.display());
                return Err(StorageError::Symlink { key, reason });
            }
            return Ok(Entry::Dir {
                name: name.into(),
                real: Some(real),
            });
        }
        let st =
            statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| io_error(&key, e.into()))?;
        match FileType::from_raw_mode(st.st_mode) {
            // the entry did not say (DT_UNKNOWN on some filesystems): the stat does
            FileType::Directory if ft == FileType::Unknown => Ok(Entry::Dir {
                name: name.into(),
                real: None,
            }),
            FileType::Symlink if ft == FileType::Unknown => {
                self.resolve_entry(dir, dir_path, prefix, name, FileType::Symlink)
            }
            _ => Ok(Entry::File(stat_meta(key, &st))),
        }
    }

    /// A key's size and mtime: one `fstatat` of its last two components
    /// (`<digest>/data`) relative to the directory above them, opened beneath
    /// the root and kept in `above` for the next key (sorted keys share it: a
    /// blob prefix, a repository's `_layers/sha256`), rather than a walk of
    /// eight components from the root for each. A symbolic link, and anything
    /// that fails there but a missing file, takes the resolving path, which
    /// checks links as the listing does (`resolve_entry`) and names errors.
    fn stat_key(
        &self,
        key: String,
        above: &mut Option<(String, OwnedFd)>,
    ) -> Result<ObjectMeta, StorageError> {
        if let Some(i) = key.rmatch_indices('/').nth(1).map(|(i, _)| i) {
            let (dir, rest) = (&key[..i], &key[i + 1..]);
            if above.as_ref().is_none_or(|(open, _)| open != dir) {
                *above = self
                    .open_beneath(dir, OFlags::PATH | OFlags::DIRECTORY)
                    .map(|fd| (dir.to_string(), fd));
            }
            let plain = !rest
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..");
            if let (Some((_, fd)), true) = (above.as_ref(), plain) {
                match statat(fd, rest, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Symlink => {
                        return object_or_dir(key, &st)
                    }
                    Err(rustix::io::Errno::NOENT) => return Err(StorageError::NotFound { key }),
                    _ => {}
                }
            }
        }
        let path = self.path_of(&key)?;
        let st = statat(
            self.root_fd.as_fd(),
            key.trim_end_matches('/'),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_error(&key, e.into()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
            return object_or_dir(key, &st);
        }
        let real = self.inside_root(&key, &path)?;
        let md = fs::metadata(&real).map_err(|e| io_error(&key, e))?;
        if md.is_dir() != key.ends_with('/') {
            return Err(StorageError::NotFound { key });
        }
        Ok(meta_of(key, &md))
    }

    /// Reads one open directory level. `prefix` is the key of the directory with
    /// a trailing `/` (or empty for the root); `filter` keeps only names
    /// starting with it. `buf` is the walker's reusable `getdents` buffer.
    fn read_level(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        prefix: &str,
        filter: Option<&str>,
        buf: &mut Vec<u8>,
    ) -> Result<Vec<Entry>, StorageError> {
        self.counts.list(1);
        let level_error = |e: rustix::io::Errno| io_error(prefix.trim_end_matches('/'), e.into());
        let mut raw = RawDir::new(dir, buf.spare_capacity_mut());
        let mut out = Vec::new();
        while let Some(entry) = raw.next() {
            let entry = entry.map_err(level_error)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(name) = std::str::from_utf8(name) else {
                let key = format!("{prefix}{}", String::from_utf8_lossy(name));
                return Err(StorageError::Refused {
                    key,
                    reason: "file name is not valid UTF-8".into(),
                });
            };
            if filter.is_some_and(|f| !name.starts_with(f)) {
                continue;
            }
            match self.resolve_entry(dir, dir_path, prefix, name, entry.file_type()) {
                Ok(entry) => out.push(entry),
                // removed since the directory was read (an upload the
                // registry finished and cleared): there is nothing to list,
                // as for a subdirectory gone before it is opened
                Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Depth-first walk sending every file below `dir` to `tx`. Paths on the
    /// stack are resolved (the start is canonicalized once, and links are
    /// resolved when followed), so a link whose target contains the directory
    /// it is found in is a loop, caught without resolving every directory.
    fn walk(&self, start: WalkStart, tx: &mpsc::Sender<Result<ListedBatch, StorageError>>) {
        let mut out = BatchSender {
            tx,
            batch: ListedBatch::with_capacity(LIST_BATCH),
        };
        match self.walk_into(start, &mut out).and_then(|()| out.flush()) {
            Ok(()) | Err(WalkStop::Disconnected) => {}
            Err(WalkStop::Failed(e)) => {
                let _ = tx.blocking_send(Err(e));
            }
        }
    }

    fn walk_into(&self, start: WalkStart, out: &mut BatchSender<'_>) -> Result<(), WalkStop> {
        let WalkStart {
            dir,
            prefix,
            filter,
            probe,
        } = start;
        let start = match self.inside_root(prefix.trim_end_matches('/'), &dir) {
            Ok(real) => real,
            Err(StorageError::NotFound { .. }) => return Ok(()), // nothing under this prefix
            Err(e) => return Err(WalkStop::Failed(e)),
        };
        let start_fd = match open_dir(&start) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(WalkStop::Failed(io_error(prefix.trim_end_matches('/'), e))),
        };
        let mut buf = Vec::with_capacity(GETDENTS_BUFFER);
        // `<subdirectory>/<leaf>` for each probe, in one buffer
        let mut probe_path = String::new();
        let mut followed: HashSet<PathBuf> = HashSet::new();
        let mut frames: Vec<Frame> = Vec::new();
        let mut next = Some((start_fd, start, prefix, filter));
        loop {
            let (fd, dir, prefix, filter) = match next.take() {
                Some(level) => level,
                None => {
                    let Some(top) = frames.last_mut() else {
                        return Ok(());
                    };
                    let Some((name, real)) = top.pending.pop() else {
                        frames.pop();
                        continue;
                    };
                    if let (Some(leaf), None) = (top.probe_leaf, &real) {
                        if !leaf.stat {
                            // named by its directory alone: no system call here
                            out.push_key(
                                &[top.prefix.as_str(), &name, "/", leaf.file],
                                0,
                                ObjectMeta::NOT_STATED,
                            )?;
                            continue;
                        }
                        self.counts.head(1);
                        if let Some((size, modified)) =
                            probe_leaf(top.fd.as_fd(), &name, leaf.file, &mut probe_path)
                        {
                            let leaf_key = [top.prefix.as_str(), &name, "/", leaf.file];
                            let Some(below) = leaf.then_list else {
                                out.push_key(&leaf_key, size, modified)?;
                                continue;
                            };
                            // the leaf's directory is listed next, as if reached
                            // through the ones between
                            if let Some(fd) =
                                open_below(top.fd.as_fd(), &name, below, &mut probe_path)
                            {
                                out.push_key(&leaf_key, size, modified)?;
                                next = Some((
                                    fd,
                                    top.dir.join(&*name).join(below),
                                    format!("{}{name}/{below}/", top.prefix),
                                    None,
                                ));
                                continue;
                            }
                        }
                    }
                    let key = format!("{}{name}", top.prefix);
                    let opened = match &real {
                        Some(real) => {
                            if top.dir.starts_with(real) || !followed.insert(real.clone()) {
                                let reason =
                                    "forms a loop or a second path to one directory".to_string();
                                return Err(WalkStop::Failed(StorageError::Symlink {
                                    key,
                                    reason,
                                }));
                            }
                            open_dir(real)
                        }
                        None => open_subdir(top.fd.as_fd(), &name),
                    };
                    let fd = match opened {
                        Ok(fd) => fd,
                        // removed since its parent was read: nothing left to list
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(WalkStop::Failed(io_error(&key, e))),
                    };
                    let path = real.unwrap_or_else(|| top.dir.join(&*name));
                    (fd, path, format!("{key}/"), None)
                }
            };
            let entries = self
                .read_level(fd.as_fd(), &dir, &prefix, filter.as_deref(), &mut buf)
                .map_err(WalkStop::Failed)?;
            if entries.is_empty() && filter.is_none() && !prefix.is_empty() {
                // An empty directory: reported so that the collector can remove the
                // ones the registry leaves behind (a manifest deleted through the API
                // leaves its revision directory).
                let modified = rustix::fs::fstat(&fd)
                    .map(|st| stat_mtime_ms(&st))
                    .unwrap_or(0);
                out.push(ObjectMeta {
                    key: prefix.clone(),
                    size: 0,
                    last_modified_ms: modified,
                    etag: None,
                })?;
            }
            let mut pending = Vec::new();
            for entry in entries {
                match entry {
                    Entry::Dir { name, real } => pending.push((name, real)),
                    Entry::File(meta) => out.push(meta)?,
                }
            }
            if !pending.is_empty() {
                let probe_leaf = probe.and_then(|p| (p.leaf_of)(&prefix));
                frames.push(Frame {
                    fd,
                    dir,
                    prefix,
                    pending,
                    probe_leaf,
                });
            }
        }
    }

    /// A walk of `prefix` on a blocking thread, as a stream of its keys.
    fn walk_stream(
        &self,
        prefix: &str,
        probe: Option<Probe>,
    ) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        let (dir, key_prefix, filter) = match self.split_prefix(prefix) {
            Ok(parts) => parts,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        let (tx, mut rx) = mpsc::channel(LIST_CHANNEL);
        let this = self.clone();
        let start = WalkStart {
            dir,
            prefix: key_prefix,
            filter,
            probe,
        };
        tokio::task::spawn_blocking(move || this.walk(start, &tx));
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
            .flat_map(|batch| match batch {
                Ok(objects) => futures::stream::iter(objects.into_objects().map(Ok)).left_stream(),
                Err(e) => futures::stream::once(async move { Err(e) }).right_stream(),
            })
            .boxed()
    }

    /// The directory to read for a prefix, and the name filter for its first level.
    fn split_prefix(
        &self,
        prefix: &str,
    ) -> Result<(PathBuf, String, Option<String>), StorageError> {
        if prefix.is_empty() {
            return Ok((self.root.clone(), String::new(), None));
        }
        match prefix.rfind('/') {
            Some(i) if i + 1 == prefix.len() => {
                Ok((self.path_of(prefix)?, prefix.to_string(), None))
            }
            Some(i) => Ok((
                self.path_of(&prefix[..=i])?,
                prefix[..=i].to_string(),
                Some(prefix[i + 1..].to_string()),
            )),
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
        self.walk_stream(prefix, None)
    }

    fn list_probing(
        &self,
        prefix: &str,
        probe: Probe,
    ) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        self.walk_stream(prefix, Some(probe))
    }

    async fn list_dir(&self, prefix: &str) -> Result<DirListing, StorageError> {
        let (dir, key_prefix, filter) = self.split_prefix(prefix)?;
        let this = self.clone();
        let level_prefix = key_prefix.clone();
        let entries = tokio::task::spawn_blocking(move || {
            let fd = match open_dir(&dir) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io_error(key_prefix.trim_end_matches('/'), e)),
            };
            let mut buf = Vec::with_capacity(GETDENTS_BUFFER);
            this.read_level(fd.as_fd(), &dir, &key_prefix, filter.as_deref(), &mut buf)
        })
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
            this.read_small(&key, &path, limit, &mut Vec::with_capacity(READ_CAPACITY))
        })
        .await
        .map_err(|e| task_failed("", e))?
    }

    fn max_get_batch(&self) -> usize {
        GET_BATCH
    }

    /// A batch is a blocking thread, and a cold read waits on the disk: more
    /// threads than cores keep its queue full. A quarter of `--concurrency`
    /// (16 threads by default; 1M keys, cold: 47.5 s against 57.8 s with 4,
    /// warm no slower).
    fn batches_in_flight(&self, concurrency: usize) -> usize {
        concurrency.div_ceil(4).max(1)
    }

    /// The whole batch on one blocking thread, one file after another.
    async fn get_batch(&self, keys: &[String], limit: u64) -> Vec<Result<Bytes, StorageError>> {
        let this = self.clone();
        let keys = keys.to_vec();
        let n = keys.len();
        self.counts.get(n as u64);
        tokio::task::spawn_blocking(move || {
            let mut scratch = Vec::with_capacity(READ_CAPACITY);
            keys.iter()
                .map(|key| this.read_small(key, &this.path_of(key)?, limit, &mut scratch))
                .collect()
        })
        .await
        .unwrap_or_else(|e| each_failed(n, e))
    }

    /// The whole batch on one blocking thread, one `fstatat` each.
    async fn stat_batch(&self, keys: &[String]) -> Vec<Result<ObjectMeta, StorageError>> {
        let this = self.clone();
        let keys = keys.to_vec();
        let n = keys.len();
        self.counts.head(n as u64);
        tokio::task::spawn_blocking(move || {
            let mut above = None;
            keys.into_iter()
                .map(|key| this.stat_key(key, &mut above))
                .collect()
        })
        .await
        .unwrap_or_else(|e| each_failed(n, e))
    }

    async fn get_stream(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        let path = self.path_of(key)?;
        self.counts.get(1);
        let this = self.clone();
        let owned = key.to_string();
        let file = tokio::task::spawn_blocking(move || this.open_file(&owned, &path))
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
            .unwrap_or_else(|e| each_failed(n, e))
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

    async fn move_batch(
        &self,
        moves: &[(String, String)],
        mode: MoveMode,
    ) -> Vec<Result<Moved, StorageError>> {
        let this = self.clone();
        let moves = moves.to_vec();
        let n = moves.len();
        tokio::task::spawn_blocking(move || {
            moves
                .iter()
                .map(|(from, to)| this.move_one(from, to, mode))
                .collect()
        })
        .await
        .unwrap_or_else(|e| each_failed(n, e))
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
                // The parent resolved beneath the root, as a delete's is: a
                // link swapped in since the listing must not take this out of
                // it. Not empty, already gone, not a directory, or a parent
                // that does not resolve: left be.
                if this
                    .unlink_beneath(dir, AtFlags::REMOVEDIR)
                    .is_some_and(|r| r.is_ok())
                {
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
    /// a link that leads out of the root. Each new directory gets the owner,
    /// group and permission bits of the directory it is made in: a restore run
    /// by root (with root's umask) puts registry keys back into directories the
    /// sweep had removed, and the registry, running as its own user, must
    /// still read them and write into them (a push, a tag, a manifest delete).
    fn make_parent(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        let existing = parent
            .ancestors()
            .find(|a| fs::symlink_metadata(a).is_ok())
            .unwrap_or(&self.root);
        self.inside_root(key, existing)?;
        let made: Vec<&Path> = parent.ancestors().take_while(|a| *a != existing).collect();
        if made.is_empty() {
            return self.inside_root(key, parent).map(|_| ());
        }
        let like = fs::metadata(existing).map_err(|e| io_error(key, e))?;
        fs::create_dir_all(parent).map_err(|e| io_error(key, e))?;
        for dir in made.into_iter().rev() {
            like_its_parent(dir, &like).map_err(|e| io_error(key, e))?;
        }
        self.inside_root(key, parent).map(|_| ())
    }

    /// One move: a rename, both ends inside the root (one filesystem, so never a
    /// copy). Without overwriting, a hard link claims the destination atomically
    /// (it fails if the destination exists) and the source is then unlinked. The
    /// file keeps its inode and bytes either way; a quarantine keeps its mtime,
    /// a restore (`KeepExisting`) dates it now (see `MoveMode`).
    fn move_one(&self, from: &str, to: &str, mode: MoveMode) -> Result<Moved, StorageError> {
        self.move_one_dating(from, to, mode, modified_now, |src, dst| {
            fs::hard_link(src, dst)
        })
    }

    /// [`Self::move_one`], dating a restored key with `touch` and claiming its
    /// place with `link` (a test fails either).
    /// The quarantined file is dated *before* anything moves: the link (or
    /// rename) carries the new mtime along, since it is the same inode. Dated
    /// after the move, a failure (EPERM for a restorer that does not own the
    /// file, on the rename path that protected hard links force) left the key
    /// back in place but undated, and the retry, finding the quarantined copy
    /// gone, counted it as in place: the restore said done and the next
    /// collection took the image again at once.
    fn move_one_dating(
        &self,
        from: &str,
        to: &str,
        mode: MoveMode,
        touch: impl Fn(&Path) -> io::Result<()>,
        link: impl Fn(&Path, &Path) -> io::Result<()>,
    ) -> Result<Moved, StorageError> {
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
            Ok(md) if md.is_dir() => {
                return Err(StorageError::Refused {
                    key: from.to_string(),
                    reason: "is a directory, not an object".into(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Moved::SourceMissing),
            Err(e) => return Err(io_error(from, e)),
        }
        if mode == MoveMode::KeepExisting {
            // a key the registry has again stays as it is, and so does its
            // quarantined copy: dated now, it would look new to `purge`, which
            // dates a run by its newest object (the link below still decides,
            // should the key appear between the two)
            if fs::symlink_metadata(&dst).is_ok() {
                return Ok(Moved::DestinationExists);
            }
            match touch(&src) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Moved::SourceMissing),
                Err(e) => {
                    let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                        "; restore as the file's owner or as root"
                    } else {
                        ""
                    };
                    return Err(StorageError::Io {
                        key: to.to_string(),
                        source: io::Error::new(
                            e.kind(),
                            format!(
                                "not put back: could not set the modification time of {from} \
                                 to now, and undated the next collection would take it again \
                                 at once ({e}){hint}"
                            ),
                        ),
                    });
                }
            }
        }
        self.make_parent(to, &dst)?;
        let rename = || match fs::rename(&src, &dst) {
            Ok(()) => Ok(Moved::Moved),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Moved::SourceMissing),
            Err(e) => Err(io_error(from, e)),
        };
        match mode {
            MoveMode::Overwrite => rename(),
            MoveMode::KeepExisting => match link(&src, &dst) {
                Ok(()) => match fs::remove_file(&src) {
                    Ok(()) => Ok(Moved::Moved),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Moved::Moved),
                    Err(e) => Err(io_error(from, e)),
                },
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Moved::DestinationExists),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Moved::SourceMissing),
                // a filesystem without hard links, or one a restorer may not
                // link a file it does not own on (protected hard links): a
                // rename that refuses to replace (`RENAME_NOREPLACE`), and
                // where the filesystem has none (or a seccomp profile of a
                // container refuses the call: EPERM), check, then rename (a
                // key written between the two would be replaced)
                Err(_) => match renameat_with(CWD, &src, CWD, &dst, RenameFlags::NOREPLACE) {
                    Ok(()) => Ok(Moved::Moved),
                    Err(rustix::io::Errno::EXIST) => Ok(Moved::DestinationExists),
                    Err(rustix::io::Errno::NOENT) => Ok(Moved::SourceMissing),
                    Err(
                        rustix::io::Errno::INVAL
                        | rustix::io::Errno::NOSYS
                        | rustix::io::Errno::OPNOTSUPP
                        | rustix::io::Errno::PERM,
                    ) => {
                        if fs::symlink_metadata(&dst).is_ok() {
                            Ok(Moved::DestinationExists)
                        } else {
                            rename()
                        }
                    }
                    Err(e) => Err(io_error(from, e.into())),
                },
            },
        }
    }

    /// Reads a small file whole: open, read to the end, close. No stat first:
    /// the reads are bounded by `limit` (one byte more says it is too large),
    /// and only a file that is too large is stat'ed, for the message. The
    /// bytes are read into `scratch` and copied out at their size: a batch's
    /// results are held until the caller takes them, and a buffer sized for
    /// reading would hold a hundred times a link's bytes.
    fn read_small(
        &self,
        key: &str,
        path: &Path,
        limit: u64,
        scratch: &mut Vec<u8>,
    ) -> Result<Bytes, StorageError> {
        let mut file = self.open_file(key, path)?;
        scratch.clear();
        (&mut file)
            .take(limit.saturating_add(1))
            .read_to_end(scratch)
            .map_err(|e| io_error(key, e))?;
        if scratch.len() as u64 > limit {
            let size = file.metadata().map_or(scratch.len() as u64, |md| md.len());
            return Err(StorageError::TooLarge {
                key: key.to_string(),
                size,
                limit,
            });
        }
        Ok(Bytes::copy_from_slice(scratch))
    }

    /// `unlinkat` of `key`'s last component (a trailing `/` aside) in its
    /// parent opened beneath the root, so that no link, even one swapped in
    /// since the listing, takes it out of the root; `None` when the parent
    /// does not resolve there.
    fn unlink_beneath(&self, key: &str, flags: AtFlags) -> Option<rustix::io::Result<()>> {
        match key.trim_end_matches('/').rsplit_once('/') {
            Some((parent, name)) => self
                .open_beneath(parent, OFlags::PATH | OFlags::DIRECTORY)
                .map(|fd| rustix::fs::unlinkat(&fd, name, flags)),
            None => Some(rustix::fs::unlinkat(
                self.root_fd.as_fd(),
                key.trim_end_matches('/'),
                flags,
            )),
        }
    }

    fn delete_one(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        self.counts.delete(1);
        // The parent must resolve inside the root: a directory link that points
        // elsewhere must not turn a delete here into a delete there.
        if let Some(result) = (!key.ends_with('/'))
            .then(|| self.unlink_beneath(key, AtFlags::empty()))
            .flatten()
        {
            return match result {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(e) => Err(io_error(key, e.into())),
            };
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const BLOB: &str = "docker/registry/v2/blobs/sha256/2c/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824/data";
    const QUARANTINED: &str = "registry-gc-quarantine/20260101T000000Z-abcdef/docker/registry/v2/blobs/sha256/2c/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824/data";

    /// A registry root with one quarantined blob and no `blobs/` at all.
    fn root_with_a_quarantined_blob() -> (tempfile::TempDir, FsStorage) {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join(QUARANTINED);
        fs::create_dir_all(q.parent().unwrap()).unwrap();
        fs::write(&q, b"hello").unwrap();
        fs::create_dir_all(dir.path().join("docker/registry/v2")).unwrap();
        let storage = FsStorage::open(dir.path()).unwrap();
        (dir, storage)
    }

    /// A restore dates the key before it moves it: a touch that fails leaves
    /// the key in quarantine (nothing linked or renamed into place, no
    /// directory made), and the failure names the key and says why, so the
    /// retry and the restore's exit code see it rather than a key "in place".
    #[test]
    fn a_restore_that_cannot_date_the_key_moves_nothing_and_fails() {
        let (dir, storage) = root_with_a_quarantined_blob();
        let dst = dir.path().join(BLOB);
        let touched = std::cell::RefCell::new(Vec::new());
        let refuse = |p: &Path| {
            // whether anything had reached the registry's key when dated
            touched
                .borrow_mut()
                .push((p.to_path_buf(), fs::symlink_metadata(&dst).is_ok()));
            Err(io::Error::from(io::ErrorKind::PermissionDenied))
        };
        let err = storage
            .move_one_dating(QUARANTINED, BLOB, MoveMode::KeepExisting, refuse, hard_link)
            .expect_err("a key that cannot be dated is not put back")
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{BLOB}: not put back: could not set the modification time"
            )),
            "{err}"
        );
        assert_eq!(
            touched.into_inner(),
            vec![(dir.path().join(QUARANTINED), false)],
            "dated after it was put in place"
        );
        assert!(
            dir.path().join(QUARANTINED).is_file(),
            "left the quarantine"
        );
        assert!(!dst.exists());
        assert!(!dir.path().join("docker/registry/v2/blobs").exists());
        // and a retry still finds it there: not "already in place"
        assert_eq!(
            storage
                .move_one(QUARANTINED, BLOB, MoveMode::KeepExisting)
                .unwrap(),
            Moved::Moved
        );
        assert!(dst.is_file() && !dir.path().join(QUARANTINED).exists());
    }

    /// A key the registry has again is left alone, and so is its quarantined
    /// copy's time (`purge` dates a run by its newest object).
    #[test]
    fn a_key_the_registry_has_again_leaves_the_quarantined_copy_undated() {
        let (dir, storage) = root_with_a_quarantined_blob();
        let dst = dir.path().join(BLOB);
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::write(&dst, b"hello").unwrap();
        let moved = storage
            .move_one_dating(
                QUARANTINED,
                BLOB,
                MoveMode::KeepExisting,
                |_| panic!("dated a copy that stays in quarantine"),
                hard_link,
            )
            .unwrap();
        assert_eq!(moved, Moved::DestinationExists);
    }

    fn hard_link(src: &Path, dst: &Path) -> io::Result<()> {
        fs::hard_link(src, dst)
    }

    /// Where a hard link cannot claim the key (a filesystem without them, a
    /// restorer that protected hard links stop), the key goes back by a
    /// rename that refuses to replace: a key the registry writes as the link
    /// fails stays as the registry wrote it, the quarantined copy with it.
    #[test]
    fn without_hard_links_a_restore_renames_and_never_over_a_key_written_meanwhile() {
        let (dir, storage) = root_with_a_quarantined_blob();
        let (src, dst) = (dir.path().join(QUARANTINED), dir.path().join(BLOB));
        let refused = || Err(io::Error::from_raw_os_error(libc::EPERM));
        let restore = |link: &dyn Fn(&Path, &Path) -> io::Result<()>| {
            storage
                .move_one_dating(
                    QUARANTINED,
                    BLOB,
                    MoveMode::KeepExisting,
                    modified_now,
                    link,
                )
                .unwrap()
        };
        assert_eq!(restore(&|_, _| refused()), Moved::Moved);
        assert_eq!(fs::read(&dst).unwrap(), b"hello");
        assert!(!src.exists());

        fs::rename(&dst, &src).unwrap();
        let pushed = |_: &Path, dst: &Path| {
            fs::write(dst, b"pushed").unwrap();
            refused()
        };
        assert_eq!(restore(&pushed), Moved::DestinationExists);
        assert_eq!(fs::read(&dst).unwrap(), b"pushed");
        assert_eq!(fs::read(&src).unwrap(), b"hello");
    }

    fn running_as_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail
        unsafe { libc::geteuid() == 0 }
    }

    /// The registry's user and group, and a restorer's (`ops`), in these tests.
    const REGISTRY: u32 = 65534;
    const REGISTRY_GROUP: u32 = 4242;
    const OPS: u32 = 4243;

    /// Runs `f` on a thread of its own with the credentials of `OPS`, member
    /// of `groups`: no longer root, so it can give nothing away. Linux keeps
    /// credentials per thread (the raw system calls change only the caller's,
    /// unlike libc's wrappers), and the thread ends with `f`.
    fn as_ops<T: Send>(groups: &[u32], f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let groups: Vec<libc::gid_t> = groups.to_vec();
                // SAFETY: plain system calls on this thread's credentials
                unsafe {
                    assert_eq!(
                        libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()),
                        0
                    );
                    assert_eq!(libc::syscall(libc::SYS_setresgid, OPS, OPS, OPS), 0);
                    assert_eq!(libc::syscall(libc::SYS_setresuid, OPS, OPS, OPS), 0);
                }
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// The permission bits `uid` (in group `gid`) has on a file.
    fn access_of(md: &fs::Metadata, uid: u32, gid: u32) -> u32 {
        if md.uid() == uid {
            (md.mode() >> 6) & 0o7
        } else if md.gid() == gid {
            (md.mode() >> 3) & 0o7
        } else {
            md.mode() & 0o7
        }
    }

    fn skip_unless_root() -> bool {
        if running_as_root() {
            return false;
        }
        // CI runs as root: there these tests must run, never pass by skipping
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "needs root, to restore as a user other than the registry's"
        );
        eprintln!("skipped: needs root, to restore as a user other than the registry's");
        true
    }

    /// The tree a registry running as `REGISTRY` owns, writable by its group
    /// (the restorer `ops` is a member), the quarantined blob the registry's.
    fn registry_owned_tree() -> (tempfile::TempDir, FsStorage) {
        let (dir, storage) = root_with_a_quarantined_blob();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let chown = std::process::Command::new("chown")
            .args(["-R", &format!("{REGISTRY}:{REGISTRY_GROUP}")])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(chown.success());
        let chmod = std::process::Command::new("chmod")
            .args(["-R", "u=rwX,g=rwX,o="])
            .arg(dir.path().join("docker"))
            .arg(dir.path().join("registry-gc-quarantine"))
            .status()
            .unwrap();
        assert!(chmod.success());
        fs::set_permissions(
            dir.path().join(QUARANTINED),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        (dir, storage)
    }

    /// A restorer that is neither root nor the file's owner cannot set its
    /// time; on a system with protected hard links it cannot link it either
    /// and renames it. Dating it after that rename left the key in place,
    /// undated, and the quarantined copy gone: the retry counted it as in
    /// place. Now nothing moves and the key is a failure.
    #[test]
    fn a_restorer_that_does_not_own_the_key_leaves_it_in_quarantine() {
        if skip_unless_root() {
            return;
        }
        let (dir, storage) = registry_owned_tree();
        let result = as_ops(&[REGISTRY_GROUP], || {
            storage.move_one(QUARANTINED, BLOB, MoveMode::KeepExisting)
        });
        assert!(
            dir.path().join(QUARANTINED).is_file(),
            "left the quarantine: {result:?}"
        );
        assert!(!dir.path().join(BLOB).exists());
        let err = result
            .expect_err("an undated key is not put back")
            .to_string();
        assert!(err.contains("could not set the modification time"), "{err}");
    }

    /// A restorer in the registry's group, with write access to the
    /// quarantined file but not its owner, dates it (both times set to now
    /// take write access; the mtime alone took ownership) and puts it back.
    #[test]
    fn a_restorer_with_write_access_dates_and_restores_a_key_it_does_not_own() {
        if skip_unless_root() {
            return;
        }
        let (dir, storage) = registry_owned_tree();
        let quarantined = dir.path().join(QUARANTINED);
        fs::set_permissions(&quarantined, fs::Permissions::from_mode(0o664)).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        filetime::set_file_mtime(&quarantined, filetime::FileTime::from_system_time(old)).unwrap();
        let moved = as_ops(&[REGISTRY_GROUP], || {
            storage.move_one(QUARANTINED, BLOB, MoveMode::KeepExisting)
        });
        assert_eq!(moved.unwrap(), Moved::Moved);
        let restored = fs::metadata(dir.path().join(BLOB)).unwrap();
        let age = std::time::SystemTime::now()
            .duration_since(restored.modified().unwrap())
            .unwrap_or_default();
        assert!(age.as_secs() < 600, "restored undated: {age:?} old");
    }

    /// A restorer that is not root makes the directories the sweep removed,
    /// and cannot give them to the registry's user. Given the parent's mode
    /// as they were (`ops:ops 0770` under `registry:registry 0770`) they shut
    /// the registry out; given the parent's group, with the parent owner's
    /// access for it, the registry reads and writes them as before.
    #[test]
    fn directories_a_restorer_makes_stay_the_registrys_to_use() {
        if skip_unless_root() {
            return;
        }
        let (dir, storage) = registry_owned_tree();
        let moved = as_ops(&[REGISTRY_GROUP], || {
            let dst = storage.path_of(BLOB).unwrap();
            storage.make_parent(BLOB, &dst)
        });
        moved.unwrap();
        let v2 = dir.path().join("docker/registry/v2");
        let mut made = Vec::new();
        for d in dir.path().join(BLOB).parent().unwrap().ancestors() {
            if d == v2 {
                break;
            }
            let md = fs::metadata(d).unwrap();
            made.push(format!(
                "{}: {}:{} {:o}",
                d.display(),
                md.uid(),
                md.gid(),
                md.mode() & 0o7777
            ));
            assert_eq!(
                access_of(&md, REGISTRY, REGISTRY_GROUP),
                0o7,
                "the registry cannot use {made:?}"
            );
        }
        // blobs, sha256, 2c and the blob's own
        assert_eq!(made.len(), 4, "{made:?}");
    }

    #[test]
    fn a_directory_not_the_parents_own_is_never_narrowed() {
        // the parent's group: its owner's access for the group
        assert_eq!(widened_mode(0o755, 0o750, false, true), 0o775);
        assert_eq!(widened_mode(0o700, 0o750, false, true), 0o770);
        // not its group, a parent closed to others: the owner's for others
        assert_eq!(widened_mode(0o700, 0o750, false, false), 0o757);
        // a parent open to others: the union, never world-writable
        assert_eq!(widened_mode(0o755, 0o755, false, false), 0o755);
        assert_eq!(widened_mode(0o700, 0o775, false, false), 0o775);
        // the umask's own bits and a set-group-id bit stay
        assert_eq!(widened_mode(0o2755, 0o750, false, true), 0o2775);
        // the registry's user restoring, its group not the parent's: the
        // directory is its own, and nothing is opened to others
        assert_eq!(widened_mode(0o700, 0o750, true, false), 0o750);
        assert_eq!(widened_mode(0o755, 0o700, true, false), 0o755);
    }
}
