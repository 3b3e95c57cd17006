//! The PostgreSQL cluster bus (`PgBus`, LISTEN/NOTIFY) between two nodes of one throwaway
//! PostgreSQL server: commit notices and ephemeral messages cross, a node never hears its own, a
//! payload too large is refused, and a restarted server, a stopped one or a connection that went
//! silent each end in a `Gap` after which the bus works again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use concord::repo::{BusError, BusEvent, BusNotice, ClusterBus};
use concord::storage::postgres::{PgBus, PgBusSettings, PostgresConfig, PostgresStorage};
use concord::storage::{ChunkKey, Storage};
use concord::{DocumentId, PeerId};
use concord_tests::pg::TempPostgres;
use concord_tests::proxy::Proxy;
use tokio::sync::mpsc::Receiver;

const CHANNEL: &str = "concord_bus_test";
const WAIT: Duration = Duration::from_secs(30);

struct Node {
    storage: PostgresStorage,
    bus: PgBus,
    events: Receiver<BusEvent>,
}

async fn node(url: &str, id: &str, settings: PgBusSettings) -> Node {
    let mut config = PostgresConfig::new(url).with_notify(CHANNEL, id);
    config.connect_timeout = Duration::from_secs(2);
    config.acquire_timeout = Duration::from_secs(2);
    let storage = PostgresStorage::open(config).await.unwrap();
    let bus = PgBus::start_with(&storage, settings).await.unwrap();
    let events = bus.subscribe();
    Node {
        storage,
        bus,
        events,
    }
}

/// The next event within [`WAIT`].
async fn next(events: &mut Receiver<BusEvent>) -> BusEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("the bus is running")
}

/// Events other than `Gap` are skipped until a `Gap` comes.
async fn gap(events: &mut Receiver<BusEvent>) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if next(events).await == BusEvent::Gap {
            return;
        }
    }
    panic!("no Gap within {WAIT:?}");
}

/// Nothing arrives for a little while (an echo would arrive as fast as the notices that do).
async fn quiet(events: &mut Receiver<BusEvent>) {
    if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
        panic!("unexpected event {e:?}");
    }
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ephemeral(node: &str, data: Vec<u8>) -> BusNotice {
    BusNotice::Ephemeral {
        node: node.into(),
        doc: DocumentId::from_bytes([5; 16]),
        sender: PeerId::from("client-1"),
        session_id: "session".into(),
        count: 1,
        data,
    }
}

/// `a` commits a chunk; `b` hears of it with its key, `a` does not.
async fn commit_crosses(a: &mut Node, b: &mut Node, seed: &[u8]) {
    let doc = DocumentId::from_bytes([3; 16]);
    let key = ChunkKey::of(seed);
    a.storage.append(&doc, key, seed).await.unwrap();
    match next(&mut b.events).await {
        BusEvent::Notice(BusNotice::Committed { node, doc: d, keys }) => {
            assert_eq!((node.as_str(), d, keys), (a.bus.node(), doc, vec![key]));
        }
        other => panic!("expected a commit notice, got {other:?}"),
    }
}

#[tokio::test]
async fn notices_cross_between_nodes_and_never_echo() {
    let pg = TempPostgres::start().unwrap();
    let mut a = node(&pg.url(), "node-a", PgBusSettings::default()).await;
    let mut b = node(&pg.url(), "node-b", PgBusSettings::default()).await;
    assert!(a.bus.notifies_commits() && a.bus.is_connected() && b.bus.is_connected());

    commit_crosses(&mut a, &mut b, b"from a").await;
    commit_crosses(&mut b, &mut a, b"from b").await;

    let hello = ephemeral("node-b", b"cursor at 3".to_vec());
    b.bus.publish(hello.clone()).await.unwrap();
    assert_eq!(next(&mut a.events).await, BusEvent::Notice(hello));

    // A payload PostgreSQL would refuse is refused here, with its size.
    let big = b.bus.publish(ephemeral("node-b", vec![7; 7000])).await;
    assert!(
        matches!(big, Err(BusError::TooLarge(n)) if n > 7999),
        "{big:?}"
    );

    // A second subscription of the same node sees the same notices.
    let mut again = b.bus.subscribe();
    commit_crosses(&mut a, &mut b, b"second").await;
    assert!(matches!(
        next(&mut again).await,
        BusEvent::Notice(BusNotice::Committed { .. })
    ));

    // Nobody heard their own notices (pings included).
    quiet(&mut a.events).await;
    quiet(&mut b.events).await;
    assert!(a.bus.last_ping_rtt().is_some() || b.bus.last_ping_rtt().is_some());
}

#[tokio::test]
async fn a_restarted_server_ends_in_a_gap_and_the_bus_resumes() {
    let pg = TempPostgres::start().unwrap();
    let mut a = node(&pg.url(), "node-a", PgBusSettings::default()).await;
    let mut b = node(&pg.url(), "node-b", PgBusSettings::default()).await;
    commit_crosses(&mut a, &mut b, b"before").await;

    pg.restart().unwrap();
    gap(&mut a.events).await;
    gap(&mut b.events).await;
    assert!(a.bus.is_connected() && b.bus.is_connected());
    assert_eq!((a.bus.reconnects(), b.bus.reconnects()), (1, 1));
    commit_crosses(&mut a, &mut b, b"after").await;
    commit_crosses(&mut b, &mut a, b"after, back").await;

    // Down for a while: not connected meanwhile, a Gap once it is back.
    pg.stop().unwrap();
    until("the bus reports the outage", || !a.bus.is_connected()).await;
    pg.start_again().unwrap();
    gap(&mut a.events).await;
    gap(&mut b.events).await;
    commit_crosses(&mut b, &mut a, b"after the outage").await;
}

#[tokio::test]
async fn a_connection_gone_silent_is_detected_by_the_ping() {
    let pg = TempPostgres::start().unwrap();
    let proxy = Proxy::start(pg.port()).await.unwrap();
    let through_proxy = pg
        .url()
        .replace(&format!(":{}/", pg.port()), &format!(":{}/", proxy.port()));
    let mut settings = PgBusSettings::default();
    settings.ping_interval = Duration::from_millis(200);
    settings.ping_timeout = Duration::from_millis(800);
    let mut a = node(&through_proxy, "node-a", settings).await;
    let mut b = node(&pg.url(), "node-b", PgBusSettings::default()).await;
    commit_crosses(&mut b, &mut a, b"before").await;

    // No error, no closed socket: only the missing ping tells.
    proxy.freeze();
    until("the silent connection is noticed", || !a.bus.is_connected()).await;
    proxy.thaw();
    gap(&mut a.events).await;
    assert!(a.bus.is_connected());
    commit_crosses(&mut b, &mut a, b"after").await;
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_gets_a_gap_instead_of_the_notices_it_missed() {
    let pg = TempPostgres::start().unwrap();
    let mut a = node(&pg.url(), "node-a", PgBusSettings::default()).await;
    let mut settings = PgBusSettings::default();
    settings.subscriber_capacity = 1;
    settings.ping_interval = Duration::from_millis(200);
    let mut b = node(&pg.url(), "node-b", settings).await;

    // Three notices at once (one per document) into a queue of one.
    let docs: Vec<DocumentId> = (0..3u8).map(|i| DocumentId::from_bytes([i; 16])).collect();
    let chunks: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 8]).collect();
    let ops: Vec<concord::storage::WriteOp<'_>> = docs
        .iter()
        .zip(&chunks)
        .map(|(doc, bytes)| concord::storage::WriteOp::Append {
            doc,
            key: ChunkKey::of(bytes),
            bytes,
        })
        .collect();
    a.storage.write_batch(&ops).await.unwrap();
    // All three arrive before anything is read: the queue holds the first.
    until("two notices dropped", || b.bus.dropped() >= 2).await;
    assert!(matches!(
        next(&mut b.events).await,
        BusEvent::Notice(BusNotice::Committed { .. })
    ));
    assert_eq!(
        next(&mut b.events).await,
        BusEvent::Gap,
        "the missed ones become a Gap"
    );
    commit_crosses(&mut a, &mut b, b"and then notices again").await;
    quiet(&mut a.events).await;
}
