//! registry-gc: a garbage collector for container registries stored in the CNCF
//! distribution ("docker registry v2") layout.
//!
//! The pipeline, one module per stage:
//! [`storage`] (list / get / delete-batch) -> [`layout`] (key to meaning) ->
//! [`inventory`] (one streamed listing) -> [`mark`] (tag links and manifests) ->
//! [`plan`] (pure: what to delete and why; [`candidates`] sizes and ages what a
//! filesystem's listing only named) -> [`recheck`] (what changed since the
//! listing) -> [`guard`] (plans that look like mistakes) -> [`sweep`]
//! (batched deletes, in [`phases`]) -> [`report`]. [`gc`] runs them in order;
//! [`cli`] is the command line.

pub mod bits;
pub mod cache;
pub mod candidates;
pub mod cli;
pub mod config;
pub mod digest;
pub mod digest_table;
pub mod du;
pub mod error;
pub mod fsck;
pub mod gc;
pub mod generate;
pub mod guard;
pub mod inspect;
pub mod inventory;
pub mod layout;
pub mod listing;
pub mod manifest;
pub mod mark;
pub mod metrics;
pub mod phases;
pub mod plan;
pub mod progress;
pub mod quarantine;
pub mod recheck;
pub mod registry_config;
pub mod report;
pub mod say;
pub mod storage;
pub mod sweep;
pub mod table;
