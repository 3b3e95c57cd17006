//! The deferred path against Automerge: the same exchanges through a server that applies at
//! once (`receive_batch` + Automerge's sync) and one that defers (`receive_deferred` +
//! [`LazyDoc`]) must produce byte-identical messages, sync states and heads.

use std::collections::BTreeMap;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ChangeHash, ObjType, ROOT, ReadDoc};
use proptest::prelude::*;

use super::*;
use crate::core::document::PeerDoc;
use crate::core::ingest::{Staged, receive_batch, receive_deferred};
use crate::id::ConnId;

const CLIENTS: usize = 3;

#[derive(Debug, Clone)]
enum Action {
    Type(usize, usize),
    ClientSend(usize),
    Pump,
    ServerSend(usize),
    Flush,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..CLIENTS, 0..1000usize).prop_map(|(c, p)| Action::Type(c, p)),
        3 => (0..CLIENTS).prop_map(Action::ClientSend),
        2 => Just(Action::Pump),
        3 => (0..CLIENTS).prop_map(Action::ServerSend),
        1 => Just(Action::Flush),
    ]
}

struct World {
    clients: Vec<(Automerge, sync::State)>,
    reference: (Automerge, BTreeMap<ConnId, PeerDoc>),
    lazy: (LazyDoc, BTreeMap<ConnId, PeerDoc>),
    inbox: Vec<(ConnId, sync::Message)>,
    /// Messages the deferred path produced while changes stayed pending.
    deferred_answers: usize,
}

/// A message without its changes. Changes are compared by their effect on the recipient: any
/// causal order is valid (the deferred path keeps arrival order, Automerge the order it applied
/// them in), and a change's bytes may be compressed or not; which changes are sent is pinned
/// by comparing `sent_hashes`.
fn bare(m: &sync::Message) -> Vec<u8> {
    sync::Message {
        changes: Vec::<Vec<u8>>::new().into(),
        ..m.clone()
    }
    .encode()
}

fn text(doc: &Automerge) -> automerge::ObjId {
    doc.get(ROOT, "t").unwrap().unwrap().1
}

impl World {
    fn new() -> Self {
        let mut base = Automerge::new().with_actor(ActorId::from([1u8; 16]));
        let mut tx = base.transaction();
        let t = tx.put_object(ROOT, "t", ObjType::Text).unwrap();
        tx.splice_text(&t, 0, 0, "hello world").unwrap();
        tx.commit();
        let clients = (0..CLIENTS)
            .map(|i| {
                let actor = ActorId::from([2 + i as u8; 16]);
                (base.fork().with_actor(actor), sync::State::new())
            })
            .collect();
        let peers = || {
            (0..CLIENTS)
                .map(|i| (ConnId(i as u64), PeerDoc::new(None)))
                .collect::<BTreeMap<_, _>>()
        };
        Self {
            clients,
            reference: (base.clone(), peers()),
            lazy: (LazyDoc::new(base), peers()),
            inbox: Vec::new(),
            deferred_answers: 0,
        }
    }

    fn step(&mut self, a: &Action, now: u64) {
        match *a {
            Action::Type(c, p) => {
                let doc = &mut self.clients[c].0;
                let t = text(doc);
                let at = p % (doc.length(&t) + 1);
                let mut tx = doc.transaction();
                tx.splice_text(&t, at, 0, "x").unwrap();
                tx.commit();
            }
            Action::ClientSend(c) => {
                let (doc, st) = &mut self.clients[c];
                if let Some(m) = doc.generate_sync_message(st) {
                    self.inbox.push((ConnId(c as u64), m));
                }
            }
            Action::Pump => self.pump(now),
            Action::ServerSend(c) => self.server_send(c),
            Action::Flush => self.lazy.0.flush().unwrap(),
        }
    }

    fn staged(&self) -> Vec<Staged> {
        self.inbox
            .iter()
            .map(|(conn, msg)| Staged {
                conn: *conn,
                msg: msg.clone(),
                parsed: msg
                    .changes
                    .iter()
                    .filter_map(|b| automerge::Change::try_from(b).ok())
                    .collect(),
            })
            .collect()
    }

    fn pump(&mut self, now: u64) {
        let staged = self.staged();
        let copy = self.staged();
        self.inbox.clear();
        for (_, r) in receive_batch(&mut self.reference.0, &mut self.reference.1, copy) {
            r.unwrap();
        }
        let (lazy, peers) = &mut self.lazy;
        let results = match receive_deferred(lazy, peers, staged, now) {
            Ok(r) => r,
            Err(staged) => receive_batch(lazy.materialized().unwrap(), peers, staged),
        };
        for (_, r) in results {
            r.unwrap();
        }
        self.compare();
    }

    fn server_send(&mut self, c: usize) {
        let conn = ConnId(c as u64);
        let (am, peers) = &mut self.reference;
        let expected = am.generate_sync_message(&mut peers.get_mut(&conn).unwrap().sync);
        let (lazy, peers) = &mut self.lazy;
        let got = lazy
            .generate_sync_message(&mut peers.get_mut(&conn).unwrap().sync)
            .unwrap();
        assert_eq!(
            got.as_ref().map(bare),
            expected.as_ref().map(bare),
            "message to client {c}"
        );
        if let (Some(g), Some(e)) = (&got, &expected) {
            let (doc, st) = &self.clients[c];
            let (mut a, mut sa) = (doc.clone(), st.clone());
            a.receive_sync_message(&mut sa, g.clone()).unwrap();
            let (mut b, mut sb) = (doc.clone(), st.clone());
            b.receive_sync_message(&mut sb, e.clone()).unwrap();
            assert_eq!(a.get_heads(), b.get_heads(), "client {c} after the message");
            assert_eq!(sa.encode(), sb.encode());
            assert_eq!(sa.shared_heads, sb.shared_heads);
        }
        if got.is_some() && lazy.has_pending() {
            self.deferred_answers += 1;
        }
        self.compare();
        if let Some(m) = expected {
            let (doc, st) = &mut self.clients[c];
            doc.receive_sync_message(st, m).unwrap();
        }
    }

    fn compare(&self) {
        assert_eq!(self.lazy.0.get_heads(), self.reference.0.get_heads());
        for (conn, r) in &self.reference.1 {
            let (l, r) = (&self.lazy.1[conn].sync, &r.sync);
            assert_eq!(l.shared_heads, r.shared_heads, "shared heads of {conn:?}");
            assert_eq!(
                l.last_sent_heads, r.last_sent_heads,
                "last sent of {conn:?}"
            );
            assert_eq!(l.their_heads, r.their_heads, "their heads of {conn:?}");
            assert_eq!(l.their_need, r.their_need, "their need of {conn:?}");
            assert_eq!(l.sent_hashes, r.sent_hashes, "sent hashes of {conn:?}");
            assert_eq!(l.in_flight, r.in_flight, "in flight of {conn:?}");
            assert_eq!(l.have_responded, r.have_responded);
            assert_eq!(l.their_capabilities, r.their_capabilities);
        }
    }

    /// Everyone exchanges until quiet; then every copy holds the same text.
    fn settle(&mut self, now: u64) {
        for _ in 0..20 {
            for c in 0..CLIENTS {
                self.step(&Action::ClientSend(c), now);
            }
            self.pump(now);
            for c in 0..CLIENTS {
                self.server_send(c);
            }
        }
        self.lazy.0.flush().unwrap();
        let want = self.reference.0.text(text(&self.reference.0)).unwrap();
        let lazy = self.lazy.0.applied();
        assert_eq!(lazy.text(text(lazy)).unwrap(), want);
        for (doc, _) in &self.clients {
            assert_eq!(doc.text(text(doc)).unwrap(), want);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn deferred_sync_matches_automerge(actions in prop::collection::vec(action(), 1..120)) {
        let mut w = World::new();
        for (t, a) in actions.iter().enumerate() {
            w.step(a, t as u64);
        }
        w.settle(10_000);
    }
}

/// Sustained typing by two clients while a third reads: the deferred path answers (changes stay
/// pending) and its messages equal Automerge's.
#[test]
fn typing_is_answered_without_applying() {
    let mut w = World::new();
    // First contact (nothing pending yet: Automerge answers), then steady typing.
    for round in 0..40u64 {
        for c in 0..2 {
            w.step(&Action::Type(c, round as usize * 7), round);
        }
        for c in 0..CLIENTS {
            w.step(&Action::ClientSend(c), round);
        }
        w.pump(round);
        for c in 0..CLIENTS {
            w.server_send(c);
        }
    }
    assert!(w.lazy.0.has_pending(), "typing left changes pending");
    assert!(
        w.deferred_answers >= 40,
        "deferred answers: {}",
        w.deferred_answers
    );
    w.settle(1_000);
}

#[test]
fn invalid_changes_are_not_deferred() {
    let mut base = Automerge::new().with_actor(ActorId::from([1u8; 16]));
    base.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "a", 1).map(|_| ()))
        .unwrap();
    let mut lazy = LazyDoc::new(base.clone());
    // An orphan (its dependency is unknown) is not deferred.
    let mut other = base.fork().with_actor(ActorId::from([2u8; 16]));
    other
        .transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "b", 1).map(|_| ()))
        .unwrap();
    let first = other.get_heads();
    other
        .transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "b", 2).map(|_| ()))
        .unwrap();
    let second = other.get_changes(&first);
    assert!(!lazy.try_defer(&second, 0));
    assert!(!lazy.has_pending());
    // A reused (actor, seq) with different content is not deferred.
    let mut twin = base.fork().with_actor(ActorId::from([1u8; 16]));
    twin.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "c", 1).map(|_| ()))
        .unwrap();
    let mut evil = base.fork().with_actor(ActorId::from([1u8; 16]));
    evil.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "c", 2).map(|_| ()))
        .unwrap();
    let good = twin.get_changes(&base.get_heads());
    assert!(lazy.try_defer(&good, 0));
    let bad = evil.get_changes(&base.get_heads());
    assert!(!lazy.try_defer(&bad, 0));
    // What was deferred commits (save_after) and applies (flush) as Automerge would.
    let bytes = lazy.save_after(&base.get_heads());
    let mut check = base.clone();
    check.load_incremental(&bytes).unwrap();
    assert_eq!(check.get_heads(), lazy.get_heads());
    lazy.flush().unwrap();
    assert_eq!(lazy.applied().get_heads(), check.get_heads());
}

#[test]
fn coverage_follows_ancestry() -> Result<(), automerge::AutomergeError> {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "a", 1)?;
    tx.commit();
    let first = doc.get_heads();
    let mut tx = doc.transaction();
    tx.put(ROOT, "a", 2)?;
    tx.commit();
    let second = doc.get_heads();
    // Applied, and the same again with the second change pending.
    let mut base = Automerge::new();
    base.load_incremental(&doc.save_after(&[]))?;
    let mut pending = LazyDoc::new(base.fork_at(&first)?);
    assert!(pending.try_defer(&doc.get_changes(&first), 0));
    assert!(pending.has_pending());
    let lazy = LazyDoc::new(doc);
    for l in [&lazy, &pending] {
        assert!(l.covers(&second, &first), "descendant covers ancestor");
        assert!(
            !l.covers(&first, &second),
            "ancestor does not cover descendant"
        );
        assert!(!l.covers(&[], &first));
        assert!(
            !l.covers(&[ChangeHash([7; 32])], &first),
            "unknown heads prove nothing"
        );
    }
    Ok(())
}
