//! The HTTP listeners: an accept loop that bounds connections before anyone is authenticated.
//!
//! Every accepted socket first takes a *pending* slot, per client IP
//! (`--max-pending-connections-per-ip`, 32) and in total (`--max-pending-connections`, 512); a
//! socket over either cap is closed at once, before hyper reads a byte. The slot is released
//! when the socket becomes an admitted WebSocket (it then counts against the per-IP and
//! per-principal connection caps instead) or closes. hyper runs with a timer, so a client that
//! does not finish its request headers within `--header-read-timeout-secs` (10 s; the same bound
//! applies to an idle keep-alive connection) is disconnected. Together: slow, half-sent requests
//! hold at most the pending caps, for at most the header timeout, and never exhaust the
//! process's file descriptors; the soft descriptor limit is also raised to the hard one at start.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use super::admission::{Counts, Slot};
use super::metrics::Metrics;

/// How long shutdown waits for plain HTTP connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(10);
/// At most one warning per this period about refused connections (with a count).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The caps on connections that are not admitted yet.
#[derive(Debug)]
pub(super) struct Gate {
    counts: Arc<Counts>,
    per_ip: usize,
    total: usize,
    metrics: Arc<Metrics>,
    refused: Mutex<(Option<Instant>, u64)>,
}

/// The pending slots of one connection, released by the WebSocket upgrade once the connection
/// is admitted, or when the connection ends.
#[derive(Debug, Clone)]
pub struct Pending(Arc<Mutex<Option<PendingSlots>>>);

#[derive(Debug)]
struct PendingSlots {
    _ip: Slot,
    _total: Slot,
    metrics: Arc<Metrics>,
}

impl Drop for PendingSlots {
    fn drop(&mut self) {
        self.metrics.doors.pending_connections.dec();
    }
}

impl Pending {
    /// The connection is admitted: it no longer counts as pending.
    pub fn release(&self) {
        if let Ok(mut slots) = self.0.lock() {
            slots.take();
        }
    }
}

impl Gate {
    pub(super) fn new(per_ip: usize, total: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            counts: Arc::default(),
            per_ip,
            total,
            metrics,
            refused: Mutex::new((None, 0)),
        })
    }

    fn enter(&self, ip: IpAddr) -> Option<Pending> {
        let slots = self
            .counts
            .take(format!("ip:{ip}"), self.per_ip)
            .and_then(|ip_slot| {
                let total = self.counts.take("total".into(), self.total)?;
                Some((ip_slot, total))
            });
        let Some((ip_slot, total)) = slots else {
            self.refuse(ip);
            return None;
        };
        self.metrics.doors.pending_connections.inc();
        Some(Pending(Arc::new(Mutex::new(Some(PendingSlots {
            _ip: ip_slot,
            _total: total,
            metrics: self.metrics.clone(),
        })))))
    }

    fn refuse(&self, ip: IpAddr) {
        self.metrics.doors.refused_connections.inc();
        let Ok(mut r) = self.refused.lock() else {
            return;
        };
        r.1 += 1;
        if r.0.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                %ip,
                refused = r.1,
                per_ip = self.per_ip,
                total = self.total,
                "too many connections not yet admitted: closing new ones (--max-pending-connections-per-ip, --max-pending-connections)"
            );
            *r = (Some(Instant::now()), 0);
        }
    }
}

/// Raises the soft limit on open files to the hard limit (logged); failures are logged only.
pub fn raise_fd_limit() {
    #[cfg(unix)]
    {
        let before = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft);
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(now) => tracing::info!(before = ?before.ok(), now, "open-file limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
}

/// A transient `accept` error that concerns one connection only.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Serves `router` on `listener` until `shutdown` turns true, then lets plain HTTP requests in
/// flight finish (bounded) and returns. WebSocket connections end through the same signal.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    gate: Arc<Gate>,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let (close_tx, close_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = stopping(&mut shutdown) => break,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(pending) = gate.enter(remote.ip()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            req.extensions_mut().insert(pending.clone());
            router.clone().oneshot(req)
        });
        let mut shutdown = shutdown.clone();
        let close_rx = close_rx.clone();
        let metrics = gate.metrics.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stopping(&mut shutdown) => {
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            };
            match result {
                Err(e) if e.is_timeout() => {
                    metrics.doors.header_timeouts.inc();
                    tracing::debug!(%remote, "request headers not received in time: closed");
                }
                Err(e) => tracing::debug!(%remote, error = %e, "HTTP connection error"),
                Ok(()) => {}
            }
            drop(close_rx);
        });
    }
    drop(close_rx);
    if tokio::time::timeout(DRAIN, close_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after {DRAIN:?}; stopping anyway");
    }
}
