//! Health, metrics and the admin API of a real server on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use automerge::ROOT;
use automerge::transaction::Transactable;
use common::{TestServer, WAIT, client, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_admin_api() {
    let server = TestServer::start(|_| {}).await;
    let c = client(&server.url()).await;
    let doc = c.create().await.unwrap();
    doc.change(|tx| tx.put(ROOT, "title", "hello"))
        .await
        .unwrap();
    doc.wait_synced(WAIT).await.unwrap();

    let (status, body) = http_get(server.addr, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ok\""), "{body}");

    let (status, body) = http_get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "concord_connections 1",
        "concord_documents_stored 1",
        "concord_documents_resident 1",
        "concord_storage_commit_seconds_count",
        "concord_messages_in_total",
        "concord_changes_applied_total",
        "concord_evictions_total",
    ] {
        assert!(body.contains(line), "metrics lack `{line}`:\n{body}");
    }

    assert_eq!(
        http_get(server.addr, "/admin/docs").await.0,
        401,
        "the admin API needs a token"
    );
    let reader = common::mint(&server.keys, "reader", Some(vec![doc.id()]), true);
    assert_eq!(
        http_get(server.addr, &format!("/admin/docs?token={reader}"))
            .await
            .0,
        403
    );
    let all_docs = common::mint(&server.keys, "all-docs", None, false);
    assert_eq!(
        http_get(server.addr, &format!("/admin/docs?token={all_docs}"))
            .await
            .0,
        403,
        "a token for every document without the admin claim is not an admin credential"
    );
    let t = server.token.clone();
    let (status, body) = http_get(server.addr, &format!("/admin/docs?token={t}")).await;
    assert_eq!(status, 200);
    assert!(body.contains(&doc.id().to_string()), "{body}");
    let heads = doc.heads().unwrap();
    assert!(
        body.contains(&heads[0].to_string()),
        "admin list shows the heads: {body}"
    );

    let (status, body) =
        http_get(server.addr, &format!("/admin/docs/{}?token={t}", doc.id())).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"title\":\"hello\""), "{body}");
    assert_eq!(
        http_get(server.addr, &format!("/admin/docs/not-an-id?token={t}"))
            .await
            .0,
        400
    );
    let unknown = concord::DocumentId::from_bytes([9; 16]);
    assert_eq!(
        http_get(server.addr, &format!("/admin/docs/{unknown}?token={t}"))
            .await
            .0,
        404
    );

    // A plain HTTP request to the sync endpoint is refused with a client error.
    let (status, _) = http_get(server.addr, "/sync").await;
    assert!(
        (400..500).contains(&status),
        "GET /sync without upgrade gave {status}"
    );

    c.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_survive_a_server_restart() {
    let server = TestServer::start(|_| {}).await;
    let data = server.dir.path().to_owned();
    let c = client(&server.url()).await;
    let doc = c.create().await.unwrap();
    doc.change(|tx| tx.put(ROOT, "k", "v")).await.unwrap();
    doc.wait_synced(WAIT).await.unwrap();
    c.shutdown().await;
    let dir = server.stop_keeping_data().await;

    let again = TestServer::start(|c| c.data = data.clone()).await;
    let fresh = client(&again.url()).await;
    let found = fresh.find(doc.url()).await.unwrap();
    assert_eq!(found.to_json().unwrap()["k"], "v");
    fresh.shutdown().await;
    again.stop().await;
    drop(dir);
}
