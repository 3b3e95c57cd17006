//! Why a history read, diff or restore was refused.

use automerge::{AutomergeError, ChangeHash};

/// Errors of [`crate::history`]. Nothing is changed when one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// Some of the given heads are not changes of this document (mistyped, from another
    /// document, or not synced to this replica yet).
    #[error("{which}: this document has no change {}", list(heads))]
    UnknownHeads {
        /// Which argument (`heads`, `from`, `to`).
        which: &'static str,
        /// The heads the document does not have.
        heads: Vec<ChangeHash>,
    },
    /// A paging cursor is not a change of the listed history.
    #[error("the cursor {0} is not a change of this history (use the `next` of a previous page)")]
    UnknownCursor(ChangeHash),
    /// The document changed between planning a restore and applying it (callers retry).
    #[error("the document changed while the restore was prepared")]
    Changed,
    /// A patch does not apply to the value it was given.
    #[error("patch {index} (`{path}`) does not apply: {reason}")]
    Patch {
        /// Position of the patch in the list.
        index: usize,
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Automerge refused a read or a write.
    #[error("automerge: {0}")]
    Automerge(#[from] AutomergeError),
}

fn list(heads: &[ChangeHash]) -> String {
    heads
        .iter()
        .map(crate::id::encode_head)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that every head of `heads` is a change of `doc` (before `fork_at`, `view_at` and the
/// like, which would otherwise fail with a less precise Automerge error); `which` names the
/// argument in the error (`heads`, `from`, `to`).
pub fn check_heads(
    doc: &automerge::Automerge,
    heads: &[ChangeHash],
    which: &'static str,
) -> Result<(), HistoryError> {
    let missing: Vec<ChangeHash> = heads
        .iter()
        .filter(|h| doc.get_change_meta_by_hash(h).is_none())
        .copied()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(HistoryError::UnknownHeads {
            which,
            heads: missing,
        })
    }
}
