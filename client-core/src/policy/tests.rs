//! Unit tests of reads and writes on forked, merged documents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use automerge::marks::ExpandMark;
use automerge::transaction::{Transactable, Transaction};
use automerge::{ActorId, Automerge, ROOT, ReadDoc, ScalarValue};
use serde_json::{Value as Json, json};

use super::*;
use crate::path;

/// A replica: a document, its clock and its (possibly skewed) physical time.
struct Replica {
    doc: Automerge,
    hlc: Hlc,
    now: u64,
}

impl Replica {
    fn new(actor: u8, now: u64) -> Self {
        let a = ActorId::from([actor; 16]);
        Self {
            doc: Automerge::new().with_actor(a.clone()),
            hlc: Hlc::new(a),
            now,
        }
    }

    fn fork(&self, actor: u8, now: u64) -> Self {
        let a = ActorId::from([actor; 16]);
        let mut hlc = Hlc::new(a.clone());
        observe_changes(&mut hlc, &self.doc, &[], now);
        Self {
            doc: self.doc.fork().with_actor(a),
            hlc,
            now,
        }
    }

    fn edit(&mut self, f: impl FnOnce(&mut Transaction<'_>) -> Result<(), PolicyError>) {
        self.now += 1;
        change(&mut self.doc, &mut self.hlc, self.now, f).unwrap();
    }

    fn merge(&mut self, other: &mut Replica) {
        let before = self.doc.get_heads();
        self.doc.merge(&mut other.doc).unwrap();
        observe_changes(&mut self.hlc, &self.doc, &before, self.now);
    }
}

fn sync(a: &mut Replica, b: &mut Replica) {
    a.merge(b);
    b.merge(a);
}

#[test]
fn lww_picks_the_greatest_hlc_not_the_greatest_op_id() {
    let schema = Schema::new().with("name", Policy::Lww).unwrap();
    let mut a = Replica::new(1, 10_000);
    a.edit(|tx| schema.put(tx, "name", &json!("first")));
    // b's actor sorts after a's, so Automerge's own pick would be b's value.
    let mut b = a.fork(9, 5_000);
    a.edit(|tx| schema.put(tx, "name", &json!("a later")));
    b.edit(|tx| schema.put(tx, "name", &json!("b earlier")));
    // b observed a's first stamp, so b's write is (10_001, 2): a's (10_002, 0) is later.
    sync(&mut a, &mut b);
    assert_eq!(schema.resolved(&a.doc, "name").unwrap(), json!("a later"));
    assert_eq!(schema.resolved(&b.doc, "name").unwrap(), json!("a later"));
    let causal = Schema::new();
    assert_eq!(causal.resolved(&a.doc, "name").unwrap(), json!("b earlier"));
    let c = conflicts(&a.doc, "name").unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c[1].value, json!("a later"), "sorted by HLC, winner last");
    assert!(c.iter().all(|c| c.stamped));
    assert_eq!(c[1].actor, ActorId::from([1; 16]));
    assert_eq!(a.doc.hash_for_opid(&c[1].exid), Some(c[1].change));
}

#[test]
fn the_pick_of_causal_reads_matches_automerge() {
    let mut a = Replica::new(1, 0);
    let mut b = a.fork(2, 0);
    a.edit(|tx| Ok(tx.put(ROOT, "k", 1)?));
    b.edit(|tx| Ok(tx.put(ROOT, "k", 2)?));
    sync(&mut a, &mut b);
    let (v, _) = a.doc.get(ROOT, "k").unwrap().unwrap();
    let expected = json!(v.as_i64().unwrap());
    assert_eq!(Schema::new().resolved(&a.doc, "k").unwrap(), expected);
    let keep = Schema::new().with("k", Policy::KeepConflicts).unwrap();
    assert_eq!(keep.resolved(&a.doc, "k").unwrap(), expected);
}

#[test]
fn counters_sum_concurrent_creations_without_double_counting() {
    let schema = Schema::new().with("counters/*", Policy::Counter).unwrap();
    let mut base = Replica::new(1, 0);
    base.edit(|tx| Ok(path::put(tx, &"counters".parse()?, &json!({}))?));
    let mut a = base.fork(2, 0);
    let mut b = base.fork(3, 0);
    a.edit(|tx| schema.increment(tx, "counters/likes", 1));
    b.edit(|tx| schema.increment(tx, "counters/likes", 10));
    sync(&mut a, &mut b);
    assert_eq!(conflicts(&a.doc, "counters/likes").unwrap().len(), 2);
    assert_eq!(
        schema.resolved(&a.doc, "counters/likes").unwrap(),
        json!(11)
    );
    // An increment after seeing both hits both counters; it still counts once.
    let mut c = a.fork(4, 0);
    a.edit(|tx| schema.increment(tx, "counters/likes", 100));
    c.edit(|tx| schema.increment(tx, "counters/likes", 1000));
    let c_heads = c.doc.get_heads();
    b.edit(|tx| schema.increment(tx, "counters/likes", 5)); // saw both too
    sync(&mut a, &mut c);
    sync(&mut a, &mut b);
    for r in [&a, &b] {
        assert_eq!(
            schema.resolved(&r.doc, "counters/likes").unwrap(),
            json!(1116)
        );
        assert_eq!(
            schema.resolved(&r.doc, "counters").unwrap(),
            json!({"likes": 1116})
        );
    }
    // At earlier heads, later increments do not count.
    let at = schema
        .resolved_at(&a.doc, "counters/likes", &c_heads)
        .unwrap();
    assert_eq!(at, json!(1011));
    assert_eq!(
        schema.resolved(&a.doc, "counters/absent").unwrap(),
        json!(0)
    );
}

#[test]
fn add_wins_keeps_a_concurrent_re_add_and_remove_wins_drops_it() {
    let schema = Schema::new()
        .with("aw", Policy::AddWinsSet)
        .unwrap()
        .with("rw", Policy::RemoveWinsSet)
        .unwrap();
    let mut a = Replica::new(1, 0);
    a.edit(|tx| {
        for set in ["aw", "rw"] {
            schema.add(tx, set, "milk")?;
            schema.add(tx, set, "eggs")?;
        }
        Ok(())
    });
    let mut b = a.fork(2, 0);
    a.edit(|tx| {
        schema.remove(tx, "aw", "milk")?;
        schema.remove(tx, "rw", "milk")
    });
    b.edit(|tx| {
        schema.add(tx, "aw", "milk")?;
        schema.add(tx, "rw", "milk")
    });
    sync(&mut a, &mut b);
    for r in [&a, &b] {
        assert_eq!(
            schema.resolved(&r.doc, "aw").unwrap(),
            json!(["eggs", "milk"])
        );
        assert_eq!(schema.resolved(&r.doc, "rw").unwrap(), json!(["eggs"]));
    }
    // Plain JSON for other clients.
    let plain = path::get(&a.doc, &"aw".parse().unwrap()).unwrap().unwrap();
    assert_eq!(plain, json!({"eggs": true, "milk": true}));
    // Re-adding after seeing the remove brings it back under remove-wins.
    a.edit(|tx| schema.add(tx, "rw", "milk"));
    assert_eq!(
        schema.resolved(&a.doc, "rw").unwrap(),
        json!(["eggs", "milk"])
    );
    assert_eq!(schema.resolved(&a.doc, "absent").unwrap(), Json::Null);
}

#[test]
fn concurrently_created_sets_merge_element_by_element() {
    let schema = Schema::new()
        .with("cart/items", Policy::AddWinsSet)
        .unwrap();
    let mut a = Replica::new(1, 0);
    a.edit(|tx| Ok(path::put(tx, &"cart".parse()?, &json!({}))?));
    let mut b = a.fork(2, 0);
    a.edit(|tx| schema.add(tx, "cart/items", "apple"));
    b.edit(|tx| schema.add(tx, "cart/items", "pear"));
    sync(&mut a, &mut b);
    assert_eq!(
        schema.resolved(&a.doc, "cart").unwrap(),
        json!({"items": ["apple", "pear"]})
    );
    // Removing reaches the element whichever map holds it.
    a.edit(|tx| schema.remove(tx, "cart/items", "pear"));
    assert_eq!(
        schema.resolved(&a.doc, "cart/items").unwrap(),
        json!(["apple"])
    );
}

#[test]
fn keep_conflicts_lists_both_and_resolve_settles_everywhere() {
    let schema = Schema::new().with("name", Policy::KeepConflicts).unwrap();
    let mut a = Replica::new(1, 0);
    let mut b = a.fork(2, 0);
    a.edit(|tx| schema.put(tx, "name", &json!("Alice Smith")));
    let before = a.doc.get_heads();
    b.edit(|tx| schema.put(tx, "name", &json!("Alice Jones")));
    sync(&mut a, &mut b);
    let after = a.doc.get_heads();
    let events = new_conflicts(&a.doc, &before, &after, &schema).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].path.to_string(), "/name");
    let mut values: Vec<Json> = events[0]
        .candidates
        .iter()
        .map(|c| c.value.clone())
        .collect();
    values.sort_by_key(Json::to_string);
    assert_eq!(values, vec![json!("Alice Jones"), json!("Alice Smith")]);
    assert!(
        new_conflicts(&a.doc, &after, &after, &schema)
            .unwrap()
            .is_empty()
    );
    assert_eq!(conflicted_paths(&b.doc, &schema).unwrap().len(), 1);

    b.edit(|tx| schema.resolve(tx, "name", &json!("Alice Smith-Jones")));
    sync(&mut a, &mut b);
    for r in [&a, &b] {
        assert!(conflicts(&r.doc, "name").unwrap().is_empty());
        assert_eq!(
            schema.resolved(&r.doc, "name").unwrap(),
            json!("Alice Smith-Jones")
        );
    }
    assert!(conflicted_paths(&a.doc, &schema).unwrap().is_empty());
}

#[test]
fn history_finds_the_loser_and_restore_brings_it_back() {
    let schema = Schema::new().with("name", Policy::Lww).unwrap();
    let mut a = Replica::new(1, 1_000);
    let mut b = a.fork(2, 1_000);
    a.edit(|tx| schema.put(tx, "name", &json!("loser")));
    b.edit(|tx| schema.put(tx, "name", &json!("winner")));
    b.edit(|tx| Ok(tx.put(ROOT, "unrelated", 1)?));
    sync(&mut a, &mut b);
    assert_eq!(schema.resolved(&a.doc, "name").unwrap(), json!("winner"));
    let hist = history(&a.doc, "name").unwrap();
    let values: Vec<_> = hist.iter().map(|h| h.value.clone()).collect();
    assert_eq!(hist.len(), 2, "{hist:?}");
    assert!(values.contains(&Some(json!("loser"))));
    let loser = hist
        .iter()
        .find(|h| h.value == Some(json!("loser")))
        .unwrap()
        .clone();
    assert_eq!(loser.actor, ActorId::from([1; 16]));
    a.edit(|tx| schema.restore(tx, "name", &loser));
    assert_eq!(schema.resolved(&a.doc, "name").unwrap(), json!("loser"));
    assert_eq!(history(&a.doc, "name").unwrap().len(), 3);
}

#[test]
fn custom_resolvers_get_sorted_candidates_and_errors_are_reported() {
    let max = Policy::custom("max", |_, c: &[Candidate]| {
        c.iter()
            .filter_map(|c| c.value.as_i64())
            .max()
            .map(Json::from)
            .ok_or_else(|| "no numbers".to_owned())
    });
    let boom = Policy::custom("boom", |_, _| panic!("resolver bug"));
    let schema = Schema::new()
        .with("score", max)
        .unwrap()
        .with("boom", boom)
        .unwrap()
        .with("word", Policy::custom("max", |_, _| Err("nope".into())))
        .unwrap();
    let mut a = Replica::new(1, 0);
    let mut b = a.fork(2, 0);
    a.edit(|tx| {
        schema.put(tx, "score", &json!(7))?;
        schema.put(tx, "boom", &json!(1))?;
        schema.put(tx, "word", &json!("x"))
    });
    // One candidate: the resolver is not called.
    assert_eq!(schema.resolved(&a.doc, "boom").unwrap(), json!(1));
    b.edit(|tx| {
        schema.put(tx, "score", &json!(3))?;
        schema.put(tx, "boom", &json!(2))?;
        schema.put(tx, "word", &json!("y"))
    });
    sync(&mut a, &mut b);
    assert_eq!(schema.resolved(&a.doc, "score").unwrap(), json!(7));
    let err = schema.resolved(&a.doc, "boom").unwrap_err();
    assert!(
        matches!(&err, PolicyError::ResolverPanicked { message, resolver, .. } if message == "resolver bug" && resolver == "boom"),
        "{err}"
    );
    assert!(matches!(
        schema.resolved(&a.doc, "word").unwrap_err(),
        PolicyError::ResolverFailed { .. }
    ));
    // The document stays readable.
    assert_eq!(schema.resolved(&a.doc, "score").unwrap(), json!(7));
    assert!(Schema::new().resolved(&a.doc, "").is_ok());
}

#[test]
fn type_mismatches_are_clear_errors() {
    let schema = Schema::new()
        .with("name", Policy::Counter)
        .unwrap()
        .with("tags", Policy::AddWinsSet)
        .unwrap()
        .with("body", Policy::Text)
        .unwrap();
    let mut a = Replica::new(1, 0);
    a.edit(|tx| {
        path::put(tx, &"name".parse()?, &json!("Alice"))?;
        path::put(tx, &"tags".parse()?, &json!(["a"]))?;
        tx.put(ROOT, "body", 5)?;
        Ok(())
    });
    let err = schema.resolved(&a.doc, "name").unwrap_err();
    assert!(matches!(err, PolicyError::TypeMismatch { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "`/name` has policy counter, which needs an Automerge counter, but it holds text"
    );
    assert!(matches!(
        schema.resolved(&a.doc, "tags").unwrap_err(),
        PolicyError::TypeMismatch { .. }
    ));
    assert!(matches!(
        schema.resolved(&a.doc, "body").unwrap_err(),
        PolicyError::TypeMismatch { .. }
    ));
    let mut doc = a.doc.clone();
    let mut tx = doc.transaction();
    assert!(matches!(
        schema.increment(&mut tx, "name", 1).unwrap_err(),
        PolicyError::TypeMismatch { .. }
    ));
    assert!(matches!(
        schema.put(&mut tx, "tags", &json!(["b"])).unwrap_err(),
        PolicyError::WrongPolicy { .. }
    ));
    assert!(matches!(
        schema.add(&mut tx, "name", "x").unwrap_err(),
        PolicyError::WrongPolicy { .. }
    ));
    assert!(matches!(
        schema.resolve(&mut tx, "tags", &json!("x")).unwrap_err(),
        PolicyError::TypeMismatch { .. }
    ));
    // Paths that go nowhere are path errors, not panics.
    assert!(matches!(
        schema.resolved(&a.doc, "name/deeper/still").unwrap_err(),
        PolicyError::Path(_)
    ));
    tx.rollback();
    // The whole document still reads, each path by its policy, until a mismatch is met.
    assert!(Schema::new().resolved(&a.doc, "").is_ok());
}

#[test]
fn text_merges_characters_and_carries_marks() {
    let schema = Schema::new().with("body", Policy::Text).unwrap();
    let mut a = Replica::new(1, 0);
    a.edit(|tx| schema.put(tx, "body", &json!("hello world")));
    let mut b = a.fork(2, 0);
    a.edit(|tx| schema.put(tx, "body", &json!("hello brave world")));
    b.edit(|tx| {
        schema.put(tx, "body", &json!("hello world!"))?;
        text::mark(tx, "body", 0, 5, "bold", &json!(true), ExpandMark::After)
    });
    sync(&mut a, &mut b);
    assert_eq!(
        schema.resolved(&a.doc, "body").unwrap(),
        json!("hello brave world!")
    );
    let marks = text::marks(&a.doc, "body").unwrap();
    assert_eq!(marks.len(), 1);
    assert_eq!(
        (marks[0].start, marks[0].end, marks[0].name.as_str()),
        (0, 5, "bold")
    );
}

#[test]
fn resolving_the_root_applies_every_policy() {
    let schema = Schema::new()
        .with("todos/*/title", Policy::Lww)
        .unwrap()
        .with("todos/*/likes", Policy::Counter)
        .unwrap()
        .with("todos/*/tags", Policy::AddWinsSet)
        .unwrap();
    let mut a = Replica::new(1, 0);
    a.edit(|tx| {
        path::put(tx, &"todos".parse()?, &json!([{"title": "milk"}]))?;
        schema.increment(tx, "todos/0/likes", 2)?;
        schema.add(tx, "todos/0/tags", "shop")
    });
    let resolved = schema.resolved(&a.doc, "").unwrap();
    assert_eq!(
        resolved,
        json!({"todos": [{"title": "milk", "likes": 2, "tags": ["shop"]}]})
    );
    let raw = path::get(&a.doc, &path::DocPath::root()).unwrap().unwrap();
    assert_eq!(raw["todos"][0]["tags"], json!({"shop": true}));
    assert_eq!(raw["todos"][0]["likes"], json!(2));
    let counter = a.doc.get(
        a.doc
            .get(a.doc.get(ROOT, "todos").unwrap().unwrap().1, 0)
            .unwrap()
            .unwrap()
            .1,
        "likes",
    );
    assert!(matches!(
        counter.unwrap().unwrap().0,
        automerge::Value::Scalar(s) if matches!(s.as_ref(), ScalarValue::Counter(_))
    ));
}

#[test]
fn rewriting_the_same_value_is_a_fresh_write_with_a_new_time() {
    let schema = Schema::new().with("n", Policy::Lww).unwrap();
    let mut a = Replica::new(1, 1_000);
    a.edit(|tx| schema.put(tx, "n", &json!(5)));
    let mut b = a.fork(2, 1_000);
    b.edit(|tx| schema.put(tx, "n", &json!(6)));
    a.now = 9_000;
    // Automerge alone would elide this put (same value): a's later write would then lose.
    a.edit(|tx| schema.put(tx, "n", &json!(5)));
    sync(&mut a, &mut b);
    assert_eq!(schema.resolved(&b.doc, "n").unwrap(), json!(5));
    let c = conflicts(&b.doc, "n").unwrap();
    assert_eq!(c.len(), 2);
    let j = c[1].to_json();
    assert_eq!(j["value"], json!(5));
    assert_eq!(j["hlc"]["ms"], json!(9_001));
    assert_eq!(j["actor"], json!(ActorId::from([1; 16]).to_hex_string()));
    assert_eq!(j["change"], json!(c[1].change.to_string()));
}
