//! `Repo`: opening (storage, servers, token, schema), creating and finding documents, status.

use std::rc::Rc;

use concord::core::{Core, CoreConfig, FindOutcome};
use concord::policy::{Policy, Schema};
use concord::storage::{MemoryStorage, Storage};
use concord::{AutomergeUrl, DocumentId, PeerId, StorageId};
use futures::channel::oneshot;
use js_sys::{Array, Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::driver::{Closer, Shared, Waiter};
use crate::error::{Error, Result};
use crate::handle::{self, DocHandle};
use crate::idb::IdbStorage;
use crate::js::{self, prop};
use crate::ops::Op;
use crate::transport::{self, Backoff, Transport};

const STORAGE_ID_KEY: &str = "storage_id";

/// A replica in the browser: documents in IndexedDB (or in memory), synced with servers.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Repo {
    pub(crate) shared: Rc<Shared>,
    /// The server URLs (with the token), for the JSON API.
    pub(crate) servers: Vec<String>,
}

/// Server URLs from `servers` (a string or an array of strings), each checked to be a
/// `ws:` or `wss:` URL, with `token` added as the `token` query parameter.
fn server_urls(servers: &JsValue, token: &JsValue) -> Result<Vec<String>> {
    let list: Vec<JsValue> = if servers.is_undefined() || servers.is_null() {
        Vec::new()
    } else if servers.is_string() {
        vec![servers.clone()]
    } else if Array::is_array(servers) {
        Array::from(servers).iter().collect()
    } else {
        return Err(Error::arg(
            "servers",
            format!(
                "expected a URL string or an array of them, got {}",
                js::type_name(servers)
            ),
        ));
    };
    let token = if token.is_undefined() || token.is_null() {
        None
    } else {
        Some(js::string_arg("token", token)?)
    };
    list.iter()
        .map(|v| {
            let raw = js::string_arg("servers", v)?;
            let url = web_sys::Url::new(&raw).map_err(|e| Error::Url {
                url: raw.clone(),
                reason: js::describe(&e),
            })?;
            let scheme = url.protocol();
            if scheme != "ws:" && scheme != "wss:" {
                return Err(Error::Url {
                    url: raw,
                    reason: format!("expected a ws: or wss: URL, got `{scheme}`"),
                });
            }
            if let Some(t) = &token {
                url.search_params().set("token", t);
            }
            Ok(url.href())
        })
        .collect()
}

fn schema_arg(value: &JsValue) -> Result<Schema> {
    let mut schema = Schema::new();
    if value.is_undefined() || value.is_null() {
        return Ok(schema);
    }
    if !value.is_object() || Array::is_array(value) {
        return Err(Error::arg(
            "schema",
            "expected an object mapping path patterns to policy names",
        ));
    }
    for entry in js_sys::Object::entries(value.unchecked_ref()).iter() {
        let pair = Array::from(&entry);
        let pattern = js::string_arg("schema", &pair.get(0))?;
        let policy: Policy = js::string_arg("schema", &pair.get(1))?
            .parse()
            .map_err(|e| Error::Policy(format!("{e}")))?;
        schema.register(&pattern, policy)?;
    }
    Ok(schema)
}

fn backoff_arg(value: &JsValue) -> Result<Backoff> {
    let mut b = Backoff::default();
    let num = |key: &'static str, default: u32| -> Result<u32> {
        let v = prop(value, key);
        if v.is_undefined() {
            Ok(default)
        } else {
            Ok(u32::try_from(js::index_arg(key, &v)?).unwrap_or(u32::MAX))
        }
    };
    b.initial_ms = num("initialMs", b.initial_ms)?.max(1);
    b.max_ms = num("maxMs", b.max_ms)?.max(b.initial_ms);
    Ok(b)
}

async fn open_storage(database: &JsValue) -> Result<(Rc<dyn Storage>, Option<Closer>)> {
    if database.is_undefined() || database.is_null() {
        return Ok((Rc::new(MemoryStorage::new()), None));
    }
    let name = js::string_arg("database", database)?;
    let idb = Rc::new(IdbStorage::open(&name).await?);
    let closer = {
        let idb = idb.clone();
        Closer(Box::new(move || idb.close()))
    };
    Ok((idb, Some(closer)))
}

async fn open(options: JsValue) -> Result<Repo> {
    if !(options.is_undefined() || options.is_object()) || Array::is_array(&options) {
        return Err(Error::arg(
            "options",
            format!("expected an object, got {}", js::type_name(&options)),
        ));
    }
    let urls = server_urls(&prop(&options, "servers"), &prop(&options, "token"))?;
    let schema = schema_arg(&prop(&options, "schema"))?;
    let backoff = backoff_arg(&prop(&options, "backoff"))?;
    let wait = prop(&options, "connectWaitMs");
    let connect_wait_ms = if wait.is_undefined() {
        5_000
    } else {
        u32::try_from(js::index_arg("connectWaitMs", &wait)?).unwrap_or(u32::MAX)
    };
    let peer = prop(&options, "peerId");
    let peer_id = if peer.is_undefined() {
        PeerId::new(format!(
            "concord-wasm-{}",
            hex::encode(js::random_bytes::<8>())
        ))
    } else {
        PeerId::new(js::string_arg("peerId", &peer)?)
    };
    let (storage, closer) = open_storage(&prop(&options, "database")).await?;
    let storage_id = match storage.get_meta(STORAGE_ID_KEY).await? {
        Some(bytes) => StorageId::new(String::from_utf8_lossy(&bytes).into_owned()),
        None => {
            let id = StorageId::from_random(js::random_bytes::<16>());
            storage
                .put_meta(STORAGE_ID_KEY, id.as_str().as_bytes())
                .await?;
            id
        }
    };
    let seed = u64::from_le_bytes(js::random_bytes::<8>());
    let mut core = Core::new(CoreConfig::new(peer_id, Some(storage_id), seed));
    // Deleted documents stay deleted across sessions (and unconfirmed deletions are sent to
    // the next server).
    core.seed_tombstones(storage.tombstones().await?);
    core.handle_wall_clock(js::wall_ms());
    let shared = Shared::new(core, storage, closer, schema, connect_wait_ms);
    if !urls.is_empty() {
        *shared.transport.borrow_mut() = Some(Transport::new(urls.clone(), backoff));
        transport::start(&shared);
    }
    Ok(Repo {
        shared,
        servers: urls,
    })
}

async fn find_once(shared: &Rc<Shared>, doc: DocumentId) -> Result<FindOutcome> {
    let (tx, rx) = oneshot::channel();
    let now = shared.now();
    let ticket = shared.with_core(|c| {
        let t = c.find(now, doc);
        c.pin(&doc);
        t
    })?;
    shared.register(ticket, Waiter::Find(tx));
    shared.pump();
    rx.await.map_err(|_| Error::Closed)
}

async fn wait_connected(shared: &Rc<Shared>, ms: u32) -> Result<()> {
    let deadline = js_sys::Date::now() + f64::from(ms);
    loop {
        if shared.with_core(|c| !c.established().is_empty())? {
            return Ok(());
        }
        let left = deadline - js_sys::Date::now();
        if left <= 0.0 {
            return Err(Error::Timeout {
                ms,
                what: "a server connection",
            });
        }
        let tick = Box::pin(js::sleep(left.min(250.0) as u32));
        let _ = futures::future::select(shared.progress(), tick).await;
    }
}

fn doc_arg(url: &JsValue) -> Result<DocumentId> {
    let raw = js::string_arg("url", url)?;
    let parsed = if raw.starts_with("automerge:") {
        raw.parse::<AutomergeUrl>()
            .map(|u| u.document_id)
            .map_err(|e| e.to_string())
    } else {
        raw.parse::<DocumentId>().map_err(|e| e.to_string())
    };
    parsed.map_err(|reason| Error::Url { url: raw, reason })
}

pub(crate) fn promise(f: impl std::future::Future<Output = Result<JsValue>> + 'static) -> Promise {
    future_to_promise(async move { f.await.map_err(JsValue::from) })
}

#[wasm_bindgen]
impl Repo {
    /// Opens a repo. Options (all optional): `database` (IndexedDB database name; in memory
    /// without it), `servers` (`ws:`/`wss:` URL or array of URLs: one connection, failing over
    /// in order), `token` (added to each URL as `?token=`), `peerId`, `schema` (`{pattern:
    /// policy}`, e.g. `{"title": "lww"}`), `connectWaitMs` (how long `find` waits for a server,
    /// default 5000), `backoff` (`{initialMs, maxMs}`).
    pub fn open(options: JsValue) -> Promise {
        promise(async move { open(options).await.map(JsValue::from) })
    }

    /// Deletes an IndexedDB database (every document of a repo that used it).
    #[wasm_bindgen(js_name = deleteDatabase)]
    pub fn delete_database(name: JsValue) -> Promise {
        promise(async move {
            IdbStorage::delete_database(&js::string_arg("name", &name)?).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Creates a document, optionally with initial contents (a JSON object); resolves with its
    /// handle once committed locally.
    pub fn create(&self, initial: JsValue) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let initial = if initial.is_undefined() {
                None
            } else {
                let v = js::to_json("initial", &initial)?;
                if !v.is_object() {
                    return Err(Error::arg("initial", "expected an object"));
                }
                Some(v)
            };
            let doc = DocumentId::from_bytes(js::random_bytes::<16>());
            let (tx, rx) = oneshot::channel();
            let now = shared.now();
            let ticket = shared.with_core(|c| c.create(now, doc))??;
            shared.register(ticket, Waiter::Commit(tx));
            let handle = DocHandle::new(shared.clone(), doc);
            shared.pump();
            match rx.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Error::storage(e)),
                Err(_) => return Err(Error::Closed),
            }
            if let Some(v) = initial {
                handle::commit(
                    shared,
                    doc,
                    vec![Op::Put(concord::path::DocPath::root(), v)],
                )
                .await?;
            }
            Ok(handle.into())
        })
    }

    /// Finds a document by `automerge:` URL (or bare id): local storage first, then the
    /// servers. Rejects with `kind: "unavailable"` when nobody has it, and with
    /// `kind: "deleted"` when it was deleted (here, or as a server said).
    pub fn find(&self, url: JsValue) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let doc = doc_arg(&url)?;
            let asked = shared.with_core(|c| !c.established().is_empty())?;
            let mut outcome = find_once(&shared, doc).await?;
            let has_servers = shared.transport.borrow().is_some();
            if outcome == FindOutcome::Unavailable
                && has_servers
                && !asked
                && wait_connected(&shared, shared.connect_wait_ms)
                    .await
                    .is_ok()
            {
                outcome = find_once(&shared, doc).await?;
            }
            match outcome {
                FindOutcome::Found => Ok(DocHandle::new(shared, doc).into()),
                FindOutcome::Unavailable => Err(Error::Unavailable(doc.to_string())),
                FindOutcome::Deleted => Err(Error::Deleted(doc.to_string())),
                FindOutcome::Failed(reason) => Err(Error::storage(reason)),
                _ => Err(Error::Unavailable(doc.to_string())),
            }
        })
    }

    /// How `url` was deleted, if this replica knows it was: `{by, atMs, confirmed}`
    /// (`confirmed`: a server accepted or announced the deletion); `null` otherwise.
    pub fn deletion(&self, url: JsValue) -> std::result::Result<JsValue, JsValue> {
        let doc = doc_arg(&url)?;
        let tombstone = self.shared.with_core(|c| c.tombstone(&doc).cloned())?;
        Ok(tombstone.map_or(JsValue::NULL, |t| {
            js::object(&[
                ("by", t.by.as_str().into()),
                ("atMs", (t.at_ms as f64).into()),
                ("confirmed", t.confirmed.into()),
            ])
        }))
    }

    /// This replica's peer id.
    #[wasm_bindgen(getter, js_name = peerId)]
    pub fn peer_id(&self) -> std::result::Result<String, JsValue> {
        Ok(self.shared.with_core(|c| c.config().peer_id.to_string())?)
    }

    /// This replica's storage id (kept in its database).
    #[wasm_bindgen(getter, js_name = storageId)]
    pub fn storage_id(&self) -> std::result::Result<Option<String>, JsValue> {
        Ok(self.shared.with_core(|c| {
            c.config()
                .storage_id
                .as_ref()
                .map(|s| s.as_str().to_owned())
        })?)
    }

    /// `"offline"`, `"connected"`, `"syncing"` or `"synced"` (`"closed"` after `close`).
    #[wasm_bindgen(getter)]
    pub fn status(&self) -> String {
        if self.shared.is_closed() {
            "closed".into()
        } else {
            self.shared.status().as_str().into()
        }
    }

    /// Listens to `"status"` (`{status}`), `"peer"` / `"peer-disconnected"` (`{peerId}`),
    /// `"deleted"` (`{documentId, by, atMs, origin}`, for every document) or `"error"` (an
    /// `Error` with a `kind`). Returns a function that removes the listener.
    pub fn on(&self, event: JsValue, callback: JsValue) -> std::result::Result<JsValue, JsValue> {
        self.shared.check_open()?;
        let event = js::string_arg("event", &event)?;
        if !["status", "peer", "peer-disconnected", "deleted", "error"].contains(&event.as_str()) {
            return Err(Error::arg("event", format!("unknown event `{event}`")).into());
        }
        let callback: Function = callback.dyn_into().map_err(|v| {
            Error::arg(
                "callback",
                format!("expected a function, got {}", js::type_name(&v)),
            )
        })?;
        let id = self.shared.emitter.on(&event, None, callback);
        let shared = Rc::downgrade(&self.shared);
        Ok(Closure::once_into_js(move || {
            if let Some(s) = shared.upgrade() {
                s.emitter.off(id);
            }
        }))
    }

    /// Goes offline (`false`: closes the connection, stops reconnecting; writes go on locally)
    /// or back online (`true`: reconnects now and merges).
    #[wasm_bindgen(js_name = setOnline)]
    pub fn set_online(&self, online: JsValue) -> std::result::Result<(), JsValue> {
        self.shared.check_open()?;
        let online = online.as_bool().ok_or_else(|| {
            Error::arg(
                "online",
                format!("expected a boolean, got {}", js::type_name(&online)),
            )
        })?;
        transport::set_online(&self.shared, online);
        Ok(())
    }

    /// Closes the connection and the database. Every later call rejects with `kind: "closed"`.
    pub fn close(&self) {
        self.shared.close();
    }
}
