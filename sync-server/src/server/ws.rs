//! The WebSocket endpoint: one task per connection pumping frames between the socket and the
//! engine, with keepalive pings, a write timeout for readers that stop reading, and close codes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};

use governor::{Quota, RateLimiter};

use super::AppState;
use super::admission::{self, Admitted};
use super::metrics::ConnectionGuard;

/// How long one frame may take to write before the peer is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the closing handshake may wait for the peer's close frame.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

/// `GET /sync`: upgrades to the protocol v1 WebSocket after admission (Origin, token,
/// connection caps). Non-WebSocket requests get axum's rejection (400/405/426 with a message).
pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    pending: Option<Extension<super::listen::Pending>>,
    ws: WebSocketUpgrade,
) -> Response {
    let admitted = match admission::admit(&app, addr, &headers, &query) {
        Ok(a) => a,
        Err(refusal) => return refusal.into_response(),
    };
    // Admitted: the connection now counts against the connection caps, no longer as pending.
    if let Some(Extension(p)) = pending {
        p.release();
    }
    let max = app.config.max_message_bytes;
    // An 8 KiB read buffer instead of tungstenite's 128 KiB: every read zero-fills the whole
    // buffer, and every connection keeps one (larger frames still arrive whole: the buffer
    // grows to the frame). Measured in BENCHMARKS.md (section 7).
    ws.read_buffer_size(8 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|e| tracing::warn!(error = %e, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| serve_socket(app, socket, admitted))
}

/// Time until `expires`, or a long time when there is no expiry.
fn until(expires: Option<SystemTime>) -> Duration {
    expires
        .map(|e| e.duration_since(SystemTime::now()).unwrap_or_default())
        .unwrap_or(Duration::from_secs(365 * 24 * 3600))
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn serve_socket(app: AppState, socket: WebSocket, admitted: Admitted) {
    let _guard = ConnectionGuard::new(app.metrics.clone());
    let Admitted {
        grant,
        expires,
        token_id,
        slots: _slots,
    } = admitted;
    let principal = grant.as_ref().map(|g| g.principal.clone());
    // Region links carry every document of a region: they are not rate limited.
    let replicating = grant.as_ref().is_some_and(|g| g.replicate);
    let mut revoked = app.revoked.clone();
    let mut att = app.repo.attach_with_grant(true, grant);
    let one = NonZeroU32::MIN;
    let msgs = RateLimiter::direct(Quota::per_second(
        NonZeroU32::new(app.config.max_messages_per_sec).unwrap_or(one),
    ));
    let bytes = RateLimiter::direct(Quota::per_second(
        NonZeroU32::new(app.config.max_bytes_per_sec).unwrap_or(one),
    ));
    let expiry = tokio::time::sleep(until(expires));
    tokio::pin!(expiry);
    let idle_limit = Duration::from_secs(app.config.idle_timeout_secs);
    let idle = tokio::time::sleep(idle_limit);
    tokio::pin!(idle);
    let conn = att.conn;
    tracing::debug!(%conn, "WebSocket connected");
    let (mut sink, mut stream) = socket.split();
    let mut shutdown = app.shutdown.clone();
    let mut ping = tokio::time::interval(Duration::from_secs(app.config.ping_secs));
    ping.tick().await;
    // Whether our close frame went out: the closing handshake then waits for the peer's.
    let mut closing = false;
    let reason = loop {
        let out = tokio::select! {
            // Frames first, so an `error` message goes out before its close frame.
            biased;
            frame = att.outgoing.recv() => match frame {
                Some(bytes) => Some(Message::Binary(bytes.into())),
                None => {
                    // The engine ended the connection; its frames are drained: say why.
                    let reason = att.close.borrow().clone();
                    let (code, text) = reason.map_or((1011, "internal error".to_owned()), |r| (r.code, r.reason));
                    closing = send_close(&mut sink, close(code, &text)).await;
                    break "closed by engine";
                }
            },
            frame = stream.next() => {
                att.activity.touch();
                idle.as_mut().reset(tokio::time::Instant::now() + idle_limit);
                let size = match &frame {
                    Some(Ok(Message::Binary(b))) => Some(b.len()),
                    Some(Ok(Message::Text(t))) => Some(t.len()),
                    _ => None,
                };
                if let Some(size) = size.filter(|_| !replicating) {
                    let n = NonZeroU32::new(u32::try_from(size).unwrap_or(u32::MAX)).unwrap_or(one);
                    if msgs.check().is_err() || !matches!(bytes.check_n(n), Ok(Ok(()))) {
                        tracing::warn!(%conn, "rate limit exceeded");
                        closing = send_close(&mut sink, close(1008, "rate limit exceeded")).await;
                        break "rate limited";
                    }
                }
                match frame {
                Some(Ok(Message::Binary(b))) => { app.repo.deliver(conn, &b); None }
                Some(Ok(Message::Text(t))) => { app.repo.deliver(conn, t.as_bytes()); None }
                Some(Ok(Message::Close(_))) | None => break "peer closed",
                Some(Ok(_)) => None,
                Some(Err(e)) => {
                    // Oversized frames end here too: tungstenite refuses them before we see them.
                    tracing::info!(%conn, error = %e, "WebSocket error");
                    closing = send_close(&mut sink, close(1009, "message too big or malformed")).await;
                    break "socket error";
                }
                }
            },
            _ = revoked.changed(), if principal.is_some() => {
                let now_revoked = principal
                    .as_deref()
                    .is_some_and(|p| revoked.borrow().is_revoked(token_id.as_deref(), p));
                if now_revoked {
                    closing = send_close(&mut sink, close(1008, "token revoked")).await;
                    break "token revoked";
                }
                None
            }
            () = &mut expiry => {
                closing = send_close(&mut sink, close(1008, "token expired")).await;
                break "token expired";
            }
            () = &mut idle => {
                closing = send_close(&mut sink, close(1001, "idle timeout")).await;
                break "idle timeout";
            }
            changed = att.close.changed() => {
                let reason = att.close.borrow().clone();
                match reason {
                    Some(r) => {
                        closing = send_close(&mut sink, close(r.code, &r.reason)).await;
                        break "closed by engine";
                    }
                    None if changed.is_err() => break "engine gone",
                    None => None,
                }
            }
            _ = ping.tick() => Some(Message::Ping(Vec::new().into())),
            _ = shutdown.changed() => {
                closing = send_close(&mut sink, close(1001, "server shutting down")).await;
                break "server shutdown";
            }
        };
        if let Some(msg) = out {
            match tokio::time::timeout(WRITE_TIMEOUT, sink.send(msg)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break "write failed",
                Err(_) => break "slow reader: write timed out",
            }
        }
    };
    tracing::debug!(%conn, reason, "WebSocket closed");
    app.repo.detach(conn);
    if closing {
        drain_until_closed(&mut stream).await;
    }
}

/// Sends a close frame within the write timeout; whether it went out.
async fn send_close(sink: &mut SplitSink<WebSocket, Message>, frame: Message) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, sink.send(frame)).await,
        Ok(Ok(()))
    )
}

/// The closing handshake (RFC 6455 section 7.1.1): after our close frame, read and drop what the
/// peer still sends until its close frame or the end of the stream, for at most
/// [`CLOSE_DRAIN`]. Dropping a TCP socket with unread bytes in it makes the kernel answer with
/// a reset, which can destroy our close frame before the peer reads it: a client that was
/// still sending (a flood being cut off, a burst at a revocation) would see "connection reset"
/// instead of the code and reason that tell it why. The engine has already forgotten the
/// connection; nothing read here reaches it.
async fn drain_until_closed(stream: &mut SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(CLOSE_DRAIN, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}
