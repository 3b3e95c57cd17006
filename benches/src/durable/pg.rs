//! The PostgreSQL part of the durable benchmark (`--database postgres://...`).
//!
//! Concord: the same workload through Core + [`PostgresStorage`], once as a cluster node runs it
//! (every transaction announces its chunks with `pg_notify`) and once without notifications.
//! Reference, same run: every write Concord committed replayed with plain sqlx statements (one
//! statement per write, as an application would write them) on one connection into the same
//! tables, in the same transactions. PostgreSQL's defaults apply (`fsync=on`,
//! `synchronous_commit=on`): a transaction is durable when its `COMMIT` returns, as SQLite's
//! `synchronous=FULL` is. Before every run the `concord_*` tables are emptied (`TRUNCATE`) and
//! the documents' starting state is inserted, untimed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use concord::core::StorageOp;
use concord::storage::postgres::{PostgresConfig, PostgresStorage};
use sqlx::{Connection, PgConnection};

use super::{ConcordRun, Workload, concord};

const TABLES: &str = "TRUNCATE concord_chunks, concord_sync_states, concord_doc_heads, \
     concord_tombstones, concord_change_authors, concord_owned_docs";

/// Concord on PostgreSQL (emptied first); `notify`: announce commits as a cluster node does.
fn concord_pg(
    w: &Workload,
    url: &str,
    notify: bool,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<ConcordRun> {
    let mut config = PostgresConfig::new(url);
    if notify {
        config = config.with_notify("concord_bench", "bench-node");
    }
    let storage = rt.block_on(async {
        let s = PostgresStorage::open(config).await?;
        sqlx::query(TABLES).execute(s.pool()).await?;
        anyhow::Ok(s)
    })?;
    let run = concord(w, Arc::new(storage.clone()), rt)?;
    rt.block_on(storage.close());
    Ok(run)
}

/// Replays `transactions` with plain sqlx statements after the untimed `seed`; the wall time.
async fn replay(
    url: &str,
    seed: &[StorageOp],
    transactions: &[Vec<StorageOp>],
) -> anyhow::Result<Duration> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query(TABLES).execute(&mut conn).await?;
    for op in seed {
        write(&mut conn, op).await?;
    }
    let t = Instant::now();
    for writes in transactions {
        let mut tx = conn.begin().await?;
        for op in writes {
            write(&mut tx, op).await?;
        }
        tx.commit().await?;
    }
    let wall = t.elapsed();
    conn.close().await?;
    Ok(wall)
}

/// One write as one statement (a compaction: its insert and its delete).
async fn write(conn: &mut PgConnection, op: &StorageOp) -> anyhow::Result<()> {
    match op {
        StorageOp::Append { doc, key, bytes } => {
            sqlx::query(
                "INSERT INTO concord_chunks (doc, key, kind, data) VALUES ($1, $2, 0, $3) \
                 ON CONFLICT (doc, key) DO NOTHING",
            )
            .bind(&doc.as_bytes()[..])
            .bind(&key.0[..])
            .bind(bytes)
            .execute(&mut *conn)
            .await?;
        }
        StorageOp::Compact {
            doc,
            key,
            bytes,
            covered,
        } => {
            sqlx::query(
                "INSERT INTO concord_chunks (doc, key, kind, data) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (doc, key) DO UPDATE SET kind = 1",
            )
            .bind(&doc.as_bytes()[..])
            .bind(&key.0[..])
            .bind(bytes)
            .execute(&mut *conn)
            .await?;
            let covered: Vec<[u8; 32]> = covered.iter().map(|k| k.0).collect();
            sqlx::query("DELETE FROM concord_chunks WHERE doc = $1 AND key = ANY($2::bytea[])")
                .bind(&doc.as_bytes()[..])
                .bind(&covered)
                .execute(&mut *conn)
                .await?;
        }
        StorageOp::PutSyncState { doc, peer, state } => {
            sqlx::query(
                "INSERT INTO concord_sync_states (doc, peer, state) VALUES ($1, $2, $3) \
                 ON CONFLICT (doc, peer) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
            )
            .bind(&doc.as_bytes()[..])
            .bind(peer.to_string())
            .bind(state)
            .execute(&mut *conn)
            .await?;
        }
        StorageOp::PutHeads { doc, heads } => {
            sqlx::query(
                "INSERT INTO concord_doc_heads (doc, heads) VALUES ($1, $2) \
                 ON CONFLICT (doc) DO UPDATE SET heads = EXCLUDED.heads",
            )
            .bind(&doc.as_bytes()[..])
            .bind(heads)
            .execute(&mut *conn)
            .await?;
        }
        other => anyhow::bail!("the PostgreSQL reference does not replay {other:?}"),
    }
    Ok(())
}

/// Runs the PostgreSQL figures and prints them with ratios (`sqlite`: Concord's SQLite run of
/// the same process).
pub fn run(
    w: &Workload,
    url: &str,
    sqlite: &ConcordRun,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let seed = w.seed();
    let best = |notify| -> anyhow::Result<ConcordRun> {
        Ok(ConcordRun::best(
            concord_pg(w, url, notify, rt)?,
            concord_pg(w, url, notify, rt)?,
        ))
    };
    let node = best(true)?;
    let alone = best(false)?;
    let raw = |c: &ConcordRun| -> anyhow::Result<Duration> {
        let once = || rt.block_on(replay(url, &seed, &c.transactions));
        Ok(once()?.min(once()?))
    };
    let (raw_node, raw_alone) = (raw(&node)?, raw(&alone)?);
    let rate = |c: &ConcordRun, d: Duration| c.changes / d.as_secs_f64();
    println!(
        "# durable on PostgreSQL (fsync=on, synchronous_commit=on), same workload; best of 2 runs each"
    );
    println!("{}", node.line("concord (PostgreSQL + NOTIFY)"));
    println!(
        "sqlx, same transactions       {:>9.0} changes/s  ({:.3} s, the {} transactions above, one statement per write)",
        rate(&node, raw_node),
        raw_node.as_secs_f64(),
        node.transactions.len()
    );
    println!("{}", alone.line("concord (PostgreSQL, no NOTIFY)"));
    println!(
        "sqlx, same transactions       {:>9.0} changes/s  ({:.3} s, the {} transactions above)",
        rate(&alone, raw_alone),
        raw_alone.as_secs_f64(),
        alone.transactions.len()
    );
    println!(
        "ratio concord PostgreSQL+NOTIFY / sqlx same transactions: {:.2}; without NOTIFY: {:.2}",
        node.rate() / rate(&node, raw_node),
        alone.rate() / rate(&alone, raw_alone)
    );
    println!(
        "ratio concord PostgreSQL+NOTIFY / concord SQLite: {:.2}; without NOTIFY / SQLite: {:.2}",
        node.rate() / sqlite.rate(),
        alone.rate() / sqlite.rate()
    );
    Ok(())
}
