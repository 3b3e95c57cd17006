//! The automerge-repo WebSocket protocol v1: message types and their CBOR codec.
//!
//! Every binary WebSocket frame is one CBOR map with text keys. [`decode`] turns bytes into a
//! [`Message`] or a typed [`DecodeError`]; [`encode`] does the reverse.

mod codec;
mod message;

pub use codec::{DecodeError, decode, encode};
pub use message::{Message, PROTOCOL_V1, PeerMetadata, RemoteHeads};

/// A one-line description of a frame for logs: type, document and, for sync messages, the heads,
/// needs and number of changes inside.
pub fn summarize(bytes: &[u8]) -> String {
    match decode(bytes, usize::MAX) {
        Ok(m) => {
            let doc = m
                .document_id()
                .map(|d| format!(" doc={d}"))
                .unwrap_or_default();
            let sync = match &m {
                Message::Sync { data, .. } | Message::Request { data, .. } => {
                    automerge::sync::Message::decode(data)
                        .map(|s| {
                            let heads: Vec<String> = s
                                .heads
                                .iter()
                                .map(|h| h.to_string()[..8].to_owned())
                                .collect();
                            format!(
                                " heads={heads:?} need={} changes={}",
                                s.need.len(),
                                s.changes.len()
                            )
                        })
                        .unwrap_or_else(|e| format!(" bad sync data: {e}"))
                }
                Message::RemoteHeadsChanged { new_heads, .. } => {
                    let storages: Vec<&str> = new_heads.keys().map(|s| s.as_str()).collect();
                    format!(" storages={storages:?}")
                }
                _ => String::new(),
            };
            format!("{}{doc}{sync}", m.type_name())
        }
        Err(e) => format!("undecodable ({e})"),
    }
}
