//! Version history on a [`DocHandle`]: `history()`, `diff()`, `restore()` (over
//! [`concord::history`], which every platform shares). Heads are hex change hashes, as
//! `doc.heads()` returns them.
//!
//! ```js
//! const v1 = doc.heads();
//! await doc.put("title", "oops");
//! const { changes, next } = doc.history({ limit: 20 }); // newest first; `next` pages on
//! doc.diff(v1, doc.heads());  // [{op: "put", path: "title", value: "oops"}]
//! await doc.restore(v1);      // one new change on top: syncs and merges like any other
//! ```

use automerge::ChangeHash;
use concord::history::{self, HistoryQuery, RestorePlan};
use futures::channel::oneshot;
use js_sys::Promise;
use wasm_bindgen::prelude::*;

use crate::error::{Error, Result};
use crate::handle::{self, DocHandle, heads_arg, missing, promise};
use crate::js;

/// Required heads (an array of hex hashes; `[]` is the empty version).
fn required_heads(name: &'static str, value: &JsValue) -> Result<Vec<ChangeHash>> {
    heads_arg(value)?.ok_or_else(|| {
        Error::arg(
            name,
            "expected an array of hex change hashes (`doc.heads()`)",
        )
    })
}

/// `{limit, cursor, heads}` of `history(options)`.
fn query_arg(options: &JsValue) -> Result<HistoryQuery> {
    let mut query = HistoryQuery::new();
    if options.is_undefined() || options.is_null() {
        return Ok(query);
    }
    if !options.is_object() {
        return Err(Error::arg(
            "options",
            format!("expected an object, got {}", js::type_name(options)),
        ));
    }
    let limit = js::prop(options, "limit");
    if !limit.is_undefined() {
        query = query.limit(js::index_arg("limit", &limit)?);
    }
    let cursor = js::prop(options, "cursor");
    if !(cursor.is_undefined() || cursor.is_null()) {
        let hash = js::string_arg("cursor", &cursor)?
            .parse::<ChangeHash>()
            .map_err(|e| Error::arg("cursor", e.to_string()))?;
        query = query.after(hash);
    }
    if let Some(heads) = heads_arg(&js::prop(options, "heads"))? {
        query = query.at(heads);
    }
    Ok(query)
}

#[wasm_bindgen]
impl DocHandle {
    /// One page of the change log, newest first: `{changes, next, total, heads}`, each change
    /// `{hash, actor, seq, time: {ms, counter}, stamped, message, deps, ops, author}`.
    /// `options`: `limit` (default 50, at most 1000), `cursor` (the `next` of the previous
    /// page), `heads` (list the history of that version). Unknown heads or cursor throw
    /// `kind: "history"`.
    pub fn history(&self, options: JsValue) -> std::result::Result<JsValue, JsValue> {
        let query = query_arg(&options)?;
        let authors = Default::default();
        let page = self
            .read(|d| history::list(d, &query, &authors))?
            .map_err(Error::from)?;
        let hex = |h: &ChangeHash| h.to_string();
        let changes: Vec<serde_json::Value> = page.changes.iter().map(|c| c.to_json(hex)).collect();
        Ok(js::from_json(&serde_json::json!({
            "changes": changes,
            "next": page.next.as_ref().map(hex),
            "total": page.total,
            "heads": page.heads.iter().map(hex).collect::<Vec<_>>(),
        })))
    }

    /// The JSON patches that turn the version at `from` into the version at `to` (arrays of
    /// hex heads; `[]` is the empty document). Unknown heads throw `kind: "history"`.
    pub fn diff(&self, from: JsValue, to: JsValue) -> std::result::Result<JsValue, JsValue> {
        let from = required_heads("from", &from)?;
        let to = required_heads("to", &to)?;
        let patches = self
            .read(|d| history::diff(d, &from, &to))?
            .map_err(Error::from)?;
        let json = serde_json::to_value(&patches)
            .map_err(|e| Error::Unsupported(format!("patches: {e}")))?;
        Ok(js::from_json(&json))
    }

    /// Makes the document equal to the version at `heads` with one new change on top (not a
    /// rewind: it syncs like any change, and concurrent edits elsewhere still merge). Resolves
    /// with `true` once committed locally, or `false` when the document already equals that
    /// version. Unknown heads reject with `kind: "history"`, and nothing changes.
    pub fn restore(&self, heads: JsValue) -> Promise {
        let (shared, doc) = (self.shared.clone(), self.doc);
        promise(async move {
            let heads = required_heads("heads", &heads)?;
            let (tx, rx) = oneshot::channel();
            let now = shared.now();
            // Planned and applied in one call on the core: nothing can change in between.
            let ticket = shared.with_core(|c| -> Result<Option<_>> {
                let plan = match c.document(&doc) {
                    Some(d) => RestorePlan::new(d, &heads)?,
                    None => return Err(missing(c, &doc)),
                };
                if plan.is_empty() {
                    return Ok(None);
                }
                let mut failure = None;
                let outcome = c.change_stamped(now, js::wall_ms(), &doc, |t| {
                    plan.apply(t).map_err(|e| {
                        let message = e.to_string();
                        failure = Some(e);
                        message
                    })
                });
                match (outcome, failure) {
                    (_, Some(e)) => Err(e.into()),
                    (Err(e), None) => Err(e.into()),
                    (Ok(((), ticket)), None) => Ok(ticket),
                }
            })??;
            let Some(ticket) = ticket else {
                return Ok(JsValue::FALSE);
            };
            shared.register(ticket, crate::driver::Waiter::Commit(tx));
            shared.pump();
            handle::await_commit(&shared, doc, rx).await?;
            Ok(JsValue::TRUE)
        })
    }
}
