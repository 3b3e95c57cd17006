//! Fuzzing on stable with proptest: the wire decoder, sync-message ingestion by a live core, and
//! loading stored bytes. The property everywhere: no panic, typed errors, the core stays usable.
//! proptest keeps every failing input in `fuzz.proptest-regressions` and replays it first on
//! later runs, so crashers stay regression cases. `PROPTEST_CASES=100000` runs longer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use concord::core::{Core, CoreConfig, Effect, Event};
use concord::storage::{ChunkKey, MemoryStorage};
use concord::wire::{self, Message, PeerMetadata};
use concord::{ConnId, DocumentId, PeerId};
use proptest::prelude::*;

fn drive(core: &mut Core, disk: &MemoryStorage) -> (Vec<Message>, Vec<Event>) {
    let (mut sent, mut events) = (Vec::new(), Vec::new());
    while let Some(e) = core.poll_effect() {
        match e {
            Effect::Send { bytes, .. } => sent.push(wire::decode(&bytes, usize::MAX).unwrap()),
            Effect::Storage { id, op } => {
                let r = op.run_on(disk);
                core.handle_storage_result(0, id, r);
            }
            Effect::Event(ev) => events.push(ev),
            _ => {}
        }
    }
    (sent, events)
}

/// A server core with one established client connection.
fn server() -> (Core, MemoryStorage, PeerId) {
    let mut core = Core::new(CoreConfig::new(PeerId::from("server"), Some("s".into()), 1));
    let disk = MemoryStorage::new();
    core.handle_accept(0, ConnId(1));
    let join = Message::Join {
        sender_id: PeerId::from("fuzzer"),
        peer_metadata: Some(PeerMetadata::default()),
        supported_protocol_versions: vec!["1".into()],
    };
    core.handle_message(0, ConnId(1), &wire::encode(&join));
    let _ = drive(&mut core, &disk);
    (core, disk, PeerId::from("server"))
}

fn valid_sync_data() -> Vec<u8> {
    let mut am = Automerge::new();
    am.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "k", "v").map(|_| ()))
        .unwrap();
    am.generate_sync_message(&mut automerge::sync::State::new())
        .unwrap()
        .encode()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = wire::decode(&bytes, 1 << 20);
    }

    #[test]
    fn decoder_never_panics_on_mutated_messages(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let msg = Message::Sync { sender_id: PeerId::from("a"), target_id: PeerId::from("b"), document_id: DocumentId::from_bytes([1; 16]), data: valid_sync_data() };
        let mut bytes = wire::encode(&msg);
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] ^= b;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = wire::decode(&bytes, 1 << 20);
    }

    #[test]
    fn a_live_core_survives_arbitrary_frames_and_sync_data(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..256), 1..8),
        datas in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..256), 1..8),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
    ) {
        let (mut core, disk, sid) = server();
        for f in &frames {
            core.handle_message(0, ConnId(1), f);
        }
        let doc = DocumentId::from_bytes([2; 16]);
        // Arbitrary bytes, and mutations of a valid sync message, as `data`.
        let mut mutated = valid_sync_data();
        for (at, b) in flips {
            let i = at % mutated.len();
            mutated[i] ^= b;
        }
        for data in datas.into_iter().chain(std::iter::once(mutated)) {
            let m = Message::Sync { sender_id: PeerId::from("fuzzer"), target_id: sid.clone(), document_id: doc, data };
            core.handle_message(0, ConnId(1), &wire::encode(&m));
            let _ = drive(&mut core, &disk);
        }
        // The connection still works: a valid request for another document is answered.
        let other = DocumentId::from_bytes([3; 16]);
        let m = Message::Request { sender_id: PeerId::from("fuzzer"), target_id: sid, document_id: other, data: Automerge::new().generate_sync_message(&mut automerge::sync::State::new()).unwrap().encode() };
        core.handle_message(0, ConnId(1), &wire::encode(&m));
        let (sent, _) = drive(&mut core, &disk);
        let answered = sent.iter().any(|m| matches!(m, Message::DocUnavailable { document_id, .. } if *document_id == other));
        let closed = core.peer(ConnId(1)).is_none();
        prop_assert!(answered || closed, "the connection is either still answering or was closed for too many errors");
    }

    #[test]
    fn loading_arbitrary_stored_bytes_fails_cleanly(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..256), 1..4),
    ) {
        let disk = MemoryStorage::new();
        let doc = DocumentId::from_bytes([4; 16]);
        for c in &chunks {
            disk.append_sync(&doc, ChunkKey::of(c), c).unwrap();
        }
        let mut core = Core::new(CoreConfig::new(PeerId::from("me"), Some("me".into()), 2));
        let _ = core.find(0, doc);
        let (_, events) = drive(&mut core, &disk);
        let resolved = events.iter().any(|e| matches!(e, Event::FindResolved { .. }));
        prop_assert!(resolved, "find resolves (found, unavailable or failed) whatever the stored bytes");
        // A failed document is quarantined; the core keeps serving others.
        let fresh = DocumentId::from_bytes([5; 16]);
        core.create(0, fresh).unwrap();
        let _ = drive(&mut core, &disk);
        prop_assert!(core.document(&fresh).is_some());
    }
}
