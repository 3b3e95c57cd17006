//! "A conflict appeared" as a stream, for a [`DocHandle`] of the tokio [`Repo`](crate::Repo).
//!
//! [`watch_conflicts`] follows the handle's change events (local and remote) and runs
//! [`new_conflicts`] between the heads it last saw and the new heads, so the app can prompt the
//! user as soon as a concurrent value arrives.

use std::sync::Arc;

use automerge::ChangeHash;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::error::PolicyError;
use super::notify::{ConflictEvent, new_conflicts};
use super::schema::Schema;
use crate::repo::{DocEvent, DocHandle, RepoError};

/// Conflict events of one document; dropping it stops the watch.
pub type ConflictStream = mpsc::UnboundedReceiver<Result<ConflictEvent, PolicyError>>;

/// Streams every conflict that appears on `schema`'s `KeepConflicts` paths of `handle`'s
/// document from now on (call [`conflicted_paths`](super::conflicted_paths) for those already
/// there). Must be called inside a tokio runtime; the watch keeps the document resident until the
/// stream is dropped.
pub fn watch_conflicts(
    handle: &DocHandle,
    schema: Arc<Schema>,
) -> Result<ConflictStream, RepoError> {
    // Subscribe before reading the heads, so no change falls between the two.
    let mut events = handle.subscribe();
    let mut last: Vec<ChangeHash> = handle.heads()?;
    let handle = handle.clone();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let heads = tokio::select! {
                () = tx.closed() => return,
                event = events.recv() => match event {
                    Ok(DocEvent::Changed { heads, .. }) => heads,
                    Ok(_) => continue,
                    // Missed events: compare with the current heads, which cover them.
                    Err(RecvError::Lagged(_)) => match handle.heads() {
                        Ok(h) => h,
                        Err(_) => return,
                    },
                    Err(RecvError::Closed) => return,
                },
            };
            let found = handle.with_doc(|d| new_conflicts(d, &last, &heads, &schema));
            last = heads;
            let found = match found {
                Ok(found) => found,
                Err(_) => return, // the repo is gone
            };
            let items: Vec<Result<ConflictEvent, PolicyError>> = match found {
                Ok(events) => events.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            for item in items {
                if tx.send(item).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}
