//! The sync pass: one Automerge sync message per subscribed peer of a document, generated once
//! everything we hold of it is committed.
//!
//! Peers in the same sync state get the same message: Automerge's `generate_sync_message` is a
//! function of the document and the peer's [`sync::State`] (our heads, what they need, a Bloom
//! filter of what we have since the shared heads, and the changes to send), with nothing about
//! the peer itself. Under a typing load the readers of a document all acknowledged the same
//! heads, so after each change every reader but the first is answered from the pass's
//! [`Shared`] memo: the state after the first generation is copied and its message reused,
//! instead of computing the change set, the filter and the message again per reader.

use std::collections::HashSet;

use automerge::sync;

use super::Core;
use super::document::{DocState, peer_doc};
use crate::id::{ConnId, DocumentId, PeerId, StorageId};
use crate::wire::Message;

/// Messages generated during one pass, by the state they were generated from.
#[derive(Default)]
struct Shared {
    /// (state before, state after, encoded message), one entry per distinct state seen.
    seen: Vec<(sync::State, sync::State, Option<Vec<u8>>)>,
}

impl Shared {
    /// At most this many distinct states are remembered per pass (peers far apart in their
    /// sync are rare; comparing against many states would cost more than it saves).
    const MAX: usize = 4;

    /// The message for a peer in state `st` if a peer in the same state was answered: `st` is
    /// advanced as generating would have advanced it.
    fn reuse(&self, st: &mut sync::State) -> Option<Option<Vec<u8>>> {
        let (_, after, data) = self.seen.iter().find(|(before, _, _)| before == st)?;
        st.clone_from(after);
        Some(data.clone())
    }

    fn remember(&mut self, before: sync::State, after: &sync::State, data: Option<&Vec<u8>>) {
        if self.seen.len() < Self::MAX {
            self.seen.push((before, after.clone(), data.cloned()));
        }
    }
}

impl Core {
    /// Generates and sends sync messages for `doc` to every subscribed peer, if everything we
    /// hold of it is committed (panics contained: see `guard.rs`).
    pub(super) fn sync_doc(&mut self, now: u64, doc: DocumentId) {
        self.sync_doc_to(now, doc, None);
    }

    /// [`Self::sync_doc`] for the peers in `only` (all subscribed peers when `None`).
    pub(super) fn sync_doc_to(
        &mut self,
        now: u64,
        doc: DocumentId,
        only: Option<&HashSet<ConnId>>,
    ) {
        let _ = self.guarded(now, doc, |c| c.sync_doc_inner(now, doc, only));
    }

    fn sync_doc_inner(&mut self, now: u64, doc: DocumentId, only: Option<&HashSet<ConnId>>) {
        let Some(entry) = self.docs.get_mut(&doc) else {
            return;
        };
        if entry.state != DocState::Ready || !entry.all_committed() || entry.commit_failed {
            return;
        }
        let has_content = entry.has_content();
        let wanted = entry.is_wanted();
        let targets: Vec<(ConnId, PeerId, Option<StorageId>, bool)> = self
            .subscribers
            .of(&doc)
            .filter(|id| only.is_none_or(|o| o.contains(id)))
            .filter_map(|id| {
                let c = self.conns.get(&id)?;
                let client = c.inbound && c.region.is_none(); // availability.rs
                c.peer
                    .as_ref()
                    .map(|p| (id, p.peer_id.clone(), p.sync_state_key(), client))
            })
            .collect();
        let share = targets.len() > 1;
        let mut shared = Shared::default();
        for (conn, target_id, storage, client) in targets {
            let pd = peer_doc(&mut entry.peers, &entry.stored_sync, conn, storage.as_ref());
            if pd.awaiting {
                if !has_content {
                    continue;
                }
                pd.awaiting = false;
                pd.told_unavailable = false;
                pd.sync = sync::State::new();
            }
            // A peer that offered us the document gets answers even while we hold nothing.
            let they_have = pd.sync.their_heads.as_ref().is_some_and(|h| !h.is_empty());
            if !has_content && !they_have {
                if pd.they_unavailable || !wanted {
                    continue;
                }
                pd.we_requested = true;
            }
            if std::mem::take(&mut pd.owe_ack) {
                // Forces a message carrying our (committed) heads.
                pd.sync.last_sent_heads.clear();
            }
            let data = if let Some(data) = shared.reuse(&mut pd.sync) {
                data
            } else {
                let before = share.then(|| pd.sync.clone());
                let data = match entry.doc.generate_sync_message(&mut pd.sync) {
                    Ok(m) => m.map(sync::Message::encode),
                    Err(e) => {
                        entry.state =
                            DocState::Failed(format!("pending changes do not apply: {e}"));
                        break;
                    }
                };
                if let Some(before) = before {
                    shared.remember(before, &pd.sync, data.as_ref());
                }
                data
            };
            if let Some(data) = data {
                // Clients are asked with a `sync` (see availability.rs).
                let msg = if !has_content && !they_have && !client {
                    Message::Request {
                        sender_id: self.config.peer_id.clone(),
                        target_id,
                        document_id: doc,
                        data,
                    }
                } else {
                    Message::Sync {
                        sender_id: self.config.peer_id.clone(),
                        target_id,
                        document_id: doc,
                        data,
                    }
                };
                self.out.send(conn, &msg);
            }
        }
        self.gossip_heads(now, doc);
    }
}

#[cfg(test)]
mod tests {
    use automerge::sync::SyncDoc;
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ROOT};

    use super::*;

    fn typed(doc: &mut Automerge, key: &str) {
        let mut tx = doc.transaction();
        tx.put(ROOT, key, 1).unwrap();
        tx.commit();
    }

    /// A reader that synced `server` and acknowledged everything it was sent.
    fn in_sync_reader(server: &mut Automerge) -> (Automerge, sync::State) {
        let (mut reader, mut ours, mut theirs) =
            (Automerge::new(), sync::State::new(), sync::State::new());
        for _ in 0..10 {
            let a = server.generate_sync_message(&mut ours);
            let b = reader.generate_sync_message(&mut theirs);
            if a.is_none() && b.is_none() {
                break;
            }
            if let Some(m) = a {
                reader.receive_sync_message(&mut theirs, m).unwrap();
            }
            if let Some(m) = b {
                server.receive_sync_message(&mut ours, m).unwrap();
            }
        }
        (reader, ours)
    }

    #[test]
    fn a_reused_message_is_the_message_generation_gives() {
        let mut server = Automerge::new();
        typed(&mut server, "a");
        let (_r1, s1) = in_sync_reader(&mut server);
        let (_r2, s2) = in_sync_reader(&mut server);
        assert_eq!(s1, s2, "two readers that acknowledged the same heads");
        typed(&mut server, "b");

        let mut first = s1.clone();
        let before = first.clone();
        let data = server
            .generate_sync_message(&mut first)
            .map(sync::Message::encode);
        assert!(data.is_some(), "the new change is to be sent");
        let mut shared = Shared::default();
        shared.remember(before, &first, data.as_ref());

        let mut reused = s2.clone();
        let got = shared.reuse(&mut reused).expect("same state: reused");
        let mut generated = s2;
        let want = server
            .generate_sync_message(&mut generated)
            .map(sync::Message::encode);
        assert_eq!(got, want, "same bytes");
        assert_eq!(reused, generated, "same state afterwards");
    }

    #[test]
    fn a_peer_in_another_state_is_not_answered_from_the_memo() {
        let mut server = Automerge::new();
        typed(&mut server, "a");
        let (_r1, s1) = in_sync_reader(&mut server);
        typed(&mut server, "b");
        let (_r2, s2) = in_sync_reader(&mut server);
        assert_ne!(s1, s2);
        let mut first = s1;
        let before = first.clone();
        let data = server
            .generate_sync_message(&mut first)
            .map(sync::Message::encode);
        let mut shared = Shared::default();
        shared.remember(before, &first, data.as_ref());
        let mut other = s2.clone();
        assert!(shared.reuse(&mut other).is_none());
        assert_eq!(other, s2, "left untouched");
    }
}
