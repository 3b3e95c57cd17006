//! The `Text` policy's rich-text side: marks (bold, links, comments) over ranges of a text object.
//! Character edits go through [`path::splice_text`](crate::path::splice_text) or
//! [`Schema::put`](super::Schema::put) (which diffs); both merge character by character.
//! Concurrent marks of one name over overlapping ranges are settled by Automerge (Peritext rules),
//! the same on every replica.

use automerge::marks::{ExpandMark, Mark};
use automerge::transaction::Transactable;
use automerge::{Automerge, ObjId, ObjType, ReadDoc, Value};
use serde_json::Value as Json;

use super::IntoPath;
use super::error::PolicyError;
use super::view::{View, describe, scalar_json};
use crate::path::DocPath;

/// A mark over `start..end` (character positions) of a text.
#[derive(Debug, Clone, PartialEq)]
pub struct TextMark {
    /// First character covered.
    pub start: usize,
    /// One past the last character covered.
    pub end: usize,
    /// The mark's name (`bold`, `link`, ...).
    pub name: String,
    /// Its value (`true`, a URL, ...).
    pub value: Json,
}

fn text_obj<R: ReadDoc + ?Sized>(doc: &R, path: &DocPath) -> Result<ObjId, PolicyError> {
    let values = View::now(doc).values_at(path)?;
    match values.into_iter().max_by(|a, b| a.1.cmp(&b.1)) {
        Some((Value::Object(ObjType::Text), id)) => Ok(id),
        Some((v, _)) => Err(PolicyError::TypeMismatch {
            path: path.to_string(),
            policy: "text",
            expected: "a text object",
            found: describe(&v),
        }),
        None => Err(crate::path::PathError::NotFound {
            at: path.to_string(),
        }
        .into()),
    }
}

/// Marks `start..end` of the text at `path` with `name = value` (a JSON scalar; `expand` says
/// whether text typed at the edges joins the mark).
pub fn mark<T: Transactable>(
    tx: &mut T,
    path: impl IntoPath,
    start: usize,
    end: usize,
    name: &str,
    value: &Json,
    expand: ExpandMark,
) -> Result<(), PolicyError> {
    let path = path.into_path()?;
    let obj = text_obj(&*tx, &path)?;
    let scalar = match value {
        Json::Bool(b) => automerge::ScalarValue::Boolean(*b),
        Json::String(s) => automerge::ScalarValue::Str(s.as_str().into()),
        Json::Number(n) => match n.as_i64() {
            Some(i) => automerge::ScalarValue::Int(i),
            None => automerge::ScalarValue::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::Null => automerge::ScalarValue::Null,
        Json::Array(_) | Json::Object(_) => {
            return Err(PolicyError::TypeMismatch {
                path: path.to_string(),
                policy: "text",
                expected: "a scalar mark value",
                found: "a JSON array or object".to_owned(),
            });
        }
    };
    tx.mark(&obj, Mark::new(name.to_owned(), scalar, start, end), expand)?;
    Ok(())
}

/// The marks on the text at `path`.
pub fn marks(doc: &Automerge, path: impl IntoPath) -> Result<Vec<TextMark>, PolicyError> {
    let path = path.into_path()?;
    let obj = text_obj(doc, &path)?;
    Ok(doc
        .marks(&obj)?
        .into_iter()
        .map(|m| TextMark {
            start: m.start,
            end: m.end,
            name: m.name().to_owned(),
            value: scalar_json(m.value()),
        })
        .collect())
}
