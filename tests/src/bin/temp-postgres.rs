//! A throwaway PostgreSQL server ([`concord_tests::pg::TempPostgres`]) for tests written in other
//! languages (the JS cluster interop test).
//!
//! Usage: `temp-postgres`. Prints `URL postgres://...` once the server accepts connections, then
//! keeps it until its standard input closes (the parent exited, even by SIGKILL) or 10 minutes
//! passed; then stops the server and removes its directory.

use std::io::{Read, Write};

fn main() -> anyhow::Result<()> {
    let pg = concord_tests::pg::TempPostgres::start()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "URL {}", pg.url())?;
        out.flush()?;
    }
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = done.send(());
    });
    let _ = wait.recv_timeout(std::time::Duration::from_secs(600));
    drop(pg);
    Ok(())
}
