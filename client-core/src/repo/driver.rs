//! The tokio driver: runs the core's effects (frames, storage, events) and feeds results back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use automerge::ChangeHash;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};

use super::{DocEvent, RepoError, RepoEvent};
use crate::core::{
    CloseReason, Core, Effect, Event, FindOutcome, Gathered, OpId, StorageOp, Ticket,
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
}

/// State shared by the driver task, the storage worker, transports and handles.
pub(crate) struct Shared {
    pub(super) core: Mutex<Core>,
    pub(super) storage: Arc<dyn Storage>,
    notify: Notify,
    start: Instant,
    waiters: Mutex<HashMap<Ticket, Waiter>>,
    doc_events: Mutex<HashMap<DocumentId, broadcast::Sender<DocEvent>>>,
    pub(super) conns: Mutex<HashMap<ConnId, ConnSlot>>,
    next_conn: AtomicU64,
    storage_tx: mpsc::UnboundedSender<(OpId, StorageOp)>,
    pub(super) events: broadcast::Sender<RepoEvent>,
    pub(super) progress: watch::Sender<u64>,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) outgoing_queue: usize,
    pub(super) storage_idle: watch::Sender<bool>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

fn poisoned() -> RepoError {
    RepoError::Closed
}

impl Shared {
    pub(super) fn new(
        core: Core,
        storage: Arc<dyn Storage>,
        outgoing_queue: usize,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<(OpId, StorageOp)>) {
        let (storage_tx, storage_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Self {
            core: Mutex::new(core),
            storage,
            notify: Notify::new(),
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
            storage_idle: watch::channel(true).0,
        });
        (shared, storage_rx)
    }

    /// Milliseconds since the repo started (the core's clock).
    pub(super) fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn lock(&self) -> Result<MutexGuard<'_, Core>, RepoError> {
        self.core.lock().map_err(|_| poisoned())
    }

    pub(super) fn wake(&self) {
        self.notify.notify_one();
    }

    /// Registers a waiter; call while holding the core lock so the event cannot be missed.
    pub(super) fn register(&self, ticket: Ticket, waiter: Waiter) -> Result<(), RepoError> {
        self.waiters
            .lock()
            .map_err(|_| poisoned())?
            .insert(ticket, waiter);
        Ok(())
    }

    pub(super) fn doc_events(&self, doc: DocumentId) -> broadcast::Sender<DocEvent> {
        let mut map = match self.doc_events.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(doc)
            .or_insert_with(|| broadcast::channel(256).0)
            .clone()
    }

    pub(super) fn new_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    fn drain(&self) -> Vec<Effect> {
        let Ok(mut core) = self.core.lock() else {
            return Vec::new();
        };
        std::iter::from_fn(|| core.poll_effect()).collect()
    }

    fn kill_conn(&self, conn: ConnId, reason: CloseReason) {
        let slot = self.conns.lock().ok().and_then(|mut c| c.remove(&conn));
        if let Some(slot) = slot {
            let _ = slot.close.send(Some(reason));
        }
        if let Ok(mut core) = self.core.lock() {
            let now = self.now();
            core.handle_disconnect(now, conn);
        }
    }

    fn dispatch(&self, effect: Effect) {
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
                    #[cfg(feature = "native")]
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
                let _ = self.storage_tx.send((id, op));
            }
            Effect::Event(event) => self.event(event),
        }
    }

    fn resolve(&self, ticket: Ticket) -> Option<Waiter> {
        self.waiters.lock().ok().and_then(|mut w| w.remove(&ticket))
    }

    fn event(&self, event: Event) {
        match event {
            Event::Committed { ticket, result } => {
                if let Some(Waiter::Commit(tx)) = self.resolve(ticket) {
                    let _ = tx.send(result);
                }
            }
            Event::FindResolved {
                ticket, outcome, ..
            } => {
                if let Some(Waiter::Find(tx)) = self.resolve(ticket) {
                    let _ = tx.send(outcome);
                }
            }
            Event::DocChanged { doc, heads, origin } => {
                let _ = self
                    .doc_events(doc)
                    .send(DocEvent::Changed { heads, origin });
            }
            Event::Ephemeral {
                doc,
                from,
                session_id,
                data,
            } => {
                let _ = self.doc_events(doc).send(DocEvent::Ephemeral {
                    from,
                    session_id,
                    data,
                });
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
            Event::PeerDisconnected { conn, peer_id } => {
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

/// Executes effects until shutdown; ticks the core every `tick`.
pub(super) async fn run_driver(shared: Arc<Shared>, tick: Duration) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let effects = shared.drain();
        let busy = !effects.is_empty();
        for e in effects {
            shared.dispatch(e);
        }
        // Whatever woke us may have changed the core's state (even without effects): let
        // waiters re-check their conditions.
        shared.progress.send_modify(|p| *p += 1);
        if busy {
            continue;
        }
        tokio::select! {
            () = shared.notify.notified() => {}
            _ = interval.tick() => {
                if let Ok(mut core) = shared.core.lock() {
                    let now = shared.now();
                    core.handle_tick(now);
                }
            }
            _ = until_shutdown(&mut shutdown) => break,
        }
    }
}

fn op_name(op: &StorageOp) -> &'static str {
    match op {
        StorageOp::Load { .. } => "load",
        StorageOp::Append { .. } => "append",
        StorageOp::Compact { .. } => "compact",
        StorageOp::PutSyncState { .. } => "put_sync_state",
        StorageOp::PutHeads { .. } => "put_heads",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

/// Executes storage operations in queue order, reporting each result to the core. Group commit:
/// the writes queued together (up to [`MAX_BATCH_OPS`](crate::core::MAX_BATCH_OPS)) commit in one
/// transaction, and their results are reported only once it committed; a load runs alone.
pub(super) async fn run_storage(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<(OpId, StorageOp)>,
) {
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
        let (ids, ops): (Vec<OpId>, Vec<StorageOp>) = group.into_iter().unzip();
        for (id, op) in ids.iter().zip(&ops) {
            tracing::trace!(?id, doc = %op.doc(), op = op_name(op), "storage op");
        }
        let results = StorageOp::run_batch_async(ops, shared.storage.as_ref()).await;
        tracing::trace!(
            ops = ids.len(),
            failed = results.iter().filter(|r| r.is_err()).count(),
            "storage ops done"
        );
        if let Ok(mut core) = shared.core.lock() {
            let now = shared.now();
            for (id, result) in ids.into_iter().zip(results) {
                core.handle_storage_result(now, id, result);
            }
        }
        if held.is_none() && rx.is_empty() {
            let _ = shared.storage_idle.send(true);
        }
        shared.progress.send_modify(|p| *p += 1);
        shared.wake();
    }
}
