//! A server in cluster mode (`--database`) on a throwaway PostgreSQL: documents land in the
//! database, token keys and revocations come from it (`concord token ... --database`), the node
//! is in the registry while it runs and a second node may not take its id, and an advisory lock
//! has one holder, released when the holder's session dies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use automerge::ReadDoc;
use automerge::transaction::Transactable;
use common::{TestServer, client, mint};
use concord::storage::Storage;
use concord::storage::postgres::{PostgresConfig, PostgresStorage};
use concord_server::cluster::lock::AdvisoryLock;
use concord_server::cluster::registry::live_nodes;
use concord_server::cluster::{self, ClusterError};
use concord_server::server::{self, DatabaseUrl, ServeConfig, ServerError};
use concord_tests::pg::TempPostgres;
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

async fn node(pg: &TempPostgres, id: &str) -> TestServer {
    let url = pg.url();
    let id = id.to_owned();
    TestServer::start(move |c| {
        c.database = Some(DatabaseUrl(url));
        c.node_id = Some(id);
    })
    .await
}

async fn database(pg: &TempPostgres) -> PostgresStorage {
    PostgresStorage::open(PostgresConfig::new(pg.url()))
        .await
        .unwrap()
}

async fn live_ids(db: &PostgresStorage) -> Vec<String> {
    let nodes = live_nodes(db.pool()).await.unwrap();
    nodes.into_iter().map(|n| n.node).collect()
}

#[tokio::test]
async fn a_cluster_node_stores_in_postgres_and_registers_itself() {
    let pg = TempPostgres::start().unwrap();
    let server = node(&pg, "node-1").await;
    let db = database(&pg).await;

    // The keys the node signs with are the cluster's, in the database.
    let keys = cluster::auth::load_or_create_keys(db.pool()).await.unwrap();
    assert_eq!(keys.kids(), server.keys.kids());

    // A document written through the node is committed in PostgreSQL.
    let repo = client(&server.url()).await;
    let handle = repo.create().await.unwrap();
    handle
        .change(|tx| tx.put(automerge::ROOT, "hello", "cluster"))
        .await
        .unwrap();
    handle
        .wait_durable(concord::core::Durability::Server, WAIT)
        .await
        .unwrap();
    let stored = db.load(&handle.id()).await.unwrap();
    let mut doc = automerge::Automerge::new();
    for c in &stored.chunks {
        doc.load_incremental(&c.bytes).unwrap();
    }
    assert!(doc.get(automerge::ROOT, "hello").unwrap().is_some());

    // Registered while it runs; a second node may not take its id.
    let nodes = live_nodes(db.pool()).await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        (nodes[0].node.as_str(), nodes[0].addr.clone()),
        ("node-1", server.addr.to_string())
    );
    let twin = ServeConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        database: Some(DatabaseUrl(pg.url())),
        node_id: Some("node-1".into()),
        ..ServeConfig::default()
    };
    match server::start(twin).await {
        Err(ServerError::Cluster(ClusterError::DuplicateNode { node, addr, .. })) => {
            assert_eq!((node.as_str(), addr), ("node-1", server.addr.to_string()));
        }
        other => panic!("a second node-1 must be refused, got {other:?}"),
    }

    // A second node with its own id joins; a clean stop leaves the registry at once.
    let second = node(&pg, "node-2").await;
    assert_eq!(live_ids(&db).await, ["node-1", "node-2"]);
    server.stop().await;
    assert_eq!(live_ids(&db).await, ["node-2"]);
    second.stop().await;
}

#[tokio::test]
async fn tokens_minted_and_revoked_in_the_database_apply_to_the_node() {
    let pg = TempPostgres::start().unwrap();
    let server = node(&pg, "node-1").await;
    let concord = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_concord"))
            .args(args)
            .env("CONCORD_DATABASE_URL", pg.url())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "concord {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };

    // `token create --database` signs with the cluster's key: the node accepts it.
    let out = concord(&["token", "create", "--principal", "carol"]);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url_with(&token))
        .await
        .expect("the node accepts a token minted from the database's key");

    // `token revoke --database`: the node closes the connection and refuses the token.
    concord(&["token", "revoke", "--principal", "carol"]);
    let started = Instant::now();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "revocation took {:?}",
        started.elapsed()
    );
    match tokio_tungstenite::connect_async(server.url_with(&token)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("a revoked token must be refused, got {other:?}"),
    }
    // Other tokens still work.
    let other = mint(&server.keys, "dave", None, false);
    assert!(
        tokio_tungstenite::connect_async(server.url_with(&other))
            .await
            .is_ok()
    );
    server.stop().await;
}

#[tokio::test]
async fn an_advisory_lock_has_one_holder_and_is_released_with_its_session() {
    let pg = TempPostgres::start().unwrap();
    let db = database(&pg).await;
    let options = db.connect_options().clone();
    let t = Duration::from_secs(5);

    let mut first = AdvisoryLock::try_acquire(&options, "dial:us", t)
        .await
        .unwrap()
        .expect("a free lock is taken");
    assert!(first.is_held(t).await);
    assert!(
        AdvisoryLock::try_acquire(&options, "dial:us", t)
            .await
            .unwrap()
            .is_none(),
        "a held lock is not taken twice"
    );
    let other = AdvisoryLock::try_acquire(&options, "dial:eu", t)
        .await
        .unwrap()
        .expect("other names are independent");

    // A released lock is free again.
    first.release().await;
    let second = AdvisoryLock::try_acquire(&options, "dial:us", t)
        .await
        .unwrap()
        .expect("a released lock is taken");

    // The holder's session dies (as with a killed node): the lock is free again.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND pid <> pg_backend_pid()",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let third = loop {
        if let Some(l) = AdvisoryLock::try_acquire(&options, "dial:us", t)
            .await
            .unwrap()
        {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "the lock of a dead session is freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(third.name(), "dial:us");
    drop((second, other));
}

/// Runs `concord <args>` to its end (at most 30 s); returns (success, stderr).
fn run_concord(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("concord {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr)
}

#[tokio::test]
async fn a_bad_database_stops_the_server_with_one_line() {
    let pg = TempPostgres::start().unwrap();
    // A database migrated by a newer concord (its server tables).
    let newer = pg.create_database("newer").unwrap();
    let db = cluster::open(PostgresConfig::new(&newer)).await.unwrap();
    sqlx::query(
        "INSERT INTO concord_server_migrations \
         (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', true, '\\x00'::bytea, 0)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    db.close().await;
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("postgres://concord:x@127.0.0.1:{free_port}/concord");
    let cases = [
        (
            "postgres://concord@127.0.0.1:notaport/x".to_owned(),
            "invalid PostgreSQL URL",
        ),
        (pg.url_with_wrong_password(), "refused the credentials"),
        (pg.url_for("missing"), "does not exist"),
        (down, "is unreachable"),
        (newer, "newer than this binary"),
    ];
    for (url, expected) in cases {
        let serve = vec![
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database-connect-timeout-secs",
            "3",
            "--database",
            &url,
        ];
        let token = vec!["token", "create", "--database", &url];
        for args in [serve, token] {
            let (ok, stderr) = run_concord(&args);
            assert!(!ok, "{args:?} must fail");
            let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
            assert_eq!(errors.len(), 1, "{args:?}: one error line in {stderr}");
            assert!(errors[0].contains(expected), "{args:?}: {}", errors[0]);
            assert!(!stderr.contains("panicked"), "{stderr}");
            assert!(
                !errors[0].contains(":x@") && !errors[0].contains(":wrong@"),
                "no password in {}",
                errors[0]
            );
        }
    }
}
