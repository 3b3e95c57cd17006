//! IndexedDB in headless Chromium: the storage conformance suite, documents surviving a `Repo`
//! reopen, and a quota error surfacing as a typed `Error`.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use concord_wasm::{IdbStorage, Repo};
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn fresh_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        hex::encode(concord_wasm::js::random_bytes::<6>())
    )
}

#[wasm_bindgen_test]
async fn indexeddb_passes_the_storage_conformance_suite() {
    let name = fresh_name("conformance");
    let storage = IdbStorage::open(&name).await.unwrap();
    concord::storage::conformance::run(&storage).await;
    storage.close();
    // Closed storage fails cleanly.
    use concord::storage::Storage;
    assert!(storage.list().await.is_err());
    IdbStorage::delete_database(&name).await.unwrap();
}

#[wasm_bindgen_test]
async fn documents_survive_a_repo_reopen() {
    let name = fresh_name("reopen");
    let opts = format!(r#"{{"database": "{name}"}}"#);
    let repo = open(&opts).await;
    let storage_id = repo.storage_id().unwrap();
    let doc = handle_from(ok(repo.create(js(r#"{"title": "persist me"}"#)), "create").await);
    ok(
        doc.splice_text("title".into(), 0.into(), 0.into(), "please ".into()),
        "splice",
    )
    .await;
    ok(doc.increment("n".into(), JsValue::UNDEFINED), "increment").await;
    ok(doc.increment("n".into(), JsValue::UNDEFINED), "increment").await;
    let url = doc.url();
    let before = stringify(&doc.to_json().unwrap());
    repo.close();

    let reopened = open(&opts).await;
    assert_eq!(
        reopened.storage_id().unwrap(),
        storage_id,
        "storage id is kept in the database"
    );
    let again = handle_from(ok(reopened.find(url.clone().into()), "find after reopen").await);
    assert_eq!(stringify(&again.to_json().unwrap()), before);
    assert_eq!(before, r#"{"n":2,"title":"please persist me"}"#);
    reopened.close();

    // A different database does not have it.
    let other = open(&format!(r#"{{"database": "{name}-other"}}"#)).await;
    rejects(other.find(url.into()), "unavailable").await;
    other.close();
    for db in [name.clone(), format!("{name}-other")] {
        ok(Repo::delete_database(db.into()), "deleteDatabase").await;
    }
}

/// Makes every IndexedDB write throw `QuotaExceededError` (as a full disk does) until restored.
fn fail_writes_with_quota(on: bool) {
    let script = if on {
        "const P = IDBObjectStore.prototype; P.__add = P.add; P.__put = P.put;
         const boom = function () { throw new DOMException('the quota has been exceeded', 'QuotaExceededError'); };
         P.add = boom; P.put = boom;"
    } else {
        "const P = IDBObjectStore.prototype; P.add = P.__add; P.put = P.__put;"
    };
    js_sys::Function::new_no_args(script)
        .call0(&JsValue::NULL)
        .unwrap();
}

#[wasm_bindgen_test]
async fn a_quota_error_is_a_typed_error_and_the_module_survives() {
    let name = fresh_name("quota");
    let repo = open(&format!(r#"{{"database": "{name}"}}"#)).await;
    let doc = handle_from(ok(repo.create(js(r#"{"a": 1}"#)), "create").await);
    fail_writes_with_quota(true);
    let msg = rejects(doc.put("a".into(), 2.into()), "quota").await;
    assert!(msg.contains("QuotaExceededError"), "{msg}");
    rejects(repo.create(JsValue::UNDEFINED), "quota").await;
    fail_writes_with_quota(false);
    // Storage works again: the next write commits (the core retries what failed).
    ok(doc.put("a".into(), 3.into()), "put after quota").await;
    ok(
        doc.wait_durable("local".into(), js(r#"{"timeoutMs": 5000}"#)),
        "durable locally",
    )
    .await;
    let url = doc.url();
    repo.close();
    let reopened = open(&format!(r#"{{"database": "{name}"}}"#)).await;
    let again = handle_from(ok(reopened.find(url.into()), "find").await);
    assert_eq!(again.get("a".into()).unwrap().as_f64(), Some(3.0));
    reopened.close();
    ok(Repo::delete_database(name.into()), "deleteDatabase").await;
}

#[wasm_bindgen_test]
async fn a_deletion_purges_indexeddb_and_survives_a_reopen() {
    use concord::storage::Storage;
    let name = fresh_name("deleted");
    let opts = format!(r#"{{"database": "{name}"}}"#);
    let repo = open(&opts).await;
    let doc = handle_from(ok(repo.create(js(r#"{"secret": "gone"}"#)), "create").await);
    let kept = handle_from(ok(repo.create(js(r#"{"a": 1}"#)), "create").await);
    let id: concord::DocumentId = doc.document_id().parse().unwrap();
    let kept_id: concord::DocumentId = kept.document_id().parse().unwrap();
    // A second connection to the same database watches what is stored.
    let probe = IdbStorage::open(&name).await.unwrap();
    assert!(!probe.load(&id).await.unwrap().is_empty());
    ok(doc.delete(None), "delete").await;
    // The chunks go with the (asynchronous) purge that follows the tombstone's commit.
    wait_purged(
        &probe,
        &id,
        5_000,
        "the deleted document's chunks are purged",
    )
    .await;
    let tombstones = probe.tombstones().await.unwrap();
    assert_eq!(tombstones.len(), 1, "{tombstones:?}");
    assert_eq!(tombstones[0].0, id);
    assert!(!probe.load(&kept_id).await.unwrap().is_empty());
    assert_eq!(probe.list().await.unwrap(), vec![kept_id]);
    probe.close();
    repo.close();

    // Reopened: still deleted (the tombstone was stored), the other document is there.
    let reopened = open(&opts).await;
    rejects(reopened.find(doc.url().into()), "deleted").await;
    let again = handle_from(ok(reopened.find(kept.url().into()), "find kept").await);
    assert_eq!(stringify(&again.to_json().unwrap()), r#"{"a":1}"#);
    assert!(!reopened.deletion(doc.url().into()).unwrap().is_null());
    reopened.close();
    ok(Repo::delete_database(name.into()), "deleteDatabase").await;
}
