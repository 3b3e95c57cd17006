//! Durability levels: which storages (servers, regions) have committed which heads.
//!
//! A write is `Local` once its commit resolves. Beyond that, a replica learns where its changes
//! are durable from two sources:
//!
//! - the peers it syncs with directly: a Concord peer sends sync messages only from committed
//!   state, so the heads a durable peer last announced are committed in its storage;
//! - heads gossip (`remote-heads-changed`): a client that dialled a server subscribes with
//!   `remote-subscription-change`, and the server reports, per document, its own committed heads
//!   and the heads each of its region links has acknowledged, keyed by storage id.
//!
//! [`Core::durability`] combines them into a [`DurabilityReport`]; [`Durability`] says what to
//! wait for (`DocHandle::wait_durable` in the tokio driver).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use automerge::ChangeHash;

use super::lazy::LazyDoc;
use super::{Core, Event};
use crate::id::{ConnId, DocumentId, StorageId, decode_head, encode_head};
use crate::wire::{Message, RemoteHeads};

/// Storage ids remembered per document from gossip (bounds what a peer can make us store).
const MAX_GOSSIPED_STORAGES: usize = 64;
/// Heads remembered per (document, storage).
const MAX_GOSSIPED_HEADS: usize = 32;

/// How durable a write must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Committed to local storage.
    Local,
    /// Committed by at least one server (a durable peer).
    Server,
    /// Committed by at least this many distinct region servers (storage ids).
    Regions(usize),
}

/// `local`, `server` or `regions:N` could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid durability `{0}`: expected `local`, `server` or `regions:N` with N >= 1")]
pub struct ParseDurabilityError(String);

impl FromStr for Durability {
    type Err = ParseDurabilityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseDurabilityError(s.chars().take(64).collect());
        match s {
            "local" => Ok(Self::Local),
            "server" => Ok(Self::Server),
            _ => {
                let n = s.strip_prefix("regions:").ok_or_else(bad)?;
                match n.parse::<usize>() {
                    Ok(k) if k >= 1 => Ok(Self::Regions(k)),
                    _ => Err(bad()),
                }
            }
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("local"),
            Self::Server => f.write_str("server"),
            Self::Regions(k) => write!(f, "regions:{k}"),
        }
    }
}

/// Where some heads of a document are known to be committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurabilityReport {
    /// Committed in local storage.
    pub local: bool,
    /// Storage ids of servers known to have committed them.
    pub storages: BTreeSet<StorageId>,
}

impl DurabilityReport {
    /// Does this meet `level`?
    pub fn satisfies(&self, level: Durability) -> bool {
        match level {
            Durability::Local => self.local,
            Durability::Server => self.local && !self.storages.is_empty(),
            Durability::Regions(k) => self.local && self.storages.len() >= k,
        }
    }
}

impl fmt::Display for DurabilityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.local {
            return f.write_str("not yet committed locally");
        }
        if self.storages.is_empty() {
            return f.write_str("committed locally only");
        }
        let ids: Vec<&str> = self.storages.iter().map(StorageId::as_str).collect();
        write!(
            f,
            "committed locally and on {}: {}",
            ids.len(),
            ids.join(", ")
        )
    }
}

/// Merges `heads`, reported committed on storage `sid`, into what `known` holds for it; true
/// when that changed. Every reported head was committed on that storage, and a storage never
/// loses a commit: the union is kept (reports may arrive out of order), reduced to its heads
/// when the document is at hand, and bounded ([`MAX_GOSSIPED_STORAGES`] storages,
/// [`MAX_GOSSIPED_HEADS`] heads each).
pub(super) fn merge_into(
    known: &mut BTreeMap<StorageId, Vec<ChangeHash>>,
    am: Option<&LazyDoc>,
    sid: StorageId,
    heads: Vec<ChangeHash>,
) -> bool {
    if !known.contains_key(&sid) && known.len() >= MAX_GOSSIPED_STORAGES {
        return false;
    }
    let old = known.get(&sid).cloned().unwrap_or_default();
    let mut merged = old.clone();
    for h in heads {
        if !merged.contains(&h) {
            merged.push(h);
        }
    }
    if let Some(am) = am {
        let all = merged.clone();
        merged.retain(|h| {
            let others: Vec<ChangeHash> = all.iter().filter(|o| *o != h).copied().collect();
            others.is_empty() || !am.covers(&others, &[*h])
        });
    }
    if merged.len() > MAX_GOSSIPED_HEADS {
        merged.drain(..merged.len() - MAX_GOSSIPED_HEADS);
    }
    if same(&old, &merged) {
        return false;
    }
    known.insert(sid, merged);
    true
}

/// The same set of heads, whatever the order.
pub(super) fn same(a: &[ChangeHash], b: &[ChangeHash]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

impl Core {
    /// Where `target` (heads of `doc`, e.g. those a commit resolved with) is known to be
    /// committed. Needs the document resident; otherwise only `local` can be reported.
    pub fn durability(&self, doc: &DocumentId, target: &[ChangeHash]) -> DurabilityReport {
        let Some(entry) = self.docs.get(doc) else {
            return DurabilityReport::default();
        };
        let am = &entry.doc;
        let mut report = DurabilityReport {
            local: am.covers(&entry.saved_heads, target),
            storages: BTreeSet::new(),
        };
        for (conn, pd) in &entry.peers {
            let Some(peer) = self.conns.get(conn).and_then(|c| c.peer.as_ref()) else {
                continue;
            };
            if let (Some(sid), Some(theirs)) = (peer.persistent_storage(), &pd.sync.their_heads)
                && am.covers(theirs, target)
            {
                report.storages.insert(sid.clone());
            }
        }
        let cluster = entry.cluster_region_heads.iter();
        for (sid, heads) in self
            .remote_heads
            .get(doc)
            .into_iter()
            .flatten()
            .chain(cluster)
        {
            if Some(sid) != self.config.storage_id.as_ref() && am.covers(heads, target) {
                report.storages.insert(sid.clone());
            }
        }
        report
    }

    /// Sends `remote-subscription-change` to a server we dialled, asking for heads gossip.
    pub(super) fn subscribe_heads(&mut self, conn: ConnId) {
        let Some(peer) = self.conns.get(&conn).and_then(|c| c.peer.clone()) else {
            return;
        };
        let Some(sid) = peer.persistent_storage().cloned() else {
            return;
        };
        self.out.send(
            conn,
            &Message::RemoteSubscriptionChange {
                sender_id: self.config.peer_id.clone(),
                target_id: peer.peer_id,
                add: vec![sid],
                remove: Vec::new(),
            },
        );
    }

    pub(super) fn on_remote_subscription(
        &mut self,
        conn: ConnId,
        add: &[StorageId],
        remove: &[StorageId],
    ) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !add.is_empty() {
                c.heads_gossip = true;
            } else if !remove.is_empty() {
                c.heads_gossip = false;
            }
        }
    }

    pub(super) fn on_remote_heads(
        &mut self,
        conn: ConnId,
        doc: DocumentId,
        new_heads: BTreeMap<StorageId, RemoteHeads>,
    ) {
        let Some(peer) = self.conns.get(&conn).and_then(|c| c.peer.clone()) else {
            return;
        };
        if !self.config.policy.access(&peer, &doc) {
            return;
        }
        // Only servers we dialled and region links tell us where our changes are committed;
        // what clients claim is of no use, and is kept only for resident documents (it leaves
        // with them on eviction), so random document ids leave nothing behind.
        let from_server = !peer.inbound || peer.grant.as_ref().is_some_and(|g| g.replicate);
        if !from_server || !self.docs.contains_key(&doc) {
            return;
        }
        let am = self.docs.get(&doc).map(|e| &e.doc);
        let known = self.remote_heads.entry(doc).or_default();
        let mut changed = false;
        for (sid, rh) in new_heads {
            let Ok(heads) = rh
                .heads
                .iter()
                .map(|h| decode_head(h))
                .collect::<Result<Vec<_>, _>>()
            else {
                continue;
            };
            if merge_into(known, am, sid, heads) {
                changed = true;
            }
        }
        if changed {
            self.out.event(Event::RemoteHeads { doc });
        }
    }

    /// Tells gossip subscribers syncing `doc` which storages hold which committed heads: ours,
    /// those our region links acknowledged, and those other nodes of the cluster reported for
    /// theirs. Tells the cluster first when what our region links acknowledged changed.
    pub(super) fn gossip_heads(&mut self, now: u64, doc: DocumentId) {
        let Some(our_sid) = self.config.storage_id.clone() else {
            return;
        };
        let regions = self.region_heads(&doc);
        self.publish_region_heads(doc, &regions);
        let targets: Vec<ConnId> = self
            .subscribers
            .of(&doc)
            .filter(|id| self.conns.get(id).is_some_and(|c| c.heads_gossip))
            .collect();
        if targets.is_empty() {
            return;
        }
        let Some(entry) = self.docs.get(&doc) else {
            return;
        };
        if entry.saved_heads.is_empty() {
            return;
        }
        let mut map = entry.cluster_region_heads.clone();
        map.extend(regions);
        map.insert(our_sid, entry.saved_heads.clone());
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        let digest: Vec<(StorageId, Vec<ChangeHash>)> = map.into_iter().collect();
        for conn in targets {
            let Some(pd) = entry.peers.get_mut(&conn) else {
                continue;
            };
            if pd.gossiped.as_ref() == Some(&digest) {
                continue;
            }
            pd.gossiped = Some(digest.clone());
            let Some(target_id) = self
                .conns
                .get(&conn)
                .and_then(|c| c.peer.as_ref())
                .map(|p| p.peer_id.clone())
            else {
                continue;
            };
            let new_heads = digest
                .iter()
                .map(|(sid, heads)| {
                    (
                        sid.clone(),
                        RemoteHeads {
                            heads: heads.iter().map(encode_head).collect(),
                            timestamp: now as f64,
                        },
                    )
                })
                .collect();
            self.out.send(
                conn,
                &Message::RemoteHeadsChanged {
                    sender_id: self.config.peer_id.clone(),
                    target_id,
                    document_id: doc,
                    new_heads,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels() {
        assert_eq!("server".parse(), Ok(Durability::Server));
        assert_eq!("regions:2".parse(), Ok(Durability::Regions(2)));
        assert!("regions:0".parse::<Durability>().is_err());
        assert!("quorum".parse::<Durability>().is_err());
        assert_eq!(Durability::Regions(3).to_string(), "regions:3");
    }
}
