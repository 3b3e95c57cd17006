//! The client JSON API (`/v1/...`, on the main listener): a principal's documents and who wrote
//! which change. Same tokens as the WebSocket (see `admission::admit_api`); CORS allows
//! browsers on the `--allow-origin` list (any origin when the list is empty: requests carry a
//! bearer token, never cookies). The answers' shapes are documented in `concord::api`, the
//! client side.
//!
//! - `GET /v1/docs?limit=N&cursor=C`: the documents the token names explicitly, then the ones
//!   its principal created (oldest first); deleted documents are left out. Cursors are `g:<id>` (after this granted document)
//!   and `c:<n>` (after this position in the principal's list, which only grows), so paging is
//!   stable while documents are created.
//! - `GET /v1/docs/{id}/authors`: the recorded authors of the document's changes (404 when the
//!   token cannot read it, 410 when it was deleted).

use std::collections::{BTreeSet, HashMap};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use concord::DocumentId;
use concord::core::{DocScope, Grant};
use serde_json::{Value as JsonValue, json};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::AppState;
use super::admission::admit_api;

/// Page size when the request does not say.
const DEFAULT_LIMIT: usize = 100;
/// Largest page.
const MAX_LIMIT: usize = 1000;
/// Entries of the principal's list read per storage query while skipping granted ones.
const BATCH: usize = 256;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// CORS for the API routes: `GET` with an `Authorization` header, from `origins` (any when
/// empty).
pub fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.is_empty() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    CorsLayer::new()
        .allow_methods([Method::GET])
        .allow_headers([header::AUTHORIZATION])
        .allow_origin(allow)
        .max_age(std::time::Duration::from_secs(600))
}

/// Where a page of `GET /v1/docs` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    Start,
    /// After this granted document.
    Granted(DocumentId),
    /// After this position in the principal's created documents.
    Created(u64),
}

fn parse_cursor(raw: Option<&String>) -> Result<Cursor, String> {
    let Some(raw) = raw else {
        return Ok(Cursor::Start);
    };
    let bad = || format!("invalid cursor `{raw}` (pass the `next` of a previous page)");
    match raw.split_once(':') {
        Some(("g", id)) => id.parse().map(Cursor::Granted).map_err(|_| bad()),
        Some(("c", n)) => n.parse().map(Cursor::Created).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

fn parse_limit(raw: Option<&String>) -> Result<usize, String> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| format!("invalid limit `{s}` (1 to {MAX_LIMIT})")),
    }
}

/// One listed document and the cursor that continues after it.
struct Entry {
    doc: DocumentId,
    source: &'static str,
    cursor: String,
}

/// `GET /v1/docs`: see the module docs.
pub async fn list_docs(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let grant = match admit_api(&app, &headers, &query) {
        Ok(Some(g)) => g,
        Ok(None) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "listing documents needs a token: documents are listed per principal",
            );
        }
        Err(r) => return r.into_response(),
    };
    let (limit, cursor) = match (
        parse_limit(query.get("limit")),
        parse_cursor(query.get("cursor")),
    ) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    match page(&app, &grant, cursor, limit).await {
        Ok((entries, next)) => Json(json!({
            "documents": entries
                .iter()
                .map(|e| json!({
                    "id": e.doc.to_string(),
                    "url": e.doc.url().to_string(),
                    "source": e.source,
                    "cursor": e.cursor,
                }))
                .collect::<Vec<_>>(),
            "next": next,
        }))
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Up to `limit` entries after `cursor`, and the cursor of the next page if there is one.
async fn page(
    app: &AppState,
    grant: &Grant,
    cursor: Cursor,
    limit: usize,
) -> Result<(Vec<Entry>, Option<String>), concord::storage::StorageError> {
    let granted: BTreeSet<DocumentId> = match &grant.docs {
        DocScope::Only(ids) => ids.clone(),
        _ => BTreeSet::new(),
    };
    // One entry more than the page, to know whether another page follows.
    let want = limit + 1;
    let mut entries: Vec<Entry> = Vec::new();
    let (granted_after, mut created_after) = match cursor {
        Cursor::Start => (Some(None), None),
        Cursor::Granted(d) => (Some(Some(d)), None),
        Cursor::Created(n) => (None, Some(n)),
    };
    if let Some(after) = granted_after {
        entries.extend(
            granted
                .iter()
                .filter(|d| after.is_none_or(|a| **d > a) && app.repo.deletion(d).is_none())
                .take(want)
                .map(|d| Entry {
                    doc: *d,
                    source: "grant",
                    cursor: format!("g:{d}"),
                }),
        );
    }
    let storage = app.repo.storage();
    while entries.len() < want {
        let batch = storage
            .owned_docs(&grant.principal, created_after, BATCH)
            .await?;
        let done = batch.len() < BATCH;
        for owned in batch {
            created_after = Some(owned.cursor);
            // Documents the token names were listed first; deleted ones are not listed (their
            // rows go when the server reclaims them).
            if !granted.contains(&owned.doc)
                && entries.len() < want
                && app.repo.deletion(&owned.doc).is_none()
            {
                entries.push(Entry {
                    doc: owned.doc,
                    source: "created",
                    cursor: format!("c:{}", owned.cursor),
                });
            }
        }
        if done {
            break;
        }
    }
    let next = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|e| e.cursor.clone())
    } else {
        None
    };
    Ok((entries, next))
}

/// `GET /v1/docs/{id}/authors`: see the module docs.
pub async fn authors(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Response {
    let grant = match admit_api(&app, &headers, &query) {
        Ok(g) => g,
        Err(r) => return r.into_response(),
    };
    let doc: DocumentId = match id.parse() {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    // A document outside the grant looks like one that does not exist.
    if grant.as_ref().is_some_and(|g| !g.can_read(&doc)) {
        return error(StatusCode::NOT_FOUND, format!("no document {doc}"));
    }
    if app.repo.deletion(&doc).is_some() {
        return error(StatusCode::GONE, format!("document {doc} was deleted"));
    }
    match app.repo.storage().authors(&doc).await {
        Ok(list) => {
            let authors: Vec<JsonValue> = list
                .iter()
                .map(|a| {
                    json!({
                        "hash": automerge::ChangeHash(a.hash).to_string(),
                        "principal": a.principal,
                        "at_ms": a.at_ms,
                    })
                })
                .collect();
            Json(json!({"id": doc.to_string(), "authors": authors})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
