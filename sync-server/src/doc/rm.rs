//! `concord doc rm URL`: deletes a document everywhere (see `concord::core::Tombstone`).

use std::time::Duration;

use concord::AutomergeUrl;

use super::replica::{Replica, warn};

/// Deletes the document: from the local replica at once, then through the servers (it needs
/// write access there), waiting within the time budget for one to confirm.
pub(super) async fn rm(r: &Replica, url: &AutomergeUrl) -> anyhow::Result<()> {
    let id = url.document_id;
    let handle = r.open_doc(url).await?;
    handle.delete().await?;
    drop(handle);
    if !r.online() {
        warn(format!(
            "{} is deleted from the local replica; the servers learn it on a later connection \
             (`concord doc sync`)",
            id.url()
        ));
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + r.remaining();
    loop {
        if r.repo().deletion(&id).is_some_and(|t| t.confirmed) {
            println!("deleted {}", id.url());
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            warn(format!(
                "{} is deleted from the local replica, but no server ({}) confirmed it within \
                 {:?}; it is sent again on the next connection (`concord doc sync`)",
                id.url(),
                r.servers(),
                r.wait()
            ));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
