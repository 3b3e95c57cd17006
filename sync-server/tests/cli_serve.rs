//! `concord serve` as a real process: what a user sees when it cannot start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};

/// A port already in use: one clear line on stderr, nothing on stdout, a non-zero exit, and
/// nothing created (the address is bound before the data directory is touched).
#[test]
fn a_port_in_use_is_one_clear_line_and_a_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["serve", "--bind", &addr, "--data", data.to_str().unwrap()])
        .env_remove("CONCORD_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    assert!(line.contains(&format!("cannot listen on {addr}")), "{line}");
    assert!(line.contains("--bind"), "says what to do: {line}");
    assert_eq!(
        line.matches("in use").count(),
        1,
        "the cause once, not repeated: {line}"
    );
    assert!(!data.exists(), "nothing created before the bind");
    drop(taken);
}
