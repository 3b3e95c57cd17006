//! `concord`: the Concord sync server and client CLI.
//!
//! ```text
//! concord serve --dev           # sync server on 127.0.0.1:3030, data in ./concord-data,
//!                               # printing a 1 h development token
//! concord doc create            # a client replica in ./concord-replica
//! concord doc --help
//! ```

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use concord_server::auth::{self, KeyRing, TokenRequest};
use concord_server::cluster;
use concord_server::server::{self, DatabaseUrl, LogFormat, ServeArgs, ServeConfig};

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
    Serve(Box<ServeArgs>),
    /// Read and write documents in a local replica, syncing with servers.
    Doc(concord_server::doc::DocArgs),
    /// Mint access tokens for clients.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a signed token granting access to documents (its id goes to stderr).
    Create(TokenArgs),
    /// Revoke a token (by id) or every token of a principal; servers using this data directory
    /// refuse them within a second and close their connections.
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
struct RevokeArgs {
    /// The server's data directory (the list is `<data>/revoked.json`).
    #[arg(long, env = "CONCORD_DATA", default_value = "concord-data")]
    data: std::path::PathBuf,
    /// The cluster's PostgreSQL URL: revoke there (every node applies it within a second).
    #[arg(long, env = "CONCORD_DATABASE_URL", hide_env_values = true)]
    database: Option<DatabaseUrl>,
    /// Token id to revoke (printed by `token create`).
    #[arg(long = "id", required_unless_present = "principal")]
    ids: Vec<String>,
    /// Principal whose every token is revoked.
    #[arg(long)]
    principal: Option<String>,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The server's data directory (its key file is `<data>/auth-keys.json`).
    #[arg(long, env = "CONCORD_DATA", default_value = "concord-data")]
    data: std::path::PathBuf,
    /// Key file (overrides `--data`).
    #[arg(long, env = "CONCORD_AUTH_KEYS")]
    keys: Option<std::path::PathBuf>,
    /// The cluster's PostgreSQL URL: sign with the cluster's key, kept there.
    #[arg(long, env = "CONCORD_DATABASE_URL", hide_env_values = true)]
    database: Option<DatabaseUrl>,
    /// Principal the token identifies.
    #[arg(long, default_value = "cli")]
    principal: String,
    /// Document URL or id to grant (repeatable); all documents when absent.
    #[arg(long = "doc")]
    docs: Vec<String>,
    /// Grant read access only.
    #[arg(long)]
    read_only: bool,
    /// Admin rights: the admin API (`/admin/*`); for every document only.
    #[arg(long, conflicts_with = "docs")]
    admin: bool,
    /// Lifetime, e.g. `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
}

fn init_logs(format: LogFormat) {
    // Automerge's INFO spans (one per parsed column) cost 6-8 % of the CPU per change.
    init_logs_with(format, "info,automerge=warn");
}

fn init_logs_with(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONCORD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
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

/// Prints a status line; a closed stdout (e.g. a supervisor that stopped reading) is not an error.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Lifetime of the development token.
const DEV_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = ServeConfig::resolve(&args)?;
    init_logs(config.log_format);
    let data = config.data.clone();
    let region = config.region.clone();
    let running = server::start(config).await.context("starting the server")?;
    let addr = running.addr;
    match &running.cluster {
        Some(c) => tracing::info!(%addr, node = %c.node, %region, "listening (cluster node)"),
        None => tracing::info!(%addr, data = %data.display(), %region, "listening"),
    }
    say(&format!(
        "concord listening on http://{addr} (WebSocket: ws://{addr}/sync)"
    ));
    if let Some(admin) = running.admin_addr {
        tracing::info!(%admin, "admin API on its own listener");
        say(&format!("concord admin API on http://{admin}/admin/"));
    }
    if args.dev {
        print_dev_token(&running);
    }
    running.serve(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `--dev`: a full-access admin token for the quick start, printed only on a loopback address.
fn print_dev_token(running: &server::Running) {
    if !running.addr.ip().is_loopback() {
        tracing::warn!("--dev prints a development token on a loopback address only");
        return;
    }
    let dev = TokenRequest {
        principal: "dev".into(),
        docs: None,
        read_only: false,
        ttl: DEV_TOKEN_TTL,
        admin: true,
    };
    match auth::mint(&running.keys, &dev) {
        Ok(token) => {
            say(&format!(
                "development token (full access and admin, 1 h, loopback only): {token}"
            ));
            say(&format!("  export CONCORD_TOKEN={token}"));
        }
        Err(e) => tracing::error!(error = %e, "cannot mint the development token"),
    }
}

/// The cluster's database, for the token commands (same timeouts as a node's defaults).
async fn database(url: &DatabaseUrl) -> anyhow::Result<concord::storage::PostgresStorage> {
    let config = ServeConfig::default();
    let pg = cluster::postgres_config(&config, url, "concord-cli");
    Ok(cluster::open(pg).await?)
}

async fn token(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    let args = match cmd {
        TokenCommand::Create(args) => args,
        TokenCommand::Revoke(r) => {
            let revoke = |list: &mut auth::Revocations| {
                list.tokens.extend(r.ids.iter().cloned());
                list.principals.extend(r.principal.iter().cloned());
            };
            if let Some(url) = &r.database {
                let db = database(url).await?;
                cluster::auth::update_revocations(db.pool(), revoke).await?;
                eprintln!("revoked; the cluster's nodes apply it within a second");
                return Ok(ExitCode::SUCCESS);
            }
            let path = auth::default_revocation_file(&r.data);
            auth::Revocations::update(&path, revoke)?;
            eprintln!(
                "revoked; servers on {} apply it within a second",
                r.data.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    let ring = match &args.database {
        Some(url) => {
            let db = database(url).await?;
            cluster::auth::load_or_create_keys(db.pool()).await?
        }
        None => {
            let path = args
                .keys
                .clone()
                .unwrap_or_else(|| auth::default_key_file(&args.data));
            KeyRing::load_or_create(&path)?
        }
    };
    let docs = if args.docs.is_empty() {
        None
    } else {
        Some(
            args.docs
                .iter()
                .map(|d| {
                    d.parse::<concord::DocumentId>()
                        .with_context(|| format!("--doc {d}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        )
    };
    let req = TokenRequest {
        principal: args.principal,
        docs,
        read_only: args.read_only,
        ttl: args.ttl,
        admin: args.admin,
    };
    let token = auth::mint(&ring, &req)?;
    if let Some(id) = auth::token_id_of(&token) {
        eprintln!("token id: {id}");
    }
    say(&token);
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Token(cmd) => token(cmd).await,
        Command::Doc(args) => {
            init_logs_with(LogFormat::Text, "warn");
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
