//! `watch URL`: one JSON line per change of a document.

use std::time::Duration;

use anyhow::bail;
use concord::core::Origin;
use concord::id::encode_head;
use concord::path::{self, DocPath};
use concord::repo::DocEvent;
use concord::{AutomergeUrl, DocHandle};
use serde_json::{Value as Json, json};
use tokio::sync::broadcast::error::RecvError;

use super::replica::{Replica, warn};

/// The line printed for one change: the new heads, where it came from, and the document then.
fn change_line(
    handle: &DocHandle,
    heads: &[automerge::ChangeHash],
    origin: &Origin,
) -> anyhow::Result<String> {
    let value = match handle.view_at(heads) {
        Ok(view) => path::get(&view, &DocPath::root())?,
        Err(_) => Some(handle.to_json()?),
    };
    let origin = match origin {
        Origin::Local => "local",
        _ => "remote",
    };
    let line = json!({
        "heads": heads.iter().map(encode_head).collect::<Vec<_>>(),
        "origin": origin,
        "value": value.unwrap_or(Json::Null),
    });
    Ok(line.to_string())
}

/// Watches until Ctrl-C, `count` changes, or `limit` (when given) has passed.
pub(super) async fn watch(
    r: &Replica,
    url: &AutomergeUrl,
    count: Option<u64>,
    limit: Option<Duration>,
) -> anyhow::Result<()> {
    if !r.online() {
        bail!(
            "watch needs a server: changes from other replicas arrive through it (drop --offline)"
        );
    }
    if url.heads.is_some() {
        bail!(
            "{url} names a fixed version (`#heads`), which never changes; watch {}",
            url.document_id.url()
        );
    }
    let end = limit.and_then(|l| tokio::time::Instant::now().checked_add(l));
    let handle = r.open_doc(url).await?;
    r.refresh_for_read(&handle).await;
    let mut events = handle.subscribe();
    eprintln!("watching {} (Ctrl-C to stop)", url.document_id.url());
    let mut seen = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let deadline = async {
        match end {
            Some(end) => tokio::time::sleep_until(end).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    while count.is_none_or(|n| seen < n) {
        tokio::select! {
            event = events.recv() => match event {
                Ok(DocEvent::Changed { heads, origin }) => {
                    println!("{}", change_line(&handle, &heads, &origin)?);
                    seen += 1;
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => warn(format_args!("{n} changes were too quick to print one by one")),
                Err(RecvError::Closed) => bail!("the replica closed while watching"),
            },
            _ = &mut ctrl_c => return Ok(()),
            () = &mut deadline => match count {
                Some(n) => bail!("timed out after {:?} having seen {seen} of {n} changes", limit.unwrap_or_default()),
                None => return Ok(()),
            },
        }
    }
    Ok(())
}
