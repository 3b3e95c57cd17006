//! Housekeeping: compaction of stored chunks and eviction of idle documents.

use super::document::DocState;
use super::{Core, Event, PendingOp, StorageOp, StorageReply};
use crate::id::DocumentId;
use crate::storage::{ChunkKey, ChunkKind, StorageError};

impl Core {
    /// Compacts `doc` when it has enough increments (panics contained: see `guard.rs`).
    pub(super) fn maybe_compact(&mut self, now: u64, doc: DocumentId) {
        let _ = self.guarded(now, doc, |c| c.compact_if_due(doc));
    }

    fn compact_if_due(&mut self, doc: DocumentId) {
        let threshold = self.config.housekeeping.compact_after_increments;
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        let increments = entry
            .chunks
            .iter()
            .filter(|(_, k)| *k == ChunkKind::Incremental)
            .count();
        if entry.compacting || increments < threshold.max(1) {
            return;
        }
        // While changes are pending (sustained writes to a large document), compaction waits
        // for the idle flush, up to 16 times the usual number of increments.
        if entry.doc.has_pending() && increments < threshold.max(1) * 16 {
            return;
        }
        if let Err(e) = entry.doc.flush() {
            entry.state = DocState::Failed(format!("pending changes do not apply: {e}"));
            return;
        }
        let bytes = entry.doc.applied().save();
        let key = ChunkKey::of(&bytes);
        let covered: Vec<ChunkKey> = entry.chunks.iter().map(|(k, _)| *k).collect();
        entry.compacting = true;
        self.out.storage(
            StorageOp::Compact {
                doc,
                key,
                bytes,
                covered: covered.clone(),
            },
            PendingOp::Compact { key, covered },
        );
    }

    pub(super) fn on_compacted(
        &mut self,
        doc: DocumentId,
        key: ChunkKey,
        covered: Vec<ChunkKey>,
        result: Result<StorageReply, StorageError>,
    ) {
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        entry.compacting = false;
        match result {
            Ok(_) => {
                self.out.stats.compactions += 1;
                entry
                    .chunks
                    .retain(|(k, _)| !covered.contains(k) && *k != key);
                entry.chunks.insert(0, (key, ChunkKind::Snapshot));
            }
            Err(e) => self.out.event(Event::StorageFailed {
                doc,
                error: e.to_string(),
            }),
        }
    }

    /// Applies the pending changes of documents that received none for `idle_ms`, then
    /// compacts them if due.
    pub(super) fn flush_idle(&mut self, now: u64) {
        let Some(defer) = self.config.defer_apply else {
            return;
        };
        let due: Vec<DocumentId> = self
            .docs
            .iter()
            .filter(|(_, e)| {
                e.doc.has_pending() && now.saturating_sub(e.doc.last_pending_at) >= defer.idle_ms
            })
            .map(|(d, _)| *d)
            .collect();
        for doc in due {
            if self.materialize_at(now, &doc).is_ok() {
                self.maybe_compact(now, doc);
            }
        }
    }

    pub(super) fn evict(&mut self, now: u64) {
        for entry in self.docs.values_mut() {
            if entry.commit_failed && !entry.commit_in_flight {
                entry.commit_failed = false;
            }
        }
        let retry: Vec<DocumentId> = self
            .docs
            .iter()
            .filter(|(_, e)| {
                e.state == DocState::Ready && !e.all_committed() && !e.commit_in_flight
            })
            .map(|(d, _)| *d)
            .collect();
        for doc in retry {
            self.pump(now, doc);
        }
        let hk = &self.config.housekeeping;
        let mut candidates: Vec<(u64, DocumentId)> = self
            .docs
            .iter()
            .filter(|(_, e)| e.evictable())
            .map(|(d, e)| (e.last_used, *d))
            .collect();
        candidates.sort();
        let mut victims = Vec::new();
        if let Some(idle) = hk.evict_idle_ms {
            victims.extend(
                candidates
                    .iter()
                    .filter(|(used, _)| now.saturating_sub(*used) >= idle)
                    .map(|(_, d)| *d),
            );
        }
        if let Some(max) = hk.max_resident {
            let excess = self.docs.len().saturating_sub(max);
            for (_, d) in candidates.iter().take(excess) {
                if !victims.contains(d) {
                    victims.push(*d);
                }
            }
        }
        for doc in victims {
            self.docs.remove(&doc);
            self.remote_heads.remove(&doc);
            self.clock.forget(&doc);
            self.out.stats.evictions += 1;
            self.out.event(Event::Evicted { doc });
        }
    }
}
