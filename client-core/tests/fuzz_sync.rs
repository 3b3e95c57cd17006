//! Structure-aware fuzzing of sync messages against a live core whose documents are not empty,
//! so Automerge's real decoder and its sync code (Bloom filter probes included) run behind the
//! engine's checks: random heads and needs (known and unknown hashes), `have` summaries with
//! arbitrary Bloom filter parameters (zero or huge bits per entry, billions of probes, short or
//! long bit arrays), and changes that are valid, mutated or operation bombs.
//!
//! The property: no panic reaches the caller; a structure the engine knows Automerge mishandles
//! is refused before Automerge sees it; where Automerge still panics (op-level shapes the engine
//! cannot check without applying: see `automerge_panics.rs`), the panic is contained: the
//! sender's connection is closed, the document reloads from storage with nothing lost, and a
//! fresh peer is served. proptest keeps failing inputs in `fuzz_sync.proptest-regressions` and
//! replays them first, so a crasher stays a regression case. `PROPTEST_CASES=100000` runs longer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ROOT, ReadDoc};
use concord::core::{Core, CoreConfig, Effect};
use concord::storage::MemoryStorage;
use concord::wire::{self, Message, PeerMetadata};
use concord::{ConnId, DocumentId, PeerId};
use proptest::prelude::*;

fn drive(core: &mut Core, disk: &MemoryStorage) {
    while let Some(e) = core.poll_effect() {
        match e {
            Effect::Storage { id, op } => {
                let r = op.run_on(disk);
                core.handle_storage_result(0, id, r);
            }
            Effect::Close { conn, .. } => core.handle_disconnect(0, conn),
            _ => {}
        }
    }
}

/// A server core holding a non-empty document, with one established client connection.
fn server(doc: DocumentId, am: &Automerge) -> (Core, MemoryStorage) {
    let mut core = Core::new(CoreConfig::new(PeerId::from("server"), Some("s".into()), 1));
    let disk = MemoryStorage::new();
    let bytes = am.save();
    disk.append_sync(&doc, concord::storage::ChunkKey::of(&bytes), &bytes)
        .unwrap();
    core.handle_accept(0, ConnId(1));
    let join = Message::Join {
        sender_id: PeerId::from("fuzzer"),
        peer_metadata: Some(PeerMetadata::default()),
        supported_protocol_versions: vec!["1".into()],
    };
    core.handle_message(0, ConnId(1), &wire::encode(&join));
    drive(&mut core, &disk);
    (core, disk)
}

fn leb(out: &mut Vec<u8>, v: u64) {
    leb128::write::unsigned(out, v).unwrap();
}

fn hashes(out: &mut Vec<u8>, hs: &[[u8; 32]]) {
    leb(out, hs.len() as u64);
    for h in hs {
        out.extend_from_slice(h);
    }
}

/// A `have` summary: last-sync hashes and a Bloom filter with arbitrary parameters.
#[derive(Debug, Clone)]
struct Have {
    last_sync: Vec<[u8; 32]>,
    entries: u64,
    bits_per_entry: u64,
    probes: u64,
    bits: Vec<u8>,
}

/// Encodes a v1 sync message by hand, so every field can hold what a hostile peer puts there.
fn encode(heads: &[[u8; 32]], need: &[[u8; 32]], haves: &[Have], changes: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0x42];
    hashes(&mut out, heads);
    hashes(&mut out, need);
    leb(&mut out, haves.len() as u64);
    for h in haves {
        hashes(&mut out, &h.last_sync);
        let mut bloom = Vec::new();
        if h.entries > 0 || !h.bits.is_empty() {
            leb(&mut bloom, h.entries);
            leb(&mut bloom, h.bits_per_entry);
            leb(&mut bloom, h.probes);
            bloom.extend_from_slice(&h.bits);
        }
        leb(&mut out, bloom.len() as u64);
        out.extend_from_slice(&bloom);
    }
    leb(&mut out, changes.len() as u64);
    for c in changes {
        leb(&mut out, c.len() as u64);
        out.extend_from_slice(c);
    }
    out
}

fn document(edits: u8) -> Automerge {
    let mut am = Automerge::new();
    for i in 0..edits.max(1) {
        am.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(ROOT, format!("k{i}"), i64::from(i)).map(|_| ())
        })
        .unwrap();
    }
    am
}

fn bloom_param() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        1u64..16,
        Just(10),
        Just(7),
        Just(1 << 30),
        Just(u64::from(u32::MAX)),
        any::<u64>(),
    ]
}

fn have() -> impl Strategy<Value = Have> {
    (
        proptest::collection::vec(any::<[u8; 32]>(), 0..3),
        prop_oneof![Just(0u64), 1u64..64, any::<u32>().prop_map(u64::from)],
        bloom_param(),
        bloom_param(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(last_sync, entries, bits_per_entry, probes, bits)| Have {
            last_sync,
            entries,
            bits_per_entry,
            probes,
            bits,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hostile_sync_structures_never_escape_the_engine(
        edits in 1u8..20,
        known_heads in any::<bool>(),
        random_heads in proptest::collection::vec(any::<[u8; 32]>(), 0..3),
        need in proptest::collection::vec(any::<[u8; 32]>(), 0..3),
        haves in proptest::collection::vec(have(), 0..3),
        change_picks in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 0..4),
        request in any::<bool>(),
    ) {
        let doc = DocumentId::from_bytes([7; 16]);
        let am = document(edits);
        let (mut core, disk) = server(doc, &am);
        let mut heads: Vec<[u8; 32]> = random_heads;
        if known_heads {
            heads.extend(am.get_heads().iter().map(|h: &ChangeHash| h.0));
        }
        // Changes: valid ones of another replica, possibly with a byte flipped.
        let mut other = Automerge::new();
        let mut changes = Vec::new();
        for (n, at, flip) in change_picks {
            other
                .transact::<_, _, automerge::AutomergeError>(|tx| {
                    tx.put(ROOT, format!("o{n}"), i64::from(n)).map(|_| ())
                })
                .unwrap();
            let mut c = other.get_last_local_change().unwrap().raw_bytes().to_vec();
            let i = at % c.len();
            c[i] ^= flip;
            changes.push(c);
        }
        let data = encode(&heads, &need, &haves, &changes);
        let sid = PeerId::from("server");
        let msg = if request {
            Message::Request { sender_id: PeerId::from("fuzzer"), target_id: sid, document_id: doc, data }
        } else {
            Message::Sync { sender_id: PeerId::from("fuzzer"), target_id: sid, document_id: doc, data }
        };
        core.handle_message(0, ConnId(1), &wire::encode(&msg));
        drive(&mut core, &disk);
        if core.stats().panics > 0 {
            prop_assert!(core.peer(ConnId(1)).is_none(), "a contained panic closes its sender");
        }
        // A fresh peer is served the document, with everything it held before.
        core.handle_accept(0, ConnId(2));
        let join = Message::Join {
            sender_id: PeerId::from("fresh"),
            peer_metadata: Some(PeerMetadata::default()),
            supported_protocol_versions: vec!["1".into()],
        };
        core.handle_message(0, ConnId(2), &wire::encode(&join));
        let honest = Automerge::new().generate_sync_message(&mut automerge::sync::State::new()).unwrap();
        let m = Message::Request {
            sender_id: PeerId::from("fresh"),
            target_id: PeerId::from("server"),
            document_id: doc,
            data: honest.encode(),
        };
        core.handle_message(0, ConnId(2), &wire::encode(&m));
        drive(&mut core, &disk);
        prop_assert!(core.peer(ConnId(2)).is_some(), "the fresh peer is still connected");
        core.materialize(&doc).unwrap();
        let d = core.document(&doc).unwrap();
        for i in 0..edits.max(1) {
            let v = d.get(ROOT, format!("k{i}")).unwrap().and_then(|(v, _)| v.as_i64());
            prop_assert_eq!(v, Some(i64::from(i)), "nothing the document held is lost");
        }
    }
}
