//! Who a peer is: the shape of the ids it claims, which peer id it speaks as, and which storage
//! id its sync state is persisted under.
//!
//! Peer ids are chosen by peers, so the server never lets one principal take another's:
//!
//! - A peer id is reserved for the principal that joined with it, while it is connected and for
//!   [`RESERVATION_MS`] after it left (so a reconnecting client finds its id free).
//! - A different principal joining with a reserved id is still accepted (nobody can lock anyone
//!   out), but it *speaks as* a namespaced id (`<peer id>~<hash of its principal>`): its
//!   presence and cursors are relayed under that id, never under the holder's.
//! - The same principal joining again with its own id replaces its older connection.
//!
//! Sync state with an authenticated client is persisted under its storage id *and* principal
//! (another principal claiming the same storage id never reads or overwrites it), and only for
//! the first [`Quotas::storage_ids`](super::quota::Quotas::storage_ids) storage ids a principal
//! uses at once.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::{Core, PeerInfo, ProtocolError};
use crate::id::{ConnId, PeerId, StorageId};
use crate::wire::PeerMetadata;

/// How long a peer id stays reserved for its principal after its connection ended.
pub const RESERVATION_MS: u64 = 10 * 60 * 1000;
/// Reservations kept at most (expired ones are dropped first).
const MAX_RESERVATIONS: usize = 100_000;
/// Longest accepted peer id (bytes).
pub const MAX_PEER_ID_BYTES: usize = 128;
/// Longest accepted storage id (automerge-repo and Concord send 36-character UUIDs).
pub const MAX_STORAGE_ID_BYTES: usize = 64;

#[derive(Debug, Clone)]
struct Reservation {
    principal: String,
    /// Connected holders.
    holders: u32,
    /// When the reservation lapses once no holder is connected.
    until: u64,
}

/// Peer ids reserved by principals (kept by the core that runs handshakes).
#[derive(Debug, Default)]
pub(super) struct Reservations {
    by_peer: HashMap<PeerId, Reservation>,
}

/// A short, stable tag of a principal (so ids derived from it do not reveal it).
pub fn principal_tag(principal: &str) -> String {
    hex::encode(&Sha256::digest(principal.as_bytes())[..6])
}

/// Checks the ids a joining peer claims.
pub(super) fn check_ids(peer_id: &PeerId, metadata: Option<&PeerMetadata>) -> Result<(), String> {
    if peer_id.as_str().is_empty() || peer_id.as_str().len() > MAX_PEER_ID_BYTES {
        return Err(format!(
            "senderId must be 1 to {MAX_PEER_ID_BYTES} bytes (got {})",
            peer_id.as_str().len()
        ));
    }
    if let Some(sid) = metadata.and_then(|m| m.storage_id.as_ref()) {
        let s = sid.as_str();
        let shape = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if s.is_empty() || s.len() > MAX_STORAGE_ID_BYTES || !shape {
            return Err(format!(
                "peerMetadata.storageId must be 1 to {MAX_STORAGE_ID_BYTES} characters of \
                 [A-Za-z0-9-_.:] (a UUID, as automerge-repo sends)"
            ));
        }
    }
    Ok(())
}

impl PeerInfo {
    /// The key its sync state is persisted under: its storage id, prefixed with a tag of its
    /// principal when it authenticated as a client (`None`: nothing is persisted).
    pub fn sync_state_key(&self) -> Option<StorageId> {
        let sid = self.persistent_storage()?;
        match &self.grant {
            Some(g) if self.inbound && !g.replicate => Some(StorageId::new(format!(
                "{}/{}",
                principal_tag(&g.principal),
                sid
            ))),
            _ => Some(sid.clone()),
        }
    }
}

impl Reservations {
    fn live(&self, peer: &PeerId, now: u64) -> Option<&Reservation> {
        self.by_peer
            .get(peer)
            .filter(|r| r.holders > 0 || r.until > now)
    }

    fn reserve(&mut self, peer: &PeerId, principal: &str, now: u64) {
        if self.by_peer.len() >= MAX_RESERVATIONS {
            self.by_peer.retain(|_, r| r.holders > 0 || r.until > now);
        }
        if self.by_peer.len() >= MAX_RESERVATIONS && !self.by_peer.contains_key(peer) {
            return; // Full of live reservations: this one goes unreserved.
        }
        let r = self
            .by_peer
            .entry(peer.clone())
            .or_insert_with(|| Reservation {
                principal: principal.to_owned(),
                holders: 0,
                until: 0,
            });
        if r.principal != principal {
            // The old reservation lapsed: the id changes hands.
            *r = Reservation {
                principal: principal.to_owned(),
                holders: 0,
                until: 0,
            };
        }
        r.holders += 1;
    }

    fn release(&mut self, peer: &PeerId, principal: &str, now: u64) {
        if let Some(r) = self.by_peer.get_mut(peer)
            && r.principal == principal
        {
            r.holders = r.holders.saturating_sub(1);
            if r.holders == 0 {
                r.until = now + RESERVATION_MS;
            }
        }
    }
}

impl Core {
    /// Binds a joining inbound peer's id: returns the id it speaks as (see the module docs), or
    /// `None` when the join was refused.
    pub(super) fn bind_peer_id(&mut self, now: u64, conn: ConnId, peer_id: &PeerId) -> PeerId {
        let mine: Option<String> = self
            .conns
            .get(&conn)
            .and_then(|c| c.grant.as_ref().map(|g| g.principal.clone()));
        let Some(mine) = mine else {
            return peer_id.clone(); // Anonymous (development) peers claim nothing.
        };
        // The same principal joining again replaces its older connections with that id.
        let older: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(id, c)| **id != conn && c.inbound && c.peer.is_some())
            .filter(|(_, c)| c.peer.as_ref().is_some_and(|p| &p.peer_id == peer_id))
            .filter(|(_, c)| c.grant.as_ref().is_some_and(|g| g.principal == mine))
            .map(|(id, _)| *id)
            .collect();
        for other in older {
            self.close(
                other,
                1008,
                "replaced by a newer connection with the same peer id",
            );
        }
        match self.reservations.live(peer_id, now) {
            Some(r) if r.principal != mine => {
                PeerId::new(format!("{peer_id}~{}", principal_tag(&mine)))
            }
            _ => {
                self.reservations.reserve(peer_id, &mine, now);
                peer_id.clone()
            }
        }
    }

    /// A connection with `subscribed` documents (in this core) ended: its peer id reservation
    /// starts to lapse and its principal's budgets are refunded.
    pub(super) fn release_peer(&mut self, now: u64, info: &PeerInfo, subscribed: usize) {
        let Some(g) = info.grant.as_ref().filter(|g| info.inbound && !g.replicate) else {
            return;
        };
        let primary = self.is_primary_shard();
        if primary && info.speaks_as == info.peer_id {
            self.reservations.release(&info.peer_id, &g.principal, now);
        }
        if let Some(budgets) = &self.config.budgets {
            if primary {
                budgets.disconnect(&g.principal, subscribed as u64, now);
            } else {
                budgets.unsubscribe(&g.principal, subscribed as u64, now);
            }
        }
    }

    /// The principal charged for what `conn` sends: authenticated inbound clients only (region
    /// links and peers we dialled are not charged).
    pub(super) fn charged_principal(&self, conn: ConnId) -> Option<String> {
        self.config.budgets.as_ref()?;
        let c = self.conns.get(&conn)?;
        c.grant
            .as_ref()
            .filter(|g| c.inbound && !g.replicate)
            .map(|g| g.principal.clone())
    }

    /// Refuses a join whose ids are malformed; true when refused.
    pub(super) fn refuse_bad_ids(
        &mut self,
        conn: ConnId,
        peer_id: &PeerId,
        metadata: Option<&PeerMetadata>,
    ) -> bool {
        match check_ids(peer_id, metadata) {
            Ok(()) => false,
            Err(reason) => {
                self.protocol_error(conn, ProtocolError::BadHandshake(reason));
                self.close(conn, 1008, "malformed handshake");
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded_to_what_clients_send() {
        let meta = |s: &str| PeerMetadata {
            storage_id: Some(StorageId::new(s)),
            ..PeerMetadata::default()
        };
        let p = PeerId::from("peer-1");
        assert!(check_ids(&p, Some(&meta("3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"))).is_ok());
        assert!(check_ids(&p, None).is_ok());
        assert!(check_ids(&p, Some(&meta(&"x".repeat(900 * 1024)))).is_err());
        assert!(check_ids(&p, Some(&meta("a b"))).is_err());
        assert!(check_ids(&PeerId::from(""), None).is_err());
        assert!(check_ids(&PeerId::new("p".repeat(200)), None).is_err());
    }

    #[test]
    fn reservations_outlive_the_connection_for_a_while() {
        let mut r = Reservations::default();
        let id = PeerId::from("victim");
        r.reserve(&id, "alice", 0);
        let holder = |r: &Reservations, now| r.live(&id, now).map(|x| x.principal.clone());
        assert_eq!(holder(&r, 5).as_deref(), Some("alice"));
        r.release(&id, "alice", 10);
        assert_eq!(
            holder(&r, 10 + RESERVATION_MS - 1).as_deref(),
            Some("alice")
        );
        assert_eq!(holder(&r, 10 + RESERVATION_MS), None);
        r.reserve(&id, "mallory", 20 + RESERVATION_MS);
        assert_eq!(holder(&r, 20 + RESERVATION_MS).as_deref(), Some("mallory"));
    }

    #[test]
    fn principal_tags_are_short_and_stable() {
        assert_eq!(principal_tag("alice"), principal_tag("alice"));
        assert_ne!(principal_tag("alice"), principal_tag("bob"));
        assert_eq!(principal_tag("alice").len(), 12);
    }
}
