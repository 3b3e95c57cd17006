//! `Repo`: a replica (one SQLite file) and its server connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use concord::repo::RepoEvent;
use concord::{AutomergeUrl, RepoConfig};

use crate::config::{validate_server_url, with_token};
use crate::dispatch::{self, Control, Subscription};
use crate::doc::DocHandle;
use crate::error::{ConcordError, Result};
use crate::listeners::{
    DeletedEvent, DeletedListener, SyncStatus, SyncStatusListener, drop_oldest, keep_all,
};
use crate::runtime::{block_on, run};

/// The longest wait accepted (longer timeouts are clamped to this).
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// A wait of `ms` milliseconds, clamped to [`MAX_WAIT`].
pub(crate) fn wait_ms(ms: u64) -> Duration {
    Duration::from_millis(ms).min(MAX_WAIT)
}

/// What a `Repo` and its `DocHandle`s share.
pub(crate) struct RepoInner {
    pub(crate) repo: concord::Repo,
    /// Server URLs as given (without the token).
    servers: Vec<String>,
    token: Option<String>,
    closed: AtomicBool,
    pub(crate) subscriptions: Mutex<Vec<Weak<Control>>>,
    /// Handles given out, for `shutdown` to wait until their documents are stored.
    open_docs: Mutex<Vec<Weak<DocHandle>>>,
}

impl RepoInner {
    /// `Closed` once `shutdown` was called: the engine's tasks are gone and a wait would hang.
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(ConcordError::Closed("the repo is shut down".to_owned()));
        }
        Ok(())
    }

    pub(crate) fn has_servers(&self) -> bool {
        !self.servers.is_empty()
    }

    pub(crate) fn is_connected(&self) -> bool {
        !self.repo.peers().is_empty()
    }

    /// Wraps an engine handle for the app and remembers it for `shutdown`.
    fn adopt(self: &Arc<Self>, handle: concord::DocHandle) -> Arc<DocHandle> {
        let doc = Arc::new(DocHandle::new(self.clone(), handle));
        let mut open = self
            .open_docs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.retain(|w| w.strong_count() > 0);
        open.push(Arc::downgrade(&doc));
        doc
    }
}

impl Repo {
    /// The engine, once checked open.
    pub(crate) fn engine(&self) -> Result<concord::Repo> {
        self.inner.check_open()?;
        Ok(self.inner.repo.clone())
    }
}

impl Drop for RepoInner {
    /// A repo dropped without `shutdown` (the app let go of every object) stops its engine.
    fn drop(&mut self) {
        dispatch::cancel_all(&self.subscriptions);
        if !self.closed.swap(true, Ordering::SeqCst) {
            let repo = self.repo.clone();
            let _ = crate::runtime::spawn(async move { repo.shutdown().await });
        }
    }
}

/// A document's deletion, as this replica knows it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Deletion {
    /// Who deleted it (the deleting token's principal, or a replica's peer id until a server
    /// confirms).
    pub by: String,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// A server accepted or announced the deletion.
    pub confirmed: bool,
}

/// A replica: documents stored in one SQLite file, synced with the given servers.
///
/// Writes never wait for the network: they resolve once committed to the local file, and sync
/// when a server is reachable (reconnecting with backoff by itself). Open one `Repo` per file.
#[derive(uniffi::Object)]
pub struct Repo {
    inner: Arc<RepoInner>,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo")
            .field("servers", &self.inner.servers)
            .finish_non_exhaustive()
    }
}

/// `concord::Repo::open_sqlite`, whose future is not `Send` (it keeps a `rand::ThreadRng` across
/// an await), so it cannot be spawned on the runtime: it runs on a blocking-pool thread with the
/// runtime's handle instead.
async fn open_sqlite(path: String, config: RepoConfig) -> Result<concord::Repo> {
    let handle = tokio::runtime::Handle::current();
    let opened = tokio::task::spawn_blocking(move || {
        handle.block_on(concord::Repo::open_sqlite(path, config))
    })
    .await
    .map_err(|e| ConcordError::Internal(format!("opening the repo failed: {e}")))?;
    Ok(opened?)
}

/// Validates and opens (on the engine runtime).
async fn open_repo(path: String, servers: Vec<String>, token: Option<String>) -> Result<Repo> {
    if path.is_empty() {
        return Err(ConcordError::InvalidArgument(
            "the SQLite path is empty".to_owned(),
        ));
    }
    for url in &servers {
        validate_server_url(url)?;
    }
    let token = token.filter(|t| !t.is_empty());
    let mut config = RepoConfig {
        servers: servers
            .iter()
            .map(|u| with_token(u, token.as_deref()))
            .collect(),
        ..RepoConfig::default()
    };
    config.backoff.initial = Duration::from_millis(100);
    config.backoff.max = Duration::from_secs(5);
    let repo = open_sqlite(path, config).await?;
    Ok(Repo {
        inner: Arc::new(RepoInner {
            repo,
            servers,
            token,
            closed: AtomicBool::new(false),
            subscriptions: Mutex::new(Vec::new()),
            open_docs: Mutex::new(Vec::new()),
        }),
    })
}

#[uniffi::export(async_runtime = "tokio")]
impl Repo {
    /// Opens (creating if missing) the replica at `path`, blocking the calling thread until the
    /// file is open (not until a server answers). Do not call it on a UI thread; prefer `open`.
    /// `servers`: `ws://` or `wss://` URLs, tried in order; empty for an offline repo.
    /// `token`: sent to the servers as a `token` query parameter of the WebSocket URL.
    #[uniffi::constructor(default(token = None))]
    pub fn new(path: String, servers: Vec<String>, token: Option<String>) -> Result<Arc<Self>> {
        block_on(open_repo(path, servers, token)).map(Arc::new)
    }

    /// Opens (creating if missing) the replica at `path`; see the constructor.
    #[uniffi::constructor(default(token = None))]
    pub async fn open(
        path: String,
        servers: Vec<String>,
        token: Option<String>,
    ) -> Result<Arc<Self>> {
        run(open_repo(path, servers, token)).await.map(Arc::new)
    }

    /// Creates a new, empty document; resolves once it is committed locally.
    pub async fn create(&self) -> Result<Arc<DocHandle>> {
        self.inner.check_open()?;
        let inner = self.inner.clone();
        run(async move {
            let handle = inner.repo.create().await?;
            Ok(inner.adopt(handle))
        })
        .await
    }

    /// Opens a document by URL (`automerge:...`, a bare id or a legacy UUID): local storage
    /// first, then the servers (waiting up to 5 s for a first connection). `NotFound` when no one
    /// has it, `Network` when it is not local and no server was reachable.
    pub async fn find(&self, url: String) -> Result<Arc<DocHandle>> {
        self.inner.check_open()?;
        let id = url.trim().parse::<AutomergeUrl>()?.document_id;
        let inner = self.inner.clone();
        run(async move {
            match inner.repo.find(id).await {
                Ok(handle) => Ok(inner.adopt(handle)),
                Err(concord::RepoError::Unavailable(_))
                    if inner.has_servers() && !inner.is_connected() =>
                {
                    Err(ConcordError::Network(format!(
                        "document {} is not stored locally and no server ({}) was reachable",
                        id.url(),
                        inner.servers.join(", ")
                    )))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// How the document at `url` was deleted, if this replica knows it was; `None` otherwise.
    pub fn deletion(&self, url: String) -> Result<Option<Deletion>> {
        self.inner.check_open()?;
        let id = url.trim().parse::<AutomergeUrl>()?.document_id;
        Ok(self.inner.repo.deletion(&id).map(|t| Deletion {
            by: t.by,
            at_ms: t.at_ms,
            confirmed: t.confirmed,
        }))
    }

    /// Calls `listener` for every document deleted through this repo or by another replica (as
    /// a server tells).
    pub fn subscribe_deleted(
        &self,
        listener: Arc<dyn DeletedListener>,
    ) -> Result<Arc<Subscription>> {
        self.inner.check_open()?;
        let repo = self.inner.repo.clone();
        dispatch::start(
            self.inner.repo.events(),
            vec![],
            move |event| match event {
                RepoEvent::DocumentDeleted { doc, by, origin } => Some(DeletedEvent {
                    url: doc.url().to_string(),
                    at_ms: repo.deletion(&doc).map_or(0, |t| t.at_ms),
                    by,
                    origin: origin.into(),
                }),
                _ => None,
            },
            keep_all,
            move |event| listener.on_deleted(event),
            &self.inner.subscriptions,
        )
    }

    /// The URLs of every document stored in this replica.
    pub async fn document_urls(&self) -> Result<Vec<String>> {
        self.inner.check_open()?;
        let inner = self.inner.clone();
        run(async move {
            let ids = inner
                .repo
                .storage()
                .list()
                .await
                .map_err(concord::RepoError::from)?;
            Ok(ids.iter().map(|id| id.url().to_string()).collect())
        })
        .await
    }

    /// This replica's peer id on the wire.
    pub fn peer_id(&self) -> String {
        self.inner.repo.peer_id().to_string()
    }

    /// The server URLs as given (without the token).
    pub fn servers(&self) -> Vec<String> {
        self.inner.servers.clone()
    }

    /// True when a token was given.
    pub fn has_token(&self) -> bool {
        self.inner.token.is_some()
    }

    /// True while a server connection has completed its handshake.
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// Waits until a server connection is up. `Network` at once when no server is configured.
    pub async fn wait_connected(&self, timeout_ms: u64) -> Result<()> {
        self.inner.check_open()?;
        if !self.inner.has_servers() {
            return Err(ConcordError::Network(
                "this repo has no server URLs (opened offline)".to_owned(),
            ));
        }
        let inner = self.inner.clone();
        run(async move { Ok(inner.repo.wait_connected(wait_ms(timeout_ms)).await?) }).await
    }

    /// Calls `listener` with `Connected`/`Disconnected` as the server connection comes and goes
    /// (first with the status at subscription time).
    pub fn subscribe_sync_status(
        &self,
        listener: Arc<dyn SyncStatusListener>,
    ) -> Result<Arc<Subscription>> {
        self.inner.check_open()?;
        let source = self.inner.repo.events();
        let now = match self.inner.repo.peers().first() {
            Some((_, peer)) => SyncStatus::Connected {
                peer_id: peer.peer_id.to_string(),
            },
            None => SyncStatus::Disconnected { peer_id: None },
        };
        dispatch::start(
            source,
            vec![now],
            |event| match event {
                RepoEvent::PeerConnected { peer_id, .. } => Some(SyncStatus::Connected {
                    peer_id: peer_id.to_string(),
                }),
                RepoEvent::PeerDisconnected { peer_id, .. } => Some(SyncStatus::Disconnected {
                    peer_id: peer_id.map(|p| p.to_string()),
                }),
                _ => None,
            },
            drop_oldest,
            move |status| listener.on_status(status),
            &self.inner.subscriptions,
        )
    }

    /// Waits (up to 5 s) until changes received for open documents are stored locally, closes
    /// the server connection, lets pending local commits finish, cancels every subscription and
    /// stops the engine. Every later call on this repo or its documents fails
    /// with `Closed`. Idempotent.
    pub async fn shutdown(&self) -> Result<()> {
        dispatch::cancel_all(&self.inner.subscriptions);
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let inner = self.inner.clone();
        run(async move {
            crate::persist::persist_open(&inner.repo, &inner.open_docs).await;
            inner.repo.shutdown().await;
            Ok(())
        })
        .await
    }
}
