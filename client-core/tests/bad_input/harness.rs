// Included by tests/bad_input.rs (shares its imports): nodes, the client/server pair, frame builders.

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
