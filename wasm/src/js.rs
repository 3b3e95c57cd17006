//! Small JavaScript helpers: clocks, randomness, timers, JSON values and argument checks.

use js_sys::{Function, JSON, Promise, Reflect};
use serde_json::Value as Json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::error::{Error, Result};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(cb: &Function, ms: i32) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
    #[wasm_bindgen(js_name = setInterval)]
    fn set_interval(cb: &Function, ms: i32) -> JsValue;
    #[wasm_bindgen(js_name = clearInterval)]
    fn clear_interval(id: &JsValue);
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    // Date.now() is a non-negative integer well inside f64's exact range.
    js_sys::Date::now().max(0.0) as u64
}

/// Random bytes from `crypto.getRandomValues`; falls back to `Math.random` if the platform
/// has no crypto (never in browsers or Node 20).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    if getrandom::fill(&mut out).is_err() {
        for b in &mut out {
            *b = (js_sys::Math::random() * 256.0) as u8;
        }
    }
    out
}

/// A timer that fires once after `ms` and is cancelled when dropped.
#[derive(Debug)]
pub struct Timeout {
    id: JsValue,
    _cb: Closure<dyn FnMut()>,
}

impl Timeout {
    /// Calls `f` after `ms` milliseconds.
    pub fn new(ms: u32, f: impl FnOnce() + 'static) -> Self {
        let mut f = Some(f);
        let cb = Closure::<dyn FnMut()>::new(move || {
            if let Some(f) = f.take() {
                f();
            }
        });
        let id = set_timeout(
            cb.as_ref().unchecked_ref(),
            i32::try_from(ms).unwrap_or(i32::MAX),
        );
        Self { id, _cb: cb }
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        clear_timeout(&self.id);
    }
}

/// A repeating timer, cancelled when dropped.
#[derive(Debug)]
pub struct Interval {
    id: JsValue,
    _cb: Closure<dyn FnMut()>,
}

impl Interval {
    /// Calls `f` every `ms` milliseconds.
    pub fn new(ms: u32, f: impl FnMut() + 'static) -> Self {
        let cb = Closure::<dyn FnMut()>::new(f);
        let id = set_interval(
            cb.as_ref().unchecked_ref(),
            i32::try_from(ms).unwrap_or(i32::MAX),
        );
        Self { id, _cb: cb }
    }
}

impl Drop for Interval {
    fn drop(&mut self) {
        clear_interval(&self.id);
    }
}

/// Resolves after `ms` milliseconds.
pub async fn sleep(ms: u32) {
    let promise = Promise::new(&mut |resolve, _reject| {
        set_timeout(&resolve, i32::try_from(ms).unwrap_or(i32::MAX));
    });
    let _ = JsFuture::from(promise).await;
}

/// A JavaScript value as JSON (what `JSON.stringify` keeps). `undefined`, functions, symbols
/// and BigInts are argument errors.
pub fn to_json(name: &'static str, value: &JsValue) -> Result<Json> {
    if value.is_undefined() || value.is_function() || value.is_symbol() || value.is_bigint() {
        return Err(Error::arg(
            name,
            format!("expected a JSON value, got {}", type_name(value)),
        ));
    }
    let text = JSON::stringify(value)
        .map_err(|e| Error::arg(name, format!("not JSON-serialisable: {}", describe(&e))))?;
    let text = text
        .as_string()
        .ok_or_else(|| Error::arg(name, "not JSON-serialisable"))?;
    serde_json::from_str(&text).map_err(|e| Error::arg(name, e.to_string()))
}

/// JSON as a JavaScript value.
pub fn from_json(value: &Json) -> JsValue {
    JSON::parse(&value.to_string()).unwrap_or(JsValue::UNDEFINED)
}

/// `typeof`-like name of a value, for error messages.
pub fn type_name(value: &JsValue) -> String {
    if value.is_null() {
        "null".into()
    } else if js_sys::Array::is_array(value) {
        "an array".into()
    } else {
        value
            .js_typeof()
            .as_string()
            .unwrap_or_else(|| "unknown".into())
    }
}

/// A thrown JavaScript value as a message.
pub fn describe(value: &JsValue) -> String {
    if let Some(e) = value.dyn_ref::<js_sys::Error>() {
        let name: String = e.name().into();
        let message: String = e.message().into();
        return format!("{name}: {message}");
    }
    if let Some(s) = value.as_string() {
        return s;
    }
    JSON::stringify(value)
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_else(|| type_name(value))
}

/// A required string argument.
pub fn string_arg(name: &'static str, value: &JsValue) -> Result<String> {
    value
        .as_string()
        .ok_or_else(|| Error::arg(name, format!("expected a string, got {}", type_name(value))))
}

/// A non-negative integer argument (`usize`), rejecting fractions, NaN and negatives.
pub fn index_arg(name: &'static str, value: &JsValue) -> Result<usize> {
    let n = value
        .as_f64()
        .ok_or_else(|| Error::arg(name, format!("expected a number, got {}", type_name(value))))?;
    if !n.is_finite() || n < 0.0 || n.fract() != 0.0 || n > 9_007_199_254_740_991.0 {
        return Err(Error::arg(
            name,
            format!("expected a non-negative integer, got {n}"),
        ));
    }
    usize::try_from(n as u64).map_err(|_| Error::arg(name, "too large"))
}

/// An integer argument (`i64`), `default` when undefined.
pub fn int_arg(name: &'static str, value: &JsValue, default: i64) -> Result<i64> {
    if value.is_undefined() {
        return Ok(default);
    }
    let n = value
        .as_f64()
        .ok_or_else(|| Error::arg(name, format!("expected a number, got {}", type_name(value))))?;
    if !n.is_finite() || n.fract() != 0.0 || n.abs() > 9_007_199_254_740_991.0 {
        return Err(Error::arg(name, format!("expected an integer, got {n}")));
    }
    Ok(n as i64)
}

/// A property of an options object (`undefined` when absent or when `obj` is not an object).
pub fn prop(obj: &JsValue, key: &str) -> JsValue {
    if !obj.is_object() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// A plain object from key/value pairs.
pub fn object(pairs: &[(&str, JsValue)]) -> JsValue {
    let obj = js_sys::Object::new();
    for (k, v) in pairs {
        let _ = Reflect::set(&obj, &JsValue::from_str(k), v);
    }
    obj.into()
}
