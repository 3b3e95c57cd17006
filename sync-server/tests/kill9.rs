//! `kill -9` of a real `concord serve` process during a write loop loses nothing the server had
//! acknowledged: every head the client learned from the server is in the server's database
//! after the kill, and the server serves it after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ROOT};
use concord::storage::{MemoryStorage, SqliteConfig, SqliteStorage, Storage};
use concord::{Repo, RepoConfig};
use rand::{Rng, SeedableRng};

const KILLS: usize = 6;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn token(data: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args([
            "token",
            "create",
            "--data",
            data.to_str().unwrap(),
            "--ttl",
            "10m",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn start(data: &std::path::Path, bind: &str) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["serve", "--bind", bind, "--data", data.to_str().unwrap()])
        .env("CONCORD_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().expect("server prints its address").unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("address in the ready line")
        .to_owned();
    (Server(child), addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_the_server() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x9);
    // A data directory only its owner can open (the server refuses others).
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let (mut server, addr) = start(dir.path(), "127.0.0.1:0");
    let token = token(dir.path());
    let mut config = RepoConfig::default().with_server(format!("ws://{addr}/sync?token={token}"));
    config.backoff.initial = Duration::from_millis(20);
    config.backoff.max = Duration::from_millis(200);
    let client = Repo::open(Arc::new(MemoryStorage::new()), config)
        .await
        .unwrap();
    client
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let doc = client.create().await.unwrap();
    let mut acknowledged: BTreeSet<ChangeHash> = BTreeSet::new();
    let mut writes = 0u64;

    for kill in 0..KILLS {
        // Write until a random moment, collecting the heads the server says it holds.
        let stop_after = Duration::from_millis(rng.random_range(50..400));
        let began = std::time::Instant::now();
        while began.elapsed() < stop_after {
            doc.change(|tx| tx.put(ROOT, format!("k{writes}").as_str(), writes as i64))
                .await
                .unwrap();
            writes += 1;
            for s in doc.sync_status().unwrap() {
                if let Some(h) = s.their_heads {
                    acknowledged.extend(h);
                }
            }
            tokio::task::yield_now().await;
        }
        server.0.kill().unwrap(); // SIGKILL
        server.0.wait().unwrap();

        // Everything the server acknowledged is in its database.
        let storage = SqliteStorage::open(SqliteConfig::new(dir.path().join("concord.db")))
            .await
            .unwrap();
        assert_eq!(storage.integrity_check().await.unwrap(), "ok");
        let stored = storage.load(&doc.id()).await.unwrap();
        let bytes: Vec<u8> = stored.chunks.iter().flat_map(|c| c.bytes.clone()).collect();
        let on_disk = Automerge::load(&bytes).unwrap();
        for h in &acknowledged {
            assert!(
                on_disk.get_change_meta_by_hash(h).is_some(),
                "kill {kill}: acknowledged head {h} lost"
            );
        }
        storage.close().await;
        println!(
            "kill {kill}: {writes} writes so far, {} acknowledged heads verified",
            acknowledged.len()
        );

        // Restart on the same address; the client reconnects by itself and catches the server up.
        let (s, _) = start(dir.path(), &addr);
        server = s;
        client
            .wait_connected(Duration::from_secs(10))
            .await
            .unwrap();
    }
    doc.wait_synced(Duration::from_secs(10)).await.unwrap();
    assert!(
        acknowledged.len() > KILLS,
        "the server acknowledged writes along the way"
    );
    client.shutdown().await;
}
