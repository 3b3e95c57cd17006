//! The native, async API: a [`Repo`] of documents over a storage backend, driven by tokio,
//! syncing over WebSockets.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use concord::repo::{Repo, RepoConfig};
//! use automerge::{ROOT, transaction::Transactable};
//!
//! let config = RepoConfig::default().with_server("ws://127.0.0.1:3030/sync");
//! let repo = Repo::open_sqlite("replica.db", config).await?;
//! let doc = repo.create().await?;                       // committed locally
//! doc.change(|tx| tx.put(ROOT, "title", "hello")).await?; // resolves after the local commit
//! println!("{} = {}", doc.url(), doc.to_json()?);
//! repo.shutdown().await;
//! # Ok(()) }
//! ```

mod bus;
mod cluster;
mod driver;
mod error;
mod handle;
mod history;
mod links;
mod listing;
mod remote;
mod routing;
mod shard;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use automerge::ChangeHash;
use rand::Rng;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use bus::{BusError, BusEvent, BusNotice, ClusterBus};
pub use cluster::ClusterConfig;
pub use error::RepoError;
pub use handle::DocHandle;
pub use links::{Activity, LinkState, PeerRegionStatus, RegionLinkSettings};
pub use remote::RemoteError;
pub use transport::Backoff;

use crate::core::{
    ClientPolicy, CloseReason, Core, CoreConfig, FindOutcome, Housekeeping, Limits, Origin,
    PeerInfo, SharePolicy, Stats,
};
use crate::id::{AutomergeUrl, ConnId, DocumentId, PeerId, StorageId};
use crate::storage::Storage;
use driver::{Shared, Waiter};

/// Something that happened to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DocEvent {
    /// New heads, committed to local storage.
    Changed {
        /// The new heads.
        heads: Vec<ChangeHash>,
        /// Local write or remote sync.
        origin: Origin,
    },
    /// The document was deleted (here, or by a peer: its local copy is gone, later edits are
    /// refused with [`RepoError::Deleted`]).
    Deleted {
        /// Who deleted it.
        by: String,
        /// When (Unix milliseconds).
        at_ms: u64,
        /// Through this replica, or learned from a peer.
        origin: Origin,
    },
    /// Ephemeral data from a peer.
    Ephemeral {
        /// Original sender.
        from: PeerId,
        /// Its session.
        session_id: String,
        /// The data.
        data: Vec<u8>,
    },
}

/// Something that happened to the repo.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepoEvent {
    /// A peer completed the handshake.
    PeerConnected {
        /// Connection.
        conn: ConnId,
        /// The peer.
        peer_id: PeerId,
        /// Its storage id.
        storage_id: Option<StorageId>,
    },
    /// A connection ended.
    PeerDisconnected {
        /// Connection.
        conn: ConnId,
        /// The peer, if known.
        peer_id: Option<PeerId>,
    },
    /// A peer sent something unusable.
    ProtocolError {
        /// Connection.
        conn: ConnId,
        /// What.
        error: String,
    },
    /// Storage failed.
    StorageFailed {
        /// Document.
        doc: DocumentId,
        /// Error.
        error: String,
    },
    /// A document was deleted (here, or learned from a peer).
    DocumentDeleted {
        /// Document.
        doc: DocumentId,
        /// Who deleted it.
        by: String,
        /// Through this replica, or learned from a peer.
        origin: Origin,
    },
    /// Work on a document panicked; the panic was contained (see
    /// [`Event::DocumentPanicked`](crate::core::Event::DocumentPanicked)).
    DocumentPanicked {
        /// Document.
        doc: DocumentId,
        /// The panic message.
        reason: String,
    },
}

/// How to open a [`Repo`].
#[derive(Debug, Clone)]
pub struct RepoConfig {
    /// Our peer id (random when `None`).
    pub peer_id: Option<PeerId>,
    /// Server URLs (`ws://host:port/sync`); one connection, moving to the next URL on failure.
    pub servers: Vec<String>,
    /// Share policy.
    pub policy: Arc<dyn SharePolicy>,
    /// Protocol limits.
    pub limits: Limits,
    /// Compaction and eviction.
    pub housekeeping: Housekeeping,
    /// Frames queued per connection before it is treated as a slow reader and dropped.
    pub outgoing_queue: usize,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// How region links are dialled and watched ([`Repo::connect_region`]).
    pub region_links: RegionLinkSettings,
    /// How long `find` waits for a first server connection before answering "unavailable".
    pub connect_wait: Duration,
    /// Core tick period (timeouts, eviction, anti-entropy).
    pub tick: Duration,
    /// Makes this repo a region server (replicates every document with its region links).
    pub region: Option<crate::core::RegionConfig>,
    /// Defer applying incoming changes to large documents (servers; see
    /// [`crate::core::DeferApply`]). `None`: apply at once.
    pub defer_apply: Option<crate::core::DeferApply>,
    /// Number of independently locked cores documents are split between (1 to 256; servers use
    /// several so work on one document never stalls the others; see
    /// [`crate::core::ShardConfig`]). `housekeeping.max_resident` is split between them (at
    /// least one document each).
    pub shards: u16,
    /// Per-principal quotas charged to authenticated inbound clients (servers; see
    /// [`crate::core::Quotas`]). `None`: nothing is charged.
    pub quotas: Option<crate::core::Quotas>,
    /// Makes this repo one node of a cluster sharing its storage with other nodes (see
    /// [`ClusterConfig`]). `None`: a standalone replica.
    pub cluster: Option<ClusterConfig>,
    /// Keep deleted documents' stored data until a retention period (servers; the server's
    /// housekeeping reclaims it). `false`: deleted at once.
    pub retain_deleted: bool,
}

/// Supplies a fresh bearer token for each connection attempt (e.g. a short-lived region token).
pub type Credentials = Arc<dyn Fn() -> Option<String> + Send + Sync>;

impl Default for RepoConfig {
    fn default() -> Self {
        Self {
            peer_id: None,
            servers: Vec::new(),
            policy: Arc::new(ClientPolicy),
            limits: Limits::default(),
            housekeeping: Housekeeping::default(),
            outgoing_queue: 4096,
            backoff: Backoff::default(),
            region_links: RegionLinkSettings::default(),
            connect_wait: Duration::from_secs(5),
            tick: Duration::from_millis(500),
            region: None,
            defer_apply: None,
            shards: 1,
            quotas: None,
            cluster: None,
            retain_deleted: false,
        }
    }
}

impl RepoConfig {
    /// Adds a server URL.
    pub fn with_server(mut self, url: impl Into<String>) -> Self {
        self.servers.push(url.into());
        self
    }
}

/// A replica: documents in local storage, synced with peers. Cheap to clone.
///
/// All futures of this API are `Send`, so they can be spawned on any tokio runtime.
#[derive(Debug, Clone)]
pub struct Repo {
    shared: Arc<Shared>,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    config: Arc<RepoConfig>,
}

const STORAGE_ID_KEY: &str = "storage_id";

impl Repo {
    /// Opens a repo over `storage` and starts connecting to `config.servers`.
    pub async fn open(storage: Arc<dyn Storage>, config: RepoConfig) -> Result<Self, RepoError> {
        // Draw all randomness up front: the thread-local RNG must not live across an await
        // (that would make this future non-Send).
        let (fresh_storage_id, peer_suffix, seed) = {
            let mut rng = rand::rng();
            (
                rng.random::<[u8; 16]>(),
                rng.random::<[u8; 8]>(),
                rng.random::<u64>(),
            )
        };
        let storage_id = match storage.get_meta(STORAGE_ID_KEY).await? {
            Some(bytes) => StorageId::new(String::from_utf8_lossy(&bytes).into_owned()),
            None => {
                let id = StorageId::from_random(fresh_storage_id);
                storage
                    .put_meta(STORAGE_ID_KEY, id.as_str().as_bytes())
                    .await?;
                id
            }
        };
        let peer_id = config
            .peer_id
            .clone()
            .unwrap_or_else(|| PeerId::new(format!("concord-{}", hex::encode(peer_suffix))));
        let mut core_config = CoreConfig::new(peer_id, Some(storage_id), seed);
        core_config.policy = config.policy.clone();
        core_config.limits = config.limits.clone();
        core_config.housekeeping = config.housekeeping.clone();
        core_config.region = config.region.clone();
        core_config.defer_apply = config.defer_apply;
        core_config.retain_deleted = config.retain_deleted;
        core_config.budgets = config
            .quotas
            .clone()
            .map(|q| Arc::new(crate::core::Budgets::new(q)));
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let count = config.shards.clamp(1, 256);
        let mut cores: Vec<Core> = (0..count)
            .map(|index| {
                let mut c = core_config.clone();
                if count > 1 {
                    c.shard = Some(crate::core::ShardConfig { index, count });
                    c.seed = seed.wrapping_add(u64::from(index));
                    // The resident bound is split between the shards that hold documents (all
                    // but the primary), at least one each.
                    c.housekeeping.max_resident = c
                        .housekeeping
                        .max_resident
                        .map(|m| (m / usize::from(count - 1)).max(1));
                }
                let mut core = Core::new(c);
                core.handle_wall_clock(wall);
                core
            })
            .collect();
        let mut unindexed = Vec::new();
        if config.region.is_some() {
            // The anti-entropy index: what storage recorded, plus any document stored before the
            // index existed (loaded once, which indexes it).
            let indexed = storage.heads_index().await?.unwrap_or_default();
            let known: std::collections::HashSet<DocumentId> =
                indexed.iter().map(|(d, _)| *d).collect();
            unindexed = storage
                .list()
                .await?
                .into_iter()
                .filter(|d| !known.contains(d))
                .collect();
            for core in &mut cores {
                core.seed_heads_index(indexed.iter().cloned());
            }
        }
        let tombstones = storage.tombstones().await?;
        for core in &mut cores {
            core.seed_tombstones(tombstones.iter().cloned());
        }
        for doc in unindexed {
            let shard = crate::core::ShardConfig::shard_of(&doc, count);
            if let Some(core) = cores.get_mut(usize::from(shard)) {
                core.load(0, doc);
            }
        }
        let (link, publisher) = match &config.cluster {
            Some(c) => {
                let (link, task) = cluster::start(c);
                (Some(link), Some(task))
            }
            None => (None, None),
        };
        let (shared, storage_rx) = Shared::new(
            cores,
            storage,
            config.outgoing_queue,
            config.limits.max_message_bytes,
            link,
        );
        for index in 0..count {
            shared.work(index); // First snapshots, and the loads queued above.
        }
        let mut tasks = vec![tokio::spawn(driver::run_storage(
            shared.clone(),
            storage_rx,
        ))];
        tasks.extend(publisher);
        if let Some(c) = &config.cluster {
            tasks.push(tokio::spawn(cluster::run_subscriber(
                shared.clone(),
                c.bus.subscribe(),
            )));
        }
        for index in 0..count {
            tasks.push(tokio::spawn(driver::run_driver(
                shared.clone(),
                index,
                config.tick,
            )));
        }
        let repo = Self {
            shared,
            tasks: Arc::new(std::sync::Mutex::new(tasks)),
            config: Arc::new(config),
        };
        if !repo.config.servers.is_empty() {
            repo.connect(repo.config.servers.clone());
        }
        Ok(repo)
    }

    /// Opens a repo over a SQLite file (created if missing).
    #[cfg(feature = "sqlite")]
    pub async fn open_sqlite(
        path: impl Into<std::path::PathBuf>,
        config: RepoConfig,
    ) -> Result<Self, RepoError> {
        let storage =
            crate::storage::SqliteStorage::open(crate::storage::SqliteConfig::new(path)).await?;
        Self::open(Arc::new(storage), config).await
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.shared.lock_primary().config().peer_id.clone()
    }

    /// Our storage id.
    pub fn storage_id(&self) -> Option<StorageId> {
        self.shared.lock_primary().config().storage_id.clone()
    }

    /// The storage backend.
    pub fn storage(&self) -> Arc<dyn Storage> {
        self.shared.storage.clone()
    }

    fn spawn(&self, task: JoinHandle<()>) {
        if let Ok(mut t) = self.tasks.lock() {
            t.retain(|h| !h.is_finished());
            t.push(task);
        }
    }

    /// Keeps one connection to the first reachable URL of `urls`, moving to the next on failure,
    /// reconnecting with exponential backoff and jitter.
    pub fn connect(&self, urls: Vec<String>) {
        let task = tokio::spawn(transport::run_client_with(
            self.shared.clone(),
            urls,
            transport::DialOptions::new(self.config.backoff.clone()),
            self.config.limits.max_message_bytes,
            None,
        ));
        self.spawn(task);
    }

    /// Keeps one authenticated connection to `urls` (like [`Repo::connect`]), presenting
    /// `Authorization: Bearer <token>` from `credentials` on every attempt. Region servers dial
    /// each other this way.
    pub fn connect_with_credentials(&self, urls: Vec<String>, credentials: Credentials) {
        let task = tokio::spawn(transport::run_client_with(
            self.shared.clone(),
            urls,
            transport::DialOptions::new(self.config.backoff.clone()),
            self.config.limits.max_message_bytes,
            Some(credentials),
        ));
        self.spawn(task);
    }

    /// Documents in the anti-entropy heads index (region servers).
    pub fn indexed_documents(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|s| s.snapshot().indexed)
            .sum()
    }

    /// Serves one accepted WebSocket until it closes (for peers that listen).
    pub async fn accept<S>(&self, ws: tokio_tungstenite::WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    {
        transport::run_socket(self.shared.clone(), ws, true).await;
    }

    /// Upgrades an accepted TCP stream to a WebSocket (with the configured message size limit)
    /// and serves it until it closes.
    pub async fn accept_tcp(&self, tcp: tokio::net::TcpStream) {
        match transport::accept(tcp, self.config.limits.max_message_bytes).await {
            Ok(ws) => self.accept(ws).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket handshake failed"),
        }
    }

    /// Accepts WebSocket peers on `listener` until the repo shuts down.
    pub async fn serve(&self, listener: tokio::net::TcpListener) {
        let mut shutdown = self.shared.shutdown.subscribe();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => {
                        let repo = self.clone();
                        tokio::spawn(async move { repo.accept_tcp(tcp).await });
                    }
                    Err(e) => tracing::warn!(error = %e, "accept failed"),
                },
                () = driver::until_shutdown(&mut shutdown) => return,
            }
        }
    }

    /// Creates a document; resolves once its first change is committed.
    pub async fn create(&self) -> Result<DocHandle, RepoError> {
        let doc = DocumentId::from_bytes(rand::rng().random());
        let (tx, rx) = oneshot::channel();
        let shard = {
            let (shard, mut core) = self.shared.lock_doc(&doc);
            let now = self.shared.now();
            let ticket = core.create(now, doc)?;
            self.shared.register(shard, ticket, Waiter::Commit(tx))?;
            shard
        };
        let handle = DocHandle::new(self.shared.clone(), doc);
        self.shared.wake(shard);
        match rx.await {
            Ok(Ok(_)) => Ok(handle),
            Ok(Err(e)) => Err(RepoError::CommitFailed(e)),
            Err(_) => Err(RepoError::Closed),
        }
    }

    async fn find_once(&self, doc: DocumentId) -> Result<FindOutcome, RepoError> {
        let (tx, rx) = oneshot::channel();
        let shard = {
            let (shard, mut core) = self.shared.lock_doc(&doc);
            let now = self.shared.now();
            let ticket = core.find(now, doc);
            core.pin(&doc);
            self.shared.register(shard, ticket, Waiter::Find(tx))?;
            shard
        };
        self.shared.wake(shard);
        let outcome = rx.await.map_err(|_| RepoError::Closed);
        self.shared.lock_doc(&doc).1.unpin(&doc);
        outcome
    }

    /// Finds a document: local storage first, then connected peers. When servers are configured
    /// but none is connected yet, waits up to `connect_wait` for one before giving up.
    pub async fn find(&self, url: impl Into<AutomergeUrl>) -> Result<DocHandle, RepoError> {
        let doc = url.into().document_id;
        // If no peer was connected when we started, "unavailable" may mean "nobody was asked"
        // (a handshake can complete while storage is read): ask again once a server is there.
        let asked_someone = !self.peers().is_empty();
        let mut outcome = self.find_once(doc).await?;
        if outcome == FindOutcome::Unavailable && !self.config.servers.is_empty() && !asked_someone
        {
            let _ = self.wait_connected(self.config.connect_wait).await;
            outcome = self.find_once(doc).await?;
        }
        match outcome {
            FindOutcome::Found => Ok(DocHandle::new(self.shared.clone(), doc)),
            FindOutcome::Unavailable => Err(RepoError::Unavailable(doc)),
            FindOutcome::Failed(reason) => Err(RepoError::LoadFailed { doc, reason }),
            FindOutcome::Deleted => Err(RepoError::Deleted(doc)),
        }
    }

    /// Loads every stored document, so that all of them (including offline writes of earlier
    /// sessions) are offered to connected servers. Returns their ids.
    pub async fn load_all(&self) -> Result<Vec<DocumentId>, RepoError> {
        let docs = self.shared.storage.list().await?;
        for doc in &docs {
            self.find_local(*doc).await?;
        }
        Ok(docs)
    }

    /// Loads a document from local storage only (no network).
    pub async fn find_local(&self, doc: DocumentId) -> Result<DocHandle, RepoError> {
        let shard = {
            let (shard, mut core) = self.shared.lock_doc(&doc);
            if core.tombstone(&doc).is_some() {
                return Err(RepoError::Deleted(doc));
            }
            let now = self.shared.now();
            core.load(now, doc);
            core.pin(&doc);
            shard
        };
        self.shared.wake(shard);
        let mut progress = self.shared.progress.subscribe();
        let result = loop {
            let state = {
                let mut core = self.shared.lock_shard(shard);
                let _ = core.materialize(&doc); // a failure shows as `failure` below
                match core.document(&doc) {
                    Some(d) => Some(Ok(!d.get_heads().is_empty())),
                    None => core.failure(&doc).map(|r| Err(r.to_owned())),
                }
            };
            match state {
                Some(Ok(true)) => break Ok(DocHandle::new(self.shared.clone(), doc)),
                Some(Ok(false)) => break Err(RepoError::Unavailable(doc)),
                Some(Err(reason)) => break Err(RepoError::LoadFailed { doc, reason }),
                None => {}
            }
            if progress.changed().await.is_err() {
                break Err(RepoError::Closed);
            }
        };
        self.shared.lock_shard(shard).unpin(&doc);
        result
    }

    /// Deletes `doc` as `by` (servers: an admin; `purge` erases stored bytes on every replica
    /// at once). See [`DocHandle::delete`].
    pub async fn delete_document(
        &self,
        doc: DocumentId,
        by: impl Into<String>,
        purge: bool,
    ) -> Result<(), RepoError> {
        delete(&self.shared, doc, Some(by.into()), purge).await
    }

    /// Erases the stored bytes of deleted `doc` here and on every replica that learns it.
    pub async fn purge_deleted(&self, doc: DocumentId) -> Result<(), RepoError> {
        let shard = {
            let (shard, mut core) = self.shared.lock_doc(&doc);
            let now = self.shared.now();
            core.purge(now, doc)?;
            shard
        };
        self.shared.wake(shard);
        Ok(())
    }

    /// The tombstone of `doc` if it was deleted (`confirmed`: a server accepted the deletion).
    pub fn deletion(&self, doc: &DocumentId) -> Option<crate::core::Tombstone> {
        self.shared.lock_doc(doc).1.tombstone(doc).cloned()
    }

    /// Connected peers (handshake complete).
    pub fn peers(&self) -> Vec<(ConnId, PeerInfo)> {
        self.shared.lock_primary().established()
    }

    /// Waits until at least one peer is connected.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), RepoError> {
        let mut progress = self.shared.progress.subscribe();
        let wait = async {
            while self.peers().is_empty() {
                if progress.changed().await.is_err() {
                    return Err(RepoError::Closed);
                }
            }
            Ok(())
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| RepoError::Timeout(timeout, "a peer connection"))?
    }

    /// Repo-level events (peers, protocol errors, storage failures).
    pub fn events(&self) -> broadcast::Receiver<RepoEvent> {
        self.shared.events.subscribe()
    }

    /// Engine counters (as of each shard's last piece of work: never waits for a busy shard).
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for s in &self.shared.shards {
            total.add(&s.snapshot().stats);
        }
        total
    }

    /// Whether the engine is serving: a shard whose lock has been held for more than
    /// `stall_after` (long Automerge work, or a wedge) or whose lock was poisoned is reported.
    /// Never blocks on a busy shard.
    pub fn health(&self, stall_after: Duration) -> EngineHealth {
        let now = self.shared.now();
        let limit = u64::try_from(stall_after.as_millis()).unwrap_or(u64::MAX);
        let mut health = EngineHealth {
            shards: self.shared.shard_count(),
            ..EngineHealth::default()
        };
        for (i, shard) in self.shared.shards.iter().enumerate() {
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            if let Some(held) = shard.held_for(now).filter(|ms| *ms > limit) {
                health.stalled.push((index, Duration::from_millis(held)));
            }
            if shard.poisoned() {
                health.poisoned.push(index);
            }
        }
        health
    }

    /// Per-document event channels alive (they exist only while someone subscribes).
    pub fn doc_event_channels(&self) -> usize {
        self.shared.doc_event_channels()
    }

    /// Documents resident in memory (as of each shard's last piece of work).
    pub fn resident_documents(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|s| s.snapshot().resident)
            .sum()
    }

    /// Waits until everything the engine holds is committed: no storage operation pending or
    /// queued, no incoming change waiting to be applied.
    pub async fn flush(&self) {
        let mut progress = self.shared.progress.subscribe();
        loop {
            let idle = self.shared.each_shard(|c| c.is_idle()).iter().all(|i| *i);
            if idle && *self.shared.storage_idle.borrow() {
                return;
            }
            if progress.changed().await.is_err() {
                return;
            }
        }
    }

    /// Closes every connection (code 1001), lets in-flight storage operations finish, and stops.
    pub async fn shutdown(&self) {
        let conns: Vec<ConnId> = self
            .shared
            .conns
            .lock()
            .map(|c| c.keys().copied().collect())
            .unwrap_or_default();
        for conn in conns {
            if let Some(slot) = self
                .shared
                .conns
                .lock()
                .ok()
                .and_then(|mut c| c.remove(&conn))
            {
                let _ = slot.close.send(Some(CloseReason {
                    code: 1001,
                    reason: "going away".into(),
                }));
            }
        }
        // Let transports send their close frames and detach.
        let mut progress = self.shared.progress.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while !self.peers().is_empty() {
                if progress.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.flush()).await;
        let _ = self.shared.shutdown.send(true);
        let tasks: Vec<JoinHandle<()>> = self
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for t in tasks {
            t.abort();
        }
    }
}

/// Deletes `doc` (as `by`, or as this replica's peer id) and waits for the local commit.
async fn delete(
    shared: &Arc<Shared>,
    doc: DocumentId,
    by: Option<String>,
    purge: bool,
) -> Result<(), RepoError> {
    let (tx, rx) = oneshot::channel();
    let shard = {
        let (shard, mut core) = shared.lock_doc(&doc);
        let by = by.unwrap_or_else(|| core.config().peer_id.to_string());
        let now = shared.now();
        let ticket = core.delete(now, doc, by, purge).map_err(|e| match e {
            crate::core::CoreError::Deleted(d) => RepoError::Deleted(d),
            other => RepoError::Core(other),
        })?;
        shared.register(shard, ticket, Waiter::Commit(tx))?;
        shard
    };
    shared.wake(shard);
    match rx.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(RepoError::CommitFailed(e)),
        Err(_) => Err(RepoError::Closed),
    }
}

pub(crate) fn trace_frame(dir: &str, conn: ConnId, bytes: &[u8]) {
    tracing::trace!(%conn, dir, frame = %crate::wire::summarize(bytes), "frame");
}

/// What [`Repo::health`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineHealth {
    /// Number of shards.
    pub shards: u16,
    /// Shards whose lock has been held longer than the threshold, and for how long.
    pub stalled: Vec<(u16, Duration)>,
    /// Shards where a panic escaped the core (their state was recovered as it was).
    pub poisoned: Vec<u16>,
}

impl EngineHealth {
    /// True when no shard is stalled or poisoned.
    pub fn is_healthy(&self) -> bool {
        self.stalled.is_empty() && self.poisoned.is_empty()
    }
}

/// A transport connection attached with [`Repo::attach`].
#[derive(Debug)]
pub struct Attachment {
    /// Its id.
    pub conn: ConnId,
    /// Frames to send.
    pub outgoing: mpsc::Receiver<Vec<u8>>,
    /// Becomes `Some` when the engine wants the connection closed.
    pub close: watch::Receiver<Option<CloseReason>>,
    /// The transport calls [`links::Activity::touch`] for every frame it receives (pings and
    /// pongs included): region links with no frame for a while are reported stalled.
    pub activity: links::Activity,
}
