//! The change log of a document, newest first, in pages.
//!
//! Order: a deterministic reverse topological order. A change is always listed before the changes
//! it depends on; among the changes that may come next, the one with the latest HLC stamp
//! (then the greater hash) comes first. Two replicas holding the same changes list them in the
//! same order, so a page cursor (the last hash of a page) means the same thing everywhere.

use std::collections::{BinaryHeap, HashMap};

use automerge::{ActorId, Automerge, ChangeHash, ChangeMetadata};
use serde_json::{Value as Json, json};

use super::error::{HistoryError, check_heads};
use crate::policy::hlc::HlcTimestamp;
use crate::policy::stamp::{ChangeStamp, app_message};
use crate::storage::ChangeAuthor;

/// Default page size of [`HistoryQuery`].
pub const DEFAULT_PAGE: usize = 50;
/// Largest page [`list`] returns.
pub const MAX_PAGE: usize = 1000;

/// Which page of the history to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryQuery {
    /// At most this many changes ([`DEFAULT_PAGE`] when `None`; capped at [`MAX_PAGE`]).
    pub limit: Option<usize>,
    /// Continue after this change: the [`HistoryPage::next`] of the previous page.
    pub cursor: Option<ChangeHash>,
    /// List the history of the version at these heads (default: the current heads). Pass the
    /// [`HistoryPage::heads`] of the first page to page through one fixed version while others
    /// keep editing.
    pub heads: Option<Vec<ChangeHash>>,
}

impl HistoryQuery {
    /// The first page, [`DEFAULT_PAGE`] changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `limit` changes.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The page after the one whose `next` was `cursor`.
    pub fn after(mut self, cursor: ChangeHash) -> Self {
        self.cursor = Some(cursor);
        self
    }

    /// The history of the version at `heads`.
    pub fn at(mut self, heads: Vec<ChangeHash>) -> Self {
        self.heads = Some(heads);
        self
    }
}

/// Who wrote a change, as the server that first committed it saw the writer's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    /// The principal (a token's subject).
    pub principal: String,
    /// When that server committed the change (Unix milliseconds, the server's clock).
    pub at_ms: u64,
}

/// One change of the history.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChangeInfo {
    /// The change hash.
    pub hash: ChangeHash,
    /// The Automerge actor that made it (one per replica and document).
    pub actor: ActorId,
    /// Its sequence number among the actor's changes.
    pub seq: u64,
    /// Its HLC time (see [`crate::policy::stamp`]).
    pub hlc: HlcTimestamp,
    /// False when the change carries no Concord stamp and `hlc` is derived from its `time`.
    pub stamped: bool,
    /// The app's part of the change message, if any.
    pub message: Option<String>,
    /// The changes it depends on.
    pub deps: Vec<ChangeHash>,
    /// How many operations it holds.
    pub ops: u64,
    /// Who wrote it, when a server recorded it and this replica knows.
    pub author: Option<Attribution>,
}

impl ChangeInfo {
    fn from_meta(meta: &ChangeMetadata<'_>, author: Option<&ChangeAuthor>) -> Self {
        let stamp = ChangeStamp::from_meta(meta);
        Self {
            hash: meta.hash,
            actor: meta.actor.clone().into_owned(),
            seq: meta.seq,
            hlc: stamp.hlc,
            stamped: stamp.stamped,
            message: meta
                .message
                .as_deref()
                .and_then(app_message)
                .map(str::to_owned),
            deps: meta.deps.clone(),
            ops: (meta.max_op + 1).saturating_sub(meta.start_op),
            author: author.map(|a| Attribution {
                principal: a.principal.clone(),
                at_ms: a.at_ms,
            }),
        }
    }

    /// This change as JSON, hashes written with `hash` (e.g. [`crate::id::encode_head`]):
    /// `{hash, actor, seq, time: {ms, counter}, stamped, message, deps, ops, author}`
    /// (`author`: `{principal, at_ms}` or `null`).
    pub fn to_json(&self, hash: impl Fn(&ChangeHash) -> String) -> Json {
        json!({
            "hash": hash(&self.hash),
            "actor": self.actor.to_hex_string(),
            "seq": self.seq,
            "time": {"ms": self.hlc.ms, "counter": self.hlc.counter},
            "stamped": self.stamped,
            "message": self.message,
            "deps": self.deps.iter().map(&hash).collect::<Vec<_>>(),
            "ops": self.ops,
            "author": self.author.as_ref().map(|a| json!({
                "principal": a.principal,
                "at_ms": a.at_ms,
            })),
        })
    }
}

/// One page of the history.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HistoryPage {
    /// Changes, newest first.
    pub changes: Vec<ChangeInfo>,
    /// The cursor of the next page (`None`: this was the last page).
    pub next: Option<ChangeHash>,
    /// How many changes the listed version has in all.
    pub total: usize,
    /// The heads whose history this is.
    pub heads: Vec<ChangeHash>,
}

/// Lists one page of the history of `doc`, newest first (a change before the changes it
/// depends on; among the ones that may come next, the latest HLC stamp, then the greater hash,
/// first: the same order on every replica that has the same changes), with the
/// authors in `authors` where they know the change.
pub fn list(
    doc: &Automerge,
    query: &HistoryQuery,
    authors: &HashMap<ChangeHash, ChangeAuthor>,
) -> Result<HistoryPage, HistoryError> {
    let heads = match &query.heads {
        Some(h) => {
            check_heads(doc, h, "heads")?;
            h.clone()
        }
        None => doc.get_heads(),
    };
    let metas = doc.get_changes_meta(&[]);
    let order = newest_first(&metas, &heads);
    let start = match &query.cursor {
        None => 0,
        Some(c) => {
            order
                .iter()
                .position(|i| metas.get(*i).is_some_and(|m| m.hash == *c))
                .ok_or(HistoryError::UnknownCursor(*c))?
                + 1
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let changes: Vec<ChangeInfo> = order
        .iter()
        .skip(start)
        .take(limit)
        .filter_map(|i| metas.get(*i))
        .map(|m| ChangeInfo::from_meta(m, authors.get(&m.hash)))
        .collect();
    let next = if start + changes.len() < order.len() {
        changes.last().map(|c| c.hash)
    } else {
        None
    };
    Ok(HistoryPage {
        changes,
        next,
        total: order.len(),
        heads,
    })
}

/// Indexes into `metas` of the ancestors of `heads` (inclusive), newest first.
fn newest_first(metas: &[ChangeMetadata<'_>], heads: &[ChangeHash]) -> Vec<usize> {
    let index: HashMap<ChangeHash, usize> =
        metas.iter().enumerate().map(|(i, m)| (m.hash, i)).collect();
    // The ancestors of `heads`.
    let mut member = vec![false; metas.len()];
    let mut stack: Vec<usize> = heads.iter().filter_map(|h| index.get(h).copied()).collect();
    while let Some(i) = stack.pop() {
        if member.get(i).copied().unwrap_or(true) {
            continue;
        }
        member[i] = true;
        if let Some(m) = metas.get(i) {
            stack.extend(m.deps.iter().filter_map(|d| index.get(d).copied()));
        }
    }
    // Kahn's algorithm from the heads: a change becomes ready once every member that depends on
    // it has been listed; the ready change with the latest stamp goes first.
    let mut dependents = vec![0usize; metas.len()];
    for (i, m) in metas.iter().enumerate() {
        if member[i] {
            for d in m.deps.iter().filter_map(|d| index.get(d)) {
                dependents[*d] += 1;
            }
        }
    }
    let key = |i: usize| {
        let m = &metas[i];
        (ChangeStamp::from_meta(m).hlc, m.hash, i)
    };
    let mut ready: BinaryHeap<_> = (0..metas.len())
        .filter(|i| member[*i] && dependents[*i] == 0)
        .map(key)
        .collect();
    let mut out = Vec::with_capacity(member.iter().filter(|m| **m).count());
    while let Some((_, _, i)) = ready.pop() {
        out.push(i);
        for d in metas[i].deps.iter().filter_map(|d| index.get(d)) {
            dependents[*d] -= 1;
            if dependents[*d] == 0 {
                ready.push(key(*d));
            }
        }
    }
    out
}
