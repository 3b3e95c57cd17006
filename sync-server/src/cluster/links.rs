//! One region link per (region, peer URL) for a whole cluster: every node runs a holder task
//! for each `--peer`, and only the node holding the PostgreSQL session advisory lock
//! `region-link:<region>-><url>` dials it (the others show the link as `standby`). When the
//! holder dies, PostgreSQL ends its session and releases the lock; another node takes it within
//! [`RETRY`] and dials.
//!
//! ```no_run
//! # async fn demo(storage: concord::storage::postgres::PostgresStorage, shutdown: tokio::sync::watch::Receiver<bool>) {
//! let active = concord_server::cluster::links::hold(&storage, "eu", "ws://us.example/sync", shutdown);
//! // repo.connect_region_while(vec![url], credentials, Some(active));
//! # }
//! ```

use std::time::Duration;

use concord::storage::postgres::PostgresStorage;
use tokio::sync::watch;

use super::lock::AdvisoryLock;

/// How often a node without the lock tries to take it, and the holder checks it still has it.
pub const RETRY: Duration = Duration::from_secs(1);

/// The lock name of the link from `region` to `url` (its query, which may hold a token, left
/// out; every node must be given the same peer URLs).
pub fn lock_name(region: &str, url: &str) -> String {
    let url = url.split('?').next().unwrap_or(url);
    format!("region-link:{region}->{url}")
}

/// Starts the holder task; the returned flag is true while this node holds the link's lock.
pub fn hold(
    storage: &PostgresStorage,
    region: &str,
    url: &str,
    mut shutdown: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let options = storage.connect_options().clone();
    let timeout = storage.config().connect_timeout;
    let name = lock_name(region, url);
    tokio::spawn(async move {
        let mut held: Option<AdvisoryLock> = None;
        loop {
            let still = match held.as_mut() {
                Some(l) => l.is_held(timeout).await,
                None => false,
            };
            if held.is_some() && !still {
                tracing::warn!(link = %name, "region link lock lost; another node may take it");
                held = None;
            }
            if held.is_none() {
                match AdvisoryLock::try_acquire(&options, &name, timeout).await {
                    Ok(Some(l)) => {
                        tracing::info!(link = %name, "this node holds the region link");
                        held = Some(l);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(link = %name, error = %e, "cannot take the region link lock")
                    }
                }
            }
            tx.send_replace(held.is_some());
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        tx.send_replace(false);
        if let Some(l) = held {
            l.release().await;
        }
    });
    rx
}
