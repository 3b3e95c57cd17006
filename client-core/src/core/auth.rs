//! Authorisation data the core enforces per message: who a peer is and what it may do.
//!
//! The core does not verify credentials (that is the transport's job, e.g. the server checks a
//! signed token at the WebSocket upgrade); it receives a verified [`Grant`] with the connection
//! and [`GrantPolicy`] applies it to every message: documents outside the grant are
//! `doc-unavailable` (no existence leak) and changes from a read-only peer are refused.

use std::collections::BTreeSet;

use super::{PeerInfo, SharePolicy};
use crate::id::DocumentId;

/// Which documents a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DocScope {
    /// Every document.
    All,
    /// Only these documents.
    Only(BTreeSet<DocumentId>),
}

/// A verified principal and its rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who (e.g. a token's `sub`). A peer id is bound to the principal that first joined with it.
    pub principal: String,
    /// Which documents.
    pub docs: DocScope,
    /// Whether it may write (otherwise read-only).
    pub write: bool,
    /// Whether it may act as a region link (a sync server replicating every document).
    pub replicate: bool,
}

impl Grant {
    /// Full access for `principal`.
    pub fn full(principal: impl Into<String>) -> Self {
        Self {
            principal: principal.into(),
            docs: DocScope::All,
            write: true,
            replicate: false,
        }
    }

    /// A region server: every document, writable, replicating.
    pub fn region(principal: impl Into<String>) -> Self {
        Self {
            replicate: true,
            ..Self::full(principal)
        }
    }

    /// May it read `doc`?
    pub fn can_read(&self, doc: &DocumentId) -> bool {
        match &self.docs {
            DocScope::All => true,
            DocScope::Only(ids) => ids.contains(doc),
        }
    }

    /// May it write `doc`?
    pub fn can_write(&self, doc: &DocumentId) -> bool {
        self.write && self.can_read(doc)
    }
}

/// Server policy enforcing grants: never pushes unrequested documents to inbound peers, answers
/// only documents in the peer's grant, accepts changes only with write rights. Peers without a
/// grant are allowed only when `allow_anonymous` (development mode).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrantPolicy {
    /// Let peers without a grant read and write everything.
    pub allow_anonymous: bool,
}

impl SharePolicy for GrantPolicy {
    fn announce(&self, peer: &PeerInfo, doc: &DocumentId) -> bool {
        !peer.inbound && self.access(peer, doc)
    }

    fn access(&self, peer: &PeerInfo, doc: &DocumentId) -> bool {
        match &peer.grant {
            Some(g) => g.can_read(doc),
            None => self.allow_anonymous || !peer.inbound,
        }
    }

    fn accept_changes(&self, peer: &PeerInfo, doc: &DocumentId) -> bool {
        match &peer.grant {
            Some(g) => g.can_write(doc),
            None => self.allow_anonymous || !peer.inbound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::PeerId;
    use crate::wire::PeerMetadata;

    fn peer(grant: Option<Grant>) -> PeerInfo {
        PeerInfo {
            speaks_as: PeerId::from("p"),
            peer_id: PeerId::from("p"),
            metadata: PeerMetadata::default(),
            inbound: true,
            grant,
        }
    }

    #[test]
    fn grants_scope_reads_and_writes() {
        let (a, b) = (
            DocumentId::from_bytes([1; 16]),
            DocumentId::from_bytes([2; 16]),
        );
        let reader = Grant {
            principal: "r".into(),
            docs: DocScope::Only([a].into()),
            write: false,
            replicate: false,
        };
        let policy = GrantPolicy::default();
        let p = peer(Some(reader));
        assert!(policy.access(&p, &a));
        assert!(!policy.access(&p, &b));
        assert!(!policy.accept_changes(&p, &a));
        let w = peer(Some(Grant::full("w")));
        assert!(policy.accept_changes(&w, &b));
        assert!(
            !policy.access(&peer(None), &a),
            "anonymous peers are denied by default"
        );
        assert!(
            GrantPolicy {
                allow_anonymous: true
            }
            .accept_changes(&peer(None), &a)
        );
    }
}
