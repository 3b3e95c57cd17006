//! "One node of the cluster does this": PostgreSQL session advisory locks, each held on a
//! dedicated connection. PostgreSQL releases the lock when that session ends, so when its holder
//! dies (process killed, machine gone, connection cut), another node can take it over.
//!
//! ```no_run
//! # async fn demo(options: sqlx::postgres::PgConnectOptions) -> Result<(), concord_server::cluster::ClusterError> {
//! use std::time::Duration;
//! use concord_server::cluster::lock::AdvisoryLock;
//! if let Some(mut held) = AdvisoryLock::try_acquire(&options, "dial:us-east", Duration::from_secs(5)).await? {
//!     // ... dial the region; check now and then that the lock is still ours:
//!     if !held.is_held(Duration::from_secs(5)).await { /* stop: another node may take over */ }
//!     held.release().await;
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::{ClusterError, db};

/// The 64-bit advisory lock key of a name (the same on every node and version).
pub fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(format!("concord-lock:{name}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// A held lock: the session that holds it.
#[derive(Debug)]
pub struct AdvisoryLock {
    conn: PgConnection,
    name: String,
    key: i64,
}

impl AdvisoryLock {
    /// Takes the lock `name` if no other session holds it (`None` when one does); opens its own
    /// connection, within `timeout`.
    pub async fn try_acquire(
        options: &PgConnectOptions,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<Self>, ClusterError> {
        let key = lock_key(name);
        let attempt = async {
            let mut conn = PgConnection::connect_with(options).await?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut conn)
                .await?;
            Ok::<_, sqlx::Error>((conn, got))
        };
        let (conn, got) = match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result.map_err(db("advisory lock"))?,
            Err(_) => return Err(db("advisory lock")(sqlx::Error::PoolTimedOut)),
        };
        if !got {
            let _ = tokio::time::timeout(timeout, conn.close()).await;
            return Ok(None);
        }
        Ok(Some(Self {
            conn,
            name: name.to_owned(),
            key,
        }))
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True while the holding session answers within `timeout` (a session-level advisory lock
    /// lasts as long as its session). `false` means it may be lost: stop the guarded work.
    pub async fn is_held(&mut self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, self.conn.ping()).await,
            Ok(Ok(()))
        )
    }

    /// Releases the lock and closes its connection (dropping it releases it too, when the
    /// server notices the session is gone).
    pub async fn release(mut self) {
        let unlock = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut self.conn);
        let _ = tokio::time::timeout(Duration::from_secs(5), unlock).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.conn.close()).await;
    }
}
