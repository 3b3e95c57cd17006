//! In-memory storage, for tests and ephemeral peers. Shares its contents between clones, so a
//! simulated crash can drop a peer and reopen "the same disk".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    ChangeAuthor, Chunk, ChunkKey, ChunkKind, OwnedDoc, Storage, StorageError, StorageResult,
    StoredDocument, WriteOp,
};
use crate::id::{DocumentId, StorageId};

#[derive(Debug, Default)]
struct DocData {
    chunks: Vec<Chunk>,
    sync_states: BTreeMap<StorageId, Vec<u8>>,
}

#[derive(Debug, Default)]
struct Inner {
    docs: BTreeMap<DocumentId, DocData>,
    meta: HashMap<String, Vec<u8>>,
    heads: BTreeMap<DocumentId, Vec<u8>>,
    tombstones: BTreeMap<DocumentId, Vec<u8>>,
    authors: BTreeMap<DocumentId, Vec<ChangeAuthor>>,
    /// (cursor, principal, document), in cursor order.
    owned: Vec<(u64, String, DocumentId)>,
    fail_writes: bool,
    fail_docs: BTreeSet<DocumentId>,
}

impl Inner {
    /// The injected failure for a write (to `doc`, when it writes one document), if any.
    fn check(&self, op: &'static str, doc: Option<&DocumentId>) -> StorageResult<()> {
        if self.fail_writes || doc.is_some_and(|d| self.fail_docs.contains(d)) {
            return Err(StorageError::Backend {
                op,
                message: "injected write failure".into(),
            });
        }
        Ok(())
    }

    fn apply(&mut self, op: &WriteOp<'_>) {
        match *op {
            WriteOp::Append { doc, key, bytes } => insert(
                self.docs.entry(*doc).or_default(),
                key,
                ChunkKind::Incremental,
                bytes,
            ),
            WriteOp::Compact {
                doc,
                key,
                snapshot,
                covered,
            } => {
                let d = self.docs.entry(*doc).or_default();
                d.chunks
                    .retain(|c| c.key == key || !covered.contains(&c.key));
                insert(d, key, ChunkKind::Snapshot, snapshot);
                if let Some(c) = d.chunks.iter_mut().find(|c| c.key == key) {
                    c.kind = ChunkKind::Snapshot;
                }
            }
            WriteOp::PutSyncState { doc, peer, state } => {
                self.docs
                    .entry(*doc)
                    .or_default()
                    .sync_states
                    .insert(peer.clone(), state.to_vec());
            }
            WriteOp::PutHeads { doc, heads } => {
                self.heads.insert(*doc, heads.to_vec());
            }
            WriteOp::PutTombstone { doc, record } => {
                self.tombstones.insert(*doc, record.to_vec());
            }
            WriteOp::RemoveTombstone { doc } => {
                self.tombstones.remove(doc);
            }
            WriteOp::PutAuthors { doc, authors } => {
                let known = self.authors.entry(*doc).or_default();
                for a in authors {
                    if !known.iter().any(|k| k.hash == a.hash) {
                        known.push(a.clone());
                    }
                }
            }
            WriteOp::AddOwnedDoc { doc, principal } => {
                if !self
                    .owned
                    .iter()
                    .any(|(_, p, d)| p == principal && d == doc)
                {
                    let cursor = self.owned.last().map_or(1, |(c, _, _)| c + 1);
                    self.owned.push((cursor, principal.to_owned(), *doc));
                }
            }
            WriteOp::Delete { doc } => {
                self.docs.remove(doc);
                self.heads.remove(doc);
                self.authors.remove(doc);
                self.owned.retain(|(_, _, d)| d != doc);
            }
        }
    }
}

fn insert(d: &mut DocData, key: ChunkKey, kind: ChunkKind, bytes: &[u8]) {
    if !d.chunks.iter().any(|c| c.key == key) {
        d.chunks.push(Chunk {
            key,
            kind,
            bytes: bytes.to_vec(),
        });
    }
}

/// Storage in memory; `Clone` shares the same contents.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> StorageResult<MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| StorageError::Backend {
            op: "lock",
            message: "memory storage mutex poisoned".into(),
        })
    }

    /// Makes every later write fail (to test how callers handle storage errors).
    pub fn set_fail_writes(&self, fail: bool) {
        if let Ok(mut g) = self.inner.lock() {
            g.fail_writes = fail;
        }
    }

    /// Makes every later write to `doc` fail (or stop failing), alone or in a batch (to test
    /// that a batch with one failing write is all-or-nothing).
    pub fn set_fail_writes_to(&self, doc: DocumentId, fail: bool) {
        if let Ok(mut g) = self.inner.lock() {
            if fail {
                g.fail_docs.insert(doc);
            } else {
                g.fail_docs.remove(&doc);
            }
        }
    }

    fn write(
        &self,
        op: &'static str,
        doc: Option<&DocumentId>,
    ) -> StorageResult<MutexGuard<'_, Inner>> {
        let g = self.lock()?;
        g.check(op, doc)?;
        Ok(g)
    }

    /// Synchronous [`Storage::write_batch`]: every write is checked before any is applied, under
    /// one lock, so the batch is all-or-nothing.
    pub fn write_batch_sync(&self, ops: &[WriteOp<'_>]) -> StorageResult<()> {
        let mut g = self.lock()?;
        for op in ops {
            g.check(op.name(), Some(op.doc()))?;
        }
        for op in ops {
            g.apply(op);
        }
        Ok(())
    }

    /// Synchronous [`Storage::load`] (memory never blocks).
    pub fn load_sync(&self, doc: &DocumentId) -> StorageResult<StoredDocument> {
        let g = self.lock()?;
        let Some(d) = g.docs.get(doc) else {
            return Ok(StoredDocument::default());
        };
        let mut chunks: Vec<Chunk> = d
            .chunks
            .iter()
            .filter(|c| c.kind == ChunkKind::Snapshot)
            .cloned()
            .collect();
        chunks.extend(
            d.chunks
                .iter()
                .filter(|c| c.kind == ChunkKind::Incremental)
                .cloned(),
        );
        Ok(StoredDocument {
            chunks,
            sync_states: d
                .sync_states
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// Synchronous [`Storage::append`].
    pub fn append_sync(&self, doc: &DocumentId, key: ChunkKey, bytes: &[u8]) -> StorageResult<()> {
        self.write_batch_sync(&[WriteOp::Append { doc, key, bytes }])
    }

    /// Synchronous [`Storage::compact`].
    pub fn compact_sync(
        &self,
        doc: &DocumentId,
        key: ChunkKey,
        snapshot: &[u8],
        covered: &[ChunkKey],
    ) -> StorageResult<()> {
        self.write_batch_sync(&[WriteOp::Compact {
            doc,
            key,
            snapshot,
            covered,
        }])
    }

    /// Synchronous [`Storage::put_sync_state`].
    pub fn put_sync_state_sync(
        &self,
        doc: &DocumentId,
        peer: &StorageId,
        state: &[u8],
    ) -> StorageResult<()> {
        self.write_batch_sync(&[WriteOp::PutSyncState { doc, peer, state }])
    }

    /// Synchronous [`Storage::put_heads`].
    pub fn put_heads_sync(&self, doc: &DocumentId, heads: &[u8]) -> StorageResult<()> {
        self.write_batch_sync(&[WriteOp::PutHeads { doc, heads }])
    }

    /// Synchronous [`Storage::tombstones`].
    pub fn tombstones_sync(&self) -> StorageResult<Vec<(DocumentId, Vec<u8>)>> {
        Ok(self
            .lock()?
            .tombstones
            .iter()
            .map(|(d, r)| (*d, r.clone()))
            .collect())
    }

    /// Synchronous [`Storage::heads_index`].
    pub fn heads_index_sync(&self) -> StorageResult<Vec<(DocumentId, Vec<u8>)>> {
        Ok(self
            .lock()?
            .heads
            .iter()
            .map(|(d, h)| (*d, h.clone()))
            .collect())
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Storage for MemoryStorage {
    async fn load(&self, doc: &DocumentId) -> StorageResult<StoredDocument> {
        self.load_sync(doc)
    }

    async fn append(&self, doc: &DocumentId, key: ChunkKey, bytes: &[u8]) -> StorageResult<()> {
        self.append_sync(doc, key, bytes)
    }

    async fn compact(
        &self,
        doc: &DocumentId,
        key: ChunkKey,
        snapshot: &[u8],
        covered: &[ChunkKey],
    ) -> StorageResult<()> {
        self.compact_sync(doc, key, snapshot, covered)
    }

    async fn put_sync_state(
        &self,
        doc: &DocumentId,
        peer: &StorageId,
        state: &[u8],
    ) -> StorageResult<()> {
        self.put_sync_state_sync(doc, peer, state)
    }

    async fn list(&self) -> StorageResult<Vec<DocumentId>> {
        let g = self.lock()?;
        Ok(g.docs
            .iter()
            .filter(|(_, d)| !d.chunks.is_empty())
            .map(|(k, _)| *k)
            .collect())
    }

    async fn delete(&self, doc: &DocumentId) -> StorageResult<()> {
        self.write_batch_sync(&[WriteOp::Delete { doc }])
    }

    async fn put_tombstone(&self, doc: &DocumentId, record: &[u8]) -> StorageResult<()> {
        self.write_batch_sync(&[WriteOp::PutTombstone { doc, record }])
    }

    async fn remove_tombstone(&self, doc: &DocumentId) -> StorageResult<()> {
        self.write_batch_sync(&[WriteOp::RemoveTombstone { doc }])
    }

    async fn tombstones(&self) -> StorageResult<Vec<(DocumentId, Vec<u8>)>> {
        self.tombstones_sync()
    }

    async fn put_authors(&self, doc: &DocumentId, authors: &[ChangeAuthor]) -> StorageResult<()> {
        self.write_batch_sync(&[WriteOp::PutAuthors { doc, authors }])
    }

    async fn authors(&self, doc: &DocumentId) -> StorageResult<Vec<ChangeAuthor>> {
        Ok(self.lock()?.authors.get(doc).cloned().unwrap_or_default())
    }

    async fn add_owned_doc(&self, principal: &str, doc: &DocumentId) -> StorageResult<()> {
        self.write_batch_sync(&[WriteOp::AddOwnedDoc { doc, principal }])
    }

    async fn owned_docs(
        &self,
        principal: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StorageResult<Vec<OwnedDoc>> {
        let after = after.unwrap_or(0);
        Ok(self
            .lock()?
            .owned
            .iter()
            .filter(|(c, p, _)| p == principal && *c > after)
            .take(limit)
            .map(|(cursor, _, doc)| OwnedDoc {
                cursor: *cursor,
                doc: *doc,
            })
            .collect())
    }

    async fn get_meta(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        Ok(self.lock()?.meta.get(key).cloned())
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> StorageResult<()> {
        self.write("put_meta", None)?
            .meta
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn put_heads(&self, doc: &DocumentId, heads: &[u8]) -> StorageResult<()> {
        self.put_heads_sync(doc, heads)
    }

    async fn write_batch(&self, ops: &[WriteOp<'_>]) -> StorageResult<()> {
        self.write_batch_sync(ops)
    }

    async fn heads_index(&self) -> StorageResult<Option<Vec<(DocumentId, Vec<u8>)>>> {
        self.heads_index_sync().map(Some)
    }
}
