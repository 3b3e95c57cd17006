//! The set policies, stored as plain JSON maps so other Automerge clients read them as they are.
//!
//! - **Add-wins** (`AddWinsSet`): `{ "milk": true, "eggs": true }`. Adding puts `true`, removing
//!   deletes the key. Automerge's map semantics make this an observed-remove set: a delete removes
//!   only the values it has seen, so an element re-added concurrently with its removal survives.
//!   A stock client that lists the map's keys sees exactly the members.
//! - **Remove-wins** (`RemoveWinsSet`): `{ "milk": true, "eggs": false }`. Adding puts `true`,
//!   removing puts `false` (a tombstone that stays). Concurrent writes to one element are kept by
//!   Automerge as a conflict; the element is a member only when every concurrent value is `true`,
//!   so a concurrent add and remove drops it. Stock clients must treat `false` as "not a member".
//!   Tombstones accumulate; `resolve` with the member list rewrites the set without them.
//!
//! If replicas create the set's map concurrently (both add to an absent set while offline), the
//! maps conflict; reads merge the elements of every concurrent map, and writes update every map
//! that holds the element, so nothing is lost.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, Prop, ScalarValue, Value};
use serde_json::Value as Json;

use super::error::PolicyError;
use super::schema::Policy;
use super::view::{View, describe};
use super::write::put_fresh;
use crate::path::{self, DocPath};

/// The members of the set whose concurrent containers are `values`, sorted.
pub(crate) fn members(
    view: &View<'_>,
    path: &DocPath,
    policy: &Policy,
    values: &[(Value<'_>, ObjId)],
) -> Result<Vec<String>, PolicyError> {
    // element -> every concurrent boolean written for it, across every concurrent container
    let mut seen: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for (v, id) in values {
        if !matches!(v, Value::Object(ObjType::Map | ObjType::Table)) {
            return Err(mismatch(path, policy, describe(v)));
        }
        for key in view.keys(id) {
            for (ev, _) in view.get_all(id, Prop::Map(key.clone()))? {
                let flag = match &ev {
                    Value::Scalar(s) => match s.as_ref() {
                        ScalarValue::Boolean(b) => *b,
                        _ => return Err(element_mismatch(path, policy, &key, &ev)),
                    },
                    Value::Object(_) => return Err(element_mismatch(path, policy, &key, &ev)),
                };
                seen.entry(key.clone()).or_default().push(flag);
            }
        }
    }
    let remove_wins = matches!(policy, Policy::RemoveWinsSet);
    Ok(seen
        .into_iter()
        .filter(|(_, flags)| {
            if remove_wins {
                flags.iter().all(|f| *f)
            } else {
                flags.iter().any(|f| *f)
            }
        })
        .map(|(k, _)| k)
        .collect())
}

fn mismatch(path: &DocPath, policy: &Policy, found: String) -> PolicyError {
    PolicyError::TypeMismatch {
        path: path.to_string(),
        policy: policy.name(),
        expected: "a map of element -> boolean",
        found,
    }
}

fn element_mismatch(path: &DocPath, policy: &Policy, key: &str, found: &Value<'_>) -> PolicyError {
    mismatch(
        path,
        policy,
        format!("{} for element {key:?}", describe(found)),
    )
}

/// The concurrent containers of the set at `path` (created empty when absent).
fn containers<T: Transactable>(
    tx: &mut T,
    path: &DocPath,
    policy: &Policy,
) -> Result<Vec<ObjId>, PolicyError> {
    // (description when not a map, id): owned, so the transaction is free to write below.
    let found: Vec<(Option<String>, ObjId)> = View::now(&*tx)
        .values_at(path)?
        .into_iter()
        .map(|(v, id)| match v {
            Value::Object(ObjType::Map | ObjType::Table) => (None, id),
            other => (Some(describe(&other)), id),
        })
        .collect();
    if found.is_empty() {
        path::put(tx, path, &Json::Object(serde_json::Map::new()))?;
        let created: Vec<ObjId> = View::now(&*tx)
            .values_at(path)?
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        return Ok(created);
    }
    let mut ids = Vec::with_capacity(found.len());
    for (bad, id) in found {
        if let Some(found) = bad {
            return Err(mismatch(path, policy, found));
        }
        ids.push(id);
    }
    // Automerge's pick (the greatest op id) last: new elements go there.
    ids.sort();
    Ok(ids)
}

fn check_element(path: &DocPath, element: &str) -> Result<(), PolicyError> {
    if element.is_empty() {
        return Err(PolicyError::InvalidElement {
            path: path.to_string(),
            element: element.to_owned(),
            reason: "the empty string is not a valid map key",
        });
    }
    Ok(())
}

/// Adds `element` to the set at `path` (creating the set's map when absent).
pub(crate) fn add<T: Transactable>(
    tx: &mut T,
    path: &DocPath,
    policy: &Policy,
    element: &str,
) -> Result<(), PolicyError> {
    check_element(path, element)?;
    let ids = containers(tx, path, policy)?;
    let Some((pick, others)) = ids.split_last() else {
        return Ok(());
    };
    put_fresh(
        tx,
        pick,
        Prop::Map(element.to_owned()),
        ScalarValue::Boolean(true),
    )?;
    // Remove-wins: a `false` left in another concurrent map would still veto membership.
    if matches!(policy, Policy::RemoveWinsSet) {
        for id in others {
            if tx.get(id, element)?.is_some() {
                tx.put(id, element, true)?;
            }
        }
    }
    Ok(())
}

/// Removes `element` from the set at `path` (a no-op when it is not there).
pub(crate) fn remove<T: Transactable>(
    tx: &mut T,
    path: &DocPath,
    policy: &Policy,
    element: &str,
) -> Result<(), PolicyError> {
    check_element(path, element)?;
    let ids = containers(tx, path, policy)?;
    let remove_wins = matches!(policy, Policy::RemoveWinsSet);
    for (i, id) in ids.iter().enumerate() {
        let present = tx.get(id, element)?.is_some();
        if remove_wins {
            // The tombstone must exist even for an element we never saw: a concurrent add of it
            // elsewhere is then dropped. It goes in the pick, and in every map holding it.
            if present || i + 1 == ids.len() {
                put_fresh(
                    tx,
                    id,
                    Prop::Map(element.to_owned()),
                    ScalarValue::Boolean(false),
                )?;
            }
        } else if present {
            tx.delete(id, element)?;
        }
    }
    Ok(())
}

/// Replaces the set at `path` with exactly `elements` (one fresh map, no tombstones).
pub(crate) fn replace<T: Transactable>(
    tx: &mut T,
    path: &DocPath,
    elements: &[String],
) -> Result<(), PolicyError> {
    for e in elements {
        check_element(path, e)?;
    }
    let map: serde_json::Map<String, Json> = elements
        .iter()
        .map(|e| (e.clone(), Json::Bool(true)))
        .collect();
    path::put(tx, path, &Json::Object(map))?;
    Ok(())
}
