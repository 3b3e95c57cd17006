//! One core of the driver behind its own lock, with the bookkeeping that lets the repo tell a
//! busy shard from a wedged one.
//!
//! A repo runs one core ([`RepoConfig::shards`](super::RepoConfig::shards) = 1, clients) or
//! several (servers): documents are split between cores by id
//! ([`ShardConfig`](crate::core::ShardConfig)), so long Automerge work on one document holds only
//! its shard's lock and every other shard keeps serving.
//!
//! Tasks never wait for a busy shard: they hand it a job ([`Shard::submit`]); whoever holds
//! the lock runs the queued jobs before letting go (flat combining), so a tokio worker is only
//! ever busy with work it does itself, never blocked behind another's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use tokio::sync::Notify;

use crate::core::Core;

/// Work for a shard's core, run by whoever holds its lock (with the repo clock).
pub(super) type Job = Box<dyn FnOnce(&mut Core, u64) + Send>;

/// A core, its wake-up signal and its lock bookkeeping.
pub(super) struct Shard {
    core: Mutex<Core>,
    /// Jobs waiting for the lock.
    queue: Mutex<VecDeque<Job>>,
    /// Wakes this shard's driver task.
    pub(super) notify: Notify,
    /// Serialises draining and dispatching this shard's effects, so frames leave in the order the
    /// core produced them whoever drains (the shard's task, or a handshake completing inline).
    pub(super) dispatching: Mutex<()>,
    /// Repo clock (ms) + 1 when the lock was taken; 0 while free.
    held_since: AtomicU64,
    /// A panic escaped the core while it held the lock (its state was recovered as is).
    poisoned: AtomicBool,
    /// The core's counters as of its last job (read without waiting for a busy core).
    snapshot: Mutex<Snapshot>,
}

/// What observers read of a core without taking its lock.
#[derive(Debug, Clone, Default)]
pub(super) struct Snapshot {
    pub(super) stats: crate::core::Stats,
    pub(super) resident: usize,
    pub(super) indexed: usize,
}

/// The locked core of one shard; records how long the lock is held.
#[derive(Debug)]
pub(super) struct CoreGuard<'a> {
    guard: MutexGuard<'a, Core>,
    held_since: &'a AtomicU64,
}

impl std::ops::Deref for CoreGuard<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.guard
    }
}

impl std::ops::DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.guard
    }
}

impl Drop for CoreGuard<'_> {
    fn drop(&mut self) {
        self.held_since.store(0, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("held_since", &self.held_since)
            .finish_non_exhaustive()
    }
}

impl Shard {
    pub(super) fn new(core: Core) -> Self {
        Self {
            core: Mutex::new(core),
            queue: Mutex::new(VecDeque::new()),
            snapshot: Mutex::new(Snapshot::default()),
            notify: Notify::new(),
            dispatching: Mutex::new(()),
            held_since: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Locks the core. A lock poisoned by a panic that escaped the core's own containment is
    /// recovered (and reported by [`Shard::poisoned`]) rather than stopping every later caller.
    pub(super) fn lock(&self, now: u64) -> CoreGuard<'_> {
        let guard = self.core.lock().unwrap_or_else(|p: PoisonError<_>| {
            self.poisoned.store(true, Ordering::Relaxed);
            self.core.clear_poison();
            p.into_inner()
        });
        self.held_since.store(now + 1, Ordering::Relaxed);
        CoreGuard {
            guard,
            held_since: &self.held_since,
        }
    }

    /// Locks the core if it is free; `None` while another holds it.
    pub(super) fn try_lock(&self, now: u64) -> Option<CoreGuard<'_>> {
        let guard = match self.core.try_lock() {
            Ok(g) => g,
            Err(TryLockError::WouldBlock) => return None,
            Err(TryLockError::Poisoned(p)) => {
                self.poisoned.store(true, Ordering::Relaxed);
                self.core.clear_poison();
                p.into_inner()
            }
        };
        self.held_since.store(now + 1, Ordering::Relaxed);
        Some(CoreGuard {
            guard,
            held_since: &self.held_since,
        })
    }

    /// Records the core's counters for [`Shard::snapshot`].
    pub(super) fn remember(&self, core: &Core) {
        let s = Snapshot {
            stats: core.stats().clone(),
            resident: core.resident_documents(),
            indexed: core.indexed_documents(),
        };
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// The core's counters as of the last time a holder let go of it.
    pub(super) fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Queues `job` for the core.
    pub(super) fn submit(&self, job: Job) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(job);
    }

    /// Takes every queued job.
    pub(super) fn take_jobs(&self) -> VecDeque<Job> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// True when jobs wait.
    pub(super) fn has_jobs(&self) -> bool {
        !self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// How long the lock has been held without a break (`None`: free).
    pub(super) fn held_for(&self, now: u64) -> Option<u64> {
        match self.held_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(now.saturating_sub(since - 1)),
        }
    }

    /// True once a panic escaped the core while it held the lock.
    pub(super) fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed)
    }
}
