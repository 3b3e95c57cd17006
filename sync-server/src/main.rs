//! `concord`: the Concord sync server and client CLI.
fn main() {}
