//! Benchmark 3: durable change ingest vs raw inserts of the same bytes, on SQLite and (with
//! `--database postgres://...`) on PostgreSQL.
//!
//! D documents, one writer each, C one-change sync messages per writer, all arriving at once
//! (round-robin over the documents). Concord: the server path (Core + storage, the driver's
//! group commit) until every change is durable. References, same run: every write Concord
//! issued (the same chunk bytes) replayed into the same schema in the same transactions Concord
//! committed, with rusqlite for SQLite (WAL, synchronous=FULL; [`sqlite`]) and with plain sqlx
//! statements for PostgreSQL (synchronous_commit=on; [`pg`]). Every Concord run and every
//! replay runs twice; the faster run counts.
//!
//! ```text
//! concord-bench durable --docs 200 --changes 20 [--database postgres://user:pw@127.0.0.1:5432/db]
//! ```

mod pg;
mod sqlite;

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
use sqlite::Grouping;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Documents.
    #[arg(long, default_value_t = 200)]
    pub docs: usize,
    /// One-change messages per document.
    #[arg(long, default_value_t = 20)]
    pub changes: usize,
    /// Also run on this PostgreSQL database (its `concord_*` tables are emptied first).
    #[arg(long)]
    pub database: Option<String>,
}

/// One writer: its connection, peer and document, its first message, its change messages.
type Writer = (ConnId, PeerId, DocumentId, Vec<u8>, Vec<Vec<u8>>);

/// The documents and the messages every writer sends.
pub struct Workload {
    /// The documents' starting state (stored before the timed part).
    base: Vec<u8>,
    docs: Vec<DocumentId>,
    traffic: Vec<Writer>,
    changes: usize,
}

impl Workload {
    fn new(docs: usize, changes: usize) -> anyhow::Result<Self> {
        let base = docgen::text_doc(100, 10)?;
        let text = docgen::text_obj(&base)?;
        let docs: Vec<DocumentId> = (0..docs)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
                DocumentId::from_bytes(id)
            })
            .collect();
        let mut traffic = Vec::new();
        for (i, d) in docs.iter().enumerate() {
            let hello = message(base.get_heads(), Vec::new()).encode();
            let mut fork = base
                .fork()
                .with_actor(ActorId::from((i as u128 + 100).to_be_bytes()));
            let mut msgs = Vec::new();
            for _ in 0..changes {
                let mut tx = fork.transaction();
                tx.splice_text(&text, 0, 0, "d")?;
                tx.commit();
                let Some(c) = fork.get_last_local_change() else {
                    anyhow::bail!("no change");
                };
                msgs.push(message(fork.get_heads(), vec![c.raw_bytes().to_vec()]).encode());
            }
            let peer = PeerId::new(format!("writer-{i}"));
            traffic.push((ConnId(i as u64 + 1), peer, *d, hello, msgs));
        }
        Ok(Self {
            base: base.save(),
            docs,
            traffic,
            changes,
        })
    }

    /// The writes that put the documents' starting state in storage.
    fn seed(&self) -> Vec<StorageOp> {
        let key = ChunkKey::of(&self.base);
        self.docs
            .iter()
            .map(|d| StorageOp::Append {
                doc: *d,
                key,
                bytes: self.base.clone(),
            })
            .collect()
    }
}

/// What one Concord run measured, and the writes it committed (for the references).
pub struct ConcordRun {
    wall: Duration,
    changes: f64,
    /// The writes of each transaction Concord committed, in order.
    transactions: Vec<Vec<StorageOp>>,
    bytes: usize,
    core: Duration,
    other_cpu: Duration,
}

impl ConcordRun {
    fn rate(&self) -> f64 {
        self.changes / self.wall.as_secs_f64()
    }

    fn writes(&self) -> usize {
        self.transactions.iter().map(Vec::len).sum()
    }

    /// The faster of two runs.
    fn best(a: Self, b: Self) -> Self {
        if b.wall < a.wall { b } else { a }
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{name:<30}{:>9.0} changes/s  ({} changes durable in {:.3} s; {} writes in {} transactions, {} bytes; core {:.0} ms, other threads {:.0} ms CPU)",
            self.rate(),
            self.changes,
            self.wall.as_secs_f64(),
            self.writes(),
            self.transactions.len(),
            self.bytes,
            self.core.as_secs_f64() * 1e3,
            self.other_cpu.as_secs_f64() * 1e3
        )
    }
}

/// Runs the workload through Core + `storage` (empty) until every change is durable.
pub fn concord(
    w: &Workload,
    storage: Arc<dyn Storage>,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<ConcordRun> {
    rt.block_on(async {
        for d in &w.docs {
            storage.append(d, ChunkKey::of(&w.base), &w.base).await?;
        }
        anyhow::Ok(())
    })?;
    let mut h = Harness::new(storage, rt.handle().clone())?;
    for (conn, peer, d, hello, _) in &w.traffic {
        h.connect(*conn, peer, None);
        h.sync(*conn, peer, *d, hello.clone());
    }
    h.settle(Duration::from_secs(120));
    h.writes = Some(Vec::new());
    h.transactions.clear();
    let changes0 = h.core.stats().changes_applied;
    let (cpu0, main0, busy0) = (process_cpu(), thread_cpu(), h.busy);
    let t0 = Instant::now();
    for k in 0..w.changes {
        for (conn, peer, d, _, msgs) in &w.traffic {
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
    let changes = (h.core.stats().changes_applied - changes0) as f64;
    let core = h.busy - busy0;
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
    let run = ConcordRun {
        wall,
        changes,
        bytes: writes
            .values()
            .map(|w| w.as_write().map_or(0, |w| w.payload_len()))
            .sum(),
        transactions,
        core,
        other_cpu,
    };
    if run.writes() != writes.len() {
        anyhow::bail!("{} writes issued, {} executed", writes.len(), run.writes());
    }
    let _storage_cpu = h.finish();
    Ok(run)
}

/// Concord on a fresh SQLite file (closed, its final checkpoint done, before returning).
fn concord_sqlite(w: &Workload, rt: &tokio::runtime::Runtime) -> anyhow::Result<ConcordRun> {
    let dir = tempfile::tempdir()?;
    let storage = rt.block_on(SqliteStorage::open(SqliteConfig::new(
        dir.path().join("concord.db"),
    )))?;
    let run = concord(w, Arc::new(storage.clone()), rt)?;
    rt.block_on(storage.close());
    Ok(run)
}

pub fn run(a: &Args, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let w = Workload::new(a.docs, a.changes)?;
    let seed = w.seed();
    let c = ConcordRun::best(concord_sqlite(&w, rt)?, concord_sqlite(&w, rt)?);
    // Each reference runs twice and the faster run counts (favouring the reference).
    let replay = |g| -> anyhow::Result<Duration> {
        let once = || sqlite::replay(&seed, &c.transactions, g);
        Ok(once()?.min(once()?))
    };
    let raw = replay(Grouping::AsConcord)?;
    let raw_each = replay(Grouping::PerWrite)?;
    let raw_one = sqlite::replay(&seed, &c.transactions, Grouping::One)?;
    let rate = |d: Duration| c.changes / d.as_secs_f64();
    println!(
        "# durable: {} docs x {} one-change messages, all arriving at once; SQLite WAL synchronous=FULL; best of 2 runs each",
        a.docs, a.changes
    );
    println!("{}", c.line("concord (Core + sqlx SQLite)"));
    println!(
        "rusqlite, same transactions   {:>9.0} changes/s  ({:.3} s, Concord's {} transactions replayed)",
        rate(raw),
        raw.as_secs_f64(),
        c.transactions.len()
    );
    println!(
        "rusqlite, same writes         {:>9.0} changes/s  ({:.3} s, one transaction per write)",
        rate(raw_each),
        raw_each.as_secs_f64()
    );
    println!(
        "rusqlite, one transaction     {:>9.0} changes/s  ({:.3} s, ceiling: no per-write durability)",
        rate(raw_one),
        raw_one.as_secs_f64()
    );
    println!(
        "ratio concord / rusqlite same transactions: {:.2} (target >= 0.8); / one transaction per write: {:.2}",
        c.rate() / rate(raw),
        c.rate() / rate(raw_each)
    );
    if let Some(url) = &a.database {
        pg::run(&w, url, &c, rt)?;
    }
    Ok(())
}
