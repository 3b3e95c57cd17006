//! The client JSON API of a real server on 127.0.0.1: `GET /v1/docs` (a principal's documents,
//! paged by cursor) and `GET /v1/docs/{id}/authors` (attribution), through `Repo::list_remote`,
//! `Repo::fetch_authors` and raw HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use automerge::ROOT;
use automerge::transaction::Transactable;
use common::{TestServer, WAIT, client, http_get, http_get_as, http_raw, mint};
use concord::api::{ListQuery, Source};
use concord::history::HistoryQuery;
use concord::{DocumentId, Repo, RepoError};

/// Creates a document with one write and waits until the server holds it.
async fn create(repo: &Repo) -> DocumentId {
    let doc = repo.create().await.unwrap();
    doc.change(|tx| tx.put(ROOT, "k", 1)).await.unwrap();
    doc.wait_synced(WAIT).await.unwrap();
    doc.id()
}

/// Every page of `repo`'s remote list, `limit` at a time.
async fn all_pages(repo: &Repo, limit: usize) -> Vec<(DocumentId, Source)> {
    let mut out = Vec::new();
    let mut query = ListQuery::new().limit(limit);
    for _ in 0..1000 {
        let page = repo.list_remote(&query).await.unwrap();
        assert!(page.documents.len() <= limit);
        out.extend(page.documents.iter().map(|d| (d.doc, d.source)));
        match page.next {
            Some(c) => query = ListQuery::new().limit(limit).after(c),
            None => return out,
        }
    }
    panic!("paging did not end");
}

/// Waits (bounded) until `repo` lists `n` documents: the server records ownership in the commit
/// of the document's first changes, which may land just after the sync acknowledgement.
async fn wait_listed(repo: &Repo, n: usize) -> Vec<(DocumentId, Source)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let docs = all_pages(repo, 100).await;
        if docs.len() >= n || tokio::time::Instant::now() > deadline {
            return docs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_lists_only_its_documents() {
    let server = TestServer::start(|_| {}).await;
    let alice = client(&server.url_with(&mint(&server.keys, "alice", None, false))).await;
    let bob = client(&server.url_with(&mint(&server.keys, "bob", None, false))).await;
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(create(&alice).await);
    }
    let theirs = vec![create(&bob).await, create(&bob).await];

    let listed = wait_listed(&alice, 3).await;
    assert_eq!(
        listed,
        mine.iter()
            .map(|d| (*d, Source::Created))
            .collect::<Vec<_>>(),
        "alice's documents, oldest first"
    );
    let listed = wait_listed(&bob, 2).await;
    assert_eq!(listed.iter().map(|(d, _)| *d).collect::<Vec<_>>(), theirs);
    // Bob writing to alice's document does not make it his.
    let shared = bob.find(mine[0]).await.unwrap();
    shared.change(|tx| tx.put(ROOT, "bob", true)).await.unwrap();
    shared.wait_synced(WAIT).await.unwrap();
    assert_eq!(all_pages(&bob, 100).await.len(), 2);

    // A token naming documents lists them first (as grants), then what its principal created.
    let carol_token = mint(&server.keys, "carol", Some(vec![theirs[1], mine[2]]), false);
    let carol = client(&server.url_with(&carol_token)).await;
    let listed = all_pages(&carol, 1).await;
    let mut granted = [theirs[1], mine[2]];
    granted.sort();
    assert_eq!(
        listed,
        granted
            .iter()
            .map(|d| (*d, Source::Grant))
            .collect::<Vec<_>>()
    );

    // Pages of two: [d0, d1] then [d2], and the last page says so.
    let p1 = alice.list_remote(&ListQuery::new().limit(2)).await.unwrap();
    assert_eq!(p1.documents.len(), 2);
    let next = p1.next.clone().expect("a second page");
    let p2 = alice
        .list_remote(&ListQuery::new().limit(2).after(next))
        .await
        .unwrap();
    assert_eq!(
        p2.documents.iter().map(|d| d.doc).collect::<Vec<_>>(),
        vec![mine[2]]
    );
    assert_eq!(p2.next, None);

    // Bad input: typed errors, clear messages.
    let t = mint(&server.keys, "alice", None, false);
    for (path, status, says) in [
        ("/v1/docs?limit=0", 400, "invalid limit"),
        ("/v1/docs?limit=5000", 400, "invalid limit"),
        ("/v1/docs?cursor=zzz", 400, "invalid cursor"),
        ("/v1/docs?cursor=c:x", 400, "invalid cursor"),
    ] {
        let (got, body) = http_get_as(&server.addr.to_string(), path, Some(&t)).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    let (status, body) = http_get(server.addr, "/v1/docs").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("authentication required"), "{body}");
    let (status, _) = http_get_as(&server.addr.to_string(), "/v1/docs", Some("not.a.token")).await;
    assert_eq!(status, 401);
    // A client whose token the server refuses (it never connects; the API says why).
    let forged = Repo::open(
        std::sync::Arc::new(concord::storage::MemoryStorage::new()),
        concord::RepoConfig::default()
            .with_server(format!("ws://{}/sync?token=forged", server.addr)),
    )
    .await
    .unwrap();
    match forged.list_remote(&ListQuery::new()).await {
        Err(RepoError::Remote(e))
            if matches!(*e, concord::repo::RemoteError::Denied { status: 401, .. }) => {}
        other => panic!("expected a 401 refusal, got {other:?}"),
    }
    for repo in [alice, bob, carol, forged] {
        repo.shutdown().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_is_stable_while_documents_are_created() {
    let server = TestServer::start(|_| {}).await;
    let token = mint(&server.keys, "dana", None, false);
    let lister = client(&server.url_with(&token)).await;
    let creator = client(&server.url_with(&token)).await;
    let mut before = Vec::new();
    for _ in 0..6 {
        before.push(create(&creator).await);
    }
    wait_listed(&lister, 6).await;
    // Page through one document at a time while the same principal keeps creating.
    let making = tokio::spawn({
        let creator = creator.clone();
        async move {
            let mut made = Vec::new();
            for _ in 0..6 {
                made.push(create(&creator).await);
            }
            made
        }
    });
    let mut seen = Vec::new();
    let mut query = ListQuery::new().limit(1);
    let mut last_cursor = None;
    loop {
        let page = lister.list_remote(&query).await.unwrap();
        seen.extend(page.documents.iter().map(|d| d.doc));
        last_cursor = page
            .documents
            .last()
            .map(|d| d.cursor.clone())
            .or(last_cursor);
        match page.next {
            Some(c) => query = ListQuery::new().limit(1).after(c),
            None => break,
        }
    }
    let made = making.await.unwrap();
    // Nothing repeated; everything that existed before paging started was seen, in order.
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "a document was listed twice: {seen:?}"
    );
    assert_eq!(&seen[..6], &before[..]);
    // Resuming from the last cursor picks up exactly the ones not seen yet.
    let everything: Vec<DocumentId> = before.iter().chain(&made).copied().collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut rest = Vec::new();
        let mut q = ListQuery::new().limit(100);
        if let Some(c) = &last_cursor {
            q = q.after(c.clone());
        }
        let page = lister.list_remote(&q).await.unwrap();
        rest.extend(page.documents.iter().map(|d| d.doc));
        let mut all = seen.clone();
        all.extend(rest.iter().filter(|d| !seen.contains(d)));
        if all.len() == everything.len() || tokio::time::Instant::now() > deadline {
            assert!(
                rest.iter().all(|d| !seen.contains(d)),
                "resumed pages repeat nothing"
            );
            assert_eq!(all, everything, "every document once, in creation order");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lister.shutdown().await;
    creator.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shows_who_wrote_each_change() {
    let server = TestServer::start(|_| {}).await;
    let alice = client(&server.url_with(&mint(&server.keys, "alice", None, false))).await;
    let bob = client(&server.url_with(&mint(&server.keys, "bob", None, false))).await;
    let doc = alice.create().await.unwrap();
    doc.wait_synced(WAIT).await.unwrap();
    doc.change(|tx| tx.put(ROOT, "title", "draft"))
        .await
        .unwrap();
    doc.wait_synced(WAIT).await.unwrap();
    let alice_change = doc.heads().unwrap()[0];
    let theirs = bob.find(doc.id()).await.unwrap();
    theirs
        .change(|tx| tx.put(ROOT, "title", "final"))
        .await
        .unwrap();
    theirs.wait_synced(WAIT).await.unwrap();
    let bob_change = theirs.heads().unwrap()[0];

    // Before asking the server, the client knows no authors.
    let page = theirs.history(&HistoryQuery::new()).await.unwrap();
    assert!(page.changes.iter().all(|c| c.author.is_none()));
    // The server may commit the authors just after acknowledging: wait (bounded).
    let deadline = tokio::time::Instant::now() + WAIT;
    let page = loop {
        bob.fetch_authors(doc.id()).await.unwrap();
        let page = theirs.history(&HistoryQuery::new()).await.unwrap();
        if page.changes.iter().all(|c| c.author.is_some()) || tokio::time::Instant::now() > deadline
        {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let who: Vec<(automerge::ChangeHash, String)> = page
        .changes
        .iter()
        .map(|c| {
            (
                c.hash,
                c.author
                    .as_ref()
                    .map(|a| a.principal.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(page.changes.len(), 3, "create, draft, final: {who:?}");
    assert_eq!(who[0], (bob_change, "bob".to_owned()), "newest first");
    assert_eq!(who[1].0, alice_change);
    assert!(who[1..].iter().all(|(_, p)| p == "alice"), "{who:?}");

    // A token that cannot read the document gets 404, like a document that does not exist.
    let other = mint(
        &server.keys,
        "eve",
        Some(vec![DocumentId::from_bytes([1; 16])]),
        true,
    );
    let path = format!("/v1/docs/{}/authors", doc.id());
    let (status, body) = http_get_as(&server.addr.to_string(), &path, Some(&other)).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = http_get_as(
        &server.addr.to_string(),
        "/v1/docs/not-a-doc/authors",
        Some(&server.token),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // A deleted document: its authors are gone (410, `RepoError::Deleted`), and it is not listed.
    let gone = create(&alice).await;
    assert_eq!(wait_listed(&alice, 2).await.len(), 2);
    alice.find(gone).await.unwrap().delete().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while alice.deletion(&gone).is_none_or(|t| !t.confirmed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no server confirmed the deletion"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match alice.fetch_authors(gone).await {
        Err(RepoError::Deleted(d)) => assert_eq!(d, gone),
        other => panic!("expected Deleted, got {other:?}"),
    }
    let listed = all_pages(&alice, 100).await;
    assert!(listed.iter().all(|(d, _)| *d != gone), "{listed:?}");

    // CORS: a browser's preflight from another origin is answered.
    let addr = server.addr.to_string();
    let preflight = format!(
        "OPTIONS /v1/docs HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://app.example\r\n\
         Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\n\
         Connection: close\r\n\r\n"
    );
    let text = http_raw(&addr, &preflight).await.to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("access-control-allow-origin: *"), "{text}");
    assert!(
        text.contains("access-control-allow-headers: authorization"),
        "{text}"
    );

    alice.shutdown().await;
    bob.shutdown().await;
    server.stop().await;
}

/// Every change a client sent is attributed, whatever chunk form its sync message used.
/// (Automerge's v2 sync sends a creator's first changes as one document chunk.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_attributed() {
    let server = TestServer::start(|_| {}).await;
    let alice = client(&server.url_with(&mint(&server.keys, "alice", None, false))).await;
    let doc = alice.create().await.unwrap();
    doc.change(|tx| tx.put(ROOT, "title", "draft"))
        .await
        .unwrap();
    doc.wait_synced(WAIT).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let authors = alice.fetch_authors(doc.id()).await.unwrap();
        if authors.len() == 2 {
            assert!(
                authors.iter().all(|a| a.principal == "alice"),
                "{authors:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "attributed: {authors:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alice.shutdown().await;
    server.stop().await;
}
