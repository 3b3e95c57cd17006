//! Writes: every [`WriteOp`] of a call in one transaction, consecutive appends in one statement,
//! the commit notifications sent inside the transaction, and the whole transaction run again
//! when PostgreSQL aborts it for a deadlock with another writer or its connection breaks.

use std::time::Duration;

use sqlx::{PgConnection, PgPool, Row};

use super::config::NotifyConfig;
use super::error::{backend, is_retryable};
use super::notice;
use crate::id::DocumentId;
use crate::storage::{ChunkKey, StorageResult, WriteOp};

/// How often a transaction aborted by a deadlock, serialization failure or broken connection is
/// run again.
const MAX_RETRIES: u32 = 5;

/// A failed statement: the write it belonged to and sqlx's error.
type Failed = (&'static str, sqlx::Error);

/// The chunks a transaction appended, per document, for the commit notifications.
#[derive(Default)]
struct Appended {
    /// Documents in order of first append; `None` keys: "re-read the document".
    docs: Vec<(DocumentId, Option<Vec<ChunkKey>>)>,
}

impl Appended {
    fn add(&mut self, doc: DocumentId, key: ChunkKey) {
        match self.docs.iter_mut().find(|(d, _)| *d == doc) {
            Some((_, Some(keys))) => keys.push(key),
            Some((_, None)) => {}
            None => self.docs.push((doc, Some(vec![key]))),
        }
    }

    /// A compaction of `doc` in the same transaction may delete what was appended: the receivers
    /// re-read the document instead of fetching keys.
    fn compacted(&mut self, doc: &DocumentId) {
        if let Some((_, keys)) = self.docs.iter_mut().find(|(d, _)| d == doc) {
            *keys = None;
        }
    }

    fn payloads(&self, node: &str) -> Vec<String> {
        self.docs
            .iter()
            .map(|(doc, keys)| notice::committed(node, doc, keys.as_deref().unwrap_or(&[])))
            .collect()
    }
}

/// Commits `ops` as one transaction (`name` names it in errors), notifying appended chunks when
/// `notify` is set. Runs it again, up to [`MAX_RETRIES`] times, when PostgreSQL aborts it for a
/// deadlock or serialization failure or the connection breaks (every write is idempotent).
pub(crate) async fn commit(
    pool: &PgPool,
    notify: Option<&NotifyConfig>,
    name: &'static str,
    ops: &[WriteOp<'_>],
) -> StorageResult<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let mut attempt = 0;
    loop {
        match try_commit(pool, notify, name, ops).await {
            Ok(()) => return Ok(()),
            Err((_, e)) if is_retryable(&e) && attempt < MAX_RETRIES => {
                attempt += 1;
                tracing::debug!(attempt, error = %e, "postgres: transaction aborted, running it again");
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
            }
            Err((op, e)) => return Err(backend(op)(e)),
        }
    }
}

async fn try_commit(
    pool: &PgPool,
    notify: Option<&NotifyConfig>,
    name: &'static str,
    ops: &[WriteOp<'_>],
) -> Result<(), Failed> {
    let mut tx = pool.begin().await.map_err(|e| (name, e))?;
    let mut appended = Appended::default();
    let mut rest = ops;
    while let Some(op) = rest.first() {
        let run = rest
            .iter()
            .take_while(|o| matches!(o, WriteOp::Append { .. }))
            .count();
        if run > 0 {
            append_run(&mut tx, &rest[..run], &mut appended).await?;
            rest = &rest[run..];
            continue;
        }
        write_one(&mut tx, op, &mut appended).await?;
        rest = &rest[1..];
    }
    if let Some(n) = notify {
        let payloads = appended.payloads(&n.node);
        if !payloads.is_empty() {
            sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
                .bind(&n.channel)
                .bind(&payloads)
                .execute(&mut *tx)
                .await
                .map_err(|e| ("notify", e))?;
        }
    }
    tx.commit().await.map_err(|e| (name, e))
}

/// Inserts consecutive appends with one statement, in order; records the chunks that were new.
async fn append_run(
    conn: &mut PgConnection,
    run: &[WriteOp<'_>],
    appended: &mut Appended,
) -> Result<(), Failed> {
    let (mut docs, mut keys, mut data) = (Vec::new(), Vec::new(), Vec::new());
    for op in run {
        if let WriteOp::Append { doc, key, bytes } = *op {
            docs.push(&doc.as_bytes()[..]);
            keys.push(key.0);
            data.push(bytes);
        }
    }
    let rows = sqlx::query(
        "INSERT INTO concord_chunks (doc, key, kind, data) \
         SELECT u.doc, u.key, 0, u.data \
         FROM unnest($1::bytea[], $2::bytea[], $3::bytea[]) WITH ORDINALITY AS u(doc, key, data, n) \
         ORDER BY u.n \
         ON CONFLICT (doc, key) DO NOTHING \
         RETURNING doc, key",
    )
    .bind(&docs)
    .bind(&keys)
    .bind(&data)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| ("append", e))?;
    for row in rows {
        let decode = |e| ("append", e);
        let doc: Vec<u8> = row.try_get(0).map_err(decode)?;
        let key: Vec<u8> = row.try_get(1).map_err(decode)?;
        // The rows are the ones just inserted from `run`, so both always convert.
        if let (Ok(doc), Ok(key)) = (DocumentId::try_from_slice(&doc), <[u8; 32]>::try_from(key)) {
            appended.add(doc, ChunkKey(key));
        }
    }
    Ok(())
}

/// Executes one write on `conn`.
async fn write_one(
    conn: &mut PgConnection,
    op: &WriteOp<'_>,
    appended: &mut Appended,
) -> Result<(), Failed> {
    let failed = |e| (op.name(), e);
    match *op {
        // The caller hands runs of appends to `append_run`; one on its own goes there too.
        WriteOp::Append { .. } => {
            return append_run(conn, std::slice::from_ref(op), appended).await;
        }
        WriteOp::Compact {
            doc,
            key,
            snapshot,
            covered,
        } => {
            sqlx::query(
                "INSERT INTO concord_chunks (doc, key, kind, data) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (doc, key) DO UPDATE SET kind = 1",
            )
            .bind(&doc.as_bytes()[..])
            .bind(&key.0[..])
            .bind(snapshot)
            .execute(&mut *conn)
            .await
            .map_err(failed)?;
            // Only the covered chunks, by key: a chunk another node appended meanwhile stays.
            let covered: Vec<[u8; 32]> = covered.iter().map(|k| k.0).collect();
            sqlx::query(
                "DELETE FROM concord_chunks WHERE doc = $1 AND key = ANY($2::bytea[]) AND key <> $3",
            )
            .bind(&doc.as_bytes()[..])
            .bind(&covered)
            .bind(&key.0[..])
            .execute(&mut *conn)
            .await
            .map_err(failed)?;
            appended.compacted(doc);
        }
        WriteOp::PutSyncState { doc, peer, state } => {
            sqlx::query(
                "INSERT INTO concord_sync_states (doc, peer, state) VALUES ($1, $2, $3) \
                 ON CONFLICT (doc, peer) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
            )
            .bind(&doc.as_bytes()[..])
            .bind(peer.as_str())
            .bind(state)
            .execute(&mut *conn)
            .await
            .map_err(failed)?;
        }
        WriteOp::PutHeads { doc, heads } => {
            sqlx::query(
                "INSERT INTO concord_doc_heads (doc, heads) VALUES ($1, $2) \
                 ON CONFLICT (doc) DO UPDATE SET heads = EXCLUDED.heads",
            )
            .bind(&doc.as_bytes()[..])
            .bind(heads)
            .execute(&mut *conn)
            .await
            .map_err(failed)?;
        }
        _ => {
            super::records::write(conn, op).await.map_err(failed)?;
        }
    }
    Ok(())
}
