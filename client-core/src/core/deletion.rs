//! Deletion that propagates: a durable tombstone (who, when) that every server, region and
//! client learns, and that no later edit resurrects.
//!
//! - **Deleting.** [`Core::delete`] (a client's app, or a server's admin) records a
//!   [`Tombstone`], drops the document from memory, and tells peers: a client asks the servers
//!   it dialled (`concord-delete`, needing write access there) until one confirms; a server
//!   tells the region links and every peer syncing the document (`concord-deleted`, or
//!   `doc-unavailable` to peers that do not speak Concord's extensions, such as stock
//!   automerge-repo clients).
//! - **Learning of it.** A peer told `concord-deleted` by a server it dialled or by a region
//!   link records the tombstone, drops its copy (clients purge their stored data at once),
//!   fails whatever waited on the document and reports [`Event::DocDeleted`].
//! - **No resurrection.** Sync for a deleted document is refused whatever it carries: a peer
//!   back from months offline with edits is told `concord-deleted` (its edits are refused: the
//!   app hears of it through its `DocDeleted` event). Delete wins over concurrent edits.
//! - **Anti-entropy.** A deleted document's heads index entry is the [`DELETED`] marker, so
//!   region digests differ until both sides hold the tombstone, and the entries exchange sends
//!   the tombstone instead of syncing.
//! - **Storage.** Clients, and every replica on a purge, delete the document's stored data at
//!   once; servers ([`CoreConfig::retain_deleted`](super::CoreConfig::retain_deleted)) keep it
//!   until their retention period, then reclaim it (the server's housekeeping). The tombstone
//!   is kept longer: a peer offline for longer than the tombstone's retention could resurrect
//!   the document (a documented trade-off).

use std::collections::BTreeSet;

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};

use super::{Core, CoreError, Event, FindOutcome, Origin, PendingOp, ProtocolError, StorageOp};
use crate::id::{ConnId, DocumentId};
use crate::wire::Message;

/// The heads index entry of a deleted document.
pub const DELETED: ChangeHash = ChangeHash([0xDE; 32]);

/// A document's deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Tombstone {
    /// Who deleted it: the principal as the server that accepted the deletion saw its token
    /// (or the deleting replica's peer id, until a server confirms).
    pub by: String,
    /// When, in Unix milliseconds (the accepting server's clock).
    pub at_ms: u64,
    /// An erasure: every replica deletes the stored bytes at once.
    #[serde(default)]
    pub purge: bool,
    /// (Clients) a server confirmed it.
    #[serde(default)]
    pub confirmed: bool,
    /// (Servers) the stored data was reclaimed.
    #[serde(default)]
    pub reclaimed: bool,
}

impl Tombstone {
    /// A tombstone by `by` at `at_ms`.
    pub fn new(by: impl Into<String>, at_ms: u64, purge: bool) -> Self {
        Self {
            by: by.into(),
            at_ms,
            purge,
            confirmed: false,
            reclaimed: false,
        }
    }

    /// The stored and wire form (CBOR).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = ciborium::ser::into_writer(self, &mut out);
        out
    }

    /// Parses [`Tombstone::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        ciborium::de::from_reader(bytes).map_err(|e| format!("malformed tombstone: {e}"))
    }
}

impl Core {
    /// Loads the tombstones storage holds (`Storage::tombstones`); the driver calls it at start.
    /// Malformed entries are skipped.
    pub fn seed_tombstones(&mut self, entries: impl IntoIterator<Item = (DocumentId, Vec<u8>)>) {
        for (doc, bytes) in entries {
            if let (true, Ok(t)) = (self.owns(&doc), Tombstone::decode(&bytes)) {
                self.tombstones.insert(doc, t);
                self.index_heads(doc, &[DELETED]);
            }
        }
    }

    /// The tombstone of `doc`, if it was deleted.
    pub fn tombstone(&self, doc: &DocumentId) -> Option<&Tombstone> {
        self.tombstones.get(doc)
    }

    /// Every tombstone this core holds.
    pub fn tombstones(&self) -> impl Iterator<Item = (&DocumentId, &Tombstone)> {
        self.tombstones.iter()
    }

    /// Deletes `doc` here and everywhere it propagates (see the module docs); `by` names who
    /// deletes it, `purge` erases stored bytes on every replica at once. The ticket resolves
    /// ([`Event::Committed`]) once the tombstone is committed to local storage.
    pub fn delete(
        &mut self,
        now: u64,
        doc: DocumentId,
        by: impl Into<String>,
        purge: bool,
    ) -> Result<super::Ticket, CoreError> {
        if self.tombstones.contains_key(&doc) {
            return Err(CoreError::Deleted(doc));
        }
        let ticket = self.ticket();
        let t = Tombstone::new(by, self.wall_ms, purge);
        self.apply_tombstone(now, doc, t, None, Some(ticket));
        Ok(ticket)
    }

    /// Turns the deletion of `doc` into an erasure: its stored bytes are deleted here at once, and
    /// on every replica that learns it.
    pub fn purge(&mut self, now: u64, doc: DocumentId) -> Result<(), CoreError> {
        let mut t = self
            .tombstones
            .get(&doc)
            .cloned()
            .ok_or(CoreError::NotLoaded(doc))?;
        t.purge = true;
        self.apply_tombstone(now, doc, t, None, None);
        Ok(())
    }

    /// Records `t` for `doc` and tells whoever must know (not `origin`). False when `doc` was
    /// deleted already (a purge still erases what a plain deletion kept).
    pub(super) fn apply_tombstone(
        &mut self,
        now: u64,
        doc: DocumentId,
        mut t: super::deletion::Tombstone,
        origin: Option<ConnId>,
        ticket: Option<super::Ticket>,
    ) -> bool {
        if let Some(old) = self.tombstones.get_mut(&doc) {
            let upgrade = t.purge && !old.purge;
            let confirm = t.confirmed && !old.confirmed;
            old.purge |= t.purge;
            old.confirmed |= t.confirmed;
            if upgrade || confirm {
                let record = old.encode();
                self.out.storage(
                    StorageOp::PutTombstone { doc, record },
                    PendingOp::Tombstone { ticket: None },
                );
            }
            if upgrade {
                self.out
                    .storage(StorageOp::Delete { doc }, PendingOp::SyncState);
                self.tell_peers(doc, origin);
            }
            return false;
        }
        t.reclaimed = t.purge || !self.config.retain_deleted;
        let record = t.encode();
        self.tombstones.insert(doc, t.clone());
        self.out.storage(
            StorageOp::PutTombstone { doc, record },
            PendingOp::Tombstone { ticket },
        );
        if t.reclaimed {
            self.out
                .storage(StorageOp::Delete { doc }, PendingOp::SyncState);
        }
        self.index_heads(doc, &[DELETED]);
        self.drop_deleted(doc);
        self.tell_peers(doc, origin);
        self.out.event(Event::DocDeleted {
            doc,
            tombstone: t,
            origin: if origin.is_some() || self.from_cluster {
                Origin::Remote
            } else {
                Origin::Local
            },
            from_cluster: self.from_cluster,
        });
        let _ = now;
        true
    }

    /// Drops a deleted document from memory: whatever waited on it fails.
    fn drop_deleted(&mut self, doc: DocumentId) {
        self.remote_heads.remove(&doc);
        let ops: Vec<super::OpId> = self
            .out
            .ops
            .iter()
            .filter(|(_, (d, p))| {
                *d == doc && matches!(p, PendingOp::Commit { .. } | PendingOp::Load)
            })
            .map(|(id, _)| *id)
            .collect();
        let mut ops = ops;
        ops.sort();
        let mut tickets = Vec::new();
        for id in ops {
            if let Some((_, PendingOp::Commit { tickets: t, .. })) = self.out.ops.remove(&id) {
                tickets.extend(t);
            }
        }
        if let Some(entry) = self.docs.remove(&doc) {
            tickets.extend(entry.pending_tickets);
            for ticket in entry.find_waiters {
                self.out.event(Event::FindResolved {
                    ticket,
                    doc,
                    outcome: FindOutcome::Deleted,
                });
            }
        }
        for ticket in tickets {
            self.out.event(Event::Committed {
                ticket,
                result: Err(format!("document {doc} was deleted")),
            });
        }
    }

    /// Tells the peers that must know that `doc` is deleted (all but `origin`).
    fn tell_peers(&mut self, doc: DocumentId, origin: Option<ConnId>) {
        let Some(t) = self.tombstones.get(&doc).cloned() else {
            return;
        };
        // Subscribers, and the links that replicate everything (region links, servers we dialled).
        let mut targets: BTreeSet<ConnId> = self.subscribers.of(&doc).collect();
        targets.extend(
            self.conns
                .iter()
                .filter(|(_, c)| c.region.is_some() || !c.inbound)
                .map(|(id, _)| *id),
        );
        let targets: Vec<ConnId> = targets
            .into_iter()
            .filter(|id| Some(*id) != origin)
            .filter(|id| self.conns.get(id).is_some_and(|c| c.peer.is_some()))
            .collect();
        for conn in targets {
            self.tell_deleted(conn, doc, &t);
        }
    }

    /// Tells one peer about the deletion: a server we dialled is asked to delete (until one
    /// confirms); a Concord peer is told `concord-deleted`; another peer `doc-unavailable`.
    fn tell_deleted(&mut self, conn: ConnId, doc: DocumentId, t: &Tombstone) {
        if self.conns.get(&conn).is_none_or(|c| c.peer.is_none()) {
            return;
        }
        let was_subscribed = self.unsubscribe(conn, doc);
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some(peer) = c.peer.clone() else {
            return;
        };
        if was_subscribed
            && let (Some(budgets), Some(g)) = (&self.config.budgets, &c.grant)
            && c.inbound
            && !g.replicate
        {
            budgets.unsubscribe(&g.principal, 1, 0);
        }
        let (sender_id, target_id) = (self.config.peer_id.clone(), peer.peer_id.clone());
        let msg = if !peer.inbound && c.region.is_none() {
            if t.confirmed || !peer.metadata.concord {
                return;
            }
            Message::Delete {
                sender_id,
                target_id,
                document_id: doc,
            }
        } else if peer.metadata.concord {
            Message::Deleted {
                sender_id,
                target_id,
                document_id: doc,
                tombstone: t.encode(),
            }
        } else if was_subscribed {
            Message::DocUnavailable {
                sender_id,
                target_id,
                document_id: doc,
            }
        } else {
            return;
        };
        self.out.send(conn, &msg);
    }

    /// Asks a freshly established server to delete what we deleted while no server had
    /// confirmed it.
    pub(super) fn resend_deletes(&mut self, conn: ConnId) {
        let pending: Vec<(DocumentId, Tombstone)> = self
            .tombstones
            .iter()
            .filter(|(_, t)| !t.confirmed)
            .map(|(d, t)| (*d, t.clone()))
            .collect();
        let mut pending = pending;
        pending.sort_by_key(|(d, _)| *d);
        for (doc, t) in pending {
            self.tell_deleted(conn, doc, &t);
        }
    }

    /// A peer asks us to delete `doc` (`concord-delete`): it needs write access to it.
    pub(super) fn on_delete(&mut self, now: u64, conn: ConnId, doc: DocumentId) {
        let Some(peer) = self.conns.get(&conn).and_then(|c| c.peer.clone()) else {
            return;
        };
        if !peer.inbound || !self.config.policy.accept_changes(&peer, &doc) {
            self.protocol_error(conn, ProtocolError::DeleteDenied(doc));
            return;
        }
        let by = peer
            .grant
            .as_ref()
            .map_or_else(|| peer.peer_id.to_string(), |g| g.principal.clone());
        let mut t = Tombstone::new(by, self.wall_ms, false);
        t.confirmed = true;
        self.apply_tombstone(now, doc, t, Some(conn), None);
        // The requester's acknowledgement.
        if let Some(t) = self.tombstones.get(&doc).cloned() {
            self.tell_deleted(conn, doc, &t);
        }
    }

    /// A server we dialled, or a region link, says `doc` is deleted (`concord-deleted`).
    pub(super) fn on_deleted(&mut self, now: u64, conn: ConnId, doc: DocumentId, bytes: &[u8]) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.inbound && c.region.is_none() {
            self.protocol_error(conn, ProtocolError::DeleteDenied(doc));
            return;
        }
        let mut t = match Tombstone::decode(bytes) {
            Ok(t) => t,
            Err(reason) => {
                self.protocol_error(conn, ProtocolError::BadTombstone(reason));
                return;
            }
        };
        t.confirmed = true;
        t.reclaimed = false;
        self.apply_tombstone(now, doc, t, Some(conn), None);
    }

    /// Another node of the cluster recorded a deletion (its bus): drop the document and tell
    /// this node's peers.
    pub fn handle_cluster_deleted(&mut self, now: u64, doc: DocumentId, tombstone: &[u8]) {
        let Ok(t) = Tombstone::decode(tombstone) else {
            return;
        };
        if !self.owns(&doc) {
            return;
        }
        self.from_cluster = true;
        self.apply_tombstone(now, doc, t, None, None);
        self.from_cluster = false;
    }

    /// Answers a sync or request for a deleted document; true when `doc` is deleted.
    pub(super) fn refuse_deleted(&mut self, conn: ConnId, doc: DocumentId) -> bool {
        let Some(t) = self.tombstones.get(&doc).cloned() else {
            return false;
        };
        if self.conns.contains_key(&conn) {
            self.subscribe(conn, doc);
            self.tell_deleted(conn, doc, &t);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_round_trip_and_refuse_garbage() {
        let t = Tombstone::new("alice", 42, true);
        assert_eq!(Tombstone::decode(&t.encode()), Ok(t));
        assert!(Tombstone::decode(b"\xff\x00").is_err());
    }
}
