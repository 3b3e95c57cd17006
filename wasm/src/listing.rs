//! Listing documents: `repo.listLocal()` (this replica's storage) and `repo.listRemote()` (the
//! documents the server keeps for the token's principal: `GET /v1/docs` of its JSON API, over
//! `fetch`, on the same host as the WebSocket URL, with the same token as a bearer token; see
//! [`concord::api`]).
//!
//! ```js
//! const urls = await repo.listLocal();
//! let page = await repo.listRemote({ limit: 100 });   // {documents: [{id, url, source, cursor}], next}
//! while (page.next) page = await repo.listRemote({ cursor: page.next });
//! ```

use concord::api::{self, ListQuery};
use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::error::{Error, Result};
use crate::js::{self, object};
use crate::repo::{Repo, promise};

/// `{limit, cursor}` of `listRemote(options)`.
fn query_arg(options: &JsValue) -> Result<ListQuery> {
    let mut query = ListQuery::new();
    if options.is_undefined() || options.is_null() {
        return Ok(query);
    }
    if !options.is_object() {
        return Err(Error::arg(
            "options",
            format!("expected an object, got {}", js::type_name(options)),
        ));
    }
    let limit = js::prop(options, "limit");
    if !limit.is_undefined() {
        query = query.limit(js::index_arg("limit", &limit)?);
    }
    let cursor = js::prop(options, "cursor");
    if !(cursor.is_undefined() || cursor.is_null()) {
        query = query.after(js::string_arg("cursor", &cursor)?);
    }
    Ok(query)
}

/// The JSON API URL for `path` on the server with WebSocket URL `ws_url` (which carries the
/// token as `?token=`), and that token.
fn endpoint(ws_url: &str, path: &str) -> Result<(String, Option<String>)> {
    let url = web_sys::Url::new(ws_url).map_err(|e| Error::Url {
        url: ws_url.to_owned(),
        reason: js::describe(&e),
    })?;
    let token = url.search_params().get("token").filter(|t| !t.is_empty());
    let scheme = if url.protocol() == "wss:" {
        "https:"
    } else {
        "http:"
    };
    Ok((format!("{scheme}//{}{path}", url.host()), token))
}

/// Awaits a JavaScript promise; a rejection becomes a `network` error about `what`.
async fn settle(value: JsValue, what: &str) -> Result<JsValue> {
    JsFuture::from(Promise::resolve(&value))
        .await
        .map_err(|e| Error::Network(format!("{what}: {}", js::describe(&e))))
}

/// `GET url` with the bearer token; the parsed JSON body of a 2xx answer.
async fn get_json(url: &str, token: Option<&str>) -> Result<serde_json::Value> {
    let global = js_sys::global();
    let fetch: Function = Reflect::get(&global, &"fetch".into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| Error::Unsupported("fetch is not available here".into()))?;
    let headers = match token {
        Some(t) => object(&[("Authorization", format!("Bearer {t}").into())]),
        None => object(&[]),
    };
    let init = object(&[("headers", headers)]);
    let started = fetch
        .call2(&global, &url.into(), &init)
        .map_err(|e| Error::Network(format!("{url}: {}", js::describe(&e))))?;
    let response = settle(started, url).await?;
    let status = js::prop(&response, "status").as_f64().unwrap_or(0.0) as u16;
    let text_fn: Function = js::prop(&response, "text")
        .dyn_into()
        .map_err(|_| Error::Network(format!("{url}: the answer is not a Response")))?;
    let body = settle(
        text_fn
            .call0(&response)
            .map_err(|e| Error::Network(js::describe(&e)))?,
        url,
    )
    .await?
    .as_string()
    .unwrap_or_default();
    match status {
        200..=299 => serde_json::from_str(&body)
            .map_err(|e| Error::Network(format!("{url}: the answer is not JSON: {e}"))),
        401 | 403 => Err(Error::Denied(format!("{url} answered {status}: {body}"))),
        _ => Err(Error::Network(format!("{url} answered {status}: {body}"))),
    }
}

#[wasm_bindgen]
impl Repo {
    /// The URLs of every document stored in this replica.
    #[wasm_bindgen(js_name = listLocal)]
    pub fn list_local(&self) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            shared.check_open()?;
            let docs = shared.storage().list().await?;
            Ok(docs
                .iter()
                .map(|d| JsValue::from_str(&d.url().to_string()))
                .collect::<js_sys::Array>()
                .into())
        })
    }

    /// One page of the documents the server keeps for this repo's token: those the token names,
    /// then those its principal created, oldest first: `{documents: [{id, url, source:
    /// "grant" | "created", cursor}], next}`. `options`: `limit` (server default 100),
    /// `cursor` (the `next` of the previous page). Tries each server in order; rejects with
    /// `kind: "denied"` when the server refuses the token, `"network"` when no server answers,
    /// `"unsupported"` without servers.
    #[wasm_bindgen(js_name = listRemote)]
    pub fn list_remote(&self, options: JsValue) -> Promise {
        let (shared, servers) = (self.shared.clone(), self.servers.clone());
        promise(async move {
            shared.check_open()?;
            let path = query_arg(&options)?.path();
            let mut last = Error::Unsupported("this repo has no servers".into());
            for server in &servers {
                let (url, token) = endpoint(server, &path)?;
                match get_json(&url, token.as_deref()).await {
                    Ok(json) => {
                        let page =
                            api::parse_page(&json).map_err(|e| Error::Network(e.to_string()))?;
                        let documents: Vec<serde_json::Value> = page
                            .documents
                            .iter()
                            .map(|d| {
                                serde_json::json!({
                                    "id": d.doc.to_string(),
                                    "url": d.doc.url().to_string(),
                                    "source": d.source.as_str(),
                                    "cursor": d.cursor,
                                })
                            })
                            .collect();
                        return Ok(js::from_json(&serde_json::json!({
                            "documents": documents,
                            "next": page.next,
                        })));
                    }
                    Err(e @ Error::Network(_)) => last = e,
                    Err(e) => return Err(e),
                }
            }
            Err(last)
        })
    }
}
