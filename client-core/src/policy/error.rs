//! Errors of the policy layer: [`SchemaError`] at registration, [`PolicyError`] at read and write.

use automerge::AutomergeError;

use crate::path::PathError;

/// A policy could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The path pattern is not valid.
    #[error("malformed policy path `{pattern}`: {reason}")]
    Malformed {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same pattern was registered twice.
    #[error("a policy is already registered for `{pattern}`")]
    Duplicate {
        /// The pattern (normalised, with a leading `/`).
        pattern: String,
    },
    /// A policy name (as written in a CLI flag or a config file) is unknown.
    #[error(
        "unknown policy `{name}` (expected causal, lww, counter, add-wins-set, remove-wins-set, text or keep-conflicts)"
    )]
    UnknownPolicy {
        /// The name as given.
        name: String,
    },
}

/// A policy-aware read or write failed. The document is never modified by a failed read, and
/// stays readable after any of these errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The path does not lead anywhere in this document (it goes below a scalar or text, or uses
    /// a non-numeric segment on a list), or a write's parents are missing.
    #[error(transparent)]
    Path(Box<PathError>),
    /// The value at the path does not fit the policy registered for it (e.g. `Counter` on a
    /// string).
    #[error("`{path}` has policy {policy}, which needs {expected}, but it holds {found}")]
    TypeMismatch {
        /// The concrete path.
        path: String,
        /// The policy's name.
        policy: &'static str,
        /// What the policy needs.
        expected: &'static str,
        /// What the document holds.
        found: String,
    },
    /// The operation needs another policy (e.g. `add` on a path that is not a set).
    #[error("`{operation}` needs {needs} at `{path}`, but its policy is {policy}")]
    WrongPolicy {
        /// The concrete path.
        path: String,
        /// The operation attempted.
        operation: &'static str,
        /// The policies it works with.
        needs: &'static str,
        /// The policy registered for the path.
        policy: &'static str,
    },
    /// A set element cannot be stored (the empty string is not a valid map key).
    #[error("invalid set element {element:?} at `{path}`: {reason}")]
    InvalidElement {
        /// The concrete path of the set.
        path: String,
        /// The element.
        element: String,
        /// Why.
        reason: &'static str,
    },
    /// A custom resolver returned an error.
    #[error("resolver `{resolver}` failed at `{path}`: {reason}")]
    ResolverFailed {
        /// The concrete path.
        path: String,
        /// The resolver's name.
        resolver: String,
        /// Its error.
        reason: String,
    },
    /// A custom resolver panicked. The panic was caught; the document is untouched.
    #[error("resolver `{resolver}` panicked at `{path}`: {message}")]
    ResolverPanicked {
        /// The concrete path.
        path: String,
        /// The resolver's name.
        resolver: String,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// Automerge rejected the operation.
    #[error("automerge: {0}")]
    Automerge(Box<AutomergeError>),
}

// The two wrapped errors are boxed to keep `Result<_, PolicyError>` small.
impl From<PathError> for PolicyError {
    fn from(e: PathError) -> Self {
        PolicyError::Path(Box::new(e))
    }
}

impl From<AutomergeError> for PolicyError {
    fn from(e: AutomergeError) -> Self {
        PolicyError::Automerge(Box::new(e))
    }
}
