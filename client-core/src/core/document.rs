//! Documents: loading, local changes and group commit. Incoming sync messages are in
//! `receive.rs`, the sync pass in `sync_pass.rs`, availability in `availability.rs`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;

use automerge::sync;
use automerge::transaction::{CommitOptions, Transaction};
use automerge::{Automerge, ChangeHash};

use super::lazy::LazyDoc;
use super::load::{Built, build_doc};
use super::{
    Core, CoreError, Event, FindOutcome, Origin, PendingOp, StorageOp, StorageReply, Ticket,
};
use crate::id::{ConnId, DocumentId, StorageId};
use crate::storage::{ChangeAuthor, ChunkKey, ChunkKind, StorageError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DocState {
    Loading,
    Ready,
    Failed(String),
}

/// Sync state with one peer for one document.
#[derive(Debug)]
pub(super) struct PeerDoc {
    pub(super) sync: sync::State,
    /// We sent `request` because we had nothing.
    pub(super) we_requested: bool,
    /// They answered `doc-unavailable`.
    pub(super) they_unavailable: bool,
    /// They requested it while we had nothing: sync with them as soon as it arrives.
    pub(super) awaiting: bool,
    /// We already told them `doc-unavailable`.
    pub(super) told_unavailable: bool,
    /// Last persisted encoding of `sync`.
    pub(super) saved: Option<Vec<u8>>,
    /// They sent us changes: once committed, they are owed a message with our heads (their
    /// acknowledgement), even where Automerge's sync considers the exchange finished.
    pub(super) owe_ack: bool,
    /// The heads gossip last sent to this peer for this document.
    pub(super) gossiped: Option<Vec<(StorageId, Vec<ChangeHash>)>>,
    /// A client we asked for the document (availability.rs) that has shown no interest of its
    /// own: no `request`, no heads. It is not sent the document when it arrives.
    pub(super) asked: bool,
}

impl PeerDoc {
    pub(super) fn new(stored: Option<&Vec<u8>>) -> Self {
        let sync = stored
            .and_then(|b| sync::State::decode(b).ok())
            .unwrap_or_default();
        Self {
            sync,
            we_requested: false,
            they_unavailable: false,
            awaiting: false,
            told_unavailable: false,
            saved: stored.cloned(),
            owe_ack: false,
            gossiped: None,
            asked: false,
        }
    }
}

#[derive(Debug)]
pub(super) struct Inbound {
    pub(super) conn: ConnId,
    pub(super) msg: sync::Message,
    pub(super) request: bool,
}

/// A resident document.
#[derive(Debug)]
pub(super) struct DocEntry {
    pub(super) state: DocState,
    pub(super) doc: LazyDoc,
    pub(super) peers: BTreeMap<ConnId, PeerDoc>,
    pub(super) stored_sync: HashMap<StorageId, Vec<u8>>,
    pub(super) inbox: Vec<Inbound>,
    pub(super) saved_heads: Vec<ChangeHash>,
    pub(super) commit_in_flight: bool,
    pub(super) commit_failed: bool,
    pub(super) remote_pending: bool,
    pub(super) pending_tickets: Vec<Ticket>,
    pub(super) chunks: Vec<(ChunkKey, ChunkKind)>,
    pub(super) compacting: bool,
    pub(super) find_waiters: Vec<Ticket>,
    pub(super) wanted: bool,
    /// When a peer first requested it while we held nothing and asked others (see
    /// `availability.rs`): its requesters are answered by `Limits::ask_timeout_ms` after that.
    pub(super) asking_since: Option<u64>,
    pub(super) last_used: u64,
    pub(super) pins: usize,
    /// Changes accepted whose dependencies were missing (an upper bound of Automerge's queue).
    pub(super) queued_orphans: usize,
    /// Another node committed chunks we have not read (keys; empty: re-read all): see
    /// `cluster.rs`.
    pub(super) external_stale: Option<Vec<ChunkKey>>,
    /// A read of other nodes' chunks is in flight.
    pub(super) external_reading: bool,
    /// Loaded because another node committed to it: push it to the region links once loaded.
    pub(super) external_links: bool,
    /// Authors of received changes, written with the next commit.
    pub(super) pending_authors: Vec<ChangeAuthor>,
    /// The principal that created the document, written with the next commit.
    pub(super) pending_owner: Option<String>,
    /// Heads other regions acknowledged to other nodes of the cluster (their region links):
    /// see `cluster_regions.rs`.
    pub(super) cluster_region_heads: BTreeMap<StorageId, Vec<ChangeHash>>,
    /// The region heads this node last told the cluster about.
    pub(super) region_heads_published: Vec<(StorageId, Vec<ChangeHash>)>,
}

impl DocEntry {
    fn new(state: DocState, doc: Automerge, now: u64) -> Self {
        Self {
            state,
            doc: LazyDoc::new(doc),
            peers: BTreeMap::new(),
            stored_sync: HashMap::new(),
            inbox: Vec::new(),
            saved_heads: Vec::new(),
            commit_in_flight: false,
            commit_failed: false,
            remote_pending: false,
            pending_tickets: Vec::new(),
            chunks: Vec::new(),
            compacting: false,
            find_waiters: Vec::new(),
            wanted: false,
            asking_since: None,
            last_used: now,
            pins: 0,
            queued_orphans: 0,
            external_stale: None,
            external_reading: false,
            external_links: false,
            pending_authors: Vec::new(),
            pending_owner: None,
            cluster_region_heads: BTreeMap::new(),
            region_heads_published: Vec::new(),
        }
    }

    /// A document that cannot be used (kept resident so the failure is reported).
    pub(super) fn failed(reason: String, now: u64) -> Self {
        Self::new(DocState::Failed(reason), Automerge::new(), now)
    }

    pub(super) fn has_content(&self) -> bool {
        self.state == DocState::Ready && !self.doc.get_heads().is_empty()
    }

    pub(super) fn is_wanted(&self) -> bool {
        self.wanted || !self.find_waiters.is_empty() || self.has_waiting_requesters()
    }

    pub(super) fn has_waiting_requesters(&self) -> bool {
        self.peers.values().any(|p| p.awaiting)
    }

    pub(super) fn all_committed(&self) -> bool {
        !self.commit_in_flight && self.doc.get_heads() == self.saved_heads
    }

    /// Nothing pending: every change it holds is committed and no message waits.
    /// (A document whose last commit failed counts as settled: the failure was reported, and a
    /// retry happens on the next tick.)
    pub(super) fn is_settled(&self) -> bool {
        self.inbox.is_empty()
            && (self.state != DocState::Ready
                || self.all_committed()
                || (self.commit_failed && !self.commit_in_flight))
    }

    pub(super) fn evictable(&self) -> bool {
        self.pins == 0
            && self.inbox.is_empty()
            && !self.compacting
            && !self.external_reading
            && self.pending_tickets.is_empty()
            && self.find_waiters.is_empty()
            && !self.has_waiting_requesters()
            && (self.state != DocState::Ready || self.all_committed())
            && self.state != DocState::Loading
    }
}

pub(super) fn peer_doc<'a>(
    peers: &'a mut BTreeMap<ConnId, PeerDoc>,
    stored_sync: &HashMap<StorageId, Vec<u8>>,
    conn: ConnId,
    storage: Option<&StorageId>,
) -> &'a mut PeerDoc {
    let stored = storage.and_then(|s| stored_sync.get(s));
    peers.entry(conn).or_insert_with(|| PeerDoc::new(stored))
}

impl Core {
    /// Subscribes every established peer the policy announces `doc` to.
    pub(super) fn announce(&mut self, doc: DocumentId) {
        let peers: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.peer
                    .as_ref()
                    .is_some_and(|p| self.config.policy.announce(p, &doc))
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in peers {
            self.subscribe(conn, doc);
        }
    }

    pub(super) fn ensure_loaded(&mut self, now: u64, doc: DocumentId) {
        if self.tombstones.contains_key(&doc) {
            return; // Deleted: never loaded again.
        }
        if let Some(e) = self.docs.get_mut(&doc) {
            e.last_used = now;
            return;
        }
        self.docs
            .insert(doc, DocEntry::new(DocState::Loading, Automerge::new(), now));
        self.out.storage(StorageOp::Load { doc }, PendingOp::Load);
    }

    /// Creates a new, empty document under `doc` (an id the driver drew at random) and commits
    /// its first (empty) change. The ticket resolves when that commit is durable.
    pub fn create(&mut self, now: u64, doc: DocumentId) -> Result<Ticket, CoreError> {
        if self.docs.contains_key(&doc) {
            return Err(CoreError::AlreadyExists(doc));
        }
        let mut am = Automerge::new().with_actor(self.actor.clone());
        am.empty_commit(CommitOptions::default());
        self.docs
            .insert(doc, DocEntry::new(DocState::Ready, am, now));
        let ticket = self.ticket();
        self.after_local_change(now, doc, ticket);
        Ok(ticket)
    }

    /// Looks for `doc`: local storage first, then connected peers. Resolves with
    /// [`Event::FindResolved`]. An unavailable document is still delivered if it arrives later.
    pub fn find(&mut self, now: u64, doc: DocumentId) -> Ticket {
        let ticket = self.ticket();
        if self.tombstones.contains_key(&doc) {
            self.out.event(Event::FindResolved {
                ticket,
                doc,
                outcome: FindOutcome::Deleted,
            });
            return ticket;
        }
        self.ensure_loaded(now, doc);
        if let Some(e) = self.docs.get_mut(&doc) {
            e.find_waiters.push(ticket);
            e.wanted = true;
        }
        self.check_availability(doc);
        ticket
    }

    /// Loads `doc` from storage into memory without asking peers (no-op when resident).
    pub fn load(&mut self, now: u64, doc: DocumentId) {
        self.ensure_loaded(now, doc);
    }

    /// Applies a local change, committed with default options (no HLC stamp). See
    /// [`Core::change_stamped`] for changes that last-writer-wins policies order.
    pub fn change<R, E: Display>(
        &mut self,
        now: u64,
        doc: &DocumentId,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<(R, Option<Ticket>), CoreError> {
        self.change_with(now, doc, CommitOptions::default(), f)
    }

    /// Applies a local change stamped with this replica's hybrid logical clock: `wall_ms` is the
    /// physical time input (milliseconds since the Unix epoch, from the driver); the clock first
    /// observes the document's changes it has not seen, never goes backwards and tolerates skew
    /// (see [`crate::policy::Hlc`]). The stamp is the change's message and time.
    pub fn change_stamped<R, E: Display>(
        &mut self,
        now: u64,
        wall_ms: u64,
        doc: &DocumentId,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<(R, Option<Ticket>), CoreError> {
        self.materialize(doc)?;
        let options = match self.docs.get(doc) {
            Some(entry) if entry.state == DocState::Ready => {
                self.clock.stamp(*doc, entry.doc.applied(), wall_ms)
            }
            _ => CommitOptions::default(),
        };
        self.change_with(now, doc, options, f)
    }

    /// Applies a local change committed with `options`. Returns the closure's value and, if the document changed, a ticket
    /// that resolves ([`Event::Committed`]) once the change is durable. Readers see it at once.
    pub fn change_with<R, E: Display>(
        &mut self,
        now: u64,
        doc: &DocumentId,
        options: CommitOptions,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<(R, Option<Ticket>), CoreError> {
        let id = *doc;
        self.guarded(now, id, |c| c.change_inner(now, &id, options, f))
            .unwrap_or_else(|| {
                Err(CoreError::Change(format!(
                    "the change panicked; document {id} was reloaded from storage"
                )))
            })
    }

    fn change_inner<R, E: Display>(
        &mut self,
        now: u64,
        doc: &DocumentId,
        options: CommitOptions,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<(R, Option<Ticket>), CoreError> {
        if self.tombstones.contains_key(doc) {
            return Err(CoreError::Deleted(*doc));
        }
        self.materialize(doc)?;
        let entry = self.docs.get_mut(doc).ok_or(CoreError::NotLoaded(*doc))?;
        match &entry.state {
            DocState::Ready => {}
            DocState::Loading => return Err(CoreError::NotLoaded(*doc)),
            DocState::Failed(reason) => {
                return Err(CoreError::Failed {
                    doc: *doc,
                    reason: reason.clone(),
                });
            }
        }
        let am = entry
            .doc
            .materialized()
            .map_err(|e| CoreError::Change(e.to_string()))?;
        let before = am.get_heads();
        let mut tx = am.transaction();
        let value = match f(&mut tx) {
            Ok(v) => v,
            Err(e) => {
                tx.rollback();
                return Err(CoreError::Change(e.to_string()));
            }
        };
        tx.commit_with(options);
        if am.get_heads() == before {
            return Ok((value, None));
        }
        let ticket = self.ticket();
        self.after_local_change(now, *doc, ticket);
        Ok((value, Some(ticket)))
    }

    fn after_local_change(&mut self, now: u64, doc: DocumentId, ticket: Ticket) {
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        entry.pending_tickets.push(ticket);
        entry.last_used = now;
        let heads = entry.doc.get_heads();
        self.out.event(Event::DocChanged {
            doc,
            heads,
            origin: Origin::Local,
        });
        self.announce(doc);
        self.pump(now, doc);
    }

    pub(super) fn issue_commit(&mut self, doc: DocumentId) {
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        let heads = entry.doc.get_heads();
        let bytes = entry.doc.save_after(&entry.saved_heads);
        let key = ChunkKey::of(&bytes);
        entry.commit_in_flight = true;
        let pending = PendingOp::Commit {
            heads,
            key,
            tickets: std::mem::take(&mut entry.pending_tickets),
            remote: std::mem::take(&mut entry.remote_pending),
        };
        self.out
            .storage(StorageOp::Append { doc, key, bytes }, pending);
        // Who wrote what, beside the changes (never inside them), in the same group commit.
        let authors = std::mem::take(&mut entry.pending_authors);
        let owner = entry.pending_owner.take();
        if !authors.is_empty() {
            self.out
                .storage(StorageOp::PutAuthors { doc, authors }, PendingOp::SyncState);
        }
        if let Some(principal) = owner {
            self.out.storage(
                StorageOp::AddOwnedDoc { doc, principal },
                PendingOp::SyncState,
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_committed(
        &mut self,
        now: u64,
        doc: DocumentId,
        heads: Vec<ChangeHash>,
        key: ChunkKey,
        tickets: Vec<Ticket>,
        remote: bool,
        result: Result<StorageReply, StorageError>,
    ) {
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        entry.commit_in_flight = false;
        match result {
            Ok(_) => {
                self.out.stats.commits += 1;
                entry.saved_heads = heads.clone();
                entry.chunks.push((key, ChunkKind::Incremental));
                for ticket in tickets {
                    self.out.event(Event::Committed {
                        ticket,
                        result: Ok(heads.clone()),
                    });
                }
                self.region_committed(now, doc, &heads);
                if remote {
                    self.out.event(Event::DocChanged {
                        doc,
                        heads,
                        origin: Origin::Remote,
                    });
                }
                self.maybe_compact(now, doc);
                self.check_availability(doc);
                // Tell peers about what just became durable before applying the next batch:
                // under a sustained stream of incoming changes there is always a next batch, and
                // waiting for a quiet moment would starve every peer of acknowledgements.
                self.sync_doc(now, doc);
                // Nothing queued meanwhile: the batch below would find nothing to apply and
                // sync every peer a second time.
                if self.docs.get(&doc).is_some_and(|e| {
                    e.inbox.is_empty()
                        && e.pending_tickets.is_empty()
                        && e.doc.get_heads() == e.saved_heads
                }) {
                    self.settle_external(now, doc);
                    return;
                }
            }
            Err(e) => {
                entry.commit_failed = true;
                entry.remote_pending |= remote;
                let error = e.to_string();
                for ticket in tickets {
                    self.out.event(Event::Committed {
                        ticket,
                        result: Err(error.clone()),
                    });
                }
                self.out.event(Event::StorageFailed { doc, error });
            }
        }
        self.pump(now, doc);
        self.settle_external(now, doc);
    }

    pub(super) fn on_loaded(
        &mut self,
        now: u64,
        doc: DocumentId,
        result: Result<StorageReply, StorageError>,
    ) {
        let actor = self.actor.clone();
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        let loaded = match result {
            Ok(StorageReply::Loaded(stored)) => Ok((build_doc(&actor, &stored.chunks), stored)),
            Ok(other) => Err(format!("unexpected storage reply {other:?}")),
            Err(e) => Err(e.to_string()),
        };
        match loaded {
            Ok((Built { doc: am, skipped }, stored)) => {
                entry.saved_heads = am.get_heads();
                let loaded_heads = entry.saved_heads.clone();
                entry.doc = LazyDoc::new(am);
                entry.chunks = stored
                    .chunks
                    .iter()
                    .filter(|c| !skipped.iter().any(|(k, _)| *k == c.key))
                    .map(|c| (c.key, c.kind))
                    .collect();
                if let Some((_, first)) = skipped.first() {
                    // Changes that depended on a skipped chunk wait in Automerge's queue.
                    let waiting = entry.doc.get_missing_deps().len();
                    let error = format!(
                        "loaded without {} stored chunk(s) that do not load (kept in storage; \
                         {waiting} missing dependencies): {first}",
                        skipped.len()
                    );
                    self.out.event(Event::StorageFailed { doc, error });
                }
                entry.stored_sync = stored.sync_states.into_iter().collect();
                entry.state = DocState::Ready;
                let has_content = entry.has_content();
                // Repairs an index entry a crash left stale.
                self.index_heads(doc, &loaded_heads);
                if has_content {
                    // Offer a loaded document to the peers the policy announces to.
                    self.announce(doc);
                }
                self.pump(now, doc);
                self.check_availability(doc);
                self.settle_external(now, doc);
            }
            Err(reason) => {
                entry.state = DocState::Failed(reason.clone());
                let waiters = std::mem::take(&mut entry.find_waiters);
                let requesters: Vec<ConnId> = entry.inbox.drain(..).map(|i| i.conn).collect();
                self.out.event(Event::StorageFailed {
                    doc,
                    error: reason.clone(),
                });
                for ticket in waiters {
                    self.out.event(Event::FindResolved {
                        ticket,
                        doc,
                        outcome: FindOutcome::Failed(reason.clone()),
                    });
                }
                for conn in requesters {
                    self.send_unavailable(conn, doc);
                }
            }
        }
    }
}
