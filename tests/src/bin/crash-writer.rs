//! Writes changes to a SQLite-backed repo forever, printing `ACK <key>` after each commit.
//! Usage: crash-writer DB RUN [DOC_ID]. Prints `DOC <id>` first. Killed by the crash test.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use automerge::ROOT;
use automerge::transaction::Transactable;
use concord::core::Housekeeping;
use concord::storage::{SqliteConfig, SqliteStorage};
use concord::{DocumentId, Repo, RepoConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // Bounded: the test kills us long before this; a hang must not hang the test.
    tokio::time::timeout(std::time::Duration::from_secs(60), run())
        .await
        .context("crash-writer made no progress for 60 s")?
}

async fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let db = args.get(1).context("usage: crash-writer DB RUN [DOC]")?;
    let run = args.get(2).context("usage: crash-writer DB RUN [DOC]")?;
    let storage = SqliteStorage::open(SqliteConfig::new(db)).await?;
    let config = RepoConfig {
        // Compact often, so that kills land during compactions too.
        housekeeping: Housekeeping {
            compact_after_increments: 4,
            ..Housekeeping::default()
        },
        ..RepoConfig::default()
    };
    let repo = Repo::open(Arc::new(storage), config).await?;
    let doc = match args.get(3) {
        Some(id) => repo.find_local(id.parse::<DocumentId>()?).await?,
        None => repo.create().await?,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "DOC {}", doc.id())?;
    out.flush()?;
    for i in 0u64.. {
        let key = format!("r{run}-{i}");
        // Some values are large, so commits and compactions take real time.
        let value = if i % 7 == 0 {
            "x".repeat(8_000)
        } else {
            i.to_string()
        };
        doc.change(|tx| tx.put(ROOT, key.as_str(), value)).await?;
        writeln!(out, "ACK {key}")?;
        out.flush()?;
    }
    Ok(())
}
