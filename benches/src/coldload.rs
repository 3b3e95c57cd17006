//! Benchmark 5: cold load from storage vs `Automerge::load` of the saved bytes.
//!
//! A text document of N one-character changes (the shape of the automerge editing trace, which
//! is 260k single-character edits) is stored as Concord stores a compacted document (one
//! snapshot chunk in SQLite). Concord: `Core::load` until the document is ready (SQLite read,
//! chunk assembly, `Automerge::load`), through the server harness. Reference, same run:
//! `Automerge::load` of the same bytes already in memory. Each side is measured `reps` times,
//! alternating; medians are reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::Automerge;
use concord::DocumentId;
use concord::storage::{ChunkKey, SqliteConfig, SqliteStorage, Storage};

use crate::docgen;
use crate::harness::Harness;
use crate::stats::Summary;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Document sizes in changes (one character each).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,10000,100000,260000"
    )]
    pub sizes: Vec<usize>,
    /// Measurements per side and size.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
}

pub fn run(a: &Args, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    println!(
        "# coldload: median of {} loads per side; SQLite WAL, warm page cache",
        a.reps
    );
    println!(
        "{:>8} | {:>9} | {:>14} | {:>16} | {:>6}",
        "changes", "bytes", "concord ms", "Automerge::load", "ratio"
    );
    for &size in &a.sizes {
        let doc = docgen::text_doc(size, 1)?;
        let bytes = doc.save();
        drop(doc);
        let dir = tempfile::tempdir()?;
        let id = DocumentId::from_bytes([5; 16]);
        let storage = rt.block_on(async {
            let s = SqliteStorage::open(SqliteConfig::new(dir.path().join("concord.db"))).await?;
            s.compact(&id, ChunkKey::of(&bytes), &bytes, &[]).await?;
            anyhow::Ok(s)
        })?;
        let storage: Arc<dyn Storage> = Arc::new(storage);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..a.reps {
            // A fresh server core each time: nothing resident, the document comes from SQLite.
            let mut h = Harness::new(storage.clone(), rt.handle().clone())?;
            let t = Instant::now();
            h.load(id);
            while h.core.document(&id).is_none() {
                if h.core.failure(&id).is_some() || t.elapsed() > Duration::from_secs(600) {
                    anyhow::bail!("document did not load: {:?}", h.core.failure(&id));
                }
                h.poll_storage(Duration::from_millis(100));
            }
            ours.push(t.elapsed().as_secs_f64() * 1e3);
            h.finish();
            let t = Instant::now();
            let loaded = Automerge::load(&bytes)?;
            theirs.push(t.elapsed().as_secs_f64() * 1e3);
            drop(loaded);
        }
        let (o, r) = (Summary::of(&mut ours), Summary::of(&mut theirs));
        println!(
            "{:>8} | {:>9} | {:>14.2} | {:>16.2} | {:>6.2}",
            size,
            bytes.len(),
            o.p50,
            r.p50,
            o.p50 / r.p50.max(1e-9)
        );
    }
    Ok(())
}
