//! One HLC for a replica holding many documents.
//!
//! Before stamping a local change, the clock must have observed the stamps of every change the
//! document already holds (local or received), so that the new change sorts after everything it
//! follows. [`ReplicaClock`] remembers, per document, the heads up to which it has observed, and
//! reads only the changes since then: cheap enough to run inside every stamped write.

use std::collections::HashMap;

use automerge::transaction::CommitOptions;
use automerge::{Automerge, ChangeHash};

use super::hlc::Hlc;
use super::stamp::{commit_options, observe_changes};
use crate::id::DocumentId;

/// A replica's HLC plus what it has observed of each document.
#[derive(Debug)]
pub struct ReplicaClock {
    hlc: Hlc,
    observed: HashMap<DocumentId, Vec<ChangeHash>>,
}

impl ReplicaClock {
    /// Wraps a clock (its actor is not written anywhere: a change's actor is the document's).
    pub fn new(hlc: Hlc) -> Self {
        Self {
            hlc,
            observed: HashMap::new(),
        }
    }

    /// The clock.
    pub fn hlc(&self) -> &Hlc {
        &self.hlc
    }

    /// Observes the stamps of `doc`'s changes not observed yet. Returns how many were clamped.
    pub fn observe(&mut self, id: DocumentId, doc: &Automerge, physical_ms: u64) -> usize {
        let since = self.observed.get(&id).map_or(&[][..], Vec::as_slice);
        let clamped = observe_changes(&mut self.hlc, doc, since, physical_ms);
        self.observed.insert(id, doc.get_heads());
        clamped
    }

    /// Observes `doc`, then returns the commit options that stamp the next local change of it.
    /// Call it with the document locked, right before the change, and commit with the result.
    pub fn stamp(&mut self, id: DocumentId, doc: &Automerge, physical_ms: u64) -> CommitOptions {
        self.observe(id, doc, physical_ms);
        commit_options(&self.hlc.now(physical_ms))
    }

    /// Forgets a document (evicted or deleted); the next stamp re-reads all its changes.
    pub fn forget(&mut self, id: &DocumentId) {
        self.observed.remove(id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::policy::stamp::parse_stamp;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ROOT};

    #[test]
    fn stamps_after_everything_the_document_holds() {
        let id = DocumentId::from_bytes([1; 16]);
        let mut remote = Automerge::new();
        let mut remote_clock = Hlc::new(ActorId::random());
        crate::policy::change(&mut remote, &mut remote_clock, 900_000, |tx| {
            tx.put(ROOT, "k", 1)
        })
        .unwrap();
        let mut doc = remote.fork();
        let mut clock = ReplicaClock::new(Hlc::new(ActorId::random()));
        // Our wall clock is far behind the remote writer's.
        let mut tx = doc.transaction();
        tx.put(ROOT, "k", 2).unwrap();
        let (h, _) = tx.commit_with(clock.stamp(id, &remote, 1_000));
        let meta = doc.get_change_meta_by_hash(&h.unwrap()).unwrap();
        let (ms, counter) = parse_stamp(meta.message.as_deref().unwrap()).unwrap();
        assert_eq!((ms, counter), (900_000, 2));
        // Already observed: only new changes are read, and the clock still moves on.
        let next = clock.stamp(id, &doc, 1_000);
        let mut tx = doc.transaction();
        tx.put(ROOT, "k", 3).unwrap();
        let (h, _) = tx.commit_with(next);
        let meta = doc.get_change_meta_by_hash(&h.unwrap()).unwrap();
        assert!(parse_stamp(meta.message.as_deref().unwrap()).unwrap() > (900_000, 2));
        clock.forget(&id);
        assert_eq!(clock.hlc().last().ms, 900_000);
    }
}
