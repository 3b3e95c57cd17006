//! The server's real path, in process: a [`Core`] configured as `concord serve` configures it,
//! with its storage operations executed on a separate thread as the tokio driver's storage task
//! executes them (the writes queued together in one transaction: [`StorageOp::gather`],
//! [`StorageOp::run_batch_async`]), so messages that arrive while a commit is in flight queue up
//! exactly as in the server.
//! Time spent inside the core is measured around each call; the storage thread's CPU time is
//! read from the kernel.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use concord::core::{
    Core, CoreConfig, DeferApply, Effect, Event, Gathered, GrantPolicy, Housekeeping, Limits, OpId,
    StorageOp, StorageReply,
};
use concord::storage::{Storage, StorageError};
use concord::wire::{self, Message, PeerMetadata};
use concord::{ConnId, DocumentId, PeerId, StorageId};

type Reply = (OpId, Result<StorageReply, StorageError>);

/// What the storage thread executed together, and the results.
#[derive(Debug)]
struct Group {
    replies: Vec<Reply>,
    /// A run of writes (one transaction when every write succeeded), not a load.
    writes: bool,
}

/// Server under test.
#[derive(Debug)]
pub struct Harness {
    pub core: Core,
    ops: Option<mpsc::Sender<(OpId, StorageOp)>>,
    replies: mpsc::Receiver<Group>,
    worker: Option<JoinHandle<Duration>>,
    pending: usize,
    start: Instant,
    /// Wall time spent inside core calls (the core is single-threaded: this is its CPU time).
    pub busy: Duration,
    /// Frames the core sent, by connection.
    pub sent: Vec<(ConnId, Vec<u8>)>,
    /// Events the core emitted.
    pub events: Vec<Event>,
    /// When set, every write operation handed to storage is also recorded here.
    pub writes: Option<Vec<(OpId, StorageOp)>>,
    /// While `writes` is set: the writes storage executed together, one entry per transaction.
    pub transactions: Vec<Vec<OpId>>,
    /// Storage operations that failed.
    pub storage_errors: usize,
}

/// The server's peer id in the benchmarks.
pub fn server_peer() -> PeerId {
    PeerId::from("concord-bench-server")
}

/// CPU time of the whole process, dead threads included (from /proc, 10 ms resolution).
pub fn process_cpu() -> Duration {
    crate::procstat::cpu("self").unwrap_or_default().total()
}

/// CPU time of the calling thread (from /proc; zero where unavailable).
pub fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

impl Harness {
    /// A server core over `storage`, configured like `concord serve --insecure-no-auth`.
    /// Storage operations run on `rt` (sqlx runs SQLite itself on its own connection threads).
    pub fn new(storage: Arc<dyn Storage>, rt: tokio::runtime::Handle) -> anyhow::Result<Self> {
        Self::with_defer(storage, rt, Some(DeferApply::default()))
    }

    /// [`Harness::new`] with another deferred-apply setting (`None`: apply every batch at once).
    pub fn with_defer(
        storage: Arc<dyn Storage>,
        rt: tokio::runtime::Handle,
        defer: Option<DeferApply>,
    ) -> anyhow::Result<Self> {
        let config = CoreConfig {
            limits: Limits::default(),
            housekeeping: Housekeeping::default(),
            defer_apply: defer,
            ..CoreConfig::new(server_peer(), Some(StorageId::from("bench-server")), 1)
        }
        .with_policy(Arc::new(GrantPolicy {
            allow_anonymous: true,
        }));
        let (op_tx, op_rx) = mpsc::channel::<(OpId, StorageOp)>();
        let (reply_tx, replies) = mpsc::channel::<Group>();
        let worker = std::thread::Builder::new()
            .name("storage".into())
            .spawn(move || {
                let cpu0 = thread_cpu();
                let mut held = None;
                while let Some(first) = held.take().or_else(|| op_rx.recv().ok()) {
                    let Gathered { group, held: next } =
                        StorageOp::gather(first, || op_rx.try_recv().ok());
                    held = next;
                    let writes = group.iter().all(|(_, op)| op.as_write().is_some());
                    let (ids, ops): (Vec<OpId>, Vec<StorageOp>) = group.into_iter().unzip();
                    let results = rt.block_on(StorageOp::run_batch_async(ops, storage.as_ref()));
                    let replies = ids.into_iter().zip(results).collect();
                    if reply_tx.send(Group { replies, writes }).is_err() {
                        break;
                    }
                }
                thread_cpu().saturating_sub(cpu0)
            })
            .context("spawning the storage thread")?;
        Ok(Self {
            core: Core::new(config),
            ops: Some(op_tx),
            replies,
            worker: Some(worker),
            pending: 0,
            start: Instant::now(),
            busy: Duration::ZERO,
            sent: Vec::new(),
            events: Vec::new(),
            writes: None,
            transactions: Vec::new(),
            storage_errors: 0,
        })
    }

    /// Milliseconds since the harness started (the core's clock).
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The driver's periodic tick (timeouts, eviction, idle flush of deferred changes).
    pub fn tick(&mut self) {
        self.timed(Core::handle_tick);
    }

    fn timed(&mut self, f: impl FnOnce(&mut Core, u64)) {
        let now = self.now();
        let t = Instant::now();
        f(&mut self.core, now);
        self.drain();
        self.busy += t.elapsed();
    }

    fn drain(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Send { conn, bytes } => self.sent.push((conn, bytes)),
                Effect::Storage { id, op } => {
                    if let Some(w) = &mut self.writes
                        && op.as_write().is_some()
                    {
                        w.push((id, op.clone()));
                    }
                    if let Some(tx) = &self.ops
                        && tx.send((id, op)).is_ok()
                    {
                        self.pending += 1;
                    }
                }
                Effect::Event(e) => self.events.push(e),
                _ => {}
            }
        }
    }

    /// A client connection arrives and says `join`.
    pub fn connect(&mut self, conn: ConnId, peer: &PeerId, storage: Option<StorageId>) {
        self.timed(|c, now| c.handle_accept(now, conn));
        let join = Message::Join {
            sender_id: peer.clone(),
            peer_metadata: Some(PeerMetadata {
                is_ephemeral: storage.is_none(),
                region: None,
                storage_id: storage,
                concord: true,
            }),
            supported_protocol_versions: vec![wire::PROTOCOL_V1.to_string()],
        };
        self.frame(conn, &wire::encode(&join));
    }

    /// Loads `doc` from storage (no peer asked).
    pub fn load(&mut self, doc: DocumentId) {
        self.timed(|c, now| c.load(now, doc));
    }

    /// A frame arrives on `conn`.
    pub fn frame(&mut self, conn: ConnId, bytes: &[u8]) {
        self.timed(|c, now| c.handle_message(now, conn, bytes));
    }

    /// A sync message for `doc` arrives from `peer` on `conn`.
    pub fn sync(&mut self, conn: ConnId, peer: &PeerId, doc: DocumentId, data: Vec<u8>) {
        let msg = Message::Sync {
            sender_id: peer.clone(),
            target_id: server_peer(),
            document_id: doc,
            data,
        };
        self.frame(conn, &wire::encode(&msg));
    }

    /// Hands finished storage operations to the core; waits up to `wait` for the first one.
    pub fn poll_storage(&mut self, wait: Duration) {
        let first = if wait.is_zero() {
            self.replies.try_recv().ok()
        } else {
            self.replies.recv_timeout(wait).ok()
        };
        let Some(mut next) = first else {
            return;
        };
        loop {
            if next.writes && self.writes.is_some() {
                self.transactions
                    .push(next.replies.iter().map(|(id, _)| *id).collect());
            }
            for (id, result) in next.replies {
                self.pending = self.pending.saturating_sub(1);
                self.storage_errors += usize::from(result.is_err());
                self.timed(|c, now| c.handle_storage_result(now, id, result));
            }
            match self.replies.try_recv() {
                Ok(r) => next = r,
                Err(_) => return,
            }
        }
    }

    /// Runs storage until nothing is pending (bounded by `limit`).
    pub fn settle(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        while self.pending > 0 && Instant::now() < end {
            self.poll_storage(Duration::from_millis(50));
        }
    }

    /// Storage operations not yet answered.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Stops the storage thread; returns its CPU time.
    pub fn finish(mut self) -> Duration {
        self.ops = None;
        self.worker
            .take()
            .and_then(|w| w.join().ok())
            .unwrap_or_default()
    }
}
