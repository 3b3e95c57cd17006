//! `restore(heads)`: one new change on top of the current document that makes it equal to an
//! earlier version.
//!
//! It is not a rewind: the change is an ordinary change (it syncs, it is in the history, it can
//! itself be restored away), and edits made concurrently on other replicas still merge with it.
//! It touches only what differs between the two versions (Automerge's own diff), so a concurrent
//! edit of a part the restore leaves alone survives the merge; where both touched the same value,
//! Automerge's usual rule picks one, as for any two concurrent writes.
//!
//! The plan is computed from a read-only document and applied in a transaction, so it works with
//! any API that hands out transactions (`DocHandle::change`, `Core::change_stamped`):
//!
//! ```
//! use automerge::{Automerge, ROOT, ReadDoc, transaction::Transactable};
//! use concord::history::RestorePlan;
//!
//! let mut doc = Automerge::new();
//! let mut tx = doc.transaction();
//! tx.put(ROOT, "title", "first")?;
//! tx.commit();
//! let v1 = doc.get_heads();
//! let mut tx = doc.transaction();
//! tx.put(ROOT, "title", "second")?;
//! tx.put(ROOT, "extra", 1)?;
//! tx.commit();
//!
//! let plan = RestorePlan::new(&doc, &v1)?;
//! let mut tx = doc.transaction();
//! plan.apply(&mut tx)?;
//! tx.commit();
//! assert_eq!(doc.get(ROOT, "title")?.unwrap().0.as_str(), Some("first"));
//! assert!(doc.get(ROOT, "extra")?.is_none());
//! assert_eq!(doc.get_changes(&[]).len(), 3); // nothing was rewritten
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use automerge::marks::{ExpandMark, Mark};
use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ChangeHash, Prop, ScalarValue, hydrate};

use super::error::{HistoryError, check_heads};
use super::steps::{Action, Step, between};

/// The edits that make a document equal to the version at some heads: applied in one
/// transaction, they are one ordinary change on top (not a rewind), which merges with concurrent
/// edits like any other; a document whose contents already equal that version needs none.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    base: Vec<ChangeHash>,
    target: Vec<ChangeHash>,
    steps: Vec<Step>,
}

impl RestorePlan {
    /// Plans restoring `doc` (as it is now) to the version at `target`.
    ///
    /// Errors: [`HistoryError::UnknownHeads`] when `doc` lacks some head of `target`.
    pub fn new(doc: &Automerge, target: &[ChangeHash]) -> Result<Self, HistoryError> {
        check_heads(doc, target, "heads")?;
        let base = doc.get_heads();
        // Automerge's diff compares objects by identity: a value restored earlier (a new object
        // with the old contents) differs from the original. Equal contents need no change.
        let steps = if doc.hydrate(None) == doc.hydrate(Some(target)) {
            Vec::new()
        } else {
            between(doc, &base, target)?
        };
        Ok(Self {
            base,
            target: target.to_vec(),
            steps,
        })
    }

    /// The heads the plan was made from.
    pub fn base(&self) -> &[ChangeHash] {
        &self.base
    }

    /// The heads of the version it restores.
    pub fn target(&self) -> &[ChangeHash] {
        &self.target
    }

    /// True when the document already equals the target version (applying writes nothing).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Applies the plan in `tx`, a transaction on the document it was made from.
    ///
    /// Errors: [`HistoryError::Changed`] when the document has changed since the plan was made
    /// (`tx` is then untouched: plan again); [`HistoryError::Automerge`] if Automerge refuses an
    /// operation (roll `tx` back).
    pub fn apply(&self, tx: &mut Transaction<'_>) -> Result<(), HistoryError> {
        if tx.get_heads() != self.base {
            return Err(HistoryError::Changed);
        }
        for step in &self.steps {
            apply_step(tx, step)?;
        }
        Ok(())
    }
}

fn apply_step<T: Transactable>(tx: &mut T, step: &Step) -> Result<(), HistoryError> {
    let obj = &step.obj;
    match &step.action {
        Action::Put { prop, value } => match value {
            hydrate::Value::Scalar(s) => tx.put(obj, prop.clone(), s.clone())?,
            object => {
                tx.batch_create_object(obj, prop.clone(), object, false)?;
            }
        },
        Action::Insert { index, values } => {
            let mut at = *index;
            for value in values {
                match value {
                    hydrate::Value::Scalar(ScalarValue::Str(s)) if step.text => {
                        let before = tx.length(obj);
                        tx.splice_text(obj, at, 0, s)?;
                        at += tx.length(obj).saturating_sub(before);
                        continue;
                    }
                    hydrate::Value::Scalar(s) => tx.insert(obj, at, s.clone())?,
                    object => {
                        tx.batch_create_object(obj, Prop::Seq(at), object, true)?;
                    }
                }
                at += 1;
            }
        }
        Action::Delete {
            prop: Prop::Map(key),
            ..
        } => tx.delete(obj, key.as_str())?,
        Action::Delete {
            prop: Prop::Seq(index),
            len,
        } => {
            let len = isize::try_from(*len).unwrap_or(isize::MAX);
            if step.text {
                tx.splice_text(obj, *index, len, "")?;
            } else {
                tx.splice(obj, *index, len, std::iter::empty::<ScalarValue>())?;
            }
        }
        Action::Splice { index, text, marks } => {
            let before = tx.length(obj);
            tx.splice_text(obj, *index, 0, text)?;
            let end = index + tx.length(obj).saturating_sub(before);
            for (name, value) in marks {
                let mark = Mark::new(name.clone(), value.clone(), *index, end);
                tx.mark(obj, mark, ExpandMark::None)?;
            }
        }
        Action::Increment { prop, by } => tx.increment(obj, prop.clone(), *by)?,
        Action::Mark { marks } => {
            for mark in marks {
                if mark.value().is_null() {
                    tx.unmark(obj, mark.name(), mark.start, mark.end, ExpandMark::None)?;
                } else {
                    tx.mark(obj, mark.clone(), ExpandMark::None)?;
                }
            }
        }
    }
    Ok(())
}

/// Restores `doc` to the version at `target` as one change committed with `options` (e.g.
/// [`crate::policy::stamp::commit_options`]). Returns the new change's hash, `None` when the
/// document already equals that version.
pub fn restore(
    doc: &mut Automerge,
    target: &[ChangeHash],
    options: automerge::transaction::CommitOptions,
) -> Result<Option<ChangeHash>, HistoryError> {
    let plan = RestorePlan::new(doc, target)?;
    if plan.is_empty() {
        return Ok(None);
    }
    let mut tx = doc.transaction();
    match plan.apply(&mut tx) {
        Ok(()) => Ok(tx.commit_with(options).0),
        Err(e) => {
            tx.rollback();
            Err(e)
        }
    }
}
