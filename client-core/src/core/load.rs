//! Building a document from its stored chunks.

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
/// `lazy.rs`) does not make the rest of the document unreachable.
pub(super) fn build_doc(actor: &automerge::ActorId, chunks: &[crate::storage::Chunk]) -> Built {
    let bytes: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.bytes.iter().copied())
        .collect();
    let mut skipped = Vec::new();
    let doc = if bytes.is_empty() {
        Automerge::new()
    } else if let Ok(doc) = Automerge::load(&bytes) {
        doc
    } else {
        let mut doc = Automerge::new();
        for c in chunks {
            if let Err(e) = doc.load_incremental(&c.bytes) {
                skipped.push((c.key, e.to_string()));
            }
        }
        doc
    };
    Built {
        doc: doc.with_actor(actor.clone()),
        skipped,
    }
}
