//! What region links look like from here: per-connection lag and traffic, and per peer region
//! the traffic of links that ended (so that counters survive reconnects).
//!
//! Definitions (also in the README's Regions section):
//!
//! - `docs_behind`: documents with at least one commit of ours the link has not acknowledged.
//! - `oldest_unacked_ms`: age of the oldest commit of ours (a change committed here, by a client
//!   or by another region) whose heads the link has not acknowledged, i.e. whose heads are not
//!   covered by the heads the link last sent us for that document. Each commit is tracked on its
//!   own, so a document written continuously reports the age of its oldest unacknowledged commit
//!   (about one round trip on a healthy link), not the time since the link last held the very
//!   latest heads. `None` when the link has acknowledged everything.
//! - `digest_differences`: documents whose digest entries differed at the last anti-entropy
//!   exchange, measured `digest_age_ms` ago.

use std::collections::HashMap;

use automerge::ChangeHash;

use super::Core;
use crate::id::{ConnId, DocumentId, PeerId, StorageId};

/// What a region link looks like from here (see [`Core::region_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionLinkStatus {
    /// The connection.
    pub conn: ConnId,
    /// The remote server's peer id.
    pub peer_id: PeerId,
    /// Its region name.
    pub region: String,
    /// Its storage id (durability is counted per storage id).
    pub storage_id: Option<StorageId>,
    /// Documents with a commit of ours it has not acknowledged.
    pub docs_behind: u64,
    /// Milliseconds since the oldest commit of ours it has not acknowledged (see the module
    /// docs); `None` when it has acknowledged everything.
    pub oldest_unacked_ms: Option<u64>,
    /// Documents that differed at the last anti-entropy exchange.
    pub digest_differences: u64,
    /// Milliseconds since `digest_differences` was measured (`None`: no exchange yet).
    pub digest_age_ms: Option<u64>,
    /// Milliseconds since the link came up.
    pub up_ms: u64,
    /// Frames received on the link.
    pub frames_in: u64,
    /// Frames sent on the link.
    pub frames_out: u64,
    /// Bytes received on the link.
    pub bytes_in: u64,
    /// Bytes sent on the link.
    pub bytes_out: u64,
}

/// Traffic of the region links to one peer region that have ended (see
/// [`Core::region_traffic`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegionTraffic {
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Links that ended.
    pub links_ended: u64,
    /// When the last of them ended (core clock).
    pub last_ended: Option<u64>,
}

impl RegionTraffic {
    /// Adds a live link's figures.
    pub fn add_link(&mut self, l: &RegionLinkStatus) {
        self.frames_in += l.frames_in;
        self.frames_out += l.frames_out;
        self.bytes_in += l.bytes_in;
        self.bytes_out += l.bytes_out;
    }

    /// Sums two records of one region (e.g. of two shards).
    pub fn merge(&mut self, o: &Self) {
        self.frames_in += o.frames_in;
        self.frames_out += o.frames_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.links_ended = self.links_ended.max(o.links_ended);
        self.last_ended = self.last_ended.max(o.last_ended);
    }
}

impl Core {
    /// Clears acknowledged commits and reports every region link.
    pub fn region_status(&mut self, now: u64) -> Vec<RegionLinkStatus> {
        let mut out = Vec::new();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in ids {
            let Some(pending) = self
                .conns
                .get(&conn)
                .and_then(|c| c.region.as_ref())
                .map(|l| l.unacked.clone())
            else {
                continue;
            };
            let kept: HashMap<DocumentId, _> = pending
                .into_iter()
                .filter_map(|(doc, mut commits)| {
                    // Later commits cover earlier ones: the acknowledged ones are a prefix.
                    let acked = commits.partition_point(|(_, h)| self.link_holds(conn, &doc, h));
                    commits.drain(..acked);
                    (!commits.is_empty()).then_some((doc, commits))
                })
                .collect();
            let (frames_out, bytes_out) = self.out.per_conn.get(&conn).copied().unwrap_or_default();
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            let (Some(link), Some(peer)) = (c.region.as_mut(), c.peer.as_ref()) else {
                continue;
            };
            link.unacked = kept;
            out.push(RegionLinkStatus {
                conn,
                peer_id: peer.peer_id.clone(),
                region: link.name.clone(),
                storage_id: peer.metadata.storage_id.clone(),
                docs_behind: link.unacked.len() as u64,
                oldest_unacked_ms: link
                    .unacked
                    .values()
                    .filter_map(|q| q.front().map(|(t, _)| *t))
                    .min()
                    .map(|t| now.saturating_sub(t)),
                digest_differences: link.digest_diffs,
                digest_age_ms: link.digest_at.map(|t| now.saturating_sub(t)),
                up_ms: now.saturating_sub(link.up_since),
                frames_in: link.frames_in,
                frames_out,
                bytes_in: link.bytes_in,
                bytes_out,
            });
        }
        out
    }

    /// Per peer region, the traffic of its region links that have ended.
    pub fn region_traffic(&self) -> &HashMap<String, RegionTraffic> {
        &self.region_traffic
    }

    /// A region link ended: keep its traffic (called before its counters are dropped).
    pub(super) fn region_link_closed(
        &mut self,
        now: u64,
        conn: ConnId,
        name: &str,
        frames_in: u64,
        bytes_in: u64,
    ) {
        let (frames_out, bytes_out) = self.out.per_conn.get(&conn).copied().unwrap_or_default();
        let t = self.region_traffic.entry(name.to_owned()).or_default();
        t.frames_in += frames_in;
        t.bytes_in += bytes_in;
        t.frames_out += frames_out;
        t.bytes_out += bytes_out;
        t.links_ended += 1;
        t.last_ended = Some(now);
    }

    /// True when the heads the link last sent for `doc` cover `heads` (or the document is no
    /// longer resident, in which case the digest takes over).
    fn link_holds(&self, conn: ConnId, doc: &DocumentId, heads: &[ChangeHash]) -> bool {
        let Some(entry) = self.docs.get(doc) else {
            return true;
        };
        entry
            .peers
            .get(&conn)
            .and_then(|pd| pd.sync.their_heads.as_ref())
            .is_some_and(|theirs| entry.doc.covers(theirs, heads))
    }
}
