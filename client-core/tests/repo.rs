//! The native Repo over real WebSockets on 127.0.0.1 (in one process; multi-process tests live in
//! the workspace `tests/` crate).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use automerge::ROOT;
use automerge::transaction::Transactable;
use concord::core::{Origin, ServerPolicy};
use concord::repo::DocEvent;
use concord::storage::MemoryStorage;
use concord::{Repo, RepoConfig, RepoError};
use serde_json::json;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);

/// A listening peer (server policy) on an ephemeral loopback port. Returns its URL.
async fn listen() -> (Repo, String) {
    let config = RepoConfig {
        policy: Arc::new(ServerPolicy),
        ..RepoConfig::default()
    };
    let repo = Repo::open(Arc::new(MemoryStorage::new()), config)
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = repo.clone();
    tokio::spawn(async move { server.serve(listener).await });
    (repo, url)
}

async fn client(urls: &[&str]) -> Repo {
    let mut config = RepoConfig {
        servers: urls.iter().map(|s| (*s).to_owned()).collect(),
        ..RepoConfig::default()
    };
    config.backoff.initial = Duration::from_millis(20);
    Repo::open(Arc::new(MemoryStorage::new()), config)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_sync_through_a_listening_peer() {
    let (server, url) = listen().await;
    let (alice, bob) = (client(&[&url]).await, client(&[&url]).await);
    alice.wait_connected(WAIT).await.unwrap();
    bob.wait_connected(WAIT).await.unwrap();

    let doc = alice.create().await.unwrap();
    doc.change(|tx| tx.put(ROOT, "title", "groceries"))
        .await
        .unwrap();
    doc.wait_synced(WAIT).await.unwrap();

    let bobs = tokio::time::timeout(WAIT, bob.find(doc.url()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bobs.to_json().unwrap()["title"], json!("groceries"));

    // Bob subscribes; Alice writes; Bob hears a remote change with the new heads.
    let mut events = bobs.subscribe();
    doc.change(|tx| tx.put(ROOT, "count", 2)).await.unwrap();
    let heads = doc.heads().unwrap();
    let seen = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(DocEvent::Changed { heads: h, origin }) = events.recv().await {
                if h == heads {
                    return origin;
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(seen, Origin::Remote);
    assert_eq!(
        bobs.to_json().unwrap(),
        json!({"title": "groceries", "count": 2})
    );

    // Sync status names the server and knows it holds our heads.
    let status = bobs.sync_status().unwrap();
    assert!(status.iter().any(|s| s.in_sync), "{status:?}");
    // A view at the old heads does not see the later write.
    assert!(server.stats().changes_applied > 0);
    for r in [alice, bob, server] {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_messages_are_relayed_not_stored() {
    let (server, url) = listen().await;
    let (alice, bob) = (client(&[&url]).await, client(&[&url]).await);
    alice.wait_connected(WAIT).await.unwrap();
    bob.wait_connected(WAIT).await.unwrap();
    let doc = alice.create().await.unwrap();
    doc.wait_synced(WAIT).await.unwrap();
    let bobs = bob.find(doc.url()).await.unwrap();
    bobs.wait_synced(WAIT).await.unwrap();
    let mut events = bobs.subscribe();
    doc.broadcast(b"cursor:3".to_vec()).unwrap();
    let got = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(DocEvent::Ephemeral { data, .. }) = events.recv().await {
                return data;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, b"cursor:3");
    for r in [alice, bob, server] {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_moves_to_the_next_url_when_one_fails() {
    // A port with nothing listening, then a live server.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("ws://{}", dead.local_addr().unwrap());
    drop(dead);
    let (server, url) = listen().await;
    let c = client(&[&dead_url, &url]).await;
    c.wait_connected(WAIT).await.unwrap();
    let doc = c.create().await.unwrap();
    doc.change(|tx| tx.put(ROOT, "k", "v")).await.unwrap();
    doc.wait_synced(WAIT).await.unwrap();
    c.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn find_of_an_unknown_document_is_a_typed_error() {
    let c = client(&[]).await;
    let url: concord::AutomergeUrl = concord::DocumentId::from_bytes([4; 16]).url();
    match c.find(url).await {
        Err(RepoError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    c.shutdown().await;
}

#[tokio::test]
async fn a_failed_commit_is_reported_not_acknowledged() {
    let storage = MemoryStorage::new();
    let c = Repo::open(Arc::new(storage.clone()), RepoConfig::default())
        .await
        .unwrap();
    let doc = c.create().await.unwrap();
    storage.set_fail_writes(true);
    let err = doc.change(|tx| tx.put(ROOT, "k", 1)).await.unwrap_err();
    assert!(matches!(err, RepoError::CommitFailed(_)), "{err:?}");
    c.shutdown().await;
}

#[test]
fn repo_futures_are_send() {
    fn assert_send<T: Send>(_: T) {}
    let storage: Arc<dyn concord::storage::Storage> = Arc::new(MemoryStorage::new());
    assert_send(Repo::open(storage, RepoConfig::default()));
}
