//! Per-principal budgets: what one authenticated principal may make the server do, whatever
//! the number of its connections.
//!
//! Work is charged by cost before Automerge sees it: the operations and decompressed bytes of
//! the changes a peer sends, the documents it creates, the documents it keeps subscribed, and the
//! ephemeral bytes it fans out. Rates are token buckets refilled with the core's `now` (no clock
//! reads); counts are held while the thing they count lives. A refusal is a
//! [`ProtocolError::QuotaExceeded`](super::ProtocolError::QuotaExceeded) to that peer only.
//!
//! One [`Budgets`] is shared by every shard of a server (it is behind a mutex; charging is a few
//! arithmetic operations), so sharding never multiplies a principal's allowance. Region links and
//! peers we dialled are never charged.

use std::collections::HashMap;
use std::sync::Mutex;

/// The budgets of every principal, with their limits.
#[derive(Debug)]
pub struct Budgets {
    limits: Quotas,
    state: Mutex<HashMap<String, Principal>>,
}

/// Per-principal limits (every rate is per second unless named otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct Quotas {
    /// Operations in received changes, per second (refill); the burst is
    /// `ops_burst`.
    pub ops_per_sec: u64,
    /// Largest burst of operations.
    pub ops_burst: u64,
    /// Decompressed bytes of received changes, per second.
    pub bytes_per_sec: u64,
    /// Largest burst of decompressed bytes.
    pub bytes_burst: u64,
    /// Documents created (first changes to a document nobody stored), per hour; also the burst.
    pub docs_per_hour: u64,
    /// Documents subscribed at once, over all of the principal's connections.
    pub subscriptions: u64,
    /// Distinct peer storage ids whose sync state is persisted; beyond it, a new storage id
    /// syncs without persisted state.
    pub storage_ids: usize,
    /// Ephemeral bytes one connection may send per second (each is fanned out to every other
    /// subscriber: this bounds the amplification).
    pub ephemeral_bytes_per_sec: u64,
    /// Largest burst of ephemeral bytes per connection.
    pub ephemeral_burst: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            ops_per_sec: 50_000,
            ops_burst: 200_000,
            bytes_per_sec: 16 << 20,
            bytes_burst: 64 << 20,
            docs_per_hour: 1_000,
            subscriptions: 10_000,
            storage_ids: 32,
            ephemeral_bytes_per_sec: 64 << 10,
            ephemeral_burst: 256 << 10,
        }
    }
}

/// What is being charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Charge {
    /// Operations in received changes.
    Ops(u64),
    /// Decompressed bytes of received changes.
    Bytes(u64),
    /// One new document.
    Document,
}

impl Charge {
    /// The quota's name in errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ops(_) => "operations per second",
            Self::Bytes(_) => "decompressed bytes per second",
            Self::Document => "documents created per hour",
        }
    }
}

/// A token bucket refilled with the caller's clock (milliseconds).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    capacity: f64,
    per_ms: f64,
    at: u64,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens refilled at `per_sec` tokens per second.
    pub fn new(capacity: u64, per_sec: f64, now: u64) -> Self {
        Self {
            tokens: capacity as f64,
            capacity: capacity as f64,
            per_ms: per_sec / 1000.0,
            at: now,
        }
    }

    fn refill(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.at) as f64;
        self.tokens = (self.tokens + elapsed * self.per_ms).min(self.capacity);
        self.at = self.at.max(now);
    }

    /// Takes `n` tokens if there are that many; false (and nothing taken) otherwise.
    pub fn take(&mut self, n: u64, now: u64) -> bool {
        self.refill(now);
        let n = n as f64;
        if n <= self.tokens {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// True when the bucket is full at `now` (nothing to remember).
    pub fn is_full(&mut self, now: u64) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }
}

#[derive(Debug)]
struct Principal {
    ops: TokenBucket,
    bytes: TokenBucket,
    docs: TokenBucket,
    subscriptions: u64,
    connections: u64,
    /// Storage ids whose sync state is persisted, with when each was last used.
    storage_ids: Vec<(String, u64)>,
}

/// A principal's persisted storage ids count against its quota for this long after their last
/// use (so reconnecting with ever new storage ids does not get around it).
pub const STORAGE_ID_WINDOW_MS: u64 = 24 * 3600 * 1000;
/// Principals remembered at most; beyond it the least recently active are forgotten first.
const MAX_PRINCIPALS: usize = 100_000;

impl Budgets {
    /// Budgets with these limits.
    pub fn new(limits: Quotas) -> Self {
        Self {
            limits,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Quotas {
        &self.limits
    }

    fn with<R>(&self, principal: &str, now: u64, f: impl FnOnce(&mut Principal) -> R) -> R {
        let mut map = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let l = &self.limits;
        let p = map
            .entry(principal.to_owned())
            .or_insert_with(|| Principal {
                ops: TokenBucket::new(l.ops_burst, l.ops_per_sec as f64, now),
                bytes: TokenBucket::new(l.bytes_burst, l.bytes_per_sec as f64, now),
                docs: TokenBucket::new(l.docs_per_hour, l.docs_per_hour as f64 / 3600.0, now),
                subscriptions: 0,
                connections: 0,
                storage_ids: Vec::new(),
            });
        f(p)
    }

    /// Charges `principal` for several costs at once: all are taken, or none (the first that
    /// does not fit is returned).
    pub fn charge(&self, principal: &str, costs: &[Charge], now: u64) -> Result<(), Charge> {
        self.with(principal, now, |p| {
            let mut trial = (p.ops.clone(), p.bytes.clone(), p.docs.clone());
            for c in costs {
                let ok = match *c {
                    Charge::Ops(n) => trial.0.take(n, now),
                    Charge::Bytes(n) => trial.1.take(n, now),
                    Charge::Document => trial.2.take(1, now),
                };
                if !ok {
                    return Err(*c);
                }
            }
            (p.ops, p.bytes, p.docs) = trial;
            Ok(())
        })
    }

    /// One more subscribed document; false (nothing counted) when at the limit.
    pub fn subscribe(&self, principal: &str, now: u64) -> bool {
        let max = self.limits.subscriptions;
        self.with(principal, now, |p| {
            if p.subscriptions >= max {
                return false;
            }
            p.subscriptions += 1;
            true
        })
    }

    /// `n` subscriptions ended.
    pub fn unsubscribe(&self, principal: &str, n: u64, now: u64) {
        self.with(principal, now, |p| {
            p.subscriptions = p.subscriptions.saturating_sub(n);
        });
    }

    /// A connection of `principal` was established; returns whether sync state with its
    /// `storage_id` may be persisted: true for the storage ids the principal's connections used
    /// since it last had none, up to the limit.
    pub fn connect(&self, principal: &str, storage_id: Option<&str>, now: u64) -> bool {
        let max = self.limits.storage_ids;
        self.with(principal, now, |p| {
            p.connections += 1;
            let Some(storage_id) = storage_id else {
                return false;
            };
            p.storage_ids
                .retain(|(_, used)| now.saturating_sub(*used) < STORAGE_ID_WINDOW_MS);
            if let Some((_, used)) = p.storage_ids.iter_mut().find(|(s, _)| s == storage_id) {
                *used = now;
                return true;
            }
            if p.storage_ids.len() >= max {
                return false;
            }
            p.storage_ids.push((storage_id.to_owned(), now));
            true
        })
    }

    /// A connection of `principal` ended, with `subscriptions` documents subscribed.
    pub fn disconnect(&self, principal: &str, subscriptions: u64, now: u64) {
        self.with(principal, now, |p| {
            p.connections = p.connections.saturating_sub(1);
            p.subscriptions = p.subscriptions.saturating_sub(subscriptions);
        });
    }

    /// Forgets principals with nothing to remember (no connection, full buckets), so memory
    /// follows active principals only.
    pub fn prune(&self, now: u64) {
        let mut map = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > MAX_PRINCIPALS {
            // Forget the storage ids of idle principals first (bounded memory).
            for p in map.values_mut().filter(|p| p.connections == 0) {
                p.storage_ids.clear();
            }
        }
        map.retain(|_, p| {
            p.storage_ids
                .retain(|(_, used)| now.saturating_sub(*used) < STORAGE_ID_WINDOW_MS);
            !(p.connections == 0
                && p.subscriptions == 0
                && p.storage_ids.is_empty()
                && p.ops.is_full(now)
                && p.bytes.is_full(now)
                && p.docs.is_full(now))
        });
    }

    /// Principals remembered (for tests and metrics).
    pub fn principals(&self) -> usize {
        self.state.lock().map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_with_time_and_never_overflow() {
        let mut b = TokenBucket::new(10, 5.0, 0);
        assert!(b.take(10, 0));
        assert!(!b.take(1, 0));
        assert!(b.take(5, 1000), "5 tokens after one second");
        assert!(!b.take(1, 1000));
        assert!(b.is_full(10_000));
        assert!(!b.take(11, 10_000), "never more than the capacity");
    }

    #[test]
    fn charges_are_all_or_nothing_and_per_principal() {
        let budgets = Budgets::new(Quotas {
            ops_burst: 100,
            ops_per_sec: 1,
            docs_per_hour: 1,
            ..Quotas::default()
        });
        assert_eq!(
            budgets.charge("eve", &[Charge::Document, Charge::Ops(101)], 0),
            Err(Charge::Ops(101))
        );
        assert!(
            budgets.charge("eve", &[Charge::Document], 0).is_ok(),
            "the refused charge took nothing"
        );
        assert_eq!(
            budgets.charge("eve", &[Charge::Document], 0),
            Err(Charge::Document)
        );
        assert!(budgets.charge("bob", &[Charge::Document], 0).is_ok());
    }

    #[test]
    fn subscriptions_and_storage_ids_are_capped_and_pruned() {
        let budgets = Budgets::new(Quotas {
            subscriptions: 2,
            storage_ids: 1,
            ..Quotas::default()
        });
        assert!(budgets.subscribe("eve", 0) && budgets.subscribe("eve", 0));
        assert!(!budgets.subscribe("eve", 0));
        budgets.unsubscribe("eve", 2, 0);
        assert!(budgets.connect("eve", Some("s1"), 0));
        assert!(budgets.connect("eve", Some("s1"), 0), "same id again");
        assert!(!budgets.connect("eve", Some("s2"), 0));
        budgets.prune(0);
        assert_eq!(budgets.principals(), 1, "connections keep eve");
        for _ in 0..3 {
            budgets.disconnect("eve", 0, 0);
        }
        budgets.prune(1);
        assert!(
            !budgets.connect("eve", Some("s3"), 1),
            "reconnecting does not reset the storage ids"
        );
        budgets.disconnect("eve", 0, 1);
        budgets.prune(STORAGE_ID_WINDOW_MS + 1);
        assert_eq!(budgets.principals(), 0, "forgotten a day after she left");
    }
}
