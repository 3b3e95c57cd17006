//! Errors of the sans-IO core.

use crate::id::DocumentId;
use crate::wire::DecodeError;

/// A peer sent something unusable. Reported as [`Event::Protocol`](super::Event::Protocol) and, where
/// useful, as an `error` message to that peer; the peer's other documents keep syncing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame did not decode.
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    /// A message other than the handshake arrived before the handshake completed.
    #[error("`{0}` received before the handshake completed")]
    BeforeHandshake(&'static str),
    /// No protocol version in common.
    #[error("no common protocol version (peer offers {0:?}, we speak [\"1\"])")]
    UnsupportedVersion(Vec<String>),
    /// A second `join`/`peer` on an established connection.
    #[error("unexpected `{0}` on an established connection")]
    UnexpectedHandshake(&'static str),
    /// The Automerge sync message in `data` did not decode.
    #[error("sync message for {doc} does not decode: {reason}")]
    BadSyncMessage {
        /// The document.
        doc: DocumentId,
        /// Automerge's error.
        reason: String,
    },
    /// Applying the sync message failed (e.g. invalid changes).
    #[error("sync message for {doc} could not be applied: {reason}")]
    SyncApply {
        /// The document.
        doc: DocumentId,
        /// Automerge's error.
        reason: String,
    },
    /// The message carries more changes with unknown dependencies than the document may queue.
    #[error(
        "sync message for {doc} refused: {count} changes with missing dependencies (limit {limit})"
    )]
    TooManyMissingDeps {
        /// The document.
        doc: DocumentId,
        /// Orphans it would leave queued.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The message's changes would decompress beyond the limit (a compression bomb).
    #[error("sync message for {doc} refused: its changes decompress to more than {limit} bytes")]
    DecompressedTooLarge {
        /// The document.
        doc: DocumentId,
        /// The limit.
        limit: u64,
    },
    /// The message's changes declare more operations than the limit (run-length encoding lets a
    /// few bytes declare millions of operations).
    #[error("sync message for {doc} refused: its changes carry more than {limit} operations")]
    TooManyOps {
        /// The document.
        doc: DocumentId,
        /// The limit.
        limit: u64,
    },
    /// The peer may not write this document; its changes were refused.
    #[error("changes to {0} refused: read-only access")]
    WriteDenied(DocumentId),
    /// The peer reported an error.
    #[error("peer reported an error: {0}")]
    Remote(String),
    /// The handshake did not complete in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer id is bound to another authenticated principal.
    #[error("peer id `{0}` is bound to another principal")]
    PeerIdTaken(crate::id::PeerId),
    /// A region-replication message arrived on a connection that is not a region link.
    #[error("`{0}` refused: this connection is not an authenticated region link")]
    NotRegionLink(&'static str),
    /// An anti-entropy digest is malformed.
    #[error("malformed anti-entropy digest: {0}")]
    BadDigest(String),
    /// Work on the document panicked while processing this peer's message; the document was
    /// reloaded from storage and the connection is closed.
    #[error("{reason}")]
    Internal {
        /// The document.
        doc: DocumentId,
        /// What happened.
        reason: String,
    },
    /// The sync message declares a structure Automerge would mishandle (e.g. a Bloom filter
    /// with zero bits per entry or millions of probes); refused before Automerge sees it.
    #[error("sync message for {doc} refused: {reason}")]
    MalformedSyncMessage {
        /// The document.
        doc: DocumentId,
        /// What is wrong.
        reason: String,
    },
    /// A per-principal quota is used up (see [`Quotas`](super::Quotas)); nothing was applied.
    #[error("quota exceeded: {what}{}", doc.map(|d| format!(" (document {d})")).unwrap_or_default())]
    QuotaExceeded {
        /// Which quota.
        what: &'static str,
        /// The document concerned, if any.
        doc: Option<DocumentId>,
    },
    /// The handshake claims malformed ids.
    #[error("malformed handshake: {0}")]
    BadHandshake(String),
    /// The peer may not delete this document (it needs write access; only servers accept
    /// deletion requests, only servers and region links announce deletions).
    #[error("deletion of {0} refused: it needs write access, from a client to a server")]
    DeleteDenied(DocumentId),
    /// A `concord-deleted` carries an unreadable tombstone.
    #[error("{0}")]
    BadTombstone(String),
    /// Too many errors on this connection: it is closed.
    #[error("too many protocol errors")]
    TooManyErrors,
}

/// Errors of the local API of the core.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The document is not resident and ready (call `find` first and wait for it).
    #[error("document {0} is not loaded")]
    NotLoaded(DocumentId),
    /// The document already exists.
    #[error("document {0} already exists")]
    AlreadyExists(DocumentId),
    /// The document could not be loaded (storage error or corrupt data).
    #[error("document {doc} is unusable: {reason}")]
    Failed {
        /// The document.
        doc: DocumentId,
        /// Why.
        reason: String,
    },
    /// The change closure or Automerge failed; nothing was applied.
    #[error("change failed: {0}")]
    Change(String),
    /// The document was deleted.
    #[error("document {0} was deleted")]
    Deleted(DocumentId),
    /// The connection is unknown or closed.
    #[error("unknown connection")]
    UnknownConnection,
}
