//! Where a server keeps its documents, token keys and revocations: SQLite and files under
//! `--data`, or PostgreSQL shared by the nodes of a cluster (`--database`).

use std::future::Future;
use std::sync::Arc;

use concord::storage::postgres::{PgBus, PostgresStorage};
use concord::storage::{SqliteConfig, SqliteStorage, Storage};
use tokio::sync::watch;

use super::config::DatabaseUrl;
use super::metrics::{InstrumentedStorage, Metrics};
use super::{ServeConfig, ServerError};
use crate::auth::{KeyRing, Revocations};
use crate::cluster;
use crate::cluster::registry::Registration;

/// How long `/healthz` waits for PostgreSQL.
pub(crate) const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// An opened backend.
pub(crate) struct Opened {
    pub storage: Arc<dyn Storage>,
    pub keys: KeyRing,
    pub cluster: Option<ClusterNode>,
}

/// What a node of a cluster holds besides its storage.
#[derive(Debug)]
pub struct ClusterNode {
    /// This node's id.
    pub node: String,
    /// The shared database.
    pub storage: PostgresStorage,
    /// The bus to the other nodes.
    pub bus: Arc<PgBus>,
    /// This node's row in the registry, once it listens.
    pub registration: tokio::sync::Mutex<Option<Registration>>,
    /// One connection of its own for `/healthz`, so that a busy storage pool never makes a
    /// health check wait (nor a dead database make it hang: see [`ClusterNode::ping`]).
    health: sqlx::PgPool,
}

impl ClusterNode {
    /// `Ok` when PostgreSQL answers `SELECT 1` on the health connection within `timeout`.
    pub async fn ping(&self, timeout: std::time::Duration) -> Result<(), String> {
        let query = sqlx::query("SELECT 1").execute(&self.health);
        match tokio::time::timeout(timeout, query).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}

/// SQLite under `<data>/concord.db`, keys from the key file.
pub(crate) async fn open_sqlite(
    config: &ServeConfig,
    metrics: &Arc<Metrics>,
) -> Result<Opened, ServerError> {
    super::datadir::prepare(&config.data, config.allow_insecure_data_dir)?;
    let keys = KeyRing::load_or_create(&config.auth_keys)?;
    tracing::info!(kids = ?keys.kids(), file = %config.auth_keys.display(), "token keys loaded");
    let sqlite = SqliteStorage::open(SqliteConfig::new(config.data.join("concord.db"))).await?;
    Ok(Opened {
        storage: Arc::new(InstrumentedStorage::new(sqlite, metrics.clone())),
        keys,
        cluster: None,
    })
}

/// PostgreSQL: storage and server migrations, keys from the database, the bus listening.
pub(crate) async fn open_postgres(
    config: &ServeConfig,
    url: &DatabaseUrl,
    metrics: &Arc<Metrics>,
) -> Result<Opened, ServerError> {
    let node = match &config.node_id {
        Some(id) => id.clone(),
        None => cluster::default_node_id(),
    };
    let pg = cluster::postgres_config(config, url, &node);
    let database = pg.redacted_url();
    let storage = cluster::open(pg).await?;
    let keys = cluster::auth::load_or_create_keys(storage.pool()).await?;
    tracing::info!(kids = ?keys.kids(), "token keys loaded from the database");
    let bus = PgBus::start(&storage)
        .await
        .map_err(cluster::ClusterError::from)?;
    tracing::info!(%node, %database, channel = cluster::CHANNEL, "cluster mode: PostgreSQL storage, bus listening");
    let health = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(HEALTH_TIMEOUT)
        .connect_lazy_with(storage.connect_options().clone());
    Ok(Opened {
        storage: Arc::new(InstrumentedStorage::new(storage.clone(), metrics.clone())),
        keys,
        cluster: Some(ClusterNode {
            node,
            storage,
            bus: Arc::new(bus),
            registration: tokio::sync::Mutex::new(None),
            health,
        }),
    })
}

/// The revocations, reloaded every second until shutdown: from the file under `--data`, or from
/// the database.
pub(crate) async fn revocations(
    config: &ServeConfig,
    cluster: Option<&ClusterNode>,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> Result<watch::Receiver<Arc<Revocations>>, ServerError> {
    match cluster {
        Some(c) => {
            let pool = c.storage.pool().clone();
            let initial = cluster::auth::load_revocations(&pool).await?;
            let load = move || {
                let pool = pool.clone();
                async move { cluster::auth::load_revocations(&pool).await }
            };
            let what = "revocation list in the database";
            Ok(reload_every_second(initial, shutdown, metrics, what, load))
        }
        None => {
            let path = crate::auth::default_revocation_file(&config.data);
            let initial = Revocations::load(&path)?;
            let load = move || {
                let path = path.clone();
                async move { Revocations::load(&path) }
            };
            let what = "revocation file";
            Ok(reload_every_second(initial, shutdown, metrics, what, load))
        }
    }
}

/// Publishes `initial`, then what `load` returns every second, until `shutdown` (`what` names
/// the source in logs). A reload that fails keeps the previous list in force and is loud: an error log when it starts failing (and
/// every minute while it keeps failing), and `concord_revocation_reload_errors_total`.
fn reload_every_second<F, Fut, E>(
    initial: Revocations,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    what: &'static str,
    load: F,
) -> watch::Receiver<Arc<Revocations>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Revocations, E>> + Send,
    E: std::fmt::Display,
{
    const REPEAT: std::time::Duration = std::time::Duration::from_secs(60);
    let (tx, rx) = watch::channel(Arc::new(initial));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut failing_since: Option<tokio::time::Instant> = None;
        let mut last_error_log: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            match load().await {
                Ok(r) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            failed_for = ?since.elapsed(),
                            "the {what} is readable again"
                        );
                        last_error_log = None;
                    }
                    if *tx.borrow().as_ref() != r {
                        tracing::info!(
                            tokens = r.tokens.len(),
                            principals = r.principals.len(),
                            "revocations reloaded"
                        );
                        let _ = tx.send(Arc::new(r));
                    }
                }
                Err(e) => {
                    metrics.doors.revocation_reload_errors.inc();
                    let now = tokio::time::Instant::now();
                    let since = *failing_since.get_or_insert(now);
                    if last_error_log.is_none_or(|t| now.duration_since(t) >= REPEAT) {
                        tracing::error!(
                            error = %e,
                            failing_for = ?now.duration_since(since),
                            "cannot reload the {what}: tokens revoked since the last good read are still accepted"
                        );
                        last_error_log = Some(now);
                    }
                }
            }
        }
    });
    rx
}
