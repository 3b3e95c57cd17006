//! Helpers shared by the wasm-bindgen tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use js_sys::{Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use concord_wasm::{DocHandle, Repo};

/// Awaits a promise.
pub async fn wait(p: Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(p).await
}

/// Awaits a promise that must resolve.
pub async fn ok(p: Promise, what: &str) -> JsValue {
    match wait(p).await {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {}", message(&e)),
    }
}

/// The `kind` of a thrown error, asserting it is an `Error`.
pub fn kind(e: &JsValue) -> String {
    assert!(e.is_instance_of::<js_sys::Error>(), "not an Error: {e:?}");
    Reflect::get(e, &"kind".into())
        .unwrap()
        .as_string()
        .unwrap_or_default()
}

/// The message of a thrown error.
pub fn message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Awaits a promise that must reject with `kind`; returns the message.
pub async fn rejects(p: Promise, want: &str) -> String {
    match wait(p).await {
        Ok(v) => panic!("expected a `{want}` error, got {v:?}"),
        Err(e) => {
            assert_eq!(kind(&e), want, "wrong kind: {}", message(&e));
            message(&e)
        }
    }
}

/// An options object from JSON text.
pub fn options(json: &str) -> JsValue {
    js_sys::JSON::parse(json).unwrap()
}

/// Opens a repo with `json` options.
pub async fn open(json: &str) -> Repo {
    let v = ok(Repo::open(options(json)), "Repo.open").await;
    // The promise resolves with a Repo object: take it back from JavaScript.
    repo_from(v)
}

/// A `Repo` from the JavaScript value a promise resolved with.
pub fn repo_from(v: JsValue) -> Repo {
    use wasm_bindgen::convert::TryFromJsValue;
    Repo::try_from_js_value(v).expect("a Repo")
}

/// A `DocHandle` from the JavaScript value a promise resolved with.
pub fn handle_from(v: JsValue) -> DocHandle {
    use wasm_bindgen::convert::TryFromJsValue;
    DocHandle::try_from_js_value(v).expect("a DocHandle")
}

/// A JSON value as JavaScript.
pub fn js(json: &str) -> JsValue {
    js_sys::JSON::parse(json).unwrap()
}

/// `JSON.stringify(v)`.
pub fn stringify(v: &JsValue) -> String {
    js_sys::JSON::stringify(v).unwrap().as_string().unwrap()
}

/// Polls `f` every 20 ms until it is true, for at most `ms`.
pub async fn eventually(ms: u32, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = js_sys::Date::now() + f64::from(ms);
    while js_sys::Date::now() < deadline {
        if f() {
            return;
        }
        concord_wasm::js::sleep(20).await;
    }
    panic!("timed out after {ms} ms waiting for {what}");
}

/// Events a listener received.
pub type Seen = std::rc::Rc<std::cell::RefCell<Vec<JsValue>>>;

/// A listener recording every event it receives.
pub fn recorder() -> (Seen, wasm_bindgen::closure::Closure<dyn FnMut(JsValue)>) {
    let seen: Seen = Seen::default();
    let sink = seen.clone();
    (
        seen,
        wasm_bindgen::closure::Closure::new(move |e: JsValue| sink.borrow_mut().push(e)),
    )
}

/// Polls `storage` every 20 ms until nothing is stored for `doc`, for at most `ms`.
pub async fn wait_purged(
    storage: &concord_wasm::IdbStorage,
    doc: &concord::DocumentId,
    ms: u32,
    what: &str,
) {
    use concord::storage::Storage;
    let deadline = js_sys::Date::now() + f64::from(ms);
    while js_sys::Date::now() < deadline {
        if storage.load(doc).await.unwrap().is_empty() {
            return;
        }
        concord_wasm::js::sleep(20).await;
    }
    panic!("timed out after {ms} ms waiting until {what}");
}
