//! Anti-entropy figures: what a reconnect of two regions holding the same documents costs, and
//! what bootstrapping an empty region costs, against per-document Automerge sync of the same
//! documents (the reference: what a reconnect costs without digests).
//!
//! Run: `cargo run --release -p concord --example anti_entropy -- [DOCS]` (default 10000).
//! Prints figures; asserts only that the regions end up holding the same documents.

use std::time::Instant;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use concord::core::{Core, CoreConfig, Effect, Grant, RegionConfig, ServerPolicy};
use concord::storage::{ChunkKey, MemoryStorage};
use concord::{ConnId, DocumentId, PeerId, StorageId};

fn region(name: &str, disk: &MemoryStorage) -> Core {
    let config = CoreConfig::new(PeerId::from(name), Some(StorageId::from(name)), 7)
        .with_policy(std::sync::Arc::new(ServerPolicy))
        .with_region(RegionConfig::new(name));
    let mut core = Core::new(config);
    core.seed_heads_index(disk.heads_index_sync().unwrap_or_default());
    core
}

/// Runs storage inline; returns frames to send.
fn drive(core: &mut Core, disk: &MemoryStorage) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(effect) = core.poll_effect() {
        match effect {
            Effect::Send { bytes, .. } => out.push(bytes),
            Effect::Storage { id, op } => {
                let reply = op.run_on(disk);
                core.handle_storage_result(0, id, reply);
            }
            _ => {}
        }
    }
    out
}

/// Connects b (dialer) to a and shuttles frames until both are quiet: (frames, bytes, ms).
fn link(a: &mut Core, da: &MemoryStorage, b: &mut Core, db: &MemoryStorage) -> (usize, usize, f64) {
    let start = Instant::now();
    let (ca, cb) = (ConnId(1), ConnId(1));
    a.handle_accept_with_grant(0, ca, Some(Grant::region("b")));
    b.handle_connect(0, cb);
    let (mut frames, mut bytes) = (0, 0);
    let mut to_a = drive(b, db);
    loop {
        let mut to_b = Vec::new();
        for f in to_a.drain(..) {
            frames += 1;
            bytes += f.len();
            a.handle_message(0, ca, &f);
            to_b.extend(drive(a, da));
        }
        to_b.extend(drive(a, da));
        if to_b.is_empty() {
            break;
        }
        for f in to_b {
            frames += 1;
            bytes += f.len();
            b.handle_message(0, cb, &f);
            to_a.extend(drive(b, db));
        }
        if to_a.is_empty() {
            break;
        }
    }
    (frames, bytes, start.elapsed().as_secs_f64() * 1e3)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let (disk_a, disk_b, empty) = (
        MemoryStorage::new(),
        MemoryStorage::new(),
        MemoryStorage::new(),
    );
    let mut docs = Vec::with_capacity(n);
    for i in 0..n {
        let mut d = Automerge::new();
        let mut tx = d.transaction();
        let _ = tx.put(ROOT, "title", format!("document {i}"));
        tx.commit();
        let bytes = d.save();
        let id = DocumentId::from_bytes(rand_id(i));
        let heads: Vec<u8> = d.get_heads().iter().flat_map(|h| h.0).collect();
        for disk in [&disk_a, &disk_b] {
            let _ = disk.append_sync(&id, ChunkKey::of(&bytes), &bytes);
            let _ = disk.put_heads_sync(&id, &heads);
        }
        docs.push(d);
    }
    println!("anti-entropy, {n} documents of one change each (in-process cores, memory storage)");

    // 1. Reconnect of two regions already in sync.
    let (mut a, mut b) = (region("a", &disk_a), region("b", &disk_b));
    let (frames, bytes, ms) = link(&mut a, &disk_a, &mut b, &disk_b);
    println!("reconnect in sync:      {frames:>7} frames {bytes:>10} bytes {ms:>9.2} ms");

    // Reference: one Automerge sync exchange per document (fresh sync states, as after a
    // reconnect without a digest), both sides in process.
    let start = Instant::now();
    let (mut rbytes, mut rmsgs) = (0usize, 0usize);
    for d in &docs {
        let (mut x, mut y) = (d.clone(), d.clone());
        let (mut sx, mut sy) = (sync::State::new(), sync::State::new());
        loop {
            let mut progressed = false;
            if let Some(m) = x.generate_sync_message(&mut sx) {
                let enc = m.encode();
                rbytes += enc.len();
                rmsgs += 1;
                if let Ok(m) = sync::Message::decode(&enc) {
                    let _ = y.receive_sync_message(&mut sy, m);
                }
                progressed = true;
            }
            if let Some(m) = y.generate_sync_message(&mut sy) {
                let enc = m.encode();
                rbytes += enc.len();
                rmsgs += 1;
                if let Ok(m) = sync::Message::decode(&enc) {
                    let _ = x.receive_sync_message(&mut sx, m);
                }
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
    }
    let rms = start.elapsed().as_secs_f64() * 1e3;
    println!("per-document sync (ref): {rmsgs:>7} msgs   {rbytes:>10} bytes {rms:>9.2} ms");
    println!(
        "ratio (digest / per-document): bytes {:.4}, time {:.4}",
        bytes as f64 / rbytes.max(1) as f64,
        ms / rms.max(1e-9)
    );

    // 2. Bootstrap of an empty region.
    let (mut a, mut c) = (region("a", &disk_a), region("c", &empty));
    let (frames, bytes, ms) = link(&mut a, &disk_a, &mut c, &empty);
    println!("bootstrap empty region: {frames:>7} frames {bytes:>10} bytes {ms:>9.2} ms");
    let got = c.indexed_documents();
    println!("bootstrapped documents: {got} of {n}");
    assert_eq!(got, n, "the empty region must end up with every document");
}

/// Deterministic, well-spread document ids.
fn rand_id(i: usize) -> [u8; 16] {
    use sha2::Digest;
    let h = sha2::Sha256::digest(i.to_le_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[..16]);
    id
}
