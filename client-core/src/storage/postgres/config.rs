//! How to reach PostgreSQL: [`PostgresConfig`] and [`NotifyConfig`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use super::error::PgOpenError;

/// The longest node id (it travels in every notification payload).
pub const MAX_NODE_ID_LEN: usize = 64;

/// How to open a [`PostgresStorage`](super::PostgresStorage) (and a [`PgBus`](super::PgBus) on
/// the same database).
///
/// TLS and everything else libpq-style URLs carry (`sslmode`, `sslrootcert`, `application_name`,
/// `host=/run/postgresql` for a unix socket, ...) go in the URL.
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database?sslmode=...`.
    pub url: String,
    /// Connection pool size.
    pub max_connections: u32,
    /// PostgreSQL's `statement_timeout` on every connection: a statement (or a wait for a lock)
    /// that takes longer fails instead of hanging.
    pub statement_timeout: Duration,
    /// How long opening one connection (TCP, TLS, authentication) may take.
    pub connect_timeout: Duration,
    /// How long an operation waits for a pooled connection (including opening one) before it
    /// fails: while PostgreSQL is down, writes fail after this long instead of hanging.
    pub acquire_timeout: Duration,
    /// Announce every appended chunk with `pg_notify`, inside the committing transaction.
    pub notify: Option<NotifyConfig>,
}

impl PostgresConfig {
    /// Defaults for the database at `url`: 10 connections, 30 s statement timeout, 10 s connect
    /// and acquire timeouts, no notifications.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(10),
            notify: None,
        }
    }

    /// These settings with commit notifications on `channel`, from node `node`.
    pub fn with_notify(mut self, channel: impl Into<String>, node: impl Into<String>) -> Self {
        self.notify = Some(NotifyConfig {
            channel: channel.into(),
            node: node.into(),
        });
        self
    }

    /// The URL with its password masked, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// Checks the settings and parses the URL into connection options (statement timeout and
    /// application name included).
    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions, PgOpenError> {
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(PgOpenError::InvalidUrl(format!(
                "{} does not start with postgres:// or postgresql://",
                self.redacted_url()
            )));
        }
        if self.max_connections == 0 {
            return Err(PgOpenError::InvalidConfig(
                "the pool needs at least one connection".into(),
            ));
        }
        for (what, d) in [
            ("statement timeout", self.statement_timeout),
            ("connect timeout", self.connect_timeout),
            ("acquire timeout", self.acquire_timeout),
        ] {
            if d.is_zero() {
                return Err(PgOpenError::InvalidConfig(format!(
                    "{what} must not be zero"
                )));
            }
        }
        if let Some(notify) = &self.notify {
            notify.validate()?;
        }
        let opts = PgConnectOptions::from_str(&self.url).map_err(|e| {
            PgOpenError::InvalidUrl(format!("{}: {}", self.redacted_url(), one_line(&e)))
        })?;
        let app = match (&self.notify, opts.get_application_name()) {
            (_, Some(name)) => name.to_owned(),
            (Some(n), None) => format!("concord/{}", n.node),
            (None, None) => "concord".to_owned(),
        };
        let timeout_ms = self.statement_timeout.as_millis().max(1).to_string();
        // Server-side TCP keepalives: PostgreSQL finds the session of a client whose machine
        // died within about 25 s (not the kernel's two hours), and frees what it held (advisory
        // locks, a `LISTEN`).
        Ok(opts.application_name(&app).options([
            ("statement_timeout", timeout_ms.as_str()),
            ("tcp_keepalives_idle", "10"),
            ("tcp_keepalives_interval", "5"),
            ("tcp_keepalives_count", "3"),
        ]))
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("notify", &self.notify)
            .finish()
    }
}

/// Where and as whom appended chunks are announced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotifyConfig {
    /// The `LISTEN`/`NOTIFY` channel (lower-case letters, digits, `_`; at most 63 bytes).
    pub channel: String,
    /// This node's id, unique in the cluster (letters, digits, `.`, `_`, `-`, `:`; at most
    /// [`MAX_NODE_ID_LEN`] bytes).
    pub node: String,
}

impl NotifyConfig {
    /// Checks the channel name and node id.
    pub fn validate(&self) -> Result<(), PgOpenError> {
        validate_channel(&self.channel)?;
        validate_node_id(&self.node)
    }
}

/// Checks a `LISTEN`/`NOTIFY` channel name.
pub fn validate_channel(channel: &str) -> Result<(), PgOpenError> {
    let ok = !channel.is_empty()
        && channel.len() <= 63
        && channel
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PgOpenError::InvalidConfig(format!(
            "notification channel {channel:?} must be 1 to 63 lower-case letters, digits or _"
        )))
    }
}

/// Checks a node id.
pub fn validate_node_id(node: &str) -> Result<(), PgOpenError> {
    let ok = !node.is_empty()
        && node.len() <= MAX_NODE_ID_LEN
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(PgOpenError::InvalidConfig(format!(
            "node id {node:?} must be 1 to {MAX_NODE_ID_LEN} letters, digits, '.', '_', '-' or ':'"
        )))
    }
}

/// `url` with the password (between `user:` and `@` in the authority) replaced by `***`, and a
/// `password=` query parameter masked too.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some(parts) => parts,
        None => return url.to_owned(),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// An error's message on one line.
pub(crate) fn one_line(e: &dyn fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/x?sslmode=require"),
            "postgres://u:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact("postgres://u@db/x?password=secret&sslmode=disable"),
            "postgres://u@db/x?password=***&sslmode=disable"
        );
        assert_eq!(redact("postgres://db"), "postgres://db");
        assert_eq!(redact("p@ss:word"), "p@ss:word");
        let c = PostgresConfig::new("postgres://u:secret@db/x");
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn bad_settings_are_refused_before_connecting() {
        let bad = |c: PostgresConfig| c.connect_options().unwrap_err().to_string();
        assert!(bad(PostgresConfig::new("mysql://x")).contains("postgres://"));
        assert!(bad(PostgresConfig::new("postgres://u:pw@h:notaport/d")).contains("invalid"));
        let mut c = PostgresConfig::new("postgres://h/d");
        c.max_connections = 0;
        assert!(bad(c).contains("at least one"));
        assert!(
            bad(PostgresConfig::new("postgres://h/d").with_notify("Bad-Channel", "n1"))
                .contains("channel")
        );
        assert!(
            bad(PostgresConfig::new("postgres://h/d").with_notify("ok", "has space"))
                .contains("node id")
        );
        assert!(
            PostgresConfig::new("postgres://h/d")
                .with_notify("concord", "node-1.eu:a")
                .connect_options()
                .is_ok()
        );
    }
}
