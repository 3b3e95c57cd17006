//! Signing and verification keys, by key id (`kid`), so keys rotate without downtime: add the new
//! key, mint with it, remove the old one once its tokens have expired.
//!
//! The key file is JSON: `{"keys": [{"kid": "k1", "alg": "HS256", "secret": "<base64>"},
//! {"kid": "k2", "alg": "EdDSA", "public_pem": "...", "private_pem": "..."}]}`. The first key that
//! can sign is used to mint tokens. A missing file is created with one fresh HMAC key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::AuthError;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyEntry {
    kid: String,
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_pem: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<KeyEntry>,
}

/// One verification key (and maybe its signing half).
#[derive(Clone)]
pub(super) struct Key {
    pub(super) alg: Algorithm,
    pub(super) decoding: DecodingKey,
    pub(super) encoding: Option<EncodingKey>,
}

/// Keys by id.
#[derive(Clone, Default)]
pub struct KeyRing {
    pub(super) keys: BTreeMap<String, Key>,
    pub(super) signing_kid: Option<String>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("signing_kid", &self.signing_kid)
            .finish()
    }
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> AuthError {
    AuthError::KeyFile {
        path: path.to_owned(),
        message: msg.to_string(),
    }
}

impl KeyRing {
    /// Loads the key file, creating it with a fresh HMAC key (mode 0600) when missing.
    pub fn load_or_create(path: &Path) -> Result<Self, AuthError> {
        if !path.exists() {
            let text = Self::fresh_key_file().map_err(|e| bad(path, e))?;
            match write_private(path, &text) {
                Ok(()) => tracing::warn!(path = %path.display(), "created a new token signing key"),
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(bad(path, e)),
            }
        }
        Self::load(path)
    }

    /// The text of a key file holding one fresh HMAC key.
    pub fn fresh_key_file() -> Result<String, serde_json::Error> {
        let secret: [u8; 32] = rand::rng().random();
        let file = KeyFile {
            keys: vec![KeyEntry {
                kid: format!("k{}", hex_short(&secret)),
                alg: "HS256".into(),
                secret: Some(B64.encode(secret)),
                public_pem: None,
                private_pem: None,
            }],
        };
        serde_json::to_string_pretty(&file)
    }

    /// Loads the key file.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| bad(path, e))?;
        Self::parse(&text, path)
    }

    /// Reads keys in the key file format from `text` (`origin` names where it came from, in
    /// errors).
    pub fn parse(text: &str, origin: &Path) -> Result<Self, AuthError> {
        let path = origin;
        let file: KeyFile = serde_json::from_str(text).map_err(|e| bad(path, e))?;
        let mut ring = Self::default();
        for k in file.keys {
            let key = match k.alg.as_str() {
                "HS256" => {
                    let secret = B64
                        .decode(
                            k.secret
                                .as_deref()
                                .ok_or_else(|| bad(path, format!("{}: no secret", k.kid)))?,
                        )
                        .map_err(|e| bad(path, format!("{}: {e}", k.kid)))?;
                    if secret.len() < 32 {
                        return Err(bad(
                            path,
                            format!("{}: HMAC secrets must have at least 32 bytes", k.kid),
                        ));
                    }
                    Key {
                        alg: Algorithm::HS256,
                        decoding: DecodingKey::from_secret(&secret),
                        encoding: Some(EncodingKey::from_secret(&secret)),
                    }
                }
                "EdDSA" => {
                    let public = k
                        .public_pem
                        .as_deref()
                        .ok_or_else(|| bad(path, format!("{}: no public_pem", k.kid)))?;
                    Key {
                        alg: Algorithm::EdDSA,
                        decoding: DecodingKey::from_ed_pem(public.as_bytes())
                            .map_err(|e| bad(path, format!("{}: {e}", k.kid)))?,
                        encoding: k
                            .private_pem
                            .as_deref()
                            .map(|p| EncodingKey::from_ed_pem(p.as_bytes()))
                            .transpose()
                            .map_err(|e| bad(path, format!("{}: {e}", k.kid)))?,
                    }
                }
                other => {
                    return Err(bad(
                        path,
                        format!("{}: unsupported alg {other} (HS256 or EdDSA)", k.kid),
                    ));
                }
            };
            if ring.signing_kid.is_none() && key.encoding.is_some() {
                ring.signing_kid = Some(k.kid.clone());
            }
            ring.keys.insert(k.kid, key);
        }
        if ring.keys.is_empty() {
            return Err(bad(path, "no keys"));
        }
        Ok(ring)
    }

    /// Key ids, for logs.
    pub fn kids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }
}

fn hex_short(b: &[u8]) -> String {
    b.iter().take(4).map(|x| format!("{x:02x}")).collect()
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_fs::create_dir(dir)?;
    }
    crate::private_fs::write_new(path, text)
}

/// The default key file inside a data directory.
pub fn default_key_file(data: &Path) -> PathBuf {
    data.join("auth-keys.json")
}
