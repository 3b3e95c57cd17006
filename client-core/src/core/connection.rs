//! Connections: the join/peer handshake, message dispatch and teardown.

use std::collections::BTreeSet;

use super::{CloseReason, Core, Effect, Event, PeerInfo, ProtocolError};
use crate::id::{ConnId, DocumentId, PeerId};
use crate::wire::{self, Message, PROTOCOL_V1, PeerMetadata};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnState {
    /// We accepted it and wait for `join`.
    AwaitingJoin,
    /// We dialled, sent `join`, and wait for `peer`.
    AwaitingPeer,
    /// Handshake done.
    Established,
    /// We asked the driver to close it.
    Closing,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) state: ConnState,
    pub(super) inbound: bool,
    pub(super) opened_at: u64,
    pub(super) errors: u32,
    pub(super) peer: Option<PeerInfo>,
    /// Verified credentials supplied by the transport.
    pub(super) grant: Option<super::Grant>,
    /// Documents this connection syncs with us (survives eviction of the document).
    pub(super) subscribed: BTreeSet<DocumentId>,
    /// Set when the peer is a region link (a sync server replicating everything).
    pub(super) region: Option<super::region::RegionLink>,
    /// The peer subscribed to heads gossip (`remote-subscription-change`).
    pub(super) heads_gossip: bool,
    /// Ephemeral counters seen from this client, per session (see `ephemeral.rs`).
    pub(super) ephemeral_seen: std::collections::HashMap<String, u64>,
    /// Ephemeral bytes this client may still fan out.
    pub(super) ephemeral_budget: Option<super::TokenBucket>,
    /// When it was last told its ephemeral messages are being dropped.
    pub(super) ephemeral_warned: Option<u64>,
    /// What it was last told of the regions we reach (servers), or what it told us (clients).
    pub(super) regions: Option<super::RegionReach>,
}

impl Conn {
    fn new(inbound: bool, now: u64) -> Self {
        Self {
            state: if inbound {
                ConnState::AwaitingJoin
            } else {
                ConnState::AwaitingPeer
            },
            inbound,
            opened_at: now,
            errors: 0,
            peer: None,
            grant: None,
            subscribed: BTreeSet::new(),
            region: None,
            heads_gossip: false,
            ephemeral_seen: std::collections::HashMap::new(),
            ephemeral_budget: None,
            ephemeral_warned: None,
            regions: None,
        }
    }
}

impl Core {
    fn our_metadata(&self) -> PeerMetadata {
        PeerMetadata {
            storage_id: self.config.storage_id.clone(),
            is_ephemeral: self.config.storage_id.is_none(),
            region: self.config.region.as_ref().map(|r| r.name.clone()),
            concord: true,
        }
    }

    /// We dialled a peer and the transport is open: sends `join`.
    pub fn handle_connect(&mut self, now: u64, conn: ConnId) {
        self.conns.insert(conn, Conn::new(false, now));
        let join = Message::Join {
            sender_id: self.config.peer_id.clone(),
            peer_metadata: Some(self.our_metadata()),
            supported_protocol_versions: vec![PROTOCOL_V1.into()],
        };
        self.out.send(conn, &join);
    }

    /// A peer dialled us and the transport is open: waits for its `join`.
    pub fn handle_accept(&mut self, now: u64, conn: ConnId) {
        self.handle_accept_with_grant(now, conn, None);
    }

    /// Like [`Core::handle_accept`], for a peer whose credentials the transport verified.
    pub fn handle_accept_with_grant(
        &mut self,
        now: u64,
        conn: ConnId,
        grant: Option<super::Grant>,
    ) {
        let mut c = Conn::new(true, now);
        c.grant = grant;
        self.conns.insert(conn, c);
    }

    /// The transport closed (for any reason). Sync state with that peer is dropped; a reconnect
    /// starts from the persisted state.
    pub fn handle_disconnect(&mut self, now: u64, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(link) = &c.region {
            self.region_link_closed(now, conn, &link.name, link.frames_in, link.bytes_in);
            self.announce_regions();
        }
        self.out.per_conn.remove(&conn);
        self.forget_subscriptions(conn, &c.subscribed);
        if let Some(info) = &c.peer {
            self.release_peer(now, info, c.subscribed.len());
        }
        for entry in self.docs.values_mut() {
            entry.peers.remove(&conn);
        }
        let pending_finds: Vec<DocumentId> = self
            .docs
            .iter()
            .filter(|(_, e)| !e.find_waiters.is_empty() || e.has_waiting_requesters())
            .map(|(d, _)| *d)
            .collect();
        for doc in pending_finds {
            self.check_availability(doc);
        }
        self.out.event(Event::PeerDisconnected {
            conn,
            peer_id: c.peer.map(|p| p.peer_id),
        });
    }

    /// The peer behind an established connection.
    pub fn peer(&self, conn: ConnId) -> Option<&PeerInfo> {
        self.conns.get(&conn).and_then(|c| c.peer.as_ref())
    }

    /// Connections whose handshake completed.
    pub fn established(&self) -> Vec<(ConnId, PeerInfo)> {
        self.conns
            .iter()
            .filter_map(|(id, c)| c.peer.clone().map(|p| (*id, p)))
            .collect()
    }

    pub(super) fn close(&mut self, conn: ConnId, code: u16, reason: impl Into<String>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.state == ConnState::Closing {
                return;
            }
            c.state = ConnState::Closing;
            self.out.effects.push_back(Effect::Close {
                conn,
                reason: CloseReason {
                    code,
                    reason: reason.into(),
                },
            });
        }
    }

    /// Tells the peer about `error` (an `error` message and an event) without counting it
    /// towards closing the connection (for refusals a well-behaved peer can run into).
    pub(super) fn protocol_notice(&mut self, conn: ConnId, error: ProtocolError) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let target_id = c.peer.as_ref().map(|p| p.peer_id.clone());
        self.out.send(
            conn,
            &Message::Error {
                sender_id: Some(self.config.peer_id.clone()),
                target_id,
                message: error.to_string(),
            },
        );
        self.out.event(Event::Protocol { conn, error });
    }

    /// Reports a protocol error; sends an `error` message to the peer and closes the connection
    /// once it has caused too many.
    pub(super) fn protocol_error(&mut self, conn: ConnId, error: ProtocolError) {
        let max = self.config.limits.max_protocol_errors;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.errors += 1;
        let too_many = c.errors > max;
        let target_id = c.peer.as_ref().map(|p| p.peer_id.clone());
        self.out.send(
            conn,
            &Message::Error {
                sender_id: Some(self.config.peer_id.clone()),
                target_id,
                message: error.to_string(),
            },
        );
        self.out.event(Event::Protocol { conn, error });
        if too_many {
            self.out.event(Event::Protocol {
                conn,
                error: ProtocolError::TooManyErrors,
            });
            self.close(conn, 1008, "too many protocol errors");
        }
    }

    /// One frame arrived on `conn`.
    pub fn handle_message(&mut self, now: u64, conn: ConnId, bytes: &[u8]) {
        self.out.stats.messages_in += 1;
        self.out.stats.bytes_in += bytes.len() as u64;
        let Some(state) = self.conns.get(&conn).map(|c| c.state) else {
            return;
        };
        if let Some(link) = self.conns.get_mut(&conn).and_then(|c| c.region.as_mut()) {
            link.frames_in += 1;
            link.bytes_in += bytes.len() as u64;
        }
        if state == ConnState::Closing {
            return;
        }
        let msg = match wire::decode(bytes, self.config.limits.max_message_bytes) {
            Ok(m) => m,
            Err(e) => {
                let fatal = state != ConnState::Established;
                self.protocol_error(conn, e.into());
                if fatal {
                    self.close(conn, 1002, "undecodable handshake");
                }
                return;
            }
        };
        self.dispatch_message(now, conn, state, msg);
    }

    /// Like [`Core::handle_message`], for a frame of `len` bytes the driver already decoded
    /// (a sharded driver decodes each frame once to route it to the core holding its document).
    /// A `len` of 0 means the frame was counted already (by another shard).
    pub fn handle_decoded(&mut self, now: u64, conn: ConnId, msg: Message, len: usize) {
        let Some(state) = self.conns.get(&conn).map(|c| c.state) else {
            return;
        };
        if len > 0 {
            self.out.stats.messages_in += 1;
            self.out.stats.bytes_in += len as u64;
            if let Some(link) = self.conns.get_mut(&conn).and_then(|c| c.region.as_mut()) {
                link.frames_in += 1;
                link.bytes_in += len as u64;
            }
        }
        if state == ConnState::Closing {
            return;
        }
        self.dispatch_message(now, conn, state, msg);
    }

    fn dispatch_message(&mut self, now: u64, conn: ConnId, state: ConnState, msg: Message) {
        match (state, msg) {
            (
                ConnState::AwaitingJoin,
                Message::Join {
                    sender_id,
                    peer_metadata,
                    supported_protocol_versions,
                },
            ) => self.on_join(
                now,
                conn,
                sender_id,
                peer_metadata,
                supported_protocol_versions,
            ),
            (
                ConnState::AwaitingPeer,
                Message::Peer {
                    sender_id,
                    peer_metadata,
                    selected_protocol_version,
                    ..
                },
            ) => {
                if selected_protocol_version != PROTOCOL_V1 {
                    self.protocol_error(
                        conn,
                        ProtocolError::UnsupportedVersion(vec![selected_protocol_version]),
                    );
                    self.close(conn, 1002, "unsupported protocol version");
                    return;
                }
                let speaks_as = sender_id.clone();
                self.establish(
                    now,
                    conn,
                    sender_id,
                    peer_metadata.unwrap_or_default(),
                    speaks_as,
                );
            }
            (_, Message::Error { message, .. }) => {
                self.out.event(Event::Protocol {
                    conn,
                    error: ProtocolError::Remote(message),
                });
                if state != ConnState::Established {
                    self.close(conn, 1000, "peer reported an error during the handshake");
                }
            }
            (_, Message::Leave { .. }) => self.close(conn, 1000, "peer left"),
            (ConnState::Established, msg @ (Message::Join { .. } | Message::Peer { .. })) => {
                self.protocol_error(conn, ProtocolError::UnexpectedHandshake(msg.type_name()));
            }
            (ConnState::Established, msg) => self.on_established_message(now, conn, msg),
            (_, msg) => {
                self.protocol_error(conn, ProtocolError::BeforeHandshake(msg.type_name()));
                self.close(conn, 1002, "handshake expected");
            }
        }
    }

    fn on_join(
        &mut self,
        now: u64,
        conn: ConnId,
        sender_id: PeerId,
        metadata: Option<PeerMetadata>,
        versions: Vec<String>,
    ) {
        if !versions.iter().any(|v| v == PROTOCOL_V1) {
            self.out.send(
                conn,
                &Message::Error {
                    sender_id: Some(self.config.peer_id.clone()),
                    target_id: Some(sender_id),
                    message: format!(
                        "unsupported protocol versions {versions:?}; this server speaks [\"1\"]"
                    ),
                },
            );
            self.out.event(Event::Protocol {
                conn,
                error: ProtocolError::UnsupportedVersion(versions),
            });
            self.close(conn, 1002, "unsupported protocol version");
            return;
        }
        if self.refuse_bad_ids(conn, &sender_id, metadata.as_ref()) {
            return;
        }
        let speaks_as = self.bind_peer_id(now, conn, &sender_id);
        let reply = Message::Peer {
            sender_id: self.config.peer_id.clone(),
            target_id: sender_id.clone(),
            peer_metadata: Some(self.our_metadata()),
            selected_protocol_version: PROTOCOL_V1.into(),
        };
        self.out.send(conn, &reply);
        let mut metadata = metadata.unwrap_or_default();
        // Sync state is persisted for a bounded number of storage ids per principal.
        let charged = self
            .conns
            .get(&conn)
            .and_then(|c| c.grant.as_ref())
            .filter(|g| !g.replicate)
            .map(|g| g.principal.clone());
        if let (Some(budgets), Some(principal)) = (&self.config.budgets, charged) {
            let sid = metadata.storage_id.as_ref().map(|s| s.as_str().to_owned());
            if !budgets.connect(&principal, sid.as_deref(), now) && sid.is_some() {
                metadata.is_ephemeral = true;
            }
        }
        self.establish(now, conn, sender_id, metadata, speaks_as);
    }

    fn establish(
        &mut self,
        now: u64,
        conn: ConnId,
        peer_id: PeerId,
        metadata: PeerMetadata,
        speaks_as: PeerId,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let info = PeerInfo {
            peer_id: peer_id.clone(),
            metadata: metadata.clone(),
            inbound: c.inbound,
            grant: c.grant.clone(),
            speaks_as,
        };
        c.state = ConnState::Established;
        c.peer = Some(info.clone());
        self.out.event(Event::PeerConnected {
            conn,
            peer_id,
            metadata,
        });
        self.after_established(now, conn, &info);
    }

    /// A sharded driver's secondary cores learn of a connection once the primary core completed
    /// its handshake: the connection is established here at once, with no handshake message and
    /// no [`Event::PeerConnected`] (the primary reported it), and resident documents are offered
    /// as [`Core::handle_message`] would have after a `join` or `peer`.
    pub fn adopt_established(&mut self, now: u64, conn: ConnId, info: PeerInfo) {
        let mut c = Conn::new(info.inbound, now);
        c.grant = info.grant.clone();
        c.state = ConnState::Established;
        c.peer = Some(info.clone());
        self.conns.insert(conn, c);
        self.after_established(now, conn, &info);
    }

    fn after_established(&mut self, now: u64, conn: ConnId, info: &PeerInfo) {
        let region = info.metadata.region.clone();
        if let Some(name) = region.filter(|_| self.is_region_link(info)) {
            // Anti-entropy finds what differs; no per-document exchange on link-up.
            self.region_link_up(now, conn, name);
            return;
        }
        if !info.inbound && self.is_primary_shard() {
            self.subscribe_heads(conn);
        }
        if !info.inbound {
            self.resend_deletes(conn);
        }
        // Announce resident documents the policy lets us share, and ask for wanted ones.
        let mut docs: Vec<DocumentId> = self.docs.keys().copied().collect();
        docs.sort();
        for doc in docs {
            let wanted = self.docs.get(&doc).is_some_and(|e| e.is_wanted());
            if self.config.policy.announce(info, &doc)
                && (wanted || self.docs.get(&doc).is_some_and(|e| e.has_content()))
            {
                self.subscribe(conn, doc);
                self.sync_doc(now, doc);
            }
        }
    }

    /// Subscribes `conn` to `doc` at its principal's request, within its subscription quota;
    /// false (and an error to the peer) when the quota is used up.
    pub(super) fn subscribe_requested(&mut self, now: u64, conn: ConnId, doc: DocumentId) -> bool {
        let known = self
            .conns
            .get(&conn)
            .is_some_and(|c| c.subscribed.contains(&doc));
        if !known
            && let (Some(principal), Some(budgets)) =
                (self.charged_principal(conn), self.config.budgets.clone())
            && !budgets.subscribe(&principal, now)
        {
            self.protocol_error(
                conn,
                ProtocolError::QuotaExceeded {
                    what: "documents subscribed at once",
                    doc: Some(doc),
                },
            );
            return false;
        }
        self.subscribe(conn, doc);
        true
    }

    fn on_established_message(&mut self, now: u64, conn: ConnId, msg: Message) {
        match msg {
            Message::Request {
                document_id, data, ..
            } => self.on_sync(now, conn, document_id, &data, true),
            Message::Sync {
                document_id, data, ..
            } => self.on_sync(now, conn, document_id, &data, false),
            Message::DocUnavailable { document_id, .. } => self.on_unavailable(conn, document_id),
            Message::Ephemeral {
                sender_id,
                document_id,
                session_id,
                count,
                data,
                ..
            } => self.on_ephemeral(now, conn, sender_id, document_id, session_id, count, data),
            Message::RemoteSubscriptionChange { add, remove, .. } => {
                self.on_remote_subscription(conn, &add, &remove);
                self.announce_regions();
            }
            Message::RemoteHeadsChanged {
                document_id,
                new_heads,
                ..
            } => self.on_remote_heads(conn, document_id, new_heads),
            Message::Digest {
                buckets, covers, ..
            } => self.on_digest(now, conn, &buckets, covers.as_deref()),
            Message::Delete { document_id, .. } => self.on_delete(now, conn, document_id),
            Message::Deleted {
                document_id,
                tombstone,
                ..
            } => self.on_deleted(now, conn, document_id, &tombstone),
            Message::DigestEntries {
                buckets, entries, ..
            } => self.on_digest_entries(now, conn, &buckets, &entries),
            Message::Regions {
                reachable, down, ..
            } => self.on_regions(conn, reachable, down),
            _ => {}
        }
    }

    pub(super) fn expire_handshakes(&mut self, now: u64) {
        let timeout = self.config.limits.handshake_timeout_ms;
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!(c.state, ConnState::AwaitingJoin | ConnState::AwaitingPeer)
                    && now.saturating_sub(c.opened_at) > timeout
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in expired {
            self.out.event(Event::Protocol {
                conn,
                error: ProtocolError::HandshakeTimeout,
            });
            self.close(conn, 1008, "handshake timed out");
        }
    }
}
