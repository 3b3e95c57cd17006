//! The registry of live nodes (table `concord_nodes`): each node writes a heartbeat every
//! [`HEARTBEAT`]; a node whose heartbeat is older than [`LIVE_FOR`] is dead. Times are the
//! database's clock, so the nodes' clocks need not agree.
//!
//! A node id is held with a session advisory lock (`node:<id>`, see [`super::lock`]) for as long
//! as the node runs: a second process with the same id is refused while the first one's
//! session lives, and a node restarted after a crash (`kill -9`, a dead machine once PostgreSQL
//! notices with its TCP keepalives) takes its id back at once, without waiting for its old
//! heartbeat to expire.
//!
//! ```no_run
//! # async fn demo(storage: concord::storage::postgres::PostgresStorage) -> Result<(), concord_server::cluster::ClusterError> {
//! use concord_server::cluster::registry::{Registration, live_nodes};
//! let me = Registration::register(&storage, "eu-1", "eu", "10.0.0.1:3030").await?;
//! for node in live_nodes(storage.pool()).await? {
//!     println!("{} in {} at {}", node.node, node.region, node.addr);
//! }
//! me.deregister().await;
//! # Ok(()) }
//! ```

use std::time::Duration;

use concord::storage::postgres::PostgresStorage;
use serde::Serialize;
use sqlx::{PgPool, Row};

use super::lock::AdvisoryLock;
use super::{ClusterError, db};

/// How often a node writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A node is live while its last heartbeat is younger than this.
pub const LIVE_FOR: Duration = Duration::from_secs(15);

/// One live node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// Its id.
    pub node: String,
    /// Its region.
    pub region: String,
    /// The address it listens on.
    pub addr: String,
    /// Its version.
    pub version: String,
    /// Seconds since it started.
    pub up_secs: i64,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: i64,
}

/// This node's row, kept fresh by a background task until [`Registration::deregister`] (or
/// until the process dies: the row then goes stale and the node counts as dead), and the lock on
/// its id.
#[derive(Debug)]
pub struct Registration {
    pool: PgPool,
    node: String,
    incarnation: String,
    task: tokio::task::JoinHandle<()>,
}

/// Writes the heartbeat of (`node`, `incarnation`) (the row is taken over from any earlier
/// incarnation: whoever calls this holds the id's lock); `false` when the row belongs to
/// another incarnation and `take_over` is false.
async fn beat(
    pool: &PgPool,
    node: &str,
    incarnation: &str,
    region: &str,
    addr: &str,
    take_over: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO concord_nodes (node, incarnation, region, addr, version) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (node) DO UPDATE SET \
           incarnation = EXCLUDED.incarnation, region = EXCLUDED.region, addr = EXCLUDED.addr, \
           version = EXCLUDED.version, heartbeat_at = now(), \
           started_at = CASE WHEN concord_nodes.incarnation = EXCLUDED.incarnation \
                             THEN concord_nodes.started_at ELSE now() END \
         WHERE concord_nodes.incarnation = EXCLUDED.incarnation OR $6",
    )
    .bind(node)
    .bind(incarnation)
    .bind(region)
    .bind(addr)
    .bind(env!("CARGO_PKG_VERSION"))
    .bind(take_over)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The lock that holds node id `node`.
fn lock_name(node: &str) -> String {
    format!("node:{node}")
}

impl Registration {
    /// Takes the id `node` (refused while another live process holds it), registers it and
    /// starts the heartbeat.
    pub async fn register(
        storage: &PostgresStorage,
        node: &str,
        region: &str,
        addr: &str,
    ) -> Result<Self, ClusterError> {
        let pool = storage.pool().clone();
        let options = storage.connect_options().clone();
        let timeout = storage.config().connect_timeout;
        let Some(lock) = AdvisoryLock::try_acquire(&options, &lock_name(node), timeout).await?
        else {
            let row = sqlx::query(
                "SELECT addr, extract(epoch FROM now() - heartbeat_at)::bigint \
                 FROM concord_nodes WHERE node = $1",
            )
            .bind(node)
            .fetch_optional(&pool)
            .await
            .map_err(db("register node"))?;
            return Err(ClusterError::DuplicateNode {
                node: node.to_owned(),
                addr: row
                    .as_ref()
                    .and_then(|r| r.try_get(0).ok())
                    .unwrap_or_else(|| "an unknown address".to_owned()),
                seen_secs: row.as_ref().and_then(|r| r.try_get(1).ok()).unwrap_or(0),
            });
        };
        let incarnation = format!("{:016x}", rand::random::<u64>());
        beat(&pool, node, &incarnation, region, addr, true)
            .await
            .map_err(db("register node"))?;
        let task = tokio::spawn(keep_alive(
            pool.clone(),
            options,
            timeout,
            lock,
            [node, &incarnation, region, addr].map(str::to_owned),
        ));
        Ok(Self {
            pool,
            node: node.to_owned(),
            incarnation,
            task,
        })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Stops the heartbeat, removes the row (a clean shutdown: the node is gone at once) and
    /// releases the id.
    pub async fn deregister(self) {
        self.task.abort();
        let gone = sqlx::query("DELETE FROM concord_nodes WHERE node = $1 AND incarnation = $2")
            .bind(&self.node)
            .bind(&self.incarnation)
            .execute(&self.pool)
            .await;
        if let Err(e) = gone {
            tracing::warn!(error = %e, "cannot remove this node from the registry; it expires");
        }
    }
}

/// The heartbeat, and the lock on the node id kept (taken again after its session was lost,
/// e.g. when PostgreSQL restarted).
async fn keep_alive(
    pool: PgPool,
    options: sqlx::postgres::PgConnectOptions,
    timeout: Duration,
    lock: AdvisoryLock,
    [node, incarnation, region, addr]: [String; 4],
) {
    let mut lock = Some(lock);
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.tick().await;
    loop {
        tick.tick().await;
        let held = match lock.as_mut() {
            Some(l) => l.is_held(timeout).await,
            None => false,
        };
        if !held {
            lock = match AdvisoryLock::try_acquire(&options, &lock_name(&node), timeout).await {
                Ok(Some(l)) => {
                    tracing::info!(%node, "node id lock taken again");
                    Some(l)
                }
                Ok(None) => {
                    tracing::error!(
                        %node,
                        "another live process holds this node id: node ids must be unique"
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take the node id lock; retrying");
                    None
                }
            };
        }
        match beat(&pool, &node, &incarnation, &region, &addr, lock.is_some()).await {
            Ok(true) => {}
            Ok(false) => tracing::error!(
                %node,
                "another live node took this node id: node ids must be unique"
            ),
            Err(e) => tracing::warn!(error = %e, "cluster heartbeat failed"),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every live node, by id.
pub async fn live_nodes(pool: &PgPool) -> Result<Vec<NodeInfo>, ClusterError> {
    let rows = sqlx::query(
        "SELECT node, region, addr, version, \
           extract(epoch FROM now() - started_at)::bigint, \
           (extract(epoch FROM now() - heartbeat_at) * 1000)::bigint \
         FROM concord_nodes WHERE heartbeat_at >= now() - make_interval(secs => $1) \
         ORDER BY node",
    )
    .bind(LIVE_FOR.as_secs_f64())
    .fetch_all(pool)
    .await
    .map_err(db("list nodes"))?;
    rows.iter()
        .map(|r| {
            Ok(NodeInfo {
                node: r.try_get(0)?,
                region: r.try_get(1)?,
                addr: r.try_get(2)?,
                version: r.try_get(3)?,
                up_secs: r.try_get(4)?,
                heartbeat_age_ms: r.try_get(5)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(db("list nodes"))
}
