//! Bad input at the edge of a real server on 127.0.0.1: each case gets a clear error or close
//! code, and a canary client on the same server keeps syncing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use common::{TestServer, WAIT, client};
use concord::wire::{Message, PeerMetadata};
use concord::{DocHandle, DocumentId, PeerId, Repo};
use futures::SinkExt;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use common::ws::{Socket, next_within, send_msg};

async fn raw(server: &TestServer) -> Socket {
    tokio_tungstenite::connect_async(server.url())
        .await
        .unwrap()
        .0
}

async fn send(ws: &mut Socket, m: &Message) {
    send_msg(ws, m).await.unwrap();
}

/// The next protocol message (skipping pings), or the close code.
async fn next(ws: &mut Socket) -> Result<Message, Option<CloseCode>> {
    next_within(ws, WAIT).await
}

async fn handshake(ws: &mut Socket, name: &str) -> PeerId {
    send(
        ws,
        &Message::Join {
            sender_id: PeerId::from(name),
            peer_metadata: Some(PeerMetadata::default()),
            supported_protocol_versions: vec!["1".into()],
        },
    )
    .await;
    match next(ws).await {
        Ok(Message::Peer { sender_id, .. }) => sender_id,
        other => panic!("expected peer, got {other:?}"),
    }
}

/// A canary keeps writing and syncing; returns after one more round trip.
async fn canary_still_syncs(repo: &Repo, doc: &DocHandle, round: i64) {
    doc.change(|tx| tx.put(ROOT, "round", round)).await.unwrap();
    doc.wait_synced(WAIT).await.unwrap();
    assert!(!repo.peers().is_empty());
}

async fn canary(server: &TestServer) -> (Repo, DocHandle) {
    let repo = client(&server.url()).await;
    let doc = repo.create().await.unwrap();
    doc.wait_synced(WAIT).await.unwrap();
    (repo, doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_handshake_gets_an_error_and_the_connection_survives() {
    let server = TestServer::start(|_| {}).await;
    let (c, doc) = canary(&server).await;
    let mut ws = raw(&server).await;
    let server_id = handshake(&mut ws, "mallory").await;
    for junk in [
        vec![0xff, 0x00, 0x13],
        vec![0xa1],
        b"not cbor at all".to_vec(),
    ] {
        ws.send(Ws::Binary(junk.into())).await.unwrap();
        match next(&mut ws).await {
            Ok(Message::Error { message, .. }) => assert!(!message.is_empty()),
            other => panic!("expected an error message, got {other:?}"),
        }
    }
    // A sync message whose data is not an Automerge sync message.
    send(
        &mut ws,
        &Message::Sync {
            sender_id: PeerId::from("mallory"),
            target_id: server_id.clone(),
            document_id: doc.id(),
            data: vec![1, 2, 3],
        },
    )
    .await;
    match next(&mut ws).await {
        Ok(Message::Error { message, .. }) => {
            assert!(message.contains("does not decode"), "{message}")
        }
        other => panic!("expected an error message, got {other:?}"),
    }
    // The same connection still syncs a real document.
    let mut state = automerge::sync::State::new();
    let msg = Automerge::new().generate_sync_message(&mut state).unwrap();
    send(
        &mut ws,
        &Message::Request {
            sender_id: PeerId::from("mallory"),
            target_id: server_id,
            document_id: doc.id(),
            data: msg.encode(),
        },
    )
    .await;
    match next(&mut ws).await {
        Ok(Message::Sync { document_id, .. }) => assert_eq!(document_id, doc.id()),
        other => panic!("expected sync, got {other:?}"),
    }
    canary_still_syncs(&c, &doc, 1).await;
    c.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_before_the_handshake_and_bad_versions_are_refused_with_1002() {
    let server = TestServer::start(|_| {}).await;
    let (c, doc) = canary(&server).await;

    let mut ws = raw(&server).await;
    ws.send(Ws::Binary(vec![0xde, 0xad].into())).await.unwrap();
    assert!(matches!(next(&mut ws).await, Ok(Message::Error { .. })));
    assert_eq!(next(&mut ws).await.unwrap_err(), Some(CloseCode::Protocol));

    let mut ws = raw(&server).await;
    send(
        &mut ws,
        &Message::Join {
            sender_id: PeerId::from("future"),
            peer_metadata: None,
            supported_protocol_versions: vec!["2".into()],
        },
    )
    .await;
    match next(&mut ws).await {
        Ok(Message::Error { message, .. }) => {
            assert!(message.contains("unsupported protocol"), "{message}")
        }
        other => panic!("expected error, got {other:?}"),
    }
    assert_eq!(next(&mut ws).await.unwrap_err(), Some(CloseCode::Protocol));
    canary_still_syncs(&c, &doc, 1).await;
    c.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_close_the_connection_with_1009() {
    let server = TestServer::start(|c| c.max_message_bytes = 64 * 1024).await;
    let (c, doc) = canary(&server).await;
    let mut ws = raw(&server).await;
    handshake(&mut ws, "big").await;
    let _ = ws.send(Ws::Binary(vec![0u8; 200 * 1024].into())).await;
    match next(&mut ws).await {
        Err(code) => assert!(
            code.is_none() || code == Some(CloseCode::Size),
            "closed with {code:?}"
        ),
        Ok(m) => panic!("oversized message answered with {m:?}"),
    }
    canary_still_syncs(&c, &doc, 1).await;
    c.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected() {
    let server = TestServer::start(|c| {
        c.outgoing_queue = 8;
        // The canary floods on purpose: its own rate limit must not end it first on a busy machine.
        c.max_bytes_per_sec = u32::MAX;
        c.max_messages_per_sec = u32::MAX;
        // ... nor its ephemeral byte budget (which would drop the flood instead of relaying it).
        c.quotas.ephemeral_bytes_per_sec = 1 << 40;
        c.quotas.ephemeral_burst = 1 << 40;
    })
    .await;
    let (c, doc) = canary(&server).await;
    // The slow client subscribes to the canary's document, then stops reading.
    let mut ws = raw(&server).await;
    let server_id = handshake(&mut ws, "sloth").await;
    let mut state = automerge::sync::State::new();
    let msg = Automerge::new().generate_sync_message(&mut state).unwrap();
    send(
        &mut ws,
        &Message::Request {
            sender_id: PeerId::from("sloth"),
            target_id: server_id,
            document_id: doc.id(),
            data: msg.encode(),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The canary floods presence data that the server relays to every subscriber.
    let blob = vec![7u8; 256 * 1024];
    let before = server.repo.peers().len();
    assert_eq!(before, 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.repo.peers().len() == before && tokio::time::Instant::now() < deadline {
        for _ in 0..16 {
            doc.broadcast(blob.clone()).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.repo.peers().len(),
        1,
        "the slow reader was disconnected"
    );
    canary_still_syncs(&c, &doc, 1).await;
    drop(ws);
    c.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_documents_are_unavailable() {
    let server = TestServer::start(|_| {}).await;
    let mut ws = raw(&server).await;
    let server_id = handshake(&mut ws, "curious").await;
    let unknown = DocumentId::from_bytes([0x42; 16]);
    let mut state = automerge::sync::State::new();
    let msg = Automerge::new().generate_sync_message(&mut state).unwrap();
    send(
        &mut ws,
        &Message::Request {
            sender_id: PeerId::from("curious"),
            target_id: server_id,
            document_id: unknown,
            data: msg.encode(),
        },
    )
    .await;
    match next(&mut ws).await {
        Ok(Message::DocUnavailable { document_id, .. }) => assert_eq!(document_id, unknown),
        other => panic!("expected doc-unavailable, got {other:?}"),
    }
    server.stop().await;
}
