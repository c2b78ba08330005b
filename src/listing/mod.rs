//! How to list a registry tree: disjoint string prefixes whose union is
//! everything under `docker/registry/v2/`, sized to the registry, so that listing
//! costs close to one request per page of keys.

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::inventory::{Inventory, InventoryError};
use crate::layout;
use crate::progress::Progress;
use crate::storage::{lists, DirListing, ObjectMeta, Probe, Storage, StorageError};

pub mod running_split;

use running_split::SplitRule;

/// `gc`'s probe: of a blob directory only its `data`, of a digest directory
/// only its `link`, of a tag's directory its `current/link` and its index (on
/// a filesystem, one stat each instead of reading the directories; stray files
/// beside them go unseen, and `fsck` reports them).
pub const LAYOUT_LEAVES: Probe = Probe {
    leaf_of: layout::subdir_leaf,
};

/// `gc`'s listings: as `LAYOUT_LEAVES`, but blob `data`, layer links and tag
/// history are named, not stat'ed (`layout::subdir_leaf_by_name`): the plan
/// needs the size and age only of those it would delete (`candidates`), the
/// re-check only of those and of links it did not know (`recheck`).
pub const LAYOUT_LEAVES_BY_NAME: Probe = Probe {
    leaf_of: layout::subdir_leaf_by_name,
};

/// Lists the whole registry tree into `inventory`: every key, or with `probe`
/// what `Storage::list_probing` returns. Any listing error aborts: a partial
/// picture must never reach the planner (invariant 1).
pub async fn list_registry(
    storage: &dyn Storage,
    inventory: &mut Inventory,
    probe: Option<Probe>,
    concurrency: usize,
    progress: &Progress,
) -> Result<(), InventoryError> {
    // every LIST request of the listing, splits' included, within --concurrency
    storage.limit_list_requests(Some(concurrency.max(1)));
    let plan = ListingPlan::make(storage, inventory).await?;
    progress.set_listing_prefixes(plan.partitions.len().max(1) as u64);
    let list = |prefix: String| list_partition(storage, &prefix, probe, concurrency);
    let mut stream = match plan.rest {
        Some(rest) => rest,
        None => futures::stream::iter(plan.partitions)
            .map(list)
            .flatten_unordered(concurrency.max(1))
            .boxed(),
    };
    // the count shown moves by thousands: a bar update per key was a few
    // percent of the listing
    let mut unshown = 0;
    while let Some(item) = stream.next().await {
        inventory.insert(item?);
        unshown += 1;
        if unshown == 4096 {
            progress.listed_keys(std::mem::take(&mut unshown));
        }
    }
    progress.listed_keys(unshown);
    Ok(())
}

/// Lists one prefix of a plan. On a store that pages, a prefix under
/// `repositories/` splits itself once it has run 16 pages
/// (`running_split`): the plan sizes its prefixes before anything is listed,
/// and cannot tell one namespace holding most repositories among many small
/// ones. Such a store lists every key (`probe` is for filesystems).
pub fn list_partition<'a>(
    storage: &'a dyn Storage,
    prefix: &str,
    probe: Option<Probe>,
    concurrency: usize,
) -> BoxStream<'a, Result<ObjectMeta, StorageError>> {
    match (storage.list_page_size(), probe) {
        (Some(page), _) if prefix.starts_with(layout::REPOSITORIES) => {
            running_split::list_splitting(storage, prefix, SplitRule::for_pages(page, concurrency))
        }
        (_, Some(probe)) => storage.list_probing(prefix, probe),
        (_, None) => storage.list(prefix),
    }
}

/// How to list the tree: disjoint string prefixes whose union is everything
/// under `docker/registry/v2/`, listed concurrently, each a paginated stream.
///
/// On paged stores every prefix costs at most one partial page beyond the keys
/// it holds, so the number of prefixes follows the registry's size: a small
/// registry is listed flat, its first page continued page after page (the
/// fewest requests; a few seconds of sequential pages at most); a larger one by
/// the 16 or 256 blob prefixes and the repository directories
/// (`repository_prefixes`: the top-level ones, split further where they are
/// few or large, grouped by first letters when there are many). On a
/// filesystem, the finest split (every `<xx>` directory, every top-level
/// repository, or those below when they are few) spreads the directory reads.
struct ListingPlan<'a> {
    partitions: Vec<String>,
    /// The flat listing's pages after the first, for a small registry.
    rest: Option<BoxStream<'a, Result<ObjectMeta, StorageError>>>,
}

/// Registries whose first page says they hold at most this many pages of blob
/// keys are listed flat: with about as many pages again of repository keys (1 to
/// 1.5 times the blob keys in the registries measured), up to some 20,000 keys
/// in about 20 sequential requests. A registry whose repositories hold many
/// times more keys than its blobs takes more sequential pages, at the same
/// request count.
const FLAT_BLOB_PAGES: usize = 8;

/// Split blobs by `<x>` (16 prefixes) up to this many estimated pages, by `<xx>`
/// (256) beyond.
const COARSE_BLOB_PAGES: usize = 64;
/// Top-level repository directories listed one by one up to this many.
const MAX_REPOSITORY_PARTITIONS: usize = 256;

/// "No registry here", with what the store can say of one out of reach.
async fn not_a_registry(storage: &dyn Storage) -> InventoryError {
    match storage.unreachable_registry().await {
        Ok(hint) => InventoryError::NotARegistry {
            location: storage.describe(),
            hint,
        },
        Err(e) => InventoryError::Listing(e),
    }
}

impl<'a> ListingPlan<'a> {
    async fn make(
        storage: &'a dyn Storage,
        inv: &mut Inventory,
    ) -> Result<ListingPlan<'a>, InventoryError> {
        let mut blob_pages = usize::MAX; // unknown: split finely
        if let Some(first) = storage.list_first_page(layout::V2).await? {
            let Some(rest) = first.rest else {
                if first.objects.is_empty() {
                    return Err(not_a_registry(storage).await);
                }
                first.objects.into_iter().for_each(|o| inv.insert(o));
                return Ok(ListingPlan {
                    partitions: Vec::new(),
                    rest: None,
                });
            };
            let estimate =
                estimate_blob_pages(&first.objects, storage.list_page_size().unwrap_or(1000));
            // Only a page that ends among the blobs says how many there are;
            // one that got past them says nothing of the repositories' size.
            if matches!(estimate, BlobPages::About(pages) if pages <= FLAT_BLOB_PAGES) {
                first.objects.into_iter().for_each(|o| inv.insert(o));
                return Ok(ListingPlan {
                    partitions: Vec::new(),
                    rest: Some(rest),
                });
            }
            blob_pages = estimate.at_most();
        }
        let fine = storage.list_page_size().is_none();
        let top = storage.list_dir(layout::V2).await?;
        if top.prefixes.is_empty() && top.objects.is_empty() {
            // Either no registry here, or one that has never stored anything: the
            // registry creates docker/registry/v2 with its first write.
            let parent = storage.list_dir("docker/registry/").await?;
            if !parent.prefixes.iter().any(|p| p == layout::V2) {
                return Err(not_a_registry(storage).await);
            }
        }
        let mut plan = ListingPlan {
            partitions: Vec::new(),
            rest: None,
        };
        for prefix in &top.prefixes {
            if prefix == layout::BLOBS && (fine || blob_pages > 2) {
                let level = storage.list_dir(prefix).await?;
                plan.keep_objects(inv, level.objects);
                for algorithm in level.prefixes {
                    if algorithm != format!("{}sha256/", layout::BLOBS) {
                        plan.partitions.push(algorithm);
                        continue;
                    }
                    let hex_level = storage.list_dir(&algorithm).await?;
                    let children = hex_level.prefixes;
                    let groups = if fine || blob_pages > COARSE_BLOB_PAGES {
                        children
                    } else {
                        group_by_first_chars(children, 1)
                    };
                    plan.keep_objects_outside(inv, hex_level.objects, &groups);
                    plan.partitions.extend(groups);
                }
            } else if prefix == layout::REPOSITORIES {
                // about as many repository keys as blob keys, in the registries measured
                let repositories =
                    repository_prefixes(storage, RepositorySizes::Total(blob_pages)).await?;
                plan.keep_objects(inv, repositories.objects);
                plan.partitions.extend(repositories.prefixes);
            } else {
                plan.partitions.push(prefix.clone());
            }
        }
        plan.keep_objects(inv, top.objects);
        Ok(plan)
    }

    fn keep_objects(&self, inv: &mut Inventory, objects: Vec<ObjectMeta>) {
        objects.into_iter().for_each(|o| inv.insert(o));
    }

    /// Objects a `list_dir` returned at a level whose children are listed by
    /// group prefixes: those a group prefix covers will come again from it.
    fn keep_objects_outside(
        &self,
        inv: &mut Inventory,
        objects: Vec<ObjectMeta>,
        groups: &[String],
    ) {
        for o in objects {
            if !groups.iter().any(|g| lists(g, &o.key)) {
                inv.insert(o);
            }
        }
    }
}

/// Prefixes whose union is everything under `repositories/`, for listing
/// concurrently, and the objects read on the way that no prefix covers (keys
/// directly under `repositories/` or under a namespace the split descended
/// into: strays, never a registry's own).
#[derive(Debug, Default)]
pub struct RepositoryPrefixes {
    pub prefixes: Vec<String>,
    pub objects: Vec<ObjectMeta>,
}

/// A filesystem reads each prefix on one thread: with fewer repository
/// prefixes than this, it splits every namespace one or two levels further (a
/// registry whose repositories all sit in one namespace was read by one thread).
const FS_REPOSITORY_PARTITIONS: usize = 64;

/// A paged store lists a directory's subdirectories separately instead when
/// it holds at least this many pages of keys, which it would list one after
/// another (on S3 a page takes about 0.1 s, and the blobs' 256 prefixes are
/// listed at once): one request to read the directory, under 7% of its pages,
/// and at most one partial page for each prefix listed in its place.
const PAGES_PER_DIRECTORY_TO_SPLIT: usize = 16;

/// How many levels below `repositories/` a split may descend: a namespace,
/// then a sub-namespace or a repository's own directories.
const MAX_SPLIT_DEPTH: usize = 2;

/// What is known of how many keys each directory under `repositories/` holds.
#[derive(Clone, Copy)]
pub enum RepositorySizes<'a> {
    /// About this many pages in all (`usize::MAX`: unknown), taken to be
    /// shared evenly: all the first listing knows.
    Total(usize),
    /// What an earlier listing found below each (the re-checks').
    Listed(&'a Inventory),
}

impl RepositorySizes<'_> {
    /// Pages below `dir` (a directory's key), given the estimate for its
    /// parent and how many directories share it.
    fn pages_below(&self, dir: &str, parent_pages: usize, siblings: usize, page: usize) -> usize {
        match self {
            RepositorySizes::Total(_) => parent_pages / siblings.max(1),
            RepositorySizes::Listed(inv) => {
                let name = dir
                    .strip_prefix(layout::REPOSITORIES)
                    .unwrap_or(dir)
                    .trim_end_matches('/');
                usize::try_from(inv.keys_below(name).div_ceil(page as u64)).unwrap_or(usize::MAX)
            }
        }
    }
}

/// Disjoint prefixes covering everything under `repositories/`: its top-level
/// directories, or, where they are too few to list concurrently or one holds
/// many pages of keys (one namespace holding every repository is common:
/// `<group>/<project>`), the directories below them, grouped by first letters
/// when there are many on a paged store. `sizes` decides where a paged store
/// descends.
///
/// A directory whose name starts with `_` is a repository's own
/// (`_manifests`, `_layers`, `_uploads`: a repository's name cannot start
/// with one) and is listed whole, as is any directory with no subdirectory.
pub async fn repository_prefixes(
    storage: &dyn Storage,
    sizes: RepositorySizes<'_>,
) -> Result<RepositoryPrefixes, StorageError> {
    let top = storage.list_dir(layout::REPOSITORIES).await?;
    let mut objects = top.objects;
    let total = match sizes {
        RepositorySizes::Total(pages) => pages,
        RepositorySizes::Listed(_) => usize::MAX,
    };
    let page = storage.list_page_size();
    // each directory with the pages of keys it holds, about
    let sized = |children: Vec<String>, parent_pages: usize| -> Vec<SizedDir> {
        let n = children.len();
        children
            .into_iter()
            .map(|d| {
                let pages = sizes.pages_below(&d, parent_pages, n, page.unwrap_or(1));
                (d, pages)
            })
            .collect()
    };
    let mut dirs = sized(top.prefixes, total);
    let mut descended = false;
    for _ in 0..MAX_SPLIT_DEPTH {
        let (split, whole): (Vec<SizedDir>, Vec<SizedDir>) = match page {
            // a filesystem reads each prefix on one thread: split every
            // namespace while there are few prefixes
            None if dirs.len() < FS_REPOSITORY_PARTITIONS => {
                dirs.into_iter().partition(|(d, _)| !is_repository_own(d))
            }
            None => (Vec::new(), dirs),
            Some(_) => {
                let (split, whole): (Vec<_>, Vec<_>) = dirs.into_iter().partition(|(d, pages)| {
                    !is_repository_own(d) && *pages >= PAGES_PER_DIRECTORY_TO_SPLIT
                });
                // never more directory reads than the prefixes a level may have
                if split.len() > MAX_REPOSITORY_PARTITIONS {
                    (Vec::new(), split.into_iter().chain(whole).collect())
                } else {
                    (split, whole)
                }
            }
        };
        dirs = whole;
        if split.is_empty() {
            break;
        }
        let levels: Vec<(String, usize, DirListing)> = futures::stream::iter(split)
            .map(|(dir, pages)| async move {
                storage
                    .list_dir(&dir)
                    .await
                    .map(|level| (dir, pages, level))
            })
            .buffered(SPLIT_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        for (dir, pages, level) in levels {
            if level.prefixes.is_empty() {
                // nothing to split: listed whole (an empty one is reported so)
                dirs.push((dir, pages));
            } else {
                objects.extend(level.objects);
                dirs.extend(sized(level.prefixes, pages));
            }
        }
        descended = true;
    }
    let mut dirs: Vec<String> = dirs.into_iter().map(|(d, _)| d).collect();
    dirs.sort();
    let prefixes = match page {
        Some(_) if dirs.len() > MAX_REPOSITORY_PARTITIONS => {
            group_by_first_chars(dirs, if descended { 1 } else { 2 })
        }
        _ => dirs,
    };
    // a group prefix (`org/a`) also covers the objects beside its directories
    // (`org/abc`): those come again from its listing
    objects.retain(|o| !prefixes.iter().any(|p| lists(p, &o.key)));
    Ok(RepositoryPrefixes { prefixes, objects })
}

/// A directory's key, and about how many pages of keys it holds.
type SizedDir = (String, usize);

/// Directory reads in flight while splitting.
const SPLIT_READS_IN_FLIGHT: usize = 16;

fn is_repository_own(dir: &str) -> bool {
    dir.trim_end_matches('/')
        .rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with('_'))
}

/// Disjoint prefixes covering everything under `repositories/`, for listing
/// the repositories again (the online re-checks): flat when the first listing
/// was a small registry's, split where the first listing found many pages of
/// keys otherwise.
pub async fn repository_partitions(
    storage: &dyn Storage,
    inv: &Inventory,
) -> Result<RepositoryPrefixes, StorageError> {
    if storage
        .list_page_size()
        .is_some_and(|page| inv.keys_listed <= (2 * FLAT_BLOB_PAGES * page) as u64)
    {
        return Ok(RepositoryPrefixes {
            prefixes: vec![layout::REPOSITORIES.to_string()],
            objects: Vec::new(),
        });
    }
    repository_prefixes(storage, RepositorySizes::Listed(inv)).await
}

/// What the first (sorted) page of the whole tree says about the blob keys.
#[derive(Debug, PartialEq, Eq)]
enum BlobPages {
    /// The page went past them: they fit in it.
    InFirstPage,
    /// The page ended among them, at `blobs/sha256/<xx>/`, having covered
    /// (xx+1)/256 of them: about this many pages.
    About(usize),
    /// The page holds no key at all (and yet there are more).
    Empty,
    /// The page never reached them.
    Unknown,
}

impl BlobPages {
    /// The most pages of blob keys there may be (unknown: as many as can be).
    fn at_most(&self) -> usize {
        match self {
            BlobPages::Empty => 0,
            BlobPages::InFirstPage => 1,
            BlobPages::About(pages) => *pages,
            BlobPages::Unknown => usize::MAX,
        }
    }
}

fn estimate_blob_pages(first: &[ObjectMeta], page_size: usize) -> BlobPages {
    let sha = format!("{}sha256/", layout::BLOBS);
    let Some(last) = first.last() else {
        return BlobPages::Empty;
    };
    let Some(rest) = last.key.strip_prefix(sha.as_str()) else {
        return if last.key.as_str() > sha.as_str() {
            BlobPages::InFirstPage
        } else {
            BlobPages::Unknown
        };
    };
    let covered = rest
        .get(..2)
        .and_then(|h| u8::from_str_radix(h, 16).ok())
        .map_or(1, |v| v as usize + 1);
    let blob_keys = first
        .iter()
        .filter(|o| o.key.starts_with(sha.as_str()))
        .count();
    BlobPages::About((blob_keys * 256 / covered).div_ceil(page_size))
}

/// Groups directory prefixes (each `<parent>/<name>/`) by their parent and
/// the first `depth` characters of their names, as string prefixes. A name
/// shorter than `depth` stays whole, and so do the members of a group whose
/// prefix would also take in a directory of another parent (`repositories/o`
/// beside `repositories/org/app/`, when `org/` was split). Each group prefix
/// covers exactly its members among `dirs` (and any whole directory of the
/// same parent it starts), so the prefixes stay disjoint and their union is
/// the directories'.
fn group_by_first_chars(dirs: Vec<String>, depth: usize) -> Vec<String> {
    fn parent_len(dir: &str) -> usize {
        dir[..dir.len() - 1].rfind('/').map_or(0, |i| i + 1)
    }
    let group_of = |dir: &str| -> Option<String> {
        let parent = parent_len(dir);
        let name = &dir[parent..dir.len() - 1];
        name.char_indices()
            .nth(depth)
            .map(|(i, _)| dir[..parent + i].to_string())
    };
    let groups: std::collections::BTreeSet<String> =
        dirs.iter().filter_map(|d| group_of(d)).collect();
    let valid: std::collections::BTreeSet<&String> = groups
        .iter()
        .filter(|g| {
            let parent = &g[..parent_len(&format!("{g}/"))];
            dirs.iter()
                .filter(|d| d.starts_with(g.as_str()))
                .all(|d| d[..parent_len(d)] == *parent)
        })
        .collect();
    let mut prefixes: Vec<String> = dirs
        .into_iter()
        .map(|dir| match group_of(&dir) {
            Some(g) if valid.contains(&g) => g,
            _ => dir,
        })
        .collect();
    prefixes.sort();
    prefixes.dedup();
    // a whole directory `a/` and a group `a` of the same parent would overlap:
    // keep the group
    prefixes.retain(|p| !p.ends_with('/') || !valid.iter().any(|g| p.starts_with(g.as_str())));
    prefixes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: String, t: i64) -> ObjectMeta {
        ObjectMeta {
            key,
            size: 7,
            last_modified_ms: t,
            etag: None,
        }
    }

    /// Groups `dirs` (relative to `repositories/`) by `depth` first
    /// characters, checks the result is `want`, and that each directory is
    /// covered by exactly one prefix.
    fn assert_grouped(dirs: &[&str], depth: usize, want: &[&str]) {
        let r = layout::REPOSITORIES;
        let dirs: Vec<String> = dirs.iter().map(|d| format!("{r}{d}")).collect();
        let groups = group_by_first_chars(dirs.clone(), depth);
        assert_eq!(
            groups,
            want.iter().map(|g| format!("{r}{g}")).collect::<Vec<_>>()
        );
        for d in &dirs {
            assert_eq!(
                groups.iter().filter(|g| d.starts_with(g.as_str())).count(),
                1,
                "{d}"
            );
        }
    }

    #[test]
    fn groups_cover_their_children_exactly_once() {
        assert_grouped(
            &["a/", "ab/", "abc/", "b/", "team-1/", "team-2/", "x/"],
            2,
            &["a/", "ab", "b/", "te", "x/"],
        );
    }

    #[test]
    fn groups_of_directories_below_several_parents_stay_below_their_own() {
        assert_grouped(
            &[
                "org/app/",
                "org/api/",
                "org/b/",
                "org/_layers/",
                "team/app/",
                "team/x/",
            ],
            1,
            &["org/_", "org/a", "org/b/", "team/a", "team/x/"],
        );
    }

    #[test]
    fn a_group_never_takes_in_the_directories_of_a_namespace_split_beside_it() {
        assert_grouped(
            &["ops/", "org/api/", "org/app/", "org/b/", "x1/", "x2/"],
            1,
            &["ops/", "org/a", "org/b/", "x"],
        );
    }

    #[test]
    fn a_repository_s_own_directories_are_told_from_namespaces() {
        let r = layout::REPOSITORIES;
        for own in ["a/_manifests/", "a/b/_layers/", "a/_uploads/"] {
            assert!(is_repository_own(&format!("{r}{own}")), "{own}");
        }
        for namespace in ["a/", "a/b/", "a_b/", "a/b_/"] {
            assert!(
                !is_repository_own(&format!("{r}{namespace}")),
                "{namespace}"
            );
        }
    }

    #[test]
    fn blob_pages_are_estimated_from_the_first_page() {
        let page: Vec<ObjectMeta> = (0..1000)
            .map(|i| {
                meta(
                    format!("{}sha256/{:02x}/{i:060}/data", layout::BLOBS, i / 250),
                    0,
                )
            })
            .collect();
        // 1000 blob keys covering 4 of 256 prefixes: about 64,000 blob keys
        assert_eq!(estimate_blob_pages(&page, 1000), BlobPages::About(64));
        let past = vec![meta(
            format!("{}x/_layers/sha256/a/link", layout::REPOSITORIES),
            0,
        )];
        assert_eq!(estimate_blob_pages(&past, 1000), BlobPages::InFirstPage);
    }
}
