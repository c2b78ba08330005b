//! Messages for the operator on stderr, from every command. Plain lines
//! (`registry-gc: ...`), or, under `--log-format json`, events of the JSON log,
//! so that stderr stays one object per line for a log collector.

use std::sync::atomic::{AtomicBool, Ordering};

static JSON_LOG: AtomicBool = AtomicBool::new(false);

/// From now on, messages go through the JSON log (`--log-format json`).
pub fn use_json_log() {
    JSON_LOG.store(true, Ordering::Relaxed);
}

/// Something that stopped a command, or that it leaves undone.
pub fn error(msg: &str) {
    if JSON_LOG.load(Ordering::Relaxed) {
        tracing::error!("{msg}");
    } else {
        eprintln!("registry-gc: {msg}");
    }
}

/// Something to look at; the command went on.
pub fn warning(msg: &str) {
    if JSON_LOG.load(Ordering::Relaxed) {
        tracing::warn!("{msg}");
    } else {
        eprintln!("registry-gc: warning: {msg}");
    }
}
