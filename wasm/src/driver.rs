//! The browser driver: the sans-IO core on the JavaScript event loop.
//!
//! Every input (a call from JavaScript, a WebSocket frame, a storage result, a timer) borrows
//! the core briefly, then [`Shared::pump`] drains its effects: frames go to the sockets, storage
//! operations to a queue run one at a time by a local task, events to listeners and waiters.
//! No borrow is held while JavaScript runs, and a pump that starts while another runs leaves the
//! work to the outer one, so listeners may call back into the repo.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use automerge::ChangeHash;
use concord::ConnId;
use concord::core::{
    CloseReason, Core, Effect, Event, FindOutcome, OpId, Origin, StorageOp, Ticket,
};
use concord::policy::Schema;
use concord::storage::Storage;
use futures::channel::oneshot;
use wasm_bindgen::JsValue;

use crate::emitter::Emitter;
use crate::error::{Error, Result};
use crate::js::{self, object};
use crate::status::Status;
use crate::transport::Transport;

/// Someone awaiting the outcome of a ticket.
#[derive(Debug)]
pub enum Waiter {
    /// A local change or create: its commit.
    Commit(oneshot::Sender<std::result::Result<Vec<ChangeHash>, String>>),
    /// A find.
    Find(oneshot::Sender<FindOutcome>),
}

/// State shared by the repo, its handles, its transport and its timers.
#[derive(Debug)]
pub struct Shared {
    core: RefCell<Core>,
    storage: Rc<dyn Storage>,
    on_close: RefCell<Option<Closer>>,
    queue: RefCell<VecDeque<(OpId, StorageOp)>>,
    storage_busy: Cell<bool>,
    waiters: RefCell<HashMap<Ticket, Waiter>>,
    progress: RefCell<Vec<oneshot::Sender<()>>>,
    /// Open sockets by connection (for `Effect::Send`).
    pub sockets: RefCell<HashMap<ConnId, web_sys::WebSocket>>,
    /// Listeners.
    pub emitter: Emitter,
    /// The WebSocket transport (`None` without servers).
    pub transport: RefCell<Option<Transport>>,
    /// Conflict policies for `resolved` reads and writes.
    pub schema: Schema,
    /// How long `find` waits for a first connection before answering "unavailable".
    pub connect_wait_ms: u32,
    pumping: Cell<bool>,
    closed: Cell<bool>,
    next_conn: Cell<u64>,
    start: f64,
    status: Cell<Status>,
    tick: RefCell<Option<js::Interval>>,
}

/// Releases the storage once the repo is closed and no operation is running.
pub struct Closer(pub Box<dyn FnOnce()>);

impl std::fmt::Debug for Closer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Closer")
    }
}

impl Shared {
    /// A driver for `core` over `storage`; `on_close` releases the storage.
    pub fn new(
        core: Core,
        storage: Rc<dyn Storage>,
        on_close: Option<Closer>,
        schema: Schema,
        connect_wait_ms: u32,
    ) -> Rc<Self> {
        let shared = Rc::new(Self {
            core: RefCell::new(core),
            storage,
            on_close: RefCell::new(on_close),
            queue: RefCell::default(),
            storage_busy: Cell::new(false),
            waiters: RefCell::default(),
            progress: RefCell::default(),
            sockets: RefCell::default(),
            emitter: Emitter::default(),
            transport: RefCell::new(None),
            schema,
            connect_wait_ms,
            pumping: Cell::new(false),
            closed: Cell::new(false),
            next_conn: Cell::new(1),
            start: js_sys::Date::now(),
            status: Cell::new(Status::Offline),
            tick: RefCell::new(None),
        });
        let weak = Rc::downgrade(&shared);
        *shared.tick.borrow_mut() = Some(js::Interval::new(500, move || {
            if let Some(s) = weak.upgrade() {
                let now = s.now();
                if let Ok(mut core) = s.core.try_borrow_mut() {
                    core.handle_wall_clock(js::wall_ms());
                    core.handle_tick(now);
                }
                s.pump();
            }
        }));
        shared
    }

    /// Milliseconds since the repo opened (the core's clock).
    pub fn now(&self) -> u64 {
        (js_sys::Date::now() - self.start).max(0.0) as u64
    }

    /// Fails with `closed` once the repo is closed.
    pub fn check_open(&self) -> Result<()> {
        if self.closed.get() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Runs `f` on the core (not re-entrantly: a listener running inside another core call gets
    /// an error instead of a trap).
    pub fn with_core<R>(&self, f: impl FnOnce(&mut Core) -> R) -> Result<R> {
        self.check_open()?;
        let mut core = self
            .core
            .try_borrow_mut()
            .map_err(|_| Error::Unsupported("the repo is busy (re-entrant call)".into()))?;
        Ok(f(&mut core))
    }

    /// Registers a waiter for `ticket`.
    pub fn register(&self, ticket: Ticket, waiter: Waiter) {
        self.waiters.borrow_mut().insert(ticket, waiter);
    }

    /// A fresh connection id.
    pub fn new_conn(&self) -> ConnId {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        ConnId(id)
    }

    /// Resolves after the next pump (something may have changed).
    pub fn progress(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.progress.borrow_mut().push(tx);
        rx
    }

    /// The storage.
    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.get()
    }

    /// Executes every pending effect of the core.
    pub fn pump(self: &Rc<Self>) {
        if self.pumping.replace(true) {
            return;
        }
        loop {
            let effect = match self.core.try_borrow_mut() {
                Ok(mut core) => core.poll_effect(),
                Err(_) => None,
            };
            let Some(effect) = effect else { break };
            self.dispatch(effect);
        }
        self.pumping.set(false);
        let status = self.core.try_borrow().map(|c| Status::of(&c)).ok();
        if let Some(status) = status {
            if status != self.status.replace(status) && !self.closed.get() {
                let payload = object(&[("status", status.as_str().into())]);
                self.emitter.emit("status", None, &payload);
            }
        }
        for tx in self.progress.borrow_mut().drain(..) {
            let _ = tx.send(());
        }
    }

    fn disconnect(self: &Rc<Self>, conn: ConnId, reason: &CloseReason) {
        if let Some(ws) = self.sockets.borrow_mut().remove(&conn) {
            let _ = ws.close_with_code_and_reason(reason.code, &reason.reason);
        }
        if let Some(t) = self.transport.borrow_mut().as_mut() {
            t.forget(conn);
        }
        let now = self.now();
        if let Ok(mut core) = self.core.try_borrow_mut() {
            core.handle_disconnect(now, conn);
        }
    }

    fn dispatch(self: &Rc<Self>, effect: Effect) {
        match effect {
            Effect::Send { conn, bytes } => {
                let failed = match self.sockets.borrow().get(&conn) {
                    Some(ws) => ws.send_with_u8_array(&bytes).is_err(),
                    None => false,
                };
                if failed {
                    let reason = CloseReason {
                        code: 1011,
                        reason: "send failed".into(),
                    };
                    self.disconnect(conn, &reason);
                }
            }
            Effect::Close { conn, reason } => self.disconnect(conn, &reason),
            Effect::Storage { id, op } => {
                self.queue.borrow_mut().push_back((id, op));
                if !self.storage_busy.replace(true) {
                    wasm_bindgen_futures::spawn_local(run_storage(self.clone()));
                }
            }
            Effect::Event(event) => self.event(event),
            _ => {}
        }
    }

    fn resolve(&self, ticket: Ticket) -> Option<Waiter> {
        self.waiters.borrow_mut().remove(&ticket)
    }

    fn event(self: &Rc<Self>, event: Event) {
        match event {
            Event::Committed { ticket, result } => {
                if let Some(Waiter::Commit(tx)) = self.resolve(ticket) {
                    let _ = tx.send(result);
                }
            }
            Event::FindResolved {
                ticket, outcome, ..
            } => {
                if let Some(Waiter::Find(tx)) = self.resolve(ticket) {
                    let _ = tx.send(outcome);
                }
            }
            Event::DocChanged { doc, heads, origin } => {
                let payload = object(&[
                    ("documentId", doc.to_string().into()),
                    ("heads", crate::handle::heads_array(&heads)),
                    ("origin", origin_str(origin).into()),
                ]);
                self.emitter.emit("change", Some(doc), &payload);
            }
            Event::DocDeleted {
                doc,
                tombstone,
                origin,
                ..
            } => {
                let payload = object(&[
                    ("documentId", doc.to_string().into()),
                    ("by", tombstone.by.as_str().into()),
                    ("atMs", (tombstone.at_ms as f64).into()),
                    ("origin", origin_str(origin).into()),
                ]);
                // Reaches the document's handles and the repo's `deleted` listeners.
                self.emitter.emit("deleted", Some(doc), &payload);
            }
            Event::Ephemeral {
                doc,
                from,
                session_id,
                data,
                ..
            } => {
                let value = crate::presence::decode(&data);
                let payload = object(&[
                    ("documentId", doc.to_string().into()),
                    ("senderId", from.to_string().into()),
                    ("sessionId", session_id.into()),
                    ("message", value),
                ]);
                self.emitter.emit("ephemeral", Some(doc), &payload);
            }
            Event::PeerConnected { peer_id, .. } => {
                let payload = object(&[("peerId", peer_id.to_string().into())]);
                self.emitter.emit("peer", None, &payload);
            }
            Event::PeerDisconnected { peer_id, .. } => {
                let peer = peer_id.map_or(JsValue::NULL, |p| p.to_string().into());
                self.emitter
                    .emit("peer-disconnected", None, &object(&[("peerId", peer)]));
            }
            Event::Protocol { error, .. } => {
                let e: JsValue = Error::Unsupported(format!("protocol error: {error}")).into();
                self.emitter.emit("error", None, &e);
            }
            Event::StorageFailed { doc, error } => {
                let e: JsValue = Error::storage(format!("{doc}: {error}")).into();
                self.emitter.emit("error", None, &e);
            }
            _ => {}
        }
    }

    /// Closes connections and storage, fails every waiter with `closed`, drops listeners.
    pub fn close(self: &Rc<Self>) {
        if self.closed.replace(true) {
            return;
        }
        if let Some(mut t) = self.transport.borrow_mut().take() {
            t.shutdown();
        }
        let conns: Vec<ConnId> = self.sockets.borrow().keys().copied().collect();
        for conn in conns {
            let reason = CloseReason {
                code: 1000,
                reason: "repo closed".into(),
            };
            self.disconnect(conn, &reason);
        }
        self.tick.borrow_mut().take();
        self.waiters.borrow_mut().clear();
        self.queue.borrow_mut().clear();
        self.emitter.clear();
        for tx in self.progress.borrow_mut().drain(..) {
            let _ = tx.send(());
        }
        if !self.storage_busy.get() {
            self.release_storage();
        }
    }

    fn release_storage(&self) {
        if let Some(Closer(f)) = self.on_close.borrow_mut().take() {
            f();
        }
    }
}

/// `"local"` or `"remote"`.
fn origin_str(origin: Origin) -> &'static str {
    if origin == Origin::Local {
        "local"
    } else {
        "remote"
    }
}

/// Runs queued storage operations one at a time, reporting each result to the core.
async fn run_storage(shared: Rc<Shared>) {
    loop {
        let next = shared.queue.borrow_mut().pop_front();
        let Some((id, op)) = next else { break };
        let result = op.run_async(shared.storage.as_ref()).await;
        let now = shared.now();
        if let Ok(mut core) = shared.core.try_borrow_mut() {
            core.handle_storage_result(now, id, result);
        }
        shared.pump();
    }
    shared.storage_busy.set(false);
    if shared.closed.get() {
        shared.release_storage();
    }
}
