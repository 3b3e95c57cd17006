//! Conformance of the records kept beside chunks (tombstones, authors, owned documents), run by
//! [`super::conformance::run`]. A backend that does not keep a kind of record refuses it with
//! [`StorageError::Unsupported`] (a browser keeps tombstones but no authors): that kind is then
//! skipped, never silently dropped.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use super::{ChangeAuthor, Storage, StorageError, StorageResult, WriteOp};
use crate::id::DocumentId;

/// `Some(value)` when supported; panics on any other error.
fn supported<T>(r: StorageResult<T>, what: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(StorageError::Unsupported(_)) => None,
        Err(e) => panic!("storage conformance: {what} failed: {e}"),
    }
}

pub(super) async fn run<S: Storage>(s: &S) {
    let doc = DocumentId::from_bytes([0xD0; 16]);
    let other = DocumentId::from_bytes([0xD1; 16]);

    // Tombstones: replaced, listed, removed; `delete` keeps them.
    if supported(s.put_tombstone(&doc, b"first").await, "put_tombstone").is_some() {
        s.put_tombstone(&doc, b"second").await.unwrap();
        s.write_batch(&[WriteOp::PutTombstone {
            doc: &other,
            record: b"other",
        }])
        .await
        .unwrap();
        let all = s.tombstones().await.unwrap();
        assert!(
            all.contains(&(doc, b"second".to_vec())),
            "replaced: {all:?}"
        );
        assert!(all.contains(&(other, b"other".to_vec())));
        s.delete(&doc).await.unwrap();
        assert!(
            s.tombstones().await.unwrap().iter().any(|(d, _)| *d == doc),
            "delete keeps the tombstone"
        );
        s.remove_tombstone(&doc).await.unwrap();
        s.remove_tombstone(&other).await.unwrap();
        s.remove_tombstone(&other).await.unwrap(); // idempotent
        assert!(s.tombstones().await.unwrap().is_empty());
    }

    // Authors: first author of a change wins; delete forgets them.
    let a = |hash: u8, who: &str, at| ChangeAuthor {
        hash: [hash; 32],
        principal: who.into(),
        at_ms: at,
    };
    if supported(
        s.put_authors(&doc, &[a(1, "alice", 10), a(2, "bob", 20)])
            .await,
        "put_authors",
    )
    .is_some()
    {
        s.put_authors(&doc, &[a(1, "mallory", 30)]).await.unwrap();
        let got = s.authors(&doc).await.unwrap();
        assert_eq!(
            got,
            vec![a(1, "alice", 10), a(2, "bob", 20)],
            "first author wins"
        );
        assert!(s.authors(&other).await.unwrap().is_empty());
        s.delete(&doc).await.unwrap();
        assert!(
            s.authors(&doc).await.unwrap().is_empty(),
            "delete forgets authors"
        );
    }

    // Owned documents: per principal, in insertion order, paged by a cursor that only grows.
    if supported(s.add_owned_doc("alice", &doc).await, "add_owned_doc").is_some() {
        let third = DocumentId::from_bytes([0xD2; 16]);
        s.add_owned_doc("alice", &other).await.unwrap();
        s.add_owned_doc("alice", &doc).await.unwrap(); // already listed: no new entry
        s.add_owned_doc("bob", &third).await.unwrap();
        s.add_owned_doc("alice", &third).await.unwrap();
        let page1 = s.owned_docs("alice", None, 2).await.unwrap();
        assert_eq!(
            page1.iter().map(|o| o.doc).collect::<Vec<_>>(),
            vec![doc, other]
        );
        let page2 = s
            .owned_docs("alice", Some(page1[1].cursor), 2)
            .await
            .unwrap();
        assert_eq!(page2.iter().map(|o| o.doc).collect::<Vec<_>>(), vec![third]);
        assert!(page2[0].cursor > page1[1].cursor);
        assert_eq!(s.owned_docs("bob", None, 10).await.unwrap().len(), 1);
        s.delete(&doc).await.unwrap();
        let left = s.owned_docs("alice", None, 10).await.unwrap();
        assert_eq!(
            left.iter().map(|o| o.doc).collect::<Vec<_>>(),
            vec![other, third]
        );
        for d in [other, third] {
            s.delete(&d).await.unwrap();
        }
    }
}
