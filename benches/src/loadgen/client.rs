//! One protocol-v1 client of the load generator: a WebSocket, the `join`/`peer` handshake
//! (Concord's codec, [`concord::wire`]), and a real Automerge replica synced with Automerge's
//! own sync protocol (one [`sync::State`] for the server).
//!
//! - A **writer** owns a document with one text object and types into it on a fixed schedule:
//!   every keystroke is its own change (one character appended), so the text's length is the
//!   number of keystrokes. When it wakes up late it makes every keystroke that was due and sends
//!   them in one sync message, as a real client catching up would.
//! - A **reader** requests the document, applies every sync message it receives
//!   (`receive_sync_message`), reads the text's length to learn which keystrokes it now has, and
//!   answers (`generate_sync_message`), which acknowledges its heads to the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ROOT, ReadDoc};
use concord::wire::{self, Message, PROTOCOL_V1, PeerMetadata};
use concord::{DocumentId, PeerId};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::record::Recorder;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest frame the generator decodes (the servers' default limit).
const MAX_FRAME: usize = 1 << 20;

/// WebSocket settings of the generator's clients and of the relay: tungstenite's default read
/// buffer (128 KiB) is zero-filled before every read (`BytesMut::resize` in
/// `FrameCodec::read_in`), which cost more than everything else a reader does per frame
/// (callgrind: 57 % of the generator's instructions). Protocol v1 frames under a typing load
/// are a few hundred bytes; larger ones still arrive whole (the buffer grows to the frame).
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// What the writers are told to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// Connected, not typing.
    Idle,
    /// Step `step`: `rate` keystrokes per second over all writers, due from `start` until `end`.
    Run {
        step: usize,
        start: Instant,
        end: Instant,
        rate: f64,
    },
    /// Close the connection.
    Stop,
}

/// What every client task shares with the driver.
#[derive(Debug, Clone)]
pub struct Shared {
    pub recorder: Arc<Recorder>,
    pub phase: watch::Receiver<Phase>,
    /// Readers that have the document (its text object).
    pub ready: Arc<AtomicU64>,
    /// Clients that ended with an error.
    pub failed: Arc<AtomicU64>,
    /// Writers in the run (their keystrokes are spread evenly over each interval).
    pub writers: usize,
}

/// A connected client after the handshake.
#[derive(Debug)]
pub struct Conn {
    ws: Ws,
    me: PeerId,
    server: PeerId,
}

/// Connects to `url` and does the protocol v1 handshake as `me` (an ephemeral peer), within
/// `limit`.
pub async fn connect(url: &str, me: PeerId, limit: Duration) -> anyhow::Result<Conn> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true)
        .await
        .with_context(|| format!("connecting to {}", url.split('?').next().unwrap_or(url)))?;
    let join = Message::Join {
        sender_id: me.clone(),
        peer_metadata: Some(PeerMetadata {
            storage_id: None,
            is_ephemeral: true,
            region: None,
            concord: false,
        }),
        supported_protocol_versions: vec![PROTOCOL_V1.to_owned()],
    };
    ws.send(Frame::Binary(wire::encode(&join).into())).await?;
    let server = tokio::time::timeout(limit, async {
        while let Some(frame) = ws.next().await {
            let Frame::Binary(bytes) = frame? else {
                continue;
            };
            match wire::decode(&bytes, MAX_FRAME)? {
                Message::Peer { sender_id, .. } => return Ok(sender_id),
                Message::Error { message, .. } => bail!("server refused the handshake: {message}"),
                _ => {}
            }
        }
        bail!("connection closed during the handshake")
    })
    .await
    .context("handshake timed out")??;
    Ok(Conn { ws, me, server })
}

impl Conn {
    async fn send_sync(
        &mut self,
        doc: DocumentId,
        msg: sync::Message,
        request: bool,
    ) -> anyhow::Result<()> {
        let (sender_id, target_id, document_id, data) =
            (self.me.clone(), self.server.clone(), doc, msg.encode());
        let m = if request {
            Message::Request {
                sender_id,
                target_id,
                document_id,
                data,
            }
        } else {
            Message::Sync {
                sender_id,
                target_id,
                document_id,
                data,
            }
        };
        self.ws.send(Frame::Binary(wire::encode(&m).into())).await?;
        Ok(())
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

/// What arrived for a client's document.
enum Incoming {
    /// A sync (or request) message.
    Sync(sync::Message),
    /// The server does not have the document (yet).
    Unavailable,
    /// Anything else (heads gossip, ephemeral, pings).
    Other,
}

fn incoming(frame: Frame, doc: DocumentId) -> anyhow::Result<Incoming> {
    let Frame::Binary(bytes) = frame else {
        return Ok(Incoming::Other);
    };
    Ok(match wire::decode(&bytes, MAX_FRAME)? {
        Message::Sync {
            document_id, data, ..
        }
        | Message::Request {
            document_id, data, ..
        } if document_id == doc => {
            Incoming::Sync(sync::Message::decode(&data).context("undecodable sync message")?)
        }
        Message::DocUnavailable { document_id, .. } if document_id == doc => Incoming::Unavailable,
        Message::Error { message, .. } => bail!("server error: {message}"),
        _ => Incoming::Other,
    })
}

/// The k-th keystroke of writer `index` in a run phase: due times spread every writer's
/// keystrokes evenly, so the load is a smooth stream of `rate` changes per second.
fn due(index: usize, writers: usize, start: Instant, rate: f64, k: u64) -> Instant {
    let t = (index as f64 + k as f64 * writers as f64) / rate;
    start + Duration::from_secs_f64(t)
}

/// The writer of document `doc` (writer `index`): runs until the phase is [`Phase::Stop`].
pub async fn writer(
    mut conn: Conn,
    doc: DocumentId,
    index: usize,
    mut sh: Shared,
) -> anyhow::Result<()> {
    let mut am = AutoCommit::new();
    let text = am.put_object(ROOT, "text", ObjType::Text)?;
    am.commit();
    let mut state = sync::State::new();
    if let Some(m) = am.sync().generate_sync_message(&mut state) {
        conn.send_sync(doc, m, false).await?;
    }
    let mut typed = 0usize;
    // (step, start, end, rate, next keystroke index) while running.
    let mut run: Option<(usize, Instant, Instant, f64, u64)> = None;
    loop {
        let next = run.map(|(_, start, _, rate, k)| due(index, sh.writers, start, rate, k));
        let sleep = tokio::time::sleep_until(next.unwrap_or_else(Instant::now).into());
        tokio::select! {
            biased;
            changed = sh.phase.changed() => {
                if changed.is_err() { break; }
                let phase = *sh.phase.borrow_and_update();
                run = match phase {
                    Phase::Run { step, start, end, rate } => Some((step, start, end, rate, 0)),
                    Phase::Idle => None,
                    Phase::Stop => break,
                };
            }
            frame = conn.ws.next() => {
                let Some(frame) = frame else { bail!("the server closed the writer's connection") };
                if let Incoming::Sync(m) = incoming(frame?, doc)? {
                    am.sync().receive_sync_message(&mut state, m)?;
                    if let Some(reply) = am.sync().generate_sync_message(&mut state) {
                        conn.send_sync(doc, reply, false).await?;
                    }
                }
            }
            () = sleep, if next.is_some() => {
                let Some((step, start, end, rate, k)) = run.as_mut() else { continue };
                let now = Instant::now();
                let mut made = false;
                loop {
                    let at = due(index, sh.writers, *start, *rate, *k);
                    if at > now || at >= *end { break; }
                    let seq = sh.recorder.intend(index, at, *step);
                    am.splice_text(&text, typed, 0, "x")?;
                    am.commit();
                    typed += 1;
                    debug_assert_eq!(typed as u64, seq);
                    *k += 1;
                    made = true;
                }
                if due(index, sh.writers, *start, *rate, *k) >= *end { run = None; }
                if made && let Some(m) = am.sync().generate_sync_message(&mut state) {
                    conn.send_sync(doc, m, false).await?;
                }
            }
        }
    }
    conn.close().await;
    Ok(())
}

/// Reader `reader` of document `doc`: runs until the phase is [`Phase::Stop`].
pub async fn reader(
    mut conn: Conn,
    doc: DocumentId,
    reader: usize,
    mut sh: Shared,
) -> anyhow::Result<()> {
    let mut am = AutoCommit::new();
    let mut state = sync::State::new();
    let mut text: Option<ObjId> = None;
    let mut unavailable = 0u32;
    if let Some(m) = am.sync().generate_sync_message(&mut state) {
        conn.send_sync(doc, m, true).await?;
    }
    loop {
        tokio::select! {
            biased;
            changed = sh.phase.changed() => {
                if changed.is_err() || *sh.phase.borrow_and_update() == Phase::Stop { break; }
            }
            frame = conn.ws.next() => {
                let Some(frame) = frame else { bail!("the server closed a reader's connection") };
                match incoming(frame?, doc)? {
                    Incoming::Sync(m) => {
                        am.sync().receive_sync_message(&mut state, m)?;
                        let now = Instant::now();
                        if text.is_none() {
                            text = am.get(ROOT, "text")?.map(|(_, id)| id);
                            if text.is_some() { sh.ready.fetch_add(1, Ordering::Relaxed); }
                        }
                        if let Some(t) = &text {
                            sh.recorder.seen(reader, am.length(t) as u64, now);
                        }
                        if let Some(reply) = am.sync().generate_sync_message(&mut state) {
                            conn.send_sync(doc, reply, false).await?;
                        }
                    }
                    Incoming::Unavailable if text.is_none() => {
                        // The writer's first sync has not reached the server yet: ask again.
                        unavailable += 1;
                        if unavailable > 300 { bail!("document still unavailable after {unavailable} requests"); }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        state = sync::State::new();
                        if let Some(m) = am.sync().generate_sync_message(&mut state) {
                            conn.send_sync(doc, m, true).await?;
                        }
                    }
                    Incoming::Unavailable | Incoming::Other => {}
                }
            }
        }
    }
    conn.close().await;
    Ok(())
}

/// Runs a client task, counting its failure (and saying why) instead of losing it.
pub async fn supervise(
    what: String,
    failed: Arc<AtomicU64>,
    task: impl Future<Output = anyhow::Result<()>>,
) {
    if let Err(e) = task.await
        && failed.fetch_add(1, Ordering::Relaxed) < 5
    {
        eprintln!("loadgen: {what} failed: {e:#}");
    }
}
