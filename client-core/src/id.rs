//! Identifiers: documents, document URLs, peers, storage ids and connections.

use std::fmt;
use std::str::FromStr;

use automerge::ChangeHash;

mod cache;

/// Why a string is not a valid identifier or URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The input was empty.
    #[error("empty document id")]
    Empty,
    /// The input is not base58check (bad alphabet or checksum) nor a UUID.
    #[error("`{input}` is not a bs58check document id, an automerge: URL or a UUID")]
    Invalid {
        /// The offending input (truncated to 80 characters).
        input: String,
    },
    /// The decoded id has the wrong number of bytes.
    #[error("document id has {len} bytes, expected 16")]
    WrongLength {
        /// Decoded length.
        len: usize,
    },
    /// A head in the `#heads` part of a URL is not a bs58check change hash.
    #[error("invalid head `{head}` in document URL")]
    InvalidHead {
        /// The offending head.
        head: String,
    },
}

fn truncated(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A document id: 16 random bytes (a UUID), displayed as bs58check.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId([u8; 16]);

impl DocumentId {
    /// Builds an id from its 16 bytes (e.g. random bytes supplied by a driver).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes of this id.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses a byte slice that must be exactly 16 bytes.
    pub fn try_from_slice(bytes: &[u8]) -> Result<Self, IdError> {
        let arr: [u8; 16] = bytes
            .try_into()
            .map_err(|_| IdError::WrongLength { len: bytes.len() })?;
        Ok(Self(arr))
    }

    /// The `automerge:<id>` URL of this document (no heads).
    pub fn url(&self) -> AutomergeUrl {
        AutomergeUrl {
            document_id: *self,
            heads: None,
        }
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        cache::with_encoded(&self.0, |s| f.write_str(s))
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

impl FromStr for DocumentId {
    type Err = IdError;

    /// Accepts a bs58check id, an `automerge:` URL (heads are ignored) or a legacy UUID string.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with(URL_PREFIX) {
            return Ok(s.parse::<AutomergeUrl>()?.document_id);
        }
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        match cache::decoded(s) {
            Some(Ok(bytes)) => return Ok(Self(bytes)),
            Some(Err(len)) => return Err(IdError::WrongLength { len }),
            None => {}
        }
        if let Ok(uuid) = uuid::Uuid::parse_str(s) {
            return Ok(Self(*uuid.as_bytes()));
        }
        Err(IdError::Invalid {
            input: truncated(s),
        })
    }
}

const URL_PREFIX: &str = "automerge:";

/// An `automerge:<id>[#head|head...]` URL as automerge-repo writes them.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct AutomergeUrl {
    /// The document.
    pub document_id: DocumentId,
    /// Optional heads: the URL then names a view of the document at these heads.
    pub heads: Option<Vec<ChangeHash>>,
}

impl fmt::Display for AutomergeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{URL_PREFIX}{}", self.document_id)?;
        if let Some(heads) = &self.heads {
            f.write_str("#")?;
            for (i, h) in heads.iter().enumerate() {
                if i > 0 {
                    f.write_str("|")?;
                }
                f.write_str(&encode_head(h))?;
            }
        }
        Ok(())
    }
}

/// Encodes a change hash as automerge-repo does in URLs and `remote-heads-changed` (bs58check).
pub fn encode_head(head: &ChangeHash) -> String {
    bs58::encode(head.0).with_check().into_string()
}

/// Decodes a bs58check change hash (the inverse of [`encode_head`]); hex is accepted too.
pub fn decode_head(s: &str) -> Result<ChangeHash, IdError> {
    let bad = || IdError::InvalidHead { head: truncated(s) };
    let bytes = bs58::decode(s)
        .with_check(None)
        .into_vec()
        .or_else(|_| hex::decode(s))
        .map_err(|_| bad())?;
    ChangeHash::try_from(bytes.as_slice()).map_err(|_| bad())
}

impl FromStr for AutomergeUrl {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(URL_PREFIX).unwrap_or(s);
        let (id, heads) = match rest.split_once('#') {
            Some((id, heads)) => (id, Some(heads)),
            None => (rest, None),
        };
        if id.starts_with(URL_PREFIX) {
            return Err(IdError::Invalid {
                input: truncated(s),
            });
        }
        let document_id = id.parse::<DocumentId>()?;
        let heads = match heads {
            None => None,
            Some("") => Some(Vec::new()),
            Some(h) => Some(h.split('|').map(decode_head).collect::<Result<_, _>>()?),
        };
        Ok(Self { document_id, heads })
    }
}

impl From<DocumentId> for AutomergeUrl {
    fn from(document_id: DocumentId) -> Self {
        document_id.url()
    }
}

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string as this id.
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// A peer's id on the wire (`senderId` / `targetId`), chosen by that peer.
    PeerId
);
string_id!(
    /// The id of a replica's durable store (`peerMetadata.storageId`); sync state is persisted per storage id.
    StorageId
);

impl StorageId {
    /// A storage id made of 16 bytes of caller-supplied randomness, written as a UUID like automerge-repo.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .to_string(),
        )
    }
}

/// A connection as the sans-IO core knows it; the driver allocates these.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_bs58check_and_url() -> Result<(), IdError> {
        let id = DocumentId::from_bytes([7; 16]);
        let s = id.to_string();
        assert_eq!(s.parse::<DocumentId>()?, id);
        let url = id.url().to_string();
        assert!(url.starts_with("automerge:"));
        assert_eq!(url.parse::<AutomergeUrl>()?.document_id, id);
        assert_eq!(url.parse::<DocumentId>()?, id);
        Ok(())
    }

    #[test]
    fn url_with_heads_round_trips() -> Result<(), IdError> {
        let heads = vec![ChangeHash([1; 32]), ChangeHash([2; 32])];
        let url = AutomergeUrl {
            document_id: DocumentId::from_bytes([9; 16]),
            heads: Some(heads.clone()),
        };
        let parsed: AutomergeUrl = url.to_string().parse()?;
        assert_eq!(parsed.heads, Some(heads));
        Ok(())
    }

    #[test]
    fn accepts_legacy_uuid() -> Result<(), IdError> {
        let id: DocumentId = "6f9619ff-8b86-d011-b42d-00c04fc964ff".parse()?;
        assert_eq!(id.as_bytes()[0], 0x6f);
        Ok(())
    }

    #[test]
    fn rejects_garbage_with_typed_errors() {
        assert_eq!("".parse::<DocumentId>(), Err(IdError::Empty));
        assert!(matches!(
            "not an id!".parse::<DocumentId>(),
            Err(IdError::Invalid { .. })
        ));
        // valid bs58check, wrong length
        let short = bs58::encode([1u8; 4]).with_check().into_string();
        assert_eq!(
            short.parse::<DocumentId>(),
            Err(IdError::WrongLength { len: 4 })
        );
        // flipped checksum
        let mut s = DocumentId::from_bytes([3; 16]).to_string();
        let last = if s.ends_with('2') { '3' } else { '2' };
        s.pop();
        s.push(last);
        assert!(s.parse::<DocumentId>().is_err());
        assert!(matches!(
            "automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu#zz".parse::<AutomergeUrl>(),
            Err(IdError::InvalidHead { .. })
        ));
    }
}
