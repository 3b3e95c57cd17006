//! What storage keeps beside the chunks of a document: deletion tombstones, who wrote each
//! change (attribution), and which documents each principal created.
//!
//! - A **tombstone** is stored per document as bytes the core encodes (who deleted it, when);
//!   it outlives the document's chunks, which are reclaimed after a retention period.
//! - **Authors** are stamped by the server that first commits a change, from the token of the
//!   connection that sent it, beside the change (never inside it: Automerge hashes do not
//!   change). The first author recorded for a change wins.
//! - **Owned documents**: per principal, the documents it created, each with a cursor that only
//!   grows, so paging with "after this cursor" never skips nor repeats an entry while others are
//!   created.

use crate::id::DocumentId;

/// Who wrote one change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChangeAuthor {
    /// The change hash.
    pub hash: [u8; 32],
    /// The principal, as the committing server saw its token.
    pub principal: String,
    /// When the server committed it (Unix milliseconds, the server's clock).
    pub at_ms: u64,
}

/// One entry of a principal's documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnedDoc {
    /// Position in the principal's list (grows with every new entry).
    pub cursor: u64,
    /// The document.
    pub doc: DocumentId,
}
