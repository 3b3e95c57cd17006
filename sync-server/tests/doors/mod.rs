//! Harness of the door tests: a real `concord serve` process started through `sh -c` (so a test
//! can set a umask or a soft descriptor limit before `exec`), its stdout lines, its stderr in a
//! file; the `concord token` CLI; raw HTTP; hand-signed tokens; a canary client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use automerge::ROOT;
use automerge::transaction::Transactable;
use concord::{DocHandle, Repo};

pub const WAIT: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_concord");

/// A `concord serve` process; killed when dropped.
pub struct Proc {
    pub child: Child,
    /// Main listener, `127.0.0.1:PORT`.
    pub addr: String,
    /// Admin listener, when `--admin-bind` was given.
    pub admin: Option<String>,
    lines: mpsc::Receiver<String>,
    pub stderr: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(data: &Path, args: &[&str], shell: &str, stderr: &Path) -> Child {
    let script = format!("{shell} exec \"$0\" \"$@\"");
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(args)
        .env("CONCORD_LOG", "info")
        .env_remove("CONCORD_ADMIN_BIND")
        .env_remove("CONCORD_DEV")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap()
}

fn log_path(data: &Path) -> PathBuf {
    let name = format!(
        "{}.stderr",
        data.file_name().unwrap_or_default().to_string_lossy()
    );
    data.with_file_name(name)
}

impl Proc {
    /// Starts `concord serve --bind 127.0.0.1:0 --data DATA ARGS` after the shell commands
    /// `shell` (e.g. `umask 022;`), and waits (bounded) for its listening line.
    pub fn start(data: &Path, args: &[&str], shell: &str) -> Self {
        let stderr = log_path(data);
        let mut child = spawn(data, args, shell, &stderr);
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut p = Self {
            child,
            addr: String::new(),
            admin: None,
            lines,
            stderr,
        };
        let first = p.line_within(Duration::from_secs(30)).unwrap_or_else(|| {
            panic!(
                "concord serve {args:?} did not print its address:\n{}",
                p.stderr_text()
            )
        });
        p.addr = between(&first, "http://", " ").unwrap_or_else(|| panic!("odd line {first}"));
        if args.contains(&"--admin-bind") {
            let line = p.line_within(WAIT).expect("the admin listener line");
            p.admin = between(&line, "http://", "/admin/");
        }
        p
    }

    /// Starts the server expecting it to refuse to start: returns its exit code and stderr.
    pub fn start_fails(data: &Path, args: &[&str], shell: &str) -> (Option<i32>, String) {
        let stderr = log_path(data);
        let mut child = spawn(data, args, shell, &stderr);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code(), std::fs::read_to_string(&stderr).unwrap());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "concord serve {args:?} kept running:\n{}",
                    std::fs::read_to_string(&stderr).unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The next stdout line, if one comes within `wait`.
    pub fn line_within(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn url(&self, token: &str) -> String {
        format!("ws://{}/sync?token={token}", self.addr)
    }

    /// Open file descriptors of the server process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// The process's (soft, hard) limit on open files.
    pub fn nofile(&self) -> (String, String) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let v: Vec<&str> = line.split_whitespace().collect();
        (v[3].to_owned(), v[4].to_owned())
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn between(line: &str, start: &str, end: &str) -> Option<String> {
    let rest = line.split(start).nth(1)?;
    Some(rest.split(end).next()?.trim_end_matches(')').to_owned())
}

/// Runs the `concord` CLI after the shell commands `shell`; returns (stdout, stderr), asserting
/// success.
pub fn cli(shell: &str, args: &[&str]) -> (String, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{shell} exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "concord {args:?}: {stderr}");
    (stdout, stderr)
}

/// `concord token create --data DATA --ttl 1h EXTRA`: the token and its id.
pub fn token(data: &Path, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "token",
        "create",
        "--data",
        data.to_str().unwrap(),
        "--ttl",
        "1h",
    ];
    args.extend_from_slice(extra);
    let (out, err) = cli("", &args);
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("token id: "))
        .unwrap()
        .to_owned();
    (out.trim().to_owned(), id)
}

/// `concord token revoke --data DATA ARGS`.
pub fn revoke(data: &Path, args: &[&str]) {
    let mut all = vec!["token", "revoke", "--data", data.to_str().unwrap()];
    all.extend_from_slice(args);
    cli("", &all);
}

/// A GET over a fresh TCP connection: (status, body).
pub async fn get(addr: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    crate::common::http_get_as(addr, path, bearer).await
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token with header `kid` and the given claims, signed with `secret`.
pub fn sign(secret: &[u8], kid: &str, claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// The first key of `<data>/auth-keys.json`: (kid, secret).
pub fn server_key(data: &Path) -> (String, Vec<u8>) {
    use base64::Engine;
    let text = std::fs::read_to_string(data.join("auth-keys.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let k = &v["keys"][0];
    let secret = base64::engine::general_purpose::STANDARD
        .decode(k["secret"].as_str().unwrap())
        .unwrap();
    (k["kid"].as_str().unwrap().to_owned(), secret)
}

/// The claims of a token (unverified).
pub fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Waits (bounded) until `f` holds.
pub async fn eventually(what: &str, wait: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + wait;
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within {wait:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub use crate::common::client;

/// A client that keeps one document in sync with the server; `check` proves it still syncs.
pub struct Canary {
    pub repo: Repo,
    pub doc: DocHandle,
    round: i64,
}

impl Canary {
    pub async fn start(url: &str) -> Self {
        let repo = client(url).await;
        let doc = repo.create().await.unwrap();
        let mut c = Self {
            repo,
            doc,
            round: 0,
        };
        c.check("setup").await;
        c
    }

    pub async fn check(&mut self, case: &str) {
        self.round += 1;
        let r = self.round;
        self.doc
            .change(|tx| tx.put(ROOT, "round", r))
            .await
            .unwrap();
        self.doc
            .wait_synced(WAIT)
            .await
            .unwrap_or_else(|e| panic!("canary stopped syncing after `{case}`: {e}"));
        println!("ok: {case}");
    }

    pub async fn stop(self) {
        self.repo.shutdown().await;
    }
}
