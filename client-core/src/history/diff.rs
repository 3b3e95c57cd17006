//! `diff(from, to)`: the JSON patches that turn one version of a document into another.

use automerge::{Automerge, ChangeHash, Prop, hydrate};
use serde_json::Value as Json;

use super::error::HistoryError;
use super::patch::JsonPatch;
use super::steps::{Action, between};
use crate::path::DocPath;

/// The [`JsonPatch`]es that turn the document's JSON at `from` into its JSON at `to` (either may
/// be older; `&[]` is the empty document). Applied in order to the JSON of
/// `view_at(from)` with [`super::apply_patches`], they give the JSON of `view_at(to)`.
///
/// Errors: [`HistoryError::UnknownHeads`] when the document lacks some head of `from` or `to`.
pub fn diff(
    doc: &Automerge,
    from: &[ChangeHash],
    to: &[ChangeHash],
) -> Result<Vec<JsonPatch>, HistoryError> {
    let mut out = Vec::new();
    for step in between(doc, from, to)? {
        let at = |prop: &Prop| -> DocPath {
            let mut segments: Vec<String> = step.path.iter().map(segment).collect();
            segments.push(segment(prop));
            DocPath::from_segments(segments)
        };
        out.push(match step.action {
            Action::Put { prop, value } => JsonPatch::Put {
                path: at(&prop),
                value: json(&value),
            },
            Action::Insert { index, values } if step.text => JsonPatch::Splice {
                path: at(&Prop::Seq(index)),
                value: values.iter().map(text_of).collect(),
            },
            Action::Insert { index, values } => JsonPatch::Insert {
                path: at(&Prop::Seq(index)),
                values: values.iter().map(json).collect(),
            },
            Action::Delete { prop, len } => JsonPatch::Del {
                path: at(&prop),
                length: len,
            },
            Action::Splice { index, text, .. } => JsonPatch::Splice {
                path: at(&Prop::Seq(index)),
                value: text,
            },
            Action::Increment { prop, by } => JsonPatch::Inc {
                path: at(&prop),
                value: by,
            },
            // Marks are not part of the JSON.
            Action::Mark { .. } => continue,
        });
    }
    Ok(out)
}

fn segment(prop: &Prop) -> String {
    match prop {
        Prop::Map(key) => key.clone(),
        Prop::Seq(index) => index.to_string(),
    }
}

/// A hydrated value as JSON, the way [`crate::path::value_to_json`] reads documents: maps are
/// objects, lists arrays, text strings, counters numbers.
pub(crate) fn json(value: &hydrate::Value) -> Json {
    match value {
        hydrate::Value::Scalar(s) => serde_json::to_value(s).unwrap_or(Json::Null),
        hydrate::Value::Map(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), json(&v.value)))
                .collect(),
        ),
        hydrate::Value::List(list) => Json::Array(list.iter().map(|v| json(&v.value)).collect()),
        hydrate::Value::Text(text) => Json::String(text.to_string()),
    }
}

/// What an element inserted into text reads as (block markers read as nothing).
fn text_of(value: &hydrate::Value) -> String {
    match value {
        hydrate::Value::Scalar(automerge::ScalarValue::Str(s)) => s.to_string(),
        _ => String::new(),
    }
}
