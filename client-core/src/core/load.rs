//! Building a document from its stored chunks.

use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::Automerge;

use crate::storage::ChunkKey;

/// A document loaded from its stored chunks.
pub(super) struct Built {
    pub(super) doc: Automerge,
    /// Chunks that did not load (corrupt, or changes Automerge refuses to apply), each with
    /// the reason. They stay in storage: compaction does not cover them.
    pub(super) skipped: Vec<(ChunkKey, String)>,
}

/// Loads the stored chunks in one call; if that fails, chunk by chunk, skipping those that do
/// not load, so one bad chunk (disk damage, or a deferred change Automerge refuses: see
/// `lazy.rs`) does not make the rest of the document unreachable. A chunk whose loading makes
/// Automerge panic (a hostile change stored before it was applied) is skipped too: the
/// document is rebuilt without it.
pub(super) fn build_doc(actor: &automerge::ActorId, chunks: &[crate::storage::Chunk]) -> Built {
    let bytes: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.bytes.iter().copied())
        .collect();
    let whole = || catch_unwind(AssertUnwindSafe(|| Automerge::load(&bytes)));
    let doc = if bytes.is_empty() {
        Some(Automerge::new())
    } else {
        whole().ok().and_then(Result::ok)
    };
    let (doc, skipped) = match doc {
        Some(doc) => (doc, Vec::new()),
        None => one_by_one(chunks),
    };
    Built {
        doc: doc.with_actor(actor.clone()),
        skipped,
    }
}

/// Loads chunk by chunk; a chunk that errs is skipped, one that panics is skipped and the
/// document rebuilt without it (a panic may leave the document half-changed).
fn one_by_one(chunks: &[crate::storage::Chunk]) -> (Automerge, Vec<(ChunkKey, String)>) {
    let mut panicked: Vec<(ChunkKey, String)> = Vec::new();
    'rebuild: for _ in 0..=chunks.len() {
        let mut doc = Automerge::new();
        let mut skipped = panicked.clone();
        for c in chunks {
            if panicked.iter().any(|(k, _)| *k == c.key) {
                continue;
            }
            match catch_unwind(AssertUnwindSafe(|| doc.load_incremental(&c.bytes))) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => skipped.push((c.key, e.to_string())),
                Err(payload) => {
                    let why = super::guard::panic_message(payload.as_ref());
                    panicked.push((c.key, format!("loading it panicked: {why}")));
                    continue 'rebuild;
                }
            }
        }
        return (doc, skipped);
    }
    (Automerge::new(), panicked)
}
