//! Deletion across regions, as real processes on 127.0.0.1: two `concord serve` regions
//! replicating; a client of region A deletes a document; a client of region B that held it
//! offline (with edits of its own) reconnects and drops its copy, its edits refused and the
//! deletion reported to it; a peer that does not speak Concord's extensions (as stock
//! automerge-repo clients) gets `doc-unavailable`; after the retention period (a test setting)
//! the region's stored data is reclaimed and the tombstone stays.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use automerge::ROOT;
use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use concord::repo::RepoEvent;
use concord::storage::{SqliteConfig, SqliteStorage, Storage};
use concord::wire::{self, Message, PeerMetadata};
use concord::{DocumentId, PeerId, Repo, RepoConfig, RepoError};
use concord_tests::region::Region;
use futures::{SinkExt, StreamExt};

const WAIT: Duration = Duration::from_secs(30);

async fn client(dir: &Path, name: &str, servers: Vec<String>) -> Repo {
    let mut config = RepoConfig {
        servers,
        ..RepoConfig::default()
    };
    config.backoff.initial = Duration::from_millis(50);
    config.backoff.max = Duration::from_millis(500);
    Repo::open_sqlite(dir.join(format!("{name}.db")), config)
        .await
        .unwrap()
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a peer that does not speak Concord's extensions hears when it asks for `doc`.
async fn plain_request(url: &str, doc: DocumentId) -> Message {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let send =
        |m: &Message| tokio_tungstenite::tungstenite::Message::Binary(wire::encode(m).into());
    ws.send(send(&Message::Join {
        sender_id: PeerId::from("stock"),
        peer_metadata: Some(PeerMetadata::default()),
        supported_protocol_versions: vec!["1".into()],
    }))
    .await
    .unwrap();
    let mut server = None;
    loop {
        let Some(Ok(frame)) = ws.next().await else {
            panic!("closed");
        };
        let tokio_tungstenite::tungstenite::Message::Binary(b) = frame else {
            continue;
        };
        match wire::decode(&b, usize::MAX).unwrap() {
            Message::Peer { sender_id, .. } => {
                server = Some(sender_id.clone());
                let data = automerge::Automerge::new()
                    .generate_sync_message(&mut automerge::sync::State::new())
                    .unwrap()
                    .encode();
                ws.send(send(&Message::Request {
                    sender_id: PeerId::from("stock"),
                    target_id: sender_id,
                    document_id: doc,
                    data,
                }))
                .await
                .unwrap();
            }
            m if server.is_some() && m.document_id() == Some(doc) => return m,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_reaches_every_region_and_an_offline_client_and_is_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let retention = vec!["--deleted-retention-secs".to_owned(), "2".to_owned()];
    let mut a = Region::new(dir.path(), "a", vec![]);
    a.extra.clone_from(&retention);
    let token = a.start();
    let mut b = Region::new(dir.path(), "b", vec![a.sync_url()]);
    b.extra.clone_from(&retention);
    b.start();

    // Alice (region A) creates a document; Bob (region B) gets it.
    let alice = client(dir.path(), "alice", vec![a.url(&token)]).await;
    alice.wait_connected(WAIT).await.unwrap();
    let doc = alice.create().await.unwrap();
    doc.change(|tx| tx.put(ROOT, "title", "shared"))
        .await
        .unwrap();
    doc.wait_synced(WAIT).await.unwrap();
    let id = doc.id();
    let bob = client(dir.path(), "bob", vec![b.url(&token)]).await;
    bob.wait_connected(WAIT).await.unwrap();
    let bobs = eventually("bob finds it through region B", async || {
        bob.find(id).await.ok()
    })
    .await;
    drop(bobs);
    bob.shutdown().await;

    // Bob edits offline.
    let offline = client(dir.path(), "bob", vec![]).await;
    let h = offline.find_local(id).await.unwrap();
    h.change(|tx| tx.put(ROOT, "offline", "edit"))
        .await
        .unwrap();
    drop(h);
    offline.shutdown().await;

    // Alice deletes it; region A confirms it.
    doc.delete().await.unwrap();
    eventually("region A confirms the deletion", async || {
        alice.deletion(&id).filter(|t| t.confirmed)
    })
    .await;
    assert!(matches!(doc.to_json(), Err(RepoError::Deleted(_))));
    assert!(matches!(alice.find(id).await, Err(RepoError::Deleted(_))));
    // Region B learns it; a fresh client there is told the document is deleted.
    let carol = client(dir.path(), "carol", vec![b.url(&token)]).await;
    carol.wait_connected(WAIT).await.unwrap();
    eventually("region B refuses the deleted document", async || {
        matches!(carol.find(id).await, Err(RepoError::Deleted(_))).then_some(())
    })
    .await;

    // Bob comes back: his copy goes, his offline edit is refused, and he is told.
    let bob = client(dir.path(), "bob", vec![b.url(&token)]).await;
    let mut events = bob.events();
    bob.load_all().await.unwrap();
    let by = eventually("bob hears of the deletion", async || {
        loop {
            match events.try_recv() {
                Ok(RepoEvent::DocumentDeleted { doc, by, .. }) if doc == id => break Some(by),
                Ok(_) => continue,
                Err(_) => break None,
            }
        }
    })
    .await;
    assert!(!by.is_empty());
    assert!(matches!(
        bob.find_local(id).await,
        Err(RepoError::Deleted(_))
    ));
    assert!(
        bob.storage().load(&id).await.unwrap().is_empty(),
        "bob's bytes are gone"
    );

    // A peer that does not speak Concord's extensions gets doc-unavailable.
    let answer = plain_request(&b.url(&token), id).await;
    assert!(
        matches!(answer, Message::DocUnavailable { .. }),
        "{answer:?}"
    );

    // After the retention period region A's stored data is reclaimed; the tombstone stays.
    let db = SqliteStorage::open(SqliteConfig::new(a.data.join("concord.db")))
        .await
        .unwrap();
    eventually("region A reclaims the data", async || {
        db.load(&id).await.unwrap().is_empty().then_some(())
    })
    .await;
    assert!(db.tombstones().await.unwrap().iter().any(|(d, _)| *d == id));

    alice.shutdown().await;
    bob.shutdown().await;
    carol.shutdown().await;
    a.kill9();
    b.kill9();
}

/// Runs the `concord` CLI; (success, stdout, stderr).
fn concord_cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(concord_tests::concord_bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_purge_erases_the_document_on_every_region_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Retention far away: only the purge can make the bytes go within the test.
    let retention = vec!["--deleted-retention-secs".to_owned(), "86400".to_owned()];
    let mut a = Region::new(dir.path(), "a", vec![]);
    a.extra.clone_from(&retention);
    let admin = a.start();
    let mut b = Region::new(dir.path(), "b", vec![a.sync_url()]);
    b.extra.clone_from(&retention);
    b.start();
    let keys = dir.path().join("auth-keys.json");
    let keys = keys.to_str().unwrap();
    let (ok, writer, _) = concord_cli(&["token", "create", "--keys", keys, "--principal", "w"]);
    assert!(ok);
    let writer = writer.trim();

    let alice = client(dir.path(), "alice", vec![a.url(writer)]).await;
    let doc = alice.create().await.unwrap();
    doc.change(|tx| tx.put(ROOT, "secret", "to be erased"))
        .await
        .unwrap();
    doc.wait_synced(WAIT).await.unwrap();
    let id = doc.id();
    let b_db = SqliteStorage::open(SqliteConfig::new(b.data.join("concord.db")))
        .await
        .unwrap();
    eventually("region B holds the document", async || {
        (!b_db.load(&id).await.unwrap().is_empty()).then_some(())
    })
    .await;

    // A write token may delete, but not erase.
    let replica = dir.path().join("cli");
    let replica = replica.to_str().unwrap();
    let url = id.url().to_string();
    let (ok, _, err) = concord_cli(&[
        "doc",
        "--data",
        replica,
        "--server",
        &a.url(writer),
        "rm",
        "--purge",
        &url,
    ]);
    assert!(!ok, "a non-admin purge must fail");
    assert!(err.contains("refused"), "{err}");
    assert!(!b_db.load(&id).await.unwrap().is_empty());

    // The admin erases it: both regions drop the bytes now, not after the retention period.
    let (ok, out, err) = concord_cli(&[
        "doc",
        "--data",
        replica,
        "--server",
        &a.url(&admin),
        "rm",
        "--purge",
        &url,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("purged {url}"));
    let a_db = SqliteStorage::open(SqliteConfig::new(a.data.join("concord.db")))
        .await
        .unwrap();
    for (name, db) in [("A", &a_db), ("B", &b_db)] {
        eventually(&format!("region {name} erases the bytes"), async || {
            db.load(&id).await.unwrap().is_empty().then_some(())
        })
        .await;
    }
    // The connected client is told and drops its copy too.
    eventually("alice's copy is gone", async || {
        alice
            .storage()
            .load(&id)
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(matches!(alice.find(id).await, Err(RepoError::Deleted(_))));

    alice.shutdown().await;
    a.kill9();
    b.kill9();
}
