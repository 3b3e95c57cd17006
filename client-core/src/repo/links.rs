//! Region link operability: the dial state of every configured peer URL, the time of the last
//! frame received on every socket, and the per-peer-region view built from them and from the
//! cores ([`Repo::region_peers`], shown by the server's `/admin/replication` and `/metrics`).
//!
//! ```no_run
//! # async fn demo(repo: concord::Repo) {
//! for p in repo.region_peers() {
//!     println!("{:?} {:?} {} bytes out in total", p.region, p.state, p.totals.bytes_out);
//! }
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Repo;
use super::transport::Backoff;
use crate::core::{RegionLinkStatus, RegionTraffic};
use crate::id::ConnId;

/// How region links are dialled and watched (see [`Repo::connect_region`]).
#[derive(Debug, Clone)]
pub struct RegionLinkSettings {
    /// Reconnect backoff (region links are few and known: retry often).
    pub backoff: Backoff,
    /// WebSocket ping period on links we dial (the peer's pongs, and its pings, show the link
    /// is alive).
    pub ping: Duration,
    /// A link with no frame received for this long is reported `stalled`.
    pub stalled_after: Duration,
    /// A link we dialled with no frame received for this long is closed and dialled again.
    pub drop_after: Duration,
}

impl Default for RegionLinkSettings {
    fn default() -> Self {
        Self {
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
                jitter: 0.3,
            },
            ping: Duration::from_secs(1),
            stalled_after: Duration::from_secs(5),
            drop_after: Duration::from_secs(15),
        }
    }
}

/// The state of the link to a peer region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkState {
    /// Connected, frames arriving.
    Up,
    /// A first connection attempt is under way.
    Connecting,
    /// Not connected (see `down_ms`, `last_error`, `next_retry_ms`).
    Down,
    /// Connected, but no frame received for `stalled_after`.
    Stalled,
    /// Not dialled by this node: another node of the cluster holds the link.
    Standby,
}

impl LinkState {
    /// `up`, `connecting`, `down` or `stalled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Connecting => "connecting",
            Self::Down => "down",
            Self::Stalled => "stalled",
            Self::Standby => "standby",
        }
    }
}

/// One peer region, configured (a URL we dial) or seen (it dialled us), as seen from here.
#[derive(Debug, Clone)]
pub struct PeerRegionStatus {
    /// Its region name (`None`: a configured URL that has not connected yet).
    pub region: Option<String>,
    /// The URL we dial it at, without its query (`None`: it dials us).
    pub url: Option<String>,
    /// The state of the link.
    pub state: LinkState,
    /// Milliseconds since the link went down (when down or connecting after a failure).
    pub down_ms: Option<u64>,
    /// The last connection error or why the last link ended.
    pub last_error: Option<String>,
    /// Milliseconds until the next connection attempt (links we dial, while down).
    pub next_retry_ms: Option<u64>,
    /// Failed connection attempts in the current outage.
    pub attempts: u32,
    /// Milliseconds since a frame was last received on the live link.
    pub idle_ms: Option<u64>,
    /// The live link's figures (this connection only).
    pub link: Option<RegionLinkStatus>,
    /// Traffic of every link to this region since the server started (survives reconnects).
    pub totals: RegionTraffic,
}

#[derive(Debug, Clone, Default)]
struct DialState {
    conn: Option<ConnId>,
    region: Option<String>,
    down_since: Option<u64>,
    last_error: Option<String>,
    next_retry_at: Option<u64>,
    attempts: u32,
    standby: bool,
}

/// The dial state of one configured URL, updated by its reconnect loop.
#[derive(Debug)]
pub(crate) struct Dialer {
    url: String,
    state: Mutex<DialState>,
}

impl Dialer {
    pub(super) fn new(url: &str) -> Arc<Self> {
        Arc::new(Self {
            url: url.split('?').next().unwrap_or(url).to_owned(),
            state: Mutex::default(),
        })
    }

    fn with(&self, f: impl FnOnce(&mut DialState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    /// Another node of the cluster holds the link (`true`), or this one took it (`false`).
    pub(super) fn standby(&self, on: bool) {
        self.with(|s| {
            s.standby = on;
            s.conn = None;
            s.down_since = None;
            s.next_retry_at = None;
            s.attempts = 0;
        });
    }

    pub(super) fn connected(&self, conn: ConnId) {
        self.with(|s| {
            s.conn = Some(conn);
            s.down_since = None;
            s.next_retry_at = None;
            s.attempts = 0;
        });
    }

    /// The link ended or an attempt failed at `now`; the next attempt is due at `retry_at`.
    pub(super) fn failed(&self, now: u64, error: String, retry_at: u64, attempt: bool) {
        self.with(|s| {
            s.conn = None;
            s.down_since.get_or_insert(now);
            s.last_error = Some(error);
            s.next_retry_at = Some(retry_at);
            if attempt {
                s.attempts = s.attempts.saturating_add(1);
            }
        });
    }
}

/// When the last frame arrived on a socket (milliseconds on the repo clock).
#[derive(Debug, Clone)]
pub struct Activity {
    start: Instant,
    last_rx: Arc<AtomicU64>,
}

impl Activity {
    pub(super) fn new(start: Instant) -> Self {
        let a = Self {
            start,
            last_rx: Arc::default(),
        };
        a.touch();
        a
    }

    fn elapsed(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A frame (data, ping or pong) arrived.
    pub fn touch(&self) {
        self.last_rx.store(self.elapsed(), Ordering::Relaxed);
    }

    /// Time since the last frame arrived.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(
            self.elapsed()
                .saturating_sub(self.last_rx.load(Ordering::Relaxed)),
        )
    }
}

/// Re-reads the heads index from storage into every shard (a cluster node taking over a region
/// link: the other nodes' commits of documents not resident here are in storage only).
pub(super) async fn refresh_heads_index(shared: &super::driver::Shared) {
    match shared.storage.heads_index().await {
        Ok(Some(entries)) => {
            shared.each_shard(|c| c.refresh_heads_index(entries.iter().cloned()));
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot re-read the heads index; digests may differ until documents are loaded")
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Repo {
    /// Replication status of every live region link (region servers), summed over the shards.
    pub fn region_status(&self) -> Vec<RegionLinkStatus> {
        let now = self.shared.now();
        let mut merged: Vec<RegionLinkStatus> = Vec::new();
        for part in self.shared.each_shard(|c| c.region_status(now)) {
            for s in part {
                match merged.iter_mut().find(|m| m.conn == s.conn) {
                    Some(m) => {
                        m.docs_behind += s.docs_behind;
                        m.oldest_unacked_ms = m.oldest_unacked_ms.max(s.oldest_unacked_ms);
                        m.digest_differences += s.digest_differences;
                        m.digest_age_ms = m.digest_age_ms.max(s.digest_age_ms);
                        m.frames_in += s.frames_in;
                        m.frames_out += s.frames_out;
                        m.bytes_in += s.bytes_in;
                        m.bytes_out += s.bytes_out;
                    }
                    None => merged.push(s),
                }
            }
        }
        merged
    }

    /// Every peer region this server dials or has seen, with the state of its link, the live
    /// link's figures and the traffic of all its links so far.
    pub fn region_peers(&self) -> Vec<PeerRegionStatus> {
        let now = self.shared.now();
        let stalled_after = ms(self.config.region_links.stalled_after);
        let live = self.region_status();
        let mut ended: BTreeMap<String, RegionTraffic> = BTreeMap::new();
        for part in self.shared.each_shard(|c| c.region_traffic().clone()) {
            for (name, t) in part {
                ended.entry(name).or_default().merge(&t);
            }
        }
        let idle = |conn: ConnId| self.shared.activity(conn).map(|a| ms(a.idle()));
        let view = |l: &RegionLinkStatus| {
            let idle_ms = idle(l.conn);
            let state = if idle_ms.is_some_and(|i| i >= stalled_after) {
                LinkState::Stalled
            } else {
                LinkState::Up
            };
            (state, idle_ms)
        };
        let mut out: Vec<PeerRegionStatus> = Vec::new();
        let dialers = self
            .shared
            .dialers
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        for d in dialers {
            let Ok(mut s) = d.state.lock() else { continue };
            let link = s
                .conn
                .and_then(|c| live.iter().find(|l| l.conn == c).cloned());
            if let Some(l) = &link {
                s.region = Some(l.region.clone());
            }
            let (state, idle_ms) = match (&link, s.conn) {
                (Some(l), _) => view(l),
                // Connected, handshake under way.
                (None, Some(_)) => (LinkState::Connecting, None),
                (None, None) if s.standby => (LinkState::Standby, None),
                (None, None) if s.next_retry_at.is_some() => (LinkState::Down, None),
                (None, None) => (LinkState::Connecting, None),
            };
            out.push(PeerRegionStatus {
                region: s.region.clone(),
                url: Some(d.url.clone()),
                state,
                down_ms: s.down_since.map(|t| now.saturating_sub(t)),
                last_error: s.last_error.clone(),
                next_retry_ms: s.next_retry_at.map(|t| t.saturating_sub(now)),
                attempts: s.attempts,
                idle_ms,
                link,
                totals: RegionTraffic::default(),
            });
        }
        // Links that dialled us (or a second link of a dialled region).
        for l in &live {
            if out
                .iter()
                .any(|p| p.link.as_ref().is_some_and(|x| x.conn == l.conn))
            {
                continue;
            }
            let (state, idle_ms) = view(l);
            out.push(PeerRegionStatus {
                region: Some(l.region.clone()),
                url: None,
                state,
                down_ms: None,
                last_error: None,
                next_retry_ms: None,
                attempts: 0,
                idle_ms,
                link: Some(l.clone()),
                totals: RegionTraffic::default(),
            });
        }
        // Regions seen before, with no link now and no URL of ours.
        for (name, t) in &ended {
            if out.iter().any(|p| p.region.as_deref() == Some(name)) {
                continue;
            }
            out.push(PeerRegionStatus {
                region: Some(name.clone()),
                url: None,
                state: LinkState::Down,
                down_ms: t.last_ended.map(|e| now.saturating_sub(e)),
                last_error: Some("the link ended; the peer region dials us".into()),
                next_retry_ms: None,
                attempts: 0,
                idle_ms: None,
                link: None,
                totals: RegionTraffic::default(),
            });
        }
        // Totals per region: ended links plus live ones, on the region's first entry.
        let mut done = std::collections::BTreeSet::new();
        for p in &mut out {
            let Some(name) = p.region.clone() else {
                continue;
            };
            if !done.insert(name.clone()) {
                continue;
            }
            let mut t = ended.get(&name).copied().unwrap_or_default();
            for l in live.iter().filter(|l| l.region == name) {
                t.add_link(l);
            }
            p.totals = t;
        }
        out
    }

    /// Keeps one authenticated region link to `urls` (like [`Repo::connect_with_credentials`])
    /// with the region link settings of [`super::RepoConfig::region_links`]: a low reconnect
    /// backoff, frequent pings, and a link that stays silent past `drop_after` is dialled again.
    /// Its state shows in [`Repo::region_peers`].
    pub fn connect_region(&self, urls: Vec<String>, credentials: super::Credentials) {
        self.connect_region_while(urls, credentials, None);
    }

    /// Like [`Repo::connect_region`], dialling only while `active` is true (e.g. while this node
    /// of a cluster holds the link's lock; the link shows `standby` otherwise).
    pub fn connect_region_while(
        &self,
        urls: Vec<String>,
        credentials: super::Credentials,
        active: Option<tokio::sync::watch::Receiver<bool>>,
    ) {
        let settings = self.config.region_links.clone();
        let dialer = Dialer::new(urls.first().map_or("", String::as_str));
        if let Ok(mut d) = self.shared.dialers.lock() {
            d.push(dialer.clone());
        }
        let opts = super::transport::DialOptions {
            backoff: settings.backoff,
            ping: settings.ping,
            drop_after: Some(settings.drop_after),
            dialer: Some(dialer),
            active,
        };
        let task = tokio::spawn(super::transport::run_client_with(
            self.shared.clone(),
            urls,
            opts,
            self.config.limits.max_message_bytes,
            Some(credentials),
        ));
        self.spawn(task);
    }

    /// Peer regions whose link is up now (stalled links do not count).
    pub fn regions_reachable(&self) -> Vec<RegionLinkStatus> {
        let stalled_after = self.config.region_links.stalled_after;
        let mut up: Vec<RegionLinkStatus> = self
            .region_status()
            .into_iter()
            .filter(|l| {
                self.shared
                    .activity(l.conn)
                    .is_none_or(|a| a.idle() < stalled_after)
            })
            .collect();
        up.sort_by(|a, b| a.region.cmp(&b.region));
        up.dedup_by(|a, b| a.region == b.region);
        up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dialer_remembers_when_its_outage_began() {
        let d = Dialer::new("ws://h/sync?token=secret");
        assert_eq!(d.url, "ws://h/sync", "the query (a token) is not kept");
        d.failed(100, "refused".into(), 200, true);
        d.failed(250, "refused again".into(), 400, true);
        let s = d.state.lock().unwrap().clone();
        assert_eq!(s.down_since, Some(100));
        assert_eq!(s.attempts, 2);
        assert_eq!(s.last_error.as_deref(), Some("refused again"));
        d.connected(ConnId(7));
        let s = d.state.lock().unwrap().clone();
        assert_eq!(
            (s.down_since, s.attempts, s.conn),
            (None, 0, Some(ConnId(7)))
        );
    }

    #[test]
    fn region_link_backoff_stays_low() {
        let b = RegionLinkSettings::default().backoff;
        let mut rng = rand::rng();
        for attempt in 0..30 {
            assert!(b.delay(attempt, &mut rng) <= Duration::from_millis(1300));
        }
    }
}
