//! History properties: `restore(h)` makes the current document equal `view_at(h)` whatever the
//! edits and concurrent branches before it, the restore merges with concurrent edits on other
//! replicas (every replica converges), and `diff(a, b)` applied to the JSON at `a` gives the JSON
//! at `b` for any two versions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{
    ActorId, AutoSerde, Automerge, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue,
};
use concord::history;
use proptest::prelude::*;
use serde_json::Value as Json;

const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
const REPLICAS: usize = 3;

#[derive(Debug, Clone)]
enum Val {
    Int(i64),
    Str(String),
    F64(f64),
    Null,
    /// A nested map `{a: int, t: text}`.
    Map(i64, String),
    /// A nested list of ints.
    List(Vec<i64>),
}

#[derive(Debug, Clone)]
enum Op {
    /// `ROOT.m[k] = v`.
    Put(usize, Val),
    /// Delete `ROOT.m[k]` if present.
    Del(usize),
    /// Insert into `ROOT.l` at `pos % (len + 1)`.
    ListIns(usize, Val),
    /// Replace `ROOT.l[pos % len]`.
    ListPut(usize, i64),
    /// Delete from `ROOT.l` at `pos % len`.
    ListDel(usize),
    /// Splice `ROOT.t` at `pos % (len + 1)`, deleting up to `del`.
    Splice(usize, usize, String),
    /// Increment `ROOT.c`.
    Inc(i64),
    /// Replace the whole nested map at `ROOT.m.k0` (a new object where the old one was).
    Replace(i64),
}

#[derive(Debug, Clone)]
enum Step {
    /// Replica `r` applies these operations in one change.
    Edit(usize, Vec<Op>),
    /// Replica `to` merges replica `from`.
    Merge(usize, usize),
}

fn val() -> impl Strategy<Value = Val> {
    prop_oneof![
        (-9..10i64).prop_map(Val::Int),
        "[a-zé🍞]{0,3}".prop_map(Val::Str),
        (-4..5i32).prop_map(|i| Val::F64(f64::from(i) / 2.0)),
        Just(Val::Null),
        ((-9..10i64), "[a-z]{0,3}").prop_map(|(a, t)| Val::Map(a, t)),
        proptest::collection::vec(-9..10i64, 0..3).prop_map(Val::List),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..KEYS.len(), val()).prop_map(|(k, v)| Op::Put(k, v)),
        (0..KEYS.len()).prop_map(Op::Del),
        (0..16usize, val()).prop_map(|(p, v)| Op::ListIns(p, v)),
        (0..16usize, -9..10i64).prop_map(|(p, v)| Op::ListPut(p, v)),
        (0..16usize).prop_map(Op::ListDel),
        (0..16usize, 0..4usize, "[a-zä🍞 ]{0,4}").prop_map(|(p, d, s)| Op::Splice(p, d, s)),
        (-5..6i64).prop_map(Op::Inc),
        (-9..10i64).prop_map(Op::Replace),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..REPLICAS, proptest::collection::vec(op(), 1..4)).prop_map(|(r, ops)| Step::Edit(r, ops)),
        1 => (0..REPLICAS, 0..REPLICAS).prop_map(|(a, b)| Step::Merge(a, b)),
    ]
}

fn obj(tx: &Transaction<'_>, key: &str) -> ObjId {
    tx.get(ROOT, key).unwrap().unwrap().1
}

fn put_val<T: Transactable>(
    tx: &mut T,
    parent: &ObjId,
    at: automerge::Prop,
    insert: bool,
    v: &Val,
) {
    let scalar = |v: &Val| -> Option<ScalarValue> {
        Some(match v {
            Val::Int(i) => ScalarValue::Int(*i),
            Val::F64(f) => ScalarValue::F64(*f),
            Val::Null => ScalarValue::Null,
            _ => return None,
        })
    };
    let made = match (v, &at) {
        (Val::Str(s), _) => {
            let t = match (insert, &at) {
                (true, automerge::Prop::Seq(i)) => tx.insert_object(parent, *i, ObjType::Text),
                _ => tx.put_object(parent, at.clone(), ObjType::Text),
            }
            .unwrap();
            tx.splice_text(&t, 0, 0, s).unwrap();
            return;
        }
        (Val::Map(..), _) | (Val::List(_), _) => {
            let typ = if matches!(v, Val::Map(..)) {
                ObjType::Map
            } else {
                ObjType::List
            };
            match (insert, &at) {
                (true, automerge::Prop::Seq(i)) => tx.insert_object(parent, *i, typ),
                _ => tx.put_object(parent, at.clone(), typ),
            }
            .unwrap()
        }
        (other, automerge::Prop::Seq(i)) if insert => {
            tx.insert(parent, *i, scalar(other).unwrap()).unwrap();
            return;
        }
        (other, _) => {
            tx.put(parent, at.clone(), scalar(other).unwrap()).unwrap();
            return;
        }
    };
    match v {
        Val::Map(a, t) => {
            tx.put(&made, "a", *a).unwrap();
            let text = tx.put_object(&made, "t", ObjType::Text).unwrap();
            tx.splice_text(&text, 0, 0, t).unwrap();
        }
        Val::List(items) => {
            for (i, n) in items.iter().enumerate() {
                tx.insert(&made, i, *n).unwrap();
            }
        }
        _ => {}
    }
}

fn apply(tx: &mut Transaction<'_>, op: &Op) {
    let (m, l, t) = (obj(tx, "m"), obj(tx, "l"), obj(tx, "t"));
    match op {
        Op::Put(k, v) => put_val(tx, &m, KEYS[*k].into(), false, v),
        Op::Del(k) => {
            if tx.get(&m, KEYS[*k]).unwrap().is_some() {
                tx.delete(&m, KEYS[*k]).unwrap();
            }
        }
        Op::ListIns(p, v) => {
            let at = p % (tx.length(&l) + 1);
            put_val(tx, &l, at.into(), true, v);
        }
        Op::ListPut(p, v) => {
            let len = tx.length(&l);
            if len > 0 {
                tx.put(&l, p % len, *v).unwrap();
            }
        }
        Op::ListDel(p) => {
            let len = tx.length(&l);
            if len > 0 {
                tx.delete(&l, p % len).unwrap();
            }
        }
        Op::Splice(p, d, s) => {
            let len = tx.length(&t);
            let at = p % (len + 1);
            let del = (*d).min(len - at);
            tx.splice_text(&t, at, isize::try_from(del).unwrap(), s)
                .unwrap();
        }
        Op::Inc(by) => tx.increment(ROOT, "c", *by).unwrap(),
        Op::Replace(a) => put_val(tx, &m, "k0".into(), false, &Val::Map(*a, "r".into())),
    }
}

fn json(doc: &Automerge) -> Json {
    serde_json::to_value(AutoSerde::from(doc)).unwrap()
}

fn json_at(doc: &Automerge, heads: &[ChangeHash]) -> Json {
    json(&doc.fork_at(heads).unwrap())
}

/// Three replicas of a document with a map, a list, a text and a counter made before they split.
fn replicas() -> Vec<Automerge> {
    let mut base = Automerge::new().with_actor(ActorId::from([100; 16]));
    let mut tx = base.transaction();
    tx.put_object(ROOT, "m", ObjType::Map).unwrap();
    tx.put_object(ROOT, "l", ObjType::List).unwrap();
    tx.put_object(ROOT, "t", ObjType::Text).unwrap();
    tx.put(ROOT, "c", ScalarValue::counter(0)).unwrap();
    tx.commit();
    (0..REPLICAS)
        .map(|i| {
            base.fork()
                .with_actor(ActorId::from([u8::try_from(i).unwrap() + 1; 16]))
        })
        .collect()
}

/// Runs `steps`, recording every version each replica passes through.
fn run(docs: &mut [Automerge], steps: &[Step]) -> Vec<(usize, Vec<ChangeHash>)> {
    let mut versions: Vec<(usize, Vec<ChangeHash>)> =
        (0..docs.len()).map(|r| (r, docs[r].get_heads())).collect();
    for s in steps {
        match s {
            Step::Edit(r, ops) => {
                let mut tx = docs[*r].transaction();
                for op in ops {
                    apply(&mut tx, op);
                }
                tx.commit();
                versions.push((*r, docs[*r].get_heads()));
            }
            Step::Merge(to, from) if to != from => {
                let mut other = docs[*from].clone();
                docs[*to].merge(&mut other).unwrap();
                versions.push((*to, docs[*to].get_heads()));
            }
            Step::Merge(..) => {}
        }
    }
    versions
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Restoring a recorded version makes the document equal to it at once, on a replica that
    /// holds concurrent branches; replicas that kept editing meanwhile merge with the restore and
    /// every replica converges.
    #[test]
    fn restore_equals_the_version_and_merges(
        before in proptest::collection::vec(step(), 1..24),
        pick in any::<prop::sample::Index>(),
        after in proptest::collection::vec(step(), 0..8),
    ) {
        let mut docs = replicas();
        let versions = run(&mut docs, &before);
        let (r, target) = versions[pick.index(versions.len())].clone();
        let want = json_at(&docs[r], &target);
        // Others edit concurrently with the restore.
        let others: Vec<Step> = after
            .into_iter()
            .filter(|s| match s {
                Step::Edit(e, _) => *e != r,
                Step::Merge(to, from) => *to != r && *from != r,
            })
            .collect();
        run(&mut docs, &others);
        let heads_before = docs[r].get_heads();
        let changes_before = docs[r].get_changes(&[]).len();
        let made = history::restore(&mut docs[r], &target, CommitOptions::default()).unwrap();
        prop_assert_eq!(json(&docs[r]), want.clone());
        // One change on top (or none when already equal); nothing rewritten.
        prop_assert_eq!(docs[r].get_changes(&[]).len(), changes_before + usize::from(made.is_some()));
        if let Some(h) = made {
            // On top of everything the replica had (Automerge also lists the actor's own
            // previous change among the deps).
            let deps = docs[r].get_change_meta_by_hash(&h).unwrap().deps;
            prop_assert!(heads_before.iter().all(|d| deps.contains(d)), "{:?} {:?}", deps, heads_before);
        }
        // Everybody merges everybody: one document everywhere.
        for to in 0..REPLICAS {
            for from in 0..REPLICAS {
                if to != from {
                    let mut other = docs[from].clone();
                    docs[to].merge(&mut other).unwrap();
                }
            }
        }
        for d in &docs[1..] {
            prop_assert_eq!(d.get_heads(), docs[0].get_heads());
            prop_assert_eq!(json(d), json(&docs[0]));
        }
    }

    /// `diff(a, b)` applied to the JSON at `a` gives the JSON at `b`, for recorded versions of
    /// concurrent replicas (merged into one document so both versions are in it).
    #[test]
    fn diffs_round_trip(
        steps in proptest::collection::vec(step(), 1..24),
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
    ) {
        let mut docs = replicas();
        let versions = run(&mut docs, &steps);
        let mut all = docs[0].clone();
        for d in &mut docs[1..] {
            all.merge(d).unwrap();
        }
        let (from, to) = (&versions[a.index(versions.len())].1, &versions[b.index(versions.len())].1);
        let patches = history::diff(&all, from, to).unwrap();
        let mut value = json_at(&all, from);
        history::apply_patches(&mut value, &patches, all.text_encoding()).unwrap();
        prop_assert_eq!(value, json_at(&all, to));
    }
}
