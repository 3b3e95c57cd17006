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
}
