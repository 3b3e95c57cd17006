//! `concord-bench relay`: the floor of this machine for fan-out over WebSockets. A bare
//! tokio-tungstenite relay: no storage, no Automerge, no authentication. It answers the
//! protocol v1 `join` with a `peer` message (clients wait for it), reads only the `type` and
//! `documentId` of every other frame, and forwards the frame's bytes unchanged:
//!
//! - the first connection that sends a `sync` for a document is that document's hub (its
//!   writer, in the load generator);
//! - a frame from the hub goes to every other connection of the document;
//! - a frame from any other connection goes to the hub.
//!
//! So Automerge's sync protocol runs end to end between the writer and each reader, unchanged,
//! with the relay doing only what a server must do at least: one read and one write per frame
//! and per recipient. (Broadcasting the readers' acknowledgements to every reader instead would
//! multiply frames by the readers and make readers answer each other.)
//!
//! ```text
//! concord-bench relay --bind 127.0.0.1:0      # prints "listening on ws://127.0.0.1:PORT"
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use concord::PeerId;
use concord::wire::{self, Message, PROTOCOL_V1, PeerMetadata};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Bytes, Message as Frame};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
}

/// The only fields the relay reads; every other key of the CBOR map is skipped.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    ty: String,
    #[serde(rename = "documentId", default)]
    document_id: Option<ciborium::Value>,
}

#[derive(Debug, Default)]
struct Route {
    hub: Option<u64>,
    others: Vec<u64>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    conns: HashMap<u64, mpsc::UnboundedSender<Bytes>>,
    docs: HashMap<Vec<u8>, Route>,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn send(state: &State, to: u64, bytes: &Bytes) {
    if let Some(tx) = state.conns.get(&to) {
        let _ = tx.send(bytes.clone());
    }
}

/// Routes one frame from connection `from`.
fn route(shared: &Shared, from: u64, bytes: Bytes) {
    let Ok(head) = ciborium::de::from_reader::<Head, _>(&bytes[..]) else {
        return;
    };
    if head.ty == "join" {
        let Ok(Message::Join { sender_id, .. }) = wire::decode(&bytes, usize::MAX) else {
            return;
        };
        let peer = Message::Peer {
            sender_id: PeerId::from("relay"),
            target_id: sender_id,
            peer_metadata: Some(PeerMetadata {
                is_ephemeral: true,
                ..PeerMetadata::default()
            }),
            selected_protocol_version: PROTOCOL_V1.to_owned(),
        };
        send(&lock(shared), from, &Bytes::from(wire::encode(&peer)));
        return;
    }
    let key = match head.document_id {
        Some(ciborium::Value::Text(t)) => t.into_bytes(),
        Some(ciborium::Value::Bytes(b)) => b,
        _ => return,
    };
    let mut state = lock(shared);
    let route = state.docs.entry(key).or_default();
    if route.hub.is_none() && head.ty == "sync" {
        route.hub = Some(from);
        route.others.retain(|&c| c != from);
    }
    let targets: Vec<u64> = if route.hub == Some(from) {
        route.others.clone()
    } else {
        if !route.others.contains(&from) {
            route.others.push(from);
        }
        route.hub.into_iter().collect()
    };
    for to in targets {
        send(&state, to, &bytes);
    }
}

async fn connection(shared: Shared, tcp: TcpStream) -> anyhow::Result<()> {
    let _ = tcp.set_nodelay(true);
    let ws =
        tokio_tungstenite::accept_async_with_config(tcp, Some(crate::loadgen::client::ws_config()))
            .await?;
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let id = {
        let mut s = lock(&shared);
        s.next += 1;
        let id = s.next;
        s.conns.insert(id, tx);
        id
    };
    let write = async {
        // Everything queued goes out with one flush.
        while let Some(b) = rx.recv().await {
            sink.feed(Frame::Binary(b)).await?;
            while let Ok(b) = rx.try_recv() {
                sink.feed(Frame::Binary(b)).await?;
            }
            sink.flush().await?;
        }
        anyhow::Ok(())
    };
    let read = async {
        while let Some(frame) = stream.next().await {
            match frame? {
                Frame::Binary(b) => route(&shared, id, b),
                Frame::Close(_) => break,
                _ => {}
            }
        }
        anyhow::Ok(())
    };
    let result = tokio::select! {
        r = write => r,
        r = read => r,
    };
    let mut s = lock(&shared);
    s.conns.remove(&id);
    for r in s.docs.values_mut() {
        if r.hub == Some(id) {
            r.hub = None;
        }
        r.others.retain(|&c| c != id);
    }
    result
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(args.bind).await?;
        println!("listening on ws://{}", listener.local_addr()?);
        let shared = Shared::default();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (tcp, _) = accepted?;
                    tokio::spawn(connection(shared.clone(), tcp));
                }
                _ = term.recv() => return Ok(()),
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    })
}
