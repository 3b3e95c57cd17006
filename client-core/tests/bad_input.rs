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

const NOW: u64 = 0;
/// The client's end of the connection.
const CC: ConnId = ConnId(1);
/// The server's end of the connection.
const SC: ConnId = ConnId(7);
const BIG: usize = 1 << 20;

/// A core with its disk and everything it asked for besides frames.
struct Node {
    core: Core,
    disk: MemoryStorage,
    events: Vec<Event>,
    closed: Vec<(ConnId, CloseReason)>,
}

impl Node {
    fn new(config: CoreConfig) -> Self {
        Self {
            core: Core::new(config),
            disk: MemoryStorage::new(),
            events: Vec::new(),
            closed: Vec::new(),
        }
    }

    /// Drains effects (running storage at once); returns the frames to send.
    fn drive(&mut self) -> Vec<(ConnId, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Send { conn, bytes } => out.push((conn, bytes)),
                Effect::Close { conn, reason } => self.closed.push((conn, reason)),
                Effect::Event(e) => self.events.push(e),
                Effect::Storage { id, op } => {
                    let disk = &self.disk;
                    let reply = op.run_on(disk);
                    self.core.handle_storage_result(NOW, id, reply);
                }
                other => panic!("unexpected effect {other:?}"),
            }
        }
        out
    }

    fn protocol_errors(&self, conn: ConnId) -> Vec<&ProtocolError> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Protocol { conn: c, error } if *c == conn => Some(error),
                _ => None,
            })
            .collect()
    }
}

fn server_config(limits: Limits) -> CoreConfig {
    let mut config = CoreConfig::new(
        PeerId::from("server"),
        Some(StorageId::from("server-store")),
        1,
    )
    .with_policy(Arc::new(ServerPolicy));
    config.limits = limits;
    config
}

fn client_config() -> CoreConfig {
    CoreConfig::new(
        PeerId::from("client"),
        Some(StorageId::from("client-store")),
        2,
    )
}

/// A client connected to a server, with the frames in flight between them.
struct Pair {
    client: Node,
    server: Node,
    to_server: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
}

impl Pair {
    /// Client dials server; the handshake completes.
    fn new(limits: Limits) -> Self {
        let mut p = Self {
            client: Node::new(client_config()),
            server: Node::new(server_config(limits)),
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
        };
        p.server.core.handle_accept(NOW, SC);
        p.client.core.handle_connect(NOW, CC);
        p.collect_client();
        p.settle();
        assert!(
            p.client.core.peer(CC).is_some(),
            "client completed the handshake"
        );
        assert!(
            p.server.core.peer(SC).is_some(),
            "server completed the handshake"
        );
        p
    }

    fn collect_client(&mut self) {
        for (conn, bytes) in self.client.drive() {
            assert_eq!(conn, CC);
            self.to_server.push_back(bytes);
        }
    }

    /// Hands one frame to the server; returns the frames it answered with (also queued).
    fn feed_server(&mut self, bytes: &[u8]) -> Vec<Message> {
        self.server.core.handle_message(NOW, SC, bytes);
        let mut answers = Vec::new();
        for (conn, bytes) in self.server.drive() {
            assert_eq!(conn, SC);
            answers.push(wire::decode(&bytes, BIG).expect("the server sends decodable frames"));
            self.to_client.push_back(bytes);
        }
        answers
    }

    fn deliver_one_to_server(&mut self) -> bool {
        let Some(frame) = self.to_server.pop_front() else {
            return false;
        };
        self.feed_server(&frame);
        true
    }

    /// Shuttles frames until neither side has anything to say.
    fn settle(&mut self) {
        for _ in 0..1_000 {
            let mut progressed = self.deliver_one_to_server();
            if let Some(frame) = self.to_client.pop_front() {
                self.client.core.handle_message(NOW, CC, &frame);
                self.collect_client();
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
        panic!("the pair did not go quiet");
    }

    /// Client creates `doc` and writes to it (frames queued, not delivered).
    fn client_creates(&mut self, doc: DocumentId, value: i64) {
        self.client.core.create(NOW, doc).unwrap();
        self.client_writes(doc, value);
    }

    fn client_writes(&mut self, doc: DocumentId, value: i64) {
        self.client
            .core
            .change(NOW, &doc, |tx| tx.put(ROOT, "n", value))
            .unwrap();
        self.collect_client();
    }

    fn assert_server_has(&self, doc: DocumentId, value: i64) {
        let theirs = self
            .server
            .core
            .document(&doc)
            .expect("the server holds the document");
        let ours = self.client.core.document(&doc).unwrap();
        assert_eq!(
            theirs.get_heads(),
            ours.get_heads(),
            "server caught up on {doc}"
        );
        let got = theirs.get(ROOT, "n").unwrap().map(|(v, _)| v.as_i64());
        assert_eq!(got, Some(Some(value)));
        assert!(
            !self.server.disk.load_sync(&doc).unwrap().is_empty(),
            "the server stored {doc}"
        );
    }
}

fn doc_id(n: u8) -> DocumentId {
    DocumentId::from_bytes([n; 16])
}

fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).unwrap();
    out
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// A `sync` frame from the client for `doc` with arbitrary `data`.
fn sync_frame(doc: DocumentId, data: Vec<u8>) -> Vec<u8> {
    wire::encode(&Message::Sync {
        sender_id: PeerId::from("client"),
        target_id: PeerId::from("server"),
        document_id: doc,
        data,
    })
}

/// A `sync` message as a raw CBOR map, with field `key` set to `value` and the others valid.
fn sync_map_with(doc: DocumentId, key: &str, value: Value) -> Vec<u8> {
    let mut fields = vec![
        (text("type"), text("sync")),
        (text("senderId"), text("client")),
        (text("targetId"), text("server")),
        (text("documentId"), text(&doc.to_string())),
        (text("data"), Value::Bytes(vec![0x42, 0, 0, 0])),
    ];
    for f in &mut fields {
        if f.0 == text(key) {
            f.1 = value.clone();
        }
    }
    cbor(&Value::Map(fields))
}

/// An established connection already syncing document 1 gets `bad` between valid frames for
/// document 1 and a new document 2. Returns the pair once quiet and what the server answered to
/// `bad`, after checking that the connection stayed open and both documents kept syncing.
fn bad_frame_between_valid_ones(
    limits: Limits,
    bad: impl Fn(DocumentId) -> Vec<u8>,
) -> (Pair, Vec<Message>) {
    let mut p = Pair::new(limits);
    let (old, new) = (doc_id(1), doc_id(2));
    p.client_creates(old, 1);
    p.settle();
    p.assert_server_has(old, 1);

    p.client_writes(old, 2);
    p.client_creates(new, 3);
    assert!(
        p.to_server.len() >= 2,
        "valid frames queued for both documents"
    );
    p.deliver_one_to_server();
    let answers = p.feed_server(&bad(old));
    p.settle();

    assert!(p.server.closed.is_empty(), "the connection stays open");
    assert!(p.server.core.peer(SC).is_some());
    assert!(p.client.closed.is_empty());
    p.assert_server_has(old, 2);
    p.assert_server_has(new, 3);
    // And later edits still flow, both ways.
    p.client_writes(new, 4);
    p.settle();
    p.assert_server_has(new, 4);
    p.client_writes(old, 5);
    p.settle();
    p.assert_server_has(old, 5);
    (p, answers)
}

/// [`bad_frame_between_valid_ones`], and `bad` caused exactly one protocol error satisfying
/// `expected`, answered with one `error` message to the client.
fn rejected_after_handshake(
    limits: Limits,
    bad: impl Fn(DocumentId) -> Vec<u8>,
    expected: impl Fn(&ProtocolError) -> bool,
) {
    let (p, answers) = bad_frame_between_valid_ones(limits, bad);
    let errors = p.server.protocol_errors(SC);
    assert_eq!(errors.len(), 1, "one protocol error, got {errors:?}");
    assert!(
        expected(errors[0]),
        "unexpected protocol error {:?}",
        errors[0]
    );
    let (refusals, others): (Vec<&Message>, Vec<&Message>) = answers
        .iter()
        .partition(|m| matches!(m, Message::Error { .. }));
    match refusals.as_slice() {
        [
            Message::Error {
                target_id, message, ..
            },
        ] => {
            assert_eq!(target_id.as_ref(), Some(&PeerId::from("client")));
            assert_eq!(message, &errors[0].to_string());
        }
        other => panic!("expected exactly one `error` answer, got {other:?}"),
    }
    // Besides the refusal, at most a restart of the sync of the document concerned.
    assert!(
        others.iter().all(|m| matches!(m, Message::Sync { .. })),
        "{others:?}"
    );
    let told = p.client.protocol_errors(CC);
    assert!(
        matches!(told.as_slice(), [ProtocolError::Remote(_)]),
        "client was told: {told:?}"
    );
}

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
