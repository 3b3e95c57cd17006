//! PostgreSQL's commit rate with concurrent committers, with and without `pg_notify` in each
//! transaction: what a cluster's nodes pay for announcing their commits on LISTEN/NOTIFY
//! (PostgreSQL serialises notifying commits with one database-wide lock; see docs/scaling.md).
//!
//! ```text
//! concord-bench pg-commit --database postgres://user:pw@127.0.0.1:5432/db --writers 1,4,16
//! ```
//!
//! W connections, each committing small transactions in a loop (one 200-byte insert, plus one
//! `pg_notify` in the notifying runs) for `--secs`; transactions per second for each W, both
//! ways, in the same run (reference: the same transactions without the notification). Each
//! measurement runs twice; the better one counts. The table `concord_bench_commit` is created
//! and dropped.

use std::time::{Duration, Instant};

use futures::future::try_join_all;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The PostgreSQL database.
    #[arg(long)]
    database: String,
    /// Concurrent committers, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    writers: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
}

/// One committer's loop until `end`; the number of committed transactions.
async fn commit_loop(pool: PgPool, notify: bool, end: Instant) -> sqlx::Result<u64> {
    let data = vec![7u8; 200];
    let mut n = 0;
    while Instant::now() < end {
        let mut tx: sqlx::Transaction<'_, Postgres> = pool.begin().await?;
        sqlx::query("INSERT INTO concord_bench_commit (data) VALUES ($1)")
            .bind(&data)
            .execute(&mut *tx)
            .await?;
        if notify {
            sqlx::query("SELECT pg_notify('concord_bench_commit', 'x')")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        n += 1;
    }
    Ok(n)
}

/// Transactions per second of `writers` committers (the better of two runs).
async fn rate(pool: &PgPool, writers: usize, notify: bool, secs: f64) -> sqlx::Result<f64> {
    let mut best = 0.0f64;
    for _ in 0..2 {
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(secs);
        let counts = try_join_all(
            (0..writers).map(|_| tokio::spawn(commit_loop(pool.clone(), notify, end))),
        )
        .await
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let mut total = 0;
        for c in counts {
            total += c?;
        }
        best = best.max(total as f64 / start.elapsed().as_secs_f64());
    }
    Ok(best)
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let max = a.writers.iter().copied().max().unwrap_or(1).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let pool = PgPoolOptions::new()
            .max_connections(u32::try_from(max)?)
            .connect(&a.database)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS concord_bench_commit (id BIGSERIAL PRIMARY KEY, data BYTEA NOT NULL)",
        )
        .execute(&pool)
        .await?;
        println!(
            "# pg-commit: small transactions (one 200-byte insert), {} s per measurement, best of 2",
            a.secs
        );
        println!("writers | plain tx/s | with pg_notify tx/s | ratio notify / plain");
        for &w in &a.writers {
            let plain = rate(&pool, w.max(1), false, a.secs).await?;
            let notify = rate(&pool, w.max(1), true, a.secs).await?;
            println!(
                "{:7} | {:10.0} | {:19.0} | {:.2}",
                w.max(1),
                plain,
                notify,
                notify / plain
            );
        }
        sqlx::query("DROP TABLE concord_bench_commit")
            .execute(&pool)
            .await?;
        pool.close().await;
        anyhow::Ok(())
    })
}
