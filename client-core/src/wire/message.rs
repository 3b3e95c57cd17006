//! Protocol v1 message types.

use std::collections::BTreeMap;

use crate::id::{DocumentId, PeerId, StorageId};

/// The only protocol version Concord (and automerge-repo 2.x) speaks.
pub const PROTOCOL_V1: &str = "1";

/// `peerMetadata` of `join` and `peer` messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerMetadata {
    /// The peer's durable storage id; sync state is persisted against it.
    pub storage_id: Option<StorageId>,
    /// An ephemeral peer has no durable storage: no sync state is persisted for it.
    pub is_ephemeral: bool,
    /// Concord extension (`concordRegion`): the region a sync server replicates for. Only region
    /// links (authenticated server-to-server connections) act on it.
    pub region: Option<String>,
    /// Concord extension (`concord: true`): the peer understands Concord's extension messages
    /// (`concord-delete`, `concord-deleted`); other peers are answered in plain protocol v1.
    pub concord: bool,
}

/// Heads a storage id holds for a document, as gossiped in `remote-heads-changed`.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteHeads {
    /// bs58check-encoded change hashes.
    pub heads: Vec<String>,
    /// Milliseconds since the Unix epoch, as the sender saw them.
    pub timestamp: f64,
}

/// One protocol v1 message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// Client hello.
    Join {
        /// The joining peer.
        sender_id: PeerId,
        /// Its metadata (`peerMetadata`, or legacy `metadata`).
        peer_metadata: Option<PeerMetadata>,
        /// Versions it speaks.
        supported_protocol_versions: Vec<String>,
    },
    /// Server answer to `join`.
    Peer {
        /// The server.
        sender_id: PeerId,
        /// The client.
        target_id: PeerId,
        /// Server metadata.
        peer_metadata: Option<PeerMetadata>,
        /// The chosen version.
        selected_protocol_version: String,
    },
    /// A protocol error; the sender usually closes afterwards.
    Error {
        /// Sender, when known.
        sender_id: Option<PeerId>,
        /// Target, when known.
        target_id: Option<PeerId>,
        /// Human-readable reason.
        message: String,
    },
    /// Advisory goodbye.
    Leave {
        /// The leaving peer.
        sender_id: PeerId,
    },
    /// A sync message that also means "tell me if you don't have this document".
    Request {
        /// Sender.
        sender_id: PeerId,
        /// Target.
        target_id: PeerId,
        /// The document.
        document_id: DocumentId,
        /// An Automerge binary sync message (never empty).
        data: Vec<u8>,
    },
    /// An Automerge sync message for one document.
    Sync {
        /// Sender.
        sender_id: PeerId,
        /// Target.
        target_id: PeerId,
        /// The document.
        document_id: DocumentId,
        /// An Automerge binary sync message (never empty).
        data: Vec<u8>,
    },
    /// The sender does not have the document (and found it nowhere).
    DocUnavailable {
        /// Sender.
        sender_id: PeerId,
        /// Target.
        target_id: PeerId,
        /// The document.
        document_id: DocumentId,
    },
    /// Presence, cursors and other data that is relayed, never stored.
    Ephemeral {
        /// Original author (kept when relayed).
        sender_id: PeerId,
        /// Target.
        target_id: PeerId,
        /// The document the data is about.
        document_id: DocumentId,
        /// The author's session.
        session_id: String,
        /// Per-session sequence number; receivers drop counts not above the last seen.
        count: u64,
        /// Opaque application data.
        data: Vec<u8>,
    },
    /// The sender wants (or no longer wants) heads gossip about these storage ids.
    RemoteSubscriptionChange {
        /// Sender.
        sender_id: PeerId,
        /// Target.
        target_id: PeerId,
        /// Storage ids to add.
        add: Vec<StorageId>,
        /// Storage ids to remove.
        remove: Vec<StorageId>,
    },
    /// Heads gossip: which heads a storage id holds for a document.
    RemoteHeadsChanged {
        /// Sender.
        sender_id: PeerId,
        /// Target.
        target_id: PeerId,
        /// The document.
        document_id: DocumentId,
        /// Heads per storage id.
        new_heads: BTreeMap<StorageId, RemoteHeads>,
    },
    /// Concord extension (`concord-delete`): a client asks a server to delete a document (needs
    /// write access to it).
    Delete {
        /// Sender.
        sender_id: PeerId,
        /// Target.
        target_id: PeerId,
        /// The document.
        document_id: DocumentId,
    },
    /// Concord extension (`concord-deleted`): the document is deleted; `tombstone` says by whom
    /// and when. Servers send it to Concord peers that hold or ask for the document and to
    /// region links; a peer that receives it drops its copy.
    Deleted {
        /// Sender.
        sender_id: PeerId,
        /// Target.
        target_id: PeerId,
        /// The document.
        document_id: DocumentId,
        /// The tombstone (CBOR, see `concord::core::Tombstone`).
        tombstone: Vec<u8>,
    },
    /// Concord extension between region servers (`concord-digest`): a digest of every stored
    /// document's heads, one 64-bit sum per bucket of document ids (anti-entropy).
    Digest {
        /// Sender.
        sender_id: PeerId,
        /// Target.
        target_id: PeerId,
        /// 8 bytes (big-endian) per bucket: every bucket in order, or those of `covers`.
        buckets: Vec<u8>,
        /// The bucket indices `buckets` covers, in order (`None`: all of them). A sharded
        /// server sends one digest per shard, each covering the buckets that shard holds.
        covers: Option<Vec<u8>>,
    },
    /// Concord extension between region servers (`concord-digest-entries`): the (document, heads
    /// hash) entries of the buckets that differ.
    DigestEntries {
        /// Sender.
        sender_id: PeerId,
        /// Target.
        target_id: PeerId,
        /// The bucket indices covered (one byte each).
        buckets: Vec<u8>,
        /// 24 bytes per entry: 16-byte document id, 8-byte heads hash.
        entries: Vec<u8>,
    },
    /// Concord extension (`concord-regions`): a region server tells a Concord client that
    /// subscribed to heads gossip which regions it can reach now, so that a `regions:N` wait
    /// that cannot succeed through this server fails fast instead of timing out.
    Regions {
        /// Sender.
        sender_id: PeerId,
        /// Target.
        target_id: PeerId,
        /// Storage ids of the regions reachable now: the server's own and those of its region
        /// links that are up.
        reachable: Vec<StorageId>,
        /// Names of the peer regions it has seen whose link is down.
        down: Vec<String>,
    },
}

impl Message {
    /// The wire `type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Join { .. } => "join",
            Self::Peer { .. } => "peer",
            Self::Error { .. } => "error",
            Self::Leave { .. } => "leave",
            Self::Request { .. } => "request",
            Self::Sync { .. } => "sync",
            Self::DocUnavailable { .. } => "doc-unavailable",
            Self::Ephemeral { .. } => "ephemeral",
            Self::RemoteSubscriptionChange { .. } => "remote-subscription-change",
            Self::RemoteHeadsChanged { .. } => "remote-heads-changed",
            Self::Delete { .. } => "concord-delete",
            Self::Deleted { .. } => "concord-deleted",
            Self::Digest { .. } => "concord-digest",
            Self::DigestEntries { .. } => "concord-digest-entries",
            Self::Regions { .. } => "concord-regions",
        }
    }

    /// The sender, where the message carries one.
    pub fn sender_id(&self) -> Option<&PeerId> {
        match self {
            Self::Join { sender_id, .. }
            | Self::Peer { sender_id, .. }
            | Self::Leave { sender_id }
            | Self::Request { sender_id, .. }
            | Self::Sync { sender_id, .. }
            | Self::DocUnavailable { sender_id, .. }
            | Self::Ephemeral { sender_id, .. }
            | Self::RemoteSubscriptionChange { sender_id, .. }
            | Self::RemoteHeadsChanged { sender_id, .. }
            | Self::Delete { sender_id, .. }
            | Self::Deleted { sender_id, .. }
            | Self::Digest { sender_id, .. }
            | Self::DigestEntries { sender_id, .. }
            | Self::Regions { sender_id, .. } => Some(sender_id),
            Self::Error { sender_id, .. } => sender_id.as_ref(),
        }
    }

    /// The document the message is about, if any.
    pub fn document_id(&self) -> Option<DocumentId> {
        match self {
            Self::Request { document_id, .. }
            | Self::Sync { document_id, .. }
            | Self::DocUnavailable { document_id, .. }
            | Self::Ephemeral { document_id, .. }
            | Self::RemoteHeadsChanged { document_id, .. }
            | Self::Delete { document_id, .. }
            | Self::Deleted { document_id, .. } => Some(*document_id),
            _ => None,
        }
    }
}
