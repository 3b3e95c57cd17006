//! Conflict policies: per-path merge rules over an unchanged Automerge document.
//!
//! A [`Schema`] maps path patterns (`todos/*/title`, `cart/items`, `counters/*`) to a [`Policy`]:
//! [`Lww`](Policy::Lww) by hybrid logical clock, [`Causal`](Policy::Causal) (Automerge's rule,
//! the default), [`Counter`](Policy::Counter), [`AddWinsSet`](Policy::AddWinsSet) and
//! [`RemoveWinsSet`](Policy::RemoveWinsSet), [`Text`](Policy::Text),
//! [`KeepConflicts`](Policy::KeepConflicts) and [`Custom`](Policy::Custom) resolvers.
//!
//! Policies never change the document's shape: values stay plain JSON for every other Automerge
//! client (a set is a map of `element -> true`, a counter an Automerge counter, a register its
//! value). What a policy needs beyond the values, it reads from the change graph: which change
//! wrote each concurrent value
//! ([`Automerge::hash_for_opid`](automerge::Automerge::hash_for_opid)) and that change's HLC
//! stamp, carried in its commit message (see [`stamp`](mod@stamp) for the encoding and why).
//!
//! - Reads: [`Schema::resolved`] (deterministic: same heads, same value, whatever the arrival
//!   order), [`candidates`] / [`conflicts`] (who wrote what, when, in which change),
//!   [`history`](fn@history) (losing values stay findable), [`new_conflicts`] ("a conflict
//!   appeared"; [`watch_conflicts`] streams them for a `DocHandle`).
//! - Writes: [`Schema::put`], [`Schema::add`], [`Schema::remove`], [`Schema::increment`],
//!   [`Schema::resolve`] (supersedes every candidate), [`Schema::restore`], [`text::mark`].
//! - Time: [`Hlc`](hlc) (sans-IO: physical time is an argument), [`change`] (a transaction
//!   committed with an HLC stamp), [`observe_changes`] (merge the stamps of received changes),
//!   [`ReplicaClock`] (one clock for a replica's many documents).
//!
//! ```
//! use automerge::{ActorId, Automerge};
//! use concord::policy::{self, Hlc, Policy, Schema};
//! use serde_json::json;
//!
//! let schema = Schema::new()
//!     .with("name", Policy::Lww)?
//!     .with("tags", Policy::AddWinsSet)?;
//!
//! // Two datacenters with clocks a minute apart edit a shared document offline.
//! let mut eu = Automerge::new().with_actor(ActorId::from([1; 16]));
//! let mut eu_clock = Hlc::new(eu.get_actor().clone());
//! policy::change(&mut eu, &mut eu_clock, 1_000_000, |tx| schema.put(tx, "name", &json!("Alice")))?;
//! let mut us = eu.fork().with_actor(ActorId::from([2; 16]));
//! let mut us_clock = Hlc::new(us.get_actor().clone());
//! policy::observe_changes(&mut us_clock, &us, &[], 940_000);
//!
//! policy::change(&mut eu, &mut eu_clock, 1_000_500, |tx| schema.put(tx, "name", &json!("Alice Smith")))?;
//! policy::change(&mut us, &mut us_clock, 941_000, |tx| schema.put(tx, "name", &json!("Alice Jones")))?;
//! policy::change(&mut us, &mut us_clock, 941_001, |tx| schema.add(tx, "tags", "vip"))?;
//!
//! eu.merge(&mut us)?;
//! us.merge(&mut eu)?;
//! // The EU write has the later HLC: it wins on both sides, whatever the merge order.
//! assert_eq!(schema.resolved(&eu, "name")?, json!("Alice Smith"));
//! assert_eq!(schema.resolved(&us, "name")?, json!("Alice Smith"));
//! assert_eq!(policy::conflicts(&us, "name")?.len(), 2); // the loser is still listed
//! assert_eq!(schema.resolved(&us, "tags")?, json!(["vip"]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # With the sans-IO core
//!
//! `Core::change` commits with default options, so changes made through it carry no HLC stamp
//! (they fall back to their `time`, zero). To stamp them, commit with
//! [`commit_options`]`(&hlc.now(now))`; the core needs a `change_with` variant taking
//! `CommitOptions` for that. Reads ([`Schema::resolved`], [`conflicts`], ...) work on any
//! `&Automerge`, e.g. inside `DocHandle::with_doc`.
//!
//! Containers shared by replicas (the map holding `counters/*`, a list of todos) should be created
//! once, before replicas go offline: two replicas creating the same container concurrently make
//! two containers in conflict, and paths below it follow Automerge's pick. Sets are the exception:
//! concurrently created sets are merged element by element.

mod candidate;
mod clock;
mod counter;
mod error;
mod history;
pub mod hlc;
mod notify;
mod resolve;
mod schema;
mod sets;
pub mod stamp;
pub mod text;
mod view;
#[cfg(feature = "native")]
mod watch;
mod write;

pub use candidate::Candidate;
pub use clock::ReplicaClock;
pub use error::{PolicyError, SchemaError};
pub use history::{HistoryEntry, history};
pub use hlc::{DEFAULT_MAX_DRIFT_MS, Hlc, HlcTimestamp, Observed};
pub use notify::{ConflictEvent, conflicted_paths, new_conflicts};
pub use resolve::{candidates, candidates_at, conflicts};
pub use schema::{Pattern, Policy, Resolver, Schema, Segment};
pub use stamp::{ChangeStamp, change, commit, commit_options, observe_changes};
#[cfg(feature = "native")]
pub use watch::{ConflictStream, watch_conflicts};

use crate::path::{DocPath, PathError};

/// Anything that names a path: a `&str` in [`DocPath`] syntax, or a `DocPath`.
pub trait IntoPath {
    /// The parsed path.
    fn into_path(self) -> Result<DocPath, PathError>;
}

impl IntoPath for &str {
    fn into_path(self) -> Result<DocPath, PathError> {
        self.parse()
    }
}

impl IntoPath for &String {
    fn into_path(self) -> Result<DocPath, PathError> {
        self.parse()
    }
}

impl IntoPath for String {
    fn into_path(self) -> Result<DocPath, PathError> {
        self.parse()
    }
}

impl IntoPath for DocPath {
    fn into_path(self) -> Result<DocPath, PathError> {
        Ok(self)
    }
}

impl IntoPath for &DocPath {
    fn into_path(self) -> Result<DocPath, PathError> {
        Ok(self.clone())
    }
}

#[cfg(test)]
mod tests;
