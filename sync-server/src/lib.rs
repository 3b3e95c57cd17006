//! The Concord sync server (`concord serve`) and the `concord doc` client CLI.
pub mod doc;
pub mod server;
