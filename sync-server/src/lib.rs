//! The Concord sync server (`concord serve`) and the `concord doc` client CLI.
pub mod auth;
pub mod cluster;
pub mod doc;
mod private_fs;
pub mod server;
