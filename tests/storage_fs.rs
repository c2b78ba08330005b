//! The filesystem backend: the shared conformance suite, plus what only a
//! filesystem has (directories, symbolic links, paths that try to escape).

mod conformance;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use registry_gc::storage::fs::FsStorage;
use registry_gc::storage::{Leaf, Probe, Storage, StorageError};

struct DirSeeder(PathBuf);

#[async_trait::async_trait]
impl conformance::Seeder for DirSeeder {
    async fn put(&self, key: &str, bytes: &[u8]) {
        write(&self.0, key, bytes);
    }
}

fn write(root: &Path, key: &str, bytes: &[u8]) {
    let path = root.join(key);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    conformance::run(&storage, &DirSeeder(dir.path().to_path_buf())).await;
}

async fn list_all(storage: &FsStorage) -> Result<Vec<String>, StorageError> {
    storage.list("").map_ok(|m| m.key).try_collect().await
}

#[tokio::test]
async fn symlink_inside_the_root_is_followed_under_its_own_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "real/x", b"1");
    symlink(dir.path().join("real"), dir.path().join("alias")).unwrap();
    let storage = FsStorage::open(&dir.path().join("alias")).unwrap();
    // the root itself may be a link
    assert_eq!(list_all(&storage).await.unwrap(), vec!["x".to_string()]);
}

#[tokio::test]
async fn symlink_out_of_the_root_stops_the_listing() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret", b"s");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a/b", b"1");
    symlink(outside.path(), dir.path().join("a/out")).unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let err = list_all(&storage).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Symlink { key, reason } if key == "a/out" && reason.contains("outside")),
        "{err}"
    );
    // and a delete through it is refused
    let r = storage.delete_batch(&["a/out/secret".to_string()]).await;
    assert!(matches!(&r[0], Err(StorageError::Symlink { .. })), "{r:?}");
    assert!(outside.path().join("secret").exists());
}

#[tokio::test]
async fn reads_follow_links_inside_the_root_and_refuse_links_out_of_it() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret", b"s");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "real/x", b"inside");
    // relative (resolved beneath the root by the kernel) and absolute (resolved
    // and checked by the fallback) links to a directory inside the root
    fs::create_dir_all(dir.path().join("sub")).unwrap();
    symlink("../real", dir.path().join("sub/rel")).unwrap();
    symlink(dir.path().join("real"), dir.path().join("sub/abs")).unwrap();
    // links out of the root, relative and absolute
    let escape = Path::new("..").join(outside.path().strip_prefix("/").unwrap());
    let depth_up: PathBuf = dir.path().components().skip(1).map(|_| "..").collect();
    symlink(depth_up.join(&escape), dir.path().join("sub/out-rel")).unwrap();
    symlink(outside.path(), dir.path().join("sub/out-abs")).unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();

    assert_eq!(&storage.get("sub/rel/x", 100).await.unwrap()[..], b"inside");
    assert_eq!(&storage.get("sub/abs/x", 100).await.unwrap()[..], b"inside");
    for key in ["sub/out-rel/secret", "sub/out-abs/secret"] {
        let err = storage.get(key, 100).await.unwrap_err();
        assert!(
            matches!(&err, StorageError::Symlink { reason, .. } if reason.contains("outside")),
            "{key}: {err}"
        );
        let r = storage.delete_batch(&[key.to_string()]).await;
        assert!(
            matches!(&r[0], Err(StorageError::Symlink { .. })),
            "{key}: {r:?}"
        );
    }
    assert!(outside.path().join("secret").exists());
    // a read never returns more than its limit, whatever the file's size
    assert!(matches!(
        storage.get("real/x", 3).await,
        Err(StorageError::TooLarge {
            size: 6,
            limit: 3,
            ..
        })
    ));
    // and a delete through a link inside the root removes the file it names
    assert!(storage.delete_batch(&["sub/rel/x".to_string()]).await[0].is_ok());
    assert!(!dir.path().join("real/x").exists());
}

#[tokio::test]
async fn broken_symlink_and_loop_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a/b", b"1");
    symlink(dir.path().join("nowhere"), dir.path().join("a/broken")).unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let err = list_all(&storage).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Symlink { key, reason } if key == "a/broken" && reason.contains("broken")),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a/b", b"1");
    symlink(dir.path().join("a"), dir.path().join("a/loop")).unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let err = list_all(&storage).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Symlink { reason, .. } if reason.contains("loop")),
        "{err}"
    );
}

#[tokio::test]
async fn keys_that_would_escape_the_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    write(&root, "a", b"1");
    write(dir.path(), "victim", b"v");
    let storage = FsStorage::open(&root).unwrap();
    for key in ["../victim", "/etc/passwd", "a/../../victim"] {
        let r = storage.delete_batch(&[key.to_string()]).await;
        assert!(
            matches!(&r[0], Err(StorageError::Refused { .. })),
            "{key}: {r:?}"
        );
        assert!(
            matches!(
                storage.get(key, 100).await,
                Err(StorageError::Refused { .. })
            ),
            "{key}"
        );
    }
    assert!(dir.path().join("victim").exists());
    assert_eq!(
        storage.remove_empty_dirs(&["..".to_string()]).await.ok(),
        None
    );
}

#[tokio::test]
async fn remove_empty_dirs_leaves_non_empty_ones() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a/b/c/file", b"1");
    fs::create_dir_all(dir.path().join("a/e/f")).unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let removed = storage
        .remove_empty_dirs(&["a/e/f".into(), "a/e".into(), "a/b/c".into(), "a".into()])
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert!(dir.path().join("a/b/c/file").exists());
    assert!(!dir.path().join("a/e").exists());
}

/// Files removed while a directory is listed (the registry clearing
/// finished uploads) are not there to list: the listing goes on without
/// them, never stopping the run for a file that is gone.
#[test]
fn files_removed_during_a_listing_are_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "kept/file", b"1");
    let uploads = dir.path().join("_uploads");
    fs::create_dir(&uploads).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (stop, uploads) = (stop.clone(), uploads.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let files: Vec<PathBuf> =
                    (0..64).map(|i| uploads.join(format!("{n}-{i}"))).collect();
                files.iter().for_each(|f| fs::write(f, b"x").unwrap());
                files.iter().for_each(|f| fs::remove_file(f).unwrap());
                n += 1;
            }
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let result: Result<(), StorageError> = (0..300).try_for_each(|_| {
        let keys = rt.block_on(list_all(&storage))?;
        assert!(keys.contains(&"kept/file".to_string()), "{keys:?}");
        Ok(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
    result.expect("a listing while files come and go");
}

/// A directory link swapped in after the listing (`a` now leading out of the
/// root) does not take the removal of `a/empty` out of the root with it; a
/// top-level directory goes like any other.
#[tokio::test]
async fn remove_empty_dirs_stays_beneath_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir(outside.path().join("empty")).unwrap();
    symlink(outside.path(), dir.path().join("a")).unwrap();
    fs::create_dir(dir.path().join("top")).unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let removed = storage
        .remove_empty_dirs(&["a/empty/".into(), "top".into()])
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(
        outside.path().join("empty").is_dir(),
        "an empty directory outside the root was removed"
    );
    assert!(!dir.path().join("top").exists());
}

#[tokio::test]
async fn empty_directories_are_listed_with_a_trailing_slash_and_missing_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a/file", b"1");
    fs::create_dir_all(dir.path().join("a/empty/deeper")).unwrap();
    fs::create_dir_all(dir.path().join("b")).unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let mut keys = list_all(&storage).await.unwrap();
    keys.sort();
    assert_eq!(keys, vec!["a/empty/deeper/", "a/file", "b/"]);
    let none: Vec<String> = storage
        .list("missing/")
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn probing_stats_the_leaf_of_probed_subdirectories_and_reads_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "x/h1/link", b"one");
    write(root, "x/h1/stray", b"left out: h1 has its leaf");
    write(root, "x/h2/other", b"h2 has no leaf: read in full");
    fs::create_dir_all(root.join("x/h3/link")).unwrap(); // a directory named like the leaf
    write(root, "x/h3/link/inner", b"listed");
    fs::create_dir_all(root.join("x/h4")).unwrap(); // empty: reported as a full listing would
    write(root, "target", b"linked");
    fs::create_dir_all(root.join("x/h5")).unwrap();
    symlink(root.join("target"), root.join("x/h5/link")).unwrap(); // resolved by the full read
    write(root, "x/link", b"in the probed directory itself");
    write(root, "y/h6/link", b"not probed");
    write(root, "y/h6/stray", b"listed");
    write(
        root,
        "z/h8/data",
        b"z's subdirectories are probed for another leaf",
    );
    write(root, "z/h8/link", b"left out");
    let storage = FsStorage::open(root).unwrap();
    let probe = Probe {
        leaf_of: |dir| match dir {
            "x/" => Some(Leaf::file("link")),
            "z/" => Some(Leaf::file("data")),
            _ => None,
        },
    };
    // each as the full listing has it: same size and mtime
    let (keys, _) = conformance::probed_as_listed(&storage, "", probe).await;
    assert_eq!(
        keys,
        [
            "target",
            "x/h1/link",
            "x/h2/other",
            "x/h3/link/inner",
            "x/h4/",
            "x/h5/link",
            "x/link",
            "y/h6/link",
            "y/h6/stray",
            "z/h8/data"
        ]
    );

    // a leaf that is a link out of the root is read in full, and refused
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"s").unwrap();
    fs::create_dir_all(root.join("x/h7")).unwrap();
    symlink(outside.path().join("secret"), root.join("x/h7/link")).unwrap();
    let err = storage
        .list_probing("", probe)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::Symlink { key, .. } if key == "x/h7/link"),
        "{err}"
    );
}

#[tokio::test]
async fn probing_a_leaf_with_a_directory_to_list_skips_the_directories_between() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // shaped like a repository's tags: `<tag>/current/link`, `<tag>/index/sha256/<hex>/link`
    write(root, "t/v1/current/link", b"current");
    write(root, "t/v1/index/sha256/h1/link", b"indexed");
    write(
        root,
        "t/v1/index/sha256/h1/stray",
        b"left out: h1 has its link",
    );
    write(
        root,
        "t/v1/index/sha256/h2/other",
        b"h2 has no link: read in full",
    );
    write(root, "t/v1/current/link~", b"left out: beside the leaf");
    write(root, "t/v1/stray", b"left out: beside current and index");
    fs::create_dir_all(root.join("t/v1/index/sha256/h3")).unwrap(); // empty: reported
    write(
        root,
        "t/v2/current/link",
        b"no index: the tag is read in full",
    );
    write(root, "t/v2/other", b"listed");
    write(
        root,
        "t/v3/index/sha256/h4/link",
        b"no current link: read in full",
    );
    write(root, "t/v3/other", b"listed");
    write(root, "elsewhere/sha256/h5/link", b"reached through a link");
    write(root, "t/v4/current/link", b"current");
    symlink(root.join("elsewhere"), root.join("t/v4/index")).unwrap(); // not taken by the shortcut
    let storage = FsStorage::open(root).unwrap();
    let probe = Probe {
        leaf_of: |dir| match dir {
            "t/" => Some(Leaf {
                file: "current/link",
                then_list: Some("index/sha256"),
                stat: true,
            }),
            d if d.ends_with("/index/sha256/") => Some(Leaf::file("link")),
            _ => None,
        },
    };
    // each as the full listing has it: same size and mtime
    let (keys, _) = conformance::probed_as_listed(&storage, "t/", probe).await;
    assert_eq!(
        keys,
        [
            "t/v1/current/link",
            "t/v1/index/sha256/h1/link",
            "t/v1/index/sha256/h2/other",
            "t/v1/index/sha256/h3/",
            "t/v2/current/link",
            "t/v2/other",
            "t/v3/index/sha256/h4/link",
            "t/v3/other",
            "t/v4/current/link",
            "t/v4/index/sha256/h5/link",
        ]
    );

    // a link out of the root on the way to the listed directory is read in
    // full, and refused
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(outside.path().join("sha256")).unwrap();
    write(root, "t/v5/current/link", b"current");
    symlink(outside.path(), root.join("t/v5/index")).unwrap();
    let err = storage
        .list_probing("t/", probe)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::Symlink { key, .. } if key == "t/v5/index"),
        "{err}"
    );
}

/// A named leaf is listed from its directory's name alone: no stat, no HEAD,
/// whatever the directory holds; `stat_batch` then says what is there.
#[tokio::test]
async fn named_leaves_are_listed_unstated_and_stat_batch_says_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "b/ab/d1/data", b"twelve bytes");
    fs::create_dir_all(root.join("b/ab/d2")).unwrap(); // emptied: no data
    write(root, "b/ab/d3/junk", b"no data either");
    write(root, "b/cd/d4/data", b"4");
    write(
        root,
        "b/cd/d6/data/junk",
        b"a directory where the blob's data would be",
    );
    write(
        root,
        "b/cd/stray",
        b"a file among the digest directories: listed and stat'ed",
    );
    symlink(root.join("b/ab/d1/data"), root.join("b/cd/d5")).unwrap();
    let storage = FsStorage::open(root).unwrap();
    let probe = Probe {
        leaf_of: |dir| (dir == "b/ab/" || dir == "b/cd/").then_some(Leaf::named("data")),
    };
    let heads = storage.counts().totals().head;
    let mut listed: Vec<_> = storage
        .list_probing("b/", probe)
        .try_collect()
        .await
        .unwrap();
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        storage.counts().totals().head,
        heads,
        "a named leaf costs no stat"
    );
    let shown: Vec<(&str, bool)> = listed
        .iter()
        .map(|m| (m.key.as_str(), m.is_stated()))
        .collect();
    assert_eq!(
        shown,
        [
            ("b/ab/d1/data", false),
            ("b/ab/d2/data", false),
            ("b/ab/d3/data", false),
            ("b/cd/d4/data", false),
            ("b/cd/d5", true),
            ("b/cd/d6/data", false),
            ("b/cd/stray", true)
        ]
    );

    let keys: Vec<String> = [
        "b/ab/d1/data",
        "b/ab/d2/data",
        "b/ab/d3/data",
        "b/cd/d4/data",
        "b/ab/d2/",
        "b/cd/d5",
        "b/cd/d6/data",
        "b/cd/d4/",
    ]
    .map(String::from)
    .into();
    let results = storage.stat_batch(&keys).await;
    assert_eq!(storage.counts().totals().head, heads + 8);
    assert_eq!(results[0].as_ref().map(|m| m.size).ok(), Some(12));
    assert!(
        results[1].as_ref().is_err_and(StorageError::is_not_found),
        "{:?}",
        results[1]
    );
    assert!(
        results[2].as_ref().is_err_and(StorageError::is_not_found),
        "{:?}",
        results[2]
    );
    assert_eq!(results[3].as_ref().map(|m| m.size).ok(), Some(1));
    // a directory, for the age of one whose file is missing
    let d2_mtime = fs::metadata(root.join("b/ab/d2"))
        .unwrap()
        .modified()
        .unwrap();
    let d2_ms = d2_mtime
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(
        results[4].as_ref().map(|m| m.last_modified_ms).ok(),
        Some(d2_ms)
    );
    // a link inside the root: what it points at
    assert_eq!(
        results[5].as_ref().map(|m| (m.key.as_str(), m.size)).ok(),
        Some(("b/cd/d5", 12))
    );
    // a directory asked for as an object is not one, as in a listing
    assert!(
        results[6].as_ref().is_err_and(StorageError::is_not_found),
        "{:?}",
        results[6]
    );
    assert!(results[7].is_ok(), "{:?}", results[7]);

    // a link out of the root, or broken, is an error naming the key
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "data", b"not the registry's");
    symlink(outside.path().join("data"), root.join("b/ab/d2/data")).unwrap();
    symlink(root.join("nowhere"), root.join("b/ab/d3/data")).unwrap();
    let results = storage.stat_batch(&keys[1..3]).await;
    for (key, result) in keys[1..3].iter().zip(&results) {
        assert!(
            matches!(result, Err(StorageError::Symlink { key: k, .. }) if k == key),
            "{key}: {result:?}"
        );
    }
}
