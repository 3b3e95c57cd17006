//! A repo as one node of a cluster: nodes share one storage (e.g. PostgreSQL) and tell each
//! other what they committed, and relay ephemeral messages, over a [`ClusterBus`].
//!
//! - Notices of other nodes' commits go to the shard of their document
//!   ([`Core::handle_external_commit`](crate::core::Core::handle_external_commit)), which reads
//!   the named chunks from storage and syncs its peers; a [`BusEvent::Gap`] makes every shard
//!   re-read its resident documents.
//! - When the bus does not hear of commits from the storage itself
//!   ([`ClusterBus::notifies_commits`] is false), the storage task publishes each committed
//!   chunk once its transaction committed.
//! - Ephemeral messages from this node's peers are published; those of other nodes are relayed
//!   to this node's peers of the document (never back to their sender).
//! - The heads peer regions acknowledged over the region links this node holds are published;
//!   those of other nodes join this node's heads gossip (`regions:N` for a client of any node).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::driver::Shared;
use super::{BusEvent, BusNotice, ClusterBus};

/// Notices waiting to be published; beyond this, ephemeral notices are dropped (they are best
/// effort) and commit notices are left to the other nodes' periodic re-reads.
const OUTBOX: usize = 4096;

/// Makes a [`Repo`](super::Repo) one node of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id (in every notice it publishes).
    pub node_id: String,
    /// The bus between the nodes.
    pub bus: Arc<dyn ClusterBus>,
}

/// The publishing side, held by the driver.
#[derive(Debug)]
pub(super) struct ClusterLink {
    pub(super) node_id: String,
    pub(super) publish_commits: bool,
    outbox: mpsc::Sender<BusNotice>,
}

impl ClusterLink {
    /// Queues `notice` for publication; false when the outbox is full (it is dropped).
    pub(super) fn publish(&self, notice: BusNotice) -> bool {
        self.outbox.try_send(notice).is_ok()
    }
}

/// Starts the publisher; returns the link the driver publishes through.
pub(super) fn start(config: &ClusterConfig) -> (ClusterLink, tokio::task::JoinHandle<()>) {
    let (outbox, mut rx) = mpsc::channel::<BusNotice>(OUTBOX);
    let bus = config.bus.clone();
    let task = tokio::spawn(async move {
        while let Some(notice) = rx.recv().await {
            if let Err(error) = bus.publish(notice).await {
                tracing::debug!(%error, "cluster notice not published");
            }
        }
    });
    let link = ClusterLink {
        node_id: config.node_id.clone(),
        publish_commits: !config.bus.notifies_commits(),
        outbox,
    };
    (link, task)
}

/// Feeds what other nodes say (`events`: a subscription taken before the repo serves anyone,
/// so no notice falls between opening and listening) to the shards, until the bus or the repo
/// ends.
pub(super) async fn run_subscriber(shared: Arc<Shared>, mut events: mpsc::Receiver<BusEvent>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = super::driver::until_shutdown(&mut shutdown) => return,
        };
        let Some(event) = event else { return };
        match event {
            BusEvent::Notice(BusNotice::Committed { doc, keys, .. }) => {
                shared.run_on(shared.shard_of(&doc), move |core, now| {
                    core.handle_external_commit(now, doc, keys);
                });
            }
            BusEvent::Notice(BusNotice::Ephemeral {
                doc,
                sender,
                session_id,
                count,
                data,
                ..
            }) => {
                shared.run_on(shared.shard_of(&doc), move |core, _| {
                    core.handle_cluster_ephemeral(doc, sender, session_id, count, data);
                });
            }
            BusEvent::Notice(BusNotice::RegionHeads { doc, heads, .. }) => {
                shared.run_on(shared.shard_of(&doc), move |core, now| {
                    core.handle_cluster_region_heads(now, doc, heads);
                });
            }
            BusEvent::Notice(BusNotice::Deleted { doc, tombstone, .. }) => {
                shared.run_on(shared.shard_of(&doc), move |core, now| {
                    core.handle_cluster_deleted(now, doc, &tombstone);
                });
            }
            BusEvent::Gap => {
                tracing::info!("cluster bus resumed after a gap: re-reading resident documents");
                for i in 0..shared.shard_count() {
                    shared.run_on(i, |core, now| core.handle_external_gap(now));
                }
                // Deletions recorded meanwhile, too.
                match shared.storage.tombstones().await {
                    Ok(all) => {
                        for (doc, bytes) in all {
                            shared.run_on(shared.shard_of(&doc), move |core, now| {
                                core.handle_cluster_deleted(now, doc, &bytes);
                            });
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot re-read tombstones after a gap"),
                }
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}
