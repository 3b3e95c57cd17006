//! The `concord doc` CLI as a real process: two replicas (separate `--data` directories) sync
//! through a real `concord serve` process (authenticated with its development token) over
//! WebSockets on 127.0.0.1.
//!
//! The `concord` binary belongs to another package (`concord-server`), so cargo does not build it
//! for these tests on its own: each run first calls `cargo build -p concord-server --bin concord`
//! (a no-op when it is fresh) and runs `target/<profile>/concord`. Set `CONCORD_BIN` to use another
//! binary instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use concord_tests::{Proc, concord_bin};
use serde_json::{Value, json};

/// Per-command server wait given to the CLI (it returns as soon as it is in sync).
const CLI_TIMEOUT: &str = "20";
/// Bound on waits for lines from long-running CLI processes.
const WAIT: Duration = Duration::from_secs(30);

/// A real `concord serve` process on 127.0.0.1 (dropped = killed). Returns its sync URL carrying
/// the development token it prints.
fn peer(dir: &Path) -> (Proc, String) {
    let data = dir.join("server");
    let mut p = Proc::spawn(
        concord_bin().to_str().unwrap(),
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
            "--dev",
        ],
    )
    .unwrap();
    let listening = p
        .expect("concord listening on ")
        .expect("the server prints its address");
    let ws = listening
        .split("WebSocket: ")
        .nth(1)
        .map(|r| r.trim_end_matches(')').to_owned())
        .expect("a WebSocket URL");
    let token = p
        .expect("development token")
        .expect("the server prints a development token");
    let token = token.rsplit(' ').next().unwrap().to_owned();
    (p, format!("{ws}?token={token}"))
}

/// One CLI replica: a data directory and the server it talks to.
struct Replica {
    data: PathBuf,
    server: String,
}

impl Replica {
    fn new(dir: &Path, name: &str, server: &str) -> Self {
        Self {
            data: dir.join(name),
            server: server.to_owned(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(concord_bin());
        for var in [
            "CONCORD_DATA",
            "CONCORD_SERVER",
            "CONCORD_OFFLINE",
            "CONCORD_TIMEOUT",
        ] {
            cmd.env_remove(var);
        }
        let log = std::env::var("CLI_DOC_LOG").unwrap_or_else(|_| "warn".into());
        cmd.env("CONCORD_LOG", log)
            .arg("doc")
            .arg("--data")
            .arg(&self.data)
            .args(["--server", &self.server]);
        if !args.iter().any(|a| a.starts_with("--timeout")) {
            cmd.args(["--timeout", CLI_TIMEOUT]);
        }
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Captured by the test harness: shown when a test fails.
        eprintln!("$ concord doc {args:?} ({})\n{stderr}", out.status);
        assert!(
            !stderr.contains("panicked"),
            "concord doc {args:?} panicked:\n{stderr}"
        );
        out
    }

    /// Runs a command that must succeed without warnings; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "concord doc {args:?} failed:\n{stderr}"
        );
        assert!(
            !stderr.contains("warning:"),
            "concord doc {args:?} warned:\n{stderr}"
        );
        assert!(
            !stderr.contains("waiting up to"),
            "concord doc {args:?} waited for a server that is up:\n{stderr}"
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "concord doc {args:?} succeeded:\n{stderr}"
        );
        assert!(
            !stderr.trim().is_empty(),
            "concord doc {args:?} failed silently"
        );
        stderr
    }

    fn get(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(&[&["get"], args].concat())).unwrap()
    }
}

#[test]
fn offline_edits_of_two_replicas_merge_after_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, server) = peer(dir.path());
    let (a, b) = (
        Replica::new(dir.path(), "a", &server),
        Replica::new(dir.path(), "b", &server),
    );

    // A creates a document and writes to it; both reach the server.
    let url = a
        .ok(&["create", r#"{"title": "groceries"}"#])
        .trim()
        .to_owned();
    assert!(url.starts_with("automerge:"), "{url}");
    a.ok(&["put", &url, "note", r#""buy milk""#]);
    // B has never seen it: it comes from the server.
    assert_eq!(
        b.get(&[&url]),
        json!({"title": "groceries", "note": "buy milk"})
    );
    assert_eq!(b.get(&[&url, "note"]), json!("buy milk"));

    // Both go offline and edit different parts.
    a.ok(&[
        "--offline",
        "text-splice",
        &url,
        "note",
        "8",
        "0",
        " and eggs",
    ]);
    a.ok(&["--offline", "put", &url, "from_a", "[1, 2.5, null]"]);
    a.ok(&["--offline", "put", &url, "gone", "{}"]);
    a.ok(&["--offline", "delete", &url, "gone"]);
    b.ok(&["--offline", "increment", &url, "visits"]);
    b.ok(&["--offline", "increment", &url, "visits", "2"]);
    b.ok(&["--offline", "put", "--string", &url, "from_b", "plain text"]);
    assert_eq!(
        a.get(&["--offline", &url, "note"]),
        json!("buy milk and eggs")
    );
    assert_eq!(b.get(&["--offline", &url, "note"]), json!("buy milk"));

    // Back online: each pushes its edits; reads pull the other's.
    assert_eq!(a.ok(&["sync"]).trim(), "synced 1 document(s)");
    assert_eq!(b.ok(&["sync"]).trim(), "synced 1 document(s)");
    let merged = json!({
        "title": "groceries",
        "note": "buy milk and eggs",
        "from_a": [1, 2.5, null],
        "visits": 3,
        "from_b": "plain text",
    });
    assert_eq!(a.get(&[&url]), merged);
    assert_eq!(b.get(&[&url]), merged);
    // Each replica now holds everything locally.
    assert_eq!(a.get(&["--offline", &url]), merged);
}

/// Reads lines of `from` on a thread, so that waits on them can be bounded.
fn lines(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn watch_prints_a_remote_change() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, server) = peer(dir.path());
    let (a, b) = (
        Replica::new(dir.path(), "a", &server),
        Replica::new(dir.path(), "b", &server),
    );
    let url = a.ok(&["create", r#"{"n": 1}"#]).trim().to_owned();

    let mut watcher = a
        .command(&["watch", &url, "--count", "1", "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines(watcher.stdout.take().unwrap());
    let stderr = lines(watcher.stderr.take().unwrap());
    loop {
        let line = stderr
            .recv_timeout(WAIT)
            .expect("watch says it is watching");
        assert!(
            !line.contains("panicked") && !line.contains("warning"),
            "{line}"
        );
        if line.starts_with("watching ") {
            break;
        }
    }

    b.ok(&["put", &url, "from_b", r#"{"x": true}"#]);
    let line = stdout.recv_timeout(WAIT).expect("watch prints the change");
    let change: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(change["origin"], json!("remote"), "{line}");
    assert_eq!(
        change["value"],
        json!({"n": 1, "from_b": {"x": true}}),
        "{line}"
    );
    let heads = change["heads"].as_array().unwrap();
    assert!(
        !heads.is_empty() && heads.iter().all(Value::is_string),
        "{line}"
    );
    // The heads in the line are the document's heads: a URL with them reads the same value.
    let at = format!(
        "{url}#{}",
        heads
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect::<Vec<_>>()
            .join("|")
    );
    assert_eq!(a.get(&["--offline", &at]), change["value"]);

    // --count 1 reached: it exits by itself, successfully.
    let status = (0..300)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            watcher.try_wait().unwrap()
        })
        .expect("watch exits after --count changes");
    assert!(status.success());
}

/// A replica whose server URL has nothing listening behind it. Returns (URL, replica).
fn unreachable_replica(dir: &Path) -> (String, Replica) {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("ws://{}/sync", dead.local_addr().unwrap());
    drop(dead);
    let r = Replica::new(dir, "r", &server);
    (server, r)
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (server, r) = unreachable_replica(dir.path());
    let url = r
        .ok(&["--offline", "create", r#"{"n": 1, "t": "text", "l": [0]}"#])
        .trim()
        .to_owned();
    let missing = concord::DocumentId::from_bytes([9; 16]).url().to_string();
    let missing = missing.as_str();

    let cases: &[(&[&str], &str)] = &[
        (
            &["--offline", "get", "automerge:not-a-url"],
            "is not a bs58check document id",
        ),
        (&["--offline", "get", &url, "a//b"], "malformed path `a//b`"),
        (
            &["--offline", "get", &url, "l/first"],
            "`first` is not a list index",
        ),
        (
            &["--offline", "get", &url, "n/x"],
            "`/n` is an integer, which has no keys or indexes",
        ),
        (&["--offline", "get", &url, "nope"], "no value at `/nope`"),
        (
            &["--offline", "put", &url, "k", "{oops"],
            "is not valid JSON",
        ),
        (
            &["--offline", "put", &url, "l/5", "1"],
            "index 5 is out of range at `/l/5` (length 1)",
        ),
        (&["--offline", "create", "[1, 2]"], "is not a JSON object"),
        (
            &["--offline", "text-splice", &url, "n", "0", "0", "x"],
            "`/n` is an integer, expected text",
        ),
        (
            &["--offline", "text-splice", &url, "t", "9", "0", "x"],
            "out of range",
        ),
        (
            &["--offline", "increment", &url, "t"],
            "`/t` is text, expected a counter",
        ),
        (
            &["--offline", "delete", &url, ""],
            "the document root cannot be deleted",
        ),
        (
            &["--offline", "get", missing],
            "is not in the local replica",
        ),
        (&["--offline", "sync"], "sync needs a server"),
        (&["--timeout=-3", "sync"], "the timeout cannot be negative"),
        (
            &["--timeout", "soon", "sync"],
            "`soon` is not a number of seconds",
        ),
        (&["--timeout", "0.5", "sync"], "no server reachable"),
        (
            &["--timeout", "0.5", "get", missing],
            "no server was reachable",
        ),
    ];
    for (args, expected) in cases {
        let stderr = r.fails(args);
        assert!(
            stderr.contains(expected),
            "concord doc {args:?}: expected `{expected}` in:\n{stderr}"
        );
    }
    // Failed writes changed nothing.
    assert_eq!(
        r.get(&["--offline", &url]),
        json!({"n": 1, "t": "text", "l": [0]})
    );

    // With the server unreachable, a write is still committed locally: exit 0 and a warning.
    let out = r.run(&["--timeout", "0.5", "put", &url, "n", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: no server reachable"), "{stderr}");
    // And a read falls back to the local copy, with a warning.
    let out = r.run(&["--timeout", "0.5", "get", &url, "n"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("showing the local copy"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");

    // Options also come from the environment.
    let out = Command::new(concord_bin())
        .env("CONCORD_DATA", &r.data)
        .env("CONCORD_OFFLINE", "1")
        .env("CONCORD_SERVER", format!("{server},{server}"))
        .env("CONCORD_TIMEOUT", "0.5")
        .env("CONCORD_LOG", "warn")
        .args(["doc", "get", &url, "n"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
}

/// With no server reachable, a write says at once that it is committed to the local replica and
/// that it waits for a server; Ctrl-C (SIGINT) ends that wait (exit status 130) and the write is
/// in the replica.
#[test]
fn a_write_without_a_server_is_committed_at_once_and_ctrl_c_ends_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = unreachable_replica(dir.path());
    let url = r
        .ok(&["--offline", "create", r#"{"n": 1}"#])
        .trim()
        .to_owned();

    // A wait far longer than the test's bounds: only the notice and Ctrl-C can end it in time.
    let mut writer = r
        .command(&["--timeout", "600", "put", &url, "n", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(writer.stderr.take().unwrap());
    let notice = loop {
        let Ok(line) = stderr.recv_timeout(WAIT) else {
            let _ = writer.kill();
            let _ = writer.wait();
            panic!("no notice that the write is committed and the server wait runs");
        };
        assert!(!line.contains("panicked"), "{line}");
        if line.starts_with("committed to the local replica") {
            break line;
        }
    };
    assert!(
        notice.contains("waiting up to") && notice.contains("Ctrl-C"),
        "{notice}"
    );
    assert!(!notice.contains("token="), "{notice}");

    let sent = Command::new("kill")
        .args(["-INT", &writer.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let Some(status) = (0..300).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        writer.try_wait().unwrap()
    }) else {
        let _ = writer.kill();
        let _ = writer.wait();
        panic!("concord doc put did not exit after Ctrl-C");
    };
    let rest: Vec<String> = std::iter::from_fn(|| stderr.recv_timeout(WAIT).ok()).collect();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.starts_with("interrupted") && l.contains("committed to the local replica")),
        "{rest:?}"
    );
    // Nothing was lost: the write is in the replica.
    assert_eq!(r.get(&["--offline", &url]), json!({"n": 2}));
}

/// The replication seed's example: two datacenters rename the same user concurrently. Under
/// `lww` the later write wins on every replica; `conflicts` lists both with their HLC times;
/// `resolve` settles it everywhere.
#[test]
fn two_datacenters_rename_concurrently_and_policies_settle_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, server) = peer(dir.path());
    let (eu, us) = (
        Replica::new(dir.path(), "eu", &server),
        Replica::new(dir.path(), "us", &server),
    );
    let url = eu.ok(&["create", r#"{"name": "Alice"}"#]).trim().to_owned();
    assert_eq!(us.get(&[&url, "name"]), json!("Alice"));

    // Offline, each datacenter renames her; "us" writes a little later.
    eu.ok(&["--offline", "put", &url, "name", r#""Alice Smith""#]);
    std::thread::sleep(Duration::from_millis(20));
    us.ok(&["--offline", "put", &url, "name", r#""Alice Jones""#]);
    eu.ok(&["sync"]);
    us.ok(&["sync"]);
    eu.ok(&["sync"]);

    // Both names are there as concurrent candidates, with who and when.
    let listed: Value = serde_json::from_str(&eu.ok(&["conflicts", &url, "name"])).unwrap();
    let values: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["value"])
        .collect();
    assert_eq!(values.len(), 2, "{listed}");
    assert!(
        values.contains(&&json!("Alice Smith")) && values.contains(&&json!("Alice Jones")),
        "{listed}"
    );

    // Last writer wins (by HLC), identically on both replicas.
    for r in [&eu, &us] {
        assert_eq!(
            r.get(&["--policy", "name=lww", "--resolved", &url, "name"]),
            json!("Alice Jones")
        );
    }

    // Someone settles it: the conflict is gone on every replica.
    eu.ok(&[
        "--policy",
        "name=keep-conflicts",
        "resolve",
        &url,
        "name",
        r#""Alice Smith-Jones""#,
    ]);
    us.ok(&["sync"]);
    for r in [&eu, &us] {
        assert_eq!(r.get(&[&url, "name"]), json!("Alice Smith-Jones"));
        let left: Value = serde_json::from_str(&r.ok(&["conflicts", &url, "name"])).unwrap();
        assert_eq!(
            left.as_array().map(Vec::len),
            Some(0),
            "no conflict left: {left}"
        );
    }
    eu.fails(&["--policy", "name=no-such-policy", "get", "--resolved", &url]);
}

/// Runs `concord ARGS` (not `doc`), which must succeed; returns its stdout, trimmed.
fn concord(args: &[&str]) -> String {
    let out = Command::new(concord_bin()).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "concord {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `concord token create|revoke --principal P` with the key of the server whose data is in `dir`.
fn token(dir: &Path, action: &str, principal: &str) -> String {
    let data = dir.join("server");
    let data = data.to_str().unwrap();
    concord(&["token", action, "--data", data, "--principal", principal])
}

/// The lines of `log`, parsed.
fn log(r: &Replica, url: &str) -> Vec<Value> {
    r.ok(&["log", url])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Two writers with their own tokens: `log` names each change's author, `diff` shows what
/// changed, `restore` brings a version back for everyone, `ls` lists each principal's documents,
/// and bad input (unknown heads or documents, deleted documents, a revoked token) fails clearly.
#[test]
fn history_names_the_writers_and_restore_and_ls_work_through_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, dev_url) = peer(dir.path());
    let base = dev_url.split('?').next().unwrap().to_owned();
    let alice_token = token(dir.path(), "create", "alice");
    let alice = Replica::new(dir.path(), "alice", &format!("{base}?token={alice_token}"));
    let bob = Replica::new(
        dir.path(),
        "bob",
        &format!("{base}?token={}", token(dir.path(), "create", "bob")),
    );

    let url = alice
        .ok(&["create", r#"{"title": "draft"}"#])
        .trim()
        .to_owned();
    alice.ok(&["put", &url, "title", r#""second""#]);
    bob.ok(&["put", &url, "title", r#""final""#]);

    // The server records authors as it commits; wait (bounded) until every change has one.
    let mut changes = Vec::new();
    for _ in 0..100 {
        changes = log(&alice, &url);
        if changes.iter().all(|c| !c["author"].is_null()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let authors: Vec<&str> = changes
        .iter()
        .map(|c| c["author"]["principal"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(authors.first(), Some(&"bob"), "newest first: {changes:?}");
    assert!(
        authors.len() >= 3 && authors[1..].iter().all(|a| *a == "alice"),
        "{authors:?}"
    );
    // The oldest depends on nothing; ops are counted.
    assert!(changes[0]["ops"].as_u64().unwrap() > 0, "{changes:?}");
    assert_eq!(changes.last().unwrap()["deps"], json!([]));
    let newest = changes[0]["hash"].as_str().unwrap().to_owned();
    let seconded = changes[1]["hash"].as_str().unwrap().to_owned();
    // Paging: one at a time, the cursor printed on stderr.
    let out = alice.run(&["log", &url, "--limit", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("more: --after {newest}")),
        "{stderr}"
    );
    let second_page = alice.ok(&["log", &url, "--limit", "1", "--after", &newest]);
    assert!(second_page.contains(&seconded), "{second_page}");

    // diff: what bob changed.
    let patches: Value =
        serde_json::from_str(&alice.ok(&["diff", &url, &seconded, &newest])).unwrap();
    assert_eq!(
        patches,
        json!([{"action": "put", "path": "/title", "value": "final"}])
    );

    // restore alice's version: one new change, which bob receives like any other.
    let restored = alice.ok(&["restore", &url, &seconded]);
    assert!(restored.starts_with("restored automerge:"), "{restored}");
    assert_eq!(bob.get(&[&url, "title"]), json!("second"));
    assert_eq!(log(&bob, &url).len(), changes.len() + 1);
    let again = alice.ok(&["restore", &url, &seconded]);
    assert!(again.starts_with("unchanged"), "{again}");

    // ls: alice created it, bob did not (he only wrote to it); bob's replica holds it.
    let listed = alice.ok(&["ls"]);
    assert_eq!(listed.trim(), format!("{url}\tcreated"), "{listed}");
    assert_eq!(bob.ok(&["ls"]).trim(), "");
    assert_eq!(bob.ok(&["ls", "--local"]).trim(), url);

    // Bad input: typed errors with clear messages, nothing changed.
    let unknown = concord::id::encode_head(&automerge::ChangeHash([9; 32]));
    let e = alice.fails(&["restore", &url, &unknown]);
    assert!(e.contains("this document has no change"), "{e}");
    let e = alice.fails(&["diff", &url, &unknown, &newest]);
    assert!(e.contains("from: this document has no change"), "{e}");
    let e = alice.fails(&["diff", &url, "not-a-hash", &newest]);
    assert!(e.contains("as `log` prints them"), "{e}");
    assert_eq!(alice.get(&[&url, "title"]), json!("second"));
    let nobody = concord::DocumentId::from_bytes([7; 16]).url().to_string();
    let e = alice.fails(&["log", &nobody]);
    assert!(e.contains("was not found"), "{e}");
    let other = alice.ok(&["create", "{}"]).trim().to_owned();
    alice.ok(&["rm", &other]);
    let e = alice.fails(&["log", &other]);
    assert!(e.contains("was deleted"), "{e}");
    assert!(
        !alice.ok(&["ls"]).contains(&other),
        "deleted documents are not listed"
    );

    // A revoked token cannot list any more.
    token(dir.path(), "revoke", "alice");
    let mut refused = String::new();
    for _ in 0..100 {
        let out = alice.run(&["ls"]);
        if !out.status.success() {
            refused = String::from_utf8_lossy(&out.stderr).into_owned();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused.contains("refused the request (401)"), "{refused}");
}
