//! Version history and document lists: `DocHandle.history()`, `diff()`, `restore()`, and
//! `Repo.list_local()`, `list_remote()` (over client-core's `DocHandle::history/diff/restore`
//! and `Repo::list_local/list_remote`). Heads are bs58check strings, as `heads()` returns them.

use concord::api::ListQuery;
use concord::history::{HistoryQuery, JsonPatch};
use concord::id::{decode_head, encode_head};

use crate::doc::DocHandle;
use crate::error::{ConcordError, Result};
use crate::repo::Repo;
use crate::runtime::run;

/// One change of a document's history.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HistoryEntry {
    /// The change hash (bs58check).
    pub hash: String,
    /// The writing replica's Automerge actor (hex).
    pub actor: String,
    /// The change's sequence number for its actor.
    pub seq: u64,
    /// Hybrid logical clock time: milliseconds (the writer's clock)...
    pub time_ms: u64,
    /// ... and the logical counter within that millisecond.
    pub time_counter: u32,
    /// The app's commit message, if any.
    pub message: Option<String>,
    /// The changes it depends on (bs58check).
    pub deps: Vec<String>,
    /// How many operations it holds.
    pub ops: u64,
    /// The principal that wrote it, as the server saw its token, when known.
    pub author: Option<String>,
}

/// One page of a document's history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HistoryPage {
    /// The changes.
    pub changes: Vec<HistoryEntry>,
    /// Pass it as `cursor` for the next page; `None` on the last.
    pub next: Option<String>,
    /// How many changes the listed version has in all.
    pub total: u64,
    /// The heads of the listed version.
    pub heads: Vec<String>,
}

/// A document the server keeps for this repo's principal.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RemoteDocument {
    /// Its `automerge:` URL.
    pub url: String,
    /// `grant` (the token names it) or `created` (the principal created it).
    pub source: String,
    /// Pass it as `cursor` to continue after this entry.
    pub cursor: String,
}

/// One page of the documents the server keeps for this repo's principal.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RemotePage {
    /// The documents: first those the token names, then those the principal created.
    pub documents: Vec<RemoteDocument>,
    /// Pass it as `cursor` for the next page; `None` on the last.
    pub next: Option<String>,
}

fn parse_heads(heads: &[String]) -> Result<Vec<automerge::ChangeHash>> {
    heads
        .iter()
        .map(|h| {
            decode_head(h.trim()).map_err(|e| ConcordError::InvalidArgument(format!("heads: {e}")))
        })
        .collect()
}

fn limit_arg(limit: Option<u32>) -> Option<usize> {
    limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX))
}

#[uniffi::export(async_runtime = "tokio")]
impl DocHandle {
    /// One page of the change log, newest first: at most `limit` changes (default 50, at most
    /// 1000) after `cursor` (the `next` of the previous page). `InvalidArgument` for a cursor
    /// that is not a change of the history.
    #[uniffi::method(default(limit = None, cursor = None))]
    pub async fn history(&self, limit: Option<u32>, cursor: Option<String>) -> Result<HistoryPage> {
        self.check_open()?;
        let mut query = HistoryQuery::new();
        if let Some(l) = limit_arg(limit) {
            query = query.limit(l);
        }
        if let Some(c) = cursor {
            query = query.after(
                decode_head(c.trim())
                    .map_err(|e| ConcordError::InvalidArgument(format!("cursor: {e}")))?,
            );
        }
        let handle = self.inner().clone();
        let page = run(async move { Ok(handle.history(&query).await?) }).await?;
        Ok(HistoryPage {
            changes: page
                .changes
                .iter()
                .map(|c| HistoryEntry {
                    hash: encode_head(&c.hash),
                    actor: c.actor.to_hex_string(),
                    seq: c.seq,
                    time_ms: c.hlc.ms,
                    time_counter: c.hlc.counter,
                    message: c.message.clone(),
                    deps: c.deps.iter().map(encode_head).collect(),
                    ops: c.ops,
                    author: c.author.as_ref().map(|a| a.principal.clone()),
                })
                .collect(),
            next: page.next.as_ref().map(encode_head),
            total: u64::try_from(page.total).unwrap_or(u64::MAX),
            heads: page.heads.iter().map(encode_head).collect(),
        })
    }

    /// The JSON patches (a JSON array) that turn the version at `from` into the version at
    /// `to` (`[]` is the empty document). `InvalidArgument` for heads the document lacks.
    pub fn diff(&self, from: Vec<String>, to: Vec<String>) -> Result<String> {
        self.check_open()?;
        let patches: Vec<JsonPatch> = self
            .inner()
            .diff(&parse_heads(&from)?, &parse_heads(&to)?)?;
        Ok(serde_json::to_string(&patches)?)
    }

    /// Makes the document equal to the version at `heads` with one new change on top (not a
    /// rewind: it syncs like any change, and concurrent edits elsewhere still merge). `true`
    /// once committed locally, `false` when the document already equals that version.
    /// `InvalidArgument` for heads the document lacks (nothing changes).
    pub async fn restore(&self, heads: Vec<String>) -> Result<bool> {
        self.check_open()?;
        let heads = parse_heads(&heads)?;
        let handle = self.inner().clone();
        run(async move { Ok(handle.restore(&heads).await?) }).await
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl Repo {
    /// The URLs of every document stored in this replica (as `document_urls`).
    pub async fn list_local(&self) -> Result<Vec<String>> {
        let repo = self.engine()?;
        run(async move {
            let ids = repo.list_local().await?;
            Ok(ids.iter().map(|id| id.url().to_string()).collect())
        })
        .await
    }

    /// One page of the documents the server keeps for this repo's token (`GET /v1/docs`):
    /// those the token names, then those its principal created. At most `limit` (server
    /// default 100) after `cursor` (the `next` of the previous page). `Network` when no server
    /// answers, `Denied` when the server refuses the token.
    #[uniffi::method(default(limit = None, cursor = None))]
    pub async fn list_remote(
        &self,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<RemotePage> {
        let repo = self.engine()?;
        let mut query = ListQuery::new();
        if let Some(l) = limit_arg(limit) {
            query = query.limit(l);
        }
        if let Some(c) = cursor {
            query = query.after(c);
        }
        let page = run(async move { Ok(repo.list_remote(&query).await?) }).await?;
        Ok(RemotePage {
            documents: page
                .documents
                .iter()
                .map(|d| RemoteDocument {
                    url: d.doc.url().to_string(),
                    source: d.source.as_str().to_owned(),
                    cursor: d.cursor.clone(),
                })
                .collect(),
            next: page.next,
        })
    }
}
