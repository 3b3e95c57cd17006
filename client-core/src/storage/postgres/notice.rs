//! The text of a notification payload: [`BusNotice`]s (and the bus's own liveness pings) as
//! small JSON objects.
//!
//! ```text
//! {"t":"c","n":"node-a","d":"<bs58 document id>","k":["<64 hex>",...]}    chunks committed
//! {"t":"e","n":"node-a","d":"...","s":"peer","i":"session","c":7,"b":"<base64>"}  ephemeral
//! {"t":"x","n":"node-a","d":"...","b":"<base64 tombstone>"}                deletion
//! {"t":"p","n":"node-a","q":12}                                             liveness ping
//! ```
//!
//! PostgreSQL refuses payloads of 8000 bytes or more (and a refused `pg_notify` would abort the
//! committing transaction), so [`committed`] drops the key list when it does not fit: an empty
//! list means "re-read the document".

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::id::{DocumentId, PeerId};
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

fn to_json(w: &Wire) -> String {
    // Serializing these plain structs cannot fail; an empty payload would be refused by the
    // receivers' decoder anyway.
    serde_json::to_string(w).unwrap_or_default()
}

/// The payload announcing that `node` committed `keys` of `doc`: the keys when they fit, else
/// none ("re-read it").
pub(crate) fn committed(node: &str, doc: &DocumentId, keys: &[ChunkKey]) -> String {
    let full = to_json(&Wire::Committed {
        n: node.to_owned(),
        d: doc.to_string(),
        k: keys.iter().map(|k| hex::encode(k.0)).collect(),
    });
    if full.len() <= MAX_PAYLOAD {
        return full;
    }
    to_json(&Wire::Committed {
        n: node.to_owned(),
        d: doc.to_string(),
        k: Vec::new(),
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
pub(crate) fn decode(text: &str) -> Option<Payload> {
    let doc = |d: &str| d.parse::<DocumentId>().ok();
    Some(match serde_json::from_str::<Wire>(text).ok()? {
        Wire::Committed { n, d, k } => {
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
        Wire::Ping { n, q } => Payload::Ping { node: n, seq: q },
    })
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
        ] {
            assert_eq!(decode(text), None, "{text}");
        }
    }
}
