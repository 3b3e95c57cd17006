//! Helpers shared by the multi-process tests: spawning the helper binaries and reading their lines.
#![allow(clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};

/// A child process whose stdout is read line by line.
#[derive(Debug)]
pub struct Proc {
    /// The child.
    pub child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl Proc {
    /// Spawns `bin` with `args`, stdout piped.
    pub fn spawn(bin: &str, args: &[&str]) -> std::io::Result<Self> {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(Self {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next stdout line (`None` at EOF).
    pub fn line(&mut self) -> Option<String> {
        self.lines.next().and_then(Result::ok)
    }

    /// Reads lines until one starts with `prefix`; returns the rest of it.
    pub fn expect(&mut self, prefix: &str) -> Option<String> {
        while let Some(l) = self.line() {
            if let Some(rest) = l.strip_prefix(prefix) {
                return Some(rest.trim().to_owned());
            }
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
