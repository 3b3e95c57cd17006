//! Availability: `find`, `request` and `doc-unavailable` ("unavailable now, delivered later").

use super::document::DocState;
use super::{Core, Event, FindOutcome};
use crate::id::{ConnId, DocumentId};
use crate::wire::Message;

impl Core {
    pub(super) fn on_unavailable(&mut self, conn: ConnId, doc: DocumentId) {
        if let Some(pd) = self.docs.get_mut(&doc).and_then(|e| e.peers.get_mut(&conn)) {
            pd.they_unavailable = true;
        }
        self.check_availability(doc);
    }

    pub(super) fn send_unavailable(&mut self, conn: ConnId, doc: DocumentId) {
        if let Some(target_id) = self
            .conns
            .get(&conn)
            .and_then(|c| c.peer.as_ref())
            .map(|p| p.peer_id.clone())
        {
            self.out.send(
                conn,
                &Message::DocUnavailable {
                    sender_id: self.config.peer_id.clone(),
                    target_id,
                    document_id: doc,
                },
            );
        }
    }

    /// Resolves finds and requests for `doc`: found, still asking someone, or unavailable.
    pub(super) fn check_availability(&mut self, doc: DocumentId) {
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        if entry.state != DocState::Ready {
            return;
        }
        if entry.has_content() {
            entry.wanted = false;
            for ticket in std::mem::take(&mut entry.find_waiters) {
                self.out.event(Event::FindResolved {
                    ticket,
                    doc,
                    outcome: FindOutcome::Found,
                });
            }
            return;
        }
        if !entry.is_wanted() {
            return;
        }
        // Ask every peer the policy lets us ask, except those waiting on us.
        let askable: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(id, c)| {
                (c.region.is_some()
                    || c.peer
                        .as_ref()
                        .is_some_and(|p| self.config.policy.announce(p, &doc)))
                    && !entry.peers.get(id).is_some_and(|pd| pd.awaiting)
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in &askable {
            if let Some(c) = self.conns.get_mut(conn) {
                c.subscribed.insert(doc);
            }
        }
        self.sync_doc(0, doc);
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        // Someone may still deliver it: a peer we asked that has not said no, or a peer that
        // offered it (announced non-empty heads) and is still connected.
        let still_asking = entry.peers.iter().any(|(conn, pd)| {
            let offered = pd.sync.their_heads.as_ref().is_some_and(|h| !h.is_empty());
            (pd.we_requested || offered) && !pd.they_unavailable && self.conns.contains_key(conn)
        });
        if still_asking {
            return;
        }
        for ticket in std::mem::take(&mut entry.find_waiters) {
            self.out.event(Event::FindResolved {
                ticket,
                doc,
                outcome: FindOutcome::Unavailable,
            });
        }
        let tell: Vec<ConnId> = entry
            .peers
            .iter_mut()
            .filter(|(_, pd)| pd.awaiting && !pd.told_unavailable)
            .map(|(conn, pd)| {
                pd.told_unavailable = true;
                *conn
            })
            .collect();
        for conn in tell {
            self.send_unavailable(conn, doc);
        }
    }
}
