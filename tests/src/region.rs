//! A region server (`concord serve --region ... --peer-secret ...`) as a real process on
//! 127.0.0.1, for the multi-process tests: started, killed with SIGKILL, restarted on its data.

use std::path::{Path, PathBuf};

use crate::{Proc, concord_bin};

/// The peer secret every test region shares.
pub const SECRET: &str = "region-test-secret-0123456789";

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One region server process.
#[derive(Debug)]
pub struct Region {
    /// Its region name.
    pub name: String,
    /// Its port.
    pub port: u16,
    /// Its data directory.
    pub data: PathBuf,
    keys: PathBuf,
    peers: Vec<String>,
    /// Extra `concord serve` arguments.
    pub extra: Vec<String>,
    proc: Option<Proc>,
}

impl Region {
    /// A region `name` with its data under `dir` (token keys shared by every region of `dir`),
    /// dialling `peers`.
    pub fn new(dir: &Path, name: &str, peers: Vec<String>) -> Self {
        Self {
            name: name.into(),
            port: free_port(),
            data: dir.join(name),
            keys: dir.join("auth-keys.json"),
            peers,
            extra: Vec::new(),
            proc: None,
        }
    }

    /// Starts the process; returns the development token it prints.
    pub fn start(&mut self) -> String {
        let bind = format!("127.0.0.1:{}", self.port);
        let data = self.data.to_string_lossy().into_owned();
        let keys = self.keys.to_string_lossy().into_owned();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--bind".into(),
            bind,
            "--data".into(),
            data,
            "--auth-keys".into(),
            keys,
            "--region".into(),
            self.name.clone(),
            "--peer-secret".into(),
            SECRET.into(),
            "--anti-entropy-secs".into(),
            "1".into(),
            // Every document takes the deferred path (applied in batches), as large ones do.
            "--defer-apply-min-ops".into(),
            "0".into(),
            "--dev".into(),
        ];
        args.extend(self.extra.iter().cloned());
        for p in &self.peers {
            args.push("--peer".into());
            args.push(p.clone());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let bin = concord_bin().to_string_lossy().into_owned();
        let mut p = Proc::spawn(&bin, &argv).expect("concord serve starts");
        p.expect("concord listening on").expect("listening");
        let token = p.expect("development token").expect("token");
        self.proc = Some(p);
        token.rsplit(' ').next().unwrap_or_default().to_owned()
    }

    /// Its sync URL with `token`.
    pub fn url(&self, token: &str) -> String {
        format!("ws://127.0.0.1:{}/sync?token={token}", self.port)
    }

    /// Its sync URL (region links present their own credentials).
    pub fn sync_url(&self) -> String {
        format!("ws://127.0.0.1:{}/sync", self.port)
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// A minimal HTTP GET on 127.0.0.1 with a bearer token (keeps the tests free of an HTTP client
/// dependency); returns the body.
pub async fn http_get(port: u16, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the server accepts");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("request sent");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("response read");
    out.split_once("\r\n\r\n")
        .map_or(out.clone(), |(_, body)| body.to_owned())
}

/// `GET /admin/replication` as JSON.
pub async fn replication(port: u16, token: &str) -> serde_json::Value {
    let body = http_get(port, "/admin/replication", token).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}
