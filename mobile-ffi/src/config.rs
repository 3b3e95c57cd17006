//! Opening options: server URL validation and the access token.
//!
//! Token: stored on the `Repo` and appended to every server URL as a percent-encoded `token`
//! query parameter (`ws://host/sync?token=...`), the form `concord serve` accepts from every
//! client (browsers cannot set WebSocket headers). The server verifies it at the WebSocket
//! upgrade and denies clients without a valid token unless it runs with `--insecure-no-auth`;
//! started with `--dev` on loopback it prints a development token. A refused connection is retried
//! with backoff like any other failure (the engine does not report *why* a connection failed: see the
//! README's API gaps). Treat URLs with tokens as secrets: do not log them.

use crate::error::{ConcordError, Result};

/// Checks a server URL: `ws://` or `wss://`, a host, no whitespace or control characters.
pub(crate) fn validate_server_url(url: &str) -> Result<()> {
    let bad = |why: &str| Err(ConcordError::InvalidUrl(format!("`{url}`: {why}")));
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad("expected ws://host[:port]/path or wss://...");
    };
    if !scheme.eq_ignore_ascii_case("ws") && !scheme.eq_ignore_ascii_case("wss") {
        return bad("the scheme must be ws or wss");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace or control characters");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') {
        return bad("no host");
    }
    if let Some((_, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']'))
        && port.parse::<u16>().is_err()
    {
        return bad("the port is not a number from 0 to 65535");
    }
    Ok(())
}

/// Appends `token` to `url` as a percent-encoded `token` query parameter.
pub(crate) fn with_token(url: &str, token: Option<&str>) -> String {
    let Some(token) = token else {
        return url.to_owned();
    };
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut out = format!("{base}{sep}token={}", percent_encode(token));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects_urls() {
        for ok in [
            "ws://127.0.0.1:3030/sync",
            "wss://sync.example.com/sync",
            "ws://[::1]:80/",
            "WS://host",
        ] {
            assert_eq!(validate_server_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "http://host/sync",
            "ws://",
            "ws://:80/x",
            "ws://host:99999/",
            "ws://ho st/",
            "127.0.0.1:3030",
        ] {
            assert!(
                matches!(validate_server_url(bad), Err(ConcordError::InvalidUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn appends_the_token() {
        assert_eq!(with_token("ws://h/sync", None), "ws://h/sync");
        assert_eq!(
            with_token("ws://h/sync", Some("a b&c")),
            "ws://h/sync?token=a%20b%26c"
        );
        assert_eq!(
            with_token("ws://h/sync?x=1#f", Some("t")),
            "ws://h/sync?x=1&token=t#f"
        );
    }
}
