//! The sans-IO sync core.
//!
//! [`Core`] holds documents, connections and per-peer sync state. It never reads a clock, a random
//! number generator, a socket or a disk: time comes in as `now` (milliseconds on any monotonic
//! clock the driver chooses), randomness as [`CoreConfig::seed`], and everything it wants done
//! comes out of [`Core::poll_effect`] as data: frames to send, storage operations to run (whose
//! results come back through [`Core::handle_storage_result`]) and events for the application.
//!
//! Durability rule: the core sends sync messages for a document only while everything it holds of
//! that document is committed to storage. A peer that learns our heads therefore learns heads we
//! have durably stored, and incoming changes are applied in batches: everything that arrives while
//! a commit is in flight is applied together once it lands (group commit). The tokio driver also
//! commits the writes queued together, across documents, in one transaction
//! ([`StorageOp::gather`], [`StorageOp::run_batch_async`]).
//!
//! Servers can defer applying incoming changes to large documents ([`CoreConfig::defer_apply`],
//! [`DeferApply`]): changes are checked, committed and relayed from a graph of pending changes,
//! and applied in one Automerge call later. [`Core::document`] then shows the document as last
//! applied; call [`Core::materialize`] first to read everything ([`Core::heads`] always includes
//! pending changes).
//!
//! # Two peers syncing
//!
//! ```
//! use concord::core::{Core, CoreConfig, Effect, StorageOp, StorageReply};
//! use concord::storage::MemoryStorage;
//! use concord::{ConnId, DocumentId, PeerId};
//! use automerge::{ROOT, ReadDoc, transaction::Transactable};
//!
//! /// A minimal driver: runs storage synchronously, collects outgoing frames.
//! fn drive(core: &mut Core, disk: &MemoryStorage, now: u64) -> Vec<(ConnId, Vec<u8>)> {
//!     let mut out = Vec::new();
//!     while let Some(effect) = core.poll_effect() {
//!         match effect {
//!             Effect::Send { conn, bytes } => out.push((conn, bytes)),
//!             Effect::Storage { id, op } => {
//!                 let reply = op.run_on(disk); // a real driver awaits its Storage here
//!                 core.handle_storage_result(now, id, reply);
//!             }
//!             _ => {}
//!         }
//!     }
//!     out
//! }
//!
//! let (disk_a, disk_b) = (MemoryStorage::new(), MemoryStorage::new());
//! let mut alice = Core::new(CoreConfig::new(PeerId::from("alice"), Some("sa".into()), 1));
//! let mut bob = Core::new(CoreConfig::new(PeerId::from("bob"), Some("sb".into()), 2));
//! let doc = DocumentId::from_bytes([1; 16]);
//!
//! // Alice creates a document and writes to it; both commit to her storage.
//! alice.create(0, doc).unwrap();
//! alice.change(0, &doc, |tx| tx.put(ROOT, "greeting", "hello")).unwrap();
//! drive(&mut alice, &disk_a, 0);
//!
//! // Alice dials Bob: one connection, seen from each side.
//! let (a_conn, b_conn) = (ConnId(1), ConnId(1));
//! bob.handle_accept(0, b_conn);
//! alice.handle_connect(0, a_conn);
//!
//! // Shuttle frames until neither side has anything left to say.
//! let (mut to_bob, mut to_alice) = (drive(&mut alice, &disk_a, 0), Vec::new());
//! while !to_bob.is_empty() || !to_alice.is_empty() {
//!     for (_, frame) in to_bob.drain(..) { bob.handle_message(0, b_conn, &frame); }
//!     to_alice = drive(&mut bob, &disk_b, 0);
//!     for (_, frame) in to_alice.drain(..) { alice.handle_message(0, a_conn, &frame); }
//!     to_bob = drive(&mut alice, &disk_a, 0);
//! }
//!
//! let value = bob.document(&doc).unwrap().get(ROOT, "greeting").unwrap();
//! assert_eq!(value.unwrap().0.to_str(), Some("hello"));
//! assert!(!disk_b.load_sync(&doc).unwrap().is_empty()); // Bob stored it durably
//! ```

mod access;
mod attribution;
mod auth;
mod availability;
mod cluster;
mod cluster_regions;
mod config;
mod connection;
mod deletion;
mod document;
mod durability;
mod effects;
mod ephemeral;
mod error;
mod guard;
mod housekeeping;
mod identity;
mod inflate;
mod ingest;
mod lazy;
mod lazy_sync;
mod load;
mod quota;
mod reach;
mod receive;
mod region;
mod region_status;
mod subscribers;
mod sync_pass;
mod validate;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use automerge::ActorId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use access::PeerSyncStatus;
pub use auth::{DocScope, Grant, GrantPolicy};
pub use config::{
    ClientPolicy, CoreConfig, Housekeeping, Limits, PeerInfo, ServerPolicy, ShardConfig,
    SharePolicy,
};
pub use deletion::{DELETED, Tombstone};
pub use durability::{Durability, DurabilityReport, ParseDurabilityError};
pub use effects::{
    CloseReason, Effect, Event, FindOutcome, Gathered, MAX_BATCH_BYTES, MAX_BATCH_OPS, OpId,
    Origin, StorageOp, StorageReply, Ticket,
};
pub use error::{CoreError, ProtocolError};
#[cfg(feature = "fault-injection")]
pub use guard::fault;
pub use guard::panic_message;
pub use identity::{MAX_PEER_ID_BYTES, MAX_STORAGE_ID_BYTES, RESERVATION_MS, principal_tag};
pub use lazy::DeferApply;
pub use quota::{Budgets, Charge, Quotas, TokenBucket};
pub use reach::RegionReach;
pub use region::{BUCKETS, RegionConfig};
pub use region_status::{RegionLinkStatus, RegionTraffic};
pub use validate::{MAX_BLOOM_BITS_PER_ENTRY, MAX_BLOOM_PROBES, MAX_HAVES};

use crate::id::{ConnId, DocumentId};
use crate::storage::{ChunkKey, StorageError};
use crate::wire::{self, Message};
use connection::Conn;
use document::DocEntry;

/// Counters the core keeps (for metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames received.
    pub messages_in: u64,
    /// Frames sent.
    pub messages_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Changes received in sync messages and applied (or, on servers, deferred).
    pub changes_applied: u64,
    /// Of those, changes whose application was deferred (see [`DeferApply`]).
    pub changes_deferred: u64,
    /// Documents evicted from memory.
    pub evictions: u64,
    /// Storage commits completed.
    pub commits: u64,
    /// Panics contained while working on a document (see `Event::DocumentPanicked`).
    pub panics: u64,
    /// Compactions committed (a snapshot replaced the chunks it covers).
    pub compactions: u64,
    /// Chunks other nodes of a cluster committed, read from the shared storage and applied.
    pub external_chunks: u64,
}

impl Stats {
    /// Adds `other`'s counters to these (the stats of several shards).
    pub fn add(&mut self, other: &Self) {
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.changes_applied += other.changes_applied;
        self.changes_deferred += other.changes_deferred;
        self.evictions += other.evictions;
        self.commits += other.commits;
        self.panics += other.panics;
        self.compactions += other.compactions;
        self.external_chunks += other.external_chunks;
    }
}

#[derive(Debug)]
enum PendingOp {
    Load,
    Commit {
        heads: Vec<automerge::ChangeHash>,
        key: ChunkKey,
        tickets: Vec<Ticket>,
        remote: bool,
    },
    Compact {
        key: ChunkKey,
        covered: Vec<ChunkKey>,
    },
    SyncState,
    /// Writing a tombstone (`ticket`: a local deletion waiting for it).
    Tombstone {
        ticket: Option<Ticket>,
    },
    /// Reading chunks another node committed (`asked`: their keys; empty: all).
    External {
        asked: Vec<ChunkKey>,
    },
}

/// Effects queue and bookkeeping shared by the connection and document halves of the core.
#[derive(Debug, Default)]
struct Outbox {
    effects: VecDeque<Effect>,
    ops: HashMap<OpId, (DocumentId, PendingOp)>,
    next_op: u64,
    stats: Stats,
    /// Frames and bytes sent per connection.
    per_conn: HashMap<ConnId, (u64, u64)>,
}

impl Outbox {
    fn send(&mut self, conn: ConnId, msg: &Message) {
        let bytes = wire::encode(msg);
        self.stats.messages_out += 1;
        self.stats.bytes_out += bytes.len() as u64;
        let c = self.per_conn.entry(conn).or_default();
        c.0 += 1;
        c.1 += bytes.len() as u64;
        self.effects.push_back(Effect::Send { conn, bytes });
    }

    fn event(&mut self, e: Event) {
        self.effects.push_back(Effect::Event(e));
    }

    fn storage(&mut self, op: StorageOp, pending: PendingOp) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        self.ops.insert(id, (op.doc(), pending));
        self.effects.push_back(Effect::Storage { id, op });
        id
    }
}

/// The sans-IO sync engine of one replica. See the [module docs](self) for the driving loop.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    actor: ActorId,
    session_id: String,
    ephemeral_count: u64,
    /// Hybrid logical clock stamping local changes (`change_stamped`).
    clock: crate::policy::ReplicaClock,
    /// Last ephemeral count seen per (sender, session), across all connections.
    ephemeral_seen: HashMap<(crate::id::PeerId, String), u64>,
    next_ticket: u64,
    conns: BTreeMap<ConnId, Conn>,
    /// Subscribers per document (see `subscribers.rs`).
    subscribers: subscribers::Subscribers,
    docs: HashMap<DocumentId, DocEntry>,
    out: Outbox,
    /// Region servers: committed heads of every stored document, for anti-entropy digests.
    index: region::HeadsIndex,
    /// Traffic of ended region links, per peer region.
    region_traffic: HashMap<String, region_status::RegionTraffic>,
    /// Heads other storages committed, as gossiped by peers (`remote-heads-changed`).
    remote_heads: HashMap<DocumentId, BTreeMap<crate::id::StorageId, Vec<automerge::ChangeHash>>>,
    /// Panic containment (see `guard.rs`).
    guard: guard::GuardContext,
    /// Peer ids reserved by principals (see `identity.rs`).
    reservations: identity::Reservations,
    /// The wall clock (Unix milliseconds) as the driver last reported it (0: never).
    wall_ms: u64,
    /// Deleted documents (see `deletion.rs`).
    tombstones: HashMap<DocumentId, Tombstone>,
    /// A deletion being applied came from the cluster bus.
    from_cluster: bool,
}

impl Core {
    /// A core with no documents and no connections.
    pub fn new(config: CoreConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let actor = ActorId::from(rng.random::<[u8; 16]>());
        let session_id = hex::encode(rng.random::<[u8; 8]>());
        Self {
            config,
            clock: crate::policy::ReplicaClock::new(crate::policy::Hlc::new(actor.clone())),
            actor,
            session_id,
            ephemeral_count: 0,
            ephemeral_seen: HashMap::new(),
            next_ticket: 0,
            conns: BTreeMap::new(),
            subscribers: subscribers::Subscribers::default(),
            docs: HashMap::new(),
            out: Outbox::default(),
            index: region::HeadsIndex::default(),
            region_traffic: HashMap::new(),
            remote_heads: HashMap::new(),
            guard: guard::GuardContext::default(),
            reservations: identity::Reservations::default(),
            wall_ms: 0,
            tombstones: HashMap::new(),
            from_cluster: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// True unless this core is a secondary shard (see [`ShardConfig`]).
    pub fn is_primary_shard(&self) -> bool {
        self.config.shard.is_none_or(|s| s.index == 0)
    }

    /// True when this core holds `doc` (always, unless it is one shard of several).
    pub fn owns(&self, doc: &DocumentId) -> bool {
        self.config.shard.is_none_or(|s| s.owns(doc))
    }

    /// True when this core owns anti-entropy bucket `bucket`.
    fn owns_bucket(&self, bucket: usize) -> bool {
        self.config.shard.is_none_or(|s| s.owns_bucket(bucket))
    }

    /// The next effect for the driver, if any. Drain this after every `handle_*` call.
    #[must_use]
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.out.effects.pop_front()
    }

    /// Counters since construction.
    pub fn stats(&self) -> &Stats {
        &self.out.stats
    }

    /// Number of documents held in memory.
    pub fn resident_documents(&self) -> usize {
        self.docs.len()
    }

    /// True when the core waits for no storage operation, has no queued effect, and holds
    /// nothing that is not committed (no pending incoming change, no failed commit to retry).
    pub fn is_idle(&self) -> bool {
        self.out.ops.is_empty()
            && self.out.effects.is_empty()
            && self.docs.values().all(DocEntry::is_settled)
    }

    fn ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        Ticket(self.next_ticket)
    }

    /// Reports the result of a [`StorageOp`] the driver executed.
    pub fn handle_storage_result(
        &mut self,
        now: u64,
        id: OpId,
        result: Result<StorageReply, StorageError>,
    ) {
        let Some((doc, pending)) = self.out.ops.remove(&id) else {
            return;
        };
        match pending {
            PendingOp::Load => {
                let _ = self.guarded(now, doc, |c| c.on_loaded(now, doc, result));
            }
            PendingOp::Commit {
                heads,
                key,
                tickets,
                remote,
            } => self.on_committed(now, doc, heads, key, tickets, remote, result),
            PendingOp::Compact { key, covered } => self.on_compacted(doc, key, covered, result),
            PendingOp::External { asked } => {
                let _ = self.guarded(now, doc, |c| c.on_external_read(now, doc, asked, result));
            }
            PendingOp::Tombstone { ticket } => {
                let error = result.as_ref().err().map(ToString::to_string);
                if let Some(ticket) = ticket {
                    self.out.event(Event::Committed {
                        ticket,
                        result: error.clone().map_or(Ok(Vec::new()), Err),
                    });
                }
                if let Some(error) = error {
                    self.out.event(Event::StorageFailed { doc, error });
                }
            }
            PendingOp::SyncState => {
                if let Err(e) = result {
                    self.out.event(Event::StorageFailed {
                        doc,
                        error: e.to_string(),
                    });
                }
            }
        }
    }

    /// The wall clock, in Unix milliseconds (the driver reports it with every tick): it dates
    /// what the core records for people (who wrote a change, when), never its own decisions,
    /// which run on the monotonic `now`.
    pub fn handle_wall_clock(&mut self, unix_ms: u64) {
        self.wall_ms = unix_ms;
    }

    /// Timers: handshake timeouts, requests waiting for peers' answers, eviction of idle
    /// documents. Call it every second or so.
    pub fn handle_tick(&mut self, now: u64) {
        if self.is_primary_shard()
            && let Some(budgets) = &self.config.budgets
        {
            budgets.prune(now);
        }
        debug_assert!(
            self.subscribers_consistent(),
            "subscriber index out of step"
        );
        self.expire_handshakes(now);
        self.retry_panicked(now);
        let stale: Vec<DocumentId> = self
            .docs
            .iter()
            .filter(|(_, e)| e.external_stale.is_some())
            .map(|(d, _)| *d)
            .collect();
        for doc in stale {
            self.read_external(doc);
        }
        self.expire_asks(now);
        self.flush_idle(now);
        self.evict(now);
        self.region_tick(now);
    }

    /// Documents a connection is syncing.
    pub fn connection_documents(&self, conn: ConnId) -> BTreeSet<DocumentId> {
        self.conns
            .get(&conn)
            .map(|c| c.subscribed.clone())
            .unwrap_or_default()
    }
}
