//! Metrics of the doors: connections refused or timed out before admission, and failures to
//! reload the revocation list.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Counters and gauges of the listeners and the revocation reloader.
#[derive(Debug, Default)]
pub struct DoorMetrics {
    /// Connections accepted but not admitted yet (headers in flight, plain HTTP).
    pub pending_connections: Gauge,
    /// Connections closed at once because a pending-connection cap was reached.
    pub refused_connections: Counter,
    /// Connections closed because their request headers did not arrive in time.
    pub header_timeouts: Counter,
    /// Failed reloads of the revocation file (the previous list stays in force).
    pub revocation_reload_errors: Counter,
}

impl DoorMetrics {
    /// Registers every metric in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "concord_http_connections_pending",
            "Connections accepted but not admitted yet (request headers in flight, plain HTTP).",
            m.pending_connections.clone(),
        );
        registry.register(
            "concord_http_connections_refused",
            "Connections closed at once because a pending-connection cap was reached.",
            m.refused_connections.clone(),
        );
        registry.register(
            "concord_http_header_timeouts",
            "Connections closed because their request headers did not arrive in time.",
            m.header_timeouts.clone(),
        );
        registry.register(
            "concord_revocation_reload_errors",
            "Failed reloads of the revocation file (the previous list stays in force).",
            m.revocation_reload_errors.clone(),
        );
        m
    }
}
