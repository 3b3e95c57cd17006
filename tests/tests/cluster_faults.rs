//! Faults in a cluster of real `concord serve --database` nodes on one throwaway PostgreSQL:
//!
//! - a node is killed with SIGKILL in the middle of a write loop: every write a client saw
//!   acknowledged is in the database and reaches every other client, the killed node's clients
//!   fail over to the next URL they were given, and the node catches up when it restarts;
//! - PostgreSQL stops and restarts under load (`pg_ctl stop` then `start`, and
//!   `pg_ctl restart -m fast`): the nodes answer 503 on `/healthz` while it is down and keep
//!   their clients' sockets, nothing acknowledged is lost, and the writes made during the
//!   outage are committed once it is back;
//! - two nodes compact the same hot document at once: the stored document holds every
//!   acknowledged change.
//!
//! The tests run one at a time (each starts its own PostgreSQL and nodes; the machine is small).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use automerge::ReadDoc;
use automerge::transaction::Transactable;
use concord::core::Durability;
use concord::{DocHandle, Repo};
use concord_tests::cluster::Cluster;
use concord_tests::writers::{WriteLog, Writer, client, missing, stored_doc, wait_holds};

const WAIT: Duration = Duration::from_secs(60);

/// One test at a time (an async mutex: each test holds it across its awaits).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `urls` rotated so that the list starts at `first` (a client's preferred node, then the others).
fn from(urls: &[String], first: usize) -> Vec<String> {
    (0..urls.len())
        .map(|i| urls[(first + i) % urls.len()].clone())
        .collect()
}

/// A document created through `repo`, acknowledged by its node.
async fn shared_doc(repo: &Repo) -> DocHandle {
    let doc = repo.create().await.unwrap();
    doc.change(|tx| tx.put(automerge::ROOT, "title", "hot"))
        .await
        .unwrap();
    doc.wait_durable(Durability::Server, WAIT).await.unwrap();
    doc
}

/// A document created through the first of `repos` and found by the others, a [`Writer`] on
/// each of them (`<prefix><i>-<n>`), once each had `acked` writes acknowledged.
async fn write_one_doc(
    repos: &[Repo],
    prefix: &str,
    acked: usize,
) -> (DocHandle, Vec<DocHandle>, Vec<Writer>) {
    let doc = shared_doc(&repos[0]).await;
    let mut handles = vec![doc.clone()];
    for r in &repos[1..] {
        handles.push(r.find(doc.id()).await.unwrap());
    }
    let mut writers: Vec<Writer> = handles
        .iter()
        .enumerate()
        .map(|(i, h)| Writer::start(h.clone(), &format!("{prefix}{i}")))
        .collect();
    for w in &mut writers {
        w.wait_acked(acked, Duration::from_secs(120)).await.unwrap();
    }
    (doc, handles, writers)
}

/// Polls `check` every 50 ms until it is true, at most `timeout`.
fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_write_loses_nothing_acknowledged_and_its_clients_fail_over() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[]).unwrap();
    let urls = cluster.urls();
    // A writer on each node, each given every node (its own first).
    let mut repos = Vec::new();
    for i in 0..3 {
        repos.push(client(&from(&urls, i)).await.unwrap());
    }
    let (doc, handles, mut writers) = write_one_doc(&repos, "w", 20).await;

    // SIGKILL node 2 mid-loop; its writer's client moves to node 3 and keeps being acknowledged.
    let before = writers[1].acked();
    cluster.nodes[1].kill9();
    let killed_at = Instant::now();
    writers[1].wait_acked(before + 20, WAIT).await.unwrap();
    println!(
        "the killed node's writer was acknowledged again {:?} after the kill",
        killed_at.elapsed()
    );
    for w in &mut writers {
        let n = w.acked();
        w.wait_acked(n + 10, WAIT).await.unwrap();
    }
    let mut logs: Vec<WriteLog> = Vec::new();
    for w in writers {
        logs.push(w.stop().await);
    }

    // Every acknowledged write is in the database...
    let stored = stored_doc(&cluster.pg.url(), doc.id()).await.unwrap();
    assert_eq!(missing(&stored, &logs, true), Vec::<String>::new());
    // ... and reaches every client, as do the writes acknowledged only after the failover.
    for (i, h) in handles.iter().enumerate() {
        wait_holds(h, &logs, WAIT)
            .await
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
    }
    let total: usize = logs.iter().map(|l| l.written.len()).sum();
    println!(
        "{total} writes, {} acknowledged before the end",
        logs.iter().map(|l| l.acked).sum::<usize>()
    );

    // The node restarts and catches up from the database: a fresh client of it reads it all.
    cluster.nodes[1].start().unwrap();
    let late = client(&[cluster.nodes[1].url()]).await.unwrap();
    let seen = late.find(doc.id()).await.unwrap();
    wait_holds(&seen, &logs, WAIT).await.unwrap();
    for r in repos.into_iter().chain([late]) {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarts_under_load_and_nothing_acknowledged_is_lost() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(2, &[]).unwrap();
    let urls = cluster.urls();
    let mut repos = Vec::new();
    for url in &urls {
        repos.push(client(std::slice::from_ref(url)).await.unwrap());
    }
    let doc = shared_doc(&repos[0]).await;
    let other = repos[1].find(doc.id()).await.unwrap();
    let conns: Vec<_> = repos
        .iter()
        .map(|r| r.peers().iter().map(|(c, _)| *c).collect::<Vec<_>>())
        .collect();
    let mut writers = vec![
        Writer::start(doc.clone(), "a"),
        Writer::start(other.clone(), "b"),
    ];
    for w in &mut writers {
        w.wait_acked(10, WAIT).await.unwrap();
    }
    for n in &cluster.nodes {
        assert_eq!(n.healthz().unwrap().0, 200);
    }

    // Down: every node reports 503 (database and bus) while the writers keep writing.
    cluster.pg.stop().unwrap();
    let down_at = Instant::now();
    for n in &cluster.nodes {
        eventually(
            "a node to report 503 while PostgreSQL is down",
            WAIT,
            || n.healthz().is_ok_and(|(s, _)| s == 503),
        );
    }
    let (_, body) = cluster.nodes[0].healthz().unwrap();
    assert!(body.contains("database"), "{body}");
    let acked_down: Vec<usize> = writers.iter().map(Writer::acked).collect();
    std::thread::sleep(Duration::from_secs(2));
    // Nothing is acknowledged while the database is down.
    for (w, before) in writers.iter().zip(&acked_down) {
        assert!(
            w.acked() <= before + 5,
            "acknowledged while PostgreSQL was down"
        );
    }

    // Up again: healthy, and the writes made meanwhile are acknowledged.
    cluster.pg.start_again().unwrap();
    for n in &cluster.nodes {
        eventually("a node to report 200 once PostgreSQL is back", WAIT, || {
            n.healthz().is_ok_and(|(s, _)| s == 200)
        });
    }
    println!("healthy again {:?} after the stop", down_at.elapsed());
    for (w, before) in writers.iter_mut().zip(&acked_down) {
        w.wait_acked(before + 15, WAIT).await.unwrap();
    }

    // `pg_ctl restart -m fast` in the middle of the writes.
    cluster.pg.restart().unwrap();
    for w in &mut writers {
        let n = w.acked();
        w.wait_acked(n + 15, WAIT).await.unwrap();
    }
    let mut logs = Vec::new();
    for w in writers {
        logs.push(w.stop().await);
    }
    assert!(
        logs.iter().any(|l| l.unacked_rounds > 0),
        "some writes waited for the database"
    );
    // Everything written (acknowledged during the test or not) ends up committed and everywhere.
    for h in [&doc, &other] {
        h.wait_durable(Durability::Server, WAIT).await.unwrap();
    }
    let stored = stored_doc(&cluster.pg.url(), doc.id()).await.unwrap();
    assert_eq!(missing(&stored, &logs, false), Vec::<String>::new());
    for h in [&doc, &other] {
        wait_holds(h, &logs, WAIT).await.unwrap();
    }
    // The nodes kept the clients' sockets: same connections as before the outage.
    for (r, before) in repos.iter().zip(&conns) {
        let now: Vec<_> = r.peers().iter().map(|(c, _)| *c).collect();
        assert_eq!(&now, before, "a client's connection was dropped");
    }
    for r in repos {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_compacting_one_hot_document_lose_no_change() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(2, &[]).unwrap();
    let urls = cluster.urls();
    // Two writers on each node, all on one document: each node commits its clients' changes,
    // applies the other node's, and compacts every 64 increments, at the same time.
    let mut repos = Vec::new();
    for i in 0..4 {
        repos.push(client(&[urls[i % 2].clone()]).await.unwrap());
    }
    let (doc, handles, writers) = write_one_doc(&repos, "c", 150).await;
    let mut logs = Vec::new();
    for w in writers {
        logs.push(w.stop().await);
    }
    for h in &handles {
        h.wait_durable(Durability::Server, WAIT).await.unwrap();
    }

    // The stored document holds every acknowledged change (by hash, not only by key).
    let stored = stored_doc(&cluster.pg.url(), doc.id()).await.unwrap();
    let lost: Vec<_> = logs
        .iter()
        .flat_map(|l| l.hashes.iter())
        .filter(|h| stored.get_change_by_hash(h).is_none())
        .collect();
    assert!(lost.is_empty(), "{} changes lost: {lost:?}", lost.len());
    assert_eq!(missing(&stored, &logs, false), Vec::<String>::new());
    let changes: usize = logs.iter().map(|l| l.written.len()).sum();

    // Both nodes compacted (their counters), and the table holds far fewer chunks than changes.
    let compactions: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| {
            let (_, text) = n.get("/metrics").unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("concord_compactions_total "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        })
        .collect();
    let db = concord::storage::postgres::PostgresStorage::open(
        concord::storage::postgres::PostgresConfig::new(cluster.pg.url()),
    )
    .await
    .unwrap();
    let chunks = concord::storage::Storage::load(&db, &doc.id())
        .await
        .unwrap()
        .chunks
        .len();
    println!("{changes} changes, compactions per node {compactions:?}, {chunks} chunks stored");
    assert!(
        compactions.iter().all(|c| *c > 0),
        "both nodes compacted: {compactions:?}"
    );
    assert!(
        chunks < changes / 4,
        "{chunks} chunks for {changes} changes"
    );
    for h in &handles {
        wait_holds(h, &logs, WAIT).await.unwrap();
    }
    let heads = doc.heads().unwrap();
    let mut stored_heads = stored.get_heads();
    stored_heads.sort();
    let mut ours = heads.clone();
    ours.sort();
    assert_eq!(stored_heads, ours, "the database holds the clients' heads");
    for r in repos {
        r.shutdown().await;
    }
}
