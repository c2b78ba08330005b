//! Benchmark-data generator: writes a large synthetic registry in exactly the key layout
//! and file contents CNCF distribution 2.8.2 writes on its filesystem driver.
//!
//!     cargo run --release --example gen_registry -- --out DIR --keys N [--seed S] [--garbage 0.3]
//!
//! The generator simulates registry API operations (blob upload, manifest PUT by tag or
//! digest, manifest DELETE by digest, abandoned chunked uploads) on an in-memory model with
//! the registry's storage semantics, then writes the final state under
//! `DIR/docker/registry/v2/` with a small thread pool. `--ops-log FILE` writes the operation
//! sequence as JSON lines, so that `bench/gen_replay_ops.py` can push the very same operations
//! through the real registry and the two trees can be compared key for key
//! (`bench/validate_generator.sh`).
//!
//! The last line on stdout is a JSON summary, including the number of blobs a default-mode
//! and a `--delete-untagged` collection would delete, computed from the model.
//! See bench/GENERATOR.md.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use sha2::{Digest as _, Sha256};

#[derive(Parser, Debug)]
#[command(about = "Write a synthetic registry tree in the distribution v2 filesystem layout")]
struct Args {
    /// Root directory (the registry's `rootdirectory`); the tree goes under DIR/docker/registry/v2.
    #[arg(long)]
    out: PathBuf,
    /// Approximate number of keys (files) to write; generation stops at the first
    /// repository boundary past it.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Seed of the deterministic generator: same seed and options, same tree.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Target fraction of blobs (by count) that a default-mode collection deletes.
    #[arg(long, default_value_t = 0.3)]
    garbage: f64,
    /// Writer threads (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Also write the simulated API operations as JSON lines (for bench/replay_ops.py).
    #[arg(long)]
    ops_log: Option<PathBuf>,
    /// Also write the JSON summary to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Do not create the empty directories the filesystem driver leaves behind
    /// (deleted revisions' directories, `_uploads/` after completed uploads).
    #[arg(long)]
    no_empty_dirs: bool,
    /// Set every file's mtime this far in the past (e.g. `2d`), so that collectors'
    /// default `--min-age` grace periods do not spare everything. Costs one syscall a file.
    #[arg(long)]
    backdate: Option<humantime::Duration>,
    /// Only simulate and print the summary; write nothing.
    #[arg(long)]
    dry_run: bool,
}

// ---------------------------------------------------------------------------------------
// Deterministic PRNG (xoshiro256**, seeded by splitmix64): no dependency, stable forever.

#[derive(Clone)]
struct Rng {
    s: [u64; 4],
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e3779b97f4a7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut sm = seed;
        let mut s = [0u64; 4];
        for x in &mut s {
            *x = splitmix(&mut sm);
        }
        Rng { s }
    }
    fn next(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }
    /// Uniform in 0..n.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    /// Log-uniform integer in lo..=hi (heavy tail: many small, few large).
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (a, b) = ((lo as f64).ln(), ((hi + 1) as f64).ln());
        ((a + self.f64() * (b - a)).exp() as u64).clamp(lo, hi)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn hex(&mut self, n: usize) -> String {
        const H: &[u8] = b"0123456789abcdef";
        (0..n).map(|_| H[self.below(16) as usize] as char).collect()
    }
    fn base64ish(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..n).map(|_| A[self.below(64) as usize] as char).collect()
    }
    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        let v = ["8", "9", "a", "b"][self.below(4) as usize];
        format!(
            "{}-{}-4{}-{}{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            v,
            &h[17..20],
            &h[20..32]
        )
    }
}

/// Bytes of a random layer (what stands for a compressed tar), reproducible from its seed.
fn layer_bytes(seed: u64, size: usize, buf: &mut Vec<u8>) {
    buf.resize(size, 0);
    Rng::new(seed ^ 0x6c61796572).fill(buf);
}

// ---------------------------------------------------------------------------------------
// A tiny ordered JSON writer: key order and indentation as the pushing tool writes them.

#[allow(dead_code)]
enum J {
    S(String),
    N(u64),
    Null,
    O(Vec<(String, J)>),
    A(Vec<J>),
}

fn s(v: impl Into<String>) -> J {
    J::S(v.into())
}

fn o(fields: Vec<(&str, J)>) -> J {
    J::O(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Style {
    Compact,
    Indent(usize),
}

fn esc(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            // Go's encoding/json escapes these three for HTML safety
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn render(j: &J, style: Style, level: usize, out: &mut String) {
    let nl = |out: &mut String, level: usize| {
        if let Style::Indent(n) = style {
            out.push('\n');
            for _ in 0..n * level {
                out.push(' ');
            }
        }
    };
    let colon = if style == Style::Compact { ":" } else { ": " };
    match j {
        J::S(v) => esc(out, v),
        J::N(n) => {
            let _ = write!(out, "{n}");
        }
        J::Null => out.push_str("null"),
        J::O(fields) if fields.is_empty() => out.push_str("{}"),
        J::A(items) if items.is_empty() => out.push_str("[]"),
        J::O(fields) => {
            out.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                nl(out, level + 1);
                esc(out, k);
                out.push_str(colon);
                render(v, style, level + 1, out);
            }
            nl(out, level);
            out.push('}');
        }
        J::A(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                nl(out, level + 1);
                render(v, style, level + 1, out);
            }
            nl(out, level);
            out.push(']');
        }
    }
}

fn to_bytes(j: &J, style: Style) -> Vec<u8> {
    let mut out = String::with_capacity(1024);
    render(j, style, 0, &mut out);
    out.into_bytes()
}

// ---------------------------------------------------------------------------------------
// Media types

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const COSIGN_SIG: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const SPDX: &str = "application/spdx+json";
const NOTARY_SIG: &str = "application/vnd.cncf.notary.signature";
const JOSE: &str = "application/jose+json";
const BUILDKIT_CACHE_CONFIG: &str = "application/vnd.buildkit.cacheconfig.v0";
const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// The tool that pushed a manifest decides its JSON key order and indentation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    /// `docker push`: Go MarshalIndent with three spaces, descriptor order mediaType, size, digest.
    Docker,
    /// BuildKit / buildx: two-space indent, OCI descriptor order mediaType, digest, size.
    Buildkit,
    /// go-containerregistry (cosign, crane) and oras: compact JSON.
    Compact,
    /// helm (oras-go v1): compact JSON with no top-level mediaType.
    Helm,
}

impl Tool {
    fn style(self) -> Style {
        match self {
            Tool::Docker => Style::Indent(3),
            Tool::Buildkit => Style::Indent(2),
            Tool::Compact | Tool::Helm => Style::Compact,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fmt {
    Docker,
    Oci,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
struct Arch {
    arch: &'static str,
    variant: Option<&'static str>,
}

const AMD64: Arch = Arch {
    arch: "amd64",
    variant: None,
};
const ARM64: Arch = Arch {
    arch: "arm64",
    variant: None,
};
const ARMV7: Arch = Arch {
    arch: "arm",
    variant: Some("v7"),
};
const PPC64LE: Arch = Arch {
    arch: "ppc64le",
    variant: None,
};
const S390X: Arch = Arch {
    arch: "s390x",
    variant: None,
};

fn platform(a: Arch) -> J {
    let mut f = vec![("architecture", s(a.arch)), ("os", s("linux"))];
    if let Some(v) = a.variant {
        f.push(("variant", s(v)));
    }
    o(f)
}

fn rfc3339(t: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t.max(0) as u64)).to_string()
}

fn hex32(d: &[u8; 32]) -> String {
    hex::encode(d)
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

// ---------------------------------------------------------------------------------------
// Go's crypto/sha256 MarshalBinary of the running hash of `data`: what the registry stores
// in `_uploads/<uuid>/hashstates/sha256/<offset>` (magic "sha\x03", h[0..8] big-endian, the
// pending partial block zero-padded to 64 bytes, the length as a big-endian u64).

const K256: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

fn compress(h: &mut [u32; 8], block: &[u8]) {
    let mut w = [0u32; 64];
    for i in 0..16 {
        w[i] = u32::from_be_bytes(block[i * 4..i * 4 + 4].try_into().unwrap());
    }
    for i in 16..64 {
        let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
        let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16]
            .wrapping_add(s0)
            .wrapping_add(w[i - 7])
            .wrapping_add(s1);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = *h;
    for i in 0..64 {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = hh
            .wrapping_add(s1)
            .wrapping_add(ch)
            .wrapping_add(K256[i])
            .wrapping_add(w[i]);
        let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        hh = g;
        g = f;
        f = e;
        e = d.wrapping_add(t1);
        d = c;
        c = b;
        b = a;
        a = t1.wrapping_add(t2);
    }
    for (x, v) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
        *x = x.wrapping_add(v);
    }
}

fn go_sha256_hashstate(data: &[u8]) -> Vec<u8> {
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let full = data.len() / 64 * 64;
    for block in data[..full].chunks(64) {
        compress(&mut h, block);
    }
    let mut out = Vec::with_capacity(108);
    out.extend_from_slice(b"sha\x03");
    for x in h {
        out.extend_from_slice(&x.to_be_bytes());
    }
    out.extend_from_slice(&data[full..]);
    out.resize(4 + 32 + 64, 0);
    out.extend_from_slice(&(data.len() as u64).to_be_bytes());
    out
}

// ---------------------------------------------------------------------------------------
// The model

type B = u32; // blob id

/// A layer descriptor to write: blob, media type, annotations.
type LayerDesc<'a> = (B, &'a str, Vec<(&'a str, J)>);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Layer,
    Config,
    Manifest,
}

struct Blob {
    digest: [u8; 32],
    size: u32,
    kind: Kind,
    /// Random layers are regenerated from their seed when written.
    seed: u64,
    bytes: Option<Box<[u8]>>,
    present: bool,
}

struct Man {
    media_type: &'static str,
    /// config and layers
    refs: Vec<B>,
    children: Vec<B>,
    subject: Option<B>,
}

#[derive(Default)]
struct Tag {
    current: B,
    index: Vec<B>,
}

struct Upload {
    uuid: String,
    seed: u64,
    chunks: Vec<u32>,
    started: i64,
}

#[derive(Default)]
struct Repo {
    name: String,
    layers: HashSet<B>,
    revisions: HashSet<B>,
    deleted_revisions: HashSet<B>,
    tags: BTreeMap<String, Tag>,
    uploads: Vec<Upload>,
    ever_upload: bool,
    ever_manifest: bool,
    ever_tag: bool,
}

impl Repo {
    /// Whether the registry would have created the repository's directory.
    fn exists(&self) -> bool {
        self.ever_upload || self.ever_manifest
    }
}

enum Op {
    Blob {
        repo: u32,
        blob: B,
    },
    Manifest {
        repo: u32,
        blob: B,
        tag: Option<String>,
    },
    Delete {
        repo: u32,
        blob: B,
    },
    Upload {
        repo: u32,
        upload: u32,
    },
}

/// One build (one pushed image or index) of an application repository.
#[derive(Default)]
struct Build {
    top: B,
    /// per-arch images of an index, and its attestation manifests
    children: Vec<B>,
    /// cosign `.sig` / `.att` manifests (tag-based) of `top`
    sigs: Vec<B>,
    /// OCI referrers (with `subject`) and referrers-tag-schema indexes
    referrers: Vec<B>,
    deleted: bool,
}

struct BaseImage {
    repo_name: String,
    tag: String,
    /// per arch: the layers of that arch's image (parent's first)
    arches: Vec<(Arch, Vec<B>)>,
}

struct World {
    rng: Rng,
    target_garbage: f64,
    /// the number of keys asked for: the last repository stops early once it is reached
    key_budget: u64,
    blobs: Vec<Blob>,
    by_digest: HashMap<[u8; 32], B>,
    mans: HashMap<B, Man>,
    refcnt: Vec<u32>,
    present: u64,
    live: u64,
    keys: u64,
    repos: Vec<Repo>,
    repo_names: HashSet<String>,
    ops: Option<Vec<Op>>,
    buf: Vec<u8>,
    bases: Vec<BaseImage>,
    empty_config: Option<B>,
    now: i64,
    /// mean time between two builds of the current repository
    step: u64,
    builds: u64,
    deleted_builds: u64,
    failed_pushes: u64,
}

const LINK_LEN: u64 = 71;
/// Application repositories push between these dates (2023-01-01 and 2025-06-01, UTC).
const WINDOW_START: i64 = 1_672_531_200;
const WINDOW_END: i64 = 1_748_736_000;

impl World {
    fn new(seed: u64, target_garbage: f64, record_ops: bool) -> World {
        World {
            rng: Rng::new(seed),
            target_garbage,
            key_budget: u64::MAX,
            blobs: Vec::new(),
            by_digest: HashMap::new(),
            mans: HashMap::new(),
            refcnt: Vec::new(),
            present: 0,
            live: 0,
            keys: 0,
            repos: Vec::new(),
            repo_names: HashSet::new(),
            ops: if record_ops { Some(Vec::new()) } else { None },
            buf: Vec::new(),
            bases: Vec::new(),
            empty_config: None,
            // base images are pushed first, from 2022-01-01T00:00:00Z
            now: 1_640_995_200,
            step: 86400,
            builds: 0,
            deleted_builds: 0,
            failed_pushes: 0,
        }
    }

    // ----- blobs -----

    fn new_blob(
        &mut self,
        kind: Kind,
        digest: [u8; 32],
        size: u32,
        seed: u64,
        bytes: Option<Box<[u8]>>,
    ) -> B {
        if let Some(&id) = self.by_digest.get(&digest) {
            return id;
        }
        let id = self.blobs.len() as B;
        self.blobs.push(Blob {
            digest,
            size,
            kind,
            seed,
            bytes,
            present: false,
        });
        self.refcnt.push(0);
        self.by_digest.insert(digest, id);
        id
    }

    fn bytes_blob(&mut self, kind: Kind, bytes: Vec<u8>) -> B {
        let d = sha256(&bytes);
        let n = bytes.len() as u32;
        self.new_blob(kind, d, n, 0, Some(bytes.into_boxed_slice()))
    }

    fn random_layer(&mut self, size: u32) -> B {
        let seed = self.rng.next();
        let mut buf = std::mem::take(&mut self.buf);
        layer_bytes(seed, size as usize, &mut buf);
        let d = sha256(&buf);
        self.buf = buf;
        self.new_blob(Kind::Layer, d, size, seed, None)
    }

    /// A layer size: mostly a few hundred bytes to a few KB (most fit one 4 KiB block).
    fn layer_size(&mut self) -> u32 {
        if self.rng.chance(0.05) {
            self.rng.range(4096, 16384) as u32
        } else {
            self.rng.log_uniform(200, 3800) as u32
        }
    }

    fn digest_str(&self, b: B) -> String {
        format!("sha256:{}", hex32(&self.blobs[b as usize].digest))
    }

    fn size(&self, b: B) -> u64 {
        self.blobs[b as usize].size as u64
    }

    fn empty_config(&mut self) -> B {
        if let Some(b) = self.empty_config {
            return b;
        }
        let b = self.bytes_blob(Kind::Config, b"{}".to_vec());
        self.empty_config = Some(b);
        b
    }

    fn descriptor(&self, b: B, media_type: &str, tool: Tool, extra: Vec<(&str, J)>) -> J {
        let mut f = vec![("mediaType", s(media_type))];
        if tool == Tool::Docker {
            f.push(("size", J::N(self.size(b))));
            f.push(("digest", s(self.digest_str(b))));
        } else {
            f.push(("digest", s(self.digest_str(b))));
            f.push(("size", J::N(self.size(b))));
        }
        f.extend(extra);
        o(f)
    }

    fn manifest_descriptor(&self, b: B, tool: Tool, extra: Vec<(&str, J)>) -> J {
        let mt = self.mans[&b].media_type;
        self.descriptor(b, mt, tool, extra)
    }

    // ----- manifests -----

    #[allow(clippy::too_many_arguments)]
    fn image_manifest(
        &mut self,
        fmt: Fmt,
        tool: Tool,
        config: (B, &str),
        layers: &[LayerDesc],
        artifact_type: Option<&str>,
        subject: Option<B>,
        annotations: Vec<(&str, J)>,
    ) -> B {
        let media_type = if fmt == Fmt::Docker {
            DOCKER_MANIFEST
        } else {
            OCI_MANIFEST
        };
        let mut f: Vec<(&str, J)> = vec![("schemaVersion", J::N(2))];
        if tool != Tool::Helm {
            f.push(("mediaType", s(media_type)));
        }
        if let Some(at) = artifact_type {
            f.push(("artifactType", s(at)));
        }
        f.push(("config", self.descriptor(config.0, config.1, tool, vec![])));
        let ls: Vec<J> = layers
            .iter()
            .map(|(b, mt, ann)| {
                let extra = if ann.is_empty() {
                    vec![]
                } else {
                    vec![(
                        "annotations",
                        J::O(
                            ann.iter()
                                .map(|(k, v)| (k.to_string(), clone_j(v)))
                                .collect(),
                        ),
                    )]
                };
                self.descriptor(*b, mt, tool, extra)
            })
            .collect();
        f.push(("layers", J::A(ls)));
        if let Some(sub) = subject {
            f.push(("subject", self.manifest_descriptor(sub, tool, vec![])));
        }
        if !annotations.is_empty() {
            f.push(("annotations", o(annotations)));
        }
        let bytes = to_bytes(&o(f), tool.style());
        let b = self.bytes_blob(Kind::Manifest, bytes);
        let mut refs = vec![config.0];
        refs.extend(layers.iter().map(|l| l.0));
        self.mans.insert(
            b,
            Man {
                media_type,
                refs,
                children: vec![],
                subject,
            },
        );
        b
    }

    fn index_manifest(
        &mut self,
        fmt: Fmt,
        tool: Tool,
        children: Vec<(B, Vec<(&str, J)>)>,
        artifact_type: Option<&str>,
        annotations: Vec<(&str, J)>,
    ) -> B {
        let media_type = if fmt == Fmt::Docker {
            DOCKER_LIST
        } else {
            OCI_INDEX
        };
        let mut f: Vec<(&str, J)> = vec![("schemaVersion", J::N(2)), ("mediaType", s(media_type))];
        if let Some(at) = artifact_type {
            f.push(("artifactType", s(at)));
        }
        let ms: Vec<J> = children
            .iter()
            .map(|(b, extra)| self.manifest_descriptor(*b, tool, clone_fields(extra)))
            .collect();
        f.push(("manifests", J::A(ms)));
        if !annotations.is_empty() {
            f.push(("annotations", o(annotations)));
        }
        let bytes = to_bytes(&o(f), tool.style());
        let b = self.bytes_blob(Kind::Manifest, bytes);
        self.mans.insert(
            b,
            Man {
                media_type,
                refs: vec![],
                children: children.iter().map(|c| c.0).collect(),
                subject: None,
            },
        );
        b
    }

    // ----- configs -----

    fn diff_id(&self, layer: B) -> String {
        let mut h = Sha256::new();
        h.update(b"diff:");
        h.update(self.blobs[layer as usize].digest);
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    fn image_config(
        &mut self,
        arch: Arch,
        layers: &[B],
        created: i64,
        repo: &str,
        version: &str,
    ) -> B {
        let ts = rfc3339(created);
        let mut history = Vec::new();
        for (i, _) in layers.iter().enumerate() {
            let cmd = match i {
                0 => "/bin/sh -c #(nop) ADD file:".to_string() + &self.rng.hex(64) + " in / ",
                _ => format!("RUN /bin/sh -c step-{i} # buildkit"),
            };
            history.push(o(vec![("created", s(ts.clone())), ("created_by", s(cmd))]));
        }
        let mut config = vec![
            (
                "Env",
                J::A(vec![
                    s("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
                    s(format!("APP_VERSION={version}")),
                ]),
            ),
            ("Entrypoint", J::A(vec![s("/app/entrypoint")])),
            ("WorkingDir", s("/app")),
        ];
        config.push((
            "Labels",
            o(vec![
                ("org.opencontainers.image.revision", s(self.rng.hex(40))),
                (
                    "org.opencontainers.image.source",
                    s(format!("https://git.example.com/{repo}")),
                ),
            ]),
        ));
        let mut f = vec![("architecture", s(arch.arch))];
        f.push(("config", o(config)));
        f.push(("created", s(ts)));
        f.push(("history", J::A(history)));
        f.push(("os", s("linux")));
        f.push((
            "rootfs",
            o(vec![
                ("type", s("layers")),
                (
                    "diff_ids",
                    J::A(layers.iter().map(|l| s(self.diff_id(*l))).collect()),
                ),
            ]),
        ));
        if let Some(v) = arch.variant {
            f.push(("variant", s(v)));
        }
        let bytes = to_bytes(&o(f), Style::Compact);
        self.bytes_blob(Kind::Config, bytes)
    }

    // ----- registry operations (with the registry's storage semantics) -----

    fn log(&mut self, op: Op) {
        if let Some(ops) = &mut self.ops {
            ops.push(op);
        }
    }

    fn make_present(&mut self, b: B) {
        let blob = &mut self.blobs[b as usize];
        if !blob.present {
            blob.present = true;
            self.present += 1;
            self.keys += 1;
        }
    }

    fn inc(&mut self, b: B) {
        if self.refcnt[b as usize] == 0 {
            self.live += 1;
        }
        self.refcnt[b as usize] += 1;
    }

    fn dec(&mut self, b: B) {
        self.refcnt[b as usize] -= 1;
        if self.refcnt[b as usize] == 0 {
            self.live -= 1;
        }
    }

    fn man_edges(&self, m: B) -> Vec<B> {
        let man = &self.mans[&m];
        let mut v = vec![m];
        v.extend(&man.refs);
        v.extend(&man.children);
        v
    }

    /// POST + PUT of a blob through `repo` (skipped when the repository already links it,
    /// as a client's HEAD would find it).
    fn push_blob(&mut self, r: usize, b: B) {
        self.repos[r].ever_upload = true;
        if self.repos[r].layers.contains(&b) {
            return;
        }
        self.make_present(b);
        self.repos[r].layers.insert(b);
        self.keys += 1;
        self.log(Op::Blob {
            repo: r as u32,
            blob: b,
        });
    }

    fn push_blobs(&mut self, r: usize, bs: &[B]) {
        for &b in bs {
            self.push_blob(r, b);
        }
    }

    /// PUT /v2/<repo>/manifests/<tag or digest>.
    fn put_manifest(&mut self, r: usize, m: B, tag: Option<&str>) {
        {
            let man = &self.mans[&m];
            let repo = &self.repos[r];
            for x in &man.refs {
                assert!(
                    repo.layers.contains(x),
                    "manifest references a blob not pushed to {}",
                    repo.name
                );
            }
            for x in &man.children {
                assert!(
                    repo.revisions.contains(x),
                    "index child not pushed to {}",
                    repo.name
                );
            }
        }
        self.make_present(m);
        let repo = &mut self.repos[r];
        repo.ever_manifest = true;
        let new_revision = repo.revisions.insert(m);
        if new_revision {
            repo.deleted_revisions.remove(&m);
            self.keys += 1;
        }
        if let Some(t) = tag {
            let repo = &mut self.repos[r];
            repo.ever_tag = true;
            match repo.tags.get_mut(t) {
                Some(tag) => {
                    if !tag.index.contains(&m) {
                        tag.index.push(m);
                        self.keys += 1;
                    }
                    tag.current = m;
                }
                None => {
                    repo.tags.insert(
                        t.to_string(),
                        Tag {
                            current: m,
                            index: vec![m],
                        },
                    );
                    self.keys += 2;
                }
            }
        }
        if new_revision {
            for e in self.man_edges(m) {
                self.inc(e);
            }
        }
        self.log(Op::Manifest {
            repo: r as u32,
            blob: m,
            tag: tag.map(str::to_string),
        });
    }

    /// DELETE /v2/<repo>/manifests/<digest>: the revision link goes (its directory stays on
    /// a filesystem), and so does every tag whose current link points at it (whole tag
    /// directory, history included). Tag history entries of other tags stay.
    fn delete_manifest(&mut self, r: usize, m: B) {
        let repo = &mut self.repos[r];
        if !repo.revisions.remove(&m) {
            return;
        }
        repo.deleted_revisions.insert(m);
        self.keys -= 1;
        let doomed: Vec<String> = repo
            .tags
            .iter()
            .filter(|(_, t)| t.current == m)
            .map(|(n, _)| n.clone())
            .collect();
        for t in doomed {
            let tag = repo.tags.remove(&t).unwrap();
            self.keys -= 1 + tag.index.len() as u64;
        }
        for e in self.man_edges(m) {
            self.dec(e);
        }
        self.log(Op::Delete {
            repo: r as u32,
            blob: m,
        });
    }

    /// POST, then PATCH of 1-3 chunks, then nothing: an abandoned upload.
    fn abandoned_upload(&mut self, r: usize) {
        let n = self.rng.range(1, 3) as usize;
        let chunks: Vec<u32> = (0..n).map(|_| self.rng.range(500, 6000) as u32).collect();
        let uuid = self.rng.uuid();
        let seed = self.rng.next();
        let started = self.now;
        let repo = &mut self.repos[r];
        repo.ever_upload = true;
        repo.uploads.push(Upload {
            uuid,
            seed,
            chunks,
            started,
        });
        self.keys += 2 + 1 + n as u64;
        let idx = self.repos[r].uploads.len() as u32 - 1;
        self.log(Op::Upload {
            repo: r as u32,
            upload: idx,
        });
    }

    fn new_repo(&mut self, name: String) -> usize {
        assert!(
            self.repo_names.insert(name.clone()),
            "duplicate repository {name}"
        );
        self.repos.push(Repo {
            name,
            ..Repo::default()
        });
        self.repos.len() - 1
    }

    fn garbage_now(&self) -> f64 {
        if self.present == 0 {
            0.0
        } else {
            (self.present - self.live) as f64 / self.present as f64
        }
    }

    fn wants_garbage(&self) -> bool {
        self.garbage_now() < self.target_garbage
    }

    /// Each repository lives on its own timeline inside the simulated window: its first
    /// push some time after WINDOW_START, its builds spread evenly (with jitter) up to
    /// WINDOW_END, so dates stay in the past whatever the size of the tree.
    fn start_timeline(&mut self, builds: u64) {
        let span = (WINDOW_END - WINDOW_START) as u64;
        self.now = WINDOW_START + self.rng.below(span / 2) as i64;
        self.step = ((WINDOW_END - self.now) as u64 / builds.max(1)).max(120);
    }

    fn build_tick(&mut self) {
        let step = self.step;
        self.now += (step / 2 + self.rng.below(step / 2)) as i64;
    }

    fn tick(&mut self, lo: i64, hi: i64) {
        self.now += self.rng.range(lo as u64, hi as u64) as i64;
    }
}

fn clone_j(j: &J) -> J {
    match j {
        J::S(v) => J::S(v.clone()),
        J::N(n) => J::N(*n),
        J::Null => J::Null,
        J::O(f) => J::O(f.iter().map(|(k, v)| (k.clone(), clone_j(v))).collect()),
        J::A(a) => J::A(a.iter().map(clone_j).collect()),
    }
}

fn clone_fields<'a>(f: &[(&'a str, J)]) -> Vec<(&'a str, J)> {
    f.iter().map(|(k, v)| (*k, clone_j(v))).collect()
}

// ---------------------------------------------------------------------------------------
// Population: base images, then application repositories until the key budget is spent.

struct BaseSpec {
    repo: &'static str,
    tags: &'static [&'static str],
    parent: Option<(&'static str, &'static str)>,
    own_layers: u64,
    arches: &'static [Arch],
}

const BASES: &[BaseSpec] = &[
    BaseSpec {
        repo: "library/alpine",
        tags: &["3.19", "3.20", "3.18", "3.17"],
        parent: None,
        own_layers: 1,
        arches: &[AMD64, ARM64, ARMV7, PPC64LE, S390X],
    },
    BaseSpec {
        repo: "library/debian",
        tags: &["bookworm-slim", "bookworm", "bullseye-slim"],
        parent: None,
        own_layers: 1,
        arches: &[AMD64, ARM64, ARMV7, PPC64LE, S390X],
    },
    BaseSpec {
        repo: "library/python",
        tags: &["3.12-slim", "3.11-slim"],
        parent: Some(("library/debian", "bookworm-slim")),
        own_layers: 3,
        arches: &[AMD64, ARM64, ARMV7],
    },
    BaseSpec {
        repo: "library/node",
        tags: &["20-alpine", "18-alpine"],
        parent: Some(("library/alpine", "3.19")),
        own_layers: 3,
        arches: &[AMD64, ARM64],
    },
    BaseSpec {
        repo: "library/ubuntu",
        tags: &["22.04", "24.04", "20.04"],
        parent: None,
        own_layers: 1,
        arches: &[AMD64, ARM64, PPC64LE, S390X],
    },
    BaseSpec {
        repo: "library/golang",
        tags: &["1.22-alpine", "1.21-alpine"],
        parent: Some(("library/alpine", "3.19")),
        own_layers: 3,
        arches: &[AMD64, ARM64],
    },
    BaseSpec {
        repo: "library/eclipse-temurin",
        tags: &["21-jre", "17-jre"],
        parent: Some(("library/ubuntu", "22.04")),
        own_layers: 2,
        arches: &[AMD64, ARM64],
    },
    BaseSpec {
        repo: "library/nginx",
        tags: &["1.25", "1.25-alpine"],
        parent: Some(("library/debian", "bookworm-slim")),
        own_layers: 2,
        arches: &[AMD64, ARM64],
    },
    BaseSpec {
        repo: "distroless/static-debian12",
        tags: &["nonroot", "latest"],
        parent: None,
        own_layers: 2,
        arches: &[AMD64, ARM64],
    },
    BaseSpec {
        repo: "library/busybox",
        tags: &["1.36", "1.36-musl"],
        parent: None,
        own_layers: 1,
        arches: &[AMD64, ARM64, ARMV7],
    },
];

const SERVICES: &[&str] = &[
    "api",
    "web",
    "worker",
    "gateway",
    "auth",
    "billing",
    "search",
    "frontend",
    "backend",
    "scheduler",
    "notifier",
    "ingest",
    "etl",
    "reports",
    "admin",
    "payments",
    "users",
    "orders",
    "inventory",
    "catalog",
    "cart",
    "checkout",
    "mailer",
    "proxy",
    "cron",
    "metrics",
    "exporter",
    "operator",
    "controller",
    "agent",
    "cli",
    "docs",
    "ml-serving",
    "feature-store",
    "indexer",
    "crawler",
    "webhook",
    "sync",
    "migrator",
    "uploader",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Policy {
    /// semver tags, `latest` (and sometimes `X.Y`) moves
    Release,
    /// `sha-<7>` per build, `main` moves, `pr-<n>` tags
    Ci,
    /// only `latest`, moved every build: every older build is untagged
    LatestOnly,
    /// `<date>-<n>`, `stable` moves
    Date,
}

const MOVING_TAGS: &[&str] = &["latest", "main", "stable", "develop", "buildcache"];

struct AppOpts {
    multiarch: bool,
    fmt: Fmt,
    tool: Tool,
    policy: Policy,
    signed: bool,
    referrers: bool,
    referrers_tag: bool,
    attestations: bool,
    clean_referrers: bool,
    cache: Option<usize>,
    promote: Option<usize>,
    builds: u64,
}

struct AppState {
    r: usize,
    name: String,
    base: usize,
    deps: HashMap<Arch, B>,
    builds: Vec<Build>,
    version: (u64, u64, u64),
    pr: u64,
}

impl World {
    fn repo_index(&self, name: &str) -> usize {
        self.repos.iter().position(|r| r.name == name).unwrap()
    }

    fn base_count_for(keys: u64) -> usize {
        ((keys as f64).sqrt() / 8.0).round().clamp(2.0, 150.0) as usize
    }

    /// The pool of base images (their layers appear in many repositories).
    fn make_bases(&mut self, n: usize) {
        // public images, in an order that mixes repositories, parents first
        let mut order: Vec<(usize, usize)> = Vec::new();
        let max_tags = BASES.iter().map(|b| b.tags.len()).max().unwrap();
        for t in 0..max_tags {
            for (i, b) in BASES.iter().enumerate() {
                if t < b.tags.len() {
                    order.push((i, t));
                }
            }
        }
        let mut k = 0;
        while self.bases.len() < n {
            if k < order.len() {
                let (i, t) = order[k];
                let spec = &BASES[i];
                let parent = spec.parent.and_then(|(pr, pt)| {
                    self.bases
                        .iter()
                        .position(|b| b.repo_name == pr && b.tag == pt)
                });
                if spec.parent.is_some() && parent.is_none() {
                    k += 1;
                    continue;
                }
                self.push_base(
                    spec.repo.to_string(),
                    spec.tags[t].to_string(),
                    parent,
                    spec.own_layers,
                    spec.arches,
                    i % 2 == 0,
                );
            } else {
                // the organisation's golden images, built FROM public ones
                let j = k - order.len();
                let parent = Some(self.rng.below(self.bases.len().min(12) as u64) as usize);
                let lang = [
                    "java", "python", "node", "go", "ruby", "dotnet", "php", "rust",
                ][j % 8];
                let repo = format!("platform/base/{lang}");
                let tag = format!("2024.{}.{}", j / 8 + 1, self.rng.below(10));
                let arches: &'static [Arch] = &[AMD64, ARM64];
                let own = self.rng.range(1, 2);
                self.push_base(repo, tag, parent, own, arches, false);
            }
            k += 1;
        }
    }

    fn push_base(
        &mut self,
        repo_name: String,
        tag: String,
        parent: Option<usize>,
        own: u64,
        arches: &[Arch],
        docker_list: bool,
    ) {
        let r = match self.repo_names.contains(&repo_name) {
            true => self.repo_index(&repo_name),
            false => self.new_repo(repo_name.clone()),
        };
        let (fmt, tool) = if docker_list {
            (Fmt::Docker, Tool::Docker)
        } else {
            (Fmt::Oci, Tool::Buildkit)
        };
        let mut per_arch = Vec::new();
        let mut children = Vec::new();
        for &a in arches {
            let mut layers: Vec<B> = match parent {
                Some(p) => match self.bases[p].arches.iter().find(|(pa, _)| *pa == a) {
                    Some((_, l)) => l.clone(),
                    None => continue,
                },
                None => vec![],
            };
            for _ in 0..own {
                let size = self.layer_size();
                layers.push(self.random_layer(size));
            }
            let config = self.image_config(a, &layers, self.now, &repo_name, &tag);
            self.push_blobs(r, &layers);
            self.push_blob(r, config);
            let lmt = if fmt == Fmt::Docker {
                DOCKER_LAYER
            } else {
                OCI_LAYER
            };
            let cmt = if fmt == Fmt::Docker {
                DOCKER_CONFIG
            } else {
                OCI_CONFIG
            };
            let ls: Vec<LayerDesc> = layers.iter().map(|&l| (l, lmt, vec![])).collect();
            let m = self.image_manifest(fmt, tool, (config, cmt), &ls, None, None, vec![]);
            self.put_manifest(r, m, None);
            children.push((m, vec![("platform", platform(a))]));
            per_arch.push((a, layers));
        }
        let idx = self.index_manifest(fmt, tool, children, None, vec![]);
        self.put_manifest(r, idx, Some(&tag));
        if self.rng.chance(0.5) || self.repos[r].tags.len() == 1 {
            self.put_manifest(r, idx, Some("latest"));
        }
        self.bases.push(BaseImage {
            repo_name,
            tag,
            arches: per_arch,
        });
        self.tick(3600, 86400 * 2);
    }

    fn unique_name(&mut self, base: String) -> String {
        if !self.repo_names.contains(&base) {
            return base;
        }
        for i in 2.. {
            let n = format!("{base}-{i}");
            if !self.repo_names.contains(&n) {
                return n;
            }
        }
        unreachable!()
    }

    fn pick_base(&mut self) -> usize {
        // skewed: the first (most popular) bases are used most
        let u = self.rng.f64();
        ((u * u * u) * self.bases.len() as f64) as usize
    }

    fn random_opts(&mut self, showcase: Option<usize>) -> AppOpts {
        let rng = &mut self.rng;
        let multiarch = rng.chance(0.22);
        let fmt = if rng.chance(0.45) {
            Fmt::Docker
        } else {
            Fmt::Oci
        };
        let tool = if fmt == Fmt::Docker {
            Tool::Docker
        } else {
            *rng.pick(&[Tool::Buildkit, Tool::Buildkit, Tool::Compact])
        };
        let policy = *rng.pick(&[
            Policy::Release,
            Policy::Ci,
            Policy::Ci,
            Policy::LatestOnly,
            Policy::Date,
        ]);
        let builds = if multiarch {
            rng.log_uniform(1, 40)
        } else {
            rng.log_uniform(1, 120)
        };
        let mut o = AppOpts {
            multiarch,
            fmt,
            tool,
            policy,
            signed: rng.chance(0.25),
            referrers: fmt == Fmt::Oci && rng.chance(0.3),
            referrers_tag: rng.chance(0.4),
            attestations: rng.chance(0.6),
            clean_referrers: rng.chance(0.5),
            cache: None,
            promote: None,
            builds,
        };
        // the first repositories show every feature, so that small trees have them all
        match showcase {
            Some(0) => {
                o.multiarch = true;
                o.fmt = Fmt::Oci;
                o.tool = Tool::Buildkit;
                o.attestations = true;
                o.referrers = true;
                o.referrers_tag = true;
                o.signed = true;
                o.policy = Policy::Release;
                o.builds = 5;
            }
            Some(1) => {
                o.multiarch = false;
                o.fmt = Fmt::Docker;
                o.tool = Tool::Docker;
                o.signed = true;
                o.referrers = false;
                o.policy = Policy::Ci;
                o.builds = 8;
            }
            Some(2) => {
                o.multiarch = true;
                o.fmt = Fmt::Docker;
                o.tool = Tool::Docker;
                o.signed = false;
                o.referrers = false;
                o.policy = Policy::LatestOnly;
                o.builds = 4;
            }
            Some(3) => {
                o.multiarch = false;
                o.fmt = Fmt::Oci;
                o.tool = Tool::Compact;
                o.referrers = true;
                o.referrers_tag = false;
                o.signed = true;
                o.policy = Policy::Date;
                o.builds = 6;
            }
            _ => {}
        }
        o
    }

    /// One application repository (plus its nested build-cache repository and its
    /// promotion target, if it has them), built over time.
    fn gen_app(&mut self, name: String, mut opts: AppOpts, showcase: Option<usize>) {
        let r = self.new_repo(name.clone());
        if showcase == Some(1) || (showcase.is_none() && self.rng.chance(0.12)) {
            let leaf = if self.rng.chance(0.5) {
                "cache"
            } else {
                "buildcache"
            };
            let cache = self.new_repo(format!("{name}/{leaf}"));
            opts.cache = Some(cache);
        }
        if showcase == Some(3)
            || (showcase.is_none() && opts.policy == Policy::Release && self.rng.chance(0.25))
        {
            let target = self.unique_name(format!("release/{}", name.replace('/', "-")));
            opts.promote = Some(self.new_repo(target));
        }
        let base = self.pick_base();
        let mut st = AppState {
            r,
            name,
            base,
            deps: HashMap::new(),
            builds: Vec::new(),
            version: (self.rng.below(3), self.rng.below(10), 0),
            pr: self.rng.range(1, 500),
        };
        let uploads_here = if showcase.is_some() && showcase.unwrap() < 2 {
            1
        } else {
            0
        };
        self.start_timeline(opts.builds);
        for i in 0..opts.builds {
            if i > 0 && showcase.is_none() && self.keys >= self.key_budget {
                break;
            }
            self.build_tick();
            // a failed push: layers (and maybe the config) uploaded, no manifest
            let p_fail = if self.target_garbage <= 0.0 {
                0.0
            } else if self.wants_garbage() {
                0.12
            } else {
                0.01
            };
            if self.rng.chance(p_fail) {
                let n = self.rng.range(1, 3);
                for _ in 0..n {
                    let size = self.layer_size();
                    let l = self.random_layer(size);
                    self.push_blob(r, l);
                }
                self.failed_pushes += 1;
            }
            // occasionally the base image is bumped
            if self.rng.chance(0.03) {
                st.base = self.pick_base();
            }
            self.app_build(&mut st, &opts, i);
            self.retention(&mut st, &opts);
            if (i as usize) < uploads_here || self.rng.chance(0.002) {
                self.abandoned_upload(r);
            }
        }
    }

    fn tags_for(&mut self, st: &mut AppState, opts: &AppOpts, i: u64) -> Vec<String> {
        let rng = &mut self.rng;
        match opts.policy {
            Policy::Release => {
                let (ma, mi, pa) = st.version;
                st.version = if rng.chance(0.02) {
                    (ma + 1, 0, 0)
                } else if rng.chance(0.15) {
                    (ma, mi + 1, 0)
                } else if i == 0 {
                    (ma, mi, pa)
                } else {
                    (ma, mi, pa + 1)
                };
                let (ma, mi, pa) = st.version;
                let mut t = vec![format!("{ma}.{mi}.{pa}")];
                if rng.chance(0.1) {
                    t[0] = format!("v{ma}.{mi}.{pa}-rc.{}", rng.range(1, 3));
                } else {
                    t.push("latest".into());
                    if rng.chance(0.3) {
                        t.push(format!("{ma}.{mi}"));
                    }
                }
                t
            }
            Policy::Ci => {
                let mut t = vec![format!("sha-{}", rng.hex(7))];
                if rng.chance(0.7) {
                    t.push("main".into());
                } else if rng.chance(0.5) {
                    st.pr += rng.range(1, 5);
                    t.push(format!("pr-{}", st.pr));
                } else {
                    t.push("develop".into());
                }
                t
            }
            Policy::LatestOnly => vec!["latest".into()],
            Policy::Date => {
                let date = rfc3339(self.now);
                vec![
                    format!("{}-{}", date[..10].replace('-', "."), i),
                    "stable".into(),
                ]
            }
        }
    }

    /// One image for one platform: base layers + dependency layer (often unchanged since
    /// the previous build) + 1-3 new application layers.
    fn app_image(
        &mut self,
        st: &mut AppState,
        opts: &AppOpts,
        arch: Arch,
        version: &str,
    ) -> (B, Vec<B>) {
        let base = &self.bases[st.base];
        let mut layers: Vec<B> = base
            .arches
            .iter()
            .find(|(a, _)| *a == arch)
            .or_else(|| base.arches.first())
            .map(|(_, l)| l.clone())
            .unwrap_or_default();
        let deps = match st.deps.get(&arch) {
            Some(&d) if self.rng.chance(0.6) => d,
            _ => {
                let size = self.layer_size();
                let d = self.random_layer(size);
                st.deps.insert(arch, d);
                d
            }
        };
        layers.push(deps);
        for _ in 0..self.rng.range(1, 3) {
            let size = self.layer_size();
            layers.push(self.random_layer(size));
        }
        let config = self.image_config(arch, &layers, self.now, &st.name, version);
        self.push_blobs(st.r, &layers);
        self.push_blob(st.r, config);
        let (lmt, cmt) = if opts.fmt == Fmt::Docker {
            (DOCKER_LAYER, DOCKER_CONFIG)
        } else {
            (OCI_LAYER, OCI_CONFIG)
        };
        let ls: Vec<LayerDesc> = layers.iter().map(|&l| (l, lmt, vec![])).collect();
        let ann = if opts.tool == Tool::Buildkit && opts.fmt == Fmt::Oci {
            vec![("org.opencontainers.image.created", s(rfc3339(self.now)))]
        } else {
            vec![]
        };
        let m = self.image_manifest(opts.fmt, opts.tool, (config, cmt), &ls, None, None, ann);
        (m, layers)
    }

    /// buildx's attestation manifest for one platform image (a child of the index).
    fn attestation_manifest(&mut self, r: usize, repo: &str, image: B, arch: Arch) -> B {
        let mut layers = Vec::new();
        let preds = if self.rng.chance(0.5) {
            vec!["https://slsa.dev/provenance/v0.2"]
        } else {
            vec![
                "https://slsa.dev/provenance/v0.2",
                "https://spdx.dev/Document",
            ]
        };
        for pred in &preds {
            let statement = o(vec![
                ("_type", s("https://in-toto.io/Statement/v0.1")),
                ("predicateType", s(*pred)),
                (
                    "subject",
                    J::A(vec![o(vec![
                        (
                            "name",
                            s(format!("pkg:docker/{repo}?platform=linux%2F{}", arch.arch)),
                        ),
                        (
                            "digest",
                            o(vec![(
                                "sha256",
                                s(hex32(&self.blobs[image as usize].digest)),
                            )]),
                        ),
                    ])]),
                ),
                (
                    "predicate",
                    o(vec![
                        ("buildType", s("https://mobyproject.org/buildkit@v1")),
                        (
                            "metadata",
                            o(vec![("buildInvocationID", s(self.rng.uuid()))]),
                        ),
                    ]),
                ),
            ]);
            let b = self.bytes_blob(Kind::Layer, to_bytes(&statement, Style::Compact));
            layers.push((b, *pred));
        }
        let cfg = o(vec![
            ("architecture", s("unknown")),
            ("os", s("unknown")),
            ("config", o(vec![])),
            (
                "rootfs",
                o(vec![
                    ("type", s("layers")),
                    (
                        "diff_ids",
                        J::A(layers.iter().map(|(l, _)| s(self.digest_str(*l))).collect()),
                    ),
                ]),
            ),
        ]);
        let config = self.bytes_blob(Kind::Config, to_bytes(&cfg, Style::Compact));
        for (l, _) in &layers {
            self.push_blob(r, *l);
        }
        self.push_blob(r, config);
        let ls: Vec<LayerDesc> = layers
            .iter()
            .map(|(l, p)| (*l, IN_TOTO, vec![("in-toto.io/predicate-type", s(*p))]))
            .collect();
        let m = self.image_manifest(
            Fmt::Oci,
            Tool::Buildkit,
            (config, OCI_CONFIG),
            &ls,
            None,
            None,
            vec![],
        );
        self.put_manifest(r, m, None);
        m
    }

    fn app_build(&mut self, st: &mut AppState, opts: &AppOpts, i: u64) {
        let r = st.r;
        let tags = self.tags_for(st, opts, i);
        let version = tags[0].clone();
        let mut build = Build::default();
        let mut image_layers: Vec<B> = Vec::new();
        if opts.multiarch {
            let arches: Vec<Arch> = {
                let base = &self.bases[st.base];
                let mut a: Vec<Arch> = base.arches.iter().map(|(a, _)| *a).collect();
                a.truncate(if self.rng.chance(0.7) { 2 } else { 4 });
                a
            };
            let mut children: Vec<(B, Vec<(&str, J)>)> = Vec::new();
            let mut images = Vec::new();
            for &a in &arches {
                let (m, layers) = self.app_image(st, opts, a, &version);
                self.put_manifest(r, m, None);
                if image_layers.is_empty() {
                    image_layers = layers;
                }
                children.push((m, vec![("platform", platform(a))]));
                images.push((m, a));
                build.children.push(m);
            }
            if opts.fmt == Fmt::Oci && opts.attestations {
                for (m, a) in images {
                    let att = self.attestation_manifest(r, &st.name, m, a);
                    build.children.push(att);
                    children.push((
                        att,
                        vec![
                            (
                                "annotations",
                                o(vec![
                                    ("vnd.docker.reference.digest", s(self.digest_str(m))),
                                    ("vnd.docker.reference.type", s("attestation-manifest")),
                                ]),
                            ),
                            (
                                "platform",
                                o(vec![("architecture", s("unknown")), ("os", s("unknown"))]),
                            ),
                        ],
                    ));
                }
            }
            build.top = self.index_manifest(opts.fmt, opts.tool, children, None, vec![]);
        } else {
            let arch = if self.rng.chance(0.05) { ARM64 } else { AMD64 };
            let (m, layers) = self.app_image(st, opts, arch, &version);
            build.top = m;
            image_layers = layers;
        }
        for t in &tags {
            self.put_manifest(r, build.top, Some(t));
        }
        self.builds += 1;

        if opts.signed && self.rng.chance(0.8) {
            let sig = self.cosign(r, &st.name, build.top, "sig", 1, None);
            build.sigs.push(sig);
            if self.rng.chance(0.15) {
                // signed again (another key): cosign appends a layer, the tag moves
                self.tick(60, 3600);
                let sig2 = self.cosign(r, &st.name, build.top, "sig", 2, Some(sig));
                build.sigs.push(sig2);
            }
            if self.rng.chance(0.3) {
                let att = self.cosign(r, &st.name, build.top, "att", 1, None);
                build.sigs.push(att);
            }
        }
        if opts.referrers && self.rng.chance(0.7) {
            let mut refs = Vec::new();
            let sbom = self.sbom_referrer(r, &st.name, build.top);
            refs.push(sbom);
            if self.rng.chance(0.4) {
                refs.push(self.notary_referrer(r, build.top));
            }
            if self.rng.chance(0.2) {
                // a signature of the SBOM: a referrer of a referrer
                refs.push(self.notary_referrer(r, sbom));
            }
            build.referrers.extend(&refs);
            if opts.referrers_tag {
                // referrers tag schema (OCI 1.1 fallback): tag sha256-<hex> -> index of referrers,
                // rewritten (the tag moves) each time a referrer is added
                let tag = format!("sha256-{}", hex32(&self.blobs[build.top as usize].digest));
                let direct: Vec<B> = refs
                    .iter()
                    .copied()
                    .filter(|x| self.mans[x].subject == Some(build.top))
                    .collect();
                for k in 1..=direct.len() {
                    let children: Vec<(B, Vec<(&str, J)>)> = direct[..k]
                        .iter()
                        .map(|&x| {
                            (
                                x,
                                vec![(
                                    "artifactType",
                                    s(if x == sbom { SPDX } else { NOTARY_SIG }),
                                )],
                            )
                        })
                        .collect();
                    let idx = self.index_manifest(Fmt::Oci, Tool::Compact, children, None, vec![]);
                    self.put_manifest(r, idx, Some(&tag));
                    build.referrers.push(idx);
                }
            }
        }
        if let Some(cache) = opts.cache {
            self.cache_export(cache, &image_layers);
        }
        if let Some(target) = opts.promote {
            if tags
                .iter()
                .any(|t| t.chars().next().is_some_and(|c| c.is_ascii_digit()))
            {
                self.promote(r, target, build.top, &tags);
            }
        }
        st.builds.push(build);
    }

    /// A cosign signature (`.sig`) or attestation (`.att`) stored as tag `sha256-<hex>.<suffix>`.
    fn cosign(
        &mut self,
        r: usize,
        repo: &str,
        image: B,
        suffix: &str,
        n: usize,
        previous: Option<B>,
    ) -> B {
        let mut layers: Vec<LayerDesc> = Vec::new();
        if let Some(p) = previous {
            let prev_layers: Vec<B> = self.mans[&p].refs[1..].to_vec();
            for l in prev_layers {
                let ann = vec![(
                    "dev.cosignproject.cosign/signature",
                    s(format!("MEUCI{}", self.rng.base64ish(91))),
                )];
                layers.push((l, if suffix == "sig" { COSIGN_SIG } else { DSSE }, ann));
            }
        }
        let payload = if suffix == "sig" {
            o(vec![
                (
                    "critical",
                    o(vec![
                        (
                            "identity",
                            o(vec![(
                                "docker-reference",
                                s(format!("registry.example.com/{repo}")),
                            )]),
                        ),
                        (
                            "image",
                            o(vec![("docker-manifest-digest", s(self.digest_str(image)))]),
                        ),
                        ("type", s("cosign container image signature")),
                    ]),
                ),
                (
                    "optional",
                    o(vec![
                        ("signer", s(format!("ci-key-{n}"))),
                        ("timestamp", s(rfc3339(self.now))),
                    ]),
                ),
            ])
        } else {
            o(vec![
                ("payloadType", s("application/vnd.in-toto+json")),
                (
                    "payload",
                    s({
                        let n = 400 + self.rng.below(800) as usize;
                        self.rng.base64ish(n)
                    }),
                ),
                (
                    "signatures",
                    J::A(vec![o(vec![
                        ("keyid", s("")),
                        ("sig", s(self.rng.base64ish(96))),
                    ])]),
                ),
            ])
        };
        let layer = self.bytes_blob(Kind::Layer, to_bytes(&payload, Style::Compact));
        let ann = vec![(
            "dev.cosignproject.cosign/signature",
            s(format!("MEUCI{}", self.rng.base64ish(91))),
        )];
        layers.push((layer, if suffix == "sig" { COSIGN_SIG } else { DSSE }, ann));
        let diff_ids: Vec<J> = layers
            .iter()
            .map(|(l, _, _)| s(self.digest_str(*l)))
            .collect();
        let cfg = o(vec![
            ("architecture", s("")),
            ("created", s("0001-01-01T00:00:00Z")),
            (
                "history",
                J::A(vec![o(vec![("created", s("0001-01-01T00:00:00Z"))])]),
            ),
            ("os", s("")),
            (
                "rootfs",
                o(vec![("type", s("layers")), ("diff_ids", J::A(diff_ids))]),
            ),
            ("config", o(vec![])),
        ]);
        let config = self.bytes_blob(Kind::Config, to_bytes(&cfg, Style::Compact));
        for (l, _, _) in &layers {
            self.push_blob(r, *l);
        }
        self.push_blob(r, config);
        // older cosign wrote Docker schema2 signature manifests
        let fmt = if self.rng.chance(0.2) {
            Fmt::Docker
        } else {
            Fmt::Oci
        };
        let cmt = if fmt == Fmt::Docker {
            DOCKER_CONFIG
        } else {
            OCI_CONFIG
        };
        let m = self.image_manifest(
            fmt,
            Tool::Compact,
            (config, cmt),
            &layers,
            None,
            None,
            vec![],
        );
        let tag = format!(
            "sha256-{}.{suffix}",
            hex32(&self.blobs[image as usize].digest)
        );
        self.put_manifest(r, m, Some(&tag));
        m
    }

    fn sbom_referrer(&mut self, r: usize, repo: &str, subject: B) -> B {
        let n = self.rng.range(2, 25);
        let pkgs: Vec<J> = (0..n)
            .map(|k| {
                o(vec![
                    ("SPDXID", s(format!("SPDXRef-Package-{k}"))),
                    ("name", s(format!("pkg-{}", self.rng.hex(6)))),
                    (
                        "versionInfo",
                        s(format!(
                            "{}.{}.{}",
                            self.rng.below(5),
                            self.rng.below(20),
                            self.rng.below(30)
                        )),
                    ),
                ])
            })
            .collect();
        let doc = o(vec![
            ("spdxVersion", s("SPDX-2.3")),
            ("dataLicense", s("CC0-1.0")),
            ("SPDXID", s("SPDXRef-DOCUMENT")),
            ("name", s(format!("{repo}@{}", self.digest_str(subject)))),
            ("packages", J::A(pkgs)),
        ]);
        let layer = self.bytes_blob(Kind::Layer, to_bytes(&doc, Style::Compact));
        let cfg = self.empty_config();
        self.push_blob(r, cfg);
        self.push_blob(r, layer);
        let ann = vec![("org.opencontainers.image.created", s(rfc3339(self.now)))];
        let m = self.image_manifest(
            Fmt::Oci,
            Tool::Compact,
            (cfg, OCI_EMPTY),
            &[(layer, SPDX, vec![])],
            Some(SPDX),
            Some(subject),
            ann,
        );
        self.put_manifest(r, m, None);
        m
    }

    fn notary_referrer(&mut self, r: usize, subject: B) -> B {
        let body = o(vec![
            ("payload", s(self.rng.base64ish(300))),
            ("protected", s(self.rng.base64ish(200))),
            ("signature", s(self.rng.base64ish(342))),
        ]);
        let layer = self.bytes_blob(Kind::Layer, to_bytes(&body, Style::Compact));
        let cfg = self.empty_config();
        self.push_blob(r, cfg);
        self.push_blob(r, layer);
        let ann = vec![
            (
                "io.cncf.notary.x509chain.thumbprint#S256",
                s(format!("[\"{}\"]", self.rng.hex(64))),
            ),
            ("org.opencontainers.image.created", s(rfc3339(self.now))),
        ];
        let m = self.image_manifest(
            Fmt::Oci,
            Tool::Compact,
            (cfg, OCI_EMPTY),
            &[(layer, JOSE, vec![])],
            Some(NOTARY_SIG),
            Some(subject),
            ann,
        );
        self.put_manifest(r, m, None);
        m
    }

    /// BuildKit registry cache export (`type=registry,mode=max`): the image's layers plus
    /// intermediate ones, tag `buildcache` moved on every build.
    fn cache_export(&mut self, cache: usize, image_layers: &[B]) {
        let mut layers: Vec<B> = image_layers.to_vec();
        for _ in 0..self.rng.range(1, 2) {
            let size = self.layer_size();
            layers.push(self.random_layer(size));
        }
        let cfg = o(vec![
            (
                "layers",
                J::A(
                    layers
                        .iter()
                        .map(|l| o(vec![("blob", s(self.digest_str(*l))), ("parent", J::N(0))]))
                        .collect(),
                ),
            ),
            (
                "records",
                J::A(vec![o(vec![(
                    "digest",
                    s(format!("sha256:{}", self.rng.hex(64))),
                )])]),
            ),
        ]);
        let config = self.bytes_blob(Kind::Config, to_bytes(&cfg, Style::Compact));
        self.push_blobs(cache, &layers);
        self.push_blob(cache, config);
        let ls: Vec<LayerDesc> = layers.iter().map(|&l| (l, OCI_LAYER, vec![])).collect();
        let m = self.image_manifest(
            Fmt::Oci,
            Tool::Buildkit,
            (config, BUILDKIT_CACHE_CONFIG),
            &ls,
            None,
            None,
            vec![],
        );
        self.put_manifest(cache, m, Some("buildcache"));
    }

    /// Copies a release (same manifest digests) into another repository, like `crane copy`.
    fn promote(&mut self, from: usize, to: usize, top: B, tags: &[String]) {
        let _ = from;
        let children = self.mans[&top].children.clone();
        for c in &children {
            let refs = self.mans[c].refs.clone();
            self.push_blobs(to, &refs);
            self.put_manifest(to, *c, None);
        }
        let refs = self.mans[&top].refs.clone();
        self.push_blobs(to, &refs);
        for t in tags {
            self.put_manifest(to, top, Some(t));
        }
    }

    /// Retention: delete old builds by digest, as cleanup jobs do, as long as the tree has
    /// less garbage than asked for (and now and then regardless).
    fn retention(&mut self, st: &mut AppState, opts: &AppOpts) {
        if self.target_garbage <= 0.0 {
            return;
        }
        for _ in 0..3 {
            let p = if self.wants_garbage() { 0.85 } else { 0.02 };
            if !self.rng.chance(p) {
                return;
            }
            let keep_last = 3;
            if st.builds.len() <= keep_last {
                return;
            }
            let r = st.r;
            let candidates: Vec<usize> = (0..st.builds.len() - keep_last)
                .filter(|&i| !st.builds[i].deleted)
                .filter(|&i| {
                    let top = st.builds[i].top;
                    !self.repos[r]
                        .tags
                        .iter()
                        .any(|(n, t)| t.current == top && MOVING_TAGS.contains(&n.as_str()))
                })
                .collect();
            if candidates.is_empty() {
                return;
            }
            let i = if self.rng.chance(0.7) {
                candidates[0]
            } else {
                *self.rng.pick(&candidates)
            };
            let b = &mut st.builds[i];
            b.deleted = true;
            let (top, children, sigs, referrers) = (
                b.top,
                b.children.clone(),
                b.sigs.clone(),
                b.referrers.clone(),
            );
            self.delete_manifest(r, top);
            if !children.is_empty() && self.rng.chance(0.6) {
                for c in children {
                    self.delete_manifest(r, c);
                }
            }
            if opts.clean_referrers {
                for m in sigs.into_iter().chain(referrers) {
                    self.delete_manifest(r, m);
                }
            }
            self.deleted_builds += 1;
        }
    }

    fn gen_helm(&mut self, name: String) {
        let r = self.new_repo(name.clone());
        let n = self.rng.log_uniform(1, 30);
        let (mut mi, mut pa) = (self.rng.below(5), 0);
        self.start_timeline(n);
        for i in 0..n {
            if i > 0 && self.keys >= self.key_budget {
                break;
            }
            self.build_tick();
            if i > 0 {
                if self.rng.chance(0.2) {
                    mi += 1;
                    pa = 0;
                } else {
                    pa += 1;
                }
            }
            let version = format!("0.{mi}.{pa}");
            let chart = name.rsplit('/').next().unwrap().to_string();
            let cfg = o(vec![
                ("name", s(chart.clone())),
                ("version", s(version.clone())),
                ("description", s(format!("A Helm chart for {chart}"))),
                ("apiVersion", s("v2")),
                ("appVersion", s(format!("1.{mi}.{pa}"))),
                ("type", s("application")),
            ]);
            let config = self.bytes_blob(Kind::Config, to_bytes(&cfg, Style::Compact));
            let size = self.rng.range(800, 4000) as u32;
            let layer = self.random_layer(size);
            self.push_blob(r, config);
            self.push_blob(r, layer);
            let ann = vec![
                ("org.opencontainers.image.created", s(rfc3339(self.now))),
                ("org.opencontainers.image.title", s(chart)),
                ("org.opencontainers.image.version", s(version.clone())),
            ];
            let m = self.image_manifest(
                Fmt::Oci,
                Tool::Helm,
                (config, HELM_CONFIG),
                &[(layer, HELM_CHART, vec![])],
                None,
                None,
                ann,
            );
            self.put_manifest(r, m, Some(&version));
            if self.target_garbage > 0.0 && i >= 3 && self.wants_garbage() && self.rng.chance(0.3) {
                // an old chart version withdrawn
                let old: Vec<B> = self.repos[r]
                    .tags
                    .values()
                    .map(|t| t.current)
                    .filter(|&c| c != m)
                    .collect();
                if let Some(&victim) = old.first() {
                    self.delete_manifest(r, victim);
                }
            }
        }
    }

    fn populate(&mut self, target_keys: u64) {
        self.key_budget = target_keys;
        let nb = Self::base_count_for(target_keys);
        self.make_bases(nb);
        let mut team = 0u64;
        let mut repos_in_team = 0u64;
        let mut team_size = 0u64;
        let mut team_prefix = String::new();
        let mut showcase = 0usize;
        let mut charts = 0u64;
        while self.keys < target_keys {
            if repos_in_team >= team_size {
                team += 1;
                repos_in_team = 0;
                team_size = self.rng.log_uniform(2, 30);
                team_prefix = if self.rng.chance(0.15) {
                    format!("org-{}/team-{team}", self.rng.range(1, 9))
                } else {
                    format!("team-{team}")
                };
                // a repository that is also its team's namespace (`team-3` and `team-3/api`)
                if team == 1 || self.rng.chance(0.03) {
                    let name = self.unique_name(team_prefix.clone());
                    let mut opts = self.random_opts(None);
                    opts.builds = opts.builds.min(if team == 1 { 3 } else { 10 });
                    opts.multiarch = false;
                    self.gen_app(name, opts, None);
                    repos_in_team += 1;
                    continue;
                }
            }
            let kind = if showcase < 4 { 0 } else { self.rng.below(100) };
            if kind >= 97 || (showcase == 4 && charts == 0) {
                charts += 1;
                let chart = *self.rng.pick(SERVICES);
                let name = self.unique_name(format!("charts/{chart}"));
                self.gen_helm(name);
                showcase = showcase.max(5);
                continue;
            }
            let svc = *self.rng.pick(SERVICES);
            let name = self.unique_name(format!("{team_prefix}/{svc}"));
            let sc = if showcase < 4 { Some(showcase) } else { None };
            let opts = self.random_opts(sc);
            self.gen_app(name, opts, sc);
            showcase += 1;
            repos_in_team += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Expected collection results

#[derive(Default, serde::Serialize)]
struct Expected {
    unreferenced_blobs: u64,
    unreferenced_blob_bytes: u64,
    untagged_manifests: u64,
    untagged_tag_index: u64,
    dangling_tag_index: u64,
    dangling_layer_links: u64,
}

impl World {
    /// What registry-gc's planner decides, by the semantics in README.md ("What it
    /// collects, and what it keeps"), with no grace period.
    fn expected(&self, delete_untagged: bool) -> Expected {
        let mut kept_blobs: HashSet<B> = HashSet::new();
        let mut kept_by_repo: Vec<HashSet<B>> = Vec::with_capacity(self.repos.len());
        let keep_manifest = |kept: &mut HashSet<B>, m: B| {
            kept.insert(m);
            let man = &self.mans[&m];
            kept.extend(&man.refs);
            kept.extend(&man.children);
        };
        for repo in &self.repos {
            let kept: HashSet<B> = if !delete_untagged {
                repo.revisions.clone()
            } else {
                let mut referrers: HashMap<B, Vec<B>> = HashMap::new();
                for &m in &repo.revisions {
                    if let Some(sub) = self.mans[&m].subject {
                        referrers.entry(sub).or_default().push(m);
                    }
                }
                let mut stack: Vec<B> = repo.tags.values().map(|t| t.current).collect();
                let mut kept = HashSet::new();
                while let Some(m) = stack.pop() {
                    if !repo.revisions.contains(&m) || !kept.insert(m) {
                        continue;
                    }
                    stack.extend(&self.mans[&m].children);
                    if let Some(rs) = referrers.get(&m) {
                        stack.extend(rs);
                    }
                }
                kept
            };
            for &m in &kept {
                keep_manifest(&mut kept_blobs, m);
            }
            for t in repo.tags.values() {
                kept_blobs.insert(t.current);
            }
            kept_by_repo.push(kept);
        }
        let mut e = Expected::default();
        for (i, b) in self.blobs.iter().enumerate() {
            if b.present && !kept_blobs.contains(&(i as B)) {
                e.unreferenced_blobs += 1;
                e.unreferenced_blob_bytes += b.size as u64;
            }
        }
        let present_after = |d: B| self.blobs[d as usize].present && kept_blobs.contains(&d);
        for (repo, kept) in self.repos.iter().zip(&kept_by_repo) {
            let collected = |d: B| delete_untagged && !kept.contains(&d);
            for &m in &repo.revisions {
                if collected(m) {
                    e.untagged_manifests += 1;
                }
            }
            for t in repo.tags.values() {
                for &d in &t.index {
                    if d == t.current {
                        continue;
                    }
                    if collected(d) {
                        e.untagged_tag_index += 1;
                    } else if !present_after(d) {
                        e.dangling_tag_index += 1;
                    }
                }
            }
            for &l in &repo.layers {
                if !present_after(l) {
                    e.dangling_layer_links += 1;
                }
            }
        }
        e
    }
}

// ---------------------------------------------------------------------------------------
// Writing the tree

enum Task {
    Blobs(usize, usize),
    Repo(usize),
}

struct Counters {
    files: AtomicU64,
    dirs: AtomicU64,
    bytes: AtomicU64,
}

fn mkdir(p: &Path, c: &Counters) {
    match std::fs::create_dir(p) {
        Ok(()) => {
            c.dirs.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("mkdir {}: {e}", p.display()),
    }
}

fn mkdirs(p: &Path) {
    std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", p.display()));
}

fn write_file(p: &Path, bytes: &[u8], c: &Counters, mtime: Option<SystemTime>) {
    let mut f = std::fs::File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    f.write_all(bytes)
        .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    if let Some(t) = mtime {
        f.set_modified(t)
            .unwrap_or_else(|e| panic!("set mtime {}: {e}", p.display()));
    }
    c.files.fetch_add(1, Ordering::Relaxed);
    c.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
}

fn link_bytes(d: &[u8; 32]) -> Vec<u8> {
    format!("sha256:{}", hex32(d)).into_bytes()
}

struct Writer<'a> {
    w: &'a World,
    v2: PathBuf,
    empty_dirs: bool,
    mtime: Option<SystemTime>,
    c: Counters,
}

impl Writer<'_> {
    fn write_blobs(&self, from: usize, to: usize, buf: &mut Vec<u8>) {
        let mut p = self.v2.join("blobs/sha256");
        for b in &self.w.blobs[from..to] {
            if !b.present {
                continue;
            }
            let h = hex32(&b.digest);
            p.push(&h[..2]);
            p.push(&h);
            mkdir(&p, &self.c);
            p.push("data");
            let bytes: &[u8] = match &b.bytes {
                Some(bytes) => bytes,
                None => {
                    layer_bytes(b.seed, b.size as usize, buf);
                    buf
                }
            };
            write_file(&p, bytes, &self.c, self.mtime);
            p.pop();
            p.pop();
            p.pop();
        }
    }

    fn link(&self, dir: &mut PathBuf, d: &[u8; 32]) {
        dir.push(hex32(d));
        mkdir(dir, &self.c);
        dir.push("link");
        write_file(dir, &link_bytes(d), &self.c, self.mtime);
        dir.pop();
        dir.pop();
    }

    fn write_repo(&self, i: usize) {
        let repo = &self.w.repos[i];
        if !repo.exists() {
            // never written to (a promotion target that got no release): the registry has
            // no directory for it either
            return;
        }
        let digest = |b: &B| &self.w.blobs[*b as usize].digest;
        let root = self.v2.join("repositories").join(&repo.name);
        mkdirs(&root);
        if !repo.layers.is_empty() {
            let mut p = root.join("_layers/sha256");
            mkdirs(&p);
            for b in &repo.layers {
                self.link(&mut p, digest(b));
            }
        }
        if repo.ever_manifest {
            let mut p = root.join("_manifests/revisions/sha256");
            mkdirs(&p);
            for b in &repo.revisions {
                self.link(&mut p, digest(b));
            }
            if self.empty_dirs {
                for b in &repo.deleted_revisions {
                    p.push(hex32(digest(b)));
                    mkdir(&p, &self.c);
                    p.pop();
                }
            }
        }
        if repo.ever_tag {
            let tags = root.join("_manifests/tags");
            mkdirs(&tags);
            for (name, tag) in &repo.tags {
                let mut t = tags.join(name);
                mkdir(&t, &self.c);
                t.push("current");
                mkdir(&t, &self.c);
                t.push("link");
                write_file(&t, &link_bytes(digest(&tag.current)), &self.c, self.mtime);
                t.pop();
                t.pop();
                t.push("index/sha256");
                mkdirs(&t);
                for b in &tag.index {
                    self.link(&mut t, digest(b));
                }
            }
        }
        if repo.ever_upload && (self.empty_dirs || !repo.uploads.is_empty()) {
            mkdir(&root.join("_uploads"), &self.c);
        }
        for u in &repo.uploads {
            let dir = root.join("_uploads").join(&u.uuid);
            mkdir(&dir, &self.c);
            let started = UNIX_EPOCH + Duration::from_secs(u.started as u64);
            write_file(
                &dir.join("startedat"),
                rfc3339(u.started).as_bytes(),
                &self.c,
                Some(started),
            );
            let total: u32 = u.chunks.iter().sum();
            let mut data = Vec::new();
            layer_bytes(u.seed, total as usize, &mut data);
            let last = started + Duration::from_secs(u.chunks.len() as u64 * 2);
            write_file(&dir.join("data"), &data, &self.c, Some(last));
            let hs = dir.join("hashstates/sha256");
            mkdirs(&hs);
            let mut off = 0usize;
            for (k, n) in std::iter::once(&0u32).chain(&u.chunks).enumerate() {
                off += *n as usize;
                let t = started + Duration::from_secs(k as u64 * 2);
                write_file(
                    &hs.join(off.to_string()),
                    &go_sha256_hashstate(&data[..off]),
                    &self.c,
                    Some(t),
                );
            }
        }
    }
}

fn write_tree(
    w: &World,
    root: &Path,
    threads: usize,
    empty_dirs: bool,
    mtime: Option<SystemTime>,
) -> (u64, u64, u64) {
    let v2 = root.join("docker/registry/v2");
    mkdirs(&v2.join("repositories"));
    let wr = Writer {
        w,
        v2: v2.clone(),
        empty_dirs,
        mtime,
        c: Counters {
            files: AtomicU64::new(0),
            dirs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        },
    };
    let mut prefixes = HashSet::new();
    for b in w.blobs.iter().filter(|b| b.present) {
        prefixes.insert(b.digest[0]);
    }
    for p in prefixes {
        mkdirs(&v2.join("blobs/sha256").join(format!("{p:02x}")));
    }
    let mut tasks = Vec::new();
    // repositories first (a few are large), then blobs in chunks
    let mut order: Vec<usize> = (0..w.repos.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(w.repos[i].layers.len() + w.repos[i].revisions.len()));
    tasks.extend(order.into_iter().map(Task::Repo));
    let chunk = 2048;
    let mut i = 0;
    while i < w.blobs.len() {
        tasks.push(Task::Blobs(i, (i + chunk).min(w.blobs.len())));
        i += chunk;
    }
    let next = AtomicUsize::new(0);
    let total = tasks.len();
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| {
                let mut buf = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= total {
                        break;
                    }
                    match tasks[k] {
                        Task::Blobs(a, b) => wr.write_blobs(a, b, &mut buf),
                        Task::Repo(r) => wr.write_repo(r),
                    }
                }
            });
        }
    });
    (
        wr.c.files.load(Ordering::Relaxed),
        wr.c.dirs.load(Ordering::Relaxed),
        wr.c.bytes.load(Ordering::Relaxed),
    )
}

fn write_ops(w: &World, path: &Path) {
    let f =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut f = std::io::BufWriter::new(f);
    let d = |b: B| w.digest_str(b);
    for op in w.ops.as_ref().unwrap() {
        let line = match op {
            Op::Blob { repo, blob } => {
                serde_json::json!({"op": "blob", "repo": w.repos[*repo as usize].name, "digest": d(*blob)})
            }
            Op::Manifest { repo, blob, tag } => serde_json::json!({
                "op": "manifest", "repo": w.repos[*repo as usize].name, "digest": d(*blob),
                "reference": tag.clone().unwrap_or_else(|| d(*blob)), "media_type": w.mans[blob].media_type,
            }),
            Op::Delete { repo, blob } => {
                serde_json::json!({"op": "delete", "repo": w.repos[*repo as usize].name, "digest": d(*blob)})
            }
            Op::Upload { repo, upload } => {
                let r = &w.repos[*repo as usize];
                let u = &r.uploads[*upload as usize];
                serde_json::json!({"op": "upload", "repo": r.name, "uuid": u.uuid, "chunks": u.chunks})
            }
        };
        writeln!(f, "{line}").unwrap();
    }
}

fn main() {
    let args = Args::parse();
    if !(0.0..1.0).contains(&args.garbage) {
        eprintln!("--garbage must be in [0, 1)");
        std::process::exit(2);
    }
    let v2 = args.out.join("docker/registry/v2");
    if !args.dry_run
        && v2.exists()
        && std::fs::read_dir(&v2)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        eprintln!(
            "{} already holds a registry tree; choose an empty directory",
            v2.display()
        );
        std::process::exit(2);
    }
    let t0 = Instant::now();
    let mut w = World::new(args.seed, args.garbage, args.ops_log.is_some());
    w.populate(args.keys);
    let t_sim = t0.elapsed();

    // recount from the final state (checks the incremental bookkeeping)
    let present: Vec<&Blob> = w.blobs.iter().filter(|b| b.present).collect();
    let mut keys = present.len() as u64;
    let (mut layer_links, mut revisions, mut tags, mut tag_index, mut upload_files, mut uploads) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut bytes: u64 = present.iter().map(|b| b.size as u64).sum();
    let blob_bytes = bytes;
    for r in &w.repos {
        layer_links += r.layers.len() as u64;
        revisions += r.revisions.len() as u64;
        tags += r.tags.len() as u64;
        tag_index += r.tags.values().map(|t| t.index.len() as u64).sum::<u64>();
        uploads += r.uploads.len() as u64;
        for u in &r.uploads {
            upload_files += 3 + u.chunks.len() as u64;
            bytes += u.chunks.iter().map(|&c| c as u64).sum::<u64>()
                + 20
                + 108 * (1 + u.chunks.len() as u64);
        }
    }
    let links = layer_links + revisions + tags + tag_index;
    keys += links + upload_files;
    bytes += links * LINK_LEN;
    assert_eq!(keys, w.keys, "key bookkeeping is off");
    let kinds = |k: Kind| present.iter().filter(|b| b.kind == k).count() as u64;
    let (layer_blobs, config_blobs, manifest_blobs) = (
        kinds(Kind::Layer),
        kinds(Kind::Config),
        kinds(Kind::Manifest),
    );
    let exp_default = w.expected(false);
    let exp_untagged = w.expected(true);
    assert_eq!(
        exp_default.unreferenced_blobs,
        w.present - w.live,
        "refcount bookkeeping is off"
    );
    let mt = |t: &str| {
        w.repos
            .iter()
            .flat_map(|r| &r.revisions)
            .filter(|b| w.mans[b].media_type == t)
            .count() as u64
    };
    let by_type = serde_json::json!({
        "docker_schema2": mt(DOCKER_MANIFEST), "docker_list": mt(DOCKER_LIST),
        "oci_manifest": mt(OCI_MANIFEST), "oci_index": mt(OCI_INDEX),
    });
    let unique_manifests = w
        .repos
        .iter()
        .flat_map(|r| &r.revisions)
        .collect::<HashSet<_>>()
        .len() as u64;
    let referrers = w
        .repos
        .iter()
        .flat_map(|r| &r.revisions)
        .filter(|b| w.mans[b].subject.is_some())
        .count() as u64;
    let sig_tags = w
        .repos
        .iter()
        .flat_map(|r| r.tags.keys())
        .filter(|t| t.starts_with("sha256-"))
        .count() as u64;

    let mut t_write = Duration::ZERO;
    let mut written = (0, 0, 0);
    if !args.dry_run {
        // more threads than CPUs only adds contention in the filesystem's journal
        let threads = args.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        let mtime = args.backdate.map(|d| SystemTime::now() - *d);
        let t1 = Instant::now();
        written = write_tree(&w, &args.out, threads, !args.no_empty_dirs, mtime);
        t_write = t1.elapsed();
        assert_eq!(written.0, keys, "files written differ from keys planned");
        assert_eq!(written.2, bytes, "bytes written differ from bytes planned");
    }
    if let Some(p) = &args.ops_log {
        write_ops(&w, p);
    }
    let summary = serde_json::json!({
        "root": args.out,
        "seed": args.seed,
        "keys_requested": args.keys,
        "keys": keys,
        "blobs": present.len(),
        "layer_blobs": layer_blobs,
        "config_blobs": config_blobs,
        "manifest_blobs": manifest_blobs,
        "manifests": unique_manifests,
        "manifests_by_type": by_type,
        "referrers": referrers,
        "repositories": w.repos.iter().filter(|r| r.exists()).count(),
        "tags": tags,
        "signature_and_referrer_tags": sig_tags,
        "tag_index_entries": tag_index,
        "layer_links": layer_links,
        "revision_links": revisions,
        "uploads": uploads,
        "builds": w.builds,
        "deleted_builds": w.deleted_builds,
        "failed_pushes": w.failed_pushes,
        "bytes": bytes,
        "blob_bytes": blob_bytes,
        "dirs_created": written.1,
        "garbage_target": args.garbage,
        "garbage_fraction_default": exp_default.unreferenced_blobs as f64 / present.len() as f64,
        "garbage_fraction_delete_untagged": exp_untagged.unreferenced_blobs as f64 / present.len() as f64,
        "expected_garbage_blobs_default": exp_default.unreferenced_blobs,
        "expected_garbage_blobs_delete_untagged": exp_untagged.unreferenced_blobs,
        "expected_default": exp_default,
        "expected_delete_untagged": exp_untagged,
        "simulate_seconds": (t_sim.as_secs_f64() * 100.0).round() / 100.0,
        "write_seconds": (t_write.as_secs_f64() * 100.0).round() / 100.0,
    });
    let line = summary.to_string();
    if let Some(p) = &args.summary {
        std::fs::write(p, format!("{line}\n"))
            .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }
    println!("{line}");
}
