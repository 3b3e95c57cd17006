//! History of one path: what each change left there, so a losing value can be found and restored.

use automerge::{ActorId, Automerge, ChangeHash, ObjId, Value};
use serde_json::Value as Json;

use super::IntoPath;
use super::error::PolicyError;
use super::hlc::HlcTimestamp;
use super::schema::{Policy, Schema};
use super::stamp::{ChangeStamp, app_message};
use super::view::View;
use crate::path::DocPath;

/// What one change did to a path.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// The change.
    pub change: ChangeHash,
    /// Its actor.
    pub actor: ActorId,
    /// Its HLC time.
    pub hlc: HlcTimestamp,
    /// False when the HLC time is the `time` fallback (an unstamped change).
    pub stamped: bool,
    /// The app's part of the change's message, if any.
    pub message: Option<String>,
    /// The value at the path right after the change, on the change's own branch (plain JSON, as
    /// stored): the value the change wrote, when it wrote one. `None` when the change deleted it.
    pub value: Option<Json>,
}

/// Every change that altered the value at `path`, in causal order (a change after everything it
/// depends on). Concurrent writes all appear, losers included: pass an entry's value to
/// [`Schema::restore`] to bring it back.
///
/// Cost: two lookups per change in the document (plus converting the value to JSON), so this is
/// an inspection tool, not something to call on every render of a large document.
pub fn history(doc: &Automerge, path: impl IntoPath) -> Result<Vec<HistoryEntry>, PolicyError> {
    let path = path.into_path()?;
    let mut out = Vec::new();
    for meta in doc.get_changes_meta(&[]) {
        let after = [meta.hash];
        let (wrote, value_after) = value_after(View::at(doc, &after), &path, &meta.hash)?;
        let value_before = winner_json(View::at(doc, &meta.deps), &path)?;
        if !wrote && value_after == value_before {
            continue;
        }
        let stamp = ChangeStamp::from_meta(&meta);
        out.push(HistoryEntry {
            change: meta.hash,
            actor: meta.actor.clone().into_owned(),
            hlc: stamp.hlc,
            stamped: stamp.stamped,
            message: meta
                .message
                .as_deref()
                .and_then(app_message)
                .map(str::to_owned),
            value: value_after,
        });
    }
    Ok(out)
}

/// The value `change` wrote at `path` (`(true, value)`), else Automerge's pick there.
fn value_after(
    view: View<'_>,
    path: &DocPath,
    change: &ChangeHash,
) -> Result<(bool, Option<Json>), PolicyError> {
    let values = view.values_at(path)?;
    let own = values
        .iter()
        .find(|(_, id)| view.doc.hash_for_opid(id).as_ref() == Some(change));
    match own {
        Some((v, id)) => Ok((true, Some(view.json(v, id)?))),
        None => Ok((false, pick_json(view, &values)?)),
    }
}

fn winner_json(view: View<'_>, path: &DocPath) -> Result<Option<Json>, PolicyError> {
    let values = view.values_at(path)?;
    pick_json(view, &values)
}

fn pick_json(view: View<'_>, values: &[(Value<'_>, ObjId)]) -> Result<Option<Json>, PolicyError> {
    match values.iter().max_by(|a, b| a.1.cmp(&b.1)) {
        Some((v, id)) => Ok(Some(view.json(v, id)?)),
        None => Ok(None),
    }
}

impl Schema {
    /// Writes `entry`'s value back at `path`, superseding whatever is there now (see
    /// [`Schema::resolve`]); an entry that deleted the value deletes it again. A set's stored map
    /// is turned back into its member list, so restoring works for every policy.
    pub fn restore<T: automerge::transaction::Transactable>(
        &self,
        tx: &mut T,
        path: impl IntoPath,
        entry: &HistoryEntry,
    ) -> Result<(), PolicyError> {
        let path = path.into_path()?;
        let value = match (self.policy_for(&path), &entry.value) {
            (Policy::AddWinsSet | Policy::RemoveWinsSet, Some(Json::Object(map))) => Json::Array(
                map.iter()
                    .filter(|(_, v)| v.as_bool() == Some(true))
                    .map(|(k, _)| Json::String(k.clone()))
                    .collect(),
            ),
            (_, Some(v)) => v.clone(),
            (_, None) => Json::Null,
        };
        self.resolve(tx, &path, &value)
    }
}
