//! Two independent pools (as two `concord serve` nodes would have) write the same documents of
//! one PostgreSQL database at once: appends of their own changes, appends of the same chunks (as
//! two nodes relaying one change would), batches across documents in opposite orders, and
//! compactions of the same document from both sides. Afterwards every acknowledged change is
//! loadable: a compaction never deleted a chunk its snapshot did not cover.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ChangeHash, ROOT, ReadDoc};
use concord::DocumentId;
use concord::storage::postgres::{PostgresConfig, PostgresStorage};
use concord::storage::{ChunkKey, Storage, WriteOp};
use concord_tests::pg::TempPostgres;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DOCS: u8 = 3;
const ROUNDS: usize = 120;
const SHARED: usize = 40;

/// One change as its chunk: key, bytes, hash.
#[derive(Clone)]
struct ChangeChunk {
    key: ChunkKey,
    bytes: Vec<u8>,
    hash: ChangeHash,
}

fn doc(i: u8) -> DocumentId {
    DocumentId::from_bytes([0xA0 + i; 16])
}

/// Changes without dependencies (each by its own actor), so that any subset of them loads.
fn shared_changes(d: u8) -> Vec<ChangeChunk> {
    (0..SHARED)
        .map(|i| {
            let mut am = Automerge::new().with_actor(ActorId::from(vec![d, i as u8, 0xEE]));
            let mut tx = am.transaction();
            tx.put(ROOT, format!("shared-{i}"), i as i64).unwrap();
            tx.commit();
            let bytes = am.save_after(&[]);
            ChangeChunk {
                key: ChunkKey::of(&bytes),
                hash: am.get_heads()[0],
                bytes,
            }
        })
        .collect()
}

/// A writer's own linear history of one document.
struct Local {
    am: Automerge,
    heads: Vec<ChangeHash>,
}

impl Local {
    fn next(&mut self, n: usize) -> ChangeChunk {
        let mut tx = self.am.transaction();
        tx.put(ROOT, "n", n as i64).unwrap();
        tx.commit();
        let bytes = self.am.save_after(&self.heads);
        self.heads = self.am.get_heads();
        ChangeChunk {
            key: ChunkKey::of(&bytes),
            bytes,
            hash: self.heads[0],
        }
    }
}

/// Loads `d`, snapshots everything that loaded and compacts over exactly the chunks it loaded.
async fn compact(s: &PostgresStorage, d: &DocumentId) {
    let stored = s.load(d).await.unwrap();
    if stored.chunks.len() < 2 {
        return;
    }
    let mut am = Automerge::new();
    for c in &stored.chunks {
        am.load_incremental(&c.bytes).unwrap();
    }
    assert!(am.get_missing_deps(&[]).is_empty(), "every chunk loads");
    let snap = am.save();
    let covered: Vec<ChunkKey> = stored.chunks.iter().map(|c| c.key).collect();
    s.compact(d, ChunkKey::of(&snap), &snap, &covered)
        .await
        .unwrap();
}

/// One writer: its own changes to every document, the shared chunks in its own order, batches,
/// and a compaction of a random document every few rounds. Returns the acknowledged hashes.
async fn writer(
    s: PostgresStorage,
    side: u8,
    shared: Arc<Vec<Vec<ChangeChunk>>>,
) -> BTreeSet<ChangeHash> {
    let mut rng = StdRng::seed_from_u64(0xC0C0 + u64::from(side));
    let mut locals: Vec<Local> = (0..DOCS)
        .map(|d| Local {
            am: Automerge::new().with_actor(ActorId::from(vec![side, d])),
            heads: Vec::new(),
        })
        .collect();
    let mut acked = BTreeSet::new();
    for round in 0..ROUNDS {
        // A batch: own changes to every document (in this side's order) plus shared chunks.
        let mut order: Vec<u8> = (0..DOCS).collect();
        if side == 1 {
            order.reverse();
        }
        let mut chunks: Vec<(DocumentId, ChangeChunk)> = order
            .iter()
            .map(|&d| (doc(d), locals[usize::from(d)].next(round)))
            .collect();
        for _ in 0..2 {
            let d = rng.random_range(0..DOCS);
            let pick = &shared[usize::from(d)];
            chunks.push((doc(d), pick[rng.random_range(0..pick.len())].clone()));
        }
        let mut ops: Vec<WriteOp<'_>> = chunks
            .iter()
            .map(|(d, c)| WriteOp::Append {
                doc: d,
                key: c.key,
                bytes: &c.bytes,
            })
            .collect();
        // Sometimes compact inside the same batch, over what this side loaded before.
        let target = doc(rng.random_range(0..DOCS));
        let (snap, covered);
        if round % 7 == 3 {
            let stored = s.load(&target).await.unwrap();
            let mut am = Automerge::new();
            for c in &stored.chunks {
                am.load_incremental(&c.bytes).unwrap();
            }
            snap = am.save();
            covered = stored.chunks.iter().map(|c| c.key).collect::<Vec<_>>();
            if !covered.is_empty() {
                ops.push(WriteOp::Compact {
                    doc: &target,
                    key: ChunkKey::of(&snap),
                    snapshot: &snap,
                    covered: &covered,
                });
            }
        }
        s.write_batch(&ops).await.unwrap();
        acked.extend(chunks.iter().map(|(_, c)| c.hash));
        if round % 5 == side as usize {
            compact(&s, &doc(rng.random_range(0..DOCS))).await;
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_writing_and_compacting_the_same_documents_lose_nothing() {
    let pg = TempPostgres::start().unwrap();
    let open = || PostgresStorage::open(PostgresConfig::new(pg.url()));
    let (a, b) = (open().await.unwrap(), open().await.unwrap());
    let shared = Arc::new((0..DOCS).map(shared_changes).collect::<Vec<_>>());
    let sides = [
        tokio::spawn(writer(a.clone(), 0, Arc::clone(&shared))),
        tokio::spawn(writer(b.clone(), 1, Arc::clone(&shared))),
        // A third writer on the first pool: concurrency inside one node too.
        tokio::spawn(writer(a.clone(), 2, Arc::clone(&shared))),
    ];
    let mut acked = BTreeSet::new();
    for side in sides {
        acked.extend(side.await.unwrap());
    }
    // Every document compacted once more from each side, concurrently.
    let finals = (0..DOCS).flat_map(|d| {
        let (a, b) = (a.clone(), b.clone());
        [
            tokio::spawn(async move { compact(&a, &doc(d)).await }),
            tokio::spawn(async move { compact(&b, &doc(d)).await }),
        ]
    });
    for f in finals.collect::<Vec<_>>() {
        f.await.unwrap();
    }

    let mut found = BTreeSet::new();
    let mut chunks = 0;
    for d in 0..DOCS {
        let stored = b.load(&doc(d)).await.unwrap();
        chunks += stored.chunks.len();
        let mut am = Automerge::new();
        for c in &stored.chunks {
            am.load_incremental(&c.bytes).unwrap();
        }
        assert!(am.get_missing_deps(&[]).is_empty());
        found.extend(acked.iter().filter(|h| am.get_change_by_hash(h).is_some()));
    }
    let lost: Vec<_> = acked.difference(&found).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged changes lost: {lost:?}",
        lost.len()
    );
    assert!(
        acked.len() > 3 * ROUNDS * usize::from(DOCS),
        "own and shared changes: {}",
        acked.len()
    );
    println!(
        "{} acknowledged changes, all loadable from {chunks} stored chunks",
        acked.len()
    );
}
