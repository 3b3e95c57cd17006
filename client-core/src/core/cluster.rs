//! Changes other nodes of a cluster committed to the storage this core shares with them.
//!
//! A node hears of them through its cluster bus (see `concord::repo::ClusterBus`): the driver
//! calls [`Core::handle_external_commit`] with the document and the keys of the chunks another
//! node appended. The core reads those chunks from storage (never from the notice) and applies
//! the ones it does not hold, once the document is settled (no commit in flight, nothing
//! queued); everything it then holds is committed, so it syncs its own peers at once. A chunk
//! already compacted away by another node is found by re-reading every chunk of the document.
//! After an interruption of the bus ([`Core::handle_external_gap`]), every resident document is
//! re-read the same way.
//!
//! Chunks it applied join the document's chunk list, so its own compactions cover (and delete)
//! them, but only when every change they hold is in the document: a compaction never deletes a
//! chunk whose changes its snapshot does not contain.

use automerge::ReadDoc;

use super::document::DocState;
use super::{Core, Event, Origin, PendingOp, StorageOp, StorageReply};
use crate::id::DocumentId;
use crate::storage::{ChunkKey, StorageError};

/// Adds `keys` to what must be read (`Some(empty)`: every chunk; a full read covers any keys,
/// so it is never narrowed down to some keys).
fn want(stale: &mut Option<Vec<ChunkKey>>, keys: Vec<ChunkKey>) {
    *stale = Some(match stale.take() {
        Some(old) if old.is_empty() || keys.is_empty() => Vec::new(),
        Some(mut old) => {
            old.extend(keys);
            old
        }
        None => keys,
    });
}

impl Core {
    /// Another node committed the chunks `keys` of `doc` (empty: "something changed, re-read
    /// it"). Resident documents read and apply them; a region server that has region links loads
    /// the document, so the change reaches every region.
    pub fn handle_external_commit(&mut self, now: u64, doc: DocumentId, keys: Vec<ChunkKey>) {
        if !self.owns(&doc) || self.tombstones.contains_key(&doc) {
            return;
        }
        let Some(entry) = self.docs.get_mut(&doc) else {
            if self.conns.values().any(|c| c.region.is_some()) {
                self.load(now, doc);
                if let Some(e) = self.docs.get_mut(&doc) {
                    e.external_links = true;
                }
            }
            return;
        };
        if !keys.is_empty()
            && keys
                .iter()
                .all(|k| entry.chunks.iter().any(|(c, _)| c == k))
        {
            return; // Already held (e.g. we loaded after the commit).
        }
        want(&mut entry.external_stale, keys);
        self.read_external(doc);
    }

    /// The cluster bus may have lost notices: re-read every resident document.
    pub fn handle_external_gap(&mut self, _now: u64) {
        let docs: Vec<DocumentId> = self.docs.keys().copied().collect();
        for doc in docs {
            if let Some(e) = self.docs.get_mut(&doc) {
                e.external_stale = Some(Vec::new());
            }
            self.read_external(doc);
        }
    }

    /// Starts the read of what other nodes committed, if one is due and none is running.
    pub(super) fn read_external(&mut self, doc: DocumentId) {
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        let busy = entry.commit_in_flight || !entry.inbox.is_empty() || !entry.all_committed();
        if entry.external_reading || entry.state != DocState::Ready || busy {
            return;
        }
        let Some(mut keys) = entry.external_stale.take() else {
            return;
        };
        let full = keys.is_empty();
        keys.retain(|k| !entry.chunks.iter().any(|(c, _)| c == k));
        if !full && keys.is_empty() {
            return; // Everything named is held already.
        }
        keys.sort();
        keys.dedup();
        entry.external_reading = true;
        self.out.storage(
            StorageOp::LoadChunks {
                doc,
                keys: keys.clone(),
            },
            PendingOp::External { asked: keys },
        );
    }

    pub(super) fn on_external_read(
        &mut self,
        now: u64,
        doc: DocumentId,
        asked: Vec<ChunkKey>,
        result: Result<StorageReply, StorageError>,
    ) {
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        entry.external_reading = false;
        let stored = match result {
            Ok(StorageReply::Loaded(stored)) => stored,
            Ok(_) => return,
            Err(e) => {
                // Retried at the next notice, gap or tick.
                want(&mut entry.external_stale, asked);
                self.out.event(Event::StorageFailed {
                    doc,
                    error: format!("reading changes another node committed: {e}"),
                });
                return;
            }
        };
        if !asked.is_empty() && stored.chunks.len() < asked.len() {
            // Another node compacted some of them meanwhile: read everything.
            want(&mut entry.external_stale, Vec::new());
        }
        let unknown: Vec<_> = stored
            .chunks
            .into_iter()
            .filter(|c| !entry.chunks.iter().any(|(k, _)| *k == c.key))
            .collect();
        if unknown.is_empty() {
            self.read_external(doc);
            return;
        }
        if entry.commit_in_flight || !entry.inbox.is_empty() || !entry.all_committed() {
            // Applied once our own work on it is committed (see `settle_external`).
            want(
                &mut entry.external_stale,
                unknown.iter().map(|c| c.key).collect(),
            );
            return;
        }
        let before = entry.doc.get_heads();
        let am = match entry.doc.materialized() {
            Ok(am) => am,
            Err(e) => {
                entry.state = DocState::Failed(format!("pending changes do not apply: {e}"));
                return;
            }
        };
        let mut applied = Vec::new();
        let mut failures = Vec::new();
        for c in &unknown {
            match am.load_incremental(&c.bytes) {
                Ok(_) => applied.push((c.key, c.kind)),
                Err(e) => failures.push(e.to_string()),
            }
        }
        let complete = am.get_missing_deps(&[]).is_empty();
        entry.doc.refresh();
        self.out.stats.external_chunks += applied.len() as u64;
        if complete {
            entry.chunks.extend(applied);
        } else {
            // Some changes wait for others: read every chunk we do not hold.
            want(&mut entry.external_stale, Vec::new());
        }
        let after = entry.doc.get_heads();
        for error in failures {
            self.out.event(Event::StorageFailed {
                doc,
                error: format!("a chunk another node committed does not load: {error}"),
            });
        }
        if after != before {
            if let Some(e) = self.docs.get_mut(&doc) {
                e.saved_heads = after.clone();
            }
            self.out.event(Event::DocChanged {
                doc,
                heads: after.clone(),
                origin: Origin::Remote,
            });
            self.region_committed(now, doc, &after);
            self.sync_doc(now, doc);
            self.check_availability(doc);
        }
        self.read_external(doc);
    }

    /// A document that settled (commit done, nothing queued) applies what other nodes
    /// committed meanwhile; a freshly loaded one that another node's commit made us load is
    /// pushed to the region links.
    pub(super) fn settle_external(&mut self, now: u64, doc: DocumentId) {
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        if std::mem::take(&mut entry.external_links) && entry.state == DocState::Ready {
            let heads = entry.saved_heads.clone();
            self.region_committed(now, doc, &heads);
            self.sync_doc(now, doc);
        }
        self.read_external(doc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_read_is_never_narrowed() {
        let (a, b) = (ChunkKey([1; 32]), ChunkKey([2; 32]));
        let mut stale = None;
        want(&mut stale, vec![a]);
        want(&mut stale, vec![b]);
        assert_eq!(stale, Some(vec![a, b]));
        want(&mut stale, Vec::new());
        want(&mut stale, vec![a]);
        assert_eq!(stale, Some(Vec::new()), "still a full read");
    }
}
