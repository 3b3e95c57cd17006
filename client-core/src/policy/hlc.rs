//! A hybrid logical clock, sans-IO: physical time comes in as an argument.
//!
//! A timestamp is `(ms, counter, actor)`, ordered in that order, so every replica orders any two
//! timestamps the same way. [`Hlc::now`] never goes backwards, whatever the physical clock does;
//! [`Hlc::observe`] merges a remote timestamp so that anything written after seeing a change is
//! stamped later than it (causality implies timestamp order).
//!
//! Skew: a remote timestamp up to `max_drift_ms` ahead of our physical clock is adopted as is
//! (our clock moves forward to it). One further ahead is clamped: we move to
//! `physical + max_drift_ms` and advance the logical counter, so a single replica with a clock
//! set to next year cannot drag every other clock along. The remote change itself is kept and
//! still compares by its own (future) timestamp; see [`Observed::Clamped`].
//!
//! ```
//! use concord::policy::Hlc;
//! use automerge::ActorId;
//!
//! let mut a = Hlc::new(ActorId::from([1; 16]));
//! let mut b = Hlc::new(ActorId::from([2; 16]));
//! let t1 = a.now(10_000);
//! let t2 = a.now(9_000); // the physical clock went back: the HLC does not
//! assert!(t2 > t1);
//! b.observe(&t2, 5_000); // b's clock is 5 s behind
//! assert!(b.now(5_001) > t2); // still stamps after what it has seen
//! ```

use std::fmt;

use automerge::ActorId;

/// A point in hybrid logical time. Ordered by `(ms, counter, actor)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HlcTimestamp {
    /// Milliseconds (physical part; Unix epoch by convention, but any shared epoch works).
    pub ms: u64,
    /// Logical counter within one millisecond.
    pub counter: u32,
    /// The writer (the Automerge actor of the change): the final tie-breaker.
    pub actor: ActorId,
}

impl HlcTimestamp {
    /// A timestamp.
    pub fn new(ms: u64, counter: u32, actor: ActorId) -> Self {
        Self { ms, counter, actor }
    }
}

impl fmt::Display for HlcTimestamp {
    /// `ms:counter@actor`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}@{}", self.ms, self.counter, self.actor)
    }
}

/// What [`Hlc::observe`] did with a remote timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Merged: our clock is now at or after the remote timestamp.
    Merged,
    /// The remote was more than the maximum drift ahead of our physical clock: we advanced only
    /// to `physical + max_drift`. `excess_ms` is how far beyond that the remote was.
    Clamped {
        /// Milliseconds beyond the allowed drift.
        excess_ms: u64,
    },
}

/// Default maximum drift: one hour. Offline-first devices have poor clocks; a larger bound only
/// matters when a clock is wildly wrong.
pub const DEFAULT_MAX_DRIFT_MS: u64 = 60 * 60 * 1000;

/// A hybrid logical clock for one actor. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Hlc {
    actor: ActorId,
    ms: u64,
    counter: u32,
    max_drift_ms: u64,
    clamped: u64,
}

impl Hlc {
    /// A clock at zero for `actor`, with [`DEFAULT_MAX_DRIFT_MS`].
    pub fn new(actor: ActorId) -> Self {
        Self {
            actor,
            ms: 0,
            counter: 0,
            max_drift_ms: DEFAULT_MAX_DRIFT_MS,
            clamped: 0,
        }
    }

    /// Sets how far ahead of our physical clock a remote timestamp may pull us.
    pub fn with_max_drift(mut self, max_drift_ms: u64) -> Self {
        self.max_drift_ms = max_drift_ms;
        self
    }

    /// The actor this clock stamps for.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// The maximum drift in milliseconds.
    pub fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    /// The last timestamp issued or observed (not advancing the clock).
    pub fn last(&self) -> HlcTimestamp {
        HlcTimestamp::new(self.ms, self.counter, self.actor.clone())
    }

    /// How many remote timestamps were clamped so far (for metrics).
    pub fn clamped_count(&self) -> u64 {
        self.clamped
    }

    /// A new timestamp, strictly greater than every timestamp this clock issued or observed.
    pub fn now(&mut self, physical_ms: u64) -> HlcTimestamp {
        if physical_ms > self.ms {
            self.ms = physical_ms;
            self.counter = 0;
        } else {
            self.bump();
        }
        self.last()
    }

    /// Merges a timestamp seen on a remote change (call it for every change received, e.g. with
    /// [`observe_changes`](super::observe_changes)). Never moves the clock backwards.
    pub fn observe(&mut self, remote: &HlcTimestamp, physical_ms: u64) -> Observed {
        let limit = physical_ms.saturating_add(self.max_drift_ms);
        let (r_ms, r_counter, outcome) = if remote.ms > limit {
            self.clamped += 1;
            let excess_ms = remote.ms - limit;
            (limit, 0, Observed::Clamped { excess_ms })
        } else {
            (remote.ms, remote.counter, Observed::Merged)
        };
        let ms = self.ms.max(physical_ms).max(r_ms);
        let base = match (ms == self.ms, ms == r_ms) {
            (true, true) => Some(self.counter.max(r_counter)),
            (true, false) => Some(self.counter),
            (false, true) => Some(r_counter),
            (false, false) => None,
        };
        self.ms = ms;
        match base {
            Some(c) => {
                self.counter = c;
                self.bump();
            }
            None => self.counter = 0,
        }
        outcome
    }

    /// Advances the logical part by one (carrying into the milliseconds on overflow).
    fn bump(&mut self) {
        match self.counter.checked_add(1) {
            Some(c) => self.counter = c,
            None => {
                self.ms = self.ms.saturating_add(1);
                self.counter = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(b: u8) -> ActorId {
        ActorId::from([b; 16])
    }

    #[test]
    fn now_is_monotonic_when_physical_time_goes_back() {
        let mut c = Hlc::new(actor(1));
        let a = c.now(1_000);
        let b = c.now(500);
        let d = c.now(1_000);
        let e = c.now(1_001);
        assert!(a < b && b < d && d < e);
        assert_eq!((b.ms, b.counter), (1_000, 1));
        assert_eq!((e.ms, e.counter), (1_001, 0));
    }

    #[test]
    fn observe_adopts_a_remote_within_drift() {
        let mut c = Hlc::new(actor(1)).with_max_drift(60_000);
        let remote = HlcTimestamp::new(30_000, 7, actor(2));
        assert_eq!(c.observe(&remote, 1_000), Observed::Merged);
        let t = c.now(1_000);
        assert!(t > remote);
        assert_eq!((t.ms, t.counter), (30_000, 9));
    }

    #[test]
    fn observe_clamps_a_remote_beyond_drift_but_advances_logically() {
        let mut c = Hlc::new(actor(1)).with_max_drift(60_000);
        let before = c.now(1_000);
        let far = HlcTimestamp::new(10_000_000, 0, actor(2));
        assert_eq!(
            c.observe(&far, 1_000),
            Observed::Clamped {
                excess_ms: 10_000_000 - 61_000
            }
        );
        let after = c.now(1_000);
        assert!(after > before);
        assert_eq!(after.ms, 61_000, "bounded by physical + max drift");
        assert_eq!(c.clamped_count(), 1);
    }

    #[test]
    fn observe_of_an_older_timestamp_still_ticks() {
        let mut c = Hlc::new(actor(1));
        let t = c.now(5_000);
        c.observe(&HlcTimestamp::new(1, 0, actor(2)), 4_000);
        assert!(c.last() > t);
    }

    #[test]
    fn counter_overflow_carries_into_ms() {
        let mut c = Hlc::new(actor(1));
        c.observe(&HlcTimestamp::new(10, u32::MAX - 1, actor(2)), 10);
        let t = c.now(0);
        assert_eq!((t.ms, t.counter), (11, 0));
    }

    #[test]
    fn total_order_breaks_ties_by_actor() {
        let a = HlcTimestamp::new(5, 1, actor(1));
        let b = HlcTimestamp::new(5, 1, actor(2));
        assert!(a < b);
        assert_eq!(a.to_string(), format!("5:1@{}", actor(1)));
    }
}
