//! Batched ingestion of incoming sync messages.
//!
//! With Automerge 0.12, one apply call on a large document costs time proportional to the size
//! of the objects it touches, whatever the number of changes it carries (21-27 ms for ONE change
//! on a 100k-op text; 32 ms for 1,000 changes in one call: see BENCHMARKS.md). Applying each
//! queued sync message with its own `receive_sync_message` therefore pays that cost once per
//! message. [`receive_batch`] pays it once per batch: the changes of every message are applied
//! with ONE Automerge call (`apply_changes` of the changes already parsed when the messages were
//! validated, so they are not parsed and hashed twice; `load_incremental` when a message carries a
//! whole-document chunk), then each message updates its peer's sync state with its changes
//! stripped, exactly as `receive_sync_message` would have after applying them.
//!
//! If the combined apply fails (one bad message poisons the batch), the messages are applied one
//! by one instead, so the error is attributed to the connection that sent it.

use std::collections::{BTreeMap, HashSet};

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, AutomergeError, Change, ChangeHash};

use super::document::PeerDoc;
use super::lazy::LazyDoc;
use crate::id::ConnId;

/// Each message's connection and outcome, in order.
pub(super) type Outcomes = Vec<(ConnId, Result<(), AutomergeError>)>;

/// A validated incoming message, waiting to be applied with the rest of its batch.
#[derive(Debug)]
pub(super) struct Staged {
    pub(super) conn: ConnId,
    pub(super) msg: sync::Message,
    /// The changes `msg` carries, parsed once when the message was validated.
    pub(super) parsed: Vec<Change>,
}

/// Applies the changes of every staged message with one Automerge call, then updates each
/// sender's sync state in arrival order. Returns each message's connection and outcome, in order.
pub(super) fn receive_batch(
    doc: &mut Automerge,
    peers: &mut BTreeMap<ConnId, PeerDoc>,
    staged: Vec<Staged>,
) -> Vec<(ConnId, Result<(), AutomergeError>)> {
    let carrying = staged.iter().filter(|s| !s.msg.changes.is_empty()).count();
    let read_only = staged
        .iter()
        .any(|s| peers.get(&s.conn).is_some_and(|p| p.sync.read_only));
    if carrying == 0 || read_only {
        // Nothing to apply (or a read-only state, whose changes Automerge must ignore).
        return one_by_one(doc, peers, staged);
    }
    let before = doc.get_heads();
    let all_parsed = staged.iter().all(|s| s.parsed.len() == s.msg.changes.len());
    let owns: Vec<HashSet<ChangeHash>> = staged
        .iter()
        .map(|s| s.parsed.iter().map(Change::hash).collect())
        .collect();
    let applied = if all_parsed {
        let changes: Vec<Change> = staged
            .iter()
            .flat_map(|s| s.parsed.iter().cloned())
            .collect();
        doc.apply_changes(changes)
    } else {
        let mut bytes = Vec::new();
        for s in &staged {
            for chunk in s.msg.changes.iter() {
                bytes.extend_from_slice(chunk);
            }
        }
        doc.load_incremental(&bytes).map(|_| ())
    };
    if applied.is_err() {
        // Changes already applied stay applied (Automerge skips duplicates), so replaying the
        // messages one by one is safe and attributes the error to its sender.
        return one_by_one(doc, peers, staged);
    }
    let after: HashSet<ChangeHash> = doc.get_heads().into_iter().collect();
    let before: HashSet<ChangeHash> = before.into_iter().collect();
    staged
        .into_iter()
        .zip(owns)
        .map(|(Staged { conn, mut msg, .. }, own)| {
            let Some(pd) = peers.get_mut(&conn) else {
                return (conn, Ok(()));
            };
            let had_changes = !msg.changes.is_empty();
            if !had_changes {
                return (conn, doc.receive_sync_message(&mut pd.sync, msg));
            }
            msg.changes = Vec::<Vec<u8>>::new().into();
            // What `receive_sync_message` does after applying the changes of one message:
            // shared heads advance by the new heads this message brought.
            pd.sync.shared_heads = advance_heads(&before, &after, &own, &pd.sync.shared_heads);
            // An empty message whose heads equal ours marks our heads as sent; a message that
            // carried changes never does.
            let last_sent = pd.sync.last_sent_heads.clone();
            let result = doc.receive_sync_message(&mut pd.sync, msg);
            pd.sync.last_sent_heads = last_sent;
            (conn, result)
        })
        .collect()
}

/// Deferred ingest (servers, see `lazy.rs`): the changes of every staged message join the
/// pending graph, then each sender's sync state is updated exactly as [`receive_batch`] updates
/// it. Gives the messages back, with nothing added, when the batch cannot be deferred.
pub(super) fn receive_deferred(
    doc: &mut LazyDoc,
    peers: &mut BTreeMap<ConnId, PeerDoc>,
    staged: Vec<Staged>,
    now: u64,
) -> Result<Outcomes, Vec<Staged>> {
    let deferrable = staged.iter().all(|s| {
        s.parsed.len() == s.msg.changes.len()
            && peers.get(&s.conn).is_none_or(|p| !p.sync.read_only)
    });
    let all: Vec<Change> = staged
        .iter()
        .flat_map(|s| s.parsed.iter().cloned())
        .collect();
    let before: HashSet<ChangeHash> = doc.get_heads().into_iter().collect();
    if !deferrable || !doc.try_defer(&all, now) {
        return Err(staged);
    }
    let after: HashSet<ChangeHash> = doc.get_heads().into_iter().collect();
    Ok(staged
        .into_iter()
        .map(
            |Staged {
                 conn,
                 mut msg,
                 parsed,
             }| {
                if let Some(pd) = peers.get_mut(&conn) {
                    let carried = !msg.changes.is_empty();
                    if carried {
                        let own: HashSet<ChangeHash> = parsed.iter().map(Change::hash).collect();
                        pd.sync.shared_heads =
                            advance_heads(&before, &after, &own, &pd.sync.shared_heads);
                        msg.changes = Vec::<Vec<u8>>::new().into();
                    }
                    doc.receive_state(&mut pd.sync, msg, carried);
                }
                (conn, Ok(()))
            },
        )
        .collect())
}

fn one_by_one(
    doc: &mut Automerge,
    peers: &mut BTreeMap<ConnId, PeerDoc>,
    staged: Vec<Staged>,
) -> Vec<(ConnId, Result<(), AutomergeError>)> {
    staged
        .into_iter()
        .map(|Staged { conn, msg, .. }| match peers.get_mut(&conn) {
            Some(pd) => (conn, doc.receive_sync_message(&mut pd.sync, msg)),
            None => (conn, Ok(())),
        })
        .collect()
}

/// Automerge's `advance_heads`, restricted to the heads this message's own changes produced
/// (the batch also holds other peers' changes, which this peer does not have).
fn advance_heads(
    before: &HashSet<ChangeHash>,
    after: &HashSet<ChangeHash>,
    own: &HashSet<ChangeHash>,
    shared: &[ChangeHash],
) -> Vec<ChangeHash> {
    let mut heads: Vec<ChangeHash> = after
        .iter()
        .filter(|h| !before.contains(h) && own.contains(h))
        .chain(shared.iter().filter(|h| after.contains(h)))
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    heads.sort();
    heads
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ROOT, ReadDoc};

    fn peer() -> PeerDoc {
        PeerDoc::new(None)
    }

    fn parsed(msg: &sync::Message) -> Vec<Change> {
        msg.changes
            .iter()
            .filter_map(|b| Change::try_from(b).ok())
            .collect()
    }

    /// A sync message carrying every change of `doc`.
    fn carrying_all(doc: &Automerge) -> sync::Message {
        let changes: Vec<Vec<u8>> = doc
            .get_changes(&[])
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        sync::Message {
            heads: doc.get_heads(),
            need: Vec::new(),
            have: Vec::new(),
            changes: changes.into(),
            flags: None,
            version: sync::MessageVersion::V1,
        }
    }

    /// Two peers typing into the same document: batched ingestion gives the same document and
    /// the same sync states (and so the same replies) as one `receive_sync_message` per message.
    #[test]
    fn batch_matches_one_by_one() {
        let mut base = Automerge::new().with_actor(ActorId::from([1u8; 16]));
        let mut tx = base.transaction();
        tx.put(ROOT, "x", 0).unwrap();
        tx.commit();
        let mut writers: Vec<(Automerge, sync::State)> = (2u8..4)
            .map(|a| {
                (
                    base.fork().with_actor(ActorId::from([a; 16])),
                    sync::State::new(),
                )
            })
            .collect();
        let mut batched = (base.clone(), BTreeMap::new());
        let mut single = (base.clone(), BTreeMap::new());
        for round in 0..3 {
            let mut staged_b = Vec::new();
            let mut staged_s = Vec::new();
            for (i, (w, ws)) in writers.iter_mut().enumerate() {
                let mut tx = w.transaction();
                tx.put(ROOT, format!("k{i}"), round).unwrap();
                tx.commit();
                let conn = ConnId(i as u64);
                let Some(msg) = w.generate_sync_message(ws) else {
                    continue;
                };
                batched.1.entry(conn).or_insert_with(peer);
                single.1.entry(conn).or_insert_with(peer);
                let p = parsed(&msg);
                staged_b.push(Staged {
                    conn,
                    msg: msg.clone(),
                    parsed: p.clone(),
                });
                staged_s.push(Staged {
                    conn,
                    msg,
                    parsed: p,
                });
            }
            for (_, r) in receive_batch(&mut batched.0, &mut batched.1, staged_b) {
                r.unwrap();
            }
            for (_, r) in one_by_one(&mut single.0, &mut single.1, staged_s) {
                r.unwrap();
            }
            assert_eq!(batched.0.get_heads(), single.0.get_heads());
            for (i, (w, ws)) in writers.iter_mut().enumerate() {
                let conn = ConnId(i as u64);
                let (b, s) = (&batched.1[&conn].sync, &single.1[&conn].sync);
                assert_eq!(b.shared_heads, s.shared_heads);
                assert_eq!(b.their_heads, s.their_heads);
                assert_eq!(b.last_sent_heads, s.last_sent_heads);
                // The reply goes back to the writer, so the next round starts in sync.
                let mut b = b.clone();
                let reply = batched.0.generate_sync_message(&mut b).unwrap();
                batched.1.get_mut(&conn).unwrap().sync = b;
                let mut s = s.clone();
                single.0.generate_sync_message(&mut s).unwrap();
                single.1.get_mut(&conn).unwrap().sync = s;
                w.receive_sync_message(ws, reply).unwrap();
            }
        }
        assert_eq!(
            batched
                .0
                .get(ROOT, "k1")
                .unwrap()
                .unwrap()
                .0
                .as_scalar()
                .and_then(automerge::ScalarValue::as_i64),
            Some(2)
        );
    }

    /// A batch holding a change that cannot be applied falls back to one call per message and
    /// reports the error against its sender only.
    #[test]
    fn bad_message_is_attributed() {
        let mut doc = Automerge::new();
        let mut good = Automerge::new().with_actor(ActorId::from([2u8; 16]));
        let mut tx = good.transaction();
        tx.put(ROOT, "a", 1).unwrap();
        tx.commit();
        let good_msg = carrying_all(&good);
        // Same actor and sequence number as `good`'s change, different content: refused.
        let mut evil = Automerge::new().with_actor(ActorId::from([2u8; 16]));
        let mut tx = evil.transaction();
        tx.put(ROOT, "b", 1).unwrap();
        tx.commit();
        let bad_msg = carrying_all(&evil);
        let mut peers = BTreeMap::new();
        peers.insert(ConnId(1), peer());
        peers.insert(ConnId(2), peer());
        let out = receive_batch(
            &mut doc,
            &mut peers,
            vec![
                Staged {
                    conn: ConnId(1),
                    parsed: parsed(&good_msg),
                    msg: good_msg,
                },
                Staged {
                    conn: ConnId(2),
                    parsed: parsed(&bad_msg),
                    msg: bad_msg,
                },
            ],
        );
        assert!(out[0].1.is_ok());
        assert!(out[1].1.is_err());
        assert!(doc.get(ROOT, "a").unwrap().is_some());
    }
}
