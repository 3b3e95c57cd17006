// Included by tests/hostile.rs and tests/hostile_round2.rs (shares their imports).
//
// Every case runs against both backends (`hostile_cases!`): a server on SQLite (`--data`) and a
// cluster node on a throwaway PostgreSQL (`--database`, `concord_tests::pg::TempPostgres`).

const WAIT: Duration = Duration::from_secs(5);

/// Where the server under test keeps its documents, keys and revocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// SQLite and files under `--data`.
    Sqlite,
    /// A cluster node (`--database`) on its own throwaway PostgreSQL.
    Cluster,
}

/// Declares each listed `async fn case(backend: Backend)` as two tests, `case::sqlite` and
/// `case::cluster`.
macro_rules! hostile_cases {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$case(super::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                super::$case(super::Backend::Cluster).await;
            }
        }
    )*};
}

struct Server {
    child: Child,
    addr: String,
    data: tempfile::TempDir,
    /// The cluster node's database (stopped after the server, field order).
    pg: Option<concord_tests::pg::TempPostgres>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary under test: this build's, or `CONCORD_HOSTILE_BIN` (to show that a case fails on
/// an older build).
fn concord_bin() -> String {
    std::env::var("CONCORD_HOSTILE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_concord").into())
}

impl Server {
    fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[])
    }

    /// Starts a server with the suite's limits plus `extra` arguments.
    fn start_with(backend: Backend, extra: &[&str]) -> Self {
        Self::start_env(backend, extra, &[])
    }

    /// Starts a server with the suite's limits, `extra` arguments and environment variables
    /// (settings an older build ignores, where a case must also run against one).
    fn start_env(backend: Backend, extra: &[&str], env: &[(&str, &str)]) -> Self {
        // A data directory only its owner can open (the server refuses others).
        let data = common::private_tempdir();
        let pg = (backend == Backend::Cluster)
            .then(|| concord_tests::pg::TempPostgres::start().unwrap());
        let store: Vec<String> = match &pg {
            Some(pg) => vec!["--database".into(), pg.url(), "--node-id".into(), "hostile".into()],
            None => vec!["--data".into(), data.path().to_str().unwrap().into()],
        };
        let mut child = Command::new(concord_bin())
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(&store)
            .args([
                "--handshake-timeout-secs",
                "1",
                "--idle-timeout-secs",
                "3",
                "--ping-secs",
                "10",
            ])
            .args([
                "--max-messages-per-sec",
                "100",
                "--max-connections-per-principal",
                "8",
            ])
            .args([
                "--max-connections-per-ip",
                "32",
                "--max-message-bytes",
                "65536",
            ])
            .args([
                "--allow-origin",
                "https://app.example",
                "--max-decompressed-bytes",
                "1048576",
            ])
            .args(extra)
            .envs(env.iter().copied())
            .env("CONCORD_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let line = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .next()
            .unwrap()
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        Self {
            child,
            addr,
            data,
            pg,
        }
    }

    /// Where the `concord token` commands find this server's keys and revocations.
    fn store_args(&self) -> Vec<String> {
        match &self.pg {
            Some(pg) => vec!["--database".into(), pg.url()],
            None => vec!["--data".into(), self.data.path().to_str().unwrap().into()],
        }
    }

    /// The server's storage, opened next to it (to inspect what it persisted).
    #[allow(dead_code)] // the first suite does not inspect storage
    async fn storage(&self) -> Box<dyn concord::storage::Storage> {
        match &self.pg {
            Some(pg) => Box::new(
                concord::storage::postgres::PostgresStorage::open(
                    concord::storage::postgres::PostgresConfig::new(pg.url()),
                )
                .await
                .unwrap(),
            ),
            None => Box::new(
                concord::storage::SqliteStorage::open(concord::storage::SqliteConfig::new(
                    self.data.path().join("concord.db"),
                ))
                .await
                .unwrap(),
            ),
        }
    }

    fn token(&self, principal: &str, docs: &[DocumentId], read_only: bool, ttl: &str) -> String {
        let mut cmd = Command::new(concord_bin());
        cmd.args(["token", "create"])
            .args(self.store_args())
            .args(["--principal", principal, "--ttl", ttl]);
        for d in docs {
            cmd.args(["--doc", &d.to_string()]);
        }
        if read_only {
            cmd.arg("--read-only");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn url(&self, token: &str) -> String {
        format!("ws://{}/sync?token={token}", self.addr)
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .parse()
            .unwrap()
    }
}

/// Connects; on refusal returns the HTTP status.
async fn dial(url: &str, origin: Option<&str>) -> Result<Socket, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("unexpected dial error {e}"),
    }
}

async fn send(ws: &mut Socket, m: &Message) {
    let _ = send_msg(ws, m).await; // the server may have closed it: the reads say how
}

/// Next protocol message, or the close code (`None`: dropped without a close frame).
async fn next(ws: &mut Socket) -> Result<Message, Option<CloseCode>> {
    next_within(ws, WAIT).await
}

/// Reads until the connection closes; returns the close code and the error messages seen.
async fn until_closed(ws: &mut Socket) -> (Option<CloseCode>, Vec<String>) {
    let mut errors = Vec::new();
    loop {
        match next(ws).await {
            Ok(Message::Error { message, .. }) => errors.push(message),
            Ok(_) => {}
            Err(code) => return (code, errors),
        }
    }
}

async fn join(ws: &mut Socket, id: &str) -> Result<PeerId, Option<CloseCode>> {
    send(
        ws,
        &Message::Join {
            sender_id: PeerId::from(id),
            peer_metadata: Some(PeerMetadata::default()),
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

fn sync_msg(from: &str, to: &PeerId, doc: DocumentId, am: &Automerge, request: bool) -> Message {
    let data = am
        .generate_sync_message(&mut automerge::sync::State::new())
        .unwrap()
        .encode();
    let (sender_id, target_id, document_id) = (PeerId::from(from), to.clone(), doc);
    if request {
        Message::Request {
            sender_id,
            target_id,
            document_id,
            data,
        }
    } else {
        Message::Sync {
            sender_id,
            target_id,
            document_id,
            data,
        }
    }
}

/// A sync message that carries all of `am`'s changes.
fn changes_msg(from: &str, to: &PeerId, doc: DocumentId, am: &Automerge) -> Message {
    // Build the message by syncing against an empty peer state that claims to have nothing.
    let mut theirs = automerge::sync::State::new();
    let mut empty = Automerge::new();
    let mut ours = automerge::sync::State::new();
    let m1 = am.generate_sync_message(&mut ours).unwrap();
    empty.receive_sync_message(&mut theirs, m1).unwrap();
    let m2 = empty.generate_sync_message(&mut theirs).unwrap();
    let mut am2 = am.clone();
    am2.receive_sync_message(&mut ours, m2).unwrap();
    let m3 = am2.generate_sync_message(&mut ours).unwrap();
    Message::Sync {
        sender_id: PeerId::from(from),
        target_id: to.clone(),
        document_id: doc,
        data: m3.encode(),
    }
}

struct Canary {
    repo: Repo,
    doc: DocHandle,
    round: i64,
}

impl Canary {
    async fn check(&mut self, case: &str) {
        self.round += 1;
        let r = self.round;
        self.doc
            .change(|tx| tx.put(ROOT, "round", r))
            .await
            .unwrap();
        self.doc
            .wait_synced(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("canary stopped syncing after `{case}`: {e}"));
        println!("ok: {case}");
    }
}


fn ciborium_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    let v = ciborium::Value::Map(
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    ciborium::Value::Text((*k).into()),
                    ciborium::Value::Text((*v).into()),
                )
            })
            .collect(),
    );
    let mut out = Vec::new();
    ciborium::ser::into_writer(&v, &mut out).unwrap();
    out
}

async fn reqwest_like_get(addr: &str, path: &str) -> String {
    get_with_token(addr, path, None).await
}

/// A raw `GET` with an optional bearer token; the whole answer.
async fn get_with_token(addr: &str, path: &str, bearer: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// A change by a fresh actor with `ops` identical puts on the root, `seq` and `start_op` as given
/// (run-length encoding keeps it a few dozen bytes however many operations it declares).
fn crafted_change(ops: usize, seq: u64, start_op: u64) -> Vec<u8> {
    use automerge::legacy::{Key, ObjectId, Op, OpType, SortedVec};
    let op = Op {
        action: OpType::Put(automerge::ScalarValue::Null),
        obj: ObjectId::Root,
        key: Key::Map("k".into()),
        pred: SortedVec::new(),
        insert: false,
    };
    let expanded = automerge::ExpandedChange {
        operations: vec![op; ops],
        actor_id: ActorId::random(),
        hash: None,
        seq,
        start_op: std::num::NonZeroU64::new(start_op).unwrap(),
        time: 0,
        message: None,
        deps: Vec::new(),
        extra_bytes: Vec::new(),
        author: None,
    };
    automerge::Change::from(expanded).raw_bytes().to_vec()
}

/// Sends one sync message carrying `chunk` for a fresh document; returns the `error` message
/// the server answers with within 1 s.
async fn send_chunk(ws: &mut Socket, from: &str, sid: &PeerId, chunk: Vec<u8>) -> Option<String> {
    let mut msg = automerge::sync::Message::decode(
        &Automerge::new()
            .generate_sync_message(&mut automerge::sync::State::new())
            .unwrap()
            .encode(),
    )
    .unwrap();
    msg.changes = automerge::sync::ChunkList::from(vec![chunk]);
    send(
        ws,
        &Message::Sync {
            sender_id: PeerId::from(from),
            target_id: sid.clone(),
            document_id: DocumentId::from_bytes(rand_bytes()),
            data: msg.encode(),
        },
    )
    .await;
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), next(ws)).await {
        if let Message::Error { message, .. } = m {
            return Some(message);
        }
    }
    None
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    b.copy_from_slice(&ActorId::random().to_bytes()[..16]);
    b
}
