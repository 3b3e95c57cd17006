//! The automerge-repo WebSocket protocol v1: message types and their CBOR codec.
//!
//! Every binary WebSocket frame is one CBOR map with text keys. [`decode`] turns bytes into a
//! [`Message`] or a typed [`DecodeError`]; [`encode`] does the reverse.

mod codec;
mod message;

pub use codec::{DecodeError, decode, encode};
pub use message::{Message, PeerMetadata, PROTOCOL_V1, RemoteHeads};
