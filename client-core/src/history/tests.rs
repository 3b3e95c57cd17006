#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoSerde, Automerge, ChangeHash, ObjType, ROOT, ReadDoc, ScalarValue};
use serde_json::{Value as Json, json};

use super::*;
use crate::policy::hlc::HlcTimestamp;
use crate::policy::stamp::{commit_options, commit_options_with_message};
use crate::storage::ChangeAuthor;

fn to_json(doc: &Automerge) -> Json {
    serde_json::to_value(AutoSerde::from(doc)).unwrap()
}

fn at(doc: &Automerge, heads: &[ChangeHash]) -> Json {
    to_json(&doc.fork_at(heads).unwrap())
}

fn commit(
    doc: &mut Automerge,
    ms: u64,
    f: impl FnOnce(&mut automerge::transaction::Transaction<'_>),
) -> ChangeHash {
    let actor = doc.get_actor().clone();
    let mut tx = doc.transaction();
    f(&mut tx);
    tx.commit_with(commit_options(&HlcTimestamp::new(ms, 0, actor)))
        .0
        .unwrap()
}

/// Checks `diff(a, b)` applied to the JSON at `a` gives the JSON at `b`, both ways.
fn round_trips(doc: &Automerge, a: &[ChangeHash], b: &[ChangeHash]) {
    for (x, y) in [(a, b), (b, a)] {
        let patches = diff(doc, x, y).unwrap();
        let mut value = at(doc, x);
        apply_patches(&mut value, &patches, doc.text_encoding()).unwrap();
        assert_eq!(value, at(doc, y), "patches: {patches:?}");
    }
}

#[test]
fn lists_newest_first_with_stable_paging() {
    let mut a = Automerge::new().with_actor(ActorId::from([1; 16]));
    let first = commit(&mut a, 1_000, |tx| tx.put(ROOT, "n", 1).unwrap());
    let mut b = a.fork().with_actor(ActorId::from([2; 16]));
    // Concurrent: b's change has the later stamp, a's comes later in a's own log.
    let on_b = commit(&mut b, 5_000, |tx| tx.put(ROOT, "b", 1).unwrap());
    let on_a = commit(&mut a, 3_000, |tx| tx.put(ROOT, "a", 1).unwrap());
    a.merge(&mut b).unwrap();
    let last = commit(&mut a, 4_000, |tx| tx.put(ROOT, "n", 2).unwrap());
    let page = list(&a, &HistoryQuery::new(), &HashMap::new()).unwrap();
    let hashes: Vec<ChangeHash> = page.changes.iter().map(|c| c.hash).collect();
    // `last` depends on both; among the two concurrent ones the later stamp goes first even
    // though `last` has an earlier stamp than `on_b` (dependencies come after dependents).
    assert_eq!(hashes, vec![last, on_b, on_a, first]);
    assert_eq!((page.total, page.next), (4, None));
    // Same order on the other replica.
    b.merge(&mut a).unwrap();
    let other = list(&b, &HistoryQuery::new(), &HashMap::new()).unwrap();
    assert_eq!(
        other.changes.iter().map(|c| c.hash).collect::<Vec<_>>(),
        hashes
    );
    // Pages of two.
    let p1 = list(&a, &HistoryQuery::new().limit(2), &HashMap::new()).unwrap();
    assert_eq!(p1.changes.len(), 2);
    assert_eq!(p1.next, Some(on_b));
    let p2 = list(
        &a,
        &HistoryQuery::new().limit(2).after(on_b),
        &HashMap::new(),
    )
    .unwrap();
    assert_eq!(
        p2.changes.iter().map(|c| c.hash).collect::<Vec<_>>(),
        vec![on_a, first]
    );
    assert_eq!(p2.next, None);
    // The history of an older version.
    let old = list(&a, &HistoryQuery::new().at(vec![on_a]), &HashMap::new()).unwrap();
    assert_eq!(
        old.changes.iter().map(|c| c.hash).collect::<Vec<_>>(),
        vec![on_a, first]
    );
    assert_eq!(old.heads, vec![on_a]);
    // A cursor outside the listed version.
    let err = list(
        &a,
        &HistoryQuery::new().at(vec![on_a]).after(on_b),
        &HashMap::new(),
    );
    assert!(matches!(err, Err(HistoryError::UnknownCursor(h)) if h == on_b));
    let bogus = ChangeHash([9; 32]);
    let err = list(&a, &HistoryQuery::new().at(vec![bogus]), &HashMap::new()).unwrap_err();
    assert!(
        matches!(&err, HistoryError::UnknownHeads { which: "heads", heads } if heads == &[bogus])
    );
    assert!(
        err.to_string().contains(&crate::id::encode_head(&bogus)),
        "{err}"
    );
}

#[test]
fn change_info_carries_stamp_message_ops_and_author() {
    let actor = ActorId::from([4; 16]);
    let mut doc = Automerge::new().with_actor(actor.clone());
    let mut tx = doc.transaction();
    tx.put(ROOT, "a", 1).unwrap();
    tx.put(ROOT, "b", 2).unwrap();
    let ts = HlcTimestamp::new(1_700_000_000_123, 7, actor.clone());
    let hash = tx
        .commit_with(commit_options_with_message(&ts, "add a and b"))
        .0
        .unwrap();
    let mut tx = doc.transaction();
    tx.put(ROOT, "c", 3).unwrap();
    let plain = tx
        .commit_with(CommitOptions::default().with_time(1_700_000_001))
        .0
        .unwrap();
    let authors: HashMap<ChangeHash, ChangeAuthor> = [(
        hash,
        ChangeAuthor {
            hash: hash.0,
            principal: "alice".into(),
            at_ms: 42,
        },
    )]
    .into();
    let page = list(&doc, &HistoryQuery::new(), &authors).unwrap();
    let [newer, older] = page.changes.as_slice() else {
        panic!("two changes: {page:?}");
    };
    assert_eq!(older.hash, hash);
    assert_eq!((older.ops, older.seq, older.stamped), (2, 1, true));
    assert_eq!(older.hlc, ts);
    assert_eq!(older.message.as_deref(), Some("add a and b"));
    assert_eq!(
        older.author,
        Some(Attribution {
            principal: "alice".into(),
            at_ms: 42
        })
    );
    assert_eq!(newer.hash, plain);
    assert_eq!(
        (newer.ops, newer.stamped, newer.hlc.ms),
        (1, false, 1_700_000_001_000)
    );
    assert_eq!(newer.deps, vec![hash]);
    assert_eq!(newer.author, None);
    let j = older.to_json(crate::id::encode_head);
    assert_eq!(j["hash"], json!(crate::id::encode_head(&hash)));
    assert_eq!(j["time"], json!({"ms": 1_700_000_000_123u64, "counter": 7}));
    assert_eq!(j["author"], json!({"principal": "alice", "at_ms": 42}));
}

/// A document with maps, lists, text and counters edited over three versions.
fn edited() -> (Automerge, Vec<Vec<ChangeHash>>) {
    let mut doc = Automerge::new();
    let mut versions = vec![doc.get_heads()];
    commit(&mut doc, 1, |tx| {
        tx.put(ROOT, "title", "groceries").unwrap();
        let todos = tx.put_object(ROOT, "todos", ObjType::List).unwrap();
        for (i, t) in ["milk", "eggs", "bread"].iter().enumerate() {
            let item = tx.insert_object(&todos, i, ObjType::Map).unwrap();
            let title = tx.put_object(&item, "title", ObjType::Text).unwrap();
            tx.splice_text(&title, 0, 0, t).unwrap();
            tx.put(&item, "done", false).unwrap();
        }
        tx.put(ROOT, "views", ScalarValue::counter(3)).unwrap();
        let notes = tx.put_object(ROOT, "notes", ObjType::Text).unwrap();
        tx.splice_text(&notes, 0, 0, "buy früh 🍞").unwrap();
    });
    versions.push(doc.get_heads());
    commit(&mut doc, 2, |tx| {
        tx.delete(ROOT, "title").unwrap();
        let (_, todos) = tx.get(ROOT, "todos").unwrap().unwrap();
        tx.delete(&todos, 1).unwrap();
        let (_, item) = tx.get(&todos, 0).unwrap().unwrap();
        tx.put(&item, "done", true).unwrap();
        let (_, title) = tx.get(&item, "title").unwrap().unwrap();
        tx.splice_text(&title, 4, 0, " and honey").unwrap();
        let extra = tx.insert_object(&todos, 2, ObjType::Map).unwrap();
        tx.put(&extra, "title", "jam").unwrap();
        tx.increment(ROOT, "views", 4).unwrap();
        let (_, notes) = tx.get(ROOT, "notes").unwrap().unwrap();
        tx.splice_text(&notes, 4, 5, "spät").unwrap();
        let meta = tx.put_object(ROOT, "meta", ObjType::Map).unwrap();
        let tags = tx.put_object(&meta, "tags", ObjType::List).unwrap();
        tx.insert(&tags, 0, "weekly").unwrap();
    });
    versions.push(doc.get_heads());
    (doc, versions)
}

#[test]
fn diffs_are_json_patches_that_round_trip() {
    let (doc, v) = edited();
    let patches = diff(&doc, &v[1], &v[2]).unwrap();
    let text = serde_json::to_value(&patches).unwrap();
    let has = |want: Json| {
        assert!(
            text.as_array().unwrap().contains(&want),
            "{want} not in {text:#}"
        );
    };
    has(json!({"action": "del", "path": "/title", "length": 1}));
    has(json!({"action": "del", "path": "/todos/1", "length": 1}));
    has(json!({"action": "put", "path": "/todos/0/done", "value": true}));
    has(json!({"action": "splice", "path": "/todos/0/title/4", "value": " and honey"}));
    has(json!({"action": "inc", "path": "/views", "value": 4}));
    has(json!({"action": "put", "path": "/meta", "value": {"tags": ["weekly"]}}));
    // Patches inside an object that appears whole are not repeated.
    assert!(!text.to_string().contains("/meta/tags"), "{text}");
    // They parse back.
    let back: Vec<JsonPatch> = serde_json::from_value(text).unwrap();
    assert_eq!(back, patches);
    for i in 0..v.len() {
        for j in 0..v.len() {
            round_trips(&doc, &v[i], &v[j]);
        }
    }
    assert!(diff(&doc, &v[2], &v[2]).unwrap().is_empty());
}

#[test]
fn diff_refuses_unknown_heads_naming_the_side() {
    let (doc, v) = edited();
    let bogus = ChangeHash([3; 32]);
    match diff(&doc, &[bogus], &v[1]) {
        Err(HistoryError::UnknownHeads {
            which: "from",
            heads,
        }) => assert_eq!(heads, vec![bogus]),
        other => panic!("{other:?}"),
    }
    match diff(&doc, &v[1], &[v[2][0], bogus]) {
        Err(HistoryError::UnknownHeads { which: "to", heads }) => assert_eq!(heads, vec![bogus]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn patches_that_do_not_fit_are_typed_errors() {
    let mut value = json!({"list": [1], "text": "ab"});
    for (patch, want) in [
        (json!({"action": "del", "path": "/nope"}), "no key"),
        (
            json!({"action": "insert", "path": "/list/5", "values": [2]}),
            "not an index",
        ),
        (
            json!({"action": "splice", "path": "/text/9", "value": "x"}),
            "past the end",
        ),
        (json!({"action": "inc", "path": "/text"}), "missing field"),
        (json!({"action": "put", "path": "/", "value": 1}), "root"),
    ] {
        let parsed: Result<JsonPatch, _> = serde_json::from_value(patch.clone());
        let err = match parsed {
            Err(e) => e.to_string(),
            Ok(p) => apply_patches(&mut value, &[p], automerge::TextEncoding::UnicodeCodePoint)
                .unwrap_err()
                .to_string(),
        };
        assert!(err.contains(want), "{patch}: {err}");
    }
    // UTF-16 indexes count surrogate pairs as two.
    let mut v = json!({"t": "a🍞b"});
    let p: JsonPatch =
        serde_json::from_value(json!({"action": "splice", "path": "/t/3", "value": "!"})).unwrap();
    apply_patches(&mut v, &[p], automerge::TextEncoding::Utf16CodeUnit).unwrap();
    assert_eq!(v, json!({"t": "a🍞!b"}));
}

#[test]
fn restore_adds_one_change_that_equals_the_old_version() {
    let (mut doc, v) = edited();
    let before = doc.get_changes(&[]).len();
    let h = restore(&mut doc, &v[1], CommitOptions::default()).unwrap();
    assert!(h.is_some());
    assert_eq!(doc.get_changes(&[]).len(), before + 1);
    assert_eq!(to_json(&doc), at(&doc, &v[1]));
    // Restoring the newest version again undoes the restore.
    restore(&mut doc, &v[2], CommitOptions::default()).unwrap();
    assert_eq!(to_json(&doc), at(&doc, &v[2]));
    // To the empty document.
    restore(&mut doc, &[], CommitOptions::default()).unwrap();
    assert_eq!(to_json(&doc), json!({}));
    // Nothing to do: no change.
    let heads = doc.get_heads();
    assert_eq!(
        restore(&mut doc, &heads, CommitOptions::default()).unwrap(),
        None
    );
    assert_eq!(doc.get_heads(), heads);
    // Unknown heads change nothing.
    let err = restore(&mut doc, &[ChangeHash([1; 32])], CommitOptions::default());
    assert!(matches!(
        err,
        Err(HistoryError::UnknownHeads { which: "heads", .. })
    ));
    assert_eq!(doc.get_heads(), heads);
}

#[test]
fn restoring_the_same_version_twice_writes_once() {
    // Replaced text: the restore writes a new text object with the old contents, so Automerge's
    // diff (by object identity) still differs from the old version; the contents do not.
    let mut doc = Automerge::new();
    for (ms, text) in [(1, "draft"), (2, "final")] {
        commit(&mut doc, ms, |tx| {
            let title = tx.put_object(ROOT, "title", ObjType::Text).unwrap();
            tx.splice_text(&title, 0, 0, text).unwrap();
        });
    }
    let v1 = vec![doc.get_changes(&[])[0].hash()];
    assert!(
        restore(&mut doc, &v1, CommitOptions::default())
            .unwrap()
            .is_some()
    );
    assert_eq!(to_json(&doc), at(&doc, &v1));
    let heads = doc.get_heads();
    assert_eq!(
        restore(&mut doc, &v1, CommitOptions::default()).unwrap(),
        None
    );
    assert_eq!(doc.get_heads(), heads);
}

#[test]
fn a_stale_plan_is_refused_untouched() {
    let (mut doc, v) = edited();
    let plan = RestorePlan::new(&doc, &v[1]).unwrap();
    commit(&mut doc, 9, |tx| tx.put(ROOT, "later", 1).unwrap());
    let heads = doc.get_heads();
    let mut tx = doc.transaction();
    assert!(matches!(plan.apply(&mut tx), Err(HistoryError::Changed)));
    tx.rollback();
    assert_eq!(doc.get_heads(), heads);
}

#[test]
fn restore_merges_with_concurrent_edits_elsewhere() {
    let (mut a, v) = edited();
    let mut b = a.fork().with_actor(ActorId::from([8; 16]));
    // b edits a part the restore leaves alone, and increments the counter.
    commit(&mut b, 10, |tx| {
        tx.put(ROOT, "owner", "bob").unwrap();
        tx.increment(ROOT, "views", 100).unwrap();
    });
    restore(&mut a, &v[1], CommitOptions::default()).unwrap();
    a.merge(&mut b).unwrap();
    b.merge(&mut a).unwrap();
    assert_eq!(a.get_heads(), b.get_heads());
    let mut want = at(&a, &v[1]);
    want["owner"] = json!("bob");
    want["views"] = json!(3 + 100); // the restore took back only its own +4
    assert_eq!(to_json(&a), want);
}

#[test]
fn restore_settles_a_conflict_to_the_old_value() {
    let mut a = Automerge::new().with_actor(ActorId::from([1; 16]));
    commit(&mut a, 1, |tx| tx.put(ROOT, "k", "old").unwrap());
    let v1 = a.get_heads();
    let mut b = a.fork().with_actor(ActorId::from([2; 16]));
    commit(&mut a, 2, |tx| tx.put(ROOT, "k", "from a").unwrap());
    commit(&mut b, 2, |tx| tx.put(ROOT, "k", "from b").unwrap());
    a.merge(&mut b).unwrap();
    assert_eq!(a.get_all(ROOT, "k").unwrap().len(), 2);
    restore(&mut a, &v1, CommitOptions::default()).unwrap();
    let all = a.get_all(ROOT, "k").unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0.as_str(), Some("old"));
}

#[test]
fn restore_brings_back_text_marks() {
    use automerge::marks::{ExpandMark, Mark};
    let mut doc = Automerge::new();
    let mut text = None;
    commit(&mut doc, 1, |tx| {
        let t = tx.put_object(ROOT, "t", ObjType::Text).unwrap();
        tx.splice_text(&t, 0, 0, "hello world").unwrap();
        tx.mark(&t, Mark::new("bold".into(), true, 0, 5), ExpandMark::None)
            .unwrap();
        text = Some(t);
    });
    let v1 = doc.get_heads();
    let t = text.unwrap();
    commit(&mut doc, 2, |tx| {
        tx.splice_text(&t, 0, 6, "").unwrap();
        tx.unmark(&t, "bold", 0, 5, ExpandMark::None).unwrap();
    });
    restore(&mut doc, &v1, CommitOptions::default()).unwrap();
    assert_eq!(doc.text(&t).unwrap(), "hello world");
    let marks = doc.marks(&t).unwrap();
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(
        (marks[0].name(), marks[0].start, marks[0].end),
        ("bold", 0, 5)
    );
}

#[test]
fn heads_parse_in_every_printed_form() {
    let (h1, h2) = (ChangeHash([1; 32]), ChangeHash([2; 32]));
    let (b1, b2) = (crate::id::encode_head(&h1), crate::id::encode_head(&h2));
    for input in [
        format!("{b1}|{b2}"),
        format!("{b1},{b2}"),
        format!(" {b1} {b2} "),
        format!("[\"{b1}\", \"{b2}\"]"),
        format!("{h1}|{h2}"),
        format!("automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu#{b1}|{b2}"),
    ] {
        assert_eq!(parse_heads(&input).unwrap(), vec![h1, h2], "{input}");
    }
    assert_eq!(parse_heads("").unwrap(), Vec::<ChangeHash>::new());
    assert_eq!(parse_heads("[]").unwrap(), Vec::<ChangeHash>::new());
    assert!(parse_heads("nope").is_err());
    assert!(parse_heads("[1]").is_err());
}
