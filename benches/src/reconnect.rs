//! Benchmark 4: reconnect of N in-sync documents vs in-process automerge sync of the same docs.
//!
//! N small documents (a 100-op text each) are in the server's SQLite and on one client peer
//! (with a storage id, as an automerge-repo browser client has), already in sync: a first
//! session synced them all and both sides persisted their sync states. The client reconnects
//! and sends one sync message per document, built from its persisted sync state.
//!
//! Concord, two cases: *warm* (the same server process, documents resident) and *cold* (a
//! restarted server: every document loads from SQLite). Measured: wall time from the first
//! message until every document is answered and storage is idle. The client's messages are
//! built beforehand (not timed).
//!
//! Reference, same run: in-process automerge sync of the same documents with the same
//! persisted states, both halves (client and server `generate`/`receive` until both are
//! quiet), and its server half alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::{ActorId, Automerge};
use concord::storage::{ChunkKey, SqliteConfig, SqliteStorage, Storage, Synchronous};
use concord::wire::{self, Message};
use concord::{ConnId, DocumentId, PeerId, StorageId};

use crate::docgen;
use crate::harness::Harness;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Documents.
    #[arg(long, default_value_t = 10_000)]
    pub docs: usize,
}

fn doc_id(i: usize) -> DocumentId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    DocumentId::from_bytes(id)
}

/// Delivers `msgs` (doc, data) on `conn` and runs the server until it is idle.
fn session(
    h: &mut Harness,
    conn: ConnId,
    peer: &PeerId,
    msgs: &[(DocumentId, Vec<u8>)],
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    h.connect(conn, peer, Some(StorageId::from("bench-client")));
    for (d, data) in msgs {
        h.sync(conn, peer, *d, data.clone());
        h.poll_storage(Duration::ZERO);
    }
    while !h.core.is_idle() || h.pending() > 0 {
        h.poll_storage(Duration::from_millis(5));
        if t.elapsed() > Duration::from_secs(900) {
            anyhow::bail!("reconnect did not settle");
        }
    }
    Ok(t.elapsed())
}

/// The server's replies on `conn`, per document, in order.
fn replies(h: &mut Harness, conn: ConnId) -> Vec<(DocumentId, Vec<u8>)> {
    h.sent
        .drain(..)
        .filter(|(c, _)| *c == conn)
        .filter_map(|(_, bytes)| match wire::decode(&bytes, usize::MAX) {
            Ok(Message::Sync {
                document_id, data, ..
            }) => Some((document_id, data)),
            _ => None,
        })
        .collect()
}

pub fn run(a: &Args, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let base = docgen::text_doc(100, 10)?;
    let bytes = base.save();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("concord.db");
    let docs: Vec<DocumentId> = (0..a.docs).map(doc_id).collect();
    rt.block_on(async {
        // Seeding is not measured: synchronous=NORMAL to keep it short.
        let mut cfg = SqliteConfig::new(&path);
        cfg.synchronous = Synchronous::Normal;
        let s = SqliteStorage::open(cfg).await?;
        for d in &docs {
            s.append(d, ChunkKey::of(&bytes), &bytes).await?;
        }
        s.close().await;
        anyhow::Ok(())
    })?;
    let open = || -> anyhow::Result<Arc<dyn Storage>> {
        let s = rt.block_on(SqliteStorage::open(SqliteConfig::new(&path)))?;
        Ok(Arc::new(s))
    };
    let client = base.fork().with_actor(ActorId::from([42u8; 16]));
    let peer = PeerId::from("bench-client");

    // First session: sync everything once; both sides keep their sync states.
    let mut h = Harness::new(open()?, rt.handle().clone())?;
    let mut client_states: Vec<sync::State> = docs.iter().map(|_| sync::State::new()).collect();
    let first: Vec<(DocumentId, Vec<u8>)> = docs
        .iter()
        .zip(client_states.iter_mut())
        .filter_map(|(d, st)| client.generate_sync_message(st).map(|m| (*d, m.encode())))
        .collect();
    session(&mut h, ConnId(1), &peer, &first)?;
    let index: std::collections::HashMap<DocumentId, usize> =
        docs.iter().enumerate().map(|(i, d)| (*d, i)).collect();
    for (d, data) in replies(&mut h, ConnId(1)) {
        if let Some(&i) = index.get(&d) {
            client
                .clone()
                .receive_sync_message(&mut client_states[i], sync::Message::decode(&data)?)?;
        }
    }
    // What an automerge-repo client persists and reloads: the encoded sync state.
    let persisted: Vec<Vec<u8>> = client_states.iter().map(sync::State::encode).collect();
    let reconnect_msgs = || -> anyhow::Result<Vec<(DocumentId, Vec<u8>)>> {
        let mut out = Vec::new();
        for (d, enc) in docs.iter().zip(&persisted) {
            let mut st = sync::State::decode(enc)?;
            if let Some(m) = client.generate_sync_message(&mut st) {
                out.push((*d, m.encode()));
            }
        }
        Ok(out)
    };

    // Warm: the same server, documents resident, the connection dropped and re-established.
    let msgs = reconnect_msgs()?;
    let now = h.now();
    h.core.handle_disconnect(now, ConnId(1));
    h.sent.clear();
    let busy0 = h.busy;
    let warm = session(&mut h, ConnId(2), &peer, &msgs)?;
    let warm_busy = h.busy - busy0;
    let warm_replies = replies(&mut h, ConnId(2)).len();
    h.finish();

    // Cold: a restarted server.
    let mut h = Harness::new(open()?, rt.handle().clone())?;
    let cold = session(&mut h, ConnId(1), &peer, &msgs)?;
    let cold_busy = h.busy;
    let cold_replies = replies(&mut h, ConnId(1)).len();
    h.finish();

    // Reference: in-process automerge sync of the same documents, persisted states both sides.
    let server_doc = Automerge::load(&bytes)?;
    let mut server_states: Vec<sync::State> = Vec::with_capacity(docs.len());
    for _ in &docs {
        // The server's persisted state after the first session: shared heads = the heads.
        let mut st = sync::State::new();
        st.shared_heads = server_doc.get_heads();
        server_states.push(sync::State::decode(&st.encode())?);
    }
    // One in-memory copy of each document per side, made before the clock starts.
    let mut pairs: Vec<(Automerge, Automerge)> = docs
        .iter()
        .map(|_| (client.clone(), server_doc.clone()))
        .collect();
    let mut server_half = Duration::ZERO;
    let t = Instant::now();
    for ((enc, sst), (c, s)) in persisted
        .iter()
        .zip(server_states.iter_mut())
        .zip(pairs.iter_mut())
    {
        let mut cst = sync::State::decode(enc)?;
        loop {
            let mut quiet = true;
            if let Some(m) = c.generate_sync_message(&mut cst) {
                let t1 = Instant::now();
                s.receive_sync_message(sst, m)?;
                server_half += t1.elapsed();
                quiet = false;
            }
            let t1 = Instant::now();
            let reply = s.generate_sync_message(sst);
            server_half += t1.elapsed();
            if let Some(m) = reply {
                c.receive_sync_message(&mut cst, m)?;
                quiet = false;
            }
            if quiet {
                break;
            }
        }
    }
    let reference = t.elapsed();
    // The floor of a cold reconnect: parsing every document once.
    drop(pairs);
    let t = Instant::now();
    for _ in &docs {
        std::hint::black_box(Automerge::load(&bytes)?);
    }
    let loads = t.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "# reconnect: {} in-sync documents (100-op texts), one connection, persisted sync states",
        a.docs
    );
    println!(
        "concord warm (resident)    {:>9.1} ms  ({} replies; core {:.1} ms)",
        ms(warm),
        warm_replies,
        ms(warm_busy)
    );
    println!(
        "concord cold (restarted)   {:>9.1} ms  ({} replies; core {:.1} ms, includes loading every document from SQLite)",
        ms(cold),
        cold_replies,
        ms(cold_busy)
    );
    println!(
        "in-process sync, both ends {:>9.1} ms  (of which the server half {:.1} ms)",
        ms(reference),
        ms(server_half)
    );
    println!(
        "Automerge::load of every doc {:>9.1} ms  (the floor under a cold reconnect)",
        ms(loads)
    );
    println!(
        "ratio warm / in-process {:.2}, cold / in-process {:.2} (target <= 2), cold / (in-process + loads) {:.2}",
        ms(warm) / ms(reference),
        ms(cold) / ms(reference),
        ms(cold) / (ms(reference) + ms(loads))
    );
    Ok(())
}
