//! Panic containment and wedge detection, with faults injected into a real server's engine
//! (feature `fault-injection`: `cargo test -p concord --features fault-injection --test panics`).
//!
//! A panic while applying one document's changes costs that document's memory and the
//! connection that sent them; the document is reloaded from storage, nothing committed is lost,
//! and other documents and connections keep syncing. A shard stuck in Automerge is reported by
//! `Repo::health` while documents of the other shards keep syncing.
#![cfg(feature = "fault-injection")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc};
use concord::core::{ServerPolicy, ShardConfig, fault};
use concord::repo::RepoEvent;
use concord::storage::MemoryStorage;
use concord::{DocHandle, Repo, RepoConfig};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(20);
const SHARDS: u16 = 4;

async fn server() -> (Repo, String) {
    let config = RepoConfig {
        policy: Arc::new(ServerPolicy),
        shards: SHARDS,
        ..RepoConfig::default()
    };
    let repo = Repo::open(Arc::new(MemoryStorage::new()), config)
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let r = repo.clone();
    tokio::spawn(async move { r.serve(listener).await });
    (repo, url)
}

async fn client(url: &str) -> Repo {
    let mut config = RepoConfig::default().with_server(url);
    config.backoff.initial = Duration::from_millis(20);
    config.backoff.max = Duration::from_millis(200);
    let repo = Repo::open(Arc::new(MemoryStorage::new()), config)
        .await
        .unwrap();
    repo.wait_connected(WAIT).await.unwrap();
    repo
}

/// Two synced documents of `repo` that the server holds in different shards.
async fn two_shards(repo: &Repo) -> (DocHandle, DocHandle) {
    let first = repo.create().await.unwrap();
    loop {
        let other = repo.create().await.unwrap();
        if ShardConfig::shard_of(&other.id(), SHARDS) != ShardConfig::shard_of(&first.id(), SHARDS)
        {
            for d in [&first, &other] {
                d.change(|tx| tx.put(ROOT, "v", 0)).await.unwrap();
                d.wait_synced(WAIT).await.unwrap();
            }
            return (first, other);
        }
    }
}

fn value(doc: &DocHandle) -> i64 {
    doc.with_doc(|d| d.get(ROOT, "v").unwrap().and_then(|(v, _)| v.as_i64()))
        .unwrap()
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_costs_one_document_and_its_sender_only() {
    let (server, url) = server().await;
    let (alice, bob) = (client(&url).await, client(&url).await);
    let (poisoned, healthy) = two_shards(&alice).await;
    let bobs = bob.find(healthy.url()).await.unwrap();
    let mut events = server.events();

    fault::panic_on_apply(Some(poisoned.id()));
    poisoned.change(|tx| tx.put(ROOT, "v", 1)).await.unwrap();
    let reason = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(RepoEvent::DocumentPanicked { doc, reason }) = events.recv().await {
                assert_eq!(doc, poisoned.id());
                return reason;
            }
        }
    })
    .await
    .expect("the panic is reported");
    assert!(reason.contains("injected fault"), "{reason}");
    assert!(server.stats().panics >= 1);

    // Other documents and connections go on: Bob and Alice edit the healthy document.
    for i in 1..=5 {
        healthy.change(|tx| tx.put(ROOT, "v", i)).await.unwrap();
        healthy.wait_synced(WAIT).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while value(&bobs) != 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob stopped syncing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The fault goes away: Alice's client (closed, reconnecting) syncs her change, and the
    // server's copy, reloaded from storage, has everything.
    fault::panic_on_apply(None);
    poisoned.wait_synced(WAIT).await.unwrap();
    let on_server = server.find(poisoned.url()).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while value(&on_server) != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.health(Duration::from_secs(1)).is_healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_shard_is_reported_and_the_others_keep_serving() {
    let (server, url) = server().await;
    let (alice, bob) = (client(&url).await, client(&url).await);
    let (stuck, healthy) = two_shards(&alice).await;
    // Bob edits the healthy document on his own connection (one connection's frames are
    // handled in order, so Alice's would wait behind her stuck one).
    let healthy = bob.find(healthy.url()).await.unwrap();
    assert!(server.health(Duration::from_millis(500)).is_healthy());

    fault::stall_on_apply(Some((stuck.id(), Duration::from_secs(4))));
    stuck.change(|tx| tx.put(ROOT, "v", 1)).await.unwrap();
    // The shard is reported while it is stuck...
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let h = server.health(Duration::from_millis(500));
        if !h.stalled.is_empty() {
            assert_eq!(h.stalled.len(), 1, "{h:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and a document of another shard syncs meanwhile.
    let t = std::time::Instant::now();
    healthy.change(|tx| tx.put(ROOT, "v", 7)).await.unwrap();
    healthy.wait_synced(WAIT).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the other shard waited {:?}",
        t.elapsed()
    );
    fault::stall_on_apply(None);
    stuck.wait_synced(WAIT).await.unwrap();
    assert!(server.health(Duration::from_millis(500)).is_healthy());
}
