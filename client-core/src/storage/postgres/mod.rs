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
//!   that PostgreSQL aborts for a deadlock between two writers (or whose connection breaks)
//!   runs again.
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
mod pool;
mod read;
mod records;
mod schema;
mod write;

use std::future::Future;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};

pub use bus::{BusLag, PgBus, PgBusSettings};
pub use config::{
    MAX_NODE_ID_LEN, NotifyConfig, PostgresConfig, redact, validate_channel, validate_node_id,
};
pub use error::PgOpenError;
pub use notice::MAX_PAYLOAD;
pub use schema::{STORAGE_TABLE, migrate, storage_schema_version};

use super::{Chunk, ChunkKey, Storage, StorageResult, StoredDocument, WriteOp};
use crate::id::{DocumentId, StorageId};

/// Storage in a PostgreSQL database, shared by any number of processes.
#[derive(Debug, Clone)]
pub struct PostgresStorage {
    pool: PgPool,
    config: PostgresConfig,
    options: PgConnectOptions,
    /// How long one operation may take ([`pool::deadline`]).
    deadline: Duration,
}

impl PostgresStorage {
    /// Connects (checking the URL, credentials and database with one connection first, within
    /// [`PostgresConfig::connect_timeout`]), opens the pool and applies the migrations.
    ///
    /// Every operation afterwards fails rather than wait longer than the acquire timeout plus
    /// twice the statement timeout (a write that fails so is not acknowledged).
    pub async fn open(config: PostgresConfig) -> Result<Self, PgOpenError> {
        let options = config.connect_options()?;
        check_connect(&config, &options).await?;
        let pool = pool::lazy_pool(&config, config.max_connections)?;
        let deadline = pool::deadline(&config);
        let migrated = tokio::time::timeout(deadline, schema::migrate_storage(&pool)).await;
        match migrated {
            Ok(result) => result?,
            Err(_) => {
                return Err(PgOpenError::Timeout {
                    target: target_of(&options),
                    timeout: deadline,
                });
            }
        }
        Ok(Self {
            pool,
            config,
            options,
            deadline,
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

    /// `Ok` when PostgreSQL answers a query (within the operation deadline).
    pub async fn ping(&self) -> StorageResult<()> {
        self.within("ping", read::ping(&self.pool)).await
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn commit(&self, name: &'static str, ops: &[WriteOp<'_>]) -> StorageResult<()> {
        let notify = self.config.notify.as_ref();
        self.within(name, write::commit(&self.pool, notify, name, ops))
            .await
    }

    async fn within<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = StorageResult<T>>,
    ) -> StorageResult<T> {
        pool::within(self.deadline, op, fut).await
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

#[async_trait::async_trait]
impl Storage for PostgresStorage {
    async fn load(&self, doc: &DocumentId) -> StorageResult<StoredDocument> {
        self.within("load", read::load(&self.pool, doc)).await
    }

    async fn load_chunks(&self, doc: &DocumentId, keys: &[ChunkKey]) -> StorageResult<Vec<Chunk>> {
        if keys.is_empty() {
            return self.load(doc).await.map(|s| s.chunks);
        }
        self.within("load_chunks", read::load_chunks(&self.pool, doc, keys))
            .await
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
        self.within("list", read::list(&self.pool)).await
    }

    async fn delete(&self, doc: &DocumentId) -> StorageResult<()> {
        self.commit("delete", &[WriteOp::Delete { doc }]).await
    }

    async fn put_tombstone(&self, doc: &DocumentId, record: &[u8]) -> StorageResult<()> {
        self.commit("put_tombstone", &[WriteOp::PutTombstone { doc, record }])
            .await
    }

    async fn remove_tombstone(&self, doc: &DocumentId) -> StorageResult<()> {
        self.commit("remove_tombstone", &[WriteOp::RemoveTombstone { doc }])
            .await
    }

    async fn tombstones(&self) -> StorageResult<Vec<(DocumentId, Vec<u8>)>> {
        self.within("tombstones", records::tombstones(&self.pool))
            .await
    }

    async fn put_authors(
        &self,
        doc: &DocumentId,
        authors: &[super::ChangeAuthor],
    ) -> StorageResult<()> {
        self.commit("put_authors", &[WriteOp::PutAuthors { doc, authors }])
            .await
    }

    async fn authors(&self, doc: &DocumentId) -> StorageResult<Vec<super::ChangeAuthor>> {
        self.within("authors", records::authors(&self.pool, doc))
            .await
    }

    async fn add_owned_doc(&self, principal: &str, doc: &DocumentId) -> StorageResult<()> {
        self.commit("add_owned_doc", &[WriteOp::AddOwnedDoc { doc, principal }])
            .await
    }

    async fn owned_docs(
        &self,
        principal: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StorageResult<Vec<super::OwnedDoc>> {
        self.within(
            "owned_docs",
            records::owned_docs(&self.pool, principal, after, limit),
        )
        .await
    }

    async fn expire_sync_states(&self, before_ms: u64) -> StorageResult<u64> {
        self.within(
            "expire_sync_states",
            records::expire_sync_states(&self.pool, before_ms),
        )
        .await
    }

    async fn get_meta(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        self.within("get_meta", read::get_meta(&self.pool, key))
            .await
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> StorageResult<()> {
        self.within("put_meta", read::put_meta(&self.pool, key, value))
            .await
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
        self.within("heads_index", read::heads_index(&self.pool))
            .await
            .map(Some)
    }
}
