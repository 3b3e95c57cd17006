//! `concord doc rm URL`: deletes a document everywhere (see `concord::core::Tombstone`);
//! `concord doc rm --purge URL`: erases it, as an admin.

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

/// Erases the document: the server deletes it everywhere and every server and region drops its
/// stored bytes at once (`DELETE /admin/docs/{id}?purge=true`, admin token); then this
/// replica's copy goes too.
pub(super) async fn purge(
    r: &Replica,
    url: &AutomergeUrl,
    admin: Option<&str>,
) -> anyhow::Result<()> {
    let id = url.document_id;
    if !r.online() {
        anyhow::bail!("--purge needs a server (--server URL with an admin token)");
    }
    r.repo().erase_remote(id, admin).await?;
    // This replica's copy, if it holds one: erased the same way (its tombstone may already
    // have arrived from the server).
    let local = if r.repo().deletion(&id).is_some() {
        r.repo().purge_deleted(id).await
    } else if r.repo().list_local().await?.contains(&id) {
        match r.repo().delete_document(id, "admin", true).await {
            Err(concord::RepoError::Deleted(_)) => r.repo().purge_deleted(id).await,
            other => other,
        }
    } else {
        Ok(())
    };
    if let Err(e) = local {
        warn(format!(
            "the servers erased {}, but this replica's copy could not be dropped: {e}",
            id.url()
        ));
    }
    println!("purged {}", id.url());
    Ok(())
}
