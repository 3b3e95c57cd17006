//! Hostile peers against a real `concord serve` process on 127.0.0.1. Every case ends in a typed
//! error or a close code within a bounded time; a canary client on the same server keeps syncing
//! after each case; nothing already stored is lost; server memory stays bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ROOT};
use concord::storage::MemoryStorage;
use concord::wire::{self, Message, PeerMetadata};
use concord::{DocHandle, DocumentId, PeerId, Repo, RepoConfig};
use futures::SinkExt;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

mod common;

use common::ws::{Socket, next_within, send_msg};

// Server process, raw WebSocket helpers, the canary.
include!("hostile/harness.rs");

hostile_cases!(hostile_peers_are_refused_and_the_canary_keeps_syncing);

async fn hostile_peers_are_refused_and_the_canary_keeps_syncing(backend: Backend) {
    let server = Server::start(backend);
    let admin = server.token("canary", &[], false, "1h");
    let mut config = RepoConfig::default().with_server(server.url(&admin));
    config.backoff.initial = Duration::from_millis(20);
    let repo = Repo::open(Arc::new(MemoryStorage::new()), config)
        .await
        .unwrap();
    repo.wait_connected(WAIT).await.unwrap();
    let doc = repo.create().await.unwrap();
    doc.change(|tx| tx.put(ROOT, "secret", "canary data"))
        .await
        .unwrap();
    let mut canary = Canary {
        repo,
        doc,
        round: 0,
    };
    canary.check("setup").await;
    let d = canary.doc.id();
    let rss_start = server.rss_kib();
    let mut cases = 0;

    // 1-4: credentials.
    assert_eq!(
        dial(&format!("ws://{}/sync", server.addr), None)
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        dial(&server.url("garbage.token.here"), None).await.err(),
        Some(401)
    );
    let other_keys = tempfile::tempdir().unwrap();
    let forged = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_concord"))
            .args([
                "token",
                "create",
                "--data",
                other_keys.path().to_str().unwrap(),
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        dial(&server.url(forged.trim()), None).await.err(),
        Some(401),
        "token signed with another key"
    );
    let mut parts: Vec<String> = admin.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    assert_eq!(
        dial(&server.url(&parts.join(".")), None).await.err(),
        Some(401),
        "tampered token"
    );
    cases += 4;
    canary.check("bad credentials").await;

    // 5: bad Origin.
    assert_eq!(
        dial(&server.url(&admin), Some("https://evil.example"))
            .await
            .err(),
        Some(403)
    );
    assert!(
        dial(&server.url(&admin), Some("https://app.example"))
            .await
            .is_ok()
    );
    cases += 1;

    // 6-7: read-only token: can read, cannot write.
    let reader = server.token("reader", &[d], true, "1h");
    let mut ws = dial(&server.url(&reader), None).await.unwrap();
    let sid = join(&mut ws, "reader-peer").await.unwrap();
    send(
        &mut ws,
        &sync_msg("reader-peer", &sid, d, &Automerge::new(), true),
    )
    .await;
    assert!(
        matches!(next(&mut ws).await, Ok(Message::Sync { .. })),
        "a reader gets the document"
    );
    let mut evil = Automerge::new();
    evil.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(ROOT, "secret", "overwritten").map(|_| ())
    })
    .unwrap();
    send(&mut ws, &changes_msg("reader-peer", &sid, d, &evil)).await;
    let mut refused = false;
    for _ in 0..5 {
        if let Ok(Message::Error { message, .. }) = next(&mut ws).await {
            refused |= message.contains("read-only");
            if refused {
                break;
            }
        }
    }
    assert!(
        refused,
        "a read-only peer's changes are refused with an error"
    );
    cases += 2;
    canary.check("read-only write").await;
    assert_eq!(
        canary.doc.to_json().unwrap()["secret"],
        "canary data",
        "nothing was applied"
    );

    // 8: a document outside the grant is unavailable (no existence leak).
    let other = DocumentId::from_bytes([0x77; 16]);
    let narrow = server.token("narrow", &[other], false, "1h");
    let mut ws = dial(&server.url(&narrow), None).await.unwrap();
    let sid = join(&mut ws, "narrow-peer").await.unwrap();
    send(
        &mut ws,
        &sync_msg("narrow-peer", &sid, d, &Automerge::new(), true),
    )
    .await;
    assert!(
        matches!(next(&mut ws).await, Ok(Message::DocUnavailable { document_id, .. }) if document_id == d)
    );
    cases += 1;

    // 9-10: another principal joining with a taken peer id is accepted (nobody can lock anybody
    // out; it speaks under a namespaced id: `hostile_round2.rs`), and does not displace the
    // holder; the same principal joining again replaces its older connection.
    let alice = server.token("alice", &[], false, "1h");
    let mallory = server.token("mallory", &[], false, "1h");
    let mut a1 = dial(&server.url(&alice), None).await.unwrap();
    join(&mut a1, "alice-phone").await.unwrap();
    let mut m = dial(&server.url(&mallory), None).await.unwrap();
    join(&mut m, "alice-phone")
        .await
        .expect("a squatter is accepted, under its own namespace");
    let mut a2 = dial(&server.url(&alice), None).await.unwrap();
    join(&mut a2, "alice-phone")
        .await
        .expect("alice is never locked out of her peer id");
    assert_eq!(
        until_closed(&mut a1).await.0,
        Some(CloseCode::Policy),
        "the older connection is replaced"
    );
    drop(m);
    cases += 2;
    canary.check("peer id takeover").await;

    // 11: connections per principal.
    let mut held = Vec::new();
    let flood = server.token("flood", &[], false, "1h");
    let mut refused_at = None;
    for i in 0..12 {
        match dial(&server.url(&flood), None).await {
            Ok(ws) => held.push(ws),
            Err(status) => {
                assert_eq!(status, 429);
                refused_at = Some(i);
                break;
            }
        }
    }
    assert_eq!(
        refused_at,
        Some(8),
        "the 9th connection of one principal is refused"
    );
    drop(held);
    cases += 1;
    canary.check("connection flood").await;

    // 12: message-rate flood.
    let mut ws = dial(&server.url(&admin), None).await.unwrap();
    let sid = join(&mut ws, "chatty").await.unwrap();
    for _ in 0..400 {
        send(
            &mut ws,
            &sync_msg("chatty", &sid, d, &Automerge::new(), true),
        )
        .await;
    }
    let (code, _) = until_closed(&mut ws).await;
    assert_eq!(code, Some(CloseCode::Policy), "rate limit closes with 1008");
    cases += 1;
    canary.check("rate flood").await;

    // 13: slowloris handshake.
    let mut ws = dial(&server.url(&admin), None).await.unwrap();
    let started = std::time::Instant::now();
    let (code, _) = until_closed(&mut ws).await;
    assert_eq!(code, Some(CloseCode::Policy));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "handshake timeout took {:?}",
        started.elapsed()
    );
    cases += 1;

    // 14: idle connection.
    let mut ws = dial(&server.url(&admin), None).await.unwrap();
    join(&mut ws, "sleepy").await.unwrap();
    let (code, _) = until_closed(&mut ws).await;
    assert_eq!(
        code,
        Some(CloseCode::Away),
        "idle connections close with 1001"
    );
    cases += 1;

    // 15: token expiring during the connection.
    let short = server.token("short", &[], false, "2s");
    let mut ws = dial(&server.url(&short), None).await.unwrap();
    join(&mut ws, "short-lived").await.unwrap();
    let (code, _) = until_closed(&mut ws).await;
    assert_eq!(
        code,
        Some(CloseCode::Policy),
        "an expired token ends the connection"
    );
    cases += 1;
    canary.check("expiry").await;

    // 16-19: malformed frames.
    let mut ws = dial(&server.url(&admin), None).await.unwrap();
    let sid = join(&mut ws, "fuzzy").await.unwrap();
    for junk in [vec![0xff], vec![0xbf, 0x61], b"\x82\xa1".to_vec()] {
        ws.send(Ws::Binary(junk.into())).await.unwrap();
        assert!(
            matches!(next(&mut ws).await, Ok(Message::Error { .. })),
            "garbage/truncated frame answered with an error"
        );
    }
    let unknown = ciborium_map(&[("type", "teleport"), ("senderId", "fuzzy")]);
    ws.send(Ws::Binary(unknown.into())).await.unwrap();
    assert!(
        matches!(next(&mut ws).await, Ok(Message::Error { message, .. }) if message.contains("unknown message type"))
    );
    send(
        &mut ws,
        &Message::Sync {
            sender_id: PeerId::from("fuzzy"),
            target_id: sid.clone(),
            document_id: d,
            data: vec![0x42, 0xff, 0xff],
        },
    )
    .await;
    assert!(
        matches!(next(&mut ws).await, Ok(Message::Error { .. })),
        "undecodable sync data"
    );
    cases += 4;
    canary.check("malformed frames").await;

    // 20: duplicate (actor, seq) with different content.
    let actor = ActorId::from([9u8; 16]);
    let mut first = Automerge::new().with_actor(actor.clone());
    first
        .transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "x", 1).map(|_| ()))
        .unwrap();
    let mut second = Automerge::new().with_actor(actor);
    second
        .transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "x", 2).map(|_| ()))
        .unwrap();
    let target = DocumentId::from_bytes([0x55; 16]);
    send(&mut ws, &changes_msg("fuzzy", &sid, target, &first)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&mut ws, &changes_msg("fuzzy", &sid, target, &second)).await;
    let mut apply_error = false;
    for _ in 0..6 {
        match tokio::time::timeout(Duration::from_secs(2), next(&mut ws)).await {
            Ok(Ok(Message::Error { message, .. })) => {
                apply_error = message.contains("could not be applied");
                if apply_error {
                    break;
                }
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    assert!(
        apply_error,
        "a conflicting duplicate of (actor, seq) is refused"
    );
    cases += 1;
    canary.check("duplicate seq").await;

    // 21: oversized message.
    let _ = ws.send(Ws::Binary(vec![0u8; 100_000].into())).await;
    let (code, _) = until_closed(&mut ws).await;
    assert!(
        code.is_none() || code == Some(CloseCode::Size),
        "oversized: {code:?}"
    );
    cases += 1;
    canary.check("oversized").await;

    // 22: a flood of changes whose dependencies never arrive is capped (default 256 per document).
    let mut ws = dial(&server.url(&admin), None).await.unwrap();
    let sid = join(&mut ws, "orphans").await.unwrap();
    let mut base = Automerge::new();
    base.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "base", 0).map(|_| ()))
        .unwrap();
    let orphan_doc = DocumentId::from_bytes([0x66; 16]);
    let mut capped = false;
    'flood: for round in 0..20i64 {
        let mut chunks = Vec::new();
        for i in 0..20i64 {
            let mut fork = base.fork();
            fork.transact::<_, _, automerge::AutomergeError>(|tx| {
                tx.put(ROOT, "k", round * 100 + i).map(|_| ())
            })
            .unwrap();
            chunks.push(fork.get_last_local_change().unwrap().raw_bytes().to_vec());
        }
        let mut msg = automerge::sync::Message::decode(
            &base
                .generate_sync_message(&mut automerge::sync::State::new())
                .unwrap()
                .encode(),
        )
        .unwrap();
        msg.changes = automerge::sync::ChunkList::from(chunks);
        send(
            &mut ws,
            &Message::Sync {
                sender_id: PeerId::from("orphans"),
                target_id: sid.clone(),
                document_id: orphan_doc,
                data: msg.encode(),
            },
        )
        .await;
        while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(150), next(&mut ws)).await
        {
            if let Message::Error { message, .. } = m {
                if message.contains("missing dependencies") {
                    capped = true;
                    break 'flood;
                }
            }
        }
    }
    assert!(
        capped,
        "changes with missing dependencies are capped with an error"
    );
    cases += 1;
    canary.check("orphan changes").await;

    // 24: a compression bomb: a small document chunk that inflates to 8 MiB (limit 1 MiB).
    let mut ws = dial(&server.url(&admin), None).await.unwrap();
    let sid = join(&mut ws, "bomber").await.unwrap();
    let mut bomb = Automerge::new();
    bomb.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(ROOT, "s", "a".repeat(8 << 20)).map(|_| ())
    })
    .unwrap();
    let saved = bomb.save();
    assert!(
        saved.len() < 60_000,
        "the bomb fits in one message ({} bytes)",
        saved.len()
    );
    let mut msg = automerge::sync::Message::decode(
        &bomb
            .generate_sync_message(&mut automerge::sync::State::new())
            .unwrap()
            .encode(),
    )
    .unwrap();
    msg.changes = automerge::sync::ChunkList::from(vec![saved]);
    let started = std::time::Instant::now();
    send(
        &mut ws,
        &Message::Sync {
            sender_id: PeerId::from("bomber"),
            target_id: sid.clone(),
            document_id: DocumentId::from_bytes([0x88; 16]),
            data: msg.encode(),
        },
    )
    .await;
    let mut defused = false;
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), next(&mut ws)).await {
        if let Message::Error { message, .. } = m {
            defused = message.contains("decompress");
            break;
        }
    }
    assert!(
        defused && started.elapsed() < Duration::from_secs(1),
        "the bomb is refused with an error within 1 s"
    );
    cases += 1;
    canary.check("compression bomb").await;

    // 26: a small change whose run-length-encoded columns declare 2 million operations (the
    // default limit is 1 million per message): refused before Automerge verifies them.
    let bomb = crafted_change(2_000_000, 1, 1);
    assert!(bomb.len() < 1024, "the op bomb is {} bytes", bomb.len());
    let started = std::time::Instant::now();
    let refused = send_chunk(&mut ws, "bomber", &sid, bomb).await;
    assert!(
        refused.as_deref().is_some_and(|m| m.contains("operations"))
            && started.elapsed() < Duration::from_secs(1),
        "the op bomb is refused with an error within 1 s: {refused:?}"
    );
    cases += 1;
    canary.check("op bomb").await;

    // 27: huge sequence and operation numbers: a typed error, nothing applied.
    let huge = crafted_change(1, 1 << 62, 1 << 40);
    let started = std::time::Instant::now();
    let refused = send_chunk(&mut ws, "bomber", &sid, huge).await;
    assert!(
        refused.is_some() && started.elapsed() < Duration::from_secs(1),
        "huge sequence numbers are refused with an error within 1 s"
    );
    cases += 1;
    canary.check("huge sequence numbers").await;

    // 25: a dropped-message sync loop: a peer replays the same stale sync message over and over
    // (as after lost answers); the server answers each but never starts an exchange of its own.
    let stale = sync_msg("bomber", &sid, d, &Automerge::new(), true);
    for _ in 0..20 {
        send(&mut ws, &stale).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut answers = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), next(&mut ws)).await {
        answers += 1;
        assert!(answers <= 40, "the server keeps talking: a sync loop");
    }
    assert!(answers >= 1, "replays are answered");
    cases += 1;
    canary.check("sync loop").await;

    // 26-27: fragmented messages: a join split into continuation frames is reassembled and
    // answered; fragments adding up past the size limit close the connection (1009).
    {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let mut ws = dial(&server.url(&admin), None).await.unwrap();
        let join_bytes = wire::encode(&Message::Join {
            sender_id: PeerId::from("fragments"),
            peer_metadata: None,
            supported_protocol_versions: vec!["1".into()],
        });
        let third = join_bytes.len() / 3;
        let parts = [
            &join_bytes[..third],
            &join_bytes[third..2 * third],
            &join_bytes[2 * third..],
        ];
        for (i, part) in parts.iter().enumerate() {
            let op = if i == 0 {
                OpCode::Data(Data::Binary)
            } else {
                OpCode::Data(Data::Continue)
            };
            ws.send(Ws::Frame(Frame::message(
                part.to_vec(),
                op,
                i == parts.len() - 1,
            )))
            .await
            .unwrap();
        }
        assert!(
            matches!(next(&mut ws).await, Ok(Message::Peer { .. })),
            "a fragmented join is answered"
        );
        cases += 1;
        let chunk = vec![0u8; 16 * 1024];
        let mut closed = false;
        for i in 0..16 {
            let op = if i == 0 {
                OpCode::Data(Data::Binary)
            } else {
                OpCode::Data(Data::Continue)
            };
            if ws
                .send(Ws::Frame(Frame::message(chunk.clone(), op, false)))
                .await
                .is_err()
            {
                closed = true;
                break;
            }
        }
        if !closed {
            let (code, _) = until_closed(&mut ws).await;
            assert!(
                code.is_none() || code == Some(CloseCode::Size),
                "fragments past the limit: {code:?}"
            );
        }
        cases += 1;
        canary.check("fragmented messages").await;
    }

    // 28: revocation during a connection: the connection closes (1008) and the token is refused.
    let doomed = server.token("revokee", &[], false, "1h");
    let mut ws = dial(&server.url(&doomed), None).await.unwrap();
    join(&mut ws, "revokee-peer").await.unwrap();
    let listed = get_with_token(&server.addr, "/v1/docs", Some(&doomed)).await;
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    assert!(
        !listed.contains(&d.to_string()),
        "another principal's document: {listed}"
    );
    // The canary's principal created `d`: it is listed, and its changes are attributed.
    let listed = get_with_token(&server.addr, "/v1/docs", Some(&admin)).await;
    assert!(
        listed.contains(&format!("\"id\":\"{d}\"")) && listed.contains("\"created\""),
        "{listed}"
    );
    let authors =
        get_with_token(&server.addr, &format!("/v1/docs/{d}/authors"), Some(&admin)).await;
    assert!(authors.contains("\"principal\":\"canary\""), "{authors}");
    let out = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["token", "revoke"])
        .args(server.store_args())
        .args(["--principal", "revokee"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = std::time::Instant::now();
    let (code, _) = until_closed(&mut ws).await;
    assert_eq!(
        code,
        Some(CloseCode::Policy),
        "a revoked token ends its connection"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "revocation took {:?}",
        started.elapsed()
    );
    assert_eq!(
        dial(&server.url(&doomed), None).await.err(),
        Some(401),
        "a revoked token is refused"
    );
    // The JSON API too (`GET /v1/docs`), on either backend.
    let listed = get_with_token(&server.addr, "/v1/docs", Some(&doomed)).await;
    assert!(listed.starts_with("HTTP/1.1 401"), "{listed}");
    cases += 1;
    canary.check("revocation").await;

    // 23: a non-WebSocket request to the sync endpoint.
    let body = reqwest_like_get(&server.addr, "/sync").await;
    assert!(body.starts_with("HTTP/1.1 4"), "{body}");
    cases += 1;

    // Nothing stored was lost, and memory stayed bounded.
    let fresh = Repo::open(
        Arc::new(MemoryStorage::new()),
        RepoConfig::default().with_server(server.url(&admin)),
    )
    .await
    .unwrap();
    fresh.wait_connected(WAIT).await.unwrap();
    let again = fresh.find(d).await.unwrap();
    assert_eq!(again.to_json().unwrap()["secret"], "canary data");
    let rss_end = server.rss_kib();
    println!("{cases} hostile cases; server RSS {rss_start} KiB -> {rss_end} KiB");
    assert!(cases >= 20);
    assert!(
        rss_end < rss_start + 200 * 1024,
        "server memory grew from {rss_start} to {rss_end} KiB"
    );
    fresh.shutdown().await;
    canary.repo.shutdown().await;
}
