//! Ephemeral messages (presence, cursors) are CBOR on the wire, as automerge-repo's
//! `handle.broadcast` encodes them, so JavaScript clients of either library understand each other.

use serde_json::Value as Json;
use wasm_bindgen::JsValue;

use crate::error::{Error, Result};

/// CBOR bytes of a JSON value.
pub fn encode(value: &Json) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| Error::arg("message", e.to_string()))?;
    Ok(out)
}

/// The JavaScript value of CBOR bytes (`undefined` when they are not CBOR that maps to JSON;
/// the raw bytes are then delivered as a `Uint8Array`).
pub fn decode(bytes: &[u8]) -> JsValue {
    match ciborium::from_reader::<Json, _>(bytes) {
        Ok(value) => crate::js::from_json(&value),
        Err(_) => js_sys::Uint8Array::from(bytes).into(),
    }
}
