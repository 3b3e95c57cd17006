//! `Value`: a typed snapshot of what is stored at a path, for `DocHandle::get`.
//!
//! Unlike the JSON read (`get_json`), it keeps the Automerge types apart: collaborative text
//! (`Text`) from plain strings (`Str`), counters, timestamps, bytes, signed and unsigned integers.

use std::collections::HashMap;

use automerge::{ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value as AmValue};
use concord::path::DocPath;

use crate::error::{ConcordError, Result};

/// A value read from a document.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum Value {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool { value: bool },
    /// A signed integer.
    Int { value: i64 },
    /// An unsigned integer (only written by other clients; JSON writes store `Int` when it fits).
    Uint { value: u64 },
    /// A 64-bit float.
    Float { value: f64 },
    /// A plain (not collaborative) string scalar, as some other clients write.
    Str { value: String },
    /// Collaborative text (what JSON strings become when written through this API): edit it with
    /// `splice_text`.
    Text { value: String },
    /// Raw bytes.
    Bytes { value: Vec<u8> },
    /// A counter (concurrent increments add up): change it with `increment`.
    Counter { value: i64 },
    /// A timestamp, milliseconds since the Unix epoch.
    Timestamp { millis: i64 },
    /// A map (a JSON object). Named `Object` because `Map` would shadow the Kotlin collection
    /// type inside the generated sealed class.
    Object { entries: HashMap<String, Value> },
    /// A list (a JSON array). Named `Array` for the same reason.
    Array { items: Vec<Value> },
    /// A scalar of a type this version does not know.
    Unknown { type_code: u8, bytes: Vec<u8> },
}

/// Converts the Automerge value `value` (object `id` when it is an object) and its contents.
fn to_value<R: ReadDoc>(doc: &R, value: &AmValue<'_>, id: &ObjId) -> Result<Value> {
    Ok(match value {
        AmValue::Object(ObjType::Map | ObjType::Table) => {
            let mut entries = HashMap::new();
            for key in doc.keys(id) {
                if let Some((v, child)) = doc.get(id, key.as_str())? {
                    entries.insert(key, to_value(doc, &v, &child)?);
                }
            }
            Value::Object { entries }
        }
        AmValue::Object(ObjType::List) => {
            let len = doc.length(id);
            let mut items = Vec::with_capacity(len);
            for i in 0..len {
                if let Some((v, child)) = doc.get(id, i)? {
                    items.push(to_value(doc, &v, &child)?);
                }
            }
            Value::Array { items }
        }
        AmValue::Object(ObjType::Text) => Value::Text {
            value: doc.text(id)?,
        },
        AmValue::Scalar(s) => scalar(s.as_ref()),
    })
}

fn scalar(s: &ScalarValue) -> Value {
    match s {
        ScalarValue::Null => Value::Null,
        ScalarValue::Boolean(b) => Value::Bool { value: *b },
        ScalarValue::Int(i) => Value::Int { value: *i },
        ScalarValue::Uint(u) => Value::Uint { value: *u },
        ScalarValue::F64(f) => Value::Float { value: *f },
        ScalarValue::Str(s) => Value::Str {
            value: s.to_string(),
        },
        ScalarValue::Bytes(b) => Value::Bytes { value: b.clone() },
        ScalarValue::Counter(c) => Value::Counter {
            value: i64::from(c),
        },
        ScalarValue::Timestamp(t) => Value::Timestamp { millis: *t },
        ScalarValue::Unknown { type_code, bytes } => Value::Unknown {
            type_code: *type_code,
            bytes: bytes.clone(),
        },
    }
}

/// Reads the typed value at `path`: `None` when a key along the path is missing or an index is
/// out of range (like `concord::path::get`); `InvalidPath` when the path goes below a scalar or
/// text, or uses a non-numeric segment on a list.
pub(crate) fn get<R: ReadDoc>(doc: &R, path: &DocPath) -> Result<Option<Value>> {
    match resolve(doc, path)? {
        Some((v, id)) => to_value(doc, &v, &id).map(Some),
        None => Ok(None),
    }
}

/// The Automerge value at `path` and its object id (the root for the empty path), with the
/// error rules of [`get`].
pub(crate) fn resolve<'a, R: ReadDoc>(
    doc: &'a R,
    path: &DocPath,
) -> Result<Option<(AmValue<'a>, ObjId)>> {
    let segments = path.segments();
    let Some((last, parents)) = segments.split_last() else {
        return Ok(Some((AmValue::Object(ObjType::Map), ROOT)));
    };
    let mut obj = ROOT;
    let mut walked = DocPath::root();
    for seg in parents {
        match child(doc, &obj, seg, &walked)? {
            Some((AmValue::Object(_), id)) => obj = id,
            Some((v, _)) => {
                return Err(ConcordError::InvalidPath(format!(
                    "`{}` is {}, which has no keys or indexes",
                    extend(&walked, seg),
                    describe(&v)
                )));
            }
            None => return Ok(None),
        }
        walked = extend(&walked, seg);
    }
    child(doc, &obj, last, &walked)
}

/// `path` with one more segment.
pub(crate) fn extend(path: &DocPath, seg: &str) -> DocPath {
    DocPath::from_segments(path.segments().iter().map(String::as_str).chain([seg]))
}

/// The child `seg` of container `obj` (at `at`), `None` when absent.
fn child<'a, R: ReadDoc>(
    doc: &'a R,
    obj: &ObjId,
    seg: &str,
    at: &DocPath,
) -> Result<Option<(AmValue<'a>, ObjId)>> {
    let found = match doc.object_type(obj)? {
        ObjType::Map | ObjType::Table => doc.get(obj, seg)?,
        ObjType::List => {
            let index = seg
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| seg.parse::<usize>().ok())
                .flatten()
                .ok_or_else(|| {
                    ConcordError::InvalidPath(format!(
                        "`{seg}` is not a list index (`{at}` is a list)"
                    ))
                })?;
            doc.get(obj, index)?
        }
        ObjType::Text => {
            return Err(ConcordError::InvalidPath(format!(
                "`{at}` is text, which has no keys or indexes"
            )));
        }
    };
    Ok(found)
}

/// "a map", "text", ... for messages.
pub(crate) fn describe(v: &AmValue<'_>) -> &'static str {
    match v {
        AmValue::Object(ObjType::Text) => "text",
        AmValue::Object(ObjType::List) => "a list",
        AmValue::Object(_) => "a map",
        AmValue::Scalar(_) => "a scalar",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::AutoCommit;
    use automerge::transaction::Transactable;
    use serde_json::json;

    fn doc() -> Result<AutoCommit> {
        let mut d = AutoCommit::new();
        concord::path::put(
            &mut d,
            &DocPath::root(),
            &json!({"todos": [{"title": "milk", "done": false}], "n": 1.5}),
        )?;
        d.put(ROOT, "count", ScalarValue::counter(3))?;
        d.put(ROOT, "raw", ScalarValue::Bytes(vec![1, 2]))?;
        Ok(d)
    }

    fn p(s: &str) -> Result<DocPath> {
        Ok(s.parse()?)
    }

    #[test]
    fn reads_typed_values() -> Result<()> {
        let d = doc()?;
        assert_eq!(
            get(&d, &p("todos/0/title")?)?,
            Some(Value::Text {
                value: "milk".into()
            })
        );
        assert_eq!(
            get(&d, &p("todos/0/done")?)?,
            Some(Value::Bool { value: false })
        );
        assert_eq!(get(&d, &p("count")?)?, Some(Value::Counter { value: 3 }));
        assert_eq!(
            get(&d, &p("raw")?)?,
            Some(Value::Bytes { value: vec![1, 2] })
        );
        assert_eq!(get(&d, &p("n")?)?, Some(Value::Float { value: 1.5 }));
        assert_eq!(get(&d, &p("missing")?)?, None);
        assert_eq!(get(&d, &p("todos/7")?)?, None);
        assert_eq!(get(&d, &p("todos/7/title")?)?, None);
        assert!(
            matches!(get(&d, &DocPath::root())?, Some(Value::Object { entries }) if entries.len() == 4)
        );
        Ok(())
    }

    #[test]
    fn bad_paths_are_errors() -> Result<()> {
        let d = doc()?;
        for bad in ["todos/x", "todos/0/title/3", "count/a"] {
            assert!(
                matches!(get(&d, &p(bad)?), Err(ConcordError::InvalidPath(_))),
                "{bad}"
            );
        }
        Ok(())
    }
}
