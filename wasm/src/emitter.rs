//! Event listeners registered from JavaScript (`repo.on(...)`, `handle.on(...)`).

use std::cell::RefCell;

use concord::DocumentId;
use js_sys::Function;
use wasm_bindgen::JsValue;

#[derive(Debug)]
struct Listener {
    id: u32,
    event: String,
    doc: Option<DocumentId>,
    callback: Function,
}

/// Listeners by event name and (for document events) document.
#[derive(Debug, Default)]
pub struct Emitter {
    listeners: RefCell<Vec<Listener>>,
    next: RefCell<u32>,
}

impl Emitter {
    /// Adds a listener; returns its id for [`Emitter::off`].
    pub fn on(&self, event: &str, doc: Option<DocumentId>, callback: Function) -> u32 {
        let id = {
            let mut n = self.next.borrow_mut();
            *n += 1;
            *n
        };
        self.listeners.borrow_mut().push(Listener {
            id,
            event: event.to_owned(),
            doc,
            callback,
        });
        id
    }

    /// Removes a listener.
    pub fn off(&self, id: u32) {
        self.listeners.borrow_mut().retain(|l| l.id != id);
    }

    /// Removes every listener.
    pub fn clear(&self) {
        self.listeners.borrow_mut().clear();
    }

    /// Calls every listener of `event` (for `doc`, when given) with `payload`. A listener that
    /// throws is reported on the console; the others still run. No borrow is held while calling,
    /// so listeners may use the repo (and add or remove listeners).
    pub fn emit(&self, event: &str, doc: Option<DocumentId>, payload: &JsValue) {
        let targets: Vec<Function> = self
            .listeners
            .borrow()
            .iter()
            .filter(|l| l.event == event && (l.doc.is_none() || l.doc == doc))
            .map(|l| l.callback.clone())
            .collect();
        for f in targets {
            if let Err(e) = f.call1(&JsValue::NULL, payload) {
                web_sys::console::error_3(
                    &"concord: a listener threw".into(),
                    &JsValue::from_str(event),
                    &e,
                );
            }
        }
    }
}
