//! What the core asks its driver to do ([`Effect`]) and what it reports ([`Event`]).

use automerge::ChangeHash;

use crate::id::{ConnId, DocumentId, PeerId};
use crate::storage::{ChunkKey, StorageError, StoredDocument};
use crate::wire::PeerMetadata;

use super::ProtocolError;

/// Identifies a storage operation the driver must execute and report back with
/// [`Core::handle_storage_result`](super::Core::handle_storage_result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// Identifies a pending local request (a commit or a find); resolved by an [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// A storage operation, as data.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StorageOp {
    /// Load everything stored for a document. Reply: [`StorageReply::Loaded`].
    Load {
        /// The document.
        doc: DocumentId,
    },
    /// Append an incremental chunk. Reply: [`StorageReply::Done`].
    Append {
        /// The document.
        doc: DocumentId,
        /// Chunk key.
        key: ChunkKey,
        /// Chunk bytes.
        bytes: Vec<u8>,
    },
    /// Write a snapshot and delete the chunks it covers, in one transaction. Reply: `Done`.
    Compact {
        /// The document.
        doc: DocumentId,
        /// Snapshot key.
        key: ChunkKey,
        /// Snapshot bytes.
        bytes: Vec<u8>,
        /// Chunks the snapshot replaces.
        covered: Vec<ChunkKey>,
    },
    /// Persist the sync state with a peer's storage. Reply: `Done`.
    PutSyncState {
        /// The document.
        doc: DocumentId,
        /// The remote storage id.
        peer: crate::id::StorageId,
        /// `automerge::sync::State::encode()`.
        state: Vec<u8>,
    },
    /// Record the document's committed heads in the heads index (region servers only; see
    /// [`Storage::put_heads`](crate::storage::Storage::put_heads)). Reply: `Done`.
    PutHeads {
        /// The document.
        doc: DocumentId,
        /// 32 bytes per change hash.
        heads: Vec<u8>,
    },
}

impl StorageOp {
    /// Executes the operation on in-memory storage, synchronously (simulations, tests, examples).
    pub fn run_on(
        self,
        disk: &crate::storage::MemoryStorage,
    ) -> Result<StorageReply, StorageError> {
        match self {
            Self::Load { doc } => disk.load_sync(&doc).map(StorageReply::Loaded),
            Self::Append { doc, key, bytes } => disk
                .append_sync(&doc, key, &bytes)
                .map(|()| StorageReply::Done),
            Self::Compact {
                doc,
                key,
                bytes,
                covered,
            } => disk
                .compact_sync(&doc, key, &bytes, &covered)
                .map(|()| StorageReply::Done),
            Self::PutSyncState { doc, peer, state } => disk
                .put_sync_state_sync(&doc, &peer, &state)
                .map(|()| StorageReply::Done),
            Self::PutHeads { doc, heads } => disk
                .put_heads_sync(&doc, &heads)
                .map(|()| StorageReply::Done),
        }
    }

    /// Executes the operation on any [`Storage`](crate::storage::Storage) backend (the tokio
    /// driver's storage task, benchmarks).
    pub async fn run_async(
        self,
        storage: &dyn crate::storage::Storage,
    ) -> Result<StorageReply, StorageError> {
        match self {
            Self::Load { doc } => storage.load(&doc).await.map(StorageReply::Loaded),
            Self::Append { doc, key, bytes } => storage
                .append(&doc, key, &bytes)
                .await
                .map(|()| StorageReply::Done),
            Self::Compact {
                doc,
                key,
                bytes,
                covered,
            } => storage
                .compact(&doc, key, &bytes, &covered)
                .await
                .map(|()| StorageReply::Done),
            Self::PutSyncState { doc, peer, state } => storage
                .put_sync_state(&doc, &peer, &state)
                .await
                .map(|()| StorageReply::Done),
            Self::PutHeads { doc, heads } => storage
                .put_heads(&doc, &heads)
                .await
                .map(|()| StorageReply::Done),
        }
    }

    /// The document the operation is about.
    pub fn doc(&self) -> DocumentId {
        match self {
            Self::Load { doc }
            | Self::Append { doc, .. }
            | Self::Compact { doc, .. }
            | Self::PutSyncState { doc, .. }
            | Self::PutHeads { doc, .. } => *doc,
        }
    }
}

/// The driver's answer to a [`StorageOp`].
#[derive(Debug)]
#[non_exhaustive]
pub enum StorageReply {
    /// The answer to `Load`.
    Loaded(StoredDocument),
    /// A write committed.
    Done,
}

/// A close code and reason for a connection the core is ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// WebSocket close code (1000 normal, 1002 protocol error, 1008 policy, 1009 too big).
    pub code: u16,
    /// Human-readable reason.
    pub reason: String,
}

/// Something the driver must do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Effect {
    /// Send one binary frame.
    Send {
        /// The connection.
        conn: ConnId,
        /// The encoded message.
        bytes: Vec<u8>,
    },
    /// Close the connection (then call `handle_disconnect`).
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Execute a storage operation and report its result.
    Storage {
        /// Report the result under this id.
        id: OpId,
        /// The operation.
        op: StorageOp,
    },
    /// Tell the application something.
    Event(Event),
}

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// This replica's own write.
    Local,
    /// Received from peers.
    Remote,
}

/// How a `find` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FindOutcome {
    /// The document is available locally now.
    Found,
    /// Neither storage nor any connected peer has it (it is still delivered if it arrives later).
    Unavailable,
    /// Loading it failed (storage error or corrupt data).
    Failed(String),
}

/// A notification for the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A document's heads changed (committed to local storage).
    DocChanged {
        /// The document.
        doc: DocumentId,
        /// Its new heads.
        heads: Vec<ChangeHash>,
        /// Local write or remote sync.
        origin: Origin,
    },
    /// A local change (or create) is committed to storage, or failed to commit.
    Committed {
        /// The change's ticket.
        ticket: Ticket,
        /// `Ok(heads)` once durable, `Err` when storage failed.
        result: Result<Vec<ChangeHash>, String>,
    },
    /// A `find` resolved.
    FindResolved {
        /// The find's ticket.
        ticket: Ticket,
        /// The document.
        doc: DocumentId,
        /// The outcome.
        outcome: FindOutcome,
    },
    /// A peer completed the handshake.
    PeerConnected {
        /// The connection.
        conn: ConnId,
        /// The remote peer.
        peer_id: PeerId,
        /// Its metadata.
        metadata: PeerMetadata,
    },
    /// A connection ended.
    PeerDisconnected {
        /// The connection.
        conn: ConnId,
        /// The remote peer, if the handshake had completed.
        peer_id: Option<PeerId>,
    },
    /// Ephemeral data arrived (presence, cursors).
    Ephemeral {
        /// The document.
        doc: DocumentId,
        /// Original sender.
        from: PeerId,
        /// Sender's session.
        session_id: String,
        /// The data.
        data: Vec<u8>,
    },
    /// A peer misbehaved or sent something we could not use; the connection may go on.
    Protocol {
        /// The connection.
        conn: ConnId,
        /// What went wrong.
        error: ProtocolError,
    },
    /// A storage operation failed.
    StorageFailed {
        /// The document.
        doc: DocumentId,
        /// The error.
        error: String,
    },
    /// A document was dropped from memory (it stays in storage).
    Evicted {
        /// The document.
        doc: DocumentId,
    },
    /// What a peer told us about the heads other storages (servers, regions) have committed
    /// changed; [`Core::durability`](super::Core::durability) answers what is durable where.
    RemoteHeads {
        /// The document.
        doc: DocumentId,
    },
}

impl From<StorageError> for FindOutcome {
    fn from(e: StorageError) -> Self {
        Self::Failed(e.to_string())
    }
}
