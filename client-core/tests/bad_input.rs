//! Bad input fed straight into a [`Core`]: it must never panic, must report a typed
//! [`ProtocolError`] (and tell the peer with an `error` message), close the connection only when
//! the handshake is at stake or the peer keeps misbehaving, and otherwise keep syncing the same
//! connection's other documents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::Arc;

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ReadDoc, sync};
use ciborium::Value;
use concord::core::{
    CloseReason, Core, CoreConfig, Effect, Event, Limits, ProtocolError, ServerPolicy,
};
use concord::storage::MemoryStorage;
use concord::wire::{self, DecodeError, Message, PeerMetadata};
use concord::{ConnId, DocumentId, PeerId, StorageId};

// The two-node harness (a server core and a client core shuttling frames) and frame builders.
include!("bad_input/harness.rs");

#[test]
fn truncated_cbor_of_a_valid_message() {
    for cut in [1usize, 7, 20] {
        rejected_after_handshake(
            Limits::default(),
            |doc| {
                let full = sync_frame(doc, vec![0x42, 0, 0, 0]);
                full[..full.len() - cut].to_vec()
            },
            |e| matches!(e, ProtocolError::Decode(DecodeError::Cbor(_))),
        );
    }
}

#[test]
fn garbage_bytes() {
    let frames: [&[u8]; 4] = [
        &[0xff, 0xfe, 0xfd, 0x00, 0x13, 0x37],
        &[0x1c], // reserved additional information
        &[],
        b"\xbf\x61", // indefinite map, truncated key
    ];
    for frame in frames {
        rejected_after_handshake(
            Limits::default(),
            |_| frame.to_vec(),
            |e| matches!(e, ProtocolError::Decode(DecodeError::Cbor(_))),
        );
    }
    // A valid message followed by junk is refused as a whole.
    rejected_after_handshake(
        Limits::default(),
        |doc| {
            let mut f = sync_frame(doc, vec![0x42, 0, 0, 0]);
            f.extend_from_slice(&[0x01, 0x02]);
            f
        },
        |e| matches!(e, ProtocolError::Decode(DecodeError::Cbor(m)) if m.contains("trailing")),
    );
}

#[test]
fn cbor_that_is_not_a_map() {
    let values = [
        Value::Integer(7.into()),
        Value::Array(vec![text("type"), text("sync")]),
        text("sync"),
        Value::Bytes(vec![1, 2, 3]),
        Value::Null,
    ];
    for v in values {
        rejected_after_handshake(
            Limits::default(),
            |_| cbor(&v),
            |e| matches!(e, ProtocolError::Decode(DecodeError::NotAMap)),
        );
    }
}

#[test]
fn wrong_field_types() {
    let cases: [(&str, Value, &str); 5] = [
        ("senderId", Value::Integer(4.into()), "senderId"),
        ("targetId", Value::Array(vec![]), "targetId"),
        ("documentId", Value::Bool(true), "documentId"),
        ("data", text("not bytes"), "data"),
        ("type", Value::Integer(1.into()), "type"),
    ];
    for (key, value, field) in cases {
        rejected_after_handshake(
            Limits::default(),
            |doc| sync_map_with(doc, key, value.clone()),
            |e| matches!(e, ProtocolError::Decode(DecodeError::WrongType { field: f, .. }) if *f == field),
        );
    }
    // A missing required field and an undecodable document id are typed too.
    rejected_after_handshake(
        Limits::default(),
        |doc| sync_map_with(doc, "senderId", Value::Null),
        |e| {
            matches!(
                e,
                ProtocolError::Decode(DecodeError::MissingField {
                    field: "senderId",
                    ..
                })
            )
        },
    );
    rejected_after_handshake(
        Limits::default(),
        |doc| sync_map_with(doc, "documentId", text("not-a-document-id!")),
        |e| matches!(e, ProtocolError::Decode(DecodeError::DocumentId(_))),
    );
    rejected_after_handshake(
        Limits::default(),
        |doc| sync_map_with(doc, "documentId", Value::Bytes(vec![1; 15])),
        |e| matches!(e, ProtocolError::Decode(DecodeError::DocumentId(_))),
    );
}

#[test]
fn zero_length_sync_data() {
    rejected_after_handshake(
        Limits::default(),
        |doc| sync_frame(doc, Vec::new()),
        |e| matches!(e, ProtocolError::Decode(DecodeError::EmptyData(t)) if t == "sync"),
    );
    rejected_after_handshake(
        Limits::default(),
        |doc| {
            wire::encode(&Message::Request {
                sender_id: PeerId::from("client"),
                target_id: PeerId::from("server"),
                document_id: doc,
                data: Vec::new(),
            })
        },
        |e| matches!(e, ProtocolError::Decode(DecodeError::EmptyData(t)) if t == "request"),
    );
}

#[test]
fn oversized_frame() {
    let limits = Limits {
        max_message_bytes: 1_024,
        ..Limits::default()
    };
    rejected_after_handshake(
        limits,
        |doc| sync_frame(doc, vec![0x42; 4_000]),
        |e| matches!(e, ProtocolError::Decode(DecodeError::TooLarge { max: 1_024, size }) if *size > 4_000),
    );
}

#[test]
fn unknown_message_type() {
    rejected_after_handshake(
        Limits::default(),
        |_| {
            cbor(&Value::Map(vec![
                (text("type"), text("teleport")),
                (text("senderId"), text("client")),
            ]))
        },
        |e| matches!(e, ProtocolError::Decode(DecodeError::UnknownType(t)) if t == "teleport"),
    );
    rejected_after_handshake(
        Limits::default(),
        |_| cbor(&Value::Map(vec![(text("senderId"), text("client"))])),
        |e| {
            matches!(
                e,
                ProtocolError::Decode(DecodeError::MissingField { field: "type", .. })
            )
        },
    );
}

#[test]
fn sync_data_that_is_not_an_automerge_sync_message() {
    let datas: [&[u8]; 4] = [
        &[0x00],
        &[0x13, 0x37, 0x00],
        &[0x42],                   // the sync message tag and nothing else
        &[0x42, 0x05, 0xff, 0xff], // claims five heads, has none
    ];
    for data in datas {
        rejected_after_handshake(
            Limits::default(),
            |doc| sync_frame(doc, data.to_vec()),
            |e| matches!(e, ProtocolError::BadSyncMessage { doc, .. } if *doc == doc_id(1)),
        );
        // The same for a document the server never heard of.
        rejected_after_handshake(
            Limits::default(),
            |_| sync_frame(doc_id(9), data.to_vec()),
            |e| matches!(e, ProtocolError::BadSyncMessage { doc, .. } if *doc == doc_id(9)),
        );
    }
}

/// Encodes an Automerge sync message that decodes but carries `changes` as its change chunks.
fn sync_message_with_changes(heads: Vec<automerge::ChangeHash>, changes: Vec<Vec<u8>>) -> Vec<u8> {
    sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: sync::ChunkList::from(changes),
        flags: None,
        version: sync::MessageVersion::V1,
    }
    .encode()
}

#[test]
fn sync_whose_change_chunks_are_garbage() {
    // Automerge skips change chunks it cannot parse (a partial load), so this is not an error:
    // nothing is applied, nothing breaks, and the connection keeps syncing.
    for garbage in [
        vec![0xde, 0xad, 0xbe, 0xef],
        vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 0],
    ] {
        let data = sync_message_with_changes(Vec::new(), vec![garbage]);
        assert!(
            sync::Message::decode(&data).is_ok(),
            "the message itself decodes"
        );
        let (p, _) =
            bad_frame_between_valid_ones(Limits::default(), |doc| sync_frame(doc, data.clone()));
        assert!(p.server.protocol_errors(SC).is_empty());
        let (server, client) = (
            p.server.core.document(&doc_id(1)).unwrap(),
            p.client.core.document(&doc_id(1)).unwrap(),
        );
        assert_eq!(
            server.get_changes(&[]).len(),
            client.get_changes(&[]).len(),
            "nothing extra applied"
        );
    }
}

#[test]
fn sync_with_a_change_that_forks_the_senders_history() {
    // A change claiming to be the client's first change, with different content: the same
    // (actor, seq) as a change the server already holds.
    let forged = |doc: DocumentId| {
        let mut twin = Core::new(client_config());
        twin.create(NOW, doc).unwrap();
        let actor = twin.document(&doc).unwrap().get_actor().clone();
        let mut fork = Automerge::new().with_actor(actor);
        fork.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "n", 666).map(|_| ()))
            .unwrap();
        let change = fork.get_changes(&[]).pop().unwrap();
        sync_frame(
            doc,
            sync_message_with_changes(vec![change.hash()], vec![change.raw_bytes().to_vec()]),
        )
    };
    rejected_after_handshake(
        Limits::default(),
        forged,
        |e| matches!(e, ProtocolError::SyncApply { doc, .. } if *doc == doc_id(1)),
    );
}

#[test]
fn a_second_handshake_on_an_established_connection() {
    rejected_after_handshake(
        Limits::default(),
        |_| {
            wire::encode(&Message::Join {
                sender_id: PeerId::from("client"),
                peer_metadata: None,
                supported_protocol_versions: vec!["1".into()],
            })
        },
        |e| matches!(e, ProtocolError::UnexpectedHandshake("join")),
    );
}

#[test]
fn every_kind_of_bad_frame_on_one_connection_while_documents_sync() {
    let mut p = Pair::new(Limits::default());
    let docs: Vec<DocumentId> = (1..=4).map(doc_id).collect();
    let bad: Vec<Vec<u8>> = vec![
        vec![0xff, 0x00],
        cbor(&Value::Integer(1.into())),
        sync_map_with(docs[0], "data", text("x")),
        sync_frame(docs[0], Vec::new()),
        cbor(&Value::Map(vec![(text("type"), text("teleport"))])),
        sync_frame(docs[1], vec![0x42, 0x09]),
        sync_frame(docs[0], vec![0x42, 0, 0, 0])[..10].to_vec(),
    ];
    for (i, doc) in docs.iter().enumerate() {
        p.client_creates(*doc, i as i64);
    }
    // Interleave: one valid frame, one bad frame, ...
    let mut bad_iter = bad.iter();
    loop {
        let delivered = p.deliver_one_to_server();
        if let Some(b) = bad_iter.next() {
            p.feed_server(b);
        }
        if let Some(frame) = p.to_client.pop_front() {
            p.client.core.handle_message(NOW, CC, &frame);
            p.collect_client();
        } else if !delivered && bad_iter.len() == 0 {
            break;
        }
    }
    p.settle();
    assert_eq!(p.server.protocol_errors(SC).len(), bad.len());
    assert!(p.server.closed.is_empty());
    for (i, doc) in docs.iter().enumerate() {
        p.assert_server_has(*doc, i as i64);
    }
}

#[test]
fn a_message_before_the_handshake_closes_the_connection() {
    let doc = doc_id(1);
    let frames: Vec<(Vec<u8>, &str)> = vec![
        (sync_frame(doc, vec![0x42, 0, 0, 0]), "sync"),
        (
            wire::encode(&Message::DocUnavailable {
                sender_id: PeerId::from("client"),
                target_id: PeerId::from("server"),
                document_id: doc,
            }),
            "doc-unavailable",
        ),
        (
            wire::encode(&Message::Peer {
                sender_id: PeerId::from("client"),
                target_id: PeerId::from("server"),
                peer_metadata: None,
                selected_protocol_version: "1".into(),
            }),
            "peer",
        ),
    ];
    for (frame, ty) in frames {
        let mut server = Node::new(server_config(Limits::default()));
        server.core.handle_accept(NOW, SC);
        server.core.handle_message(NOW, SC, &frame);
        let sent = server.drive();
        assert!(
            matches!(server.protocol_errors(SC).as_slice(), [ProtocolError::BeforeHandshake(t)] if *t == ty),
            "{ty}: {:?}",
            server.events
        );
        assert_error_then_close(&sent, &server, 1002);
        assert!(server.core.peer(SC).is_none());
        assert!(server.core.document(&doc).is_none(), "nothing was applied");
        // A join after that is ignored: the connection is closing.
        server.core.handle_message(NOW, SC, &join(&["1"]));
        assert!(server.drive().is_empty());
        assert!(server.core.peer(SC).is_none());
    }

    // The dialling side too: a `sync` instead of `peer`.
    let mut client = Node::new(client_config());
    client.core.handle_connect(NOW, CC);
    let _join = client.drive();
    client
        .core
        .handle_message(NOW, CC, &sync_frame(doc, vec![0x42, 0, 0, 0]));
    let sent = client.drive();
    assert!(matches!(
        client.protocol_errors(CC).as_slice(),
        [ProtocolError::BeforeHandshake("sync")]
    ));
    assert_error_then_close(&sent, &client, 1002);
}

#[test]
fn bad_bytes_during_the_handshake_close_the_connection() {
    let frames: Vec<Vec<u8>> = vec![
        vec![0xff, 0xff, 0xff],
        cbor(&Value::Array(vec![])),
        cbor(&Value::Map(vec![
            (text("type"), text("join")),
            (text("senderId"), Value::Integer(3.into())),
        ])),
        join(&["1"])[..5].to_vec(),
    ];
    for frame in frames {
        let mut server = Node::new(server_config(Limits::default()));
        server.core.handle_accept(NOW, SC);
        server.core.handle_message(NOW, SC, &frame);
        let sent = server.drive();
        assert!(
            matches!(
                server.protocol_errors(SC).as_slice(),
                [ProtocolError::Decode(_)]
            ),
            "{:?}",
            server.events
        );
        assert_error_then_close(&sent, &server, 1002);
        assert!(server.core.peer(SC).is_none());
    }
}

fn join(versions: &[&str]) -> Vec<u8> {
    wire::encode(&Message::Join {
        sender_id: PeerId::from("client"),
        peer_metadata: Some(PeerMetadata {
            storage_id: Some(StorageId::from("client-store")),
            is_ephemeral: false,
            region: None,
            concord: false,
        }),
        supported_protocol_versions: versions.iter().map(|v| (*v).to_owned()).collect(),
    })
}

/// `sent` is exactly one `error` message, and the node asked to close the connection with `code`.
fn assert_error_then_close(sent: &[(ConnId, Vec<u8>)], node: &Node, code: u16) {
    match sent {
        [(_, bytes)] => {
            let msg = wire::decode(bytes, BIG).unwrap();
            assert!(
                matches!(msg, Message::Error { .. }),
                "expected an error message, got {msg:?}"
            );
        }
        other => panic!("expected exactly one frame, got {}", other.len()),
    }
    match node.closed.as_slice() {
        [(_, reason)] => assert_eq!(reason.code, code, "{reason:?}"),
        other => panic!("expected one close, got {other:?}"),
    }
}

#[test]
fn join_with_unsupported_protocol_versions_is_answered_with_an_error_and_closed() {
    for versions in [vec!["2"], vec!["0", "2", "1.0"], vec![]] {
        let mut server = Node::new(server_config(Limits::default()));
        server.core.handle_accept(NOW, SC);
        server.core.handle_message(NOW, SC, &join(&versions));
        let sent = server.drive();
        let expected: Vec<String> = versions.iter().map(|v| (*v).to_owned()).collect();
        assert!(
            matches!(server.protocol_errors(SC).as_slice(), [ProtocolError::UnsupportedVersion(v)] if *v == expected),
            "{:?}",
            server.events
        );
        match sent.as_slice() {
            [(conn, bytes)] => {
                assert_eq!(*conn, SC);
                match wire::decode(bytes, BIG).unwrap() {
                    Message::Error {
                        target_id, message, ..
                    } => {
                        assert_eq!(target_id, Some(PeerId::from("client")));
                        assert!(message.contains("unsupported protocol"), "{message}");
                    }
                    other => panic!("expected an error message, got {other:?}"),
                }
            }
            other => panic!("expected exactly one frame, got {other:?}"),
        }
        assert_error_then_close(&sent, &server, 1002);
        assert!(server.core.peer(SC).is_none(), "no peer was established");
        assert!(
            !server
                .events
                .iter()
                .any(|e| matches!(e, Event::PeerConnected { .. }))
        );
    }

    // The client side: a server that selects a version we do not speak.
    let mut client = Node::new(client_config());
    client.core.handle_connect(NOW, CC);
    let _join = client.drive();
    let peer = wire::encode(&Message::Peer {
        sender_id: PeerId::from("server"),
        target_id: PeerId::from("client"),
        peer_metadata: None,
        selected_protocol_version: "2".into(),
    });
    client.core.handle_message(NOW, CC, &peer);
    let sent = client.drive();
    assert!(matches!(
        client.protocol_errors(CC).as_slice(),
        [ProtocolError::UnsupportedVersion(v)] if *v == vec!["2".to_owned()]
    ));
    assert_error_then_close(&sent, &client, 1002);
    assert!(client.core.peer(CC).is_none());
}

#[test]
fn too_many_protocol_errors_close_the_connection() {
    let max = 3;
    let limits = Limits {
        max_protocol_errors: max,
        ..Limits::default()
    };
    let mut p = Pair::new(limits);
    let doc = doc_id(1);
    p.client_creates(doc, 1);
    p.settle();
    p.assert_server_has(doc, 1);

    let garbage = [0xffu8, 0x00];
    for n in 1..=max {
        p.feed_server(&garbage);
        assert_eq!(p.server.protocol_errors(SC).len(), n as usize);
        assert!(p.server.closed.is_empty(), "still open after {n} errors");
    }
    // Valid traffic still flows at the limit.
    p.client_writes(doc, 2);
    p.settle();
    p.assert_server_has(doc, 2);

    // One more: reported, then the connection is closed (policy violation).
    let answers = p.feed_server(&garbage);
    assert!(matches!(answers.as_slice(), [Message::Error { .. }]));
    p.to_client.clear();
    let errors = p.server.protocol_errors(SC);
    assert_eq!(errors.len(), max as usize + 2);
    assert!(matches!(
        errors[max as usize],
        ProtocolError::Decode(DecodeError::Cbor(_))
    ));
    assert!(matches!(
        errors[max as usize + 1],
        ProtocolError::TooManyErrors
    ));
    match p.server.closed.as_slice() {
        [(conn, reason)] => {
            assert_eq!(*conn, SC);
            assert_eq!(reason.code, 1008);
        }
        other => panic!("expected one close, got {other:?}"),
    }

    // The closing connection ignores everything after that, valid or not, without more errors.
    p.client_writes(doc, 3);
    while p.deliver_one_to_server() {}
    p.feed_server(&garbage);
    assert!(
        p.to_client.is_empty(),
        "nothing is sent on a closing connection"
    );
    assert_eq!(p.server.protocol_errors(SC).len(), max as usize + 2);
    assert_eq!(p.server.closed.len(), 1, "closed once");

    // The driver reports the close; the server forgets the connection and keeps the document.
    p.server.core.handle_disconnect(NOW, SC);
    let _ = p.server.drive();
    assert!(p.server.core.peer(SC).is_none());
    let kept = p
        .server
        .core
        .document(&doc)
        .unwrap()
        .get(ROOT, "n")
        .unwrap()
        .map(|(v, _)| v.as_i64());
    assert_eq!(kept, Some(Some(2)));
}
