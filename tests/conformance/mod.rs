//! One storage conformance suite, run against every backend: each backend's test
//! file provides a fresh, empty storage and a way to write objects into it.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use registry_gc::storage::{Storage, StorageError};

/// Writes an object into the backend under test, outside the trait (the trait
/// has no writes: registry-gc never writes into a registry).
#[async_trait::async_trait]
pub trait Seeder: Sync {
    async fn put(&self, key: &str, bytes: &[u8]);
}

async fn listed(storage: &dyn Storage, prefix: &str) -> BTreeSet<String> {
    storage.list(prefix).map_ok(|m| m.key).try_collect().await.expect("listing succeeds")
}

pub async fn run(storage: &dyn Storage, seed: &dyn Seeder) {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;

    // An empty storage lists nothing, and a missing prefix is not an error.
    assert!(listed(storage, "").await.is_empty());
    assert!(listed(storage, "nothing/here/").await.is_empty());

    // More keys than one S3 or GCS listing page.
    let mut all = BTreeSet::new();
    let keys: Vec<String> = (0..1203).map(|i| format!("p/{:02x}/obj-{i:04}", i % 7)).collect();
    futures::stream::iter(keys.iter().enumerate())
        .for_each_concurrent(16, |(i, key)| async move { seed.put(key, format!("content {i}").as_bytes()).await })
        .await;
    all.extend(keys);
    seed.put("q/a", b"0123456789").await;
    seed.put("q/b/c", b"x").await;
    seed.put("qq", b"y").await;
    all.extend(["q/a".to_string(), "q/b/c".to_string(), "qq".to_string()]);

    assert_eq!(listed(storage, "").await, all, "list of everything");
    let p03: BTreeSet<String> = all.iter().filter(|k| k.starts_with("p/03/")).cloned().collect();
    assert_eq!(listed(storage, "p/03/").await, p03, "list by prefix");
    assert_eq!(listed(storage, "q/").await, ["q/a", "q/b/c"].map(String::from).into(), "prefix is a directory boundary");
    let q_all: BTreeSet<String> = ["q/a", "q/b/c", "qq"].map(String::from).into();
    assert_eq!(listed(storage, "q").await, q_all, "prefix that is not a directory boundary");

    // Listing reports size and a plausible last-modified.
    let metas: Vec<_> = storage.list("q/").try_collect().await.unwrap();
    let a = metas.iter().find(|m| m.key == "q/a").unwrap();
    assert_eq!(a.size, 10);
    assert!((a.last_modified_ms - now_ms).abs() < 10 * 60_000, "last-modified {} vs now {}", a.last_modified_ms, now_ms);

    // One level with a delimiter.
    let level = storage.list_dir("q/").await.unwrap();
    assert_eq!(level.prefixes, vec!["q/b/".to_string()]);
    assert_eq!(level.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), vec!["q/a"]);
    let top = storage.list_dir("").await.unwrap();
    assert_eq!(top.prefixes, vec!["p/".to_string(), "q/".to_string()]);
    assert_eq!(top.objects.len(), 1);
    let p_level = storage.list_dir("p/").await.unwrap();
    assert_eq!(p_level.prefixes.len(), 7);

    // Reads, with a size limit, and not-found.
    assert_eq!(&storage.get("q/a", 1024).await.unwrap()[..], b"0123456789");
    assert!(matches!(storage.get("q/a", 5).await, Err(StorageError::TooLarge { .. })));
    assert!(storage.get("q/missing", 1024).await.unwrap_err().is_not_found());

    // Batch delete: a result per key, missing keys count as deleted.
    let batch: Vec<String> = vec!["q/a".into(), "q/never-existed".into(), "p/00/obj-0000".into()];
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
    let big: Vec<u8> = (0..2_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    seed.put("s/big", &big).await;
    seed.put("s/empty", b"").await;
    let streamed = |key: &'static str| async move {
        let chunks: Vec<bytes::Bytes> = storage.get_stream(key).await.expect("stream opens").try_collect().await.expect("stream reads");
        chunks.concat()
    };
    assert!(streamed("s/big").await == big, "streamed content differs");
    assert!(streamed("s/empty").await.is_empty());
    assert_eq!(streamed("q/b/c").await, b"x");
    match storage.get_stream("s/missing").await {
        Err(e) => assert!(e.is_not_found(), "{e}"),
        Ok(_) => panic!("a stream of a missing key opened"),
    }
}
