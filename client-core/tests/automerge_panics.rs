//! Changes that make Automerge 0.12 panic, found by `fuzz_sync.rs`, kept as regression cases.
//!
//! - A change that skips sequence numbers, or deletes without a predecessor: refused by the
//!   engine before Automerge sees it (an error to the sender; nothing applied, nothing stored).
//! - An operation naming a predecessor that does not exist: Automerge panics applying it; the
//!   panic is contained (the sender is closed, the document reloads from storage, nothing lost).
//!   On a document whose incoming changes are deferred (servers, large documents) the change is
//!   stored before Automerge applies it: the document then loads without that chunk.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use automerge::legacy::{Key, ObjectId, Op, OpId, OpType, SortedVec};
use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, Change, ExpandedChange, ROOT, ReadDoc};
use concord::core::{Core, CoreConfig, DeferApply, Effect, Event};
use concord::storage::{ChunkKey, MemoryStorage};
use concord::wire::{self, Message, PeerMetadata};
use concord::{ConnId, DocumentId, PeerId};

const DOC: DocumentId = DocumentId::from_bytes([9; 16]);

struct Server {
    core: Core,
    disk: MemoryStorage,
    errors: Vec<String>,
}

impl Server {
    fn new(defer: bool) -> Self {
        let mut am = Automerge::new();
        am.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "kept", 1).map(|_| ()))
            .unwrap();
        let disk = MemoryStorage::new();
        let bytes = am.save();
        disk.append_sync(&DOC, ChunkKey::of(&bytes), &bytes)
            .unwrap();
        let mut config = CoreConfig::new(PeerId::from("server"), Some("s".into()), 1);
        if defer {
            config = config.with_defer_apply(DeferApply {
                min_ops: 0,
                ..DeferApply::default()
            });
        }
        let mut s = Self {
            core: Core::new(config),
            disk,
            errors: Vec::new(),
        };
        s.join(ConnId(1), "attacker");
        s
    }

    fn join(&mut self, conn: ConnId, id: &str) {
        self.core.handle_accept(0, conn);
        let join = Message::Join {
            sender_id: PeerId::from(id),
            peer_metadata: Some(PeerMetadata::default()),
            supported_protocol_versions: vec!["1".into()],
        };
        self.core.handle_message(0, conn, &wire::encode(&join));
        self.drive();
    }

    fn drive(&mut self) {
        while let Some(e) = self.core.poll_effect() {
            match e {
                Effect::Storage { id, op } => {
                    let r = op.run_on(&self.disk);
                    self.core.handle_storage_result(0, id, r);
                }
                Effect::Event(Event::Protocol { error, .. }) => self.errors.push(error.to_string()),
                Effect::Close { conn, .. } => self.core.handle_disconnect(0, conn),
                _ => {}
            }
        }
    }

    /// Sends `change` in a sync message from connection 1.
    fn send(&mut self, change: &Change) {
        let mut msg = automerge::sync::Message::decode(
            &Automerge::new()
                .generate_sync_message(&mut automerge::sync::State::new())
                .unwrap()
                .encode(),
        )
        .unwrap();
        msg.changes = automerge::sync::ChunkList::from(vec![change.raw_bytes().to_vec()]);
        let m = Message::Sync {
            sender_id: PeerId::from("attacker"),
            target_id: PeerId::from("server"),
            document_id: DOC,
            data: msg.encode(),
        };
        self.core.handle_message(0, ConnId(1), &wire::encode(&m));
        self.drive();
    }

    /// The document as it now is, loaded if needed.
    fn value(&mut self, key: &str) -> Option<i64> {
        let _ = self.core.find(0, DOC);
        self.drive();
        self.core.materialize(&DOC).unwrap();
        self.drive();
        let d = self.core.document(&DOC)?;
        d.get(ROOT, key).unwrap().and_then(|(v, _)| v.as_i64())
    }
}

fn change(seq: u64, ops: Vec<Op>) -> Change {
    Change::from(ExpandedChange {
        operations: ops,
        actor_id: ActorId::random(),
        hash: None,
        seq,
        start_op: std::num::NonZeroU64::new(1).unwrap(),
        time: 0,
        message: None,
        deps: Vec::new(),
        extra_bytes: Vec::new(),
        author: None,
    })
}

fn op(action: OpType, pred: Vec<OpId>) -> Op {
    Op {
        action,
        obj: ObjectId::Root,
        key: Key::Map("x".into()),
        pred: SortedVec::from(pred),
        insert: false,
    }
}

fn put(v: i64) -> OpType {
    OpType::Put(automerge::ScalarValue::Int(v))
}

#[test]
fn a_change_that_skips_sequence_numbers_is_refused_before_automerge() {
    let mut s = Server::new(false);
    s.send(&change(3, vec![op(put(1), vec![])]));
    assert!(
        s.errors
            .iter()
            .any(|e| e.contains("previous change (seq 2) is not known")),
        "{:?}",
        s.errors
    );
    assert_eq!(s.core.stats().panics, 0);
    assert_eq!(s.value("x"), None);
    assert_eq!(s.value("kept"), Some(1));
}

#[test]
fn a_delete_without_predecessor_is_refused_before_automerge() {
    for defer in [false, true] {
        let mut s = Server::new(defer);
        s.send(&change(1, vec![op(OpType::Delete, vec![])]));
        assert!(
            s.errors
                .iter()
                .any(|e| e.contains("without naming what it deletes")),
            "{:?}",
            s.errors
        );
        assert_eq!(s.core.stats().panics, 0);
        assert_eq!(s.value("kept"), Some(1));
    }
}

#[test]
fn an_unknown_predecessor_panic_is_contained_and_nothing_is_lost() {
    let bogus = OpId::new(99, &ActorId::random());
    for defer in [false, true] {
        let mut s = Server::new(defer);
        s.send(&change(1, vec![op(put(5), vec![bogus.clone()])]));
        // Deferred documents apply later: make them apply now.
        let _ = s.core.materialize(&DOC);
        s.drive();
        assert!(
            s.core.stats().panics >= 1,
            "defer={defer}: Automerge panicked"
        );
        if !defer {
            // (Deferred, the change was accepted and stored before any panic could happen.)
            assert!(s.core.peer(ConnId(1)).is_none(), "the sender is closed");
        }
        assert_eq!(
            s.value("kept"),
            Some(1),
            "defer={defer}: the document reloads"
        );
        // A fresh peer is served.
        s.join(ConnId(2), "fresh");
        assert!(s.core.peer(ConnId(2)).is_some());
    }
}
