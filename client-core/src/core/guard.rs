//! Panic containment: work on one document that panics (a bug in Automerge reached by a crafted
//! message, or an application closure) costs that document's in-memory state and the connection
//! that caused it, never the core.
//!
//! Every entry into Automerge for a document runs inside [`Core::guarded`]. When it panics, the
//! document leaves memory (what it held that was not committed was never acknowledged), every
//! waiter on it gets an error, the peer whose message was being processed (and the peers whose
//! messages were in the same batch) get an `error` message and are closed, and the document is
//! reloaded from storage so the peers still subscribed to it keep syncing. A document that keeps
//! panicking stays failed for [`COOLDOWN_MS`] instead of being reloaded again and again, then
//! is reloaded (so a fault that went away, or a bad message that is not sent again, does not
//! leave it unusable until a restart).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::document::{DocEntry, DocState};
use super::{Core, Event, FindOutcome, PendingOp, ProtocolError};
use crate::id::{ConnId, DocumentId};

/// A document that panicked this many times in a row is left failed for a while.
const MAX_RELOADS: u32 = 3;
/// How long a document that keeps panicking stays failed before it is reloaded.
pub const COOLDOWN_MS: u64 = 10_000;
/// Panic counts kept per document before the table is reset (bounded memory).
const COUNTS_KEPT: usize = 4096;

/// Who the core is working for while it runs guarded document work.
#[derive(Debug, Default)]
pub(super) struct GuardContext {
    /// The connection whose message is being processed.
    pub(super) sender: Option<ConnId>,
    /// Connections whose messages are in the batch being applied.
    pub(super) batch: Vec<ConnId>,
    /// Panics per document, and when the last one happened.
    counts: HashMap<DocumentId, (u32, u64)>,
}

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_owned())
}

impl Core {
    /// Runs document work `f` on `doc`, containing a panic (see the module docs). Returns
    /// `None` when it panicked.
    pub(super) fn guarded<R>(
        &mut self,
        now: u64,
        doc: DocumentId,
        f: impl FnOnce(&mut Self) -> R,
    ) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(r) => Some(r),
            Err(payload) => {
                let reason = panic_message(payload.as_ref());
                self.doc_panicked(now, doc, &reason);
                None
            }
        }
    }

    /// Recovers from a panic while working on `doc`.
    fn doc_panicked(&mut self, now: u64, doc: DocumentId, reason: &str) {
        let reason = format!("internal error while processing document {doc}: {reason}");
        self.out.stats.panics += 1;
        self.out.event(Event::DocumentPanicked {
            doc,
            reason: reason.clone(),
        });
        let entry = self.docs.remove(&doc);
        // Results of operations still in flight for this document are ignored from now on.
        let ops: Vec<super::OpId> = self
            .out
            .ops
            .iter()
            .filter(|(_, (d, _))| *d == doc)
            .map(|(id, _)| *id)
            .collect();
        let mut tickets = Vec::new();
        for id in ops {
            if let Some((_, PendingOp::Commit { tickets: t, .. })) = self.out.ops.remove(&id) {
                tickets.extend(t);
            }
        }
        if let Some(entry) = &entry {
            tickets.extend(entry.pending_tickets.iter().copied());
            for ticket in &entry.find_waiters {
                self.out.event(Event::FindResolved {
                    ticket: *ticket,
                    doc,
                    outcome: FindOutcome::Failed(reason.clone()),
                });
            }
        }
        for ticket in tickets {
            self.out.event(Event::Committed {
                ticket,
                result: Err(reason.clone()),
            });
        }
        let mut culprits = std::mem::take(&mut self.guard.batch);
        culprits.extend(self.guard.sender);
        culprits.sort();
        culprits.dedup();
        for conn in culprits {
            self.protocol_error(
                conn,
                ProtocolError::Internal {
                    doc,
                    reason: reason.clone(),
                },
            );
            self.close(conn, 1011, "internal error while processing a document");
        }
        if self.guard.counts.len() >= COUNTS_KEPT {
            self.guard.counts.clear();
        }
        let (count, at) = self.guard.counts.entry(doc).or_default();
        *count += 1;
        *at = now;
        if *count >= MAX_RELOADS {
            let mut failed = DocEntry::failed(reason, now);
            failed.pins = entry.map_or(0, |e| e.pins);
            self.docs.insert(doc, failed);
            return;
        }
        // Reload what storage holds, so peers still subscribed keep syncing.
        self.ensure_loaded(now, doc);
        if let (Some(old), Some(new)) = (entry, self.docs.get_mut(&doc)) {
            new.pins = old.pins;
            new.wanted = old.wanted;
        }
    }

    /// Documents left failed after repeated panics (for tests and health reports).
    pub fn panicked_documents(&self) -> Vec<DocumentId> {
        self.docs
            .iter()
            .filter(|(d, e)| {
                matches!(e.state, DocState::Failed(_))
                    && self
                        .guard
                        .counts
                        .get(d)
                        .is_some_and(|(c, _)| *c >= MAX_RELOADS)
            })
            .map(|(d, _)| *d)
            .collect()
    }

    /// Reloads documents whose panic cool-down is over (the driver's tick).
    pub(super) fn retry_panicked(&mut self, now: u64) {
        let due: Vec<DocumentId> = self
            .guard
            .counts
            .iter()
            .filter(|(_, (c, at))| *c >= MAX_RELOADS && now.saturating_sub(*at) >= COOLDOWN_MS)
            .map(|(d, _)| *d)
            .collect();
        for doc in due {
            self.guard.counts.remove(&doc);
            let Some(old) = self.docs.remove(&doc) else {
                continue;
            };
            self.ensure_loaded(now, doc);
            if let Some(new) = self.docs.get_mut(&doc) {
                new.pins = old.pins;
            }
        }
    }
}

/// Test-only fault injection: makes applying incoming changes to one document panic, to prove
/// the containment (feature `fault-injection`; never in release builds of the server).
#[cfg(feature = "fault-injection")]
pub mod fault {
    use std::sync::Mutex;
    use std::time::Duration;

    use crate::id::DocumentId;

    static PANIC_ON_APPLY: Mutex<Option<DocumentId>> = Mutex::new(None);
    static STALL_ON_APPLY: Mutex<Option<(DocumentId, Duration)>> = Mutex::new(None);

    /// From now on, applying incoming changes to `doc` panics (`None`: stop).
    pub fn panic_on_apply(doc: Option<DocumentId>) {
        if let Ok(mut d) = PANIC_ON_APPLY.lock() {
            *d = doc;
        }
    }

    /// From now on, applying incoming changes to `doc` blocks its shard for `stall` (a wedged
    /// engine, as a pathological Automerge call would); `None`: stop.
    pub fn stall_on_apply(doc: Option<(DocumentId, Duration)>) {
        if let Ok(mut d) = STALL_ON_APPLY.lock() {
            *d = doc;
        }
    }

    pub(crate) fn check(doc: &DocumentId) {
        let stall = STALL_ON_APPLY
            .lock()
            .ok()
            .and_then(|d| d.filter(|(d, _)| d == doc).map(|(_, s)| s));
        if let Some(s) = stall {
            std::thread::sleep(s);
        }
        let hit = PANIC_ON_APPLY.lock().is_ok_and(|d| d.as_ref() == Some(doc));
        #[allow(clippy::panic)]
        if hit {
            panic!("injected fault: applying changes to {doc}");
        }
    }
}
