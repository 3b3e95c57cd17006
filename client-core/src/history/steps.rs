//! Automerge's patches between two versions, flattened into steps that both [`super::diff`]
//! (as JSON patches) and [`super::restore`] (as operations) consume.
//!
//! Automerge reports an object that appears (a map put at a key, a list inserted) as one patch
//! for the object followed by patches filling it in. A step carries the whole object instead, as
//! it is at the `to` heads, and the patches inside it are dropped: one step per visible edit.

use std::collections::HashSet;

use automerge::hydrate;
use automerge::marks::Mark;
use automerge::{
    Automerge, ChangeHash, ObjId, ObjType, PatchAction, Prop, ReadDoc, ScalarValue, Value,
};

use super::error::{HistoryError, check_heads};

/// One visible edit of the object `obj`, found at `path` (map keys and list indexes from the
/// root).
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) obj: ObjId,
    pub(crate) path: Vec<Prop>,
    /// `obj` is text (sequence indexes count text units).
    pub(crate) text: bool,
    pub(crate) action: Action,
}

#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Set a map key or replace a list element.
    Put { prop: Prop, value: hydrate::Value },
    /// Insert values before `index`.
    Insert {
        index: usize,
        values: Vec<hydrate::Value>,
    },
    /// Delete a map key (`len` 1) or `len` sequence elements from an index.
    Delete { prop: Prop, len: usize },
    /// Insert `text` at `index` of a text object, carrying `marks`.
    Splice {
        index: usize,
        text: String,
        marks: Vec<(String, ScalarValue)>,
    },
    /// Add `by` to a counter.
    Increment { prop: Prop, by: i64 },
    /// Set (or, with a null value, remove) marks on ranges of a text object.
    Mark { marks: Vec<Mark> },
}

/// The steps that turn the version at `from` into the version at `to`.
pub(crate) fn between(
    doc: &Automerge,
    from: &[ChangeHash],
    to: &[ChangeHash],
) -> Result<Vec<Step>, HistoryError> {
    check_heads(doc, from, "from")?;
    check_heads(doc, to, "to")?;
    let mut whole: HashSet<ObjId> = HashSet::new();
    let mut out = Vec::new();
    for patch in doc.diff(from, to) {
        if whole.contains(&patch.obj) || patch.path.iter().any(|(o, _)| whole.contains(o)) {
            continue; // inside an object a previous step carries whole
        }
        let path: Vec<Prop> = patch.path.iter().map(|(_, p)| p.clone()).collect();
        let text = matches!(doc.object_type(&patch.obj), Ok(ObjType::Text));
        let mut value = |v: Value<'static>, id: &ObjId| -> Result<hydrate::Value, HistoryError> {
            match v {
                Value::Object(_) => {
                    whole.insert(id.clone());
                    Ok(normalize(ReadDoc::hydrate(doc, id, Some(to))?))
                }
                Value::Scalar(s) => Ok(hydrate::Value::Scalar(scalar(s.into_owned()))),
            }
        };
        let actions = match patch.action {
            PatchAction::PutMap {
                key,
                value: (v, id),
                ..
            } => vec![Action::Put {
                prop: Prop::Map(key),
                value: value(v, &id)?,
            }],
            PatchAction::PutSeq {
                index,
                value: (v, id),
                ..
            } if text => {
                // A text character replaced in place: delete it, insert the new one.
                let new = value(v, &id)?;
                vec![
                    Action::Delete {
                        prop: Prop::Seq(index),
                        len: 1,
                    },
                    Action::Insert {
                        index,
                        values: vec![new],
                    },
                ]
            }
            PatchAction::PutSeq {
                index,
                value: (v, id),
                ..
            } => vec![Action::Put {
                prop: Prop::Seq(index),
                value: value(v, &id)?,
            }],
            PatchAction::Insert { index, values } => vec![Action::Insert {
                index,
                values: values
                    .iter()
                    .map(|(v, id, _)| value(v.clone(), id))
                    .collect::<Result<_, _>>()?,
            }],
            PatchAction::SpliceText {
                index,
                value,
                marks,
            } => vec![Action::Splice {
                index,
                text: value.make_string(),
                marks: marks
                    .map(|m| {
                        m.iter()
                            .filter(|(_, v)| !v.is_null())
                            .map(|(n, v)| (n.to_owned(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
            }],
            PatchAction::Increment { prop, value } => vec![Action::Increment { prop, by: value }],
            PatchAction::DeleteMap { key } => vec![Action::Delete {
                prop: Prop::Map(key),
                len: 1,
            }],
            PatchAction::DeleteSeq { index, length } => vec![Action::Delete {
                prop: Prop::Seq(index),
                len: length,
            }],
            PatchAction::Mark { marks } => vec![Action::Mark { marks }],
            // Only a flag on a value reported elsewhere.
            PatchAction::Conflict { .. } => Vec::new(),
        };
        out.extend(actions.into_iter().map(|action| Step {
            obj: patch.obj.clone(),
            path: path.clone(),
            text,
            action,
        }));
    }
    Ok(out)
}

/// A counter as a plain counter of its current value (Automerge reports counters with the value
/// they started from and the increments since; writing one back must write the sum).
fn scalar(s: ScalarValue) -> ScalarValue {
    match s {
        ScalarValue::Counter(c) => ScalarValue::counter(i64::from(&c)),
        other => other,
    }
}

/// [`scalar`] applied throughout a hydrated value.
fn normalize(v: hydrate::Value) -> hydrate::Value {
    match v {
        hydrate::Value::Scalar(s) => hydrate::Value::Scalar(scalar(s)),
        hydrate::Value::Map(m) => {
            let entries: std::collections::HashMap<String, hydrate::Value> = m
                .iter()
                .map(|(k, v)| (k.clone(), normalize(v.value.clone())))
                .collect();
            hydrate::Value::Map(entries.into())
        }
        hydrate::Value::List(l) => {
            let items: Vec<hydrate::Value> = l.iter().map(|v| normalize(v.value.clone())).collect();
            items.into()
        }
        text @ hydrate::Value::Text(_) => text,
    }
}
