//! SQLite storage through sqlx (WAL journal, embedded migrations).
//!
//! # Durability
//!
//! The journal is WAL. [`Synchronous::Full`] (the default) fsyncs the WAL on every commit: an
//! acknowledged write survives both a process crash and a power loss / OS crash.
//! [`Synchronous::Normal`] fsyncs only at checkpoints: an acknowledged write survives a process
//! crash (the WAL frame is in the OS page cache before the commit returns), but the last
//! transactions may roll back on power loss (the database itself is never corrupted).
//! Compaction runs in one transaction either way, and so does a [`Storage::write_batch`] (one
//! commit, one fsync, for every write in it).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::{
    ChangeAuthor, Chunk, ChunkKey, ChunkKind, OwnedDoc, Storage, StorageError, StorageResult,
    StoredDocument, WriteOp,
};
use crate::id::{DocumentId, StorageId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// SQLite's `synchronous` setting (see the module docs for what each guarantees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// fsync on every commit: durable across power loss.
    #[default]
    Full,
    /// fsync at checkpoints: durable across process crashes only.
    Normal,
}

/// How to open a [`SqliteStorage`].
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// Database file (created if missing).
    pub path: PathBuf,
    /// Durability of each commit.
    pub synchronous: Synchronous,
    /// How long a statement waits for a lock held by another connection or process.
    pub busy_timeout: Duration,
    /// Connection pool size.
    pub max_connections: u32,
}

impl SqliteConfig {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_connections: 4,
        }
    }
}

/// Storage in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStorage {
    pool: SqlitePool,
}

fn backend(op: &'static str) -> impl FnOnce(sqlx::Error) -> StorageError {
    move |e| StorageError::Backend {
        op,
        message: e.to_string(),
    }
}

impl SqliteStorage {
    /// Opens (creating if needed) and migrates the database.
    pub async fn open(config: SqliteConfig) -> StorageResult<Self> {
        let sync = match config.synchronous {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
        };
        let opts = SqliteConnectOptions::new()
            .filename(&config.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .busy_timeout(config.busy_timeout)
            .foreign_keys(true);
        Self::connect(opts, config.max_connections.max(1)).await
    }

    /// Opens a pool with `opts` and runs the embedded migrations.
    async fn connect(opts: SqliteConnectOptions, max_connections: u32) -> StorageResult<Self> {
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(opts)
            .await
            .map_err(backend("open"))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StorageError::Backend {
                op: "migrate",
                message: e.to_string(),
            })?;
        Ok(Self { pool })
    }

    /// Opens an in-memory database (one shared connection), for tests.
    pub async fn open_in_memory() -> StorageResult<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:").map_err(backend("open"))?;
        Self::connect(opts, 1).await
    }

    /// Runs `PRAGMA integrity_check` and returns its result (`"ok"` when healthy).
    pub async fn integrity_check(&self) -> StorageResult<String> {
        let rows = sqlx::query("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await
            .map_err(backend("integrity_check"))?;
        let lines: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0).unwrap_or_default())
            .collect();
        Ok(lines.join("\n"))
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// One write in its own transaction (a compaction's statements) or in autocommit (a single
    /// statement).
    async fn write_alone(&self, op: WriteOp<'_>) -> StorageResult<()> {
        if let WriteOp::Compact { .. } = op {
            return self.commit_all(&[op]).await;
        }
        let mut conn = self.pool.acquire().await.map_err(backend(op.name()))?;
        write_on(&mut conn, &op).await.map_err(backend(op.name()))
    }

    /// Every write of `ops` in one transaction, or none.
    async fn commit_all(&self, ops: &[WriteOp<'_>]) -> StorageResult<()> {
        let name = match ops {
            [] => return Ok(()),
            [one] => one.name(),
            _ => "write_batch",
        };
        let mut tx = self.pool.begin().await.map_err(backend(name))?;
        for op in ops {
            if let Err(e) = write_on(&mut tx, op).await {
                // Dropping the transaction would roll it back too; say so explicitly.
                let _ = tx.rollback().await;
                return Err(backend(op.name())(e));
            }
        }
        tx.commit().await.map_err(backend(name))
    }
}

/// Stores a chunk unless its key is there already.
async fn insert_chunk(
    conn: &mut SqliteConnection,
    doc: &DocumentId,
    key: ChunkKey,
    kind: ChunkKind,
    bytes: &[u8],
) -> Result<(), sqlx::Error> {
    let kind: i64 = match kind {
        ChunkKind::Incremental => 0,
        ChunkKind::Snapshot => 1,
    };
    sqlx::query("INSERT OR IGNORE INTO chunks (doc, key, kind, data) VALUES (?, ?, ?, ?)")
        .bind(&doc.as_bytes()[..])
        .bind(&key.0[..])
        .bind(kind)
        .bind(bytes)
        .execute(conn)
        .await?;
    Ok(())
}

/// Executes one write's statements on `conn` (inside the caller's transaction, if any).
async fn write_on(conn: &mut SqliteConnection, op: &WriteOp<'_>) -> Result<(), sqlx::Error> {
    match *op {
        WriteOp::Append { doc, key, bytes } => {
            insert_chunk(conn, doc, key, ChunkKind::Incremental, bytes).await?;
        }
        WriteOp::Compact {
            doc,
            key,
            snapshot,
            covered,
        } => {
            insert_chunk(conn, doc, key, ChunkKind::Snapshot, snapshot).await?;
            sqlx::query("UPDATE chunks SET kind = 1 WHERE doc = ? AND key = ?")
                .bind(&doc.as_bytes()[..])
                .bind(&key.0[..])
                .execute(&mut *conn)
                .await?;
            for k in covered.iter().filter(|k| **k != key) {
                sqlx::query("DELETE FROM chunks WHERE doc = ? AND key = ?")
                    .bind(&doc.as_bytes()[..])
                    .bind(&k.0[..])
                    .execute(&mut *conn)
                    .await?;
            }
        }
        WriteOp::PutSyncState { doc, peer, state } => {
            sqlx::query(
                "INSERT OR REPLACE INTO sync_states (doc, peer, state, updated_at) \
                 VALUES (?, ?, ?, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
            )
            .bind(&doc.as_bytes()[..])
            .bind(peer.as_str())
            .bind(state)
            .execute(&mut *conn)
            .await?;
        }
        WriteOp::PutTombstone { doc, record } => {
            sqlx::query("INSERT OR REPLACE INTO tombstones (doc, record) VALUES (?, ?)")
                .bind(&doc.as_bytes()[..])
                .bind(record)
                .execute(&mut *conn)
                .await?;
        }
        WriteOp::RemoveTombstone { doc } => {
            sqlx::query("DELETE FROM tombstones WHERE doc = ?")
                .bind(&doc.as_bytes()[..])
                .execute(&mut *conn)
                .await?;
        }
        WriteOp::PutAuthors { doc, authors } => {
            for a in authors {
                sqlx::query(
                    "INSERT OR IGNORE INTO change_authors (doc, hash, principal, at_ms) \
                     VALUES (?, ?, ?, ?)",
                )
                .bind(&doc.as_bytes()[..])
                .bind(&a.hash[..])
                .bind(&a.principal)
                .bind(i64::try_from(a.at_ms).unwrap_or(i64::MAX))
                .execute(&mut *conn)
                .await?;
            }
        }
        WriteOp::AddOwnedDoc { doc, principal } => {
            sqlx::query("INSERT OR IGNORE INTO owned_docs (principal, doc) VALUES (?, ?)")
                .bind(principal)
                .bind(&doc.as_bytes()[..])
                .execute(&mut *conn)
                .await?;
        }
        WriteOp::Delete { doc } => {
            for table in [
                "DELETE FROM chunks WHERE doc = ?",
                "DELETE FROM sync_states WHERE doc = ?",
                "DELETE FROM doc_heads WHERE doc = ?",
                "DELETE FROM change_authors WHERE doc = ?",
                "DELETE FROM owned_docs WHERE doc = ?",
            ] {
                sqlx::query(table)
                    .bind(&doc.as_bytes()[..])
                    .execute(&mut *conn)
                    .await?;
            }
        }
        WriteOp::PutHeads { doc, heads } => {
            sqlx::query("INSERT OR REPLACE INTO doc_heads (doc, heads) VALUES (?, ?)")
                .bind(&doc.as_bytes()[..])
                .bind(heads)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

fn kind_of(v: i64) -> StorageResult<ChunkKind> {
    match v {
        0 => Ok(ChunkKind::Incremental),
        1 => Ok(ChunkKind::Snapshot),
        other => Err(StorageError::Corrupt(format!("unknown chunk kind {other}"))),
    }
}

#[async_trait::async_trait]
impl Storage for SqliteStorage {
    async fn load(&self, doc: &DocumentId) -> StorageResult<StoredDocument> {
        let rows =
            sqlx::query("SELECT key, kind, data FROM chunks WHERE doc = ? ORDER BY kind DESC, id")
                .bind(&doc.as_bytes()[..])
                .fetch_all(&self.pool)
                .await
                .map_err(backend("load"))?;
        let mut chunks = Vec::with_capacity(rows.len());
        for r in rows {
            let key: Vec<u8> = r.try_get(0).map_err(backend("load"))?;
            let key: [u8; 32] = key
                .try_into()
                .map_err(|_| StorageError::Corrupt("chunk key is not 32 bytes".into()))?;
            chunks.push(Chunk {
                key: ChunkKey(key),
                kind: kind_of(r.try_get(1).map_err(backend("load"))?)?,
                bytes: r.try_get(2).map_err(backend("load"))?,
            });
        }
        let rows = sqlx::query("SELECT peer, state FROM sync_states WHERE doc = ? ORDER BY peer")
            .bind(&doc.as_bytes()[..])
            .fetch_all(&self.pool)
            .await
            .map_err(backend("load"))?;
        let mut sync_states = Vec::with_capacity(rows.len());
        for r in rows {
            let peer: String = r.try_get(0).map_err(backend("load"))?;
            sync_states.push((StorageId::new(peer), r.try_get(1).map_err(backend("load"))?));
        }
        Ok(StoredDocument {
            chunks,
            sync_states,
        })
    }

    async fn append(&self, doc: &DocumentId, key: ChunkKey, bytes: &[u8]) -> StorageResult<()> {
        self.write_alone(WriteOp::Append { doc, key, bytes }).await
    }

    async fn compact(
        &self,
        doc: &DocumentId,
        key: ChunkKey,
        snapshot: &[u8],
        covered: &[ChunkKey],
    ) -> StorageResult<()> {
        self.write_alone(WriteOp::Compact {
            doc,
            key,
            snapshot,
            covered,
        })
        .await
    }

    async fn put_sync_state(
        &self,
        doc: &DocumentId,
        peer: &StorageId,
        state: &[u8],
    ) -> StorageResult<()> {
        self.write_alone(WriteOp::PutSyncState { doc, peer, state })
            .await
    }

    async fn list(&self) -> StorageResult<Vec<DocumentId>> {
        let rows = sqlx::query("SELECT DISTINCT doc FROM chunks ORDER BY doc")
            .fetch_all(&self.pool)
            .await
            .map_err(backend("list"))?;
        rows.iter()
            .map(|r| {
                let b: Vec<u8> = r.try_get(0).map_err(backend("list"))?;
                DocumentId::try_from_slice(&b).map_err(|e| StorageError::Corrupt(e.to_string()))
            })
            .collect()
    }

    async fn delete(&self, doc: &DocumentId) -> StorageResult<()> {
        self.write_alone(WriteOp::Delete { doc }).await
    }

    async fn get_meta(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend("get_meta"))?;
        row.map(|r| r.try_get(0).map_err(backend("get_meta")))
            .transpose()
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> StorageResult<()> {
        sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(backend("put_meta"))?;
        Ok(())
    }

    async fn put_heads(&self, doc: &DocumentId, heads: &[u8]) -> StorageResult<()> {
        self.write_alone(WriteOp::PutHeads { doc, heads }).await
    }

    async fn write_batch(&self, ops: &[WriteOp<'_>]) -> StorageResult<()> {
        self.commit_all(ops).await
    }

    async fn put_tombstone(&self, doc: &DocumentId, record: &[u8]) -> StorageResult<()> {
        self.write_alone(WriteOp::PutTombstone { doc, record })
            .await
    }

    async fn remove_tombstone(&self, doc: &DocumentId) -> StorageResult<()> {
        self.write_alone(WriteOp::RemoveTombstone { doc }).await
    }

    async fn tombstones(&self) -> StorageResult<Vec<(DocumentId, Vec<u8>)>> {
        let rows = sqlx::query("SELECT doc, record FROM tombstones ORDER BY doc")
            .fetch_all(&self.pool)
            .await
            .map_err(backend("tombstones"))?;
        rows.iter()
            .map(|r| {
                let b: Vec<u8> = r.try_get(0).map_err(backend("tombstones"))?;
                let doc = DocumentId::try_from_slice(&b)
                    .map_err(|e| StorageError::Corrupt(e.to_string()))?;
                Ok((doc, r.try_get(1).map_err(backend("tombstones"))?))
            })
            .collect()
    }

    async fn put_authors(&self, doc: &DocumentId, authors: &[ChangeAuthor]) -> StorageResult<()> {
        self.write_alone(WriteOp::PutAuthors { doc, authors }).await
    }

    async fn authors(&self, doc: &DocumentId) -> StorageResult<Vec<ChangeAuthor>> {
        let rows = sqlx::query(
            "SELECT hash, principal, at_ms FROM change_authors WHERE doc = ? ORDER BY at_ms, hash",
        )
        .bind(&doc.as_bytes()[..])
        .fetch_all(&self.pool)
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

    async fn add_owned_doc(&self, principal: &str, doc: &DocumentId) -> StorageResult<()> {
        self.write_alone(WriteOp::AddOwnedDoc { doc, principal })
            .await
    }

    async fn owned_docs(
        &self,
        principal: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StorageResult<Vec<OwnedDoc>> {
        let rows = sqlx::query(
            "SELECT id, doc FROM owned_docs WHERE principal = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(principal)
        .bind(i64::try_from(after.unwrap_or(0)).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(backend("owned_docs"))?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get(0).map_err(backend("owned_docs"))?;
                let b: Vec<u8> = r.try_get(1).map_err(backend("owned_docs"))?;
                Ok(OwnedDoc {
                    cursor: u64::try_from(id).unwrap_or(0),
                    doc: DocumentId::try_from_slice(&b)
                        .map_err(|e| StorageError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }

    async fn expire_sync_states(&self, before_ms: u64) -> StorageResult<u64> {
        let r = sqlx::query("DELETE FROM sync_states WHERE updated_at < ?")
            .bind(i64::try_from(before_ms).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(backend("expire_sync_states"))?;
        Ok(r.rows_affected())
    }

    async fn heads_index(&self) -> StorageResult<Option<Vec<(DocumentId, Vec<u8>)>>> {
        let rows = sqlx::query("SELECT doc, heads FROM doc_heads ORDER BY doc")
            .fetch_all(&self.pool)
            .await
            .map_err(backend("heads_index"))?;
        rows.iter()
            .map(|r| {
                let b: Vec<u8> = r.try_get(0).map_err(backend("heads_index"))?;
                let doc = DocumentId::try_from_slice(&b)
                    .map_err(|e| StorageError::Corrupt(e.to_string()))?;
                Ok((doc, r.try_get(1).map_err(backend("heads_index"))?))
            })
            .collect::<StorageResult<Vec<_>>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance;

    #[tokio::test]
    async fn a_failing_write_rolls_back_its_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStorage::open(SqliteConfig::new(dir.path().join("poisoned.db")))
            .await
            .unwrap();
        // Every insert of the poisoned document aborts, as a full disk or a constraint would.
        let poisoned = hex::encode(conformance::POISONED.as_bytes());
        for table in ["chunks", "sync_states", "doc_heads"] {
            let sql = format!(
                "CREATE TRIGGER poison_{table} BEFORE INSERT ON {table} \
                 WHEN NEW.doc = X'{poisoned}' BEGIN SELECT RAISE(ABORT, 'injected'); END"
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&s.pool)
                .await
                .unwrap();
        }
        conformance::run_failing_batch(&s).await;
        assert_eq!(s.integrity_check().await.unwrap(), "ok");
    }
}
