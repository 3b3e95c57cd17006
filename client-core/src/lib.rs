//! # Concord: the engine every replica runs
//!
//! Concord is a CRDT-based, multi-leader, offline-first sync engine built on
//! [Automerge](automerge). Every replica writes to its own store and never waits for anyone;
//! changes travel over WebSockets in the automerge-repo protocol v1.
//!
//! Layers, from the bottom:
//!
//! - [`id`]: document ids (bs58check, `automerge:` URLs, legacy UUIDs), peer and storage ids.
//! - [`wire`]: the protocol v1 messages and their CBOR codec (size limits, typed errors).
//! - [`storage`]: the [`Storage`](storage::Storage) trait (every operation returns `Result`),
//!   SQLite and memory backends, and the conformance suite every backend passes.
//! - [`core`]: the sans-IO sync core. Inputs carry `now`; outputs are [`Effect`](core::Effect)s.
//! - [`repo`] (feature `native`): the tokio driver, [`Repo`] and [`DocHandle`], and the
//!   WebSocket transport (reconnect with backoff and jitter, failover between URLs).
//! - [`sim`]: a seeded, deterministic network of cores for tests and simulations.
//! - [`path`]: JSON reads and writes at paths such as `todos/0/title`.
//! - [`api`]: the server's JSON API (document lists, change authors) as clients see it.
//! - [`history`]: the change log, diffs between versions as JSON patches, and restoring a version.
//!
//! ## The driving loop
//!
//! Whatever the platform, a driver does the same four things: feed inputs to the core, drain its
//! effects, execute them, and report storage results back. With storage executed inline:
//!
//! ```
//! use concord::core::{Core, CoreConfig, Effect, StorageOp, StorageReply};
//! use concord::storage::MemoryStorage;
//! use concord::{DocumentId, PeerId};
//! use automerge::{ROOT, transaction::Transactable};
//!
//! let disk = MemoryStorage::new();
//! let mut core = Core::new(CoreConfig::new(PeerId::from("me"), Some("my-store".into()), 42));
//! let doc = DocumentId::from_bytes([7; 16]);
//! let now = 0; // milliseconds on the driver's monotonic clock
//! core.create(now, doc).unwrap();
//! core.change(now, &doc, |tx| tx.put(ROOT, "hello", "world")).unwrap();
//!
//! // The loop: drain effects, execute them, feed results back, until the core is idle.
//! while let Some(effect) = core.poll_effect() {
//!     match effect {
//!         Effect::Storage { id, op } => {
//!             let result = match op {
//!                 StorageOp::Append { doc, key, bytes } => disk.append_sync(&doc, key, &bytes).map(|()| StorageReply::Done),
//!                 StorageOp::Load { doc } => disk.load_sync(&doc).map(StorageReply::Loaded),
//!                 other => unimplemented!("not reached in this example: {other:?}"),
//!             };
//!             core.handle_storage_result(now, id, result);
//!         }
//!         Effect::Send { .. } | Effect::Close { .. } => {} // no connections here
//!         Effect::Event(event) => println!("{event:?}"),   // DocChanged, Committed, ...
//!         _ => {}
//!     }
//! }
//! assert!(core.is_idle());
//! assert!(!disk.load_sync(&doc).unwrap().is_empty()); // committed
//! ```
//!
//! The [`core`] module docs show two peers syncing; [`Repo`] is this loop on tokio.
pub mod api;
pub mod core;
pub mod id;
pub mod storage;
pub mod wire;

pub use id::{AutomergeUrl, ConnId, DocumentId, IdError, PeerId, StorageId};
#[cfg(feature = "native")]
pub mod repo;
pub mod sim;
#[cfg(feature = "native")]
pub use repo::{DocHandle, Repo, RepoConfig, RepoError};
pub mod history;
pub mod path;
pub mod policy;
