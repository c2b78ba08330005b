//! `restore`: puts a run's keys back, blobs before the links that point at
//! them, never over a key the registry has now (the live key wins).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use futures::StreamExt;

use super::record::write_record;
use super::{
    check_run_id, dirs_below, quarantine_key, read_record, record_key, run_prefix, Entry,
    QuarantineError, RunState, PREFIX,
};
use crate::digest::Digest;
use crate::layout::{self, KeyKind};
use crate::manifest::{self, ManifestKind};
use crate::plan::Reason;
use crate::report::{human_bytes, Failure};
use crate::storage::{MoveMode, Moved, Storage, StorageError};

/// The largest manifest read back to check what it needs (`gc`'s default
/// `--max-manifest-size`).
const MAX_MANIFEST_BYTES: u64 = crate::mark::DEFAULT_MAX_MANIFEST_BYTES;

/// Order of restore: blobs before the links that point at them, and a
/// manifest's revision link before a tag that names it, so that the registry
/// never serves a link to something not yet back (the sweep's order,
/// reversed).
fn restore_phase(reason: Reason) -> u8 {
    match reason {
        Reason::UnreferencedBlob => 0,
        Reason::DanglingLayerLink => 1,
        Reason::DanglingTag => 3,
        Reason::StaleUpload => 4,
        _ => 2,
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreOutcome {
    pub run_id: String,
    pub storage: String,
    /// Keys moved back to their place, and the bytes of the blobs and uploads among them.
    pub restored: u64,
    pub restored_bytes: u64,
    /// Keys found at their place and not in quarantine (restored before, or never moved).
    pub already_in_place: u64,
    /// Keys the registry has again (re-pushed since): left as they are, and the
    /// quarantined copy left in the run for `purge`.
    pub kept_live: Vec<String>,
    /// Keys gone before the quarantine could move them: nothing to restore.
    pub never_quarantined: u64,
    /// Keys neither in quarantine nor at their place.
    pub missing: Vec<String>,
    pub failures: Vec<Failure>,
    /// Phases not started because an earlier one had failures.
    pub stopped_early: bool,
    /// Keys that the images this run holds need, not in the registry but in
    /// another run: a later run can hold them (a layer shared with an image
    /// deleted after this run), and without them the images do not pull.
    pub unmet: Vec<UnmetNeed>,
    /// What could not be checked for `unmet`: a manifest that could not be
    /// read (unreadable, over the read limit), named by its key, or the whole
    /// check (named by the run's record). The run's keys are back all the
    /// same; whether its images pull is not known.
    pub unchecked: Vec<Failure>,
}

/// A key an image of the run needs, not in the registry but in another run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UnmetNeed {
    /// `REPO@DIGEST`.
    pub image: String,
    pub key: String,
    /// The quarantine run that holds the key.
    pub in_run: String,
}

impl RestoreOutcome {
    /// Every key of the run is back (or in place, or the registry's own).
    pub fn run_is_restored(&self) -> bool {
        self.failures.is_empty() && self.missing.is_empty() && !self.stopped_early
    }

    /// The run is restored and its images have all they need: they pull.
    pub fn is_complete(&self) -> bool {
        self.run_is_restored() && self.unmet.is_empty() && self.unchecked.is_empty()
    }

    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "registry-gc restore of run {} on {}",
            self.run_id, self.storage
        );
        let _ = writeln!(
            s,
            "restored: {} keys ({})",
            self.restored,
            human_bytes(self.restored_bytes)
        );
        if self.already_in_place > 0 {
            let _ = writeln!(s, "already in place: {} keys", self.already_in_place);
        }
        if self.never_quarantined > 0 {
            let _ = writeln!(
                s,
                "never quarantined (gone before the run moved them): {} keys",
                self.never_quarantined
            );
        }
        if !self.kept_live.is_empty() {
            let _ =
                writeln!(s, "kept the registry's current key ({} keys; their quarantined copies stay in the run):", self.kept_live.len());
            for k in self.kept_live.iter().take(20) {
                let _ = writeln!(s, "  {k}");
            }
        }
        for k in &self.missing {
            let _ = writeln!(s, "missing: {k}: neither in quarantine nor at its key");
        }
        for u in &self.unmet {
            let _ = writeln!(
                s,
                "needed: {} needs {}, quarantined by run {}: restore that run too",
                u.image, u.key, u.in_run
            );
        }
        for f in &self.unchecked {
            let _ = writeln!(
                s,
                "unchecked: {}: {} (run the restore again, or `fsck`, to know whether its images pull)",
                f.key, f.error
            );
        }
        for f in &self.failures {
            let _ = writeln!(s, "failed: {}: {}", f.key, f.error);
        }
        if self.stopped_early {
            let _ = writeln!(
                s,
                "the restore stopped after the failures above; run it again to finish"
            );
        }
        if self.restored > 0 {
            let _ = writeln!(
                s,
                "restart the registry (or flush its blob-descriptor cache), as after a collection"
            );
        }
        s
    }
}

/// Puts run `run`'s keys back where they were. Idempotent: a key already in
/// place counts as done, and a key the registry has again is left alone.
pub async fn restore(
    storage: &dyn Storage,
    run: &str,
    concurrency: usize,
    attempts: u32,
) -> Result<RestoreOutcome, QuarantineError> {
    let mut record = read_record(storage, run).await?;
    let record_at = record_key(run);
    for e in &record.entries {
        if !crate::sweep::in_registry_tree(&e.key) {
            return Err(QuarantineError::OutsideRegistryTree {
                record: record_at,
                key: e.key.clone(),
            });
        }
    }
    let gone: HashSet<&str> = record
        .header
        .gone_before_move
        .iter()
        .map(String::as_str)
        .collect();
    let mut order: Vec<&Entry> = record.entries.iter().collect();
    order.sort_by_key(|e| restore_phase(e.reason));
    let mut out = RestoreOutcome {
        run_id: run.to_string(),
        storage: storage.describe(),
        ..Default::default()
    };
    let batch = storage.max_delete_batch().max(1);
    let mut moved_back: Vec<String> = Vec::new();
    let mut not_in_quarantine: Vec<String> = Vec::new();
    // the run's keys that are at their place now: put back, the registry's
    // own, or found there; a key gone before the run could move it is not
    // among them unless found there, as the run never held it
    let mut in_place: HashSet<String> = HashSet::new();
    let mut start = 0;
    while start < order.len() {
        let phase = restore_phase(order[start].reason);
        let end = order[start..]
            .iter()
            .position(|e| restore_phase(e.reason) != phase)
            .map_or(order.len(), |n| start + n);
        let results: Vec<ChunkOutcome> = futures::stream::iter(order[start..end].chunks(batch))
            .map(|chunk| restore_chunk(storage, run, chunk, attempts))
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        for r in results {
            out.restored += r.restored.len() as u64;
            out.restored_bytes += r.restored.iter().map(|e| e.bytes).sum::<u64>();
            moved_back.extend(r.restored.iter().map(|e| quarantine_key(run, &e.key)));
            in_place.extend(r.restored.iter().map(|e| e.key.clone()));
            in_place.extend(r.kept_live.iter().cloned());
            out.kept_live.extend(r.kept_live);
            out.failures.extend(r.failures);
            for key in r.source_missing {
                if gone.contains(key.as_str()) {
                    out.never_quarantined += 1;
                } else {
                    not_in_quarantine.push(key);
                }
            }
        }
        // not in quarantine: in place already (restored before, or never moved), or lost
        let checked: Vec<(String, Result<bool, StorageError>)> =
            futures::stream::iter(std::mem::take(&mut not_in_quarantine))
                .map(|key| async move {
                    let r = storage.exists(&key).await;
                    (key, r)
                })
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
        for (key, r) in checked {
            match r {
                Ok(true) => {
                    out.already_in_place += 1;
                    in_place.insert(key);
                }
                Ok(false) => out.missing.push(key),
                Err(e) => out.failures.push(Failure {
                    key,
                    error: e.to_string(),
                }),
            }
        }
        if !out.failures.is_empty() {
            out.stopped_early = end < order.len();
            break;
        }
        start = end;
    }
    if storage.has_directories() {
        let _ = storage
            .remove_empty_dirs(&dirs_below(&run_prefix(run), &moved_back))
            .await;
    }
    if out.run_is_restored() {
        match unmet_needs(storage, run, &record.entries, &in_place, concurrency).await {
            Ok(needs) => {
                out.unmet = needs.unmet;
                out.unchecked = needs.unchecked;
            }
            // not a failure of the restore: its keys are back, and the
            // record says so below (a failure here would keep every re-run
            // from recording it), but the exit code says the check is owed
            Err(e) => out.unchecked.push(Failure {
                key: record_at.clone(),
                error: format!("could not check what the run's images need: {e}"),
            }),
        }
    }
    // the run's own keys are back: its record says so, even when its images
    // still need another run's
    if out.run_is_restored() {
        record.header.state = RunState::Restored;
        record.header.restored_at =
            Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        if let Err(e) = write_record(storage, &record.header, record.entries.into_iter()).await {
            out.failures.push(Failure {
                key: record_at,
                error: format!("the restore is done but its record was not updated: {e}"),
            });
        }
    }
    out.missing.sort();
    out.unchecked.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// What [`unmet_needs`] found.
#[derive(Default)]
struct Needs {
    unmet: Vec<UnmetNeed>,
    /// Manifests whose needs could not be read, by key, with why.
    unchecked: Vec<Failure>,
}

/// What the manifests the run recorded need, and the registry lacks but
/// another run holds: each manifest's blob, its config and layers (blob and
/// the repository's layer link, as the registry serves them), an index's
/// children (revision link) and theirs, all as a pull needs them. A key in no
/// run is not named: it may have been missing before this run's collection
/// too (a dangling revision, a broken image), which a restore never mends.
/// A manifest that cannot be read is reported as unchecked, and the others
/// are checked all the same.
async fn unmet_needs(
    storage: &dyn Storage,
    run: &str,
    entries: &[Entry],
    in_place: &HashSet<String>,
    concurrency: usize,
) -> Result<Needs, StorageError> {
    let others: Vec<String> = storage
        .list_dir(PREFIX)
        .await?
        .prefixes
        .iter()
        .map(|p| p[PREFIX.len()..].trim_end_matches('/').to_string())
        .filter(|id| id != run && check_run_id(id).is_ok())
        .collect();
    if others.is_empty() {
        // nothing another run could hold: no manifest to read
        return Ok(Needs::default());
    }
    // the run's own keys that are in place are not looked for again; the
    // rest, a key gone before the run could move it included (a later run can
    // hold it), are looked for, one request each
    let mut seen: HashSet<(String, Digest)> = HashSet::new();
    let mut level: Vec<(String, Digest)> = entries
        .iter()
        .filter_map(|e| match layout::classify(&e.key) {
            KeyKind::Revision { repo, digest } => Some((repo.to_string(), digest)),
            _ => None,
        })
        .filter(|m| seen.insert(m.clone()))
        .collect();
    // (image, key) for each key missing
    let mut missing: Vec<(String, String)> = Vec::new();
    let mut unchecked: Vec<Failure> = Vec::new();
    let own = in_place;
    while !level.is_empty() {
        let read: Vec<Result<ManifestNeeds, Failure>> = futures::stream::iter(level)
            .map(|(repo, digest)| async move {
                let image = format!("{repo}@{digest}");
                let key = layout::blob_data_key(&digest);
                manifest_needs(storage, own, repo, digest)
                    .await
                    .map_err(|e| Failure {
                        key,
                        error: format!("what {image} needs was not checked: {e}"),
                    })
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut next = Vec::new();
        for needs in read {
            let needs = match needs {
                Ok(needs) => needs,
                Err(failure) => {
                    unchecked.push(failure);
                    continue;
                }
            };
            let image = format!("{}@{}", needs.repo, needs.digest);
            missing.extend(needs.missing.into_iter().map(|k| (image.clone(), k)));
            next.extend(
                needs
                    .children
                    .into_iter()
                    .map(|c| (needs.repo.clone(), c))
                    .filter(|m| seen.insert(m.clone())),
            );
        }
        level = next;
    }
    if missing.is_empty() {
        return Ok(Needs {
            unmet: Vec::new(),
            unchecked,
        });
    }
    let found: Vec<Result<Option<UnmetNeed>, StorageError>> = futures::stream::iter(missing)
        .map(|(image, key)| {
            let others = &others;
            async move {
                for other in others {
                    if storage.exists(&quarantine_key(other, &key)).await? {
                        let in_run = other.clone();
                        return Ok(Some(UnmetNeed { image, key, in_run }));
                    }
                }
                Ok(None)
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let mut unmet = Vec::new();
    for need in found {
        unmet.extend(need?);
    }
    unmet.sort_by(|a, b| (&a.image, &a.key).cmp(&(&b.image, &b.key)));
    unmet.dedup_by(|a, b| a.image == b.image && a.key == b.key);
    Ok(Needs { unmet, unchecked })
}

/// One manifest's keys the registry lacks, and its children to check next.
struct ManifestNeeds {
    repo: String,
    digest: Digest,
    missing: Vec<String>,
    children: Vec<Digest>,
}

async fn manifest_needs(
    storage: &dyn Storage,
    own: &HashSet<String>,
    repo: String,
    digest: Digest,
) -> Result<ManifestNeeds, StorageError> {
    let mut needs = ManifestNeeds {
        repo,
        digest,
        missing: Vec::new(),
        children: Vec::new(),
    };
    let blob = layout::blob_data_key(&needs.digest);
    // read even when the run restored it: what it names is what matters
    let bytes = match storage.get(&blob, MAX_MANIFEST_BYTES).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            needs.missing.push(blob);
            return Ok(needs);
        }
        Err(e) => return Err(e),
    };
    let refs = manifest::parse(&bytes);
    let mut keys = Vec::new();
    for b in &refs.blobs {
        keys.push(layout::blob_data_key(b));
        keys.push(layout::layer_link_key(&needs.repo, b));
    }
    // only an index's children are manifests for sure: an unknown shape's
    // digests may be anything
    if refs.kind == ManifestKind::Index {
        for c in &refs.children {
            keys.push(layout::revision_key(&needs.repo, c));
        }
        needs.children = refs.children;
    }
    for key in keys.into_iter().filter(|k| !own.contains(k.as_str())) {
        if !storage.exists(&key).await? {
            needs.missing.push(key);
        }
    }
    Ok(needs)
}

#[derive(Default)]
struct ChunkOutcome<'a> {
    restored: Vec<&'a Entry>,
    kept_live: Vec<String>,
    /// Registry keys whose quarantined copy was not there.
    source_missing: Vec<String>,
    failures: Vec<Failure>,
}

async fn restore_chunk<'a>(
    storage: &dyn Storage,
    run: &str,
    chunk: &[&'a Entry],
    attempts: u32,
) -> ChunkOutcome<'a> {
    let mut out = ChunkOutcome::default();
    let mut pending: Vec<&'a Entry> = chunk.to_vec();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
        }
        let moves: Vec<(String, String)> = pending
            .iter()
            .map(|e| (quarantine_key(run, &e.key), e.key.clone()))
            .collect();
        let results = storage.move_batch(&moves, MoveMode::KeepExisting).await;
        let mut still = Vec::new();
        out.failures.clear();
        for (e, r) in pending.into_iter().zip(results) {
            match r {
                Ok(Moved::Moved) => out.restored.push(e),
                Ok(Moved::DestinationExists) => out.kept_live.push(e.key.clone()),
                Ok(Moved::SourceMissing) => out.source_missing.push(e.key.clone()),
                Err(err) => {
                    out.failures.push(Failure {
                        key: e.key.clone(),
                        error: err.to_string(),
                    });
                    still.push(e);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::FsStorage;
    use bytes::Bytes;
    use sha2::{Digest as _, Sha256};

    const REPO: &str = "app";
    /// The run restored, and a later one.
    const A: &str = "20260101T000000Z-aaaaaa";
    const B: &str = "20260102T000000Z-bbbbbb";

    fn digest_of(bytes: &[u8]) -> Digest {
        Digest::from_hex(&hex::encode(Sha256::digest(bytes))).unwrap()
    }

    /// An image manifest naming `config` and `layer`, and its digest.
    fn manifest(config: &Digest, layer: &Digest) -> (Vec<u8>, Digest) {
        let bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": 2, "digest": config.to_string()},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": 5, "digest": layer.to_string()}],
        }))
        .unwrap();
        let d = digest_of(&bytes);
        (bytes, d)
    }

    async fn put(storage: &FsStorage, key: &str, bytes: &[u8]) {
        storage
            .put(key, Bytes::copy_from_slice(bytes))
            .await
            .unwrap();
    }

    /// Writes run `run`'s record: `entries` as (key, reason), `gone` among
    /// them gone before the run could move them.
    async fn put_record(storage: &FsStorage, run: &str, entries: &[(&str, &str)], gone: &[&str]) {
        let record = serde_json::json!({
            "schema_version": 1,
            "run_id": run,
            "started_at": "2026-01-01T00:00:00Z",
            "started_at_ms": 1767225600000_i64,
            "storage": "test",
            "options": {"delete_untagged": true, "min_age_seconds": 0,
                        "upload_max_age_seconds": 0, "delete_empty_repos": false},
            "state": "complete",
            "keys": entries.len(), "bytes": 0, "moved_keys": entries.len() - gone.len(),
            "gone_before_move": gone,
            "entries": entries.iter().map(|(key, reason)| serde_json::json!(
                {"key": key, "reason": reason, "bytes": 0})).collect::<Vec<_>>(),
        });
        put(
            storage,
            &record_key(run),
            &serde_json::to_vec(&record).unwrap(),
        )
        .await;
    }

    /// A registry with image `app@M` (config `C`, layer `L`), all but `L`
    /// and M's revision link in place; the revision link in run A's
    /// quarantine; `L` in run B's. Returns the storage, M's revision and L's
    /// blob key, and M.
    async fn an_image_missing_its_layer(
        dir: &std::path::Path,
    ) -> (FsStorage, String, String, Digest) {
        std::fs::create_dir_all(dir.join("docker/registry/v2")).unwrap();
        let storage = FsStorage::open(dir).unwrap();
        let (config, layer) = (b"{}".as_slice(), b"layer".as_slice());
        let (c, l) = (digest_of(config), digest_of(layer));
        let (m_bytes, m) = manifest(&c, &l);
        put(&storage, &layout::blob_data_key(&c), config).await;
        put(&storage, &layout::blob_data_key(&m), &m_bytes).await;
        for d in [&c, &l] {
            let link = d.to_string();
            put(&storage, &layout::layer_link_key(REPO, d), link.as_bytes()).await;
        }
        let revision = layout::revision_key(REPO, &m);
        let m_link = m.to_string();
        put(&storage, &quarantine_key(A, &revision), m_link.as_bytes()).await;
        let layer_key = layout::blob_data_key(&l);
        put(&storage, &quarantine_key(B, &layer_key), layer).await;
        (storage, revision, layer_key, m)
    }

    /// A key run A recorded but never held (gone before its move) is no key
    /// of A's to count as back: when a later run holds it and A's image
    /// needs it, the restore names that run (exit code 4), as for any other
    /// key another run took.
    #[tokio::test]
    async fn a_key_gone_before_the_move_is_looked_for_in_the_other_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, revision, layer_key, m) = an_image_missing_its_layer(dir.path()).await;
        put_record(
            &storage,
            A,
            &[
                (revision.as_str(), "untagged-manifest"),
                (layer_key.as_str(), "unreferenced-blob"),
            ],
            &[layer_key.as_str()],
        )
        .await;

        let out = restore(&storage, A, 4, 1).await.unwrap();
        assert!(out.run_is_restored(), "{}", out.summary());
        assert_eq!(out.restored, 1, "{}", out.summary());
        assert_eq!(out.never_quarantined, 1, "{}", out.summary());
        let unmet: Vec<(&str, &str, &str)> = out
            .unmet
            .iter()
            .map(|u| (u.image.as_str(), u.key.as_str(), u.in_run.as_str()))
            .collect();
        let image = format!("{REPO}@{m}");
        assert_eq!(
            unmet,
            vec![(image.as_str(), layer_key.as_str(), B)],
            "{}",
            out.summary()
        );
        assert!(
            !out.is_complete(),
            "exit code 0 for an image that does not pull"
        );
    }

    /// A manifest whose needs cannot be read (here a link out of the root)
    /// is reported as unchecked, by its key; the run's other images are
    /// still checked, and the run, its keys all back, is recorded restored.
    /// The restore is not complete (exit code 4), but a re-run has nothing
    /// left to restore and says the same, rather than failing the run for
    /// good with the error filed under its record.
    #[tokio::test]
    async fn a_manifest_that_cannot_be_read_is_unchecked_and_the_rest_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, revision, layer_key, m) = an_image_missing_its_layer(dir.path()).await;
        // a second image whose manifest blob cannot be read
        let bad = digest_of(b"another manifest");
        let bad_blob = layout::blob_data_key(&bad);
        let bad_path = dir.path().join(&bad_blob);
        std::fs::create_dir_all(bad_path.parent().unwrap()).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), &bad_path).unwrap();
        let bad_revision = layout::revision_key(REPO, &bad);
        let bad_link = bad.to_string();
        put(
            &storage,
            &quarantine_key(A, &bad_revision),
            bad_link.as_bytes(),
        )
        .await;
        put_record(
            &storage,
            A,
            &[
                (revision.as_str(), "untagged-manifest"),
                (bad_revision.as_str(), "untagged-manifest"),
            ],
            &[],
        )
        .await;

        let out = restore(&storage, A, 4, 1).await.unwrap();
        assert!(out.run_is_restored(), "{}", out.summary());
        assert_eq!(out.restored, 2, "{}", out.summary());
        let unchecked: Vec<&str> = out.unchecked.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(unchecked, vec![bad_blob.as_str()], "{}", out.summary());
        assert!(
            out.unchecked[0].error.contains(&format!("{REPO}@{bad}"))
                && out.unchecked[0].error.contains("outside the registry root"),
            "{}",
            out.summary()
        );
        assert_eq!(out.unmet.len(), 1, "{}", out.summary());
        assert_eq!(out.unmet[0].image, format!("{REPO}@{m}"));
        assert_eq!(out.unmet[0].key, layer_key);
        assert!(!out.is_complete());
        let summary = out.summary();
        assert!(
            summary.contains(&format!("unchecked: {bad_blob}: ")),
            "{summary}"
        );
        let record = read_record(&storage, A).await.unwrap();
        assert_eq!(record.header.state, RunState::Restored);
    }

    #[test]
    fn restore_puts_blobs_back_before_links() {
        assert!(restore_phase(Reason::UnreferencedBlob) < restore_phase(Reason::DanglingLayerLink));
        assert!(restore_phase(Reason::DanglingLayerLink) < restore_phase(Reason::UntaggedManifest));
        assert!(restore_phase(Reason::UnreferencedBlob) < restore_phase(Reason::DanglingTag));
        for revision in [Reason::UntaggedManifest, Reason::DanglingRevision] {
            assert!(restore_phase(revision) < restore_phase(Reason::DanglingTag));
        }
    }
}
