//! PostgreSQL storage and cluster bus (feature `postgres`): several `concord serve` nodes share
//! one database, and tell each other what they committed with `LISTEN`/`NOTIFY`.
//!
//! - [`PostgresStorage`]: the whole [`Storage`] trait on PostgreSQL, with embedded migrations
//!   (tables `concord_chunks`, `concord_sync_states`, `concord_meta`, `concord_doc_heads`,
//!   tracked in `concord_storage_migrations`). Every write runs in a transaction and is
//!   acknowledged only once PostgreSQL's `COMMIT` returned; a [`Storage::write_batch`] is one
//!   transaction. Writers on other nodes may touch the same documents at any time: chunk inserts
//!   are idempotent (`ON CONFLICT DO NOTHING`), a compaction deletes exactly the chunks its
//!   snapshot covers, by key, in the transaction that inserts the snapshot, and a transaction
//!   that PostgreSQL aborts for a deadlock between two writers runs again.
//! - With [`PostgresConfig::notify`] set, every transaction that appends chunks announces them
//!   with `pg_notify` before it commits (PostgreSQL delivers the notification only if, and after,
//!   the transaction commits): payload = node id, document id and the new chunks' keys, or the
//!   document alone ("re-read it") when the keys would not fit the 8000-byte payload limit.
//! - [`PgBus`]: a [`ClusterBus`](crate::repo::ClusterBus) on `LISTEN`, delivering those notices
//!   (and ephemeral messages other nodes publish) to this node.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use concord::storage::postgres::{PgBus, PostgresConfig, PostgresStorage};
//! let config = PostgresConfig::new("postgres://concord:secret@db.internal/concord?sslmode=require")
//!     .with_notify("concord", "node-1");
//! let storage = PostgresStorage::open(config).await?; // one-line errors: see PgOpenError
//! let bus = PgBus::start(&storage).await?;            // notifies_commits() == true
//! # Ok(()) }
//! ```
//!
//! Opening fails with a [`PgOpenError`] naming what is wrong (URL, credentials, unreachable,
//! timeout, TLS, missing database, a schema newer than this binary) and never waits longer than
//! the configured timeouts.

mod bus;
mod config;
mod error;
mod notice;
mod schema;
mod write;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};

pub use bus::{PgBus, PgBusSettings};
pub use config::{
    MAX_NODE_ID_LEN, NotifyConfig, PostgresConfig, redact, validate_channel, validate_node_id,
};
pub use error::PgOpenError;
pub use notice::MAX_PAYLOAD;
pub use schema::{STORAGE_TABLE, migrate, storage_schema_version};

use super::{
    Chunk, ChunkKey, ChunkKind, Storage, StorageError, StorageResult, StoredDocument, WriteOp,
};
use crate::id::{DocumentId, StorageId};
use error::backend;

/// Storage in a PostgreSQL database, shared by any number of processes.
#[derive(Debug, Clone)]
pub struct PostgresStorage {
    pool: PgPool,
    config: PostgresConfig,
    options: PgConnectOptions,
}

impl PostgresStorage {
    /// Connects (checking the URL, credentials and database with one connection first, within
    /// [`PostgresConfig::connect_timeout`]), opens the pool and applies the migrations.
    pub async fn open(config: PostgresConfig) -> Result<Self, PgOpenError> {
        let options = config.connect_options()?;
        check_connect(&config, &options).await?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy_with(options.clone());
        schema::migrate_storage(&pool).await?;
        Ok(Self {
            pool,
            config,
            options,
        })
    }

    /// The connection pool (for a server's own tables in the same database).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The settings this storage was opened with.
    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    /// The connection options (URL, statement timeout, application name), for more connections
    /// to the same database.
    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// Where commits are announced, if they are.
    pub fn notify(&self) -> Option<&NotifyConfig> {
        self.config.notify.as_ref()
    }

    /// True when PostgreSQL answers a query within the acquire timeout.
    pub async fn ping(&self) -> StorageResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(backend("ping"))
    }

    /// The chunks of `doc` among `keys` (snapshots first, then increments in insertion order).
    /// A key that is missing was never stored or has been compacted away meanwhile: a caller that
    /// needs it loads the whole document instead.
    pub async fn load_chunks(
        &self,
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
        .fetch_all(&self.pool)
        .await
        .map_err(backend("load_chunks"))?;
        rows.iter().map(|r| chunk_of(r, "load_chunks")).collect()
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn commit(&self, name: &'static str, ops: &[WriteOp<'_>]) -> StorageResult<()> {
        write::commit(&self.pool, self.config.notify.as_ref(), name, ops).await
    }
}

/// `host:port/database` of `options` (never the password), for errors.
pub(crate) fn target_of(options: &PgConnectOptions) -> String {
    let host = match options.get_socket() {
        Some(dir) => dir.display().to_string(),
        None => options.get_host().to_owned(),
    };
    format!(
        "{host}:{}/{}",
        options.get_port(),
        options.get_database().unwrap_or(options.get_username())
    )
}

/// Opens and closes one connection, so that a bad URL, credentials, database or address is
/// reported as such (a pool would only say it timed out).
async fn check_connect(
    config: &PostgresConfig,
    options: &PgConnectOptions,
) -> Result<(), PgOpenError> {
    let target = target_of(options);
    let timeout = config.connect_timeout;
    match tokio::time::timeout(timeout, PgConnection::connect_with(options)).await {
        Err(_) => Err(PgOpenError::Timeout { target, timeout }),
        Ok(Err(e)) => Err(PgOpenError::from_connect(&target, timeout, e)),
        Ok(Ok(conn)) => {
            // A failure to say goodbye does not matter: the server drops the session anyway.
            let _ = tokio::time::timeout(timeout, conn.close()).await;
            Ok(())
        }
    }
}

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

#[async_trait::async_trait]
impl Storage for PostgresStorage {
    async fn load(&self, doc: &DocumentId) -> StorageResult<StoredDocument> {
        // One statement sees one snapshot of the table: a concurrent compaction is either wholly
        // visible (the snapshot, not the chunks it covers) or not at all.
        let rows = sqlx::query(
            "SELECT key, kind, data FROM concord_chunks WHERE doc = $1 ORDER BY kind DESC, id",
        )
        .bind(&doc.as_bytes()[..])
        .fetch_all(&self.pool)
        .await
        .map_err(backend("load"))?;
        let chunks = rows
            .iter()
            .map(|r| chunk_of(r, "load"))
            .collect::<StorageResult<Vec<_>>>()?;
        let rows = sqlx::query(
            "SELECT peer, state FROM concord_sync_states WHERE doc = $1 ORDER BY peer COLLATE \"C\"",
        )
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
        self.commit("append", &[WriteOp::Append { doc, key, bytes }])
            .await
    }

    async fn compact(
        &self,
        doc: &DocumentId,
        key: ChunkKey,
        snapshot: &[u8],
        covered: &[ChunkKey],
    ) -> StorageResult<()> {
        let op = WriteOp::Compact {
            doc,
            key,
            snapshot,
            covered,
        };
        self.commit("compact", &[op]).await
    }

    async fn put_sync_state(
        &self,
        doc: &DocumentId,
        peer: &StorageId,
        state: &[u8],
    ) -> StorageResult<()> {
        let op = WriteOp::PutSyncState { doc, peer, state };
        self.commit("put_sync_state", &[op]).await
    }

    async fn list(&self) -> StorageResult<Vec<DocumentId>> {
        let rows = sqlx::query("SELECT DISTINCT doc FROM concord_chunks ORDER BY doc")
            .fetch_all(&self.pool)
            .await
            .map_err(backend("list"))?;
        rows.iter().map(|r| doc_of(r, "list")).collect()
    }

    async fn delete(&self, doc: &DocumentId) -> StorageResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend("delete"))?;
        for sql in [
            "DELETE FROM concord_chunks WHERE doc = $1",
            "DELETE FROM concord_sync_states WHERE doc = $1",
            "DELETE FROM concord_doc_heads WHERE doc = $1",
        ] {
            sqlx::query(sql)
                .bind(&doc.as_bytes()[..])
                .execute(&mut *tx)
                .await
                .map_err(backend("delete"))?;
        }
        tx.commit().await.map_err(backend("delete"))
    }

    async fn get_meta(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT value FROM concord_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend("get_meta"))
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO concord_meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(backend("put_meta"))
    }

    async fn put_heads(&self, doc: &DocumentId, heads: &[u8]) -> StorageResult<()> {
        self.commit("put_heads", &[WriteOp::PutHeads { doc, heads }])
            .await
    }

    async fn write_batch(&self, ops: &[WriteOp<'_>]) -> StorageResult<()> {
        let name = match ops {
            [one] => one.name(),
            _ => "write_batch",
        };
        self.commit(name, ops).await
    }

    async fn heads_index(&self) -> StorageResult<Option<Vec<(DocumentId, Vec<u8>)>>> {
        let rows = sqlx::query("SELECT doc, heads FROM concord_doc_heads ORDER BY doc")
            .fetch_all(&self.pool)
            .await
            .map_err(backend("heads_index"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    doc_of(r, "heads_index")?,
                    r.try_get(1).map_err(backend("heads_index"))?,
                ))
            })
            .collect::<StorageResult<Vec<_>>>()
            .map(Some)
    }
}
