//! Incoming sync messages: authorization, the quota charge, and their batched application
//! (messages that arrive while a commit is in flight queue up and are applied as one batch).

use std::collections::{HashMap, HashSet};

use automerge::{ChangeHash, sync};

use super::attribution;
use super::document::{DocState, Inbound, peer_doc};
use super::ingest::{Staged, receive_batch, receive_deferred};
use super::lazy::LazyDoc;
use super::quota::Charge;
use super::{Core, Event, PendingOp, ProtocolError, StorageOp};
use crate::id::{ConnId, DocumentId};
use crate::storage::ChangeAuthor;
use crate::wire::Message;

/// How many changes of `msg` depend on changes that are neither in `doc`, nor in `msg`, nor in
/// `staged` (earlier messages of the same batch); whole document chunks are self-contained and
/// count as zero. Also returns the changes of `msg`, parsed (whole-document chunks are not).
fn orphan_changes(
    doc: &LazyDoc,
    msg: &sync::Message,
    staged: &HashSet<ChangeHash>,
) -> (usize, Vec<automerge::Change>) {
    let changes: Vec<automerge::Change> = msg
        .changes
        .iter()
        .filter_map(|bytes| automerge::Change::try_from(bytes).ok())
        .collect();
    let in_msg: HashSet<ChangeHash> = changes.iter().map(automerge::Change::hash).collect();
    let orphans = changes
        .iter()
        .filter(|c| {
            c.deps()
                .iter()
                .any(|d| !in_msg.contains(d) && !staged.contains(d) && !doc.has_change(d))
        })
        .count();
    (orphans, changes)
}

impl Core {
    pub(super) fn on_sync(
        &mut self,
        now: u64,
        conn: ConnId,
        doc: DocumentId,
        data: &[u8],
        request: bool,
    ) {
        let Some(peer) = self.conns.get(&conn).and_then(|c| c.peer.clone()) else {
            return;
        };
        if !self.config.policy.access(&peer, &doc) {
            self.out.send(
                conn,
                &Message::DocUnavailable {
                    sender_id: self.config.peer_id.clone(),
                    target_id: peer.peer_id,
                    document_id: doc,
                },
            );
            return;
        }
        if self.refuse_deleted(conn, doc) {
            return; // Deleted: whatever the message carries is refused.
        }
        let msg = match sync::Message::decode(data) {
            Ok(m) => m,
            Err(e) => {
                let reason = e.to_string();
                self.protocol_error(conn, ProtocolError::BadSyncMessage { doc, reason });
                return;
            }
        };
        if let Err(reason) = super::validate::check_sync_message(&msg) {
            self.protocol_error(conn, ProtocolError::MalformedSyncMessage { doc, reason });
            return;
        }
        if !msg.changes.is_empty() && !self.charge_changes(now, conn, doc, &msg) {
            return;
        }
        if !msg.changes.is_empty() && !self.config.policy.accept_changes(&peer, &doc) {
            self.protocol_error(conn, ProtocolError::WriteDenied(doc));
            return;
        }
        if !self.subscribe_requested(now, conn, doc) {
            return;
        }
        self.ensure_loaded(now, doc);
        if let Some(e) = self.docs.get_mut(&doc) {
            e.inbox.push(Inbound { conn, msg, request });
        }
        self.guard.sender = Some(conn);
        self.pump(now, doc);
        self.guard.sender = None;
    }

    /// Measures the changes of `msg` before Automerge parses them (compression and operation
    /// bombs are refused) and charges their cost to the sender's principal; false (and an
    /// error to the peer) when refused.
    fn charge_changes(
        &mut self,
        now: u64,
        conn: ConnId,
        doc: DocumentId,
        msg: &sync::Message,
    ) -> bool {
        let chunks: Vec<_> = msg.changes.iter().collect();
        let cost = match super::inflate::check_expansion(&chunks, &self.config.limits, doc) {
            Ok(cost) => cost,
            Err(e) => {
                self.protocol_error(conn, e);
                return false;
            }
        };
        let (Some(principal), Some(budgets)) =
            (self.charged_principal(conn), self.config.budgets.clone())
        else {
            return true;
        };
        match budgets.charge(
            &principal,
            &[Charge::Ops(cost.ops), Charge::Bytes(cost.bytes)],
            now,
        ) {
            Ok(()) => true,
            Err(c) => {
                self.protocol_error(
                    conn,
                    ProtocolError::QuotaExceeded {
                        what: c.name(),
                        doc: Some(doc),
                    },
                );
                false
            }
        }
    }

    /// Applies every queued incoming message in one batch, then commits or syncs (panics
    /// contained: see `guard.rs`).
    pub(super) fn pump(&mut self, now: u64, doc: DocumentId) {
        let _ = self.guarded(now, doc, |c| c.pump_inner(now, doc));
        self.guard.batch.clear();
    }

    fn pump_inner(&mut self, now: u64, doc: DocumentId) {
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        if entry.state != DocState::Ready || entry.commit_in_flight || entry.commit_failed {
            return;
        }
        let inbox = std::mem::take(&mut entry.inbox);
        self.guard.batch = inbox.iter().map(|i| i.conn).collect();
        #[cfg(feature = "fault-injection")]
        if inbox.iter().any(|i| !i.msg.changes.is_empty()) {
            super::guard::fault::check(&doc);
        }
        let max_missing = self.config.limits.max_missing_deps;
        let before = entry.doc.get_heads();
        let mut errors = Vec::new();
        let mut state_writes = Vec::new();
        let mut check = false;
        let mut staged = Vec::new();
        let mut staged_hashes = HashSet::new();
        let mut batch_seqs = HashMap::new();
        let mut empty_asks = Vec::new();
        for Inbound { conn, msg, request } in inbox {
            let Some(peer) = self.conns.get(&conn).and_then(|c| c.peer.as_ref()) else {
                continue;
            };
            let storage = peer.sync_state_key();
            let creator = peer
                .grant
                .as_ref()
                .filter(|g| peer.inbound && !g.replicate)
                .map(|g| g.principal.clone());
            let empty = entry.doc.get_heads().is_empty();
            let changes = msg.changes.len() as u64;
            if !request && empty && changes == 0 && msg.heads.is_empty() && !entry.is_wanted() {
                // Neither side holds anything: a server asking whether we do (availability.rs).
                empty_asks.push(conn);
                continue;
            }
            let pd = peer_doc(&mut entry.peers, &entry.stored_sync, conn, storage.as_ref());
            if request || !msg.heads.is_empty() {
                pd.asked = false; // it wants the document, or holds some of it
            }
            if request && empty && msg.heads.is_empty() {
                pd.awaiting = true;
                entry.asking_since.get_or_insert(now);
                check = true;
                continue;
            }
            pd.awaiting = false;
            let mut parsed = Vec::new();
            if changes > 0 {
                // The first changes to a document nobody stored create it: charged per hour,
                // and listed among the documents its principal created.
                let creates = empty && staged.is_empty();
                if let (true, Some(principal), Some(budgets)) =
                    (creates, creator.as_ref(), &self.config.budgets)
                    && let Err(c) = budgets.charge(principal, &[Charge::Document], now)
                {
                    pd.sync = sync::State::new();
                    errors.push((
                        conn,
                        ProtocolError::QuotaExceeded {
                            what: c.name(),
                            doc: Some(doc),
                        },
                    ));
                    continue;
                }
                let (orphans, ours) = orphan_changes(&entry.doc, &msg, &staged_hashes);
                if let Err(reason) = entry
                    .doc
                    .check_changes(&ours, &mut batch_seqs, &staged_hashes)
                {
                    pd.sync = sync::State::new();
                    errors.push((conn, ProtocolError::SyncApply { doc, reason }));
                    continue;
                }
                if orphans > 0 {
                    let queued = entry.queued_orphans + orphans;
                    if queued > max_missing {
                        pd.sync = sync::State::new();
                        errors.push((
                            conn,
                            ProtocolError::TooManyMissingDeps {
                                doc,
                                count: queued,
                                limit: max_missing,
                            },
                        ));
                        continue;
                    }
                    entry.queued_orphans = queued;
                }
                staged_hashes.extend(ours.iter().map(automerge::Change::hash));
                if let Some(principal) = creator {
                    if creates {
                        entry.pending_owner = Some(principal.clone());
                    }
                    entry.pending_authors.extend(
                        attribution::received_hashes(&msg, &ours)
                            .into_iter()
                            .map(|h| ChangeAuthor {
                                hash: h.0,
                                principal: principal.clone(),
                                at_ms: self.wall_ms,
                            }),
                    );
                }
                parsed = ours;
            }
            pd.owe_ack |= changes > 0;
            staged.push(((storage, changes), Staged { conn, msg, parsed }));
        }
        // Deferred (servers, large documents: lazy.rs) or one Automerge apply for the whole
        // batch (ingest.rs).
        let (meta, staged): (Vec<_>, Vec<_>) = staged.into_iter().unzip();
        let defer = self.config.defer_apply.filter(|d| {
            entry.queued_orphans == 0
                && (entry.doc.has_pending() || entry.doc.applied_ops() >= d.min_ops)
        });
        let deferred = match defer {
            Some(_) => receive_deferred(&mut entry.doc, &mut entry.peers, staged, now),
            None => Err(staged),
        };
        let results = match deferred {
            Ok(results) => {
                self.out.stats.changes_deferred += meta.iter().map(|m| m.1).sum::<u64>();
                results
            }
            Err(staged) => match entry.doc.materialized() {
                Ok(am) => receive_batch(am, &mut entry.peers, staged),
                Err(e) => {
                    let reason = format!("pending changes do not apply: {e}");
                    entry.state = DocState::Failed(reason.clone());
                    self.out.event(Event::StorageFailed { doc, error: reason });
                    return;
                }
            },
        };
        for ((storage, changes), (conn, result)) in meta.into_iter().zip(results) {
            let Some(pd) = entry.peers.get_mut(&conn) else {
                continue;
            };
            match result {
                Ok(()) => self.out.stats.changes_applied += changes,
                Err(e) => {
                    pd.sync = sync::State::new();
                    errors.push((
                        conn,
                        ProtocolError::SyncApply {
                            doc,
                            reason: e.to_string(),
                        },
                    ));
                }
            }
            if let Some(sid) = storage {
                let enc = pd.sync.encode();
                if pd.saved.as_ref() != Some(&enc) {
                    pd.saved = Some(enc.clone());
                    state_writes.push((sid, enc));
                }
            }
        }
        if entry.doc.get_heads() != before {
            entry.remote_pending = true;
        }
        if defer.is_some_and(|d| entry.doc.pending_len() >= d.max_pending)
            && let Err(e) = entry.doc.flush()
        {
            entry.state = DocState::Failed(format!("pending changes do not apply: {e}"));
        }
        if entry.queued_orphans > 0 && entry.doc.get_missing_deps().is_empty() {
            entry.queued_orphans = 0; // their dependencies arrived: Automerge applied them
        }
        for (peer, state) in state_writes {
            entry.stored_sync.insert(peer.clone(), state.clone());
            self.out.storage(
                StorageOp::PutSyncState { doc, peer, state },
                PendingOp::SyncState,
            );
        }
        for (conn, error) in errors {
            self.protocol_error(conn, error);
        }
        self.answer_empty_asks(doc, empty_asks);
        if check {
            self.check_availability(doc);
        }
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        if entry.doc.get_heads() != entry.saved_heads {
            self.issue_commit(doc);
        } else {
            for t in std::mem::take(&mut entry.pending_tickets) {
                let heads = entry.saved_heads.clone();
                self.out.event(Event::Committed {
                    ticket: t,
                    result: Ok(heads),
                });
            }
            if !self.guard.batch.is_empty() && entry.doc.get_heads() == before {
                // Nothing new was applied: only the senders' sync states moved (their
                // acknowledgements), so only they may be owed a message. Every other peer was
                // synced after the document last changed (on its commit).
                let senders: HashSet<ConnId> = self.guard.batch.iter().copied().collect();
                self.sync_doc_to(now, doc, Some(&senders));
            } else {
                self.sync_doc(now, doc);
            }
        }
    }
}
