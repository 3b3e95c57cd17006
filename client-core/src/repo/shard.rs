//! One core of the driver behind its own lock, with the bookkeeping that lets the repo tell a
//! busy shard from a wedged one.
//!
//! A repo runs one core ([`RepoConfig::shards`](super::RepoConfig::shards) = 1, clients) or
//! several (servers): documents are split between cores by id
//! ([`ShardConfig`](crate::core::ShardConfig)), so long Automerge work on one document holds only
//! its shard's lock and every other shard keeps serving.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::core::Core;

/// A core, its wake-up signal and its lock bookkeeping.
#[derive(Debug)]
pub(super) struct Shard {
    core: Mutex<Core>,
    /// Wakes this shard's driver task.
    pub(super) notify: Notify,
    /// Serialises draining and dispatching this shard's effects, so frames leave in the order the
    /// core produced them whoever drains (the shard's task, or a handshake completing inline).
    pub(super) dispatching: Mutex<()>,
    /// Repo clock (ms) + 1 when the lock was taken; 0 while free.
    held_since: AtomicU64,
    /// A panic escaped the core while it held the lock (its state was recovered as is).
    poisoned: AtomicBool,
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

impl Shard {
    pub(super) fn new(core: Core) -> Self {
        Self {
            core: Mutex::new(core),
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
