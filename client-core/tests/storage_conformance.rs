//! The storage conformance suite on every backend, plus backend-specific durability checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use concord::DocumentId;
use concord::storage::{
    ChunkKey, MemoryStorage, SqliteConfig, SqliteStorage, Storage, conformance,
};

#[tokio::test]
async fn memory_backend_conforms() {
    conformance::run(&MemoryStorage::new()).await;
}

#[tokio::test]
async fn sqlite_in_memory_backend_conforms() {
    conformance::run(&SqliteStorage::open_in_memory().await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_file_backend_conforms_and_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let storage = SqliteStorage::open(SqliteConfig::new(&path)).await.unwrap();
    conformance::run(&storage).await;
    let doc = DocumentId::from_bytes([0xC0; 16]);
    let before = storage.load(&doc).await.unwrap();
    storage.close().await;

    let reopened = SqliteStorage::open(SqliteConfig::new(&path)).await.unwrap();
    assert_eq!(
        reopened.load(&doc).await.unwrap(),
        before,
        "everything committed is there after reopen"
    );
    assert_eq!(reopened.integrity_check().await.unwrap(), "ok");
    assert_eq!(
        reopened.get_meta("storage_id").await.unwrap(),
        Some(b"abd".to_vec())
    );
}

#[tokio::test]
async fn sqlite_reports_errors_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    // A directory is not a database file.
    let err = SqliteStorage::open(SqliteConfig::new(dir.path()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("storage backend failed"), "{err}");
}

#[tokio::test]
async fn memory_backend_can_fail_writes_on_demand() {
    let m = MemoryStorage::new();
    m.set_fail_writes(true);
    let doc = DocumentId::from_bytes([1; 16]);
    assert!(m.append(&doc, ChunkKey::of(b"x"), b"x").await.is_err());
    assert!(
        m.load(&doc).await.unwrap().is_empty(),
        "a failed write stores nothing"
    );
}

#[tokio::test]
async fn memory_backend_batches_are_all_or_nothing() {
    let m = MemoryStorage::new();
    m.set_fail_writes_to(conformance::POISONED, true);
    conformance::run_failing_batch(&m).await;
}
