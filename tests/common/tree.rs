//! On-disk helpers for a filesystem-driver tree: `<root>/docker/registry/v2/...`.
//!
//! "Keys" are paths relative to `<root>/docker/registry/v2/` with `/` separators, exactly
//! the key shapes listed in docs/registry-layout.md (e.g. `blobs/sha256/ab/ab12…/data`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::images::{digest_hex, sha256_digest};

/// `<root>/docker/registry/v2`.
pub fn v2_dir(root: &Path) -> PathBuf {
    root.join("docker").join("registry").join("v2")
}

/// Absolute path of a key.
pub fn key_path(root: &Path, key: &str) -> PathBuf {
    let mut p = v2_dir(root);
    for part in key.split('/').filter(|s| !s.is_empty()) {
        p.push(part);
    }
    p
}

/// `blobs/sha256/<hex[0:2]>/<hex>/data`.
pub fn blob_key(hex: &str) -> String {
    format!("blobs/sha256/{}/{hex}/data", &hex[..2])
}

/// [`blob_key`] of a `sha256:<hex>` digest.
pub fn blob_key_for_digest(digest: &str) -> String {
    blob_key(digest_hex(digest))
}

pub fn repo_key(repo: &str) -> String {
    format!("repositories/{repo}")
}
pub fn revision_link_key(repo: &str, digest: &str) -> String {
    format!(
        "repositories/{repo}/_manifests/revisions/sha256/{}/link",
        digest_hex(digest)
    )
}
pub fn tag_current_link_key(repo: &str, tag: &str) -> String {
    format!("repositories/{repo}/_manifests/tags/{tag}/current/link")
}
pub fn tag_index_link_key(repo: &str, tag: &str, digest: &str) -> String {
    format!(
        "repositories/{repo}/_manifests/tags/{tag}/index/sha256/{}/link",
        digest_hex(digest)
    )
}
pub fn layer_link_key(repo: &str, digest: &str) -> String {
    format!(
        "repositories/{repo}/_layers/sha256/{}/link",
        digest_hex(digest)
    )
}
pub fn upload_dir_key(repo: &str, uuid: &str) -> String {
    format!("repositories/{repo}/_uploads/{uuid}")
}

fn walk(dir: &Path, rel: &str, files: &mut Vec<(String, PathBuf)>, dirs: &mut Vec<String>) {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => panic!("read_dir {}: {e}", dir.display()),
    };
    for entry in rd {
        let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel_child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let ft = entry
            .file_type()
            .unwrap_or_else(|e| panic!("file_type {}: {e}", entry.path().display()));
        if ft.is_dir() {
            dirs.push(rel_child.clone());
            walk(&entry.path(), &rel_child, files, dirs);
        } else if ft.is_file() {
            files.push((rel_child, entry.path()));
        }
    }
}

/// Every regular file under `<root>/docker/registry/v2/` as a key. Empty if the directory
/// does not exist.
pub fn keys(root: &Path) -> BTreeSet<String> {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(&v2_dir(root), "", &mut files, &mut dirs);
    files.into_iter().map(|(k, _)| k).collect()
}

/// Every directory under `<root>/docker/registry/v2/` (relative, `/`-separated), for
/// checks about empty directories.
pub fn dirs(root: &Path) -> BTreeSet<String> {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(&v2_dir(root), "", &mut files, &mut dirs);
    dirs.into_iter().collect()
}

/// Directories under v2 that contain nothing at all.
pub fn empty_dirs(root: &Path) -> BTreeSet<String> {
    dirs(root)
        .into_iter()
        .filter(|d| {
            fs::read_dir(key_path(root, d))
                .map(|mut r| r.next().is_none())
                .unwrap_or(false)
        })
        .collect()
}

/// Content hash, length and mtime of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileState {
    /// Lowercase hex sha256 of the content.
    pub sha256: String,
    pub len: u64,
    pub mtime: SystemTime,
}

/// key -> [`FileState`] for every file (for "a dry run writes nothing" checks: compare two
/// snapshots with `==`; this includes mtimes).
pub fn snapshot(root: &Path) -> BTreeMap<String, FileState> {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(&v2_dir(root), "", &mut files, &mut dirs);
    files
        .into_iter()
        .map(|(k, p)| {
            let mut f = fs::File::open(&p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut len = 0u64;
            loop {
                let n = f
                    .read(&mut buf)
                    .unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                if n == 0 {
                    break;
                }
                len += n as u64;
                h.update(&buf[..n]);
            }
            let mtime = f
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (
                k,
                FileState {
                    sha256: hex::encode(h.finalize()),
                    len,
                    mtime,
                },
            )
        })
        .collect()
}

/// A human-readable description of how two snapshots differ ("" if equal).
pub fn snapshot_diff(
    before: &BTreeMap<String, FileState>,
    after: &BTreeMap<String, FileState>,
) -> String {
    let mut out = String::new();
    for (k, v) in before {
        match after.get(k) {
            None => out.push_str(&format!("removed: {k}\n")),
            Some(a) if a != v => out.push_str(&format!("changed: {k} ({v:?} -> {a:?})\n")),
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            out.push_str(&format!("added: {k}\n"));
        }
    }
    out
}

/// Recursively copies directory `src` to `dst` (created; must not be inside `src`).
/// mtimes are not preserved: age the copy with [`set_mtime_recursive`] if needed.
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    for entry in fs::read_dir(src).unwrap_or_else(|e| panic!("read_dir {}: {e}", src.display())) {
        let entry = entry.unwrap();
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&from, &to);
        } else if ft.is_file() {
            fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
        }
    }
}

/// Sets atime and mtime of every file and directory under `dir` (and `dir` itself) to `t`.
/// Pass the registry root: everything the collector's `--min-age` fence looks at is aged.
pub fn set_mtime_recursive(dir: &Path, t: SystemTime) {
    let ft = filetime::FileTime::from_system_time(t);
    fn rec(p: &Path, ft: filetime::FileTime) {
        let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        if md.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                rec(&e.unwrap().path(), ft);
            }
        }
        filetime::set_file_times(p, ft, ft)
            .unwrap_or_else(|e| panic!("set times {}: {e}", p.display()));
    }
    rec(dir, ft);
}

/// Ages everything under `dir` by `age` (mtime = now - age).
pub fn age_tree(dir: &Path, age: Duration) {
    set_mtime_recursive(dir, SystemTime::now() - age);
}

/// Sets the mtime (and atime) of one key (file or directory).
pub fn set_key_mtime(root: &Path, key: &str, t: SystemTime) {
    let p = key_path(root, key);
    let ft = filetime::FileTime::from_system_time(t);
    filetime::set_file_times(&p, ft, ft)
        .unwrap_or_else(|e| panic!("set times {}: {e}", p.display()));
}

/// Splits `repositories/<repo>/<_meta>/...` into (`<repo>`, `<_meta>/...`): the repository
/// name ends before the first component starting with `_`.
pub fn split_repo_key(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix("repositories/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let i = parts.iter().position(|p| p.starts_with('_'))?;
    if i == 0 {
        return None;
    }
    Some((parts[..i].join("/"), parts[i..].join("/")))
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Digests that have a `blobs/sha256/<xx>/<hex>/data` file.
pub fn blob_digests(root: &Path) -> BTreeSet<String> {
    keys(root)
        .into_iter()
        .filter_map(|k| {
            let p: Vec<&str> = k.split('/').collect();
            (p.len() == 5
                && p[0] == "blobs"
                && p[1] == "sha256"
                && p[4] == "data"
                && is_hex64(p[3])
                && p[3].starts_with(p[2]))
            .then(|| format!("sha256:{}", p[3]))
        })
        .collect()
}

fn per_repo<F: Fn(&str) -> Option<String>>(
    root: &Path,
    f: F,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for k in keys(root) {
        if let Some((repo, rest)) = split_repo_key(&k) {
            if let Some(v) = f(&rest) {
                out.entry(repo).or_default().insert(v);
            }
        }
    }
    out
}

/// repo -> digests with a revision link file.
pub fn revisions(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    per_repo(root, |rest| {
        let p: Vec<&str> = rest.split('/').collect();
        (p.len() == 5
            && p[0] == "_manifests"
            && p[1] == "revisions"
            && p[2] == "sha256"
            && p[4] == "link"
            && is_hex64(p[3]))
        .then(|| format!("sha256:{}", p[3]))
    })
}

/// repo -> digests with a `_layers` link file.
pub fn layer_links(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    per_repo(root, |rest| {
        let p: Vec<&str> = rest.split('/').collect();
        (p.len() == 4 && p[0] == "_layers" && p[1] == "sha256" && p[3] == "link" && is_hex64(p[2]))
            .then(|| format!("sha256:{}", p[2]))
    })
}

/// repo -> upload uuids having any file under `_uploads/<uuid>/`.
pub fn uploads(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    per_repo(root, |rest| {
        let p: Vec<&str> = rest.split('/').collect();
        (p.len() >= 3 && p[0] == "_uploads").then(|| p[1].to_string())
    })
}

/// repo -> tag -> digest read from `tags/<tag>/current/link` (whitespace trimmed).
pub fn tags(root: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for k in keys(root) {
        if let Some((repo, rest)) = split_repo_key(&k) {
            let p: Vec<&str> = rest.split('/').collect();
            if p.len() == 5
                && p[0] == "_manifests"
                && p[1] == "tags"
                && p[3] == "current"
                && p[4] == "link"
            {
                let content = fs::read_to_string(key_path(root, &k)).unwrap_or_default();
                out.entry(repo)
                    .or_default()
                    .insert(p[2].to_string(), content.trim().to_string());
            }
        }
    }
    out
}

/// repo -> tag -> digests with a `tags/<tag>/index/sha256/<hex>/link` file.
pub fn tag_index(root: &Path) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for k in keys(root) {
        if let Some((repo, rest)) = split_repo_key(&k) {
            let p: Vec<&str> = rest.split('/').collect();
            if p.len() == 7
                && p[0] == "_manifests"
                && p[1] == "tags"
                && p[3] == "index"
                && p[4] == "sha256"
                && p[6] == "link"
                && is_hex64(p[5])
            {
                out.entry(repo)
                    .or_default()
                    .entry(p[2].to_string())
                    .or_default()
                    .insert(format!("sha256:{}", p[5]));
            }
        }
    }
    out
}

/// Reads one key.
pub fn read_key(root: &Path, key: &str) -> Vec<u8> {
    let p = key_path(root, key);
    fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Writes one key (creating parent directories).
pub fn write_key(root: &Path, key: &str, bytes: &[u8]) {
    let p = key_path(root, key);
    fs::create_dir_all(p.parent().unwrap())
        .unwrap_or_else(|e| panic!("mkdir for {}: {e}", p.display()));
    fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// Writes `bytes` as a blob directly into the tree; returns its digest.
pub fn write_blob(root: &Path, bytes: &[u8]) -> String {
    let d = sha256_digest(bytes);
    write_key(root, &blob_key_for_digest(&d), bytes);
    d
}

/// Writes a link file with the canonical content (`sha256:<hex>`, 71 bytes, no newline).
pub fn write_link(root: &Path, key: &str, digest: &str) {
    digest_hex(digest);
    write_key(root, key, digest.as_bytes());
}

pub fn write_revision_link(root: &Path, repo: &str, digest: &str) {
    write_link(root, &revision_link_key(repo, digest), digest);
}

pub fn write_layer_link(root: &Path, repo: &str, digest: &str) {
    write_link(root, &layer_link_key(repo, digest), digest);
}

/// Links manifest `digest` in `repo` as distribution 2.1.0 did, through
/// `_layers` instead of a revision: removes its revision directory and
/// writes its layer link (2.8 still serves it through that link).
pub fn relink_through_layers(root: &Path, repo: &str, digest: &str) {
    std::fs::remove_dir_all(
        key_path(root, &revision_link_key(repo, digest))
            .parent()
            .unwrap(),
    )
    .unwrap();
    write_layer_link(root, repo, digest);
}

/// Points `tag` at `digest`: writes `current/link` and the `index/sha256/<hex>/link` entry.
pub fn write_tag(root: &Path, repo: &str, tag: &str, digest: &str) {
    write_link(root, &tag_current_link_key(repo, tag), digest);
    write_link(root, &tag_index_link_key(repo, tag, digest), digest);
}

/// Writes a manifest straight into the tree as the registry would after a push: the blob,
/// the revision link, and (if `tag`) the tag links. Returns the digest. Use this for shapes
/// the 2.8 registry refuses over HTTP (schema1, >4 MiB, missing references...).
/// Record it in a `Model` with `model.record_manifest(repo, &digest, bytes, tag)`.
pub fn write_manifest(root: &Path, repo: &str, tag: Option<&str>, bytes: &[u8]) -> String {
    let d = write_blob(root, bytes);
    write_revision_link(root, repo, &d);
    if let Some(t) = tag {
        write_tag(root, repo, t, &d);
    }
    d
}

/// Writes an upload directory like an abandoned one: `data`, `startedat` (RFC3339 text,
/// e.g. "2020-01-01T00:00:00Z") and `hashstates/sha256/0`.
pub fn write_upload(root: &Path, repo: &str, uuid: &str, data: &[u8], startedat: &str) {
    let dir = upload_dir_key(repo, uuid);
    write_key(root, &format!("{dir}/data"), data);
    write_key(root, &format!("{dir}/startedat"), startedat.as_bytes());
    write_key(root, &format!("{dir}/hashstates/sha256/0"), b"");
}

/// Appends a `\n` to a (link) file, the "trailing newline link" corruption.
pub fn append_newline(root: &Path, key: &str) {
    use std::io::Write;
    let p = key_path(root, key);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap_or_else(|e| panic!("open {} for append: {e}", p.display()));
    f.write_all(b"\n").unwrap();
}

/// Removes a key: a directory recursively, or a single file. Panics if it does not exist.
pub fn remove_key(root: &Path, key: &str) {
    let p = key_path(root, key);
    let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("remove {}: {e}", p.display()));
    if md.is_dir() {
        fs::remove_dir_all(&p).unwrap_or_else(|e| panic!("remove_dir_all {}: {e}", p.display()));
    } else {
        fs::remove_file(&p).unwrap_or_else(|e| panic!("remove_file {}: {e}", p.display()));
    }
}

/// Removes a directory relative to v2 (alias of [`remove_key`] for directories), e.g.
/// `repositories/<repo>/_manifests/tags` for the "repository without tags/" case or
/// `repositories/<repo>/_manifests` for "missing manifests".
pub fn remove_dir(root: &Path, key: &str) {
    remove_key(root, key);
}
