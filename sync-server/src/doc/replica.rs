//! The local replica of one `concord doc` invocation: opening it, finding documents, and bringing
//! them up to date with the servers within the time budget.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use automerge::{Automerge, ReadDoc};
use concord::{AutomergeUrl, DocHandle, Repo, RepoConfig, RepoError};
use tokio::time::Instant;

/// How long closing waits for changes received from servers to reach local storage.
const PERSIST_WAIT: Duration = Duration::from_secs(10);

/// How long after opening the replica a server counts as reachable: one that is connects well
/// within this. A write first catches up with a reachable server; an unreachable one does not
/// hold the write back (it is committed, then the server is waited for, saying so).
const CONNECT_GRACE: Duration = Duration::from_secs(1);

/// Ctrl-C ended a wait for a server after a write; the write is committed to the local replica.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted: stopped waiting for a server; the change is committed to the local replica \
     and will sync on a later connection (`concord doc sync`)"
)]
pub(super) struct Interrupted;

/// Resolves on Ctrl-C (SIGINT). The signal is listened for from the moment this is called, not
/// from the first poll, so one that arrives in between is not lost.
fn ctrl_c() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        #[cfg(unix)]
        match sigint {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A duration for people: whole seconds, or milliseconds below one second.
fn approx(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{}s", d.as_secs_f64().round())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Prints a warning for the user (always, whatever the log filter).
pub(super) fn warn(msg: impl std::fmt::Display) {
    eprintln!("warning: {msg}");
}

/// How a document stands relative to the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Freshness {
    /// `--offline`: no server was asked.
    Offline,
    /// A server holds exactly our heads.
    Synced,
    /// No server connection within the time budget.
    Unreachable,
    /// Connected, but the server did not confirm our heads in time.
    Unconfirmed,
}

/// A replica opened for one command.
#[derive(Debug)]
pub(super) struct Replica {
    repo: Repo,
    db: PathBuf,
    servers: Vec<String>,
    online: bool,
    wait: Duration,
    deadline: Option<Instant>,
    /// The end of [`CONNECT_GRACE`].
    grace_end: Instant,
    /// Documents opened online: remote changes may still be on their way to storage at exit.
    opened: std::sync::Mutex<Vec<DocHandle>>,
    /// `--durability`: what writes wait for.
    pub(super) durability: Option<concord::core::Durability>,
}

impl Replica {
    /// Opens (creating if needed) `<data>/replica.db`; connects to `servers` unless `offline`.
    /// Server waits of this command end `wait` from now.
    pub(super) async fn open(
        data: &Path,
        servers: Vec<String>,
        offline: bool,
        wait: Duration,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data)
            .with_context(|| format!("cannot create the replica directory {}", data.display()))?;
        let db = data.join("replica.db");
        let mut config = RepoConfig {
            connect_wait: wait,
            ..RepoConfig::default()
        };
        config.backoff.initial = Duration::from_millis(50);
        config.backoff.max = Duration::from_secs(1);
        if !offline {
            config.servers.clone_from(&servers);
        }
        let repo = Repo::open_sqlite(&db, config)
            .await
            .with_context(|| format!("cannot open the replica {}", db.display()))?;
        Ok(Self {
            repo,
            db,
            servers,
            online: !offline,
            wait,
            deadline: Instant::now().checked_add(wait),
            grace_end: Instant::now() + CONNECT_GRACE,
            opened: std::sync::Mutex::default(),
            durability: None,
        })
    }

    /// The repo.
    pub(super) fn repo(&self) -> &Repo {
        &self.repo
    }

    /// False with `--offline`.
    pub(super) fn online(&self) -> bool {
        self.online
    }

    /// The time budget for server waits.
    pub(super) fn wait(&self) -> Duration {
        self.wait
    }

    /// The server URLs, for messages (without their query, which carries the token).
    pub(super) fn servers(&self) -> String {
        self.servers
            .iter()
            .map(|s| s.split_once('?').map_or(s.as_str(), |(base, _)| base))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The replica file, for messages.
    pub(super) fn db(&self) -> &Path {
        &self.db
    }

    /// What is left of the time budget.
    pub(super) fn remaining(&self) -> Duration {
        self.deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        })
    }

    /// Finds a document: the local replica, then (online) the servers.
    pub(super) async fn open_doc(&self, url: &AutomergeUrl) -> anyhow::Result<DocHandle> {
        let id = url.document_id;
        let mut found = self.repo.find_local(id).await;
        if self.online && matches!(found, Err(RepoError::Unavailable(_))) {
            // Ask only once connected: `Repo::find` can answer "unavailable" without asking a
            // server whose handshake completes while it looks in local storage.
            found = match self.repo.wait_connected(self.remaining()).await {
                Err(_) => Err(RepoError::Unavailable(id)),
                Ok(()) => match tokio::time::timeout(self.remaining(), self.repo.find(id)).await {
                    Ok(found) => found,
                    Err(_) => bail!(
                        "timed out after {:?} looking for document {} on {}",
                        self.wait,
                        id.url(),
                        self.servers()
                    ),
                },
            };
        }
        match found {
            Ok(handle) => {
                self.track(&handle);
                Ok(handle)
            }
            Err(RepoError::Unavailable(_)) if !self.online => bail!(
                "document {} is not in the local replica {}; run without --offline to fetch it from a server",
                id.url(),
                self.db.display()
            ),
            Err(RepoError::Unavailable(_)) if self.repo.peers().is_empty() => bail!(
                "document {} is not in the local replica {} and no server was reachable ({}) within {:?}",
                id.url(),
                self.db.display(),
                self.servers(),
                self.wait
            ),
            Err(RepoError::Unavailable(_)) => bail!(
                "document {} was not found: neither the local replica nor the server ({}) has it",
                id.url(),
                self.servers()
            ),
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("cannot open document {}", id.url())))
            }
        }
    }

    /// Online, waits (within the budget) until a server holds exactly our heads: this pulls the
    /// server's changes in and pushes ours out.
    pub(super) async fn refresh(&self, handle: &DocHandle) -> Freshness {
        if !self.online {
            return Freshness::Offline;
        }
        if self.repo.wait_connected(self.remaining()).await.is_err() {
            return Freshness::Unreachable;
        }
        match handle.wait_synced(self.remaining()).await {
            Ok(()) => Freshness::Synced,
            Err(_) => Freshness::Unconfirmed,
        }
    }

    /// Before a write: [`Replica::refresh`] with a server that connects within
    /// [`CONNECT_GRACE`], so that list indexes and text positions refer to the latest version.
    /// Without one, returns [`Freshness::Unreachable`] at once: the write is not held back.
    pub(super) async fn catch_up(&self, handle: &DocHandle) -> Freshness {
        if !self.online {
            return Freshness::Offline;
        }
        if !self.reachable().await {
            return Freshness::Unreachable;
        }
        self.refresh(handle).await
    }

    /// Whether a server is connected, or connects before [`CONNECT_GRACE`] since opening ends.
    async fn reachable(&self) -> bool {
        let left = self
            .grace_end
            .saturating_duration_since(Instant::now())
            .min(self.remaining());
        self.repo.wait_connected(left).await.is_ok()
    }

    /// [`Replica::refresh`] before a read, warning when the local copy may be out of date.
    pub(super) async fn refresh_for_read(&self, handle: &DocHandle) -> Freshness {
        let fresh = self.refresh(handle).await;
        match fresh {
            Freshness::Unreachable => warn(format_args!(
                "no server reachable ({}) within {:?}; showing the local copy, which may be out of date",
                self.servers(),
                self.wait
            )),
            Freshness::Unconfirmed => warn(format_args!(
                "the server did not confirm the latest version within {:?}; showing the local copy, \
                 which may be out of date",
                self.wait
            )),
            Freshness::Offline | Freshness::Synced => {}
        }
        fresh
    }

    /// After a local commit: waits (within the budget) for a server to hold it, warning when none
    /// did. With no server reachable, says at once that the change is committed and that the
    /// wait runs; Ctrl-C ends the wait ([`Interrupted`]) and loses nothing.
    pub(super) async fn confirm_write(&self, handle: &DocHandle) -> anyhow::Result<()> {
        if let Some(level) = self.durability
            && !self.online
        {
            bail!("--durability {level} needs a server connection (not --offline)");
        }
        if !self.online {
            return Ok(());
        }
        let interrupted = ctrl_c();
        if !self.reachable().await {
            eprintln!(
                "committed to the local replica; waiting up to {} for a server ({}) to hold it \
                 (Ctrl-C stops waiting, the change is kept)",
                approx(self.remaining()),
                self.servers()
            );
        }
        tokio::select! {
            confirmed = self.wait_for_server(handle) => confirmed,
            () = interrupted => Err(Interrupted.into()),
        }
    }

    async fn wait_for_server(&self, handle: &DocHandle) -> anyhow::Result<()> {
        if let Some(level) = self.durability {
            if self.remaining().is_zero() {
                anyhow::bail!(
                    "the change is committed to the local replica, but no time was left to wait \
                     for durability {level}: reaching a server ({}) used the whole --timeout of \
                     {:?}; it syncs on a later connection (`concord doc sync`), or retry with a \
                     longer --timeout",
                    self.servers(),
                    self.wait
                );
            }
            let report = handle
                .wait_durable(level, self.remaining())
                .await
                .context("the change is committed to the local replica, but")?;
            eprintln!("durable: {report}");
            return Ok(());
        }
        let after = self.refresh(handle).await;
        let later = "it is committed to the local replica and will sync on a later connection \
                     (`concord doc sync`)";
        match after {
            Freshness::Offline | Freshness::Synced => {}
            Freshness::Unreachable => warn(format_args!(
                "no server reachable ({}) within {:?}; {later}",
                self.servers(),
                self.wait
            )),
            Freshness::Unconfirmed => warn(format_args!(
                "no server confirmed the change within {:?}; {later}",
                self.wait
            )),
        }
        Ok(())
    }

    /// Remembers a document whose remote changes must be saved before exit (online only).
    pub(super) fn track(&self, handle: &DocHandle) {
        if let (true, Ok(mut opened)) = (self.online, self.opened.lock()) {
            opened.push(handle.clone());
        }
    }

    /// True when local storage holds every head `handle` has in memory.
    async fn stored(&self, handle: &DocHandle) -> anyhow::Result<bool> {
        let heads = handle.heads()?;
        let stored = self.repo.storage().load(&handle.id()).await?;
        let bytes: Vec<u8> = stored
            .chunks
            .iter()
            .flat_map(|c| c.bytes.iter().copied())
            .collect();
        if bytes.is_empty() {
            return Ok(heads.is_empty());
        }
        let doc = Automerge::load(&bytes)?;
        Ok(heads.iter().all(|h| doc.get_change_by_hash(h).is_some()))
    }

    /// Waits until changes received from servers are committed to local storage. `Repo::flush`
    /// alone is not enough: remote changes are committed asynchronously, and a commit that is
    /// not yet issued is not waited for.
    async fn persist(&self, handle: &DocHandle) {
        if self.repo.deletion(&handle.id()).is_some() {
            return; // Deleted (`rm`): nothing of it is kept.
        }
        let end = Instant::now() + PERSIST_WAIT;
        loop {
            self.repo.flush().await;
            match self.stored(handle).await {
                Ok(true) => return,
                Ok(false) if Instant::now() < end => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(false) => {
                    return warn(format_args!(
                        "changes of {} received from the server were not saved to the local replica \
                         within {PERSIST_WAIT:?}; they will be fetched again next time",
                        handle.url()
                    ));
                }
                Err(e) => {
                    return warn(format_args!(
                        "cannot check what is saved of {}: {e:#}",
                        handle.url()
                    ));
                }
            }
        }
    }

    /// Saves what servers sent, closes connections and lets storage writes finish.
    pub(super) async fn close(self) {
        let opened = self
            .opened
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default();
        for handle in &opened {
            self.persist(handle).await;
        }
        self.repo.shutdown().await;
    }
}
