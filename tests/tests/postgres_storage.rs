//! PostgreSQL storage against a real, throwaway PostgreSQL server: the storage conformance suite
//! unchanged, all-or-nothing batches, persistence, the errors of a bad configuration or an
//! unreachable server, and commit notifications.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use concord::DocumentId;
use concord::storage::postgres::{PgOpenError, PostgresConfig, PostgresStorage, STORAGE_TABLE};
use concord::storage::{ChunkKey, Storage, WriteOp, conformance};
use concord_tests::pg::TempPostgres;
use concord_tests::proxy::Proxy;
use sqlx::postgres::PgListener;

fn server() -> TempPostgres {
    TempPostgres::start().expect("a throwaway PostgreSQL server")
}

async fn open(url: &str) -> PostgresStorage {
    PostgresStorage::open(PostgresConfig::new(url))
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

#[tokio::test]
async fn postgres_backend_conforms_and_persists_across_reopen() {
    let pg = server();
    let storage = open(&pg.url()).await;
    conformance::run(&storage).await;
    let doc = DocumentId::from_bytes([0xC0; 16]);
    let before = storage.load(&doc).await.unwrap();
    storage.close().await;

    // Reopening runs the migrations again (a no-op) and finds everything committed.
    let reopened = open(&pg.url()).await;
    assert_eq!(reopened.load(&doc).await.unwrap(), before);
    assert_eq!(
        reopened.get_meta("storage_id").await.unwrap(),
        Some(b"abd".to_vec())
    );
    // ... also after the server itself restarted (pooled connections are replaced).
    pg.restart().unwrap();
    assert_eq!(reopened.load(&doc).await.unwrap(), before);
    reopened
        .append(&doc, ChunkKey::of(b"after restart"), b"after restart")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_connection_gone_silent_fails_the_operation_instead_of_hanging() {
    let pg = server();
    let proxy = Proxy::start(pg.port()).await.unwrap();
    let url = pg
        .url()
        .replace(&format!(":{}/", pg.port()), &format!(":{}/", proxy.port()));
    let mut config = PostgresConfig::new(url);
    config.statement_timeout = Duration::from_secs(1);
    config.connect_timeout = Duration::from_secs(1);
    config.acquire_timeout = Duration::from_secs(3);
    let s = PostgresStorage::open(config).await.unwrap();
    let doc = DocumentId::from_bytes([8; 16]);
    s.append(&doc, ChunkKey::of(b"a"), b"a").await.unwrap();

    // Sockets stay open and nothing answers: the deadline (3 s + 2 x 1 s) ends the write.
    proxy.freeze();
    let started = Instant::now();
    let err = s.append(&doc, ChunkKey::of(b"b"), b"b").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}: {err}",
        started.elapsed()
    );

    // Back: the silent connections are found dead and replaced; writes go through again.
    proxy.thaw();
    let mut ok = false;
    for _ in 0..3 {
        if s.append(&doc, ChunkKey::of(b"b"), b"b").await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "the storage recovers by itself");
    assert_eq!(s.load(&doc).await.unwrap().chunks.len(), 2);
}

#[tokio::test]
async fn a_failing_write_rolls_back_its_whole_batch() {
    let pg = server();
    let s = open(&pg.url()).await;
    // Every insert of the poisoned document aborts, as a full disk or a constraint would.
    let poisoned = hex(conformance::POISONED.as_bytes());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.doc = '\\x{poisoned}'::bytea THEN RAISE EXCEPTION 'injected'; END IF; \
           RETURN NEW; END $$;"
    )))
    .execute(s.pool())
    .await
    .unwrap();
    for table in ["concord_chunks", "concord_sync_states", "concord_doc_heads"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TRIGGER poison BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION poison()"
        )))
        .execute(s.pool())
        .await
        .unwrap();
    }
    conformance::run_failing_batch(&s).await;
}

/// The next notification's payload, as JSON.
async fn next(l: &mut PgListener) -> serde_json::Value {
    let n = tokio::time::timeout(Duration::from_secs(10), l.recv())
        .await
        .expect("a notification")
        .unwrap();
    serde_json::from_str(n.payload()).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn bad_configurations_get_one_line_errors_naming_the_problem() {
    let pg = server();
    let fails = |url: String| async move {
        let mut config = PostgresConfig::new(url);
        config.connect_timeout = Duration::from_secs(3);
        let started = Instant::now();
        let err = PostgresStorage::open(config).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{err} took too long"
        );
        let text = err.to_string();
        assert!(!text.contains('\n'), "one line: {text}");
        eprintln!("{text}");
        (err, text)
    };

    let (err, text) = fails("postgres://concord@127.0.0.1:notaport/x".into()).await;
    assert!(matches!(err, PgOpenError::InvalidUrl(_)), "{text}");
    let (err, _) = fails("mysql://127.0.0.1/x".into()).await;
    assert!(matches!(err, PgOpenError::InvalidUrl(_)));

    let (err, text) = fails(pg.url_with_wrong_password()).await;
    assert!(matches!(err, PgOpenError::Authentication { .. }), "{err:?}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        !text.contains("wrong"),
        "the password is never printed: {text}"
    );

    let (err, text) = fails(pg.url_for("no_such_db")).await;
    assert!(matches!(err, PgOpenError::NoSuchDatabase { .. }), "{err:?}");
    assert!(text.contains("no_such_db"), "{text}");

    // Nothing listens on a port we just bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (err, text) = fails(format!("postgres://concord:x@127.0.0.1:{port}/concord")).await;
    assert!(matches!(err, PgOpenError::Unreachable { .. }), "{err:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");

    // A server that accepts connections and never answers: the connect timeout, not a hang.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (err, _) = fails(format!("postgres://concord:x@127.0.0.1:{port}/concord")).await;
    assert!(matches!(err, PgOpenError::Timeout { .. }), "{err:?}");
    drop(silent);
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_concord_is_refused() {
    let pg = server();
    let s = open(&pg.url()).await;
    let known = concord::storage::postgres::storage_schema_version();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {STORAGE_TABLE} (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from the future', true, '\\x00'::bytea, 0)"
    )))
    .bind(known + 1)
    .execute(s.pool())
    .await
    .unwrap();
    let err = PostgresStorage::open(PostgresConfig::new(pg.url()))
        .await
        .unwrap_err();
    match &err {
        PgOpenError::SchemaTooNew {
            found, supported, ..
        } => assert_eq!((*found, *supported), (known + 1, known)),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(err.to_string().contains("newer than this binary"), "{err}");
}

#[tokio::test]
async fn operations_fail_promptly_while_the_server_is_down_and_recover() {
    let pg = server();
    let mut config = PostgresConfig::new(pg.url());
    config.acquire_timeout = Duration::from_secs(2);
    let s = PostgresStorage::open(config).await.unwrap();
    let doc = DocumentId::from_bytes([7; 16]);
    s.append(&doc, ChunkKey::of(b"one"), b"one").await.unwrap();

    pg.stop().unwrap();
    let started = Instant::now();
    let err = s
        .append(&doc, ChunkKey::of(b"two"), b"two")
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "a write fails within the acquire timeout, took {:?}: {err}",
        started.elapsed()
    );
    assert!(s.ping().await.is_err());

    pg.start_again().unwrap();
    s.append(&doc, ChunkKey::of(b"two"), b"two").await.unwrap();
    let keys: Vec<_> = s
        .load(&doc)
        .await
        .unwrap()
        .chunks
        .iter()
        .map(|c| c.key)
        .collect();
    assert_eq!(keys, vec![ChunkKey::of(b"one"), ChunkKey::of(b"two")]);
}

#[tokio::test]
async fn appended_chunks_are_announced_inside_the_committing_transaction() {
    let pg = server();
    let config = PostgresConfig::new(pg.url()).with_notify("concord_test", "node-a");
    let s = PostgresStorage::open(config).await.unwrap();
    let mut listener = PgListener::connect(&pg.url()).await.unwrap();
    listener.listen("concord_test").await.unwrap();
    let (a, b) = (
        DocumentId::from_bytes([1; 16]),
        DocumentId::from_bytes([2; 16]),
    );
    let (k1, k2, k3) = (ChunkKey::of(b"1"), ChunkKey::of(b"2"), ChunkKey::of(b"3"));

    // One batch, two documents: one notification per document, naming the new keys.
    s.write_batch(&[
        WriteOp::Append {
            doc: &a,
            key: k1,
            bytes: b"1",
        },
        WriteOp::Append {
            doc: &b,
            key: k2,
            bytes: b"2",
        },
        WriteOp::Append {
            doc: &a,
            key: k3,
            bytes: b"3",
        },
    ])
    .await
    .unwrap();
    let first = next(&mut listener).await;
    let second = next(&mut listener).await;
    let hexkey = |k: ChunkKey| serde_json::Value::from(hex(&k.0));
    assert_eq!(first["n"], "node-a");
    assert_eq!(first["d"], a.to_string());
    assert_eq!(
        first["k"],
        serde_json::Value::from(vec![hexkey(k1), hexkey(k3)])
    );
    assert_eq!(second["d"], b.to_string());
    assert_eq!(second["k"], serde_json::Value::from(vec![hexkey(k2)]));

    // A chunk that was already stored is not announced again; a failed transaction announces
    // nothing; a compaction in the same transaction turns the keys into "re-read".
    s.append(&a, k1, b"1").await.unwrap();
    let snap = ChunkKey::of(b"snap");
    let k4 = ChunkKey::of(b"4");
    s.write_batch(&[
        WriteOp::Append {
            doc: &a,
            key: k4,
            bytes: b"4",
        },
        WriteOp::Compact {
            doc: &a,
            key: snap,
            snapshot: b"snap",
            covered: &[k1, k3, k4],
        },
    ])
    .await
    .unwrap();
    let third = next(&mut listener).await;
    assert_eq!(third["d"], a.to_string());
    assert_eq!(third["k"], serde_json::Value::from(Vec::<String>::new()));

    // Too many keys for one payload: the document alone.
    let many: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_le_bytes().to_vec()).collect();
    let ops: Vec<WriteOp<'_>> = many
        .iter()
        .map(|bytes| WriteOp::Append {
            doc: &b,
            key: ChunkKey::of(bytes),
            bytes,
        })
        .collect();
    s.write_batch(&ops).await.unwrap();
    let fourth = next(&mut listener).await;
    assert_eq!(fourth["d"], b.to_string());
    assert_eq!(fourth["k"], serde_json::Value::from(Vec::<String>::new()));
    assert_eq!(s.load(&b).await.unwrap().chunks.len(), 301);

    // load_chunks: the chunks named, a compacted key simply absent.
    let got = s.load_chunks(&a, &[k1, snap]).await.unwrap();
    assert_eq!(got.iter().map(|c| c.key).collect::<Vec<_>>(), vec![snap]);

    // Nothing else was sent.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.recv())
            .await
            .is_err(),
        "no notification for duplicates"
    );
}

#[tokio::test]
async fn tls_is_set_in_the_url() {
    let pg = TempPostgres::start_with_tls().unwrap();
    let ca = pg.ca_file();
    let verified = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        ca.display()
    );
    let s = open(&verified).await;
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert!(ssl, "the connection is encrypted");
    conformance::run(&s).await;

    // A certificate nobody vouches for is refused, on one line.
    let unverified = format!("{}?sslmode=verify-full", pg.url());
    let err = PostgresStorage::open(PostgresConfig::new(unverified))
        .await
        .unwrap_err();
    assert!(matches!(err, PgOpenError::Tls { .. }), "{err:?}");
    assert!(!err.to_string().contains('\n'));
    // sslmode=require encrypts without verifying.
    open(&format!("{}?sslmode=require", pg.url())).await;
}
