//! `GET /admin/cluster` (admin token): this node and every live node of its cluster, from the
//! registry in the database (a node is live while its heartbeat is recent).
//!
//! ```text
//! {"node":"eu-2","nodes":[{"node":"eu-1","region":"eu","addr":"10.0.0.1:3030",
//!   "version":"0.1.0","up_secs":3600,"heartbeat_age_ms":800}, ...]}
//! ```
//! A server without `--database` answers 404 (it is no cluster); 503 when the database does not
//! answer.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::cluster::registry::live_nodes;

/// `GET /admin/cluster`.
pub async fn cluster(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = super::admission::admit_admin(&app, &headers, &query) {
        return r.into_response();
    }
    let Some(c) = &app.cluster else {
        let body = json!({"error": "this server is not a cluster node (no --database)"});
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    };
    match live_nodes(c.storage.pool()).await {
        Ok(nodes) => {
            let nodes: Vec<_> = nodes
                .iter()
                .map(|n| {
                    json!({
                        "node": n.node,
                        "region": n.region,
                        "addr": n.addr,
                        "version": n.version,
                        "up_secs": n.up_secs,
                        "heartbeat_age_ms": n.heartbeat_age_ms,
                    })
                })
                .collect();
            Json(json!({"node": c.node, "nodes": nodes})).into_response()
        }
        Err(e) => {
            let body = json!({"error": e.to_string()});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}
