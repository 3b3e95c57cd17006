//! A cluster of real `concord serve --database` processes on one throwaway PostgreSQL
//! ([`TempPostgres`]), for the multi-process cluster tests.
//!
//! ```no_run
//! # fn demo() -> anyhow::Result<()> {
//! use concord_tests::cluster::Cluster;
//! let mut cluster = Cluster::start(3, &[])?;      // three nodes, one database
//! let url = cluster.nodes[0].url();               // ws://127.0.0.1:<port>/sync?token=...
//! cluster.nodes[1].kill9();                       // SIGKILL
//! cluster.nodes[1].start()?;                      // same node id and port again
//! # Ok(()) }
//! ```
//!
//! Every node listens on a port chosen once, so a restarted node keeps its URL (clients given
//! several URLs fail over between them). The nodes log at `warn` unless `CONCORD_LOG` is set,
//! and print the development token of the cluster (its signing key is in the database, so one
//! token works on every node). Processes are killed when the [`Cluster`] is dropped, then the
//! database server is stopped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::pg::TempPostgres;
use crate::{Proc, concord_bin};

/// One `concord serve --database` process.
#[derive(Debug)]
pub struct Node {
    /// Its `--node-id`.
    pub id: String,
    /// Its listening port (kept across restarts).
    pub port: u16,
    database: String,
    extra: Vec<String>,
    proc: Option<Proc>,
    /// The development token it printed (valid on every node of the cluster).
    pub token: String,
}

impl Node {
    /// A node that is not started yet.
    pub fn new(database: &str, id: &str, extra: &[&str]) -> Result<Self> {
        Ok(Self {
            id: id.to_owned(),
            port: free_port()?,
            database: database.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            proc: None,
            token: String::new(),
        })
    }

    /// Starts the process and waits for its listening line and development token.
    pub fn start(&mut self) -> Result<()> {
        let mut cmd = Command::new(concord_bin());
        cmd.args(["serve", "--bind", &format!("127.0.0.1:{}", self.port)])
            .args(["--database", &self.database, "--node-id", &self.id, "--dev"])
            .args(&self.extra);
        if std::env::var_os("CONCORD_LOG").is_none() {
            cmd.env("CONCORD_LOG", "warn");
        }
        let mut p = Proc::spawn_cmd(cmd)?;
        p.expect("concord listening on")
            .with_context(|| format!("node {} did not start", self.id))?;
        let token = p
            .expect("development token")
            .context("no development token")?;
        self.token = token.rsplit(' ').next().unwrap_or_default().to_owned();
        self.proc = Some(p);
        Ok(())
    }

    /// True while the process runs.
    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// SIGTERM (a clean stop), waiting up to 20 s for the exit (then SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &p.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = p.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The sync URL with the development token.
    pub fn url(&self) -> String {
        self.url_with(&self.token)
    }

    /// The sync URL with `token`.
    pub fn url_with(&self, token: &str) -> String {
        format!("ws://127.0.0.1:{}/sync?token={token}", self.port)
    }

    /// `GET path` with the development token: (status, body).
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(&self.addr(), path, Some(&self.token))
    }

    /// `GET /healthz`: (status, body).
    pub fn healthz(&self) -> Result<(u16, String)> {
        http_get(&self.addr(), "/healthz", None)
    }

    /// The CPU time (user + system) the process used so far.
    pub fn cpu(&self) -> Option<Duration> {
        proc_cpu(self.pid()?)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A throwaway PostgreSQL and the nodes on it.
#[derive(Debug)]
pub struct Cluster {
    /// The nodes (started by [`Cluster::start`]).
    pub nodes: Vec<Node>,
    /// The database server (dropped after the nodes).
    pub pg: TempPostgres,
}

impl Cluster {
    /// A fresh PostgreSQL and `n` started nodes `node-1` .. `node-n`, each with `extra` flags.
    pub fn start(n: usize, extra: &[&str]) -> Result<Self> {
        let pg = TempPostgres::start()?;
        let url = pg.url();
        let mut cluster = Self {
            nodes: Vec::new(),
            pg,
        };
        for i in 1..=n {
            let mut node = Node::new(&url, &format!("node-{i}"), extra)?;
            node.start()?;
            cluster.nodes.push(node);
        }
        Ok(cluster)
    }

    /// The development token (valid on every node).
    pub fn token(&self) -> &str {
        self.nodes.first().map_or("", |n| n.token.as_str())
    }

    /// Every node's sync URL, in order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// Runs `concord token create --database <url> <args>`; returns the token.
    pub fn mint(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(concord_bin())
            .args(["token", "create", "--database", &self.pg.url()])
            .args(args)
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("concord token create failed: {}", out.status);
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill9();
        }
    }
}

/// A plain HTTP/1.1 `GET` on `addr` (bearer `token` if given), within 10 s: (status, body).
pub fn http_get(addr: &str, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// User + system CPU time of process `pid` (from `/proc/<pid>/stat`).
pub fn proc_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports in clock ticks of 1/100 s (USER_HZ) on every architecture we run on.
    Some(Duration::from_millis(ticks * 10))
}

/// A free loopback port.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Percentile `p` (0..=100) of `samples` (sorted in place); zero when empty.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}
