//! Plain HTTP around the sync endpoint: health, metrics and a read-only admin API.

use axum::Json;
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use concord::{DocumentId, RepoError};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::metrics::set_count;

/// A shard whose lock is held this long without a break makes `/healthz` answer 503.
const STALL: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /healthz`: 200 while the server serves: its storage answers and no engine shard is
/// wedged (held for more than 5 s, or poisoned by a panic). In cluster mode the storage check is
/// a `SELECT 1` on a connection of its own, bounded by a short timeout, and the cluster bus must
/// be listening: while PostgreSQL is down the node answers 503 (and a load balancer sends new
/// clients elsewhere).
pub async fn healthz(State(app): State<AppState>) -> Response {
    let engine = app.repo.health(STALL);
    let stalled: Vec<serde_json::Value> = engine
        .stalled
        .iter()
        .map(|(shard, held)| json!({"shard": shard, "held_ms": held.as_millis()}))
        .collect();
    let mut problems = Vec::new();
    let cluster = match &app.cluster {
        Some(c) => {
            let started = std::time::Instant::now();
            let database = c.ping(super::backend::HEALTH_TIMEOUT).await;
            let ping_ms = started.elapsed().as_secs_f64() * 1000.0;
            let bus = concord::repo::ClusterBus::is_connected(c.bus.as_ref());
            if let Err(e) = &database {
                problems.push(format!("database: {e}"));
            }
            if !bus {
                problems.push("cluster bus: not listening (reconnecting)".to_owned());
            }
            json!({
                "node": c.node,
                "database": {"ok": database.is_ok(), "ping_ms": ping_ms, "error": database.err()},
                "bus": {"connected": bus, "reconnects": c.bus.reconnects()},
            })
        }
        None => {
            if let Err(e) = app.repo.storage().get_meta("storage_id").await {
                problems.push(format!("storage: {e}"));
            }
            serde_json::Value::Null
        }
    };
    if !engine.is_healthy() {
        problems.push("engine: a shard is stalled or poisoned".to_owned());
    }
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    let mut body = json!({
        "status": if problem.is_some() { "unavailable" } else { "ok" },
        "region": app.config.region,
        "error": problem,
        "engine": {
            "shards": engine.shards,
            "stalled": stalled,
            "poisoned": engine.poisoned,
        },
    });
    if !cluster.is_null() {
        body["cluster"] = cluster;
    }
    let status = if problem.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<AppState>) -> Response {
    if let Ok(docs) = app.repo.storage().list().await {
        set_count(&app.metrics.stored_documents, docs.len());
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// Paging of the document list.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
pub struct Page {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// `GET /admin/docs?offset=&limit=`: stored documents with their heads.
pub async fn list_docs(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Query(page): Query<Page>,
) -> Response {
    if let Err(r) = super::admission::admit_admin(&app, &headers, &query) {
        return r.into_response();
    }
    let docs = match app.repo.storage().list().await {
        Ok(d) => d,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let total = docs.len();
    let mut items = Vec::new();
    for doc in docs
        .into_iter()
        .skip(page.offset)
        .take(page.limit.min(1000))
    {
        let entry = match app.repo.find_local(doc).await.and_then(|h| h.heads()) {
            Ok(heads) => json!({
                "id": doc.to_string(),
                "url": doc.url().to_string(),
                "heads": heads.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            }),
            Err(e) => json!({"id": doc.to_string(), "error": e.to_string()}),
        };
        items.push(entry);
    }
    Json(json!({"total": total, "offset": page.offset, "documents": items})).into_response()
}

/// `GET /admin/replication`: this region, its heads index and every configured or seen peer
/// region with the state of its link (`up`, `connecting`, `down`, `stalled`), the live link's
/// figures and cumulative traffic (field definitions: README, Regions).
pub async fn replication(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = super::admission::admit_admin(&app, &headers, &query) {
        return r.into_response();
    }
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let peers = app.repo.region_peers();
    let link_json = |l: &concord::core::RegionLinkStatus| {
        json!({
            "conn": l.conn.0,
            "region": l.region,
            "peer_id": l.peer_id.to_string(),
            "storage_id": l.storage_id.as_ref().map(ToString::to_string),
            "up_ms": l.up_ms,
            "docs_behind": l.docs_behind,
            "oldest_unacked_ms": l.oldest_unacked_ms,
            "digest_differences": l.digest_differences,
            "digest_age_ms": l.digest_age_ms,
            "digest_measured_at_unix_ms": l.digest_age_ms.map(|a| now_unix.saturating_sub(a)),
            "frames_in": l.frames_in,
            "frames_out": l.frames_out,
            "bytes_in": l.bytes_in,
            "bytes_out": l.bytes_out,
        })
    };
    let peer_json: Vec<_> = peers
        .iter()
        .map(|p| {
            json!({
                "region": p.region,
                "url": p.url,
                "state": p.state.as_str(),
                "down_ms": p.down_ms,
                "down_since_unix_ms": p.down_ms.map(|a| now_unix.saturating_sub(a)),
                "last_error": p.last_error,
                "next_retry_ms": p.next_retry_ms,
                "attempts": p.attempts,
                "idle_ms": p.idle_ms,
                "connection": p.link.as_ref().map(link_json),
                "totals": {
                    "frames_in": p.totals.frames_in,
                    "frames_out": p.totals.frames_out,
                    "bytes_in": p.totals.bytes_in,
                    "bytes_out": p.totals.bytes_out,
                    "links_ended": p.totals.links_ended,
                },
            })
        })
        .collect();
    let links: Vec<_> = peers
        .iter()
        .filter_map(|p| {
            let mut l = link_json(p.link.as_ref()?);
            l["state"] = json!(p.state.as_str());
            Some(l)
        })
        .collect();
    let up: std::collections::BTreeSet<&str> = peers
        .iter()
        .filter(|p| p.state == concord::repo::LinkState::Up)
        .filter_map(|p| p.region.as_deref())
        .collect();
    Json(json!({
        "region": app.config.region,
        "replicating": app.config.peer_secret.is_some(),
        "storage_id": app.repo.storage_id().map(|s| s.to_string()),
        "indexed_documents": app.repo.indexed_documents(),
        "configured_peers": app.config.peers.iter().map(|p| crate::server::redact(p)).collect::<Vec<_>>(),
        "regions_up": up,
        "peers": peer_json,
        "links": links,
    }))
    .into_response()
}

/// `GET /admin/docs/{id}`: one document as JSON with its heads.
pub async fn get_doc(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = super::admission::admit_admin(&app, &headers, &query) {
        return r.into_response();
    }
    let doc: DocumentId = match id.parse() {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match app.repo.find_local(doc).await {
        Ok(h) => match (h.to_json(), h.heads()) {
            (Ok(value), Ok(heads)) => Json(json!({
                "id": doc.to_string(),
                "heads": heads.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                "value": value,
            }))
            .into_response(),
            (Err(e), _) | (_, Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Err(RepoError::Unavailable(_)) => {
            error(StatusCode::NOT_FOUND, format!("no document {doc}"))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `DELETE /admin/docs/{id}` (`?purge=true` to erase stored bytes on every replica at once):
/// deletes a document everywhere, as the admin. 404 for a document never stored here.
pub async fn delete_doc(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Response {
    let principal = match super::admission::admit_admin(&app, &headers, &query) {
        Ok(p) => p.unwrap_or_else(|| "admin".into()),
        Err(r) => return r.into_response(),
    };
    let doc: DocumentId = match id.parse() {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let purge = query.get("purge").is_some_and(|v| v == "true" || v == "1");
    let known = app.repo.deletion(&doc).is_some()
        || app
            .repo
            .storage()
            .load(&doc)
            .await
            .is_ok_and(|s| !s.is_empty());
    if !known {
        return error(StatusCode::NOT_FOUND, format!("no document {doc}"));
    }
    match app.repo.delete_document(doc, principal, purge).await {
        Ok(()) => {
            Json(json!({"id": doc.to_string(), "deleted": true, "purged": purge})).into_response()
        }
        Err(RepoError::Deleted(_)) if purge => {
            // Already deleted: a purge still erases what the deletion kept.
            match app.repo.purge_deleted(doc).await {
                Ok(()) => Json(json!({"id": doc.to_string(), "deleted": true, "purged": true}))
                    .into_response(),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        Err(RepoError::Deleted(_)) => {
            error(StatusCode::CONFLICT, format!("{doc} is already deleted"))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
