//! The samod reference server: samod 0.16 (the Rust implementation of automerge-repo) behind
//! axum's WebSocket upgrade, with samod's filesystem storage (the format of automerge-repo's
//! `NodeFSStorageAdapter`). Set up like `automerge-repo-server.mjs`: documents are not
//! announced to peers (`sharePolicy: false` there), every peer may read and write, and every
//! path upgrades to the protocol v1 WebSocket.
//!
//! ```text
//! cargo build --release --locked --manifest-path benches/reference/samod-server/Cargo.toml
//! samod-reference-server PORT DATA_DIR      # prints "listening on ws://127.0.0.1:PORT"
//! ```

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use axum::serve::ListenerExt;
use samod::storage::TokioFilesystemStorage;
use samod::{AcceptorHandle, Repo, ShareConfig};

async fn upgrade(State(acceptor): State<AcceptorHandle>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| async move {
        // No authentication (as the Node reference): the peer id of the handshake is trusted.
        if acceptor.accept_axum(socket, None).is_err() {
            eprintln!("repo stopped; connection dropped");
        }
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .context("usage: samod-reference-server PORT DATA_DIR")?
        .parse()
        .context("PORT")?;
    let dir = args
        .next()
        .context("usage: samod-reference-server PORT DATA_DIR")?;
    let repo = Repo::build_tokio()
        .with_peer_id(
            format!("samod-server-{}", std::process::id())
                .as_str()
                .into(),
        )
        .with_storage(TokioFilesystemStorage::new(&dir))
        .with_share_policy(ShareConfig::read_write().with_announce(false))
        .load()
        .await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    // As the Node `ws` server does: small frames go out at once.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let acceptor = repo.make_acceptor(format!("ws://{addr}/").parse()?)?;
    let app = Router::new().fallback(upgrade).with_state(acceptor);
    println!("listening on ws://{addr}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await?;
    repo.stop().await;
    Ok(())
}
