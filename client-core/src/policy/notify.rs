//! "A conflict appeared": detecting new conflicts on `KeepConflicts` paths, for the prompt-the-user
//! strategy. Call [`new_conflicts`] with the heads before and after a change (local or remote);
//! a driver can do it on every `DocChanged` event.

use std::collections::{BTreeSet, HashSet};

use automerge::{Automerge, ChangeHash, ObjId, ObjType, Prop, ROOT, Value};

use super::candidate::{Candidate, candidates_of};
use super::error::PolicyError;
use super::resolve::child_path;
use super::schema::{Policy, Schema, Segment};
use super::view::View;
use crate::path::DocPath;

/// A `KeepConflicts` path holding concurrent values.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConflictEvent {
    /// The concrete path.
    pub path: DocPath,
    /// Every concurrent value, sorted by HLC time.
    pub candidates: Vec<Candidate>,
}

/// Conflicts on `schema`'s `KeepConflicts` paths present at `after` that were not present (with
/// the same candidates) at `before`: a new conflict, or a new candidate joining one. Pass
/// `before = &[]` to get every conflict.
pub fn new_conflicts(
    doc: &Automerge,
    before: &[ChangeHash],
    after: &[ChangeHash],
    schema: &Schema,
) -> Result<Vec<ConflictEvent>, PolicyError> {
    let now = View::at(doc, after);
    let then = View::at(doc, before);
    let mut out = Vec::new();
    for (path, parent, prop) in keep_conflicts_slots(now, schema) {
        let values = now.get_all(&parent, prop)?;
        if values.len() < 2 {
            continue;
        }
        let ids: HashSet<String> = values.iter().map(|(_, id)| id.to_string()).collect();
        let old: HashSet<String> = match then.values_at(&path) {
            Ok(vals) => vals.iter().map(|(_, id)| id.to_string()).collect(),
            Err(_) => HashSet::new(),
        };
        if ids == old {
            continue;
        }
        out.push(ConflictEvent {
            candidates: candidates_of(&now, &values)?,
            path,
        });
    }
    Ok(out)
}

/// Every `KeepConflicts` path currently in conflict (the app's "needs attention" list).
pub fn conflicted_paths(
    doc: &Automerge,
    schema: &Schema,
) -> Result<Vec<ConflictEvent>, PolicyError> {
    let heads = doc.get_heads();
    new_conflicts(doc, &[], &heads, schema)
}

/// The concrete slots (path, parent, prop) matching a `KeepConflicts` pattern whose most specific
/// policy is `KeepConflicts`, each once, in path order.
fn keep_conflicts_slots(view: View<'_>, schema: &Schema) -> Vec<(DocPath, ObjId, Prop)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (pattern, policy) in schema.rules() {
        if !matches!(policy, Policy::KeepConflicts) {
            continue;
        }
        for (path, parent, prop) in expand(view, pattern.segments()) {
            if matches!(schema.policy_for(&path), Policy::KeepConflicts)
                && seen.insert(path.to_string())
            {
                out.push((path, parent, prop));
            }
        }
    }
    out.sort_by(|a, b| a.0.segments().cmp(b.0.segments()));
    out
}

/// The slots a pattern matches in the document (following Automerge's pick at each level).
fn expand(view: View<'_>, segments: &[Segment]) -> Vec<(DocPath, ObjId, Prop)> {
    let mut frontier = vec![(DocPath::root(), ROOT, ObjType::Map)];
    let mut out = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let mut next = Vec::new();
        for (path, obj, otype) in frontier {
            let props: Vec<(String, Prop)> = match segment {
                Segment::Any => view.children(&obj, otype),
                Segment::Literal(l) => literal_prop(view, &obj, otype, l).into_iter().collect(),
            };
            for (name, prop) in props {
                let child = child_path(&path, &name);
                if last {
                    out.push((child, obj.clone(), prop));
                } else if let Ok(Some((Value::Object(t), id))) = view.get(&obj, prop) {
                    if t != ObjType::Text {
                        next.push((child, id, t));
                    }
                }
            }
        }
        frontier = next;
    }
    out
}

fn literal_prop(
    view: View<'_>,
    obj: &ObjId,
    otype: ObjType,
    literal: &str,
) -> Option<(String, Prop)> {
    match otype {
        ObjType::Map | ObjType::Table => Some((literal.to_owned(), Prop::Map(literal.to_owned()))),
        ObjType::List => {
            let index: usize = literal.parse().ok()?;
            (literal.bytes().all(|b| b.is_ascii_digit()) && index < view.length(obj))
                .then(|| (literal.to_owned(), Prop::Seq(index)))
        }
        ObjType::Text => None,
    }
}
