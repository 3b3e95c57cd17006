//! The repo's connection and sync status, as JavaScript sees it.

use concord::core::Core;

/// `offline` (no server), `connected` (handshake done, nothing to sync), `syncing` (some
/// document's heads are not yet known to be held by a server), `synced` (every resident
/// document's heads are held by a connected server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No established connection.
    Offline,
    /// Connected, no resident document.
    Connected,
    /// Connected, some document not in sync.
    Syncing,
    /// Connected, everything in sync.
    Synced,
}

impl Status {
    /// The string JavaScript sees.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offline => "offline",
            Self::Connected => "connected",
            Self::Syncing => "syncing",
            Self::Synced => "synced",
        }
    }

    /// The status of `core` now.
    pub fn of(core: &Core) -> Self {
        if core.established().is_empty() {
            return Self::Offline;
        }
        let docs = core.resident();
        if docs.is_empty() {
            return Self::Connected;
        }
        let synced = docs
            .iter()
            .filter(|d| core.document(d).is_some())
            .all(|d| core.sync_status(d).iter().any(|s| s.in_sync));
        if synced { Self::Synced } else { Self::Syncing }
    }
}
