//! The native Repo over real WebSockets on 127.0.0.1 (in one process; multi-process tests live in
//! the workspace `tests/` crate).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use automerge::ROOT;
use automerge::transaction::Transactable;
use concord::core::{Origin, ServerPolicy};
use concord::repo::DocEvent;
use concord::storage::{ChunkKey, MemoryStorage, Storage, StorageResult, StoredDocument, WriteOp};
use concord::{DocumentId, Repo, RepoConfig, RepoError, StorageId};
use serde_json::json;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);

/// A listening peer (server policy, its documents split between four shards, as servers run)
/// on an ephemeral loopback port. Returns its URL.
async fn listen() -> (Repo, String) {
    let config = RepoConfig {
        policy: Arc::new(ServerPolicy),
        shards: 4,
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

/// Memory storage whose writes take a while, recording how many writes each batch held.
#[derive(Debug, Clone, Default)]
struct SlowStorage {
    inner: MemoryStorage,
    batches: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl SlowStorage {
    async fn slow(&self, writes: usize) {
        self.batches.lock().unwrap().push(writes);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[async_trait::async_trait]
impl Storage for SlowStorage {
    async fn load(&self, doc: &DocumentId) -> StorageResult<StoredDocument> {
        self.inner.load(doc).await
    }
    async fn append(&self, doc: &DocumentId, key: ChunkKey, bytes: &[u8]) -> StorageResult<()> {
        self.slow(1).await;
        self.inner.append(doc, key, bytes).await
    }
    async fn compact(
        &self,
        doc: &DocumentId,
        key: ChunkKey,
        snapshot: &[u8],
        covered: &[ChunkKey],
    ) -> StorageResult<()> {
        self.slow(1).await;
        self.inner.compact(doc, key, snapshot, covered).await
    }
    async fn put_sync_state(
        &self,
        doc: &DocumentId,
        peer: &StorageId,
        state: &[u8],
    ) -> StorageResult<()> {
        self.slow(1).await;
        self.inner.put_sync_state(doc, peer, state).await
    }
    async fn list(&self) -> StorageResult<Vec<DocumentId>> {
        self.inner.list().await
    }
    async fn delete(&self, doc: &DocumentId) -> StorageResult<()> {
        self.inner.delete(doc).await
    }
    async fn get_meta(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        self.inner.get_meta(key).await
    }
    async fn put_meta(&self, key: &str, value: &[u8]) -> StorageResult<()> {
        self.inner.put_meta(key, value).await
    }
    async fn write_batch(&self, ops: &[WriteOp<'_>]) -> StorageResult<()> {
        self.slow(ops.len()).await;
        self.inner.write_batch(ops).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_together_commit_together_and_a_failing_one_fails_alone() {
    let storage = SlowStorage::default();
    let c = Repo::open(Arc::new(storage.clone()), RepoConfig::default())
        .await
        .unwrap();
    let mut docs = Vec::new();
    for _ in 0..12 {
        docs.push(c.create().await.unwrap());
    }
    let poisoned = docs[5].id();
    storage.inner.set_fail_writes_to(poisoned, true);
    let changes = docs
        .iter()
        .zip(0i64..)
        .map(|(d, i)| d.change(move |tx| tx.put(ROOT, "k", i)));
    let results = futures::future::join_all(changes).await;
    for (d, r) in docs.iter().zip(&results) {
        if d.id() == poisoned {
            assert!(matches!(r, Err(RepoError::CommitFailed(_))), "{r:?}");
        } else {
            assert!(r.is_ok(), "{r:?}");
            let stored = storage.inner.load(&d.id()).await.unwrap();
            let mut reloaded = automerge::Automerge::new();
            for chunk in &stored.chunks {
                reloaded.load_incremental(&chunk.bytes).unwrap();
            }
            assert_eq!(
                reloaded.get_heads(),
                d.heads().unwrap(),
                "acknowledged = stored"
            );
        }
    }
    let batches = storage.batches.lock().unwrap().clone();
    assert!(
        batches.iter().any(|n| *n > 1),
        "writes queued behind a slow commit share one: {batches:?}"
    );
    c.shutdown().await;
}

#[test]
fn repo_futures_are_send() {
    fn assert_send<T: Send>(_: T) {}
    let storage: Arc<dyn concord::storage::Storage> = Arc::new(MemoryStorage::new());
    assert_send(Repo::open(storage, RepoConfig::default()));
}
