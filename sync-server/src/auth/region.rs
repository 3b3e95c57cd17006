//! Credentials of region links: a secret shared by the servers of a deployment signs short-lived
//! HS256 tokens (key id `concord-region`) that one region presents when it dials another. A
//! verified region token grants replication of every document ([`Grant::region`]).
//!
//! Lifetimes are short on both sides: a server mints its tokens with its region-token lifetime
//! (`--region-token-ttl-secs`, 1 h by default), refuses tokens that would live longer than its own
//! lifetime (plus [`CLOCK_SKEW`]), and closes a region link when the token it was opened with
//! expires; the dialling side then reconnects with a freshly minted token. So a leaked region
//! token is worth at most one lifetime, and no link outlives its credential.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use concord::core::Grant;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AuthError;

/// Key id of region tokens.
pub const REGION_KID: &str = "concord-region";
/// Default lifetime of a region token (one is minted per connection attempt), and the longest
/// a server accepts by default.
pub const DEFAULT_REGION_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Clock difference tolerated between regions when capping a token's lifetime.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Shortest accepted peer secret.
pub const MIN_SECRET_BYTES: usize = 16;

#[derive(Debug, Serialize, Deserialize)]
struct RegionClaims {
    sub: String,
    exp: u64,
    iat: u64,
    region: String,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Mints a token for region `region`, signed with the shared `secret`, valid for `ttl`.
pub fn mint_region(secret: &[u8], region: &str, ttl: Duration) -> Result<String, AuthError> {
    let now = unix_now();
    let claims = RegionClaims {
        sub: format!("region:{region}"),
        iat: now,
        exp: now.saturating_add(ttl.as_secs().max(1)),
        region: region.to_owned(),
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(REGION_KID.into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
        .map_err(|e| AuthError::Invalid(e.to_string()))
}

/// True when `token` claims to be a region token (by its key id); it still has to verify.
pub fn is_region_token(token: &str) -> bool {
    jsonwebtoken::decode_header(token)
        .ok()
        .and_then(|h| h.kid)
        .is_some_and(|k| k == REGION_KID)
}

/// Verifies a region token against the shared secret: HS256 only, not expired, and expiring
/// within `max_ttl` (plus [`CLOCK_SKEW`]) from now. Returns the grant and the expiry, at which
/// the server closes the link.
pub fn verify_region(
    secret: &[u8],
    token: &str,
    max_ttl: Duration,
) -> Result<(Grant, SystemTime), AuthError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
    if header.alg != Algorithm::HS256 {
        return Err(AuthError::Invalid(format!(
            "region tokens are HS256, not {:?}",
            header.alg
        )));
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data =
        jsonwebtoken::decode::<RegionClaims>(token, &DecodingKey::from_secret(secret), &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?;
    let longest = unix_now().saturating_add(max_ttl.saturating_add(CLOCK_SKEW).as_secs());
    if data.claims.exp > longest {
        return Err(AuthError::Invalid(format!(
            "region token lives too long: this server accepts at most {} s (--region-token-ttl-secs)",
            max_ttl.as_secs()
        )));
    }
    let expires = UNIX_EPOCH + Duration::from_secs(data.claims.exp);
    Ok((Grant::region(data.claims.sub), expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_tokens_verify_only_with_the_shared_secret() {
        let secret = b"0123456789abcdef-shared";
        let ttl = DEFAULT_REGION_TOKEN_TTL;
        let t = mint_region(secret, "eu", ttl).unwrap();
        assert!(is_region_token(&t));
        let (grant, _) = verify_region(secret, &t, ttl).unwrap();
        assert!(grant.replicate && grant.write);
        assert_eq!(grant.principal, "region:eu");
        assert!(matches!(
            verify_region(b"another-secret-of-16", &t, ttl),
            Err(AuthError::Invalid(_))
        ));
        let mut tampered = t.clone();
        tampered.pop();
        assert!(verify_region(secret, &tampered, ttl).is_err());
    }

    #[test]
    fn long_lived_region_tokens_are_refused() {
        let secret = b"0123456789abcdef-shared";
        let year = Duration::from_secs(365 * 24 * 3600);
        let t = mint_region(secret, "eu", year).unwrap();
        let err = verify_region(secret, &t, DEFAULT_REGION_TOKEN_TTL).unwrap_err();
        assert!(
            matches!(&err, AuthError::Invalid(m) if m.contains("lives too long")),
            "{err}"
        );
        // Within the lifetime plus the clock skew: accepted.
        let t = mint_region(secret, "eu", DEFAULT_REGION_TOKEN_TTL + CLOCK_SKEW).unwrap();
        assert!(verify_region(secret, &t, DEFAULT_REGION_TOKEN_TTL).is_ok());
    }
}
