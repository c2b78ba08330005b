//! One storage conformance suite, run against every backend: each backend's test
//! file provides a fresh, empty storage and a way to write objects into it.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use registry_gc::listing::{RepositoryPrefixes, RepositorySizes};
use registry_gc::storage::{
    get_many, lists, Leaf, MoveMode, Moved, ObjectMeta, Probe, Storage, StorageError,
};

/// Writes an object into the backend under test, outside the trait (the trait
/// has no writes: registry-gc never writes into a registry).
#[async_trait::async_trait]
pub trait Seeder: Sync {
    async fn put(&self, key: &str, bytes: &[u8]);

    /// Whether the store takes the writes `--quarantine` needs (uploads and
    /// server-side copies); fake-gcs-server's XML API does not.
    fn takes_writes(&self) -> bool {
        true
    }

    /// Writes an empty directory marker (`d/`) where the store has such
    /// objects and the seeder can write one; `false` otherwise.
    async fn put_directory_marker(&self, _key: &str) -> bool {
        false
    }
}

async fn listed(storage: &dyn Storage, prefix: &str) -> BTreeSet<String> {
    storage
        .list(prefix)
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .expect("listing succeeds")
}

pub async fn run(storage: &dyn Storage, seed: &dyn Seeder) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;

    // An empty storage lists nothing, and a missing prefix is not an error.
    assert!(listed(storage, "").await.is_empty());
    assert!(listed(storage, "nothing/here/").await.is_empty());

    // More keys than one S3 or GCS listing page.
    let mut all = BTreeSet::new();
    let keys: Vec<String> = (0..1203)
        .map(|i| format!("p/{:02x}/obj-{i:04}", i % 7))
        .collect();
    futures::stream::iter(keys.iter().enumerate())
        .for_each_concurrent(16, |(i, key)| async move {
            seed.put(key, format!("content {i}").as_bytes()).await
        })
        .await;
    all.extend(keys);
    seed.put("q/a", b"0123456789").await;
    seed.put("q/b/c", b"x").await;
    seed.put("qq", b"y").await;
    all.extend(["q/a".to_string(), "q/b/c".to_string(), "qq".to_string()]);

    assert_eq!(listed(storage, "").await, all, "list of everything");
    let p03: BTreeSet<String> = all
        .iter()
        .filter(|k| k.starts_with("p/03/"))
        .cloned()
        .collect();
    assert_eq!(listed(storage, "p/03/").await, p03, "list by prefix");
    assert_eq!(
        listed(storage, "q/").await,
        ["q/a", "q/b/c"].map(String::from).into(),
        "prefix is a directory boundary"
    );
    let q_all: BTreeSet<String> = ["q/a", "q/b/c", "qq"].map(String::from).into();
    assert_eq!(
        listed(storage, "q").await,
        q_all,
        "prefix that is not a directory boundary"
    );
    if storage.list_page_size().is_some() {
        // the object that is the prefix itself is not listed, on every store
        // that pages (object_store's Azure client leaves it out)
        assert!(
            listed(storage, "q/a").await.is_empty(),
            "the prefix's own object listed"
        );
        assert_eq!(listed(storage, "q/b/c").await, BTreeSet::new());
    }

    // Listing reports size and a plausible last-modified.
    let metas: Vec<_> = storage.list("q/").try_collect().await.unwrap();
    let a = metas.iter().find(|m| m.key == "q/a").unwrap();
    assert_eq!(a.size, 10);
    assert!(
        (a.last_modified_ms - now_ms).abs() < 10 * 60_000,
        "last-modified {} vs now {}",
        a.last_modified_ms,
        now_ms
    );

    // One level with a delimiter.
    let level = storage.list_dir("q/").await.unwrap();
    assert_eq!(level.prefixes, vec!["q/b/".to_string()]);
    assert_eq!(
        level
            .objects
            .iter()
            .map(|o| o.key.as_str())
            .collect::<Vec<_>>(),
        vec!["q/a"]
    );
    let top = storage.list_dir("").await.unwrap();
    assert_eq!(top.prefixes, vec!["p/".to_string(), "q/".to_string()]);
    assert_eq!(top.objects.len(), 1);
    let p_level = storage.list_dir("p/").await.unwrap();
    assert_eq!(p_level.prefixes.len(), 7);

    // Reads, with a size limit, and not-found.
    assert_eq!(&storage.get("q/a", 1024).await.unwrap()[..], b"0123456789");
    assert!(matches!(
        storage.get("q/a", 5).await,
        Err(StorageError::TooLarge { .. })
    ));
    assert!(storage
        .get("q/missing", 1024)
        .await
        .unwrap_err()
        .is_not_found());
    batched_reads(storage).await;
    stats(storage).await;

    // Batch delete: a result per key, missing keys count as deleted.
    let batch: Vec<String> = vec![
        "q/a".into(),
        "q/never-existed".into(),
        "p/00/obj-0000".into(),
    ];
    let results = storage.delete_batch(&batch).await;
    assert_eq!(results.len(), 3);
    for (k, r) in batch.iter().zip(&results) {
        assert!(r.is_ok(), "{k}: {r:?}");
    }
    let left = listed(storage, "").await;
    assert!(!left.contains("q/a") && !left.contains("p/00/obj-0000"));
    assert_eq!(left.len(), all.len() - 2);
    assert!(storage.max_delete_batch() >= 1);

    // Streamed reads: the whole content in order, larger than any one chunk;
    // an empty object is an empty stream; a missing key fails before the first chunk.
    let big: Vec<u8> = (0..2_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    seed.put("s/big", &big).await;
    seed.put("s/empty", b"").await;
    let streamed = |key: &'static str| async move {
        let chunks: Vec<bytes::Bytes> = storage
            .get_stream(key)
            .await
            .expect("stream opens")
            .try_collect()
            .await
            .expect("stream reads");
        chunks.concat()
    };
    assert!(streamed("s/big").await == big, "streamed content differs");
    assert!(streamed("s/empty").await.is_empty());
    assert_eq!(streamed("q/b/c").await, b"x");
    match storage.get_stream("s/missing").await {
        Err(e) => assert!(e.is_not_found(), "{e}"),
        Ok(_) => panic!("a stream of a missing key opened"),
    }
    probing(storage, seed).await;
    repository_split(storage, seed).await;
    running_split(storage, seed).await;
    writes_and_moves(storage, seed).await;
}

/// `get_batch` gives one result per key, in order, each what `get` gives;
/// `get_many` gives every item once, with its key, across batches; and both
/// count one GET per key.
async fn batched_reads(storage: &dyn Storage) {
    let keys: Vec<String> = ["q/a", "q/missing", "qq", "q/b/c", "q/a"]
        .map(String::from)
        .into();
    let gets = storage.counts().totals().get;
    let results = storage.get_batch(&keys, 4).await;
    assert_eq!(storage.counts().totals().get - gets, 5);
    assert_eq!(results.len(), 5);
    assert!(
        matches!(&results[0], Err(StorageError::TooLarge { key, size: 10, limit: 4 }) if key == "q/a"),
        "{:?}",
        results[0]
    );
    assert!(
        matches!(&results[1], Err(e) if e.is_not_found()),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2].as_deref().ok(), Some(&b"y"[..]));
    assert_eq!(results[3].as_deref().ok(), Some(&b"x"[..]));
    assert!(matches!(&results[4], Err(StorageError::TooLarge { .. })));
    assert!(storage.max_get_batch() >= 1);

    // More items than a batch, so that several batches are in flight.
    let items: Vec<(usize, String)> = (0..100)
        .map(|i| (i, format!("p/{:02x}/obj-{i:04}", i % 7)))
        .collect();
    let mut read: Vec<(usize, String, Bytes)> =
        get_many(storage, items.clone().into_iter(), 1024, 8)
            .map(|(i, key, result)| (i, key, result.expect("read succeeds")))
            .collect()
            .await;
    read.sort_by_key(|(i, ..)| *i);
    assert_eq!(read.len(), 100);
    for ((i, key, bytes), (j, asked)) in read.iter().zip(&items) {
        assert_eq!((i, key), (j, asked));
        assert_eq!(&bytes[..], format!("content {i}").as_bytes(), "{key}");
    }
}

/// `stat_batch` says of each key what a listing says (key, size, mtime), in
/// order, one HEAD each; a missing key is not-found.
async fn stats(storage: &dyn Storage) {
    let keys: Vec<String> = ["q/b/c", "q/missing", "q/a", "qq"].map(String::from).into();
    let heads = storage.counts().totals().head;
    let results = storage.stat_batch(&keys).await;
    assert_eq!(storage.counts().totals().head - heads, 4);
    assert_eq!(results.len(), 4);
    let listed: Vec<ObjectMeta> = storage.list("q").try_collect().await.unwrap();
    for (key, result) in keys.iter().zip(&results) {
        if key == "q/missing" {
            assert!(matches!(result, Err(e) if e.is_not_found()), "{result:?}");
            continue;
        }
        let stat = result.as_ref().unwrap_or_else(|e| panic!("{key}: {e}"));
        let list = listed.iter().find(|m| &m.key == key).unwrap();
        assert!(stat.is_stated());
        assert_eq!(
            (&stat.key, stat.size, stat.last_modified_ms),
            (&list.key, list.size, list.last_modified_ms)
        );
    }
}

/// `list_probing` lists what `list` does, except that a backend may leave out,
/// in a probed directory's subdirectory that has the leaf, everything else.
async fn probing(storage: &dyn Storage, seed: &dyn Seeder) {
    let keys = [
        "r/x/h1/link",
        "r/x/h1/other",
        "r/x/h2/sub/link",
        "r/x/h3/notlink",
        "r/x/link",
        "r/y/h4/link",
        "r/t/v1/current/link",
        "r/t/v1/index/sha256/h5/link",
        "r/t/v1/other",
        "r/t/v2/index/sha256/h6/link",
    ];
    for k in keys {
        seed.put(k, k.as_bytes()).await;
    }
    let probe = Probe {
        leaf_of: |dir| match dir {
            "r/x/" | "r/t/v1/index/sha256/" | "r/t/v2/index/sha256/" => Some(Leaf::file("link")),
            // named: a backend may list it unstated (a filesystem does)
            "r/y/" => Some(Leaf::named("link")),
            "r/t/" => Some(Leaf {
                file: "current/link",
                then_list: Some("index/sha256"),
                stat: true,
            }),
            _ => None,
        },
    };
    let (probed, full_keys) = probed_as_listed(storage, "r/", probe).await;
    let probed_keys: BTreeSet<String> = probed.into_iter().collect();
    assert_eq!(full_keys, keys.map(String::from).into());
    assert!(probed_keys.is_subset(&full_keys), "{probed_keys:?}");
    let left_out: Vec<&String> = full_keys.difference(&probed_keys).collect();
    assert!(
        left_out
            .iter()
            .all(|k| ["r/x/h1/other", "r/t/v1/other"].contains(&k.as_str())),
        "{left_out:?}"
    );
    let results = storage.delete_batch(&keys.map(String::from)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

/// The prefixes `gc` lists a registry's repositories by, split below a
/// namespace that holds them all, cover every key under `repositories/`
/// exactly once with the objects read on the way: names that sort around a
/// directory's (`app-a/`, `app.c/` and `app/`), a repository inside another,
/// a sub-namespace, strays beside the directories.
async fn repository_split(storage: &dyn Storage, seed: &dyn Seeder) {
    let repositories = "docker/registry/v2/repositories/";
    let keys: Vec<String> = [
        "org/app-a/_manifests/revisions/sha256/aa/link",
        "org/app-a/_layers/sha256/bb/link",
        "org/app-b/_manifests/tags/latest/current/link",
        "org/app-b/sub/_layers/sha256/cc/link",
        "org/app.c/_uploads/u1/data",
        "org/app/_layers/sha256/dd/link",
        "org/README",
        "org/team/one/_layers/sha256/ee/link",
        "org/team/two/_manifests/revisions/sha256/ff/link",
        "solo/_manifests/revisions/sha256/ab/link",
        "stray",
    ]
    .iter()
    .map(|k| format!("{repositories}{k}"))
    .collect();
    for k in &keys {
        seed.put(k, b"sha256:00").await;
    }
    // as many pages as can be: every namespace is worth splitting
    let split =
        registry_gc::listing::repository_prefixes(storage, RepositorySizes::Total(usize::MAX))
            .await
            .expect("split");
    let whole: Vec<&String> = split
        .prefixes
        .iter()
        .filter(|p| [repositories, &format!("{repositories}org/")].contains(&p.as_str()))
        .collect();
    assert!(
        whole.is_empty() && split.prefixes.len() >= 6,
        "not split below the namespace: {:?}",
        split.prefixes
    );
    let seen = keys_by_split(storage, &split).await;
    let mut want = keys.clone();
    want.sort();
    assert_eq!(seen, want, "prefixes {:?}", split.prefixes);
    let results = storage.delete_batch(&keys).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // More repositories in the namespace than a paged store lists one by
    // one: grouped by first letter, and a stray whose name a group's prefix
    // takes in comes from that group's listing, not a second time.
    let mut keys: Vec<String> = (0..260)
        .map(|i| format!("{repositories}many/r{i:03}/_layers/sha256/aa/link"))
        .collect();
    keys.extend(["many/r-stray", "many/s/_uploads/u/data"].map(|k| format!("{repositories}{k}")));
    futures::stream::iter(&keys)
        .for_each_concurrent(16, |k| async move { seed.put(k, b"sha256:00").await })
        .await;
    let split =
        registry_gc::listing::repository_prefixes(storage, RepositorySizes::Total(usize::MAX))
            .await
            .expect("split");
    if storage.list_page_size().is_some() {
        assert_eq!(
            split.prefixes,
            [
                format!("{repositories}many/r"),
                format!("{repositories}many/s/")
            ]
        );
    } else {
        let many = split
            .prefixes
            .iter()
            .filter(|p| p.starts_with(&format!("{repositories}many/")))
            .count();
        assert_eq!(
            many, 261,
            "a filesystem lists each directory: {:?}",
            split.prefixes
        );
    }
    let mut seen = keys_by_split(storage, &split).await;
    // a filesystem keeps the directories the first part's keys were in
    seen.retain(|k| !k.ends_with('/'));
    keys.sort();
    assert_eq!(seen, keys);
    // in small batches: Azurite runs a batch's deletes one by one, slower as
    // its store grows, and a 256-key batch can outlast the connection
    for chunk in keys.chunks(32) {
        let results = storage.delete_batch(chunk).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
}

/// A listing that splits itself (`listing::running_split`) returns every key
/// exactly once whichever key it splits after: after a key in a subdirectory,
/// in a subdirectory's subdirectory, after the directory's own object, at its
/// last key; into the fewest prefixes or the most; from a directory or from a
/// group prefix (`split/a`, read with a delimiter like a directory). Only stores
/// that page: the split relies on their sorted listings, and a filesystem's
/// prefixes are never split this way.
async fn running_split(storage: &dyn Storage, seed: &dyn Seeder) {
    use registry_gc::listing::running_split::{list_splitting, SplitRule};
    if storage.list_page_size().is_none() {
        return;
    }
    let keys: Vec<String> = [
        "a",
        "a/x/1",
        "a/x/2",
        "a/y",
        "a-b/1",
        "ab",
        "ab/_m/1",
        "ab/_m/2",
        "ab/c/d/1",
        "abc/1",
        "b/1/2/3",
        "b/1/2/4",
        "b/2",
        "big/r1/_l/1",
        "big/r1/_l/2",
        "big/r10/1",
        "big/r2/1",
        "c",
        "z/1",
    ]
    .iter()
    .map(|k| format!("split/{k}"))
    .chain(["split-x", "splits/1"].map(String::from))
    .collect();
    futures::stream::iter(&keys)
        .for_each_concurrent(16, |k| async move { seed.put(k, b"x").await })
        .await;
    for prefix in ["split/", "split/a"] {
        // not `split/a` itself: a store that pages lists only keys longer than the prefix
        let want: Vec<String> = keys
            .iter()
            .filter(|k| lists(prefix, k))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut splits = 0;
        for keys_per_piece in [1, 1000] {
            for after_keys in 1..=want.len() {
                let rule = SplitRule {
                    after_keys,
                    keys_per_piece,
                    max_pieces: 64,
                    max_depth: 3,
                    concurrency: 4,
                };
                let before = storage.counts().totals().list;
                let mut got: Vec<String> = list_splitting(storage, prefix, rule)
                    .map_ok(|m| m.key)
                    .try_collect()
                    .await
                    .unwrap_or_else(|e| panic!("{prefix} after {after_keys}: {e}"));
                got.sort();
                assert_eq!(
                    got, want,
                    "{prefix} split after {after_keys} keys, {keys_per_piece} a piece"
                );
                if storage.counts().totals().list - before > 1 {
                    splits += 1;
                }
            }
        }
        // each read the level below its prefix, at least, when it split
        assert_eq!(splits, 2 * want.len(), "{prefix}: listings that split");
    }
    // however many listings the splits add, no more LIST requests in flight
    // than the limit
    storage.limit_list_requests(Some(2));
    storage.counts().take_most_lists_in_flight();
    let rule = SplitRule {
        after_keys: 1,
        keys_per_piece: 1,
        max_pieces: 64,
        max_depth: 4,
        concurrency: 16,
    };
    let got: Vec<String> = list_splitting(storage, "split/", rule)
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .expect("limited listing");
    assert_eq!(
        got.len(),
        keys.iter().filter(|k| lists("split/", k)).count()
    );
    let most = storage.counts().take_most_lists_in_flight();
    assert!(
        (1..=2).contains(&most),
        "{most} LIST requests in flight at once"
    );
    storage.limit_list_requests(None);
    let results = storage.delete_batch(&keys).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    directory_markers(storage, seed).await;
}

/// Directory markers (`d/`, the empty objects the S3 console, s3fs and
/// gcsfuse write) come through object_store without their `/`: `mark/b/`,
/// which the store sorts after `mark/b-x/1`, is listed as `mark/b`. A
/// listing split after any key still returns every other key exactly once,
/// and a marker at most once, without taking the dropped `/` for a listing
/// out of order.
async fn directory_markers(storage: &dyn Storage, seed: &dyn Seeder) {
    use registry_gc::listing::running_split::{list_splitting, SplitRule};
    let markers = ["mark/b/", "mark/b/c/"];
    for m in markers {
        if !seed.put_directory_marker(m).await {
            return;
        }
    }
    let keys: Vec<String> = [
        "mark/a/1",
        "mark/b-x/1",
        "mark/b/1",
        "mark/b/c-d/1",
        "mark/b/c/1",
        "mark/b0/1",
        "mark/c/1",
    ]
    .map(String::from)
    .into();
    futures::stream::iter(&keys)
        .for_each_concurrent(16, |k| async move { seed.put(k, b"x").await })
        .await;
    let flat: Vec<String> = storage
        .list("mark/")
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .expect("listing");
    assert!(
        flat.contains(&"mark/b".to_string()),
        "the marker as object_store gives it: {flat:?}"
    );
    for after_keys in 1..=keys.len() + markers.len() {
        for max_depth in [1, 3] {
            let rule = SplitRule {
                after_keys,
                keys_per_piece: 1,
                max_pieces: 64,
                max_depth,
                concurrency: 4,
            };
            let got: Vec<String> = list_splitting(storage, "mark/", rule)
                .map_ok(|m| m.key)
                .try_collect()
                .await
                .unwrap_or_else(|e| panic!("after {after_keys}: {e}"));
            let once: BTreeSet<&String> = got.iter().collect();
            assert_eq!(
                once.len(),
                got.len(),
                "after {after_keys}, depth {max_depth}: a key twice in {got:?}"
            );
            assert!(
                keys.iter().all(|k| once.contains(k)),
                "after {after_keys}, depth {max_depth}: {got:?}"
            );
            assert!(
                got.iter()
                    .all(|k| keys.contains(k) || markers.contains(&format!("{k}/").as_str())),
                "{got:?}"
            );
        }
    }
    let results = storage.delete_batch(&keys).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

/// The keys a split's prefixes list and its strays, sorted, each as often as
/// it came.
async fn keys_by_split(storage: &dyn Storage, split: &RepositoryPrefixes) -> Vec<String> {
    let mut seen: Vec<String> = split.objects.iter().map(|o| o.key.clone()).collect();
    for prefix in &split.prefixes {
        seen.extend(listed(storage, prefix).await);
    }
    seen.sort();
    seen
}

/// Lists `prefix` probing and in full, and checks that every object the
/// probing listing returns is in the full one with the same size and mtime.
/// Returns the probing listing's keys, sorted, and the full listing's.
pub async fn probed_as_listed(
    storage: &dyn Storage,
    prefix: &str,
    probe: Probe,
) -> (Vec<String>, BTreeSet<String>) {
    let probed: Vec<_> = storage
        .list_probing(prefix, probe)
        .try_collect()
        .await
        .expect("probing listing succeeds");
    let full: Vec<_> = storage
        .list(prefix)
        .try_collect()
        .await
        .expect("listing succeeds");
    for m in &probed {
        let f = full
            .iter()
            .find(|f| f.key == m.key)
            .unwrap_or_else(|| panic!("{} not in the full listing", m.key));
        if m.is_stated() {
            assert_eq!(
                (m.size, m.last_modified_ms),
                (f.size, f.last_modified_ms),
                "{}",
                m.key
            );
        }
    }
    let mut keys: Vec<String> = probed.into_iter().map(|m| m.key).collect();
    keys.sort();
    (keys, full.into_iter().map(|m| m.key).collect())
}

async fn text(storage: &dyn Storage, key: &str) -> String {
    String::from_utf8(
        storage
            .get(key, 1 << 20)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"))
            .to_vec(),
    )
    .unwrap()
}

/// Listed objects, without the empty directories a filesystem reports.
async fn objects(storage: &dyn Storage, prefix: &str) -> BTreeSet<String> {
    listed(storage, prefix)
        .await
        .into_iter()
        .filter(|k| !k.ends_with('/'))
        .collect()
}

fn pairs(moves: &[(&str, &str)]) -> Vec<(String, String)> {
    moves
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// `put`, `exists` and `move_batch`, on the keys `run` left: `p/<xx>/obj-<i>`
/// holding `content <i>` (all but obj-0000).
async fn writes_and_moves(storage: &dyn Storage, seed: &dyn Seeder) {
    if !seed.takes_writes() {
        // a clear error, and nothing lost
        let err = storage
            .put("w/record.json", Bytes::from_static(b"{}"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("XML API"), "{err}");
        let r = storage
            .move_batch(
                &pairs(&[("p/01/obj-0001", "m/p/01/obj-0001")]),
                MoveMode::Overwrite,
            )
            .await;
        assert!(
            matches!(&r[0], Err(e) if e.to_string().contains("XML API")),
            "{r:?}"
        );
        assert_eq!(text(storage, "p/01/obj-0001").await, "content 1");
        return;
    }
    // put writes whole objects and replaces them
    storage
        .put("w/record.json", Bytes::from_static(b"one"))
        .await
        .unwrap();
    storage
        .put("w/record.json", Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert_eq!(text(storage, "w/record.json").await, "two");
    assert!(storage.exists("w/record.json").await.unwrap());
    assert!(!storage.exists("w/none").await.unwrap());
    assert!(listed(storage, "w/").await.contains("w/record.json"));

    // Overwrite: a result per pair; a missing source is reported, not an error;
    // an existing destination is replaced
    seed.put("m/taken", b"old").await;
    let moves = pairs(&[
        ("p/01/obj-0001", "m/p/01/obj-0001"),
        ("q/never", "m/never"),
        ("p/02/obj-0002", "m/taken"),
    ]);
    let r = storage.move_batch(&moves, MoveMode::Overwrite).await;
    let r: Vec<Moved> = r.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(r, vec![Moved::Moved, Moved::SourceMissing, Moved::Moved]);
    assert_eq!(text(storage, "m/p/01/obj-0001").await, "content 1");
    assert_eq!(text(storage, "m/taken").await, "content 2");
    assert!(
        !storage.exists("p/01/obj-0001").await.unwrap()
            && !storage.exists("p/02/obj-0002").await.unwrap()
    );
    assert!(!storage.exists("m/never").await.unwrap());
    // moving again finds nothing to move
    let again = storage.move_batch(&moves[..1], MoveMode::Overwrite).await;
    assert!(matches!(again[0], Ok(Moved::SourceMissing)), "{again:?}");

    // KeepExisting: never replaces what is there; links the same way (S3
    // writes them back under a condition)
    seed.put("k/live", b"live").await;
    seed.put("k/t/current/link", b"sha256:live").await;
    seed.put("m/t/current/link", b"sha256:old").await;
    seed.put("m/u/current/link", b"sha256:back").await;
    let moves = pairs(&[
        ("m/p/01/obj-0001", "p/01/obj-0001"),
        ("m/taken", "k/live"),
        ("m/none", "k/none"),
        ("m/t/current/link", "k/t/current/link"),
        ("m/u/current/link", "k/u/current/link"),
        ("m/v/current/link", "k/v/current/link"),
    ]);
    let r = storage.move_batch(&moves, MoveMode::KeepExisting).await;
    let r: Vec<Moved> = r.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(
        r,
        vec![
            Moved::Moved,
            Moved::DestinationExists,
            Moved::SourceMissing,
            Moved::DestinationExists,
            Moved::Moved,
            Moved::SourceMissing
        ]
    );
    assert_eq!(text(storage, "p/01/obj-0001").await, "content 1");
    assert!(!storage.exists("m/p/01/obj-0001").await.unwrap());
    assert_eq!(text(storage, "k/live").await, "live");
    assert_eq!(text(storage, "m/taken").await, "content 2");
    assert!(!storage.exists("k/none").await.unwrap());
    assert_eq!(text(storage, "k/t/current/link").await, "sha256:live");
    assert_eq!(text(storage, "m/t/current/link").await, "sha256:old");
    assert_eq!(text(storage, "k/u/current/link").await, "sha256:back");
    assert!(!storage.exists("m/u/current/link").await.unwrap());
    assert!(!storage.exists("k/v/current/link").await.unwrap());

    // a batch out and back, byte for byte (40 keys: Azurite's blob batch is slow
    // enough under load for a few hundred to pass the client's request timeout)
    let keys: Vec<String> = listed(storage, "p/03/")
        .await
        .into_iter()
        .take(40)
        .collect();
    assert_eq!(keys.len(), 40);
    let before: Vec<String> = futures::stream::iter(&keys)
        .then(|k| text(storage, k))
        .collect()
        .await;
    let out: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.clone(), format!("z/run/{k}")))
        .collect();
    let r = storage.move_batch(&out, MoveMode::Overwrite).await;
    assert!(
        r.iter().all(|r| matches!(r, Ok(Moved::Moved))),
        "{:?}",
        r.iter().find(|r| !matches!(r, Ok(Moved::Moved)))
    );
    assert!(objects(storage, "p/03/")
        .await
        .is_disjoint(&keys.iter().cloned().collect()));
    assert_eq!(objects(storage, "z/run/").await.len(), keys.len());
    let back: Vec<(String, String)> = out.into_iter().map(|(a, b)| (b, a)).collect();
    let r = storage.move_batch(&back, MoveMode::KeepExisting).await;
    assert!(
        r.iter().all(|r| matches!(r, Ok(Moved::Moved))),
        "{:?}",
        r.iter().find(|r| !matches!(r, Ok(Moved::Moved)))
    );
    let after: Vec<String> = futures::stream::iter(&keys)
        .then(|k| text(storage, k))
        .collect()
        .await;
    assert_eq!(before, after);
    assert!(objects(storage, "z/").await.is_empty());
    let counts = storage.counts().totals();
    assert!(
        counts.put >= 3 + keys.len() as u64 * 2 && counts.head >= 1,
        "{counts:?}"
    );
}
