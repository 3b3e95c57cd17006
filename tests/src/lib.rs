//! Helpers shared by the multi-process tests: spawning the helper binaries and reading their lines,
//! and a throwaway PostgreSQL server ([`pg::TempPostgres`]).
#![allow(clippy::expect_used, clippy::panic)]

pub mod cluster;
pub mod pg;
pub mod proxy;
pub mod region;
pub mod writers;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

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
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Self::spawn_cmd(cmd)
    }

    /// Spawns `cmd`, stdout piped, stderr inherited.
    pub fn spawn_cmd(mut cmd: Command) -> std::io::Result<Self> {
        let mut child = cmd
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

/// Builds (if needed) and locates the `concord` binary of the calling test's target directory.
///
/// The binary belongs to another package (`concord-server`), so cargo does not build it for these
/// tests on its own: the first call runs `cargo build -p concord-server --bin concord` (a no-op
/// when it is fresh). `CONCORD_BIN` overrides it.
pub fn concord_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CONCORD_BIN") {
            return PathBuf::from(bin);
        }
        // target/<profile>/deps/<test>-HASH -> target/<profile>/concord
        let exe = std::env::current_exe().expect("the test executable has a path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from target/<profile>/deps")
            .to_path_buf();
        let bin = profile_dir.join(format!("concord{}", std::env::consts::EXE_SUFFIX));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "concord-server",
            "--bin",
            "concord",
        ]);
        build.arg("--manifest-path").arg(&manifest);
        if let Some(target_dir) = profile_dir.parent() {
            build.arg("--target-dir").arg(target_dir);
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .status()
            .expect("run cargo to build the concord binary");
        assert!(status.success(), "building the concord binary failed");
        assert!(bin.exists(), "no concord binary at {}", bin.display());
        bin
    })
}
