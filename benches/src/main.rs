//! Concord benchmark suite: each benchmark runs Concord and its reference in the same process
//! run and prints the ratio. See BENCHMARKS.md for the commands and the figures.

mod coldload;
mod docgen;
mod durable;
mod harness;
mod ingest;
mod loadgen;
mod pgcommit;
mod probe;
mod procstat;
mod reconnect;
mod relay;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    about = "Concord benchmarks (see BENCHMARKS.md)",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Per-call cost of Automerge's apply paths vs document size and batch size.
    Probe(probe::Args),
    /// Benchmark 1: remote ingest per change vs document size (server path vs reference).
    Ingest(ingest::Args),
    /// Benchmark 3: durable change ingest vs raw rusqlite inserts of the same bytes.
    Durable(durable::Args),
    /// Benchmark 5: cold load from storage vs `Automerge::load` of the saved bytes.
    Coldload(coldload::Args),
    /// Benchmark 4: reconnect of in-sync documents vs in-process automerge sync.
    Reconnect(reconnect::Args),
    /// Fan-out saturation: an open-loop load generator for any protocol v1 server (see
    /// `benches/reference/saturation.sh`).
    Loadgen(loadgen::Args),
    /// Ratios of issue 16's targets from `loadgen --json` files of several servers.
    LoadgenCompare(loadgen::report::CompareArgs),
    /// PostgreSQL's commit rate with concurrent committers, with and without `pg_notify`.
    PgCommit(pgcommit::Args),
    /// The floor: a bare WebSocket relay speaking just enough protocol v1 to route frames.
    Relay(relay::Args),
}

fn main() -> anyhow::Result<()> {
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
    };
    match Cli::parse().cmd {
        Cmd::Probe(a) => probe::run(&a),
        Cmd::Ingest(a) => ingest::run(&a, &rt()?),
        Cmd::Durable(a) => durable::run(&a, &rt()?),
        Cmd::Coldload(a) => coldload::run(&a, &rt()?),
        Cmd::Reconnect(a) => reconnect::run(&a, &rt()?),
        Cmd::Loadgen(a) => loadgen::run(a),
        Cmd::LoadgenCompare(a) => loadgen::report::compare(&a),
        Cmd::PgCommit(a) => pgcommit::run(&a),
        Cmd::Relay(a) => relay::run(&a),
    }
}
