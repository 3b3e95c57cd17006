//! `sync`: push every stored document to a server (and pull its changes) until the server holds
//! exactly what we hold.

use anyhow::{Context, bail};

use super::replica::Replica;

/// At most this many unsynced documents are named in the error.
const LIST_AT_MOST: usize = 20;

/// Syncs every document of the replica; an error names those a server did not confirm in time.
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
    let mut unsynced = Vec::new();
    for id in &ids {
        match r.repo().find_local(*id).await {
            Ok(handle) => {
                r.track(&handle);
                handles.push(handle);
            }
            Err(e) => unsynced.push(format!("{} (cannot load it: {e})", id.url())),
        }
    }
    if r.repo().wait_connected(r.remaining()).await.is_err() {
        bail!(
            "no server reachable ({}) within {:?}; {} document(s) not synced",
            r.servers(),
            r.wait(),
            ids.len()
        );
    }
    for handle in &handles {
        if handle.wait_synced(r.remaining()).await.is_err() {
            unsynced.push(handle.url().to_string());
        }
    }
    if !unsynced.is_empty() {
        let mut list = unsynced
            .iter()
            .take(LIST_AT_MOST)
            .fold(String::new(), |acc, u| acc + "\n  " + u);
        if unsynced.len() > LIST_AT_MOST {
            list += &format!("\n  ... and {} more", unsynced.len() - LIST_AT_MOST);
        }
        bail!(
            "{} of {} document(s) were not synced with {} within {:?}:{list}",
            unsynced.len(),
            ids.len(),
            r.servers(),
            r.wait()
        );
    }
    println!("synced {} document(s)", ids.len());
    Ok(())
}
