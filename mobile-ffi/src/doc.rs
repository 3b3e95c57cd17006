//! `DocHandle`: reads, writes, durability waits, presence and listeners of one document.

use std::sync::Arc;

use concord::id::encode_head;
use concord::repo::DocEvent;

use crate::dispatch::{self, Subscription};
use crate::edit::{self, Edit, parse_path};
use crate::error::{ConcordError, Result};
use crate::listeners::{
    ChangeEvent, ChangeListener, DeletedEvent, DeletedListener, EphemeralListener,
    EphemeralMessage, coalesce_change, drop_newest, keep_all,
};
use crate::repo::{RepoInner, wait_ms};
use crate::runtime::run;
use crate::value::{self, Value};

/// How far a write must have travelled for a wait to resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Durability {
    /// Committed to this device's SQLite file (every write already resolves at this point).
    Local,
    /// A server holds exactly this replica's heads (it has committed every change we have, and we
    /// have every change it has for this document).
    Server,
}

/// One document of a [`Repo`](crate::repo::Repo). Reads are synchronous and read this replica's
/// own copy (read-your-writes, never blocked by the network); writes resolve once committed
/// locally and sync in the background.
#[derive(uniffi::Object)]
pub struct DocHandle {
    repo: Arc<RepoInner>,
    handle: concord::DocHandle,
}

impl std::fmt::Debug for DocHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocHandle")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl DocHandle {
    pub(crate) fn new(repo: Arc<RepoInner>, handle: concord::DocHandle) -> Self {
        Self { repo, handle }
    }

    /// The engine's handle.
    pub(crate) fn inner(&self) -> &concord::DocHandle {
        &self.handle
    }

    /// Delivers `map` of this document's events to `deliver` (see [`dispatch::start`]).
    fn subscribe<E: Send + 'static>(
        &self,
        map: impl FnMut(DocEvent) -> Option<E> + Send + 'static,
        overflow: dispatch::Overflow<E>,
        deliver: impl Fn(E) -> Result<()> + Send + 'static,
    ) -> Result<Arc<Subscription>> {
        self.repo.check_open()?;
        dispatch::start(
            self.handle.subscribe(),
            vec![],
            map,
            overflow,
            deliver,
            &self.repo.subscriptions,
        )
    }

    /// `Closed` once the repo is shut down.
    pub(crate) fn check_open(&self) -> Result<()> {
        self.repo.check_open()
    }

    fn with_doc<T>(&self, f: impl FnOnce(&automerge::Automerge) -> Result<T>) -> Result<T> {
        self.repo.check_open()?;
        self.handle.with_doc(f)?
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl DocHandle {
    /// The `automerge:` URL to share with other replicas.
    pub fn url(&self) -> String {
        self.handle.url().to_string()
    }

    /// The current heads (bs58check change hashes).
    pub fn heads(&self) -> Result<Vec<String>> {
        self.with_doc(|d| Ok(d.get_heads().iter().map(encode_head).collect()))
    }

    /// The typed value at `path` (`""` is the root), `None` when nothing is there.
    pub fn get(&self, path: String) -> Result<Option<Value>> {
        let path = parse_path(&path)?;
        self.with_doc(|d| value::get(d, &path))
    }

    /// The value at `path` as a JSON string (text and counters as JSON strings and numbers),
    /// `None` when nothing is there.
    pub fn get_json(&self, path: String) -> Result<Option<String>> {
        let path = parse_path(&path)?;
        let json = self.with_doc(|d| Ok(concord::path::get(d, &path)?))?;
        json.map(|j| serde_json::to_string(&j).map_err(ConcordError::from))
            .transpose()
    }

    /// Applies `edits` in one change (all or nothing); resolves once committed locally.
    pub async fn apply(&self, edits: Vec<Edit>) -> Result<()> {
        self.repo.check_open()?;
        let parsed = edits
            .into_iter()
            .map(Edit::parse)
            .collect::<Result<Vec<_>>>()?;
        let handle = self.handle.clone();
        run(async move {
            let mut failure = None;
            let changed = handle
                .change(|tx| {
                    for e in &parsed {
                        if let Err(err) = edit::apply(tx, e) {
                            failure = Some(err);
                            return Err("edit failed");
                        }
                    }
                    Ok(())
                })
                .await;
            match (failure, changed) {
                (Some(e), _) => Err(e),
                (None, r) => Ok(r?),
            }
        })
        .await
    }

    /// Writes `json` at `path` (see `Edit::Put`).
    pub async fn put(&self, path: String, json: String) -> Result<()> {
        self.apply(vec![Edit::Put { path, json }]).await
    }

    /// Deletes the value at `path`; without a path (`doc.delete()`), deletes the whole
    /// document, as [`DocHandle::delete_document`] does.
    #[uniffi::method(default(path = None))]
    pub async fn delete(&self, path: Option<String>) -> Result<()> {
        match path {
            Some(path) => self.apply(vec![Edit::Delete { path }]).await,
            None => self.delete_document().await,
        }
    }

    /// Deletes the document here and, through the servers, everywhere: resolves once the
    /// deletion is committed locally. The local copy is gone at once (later reads and writes
    /// fail with `Deleted`); every replica that holds it drops it when it learns of it (now or
    /// when it reconnects) and tells its `DeletedListener`s. Delete wins over concurrent and
    /// offline edits. Servers need write access to accept it (`Repo::deletion(url).confirmed`
    /// once one has). Deleting twice fails with `Deleted`.
    pub async fn delete_document(&self) -> Result<()> {
        self.repo.check_open()?;
        let handle = self.handle.clone();
        run(async move { Ok(handle.delete().await?) }).await
    }

    /// Inserts `json` into the list at `path` before `index`.
    pub async fn insert(&self, path: String, index: u64, json: String) -> Result<()> {
        self.apply(vec![Edit::Insert { path, index, json }]).await
    }

    /// Replaces `delete` characters at `pos` of the text at `path` with `text`.
    pub async fn splice_text(
        &self,
        path: String,
        pos: u64,
        delete: u64,
        text: String,
    ) -> Result<()> {
        self.apply(vec![Edit::SpliceText {
            path,
            pos,
            delete,
            text,
        }])
        .await
    }

    /// Adds `by` to the counter at `path` (creating it when absent).
    pub async fn increment(&self, path: String, by: i64) -> Result<()> {
        self.apply(vec![Edit::Increment { path, by }]).await
    }

    /// Waits until a server holds exactly our heads (`Durability::Server`). `Timeout` after
    /// `timeout_ms`; `Network` at once when the repo has no server URLs.
    pub async fn wait_synced(&self, timeout_ms: u64) -> Result<()> {
        self.wait_durable(Durability::Server, timeout_ms).await
    }

    /// Waits until what this replica holds of the document reached `durability`.
    pub async fn wait_durable(&self, durability: Durability, timeout_ms: u64) -> Result<()> {
        self.repo.check_open()?;
        let (repo, handle) = (self.repo.clone(), self.handle.clone());
        match durability {
            Durability::Local => {
                let wait = wait_ms(timeout_ms);
                run(async move {
                    tokio::time::timeout(wait, repo.repo.flush())
                        .await
                        .map_err(|_| {
                            ConcordError::Timeout(format!(
                                "local storage did not finish in {wait:?}"
                            ))
                        })
                })
                .await
            }
            Durability::Server if !repo.has_servers() => Err(ConcordError::Network(
                "this repo has no server URLs (opened offline)".to_owned(),
            )),
            Durability::Server => {
                run(async move { Ok(handle.wait_synced(wait_ms(timeout_ms)).await?) }).await
            }
        }
    }

    /// True when a connected server is known to hold exactly our heads right now.
    pub fn is_synced(&self) -> Result<bool> {
        self.repo.check_open()?;
        Ok(self.handle.sync_status()?.iter().any(|s| s.in_sync))
    }

    /// Sends ephemeral bytes (presence, cursors) to the other replicas that have this document
    /// open through the server. Never stored; dropped when offline. `data` must not be empty.
    pub fn broadcast(&self, data: Vec<u8>) -> Result<()> {
        self.repo.check_open()?;
        if data.is_empty() {
            return Err(ConcordError::InvalidArgument(
                "ephemeral data must not be empty".to_owned(),
            ));
        }
        Ok(self.handle.broadcast(data)?)
    }

    /// Calls `listener` for every committed change of this document, local and remote.
    pub fn subscribe_changes(
        &self,
        listener: Arc<dyn ChangeListener>,
    ) -> Result<Arc<Subscription>> {
        let url = self.url();
        self.subscribe(
            move |event| match event {
                DocEvent::Changed { heads, origin } => Some(ChangeEvent {
                    url: url.clone(),
                    heads: heads.iter().map(encode_head).collect(),
                    origin: origin.into(),
                    coalesced: 0,
                }),
                _ => None,
            },
            coalesce_change,
            move |event| listener.on_change(event),
        )
    }

    /// Calls `listener` when this document is deleted (through this repo, or by another replica
    /// as a server tells).
    pub fn subscribe_deleted(
        &self,
        listener: Arc<dyn DeletedListener>,
    ) -> Result<Arc<Subscription>> {
        let url = self.url();
        self.subscribe(
            move |event| match event {
                DocEvent::Deleted { by, at_ms, origin } => Some(DeletedEvent {
                    url: url.clone(),
                    by,
                    at_ms,
                    origin: origin.into(),
                }),
                _ => None,
            },
            keep_all,
            move |event| listener.on_deleted(event),
        )
    }

    /// Calls `listener` for every ephemeral message other replicas broadcast on this document.
    pub fn subscribe_ephemeral(
        &self,
        listener: Arc<dyn EphemeralListener>,
    ) -> Result<Arc<Subscription>> {
        self.subscribe(
            |event| match event {
                DocEvent::Ephemeral {
                    from,
                    session_id,
                    data,
                } => Some(EphemeralMessage {
                    from_peer: from.to_string(),
                    session_id,
                    data,
                }),
                _ => None,
            },
            drop_newest,
            move |message| listener.on_message(message),
        )
    }
}
