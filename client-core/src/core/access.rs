//! Reading resident documents: the document, its heads, pinning, and per-peer sync status.

use automerge::{Automerge, ChangeHash};

use super::document::DocState;
use super::{Core, CoreError};
use crate::id::{ConnId, DocumentId, PeerId};

/// What we know of one peer's copy of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSyncStatus {
    /// The connection.
    pub conn: ConnId,
    /// The peer.
    pub peer_id: PeerId,
    /// The heads the peer last told us it has (`None` before it said anything).
    pub their_heads: Option<Vec<ChangeHash>>,
    /// Heads we know we both have.
    pub shared_heads: Vec<ChangeHash>,
    /// True when the peer's last known heads equal ours.
    pub in_sync: bool,
}

impl Core {
    /// The document, when resident and loaded. On a core that defers applying incoming
    /// changes ([`CoreConfig::defer_apply`](super::CoreConfig::defer_apply), servers), changes
    /// received since the last materialisation are not in it yet: call
    /// [`Core::materialize`] first to read everything.
    pub fn document(&self, doc: &DocumentId) -> Option<&Automerge> {
        self.docs
            .get(doc)
            .filter(|e| e.state == DocState::Ready)
            .map(|e| e.doc.applied())
    }

    /// Applies every change of `doc` received but not applied yet (see [`Core::document`]).
    /// A no-op on cores that apply at once, and for documents not resident.
    pub fn materialize(&mut self, doc: &DocumentId) -> Result<(), CoreError> {
        self.materialize_at(0, doc)
    }

    /// [`Core::materialize`] at time `now` (panics contained: see `guard.rs`).
    pub(super) fn materialize_at(&mut self, now: u64, doc: &DocumentId) -> Result<(), CoreError> {
        let id = *doc;
        self.guarded(now, id, |c| c.flush_pending(&id))
            .unwrap_or_else(|| {
                Err(CoreError::Failed {
                    doc: id,
                    reason: "applying pending changes panicked; reloaded from storage".into(),
                })
            })
    }

    fn flush_pending(&mut self, doc: &DocumentId) -> Result<(), CoreError> {
        let Some(entry) = self.docs.get_mut(doc) else {
            return Ok(());
        };
        entry.doc.flush().map_err(|e| {
            let reason = format!("pending changes do not apply: {e}");
            entry.state = DocState::Failed(reason.clone());
            CoreError::Failed { doc: *doc, reason }
        })
    }

    /// Why a document could not be loaded, if it could not.
    pub fn failure(&self, doc: &DocumentId) -> Option<&str> {
        match self.docs.get(doc).map(|e| &e.state) {
            Some(DocState::Failed(reason)) => Some(reason),
            _ => None,
        }
    }

    /// Documents currently resident.
    pub fn resident(&self) -> Vec<DocumentId> {
        self.docs.keys().copied().collect()
    }

    /// Keeps `doc` resident (not evicted) until as many `unpin`s.
    pub fn pin(&mut self, doc: &DocumentId) {
        if let Some(e) = self.docs.get_mut(doc) {
            e.pins += 1;
        }
    }

    /// Undoes one [`Core::pin`].
    pub fn unpin(&mut self, doc: &DocumentId) {
        if let Some(e) = self.docs.get_mut(doc) {
            e.pins = e.pins.saturating_sub(1);
        }
    }

    /// Changes of `doc` received and committed but not applied yet (see [`Core::document`]).
    pub fn pending_changes(&self, doc: &DocumentId) -> usize {
        self.docs.get(doc).map_or(0, |e| e.doc.pending_len())
    }

    /// Heads of `doc` including changes received but not applied yet (see
    /// [`Core::document`]); `None` when not resident and loaded.
    pub fn heads(&self, doc: &DocumentId) -> Option<Vec<ChangeHash>> {
        self.docs
            .get(doc)
            .filter(|e| e.state == DocState::Ready)
            .map(|e| e.doc.get_heads())
    }

    /// Which heads each connected peer is known to have for `doc`.
    pub fn sync_status(&self, doc: &DocumentId) -> Vec<PeerSyncStatus> {
        let Some(entry) = self.docs.get(doc) else {
            return Vec::new();
        };
        let ours = entry.doc.get_heads();
        entry
            .peers
            .iter()
            .filter_map(|(conn, pd)| {
                let peer = self.conns.get(conn)?.peer.as_ref()?;
                Some(PeerSyncStatus {
                    conn: *conn,
                    peer_id: peer.peer_id.clone(),
                    their_heads: pd.sync.their_heads.clone(),
                    shared_heads: pd.sync.shared_heads.clone(),
                    in_sync: pd.sync.their_heads.as_ref() == Some(&ours),
                })
            })
            .collect()
    }
}
