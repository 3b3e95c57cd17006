//! Benchmark 3: durable change ingest vs raw rusqlite inserts of the same bytes.
//!
//! D documents, one writer each, C one-change sync messages per writer, all arriving at once
//! (round-robin over the documents). Concord: the server path (Core + SqliteStorage through sqlx,
//! WAL, synchronous=FULL, the driver's group commit) until every change is durable. Reference,
//! same run: every write Concord issued (the same chunk bytes) replayed with rusqlite into the
//! same schema, WAL, synchronous=FULL, in the same transactions Concord committed (the same
//! writes grouped the same way); and, for comparison, one transaction per write, and, as the
//! absolute ceiling, every row in one transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::ActorId;
use automerge::transaction::Transactable;
use concord::core::StorageOp;
use concord::storage::{ChunkKey, SqliteConfig, SqliteStorage, Storage};
use concord::{ConnId, DocumentId, PeerId};

use crate::docgen;
use crate::harness::{Harness, process_cpu, thread_cpu};
use crate::ingest::message;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Documents.
    #[arg(long, default_value_t = 200)]
    pub docs: usize,
    /// One-change messages per document.
    #[arg(long, default_value_t = 20)]
    pub changes: usize,
}

const SCHEMA: &str = include_str!("../../client-core/migrations/0001_initial.sql");

/// How the reference groups the writes into transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grouping {
    /// The transactions Concord committed.
    AsConcord,
    /// One transaction per write.
    PerWrite,
    /// Everything in one transaction (no per-write durability: the ceiling).
    One,
}

/// Replays `transactions` with rusqlite after the untimed `seed` writes (the documents Concord's
/// database held before); returns the wall time.
fn rusqlite_replay(
    seed: &[StorageOp],
    transactions: &[Vec<StorageOp>],
    grouping: Grouping,
) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let db = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.execute_batch(SCHEMA)?;
    apply(&db, seed)?;
    let t = Instant::now();
    match grouping {
        Grouping::One => {
            db.execute_batch("BEGIN")?;
            for tx in transactions {
                apply(&db, tx)?;
            }
            db.execute_batch("COMMIT")?;
        }
        // Outside a transaction each statement (a compaction: its savepoint) commits alone.
        Grouping::PerWrite => {
            for tx in transactions {
                apply(&db, tx)?;
            }
        }
        Grouping::AsConcord => {
            for tx in transactions {
                if tx.len() > 1 {
                    db.execute_batch("BEGIN")?;
                    apply(&db, tx)?;
                    db.execute_batch("COMMIT")?;
                } else {
                    apply(&db, tx)?;
                }
            }
        }
    }
    Ok(t.elapsed())
}

fn apply(conn: &rusqlite::Connection, writes: &[StorageOp]) -> anyhow::Result<()> {
    for w in writes {
        match w {
            StorageOp::Append { doc, key, bytes } => {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO chunks (doc, key, kind, data) VALUES (?, ?, 0, ?)",
                )?
                .execute(rusqlite::params![
                    &doc.as_bytes()[..],
                    &key.0[..],
                    bytes
                ])?;
            }
            StorageOp::PutSyncState { doc, peer, state } => {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO sync_states (doc, peer, state) VALUES (?, ?, ?)",
                )?
                .execute(rusqlite::params![
                    &doc.as_bytes()[..],
                    peer.to_string(),
                    state
                ])?;
            }
            StorageOp::Compact {
                doc,
                key,
                bytes,
                covered,
            } => {
                conn.execute_batch("SAVEPOINT c")?;
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO chunks (doc, key, kind, data) VALUES (?, ?, 1, ?)",
                )?
                .execute(rusqlite::params![
                    &doc.as_bytes()[..],
                    &key.0[..],
                    bytes
                ])?;
                for k in covered {
                    conn.prepare_cached("DELETE FROM chunks WHERE doc = ? AND key = ?")?
                        .execute(rusqlite::params![&doc.as_bytes()[..], &k.0[..]])?;
                }
                conn.execute_batch("RELEASE c")?;
            }
            _ => {}
        }
    }
    Ok(())
}

pub fn run(a: &Args, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let base = docgen::text_doc(100, 10)?;
    let text = docgen::text_obj(&base)?;
    let bytes = base.save();
    let dir = tempfile::tempdir()?;
    let docs: Vec<DocumentId> = (0..a.docs)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            DocumentId::from_bytes(id)
        })
        .collect();
    let seed: Vec<StorageOp> = docs
        .iter()
        .map(|d| StorageOp::Append {
            doc: *d,
            key: ChunkKey::of(&bytes),
            bytes: bytes.clone(),
        })
        .collect();
    let storage = rt.block_on(async {
        let s = SqliteStorage::open(SqliteConfig::new(dir.path().join("concord.db"))).await?;
        for d in &docs {
            s.append(d, ChunkKey::of(&bytes), &bytes).await?;
        }
        anyhow::Ok(s)
    })?;
    let sqlite = storage.clone();
    let mut h = Harness::new(Arc::new(storage), rt.handle().clone())?;
    let mut traffic = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let conn = ConnId(i as u64 + 1);
        let peer = PeerId::new(format!("writer-{i}"));
        h.connect(conn, &peer, None);
        h.sync(
            conn,
            &peer,
            *d,
            message(base.get_heads(), Vec::new()).encode(),
        );
        let mut fork = base
            .fork()
            .with_actor(ActorId::from((i as u128 + 100).to_be_bytes()));
        let mut msgs = Vec::new();
        for _ in 0..a.changes {
            let mut tx = fork.transaction();
            tx.splice_text(&text, 0, 0, "d")?;
            tx.commit();
            let Some(c) = fork.get_last_local_change() else {
                anyhow::bail!("no change");
            };
            msgs.push(message(fork.get_heads(), vec![c.raw_bytes().to_vec()]).encode());
        }
        traffic.push((conn, peer, *d, msgs));
    }
    h.settle(Duration::from_secs(120));
    h.writes = Some(Vec::new());
    h.transactions.clear();
    let changes0 = h.core.stats().changes_applied;
    let (cpu0, main0, busy0) = (process_cpu(), thread_cpu(), h.busy);
    let t0 = Instant::now();
    for k in 0..a.changes {
        for (conn, peer, d, msgs) in &traffic {
            if let Some(m) = msgs.get(k) {
                h.sync(*conn, peer, *d, m.clone());
                h.poll_storage(Duration::ZERO);
            }
        }
    }
    while !h.core.is_idle() || h.pending() > 0 {
        h.poll_storage(Duration::from_millis(5));
        if t0.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("durable ingest did not settle");
        }
    }
    let wall = t0.elapsed();
    let main_cpu = thread_cpu().saturating_sub(main0);
    let other_cpu = process_cpu().saturating_sub(cpu0).saturating_sub(main_cpu);
    let total = (h.core.stats().changes_applied - changes0) as f64;
    let busy = h.busy - busy0;
    let writes: HashMap<_, _> = h.writes.take().unwrap_or_default().into_iter().collect();
    if h.storage_errors > 0 {
        anyhow::bail!("{} storage operations failed", h.storage_errors);
    }
    let transactions: Vec<Vec<StorageOp>> = h
        .transactions
        .iter()
        .map(|ids| {
            ids.iter()
                .filter_map(|id| writes.get(id).cloned())
                .collect()
        })
        .collect();
    let write_count: usize = transactions.iter().map(Vec::len).sum();
    if write_count != writes.len() {
        anyhow::bail!("{} writes issued, {write_count} executed", writes.len());
    }
    let _storage_cpu = h.finish();
    // Concord's database is closed (its final checkpoint done) before the reference runs; each
    // reference runs twice and the faster run counts (favouring the reference).
    rt.block_on(sqlite.close());
    let replay = |g| -> anyhow::Result<Duration> {
        Ok(
            rusqlite_replay(&seed, &transactions, g)?.min(rusqlite_replay(
                &seed,
                &transactions,
                g,
            )?),
        )
    };
    let raw = replay(Grouping::AsConcord)?;
    let raw_each = replay(Grouping::PerWrite)?;
    let raw_one = rusqlite_replay(&seed, &transactions, Grouping::One)?;
    let bytes_written: usize = writes
        .values()
        .map(|w| w.as_write().map_or(0, |w| w.payload_len()))
        .sum();
    let rate = |d: Duration| total / d.as_secs_f64();
    println!(
        "# durable: {} docs x {} one-change messages, all arriving at once; SQLite WAL synchronous=FULL",
        a.docs, a.changes
    );
    println!(
        "concord (Core + sqlx)       {:>9.0} changes/s  ({} changes durable in {:.3} s; {} writes in {} transactions, {} bytes; core {:.0} ms, other threads {:.0} ms CPU)",
        rate(wall),
        total,
        wall.as_secs_f64(),
        write_count,
        transactions.len(),
        bytes_written,
        busy.as_secs_f64() * 1e3,
        other_cpu.as_secs_f64() * 1e3
    );
    println!(
        "rusqlite, same transactions {:>9.0} changes/s  ({:.3} s, Concord's {} transactions replayed)",
        rate(raw),
        raw.as_secs_f64(),
        transactions.len()
    );
    println!(
        "rusqlite, same writes       {:>9.0} changes/s  ({:.3} s, one transaction per write)",
        rate(raw_each),
        raw_each.as_secs_f64()
    );
    println!(
        "rusqlite, one transaction   {:>9.0} changes/s  ({:.3} s, ceiling: no per-write durability)",
        rate(raw_one),
        raw_one.as_secs_f64()
    );
    println!(
        "ratio concord / rusqlite same transactions: {:.2} (target >= 0.8); / one transaction per write: {:.2}",
        rate(wall) / rate(raw),
        rate(wall) / rate(raw_each)
    );
    Ok(())
}
