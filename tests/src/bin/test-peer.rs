//! A listening Concord peer (server policy, SQLite) for multi-process tests.
//! Usage: test-peer DB. Prints `LISTEN ws://127.0.0.1:PORT` and serves until killed.

use std::sync::Arc;

use anyhow::Context;
use concord::core::ServerPolicy;
use concord::storage::{SqliteConfig, SqliteStorage};
use concord::{Repo, RepoConfig};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let db = std::env::args().nth(1).context("usage: test-peer DB")?;
    let storage = SqliteStorage::open(SqliteConfig::new(db)).await?;
    let config = RepoConfig {
        policy: Arc::new(ServerPolicy),
        ..RepoConfig::default()
    };
    let repo = Repo::open(Arc::new(storage), config).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTEN ws://{}", listener.local_addr()?);
    // Serve for at most 5 minutes: tests kill us long before.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(300), repo.serve(listener)).await;
    Ok(())
}
