//! Test documents: a text document grown by typing, `ops_per_change` characters per change,
//! cached on disk so repeated runs do not rebuild it.

use std::path::PathBuf;

use anyhow::Context;
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Automerge, ObjType, ROOT};

/// The text object of a document built by [`text_doc`].
pub fn text_obj(doc: &Automerge) -> anyhow::Result<automerge::ObjId> {
    use automerge::ReadDoc;
    match doc.get(ROOT, "text")? {
        Some((_, id)) => Ok(id),
        None => anyhow::bail!("document has no text"),
    }
}

/// A document of about `ops` operations: a text typed `ops_per_change` characters per change.
pub fn text_doc(ops: usize, ops_per_change: usize) -> anyhow::Result<Automerge> {
    let dir = std::env::temp_dir().join("concord-bench-docs");
    std::fs::create_dir_all(&dir)?;
    let path: PathBuf = dir.join(format!("text-{ops}-{ops_per_change}.automerge"));
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(doc) = Automerge::load(&bytes)
    {
        return Ok(doc);
    }
    let mut doc = AutoCommit::new().with_actor(ActorId::from([1u8; 16]));
    let text = doc.put_object(ROOT, "text", ObjType::Text)?;
    doc.commit();
    let per = ops_per_change.max(1);
    let mut written = 0usize;
    let alphabet = b"abcdefghijklmnopqrstuvwxyz ";
    while written < ops {
        let n = per.min(ops - written);
        for i in 0..n {
            let ch = alphabet[(written + i) % alphabet.len()] as char;
            // Typing at the end, with an occasional jump back, like an editing session.
            let len = automerge::ReadDoc::length(&doc, &text);
            let pos = if (written + i).is_multiple_of(97) {
                len / 2
            } else {
                len
            };
            doc.splice_text(&text, pos, 0, &ch.to_string())?;
        }
        doc.commit();
        written += n;
    }
    let bytes = doc.save();
    std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(Automerge::load(&bytes)?)
}
