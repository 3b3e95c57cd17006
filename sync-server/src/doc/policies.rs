//! Conflict policies in the CLI: `--policy PATTERN=POLICY`, `get --resolved`, `conflicts`,
//! `resolve`.

use anyhow::{Context, bail};
use concord::AutomergeUrl;
use concord::path::DocPath;
use concord::policy::Schema;
use serde_json::Value as Json;

use super::replica::Replica;

/// Builds the schema from `--policy` specs such as `todos/*/title=lww` or `cart/items=add-wins-set`.
pub(super) fn schema(specs: &[String]) -> anyhow::Result<Schema> {
    let mut schema = Schema::new();
    for spec in specs {
        schema
            .register_spec(spec)
            .with_context(|| format!("invalid --policy `{spec}`"))?;
    }
    Ok(schema)
}

/// `get --resolved URL [PATH]`: the value as the policies resolve it.
pub(super) async fn get_resolved(
    r: &Replica,
    url: &AutomergeUrl,
    path: &DocPath,
    schema: &Schema,
) -> anyhow::Result<()> {
    if url.heads.is_some() {
        bail!("--resolved reads the current version; drop the #heads part of the URL");
    }
    let handle = r.open_doc(url).await?;
    r.refresh_for_read(&handle).await;
    let value = handle
        .resolved(schema, path)
        .with_context(|| format!("cannot resolve `{path}` in {url}"))?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// `conflicts URL PATH`: every concurrent value with who wrote it, when (HLC) and in which change.
pub(super) async fn conflicts(
    r: &Replica,
    url: &AutomergeUrl,
    path: &DocPath,
) -> anyhow::Result<()> {
    let handle = r.open_doc(url).await?;
    r.refresh_for_read(&handle).await;
    let candidates = handle
        .conflicts(path)
        .with_context(|| format!("cannot list conflicts at `{path}` in {url}"))?;
    let list: Vec<Json> = candidates
        .iter()
        .map(concord::policy::Candidate::to_json)
        .collect();
    println!("{}", serde_json::to_string_pretty(&Json::Array(list))?);
    Ok(())
}

/// `resolve URL PATH VALUE`: writes VALUE, superseding every concurrent value at PATH.
pub(super) async fn resolve(
    r: &Replica,
    url: &AutomergeUrl,
    path: &DocPath,
    value: &Json,
    schema: &Schema,
) -> anyhow::Result<()> {
    let handle = r.open_doc(url).await?;
    r.catch_up(&handle).await;
    handle
        .resolve(schema, path, value)
        .await
        .with_context(|| format!("cannot resolve `{path}` in {}", url.document_id.url()))?;
    r.confirm_write(&handle).await
}
