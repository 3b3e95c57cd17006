//! Deferred application of incoming changes (servers).
//!
//! With Automerge 0.12 one apply call walks every op of the objects it touches: 20 ms for ONE
//! change on a 100k-op text, 200 ms on a 1M-op one (BENCHMARKS.md). A server mostly stores and
//! relays changes; it does not need the materialised document to do that. A [`LazyDoc`] keeps
//! the Automerge document plus a *pending* graph of changes that arrived, were validated and
//! committed, but are not applied yet. Sync is answered from the union of both (`lazy_sync.rs`),
//! so ingest costs hashing, a few map lookups and one storage append, whatever the document's
//! size. Pending changes are applied in ONE Automerge call ([`LazyDoc::flush`]) when the document
//! goes idle, when too many are pending, before a local change, before compaction, and whenever
//! a sync exchange needs something only Automerge can answer (a peer that is far behind, orphans,
//! read-only states, whole-document messages): those fall back to Automerge's own sync on the
//! flushed document, so the deferred path only ever handles the common case.
//!
//! Ancestry inside the pending graph uses per-change vector clocks restricted to pending changes
//! (a path between two pending changes never leaves the pending graph, because the applied
//! document never depends on a pending change), and the set of applied changes each pending one
//! depends on (its *frontier*); ancestry in the applied part is Automerge's
//! (`get_changes_meta`), computed from that frontier.
//!
//! Validation before deferring is what applying would check and can be checked without applying:
//! the change parsed (Automerge verifies every op decodes), its hash, that every dependency is
//! known (no orphans, and Automerge holds none these could complete), that its actor's sequence number is new, and no author field. A change
//! failing any of these is not deferred: the batch is applied by Automerge as before, which
//! reports the error to its sender.

use std::collections::{HashMap, HashSet};

use automerge::{ActorId, Automerge, AutomergeError, Change, ChangeHash, ReadDoc};

/// When a server defers applying incoming changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferApply {
    /// Defer only on documents of at least this many ops (smaller documents apply quickly, and
    /// applying validates a change fully).
    pub min_ops: u64,
    /// Apply once this many changes are pending.
    pub max_pending: usize,
    /// Apply once no change arrived for this long (milliseconds).
    pub idle_ms: u64,
}

impl Default for DeferApply {
    fn default() -> Self {
        Self {
            min_ops: 10_000,
            max_pending: 4_096,
            idle_ms: 1_000,
        }
    }
}

/// A pending change and what ancestry needs of it.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) change: Change,
    /// Per local actor index: the highest seq among this change's pending ancestors (and itself).
    pclock: Vec<u64>,
    /// Applied changes this one depends on, directly or through pending ones.
    frontier: Vec<ChangeHash>,
}

/// The Automerge document plus the changes committed but not applied yet.
#[derive(Debug)]
pub(super) struct LazyDoc {
    doc: Automerge,
    pub(super) pending: Vec<Node>,
    index: HashMap<ChangeHash, usize>,
    actors: Vec<ActorId>,
    actor_index: HashMap<ActorId, usize>,
    /// Per local actor index: pending indexes of that actor, in seq order.
    by_actor: Vec<Vec<usize>>,
    /// Heads of applied + pending (kept only while something is pending).
    heads: Vec<ChangeHash>,
    /// The applied document's change hashes and highest seq per actor, listed once on the
    /// first deferral (Automerge's own lookup by hash reads delta-encoded columns, which costs
    /// more the larger the document).
    applied: Option<Applied>,
    /// When the last pending change arrived.
    pub(super) last_pending_at: u64,
}

#[derive(Debug, Default)]
struct Applied {
    hashes: HashSet<ChangeHash>,
    seqs: HashMap<ActorId, u64>,
    /// The document was handed out for changes (local ones, or a batch Automerge applied):
    /// the applied heads at that moment. Changes since are added by [`LazyDoc::refresh`].
    stale_since: Option<Vec<ChangeHash>>,
}

/// The deferred path cannot answer: flush and let Automerge do it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NeedsDoc;

impl LazyDoc {
    pub(super) fn new(doc: Automerge) -> Self {
        Self {
            doc,
            pending: Vec::new(),
            index: HashMap::new(),
            actors: Vec::new(),
            actor_index: HashMap::new(),
            by_actor: Vec::new(),
            heads: Vec::new(),
            applied: None,
            last_pending_at: 0,
        }
    }

    /// The applied document; pending changes are not in it (see [`LazyDoc::flush`]).
    pub(super) fn applied(&self) -> &Automerge {
        &self.doc
    }

    /// Applies what is pending and returns the document.
    pub(super) fn materialized(&mut self) -> Result<&mut Automerge, AutomergeError> {
        self.flush()?;
        if let Some(a) = self.applied.as_mut() {
            if a.stale_since.is_none() {
                a.stale_since = Some(self.doc.get_heads());
            }
        }
        Ok(&mut self.doc)
    }

    /// Brings the applied hashes and seqs up to date after [`LazyDoc::materialized`].
    pub(super) fn refresh(&mut self) {
        let Some(a) = self.applied.as_mut() else {
            return;
        };
        let Some(since) = a.stale_since.take() else {
            return;
        };
        for m in self.doc.get_changes_meta(&since) {
            a.hashes.insert(m.hash);
            let s = a.seqs.entry(m.actor.into_owned()).or_default();
            *s = (*s).max(m.seq);
        }
    }

    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Changes committed but not applied yet.
    pub(super) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn get_heads(&self) -> Vec<ChangeHash> {
        if self.pending.is_empty() {
            self.doc.get_heads()
        } else {
            self.heads.clone()
        }
    }

    pub(super) fn in_pending(&self, hash: &ChangeHash) -> Option<usize> {
        self.index.get(hash).copied()
    }

    pub(super) fn has_change(&self, hash: &ChangeHash) -> bool {
        self.index.contains_key(hash) || self.is_applied(hash)
    }

    /// Is `hash` in the applied document?
    pub(super) fn is_applied(&self, hash: &ChangeHash) -> bool {
        match &self.applied {
            Some(a) if a.stale_since.is_none() => a.hashes.contains(hash),
            _ => self.doc.get_change_meta_by_hash(hash).is_some(),
        }
    }

    /// Ops in the applied document.
    pub(super) fn applied_ops(&self) -> u64 {
        self.doc.stats().num_ops
    }

    /// Changes in applied + pending.
    pub(super) fn num_changes(&self) -> usize {
        self.doc.stats().num_changes as usize + self.pending.len()
    }

    /// Applies every pending change with one Automerge call.
    pub(super) fn flush(&mut self) -> Result<(), AutomergeError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let nodes = std::mem::take(&mut self.pending);
        if let Some(a) = self.applied.as_mut() {
            for n in &nodes {
                let s = a.seqs.entry(n.change.actor_id().clone()).or_default();
                *s = (*s).max(n.change.seq());
                a.hashes.insert(n.change.hash());
            }
        }
        self.index.clear();
        self.by_actor.iter_mut().for_each(Vec::clear);
        self.heads.clear();
        self.doc
            .apply_changes(nodes.into_iter().map(|n| n.change).collect::<Vec<_>>())
    }

    /// Adds `changes` (in order) to the pending graph if every one passes the checks listed in
    /// the module docs; otherwise adds nothing and returns false. Changes already known are
    /// skipped, as Automerge skips them.
    pub(super) fn try_defer(&mut self, changes: &[Change], now: u64) -> bool {
        if !self.doc.get_missing_deps(&[]).is_empty() {
            // Automerge holds orphans that these changes may complete: let it apply them.
            return false;
        }
        self.ensure_applied();
        let mut batch: HashSet<ChangeHash> = HashSet::new();
        let mut batch_seqs: HashMap<&ActorId, u64> = HashMap::new();
        let mut fresh = Vec::new();
        for c in changes {
            let hash = c.hash();
            if batch.contains(&hash) || self.has_change(&hash) {
                continue;
            }
            if c.author().is_some() {
                return false;
            }
            let known = |d: &ChangeHash| batch.contains(d) || self.has_change(d);
            if !c.deps().iter().all(known) {
                return false;
            }
            let actor = c.actor_id();
            let latest = batch_seqs
                .get(actor)
                .copied()
                .unwrap_or_else(|| self.latest_seq(actor));
            if c.seq() <= latest {
                return false;
            }
            batch_seqs.insert(actor, c.seq());
            batch.insert(hash);
            fresh.push(c);
        }
        if fresh.is_empty() {
            return true;
        }
        if self.pending.is_empty() {
            self.heads = self.doc.get_heads();
        }
        self.last_pending_at = now;
        for c in fresh {
            self.push(c.clone());
        }
        true
    }

    /// Lists the applied document's hashes and highest seq per actor, once (then kept current
    /// by [`LazyDoc::refresh`]).
    fn ensure_applied(&mut self) {
        self.refresh();
        if self.applied.is_none() {
            let mut a = Applied::default();
            for m in self.doc.get_changes_meta(&[]) {
                a.hashes.insert(m.hash);
                let s = a.seqs.entry(m.actor.into_owned()).or_default();
                *s = (*s).max(m.seq);
            }
            self.applied = Some(a);
        }
    }

    /// Refuses changes Automerge 0.12 cannot take without panicking, which a sync message can
    /// carry: one that skips sequence numbers (an actor's change `seq` must follow the highest
    /// seq of that actor held here: applied, pending, or earlier in `batch`, which is updated)
    /// while all its dependencies are known (a change with unknown dependencies waits in
    /// Automerge's queue until they arrive, which fills the gap: Bloom filter false positives
    /// make honest peers send those), and a delete operation without a predecessor (it
    /// applies, then saving the document panics). `staged`: hashes of earlier messages of the
    /// same batch.
    pub(super) fn check_changes(
        &mut self,
        changes: &[Change],
        batch: &mut HashMap<ActorId, u64>,
        staged: &HashSet<ChangeHash>,
    ) -> Result<(), String> {
        self.ensure_applied();
        let in_msg: HashSet<ChangeHash> = changes.iter().map(Change::hash).collect();
        for c in changes {
            let actor = c.actor_id();
            let latest = batch
                .get(actor)
                .copied()
                .unwrap_or_else(|| self.latest_seq(actor));
            let orphan = c
                .deps()
                .iter()
                .any(|d| !in_msg.contains(d) && !staged.contains(d) && !self.has_change(d));
            if c.seq() > latest + 1 && !orphan {
                return Err(format!(
                    "change {} by actor {actor} has seq {} but the actor's previous change (seq {}) \
                     is not known",
                    c.hash(),
                    c.seq(),
                    c.seq() - 1
                ));
            }
            let s = batch.entry(actor.clone()).or_insert(latest);
            *s = (*s).max(c.seq());
            let orphan_delete = c.decode().operations.iter().any(|op| {
                matches!(op.action, automerge::legacy::OpType::Delete) && op.pred.is_empty()
            });
            if orphan_delete {
                return Err(format!(
                    "change {} deletes without naming what it deletes (no predecessor)",
                    c.hash()
                ));
            }
        }
        Ok(())
    }

    fn latest_seq(&self, actor: &ActorId) -> u64 {
        let pending = self
            .actor_index
            .get(actor)
            .and_then(|&a| self.by_actor[a].last())
            .map(|&i| self.pending[i].change.seq());
        let applied = self
            .applied
            .as_ref()
            .and_then(|a| a.seqs.get(actor).copied());
        pending.into_iter().chain(applied).max().unwrap_or(0)
    }

    fn actor(&mut self, actor: &ActorId) -> usize {
        if let Some(&i) = self.actor_index.get(actor) {
            return i;
        }
        self.actors.push(actor.clone());
        self.by_actor.push(Vec::new());
        self.actor_index
            .insert(actor.clone(), self.actors.len() - 1);
        self.actors.len() - 1
    }

    fn push(&mut self, change: Change) {
        let a = self.actor(change.actor_id());
        let mut pclock = vec![0; self.actors.len()];
        let mut frontier: Vec<ChangeHash> = Vec::new();
        for d in change.deps() {
            match self.index.get(d) {
                Some(&i) => {
                    let dep = &self.pending[i];
                    for (slot, s) in pclock.iter_mut().zip(&dep.pclock) {
                        *slot = (*slot).max(*s);
                    }
                    frontier.extend(dep.frontier.iter().copied());
                }
                None => frontier.push(*d),
            }
        }
        pclock[a] = change.seq();
        frontier.sort();
        frontier.dedup();
        let hash = change.hash();
        self.heads.retain(|h| !change.deps().contains(h));
        self.heads.push(hash);
        self.heads.sort();
        let i = self.pending.len();
        self.index.insert(hash, i);
        self.by_actor[a].push(i);
        self.pending.push(Node {
            change,
            pclock,
            frontier,
        });
    }

    /// Every change (applied hashes, pending indexes) that is NOT an ancestor of (or in) `heads`
    /// (hashes we do not know are ignored, as Automerge ignores them). Pending indexes are in
    /// arrival order, which is causal.
    pub(super) fn non_ancestors(&self, heads: &[ChangeHash]) -> (Vec<ChangeHash>, Vec<usize>) {
        let (clock, frontier) = self.clock_of(heads);
        let mut pending: Vec<usize> = Vec::new();
        for (a, idxs) in self.by_actor.iter().enumerate() {
            // An actor's pending changes are in increasing seq order (`try_defer` checks it).
            let seen = clock.get(a).copied().unwrap_or(0);
            let first = idxs.partition_point(|&i| self.pending[i].change.seq() <= seen);
            pending.extend(&idxs[first..]);
        }
        pending.sort_unstable();
        // Applied ancestors of `heads` are those of its frontier (none when it is empty); when
        // the frontier is the applied document's heads, every applied change is an ancestor.
        let applied = if !frontier.is_empty() && frontier == self.doc.get_heads() {
            Vec::new()
        } else {
            self.doc
                .get_changes_meta(&frontier)
                .into_iter()
                .map(|m| m.hash)
                .collect()
        };
        (applied, pending)
    }

    /// The pending clock and the applied frontier of `heads`.
    pub(super) fn clock_of(&self, heads: &[ChangeHash]) -> (Vec<u64>, Vec<ChangeHash>) {
        let mut clock = vec![0; self.actors.len()];
        let mut frontier = Vec::new();
        for h in heads {
            match self.index.get(h) {
                Some(&i) => {
                    let n = &self.pending[i];
                    for (slot, s) in clock.iter_mut().zip(&n.pclock) {
                        *slot = (*slot).max(*s);
                    }
                    frontier.extend(n.frontier.iter().copied());
                }
                None => {
                    if self.is_applied(h) {
                        frontier.push(*h);
                    }
                }
            }
        }
        frontier.sort();
        frontier.dedup();
        (clock, frontier)
    }

    /// Is the pending change `i` an ancestor of (or in) the heads whose clock is `clock`?
    pub(super) fn pending_covered(&self, clock: &[u64], i: usize) -> bool {
        let n = &self.pending[i];
        let a = self.actor_index[n.change.actor_id()];
        clock.get(a).copied().unwrap_or(0) >= n.change.seq()
    }

    /// Raw bytes of every change not an ancestor of `saved` (what a commit appends).
    pub(super) fn save_after(&self, saved: &[ChangeHash]) -> Vec<u8> {
        if self.pending.is_empty() {
            return self.doc.save_after(saved);
        }
        let (_, frontier) = self.clock_of(saved);
        let mut bytes = self.doc.save_after(&frontier);
        let (_, pending) = self.non_ancestors(saved);
        for i in pending {
            bytes.extend_from_slice(self.pending[i].change.raw_bytes());
        }
        bytes
    }

    /// True when every hash of `target` is an ancestor of (or in) `remote`.
    pub(super) fn covers(&self, remote: &[ChangeHash], target: &[ChangeHash]) -> bool {
        if target.iter().all(|t| remote.contains(t)) {
            return true;
        }
        if !target.iter().all(|t| self.has_change(t)) || !remote.iter().any(|h| self.has_change(h))
        {
            return false;
        }
        let (applied, pending) = self.non_ancestors(remote);
        let newer: HashSet<ChangeHash> = applied
            .into_iter()
            .chain(pending.into_iter().map(|i| self.pending[i].change.hash()))
            .collect();
        target.iter().all(|t| !newer.contains(t))
    }

    /// Missing dependencies of queued orphans (nothing pending is ever an orphan).
    pub(super) fn get_missing_deps(&self) -> Vec<ChangeHash> {
        self.doc.get_missing_deps(&[])
    }
}

#[cfg(test)]
#[path = "lazy_tests.rs"]
mod tests;
