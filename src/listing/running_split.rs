//! A listing that splits itself once it has run long. The plan's prefixes are
//! sized before anything is listed, from the registry's size shared evenly
//! among its top-level directories; one namespace holding most repositories
//! among many small ones is then one prefix read page after page. Once such a
//! prefix has returned `SplitRule::after_keys` keys, its listing finishes only
//! the subdirectory it is in, and what sorts after that is listed as separate
//! prefixes, concurrently (each of which may split itself again).
//!
//! This rests on the order S3, GCS and Azure document for listings: keys
//! sorted by their bytes. The head of a listing, up to the split, is checked
//! to be in that order (a listing that is not is never split), and a key that
//! sorts before the subdirectory being finished is an error: a key it missed
//! would be a live object deleted. Two things make the keys seen differ from
//! the keys the store sorted, and both are allowed for:
//! - object_store drops the trailing `/` of a directory marker (the empty
//!   `dir/` object the S3 console, s3fs, gcsfuse and rclone write), so `d/`,
//!   sorted after `d-x/1`, comes as `d`;
//! - Azure is reported to sort by UTF-16 code units, which orders a character
//!   from U+E000 to U+FFFF after one above U+FFFF where bytes put it before: a
//!   level whose names hold such a character is not split.

use std::collections::BinaryHeap;

use futures::stream::{self, BoxStream, StreamExt};

use crate::storage::{lists, DirListing, ObjectMeta, Storage, StorageError};

type Listing<'a> = BoxStream<'a, Result<ObjectMeta, StorageError>>;

/// When and how a running listing splits.
#[derive(Debug, Clone, Copy)]
pub struct SplitRule {
    /// Keys a listing returns before what sorts after its current
    /// subdirectory is listed separately.
    pub after_keys: usize,
    /// Keys each prefix listed in its place should hold, about: a page, so
    /// that each costs at most one partial page more than its keys.
    pub keys_per_piece: usize,
    /// Prefixes one split makes, at most.
    pub max_pieces: usize,
    /// How many times a listing of a listing's piece may split again.
    pub max_depth: usize,
    /// Pieces of one split listed at once (the store's limit on LIST
    /// requests in flight, `Storage::limit_list_requests`, bounds them all).
    pub concurrency: usize,
}

impl SplitRule {
    /// For a store whose listing pages hold `page` keys: split after 16 pages
    /// (about 1.6 s of sequential requests on S3; a directory read costs one
    /// request, under 7% of them).
    pub fn for_pages(page: usize, concurrency: usize) -> SplitRule {
        SplitRule {
            after_keys: 16 * page,
            keys_per_piece: page,
            max_pieces: 64,
            max_depth: 4,
            concurrency: concurrency.max(1),
        }
    }
}

/// Lists `prefix` (a directory's key, or a group's: any string prefix on a
/// store that pages) like `Storage::list`, every key exactly once, splitting
/// by `rule` as it goes.
pub fn list_splitting<'a>(storage: &'a dyn Storage, prefix: &str, rule: SplitRule) -> Listing<'a> {
    list_piece(
        storage,
        Piece {
            prefix: prefix.to_string(),
            children: None,
        },
        rule,
        0,
    )
}

/// One prefix to list, with the level below it when its parent's directory
/// read already told it (a group of that parent's subdirectories).
struct Piece {
    prefix: String,
    children: Option<DirListing>,
}

enum State<'a> {
    /// Passing keys on, counting them and checking their order, until it
    /// splits (if `splits`). Under `bound` it is finishing that subdirectory
    /// for a split made further up: it ends at the first key past it.
    Head {
        piece: Piece,
        inner: Listing<'a>,
        seen: usize,
        last: String,
        bound: Option<String>,
        splits: bool,
    },
    /// After the split: the running listing and the separate ones, together.
    Rest(Listing<'a>),
    Done,
}

fn list_piece<'a>(
    storage: &'a dyn Storage,
    piece: Piece,
    rule: SplitRule,
    depth: usize,
) -> Listing<'a> {
    let inner = storage.list(&piece.prefix);
    if depth >= rule.max_depth || rule.after_keys == 0 {
        return inner;
    }
    let state = State::Head {
        piece,
        inner,
        seen: 0,
        last: String::new(),
        bound: None,
        splits: true,
    };
    stream::unfold(state, move |state| next(storage, state, rule, depth)).boxed()
}

/// The running listing `inner`, which has just returned `last`, finishing
/// the subdirectory `within`: it may split again inside it, `depth` levels down.
fn finish<'a>(
    storage: &'a dyn Storage,
    inner: Listing<'a>,
    within: String,
    last: String,
    rule: SplitRule,
    depth: usize,
) -> Listing<'a> {
    let piece = Piece {
        prefix: within.clone(),
        children: None,
    };
    let state = State::Head {
        piece,
        inner,
        seen: 0,
        last,
        bound: Some(within),
        splits: depth < rule.max_depth,
    };
    stream::unfold(state, move |state| next(storage, state, rule, depth)).boxed()
}

/// Whether a store listing by bytes can have returned `key` after `last`:
/// `key` sorts after it, or `key` is a directory marker `key/` whose `/`
/// object_store dropped (`d/` sorts after `d-x/1`, and comes as `d`).
fn in_store_order(key: &str, last: &str) -> bool {
    key > last
        || (last.len() > key.len() && last.starts_with(key) && last.as_bytes()[key.len()] < b'/')
}

/// Whether `name` holds a character that bytes and UTF-16 code units sort
/// differently (U+E000 and above: UTF-8 lead bytes 0xEE to 0xF4).
fn sorts_differently_in_utf16(name: &str) -> bool {
    name.bytes().any(|b| b >= 0xEE)
}

fn out_of_order(key: &str, after: &str) -> StorageError {
    StorageError::Remote {
        key: key.to_string(),
        reason: format!("listing came out of sorted order: {key} after {after}"),
    }
}

async fn next<'a>(
    storage: &'a dyn Storage,
    state: State<'a>,
    rule: SplitRule,
    depth: usize,
) -> Option<(Result<ObjectMeta, StorageError>, State<'a>)> {
    match state {
        State::Head {
            mut piece,
            mut inner,
            seen,
            mut last,
            bound,
            splits,
        } => {
            let o = match inner.next().await? {
                Ok(o) => o,
                Err(e) => return Some((Err(e), State::Done)),
            };
            if let Some(bound) = &bound {
                if !o.key.starts_with(bound.as_str()) {
                    // past the subdirectory: what sorts after it is listed
                    // separately, this listing's later pages are never requested
                    return (!in_store_order(&o.key, bound))
                        .then(|| (Err(out_of_order(&o.key, bound)), State::Done));
                }
            }
            if !last.is_empty() && !in_store_order(&o.key, &last) {
                return match bound {
                    // a split further up rested on this order
                    Some(_) => Some((Err(out_of_order(&o.key, &last)), State::Done)),
                    // never split (nothing says where the rest of a
                    // subdirectory's keys would be)
                    None => Some((Ok(o), State::Rest(inner))),
                };
            }
            let seen = seen + 1;
            if !splits || seen < rule.after_keys {
                last.clear();
                last.push_str(&o.key);
                return Some((
                    Ok(o),
                    State::Head {
                        piece,
                        inner,
                        seen,
                        last,
                        bound,
                        splits,
                    },
                ));
            }
            match split_after(storage, &mut piece, &o.key, seen, rule, depth).await {
                // names the byte order may not hold for: listed on, unsplit
                Ok(None) => {
                    last.clear();
                    last.push_str(&o.key);
                    Some((
                        Ok(o),
                        State::Head {
                            piece,
                            inner,
                            seen,
                            last,
                            bound,
                            splits: false,
                        },
                    ))
                }
                Ok(Some(split)) => {
                    let rest = match split.within {
                        Some(within) => {
                            let running = finish(
                                storage,
                                inner,
                                within,
                                o.key.clone(),
                                rule,
                                split.depth + 1,
                            );
                            stream::select(running, split.rest).boxed()
                        }
                        // the last key is the directory's own object: this
                        // listing stops here
                        None => split.rest,
                    };
                    Some((Ok(o), State::Rest(rest)))
                }
                Err(e) => Some((Err(e), State::Done)),
            }
        }
        State::Rest(mut rest) => {
            let item = rest.next().await?;
            let done = item.is_err();
            Some((item, if done { State::Done } else { State::Rest(rest) }))
        }
        State::Done => None,
    }
}

/// Where a listing splits: the subdirectory its last key is in (which it
/// finishes), found `depth` levels down, and a listing of what sorts after it.
struct Split<'a> {
    within: Option<String>,
    depth: usize,
    rest: Listing<'a>,
}

/// The split of `piece` whose listing has just returned `last`, its `seen`th
/// key: the subdirectory `last` is in (the running listing finishes it,
/// concurrently with the rest), and a listing of every key under `piece` that
/// sorts after that subdirectory (or after `last` itself, when it is the
/// piece's own object).
async fn split_after<'a>(
    storage: &'a dyn Storage,
    running: &mut Piece,
    last: &str,
    seen: usize,
    rule: SplitRule,
    depth: usize,
) -> Result<Option<Split<'a>>, StorageError> {
    let (mut piece, mut depth) = (
        Piece {
            prefix: running.prefix.clone(),
            children: running.children.take(),
        },
        depth,
    );
    let (within, after, later, passed, mut objects) = loop {
        let children = match piece.children.take() {
            Some(children) => children,
            None => storage.list_dir(&piece.prefix).await?,
        };
        let names = children
            .prefixes
            .iter()
            .map(String::as_str)
            .chain(children.objects.iter().map(|o| o.key.as_str()));
        if names.into_iter().any(sorts_differently_in_utf16) {
            return Ok(None);
        }
        // the subdirectory `last` is in; or, when `last` is no object of
        // this level but `last/` is a subdirectory, `last` is that
        // subdirectory's marker (its `/` dropped), which sorts first in it
        let marker = |d: &String| {
            d.len() == last.len() + 1
                && d.starts_with(last)
                && !children.objects.iter().any(|o| o.key == last)
        };
        let within = children
            .prefixes
            .iter()
            .find(|d| last.starts_with(d.as_str()) || marker(d))
            .cloned();
        let after = After {
            boundary: within.clone().unwrap_or_else(|| last.to_string()),
            directory: within.is_some(),
        };
        let later: Vec<String> = children
            .prefixes
            .iter()
            .filter(|d| after.holds(d))
            .cloned()
            .collect();
        let passed = children.prefixes.len() - later.len();
        let objects: Vec<ObjectMeta> = children
            .objects
            .into_iter()
            .filter(|o| after.holds(&o.key))
            .collect();
        match within {
            // nothing sorts after the running subdirectory here (a namespace
            // whose last repository is the big one): split inside it
            Some(inner) if later.is_empty() && objects.is_empty() && depth + 1 < rule.max_depth => {
                piece = Piece {
                    prefix: inner,
                    children: None,
                };
                depth += 1;
            }
            _ => break (within, after, later, passed, objects),
        }
    };
    // as many keys in each later subdirectory as in each passed one, about
    let estimate = usize::try_from(seen as u128 * later.len() as u128 / passed.max(1) as u128)
        .unwrap_or(usize::MAX);
    let max = rule.max_pieces.max(1);
    let target = estimate.div_ceil(rule.keys_per_piece.max(1)).clamp(1, max);
    let pieces: Vec<Piece> = cover(&later, &piece.prefix, &after, target, max)
        .into_iter()
        .map(|g| {
            if g.prefix.ends_with('/') {
                return Piece {
                    prefix: g.prefix,
                    children: None,
                };
            }
            // a group: its members, and the objects its listing returns (one
            // whose key is the group's prefix is not among them: it stays here)
            let members = later[g.members].to_vec();
            let (taken, beside) = std::mem::take(&mut objects)
                .into_iter()
                .partition(|o| lists(&g.prefix, &o.key));
            objects = beside;
            Piece {
                prefix: g.prefix,
                children: Some(DirListing {
                    prefixes: members,
                    objects: taken,
                }),
            }
        })
        .collect();
    tracing::info!(
        prefix = %piece.prefix,
        after_keys = seen,
        finishing = within.as_deref().unwrap_or("-"),
        prefixes = pieces.len(),
        "a long listing split: what sorts after the directory it is finishing is listed as separate prefixes"
    );
    let listed = stream::iter(pieces)
        .map(move |p| list_piece(storage, p, rule, depth + 1))
        .flatten_unordered(rule.concurrency);
    let rest = stream::iter(objects.into_iter().map(Ok))
        .chain(listed)
        .boxed();
    Ok(Some(Split {
        within,
        depth,
        rest,
    }))
}

/// What the split leaves to the separate listings: every key sorting after
/// `boundary`, which is the subdirectory the running listing finishes (then
/// none of its keys) or the last key it returned.
struct After {
    boundary: String,
    directory: bool,
}

impl After {
    /// Whether every key starting with `prefix` is left to the separate
    /// listings: it sorts after the boundary and, when that is the running
    /// subdirectory, is not in it.
    fn holds(&self, prefix: &str) -> bool {
        prefix > self.boundary.as_str() && !(self.directory && prefix.starts_with(&self.boundary))
    }
}

/// A prefix and the range of the sorted subdirectories it covers.
#[derive(Debug, PartialEq, Eq)]
struct Group {
    prefix: String,
    members: std::ops::Range<usize>,
}

/// Disjoint prefixes covering the subdirectories `dirs` (sorted, all held by
/// `after`, children of `parent`) and nothing the running listing returns:
/// the fewest such prefixes, then the largest split by one more character
/// until there are about `target` (never more than `max`).
fn cover(dirs: &[String], parent: &str, after: &After, target: usize, max: usize) -> Vec<Group> {
    // keys with a common prefix are contiguous in sorted order, so a prefix
    // the boundary does not start with that sorts after it takes in nothing
    // the running listing returns
    let mut groups = Vec::new();
    let mut pending = vec![Group {
        prefix: parent.to_string(),
        members: 0..dirs.len(),
    }];
    while let Some(g) = pending.pop() {
        if g.members.is_empty() {
            continue;
        }
        if after.holds(&g.prefix) {
            groups.push(g);
        } else {
            pending.extend(one_char_more(dirs, &g));
        }
    }
    let mut by_size: BinaryHeap<(usize, std::cmp::Reverse<String>, usize)> = BinaryHeap::new();
    let mut groups: Vec<Option<Group>> = groups.into_iter().map(Some).collect();
    for (i, g) in groups.iter().enumerate() {
        let g = g.as_ref().expect("just made");
        by_size.push((g.members.len(), std::cmp::Reverse(g.prefix.clone()), i));
    }
    let mut count = groups.len();
    while count < target {
        let Some((size, _, i)) = by_size.pop() else {
            break;
        };
        if size < 2 {
            break;
        }
        let g = groups[i].take().expect("each group is in the heap once");
        let finer = one_char_more(dirs, &g);
        if count - 1 + finer.len() > max {
            groups[i] = Some(g);
            break;
        }
        count += finer.len() - 1;
        for f in finer {
            by_size.push((
                f.members.len(),
                std::cmp::Reverse(f.prefix.clone()),
                groups.len(),
            ));
            groups.push(Some(f));
        }
    }
    let mut groups: Vec<Group> = groups.into_iter().flatten().collect();
    groups.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    groups
}

/// `g`'s members grouped by the character after its prefix; a member that
/// is the prefix itself (a whole directory) cannot be split and stays as it is.
fn one_char_more(dirs: &[String], g: &Group) -> Vec<Group> {
    let mut finer: Vec<Group> = Vec::new();
    for i in g.members.clone() {
        let d = &dirs[i];
        let prefix = match d[g.prefix.len()..].chars().next() {
            Some(c) => &d[..g.prefix.len() + c.len_utf8()],
            None => d.as_str(),
        };
        match finer.last_mut() {
            Some(last) if last.prefix == prefix => last.members.end = i + 1,
            _ => finer.push(Group {
                prefix: prefix.to_string(),
                members: i..i + 1,
            }),
        }
    }
    finer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::counts::RequestCounts;
    use crate::storage::{MoveMode, Moved};
    use bytes::Bytes;
    use futures::TryStreamExt;

    /// A store listing its keys in the order given (one page), to show what
    /// the split does with an order the stores it is for never give.
    #[derive(Debug)]
    struct InOrder {
        keys: Vec<String>,
        counts: RequestCounts,
    }

    impl InOrder {
        fn new(keys: &[&str]) -> InOrder {
            InOrder {
                keys: keys.iter().map(|k| k.to_string()).collect(),
                counts: RequestCounts::default(),
            }
        }

        /// As object_store reports it: a directory marker `d/` as `d`.
        fn meta(key: &str) -> ObjectMeta {
            ObjectMeta {
                key: key.strip_suffix('/').unwrap_or(key).to_string(),
                size: 1,
                last_modified_ms: 0,
                etag: None,
            }
        }
    }

    #[async_trait::async_trait]
    impl Storage for InOrder {
        fn describe(&self) -> String {
            "in order".into()
        }
        fn counts(&self) -> &RequestCounts {
            &self.counts
        }
        fn list(&self, prefix: &str) -> Listing<'_> {
            self.counts.list(1);
            let keys: Vec<_> = self
                .keys
                .iter()
                .filter(|k| lists(prefix, k))
                .map(|k| Ok(Self::meta(k)))
                .collect();
            stream::iter(keys).boxed()
        }
        async fn list_dir(&self, prefix: &str) -> Result<DirListing, StorageError> {
            self.counts.list(1);
            let mut level = DirListing::default();
            for k in self.keys.iter().filter(|k| lists(prefix, k)) {
                match k[prefix.len()..].find('/') {
                    Some(i) => level.prefixes.push(k[..prefix.len() + i + 1].to_string()),
                    None => level.objects.push(Self::meta(k)),
                }
            }
            level.prefixes.sort();
            level.prefixes.dedup();
            level.objects.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(level)
        }
        async fn get(&self, key: &str, _: u64) -> Result<Bytes, StorageError> {
            Err(StorageError::NotFound { key: key.into() })
        }
        async fn stat_batch(&self, keys: &[String]) -> Vec<Result<ObjectMeta, StorageError>> {
            keys.iter()
                .map(|k| Err(StorageError::NotFound { key: k.clone() }))
                .collect()
        }
        async fn delete_batch(&self, _: &[String]) -> Vec<Result<(), StorageError>> {
            unreachable!("a listing never deletes")
        }
        async fn put(&self, _: &str, _: Bytes) -> Result<(), StorageError> {
            unreachable!("a listing never writes")
        }
        async fn exists(&self, _: &str) -> Result<bool, StorageError> {
            unreachable!("a listing never checks a key")
        }
        async fn move_batch(
            &self,
            _: &[(String, String)],
            _: MoveMode,
        ) -> Vec<Result<Moved, StorageError>> {
            unreachable!("a listing never moves")
        }
        fn max_delete_batch(&self) -> usize {
            1
        }
    }

    fn rule(after_keys: usize) -> SplitRule {
        SplitRule {
            after_keys,
            keys_per_piece: 1,
            max_pieces: 64,
            max_depth: 3,
            concurrency: 4,
        }
    }

    #[tokio::test]
    async fn a_listing_out_of_order_is_never_split() {
        let store = InOrder::new(&["r/b/1", "r/a/1", "r/a/2", "r/c/1"]);
        let got: Vec<String> = list_splitting(&store, "r/", rule(3))
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got, ["r/b/1", "r/a/1", "r/a/2", "r/c/1"]);
        assert_eq!(
            store.counts.totals().list,
            1,
            "the directory was read for a split"
        );
    }

    #[tokio::test]
    async fn a_key_before_the_subdirectory_being_finished_is_an_error() {
        // in order up to the split, after `r/b/2`; then a key of `r/a/`
        let store = InOrder::new(&["r/b/1", "r/b/2", "r/a/1", "r/c/1"]);
        let err = list_splitting(&store, "r/", rule(2))
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("r/a/1 after r/b/"), "{err}");
    }

    #[tokio::test]
    async fn the_subdirectory_being_finished_splits_again() {
        let keys = ["r/a/1", "r/b/x/1", "r/b/x/2", "r/b/y/1", "r/b/z/1", "r/c/1"];
        let store = InOrder::new(&keys);
        let mut got: Vec<String> = list_splitting(&store, "r/", rule(2))
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap();
        got.sort();
        assert_eq!(got, keys);
        // the running listing; after `r/b/x/1`, `r/`'s level and `r/c`;
        // after `r/b/y/1`, two keys into finishing `r/b/`, its level and `r/b/z`
        assert_eq!(store.counts.totals().list, 5);
        // and a key out of order inside it, after a split further up rested on the order
        let store = InOrder::new(&["r/a/1", "r/b/x/1", "r/b/y/1", "r/b/x/2", "r/c/1"]);
        let err = list_splitting(
            &store,
            "r/",
            SplitRule {
                after_keys: 2,
                ..rule(2)
            },
        )
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
        assert!(err.to_string().contains("r/b/x/2 after r/b/y/1"), "{err}");
    }

    #[tokio::test]
    async fn a_sorted_listing_splits_after_its_running_subdirectory() {
        let keys = ["r/a/1", "r/a/2", "r/b/1", "r/b/2", "r/c", "r/d/1", "r/e/1"];
        let store = InOrder::new(&keys);
        let once = SplitRule {
            max_depth: 1,
            ..rule(1)
        };
        let mut got: Vec<String> = list_splitting(&store, "r/", once)
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap();
        got.sort();
        assert_eq!(got, keys);
        // the running listing, `r/`'s level, and `r/b`, `r/d`, `r/e`
        // listed separately (`r/c` came with the level), none split again
        assert_eq!(store.counts.totals().list, 5);
    }

    /// Directory markers (`d/`, empty objects the S3 console, s3fs and
    /// gcsfuse write) come without their `/`, so `r/b/` sorted after
    /// `r/b-x/1` comes as `r/b`, which looks out of order, and `r/b` as the
    /// last key before a split is `r/b/`'s own, not an object before
    /// `r/b-x/`. Split after every key, every key comes once, no error.
    #[tokio::test]
    async fn directory_markers_whose_slash_object_store_drops() {
        let keys = [
            "r/a/1",
            "r/a/2",
            "r/b-x/1",
            "r/b/",
            "r/b/1",
            "r/b/2",
            "r/b/c-d/1",
            "r/b/c/",
            "r/b/c/1",
            "r/b0/1",
            "r/c/",
        ];
        // a directory's own marker is not listed with it (`lists`), and the
        // level read folds it into the directory: some markers are not seen
        let must: Vec<String> = keys
            .iter()
            .filter(|k| !k.ends_with('/'))
            .map(|k| k.to_string())
            .collect();
        for after_keys in 1..=keys.len() {
            for max_depth in [1, 3] {
                let store = InOrder::new(&keys);
                let r = SplitRule {
                    max_depth,
                    ..rule(after_keys)
                };
                let got: Vec<String> = list_splitting(&store, "r/", r)
                    .map_ok(|m| m.key)
                    .try_collect()
                    .await
                    .unwrap_or_else(|e| panic!("after {after_keys}: {e}"));
                let mut unique = got.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(
                    unique.len(),
                    got.len(),
                    "after {after_keys}, depth {max_depth}: a key twice in {got:?}"
                );
                assert!(
                    must.iter().all(|k| got.contains(k)),
                    "after {after_keys}, depth {max_depth}: {got:?}"
                );
                assert!(
                    got.iter()
                        .all(|k| keys.contains(&k.as_str())
                            || keys.contains(&format!("{k}/").as_str())),
                    "{got:?}"
                );
            }
        }
        // a real object `r/b` beside the directory `r/b/` is no marker: what
        // sorts after it (`r/b-x/`) is listed separately
        let keys = ["r/a/1", "r/b", "r/b-x/1", "r/b/1"];
        let store = InOrder::new(&keys);
        let got: Vec<String> = list_splitting(
            &store,
            "r/",
            SplitRule {
                max_depth: 1,
                ..rule(2)
            },
        )
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap();
        assert_eq!(got.len(), 4, "{got:?}");
    }

    /// Azure is reported to sort by UTF-16 code units: `～` (U+FF5E) after
    /// the emoji, where bytes put it before. A level whose names hold a
    /// character from U+E000 up is not split: every key comes once.
    #[tokio::test]
    async fn a_level_that_utf16_sorts_differently_is_not_split() {
        let utf16_order = ["r/a/1", "r/😀/1", "r/😀/2", "r/😁/1", "r/～/1"];
        for after_keys in 1..=utf16_order.len() {
            let store = InOrder::new(&utf16_order);
            let mut got: Vec<String> = list_splitting(&store, "r/", rule(after_keys))
                .map_ok(|m| m.key)
                .try_collect()
                .await
                .unwrap();
            got.sort();
            let mut want = utf16_order.map(String::from).to_vec();
            want.sort();
            assert_eq!(got, want, "after {after_keys}");
        }
        // the same names below the U+E000 line split as before
        let keys = ["r/a/1", "r/é/1", "r/é/2", "r/ü/1"];
        let store = InOrder::new(&keys);
        let got: Vec<String> = list_splitting(&store, "r/", rule(2))
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got.len(), 4);
        assert!(store.counts.totals().list > 2, "not split");
    }

    fn dirs(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| format!("r/{n}/")).collect()
    }

    fn prefixes(groups: &[Group]) -> Vec<&str> {
        groups.iter().map(|g| g.prefix.as_str()).collect()
    }

    /// Every directory held by `after` covered exactly once, by a prefix
    /// that takes in nothing at or before the boundary.
    fn assert_covers(all: &[String], groups: &[Group], after: &After) {
        let later: Vec<&String> = all.iter().filter(|d| after.holds(d)).collect();
        for d in all {
            let n = groups.iter().filter(|g| d.starts_with(&g.prefix)).count();
            assert_eq!(
                n,
                usize::from(after.holds(d)),
                "{d} in {:?}",
                prefixes(groups)
            );
        }
        for g in groups {
            assert!(after.holds(&g.prefix), "{} reaches back", g.prefix);
            assert_eq!(
                g.members.clone().map(|i| &later[i]).collect::<Vec<_>>(),
                later
                    .iter()
                    .filter(|d| d.starts_with(&g.prefix))
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn the_fewest_prefixes_after_the_running_subdirectory() {
        let all = dirs(&[
            "project-1599",
            "project-1600",
            "project-1601",
            "project-1607",
            "project-161",
            "project-17",
            "project-2a",
            "project-2b",
            "q",
        ]);
        let after = After {
            boundary: "r/project-1600/".into(),
            directory: true,
        };
        let later: Vec<String> = all.iter().filter(|d| after.holds(d)).cloned().collect();
        let groups = cover(&later, "r/", &after, 1, 64);
        assert_eq!(
            prefixes(&groups),
            [
                "r/project-1601",
                "r/project-1607",
                "r/project-161",
                "r/project-17",
                "r/project-2",
                "r/q"
            ]
        );
        assert_covers(&all, &groups, &after);
    }

    #[test]
    fn the_largest_group_is_split_until_the_target() {
        let all = dirs(&["a", "b1", "b2", "b3", "b4", "c"]);
        let after = After {
            boundary: "r/a/".into(),
            directory: true,
        };
        let later: Vec<String> = all.iter().filter(|d| after.holds(d)).cloned().collect();
        assert_eq!(
            prefixes(&cover(&later, "r/", &after, 1, 64)),
            ["r/b", "r/c"]
        );
        let groups = cover(&later, "r/", &after, 3, 64);
        assert_eq!(prefixes(&groups), ["r/b1", "r/b2", "r/b3", "r/b4", "r/c"]);
        assert_covers(&all, &groups, &after);
        // never more than the most allowed: the split that would pass it is not made
        assert_eq!(prefixes(&cover(&later, "r/", &after, 3, 4)), ["r/b", "r/c"]);
    }

    #[test]
    fn after_an_object_of_the_directory_itself() {
        // `r/ab` is an object beside the directories `r/ab/` and `r/abc/`
        let all = dirs(&["a", "ab", "abc", "b"]);
        let after = After {
            boundary: "r/ab".into(),
            directory: false,
        };
        assert!(
            after.holds("r/ab-x")
                && after.holds("r/ab/")
                && !after.holds("r/aa")
                && !after.holds("r/ab")
        );
        let later: Vec<String> = all.iter().filter(|d| after.holds(d)).cloned().collect();
        let groups = cover(&later, "r/", &after, 64, 64);
        assert_eq!(prefixes(&groups), ["r/ab/", "r/abc", "r/b"]);
        assert_covers(&all, &groups, &after);
    }

    #[test]
    fn names_split_between_characters_not_bytes() {
        let all = dirs(&["a", "éa", "éb", "ü"]);
        let after = After {
            boundary: "r/a/".into(),
            directory: true,
        };
        let later: Vec<String> = all.iter().filter(|d| after.holds(d)).cloned().collect();
        let groups = cover(&later, "r/", &after, 64, 64);
        assert_eq!(prefixes(&groups), ["r/éa", "r/éb", "r/ü"]);
        assert_covers(&all, &groups, &after);
    }
}
