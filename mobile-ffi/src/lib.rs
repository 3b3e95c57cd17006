//! # concord-ffi: Concord for Kotlin, Swift and Python
//!
//! [uniffi](https://mozilla.github.io/uniffi-rs/) bindings over client-core's public API
//! (`concord::Repo`, `concord::DocHandle`, `concord::path`). `mobile-ffi/scripts/bindings.sh`
//! generates the Kotlin, Swift and Python sources from the built `libconcord_ffi`; the README next
//! to this crate shows them in use.
//!
//! - [`Repo`](repo::Repo): a replica in one SQLite file, syncing with servers.
//! - [`DocHandle`](doc::DocHandle): typed and JSON reads, writes ([`Edit`](edit::Edit)),
//!   durability waits, presence, listeners, deletion (`delete()`, `DeletedListener`,
//!   `ConcordError::Deleted`).
//! - [`history`]: `DocHandle.history/diff/restore`, `Repo.list_local/list_remote`.
//! - [`ConcordError`](error::ConcordError): the one error type (a kind and a message).
//! - [`Subscription`](dispatch::Subscription): what `subscribe_*` returns; listeners run on their
//!   own threads behind bounded queues ([`listeners`]).
//! - [`runtime`]: the tokio runtime the engine runs on, whatever the caller's executor.
//!
//! No panic crosses the boundary: the crate has no `unwrap`/`expect`, every error is mapped to a
//! `ConcordError`, and work runs in tokio tasks whose panics come back as `Internal`.

uniffi::setup_scaffolding!();

pub mod config;
pub mod dispatch;
pub mod doc;
pub mod edit;
pub mod error;
pub mod history;
pub mod listeners;
mod persist;
pub mod policy;
pub mod repo;
pub mod runtime;
pub mod value;

pub use dispatch::Subscription;
pub use doc::{DocHandle, Durability};
pub use edit::Edit;
pub use error::ConcordError;
pub use history::{HistoryEntry, HistoryPage, RemoteDocument, RemotePage};
pub use listeners::{
    ChangeEvent, ChangeListener, ChangeOrigin, DeletedEvent, DeletedListener, EphemeralListener,
    EphemeralMessage, SyncStatus, SyncStatusListener,
};
pub use repo::{Deletion, Repo};
pub use value::Value;

/// The version of this library (the Concord workspace version).
#[uniffi::export]
pub fn concord_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
