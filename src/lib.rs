//! registry-gc: a garbage collector for container registries stored in the CNCF
//! distribution ("docker registry v2") layout.
//!
//! The pipeline, one module per stage:
//! [`storage`] (list / get / delete-batch) -> [`layout`] (key to meaning) ->
//! [`inventory`] (one streamed listing) -> [`mark`] (tag links and manifests) ->
//! [`plan`] (pure: what to delete and why) -> [`sweep`] (batched deletes) ->
//! [`report`]. [`gc`] runs them in order; [`cli`] is the command line.

pub mod cache;
pub mod cli;
pub mod config;
pub mod digest;
pub mod digest_table;
pub mod error;
pub mod gc;
pub mod inventory;
pub mod layout;
pub mod listing;
pub mod manifest;
pub mod mark;
pub mod plan;
pub mod progress;
pub mod quarantine;
pub mod report;
pub mod storage;
pub mod sweep;
