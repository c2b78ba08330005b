//! Lenient manifest parsing: every kind in the layout doc, with our own serde
//! structs that ignore unknown fields and tolerate missing ones.
//!
//! The collector only needs the digests a manifest references. When the bytes do
//! not parse, or the shape is not one we know, every `sha256:<hex>` they contain
//! is pinned instead: keeping garbage is recoverable, deleting a live blob is not.
//!
//! The same single read also tells whether distribution 2.8 could decode the
//! manifest at all (`References::undecodable`), for `fsck`: the registry
//! serves nothing of one it cannot, while the collector keeps all it mentions.

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

const KNOWN_MEDIA_TYPES: &[&str] = &[
    DOCKER_SCHEMA2,
    DOCKER_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    OCI_MANIFEST,
    OCI_INDEX,
    OCI_ARTIFACT,
];

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
    /// Why distribution 2.8 cannot decode these bytes, when it cannot (see
    /// `undecodable_by_2_8`). `None` when it can, for bytes that are no JSON
    /// object (`ManifestKind::Unparseable`, which says so already), and for
    /// a manifest whose fields registry-gc could not read one by one (a
    /// reference field of another JSON type, spelt in another case or given
    /// twice: what 2.8 makes of those is not judged).
    pub undecodable: Option<Undecodable>,
}

/// Why distribution 2.8's manifest store cannot decode a manifest: its `Get`
/// fails, and the registry answers a GET of it, by tag or by digest, with
/// 500 (its own PUT refuses such manifests; another registry or a copy tool
/// wrote them). Only what 2.8.2's `manifestStore.Get` and the handlers'
/// `Unmarshal` refuse, as Go's JSON reader reads the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undecodable {
    /// No `schemaVersion`, or `null`: Go reads 0, and 2.8 knows 1 and 2.
    NoSchemaVersion,
    /// A `schemaVersion` that is no JSON integer (`"2"`, `2.0`, out of range):
    /// Go refuses it for an `int`.
    SchemaVersionNotAnInteger,
    /// A schema version other than 1 and 2.
    UnknownSchemaVersion(i64),
    /// A `mediaType` that is no string.
    MediaTypeNotAString,
    /// Schema version 2 with a media type 2.8 does not read (the OCI 1.1
    /// draft artifact manifest's among them).
    UnknownMediaType(String),
    /// A field of the structure 2.8 decodes the manifest into holds a JSON
    /// type Go refuses for it (a layer's `size` as a string, an annotation
    /// that is a number).
    FieldType(&'static str),
}

impl std::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Undecodable::NoSchemaVersion => {
                f.write_str("it has no schemaVersion (2.8 reads versions 1 and 2)")
            }
            Undecodable::SchemaVersionNotAnInteger => {
                f.write_str("its schemaVersion is not a JSON integer")
            }
            Undecodable::UnknownSchemaVersion(v) => {
                write!(f, "schemaVersion {v} (2.8 reads versions 1 and 2)")
            }
            Undecodable::MediaTypeNotAString => f.write_str("its mediaType is not a string"),
            Undecodable::UnknownMediaType(m) if m == OCI_ARTIFACT => write!(
                f,
                "media type {m}, the OCI 1.1 draft artifact manifest, which 2.8 never read"
            ),
            Undecodable::UnknownMediaType(m) => {
                write!(f, "media type {m:?}, which 2.8 does not read")
            }
            Undecodable::FieldType(field) => write!(
                f,
                "its {field} holds a JSON type that 2.8's reader (Go's) refuses there"
            ),
        }
    }
}

impl References {
    pub fn is_pinned_by_scan(&self) -> bool {
        matches!(self.kind, ManifestKind::Unknown | ManifestKind::Unparseable)
    }
}

#[derive(Default)]
struct RawManifest {
    schema_version: Option<serde_json::Value>,
    media_type: Option<MediaType>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    blobs: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    fs_layers: Option<Vec<RawFsLayer>>,
    /// `GO_*` bits: the fields 2.8 decodes and registry-gc does not use that
    /// hold a JSON type Go refuses for them.
    go_type_errors: u8,
}

impl RawManifest {
    fn media_type(&self) -> Option<&str> {
        match &self.media_type {
            Some(MediaType::Text(m)) => Some(m),
            _ => None,
        }
    }
}

/// A `mediaType` as read: text, or a JSON value of another type (which Go,
/// reading it into a string, refuses).
enum MediaType {
    Text(String),
    NotText,
}

impl<'de> Deserialize<'de> for MediaType {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        // `null` is `None` (the `Option` around this): Go leaves the field empty
        Ok(match serde_json::Value::deserialize(de)? {
            serde_json::Value::String(m) => MediaType::Text(m),
            _ => MediaType::NotText,
        })
    }
}

#[derive(Default)]
struct RawDescriptor {
    digest: Option<String>,
    /// `GO_DESCRIPTOR` and `GO_PLATFORM_FEATURES` bits.
    go_type_errors: u8,
}

#[derive(Default)]
struct RawFsLayer {
    blob_sum: Option<String>,
}

// The registry and its clients read manifests with Go's encoding/json, which
// matches a key to a field exactly or else ignoring case (Unicode simple
// folding: `Layers`, `LAYERS` and `layerſ` are all `layers`), the last of
// keys given twice winning. So the structs are read by hand: a key that is
// a field only ignoring case, like one given twice, is a data error, and the
// manifest is pinned by scan (`parse`) rather than read without the
// references Go would find there.

/// Whether Go's JSON reader takes the key `key` for the field `name`:
/// exactly, or ignoring case (Unicode simple folding).
fn same_to_go(key: &str, name: &str) -> bool {
    let fold = |c: char| match c {
        '\u{17F}' => 's',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    };
    key.chars().map(fold).eq(name.chars().map(fold))
}

/// Which of `names` the key `key` is: exactly, or `Err` when only ignoring
/// case as Go does; `None` for a key that is no field.
fn field<E: serde::de::Error>(key: &str, names: &[&'static str]) -> Result<Option<usize>, E> {
    if let Some(i) = names.iter().position(|n| *n == key) {
        return Ok(Some(i));
    }
    match names.iter().find(|n| same_to_go(key, n)) {
        Some(n) => Err(E::custom(format_args!(
            "key {key:?} is the field {n:?} to Go's JSON reader, which ignores case"
        ))),
        None => Ok(None),
    }
}

/// Reads a JSON object's fields `names` in turn with `read(name, map)`,
/// skipping other keys; a field given twice is an error (`field`'s rules).
/// Keys Go takes for one of `go_only` (fields 2.8 decodes that registry-gc
/// needs only the JSON type of) are read with `read` too, as Go reads them:
/// ignoring case, every time one is given.
fn read_fields<'de, A: serde::de::MapAccess<'de>>(
    mut map: A,
    names: &[&'static str],
    go_only: &[&'static str],
    mut read: impl FnMut(&'static str, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    let mut seen = 0u32;
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        match field(&key, names)? {
            Some(i) if seen & (1 << i) != 0 => {
                return Err(serde::de::Error::duplicate_field(names[i]))
            }
            Some(i) => {
                seen |= 1 << i;
                read(names[i], &mut map)?;
            }
            None => match go_only.iter().find(|n| same_to_go(&key, n)) {
                Some(name) => read(name, &mut map)?,
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            },
        }
    }
    Ok(())
}

// What distribution 2.8 decodes a manifest into and registry-gc does not
// use, it still decodes: a value there of a JSON type Go refuses (a string
// for an `int64`, a number among a `map[string]string`'s values) fails the
// whole decode. Such values are checked in the one read `parse` makes,
// never failing it (the collector's reading is unchanged): each sets a bit
// of the structure's `go_type_errors`, by where 2.8 reads it.

/// The OCI image manifest's `annotations`.
const GO_ANNOTATIONS: u8 = 1;
/// schema1's `name`, `tag`, `architecture` and `history`.
const GO_SCHEMA1: u8 = 1 << 1;
/// A descriptor's `mediaType`, `size`, `urls`, `annotations`, `platform`.
const GO_DESCRIPTOR: u8 = 1 << 2;
/// A descriptor's `platform.features`: read for an index's entries only (a
/// list's `PlatformSpec`; the OCI `Platform` of a config or layer has none).
const GO_PLATFORM_FEATURES: u8 = 1 << 3;

/// The Go types of those fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GoType {
    String,
    Int64,
    /// `[]string`
    Strings,
    /// `map[string]string`
    StringMap,
    /// `v1.Platform`, or a list's `PlatformSpec` (`features` besides).
    Platform,
    /// schema1's `[]History`
    Histories,
    /// schema1's `History`: `{v1Compatibility string}`
    History,
}

/// Reads one value as Go would read it into a field of type `ty`, without
/// failing on its JSON type: the value is `errors` when Go would refuse it
/// (with `GO_PLATFORM_FEATURES` for a platform's `features`), 0 when not.
/// `null` is always taken: Go leaves the field as it is.
#[derive(Debug, Clone, Copy)]
struct GoField {
    ty: GoType,
    errors: u8,
}

impl GoField {
    fn of(ty: GoType, errors: u8) -> GoField {
        GoField { ty, errors }
    }

    /// `errors` unless the value's JSON type is the one `ty` takes.
    fn unless(self, fits: bool) -> u8 {
        if fits {
            0
        } else {
            self.errors
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for GoField {
    type Value = u8;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<u8, D::Error> {
        if GO_CHECKS_OFF.with(std::cell::Cell::get) {
            de.deserialize_ignored_any(serde::de::IgnoredAny)?;
            return Ok(0);
        }
        de.deserialize_any(GoVisitor(self))
    }
}

thread_local! {
    /// Set while `read_raw` reads a manifest again with the fields only
    /// checked for Go's types skipped unread.
    static GO_CHECKS_OFF: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Reads `bytes` as a `RawManifest`. The fields read only to check their
/// JSON type for Go (`annotations`, a descriptor's `size` or `platform`, ...)
/// are decoded, and serde refuses strings and numbers that Go reads (invalid
/// UTF-8 and lone surrogates Go replaces with U+FFFD; numbers past 64 bits):
/// a manifest 2.8 serves must not become Unparseable for them, which would
/// lose its kind, its `subject` and its references under other algorithms.
/// On such a refusal the bytes are read again with those fields skipped, as
/// serde's `IgnoredAny` skips them (checking neither), and what they hold is
/// taken as Go-decodable.
fn read_raw(bytes: &[u8]) -> Result<RawManifest, serde_json::Error> {
    match serde_json::from_slice(bytes) {
        Err(e) if !e.is_data() => {
            struct Restore;
            impl Drop for Restore {
                fn drop(&mut self) {
                    GO_CHECKS_OFF.with(|off| off.set(false));
                }
            }
            GO_CHECKS_OFF.with(|off| off.set(true));
            let _restore = Restore;
            serde_json::from_slice(bytes)
        }
        read => read,
    }
}

struct GoVisitor(GoField);

impl<'de> serde::de::Visitor<'de> for GoVisitor {
    type Value = u8;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<u8, E> {
        Ok(0)
    }
    fn visit_none<E>(self) -> Result<u8, E> {
        Ok(0)
    }
    fn visit_bool<E>(self, _: bool) -> Result<u8, E> {
        Ok(self.0.unless(false))
    }
    fn visit_i64<E>(self, _: i64) -> Result<u8, E> {
        Ok(self.0.unless(self.0.ty == GoType::Int64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<u8, E> {
        Ok(self
            .0
            .unless(self.0.ty == GoType::Int64 && i64::try_from(v).is_ok()))
    }
    /// serde_json's reading of a number with a fraction or an exponent
    /// (`2.0`, `1e3`), of an integer past 64 bits, and of `-0`: Go's `int64`
    /// refuses all but `-0` (its integer parse of the literal fails). A
    /// negative zero is taken, `-0.0` with it: never call a served manifest
    /// undecodable.
    fn visit_f64<E>(self, v: f64) -> Result<u8, E> {
        let minus_zero = v == 0.0 && v.is_sign_negative();
        Ok(self.0.unless(self.0.ty == GoType::Int64 && minus_zero))
    }
    fn visit_str<E>(self, _: &str) -> Result<u8, E> {
        Ok(self.0.unless(self.0.ty == GoType::String))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<u8, A::Error> {
        let element = match self.0.ty {
            GoType::Strings => Some(GoType::String),
            GoType::Histories => Some(GoType::History),
            _ => None,
        };
        let mut errors = self.0.unless(element.is_some());
        match element {
            Some(ty) => {
                while let Some(e) = seq.next_element_seed(GoField::of(ty, self.0.errors))? {
                    errors |= e;
                }
            }
            None => while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {},
        }
        Ok(errors)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<u8, A::Error> {
        let GoField { ty, errors: bits } = self.0;
        let object = matches!(ty, GoType::StringMap | GoType::Platform | GoType::History);
        let mut errors = self.0.unless(object);
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let value = match ty {
                GoType::StringMap => Some(GoField::of(GoType::String, bits)),
                GoType::Platform => {
                    let is = |name: &str| same_to_go(&key, name);
                    if ["architecture", "os", "os.version", "variant"]
                        .into_iter()
                        .any(is)
                    {
                        Some(GoField::of(GoType::String, bits))
                    } else if is("os.features") {
                        Some(GoField::of(GoType::Strings, bits))
                    } else if is("features") {
                        Some(GoField::of(GoType::Strings, GO_PLATFORM_FEATURES))
                    } else {
                        None
                    }
                }
                GoType::History if same_to_go(&key, "v1Compatibility") => {
                    Some(GoField::of(GoType::String, bits))
                }
                _ => None,
            };
            match value {
                Some(field) => errors |= map.next_value_seed(field)?,
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(errors)
    }
}

/// An object's key, borrowed from the bytes unless it has escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(s.to_string())))
            }
        }
        de.deserialize_str(Text)
    }
}

/// A `Deserialize` for a struct read by `read_fields` from a JSON object;
/// after `go:`, the keys only checked (`GoField`), into `go_type_errors`.
macro_rules! object_from_fields {
    ($ty:ident, $what:literal, [$($name:literal => $field:ident),+ $(,)?]
        $(, go: [$($go:literal => $check:expr),+ $(,)?])?) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                struct Fields;
                impl<'de> serde::de::Visitor<'de> for Fields {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        let mut out = $ty::default();
                        read_fields(map, &[$($name),+], &[$($($go),+)?], |name, map| {
                            match name {
                                $($name => out.$field = map.next_value()?,)+
                                $($($go => out.go_type_errors |= map.next_value_seed($check)?,)+)?
                                _ => unreachable!("a name read_fields was not given"),
                            }
                            Ok(())
                        })?;
                        Ok(out)
                    }
                }
                de.deserialize_map(Fields)
            }
        }
    };
}

object_from_fields!(RawManifest, "a manifest object", [
    "schemaVersion" => schema_version,
    "mediaType" => media_type,
    "config" => config,
    "layers" => layers,
    "manifests" => manifests,
    "blobs" => blobs,
    "subject" => subject,
    "fsLayers" => fs_layers,
], go: [
    "annotations" => GoField::of(GoType::StringMap, GO_ANNOTATIONS),
    "name" => GoField::of(GoType::String, GO_SCHEMA1),
    "tag" => GoField::of(GoType::String, GO_SCHEMA1),
    "architecture" => GoField::of(GoType::String, GO_SCHEMA1),
    "history" => GoField::of(GoType::Histories, GO_SCHEMA1),
]);
object_from_fields!(RawDescriptor, "a descriptor object", ["digest" => digest], go: [
    "mediaType" => GoField::of(GoType::String, GO_DESCRIPTOR),
    "size" => GoField::of(GoType::Int64, GO_DESCRIPTOR),
    "urls" => GoField::of(GoType::Strings, GO_DESCRIPTOR),
    "annotations" => GoField::of(GoType::StringMap, GO_DESCRIPTOR),
    "platform" => GoField::of(GoType::Platform, GO_DESCRIPTOR),
]);
object_from_fields!(RawFsLayer, "an fsLayers entry", ["blobSum" => blob_sum]);

/// Sorts descriptor digests into sha256, other algorithms and invalid ones.
#[derive(Default)]
struct Collector {
    other_algorithm: Vec<String>,
    invalid: Vec<String>,
}

impl Collector {
    fn take(&mut self, digest: Option<&String>) -> Option<Digest> {
        let text = digest?;
        match text.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(_) => {
                let valid_other = text.split_once(':').is_some_and(|(alg, enc)| {
                    !alg.is_empty() && !enc.is_empty() && alg != "sha256"
                });
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
        descriptors
            .iter()
            .flatten()
            .filter_map(|d| self.take(d.digest.as_ref()))
            .collect()
    }
}

/// Whether `bytes` start as a JSON object does (every manifest does).
pub fn is_json_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Parses manifest bytes into the digests they reference. Never fails: what it
/// cannot understand it pins.
pub fn parse(bytes: &[u8]) -> References {
    // Only an object is a manifest (serde would also fill the struct from an
    // array, by position).
    if !is_json_object(bytes) {
        return pinned(bytes, ManifestKind::Unparseable);
    }
    let raw: RawManifest = match read_raw(bytes) {
        Ok(raw) => raw,
        // JSON, but a field has a type we do not expect (or comes twice): pin by scan.
        Err(e) if e.is_data() => return pinned(bytes, ManifestKind::Unknown),
        Err(_) => return pinned(bytes, ManifestKind::Unparseable),
    };
    if let Some(MediaType::NotText) = raw.media_type {
        // pinned as any field of another JSON type is; and Go's first read,
        // of the version and media type alone, fails on it
        return References {
            undecodable: Some(Undecodable::MediaTypeNotAString),
            ..pinned(bytes, ManifestKind::Unknown)
        };
    }

    // Which kinds' fields are present. The registry reads a manifest by its
    // `schemaVersion` and `mediaType` and ignores fields it does not know, so
    // an image manifest may carry an index's `manifests` or a schema1
    // `fsLayers` and still be served as an image: the kind is not decided by
    // the first field found. References are taken from every field there is,
    // and a manifest with the fields of two kinds is a shape we do not know:
    // pinned by scan.
    let schema1 = raw.fs_layers.is_some()
        || raw.schema_version.as_ref().and_then(|v| v.as_i64()) == Some(1)
        || matches!(
            raw.media_type(),
            Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)
        );
    let index = raw.manifests.is_some();
    let image = raw.config.is_some() || raw.layers.is_some();
    let artifact = raw.blobs.is_some();
    let kind = match (schema1, index, image, artifact) {
        (true, false, false, false) => ManifestKind::Schema1,
        (false, true, false, false) => ManifestKind::Index,
        (false, false, true, false) => ManifestKind::Image,
        (false, false, false, true) => ManifestKind::Artifact,
        (false, false, false, false) => {
            return References {
                undecodable: undecodable_by_2_8(&raw),
                ..pinned(bytes, ManifestKind::Unknown)
            }
        }
        _ => ManifestKind::Unknown,
    };

    let mut c = Collector::default();
    // one allocation each, of the size needed: a manifest's references are
    // short-lived, and a run parses tens of thousands between the long-lived
    // vectors the marks grow (which odd-sized leftovers would fragment)
    let descriptors = |d: &Option<Vec<RawDescriptor>>| d.as_ref().map_or(0, Vec::len);
    let mut blobs = Vec::with_capacity(
        raw.fs_layers.as_ref().map_or(0, Vec::len)
            + usize::from(raw.config.is_some())
            + descriptors(&raw.layers)
            + descriptors(&raw.blobs),
    );
    for layer in raw.fs_layers.iter().flatten() {
        blobs.extend(c.take(layer.blob_sum.as_ref()));
    }
    blobs.extend(
        raw.config
            .as_ref()
            .and_then(|config| c.take(config.digest.as_ref())),
    );
    for d in raw.layers.iter().chain(&raw.blobs).flatten() {
        blobs.extend(c.take(d.digest.as_ref()));
    }
    let children = c.take_all(&raw.manifests);
    let subject = raw.subject.as_ref().and_then(|s| c.take(s.digest.as_ref()));

    let mut refs = References {
        kind,
        blobs,
        children,
        subject,
        other_algorithm: c.other_algorithm,
        invalid: c.invalid,
        undecodable: undecodable_by_2_8(&raw),
    };
    // A media type we do not know may carry references in fields we do not
    // read; so may a mix of two kinds' fields.
    let unknown_type = raw
        .media_type()
        .is_some_and(|m| !KNOWN_MEDIA_TYPES.contains(&m));
    if unknown_type || kind == ManifestKind::Unknown {
        let extra = mentioned_digests(bytes);
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
    let all = mentioned_digests(bytes);
    References {
        kind,
        blobs: all.clone(),
        children: all,
        subject: None,
        other_algorithm: Vec::new(),
        invalid: Vec::new(),
        undecodable: None,
    }
}

/// Why distribution 2.8.2 cannot decode the manifest read as `raw`, as its
/// `manifestStore.Get` goes: Go reads `schemaVersion` (an `int`) and
/// `mediaType` (a string) first; version 1 is schema1 (any media type),
/// version 2 is decoded by its media type into schema2's, OCI's or a list's
/// structure, and without one as an index when that read succeeds with a
/// `manifests`, else as an OCI image (an index read that fails crashes the
/// request: Go asserts the type of its nil result); anything else fails.
/// A decode fails on any value of a JSON type Go refuses for its field.
fn undecodable_by_2_8(raw: &RawManifest) -> Option<Undecodable> {
    let version = raw.schema_version.as_ref().map(serde_json::Value::as_i64);
    // The draft artifact manifest has no `schemaVersion` (2.8 fails on that
    // first): it is named by its media type, which says what it is.
    if !matches!(version, Some(Some(1 | 2))) && raw.media_type() == Some(OCI_ARTIFACT) {
        return Some(Undecodable::UnknownMediaType(OCI_ARTIFACT.to_string()));
    }
    let version = match version {
        None => return Some(Undecodable::NoSchemaVersion),
        Some(None) => return Some(Undecodable::SchemaVersionNotAnInteger),
        Some(Some(v)) => v,
    };
    let in_descriptor = |d: &RawDescriptor| d.go_type_errors & GO_DESCRIPTOR != 0;
    let bad_config = raw.config.as_ref().is_some_and(in_descriptor);
    let bad_layers = raw.layers.iter().flatten().any(in_descriptor);
    // a list's entries read their platform's `features` too
    let bad_manifests = raw
        .manifests
        .iter()
        .flatten()
        .any(|d| d.go_type_errors != 0);
    let image = |with_annotations: bool| {
        let field = if bad_config {
            "config"
        } else if bad_layers {
            "layers"
        } else if with_annotations && raw.go_type_errors & GO_ANNOTATIONS != 0 {
            "annotations"
        } else {
            return None;
        };
        Some(Undecodable::FieldType(field))
    };
    let index = || bad_manifests.then_some(Undecodable::FieldType("manifests"));
    match version {
        1 => (raw.go_type_errors & GO_SCHEMA1 != 0)
            .then_some(Undecodable::FieldType("name, tag, architecture or history")),
        2 => match raw.media_type().unwrap_or_default() {
            DOCKER_SCHEMA2 => image(false),
            OCI_MANIFEST => image(true),
            DOCKER_LIST | OCI_INDEX => index(),
            "" if bad_manifests || raw.manifests.is_some() => index(),
            "" => image(true),
            other => Some(Undecodable::UnknownMediaType(other.to_string())),
        },
        other => Some(Undecodable::UnknownSchemaVersion(other)),
    }
}

/// Every `sha256:<hex>` the bytes mention, as text or inside a JSON string
/// written with escapes (`sha256\u003a…`), which any JSON reader (the
/// registry's and its clients') decodes to the digest. Escapes are decoded
/// without parsing: these bytes are here because serde_json refused them or
/// their shape is unknown, and Go's reader takes what serde_json refuses
/// (lone surrogates, invalid UTF-8, numbers out of range), so a parse would
/// stop where the digests after it are still live. A key given twice is seen
/// both times.
fn mentioned_digests(bytes: &[u8]) -> Vec<Digest> {
    let mut all = Digest::scan_all(bytes);
    if bytes.contains(&b'\\') {
        all.extend(Digest::scan_all(&ascii_escapes_decoded(bytes)));
        all.sort();
        all.dedup();
    }
    all
}

/// `bytes` with every JSON escape that stands for an ASCII character
/// (`\u003a`, `\/`) replaced by it, wherever it is, in a string or not, and
/// every other byte as it is. A digest is ASCII, so this finds every digest
/// a reader could decode; decoding what is not an escape (the `\u003a` of
/// `\\u003a`) can only find more, and keep more.
fn ascii_escapes_decoded(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&first, after)) = rest.split_first() {
        if first == b'\\' {
            if let Some(after_slash) = after.strip_prefix(b"/") {
                out.push(b'/');
                rest = after_slash;
                continue;
            }
            let ascii = after
                .strip_prefix(b"u")
                .and_then(|u| u.get(..4))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u16::from_str_radix(h, 16).ok())
                .and_then(|c| u8::try_from(c).ok())
                .filter(u8::is_ascii);
            if let Some(c) = ascii {
                out.push(c);
                rest = &after[5..];
                continue;
            }
        }
        out.push(first);
        rest = after;
    }
    out
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
                hex('a'),
                hex('b'),
                hex('c')
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
            hex('1'),
            hex('2'),
            hex('3'),
            hex('4')
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
                hex('d'),
                hex('e')
            );
            let r = parse(m.as_bytes());
            assert_eq!(r.kind, ManifestKind::Index);
            assert_eq!(r.children, vec![dg('d'), dg('e')]);
            assert!(r.blobs.is_empty());
        }
    }

    /// Go reads invalid UTF-8 and lone surrogates (as U+FFFD), which serde
    /// refuses in a string it decodes: in the fields read only for their
    /// JSON type they change nothing of what the manifest references.
    #[test]
    fn text_go_reads_and_serde_refuses_in_checked_fields_keeps_the_kind_and_references() {
        let odd_values: [&[u8]; 4] = [b"\"caf\xe9\"", br#""\ud83d""#, br#""\udc00x""#, b"1e400"];
        for odd_bytes in odd_values {
            let image = |value: &[u8]| {
                let mut m = format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"sha256:{}","size":"#,
                    hex('1')
                )
                .into_bytes();
                m.extend_from_slice(value);
                m.extend_from_slice(
                    format!(
                        r#"}},"layers":[{{"digest":"sha512:{}"}},{{"digest":"sha256:{}","annotations":{{"a":"#,
                        "c".repeat(128),
                        hex('2')
                    )
                    .as_bytes(),
                );
                m.extend_from_slice(value);
                m.extend_from_slice(
                    format!(
                        r#"}}}}],"subject":{{"digest":"sha256:{}"}},"annotations":{{"b":"#,
                        hex('3')
                    )
                    .as_bytes(),
                );
                m.extend_from_slice(value);
                m.extend_from_slice(b"}}");
                m
            };
            let index = |value: &[u8]| {
                let mut m = format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"digest":"sha256:{}","platform":{{"os":"#,
                    hex('4')
                )
                .into_bytes();
                m.extend_from_slice(value);
                m.extend_from_slice(b"}}]}");
                m
            };
            let what = String::from_utf8_lossy(odd_bytes).into_owned();
            let r = parse(&image(odd_bytes));
            assert_eq!(r.kind, ManifestKind::Image, "{what}");
            assert_eq!(r.blobs, vec![dg('1'), dg('2')], "{what}");
            assert_eq!(r.subject, Some(dg('3')), "{what}");
            assert_eq!(
                r.other_algorithm,
                vec![format!("sha512:{}", "c".repeat(128))],
                "{what}"
            );
            let r = parse(&index(odd_bytes));
            assert_eq!(r.kind, ManifestKind::Index, "{what}");
            assert_eq!(r.children, vec![dg('4')], "{what}");
            // the checks are back on for the next manifest
            let typed = parse(&index(b"7"));
            assert_eq!(
                typed.undecodable,
                Some(Undecodable::FieldType("manifests")),
                "{what}"
            );
        }
    }

    #[test]
    fn schema1_signed_and_unsigned() {
        let m = format!(
            r#"{{"schemaVersion":1,"name":"a","tag":"t","fsLayers":[{{"blobSum":"sha256:{}"}},{{"blobSum":"sha256:{}"}}],
            "history":[],"signatures":[{{"protected":"x"}}]}}"#,
            hex('5'),
            hex('6')
        );
        let r = parse(m.as_bytes());
        assert_eq!(r.kind, ManifestKind::Schema1);
        assert_eq!(r.blobs, vec![dg('5'), dg('6')]);
    }

    #[test]
    fn draft_artifact_manifest() {
        let m = format!(
            r#"{{"mediaType":"{OCI_ARTIFACT}","blobs":[{{"digest":"sha256:{}"}}],"subject":{{"digest":"sha256:{}"}}}}"#,
            hex('7'),
            hex('8')
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

        let truncated = &format!(
            r#"{{"config":{{"digest":"sha256:{}"}},"layers":[{{"digest":"sha256:{}"#,
            hex('d'),
            hex('e')
        )[..];
        let r = parse(truncated.as_bytes());
        assert_eq!(r.kind, ManifestKind::Unparseable);
        assert_eq!(r.blobs, vec![dg('d'), dg('e')]);

        assert_eq!(parse(b"").kind, ManifestKind::Unparseable);
        assert_eq!(parse(&[0xff, 0x00, 0x12]).kind, ManifestKind::Unparseable);

        // JSON but not an object: not read by position into the fields
        let array = format!(
            r#"[2, "application/vnd.oci.image.manifest.v1+json", {{"digest":"sha256:{}"}}]"#,
            hex('3')
        );
        let r = parse(array.as_bytes());
        assert_eq!(
            (r.kind, r.blobs),
            (ManifestKind::Unparseable, vec![dg('3')])
        );

        // a field twice: which one counts is anyone's guess, so both are kept
        let twice = format!(
            r#"{{"config":{{"digest":"sha256:{}"}},"layers":[],"config":{{"digest":"sha256:{}"}}}}"#,
            hex('4'),
            hex('5')
        );
        let r = parse(twice.as_bytes());
        assert_eq!(
            (r.kind, r.blobs),
            (ManifestKind::Unknown, vec![dg('4'), dg('5')])
        );
    }

    #[test]
    fn unknown_shape_or_media_type_pins_everything() {
        let m = format!(
            r#"{{"mediaType":"application/x-future","things":[{{"digest":"sha256:{}"}}]}}"#,
            hex('f')
        );
        let r = parse(m.as_bytes());
        assert_eq!(r.kind, ManifestKind::Unknown);
        assert_eq!(r.blobs, vec![dg('f')]);

        let m = format!(
            r#"{{"mediaType":"application/x-future","config":{{"digest":"sha256:{}"}},"extra":"sha256:{}"}}"#,
            hex('1'),
            hex('2')
        );
        let r = parse(m.as_bytes());
        assert_eq!(r.kind, ManifestKind::Image);
        assert!(r.blobs.contains(&dg('1')) && r.blobs.contains(&dg('2')));
    }

    /// The registry reads a manifest by its `schemaVersion` and `mediaType`
    /// and ignores fields it does not know (2.8's only check is that an OCI
    /// image has no `manifests` and an index no `config` or `layers`), so it
    /// serves an image carrying `fsLayers`, and a schema2 image carrying
    /// `manifests`, as an image. Such a mix is no kind we know: every field's
    /// references are kept, and every digest the bytes mention.
    #[test]
    fn fields_of_two_kinds_keep_the_references_of_both() {
        let config_layers = format!(
            r#""config":{{"digest":"sha256:{}"}},"layers":[{{"digest":"sha256:{}"}}]"#,
            hex('a'),
            hex('b')
        );
        for (mt, extra) in [
            (OCI_MANIFEST, r#""fsLayers":[]"#.to_string()),
            (DOCKER_SCHEMA2, r#""manifests":[]"#.to_string()),
            (
                OCI_MANIFEST,
                format!(r#""blobs":[{{"digest":"sha256:{}"}}]"#, hex('c')),
            ),
            (DOCKER_SCHEMA1, String::new()),
        ] {
            let fields = [config_layers.as_str(), extra.as_str()]
                .iter()
                .filter(|f| !f.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(",");
            let m = format!(
                r#"{{"schemaVersion":2,"mediaType":"{mt}",{fields},"annotations":{{"x":"sha256:{}"}}}}"#,
                hex('d')
            );
            let r = parse(m.as_bytes());
            assert_eq!(r.kind, ManifestKind::Unknown, "{m}");
            assert!(r.is_pinned_by_scan());
            for d in [dg('a'), dg('b'), dg('d')] {
                assert!(
                    r.blobs.contains(&d) && r.children.contains(&d),
                    "{d} not kept from {m}"
                );
            }
            if extra.contains("blobs") {
                assert!(r.blobs.contains(&dg('c')));
            }
        }

        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"digest":"sha256:{}"}}],"fsLayers":[{{"blobSum":"sha256:{}"}}],"subject":{{"digest":"sha256:{}"}}}}"#,
            hex('e'),
            hex('f'),
            hex('1')
        );
        let r = parse(index.as_bytes());
        assert_eq!(r.kind, ManifestKind::Unknown);
        assert!(
            r.children.contains(&dg('e')) && r.blobs.contains(&dg('f')),
            "{r:?}"
        );
        assert_eq!(r.subject, Some(dg('1')));

        // one kind's fields alone, whatever the media type says, are that kind
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","config":{{"digest":"sha256:{}"}},"layers":[]}}"#,
            hex('2')
        );
        assert_eq!(
            (parse(m.as_bytes()).kind, parse(m.as_bytes()).blobs),
            (ManifestKind::Image, vec![dg('2')])
        );
    }

    /// Go's JSON reader, the registry's and its clients', takes a key for a
    /// field ignoring case: `"Layers"` are the layers, a descriptor's
    /// `"Digest"` its digest. Such a manifest is pinned by scan, keeping what
    /// Go reads in it; so is one whose key is a field only under Unicode
    /// folding (`layerſ`, with U+017F). Other keys are no field, whatever
    /// their case.
    #[test]
    fn a_field_spelt_in_another_case_is_what_go_reads_so_the_manifest_is_pinned() {
        let config = format!(r#""config":{{"digest":"sha256:{}"}}"#, hex('a'));
        for layers in ["Layers", "LAYERS", r"layer\u017f", "layerſ"] {
            let m = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",{config},"{layers}":[{{"digest":"sha256:{}"}}]}}"#,
                hex('b')
            );
            let r = parse(m.as_bytes());
            assert_eq!(r.kind, ManifestKind::Unknown, "{m}");
            assert!(
                r.blobs.contains(&dg('a')) && r.blobs.contains(&dg('b')),
                "{m}: {r:?}"
            );
        }
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"Digest":"sha256:{}"}}]}}"#,
            hex('c')
        );
        let r = parse(index.as_bytes());
        assert_eq!(r.kind, ManifestKind::Unknown);
        assert!(r.children.contains(&dg('c')));
        let schema1 = format!(
            r#"{{"schemaVersion":1,"fsLayers":[{{"BlobSum":"sha256:{}"}}]}}"#,
            hex('d')
        );
        assert!(parse(schema1.as_bytes()).blobs.contains(&dg('d')));
        // keys that are no field, in any case, change nothing
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",{config},"layers":[],"Annotations":{{"Layers":"x"}},"ArtifactType":"y","layersX":[]}}"#
        );
        let r = parse(m.as_bytes());
        assert_eq!((r.kind, r.blobs), (ManifestKind::Image, vec![dg('a')]));
    }

    /// `sha256\u003a<hex>` is `sha256:<hex>` to any JSON reader: a manifest
    /// pinned by scan (here for a key given twice, of which Go's reader takes
    /// the last) keeps a digest written that way, in either copy of the key.
    #[test]
    fn a_digest_written_with_json_escapes_is_pinned_too() {
        for (first, second) in [
            (hex('a'), format!(r"sha256\u003a{}", hex('b'))),
            (format!(r"sha256\u003a{}", hex('b')), hex('a')),
        ] {
            let first = if first.starts_with("sha256") {
                first
            } else {
                format!("sha256:{first}")
            };
            let second = if second.starts_with("sha256") {
                second
            } else {
                format!("sha256:{second}")
            };
            let m = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[{{"digest":"{first}"}}],"layers":[{{"digest":"{second}"}}]}}"#
            );
            let r = parse(m.as_bytes());
            assert_eq!(r.kind, ManifestKind::Unknown, "{m}");
            assert_eq!(r.blobs, vec![dg('a'), dg('b')], "{m}");
        }
        // under a media type we do not know, and in a document cut short
        let m = format!(
            r#"{{"mediaType":"application/x-future","config":{{"digest":"sha256:{}"}},"extra":"sha256\u003A{}"}}"#,
            hex('1'),
            hex('2')
        );
        assert!(parse(m.as_bytes()).blobs.contains(&dg('2')));
        let cut = format!(
            r#"{{"layers":[{{"digest":"\u0073ha256:{}"}}],"config":{{"#,
            hex('3')
        );
        assert_eq!(parse(cut.as_bytes()).blobs, vec![dg('3')]);
    }

    /// What Go's reader takes and serde_json refuses (a lone surrogate, bytes
    /// that are not UTF-8, a number out of range) ahead of a digest written
    /// with escapes: the digest is still pinned, and the one after it too.
    #[test]
    fn escaped_digests_after_what_serde_json_refuses_are_pinned() {
        for refused in [&b"\"\\ud800\":0,"[..], b"\"\xff\xfe\":0,", b"\"n\":1e400,"] {
            let mut m = b"{".to_vec();
            m.extend_from_slice(refused);
            m.extend_from_slice(
                format!(
                    r#""mediaType":"{OCI_MANIFEST}","config":{{"digest":"sha256\u003a{}"}},"layers":[{{"digest":"\u0073ha256:{}"}},{{"digest":"sha256\u003A{}"}}]}}"#,
                    hex('4'),
                    hex('5'),
                    hex('6')
                )
                .as_bytes(),
            );
            let r = parse(&m);
            assert_eq!(
                r.blobs,
                vec![dg('4'), dg('5'), dg('6')],
                "{}",
                String::from_utf8_lossy(&m)
            );
        }
        // `\/` is `/` and an escape of a character that is not ASCII is left
        assert_eq!(ascii_escapes_decoded(br"a\/b\u00e9\u0041"), br"a/b\u00e9A");
    }

    /// What distribution 2.8.2 makes of each manifest, as its GET of it by
    /// tag and by digest answered (tests/e2e_inspect.rs puts each through
    /// the real registry): `None` served, else why it cannot decode it.
    /// What registry-gc keeps of them is what it kept before.
    #[test]
    fn what_distribution_2_8_cannot_decode() {
        let d = |c: char| {
            format!(
                r#"{{"mediaType":"m","digest":"sha256:{}","size":2}}"#,
                hex(c)
            )
        };
        let (config, layer) = (d('a'), d('b'));
        let image = format!(r#""config":{config},"layers":[{layer}]"#);
        let schema1 = |history: &str| {
            format!(
                r#"{{"schemaVersion":1,"name":"r","tag":"t","architecture":"amd64","fsLayers":[{{"blobSum":"sha256:{}"}}],"history":[{history}]}}"#,
                hex('b')
            )
        };
        let u = |why: Undecodable| Some(why);
        let cases: Vec<(String, Option<Undecodable>)> = vec![
            // served
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",{image}}}"#),
                None,
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{DOCKER_SCHEMA2}",{image},"annotations":{{"n":1}}}}"#
                ),
                None,
            ),
            (format!(r#"{{"schemaVersion":2,{image}}}"#), None),
            (
                format!(
                    r#"{{"schemaVersion":2,"artifactType":"x/y",{image},"subject":{}}}"#,
                    d('c')
                ),
                None,
            ),
            (
                format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, d('c')),
                None,
            ),
            (r#"{"schemaVersion":2,"manifests":[]}"#.to_string(), None),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
                    d('c')
                ),
                None,
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",{image},"fsLayers":[]}}"#
                ),
                None,
            ),
            (schema1(r#"{"v1Compatibility":"{}"}"#), None),
            (
                schema1(r#"{"v1Compatibility":"{}"}"#)
                    .replace(r#""history""#, r#""signatures":[{"x":1}],"history""#),
                None,
            ),
            // a config's platform has no `features` (an index entry's has)
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"sha256:{}","platform":{{"features":5}}}},"layers":[]}}"#,
                    hex('a')
                ),
                None,
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{config},"layers":[{{"digest":"sha256:{}","size":-0,"urls":null,"annotations":{{"a":null}}}}]}}"#,
                    hex('b')
                ),
                None,
            ),
            // not served
            (
                format!(r#"{{"mediaType":"{OCI_ARTIFACT}","blobs":[{layer}]}}"#),
                u(Undecodable::UnknownMediaType(OCI_ARTIFACT.into())),
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"application/x-future",{image}}}"#),
                u(Undecodable::UnknownMediaType("application/x-future".into())),
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_SCHEMA1}",{image}}}"#),
                u(Undecodable::UnknownMediaType(DOCKER_SCHEMA1.into())),
            ),
            (
                format!(r#"{{"mediaType":"{OCI_MANIFEST}",{image}}}"#),
                u(Undecodable::NoSchemaVersion),
            ),
            (
                format!(r#"{{"schemaVersion":null,"mediaType":"{OCI_MANIFEST}",{image}}}"#),
                u(Undecodable::NoSchemaVersion),
            ),
            (
                r#"{"schemaVersion":2}"#.replace('2', "3"),
                u(Undecodable::UnknownSchemaVersion(3)),
            ),
            (
                format!(r#"{{"schemaVersion":0,{image}}}"#),
                u(Undecodable::UnknownSchemaVersion(0)),
            ),
            (
                format!(r#"{{"schemaVersion":"2","mediaType":"{OCI_MANIFEST}",{image}}}"#),
                u(Undecodable::SchemaVersionNotAnInteger),
            ),
            (
                format!(r#"{{"schemaVersion":2.0,"mediaType":"{OCI_MANIFEST}",{image}}}"#),
                u(Undecodable::SchemaVersionNotAnInteger),
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":5,{image}}}"#),
                u(Undecodable::MediaTypeNotAString),
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{config},"layers":[{{"digest":"sha256:{}","size":"2"}}]}}"#,
                    hex('b')
                ),
                u(Undecodable::FieldType("layers")),
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"sha256:{}","size":1e3}},"layers":[]}}"#,
                    hex('a')
                ),
                u(Undecodable::FieldType("config")),
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{config},"layers":[{{"digest":"sha256:{}","size":0.0}}]}}"#,
                    hex('b')
                ),
                u(Undecodable::FieldType("layers")),
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",{image},"Annotations":{{"n":1}}}}"#
                ),
                u(Undecodable::FieldType("annotations")),
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{DOCKER_SCHEMA2}","config":{config},"layers":[{{"digest":"sha256:{}","urls":"x"}}]}}"#,
                    hex('b')
                ),
                u(Undecodable::FieldType("layers")),
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"digest":"sha256:{}","platform":{{"features":5}}}}]}}"#,
                    hex('c')
                ),
                u(Undecodable::FieldType("manifests")),
            ),
            // no media type: read as an index first, and that read failing fails all
            (
                format!(
                    r#"{{"schemaVersion":2,{image},"manifests":[{{"digest":"sha256:{}","size":"1"}}]}}"#,
                    hex('c')
                ),
                u(Undecodable::FieldType("manifests")),
            ),
            (
                schema1(r#"{"v1Compatibility":5}"#),
                u(Undecodable::FieldType("name, tag, architecture or history")),
            ),
            (
                schema1("7"),
                u(Undecodable::FieldType("name, tag, architecture or history")),
            ),
        ];
        for (m, want) in cases {
            let r = parse(m.as_bytes());
            assert_eq!(r.undecodable, want, "{m}");
            assert_ne!(r.kind, ManifestKind::Unparseable, "{m}");
        }
        // what registry-gc cannot read field by field is not judged; bytes
        // that are no JSON object are unparseable-manifest's
        let spelt = format!(r#"{{"SchemaVersion":2,"mediaType":"{OCI_MANIFEST}",{image}}}"#);
        assert_eq!(parse(spelt.as_bytes()).undecodable, None);
        assert_eq!(parse(b"[2]").undecodable, None);
        // a media type of another type is pinned as before
        let m = format!(r#"{{"schemaVersion":2,"mediaType":["x"],{image}}}"#);
        let r = parse(m.as_bytes());
        assert_eq!((r.kind, r.blobs.len()), (ManifestKind::Unknown, 2));
    }

    #[test]
    fn other_algorithms_and_invalid_digests_are_kept_aside() {
        let m = format!(
            r#"{{"layers":[{{"digest":"sha512:{}"}},{{"digest":"nonsense"}},{{"digest":"sha256:{}"}}]}}"#,
            "ab".repeat(64),
            hex('9')
        );
        let r = parse(m.as_bytes());
        assert_eq!(r.blobs, vec![dg('9')]);
        assert_eq!(
            r.other_algorithm,
            vec![format!("sha512:{}", "ab".repeat(64))]
        );
        assert_eq!(r.invalid, vec!["nonsense".to_string()]);
    }
}
