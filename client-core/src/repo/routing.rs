//! Attaching transports and routing their frames to the shard that holds each document.
//!
//! Until its handshake completes, every frame of a connection goes to the primary shard (shard
//! 0), which runs the handshake. Once the primary established the connection, its effects (the
//! `peer` reply first) are dispatched and every other shard adopts the connection; from then on
//! each frame is decoded once and handed to the shard of its document, or to every shard for
//! the few messages about no single document.

use tokio::sync::{mpsc, watch};

use super::driver::ConnSlot;
use super::{Attachment, Repo};
use crate::id::ConnId;
use crate::wire::{self, Message};

/// Where a decoded message goes.
enum Route {
    /// The shard of this document.
    Doc(crate::id::DocumentId),
    /// The primary shard (handshake, errors, leave).
    Primary,
    /// Every shard (subscriptions, anti-entropy digests).
    All,
}

fn route(msg: &Message) -> Route {
    if let Some(doc) = msg.document_id() {
        return Route::Doc(doc);
    }
    match msg {
        Message::RemoteSubscriptionChange { .. }
        | Message::Digest { .. }
        | Message::DigestEntries { .. } => Route::All,
        _ => Route::Primary,
    }
}

impl Repo {
    /// Attaches a transport connection of any kind: the caller feeds frames with
    /// [`Repo::deliver`], sends what arrives on [`Attachment::outgoing`], closes when
    /// [`Attachment::close`] says so, and calls [`Repo::detach`] when the transport ends.
    pub fn attach(&self, inbound: bool) -> Attachment {
        self.attach_with_grant(inbound, None)
    }

    /// Like [`Repo::attach`] for an inbound peer whose credentials the transport verified; the
    /// core enforces the grant on every message (see [`crate::core::GrantPolicy`]).
    pub fn attach_with_grant(
        &self,
        inbound: bool,
        grant: Option<crate::core::Grant>,
    ) -> Attachment {
        let conn = self.shared.new_conn();
        let (frames, outgoing) = mpsc::channel(self.shared.outgoing_queue.max(1));
        let (close_tx, close) = watch::channel(None);
        let activity = super::links::Activity::new(self.shared.start);
        if let Ok(mut conns) = self.shared.conns.lock() {
            conns.insert(
                conn,
                ConnSlot {
                    frames,
                    close: close_tx,
                    established: false,
                    activity: activity.clone(),
                },
            );
        }
        {
            let mut core = self.shared.lock_primary();
            let now = self.shared.now();
            if inbound {
                core.handle_accept_with_grant(now, conn, grant);
            } else {
                core.handle_connect(now, conn);
            }
        }
        self.shared.wake(0);
        Attachment {
            conn,
            outgoing,
            close,
            activity,
        }
    }

    fn is_established(&self, conn: ConnId) -> bool {
        self.shared
            .conns
            .lock()
            .is_ok_and(|c| c.get(&conn).is_some_and(|s| s.established))
    }

    /// A frame arrived on an attached connection.
    pub fn deliver(&self, conn: ConnId, bytes: &[u8]) {
        if tracing::enabled!(tracing::Level::TRACE) {
            super::trace_frame("in", conn, bytes);
        }
        let now = self.shared.now();
        if self.shared.shard_count() == 1 {
            self.shared.lock_primary().handle_message(now, conn, bytes);
            self.shared.wake(0);
            return;
        }
        if !self.is_established(conn) {
            self.shared.lock_primary().handle_message(now, conn, bytes);
            self.after_handshake(conn);
            self.shared.wake(0);
            return;
        }
        let msg = match wire::decode(bytes, self.shared.max_message_bytes) {
            Ok(m) => m,
            Err(_) => {
                // The primary decodes it again and reports the error to the peer.
                self.shared.lock_primary().handle_message(now, conn, bytes);
                self.shared.wake(0);
                return;
            }
        };
        let len = bytes.len();
        match route(&msg) {
            Route::Doc(doc) => {
                let shard = self.shared.shard_of(&doc);
                self.shared.run_on(shard, move |core, now| {
                    core.handle_decoded(now, conn, msg, len);
                });
            }
            Route::Primary => {
                self.shared.run_on(0, move |core, now| {
                    core.handle_decoded(now, conn, msg, len);
                });
            }
            Route::All => {
                for i in 0..self.shared.shard_count() {
                    // Counted once, on the primary.
                    let (msg, len) = (msg.clone(), if i == 0 { len } else { 0 });
                    self.shared.run_on(i, move |core, now| {
                        core.handle_decoded(now, conn, msg, len);
                    });
                }
            }
        }
    }

    /// After the primary processed a handshake frame: once it established the connection, sends
    /// what it produced (the `peer` reply comes first on the wire) and lets every other shard
    /// adopt the connection.
    fn after_handshake(&self, conn: ConnId) {
        let Some(info) = self.shared.lock_primary().peer(conn).cloned() else {
            return;
        };
        self.shared.flush_primary();
        for i in 1..self.shared.shard_count() {
            let info = info.clone();
            self.shared.run_on(i, move |core, now| {
                core.adopt_established(now, conn, info);
            });
        }
        if let Ok(mut conns) = self.shared.conns.lock()
            && let Some(slot) = conns.get_mut(&conn)
        {
            slot.established = true;
        }
    }

    /// The transport of an attached connection ended.
    pub fn detach(&self, conn: ConnId) {
        if let Ok(mut conns) = self.shared.conns.lock() {
            conns.remove(&conn);
        }
        self.shared.disconnect_everywhere(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{DocumentId, PeerId};

    #[test]
    fn messages_about_one_document_go_to_its_shard() {
        let doc = DocumentId::from_bytes([7; 16]);
        let sync = Message::Sync {
            sender_id: PeerId::from("a"),
            target_id: PeerId::from("b"),
            document_id: doc,
            data: vec![1],
        };
        assert!(matches!(route(&sync), Route::Doc(d) if d == doc));
        let digest = Message::Digest {
            sender_id: PeerId::from("a"),
            target_id: PeerId::from("b"),
            buckets: vec![0; 8],
            covers: Some(vec![3]),
        };
        assert!(matches!(route(&digest), Route::All));
        let leave = Message::Leave {
            sender_id: PeerId::from("a"),
        };
        assert!(matches!(route(&leave), Route::Primary));
    }
}
