//! The distribution storage layout: the only module that knows path shapes.
//!
//! Keys are relative to the registry driver's root (`rootdirectory`) and use `/`
//! separators on every backend, e.g. `docker/registry/v2/blobs/sha256/ab/ab12…/data`.
//! `classify` turns a key into what it means; the `*_key` functions build keys back
//! from meaning, so that no other module formats or parses a path.

use crate::digest::Digest;
use crate::storage::Leaf;

/// Everything the registry writes lives under this prefix; nothing outside it is
/// ever deleted (invariant 5).
pub const V2: &str = "docker/registry/v2/";
pub const BLOBS: &str = "docker/registry/v2/blobs/";
pub const REPOSITORIES: &str = "docker/registry/v2/repositories/";

/// What a key means to the collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind<'a> {
    /// `blobs/sha256/<xx>/<hex>/data`: the bytes of a layer, config or manifest.
    BlobData(Digest),
    /// `repositories/<repo>/_manifests/revisions/sha256/<hex>/link`.
    Revision { repo: &'a str, digest: Digest },
    /// `repositories/<repo>/_manifests/tags/<tag>/current/link`: must be read.
    TagCurrent { repo: &'a str, tag: &'a str },
    /// `repositories/<repo>/_manifests/tags/<tag>/index/sha256/<hex>/link`.
    TagIndex {
        repo: &'a str,
        tag: &'a str,
        digest: Digest,
    },
    /// `repositories/<repo>/_layers/sha256/<hex>/link`.
    LayerLink { repo: &'a str, digest: Digest },
    /// A link under a non-sha256 algorithm (`_layers/sha512/<hex>/link`): its path
    /// digest is not the stored blob's digest, so its content must be read.
    AltLink {
        repo: &'a str,
        what: AltLinkKind,
        algorithm: &'a str,
        encoded: &'a str,
    },
    /// `repositories/<repo>/_uploads/<uuid>/<part>`.
    Upload {
        repo: &'a str,
        uuid: &'a str,
        part: &'a str,
    },
    /// An empty directory (filesystems only; the key ends with `/`). `removable`
    /// when it lies below the structural directories the registry expects;
    /// `repo` when it belongs to a repository's metadata.
    EmptyDir {
        repo: Option<&'a str>,
        removable: bool,
    },
    /// Anything else: reported, never deleted.
    Other(OtherReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AltLinkKind {
    Layer,
    Revision,
}

/// Why a key was not recognised. Each is a stray object the operator may want to
/// look at; none is ever deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OtherReason {
    OutsideRegistryTree,
    StrayInBlobs,
    StrayInRepositories,
    UnknownRepositoryMetadata,
    StrayInRegistryRoot,
}

impl OtherReason {
    pub fn describe(self) -> &'static str {
        match self {
            OtherReason::OutsideRegistryTree => "outside docker/registry/v2",
            OtherReason::StrayInBlobs => "not a blob data file",
            OtherReason::StrayInRepositories => {
                "stray file in repositories (not under a _ metadata directory)"
            }
            OtherReason::UnknownRepositoryMetadata => "unrecognised key in repository metadata",
            OtherReason::StrayInRegistryRoot => "stray key beside blobs/ and repositories/",
        }
    }
}

pub fn classify(key: &str) -> KeyKind<'_> {
    let Some(rest) = key.strip_prefix(V2) else {
        return KeyKind::Other(OtherReason::OutsideRegistryTree);
    };
    if let Some(dir) = rest.strip_suffix('/') {
        return classify_empty_dir(dir);
    }
    if let Some(blob) = rest.strip_prefix("blobs/") {
        return classify_blob(blob);
    }
    if let Some(repo_path) = rest.strip_prefix("repositories/") {
        return classify_repository_key(repo_path);
    }
    KeyKind::Other(OtherReason::StrayInRegistryRoot)
}

/// The components of `path` split at `/`, at most `N` of them (the first `N`
/// when there are more): every fixed-shape key has fewer, and a `Vec` per
/// key was an allocation per listed key.
fn components<const N: usize>(path: &str) -> ([&str; N], usize) {
    let mut parts = [""; N];
    let mut n = 0;
    for part in path.split('/').take(N) {
        parts[n] = part;
        n += 1;
    }
    (parts, n)
}

fn classify_blob(path: &str) -> KeyKind<'_> {
    let (parts, n) = components::<5>(path);
    if let ["sha256", prefix, hex, "data"] = &parts[..n] {
        if let Some(d) = Digest::from_hex(hex) {
            if hex.starts_with(prefix) && prefix.len() == 2 {
                return KeyKind::BlobData(d);
            }
        }
    }
    KeyKind::Other(OtherReason::StrayInBlobs)
}

/// Splits `<repo>/_<meta>/...` at the first `_`-prefixed component: repository
/// name components never start with `_`, so that component is registry metadata.
/// Returns (repo, metadata path starting at the `_` component).
pub fn split_repository_path(path: &str) -> Option<(&str, &str)> {
    let mut offset = 0;
    for component in path.split('/') {
        if component.starts_with('_') {
            if offset == 0 {
                return None;
            }
            return Some((&path[..offset - 1], &path[offset..]));
        }
        if component.is_empty() {
            return None;
        }
        offset += component.len() + 1;
    }
    None
}

fn classify_repository_key(path: &str) -> KeyKind<'_> {
    let Some((repo, meta)) = split_repository_path(path) else {
        return KeyKind::Other(OtherReason::StrayInRepositories);
    };
    // 8: one more than the longest fixed shape, so that a longer key matches
    // none of them (only an upload's, which may be of any depth)
    let (parts, n) = components::<8>(meta);
    let parts = &parts[..n];
    let unknown = KeyKind::Other(OtherReason::UnknownRepositoryMetadata);
    match parts {
        ["_manifests", "revisions", "sha256", hex, "link"] => match Digest::from_hex(hex) {
            Some(digest) => KeyKind::Revision { repo, digest },
            None => unknown,
        },
        ["_manifests", "revisions", alg, encoded, "link"] if *alg != "sha256" => KeyKind::AltLink {
            repo,
            what: AltLinkKind::Revision,
            algorithm: alg,
            encoded,
        },
        ["_manifests", "tags", tag, "current", "link"] if !tag.is_empty() => {
            KeyKind::TagCurrent { repo, tag }
        }
        ["_manifests", "tags", tag, "index", "sha256", hex, "link"] if !tag.is_empty() => {
            match Digest::from_hex(hex) {
                Some(digest) => KeyKind::TagIndex { repo, tag, digest },
                None => unknown,
            }
        }
        ["_layers", "sha256", hex, "link"] => match Digest::from_hex(hex) {
            Some(digest) => KeyKind::LayerLink { repo, digest },
            None => unknown,
        },
        ["_layers", alg, encoded, "link"] if *alg != "sha256" => KeyKind::AltLink {
            repo,
            what: AltLinkKind::Layer,
            algorithm: alg,
            encoded,
        },
        ["_uploads", uuid, ..] if parts.len() >= 3 && !uuid.is_empty() => {
            let part = &meta["_uploads/".len() + uuid.len() + 1..];
            KeyKind::Upload { repo, uuid, part }
        }
        _ => unknown,
    }
}

fn classify_empty_dir(dir: &str) -> KeyKind<'_> {
    if let Some(blob_dir) = dir.strip_prefix("blobs/sha256/") {
        // `<xx>` or `<xx>/<hex>`: what a deleted blob leaves
        let removable = !blob_dir.is_empty() && blob_dir.split('/').count() <= 2;
        return KeyKind::EmptyDir {
            repo: None,
            removable,
        };
    }
    let Some(repo_path) = dir.strip_prefix("repositories/") else {
        return KeyKind::EmptyDir {
            repo: None,
            removable: false,
        };
    };
    let Some((repo, meta)) = split_repository_path(repo_path) else {
        return KeyKind::EmptyDir {
            repo: None,
            removable: false,
        };
    };
    let meta = format!("{meta}/");
    let removable = [
        "_manifests/revisions/sha256/",
        "_manifests/tags/",
        "_layers/sha256/",
        "_uploads/",
    ]
    .iter()
    .any(|boundary| meta.len() > boundary.len() && meta.starts_with(boundary));
    KeyKind::EmptyDir {
        repo: Some(repo),
        removable,
    }
}

/// Whether the subdirectories of `dir` (a key ending in `/`) are digest
/// directories whose one key that means anything is their `link`: a
/// repository's `_layers/sha256/`, `_manifests/revisions/sha256/` and
/// `_manifests/tags/<tag>/index/sha256/`. Anything else in such a directory
/// classifies as unknown metadata, whatever it is.
pub fn holds_link_dirs(dir: &str) -> bool {
    let Some((_, meta)) = dir
        .strip_prefix(REPOSITORIES)
        .and_then(split_repository_path)
    else {
        return false;
    };
    match meta.split('/').collect::<Vec<_>>().as_slice() {
        ["_layers", "sha256", ""] | ["_manifests", "revisions", "sha256", ""] => true,
        ["_manifests", "tags", tag, "index", "sha256", ""] => !tag.is_empty(),
        _ => false,
    }
}

/// What means anything in each subdirectory of `dir` (a key ending in `/`),
/// when they are digest or tag directories: `data` in the blob directories
/// under `blobs/sha256/<xx>/`, `link` in the directories `holds_link_dirs`
/// names, and in a tag's directory under `_manifests/tags/` its
/// `current/link` and what `index/sha256/` holds. A listing that probes for
/// these (`gc`'s) does not see other files beside them; `fsck` lists
/// everything.
pub fn subdir_leaf(dir: &str) -> Option<Leaf> {
    if holds_link_dirs(dir) {
        return Some(Leaf::file("link"));
    }
    if let Some((_, "_manifests/tags/")) = dir
        .strip_prefix(REPOSITORIES)
        .and_then(split_repository_path)
    {
        return Some(Leaf {
            file: "current/link",
            then_list: Some("index/sha256"),
            stat: true,
        });
    }
    let prefix = dir
        .strip_prefix(BLOBS)?
        .strip_prefix("sha256/")?
        .strip_suffix('/')?;
    (prefix.len() == 2
        && prefix
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    .then_some(Leaf::file("data"))
}

/// `subdir_leaf` for the collection's listings, which need the size and age
/// of a blob, a layer link or a tag history entry only if the plan would
/// delete it: those three (most of a registry's keys) are `Leaf::named`,
/// listed by their directories' names and stat'ed later for the plan's
/// candidates (and, in the re-check, for what it must look at again).
/// Revision links and tags' `current/link` stay stat'ed: in the default mode
/// every revision is a root, and a digest directory without its `link` (a
/// manifest deleted through the API) must not be taken for one.
pub fn subdir_leaf_by_name(dir: &str) -> Option<Leaf> {
    let leaf = subdir_leaf(dir)?;
    let revisions = || {
        dir.strip_prefix(REPOSITORIES)
            .and_then(split_repository_path)
            .is_some_and(|(_, meta)| meta == "_manifests/revisions/sha256/")
    };
    Some(
        if leaf == Leaf::file("data") || (leaf == Leaf::file("link") && !revisions()) {
            Leaf::named(leaf.file)
        } else {
            leaf
        },
    )
}

/// Whether `dir` (a directory key without trailing `/`) lies below the structural
/// directories the registry expects, so that it may be removed when empty.
pub fn is_removable_empty_dir(dir: &str) -> bool {
    matches!(
        classify(&format!("{dir}/")),
        KeyKind::EmptyDir {
            removable: true,
            ..
        }
    )
}

/// Whether a repository name follows distribution's grammar. Names that do not
/// are still collected like any other (their manifests must be kept), but are
/// reported: the registry would not have created them.
pub fn is_conventional_repository_name(name: &str) -> bool {
    name.len() <= 255
        && name.split('/').enumerate().all(|(i, c)| {
            !c.is_empty()
                && (c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                }) || (i == 0 && c.contains(':')))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        })
}

/// `parts` joined, in one allocation of the right size: the keys below are
/// built by the hundred thousand (each manifest read, each planned deletion),
/// where `format!` costs more than the copying.
fn key_of_parts(parts: &[&str]) -> String {
    let mut key = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    parts.iter().for_each(|p| key.push_str(p));
    key
}

pub fn blob_data_key(d: &Digest) -> String {
    let hex = d.hex_digits();
    let hex = hex.as_str();
    key_of_parts(&[BLOBS, "sha256/", &hex[..2], "/", hex, "/data"])
}

pub fn repository_prefix(repo: &str) -> String {
    format!("{REPOSITORIES}{repo}/")
}

pub fn revision_key(repo: &str, d: &Digest) -> String {
    let hex = d.hex_digits();
    key_of_parts(&[
        REPOSITORIES,
        repo,
        "/_manifests/revisions/sha256/",
        hex.as_str(),
        "/link",
    ])
}

pub fn tag_current_key(repo: &str, tag: &str) -> String {
    key_of_parts(&[
        REPOSITORIES,
        repo,
        "/_manifests/tags/",
        tag,
        "/current/link",
    ])
}

pub fn tag_index_key(repo: &str, tag: &str, d: &Digest) -> String {
    let hex = d.hex_digits();
    key_of_parts(&[
        REPOSITORIES,
        repo,
        "/_manifests/tags/",
        tag,
        "/index/sha256/",
        hex.as_str(),
        "/link",
    ])
}

pub fn layer_link_key(repo: &str, d: &Digest) -> String {
    let hex = d.hex_digits();
    key_of_parts(&[
        REPOSITORIES,
        repo,
        "/_layers/sha256/",
        hex.as_str(),
        "/link",
    ])
}

pub fn alt_link_key(repo: &str, what: AltLinkKind, algorithm: &str, encoded: &str) -> String {
    let dir = match what {
        AltLinkKind::Layer => "_layers",
        AltLinkKind::Revision => "_manifests/revisions",
    };
    format!("{REPOSITORIES}{repo}/{dir}/{algorithm}/{encoded}/link")
}

pub fn upload_key(repo: &str, uuid: &str, part: &str) -> String {
    format!("{REPOSITORIES}{repo}/_uploads/{uuid}/{part}")
}

/// The directories (filesystem only) that deleting `key` may leave empty, deepest
/// first. They stop below the structural directories the registry expects to
/// exist (`blobs/sha256`, a repository's `_manifests/revisions/sha256`,
/// `_manifests/tags`, `_layers/sha256`, `_uploads`): 2.8.2 aborts its own GC on a
/// repository without `tags/`, and lists a tag directory without `current/link` as
/// a tag, so a deleted tag's directory must go entirely.
pub fn dirs_left_empty_by(key: &str) -> Vec<String> {
    let stop: String = match classify(key) {
        KeyKind::BlobData(_) => format!("{BLOBS}sha256"),
        KeyKind::Revision { repo, .. } => {
            format!("{REPOSITORIES}{repo}/_manifests/revisions/sha256")
        }
        KeyKind::TagCurrent { repo, .. } | KeyKind::TagIndex { repo, .. } => {
            format!("{REPOSITORIES}{repo}/_manifests/tags")
        }
        KeyKind::LayerLink { repo, .. } => format!("{REPOSITORIES}{repo}/_layers/sha256"),
        KeyKind::Upload { repo, .. } => format!("{REPOSITORIES}{repo}/_uploads"),
        KeyKind::AltLink { .. } | KeyKind::EmptyDir { .. } | KeyKind::Other(_) => {
            return Vec::new()
        }
    };
    let mut dirs = Vec::new();
    let mut current = key;
    while let Some(i) = current.rfind('/') {
        current = &current[..i];
        if current.len() <= stop.len() {
            break;
        }
        dirs.push(current.to_string());
    }
    dirs
}

/// The directories of an empty repository, deepest first, then the repository
/// directory and any namespace directories above it (each removed only if empty,
/// so a repository that is also a namespace keeps its children).
pub fn empty_repository_dirs(repo: &str) -> Vec<String> {
    let base = format!("{REPOSITORIES}{repo}");
    let mut dirs: Vec<String> = [
        "_manifests/revisions/sha256",
        "_manifests/revisions",
        "_manifests/tags",
        "_manifests",
        "_layers/sha256",
        "_layers",
        "_uploads",
    ]
    .iter()
    .map(|s| format!("{base}/{s}"))
    .collect();
    let mut current = base.as_str();
    loop {
        dirs.push(current.to_string());
        match current.rfind('/') {
            Some(i) if current[..i].len() + 1 > REPOSITORIES.len() => current = &current[..i],
            _ => break,
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn d() -> Digest {
        Digest::from_hex(HEX).unwrap()
    }

    #[test]
    fn classifies_blob_data() {
        assert_eq!(
            classify(&format!("{V2}blobs/sha256/44/{HEX}/data")),
            KeyKind::BlobData(d())
        );
        assert_eq!(classify(&blob_data_key(&d())), KeyKind::BlobData(d()));
        // wrong two-char prefix, stray temp file, missing data
        assert_eq!(
            classify(&format!("{V2}blobs/sha256/45/{HEX}/data")),
            KeyKind::Other(OtherReason::StrayInBlobs)
        );
        assert_eq!(
            classify(&format!("{V2}blobs/sha256/44/{HEX}/data.tmp")),
            KeyKind::Other(OtherReason::StrayInBlobs)
        );
        assert_eq!(
            classify(&format!("{V2}blobs/sha256/44/{HEX}")),
            KeyKind::Other(OtherReason::StrayInBlobs)
        );
    }

    #[test]
    fn classifies_repository_links_including_nested_names() {
        let key = format!("{V2}repositories/team/app/cache/_manifests/revisions/sha256/{HEX}/link");
        assert_eq!(
            classify(&key),
            KeyKind::Revision {
                repo: "team/app/cache",
                digest: d()
            }
        );
        assert_eq!(
            classify(&tag_current_key("library/alpine", "3.19")),
            KeyKind::TagCurrent {
                repo: "library/alpine",
                tag: "3.19"
            }
        );
        assert_eq!(
            classify(&tag_index_key("a", "latest", &d())),
            KeyKind::TagIndex {
                repo: "a",
                tag: "latest",
                digest: d()
            }
        );
        assert_eq!(
            classify(&layer_link_key("a/b", &d())),
            KeyKind::LayerLink {
                repo: "a/b",
                digest: d()
            }
        );
        let upload = format!("{V2}repositories/a/_uploads/0b2c/hashstates/sha256/0");
        assert_eq!(
            classify(&upload),
            KeyKind::Upload {
                repo: "a",
                uuid: "0b2c",
                part: "hashstates/sha256/0"
            }
        );
        let alt = format!("{V2}repositories/a/_layers/sha512/abcd/link");
        assert_eq!(
            classify(&alt),
            KeyKind::AltLink {
                repo: "a",
                what: AltLinkKind::Layer,
                algorithm: "sha512",
                encoded: "abcd"
            }
        );
    }

    #[test]
    fn unknown_shapes_are_other_never_links() {
        for key in [
            "README".to_string(),
            format!("{V2}repositories/a/README"),
            format!("{V2}repositories/_bad/_layers/sha256/{HEX}/link"),
            format!("{V2}repositories/a/_manifests/revisions/sha256/{HEX}/link.tmp"),
            format!(
                "{V2}repositories/a/_manifests/revisions/sha256/{}/link",
                HEX.to_uppercase()
            ),
            format!("{V2}repositories/a/_manifests/tags/t/current/link2"),
            format!("{V2}repositories/a/_other/x"),
            format!("{V2}repositories//a/_layers/sha256/{HEX}/link"),
            format!("{V2}junk"),
        ] {
            assert!(matches!(classify(&key), KeyKind::Other(_)), "{key}");
        }
    }

    #[test]
    fn builders_round_trip_through_classify() {
        assert_eq!(
            classify(&revision_key("x/y", &d())),
            KeyKind::Revision {
                repo: "x/y",
                digest: d()
            }
        );
        let alt = alt_link_key("x", AltLinkKind::Revision, "sha512", "ff");
        assert!(matches!(
            classify(&alt),
            KeyKind::AltLink {
                what: AltLinkKind::Revision,
                ..
            }
        ));
    }

    #[test]
    fn empty_directories_are_removable_only_below_structure() {
        let removable = |k: &str| match classify(&format!("{V2}{k}")) {
            KeyKind::EmptyDir { removable, .. } => removable,
            other => panic!("{k}: {other:?}"),
        };
        assert!(removable(&format!(
            "repositories/a/b/_manifests/revisions/sha256/{HEX}/"
        )));
        assert!(removable("repositories/a/_manifests/tags/v1/"));
        assert!(removable("repositories/a/_manifests/tags/v1/index/sha256/"));
        assert!(removable(&format!("repositories/a/_layers/sha256/{HEX}/")));
        assert!(removable("repositories/a/_uploads/u1/hashstates/sha256/"));
        assert!(removable("blobs/sha256/44/"));
        assert!(removable(&format!("blobs/sha256/44/{HEX}/")));
        for structural in [
            "repositories/a/_manifests/revisions/sha256/",
            "repositories/a/_manifests/tags/",
            "repositories/a/_manifests/",
            "repositories/a/_layers/sha256/",
            "repositories/a/_uploads/",
            "repositories/a/",
            "repositories/",
            "blobs/sha256/",
            "blobs/",
        ] {
            assert!(!removable(structural), "{structural}");
        }
        assert_eq!(
            classify(&format!("{V2}repositories/team/app/_manifests/tags/")),
            KeyKind::EmptyDir {
                repo: Some("team/app"),
                removable: false
            }
        );
    }

    #[test]
    fn empty_dirs_stop_at_structural_directories() {
        assert_eq!(
            dirs_left_empty_by(&blob_data_key(&d())),
            vec![
                format!("{V2}blobs/sha256/44/{HEX}"),
                format!("{V2}blobs/sha256/44")
            ]
        );
        assert_eq!(
            dirs_left_empty_by(&tag_index_key("a/b", "v1", &d())),
            vec![
                format!("{V2}repositories/a/b/_manifests/tags/v1/index/sha256/{HEX}"),
                format!("{V2}repositories/a/b/_manifests/tags/v1/index/sha256"),
                format!("{V2}repositories/a/b/_manifests/tags/v1/index"),
                format!("{V2}repositories/a/b/_manifests/tags/v1"),
            ]
        );
        assert_eq!(
            dirs_left_empty_by(&revision_key("a", &d())),
            vec![format!(
                "{V2}repositories/a/_manifests/revisions/sha256/{HEX}"
            )]
        );
        assert!(dirs_left_empty_by("elsewhere/x").is_empty());
    }

    #[test]
    fn empty_repository_dirs_climb_namespaces_but_not_repositories_root() {
        let dirs = empty_repository_dirs("team/app");
        assert_eq!(dirs.last().unwrap(), &format!("{REPOSITORIES}team"));
        assert!(dirs.contains(&format!("{REPOSITORIES}team/app")));
        assert!(!dirs.iter().any(|d| d.len() < REPOSITORIES.len()));
    }

    #[test]
    fn only_digest_directories_parents_hold_link_dirs() {
        for dir in [
            "team/app/_layers/sha256/",
            "team/app/_manifests/revisions/sha256/",
            "app/_manifests/tags/v1/index/sha256/",
        ] {
            assert!(holds_link_dirs(&format!("{REPOSITORIES}{dir}")), "{dir}");
        }
        // a repository, a tag, `current/`, another algorithm, uploads, blobs, paths without the slash
        for dir in [
            "repositories/team/app/",
            "repositories/app/_manifests/tags/",
            "repositories/app/_manifests/tags/v1/",
            "repositories/app/_manifests/tags/v1/current/",
            "repositories/app/_manifests/tags//index/sha256/",
            "repositories/app/_layers/sha512/",
            "repositories/app/_uploads/",
            "repositories/app/_layers/sha256",
            "repositories/_layers/sha256/",
            "blobs/sha256/",
            "blobs/sha256/ab/",
        ] {
            assert!(!holds_link_dirs(&format!("{V2}{dir}")), "{dir}");
        }
    }

    #[test]
    fn blob_prefixes_hold_data_dirs_digest_directories_link_dirs_and_tags_their_current_link() {
        assert_eq!(
            subdir_leaf(&format!("{BLOBS}sha256/4f/")),
            Some(Leaf::file("data"))
        );
        assert_eq!(
            subdir_leaf(&format!("{REPOSITORIES}team/app/_layers/sha256/")),
            Some(Leaf::file("link"))
        );
        assert_eq!(
            subdir_leaf(&format!(
                "{REPOSITORIES}team/app/_manifests/tags/v1/index/sha256/"
            )),
            Some(Leaf::file("link"))
        );
        let tag = Leaf {
            file: "current/link",
            then_list: Some("index/sha256"),
            stat: true,
        };
        assert_eq!(
            subdir_leaf(&format!("{REPOSITORIES}team/app/_manifests/tags/")),
            Some(tag)
        );
        // the collection's listings name blobs, layer links and tag history only
        let named = subdir_leaf_by_name;
        assert_eq!(
            named(&format!("{BLOBS}sha256/4f/")),
            Some(Leaf::named("data"))
        );
        assert_eq!(
            named(&format!("{REPOSITORIES}team/app/_layers/sha256/")),
            Some(Leaf::named("link"))
        );
        assert_eq!(
            named(&format!(
                "{REPOSITORIES}team/app/_manifests/revisions/sha256/"
            )),
            Some(Leaf::file("link"))
        );
        assert_eq!(
            named(&format!(
                "{REPOSITORIES}team/app/_manifests/tags/v1/index/sha256/"
            )),
            Some(Leaf::named("link"))
        );
        assert_eq!(
            named(&format!("{REPOSITORIES}team/app/_manifests/tags/")),
            Some(tag)
        );
        assert_eq!(named(&format!("{V2}blobs/sha256/4f/abc/")), None);
        for dir in [
            "blobs/",
            "blobs/sha256/",
            "blobs/sha256/4F/",
            "blobs/sha256/4/",
            "blobs/sha256/4fa/",
            "blobs/sha512/4f/",
            "blobs/sha256/4f/abc/",
            "repositories/app/",
            "repositories/_manifests/tags/",
            "repositories/app/_manifests/",
            "repositories/app/_manifests/tags/v1/",
            "repositories/app/_manifests/tags/v1/index/",
        ] {
            assert_eq!(subdir_leaf(&format!("{V2}{dir}")), None, "{dir}");
        }
    }

    #[test]
    fn conventional_names() {
        assert!(is_conventional_repository_name("library/alpine"));
        assert!(is_conventional_repository_name("localhost:5000/a"));
        assert!(!is_conventional_repository_name("Upper/case"));
        assert!(!is_conventional_repository_name("a//b"));
    }
}
