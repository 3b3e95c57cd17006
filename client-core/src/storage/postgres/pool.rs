//! Connection pools that do not hang on a connection that died without a word (a network
//! partition, a dead load balancer): PostgreSQL's `statement_timeout` cannot help there, and a
//! socket that nobody answers may stay open for many minutes.
//!
//! - Every operation has a deadline ([`deadline`]): the acquire timeout plus twice the statement
//!   timeout. An operation past it fails (a write is then not acknowledged; every write is
//!   idempotent, so writing it again is safe whatever happened to it).
//! - A connection taken from the pool or given back to it must answer a ping within the connect
//!   timeout, or it is closed and replaced (sqlx's own checks wait as long as the socket does).

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool};

use super::config::PostgresConfig;
use crate::storage::{StorageError, StorageResult};

/// Pool options for `config` with `max` connections (the pool is opened lazily).
pub(crate) fn lazy_pool(config: &PostgresConfig, max: u32) -> Result<PgPool, super::PgOpenError> {
    let options = config.connect_options()?;
    let check = config.connect_timeout;
    Ok(PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(config.acquire_timeout)
        // Replaced by the bounded ping below.
        .test_before_acquire(false)
        .before_acquire(move |conn, _| Box::pin(async move { Ok(alive(conn, check).await) }))
        .after_release(move |conn, _| Box::pin(async move { Ok(alive(conn, check).await) }))
        .connect_lazy_with(options))
}

async fn alive(conn: &mut PgConnection, within: Duration) -> bool {
    matches!(tokio::time::timeout(within, conn.ping()).await, Ok(Ok(())))
}

/// How long one operation may take, all in all.
pub(crate) fn deadline(config: &PostgresConfig) -> Duration {
    config.acquire_timeout + 2 * config.statement_timeout
}

/// `fut`, failed as `op` when it is not done within `deadline`.
pub(crate) async fn within<T>(
    deadline: Duration,
    op: &'static str,
    fut: impl Future<Output = StorageResult<T>>,
) -> StorageResult<T> {
    match tokio::time::timeout(deadline, fut).await {
        Ok(result) => result,
        Err(_) => Err(StorageError::Backend {
            op,
            message: format!("no answer from PostgreSQL within {deadline:?}"),
        }),
    }
}
