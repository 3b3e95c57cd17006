//! [`IdbStorage`]: client-core's [`Storage`] over the browser's IndexedDB.
//!
//! One database per repo, three object stores:
//! - `chunks`: auto-incremented keys (so insertion order is kept), records
//!   `{doc, key, kind, bytes}`, a unique index `doc_key` on `[doc, key]` (appending a chunk that
//!   exists is a no-op) and an index `doc`.
//! - `sync`: records `{doc, peer, state}` keyed by `[doc, peer]`, with an index `doc`.
//! - `meta`: replica-level values by key.
//! - `tombstones` (since version 2): deleted documents' tombstones (bytes the core encodes),
//!   keyed by document id; [`Storage::delete`] keeps them.
//!
//! Change authors and owned-document lists are server records: this backend refuses them
//! ([`StorageError::Unsupported`]), as the storage trait allows.
//!
//! Every write is one IndexedDB transaction and resolves on its `complete` event, so an `Ok` is a
//! committed write; `compact` writes the snapshot and deletes what it covers in one transaction.

use std::cell::RefCell;
use std::collections::HashMap;

use js_sys::{Array, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use web_sys::{
    IdbCursor, IdbDatabase, IdbFactory, IdbIndexParameters, IdbKeyRange, IdbObjectStore,
    IdbObjectStoreParameters, IdbOpenDbRequest, IdbTransaction, IdbTransactionMode,
};

use concord::storage::{
    Chunk, ChunkKey, ChunkKind, Storage, StorageError, StorageResult, StoredDocument,
};
use concord::{DocumentId, StorageId};

use crate::error::Error;
use crate::idb_request::{backend, committed, request};
use crate::js::object;

const VERSION: u32 = 2;
const CHUNKS: &str = "chunks";
const SYNC: &str = "sync";
const META: &str = "meta";
const TOMBSTONES: &str = "tombstones";
const STORES: [&str; 4] = [CHUNKS, SYNC, META, TOMBSTONES];

thread_local! {
    /// Open databases by handle id. `IdbDatabase` is not `Send`; the storage holds only the id,
    /// so it satisfies the `Storage` trait's bounds (wasm32 is single-threaded).
    static DATABASES: RefCell<HashMap<u32, IdbDatabase>> = RefCell::new(HashMap::new());
    static NEXT_ID: RefCell<u32> = const { RefCell::new(1) };
}

/// Documents and sync state in an IndexedDB database.
#[derive(Debug)]
pub struct IdbStorage {
    id: u32,
    name: String,
}

fn factory() -> Result<IdbFactory, Error> {
    let global = js_sys::global();
    let idb = Reflect::get(&global, &"indexedDB".into()).unwrap_or(JsValue::UNDEFINED);
    if idb.is_undefined() || idb.is_null() {
        return Err(Error::Unsupported(
            "IndexedDB is not available here (open the repo without `database` for in-memory \
             storage)"
                .into(),
        ));
    }
    idb.dyn_into::<IdbFactory>()
        .map_err(|_| Error::Unsupported("globalThis.indexedDB is not an IDBFactory".into()))
}

fn upgrade(db: &IdbDatabase) -> Result<(), JsValue> {
    let names = db.object_store_names();
    if !names.contains(CHUNKS) {
        let params = IdbObjectStoreParameters::new();
        params.set_auto_increment(true);
        let chunks = db.create_object_store_with_optional_parameters(CHUNKS, &params)?;
        let unique = IdbIndexParameters::new();
        unique.set_unique(true);
        let doc_key = Array::of2(&"doc".into(), &"key".into());
        chunks
            .create_index_with_str_sequence_and_optional_parameters("doc_key", &doc_key, &unique)?;
        chunks.create_index_with_str("doc", "doc")?;
    }
    if !names.contains(SYNC) {
        let params = IdbObjectStoreParameters::new();
        params.set_key_path(&Array::of2(&"doc".into(), &"peer".into()));
        let sync = db.create_object_store_with_optional_parameters(SYNC, &params)?;
        sync.create_index_with_str("doc", "doc")?;
    }
    for plain in [META, TOMBSTONES] {
        if !names.contains(plain) {
            db.create_object_store(plain)?;
        }
    }
    Ok(())
}

impl IdbStorage {
    /// Opens (creating or upgrading) the database `name`.
    pub async fn open(name: &str) -> Result<Self, Error> {
        if name.is_empty() {
            return Err(Error::arg("database", "must be a non-empty string"));
        }
        let req: IdbOpenDbRequest = factory()?
            .open_with_u32(name, VERSION)
            .map_err(|e| Error::storage(crate::idb_request::dom_error(&e)))?;
        let on_upgrade = Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
            let db = event
                .target()
                .and_then(|t| t.dyn_into::<IdbOpenDbRequest>().ok())
                .and_then(|r| r.result().ok())
                .and_then(|r| r.dyn_into::<IdbDatabase>().ok());
            if let Some(db) = db {
                if let Err(e) = upgrade(&db) {
                    web_sys::console::error_2(&"concord: IndexedDB upgrade failed".into(), &e);
                }
            }
        });
        req.set_onupgradeneeded(Some(on_upgrade.as_ref().unchecked_ref()));
        let result = request("open", &req).await;
        req.set_onupgradeneeded(None);
        drop(on_upgrade);
        let db: IdbDatabase = result?
            .dyn_into()
            .map_err(|_| Error::Storage("indexedDB.open returned no database".into()))?;
        for store in STORES {
            if !db.object_store_names().contains(store) {
                db.close();
                return Err(Error::Storage(format!(
                    "database `{name}` has no `{store}` store (created by something else?)"
                )));
            }
        }
        let id = NEXT_ID.with(|n| {
            let mut n = n.borrow_mut();
            *n += 1;
            *n
        });
        DATABASES.with(|d| d.borrow_mut().insert(id, db));
        Ok(Self {
            id,
            name: name.to_owned(),
        })
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Closes the database; later operations fail with [`StorageError::Closed`].
    pub fn close(&self) {
        if let Some(db) = DATABASES.with(|d| d.borrow_mut().remove(&self.id)) {
            db.close();
        }
    }

    /// Deletes the database `name` (every document of that repo). Close repos using it first.
    pub async fn delete_database(name: &str) -> Result<(), Error> {
        let req = factory()?
            .delete_database(name)
            .map_err(|e| Error::storage(crate::idb_request::dom_error(&e)))?;
        request("delete database", &req).await?;
        Ok(())
    }

    fn tx(
        &self,
        op: &'static str,
        stores: &[&str],
        mode: IdbTransactionMode,
    ) -> StorageResult<IdbTransaction> {
        let db = DATABASES
            .with(|d| d.borrow().get(&self.id).cloned())
            .ok_or(StorageError::Closed)?;
        let names = Array::new();
        for s in stores {
            names.push(&JsValue::from_str(s));
        }
        db.transaction_with_str_sequence_and_mode(&names, mode)
            .map_err(|e| backend(op, &e))
    }
}

impl IdbStorage {
    /// Writes `value` under `key` in the out-of-line-keyed `store_name`, in its own transaction.
    async fn put_bytes(
        &self,
        op: &'static str,
        store_name: &str,
        key: &JsValue,
        value: &[u8],
    ) -> StorageResult<()> {
        let tx = self.tx(op, &[store_name], IdbTransactionMode::Readwrite)?;
        let done = committed(op, &tx);
        store(op, &tx, store_name)?
            .put_with_key(&Uint8Array::from(value).into(), key)
            .map_err(|e| backend(op, &e))?;
        done.await
    }
}

fn store(op: &'static str, tx: &IdbTransaction, name: &str) -> StorageResult<IdbObjectStore> {
    tx.object_store(name).map_err(|e| backend(op, &e))
}

fn doc_key(doc: &DocumentId) -> JsValue {
    JsValue::from_str(&doc.to_string())
}

fn pair(a: &str, b: &str) -> JsValue {
    Array::of2(&a.into(), &b.into()).into()
}

fn only(op: &'static str, key: &JsValue) -> StorageResult<IdbKeyRange> {
    IdbKeyRange::only(key).map_err(|e| backend(op, &e))
}

fn bytes_of(value: &JsValue, field: &str) -> StorageResult<Vec<u8>> {
    Reflect::get(value, &field.into())
        .ok()
        .and_then(|b| b.dyn_into::<Uint8Array>().ok())
        .map(|b| b.to_vec())
        .ok_or_else(|| StorageError::Corrupt(format!("record without `{field}` bytes")))
}

fn chunk_key(hex_key: &str) -> StorageResult<ChunkKey> {
    let bytes = hex::decode(hex_key).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("chunk key `{hex_key}` is not 32 bytes")))?;
    Ok(ChunkKey(arr))
}

fn string_of(value: &JsValue, field: &str) -> StorageResult<String> {
    Reflect::get(value, &field.into())
        .ok()
        .and_then(|v| v.as_string())
        .ok_or_else(|| StorageError::Corrupt(format!("record without `{field}`")))
}

/// Adds a chunk unless one with the same key exists (inside the caller's transaction).
async fn add_chunk(
    op: &'static str,
    chunks: &IdbObjectStore,
    doc: &DocumentId,
    key: ChunkKey,
    kind: ChunkKind,
    bytes: &[u8],
) -> StorageResult<()> {
    let hex_key = hex::encode(key.0);
    let index = chunks.index("doc_key").map_err(|e| backend(op, &e))?;
    let existing = index
        .count_with_key(&pair(&doc.to_string(), &hex_key))
        .map_err(|e| backend(op, &e))?;
    if request(op, &existing).await?.as_f64().unwrap_or(0.0) > 0.0 {
        return Ok(());
    }
    let kind = match kind {
        ChunkKind::Snapshot => "snapshot",
        ChunkKind::Incremental => "incremental",
    };
    let record = object(&[
        ("doc", doc_key(doc)),
        ("key", hex_key.into()),
        ("kind", kind.into()),
        ("bytes", Uint8Array::from(bytes).into()),
    ]);
    chunks.add(&record).map_err(|e| backend(op, &e))?;
    Ok(())
}

/// Deletes every record of `store` whose `doc` index matches (inside the caller's transaction).
async fn delete_by_doc(
    op: &'static str,
    store: &IdbObjectStore,
    doc: &DocumentId,
) -> StorageResult<()> {
    let index = store.index("doc").map_err(|e| backend(op, &e))?;
    let keys_req = index
        .get_all_keys_with_key(&only(op, &doc_key(doc))?.into())
        .map_err(|e| backend(op, &e))?;
    let keys: Array = request(op, &keys_req).await?.unchecked_into();
    for key in keys.iter() {
        store.delete(&key).map_err(|e| backend(op, &e))?;
    }
    Ok(())
}

#[async_trait::async_trait(?Send)]
impl Storage for IdbStorage {
    async fn load(&self, doc: &DocumentId) -> StorageResult<StoredDocument> {
        const OP: &str = "load";
        let tx = self.tx(OP, &[CHUNKS, SYNC], IdbTransactionMode::Readonly)?;
        let chunks = store(OP, &tx, CHUNKS)?;
        let range = only(OP, &doc_key(doc))?;
        let chunk_req = chunks
            .index("doc")
            .and_then(|i| i.get_all_with_key(&range.clone().into()))
            .map_err(|e| backend(OP, &e))?;
        let records: Array = request(OP, &chunk_req).await?.unchecked_into();
        let mut snapshots = Vec::new();
        let mut increments = Vec::new();
        for record in records.iter() {
            let kind = string_of(&record, "kind")?;
            let chunk = Chunk {
                key: chunk_key(&string_of(&record, "key")?)?,
                kind: if kind == "snapshot" {
                    ChunkKind::Snapshot
                } else {
                    ChunkKind::Incremental
                },
                bytes: bytes_of(&record, "bytes")?,
            };
            match chunk.kind {
                ChunkKind::Snapshot => snapshots.push(chunk),
                ChunkKind::Incremental => increments.push(chunk),
            }
        }
        let sync_req = store(OP, &tx, SYNC)?
            .index("doc")
            .and_then(|i| i.get_all_with_key(&range.clone().into()))
            .map_err(|e| backend(OP, &e))?;
        let states: Array = request(OP, &sync_req).await?.unchecked_into();
        let mut sync_states = Vec::new();
        for record in states.iter() {
            let peer = StorageId::new(string_of(&record, "peer")?);
            sync_states.push((peer, bytes_of(&record, "state")?));
        }
        snapshots.extend(increments);
        Ok(StoredDocument {
            chunks: snapshots,
            sync_states,
        })
    }

    async fn append(&self, doc: &DocumentId, key: ChunkKey, bytes: &[u8]) -> StorageResult<()> {
        const OP: &str = "append";
        let tx = self.tx(OP, &[CHUNKS], IdbTransactionMode::Readwrite)?;
        let done = committed(OP, &tx);
        let chunks = store(OP, &tx, CHUNKS)?;
        add_chunk(OP, &chunks, doc, key, ChunkKind::Incremental, bytes).await?;
        done.await
    }

    async fn compact(
        &self,
        doc: &DocumentId,
        key: ChunkKey,
        snapshot: &[u8],
        covered: &[ChunkKey],
    ) -> StorageResult<()> {
        const OP: &str = "compact";
        let tx = self.tx(OP, &[CHUNKS], IdbTransactionMode::Readwrite)?;
        let done = committed(OP, &tx);
        let chunks = store(OP, &tx, CHUNKS)?;
        let index = chunks.index("doc_key").map_err(|e| backend(OP, &e))?;
        for old in covered.iter().filter(|k| **k != key) {
            let req = index
                .get_key(&pair(&doc.to_string(), &hex::encode(old.0)))
                .map_err(|e| backend(OP, &e))?;
            let primary = request(OP, &req).await?;
            if !primary.is_undefined() {
                chunks.delete(&primary).map_err(|e| backend(OP, &e))?;
            }
        }
        add_chunk(OP, &chunks, doc, key, ChunkKind::Snapshot, snapshot).await?;
        done.await
    }

    async fn put_sync_state(
        &self,
        doc: &DocumentId,
        peer: &StorageId,
        state: &[u8],
    ) -> StorageResult<()> {
        const OP: &str = "put_sync_state";
        let tx = self.tx(OP, &[SYNC], IdbTransactionMode::Readwrite)?;
        let done = committed(OP, &tx);
        let record = object(&[
            ("doc", doc_key(doc)),
            ("peer", peer.as_str().into()),
            ("state", Uint8Array::from(state).into()),
        ]);
        store(OP, &tx, SYNC)?
            .put(&record)
            .map_err(|e| backend(OP, &e))?;
        done.await
    }

    async fn list(&self) -> StorageResult<Vec<DocumentId>> {
        const OP: &str = "list";
        let tx = self.tx(OP, &[CHUNKS], IdbTransactionMode::Readonly)?;
        let index = store(OP, &tx, CHUNKS)?
            .index("doc")
            .map_err(|e| backend(OP, &e))?;
        let req = index
            .open_key_cursor_with_range_and_direction(
                &JsValue::NULL,
                web_sys::IdbCursorDirection::Nextunique,
            )
            .map_err(|e| backend(OP, &e))?;
        let mut docs = Vec::new();
        loop {
            let cursor = request(OP, &req).await?;
            if cursor.is_null() || cursor.is_undefined() {
                break;
            }
            let cursor: IdbCursor = cursor.unchecked_into();
            let key = cursor.key().map_err(|e| backend(OP, &e))?;
            let id = key
                .as_string()
                .ok_or_else(|| StorageError::Corrupt("non-string document key".into()))?;
            docs.push(
                id.parse::<DocumentId>()
                    .map_err(|e| StorageError::Corrupt(e.to_string()))?,
            );
            cursor.continue_().map_err(|e| backend(OP, &e))?;
        }
        Ok(docs)
    }

    async fn delete(&self, doc: &DocumentId) -> StorageResult<()> {
        const OP: &str = "delete";
        let tx = self.tx(OP, &[CHUNKS, SYNC], IdbTransactionMode::Readwrite)?;
        let done = committed(OP, &tx);
        delete_by_doc(OP, &store(OP, &tx, CHUNKS)?, doc).await?;
        delete_by_doc(OP, &store(OP, &tx, SYNC)?, doc).await?;
        done.await
    }

    async fn get_meta(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        const OP: &str = "get_meta";
        let tx = self.tx(OP, &[META], IdbTransactionMode::Readonly)?;
        let req = store(OP, &tx, META)?
            .get(&JsValue::from_str(key))
            .map_err(|e| backend(OP, &e))?;
        let value = request(OP, &req).await?;
        if value.is_undefined() {
            return Ok(None);
        }
        value
            .dyn_into::<Uint8Array>()
            .map(|b| Some(b.to_vec()))
            .map_err(|_| StorageError::Corrupt(format!("meta `{key}` is not bytes")))
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> StorageResult<()> {
        self.put_bytes("put_meta", META, &JsValue::from_str(key), value)
            .await
    }

    async fn put_tombstone(&self, doc: &DocumentId, record: &[u8]) -> StorageResult<()> {
        self.put_bytes("put_tombstone", TOMBSTONES, &doc_key(doc), record)
            .await
    }

    async fn remove_tombstone(&self, doc: &DocumentId) -> StorageResult<()> {
        const OP: &str = "remove_tombstone";
        let tx = self.tx(OP, &[TOMBSTONES], IdbTransactionMode::Readwrite)?;
        let done = committed(OP, &tx);
        store(OP, &tx, TOMBSTONES)?
            .delete(&doc_key(doc))
            .map_err(|e| backend(OP, &e))?;
        done.await
    }

    async fn tombstones(&self) -> StorageResult<Vec<(DocumentId, Vec<u8>)>> {
        const OP: &str = "tombstones";
        let tx = self.tx(OP, &[TOMBSTONES], IdbTransactionMode::Readonly)?;
        let tombstones = store(OP, &tx, TOMBSTONES)?;
        let keys_req = tombstones.get_all_keys().map_err(|e| backend(OP, &e))?;
        let values_req = tombstones.get_all().map_err(|e| backend(OP, &e))?;
        let keys: Array = request(OP, &keys_req).await?.unchecked_into();
        let values: Array = request(OP, &values_req).await?.unchecked_into();
        keys.iter()
            .zip(values.iter())
            .map(|(key, value)| {
                let doc = key
                    .as_string()
                    .ok_or_else(|| StorageError::Corrupt("non-string tombstone key".into()))?
                    .parse::<DocumentId>()
                    .map_err(|e| StorageError::Corrupt(e.to_string()))?;
                let bytes = value.dyn_into::<Uint8Array>().map_err(|_| {
                    StorageError::Corrupt(format!("tombstone of {doc} is not bytes"))
                })?;
                Ok((doc, bytes.to_vec()))
            })
            .collect()
    }
}
