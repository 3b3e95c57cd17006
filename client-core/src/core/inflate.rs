//! How large the changes of a sync message become once decompressed, measured with capped
//! inflation BEFORE Automerge parses them, so a small compressed chunk cannot expand into
//! gigabytes inside the engine (a compression bomb).
//!
//! Automerge chunks are `magic(4) checksum(4) type(1) leb128(len) data(len)`. Type 1 (change) is
//! stored as is; type 2 is a DEFLATE-compressed change; type 0 (a whole document) has leb128
//! column metadata whose spec has a deflate bit per column. Anything unrecognised counts with its
//! raw size (Automerge then rejects or accepts it itself).

use std::io::Read;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const DEFLATE_BIT: u64 = 0b1000;

/// Bytes after decompression (capped at `cap + 1`), or `None` when the data does not parse as
/// chunks (the caller lets Automerge report that).
pub(super) fn decompressed_size<'a>(
    chunks: impl Iterator<Item = &'a [u8]>,
    cap: u64,
) -> Option<u64> {
    let mut total = 0u64;
    for bytes in chunks {
        let mut rest = bytes;
        while !rest.is_empty() {
            let (size, used) = chunk_size(rest, cap.saturating_sub(total))?;
            total = total.saturating_add(size);
            if total > cap {
                return Some(total);
            }
            rest = rest.get(used..)?;
        }
    }
    Some(total)
}

/// (decompressed size, bytes used) of the first chunk in `b`.
fn chunk_size(b: &[u8], budget: u64) -> Option<(u64, usize)> {
    if b.len() < 9 || b[..4] != MAGIC {
        return None;
    }
    let ty = b[8];
    let mut r = &b[9..];
    let len = leb128::read::unsigned(&mut r).ok()?;
    let header = b.len() - r.len();
    let data = r.get(..usize::try_from(len).ok()?)?;
    let size = match ty {
        2 => inflated_len(data, budget),
        0 => document_size(data, budget).unwrap_or(len),
        _ => len,
    };
    Some((size.max(len), header + data.len()))
}

/// Length of the DEFLATE stream `data` inflated, reading at most `budget + 1` bytes.
fn inflated_len(data: &[u8], budget: u64) -> u64 {
    let mut reader = flate2::read::DeflateDecoder::new(data).take(budget.saturating_add(1));
    std::io::copy(&mut reader, &mut std::io::sink()).unwrap_or(u64::MAX)
}

/// A document chunk's size with its deflated columns inflated.
fn document_size(data: &[u8], budget: u64) -> Option<u64> {
    let mut r = data;
    let actors = leb128::read::unsigned(&mut r).ok()?;
    for _ in 0..actors {
        let n = usize::try_from(leb128::read::unsigned(&mut r).ok()?).ok()?;
        r = r.get(n..)?;
    }
    let heads = usize::try_from(leb128::read::unsigned(&mut r).ok()?).ok()?;
    r = r.get(heads.checked_mul(32)?..)?;
    let mut columns = Vec::new();
    for _ in 0..2 {
        let n = leb128::read::unsigned(&mut r).ok()?;
        for _ in 0..n {
            let spec = leb128::read::unsigned(&mut r).ok()?;
            let len = usize::try_from(leb128::read::unsigned(&mut r).ok()?).ok()?;
            columns.push((spec, len));
        }
    }
    let prefix = data.len() - r.len();
    let mut total = u64::try_from(prefix).ok()?;
    for (spec, len) in columns {
        let col = r.get(..len)?;
        r = &r[len..];
        let size = if spec & DEFLATE_BIT != 0 {
            inflated_len(col, budget.saturating_sub(total))
        } else {
            u64::try_from(len).ok()?
        };
        total = total.saturating_add(size);
        if total > budget {
            return Some(total);
        }
    }
    Some(total.saturating_add(u64::try_from(r.len()).ok()?))
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ROOT};

    fn doc_with(text: &str) -> Automerge {
        let mut d = Automerge::new();
        let mut tx = d.transaction();
        assert!(tx.put(ROOT, "s", text).is_ok());
        tx.commit();
        d
    }

    #[test]
    fn measures_documents_and_changes_and_catches_bombs() {
        let small = doc_with("hello").save();
        let n = decompressed_size(std::iter::once(small.as_slice()), 1 << 20);
        assert!(
            n.is_some_and(|n| n + 16 >= small.len() as u64 && n < 10_000),
            "{n:?} for {} bytes",
            small.len()
        );

        let bomb_doc = doc_with(&"a".repeat(4 << 20));
        let bomb = bomb_doc.save();
        assert!(
            bomb.len() < 64 << 10,
            "4 MiB of 'a' compresses to {} bytes",
            bomb.len()
        );
        let n = decompressed_size(std::iter::once(bomb.as_slice()), 1 << 20);
        assert!(
            n.is_some_and(|n| n > 1 << 20),
            "the bomb is measured past the cap: {n:?}"
        );
        let n = decompressed_size(std::iter::once(bomb.as_slice()), 64 << 20);
        assert!(
            n.is_some_and(|n| n >= 4 << 20),
            "its real size is seen under a larger cap: {n:?}"
        );

        let change = bomb_doc
            .get_last_local_change()
            .map(|c| c.raw_bytes().to_vec())
            .unwrap_or_default();
        let n = decompressed_size(std::iter::once(change.as_slice()), 64 << 20);
        assert!(n.is_some_and(|n| n >= 4 << 20), "{n:?}");
        assert_eq!(
            decompressed_size(std::iter::once(&b"garbage!!"[..]), 100),
            None
        );
    }
}
