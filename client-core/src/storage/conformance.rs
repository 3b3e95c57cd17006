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

use super::{ChunkKey, ChunkKind, Storage, StoredDocument};
use crate::id::{DocumentId, StorageId};

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

    // Large chunks survive intact.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    ok(
        s.append(&other, ChunkKey::of(&big), &big).await,
        "append big",
    );
    assert_eq!(ok(s.load(&other).await, "load big").chunks[0].bytes, big);
}
