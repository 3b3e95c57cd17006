//! `DocHandle`: one document of a [`Repo`](crate::Repo): writes, reads, events, presence,
//! durability waits and conflict-policy reads.

use std::rc::Rc;

use automerge::{AutoSerde, ChangeHash, CursorPosition, ReadDoc};
use concord::DocumentId;
use futures::channel::oneshot;
use js_sys::{Array, Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::builder::{self, ChangeBuilder};
use crate::driver::{Shared, Waiter};
use crate::error::{Error, Result};
use crate::js::{self, object};
use crate::ops::{self, Op, path_arg};

/// Heads as an array of hex strings (as `Automerge.getHeads` returns them).
pub fn heads_array(heads: &[ChangeHash]) -> JsValue {
    heads
        .iter()
        .map(|h| JsValue::from_str(&h.to_string()))
        .collect::<Array>()
        .into()
}

/// A handle on one document. Writes resolve once committed to local storage (IndexedDB).
#[wasm_bindgen]
#[derive(Debug, Clone)]
pub struct DocHandle {
    pub(crate) shared: Rc<Shared>,
    pub(crate) doc: DocumentId,
}

/// A change applied in memory, waiting for its local commit.
#[derive(Debug)]
pub enum Applied {
    /// Nothing changed: these are the heads.
    Unchanged(Vec<ChangeHash>),
    /// Committing.
    Pending(oneshot::Receiver<std::result::Result<Vec<ChangeHash>, String>>),
}

/// Applies `ops` as one change now (readers see it at once) and starts its local commit.
pub fn apply(shared: &Rc<Shared>, doc: DocumentId, ops: &[Op]) -> Result<Applied> {
    let (tx, rx) = oneshot::channel();
    let now = shared.now();
    let mut failure = None;
    let outcome = shared.with_core(|core| {
        core.change_stamped(now, js::wall_ms(), &doc, |t| {
            for op in ops {
                if let Err(e) = ops::apply(t, op) {
                    let message = e.to_string();
                    failure = Some(e);
                    return Err(message);
                }
            }
            Ok(())
        })
    })?;
    let ticket = match outcome {
        Ok(((), ticket)) => ticket,
        Err(e) => return Err(failure.unwrap_or_else(|| e.into())),
    };
    let Some(ticket) = ticket else {
        let heads = shared.with_core(|c| c.document(&doc).map(|d| d.get_heads()))?;
        return Ok(Applied::Unchanged(heads.unwrap_or_default()));
    };
    shared.register(ticket, Waiter::Commit(tx));
    shared.pump();
    Ok(Applied::Pending(rx))
}

/// Resolves with the heads once an applied change is committed locally; a commit that failed
/// because the document was deleted meanwhile is a `deleted` error.
pub async fn committed(shared: &Shared, doc: DocumentId, applied: Applied) -> Result<JsValue> {
    match applied {
        Applied::Unchanged(heads) => Ok(heads_array(&heads)),
        Applied::Pending(rx) => await_commit(shared, doc, rx).await.map(|h| heads_array(&h)),
    }
}

/// Awaits a commit ticket's outcome.
pub async fn await_commit(
    shared: &Shared,
    doc: DocumentId,
    rx: oneshot::Receiver<std::result::Result<Vec<ChangeHash>, String>>,
) -> Result<Vec<ChangeHash>> {
    match rx.await {
        Ok(Ok(heads)) => Ok(heads),
        Ok(Err(_)) if is_deleted(shared, &doc) => Err(Error::Deleted(doc.to_string())),
        Ok(Err(e)) => Err(Error::storage(e)),
        Err(_) => Err(Error::Closed),
    }
}

/// Why `doc` is not in memory: `deleted` when it was deleted, else `unavailable`.
pub fn missing(core: &concord::core::Core, doc: &DocumentId) -> Error {
    if core.tombstone(doc).is_some() {
        Error::Deleted(doc.to_string())
    } else {
        Error::Unavailable(doc.to_string())
    }
}

/// True when `doc` was deleted (here, or learned from a peer).
pub fn is_deleted(shared: &Shared, doc: &DocumentId) -> bool {
    shared
        .with_core(|c| c.tombstone(doc).is_some())
        .unwrap_or(false)
}

/// Applies `ops` as one change; resolves with the new heads once committed locally.
pub async fn commit(shared: Rc<Shared>, doc: DocumentId, ops: Vec<Op>) -> Result<JsValue> {
    committed(&shared, doc, apply(&shared, doc, &ops)?).await
}

/// Deletes `doc` here and, through the servers, everywhere; resolves once the deletion is
/// committed locally.
pub async fn delete_document(shared: Rc<Shared>, doc: DocumentId) -> Result<JsValue> {
    let (tx, rx) = oneshot::channel();
    let now = shared.now();
    let ticket = shared.with_core(|c| {
        let by = c.config().peer_id.to_string();
        c.handle_wall_clock(js::wall_ms()); // dates the tombstone
        c.delete(now, doc, by, false)
    })??;
    shared.register(ticket, Waiter::Commit(tx));
    shared.pump();
    await_commit(&shared, doc, rx).await?;
    Ok(JsValue::UNDEFINED)
}

/// Optional heads from JavaScript (an array of hex hashes).
pub(crate) fn heads_arg(value: &JsValue) -> Result<Option<Vec<ChangeHash>>> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    if !Array::is_array(value) {
        return Err(Error::arg(
            "heads",
            format!(
                "expected an array of hex hashes, got {}",
                js::type_name(value)
            ),
        ));
    }
    Array::from(value)
        .iter()
        .map(|h| {
            js::string_arg("heads", &h)?
                .parse::<ChangeHash>()
                .map_err(|e| Error::arg("heads", e.to_string()))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

pub(crate) fn promise(f: impl std::future::Future<Output = Result<JsValue>> + 'static) -> Promise {
    future_to_promise(async move { f.await.map_err(JsValue::from) })
}

impl DocHandle {
    /// A handle (pins the document in memory).
    pub fn new(shared: Rc<Shared>, doc: DocumentId) -> Self {
        let _ = shared.with_core(|c| c.pin(&doc));
        Self { shared, doc }
    }

    /// Applies `op` at once (so `get` sees it when the call returns); the promise resolves
    /// once it is committed locally.
    fn write(&self, op: Result<Op>) -> Promise {
        let applied = op.and_then(|op| apply(&self.shared, self.doc, &[op]));
        let (shared, doc) = (self.shared.clone(), self.doc);
        promise(async move { committed(&shared, doc, applied?).await })
    }

    pub(crate) fn read<R>(&self, f: impl FnOnce(&automerge::Automerge) -> R) -> Result<R> {
        let doc = self.doc;
        self.shared.with_core(|c| match c.document(&doc) {
            Some(d) => Ok(f(d)),
            None => Err(missing(c, &doc)),
        })?
    }

    fn heads_now(&self) -> Result<Vec<ChangeHash>> {
        self.read(automerge::Automerge::get_heads)
    }
}

#[wasm_bindgen]
impl DocHandle {
    /// The `automerge:` URL to share.
    #[wasm_bindgen(getter)]
    pub fn url(&self) -> String {
        self.doc.url().to_string()
    }

    /// The document id (the URL without `automerge:`).
    #[wasm_bindgen(getter, js_name = documentId)]
    pub fn document_id(&self) -> String {
        self.doc.to_string()
    }

    /// Runs `fn(d)`, where `d` has `put`, `delete`, `insert`, `spliceText` and `increment`;
    /// the writes become one change. Resolves with the new heads once committed locally.
    /// If `fn` throws, nothing is applied and the promise rejects with `kind: "change"`.
    pub fn change(&self, callback: JsValue) -> Promise {
        let (shared, doc) = (self.shared.clone(), self.doc);
        promise(async move {
            shared.check_open()?;
            let callback: Function = callback.dyn_into().map_err(|v| {
                Error::arg(
                    "fn",
                    format!("expected a function, got {}", js::type_name(&v)),
                )
            })?;
            let (b, ops, open) = ChangeBuilder::new();
            let result = callback.call1(&JsValue::NULL, &JsValue::from(b));
            open.set(false);
            if let Err(e) = result {
                let kind = js::prop(&e, "kind");
                return Err(match kind.as_string().as_deref() {
                    Some("argument") | Some("path") => Error::Change(js::describe(&e)),
                    _ => Error::Change(format!("the change callback threw: {}", js::describe(&e))),
                });
            }
            let ops = std::mem::take(&mut *ops.borrow_mut());
            commit(shared, doc, ops).await
        })
    }

    /// Writes `value` (any JSON) at `path` (`"todos/0/title"` or `["todos", 0, "title"]`).
    pub fn put(&self, path: JsValue, value: JsValue) -> Promise {
        self.write(builder::put_op(&path, &value))
    }

    /// Deletes the map key or list element at `path`. Without a path (`doc.delete()`), deletes
    /// the whole document, as [`DocHandle::delete_document`] does.
    pub fn delete(&self, path: Option<JsValue>) -> Promise {
        match path {
            Some(path) if !path.is_undefined() => self.write(builder::delete_op(&path)),
            _ => self.delete_document(),
        }
    }

    /// Deletes the document here and, through the servers, everywhere: resolves once the
    /// deletion is committed locally. The local copy is gone at once; later reads and writes
    /// throw `kind: "deleted"`, and every replica holding it (now or when it reconnects) drops
    /// it and emits `"deleted"`. Delete wins over concurrent and offline edits. Servers need
    /// write access to accept it (`repo.deletion(url).confirmed` once one has). Deleting twice
    /// rejects with `kind: "deleted"`.
    #[wasm_bindgen(js_name = deleteDocument)]
    pub fn delete_document(&self) -> Promise {
        let (shared, doc) = (self.shared.clone(), self.doc);
        promise(delete_document(shared, doc))
    }

    /// Inserts `value` into the list at `path` before `index`.
    pub fn insert(&self, path: JsValue, index: JsValue, value: JsValue) -> Promise {
        self.write(builder::insert_op(&path, &index, &value))
    }

    /// Replaces `del` characters (UTF-16 code units, like JavaScript strings) at `pos` of the
    /// text at `path` with `text`.
    #[wasm_bindgen(js_name = spliceText)]
    pub fn splice_text(&self, path: JsValue, pos: JsValue, del: JsValue, text: JsValue) -> Promise {
        self.write(builder::splice_op(&path, &pos, &del, &text))
    }

    /// Adds `by` (default 1) to the counter at `path`, creating it when absent.
    pub fn increment(&self, path: JsValue, by: JsValue) -> Promise {
        self.write(builder::increment_op(&path, &by))
    }

    /// The JSON value at `path` (the whole document without a path); `undefined` when absent.
    pub fn get(&self, path: JsValue) -> std::result::Result<JsValue, JsValue> {
        let path = path_arg(&path)?;
        let value = self
            .read(|d| concord::path::get(d, &path))?
            .map_err(Error::from)?;
        Ok(value.map_or(JsValue::UNDEFINED, |v| js::from_json(&v)))
    }

    /// The whole document as plain JSON.
    #[wasm_bindgen(js_name = toJSON)]
    pub fn to_json(&self) -> std::result::Result<JsValue, JsValue> {
        let value = self.read(|d| serde_json::to_value(AutoSerde::from(d)).unwrap_or_default())?;
        Ok(js::from_json(&value))
    }

    /// The current heads (hex change hashes).
    pub fn heads(&self) -> std::result::Result<JsValue, JsValue> {
        Ok(heads_array(&self.heads_now()?))
    }

    /// Listens to `"change"` (`{documentId, heads, origin: "local" | "remote"}`),
    /// `"ephemeral"` (`{documentId, senderId, sessionId, message}`) or `"deleted"`
    /// (`{documentId, by, atMs, origin}`: deleted here or by another replica; the local copy is
    /// gone, and edits not yet synced when it happened are refused). Returns a function that
    /// removes the listener.
    pub fn on(&self, event: JsValue, callback: JsValue) -> std::result::Result<JsValue, JsValue> {
        self.shared.check_open()?;
        let event = js::string_arg("event", &event)?;
        if !["change", "ephemeral", "deleted"].contains(&event.as_str()) {
            return Err(Error::arg(
                "event",
                format!(
                    "unknown event `{event}` (expected \"change\", \"ephemeral\" or \"deleted\")"
                ),
            )
            .into());
        }
        let callback: Function = callback.dyn_into().map_err(|v| {
            Error::arg(
                "callback",
                format!("expected a function, got {}", js::type_name(&v)),
            )
        })?;
        let id = self.shared.emitter.on(&event, Some(self.doc), callback);
        let shared = Rc::downgrade(&self.shared);
        Ok(Closure::once_into_js(move || {
            if let Some(s) = shared.upgrade() {
                s.emitter.off(id);
            }
        }))
    }

    /// Sends `message` (any JSON; CBOR on the wire, as automerge-repo does) to the peers syncing
    /// this document. Never stored.
    pub fn broadcast(&self, message: JsValue) -> std::result::Result<(), JsValue> {
        let bytes = crate::presence::encode(&js::to_json("message", &message)?)?;
        self.shared.with_core(|c| c.broadcast(&self.doc, bytes))?;
        self.shared.pump();
        Ok(())
    }

    /// `{status, peers}`: `"synced"` when a connected server holds exactly our heads,
    /// `"syncing"` when connected but not (yet) in sync, `"offline"` without a connection.
    #[wasm_bindgen(js_name = syncStatus)]
    pub fn sync_status(&self) -> std::result::Result<JsValue, JsValue> {
        let peers = self.shared.with_core(|c| c.sync_status(&self.doc))?;
        let connected = self.shared.with_core(|c| !c.established().is_empty())?;
        let status = if !connected {
            "offline"
        } else if peers.iter().any(|p| p.in_sync) {
            "synced"
        } else {
            "syncing"
        };
        let list: Array = peers
            .iter()
            .map(|p| {
                object(&[
                    ("peerId", p.peer_id.to_string().into()),
                    ("inSync", p.in_sync.into()),
                ])
            })
            .collect();
        Ok(object(&[("status", status.into()), ("peers", list.into())]))
    }

    /// Resolves once the document's current heads are durable at `level`:
    /// `"local"` (committed to this browser's storage) or `"server"` (a connected server has
    /// acknowledged heads covering ours; it stores before it acknowledges). Other levels reject
    /// with `kind: "unsupported"`. `options.timeoutMs` (default 30000) bounds the wait; offline,
    /// the wait continues across reconnects until then.
    #[wasm_bindgen(js_name = waitDurable)]
    pub fn wait_durable(&self, level: JsValue, options: JsValue) -> Promise {
        let handle = self.clone();
        promise(
            async move { crate::durable::wait(&handle.shared, handle.doc, &level, &options).await },
        )
    }

    /// A stable cursor for position `index` of the text or list at `path` (as the document was
    /// at `heads`, when given): it keeps pointing at the same character as others edit. An
    /// `index` at the end gives a cursor that follows the end.
    pub fn cursor(
        &self,
        path: JsValue,
        index: JsValue,
        heads: JsValue,
    ) -> std::result::Result<String, JsValue> {
        let path = path_arg(&path)?;
        let index = js::index_arg("index", &index)?;
        let heads = heads_arg(&heads)?;
        let cursor = self.read(|d| -> Result<String> {
            let obj = ops::obj_at(d, &path)?;
            let len = match &heads {
                Some(h) => d.length_at(&obj, h),
                None => d.length(&obj),
            };
            let at: CursorPosition = if index >= len {
                CursorPosition::End
            } else {
                index.into()
            };
            let c = d
                .get_cursor(&obj, at, heads.as_deref())
                .map_err(|e| Error::Path(e.to_string()))?;
            Ok(c.to_string())
        })??;
        Ok(cursor)
    }

    /// The current position of a cursor from [`DocHandle::cursor`] (here or on another replica
    /// that shared it, e.g. in presence messages).
    #[wasm_bindgen(js_name = cursorPosition)]
    pub fn cursor_position(
        &self,
        path: JsValue,
        cursor: JsValue,
    ) -> std::result::Result<u32, JsValue> {
        let path = path_arg(&path)?;
        let raw = js::string_arg("cursor", &cursor)?;
        let cursor = automerge::Cursor::try_from(raw.as_str())
            .map_err(|e| Error::arg("cursor", e.to_string()))?;
        let pos = self.read(|d| -> Result<usize> {
            let obj = ops::obj_at(d, &path)?;
            d.get_cursor_position(&obj, &cursor, None)
                .map_err(|e| Error::Path(e.to_string()))
        })??;
        Ok(u32::try_from(pos).unwrap_or(u32::MAX))
    }

    /// Every concurrent value at `path`: `[{value, actor, hlc: {ms, counter}, stamped, change, op}]`.
    pub fn conflicts(&self, path: JsValue) -> std::result::Result<JsValue, JsValue> {
        let path = path_arg(&path)?;
        let list = self
            .read(|d| concord::policy::conflicts(d, &path))?
            .map_err(Error::from)?;
        let json: Vec<serde_json::Value> = list
            .iter()
            .map(concord::policy::Candidate::to_json)
            .collect();
        Ok(js::from_json(&serde_json::Value::Array(json)))
    }

    /// The value at `path` as the repo's schema (`Repo.open({schema})`) resolves it: the same on
    /// every replica with the same heads.
    pub fn resolved(&self, path: JsValue) -> std::result::Result<JsValue, JsValue> {
        let path = path_arg(&path)?;
        let schema = &self.shared.schema;
        let value = self
            .read(|d| schema.resolved(d, &path))?
            .map_err(Error::from)?;
        Ok(js::from_json(&value))
    }

    /// Writes `value` at `path`, superseding every concurrent value there.
    pub fn resolve(&self, path: JsValue, value: JsValue) -> Promise {
        let (shared, doc) = (self.shared.clone(), self.doc);
        promise(async move {
            let path = path_arg(&path)?;
            let value = js::to_json("value", &value)?;
            let (tx, rx) = oneshot::channel();
            let now = shared.now();
            let outcome = shared.with_core(|c| {
                c.change_stamped(now, js::wall_ms(), &doc, |t| {
                    shared.schema.resolve(t, &path, &value)
                })
            })?;
            let ticket = outcome.map_err(Error::from)?.1;
            if let Some(ticket) = ticket {
                shared.register(ticket, Waiter::Commit(tx));
                shared.pump();
                return Ok(heads_array(&await_commit(&shared, doc, rx).await?));
            }
            Ok(JsValue::UNDEFINED)
        })
    }
}
