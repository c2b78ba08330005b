//! The run's errors, and the one place that maps them to exit codes.

use crate::candidates::CandidatesError;
use crate::config::ConfigError;
use crate::guard::Refusal;
use crate::inventory::InventoryError;
use crate::mark::MarkError;
use crate::quarantine::QuarantineError;
use crate::recheck::RecheckError;
use crate::storage::open::OpenError;
use crate::storage::StorageError;
use crate::sweep::SweepError;

/// Exit codes, documented in README.md and `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The run completed (a dry run, or a sweep with every deletion done).
    Success = 0,
    /// An error stopped the run before the sweep: nothing was deleted.
    Error = 1,
    /// Bad command line or settings: nothing was done.
    Usage = 2,
    /// Refused for safety (not a registry, a link out of the root, a key
    /// outside the registry tree): nothing was deleted.
    Refused = 3,
    /// The sweep ran but some deletions failed; the report names them and the
    /// next run finishes the work. Also: something pushed or tagged during the
    /// sweep needs a key it deleted (named; pushing it again repairs it), or
    /// the report or metrics could not be written after the sweep.
    Incomplete = 4,
    /// `fsck` found problems (named in its output).
    Problems = 5,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Mark(#[from] MarkError),
    #[error(transparent)]
    Candidates(#[from] CandidatesError),
    #[error(transparent)]
    Recheck(#[from] RecheckError),
    #[error("refusing to sweep: {0}; nothing was deleted")]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Sweep(#[from] SweepError),
    #[error(transparent)]
    Quarantine(#[from] QuarantineError),
    #[error("--report {path}: {source}")]
    Report {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Read(#[from] crate::inspect::ReadError),
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config(_) => Exit::Usage,
            Error::Open(OpenError::Root { .. } | OpenError::Backend { .. }) => Exit::Error,
            Error::Open(_) => Exit::Usage,
            Error::Inventory(InventoryError::NotARegistry { .. }) => Exit::Refused,
            Error::Inventory(InventoryError::Listing(
                StorageError::Symlink { .. } | StorageError::Refused { .. },
            )) => Exit::Refused,
            Error::Inventory(InventoryError::Listing(_)) => Exit::Error,
            Error::Mark(MarkError::Read(
                StorageError::Symlink { .. } | StorageError::Refused { .. },
            )) => Exit::Refused,
            Error::Mark(_) => Exit::Error,
            Error::Candidates(CandidatesError(
                StorageError::Symlink { .. } | StorageError::Refused { .. },
            )) => Exit::Refused,
            Error::Candidates(_) => Exit::Error,
            Error::Recheck(RecheckError::Storage(
                StorageError::Symlink { .. } | StorageError::Refused { .. },
            )) => Exit::Refused,
            Error::Recheck(_) => Exit::Error,
            Error::Refused(_) => Exit::Refused,
            Error::Sweep(SweepError::OutsideRegistryTree { .. }) => Exit::Refused,
            Error::Sweep(SweepError::QuarantineRecord(_)) => Exit::Error,
            Error::Quarantine(
                QuarantineError::BadRunId { .. } | QuarantineError::NoSuchRun { .. },
            ) => Exit::Usage,
            Error::Quarantine(QuarantineError::OutsideRegistryTree { .. }) => Exit::Refused,
            Error::Quarantine(QuarantineError::Storage(
                StorageError::Symlink { .. } | StorageError::Refused { .. },
            )) => Exit::Refused,
            Error::Quarantine(_) => Exit::Error,
            Error::Report { .. } => Exit::Error,
            Error::Usage(_) => Exit::Usage,
            Error::Read(crate::inspect::ReadError(
                StorageError::Symlink { .. } | StorageError::Refused { .. },
            )) => Exit::Refused,
            Error::Read(_) => Exit::Error,
        }
    }
}
