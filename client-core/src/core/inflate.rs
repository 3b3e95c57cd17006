//! How large the changes of a sync message become once decompressed, measured with capped
//! inflation BEFORE Automerge parses them, so a small compressed chunk cannot expand into
//! gigabytes inside the engine (a compression bomb).
//!
//! Automerge chunks are `magic(4) checksum(4) type(1) leb128(len) data(len)`. Type 1 (change) is
//! stored as is; type 2 is a DEFLATE-compressed change; type 0 (a whole document) has leb128
//! column metadata whose spec has a deflate bit per column. Anything unrecognised counts with its
//! raw size (Automerge then rejects or accepts it itself).
//!
//! The same walk counts operations: a change's columns are run-length encoded, so a few bytes can
//! declare millions of operations that Automerge would then verify one by one. The action
//! column's run lengths are summed (capped) before Automerge sees the change.

use std::io::Read;

use super::{Limits, ProtocolError};
use crate::id::DocumentId;

/// Column spec of a change's action column: id 4, type unsigned LEB128 (2).
const ACTION_COLUMN: u64 = (4 << 4) | 2;

/// What the changes of a sync message will cost Automerge, measured before it parses them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Cost {
    /// Operations declared.
    pub(super) ops: u64,
    /// Bytes once decompressed (raw size where they do not parse as chunks).
    pub(super) bytes: u64,
}

/// Refuses the changes of a sync message that would decompress beyond
/// [`Limits::max_decompressed_bytes`] or carry more than [`Limits::max_ops_per_message`]
/// operations, measured without letting Automerge parse them; returns what they cost.
pub(super) fn check_expansion(
    changes: &[&[u8]],
    limits: &Limits,
    doc: DocumentId,
) -> Result<Cost, ProtocolError> {
    let cap = limits.max_decompressed_bytes;
    let bytes = decompressed_size(changes.iter().copied(), cap)
        .unwrap_or_else(|| changes.iter().map(|c| c.len() as u64).sum());
    if bytes > cap {
        return Err(ProtocolError::DecompressedTooLarge { doc, limit: cap });
    }
    let max_ops = limits.max_ops_per_message;
    let mut ops = 0u64;
    for c in changes {
        ops = ops.saturating_add(change_ops(c, cap, max_ops.saturating_sub(ops)).unwrap_or(0));
        if ops > max_ops {
            return Err(ProtocolError::TooManyOps {
                doc,
                limit: max_ops,
            });
        }
    }
    Ok(Cost { ops, bytes })
}

/// Operations declared by the change chunk `b` (counting stops past `budget`); `None` when it does
/// not parse (Automerge reports that itself).
fn change_ops(b: &[u8], max_bytes: u64, budget: u64) -> Option<u64> {
    if b.len() < 9 || b[..4] != MAGIC {
        return None;
    }
    let ty = b[8];
    let mut r = &b[9..];
    let len = usize::try_from(leb128::read::unsigned(&mut r).ok()?).ok()?;
    let data = r.get(..len)?;
    match ty {
        1 => change_data_ops(data, max_bytes, budget),
        2 => {
            let mut inflated = Vec::new();
            flate2::read::DeflateDecoder::new(data)
                .take(max_bytes)
                .read_to_end(&mut inflated)
                .ok()?;
            change_data_ops(&inflated, max_bytes, budget)
        }
        _ => None,
    }
}

fn skip_bytes(r: &mut &[u8]) -> Option<()> {
    let n = usize::try_from(leb128::read::unsigned(r).ok()?).ok()?;
    *r = r.get(n..)?;
    Some(())
}

/// The body of a change chunk: deps, actor, seq, start op, time, message, other actors, column
/// metadata, column data.
fn change_data_ops(data: &[u8], max_bytes: u64, budget: u64) -> Option<u64> {
    let mut r = data;
    let deps = usize::try_from(leb128::read::unsigned(&mut r).ok()?).ok()?;
    r = r.get(deps.checked_mul(32)?..)?;
    skip_bytes(&mut r)?; // actor
    leb128::read::unsigned(&mut r).ok()?; // seq
    leb128::read::unsigned(&mut r).ok()?; // start op
    leb128::read::signed(&mut r).ok()?; // time
    skip_bytes(&mut r)?; // message
    let others = leb128::read::unsigned(&mut r).ok()?;
    for _ in 0..others {
        skip_bytes(&mut r)?;
    }
    let n = leb128::read::unsigned(&mut r).ok()?;
    let mut columns = Vec::new();
    for _ in 0..n {
        let spec = leb128::read::unsigned(&mut r).ok()?;
        let len = usize::try_from(leb128::read::unsigned(&mut r).ok()?).ok()?;
        columns.push((spec, len));
    }
    for (spec, len) in columns {
        let col = r.get(..len)?;
        r = &r[len..];
        if spec & !DEFLATE_BIT != ACTION_COLUMN {
            continue;
        }
        if spec & DEFLATE_BIT == 0 {
            return Some(rle_rows(col, budget));
        }
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(col)
            .take(max_bytes)
            .read_to_end(&mut inflated)
            .ok()?;
        return Some(rle_rows(&inflated, budget));
    }
    Some(0)
}

/// Rows of an RLE column of unsigned LEB128 values, counting stops past `budget`.
fn rle_rows(col: &[u8], budget: u64) -> u64 {
    let mut r = col;
    let mut rows = 0u64;
    while !r.is_empty() && rows <= budget {
        let Ok(count) = leb128::read::signed(&mut r) else {
            break;
        };
        let step = match count {
            n if n > 0 => leb128::read::unsigned(&mut r).map(|_| n.unsigned_abs()),
            n if n < 0 => {
                let literals = n.unsigned_abs();
                let mut ok = Ok(literals);
                for _ in 0..literals.min(u64::try_from(r.len()).unwrap_or(u64::MAX)) {
                    if let Err(e) = leb128::read::unsigned(&mut r) {
                        ok = Err(e);
                        break;
                    }
                }
                ok
            }
            _ => leb128::read::unsigned(&mut r), // a run of nulls
        };
        match step {
            Ok(n) => rows = rows.saturating_add(n),
            Err(_) => break,
        }
    }
    rows
}

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

    #[test]
    fn counts_the_operations_of_changes() {
        let mut d = Automerge::new();
        let mut tx = d.transaction();
        for i in 0..1000i64 {
            assert!(tx.put(ROOT, format!("k{i}"), i).is_ok());
        }
        tx.commit();
        let change = d
            .get_last_local_change()
            .map(|c| c.raw_bytes().to_vec())
            .unwrap_or_default();
        assert_eq!(change_ops(&change, 1 << 20, u64::MAX), Some(1000));
        let limits = Limits {
            max_ops_per_message: 999,
            ..Limits::default()
        };
        let doc = DocumentId::from_bytes([1; 16]);
        assert!(matches!(
            check_expansion(&[change.as_slice()], &limits, doc),
            Err(ProtocolError::TooManyOps { limit: 999, .. })
        ));
        assert!(check_expansion(&[change.as_slice()], &Limits::default(), doc).is_ok());
        assert_eq!(change_ops(b"garbage!!", 100, 100), None);
    }
}
