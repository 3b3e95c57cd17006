//! `waitDurable(level)`: waits until a document's current heads are durable at a level.

use std::rc::Rc;

use automerge::ChangeHash;
use concord::DocumentId;
use wasm_bindgen::JsValue;

use crate::driver::Shared;
use crate::error::{Error, Result};
use crate::js;

const DEFAULT_TIMEOUT_MS: u32 = 30_000;

/// A durability level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// Committed to local storage.
    Local,
    /// Acknowledged by a connected server.
    Server,
    /// Committed by this many distinct region servers (heads gossip from the server).
    Regions(usize),
}

fn level(value: &JsValue) -> Result<Level> {
    match js::string_arg("level", value)?.as_str() {
        "local" => Ok(Level::Local),
        "server" => Ok(Level::Server),
        other => match other.parse::<concord::core::Durability>() {
            Ok(concord::core::Durability::Regions(k)) => Ok(Level::Regions(k)),
            _ => Err(Error::Unsupported(format!(
                "durability level `{other}` is not supported (use \"local\", \"server\" or \"regions:N\")"
            ))),
        },
    }
}

/// True when `theirs` covers every head of `ours`.
fn covers(theirs: &[ChangeHash], ours: &[ChangeHash]) -> bool {
    ours.iter().all(|h| theirs.contains(h))
}

fn durable(shared: &Shared, doc: &DocumentId, level: Level, target: &[ChangeHash]) -> Result<bool> {
    shared.with_core(|core| match level {
        Level::Local => core.is_idle(),
        Level::Server => core.sync_status(doc).iter().any(|s| {
            s.in_sync
                || s.their_heads
                    .as_deref()
                    .is_some_and(|theirs| covers(theirs, target))
        }),
        Level::Regions(k) => core
            .durability(doc, target)
            .satisfies(concord::core::Durability::Regions(k)),
    })
}

/// Waits (bounded by `options.timeoutMs`) until `doc`'s heads as of now are durable at `level`.
pub async fn wait(
    shared: &Rc<Shared>,
    doc: DocumentId,
    level_arg: &JsValue,
    options: &JsValue,
) -> Result<JsValue> {
    let level = level(level_arg)?;
    let timeout = js::prop(options, "timeoutMs");
    let timeout_ms = if timeout.is_undefined() {
        DEFAULT_TIMEOUT_MS
    } else {
        u32::try_from(js::index_arg("timeoutMs", &timeout)?).unwrap_or(u32::MAX)
    };
    let target = shared.with_core(|c| {
        c.document(&doc)
            .map(automerge::Automerge::get_heads)
            .ok_or_else(|| crate::handle::missing(c, &doc))
    })??;
    let deadline = js_sys::Date::now() + f64::from(timeout_ms);
    loop {
        if durable(shared, &doc, level, &target)? {
            return Ok(crate::handle::heads_array(&target));
        }
        let left = deadline - js_sys::Date::now();
        if left <= 0.0 {
            return Err(Error::Timeout {
                ms: timeout_ms,
                what: match level {
                    Level::Local => "a local commit",
                    Level::Server => "a server to acknowledge the document's heads",
                    Level::Regions(_) => "enough regions to commit the document's heads",
                },
            });
        }
        // Re-check after any progress, and at least every 250 ms.
        let progress = shared.progress();
        let tick = Box::pin(js::sleep(left.min(250.0) as u32));
        let _ = futures::future::select(progress, tick).await;
    }
}
