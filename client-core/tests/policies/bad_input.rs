//! Bad input: clear errors, never a panic across the API, and the document stays readable.

use automerge::Automerge;
use concord::path;
use concord::policy::{self, Candidate, Hlc, Policy, PolicyError, Schema, SchemaError};
use serde_json::json;

use super::T0;
use super::scenarios::{replicate, two_datacenters};

#[test]
fn malformed_policy_paths_are_rejected_at_registration() {
    for bad in [
        "",
        "/",
        "todos//title",
        "todos/*x/title",
        "todos/**",
        "a/~9",
        "trailing/",
    ] {
        match Schema::new().register(bad, Policy::Lww) {
            Err(SchemaError::Malformed { pattern, reason }) => {
                assert_eq!(pattern, bad);
                assert!(!reason.is_empty());
            }
            other => panic!("{bad:?} was accepted: {other:?}"),
        }
    }
    let mut schema = Schema::new();
    schema.register("todos/*/title", Policy::Lww).unwrap();
    assert!(matches!(
        schema.register("todos/*/title", Policy::Text),
        Err(SchemaError::Duplicate { .. })
    ));
    assert!(matches!(
        schema.register_spec("todos/*/done=sometimes"),
        Err(SchemaError::UnknownPolicy { .. })
    ));
}

#[test]
fn a_counter_policy_on_a_string_is_a_type_error_at_read_time() {
    let schema = Schema::new().with("name", Policy::Counter).unwrap();
    let mut doc = Automerge::new();
    let mut hlc = Hlc::new(doc.get_actor().clone());
    policy::change(&mut doc, &mut hlc, T0, |tx| {
        Schema::new().put(tx, "name", &json!("Alice"))?;
        Schema::new().put(tx, "age", &json!(42))
    })
    .unwrap();
    let err = schema.resolved(&doc, "name").unwrap_err();
    assert!(
        matches!(
            err,
            PolicyError::TypeMismatch {
                policy: "counter",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("needs an Automerge counter"),
        "{err}"
    );
    // The rest of the document still reads, and so does the raw value.
    assert_eq!(schema.resolved(&doc, "age").unwrap(), json!(42));
    assert_eq!(
        path::get(&doc, &"name".parse().unwrap()).unwrap(),
        Some(json!("Alice"))
    );
    let mut tx = doc.transaction();
    assert!(matches!(
        schema.increment(&mut tx, "name", 1),
        Err(PolicyError::TypeMismatch { .. })
    ));
}

#[test]
fn a_panicking_resolver_is_reported_and_the_document_stays_readable() {
    let schema = Schema::new()
        .with(
            "score",
            Policy::custom("buggy", |_, c: &[Candidate]| {
                let first = c[5].value.clone(); // out of bounds: panics
                Ok(first)
            }),
        )
        .unwrap();
    let (mut eu, mut us) = two_datacenters(&schema);
    eu.write(T0 + 1, |tx| schema.put(tx, "score", &json!(1)));
    us.write(T0 + 2, |tx| schema.put(tx, "score", &json!(2)));
    replicate(&mut eu, &mut us, T0 + 3);
    // (The default panic hook still prints the caught panic to stderr.)
    let err = schema.resolved(&eu.doc, "score");
    let root = schema.resolved(&eu.doc, "");
    match err {
        Err(PolicyError::ResolverPanicked {
            resolver,
            message,
            path,
        }) => {
            assert_eq!((resolver.as_str(), path.as_str()), ("buggy", "/score"));
            assert!(message.contains("index out of bounds"), "{message}");
        }
        other => panic!("expected a caught panic, got {other:?}"),
    }
    assert!(matches!(root, Err(PolicyError::ResolverPanicked { .. })));
    assert_eq!(schema.resolved(&eu.doc, "name").unwrap(), json!("Alice"));
    assert_eq!(policy::conflicts(&eu.doc, "score").unwrap().len(), 2);
    // Resolving by hand still works.
    eu.write(T0 + 4, |tx| schema.resolve(tx, "score", &json!(3)));
    assert_eq!(schema.resolved(&eu.doc, "score").unwrap(), json!(3));
}

#[test]
fn wrong_operations_for_a_policy_are_errors_not_overwrites() {
    let schema = Schema::new()
        .with("tags", Policy::AddWinsSet)
        .unwrap()
        .with("likes", Policy::Counter)
        .unwrap();
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    schema.add(&mut tx, "tags", "red").unwrap();
    assert!(matches!(
        schema.put(&mut tx, "tags", &json!(["blue"])),
        Err(PolicyError::WrongPolicy { .. })
    ));
    assert!(matches!(
        schema.increment(&mut tx, "tags", 1),
        Err(PolicyError::WrongPolicy { .. })
    ));
    assert!(matches!(
        schema.add(&mut tx, "tags", ""),
        Err(PolicyError::InvalidElement { .. })
    ));
    assert!(matches!(
        schema.add(&mut tx, "likes", "x"),
        Err(PolicyError::WrongPolicy { .. })
    ));
    assert!(matches!(
        schema.increment(&mut tx, "no/such/parent", 1),
        Err(PolicyError::WrongPolicy { .. })
    ));
    tx.commit();
    assert!(matches!(
        schema.resolved(&doc, "tags/red/deeper"),
        Err(PolicyError::Path(_))
    ));
    assert_eq!(schema.resolved(&doc, "tags").unwrap(), json!(["red"]));
}
