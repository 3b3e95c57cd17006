//! A raw protocol-v1 WebSocket client for edge and hostile tests.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use concord::wire::{self, Message};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A client WebSocket.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends one protocol message as a binary frame.
pub async fn send_msg(
    ws: &mut Socket,
    m: &Message,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    ws.send(Ws::Binary(wire::encode(m).into())).await
}

/// The next protocol message (skipping pings), or the close code (`None`: dropped without a
/// close frame). Panics when nothing arrives within `wait`.
pub async fn next_within(ws: &mut Socket, wait: Duration) -> Result<Message, Option<CloseCode>> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Ws::Binary(b)))) => return Ok(wire::decode(&b, usize::MAX).unwrap()),
            Ok(Some(Ok(Ws::Close(f)))) => return Err(f.map(|f| f.code)),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return Err(None),
            Err(_) => panic!("no frame within {wait:?}"),
        }
    }
}
