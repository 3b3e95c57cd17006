//! Policy-aware writes. Each takes any [`Transactable`]: a transaction from
//! [`policy::change`](super::change) (stamped with HLC time), from `Core::change` /
//! `DocHandle::change`, or an `AutoCommit`.
//!
//! Writes check the policy registered for the path, so a set is not overwritten by a stray `put`
//! and a counter is not reset by mistake; [`Schema::resolve`] is the one write that replaces
//! whatever is there, for every policy.

use automerge::transaction::Transactable;
use automerge::{AutomergeError, ObjId, ObjType, Prop, ScalarValue, Value};
use serde_json::Value as Json;

use super::IntoPath;
use super::counter;
use super::error::PolicyError;
use super::schema::{Policy, Schema};
use super::sets;
use super::view::{Slot, View, describe};
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
            _ => put_register(tx, &path, value),
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
        let (path, policy) = self.set_path(path, "add")?;
        sets::add(tx, &path, policy, element)
    }

    /// Removes `element` from the set at `path`.
    pub fn remove<T: Transactable>(
        &self,
        tx: &mut T,
        path: impl IntoPath,
        element: &str,
    ) -> Result<(), PolicyError> {
        let (path, policy) = self.set_path(path, "remove")?;
        sets::remove(tx, &path, policy, element)
    }

    /// The path and its policy, which must be a set policy for `op`.
    fn set_path(
        &self,
        path: impl IntoPath,
        op: &'static str,
    ) -> Result<(DocPath, &Policy), PolicyError> {
        let path = path.into_path()?;
        let policy = self.policy_for(&path);
        if !policy.is_set() {
            return Err(wrong_policy(&path, policy, op, "a set policy"));
        }
        Ok((path, policy))
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
            return Err(wrong_policy(
                &path,
                policy,
                "increment",
                "the counter policy",
            ));
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
                match View::now(&*tx).slot(&path)? {
                    Slot::At { parent, prop } => {
                        put_fresh(tx, &parent, prop, ScalarValue::counter(n))?;
                        Ok(())
                    }
                    Slot::Root => Err(path::PathError::Root("cannot hold a counter").into()),
                    Slot::Missing => Err(path::PathError::NotFound {
                        at: path.to_string(),
                    }
                    .into()),
                }
            }
            Policy::Text if !value.is_string() => Err(mismatch("a string")),
            _ if value.is_null() => {
                if !View::now(&*tx).values_at(&path)?.is_empty() {
                    path::delete(tx, &path)?;
                }
                Ok(())
            }
            _ => put_register(tx, &path, value),
        }
    }
}

/// A register write that is always a new operation (so it carries this change's HLC time).
fn put_register<T: Transactable>(
    tx: &mut T,
    path: &DocPath,
    value: &Json,
) -> Result<(), PolicyError> {
    if let Some(scalar) = crate::path::json_scalar(value) {
        if let Slot::At { parent, prop } = View::now(&*tx).slot(path)? {
            put_fresh(tx, &parent, prop, scalar)?;
            return Ok(());
        }
    }
    Ok(path::put(tx, path, value)?)
}

/// Puts `value` at `prop` of `obj` as a new operation even when it equals the current value.
///
/// Automerge 0.12 elides a put of the value already there (or turns it into a delete of the other
/// conflicting values): no new operation, so no new HLC time, and a set's "re-add" would not
/// survive a concurrent remove. Writing a different placeholder first, in the same change, makes
/// the final put a fresh operation whose only predecessor is the placeholder.
pub(crate) fn put_fresh<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    prop: Prop,
    value: ScalarValue,
) -> Result<(), AutomergeError> {
    let same = matches!(
        tx.get(obj, prop.clone())?,
        Some((Value::Scalar(s), _)) if s.as_ref() == &value
    );
    if same {
        let placeholder = if value == ScalarValue::Null {
            ScalarValue::Boolean(false)
        } else {
            ScalarValue::Null
        };
        tx.put(obj, prop.clone(), placeholder)?;
    }
    tx.put(obj, prop, value)
}
