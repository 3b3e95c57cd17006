//! The client of a server's JSON API (`/v1/...`): the same host as the WebSocket URL, the same
//! token.
//!
//! A server URL `ws://host:port/sync?token=T` (as every Concord client configures it) becomes the
//! base `http://host:port` and the bearer token `T`; requests go out as
//! `GET /v1/... Authorization: Bearer T`. The native client speaks plain HTTP/1.1 (like its
//! WebSocket transport, it has no TLS): a `wss://` server is refused with
//! [`RemoteError::Unsupported`].

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;

/// Largest response body accepted.
const MAX_BODY: usize = 32 << 20;

/// Why a request to a server's JSON API failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The repo has no server URL.
    #[error("no server is configured")]
    NoServer,
    /// The server URL cannot be used for the JSON API.
    #[error("cannot use the server URL `{url}`: {reason}")]
    Url {
        /// The URL, without its query string (which may hold the token).
        url: String,
        /// Why.
        reason: String,
    },
    /// This client cannot do it (e.g. `wss://` without TLS support).
    #[error("{0}")]
    Unsupported(String),
    /// No server could be reached.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server refused the token (401) or the request (403).
    #[error("the server refused the request ({status}): {message}")]
    Denied {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server has no such thing, or the token does not cover it (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// Any other failure status.
    #[error("the server answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The answer is not what this API returns.
    #[error(transparent)]
    BadResponse(#[from] crate::api::ResponseError),
    /// No answer in time.
    #[error("no answer from the server within {0:?}")]
    Timeout(Duration),
}

/// One server's JSON API.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    host: String,
    port: u16,
    token: Option<String>,
    shown: String,
}

impl Endpoint {
    /// The JSON API of the server with WebSocket URL `ws_url`.
    pub(crate) fn from_server(ws_url: &str) -> Result<Self, RemoteError> {
        let parsed = url::Url::parse(ws_url).map_err(|e| RemoteError::Url {
            url: redact(ws_url),
            reason: e.to_string(),
        })?;
        let shown = redact(ws_url);
        match parsed.scheme() {
            "ws" | "http" => {}
            "wss" | "https" => {
                return Err(RemoteError::Unsupported(format!(
                    "{shown}: the native client has no TLS; use a ws:// URL (e.g. through a local TLS proxy)"
                )));
            }
            other => {
                return Err(RemoteError::Url {
                    url: shown,
                    reason: format!("expected ws://, got {other}://"),
                });
            }
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| RemoteError::Url {
                url: shown.clone(),
                reason: "no host".into(),
            })?
            .to_owned();
        let token = parsed
            .query_pairs()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .filter(|t| !t.is_empty());
        Ok(Self {
            host,
            port: parsed.port_or_known_default().unwrap_or(80),
            token,
            shown,
        })
    }

    /// `GET path_and_query` (e.g. `/v1/docs?limit=10`), parsed as JSON.
    pub(crate) async fn get_json(
        &self,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<Json, RemoteError> {
        tokio::time::timeout(timeout, self.get(path_and_query))
            .await
            .map_err(|_| RemoteError::Timeout(timeout))?
    }

    async fn get(&self, path_and_query: &str) -> Result<Json, RemoteError> {
        let unreachable = |reason: String| RemoteError::Unreachable {
            url: self.shown.clone(),
            reason,
        };
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::net::TcpStream::connect((host, self.port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let authority = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut request = hyper::Request::get(path_and_query)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(t) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| RemoteError::Url {
                url: self.shown.clone(),
                reason: e.to_string(),
            })?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()));
        let result = match response {
            Ok(r) => read(r).await,
            Err(e) => Err(e),
        };
        driver.abort();
        result
    }
}

/// A URL without its query string (which may carry the token), for messages.
fn redact(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

async fn read(response: hyper::Response<hyper::body::Incoming>) -> Result<Json, RemoteError> {
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| RemoteError::BadResponse(crate::api::ResponseError(e.to_string())))?
        .to_bytes();
    let json: Result<Json, _> = serde_json::from_slice(&body);
    if (200..300).contains(&status) {
        return json
            .map_err(|e| RemoteError::BadResponse(crate::api::ResponseError(e.to_string())));
    }
    let message = json
        .ok()
        .and_then(|j| j.get("error").and_then(Json::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
    Err(match status {
        401 | 403 => RemoteError::Denied { status, message },
        404 => RemoteError::NotFound(message),
        _ => RemoteError::Status { status, message },
    })
}
