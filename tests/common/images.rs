//! Deterministic image content and the exact bytes of every manifest kind.
//!
//! All content derives from a seed string, so a scenario produces the same digests on every
//! run. JSON is serialized with sorted keys (serde_json's default map) and 2-space indent.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const MT_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const MT_COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Digest of the OCI empty descriptor's content `{}`.
pub const EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// The four manifest media types a collector must understand (schema1 excluded).
pub const ALL_MANIFEST_TYPES: [&str; 4] = [
    MT_DOCKER_MANIFEST,
    MT_DOCKER_LIST,
    MT_OCI_MANIFEST,
    MT_OCI_INDEX,
];

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// The 64 hex characters of a `sha256:<hex>` digest (panics on anything else).
pub fn digest_hex(digest: &str) -> &str {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest:?}"));
    assert!(
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "malformed sha256 digest: {digest:?}"
    );
    hex
}

/// `len` pseudo-random bytes derived from `seed` (sha256 in counter mode).
pub fn det_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter: u64 = 0;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(seed.as_bytes());
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// A size between 2 KiB and 6 KiB chosen by the seed.
pub fn det_size(seed: &str) -> usize {
    let b = det_bytes(&format!("size:{seed}"), 2);
    2048 + (u16::from_le_bytes([b[0], b[1]]) as usize % 4096)
}

/// Some bytes that will be stored as one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub bytes: Vec<u8>,
    /// `None` for a generic layer: the manifest kind picks the layer media type
    /// (docker `rootfs.diff.tar.gzip` or OCI `layer.v1.tar+gzip`).
    pub media_type: Option<String>,
}

impl Blob {
    pub fn new(bytes: Vec<u8>, media_type: Option<&str>) -> Blob {
        Blob {
            digest: sha256_digest(&bytes),
            bytes,
            media_type: media_type.map(str::to_string),
        }
    }
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    pub fn hex(&self) -> &str {
        digest_hex(&self.digest)
    }
    /// Descriptor with `default_media_type` unless the blob has its own.
    pub fn descriptor(&self, default_media_type: &str) -> Descriptor {
        Descriptor::new(
            self.media_type.as_deref().unwrap_or(default_media_type),
            &self.digest,
            self.size(),
        )
    }
}

/// A layer of `det_size(seed)` pseudo-random bytes (generic layer media type).
pub fn layer_blob(seed: &str) -> Blob {
    Blob::new(det_bytes(&format!("layer:{seed}"), det_size(seed)), None)
}

/// A layer of exactly `size` pseudo-random bytes.
pub fn layer_blob_sized(seed: &str, size: usize) -> Blob {
    Blob::new(det_bytes(&format!("layer:{seed}"), size), None)
}

/// An image config JSON blob naming `diff_ids` (any strings; usually the layer digests).
pub fn config_blob(seed: &str, kind: ImageKind, diff_ids: &[String]) -> Blob {
    let v = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": { "Env": [format!("SEED={seed}")], "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": [{ "created_by": format!("registry-gc test harness, seed {seed}") }],
    });
    let mt = match kind {
        ImageKind::Docker => MT_DOCKER_CONFIG,
        ImageKind::Oci => MT_OCI_CONFIG,
    };
    Blob::new(serde_json::to_vec(&v).unwrap(), Some(mt))
}

/// The OCI empty descriptor's blob: `{}` (digest [`EMPTY_CONFIG_DIGEST`]).
pub fn empty_config_blob() -> Blob {
    let b = Blob::new(b"{}".to_vec(), Some(MT_OCI_EMPTY));
    debug_assert_eq!(b.digest, EMPTY_CONFIG_DIGEST);
    b
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: None,
        }
    }
    pub fn linux(architecture: &str) -> Platform {
        Platform::new("linux", architecture)
    }
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("architecture".into(), json!(self.architecture));
        m.insert("os".into(), json!(self.os));
        if let Some(v) = &self.variant {
            m.insert("variant".into(), json!(v));
        }
        Value::Object(m)
    }
}

/// An OCI / Docker content descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub platform: Option<Platform>,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// Non-empty for foreign (non-distributable) layers.
    pub urls: Vec<String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: &str, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: digest.into(),
            size,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
            urls: Vec::new(),
        }
    }
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("mediaType".into(), json!(self.media_type));
        m.insert("digest".into(), json!(self.digest));
        m.insert("size".into(), json!(self.size));
        if let Some(p) = &self.platform {
            m.insert("platform".into(), p.to_json());
        }
        if let Some(a) = &self.artifact_type {
            m.insert("artifactType".into(), json!(a));
        }
        if !self.annotations.is_empty() {
            m.insert("annotations".into(), json!(self.annotations));
        }
        if !self.urls.is_empty() {
            m.insert("urls".into(), json!(self.urls));
        }
        Value::Object(m)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// `application/vnd.docker.distribution.manifest.v2+json`
    Docker,
    /// `application/vnd.oci.image.manifest.v1+json`
    Oci,
}

/// An image (or OCI artifact) manifest to build: config + layers (+ subject, artifactType).
#[derive(Clone, Debug)]
pub struct Image {
    pub kind: ImageKind,
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// OCI only: the manifest this one refers to (referrers).
    pub subject: Option<Descriptor>,
    /// OCI only: `artifactType`.
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl Image {
    /// A Docker schema2 image with `n_layers` seeded layers and a seeded config.
    pub fn docker(seed: &str, n_layers: usize) -> Image {
        Self::seeded(ImageKind::Docker, seed, n_layers)
    }
    /// An OCI image with `n_layers` seeded layers and a seeded config.
    pub fn oci(seed: &str, n_layers: usize) -> Image {
        Self::seeded(ImageKind::Oci, seed, n_layers)
    }
    fn seeded(kind: ImageKind, seed: &str, n_layers: usize) -> Image {
        let layers: Vec<Blob> = (0..n_layers)
            .map(|i| layer_blob(&format!("{seed}/{i}")))
            .collect();
        Image::from_layers(kind, seed, layers)
    }
    /// An image of the given layers with a seeded config listing them.
    pub fn from_layers(kind: ImageKind, seed: &str, layers: Vec<Blob>) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
        Image {
            kind,
            config: config_blob(seed, kind, &diff_ids),
            layers,
            subject: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }
    /// An OCI artifact: empty config `{}`, `artifactType`, one layer holding `payload`.
    pub fn artifact(artifact_type: &str, payload_media_type: &str, payload: Vec<u8>) -> Image {
        Image {
            kind: ImageKind::Oci,
            config: empty_config_blob(),
            layers: vec![Blob::new(payload, Some(payload_media_type))],
            subject: None,
            artifact_type: Some(artifact_type.into()),
            annotations: BTreeMap::new(),
        }
    }
    /// A cosign-style signature of `signed_digest`: an OCI manifest (no subject) whose config
    /// is a small OCI config and whose one layer is a simplesigning payload naming the digest.
    /// Push it under the tag [`cosign_tag`]`(signed_digest, "sig")`.
    pub fn cosign_signature(repo: &str, signed_digest: &str) -> Image {
        let payload = json!({
            "critical": {
                "identity": { "docker-reference": format!("127.0.0.1/{repo}") },
                "image": { "docker-manifest-digest": signed_digest },
                "type": "cosign container image signature"
            },
            "optional": null
        });
        let payload = serde_json::to_vec(&payload).unwrap();
        let layer = Blob::new(payload.clone(), Some(MT_COSIGN_SIMPLESIGNING));
        let config = config_blob(
            &format!("cosign:{signed_digest}"),
            ImageKind::Oci,
            std::slice::from_ref(&layer.digest),
        );
        let mut img = Image {
            kind: ImageKind::Oci,
            config,
            layers: vec![layer],
            subject: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        };
        let _ = img.annotations.insert(
            "org.opencontainers.image.created".into(),
            "2024-01-01T00:00:00Z".into(),
        );
        img
    }
    pub fn with_layer(mut self, layer: Blob) -> Image {
        self.layers.push(layer);
        self
    }
    /// Sets `subject` (switches nothing else; only meaningful for OCI).
    pub fn with_subject(mut self, subject: &PushedImage) -> Image {
        assert_eq!(self.kind, ImageKind::Oci, "subject is an OCI field");
        self.subject = Some(subject.descriptor());
        self
    }
    pub fn with_subject_descriptor(mut self, subject: Descriptor) -> Image {
        self.subject = Some(subject);
        self
    }
    pub fn with_artifact_type(mut self, artifact_type: &str) -> Image {
        assert_eq!(self.kind, ImageKind::Oci, "artifactType is an OCI field");
        self.artifact_type = Some(artifact_type.into());
        self
    }
    pub fn with_annotation(mut self, k: &str, v: &str) -> Image {
        self.annotations.insert(k.into(), v.into());
        self
    }
    pub fn media_type(&self) -> &'static str {
        match self.kind {
            ImageKind::Docker => MT_DOCKER_MANIFEST,
            ImageKind::Oci => MT_OCI_MANIFEST,
        }
    }
    fn layer_media_type(&self) -> &'static str {
        match self.kind {
            ImageKind::Docker => MT_DOCKER_LAYER,
            ImageKind::Oci => MT_OCI_LAYER,
        }
    }
    /// Config first, then layers: every blob the manifest needs (in push order).
    pub fn blobs(&self) -> Vec<&Blob> {
        std::iter::once(&self.config)
            .chain(self.layers.iter())
            .collect()
    }
    pub fn blob_digests(&self) -> Vec<String> {
        self.blobs().iter().map(|b| b.digest.clone()).collect()
    }
    /// The exact manifest bytes to push.
    pub fn manifest_bytes(&self) -> Vec<u8> {
        let cfg_mt = match self.kind {
            ImageKind::Docker => MT_DOCKER_CONFIG,
            ImageKind::Oci => MT_OCI_CONFIG,
        };
        let mut m = Map::new();
        m.insert("schemaVersion".into(), json!(2));
        m.insert("mediaType".into(), json!(self.media_type()));
        m.insert("config".into(), self.config.descriptor(cfg_mt).to_json());
        m.insert(
            "layers".into(),
            Value::Array(
                self.layers
                    .iter()
                    .map(|l| l.descriptor(self.layer_media_type()).to_json())
                    .collect(),
            ),
        );
        manifest_json(
            m,
            self.subject.as_ref(),
            self.artifact_type.as_deref(),
            &self.annotations,
        )
    }
    pub fn digest(&self) -> String {
        sha256_digest(&self.manifest_bytes())
    }
}

/// The cosign tag for a signed digest: `sha256-<hex>.<suffix>` (suffix `sig`, `att`, `sbom`).
pub fn cosign_tag(signed_digest: &str, suffix: &str) -> String {
    format!("sha256-{}.{suffix}", digest_hex(signed_digest))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKind {
    /// `application/vnd.docker.distribution.manifest.list.v2+json`
    DockerList,
    /// `application/vnd.oci.image.index.v1+json`
    OciIndex,
}

/// A manifest list / image index over already-pushed manifests.
#[derive(Clone, Debug)]
pub struct Index {
    pub kind: IndexKind,
    pub children: Vec<(PushedImage, Option<Platform>)>,
    /// OCI only.
    pub subject: Option<Descriptor>,
    /// OCI only.
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    pub fn new(kind: IndexKind, children: Vec<(PushedImage, Option<Platform>)>) -> Index {
        Index {
            kind,
            children,
            subject: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }
    pub fn docker_list(children: Vec<(PushedImage, Option<Platform>)>) -> Index {
        Self::new(IndexKind::DockerList, children)
    }
    pub fn oci_index(children: Vec<(PushedImage, Option<Platform>)>) -> Index {
        Self::new(IndexKind::OciIndex, children)
    }
    /// Children get platforms linux/amd64, linux/arm64, linux/ppc64le, ... in order.
    pub fn with_default_platforms(kind: IndexKind, children: Vec<PushedImage>) -> Index {
        const ARCHS: [&str; 6] = ["amd64", "arm64", "ppc64le", "s390x", "386", "riscv64"];
        let children = children
            .into_iter()
            .enumerate()
            .map(|(i, c)| (c, Some(Platform::linux(ARCHS[i % ARCHS.len()]))))
            .collect();
        Self::new(kind, children)
    }
    pub fn with_subject(mut self, subject: &PushedImage) -> Index {
        assert_eq!(self.kind, IndexKind::OciIndex, "subject is an OCI field");
        self.subject = Some(subject.descriptor());
        self
    }
    pub fn with_artifact_type(mut self, artifact_type: &str) -> Index {
        assert_eq!(
            self.kind,
            IndexKind::OciIndex,
            "artifactType is an OCI field"
        );
        self.artifact_type = Some(artifact_type.into());
        self
    }
    pub fn with_annotation(mut self, k: &str, v: &str) -> Index {
        self.annotations.insert(k.into(), v.into());
        self
    }
    pub fn media_type(&self) -> &'static str {
        match self.kind {
            IndexKind::DockerList => MT_DOCKER_LIST,
            IndexKind::OciIndex => MT_OCI_INDEX,
        }
    }
    pub fn manifest_bytes(&self) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("schemaVersion".into(), json!(2));
        m.insert("mediaType".into(), json!(self.media_type()));
        m.insert(
            "manifests".into(),
            Value::Array(
                self.children
                    .iter()
                    .map(|(c, p)| {
                        let mut d = c.descriptor();
                        d.platform = p.clone();
                        d.to_json()
                    })
                    .collect(),
            ),
        );
        manifest_json(
            m,
            self.subject.as_ref(),
            self.artifact_type.as_deref(),
            &self.annotations,
        )
    }
    pub fn digest(&self) -> String {
        sha256_digest(&self.manifest_bytes())
    }
}

/// What was pushed: enough for a test to know which blobs an image needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedImage {
    pub repo: String,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    pub media_type: String,
    /// The exact manifest bytes stored by the registry.
    pub bytes: Vec<u8>,
    /// Config + layers (empty for lists/indexes).
    pub blobs: Vec<String>,
    /// Child manifests of a list/index (empty for image manifests).
    pub children: Vec<PushedImage>,
    pub subject: Option<String>,
    pub artifact_type: Option<String>,
    /// The tag it was pushed under, if any (None = pushed by digest only).
    pub tag: Option<String>,
}

impl PushedImage {
    /// Puts these manifest bytes again as `repo:tag` through the registry at
    /// `base`, as a client tagging an image it has; returns the digest.
    pub fn put_again(&self, base: &str, repo: &str, tag: &str) -> String {
        super::http::put_manifest(base, repo, tag, &self.media_type, &self.bytes)
    }
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    pub fn hex(&self) -> &str {
        digest_hex(&self.digest)
    }
    pub fn is_index(&self) -> bool {
        self.media_type == MT_DOCKER_LIST || self.media_type == MT_OCI_INDEX
    }
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(&self.media_type, &self.digest, self.size())
    }
    /// The manifest digest, its config and layers, and the same for every child, recursively
    /// (the subject is NOT included: a referrer does not need its subject).
    pub fn all_digests(&self) -> std::collections::BTreeSet<String> {
        let mut s = std::collections::BTreeSet::new();
        self.collect(&mut s);
        s
    }
    fn collect(&self, s: &mut std::collections::BTreeSet<String>) {
        s.insert(self.digest.clone());
        s.extend(self.blobs.iter().cloned());
        for c in &self.children {
            c.collect(s);
        }
    }
    /// `repo@digest` for messages.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.repo, self.digest)
    }
}

/// Adds the optional fields images and indexes share, and renders the bytes.
fn manifest_json(
    mut m: Map<String, Value>,
    subject: Option<&Descriptor>,
    artifact_type: Option<&str>,
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    if let Some(s) = subject {
        m.insert("subject".into(), s.to_json());
    }
    if let Some(a) = artifact_type {
        m.insert("artifactType".into(), json!(a));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), json!(annotations));
    }
    serde_json::to_vec_pretty(&Value::Object(m)).unwrap()
}

/// An unsigned schema1 manifest (`schemaVersion: 1`, `fsLayers[].blobSum`). The 2.8 registry
/// refuses schema1 pushes by default, so write it into the tree with `tree::write_manifest`.
pub fn schema1_manifest_bytes(name: &str, tag: &str, layer_digests: &[String]) -> Vec<u8> {
    let v = json!({
        "schemaVersion": 1,
        "name": name,
        "tag": tag,
        "architecture": "amd64",
        "fsLayers": layer_digests.iter().map(|d| json!({"blobSum": d})).collect::<Vec<_>>(),
        "history": layer_digests.iter().map(|_| json!({"v1Compatibility": "{}"})).collect::<Vec<_>>(),
    });
    serde_json::to_vec_pretty(&v).unwrap()
}

/// An OCI image manifest padded with an annotation so that it is at least `min_size` bytes
/// (for the ">4 MiB manifest" case; write it with `tree::write_manifest`).
pub fn big_oci_manifest_bytes(image: &Image, min_size: usize) -> Vec<u8> {
    let base = image.manifest_bytes().len();
    let pad = min_size.saturating_sub(base) + 64;
    let img = image
        .clone()
        .with_annotation("org.example.padding", &"x".repeat(pad));
    let bytes = img.manifest_bytes();
    assert!(bytes.len() >= min_size);
    bytes
}
