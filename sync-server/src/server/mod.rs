//! The Concord sync server: the engine's core behind an axum WebSocket endpoint, with SQLite
//! storage, eviction of idle documents, metrics, a read-only admin API and graceful shutdown.
//!
//! Endpoints: `GET /sync` (WebSocket, automerge-repo protocol v1; `/` is accepted too, as
//! automerge-repo clients often dial the bare host), `GET /healthz`, `GET /metrics`,
//! `GET /admin/docs`, `GET /admin/docs/{id}`.

mod admission;
pub mod config;
mod http;
pub mod metrics;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use concord::core::{DeferApply, GrantPolicy, Housekeeping, Limits, RegionConfig};
use concord::storage::{SqliteConfig, SqliteStorage, StorageError};
use concord::{PeerId, Repo, RepoConfig, RepoError};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{ConfigError, LogFormat, ServeArgs, ServeConfig};
use metrics::{InstrumentedStorage, Metrics};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}")]
    DataDir {
        /// Directory.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Storage failed to open.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The token keys are unusable.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The engine failed to start.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The listening address is unusable (another process listens there, no permission, ...).
    #[error("cannot listen on {addr}: {error}{}", bind_hint(error))]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause (part of the message: one line says it all).
        error: std::io::Error,
    },
    /// Serving failed.
    #[error("cannot serve on {addr}")]
    Io {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// What every handler needs.
#[derive(Debug, Clone)]
pub struct AppState {
    repo: Repo,
    metrics: Arc<Metrics>,
    config: Arc<ServeConfig>,
    shutdown: watch::Receiver<bool>,
    keys: Option<Arc<crate::auth::KeyRing>>,
    counts: Arc<admission::Counts>,
    revoked: watch::Receiver<Arc<crate::auth::Revocations>>,
}

/// A server that is listening.
#[derive(Debug)]
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The engine.
    pub repo: Repo,
    /// Token keys (to mint tokens for tests and the development token).
    pub keys: Arc<crate::auth::KeyRing>,
    state: AppState,
    listener: TcpListener,
    shutdown_tx: watch::Sender<bool>,
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/sync", get(ws::upgrade))
        .route("/", get(ws::upgrade))
        .route("/healthz", get(http::healthz))
        .route("/metrics", get(http::metrics))
        .route("/admin/docs", get(http::list_docs))
        .route("/admin/docs/{id}", get(http::get_doc))
        .route("/admin/replication", get(http::replication))
        .with_state(state)
}

/// What to do about a bind error, for the error message.
fn bind_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another process listens there: stop it, or choose another address with --bind)"
        }
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need privileges: choose another with --bind)"
        }
        _ => "",
    }
}

/// Binds the listener (first, so that an unusable address fails before anything is opened),
/// opens storage and starts the engine.
pub async fn start(config: ServeConfig) -> Result<Running, ServerError> {
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|error| ServerError::Bind {
            addr: config.bind,
            error,
        })?;
    std::fs::create_dir_all(&config.data).map_err(|source| ServerError::DataDir {
        path: config.data.clone(),
        source,
    })?;
    let keys = crate::auth::KeyRing::load_or_create(&config.auth_keys)?;
    if config.insecure_no_auth {
        tracing::warn!(
            "INSECURE: --insecure-no-auth accepts peers without a token, with full access; never use it in production"
        );
    }
    tracing::info!(kids = ?keys.kids(), file = %config.auth_keys.display(), "token keys loaded");
    let (metrics, slot) = Metrics::new();
    let sqlite = SqliteStorage::open(SqliteConfig::new(config.data.join("concord.db"))).await?;
    let storage = Arc::new(InstrumentedStorage::new(sqlite, metrics.clone()));
    let nonce = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let repo_config = RepoConfig {
        peer_id: Some(PeerId::new(format!(
            "concord-server-{}-{nonce:08x}",
            config.region
        ))),
        policy: Arc::new(GrantPolicy {
            allow_anonymous: config.insecure_no_auth,
        }),
        limits: Limits {
            max_message_bytes: config.max_message_bytes,
            handshake_timeout_ms: config.handshake_timeout_secs.saturating_mul(1000),
            max_decompressed_bytes: config.max_decompressed_bytes,
            max_ops_per_message: config.max_ops_per_message,
            ..Limits::default()
        },
        housekeeping: Housekeeping {
            evict_idle_ms: Some(config.evict_idle_secs.saturating_mul(1000)),
            max_resident: Some(config.max_resident),
            ..Housekeeping::default()
        },
        outgoing_queue: config.outgoing_queue,
        defer_apply: Some(DeferApply {
            min_ops: config.defer_apply_min_ops,
            ..DeferApply::default()
        }),
        region: config.peer_secret.as_ref().map(|_| RegionConfig {
            name: config.region.clone(),
            anti_entropy_ms: config.anti_entropy_secs.saturating_mul(1000),
        }),
        ..RepoConfig::default()
    };
    let repo = Repo::open(storage, repo_config).await?;
    slot.set(repo.clone());
    if let Some(secret) = config.peer_secret.clone() {
        tracing::info!(
            region = %config.region,
            peers = ?config.peers.iter().map(|p| redact(p)).collect::<Vec<_>>(),
            indexed = repo.indexed_documents(),
            "region replication on"
        );
        for url in &config.peers {
            let (secret, region) = (secret.clone(), config.region.clone());
            let credentials: concord::repo::Credentials = Arc::new(move || {
                crate::auth::mint_region(secret.as_bytes(), &region)
                    .map_err(|e| tracing::error!(error = %e, "cannot mint a region token"))
                    .ok()
            });
            repo.connect_with_credentials(vec![url.clone()], credentials);
        }
    }
    let addr = listener.local_addr().map_err(|source| ServerError::Io {
        addr: config.bind,
        source,
    })?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let revoked = watch_revocations(
        crate::auth::default_revocation_file(&config.data),
        shutdown.clone(),
    )?;
    let state = AppState {
        repo: repo.clone(),
        metrics,
        config: Arc::new(config),
        shutdown,
        keys: Some(Arc::new(keys)),
        counts: Arc::default(),
        revoked,
    };
    let keys = state.keys.clone().unwrap_or_default();
    Ok(Running {
        addr,
        repo,
        keys,
        state,
        listener,
        shutdown_tx,
    })
}

/// A URL without its query string (which may carry a token), for logs.
pub(crate) fn redact(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

/// Loads the revocation file and reloads it every second until shutdown.
fn watch_revocations(
    path: std::path::PathBuf,
    mut shutdown: watch::Receiver<bool>,
) -> Result<watch::Receiver<Arc<crate::auth::Revocations>>, ServerError> {
    let initial = crate::auth::Revocations::load(&path)?;
    let (tx, rx) = watch::channel(Arc::new(initial));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            match crate::auth::Revocations::load(&path) {
                Ok(r) if *tx.borrow().as_ref() != r => {
                    tracing::info!(
                        tokens = r.tokens.len(),
                        principals = r.principals.len(),
                        "revocations reloaded"
                    );
                    let _ = tx.send(Arc::new(r));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the revocation file; keeping the previous one")
                }
            }
        }
    });
    Ok(rx)
}

impl Running {
    /// Serves until `signal` resolves, then stops accepting, closes every WebSocket with 1001,
    /// lets in-flight commits finish and returns.
    pub async fn serve(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Self {
            addr,
            repo,
            state,
            keys: _,
            listener,
            shutdown_tx,
        } = self;
        let app = router(state);
        let graceful = async move {
            signal.await;
            tracing::info!("shutting down: closing connections, finishing commits");
            let _ = shutdown_tx.send(true);
        };
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(graceful)
        .await
        .map_err(|source| ServerError::Io { addr, source })?;
        repo.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    }
}
