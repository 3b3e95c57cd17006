//! The statements of the reading operations (and of `delete` and `put_meta`, single statements
//! or a fixed transaction without notifications).

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use super::error::backend;
use crate::id::{DocumentId, StorageId};
use crate::storage::{Chunk, ChunkKey, ChunkKind, StorageError, StorageResult, StoredDocument};

fn chunk_of(r: &PgRow, op: &'static str) -> StorageResult<Chunk> {
    let key: Vec<u8> = r.try_get(0).map_err(backend(op))?;
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| StorageError::Corrupt("chunk key is not 32 bytes".into()))?;
    let kind = match r.try_get::<i16, _>(1).map_err(backend(op))? {
        0 => ChunkKind::Incremental,
        1 => ChunkKind::Snapshot,
        other => return Err(StorageError::Corrupt(format!("unknown chunk kind {other}"))),
    };
    Ok(Chunk {
        key: ChunkKey(key),
        kind,
        bytes: r.try_get(2).map_err(backend(op))?,
    })
}

fn doc_of(r: &PgRow, op: &'static str) -> StorageResult<DocumentId> {
    let b: Vec<u8> = r.try_get(0).map_err(backend(op))?;
    DocumentId::try_from_slice(&b).map_err(|e| StorageError::Corrupt(e.to_string()))
}

pub(crate) async fn load(pool: &PgPool, doc: &DocumentId) -> StorageResult<StoredDocument> {
    // One statement sees one snapshot of the table: a concurrent compaction is either wholly
    // visible (the snapshot, not the chunks it covers) or not at all.
    let rows = sqlx::query(
        "SELECT key, kind, data FROM concord_chunks WHERE doc = $1 ORDER BY kind DESC, id",
    )
    .bind(&doc.as_bytes()[..])
    .fetch_all(pool)
    .await
    .map_err(backend("load"))?;
    let chunks = rows
        .iter()
        .map(|r| chunk_of(r, "load"))
        .collect::<StorageResult<Vec<_>>>()?;
    // Byte order of peer ids, as SQLite's.
    let rows = sqlx::query(
        "SELECT peer, state FROM concord_sync_states WHERE doc = $1 ORDER BY peer COLLATE \"C\"",
    )
    .bind(&doc.as_bytes()[..])
    .fetch_all(pool)
    .await
    .map_err(backend("load"))?;
    let sync_states = rows
        .iter()
        .map(|r| {
            let peer: String = r.try_get(0).map_err(backend("load"))?;
            Ok((StorageId::new(peer), r.try_get(1).map_err(backend("load"))?))
        })
        .collect::<StorageResult<Vec<_>>>()?;
    Ok(StoredDocument {
        chunks,
        sync_states,
    })
}

pub(crate) async fn load_chunks(
    pool: &PgPool,
    doc: &DocumentId,
    keys: &[ChunkKey],
) -> StorageResult<Vec<Chunk>> {
    let keys: Vec<[u8; 32]> = keys.iter().map(|k| k.0).collect();
    let rows = sqlx::query(
        "SELECT key, kind, data FROM concord_chunks WHERE doc = $1 AND key = ANY($2::bytea[]) \
         ORDER BY kind DESC, id",
    )
    .bind(&doc.as_bytes()[..])
    .bind(&keys)
    .fetch_all(pool)
    .await
    .map_err(backend("load_chunks"))?;
    rows.iter().map(|r| chunk_of(r, "load_chunks")).collect()
}

pub(crate) async fn list(pool: &PgPool) -> StorageResult<Vec<DocumentId>> {
    let rows = sqlx::query("SELECT DISTINCT doc FROM concord_chunks ORDER BY doc")
        .fetch_all(pool)
        .await
        .map_err(backend("list"))?;
    rows.iter().map(|r| doc_of(r, "list")).collect()
}

pub(crate) async fn get_meta(pool: &PgPool, key: &str) -> StorageResult<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT value FROM concord_meta WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
        .map_err(backend("get_meta"))
}

pub(crate) async fn put_meta(pool: &PgPool, key: &str, value: &[u8]) -> StorageResult<()> {
    sqlx::query(
        "INSERT INTO concord_meta (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(key)
    .bind(value)
    .execute(pool)
    .await
    .map(|_| ())
    .map_err(backend("put_meta"))
}

pub(crate) async fn heads_index(pool: &PgPool) -> StorageResult<Vec<(DocumentId, Vec<u8>)>> {
    let rows = sqlx::query("SELECT doc, heads FROM concord_doc_heads ORDER BY doc")
        .fetch_all(pool)
        .await
        .map_err(backend("heads_index"))?;
    rows.iter()
        .map(|r| {
            let heads = r.try_get(1).map_err(backend("heads_index"))?;
            Ok((doc_of(r, "heads_index")?, heads))
        })
        .collect()
}

pub(crate) async fn ping(pool: &PgPool) -> StorageResult<()> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(backend("ping"))
}
