//! `concord`: the Concord sync server and client CLI.
//!
//! ```text
//! concord serve                 # sync server on 127.0.0.1:3030, data in ./concord-data
//! concord doc create            # a client replica in ./concord-replica
//! concord doc --help
//! ```

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use concord_server::server::{self, LogFormat, ServeArgs, ServeConfig};

/// Concord: a CRDT-based, multi-leader, offline-first sync engine.
#[derive(Debug, Parser)]
#[command(name = "concord", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a sync server (WebSocket endpoint `/sync`, automerge-repo protocol v1).
    Serve(ServeArgs),
    /// Read and write documents in a local replica, syncing with servers.
    Doc(concord_server::doc::DocArgs),
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONCORD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = ServeConfig::resolve(&args)?;
    init_logs(config.log_format);
    let data = config.data.clone();
    let region = config.region.clone();
    let running = server::start(config).await.context("starting the server")?;
    let addr = running.addr;
    tracing::info!(%addr, data = %data.display(), %region, "listening");
    println!("concord listening on http://{addr} (WebSocket: ws://{addr}/sync)");
    running.serve(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Doc(args) => {
            init_logs(LogFormat::Text);
            concord_server::doc::run(args).await
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
