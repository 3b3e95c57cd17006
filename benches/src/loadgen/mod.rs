//! `concord-bench loadgen`: a native, open-loop load generator for any server speaking the
//! automerge-repo WebSocket protocol v1 (Concord, the automerge-repo Node server, samod, the
//! bare relay of `concord-bench relay`).
//!
//! ```text
//! concord-bench loadgen --url 'ws://127.0.0.1:3030/sync?token=...' --server-pid PID \
//!     --docs 500 --readers 3 --start-rate 100 --factor 1.5 --step-secs 5 --p99-ms 100
//! ```
//!
//! D documents, each with one writer and R readers, every one its own connection and its own
//! Automerge replica ([`client`]). The writers type at a fixed total rate (keystrokes per
//! second, spread evenly over the writers), one change per keystroke; each step runs at a
//! higher rate than the last until the step's writer-to-reader p99 crosses `--p99-ms` (or the
//! rates given with `--rates` are done). Between steps the writers pause until every delivery of
//! the step has arrived (or `--drain-secs` passed), so each step's figures are its own.
//!
//! Per step it prints offered keystrokes/s and deliveries/s (keystrokes × readers), the
//! deliveries/s the readers saw during the step, latency p50/p99/p99.9/max from each
//! keystroke's *due* time ([`record`]), the server's CPU per delivery (user and system, from
//! `/proc/PID/stat` over the step and its drain) and RSS, and the generator's own CPU (as a
//! fraction of one core: near 1.0 means the generator, not the server, set the pace).

pub mod client;
mod nodes;
pub mod record;
pub mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use concord::{DocumentId, PeerId};
use futures::StreamExt;
use tokio::sync::watch;

use crate::procstat;
use client::{Phase, Shared};
use nodes::Nodes;
use record::{Recorder, StepSummary};
use report::{StepInput, StepReport};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Server URL (`ws://host:port/path`, with `?token=...` where the server needs one): the
    /// writers' server, and the readers' unless `--reader-url` is given.
    #[arg(long)]
    url: String,
    /// Where the readers connect (repeatable; a cluster's nodes): reader k of every document
    /// connects to the (k mod n)-th of these. Readers on `--url` count as same-node, the others
    /// as cross-node, in the latency split printed per step.
    #[arg(long)]
    reader_url: Vec<String>,
    /// Name of the server in the report.
    #[arg(long, default_value = "server")]
    name: String,
    /// The server's pid, for its CPU time and RSS (from /proc); without it they are not reported.
    /// Several (comma-separated, a cluster's nodes): CPU is their sum, RSS the first's, and a
    /// line per step gives each one's CPU per delivery.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// The database server's pid (PostgreSQL's postmaster): its CPU and its children's
    /// (backends) per delivery, printed with the per-node line.
    #[arg(long)]
    db_pid: Option<u32>,
    /// Documents (one writer each).
    #[arg(long, default_value_t = 500)]
    docs: usize,
    /// Readers per document.
    #[arg(long, default_value_t = 3)]
    readers: usize,
    /// Explicit keystroke rates (per second, all writers together), one step each; overrides
    /// the ramp.
    #[arg(long, value_delimiter = ',')]
    rates: Vec<f64>,
    /// Ramp: the first step's rate (keystrokes per second, all writers together).
    #[arg(long, default_value_t = 100.0)]
    start_rate: f64,
    /// Ramp: each step's rate is the previous one times this.
    #[arg(long, default_value_t = 1.5)]
    factor: f64,
    /// Ramp: at most this many steps.
    #[arg(long, default_value_t = 12)]
    max_steps: usize,
    /// The p99 bound (milliseconds): the ramp stops after `--over-steps` consecutive steps
    /// above it.
    #[arg(long, default_value_t = 100.0)]
    p99_ms: f64,
    /// Consecutive steps over the p99 bound that end the ramp (one noisy step on a shared
    /// machine does not).
    #[arg(long, default_value_t = 2)]
    over_steps: usize,
    /// Seconds each step offers load.
    #[arg(long, default_value_t = 5.0)]
    step_secs: f64,
    /// After a step, wait at most this long for its last deliveries.
    #[arg(long, default_value_t = 5.0)]
    drain_secs: f64,
    /// Connections opened concurrently during setup.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Seconds the setup may take: each handshake, and every reader receiving its document.
    #[arg(long, default_value_t = 120.0)]
    setup_secs: f64,
    /// Seconds between the end of setup (the header line) and the first step: the server's
    /// acknowledgements settle; a profiler can be reset meanwhile (e.g. `callgrind_control -z`).
    #[arg(long, default_value_t = 0.5)]
    settle_secs: f64,
    /// Generator threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Append one JSON line per step to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Tiny run for the test command: 4 documents, 2 readers, two 0.5 s steps.
    #[arg(long)]
    quick: bool,
}

impl Args {
    fn rates(&self) -> Vec<f64> {
        if !self.rates.is_empty() {
            return self.rates.clone();
        }
        (0..self.max_steps)
            .map(|i| self.start_rate * self.factor.powi(i32::try_from(i).unwrap_or(i32::MAX)))
            .collect()
    }

    fn quick(mut self) -> Self {
        if self.quick {
            self.docs = 4;
            self.readers = 2;
            if self.rates.is_empty() {
                self.rates = vec![20.0, 40.0];
            }
            self.step_secs = 0.5;
            self.drain_secs = 2.0;
            self.setup_secs = 30.0;
        }
        self
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let args = args.quick();
    if args.docs == 0 || args.readers == 0 || args.step_secs <= 0.0 {
        bail!("--docs, --readers and --step-secs must be positive");
    }
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(drive(args))
}

/// Random 16 bytes for document ids (the generator's own randomness; not the sans-IO core's).
fn random_doc() -> DocumentId {
    DocumentId::from_bytes(uuid::Uuid::new_v4().into_bytes())
}

async fn drive(args: Args) -> anyhow::Result<()> {
    let pids: Vec<String> = args.server_pid.iter().map(u32::to_string).collect();
    let server_rss = || pids.first().and_then(|p| procstat::rss_bytes(p));
    let nodes = Nodes::new(&args);
    let server_cpu = || nodes.server_cpu();
    let rss_before = server_rss();
    let (docs, readers) = (args.docs, args.readers);
    let doc_ids: Vec<DocumentId> = (0..docs).map(|_| random_doc()).collect();
    let reader_docs: Vec<usize> = (0..docs * readers).map(|r| r / readers).collect();
    let reader_url = |r: usize| match args.reader_url.len() {
        0 => &args.url,
        n => &args.reader_url[(r % readers) % n],
    };
    let cross: Vec<bool> = (0..docs * readers)
        .map(|r| *reader_url(r) != args.url)
        .collect();
    let recorder =
        Arc::new(Recorder::new(vec![readers as u64; docs], &reader_docs).with_cross(&cross));
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
    let shared = Shared {
        recorder: recorder.clone(),
        phase: phase_rx,
        ready: Arc::new(AtomicU64::new(0)),
        failed: Arc::new(AtomicU64::new(0)),
        writers: docs,
    };
    let tag = std::process::id();
    let setup = Instant::now();
    let limit = Duration::from_secs_f64(args.setup_secs);
    let deadline = setup + limit;
    let late = |what: &str| {
        anyhow::anyhow!(
            "setup: {what} not connected after {:.0} s",
            limit.as_secs_f64()
        )
    };

    // Writers first (each creates its document on the server), then the readers.
    let mut tasks = Vec::new();
    let writers = futures::stream::iter(0..docs)
        .map(|d| {
            let url = args.url.clone();
            async move {
                (
                    d,
                    client::connect(&url, PeerId::from(format!("loadgen-{tag}-w{d}")), limit).await,
                )
            }
        })
        .buffer_unordered(args.connect_concurrency.max(1));
    futures::pin_mut!(writers);
    while let Some((d, conn)) = tokio::time::timeout_at(deadline.into(), writers.next())
        .await
        .map_err(|_| late("writers"))?
    {
        let conn = conn.with_context(|| format!("writer {d}"))?;
        let sh = shared.clone();
        let doc = doc_ids[d];
        tasks.push(tokio::spawn(client::supervise(
            format!("writer {d}"),
            sh.failed.clone(),
            client::writer(conn, doc, d, sh),
        )));
    }
    let readers_stream = futures::stream::iter(0..docs * readers)
        .map(|r| {
            let url = reader_url(r).clone();
            async move {
                (
                    r,
                    client::connect(&url, PeerId::from(format!("loadgen-{tag}-r{r}")), limit).await,
                )
            }
        })
        .buffer_unordered(args.connect_concurrency.max(1));
    futures::pin_mut!(readers_stream);
    while let Some((r, conn)) = tokio::time::timeout_at(deadline.into(), readers_stream.next())
        .await
        .map_err(|_| late("readers"))?
    {
        let conn = conn.with_context(|| format!("reader {r}"))?;
        let sh = shared.clone();
        let doc = doc_ids[reader_docs[r]];
        tasks.push(tokio::spawn(client::supervise(
            format!("reader {r}"),
            sh.failed.clone(),
            client::reader(conn, doc, r, sh),
        )));
    }
    let want = (docs * readers) as u64;
    while shared.ready.load(Ordering::Relaxed) < want {
        if Instant::now() > deadline || shared.failed.load(Ordering::Relaxed) > 0 {
            bail!(
                "setup: {} of {want} readers have their document after {:.1} s ({} clients failed)",
                shared.ready.load(Ordering::Relaxed),
                setup.elapsed().as_secs_f64(),
                shared.failed.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_setup = server_rss();
    println!(
        "# loadgen {}: {docs} docs x (1 writer + {readers} readers) = {} connections, set up in {:.1} s; server RSS {} before, {} connected",
        args.name,
        docs * (readers + 1),
        setup.elapsed().as_secs_f64(),
        mib(rss_before),
        mib(rss_setup),
    );
    println!("{}", StepReport::header());
    // Let the setup's last acknowledgements settle before measuring.
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;

    let mut reports = Vec::new();
    let mut over_in_a_row = 0;
    for (i, &rate) in args.rates().iter().enumerate() {
        let step = recorder.open_step()?;
        let nodes0 = nodes.read();
        let (cpu0, gen0, delivered0) = (
            server_cpu(),
            procstat::cpu("self"),
            recorder.delivered_total(),
        );
        let start = Instant::now() + Duration::from_millis(20);
        let end = start + Duration::from_secs_f64(args.step_secs);
        phase_tx.send_replace(Phase::Run {
            step,
            start,
            end,
            rate,
        });
        tokio::time::sleep_until(end.into()).await;
        let delivered_in_window = recorder.delivered_total() - delivered0;
        let gen_window = procstat::cpu("self");
        phase_tx.send_replace(Phase::Idle);
        let drain_end = Instant::now() + Duration::from_secs_f64(args.drain_secs);
        while !recorder.step_complete(step) && Instant::now() < drain_end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let closed = Instant::now();
        let summary: StepSummary = recorder.close_step(step, closed);
        let server = server_cpu().zip(cpu0).map(|(b, a)| b.since(a));
        let report = StepReport::from(StepInput {
            server: args.name.clone(),
            step: i,
            docs,
            readers,
            rate,
            secs: args.step_secs,
            delivered_in_window,
            summary,
            server_cpu: server,
            server_rss: server_rss(),
            server_rss_before: rss_before,
            gen_cpu_window: gen_window.zip(gen0).map(|(b, a)| b.since(a)),
            failed: shared.failed.load(Ordering::Relaxed),
        });
        println!("{}", report.line());
        if let Some(split) = recorder.split(step) {
            println!("{split}");
        }
        if let Some(line) = nodes.line(i, &nodes0, report.delivered) {
            println!("{line}");
        }
        if let Some(path) = &args.json {
            report.append_json(path)?;
        }
        over_in_a_row = if report.within(args.p99_ms) {
            0
        } else {
            over_in_a_row + 1
        };
        reports.push(report);
        if over_in_a_row >= args.over_steps.max(1) && args.rates.is_empty() {
            println!(
                "# {over_in_a_row} step(s) in a row over p99 {} ms (or with deliveries missing): stopping the ramp",
                args.p99_ms
            );
            break;
        }
        if shared.failed.load(Ordering::Relaxed) > 0 {
            println!("# clients failed: stopping");
            break;
        }
    }
    phase_tx.send_replace(Phase::Stop);
    let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(tasks)).await;
    if let Some(best) = report::saturation(&reports, args.p99_ms) {
        println!(
            "# saturation ({}): {:.0} deliveries/s with p99 <= {} ms (step {})",
            args.name,
            best.delivered_per_sec(),
            args.p99_ms,
            best.step
        );
    } else {
        println!(
            "# saturation ({}): no step had p99 <= {} ms",
            args.name, args.p99_ms
        );
    }
    Ok(())
}

fn mib(b: Option<u64>) -> String {
    b.map_or_else(
        || "n/a".to_owned(),
        |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
    )
}
