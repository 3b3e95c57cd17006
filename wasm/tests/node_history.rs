//! History and listing in Node (in-memory storage, no network): `history()` paging, `diff()`,
//! `restore()` as a new change, `listLocal()`, and typed errors for unknown heads.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use js_sys::{Array, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

fn field(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &key.into()).unwrap()
}

fn hashes(page: &JsValue) -> Vec<String> {
    Array::from(&field(page, "changes"))
        .iter()
        .map(|c| field(&c, "hash").as_string().unwrap())
        .collect()
}

#[wasm_bindgen_test]
async fn history_pages_diffs_and_restores() {
    let repo = open("{}").await;
    let doc = handle_from(ok(repo.create(js(r#"{"title": "v1", "n": 1}"#)), "create").await);
    let v1 = doc.heads().unwrap();
    ok(doc.put("title".into(), "v2".into()), "put").await;
    ok(doc.delete(Some("n".into())), "delete n").await;
    let v2 = doc.heads().unwrap();

    // The log, newest first, paged by cursor.
    let all = doc.history(JsValue::UNDEFINED).unwrap();
    let list = hashes(&all);
    let total = field(&all, "total").as_f64().unwrap() as usize;
    assert_eq!(list.len(), total);
    assert!(total >= 3, "{total} changes");
    assert_eq!(stringify(&field(&all, "heads")), stringify(&v2));
    assert_eq!(Some(&list[0]), Array::from(&v2).get(0).as_string().as_ref());
    let mut paged = Vec::new();
    let mut cursor = JsValue::NULL;
    loop {
        let opts = js_sys::Object::new();
        Reflect::set(&opts, &"limit".into(), &1.into()).unwrap();
        Reflect::set(&opts, &"cursor".into(), &cursor).unwrap();
        let page = doc.history(opts.into()).unwrap();
        paged.extend(hashes(&page));
        cursor = field(&page, "next");
        if cursor.is_null() || paged.len() > total {
            break;
        }
    }
    assert_eq!(paged, list, "pages of one cover the log in order");
    let first = Array::from(&field(&all, "changes")).get(0);
    assert!(field(&first, "ops").as_f64().unwrap() >= 1.0);
    assert!(field(&field(&first, "time"), "ms").as_f64().unwrap() > 0.0);

    // Diff: what turns v1 into v2.
    let patches = stringify(&doc.diff(v1.clone(), v2.clone()).unwrap());
    assert!(
        patches.contains(r#""action":"put""#) && patches.contains("v2"),
        "{patches}"
    );
    assert!(patches.contains(r#""action":"del""#), "{patches}");
    assert_eq!(stringify(&doc.diff(v2.clone(), v2.clone()).unwrap()), "[]");

    // Restore v1: a new change on top (not a rewind), equal to v1.
    assert_eq!(ok(doc.restore(v1.clone()), "restore").await, JsValue::TRUE);
    assert_eq!(
        stringify(&doc.to_json().unwrap()),
        r#"{"n":1,"title":"v1"}"#
    );
    let after = doc.history(JsValue::UNDEFINED).unwrap();
    assert_eq!(field(&after, "total").as_f64().unwrap() as usize, total + 1);
    // Restoring it again, or the version it is at, writes nothing.
    assert_eq!(
        ok(doc.restore(v1.clone()), "restore again").await,
        JsValue::FALSE
    );
    assert_eq!(
        ok(
            doc.restore(doc.heads().unwrap()),
            "restore the current version"
        )
        .await,
        JsValue::FALSE
    );

    // Unknown heads and cursors are typed errors, and nothing changes.
    let unknown = js(&format!(r#"["{}"]"#, "ab".repeat(32)));
    let heads_before = stringify(&doc.heads().unwrap());
    assert_eq!(
        kind(&doc.diff(unknown.clone(), v2.clone()).unwrap_err()),
        "history"
    );
    rejects(doc.restore(unknown.clone()), "history").await;
    rejects(doc.restore(js(r#"["zz"]"#)), "argument").await;
    rejects(doc.restore(JsValue::UNDEFINED), "argument").await;
    let bad_cursor = js(&format!(r#"{{"cursor": "{}"}}"#, "cd".repeat(32)));
    assert_eq!(kind(&doc.history(bad_cursor).unwrap_err()), "history");
    assert_eq!(
        kind(&doc.history(js(r#"{"heads": ["xyz"]}"#)).unwrap_err()),
        "argument"
    );
    assert_eq!(stringify(&doc.heads().unwrap()), heads_before);

    // Listing: local storage has it; without servers there is nothing remote to ask.
    let local = stringify(&ok(repo.list_local(), "listLocal").await);
    assert!(local.contains(&doc.url()), "{local}");
    rejects(repo.list_remote(JsValue::UNDEFINED), "unsupported").await;
    repo.close();
}
