//! Three regions as real `concord serve` processes on 127.0.0.1, replicating through
//! authenticated region links (a shared `--peer-secret`), with clients writing to each region
//! concurrently. During the writes, the link between two regions is cut by a TCP proxy and healed,
//! and one region is killed with SIGKILL and restarted; its client fails over to another region
//! and keeps writing. Afterwards every region and client converges within a bounded time, and
//! every write acknowledged at `Regions(2)` is present everywhere.
//!
//! Like `cli_doc.rs`, this builds the `concord` binary of this target directory if needed (or
//! uses `CONCORD_BIN`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use automerge::ROOT;
use automerge::transaction::Transactable;
use concord::core::Durability;
use concord::{AutomergeUrl, DocHandle, Repo, RepoConfig};
use concord_tests::proxy::Proxy;
use concord_tests::region::Region;

const CONVERGE: Duration = Duration::from_secs(60);

async fn client(dir: &Path, name: &str, urls: Vec<String>) -> Repo {
    let mut config = RepoConfig {
        servers: urls,
        ..RepoConfig::default()
    };
    config.backoff.initial = Duration::from_millis(50);
    config.backoff.max = Duration::from_millis(500);
    Repo::open_sqlite(dir.join(format!("{name}.db")), config)
        .await
        .unwrap()
}

async fn find_within(repo: &Repo, url: &AutomergeUrl, limit: Duration) -> DocHandle {
    let start = Instant::now();
    loop {
        if let Ok(h) = repo.find(url.clone()).await {
            return h;
        }
        assert!(
            start.elapsed() < limit,
            "document never reached this replica"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn keys(h: &DocHandle) -> serde_json::Map<String, serde_json::Value> {
    h.to_json()
        .unwrap()
        .as_object()
        .cloned()
        .unwrap_or_default()
}

async fn put(h: &DocHandle, key: &str, n: i64) {
    let key = key.to_owned();
    h.change(move |tx| tx.put(ROOT, key.as_str(), n))
        .await
        .unwrap();
}

async fn wait_for_keys(h: &DocHandle, want: &[String], limit: Duration, who: &str) {
    let start = Instant::now();
    loop {
        let have = keys(h);
        let missing: Vec<&String> = want.iter().filter(|k| !have.contains_key(*k)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{who}: {} writes missing after {limit:?}, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_converge_through_a_partition_a_kill_9_and_failover() {
    let dir = tempfile::tempdir().unwrap();
    let mut r0 = Region::new(dir.path(), "r0", vec![]);
    let token = r0.start();
    let proxy = Proxy::start(r0.port).await.unwrap(); // r2 reaches r0 only through the proxy
    let mut r1 = Region::new(dir.path(), "r1", vec![r0.sync_url()]);
    r1.start();
    let via_proxy = format!("ws://127.0.0.1:{}/sync", proxy.port());
    let mut r2 = Region::new(dir.path(), "r2", vec![via_proxy, r1.sync_url()]);
    r2.start();

    // Each client prefers its own region and fails over to the others.
    let c0 = client(dir.path(), "c0", vec![r0.url(&token), r1.url(&token)]).await;
    let c1 = client(dir.path(), "c1", vec![r1.url(&token), r0.url(&token)]).await;
    let c2 = client(dir.path(), "c2", vec![r2.url(&token), r1.url(&token)]).await;
    let h0 = c0.create().await.unwrap();
    put(&h0, "created", 0).await;
    h0.wait_durable(Durability::Regions(3), CONVERGE)
        .await
        .expect("the new document reaches all three regions");
    let url = h0.url();
    let h1 = find_within(&c1, &url, CONVERGE).await;
    let h2 = find_within(&c2, &url, CONVERGE).await;

    let mut written = Vec::new();
    let mut durable2 = Vec::new();
    for round in 0..30i64 {
        for (i, h) in [&h0, &h1, &h2].into_iter().enumerate() {
            let key = format!("c{i}-{round}");
            put(h, &key, round).await;
            written.push(key);
        }
        if round % 5 == 0 {
            // A write acknowledged at Regions(2): committed by two regions before we go on.
            if let Ok(report) = h0
                .wait_durable(Durability::Regions(2), Duration::from_secs(10))
                .await
            {
                assert!(report.storages.len() >= 2);
                durable2.push(format!("c0-{round}"));
            }
        }
        match round {
            5 => proxy.cut(), // partition r0 <-> r2
            10 => r1.kill9(), // c1 fails over to r0 and keeps writing
            15 => {
                // c1's writes reach r0 (and c0) while r1 is down: failover works.
                wait_for_keys(&h0, &["c1-14".to_owned()], CONVERGE, "c0 (failover)").await;
            }
            20 => proxy.heal(),
            22 => {
                r1.start();
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        !durable2.is_empty(),
        "some writes must be acknowledged at Regions(2)"
    );

    // Convergence of the clients.
    for (h, who) in [(&h0, "c0"), (&h1, "c1"), (&h2, "c2")] {
        wait_for_keys(h, &written, CONVERGE, who).await;
    }
    // Convergence of every region, checked by a fresh client talking to that region only.
    for (r, name) in [(&r0, "v0"), (&r1, "v1"), (&r2, "v2")] {
        let v = client(dir.path(), name, vec![r.url(&token)]).await;
        let h = find_within(&v, &url, CONVERGE).await;
        wait_for_keys(&h, &written, CONVERGE, &r.name).await;
        for k in &durable2 {
            assert!(
                keys(&h).contains_key(k),
                "{}: Regions(2) write {k} lost",
                r.name
            );
        }
        v.shutdown().await;
    }
    // Every region link reports no lag once converged.
    let status = concord_tests::region::replication(r0.port, &token).await;
    assert_eq!(status["region"], "r0", "{status}");
    for c in [c0, c1, c2] {
        c.shutdown().await;
    }
    r2.kill9();
    r1.kill9();
    r0.kill9();
}
