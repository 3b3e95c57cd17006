//! Which connections sync each document: the reverse of every `Conn::subscribed`.
//!
//! Per-document work (a sync pass, heads gossip, an ephemeral broadcast) runs on every change of
//! a document; finding its peers by testing every connection's subscriptions made that work grow
//! with the number of connections on the server (a profile at 400 connections put the scans at
//! 14 % of the server's instructions). The index answers with the document's own subscribers.
//!
//! `Conn::subscribed` and this index change together, only through [`Core::subscribe`],
//! [`Core::unsubscribe`] and [`Core::forget_subscriptions`]; debug builds check that they agree
//! on every housekeeping tick.

use std::collections::{BTreeSet, HashMap};

use super::{ConnId, Core};
use crate::id::DocumentId;

/// Subscribers per document (documents with none are not kept).
#[derive(Debug, Default)]
pub(super) struct Subscribers(HashMap<DocumentId, BTreeSet<ConnId>>);

impl Subscribers {
    /// The connections subscribed to `doc`, in connection order.
    pub(super) fn of(&self, doc: &DocumentId) -> impl Iterator<Item = ConnId> + '_ {
        self.0.get(doc).into_iter().flatten().copied()
    }

    fn insert(&mut self, doc: DocumentId, conn: ConnId) {
        self.0.entry(doc).or_default().insert(conn);
    }

    fn remove(&mut self, doc: &DocumentId, conn: ConnId) {
        if let Some(set) = self.0.get_mut(doc) {
            set.remove(&conn);
            if set.is_empty() {
                self.0.remove(doc);
            }
        }
    }

    /// Documents with at least one subscriber.
    #[cfg(test)]
    pub(super) fn documents(&self) -> usize {
        self.0.len()
    }
}

impl Core {
    /// Subscribes `conn` to `doc`; true when it was not subscribed before.
    pub(super) fn subscribe(&mut self, conn: ConnId, doc: DocumentId) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let added = c.subscribed.insert(doc);
        if added {
            self.subscribers.insert(doc, conn);
        }
        added
    }

    /// Unsubscribes `conn` from `doc`; true when it was subscribed.
    pub(super) fn unsubscribe(&mut self, conn: ConnId, doc: DocumentId) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let removed = c.subscribed.remove(&doc);
        if removed {
            self.subscribers.remove(&doc, conn);
        }
        removed
    }

    /// Drops every subscription of a connection that is gone.
    pub(super) fn forget_subscriptions(&mut self, conn: ConnId, docs: &BTreeSet<DocumentId>) {
        for doc in docs {
            self.subscribers.remove(doc, conn);
        }
    }

    /// The peers subscribed to `doc`.
    #[cfg(test)]
    pub(super) fn subscribers_of(&self, doc: &DocumentId) -> Vec<ConnId> {
        self.subscribers.of(doc).collect()
    }

    /// True when the index holds exactly the connections' subscriptions.
    pub(super) fn subscribers_consistent(&self) -> bool {
        let mut expected: HashMap<DocumentId, BTreeSet<ConnId>> = HashMap::new();
        for (id, c) in &self.conns {
            for doc in &c.subscribed {
                expected.entry(*doc).or_default().insert(*id);
            }
        }
        expected == self.subscribers.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::CoreConfig;
    use crate::id::PeerId;

    fn core() -> Core {
        Core::new(CoreConfig::new(PeerId::from("server"), Some("s".into()), 1))
    }

    #[test]
    fn subscribe_unsubscribe_and_disconnect_keep_the_index() {
        let mut c = core();
        let (a, b) = (ConnId(1), ConnId(2));
        c.handle_accept(0, a);
        c.handle_accept(0, b);
        let (d1, d2) = (
            DocumentId::from_bytes([1; 16]),
            DocumentId::from_bytes([2; 16]),
        );
        assert!(c.subscribe(a, d1));
        assert!(!c.subscribe(a, d1), "a second subscribe is not new");
        assert!(c.subscribe(b, d1));
        assert!(c.subscribe(b, d2));
        assert_eq!(c.subscribers_of(&d1), vec![a, b]);
        assert_eq!(c.subscribers_of(&d2), vec![b]);
        assert!(c.subscribers_consistent());

        assert!(c.unsubscribe(a, d1));
        assert!(!c.unsubscribe(a, d1));
        assert_eq!(c.subscribers_of(&d1), vec![b]);
        c.handle_disconnect(0, b);
        assert!(c.subscribers_of(&d1).is_empty());
        assert!(c.subscribers_of(&d2).is_empty());
        assert_eq!(c.subscribers.documents(), 0, "empty sets are dropped");
        assert!(c.subscribers_consistent());
    }

    #[test]
    fn an_unknown_connection_subscribes_to_nothing() {
        let mut c = core();
        let d = DocumentId::from_bytes([3; 16]);
        assert!(!c.subscribe(ConnId(9), d));
        assert!(c.subscribers_of(&d).is_empty());
        assert!(c.subscribers_consistent());
    }
}
