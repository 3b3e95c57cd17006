//! Ephemeral messages (presence, cursors): relayed to the other peers syncing a document, never
//! stored.
//!
//! - **Who speaks.** A message from an authenticated (or anonymous) inbound client is relayed
//!   under the id that client speaks as ([`PeerInfo::speaks_as`](super::PeerInfo::speaks_as)),
//!   and only when it names that client as its sender: a client's message naming another sender
//!   is dropped (stock automerge-repo clients echo every message they receive back to the server,
//!   which already relayed the original; anything else naming someone else is a forgery), so
//!   nobody can send presence as somebody else. Region links and servers we dialled relay other
//!   peers' messages, so their `senderId` is kept.
//! - **Deduplication.** A client's counters are kept per connection and session (a client can
//!   only silence itself); relayed messages, which may come back on another path, are
//!   deduplicated per (sender, session) across connections. Never back to the sender.
//! - **Amplification.** Each client connection has an ephemeral byte budget
//!   ([`Quotas::ephemeral_bytes_per_sec`](super::Quotas::ephemeral_bytes_per_sec)); beyond it,
//!   its messages are dropped and it is told so (at most every few seconds).

use super::{Core, Event, ProtocolError, TokenBucket};
use crate::id::{ConnId, DocumentId, PeerId};
use crate::wire::Message;

/// Relayed (sender, session) counters remembered before the table is reset.
const RELAYED_SESSIONS_KEPT: usize = 65_536;
/// Sessions remembered per client connection before its table is reset.
const CLIENT_SESSIONS_KEPT: usize = 64;
/// A client is told its ephemeral messages are dropped at most this often.
const WARN_EVERY_MS: u64 = 5_000;

impl Core {
    /// Sends ephemeral `data` about `doc` to every peer syncing it. Never stored.
    pub fn broadcast(&mut self, doc: &DocumentId, data: Vec<u8>) {
        self.ephemeral_count += 1;
        let (from, session_id, count) = (
            self.config.peer_id.clone(),
            self.session_id.clone(),
            self.ephemeral_count,
        );
        self.fan_out(None, &from, *doc, &session_id, count, &data);
    }

    /// An ephemeral message about `doc` relayed by another node of the cluster (its bus):
    /// forwarded to this core's peers of `doc`, never back to the sender.
    pub fn handle_cluster_ephemeral(
        &mut self,
        doc: DocumentId,
        from: PeerId,
        session_id: String,
        count: u64,
        data: Vec<u8>,
    ) {
        if !self.fresh_relayed(&from, &session_id, count) {
            return;
        }
        self.fan_out(None, &from, doc, &session_id, count, &data);
        self.out.event(Event::Ephemeral {
            doc,
            from,
            session_id,
            count,
            data,
            from_cluster: true,
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_ephemeral(
        &mut self,
        now: u64,
        conn: ConnId,
        sender_id: PeerId,
        doc: DocumentId,
        session_id: String,
        count: u64,
        data: Vec<u8>,
    ) {
        let Some(peer) = self.conns.get(&conn).and_then(|c| c.peer.clone()) else {
            return;
        };
        if !self.config.policy.access(&peer, &doc) {
            return;
        }
        let relays_others = !peer.inbound || peer.grant.as_ref().is_some_and(|g| g.replicate);
        let from = if relays_others {
            if !self.fresh_relayed(&sender_id, &session_id, count) {
                return;
            }
            sender_id
        } else if sender_id != peer.peer_id {
            return; // An echo of a message we relayed, or a forgery: never someone else's voice.
        } else {
            if !self.fresh_from_client(now, conn, &session_id, count, data.len()) {
                return;
            }
            peer.speaks_as.clone()
        };
        self.fan_out(Some(conn), &from, doc, &session_id, count, &data);
        self.out.event(Event::Ephemeral {
            doc,
            from,
            session_id,
            count,
            data,
            from_cluster: false,
        });
    }

    /// True (and remembered) when a relayed message is newer than any seen from its sender.
    fn fresh_relayed(&mut self, from: &PeerId, session_id: &str, count: u64) -> bool {
        let key = (from.clone(), session_id.to_owned());
        if self
            .ephemeral_seen
            .get(&key)
            .is_some_and(|last| *last >= count)
        {
            return false;
        }
        if self.ephemeral_seen.len() >= RELAYED_SESSIONS_KEPT {
            self.ephemeral_seen.clear();
        }
        self.ephemeral_seen.insert(key, count);
        true
    }

    /// True when a client's message is newer than its last one in that session and within its
    /// ephemeral byte budget.
    fn fresh_from_client(
        &mut self,
        now: u64,
        conn: ConnId,
        session_id: &str,
        count: u64,
        len: usize,
    ) -> bool {
        let quotas = self.config.budgets.as_ref().map(|b| {
            (
                b.limits().ephemeral_burst,
                b.limits().ephemeral_bytes_per_sec,
            )
        });
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if c.ephemeral_seen
            .get(session_id)
            .is_some_and(|last| *last >= count)
        {
            return false;
        }
        if let Some((burst, per_sec)) = quotas {
            let budget = c
                .ephemeral_budget
                .get_or_insert_with(|| TokenBucket::new(burst, per_sec as f64, now));
            if !budget.take(len as u64, now) {
                let warn = c
                    .ephemeral_warned
                    .is_none_or(|at| now.saturating_sub(at) >= WARN_EVERY_MS);
                if warn {
                    c.ephemeral_warned = Some(now);
                    self.protocol_notice(
                        conn,
                        ProtocolError::QuotaExceeded {
                            what: "ephemeral bytes per second (messages dropped)",
                            doc: None,
                        },
                    );
                }
                return false;
            }
        }
        if c.ephemeral_seen.len() >= CLIENT_SESSIONS_KEPT {
            c.ephemeral_seen.clear();
        }
        c.ephemeral_seen.insert(session_id.to_owned(), count);
        true
    }

    /// Sends the message to every subscriber of `doc` but its origin and its sender.
    fn fan_out(
        &mut self,
        origin: Option<ConnId>,
        from: &PeerId,
        doc: DocumentId,
        session_id: &str,
        count: u64,
        data: &[u8],
    ) {
        let targets: Vec<(ConnId, PeerId)> = self
            .subscribers
            .of(&doc)
            .filter(|id| Some(*id) != origin)
            .filter_map(|id| {
                let other = self.conns.get(&id)?;
                other.peer.as_ref().map(|p| (id, p.peer_id.clone()))
            })
            .filter(|(_, peer)| peer != from)
            .collect();
        for (to, target_id) in targets {
            let fwd = Message::Ephemeral {
                sender_id: from.clone(),
                target_id,
                document_id: doc,
                session_id: session_id.to_owned(),
                count,
                data: data.to_vec(),
            };
            self.out.send(to, &fwd);
        }
    }
}
