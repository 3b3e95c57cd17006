//! The SQLite reference of the durable benchmark: every write Concord issued, replayed with
//! rusqlite into the same schema (WAL, synchronous=FULL), grouped as [`Grouping`] says.

use std::time::{Duration, Instant};

use concord::core::StorageOp;

const SCHEMA: &str = include_str!("../../../client-core/migrations/0001_initial.sql");

/// How the reference groups the writes into transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// The transactions Concord committed.
    AsConcord,
    /// One transaction per write.
    PerWrite,
    /// Everything in one transaction (no per-write durability: the ceiling).
    One,
}

/// Replays `transactions` with rusqlite after the untimed `seed` writes (the documents Concord's
/// database held before); returns the wall time.
pub fn replay(
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
