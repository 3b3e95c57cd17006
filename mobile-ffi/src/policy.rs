//! Conflict policies on a document (`concord::policy`): resolved reads, conflict inspection and
//! resolution. Policies are given per call as `PATTERN=POLICY` specs (`name=lww`,
//! `cart/items=add-wins-set`, `counters/*=counter`, `title=keep-conflicts`).

use concord::policy::{Candidate, PolicyError, Schema, SchemaError};

use crate::doc::DocHandle;
use crate::edit::parse_path;
use crate::error::{ConcordError, Result};
use crate::runtime::run;

fn schema(specs: &[String]) -> Result<Schema> {
    let mut schema = Schema::new();
    for spec in specs {
        schema.register_spec(spec).map_err(|e: SchemaError| {
            ConcordError::InvalidArgument(format!("policy `{spec}`: {e}"))
        })?;
    }
    Ok(schema)
}

impl From<PolicyError> for ConcordError {
    fn from(e: PolicyError) -> Self {
        let msg = e.to_string();
        match e {
            PolicyError::TypeMismatch { .. } => Self::WrongType(msg),
            _ => Self::InvalidArgument(msg),
        }
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl DocHandle {
    /// The value at `path` as JSON, resolved by `policies` (the same on every replica with the
    /// same heads, whatever the arrival order).
    pub fn get_resolved(&self, path: String, policies: Vec<String>) -> Result<String> {
        let path = parse_path(&path)?;
        let schema = schema(&policies)?;
        let value = self.inner().resolved(&schema, &path)?;
        serde_json::to_string(&value).map_err(ConcordError::from)
    }

    /// The concurrent values at `path` as a JSON array of `{value, actor, hlc, change, ...}`
    /// (empty when there is no conflict).
    pub fn conflicts_json(&self, path: String) -> Result<String> {
        let path = parse_path(&path)?;
        let list: Vec<serde_json::Value> = self
            .inner()
            .conflicts(&path)?
            .iter()
            .map(Candidate::to_json)
            .collect();
        serde_json::to_string(&list).map_err(ConcordError::from)
    }

    /// Writes `json` at `path`, superseding every concurrent value there (as `policies` say how
    /// the path is represented, e.g. a set).
    pub async fn resolve(&self, path: String, json: String, policies: Vec<String>) -> Result<()> {
        let path = parse_path(&path)?;
        let schema = schema(&policies)?;
        let value: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| ConcordError::InvalidJson(e.to_string()))?;
        let handle = self.inner().clone();
        run(async move { Ok(handle.resolve(&schema, &path, &value).await?) }).await
    }
}
