//! Availability: `find`, `request` and `doc-unavailable` ("unavailable now, delivered later").
//!
//! A peer's `request` for a document we do not hold (or a local [`Core::find`]) makes us ask every
//! connected peer that could hold it:
//!
//! - region links, and the peers the policy announces documents to (the servers a client
//!   dialled): asked with `request`, which Concord peers answer with the document or with
//!   `doc-unavailable`;
//! - peers that dialled us (clients) whose grant lets them read *and* write the document (a peer
//!   that may not read it never hears of it; a read-only peer could not give it to us). They are
//!   asked with a `sync` carrying our (empty) heads, not with a `request`: a stock automerge-repo
//!   client takes a `request` as "this peer wants it too", so its own pending `find` of that
//!   document would give up and a later `find` would report it unavailable without asking. To a
//!   `sync` it answers with its changes if it holds the document, and with a `request` (empty
//!   heads) otherwise; Concord clients answer `doc-unavailable` (see [`Core::answer_empty_asks`]).
//!
//! Requesters are answered `doc-unavailable` once none of the asked peers can deliver it: each
//! said `doc-unavailable`, answered with empty heads, asked us for it in turn, or disconnected;
//! or, when peers requested it, once [`Limits::ask_timeout_ms`](super::Limits::ask_timeout_ms)
//! has passed since the first of them (checked on [`Core::handle_tick`]). A document that arrives
//! later is still delivered to every peer that asked for it.
//!
//! A client we asked is subscribed to the document only for the question. When the document
//! arrives, the clients that showed no interest of their own (no `request`, no heads: silent,
//! or answering with empty heads) are unsubscribed, and the per-peer state of every peer that
//! does not sync the document is dropped. Otherwise every client connected while a document was
//! looked for would be sent that document and each of its later changes, and a server that
//! asked its thousands of clients would keep (and visit on every tick) an entry per client and
//! document.

use std::collections::BTreeSet;

use super::document::{DocState, peer_doc};
use super::{Core, Event, FindOutcome};
use crate::id::{ConnId, DocumentId};
use crate::wire::Message;

impl Core {
    pub(super) fn on_unavailable(&mut self, conn: ConnId, doc: DocumentId) {
        let client = self.is_client_conn(conn);
        let mut forget = false;
        if let Some(pd) = self.docs.get_mut(&doc).and_then(|e| e.peers.get_mut(&conn)) {
            pd.they_unavailable = true;
            forget = client && !pd.awaiting;
        }
        if forget {
            // A client we asked that does not hold it is not sent the document if it arrives
            // later: it did not ask for it.
            self.unsubscribe(conn, doc);
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

    /// A peer that dialled us and is not a region link: a client. It is asked for documents with
    /// a `sync`, not a `request` (see the module docs).
    pub(super) fn is_client_conn(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.inbound && c.region.is_none())
    }

    /// Established peers that could hold `doc`, have not said they do not, and are not waiting
    /// for it from us; at most [`Limits::max_clients_asked`](super::Limits::max_clients_asked)
    /// clients (the longest connected first) over the whole search, so that requests for
    /// unknown ids cannot make the server write to every client it has.
    fn askable(&self, doc: DocumentId) -> Vec<ConnId> {
        let policy = &self.config.policy;
        let entry = self.docs.get(&doc);
        let asked_before = entry.map_or(0, |e| {
            e.peers
                .iter()
                .filter(|(conn, pd)| {
                    (pd.asked || pd.they_unavailable) && self.is_client_conn(**conn)
                })
                .count()
        });
        let mut clients = self
            .config
            .limits
            .max_clients_asked
            .saturating_sub(asked_before);
        self.conns
            .iter()
            .filter(|(id, c)| {
                let Some(p) = c.peer.as_ref() else {
                    return false;
                };
                let may_hold = c.region.is_some()
                    || policy.announce(p, &doc)
                    || (policy.access(p, &doc) && policy.accept_changes(p, &doc));
                let answered = entry
                    .and_then(|e| e.peers.get(id))
                    .is_some_and(|pd| pd.awaiting || pd.they_unavailable);
                may_hold && !answered
            })
            .filter(|(_, c)| {
                if !c.inbound || c.region.is_some() {
                    return true;
                }
                let room = clients > 0;
                clients = clients.saturating_sub(1);
                room
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Drops the per-peer state of `doc` kept for peers that do not sync it (asked while we
    /// looked for it, answered that they do not hold it, or were forgotten above), but for peers
    /// with a message queued: a server that asked every client for a document would otherwise
    /// keep an entry per client per document, visited by every housekeeping tick.
    fn forget_askers(&mut self, doc: DocumentId, queued: &[ConnId]) {
        let subscribed: BTreeSet<ConnId> = self.subscribers.of(&doc).collect();
        if let Some(entry) = self.docs.get_mut(&doc) {
            entry
                .peers
                .retain(|conn, _| subscribed.contains(conn) || queued.contains(conn));
        }
    }

    /// Records that client `conn` was subscribed to `doc` only because we asked it.
    fn mark_asked(&mut self, conn: ConnId, doc: DocumentId) {
        let storage = self
            .conns
            .get(&conn)
            .and_then(|c| c.peer.as_ref())
            .and_then(super::PeerInfo::sync_state_key);
        if let Some(entry) = self.docs.get_mut(&doc) {
            let pd = peer_doc(&mut entry.peers, &entry.stored_sync, conn, storage.as_ref());
            pd.asked = true;
        }
    }

    /// Peers that may still deliver `doc`: asked and not yet refused, or offered it (announced
    /// non-empty heads), and still connected.
    fn pending_answers(&self, doc: DocumentId) -> Vec<ConnId> {
        let Some(entry) = self.docs.get(&doc) else {
            return Vec::new();
        };
        entry
            .peers
            .iter()
            .filter(|(conn, pd)| {
                if pd.they_unavailable || pd.awaiting || !self.conns.contains_key(conn) {
                    return false;
                }
                let heads = pd.sync.their_heads.as_ref();
                let offered = heads.is_some_and(|h| !h.is_empty());
                // A client asked with a `sync` that answers with empty heads has nothing.
                let answered_empty =
                    self.is_client_conn(**conn) && heads.is_some_and(|h| h.is_empty());
                offered || (pd.we_requested && !answered_empty)
            })
            .map(|(conn, _)| *conn)
            .collect()
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
            entry.asking_since = None;
            for ticket in std::mem::take(&mut entry.find_waiters) {
                self.out.event(Event::FindResolved {
                    ticket,
                    doc,
                    outcome: FindOutcome::Found,
                });
            }
            // Runs on every commit: nothing to do unless a search left ask state behind.
            let subscribers = self.subscribers.of(&doc).count();
            if entry.peers.len() <= subscribers && !entry.peers.values().any(|pd| pd.asked) {
                return;
            }
            // Clients we asked that never wanted it are not sent it (nor its every change); one
            // with a message still queued may be asking for it now (pump_inner decides).
            let queued: Vec<ConnId> = entry.inbox.iter().map(|m| m.conn).collect();
            let uninterested: Vec<ConnId> = entry
                .peers
                .iter_mut()
                .filter(|(conn, pd)| pd.asked && !queued.contains(conn))
                .map(|(conn, pd)| {
                    pd.asked = false;
                    *conn
                })
                .collect();
            for conn in uninterested {
                self.unsubscribe(conn, doc);
            }
            self.forget_askers(doc, &queued);
            return;
        }
        if !entry.is_wanted() {
            return;
        }
        for conn in self.askable(doc) {
            if self.subscribe(conn, doc) && self.is_client_conn(conn) {
                self.mark_asked(conn, doc);
            }
        }
        self.sync_doc(0, doc);
        if !self.pending_answers(doc).is_empty() {
            return;
        }
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        entry.asking_since = None;
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

    /// Gives up on the peers asked for documents that peers requested more than
    /// [`Limits::ask_timeout_ms`](super::Limits::ask_timeout_ms) ago: their requesters are
    /// answered `doc-unavailable` (the document is still delivered if it arrives later).
    pub(super) fn expire_asks(&mut self, now: u64) {
        let timeout = self.config.limits.ask_timeout_ms;
        let due: Vec<DocumentId> = self
            .docs
            .iter()
            .filter(|(_, e)| {
                e.asking_since
                    .is_some_and(|t| now.saturating_sub(t) >= timeout)
            })
            .map(|(d, _)| *d)
            .collect();
        for doc in due {
            let silent = self.pending_answers(doc);
            let Some(entry) = self.docs.get_mut(&doc) else {
                continue;
            };
            entry.asking_since = None;
            for conn in silent {
                if let Some(pd) = entry.peers.get_mut(&conn) {
                    pd.they_unavailable = true;
                }
            }
            self.check_availability(doc);
        }
    }

    /// Answers `doc-unavailable` to peers that sent us empty heads for a document we hold nothing
    /// of and nobody wants from us: a server asking whether we hold it (see the module docs).
    /// The empty entry the question loaded is dropped again, so questions leave nothing behind.
    pub(super) fn answer_empty_asks(&mut self, doc: DocumentId, askers: Vec<ConnId>) {
        if askers.is_empty() {
            return;
        }
        for conn in &askers {
            self.send_unavailable(*conn, doc);
        }
        let unused = self
            .docs
            .get(&doc)
            .is_some_and(|e| !e.has_content() && !e.is_wanted() && e.evictable());
        if unused {
            self.docs.remove(&doc);
            for conn in askers {
                self.unsubscribe(conn, doc);
            }
        }
    }
}
