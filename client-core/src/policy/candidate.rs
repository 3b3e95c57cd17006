//! Candidates: the concurrent values at one path, with who wrote them, when and in which change.

use std::cmp::Ordering;

use automerge::{ActorId, ChangeHash, ObjId, Value};
use serde_json::Value as Json;

use super::error::PolicyError;
use super::hlc::HlcTimestamp;
use super::stamp::op_stamp;
use super::view::View;

/// One of the concurrent values at a path.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Candidate {
    /// The value as plain JSON (a map or list as a whole, text as a string).
    pub value: Json,
    /// The actor that wrote it.
    pub actor: ActorId,
    /// When: the HLC stamp of the change that wrote it (see [`stamped`](Self::stamped)).
    pub hlc: HlcTimestamp,
    /// False when the change carried no `concord-hlc:` stamp and `hlc` comes from its `time`.
    pub stamped: bool,
    /// The change that wrote it.
    pub change: ChangeHash,
    /// The Automerge operation id of the value, `counter@actor`.
    pub op_id: String,
    /// The operation id as Automerge's object id (for reading a map or list candidate).
    pub(crate) exid: ObjId,
}

impl Candidate {
    /// Builds a candidate from a value and its op id as `get_all` returns them.
    pub(crate) fn from_value(
        view: &View<'_>,
        value: &Value<'_>,
        id: &ObjId,
    ) -> Result<Self, PolicyError> {
        let json = view.json(value, id)?;
        let actor = match id {
            ObjId::Id(_, actor, _) => actor.clone(),
            ObjId::Root => ActorId::from([0u8; 0].as_slice()),
        };
        // Every value of a committed document comes from some change; a value that does not
        // (an operation of an open transaction) gets the zero timestamp and a zero hash.
        let (hlc, stamped, change) = match op_stamp(view.doc, id) {
            Some(s) => (s.hlc, s.stamped, s.hash),
            None => (
                HlcTimestamp::new(0, 0, actor.clone()),
                false,
                ChangeHash([0; 32]),
            ),
        };
        Ok(Self {
            value: json,
            actor: hlc.actor.clone(),
            hlc,
            stamped,
            change,
            op_id: id.to_string(),
            exid: id.clone(),
        })
    }

    /// The candidate as JSON, for CLIs and bindings:
    /// `{"value", "actor", "hlc": {"ms", "counter"}, "stamped", "change", "op"}` (hex ids).
    pub fn to_json(&self) -> Json {
        serde_json::json!({
            "value": self.value,
            "actor": self.actor.to_hex_string(),
            "hlc": {"ms": self.hlc.ms, "counter": self.hlc.counter},
            "stamped": self.stamped,
            "change": self.change.to_string(),
            "op": self.op_id,
        })
    }

    /// The order every policy uses: HLC, then change hash (only equal when two stamps collide,
    /// e.g. two unstamped changes of one actor), then op id.
    pub fn cmp_time(&self, other: &Self) -> Ordering {
        self.hlc
            .cmp(&other.hlc)
            .then_with(|| self.change.cmp(&other.change))
            .then_with(|| self.exid.cmp(&other.exid))
    }
}

/// The candidates at a path, sorted by [`Candidate::cmp_time`] (empty when absent).
pub(crate) fn candidates_of(
    view: &View<'_>,
    values: &[(Value<'_>, ObjId)],
) -> Result<Vec<Candidate>, PolicyError> {
    let mut out = values
        .iter()
        .map(|(v, id)| Candidate::from_value(view, v, id))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(Candidate::cmp_time);
    Ok(out)
}
