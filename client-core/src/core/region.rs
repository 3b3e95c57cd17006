//! Region replication: sync servers that replicate every document to each other.
//!
//! A core configured with a [`RegionConfig`] is a region server. Its links to other region
//! servers (outbound connections it dialled, or inbound ones whose [`Grant`](super::Grant) allows
//! replication, in both cases with a peer that announced a region) differ from client
//! connections in three ways:
//!
//! - **Live push.** Every committed change of every document is synced to every region link,
//!   whether or not the peer asked for the document.
//! - **Anti-entropy.** The core keeps an index of the committed heads of every stored document
//!   (persisted with [`StorageOp::PutHeads`], seeded by the driver at start-up with
//!   [`Core::seed_heads_index`]). On link-up and every [`RegionConfig::anti_entropy_ms`], each side
//!   sends a digest: one 64-bit sum of per-document hashes for each of 256 buckets of document
//!   ids (2 KiB whatever the number of documents). The receiver answers with its (document,
//!   hash) entries of the buckets that differ only, and each side then syncs the documents of its
//!   own that the other lacks or holds at other heads. Documents in sync cost nothing beyond
//!   the digest.
//! - **Lag.** [`Core::region_status`] reports per link: documents behind, the age of the oldest
//!   commit the region has not acknowledged, frames and bytes exchanged (see
//!   [`RegionLinkStatus`] for the definitions); [`Core::region_traffic`] keeps the traffic of
//!   links that ended, per peer region, so that counters survive reconnects.

use std::collections::{HashMap, VecDeque};

use automerge::ChangeHash;
use sha2::{Digest as _, Sha256};

use super::{Core, PendingOp, ProtocolError, StorageOp};
use crate::id::{ConnId, DocumentId, PeerId};
use crate::wire::Message;

/// Number of digest buckets (document ids are bucketed by their first byte).
pub const BUCKETS: usize = 256;
const ENTRY_BYTES: usize = 24;
/// Unacknowledged commits remembered per (link, document).
pub(super) const MAX_PENDING: usize = 64;

/// Makes a core a region server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionConfig {
    /// This region's name (announced to peers as `concordRegion`).
    pub name: String,
    /// Milliseconds between anti-entropy digests on an established region link.
    pub anti_entropy_ms: u64,
    /// Tell Concord clients which regions this server reaches (`concord-regions`, see
    /// [`super::RegionReach`]). Off for the nodes of a cluster region: a node whose region links
    /// another node holds does not know what the cluster reaches.
    pub announce_reach: bool,
}

impl RegionConfig {
    /// A region named `name`, with a digest every 30 seconds.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            anti_entropy_ms: 30_000,
            announce_reach: true,
        }
    }
}

/// Per-link state of a region connection.
#[derive(Debug, Clone, Default)]
pub(super) struct RegionLink {
    /// The peer's region name.
    pub(super) name: String,
    last_digest: u64,
    pub(super) frames_in: u64,
    pub(super) bytes_in: u64,
    /// Documents whose digest entries differed at the last exchange.
    pub(super) digest_diffs: u64,
    /// When `digest_diffs` was measured (core clock).
    pub(super) digest_at: Option<u64>,
    /// When the link came up (core clock).
    pub(super) up_since: u64,
    /// Per document: our commits the link has not acknowledged yet, oldest first, as (commit
    /// time, heads after that commit); at most [`MAX_PENDING`] each (the newest entry then
    /// absorbs later commits, keeping the oldest times exact).
    pub(super) unacked: HashMap<DocumentId, VecDeque<(u64, Vec<ChangeHash>)>>,
    /// Buckets whose sums matched ours at the peer's last digest, with that sum: while our
    /// bucket still has that sum, the peer holds our committed heads of every document in it.
    matched: HashMap<usize, u64>,
}

/// The committed heads of every stored document, hashed and bucketed for digests.
#[derive(Debug, Clone)]
pub(super) struct HeadsIndex {
    hashes: HashMap<DocumentId, u64>,
    buckets: Vec<u64>,
}

impl Default for HeadsIndex {
    fn default() -> Self {
        Self {
            hashes: HashMap::new(),
            buckets: vec![0; BUCKETS],
        }
    }
}

fn bucket_of(doc: &DocumentId) -> usize {
    usize::from(doc.as_bytes()[0])
}

fn heads_hash(heads: &[ChangeHash]) -> u64 {
    let mut sorted = heads.to_vec();
    sorted.sort();
    let mut h = Sha256::new();
    for c in &sorted {
        h.update(c.0);
    }
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

/// 32 bytes per change hash, as stored by [`StorageOp::PutHeads`].
pub(super) fn heads_bytes(heads: &[ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

fn parse_heads(bytes: &[u8]) -> Option<Vec<ChangeHash>> {
    if bytes.len() % 32 != 0 {
        return None;
    }
    bytes
        .chunks_exact(32)
        .map(|c| ChangeHash::try_from(c).ok())
        .collect()
}

impl HeadsIndex {
    /// Records `heads` for `doc`; true when the entry changed.
    pub(super) fn set(&mut self, doc: DocumentId, heads: &[ChangeHash]) -> bool {
        let b = bucket_of(&doc);
        let new = (!heads.is_empty()).then(|| heads_hash(heads));
        let old = match new {
            Some(h) => self.hashes.insert(doc, h),
            None => self.hashes.remove(&doc),
        };
        if old == new {
            return false;
        }
        if let Some(o) = old {
            self.buckets[b] = self.buckets[b].wrapping_sub(o);
        }
        if let Some(n) = new {
            self.buckets[b] = self.buckets[b].wrapping_add(n);
        }
        true
    }

    fn digest(&self) -> Vec<u8> {
        self.buckets.iter().flat_map(|b| b.to_be_bytes()).collect()
    }

    /// The sums of `covers`, in order (8 bytes each).
    fn digest_of(&self, covers: &[u8]) -> Vec<u8> {
        covers
            .iter()
            .flat_map(|b| self.buckets[usize::from(*b)].to_be_bytes())
            .collect()
    }

    fn entries(&self, buckets: &[u8]) -> Vec<u8> {
        let wanted: std::collections::HashSet<u8> = buckets.iter().copied().collect();
        let mut picked: Vec<(&DocumentId, &u64)> = self
            .hashes
            .iter()
            .filter(|(d, _)| wanted.contains(&d.as_bytes()[0]))
            .collect();
        picked.sort();
        let mut out = Vec::with_capacity(picked.len() * ENTRY_BYTES);
        for (d, h) in picked {
            out.extend_from_slice(d.as_bytes());
            out.extend_from_slice(&h.to_be_bytes());
        }
        out
    }

    pub(super) fn len(&self) -> usize {
        self.hashes.len()
    }
}

impl Core {
    /// True for a region server.
    pub fn is_region_server(&self) -> bool {
        self.config.region.is_some()
    }

    /// Seeds the heads index with what storage recorded (`Storage::heads_index`: 32 bytes per
    /// change hash). A region server's driver calls it once before accepting connections; entries
    /// that are malformed are skipped (the document is re-indexed when it is next loaded).
    pub fn seed_heads_index(&mut self, entries: impl IntoIterator<Item = (DocumentId, Vec<u8>)>) {
        for (doc, bytes) in entries {
            if !self.owns(&doc) {
                continue;
            }
            if let Some(heads) = parse_heads(&bytes) {
                self.index.set(doc, &heads);
            }
        }
    }

    /// Refreshes the heads index from what storage recorded, for the documents not resident
    /// here (whose entries this core keeps current itself). A cluster node that takes over a
    /// region link calls it: other nodes committed meanwhile.
    pub fn refresh_heads_index(
        &mut self,
        entries: impl IntoIterator<Item = (DocumentId, Vec<u8>)>,
    ) {
        let resident: Vec<DocumentId> = self.docs.keys().copied().collect();
        self.seed_heads_index(entries.into_iter().filter(|(d, _)| !resident.contains(d)));
    }

    /// Documents in the heads index.
    pub fn indexed_documents(&self) -> usize {
        self.index.len()
    }

    /// Records committed heads of `doc` (after a commit or a load) and, on a region server,
    /// persists the index entry and queues the document for every region link.
    pub(super) fn region_committed(&mut self, now: u64, doc: DocumentId, heads: &[ChangeHash]) {
        if !self.is_region_server() {
            return;
        }
        self.index_heads(doc, heads);
        let links: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.region.is_some())
            .map(|(id, _)| *id)
            .collect();
        for conn in links {
            self.subscribe(conn, doc);
            if let Some(link) = self.conns.get_mut(&conn).and_then(|c| c.region.as_mut()) {
                let pending = link.unacked.entry(doc).or_default();
                if pending.len() >= MAX_PENDING {
                    if let Some(last) = pending.back_mut() {
                        last.1 = heads.to_vec();
                    }
                } else {
                    pending.push_back((now, heads.to_vec()));
                }
            }
        }
    }

    /// Updates (and persists) the heads index entry of `doc` on a region server.
    pub(super) fn index_heads(&mut self, doc: DocumentId, heads: &[ChangeHash]) {
        if self.is_region_server() && self.index.set(doc, heads) {
            self.out.storage(
                StorageOp::PutHeads {
                    doc,
                    heads: heads_bytes(heads),
                },
                PendingOp::SyncState,
            );
        }
    }

    /// Whether a freshly established peer is a region link.
    pub(super) fn is_region_link(&self, info: &super::PeerInfo) -> bool {
        self.is_region_server()
            && info.metadata.region.is_some()
            && (!info.inbound || info.grant.as_ref().is_some_and(|g| g.replicate))
    }

    /// A region link came up: start anti-entropy.
    pub(super) fn region_link_up(&mut self, now: u64, conn: ConnId, region: String) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.region = Some(RegionLink {
                name: region,
                up_since: now,
                ..RegionLink::default()
            });
        }
        self.send_digest(now, conn);
        self.announce_regions();
    }

    fn target(&self, conn: ConnId) -> Option<PeerId> {
        self.conns
            .get(&conn)?
            .peer
            .as_ref()
            .map(|p| p.peer_id.clone())
    }

    fn send_digest(&mut self, now: u64, conn: ConnId) {
        let Some(target_id) = self.target(conn) else {
            return;
        };
        if let Some(link) = self.conns.get_mut(&conn).and_then(|c| c.region.as_mut()) {
            link.last_digest = now;
        }
        let (buckets, covers) = match self.config.shard {
            None => (self.index.digest(), None),
            Some(_) => {
                let covers: Vec<u8> = (0..BUCKETS)
                    .filter(|b| self.owns_bucket(*b))
                    .filter_map(|b| u8::try_from(b).ok())
                    .collect();
                (self.index.digest_of(&covers), Some(covers))
            }
        };
        let msg = Message::Digest {
            sender_id: self.config.peer_id.clone(),
            target_id,
            buckets,
            covers,
        };
        self.out.send(conn, &msg);
    }

    /// Digests are due on links whose last one is older than the configured interval.
    pub(super) fn region_tick(&mut self, now: u64) {
        let Some(every) = self.config.region.as_ref().map(|r| r.anti_entropy_ms) else {
            return;
        };
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter_map(|(id, c)| c.region.as_ref().map(|l| (*id, l.last_digest)))
            .filter(|(_, last)| now.saturating_sub(*last) >= every)
            .map(|(id, _)| id)
            .collect();
        for conn in due {
            self.send_digest(now, conn);
        }
    }

    fn not_a_link(&mut self, conn: ConnId, what: &'static str) -> bool {
        if self.conns.get(&conn).is_some_and(|c| c.region.is_some()) {
            return false;
        }
        self.protocol_error(conn, ProtocolError::NotRegionLink(what));
        true
    }

    /// The peer's digest (of every bucket, or of the buckets `covers` lists): answer with our
    /// entries of the buckets that differ, among those this core owns.
    pub(super) fn on_digest(
        &mut self,
        now: u64,
        conn: ConnId,
        theirs: &[u8],
        covers: Option<&[u8]>,
    ) {
        if self.not_a_link(conn, "concord-digest") {
            return;
        }
        let all: Vec<u8> = (0..=u8::MAX).collect();
        let covers = covers.unwrap_or(&all);
        if theirs.len() != covers.len() * 8 {
            self.protocol_error(conn, ProtocolError::BadDigest("wrong digest length".into()));
            return;
        }
        // (bucket, their sum) for the buckets both sides speak for.
        let compared: Vec<(usize, u64)> = covers
            .iter()
            .zip(theirs.chunks_exact(8))
            .map(|(b, sum)| {
                let mut s = [0u8; 8];
                s.copy_from_slice(sum);
                (usize::from(*b), u64::from_be_bytes(s))
            })
            .filter(|(b, _)| self.owns_bucket(*b))
            .collect();
        let buckets = &self.index.buckets;
        if let Some(link) = self.conns.get_mut(&conn).and_then(|c| c.region.as_mut()) {
            for (b, sum) in &compared {
                if buckets[*b] == *sum {
                    link.matched.insert(*b, *sum);
                } else {
                    link.matched.remove(b);
                }
            }
        }
        let mut resident: Vec<DocumentId> = self.docs.keys().copied().collect();
        resident.sort();
        for doc in resident {
            self.gossip_heads(now, doc);
        }
        let differing: Vec<u8> = compared
            .iter()
            .filter(|(b, sum)| self.index.buckets[*b] != *sum)
            .filter_map(|(b, _)| u8::try_from(*b).ok())
            .collect();
        if differing.is_empty() {
            if let Some(link) = self.conns.get_mut(&conn).and_then(|c| c.region.as_mut()) {
                link.digest_diffs = 0;
                link.digest_at = Some(now);
            }
            return;
        }
        let Some(target_id) = self.target(conn) else {
            return;
        };
        let msg = Message::DigestEntries {
            sender_id: self.config.peer_id.clone(),
            target_id,
            entries: self.index.entries(&differing),
            buckets: differing,
        };
        self.out.send(conn, &msg);
    }

    /// The peer's entries for differing buckets: sync every document of ours in those buckets
    /// that it lacks or holds at other heads.
    pub(super) fn on_digest_entries(
        &mut self,
        now: u64,
        conn: ConnId,
        buckets: &[u8],
        entries: &[u8],
    ) {
        if self.not_a_link(conn, "concord-digest-entries") {
            return;
        }
        if entries.len() % ENTRY_BYTES != 0 {
            self.protocol_error(conn, ProtocolError::BadDigest("ragged entries".into()));
            return;
        }
        let mut theirs = HashMap::with_capacity(entries.len() / ENTRY_BYTES);
        for e in entries.chunks_exact(ENTRY_BYTES) {
            let Ok(doc) = DocumentId::try_from_slice(&e[..16]) else {
                self.protocol_error(conn, ProtocolError::BadDigest("bad document id".into()));
                return;
            };
            let mut h = [0u8; 8];
            h.copy_from_slice(&e[16..]);
            theirs.insert(doc, u64::from_be_bytes(h));
        }
        let wanted: std::collections::HashSet<u8> = buckets
            .iter()
            .copied()
            .filter(|b| self.owns_bucket(usize::from(*b)))
            .collect();
        if wanted.is_empty() {
            return;
        }
        theirs.retain(|d, _| wanted.contains(&d.as_bytes()[0]));
        let mut differ: Vec<DocumentId> = self
            .index
            .hashes
            .iter()
            .filter(|(d, _)| wanted.contains(&d.as_bytes()[0]))
            .filter(|(d, h)| theirs.get(d) != Some(h))
            .map(|(d, _)| *d)
            .collect();
        differ.sort();
        let missing_here = theirs
            .keys()
            .filter(|d| !self.index.hashes.contains_key(d))
            .count();
        if let Some(link) = self.conns.get_mut(&conn).and_then(|c| c.region.as_mut()) {
            link.digest_diffs = (differ.len() + missing_here) as u64;
            link.digest_at = Some(now);
        }
        for doc in differ {
            self.push_to_link(now, conn, doc);
        }
    }

    /// Starts syncing `doc` with a region link, loading it if needed.
    fn push_to_link(&mut self, now: u64, conn: ConnId, doc: DocumentId) {
        if self.refuse_deleted(conn, doc) {
            return; // The link learns the tombstone instead.
        }
        self.subscribe(conn, doc);
        if self.docs.contains_key(&doc) {
            self.sync_doc(now, doc);
        } else {
            self.load(now, doc);
        }
    }

    /// True when the last digest of region link `conn` proves it holds our committed heads of
    /// `doc` (their bucket matched ours, and ours has not changed since).
    pub(super) fn link_confirms(&self, conn: ConnId, doc: &DocumentId) -> bool {
        let b = bucket_of(doc);
        self.conns
            .get(&conn)
            .and_then(|c| c.region.as_ref())
            .and_then(|l| l.matched.get(&b))
            .is_some_and(|sum| *sum == self.index.buckets[b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_buckets_track_sets_and_removals() {
        let mut idx = HeadsIndex::default();
        let doc = DocumentId::from_bytes([9; 16]);
        let empty = idx.digest();
        let h = [ChangeHash([1; 32])];
        assert!(idx.set(doc, &h));
        assert!(!idx.set(doc, &h), "same heads: no change");
        assert_ne!(idx.digest(), empty);
        assert_eq!(idx.entries(&[9]).len(), ENTRY_BYTES);
        assert!(idx.entries(&[8]).is_empty());
        assert!(idx.set(doc, &[]));
        assert_eq!(idx.digest(), empty, "removal restores the bucket sum");
        assert_eq!(
            parse_heads(&heads_bytes(&[ChangeHash([3; 32])])),
            Some(vec![ChangeHash([3; 32])])
        );
        assert_eq!(parse_heads(&[1, 2, 3]), None);
    }

    #[test]
    fn heads_hash_ignores_order() {
        let (a, b) = (ChangeHash([1; 32]), ChangeHash([2; 32]));
        assert_eq!(heads_hash(&[a, b]), heads_hash(&[b, a]));
        assert_ne!(heads_hash(&[a]), heads_hash(&[b]));
    }
}
