//! `ConcordError`: the one error type that crosses the FFI boundary.
//!
//! It is a *flat* uniffi error: each variant is the kind, and its message (the `Display` text)
//! travels with it. Kotlin sees `ConcordException.InvalidPath` (a subclass of
//! `ConcordException`, `message` set), Swift `ConcordError.InvalidPath(message:)`, Python
//! `ConcordError.InvalidPath` (a subclass of `ConcordError`, `str(e)` is the message).
//!
//! Every error of client-core, Automerge, JSON parsing and the runtime is mapped here; the crate
//! has no `unwrap`/`expect`, and a panic inside an engine task surfaces as `Internal`.

use concord::path::PathError;
use concord::{IdError, RepoError};

/// The error of every fallible exported function; the variant is the kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
#[non_exhaustive]
pub enum ConcordError {
    /// A server URL or a document URL is malformed.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// A path (`todos/0/title`) is malformed, or goes through something that has no children.
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// A JSON argument does not parse, or is not acceptable where it is written.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// An argument is out of its range (a text position, a timeout).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The value at the path has the wrong type for the operation (e.g. `increment` on text).
    #[error("wrong type: {0}")]
    WrongType(String),
    /// Nothing at the path, or a document that neither local storage nor a server has.
    #[error("not found: {0}")]
    NotFound(String),
    /// The document was deleted (here or by another replica): its local copy is gone and edits
    /// to it are refused.
    #[error("deleted: {0}")]
    Deleted(String),
    /// The server refused the token or the request (HTTP 401 or 403).
    #[error("denied: {0}")]
    Denied(String),
    /// Local storage failed; the write was not acknowledged.
    #[error("storage: {0}")]
    Storage(String),
    /// No server could be reached when one was needed.
    #[error("network: {0}")]
    Network(String),
    /// A wait did not finish in time.
    #[error("timeout: {0}")]
    Timeout(String),
    /// The repo was closed.
    #[error("closed: {0}")]
    Closed(String),
    /// A bug or an unexpected state (including a panic caught inside the engine).
    #[error("internal: {0}")]
    Internal(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = ConcordError> = std::result::Result<T, E>;

impl From<RepoError> for ConcordError {
    fn from(e: RepoError) -> Self {
        let msg = e.to_string();
        match e {
            RepoError::Unavailable(_) => Self::NotFound(msg),
            RepoError::Deleted(_) => Self::Deleted(msg),
            RepoError::Storage(_) | RepoError::CommitFailed(_) | RepoError::LoadFailed { .. } => {
                Self::Storage(msg)
            }
            RepoError::Closed => Self::Closed(msg),
            RepoError::Timeout(..) => Self::Timeout(msg),
            RepoError::Core(core) => core_error(core, msg),
            RepoError::Policy(p) => p.into(),
            RepoError::History(h) => history_error(*h, msg),
            RepoError::Remote(r) => remote_error(*r, msg),
            _ => Self::Internal(msg),
        }
    }
}

fn core_error(e: concord::core::CoreError, msg: String) -> ConcordError {
    use concord::core::CoreError;
    match e {
        CoreError::NotLoaded(_) => ConcordError::NotFound(msg),
        CoreError::Deleted(_) => ConcordError::Deleted(msg),
        CoreError::Failed { .. } => ConcordError::Storage(msg),
        _ => ConcordError::Internal(msg),
    }
}

fn history_error(e: concord::history::HistoryError, msg: String) -> ConcordError {
    use concord::history::HistoryError;
    match e {
        HistoryError::UnknownHeads { .. }
        | HistoryError::UnknownCursor(_)
        | HistoryError::Patch { .. } => ConcordError::InvalidArgument(msg),
        _ => ConcordError::Internal(msg),
    }
}

fn remote_error(e: concord::repo::RemoteError, msg: String) -> ConcordError {
    use concord::repo::RemoteError;
    match e {
        RemoteError::Denied { .. } => ConcordError::Denied(msg),
        RemoteError::NotFound(_) => ConcordError::NotFound(msg),
        RemoteError::Url { .. } | RemoteError::Unsupported(_) => ConcordError::InvalidUrl(msg),
        RemoteError::Timeout(_) => ConcordError::Timeout(msg),
        _ => ConcordError::Network(msg),
    }
}

impl From<PathError> for ConcordError {
    fn from(e: PathError) -> Self {
        let msg = e.to_string();
        match e {
            PathError::Malformed { .. }
            | PathError::NotAnIndex { .. }
            | PathError::NotAContainer { .. } => Self::InvalidPath(msg),
            PathError::NotFound { .. } | PathError::OutOfRange { .. } => Self::NotFound(msg),
            PathError::WrongType { .. } => Self::WrongType(msg),
            PathError::Root(_) => Self::InvalidPath(msg),
            _ => Self::Internal(msg),
        }
    }
}

impl From<IdError> for ConcordError {
    fn from(e: IdError) -> Self {
        Self::InvalidUrl(e.to_string())
    }
}

impl From<serde_json::Error> for ConcordError {
    fn from(e: serde_json::Error) -> Self {
        Self::InvalidJson(e.to_string())
    }
}

impl From<automerge::AutomergeError> for ConcordError {
    fn from(e: automerge::AutomergeError) -> Self {
        Self::Internal(format!("automerge: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_errors_map_to_kinds() {
        let malformed = "a//b".parse::<concord::path::DocPath>();
        assert!(matches!(
            malformed.map_err(ConcordError::from),
            Err(ConcordError::InvalidPath(_))
        ));
        let id = "automerge:nope".parse::<concord::AutomergeUrl>();
        assert!(matches!(
            id.map_err(ConcordError::from),
            Err(ConcordError::InvalidUrl(_))
        ));
        let json = serde_json::from_str::<serde_json::Value>("{");
        assert!(matches!(
            json.map_err(ConcordError::from),
            Err(ConcordError::InvalidJson(_))
        ));
    }
}
