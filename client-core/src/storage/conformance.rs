//! The storage conformance suite: every backend runs [`run`] in its tests.
//!
//! ```
//! # futures::executor::block_on(async {
//! let storage = concord::storage::MemoryStorage::new();
//! concord::storage::conformance::run(&storage).await;
//! # });
//! ```
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ReadDoc};

use super::{ChunkKey, ChunkKind, Storage, StoredDocument, WriteOp};
use crate::core::StorageOp;
use crate::id::{DocumentId, StorageId};

/// The document [`run_failing_batch`] expects every write to fail for.
pub const POISONED: DocumentId = DocumentId::from_bytes([0xCF; 16]);

fn keys_of(stored: &StoredDocument) -> Vec<ChunkKey> {
    stored.chunks.iter().map(|c| c.key).collect()
}

fn ok<T>(r: super::StorageResult<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("storage conformance: {what} failed: {e}"),
    }
}

fn reload(stored: &StoredDocument) -> Automerge {
    let mut doc = Automerge::new();
    for c in &stored.chunks {
        doc.load_incremental(&c.bytes).expect("stored chunk loads");
    }
    doc
}

/// Runs every conformance check against `s`. Panics with a message naming the failed check.
pub async fn run<S: Storage>(s: &S) {
    let doc = DocumentId::from_bytes([0xC0; 16]);
    let other = DocumentId::from_bytes([0xC1; 16]);

    // Unknown documents load empty.
    assert!(
        ok(s.load(&doc).await, "load unknown").is_empty(),
        "unknown doc must load empty"
    );

    // Appends load back in order, and appending the same key twice is a no-op.
    let mut am = Automerge::new();
    let mut keys = Vec::new();
    let mut heads = Vec::new();
    for i in 0..5i64 {
        let mut tx = am.transaction();
        tx.put(ROOT, "n", i).unwrap();
        tx.commit();
        let bytes = am.save_after(&heads);
        heads = am.get_heads();
        let key = ChunkKey::of(&bytes);
        ok(s.append(&doc, key, &bytes).await, "append");
        ok(s.append(&doc, key, &bytes).await, "append duplicate");
        keys.push(key);
    }
    let stored = ok(s.load(&doc).await, "load");
    assert_eq!(
        stored.chunks.len(),
        5,
        "duplicate appends must not add chunks"
    );
    assert_eq!(
        stored.chunks.iter().map(|c| c.key).collect::<Vec<_>>(),
        keys,
        "increments must load in insertion order"
    );
    assert!(
        stored
            .chunks
            .iter()
            .all(|c| c.kind == ChunkKind::Incremental)
    );
    assert_eq!(reload(&stored).get_heads(), am.get_heads());

    // Compaction replaces exactly the covered chunks with a snapshot.
    let mut tx = am.transaction();
    tx.put(ROOT, "late", "after").unwrap();
    tx.commit();
    let late = am.save_after(&heads);
    let late_key = ChunkKey::of(&late);
    ok(s.append(&doc, late_key, &late).await, "append late");
    let snap = Automerge::load(
        &stored
            .chunks
            .iter()
            .flat_map(|c| c.bytes.clone())
            .collect::<Vec<_>>(),
    )
    .unwrap()
    .save();
    let snap_key = ChunkKey::of(&snap);
    ok(s.compact(&doc, snap_key, &snap, &keys).await, "compact");
    let stored = ok(s.load(&doc).await, "load after compact");
    assert_eq!(
        stored.chunks.len(),
        2,
        "compaction must delete exactly the covered chunks"
    );
    assert_eq!(
        stored.chunks[0].kind,
        ChunkKind::Snapshot,
        "snapshots load first"
    );
    assert_eq!(stored.chunks[0].key, snap_key);
    assert_eq!(
        stored.chunks[1].key, late_key,
        "uncovered increments survive compaction"
    );
    let reloaded = reload(&stored);
    assert_eq!(reloaded.get_heads(), am.get_heads());
    assert!(reloaded.get(ROOT, "late").unwrap().is_some());

    // Compacting again (a retry after a crash) is harmless; a second snapshot covers the first.
    ok(
        s.compact(&doc, snap_key, &snap, &keys).await,
        "compact retry",
    );
    let full = am.save();
    let full_key = ChunkKey::of(&full);
    ok(
        s.compact(&doc, full_key, &full, &[snap_key, late_key])
            .await,
        "compact over snapshot",
    );
    let stored = ok(s.load(&doc).await, "load after 2nd compact");
    assert_eq!(stored.chunks.len(), 1);
    assert_eq!(reload(&stored).get_heads(), am.get_heads());

    // Sync state is per (doc, peer) and replaced on write.
    let (p1, p2) = (StorageId::from("peer-1"), StorageId::from("peer-2"));
    ok(s.put_sync_state(&doc, &p1, b"one").await, "put sync state");
    ok(
        s.put_sync_state(&doc, &p1, b"uno").await,
        "replace sync state",
    );
    ok(
        s.put_sync_state(&doc, &p2, b"two").await,
        "put sync state 2",
    );
    let stored = ok(s.load(&doc).await, "load sync states");
    assert_eq!(
        stored.sync_states,
        vec![(p1.clone(), b"uno".to_vec()), (p2, b"two".to_vec())]
    );

    // Documents are isolated; list names documents with chunks.
    assert!(ok(s.load(&other).await, "load other").is_empty());
    ok(
        s.append(&other, ChunkKey::of(b"x"), b"x").await,
        "append other",
    );
    let listed = ok(s.list().await, "list");
    assert!(
        listed.contains(&doc) && listed.contains(&other),
        "list must name both documents"
    );

    // Delete removes chunks and sync state of one document only.
    ok(s.delete(&other).await, "delete");
    assert!(ok(s.load(&other).await, "load deleted").is_empty());
    assert!(
        ok(s.load(&other).await, "load deleted")
            .sync_states
            .is_empty()
    );
    assert!(!ok(s.list().await, "list").contains(&other));
    assert!(!ok(s.load(&doc).await, "load survivor").is_empty());

    // Replica metadata.
    assert_eq!(ok(s.get_meta("missing").await, "get meta"), None);
    ok(s.put_meta("storage_id", b"abc").await, "put meta");
    ok(s.put_meta("storage_id", b"abd").await, "replace meta");
    assert_eq!(
        ok(s.get_meta("storage_id").await, "get meta"),
        Some(b"abd".to_vec())
    );

    // The heads index, where the backend keeps one: replace, list, delete.
    if ok(s.heads_index().await, "heads index").is_some() {
        ok(s.put_heads(&doc, &[1; 32]).await, "put heads");
        ok(s.put_heads(&doc, &[2; 64]).await, "replace heads");
        ok(s.put_heads(&other, &[3; 32]).await, "put heads other");
        let index = ok(s.heads_index().await, "heads index").unwrap_or_default();
        assert!(
            index.contains(&(doc, vec![2; 64])),
            "heads must be replaced"
        );
        assert!(index.contains(&(other, vec![3; 32])));
        ok(s.delete(&other).await, "delete indexed");
        let index = ok(s.heads_index().await, "heads index").unwrap_or_default();
        assert!(
            !index.iter().any(|(d, _)| *d == other),
            "delete removes heads"
        );
    }

    batches(s).await;

    // Large chunks survive intact.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    ok(
        s.append(&other, ChunkKey::of(&big), &big).await,
        "append big",
    );
    assert_eq!(ok(s.load(&other).await, "load big").chunks[0].bytes, big);
}

/// A batch of writes to several documents: all visible after, in order.
async fn batches<S: Storage>(s: &S) {
    let (x, y) = (
        DocumentId::from_bytes([0xC2; 16]),
        DocumentId::from_bytes([0xC3; 16]),
    );
    let peer = StorageId::from("peer-batch");
    let [k1, k2, k3, k4, snap] = [
        &b"batch-1"[..],
        b"batch-2",
        b"batch-3",
        b"batch-4",
        b"snapshot",
    ]
    .map(ChunkKey::of);
    ok(s.write_batch(&[]).await, "empty batch");
    ok(
        s.write_batch(&[
            WriteOp::Append {
                doc: &x,
                key: k1,
                bytes: b"batch-1",
            },
            WriteOp::Append {
                doc: &y,
                key: k2,
                bytes: b"batch-2",
            },
            WriteOp::PutSyncState {
                doc: &x,
                peer: &peer,
                state: b"first",
            },
            WriteOp::PutSyncState {
                doc: &x,
                peer: &peer,
                state: b"second",
            },
            WriteOp::Append {
                doc: &x,
                key: k3,
                bytes: b"batch-3",
            },
            WriteOp::PutHeads {
                doc: &y,
                heads: &[4; 32],
            },
        ])
        .await,
        "write batch",
    );
    let sx = ok(s.load(&x).await, "load batched");
    assert_eq!(
        keys_of(&sx),
        vec![k1, k3],
        "a batch's appends load in order"
    );
    assert_eq!(
        sx.sync_states,
        vec![(peer.clone(), b"second".to_vec())],
        "the later sync state of a batch wins"
    );
    assert_eq!(keys_of(&ok(s.load(&y).await, "load batched")), vec![k2]);
    if let Some(index) = ok(s.heads_index().await, "heads index") {
        assert!(index.contains(&(y, vec![4; 32])), "a batch writes heads");
    }

    // Order within a batch: an append, then a compaction covering it.
    ok(
        s.write_batch(&[
            WriteOp::Append {
                doc: &x,
                key: k4,
                bytes: b"batch-4",
            },
            WriteOp::Compact {
                doc: &x,
                key: snap,
                snapshot: b"snapshot",
                covered: &[k1, k3, k4],
            },
        ])
        .await,
        "append and compact in one batch",
    );
    let sx = ok(s.load(&x).await, "load compacted batch");
    assert_eq!(
        keys_of(&sx),
        vec![snap],
        "the compaction runs after the append"
    );
    assert_eq!(sx.chunks[0].kind, ChunkKind::Snapshot);

    // Records kept beside chunks.
    super::conformance_records::run(s).await;
}

/// Checks that a batch with a failing write leaves nothing of the batch, that the storage works
/// on after it, and that [`StorageOp::run_batch_async`] then retries the writes one by one so
/// only the failing write reports the error. Call it after making the backend fail every write to
/// [`POISONED`] (and nothing else); backends that keep the default, write-by-write
/// [`Storage::write_batch`] cannot pass it.
pub async fn run_failing_batch<S: Storage>(s: &S) {
    let (a, b) = (
        DocumentId::from_bytes([0xC8; 16]),
        DocumentId::from_bytes([0xC9; 16]),
    );
    let peer = StorageId::from("peer-batch");
    let ops = vec![
        StorageOp::Append {
            doc: a,
            key: ChunkKey::of(b"a"),
            bytes: b"a".to_vec(),
        },
        StorageOp::Append {
            doc: POISONED,
            key: ChunkKey::of(b"p"),
            bytes: b"p".to_vec(),
        },
        StorageOp::PutSyncState {
            doc: b,
            peer: peer.clone(),
            state: b"b".to_vec(),
        },
    ];
    let writes: Vec<WriteOp<'_>> = ops.iter().filter_map(StorageOp::as_write).collect();
    assert!(
        s.write_batch(&writes).await.is_err(),
        "a batch with a failing write must fail"
    );
    assert!(
        ok(s.load(&a).await, "load a").is_empty(),
        "a failed batch must leave nothing (the write before the failing one)"
    );
    assert!(
        ok(s.load(&b).await, "load b").sync_states.is_empty(),
        "a failed batch must leave nothing (the write after the failing one)"
    );

    let results = StorageOp::run_batch_async(ops, s as &dyn Storage).await;
    let oks: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(
        oks,
        vec![true, false, true],
        "only the failing write reports the error"
    );
    assert_eq!(
        keys_of(&ok(s.load(&a).await, "load a")),
        vec![ChunkKey::of(b"a")]
    );
    assert_eq!(
        ok(s.load(&b).await, "load b").sync_states,
        vec![(peer, b"b".to_vec())]
    );
    assert!(ok(s.load(&POISONED).await, "load poisoned").is_empty());
}
