//! The browser WebSocket transport: one connection to the first reachable server URL, moving
//! to the next URL when a connection attempt fails, reconnecting with exponential backoff and
//! jitter. `setOnline(false)` closes it and stops reconnecting until `setOnline(true)`.

use std::rc::{Rc, Weak};

use concord::ConnId;
use concord::core::CloseReason;
use js_sys::{ArrayBuffer, Uint8Array};
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use crate::driver::Shared;
use crate::js::Timeout;

/// Reconnect delays: `initial_ms * 2^attempt` capped at `max_ms`, times a random factor in
/// `[1 - jitter, 1 + jitter]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First delay.
    pub initial_ms: u32,
    /// Largest delay.
    pub max_ms: u32,
    /// Relative jitter, 0 to 1.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_ms: 100,
            max_ms: 10_000,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The delay before attempt `n` (0-based).
    pub fn delay(&self, attempt: u32) -> u32 {
        let exp = u64::from(self.initial_ms)
            .saturating_mul(1u64 << attempt.min(20))
            .min(u64::from(self.max_ms)) as f64;
        let j = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - j + 2.0 * j * js_sys::Math::random();
        (exp * factor).clamp(0.0, f64::from(u32::MAX)) as u32
    }
}

/// One WebSocket and the handlers that must live as long as it.
#[derive(Debug)]
struct Socket {
    conn: ConnId,
    ws: WebSocket,
    opened: bool,
    _handlers: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl Socket {
    fn detach(&self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
    }
}

/// The reconnecting client connection of a repo.
#[derive(Debug)]
pub struct Transport {
    urls: Vec<String>,
    backoff: Backoff,
    idx: usize,
    attempt: u32,
    online: bool,
    socket: Option<Socket>,
    /// Closed sockets, kept until the next dial so no handler is dropped while it runs.
    retired: Vec<Socket>,
    retry: Option<Timeout>,
}

impl Transport {
    /// A transport for `urls` (already validated, tokens included).
    pub fn new(urls: Vec<String>, backoff: Backoff) -> Self {
        Self {
            urls,
            backoff,
            idx: 0,
            attempt: 0,
            online: true,
            socket: None,
            retired: Vec::new(),
            retry: None,
        }
    }

    /// The connection was closed by the driver (`Effect::Close`): reconnect later.
    pub fn forget(&mut self, conn: ConnId) {
        if self.socket.as_ref().is_some_and(|s| s.conn == conn) {
            if let Some(s) = self.socket.take() {
                s.detach();
                self.retired.push(s);
            }
        }
    }

    /// Stops for good: closes the socket and cancels the retry timer.
    pub fn shutdown(&mut self) {
        self.online = false;
        self.retry = None;
        if let Some(s) = self.socket.take() {
            s.detach();
            let _ = s.ws.close_with_code_and_reason(1000, "repo closed");
            self.retired.push(s);
        }
    }

    /// The URL being used or tried.
    pub fn current_url(&self) -> Option<&str> {
        self.urls
            .get(self.idx % self.urls.len().max(1))
            .map(String::as_str)
    }
}

/// Starts (or restarts) connecting.
pub fn start(shared: &Rc<Shared>) {
    dial(Rc::downgrade(shared));
}

/// Goes offline (closing the connection) or back online (reconnecting at once).
pub fn set_online(shared: &Rc<Shared>, online: bool) {
    let conn = {
        let mut t = shared.transport.borrow_mut();
        let Some(t) = t.as_mut() else { return };
        t.online = online;
        t.retry = None;
        t.attempt = 0;
        if online {
            if t.socket.is_some() {
                return;
            }
            None
        } else {
            t.socket.take().map(|s| {
                s.detach();
                let _ = s.ws.close_with_code_and_reason(1000, "going offline");
                let conn = s.opened.then_some(s.conn);
                t.retired.push(s);
                conn
            })
        }
    };
    if online {
        start(shared);
        return;
    }
    if let Some(Some(conn)) = conn {
        shared.sockets.borrow_mut().remove(&conn);
        let now = shared.now();
        let _ = shared.with_core(|c| c.handle_disconnect(now, conn));
        shared.pump();
    }
}

fn dial(weak: Weak<Shared>) {
    let Some(shared) = weak.upgrade() else { return };
    if shared.is_closed() {
        return;
    }
    let conn = shared.new_conn();
    let url = {
        let mut t = shared.transport.borrow_mut();
        let Some(t) = t.as_mut() else { return };
        t.retired.clear();
        t.retry = None;
        if !t.online || t.socket.is_some() || t.urls.is_empty() {
            return;
        }
        t.urls[t.idx % t.urls.len()].clone()
    };
    let ws = match WebSocket::new(&url) {
        Ok(ws) => ws,
        Err(e) => {
            web_sys::console::warn_2(&"concord: cannot open WebSocket".into(), &e);
            schedule_retry(&shared, true);
            return;
        }
    };
    ws.set_binary_type(BinaryType::Arraybuffer);
    let on_open = {
        let weak = weak.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |_| {
            if let Some(s) = weak.upgrade() {
                opened(&s, conn);
            }
        })
    };
    let on_message = {
        let weak = weak.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            if let Some(s) = weak.upgrade() {
                received(&s, conn, &ev);
            }
        })
    };
    let on_close = {
        let weak = weak.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            if let Some(s) = weak.upgrade() {
                closed(&s, conn, &ev);
            }
        })
    };
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    if let Some(t) = shared.transport.borrow_mut().as_mut() {
        t.socket = Some(Socket {
            conn,
            ws,
            opened: false,
            _handlers: vec![on_open, on_message, on_close],
        });
    }
}

fn opened(shared: &Rc<Shared>, conn: ConnId) {
    let ws = {
        let mut t = shared.transport.borrow_mut();
        let Some(s) = t
            .as_mut()
            .and_then(|t| t.socket.as_mut())
            .filter(|s| s.conn == conn)
        else {
            return;
        };
        s.opened = true;
        s.ws.clone()
    };
    if let Some(t) = shared.transport.borrow_mut().as_mut() {
        t.attempt = 0;
    }
    shared.sockets.borrow_mut().insert(conn, ws);
    let now = shared.now();
    let _ = shared.with_core(|c| c.handle_connect(now, conn));
    shared.pump();
}

fn received(shared: &Rc<Shared>, conn: ConnId, ev: &JsValue) {
    let Some(ev) = ev.dyn_ref::<MessageEvent>() else {
        return;
    };
    let data = ev.data();
    let bytes = if let Some(buf) = data.dyn_ref::<ArrayBuffer>() {
        Uint8Array::new(buf).to_vec()
    } else if let Some(text) = data.as_string() {
        text.into_bytes()
    } else {
        return;
    };
    let now = shared.now();
    let _ = shared.with_core(|c| c.handle_message(now, conn, &bytes));
    shared.pump();
}

fn closed(shared: &Rc<Shared>, conn: ConnId, ev: &JsValue) {
    let socket = {
        let mut t = shared.transport.borrow_mut();
        let Some(t) = t.as_mut() else { return };
        if t.socket.as_ref().is_none_or(|s| s.conn != conn) {
            return;
        }
        t.socket.take()
    };
    let Some(socket) = socket else { return };
    socket.detach();
    let was_open = socket.opened;
    if let Some(t) = shared.transport.borrow_mut().as_mut() {
        t.retired.push(socket);
    }
    if was_open {
        shared.sockets.borrow_mut().remove(&conn);
        let now = shared.now();
        let _ = shared.with_core(|c| c.handle_disconnect(now, conn));
        shared.pump();
    }
    if let Some(ev) = ev.dyn_ref::<CloseEvent>() {
        if ev.code() == 1008 {
            let reason = CloseReason {
                code: 1008,
                reason: ev.reason(),
            };
            web_sys::console::warn_1(
                &format!("concord: server refused the connection: {}", reason.reason).into(),
            );
        }
    }
    // A connection that never opened moves on to the next URL (failover).
    schedule_retry(shared, !was_open);
}

fn schedule_retry(shared: &Rc<Shared>, next_url: bool) {
    if shared.is_closed() {
        return;
    }
    let mut t = shared.transport.borrow_mut();
    let Some(t) = t.as_mut() else { return };
    if !t.online {
        return;
    }
    if next_url {
        t.idx = t.idx.wrapping_add(1);
    }
    let delay = t.backoff.delay(t.attempt);
    t.attempt = t.attempt.saturating_add(1);
    let weak = Rc::downgrade(shared);
    t.retry = Some(Timeout::new(delay, move || dial(weak)));
}
