//! The JavaScript API in Node (in-memory storage, no network): writes and reads at paths,
//! `change(fn)`, events, presence without peers, durability levels, conflict reads, and typed
//! errors for bad input and a closed repo.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use concord_wasm::Repo;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

#[wasm_bindgen_test]
async fn path_writes_and_reads() {
    let repo = open(r#"{"schema": {"title": "lww"}}"#).await;
    let doc = handle_from(
        ok(
            repo.create(js(r#"{"title": "draft", "todos": []}"#)),
            "create",
        )
        .await,
    );
    assert!(doc.url().starts_with("automerge:"));
    ok(doc.put("title".into(), "hello".into()), "put").await;
    ok(
        doc.insert(
            "todos".into(),
            0.into(),
            js(r#"{"text": "milk", "done": false}"#),
        ),
        "insert",
    )
    .await;
    ok(
        doc.insert("todos".into(), 0.into(), "first".into()),
        "insert at front",
    )
    .await;
    ok(
        doc.splice_text("title".into(), 5.into(), 0.into(), ", world".into()),
        "splice",
    )
    .await;
    ok(
        doc.increment("visits".into(), JsValue::UNDEFINED),
        "increment new",
    )
    .await;
    ok(doc.increment("visits".into(), 4.into()), "increment").await;
    ok(doc.delete(Some("todos/1/done".into())), "delete").await;
    assert_eq!(
        stringify(&doc.to_json().unwrap()),
        r#"{"title":"hello, world","todos":["first",{"text":"milk"}],"visits":5}"#
    );
    assert_eq!(
        doc.get("todos/1/text".into()).unwrap().as_string().unwrap(),
        "milk"
    );
    assert_eq!(
        doc.get(js(r#"["todos", 1, "text"]"#))
            .unwrap()
            .as_string()
            .unwrap(),
        "milk"
    );
    assert!(doc.get("nope".into()).unwrap().is_undefined());
    assert_eq!(
        doc.resolved("title".into()).unwrap().as_string().unwrap(),
        "hello, world"
    );
    ok(doc.put("flag".into(), true.into()), "put flag").await;
    let conflicts = doc.conflicts("flag".into()).unwrap();
    assert_eq!(
        js_sys::Array::from(&conflicts).length(),
        0,
        "one writer: no conflict"
    );
    // The same document through find.
    let again = handle_from(ok(repo.find(doc.url().into()), "find").await);
    assert_eq!(
        stringify(&again.to_json().unwrap()),
        stringify(&doc.to_json().unwrap())
    );
    repo.close();
}

#[wasm_bindgen_test]
async fn change_callback_is_atomic() {
    let repo = open("{}").await;
    let doc = handle_from(ok(repo.create(js("{}")), "create").await);
    let f = js_sys::Function::new_with_args(
        "d",
        "d.put('a', 1); d.put('b', {c: [1, 2]}); d.increment('n', 2);",
    );
    let heads = ok(doc.change(f.into()), "change").await;
    assert_eq!(js_sys::Array::from(&heads).length(), 1);
    assert_eq!(
        stringify(&doc.to_json().unwrap()),
        r#"{"a":1,"b":{"c":[1,2]},"n":2}"#
    );
    // A callback that throws after a write applies nothing.
    let f = js_sys::Function::new_with_args("d", "d.put('a', 2); throw new Error('boom');");
    let msg = rejects(doc.change(f.into()), "change").await;
    assert!(msg.contains("boom"), "{msg}");
    // A write to a bad path inside the callback rejects the whole change.
    let f = js_sys::Function::new_with_args("d", "d.put('a', 3); d.spliceText('a', 0, 0, 'x');");
    rejects(doc.change(f.into()), "path").await;
    assert_eq!(doc.get("a".into()).unwrap().as_f64(), Some(1.0));
    repo.close();
}

#[wasm_bindgen_test]
async fn change_events_carry_heads() {
    let repo = open("{}").await;
    let doc = handle_from(ok(repo.create(js("{}")), "create").await);
    let (seen, cb) = recorder();
    let off = doc.on("change".into(), cb.as_ref().clone()).unwrap();
    let heads = ok(doc.put("x".into(), 1.into()), "put").await;
    eventually(2_000, "a change event", || !seen.borrow().is_empty()).await;
    let event = seen.borrow()[0].clone();
    assert_eq!(
        stringify(&js_sys::Reflect::get(&event, &"heads".into()).unwrap()),
        stringify(&heads)
    );
    assert_eq!(
        js_sys::Reflect::get(&event, &"origin".into())
            .unwrap()
            .as_string()
            .unwrap(),
        "local"
    );
    // Unsubscribed: no more events.
    off.unchecked_ref::<js_sys::Function>()
        .call0(&JsValue::NULL)
        .unwrap();
    ok(doc.put("x".into(), 2.into()), "put").await;
    concord_wasm::js::sleep(50).await;
    assert_eq!(seen.borrow().len(), 1);
    repo.close();
}

#[wasm_bindgen_test]
async fn durability_levels() {
    let repo = open("{}").await;
    let doc = handle_from(ok(repo.create(js(r#"{"a": 1}"#)), "create").await);
    ok(
        doc.wait_durable("local".into(), JsValue::UNDEFINED),
        "local",
    )
    .await;
    // No server: a bounded wait times out with a typed error.
    rejects(
        doc.wait_durable("server".into(), js(r#"{"timeoutMs": 100}"#)),
        "timeout",
    )
    .await;
    rejects(
        doc.wait_durable("regions:2".into(), js(r#"{"timeoutMs": 100}"#)),
        "timeout",
    )
    .await;
    rejects(
        doc.wait_durable("region".into(), JsValue::UNDEFINED),
        "unsupported",
    )
    .await;
    rejects(doc.wait_durable(7.into(), JsValue::UNDEFINED), "argument").await;
    assert_eq!(repo.status(), "offline");
    repo.close();
}

#[wasm_bindgen_test]
async fn bad_input_is_a_typed_error() {
    // Invalid options and URLs.
    rejects(Repo::open(42.into()), "argument").await;
    rejects(
        Repo::open(js(r#"{"servers": "http://127.0.0.1:1/sync"}"#)),
        "url",
    )
    .await;
    rejects(Repo::open(js(r#"{"servers": ["not a url"]}"#)), "url").await;
    rejects(Repo::open(js(r#"{"servers": 5}"#)), "argument").await;
    rejects(
        Repo::open(js(r#"{"schema": {"a": "no-such-policy"}}"#)),
        "policy",
    )
    .await;
    // IndexedDB does not exist in Node: a clear error, not a trap.
    rejects(Repo::open(js(r#"{"database": "x"}"#)), "unsupported").await;
    let repo = open("{}").await;
    rejects(repo.find("automerge:nope".into()), "url").await;
    rejects(repo.find(12.into()), "argument").await;
    rejects(repo.create(js("[1]")), "argument").await;
    let doc = handle_from(ok(repo.create(js(r#"{"t": "abc", "n": 1}"#)), "create").await);
    rejects(doc.put(js("{}"), 1.into()), "argument").await;
    rejects(doc.put("a".into(), JsValue::UNDEFINED), "argument").await;
    rejects(doc.put("a/b/c".into(), 1.into()), "path").await;
    rejects(
        doc.splice_text("t".into(), (-1).into(), 0.into(), "x".into()),
        "argument",
    )
    .await;
    rejects(
        doc.splice_text("t".into(), 99.into(), 0.into(), "x".into()),
        "path",
    )
    .await;
    rejects(
        doc.splice_text("t".into(), 1.5.into(), 0.into(), "x".into()),
        "argument",
    )
    .await;
    rejects(
        doc.splice_text("n".into(), 0.into(), 0.into(), "x".into()),
        "path",
    )
    .await;
    rejects(doc.increment("t".into(), JsValue::UNDEFINED), "path").await;
    rejects(doc.increment("n2".into(), "x".into()), "argument").await;
    rejects(doc.change("not a function".into()), "argument").await;
    assert_eq!(
        kind(&doc.on("nope".into(), JsValue::NULL).unwrap_err()),
        "argument"
    );
    assert_eq!(
        kind(&doc.on("change".into(), 3.into()).unwrap_err()),
        "argument"
    );
    assert_eq!(
        kind(&doc.broadcast(JsValue::UNDEFINED).unwrap_err()),
        "argument"
    );
    assert_eq!(
        kind(&repo.set_online("yes".into()).unwrap_err()),
        "argument"
    );
    // The module still works after all that.
    ok(doc.put("t".into(), "fine".into()), "put after bad input").await;
    // A closed repo: every call is a `closed` error.
    repo.close();
    assert_eq!(repo.status(), "closed");
    rejects(doc.put("t".into(), 1.into()), "closed").await;
    rejects(repo.create(JsValue::UNDEFINED), "closed").await;
    rejects(repo.find(doc.url().into()), "closed").await;
    assert_eq!(kind(&doc.get("t".into()).unwrap_err()), "closed");
    assert_eq!(kind(&doc.broadcast(1.into()).unwrap_err()), "closed");
    assert_eq!(kind(&repo.peer_id().unwrap_err()), "closed");
}

#[wasm_bindgen_test]
async fn deleting_a_document_is_reported_and_refuses_later_use() {
    let repo = open("{}").await;
    let doc = handle_from(ok(repo.create(js(r#"{"x": 1, "y": 2}"#)), "create").await);
    let other = handle_from(ok(repo.create(js(r#"{"keep": true}"#)), "create").await);
    // `delete(path)` still deletes a key; only `delete()` deletes the document.
    ok(doc.delete(Some("y".into())), "delete a key").await;
    assert_eq!(stringify(&doc.to_json().unwrap()), r#"{"x":1}"#);
    let (on_doc, cb_doc) = recorder();
    let (on_repo, cb_repo) = recorder();
    let (on_other, cb_other) = recorder();
    let _o1 = doc.on("deleted".into(), cb_doc.as_ref().clone()).unwrap();
    let _o2 = repo.on("deleted".into(), cb_repo.as_ref().clone()).unwrap();
    let _o3 = other
        .on("deleted".into(), cb_other.as_ref().clone())
        .unwrap();
    assert!(repo.deletion(doc.url().into()).unwrap().is_null());

    ok(doc.delete(None), "delete the document").await;
    eventually(2_000, "deleted events", || {
        on_doc.borrow().len() == 1 && on_repo.borrow().len() == 1
    })
    .await;
    let event = on_doc.borrow()[0].clone();
    let field = |k: &str| js_sys::Reflect::get(&event, &k.into()).unwrap();
    assert_eq!(field("documentId").as_string().unwrap(), doc.document_id());
    assert_eq!(field("origin").as_string().unwrap(), "local");
    assert_eq!(field("by").as_string().unwrap(), repo.peer_id().unwrap());
    assert!(field("atMs").as_f64().unwrap() > 0.0);
    assert!(on_other.borrow().is_empty(), "another document's listener");
    let deletion = repo.deletion(doc.url().into()).unwrap();
    assert_eq!(
        js_sys::Reflect::get(&deletion, &"confirmed".into()).unwrap(),
        JsValue::FALSE,
        "no server confirmed it"
    );

    // Reads, writes, find and a second delete: each a `deleted` error.
    assert_eq!(kind(&doc.get("x".into()).unwrap_err()), "deleted");
    assert_eq!(kind(&doc.to_json().unwrap_err()), "deleted");
    rejects(doc.put("x".into(), 2.into()), "deleted").await;
    let edit = js_sys::Function::new_with_args("d", "d.put('x', 3)");
    rejects(doc.change(edit.into()), "deleted").await;
    rejects(repo.find(doc.url().into()), "deleted").await;
    rejects(doc.delete_document(), "deleted").await;
    // The other document is untouched.
    assert_eq!(stringify(&other.to_json().unwrap()), r#"{"keep":true}"#);
    ok(other.put("keep".into(), false.into()), "write the other").await;
    repo.close();
}
