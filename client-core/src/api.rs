//! The server's JSON API (`/v1/...`) as clients see it: request paths and the answers' types,
//! shared by the native client ([`Repo::list_remote`](crate::Repo), `fetch_authors`), the
//! browser package (over `fetch`) and the CLI. Every request carries the same bearer token as
//! the WebSocket (`Authorization: Bearer <token>`).
//!
//! - `GET /v1/docs?limit=N&cursor=C`: the documents the server keeps for the token's principal:
//!   `{"documents": [{"id", "url", "source": "grant"|"created", "cursor"}], "next": C|null}`
//!   (`cursor`: resume after this entry, e.g. to poll for documents created since). First the
//!   documents the token names explicitly (`grant`), then those the principal created
//!   (`created`, oldest first). Paging by cursor is stable while documents are created: a new
//!   document shows up on a later page, never shifting the pages before it. (On a PostgreSQL
//!   cluster, a document created on another node while a page is being read may take a position
//!   before that page's cursor, as positions are assigned before commit; listing from the start
//!   shows it.)
//! - `GET /v1/docs/{id}/authors`: who wrote which change, as the server that first committed
//!   the change saw the writer's token: `{"id", "authors": [{"hash", "principal", "at_ms"}]}`
//!   (hex hashes, Unix milliseconds of the server's clock). Only for documents the token can
//!   read (404 otherwise, as for a document that does not exist); 410 for a deleted document.

use automerge::ChangeHash;
use serde_json::Value as Json;

use crate::id::DocumentId;
use crate::storage::ChangeAuthor;

/// An answer of the JSON API that is not what this version expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server's answer is unusable: {0}")]
pub struct ResponseError(pub String);

fn bad(what: impl Into<String>) -> ResponseError {
    ResponseError(what.into())
}

/// Which page of `GET /v1/docs` to fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// At most this many documents (the server's default, 100, when `None`; it caps at 1000).
    pub limit: Option<usize>,
    /// Continue after this cursor: the [`RemotePage::next`] of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    /// The first page.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `limit` documents.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The page after the one whose `next` was `cursor`.
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// The request's path and query (`/v1/docs?limit=...&cursor=...`).
    pub fn path(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(l) = self.limit {
            q.append_pair("limit", &l.to_string());
        }
        if let Some(c) = &self.cursor {
            q.append_pair("cursor", c);
        }
        let q = q.finish();
        if q.is_empty() {
            "/v1/docs".to_owned()
        } else {
            format!("/v1/docs?{q}")
        }
    }
}

/// The path of `GET /v1/docs/{id}/authors`.
pub fn authors_path(doc: &DocumentId) -> String {
    format!("/v1/docs/{doc}/authors")
}

/// Why the server lists a document for the principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// The principal's token names the document.
    Grant,
    /// The principal created it (its changes were the first the server received for it).
    Created,
}

impl Source {
    /// `grant` or `created`, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Created => "created",
        }
    }
}

/// One document of a `GET /v1/docs` page.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteDoc {
    /// The document.
    pub doc: DocumentId,
    /// Why it is listed.
    pub source: Source,
    /// Pass it as [`ListQuery::after`] to continue after this entry (e.g. from the last entry
    /// of the last page, to find the documents created since).
    pub cursor: String,
}

/// One page of `GET /v1/docs`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemotePage {
    /// The documents: first those the token names, then those the principal created, oldest
    /// first.
    pub documents: Vec<RemoteDoc>,
    /// The cursor of the next page (`None`: this was the last page).
    pub next: Option<String>,
}

/// Parses a `GET /v1/docs` answer.
pub fn parse_page(json: &Json) -> Result<RemotePage, ResponseError> {
    let list = json
        .get("documents")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("no `documents` list"))?;
    let documents = list
        .iter()
        .map(|d| {
            let id = d
                .get("id")
                .and_then(Json::as_str)
                .ok_or_else(|| bad("a document without an `id`"))?;
            let doc = id.parse::<DocumentId>().map_err(|e| bad(e.to_string()))?;
            let source = match d.get("source").and_then(Json::as_str) {
                Some("grant") => Source::Grant,
                Some("created") => Source::Created,
                other => return Err(bad(format!("unknown source {other:?}"))),
            };
            let cursor = d
                .get("cursor")
                .and_then(Json::as_str)
                .ok_or_else(|| bad("a document without a `cursor`"))?
                .to_owned();
            Ok(RemoteDoc {
                doc,
                source,
                cursor,
            })
        })
        .collect::<Result<_, ResponseError>>()?;
    let next = match json.get("next") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(other) => return Err(bad(format!("`next` is {other}"))),
    };
    Ok(RemotePage { documents, next })
}

/// Parses a `GET /v1/docs/{id}/authors` answer.
pub fn parse_authors(json: &Json) -> Result<Vec<ChangeAuthor>, ResponseError> {
    json.get("authors")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("no `authors` list"))?
        .iter()
        .map(|a| {
            let hash: ChangeHash = a
                .get("hash")
                .and_then(Json::as_str)
                .and_then(|h| h.parse().ok())
                .ok_or_else(|| bad("an author without a hex `hash`"))?;
            Ok(ChangeAuthor {
                hash: hash.0,
                principal: a
                    .get("principal")
                    .and_then(Json::as_str)
                    .ok_or_else(|| bad("an author without a `principal`"))?
                    .to_owned(),
                at_ms: a.get("at_ms").and_then(Json::as_u64).unwrap_or(0),
            })
        })
        .collect()
}

/// Authors by change hash (what [`crate::history::list`] takes).
pub fn by_hash(
    authors: impl IntoIterator<Item = ChangeAuthor>,
) -> std::collections::HashMap<ChangeHash, ChangeAuthor> {
    authors
        .into_iter()
        .map(|a| (ChangeHash(a.hash), a))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_parse_and_bad_ones_are_typed_errors() {
        let id = DocumentId::from_bytes([5; 16]);
        let page = parse_page(&json!({
            "documents": [{"id": id.to_string(), "url": id.url().to_string(), "source": "created", "cursor": "c:4"}],
            "next": "c:4",
        }))
        .unwrap();
        assert_eq!(
            page.documents,
            vec![RemoteDoc {
                doc: id,
                source: Source::Created,
                cursor: "c:4".into()
            }]
        );
        assert_eq!(page.next.as_deref(), Some("c:4"));
        assert!(
            parse_page(&json!({"documents": [{"id": "nope", "source": "grant", "cursor": "g:x"}]}))
                .is_err()
        );
        assert!(
            parse_page(&json!({"documents": [{"id": id.to_string(), "source": "grant"}]})).is_err()
        );
        assert!(parse_page(&json!({"documents": [], "next": 3})).is_err());
        assert!(parse_page(&json!([])).is_err());
        let h = ChangeHash([7; 32]);
        let authors = parse_authors(&json!({"authors": [
            {"hash": h.to_string(), "principal": "alice", "at_ms": 5}
        ]}))
        .unwrap();
        assert_eq!(
            (authors[0].hash, authors[0].principal.as_str()),
            (h.0, "alice")
        );
        assert!(parse_authors(&json!({"authors": [{"hash": "zz", "principal": "a"}]})).is_err());
        assert_eq!(ListQuery::new().path(), "/v1/docs");
        assert_eq!(
            ListQuery::new().limit(5).after("c:1 &x").path(),
            "/v1/docs?limit=5&cursor=c%3A1+%26x"
        );
    }
}
