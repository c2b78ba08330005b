//! `registry-gc du`: where the registry's bytes are, per repository, and what a
//! collection would free. Read-only: the listing and mark phases of `gc`, then
//! the pure planner in both modes and `gc`'s re-check of the links written
//! since the fence; never a sweep.
//!
//! Attribution. A repository *holds* a blob when it links it (a `_layers` link,
//! a revision link, a tag) or one of its revisions' manifests references it
//! (config, layers, index children). A held blob is *exclusive* to a repository
//! when no other repository holds it, *shared* otherwise. A planned deletion of
//! a blob is attributed to a repository only when that repository is its only
//! holder; deletions of blobs several repositories hold, and of orphan blobs
//! nobody holds, are reported registry-wide. Stale uploads belong to their
//! repository.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;

use crate::cli::StorageArgs;
use crate::digest_table::{DigestId, DigestSet};
use crate::error::{Error, Exit};
use crate::inspect::{self, Format, ReadArgs};
use crate::inventory::Inventory;
use crate::mark::Marks;
use crate::plan::{self, Plan, PlanOptions, Target};
use crate::progress::Progress;
use crate::recheck::{self, RecheckOptions};
use crate::report::human_bytes;
use crate::storage::open::open_storage;
use crate::storage::system_time_ms;
use crate::table::{self, Align};

pub const SCHEMA_VERSION: u32 = 1;

/// `du --help`: what the columns mean.
pub const LONG_ABOUT: &str = "\
Bytes per repository and what `gc` would free. Read-only: nothing is written.

A repository holds a blob when it links it (a _layers link, a revision link, a
tag) or a manifest linked in it references it (config, layers, index children).
EXCLUSIVE: blobs only this repository holds. SHARED: blobs it holds with other
repositories (the shared line counts each once). Orphan blobs: no repository
holds them. UPLOADS: its unfinished uploads.
GC FREES, GC -m FREES: the real plan of `gc` and `gc --delete-untagged` (same
--min-age and --upload-max-age, and the same re-check of links written since
that fence, as in `gc --dry-run`); a blob deletion counts for a repository only
when that repository is its only holder, otherwise on the shared or orphan
line; stale uploads count for their repository. The total is what `gc` would
report as bytes_freed. On the total line, EXCLUSIVE (repositories' and
orphans') plus SHARED is every blob byte in storage.

CSV columns: repository, tags, manifests, exclusive_bytes, shared_bytes,
upload_bytes, gc_frees_bytes, gc_untagged_frees_bytes (raw bytes). JSON adds
registry-wide totals (README).";

#[derive(Debug, Args)]
pub struct DuArgs {
    #[command(flatten)]
    pub storage: StorageArgs,

    /// Output format: an aligned table, JSON or CSV (see README for the fields).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Raw byte counts in the table instead of KiB, MiB, GiB.
    #[arg(long)]
    pub bytes: bool,

    /// For the "would free" columns: objects modified more recently than this
    /// are spared, as `gc --min-age` spares them [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub min_age: Option<Duration>,

    /// For the "would free" columns: uploads idle longer than this count as
    /// stale, as in `gc` [default: 7d].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub upload_max_age: Option<Duration>,

    #[command(flatten)]
    pub read: ReadArgs,

    /// Keep manifests read from an object store here (as `gc --cache-dir`).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Use no manifest cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
}

/// One repository's line.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepoUsage {
    pub repository: String,
    /// Tags with a current link.
    pub tags: u64,
    /// Revision links (manifests linked in the repository).
    pub manifests: u64,
    /// Bytes of blobs this repository alone holds.
    pub exclusive_bytes: u64,
    /// Bytes of blobs this repository holds with others.
    pub shared_bytes: u64,
    /// Bytes of its unfinished uploads.
    pub upload_bytes: u64,
    /// What `gc` would free that is attributed to it.
    pub gc_frees_bytes: u64,
    /// What `gc --delete-untagged` would free that is attributed to it.
    pub gc_untagged_frees_bytes: u64,
}

/// What one mode of `gc` would free, registry-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Frees {
    /// Everything: the sum of the three below.
    pub bytes: u64,
    /// Attributed to single repositories (blobs and stale uploads).
    pub attributed_bytes: u64,
    /// Blobs held by several repositories.
    pub shared_bytes: u64,
    /// Blobs no repository holds.
    pub orphan_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub repositories: u64,
    pub tags: u64,
    pub manifests: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Sum of the repositories' exclusive bytes.
    pub exclusive_bytes: u64,
    /// Bytes of blobs held by two or more repositories, each counted once.
    pub shared_bytes: u64,
    pub orphan_blobs: u64,
    pub orphan_bytes: u64,
    pub upload_bytes: u64,
    pub gc: Frees,
    pub gc_untagged: Frees,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    pub schema_version: u32,
    pub storage: String,
    pub min_age_seconds: u64,
    /// Sorted by exclusive bytes, largest first, then by name.
    pub repositories: Vec<RepoUsage>,
    pub totals: Totals,
}

/// Who holds each blob: per digest id, how many repositories and (when one) which.
struct Holders {
    count: Vec<u32>,
    sole: Vec<u32>,
}

impl Holders {
    fn of(&self, id: DigestId) -> (u32, u32) {
        (self.count[id as usize], self.sole[id as usize])
    }
}

/// The blobs a repository holds (see the module documentation), deduplicated.
fn held_by(inv: &Inventory, marks: &Marks, ri: usize) -> Vec<DigestId> {
    let repo = &inv.repositories[ri];
    let mut ids: Vec<DigestId> = repo
        .revisions
        .iter()
        .chain(&repo.layers)
        .map(|l| l.digest)
        .collect();
    for l in &repo.revisions {
        if let Some(refs) = marks.manifest(l.digest) {
            ids.extend(
                refs.blobs
                    .iter()
                    .chain(refs.children)
                    .chain(marks.other_algorithm_blobs(l.digest)),
            );
        }
    }
    for t in marks.tag_targets.get(ri).into_iter().flatten() {
        ids.extend(t.known());
    }
    ids.retain(|id| inv.has_blob(*id));
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Per repository, registry-wide, and for each plan: the pure part of `du`.
/// `default_plan` and `untagged_plan` are `plan::plan` without and with
/// `delete_untagged`, on the same inventory and marks.
pub fn usage(inv: &Inventory, marks: &Marks, default_plan: &Plan, untagged_plan: &Plan) -> Usage {
    let n = inv.digests.len();
    let held: Vec<Vec<DigestId>> = (0..inv.repositories.len())
        .map(|ri| held_by(inv, marks, ri))
        .collect();
    let mut holders = Holders {
        count: vec![0; n],
        sole: vec![u32::MAX; n],
    };
    for (ri, ids) in held.iter().enumerate() {
        for id in ids {
            holders.count[*id as usize] += 1;
            holders.sole[*id as usize] = ri as u32;
        }
    }

    let mut repos: Vec<RepoUsage> = inv
        .repositories
        .iter()
        .zip(&held)
        .map(|(r, ids)| {
            let mut u = RepoUsage {
                repository: r.name.clone(),
                tags: r.tags.iter().filter(|t| t.current.is_some()).count() as u64,
                manifests: r.revisions.len() as u64,
                upload_bytes: r.uploads.iter().map(|u| u.bytes()).sum(),
                ..RepoUsage::default()
            };
            for id in ids {
                let size = inv.blob(*id).map_or(0, |b| b.size);
                if holders.count[*id as usize] == 1 {
                    u.exclusive_bytes += size;
                } else {
                    u.shared_bytes += size;
                }
            }
            u
        })
        .collect();

    let mut totals = Totals {
        repositories: repos.len() as u64,
        tags: repos.iter().map(|r| r.tags).sum(),
        manifests: inv.manifest_count() as u64,
        exclusive_bytes: repos.iter().map(|r| r.exclusive_bytes).sum(),
        upload_bytes: repos.iter().map(|r| r.upload_bytes).sum(),
        ..Totals::default()
    };
    let mut counted = DigestSet::with_len(n);
    for (id, info) in inv.blobs() {
        totals.blobs += 1;
        totals.blob_bytes += info.size;
        match holders.count[id as usize] {
            0 => {
                totals.orphan_blobs += 1;
                totals.orphan_bytes += info.size;
            }
            1 => {}
            _ => {
                if counted.insert(id) {
                    totals.shared_bytes += info.size;
                }
            }
        }
    }

    totals.gc = attribute(inv, &holders, default_plan, &mut repos, |r, b| {
        r.gc_frees_bytes += b
    });
    totals.gc_untagged = attribute(inv, &holders, untagged_plan, &mut repos, |r, b| {
        r.gc_untagged_frees_bytes += b
    });

    repos.sort_by(|a, b| {
        b.exclusive_bytes
            .cmp(&a.exclusive_bytes)
            .then_with(|| a.repository.cmp(&b.repository))
    });
    Usage {
        schema_version: SCHEMA_VERSION,
        repositories: repos,
        totals,
        ..Usage::default()
    }
}

/// Adds each planned deletion's bytes to its only holder, or to the shared or
/// orphan total. `repos` is still in inventory order here.
fn attribute(
    inv: &Inventory,
    holders: &Holders,
    plan: &Plan,
    repos: &mut [RepoUsage],
    add: impl Fn(&mut RepoUsage, u64),
) -> Frees {
    let mut f = Frees::default();
    for d in &plan.deletions {
        let target = d.target(inv);
        let bytes = inv.bytes_of(&target);
        if bytes == 0 {
            continue;
        }
        f.bytes += bytes;
        match target {
            Target::Blob(id) => match holders.of(id) {
                (0, _) => f.orphan_bytes += bytes,
                (1, ri) => {
                    add(&mut repos[ri as usize], bytes);
                    f.attributed_bytes += bytes;
                }
                _ => f.shared_bytes += bytes,
            },
            Target::Upload { repo, .. } => {
                add(&mut repos[repo as usize], bytes);
                f.attributed_bytes += bytes;
            }
            // links free no bytes worth counting
            _ => {}
        }
    }
    f
}

impl Usage {
    /// The aligned table: one line per repository, then the registry-wide lines.
    pub fn table(&self, raw_bytes: bool) -> String {
        let size = |b: u64| {
            if raw_bytes {
                b.to_string()
            } else {
                human_bytes(b)
            }
        };
        let headers = [
            "REPOSITORY",
            "TAGS",
            "MANIFESTS",
            "EXCLUSIVE",
            "SHARED",
            "UPLOADS",
            "GC FREES",
            "GC -m FREES",
        ];
        let mut align = vec![Align::Right; headers.len()];
        align[0] = Align::Left;
        let mut rows: Vec<Vec<String>> = self
            .repositories
            .iter()
            .map(|r| {
                vec![
                    r.repository.clone(),
                    r.tags.to_string(),
                    r.manifests.to_string(),
                    size(r.exclusive_bytes),
                    size(r.shared_bytes),
                    size(r.upload_bytes),
                    size(r.gc_frees_bytes),
                    size(r.gc_untagged_frees_bytes),
                ]
            })
            .collect();
        let t = &self.totals;
        let blank = String::new;
        rows.push(vec![
            "(blobs shared by repositories)".into(),
            blank(),
            blank(),
            blank(),
            size(t.shared_bytes),
            blank(),
            size(t.gc.shared_bytes),
            size(t.gc_untagged.shared_bytes),
        ]);
        rows.push(vec![
            "(orphan blobs: no repository)".into(),
            blank(),
            blank(),
            size(t.orphan_bytes),
            blank(),
            blank(),
            size(t.gc.orphan_bytes),
            size(t.gc_untagged.orphan_bytes),
        ]);
        rows.push(vec![
            format!("total ({} repositories)", t.repositories),
            t.tags.to_string(),
            t.manifests.to_string(),
            size(t.exclusive_bytes + t.orphan_bytes),
            size(t.shared_bytes),
            size(t.upload_bytes),
            size(t.gc.bytes),
            size(t.gc_untagged.bytes),
        ]);
        let mut out = table::render(&headers, &align, &rows);
        let _ = writeln!(
            out,
            "{} blobs, {}; \"would free\" spares objects younger than {}",
            t.blobs,
            size(t.blob_bytes),
            humantime::format_duration(Duration::from_secs(self.min_age_seconds))
        );
        out
    }

    pub const CSV_COLUMNS: [&'static str; 8] = [
        "repository",
        "tags",
        "manifests",
        "exclusive_bytes",
        "shared_bytes",
        "upload_bytes",
        "gc_frees_bytes",
        "gc_untagged_frees_bytes",
    ];

    /// One line per repository, raw bytes, under a header of `CSV_COLUMNS`.
    pub fn csv(&self) -> String {
        let mut out = table::csv_line(&Self::CSV_COLUMNS);
        for r in &self.repositories {
            out.push_str(&table::csv_line(&[
                r.repository.clone(),
                r.tags.to_string(),
                r.manifests.to_string(),
                r.exclusive_bytes.to_string(),
                r.shared_bytes.to_string(),
                r.upload_bytes.to_string(),
                r.gc_frees_bytes.to_string(),
                r.gc_untagged_frees_bytes.to_string(),
            ]));
        }
        out
    }
}

/// Runs `du` and prints its output; returns the exit code.
pub async fn command(args: &DuArgs, quiet: bool) -> Exit {
    match run(args, quiet).await {
        Ok(text) => {
            print!("{text}");
            Exit::Success
        }
        Err(e) => {
            crate::say::error(&e.to_string());
            e.exit()
        }
    }
}

async fn run(args: &DuArgs, quiet: bool) -> Result<String, Error> {
    let file = args.storage.config_file()?;
    let settings = args.storage.resolve(&file)?;
    let path = args.storage.config.clone().unwrap_or_default();
    let min_age = args
        .min_age
        .or(file.duration(&path, "min_age", &file.gc.min_age)?)
        .unwrap_or(Duration::from_secs(3600));
    let upload_max_age = args
        .upload_max_age
        .or(file.duration(&path, "upload_max_age", &file.gc.upload_max_age)?)
        .unwrap_or(Duration::from_secs(7 * 86400));
    let read = args.read.resolve(&file);
    let no_cache = args.no_cache || file.gc.no_cache.unwrap_or(false);

    let storage = open_storage(&settings.storage, &settings.backend)?;
    let storage = storage.as_ref();
    let now = SystemTime::now();
    let progress = Progress::new(!quiet);
    let cache = inspect::cache_for(
        storage,
        args.cache_dir.clone().or(file.gc.cache_dir.clone()),
        no_cache,
    );
    let (inv, marks, warnings) = inspect::load(storage, &read, cache, false, &progress).await?;
    for w in &warnings {
        crate::say::warning(&format!("{}: {}", w.key, w.message));
    }
    let opts = |delete_untagged| PlanOptions {
        delete_untagged,
        min_age_ms: crate::storage::duration_ms(min_age),
        upload_max_age_ms: crate::storage::duration_ms(upload_max_age),
        delete_empty_repositories: false,
        now_ms: system_time_ms(now),
        // `inspect::load` lists with every size and age
        unstated_are_old: false,
    };
    let mut default_plan = plan::plan(&inv, &marks, &opts(false));
    let mut untagged_plan = plan::plan(&inv, &marks, &opts(true));
    // `gc`, a dry run too, withdraws from its plan what a link written since
    // the fence names (a push or a tag move in flight): so does `du`, whose
    // figures are that plan's. A plan with nothing in it has nothing to withdraw.
    let recheck_opts = RecheckOptions {
        fence: opts(false).fence(),
        concurrency: read.concurrency,
        max_manifest_bytes: read.max_manifest_bytes,
    };
    // One listing serves both plans.
    let mut planned: Vec<&mut Plan> = [&mut default_plan, &mut untagged_plan]
        .into_iter()
        .filter(|p| !p.deletions.is_empty())
        .collect();
    if !planned.is_empty() {
        progress.start_phase("re-checking repositories", 0);
        let outcomes =
            recheck::recheck_each(storage, &inv, &marks, &mut planned, &recheck_opts).await?;
        for w in recheck::kept_unread_warnings(&outcomes, &warnings) {
            crate::say::warning(&format!("{}: {}", w.key, w.message));
        }
    }
    progress.finish();
    let mut usage = usage(&inv, &marks, &default_plan, &untagged_plan);
    usage.storage = storage.describe();
    usage.min_age_seconds = min_age.as_secs();
    Ok(match args.format {
        Format::Table => usage.table(args.bytes),
        Format::Csv => usage.csv(),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&usage).expect("usage serializes");
            s.push('\n');
            s
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::layout;
    use crate::manifest::{ManifestKind, References};
    use crate::mark::TagLink;
    use crate::storage::ObjectMeta;

    const NOW: i64 = 1_000_000_000_000;
    const OLD: i64 = NOW - 10 * 3_600_000;

    fn dg(n: u8) -> Digest {
        Digest::from_bytes([n; 32])
    }

    struct Fx {
        objects: Vec<(String, u64)>,
        manifests: Vec<(Digest, Vec<Digest>)>,
        tags: Vec<(String, String, Digest)>,
    }

    impl Fx {
        fn new() -> Fx {
            Fx {
                objects: Vec::new(),
                manifests: Vec::new(),
                tags: Vec::new(),
            }
        }
        fn blob(&mut self, d: Digest, size: u64) -> &mut Self {
            self.objects.push((layout::blob_data_key(&d), size));
            self
        }
        /// A manifest blob (size 1) linked in `repo` with its blobs linked as layers.
        fn image(
            &mut self,
            repo: &str,
            m: Digest,
            blobs: &[Digest],
            tag: Option<&str>,
        ) -> &mut Self {
            self.blob(m, 1);
            self.objects.push((layout::revision_key(repo, &m), 71));
            for b in blobs {
                self.objects.push((layout::layer_link_key(repo, b), 71));
            }
            self.manifests.push((m, blobs.to_vec()));
            if let Some(t) = tag {
                self.objects.push((layout::tag_current_key(repo, t), 71));
                self.tags.push((repo.into(), t.into(), m));
            }
            self
        }
        fn usage(&self) -> Usage {
            let mut inv = Inventory::default();
            for (key, size) in &self.objects {
                inv.insert(ObjectMeta {
                    key: key.clone(),
                    size: *size,
                    last_modified_ms: OLD,
                    etag: None,
                });
            }
            inv.finish();
            let mut marks = Marks::default();
            marks.set_tag_links(&inv, |repo, tag| {
                let hit = self.tags.iter().find(|(r, t, _)| *r == repo && *t == tag);
                hit.map_or(TagLink::None, |(_, _, d)| TagLink::Digest(*d))
            });
            for (m, blobs) in &self.manifests {
                let refs = References {
                    kind: ManifestKind::Image,
                    blobs: blobs.clone(),
                    children: vec![],
                    subject: None,
                    other_algorithm: vec![],
                    invalid: vec![],
                    undecodable: None,
                };
                let id = inv.digests.find(m).unwrap();
                if marks.manifest(id).is_none() {
                    marks.record(&inv, id, &refs);
                }
            }
            let opts = |delete_untagged| PlanOptions {
                delete_untagged,
                min_age_ms: 3_600_000,
                upload_max_age_ms: 7 * 86_400_000,
                delete_empty_repositories: false,
                now_ms: NOW,
                unstated_are_old: false,
            };
            usage(
                &inv,
                &marks,
                &plan::plan(&inv, &marks, &opts(false)),
                &plan::plan(&inv, &marks, &opts(true)),
            )
        }
    }

    fn repo<'a>(u: &'a Usage, name: &str) -> &'a RepoUsage {
        u.repositories
            .iter()
            .find(|r| r.repository == name)
            .unwrap()
    }

    #[test]
    fn exclusive_and_shared_bytes_follow_holders() {
        let mut fx = Fx::new();
        let (base, a_top, b_top) = (dg(10), dg(11), dg(12));
        fx.blob(base, 1000).blob(a_top, 200).blob(b_top, 30);
        fx.image("a", dg(1), &[base, a_top], Some("v1"));
        fx.image("b", dg(2), &[base, b_top], Some("v1"));
        let u = fx.usage();
        let (a, b) = (repo(&u, "a"), repo(&u, "b"));
        assert_eq!((a.exclusive_bytes, a.shared_bytes), (201, 1000));
        assert_eq!((b.exclusive_bytes, b.shared_bytes), (31, 1000));
        assert_eq!((a.tags, a.manifests), (1, 1));
        assert_eq!(
            u.repositories[0].repository, "a",
            "sorted by exclusive bytes"
        );
        assert_eq!(u.totals.shared_bytes, 1000);
        assert_eq!(u.totals.exclusive_bytes, 232);
        assert_eq!(u.totals.blob_bytes, 1232);
        assert_eq!(u.totals.gc, Frees::default());
    }

    #[test]
    fn would_free_is_attributed_to_the_only_holder_else_shared_or_orphan() {
        let mut fx = Fx::new();
        let (base, old_top, new_top, orphan) = (dg(10), dg(11), dg(12), dg(13));
        fx.blob(base, 1000)
            .blob(old_top, 200)
            .blob(new_top, 30)
            .blob(orphan, 5);
        fx.image("a", dg(1), &[base, new_top], Some("v1"));
        fx.image("a", dg(2), &[base, old_top], None); // untagged: -m frees it and old_top
        fx.image("b", dg(3), &[base], None); // untagged in b; base still kept by a
        fx.image("c", dg(4), &[dg(20)], None).blob(dg(20), 7); // untagged; its layer is shared with d
        fx.image("d", dg(5), &[dg(20)], None);
        let u = fx.usage();
        // default mode: only the orphan blob goes
        assert_eq!(
            u.totals.gc,
            Frees {
                bytes: 5,
                attributed_bytes: 0,
                shared_bytes: 0,
                orphan_bytes: 5
            }
        );
        assert_eq!(u.totals.orphan_bytes, 5);
        assert!(u.repositories.iter().all(|r| r.gc_frees_bytes == 0));
        // -m: a's untagged manifest and its exclusive layer, b's manifest; c's and d's
        // manifests are exclusive, their common layer is shared
        assert_eq!(repo(&u, "a").gc_untagged_frees_bytes, 201);
        assert_eq!(repo(&u, "b").gc_untagged_frees_bytes, 1);
        assert_eq!(repo(&u, "c").gc_untagged_frees_bytes, 1);
        assert_eq!(repo(&u, "d").gc_untagged_frees_bytes, 1);
        let t = &u.totals;
        assert_eq!(
            t.exclusive_bytes + t.orphan_bytes + t.shared_bytes,
            t.blob_bytes,
            "the total line adds up: {t:?}"
        );
        assert_eq!(
            u.totals.gc_untagged,
            Frees {
                bytes: 5 + 201 + 1 + 1 + 1 + 7,
                attributed_bytes: 204,
                shared_bytes: 7,
                orphan_bytes: 5
            }
        );
    }

    #[test]
    fn renders_table_and_csv() {
        let mut fx = Fx::new();
        fx.blob(dg(10), 2048);
        fx.image("team/app", dg(1), &[dg(10)], Some("v1"));
        let u = fx.usage();
        let t = u.table(false);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("REPOSITORY") && lines[0].ends_with("GC -m FREES"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("team/app") && lines[1].contains("2.0 KiB"),
            "{t}"
        );
        assert!(u.table(true).contains("2049"), "raw bytes");
        assert_eq!(u.csv(), "repository,tags,manifests,exclusive_bytes,shared_bytes,upload_bytes,gc_frees_bytes,gc_untagged_frees_bytes\nteam/app,1,1,2049,0,0,0,0\n");
    }
}
