//! Conflict policies: property tests per policy (random concurrent writes on 3-5 replicas with
//! clocks minutes apart, partial syncs, then every change delivered to every replica in a random
//! order) in this file; narrated datacenter scenarios in `policies/scenarios.rs`; bad input in
//! `policies/bad_input.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transaction;
use automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc};
use concord::path;
use concord::policy::{self, Candidate, Hlc, HlcTimestamp, Policy, PolicyError, Schema};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value as Json, json};

/// "Real" time at the start (ms since the epoch, late 2023).
pub(crate) const T0: u64 = 1_700_000_000_000;
/// Clocks are up to three minutes off, either way.
const MAX_SKEW_MS: i64 = 180_000;

// ---------------------------------------------------------------------------------------------
// A small world of replicas with skewed clocks and an oracle of what each write saw.
// ---------------------------------------------------------------------------------------------

struct Replica {
    doc: Automerge,
    hlc: Hlc,
    /// How far this replica's clock is off real time.
    skew: i64,
    /// Writes (by index into `World::writes`) this replica has seen.
    seen: BTreeSet<usize>,
}

/// One recorded write, for the oracles.
#[derive(Debug, Clone)]
struct Write {
    key: String,
    /// `Some(true)` add, `Some(false)` remove, `None` for register/counter writes.
    add: Option<bool>,
    value: i64,
    stamp: HlcTimestamp,
    /// Writes on any key this one had seen when it was made.
    saw: BTreeSet<usize>,
}

struct World {
    replicas: Vec<Replica>,
    real: u64,
    writes: Vec<Write>,
}

impl World {
    /// `n` replicas forked from one base document written by `init`.
    fn new(
        skews: &[i64],
        init: impl FnOnce(&mut Transaction<'_>) -> Result<(), PolicyError>,
    ) -> Self {
        let actor = |i: usize| ActorId::from([u8::try_from(i).unwrap() + 1; 16]);
        let mut base = Automerge::new().with_actor(actor(0));
        let mut clock = Hlc::new(actor(0));
        policy::change(&mut base, &mut clock, T0, init).unwrap();
        let replicas = skews
            .iter()
            .enumerate()
            .map(|(i, skew)| {
                let mut hlc = Hlc::new(actor(i));
                let physical = T0.saturating_add_signed(*skew);
                policy::observe_changes(&mut hlc, &base, &[], physical);
                Replica {
                    doc: base.fork().with_actor(actor(i)),
                    hlc,
                    skew: *skew,
                    seen: BTreeSet::new(),
                }
            })
            .collect();
        Self {
            replicas,
            real: T0,
            writes: Vec::new(),
        }
    }

    fn physical(&self, i: usize) -> u64 {
        self.real.saturating_add_signed(self.replicas[i].skew)
    }

    /// Replica `i` makes one stamped change, recorded for the oracle.
    fn write(
        &mut self,
        i: usize,
        key: &str,
        add: Option<bool>,
        value: i64,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<(), PolicyError>,
    ) {
        let physical = self.physical(i);
        let r = &mut self.replicas[i];
        let ((), hash) = policy::change(&mut r.doc, &mut r.hlc, physical, f).unwrap();
        assert!(hash.is_some(), "every write makes a change");
        let id = self.writes.len();
        self.writes.push(Write {
            key: key.to_owned(),
            add,
            value,
            stamp: r.hlc.last(),
            saw: r.seen.clone(),
        });
        r.seen.insert(id);
    }

    /// Replica `to` receives everything `from` has (one-way), and merges the stamps it brings.
    fn sync(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        let physical = self.physical(to);
        let mut source = self.replicas[from].doc.clone();
        let seen = self.replicas[from].seen.clone();
        let r = &mut self.replicas[to];
        let before = r.doc.get_heads();
        r.doc.merge(&mut source).unwrap();
        policy::observe_changes(&mut r.hlc, &r.doc, &before, physical);
        r.seen.extend(seen);
    }

    /// Every replica receives every change, shuffled and in random batches.
    fn deliver_everything(&mut self, rng: &mut StdRng) {
        let mut all: BTreeMap<ChangeHash, Change> = BTreeMap::new();
        for r in &self.replicas {
            for c in r.doc.get_changes(&[]) {
                all.insert(c.hash(), c);
            }
        }
        let all: Vec<Change> = all.into_values().collect();
        for r in &mut self.replicas {
            let mut order = all.clone();
            order.shuffle(rng);
            while !order.is_empty() {
                let n = rng.random_range(1..=order.len());
                let batch: Vec<Change> = order.drain(..n).collect();
                r.doc.apply_changes(batch).unwrap();
            }
        }
        let heads = self.replicas[0].doc.get_heads();
        for r in &self.replicas {
            assert_eq!(r.doc.get_heads(), heads, "every replica has every change");
            assert!(r.doc.get_missing_deps(&[]).is_empty());
        }
    }

    /// Writes on `key` no other write on `key` had seen: the concurrent survivors.
    fn frontier(&self, key: &str) -> Vec<&Write> {
        let on_key: Vec<usize> = (0..self.writes.len())
            .filter(|w| self.writes[*w].key == key)
            .collect();
        on_key
            .iter()
            .filter(|w| !on_key.iter().any(|o| self.writes[*o].saw.contains(w)))
            .map(|w| &self.writes[*w])
            .collect()
    }

    /// The resolved root, identical on every replica.
    fn converged(&self, schema: &Schema) -> Json {
        let first = schema.resolved(&self.replicas[0].doc, "").unwrap();
        for r in &self.replicas[1..] {
            assert_eq!(schema.resolved(&r.doc, "").unwrap(), first);
        }
        first
    }
}

/// One step of a random schedule.
#[derive(Debug, Clone)]
enum Step {
    /// Replica `r % n` writes (what depends on the test) with argument `v`.
    Write(usize, usize, i64),
    /// Replica `to % n` receives everything replica `from % n` has.
    Sync(usize, usize),
    /// Real time moves on.
    Wait(u64),
    /// One replica's clock jumps (possibly backwards).
    Jump(usize, i64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..5usize, 0..8usize, -5i64..20).prop_map(|(r, k, v)| Step::Write(r, k, v)),
        2 => (0..5usize, 0..5usize).prop_map(|(a, b)| Step::Sync(a, b)),
        2 => (0u64..5_000).prop_map(Step::Wait),
        1 => (0..5usize, -60_000i64..60_000).prop_map(|(r, d)| Step::Jump(r, d)),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    skews: Vec<i64>,
    steps: Vec<Step>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(-MAX_SKEW_MS..=MAX_SKEW_MS, 3..=5),
        prop::collection::vec(step(), 1..40),
        any::<u64>(),
    )
        .prop_map(|(skews, steps, seed)| Case { skews, steps, seed })
}

/// Runs the schedule; `on_write(world, replica, k, v)` performs a write.
fn run(case: &Case, world: &mut World, mut on_write: impl FnMut(&mut World, usize, usize, i64)) {
    let n = world.replicas.len();
    for s in &case.steps {
        match *s {
            Step::Write(r, k, v) => on_write(world, r % n, k, v),
            Step::Sync(a, b) => world.sync(a % n, b % n),
            Step::Wait(ms) => world.real += ms,
            Step::Jump(r, d) => {
                let skew = &mut world.replicas[r % n].skew;
                *skew = (*skew + d).clamp(-MAX_SKEW_MS, MAX_SKEW_MS);
            }
        }
    }
    world.deliver_everything(&mut StdRng::seed_from_u64(case.seed));
}

fn max_resolver() -> Policy {
    Policy::custom("max", |_, candidates: &[Candidate]| {
        candidates
            .iter()
            .filter_map(|c| c.value.as_i64())
            .max()
            .map(Json::from)
            .ok_or_else(|| "no integer candidate".to_owned())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Registers: LWW picks the greatest HLC of all writes; KeepConflicts lists exactly the
    /// concurrent survivors; a custom `max` resolver returns their maximum; all converge.
    #[test]
    fn registers_converge_and_lww_picks_the_greatest_hlc(case in case()) {
        let schema = Schema::new()
            .with("lww", Policy::Lww).unwrap()
            .with("keep", Policy::KeepConflicts).unwrap()
            .with("max", max_resolver()).unwrap();
        let mut world = World::new(&case.skews, |_| Ok(()));
        run(&case, &mut world, |w, r, _, v| {
            w.write(r, "reg", None, v, |tx| {
                schema.put(tx, "lww", &json!(v))?;
                schema.put(tx, "keep", &json!(v))?;
                schema.put(tx, "max", &json!(v))
            });
        });
        let resolved = world.converged(&schema);
        let Some(last) = world.writes.iter().max_by(|a, b| a.stamp.cmp(&b.stamp)) else {
            prop_assert_eq!(resolved, json!({}));
            return Ok(());
        };
        prop_assert_eq!(&resolved["lww"], &json!(last.value));
        let frontier = world.frontier("reg");
        let top = frontier.iter().map(|w| w.stamp.clone()).max();
        prop_assert_eq!(top, Some(last.stamp.clone()), "the greatest HLC survived");
        let max = frontier.iter().map(|w| w.value).max().unwrap();
        prop_assert_eq!(&resolved["max"], &json!(max));
        let expected: BTreeSet<HlcTimestamp> = frontier.iter().map(|w| w.stamp.clone()).collect();
        for r in &world.replicas {
            let listed: BTreeSet<HlcTimestamp> = policy::candidates(&r.doc, "keep").unwrap()
                .into_iter().map(|c| c.hlc).collect();
            prop_assert_eq!(&listed, &expected);
            let conflicts = policy::conflicts(&r.doc, "keep").unwrap();
            prop_assert_eq!(conflicts.len(), if expected.len() > 1 { expected.len() } else { 0 });
        }
    }

    /// Counters: the resolved value is the sum of every increment, also when replicas created
    /// the same counter concurrently.
    #[test]
    fn counters_sum_every_increment(case in case()) {
        let schema = Schema::new().with("counters/*", Policy::Counter).unwrap();
        let mut world = World::new(&case.skews, |tx| {
            Ok(path::put(tx, &"counters".parse()?, &json!({}))?)
        });
        run(&case, &mut world, |w, r, k, v| {
            let key = format!("c{}", k % 3);
            let p = format!("counters/{key}");
            let v = if v == 0 { 1 } else { v };
            w.write(r, &key, None, v, |tx| schema.increment(tx, p.as_str(), v));
        });
        let resolved = world.converged(&schema);
        for k in 0..3 {
            let key = format!("c{k}");
            let sum: i64 = world.writes.iter().filter(|w| w.key == key).map(|w| w.value).sum();
            let got = schema.resolved(&world.replicas[0].doc, format!("counters/{key}")).unwrap();
            prop_assert_eq!(&got, &json!(sum), "{}", key);
            if world.writes.iter().any(|w| w.key == key) {
                prop_assert_eq!(&resolved["counters"][&key], &json!(sum));
            }
        }
    }

    /// Sets: add-wins keeps an element when any concurrent survivor is an add (a concurrent
    /// re-add beats a remove); remove-wins keeps it only when every survivor is an add.
    #[test]
    fn add_wins_and_remove_wins_sets(case in case()) {
        let schema = Schema::new()
            .with("sets/aw", Policy::AddWinsSet).unwrap()
            .with("sets/rw", Policy::RemoveWinsSet).unwrap();
        let mut world = World::new(&case.skews, |tx| {
            path::put(tx, &"sets".parse()?, &json!({}))?;
            schema.add(tx, "sets/aw", "e0")?;
            schema.add(tx, "sets/rw", "e0")?;
            schema.remove(tx, "sets/aw", "e0")?;
            schema.remove(tx, "sets/rw", "e0")
        });
        run(&case, &mut world, |w, r, k, v| {
            let elem = format!("e{}", k % 3);
            let add = v % 2 == 0;
            w.write(r, &elem.clone(), Some(add), v, |tx| {
                for set in ["sets/aw", "sets/rw"] {
                    if add { schema.add(tx, set, &elem)?; } else { schema.remove(tx, set, &elem)?; }
                }
                Ok(())
            });
        });
        let resolved = world.converged(&schema);
        let (mut aw, mut rw) = (Vec::new(), Vec::new());
        for k in 0..3 {
            let elem = format!("e{k}");
            let frontier = world.frontier(&elem);
            if frontier.iter().any(|w| w.add == Some(true)) {
                aw.push(json!(elem));
            }
            if !frontier.is_empty() && frontier.iter().all(|w| w.add == Some(true)) {
                rw.push(json!(elem));
            }
        }
        prop_assert_eq!(&resolved["sets"]["aw"], &Json::Array(aw));
        prop_assert_eq!(&resolved["sets"]["rw"], &Json::Array(rw));
    }
}

#[path = "policies/bad_input.rs"]
mod bad_input;
#[path = "policies/scenarios.rs"]
mod scenarios;
