//! Policy-aware reads: [`Schema::resolved`], and the candidates and conflicts at a path.
//!
//! A resolved read is a pure function of the document's change graph at some heads and of the
//! schema: it never depends on the order changes arrived in, the local clock or the replica, so
//! every replica with the same heads returns the same value.
//!
//! Reading a container resolves everything inside it, each path by its own policy: reading the
//! root gives the whole document with sets as sorted arrays, counters summed and every register
//! resolved.

use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::{Automerge, ChangeHash, ObjId, ObjType, Prop, ROOT, Value};
use serde_json::Value as Json;

use super::IntoPath;
use super::candidate::{Candidate, candidates_of};
use super::counter::counter_value;
use super::error::PolicyError;
use super::schema::{Policy, Resolver, Schema};
use super::sets;
use super::stamp::op_stamp;
use super::view::{Slot, View, describe, scalar_json};
use crate::path::DocPath;

impl Schema {
    /// The value at `path` as every replica with these heads sees it, merged by the policies.
    ///
    /// An absent value reads as `null`, except an absent set (`[]`) and counter (`0`).
    /// `KeepConflicts` and `Causal` return Automerge's deterministic pick; list the others with
    /// [`conflicts`](super::conflicts).
    pub fn resolved(&self, doc: &Automerge, path: impl IntoPath) -> Result<Json, PolicyError> {
        self.resolve_path(View::now(doc), &path.into_path()?)
    }

    /// [`Schema::resolved`] as of `heads`.
    pub fn resolved_at(
        &self,
        doc: &Automerge,
        path: impl IntoPath,
        heads: &[ChangeHash],
    ) -> Result<Json, PolicyError> {
        self.resolve_path(View::at(doc, heads), &path.into_path()?)
    }

    fn resolve_path(&self, view: View<'_>, path: &DocPath) -> Result<Json, PolicyError> {
        match view.slot(path)? {
            Slot::Root => self.resolve_value(view, path, &Value::Object(ObjType::Map), &ROOT),
            Slot::Missing => Ok(absent(self.policy_for(path))),
            Slot::At { parent, prop } => self.resolve_slot(view, path, &parent, prop),
        }
    }

    fn resolve_slot(
        &self,
        view: View<'_>,
        path: &DocPath,
        parent: &ObjId,
        prop: Prop,
    ) -> Result<Json, PolicyError> {
        let values = view.get_all(parent, prop)?;
        let policy = self.policy_for(path);
        let Some(pick) = values.iter().max_by(|a, b| a.1.cmp(&b.1)) else {
            return Ok(absent(policy));
        };
        match policy {
            Policy::Causal | Policy::KeepConflicts => {
                self.resolve_value(view, path, &pick.0, &pick.1)
            }
            Policy::Text => {
                for (v, _) in &values {
                    if !matches!(v, Value::Object(ObjType::Text)) {
                        return Err(PolicyError::TypeMismatch {
                            path: path.to_string(),
                            policy: policy.name(),
                            expected: "a text object",
                            found: describe(v),
                        });
                    }
                }
                Ok(Json::String(view.text(&pick.1)?))
            }
            Policy::Lww => {
                let mut best = pick;
                let mut best_key = time_key(view.doc, &pick.1);
                for v in &values {
                    let key = time_key(view.doc, &v.1);
                    if key > best_key {
                        best = v;
                        best_key = key;
                    }
                }
                self.resolve_value(view, path, &best.0, &best.1)
            }
            Policy::Counter => Ok(Json::from(counter_value(&view, path, &values)?)),
            Policy::AddWinsSet | Policy::RemoveWinsSet => {
                let members = sets::members(&view, path, policy, &values)?;
                Ok(Json::Array(members.into_iter().map(Json::String).collect()))
            }
            Policy::Custom(resolver) => {
                if values.len() == 1 {
                    return self.resolve_value(view, path, &pick.0, &pick.1);
                }
                let candidates = candidates_of(&view, &values)?;
                call_resolver(resolver.as_ref(), path, &candidates)
            }
        }
    }

    /// A single value, with its children resolved by their own policies.
    fn resolve_value(
        &self,
        view: View<'_>,
        path: &DocPath,
        value: &Value<'_>,
        id: &ObjId,
    ) -> Result<Json, PolicyError> {
        match value {
            Value::Object(otype @ (ObjType::Map | ObjType::Table | ObjType::List)) => {
                let is_list = *otype == ObjType::List;
                let mut map = serde_json::Map::new();
                let mut items = Vec::new();
                for (segment, prop) in view.children(id, *otype) {
                    let child = child_path(path, &segment);
                    let v = self.resolve_slot(view, &child, id, prop)?;
                    if is_list {
                        items.push(v);
                    } else {
                        map.insert(segment, v);
                    }
                }
                Ok(if is_list {
                    Json::Array(items)
                } else {
                    Json::Object(map)
                })
            }
            Value::Object(ObjType::Text) => Ok(Json::String(view.text(id)?)),
            Value::Scalar(s) => Ok(scalar_json(s)),
        }
    }
}

/// `path` extended by one segment.
pub(crate) fn child_path(path: &DocPath, segment: &str) -> DocPath {
    DocPath::from_segments(path.segments().iter().map(String::as_str).chain([segment]))
}

/// What an absent value reads as under `policy`.
fn absent(policy: &Policy) -> Json {
    match policy {
        Policy::AddWinsSet | Policy::RemoveWinsSet => Json::Array(Vec::new()),
        Policy::Counter => Json::from(0),
        _ => Json::Null,
    }
}

/// The last-writer-wins order of one value: its change's HLC, then the change hash, then the op.
fn time_key(
    doc: &Automerge,
    id: &ObjId,
) -> (Option<super::HlcTimestamp>, Option<ChangeHash>, ObjId) {
    match op_stamp(doc, id) {
        Some(s) => (Some(s.hlc), Some(s.hash), id.clone()),
        None => (None, None, id.clone()),
    }
}

/// Runs a custom resolver, turning an error or a panic into a [`PolicyError`].
fn call_resolver(
    resolver: &dyn Resolver,
    path: &DocPath,
    candidates: &[Candidate],
) -> Result<Json, PolicyError> {
    let name = || {
        catch_unwind(AssertUnwindSafe(|| resolver.name().to_owned()))
            .unwrap_or_else(|_| "<unnamed>".to_owned())
    };
    match catch_unwind(AssertUnwindSafe(|| resolver.resolve(path, candidates))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(reason)) => Err(PolicyError::ResolverFailed {
            path: path.to_string(),
            resolver: name(),
            reason,
        }),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(a non-string panic payload)".to_owned());
            Err(PolicyError::ResolverPanicked {
                path: path.to_string(),
                resolver: name(),
                message,
            })
        }
    }
}

/// Every value at `path` (one when there is no conflict, none when absent), sorted by HLC time.
pub fn candidates(doc: &Automerge, path: impl IntoPath) -> Result<Vec<Candidate>, PolicyError> {
    let view = View::now(doc);
    let values = view.values_at(&path.into_path()?)?;
    candidates_of(&view, &values)
}

/// [`candidates`] as of `heads`.
pub fn candidates_at(
    doc: &Automerge,
    path: impl IntoPath,
    heads: &[ChangeHash],
) -> Result<Vec<Candidate>, PolicyError> {
    let view = View::at(doc, heads);
    let values = view.values_at(&path.into_path()?)?;
    candidates_of(&view, &values)
}

/// The concurrent values at `path` when there are two or more (empty when there is no conflict),
/// sorted by HLC time, with who wrote each, when and in which change.
pub fn conflicts(doc: &Automerge, path: impl IntoPath) -> Result<Vec<Candidate>, PolicyError> {
    let all = candidates(doc, path)?;
    Ok(if all.len() > 1 { all } else { Vec::new() })
}
