//! Sync in headless Chromium with a real `concord serve` (started by `wasm/scripts/test.sh`,
//! which passes its URL and a token at build time): failover, durability acknowledged by the
//! server, remote changes, presence, offline edits merging on reconnect, conflicts, and
//! deletions propagating through the server (to online peers, and to offline peers with edits
//! when they reconnect), and the server's document list (`listRemote`).
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use concord_wasm::Repo;
use js_sys::Reflect;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn server() -> (&'static str, &'static str) {
    match (
        option_env!("CONCORD_WASM_TEST_SERVER"),
        option_env!("CONCORD_WASM_TEST_TOKEN"),
    ) {
        (Some(url), Some(token)) => (url, token),
        _ => panic!(
            "CONCORD_WASM_TEST_SERVER and CONCORD_WASM_TEST_TOKEN must be set at build time \
             (run wasm/scripts/test.sh, which starts concord serve)"
        ),
    }
}

/// A repo on its own database, connected to the test server (after a dead URL: failover).
async fn connected_repo(db: &str) -> Repo {
    connected_repo_named(db).await.0
}

/// [`connected_repo`], and the name of its IndexedDB database.
async fn connected_repo_named(db: &str) -> (Repo, String) {
    let (url, token) = server();
    let name = format!(
        "{db}-{}",
        hex::encode(concord_wasm::js::random_bytes::<4>())
    );
    let repo = open(&format!(
        r#"{{"database": "{name}", "servers": ["ws://127.0.0.1:1/sync", "{url}"], "token": "{token}",
            "schema": {{"flag": "lww"}}, "backoff": {{"initialMs": 50, "maxMs": 500}}}}"#
    ))
    .await;
    eventually(10_000, "a server connection", || repo.status() != "offline").await;
    (repo, name)
}

fn field(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &key.into()).unwrap()
}

#[wasm_bindgen_test]
async fn two_browsers_sync_through_a_real_server() {
    let alice = connected_repo("alice").await;
    let bob = connected_repo("bob").await;
    let doc = handle_from(ok(alice.create(js(r#"{"text": "hello"}"#)), "create").await);
    let heads = ok(
        doc.wait_durable("server".into(), js(r#"{"timeoutMs": 10000}"#)),
        "durable at server",
    )
    .await;
    assert_eq!(stringify(&heads), stringify(&doc.heads().unwrap()));
    eventually(10_000, "alice synced", || alice.status() == "synced").await;

    let (changes, on_change) = recorder();
    let _off = doc.on("change".into(), on_change.as_ref().clone()).unwrap();
    let bobs = handle_from(ok(bob.find(doc.url().into()), "bob finds alice's doc").await);
    assert_eq!(stringify(&bobs.to_json().unwrap()), r#"{"text":"hello"}"#);
    ok(
        bobs.splice_text("text".into(), 5.into(), 0.into(), " world".into()),
        "bob edits",
    )
    .await;
    eventually(10_000, "bob's edit at alice", || {
        doc.get("text".into()).unwrap().as_string().as_deref() == Some("hello world")
    })
    .await;
    // The event follows the commit of the remote change to alice's IndexedDB.
    eventually(10_000, "a remote change event at alice", || {
        changes
            .borrow()
            .iter()
            .any(|e| field(e, "origin").as_string().as_deref() == Some("remote"))
    })
    .await;

    // Presence: bob hears alice's cursor (retried: bob may still be subscribing).
    let (heard, on_ephemeral) = recorder();
    let _off2 = bobs
        .on("ephemeral".into(), on_ephemeral.as_ref().clone())
        .unwrap();
    let deadline = js_sys::Date::now() + 10_000.0;
    while heard.borrow().is_empty() && js_sys::Date::now() < deadline {
        doc.broadcast(js(r#"{"cursor": 3, "name": "alice"}"#))
            .unwrap();
        concord_wasm::js::sleep(100).await;
    }
    let msg = heard
        .borrow()
        .first()
        .cloned()
        .expect("bob heard alice's presence");
    assert_eq!(
        stringify(&field(&msg, "message")),
        r#"{"cursor":3,"name":"alice"}"#
    );
    assert_eq!(
        field(&msg, "senderId").as_string().unwrap(),
        alice.peer_id().unwrap()
    );
    alice.close();
    bob.close();
}

#[wasm_bindgen_test]
async fn offline_edits_merge_on_reconnect_with_conflicts_exposed() {
    let alice = connected_repo("alice-offline").await;
    let bob = connected_repo("bob-offline").await;
    let doc = handle_from(ok(alice.create(js(r#"{"text": "abc", "flag": 0}"#)), "create").await);
    ok(
        doc.wait_durable("server".into(), js(r#"{"timeoutMs": 10000}"#)),
        "durable",
    )
    .await;
    let bobs = handle_from(ok(bob.find(doc.url().into()), "find").await);

    let (statuses, on_status) = recorder();
    let _off = alice
        .on("status".into(), on_status.as_ref().clone())
        .unwrap();
    alice.set_online(false.into()).unwrap();
    assert_eq!(alice.status(), "offline");
    // Concurrent edits: alice offline, bob online.
    ok(
        doc.splice_text("text".into(), 0.into(), 0.into(), "A".into()),
        "alice offline edit",
    )
    .await;
    ok(doc.put("flag".into(), 1.into()), "alice flag").await;
    ok(
        bobs.splice_text("text".into(), 3.into(), 0.into(), "B".into()),
        "bob edit",
    )
    .await;
    ok(bobs.put("flag".into(), 2.into()), "bob flag").await;
    ok(
        bobs.wait_durable("server".into(), js(r#"{"timeoutMs": 10000}"#)),
        "bob durable",
    )
    .await;
    // Offline, a server wait cannot succeed.
    rejects(
        doc.wait_durable("server".into(), js(r#"{"timeoutMs": 200}"#)),
        "timeout",
    )
    .await;
    concord_wasm::js::sleep(200).await;
    assert_eq!(
        doc.get("text".into()).unwrap().as_string().unwrap(),
        "Aabc",
        "offline: no merge yet"
    );

    alice.set_online(true.into()).unwrap();
    ok(
        doc.wait_durable("server".into(), js(r#"{"timeoutMs": 10000}"#)),
        "alice durable after reconnect",
    )
    .await;
    eventually(10_000, "both replicas converge", || {
        stringify(&doc.to_json().unwrap()) == stringify(&bobs.to_json().unwrap())
    })
    .await;
    assert_eq!(
        doc.get("text".into()).unwrap().as_string().unwrap(),
        "AabcB"
    );
    let seen: Vec<String> = statuses
        .borrow()
        .iter()
        .filter_map(|e| field(e, "status").as_string())
        .collect();
    assert!(
        seen.contains(&"synced".to_owned()),
        "status events after reconnect: {seen:?}"
    );
    // The concurrent `flag` writes are a conflict both sides see; the LWW policy picks the same
    // winner on both.
    assert_eq!(
        js_sys::Array::from(&doc.conflicts("flag".into()).unwrap()).length(),
        2
    );
    assert_eq!(
        stringify(&doc.resolved("flag".into()).unwrap()),
        stringify(&bobs.resolved("flag".into()).unwrap())
    );
    ok(doc.resolve("flag".into(), 3.into()), "resolve").await;
    eventually(10_000, "the resolution reaches bob", || {
        js_sys::Array::from(&bobs.conflicts("flag".into()).unwrap()).length() == 0
            && bobs.get("flag".into()).unwrap().as_f64() == Some(3.0)
    })
    .await;
    alice.close();
    bob.close();
}

#[wasm_bindgen_test]
async fn a_bad_token_never_connects_and_find_is_unavailable() {
    let (url, _) = server();
    let repo = open(&format!(
        r#"{{"servers": "{url}", "token": "not-a-token", "connectWaitMs": 500, "backoff": {{"initialMs": 50, "maxMs": 200}}}}"#
    ))
    .await;
    let missing = concord::DocumentId::from_bytes([9; 16]).url().to_string();
    rejects(repo.find(missing.into()), "unavailable").await;
    assert_eq!(repo.status(), "offline");
    repo.close();
}

/// `deleted` events a recorder saw with `origin`.
fn deleted_from(seen: &Seen, origin: &str) -> usize {
    seen.borrow()
        .iter()
        .filter(|e| field(e, "origin").as_string().as_deref() == Some(origin))
        .count()
}

/// Alice creates a document the server holds, and bob opens it.
async fn shared_doc(
    alice: &Repo,
    bob: &Repo,
) -> (concord_wasm::DocHandle, concord_wasm::DocHandle) {
    let doc = handle_from(ok(alice.create(js(r#"{"title": "shared"}"#)), "create").await);
    ok(
        doc.wait_durable("server".into(), js(r#"{"timeoutMs": 10000}"#)),
        "durable at server",
    )
    .await;
    let bobs = handle_from(ok(bob.find(doc.url().into()), "bob finds it").await);
    (doc, bobs)
}

#[wasm_bindgen_test]
async fn a_deletion_by_another_client_purges_the_local_copy_and_is_reported() {
    use concord::storage::Storage;
    let alice = connected_repo("alice-del").await;
    let (bob, bob_db) = connected_repo_named("bob-del").await;
    let (doc, bobs) = shared_doc(&alice, &bob).await;
    let id: concord::DocumentId = doc.document_id().parse().unwrap();
    let (on_handle, cb_handle) = recorder();
    let (on_repo, cb_repo) = recorder();
    let _o1 = bobs
        .on("deleted".into(), cb_handle.as_ref().clone())
        .unwrap();
    let _o2 = bob.on("deleted".into(), cb_repo.as_ref().clone()).unwrap();
    let probe = concord_wasm::IdbStorage::open(&bob_db).await.unwrap();
    assert!(!probe.load(&id).await.unwrap().is_empty(), "bob stores it");

    ok(doc.delete(None), "alice deletes").await;
    eventually(10_000, "the server confirms alice's deletion", || {
        let d = alice.deletion(doc.url().into()).unwrap();
        !d.is_null() && field(&d, "confirmed") == JsValue::TRUE
    })
    .await;
    eventually(10_000, "bob's handle and repo hear of it", || {
        deleted_from(&on_handle, "remote") == 1 && deleted_from(&on_repo, "remote") == 1
    })
    .await;
    let event = on_handle.borrow()[0].clone();
    assert_eq!(
        field(&event, "documentId").as_string().unwrap(),
        doc.document_id()
    );
    assert_eq!(
        field(&event, "by").as_string().unwrap(),
        "wasm-tests",
        "the principal of alice's token, as the server saw it"
    );
    // Bob's copy is gone: from memory (typed errors) and from IndexedDB (purged).
    assert_eq!(kind(&bobs.to_json().unwrap_err()), "deleted");
    rejects(bobs.put("title".into(), "mine".into()), "deleted").await;
    rejects(bob.find(doc.url().into()), "deleted").await;
    wait_purged(&probe, &id, 5_000, "bob's stored chunks are purged").await;
    assert!(
        probe
            .tombstones()
            .await
            .unwrap()
            .iter()
            .any(|(d, _)| *d == id)
    );
    probe.close();
    // A client that never held it: `find` says deleted, not unavailable.
    let carol = connected_repo("carol-del").await;
    rejects(carol.find(doc.url().into()), "deleted").await;
    alice.close();
    bob.close();
    carol.close();
}

#[wasm_bindgen_test]
async fn an_offline_edit_to_a_deleted_document_is_refused_with_the_event() {
    let alice = connected_repo("alice-deloff").await;
    let bob = connected_repo("bob-deloff").await;
    let (doc, bobs) = shared_doc(&alice, &bob).await;
    let (on_handle, cb_handle) = recorder();
    let _o = bobs
        .on("deleted".into(), cb_handle.as_ref().clone())
        .unwrap();

    bob.set_online(false.into()).unwrap();
    ok(doc.delete(None), "alice deletes").await;
    eventually(10_000, "the server confirms alice's deletion", || {
        let d = alice.deletion(doc.url().into()).unwrap();
        !d.is_null() && field(&d, "confirmed") == JsValue::TRUE
    })
    .await;
    // Offline, bob does not know: his edit commits locally.
    ok(
        bobs.put("title".into(), "offline edit".into()),
        "bob's offline edit",
    )
    .await;
    assert!(on_handle.borrow().is_empty());
    assert_eq!(
        bobs.get("title".into()).unwrap().as_string().unwrap(),
        "offline edit"
    );

    // Back online: the server refuses the edit; bob's app is told, and the copy is gone.
    bob.set_online(true.into()).unwrap();
    eventually(10_000, "bob hears of the deletion", || {
        deleted_from(&on_handle, "remote") == 1
    })
    .await;
    assert_eq!(kind(&bobs.get("title".into()).unwrap_err()), "deleted");
    rejects(bobs.put("title".into(), "again".into()), "deleted").await;
    // Nobody resurrected it: the server still answers deleted.
    let carol = connected_repo("carol-deloff").await;
    rejects(carol.find(doc.url().into()), "deleted").await;
    alice.close();
    bob.close();
    carol.close();
}

#[wasm_bindgen_test]
async fn list_remote_pages_the_principals_documents_and_refuses_a_bad_token() {
    let alice = connected_repo("alice-list").await;
    let mut created = Vec::new();
    for i in 0..3 {
        let doc = handle_from(ok(alice.create(js(&format!(r#"{{"i": {i}}}"#))), "create").await);
        ok(
            doc.wait_durable("server".into(), js(r#"{"timeoutMs": 10000}"#)),
            "durable at server",
        )
        .await;
        created.push(doc.url());
    }
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = JsValue::NULL;
    for _ in 0..100 {
        let opts = js_sys::Object::new();
        Reflect::set(&opts, &"limit".into(), &2.into()).unwrap();
        Reflect::set(&opts, &"cursor".into(), &cursor).unwrap();
        let page = ok(alice.list_remote(opts.into()), "listRemote").await;
        let docs = js_sys::Array::from(&field(&page, "documents"));
        assert!(docs.length() <= 2);
        seen.extend(docs.iter().map(|d| field(&d, "url").as_string().unwrap()));
        cursor = field(&page, "next");
        if cursor.is_null() {
            break;
        }
    }
    for url in &created {
        assert!(seen.contains(url), "{url} not listed in {seen:?}");
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no entry twice");

    let (url, _) = server();
    let stranger = open(&format!(
        r#"{{"servers": "{url}", "token": "not-a-token", "backoff": {{"initialMs": 50, "maxMs": 200}}}}"#
    ))
    .await;
    rejects(stranger.list_remote(JsValue::UNDEFINED), "denied").await;
    let nobody = open(r#"{"servers": "ws://127.0.0.1:1/sync"}"#).await;
    rejects(nobody.list_remote(JsValue::UNDEFINED), "network").await;
    alice.close();
    stranger.close();
    nobody.close();
}
