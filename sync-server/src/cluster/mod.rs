//! Cluster mode: several `concord serve` nodes on one PostgreSQL database (`--database`).
//!
//! ```text
//! concord serve --database postgres://concord:pw@db/concord --node-id eu-1 --bind 0.0.0.0:3030
//! concord serve --database postgres://concord:pw@db/concord --node-id eu-2 --bind 0.0.0.0:3031
//! concord token create --database postgres://concord:pw@db/concord --principal alice
//! ```
//!
//! What the nodes share, all in the database:
//!
//! - documents: [`PostgresStorage`], whose commits are announced with `pg_notify` on
//!   [`CHANNEL`] and heard by every node's [`PgBus`];
//! - token keys and revocations ([`auth`]): the database rather than a file, because the nodes
//!   of a cluster usually run on machines that share no file system, because a revocation is
//!   then one transaction that every node reads within a second (no two `token revoke` runs can
//!   overwrite each other), and because whoever can read the database can read every document
//!   anyway. The first node to start creates the signing key;
//! - the registry of live nodes ([`registry`]), for `/admin/cluster`;
//! - advisory locks ([`lock`]) for work that one node of the cluster does on behalf of all:
//!   dialling another region ([`links`]: one link per peer URL for the whole cluster).
//!
//! LISTEN and session advisory locks need session-level connections: a pooler in between must
//! run in session mode (PgBouncer's transaction mode breaks both).

pub mod auth;
pub mod links;
pub mod lock;
pub mod registry;

use std::time::Duration;

use concord::storage::postgres::{PgOpenError, PostgresConfig, PostgresStorage, migrate};
use sqlx::PgPool;

use crate::server::ServeConfig;
use crate::server::config::DatabaseUrl;

/// The `LISTEN`/`NOTIFY` channel of commit notices and ephemeral messages.
pub const CHANNEL: &str = "concord_cluster";

/// The migrations table of the server's tables.
pub const SERVER_TABLE: &str = "concord_server_migrations";

static SERVER_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-postgres");

/// Why cluster mode failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The database could not be opened (URL, credentials, unreachable, schema too new, ...).
    #[error(transparent)]
    Open(#[from] PgOpenError),
    /// A statement failed.
    #[error("PostgreSQL failed during {op}: {message}")]
    Database {
        /// What was being done.
        op: &'static str,
        /// The driver's message.
        message: String,
    },
    /// The keys or revocations stored in the database are unusable.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// Another live node uses this node id.
    #[error(
        "node id {node:?} is used by a live node at {addr} (seen {seen_secs} s ago): give each node its own --node-id"
    )]
    DuplicateNode {
        /// The id.
        node: String,
        /// Where the other node listens.
        addr: String,
        /// Seconds since its last heartbeat.
        seen_secs: i64,
    },
}

pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> ClusterError {
    move |e| ClusterError::Database {
        op,
        message: e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// PostgreSQL settings of a node (`node`: its id, for notifications).
pub fn postgres_config(config: &ServeConfig, url: &DatabaseUrl, node: &str) -> PostgresConfig {
    let mut pg = PostgresConfig::new(url.0.clone()).with_notify(CHANNEL, node);
    pg.max_connections = config.database_pool;
    pg.statement_timeout = Duration::from_secs(config.database_statement_timeout_secs);
    pg.connect_timeout = Duration::from_secs(config.database_connect_timeout_secs);
    pg.acquire_timeout = pg.connect_timeout;
    pg
}

/// Opens the database: storage schema, then the server's tables, then the cluster's storage id.
pub async fn open(config: PostgresConfig) -> Result<PostgresStorage, ClusterError> {
    let storage = PostgresStorage::open(config).await?;
    migrate_server(storage.pool()).await?;
    ensure_storage_id(storage.pool()).await?;
    Ok(storage)
}

/// The nodes of a cluster are one durable peer: they share one storage id (the engine reads it
/// from `concord_meta` at start), so a client's `wait_durable(Server)` and heads gossip mean
/// "committed in the cluster's database" whichever node answers. Nodes starting at the same
/// time must not each write their own: the first insert wins, the others keep it.
async fn ensure_storage_id(pool: &PgPool) -> Result<(), ClusterError> {
    let id = concord::StorageId::from_random(rand::random());
    sqlx::query(
        "INSERT INTO concord_meta (key, value) VALUES ('storage_id', $1) ON CONFLICT (key) DO NOTHING",
    )
    .bind(id.as_str().as_bytes())
    .execute(pool)
    .await
    .map_err(db("storage id"))?;
    Ok(())
}

/// Applies the server's migrations (tracked in [`SERVER_TABLE`]).
pub async fn migrate_server(pool: &PgPool) -> Result<(), PgOpenError> {
    migrate(pool, SERVER_TABLE, &SERVER_MIGRATIONS).await
}

/// A node id when none is configured: the host name and 4 random bytes (logged at start).
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let suffix: u32 = rand::random();
    if host.is_empty() {
        format!("node-{suffix:08x}")
    } else {
        format!("{host}-{suffix:08x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_node_ids_are_valid_and_distinct() {
        let (a, b) = (default_node_id(), default_node_id());
        assert_ne!(a, b);
        concord::storage::postgres::validate_node_id(&a).unwrap();
    }
}
