//! The text of a notification payload: [`BusNotice`]s (and the bus's own liveness pings) as
//! small JSON objects.
//!
//! ```text
//! {"t":"c","n":"node-a","d":"<bs58 document id>","k":["<64 hex>",...],"w":1733...}  committed
//! {"t":"e","n":"node-a","d":"...","s":"peer","i":"session","c":7,"b":"<base64>"}  ephemeral
//! {"t":"x","n":"node-a","d":"...","b":"<base64 tombstone>"}                deletion
//! {"t":"r","n":"node-a","d":"...","h":{"<storage id>":["<64 hex>",...]}}   region heads
//! {"t":"p","n":"node-a","q":12}                                             liveness ping
//! ```
//!
//! PostgreSQL refuses payloads of 8000 bytes or more (and a refused `pg_notify` would abort the
//! committing transaction), so [`committed`] drops the key list when it does not fit: an empty
//! list means "re-read the document". `w` is the committing node's wall clock (ms since the Unix
//! epoch) when it built the notice, so receivers can measure the bus lag (commit on one node to
//! delivery on another; across machines it includes their clock offset); older payloads
//! without it decode too.

use std::collections::BTreeMap;

use automerge::ChangeHash;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::id::{DocumentId, PeerId, StorageId};
use crate::repo::BusNotice;
use crate::storage::ChunkKey;

/// The largest payload PostgreSQL accepts, in bytes.
pub const MAX_PAYLOAD: usize = 7999;

#[derive(Serialize, Deserialize)]
#[serde(tag = "t")]
enum Wire {
    #[serde(rename = "c")]
    Committed {
        n: String,
        d: String,
        #[serde(default)]
        k: Vec<String>,
        #[serde(default, skip_serializing_if = "is_zero")]
        w: u64,
    },
    #[serde(rename = "e")]
    Ephemeral {
        n: String,
        d: String,
        s: String,
        i: String,
        c: u64,
        b: String,
    },
    #[serde(rename = "x")]
    Deleted { n: String, d: String, b: String },
    #[serde(rename = "r")]
    RegionHeads {
        n: String,
        d: String,
        h: BTreeMap<String, Vec<String>>,
    },
    #[serde(rename = "p")]
    Ping { n: String, q: u64 },
}

/// A decoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload {
    /// A notice for the subscribers.
    Notice(BusNotice),
    /// A liveness ping from `node` (sequence `seq`).
    Ping { node: String, seq: u64 },
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Milliseconds since the Unix epoch on this machine's clock (0 if it is before 1970).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn to_json(w: &Wire) -> String {
    // Serializing these plain structs cannot fail; an empty payload would be refused by the
    // receivers' decoder anyway.
    serde_json::to_string(w).unwrap_or_default()
}

/// The payload announcing that `node` committed `keys` of `doc`: the keys when they fit, else
/// none ("re-read it").
pub(crate) fn committed(node: &str, doc: &DocumentId, keys: &[ChunkKey]) -> String {
    let w = now_ms();
    let full = to_json(&Wire::Committed {
        n: node.to_owned(),
        d: doc.to_string(),
        k: keys.iter().map(|k| hex::encode(k.0)).collect(),
        w,
    });
    if full.len() <= MAX_PAYLOAD {
        return full;
    }
    to_json(&Wire::Committed {
        n: node.to_owned(),
        d: doc.to_string(),
        k: Vec::new(),
        w,
    })
}

/// The payload of any notice; `Err(len)` when it does not fit a notification.
pub(crate) fn encode(notice: &BusNotice) -> Result<String, usize> {
    let text = match notice {
        BusNotice::Committed { node, doc, keys } => return Ok(committed(node, doc, keys)),
        BusNotice::Ephemeral {
            node,
            doc,
            sender,
            session_id,
            count,
            data,
        } => to_json(&Wire::Ephemeral {
            n: node.clone(),
            d: doc.to_string(),
            s: sender.as_str().to_owned(),
            i: session_id.clone(),
            c: *count,
            b: BASE64.encode(data),
        }),
        BusNotice::Deleted {
            node,
            doc,
            tombstone,
        } => to_json(&Wire::Deleted {
            n: node.clone(),
            d: doc.to_string(),
            b: BASE64.encode(tombstone),
        }),
        BusNotice::RegionHeads { node, doc, heads } => to_json(&Wire::RegionHeads {
            n: node.clone(),
            d: doc.to_string(),
            h: heads
                .iter()
                .map(|(sid, hs)| {
                    let hex = hs.iter().map(|h| hex::encode(h.0)).collect();
                    (sid.as_str().to_owned(), hex)
                })
                .collect(),
        }),
    };
    if text.len() > MAX_PAYLOAD {
        Err(text.len())
    } else {
        Ok(text)
    }
}

/// A liveness ping's payload.
pub(crate) fn ping(node: &str, seq: u64) -> String {
    to_json(&Wire::Ping {
        n: node.to_owned(),
        q: seq,
    })
}

/// Decodes a payload; `None` for anything malformed (another application on the channel, a
/// newer version's notice kind).
#[cfg(test)]
pub(crate) fn decode(text: &str) -> Option<Payload> {
    decode_timed(text).map(|(p, _)| p)
}

/// [`decode`], with the commit time (`w`, ms since the Unix epoch) of a commit notice that
/// carries one.
pub(crate) fn decode_timed(text: &str) -> Option<(Payload, Option<u64>)> {
    let doc = |d: &str| d.parse::<DocumentId>().ok();
    let mut sent = None;
    let payload = match serde_json::from_str::<Wire>(text).ok()? {
        Wire::Committed { n, d, k, w } => {
            sent = (w > 0).then_some(w);
            let keys = k
                .iter()
                .map(|h| {
                    let bytes = hex::decode(h).ok()?;
                    Some(ChunkKey(bytes.try_into().ok()?))
                })
                .collect::<Option<Vec<_>>>()?;
            Payload::Notice(BusNotice::Committed {
                node: n,
                doc: doc(&d)?,
                keys,
            })
        }
        Wire::Ephemeral { n, d, s, i, c, b } => Payload::Notice(BusNotice::Ephemeral {
            node: n,
            doc: doc(&d)?,
            sender: PeerId::new(s),
            session_id: i,
            count: c,
            data: BASE64.decode(b).ok()?,
        }),
        Wire::Deleted { n, d, b } => Payload::Notice(BusNotice::Deleted {
            node: n,
            doc: doc(&d)?,
            tombstone: BASE64.decode(b).ok()?,
        }),
        Wire::RegionHeads { n, d, h } => {
            let heads = h
                .into_iter()
                .map(|(sid, hs)| {
                    let hs = hs
                        .iter()
                        .map(|x| Some(ChangeHash(hex::decode(x).ok()?.try_into().ok()?)))
                        .collect::<Option<Vec<_>>>()?;
                    Some((StorageId::from(sid.as_str()), hs))
                })
                .collect::<Option<Vec<_>>>()?;
            Payload::Notice(BusNotice::RegionHeads {
                node: n,
                doc: doc(&d)?,
                heads,
            })
        }
        Wire::Ping { n, q } => Payload::Ping { node: n, seq: q },
    };
    Some((payload, sent))
}

/// Milliseconds from `sent_ms` (another node's clock) to now on this one; 0 if the clocks
/// disagree the other way.
pub(crate) fn lag_ms(sent_ms: u64) -> u64 {
    now_ms().saturating_sub(sent_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip() {
        let doc = DocumentId::from_bytes([9; 16]);
        let notices = [
            BusNotice::Committed {
                node: "a".into(),
                doc,
                keys: vec![ChunkKey::of(b"x"), ChunkKey::of(b"y")],
            },
            BusNotice::Committed {
                node: "a".into(),
                doc,
                keys: vec![],
            },
            BusNotice::Ephemeral {
                node: "b".into(),
                doc,
                sender: PeerId::from("peer"),
                session_id: "s".into(),
                count: 3,
                data: vec![0, 255, 7],
            },
            BusNotice::RegionHeads {
                node: "c".into(),
                doc,
                heads: vec![
                    (
                        StorageId::from("eu"),
                        vec![ChangeHash([1; 32]), ChangeHash([2; 32])],
                    ),
                    (StorageId::from("us"), vec![ChangeHash([3; 32])]),
                ],
            },
        ];
        for n in notices {
            let text = encode(&n).unwrap();
            assert_eq!(decode(&text), Some(Payload::Notice(n)));
        }
        assert_eq!(
            decode(&ping("a", 5)),
            Some(Payload::Ping {
                node: "a".into(),
                seq: 5
            })
        );
    }

    #[test]
    fn too_many_keys_become_a_re_read_and_large_ephemerals_are_refused() {
        let doc = DocumentId::from_bytes([9; 16]);
        let keys: Vec<ChunkKey> = (0..200u32)
            .map(|i| ChunkKey::of(&i.to_le_bytes()))
            .collect();
        let text = committed(&"n".repeat(64), &doc, &keys);
        assert!(text.len() <= MAX_PAYLOAD);
        assert_eq!(
            decode(&text),
            Some(Payload::Notice(BusNotice::Committed {
                node: "n".repeat(64),
                doc,
                keys: vec![]
            }))
        );
        let (_, sent) = decode_timed(&text).unwrap();
        assert!(
            sent.is_some_and(|w| lag_ms(w) < 60_000),
            "commit time carried"
        );
        let old = r#"{"t":"c","n":"a","d":"2BxFKSGA17PMz9fHW7nyB9zMwFzu","k":[]}"#;
        assert!(matches!(
            decode_timed(old),
            Some((Payload::Notice(_), None))
        ));
        let fits = committed("n", &doc, &keys[..100]);
        assert!(
            fits.len() <= MAX_PAYLOAD && fits.len() > 6000,
            "{}",
            fits.len()
        );
        let big = BusNotice::Ephemeral {
            node: "b".into(),
            doc,
            sender: PeerId::from("p"),
            session_id: "s".into(),
            count: 0,
            data: vec![1; 6000],
        };
        assert!(matches!(encode(&big), Err(len) if len > MAX_PAYLOAD));
    }

    #[test]
    fn garbage_is_ignored() {
        for text in [
            "",
            "hello",
            "{}",
            r#"{"t":"x"}"#,
            r#"{"t":"c","n":"a","d":"nope","k":[]}"#,
            r#"{"t":"c","n":"a","d":"2j9Qk4ZsW8gV6YHfPvXbU8Y3GdwE","k":["00"]}"#,
            r#"{"t":"r","n":"a","d":"2BxFKSGA17PMz9fHW7nyB9zMwFzu","h":{"eu":["00"]}}"#,
        ] {
            assert_eq!(decode(text), None, "{text}");
        }
    }
}
