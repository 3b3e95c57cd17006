//! Before `shutdown`: wait until what open documents hold in memory is in local storage.
//!
//! `concord::Repo::shutdown` (and `flush`) wait for storage operations already issued, but changes
//! received from a server are committed asynchronously, and a commit not yet issued is not waited
//! for. A mobile app that syncs and is then closed would fetch those changes again next time (no
//! loss, but a surprise when it reopens offline). So `Repo::shutdown` checks every document that
//! still has a live `DocHandle` against storage, bounded by [`PERSIST_WAIT`] in total, the way the
//! `concord doc` CLI does.

use std::sync::{PoisonError, Weak};
use std::time::Duration;

use automerge::{Automerge, ReadDoc};
use concord::Repo;

use crate::doc::DocHandle;

/// The longest `shutdown` waits for received changes to reach storage.
pub(crate) const PERSIST_WAIT: Duration = Duration::from_secs(5);

/// True when storage holds every head `handle` has in memory.
async fn stored(repo: &Repo, handle: &concord::DocHandle) -> bool {
    let Ok(heads) = handle.heads() else {
        return true; // not resident: nothing in memory that storage could lack
    };
    let Ok(stored) = repo.storage().load(&handle.id()).await else {
        return false;
    };
    let bytes: Vec<u8> = stored
        .chunks
        .iter()
        .flat_map(|c| c.bytes.iter().copied())
        .collect();
    if bytes.is_empty() {
        return heads.is_empty();
    }
    match Automerge::load(&bytes) {
        Ok(doc) => heads.iter().all(|h| doc.get_change_by_hash(h).is_some()),
        Err(_) => false,
    }
}

/// Waits (bounded) until the documents of the live handles in `open` are stored.
pub(crate) async fn persist_open(repo: &Repo, open: &std::sync::Mutex<Vec<Weak<DocHandle>>>) {
    let handles: Vec<concord::DocHandle> = open
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .map(|h| h.inner().clone())
        .collect();
    let deadline = tokio::time::Instant::now() + PERSIST_WAIT;
    for handle in &handles {
        loop {
            repo.flush().await;
            if stored(repo, handle).await || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
