//! The Concord sync server: the engine's core behind an axum WebSocket endpoint, with SQLite
//! storage (or PostgreSQL shared by the nodes of a cluster, see [`crate::cluster`]), eviction of
//! idle documents, metrics, a read-only admin API and graceful shutdown.
//!
//! Endpoints: `GET /sync` (WebSocket, automerge-repo protocol v1; `/` is accepted too, as
//! automerge-repo clients often dial the bare host), `GET /healthz`, `GET /metrics`, the client
//! JSON API `GET /v1/docs` and `GET /v1/docs/{id}/authors` (see `api.rs`),
//! `GET /admin/docs`, `GET /admin/docs/{id}`, `GET /admin/replication`. With `--admin-bind` the
//! admin API moves to its own listener (which also serves `/healthz` and `/metrics`) and the
//! main listener answers 404 under `/admin/`.

mod admission;
mod api;
mod backend;
mod cluster_admin;
mod cluster_metrics;
pub mod config;
mod datadir;
mod door_metrics;
mod housekeeping;
mod http;
mod listen;
pub mod metrics;
pub mod quotas;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use concord::core::{DeferApply, GrantPolicy, Housekeeping, Limits, RegionConfig};
use concord::repo::{ClusterBus, ClusterConfig};
use concord::storage::StorageError;
use concord::{PeerId, Repo, RepoConfig, RepoError};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use backend::ClusterNode;
pub use config::{ConfigError, DatabaseUrl, LogFormat, ServeArgs, ServeConfig};
use metrics::Metrics;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory (or its database file) could not be created or inspected.
    #[error("data directory {path}")]
    DataDir {
        /// Directory.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The data directory is accessible by group or others.
    #[error(
        "data directory {path} has mode {mode:o}: group and others must have no access to it \
         (the database and the token keys are inside). Run `chmod 700 {path}`, or start with \
         --allow-insecure-data-dir (CONCORD_ALLOW_INSECURE_DATA_DIR=true) to accept it"
    )]
    DataDirPermissions {
        /// Directory.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Storage failed to open.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Cluster mode (PostgreSQL) failed to start.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
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
    /// Cluster mode: this node's database, bus and registration.
    cluster: Option<Arc<ClusterNode>>,
}

/// A server that is listening.
#[derive(Debug)]
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The admin listener's address, when the admin API has its own (`--admin-bind`).
    pub admin_addr: Option<SocketAddr>,
    /// The engine.
    pub repo: Repo,
    /// Token keys (to mint tokens for tests and the development token).
    pub keys: Arc<crate::auth::KeyRing>,
    /// Cluster mode: this node's id, database and bus.
    pub cluster: Option<Arc<ClusterNode>>,
    state: AppState,
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    shutdown_tx: watch::Sender<bool>,
}

/// The main listener's routes: sync, health, metrics, and the admin API unless it has its own
/// listener.
fn router(state: AppState, with_admin: bool) -> Router {
    let client_api = Router::new()
        .route("/v1/docs", get(api::list_docs))
        .route("/v1/docs/{id}/authors", get(api::authors))
        .layer(api::cors(&state.config.allow_origins));
    let r = Router::new()
        .route("/sync", get(ws::upgrade))
        .route("/", get(ws::upgrade))
        .route("/healthz", get(http::healthz))
        .route("/metrics", get(http::metrics))
        .merge(client_api);
    if with_admin { admin_routes(r) } else { r }.with_state(state)
}

fn admin_routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/admin/docs", get(http::list_docs))
        .route(
            "/admin/docs/{id}",
            get(http::get_doc).delete(http::delete_doc),
        )
        .route("/admin/replication", get(http::replication))
        .route("/admin/cluster", get(cluster_admin::cluster))
}

/// The admin listener's routes (`--admin-bind`).
fn admin_router(state: AppState) -> Router {
    admin_routes(Router::new())
        .route("/healthz", get(http::healthz))
        .route("/metrics", get(http::metrics))
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

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| ServerError::Bind { addr, error })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Io { addr, source })?;
    Ok((listener, local))
}

/// Binds the listeners (first, so that an unusable address fails before anything is opened),
/// opens storage and starts the engine.
pub async fn start(config: ServeConfig) -> Result<Running, ServerError> {
    let (listener, addr) = bind(config.bind).await?;
    let (admin_listener, admin_addr) = match config.admin_bind {
        Some(a) => {
            let (l, a) = bind(a).await?;
            (Some(l), Some(a))
        }
        None => (None, None),
    };
    listen::raise_fd_limit();
    if config.insecure_no_auth {
        tracing::warn!(
            "INSECURE: --insecure-no-auth accepts peers without a token, with full access; never use it in production"
        );
    }
    let (metrics, slot) = Metrics::new();
    let opened = match &config.database {
        Some(url) => backend::open_postgres(&config, url, &metrics).await?,
        None => backend::open_sqlite(&config, &metrics).await?,
    };
    let (storage, keys) = (opened.storage, opened.keys);
    let cluster = opened.cluster.map(Arc::new);
    if let Some(c) = &cluster {
        metrics.cluster.set(c.clone());
    }
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
        shards: config.shards,
        quotas: Some(config.quotas.clone()),
        retain_deleted: true,
        defer_apply: Some(DeferApply {
            min_ops: config.defer_apply_min_ops,
            ..DeferApply::default()
        }),
        region_links: {
            let stall = std::time::Duration::from_secs(config.region_stall_secs);
            concord::repo::RegionLinkSettings {
                stalled_after: stall,
                drop_after: stall.saturating_mul(3),
                ..concord::repo::RegionLinkSettings::default()
            }
        },
        region: config.peer_secret.as_ref().map(|_| RegionConfig {
            name: config.region.clone(),
            anti_entropy_ms: config.anti_entropy_secs.saturating_mul(1000),
            // A cluster node may not hold the region links (another node may): it cannot say
            // what the cluster reaches.
            announce_reach: config.database.is_none(),
        }),
        // Other nodes' commits (announced by PostgreSQL inside their transactions) and
        // ephemeral messages arrive on the bus; ours leave on it.
        cluster: cluster.as_ref().map(|c| ClusterConfig {
            node_id: c.node.clone(),
            bus: c.bus.clone() as Arc<dyn ClusterBus>,
        }),
        ..RepoConfig::default()
    };
    let repo = Repo::open(storage, repo_config).await?;
    slot.set(repo.clone());
    let (shutdown_tx, shutdown) = watch::channel(false);
    if let Some(secret) = config.peer_secret.clone() {
        tracing::info!(
            region = %config.region,
            peers = ?config.peers.iter().map(|p| redact(p)).collect::<Vec<_>>(),
            indexed = repo.indexed_documents(),
            "region replication on"
        );
        let ttl = std::time::Duration::from_secs(config.region_token_ttl_secs);
        for url in &config.peers {
            let (secret, region) = (secret.clone(), config.region.clone());
            let credentials: concord::repo::Credentials = Arc::new(move || {
                crate::auth::mint_region(secret.as_bytes(), &region, ttl)
                    .map_err(|e| tracing::error!(error = %e, "cannot mint a region token"))
                    .ok()
            });
            // In a cluster, only the node holding the link's advisory lock dials it.
            let active = cluster.as_ref().map(|c| {
                crate::cluster::links::hold(&c.storage, &config.region, url, shutdown.clone())
            });
            repo.connect_region_while(vec![url.clone()], credentials, active);
        }
    }
    let revoked = backend::revocations(
        &config,
        cluster.as_deref(),
        shutdown.clone(),
        metrics.clone(),
    )
    .await?;
    housekeeping::spawn_sync_state_expiry(
        repo.storage(),
        std::time::Duration::from_secs(config.sync_state_ttl_secs.max(1)),
        shutdown.clone(),
    );
    housekeeping::spawn_deletion_retention(
        repo.storage(),
        std::time::Duration::from_secs(config.deleted_retention_secs.max(1)),
        std::time::Duration::from_secs(config.tombstone_retention_secs.max(1)),
        shutdown.clone(),
    );
    if let Some(c) = &cluster {
        let me = crate::cluster::registry::Registration::register(
            &c.storage,
            &c.node,
            &config.region,
            &addr.to_string(),
        )
        .await?;
        *c.registration.lock().await = Some(me);
    }
    let state = AppState {
        repo: repo.clone(),
        metrics,
        config: Arc::new(config),
        shutdown,
        keys: Some(Arc::new(keys)),
        counts: Arc::default(),
        revoked,
        cluster: cluster.clone(),
    };
    let keys = state.keys.clone().unwrap_or_default();
    Ok(Running {
        addr,
        admin_addr,
        repo,
        keys,
        cluster,
        state,
        listener,
        admin_listener,
        shutdown_tx,
    })
}

/// A URL without its query string (which may carry a token), for logs.
pub(crate) fn redact(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

impl Running {
    /// Serves until `signal` resolves, then stops accepting, closes every WebSocket with 1001,
    /// lets in-flight commits finish and returns.
    pub async fn serve(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Self {
            addr: _,
            admin_addr: _,
            repo,
            state,
            keys: _,
            cluster,
            listener,
            admin_listener,
            shutdown_tx,
        } = self;
        let cfg = state.config.clone();
        let header_timeout = std::time::Duration::from_secs(cfg.header_read_timeout_secs);
        let gate = |m: &Arc<Metrics>| {
            listen::Gate::new(
                cfg.max_pending_connections_per_ip,
                cfg.max_pending_connections,
                m.clone(),
            )
        };
        // The admin listener has its own caps, so a flood of the public one cannot lock it out.
        let admin = admin_listener.map(|l| {
            tokio::spawn(listen::serve(
                l,
                admin_router(state.clone()),
                gate(&state.metrics),
                header_timeout,
                state.shutdown.clone(),
            ))
        });
        let main = tokio::spawn(listen::serve(
            listener,
            router(state.clone(), admin.is_none()),
            gate(&state.metrics),
            header_timeout,
            state.shutdown.clone(),
        ));
        signal.await;
        tracing::info!("shutting down: closing connections, finishing commits");
        let _ = shutdown_tx.send(true);
        let _ = main.await;
        if let Some(a) = admin {
            let _ = a.await;
        }
        repo.shutdown().await;
        if let Some(c) = cluster {
            if let Some(me) = c.registration.lock().await.take() {
                me.deregister().await;
            }
        }
        tracing::info!("stopped");
        Ok(())
    }
}
