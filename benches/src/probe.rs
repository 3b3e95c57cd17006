//! Probe: what one call of each Automerge apply path costs, by document size and batch size.
//! This is the measurement the hot-path design rests on (BENCHMARKS.md, "Choosing the hot path").

use std::time::Instant;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, Change};

use crate::docgen;
use crate::stats::Summary;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Document sizes in operations.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    pub sizes: Vec<usize>,
    /// Calls measured per size and path.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Batch sizes for the batched `apply_changes` row.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    pub batches: Vec<usize>,
}

/// `n` one-character changes typed by another actor on top of `base`.
pub fn typed_changes(base: &Automerge, n: usize, actor: u8) -> anyhow::Result<Vec<Change>> {
    let mut fork = base.fork().with_actor(ActorId::from([actor; 16]));
    let text = docgen::text_obj(&fork)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut tx = fork.transaction();
        let len = automerge::ReadDoc::length(&tx, &text);
        tx.splice_text(&text, len, 0, if i % 2 == 0 { "x" } else { "y" })?;
        tx.commit();
        if let Some(c) = fork.get_last_local_change() {
            out.push(c.clone());
        }
    }
    Ok(out)
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64() * 1e3)
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    println!(
        "# probe: milliseconds per call (p50 / p99 of {} calls)",
        a.iters
    );
    for &size in &a.sizes {
        let (base, build_ms) = time(|| docgen::text_doc(size, 10));
        let base = base?;
        println!(
            "## {size} ops ({} changes; ready in {build_ms:.0} ms)",
            base.get_changes(&[]).len()
        );
        let changes = typed_changes(&base, a.iters, 7)?;

        let mut doc = base.clone();
        let mut s = Vec::new();
        for c in &changes {
            let (r, ms) = time(|| doc.apply_changes([c.clone()]));
            r?;
            s.push(ms);
        }
        println!("apply_changes(1)        {}", Summary::of(&mut s));

        let mut doc = base.clone();
        let mut s = Vec::new();
        for c in &changes {
            let bytes = c.raw_bytes().to_vec();
            let (r, ms) = time(|| doc.load_incremental(&bytes));
            r?;
            s.push(ms);
        }
        println!("load_incremental(1)     {}", Summary::of(&mut s));

        // receive_sync_message of a message carrying one change, from a peer in sync.
        let mut doc = base.clone();
        let mut state = sync::State::new();
        let mut s = Vec::new();
        let mut gen_s = Vec::new();
        let heads = doc.get_heads();
        for c in &changes {
            let mut msg = sync::Message {
                heads: heads.clone(),
                need: Vec::new(),
                have: Vec::new(),
                changes: automerge::sync::ChunkList::from(vec![c.raw_bytes().to_vec()]),
                flags: None,
                version: sync::MessageVersion::V2,
            };
            msg.heads = vec![c.hash()];
            let (r, ms) = time(|| doc.receive_sync_message(&mut state, msg));
            r?;
            s.push(ms);
            let (_, ms) = time(|| doc.generate_sync_message(&mut state));
            gen_s.push(ms);
        }
        println!("receive_sync_message(1) {}", Summary::of(&mut s));
        println!("generate_sync_message   {}", Summary::of(&mut gen_s));

        for &b in &a.batches {
            let batch = typed_changes(&base, b, 9)?;
            let mut doc = base.clone();
            let (r, ms) = time(|| doc.apply_changes(batch));
            r?;
            println!(
                "apply_changes({b:>4})     {ms:9.3} ms per call, {:9.4} ms per change",
                ms / b as f64
            );
        }
        let (bytes, ms) = time(|| base.save());
        println!(
            "save                    {ms:9.3} ms ({} bytes)",
            bytes.len()
        );
        let (r, ms) = time(|| Automerge::load(&bytes));
        r?;
        println!("load                    {ms:9.3} ms");
    }
    Ok(())
}
