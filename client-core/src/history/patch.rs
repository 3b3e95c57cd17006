//! JSON patches: what changed between two versions, as edits of the document's JSON (the
//! shapes are in [`JsonPatch`]'s docs), and applying them.

use automerge::TextEncoding;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::error::HistoryError;
use crate::path::DocPath;

/// One edit of a document's JSON.
///
/// The shape follows Automerge's own JavaScript patches, with the path written as a JSON
/// Pointer string (`/todos/3/title`; `~1` escapes `/` and `~0` escapes `~` in a key):
///
/// | `action` | fields | meaning |
/// |---|---|---|
/// | `put` | `path`, `value` | set the map key or replace the list element at `path` |
/// | `insert` | `path`, `values` | insert `values` into the list before the index ending `path` |
/// | `del` | `path`, `length` | delete the map key, or `length` list elements or text units from the index ending `path` |
/// | `splice` | `path`, `value` | insert the string `value` into the text at the index ending `path` |
/// | `inc` | `path`, `value` | add `value` to the counter at `path` |
///
/// Apply them in order: each index counts the list or text as the previous patches left it.
/// Text indexes count the document's text units: Unicode code points natively, UTF-16 code units
/// in the browser package (as JavaScript strings do).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
#[non_exhaustive]
pub enum JsonPatch {
    /// Set a map key or replace a list element.
    Put {
        /// Where.
        path: DocPath,
        /// The new value.
        value: Json,
    },
    /// Insert into a list; the path ends with the index to insert before.
    Insert {
        /// The list's path and the index.
        path: DocPath,
        /// The values, in order.
        values: Vec<Json>,
    },
    /// Delete a map key, or list elements or text units from the index ending the path.
    Del {
        /// What to delete.
        path: DocPath,
        /// How many list elements or text units (1 for a map key).
        #[serde(default = "one")]
        length: usize,
    },
    /// Insert text; the path is the text's path followed by the index.
    Splice {
        /// The text's path and the index.
        path: DocPath,
        /// The inserted text.
        value: String,
    },
    /// Add to a counter.
    Inc {
        /// The counter.
        path: DocPath,
        /// The amount (may be negative).
        value: i64,
    },
}

fn one() -> usize {
    1
}

impl JsonPatch {
    /// The patch's path.
    pub fn path(&self) -> &DocPath {
        match self {
            Self::Put { path, .. }
            | Self::Insert { path, .. }
            | Self::Del { path, .. }
            | Self::Splice { path, .. }
            | Self::Inc { path, .. } => path,
        }
    }
}

/// Applies `patches` in order to `value`, counting text indexes in `encoding` units (the
/// document's [`automerge::ReadDoc::text_encoding`]). Stops at the first patch that does not
/// apply; `value` then holds the patches before it.
pub fn apply_patches(
    value: &mut Json,
    patches: &[JsonPatch],
    encoding: TextEncoding,
) -> Result<(), HistoryError> {
    for (index, patch) in patches.iter().enumerate() {
        apply_one(value, patch, encoding).map_err(|reason| HistoryError::Patch {
            index,
            path: patch.path().to_string(),
            reason,
        })?;
    }
    Ok(())
}

fn apply_one(root: &mut Json, patch: &JsonPatch, encoding: TextEncoding) -> Result<(), String> {
    let segments = patch.path().segments();
    let Some((last, parents)) = segments.split_last() else {
        return Err("the path is the document root".into());
    };
    let parent = walk(root, parents)?;
    match (patch, parent) {
        (JsonPatch::Put { value, .. }, Json::Object(map)) => {
            map.insert(last.clone(), value.clone());
        }
        (JsonPatch::Put { value, .. }, Json::Array(list)) => {
            let len = list.len();
            let slot = list
                .get_mut(index(last, len)?)
                .ok_or_else(|| format!("index {last} is past the end of the list ({len})"))?;
            *slot = value.clone();
        }
        (JsonPatch::Insert { values, .. }, Json::Array(list)) => {
            let i = index(last, list.len())?;
            list.splice(i..i, values.iter().cloned());
        }
        (JsonPatch::Del { .. }, Json::Object(map)) => {
            map.remove(last)
                .ok_or_else(|| format!("no key `{last}` to delete"))?;
        }
        (JsonPatch::Del { length, .. }, Json::Array(list)) => {
            let i = index(last, list.len())?;
            let end = i
                .checked_add(*length)
                .filter(|e| *e <= list.len())
                .ok_or_else(|| {
                    format!(
                        "{length} elements from {i} exceed the list ({})",
                        list.len()
                    )
                })?;
            list.drain(i..end);
        }
        (JsonPatch::Del { length, .. }, Json::String(text)) => {
            let start = byte_offset(text, index(last, usize::MAX)?, encoding)?;
            let end = start + byte_offset(&text[start..], *length, encoding)?;
            text.replace_range(start..end, "");
        }
        (JsonPatch::Splice { value, .. }, Json::String(text)) => {
            let at = byte_offset(text, index(last, usize::MAX)?, encoding)?;
            text.insert_str(at, value);
        }
        (JsonPatch::Inc { value: by, .. }, container) => {
            let slot = match container {
                Json::Object(map) => map.get_mut(last),
                Json::Array(list) => list.get_mut(index(last, usize::MAX)?),
                _ => None,
            }
            .ok_or("no counter there")?;
            *slot = match (slot.as_i64(), slot.as_f64()) {
                (Some(n), _) => Json::from(n.saturating_add(*by)),
                #[allow(clippy::cast_precision_loss)]
                (None, Some(f)) => Json::from(f + *by as f64),
                _ => return Err(format!("{slot} is not a number")),
            };
        }
        (_, other) => return Err(format!("the parent is {}", kind(other))),
    }
    Ok(())
}

/// The container at `segments` below `root`.
fn walk<'a>(root: &'a mut Json, segments: &[String]) -> Result<&'a mut Json, String> {
    let mut at = root;
    for seg in segments {
        at = match at {
            Json::Object(map) => map.get_mut(seg),
            Json::Array(list) => {
                let len = list.len();
                list.get_mut(index(seg, len)?)
            }
            _ => None,
        }
        .ok_or_else(|| format!("nothing at `{seg}`"))?;
    }
    Ok(at)
}

fn index(seg: &str, max: usize) -> Result<usize, String> {
    seg.parse::<usize>()
        .ok()
        .filter(|i| *i <= max)
        .ok_or_else(|| format!("`{seg}` is not an index up to {max}"))
}

/// The byte offset of the `units`-th text unit of `s`.
fn byte_offset(s: &str, units: usize, encoding: TextEncoding) -> Result<usize, String> {
    let mut seen = 0;
    for (at, c) in s.char_indices() {
        if seen >= units {
            return if seen == units {
                Ok(at)
            } else {
                Err(format!("index {units} splits a character"))
            };
        }
        seen += match encoding {
            TextEncoding::Utf8CodeUnit => c.len_utf8(),
            TextEncoding::Utf16CodeUnit => c.len_utf16(),
            _ => 1,
        };
    }
    if seen == units {
        Ok(s.len())
    } else {
        Err(format!(
            "index {units} is past the end of the text ({seen})"
        ))
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a map",
    }
}
