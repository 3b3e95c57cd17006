//! Hostile peers, round 2 (issue #15): availability and resource bounds. Each case runs against a
//! real `concord serve` process with a canary client that must keep syncing. Every case failed
//! on the build before the fixes (set `CONCORD_HOSTILE_BIN` to an older `concord` to see it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The shared harness has helpers only the first suite uses.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ROOT};
use concord::storage::MemoryStorage;
use concord::wire::{Message, PeerMetadata, RemoteHeads};
use concord::{DocHandle, DocumentId, PeerId, Repo, RepoConfig, StorageId};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

mod common;

use common::ws::{Socket, next_within, send_msg};

include!("hostile/harness.rs");

hostile_cases!(
    a_malformed_bloom_filter_costs_only_its_sender,
    presence_cannot_be_forged_or_silenced,
    a_peer_id_cannot_be_squatted,
    storage_ids_are_bounded_capped_and_expire,
    per_document_state_leaves_with_the_document,
    one_writer_cannot_stall_everyone,
    ephemeral_fan_out_is_rate_limited
);

async fn canary(server: &Server) -> Canary {
    let token = server.token("canary", &[], false, "1h");
    let mut config = RepoConfig::default().with_server(server.url(&token));
    config.backoff.initial = Duration::from_millis(20);
    let repo = Repo::open(Arc::new(MemoryStorage::new()), config)
        .await
        .unwrap();
    repo.wait_connected(WAIT).await.unwrap();
    let doc = repo.create().await.unwrap();
    doc.change(|tx| tx.put(ROOT, "secret", "canary data"))
        .await
        .unwrap();
    let mut c = Canary {
        repo,
        doc,
        round: 0,
    };
    c.check("setup").await;
    c
}

async fn join_as(
    ws: &mut Socket,
    id: &str,
    storage: Option<&str>,
) -> Result<PeerId, Option<CloseCode>> {
    send(
        ws,
        &Message::Join {
            sender_id: PeerId::from(id),
            peer_metadata: Some(PeerMetadata {
                storage_id: storage.map(StorageId::from),
                ..PeerMetadata::default()
            }),
            supported_protocol_versions: vec!["1".into()],
        },
    )
    .await;
    loop {
        match next(ws).await? {
            Message::Peer { sender_id, .. } => return Ok(sender_id),
            Message::Error { .. } => {}
            other => panic!("expected peer, got {other:?}"),
        }
    }
}

/// Collects the messages arriving within `for_`, until the connection closes.
async fn drain(ws: &mut Socket, for_: Duration) -> Vec<Message> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + for_;
    while let Ok(r) = tokio::time::timeout_at(end, next_within(ws, for_ * 2)).await {
        match r {
            Ok(m) => out.push(m),
            Err(_) => break,
        }
    }
    out
}

fn errors(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Error { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn ephemeral(
    from: &str,
    to: &PeerId,
    doc: DocumentId,
    session: &str,
    count: u64,
    data: &[u8],
) -> Message {
    Message::Ephemeral {
        sender_id: PeerId::from(from),
        target_id: to.clone(),
        document_id: doc,
        session_id: session.into(),
        count,
        data: data.to_vec(),
    }
}

fn healthz(server: &Server) -> u16 {
    let addr = server.addr.clone();
    let answer = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf
    })
    .join()
    .unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

async fn a_malformed_bloom_filter_costs_only_its_sender(backend: Backend) {
    let server = Server::start(backend);
    let mut canary = canary(&server).await;
    let d = canary.doc.id();
    let reader = server.token("reader", &[d], true, "1h");
    let mut ws = dial(&server.url(&reader), None).await.unwrap();
    let sid = join(&mut ws, "reader").await.unwrap();

    // 1 entry, 0 bits per entry, 7 probes: Automerge divides by zero while the engine works.
    let zero_bits = vec![0x42, 0, 0, 1, 0, 3, 1, 0, 7, 0];
    // 1 entry, 8 bits, 2^30 probes: every lookup loops a billion times.
    let many_probes = vec![
        0x42, 0, 0, 1, 0, 8, 1, 8, 0x80, 0x80, 0x80, 0x80, 0x04, 0xFF, 0,
    ];
    for (name, data) in [("zero bits", zero_bits), ("2^30 probes", many_probes)] {
        let started = Instant::now();
        send(
            &mut ws,
            &Message::Sync {
                sender_id: PeerId::from("reader"),
                target_id: sid.clone(),
                document_id: d,
                data,
            },
        )
        .await;
        let seen = drain(&mut ws, Duration::from_millis(800)).await;
        let errs = errors(&seen);
        assert!(
            errs.iter().any(|e| e.contains("bloom filter")),
            "{name}: refused with an error naming the filter, got {errs:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{name} took {:?}",
            started.elapsed()
        );
        canary.check(name).await;
    }
    // New connections still complete their handshake, and the server says it is healthy.
    let mut fresh = dial(&server.url(&reader), None).await.unwrap();
    join(&mut fresh, "fresh")
        .await
        .expect("a new peer is answered");
    assert_eq!(healthz(&server), 200);
}

async fn presence_cannot_be_forged_or_silenced(backend: Backend) {
    let server = Server::start(backend);
    let mut canary = canary(&server).await;
    let d = canary.doc.id();
    let alice_t = server.token("alice", &[d], false, "1h");
    let observer_t = server.token("observer", &[d], true, "1h");
    let mallory_t = server.token("mallory", &[d], true, "1h");
    let mut subscribed = Vec::new();
    for (token, id) in [
        (&alice_t, "alice-tab"),
        (&observer_t, "observer"),
        (&mallory_t, "mallory"),
    ] {
        let mut ws = dial(&server.url(token), None).await.unwrap();
        let sid = join(&mut ws, id).await.unwrap();
        send(&mut ws, &sync_msg(id, &sid, d, &Automerge::new(), true)).await;
        let _ = drain(&mut ws, Duration::from_millis(300)).await;
        subscribed.push((ws, sid));
    }
    let [(mut alice, sid), (mut observer, _), (mut mallory, _)] =
        <[_; 3]>::try_from(subscribed).ok().unwrap();

    // Mallory writes alice's sender id, her session, and a huge counter.
    let huge = 1u64 << 53;
    send(
        &mut mallory,
        &ephemeral("alice-tab", &sid, d, "s1", huge, b"forged"),
    )
    .await;
    // Alice's own next cursor update.
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(
        &mut alice,
        &ephemeral("alice-tab", &sid, d, "s1", 1, b"real"),
    )
    .await;
    let seen = drain(&mut observer, Duration::from_millis(800)).await;
    let from_of = |data: &[u8]| {
        seen.iter().find_map(|m| match m {
            Message::Ephemeral {
                sender_id, data: x, ..
            } if x == data => Some(sender_id.clone()),
            _ => None,
        })
    };
    let forged = from_of(b"forged");
    assert!(
        forged.as_ref().is_none_or(|s| s.as_str() != "alice-tab"),
        "mallory's message reached the observer as alice's: {forged:?}"
    );
    assert_eq!(
        from_of(b"real").map(|s| s.as_str().to_owned()),
        Some("alice-tab".to_owned()),
        "alice's update reaches the observer, under her id"
    );
    canary.check("presence").await;
}

async fn a_peer_id_cannot_be_squatted(backend: Backend) {
    let server = Server::start(backend);
    let mut canary = canary(&server).await;
    let d = canary.doc.id();
    let alice_t = server.token("alice", &[d], false, "1h");
    let mallory_t = server.token("mallory", &[d], true, "1h");
    let observer_t = server.token("observer", &[d], true, "1h");
    let mut observer = dial(&server.url(&observer_t), None).await.unwrap();
    let osid = join(&mut observer, "observer").await.unwrap();
    send(
        &mut observer,
        &sync_msg("observer", &osid, d, &Automerge::new(), true),
    )
    .await;

    // Alice is seen, then drops.
    let mut alice = dial(&server.url(&alice_t), None).await.unwrap();
    join(&mut alice, "alice-laptop").await.unwrap();
    drop(alice);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Mallory takes her peer id and stays.
    let mut mallory = dial(&server.url(&mallory_t), None).await.unwrap();
    let msid = join(&mut mallory, "alice-laptop").await.unwrap();
    send(
        &mut mallory,
        &sync_msg("alice-laptop", &msid, d, &Automerge::new(), true),
    )
    .await;
    // Alice comes back: she is let in.
    let mut alice = dial(&server.url(&alice_t), None).await.unwrap();
    join(&mut alice, "alice-laptop")
        .await
        .expect("alice reconnects with her peer id while the squatter stays");
    // What the squatter says does not appear as alice's.
    let _ = drain(&mut observer, Duration::from_millis(300)).await;
    send(
        &mut mallory,
        &ephemeral("alice-laptop", &msid, d, "m", 1, b"squatter"),
    )
    .await;
    let seen = drain(&mut observer, Duration::from_millis(800)).await;
    for m in &seen {
        if let Message::Ephemeral {
            sender_id, data, ..
        } = m
            && data == b"squatter"
        {
            assert_ne!(
                sender_id.as_str(),
                "alice-laptop",
                "the squatter speaks under its own id"
            );
        }
    }
    canary.check("squatting").await;
}

async fn storage_ids_are_bounded_capped_and_expire(backend: Backend) {
    let server = Server::start_env(
        backend,
        &[],
        &[
            ("CONCORD_QUOTA_STORAGE_IDS", "8"),
            ("CONCORD_SYNC_STATE_TTL_SECS", "3"),
        ],
    );
    let mut canary = canary(&server).await;
    let d = canary.doc.id();
    let reader = server.token("reader", &[d], true, "1h");

    // A 60 KiB storage id is refused at the handshake.
    let mut ws = dial(&server.url(&reader), None).await.unwrap();
    let huge = "s".repeat(60 * 1024);
    assert!(
        join_as(&mut ws, "big", Some(&huge)).await.is_err(),
        "refused"
    );
    canary.check("huge storage id").await;

    // 20 connections of one read-only principal, each with its own storage id, sync the
    // canary's document: sync state is persisted for 8 of them at most.
    for i in 0..20 {
        let mut ws = dial(&server.url(&reader), None).await.unwrap();
        let sid_str = format!("00000000-0000-4000-8000-{i:012}");
        let sid = join_as(&mut ws, &format!("r{i}"), Some(&sid_str))
            .await
            .unwrap();
        send(
            &mut ws,
            &sync_msg(&format!("r{i}"), &sid, d, &Automerge::new(), true),
        )
        .await;
        let _ = drain(&mut ws, Duration::from_millis(150)).await;
    }
    let db = server.storage().await;
    let rows = db.load(&d).await.unwrap().sync_states.len();
    assert!(
        rows <= 9,
        "{rows} sync states persisted (8 for the reader, 1 for the canary)"
    );
    assert!(rows >= 2, "some sync state is persisted ({rows})");
    // Unused sync state expires.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = db.load(&d).await.unwrap().sync_states.len();
        if left <= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} sync states never expired"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    canary.check("storage ids").await;
}

async fn per_document_state_leaves_with_the_document(backend: Backend) {
    let server = Server::start_env(
        backend,
        &[],
        &[
            ("CONCORD_EVICT_IDLE_SECS", "1"),
            ("CONCORD_QUOTA_DOCS_PER_HOUR", "50"),
        ],
    );
    let mut canary = canary(&server).await;
    let writer = server.token("writer", &[], false, "1h");
    let rss_start = server.rss_kib();

    // Ephemeral messages and heads gossip about 2,000 random document ids each.
    let heads: std::collections::BTreeMap<StorageId, RemoteHeads> = (0..16)
        .map(|i| {
            (
                StorageId::new(format!("00000000-0000-4000-8000-{i:012}")),
                RemoteHeads {
                    heads: (0..32)
                        .map(|j| concord::id::encode_head(&automerge::ChangeHash([j as u8; 32])))
                        .collect(),
                    timestamp: 1.0,
                },
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for c in 0..4 {
        let (url, heads) = (server.url(&writer), heads.clone());
        tasks.push(tokio::spawn(async move {
            let mut ws = dial(&url, None).await.unwrap();
            let sid = join(&mut ws, &format!("w{c}")).await.unwrap();
            for i in 0..500u64 {
                let doc = DocumentId::from_bytes(rand_bytes());
                send(
                    &mut ws,
                    &ephemeral(&format!("w{c}"), &sid, doc, "s", i + 1, b"hi"),
                )
                .await;
                let gossip = Message::RemoteHeadsChanged {
                    sender_id: PeerId::new(format!("w{c}")),
                    target_id: sid.clone(),
                    document_id: DocumentId::from_bytes(rand_bytes()),
                    new_heads: heads.clone(),
                };
                send(&mut ws, &gossip).await;
                if i % 40 == 39 {
                    // Stay within the suite's 100 messages per second per connection.
                    tokio::time::sleep(Duration::from_millis(900)).await;
                }
            }
            drop(ws);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    canary.check("ephemeral and gossip to random ids").await;
    let grown = server.rss_kib().saturating_sub(rss_start);
    assert!(
        grown < 12 * 1024,
        "RSS grew by {grown} KiB for documents nobody holds"
    );

    // Creating documents is limited per principal and per hour.
    let mut ws = dial(&server.url(&writer), None).await.unwrap();
    let sid = join(&mut ws, "creator").await.unwrap();
    let mut refused = None;
    for i in 0..70 {
        let mut am = Automerge::new();
        am.transact(|tx| tx.put(ROOT, "n", i as i64)).unwrap();
        send(
            &mut ws,
            &changes_msg("creator", &sid, DocumentId::from_bytes(rand_bytes()), &am),
        )
        .await;
        let errs = errors(&drain(&mut ws, Duration::from_millis(60)).await);
        if errs
            .iter()
            .any(|e| e.contains("documents created per hour"))
        {
            refused = Some(i);
            break;
        }
        if i % 30 == 29 {
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    assert!(
        refused.is_some_and(|i| (50..=60).contains(&i)),
        "the 51st document of the hour is refused (refused at {refused:?})"
    );
    canary.check("document creation quota").await;
}

async fn one_writer_cannot_stall_everyone(backend: Backend) {
    let server = Server::start(backend);
    let mut canary = canary(&server).await;
    let writer = server.token("heavy", &[], false, "1h");
    let mut ws = dial(&server.url(&writer), None).await.unwrap();
    let sid = join(&mut ws, "heavy").await.unwrap();
    // Six messages of 150,000 operations each (under the per-message cap), to its own
    // documents, back to back.
    let attack = tokio::spawn(async move {
        let mut errs = Vec::new();
        for _ in 0..6 {
            let chunk = crafted_change(150_000, 1, 1);
            if let Some(e) = send_chunk(&mut ws, "heavy", &sid, chunk).await {
                errs.push(e);
            }
        }
        errs
    });
    // The canary keeps its latency meanwhile.
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        canary.check("during the heavy writer").await;
        worst = worst.max(t.elapsed());
    }
    let errs = attack.await.unwrap();
    assert!(
        errs.iter().any(|e| e.contains("operations per second")),
        "the heavy writer is charged by cost: {errs:?}"
    );
    assert!(
        worst < Duration::from_secs(3),
        "the canary waited {worst:?}"
    );
}

async fn ephemeral_fan_out_is_rate_limited(backend: Backend) {
    let server = Server::start(backend);
    let mut canary = canary(&server).await;
    let d = canary.doc.id();
    let sender_t = server.token("sender", &[d], false, "1h");
    let reader_t = server.token("readers", &[d], true, "1h");
    let mut readers = Vec::new();
    for i in 0..3 {
        let mut ws = dial(&server.url(&reader_t), None).await.unwrap();
        let id = format!("reader{i}");
        let sid = join(&mut ws, &id).await.unwrap();
        send(&mut ws, &sync_msg(&id, &sid, d, &Automerge::new(), true)).await;
        let _ = drain(&mut ws, Duration::from_millis(200)).await;
        readers.push(ws);
    }
    let mut sender = dial(&server.url(&sender_t), None).await.unwrap();
    let sid = join(&mut sender, "sender").await.unwrap();
    send(
        &mut sender,
        &sync_msg("sender", &sid, d, &Automerge::new(), true),
    )
    .await;
    // 2 MiB of presence in 32 KiB messages, as fast as possible.
    let blob = vec![7u8; 32 * 1024];
    for i in 0..64 {
        send(
            &mut sender,
            &ephemeral("sender", &sid, d, "flood", i + 1, &blob),
        )
        .await;
    }
    let told = errors(&drain(&mut sender, Duration::from_millis(500)).await);
    assert!(
        told.iter()
            .any(|e| e.contains("ephemeral bytes per second")),
        "the sender is told its messages are dropped: {told:?}"
    );
    for mut r in readers {
        let got: usize = drain(&mut r, Duration::from_millis(500))
            .await
            .iter()
            .map(|m| match m {
                Message::Ephemeral { data, .. } => data.len(),
                _ => 0,
            })
            .sum();
        assert!(
            got < 1024 * 1024,
            "a reader received {got} bytes of a 2 MiB flood"
        );
    }
    canary.check("ephemeral flood").await;
}
