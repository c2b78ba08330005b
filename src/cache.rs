//! A local cache of manifest bytes, keyed by digest. Manifests are immutable, so
//! a second run on an unchanged registry need not read them again. The cache is
//! trusted for nothing but content addressed by digest: every entry is hashed on
//! read and dropped if it does not match. Deleting the directory is always safe.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

#[derive(Debug, Clone)]
pub struct ManifestCache {
    dir: PathBuf,
}

impl ManifestCache {
    /// The default location: `$XDG_CACHE_HOME/registry-gc`, else
    /// `$HOME/.cache/registry-gc`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| Path::new(&h).join(".cache"))
            })?;
        Some(base.join("registry-gc"))
    }

    pub fn open(dir: &Path) -> std::io::Result<ManifestCache> {
        std::fs::create_dir_all(dir.join("manifests/sha256"))?;
        Ok(ManifestCache {
            dir: dir.to_path_buf(),
        })
    }

    /// The cache at `dir`, when one is set and opens. One that does not is a
    /// warning, not a failure: every manifest is then read from storage.
    pub fn open_or_warn(
        dir: Option<&Path>,
        warnings: &mut Vec<crate::report::Warning>,
    ) -> Option<ManifestCache> {
        let dir = dir?;
        match ManifestCache::open(dir) {
            Ok(cache) => Some(cache),
            Err(e) => {
                warnings.push(crate::report::Warning::new(
                    &dir.display().to_string(),
                    &format!("manifest cache not usable, reading every manifest: {e}"),
                ));
                None
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.dir.join("manifests/sha256").join(&hex[..2]).join(hex)
    }

    /// The cached bytes of `d`, if present, intact and at most `limit` bytes.
    ///
    /// Anything else at the entry's name is a miss, never an error nor a wait:
    /// a symbolic link is not followed (a link to `/dev/zero` would never end),
    /// the open does not block (a FIFO would wait for a writer forever), only a
    /// regular file is read, and at most `limit + 1` bytes of it (a huge file
    /// would fill memory). An entry over `limit` is left in place: it may be a
    /// genuine manifest for a run with a higher limit, read then from storage.
    pub fn get(&self, d: &Digest, limit: u64) -> Option<Bytes> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;

        let path = self.path(d);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.file_type().is_file() || meta.len() > limit {
            return None;
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .ok()?;
        if bytes.len() as u64 > limit {
            return None;
        }
        if Sha256::digest(&bytes).as_slice() == d.as_bytes() {
            Some(Bytes::from(bytes))
        } else {
            // corrupt or truncated: never trusted, and out of the way
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// Stores `bytes` as `d` if they are its content (written whole or not at all).
    pub fn put(&self, d: &Digest, bytes: &[u8]) {
        if Sha256::digest(bytes).as_slice() != d.as_bytes() {
            return;
        }
        let path = self.path(d);
        let Some(parent) = path.parent() else { return };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(parent)?;
            // a new file, never one already there: a link planted under this
            // name (a cache directory others can write) is removed, not
            // written through; one planted again in between fails the write
            let tmp = parent.join(format!(".{}.{}.tmp", d.hex(), std::process::id()));
            let create = || {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
            };
            let mut f = match create() {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::fs::remove_file(&tmp)?;
                    create()?
                }
                other => other?,
            };
            let written = f
                .write_all(bytes)
                .and_then(|()| f.sync_data())
                .and_then(|()| std::fs::rename(&tmp, &path));
            if written.is_err() {
                // not left behind: never read, never removed, and on a full
                // disk one more per manifest and run
                let _ = std::fs::remove_file(&tmp);
            }
            written
        };
        // a cache that cannot be written only costs reads next time
        let _ = write();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 64 << 20;

    #[test]
    fn returns_only_intact_content() {
        let dir =
            std::env::temp_dir().join(format!("registry-gc-cache-test-{}", std::process::id()));
        let cache = ManifestCache::open(&dir).unwrap();
        let body = br#"{"schemaVersion":2}"#;
        let d = Digest::from_bytes(Sha256::digest(body).into());
        assert!(cache.get(&d, LIMIT).is_none());
        cache.put(&d, body);
        assert_eq!(&cache.get(&d, LIMIT).unwrap()[..], body);
        // bytes that are not the digest's content are never stored
        let other = Digest::from_bytes([7; 32]);
        cache.put(&other, body);
        assert!(cache.get(&other, LIMIT).is_none());
        // an entry changed on disk is dropped
        std::fs::write(cache.path(&d), b"tampered").unwrap();
        assert!(cache.get(&d, LIMIT).is_none());
        assert!(!cache.path(&d).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Writing an entry never follows a link: with its temporary name
    /// planted as a link to a file elsewhere, that file is left as it was.
    #[test]
    fn a_planted_link_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        let cache = ManifestCache::open(&dir.path().join("cache")).unwrap();
        let body = br#"{"schemaVersion":2}"#;
        let d = Digest::from_bytes(Sha256::digest(body).into());
        let parent = cache.path(&d).parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&parent).unwrap();
        std::os::unix::fs::symlink(
            &victim,
            parent.join(format!(".{}.{}.tmp", d.hex(), std::process::id())),
        )
        .unwrap();
        cache.put(&d, body);
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(
            &cache.get(&d, LIMIT).unwrap()[..],
            body,
            "cached all the same"
        );
    }

    /// Whatever is planted at an entry's name that is not a regular file of
    /// at most the limit is a miss, at once: a FIFO (which would block the
    /// open), a link to `/dev/zero` (a read without end), a link to the
    /// right content elsewhere, a directory, a file over the limit.
    #[test]
    fn anything_but_a_small_regular_file_is_a_miss_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ManifestCache::open(&dir.path().join("cache")).unwrap();
        let body = br#"{"schemaVersion":2}"#;
        let d = Digest::from_bytes(Sha256::digest(body).into());
        let entry = cache.path(&d);
        std::fs::create_dir_all(entry.parent().unwrap()).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, body).unwrap();
        // each in a thread: a get that blocks fails the test instead of hanging it
        let get = |limit: u64| {
            let (tx, rx) = std::sync::mpsc::channel();
            let (cache, d) = (cache.clone(), d);
            std::thread::spawn(move || tx.send(cache.get(&d, limit)));
            rx.recv_timeout(std::time::Duration::from_secs(10))
                .expect("get returned without blocking")
        };
        let fifo = std::ffi::CString::new(entry.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(get(LIMIT).is_none(), "a FIFO");
        std::fs::remove_file(&entry).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &entry).unwrap();
        assert!(get(LIMIT).is_none(), "a link to /dev/zero");
        std::fs::remove_file(&entry).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &entry).unwrap();
        assert!(get(LIMIT).is_none(), "a link, even to the right bytes");
        std::fs::remove_file(&entry).unwrap();
        std::fs::create_dir(&entry).unwrap();
        assert!(get(LIMIT).is_none(), "a directory");
        std::fs::remove_dir(&entry).unwrap();
        std::fs::write(&entry, body).unwrap();
        let len = body.len() as u64;
        assert!(get(len - 1).is_none(), "over the limit");
        assert!(entry.exists(), "an entry over the limit is left in place");
        assert_eq!(&get(len).unwrap()[..], body, "at the limit");
    }
}
