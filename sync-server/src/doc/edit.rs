//! The one-shot document commands: create, get, put, delete, text-splice, increment.

use anyhow::{Context, bail};
use automerge::transaction::Transaction;
use concord::path::{self, DocPath, PathError};
use concord::{AutomergeUrl, DocHandle};
use serde_json::Value as Json;

use super::replica::Replica;

/// Writes need the live document, not a view at fixed heads.
fn writable(url: &AutomergeUrl) -> anyhow::Result<()> {
    if url.heads.is_some() {
        bail!(
            "{url} names a fixed version of the document (`#heads`); write to {} instead",
            url.document_id.url()
        );
    }
    Ok(())
}

/// Applies `op` in one transaction and commits it to the local replica. A path error leaves the
/// document unchanged and is returned as is.
async fn apply(
    handle: &DocHandle,
    op: impl FnOnce(&mut Transaction<'_>) -> Result<(), PathError>,
) -> anyhow::Result<()> {
    let mut failure = None;
    let committed = handle
        .change(|tx| {
            op(tx).map_err(|e| {
                let msg = e.to_string();
                failure = Some(e);
                msg
            })
        })
        .await;
    match (committed, failure) {
        (_, Some(e)) => Err(e.into()),
        (Err(e), None) => {
            Err(anyhow::Error::new(e).context("the change was not committed to the local replica"))
        }
        (Ok(()), None) => Ok(()),
    }
}

/// Opens the document, brings it up to date (online), applies `op`, and waits for a server to
/// hold the result.
async fn write(
    r: &Replica,
    url: &AutomergeUrl,
    what: &str,
    path: &DocPath,
    op: impl FnOnce(&mut Transaction<'_>) -> Result<(), PathError>,
) -> anyhow::Result<()> {
    writable(url)?;
    let handle = r.open_doc(url).await?;
    // Catch up first (with a server that is reachable) so that list indexes and text positions
    // refer to the latest version.
    r.catch_up(&handle).await;
    apply(&handle, op)
        .await
        .with_context(|| format!("cannot {what} at `{path}` in {}", url.document_id.url()))?;
    r.confirm_write(&handle).await
}

/// `create [JSON]`: prints the new document's URL once it is committed locally.
pub(super) async fn create(r: &Replica, init: Option<Json>) -> anyhow::Result<()> {
    let handle = r
        .repo()
        .create()
        .await
        .context("cannot create a document in the local replica")?;
    if let Some(init) = init {
        apply(&handle, |tx| path::put(tx, &DocPath::root(), &init))
            .await
            .context("cannot write the initial value")?;
    }
    println!("{}", handle.url());
    r.confirm_write(&handle).await
}

/// `get URL [PATH]`: prints the JSON at PATH (pretty-printed).
pub(super) async fn get(r: &Replica, url: &AutomergeUrl, path: &DocPath) -> anyhow::Result<()> {
    let handle = r.open_doc(url).await?;
    let value = match &url.heads {
        None => {
            r.refresh_for_read(&handle).await;
            handle.with_doc(|doc| path::get(doc, path))?
        }
        Some(heads) => {
            // Fixed heads: the local copy may simply not have them yet.
            if handle.view_at(heads).is_err() {
                r.refresh_for_read(&handle).await;
            }
            let view = handle
                .view_at(heads)
                .with_context(|| format!("the replica does not have the version {url}"))?;
            path::get(&view, path)
        }
    };
    let value = value.with_context(|| format!("cannot read `{path}` in {url}"))?;
    let Some(value) = value else {
        bail!("no value at `{path}` in {url}");
    };
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// `put URL PATH VALUE`.
pub(super) async fn put(
    r: &Replica,
    url: &AutomergeUrl,
    path: &DocPath,
    value: &Json,
) -> anyhow::Result<()> {
    write(r, url, "put", path, |tx| path::put(tx, path, value)).await
}

/// `delete URL PATH`.
pub(super) async fn delete(r: &Replica, url: &AutomergeUrl, path: &DocPath) -> anyhow::Result<()> {
    write(r, url, "delete", path, |tx| path::delete(tx, path)).await
}

/// `text-splice URL PATH POS DEL [TEXT]`.
pub(super) async fn splice(
    r: &Replica,
    url: &AutomergeUrl,
    path: &DocPath,
    pos: usize,
    del: usize,
    text: &str,
) -> anyhow::Result<()> {
    write(r, url, "splice text", path, |tx| {
        path::splice_text(tx, path, pos, del, text)
    })
    .await
}

/// `increment URL PATH [BY]`.
pub(super) async fn increment(
    r: &Replica,
    url: &AutomergeUrl,
    path: &DocPath,
    by: i64,
) -> anyhow::Result<()> {
    write(r, url, "increment", path, |tx| {
        path::increment(tx, path, by)
    })
    .await
}
