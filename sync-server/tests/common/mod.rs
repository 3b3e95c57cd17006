//! Helpers for in-process server tests on 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use concord::storage::MemoryStorage;
use concord::{Repo, RepoConfig};
use concord_server::server::{self, ServeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

pub const WAIT: Duration = Duration::from_secs(10);

/// A server on an ephemeral port; dropped at the end of the test.
pub struct TestServer {
    pub addr: SocketAddr,
    pub repo: Repo,
    pub keys: Arc<concord_server::auth::KeyRing>,
    /// A full-access token with admin rights.
    pub token: String,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        // A data directory only its owner can open (the server refuses others).
        let dir = private_tempdir();
        let mut config = ServeConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            data: dir.path().to_owned(),
            auth_keys: dir.path().join("auth-keys.json"),
            ..ServeConfig::default()
        };
        tweak(&mut config);
        let running = server::start(config).await.unwrap();
        let (addr, repo, keys) = (running.addr, running.repo.clone(), running.keys.clone());
        let token = mint_admin(&keys, "tester");
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            running
                .serve(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            repo,
            keys,
            token,
            stop: Some(stop),
            task,
            dir,
        }
    }

    /// The sync URL with the full-access token.
    pub fn url(&self) -> String {
        self.url_with(&self.token)
    }

    /// The sync URL with a given token.
    pub fn url_with(&self, token: &str) -> String {
        format!("ws://{}/sync?token={token}", self.addr)
    }

    /// The sync URL without a token.
    pub fn bare_url(&self) -> String {
        format!("ws://{}/sync", self.addr)
    }

    pub async fn stop(self) {
        self.stop_keeping_data().await;
    }

    /// Stops the server and hands back its data directory (still on disk).
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(WAIT, &mut self.task).await;
        self.dir
    }
}

/// A temporary directory with mode 0700 (`tempfile::tempdir` follows the umask, and the server
/// refuses a data directory that group or others can open).
pub fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap()
}

/// Mints a token with the server's key (no admin rights).
pub fn mint(
    keys: &concord_server::auth::KeyRing,
    principal: &str,
    docs: Option<Vec<concord::DocumentId>>,
    read_only: bool,
) -> String {
    mint_with(keys, principal, docs, read_only, false)
}

/// Mints a full-access token with admin rights.
pub fn mint_admin(keys: &concord_server::auth::KeyRing, principal: &str) -> String {
    mint_with(keys, principal, None, false, true)
}

fn mint_with(
    keys: &concord_server::auth::KeyRing,
    principal: &str,
    docs: Option<Vec<concord::DocumentId>>,
    read_only: bool,
    admin: bool,
) -> String {
    concord_server::auth::mint(
        keys,
        &concord_server::auth::TokenRequest {
            principal: principal.into(),
            docs,
            read_only,
            ttl: Duration::from_secs(3600),
            admin,
        },
    )
    .unwrap()
}

/// A client repo (memory storage) connected to `url`.
pub async fn client(url: &str) -> Repo {
    let mut config = RepoConfig::default().with_server(url);
    config.backoff.initial = Duration::from_millis(20);
    let repo = Repo::open(Arc::new(MemoryStorage::new()), config)
        .await
        .unwrap();
    repo.wait_connected(WAIT)
        .await
        .unwrap_or_else(|e| panic!("a client could not connect to {url}: {e}"));
    repo
}

/// A minimal HTTP/1.1 GET for tests: returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get_as(&addr.to_string(), path, None).await
}

/// Sends `request` (a whole HTTP/1.1 request with `Connection: close`) and returns the raw
/// answer.
pub async fn http_raw(addr: &str, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{request:?}: no answer within {WAIT:?}"))
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// Like [`http_get`], with an optional bearer token.
pub async fn http_get_as(addr: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    let text = http_raw(addr, &req).await;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    // Chunked bodies: good enough for `contains` checks.
    (status, body)
}
