//! Concord client core: documents, durable storage, and a sans-IO sync core.
pub mod core;
pub mod id;
pub mod storage;
pub mod wire;

pub use id::{AutomergeUrl, ConnId, DocumentId, IdError, PeerId, StorageId};
pub mod sim;
#[cfg(feature = "native")]
pub mod repo;
#[cfg(feature = "native")]
pub use repo::{DocHandle, Repo, RepoConfig, RepoError};
pub mod path;
