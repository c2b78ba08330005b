//! Lenient manifest parsing: every kind in the layout doc, with our own serde
//! structs that ignore unknown fields and tolerate missing ones.
//!
//! The collector only needs the digests a manifest references. When the bytes do
//! not parse, or the shape is not one we know, every `sha256:<hex>` they contain
//! is pinned instead: keeping garbage is recoverable, deleting a live blob is not.

use serde::Deserialize;

use crate::digest::Digest;

pub const DOCKER_SCHEMA2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The short-lived OCI 1.1 draft artifact manifest (`blobs` + `subject`).
pub const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";

const KNOWN_MEDIA_TYPES: &[&str] =
    &[DOCKER_SCHEMA2, DOCKER_LIST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, OCI_MANIFEST, OCI_INDEX, OCI_ARTIFACT];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestKind {
    /// Docker schema2 or OCI image manifest (including OCI artifacts).
    Image,
    /// Docker manifest list or OCI image index.
    Index,
    Schema1,
    /// OCI 1.1 draft artifact manifest.
    Artifact,
    /// Parsed as JSON but of no shape we know: every digest in it is pinned.
    Unknown,
    /// Not a JSON object at all: every digest in it is pinned.
    Unparseable,
}

/// What a manifest references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct References {
    pub kind: ManifestKind,
    /// Blobs this manifest needs: config and layers (schema1: fsLayers).
    pub blobs: Vec<Digest>,
    /// Child manifests of an index or list; for unknown shapes, every digest
    /// mentioned (each may be a manifest whose own references must be kept).
    pub children: Vec<Digest>,
    /// The manifest this one refers to (signature, SBOM, attestation).
    pub subject: Option<Digest>,
    /// Descriptor digests under another algorithm (`sha512:…`), to be resolved
    /// through the repositories' alternate links.
    pub other_algorithm: Vec<String>,
    /// Descriptor digests that are not valid at all.
    pub invalid: Vec<String>,
}

impl References {
    pub fn is_pinned_by_scan(&self) -> bool {
        matches!(self.kind, ManifestKind::Unknown | ManifestKind::Unparseable)
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawManifest {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    blobs: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    fs_layers: Option<Vec<RawFsLayer>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawDescriptor {
    digest: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawFsLayer {
    blob_sum: Option<String>,
}

/// Sorts descriptor digests into sha256, other algorithms and invalid ones.
#[derive(Default)]
struct Collector {
    sha256: Vec<Digest>,
    other_algorithm: Vec<String>,
    invalid: Vec<String>,
}

impl Collector {
    fn take(&mut self, digest: Option<&String>) -> Option<Digest> {
        let text = digest?;
        match text.parse::<Digest>() {
            Ok(d) => {
                self.sha256.push(d);
                Some(d)
            }
            Err(_) => {
                let valid_other = text
                    .split_once(':')
                    .is_some_and(|(alg, enc)| !alg.is_empty() && !enc.is_empty() && alg != "sha256");
                if valid_other {
                    self.other_algorithm.push(text.clone());
                } else {
                    self.invalid.push(text.clone());
                }
                None
            }
        }
    }

    fn take_all(&mut self, descriptors: &Option<Vec<RawDescriptor>>) -> Vec<Digest> {
        let start = self.sha256.len();
        for d in descriptors.iter().flatten() {
            self.take(d.digest.as_ref());
        }
        self.sha256.split_off(start)
    }
}

/// Parses manifest bytes into the digests they reference. Never fails: what it
/// cannot understand it pins.
pub fn parse(bytes: &[u8]) -> References {
    // Only an object is a manifest (serde would also fill the struct from an
    // array, by position).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return pinned(bytes, ManifestKind::Unparseable);
    }
    let raw: RawManifest = match serde_json::from_slice(bytes) {
        Ok(raw) => raw,
        // JSON, but a field has a type we do not expect (or comes twice): pin by scan.
        Err(e) if e.is_data() => return pinned(bytes, ManifestKind::Unknown),
        Err(_) => return pinned(bytes, ManifestKind::Unparseable),
    };

    let mut c = Collector::default();
    let schema1 = raw.fs_layers.is_some()
        || raw.schema_version.as_ref().and_then(|v| v.as_i64()) == Some(1)
        || matches!(raw.media_type.as_deref(), Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED));
    let (kind, blobs, children) = if schema1 {
        for layer in raw.fs_layers.iter().flatten() {
            c.take(layer.blob_sum.as_ref());
        }
        let blobs = std::mem::take(&mut c.sha256);
        (ManifestKind::Schema1, blobs, Vec::new())
    } else if raw.manifests.is_some() {
        let children = c.take_all(&raw.manifests);
        (ManifestKind::Index, Vec::new(), children)
    } else if raw.config.is_some() || raw.layers.is_some() {
        let mut blobs = Vec::new();
        if let Some(config) = &raw.config {
            blobs.extend(c.take(config.digest.as_ref()));
        }
        blobs.extend(c.take_all(&raw.layers));
        (ManifestKind::Image, blobs, Vec::new())
    } else if raw.blobs.is_some() {
        let blobs = c.take_all(&raw.blobs);
        (ManifestKind::Artifact, blobs, Vec::new())
    } else {
        return pinned(bytes, ManifestKind::Unknown);
    };
    let subject = raw.subject.as_ref().and_then(|s| c.take(s.digest.as_ref()));

    let mut refs = References {
        kind,
        blobs,
        children,
        subject,
        other_algorithm: c.other_algorithm,
        invalid: c.invalid,
    };
    // A media type we do not know may carry references in fields we do not read.
    let unknown_type = raw.media_type.as_deref().is_some_and(|m| !KNOWN_MEDIA_TYPES.contains(&m));
    if unknown_type {
        let extra = Digest::scan_all(bytes);
        refs.blobs.extend(extra.iter().copied());
        refs.children.extend(extra);
        refs.blobs.sort();
        refs.blobs.dedup();
        refs.children.sort();
        refs.children.dedup();
    }
    refs
}

fn pinned(bytes: &[u8], kind: ManifestKind) -> References {
    let all = Digest::scan_all(bytes);
    References {
        kind,
        blobs: all.clone(),
        children: all,
        subject: None,
        other_algorithm: Vec::new(),
        invalid: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(c: char) -> String {
        c.to_string().repeat(64)
    }
    fn dg(c: char) -> Digest {
        Digest::from_hex(&hex(c)).unwrap()
    }

    #[test]
    fn docker_schema2_and_oci_image() {
        for mt in [DOCKER_SCHEMA2, OCI_MANIFEST] {
            let m = format!(
                r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{{"mediaType":"x","size":1,"digest":"sha256:{}"}},
                "layers":[{{"digest":"sha256:{}","size":2}},{{"digest":"sha256:{}","size":3}}]}}"#,
                hex('a'), hex('b'), hex('c')
            );
            let r = parse(m.as_bytes());
            assert_eq!(r.kind, ManifestKind::Image);
            assert_eq!(r.blobs, vec![dg('a'), dg('b'), dg('c')]);
            assert!(r.children.is_empty());
            assert_eq!(r.subject, None);
        }
    }

    #[test]
    fn oci_artifact_with_subject_and_empty_config_and_no_media_type() {
        let m = format!(
            r#"{{"schemaVersion":2,"artifactType":"application/spdx+json",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:{}","size":2}},
            "layers":[{{"digest":"sha256:{}"}}],"subject":{{"digest":"sha256:{}"}},"annotations":{{"x":"sha256:{}"}}}}"#,
            hex('1'), hex('2'), hex('3'), hex('4')
        );
        let r = parse(m.as_bytes());
        assert_eq!(r.kind, ManifestKind::Image);
        assert_eq!(r.blobs, vec![dg('1'), dg('2')]);
        assert_eq!(r.subject, Some(dg('3')));
    }

    #[test]
    fn lists_and_indexes_reference_children() {
        for mt in [DOCKER_LIST, OCI_INDEX] {
            let m = format!(
                r#"{{"schemaVersion":2,"mediaType":"{mt}","manifests":[{{"digest":"sha256:{}","platform":{{"os":"linux"}}}},{{"digest":"sha256:{}"}}]}}"#,
                hex('d'), hex('e')
            );
            let r = parse(m.as_bytes());
            assert_eq!(r.kind, ManifestKind::Index);
            assert_eq!(r.children, vec![dg('d'), dg('e')]);
            assert!(r.blobs.is_empty());
        }
    }

    #[test]
    fn schema1_signed_and_unsigned() {
        let m = format!(
            r#"{{"schemaVersion":1,"name":"a","tag":"t","fsLayers":[{{"blobSum":"sha256:{}"}},{{"blobSum":"sha256:{}"}}],
            "history":[],"signatures":[{{"protected":"x"}}]}}"#,
            hex('5'), hex('6')
        );
        let r = parse(m.as_bytes());
        assert_eq!(r.kind, ManifestKind::Schema1);
        assert_eq!(r.blobs, vec![dg('5'), dg('6')]);
    }

    #[test]
    fn draft_artifact_manifest() {
        let m = format!(
            r#"{{"mediaType":"{OCI_ARTIFACT}","blobs":[{{"digest":"sha256:{}"}}],"subject":{{"digest":"sha256:{}"}}}}"#,
            hex('7'), hex('8')
        );
        let r = parse(m.as_bytes());
        assert_eq!(r.kind, ManifestKind::Artifact);
        assert_eq!(r.blobs, vec![dg('7')]);
        assert_eq!(r.subject, Some(dg('8')));
    }

    #[test]
    fn garbage_and_wrong_types_pin_every_digest() {
        let text = format!("not json sha256:{} and sha256:{}", hex('a'), hex('b'));
        let r = parse(text.as_bytes());
        assert_eq!(r.kind, ManifestKind::Unparseable);
        assert_eq!(r.blobs, vec![dg('a'), dg('b')]);
        assert_eq!(r.children, vec![dg('a'), dg('b')]);

        let wrong = format!(r#"{{"layers":"sha256:{}"}}"#, hex('c'));
        let r = parse(wrong.as_bytes());
        assert_eq!(r.kind, ManifestKind::Unknown);
        assert_eq!(r.blobs, vec![dg('c')]);

        let truncated = &format!(r#"{{"config":{{"digest":"sha256:{}"}},"layers":[{{"digest":"sha256:{}"#, hex('d'), hex('e'))[..];
        let r = parse(truncated.as_bytes());
        assert_eq!(r.kind, ManifestKind::Unparseable);
        assert_eq!(r.blobs, vec![dg('d'), dg('e')]);

        assert_eq!(parse(b"").kind, ManifestKind::Unparseable);
        assert_eq!(parse(&[0xff, 0x00, 0x12]).kind, ManifestKind::Unparseable);

        // JSON but not an object: not read by position into the fields
        let array = format!(r#"[2, "application/vnd.oci.image.manifest.v1+json", {{"digest":"sha256:{}"}}]"#, hex('3'));
        let r = parse(array.as_bytes());
        assert_eq!((r.kind, r.blobs), (ManifestKind::Unparseable, vec![dg('3')]));

        // a field twice: which one counts is anyone's guess, so both are kept
        let twice = format!(r#"{{"config":{{"digest":"sha256:{}"}},"layers":[],"config":{{"digest":"sha256:{}"}}}}"#, hex('4'), hex('5'));
        let r = parse(twice.as_bytes());
        assert_eq!((r.kind, r.blobs), (ManifestKind::Unknown, vec![dg('4'), dg('5')]));
    }

    #[test]
    fn unknown_shape_or_media_type_pins_everything() {
        let m = format!(r#"{{"mediaType":"application/x-future","things":[{{"digest":"sha256:{}"}}]}}"#, hex('f'));
        let r = parse(m.as_bytes());
        assert_eq!(r.kind, ManifestKind::Unknown);
        assert_eq!(r.blobs, vec![dg('f')]);

        let m = format!(
            r#"{{"mediaType":"application/x-future","config":{{"digest":"sha256:{}"}},"extra":"sha256:{}"}}"#,
            hex('1'), hex('2')
        );
        let r = parse(m.as_bytes());
        assert_eq!(r.kind, ManifestKind::Image);
        assert!(r.blobs.contains(&dg('1')) && r.blobs.contains(&dg('2')));
    }

    #[test]
    fn other_algorithms_and_invalid_digests_are_kept_aside() {
        let m = format!(r#"{{"layers":[{{"digest":"sha512:{}"}},{{"digest":"nonsense"}},{{"digest":"sha256:{}"}}]}}"#, "ab".repeat(64), hex('9'));
        let r = parse(m.as_bytes());
        assert_eq!(r.blobs, vec![dg('9')]);
        assert_eq!(r.other_algorithm, vec![format!("sha512:{}", "ab".repeat(64))]);
        assert_eq!(r.invalid, vec!["nonsense".to_string()]);
    }
}
