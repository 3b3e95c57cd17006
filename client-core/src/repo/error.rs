//! Errors of the native `Repo` API.

use crate::core::CoreError;
use crate::id::DocumentId;
use crate::storage::StorageError;

/// Errors of [`Repo`](super::Repo) and [`DocHandle`](super::DocHandle).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// Neither local storage nor any connected peer has the document.
    #[error("document {0} is unavailable (not stored locally and no connected peer has it)")]
    Unavailable(DocumentId),
    /// The document was deleted (by this replica or a peer).
    #[error("document {0} was deleted")]
    Deleted(DocumentId),
    /// The engine refused the operation.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// Storage failed; the write was not acknowledged.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A local write could not be committed.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// The document could not be loaded.
    #[error("document {doc} could not be loaded: {reason}")]
    LoadFailed {
        /// The document.
        doc: DocumentId,
        /// Why.
        reason: String,
    },
    /// The repo was shut down.
    #[error("the repo is shut down")]
    Closed,
    /// A durability wait timed out; the write is committed locally and wherever `reached` says.
    #[error("timed out after {timeout:?} waiting for durability {wanted}: {reached}")]
    NotDurable {
        /// The level asked for.
        wanted: crate::core::Durability,
        /// How long it waited.
        timeout: std::time::Duration,
        /// Where the change is known to be committed.
        reached: crate::core::DurabilityReport,
    },
    /// A `regions:N` wait cannot succeed through the connected server: the regions holding the
    /// change plus those the server reaches (it told us, `concord-regions`) are fewer than N, and
    /// have been for a grace period. The write is committed locally and wherever `reached` says;
    /// it replicates when the links heal (or through another region, after a failover).
    #[error(
        "durability {wanted} cannot be reached now: {server}; the change is {reached} and will replicate when the region links heal"
    )]
    RegionsUnreachable {
        /// The level asked for.
        wanted: crate::core::Durability,
        /// What the server reaches.
        server: crate::core::RegionReach,
        /// Where the change is known to be committed.
        reached: crate::core::DurabilityReport,
    },
    /// A read closure panicked (the panic was caught; nothing changed).
    #[error("the read panicked: {0}")]
    Panicked(String),
    /// A wait did not finish in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, &'static str),
    /// A policy-aware read or write failed.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// Automerge rejected a read (bad heads, bad object).
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// A history read, diff or restore was refused (unknown heads, a stale cursor, ...).
    /// Boxed to keep `RepoError` small.
    #[error(transparent)]
    History(Box<crate::history::HistoryError>),
    /// A request to the server's JSON API failed (listing, authors). Boxed to keep `RepoError`
    /// small.
    #[error(transparent)]
    Remote(Box<super::remote::RemoteError>),
}

impl From<crate::history::HistoryError> for RepoError {
    fn from(e: crate::history::HistoryError) -> Self {
        Self::History(Box::new(e))
    }
}

impl From<super::remote::RemoteError> for RepoError {
    fn from(e: super::remote::RemoteError) -> Self {
        Self::Remote(Box::new(e))
    }
}
