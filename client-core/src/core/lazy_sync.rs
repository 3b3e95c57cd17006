//! Automerge's sync protocol answered from a [`LazyDoc`] (applied document + pending changes).
//!
//! These mirror `generate_sync_message` and `receive_sync_message` of Automerge 0.12's
//! `SyncDoc` step by step, reading the change graph through [`LazyDoc`] instead of Automerge's
//! own. They handle the case a relaying server meets under sustained writes: both sides share
//! recent heads and the changes to send are pending ones. Anything else ([`NeedsDoc`]) makes the
//! caller apply the pending changes and call Automerge, so the wire behaviour is Automerge's.
//! The unit tests run both against Automerge on the same exchanges and compare the messages.

use std::collections::{HashMap, HashSet};

use automerge::ChangeHash;
use automerge::sync::{
    BloomFilter, Capability, Have, Message, MessageFlags, MessageVersion, State,
};

use super::lazy::{LazyDoc, NeedsDoc};

fn supports_v2(st: &State) -> bool {
    st.their_capabilities
        .as_ref()
        .is_some_and(|c| c.contains(&Capability::MessageV2))
}

impl LazyDoc {
    /// `generate_sync_message`, answered without applying what is pending when possible.
    pub(super) fn generate_sync_message(
        &mut self,
        st: &mut State,
    ) -> Result<Option<Message>, automerge::AutomergeError> {
        use automerge::sync::SyncDoc;
        if self.has_pending() {
            self.refresh();
            if let Ok(m) = self.deferred_generate(st) {
                return Ok(m);
            }
        }
        Ok(self.materialized()?.generate_sync_message(st))
    }

    fn deferred_generate(&self, st: &mut State) -> Result<Option<Message>, NeedsDoc> {
        if st.read_only || st.peer_read_only || st.needs_reset {
            return Err(NeedsDoc);
        }
        let our_heads = self.get_heads();
        // Automerge's `need`: their heads we do not have. We only answer when it is empty, and
        // then Automerge always sends a Bloom filter of what we have since the shared heads.
        if let Some(theirs) = &st.their_heads {
            if !theirs.iter().all(|h| self.has_change(h)) {
                return Err(NeedsDoc);
            }
        }
        let (_, shared_frontier) = self.clock_of(&st.shared_heads);
        if shared_frontier.is_empty() && !self.applied().get_heads().is_empty() {
            return Err(NeedsDoc); // a filter of the whole document: rare, let Automerge do it
        }
        let (applied, pending) = self.non_ancestors(&st.shared_heads);
        let hashes = applied
            .iter()
            .copied()
            .chain(pending.iter().map(|&i| self.pending[i].change.hash()));
        let have = Have {
            last_sync: st.shared_heads.clone(),
            bloom: BloomFilter::from_hashes(hashes.collect::<Vec<_>>().into_iter()),
        };
        if let Some(first) = st.their_have.as_ref().and_then(|h| h.first()) {
            if !first.last_sync.iter().all(|h| self.has_change(h)) {
                return Err(NeedsDoc); // Automerge answers with a reset
            }
        }
        let mut to_send: Vec<usize> = Vec::new();
        if let (Some(their_have), Some(their_need)) = (&st.their_have, &st.their_need) {
            if st.their_heads.as_deref() == Some(&[]) && supports_v2(st) {
                return Err(NeedsDoc); // Automerge sends the whole document
            }
            to_send = self
                .to_send(their_have, their_need)?
                .into_iter()
                .filter(|&i| !st.sent_hashes.contains(&self.pending[i].change.hash()))
                .collect();
            if !to_send.is_empty() && supports_v2(st) && to_send.len() > self.num_changes() / 3 {
                return Err(NeedsDoc); // Automerge sends the whole document
            }
        }
        let heads_unchanged = st.last_sent_heads == our_heads;
        let heads_equal = st.their_heads.as_ref() == Some(&our_heads);
        if heads_unchanged && st.have_responded {
            if heads_equal && to_send.is_empty() {
                return Ok(None);
            }
            if st.in_flight {
                return Ok(None);
            }
        }
        st.have_responded = true;
        st.last_sent_heads.clone_from(&our_heads);
        let raw: Vec<&[u8]> = to_send
            .iter()
            .map(|&i| self.pending[i].change.raw_bytes())
            .collect();
        st.sent_hashes
            .extend(to_send.iter().map(|&i| self.pending[i].change.hash()));
        let (changes, version) = if supports_v2(st) {
            let joined: Vec<u8> = raw.concat();
            let chunks = if joined.is_empty() {
                Vec::new()
            } else {
                vec![joined]
            };
            (chunks, MessageVersion::V2)
        } else {
            (
                raw.into_iter().map(<[u8]>::to_vec).collect(),
                MessageVersion::V1,
            )
        };
        let mut flags = MessageFlags::new();
        flags.set(MessageFlags::SUPPORTS_SYNC_RESET);
        st.in_flight = true;
        Ok(Some(Message {
            heads: our_heads,
            need: Vec::new(),
            have: vec![have],
            changes: changes.into(),
            flags: Some(flags),
            version,
        }))
    }

    /// Automerge's `get_hashes_to_send`, as pending indexes; [`NeedsDoc`] when an applied change
    /// would have to be sent.
    fn to_send(&self, have: &[Have], need: &[ChangeHash]) -> Result<Vec<usize>, NeedsDoc> {
        let mut needed = Vec::new();
        for h in need {
            if let Some(i) = self.in_pending(h) {
                needed.push(i);
            } else if self.has_change(h) {
                return Err(NeedsDoc);
            }
        }
        if have.is_empty() {
            return Ok(needed);
        }
        let mut last_sync: Vec<ChangeHash> = have
            .iter()
            .flat_map(|h| h.last_sync.iter().copied())
            .collect();
        last_sync.sort();
        last_sync.dedup();
        let (applied, pending) = self.non_ancestors(&last_sync);
        let missing = |h: &ChangeHash| have.iter().all(|f| !f.bloom.contains_hash(h));
        if applied.iter().any(missing) {
            return Err(NeedsDoc);
        }
        let in_range: HashSet<usize> = pending.iter().copied().collect();
        let mut dependents: HashMap<ChangeHash, Vec<usize>> = HashMap::new();
        let mut chosen: HashSet<usize> = HashSet::new();
        for &i in &pending {
            let c = &self.pending[i].change;
            for d in c.deps() {
                dependents.entry(*d).or_default().push(i);
            }
            if missing(&c.hash()) {
                chosen.insert(i);
            }
        }
        let mut stack: Vec<usize> = chosen.iter().copied().collect();
        while let Some(i) = stack.pop() {
            let hash = self.pending[i].change.hash();
            for &j in dependents.get(&hash).into_iter().flatten() {
                if in_range.contains(&j) && chosen.insert(j) {
                    stack.push(j);
                }
            }
        }
        let mut out: Vec<usize> = needed.into_iter().filter(|i| !chosen.contains(i)).collect();
        out.extend(pending.iter().filter(|i| chosen.contains(i)));
        Ok(out)
    }

    /// `receive_sync_message` for a message whose changes were already deferred (or that had
    /// none): the state updates only. `carried` says whether it had changes.
    pub(super) fn receive_state(&self, st: &mut State, msg: Message, carried: bool) {
        st.in_flight = false;
        let before_heads = self.get_heads();
        let Message {
            heads,
            need,
            have,
            flags,
            ..
        } = msg;
        if let Some(flags) = flags {
            let mut caps = vec![Capability::MessageV2];
            if flags.contains(MessageFlags::SUPPORTS_SYNC_RESET) {
                caps.push(Capability::SyncReset);
            }
            st.their_capabilities = Some(caps);
            if flags.contains(MessageFlags::SYNC_RESET) {
                st.sent_hashes.clear();
            }
            st.peer_read_only = flags.contains(MessageFlags::READ_ONLY);
        }
        self.filter_sent(&heads, st);
        if !carried && heads == before_heads {
            st.last_sent_heads.clone_from(&heads);
        }
        let known: Vec<ChangeHash> = heads
            .iter()
            .filter(|h| self.has_change(h))
            .copied()
            .collect();
        if known.len() == heads.len() {
            st.shared_heads.clone_from(&heads);
            if heads.is_empty() {
                st.last_sent_heads = Vec::new();
                st.sent_hashes = Default::default();
            }
        } else {
            let mut shared: Vec<ChangeHash> =
                st.shared_heads.iter().chain(&known).copied().collect();
            shared.sort();
            shared.dedup();
            st.shared_heads = shared;
        }
        st.their_have = Some(have);
        st.their_heads = Some(heads);
        st.their_need = Some(need);
    }

    /// Drops from `sent_hashes` what `heads` (the known ones) already include.
    fn filter_sent(&self, heads: &[ChangeHash], st: &mut State) {
        if st.sent_hashes.is_empty() {
            return;
        }
        let known: Vec<ChangeHash> = heads
            .iter()
            .filter(|h| self.has_change(h))
            .copied()
            .collect();
        if known.is_empty() {
            return;
        }
        let (clock, frontier) = self.clock_of(&known);
        let any_applied = st.sent_hashes.iter().any(|h| self.in_pending(h).is_none());
        let newer_applied: HashSet<ChangeHash> = if any_applied && !frontier.is_empty() {
            self.applied()
                .get_changes_meta(&frontier)
                .into_iter()
                .map(|m| m.hash)
                .collect()
        } else {
            HashSet::new()
        };
        st.sent_hashes.retain(|h| match self.in_pending(h) {
            Some(i) => !self.pending_covered(&clock, i),
            // Not in our graph at all: Automerge's traversal never reaches it either.
            None if !self.is_applied(h) => true,
            None => frontier.is_empty() || newer_applied.contains(h),
        });
    }
}
