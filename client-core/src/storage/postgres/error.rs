//! Why a PostgreSQL database could not be opened: [`PgOpenError`], one line each, naming what is
//! wrong.

use std::time::Duration;

use crate::storage::StorageError;

use super::config::one_line;

/// Opening a PostgreSQL storage or bus failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgOpenError {
    /// The URL does not parse.
    #[error("invalid PostgreSQL URL: {0}")]
    InvalidUrl(String),
    /// A setting is out of range.
    #[error("invalid PostgreSQL setting: {0}")]
    InvalidConfig(String),
    /// The server refused the user name or password.
    #[error("PostgreSQL at {target} refused the credentials: {message}")]
    Authentication {
        /// `host:port`.
        target: String,
        /// The server's message.
        message: String,
    },
    /// The database named in the URL does not exist.
    #[error("PostgreSQL at {target}: {message}")]
    NoSuchDatabase {
        /// `host:port`.
        target: String,
        /// The server's message.
        message: String,
    },
    /// Nothing answered at the address (refused, unknown host, network down, server starting
    /// or shutting down).
    #[error("PostgreSQL at {target} is unreachable: {message}")]
    Unreachable {
        /// `host:port`.
        target: String,
        /// What failed.
        message: String,
    },
    /// The server did not complete the connection in time.
    #[error("PostgreSQL at {target} did not answer within {timeout:?}")]
    Timeout {
        /// `host:port`.
        target: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The TLS handshake failed (`sslmode`, certificates).
    #[error("TLS to PostgreSQL at {target} failed: {message}")]
    Tls {
        /// `host:port`.
        target: String,
        /// What failed.
        message: String,
    },
    /// The database was migrated by a newer Concord.
    #[error(
        "the PostgreSQL database has schema version {found} ({table}), newer than this binary's \
         {supported}: upgrade concord before pointing it at this database"
    )]
    SchemaTooNew {
        /// The migrations table.
        table: &'static str,
        /// The newest version applied to the database.
        found: i64,
        /// The newest version this binary knows.
        supported: i64,
    },
    /// Applying the migrations failed.
    #[error("PostgreSQL schema migration ({table}) failed: {message}")]
    Migration {
        /// The migrations table.
        table: &'static str,
        /// What failed.
        message: String,
    },
    /// Anything else the server or driver reported.
    #[error("PostgreSQL at {target} failed: {message}")]
    Other {
        /// `host:port`.
        target: String,
        /// What failed.
        message: String,
    },
}

impl PgOpenError {
    /// Classifies a connection error from sqlx.
    pub(crate) fn from_connect(target: &str, timeout: Duration, e: sqlx::Error) -> Self {
        let target = target.to_owned();
        let message = one_line(&e);
        match &e {
            sqlx::Error::Configuration(_) => Self::InvalidUrl(message),
            // rustls's refusals reach us as I/O errors.
            sqlx::Error::Io(io) if is_tls(&io.to_string()) => Self::Tls { target, message },
            sqlx::Error::Io(_) => Self::Unreachable { target, message },
            sqlx::Error::Tls(_) => Self::Tls { target, message },
            sqlx::Error::PoolTimedOut => Self::Timeout { target, timeout },
            sqlx::Error::Database(db) => {
                let message = one_line(&db.message());
                match db.code().as_deref() {
                    // invalid_password, invalid_authorization_specification
                    Some("28P01" | "28000") => Self::Authentication { target, message },
                    // invalid_catalog_name
                    Some("3D000") => Self::NoSuchDatabase { target, message },
                    // cannot_connect_now (starting or shutting down), admin/crash shutdown
                    Some("57P03" | "57P01" | "57P02") => Self::Unreachable { target, message },
                    _ => Self::Other { target, message },
                }
            }
            _ => Self::Other { target, message },
        }
    }
}

/// Whether an I/O error's text is a TLS failure (certificates, handshake).
fn is_tls(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "ssl"]
        .iter()
        .any(|w| m.contains(w))
}

impl From<PgOpenError> for StorageError {
    fn from(e: PgOpenError) -> Self {
        StorageError::Backend {
            op: "open",
            message: e.to_string(),
        }
    }
}

/// Maps a sqlx error of operation `op` to a storage error.
pub(crate) fn backend(op: &'static str) -> impl FnOnce(sqlx::Error) -> StorageError {
    move |e| StorageError::Backend {
        op,
        message: one_line(&e),
    }
}

/// True for errors after which the same transaction may simply run again on another connection:
/// deadlocks between concurrent writers, serialization failures, a connection the server closed
/// (restart, failover). Whether such a transaction committed or not, running it again is safe:
/// every write is idempotent.
pub(crate) fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // deadlock, serialization failure, admin/crash shutdown of the session
            matches!(code.as_ref(), "40P01" | "40001" | "57P01" | "57P02")
        }),
        _ => false,
    }
}
