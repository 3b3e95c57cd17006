//! Rust clients that write in a loop and record what their server acknowledged, and checks of
//! what a shared PostgreSQL database holds: the tools of the cluster fault tests.
//!
//! ```no_run
//! # async fn demo(url: String, db: String) -> anyhow::Result<()> {
//! use concord_tests::writers::{Writer, client, stored_doc};
//! let repo = client(&[url]).await?;
//! let doc = repo.create().await?;
//! let writer = Writer::start(doc.clone(), "w1");   // writes w1-0, w1-1, ... until stopped
//! let log = writer.stop().await;                    // what it wrote, and what was acknowledged
//! let stored = stored_doc(&db, doc.id()).await?;    // the document as the database holds it
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ROOT, ReadDoc};
use concord::core::Durability;
use concord::storage::Storage;
use concord::storage::postgres::{PostgresConfig, PostgresStorage};
use concord::{DocHandle, DocumentId, Repo, RepoConfig};
use tokio::sync::watch;

/// A client repo (memory storage) on `urls` (the first reachable; the next on failure), with a
/// quick reconnect, connected.
pub async fn client(urls: &[String]) -> Result<Repo> {
    let mut config = RepoConfig {
        servers: urls.to_vec(),
        ..RepoConfig::default()
    };
    config.backoff.initial = Duration::from_millis(20);
    config.backoff.max = Duration::from_millis(500);
    let repo = Repo::open(Arc::new(concord::storage::MemoryStorage::new()), config).await?;
    repo.wait_connected(Duration::from_secs(30)).await?;
    Ok(repo)
}

/// What a [`Writer`] did.
#[derive(Debug, Default, Clone)]
pub struct WriteLog {
    /// Every key it wrote, in order (each in a change of its own).
    pub written: Vec<String>,
    /// The hash of each of those changes.
    pub hashes: Vec<ChangeHash>,
    /// How many of the first `written` the server acknowledged (`wait_durable(Server)` said
    /// they were committed in the cluster's database).
    pub acked: usize,
    /// Acknowledgement waits that timed out (the writer kept writing).
    pub unacked_rounds: usize,
}

/// A task writing `<prefix>-<n>` keys into one document, a burst of `BURST` at a time, then
/// waiting up to `ACK_WAIT` for its server to acknowledge them.
#[derive(Debug)]
pub struct Writer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<WriteLog>,
    progress: watch::Receiver<usize>,
}

const BURST: usize = 5;
const ACK_WAIT: Duration = Duration::from_secs(2);

impl Writer {
    /// Starts writing.
    pub fn start(doc: DocHandle, prefix: &str) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let (acked_tx, progress) = watch::channel(0usize);
        let prefix = prefix.to_owned();
        let task = tokio::spawn(async move {
            let mut log = WriteLog::default();
            while !*stopped.borrow_and_update() {
                for _ in 0..BURST {
                    let key = format!("{prefix}-{}", log.written.len());
                    let n = log.written.len() as i64;
                    if doc
                        .change(|tx| tx.put(ROOT, key.as_str(), n))
                        .await
                        .is_err()
                    {
                        return log;
                    }
                    let hash = doc
                        .with_doc(|d| d.get_last_local_change().map(|c| c.hash()))
                        .ok()
                        .flatten();
                    log.written.push(key);
                    log.hashes.extend(hash);
                }
                match doc.wait_durable(Durability::Server, ACK_WAIT).await {
                    Ok(_) => {
                        log.acked = log.written.len();
                        let _ = acked_tx.send(log.acked);
                    }
                    Err(_) => log.unacked_rounds += 1,
                }
            }
            log
        });
        Self {
            stop,
            task,
            progress,
        }
    }

    /// How many writes were acknowledged so far.
    pub fn acked(&self) -> usize {
        *self.progress.borrow()
    }

    /// Waits until at least `n` writes are acknowledged (at most `timeout`).
    pub async fn wait_acked(&mut self, n: usize, timeout: Duration) -> Result<()> {
        tokio::time::timeout(timeout, self.progress.wait_for(|a| *a >= n))
            .await
            .with_context(|| format!("{n} acknowledged writes within {timeout:?}"))?
            .context("writer ended")?;
        Ok(())
    }

    /// Stops after the current burst; returns the log.
    pub async fn stop(self) -> WriteLog {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// The document `doc` as the database at `url` holds it (every stored chunk loaded).
pub async fn stored_doc(url: &str, doc: DocumentId) -> Result<Automerge> {
    let db = PostgresStorage::open(PostgresConfig::new(url)).await?;
    let stored = db.load(&doc).await?;
    db.close().await;
    let mut am = Automerge::new();
    for c in &stored.chunks {
        am.load_incremental(&c.bytes)?;
    }
    Ok(am)
}

/// The keys of the root map of `doc`.
pub fn keys(doc: &Automerge) -> BTreeSet<String> {
    doc.keys(ROOT).collect()
}

/// The writes of `logs` (acknowledged ones only, or all) that `doc` lacks.
pub fn missing(doc: &Automerge, logs: &[WriteLog], acked_only: bool) -> Vec<String> {
    let have = keys(doc);
    logs.iter()
        .flat_map(|l| {
            let n = if acked_only { l.acked } else { l.written.len() };
            l.written[..n].iter()
        })
        .filter(|k| !have.contains(*k))
        .cloned()
        .collect()
}

/// Waits until `handle` holds every write of `logs` (all of them), at most `timeout`.
pub async fn wait_holds(handle: &DocHandle, logs: &[WriteLog], timeout: Duration) -> Result<()> {
    let mut events = handle.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let lacking = handle.with_doc(|d| missing(d, logs, false).len())?;
        if lacking == 0 {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, events.recv())
            .await
            .is_err()
        {
            anyhow::bail!("still {lacking} writes missing after {timeout:?}");
        }
    }
}
