//! Integration-test harness for registry-gc.
//!
//! Use from an integration test with `mod common;` (or from an example with
//! `#[path = "../tests/common/mod.rs"] mod common;`). Everything here is blocking
//! (`std::process` + `ureq`), no tokio.
//!
//! Modules:
//! - [`registry`]: start/stop the real `docker-registry` (distribution 2.8.2) on a root
//!   directory, write its config, run the reference garbage collector.
//! - [`http`]: the Registry API v2 client: blob uploads, manifest put/get/delete, abandoned
//!   uploads, tag listing, and [`http::pull_verify`].
//! - [`images`]: deterministic blobs and the exact manifest bytes of every manifest kind.
//! - [`model`]: a record of what was pushed (revisions, tags, manifests, blobs) and the
//!   expected outcome of a GC in each mode, computed from the documented semantics.
//! - [`tree`]: on-disk helpers: key listing, snapshots, copying, ageing mtimes, and direct
//!   edits of the tree (raw blobs, links, newline corruption, removals).
//! - [`scenarios`]: the `mixed` scenario and the small scenarios mirroring distribution's
//!   `registry/storage/garbagecollect_test.go`.
#![allow(dead_code)]
#![allow(unused_imports)]

#[cfg(test)]
pub mod cloud;
#[cfg(test)]
pub mod collector;
pub mod http;
pub mod images;
pub mod model;
pub mod registry;
pub mod scenarios;
pub mod tree;

pub use http::{
    blob_exists, catalog, delete_manifest, get_manifest, list_tags, pull_verify, put_manifest,
    start_abandoned_upload, upload_blob, ACCEPT_ALL_MANIFESTS,
};
pub use images::{
    config_blob, cosign_tag, empty_config_blob, layer_blob, sha256_digest, sha256_hex, Blob,
    Descriptor, Image, ImageKind, Index, IndexKind, Platform, PushedImage,
};
pub use model::{Expectation, Mode, Model};
pub use registry::{
    registry_binary, run_reference_gc, run_reference_gc_on_root, Registry, RegistryConfig,
};
pub use scenarios::{ImageRecord, Pusher, Scenario};
pub use tree::{blob_key, copy_tree, keys, set_mtime_recursive, snapshot, v2_dir, FileState};
