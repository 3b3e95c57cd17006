//! The exported API called from Rust (what the generated bindings call), offline: so that
//! `cargo test --workspace` exercises the FFI surface without Kotlin or Python.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concord_ffi::{
    ChangeEvent, ChangeListener, ChangeOrigin, ConcordError, Durability, Edit, Repo, Value,
};

#[derive(Default)]
struct Collect(Mutex<Vec<ChangeEvent>>);

impl ChangeListener for Collect {
    fn on_change(&self, event: ChangeEvent) -> Result<(), ConcordError> {
        self.0
            .lock()
            .map_err(|_| ConcordError::Internal("poisoned".into()))?
            .push(event);
        Ok(())
    }
}

fn db(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_string_lossy().into_owned()
}

#[tokio::test]
async fn offline_reads_writes_listeners_and_errors() -> Result<(), ConcordError> {
    let dir = tempfile::tempdir().map_err(|e| ConcordError::Internal(e.to_string()))?;
    let repo = Repo::open(db(&dir, "a.db"), vec![], None).await?;
    let doc = repo.create().await?;
    let changes = Arc::new(Collect::default());
    let sub = doc.subscribe_changes(changes.clone())?;

    doc.put("".into(), r#"{"todos": [], "title": "hi"}"#.into())
        .await?;
    doc.apply(vec![
        Edit::Insert {
            path: "todos".into(),
            index: 0,
            json: r#"{"t": "milk"}"#.into(),
        },
        Edit::SpliceText {
            path: "title".into(),
            pos: 2,
            delete: 0,
            text: "!".into(),
        },
        Edit::Increment {
            path: "n".into(),
            by: 2,
        },
    ])
    .await?;
    assert_eq!(
        doc.get("title".into())?,
        Some(Value::Text {
            value: "hi!".into()
        })
    );
    assert_eq!(doc.get("n".into())?, Some(Value::Counter { value: 2 }));
    assert_eq!(
        doc.get_json("todos/0".into())?,
        Some(r#"{"t":"milk"}"#.into())
    );
    assert_eq!(doc.get("nothing".into())?, None);
    doc.wait_durable(Durability::Local, 5_000).await?;
    assert_eq!(repo.document_urls().await?, vec![doc.url()]);

    // The listener saw both local changes, the last with the current heads.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = changes.0.lock().map(|v| v.clone()).unwrap_or_default();
        if seen
            .last()
            .is_some_and(|e| e.heads == doc.heads().unwrap_or_default())
        {
            assert!(seen.iter().all(|e| e.origin == ChangeOrigin::Local));
            break;
        }
        assert!(Instant::now() < end, "listener saw {seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sub.cancel();

    // Errors are typed.
    assert!(matches!(
        doc.put("a//b".into(), "1".into()).await,
        Err(ConcordError::InvalidPath(_))
    ));
    assert!(matches!(
        doc.put("a".into(), "{".into()).await,
        Err(ConcordError::InvalidJson(_))
    ));
    assert!(matches!(
        repo.find("nope".into()).await,
        Err(ConcordError::InvalidUrl(_))
    ));
    assert!(matches!(
        doc.wait_synced(10).await,
        Err(ConcordError::Network(_))
    ));
    assert!(matches!(
        Repo::open(db(&dir, "b.db"), vec!["http://x".into()], None).await,
        Err(ConcordError::InvalidUrl(_))
    ));

    // A blocking call from an engine thread is refused, not a deadlock.
    assert!(matches!(
        Repo::new(db(&dir, "c.db"), vec![], None),
        Err(ConcordError::Internal(_))
    ));

    repo.shutdown().await?;
    assert!(matches!(doc.heads(), Err(ConcordError::Closed(_))));
    assert!(matches!(repo.create().await, Err(ConcordError::Closed(_))));

    // The file keeps the document: reopen and find it.
    let again = Repo::open(db(&dir, "a.db"), vec![], Some("token".into())).await?;
    let found = again.find(doc.url()).await?;
    assert_eq!(found.get("n".into())?, Some(Value::Counter { value: 2 }));
    again.shutdown().await?;
    Ok(())
}
