//! Version history of a document through its [`DocHandle`]: the change log with authors, diffs
//! and restore (see [`crate::history`] for what each computes).

use std::sync::Arc;

use automerge::ChangeHash;

use super::{DocHandle, RepoError};
use crate::history::{self, HistoryError, HistoryPage, HistoryQuery, JsonPatch, RestorePlan};
use crate::storage::{Storage, StorageError};

/// How many times [`DocHandle::restore`] plans again when changes arrive while it plans.
const RESTORE_ATTEMPTS: usize = 8;

impl DocHandle {
    /// One page of the document's change log, newest first ([`history::list`]). A change's
    /// `author` is filled in when this replica's storage knows it: servers record it when they
    /// commit a client's change; clients learn it with
    /// [`Repo::fetch_authors`](super::Repo::fetch_authors).
    ///
    /// Errors: [`HistoryError::UnknownHeads`] for `query.heads` the document does not have,
    /// [`HistoryError::UnknownCursor`] for a cursor outside the listed history.
    pub async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, RepoError> {
        let authors = match self.storage().authors(&self.id()).await {
            Ok(a) => a,
            Err(StorageError::Unsupported(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let authors = crate::api::by_hash(authors);
        Ok(self.with_doc(|d| history::list(d, query, &authors))??)
    }

    /// The JSON patches that turn the version at `from` into the version at `to`
    /// ([`history::diff`]; `&[]` is the empty document).
    ///
    /// Errors: [`HistoryError::UnknownHeads`] naming the side (`from` or `to`) whose heads the
    /// document does not have.
    pub fn diff(
        &self,
        from: &[ChangeHash],
        to: &[ChangeHash],
    ) -> Result<Vec<JsonPatch>, RepoError> {
        Ok(self.with_doc(|d| history::diff(d, from, to))??)
    }

    /// Makes the document equal to the version at `heads` with one new change on top (not a
    /// rewind: it syncs like any change, and edits made concurrently elsewhere still merge; see
    /// [`crate::history::RestorePlan`]). Resolves once the change is committed locally, with
    /// `true`, or at once with `false` when the document already equals that version.
    ///
    /// Errors: [`HistoryError::UnknownHeads`] for heads the document does not have (nothing is
    /// changed).
    pub async fn restore(&self, heads: &[ChangeHash]) -> Result<bool, RepoError> {
        for _ in 0..RESTORE_ATTEMPTS {
            let plan = self.with_doc(|d| RestorePlan::new(d, heads))??;
            if plan.is_empty() {
                return Ok(false);
            }
            let mut failure = None;
            let committed = self
                .change(|tx| {
                    plan.apply(tx).map_err(|e| {
                        let message = e.to_string();
                        failure = Some(e);
                        message
                    })
                })
                .await;
            match (committed, failure) {
                // Changes arrived between planning and applying: plan again.
                (_, Some(HistoryError::Changed)) => {}
                (_, Some(e)) => return Err(e.into()),
                (Err(e), None) => return Err(e),
                (Ok(()), None) => return Ok(true),
            }
        }
        Err(HistoryError::Changed.into())
    }

    fn storage(&self) -> Arc<dyn Storage> {
        self.shared().storage.clone()
    }
}
