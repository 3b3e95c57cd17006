//! Server housekeeping on a timer: expiry of abandoned sync state, and the retention of deleted
//! documents (their data, then their tombstones).
//!
//! Sync state is persisted per (document, peer storage id, principal) so that reconnects resume;
//! a peer that never comes back would keep its rows forever. Rows not written for
//! `--sync-state-ttl-secs` are deleted (the peer, should it return, syncs from scratch: nothing
//! is lost, it costs one full exchange).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use concord::storage::Storage;
use tokio::sync::watch;

/// How often expiry runs for a given time to live: a quarter of it, between 1 s and 1 h.
pub(crate) fn sweep_every(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Deletes sync state older than `ttl`, every [`sweep_every`], until shutdown.
pub(crate) fn spawn_sync_state_expiry(
    storage: Arc<dyn Storage>,
    ttl: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_every(ttl));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let before = now.saturating_sub(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
            match storage.expire_sync_states(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "expired abandoned sync state"),
                Err(error) => tracing::warn!(%error, "cannot expire sync state"),
            }
        }
    });
}

/// Reclaims deleted documents' stored data `data` after their deletion, and forgets their
/// tombstones `tombstone` after it, every [`sweep_every`] of the shorter, until shutdown.
pub(crate) fn spawn_deletion_retention(
    storage: Arc<dyn Storage>,
    data: Duration,
    tombstone: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_every(data.min(tombstone)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Err(error) = sweep_deleted(storage.as_ref(), data, tombstone).await {
                tracing::warn!(%error, "cannot apply the retention of deleted documents");
            }
        }
    });
}

async fn sweep_deleted(
    storage: &dyn Storage,
    data: Duration,
    tombstone: Duration,
) -> Result<(), concord::storage::StorageError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    for (doc, bytes) in storage.tombstones().await? {
        let Ok(mut t) = concord::core::Tombstone::decode(&bytes) else {
            continue;
        };
        let age = now.saturating_sub(t.at_ms);
        if age >= ms(tombstone) {
            storage.remove_tombstone(&doc).await?;
            tracing::info!(%doc, "deleted document forgotten (tombstone retention)");
        } else if !t.reclaimed && age >= ms(data) {
            storage.delete(&doc).await?;
            t.reclaimed = true;
            storage.put_tombstone(&doc, &t.encode()).await?;
            tracing::info!(%doc, "deleted document's data reclaimed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_scale_with_the_ttl() {
        assert_eq!(sweep_every(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(
            sweep_every(Duration::from_secs(30 * 24 * 3600)),
            Duration::from_secs(3600)
        );
    }
}
