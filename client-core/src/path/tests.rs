//! Unit tests of [`crate::path`].
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use automerge::{AutoCommit, Automerge};
use serde_json::json;

fn p(s: &str) -> DocPath {
    s.parse().unwrap()
}

fn doc(value: Json) -> AutoCommit {
    let mut d = AutoCommit::new();
    put(&mut d, &DocPath::root(), &value).unwrap();
    d
}

fn all(d: &AutoCommit) -> Json {
    get(d, &DocPath::root()).unwrap().unwrap()
}

#[test]
fn parses_and_displays_paths() {
    assert_eq!(p("todos/0/title").segments(), ["todos", "0", "title"]);
    assert_eq!(p("/todos/0/title"), p("todos/0/title"));
    assert!(p("").is_root() && p("/").is_root());
    assert_eq!(p("a~1b/c~0d/~01").segments(), ["a/b", "c~d", "~1"]);
    assert_eq!(p("a~1b/c~0d").to_string(), "/a~1b/c~0d");
    assert_eq!(DocPath::root().to_string(), "/");
    for bad in ["a//b", "a/", "//", "a/~2", "a/b~"] {
        assert!(
            matches!(bad.parse::<DocPath>(), Err(PathError::Malformed { .. })),
            "{bad}"
        );
    }
    let err = "x/~".parse::<DocPath>().unwrap_err().to_string();
    assert!(err.contains("malformed path `x/~`"), "{err}");
}

#[test]
fn reads_subtrees_scalars_and_absent_values() {
    let d = doc(json!({"todos": [{"title": "milk", "done": false}], "n": 3, "x": 1.5, "z": null}));
    assert_eq!(
        get(&d, &p("todos/0")).unwrap(),
        Some(json!({"title": "milk", "done": false}))
    );
    assert_eq!(get(&d, &p("todos/0/title")).unwrap(), Some(json!("milk")));
    assert_eq!(get(&d, &p("n")).unwrap(), Some(json!(3)));
    assert_eq!(get(&d, &p("x")).unwrap(), Some(json!(1.5)));
    assert_eq!(get(&d, &p("z")).unwrap(), Some(Json::Null));
    assert_eq!(get(&d, &p("missing")).unwrap(), None);
    assert_eq!(get(&d, &p("missing/deeper")).unwrap(), None);
    assert_eq!(get(&d, &p("todos/5/title")).unwrap(), None);
    assert!(matches!(
        get(&d, &p("todos/first")),
        Err(PathError::NotAnIndex { .. })
    ));
    assert!(matches!(
        get(&d, &p("todos/-1")),
        Err(PathError::NotAnIndex { .. })
    ));
    assert!(matches!(
        get(&d, &p("n/x")),
        Err(PathError::NotAContainer { .. })
    ));
    let e = get(&d, &p("todos/0/title/0")).unwrap_err().to_string();
    assert_eq!(e, "`/todos/0/title` is text, which has no keys or indexes");
    // Works on a plain Automerge document too, and agrees with AutoSerde at the root.
    let saved = Automerge::load(&d.clone().save()).unwrap();
    assert_eq!(
        get(&saved, &DocPath::root()).unwrap(),
        Some(serde_json::to_value(automerge::AutoSerde::from(&saved)).unwrap())
    );
}

#[test]
fn put_stores_json_as_automerge_types() {
    let mut d = doc(json!({}));
    put(
        &mut d,
        &p("obj"),
        &json!({"s": "hi", "l": [1, -2, 2.5, true, null], "big": u64::MAX}),
    )
    .unwrap();
    let (v, obj) = d.get(ROOT, "obj").unwrap().unwrap();
    assert_eq!(v, Value::Object(ObjType::Map));
    assert_eq!(
        d.get(&obj, "s").unwrap().unwrap().0,
        Value::Object(ObjType::Text)
    );
    assert_eq!(
        d.get(&obj, "big").unwrap().unwrap().0,
        Value::Scalar(std::borrow::Cow::Owned(ScalarValue::Uint(u64::MAX)))
    );
    let (_, list) = d.get(&obj, "l").unwrap().unwrap();
    assert_eq!(d.get(&list, 0).unwrap().unwrap().0, Value::int(1));
    assert_eq!(d.get(&list, 2).unwrap().unwrap().0, Value::f64(2.5));
    assert_eq!(
        all(&d),
        json!({"obj": {"s": "hi", "l": [1, -2, 2.5, true, null], "big": u64::MAX}})
    );
}

#[test]
fn put_overwrites_and_appends_in_lists_and_maps() {
    let mut d = doc(json!({"l": ["a"], "m": {"k": 1}}));
    put(&mut d, &p("l/0"), &json!("A")).unwrap();
    put(&mut d, &p("l/1"), &json!("b")).unwrap();
    put(&mut d, &p("l/-"), &json!({"c": [1]})).unwrap();
    put(&mut d, &p("m/k"), &json!(2)).unwrap();
    put(&mut d, &p("m/new"), &json!([])).unwrap();
    put(&mut d, &p("l/2/c/1"), &json!(2)).unwrap();
    assert_eq!(
        all(&d),
        json!({"l": ["A", "b", {"c": [1, 2]}], "m": {"k": 2, "new": []}})
    );
    assert!(matches!(
        put(&mut d, &p("l/9"), &json!(1)),
        Err(PathError::OutOfRange {
            index: 9,
            len: 3,
            ..
        })
    ));
    assert!(matches!(
        put(&mut d, &p("nope/k"), &json!(1)),
        Err(PathError::NotFound { .. })
    ));
    assert!(matches!(
        put(&mut d, &p("m/k/x"), &json!(1)),
        Err(PathError::NotAContainer { .. })
    ));
    assert!(matches!(
        put(&mut d, &p("l/0/x"), &json!(1)),
        Err(PathError::NotAContainer { .. })
    ));
}

#[test]
fn put_at_root_replaces_the_contents() {
    let mut d = doc(json!({"a": 1, "b": 2}));
    put(&mut d, &DocPath::root(), &json!({"b": 3, "c": "x"})).unwrap();
    assert_eq!(all(&d), json!({"b": 3, "c": "x"}));
    assert!(matches!(
        put(&mut d, &DocPath::root(), &json!([1])),
        Err(PathError::Root(_))
    ));
}

#[test]
fn delete_removes_keys_and_list_elements() {
    let mut d = doc(json!({"a": 1, "l": [1, 2, 3]}));
    delete(&mut d, &p("a")).unwrap();
    delete(&mut d, &p("l/1")).unwrap();
    assert_eq!(all(&d), json!({"l": [1, 3]}));
    assert!(matches!(
        delete(&mut d, &p("a")),
        Err(PathError::NotFound { .. })
    ));
    assert!(matches!(
        delete(&mut d, &p("l/2")),
        Err(PathError::OutOfRange { .. })
    ));
    assert!(matches!(
        delete(&mut d, &DocPath::root()),
        Err(PathError::Root(_))
    ));
}

#[test]
fn splice_edits_text_and_checks_types_and_bounds() {
    let mut d = doc(json!({"t": "héllo", "n": 1}));
    splice_text(&mut d, &p("t"), 5, 0, " world").unwrap();
    splice_text(&mut d, &p("t"), 0, 1, "H").unwrap();
    assert_eq!(get(&d, &p("t")).unwrap(), Some(json!("Héllo world")));
    let e = splice_text(&mut d, &p("n"), 0, 0, "x").unwrap_err();
    assert!(
        matches!(
            e,
            PathError::WrongType {
                expected: "text",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "`/n` is an integer, expected text");
    assert!(matches!(
        splice_text(&mut d, &p("t"), 12, 0, "x"),
        Err(PathError::OutOfRange { .. })
    ));
    assert!(matches!(
        splice_text(&mut d, &p("t"), 10, 2, ""),
        Err(PathError::OutOfRange { .. })
    ));
    assert!(matches!(
        splice_text(&mut d, &p("t"), 0, usize::MAX, ""),
        Err(PathError::OutOfRange { .. })
    ));
    assert!(matches!(
        splice_text(&mut d, &p("missing"), 0, 0, "x"),
        Err(PathError::NotFound { .. })
    ));
    assert!(matches!(
        splice_text(&mut d, &DocPath::root(), 0, 0, "x"),
        Err(PathError::WrongType { .. })
    ));
}

#[test]
fn increment_creates_and_bumps_counters() {
    let mut d = doc(json!({"n": 1, "l": []}));
    increment(&mut d, &p("c"), 2).unwrap();
    increment(&mut d, &p("c"), 3).unwrap();
    increment(&mut d, &p("l/0"), -1).unwrap();
    increment(&mut d, &p("l/0"), -1).unwrap();
    assert!(d.get(ROOT, "c").unwrap().unwrap().0.is_counter());
    assert_eq!(all(&d), json!({"n": 1, "c": 5, "l": [-2]}));
    assert!(matches!(
        increment(&mut d, &p("n"), 1),
        Err(PathError::WrongType {
            expected: "a counter",
            ..
        })
    ));
    assert!(matches!(
        increment(&mut d, &p("l/5"), 1),
        Err(PathError::OutOfRange { .. })
    ));
    assert!(matches!(
        increment(&mut d, &DocPath::root(), 1),
        Err(PathError::Root(_))
    ));
}

#[test]
fn concurrent_counter_increments_and_text_splices_merge() {
    let mut a = doc(json!({"t": "ac"}));
    increment(&mut a, &p("c"), 0).unwrap();
    let mut b = a.fork();
    splice_text(&mut a, &p("t"), 1, 0, "b").unwrap();
    increment(&mut a, &p("c"), 1).unwrap();
    splice_text(&mut b, &p("t"), 2, 0, "d").unwrap();
    increment(&mut b, &p("c"), 10).unwrap();
    a.merge(&mut b).unwrap();
    assert_eq!(all(&a), json!({"t": "abcd", "c": 11}));
}
