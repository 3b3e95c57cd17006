//! Metrics of a cluster node (`--database`): the database pool, the bus (connection, lag from a
//! commit on another node to its delivery here, ping round trip) and the node's identity.
//!
//! ```text
//! concord_cluster_node_info{node="eu-1"} 1
//! concord_db_pool_connections 5          concord_db_pool_idle 3
//! concord_cluster_bus_connected 1        concord_cluster_bus_reconnects_total 0
//! concord_cluster_bus_lag_seconds_total 0.42  concord_cluster_bus_lag_notices_total 311
//! concord_cluster_bus_lag_last_seconds 0.001 concord_cluster_bus_ping_seconds 0.0004
//! ```

use std::sync::{Arc, OnceLock};

use concord::repo::ClusterBus;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::backend::ClusterNode;

/// The collector, empty until the node is set (a SQLite server never sets it).
#[derive(Debug, Default)]
pub struct ClusterCollector {
    node: OnceLock<Arc<ClusterNode>>,
}

impl ClusterCollector {
    /// Points the metrics at this server's cluster node.
    pub fn set(&self, node: Arc<ClusterNode>) {
        let _ = self.node.set(node);
    }
}

fn gauge_f(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: f64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter_f(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: f64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for ClusterCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(c) = self.node.get() else {
            return Ok(());
        };
        {
            let mut family = e.encode_descriptor(
                "concord_cluster_node_info",
                "This node of the cluster (always 1; the label names it).",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            let labels = [("node", c.node.as_str())];
            ConstGauge::new(1_i64).encode(family.encode_family(&labels)?)?;
        }
        let pool = c.storage.pool();
        gauge(
            &mut e,
            "concord_db_pool_connections",
            "Open connections of the storage pool to PostgreSQL.",
            i64::from(pool.size()),
        )?;
        gauge(
            &mut e,
            "concord_db_pool_idle",
            "Idle connections of the storage pool.",
            i64::try_from(pool.num_idle()).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut e,
            "concord_cluster_bus_connected",
            "1 while the bus listens on PostgreSQL, 0 while it reconnects.",
            i64::from(c.bus.is_connected()),
        )?;
        counter(
            &mut e,
            "concord_cluster_bus_reconnects",
            "Times the bus's listening connection was re-established.",
            c.bus.reconnects(),
        )?;
        counter(
            &mut e,
            "concord_cluster_bus_dropped",
            "Bus events not queued because a subscriber was behind (each turned into a re-read).",
            c.bus.dropped(),
        )?;
        let lag = c.bus.commit_lag();
        counter_f(
            &mut e,
            "concord_cluster_bus_lag_seconds",
            "Sum of bus lags: from a commit on another node to its notice's delivery here.",
            ms(lag.sum_ms),
        )?;
        counter(
            &mut e,
            "concord_cluster_bus_lag_notices",
            "Commit notices from other nodes whose lag was measured.",
            lag.count,
        )?;
        gauge_f(
            &mut e,
            "concord_cluster_bus_lag_last_seconds",
            "Bus lag of the last commit notice from another node.",
            ms(lag.last_ms),
        )?;
        gauge_f(
            &mut e,
            "concord_cluster_bus_ping_seconds",
            "Round trip of the bus's last liveness ping (NOTIFY to its own delivery).",
            c.bus.last_ping_rtt().map_or(0.0, |d| d.as_secs_f64()),
        )?;
        Ok(())
    }
}

#[allow(clippy::cast_precision_loss)] // metrics: milliseconds far below 2^52
fn ms(v: u64) -> f64 {
    v as f64 / 1000.0
}
