//! Which changes of a received sync message a server attributes to the sender's principal.
//!
//! A sync message carries changes as change chunks (one change each, parsed once for validation
//! and ingest) or, when the sender believes the receiver has nothing of the document, as one
//! document chunk holding every change (Automerge's v2 sync). Both are attributed: a document
//! chunk is loaded once more here, only on servers that attribute (a principal is known) and
//! only for such first uploads. Storage keeps the first author recorded for a hash, so a change
//! relayed later by someone else keeps its first writer.

use automerge::{Change, ChangeHash};

/// The hashes of every change in `msg`: those already parsed (`parsed`, from change chunks)
/// and those inside document chunks. Chunks that are neither are skipped (validation reports
/// them).
pub(super) fn received_hashes(
    msg: &automerge::sync::Message,
    parsed: &[Change],
) -> Vec<ChangeHash> {
    let mut hashes: Vec<ChangeHash> = parsed.iter().map(Change::hash).collect();
    if parsed.len() == msg.changes.len() {
        return hashes;
    }
    for bytes in msg.changes.iter() {
        if Change::try_from(bytes).is_ok() {
            continue;
        }
        if let Ok(doc) = automerge::Automerge::load(bytes) {
            hashes.extend(doc.get_changes(&[]).iter().map(Change::hash));
        }
    }
    hashes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use automerge::sync::SyncDoc;
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ROOT};

    /// A first sync to an empty peer sends a document chunk; its changes are all named.
    #[test]
    fn document_chunks_are_attributed_too() {
        let mut doc = Automerge::new();
        for i in 0..3 {
            let mut tx = doc.transaction();
            tx.put(ROOT, "n", i).unwrap();
            tx.commit();
        }
        let want: Vec<ChangeHash> = doc.get_changes(&[]).iter().map(Change::hash).collect();
        let mut ours = automerge::sync::State::new();
        let mut theirs = automerge::sync::State::new();
        let empty = Automerge::new();
        // The empty peer speaks first (as a server answering a request would).
        let hello = empty.generate_sync_message(&mut theirs).unwrap();
        doc.receive_sync_message(&mut ours, hello).unwrap();
        let msg = doc.generate_sync_message(&mut ours).unwrap();
        let parsed: Vec<Change> = msg
            .changes
            .iter()
            .filter_map(|b| Change::try_from(b).ok())
            .collect();
        assert!(parsed.is_empty(), "expected one document chunk");
        let mut got = received_hashes(&msg, &parsed);
        got.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(got, want_sorted);
    }
}
