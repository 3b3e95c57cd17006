//! Admission at the WebSocket upgrade (Origin allowlist, token verification, connection caps)
//! and at the admin API (a valid, unexpired, unrevoked token carrying the `admin` claim).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use concord::core::Grant;
use serde_json::json;

use super::AppState;
use crate::auth::{self, AuthError};

/// Live connection counts per key (`ip:...`, `principal:...`).
#[derive(Debug, Default)]
pub struct Counts(Mutex<HashMap<String, usize>>);

/// Holds one slot of a count until dropped.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Counts>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.counts.0.lock() {
            if let Some(n) = m.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.key);
                }
            }
        }
    }
}

impl Counts {
    /// Takes one slot under `key` unless `max` are taken.
    pub(super) fn take(self: &Arc<Self>, key: String, max: usize) -> Option<Slot> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(key.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            counts: self.clone(),
            key,
        })
    }
}

/// What an admitted connection carries.
#[derive(Debug)]
pub struct Admitted {
    /// Verified rights (`None` in development mode without a token).
    pub grant: Option<Grant>,
    /// When the token expires.
    pub expires: Option<SystemTime>,
    /// The token's id (for revocation).
    pub token_id: Option<String>,
    /// Connection-count slots, released when the connection ends.
    pub slots: Vec<Slot>,
}

/// Why a request was refused: an HTTP status and a message for the client.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        tracing::info!(status = %self.status, message = %self.message, "request refused");
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Verifies a user token (not a region token) and checks the revocation list: the one door
/// every endpoint that takes a token goes through.
fn authenticate(app: &AppState, token: &str) -> Result<auth::Verified, Refusal> {
    let Some(keys) = &app.keys else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "tokens are not configured",
        ));
    };
    let v = auth::verify_token(keys, token)
        .map_err(|e| refuse(StatusCode::UNAUTHORIZED, e.to_string()))?;
    if app
        .revoked
        .borrow()
        .is_revoked(v.token_id.as_deref(), &v.grant.principal)
    {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            AuthError::Revoked.to_string(),
        ));
    }
    Ok(v)
}

/// Admin endpoints need a valid, unrevoked token with the `admin` claim (or development mode
/// without authentication).
/// Returns the admin's principal (`None` with `--insecure-no-auth`).
pub fn admit_admin(
    app: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Option<String>, Refusal> {
    if app.config.insecure_no_auth {
        return Ok(None);
    }
    let Some(token) = bearer(headers).or_else(|| query.get("token").cloned()) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            AuthError::Missing.to_string(),
        ));
    };
    let verified = authenticate(app, &token)?;
    if verified.admin {
        Ok(Some(verified.grant.principal))
    } else {
        Err(refuse(
            StatusCode::FORBIDDEN,
            "the admin API needs an admin token (`concord token create --admin`)",
        ))
    }
}

/// The JSON API (`/v1/...`) takes the same user tokens as the WebSocket (a bearer header or a
/// `token` query parameter, verified and checked against the revocation list); region tokens
/// are refused. `Ok(None)`: no token, accepted in development mode without authentication.
pub fn admit_api(
    app: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Option<Grant>, Refusal> {
    match bearer(headers).or_else(|| query.get("token").cloned()) {
        Some(t) if auth::is_region_token(&t) => Err(refuse(
            StatusCode::FORBIDDEN,
            "region tokens cannot use the client API",
        )),
        Some(t) => Ok(Some(authenticate(app, &t)?.grant)),
        None if app.config.insecure_no_auth => Ok(None),
        None => Err(refuse(
            StatusCode::UNAUTHORIZED,
            AuthError::Missing.to_string(),
        )),
    }
}

/// Decides whether a WebSocket upgrade may proceed.
pub fn admit(
    app: &AppState,
    addr: SocketAddr,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Admitted, Refusal> {
    let cfg = &app.config;
    if !cfg.allow_origins.is_empty() {
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            if !cfg.allow_origins.iter().any(|a| a == origin) {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    format!("origin {origin} is not allowed"),
                ));
            }
        }
    }
    let token = bearer(headers).or_else(|| query.get("token").cloned());
    let (grant, expires, token_id) = match (token, &app.keys) {
        (Some(t), _) if auth::is_region_token(&t) => {
            let Some(secret) = &app.config.peer_secret else {
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "region links are not enabled on this server (no --peer-secret)",
                ));
            };
            let max_ttl = std::time::Duration::from_secs(cfg.region_token_ttl_secs);
            match auth::verify_region(secret.as_bytes(), &t, max_ttl) {
                // The link closes when its token expires; the other region redials with a
                // fresh one.
                Ok((grant, expires)) => (Some(grant), Some(expires), None),
                Err(e) => return Err(refuse(StatusCode::UNAUTHORIZED, e.to_string())),
            }
        }
        (Some(t), Some(_)) => {
            let v = authenticate(app, &t)?;
            (Some(v.grant), Some(v.expires), v.token_id)
        }
        (Some(_), None) | (None, _) if cfg.insecure_no_auth => (None, None, None),
        (Some(_), None) => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "tokens are not configured",
            ));
        }
        (None, _) => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                AuthError::Missing.to_string(),
            ));
        }
    };
    let mut slots = Vec::new();
    match app
        .counts
        .take(format!("ip:{}", addr.ip()), cfg.max_connections_per_ip)
    {
        Some(s) => slots.push(s),
        None => {
            return Err(refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from this address",
            ));
        }
    }
    if let Some(g) = &grant {
        match app.counts.take(
            format!("principal:{}", g.principal),
            cfg.max_connections_per_principal,
        ) {
            Some(s) => slots.push(s),
            None => {
                return Err(refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many connections for this principal",
                ));
            }
        }
    }
    Ok(Admitted {
        grant,
        expires,
        token_id,
        slots,
    })
}
