//! Reads the storage of a registry from the registry's own configuration: the
//! `storage:` section of distribution's `config.yml`, with the `REGISTRY_STORAGE*`
//! environment overrides the registry applies to it. The result is the STORAGE
//! URL and backend options the rest of the program already understands, so an
//! operator points registry-gc at the file the registry runs with and nothing can
//! drift between the two.
//!
//! How the registry reads it (distribution 2.8, `configuration/parser.go` and the
//! drivers' `FromParameters`), which this module follows:
//! - the file is YAML 1.1 as go-yaml v2 reads it: its first document, merge keys
//!   applied where they stand;
//! - environment variables named `REGISTRY_STORAGE`, `REGISTRY_STORAGE_<DRIVER>_<KEY>`
//!   are applied in lexical order (so `REGISTRY_STORAGE=s3`, which replaces the
//!   whole section, comes before the keys that fill it in); each path segment
//!   matches an existing key that upper-cased is the segment, a new key is
//!   created lowercase; each value is parsed as YAML (so `false`, `no`, `off`
//!   are booleans, `42` a number);
//! - `maintenance`, `cache`, `delete`, `redirect` and `tag` are not drivers; exactly
//!   one other key must remain;
//! - driver names and parameter keys in the file are case-sensitive;
//! - booleans (`secure`, `skipverify`, `forcepathstyle`) are YAML booleans, or
//!   strings Go's `strconv.ParseBool` accepts; a number is refused;
//! - other scalars are used as `fmt.Sprint` writes them (`bucket: 123` is the
//!   bucket "123", `rootdirectory: 1e6` the root "1e+06", a null root on the
//!   filesystem and gcs drivers "<nil>").

use std::collections::BTreeMap;
use std::path::Path;

use serde_norway::{Mapping, Value};

use crate::storage::open::bucket_in_host_name;

/// Storage keys that configure the registry, not a driver.
const NOT_DRIVERS: &[&str] = &["maintenance", "cache", "delete", "redirect", "tag"];

/// The filesystem driver's default `rootdirectory`.
const DEFAULT_FS_ROOT: &str = "/var/lib/registry";

#[derive(Debug, thiserror::Error)]
pub enum RegistryConfigError {
    #[error("--registry-config {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{var}: {reason}")]
    Env { var: String, reason: String },
    #[error("--registry-config {path}: storage: {reason}")]
    Storage { path: String, reason: String },
    #[error(
        "--registry-config {path}: storage driver {driver:?} is not supported; registry-gc reads filesystem, s3 (s3aws), azure and gcs"
    )]
    Unsupported { path: String, driver: String },
    #[error("--registry-config {path}: storage.{driver}.{key} is not set (nor {env})")]
    Missing {
        path: String,
        driver: String,
        key: String,
        env: String,
    },
    #[error("{origin}: {reason}")]
    Param { origin: String, reason: String },
}

/// One backend option, as an `object_store` key for the driver's section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOption {
    pub key: &'static str,
    pub value: String,
    /// `--registry-config FILE storage.s3.regionendpoint` or the environment
    /// variable that set it. Shown in errors; the value never is.
    pub origin: String,
}

/// The storage a registry config describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryStorage {
    /// The registry's driver name, as configured (`filesystem`, `s3`, ...).
    pub driver: String,
    /// A STORAGE argument: a path, `s3://`, `az://` or `gs://` URL.
    pub url: String,
    /// `s3`, `azure`, `gcs` (the `BackendOptions` section), `None` on disk.
    pub section: Option<&'static str>,
    pub options: Vec<RegistryOption>,
}

/// Reads `path` and applies the `REGISTRY_STORAGE*` variables of `env`.
pub fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RegistryStorage, RegistryConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| RegistryConfigError::File {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    parse(&text, &shown, env)
}

/// [`load`] on the text of a config file named `path` (for messages).
pub fn parse(
    text: &str,
    path: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RegistryStorage, RegistryConfigError> {
    let file_err = |reason: String| RegistryConfigError::File {
        path: path.to_string(),
        reason,
    };
    let doc = first_document(text).map_err(|e| file_err(format!("not YAML: {e}")))?;
    let storage = match &doc {
        Value::Mapping(m) => m.get("storage").cloned().unwrap_or(Value::Null),
        Value::Null => Value::Null,
        _ => {
            return Err(file_err(
                "not a registry configuration (expected a mapping at the top)".into(),
            ))
        }
    };
    let mut storage = storage_section(storage).map_err(|reason| RegistryConfigError::Storage {
        path: path.to_string(),
        reason,
    })?;

    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k == "REGISTRY_STORAGE" || k.starts_with("REGISTRY_STORAGE_"))
        .collect();
    vars.sort();
    // which driver parameters the environment set: (driver, key) in lowercase
    let mut from_env: BTreeMap<(String, String), String> = BTreeMap::new();
    for (var, value) in &vars {
        let env_err = |reason: String| RegistryConfigError::Env {
            var: var.clone(),
            reason,
        };
        // an empty value is YAML null, as for the registry
        let payload: Value =
            serde_norway::from_str(value).map_err(|e| env_err(format!("not a YAML value: {e}")))?;
        let segments: Vec<&str> = var["REGISTRY_STORAGE".len()..].split('_').skip(1).collect();
        if segments.is_empty() {
            storage = storage_section(payload).map_err(env_err)?;
            from_env.retain(|_, _| false);
            continue;
        }
        if segments.iter().any(|s| s.is_empty()) {
            return Err(env_err("empty path segment".into()));
        }
        if overwrite(&mut storage, &segments, payload) && segments.len() >= 2 {
            from_env.insert(
                (
                    segments[0].to_ascii_lowercase(),
                    segments[1].to_ascii_lowercase(),
                ),
                var.clone(),
            );
        }
    }

    let drivers: Vec<String> = storage
        .iter()
        .map(|(k, _)| match k {
            Value::String(s) => Ok(s.clone()),
            other => Err(RegistryConfigError::Storage {
                path: path.to_string(),
                reason: format!("{other:?} is not a driver name"),
            }),
        })
        .filter(|k| !matches!(k, Ok(k) if NOT_DRIVERS.contains(&k.as_str())))
        .collect::<Result<_, _>>()?;
    let driver = match drivers.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(RegistryConfigError::Storage {
                path: path.to_string(),
                reason: "no storage driver configured (and no REGISTRY_STORAGE in the environment)"
                    .into(),
            })
        }
        many => {
            return Err(RegistryConfigError::Storage {
                path: path.to_string(),
                reason: format!(
                    "must name exactly one storage driver; found {}",
                    many.join(", ")
                ),
            })
        }
    };
    let params = match storage.get(driver.as_str()) {
        Some(Value::Mapping(m)) => m.clone(),
        Some(Value::Null) | None => Mapping::new(),
        Some(_) => {
            return Err(RegistryConfigError::Storage {
                path: path.to_string(),
                reason: format!("{driver}: expected a mapping of parameters"),
            })
        }
    };
    let p = Params {
        path,
        driver: &driver,
        params: &params,
        from_env: &from_env,
    };
    match driver.as_str() {
        "filesystem" => Ok(RegistryStorage {
            url: p.fs_root()?,
            section: None,
            options: Vec::new(),
            driver,
        }),
        "s3" | "s3aws" => s3(&p),
        "azure" => azure(&p),
        "gcs" => gcs(&p),
        _ => Err(RegistryConfigError::Unsupported {
            path: path.to_string(),
            driver,
        }),
    }
}

/// The config as yaml.v2 reads it: the first document only (the rest is never
/// parsed), after a byte-order mark, with its merge keys applied in place.
fn first_document(text: &str) -> Result<Value, String> {
    use serde::Deserialize;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc = match serde_norway::Deserializer::from_str(text).next() {
        Some(doc) => Value::deserialize(doc).map_err(|e| e.to_string())?,
        None => Value::Null,
    };
    merge_in_place(doc)
}

/// yaml.v2 applies a merge key (`<<: *x`) where it stands in its mapping: it
/// overrides the keys before it and the keys after it override it, and of a
/// list of merged mappings the first wins. (`Value::apply_merge` lets the
/// mapping's own keys win wherever they stand, as YAML specifies: given
/// `rootdirectory` and then `<<`, the registry and it disagree on the root.)
fn merge_in_place(v: Value) -> Result<Value, String> {
    match v {
        Value::Mapping(m) => {
            let mut out = Mapping::new();
            for (k, v) in m {
                let v = merge_in_place(v)?;
                if k.as_str() != Some("<<") {
                    out.insert(k, v);
                    continue;
                }
                let merged = match v {
                    Value::Mapping(m) => vec![m],
                    Value::Sequence(list) => list
                        .into_iter()
                        .rev()
                        .map(|v| match v {
                            Value::Mapping(m) => Ok(m),
                            _ => Err("a merge key's list must hold mappings".to_string()),
                        })
                        .collect::<Result<_, _>>()?,
                    _ => return Err("a merge key needs a mapping or a list of mappings".into()),
                };
                for (k, v) in merged.into_iter().flatten() {
                    out.insert(k, v);
                }
            }
            Ok(Value::Mapping(out))
        }
        Value::Sequence(list) => list
            .into_iter()
            .map(merge_in_place)
            .collect::<Result<_, _>>()
            .map(Value::Sequence),
        Value::Tagged(t) => Ok(Value::Tagged(Box::new(serde_norway::value::TaggedValue {
            tag: t.tag,
            value: merge_in_place(t.value)?,
        }))),
        other => Ok(other),
    }
}

/// The `storage:` value as a mapping: a driver name alone (`storage: filesystem`,
/// `REGISTRY_STORAGE=s3`) is that driver with no parameters.
fn storage_section(v: Value) -> Result<Mapping, String> {
    match v {
        Value::Mapping(m) => Ok(m),
        Value::Null => Ok(Mapping::new()),
        Value::String(s) => Ok(Mapping::from_iter([(
            Value::String(s),
            Value::Mapping(Mapping::new()),
        )])),
        _ => Err("expected a mapping of storage drivers or a driver name".into()),
    }
}

/// Sets `path` (the variable's segments, as written) under `map` as the
/// registry's parser does: an existing key that upper-cased is the segment
/// (`strings.ToUpper(k) == path[0]`: a segment written in lowercase matches
/// no key) is descended into if it holds a mapping, and the variable ignored
/// if it holds a value; the last segment, or one matching no non-null key,
/// is (re)created in lowercase, replacing what the file had there. False when
/// the variable was ignored.
fn overwrite(map: &mut Mapping, path: &[&str], payload: Value) -> bool {
    let head = path[0];
    if path.len() > 1 {
        let existing = map
            .iter()
            .find(|(k, _)| k.as_str().is_some_and(|k| go_upper(k) == head))
            .map(|(k, _)| k.clone());
        match existing.and_then(|k| map.get_mut(&k)) {
            Some(Value::Mapping(inner)) => return overwrite(inner, &path[1..], payload),
            None | Some(Value::Null) => {}
            Some(_) => return false,
        }
        let mut inner = Mapping::new();
        overwrite(&mut inner, &path[1..], payload);
        map.insert(Value::String(head.to_lowercase()), Value::Mapping(inner));
    } else {
        map.insert(Value::String(head.to_lowercase()), payload);
    }
    true
}

/// Go's `strings.ToUpper`: rune by rune, a rune with no single upper-case rune
/// (`ß`) left as it is.
fn go_upper(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect()
}

/// A driver parameter, as the registry's parser left it.
#[derive(Debug, PartialEq, Eq)]
enum Scalar {
    Absent,
    /// present, null: `key:`, `key: ~`, or the variable set empty
    Null,
    /// `fmt.Sprint` of the value
    Text(String),
}

struct Params<'a> {
    path: &'a str,
    driver: &'a str,
    params: &'a Mapping,
    from_env: &'a BTreeMap<(String, String), String>,
}

impl Params<'_> {
    fn origin(&self, key: &str) -> String {
        match self
            .from_env
            .get(&(self.driver.to_ascii_lowercase(), key.to_string()))
        {
            Some(var) => var.clone(),
            None => format!(
                "--registry-config {} storage.{}.{key}",
                self.path, self.driver
            ),
        }
    }

    fn bad(&self, key: &str, reason: &str) -> RegistryConfigError {
        RegistryConfigError::Param {
            origin: self.origin(key),
            reason: reason.to_string(),
        }
    }

    /// A scalar parameter as the driver sees it: `fmt.Sprint` of what yaml.v2
    /// made of it. Text that both parsers would read as text unquoted but
    /// yaml.v2 as something else (`010` is the number 8, `yes` is true) is
    /// refused: whether it was quoted is lost here, and the two readings are
    /// different names. (Text that the parser here reads as a number or null
    /// unquoted, `1e6`, `~`, was quoted: the registry reads it as it is.)
    fn scalar(&self, key: &str) -> Result<Scalar, RegistryConfigError> {
        let text = match self.params.get(key) {
            None => return Ok(Scalar::Absent),
            Some(Value::Null) => return Ok(Scalar::Null),
            Some(Value::String(s)) => match yaml_v2_plain(s) {
                Some(read)
                    if read != Scalar::Text(s.clone())
                        && matches!(serde_norway::from_str(s), Ok(Value::String(_))) =>
                {
                    let read = match read {
                        Scalar::Text(t) => t,
                        _ => "null".into(),
                    };
                    return Err(self.bad(
                        key,
                        &format!(
                            "{s:?} is ambiguous: the registry reads it as {read} unless it is quoted, \
                             and registry-gc cannot tell whether it was; write the value the registry \
                             uses, quoted, or give STORAGE instead"
                        ),
                    ));
                }
                _ => s.clone(),
            },
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if n.is_f64() => go_float(f),
                _ => n.to_string(),
            },
            Some(Value::Bool(b)) => b.to_string(),
            Some(_) => return Err(self.bad(key, "expected a single value")),
        };
        Ok(Scalar::Text(text))
    }

    /// A scalar parameter as text; `None` when absent, null or empty (the
    /// drivers treat an empty string as unset).
    fn string(&self, key: &str) -> Result<Option<String>, RegistryConfigError> {
        Ok(match self.scalar(key)? {
            Scalar::Text(s) if !s.is_empty() => Some(s),
            _ => None,
        })
    }

    fn required(&self, key: &str) -> Result<String, RegistryConfigError> {
        self.string(key)?
            .ok_or_else(|| RegistryConfigError::Missing {
                path: self.path.to_string(),
                driver: self.driver.to_string(),
                key: key.to_string(),
                env: format!(
                    "REGISTRY_STORAGE_{}_{}",
                    self.driver.to_ascii_uppercase(),
                    key.to_ascii_uppercase()
                ),
            })
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, RegistryConfigError> {
        match self.params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => go_bool(s).map(Some).ok_or_else(|| {
                self.bad(
                    key,
                    &format!("{s:?} is not a boolean (true/false, yes/no, on/off)"),
                )
            }),
            Some(_) => Err(self.bad(key, "expected a boolean (true/false, yes/no, on/off)")),
        }
    }

    /// The filesystem driver's root: `fmt.Sprint` of the value, joined to the
    /// registry's paths with `path.Join`.
    fn fs_root(&self) -> Result<String, RegistryConfigError> {
        match self.scalar("rootdirectory")? {
            Scalar::Absent => Ok(DEFAULT_FS_ROOT.to_string()),
            Scalar::Null => Err(self.bad(
                "rootdirectory",
                "is null (empty): the registry then writes under the directory `<nil>` of its \
                 working directory; give the root's absolute path, or remove the key for /var/lib/registry",
            )),
            // `path.Join("", "/docker/...")` is `/docker/...`
            Scalar::Text(root) if root.is_empty() => Ok("/".to_string()),
            Scalar::Text(root) if !root.starts_with('/') => Err(self.bad(
                "rootdirectory",
                &format!(
                    "{root:?} is a relative path: the registry resolves it against its own working \
                     directory, which registry-gc cannot know; give the root's absolute path"
                ),
            )),
            // the registry joins the root to its paths as text (`path.Join`
            // makes `/srv/link/../x` `/srv/x`), while opening the root here
            // resolves a `..` after whatever link comes before it: two trees
            Scalar::Text(root) if root.split('/').any(|s| s == "." || s == "..") => {
                Err(self.bad(
                    "rootdirectory",
                    &format!(
                        "{root:?} has a `.` or `..` segment: the registry removes them from the \
                         text, the kernel resolves them after following symbolic links, and the \
                         two can be different trees; give the root's path without them"
                    ),
                ))
            }
            Scalar::Text(root) => Ok(root),
        }
    }

    /// A bucket or container name: required, and without a `/`. A STORAGE
    /// URL would read `prod/registry` as the bucket `prod` and a prefix
    /// `registry/` in it: another tree than the registry's.
    fn bucket(&self, key: &str) -> Result<String, RegistryConfigError> {
        let name = self.required(key)?;
        if name.contains('/') {
            return Err(self.bad(
                key,
                &format!(
                    "{name:?} has a `/`, which no bucket or container name has; a prefix within \
                     it is `rootdirectory`"
                ),
            ));
        }
        Ok(name)
    }

    /// The root as the driver uses it: a key prefix, taken literally. A `.`,
    /// `..` or empty segment would not come through a URL as it is (URLs
    /// resolve dot segments), and the store's paths have no empty ones: such
    /// a root is refused rather than turned into another prefix. A null root
    /// is no prefix on s3 and azure; the gcs driver, which takes `fmt.Sprint`
    /// of whatever is there, makes it `<nil>/` (`null_is_nil`): refused.
    fn root(&self, null_is_nil: bool) -> Result<String, RegistryConfigError> {
        let root = match self.scalar("rootdirectory")? {
            Scalar::Null if null_is_nil => {
                return Err(self.bad(
                    "rootdirectory",
                    "is null (empty): the registry then uses the prefix `<nil>/`; \
                     remove the key, or give the prefix",
                ))
            }
            Scalar::Text(r) => r.trim_matches('/').to_string(),
            Scalar::Absent | Scalar::Null => String::new(),
        };
        if !root.is_empty()
            && root
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(self.bad("rootdirectory", "a prefix with an empty, . or .. segment would not be the driver's prefix here; registry-gc refuses it (give STORAGE instead)"));
        }
        Ok(root)
    }

    fn option(&self, out: &mut Vec<RegistryOption>, key: &'static str, value: String, from: &str) {
        out.push(RegistryOption {
            key,
            value,
            origin: self.origin(from),
        });
    }
}

/// Booleans as the registry reads them: the plain scalars go-yaml v2 resolves
/// to a bool (YAML 1.1), or a string Go's `strconv.ParseBool` accepts.
pub fn go_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" | "t"
        | "T" | "1" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE"
        | "f" | "F" | "0" => Some(false),
        _ => None,
    }
}

/// What yaml.v2 (YAML 1.1, the registry's parser) makes of `s` as a plain
/// scalar, as `fmt.Sprint` writes it; `None` where it stays the text `s`.
/// Booleans, nulls, infinities and NaN by name; after a digit or a sign,
/// numbers as Go's `strconv` reads them with `_` removed (`ParseInt` with
/// base 0, where a leading `0` is octal, then `ParseUint`, then a float).
fn yaml_v2_plain(s: &str) -> Option<Scalar> {
    let text = |t: &str| Some(Scalar::Text(t.to_string()));
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return text("true")
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return text("false")
        }
        "" | "~" | "null" | "Null" | "NULL" => return Some(Scalar::Null),
        ".nan" | ".NaN" | ".NAN" => return text("NaN"),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return text("+Inf"),
        "-.inf" | "-.Inf" | "-.INF" => return text("-Inf"),
        _ => {}
    }
    let plain = match s.as_bytes()[0] {
        b'.' => s.to_string(),
        b'0'..=b'9' | b'+' | b'-' => s.replace('_', ""),
        _ => return None,
    };
    if let Some(int) = go_parse_int(&plain) {
        return text(&int);
    }
    if yaml_style_float(&plain) {
        if let Ok(f) = plain.parse::<f64>() {
            // Go's ParseFloat refuses what overflows; the scalar stays text
            if f.is_finite() {
                return text(&go_float(f));
            }
        }
    }
    None
}

/// `strconv.ParseInt(s, 0, 64)`, else `strconv.ParseUint(s, 0, 64)` (which
/// takes no sign), in decimal.
fn go_parse_int(s: &str) -> Option<String> {
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let signed = body.len() != s.len();
    let prefixed = |p: &str| {
        body.strip_prefix(p)
            .or_else(|| body.strip_prefix(&p.to_ascii_uppercase()))
    };
    let (radix, digits) = if let Some(d) = prefixed("0x") {
        (16, d)
    } else if let Some(d) = prefixed("0o") {
        (8, d)
    } else if let Some(d) = prefixed("0b") {
        (2, d)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u128::from_str_radix(digits, radix).ok()?;
    let fits = if negative {
        magnitude <= 1 << 63
    } else if signed {
        magnitude <= i64::MAX as u128
    } else {
        magnitude <= u64::MAX as u128
    };
    match (fits, negative && magnitude != 0) {
        (false, _) => None,
        (true, true) => Some(format!("-{magnitude}")),
        (true, false) => Some(magnitude.to_string()),
    }
}

/// yaml.v2's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn yaml_style_float(s: &str) -> bool {
    fn digits(s: &str) -> (&str, &str) {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s.split_at(end)
    }
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let rest = if let Some(frac) = s.strip_prefix('.') {
        let (d, rest) = digits(frac);
        if d.is_empty() {
            return false;
        }
        rest
    } else {
        let (d, rest) = digits(s);
        if d.is_empty() {
            return false;
        }
        rest.strip_prefix('.').map_or(rest, |f| digits(f).1)
    };
    match rest.strip_prefix(['e', 'E']) {
        None => rest.is_empty(),
        Some(exp) => {
            let (d, rest) = digits(exp.strip_prefix(['-', '+']).unwrap_or(exp));
            !d.is_empty() && rest.is_empty()
        }
    }
}

/// `fmt.Sprint` of a float64: `%g` with the shortest digits that read back
/// the same, in exponent form below 1e-4 and from 1e6 up (`1e+06`, `1e-05`,
/// `1000`, `1`).
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    // Rust's `{:e}` writes the same shortest digits: `1.2345e3`
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{point}{rest}e{exp_sign}{:02}", exp.abs());
    }
    // digits before the point
    let before = exp + 1;
    let n = digits.len() as i32;
    if before <= 0 {
        format!(
            "{sign}0.{}{digits}",
            "0".repeat(before.unsigned_abs() as usize)
        )
    } else if before >= n {
        format!("{sign}{digits}{}", "0".repeat((before - n) as usize))
    } else {
        let (int, frac) = digits.split_at(before as usize);
        format!("{sign}{int}.{frac}")
    }
}

/// STORAGE for the bucket and root: the root's characters that a URL path
/// would take otherwise (`%`, `#`, `?`, spaces, ...) percent-encoded, which
/// `open_storage` decodes back to the exact prefix.
fn url(scheme: &str, bucket: &str, root: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
    const PATH: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'\\')
        .add(b'^')
        .add(b'|')
        .add(b'[')
        .add(b']');
    if root.is_empty() {
        format!("{scheme}://{bucket}")
    } else {
        format!("{scheme}://{bucket}/{}", utf8_percent_encode(root, PATH))
    }
}

/// The endpoint a virtual-hosted request goes to, as the registry's SDK
/// (aws-sdk-go v1) makes it: the bucket always in front of the host name,
/// even one that begins with the bucket's name (`minio` at `minio.corp` is
/// `minio.minio.corp`). An endpoint given by address, which has no host name
/// to put the bucket in, is left as it is, for the storage to refuse.
fn bucket_in_host(endpoint: &str, bucket: &str) -> String {
    let Ok(mut url) = url::Url::parse(endpoint) else {
        return endpoint.to_string();
    };
    let Some(url::Host::Domain(host)) = url.host().map(|h| h.to_owned()) else {
        return endpoint.to_string();
    };
    if url.set_host(Some(&format!("{bucket}.{host}"))).is_err() {
        return endpoint.to_string();
    }
    let with_bucket = url.as_str();
    // Url adds a `/` path to a bare host; the endpoint had none
    if endpoint.ends_with('/') {
        with_bucket.to_string()
    } else {
        with_bucket.trim_end_matches('/').to_string()
    }
}

fn s3(p: &Params) -> Result<RegistryStorage, RegistryConfigError> {
    let bucket = p.bucket("bucket")?;
    let mut options = Vec::new();
    if let Some(region) = p.string("region")? {
        p.option(&mut options, "region", region, "region");
    }
    let secure = p.bool("secure")?.unwrap_or(true);
    let default_scheme = if secure { "https" } else { "http" };
    // the AWS SDK the registry uses takes the endpoint's own scheme, and
    // `secure` only when it has none
    let endpoint = p.string("regionendpoint")?.map(|e| {
        if e.contains("://") {
            e
        } else {
            format!("{default_scheme}://{e}")
        }
    });
    let scheme = endpoint
        .as_deref()
        .and_then(|e| e.split_once("://"))
        .map_or(default_scheme, |(scheme, _)| scheme);
    // distribution addresses buckets path-style when it has a regionendpoint,
    // virtual-hosted on AWS; `forcepathstyle` (distribution 3) says so outright
    let (path_style, path_style_from) = match p.bool("forcepathstyle")? {
        Some(true) => (true, "forcepathstyle"),
        // its SDK puts in the host only a bucket that fits there, whatever
        // forcepathstyle says: the rest it addresses path-style
        _ if bucket_in_host_name(&bucket, scheme).is_err() => (true, "bucket"),
        Some(false) => (false, "forcepathstyle"),
        None => (endpoint.is_some(), "forcepathstyle"),
    };
    if let Some(full) = endpoint {
        if secure && full.starts_with("http://") {
            p.option(&mut options, "allow_http", "true".into(), "regionendpoint");
        }
        let full = if path_style {
            full
        } else {
            bucket_in_host(&full, &bucket)
        };
        p.option(&mut options, "endpoint", full, "regionendpoint");
    }
    if !secure {
        p.option(&mut options, "allow_http", "true".into(), "secure");
    }
    p.option(
        &mut options,
        "virtual_hosted_style_request",
        (!path_style).to_string(),
        path_style_from,
    );
    if p.bool("skipverify")? == Some(true) {
        p.option(
            &mut options,
            "allow_invalid_certificates",
            "true".into(),
            "skipverify",
        );
    }
    // the registry uses the pair only when both are set; otherwise the SDK's
    // default chain (environment, web identity, instance metadata)
    if let (Some(a), Some(s)) = (p.string("accesskey")?, p.string("secretkey")?) {
        p.option(&mut options, "access_key_id", a, "accesskey");
        p.option(&mut options, "secret_access_key", s, "secretkey");
        if let Some(t) = p.string("sessiontoken")? {
            p.option(&mut options, "token", t, "sessiontoken");
        }
    }
    Ok(RegistryStorage {
        driver: p.driver.to_string(),
        url: url("s3", &bucket, &p.root(false)?),
        section: Some("s3"),
        options,
    })
}

fn azure(p: &Params) -> Result<RegistryStorage, RegistryConfigError> {
    let container = p.bucket("container")?;
    let mut options = Vec::new();
    let account = p.string("accountname")?;
    if let Some(a) = &account {
        p.option(&mut options, "account_name", a.clone(), "accountname");
    }
    if let Some(k) = p.string("accountkey")? {
        p.option(&mut options, "access_key", k, "accountkey");
    }
    // distribution 3 names the account URL outright; 2.8 builds it from the realm
    if let Some(url) = p.string("serviceurl")? {
        // the registry takes an http:// account URL (Azurite, a gateway) as given
        if url.to_ascii_lowercase().starts_with("http://") {
            p.option(&mut options, "allow_http", "true".into(), "serviceurl");
        }
        p.option(&mut options, "endpoint", url, "serviceurl");
    } else if let Some(realm) = p.string("realm")?.filter(|r| r != "core.windows.net") {
        let Some(a) = &account else {
            return Err(p.bad("realm", "needs accountname to build the account's URL"));
        };
        p.option(
            &mut options,
            "endpoint",
            format!("https://{a}.blob.{realm}"),
            "realm",
        );
    }
    // distribution 3: `credentials: {type: client_secret, clientid, tenantid, secret}`;
    // `default_credentials` and `shared_key` need nothing more here
    if let Some(Value::Mapping(c)) = p.params.get("credentials") {
        if c.get("type").and_then(Value::as_str) == Some("client_secret") {
            for (from, to) in [
                ("clientid", "client_id"),
                ("tenantid", "tenant_id"),
                ("secret", "client_secret"),
            ] {
                if let Some(v) = c.get(from).and_then(Value::as_str) {
                    options.push(RegistryOption {
                        key: to,
                        value: v.to_string(),
                        origin: format!("{}.{from}", p.origin("credentials")),
                    });
                }
            }
        }
    }
    Ok(RegistryStorage {
        driver: p.driver.to_string(),
        url: url("az", &container, &p.root(false)?),
        section: Some("azure"),
        options,
    })
}

fn gcs(p: &Params) -> Result<RegistryStorage, RegistryConfigError> {
    let bucket = p.bucket("bucket")?;
    let mut options = Vec::new();
    let keyfile = p.string("keyfile")?;
    let has_keyfile = keyfile.is_some();
    if let Some(k) = keyfile {
        p.option(&mut options, "service_account_path", k, "keyfile");
    }
    // an inline service-account key, as the JSON the key file would hold; the
    // driver reads it only without a keyfile (object_store refuses the pair)
    match p.params.get("credentials") {
        _ if has_keyfile => {}
        None | Some(Value::Null) => {}
        Some(Value::Mapping(c)) => {
            let json = serde_json::to_string(c)
                .map_err(|_| p.bad("credentials", "not a service-account key"))?;
            p.option(&mut options, "service_account_key", json, "credentials");
        }
        Some(_) => return Err(p.bad("credentials", "expected a mapping (a service-account key)")),
    }
    Ok(RegistryStorage {
        driver: p.driver.to_string(),
        url: url("gs", &bucket, &p.root(true)?),
        section: Some("gcs"),
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn opts(s: &RegistryStorage) -> Vec<(&str, &str)> {
        s.options
            .iter()
            .map(|o| (o.key, o.value.as_str()))
            .collect()
    }

    const FULL: &str = r#"
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /srv/registry
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
  cache:
    blobdescriptor: inmemory
http:
  addr: :5000
"#;

    #[test]
    fn filesystem_root_and_its_default() {
        let s = parse(FULL, "config.yml", env(&[])).unwrap();
        assert_eq!(
            (s.driver.as_str(), s.url.as_str(), s.section),
            ("filesystem", "/srv/registry", None)
        );
        let s = parse("storage: filesystem\n", "c.yml", env(&[])).unwrap();
        assert_eq!(s.url, "/var/lib/registry");
        let s = parse(
            "storage:\n  filesystem:\n  delete: {enabled: true}\n",
            "c.yml",
            env(&[]),
        )
        .unwrap();
        assert_eq!(s.url, "/var/lib/registry");
    }

    /// The root is a key prefix taken literally by the driver: one with
    /// characters a URL reads otherwise comes through STORAGE as it is, and
    /// one with `.`, `..` or empty segments (which a URL would resolve into
    /// another prefix) is refused, naming the setting.
    #[test]
    fn a_root_comes_through_exactly_or_is_refused() {
        use crate::config::BackendOptions;
        use crate::storage::open::open_storage;
        for root in ["reg#prod", "reg?x=1", "my registry", "a%20b", "ü/x"] {
            let text = format!("storage:\n  s3:\n    bucket: b\n    region: us-east-1\n    rootdirectory: \"/{root}/\"\n");
            let s = parse(&text, "c.yml", env(&[])).unwrap();
            let mut options = BackendOptions::default();
            options.push_section("s3", "endpoint", "http://127.0.0.1:1", "test");
            let storage = open_storage(&s.url, &options).unwrap_or_else(|e| panic!("{root}: {e}"));
            assert_eq!(
                storage.describe().split(" at ").next(),
                Some(format!("s3://b/{root}").as_str()),
                "{root}: {}",
                s.url
            );
        }
        for root in ["/a/../b", "/a/./b", "/a//b"] {
            let text = format!("storage:\n  s3:\n    bucket: b\n    rootdirectory: \"{root}\"\n");
            let err = parse(&text, "c.yml", env(&[])).unwrap_err().to_string();
            assert!(
                err.contains("storage.s3.rootdirectory") && err.contains("segment"),
                "{root}: {err}"
            );
        }
    }

    /// A `/` in a bucket or container name would make the rest of it a
    /// prefix, another tree than the registry's: refused, naming the setting
    /// (the file's key, or the variable that set it).
    #[test]
    fn a_bucket_or_container_with_a_slash_is_refused() {
        for (driver, key) in [("s3", "bucket"), ("azure", "container"), ("gcs", "bucket")] {
            let text = format!("storage:\n  {driver}:\n    {key}: prod/registry\n");
            let err = parse(&text, "c.yml", env(&[])).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("--registry-config c.yml storage.{driver}.{key}: "))
                    && err.contains("\"prod/registry\" has a `/`"),
                "{driver}: {err}"
            );
        }
        let var = "REGISTRY_STORAGE_S3_BUCKET";
        let err = parse(
            "storage:\n  s3:\n    bucket: b\n",
            "c.yml",
            env(&[(var, "a/b")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with(&format!("{var}: ")), "{err}");
    }

    /// The registry joins its root to its paths as text, the kernel resolves
    /// `..` after following links: a root with `.` or `..` segments is
    /// refused, naming the setting.
    #[test]
    fn a_filesystem_root_with_dot_segments_is_refused() {
        for root in [
            "/srv/link/../registry",
            "/srv/./registry",
            "/srv/registry/..",
        ] {
            let text = format!("storage:\n  filesystem:\n    rootdirectory: {root}\n");
            let err = parse(&text, "c.yml", env(&[])).unwrap_err().to_string();
            assert!(
                err.starts_with("--registry-config c.yml storage.filesystem.rootdirectory: ")
                    && err.contains("`.` or `..` segment"),
                "{root}: {err}"
            );
        }
        // a name that only begins with dots is a name
        let s = parse(
            "storage:\n  filesystem:\n    rootdirectory: /srv/..registry/.x\n",
            "c.yml",
            env(&[]),
        )
        .unwrap();
        assert_eq!(s.url, "/srv/..registry/.x");
    }

    #[test]
    fn s3_every_key() {
        let text = r#"
storage:
  s3:
    accesskey: AKIAEXAMPLE
    secretkey: s3cr3t
    region: eu-west-1
    regionendpoint: minio.internal:9000
    bucket: registry
    rootdirectory: /docker/root/
    secure: false
    skipverify: yes
    v4auth: true
    chunksize: 5242880
"#;
        let s = parse(text, "c.yml", env(&[])).unwrap();
        assert_eq!(s.url, "s3://registry/docker/root");
        assert_eq!(s.section, Some("s3"));
        assert_eq!(
            opts(&s),
            vec![
                ("region", "eu-west-1"),
                ("endpoint", "http://minio.internal:9000"),
                ("allow_http", "true"),
                ("virtual_hosted_style_request", "false"),
                ("allow_invalid_certificates", "true"),
                ("access_key_id", "AKIAEXAMPLE"),
                ("secret_access_key", "s3cr3t"),
            ]
        );
        assert_eq!(
            s.options[5].origin,
            "--registry-config c.yml storage.s3.accesskey"
        );

        // AWS proper: virtual-hosted, https, the default credential chain
        let s = parse(
            "storage:\n  s3aws:\n    bucket: reg\n    region: us-east-2\n    accesskey: onlyhalf\n",
            "c.yml",
            env(&[]),
        )
        .unwrap();
        assert_eq!(s.url, "s3://reg");
        assert_eq!(
            opts(&s),
            vec![
                ("region", "us-east-2"),
                ("virtual_hosted_style_request", "true")
            ]
        );
        // an endpoint with its own scheme keeps it; forcepathstyle overrides
        // the default, and the bucket goes in front of the host as the SDK
        // puts it there: always, even where the host begins with its name
        for (bucket, given, used) in [
            ("reg", "https://r2.example", "https://reg.r2.example"),
            (
                "minio",
                "https://minio.corp:9000",
                "https://minio.minio.corp:9000",
            ),
            ("reg", "http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ] {
            let text = format!(
                "storage:\n  s3:\n    bucket: {bucket}\n    regionendpoint: {given}\n    forcepathstyle: false\n"
            );
            let s = parse(&text, "c.yml", env(&[])).unwrap();
            let endpoint = opts(&s)
                .into_iter()
                .find(|(k, _)| *k == "endpoint")
                .map(|(_, v)| v.to_string());
            assert_eq!(endpoint.as_deref(), Some(used), "{text}");
            assert!(opts(&s).contains(&("virtual_hosted_style_request", "true")));
        }
    }

    /// distribution's s3 driver (aws-sdk-go v1, `hostCompatibleBucketName`)
    /// never puts a bucket whose name has a dot in the host over https: the
    /// wildcard certificate `*.s3.<region>.amazonaws.com` does not cover it.
    /// It addresses such a bucket path-style; so must we.
    #[test]
    fn a_dotted_bucket_on_aws_is_addressed_path_style() {
        let s = parse(
            "storage:\n  s3:\n    bucket: registry.example.com\n    region: eu-west-1\n",
            "c.yml",
            env(&[]),
        )
        .unwrap();
        assert!(
            opts(&s).contains(&("virtual_hosted_style_request", "false")),
            "{:?}",
            opts(&s)
        );
        assert_eq!(
            s.options.last().map(|o| o.origin.as_str()),
            Some("--registry-config c.yml storage.s3.bucket")
        );
        // whether forcepathstyle is unset or false, the bucket stays out of
        // the host where the SDK leaves it out: a dot over https (the
        // endpoint's scheme, else `secure`'s), or a name that is no DNS label set
        let path_styled = |bucket: &str, more: &str| {
            let text = format!("storage:\n  s3:\n    bucket: {bucket}\n{more}");
            let s = parse(&text, "c.yml", env(&[])).unwrap();
            let o = opts(&s);
            let path_style = o.contains(&("virtual_hosted_style_request", "false"));
            let endpoint = o
                .iter()
                .find(|(k, _)| *k == "endpoint")
                .map(|(_, v)| v.to_string());
            (path_style, endpoint)
        };
        let off = "    forcepathstyle: false\n";
        for (bucket, more, path_style, endpoint) in [
            ("registry.example.com", off, true, None),
            (
                "a.b",
                &format!("    regionendpoint: https://minio.corp\n{off}"),
                true,
                Some("https://minio.corp"),
            ),
            (
                "a.b",
                &format!("    regionendpoint: minio.corp\n{off}"),
                true,
                Some("https://minio.corp"),
            ),
            (
                "a.b",
                &format!("    regionendpoint: http://minio.corp\n{off}"),
                false,
                Some("http://a.b.minio.corp"),
            ),
            (
                "a.b",
                &format!("    regionendpoint: minio.corp\n    secure: false\n{off}"),
                false,
                Some("http://a.b.minio.corp"),
            ),
            ("a.b", "    secure: false\n", false, None),
            ("Registry", "", true, None),
            ("reg_bucket", off, true, None),
            ("ab", off, true, None),
            ("1.2.3.4", "    secure: false\n", true, None),
            ("a..b", "    secure: false\n", true, None),
            ("-reg", off, true, None),
            ("reg-1", "", false, None),
            (
                "reg-1",
                &format!("    regionendpoint: https://minio.corp\n{off}"),
                false,
                Some("https://reg-1.minio.corp"),
            ),
            ("a.b", "    forcepathstyle: true\n", true, None),
        ] {
            assert_eq!(
                path_styled(bucket, more),
                (path_style, endpoint.map(str::to_string)),
                "{bucket} {more}"
            );
        }
    }

    #[test]
    fn azure_and_gcs() {
        let text = "storage:\n  azure:\n    accountname: acct\n    accountkey: a2V5\n    container: reg\n    realm: core.chinacloudapi.cn\n    rootdirectory: /r\n";
        let s = parse(text, "c.yml", env(&[])).unwrap();
        assert_eq!((s.url.as_str(), s.section), ("az://reg/r", Some("azure")));
        assert_eq!(
            opts(&s),
            vec![
                ("account_name", "acct"),
                ("access_key", "a2V5"),
                ("endpoint", "https://acct.blob.core.chinacloudapi.cn")
            ]
        );
        // an http:// account URL is taken as given, as the registry does
        let s = parse("storage:\n  azure:\n    accountname: devstoreaccount1\n    container: reg\n    serviceurl: http://127.0.0.1:10000/devstoreaccount1\n", "c.yml", env(&[]))
            .unwrap();
        assert_eq!(
            opts(&s),
            vec![
                ("account_name", "devstoreaccount1"),
                ("allow_http", "true"),
                ("endpoint", "http://127.0.0.1:10000/devstoreaccount1")
            ]
        );
        let s = parse("storage:\n  azure:\n    accountname: acct\n    container: reg\n    realm: core.windows.net\n", "c.yml", env(&[]))
            .unwrap();
        assert_eq!(
            opts(&s),
            vec![("account_name", "acct")],
            "the public cloud needs no endpoint"
        );
        let text = "storage:\n  azure:\n    container: reg\n    serviceurl: http://127.0.0.1:10000/devstoreaccount1\n    credentials:\n      type: client_secret\n      clientid: cid\n      tenantid: tid\n      secret: sec\n";
        let s = parse(text, "c.yml", env(&[])).unwrap();
        assert_eq!(
            opts(&s),
            vec![
                ("allow_http", "true"),
                ("endpoint", "http://127.0.0.1:10000/devstoreaccount1"),
                ("client_id", "cid"),
                ("tenant_id", "tid"),
                ("client_secret", "sec")
            ]
        );

        let text = "storage:\n  gcs:\n    bucket: gb\n    keyfile: /etc/sa.json\n    rootdirectory: /gcs/prefix\n    chunksize: 5242880\n";
        let s = parse(text, "c.yml", env(&[])).unwrap();
        assert_eq!(
            (s.url.as_str(), s.section),
            ("gs://gb/gcs/prefix", Some("gcs"))
        );
        assert_eq!(opts(&s), vec![("service_account_path", "/etc/sa.json")]);
        let text = "storage:\n  gcs:\n    bucket: gb\n    credentials:\n      type: service_account\n      client_email: a@b\n";
        let s = parse(text, "c.yml", env(&[])).unwrap();
        let key: serde_json::Value = serde_json::from_str(&s.options[0].value).unwrap();
        assert_eq!(
            (s.options[0].key, key["client_email"].as_str()),
            ("service_account_key", Some("a@b"))
        );
    }

    /// distribution 2.8's gcs driver reads `keyfile` and, only without it,
    /// `credentials`; object_store refuses a path and a key together
    /// ("One of service account path or service account key may be provided.").
    #[test]
    fn a_gcs_keyfile_wins_over_inline_credentials() {
        let text = "storage:\n  gcs:\n    bucket: gb\n    keyfile: /etc/sa.json\n    credentials:\n      type: service_account\n      client_email: a@b\n";
        let s = parse(text, "c.yml", env(&[])).unwrap();
        assert_eq!(
            opts(&s)
                .iter()
                .filter(|(k, _)| k.starts_with("service_account"))
                .collect::<Vec<_>>(),
            vec![&("service_account_path", "/etc/sa.json")]
        );
    }

    #[test]
    fn environment_overrides_like_the_registry() {
        // a value in the file, overridden
        let s = parse(
            FULL,
            "c.yml",
            env(&[
                ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/elsewhere"),
                ("REGISTRY_HTTP_ADDR", ":1"),
            ]),
        )
        .unwrap();
        assert_eq!(s.url, "/elsewhere");
        // REGISTRY_STORAGE replaces the section, before (lexically) the keys that fill it
        let e = env(&[
            (
                "REGISTRY_STORAGE_S3_REGIONENDPOINT",
                "http://127.0.0.1:9000",
            ),
            ("REGISTRY_STORAGE_S3_BUCKET", "from-env"),
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_SECURE", "off"),
        ]);
        let s = parse(FULL, "c.yml", e).unwrap();
        assert_eq!((s.driver.as_str(), s.url.as_str()), ("s3", "s3://from-env"));
        assert!(opts(&s).contains(&("endpoint", "http://127.0.0.1:9000")));
        assert_eq!(
            s.options
                .iter()
                .find(|o| o.key == "endpoint")
                .unwrap()
                .origin,
            "REGISTRY_STORAGE_S3_REGIONENDPOINT"
        );
        // an existing key matches case-insensitively; a number is text for a string parameter
        let s = parse(
            "storage:\n  s3:\n    bucket: a\n",
            "c.yml",
            env(&[("REGISTRY_STORAGE_S3_BUCKET", "123")]),
        )
        .unwrap();
        assert_eq!(s.url, "s3://123");
        // another driver from the environment makes two: the registry refuses that too
        let err = parse(FULL, "c.yml", env(&[("REGISTRY_STORAGE_S3_BUCKET", "b")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exactly one storage driver")
                && err.contains("filesystem")
                && err.contains("s3"),
            "{err}"
        );
        // the environment alone is enough, as for the registry
        let s = parse(
            "version: 0.1\n",
            "c.yml",
            env(&[("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/x")]),
        )
        .unwrap();
        assert_eq!(s.url, "/x");
        // an empty value is null, as for the registry: unset
        let s = parse(
            "storage:\n  s3:\n    bucket: b\n    regionendpoint: http://x\n",
            "c.yml",
            env(&[("REGISTRY_STORAGE_S3_REGIONENDPOINT", "")]),
        )
        .unwrap();
        assert!(
            !opts(&s).iter().any(|(k, _)| *k == "endpoint"),
            "{:?}",
            opts(&s)
        );
        // variables that are not storage are ignored, and so are lowercase ones
        let s = parse(
            FULL,
            "c.yml",
            env(&[
                ("registry_storage_filesystem_rootdirectory", "/no"),
                ("REGISTRY_STORAGEX", "s3"),
            ]),
        )
        .unwrap();
        assert_eq!(s.url, "/srv/registry");
    }

    #[test]
    fn booleans_as_go_yaml_and_parsebool_read_them() {
        for (v, secure) in [
            ("false", false),
            ("False", false),
            ("FALSE", false),
            ("no", false),
            ("No", false),
            ("off", false),
            ("OFF", false),
            ("n", false),
            ("'f'", false),
            ("'0'", false),
            ("true", true),
            ("yes", true),
            ("On", true),
            ("Y", true),
            ("'T'", true),
            ("'1'", true),
        ] {
            let s = parse(
                &format!("storage:\n  s3:\n    bucket: b\n    secure: {v}\n"),
                "c.yml",
                env(&[]),
            )
            .unwrap();
            assert_eq!(
                opts(&s).contains(&("allow_http", "true")),
                !secure,
                "secure: {v}"
            );
        }
        for v in ["false", "no", "off", "FALSE"] {
            let s = parse(
                "storage:\n  s3:\n    bucket: b\n",
                "c.yml",
                env(&[("REGISTRY_STORAGE_S3_SECURE", v)]),
            )
            .unwrap();
            assert!(
                opts(&s).contains(&("allow_http", "true")),
                "REGISTRY_STORAGE_S3_SECURE={v}"
            );
        }
        // go-yaml makes an unquoted 1 a number, which the driver refuses
        let err = parse(
            "storage:\n  s3:\n    bucket: b\n    secure: 1\n",
            "c.yml",
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "--registry-config c.yml storage.s3.secure: expected a boolean (true/false, yes/no, on/off)");
        let err = parse(
            "storage:\n  s3:\n    bucket: b\n",
            "c.yml",
            env(&[("REGISTRY_STORAGE_S3_SKIPVERIFY", "maybe")]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "REGISTRY_STORAGE_S3_SKIPVERIFY: \"maybe\" is not a boolean (true/false, yes/no, on/off)");
    }

    #[test]
    fn clear_errors_naming_the_driver_key_and_file() {
        let err = |text: &str| {
            parse(text, "/etc/docker/registry/config.yml", env(&[]))
                .unwrap_err()
                .to_string()
        };
        for driver in ["swift", "oss", "inmemory"] {
            let e = err(&format!("storage:\n  {driver}:\n    container: x\n"));
            assert!(
                e.starts_with("--registry-config /etc/docker/registry/config.yml:")
                    && e.contains(&format!("{driver:?} is not supported")),
                "{e}"
            );
        }
        assert_eq!(
            err("storage:\n  gcs:\n    keyfile: /k\n"),
            "--registry-config /etc/docker/registry/config.yml: storage.gcs.bucket is not set (nor REGISTRY_STORAGE_GCS_BUCKET)"
        );
        assert!(err("storage:\n  azure:\n    accountname: a\n")
            .contains("storage.azure.container is not set"));
        assert!(err("storage:\n  delete:\n    enabled: true\n")
            .contains("no storage driver configured"));
        assert!(err("storage:\n  s3: [1]\n").contains("s3: expected a mapping"));
        assert!(err("storage:\n  s3:\n    bucket: [a, b]\n")
            .ends_with("storage.s3.bucket: expected a single value"));
        assert!(err("storage: [\n").contains("not YAML"));
        assert!(err("- a\n").contains("not a registry configuration"));
        let e = load(Path::new("/nonexistent/config.yml"), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--registry-config /nonexistent/config.yml:"),
            "{e}"
        );
    }

    #[test]
    fn secrets_are_not_in_errors() {
        let text = "storage:\n  s3:\n    bucket: b\n    accesskey: AKIASECRETID\n    secretkey: TOPSECRET\n    secure: 7\n";
        let e = parse(text, "c.yml", env(&[])).unwrap_err().to_string();
        assert!(
            !e.contains("TOPSECRET") && !e.contains("AKIASECRETID"),
            "{e}"
        );
    }

    #[test]
    fn yaml_anchors_and_merge_keys() {
        let text = "x-common: &c\n  bucket: shared\n  region: us-west-2\nstorage:\n  s3:\n    <<: *c\n    rootdirectory: /r\n";
        let s = parse(text, "c.yml", env(&[])).unwrap();
        assert_eq!(s.url, "s3://shared/r");
    }

    /// yaml.v2 applies a merge key where it stands: keys after it override
    /// what it merges, and what it merges overrides the keys before it (the
    /// registry, given `rootdirectory` and then `<<`, writes under the merged
    /// root). Of a list of merged mappings, the first wins.
    #[test]
    fn a_merge_key_overrides_the_keys_before_it_as_in_yaml_v2() {
        let text = "x: &c\n  rootdirectory: /merged\nstorage:\n  filesystem:\n    rootdirectory: /explicit\n    <<: *c\n";
        assert_eq!(parse(text, "c.yml", env(&[])).unwrap().url, "/merged");
        let text = "x: &c\n  rootdirectory: /merged\nstorage:\n  filesystem:\n    <<: *c\n    rootdirectory: /explicit\n";
        assert_eq!(parse(text, "c.yml", env(&[])).unwrap().url, "/explicit");
        let text = "a: &a\n  rootdirectory: /a\nb: &b\n  rootdirectory: /b\nstorage:\n  filesystem:\n    <<: [*a, *b]\n";
        assert_eq!(parse(text, "c.yml", env(&[])).unwrap().url, "/a");
        // merged mappings merge in turn
        let text = "a: &a\n  bucket: inner\nb: &b\n  <<: *a\n  rootdirectory: /r\nstorage:\n  s3:\n    <<: *b\n";
        assert_eq!(parse(text, "c.yml", env(&[])).unwrap().url, "s3://inner/r");
        let err = parse("storage:\n  s3:\n    <<: 1\n", "c.yml", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("merge"), "{err}");
    }

    /// The registry reads the first document of the file, after a byte-order
    /// mark if there is one; the rest is never parsed.
    #[test]
    fn the_first_document_after_a_bom_as_the_registry_reads_it() {
        let one = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /first\n";
        for text in [
            format!("\u{feff}{one}"),
            format!("---\n{one}---\n"),
            format!("{one}---\nstorage:\n  filesystem:\n    rootdirectory: /second\n"),
            format!("{one}...\n--- [unparsed\n"),
            one.replace('\n', "\r\n"),
        ] {
            let s = parse(&text, "c.yml", env(&[])).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(s.url, "/first", "{text:?}");
        }
        assert!(parse("", "c.yml", env(&[]))
            .unwrap_err()
            .to_string()
            .contains("no storage driver configured"));
    }

    /// An environment variable's path matches an existing key only where the
    /// key, upper-cased, is the segment as written (`strings.ToUpper(k) ==
    /// path[0]`); otherwise the registry creates the key anew, lowercase,
    /// replacing the file's: `REGISTRY_STORAGE_filesystem_MAXTHREADS` leaves
    /// the filesystem driver with no `rootdirectory`, so the default root.
    #[test]
    fn an_environment_segment_matches_a_key_only_in_upper_case() {
        let file = "storage:\n  filesystem:\n    rootdirectory: /srv/registry\n";
        let s = parse(
            file,
            "c.yml",
            env(&[("REGISTRY_STORAGE_filesystem_MAXTHREADS", "30")]),
        )
        .unwrap();
        assert_eq!(s.url, DEFAULT_FS_ROOT);
        let s = parse(
            "storage:\n  gcs:\n    bucket: gb\n    rootdirectory: /prod\n",
            "c.yml",
            env(&[("REGISTRY_STORAGE_gcs_BUCKET", "other")]),
        )
        .unwrap();
        assert_eq!(s.url, "gs://other");
        // the last segment is always (re)created lowercase
        let s = parse(
            file,
            "c.yml",
            env(&[("REGISTRY_STORAGE_FILESYSTEM_rootdirectory", "/x")]),
        )
        .unwrap();
        assert_eq!(s.url, "/x");
        // a key whose value is no mapping is not descended into: the variable is ignored
        let s = parse(
            file,
            "c.yml",
            env(&[("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY_X", "1")]),
        )
        .unwrap();
        assert_eq!(s.url, "/srv/registry");
    }

    /// The filesystem driver takes `fmt.Sprint` of the value: null (`rootdirectory:`,
    /// or the variable set empty) is the relative directory `<nil>`, and the
    /// empty string is `/` (`path.Join("", p)`). A relative root is relative
    /// to the registry's working directory, which registry-gc cannot know.
    #[test]
    fn a_filesystem_root_that_is_null_empty_or_relative() {
        let with_root =
            |root: &str| format!("storage:\n  filesystem:\n    rootdirectory: {root}\n");
        for root in ["", "~", "null"] {
            let err = parse(&with_root(root), "c.yml", env(&[]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("storage.filesystem.rootdirectory") && err.contains("<nil>"),
                "{root:?}: {err}"
            );
        }
        let err = parse(
            &with_root("/srv/registry"),
            "c.yml",
            env(&[("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY:") && err.contains("<nil>"),
            "{err}"
        );
        assert_eq!(
            parse(&with_root("\"\""), "c.yml", env(&[])).unwrap().url,
            "/"
        );
        for root in ["registry", "./registry", "8", "s3://bucket/root"] {
            let err = parse(&with_root(&format!("\"{root}\"")), "c.yml", env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("relative"), "{root}: {err}");
        }
        // the gcs driver makes a null root the prefix `<nil>/`
        let err = parse(
            "storage:\n  gcs:\n    bucket: gb\n    rootdirectory:\n",
            "c.yml",
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("storage.gcs.rootdirectory") && err.contains("<nil>"),
            "{err}"
        );
        // s3 and azure read a null root as none
        let s = parse(
            "storage:\n  s3:\n    bucket: b\n    rootdirectory: ~\n",
            "c.yml",
            env(&[]),
        )
        .unwrap();
        assert_eq!(s.url, "s3://b");
    }

    /// A value is the text `fmt.Sprint` makes of what yaml.v2 (YAML 1.1) read:
    /// unquoted `010` is the octal number 8, `1_000` is 1000, `1e6` is
    /// `1e+06`, `yes` is `true` (each checked against the registry: these
    /// are the roots it wrote under). A number the YAML parser here reads
    /// as the registry does is written as Go writes it; text that only
    /// unquoted would be something else is refused, since quoted or not is
    /// lost here, and the two are different roots.
    #[test]
    fn scalars_as_the_registry_reads_them() {
        let root_of = |v: &str| {
            parse(
                &format!("storage:\n  s3:\n    bucket: b\n    rootdirectory: {v}\n"),
                "c.yml",
                env(&[]),
            )
            .map(|s| s.url)
            .map_err(|e| e.to_string())
        };
        for (v, go) in [
            ("1e6", "1e+06"),
            ("1.0", "1"),
            ("1e3", "1000"),
            ("0.00001", "1e-05"),
            ("123456789.5", "1.234567895e+08"),
            ("0x1F", "31"),
            (".inf", "+Inf"),
            ("2024", "2024"),
            ("0.5", "0.5"),
            ("true", "true"),
            ("reg", "reg"),
            ("\"8\"", "8"),
            // quoted, since unquoted they would not be text here either
            ("\"~\"", "~"),
            ("\"1e6\"", "1e6"),
            ("'true'", "true"),
        ] {
            assert_eq!(root_of(v), Ok(format!("s3://b/{go}")), "{v}");
        }
        for (v, go) in [
            ("010", "8"),
            ("09", "9"),
            ("1_000", "1000"),
            ("yes", "true"),
            ("Off", "false"),
            ("\"0755\"", "493"),
        ] {
            let err = root_of(v).unwrap_err();
            assert!(
                err.contains("storage.s3.rootdirectory") && err.contains(go),
                "{v}: {err}"
            );
        }
        // the same from the environment, whose values are YAML too
        let err = parse(
            "storage:\n  s3:\n    bucket: b\n",
            "c.yml",
            env(&[("REGISTRY_STORAGE_S3_BUCKET", "007")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("REGISTRY_STORAGE_S3_BUCKET:") && err.contains('7'),
            "{err}"
        );
    }

    #[test]
    fn go_float_text() {
        for (f, go) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (1e21, "1e+21"),
            (-2.5, "-2.5"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(go_float(f), go, "{f}");
        }
    }
}
