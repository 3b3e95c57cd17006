//! Benchmark 1: remote ingest per change vs document size, through the server's real path
//! (Core + SQLite with synchronous=FULL, storage on its own thread), under sustained typing.
//!
//! K typists each type R one-character changes per second into one text document of S ops.
//! Each keystroke is one sync message (the worst case for the server: automerge-repo clients
//! coalesce keystrokes while a message is in flight). Typists are write-only: they announce no
//! `have`, so the server forwards nothing to them (fan-out is benchmark 2).
//!
//! Reference, same run, same messages: a plain Automerge document that receives each message
//! with its own `receive_sync_message` and generates its reply, as an automerge-repo server does
//! (no storage, no JS: a lower bound on the reference server's cost).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ChangeHash};
use concord::core::{DeferApply, Event, Origin};
use concord::storage::{ChunkKey, SqliteConfig, SqliteStorage, Storage};
use concord::{ConnId, DocumentId, PeerId};

use crate::docgen;
use crate::harness::{Harness, process_cpu, thread_cpu};
use crate::stats::Summary;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Document sizes in operations.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,10000,100000,1000000"
    )]
    pub sizes: Vec<usize>,
    /// Typists on the document.
    #[arg(long, default_value_t = 4)]
    pub typists: usize,
    /// Keystrokes per second per typist.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of typing per size.
    #[arg(long, default_value_t = 5.0)]
    pub secs: f64,
    /// Messages replayed into the reference per size (it is slow on large documents).
    #[arg(long, default_value_t = 40)]
    pub reference_msgs: usize,
    /// Server modes to run per size: `deferred` (as `concord serve` runs, see `DeferApply`)
    /// and/or `immediate` (every batch applied at once).
    #[arg(long, value_delimiter = ',', default_value = "deferred,immediate")]
    pub modes: Vec<String>,
}

struct Typist {
    conn: ConnId,
    peer: PeerId,
    fork: Automerge,
    text: automerge::ObjId,
    next_due: Instant,
    /// Changes typed and not yet durable: (hash, scheduled time).
    open: Vec<(ChangeHash, Instant)>,
}

/// One sync message carrying `changes`, with heads and no have/need.
pub fn message(heads: Vec<ChangeHash>, changes: Vec<Vec<u8>>) -> sync::Message {
    sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: changes.into(),
        flags: None,
        version: sync::MessageVersion::V1,
    }
}

pub fn run(a: &Args, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    println!(
        "# ingest: {} typists x {} keystrokes/s for {} s per size; one sync message per keystroke; SQLite synchronous=FULL",
        a.typists, a.rate, a.secs
    );
    println!(
        "{:>9} {:>8} | {:>7} {:>7} | {:>12} {:>12} | {:>11} {:>11} | {:>10} | {:>14} | {:>8}",
        "mode",
        "ops",
        "changes",
        "batches",
        "core ms/chg",
        "other ms/chg",
        "lat p50 ms",
        "lat p99 ms",
        "ref ms/chg",
        "ratio core/ref",
        "client"
    );
    for &size in &a.sizes {
        for mode in &a.modes {
            one_size(a, rt, size, mode)?;
        }
    }
    Ok(())
}

/// The driver's tick period (`RepoConfig::tick`).
const TICK: Duration = Duration::from_millis(500);

fn one_size(a: &Args, rt: &tokio::runtime::Runtime, size: usize, mode: &str) -> anyhow::Result<()> {
    let base = docgen::text_doc(size, 10)?;
    let text = docgen::text_obj(&base)?;
    let bytes = base.save();
    let dir = tempfile::tempdir()?;
    let doc = DocumentId::from_bytes([7; 16]);
    let storage = rt.block_on(async {
        let s = SqliteStorage::open(SqliteConfig::new(dir.path().join("concord.db"))).await?;
        s.append(&doc, ChunkKey::of(&bytes), &bytes).await?;
        anyhow::Ok(s)
    })?;
    let defer = match mode {
        "deferred" => Some(DeferApply::default()),
        "immediate" => None,
        other => anyhow::bail!("unknown mode {other} (deferred or immediate)"),
    };
    let mut h = Harness::with_defer(Arc::new(storage), rt.handle().clone(), defer)?;
    let start = Instant::now();
    let mut typists: Vec<Typist> = (0..a.typists)
        .map(|i| Typist {
            conn: ConnId(i as u64 + 1),
            peer: PeerId::new(format!("typist-{i}")),
            fork: base.fork().with_actor(ActorId::from([i as u8 + 10; 16])),
            text: text.clone(),
            next_due: start,
            open: Vec::new(),
        })
        .collect();
    for t in &typists {
        h.connect(t.conn, &t.peer, None);
        h.sync(
            t.conn,
            &t.peer,
            doc,
            message(base.get_heads(), Vec::new()).encode(),
        );
    }
    h.settle(Duration::from_secs(120));
    h.sent.clear();
    h.events.clear();

    let mut replay: Vec<(ConnId, Vec<u8>)> = Vec::new();
    let mut latencies = Vec::new();
    let mut typed = 0usize;
    let mut client_cpu = Duration::ZERO;
    let (busy0, commits0, cpu0, main0) =
        (h.busy, h.core.stats().commits, process_cpu(), thread_cpu());
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let t0 = Instant::now();
    for (i, t) in typists.iter_mut().enumerate() {
        t.next_due = t0 + interval.mul_f64(i as f64 / a.typists as f64);
    }
    let end = t0 + Duration::from_secs_f64(a.secs);
    let mut last_tick = t0;
    loop {
        let now = Instant::now();
        if now.duration_since(last_tick) >= TICK {
            h.tick();
            last_tick = now;
        }
        let typing = now < end;
        if typing {
            for t in typists.iter_mut() {
                while t.next_due <= now {
                    let c0 = Instant::now();
                    let mut tx = t.fork.transaction();
                    let len = automerge::ReadDoc::length(&tx, &t.text);
                    tx.splice_text(&t.text, len, 0, "k")?;
                    tx.commit();
                    let Some(change) = t.fork.get_last_local_change() else {
                        anyhow::bail!("no change typed");
                    };
                    let data =
                        message(t.fork.get_heads(), vec![change.raw_bytes().to_vec()]).encode();
                    client_cpu += c0.elapsed();
                    t.open.push((change.hash(), t.next_due));
                    if replay.len() < a.reference_msgs {
                        replay.push((t.conn, data.clone()));
                    }
                    h.sync(t.conn, &t.peer, doc, data);
                    typed += 1;
                    t.next_due += interval;
                }
            }
        } else if h.pending() == 0 && typists.iter().all(|t| t.open.is_empty()) {
            break;
        } else if now > end + Duration::from_secs(600) {
            anyhow::bail!("ingest did not drain in 10 minutes");
        }
        let next = typists.iter().map(|t| t.next_due).min().unwrap_or(end);
        let wait = if typing {
            next.saturating_duration_since(Instant::now())
        } else {
            Duration::from_millis(20)
        };
        h.poll_storage(wait.min(Duration::from_millis(20)));
        h.sent.clear();
        for e in h.events.drain(..) {
            if let Event::DocChanged {
                heads,
                origin: Origin::Remote,
                ..
            } = e
            {
                let at = Instant::now();
                for t in typists.iter_mut() {
                    if let Some(pos) = t.open.iter().position(|(hash, _)| heads.contains(hash)) {
                        for (_, due) in t.open.drain(..=pos) {
                            latencies.push(at.duration_since(due).as_secs_f64() * 1e3);
                        }
                    }
                }
            }
        }
    }
    let wall = t0.elapsed();
    let pending = h.core.pending_changes(&doc);
    let flush = Instant::now();
    h.core.materialize(&doc)?;
    let flush = flush.elapsed();
    let busy = h.busy - busy0;
    let commits = h.core.stats().commits - commits0;
    let main_cpu = thread_cpu().saturating_sub(main0);
    let other_cpu = process_cpu().saturating_sub(cpu0).saturating_sub(main_cpu);
    let storage_thread = h.finish();
    let _ = storage_thread;
    let lat = Summary::of(&mut latencies);

    // Reference: the same messages, one receive_sync_message (+ reply) each.
    let mut refdoc = base.clone();
    let mut states: HashMap<ConnId, sync::State> = HashMap::new();
    let mut per = Vec::new();
    for (conn, data) in &replay {
        let msg = sync::Message::decode(data)?;
        let n = msg.changes.len().max(1);
        let st = states.entry(*conn).or_default();
        let t = Instant::now();
        refdoc.receive_sync_message(st, msg)?;
        let _reply = refdoc.generate_sync_message(st);
        per.push(t.elapsed().as_secs_f64() * 1e3 / n as f64);
    }
    let reference = Summary::of(&mut per);
    let per_change = busy.as_secs_f64() * 1e3 / typed.max(1) as f64;
    let amortized = (busy + flush).as_secs_f64() * 1e3 / typed.max(1) as f64;
    println!(
        "{:>9} {:>8} | {:>7} {:>7} | {:>12.4} {:>12.4} | {:>11.2} {:>11.2} | {:>10.4} | {:>14.4} | {:>4.0} ms",
        mode,
        size,
        typed,
        commits,
        per_change,
        other_cpu.as_secs_f64() * 1e3 / typed.max(1) as f64,
        lat.p50,
        lat.p99,
        reference.p50,
        per_change / reference.p50.max(1e-9),
        client_cpu.as_secs_f64() * 1e3,
    );
    println!(
        "           {} changes still pending at the end, applied in {:.1} ms: {:.4} ms/chg with that apply amortized",
        pending,
        flush.as_secs_f64() * 1e3,
        amortized
    );
    println!(
        "           wall {:.1} s; core busy {:.0}% of wall; mean batch {:.1} changes per commit; reference p99 {:.4} ms/chg over {} msgs",
        wall.as_secs_f64(),
        100.0 * busy.as_secs_f64() / wall.as_secs_f64(),
        typed as f64 / commits.max(1) as f64,
        reference.p99,
        reference.n
    );
    Ok(())
}
