//! Memory is bounded by the working set: idle documents are evicted and reloaded on demand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use automerge::ROOT;
use automerge::transaction::Transactable;
use common::{TestServer, WAIT, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_documents_stay_bounded_and_all_are_still_served() {
    const DOCS: usize = 30;
    const MAX: usize = 5;
    let server = TestServer::start(|c| {
        c.max_resident = MAX;
        c.evict_idle_secs = 3600;
        // The bound is split between shards (at least one document each): one shard keeps
        // the arithmetic of this test exact.
        c.shards = 1;
    })
    .await;
    let writer = client(&server.url()).await;
    let mut ids = Vec::new();
    let mut peak = 0;
    for i in 0..DOCS {
        let doc = writer.create().await.unwrap();
        doc.change(|tx| tx.put(ROOT, "n", i as i64)).await.unwrap();
        doc.wait_synced(WAIT).await.unwrap();
        ids.push(doc.id());
        peak = peak.max(server.repo.resident_documents());
    }
    // Give the tick (500 ms) a chance to run, then check the bound.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let resident = server.repo.resident_documents();
    assert!(
        resident <= MAX,
        "{resident} documents resident, limit {MAX}"
    );
    assert!(server.repo.stats().evictions >= (DOCS - MAX) as u64);
    println!("peak resident {peak}, settled {resident}");
    writer.shutdown().await;

    // A fresh client gets every document back, even the evicted ones.
    let reader = client(&server.url()).await;
    for (i, id) in ids.iter().enumerate() {
        let doc = tokio::time::timeout(WAIT, reader.find(*id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(doc.to_json().unwrap()["n"], i as i64, "document {i}");
    }
    reader.shutdown().await;
    server.stop().await;
}
