//! A Concord client process for multi-process tests (its own SQLite replica).
//! Usage:
//!   test-client SERVER DB create            -> prints `DOC <id>` once the server holds it
//!   test-client SERVER DB put DOC KEY VALUE -> writes, waits until the server holds it
//!   test-client SERVER DB get DOC           -> prints `JSON <value>` once synced

use std::time::Duration;

use anyhow::{Context, bail};
use automerge::ROOT;
use automerge::transaction::Transactable;
use concord::{DocumentId, Repo, RepoConfig};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, db, cmd, rest @ ..] = args.as_slice() else {
        bail!("usage: test-client SERVER DB create|put|get ...");
    };
    let repo = Repo::open_sqlite(db, RepoConfig::default().with_server(server.clone())).await?;
    repo.wait_connected(WAIT).await?;
    match (cmd.as_str(), rest) {
        ("create", []) => {
            let doc = repo.create().await?;
            doc.wait_synced(WAIT).await?;
            println!("DOC {}", doc.id());
        }
        ("put", [doc, key, value]) => {
            let doc = repo.find(doc.parse::<DocumentId>()?).await?;
            doc.change(|tx| tx.put(ROOT, key.as_str(), value.as_str()))
                .await?;
            doc.wait_synced(WAIT).await?;
            println!("OK");
        }
        ("get", [doc]) => {
            let doc = repo.find(doc.parse::<DocumentId>()?).await?;
            doc.wait_synced(WAIT).await.context("syncing")?;
            println!("JSON {}", doc.to_json()?);
        }
        _ => bail!("unknown command {cmd} {rest:?}"),
    }
    repo.shutdown().await;
    Ok(())
}
