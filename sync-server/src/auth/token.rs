//! Minting and verifying tokens.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use concord::DocumentId;
use concord::core::{DocScope, Grant};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use super::{AuthError, KeyRing};

/// Token claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The principal.
    pub sub: String,
    /// Expiry (seconds since the Unix epoch).
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Document ids (bs58check), or `"*"` for all.
    pub docs: Vec<String>,
    /// Write access (otherwise read-only).
    pub write: bool,
    /// Token id, for revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Admin rights: the admin API (`/admin/*`). Only tokens for every document carry it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The rights it carries.
    pub grant: Grant,
    /// When it expires.
    pub expires: SystemTime,
    /// Its id (`jti`), if it has one.
    pub token_id: Option<String>,
    /// Whether it carries admin rights (the `admin` claim).
    pub admin: bool,
}

/// What to mint.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Principal.
    pub principal: String,
    /// Documents (`None`: all).
    pub docs: Option<Vec<DocumentId>>,
    /// Read-only?
    pub read_only: bool,
    /// Lifetime.
    pub ttl: Duration,
    /// Admin rights (the admin API); needs `docs: None`.
    pub admin: bool,
}

fn token_id() -> String {
    use rand::Rng;
    rand::rng()
        .random::<[u8; 12]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The id (`jti`) of a token, without verifying it (for `concord token create` to print).
pub fn token_id_of(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Claims>(&bytes).ok()?.jti
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Mints a token with the ring's signing key.
pub fn mint(ring: &KeyRing, req: &TokenRequest) -> Result<String, AuthError> {
    if req.admin && req.docs.is_some() {
        return Err(AuthError::Invalid(
            "an admin token grants every document: drop the document list".into(),
        ));
    }
    let kid = ring.signing_kid.clone().ok_or(AuthError::NoSigningKey)?;
    let key = ring.keys.get(&kid).ok_or(AuthError::NoSigningKey)?;
    let enc = key.encoding.as_ref().ok_or(AuthError::NoSigningKey)?;
    let now = unix_now();
    let claims = Claims {
        sub: req.principal.clone(),
        iat: now,
        exp: now.saturating_add(req.ttl.as_secs().max(1)),
        docs: match &req.docs {
            None => vec!["*".into()],
            Some(ids) => ids.iter().map(ToString::to_string).collect(),
        },
        write: !req.read_only,
        jti: Some(token_id()),
        admin: req.admin,
    };
    let mut header = Header::new(key.alg);
    header.kid = Some(kid);
    jsonwebtoken::encode(&header, &claims, enc).map_err(|e| AuthError::Invalid(e.to_string()))
}

/// Verifies a token: known key id, that key's algorithm only (no `none`, no algorithm
/// confusion), valid signature, not expired. Returns the grant and the expiry time.
pub fn verify(ring: &KeyRing, token: &str) -> Result<(Grant, SystemTime), AuthError> {
    verify_token(ring, token).map(|v| (v.grant, v.expires))
}

/// Like [`verify`], also returning the token id.
pub fn verify_token(ring: &KeyRing, token: &str) -> Result<Verified, AuthError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
    let kid = header
        .kid
        .ok_or_else(|| AuthError::Invalid("token has no key id".into()))?;
    let key = ring
        .keys
        .get(&kid)
        .ok_or_else(|| AuthError::UnknownKey(kid.clone()))?;
    if header.alg != key.alg {
        return Err(AuthError::Invalid(format!(
            "algorithm {:?} does not match key {kid}",
            header.alg
        )));
    }
    let mut validation = Validation::new(key.alg);
    validation.leeway = 5;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(|e| {
        match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e.to_string()),
        }
    })?;
    let c = data.claims;
    let docs = if c.docs.iter().any(|d| d == "*") {
        DocScope::All
    } else {
        let ids: Result<BTreeSet<DocumentId>, _> = c.docs.iter().map(|d| d.parse()).collect();
        DocScope::Only(ids.map_err(|e: concord::IdError| AuthError::BadDocument(e.to_string()))?)
    };
    let expires = UNIX_EPOCH + Duration::from_secs(c.exp);
    // The admin claim counts only on a token for every document.
    let admin = c.admin && docs == DocScope::All;
    Ok(Verified {
        grant: Grant {
            principal: c.sub,
            docs,
            write: c.write,
            // Only region tokens (signed with the shared region secret) replicate.
            replicate: false,
        },
        expires,
        token_id: c.jti,
        admin,
    })
}
