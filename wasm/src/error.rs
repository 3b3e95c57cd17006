//! Typed errors, thrown to JavaScript as `Error` objects with a `kind` property.

use concord::core::CoreError;
use concord::path::PathError;
use concord::policy::{PolicyError, SchemaError};
use concord::storage::StorageError;
use wasm_bindgen::JsValue;

/// Every failure of the JavaScript API. `kind` is stable and meant for `switch` statements;
/// the message is for people.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument has the wrong type or an invalid value.
    #[error("invalid argument `{name}`: {reason}")]
    Argument {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A server URL or document URL is malformed.
    #[error("invalid URL `{url}`: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The repo was closed.
    #[error("the repo is closed")]
    Closed,
    /// The browser refused to store more data (IndexedDB `QuotaExceededError`).
    #[error("storage quota exceeded: {0}")]
    Quota(String),
    /// Storage (IndexedDB) failed.
    #[error("storage failed: {0}")]
    Storage(String),
    /// Neither local storage nor a connected server has the document.
    #[error("document {0} is unavailable (not stored locally and no connected server has it)")]
    Unavailable(String),
    /// The document was deleted (here or by another replica): its local copy is gone and
    /// edits to it are refused.
    #[error("document {0} was deleted")]
    Deleted(String),
    /// Heads or a history cursor that are not changes of the document (`history`, `diff`,
    /// `restore`); nothing was changed.
    #[error("{0}")]
    History(String),
    /// No server answered a request to its JSON API (unreachable, or an error status).
    #[error("{0}")]
    Network(String),
    /// The server refused the token (HTTP 401 or 403).
    #[error("the server refused the request: {0}")]
    Denied(String),
    /// A path does not exist or has the wrong type for the operation.
    #[error("{0}")]
    Path(String),
    /// A conflict policy or schema is invalid, or a policy read failed.
    #[error("{0}")]
    Policy(String),
    /// The change callback threw, or Automerge refused the change; nothing was applied.
    #[error("change failed: {0}")]
    Change(String),
    /// A wait did not complete in time.
    #[error("timed out after {ms} ms waiting for {what}")]
    Timeout {
        /// The timeout.
        ms: u32,
        /// What was awaited.
        what: &'static str,
    },
    /// The requested feature is not available in this build or environment.
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    /// The stable kind string exposed as `error.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Argument { .. } => "argument",
            Self::Url { .. } => "url",
            Self::Closed => "closed",
            Self::Quota(_) => "quota",
            Self::Storage(_) => "storage",
            Self::Unavailable(_) => "unavailable",
            Self::Deleted(_) => "deleted",
            Self::History(_) => "history",
            Self::Network(_) => "network",
            Self::Denied(_) => "denied",
            Self::Path(_) => "path",
            Self::Policy(_) => "policy",
            Self::Change(_) => "change",
            Self::Timeout { .. } => "timeout",
            Self::Unsupported(_) => "unsupported",
        }
    }

    /// An argument error.
    pub fn arg(name: &'static str, reason: impl Into<String>) -> Self {
        Self::Argument {
            name,
            reason: reason.into(),
        }
    }

    /// A storage error from a message, recognising quota failures.
    pub fn storage(message: impl Into<String>) -> Self {
        let message = message.into();
        if message.contains("QuotaExceeded") || message.to_lowercase().contains("quota") {
            Self::Quota(message)
        } else {
            Self::Storage(message)
        }
    }
}

impl From<Error> for JsValue {
    fn from(e: Error) -> Self {
        let err = js_sys::Error::new(&e.to_string());
        err.set_name("ConcordError");
        // Setting a property on a fresh Error object cannot fail; ignore the impossible case.
        let _ = js_sys::Reflect::set(&err, &"kind".into(), &e.kind().into());
        err.into()
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Closed => Self::Closed,
            other => Self::storage(other.to_string()),
        }
    }
}

impl From<CoreError> for Error {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::NotLoaded(doc) => Self::Unavailable(doc.to_string()),
            CoreError::Deleted(doc) => Self::Deleted(doc.to_string()),
            CoreError::Change(m) => Self::Change(m),
            CoreError::Failed { reason, .. } => Self::storage(reason),
            other => Self::Change(other.to_string()),
        }
    }
}

impl From<concord::history::HistoryError> for Error {
    fn from(e: concord::history::HistoryError) -> Self {
        use concord::history::HistoryError;
        match e {
            HistoryError::Automerge(_) => Self::Change(e.to_string()),
            other => Self::History(other.to_string()),
        }
    }
}

impl From<PathError> for Error {
    fn from(e: PathError) -> Self {
        Self::Path(e.to_string())
    }
}

impl From<PolicyError> for Error {
    fn from(e: PolicyError) -> Self {
        Self::Policy(e.to_string())
    }
}

impl From<SchemaError> for Error {
    fn from(e: SchemaError) -> Self {
        Self::Policy(e.to_string())
    }
}

/// Result of the JavaScript API.
pub type Result<T> = std::result::Result<T, Error>;
