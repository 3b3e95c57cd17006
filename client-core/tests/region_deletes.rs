//! Seeded simulation of deletions across regions: three region servers, a client on each,
//! random writes and deletions, partitions, message loss, reordering, duplicates, crashes with
//! storage rollback and client failover. 100 seeds, each replayed twice with identical logs.
//!
//! Invariants, after healing:
//! - a document whose deletion was committed anywhere is deleted everywhere: every region and
//!   client holds its tombstone and serves no content for it; clients hold no stored bytes of
//!   it (they purge at once);
//! - a client that wrote to a document after it was deleted elsewhere learned of the deletion
//!   (a `DocDeleted` event: its edits are refused, not silently lost);
//! - every other document converges, with every acknowledged write.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc};
use concord::DocumentId;
use concord::core::Event;
use concord::sim::{Chaos, Sim};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const AE_MS: u64 = 1_000;

fn run_seed(seed: u64) -> (Vec<String>, usize, usize) {
    let mut sim = Sim::new(seed);
    let regions = [
        sim.add_region("r0", AE_MS),
        sim.add_region("r1", AE_MS),
        sim.add_region("r2", AE_MS),
    ];
    let clients = [sim.add_peer("c0"), sim.add_peer("c1"), sim.add_peer("c2")];
    let mut region_links = vec![
        sim.connect_region(regions[1], regions[0]),
        sim.connect_region(regions[2], regions[0]),
        sim.connect_region(regions[2], regions[1]),
    ];
    let mut client_links: Vec<(usize, usize)> = (0..3)
        .map(|i| (sim.connect(clients[i], regions[i]), i))
        .collect();
    let mut docs = Vec::new();
    for k in 0..4 {
        let c = clients[k % 3];
        let doc = sim.create(c).expect("create");
        sim.change(c, doc, |tx| tx.put(ROOT, "origin", k as i64))
            .expect("first write");
        docs.push(doc);
    }
    sim.run_until_quiescent(100_000).expect("setup converges");
    for &c in &clients {
        for &d in &docs {
            sim.find(c, d);
        }
    }
    sim.run_until_quiescent(100_000).expect("finds converge");

    let mut rng = StdRng::seed_from_u64(seed ^ 0xde1e7e);
    sim.chaos = Chaos {
        reorder: rng.random_bool(0.5),
        duplicate_pct: rng.random_range(0..10),
        retry_pct: rng.random_range(0..15),
        async_storage: rng.random_bool(0.7),
    };
    let mut deleted: BTreeSet<DocumentId> = BTreeSet::new();
    // (client, doc) pairs where a client wrote to a document it had not seen deleted.
    let mut writes: Vec<(usize, DocumentId, String)> = Vec::new();
    for round in 0..10 {
        for (ci, &c) in clients.iter().enumerate() {
            let doc = docs[rng.random_range(0..docs.len())];
            if rng.random_range(0..10) == 0 {
                if sim.delete(c, doc).is_ok() {
                    sim.flush_storage(c); // committed: the deletion is acknowledged
                    deleted.insert(doc);
                }
                continue;
            }
            let key = format!("c{ci}-r{round}");
            if sim
                .change(c, doc, |tx| tx.put(ROOT, key.as_str(), 1))
                .is_ok()
            {
                sim.flush_storage(c);
                writes.push((ci, doc, key));
            }
        }
        match rng.random_range(0..6) {
            0 => {
                let l = rng.random_range(0..region_links.len());
                sim.disconnect(region_links[l]);
            }
            1 => sim.crash(regions[rng.random_range(0..3)]),
            2 => {
                let ci = rng.random_range(0..3);
                let (link, at) = client_links[ci];
                sim.disconnect(link);
                let to = (at + 1 + rng.random_range(0..2)) % 3;
                client_links[ci] = (sim.connect(clients[ci], regions[to]), to);
            }
            3 => sim.crash(clients[rng.random_range(0..3)]),
            _ => {}
        }
        for _ in 0..rng.random_range(0..400) {
            if !sim.step() {
                break;
            }
        }
        if rng.random_bool(0.3) {
            sim.advance(AE_MS);
        }
    }
    // Heal everything.
    sim.chaos = Chaos::default();
    for l in &mut region_links {
        if !sim.link_up(*l) {
            *l = sim.redial(*l);
        }
    }
    for (ci, (link, at)) in client_links.iter_mut().enumerate() {
        if !sim.link_up(*link) {
            *link = sim.connect(clients[ci], regions[*at]);
        }
    }
    for _ in 0..5 {
        sim.run_until_quiescent(500_000).expect("quiescent");
        sim.advance(AE_MS);
    }
    sim.run_until_quiescent(500_000).expect("quiescent");
    // Clients open the documents they hold (an app does at start: `Repo::load_all`), which
    // asks their server about each.
    for &c in &clients {
        for &d in &docs {
            sim.find(c, d);
        }
    }
    sim.run_until_quiescent(500_000)
        .expect("quiescent after opening");

    let everyone: Vec<usize> = regions.iter().chain(&clients).copied().collect();
    for &d in &deleted {
        for &p in &everyone {
            let name = sim.peer(p).name.clone();
            assert!(
                sim.peer(p).core.tombstone(&d).is_some(),
                "seed {seed}: {name} never learned that {d} was deleted"
            );
            assert!(
                sim.document(p, d).is_none(),
                "seed {seed}: {name} still serves deleted {d}"
            );
        }
        for &c in &clients {
            let stored = sim.peer(c).disk.load_sync(&d).unwrap();
            assert!(
                stored.is_empty(),
                "seed {seed}: a client kept the bytes of {d}"
            );
        }
    }
    // A client whose edits met a deletion was told.
    let told: BTreeMap<usize, BTreeSet<DocumentId>> = clients
        .iter()
        .enumerate()
        .map(|(ci, &c)| {
            let docs = sim
                .peer(c)
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::DocDeleted { doc, .. } => Some(*doc),
                    _ => None,
                })
                .collect();
            (ci, docs)
        })
        .collect();
    for (ci, doc, _) in &writes {
        if deleted.contains(doc) {
            assert!(
                told[ci].contains(doc),
                "seed {seed}: c{ci} wrote to {doc}, which was deleted, and was never told"
            );
        }
    }
    // The rest converged with every write.
    for &d in docs.iter().filter(|d| !deleted.contains(d)) {
        let reference = {
            let mut h = sim.heads(regions[0], d);
            h.sort();
            h
        };
        for &p in &everyone {
            let now = sim.now();
            sim.peer_mut(p).core.load(now, d);
            sim.flush_storage(p);
            let mut h = sim.heads(p, d);
            h.sort();
            assert_eq!(
                h,
                reference,
                "seed {seed}: {} diverged on {d}",
                sim.peer(p).name
            );
        }
        for (ci, doc, key) in writes.iter().filter(|(_, doc, _)| *doc == d) {
            let am = sim.document(regions[0], *doc).expect("resident");
            assert!(
                am.get(ROOT, key.as_str()).unwrap().is_some(),
                "seed {seed}: write {key} of c{ci} lost"
            );
        }
    }
    let met = writes
        .iter()
        .filter(|(_, d, _)| deleted.contains(d))
        .count();
    (sim.log().to_vec(), deleted.len(), met)
}

#[test]
fn deletions_reach_every_region_and_client_and_nothing_resurrects_for_100_seeds() {
    let seeds = match std::env::var("CONCORD_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => s..s + 1,
        None => 0..100u64,
    };
    let (mut deletions, mut edits_met) = (0, 0);
    for seed in seeds {
        let (first, d, m) = run_seed(seed);
        let (second, _, _) = run_seed(seed);
        assert!(first == second, "seed {seed} does not replay identically");
        deletions += d;
        edits_met += m;
    }
    // Not vacuous: documents were deleted, and clients edited deleted documents.
    assert!(
        deletions > 0 && edits_met > 0,
        "{deletions} deletions, {edits_met} edits met one"
    );
}
