//! Policy-aware writes. Each takes any [`Transactable`]: a transaction from
//! [`policy::change`](super::change) (stamped with HLC time), from `Core::change` /
//! `DocHandle::change`, or an `AutoCommit`.
//!
//! Writes check the policy registered for the path, so a set is not overwritten by a stray `put`
//! and a counter is not reset by mistake; [`Schema::resolve`] is the one write that replaces
//! whatever is there, for every policy.

use automerge::transaction::Transactable;
use automerge::{ObjType, ScalarValue, Value};
use serde_json::Value as Json;

use super::IntoPath;
use super::counter;
use super::error::PolicyError;
use super::schema::{Policy, Schema};
use super::sets;
use super::view::{View, describe};
use crate::path::{self, DocPath};

fn wrong_policy(
    path: &DocPath,
    policy: &Policy,
    operation: &'static str,
    needs: &'static str,
) -> PolicyError {
    PolicyError::WrongPolicy {
        path: path.to_string(),
        operation,
        needs,
        policy: policy.name(),
    }
}

fn json_kind(value: &Json) -> String {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
    .to_owned()
}

impl Schema {
    /// Writes a value at `path` (a register write: `Lww`, `Causal`, `KeepConflicts`, `Custom`).
    /// The parents must exist. Under `Lww`, the value's time is the HLC stamp of the change this
    /// transaction commits as (see [`policy::change`](super::change)).
    ///
    /// Under `Text`, a string updates the existing text by a character diff (so concurrent edits
    /// still merge) or creates it. Sets and counters refuse: use [`Schema::add`],
    /// [`Schema::remove`], [`Schema::increment`] or [`Schema::resolve`].
    pub fn put<T: Transactable>(
        &self,
        tx: &mut T,
        path: impl IntoPath,
        value: &Json,
    ) -> Result<(), PolicyError> {
        let path = path.into_path()?;
        let policy = self.policy_for(&path);
        match policy {
            Policy::Counter | Policy::AddWinsSet | Policy::RemoveWinsSet => Err(wrong_policy(
                &path,
                policy,
                "put",
                "a register policy (lww, causal, keep-conflicts, custom, text)",
            )),
            Policy::Text => {
                let Json::String(s) = value else {
                    return Err(PolicyError::TypeMismatch {
                        path: path.to_string(),
                        policy: policy.name(),
                        expected: "a string",
                        found: json_kind(value),
                    });
                };
                let existing = View::now(&*tx)
                    .values_at(&path)?
                    .into_iter()
                    .max_by(|a, b| a.1.cmp(&b.1))
                    .map(|(v, id)| (matches!(v, Value::Object(ObjType::Text)), describe(&v), id));
                match existing {
                    Some((true, _, id)) => tx.update_text(&id, s)?,
                    Some((false, found, _)) => {
                        return Err(PolicyError::TypeMismatch {
                            path: path.to_string(),
                            policy: policy.name(),
                            expected: "a text object",
                            found,
                        });
                    }
                    None => path::put(tx, &path, value)?,
                }
                Ok(())
            }
            _ => Ok(path::put(tx, &path, value)?),
        }
    }

    /// Adds `element` to the set at `path` (`AddWinsSet` or `RemoveWinsSet`), creating the set
    /// when absent.
    pub fn add<T: Transactable>(
        &self,
        tx: &mut T,
        path: impl IntoPath,
        element: &str,
    ) -> Result<(), PolicyError> {
        let path = path.into_path()?;
        let policy = self.policy_for(&path);
        if !policy.is_set() {
            return Err(wrong_policy(&path, policy, "add", "a set policy"));
        }
        sets::add(tx, &path, policy, element)
    }

    /// Removes `element` from the set at `path`.
    pub fn remove<T: Transactable>(
        &self,
        tx: &mut T,
        path: impl IntoPath,
        element: &str,
    ) -> Result<(), PolicyError> {
        let path = path.into_path()?;
        let policy = self.policy_for(&path);
        if !policy.is_set() {
            return Err(wrong_policy(&path, policy, "remove", "a set policy"));
        }
        sets::remove(tx, &path, policy, element)
    }

    /// Adds `by` (negative to decrement) to the counter at `path`, creating it when absent.
    pub fn increment<T: Transactable>(
        &self,
        tx: &mut T,
        path: impl IntoPath,
        by: i64,
    ) -> Result<(), PolicyError> {
        let path = path.into_path()?;
        let policy = self.policy_for(&path);
        if !matches!(policy, Policy::Counter) {
            return Err(wrong_policy(&path, policy, "increment", "the counter policy"));
        }
        counter::increment(tx, &path, by)
    }

    /// Writes `value` at `path`, superseding every concurrent candidate there: after this change
    /// reaches a replica, the path holds `value` alone (unless someone writes concurrently with
    /// the resolution itself). How `value` is written depends on the policy:
    ///
    /// - sets: an array of strings, the exact members (a fresh map; tombstones are dropped);
    /// - `Counter`: an integer, the counter's new value (increments concurrent with the
    ///   resolution are lost: this is a reset);
    /// - `Text`: a string, a fresh text object;
    /// - every other policy: any JSON value; `null` deletes the value.
    pub fn resolve<T: Transactable>(
        &self,
        tx: &mut T,
        path: impl IntoPath,
        value: &Json,
    ) -> Result<(), PolicyError> {
        let path = path.into_path()?;
        let policy = self.policy_for(&path);
        let mismatch = |expected| PolicyError::TypeMismatch {
            path: path.to_string(),
            policy: policy.name(),
            expected,
            found: json_kind(value),
        };
        match policy {
            Policy::AddWinsSet | Policy::RemoveWinsSet => {
                let Json::Array(items) = value else {
                    return Err(mismatch("an array of strings"));
                };
                let elements = items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| mismatch("an array of strings"))?;
                sets::replace(tx, &path, &elements)
            }
            Policy::Counter => {
                let n = value.as_i64().ok_or_else(|| mismatch("an integer"))?;
                put_scalar(tx, &path, ScalarValue::counter(n))
            }
            Policy::Text if !value.is_string() => Err(mismatch("a string")),
            _ if value.is_null() => {
                if !View::now(&*tx).values_at(&path)?.is_empty() {
                    path::delete(tx, &path)?;
                }
                Ok(())
            }
            _ => Ok(path::put(tx, &path, value)?),
        }
    }
}

/// Puts a scalar (one `path::put` cannot express, such as a counter) at `path`.
fn put_scalar<T: Transactable>(
    tx: &mut T,
    path: &DocPath,
    value: ScalarValue,
) -> Result<(), PolicyError> {
    path::put(tx, path, &Json::Null)?;
    let parent = DocPath::from_segments(
        path.segments()
            .iter()
            .take(path.segments().len().saturating_sub(1))
            .cloned(),
    );
    let Some(last) = path.segments().last() else {
        return Err(path::PathError::Root("cannot hold a counter").into());
    };
    let view = View::now(&*tx);
    let target = match view.slot(path)? {
        super::view::Slot::At { parent, prop } => Some((parent, prop)),
        _ => None,
    };
    let Some((obj, prop)) = target else {
        return Err(path::PathError::NotFound {
            at: format!("{parent}/{last}"),
        }
        .into());
    };
    tx.put(&obj, prop, value)?;
    Ok(())
}
