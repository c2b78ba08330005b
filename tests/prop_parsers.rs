//! Property tests of the two parsers that read what storage holds: the manifest
//! parser (any bytes, mutated and cut-short manifests) and the key classifier (any
//! string, mutated keys, keys built from odd names). Neither may panic; a manifest
//! cut short keeps every digest it still holds whole; a huge input costs memory in
//! proportion to its size (measured by a counting allocator, this test binary's
//! own). Case counts are bounded so the whole file runs in a few seconds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use registry_gc::digest::Digest;
use registry_gc::layout::{self, KeyKind};
use registry_gc::manifest::{self, ManifestKind};

/// Counts live and peak heap bytes, to bound what parsing a huge input allocates.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new > l.size() {
                let now = LIVE.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn hex_of(i: u8) -> String {
    format!("{:02x}", i).repeat(32)
}

fn digest(i: u8) -> Digest {
    Digest::from_hex(&hex_of(i)).unwrap()
}

/// Valid manifests of each kind the parser knows, naming digests 1..=6.
fn valid_manifests() -> Vec<Vec<u8>> {
    let d = |i: u8| format!("sha256:{}", hex_of(i));
    vec![
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"{}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":9,"digest":"{}"}},{{"size":3,"digest":"{}"}}]}}"#,
            manifest::DOCKER_SCHEMA2,
            d(1),
            d(2),
            d(3)
        ),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","size":500,"digest":"{}","platform":{{"architecture":"amd64","os":"linux"}}}},{{"size":501,"digest":"{}"}}],"subject":{{"digest":"{}","size":1}}}}"#,
            manifest::OCI_INDEX,
            manifest::OCI_MANIFEST,
            d(4),
            d(5),
            d(6)
        ),
        format!(
            r#"{{"schemaVersion":1,"name":"a/b","tag":"t","architecture":"amd64","fsLayers":[{{"blobSum":"{}"}},{{"blobSum":"{}"}}],"history":[{{"v1Compatibility":"{{}}"}}]}}"#,
            d(1),
            d(2)
        ),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

/// Every digest the parser says the manifest references.
fn referenced(bytes: &[u8]) -> Vec<Digest> {
    let r = manifest::parse(bytes);
    r.blobs
        .iter()
        .chain(&r.children)
        .chain(r.subject.iter())
        .copied()
        .collect()
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn apply(bytes: &mut Vec<u8>, edits: &[Edit]) {
    for e in edits {
        if bytes.is_empty() {
            return;
        }
        match *e {
            Edit::Flip(i, b) => {
                let n = bytes.len();
                bytes[i % n] ^= b | 1;
            }
            Edit::Insert(i, b) => {
                let n = bytes.len();
                bytes.insert(i % (n + 1), b);
            }
            Edit::Delete(i) => {
                let n = bytes.len();
                bytes.remove(i % n);
            }
        }
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn manifest_parser_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = manifest::parse(&bytes);
    }

    #[test]
    fn manifest_parser_takes_mutated_manifests(which in 0usize..3, edits in proptest::collection::vec(edit(), 1..8)) {
        let mut bytes = valid_manifests()[which].clone();
        apply(&mut bytes, &edits);
        let _ = manifest::parse(&bytes);
    }

    /// A manifest cut short is not JSON: every digest still whole in what is
    /// left is kept (the scan), so a cut read can only keep more.
    #[test]
    fn a_manifest_cut_short_keeps_every_digest_it_still_holds(which in 0usize..3, cut in any::<usize>()) {
        let full = &valid_manifests()[which];
        let cut = &full[..cut % full.len()];
        let r = manifest::parse(cut);
        prop_assert!(matches!(r.kind, ManifestKind::Unparseable | ManifestKind::Unknown), "{:?}", r.kind);
        let kept = referenced(cut);
        for i in 1..=6u8 {
            let text = format!("sha256:{}", hex_of(i));
            if cut.windows(text.len()).any(|w| w == text.as_bytes()) {
                prop_assert!(kept.contains(&digest(i)), "digest {i} is whole in the cut manifest but not kept");
            }
        }
    }

    #[test]
    fn classify_takes_any_string(key in "\\PC{0,200}") {
        let _ = layout::classify(&key);
        let _ = layout::classify(&format!("{}{key}", layout::REPOSITORIES));
        let _ = layout::classify(&format!("{}{key}", layout::BLOBS));
        let _ = layout::dirs_left_empty_by(&format!("{}{key}", layout::V2));
    }

    #[test]
    fn classify_takes_mutated_keys(which in 0usize..6, edits in proptest::collection::vec(edit(), 1..6)) {
        let d = digest(9);
        let keys = [
            layout::blob_data_key(&d),
            layout::revision_key("team/app", &d),
            layout::tag_current_key("team/app", "v1"),
            layout::tag_index_key("team/app", "v1", &d),
            layout::layer_link_key("team/app", &d),
            layout::upload_key("team/app", "0b0f-uuid", "data"),
        ];
        let mut bytes = keys[which].clone().into_bytes();
        apply(&mut bytes, &edits);
        let key = String::from_utf8_lossy(&bytes);
        let _ = layout::classify(&key);
    }

    /// Keys the registry would write for any repository name and tag made of
    /// odd characters (spaces, unicode, percent signs, newlines) still classify
    /// as what they are.
    #[test]
    fn keys_of_odd_names_classify_as_what_they_are(
        parts in proptest::collection::vec("[a-z0-9 %\u{e9}\u{4e2d}\n.-]{1,12}", 1..4),
        tag in "[A-Za-z0-9 %\u{e9}\n._-]{1,20}",
        i in any::<u8>(),
    ) {
        // distribution's metadata directories start with `_`; names never do
        prop_assume!(parts.iter().all(|p| !p.starts_with('_') && !p.contains('/')));
        let repo = parts.join("/");
        let d = digest(i);
        let (rev, layer) = (layout::revision_key(&repo, &d), layout::layer_link_key(&repo, &d));
        prop_assert_eq!(layout::classify(&rev), KeyKind::Revision { repo: &repo, digest: d });
        prop_assert_eq!(layout::classify(&layer), KeyKind::LayerLink { repo: &repo, digest: d });
        prop_assume!(!tag.contains('/'));
        let (current, index) = (layout::tag_current_key(&repo, &tag), layout::tag_index_key(&repo, &tag, &d));
        prop_assert_eq!(layout::classify(&current), KeyKind::TagCurrent { repo: &repo, tag: &tag });
        prop_assert_eq!(layout::classify(&index), KeyKind::TagIndex { repo: &repo, tag: &tag, digest: d });
    }
}

/// Parsing a huge input allocates in proportion to it, whatever its shape: a
/// long array, deep nesting, a long string, junk full of digests.
#[test]
fn huge_inputs_cost_memory_in_proportion_to_their_size() {
    const N: usize = 8 * 1024 * 1024;
    let digest_text = format!("sha256:{} ", hex_of(7));
    let shapes: Vec<(&str, Vec<u8>)> = vec![
        ("array of numbers", {
            let mut v = b"{\"layers\":[".to_vec();
            while v.len() < N {
                v.extend_from_slice(b"1,");
            }
            v.extend_from_slice(b"1]}");
            v
        }),
        ("array of descriptors", {
            let mut v = b"{\"schemaVersion\":2,\"layers\":[".to_vec();
            let one = format!("{{\"digest\":\"sha256:{}\"}},", hex_of(3));
            while v.len() < N {
                v.extend_from_slice(one.as_bytes());
            }
            v.extend_from_slice(b"{}]}");
            v
        }),
        ("deep nesting", {
            let mut v = Vec::with_capacity(N);
            v.extend(std::iter::repeat_n(b'[', N / 2));
            v.extend(std::iter::repeat_n(b']', N / 2));
            v
        }),
        ("long string", {
            let mut v = b"{\"mediaType\":\"".to_vec();
            v.extend(std::iter::repeat_n(b'x', N));
            v.extend_from_slice(b"\"}");
            v
        }),
        (
            "junk full of digests",
            digest_text.as_bytes().repeat(N / digest_text.len()),
        ),
        ("binary", (0..N).map(|i| (i * 7919 % 251) as u8).collect()),
    ];
    for (what, input) in shapes {
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let r = manifest::parse(&input);
        let peak = PEAK.load(Ordering::Relaxed) - base;
        // the parse holds what it reads into the lenient struct (a descriptor's
        // digest string per descriptor) and what a scan pins; anything beyond
        // a small multiple of the input would mean growth not tied to it
        assert!(
            peak <= 20 * input.len(),
            "{what}: {} input bytes, {peak} bytes allocated at peak",
            input.len()
        );
        eprintln!("{what}: {} input bytes, {peak} bytes at peak", input.len());
        if what == "array of descriptors" {
            // the counter sees the parse at all: every digest string is held
            assert!(peak > input.len() / 2, "{what}: {peak}");
        }
        drop(r);
    }
}
