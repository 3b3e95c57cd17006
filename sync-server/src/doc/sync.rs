//! `sync`: push every stored document to a server (and pull its changes) until the server holds
//! exactly what we hold.

use anyhow::{Context, bail};

use super::replica::Replica;

/// At most this many unsynced documents are named in the error.
const LIST_AT_MOST: usize = 20;

pub(super) async fn sync(r: &Replica) -> anyhow::Result<()> {
    if !r.online() {
        bail!("sync needs a server (drop --offline)");
    }
    let ids = r
        .repo()
        .storage()
        .list()
        .await
        .with_context(|| format!("cannot list the documents of {}", r.db().display()))?;
    // Keep every handle alive so that each document stays loaded (and offered) while we wait.
    let mut handles = Vec::with_capacity(ids.len());
    for id in &ids {
        let handle = r.repo().find_local(*id).await.with_context(|| {
            format!(
                "cannot load document {} from {}",
                id.url(),
                r.db().display()
            )
        })?;
        r.track(&handle);
        handles.push(handle);
    }
    if r.repo().wait_connected(r.remaining()).await.is_err() {
        bail!(
            "no server reachable ({}) within {:?}; {} document(s) not synced",
            r.servers(),
            r.wait(),
            ids.len()
        );
    }
    let mut unsynced = Vec::new();
    for handle in &handles {
        if handle.wait_synced(r.remaining()).await.is_err() {
            unsynced.push(handle.url().to_string());
        }
    }
    if !unsynced.is_empty() {
        let shown = unsynced
            .iter()
            .take(LIST_AT_MOST)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ");
        let more = unsynced.len().saturating_sub(LIST_AT_MOST);
        let more = if more > 0 {
            format!("\n  ... and {more} more")
        } else {
            String::new()
        };
        bail!(
            "{} of {} document(s) were not synced with {} within {:?}:\n  {shown}{more}",
            unsynced.len(),
            ids.len(),
            r.servers(),
            r.wait()
        );
    }
    println!("synced {} document(s)", ids.len());
    Ok(())
}
