//! The `Counter` policy: concurrent increments add up, concurrently created counters too.
//!
//! Automerge merges concurrent increments of one counter by itself. What it does not merge is two
//! replicas *creating* the counter at the same key while offline (both `increment` an absent
//! key): that leaves two counters in conflict. Summing them is the right answer, except that an
//! increment made after seeing both applies to both (Automerge increments every value it
//! supersedes), so it would count twice. The read therefore subtracts, for every increment whose
//! predecessors include `k > 1` of the current counters, `k - 1` times its amount. That needs the
//! operations of the changes made since the counters were created; it runs only when a counter
//! is in conflict, which is rare, and only over changes after the conflicting ones.

use std::collections::HashSet;

use automerge::legacy::OpType as LegacyOp;
use automerge::transaction::Transactable;
use automerge::{ActorId, ChangeHash, ObjId, ScalarValue, Value};

use super::error::PolicyError;
use super::view::{View, describe};
use crate::path::{self, DocPath};

/// The merged value of the counter candidates `values` at `path`.
pub(crate) fn counter_value(
    view: &View<'_>,
    path: &DocPath,
    values: &[(Value<'_>, ObjId)],
) -> Result<i64, PolicyError> {
    let mut sum: i64 = 0;
    let mut ids: HashSet<(u64, ActorId)> = HashSet::new();
    for (v, id) in values {
        match v {
            Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Counter(c) => sum = sum.wrapping_add(i64::from(c)),
                _ => return Err(mismatch(path, v)),
            },
            Value::Object(_) => return Err(mismatch(path, v)),
        }
        if let ObjId::Id(ctr, actor, _) = id {
            ids.insert((*ctr, actor.clone()));
        }
    }
    if values.len() < 2 {
        return Ok(sum);
    }
    Ok(sum.wrapping_sub(double_counted(view, values, &ids)))
}

/// The sum of `amount * (k - 1)` over increments that hit `k > 1` of the candidates `ids`.
fn double_counted(
    view: &View<'_>,
    values: &[(Value<'_>, ObjId)],
    ids: &HashSet<(u64, ActorId)>,
) -> i64 {
    let created: Vec<ChangeHash> = values
        .iter()
        .filter_map(|(_, id)| view.doc.hash_for_opid(id))
        .collect();
    // At some heads, changes after those heads do not count.
    let excluded: HashSet<ChangeHash> = match view.heads {
        Some(h) => view
            .doc
            .get_changes_meta(h)
            .into_iter()
            .map(|m| m.hash)
            .collect(),
        None => HashSet::new(),
    };
    let mut extra: i64 = 0;
    for change in view.doc.get_changes(&created) {
        if excluded.contains(&change.hash()) {
            continue;
        }
        for op in change.decode().operations {
            let LegacyOp::Increment(by) = op.action else {
                continue;
            };
            let hits = op
                .pred
                .iter()
                .filter(|p| ids.contains(&(p.0, p.1.clone())))
                .count();
            if hits > 1 {
                let k = i64::try_from(hits - 1).unwrap_or(i64::MAX);
                extra = extra.wrapping_add(by.wrapping_mul(k));
            }
        }
    }
    extra
}

fn mismatch(path: &DocPath, found: &Value<'_>) -> PolicyError {
    PolicyError::TypeMismatch {
        path: path.to_string(),
        policy: "counter",
        expected: "an Automerge counter",
        found: describe(found),
    }
}

/// Adds `by` to the counter at `path`, creating it (holding `by`) when absent. The parents must
/// exist. Anything but a counter there is a [`PolicyError::TypeMismatch`].
pub(crate) fn increment<T: Transactable>(
    tx: &mut T,
    path: &DocPath,
    by: i64,
) -> Result<(), PolicyError> {
    path::increment(tx, path, by).map_err(|e| match e {
        path::PathError::WrongType { found, .. } => PolicyError::TypeMismatch {
            path: path.to_string(),
            policy: "counter",
            expected: "an Automerge counter",
            found,
        },
        other => other.into(),
    })
}
