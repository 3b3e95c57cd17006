//! The tokio driver: runs the cores' effects (frames, storage, events) and feeds results back.
//!
//! One task per shard drains its core's effects and ticks it; one storage task executes
//! storage operations of every shard in queue order (group commit across documents and shards).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::ChangeHash;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::shard::{CoreGuard, Shard};
use super::{DocEvent, RepoError, RepoEvent};
use crate::core::{
    CloseReason, Core, Effect, Event, FindOutcome, Gathered, OpId, ShardConfig, StorageOp, Ticket,
};
use crate::id::{ConnId, DocumentId};
use crate::storage::Storage;

pub(super) enum Waiter {
    Commit(oneshot::Sender<Result<Vec<ChangeHash>, String>>),
    Find(oneshot::Sender<FindOutcome>),
}

/// One attached transport connection.
#[derive(Debug)]
pub(super) struct ConnSlot {
    pub(super) frames: mpsc::Sender<Vec<u8>>,
    pub(super) close: watch::Sender<Option<CloseReason>>,
    /// The handshake completed and every shard knows the connection.
    pub(super) established: bool,
    /// When its last frame arrived.
    pub(super) activity: super::links::Activity,
}

/// A storage operation tagged with the shard that issued it.
pub(super) type Tagged = ((u16, OpId), StorageOp);

/// State shared by the driver tasks, the storage worker, transports and handles.
pub(crate) struct Shared {
    pub(super) shards: Vec<Shard>,
    pub(super) storage: Arc<dyn Storage>,
    pub(super) start: Instant,
    waiters: Mutex<HashMap<(u16, Ticket), Waiter>>,
    doc_events: Mutex<HashMap<DocumentId, broadcast::Sender<DocEvent>>>,
    pub(super) conns: Mutex<HashMap<ConnId, ConnSlot>>,
    next_conn: AtomicU64,
    storage_tx: mpsc::UnboundedSender<Tagged>,
    pub(super) events: broadcast::Sender<RepoEvent>,
    pub(super) progress: watch::Sender<u64>,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) outgoing_queue: usize,
    pub(super) max_message_bytes: usize,
    pub(super) storage_idle: watch::Sender<bool>,
    /// Publishing to the other nodes of a cluster.
    cluster: Option<super::cluster::ClusterLink>,
    /// The dial state of every region link URL.
    pub(super) dialers: Mutex<Vec<Arc<super::links::Dialer>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(super) fn new(
        cores: Vec<Core>,
        storage: Arc<dyn Storage>,
        outgoing_queue: usize,
        max_message_bytes: usize,
        cluster: Option<super::cluster::ClusterLink>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Tagged>) {
        let (storage_tx, storage_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Self {
            shards: cores.into_iter().map(Shard::new).collect(),
            storage,
            start: Instant::now(),
            waiters: Mutex::new(HashMap::new()),
            doc_events: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            storage_tx,
            events: broadcast::channel(1024).0,
            progress: watch::channel(0).0,
            shutdown: watch::channel(false).0,
            outgoing_queue,
            max_message_bytes,
            storage_idle: watch::channel(true).0,
            cluster,
            dialers: Mutex::default(),
        });
        (shared, storage_rx)
    }

    /// When the last frame arrived on `conn` (attached connections).
    pub(super) fn activity(&self, conn: ConnId) -> Option<super::links::Activity> {
        let conns = self.conns.lock().ok()?;
        conns.get(&conn).map(|s| s.activity.clone())
    }

    /// Milliseconds since the repo started (the cores' clock).
    pub(super) fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Number of shards.
    pub(super) fn shard_count(&self) -> u16 {
        u16::try_from(self.shards.len()).unwrap_or(u16::MAX)
    }

    /// The shard holding `doc`.
    pub(super) fn shard_of(&self, doc: &DocumentId) -> u16 {
        ShardConfig::shard_of(doc, self.shard_count())
    }

    /// Locks shard `index`.
    pub(super) fn lock_shard(&self, index: u16) -> CoreGuard<'_> {
        let shard = self
            .shards
            .get(usize::from(index))
            .unwrap_or(&self.shards[0]);
        shard.lock(self.now())
    }

    /// Locks the shard holding `doc`; returns its index too.
    pub(super) fn lock_doc(&self, doc: &DocumentId) -> (u16, CoreGuard<'_>) {
        let index = self.shard_of(doc);
        (index, self.lock_shard(index))
    }

    /// Locks the primary shard (handshakes, peers).
    pub(super) fn lock_primary(&self) -> CoreGuard<'_> {
        self.lock_shard(0)
    }

    /// Runs `f` on every shard in turn (one lock at a time) and collects the results.
    pub(super) fn each_shard<R>(&self, mut f: impl FnMut(&mut Core) -> R) -> Vec<R> {
        (0..self.shard_count())
            .map(|i| f(&mut self.lock_shard(i)))
            .collect()
    }

    pub(super) fn wake(&self, index: u16) {
        if let Some(s) = self.shards.get(usize::from(index)) {
            s.notify.notify_one();
        }
    }

    /// Registers a waiter; call while holding the shard's lock so the event cannot be missed.
    pub(super) fn register(
        &self,
        shard: u16,
        ticket: Ticket,
        waiter: Waiter,
    ) -> Result<(), RepoError> {
        self.waiters
            .lock()
            .map_err(|_| RepoError::Closed)?
            .insert((shard, ticket), waiter);
        Ok(())
    }

    /// The event channel of `doc`, created on first subscription.
    pub(super) fn doc_events(&self, doc: DocumentId) -> broadcast::Sender<DocEvent> {
        let mut map = self.doc_events.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(doc)
            .or_insert_with(|| broadcast::channel(256).0)
            .clone()
    }

    /// Sends `event` to the subscribers of `doc`, if any; drops channels nobody listens to, so
    /// documents nobody watches leave nothing behind.
    fn doc_event(&self, doc: DocumentId, event: DocEvent) {
        let mut map = self.doc_events.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(&doc) {
            if tx.receiver_count() == 0 {
                map.remove(&doc);
            } else {
                let _ = tx.send(event);
            }
        }
    }

    /// Forgets event channels whose subscribers are all gone.
    pub(super) fn prune_doc_events(&self) {
        let mut map = self.doc_events.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, tx| tx.receiver_count() > 0);
    }

    /// Event channels alive (for tests and metrics).
    pub(super) fn doc_event_channels(&self) -> usize {
        self.doc_events.lock().map_or(0, |m| m.len())
    }

    pub(super) fn new_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Runs `job` on shard `index`'s core: at once when the core is free, otherwise by whoever
    /// holds it, before it lets go. Never waits for a busy shard.
    pub(super) fn run_on(&self, index: u16, job: impl FnOnce(&mut Core, u64) + Send + 'static) {
        let Some(shard) = self.shards.get(usize::from(index)) else {
            return;
        };
        shard.submit(Box::new(job));
        self.work(index);
    }

    /// Queues `job` for shard `index` and leaves it to the shard's task (for callers that may
    /// be dispatching that shard's effects themselves).
    fn run_later(&self, index: u16, job: impl FnOnce(&mut Core, u64) + Send + 'static) {
        if let Some(shard) = self.shards.get(usize::from(index)) {
            shard.submit(Box::new(job));
            shard.notify.notify_one();
        }
    }

    /// While shard `index`'s core is free: runs its queued jobs, then executes the effects it
    /// produced, in order (the next holder dispatches only after us). Returns whether anything
    /// was done.
    pub(super) fn work(&self, index: u16) -> bool {
        let Some(shard) = self.shards.get(usize::from(index)) else {
            return false;
        };
        let mut did = false;
        loop {
            let Some(mut core) = shard.try_lock(self.now()) else {
                return did; // The holder runs what we queued before it lets go.
            };
            let now = self.now();
            for job in shard.take_jobs() {
                job(&mut core, now);
            }
            let effects: Vec<Effect> = std::iter::from_fn(|| core.poll_effect()).collect();
            shard.remember(&core);
            // Our turn to dispatch is taken before the core is released, so effects leave in
            // the order the core produced them.
            let turn = shard.dispatching.lock().unwrap_or_else(|p| p.into_inner());
            drop(core);
            did |= !effects.is_empty();
            for e in effects {
                self.dispatch(index, e);
            }
            drop(turn);
            if !shard.has_jobs() {
                return did;
            }
        }
    }

    /// Dispatches everything the primary produced so far, waiting for it if needed (the
    /// primary holds no document: it is never busy for long). A handshake's `peer` reply must
    /// be on the wire before any other shard speaks on the connection.
    pub(super) fn flush_primary(&self) {
        let shard = &self.shards[0];
        let mut core = shard.lock(self.now());
        let now = self.now();
        for job in shard.take_jobs() {
            job(&mut core, now);
        }
        let effects: Vec<Effect> = std::iter::from_fn(|| core.poll_effect()).collect();
        shard.remember(&core);
        let turn = shard.dispatching.lock().unwrap_or_else(|p| p.into_inner());
        drop(core);
        for e in effects {
            self.dispatch(0, e);
        }
        drop(turn);
    }

    /// Ends connection `conn` on every shard (each shard's task does it, so this never waits for
    /// a busy shard nor for the caller's own dispatch).
    pub(super) fn disconnect_everywhere(&self, conn: ConnId) {
        for i in 0..self.shard_count() {
            self.run_later(i, move |core, now| core.handle_disconnect(now, conn));
        }
    }

    fn kill_conn(&self, conn: ConnId, reason: CloseReason) {
        let slot = self.conns.lock().ok().and_then(|mut c| c.remove(&conn));
        if let Some(slot) = slot {
            let _ = slot.close.send(Some(reason));
        }
        self.disconnect_everywhere(conn);
    }

    fn dispatch(&self, shard: u16, effect: Effect) {
        match effect {
            Effect::Send { conn, bytes } => {
                if tracing::enabled!(tracing::Level::TRACE) {
                    super::trace_frame("out", conn, &bytes);
                }
                let full = {
                    let Ok(conns) = self.conns.lock() else { return };
                    match conns.get(&conn) {
                        Some(slot) => slot.frames.try_send(bytes).is_err(),
                        None => false,
                    }
                };
                if full {
                    tracing::warn!(%conn, "outgoing queue full: disconnecting slow reader");
                    self.kill_conn(
                        conn,
                        CloseReason {
                            code: 1008,
                            reason: "slow reader: outgoing queue full".into(),
                        },
                    );
                }
            }
            Effect::Close { conn, reason } => self.kill_conn(conn, reason),
            Effect::Storage { id, op } => {
                let _ = self.storage_idle.send(false);
                let _ = self.storage_tx.send(((shard, id), op));
            }
            Effect::Event(event) => self.event(shard, event),
        }
    }

    fn resolve(&self, shard: u16, ticket: Ticket) -> Option<Waiter> {
        self.waiters
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&(shard, ticket)))
    }

    fn event(&self, shard: u16, event: Event) {
        match event {
            Event::Committed { ticket, result } => {
                if let Some(Waiter::Commit(tx)) = self.resolve(shard, ticket) {
                    let _ = tx.send(result);
                }
            }
            Event::FindResolved {
                ticket, outcome, ..
            } => {
                if let Some(Waiter::Find(tx)) = self.resolve(shard, ticket) {
                    let _ = tx.send(outcome);
                }
            }
            Event::DocDeleted {
                doc,
                tombstone,
                origin,
                from_cluster,
            } => {
                if let Some(link) = self.cluster.as_ref().filter(|_| !from_cluster) {
                    link.publish(super::BusNotice::Deleted {
                        node: link.node_id.clone(),
                        doc,
                        tombstone: tombstone.encode(),
                    });
                }
                tracing::info!(%doc, by = %tombstone.by, ?origin, "document deleted");
                self.doc_event(
                    doc,
                    DocEvent::Deleted {
                        by: tombstone.by.clone(),
                        at_ms: tombstone.at_ms,
                        origin,
                    },
                );
                let _ = self.events.send(RepoEvent::DocumentDeleted {
                    doc,
                    by: tombstone.by,
                    origin,
                });
            }
            Event::RegionHeads { doc, heads } => {
                if let Some(link) = self.cluster.as_ref() {
                    link.publish(super::BusNotice::RegionHeads {
                        node: link.node_id.clone(),
                        doc,
                        heads,
                    });
                }
            }
            Event::DocChanged { doc, heads, origin } => {
                self.doc_event(doc, DocEvent::Changed { heads, origin });
            }
            Event::Ephemeral {
                doc,
                from,
                session_id,
                count,
                data,
                from_cluster,
            } => {
                if let Some(link) = self.cluster.as_ref().filter(|_| !from_cluster) {
                    link.publish(super::BusNotice::Ephemeral {
                        node: link.node_id.clone(),
                        doc,
                        sender: from.clone(),
                        session_id: session_id.clone(),
                        count,
                        data: data.clone(),
                    });
                }
                self.doc_event(
                    doc,
                    DocEvent::Ephemeral {
                        from,
                        session_id,
                        data,
                    },
                );
            }
            Event::PeerConnected {
                conn,
                peer_id,
                metadata,
            } => {
                tracing::info!(%conn, %peer_id, "peer connected");
                let _ = self.events.send(RepoEvent::PeerConnected {
                    conn,
                    peer_id,
                    storage_id: metadata.storage_id,
                });
            }
            // Every shard forgets the connection; the primary reports it.
            Event::PeerDisconnected { conn, peer_id } if shard == 0 => {
                tracing::info!(%conn, ?peer_id, "peer disconnected");
                let _ = self
                    .events
                    .send(RepoEvent::PeerDisconnected { conn, peer_id });
            }
            Event::Protocol { conn, error } => {
                tracing::warn!(%conn, %error, "protocol error");
                let _ = self.events.send(RepoEvent::ProtocolError {
                    conn,
                    error: error.to_string(),
                });
            }
            Event::StorageFailed { doc, error } => {
                tracing::error!(%doc, %error, "storage failed");
                let _ = self.events.send(RepoEvent::StorageFailed { doc, error });
            }
            Event::DocumentPanicked { doc, reason } => {
                tracing::error!(%doc, %reason, "panic contained: document reloaded from storage");
                let _ = self
                    .events
                    .send(RepoEvent::DocumentPanicked { doc, reason });
            }
            Event::Evicted { doc } => {
                tracing::debug!(%doc, "evicted");
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}

/// Resolves once shutdown is signalled (or its sender is gone).
pub(super) async fn until_shutdown(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Executes shard `index`'s effects until shutdown; ticks its core every `tick`.
pub(super) async fn run_driver(shared: Arc<Shared>, index: u16, tick: Duration) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let Some(shard) = shared.shards.get(usize::from(index)) else {
        return;
    };
    loop {
        let busy = shared.work(index);
        // Whatever woke us may have changed the core's state (even without effects): let
        // waiters re-check their conditions.
        shared.progress.send_modify(|p| *p += 1);
        if busy {
            // Let other tasks (sockets, other shards) run between bursts.
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            () = shard.notify.notified() => {}
            _ = interval.tick() => {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                shared.run_on(index, move |core, now| {
                    core.handle_wall_clock(wall);
                    core.handle_tick(now);
                });
                if index == 0 {
                    shared.prune_doc_events();
                }
            }
            _ = until_shutdown(&mut shutdown) => break,
        }
    }
}

fn op_name(op: &StorageOp) -> &'static str {
    match op {
        StorageOp::Load { .. } => "load",
        StorageOp::LoadChunks { .. } => "load_chunks",
        StorageOp::Append { .. } => "append",
        StorageOp::Compact { .. } => "compact",
        StorageOp::PutSyncState { .. } => "put_sync_state",
        StorageOp::PutHeads { .. } => "put_heads",
        StorageOp::PutTombstone { .. } => "put_tombstone",
        StorageOp::RemoveTombstone { .. } => "remove_tombstone",
        StorageOp::PutAuthors { .. } => "put_authors",
        StorageOp::AddOwnedDoc { .. } => "add_owned_doc",
        StorageOp::Delete { .. } => "delete",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

/// Executes storage operations in queue order, reporting each result to the shard that issued
/// it. Group commit: the writes queued together (up to
/// [`MAX_BATCH_OPS`](crate::core::MAX_BATCH_OPS)) commit in one transaction, and their results are
/// reported only once it committed; a load runs alone.
pub(super) async fn run_storage(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Tagged>) {
    let mut held = None;
    loop {
        let first = match held.take() {
            Some(op) => op,
            None => match rx.recv().await {
                Some(op) => op,
                None => break,
            },
        };
        let Gathered { group, held: next } = StorageOp::gather(first, || rx.try_recv().ok());
        held = next;
        let (ids, ops): (Vec<(u16, OpId)>, Vec<StorageOp>) = group.into_iter().unzip();
        for (id, op) in ids.iter().zip(&ops) {
            tracing::trace!(?id, doc = %op.doc(), op = op_name(op), "storage op");
        }
        // Appends to announce to the other nodes of a cluster once they committed.
        let appended: Vec<Option<(DocumentId, crate::storage::ChunkKey)>> = ops
            .iter()
            .map(|op| match op {
                StorageOp::Append { doc, key, .. } => Some((*doc, *key)),
                _ => None,
            })
            .collect();
        let results = StorageOp::run_batch_async(ops, shared.storage.as_ref()).await;
        if let Some(link) = shared.cluster.as_ref().filter(|l| l.publish_commits) {
            for (append, result) in appended.iter().zip(&results) {
                if let (Some((doc, key)), Ok(_)) = (append, result) {
                    link.publish(super::BusNotice::Committed {
                        node: link.node_id.clone(),
                        doc: *doc,
                        keys: vec![*key],
                    });
                }
            }
        }
        tracing::trace!(
            ops = ids.len(),
            failed = results.iter().filter(|r| r.is_err()).count(),
            "storage ops done"
        );
        let mut by_shard: Vec<Vec<_>> = (0..shared.shards.len()).map(|_| Vec::new()).collect();
        for ((shard, id), result) in ids.into_iter().zip(results) {
            if let Some(v) = by_shard.get_mut(usize::from(shard)) {
                v.push((id, result));
            }
        }
        for (shard, results) in by_shard.into_iter().enumerate() {
            if results.is_empty() {
                continue;
            }
            let index = u16::try_from(shard).unwrap_or(0);
            shared.run_on(index, move |core, now| {
                for (id, result) in results {
                    core.handle_storage_result(now, id, result);
                }
            });
        }
        if held.is_none() && rx.is_empty() {
            let _ = shared.storage_idle.send(true);
        }
        shared.progress.send_modify(|p| *p += 1);
    }
}
