//! Three `concord serve --database` nodes on one throwaway PostgreSQL, with Rust clients
//! (`concord::Repo`) spread over them: they edit the same document concurrently and converge,
//! presence (ephemeral messages) crosses nodes and never comes back to its sender, and the
//! cross-node delivery latency is printed next to the same-node one (p50/p99; measured, not
//! asserted).
//!
//! The stock automerge-repo JS clients on a cluster are in `tests/js/cluster.test.mjs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc};
use concord::core::Durability;
use concord::repo::DocEvent;
use concord::storage::MemoryStorage;
use concord::{DocHandle, DocumentId, Repo, RepoConfig};
use concord_tests::cluster::{Cluster, percentile};

const WAIT: Duration = Duration::from_secs(30);

async fn client(url: &str) -> Repo {
    let mut config = RepoConfig::default().with_server(url);
    config.backoff.initial = Duration::from_millis(20);
    let repo = Repo::open(Arc::new(MemoryStorage::new()), config)
        .await
        .unwrap();
    repo.wait_connected(WAIT).await.unwrap();
    repo
}

/// Waits until `doc` satisfies `ok` (checked at every change), at most `WAIT`.
async fn until(doc: &DocHandle, what: &str, ok: impl Fn(&automerge::Automerge) -> bool) {
    let mut events = doc.subscribe();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if doc.with_doc(&ok).unwrap() {
            return;
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(_) => {}
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

fn int(doc: &automerge::Automerge, key: &str) -> Option<i64> {
    match doc.get(ROOT, key).ok()?? {
        (automerge::Value::Scalar(s), _) => s.as_i64(),
        _ => None,
    }
}

/// Time from a write on `from` until `to` sees it, for `rounds` writes.
async fn latencies(from: &DocHandle, to: &DocHandle, key: &str, rounds: i64) -> Vec<Duration> {
    let mut out = Vec::new();
    for i in 0..rounds {
        let mut events = to.subscribe();
        let started = Instant::now();
        from.change(|tx| tx.put(ROOT, key, i)).await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while to.with_doc(|d| int(d, key)).unwrap() != Some(i) {
            tokio::time::timeout_at(deadline, events.recv())
                .await
                .unwrap_or_else(|_| panic!("round {i} of {key} never arrived"))
                .ok();
        }
        out.push(started.elapsed());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_converge_relay_presence_and_report_latency() {
    let cluster = Cluster::start(3, &[]).unwrap();
    let urls = cluster.urls();

    // Two clients per node.
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(client(&urls[i % 3]).await);
    }
    let first = clients[0].create().await.unwrap();
    first
        .change(|tx| tx.put(ROOT, "title", "cluster"))
        .await
        .unwrap();
    first.wait_durable(Durability::Server, WAIT).await.unwrap();
    let id: DocumentId = first.id();
    let mut handles = vec![first];
    for c in &clients[1..] {
        handles.push(c.find(id).await.unwrap());
    }

    // Every client writes 20 keys of its own concurrently, each acknowledged by its node.
    let writers: Vec<_> = handles
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, h)| {
            tokio::spawn(async move {
                for k in 0..20 {
                    h.change(|tx| tx.put(ROOT, format!("c{i}-{k}"), k))
                        .await
                        .unwrap();
                }
                h.wait_durable(Durability::Server, WAIT).await.unwrap();
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    for (i, h) in handles.iter().enumerate() {
        until(h, &format!("client {i} to hold all 120 keys"), |d| {
            (0..6).all(|c| int(d, &format!("c{c}-19")) == Some(19))
        })
        .await;
    }
    let heads = handles[0].heads().unwrap();
    for (i, h) in handles.iter().enumerate() {
        let deadline = Instant::now() + WAIT;
        while h.heads().unwrap() != heads {
            assert!(Instant::now() < deadline, "client {i} did not converge");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(h.with_doc(|d| d.keys(ROOT).count()).unwrap(), 121);
    }

    // Presence: a message from a client of node 1 reaches the clients of nodes 2 and 3 (and the
    // other client of node 1), once each, and never comes back to its sender.
    let mut inboxes: Vec<_> = handles.iter().map(DocHandle::subscribe).collect();
    let sender = clients[0].peer_id();
    handles[0].broadcast(b"cursor at 7".to_vec()).unwrap();
    for (i, inbox) in inboxes.iter_mut().enumerate().skip(1) {
        let got = tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(DocEvent::Ephemeral { from, data, .. }) = inbox.recv().await {
                    return (from, data);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("client {i} (node {}) got no presence", i % 3 + 1));
        assert_eq!(got, (sender.clone(), b"cursor at 7".to_vec()));
    }
    // A second message, so that a duplicate or an echo of the first would be seen before it.
    handles[0].broadcast(b"cursor at 8".to_vec()).unwrap();
    for (i, inbox) in inboxes.iter_mut().enumerate() {
        if i == 0 {
            continue;
        }
        let next = tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(DocEvent::Ephemeral { data, .. }) = inbox.recv().await {
                    return data;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(next, b"cursor at 8".to_vec(), "client {i}: no duplicate");
    }
    while let Ok(e) = inboxes[0].try_recv() {
        assert!(
            !matches!(e, DocEvent::Ephemeral { .. }),
            "the sender got its own presence back"
        );
    }

    // Delivery latency: node 1 -> node 2 versus node 1 -> node 1.
    let mut cross = latencies(&handles[0], &handles[1], "cross", 40).await;
    let mut same = latencies(&handles[0], &handles[3], "same", 40).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "delivery latency, 40 writes each: cross-node p50 {:.1} ms p99 {:.1} ms; same-node p50 {:.1} ms p99 {:.1} ms",
        ms(percentile(&mut cross, 50.0)),
        ms(percentile(&mut cross, 99.0)),
        ms(percentile(&mut same, 50.0)),
        ms(percentile(&mut same, 99.0)),
    );

    // Every node sees the three live nodes.
    let (status, text) = cluster.nodes[2].get("/admin/cluster").unwrap();
    assert_eq!(status, 200, "{text}");
    let listed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed["node"], "node-3");
    let ids: Vec<&str> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["node"].as_str())
        .collect();
    assert_eq!(ids, ["node-1", "node-2", "node-3"], "{text}");

    // Node 2's metrics: its bus measured the lag of node 1's and node 3's commit notices.
    let (status, text) = cluster.nodes[1].get("/metrics").unwrap();
    assert_eq!(status, 200, "{text}");
    let metric = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    };
    let measured = metric("concord_cluster_bus_lag_notices_total");
    assert!(
        measured >= 40.0,
        "node 2 measured {measured} commit notices"
    );
    assert!(metric("concord_db_pool_connections") >= 1.0);
    assert!(text.contains("concord_cluster_node_info{node=\"node-2\"} 1"));
    println!(
        "bus lag on node 2 (commit on another node to the notice's delivery): mean {:.2} ms over {measured} notices",
        metric("concord_cluster_bus_lag_seconds_total") * 1000.0 / measured,
    );

    for c in clients {
        c.shutdown().await;
    }
}
