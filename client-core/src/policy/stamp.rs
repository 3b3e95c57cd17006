//! How HLC time rides on Automerge changes without touching the document's JSON shape.
//!
//! Every change made through the policy API is committed with [`CommitOptions`]:
//!
//! - **message** `concord-hlc:<ms>:<counter>` (optionally followed by a space and the app's own
//!   message). This is the authoritative stamp: it carries the full HLC (milliseconds *and* the
//!   logical counter), which the `time` field cannot hold.
//! - **time** `ms / 1000`: seconds since the epoch, the unit Automerge's own tools use for a
//!   change's time, so history viewers of other clients show a sensible date.
//!
//! The third part of the timestamp, the actor, is the change's own actor. Values in the document
//! stay plain JSON; the time a value was written is found by asking Automerge which change made
//! the operation ([`Automerge::hash_for_opid`]) and reading that change's metadata
//! ([`Automerge::get_change_meta_by_hash`]).
//!
//! Changes without a stamp (from a stock Automerge client, or committed without options) get a
//! fallback timestamp from their `time` field (seconds, or milliseconds when the number is too
//! large to be seconds) with counter 0; [`ChangeStamp::stamped`] is then false. A change with
//! neither sorts at time zero. Both are derived from the change's bytes, so every replica computes
//! the same timestamp.
//!
//! Why not `time` alone: seconds are too coarse for last-writer-wins, and milliseconds in `time`
//! would contradict the convention other clients read it with; neither holds the counter that
//! makes an HLC causal.

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{AutoCommit, Automerge, ChangeHash, ChangeMetadata, ObjId};

use super::hlc::{Hlc, HlcTimestamp, Observed};

/// The prefix of a stamped change's message.
pub const STAMP_PREFIX: &str = "concord-hlc:";

/// Time values at or above this are taken as milliseconds, below as seconds (year 5138 in
/// seconds; 1973 in milliseconds).
const MS_THRESHOLD: i64 = 100_000_000_000;

/// The commit options that stamp a change with `ts`.
pub fn commit_options(ts: &HlcTimestamp) -> CommitOptions {
    CommitOptions::default()
        .with_message(format!("{STAMP_PREFIX}{}:{}", ts.ms, ts.counter))
        .with_time(seconds(ts.ms))
}

/// The commit options that stamp a change with `ts` and keep the app's `message` after it.
pub fn commit_options_with_message(ts: &HlcTimestamp, message: &str) -> CommitOptions {
    CommitOptions::default()
        .with_message(format!("{STAMP_PREFIX}{}:{} {message}", ts.ms, ts.counter))
        .with_time(seconds(ts.ms))
}

fn seconds(ms: u64) -> i64 {
    i64::try_from(ms / 1000).unwrap_or(i64::MAX)
}

/// Parses `concord-hlc:<ms>:<counter>[ <rest>]` into `(ms, counter)`.
pub fn parse_stamp(message: &str) -> Option<(u64, u32)> {
    let rest = message.strip_prefix(STAMP_PREFIX)?;
    let stamp = rest.split(' ').next()?;
    let (ms, counter) = stamp.split_once(':')?;
    Some((ms.parse().ok()?, counter.parse().ok()?))
}

/// The app's part of a stamped message (or the whole message when unstamped).
pub fn app_message(message: &str) -> Option<&str> {
    match message.strip_prefix(STAMP_PREFIX) {
        Some(rest) => rest.split_once(' ').map(|(_, m)| m),
        None => Some(message),
    }
}

/// The timestamp of one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeStamp {
    /// The change.
    pub hash: ChangeHash,
    /// Its HLC time (the actor is the change's actor).
    pub hlc: HlcTimestamp,
    /// True when the change carries a `concord-hlc:` stamp; false for the `time` fallback.
    pub stamped: bool,
}

impl ChangeStamp {
    /// The stamp of a change, from its metadata.
    pub fn from_meta(meta: &ChangeMetadata<'_>) -> Self {
        let actor = meta.actor.clone().into_owned();
        let parsed = meta.message.as_deref().and_then(parse_stamp);
        let (hlc, stamped) = match parsed {
            Some((ms, counter)) => (HlcTimestamp::new(ms, counter, actor), true),
            None => {
                let t = meta.timestamp.max(0);
                let ms = if t >= MS_THRESHOLD {
                    t
                } else {
                    t.saturating_mul(1000)
                };
                let ms = u64::try_from(ms).unwrap_or(0);
                (HlcTimestamp::new(ms, 0, actor), false)
            }
        };
        Self {
            hash: meta.hash,
            hlc,
            stamped,
        }
    }
}

/// The stamp of the change `hash`, if the document has it.
pub fn change_stamp(doc: &Automerge, hash: &ChangeHash) -> Option<ChangeStamp> {
    doc.get_change_meta_by_hash(hash)
        .map(|m| ChangeStamp::from_meta(&m))
}

/// The stamp of the change that made operation `op` (a value's id from `get_all`).
pub fn op_stamp(doc: &Automerge, op: &ObjId) -> Option<ChangeStamp> {
    doc.hash_for_opid(op).and_then(|h| change_stamp(doc, &h))
}

/// Runs `f` in a transaction on `doc` and commits it stamped with `hlc.now(physical_ms)`.
/// `f`'s error rolls everything back (and leaves the clock untouched). Returns `f`'s value and the
/// new change's hash (`None` when `f` changed nothing).
///
/// With the sans-IO [`Core`](crate::core::Core), pass [`commit_options`] of `hlc.now(now)` to the
/// core's commit instead (see the policy module docs).
pub fn change<R, E>(
    doc: &mut Automerge,
    hlc: &mut Hlc,
    physical_ms: u64,
    f: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
) -> Result<(R, Option<ChangeHash>), E> {
    let mut tx = doc.transaction();
    match f(&mut tx) {
        Ok(value) => {
            if tx.pending_ops() == 0 {
                tx.rollback();
                return Ok((value, None));
            }
            let ts = hlc.now(physical_ms);
            let (hash, _) = tx.commit_with(commit_options(&ts));
            Ok((value, hash))
        }
        Err(e) => {
            tx.rollback();
            Err(e)
        }
    }
}

/// Commits an [`AutoCommit`]'s pending operations stamped with `hlc.now(physical_ms)`.
pub fn commit(doc: &mut AutoCommit, hlc: &mut Hlc, physical_ms: u64) -> Option<ChangeHash> {
    if doc.pending_ops() == 0 {
        return None;
    }
    let ts = hlc.now(physical_ms);
    doc.commit_with(commit_options(&ts))
}

/// Feeds `hlc` the stamps of every change of `doc` that is not an ancestor of `since` (pass `&[]`
/// at startup to resume after every stamp already in the document, or the heads before a sync to
/// observe what it brought). Returns how many were clamped (see [`Observed::Clamped`]).
pub fn observe_changes(
    hlc: &mut Hlc,
    doc: &Automerge,
    since: &[ChangeHash],
    physical_ms: u64,
) -> usize {
    let mut clamped = 0;
    for meta in doc.get_changes_meta(since) {
        let stamp = ChangeStamp::from_meta(&meta);
        // Unstamped changes are observed through their `time` fallback too (a lower bound of
        // when they were made), so whatever is written after seeing them sorts after them.
        if stamp.hlc.ms > 0 && hlc.observe(&stamp.hlc, physical_ms) != Observed::Merged {
            clamped += 1;
        }
    }
    clamped
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ROOT, ReadDoc};

    #[test]
    fn stamp_round_trips_through_the_change_message() {
        let actor = ActorId::from([3; 16]);
        let mut doc = Automerge::new().with_actor(actor.clone());
        let mut hlc = Hlc::new(actor.clone());
        let ((), hash) = change(&mut doc, &mut hlc, 1_700_000_000_123, |tx| {
            tx.put(ROOT, "k", 1)
        })
        .unwrap();
        let hash = hash.unwrap();
        let meta = doc.get_change_meta_by_hash(&hash).unwrap();
        assert_eq!(meta.message.as_deref(), Some("concord-hlc:1700000000123:0"));
        assert_eq!(meta.timestamp, 1_700_000_000);
        let (_, op) = doc.get(ROOT, "k").unwrap().unwrap();
        let stamp = op_stamp(&doc, &op).unwrap();
        assert!(stamp.stamped);
        assert_eq!(stamp.hlc, HlcTimestamp::new(1_700_000_000_123, 0, actor));
    }

    #[test]
    fn unstamped_changes_fall_back_to_time() {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(ROOT, "k", 1).unwrap();
        let (h, _) = tx.commit_with(CommitOptions::default().with_time(1_700_000_000));
        let s = change_stamp(&doc, &h.unwrap()).unwrap();
        assert!(!s.stamped);
        assert_eq!((s.hlc.ms, s.hlc.counter), (1_700_000_000_000, 0));
        let mut tx = doc.transaction();
        tx.put(ROOT, "k", 2).unwrap();
        let (h, _) = tx.commit_with(CommitOptions::default().with_time(1_700_000_000_555));
        assert_eq!(
            change_stamp(&doc, &h.unwrap()).unwrap().hlc.ms,
            1_700_000_000_555
        );
    }

    #[test]
    fn messages_parse_strictly() {
        assert_eq!(parse_stamp("concord-hlc:12:3"), Some((12, 3)));
        assert_eq!(parse_stamp("concord-hlc:12:3 add milk"), Some((12, 3)));
        assert_eq!(app_message("concord-hlc:12:3 add milk"), Some("add milk"));
        assert_eq!(app_message("concord-hlc:12:3"), None);
        assert_eq!(parse_stamp("concord-hlc:12"), None);
        assert_eq!(parse_stamp("concord-hlc:x:1"), None);
        assert_eq!(parse_stamp("hello"), None);
        let ts = HlcTimestamp::new(5_000, 2, ActorId::random());
        let opts = commit_options_with_message(&ts, "add milk");
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(ROOT, "k", 1).unwrap();
        let (h, _) = tx.commit_with(opts);
        let s = change_stamp(&doc, &h.unwrap()).unwrap();
        assert_eq!((s.hlc.ms, s.hlc.counter, s.stamped), (5_000, 2, true));
    }

    #[test]
    fn failed_or_empty_changes_leave_the_clock_alone() {
        let mut doc = Automerge::new();
        let mut hlc = Hlc::new(ActorId::random());
        let r: Result<((), _), &str> = change(&mut doc, &mut hlc, 10, |_| Err("no"));
        assert!(r.is_err());
        let ((), h) = change::<_, &str>(&mut doc, &mut hlc, 10, |_| Ok(())).unwrap();
        assert!(h.is_none());
        assert_eq!(hlc.last().ms, 0);
        assert!(doc.get_heads().is_empty());
    }

    #[test]
    fn observing_a_document_resumes_after_its_stamps() {
        let mut doc = Automerge::new();
        let mut writer = Hlc::new(ActorId::random());
        change(&mut doc, &mut writer, 50_000, |tx| tx.put(ROOT, "k", 1)).unwrap();
        let mut restarted = Hlc::new(ActorId::random());
        assert_eq!(observe_changes(&mut restarted, &doc, &[], 1_000), 0);
        assert!(restarted.now(1_000).ms >= 50_000);
    }
}
