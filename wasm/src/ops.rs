//! Path-based writes, recorded from JavaScript and applied in one Automerge transaction.

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc, ScalarValue, Value};
use concord::path::{self, DocPath, PathError};
use serde_json::Value as Json;
use wasm_bindgen::JsValue;

use crate::error::{Error, Result};
use crate::js;

/// One write.
#[derive(Debug, Clone)]
pub enum Op {
    /// Write a JSON value at a path (map key, existing list index, or list end).
    Put(DocPath, Json),
    /// Delete a map key or list element.
    Delete(DocPath),
    /// Insert into the list at the path, before `index` (0..=length).
    Insert(DocPath, usize, Json),
    /// Splice the text at the path.
    Splice(DocPath, usize, usize, String),
    /// Add to the counter at the path (creating it when absent).
    Increment(DocPath, i64),
}

/// A path from JavaScript: a string (`todos/0/title`) or an array of keys and indexes.
pub fn path_arg(value: &JsValue) -> Result<DocPath> {
    if value.is_undefined() || value.is_null() {
        return Ok(DocPath::root());
    }
    if let Some(s) = value.as_string() {
        return s
            .parse()
            .map_err(|e: PathError| Error::arg("path", e.to_string()));
    }
    if js_sys::Array::is_array(value) {
        let mut segments = Vec::new();
        for seg in js_sys::Array::from(value).iter() {
            if let Some(s) = seg.as_string() {
                segments.push(s);
            } else {
                segments.push(js::index_arg("path", &seg)?.to_string());
            }
        }
        return Ok(DocPath::from_segments(segments));
    }
    Err(Error::arg(
        "path",
        format!(
            "expected a string or an array, got {}",
            js::type_name(value)
        ),
    ))
}

/// The object (map, list or text) at `path`.
pub fn obj_at<R: ReadDoc>(doc: &R, path: &DocPath) -> Result<automerge::ObjId> {
    let mut obj = automerge::ROOT;
    for (i, seg) in path.segments().iter().enumerate() {
        let prop: automerge::Prop = match doc.object_type(&obj) {
            Ok(ObjType::List) | Ok(ObjType::Text) => seg
                .parse::<usize>()
                .map_err(|_| {
                    let here = DocPath::from_segments(path.segments()[..i].iter().cloned());
                    Error::Path(format!("`{seg}` is not a list index (`{here}` is a list)"))
                })?
                .into(),
            _ => seg.as_str().into(),
        };
        match doc.get(&obj, prop).map_err(PathError::from)? {
            Some((Value::Object(_), id)) => obj = id,
            _ => return Err(Error::Path(format!("no object at `{path}`"))),
        }
    }
    Ok(obj)
}

/// The list at `path` and its length.
fn list_at<R: ReadDoc>(doc: &R, path: &DocPath) -> Result<(automerge::ObjId, usize)> {
    let obj = obj_at(doc, path)?;
    match doc.object_type(&obj) {
        Ok(ObjType::List) => {
            let len = doc.length(&obj);
            Ok((obj, len))
        }
        _ => Err(Error::Path(format!("`{path}` is not a list"))),
    }
}

/// Applies `op` inside a transaction.
pub fn apply<T: Transactable>(tx: &mut T, op: &Op) -> Result<()> {
    match op {
        Op::Put(p, v) => path::put(tx, p, v)?,
        Op::Delete(p) => path::delete(tx, p)?,
        Op::Insert(p, index, v) => {
            let (list, len) = list_at(tx, p)?;
            if *index > len {
                return Err(Error::Path(format!(
                    "index {index} is out of range at `{p}` (length {len})"
                )));
            }
            tx.insert(&list, *index, ScalarValue::Null)
                .map_err(PathError::from)?;
            let mut segments = p.segments().to_vec();
            segments.push(index.to_string());
            path::put(tx, &DocPath::from_segments(segments), v)?;
        }
        Op::Splice(p, pos, del, text) => path::splice_text(tx, p, *pos, *del, text)?,
        Op::Increment(p, by) => path::increment(tx, p, *by)?,
    }
    Ok(())
}
