//! Two native clients, each its own process with its own SQLite replica, sync through a peer
//! process over real WebSockets on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use concord_tests::Proc;
use serde_json::{Value, json};

fn client(server: &str, db: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec![server, db.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_test-client"))
        .args(&all)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "test-client {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json_of(out: &str) -> Value {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("JSON "))
        .expect("a JSON line");
    serde_json::from_str(line).unwrap()
}

#[test]
fn two_client_processes_sync_through_a_peer_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut peer = Proc::spawn(
        env!("CARGO_BIN_EXE_test-peer"),
        &[dir.path().join("peer.db").to_str().unwrap()],
    )
    .unwrap();
    let url = peer.expect("LISTEN ").expect("peer prints its URL");
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));

    let created = client(&url, &a, &["create"]);
    let doc = created
        .lines()
        .find_map(|l| l.strip_prefix("DOC "))
        .unwrap()
        .to_owned();
    client(&url, &a, &["put", &doc, "from_a", "hello"]);

    // B has never seen the document: it finds it through the peer.
    assert_eq!(
        json_of(&client(&url, &b, &["get", &doc])),
        json!({"from_a": "hello"})
    );
    client(&url, &b, &["put", &doc, "from_b", "world"]);
    assert_eq!(
        json_of(&client(&url, &a, &["get", &doc])),
        json!({"from_a": "hello", "from_b": "world"})
    );
}
