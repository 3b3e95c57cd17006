//! A region that is a cluster: two `concord serve --database` nodes (region `c`, one throwaway
//! PostgreSQL) both configured to dial a SQLite region `s`. Only the node holding the link's
//! PostgreSQL advisory lock dials it (the other shows `standby`); after `kill -9` of the holder,
//! the other node takes the link over and writes keep replicating to `s`. A client of either
//! node learns `regions:2` (the holder shares what `s` acknowledged over the cluster bus).
//!
//! Run: `cargo test -p concord-tests --test cluster_region` (needs PostgreSQL's server binaries,
//! Debian package `postgresql`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use automerge::ROOT;
use automerge::transaction::Transactable;
use concord::core::Durability;
use concord::{Repo, RepoConfig};
use concord_tests::cluster::{Cluster, Node};
use concord_tests::region::{Region, SECRET, replication};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// The state of `node`'s link to `url` (from its /admin/replication).
fn link_state(node: &Node, url: &str) -> String {
    let (_, body) = node.get("/admin/replication").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["url"] == url))
        .and_then(|p| p["state"].as_str())
        .unwrap_or("absent")
        .to_owned()
}

/// Polls until the states of the nodes' links satisfy `ok`; returns them and the time taken.
async fn until_states(
    nodes: &[&Node],
    url: &str,
    what: &str,
    ok: impl Fn(&[String]) -> bool,
) -> (Vec<String>, Duration) {
    let start = Instant::now();
    loop {
        let states: Vec<String> = nodes.iter().map(|n| link_state(n, url)).collect();
        if ok(&states) {
            return (states, start.elapsed());
        }
        assert!(start.elapsed() < LIMIT, "{what}: still {states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Region links from `region` that are up at the region listening on `port`.
async fn links_from(port: u16, token: &str, region: &str) -> usize {
    let v = replication(port, token).await;
    v["peers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p["region"] == region && p["state"] == "up")
                .count()
        })
        .unwrap_or(0)
}

async fn client(dir: &std::path::Path, name: &str, url: String) -> Repo {
    Repo::open_sqlite(
        dir.join(format!("{name}.db")),
        RepoConfig::default().with_server(&url),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_of_a_cluster_region_holds_the_link_and_another_takes_it_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Region::new(dir.path(), "s", vec![]);
    let s_token = s.start();
    let url = s.sync_url();
    let extra = [
        "--region",
        "c",
        "--peer-secret",
        SECRET,
        "--anti-entropy-secs",
        "1",
        "--peer",
        url.as_str(),
    ];
    let mut cluster = Cluster::start(2, &extra).unwrap();

    let (states, _) = until_states(
        &[&cluster.nodes[0], &cluster.nodes[1]],
        &url,
        "one holder",
        |st| {
            st.iter().filter(|s| *s == "up").count() == 1
                && st.iter().filter(|s| *s == "standby").count() == 1
        },
    )
    .await;
    let holder = states.iter().position(|s| s == "up").unwrap();
    let other = 1 - holder;
    assert_eq!(
        links_from(s.port, &s_token, "c").await,
        1,
        "the SQLite region sees one link from the cluster"
    );

    // A client of the standby node: the holder tells the other nodes what the SQLite region
    // acknowledged (cluster bus), so `regions:2` is met wherever the client connected.
    let c = client(dir.path(), "cs", cluster.nodes[other].url()).await;
    let hs = c.create().await.unwrap();
    hs.change(|tx| tx.put(ROOT, "standby", 1)).await.unwrap();
    let start = Instant::now();
    let report = hs
        .wait_durable(Durability::Regions(2), LIMIT)
        .await
        .expect("a client of the standby node learns that the other region committed its write");
    eprintln!(
        "regions:2 through the standby node in {:?}",
        start.elapsed()
    );
    assert!(report.storages.len() >= 2, "{report}");
    c.shutdown().await;

    // A client of the node that holds the link.
    let c = client(dir.path(), "c", cluster.nodes[holder].url()).await;
    let h = c.create().await.unwrap();
    h.change(|tx| tx.put(ROOT, "before", 1)).await.unwrap();
    h.wait_durable(Durability::Regions(2), LIMIT)
        .await
        .expect("a write on the holder reaches the other region");

    c.shutdown().await;
    cluster.nodes[holder].kill9(); // a client of the cluster continues on the other node
    let c = client(dir.path(), "c2", cluster.nodes[other].url()).await;
    let h = c
        .find(h.url())
        .await
        .expect("the document is in the cluster's database");
    let (_, took) = until_states(&[&cluster.nodes[other]], &url, "takeover", |st| {
        st[0] == "up"
    })
    .await;
    eprintln!("the surviving node took the region link over {took:?} after kill -9 of the holder");
    h.change(|tx| tx.put(ROOT, "after", 2)).await.unwrap();
    let report = h
        .wait_durable(Durability::Regions(2), LIMIT)
        .await
        .expect("writes keep replicating after the takeover");
    assert!(report.storages.len() >= 2, "{report}");

    // Read back at the SQLite region itself.
    let v = client(dir.path(), "v", s.url(&s_token)).await;
    let start = Instant::now();
    loop {
        if let Ok(hv) = v.find(h.url()).await
            && hv
                .to_json()
                .ok()
                .is_some_and(|j| j.get("after").is_some() && j.get("before").is_some())
        {
            break;
        }
        assert!(
            start.elapsed() < LIMIT,
            "the SQLite region never got both writes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(links_from(s.port, &s_token, "c").await, 1);
    v.shutdown().await;
    c.shutdown().await;
    s.kill9();
}
