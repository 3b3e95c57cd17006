//! `DocHandle`: reads, writes, subscriptions and sync status of one document.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use automerge::transaction::Transaction;
use automerge::{AutoSerde, Automerge, ChangeHash};
use tokio::sync::{broadcast, oneshot};

use super::driver::{Shared, Waiter};
use super::{DocEvent, RepoError};
use crate::core::PeerSyncStatus;
use crate::id::{AutomergeUrl, DocumentId};

/// How long the connected servers must keep saying they cannot reach enough regions before a
/// `regions:N` wait fails (a link that is reconnecting comes back within about a second).
const ISOLATION_GRACE: Duration = Duration::from_secs(2);

/// Wall-clock milliseconds since the Unix epoch: the physical input of the HLC.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Keeps a document resident while any handle to it lives.
#[derive(Debug)]
struct Pin {
    shared: Arc<Shared>,
    doc: DocumentId,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.shared.lock_doc(&self.doc).1.unpin(&self.doc);
    }
}

/// A handle on one document of a [`Repo`](super::Repo). Cheap to clone.
#[derive(Debug, Clone)]
pub struct DocHandle {
    shared: Arc<Shared>,
    doc: DocumentId,
    _pin: Arc<Pin>,
}

impl DocHandle {
    pub(super) fn new(shared: Arc<Shared>, doc: DocumentId) -> Self {
        shared.lock_doc(&doc).1.pin(&doc);
        Self {
            _pin: Arc::new(Pin {
                shared: shared.clone(),
                doc,
            }),
            shared,
            doc,
        }
    }

    /// What the handle's repo shares.
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The document id.
    pub fn id(&self) -> DocumentId {
        self.doc
    }

    /// The `automerge:` URL to share.
    pub fn url(&self) -> AutomergeUrl {
        self.doc.url()
    }

    /// Applies a change, stamped with the replica's hybrid logical clock (so last-writer-wins
    /// policies order it), and resolves once it is committed to local storage. The closure's error
    /// (or a storage failure) leaves nothing applied... or, for storage failures, applied in memory
    /// but reported as not acknowledged.
    pub async fn change<R, E: Display>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<R, RepoError> {
        let (tx, rx) = oneshot::channel();
        let (value, shard) = {
            let (shard, mut core) = self.shared.lock_doc(&self.doc);
            let now = self.shared.now();
            let (value, ticket) =
                core.change_stamped(now, wall_ms(), &self.doc, f)
                    .map_err(|e| match e {
                        crate::core::CoreError::Deleted(d) => RepoError::Deleted(d),
                        other => RepoError::Core(other),
                    })?;
            match ticket {
                Some(t) => self.shared.register(shard, t, Waiter::Commit(tx))?,
                None => return Ok(value),
            }
            (value, shard)
        };
        self.shared.wake(shard);
        match rx.await {
            Ok(Ok(_heads)) => Ok(value),
            Ok(Err(e)) => Err(RepoError::CommitFailed(e)),
            Err(_) => Err(RepoError::Closed),
        }
    }

    /// Deletes the document here and, through the servers, everywhere (see
    /// [`crate::core::Tombstone`]): resolves once the deletion is committed locally; the local
    /// copy is gone and later reads and writes fail with [`RepoError::Deleted`]. The servers
    /// learn it now or on the next connection (it needs write access there); whether one
    /// confirmed it: [`Repo::deletion`](super::Repo::deletion).
    pub async fn delete(&self) -> Result<(), RepoError> {
        super::delete(&self.shared, self.doc, None, false).await
    }

    /// Runs `f` on the current state of the document.
    /// A panic in `f` is caught and reported as [`RepoError::Panicked`]; the document is only
    /// read, so nothing is lost.
    pub fn with_doc<R>(&self, f: impl FnOnce(&Automerge) -> R) -> Result<R, RepoError> {
        let (_, mut core) = self.shared.lock_doc(&self.doc);
        if core.tombstone(&self.doc).is_some() {
            return Err(RepoError::Deleted(self.doc));
        }
        let _ = core.materialize(&self.doc); // a failure makes the document unavailable
        let doc = core
            .document(&self.doc)
            .ok_or(RepoError::Unavailable(self.doc))?;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(doc)))
            .map_err(|p| RepoError::Panicked(crate::core::panic_message(p.as_ref())))
    }

    /// The current value as JSON.
    pub fn to_json(&self) -> Result<serde_json::Value, RepoError> {
        self.with_doc(|d| {
            serde_json::to_value(AutoSerde::from(d)).unwrap_or(serde_json::Value::Null)
        })
    }

    /// Current heads.
    pub fn heads(&self) -> Result<Vec<ChangeHash>, RepoError> {
        self.with_doc(Automerge::get_heads)
    }

    /// A read-only copy of the document as it was at `heads`.
    ///
    /// Errors: [`HistoryError::UnknownHeads`](crate::history::HistoryError::UnknownHeads) when
    /// the document does not have every head.
    pub fn view_at(&self, heads: &[ChangeHash]) -> Result<Automerge, RepoError> {
        self.with_doc(|d| {
            crate::history::check_heads(d, heads, "heads")?;
            Ok(d.fork_at(heads)?)
        })?
    }

    /// Changes (local and remote, with the new heads) and ephemeral messages of this document.
    pub fn subscribe(&self) -> broadcast::Receiver<DocEvent> {
        self.shared.doc_events(self.doc).subscribe()
    }

    /// Which heads each connected peer is known to have.
    pub fn sync_status(&self) -> Result<Vec<PeerSyncStatus>, RepoError> {
        Ok(self.shared.lock_doc(&self.doc).1.sync_status(&self.doc))
    }

    /// Sends ephemeral data (presence, cursors) to the peers syncing this document.
    pub fn broadcast(&self, data: Vec<u8>) -> Result<(), RepoError> {
        let shard = {
            let (shard, mut core) = self.shared.lock_doc(&self.doc);
            core.broadcast(&self.doc, data);
            shard
        };
        self.shared.wake(shard);
        Ok(())
    }

    /// The value at `path` resolved by `schema`'s policies (the same on every replica with the
    /// same heads, whatever the order changes arrived in).
    pub fn resolved(
        &self,
        schema: &crate::policy::Schema,
        path: &crate::path::DocPath,
    ) -> Result<serde_json::Value, RepoError> {
        Ok(self.with_doc(|d| schema.resolved(d, path))??)
    }

    /// Every concurrent value at `path`, with who wrote it, when (HLC) and in which change.
    pub fn conflicts(
        &self,
        path: &crate::path::DocPath,
    ) -> Result<Vec<crate::policy::Candidate>, RepoError> {
        Ok(self.with_doc(|d| crate::policy::conflicts(d, path))??)
    }

    /// Writes `value` at `path`, superseding every concurrent value there.
    pub async fn resolve(
        &self,
        schema: &crate::policy::Schema,
        path: &crate::path::DocPath,
        value: &serde_json::Value,
    ) -> Result<(), RepoError> {
        self.change(|tx| schema.resolve(tx, path, value)).await
    }

    /// A stream of "conflict appeared" events for the schema's `KeepConflicts` paths.
    pub fn watch_conflicts(
        &self,
        schema: Arc<crate::policy::Schema>,
    ) -> Result<crate::policy::ConflictStream, RepoError> {
        crate::policy::watch_conflicts(self, schema)
    }

    /// Where the document's current heads are known to be committed (locally, on servers, on
    /// regions; see [`crate::core::Durability`]).
    pub fn durability(&self) -> Result<crate::core::DurabilityReport, RepoError> {
        let (_, core) = self.shared.lock_doc(&self.doc);
        let heads = core.heads(&self.doc).unwrap_or_default();
        Ok(core.durability(&self.doc, &heads))
    }

    /// Waits until the document's current heads (everything written so far through this
    /// replica) are committed at `level`: `Local` returns at once after a resolved write,
    /// `Server` once a server committed them, `Regions(k)` once `k` distinct region servers
    /// did. Times out with [`RepoError::NotDurable`], which says where the change is. A
    /// `Regions(k)` wait fails early with [`RepoError::RegionsUnreachable`] when the connected
    /// region server says it cannot reach enough regions (its region links are down) for two
    /// seconds in a row.
    pub async fn wait_durable(
        &self,
        level: crate::core::Durability,
        timeout: Duration,
    ) -> Result<crate::core::DurabilityReport, RepoError> {
        let heads = self.heads()?;
        let mut progress = self.shared.progress.subscribe();
        let check = || -> Result<crate::core::DurabilityReport, RepoError> {
            Ok(self
                .shared
                .lock_doc(&self.doc)
                .1
                .durability(&self.doc, &heads))
        };
        let deadline = tokio::time::Instant::now() + timeout;
        // Since when the connected servers have said they cannot reach enough regions.
        let mut isolated_since: Option<tokio::time::Instant> = None;
        loop {
            let report = check()?;
            if report.satisfies(level) {
                return Ok(report);
            }
            let mut wake = deadline;
            if let Some(server) = self.unreachable(level, &report) {
                let since = *isolated_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= ISOLATION_GRACE {
                    return Err(RepoError::RegionsUnreachable {
                        wanted: level,
                        server,
                        reached: report,
                    });
                }
                wake = wake.min(since + ISOLATION_GRACE);
            } else {
                isolated_since = None;
            }
            match tokio::time::timeout_at(wake, progress.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(RepoError::Closed),
                Err(_) if wake < deadline => {}
                Err(_) => {
                    return Err(RepoError::NotDurable {
                        wanted: level,
                        timeout,
                        reached: check()?,
                    });
                }
            }
        }
    }

    /// For a `regions:N` wait: what the connected servers reach, when that and the regions
    /// already holding the change cannot make N.
    fn unreachable(
        &self,
        level: crate::core::Durability,
        report: &crate::core::DurabilityReport,
    ) -> Option<crate::core::RegionReach> {
        let crate::core::Durability::Regions(k) = level else {
            return None;
        };
        let reach = self.shared.lock_primary().region_reach()?;
        let possible = report.storages.union(&reach.reachable).count();
        (possible < k).then_some(reach)
    }

    /// Waits until some connected peer is known to hold exactly our heads.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(), RepoError> {
        let mut progress = self.shared.progress.subscribe();
        let check =
            || -> Result<bool, RepoError> { Ok(self.sync_status()?.iter().any(|s| s.in_sync)) };
        let wait = async {
            loop {
                if check()? {
                    return Ok(());
                }
                if progress.changed().await.is_err() {
                    return Err(RepoError::Closed);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| RepoError::Timeout(timeout, "a peer to hold our heads"))?
    }
}
