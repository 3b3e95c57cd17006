//! What other regions acknowledged, shared between the nodes of a cluster.
//!
//! One node of a cluster holds each region link (see the server's cluster region links), so
//! only that node learns which heads of a document a peer region has committed. It tells the
//! other nodes ([`Event::RegionHeads`], published by the driver on the cluster bus) whenever
//! that changes; they keep it beside the document ([`Core::handle_cluster_region_heads`]) and
//! report it in their own heads gossip, so `wait_durable(regions:N)` is met for a client of any
//! node, not only of the link holder. What a node keeps leaves with the document (eviction,
//! deletion); a node that loads the document later learns the heads with the next change the
//! peer regions acknowledge.

use automerge::ChangeHash;

use super::durability::merge_into;
use super::{Core, Event};
use crate::id::{DocumentId, StorageId};

impl Core {
    /// Per peer region (storage id) with a link here, the heads of `doc` it has committed: all
    /// of ours when its last digest matched ours, else the heads it last announced.
    pub(super) fn region_heads(&self, doc: &DocumentId) -> Vec<(StorageId, Vec<ChangeHash>)> {
        // Only region servers have region links; the others skip the scan of every connection
        // (this runs on every sync of a document).
        if !self.is_region_server() {
            return Vec::new();
        }
        let Some(entry) = self.docs.get(doc) else {
            return Vec::new();
        };
        let mut out: Vec<(StorageId, Vec<ChangeHash>)> = Vec::new();
        for (conn, c) in &self.conns {
            let (Some(_), Some(peer)) = (&c.region, &c.peer) else {
                continue;
            };
            let Some(sid) = peer.persistent_storage() else {
                continue;
            };
            let heads = if self.link_confirms(*conn, doc) {
                entry.saved_heads.clone()
            } else {
                match entry
                    .peers
                    .get(conn)
                    .and_then(|pd| pd.sync.their_heads.as_ref())
                {
                    Some(theirs) if !theirs.is_empty() => theirs.clone(),
                    _ => continue,
                }
            };
            if heads.is_empty() {
                continue;
            }
            out.retain(|(s, _)| s != sid);
            out.push((sid.clone(), heads));
        }
        out.sort();
        out
    }

    /// Raises [`Event::RegionHeads`] when what this node's region links acknowledged of `doc`
    /// differs from what it last told the cluster.
    pub(super) fn publish_region_heads(
        &mut self,
        doc: DocumentId,
        regions: &[(StorageId, Vec<ChangeHash>)],
    ) {
        if regions.is_empty() {
            return;
        }
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        if entry.region_heads_published == regions {
            return;
        }
        entry.region_heads_published = regions.to_vec();
        self.out.event(Event::RegionHeads {
            doc,
            heads: regions.to_vec(),
        });
    }

    /// Another node of the cluster reports the heads of `doc` its region links acknowledged:
    /// kept while `doc` is resident here, reported to this node's gossip subscribers, and
    /// counted by [`Core::durability`].
    pub fn handle_cluster_region_heads(
        &mut self,
        now: u64,
        doc: DocumentId,
        heads: Vec<(StorageId, Vec<ChangeHash>)>,
    ) {
        if !self.owns(&doc) || self.tombstones.contains_key(&doc) {
            return;
        }
        let our_sid = self.config.storage_id.clone();
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        let mut changed = false;
        for (sid, h) in heads {
            if Some(&sid) == our_sid.as_ref() {
                continue;
            }
            changed |= merge_into(&mut entry.cluster_region_heads, Some(&entry.doc), sid, h);
        }
        if changed {
            self.out.event(Event::RemoteHeads { doc });
            self.gossip_heads(now, doc);
        }
    }
}

#[cfg(test)]
mod tests {
    use automerge::ROOT;
    use automerge::transaction::Transactable;

    use super::*;
    use crate::core::{CoreConfig, Durability, Effect};
    use crate::id::PeerId;
    use crate::storage::MemoryStorage;

    fn drive(core: &mut Core, disk: &MemoryStorage, now: u64) {
        while let Some(effect) = core.poll_effect() {
            if let Effect::Storage { id, op } = effect {
                let reply = op.run_on(disk);
                core.handle_storage_result(now, id, reply);
            }
        }
    }

    #[test]
    fn another_nodes_region_acknowledgements_count_for_durability() {
        let disk = MemoryStorage::new();
        let mut core = Core::new(CoreConfig::new(
            PeerId::from("node-b"),
            Some("cluster".into()),
            1,
        ));
        let doc = DocumentId::from_bytes([1; 16]);
        core.create(0, doc).unwrap();
        core.change(0, &doc, |tx| tx.put(ROOT, "k", 1)).unwrap();
        drive(&mut core, &disk, 0);
        let heads = core.document(&doc).unwrap().get_heads();
        let before = core.durability(&doc, &heads);
        assert!(before.satisfies(Durability::Local), "{before}");
        assert!(!before.satisfies(Durability::Regions(1)), "{before}");

        let far = StorageId::from("far-region");
        core.handle_cluster_region_heads(1, doc, vec![(far.clone(), heads.clone())]);
        let after = core.durability(&doc, &heads);
        assert!(after.storages.contains(&far), "{after}");
        assert!(after.satisfies(Durability::Regions(1)), "{after}");

        // Claims about our own storage, or about documents not resident here, are ignored.
        let ours = StorageId::from("cluster");
        core.handle_cluster_region_heads(2, doc, vec![(ours, heads.clone())]);
        assert_eq!(core.durability(&doc, &heads).storages.len(), 1);
        let stranger = DocumentId::from_bytes([7; 16]);
        core.handle_cluster_region_heads(3, stranger, vec![(far, heads)]);
        assert!(core.durability(&stranger, &[]).storages.is_empty());
    }
}
