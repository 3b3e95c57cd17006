//! Checks on a decoded sync message before Automerge works with it.
//!
//! Automerge trusts the parameters of a peer's `have` Bloom filters: a filter that declares
//! entries but zero bits per entry makes its probe computation divide by zero (a panic), and a
//! filter declaring 2^30 probes makes every lookup allocate and loop for seconds. Honest peers
//! (Automerge, automerge-repo JS, Concord) always send 10 bits per entry and 7 probes; we accept
//! a generous range around that and refuse the rest with an error to the sender.

use automerge::sync;

/// Largest accepted number of hash probes per entry (Automerge uses 7).
pub const MAX_BLOOM_PROBES: u64 = 32;
/// Largest accepted bits per entry (Automerge uses 10).
pub const MAX_BLOOM_BITS_PER_ENTRY: u64 = 64;
/// Largest accepted number of `have` summaries in one message (Automerge sends one).
pub const MAX_HAVES: usize = 16;

/// Why a sync message is refused before Automerge sees it.
pub(super) fn check_sync_message(msg: &sync::Message) -> Result<(), String> {
    if msg.have.len() > MAX_HAVES {
        return Err(format!(
            "{} `have` summaries (at most {MAX_HAVES})",
            msg.have.len()
        ));
    }
    for have in &msg.have {
        check_bloom(&have.bloom.to_bytes())?;
    }
    Ok(())
}

/// Checks an encoded Bloom filter: `leb128(entries) leb128(bits per entry) leb128(probes) bits`
/// (empty when it has no entries).
fn check_bloom(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut r = bytes;
    let mut next = |what: &str| {
        leb128::read::unsigned(&mut r).map_err(|e| format!("bloom filter {what}: {e}"))
    };
    let entries = next("entry count")?;
    let bits_per_entry = next("bits per entry")?;
    let probes = next("probe count")?;
    if entries == 0 {
        return Ok(()); // Automerge never probes an empty filter.
    }
    if !(1..=MAX_BLOOM_BITS_PER_ENTRY).contains(&bits_per_entry) {
        return Err(format!(
            "bloom filter declares {bits_per_entry} bits per entry (accepted: 1 to {MAX_BLOOM_BITS_PER_ENTRY})"
        ));
    }
    if !(1..=MAX_BLOOM_PROBES).contains(&probes) {
        return Err(format!(
            "bloom filter declares {probes} probes (accepted: 1 to {MAX_BLOOM_PROBES})"
        ));
    }
    let expected = (entries.saturating_mul(bits_per_entry)).div_ceil(8);
    if r.len() as u64 != expected || r.is_empty() {
        return Err(format!(
            "bloom filter of {entries} entries carries {} bytes of bits (expected {expected})",
            r.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(entries: u64, bits: u64, probes: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [entries, bits, probes] {
            leb128::write::unsigned(&mut out, v).unwrap_or_default();
        }
        out.extend(std::iter::repeat_n(0xFF, len));
        out
    }

    #[test]
    fn honest_filters_pass() {
        assert!(check_bloom(&[]).is_ok());
        assert!(check_bloom(&filter(3, 10, 7, 4)).is_ok());
        assert!(check_bloom(&filter(1, 10, 7, 2)).is_ok());
    }

    #[test]
    fn hostile_filters_are_refused() {
        let zero_bits = check_bloom(&filter(1, 0, 7, 0)).unwrap_err();
        assert!(zero_bits.contains("0 bits per entry"), "{zero_bits}");
        let probes = check_bloom(&filter(1, 8, 1 << 30, 1)).unwrap_err();
        assert!(probes.contains("probes"), "{probes}");
        assert!(check_bloom(&filter(1, 8, 0, 1)).is_err());
        assert!(check_bloom(&filter(4, 10, 7, 1)).is_err(), "short bits");
        assert!(check_bloom(&[0x80]).is_err(), "truncated leb128");
    }

    /// The 10-byte message of the report: no heads, no needs, one `have` whose filter
    /// declares 1 entry, 0 bits per entry and 7 probes, no changes.
    pub(crate) const TEN_BYTES: [u8; 10] = [0x42, 0, 0, 1, 0, 3, 1, 0, 7, 0];

    #[test]
    fn the_reported_ten_byte_message_is_refused() {
        let decoded = sync::Message::decode(&TEN_BYTES).expect("Automerge accepts it");
        let err = check_sync_message(&decoded).unwrap_err();
        assert!(err.contains("0 bits per entry"), "{err}");
        // An honest message passes.
        let am = automerge::Automerge::new();
        let mut state = sync::State::new();
        let honest = sync::SyncDoc::generate_sync_message(&am, &mut state).unwrap();
        assert!(check_sync_message(&sync::Message::decode(&honest.encode()).unwrap()).is_ok());
    }
}
