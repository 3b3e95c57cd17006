//! The cluster bus: how the nodes of one region, sharing one database, tell each other what they
//! committed and relay ephemeral messages (presence, cursors).
//!
//! A node that commits chunks of a document to the shared storage makes sure every other node
//! hears of it ([`BusNotice::Committed`]): either the storage announces it inside the committing
//! transaction (PostgreSQL `NOTIFY`, delivered only if and after the transaction commits; see
//! [`ClusterBus::notifies_commits`]), or the driver publishes it once the commit returned (a bus
//! such as NATS). A notice is a hint to read the storage, never the data itself: receivers load
//! the named chunks from storage. A subscriber that may have missed notices (its connection to
//! the bus dropped and came back) receives [`BusEvent::Gap`] and re-reads what it holds.
//!
//! ```no_run
//! # async fn demo(bus: std::sync::Arc<dyn concord::repo::ClusterBus>) {
//! use concord::repo::{BusEvent, BusNotice};
//! let mut events = bus.subscribe();
//! while let Some(event) = events.recv().await {
//!     match event {
//!         BusEvent::Notice(BusNotice::Committed { node, doc, keys }) => { /* load `keys` of `doc` */ }
//!         BusEvent::Notice(notice) => { /* ephemeral: relay to local peers */ }
//!         BusEvent::Gap => { /* re-read every resident document */ }
//!         _ => {}
//!     }
//! }
//! # }
//! ```

use automerge::ChangeHash;

use crate::id::{DocumentId, PeerId, StorageId};
use crate::storage::ChunkKey;

/// Something one node tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusNotice {
    /// Node `node` committed these chunks of `doc` to the shared storage.
    Committed {
        /// The committing node's id.
        node: String,
        /// The document.
        doc: DocumentId,
        /// The keys of the chunks it appended (empty: "something changed, re-read it").
        keys: Vec<ChunkKey>,
    },
    /// Node `node` recorded the deletion of `doc`.
    Deleted {
        /// The node's id.
        node: String,
        /// The document.
        doc: DocumentId,
        /// The tombstone (`concord::core::Tombstone::encode`).
        tombstone: Vec<u8>,
    },
    /// An ephemeral message a peer of node `node` sent about `doc`.
    Ephemeral {
        /// The relaying node's id.
        node: String,
        /// The document.
        doc: DocumentId,
        /// The original sender, as authenticated by `node`.
        sender: PeerId,
        /// The sender's session.
        session_id: String,
        /// The sender's counter.
        count: u64,
        /// The payload (never stored).
        data: Vec<u8>,
    },
    /// The heads of `doc` that other regions acknowledged to node `node` over the region links
    /// it holds (one node of a cluster holds each link): every node reports them in its heads
    /// gossip, so a client of any node learns `regions:N` durability.
    RegionHeads {
        /// The node holding the links.
        node: String,
        /// The document.
        doc: DocumentId,
        /// Per peer region's storage id, the heads it has committed.
        heads: Vec<(StorageId, Vec<ChangeHash>)>,
    },
}

impl BusNotice {
    /// The node the notice comes from.
    pub fn node(&self) -> &str {
        match self {
            Self::Committed { node, .. }
            | Self::Ephemeral { node, .. }
            | Self::Deleted { node, .. }
            | Self::RegionHeads { node, .. } => node,
        }
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusEvent {
    /// A notice from another node (a bus never echoes a node's own notices back to it).
    Notice(BusNotice),
    /// Notices may have been lost (the subscription was interrupted and is back): re-read.
    Gap,
}

/// Why the bus refused or failed an operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The bus is not reachable right now.
    #[error("cluster bus unavailable: {0}")]
    Unavailable(String),
    /// The notice does not fit the bus (e.g. larger than a notification payload).
    #[error("cluster bus notice too large: {0} bytes")]
    TooLarge(usize),
}

/// A publish/subscribe channel between the nodes of a cluster.
#[async_trait::async_trait]
pub trait ClusterBus: std::fmt::Debug + Send + Sync + 'static {
    /// True when the storage announces every commit itself, inside the committing transaction
    /// (the driver then never publishes [`BusNotice::Committed`]).
    fn notifies_commits(&self) -> bool;
    /// Publishes a notice to every other node (best effort: a lost notice is repaired by
    /// [`BusEvent::Gap`] handling and periodic re-reads, never by the data path).
    async fn publish(&self, notice: BusNotice) -> Result<(), BusError>;
    /// Every notice from other nodes, and gaps. One subscription per call.
    fn subscribe(&self) -> tokio::sync::mpsc::Receiver<BusEvent>;
    /// True while the bus is connected (for health checks).
    fn is_connected(&self) -> bool;
}
