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

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.dir.join("manifests/sha256").join(&hex[..2]).join(hex)
    }

    /// The cached bytes of `d`, if present and intact.
    pub fn get(&self, d: &Digest) -> Option<Bytes> {
        let path = self.path(d);
        let bytes = std::fs::read(&path).ok()?;
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
            f.write_all(bytes)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        };
        // a cache that cannot be written only costs reads next time
        let _ = write();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_only_intact_content() {
        let dir =
            std::env::temp_dir().join(format!("registry-gc-cache-test-{}", std::process::id()));
        let cache = ManifestCache::open(&dir).unwrap();
        let body = br#"{"schemaVersion":2}"#;
        let d = Digest::from_bytes(Sha256::digest(body).into());
        assert!(cache.get(&d).is_none());
        cache.put(&d, body);
        assert_eq!(&cache.get(&d).unwrap()[..], body);
        // bytes that are not the digest's content are never stored
        let other = Digest::from_bytes([7; 32]);
        cache.put(&other, body);
        assert!(cache.get(&other).is_none());
        // an entry changed on disk is dropped
        std::fs::write(cache.path(&d), b"tampered").unwrap();
        assert!(cache.get(&d).is_none());
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
        assert_eq!(&cache.get(&d).unwrap()[..], body, "cached all the same");
    }
}
