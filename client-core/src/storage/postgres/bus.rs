//! [`PgBus`]: the cluster bus on PostgreSQL `LISTEN`/`NOTIFY`.
//!
//! One background task holds a dedicated listening connection. It delivers every notice from
//! other nodes to every subscriber (never this node's own: notices carry the sending node's id),
//! and checks that connection by sending a ping (`pg_notify` to the channel) on it every
//! [`PgBusSettings::ping_interval`]: when the connection fails, or a ping is not answered within
//! [`PgBusSettings::ping_timeout`] (a connection that died without a word), it reconnects with
//! backoff, `LISTEN`s again and only then sends [`BusEvent::Gap`] to every subscriber, so
//! that what they re-read covers everything they may have missed. A subscriber whose queue was
//! full when a notice came also gets a `Gap` (as soon as its queue has room) instead of that
//! notice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::mpsc;

use super::config::one_line;
use super::error::PgOpenError;
use super::notice::{self, Payload};
use super::pool;
use super::{PostgresStorage, target_of};
use crate::repo::{BusError, BusEvent, BusNotice, ClusterBus};

/// Tuning of a [`PgBus`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgBusSettings {
    /// How often the bus pings PostgreSQL on its listening connection.
    pub ping_interval: Duration,
    /// A ping not answered after this long means the listening connection is dead.
    pub ping_timeout: Duration,
    /// Longest wait between two reconnection attempts (the first waits 100 ms, then doubling).
    pub max_backoff: Duration,
    /// Events queued per subscriber before it is sent a [`BusEvent::Gap`] instead.
    pub subscriber_capacity: usize,
}

impl Default for PgBusSettings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(2),
            ping_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            subscriber_capacity: 4096,
        }
    }
}

/// A [`ClusterBus`] on PostgreSQL `LISTEN`/`NOTIFY`; see the module docs.
#[derive(Debug)]
pub struct PgBus {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Subscriber {
    tx: mpsc::Sender<BusEvent>,
    /// An event was dropped because the queue was full: a `Gap` is owed.
    lost: bool,
}

#[derive(Debug)]
struct Inner {
    /// For `pg_notify` of published notices: two connections, apart from the storage's.
    publish: PgPool,
    /// How long a publish may take.
    deadline: Duration,
    options: PgConnectOptions,
    channel: String,
    node: String,
    notifies_commits: bool,
    connect_timeout: Duration,
    settings: PgBusSettings,
    connected: AtomicBool,
    reconnects: AtomicU64,
    dropped: AtomicU64,
    last_rtt_us: AtomicU64,
    /// Commit notices from other nodes that carried their commit time, and the sum and last of
    /// their lags (commit on that node to delivery here), in milliseconds.
    lag_count: AtomicU64,
    lag_sum_ms: AtomicU64,
    lag_last_ms: AtomicU64,
    subscribers: Mutex<Vec<Subscriber>>,
}

/// A listening connection (its own one-connection pool, closed with it).
struct Listener {
    pool: PgPool,
    listener: PgListener,
}

impl PgBus {
    /// Starts a bus on the database and channel of `storage`, as `storage`'s node, with default
    /// settings. `storage` must have been opened with [`PostgresConfig::notify`](super::PostgresConfig)
    /// set; its commits are then announced by the storage itself (`notifies_commits() == true`).
    /// Returns once the bus is listening: every commit after that is heard.
    pub async fn start(storage: &PostgresStorage) -> Result<Self, PgOpenError> {
        Self::start_with(storage, PgBusSettings::default()).await
    }

    /// [`PgBus::start`] with `settings`.
    pub async fn start_with(
        storage: &PostgresStorage,
        settings: PgBusSettings,
    ) -> Result<Self, PgOpenError> {
        let notify = storage.notify().ok_or_else(|| {
            PgOpenError::InvalidConfig("the bus needs a storage opened with notify set".into())
        })?;
        let config = storage.config();
        let options = storage.connect_options().clone();
        let inner = Arc::new(Inner {
            publish: pool::lazy_pool(config, 2)?,
            deadline: pool::deadline(config),
            options,
            channel: notify.channel.clone(),
            node: notify.node.clone(),
            notifies_commits: true,
            connect_timeout: config.connect_timeout,
            settings,
            connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_rtt_us: AtomicU64::new(0),
            lag_count: AtomicU64::new(0),
            lag_sum_ms: AtomicU64::new(0),
            lag_last_ms: AtomicU64::new(0),
            subscribers: Mutex::new(Vec::new()),
        });
        let listener = inner.listen().await.map_err(|e| {
            PgOpenError::from_connect(&target_of(&inner.options), inner.connect_timeout, e)
        })?;
        inner.connected.store(true, Ordering::Release);
        let task = tokio::spawn(Arc::clone(&inner).run(listener));
        Ok(Self { inner, task })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// How many times the listening connection was re-established (each one sent a `Gap`).
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// How many events were not queued because a subscriber's queue was full (each such
    /// subscriber was, or will be, sent a `Gap` instead).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// The round trip of the last ping (from sending a `NOTIFY` to its delivery back to this
    /// node), if one came back yet.
    pub fn last_ping_rtt(&self) -> Option<Duration> {
        match self.inner.last_rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

/// Bus lag: from a commit on another node (its wall clock when it built the notice) to the
/// delivery of the notice here, over every commit notice this node received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusLag {
    /// Commit notices measured.
    pub count: u64,
    /// Sum of their lags, in milliseconds.
    pub sum_ms: u64,
    /// The last one's lag, in milliseconds.
    pub last_ms: u64,
}

impl PgBus {
    /// The lag of commit notices from other nodes so far (see [`BusLag`]).
    pub fn commit_lag(&self) -> BusLag {
        BusLag {
            count: self.inner.lag_count.load(Ordering::Relaxed),
            sum_ms: self.inner.lag_sum_ms.load(Ordering::Relaxed),
            last_ms: self.inner.lag_last_ms.load(Ordering::Relaxed),
        }
    }
}

impl Drop for PgBus {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait::async_trait]
impl ClusterBus for PgBus {
    fn notifies_commits(&self) -> bool {
        self.inner.notifies_commits
    }

    async fn publish(&self, notice: BusNotice) -> Result<(), BusError> {
        let payload = notice::encode(&notice).map_err(BusError::TooLarge)?;
        match tokio::time::timeout(self.inner.deadline, self.inner.notify(&payload)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BusError::Unavailable(one_line(&e))),
            Err(_) => Err(BusError::Unavailable(format!(
                "no answer within {:?}",
                self.inner.deadline
            ))),
        }
    }

    fn subscribe(&self) -> mpsc::Receiver<BusEvent> {
        let (tx, rx) = mpsc::channel(self.inner.settings.subscriber_capacity.max(1));
        self.inner
            .subscribers()
            .push(Subscriber { tx, lost: false });
        rx
    }

    fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }
}

impl Inner {
    fn subscribers(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `payload` on the channel (autocommit: delivered at once).
    async fn notify(&self, payload: &str) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.channel)
            .bind(payload)
            .execute(&self.publish)
            .await
            .map(|_| ())
    }

    /// Opens a listening connection, within the connect timeout.
    async fn listen(&self) -> Result<Listener, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.connect_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            // A listening connection given back is closed, never pinged (it may be silent).
            .after_release(|_, _| Box::pin(async { Ok(false) }))
            .connect_lazy_with(self.options.clone());
        let attempt = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.eager_reconnect(false);
            listener.ignore_pool_close_event(true);
            listener.listen(&self.channel).await?;
            Ok(listener)
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(listener)) => Ok(Listener { pool, listener }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    /// The background task: listen until the connection fails, reconnect, `Gap`, repeat.
    async fn run(self: Arc<Self>, mut current: Listener) {
        loop {
            let why = self.receive(&mut current.listener).await;
            self.connected.store(false, Ordering::Release);
            tracing::warn!(node = %self.node, reason = %why, "cluster bus: listening connection lost; reconnecting");
            current.close().await;
            let mut backoff = Duration::from_millis(100);
            current = loop {
                tokio::time::sleep(backoff).await;
                match self.listen().await {
                    Ok(l) => break l,
                    Err(e) => {
                        tracing::debug!(error = %e, "cluster bus: reconnect failed");
                        backoff = (backoff * 2).min(self.settings.max_backoff);
                    }
                }
            };
            self.connected.store(true, Ordering::Release);
            self.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(node = %self.node, "cluster bus: listening again; subscribers re-read");
            self.broadcast(BusEvent::Gap);
        }
    }

    /// Delivers notifications until the connection fails or stops answering pings; returns why.
    ///
    /// The ping is a `pg_notify` to the channel on the listening connection itself: its answer
    /// proves the connection alive, and its notification coming back measures the round trip.
    async fn receive(&self, listener: &mut PgListener) -> String {
        let mut ticker = tokio::time::interval(self.settings.ping_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        let mut outstanding: Option<(u64, Instant)> = None;
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(n)) => self.deliver(n.payload(), &mut outstanding),
                    Ok(None) => return "connection closed".into(),
                    Err(e) => return e.to_string(),
                },
                _ = ticker.tick() => {
                    self.flush_gaps();
                    seq += 1;
                    let ping = notice::ping(&self.node, seq);
                    let sent = Instant::now();
                    let query = sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(&self.channel)
                        .bind(&ping)
                        .execute(&mut *listener);
                    match tokio::time::timeout(self.settings.ping_timeout, query).await {
                        Ok(Ok(_)) => outstanding = Some((seq, sent)),
                        Ok(Err(e)) => return e.to_string(),
                        Err(_) => {
                            return format!("no answer to a ping within {:?}", self.settings.ping_timeout);
                        }
                    }
                }
            }
        }
    }

    /// Handles one payload: own pings close the round trip, other nodes' notices go out.
    fn deliver(&self, payload: &str, outstanding: &mut Option<(u64, Instant)>) {
        let Some((decoded, sent)) = notice::decode_timed(payload) else {
            tracing::debug!(
                payload,
                "cluster bus: ignoring a payload that is not a notice"
            );
            return;
        };
        match decoded {
            Payload::Ping { node, seq } => {
                let Some((expected, pinged)) = *outstanding else {
                    return;
                };
                if node == self.node && seq == expected {
                    let us = u64::try_from(pinged.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.last_rtt_us.store(us.max(1), Ordering::Relaxed);
                    *outstanding = None;
                }
            }
            Payload::Notice(n) if n.node() != self.node => {
                if let Some(sent) = sent {
                    let lag = notice::lag_ms(sent);
                    self.lag_count.fetch_add(1, Ordering::Relaxed);
                    self.lag_sum_ms.fetch_add(lag, Ordering::Relaxed);
                    self.lag_last_ms.store(lag, Ordering::Relaxed);
                }
                self.broadcast(BusEvent::Notice(n));
            }
            Payload::Notice(_) => {}
        }
    }

    /// Queues `event` for every subscriber; a full queue owes its subscriber a `Gap`.
    fn broadcast(&self, event: BusEvent) {
        self.subscribers().retain_mut(|s| {
            if s.lost {
                match s.tx.try_send(BusEvent::Gap) {
                    Ok(()) => s.lost = false,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        return true;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
                if event == BusEvent::Gap {
                    return true;
                }
            }
            match s.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.lost = true;
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Sends the `Gap`s owed to subscribers whose queues have room again.
    fn flush_gaps(&self) {
        self.subscribers().retain_mut(|s| {
            if !s.lost {
                return !s.tx.is_closed();
            }
            match s.tx.try_send(BusEvent::Gap) {
                Ok(()) => {
                    s.lost = false;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

impl Listener {
    async fn close(self) {
        drop(self.listener);
        // Closing waits for the connection to come back to the pool (it just did) and says
        // goodbye; a dead server does not answer, so do not wait long.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.pool.close()).await;
    }
}
