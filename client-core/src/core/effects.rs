//! What the core asks its driver to do ([`Effect`]) and what it reports ([`Event`]).

use automerge::ChangeHash;

use crate::id::{ConnId, DocumentId, PeerId};
use crate::storage::{ChunkKey, Storage, StorageError, StoredDocument, WriteOp};
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
    /// Load the chunks of a document with these keys (empty: every chunk; keys compacted away
    /// meanwhile are missing from the answer). Reply: [`StorageReply::Loaded`], without sync
    /// states.
    LoadChunks {
        /// The document.
        doc: DocumentId,
        /// The chunk keys.
        keys: Vec<ChunkKey>,
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
    /// Record a deletion tombstone. Reply: `Done`.
    PutTombstone {
        /// The document.
        doc: DocumentId,
        /// The tombstone, encoded.
        record: Vec<u8>,
    },
    /// Forget a tombstone past its retention. Reply: `Done`.
    RemoveTombstone {
        /// The document.
        doc: DocumentId,
    },
    /// Record who wrote changes. Reply: `Done`.
    PutAuthors {
        /// The document.
        doc: DocumentId,
        /// The authors.
        authors: Vec<crate::storage::ChangeAuthor>,
    },
    /// Add a document to a principal's list. Reply: `Done`.
    AddOwnedDoc {
        /// The document.
        doc: DocumentId,
        /// The principal that created it.
        principal: String,
    },
    /// Delete everything stored for a document but its tombstone. Reply: `Done`.
    Delete {
        /// The document.
        doc: DocumentId,
    },
}

/// What a [`StorageOp`] does to storage.
enum Access<'a> {
    Load(&'a DocumentId),
    LoadChunks(&'a DocumentId, &'a [ChunkKey]),
    Write(WriteOp<'a>),
}

/// Queued operations to execute together ([`StorageOp::gather`]), each with the caller's tag.
#[derive(Debug)]
pub struct Gathered<T> {
    /// The operations, in queue order: one load, or a run of writes.
    pub group: Vec<(T, StorageOp)>,
    /// The load that ended the run of writes: it runs next.
    pub held: Option<(T, StorageOp)>,
}

/// At most this many operations go into one group commit ([`StorageOp::gather`]).
pub const MAX_BATCH_OPS: usize = 256;
/// A group commit stops taking writes once they carry this many bytes.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

impl StorageOp {
    fn access(&self) -> Access<'_> {
        Access::Write(match self {
            Self::Load { doc } => return Access::Load(doc),
            Self::LoadChunks { doc, keys } => return Access::LoadChunks(doc, keys),
            Self::Append { doc, key, bytes } => WriteOp::Append {
                doc,
                key: *key,
                bytes,
            },
            Self::Compact {
                doc,
                key,
                bytes,
                covered,
            } => WriteOp::Compact {
                doc,
                key: *key,
                snapshot: bytes,
                covered,
            },
            Self::PutSyncState { doc, peer, state } => WriteOp::PutSyncState { doc, peer, state },
            Self::PutHeads { doc, heads } => WriteOp::PutHeads { doc, heads },
            Self::PutTombstone { doc, record } => WriteOp::PutTombstone { doc, record },
            Self::RemoveTombstone { doc } => WriteOp::RemoveTombstone { doc },
            Self::PutAuthors { doc, authors } => WriteOp::PutAuthors { doc, authors },
            Self::AddOwnedDoc { doc, principal } => WriteOp::AddOwnedDoc { doc, principal },
            Self::Delete { doc } => WriteOp::Delete { doc },
        })
    }

    /// The operation as a [`WriteOp`]; `None` for a load.
    pub fn as_write(&self) -> Option<WriteOp<'_>> {
        match self.access() {
            Access::Write(write) => Some(write),
            Access::Load(_) | Access::LoadChunks(..) => None,
        }
    }

    /// Executes the operation on in-memory storage, synchronously (simulations, tests, examples).
    pub fn run_on(
        self,
        disk: &crate::storage::MemoryStorage,
    ) -> Result<StorageReply, StorageError> {
        match self.access() {
            Access::Load(doc) => disk.load_sync(doc).map(StorageReply::Loaded),
            Access::LoadChunks(doc, keys) => disk
                .load_sync(doc)
                .map(|s| StorageReply::Loaded(crate::storage::only_chunks(s, keys))),
            Access::Write(write) => disk.write_batch_sync(&[write]).map(|()| StorageReply::Done),
        }
    }

    /// Executes the operation on any [`Storage`] backend, alone (its own transaction).
    pub async fn run_async(self, storage: &dyn Storage) -> Result<StorageReply, StorageError> {
        self.run_alone(storage).await
    }

    async fn run_alone(&self, storage: &dyn Storage) -> Result<StorageReply, StorageError> {
        match self.access() {
            Access::Load(doc) => storage.load(doc).await.map(StorageReply::Loaded),
            Access::LoadChunks(doc, keys) => storage.load_chunks(doc, keys).await.map(|chunks| {
                StorageReply::Loaded(StoredDocument {
                    chunks,
                    sync_states: Vec::new(),
                })
            }),
            Access::Write(write) => write
                .write_alone(storage)
                .await
                .map(|()| StorageReply::Done),
        }
    }

    /// Takes the next group of queued operations to execute together: `first`, then, when
    /// `first` is a write, the writes `next` yields after it, up to [`MAX_BATCH_OPS`] operations
    /// and about [`MAX_BATCH_BYTES`] bytes. A load ends the group and is held apart, to run after
    /// it, so every operation still runs in queue order.
    pub fn gather<T>(
        first: (T, StorageOp),
        mut next: impl FnMut() -> Option<(T, StorageOp)>,
    ) -> Gathered<T> {
        let Some(mut bytes) = first.1.as_write().map(|w| w.payload_len()) else {
            return Gathered {
                group: vec![first],
                held: None,
            };
        };
        let mut group = vec![first];
        while group.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
            let Some(item) = next() else { break };
            match item.1.as_write() {
                Some(w) => bytes += w.payload_len(),
                None => {
                    return Gathered {
                        group,
                        held: Some(item),
                    };
                }
            }
            group.push(item);
        }
        Gathered { group, held: None }
    }

    /// Executes `ops` in order: each run of consecutive writes as ONE transaction
    /// ([`Storage::write_batch`]; a lone write on its own), each load alone. Returns every
    /// operation's result, in order, once its write committed. When a batch fails, its writes are
    /// retried one by one, each its own transaction, so the error reaches only the write that
    /// caused it and the others still commit (writes are idempotent: see [`WriteOp`]).
    pub async fn run_batch_async(
        ops: Vec<StorageOp>,
        storage: &dyn Storage,
    ) -> Vec<Result<StorageReply, StorageError>> {
        let mut results = Vec::with_capacity(ops.len());
        let mut rest = ops.as_slice();
        while let Some((op, tail)) = rest.split_first() {
            let writes: Vec<WriteOp<'_>> = rest.iter().map_while(StorageOp::as_write).collect();
            if writes.len() < 2 {
                results.push(op.run_alone(storage).await);
                rest = tail;
                continue;
            }
            rest = rest.get(writes.len()..).unwrap_or_default();
            match storage.write_batch(&writes).await {
                Ok(()) => results.extend(writes.iter().map(|_| Ok(StorageReply::Done))),
                Err(_error) => {
                    #[cfg(feature = "native")]
                    tracing::warn!(
                        %_error,
                        writes = writes.len(),
                        "group commit failed: retrying write by write"
                    );
                    for w in &writes {
                        results.push(w.write_alone(storage).await.map(|()| StorageReply::Done));
                    }
                }
            }
        }
        results
    }

    /// The document the operation is about.
    pub fn doc(&self) -> DocumentId {
        match self {
            Self::Load { doc }
            | Self::LoadChunks { doc, .. }
            | Self::Append { doc, .. }
            | Self::Compact { doc, .. }
            | Self::PutSyncState { doc, .. }
            | Self::PutHeads { doc, .. }
            | Self::PutTombstone { doc, .. }
            | Self::RemoveTombstone { doc }
            | Self::PutAuthors { doc, .. }
            | Self::AddOwnedDoc { doc, .. }
            | Self::Delete { doc } => *doc,
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
    /// It was deleted (see [`Tombstone`](super::Tombstone)).
    Deleted,
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
    /// Work on a document panicked (a bug reached by a peer's message or an application
    /// closure): the document was dropped from memory and reloaded from storage, its waiters
    /// failed, and the connection that caused it was closed. Nothing committed is lost.
    DocumentPanicked {
        /// The document.
        doc: DocumentId,
        /// The panic message.
        reason: String,
    },
    /// A document was deleted, here (`Local`) or by a peer (`Remote`); its local copy is gone
    /// and edits to it are refused. Local changes a peer had not synced before the deletion
    /// are lost with it (delete wins).
    DocDeleted {
        /// The document.
        doc: DocumentId,
        /// Who deleted it, and when.
        tombstone: super::Tombstone,
        /// Deleted through this replica, or learned from a peer.
        origin: Origin,
        /// Learned from another node of the cluster (not to be relayed to the cluster again).
        from_cluster: bool,
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
        /// Original sender (as relayed: see `PeerInfo::speaks_as`).
        from: PeerId,
        /// Sender's session.
        session_id: String,
        /// Sender's counter.
        count: u64,
        /// The data.
        data: Vec<u8>,
        /// It came from another node of the cluster (not to be relayed to the cluster again).
        from_cluster: bool,
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
    /// The heads of `doc` that this node's region links acknowledged changed: a cluster node
    /// tells the other nodes (`concord::repo::BusNotice::RegionHeads`), which report them to
    /// their own clients. Only raised while this core holds region links.
    RegionHeads {
        /// The document.
        doc: DocumentId,
        /// Per peer region's storage id, the heads it has committed.
        heads: Vec<(crate::id::StorageId, Vec<ChangeHash>)>,
    },
}

impl From<StorageError> for FindOutcome {
    fn from(e: StorageError) -> Self {
        Self::Failed(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(n: u8) -> (u8, StorageOp) {
        let bytes = vec![n; 4];
        let op = StorageOp::Append {
            doc: DocumentId::from_bytes([n; 16]),
            key: ChunkKey::of(&bytes),
            bytes,
        };
        (n, op)
    }

    fn tags(group: &[(u8, StorageOp)]) -> Vec<u8> {
        group.iter().map(|(t, _)| *t).collect()
    }

    #[test]
    fn gather_takes_queued_writes_up_to_a_load_and_holds_the_load() {
        let load = StorageOp::Load {
            doc: DocumentId::from_bytes([9; 16]),
        };
        let mut queue = vec![append(1), append(2), (3, load), append(4)].into_iter();
        let g = StorageOp::gather(append(0), || queue.next());
        assert_eq!(tags(&g.group), [0, 1, 2]);
        assert!(matches!(g.held, Some((3, StorageOp::Load { .. }))));
        // A held load runs alone; the writes after it form the next group.
        let g = StorageOp::gather(g.held.unwrap(), || queue.next());
        assert_eq!(tags(&g.group), [3]);
        let g = StorageOp::gather(queue.next().unwrap(), || queue.next());
        assert_eq!(tags(&g.group), [4]);
        assert!(g.held.is_none());
    }

    #[test]
    fn gather_stops_at_the_bounds() {
        let mut n = 0u8;
        let g = StorageOp::gather(append(0), || {
            n = n.wrapping_add(1);
            Some(append(n))
        });
        assert_eq!(g.group.len(), MAX_BATCH_OPS);
        let big = StorageOp::Append {
            doc: DocumentId::from_bytes([0; 16]),
            key: ChunkKey::of(b"big"),
            bytes: vec![0; MAX_BATCH_BYTES],
        };
        let g = StorageOp::gather((0, big), || Some(append(1)));
        assert_eq!(g.group.len(), 1, "a write at the byte bound commits alone");
    }
}
