//! Durable storage: a trait every backend implements, and the backends.
//!
//! Stored per document: incremental chunks (changes, as produced by `Automerge::save_after`) and
//! compacted snapshots (`Automerge::save`), each under a [`ChunkKey`] (the SHA-256 of its bytes,
//! so re-writing the same chunk is idempotent). [`Storage::compact`] writes a snapshot and deletes
//! the chunks it covers in ONE transaction. Sync state is stored per (document, peer storage id).
//! [`Storage::write_batch`] commits several writes, to any documents, in ONE transaction (the tokio
//! driver's group commit).
//!
//! Every operation returns `Result`; an `Ok` means the write is committed (see each backend's docs
//! for what "committed" survives). [`conformance::run`] is the suite every backend must pass.
//!
//! Backends: [`MemoryStorage`], SQLite (feature `sqlite`, one process) and PostgreSQL (feature
//! `postgres`, [`postgres`]: several processes sharing one database, and their cluster bus).

pub mod conformance;
mod conformance_records;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
mod records;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::fmt;

use sha2::{Digest, Sha256};

use crate::id::{DocumentId, StorageId};

pub use memory::MemoryStorage;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresConfig, PostgresStorage};
pub use records::{ChangeAuthor, OwnedDoc};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteConfig, SqliteStorage, Synchronous};

/// The key of a stored chunk: SHA-256 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkKey(pub [u8; 32]);

impl ChunkKey {
    /// The key of these bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkKey({})", hex::encode(&self.0[..6]))
    }
}

/// Whether a chunk is a compacted snapshot or an increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkKind {
    /// A whole document (`Automerge::save`).
    Snapshot,
    /// Changes since some heads (`Automerge::save_after`).
    Incremental,
}

/// One stored chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Its key.
    pub key: ChunkKey,
    /// Snapshot or increment.
    pub kind: ChunkKind,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Everything stored for one document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDocument {
    /// Snapshots first, then increments, each group in insertion order.
    pub chunks: Vec<Chunk>,
    /// Persisted sync states by the remote peer's storage id (`automerge::sync::State::encode`).
    pub sync_states: Vec<(StorageId, Vec<u8>)>,
}

/// `stored` without its sync states, with only the chunks whose key is in `keys` (all of them
/// when `keys` is empty).
pub fn only_chunks(stored: StoredDocument, keys: &[ChunkKey]) -> StoredDocument {
    StoredDocument {
        chunks: stored
            .chunks
            .into_iter()
            .filter(|c| keys.is_empty() || keys.contains(&c.key))
            .collect(),
        sync_states: Vec::new(),
    }
}

impl StoredDocument {
    /// True when nothing is stored for the document.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The backend failed (I/O, SQLite error, quota, ...).
    #[error("storage backend failed during {op}: {message}")]
    Backend {
        /// The operation.
        op: &'static str,
        /// The backend's message.
        message: String,
    },
    /// Stored data is not what this version wrote.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The storage was closed.
    #[error("storage is closed")]
    Closed,
    /// This backend does not keep this kind of record.
    #[error("this storage backend does not support {0}")]
    Unsupported(&'static str),
}

/// Result of storage operations.
pub type StorageResult<T> = Result<T, StorageError>;

/// One write of a [`Storage::write_batch`]: the arguments of the matching single-write method.
///
/// Every write is idempotent (a chunk key is the hash of its bytes; sync state and heads are
/// replaced), so writes that may or may not have committed can simply be written again, in order.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum WriteOp<'a> {
    /// [`Storage::append`].
    Append {
        /// The document.
        doc: &'a DocumentId,
        /// Chunk key.
        key: ChunkKey,
        /// Chunk bytes.
        bytes: &'a [u8],
    },
    /// [`Storage::compact`].
    Compact {
        /// The document.
        doc: &'a DocumentId,
        /// Snapshot key.
        key: ChunkKey,
        /// Snapshot bytes.
        snapshot: &'a [u8],
        /// Chunks the snapshot replaces.
        covered: &'a [ChunkKey],
    },
    /// [`Storage::put_sync_state`].
    PutSyncState {
        /// The document.
        doc: &'a DocumentId,
        /// The remote storage id.
        peer: &'a StorageId,
        /// The encoded sync state.
        state: &'a [u8],
    },
    /// [`Storage::put_heads`].
    PutHeads {
        /// The document.
        doc: &'a DocumentId,
        /// 32 bytes per change hash.
        heads: &'a [u8],
    },
    /// [`Storage::put_tombstone`].
    PutTombstone {
        /// The document.
        doc: &'a DocumentId,
        /// The tombstone, as the core encodes it.
        record: &'a [u8],
    },
    /// [`Storage::remove_tombstone`].
    RemoveTombstone {
        /// The document.
        doc: &'a DocumentId,
    },
    /// [`Storage::put_authors`].
    PutAuthors {
        /// The document.
        doc: &'a DocumentId,
        /// Who wrote which change.
        authors: &'a [ChangeAuthor],
    },
    /// [`Storage::add_owned_doc`].
    AddOwnedDoc {
        /// The document.
        doc: &'a DocumentId,
        /// The principal that created it.
        principal: &'a str,
    },
    /// [`Storage::delete`].
    Delete {
        /// The document.
        doc: &'a DocumentId,
    },
}

impl WriteOp<'_> {
    /// The document written.
    pub fn doc(&self) -> &DocumentId {
        match *self {
            Self::Append { doc, .. }
            | Self::Compact { doc, .. }
            | Self::PutSyncState { doc, .. }
            | Self::PutHeads { doc, .. }
            | Self::PutTombstone { doc, .. }
            | Self::RemoveTombstone { doc }
            | Self::PutAuthors { doc, .. }
            | Self::AddOwnedDoc { doc, .. }
            | Self::Delete { doc } => doc,
        }
    }

    /// The name of the single-write method (for errors and logs).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Append { .. } => "append",
            Self::Compact { .. } => "compact",
            Self::PutSyncState { .. } => "put_sync_state",
            Self::PutHeads { .. } => "put_heads",
            Self::PutTombstone { .. } => "put_tombstone",
            Self::RemoveTombstone { .. } => "remove_tombstone",
            Self::PutAuthors { .. } => "put_authors",
            Self::AddOwnedDoc { .. } => "add_owned_doc",
            Self::Delete { .. } => "delete",
        }
    }

    /// How many bytes the write carries (to bound a batch).
    pub fn payload_len(&self) -> usize {
        match *self {
            Self::Append { bytes, .. } => bytes.len(),
            Self::Compact {
                snapshot, covered, ..
            } => snapshot.len() + 32 * covered.len(),
            Self::PutSyncState { state, .. } => state.len(),
            Self::PutHeads { heads, .. } => heads.len(),
            Self::PutTombstone { record, .. } => record.len(),
            Self::PutAuthors { authors, .. } => {
                authors.iter().map(|a| 40 + a.principal.len()).sum()
            }
            Self::AddOwnedDoc { principal, .. } => principal.len() + 16,
            Self::RemoveTombstone { .. } | Self::Delete { .. } => 16,
        }
    }

    /// Executes this write alone, through the backend's single-write method (its own
    /// transaction).
    pub async fn write_alone<S: Storage + ?Sized>(&self, storage: &S) -> StorageResult<()> {
        match *self {
            Self::Append { doc, key, bytes } => storage.append(doc, key, bytes).await,
            Self::Compact {
                doc,
                key,
                snapshot,
                covered,
            } => storage.compact(doc, key, snapshot, covered).await,
            Self::PutSyncState { doc, peer, state } => {
                storage.put_sync_state(doc, peer, state).await
            }
            Self::PutHeads { doc, heads } => storage.put_heads(doc, heads).await,
            Self::PutTombstone { doc, record } => storage.put_tombstone(doc, record).await,
            Self::RemoveTombstone { doc } => storage.remove_tombstone(doc).await,
            Self::PutAuthors { doc, authors } => storage.put_authors(doc, authors).await,
            Self::AddOwnedDoc { doc, principal } => storage.add_owned_doc(principal, doc).await,
            Self::Delete { doc } => storage.delete(doc).await,
        }
    }
}

/// A durable store for documents and sync state.
///
/// Implementations must make every `Ok` a committed write, execute [`Storage::compact`] atomically,
/// and treat writing an existing chunk key as a no-op. A backend that can commit several writes in
/// one transaction overrides [`Storage::write_batch`].
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait Storage: fmt::Debug + Send + Sync + 'static {
    /// Everything stored for `doc` (empty when unknown).
    async fn load(&self, doc: &DocumentId) -> StorageResult<StoredDocument>;
    /// Stores an incremental chunk.
    async fn append(&self, doc: &DocumentId, key: ChunkKey, bytes: &[u8]) -> StorageResult<()>;
    /// Stores `snapshot` and deletes the chunks in `covered`, atomically.
    async fn compact(
        &self,
        doc: &DocumentId,
        key: ChunkKey,
        snapshot: &[u8],
        covered: &[ChunkKey],
    ) -> StorageResult<()>;
    /// Stores the sync state for (`doc`, `peer`), replacing the previous one.
    async fn put_sync_state(
        &self,
        doc: &DocumentId,
        peer: &StorageId,
        state: &[u8],
    ) -> StorageResult<()>;
    /// Every document with at least one chunk.
    async fn list(&self) -> StorageResult<Vec<DocumentId>>;
    /// Deletes everything stored for `doc`: chunks, sync states, its heads index entry, its
    /// authors and its entries in owned-document lists (not its tombstone).
    async fn delete(&self, doc: &DocumentId) -> StorageResult<()>;
    /// Reads a replica-level value (e.g. this replica's storage id).
    async fn get_meta(&self, key: &str) -> StorageResult<Option<Vec<u8>>>;
    /// Writes a replica-level value.
    async fn put_meta(&self, key: &str, value: &[u8]) -> StorageResult<()>;
    /// Records the committed heads of `doc` (32 bytes per change hash) in the heads index that
    /// region servers digest for anti-entropy. Backends without an index ignore it.
    async fn put_heads(&self, _doc: &DocumentId, _heads: &[u8]) -> StorageResult<()> {
        Ok(())
    }
    /// Executes `ops` in order as ONE transaction: `Ok` when every write committed, `Err` when
    /// none did (the batch rolled back), so a caller may acknowledge all of them or none.
    ///
    /// The default runs the writes one by one through the single-write methods and stops at the
    /// first error, leaving the writes before it committed: it is correct for callers only because
    /// every write is idempotent (see [`WriteOp`]), and backends that have transactions override
    /// it (SQLite, memory). An empty batch is `Ok`.
    async fn write_batch(&self, ops: &[WriteOp<'_>]) -> StorageResult<()> {
        for op in ops {
            op.write_alone(self).await?;
        }
        Ok(())
    }
    /// The chunks of `doc` with these keys, in storage order (empty `keys`: every chunk). Keys
    /// no longer stored (compacted meanwhile) are simply missing. Backends that can select by
    /// key override it; the default loads everything and filters.
    async fn load_chunks(&self, doc: &DocumentId, keys: &[ChunkKey]) -> StorageResult<Vec<Chunk>> {
        Ok(only_chunks(self.load(doc).await?, keys).chunks)
    }
    /// Records that `doc` was deleted (`record`: the tombstone as the core encodes it),
    /// replacing an earlier tombstone. Backends that keep no tombstones refuse.
    async fn put_tombstone(&self, _doc: &DocumentId, _record: &[u8]) -> StorageResult<()> {
        Err(StorageError::Unsupported("tombstones"))
    }
    /// Forgets the tombstone of `doc` (once it is past its retention).
    async fn remove_tombstone(&self, _doc: &DocumentId) -> StorageResult<()> {
        Err(StorageError::Unsupported("tombstones"))
    }
    /// Every stored tombstone.
    async fn tombstones(&self) -> StorageResult<Vec<(DocumentId, Vec<u8>)>> {
        Ok(Vec::new())
    }
    /// Records who wrote changes of `doc` (a change already attributed keeps its first author).
    async fn put_authors(&self, _doc: &DocumentId, _authors: &[ChangeAuthor]) -> StorageResult<()> {
        Err(StorageError::Unsupported("change authors"))
    }
    /// Who wrote the changes of `doc`, where known.
    async fn authors(&self, _doc: &DocumentId) -> StorageResult<Vec<ChangeAuthor>> {
        Ok(Vec::new())
    }
    /// Adds `doc` to the documents `principal` created (no-op when listed already).
    async fn add_owned_doc(&self, _principal: &str, _doc: &DocumentId) -> StorageResult<()> {
        Err(StorageError::Unsupported("owned documents"))
    }
    /// The documents `principal` created, oldest first, after cursor `after`, at most `limit`.
    async fn owned_docs(
        &self,
        _principal: &str,
        _after: Option<u64>,
        _limit: usize,
    ) -> StorageResult<Vec<OwnedDoc>> {
        Ok(Vec::new())
    }
    /// Deletes sync states not written since `before_ms` (Unix milliseconds); returns how many.
    /// Backends that do not timestamp sync states keep them (0).
    async fn expire_sync_states(&self, _before_ms: u64) -> StorageResult<u64> {
        Ok(0)
    }
    /// Every document's last recorded heads (`None`: this backend keeps no heads index, and the
    /// caller must load documents to learn them). [`Storage::delete`] removes a document's entry.
    async fn heads_index(&self) -> StorageResult<Option<Vec<(DocumentId, Vec<u8>)>>> {
        Ok(None)
    }
}
