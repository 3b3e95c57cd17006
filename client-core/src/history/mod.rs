//! Version history of a document: the change log, diffs between versions, and restoring an
//! earlier version.
//!
//! Everything here is a pure function over an [`Automerge`](automerge::Automerge) document (no
//! I/O, no clock), so every platform shares it: `DocHandle::history`, `diff` and `restore` in
//! Rust, the browser package and the mobile bindings, and `concord doc log|diff|restore`.
//!
//! - [`list`]: the changes, newest first, in pages ([`HistoryQuery`] → [`HistoryPage`] of
//!   [`ChangeInfo`]: hash, actor, HLC time, message, deps, op count and, when a server recorded
//!   it, the author principal).
//! - [`diff`]: [`JsonPatch`]es between two versions (JSON Pointer paths, text splices for text);
//!   [`apply_patches`] applies them to JSON.
//! - [`RestorePlan`] / [`restore`]: one new change that makes the current document equal to an
//!   earlier version, merging like any other change.
//! - [`parse_heads`]: heads as people type them.
//!
//! ## Attribution: who wrote a change
//!
//! A change's bytes (and so its hash) never say which principal wrote it: actors are per replica
//! and anyone can claim one. Instead the server that first commits a change records, beside it
//! and in the same storage commit, the principal of the token that sent it and the server's wall
//! time ([`ChangeAuthor`](crate::storage::ChangeAuthor); first record wins, so a change relayed
//! later by someone else keeps its first writer; the principal whose changes first create a
//! document on the server is its creator, listed by `GET /v1/docs`). [`list`] takes those records
//! and fills in [`ChangeInfo::author`]; it is `None` for changes this replica has no record of.
//! Servers have the records in their storage; clients ask a server for them
//! (`Repo::fetch_authors`, `GET /v1/docs/{id}/authors`, only for tokens that may read the
//! document; see [`crate::api`]) and keep them in local storage. Changes written offline and
//! never committed by an attributing server have no author anywhere.
//!
//! ```
//! use automerge::{Automerge, ROOT, transaction::Transactable};
//! use concord::history::{self, HistoryQuery, JsonPatch};
//!
//! let mut doc = Automerge::new();
//! let mut tx = doc.transaction();
//! tx.put(ROOT, "n", 1)?;
//! tx.commit();
//! let v1 = doc.get_heads();
//! let mut tx = doc.transaction();
//! tx.put(ROOT, "n", 2)?;
//! tx.commit();
//!
//! let page = history::list(&doc, &HistoryQuery::new(), &Default::default())?;
//! assert_eq!(page.changes.len(), 2);
//! assert_eq!(page.changes[1].deps, Vec::new()); // the oldest comes last
//! let patches = history::diff(&doc, &v1, &doc.get_heads())?;
//! assert_eq!(patches, vec![JsonPatch::Put { path: "n".parse()?, value: 2.into() }]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod diff;
mod error;
mod log;
mod patch;
mod restore;
mod steps;
#[cfg(test)]
mod tests;

use automerge::ChangeHash;

pub use diff::diff;
pub use error::HistoryError;
pub use error::check_heads;
pub use log::{Attribution, ChangeInfo, DEFAULT_PAGE, HistoryPage, HistoryQuery, MAX_PAGE, list};
pub use patch::{JsonPatch, apply_patches};
pub use restore::{RestorePlan, restore};

use crate::id::{IdError, decode_head};

/// Parses heads as Concord prints them: bs58check hashes (or hex) separated by `|` (as in an
/// `automerge:ID#HEADS` URL), `,` or whitespace, or a JSON array of such strings. A whole
/// `automerge:` URL with `#heads` is accepted too. The empty string (or `[]`) is the empty
/// version, before any change.
pub fn parse_heads(input: &str) -> Result<Vec<ChangeHash>, IdError> {
    let s = input.trim();
    if s.starts_with("automerge:") {
        return Ok(s.parse::<crate::AutomergeUrl>()?.heads.unwrap_or_default());
    }
    if s.starts_with('[') {
        let list: Vec<String> = serde_json::from_str(s).map_err(|_| IdError::InvalidHead {
            head: s.chars().take(80).collect(),
        })?;
        return list.iter().map(|h| decode_head(h.trim())).collect();
    }
    s.split(|c: char| c == '|' || c == ',' || c.is_whitespace())
        .filter(|h| !h.is_empty())
        .map(decode_head)
        .collect()
}
