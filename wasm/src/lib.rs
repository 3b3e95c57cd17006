//! # Concord in the browser
//!
//! WebAssembly bindings (wasm-bindgen) for Concord's sans-IO core: documents stored in
//! IndexedDB, synced with `concord serve` (or any automerge-repo v1 server) over the browser's
//! WebSocket, with reconnect, backoff and failover between server URLs.
//!
//! ```js
//! import init, { Repo } from "./pkg/web/concord_wasm.js";
//! await init();
//! const repo = await Repo.open({
//!   database: "my-app",                       // IndexedDB; omit for in-memory
//!   servers: ["wss://sync.example.com/sync"], // one connection, failover in order
//!   token: "eyJ...",                          // from `concord token create`
//! });
//! const doc = await repo.create({ title: "" });
//! await doc.spliceText("title", 0, 0, "hello"); // resolves once in IndexedDB
//! doc.on("change", ({ heads, origin }) => console.log(origin, doc.toJSON()));
//! repo.on("status", ({ status }) => console.log(status)); // offline|connected|syncing|synced
//! await doc.waitDurable("server");           // a server holds these heads
//! const same = await repo.find(doc.url);
//!
//! // Deleting: here at once, everywhere through the servers (delete wins over offline edits).
//! same.on("deleted", ({ by, origin }) => console.log(`deleted by ${by} (${origin})`));
//! await doc.delete();                        // without a path: the whole document
//! try { await repo.find(doc.url); } catch (e) { console.log(e.kind); } // "deleted"
//! ```
//!
//! Every error is an `Error` with a `kind` (`argument`, `url`, `closed`, `quota`, `storage`,
//! `unavailable`, `deleted`, `history`, `network`, `denied`, `path`, `policy`, `change`, `timeout`, `unsupported`); see [`Error`].
//!
//! Modules: [`repo`] and [`handle`] are the JavaScript API ([`history`]: versions, [`listing`]:
//! document lists), [`idb`] the IndexedDB storage
//! backend, [`transport`] the WebSocket client, [`driver`] runs the core on the event loop.
//! Everything is compiled for `wasm32` only; on other targets this crate is empty.
#![cfg(target_arch = "wasm32")]

pub mod builder;
pub mod driver;
pub mod durable;
pub mod emitter;
pub mod error;
pub mod handle;
pub mod history;
pub mod idb;
pub mod idb_request;
pub mod js;
pub mod listing;
pub mod ops;
pub mod presence;
pub mod repo;
pub mod status;
pub mod transport;

pub use error::Error;
pub use handle::DocHandle;
pub use idb::IdbStorage;
pub use repo::Repo;
