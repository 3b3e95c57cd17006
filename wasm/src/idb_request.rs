//! Promises over IndexedDB's event-based requests and transactions.
//!
//! IndexedDB commits a transaction once no request is pending when control returns to the event
//! loop; the futures here resolve in microtasks, so a chain of requests awaited one after the
//! other stays inside one transaction (as the `idb` JavaScript library relies on).

use js_sys::Promise;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbRequest, IdbTransaction};

use concord::storage::StorageError;

/// A storage error for `op`, from whatever JavaScript threw or reported.
pub fn backend(op: &'static str, value: &JsValue) -> StorageError {
    StorageError::Backend {
        op,
        message: dom_error(value),
    }
}

/// `name: message` of a DOMException (a request's or transaction's `error`), or of anything
/// thrown; QuotaExceededError keeps its name so callers can recognise it.
pub fn dom_error(value: &JsValue) -> String {
    if let Some(e) = value.dyn_ref::<web_sys::DomException>() {
        return format!("{}: {}", e.name(), e.message());
    }
    // An error event: its target is the request or transaction carrying the DOMException.
    if let Some(event) = value.dyn_ref::<web_sys::Event>() {
        if let Some(target) = event.target() {
            if let Some(req) = target.dyn_ref::<IdbRequest>() {
                if let Ok(Some(e)) = req.error() {
                    return format!("{}: {}", e.name(), e.message());
                }
            }
            if let Some(tx) = target.dyn_ref::<IdbTransaction>() {
                if let Some(e) = tx.error() {
                    return format!("{}: {}", e.name(), e.message());
                }
            }
        }
        return format!("IndexedDB {} event", event.type_());
    }
    crate::js::describe(value)
}

/// Waits for a request's `success` and returns its `result`.
pub async fn request(op: &'static str, req: &IdbRequest) -> Result<JsValue, StorageError> {
    let promise = Promise::new(&mut |resolve, reject| {
        req.set_onsuccess(Some(resolve.unchecked_ref()));
        req.set_onerror(Some(reject.unchecked_ref()));
    });
    let outcome = JsFuture::from(promise).await;
    req.set_onsuccess(None);
    req.set_onerror(None);
    match outcome {
        Ok(_) => req.result().map_err(|e| backend(op, &e)),
        Err(event) => Err(match req.error() {
            Ok(Some(e)) => backend(op, &e.into()),
            _ => backend(op, &event),
        }),
    }
}

/// A future that resolves when `tx` commits (`complete`); an `abort` (quota, constraint, ...)
/// is an error. Call it right after creating the transaction: the handlers are installed now.
pub fn committed(
    op: &'static str,
    tx: &IdbTransaction,
) -> impl std::future::Future<Output = Result<(), StorageError>> + use<> {
    let promise = Promise::new(&mut |resolve, reject| {
        tx.set_oncomplete(Some(resolve.unchecked_ref()));
        tx.set_onabort(Some(reject.unchecked_ref()));
    });
    let tx = tx.clone();
    async move {
        let outcome = JsFuture::from(promise).await;
        tx.set_oncomplete(None);
        tx.set_onabort(None);
        match outcome {
            Ok(_) => Ok(()),
            Err(event) => Err(match tx.error() {
                Some(e) => backend(op, &e.into()),
                None => backend(op, &event),
            }),
        }
    }
}
