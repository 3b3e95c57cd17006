//! `log URL`, `diff URL FROM TO`, `restore URL HEADS` and `ls`: a document's versions and the
//! documents a principal has (see `concord::history` and `concord::api`).
//!
//! ```text
//! $ concord doc log automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ --limit 2
//! {"actor":"…","author":{"at_ms":1764934500123,"principal":"alice"},"deps":["…"],"hash":"3xM…",…}
//! {"actor":"…","author":{"at_ms":1764934499876,"principal":"bob"},"deps":[],"hash":"9Qa…",…}
//! more: --after 9Qa…
//! $ concord doc diff automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ 9Qa… 3xM…
//! [{"action": "put", "path": "/title", "value": "final"}]
//! $ concord doc restore automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ 9Qa…
//! restored automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ#7hD…
//! $ concord doc ls
//! automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ    created
//! ```

use anyhow::{Context, bail};
use automerge::ChangeHash;
use concord::api::ListQuery;
use concord::history::{HistoryQuery, parse_heads};
use concord::id::encode_head;
use concord::{AutomergeUrl, DocHandle};

use super::replica::{Replica, warn};

/// Most pages `ls` reads before it stops (each up to 1000 documents).
const MAX_LIST_PAGES: usize = 10_000;

/// Heads as typed on the command line (see [`parse_heads`]).
pub(super) fn heads_arg(s: &str) -> Result<Vec<ChangeHash>, String> {
    parse_heads(s).map_err(|e| {
        format!("{e} (heads are bs58 change hashes separated by `|` or `,`, as `log` prints them)")
    })
}

/// The URL of the document at `heads`.
fn at(handle: &DocHandle, heads: Vec<ChangeHash>) -> AutomergeUrl {
    AutomergeUrl {
        document_id: handle.id(),
        heads: Some(heads),
    }
}

/// Opens the document and brings it up to date (online), for reading its history.
async fn open_for_read(r: &Replica, url: &AutomergeUrl) -> anyhow::Result<DocHandle> {
    let handle = r.open_doc(url).await?;
    r.refresh_for_read(&handle).await;
    Ok(handle)
}

/// `log URL`: one JSON line per change, newest first (of the version at the URL's heads, if
/// any); `more: --after HASH` on stderr when more pages follow. Online, the authors are asked
/// from the server first.
pub(super) async fn log(
    r: &Replica,
    url: &AutomergeUrl,
    limit: Option<usize>,
    after: Option<ChangeHash>,
) -> anyhow::Result<()> {
    let handle = open_for_read(r, url).await?;
    if r.online()
        && let Err(e) = r.repo().fetch_authors(handle.id()).await
    {
        warn(format_args!(
            "authors unknown (the server did not say): {e}"
        ));
    }
    let mut query = HistoryQuery::new();
    if let Some(l) = limit {
        query = query.limit(l);
    }
    if let Some(c) = after {
        query = query.after(c);
    }
    if let Some(h) = &url.heads {
        query = query.at(h.clone());
    }
    let page = handle
        .history(&query)
        .await
        .with_context(|| format!("cannot list the history of {}", handle.url()))?;
    for change in &page.changes {
        println!("{}", change.to_json(encode_head));
    }
    if let Some(next) = page.next {
        eprintln!("more: --after {}", encode_head(&next));
    }
    Ok(())
}

/// `diff URL FROM TO`: the JSON patches from one version to the other, as a JSON array.
pub(super) async fn diff(
    r: &Replica,
    url: &AutomergeUrl,
    from: &[ChangeHash],
    to: &[ChangeHash],
) -> anyhow::Result<()> {
    let handle = open_for_read(r, url).await?;
    let patches = handle
        .diff(from, to)
        .with_context(|| format!("cannot diff versions of {}", handle.url()))?;
    println!("{}", serde_json::to_string_pretty(&patches)?);
    Ok(())
}

/// `restore URL HEADS`: one new change that makes the document equal to the version at HEADS;
/// prints the URL of the new version (or says it was already equal).
pub(super) async fn restore(
    r: &Replica,
    url: &AutomergeUrl,
    heads: &[ChangeHash],
) -> anyhow::Result<()> {
    if url.heads.is_some() {
        bail!(
            "{url} names a fixed version of the document (`#heads`); pass the document's URL and \
             the version to restore as HEADS"
        );
    }
    let handle = r.open_doc(url).await?;
    r.catch_up(&handle).await;
    let changed = handle
        .restore(heads)
        .await
        .with_context(|| format!("cannot restore {}", handle.url()))?;
    if changed {
        println!("restored {}", at(&handle, handle.heads()?));
        r.confirm_write(&handle).await
    } else {
        println!("unchanged: {} already equals that version", handle.url());
        Ok(())
    }
}

/// `ls`: the documents the server keeps for the token's principal (`URL<TAB>grant|created`), or
/// with `local` the documents of the local replica (`URL`).
pub(super) async fn ls(r: &Replica, local: bool, page_size: Option<usize>) -> anyhow::Result<()> {
    if local {
        let mut docs = r.repo().list_local().await?;
        docs.sort();
        for doc in docs {
            println!("{}", doc.url());
        }
        return Ok(());
    }
    if !r.online() {
        bail!("listing a server's documents needs a server (use --local for the local replica)");
    }
    let mut query = ListQuery::new();
    if let Some(n) = page_size {
        query = query.limit(n);
    }
    for _ in 0..MAX_LIST_PAGES {
        let page = r
            .repo()
            .list_remote(&query)
            .await
            .with_context(|| format!("cannot list documents on {}", r.servers()))?;
        for d in &page.documents {
            println!("{}\t{}", d.doc.url(), d.source.as_str());
        }
        match page.next {
            Some(c) => query = query.after(c),
            None => return Ok(()),
        }
    }
    bail!("stopped after {MAX_LIST_PAGES} pages")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn heads_arguments_parse_or_say_what_heads_look_like() {
        let h = ChangeHash([3; 32]);
        let typed = encode_head(&h);
        assert_eq!(heads_arg(&typed).unwrap(), vec![h]);
        assert_eq!(heads_arg(&format!("{typed}|{typed}")).unwrap(), vec![h, h]);
        assert_eq!(heads_arg("").unwrap(), Vec::<ChangeHash>::new());
        let e = heads_arg("not-a-hash").unwrap_err();
        assert!(e.contains("as `log` prints them"), "{e}");
    }
}
