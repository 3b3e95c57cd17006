//! What an operator sees of region links, with real `concord serve` processes on 127.0.0.1:
//! `/admin/replication` shows a cut link as `down` (with its last error and next retry) and
//! `up` again soon after the network heals, a silent link as `stalled`, and traffic counters
//! (in `/admin/replication` and `/metrics`) that keep growing across reconnects.
//!
//! Run: `cargo test -p concord-tests --test region_ops` (builds the `concord` binary if needed,
//! or uses `CONCORD_BIN`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use concord_tests::proxy::Proxy;
use concord_tests::region::{Region, http_get, replication};
use serde_json::Value;

/// Region r1 dialling region r0 through a proxy.
struct Pair {
    r0: Region,
    r1: Region,
    proxy: Proxy,
    token: String,
    /// The URL r1 dials (the proxy).
    url: String,
}

impl Pair {
    /// Started, with r1's link to r0 up.
    async fn up(dir: &std::path::Path, r1_extra: &[&str], limit: Duration) -> Self {
        let p = Self::start(dir, r1_extra).await;
        wait_peer(p.r1.port, &p.token, &p.url, limit, "link up", |v| {
            v["state"] == "up"
        })
        .await;
        p
    }

    async fn start(dir: &std::path::Path, r1_extra: &[&str]) -> Self {
        let mut r0 = Region::new(dir, "r0", vec![]);
        let token = r0.start();
        let proxy = Proxy::start(r0.port).await.unwrap();
        let url = format!("ws://127.0.0.1:{}/sync", proxy.port());
        let mut r1 = Region::new(dir, "r1", vec![url.clone()]);
        r1.extra = r1_extra.iter().map(|s| (*s).to_owned()).collect();
        r1.start();
        Self {
            r0,
            r1,
            proxy,
            token,
            url,
        }
    }
}

/// The entry of `/admin/replication` for the peer dialled at `url`.
async fn peer(port: u16, token: &str, url: &str) -> Value {
    let status = replication(port, token).await;
    status["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["url"] == url).cloned())
        .unwrap_or_else(|| panic!("no peer {url} in {status}"))
}

/// Polls the peer entry until `pred` holds (bounded by `limit`); returns it and the time taken.
async fn wait_peer(
    port: u16,
    token: &str,
    url: &str,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let p = peer(port, token, url).await;
        if pred(&p) {
            return (p, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "{what} not seen within {limit:?}: {p}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn total(p: &Value, field: &str) -> u64 {
    p["totals"][field].as_u64().unwrap_or(0)
}

/// The value of the Prometheus series `name{region="<region>"}`.
fn metric(text: &str, name: &str, region: &str) -> Option<u64> {
    let prefix = format!("{name}{{region=\"{region}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_shows_down_then_up_soon_after_healing_and_counters_survive() {
    let dir = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(20);
    let mut t = Pair::up(dir.path(), &[], limit).await;

    let (p, _) = wait_peer(t.r1.port, &t.token, &t.url, limit, "link up", |p| {
        p["state"] == "up" && total(p, "bytes_out") > 0
    })
    .await;
    assert_eq!(p["region"], "r0", "{p}");
    assert!(p["connection"]["storage_id"].is_string(), "{p}");
    let before = total(&p, "bytes_out");

    t.proxy.cut();
    let (p, took) = wait_peer(t.r1.port, &t.token, &t.url, limit, "link down", |p| {
        p["state"] == "down"
    })
    .await;
    eprintln!("cut seen as down after {took:?}: {p}");
    assert!(p["last_error"].is_string(), "a down link says why: {p}");
    assert!(p["down_since_unix_ms"].is_u64(), "{p}");
    assert!(p["next_retry_ms"].is_u64(), "{p}");
    assert!(
        total(&p, "bytes_out") >= before,
        "totals survive the link: {p}"
    );
    // The peer that was dialled lists the region it saw, down, too (once its own end of the
    // cut connection has closed: the proxy closes the two ends one after the other).
    let start = Instant::now();
    loop {
        let seen = replication(t.r0.port, &t.token).await;
        let r1_at_r0 = seen["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["region"] == "r1").cloned())
            .unwrap_or_else(|| panic!("r0 forgot r1: {seen}"));
        if r1_at_r0["state"] == "down" {
            break;
        }
        assert!(start.elapsed() < limit, "r0 never saw r1 down: {seen}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Long enough for an uncapped backoff to grow past several seconds.
    let (p, _) = wait_peer(t.r1.port, &t.token, &t.url, limit, "several retries", |p| {
        p["attempts"].as_u64().unwrap_or(0) >= 5
    })
    .await;
    assert!(
        p["next_retry_ms"].as_u64().unwrap_or(u64::MAX) <= 1_500,
        "region link backoff is capped low: {p}"
    );
    t.proxy.heal();
    let (_, took) = wait_peer(t.r1.port, &t.token, &t.url, limit, "link up again", |p| {
        p["state"] == "up"
    })
    .await;
    eprintln!("healed link up again after {took:?}");
    assert!(
        took < Duration::from_secs(4),
        "a healed region link comes back within about the backoff cap (1 s), took {took:?}"
    );
    // Counters keep growing across the reconnect: the new link adds to the old one's.
    let (p, _) = wait_peer(
        t.r1.port,
        &t.token,
        &t.url,
        limit,
        "traffic on the new link",
        |p| {
            p["connection"]["bytes_out"].as_u64().unwrap_or(0) > 0 && total(p, "bytes_out") > before
        },
    )
    .await;
    assert!(total(&p, "links_ended") >= 1, "{p}");
    assert!(
        total(&p, "bytes_out") > p["connection"]["bytes_out"].as_u64().unwrap_or(0),
        "the totals include the link that ended: {p}"
    );
    let metrics = http_get(t.r1.port, "/metrics", &t.token).await;
    let counted = metric(&metrics, "concord_region_bytes_out_total", "r0")
        .unwrap_or_else(|| panic!("no cumulative counter in /metrics:\n{metrics}"));
    assert!(counted > before, "{counted} <= {before}");
    assert_eq!(metric(&metrics, "concord_region_link_up", "r0"), Some(1));
    t.r1.kill9();
    t.r0.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_shows_stalled_and_is_redialled() {
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--region-stall-secs", "2"];
    let limit = Duration::from_secs(20);
    let mut t = Pair::up(dir.path(), &extra, limit).await;

    t.proxy.freeze(); // TCP stays open, nothing passes
    let (p, took) = wait_peer(t.r1.port, &t.token, &t.url, limit, "link stalled", |p| {
        p["state"] == "stalled"
    })
    .await;
    eprintln!("frozen link seen as stalled after {took:?}: {p}");
    assert!(p["idle_ms"].as_u64().unwrap_or(0) >= 2_000, "{p}");
    let metrics = http_get(t.r1.port, "/metrics", &t.token).await;
    assert_eq!(metric(&metrics, "concord_region_link_up", "r0"), Some(0));
    assert_eq!(
        metric(&metrics, "concord_region_link_stalled", "r0"),
        Some(1)
    );

    t.proxy.thaw(); // new connections pass; the silenced one stays silent for good
    let (p, took) = wait_peer(t.r1.port, &t.token, &t.url, limit, "link redialled", |p| {
        p["state"] == "up" && p["totals"]["links_ended"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    eprintln!("stalled link redialled and up after {took:?}: {p}");
    t.r1.kill9();
    t.r0.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regions_2_wait_behind_an_isolated_region_fails_fast_and_says_why() {
    use automerge::ROOT;
    use automerge::transaction::Transactable;
    use concord::core::Durability;
    use concord::{Repo, RepoConfig, RepoError};

    let dir = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(20);
    let mut t = Pair::up(dir.path(), &[], limit).await;
    let client = Repo::open_sqlite(
        dir.path().join("client.db"),
        RepoConfig {
            servers: vec![t.r0.url(&t.token)],
            ..RepoConfig::default()
        },
    )
    .await
    .unwrap();
    let h = client.create().await.unwrap();
    h.change(|tx| tx.put(ROOT, "before", 1)).await.unwrap();
    h.wait_durable(Durability::Regions(2), limit)
        .await
        .expect("with the link up, regions:2 is reached");

    t.proxy.cut(); // r0 (the client's region) is cut off from r1
    h.change(|tx| tx.put(ROOT, "during", 2)).await.unwrap();
    let timeout = Duration::from_secs(60);
    let start = Instant::now();
    let err = h
        .wait_durable(Durability::Regions(2), timeout)
        .await
        .expect_err("regions:2 cannot be reached while r0 is isolated");
    let took = start.elapsed();
    eprintln!("isolated regions:2 wait failed after {took:?}: {err}");
    assert!(
        matches!(err, RepoError::RegionsUnreachable { .. }),
        "a typed error saying why, not a timeout: {err:?}"
    );
    assert!(err.to_string().contains("links down to: r1"), "{err}");
    assert!(
        took < timeout / 4,
        "fails fast (the server knows its links are down), took {took:?}"
    );

    t.proxy.heal();
    h.wait_durable(Durability::Regions(2), limit)
        .await
        .expect("once the link heals, the write made while isolated reaches regions:2");
    client.shutdown().await;
    t.r1.kill9();
    t.r0.kill9();
}
