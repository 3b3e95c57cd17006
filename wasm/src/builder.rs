//! The object a `handle.change(fn)` callback receives: path-based writes, applied together in
//! one Automerge change when the callback returns (nothing is applied when it throws).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use wasm_bindgen::prelude::*;

use crate::error::Error;
use crate::js;
use crate::ops::{Op, path_arg};

/// The ops a builder recorded.
pub type Recorded = Rc<RefCell<Vec<Op>>>;

/// Records writes for one change. Usable only while the callback runs.
#[wasm_bindgen]
#[derive(Debug)]
pub struct ChangeBuilder {
    ops: Rc<RefCell<Vec<Op>>>,
    open: Rc<Cell<bool>>,
}

impl ChangeBuilder {
    /// A builder and the handles to read its ops and close it.
    pub fn new() -> (Self, Recorded, Rc<Cell<bool>>) {
        let ops = Rc::new(RefCell::new(Vec::new()));
        let open = Rc::new(Cell::new(true));
        (
            Self {
                ops: ops.clone(),
                open: open.clone(),
            },
            ops,
            open,
        )
    }

    fn push(&self, op: Op) -> Result<(), JsValue> {
        if !self.open.get() {
            return Err(Error::arg(
                "change",
                "the change callback has returned; write through the handle instead",
            )
            .into());
        }
        self.ops.borrow_mut().push(op);
        Ok(())
    }
}

/// Parses JavaScript arguments into an [`Op`] (shared by the builder and the handle).
pub fn put_op(path: &JsValue, value: &JsValue) -> Result<Op, Error> {
    Ok(Op::Put(path_arg(path)?, js::to_json("value", value)?))
}

/// `delete(path)`.
pub fn delete_op(path: &JsValue) -> Result<Op, Error> {
    Ok(Op::Delete(path_arg(path)?))
}

/// `insert(path, index, value)`.
pub fn insert_op(path: &JsValue, index: &JsValue, value: &JsValue) -> Result<Op, Error> {
    Ok(Op::Insert(
        path_arg(path)?,
        js::index_arg("index", index)?,
        js::to_json("value", value)?,
    ))
}

/// `spliceText(path, pos, del, text)`.
pub fn splice_op(
    path: &JsValue,
    pos: &JsValue,
    del: &JsValue,
    text: &JsValue,
) -> Result<Op, Error> {
    let text = if text.is_undefined() {
        String::new()
    } else {
        js::string_arg("text", text)?
    };
    Ok(Op::Splice(
        path_arg(path)?,
        js::index_arg("pos", pos)?,
        js::index_arg("del", del)?,
        text,
    ))
}

/// `increment(path, by = 1)`.
pub fn increment_op(path: &JsValue, by: &JsValue) -> Result<Op, Error> {
    Ok(Op::Increment(path_arg(path)?, js::int_arg("by", by, 1)?))
}

#[wasm_bindgen]
impl ChangeBuilder {
    /// Writes `value` (any JSON) at `path`.
    pub fn put(&self, path: JsValue, value: JsValue) -> Result<(), JsValue> {
        self.push(put_op(&path, &value)?)
    }

    /// Deletes the map key or list element at `path`.
    pub fn delete(&self, path: JsValue) -> Result<(), JsValue> {
        self.push(delete_op(&path)?)
    }

    /// Inserts `value` into the list at `path` before `index`.
    pub fn insert(&self, path: JsValue, index: JsValue, value: JsValue) -> Result<(), JsValue> {
        self.push(insert_op(&path, &index, &value)?)
    }

    /// Replaces `del` characters (UTF-16 code units) at `pos` of the text at `path` with `text`.
    #[wasm_bindgen(js_name = spliceText)]
    pub fn splice_text(
        &self,
        path: JsValue,
        pos: JsValue,
        del: JsValue,
        text: JsValue,
    ) -> Result<(), JsValue> {
        self.push(splice_op(&path, &pos, &del, &text)?)
    }

    /// Adds `by` (default 1) to the counter at `path`.
    pub fn increment(&self, path: JsValue, by: JsValue) -> Result<(), JsValue> {
        self.push(increment_op(&path, &by)?)
    }
}
