//! Revocation before expiry: a JSON file of revoked token ids and principals
//! (`{"tokens": [...], "principals": [...]}`) that the server reloads every second; admission
//! refuses revoked tokens and live connections using them are closed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::AuthError;

/// Revoked token ids and principals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocations {
    /// Revoked token ids (`jti`).
    #[serde(default)]
    pub tokens: BTreeSet<String>,
    /// Principals whose every token is revoked.
    #[serde(default)]
    pub principals: BTreeSet<String>,
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> AuthError {
    AuthError::KeyFile {
        path: path.to_owned(),
        message: msg.to_string(),
    }
}

impl Revocations {
    /// Loads the file; a missing file means nothing is revoked.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(bad(path, e)),
        }
    }

    /// Reads the file format from `text` (`origin` names where it came from, in errors).
    pub fn parse(text: &str, origin: &Path) -> Result<Self, AuthError> {
        serde_json::from_str(text).map_err(|e| bad(origin, e))
    }

    /// Adds to the file (written, mode 0600, to a temporary file and renamed, so readers never
    /// see half).
    pub fn update(path: &Path, f: impl FnOnce(&mut Self)) -> Result<(), AuthError> {
        let mut r = Self::load(path)?;
        f(&mut r);
        let text = serde_json::to_string_pretty(&r).map_err(|e| bad(path, e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private_fs::create_dir(dir).map_err(|e| bad(path, e))?;
        }
        crate::private_fs::replace(path, &text).map_err(|e| bad(path, e))
    }

    /// Is a token with this id, issued to this principal, revoked?
    pub fn is_revoked(&self, token_id: Option<&str>, principal: &str) -> bool {
        self.principals.contains(principal) || token_id.is_some_and(|t| self.tokens.contains(t))
    }
}

/// The default revocation file inside a data directory.
pub fn default_revocation_file(data: &Path) -> PathBuf {
    data.join("revoked.json")
}
