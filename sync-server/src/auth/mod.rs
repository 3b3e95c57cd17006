//! Authentication: signed, expiring tokens (JWT, HS256 or EdDSA, key ids for rotation) that carry
//! a principal and its grants, verified once per connection and enforced by the core on every
//! message (see `concord::core::GrantPolicy`).

mod keys;
mod region;
mod revoke;
mod token;

pub use keys::{KeyRing, default_key_file};
pub use region::{
    CLOCK_SKEW, DEFAULT_REGION_TOKEN_TTL, MIN_SECRET_BYTES, REGION_KID, is_region_token,
    mint_region, verify_region,
};
pub use revoke::{Revocations, default_revocation_file};
pub use token::{Claims, TokenRequest, Verified, mint, token_id_of, verify, verify_token};

/// Why a token or key file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was presented and anonymous access is off.
    #[error("authentication required: send `Authorization: Bearer <token>` or `?token=<token>`")]
    Missing,
    /// The token is malformed, badly signed, or uses a refused algorithm.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token's key id is unknown (rotated out?).
    #[error("unknown key id `{0}`")]
    UnknownKey(String),
    /// The token (or its principal) was revoked.
    #[error("token revoked")]
    Revoked,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The token names something that is not a document id.
    #[error("invalid document in token: {0}")]
    BadDocument(String),
    /// The key file is unusable.
    #[error("key file {path}: {message}")]
    KeyFile {
        /// File.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No key can sign.
    #[error("no signing key available")]
    NoSigningKey,
}
