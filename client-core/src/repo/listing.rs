//! Listing documents: the ones in local storage ([`Repo::list_local`]) and the ones a server
//! keeps for this replica's principal ([`Repo::list_remote`], `GET /v1/docs`); who wrote which
//! change ([`Repo::fetch_authors`]). See [`crate::api`] for the JSON API.

use std::time::Duration;

use serde_json::Value as Json;

use super::remote::{Endpoint, RemoteError};
use super::{Repo, RepoError};
use crate::api::{self, ListQuery, RemotePage};
use crate::id::DocumentId;
use crate::storage::{ChangeAuthor, StorageError};

/// How long a JSON API request may take.
const API_TIMEOUT: Duration = Duration::from_secs(30);

impl Repo {
    /// The documents stored in this replica's local storage.
    pub async fn list_local(&self) -> Result<Vec<DocumentId>, RepoError> {
        Ok(self.shared.storage.list().await?)
    }

    /// Tries each configured server's JSON API in order until one answers (a refusal or a
    /// not-found is an answer).
    async fn api_get(&self, path_and_query: &str) -> Result<Json, RemoteError> {
        let mut last = RemoteError::NoServer;
        for url in &self.config.servers {
            match Endpoint::from_server(url)?
                .get_json(path_and_query, API_TIMEOUT)
                .await
            {
                Err(e @ (RemoteError::Unreachable { .. } | RemoteError::Timeout(_))) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    /// One page of the documents the server keeps for this replica's principal: those its
    /// token names explicitly, then those it created (`GET /v1/docs` on the first configured
    /// server that answers, with the token of its URL). Never another principal's documents.
    pub async fn list_remote(&self, query: &ListQuery) -> Result<RemotePage, RepoError> {
        let json = self.api_get(&query.path()).await?;
        Ok(api::parse_page(&json).map_err(RemoteError::from)?)
    }

    /// Asks the server who wrote the changes of `doc` (`GET /v1/docs/{id}/authors`; the token
    /// must cover the document) and keeps the answer in local storage, where
    /// [`DocHandle::history`](super::DocHandle::history) finds it. Storage that keeps no
    /// authors only returns them.
    ///
    /// Errors: [`RepoError::Deleted`] when the server says the document was deleted;
    /// [`RemoteError::NotFound`] when the token cannot read it (or it does not exist).
    pub async fn fetch_authors(&self, doc: DocumentId) -> Result<Vec<ChangeAuthor>, RepoError> {
        let json = match self.api_get(&api::authors_path(&doc)).await {
            Err(RemoteError::Status { status: 410, .. }) => return Err(RepoError::Deleted(doc)),
            other => other?,
        };
        let authors = api::parse_authors(&json).map_err(RemoteError::from)?;
        match self.shared.storage.put_authors(&doc, &authors).await {
            Ok(()) | Err(StorageError::Unsupported(_)) => Ok(authors),
            Err(e) => Err(e.into()),
        }
    }

    /// Erases `doc` on the server side, as an admin (`DELETE /admin/docs/{id}?purge=true`):
    /// the document is deleted everywhere and every server and region drops its stored bytes
    /// at once instead of after the retention period. The token of the first configured
    /// server's URL must carry the admin claim. `admin` is the admin listener when the server
    /// serves the admin API apart (`--admin-bind`; e.g. `http://127.0.0.1:3031`), else the
    /// server's own address is used. Local copies are the caller's to purge
    /// ([`Repo::purge_deleted`]).
    ///
    /// Errors: [`RemoteError::Denied`] without admin rights, [`RemoteError::NotFound`] when
    /// the server never stored the document.
    pub async fn erase_remote(
        &self,
        doc: DocumentId,
        admin: Option<&str>,
    ) -> Result<(), RepoError> {
        let server = self.config.servers.first().ok_or(RemoteError::NoServer)?;
        let endpoint = Endpoint::from_server(server)?;
        let endpoint = match admin {
            Some(url) => Endpoint::from_server(url)?.or_token(endpoint.token()),
            None => endpoint,
        };
        let path = format!("/admin/docs/{doc}?purge=true");
        let json = endpoint.delete_json(&path, API_TIMEOUT).await?;
        if json.get("purged").and_then(Json::as_bool) == Some(true) {
            Ok(())
        } else {
            Err(RemoteError::from(api::ResponseError(format!(
                "the server did not confirm the erasure: {json}"
            )))
            .into())
        }
    }
}
