//! Bounded per-thread caches of bs58check document ids, in both directions.
//!
//! Every frame names its document as bs58check text: decoding and encoding one each take two
//! SHA-256 rounds (the checksum), which a profile of the server under a typing load put at ~7 %
//! of its instructions. A server sees the same few ids over and over, so each thread keeps the
//! ids it coded last. Only valid ids are kept (a failed decode is never cached), and a cache
//! that reaches [`CAPACITY`] entries starts over empty, so a peer naming endless new ids costs
//! at most one extra decode per id, never memory.

use std::cell::RefCell;
use std::collections::HashMap;

/// Entries kept per direction and thread.
pub(super) const CAPACITY: usize = 4096;

#[derive(Default)]
struct Caches {
    encoded: HashMap<[u8; 16], Box<str>>,
    decoded: HashMap<Box<str>, [u8; 16]>,
}

thread_local! {
    static CACHES: RefCell<Caches> = RefCell::new(Caches::default());
}

/// Calls `f` with the bs58check text of `bytes`.
pub(super) fn with_encoded<R>(bytes: &[u8; 16], f: impl FnOnce(&str) -> R) -> R {
    CACHES.with(|c| {
        let mut c = c.borrow_mut();
        if !c.encoded.contains_key(bytes) {
            if c.encoded.len() >= CAPACITY {
                c.encoded.clear();
            }
            let text = bs58::encode(bytes).with_check().into_string();
            c.encoded.insert(*bytes, text.into_boxed_str());
        }
        f(c.encoded.get(bytes).map_or("", |s| s))
    })
}

/// The 16 bytes behind bs58check text `s`: `None` when `s` is not a valid 16-byte id.
pub(super) fn decoded(s: &str) -> Option<Result<[u8; 16], usize>> {
    if let Some(hit) = CACHES.with(|c| c.borrow().decoded.get(s).copied()) {
        return Some(Ok(hit));
    }
    let bytes = bs58::decode(s).with_check(None).into_vec().ok()?;
    let Ok(arr) = <[u8; 16]>::try_from(bytes.as_slice()) else {
        return Some(Err(bytes.len()));
    };
    CACHES.with(|c| {
        let mut c = c.borrow_mut();
        if c.decoded.len() >= CAPACITY {
            c.decoded.clear();
        }
        c.decoded.insert(s.into(), arr);
    });
    Some(Ok(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(bytes: &[u8; 16]) -> String {
        bs58::encode(bytes).with_check().into_string()
    }

    #[test]
    fn cached_coding_matches_plain_coding() {
        for i in 0..=255u8 {
            let bytes = [i; 16];
            let first = with_encoded(&bytes, str::to_owned);
            let again = with_encoded(&bytes, str::to_owned);
            assert_eq!(first, plain(&bytes));
            assert_eq!(again, first);
            assert_eq!(decoded(&first), Some(Ok(bytes)));
            assert_eq!(decoded(&first), Some(Ok(bytes)), "a cache hit");
        }
    }

    #[test]
    fn invalid_input_is_refused_and_not_cached() {
        let good = plain(&[7; 16]);
        let mut bad = good.clone();
        bad.pop();
        bad.push(if good.ends_with('1') { '2' } else { '1' });
        assert_eq!(decoded(&bad), None, "bad checksum");
        assert_eq!(decoded(&bad), None, "still refused");
        CACHES.with(|c| assert!(!c.borrow().decoded.contains_key(bad.as_str())));
        let short = bs58::encode([1u8; 8]).with_check().into_string();
        assert_eq!(decoded(&short), Some(Err(8)));
    }

    #[test]
    fn the_caches_stay_bounded() {
        for i in 0..(CAPACITY as u32 + 10) {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&i.to_le_bytes());
            let text = with_encoded(&bytes, str::to_owned);
            assert_eq!(decoded(&text), Some(Ok(bytes)));
        }
        CACHES.with(|c| {
            let c = c.borrow();
            assert!(c.encoded.len() <= CAPACITY && c.decoded.len() <= CAPACITY);
            assert!(!c.encoded.is_empty() && !c.decoded.is_empty());
        });
    }
}
