//! The reads `fsck` does beyond listing and marking: every link file, the
//! manifests that name something missing (for the roles of what is missing),
//! and with `--verify-content` every blob through sha256.

use futures::{StreamExt, TryStreamExt};
use sha2::{Digest as _, Sha256};

use super::{reference_roles, Mismatch, Observed};
use crate::digest::Digest;
use crate::digest_table::DigestId;
use crate::error::Error;
use crate::inspect;
use crate::inventory::Inventory;
use crate::layout;
use crate::mark::Marks;
use crate::progress::Progress;
use crate::storage::{Storage, StorageError};

/// Blobs hashed at once by `--verify-content` (each holds one read buffer).
const MAX_VERIFY_CONCURRENCY: usize = 16;

/// Reads every revision, layer and tag-history link (tag `current` links were
/// read by the mark phase) and keeps those that do not hold `sha256:<hex>` of
/// their path. Returns how many were read.
pub(super) async fn read_links(
    storage: &dyn Storage,
    inv: &Inventory,
    marks: &Marks,
    concurrency: usize,
    progress: &Progress,
    obs: &mut Observed,
) -> Result<u64, Error> {
    let mut links: Vec<(String, Digest)> = Vec::new();
    for (ri, r) in inv.repositories.iter().enumerate() {
        let name = r.name.as_str();
        let d = |id| *inv.digests.get(id);
        links.extend(
            r.revisions
                .iter()
                .map(|l| (layout::revision_key(name, &d(l.digest)), d(l.digest))),
        );
        links.extend(
            r.layers
                .iter()
                .map(|l| (layout::layer_link_key(name, &d(l.digest)), d(l.digest))),
        );
        links.extend(r.history.iter().map(|h| {
            (
                layout::tag_index_key(name, r.tag_name(h.tag), &d(h.link.digest)),
                d(h.link.digest),
            )
        }));
        // The mark phase parsed tag links leniently (surrounding whitespace is
        // tolerated); the registry does not, so their exact bytes are checked,
        // except where the listing's MD5 ETag already proves them exact.
        for (ti, t) in r.tags.iter().enumerate() {
            if let (Some(_), Some(target)) = (
                t.current,
                marks.target_digest(inv, marks.tag_targets[ri][ti]),
            ) {
                let exact = r.tag_md5(ti as u32).is_some_and(|m| {
                    m == <[u8; 16]>::from(md5::Md5::digest(target.to_string().as_bytes()))
                });
                if !exact {
                    links.push((layout::tag_current_key(name, r.tag_name(ti as u32)), target));
                }
            }
        }
    }
    progress.start_phase("reading links", links.len() as u64);
    let mut reads = futures::stream::iter(links)
        .map(|(key, expected)| async move {
            let result = storage.get(&key, crate::mark::LINK_READ_LIMIT).await;
            (key, expected, result)
        })
        .buffer_unordered(concurrency);
    let mut n = 0;
    while let Some((key, expected, result)) = reads.next().await {
        progress.inc(1);
        let expected = expected.to_string();
        match result {
            Ok(bytes) if bytes[..] == *expected.as_bytes() => n += 1,
            Ok(bytes) => {
                n += 1;
                obs.junk_links.push((
                    key,
                    format!(
                        "{:?} instead of {expected}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
                    ),
                ));
            }
            Err(StorageError::TooLarge { size, .. }) => obs
                .junk_links
                .push((key, format!("{size} bytes, not a digest"))),
            // deleted since the listing: nothing left to check
            Err(StorageError::NotFound { .. }) => {}
            Err(e) => return Err(Error::Read(inspect::ReadError(e))),
        }
    }
    Ok(n)
}

/// Reads again the (few) manifests that name something missing, to say what
/// each missing digest is (config, layer, child) and to leave foreign layers out.
pub(super) async fn read_roles(
    storage: &dyn Storage,
    inv: &Inventory,
    marks: &Marks,
    read: &inspect::ReadSettings,
    obs: &mut Observed,
) -> Result<(), Error> {
    let mut manifests: Vec<DigestId> = marks.missing_refs.iter().map(|(m, _)| *m).collect();
    manifests.sort_unstable();
    manifests.dedup();
    let mut reads = futures::stream::iter(manifests)
        .map(|id| async move {
            let key = layout::blob_data_key(inv.digests.get(id));
            (id, storage.get(&key, read.max_manifest_bytes).await)
        })
        .buffer_unordered(read.concurrency);
    while let Some((id, result)) = reads.next().await {
        let bytes = result.map_err(|e| Error::Read(inspect::ReadError(e)))?;
        for (d, role) in reference_roles(&bytes) {
            obs.roles.insert((id, d), role);
        }
    }
    Ok(())
}

/// Streams every blob through sha256, a few at a time. Returns (blobs, bytes) hashed.
pub(super) async fn verify_content(
    storage: &dyn Storage,
    inv: &Inventory,
    concurrency: usize,
    progress: &Progress,
    obs: &mut Observed,
) -> Result<(u64, u64), Error> {
    progress.start_phase("re-hashing blobs", inv.blob_count() as u64);
    let mut hashes = futures::stream::iter(inv.blobs())
        .map(|(id, _)| async move {
            let key = layout::blob_data_key(inv.digests.get(id));
            let mut stream = match storage.get_stream(&key).await {
                Ok(s) => s,
                Err(e) => return (id, Err(e)),
            };
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            loop {
                match stream.try_next().await {
                    Ok(Some(chunk)) => {
                        size += chunk.len() as u64;
                        hasher.update(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => return (id, Err(e)),
                }
            }
            (id, Ok((Digest::from_bytes(hasher.finalize().into()), size)))
        })
        .buffer_unordered(concurrency.clamp(1, MAX_VERIFY_CONCURRENCY));
    let (mut blobs, mut bytes) = (0, 0);
    while let Some((id, result)) = hashes.next().await {
        progress.inc(1);
        match result {
            Ok((actual, size)) => {
                blobs += 1;
                bytes += size;
                if actual != *inv.digests.get(id) {
                    obs.mismatches.push(Mismatch {
                        blob: id,
                        actual,
                        actual_size: size,
                    });
                }
            }
            Err(StorageError::NotFound { .. }) => {}
            Err(e) => return Err(Error::Read(inspect::ReadError(e))),
        }
    }
    Ok((blobs, bytes))
}
