//! SIGKILL a writer at random moments, 200 times: every acknowledged change must survive, and
//! SQLite must pass `PRAGMA integrity_check`. Compaction runs every 4 commits, so many kills land
//! inside one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use automerge::{Automerge, ROOT, ReadDoc};
use concord::DocumentId;
use concord::storage::{SqliteConfig, SqliteStorage, Storage};
use concord_tests::Proc;
use rand::{Rng, SeedableRng};

const ITERATIONS: usize = 200;

#[test]
fn acknowledged_writes_survive_sigkill() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    println!("crash test seed {seed} (set CRASH_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let db_str = db.to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_crash-writer");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut doc: Option<String> = None;
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut kills_mid_run = 0;
    for run in 0..ITERATIONS {
        let run_s = run.to_string();
        let mut args = vec![db_str, run_s.as_str()];
        if let Some(d) = &doc {
            args.push(d);
        }
        let mut p = Proc::spawn(bin, &args).unwrap();
        let Some(id) = p.expect("DOC ") else {
            panic!("writer run {run} exited before printing its document");
        };
        doc.get_or_insert(id);
        // Kill after a random number of acks or a random time, whichever comes first.
        let want = rng.random_range(0..40usize);
        let budget = Duration::from_micros(rng.random_range(0..60_000));
        let start = Instant::now();
        let mut got = 0;
        while got < want && start.elapsed() < budget {
            match p.line() {
                Some(l) => {
                    if let Some(k) = l.strip_prefix("ACK ") {
                        acked.insert(k.to_owned());
                        got += 1;
                    }
                }
                None => panic!("writer run {run} died on its own"),
            }
        }
        p.child.kill().unwrap(); // SIGKILL
        p.child.wait().unwrap();
        // Lines already written before the kill were acknowledged too.
        while let Some(l) = p.line() {
            if let Some(k) = l.strip_prefix("ACK ") {
                acked.insert(k.to_owned());
                kills_mid_run += 1;
            }
        }

        // Reopen the store as a fresh process would and check it.
        let id: DocumentId = doc.as_ref().unwrap().parse().unwrap();
        rt.block_on(async {
            let s = SqliteStorage::open(SqliteConfig::new(&db)).await.unwrap();
            assert_eq!(s.integrity_check().await.unwrap(), "ok", "run {run}");
            let stored = s.load(&id).await.unwrap();
            let bytes: Vec<u8> = stored.chunks.iter().flat_map(|c| c.bytes.clone()).collect();
            let am = Automerge::load(&bytes)
                .unwrap_or_else(|e| panic!("run {run}: stored doc does not load: {e}"));
            for k in &acked {
                assert!(
                    am.get(ROOT, k.as_str()).unwrap().is_some(),
                    "run {run}: acknowledged {k} lost"
                );
            }
            s.close().await;
        });
    }
    println!(
        "{ITERATIONS} kills, {} acknowledged writes verified ({kills_mid_run} read after the kill)",
        acked.len()
    );
    assert!(
        acked.len() > ITERATIONS,
        "the writer should have acknowledged plenty of writes"
    );
}
