//! Token keys and revocations in the database (table `concord_auth`), in the formats of the key
//! file and the revocation file. Every node reads them; `concord token create/revoke
//! --database` write them.

use std::path::PathBuf;

use sqlx::PgPool;

use super::{ClusterError, db};
use crate::auth::{KeyRing, Revocations};

const KEYS: &str = "keys";
const REVOCATIONS: &str = "revocations";

/// How errors name the rows (in place of a file path).
fn origin(name: &str) -> PathBuf {
    PathBuf::from(format!("postgres:concord_auth/{name}"))
}

async fn read(pool: &PgPool, name: &str) -> Result<Option<String>, ClusterError> {
    sqlx::query_scalar("SELECT value FROM concord_auth WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(db("read concord_auth"))
}

/// The cluster's token keys, created (one fresh HMAC key) by the first node or command that
/// needs them; concurrent first starts agree on one key.
pub async fn load_or_create_keys(pool: &PgPool) -> Result<KeyRing, ClusterError> {
    if let Some(text) = read(pool, KEYS).await? {
        return Ok(KeyRing::parse(&text, &origin(KEYS))?);
    }
    let fresh = KeyRing::fresh_key_file().map_err(|e| ClusterError::Database {
        op: "create keys",
        message: e.to_string(),
    })?;
    let inserted = sqlx::query(
        "INSERT INTO concord_auth (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(KEYS)
    .bind(&fresh)
    .execute(pool)
    .await
    .map_err(db("create keys"))?;
    if inserted.rows_affected() == 1 {
        tracing::warn!("created the cluster's token signing key (in concord_auth)");
    }
    // Ours, or the one another node inserted first.
    let text = read(pool, KEYS).await?.unwrap_or(fresh);
    Ok(KeyRing::parse(&text, &origin(KEYS))?)
}

/// The revocations (none when never written).
pub async fn load_revocations(pool: &PgPool) -> Result<Revocations, ClusterError> {
    match read(pool, REVOCATIONS).await? {
        Some(text) => Ok(Revocations::parse(&text, &origin(REVOCATIONS))?),
        None => Ok(Revocations::default()),
    }
}

/// Changes the revocations in one transaction (concurrent updates queue on the row lock).
pub async fn update_revocations(
    pool: &PgPool,
    f: impl FnOnce(&mut Revocations),
) -> Result<(), ClusterError> {
    let mut tx = pool.begin().await.map_err(db("revoke"))?;
    // Make sure the row exists, then lock it.
    sqlx::query(
        "INSERT INTO concord_auth (name, value) VALUES ($1, '{}') ON CONFLICT (name) DO NOTHING",
    )
    .bind(REVOCATIONS)
    .execute(&mut *tx)
    .await
    .map_err(db("revoke"))?;
    let text: String =
        sqlx::query_scalar("SELECT value FROM concord_auth WHERE name = $1 FOR UPDATE")
            .bind(REVOCATIONS)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("revoke"))?;
    let mut list = Revocations::parse(&text, &origin(REVOCATIONS))?;
    f(&mut list);
    let text = serde_json::to_string(&list).map_err(|e| ClusterError::Database {
        op: "revoke",
        message: e.to_string(),
    })?;
    sqlx::query("UPDATE concord_auth SET value = $2, updated_at = now() WHERE name = $1")
        .bind(REVOCATIONS)
        .bind(text)
        .execute(&mut *tx)
        .await
        .map_err(db("revoke"))?;
    tx.commit().await.map_err(db("revoke"))
}
