//! Listener interfaces the app implements (uniffi foreign traits), and the events they receive.
//!
//! Each `subscribe_*` call returns a [`Subscription`](crate::dispatch::Subscription). Events are
//! delivered on a dedicated thread per subscription (named `concord-listener`), in order, one at a
//! time, never on the engine's threads: a slow listener delays only its own later events. The
//! queue between the engine and that thread is bounded (see [`QUEUE_CAPACITY`]); when it is full:
//!
//! - changes are *coalesced*: the newest queued `ChangeEvent` takes the latest heads, its
//!   `coalesced` count grows, and its origin becomes `Remote` if any merged event was remote;
//! - sync-status events drop the *oldest* queued status (the latest state is what matters);
//! - ephemeral messages drop the *new* message (presence senders repeat their state);
//! - deletions are all kept (each document is deleted once).
//!
//! `Subscription::dropped()` counts what was dropped. A listener that throws (or a Rust panic while
//! delivering) is caught and counted in `Subscription::failures()`; delivery goes on.

use concord::core::Origin;

use crate::error::ConcordError;

/// Events queued per subscription before the overflow policy applies.
pub const QUEUE_CAPACITY: usize = 64;

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ChangeOrigin {
    /// A write made through this repo.
    Local,
    /// Changes received from the server (other replicas' writes).
    Remote,
}

impl From<Origin> for ChangeOrigin {
    fn from(o: Origin) -> Self {
        match o {
            Origin::Local => Self::Local,
            Origin::Remote => Self::Remote,
        }
    }
}

/// A document changed and the change is committed to local storage.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChangeEvent {
    /// The document's URL (`automerge:...`).
    pub url: String,
    /// The document's new heads (bs58check change hashes, as automerge-repo writes them).
    pub heads: Vec<String>,
    /// Local write or remote sync (`Remote` if any coalesced event was remote).
    pub origin: ChangeOrigin,
    /// How many further change events were merged into this one because the listener was slow.
    pub coalesced: u32,
}

/// A document was deleted, through this repo or by another replica (learned from a server):
/// its local copy is gone, later reads and writes fail with `Deleted`, and edits that had not
/// reached a server before the deletion are refused (delete wins).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DeletedEvent {
    /// The document's URL (`automerge:...`).
    pub url: String,
    /// Who deleted it: the principal of the deleting token as the server saw it (or the
    /// deleting replica's peer id, until a server confirms).
    pub by: String,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// Deleted through this repo (`Local`) or learned from a server (`Remote`).
    pub origin: ChangeOrigin,
}

/// The repo's connection to its servers.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SyncStatus {
    /// A server connection completed its handshake.
    Connected {
        /// The server's peer id.
        peer_id: String,
    },
    /// A server connection ended (the repo reconnects with backoff by itself).
    Disconnected {
        /// The server's peer id, when the handshake had completed.
        peer_id: Option<String>,
    },
}

/// An ephemeral (presence, cursor) message from another replica of a document. Never stored.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EphemeralMessage {
    /// The sending peer.
    pub from_peer: String,
    /// The sender's session (one per running repo).
    pub session_id: String,
    /// The payload, as the sender broadcast it.
    pub data: Vec<u8>,
}

/// Receives changes of one document. Called on a listener thread, never on the engine's.
#[uniffi::export(foreign)]
pub trait ChangeListener: Send + Sync {
    /// A change (local or remote) is committed. Throwing is caught and counted.
    fn on_change(&self, event: ChangeEvent) -> Result<(), ConcordError>;
}

/// Receives deletions (of one document, or of every document of a repo). Called on a listener
/// thread.
#[uniffi::export(foreign)]
pub trait DeletedListener: Send + Sync {
    /// A document was deleted. Throwing is caught and counted.
    fn on_deleted(&self, event: DeletedEvent) -> Result<(), ConcordError>;
}

/// Receives the repo's connection status. Called on a listener thread.
#[uniffi::export(foreign)]
pub trait SyncStatusListener: Send + Sync {
    /// The status changed (the first call reports the status at subscription time).
    fn on_status(&self, status: SyncStatus) -> Result<(), ConcordError>;
}

/// Receives ephemeral messages of one document. Called on a listener thread.
#[uniffi::export(foreign)]
pub trait EphemeralListener: Send + Sync {
    /// A message arrived.
    fn on_message(&self, message: EphemeralMessage) -> Result<(), ConcordError>;
}

impl From<uniffi::UnexpectedUniFFICallbackError> for ConcordError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Internal(format!("the listener threw: {}", e.reason))
    }
}

/// Overflow policy for changes: merge `new` into the newest queued change.
pub(crate) fn coalesce_change(
    queue: &mut std::collections::VecDeque<ChangeEvent>,
    new: ChangeEvent,
) -> bool {
    match queue.back_mut() {
        Some(last) => {
            last.heads = new.heads;
            if new.origin == ChangeOrigin::Remote {
                last.origin = ChangeOrigin::Remote;
            }
            last.coalesced = last
                .coalesced
                .saturating_add(1)
                .saturating_add(new.coalesced);
            false
        }
        None => {
            queue.push_back(new);
            false
        }
    }
}

/// Overflow policy for statuses: drop the oldest queued status.
pub(crate) fn drop_oldest<T>(queue: &mut std::collections::VecDeque<T>, new: T) -> bool {
    queue.pop_front();
    queue.push_back(new);
    true
}

/// Overflow policy for deletions: keep every one (a document is deleted once, so they cannot
/// flood the queue the way changes can).
pub(crate) fn keep_all<T>(queue: &mut std::collections::VecDeque<T>, new: T) -> bool {
    queue.push_back(new);
    false
}

/// Overflow policy for ephemeral messages: drop the new message.
pub(crate) fn drop_newest<T>(_queue: &mut std::collections::VecDeque<T>, _new: T) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn change(h: &str, origin: ChangeOrigin) -> ChangeEvent {
        ChangeEvent {
            url: "automerge:x".into(),
            heads: vec![h.into()],
            origin,
            coalesced: 0,
        }
    }

    #[test]
    fn changes_coalesce_into_the_newest() {
        let mut q = VecDeque::from([change("a", ChangeOrigin::Local)]);
        assert!(!coalesce_change(&mut q, change("b", ChangeOrigin::Remote)));
        assert!(!coalesce_change(&mut q, change("c", ChangeOrigin::Local)));
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].heads, vec!["c".to_owned()]);
        assert_eq!(q[0].origin, ChangeOrigin::Remote);
        assert_eq!(q[0].coalesced, 2);
    }

    #[test]
    fn statuses_drop_the_oldest_and_messages_the_newest() {
        let mut q = VecDeque::from([1, 2]);
        assert!(drop_oldest(&mut q, 3));
        assert_eq!(q, VecDeque::from([2, 3]));
        assert!(drop_newest(&mut q, 4));
        assert_eq!(q, VecDeque::from([2, 3]));
    }
}
