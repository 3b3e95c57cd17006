//! WebSocket transport over tokio-tungstenite: a reconnecting client and a per-socket pump.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::Rng;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::Repo;
use super::driver::Shared;

/// Reconnect backoff: exponential from `initial` to `max`, each delay scaled by a random factor
/// in `[1 - jitter, 1 + jitter]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Relative jitter (0.0 to 1.0).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The delay before attempt `n` (0-based), with jitter from `rng`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let exp = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempt.min(20)))
            .min(self.max);
        let j = self.jitter.clamp(0.0, 1.0);
        exp.mul_f64(rng.random_range((1.0 - j)..=(1.0 + j)))
    }
}

fn ws_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Server side of the WebSocket handshake with our limits.
pub(super) async fn accept(
    tcp: tokio::net::TcpStream,
    max_message: usize,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    tokio_tungstenite::tungstenite::Error,
> {
    let _ = tcp.set_nodelay(true);
    tokio_tungstenite::accept_async_with_config(tcp, Some(ws_config(max_message))).await
}

/// How a reconnect loop dials and watches its connection.
#[derive(Debug, Clone)]
pub(super) struct DialOptions {
    pub(super) backoff: Backoff,
    /// WebSocket ping period.
    pub(super) ping: Duration,
    /// Close the connection when no frame arrived for this long.
    pub(super) drop_after: Option<Duration>,
    /// Where the loop reports its state (region links).
    pub(super) dialer: Option<Arc<super::links::Dialer>>,
    /// Dial only while this is true (a cluster node holding the link's lock); the connection
    /// closes when it turns false.
    pub(super) active: Option<tokio::sync::watch::Receiver<bool>>,
}

impl DialOptions {
    /// A client connection: pings every 5 s, never dropped for silence.
    pub(super) fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            ping: Duration::from_secs(5),
            drop_after: None,
            dialer: None,
            active: None,
        }
    }
}

fn request(
    url: &str,
    credentials: Option<&super::Credentials>,
) -> Result<
    tokio_tungstenite::tungstenite::handshake::client::Request,
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request()?;
    if let Some(token) = credentials.and_then(|c| c()) {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            tokio_tungstenite::tungstenite::Error::Url(
                tokio_tungstenite::tungstenite::error::UrlError::UnableToConnect(
                    "credentials are not a valid header value".into(),
                ),
            )
        })?;
        req.headers_mut().insert("authorization", value);
    }
    Ok(req)
}

/// Keeps one connection up to the first reachable URL in `urls`, presenting a bearer token from
/// `credentials` on every attempt.
pub(super) async fn run_client_with(
    shared: Arc<Shared>,
    urls: Vec<String>,
    opts: DialOptions,
    max_message: usize,
    credentials: Option<super::Credentials>,
) {
    if urls.is_empty() {
        return;
    }
    let mut shutdown = shared.shutdown.subscribe();
    let mut attempt = 0u32;
    let mut idx = 0usize;
    let mut opts = opts;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Some(active) = opts.active.as_mut()
            && !*active.borrow()
        {
            if let Some(d) = &opts.dialer {
                d.standby(true);
            }
            tokio::select! {
                r = active.wait_for(|a| *a) => if r.is_err() { return },
                _ = super::driver::until_shutdown(&mut shutdown) => return,
            }
            if let Some(d) = &opts.dialer {
                d.standby(false);
            }
            super::links::refresh_heads_index(&shared).await;
            attempt = 0;
        }
        let full = &urls[idx % urls.len()];
        // Logged without its query, which may carry a token.
        let url = full.split_once('?').map_or(full.as_str(), |(base, _)| base);
        let req = match request(full, credentials.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%url, error = %e, "cannot dial this URL");
                return;
            }
        };
        let connect =
            tokio_tungstenite::connect_async_with_config(req, Some(ws_config(max_message)), true);
        let (error, failed_attempt) =
            match tokio::time::timeout(Duration::from_secs(10), connect).await {
                Ok(Ok((ws, _))) => {
                    tracing::info!(%url, "connected");
                    attempt = 0;
                    let why = run_socket_with(shared.clone(), ws, false, &mut opts).await;
                    tracing::info!(%url, why, "connection ended");
                    (format!("connection ended: {why}"), false)
                }
                Ok(Err(e)) => {
                    // Loud once per outage, quiet while retrying.
                    if attempt == 0 {
                        tracing::warn!(%url, error = %e, "connect failed; retrying with backoff");
                    } else {
                        tracing::debug!(%url, error = %e, attempt, "connect failed");
                    }
                    idx += 1;
                    (format!("connect failed: {e}"), true)
                }
                Err(_) => {
                    tracing::warn!(%url, "connect timed out");
                    idx += 1;
                    ("connect timed out after 10 s".to_owned(), true)
                }
            };
        let delay = opts.backoff.delay(attempt, &mut rand::rng());
        attempt = attempt.saturating_add(1);
        if let Some(d) = &opts.dialer {
            let now = shared.now();
            let retry_at = now.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
            d.failed(now, error, retry_at, failed_attempt);
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = super::driver::until_shutdown(&mut shutdown) => return,
        }
    }
}

/// Pumps one WebSocket until it closes.
pub(super) async fn run_socket<S>(
    shared: Arc<Shared>,
    ws: tokio_tungstenite::WebSocketStream<S>,
    inbound: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let mut opts = DialOptions::new(Backoff::default());
    run_socket_with(shared, ws, inbound, &mut opts).await;
}

/// Sends `msg`, giving up after `limit` (a stalled peer must not block the loop for ever).
async fn send_bounded<S>(
    sink: &mut S,
    msg: WsMessage,
    limit: Option<Duration>,
) -> Result<(), &'static str>
where
    S: futures::Sink<WsMessage> + Unpin,
{
    let send = sink.send(msg);
    let sent = match limit {
        Some(l) => tokio::time::timeout(l, send)
            .await
            .map_err(|_| "stalled: a write did not complete within the drop timeout")?,
        None => send.await,
    };
    sent.map_err(|_| "write failed")
}

/// Pumps one WebSocket until it closes; says why it ended.
async fn run_socket_with<S>(
    shared: Arc<Shared>,
    ws: tokio_tungstenite::WebSocketStream<S>,
    inbound: bool,
    opts: &mut DialOptions,
) -> &'static str
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let repo = Repo {
        shared: shared.clone(),
        tasks: Arc::default(),
        config: Arc::default(),
    };
    let mut att = repo.attach(inbound);
    if let Some(d) = &opts.dialer {
        d.connected(att.conn);
    }
    let (mut sink, mut stream) = ws.split();
    let mut shutdown = shared.shutdown.subscribe();
    let mut ping = tokio::time::interval(opts.ping);
    ping.tick().await;
    let mut active = opts.active.clone();
    let why = loop {
        tokio::select! {
            r = async { active.as_mut()?.wait_for(|a| !*a).await.ok().map(|_| ()) }, if active.is_some() => {
                if r.is_some() {
                    break "this node no longer holds the link (another node of the cluster may take it)";
                }
                active = None; // the sender is gone: nothing will change any more
            }
            frame = stream.next() => {
                att.activity.touch();
                match frame {
                    Some(Ok(WsMessage::Binary(b))) => repo.deliver(att.conn, &b),
                    Some(Ok(WsMessage::Text(t))) => repo.deliver(att.conn, t.as_bytes()),
                    Some(Ok(WsMessage::Close(_))) | None => break "closed by the peer",
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(conn = %att.conn, error = %e, "socket error");
                        break "socket error";
                    }
                }
            },
            out = att.outgoing.recv() => match out {
                Some(bytes) => {
                    if let Err(why) = send_bounded(&mut sink, WsMessage::Binary(bytes.into()), opts.drop_after).await {
                        break why;
                    }
                }
                None => break "closed by the engine",
            },
            changed = att.close.changed() => {
                let reason = att.close.borrow().clone();
                if changed.is_err() || reason.is_some() {
                    let frame = reason.map(|r| CloseFrame { code: CloseCode::from(r.code), reason: r.reason.into() });
                    let _ = sink.send(WsMessage::Close(frame)).await;
                    break "closed by the engine";
                }
            }
            _ = ping.tick() => {
                if opts.drop_after.is_some_and(|d| att.activity.idle() >= d) {
                    break "stalled: no frame received within the drop timeout";
                }
                if let Err(why) = send_bounded(&mut sink, WsMessage::Ping(Vec::new().into()), opts.drop_after).await {
                    break why;
                }
            }
            _ = super::driver::until_shutdown(&mut shutdown) => break "shutting down",
        }
    };
    // Bounded too: closing a stalled socket must not hang the reconnect loop.
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    repo.detach(att.conn);
    why
}
