//! Turns the STORAGE argument into a backend.

use std::path::Path;

use super::fs::FsStorage;
use super::{Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("STORAGE {spec:?}: {scheme}:// storage is not supported by this version of registry-gc; use a local path or file:// URL")]
    UnsupportedScheme { spec: String, scheme: String },
    #[error("STORAGE {spec:?}: not a valid URL: {reason}")]
    BadUrl { spec: String, reason: String },
    #[error("STORAGE {spec:?}: cannot open the registry root: {source}")]
    Root { spec: String, source: StorageError },
}

/// Opens `spec`: a directory path, or a `file://` URL.
pub fn open_storage(spec: &str) -> Result<Box<dyn Storage>, OpenError> {
    let path = match spec.split_once("://") {
        None => Path::new(spec).to_path_buf(),
        Some(("file", _)) => url::Url::parse(spec)
            .map_err(|e| OpenError::BadUrl { spec: spec.to_string(), reason: e.to_string() })?
            .to_file_path()
            .map_err(|()| OpenError::BadUrl { spec: spec.to_string(), reason: "not an absolute local path".into() })?,
        Some((scheme, _)) => {
            return Err(OpenError::UnsupportedScheme { spec: spec.to_string(), scheme: scheme.to_string() });
        }
    };
    let fs = FsStorage::open(&path).map_err(|source| OpenError::Root { spec: spec.to_string(), source })?;
    Ok(Box::new(fs))
}
