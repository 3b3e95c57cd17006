//! Which regions a region server reaches now, told to its Concord clients (`concord-regions`).
//!
//! A client waiting for `regions:N` behind a server that is cut off from the other regions
//! cannot succeed through that server. The server knows (its region links are down), so it tells
//! every Concord client that subscribed to heads gossip which regions it reaches, whenever that
//! changes; the client's wait (`DocHandle::wait_durable`) fails fast with
//! `RepoError::RegionsUnreachable` when the regions that already hold the change plus those its
//! server reaches cannot make N.

use std::collections::BTreeSet;

use super::Core;
use crate::id::{ConnId, StorageId};
use crate::wire::Message;

/// The regions a server says it reaches (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionReach {
    /// Storage ids of the regions reachable now (the server's own included).
    pub reachable: BTreeSet<StorageId>,
    /// Peer regions the server has seen whose link is down.
    pub down: BTreeSet<String>,
}

impl std::fmt::Display for RegionReach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its server reaches {} region(s) including its own",
            self.reachable.len()
        )?;
        if !self.down.is_empty() {
            let down: Vec<&str> = self.down.iter().map(String::as_str).collect();
            write!(f, "; links down to: {}", down.join(", "))?;
        }
        Ok(())
    }
}

impl Core {
    /// What this region server reaches now.
    fn our_reach(&self) -> Option<RegionReach> {
        let ours = self.config.storage_id.clone()?;
        let mut reach = RegionReach::default();
        reach.reachable.insert(ours);
        let mut up = BTreeSet::new();
        for c in self.conns.values() {
            if let (Some(link), Some(peer)) = (&c.region, &c.peer) {
                up.insert(link.name.clone());
                if let Some(sid) = peer.persistent_storage() {
                    reach.reachable.insert(sid.clone());
                }
            }
        }
        reach.down = self
            .region_traffic
            .keys()
            .filter(|n| !up.contains(*n))
            .cloned()
            .collect();
        Some(reach)
    }

    /// Tells every Concord client subscribed to heads gossip what we reach, when it changed
    /// (region servers, primary shard only).
    pub(super) fn announce_regions(&mut self) {
        let announce = self
            .config
            .region
            .as_ref()
            .is_some_and(|r| r.announce_reach);
        if !announce || !self.is_primary_shard() {
            return;
        }
        let Some(reach) = self.our_reach() else {
            return;
        };
        let targets: Vec<(ConnId, crate::id::PeerId)> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.heads_gossip && c.region.is_none() && c.regions.as_ref() != Some(&reach)
            })
            .filter_map(|(id, c)| {
                let p = c.peer.as_ref().filter(|p| p.metadata.concord)?;
                Some((*id, p.peer_id.clone()))
            })
            .collect();
        for (conn, target_id) in targets {
            let msg = Message::Regions {
                sender_id: self.config.peer_id.clone(),
                target_id,
                reachable: reach.reachable.iter().cloned().collect(),
                down: reach.down.iter().cloned().collect(),
            };
            self.out.send(conn, &msg);
            if let Some(c) = self.conns.get_mut(&conn) {
                c.regions = Some(reach.clone());
            }
        }
    }

    /// A server we dialled says what it reaches.
    pub(super) fn on_regions(
        &mut self,
        conn: ConnId,
        reachable: Vec<StorageId>,
        down: Vec<String>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.inbound {
            return; // only servers we dialled speak for their regions
        }
        c.regions = Some(RegionReach {
            reachable: reachable.into_iter().take(256).collect(),
            down: down.into_iter().take(256).collect(),
        });
    }

    /// What the servers we are connected to reach, merged; `None` while any of them has not
    /// said (or when we are connected to none).
    pub fn region_reach(&self) -> Option<RegionReach> {
        let mut merged: Option<RegionReach> = None;
        for c in self.conns.values().filter(|c| !c.inbound) {
            let Some(peer) = &c.peer else { continue };
            if peer.persistent_storage().is_none() {
                continue;
            }
            let r = c.regions.as_ref()?;
            let m = merged.get_or_insert_with(RegionReach::default);
            m.reachable.extend(r.reachable.iter().cloned());
            m.down.extend(r.down.iter().cloned());
        }
        merged
    }
}
