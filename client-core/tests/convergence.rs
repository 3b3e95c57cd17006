//! Convergence property: whatever the edits, delivery order, duplicates, drops, partitions and
//! crashes, once the network heals every replica holds the same document, durably, and the sync
//! goes quiet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue};
use concord::core::{CoreConfig, Event, ProtocolError, ServerPolicy};
use concord::sim::{Chaos, Sim};
use concord::{DocumentId, PeerId, StorageId};
use proptest::prelude::*;

/// Steps the healed network may take to go quiet.
const BOUND: usize = 5_000;
/// Keys of the root map that `Put`/`Del` touch.
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];

#[derive(Debug, Clone)]
enum Op {
    /// `ROOT[k] = v`.
    Put(usize, i64),
    /// Delete `ROOT[k]` if present.
    Del(usize),
    /// Insert into the list at `pos % (len + 1)`.
    ListIns(usize, i64),
    /// Delete from the list at `pos % len` (if not empty).
    ListDel(usize),
    /// Splice the text: at `pos % (len + 1)`, delete up to `del` characters, insert `s`.
    Splice(usize, usize, String),
    /// Increment the counter.
    Inc(i64),
}

#[derive(Debug, Clone)]
enum Action {
    /// Replica `r % n` applies these operations in one local change.
    Edit(usize, Vec<Op>),
    /// Perform this many random network/storage steps.
    Deliver(usize),
    /// Flip link `p % pairs` (up to down, down to up).
    Toggle(usize),
}

#[derive(Debug, Clone)]
struct Round {
    actions: Vec<Action>,
    /// After the round, crash (and restart) replica `i` when `crash[i]`.
    crash: Vec<bool>,
}

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    replicas: usize,
    /// The last replica is a server (`ServerPolicy`, everybody dials it).
    server: bool,
    reorder: bool,
    duplicate_pct: u32,
    retry_pct: u32,
    async_storage: bool,
    /// `Housekeeping::compact_after_increments` of every replica (small: compactions happen).
    compact_after: usize,
    rounds: Vec<Round>,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..KEYS.len(), -9..10i64).prop_map(|(k, v)| Op::Put(k, v)),
        (0..KEYS.len()).prop_map(Op::Del),
        (0..64usize, -9..10i64).prop_map(|(p, v)| Op::ListIns(p, v)),
        (0..64usize).prop_map(Op::ListDel),
        (0..64usize, 0..4usize, "[a-z]{0,4}").prop_map(|(p, d, s)| Op::Splice(p, d, s)),
        (-5..6i64).prop_map(Op::Inc),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0..5usize, prop::collection::vec(op(), 1..5)).prop_map(|(r, ops)| Action::Edit(r, ops)),
        4 => (0..12usize).prop_map(Action::Deliver),
        1 => (0..10usize).prop_map(Action::Toggle),
    ]
}

fn round() -> impl Strategy<Value = Round> {
    (
        prop::collection::vec(action(), 1..12),
        prop::collection::vec(prop::bool::weighted(0.25), 5),
    )
        .prop_map(|(actions, crash)| Round { actions, crash })
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        3..=5usize,
        any::<bool>(),
        any::<bool>(),
        0..30u32,
        0..30u32,
        any::<bool>(),
        prop_oneof![1..=4usize, Just(64)],
        prop::collection::vec(round(), 2..=4),
    )
        .prop_map(
            |(
                seed,
                replicas,
                server,
                reorder,
                duplicate_pct,
                retry_pct,
                async_storage,
                compact_after,
                rounds,
            )| Case {
                seed,
                replicas,
                server,
                reorder,
                duplicate_pct,
                retry_pct,
                async_storage,
                compact_after,
                rounds,
            },
        )
}

fn obj(tx: &Transaction<'_>, name: &str) -> Result<ObjId, String> {
    match tx.get(ROOT, name).map_err(|e| e.to_string())? {
        Some((_, id)) => Ok(id),
        None => Err(format!("`{name}` is missing")),
    }
}

/// Applies `ops` (each made valid against the current state); returns the counter delta.
fn apply(tx: &mut Transaction<'_>, ops: &[Op]) -> Result<i64, String> {
    let list = obj(tx, "list")?;
    let text = obj(tx, "text")?;
    let mut delta = 0;
    for op in ops {
        let r = match op {
            Op::Put(k, v) => tx.put(ROOT, KEYS[*k], *v),
            Op::Del(k) => match tx.get(ROOT, KEYS[*k]) {
                Ok(Some(_)) => tx.delete(ROOT, KEYS[*k]),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
            Op::ListIns(p, v) => {
                let len = tx.length(&list);
                tx.insert(&list, p % (len + 1), *v)
            }
            Op::ListDel(p) => {
                let len = tx.length(&list);
                if len == 0 {
                    Ok(())
                } else {
                    tx.delete(&list, p % len)
                }
            }
            Op::Splice(p, d, s) => {
                let len = tx.length(&text);
                let pos = p % (len + 1);
                let del = (*d).min(len - pos);
                tx.splice_text(&text, pos, del as isize, s)
            }
            Op::Inc(by) => {
                delta += by;
                tx.increment(ROOT, "count", *by)
            }
        };
        r.map_err(|e| e.to_string())?;
    }
    Ok(delta)
}

fn add_replica(sim: &mut Sim, name: &str, seed: u64, server: bool, compact_after: usize) -> usize {
    let mut config = CoreConfig::new(
        PeerId::from(name),
        Some(StorageId::from(format!("{name}-store"))),
        seed,
    );
    if server {
        config = config
            .with_policy(Arc::new(ServerPolicy))
            .with_defer_apply(Sim::server_defer());
    }
    config.housekeeping.compact_after_increments = compact_after;
    sim.add_peer_with(name, config)
}

fn hashes(doc: &Automerge) -> BTreeSet<ChangeHash> {
    doc.get_changes(&[]).iter().map(|c| c.hash()).collect()
}

/// What peer `i` has durably stored of `doc`.
fn on_disk(sim: &Sim, i: usize, doc: DocumentId) -> Automerge {
    let stored = sim.peer(i).disk.load_sync(&doc).unwrap();
    let bytes: Vec<u8> = stored
        .chunks
        .iter()
        .flat_map(|c| c.bytes.iter().copied())
        .collect();
    if bytes.is_empty() {
        Automerge::new()
    } else {
        Automerge::load(&bytes).unwrap()
    }
}

fn last_local(sim: &Sim, i: usize, doc: DocumentId) -> Option<ChangeHash> {
    sim.peer(i)
        .core
        .document(&doc)
        .and_then(|d| d.get_last_local_change())
        .map(|c| c.hash())
}

/// Link state per pair of replicas (`a < b`, `a` dials `b`).
struct Net {
    pairs: Vec<(usize, usize)>,
    link: Vec<Option<usize>>,
}

impl Net {
    fn up(&mut self, sim: &mut Sim, p: usize) {
        if self.link[p].is_none() {
            let (a, b) = self.pairs[p];
            self.link[p] = Some(sim.connect(a, b));
        }
    }

    fn down(&mut self, sim: &mut Sim, p: usize) {
        if let Some(l) = self.link[p].take() {
            sim.disconnect(l);
        }
    }
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    let n = case.replicas;
    let mut sim = Sim::new(case.seed);
    for i in 0..n {
        let server = case.server && i == n - 1;
        let name = if server {
            "server".to_owned()
        } else {
            format!("r{i}")
        };
        add_replica(
            &mut sim,
            &name,
            case.seed.wrapping_add(i as u64 + 1),
            server,
            case.compact_after,
        );
    }

    // Replica 0 creates the document and it reaches everybody over a full mesh.
    let doc = sim.create(0).unwrap();
    sim.change(0, doc, |tx| {
        tx.put_object(ROOT, "list", ObjType::List)?;
        tx.put_object(ROOT, "text", ObjType::Text)?;
        tx.put(ROOT, "count", ScalarValue::counter(0))
    })
    .unwrap();
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
        .collect();
    let mut net = Net {
        link: vec![None; pairs.len()],
        pairs,
    };
    for p in 0..net.pairs.len() {
        net.up(&mut sim, p);
    }
    sim.run_until_quiescent(BOUND).unwrap();
    for i in 0..n {
        prop_assert_eq!(
            sim.heads(i, doc),
            sim.heads(0, doc),
            "initial sync to replica {}",
            i
        );
    }

    // Every local change ever made, with its counter delta; and those a crash destroyed.
    let mut made: BTreeMap<ChangeHash, (usize, i64)> =
        hashes(sim.peer(0).core.document(&doc).unwrap())
            .into_iter()
            .map(|h| (h, (0, 0)))
            .collect();
    let mut lost: BTreeSet<ChangeHash> = BTreeSet::new();

    sim.chaos = Chaos {
        reorder: case.reorder,
        duplicate_pct: case.duplicate_pct,
        retry_pct: case.retry_pct,
        async_storage: case.async_storage,
    };
    for round in &case.rounds {
        for action in &round.actions {
            match action {
                Action::Edit(r, ops) => {
                    let r = r % n;
                    let before = last_local(&sim, r, doc);
                    let delta = sim.change(r, doc, |tx| apply(tx, ops)).unwrap();
                    let after = last_local(&sim, r, doc);
                    if after != before {
                        let h = after.unwrap();
                        prop_assert_eq!(
                            sim.heads(r, doc),
                            vec![h],
                            "a local change is the only head"
                        );
                        made.insert(h, (r, delta));
                    }
                }
                Action::Deliver(k) => {
                    for _ in 0..*k {
                        sim.step();
                    }
                }
                Action::Toggle(p) => {
                    let p = p % net.pairs.len();
                    if net.link[p].is_some() {
                        net.down(&mut sim, p);
                    } else {
                        net.up(&mut sim, p);
                    }
                }
            }
        }
        // Save/load: crashed replicas restart from their disks, reopen the document, and redial
        // the links they had.
        for (i, crash) in round.crash.iter().enumerate().take(n) {
            if !crash {
                continue;
            }
            let durable = hashes(&on_disk(&sim, i, doc));
            let gone: Vec<ChangeHash> = made
                .iter()
                .filter(|(h, (by, _))| *by == i && !durable.contains(*h))
                .map(|(h, _)| *h)
                .collect();
            for h in &gone {
                // Durability rule: nothing uncommitted was ever sent, so nobody else has it.
                for j in (0..n).filter(|j| *j != i) {
                    let elsewhere = sim
                        .peer(j)
                        .core
                        .document(&doc)
                        .and_then(|d| d.get_change_by_hash(h));
                    prop_assert!(
                        elsewhere.is_none(),
                        "uncommitted change {} of r{} reached r{}",
                        h,
                        i,
                        j
                    );
                }
            }
            lost.extend(gone);
            let was_up: Vec<usize> = (0..net.pairs.len())
                .filter(|p| {
                    net.link[*p].is_some() && (net.pairs[*p].0 == i || net.pairs[*p].1 == i)
                })
                .collect();
            sim.crash(i);
            for p in &was_up {
                net.link[*p] = None;
            }
            sim.find(i, doc);
            for p in was_up {
                net.up(&mut sim, p);
            }
        }
    }

    // Heal: no network faults, everybody connected (a star around the server, or a full mesh),
    // fresh connections everywhere. Storage keeps its timing: the core must cope with slow disks
    // on its own.
    sim.chaos = Chaos {
        async_storage: case.async_storage,
        ..Chaos::default()
    };
    for p in 0..net.pairs.len() {
        let (a, b) = net.pairs[p];
        let wanted = !case.server || a == n - 1 || b == n - 1;
        // Re-dial even links we believe up: a link may have been closed under us.
        net.down(&mut sim, p);
        if wanted {
            net.up(&mut sim, p);
        }
    }
    for i in 0..n {
        sim.find(i, doc);
    }
    sim.reconnect_all();
    let steps = sim.run_until_quiescent(BOUND);
    prop_assert!(
        steps.is_ok(),
        "sync did not go quiet within {} steps: {:?}",
        BOUND,
        steps
    );
    prop_assert_eq!(sim.run_until_quiescent(BOUND), Ok(0), "quiet means quiet");
    // The first idle tick does the housekeeping a server defers while changes arrive (applying
    // them, then the compaction that waited for it: `Sim::server_defer`); then all is quiet.
    sim.advance(1_000);
    let housekeeping = sim.run_until_quiescent(BOUND);
    prop_assert!(housekeeping.is_ok(), "housekeeping: {:?}", housekeeping);
    sim.advance(1_000);
    prop_assert_eq!(
        sim.run_until_quiescent(BOUND),
        Ok(0),
        "a tick after quiescence does nothing"
    );

    let heads = sim.heads(0, doc);
    prop_assert!(!heads.is_empty());
    let value = sim.json(0, doc);
    for i in 0..n {
        prop_assert_eq!(&sim.heads(i, doc), &heads, "heads of r{}", i);
        prop_assert_eq!(&sim.json(i, doc), &value, "value of r{}", i);
        prop_assert_eq!(
            on_disk(&sim, i, doc).get_heads(),
            heads.clone(),
            "r{} stored everything",
            i
        );
        prop_assert!(sim.peer(i).core.is_idle());
        for e in &sim.peer(i).events {
            // A duplicated `join`/`peer` frame is refused (and the refusal reported back); that
            // is the only protocol error honest peers can cause, and only when frames duplicate.
            let duplicate_handshake = case.duplicate_pct > 0
                && match e {
                    Event::Protocol {
                        error: ProtocolError::UnexpectedHandshake(_),
                        ..
                    } => true,
                    Event::Protocol {
                        error: ProtocolError::Remote(m),
                        ..
                    } => m.contains("on an established connection"),
                    _ => false,
                };
            let bad = matches!(e, Event::Protocol { .. } | Event::StorageFailed { .. });
            prop_assert!(!bad || duplicate_handshake, "r{} reported {:?}", i, e);
        }
    }
    // Exactly the changes that were made and not destroyed by a crash survive.
    let expected: BTreeSet<ChangeHash> =
        made.keys().filter(|h| !lost.contains(h)).copied().collect();
    let merged = hashes(sim.peer(0).core.document(&doc).unwrap());
    prop_assert_eq!(&merged, &expected, "lost: {:?}", lost);
    let count: i64 = made
        .iter()
        .filter(|(h, _)| !lost.contains(h))
        .map(|(_, (_, d))| d)
        .sum();
    prop_assert_eq!(&value["count"], &serde_json::json!(count));
    prop_assert!(value["list"].is_array() && value["text"].is_string());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn replicas_converge(case in case()) {
        run(&case)?;
    }
}
