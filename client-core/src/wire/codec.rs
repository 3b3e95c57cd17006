//! CBOR encoding and decoding of protocol v1 messages (ciborium).
//!
//! Decoding is tolerant where the JavaScript implementation is loose (numbers may arrive as floats,
//! `documentId` as text or bytes, `metadata` instead of `peerMetadata`, unknown keys) and strict
//! where it matters (size limit, required fields, non-empty `data`).

use std::collections::BTreeMap;

use ciborium::Value;

use super::message::{Message, PeerMetadata, RemoteHeads};
use crate::id::{DocumentId, IdError, PeerId, StorageId};

/// Why bytes are not a valid protocol message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Frame size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not well-formed CBOR (truncated, garbage, trailing bytes).
    #[error("malformed CBOR: {0}")]
    Cbor(String),
    /// The top-level item is not a map.
    #[error("message is not a CBOR map")]
    NotAMap,
    /// A required field is missing.
    #[error("`{ty}` message lacks field `{field}`")]
    MissingField {
        /// Message type.
        ty: String,
        /// Field name.
        field: &'static str,
    },
    /// A field has the wrong CBOR type.
    #[error("field `{field}` should be {expected}")]
    WrongType {
        /// Field name.
        field: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// A `type` this implementation does not know.
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    /// `data` of a request/sync/ephemeral message is empty (illegal in protocol v1).
    #[error("`{0}` message has zero-length data")]
    EmptyData(String),
    /// `documentId` is not a valid document id.
    #[error("invalid documentId: {0}")]
    DocumentId(#[from] IdError),
}

type Fields = Vec<(Value, Value)>;

fn field<'a>(map: &'a Fields, name: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| matches!(k, Value::Text(t) if t == name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

struct Reader<'a> {
    ty: &'a str,
    map: &'a Fields,
}

impl<'a> Reader<'a> {
    fn opt(&self, name: &'static str) -> Option<&'a Value> {
        field(self.map, name)
    }

    fn req(&self, name: &'static str) -> Result<&'a Value, DecodeError> {
        self.opt(name).ok_or_else(|| DecodeError::MissingField {
            ty: self.ty.to_owned(),
            field: name,
        })
    }

    fn text(&self, name: &'static str) -> Result<String, DecodeError> {
        as_text(self.req(name)?, name)
    }

    fn opt_text(&self, name: &'static str) -> Result<Option<String>, DecodeError> {
        self.opt(name).map(|v| as_text(v, name)).transpose()
    }

    fn peer(&self, name: &'static str) -> Result<PeerId, DecodeError> {
        self.text(name).map(PeerId::new)
    }

    fn bytes(&self, name: &'static str) -> Result<Vec<u8>, DecodeError> {
        match self.req(name)? {
            Value::Bytes(b) => Ok(b.clone()),
            _ => Err(DecodeError::WrongType {
                field: name,
                expected: "a byte string",
            }),
        }
    }

    fn data(&self) -> Result<Vec<u8>, DecodeError> {
        let data = self.bytes("data")?;
        if data.is_empty() {
            return Err(DecodeError::EmptyData(self.ty.to_owned()));
        }
        Ok(data)
    }

    fn document_id(&self) -> Result<DocumentId, DecodeError> {
        match self.req("documentId")? {
            Value::Text(t) => Ok(t.parse()?),
            Value::Bytes(b) => Ok(DocumentId::try_from_slice(b)?),
            _ => Err(DecodeError::WrongType {
                field: "documentId",
                expected: "text or bytes",
            }),
        }
    }

    fn number(&self, name: &'static str) -> Result<f64, DecodeError> {
        as_number(self.req(name)?, name)
    }

    fn storage_ids(&self, name: &'static str) -> Result<Vec<StorageId>, DecodeError> {
        match self.opt(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| as_text(v, name).map(StorageId::new))
                .collect(),
            Some(_) => Err(DecodeError::WrongType {
                field: name,
                expected: "an array of strings",
            }),
        }
    }
}

fn as_text(v: &Value, field: &'static str) -> Result<String, DecodeError> {
    match v {
        Value::Text(t) => Ok(t.clone()),
        _ => Err(DecodeError::WrongType {
            field,
            expected: "a text string",
        }),
    }
}

fn as_number(v: &Value, field: &'static str) -> Result<f64, DecodeError> {
    match v {
        Value::Integer(i) => Ok(i128::from(*i) as f64),
        Value::Float(f) if f.is_finite() => Ok(*f),
        _ => Err(DecodeError::WrongType {
            field,
            expected: "a finite number",
        }),
    }
}

fn count_from(f: f64) -> Result<u64, DecodeError> {
    if f < 0.0 || f.fract() != 0.0 || f > u64::MAX as f64 {
        return Err(DecodeError::WrongType {
            field: "count",
            expected: "a non-negative integer",
        });
    }
    Ok(f as u64)
}

fn metadata(v: Option<&Value>) -> Result<Option<PeerMetadata>, DecodeError> {
    let Some(v) = v else { return Ok(None) };
    let Value::Map(m) = v else {
        return Err(DecodeError::WrongType {
            field: "peerMetadata",
            expected: "a map",
        });
    };
    let storage_id = field(m, "storageId")
        .map(|v| as_text(v, "storageId").map(StorageId::new))
        .transpose()?;
    let is_ephemeral = match field(m, "isEphemeral") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(DecodeError::WrongType {
                field: "isEphemeral",
                expected: "a boolean",
            });
        }
    };
    let region = field(m, "concordRegion")
        .map(|v| as_text(v, "concordRegion"))
        .transpose()?;
    let concord = matches!(field(m, "concord"), Some(Value::Bool(true)));
    Ok(Some(PeerMetadata {
        storage_id,
        is_ephemeral,
        region,
        concord,
    }))
}

fn remote_heads(v: &Value) -> Result<BTreeMap<StorageId, RemoteHeads>, DecodeError> {
    let wrong = |field| DecodeError::WrongType {
        field,
        expected: "a map of storageId to {heads, timestamp}",
    };
    let Value::Map(m) = v else {
        return Err(wrong("newHeads"));
    };
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let sid = StorageId::new(as_text(k, "newHeads")?);
        let Value::Map(entry) = v else {
            return Err(wrong("newHeads"));
        };
        let heads = match field(entry, "heads") {
            Some(Value::Array(hs)) => hs
                .iter()
                .map(|h| as_text(h, "heads"))
                .collect::<Result<_, _>>()?,
            _ => return Err(wrong("heads")),
        };
        let timestamp = field(entry, "timestamp")
            .map(|t| as_number(t, "timestamp"))
            .transpose()?
            .unwrap_or(0.0);
        out.insert(sid, RemoteHeads { heads, timestamp });
    }
    Ok(out)
}

/// Decodes one frame, refusing frames larger than `max_bytes` before parsing them.
pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<Message, DecodeError> {
    if bytes.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    let mut cursor = bytes;
    let value: Value =
        ciborium::de::from_reader(&mut cursor).map_err(|e| DecodeError::Cbor(e.to_string()))?;
    if !cursor.is_empty() {
        return Err(DecodeError::Cbor(format!(
            "{} trailing bytes after the message",
            cursor.len()
        )));
    }
    let Value::Map(map) = value else {
        return Err(DecodeError::NotAMap);
    };
    let ty = match field(&map, "type") {
        Some(Value::Text(t)) => t.clone(),
        Some(_) => {
            return Err(DecodeError::WrongType {
                field: "type",
                expected: "a text string",
            });
        }
        None => {
            return Err(DecodeError::MissingField {
                ty: "?".into(),
                field: "type",
            });
        }
    };
    let r = Reader { ty: &ty, map: &map };
    let msg = match ty.as_str() {
        "join" => Message::Join {
            sender_id: r.peer("senderId")?,
            peer_metadata: metadata(r.opt("peerMetadata").or_else(|| r.opt("metadata")))?,
            supported_protocol_versions: match r.opt("supportedProtocolVersions") {
                None => Vec::new(),
                Some(Value::Array(vs)) => vs
                    .iter()
                    .map(|v| as_text(v, "supportedProtocolVersions"))
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(DecodeError::WrongType {
                        field: "supportedProtocolVersions",
                        expected: "an array of strings",
                    });
                }
            },
        },
        "peer" => Message::Peer {
            sender_id: r.peer("senderId")?,
            target_id: r.peer("targetId")?,
            peer_metadata: metadata(r.opt("peerMetadata").or_else(|| r.opt("metadata")))?,
            selected_protocol_version: r.text("selectedProtocolVersion")?,
        },
        "error" => Message::Error {
            sender_id: r.opt_text("senderId")?.map(PeerId::new),
            target_id: r.opt_text("targetId")?.map(PeerId::new),
            message: r.opt_text("message")?.unwrap_or_default(),
        },
        "leave" => Message::Leave {
            sender_id: r.peer("senderId")?,
        },
        "request" | "sync" => {
            let (sender_id, target_id, document_id, data) = (
                r.peer("senderId")?,
                r.peer("targetId")?,
                r.document_id()?,
                r.data()?,
            );
            if ty == "request" {
                Message::Request {
                    sender_id,
                    target_id,
                    document_id,
                    data,
                }
            } else {
                Message::Sync {
                    sender_id,
                    target_id,
                    document_id,
                    data,
                }
            }
        }
        "doc-unavailable" => Message::DocUnavailable {
            sender_id: r.peer("senderId")?,
            target_id: r.peer("targetId")?,
            document_id: r.document_id()?,
        },
        "ephemeral" => Message::Ephemeral {
            sender_id: r.peer("senderId")?,
            target_id: r.peer("targetId")?,
            document_id: r.document_id()?,
            session_id: r.text("sessionId")?,
            count: count_from(r.number("count")?)?,
            data: r.data()?,
        },
        "remote-subscription-change" => Message::RemoteSubscriptionChange {
            sender_id: r.peer("senderId")?,
            target_id: r.peer("targetId")?,
            add: r.storage_ids("add")?,
            remove: r.storage_ids("remove")?,
        },
        "remote-heads-changed" => Message::RemoteHeadsChanged {
            sender_id: r.peer("senderId")?,
            target_id: r.peer("targetId")?,
            document_id: r.document_id()?,
            new_heads: remote_heads(r.req("newHeads")?)?,
        },
        "concord-delete" => Message::Delete {
            sender_id: r.peer("senderId")?,
            target_id: r.peer("targetId")?,
            document_id: r.document_id()?,
        },
        "concord-deleted" => Message::Deleted {
            sender_id: r.peer("senderId")?,
            target_id: r.peer("targetId")?,
            document_id: r.document_id()?,
            tombstone: r.bytes("tombstone")?,
        },
        "concord-digest" => Message::Digest {
            sender_id: r.peer("senderId")?,
            target_id: r.peer("targetId")?,
            buckets: r.bytes("buckets")?,
            covers: r.opt("covers").map(|_| r.bytes("covers")).transpose()?,
        },
        "concord-digest-entries" => Message::DigestEntries {
            sender_id: r.peer("senderId")?,
            target_id: r.peer("targetId")?,
            buckets: r.bytes("buckets")?,
            entries: r.bytes("entries")?,
        },
        "concord-regions" => Message::Regions {
            sender_id: r.peer("senderId")?,
            target_id: r.peer("targetId")?,
            reachable: r.storage_ids("reachable")?,
            down: r
                .storage_ids("down")?
                .into_iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
        },
        other => return Err(DecodeError::UnknownType(other.chars().take(64).collect())),
    };
    Ok(msg)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn meta_value(m: &PeerMetadata) -> Value {
    let mut fields = vec![(text("isEphemeral"), Value::Bool(m.is_ephemeral))];
    if let Some(sid) = &m.storage_id {
        fields.push((text("storageId"), text(sid.as_str())));
    }
    if let Some(region) = &m.region {
        fields.push((text("concordRegion"), text(region)));
    }
    if m.concord {
        fields.push((text("concord"), Value::Bool(true)));
    }
    Value::Map(fields)
}

/// Encodes a message as one CBOR map (documentId as bs58check text, like automerge-repo).
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut f: Fields = vec![(text("type"), text(msg.type_name()))];
    let mut put = |k: &str, v: Value| f.push((text(k), v));
    match msg {
        Message::Join {
            sender_id,
            peer_metadata,
            supported_protocol_versions,
        } => {
            put("senderId", text(sender_id.as_str()));
            if let Some(m) = peer_metadata {
                put("peerMetadata", meta_value(m));
            }
            put(
                "supportedProtocolVersions",
                Value::Array(
                    supported_protocol_versions
                        .iter()
                        .map(|v| text(v))
                        .collect(),
                ),
            );
        }
        Message::Peer {
            sender_id,
            target_id,
            peer_metadata,
            selected_protocol_version,
        } => {
            put("senderId", text(sender_id.as_str()));
            put("targetId", text(target_id.as_str()));
            if let Some(m) = peer_metadata {
                put("peerMetadata", meta_value(m));
            }
            put("selectedProtocolVersion", text(selected_protocol_version));
        }
        Message::Error {
            sender_id,
            target_id,
            message,
        } => {
            if let Some(s) = sender_id {
                put("senderId", text(s.as_str()));
            }
            if let Some(t) = target_id {
                put("targetId", text(t.as_str()));
            }
            put("message", text(message));
        }
        Message::Leave { sender_id } => put("senderId", text(sender_id.as_str())),
        Message::Request {
            sender_id,
            target_id,
            document_id,
            data,
        }
        | Message::Sync {
            sender_id,
            target_id,
            document_id,
            data,
        } => {
            put("senderId", text(sender_id.as_str()));
            put("targetId", text(target_id.as_str()));
            put("documentId", text(&document_id.to_string()));
            put("data", Value::Bytes(data.clone()));
        }
        Message::DocUnavailable {
            sender_id,
            target_id,
            document_id,
        }
        | Message::Delete {
            sender_id,
            target_id,
            document_id,
        } => {
            put("senderId", text(sender_id.as_str()));
            put("targetId", text(target_id.as_str()));
            put("documentId", text(&document_id.to_string()));
        }
        Message::Deleted {
            sender_id,
            target_id,
            document_id,
            tombstone,
        } => {
            put("senderId", text(sender_id.as_str()));
            put("targetId", text(target_id.as_str()));
            put("documentId", text(&document_id.to_string()));
            put("tombstone", Value::Bytes(tombstone.clone()));
        }
        Message::Ephemeral {
            sender_id,
            target_id,
            document_id,
            session_id,
            count,
            data,
        } => {
            put("senderId", text(sender_id.as_str()));
            put("targetId", text(target_id.as_str()));
            put("documentId", text(&document_id.to_string()));
            put("sessionId", text(session_id));
            put("count", Value::Integer((*count).into()));
            put("data", Value::Bytes(data.clone()));
        }
        Message::RemoteSubscriptionChange {
            sender_id,
            target_id,
            add,
            remove,
        } => {
            put("senderId", text(sender_id.as_str()));
            put("targetId", text(target_id.as_str()));
            let ids = |v: &[StorageId]| Value::Array(v.iter().map(|s| text(s.as_str())).collect());
            put("add", ids(add));
            put("remove", ids(remove));
        }
        Message::RemoteHeadsChanged {
            sender_id,
            target_id,
            document_id,
            new_heads,
        } => {
            put("senderId", text(sender_id.as_str()));
            put("targetId", text(target_id.as_str()));
            put("documentId", text(&document_id.to_string()));
            let heads = new_heads
                .iter()
                .map(|(sid, rh)| {
                    (
                        text(sid.as_str()),
                        Value::Map(vec![
                            (
                                text("heads"),
                                Value::Array(rh.heads.iter().map(|h| text(h)).collect()),
                            ),
                            (text("timestamp"), Value::Float(rh.timestamp)),
                        ]),
                    )
                })
                .collect();
            put("newHeads", Value::Map(heads));
        }
        Message::Digest {
            sender_id,
            target_id,
            buckets,
            covers,
        } => {
            put("senderId", text(sender_id.as_str()));
            put("targetId", text(target_id.as_str()));
            put("buckets", Value::Bytes(buckets.clone()));
            if let Some(covers) = covers {
                put("covers", Value::Bytes(covers.clone()));
            }
        }
        Message::DigestEntries {
            sender_id,
            target_id,
            buckets,
            entries,
        } => {
            put("senderId", text(sender_id.as_str()));
            put("targetId", text(target_id.as_str()));
            put("buckets", Value::Bytes(buckets.clone()));
            put("entries", Value::Bytes(entries.clone()));
        }
        Message::Regions {
            sender_id,
            target_id,
            reachable,
            down,
        } => {
            put("senderId", text(sender_id.as_str()));
            put("targetId", text(target_id.as_str()));
            let texts = |v: Vec<&str>| Value::Array(v.into_iter().map(text).collect());
            put(
                "reachable",
                texts(reachable.iter().map(StorageId::as_str).collect()),
            );
            put("down", texts(down.iter().map(String::as_str).collect()));
        }
    }
    let mut out = Vec::with_capacity(64);
    // Writing into a Vec cannot fail.
    if ciborium::ser::into_writer(&Value::Map(f), &mut out).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn sample() -> Vec<Message> {
        let doc = DocumentId::from_bytes([5; 16]);
        let (a, b) = (PeerId::from("a"), PeerId::from("b"));
        vec![
            Message::Join {
                sender_id: a.clone(),
                peer_metadata: Some(PeerMetadata {
                    storage_id: Some(StorageId::from("s1")),
                    is_ephemeral: false,
                    region: Some("eu".into()),
                    concord: true,
                }),
                supported_protocol_versions: vec!["1".into()],
            },
            Message::Peer {
                sender_id: b.clone(),
                target_id: a.clone(),
                peer_metadata: None,
                selected_protocol_version: "1".into(),
            },
            Message::Sync {
                sender_id: a.clone(),
                target_id: b.clone(),
                document_id: doc,
                data: vec![0x42, 1, 2],
            },
            Message::Ephemeral {
                sender_id: a.clone(),
                target_id: b.clone(),
                document_id: doc,
                session_id: "sess".into(),
                count: 7,
                data: vec![1],
            },
            Message::DocUnavailable {
                sender_id: a.clone(),
                target_id: b.clone(),
                document_id: doc,
            },
            Message::Delete {
                sender_id: a.clone(),
                target_id: b.clone(),
                document_id: doc,
            },
            Message::Deleted {
                sender_id: a.clone(),
                target_id: b.clone(),
                document_id: doc,
                tombstone: vec![1, 2, 3],
            },
            Message::Digest {
                sender_id: a.clone(),
                target_id: b.clone(),
                buckets: vec![0; 16],
                covers: None,
            },
            Message::Digest {
                sender_id: a.clone(),
                target_id: b.clone(),
                buckets: vec![0; 16],
                covers: Some(vec![1, 5]),
            },
            Message::DigestEntries {
                sender_id: a.clone(),
                target_id: b.clone(),
                buckets: vec![3, 7],
                entries: vec![1; 24],
            },
            Message::Regions {
                sender_id: a,
                target_id: b,
                reachable: vec![StorageId::new("s1"), StorageId::new("s2")],
                down: vec!["eu".into()],
            },
        ]
    }

    #[test]
    fn round_trip() -> Result<(), DecodeError> {
        for m in sample() {
            assert_eq!(decode(&encode(&m), MAX)?, m);
        }
        Ok(())
    }

    fn cbor(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = ciborium::ser::into_writer(v, &mut out);
        out
    }

    #[test]
    fn accepts_js_quirks() -> Result<(), DecodeError> {
        let doc = DocumentId::from_bytes([1; 16]);
        let v = Value::Map(vec![
            (text("type"), text("ephemeral")),
            (text("senderId"), text("a")),
            (text("targetId"), text("b")),
            (text("documentId"), Value::Bytes(doc.as_bytes().to_vec())),
            (text("sessionId"), text("s")),
            (text("count"), Value::Float(3.0)),
            (text("data"), Value::Bytes(vec![9])),
            (text("someFutureKey"), Value::Bool(true)),
        ]);
        match decode(&cbor(&v), MAX)? {
            Message::Ephemeral {
                count, document_id, ..
            } => {
                assert_eq!(count, 3);
                assert_eq!(document_id, doc);
            }
            other => panic!("unexpected {other:?}"),
        }
        let legacy = Value::Map(vec![
            (text("type"), text("join")),
            (text("senderId"), text("a")),
            (
                text("metadata"),
                Value::Map(vec![(text("isEphemeral"), Value::Bool(true))]),
            ),
        ]);
        match decode(&cbor(&legacy), MAX)? {
            Message::Join { peer_metadata, .. } => {
                assert_eq!(peer_metadata.map(|m| m.is_ephemeral), Some(true));
            }
            other => panic!("unexpected {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn bad_input_is_typed() {
        assert!(matches!(
            decode(&[0xff, 0x00], MAX),
            Err(DecodeError::Cbor(_))
        ));
        assert!(matches!(decode(&[], MAX), Err(DecodeError::Cbor(_))));
        assert!(matches!(
            decode(&cbor(&Value::Integer(1.into())), MAX),
            Err(DecodeError::NotAMap)
        ));
        assert!(matches!(
            decode(&[0u8; 10], 4),
            Err(DecodeError::TooLarge { size: 10, max: 4 })
        ));
        let full = encode(&sample()[2]);
        for cut in 0..full.len() {
            assert!(
                decode(&full[..cut], MAX).is_err(),
                "truncated at {cut} decoded"
            );
        }
        let unknown = Value::Map(vec![(text("type"), text("teleport"))]);
        assert_eq!(
            decode(&cbor(&unknown), MAX),
            Err(DecodeError::UnknownType("teleport".into()))
        );
        let empty = Value::Map(vec![
            (text("type"), text("sync")),
            (text("senderId"), text("a")),
            (text("targetId"), text("b")),
            (
                text("documentId"),
                text(&DocumentId::from_bytes([1; 16]).to_string()),
            ),
            (text("data"), Value::Bytes(vec![])),
        ]);
        assert_eq!(
            decode(&cbor(&empty), MAX),
            Err(DecodeError::EmptyData("sync".into()))
        );
        let wrong = Value::Map(vec![
            (text("type"), text("leave")),
            (text("senderId"), Value::Integer(4.into())),
        ]);
        assert!(matches!(
            decode(&cbor(&wrong), MAX),
            Err(DecodeError::WrongType {
                field: "senderId",
                ..
            })
        ));
        let neg = Value::Map(vec![
            (text("type"), text("ephemeral")),
            (text("senderId"), text("a")),
            (text("targetId"), text("b")),
            (
                text("documentId"),
                text(&DocumentId::from_bytes([1; 16]).to_string()),
            ),
            (text("sessionId"), text("s")),
            (text("count"), Value::Float(-1.5)),
            (text("data"), Value::Bytes(vec![1])),
        ]);
        assert!(matches!(
            decode(&cbor(&neg), MAX),
            Err(DecodeError::WrongType { field: "count", .. })
        ));
    }
}
