//! Prometheus metrics: engine counters read at scrape time, live gauges, and a storage commit
//! latency histogram recorded by an instrumented storage wrapper.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Instant;

use concord::storage::{ChunkKey, Storage, StorageResult, StoredDocument, WriteOp};
use concord::{DocumentId, Repo, StorageId};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Metrics owned by the server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Documents in storage (refreshed at scrape time).
    pub stored_documents: Gauge,
    commit_seconds: Histogram,
    /// Listener and revocation metrics.
    pub doors: super::door_metrics::DoorMetrics,
    /// Database pool and bus metrics of a cluster node.
    pub(crate) cluster: Arc<super::cluster_metrics::ClusterCollector>,
}

#[derive(Debug)]
struct EngineCollector {
    repo: std::sync::OnceLock<Repo>,
}

fn counter(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for EngineCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(repo) = self.repo.get() else {
            return Ok(());
        };
        let s = repo.stats();
        counter(
            &mut e,
            "concord_messages_in",
            "Protocol messages received.",
            s.messages_in,
        )?;
        counter(
            &mut e,
            "concord_messages_out",
            "Protocol messages sent.",
            s.messages_out,
        )?;
        counter(
            &mut e,
            "concord_bytes_in",
            "Protocol bytes received.",
            s.bytes_in,
        )?;
        counter(
            &mut e,
            "concord_bytes_out",
            "Protocol bytes sent.",
            s.bytes_out,
        )?;
        counter(
            &mut e,
            "concord_changes_applied",
            "Changes received and applied (or, on large documents, committed with their application deferred).",
            s.changes_applied,
        )?;
        counter(
            &mut e,
            "concord_changes_deferred",
            "Changes received whose application to the in-memory document was deferred.",
            s.changes_deferred,
        )?;
        counter(
            &mut e,
            "concord_commits",
            "Storage commits of document changes.",
            s.commits,
        )?;
        counter(
            &mut e,
            "concord_compactions",
            "Compactions committed (a snapshot replaced the chunks it covers).",
            s.compactions,
        )?;
        counter(
            &mut e,
            "concord_cluster_chunks_applied",
            "Chunks other nodes of the cluster committed, read from the database and applied.",
            s.external_chunks,
        )?;
        counter(
            &mut e,
            "concord_evictions",
            "Documents evicted from memory.",
            s.evictions,
        )?;
        let resident =
            ConstGauge::new(i64::try_from(repo.resident_documents()).unwrap_or(i64::MAX));
        resident.encode(e.encode_descriptor(
            "concord_documents_resident",
            "Documents held in memory.",
            None,
            resident.metric_type(),
        )?)?;
        region_metrics(&mut e, repo)
    }
}

/// Per peer region: link state, documents behind, age of the oldest unacknowledged commit, and
/// traffic counters that survive reconnects.
fn region_metrics(e: &mut DescriptorEncoder<'_>, repo: &Repo) -> Result<(), std::fmt::Error> {
    use concord::repo::{LinkState, PeerRegionStatus};
    use prometheus_client::metrics::MetricType;
    let peers: Vec<PeerRegionStatus> = repo
        .region_peers()
        .into_iter()
        .filter(|p| p.region.is_some())
        .collect();
    let family = |e: &mut DescriptorEncoder<'_>,
                  name: &str,
                  help: &str,
                  kind: MetricType,
                  value: &dyn Fn(&PeerRegionStatus) -> Option<u64>|
     -> Result<(), std::fmt::Error> {
        let mut enc = e.encode_descriptor(name, help, None, kind)?;
        let mut seen = std::collections::BTreeSet::new();
        for p in &peers {
            let Some(region) = p.region.as_deref() else {
                continue;
            };
            let Some(v) = value(p) else { continue };
            if !seen.insert(region) {
                continue; // one series per region (its first entry carries the totals)
            }
            let labels = [("region", region)];
            let v = i64::try_from(v).unwrap_or(i64::MAX);
            if matches!(kind, MetricType::Counter) {
                ConstCounter::new(u64::try_from(v).unwrap_or(0))
                    .encode(enc.encode_family(&labels)?)?;
            } else {
                ConstGauge::new(v).encode(enc.encode_family(&labels)?)?;
            }
        }
        Ok(())
    };
    let gauge = MetricType::Gauge;
    let counter = MetricType::Counter;
    family(
        e,
        "concord_region_link_up",
        "1 when the link to the region is up, 0 when it is down, connecting or stalled.",
        gauge,
        &|p| Some(u64::from(p.state == LinkState::Up)),
    )?;
    family(
        e,
        "concord_region_link_stalled",
        "1 when the link to the region is open but no frame arrived for --region-stall-secs.",
        gauge,
        &|p| Some(u64::from(p.state == LinkState::Stalled)),
    )?;
    family(
        e,
        "concord_region_docs_behind",
        "Documents with a commit the region has not acknowledged (live link).",
        gauge,
        &|p| p.link.as_ref().map(|l| l.docs_behind),
    )?;
    family(
        e,
        "concord_region_oldest_unacked_ms",
        "Age of the oldest commit the region has not acknowledged (0: none; live link).",
        gauge,
        &|p| p.link.as_ref().map(|l| l.oldest_unacked_ms.unwrap_or(0)),
    )?;
    family(
        e,
        "concord_region_bytes_out",
        "Bytes sent to the region, every link since start.",
        counter,
        &|p| Some(p.totals.bytes_out),
    )?;
    family(
        e,
        "concord_region_bytes_in",
        "Bytes received from the region, every link since start.",
        counter,
        &|p| Some(p.totals.bytes_in),
    )?;
    family(
        e,
        "concord_region_frames_out",
        "Frames sent to the region, every link since start.",
        counter,
        &|p| Some(p.totals.frames_out),
    )?;
    family(
        e,
        "concord_region_frames_in",
        "Frames received from the region, every link since start.",
        counter,
        &|p| Some(p.totals.frames_in),
    )?;
    Ok(())
}

/// Shared handle to the engine collector, filled in once the repo exists.
#[derive(Debug, Clone)]
pub struct RepoSlot(Arc<EngineCollector>);

impl RepoSlot {
    /// Points the metrics at the running repo.
    pub fn set(&self, repo: Repo) {
        let _ = self.0.repo.set(repo);
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> (Arc<Self>, RepoSlot) {
        let mut registry = Registry::default();
        let connections = Gauge::default();
        let stored_documents = Gauge::<i64, AtomicI64>::default();
        // 50 us .. ~1.6 s
        let commit_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "concord_connections",
            "Open WebSocket connections.",
            connections.clone(),
        );
        registry.register(
            "concord_documents_stored",
            "Documents in storage.",
            stored_documents.clone(),
        );
        registry.register(
            "concord_storage_commit_seconds",
            "Latency of storage commits (one write, or a group commit of several).",
            commit_seconds.clone(),
        );
        let slot = RepoSlot(Arc::new(EngineCollector {
            repo: std::sync::OnceLock::new(),
        }));
        registry.register_collector(Box::new(slot.0.clone()));
        let doors = super::door_metrics::DoorMetrics::register(&mut registry);
        let cluster = Arc::new(super::cluster_metrics::ClusterCollector::default());
        registry.register_collector(Box::new(cluster.clone()));
        (
            Arc::new(Self {
                registry,
                connections,
                stored_documents,
                commit_seconds,
                doors,
                cluster,
            }),
            slot,
        )
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Wraps a storage backend and records write latencies.
#[derive(Debug)]
pub struct InstrumentedStorage<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> InstrumentedStorage<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn observe(&self, start: Instant) {
        self.metrics
            .commit_seconds
            .observe(start.elapsed().as_secs_f64());
    }
}

#[async_trait::async_trait]
impl<S: Storage> Storage for InstrumentedStorage<S> {
    async fn load(&self, doc: &DocumentId) -> StorageResult<StoredDocument> {
        self.inner.load(doc).await
    }

    async fn load_chunks(
        &self,
        doc: &DocumentId,
        keys: &[ChunkKey],
    ) -> StorageResult<Vec<concord::storage::Chunk>> {
        self.inner.load_chunks(doc, keys).await
    }

    async fn append(&self, doc: &DocumentId, key: ChunkKey, bytes: &[u8]) -> StorageResult<()> {
        let t = Instant::now();
        let r = self.inner.append(doc, key, bytes).await;
        self.observe(t);
        r
    }

    async fn compact(
        &self,
        doc: &DocumentId,
        key: ChunkKey,
        snapshot: &[u8],
        covered: &[ChunkKey],
    ) -> StorageResult<()> {
        let t = Instant::now();
        let r = self.inner.compact(doc, key, snapshot, covered).await;
        self.observe(t);
        r
    }

    async fn put_sync_state(
        &self,
        doc: &DocumentId,
        peer: &StorageId,
        state: &[u8],
    ) -> StorageResult<()> {
        let t = Instant::now();
        let r = self.inner.put_sync_state(doc, peer, state).await;
        self.observe(t);
        r
    }

    async fn list(&self) -> StorageResult<Vec<DocumentId>> {
        self.inner.list().await
    }

    async fn delete(&self, doc: &DocumentId) -> StorageResult<()> {
        self.inner.delete(doc).await
    }

    async fn get_meta(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        self.inner.get_meta(key).await
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> StorageResult<()> {
        self.inner.put_meta(key, value).await
    }

    async fn put_heads(&self, doc: &DocumentId, heads: &[u8]) -> StorageResult<()> {
        self.inner.put_heads(doc, heads).await
    }

    async fn put_tombstone(&self, doc: &DocumentId, record: &[u8]) -> StorageResult<()> {
        self.inner.put_tombstone(doc, record).await
    }

    async fn remove_tombstone(&self, doc: &DocumentId) -> StorageResult<()> {
        self.inner.remove_tombstone(doc).await
    }

    async fn tombstones(&self) -> StorageResult<Vec<(DocumentId, Vec<u8>)>> {
        self.inner.tombstones().await
    }

    async fn put_authors(
        &self,
        doc: &DocumentId,
        authors: &[concord::storage::ChangeAuthor],
    ) -> StorageResult<()> {
        self.inner.put_authors(doc, authors).await
    }

    async fn authors(
        &self,
        doc: &DocumentId,
    ) -> StorageResult<Vec<concord::storage::ChangeAuthor>> {
        self.inner.authors(doc).await
    }

    async fn add_owned_doc(&self, principal: &str, doc: &DocumentId) -> StorageResult<()> {
        self.inner.add_owned_doc(principal, doc).await
    }

    async fn owned_docs(
        &self,
        principal: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StorageResult<Vec<concord::storage::OwnedDoc>> {
        self.inner.owned_docs(principal, after, limit).await
    }

    async fn expire_sync_states(&self, before_ms: u64) -> StorageResult<u64> {
        self.inner.expire_sync_states(before_ms).await
    }

    async fn heads_index(&self) -> StorageResult<Option<Vec<(DocumentId, Vec<u8>)>>> {
        self.inner.heads_index().await
    }

    /// One observation per batch: its commit is what every write in it waited for.
    async fn write_batch(&self, ops: &[WriteOp<'_>]) -> StorageResult<()> {
        let t = Instant::now();
        let r = self.inner.write_batch(ops).await;
        self.observe(t);
        r
    }
}

/// Sets a gauge from a count.
pub fn set_count(g: &Gauge, n: usize) {
    g.set(i64::try_from(n).unwrap_or(i64::MAX));
}

/// Increments/decrements the connection gauge for the lifetime of a guard.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<Metrics>);

impl ConnectionGuard {
    /// Counts one open connection until dropped.
    pub fn new(m: Arc<Metrics>) -> Self {
        m.connections.inc();
        Self(m)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}
