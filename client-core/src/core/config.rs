//! Core configuration and the share policy hook.

use std::fmt;
use std::sync::Arc;

use crate::id::{DocumentId, PeerId, StorageId};
use crate::wire::PeerMetadata;

/// What the core knows about a connected peer, passed to the [`SharePolicy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's id (from its handshake).
    pub peer_id: PeerId,
    /// Its metadata.
    pub metadata: PeerMetadata,
    /// Whether it dialled us (`true`) or we dialled it.
    pub inbound: bool,
    /// What its verified credentials allow (`None`: unauthenticated).
    pub grant: Option<super::Grant>,
    /// The id its ephemeral messages are relayed under: its peer id, or a namespaced one when
    /// another principal holds that peer id (see `Core` identity rules).
    pub speaks_as: PeerId,
}

impl PeerInfo {
    /// The storage id to persist sync state against, if the peer is durable.
    pub fn persistent_storage(&self) -> Option<&StorageId> {
        if self.metadata.is_ephemeral {
            None
        } else {
            self.metadata.storage_id.as_ref()
        }
    }
}

/// Who may see and change which documents.
///
/// - `announce`: start syncing `doc` with `peer` without being asked (clients announce to servers).
/// - `access`: answer `peer`'s request/sync for `doc`; when denied the peer gets `doc-unavailable`
///   (no existence leak).
/// - `accept_changes`: apply changes `peer` sends for `doc`; when denied, its sync messages that
///   carry changes are refused with an error and nothing is applied.
pub trait SharePolicy: Send + Sync + fmt::Debug {
    /// Proactively sync `doc` with `peer`?
    fn announce(&self, peer: &PeerInfo, doc: &DocumentId) -> bool;
    /// May `peer` read `doc`?
    fn access(&self, _peer: &PeerInfo, _doc: &DocumentId) -> bool {
        true
    }
    /// May `peer` write `doc`?
    fn accept_changes(&self, _peer: &PeerInfo, _doc: &DocumentId) -> bool {
        true
    }
}

/// Client policy: announce every document to peers we dialled (servers), answer everyone.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientPolicy;

impl SharePolicy for ClientPolicy {
    fn announce(&self, peer: &PeerInfo, _doc: &DocumentId) -> bool {
        !peer.inbound
    }
}

/// Server policy: never push documents a peer did not ask for; answer everyone, accept all writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerPolicy;

impl SharePolicy for ServerPolicy {
    fn announce(&self, peer: &PeerInfo, _doc: &DocumentId) -> bool {
        !peer.inbound
    }
}

/// Limits that protect the core from misbehaving peers.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted frame (bytes).
    pub max_message_bytes: usize,
    /// Protocol errors a connection may cause before it is closed.
    pub max_protocol_errors: u32,
    /// Milliseconds a connection may take to complete the handshake.
    pub handshake_timeout_ms: u64,
    /// Changes whose dependencies are missing that a document may hold queued; a message that
    /// would exceed it is refused before Automerge queues anything.
    pub max_missing_deps: usize,
    /// Bytes the changes of one sync message may decompress to (checked with capped inflation
    /// before Automerge parses them).
    pub max_decompressed_bytes: u64,
    /// Operations the changes of one sync message may carry (counted from their run-length
    /// encoded columns before Automerge parses them).
    pub max_ops_per_message: u64,
    /// Milliseconds a peer's `request` for a document we do not hold waits for the other peers
    /// we asked for it before it is answered `doc-unavailable` (checked on each tick; the
    /// document is still delivered if it arrives later). Peers that answer end the wait sooner.
    pub ask_timeout_ms: u64,
    /// Clients asked at most for one document we do not hold (region links and servers we
    /// dialled are always asked): a `request` for an unknown id must not cost a frame to every
    /// connected client.
    pub max_clients_asked: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1 << 20,
            max_protocol_errors: 64,
            handshake_timeout_ms: 10_000,
            max_missing_deps: 256,
            max_decompressed_bytes: 64 << 20,
            max_ops_per_message: 200_000,
            ask_timeout_ms: 5_000,
            max_clients_asked: 16,
        }
    }
}

/// Memory and storage housekeeping.
#[derive(Debug, Clone)]
pub struct Housekeeping {
    /// Compact a document once it has this many incremental chunks.
    pub compact_after_increments: usize,
    /// Evict documents unused for this many milliseconds (`None`: never).
    pub evict_idle_ms: Option<u64>,
    /// Keep at most this many documents resident (`None`: unbounded).
    pub max_resident: Option<usize>,
}

impl Default for Housekeeping {
    fn default() -> Self {
        Self {
            compact_after_increments: 64,
            evict_idle_ms: None,
            max_resident: None,
        }
    }
}

/// Everything a [`Core`](super::Core) needs at construction.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Our peer id on the wire.
    pub peer_id: PeerId,
    /// Our storage id (`None`: an ephemeral peer).
    pub storage_id: Option<StorageId>,
    /// Seed for the core's randomness (actor ids, session ids). Supply real randomness in
    /// production and a fixed value in simulations.
    pub seed: u64,
    /// Who may see and change what.
    pub policy: Arc<dyn SharePolicy>,
    /// Protocol limits.
    pub limits: Limits,
    /// Compaction and eviction.
    pub housekeeping: Housekeeping,
    /// Makes this core a region server (see [`RegionConfig`](super::RegionConfig)).
    pub region: Option<super::RegionConfig>,
    /// Defer applying incoming changes to large documents (servers; see
    /// [`DeferApply`](super::DeferApply)). `None` (clients): apply at once.
    pub defer_apply: Option<super::DeferApply>,
    /// This core is one shard of several, holding only the documents [`ShardConfig::owns`]
    /// (see [`ShardConfig`]). `None`: it holds every document.
    pub shard: Option<ShardConfig>,
    /// Per-principal budgets charged for what authenticated inbound clients send (servers; one
    /// shared by every shard). `None`: nothing is charged.
    pub budgets: Option<Arc<super::Budgets>>,
    /// Keep a deleted document's stored data until the server's retention period reclaims it
    /// (servers). `false` (clients): deleted at once.
    pub retain_deleted: bool,
}

/// One core of a sharded driver: documents are split between `count` cores by their id, each
/// core with its own lock, so work on one document never waits for work on documents of other
/// shards. Shard 0 (the primary) runs every handshake and holds no document (so a long piece of
/// work on a document never delays a handshake); the driver then establishes the connection on
/// the other shards ([`Core::adopt_established`](super::Core::adopt_established)) and routes
/// each message to the shard of its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardConfig {
    /// This shard, `0..count`.
    pub index: u16,
    /// Number of shards (at most 256).
    pub count: u16,
}

impl ShardConfig {
    /// The shard (in `0..count`) holding `doc`: 0 for a single core, otherwise one of
    /// `1..count` (the primary holds none). Shards own whole anti-entropy buckets (a bucket is
    /// the first byte of the id), so digests split along the same lines.
    pub fn shard_of(doc: &DocumentId, count: u16) -> u16 {
        Self::shard_of_bucket(usize::from(doc.as_bytes()[0]), count)
    }

    fn shard_of_bucket(bucket: usize, count: u16) -> u16 {
        let count = count.clamp(1, 256);
        if count == 1 {
            return 0;
        }
        let holders = usize::from(count - 1);
        u16::try_from(1 + bucket % holders).unwrap_or(0)
    }

    /// True when this shard holds `doc`.
    pub fn owns(&self, doc: &DocumentId) -> bool {
        Self::shard_of(doc, self.count) == self.index
    }

    /// True when this shard owns anti-entropy bucket `bucket`.
    pub fn owns_bucket(&self, bucket: usize) -> bool {
        Self::shard_of_bucket(bucket, self.count) == self.index
    }
}

impl CoreConfig {
    /// A client configuration with defaults.
    pub fn new(peer_id: PeerId, storage_id: Option<StorageId>, seed: u64) -> Self {
        Self {
            peer_id,
            storage_id,
            seed,
            policy: Arc::new(ClientPolicy),
            limits: Limits::default(),
            housekeeping: Housekeeping::default(),
            region: None,
            defer_apply: None,
            shard: None,
            budgets: None,
            retain_deleted: false,
        }
    }

    /// Replaces the share policy.
    pub fn with_policy(mut self, policy: Arc<dyn SharePolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// Defers applying incoming changes to large documents (what a server wants).
    pub fn with_defer_apply(mut self, defer: super::DeferApply) -> Self {
        self.defer_apply = Some(defer);
        self
    }

    /// Makes the core a region server.
    pub fn with_region(mut self, region: super::RegionConfig) -> Self {
        self.region = Some(region);
        self
    }
}
