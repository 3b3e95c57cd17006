//! Tombstones, change authors, owned documents and sync-state expiry on PostgreSQL (see
//! [`crate::storage`]'s records).

use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Row};

use super::error::backend;
use crate::id::DocumentId;
use crate::storage::{ChangeAuthor, OwnedDoc, StorageError, StorageResult, WriteOp};

fn doc_id(b: &[u8]) -> StorageResult<DocumentId> {
    DocumentId::try_from_slice(b).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// Executes a lifecycle write inside the caller's transaction; `false` for other writes.
pub(crate) async fn write(conn: &mut PgConnection, op: &WriteOp<'_>) -> Result<bool, sqlx::Error> {
    match *op {
        WriteOp::PutTombstone { doc, record } => {
            sqlx::query(
                "INSERT INTO concord_tombstones (doc, record) VALUES ($1, $2) \
                 ON CONFLICT (doc) DO UPDATE SET record = EXCLUDED.record",
            )
            .bind(&doc.as_bytes()[..])
            .bind(record)
            .execute(&mut *conn)
            .await?;
        }
        WriteOp::RemoveTombstone { doc } => {
            sqlx::query("DELETE FROM concord_tombstones WHERE doc = $1")
                .bind(&doc.as_bytes()[..])
                .execute(&mut *conn)
                .await?;
        }
        WriteOp::PutAuthors { doc, authors } => {
            let hashes: Vec<[u8; 32]> = authors.iter().map(|a| a.hash).collect();
            let principals: Vec<&str> = authors.iter().map(|a| a.principal.as_str()).collect();
            let at: Vec<i64> = authors
                .iter()
                .map(|a| i64::try_from(a.at_ms).unwrap_or(i64::MAX))
                .collect();
            sqlx::query(
                "INSERT INTO concord_change_authors (doc, hash, principal, at_ms) \
                 SELECT $1, u.hash, u.principal, u.at \
                 FROM unnest($2::bytea[], $3::text[], $4::bigint[]) AS u(hash, principal, at) \
                 ON CONFLICT (doc, hash) DO NOTHING",
            )
            .bind(&doc.as_bytes()[..])
            .bind(&hashes)
            .bind(&principals)
            .bind(&at)
            .execute(&mut *conn)
            .await?;
        }
        WriteOp::AddOwnedDoc { doc, principal } => {
            sqlx::query(
                "INSERT INTO concord_owned_docs (principal, doc) VALUES ($1, $2) \
                 ON CONFLICT (principal, doc) DO NOTHING",
            )
            .bind(principal)
            .bind(&doc.as_bytes()[..])
            .execute(&mut *conn)
            .await?;
        }
        WriteOp::Delete { doc } => {
            for sql in [
                "DELETE FROM concord_chunks WHERE doc = $1",
                "DELETE FROM concord_sync_states WHERE doc = $1",
                "DELETE FROM concord_doc_heads WHERE doc = $1",
                "DELETE FROM concord_change_authors WHERE doc = $1",
                "DELETE FROM concord_owned_docs WHERE doc = $1",
            ] {
                sqlx::query(sql)
                    .bind(&doc.as_bytes()[..])
                    .execute(&mut *conn)
                    .await?;
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

pub(crate) async fn tombstones(pool: &PgPool) -> StorageResult<Vec<(DocumentId, Vec<u8>)>> {
    let rows = sqlx::query("SELECT doc, record FROM concord_tombstones ORDER BY doc")
        .fetch_all(pool)
        .await
        .map_err(backend("tombstones"))?;
    rows.iter()
        .map(|r| {
            let doc: Vec<u8> = r.try_get(0).map_err(backend("tombstones"))?;
            Ok((doc_id(&doc)?, r.try_get(1).map_err(backend("tombstones"))?))
        })
        .collect()
}

pub(crate) async fn authors(pool: &PgPool, doc: &DocumentId) -> StorageResult<Vec<ChangeAuthor>> {
    let rows = sqlx::query(
        "SELECT hash, principal, at_ms FROM concord_change_authors WHERE doc = $1 \
         ORDER BY at_ms, hash",
    )
    .bind(&doc.as_bytes()[..])
    .fetch_all(pool)
    .await
    .map_err(backend("authors"))?;
    rows.iter()
        .map(|r| {
            let hash: Vec<u8> = r.try_get(0).map_err(backend("authors"))?;
            let at: i64 = r.try_get(2).map_err(backend("authors"))?;
            Ok(ChangeAuthor {
                hash: hash
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("change hash is not 32 bytes".into()))?,
                principal: r.try_get(1).map_err(backend("authors"))?,
                at_ms: u64::try_from(at).unwrap_or(0),
            })
        })
        .collect()
}

pub(crate) async fn owned_docs(
    pool: &PgPool,
    principal: &str,
    after: Option<u64>,
    limit: usize,
) -> StorageResult<Vec<OwnedDoc>> {
    let rows = sqlx::query(
        "SELECT id, doc FROM concord_owned_docs WHERE principal = $1 AND id > $2 \
         ORDER BY id LIMIT $3",
    )
    .bind(principal)
    .bind(i64::try_from(after.unwrap_or(0)).unwrap_or(i64::MAX))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(backend("owned_docs"))?;
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get(0).map_err(backend("owned_docs"))?;
            let doc: Vec<u8> = r.try_get(1).map_err(backend("owned_docs"))?;
            Ok(OwnedDoc {
                cursor: u64::try_from(id).unwrap_or(0),
                doc: doc_id(&doc)?,
            })
        })
        .collect()
}

pub(crate) async fn expire_sync_states(pool: &PgPool, before_ms: u64) -> StorageResult<u64> {
    let r = sqlx::query(
        "DELETE FROM concord_sync_states WHERE updated_at < to_timestamp($1::double precision / 1000)",
    )
    .bind(before_ms as f64)
    .execute(pool)
    .await
    .map_err(backend("expire_sync_states"))?;
    Ok(r.rows_affected())
}
