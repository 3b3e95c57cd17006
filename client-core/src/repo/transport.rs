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

/// Keeps one connection up to the first reachable URL in `urls`.
pub(super) async fn run_client(
    shared: Arc<Shared>,
    urls: Vec<String>,
    backoff: Backoff,
    max_message: usize,
) {
    run_client_with(shared, urls, backoff, max_message, None).await;
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

/// Like [`run_client`], presenting a bearer token from `credentials` on every attempt.
pub(super) async fn run_client_with(
    shared: Arc<Shared>,
    urls: Vec<String>,
    backoff: Backoff,
    max_message: usize,
    credentials: Option<super::Credentials>,
) {
    if urls.is_empty() {
        return;
    }
    let mut shutdown = shared.shutdown.subscribe();
    let mut attempt = 0u32;
    let mut idx = 0usize;
    loop {
        if *shutdown.borrow() {
            return;
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
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok((ws, _))) => {
                tracing::info!(%url, "connected");
                attempt = 0;
                run_socket(shared.clone(), ws, false).await;
                tracing::info!(%url, "connection ended");
            }
            Ok(Err(e)) => {
                // Loud once per outage, quiet while retrying.
                if attempt == 0 {
                    tracing::warn!(%url, error = %e, "connect failed; retrying with backoff");
                } else {
                    tracing::debug!(%url, error = %e, attempt, "connect failed");
                }
                idx += 1;
            }
            Err(_) => {
                tracing::warn!(%url, "connect timed out");
                idx += 1;
            }
        }
        let delay = backoff.delay(attempt, &mut rand::rng());
        attempt = attempt.saturating_add(1);
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
    let repo = Repo {
        shared: shared.clone(),
        tasks: Arc::default(),
        config: Arc::default(),
    };
    let mut att = repo.attach(inbound);
    let (mut sink, mut stream) = ws.split();
    let mut shutdown = shared.shutdown.subscribe();
    let mut ping = tokio::time::interval(Duration::from_secs(5));
    ping.tick().await;
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(WsMessage::Binary(b))) => repo.deliver(att.conn, &b),
                Some(Ok(WsMessage::Text(t))) => repo.deliver(att.conn, t.as_bytes()),
                Some(Ok(WsMessage::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(conn = %att.conn, error = %e, "socket error");
                    break;
                }
            },
            out = att.outgoing.recv() => match out {
                Some(bytes) => {
                    if sink.send(WsMessage::Binary(bytes.into())).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            changed = att.close.changed() => {
                let reason = att.close.borrow().clone();
                if changed.is_err() || reason.is_some() {
                    let frame = reason.map(|r| CloseFrame { code: CloseCode::from(r.code), reason: r.reason.into() });
                    let _ = sink.send(WsMessage::Close(frame)).await;
                    break;
                }
            }
            _ = ping.tick() => {
                if sink.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            _ = super::driver::until_shutdown(&mut shutdown) => break,
        }
    }
    let _ = sink.close().await;
    repo.detach(att.conn);
}
