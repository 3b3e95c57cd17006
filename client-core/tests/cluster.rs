//! Cluster nodes sharing one storage over an in-process bus (the PostgreSQL bus is tested
//! against a real PostgreSQL in the workspace `tests/` crate and `sync-server/tests/`): clients on
//! different nodes see each other's changes and presence, a node that missed notices catches up
//! after a gap, and compactions by both nodes never lose a change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc};
use concord::core::{Housekeeping, ServerPolicy};
use concord::repo::{BusError, BusEvent, BusNotice, ClusterBus, ClusterConfig, DocEvent};
use concord::storage::{MemoryStorage, Storage};
use concord::{Repo, RepoConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Generous: these tests share two cores with whatever else runs.
const WAIT: Duration = Duration::from_secs(30);

/// An in-process bus: every published notice reaches every other subscriber; the test can
/// make a node deaf (notices are lost) and then announce a gap.
#[derive(Debug, Default)]
struct Hub {
    subscribers: Mutex<Vec<(String, mpsc::Sender<BusEvent>)>>,
    deaf: Mutex<Vec<String>>,
}

#[derive(Debug)]
struct LocalBus {
    node: String,
    hub: Arc<Hub>,
}

#[async_trait::async_trait]
impl ClusterBus for LocalBus {
    fn notifies_commits(&self) -> bool {
        false
    }

    async fn publish(&self, notice: BusNotice) -> Result<(), BusError> {
        let subs = self.hub.subscribers.lock().unwrap().clone();
        let deaf = self.hub.deaf.lock().unwrap().clone();
        for (node, tx) in subs {
            if node != self.node && !deaf.contains(&node) {
                let _ = tx.send(BusEvent::Notice(notice.clone())).await;
            }
        }
        Ok(())
    }

    fn subscribe(&self) -> mpsc::Receiver<BusEvent> {
        let (tx, rx) = mpsc::channel(1024);
        self.hub
            .subscribers
            .lock()
            .unwrap()
            .push((self.node.clone(), tx));
        rx
    }

    fn is_connected(&self) -> bool {
        true
    }
}

impl Hub {
    fn set_deaf(&self, node: &str, deaf: bool) {
        let mut d = self.deaf.lock().unwrap();
        d.retain(|n| n != node);
        if deaf {
            d.push(node.to_owned());
        }
    }

    async fn gap(&self, node: &str) {
        let subs = self.hub_of(node);
        for tx in subs {
            tx.send(BusEvent::Gap).await.unwrap();
        }
    }

    fn hub_of(&self, node: &str) -> Vec<mpsc::Sender<BusEvent>> {
        self.subscribers
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == node)
            .map(|(_, tx)| tx.clone())
            .collect()
    }
}

/// A node: a server repo over the shared storage, listening on loopback.
async fn node(name: &str, storage: &MemoryStorage, hub: &Arc<Hub>) -> (Repo, String) {
    let config = RepoConfig {
        peer_id: Some(concord::PeerId::new(name)),
        policy: Arc::new(ServerPolicy),
        shards: 4,
        housekeeping: Housekeeping {
            compact_after_increments: 8,
            ..Housekeeping::default()
        },
        cluster: Some(ClusterConfig {
            node_id: name.to_owned(),
            bus: Arc::new(LocalBus {
                node: name.to_owned(),
                hub: hub.clone(),
            }),
        }),
        ..RepoConfig::default()
    };
    let repo = Repo::open(Arc::new(storage.clone()), config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = repo.clone();
    tokio::spawn(async move { server.serve(listener).await });
    (repo, url)
}

async fn client(url: &str) -> Repo {
    let mut config = RepoConfig {
        servers: vec![url.to_owned()],
        ..RepoConfig::default()
    };
    config.backoff.initial = Duration::from_millis(20);
    let repo = Repo::open(Arc::new(MemoryStorage::new()), config)
        .await
        .unwrap();
    repo.wait_connected(WAIT).await.unwrap();
    repo
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_different_nodes_see_each_other() {
    let storage = MemoryStorage::new();
    let hub = Arc::new(Hub::default());
    let (_n1, url1) = node("n1", &storage, &hub).await;
    let (_n2, url2) = node("n2", &storage, &hub).await;
    let (alice, bob) = (client(&url1).await, client(&url2).await);

    let doc = alice.create().await.unwrap();
    doc.change(|tx| tx.put(ROOT, "title", "shared"))
        .await
        .unwrap();
    doc.wait_synced(WAIT).await.unwrap();
    // Bob, on the other node, finds it (node 2 loads it from the shared storage).
    let bobs = tokio::time::timeout(WAIT, bob.find(doc.url()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bobs.to_json().unwrap()["title"], "shared");

    // Live edits both ways cross nodes through the bus, not through a reconnect.
    let mut presence = bobs.subscribe();
    for i in 0..20i64 {
        doc.change(|tx| tx.put(ROOT, format!("a{i}"), i))
            .await
            .unwrap();
        bobs.change(|tx| tx.put(ROOT, format!("b{i}"), i))
            .await
            .unwrap();
    }
    until("both see 41 keys", || {
        let n = |h: &concord::DocHandle| h.with_doc(|d| d.keys(ROOT).count()).unwrap();
        n(&doc) == 41 && n(&bobs) == 41
    })
    .await;
    assert_eq!(doc.heads().unwrap(), bobs.heads().unwrap());

    // Presence crosses nodes too.
    doc.broadcast(b"cursor 3".to_vec()).unwrap();
    let got = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(DocEvent::Ephemeral { data, .. }) = presence.recv().await {
                return data;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, b"cursor 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_notices_catches_up_after_a_gap() {
    let storage = MemoryStorage::new();
    let hub = Arc::new(Hub::default());
    let (_n1, url1) = node("n1", &storage, &hub).await;
    let (_n2, url2) = node("n2", &storage, &hub).await;
    let (alice, bob) = (client(&url1).await, client(&url2).await);
    let doc = alice.create().await.unwrap();
    doc.change(|tx| tx.put(ROOT, "v", 0)).await.unwrap();
    doc.wait_synced(WAIT).await.unwrap();
    let bobs = bob.find(doc.url()).await.unwrap();

    // Node 2 stops hearing the bus: Alice's changes are committed but not announced to it.
    hub.set_deaf("n2", true);
    for i in 1..=5i64 {
        doc.change(|tx| tx.put(ROOT, "v", i)).await.unwrap();
    }
    doc.wait_synced(WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_ne!(
        bobs.heads().unwrap(),
        doc.heads().unwrap(),
        "node 2 missed them"
    );

    // The bus comes back and says it may have lost notices: node 2 re-reads.
    hub.set_deaf("n2", false);
    hub.gap("n2").await;
    until("Bob catches up", || {
        bobs.heads().unwrap() == doc.heads().unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_compacting_one_hot_document_lose_nothing() {
    let storage = MemoryStorage::new();
    let hub = Arc::new(Hub::default());
    let (n1, url1) = node("n1", &storage, &hub).await;
    let (n2, url2) = node("n2", &storage, &hub).await;
    let (alice, bob) = (client(&url1).await, client(&url2).await);
    let doc = alice.create().await.unwrap();
    doc.wait_synced(WAIT).await.unwrap();
    let bobs = bob.find(doc.url()).await.unwrap();
    // Both nodes commit chunks of the same document and compact it (every 8 increments).
    let (a, b) = (doc.clone(), bobs.clone());
    let wa = tokio::spawn(async move {
        for i in 0..120i64 {
            a.change(|tx| tx.put(ROOT, format!("a{i}"), i))
                .await
                .unwrap();
        }
    });
    let wb = tokio::spawn(async move {
        for i in 0..120i64 {
            b.change(|tx| tx.put(ROOT, format!("b{i}"), i))
                .await
                .unwrap();
        }
    });
    wa.await.unwrap();
    wb.await.unwrap();
    let (h1, h2) = (
        n1.find_local(doc.id()).await.unwrap(),
        n2.find_local(doc.id()).await.unwrap(),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while doc.heads().unwrap() != bobs.heads().unwrap() {
        if tokio::time::Instant::now() > deadline {
            let keys = |h: &concord::DocHandle| h.with_doc(|d| d.keys(ROOT).count()).unwrap();
            panic!(
                "clients did not converge: alice {} keys, bob {}, node 1 {}, node 2 {}, storage {}",
                keys(&doc),
                keys(&bobs),
                keys(&h1),
                keys(&h2),
                {
                    let stored = storage.load(&doc.id()).await.unwrap();
                    let mut d = automerge::Automerge::new();
                    for c in &stored.chunks {
                        d.load_incremental(&c.bytes).unwrap();
                    }
                    d.keys(ROOT).count()
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doc.wait_synced(WAIT).await.unwrap();
    bobs.wait_synced(WAIT).await.unwrap();
    n1.flush().await;
    n2.flush().await;
    // Everything acknowledged is in the shared storage, whatever the two nodes compacted.
    let stored = storage.load(&doc.id()).await.unwrap();
    let mut loaded = automerge::Automerge::new();
    for c in &stored.chunks {
        loaded.load_incremental(&c.bytes).unwrap();
    }
    assert_eq!(loaded.keys(ROOT).count(), 240, "every change is stored");
    assert!(
        stored.chunks.len() < 120,
        "compaction ran ({} chunks)",
        stored.chunks.len()
    );
}
