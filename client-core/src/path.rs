//! Paths into a document (`todos/0/title`) and JSON reads and writes at them.
//!
//! A [`DocPath`] is a list of segments written like a JSON Pointer: `todos/0/title` or
//! `/todos/0/title` (the leading `/` is optional), `~1` stands for `/` and `~0` for `~` inside a
//! segment, and the empty string (or `/`) is the document root. A segment names a key in a map and
//! an index in a list (`-` also means "one past the end", for appending). Text objects are leaves:
//! edit them with [`splice_text`].
//!
//! Writes take any [`Transactable`] (a [`Transaction`](automerge::transaction::Transaction) from
//! `DocHandle::change`, or an `AutoCommit`). JSON is stored the way automerge-repo 2.x does:
//! objects become maps, arrays lists, strings collaborative [`ObjType::Text`], integers stay
//! integers, other numbers are `f64`.
//!
//! ```
//! use automerge::AutoCommit;
//! use concord::path::{self, DocPath};
//! use serde_json::json;
//!
//! let mut doc = AutoCommit::new();
//! path::put(&mut doc, &"todos".parse()?, &json!([{"title": "milk"}]))?;
//! let title: DocPath = "/todos/0/title".parse()?;
//! path::splice_text(&mut doc, &title, 4, 0, " and eggs")?;
//! path::increment(&mut doc, &"todos/0/done_count".parse()?, 1)?;
//! assert_eq!(
//!     path::get(&doc, &DocPath::root())?,
//!     Some(json!({"todos": [{"title": "milk and eggs", "done_count": 1}]}))
//! );
//! # Ok::<(), concord::path::PathError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use automerge::transaction::Transactable;
use automerge::{AutomergeError, ObjId, ObjType, Prop, ROOT, ReadDoc, ScalarValue, Value};
use serde_json::Value as Json;

/// Why a path could not be parsed, resolved or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path string is not a valid path.
    #[error("malformed path `{path}`: {reason}")]
    Malformed {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A map has no such key.
    #[error("no value at `{at}`")]
    NotFound {
        /// The path that does not exist.
        at: String,
    },
    /// A list index is past the end.
    #[error("index {index} is out of range at `{at}` (length {len})")]
    OutOfRange {
        /// The path whose last segment is out of range.
        at: String,
        /// The index.
        index: usize,
        /// The length of the list (or text).
        len: usize,
    },
    /// A segment applied to a list is not a number.
    #[error("`{segment}` is not a list index (`{at}` is a list)")]
    NotAnIndex {
        /// The list's path.
        at: String,
        /// The offending segment.
        segment: String,
    },
    /// A path continues below something that has no children.
    #[error("`{at}` is {found}, which has no keys or indexes")]
    NotAContainer {
        /// The path of the leaf.
        at: String,
        /// What is there.
        found: String,
    },
    /// The value at the path has the wrong type for the operation.
    #[error("`{at}` is {found}, expected {expected}")]
    WrongType {
        /// The path.
        at: String,
        /// What the operation needs.
        expected: &'static str,
        /// What is there.
        found: String,
    },
    /// The operation is not possible on the document root.
    #[error("the document root {0}")]
    Root(&'static str),
    /// Automerge rejected the operation.
    #[error("automerge: {0}")]
    Automerge(#[from] AutomergeError),
}

/// A parsed path into a document; see the [module docs](self) for the syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DocPath {
    segments: Vec<String>,
}

impl DocPath {
    /// The document root (the empty path).
    pub fn root() -> Self {
        Self::default()
    }

    /// A path made of (unescaped) segments.
    pub fn from_segments<S: Into<String>>(segments: impl IntoIterator<Item = S>) -> Self {
        Self {
            segments: segments.into_iter().map(Into::into).collect(),
        }
    }

    /// The (unescaped) segments.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// True for the document root.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The first `n` segments as a path (for error messages).
    fn prefix(&self, n: usize) -> String {
        Self::from_segments(self.segments.iter().take(n).cloned()).to_string()
    }
}

impl FromStr for DocPath {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| PathError::Malformed {
            path: s.to_owned(),
            reason,
        };
        let rest = s.strip_prefix('/').unwrap_or(s);
        if rest.is_empty() {
            return Ok(Self::root());
        }
        let mut segments = Vec::new();
        for raw in rest.split('/') {
            if raw.is_empty() {
                return Err(bad("empty segment (doubled or trailing `/`)"));
            }
            let mut seg = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    seg.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => seg.push('~'),
                    Some('1') => seg.push('/'),
                    _ => return Err(bad("`~` must be followed by 0 (for `~`) or 1 (for `/`)")),
                }
            }
            segments.push(seg);
        }
        Ok(Self { segments })
    }
}

impl fmt::Display for DocPath {
    /// Writes the path with a leading `/` and escaped segments; the root is `/`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for seg in &self.segments {
            write!(f, "/{}", seg.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

/// Serialized as its string form (`/todos/0/title`).
impl serde::Serialize for DocPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Deserialized from its string form, with the syntax of [`DocPath::from_str`].
impl<'de> serde::Deserialize<'de> for DocPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Describes a value for error messages ("a map", "an integer", ...).
pub(crate) fn describe(value: &Value<'_>) -> String {
    let s = match value {
        Value::Object(ObjType::Map | ObjType::Table) => "a map",
        Value::Object(ObjType::List) => "a list",
        Value::Object(ObjType::Text) => "text",
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Bytes(_) => "bytes",
            ScalarValue::Str(_) => "a string (not a text object)",
            ScalarValue::Int(_) | ScalarValue::Uint(_) => "an integer",
            ScalarValue::F64(_) => "a float",
            ScalarValue::Counter(_) => "a counter",
            ScalarValue::Timestamp(_) => "a timestamp",
            ScalarValue::Boolean(_) => "a boolean",
            ScalarValue::Unknown { .. } => "a value of an unknown type",
            ScalarValue::Null => "null",
        },
    };
    s.to_owned()
}

/// Where the last segment of a path points inside its parent container.
enum Slot {
    /// A key of a map (present or not).
    Key(String),
    /// An index of a list of length `len` (`index <= len` is not checked here).
    Index { index: usize, len: usize },
}

impl Slot {
    fn prop(&self) -> Prop {
        match self {
            Slot::Key(k) => Prop::Map(k.clone()),
            Slot::Index { index, .. } => Prop::Seq(*index),
        }
    }
}

/// Interprets segment `i` of `path` inside `parent` (of type `ptype`, at `path[..i]`).
fn slot<R: ReadDoc>(
    doc: &R,
    parent: &ObjId,
    ptype: ObjType,
    path: &DocPath,
    i: usize,
) -> Result<Slot, PathError> {
    let segment = &path.segments[i];
    match ptype {
        ObjType::Map | ObjType::Table => Ok(Slot::Key(segment.clone())),
        ObjType::List => {
            let len = doc.length(parent);
            let index = if segment == "-" {
                len
            } else {
                // Only plain decimal digits: no signs, spaces or `+1`.
                segment
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| segment.parse::<usize>().ok())
                    .flatten()
                    .ok_or_else(|| PathError::NotAnIndex {
                        at: path.prefix(i),
                        segment: segment.clone(),
                    })?
            };
            Ok(Slot::Index { index, len })
        }
        ObjType::Text => Err(PathError::NotAContainer {
            at: path.prefix(i),
            found: "text".to_owned(),
        }),
    }
}

/// Resolves the first `n` segments of `path` to a container object.
fn locate<R: ReadDoc>(doc: &R, path: &DocPath, n: usize) -> Result<(ObjId, ObjType), PathError> {
    let mut obj = ROOT;
    let mut otype = ObjType::Map;
    for i in 0..n {
        let slot = slot(doc, &obj, otype, path, i)?;
        match doc.get(&obj, slot.prop())? {
            Some((Value::Object(t), id)) => {
                obj = id;
                otype = t;
            }
            Some((v, _)) => {
                return Err(PathError::NotAContainer {
                    at: path.prefix(i + 1),
                    found: describe(&v),
                });
            }
            None => return Err(absent(path, i + 1, &slot)),
        }
    }
    Ok((obj, otype))
}

/// The error for a missing value at `path[..n]`.
fn absent(path: &DocPath, n: usize, slot: &Slot) -> PathError {
    match slot {
        Slot::Key(_) => PathError::NotFound { at: path.prefix(n) },
        Slot::Index { index, len } => PathError::OutOfRange {
            at: path.prefix(n),
            index: *index,
            len: *len,
        },
    }
}

/// Resolves all but the last segment of a non-root path: the parent and the last slot.
fn parent_slot<R: ReadDoc>(doc: &R, path: &DocPath) -> Result<(ObjId, Slot), PathError> {
    let last = path.segments.len().saturating_sub(1);
    let (parent, ptype) = locate(doc, path, last)?;
    let slot = slot(doc, &parent, ptype, path, last)?;
    Ok((parent, slot))
}

/// Converts an Automerge value (with its object id when it is an object) to JSON, the way
/// [`automerge::AutoSerde`] does: maps are objects, lists arrays, text strings, counters numbers.
pub fn value_to_json<R: ReadDoc>(
    doc: &R,
    value: &Value<'_>,
    id: &ObjId,
) -> Result<Json, PathError> {
    Ok(match value {
        Value::Object(ObjType::Map | ObjType::Table) => {
            let mut map = serde_json::Map::new();
            for key in doc.keys(id) {
                if let Some((v, child)) = doc.get(id, key.as_str())? {
                    map.insert(key, value_to_json(doc, &v, &child)?);
                }
            }
            Json::Object(map)
        }
        Value::Object(ObjType::List) => {
            let mut items = Vec::with_capacity(doc.length(id));
            for i in 0..doc.length(id) {
                if let Some((v, child)) = doc.get(id, i)? {
                    items.push(value_to_json(doc, &v, &child)?);
                }
            }
            Json::Array(items)
        }
        Value::Object(ObjType::Text) => Json::String(doc.text(id)?),
        Value::Scalar(s) => serde_json::to_value(s.as_ref()).unwrap_or(Json::Null),
    })
}

/// Reads the JSON value at `path`. `Ok(None)` when a key along the path is missing or an index
/// is out of range; an error when the path is malformed for the document (it goes below a scalar
/// or text, or uses a non-numeric segment on a list).
pub fn get<R: ReadDoc>(doc: &R, path: &DocPath) -> Result<Option<Json>, PathError> {
    if path.is_root() {
        return value_to_json(doc, &Value::Object(ObjType::Map), &ROOT).map(Some);
    }
    let (parent, slot) = match parent_slot(doc, path) {
        Ok(found) => found,
        Err(PathError::NotFound { .. } | PathError::OutOfRange { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    match doc.get(&parent, slot.prop())? {
        Some((v, id)) => value_to_json(doc, &v, &id).map(Some),
        None => Ok(None),
    }
}

/// The Automerge scalar for a JSON scalar (`None` for objects, arrays and strings, which are
/// stored as new objects).
pub(crate) fn json_scalar(value: &Json) -> Option<ScalarValue> {
    match value {
        Json::Null => Some(ScalarValue::Null),
        Json::Bool(b) => Some(ScalarValue::Boolean(*b)),
        Json::Number(n) => Some(match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ScalarValue::Int(i),
            (None, Some(u)) => ScalarValue::Uint(u),
            (None, None) => ScalarValue::F64(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Json::String(_) | Json::Array(_) | Json::Object(_) => None,
    }
}

/// Fills a new object `id` (of the type made for `value`) with the contents of `value`.
fn fill<T: Transactable>(tx: &mut T, id: &ObjId, value: &Json) -> Result<(), PathError> {
    match value {
        Json::Object(map) => {
            for (k, v) in map {
                put_value(tx, id, Prop::Map(k.clone()), v)?;
            }
        }
        Json::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                insert_value(tx, id, i, v)?;
            }
        }
        Json::String(s) => tx.splice_text(id, 0, 0, s)?,
        _ => {}
    }
    Ok(())
}

/// The object type that stores a non-scalar JSON value.
fn json_objtype(value: &Json) -> ObjType {
    match value {
        Json::Array(_) => ObjType::List,
        Json::String(_) => ObjType::Text,
        _ => ObjType::Map,
    }
}

/// Puts `value` at `prop` of `obj` (overwriting).
fn put_value<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    prop: Prop,
    value: &Json,
) -> Result<(), PathError> {
    match json_scalar(value) {
        Some(s) => tx.put(obj, prop, s)?,
        None => {
            let id = tx.put_object(obj, prop, json_objtype(value))?;
            fill(tx, &id, value)?;
        }
    }
    Ok(())
}

/// Inserts `value` into list `obj` at `index`.
fn insert_value<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    index: usize,
    value: &Json,
) -> Result<(), PathError> {
    match json_scalar(value) {
        Some(s) => tx.insert(obj, index, s)?,
        None => {
            let id = tx.insert_object(obj, index, json_objtype(value))?;
            fill(tx, &id, value)?;
        }
    }
    Ok(())
}

/// Writes `value` at `path`. The parents must exist; the last segment may be a new or existing
/// map key, an existing list index (overwritten) or the list's length or `-` (appended).
/// At the root, `value` must be an object and replaces the document's contents (keys it lacks
/// are deleted).
pub fn put<T: Transactable>(tx: &mut T, path: &DocPath, value: &Json) -> Result<(), PathError> {
    if path.is_root() {
        let Json::Object(map) = value else {
            return Err(PathError::Root("must be a JSON object"));
        };
        let stale: Vec<String> = tx.keys(ROOT).filter(|k| !map.contains_key(k)).collect();
        for k in stale {
            tx.delete(ROOT, k)?;
        }
        return fill(tx, &ROOT, value);
    }
    match parent_slot(&*tx, path)? {
        (parent, Slot::Key(k)) => put_value(tx, &parent, Prop::Map(k), value),
        (parent, Slot::Index { index, len }) if index < len => {
            put_value(tx, &parent, Prop::Seq(index), value)
        }
        (parent, Slot::Index { index, len }) if index == len => {
            insert_value(tx, &parent, index, value)
        }
        (_, slot) => Err(absent(path, path.segments.len(), &slot)),
    }
}

/// Deletes the value at `path` (a map key, or a list element: later elements shift down).
pub fn delete<T: Transactable>(tx: &mut T, path: &DocPath) -> Result<(), PathError> {
    if path.is_root() {
        return Err(PathError::Root("cannot be deleted"));
    }
    let (parent, slot) = parent_slot(&*tx, path)?;
    if tx.get(&parent, slot.prop())?.is_none() {
        return Err(absent(path, path.segments.len(), &slot));
    }
    tx.delete(&parent, slot.prop())?;
    Ok(())
}

/// The text object at `path` and its length, or a typed error.
fn text_at<R: ReadDoc>(doc: &R, path: &DocPath) -> Result<(ObjId, usize), PathError> {
    let wrong = |found: String| PathError::WrongType {
        at: path.to_string(),
        expected: "text",
        found,
    };
    if path.is_root() {
        return Err(wrong("the root map".to_owned()));
    }
    let (parent, slot) = parent_slot(doc, path)?;
    match doc.get(&parent, slot.prop())? {
        Some((Value::Object(ObjType::Text), id)) => {
            let len = doc.length(&id);
            Ok((id, len))
        }
        Some((v, _)) => Err(wrong(describe(&v))),
        None => Err(absent(path, path.segments.len(), &slot)),
    }
}

/// Replaces `del` characters at `pos` of the text at `path` with `insert`. Positions count
/// characters as the document's text encoding does (Unicode code points on native builds).
pub fn splice_text<T: Transactable>(
    tx: &mut T,
    path: &DocPath,
    pos: usize,
    del: usize,
    insert: &str,
) -> Result<(), PathError> {
    let (id, len) = text_at(&*tx, path)?;
    let out_of_range = |index| PathError::OutOfRange {
        at: path.to_string(),
        index,
        len,
    };
    if pos > len {
        return Err(out_of_range(pos));
    }
    let end = pos
        .checked_add(del)
        .filter(|e| *e <= len)
        .ok_or_else(|| out_of_range(pos.saturating_add(del)))?;
    let del = isize::try_from(end - pos).map_err(|_| out_of_range(end))?;
    tx.splice_text(&id, pos, del, insert)?;
    Ok(())
}

/// Adds `by` to the counter at `path`, creating a counter holding `by` when the key is absent (or
/// the index is the list's length). Anything other than a counter there is an error.
pub fn increment<T: Transactable>(tx: &mut T, path: &DocPath, by: i64) -> Result<(), PathError> {
    if path.is_root() {
        return Err(PathError::Root("is not a counter"));
    }
    let (parent, slot) = parent_slot(&*tx, path)?;
    let existing = tx.get(&parent, slot.prop())?.map(|(v, _)| v.into_owned());
    match (existing, &slot) {
        (Some(Value::Scalar(s)), _) if s.is_counter() => tx.increment(&parent, slot.prop(), by)?,
        (Some(v), _) => {
            return Err(PathError::WrongType {
                at: path.to_string(),
                expected: "a counter",
                found: describe(&v),
            });
        }
        (None, Slot::Key(k)) => tx.put(&parent, k.as_str(), ScalarValue::counter(by))?,
        (None, Slot::Index { index, len }) if index == len => {
            tx.insert(&parent, *index, ScalarValue::counter(by))?;
        }
        (None, _) => return Err(absent(path, path.segments.len(), &slot)),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
