//! A throwaway PostgreSQL server for tests: `initdb` + `pg_ctl` of the system's PostgreSQL into a
//! temporary directory, on a free loopback port, stopped and removed when dropped.
//!
//! ```no_run
//! let pg = concord_tests::pg::TempPostgres::start().expect("a PostgreSQL server");
//! let url = pg.url(); // postgres://concord:<password>@127.0.0.1:<port>/concord
//! let other = pg.create_database("second").expect("a second database");
//! pg.restart().expect("pg_ctl restart -m fast");
//! ```
//!
//! - The binaries come from `/usr/lib/postgresql/<newest>/bin` (Debian's `postgresql` package;
//!   `CONCORD_PG_BIN` overrides the directory).
//! - PostgreSQL refuses to run as root: when the tests run as root (CI), the server runs as the
//!   `postgres` system user through `runuser`, in a directory under `/tmp` owned by that user.
//! - Clients connect over TCP on 127.0.0.1 with a password (`scram-sha-256`), so wrong
//!   credentials are refused as they would be in production; the unix socket lives in the
//!   temporary directory (local connections are trusted, for the harness's own `createdb`).
//! - Nothing depends on a server the machine may already run.

use std::fmt;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

/// The superuser the harness creates.
pub const USER: &str = "concord";
/// The database [`TempPostgres::url`] names.
pub const DATABASE: &str = "concord";

/// A running throwaway PostgreSQL server.
pub struct TempPostgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    password: String,
    /// Run the binaries as the `postgres` system user (we are root).
    as_postgres: bool,
}

impl fmt::Debug for TempPostgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TempPostgres")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl TempPostgres {
    /// Creates, starts and waits for a server with PostgreSQL's default settings, and creates
    /// the database [`DATABASE`].
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// [`TempPostgres::start`] with extra `postgresql.conf` settings (`("fsync", "off")`, ...).
    pub fn start_with(settings: &[(&str, &str)]) -> Result<Self> {
        Self::start_inner(settings, false)
    }

    /// A server that also accepts TLS, with a certificate for `127.0.0.1` and `localhost` signed
    /// by a fresh certificate authority ([`TempPostgres::ca_file`]), made with `openssl`.
    pub fn start_with_tls() -> Result<Self> {
        Self::start_inner(&[], true)
    }

    /// The certificate authority of a [`TempPostgres::start_with_tls`] server (clients trust it
    /// with `sslrootcert=<this file>`).
    pub fn ca_file(&self) -> PathBuf {
        self.data().join("ca.crt")
    }

    fn start_inner(settings: &[(&str, &str)], tls: bool) -> Result<Self> {
        let bin = bin_dir()?;
        let as_postgres = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        // Under root the server's user must reach the directory: /tmp is open to everyone,
        // $TMPDIR may not be.
        let base = if as_postgres {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("concord-pg-")
            .tempdir_in(base)?;
        // A throwaway server on loopback: a password unique per run is enough.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let password = format!("pw-{}-{nanos}", std::process::id());
        let mut pg = Self {
            dir,
            bin,
            port: 0,
            password,
            as_postgres,
        };
        pg.init(settings)?;
        if tls {
            pg.make_certificate()?;
        }
        // Another process may take the port between choosing it and binding it: try again.
        let mut last = None;
        for _ in 0..5 {
            pg.port = free_port()?;
            pg.write_port()?;
            match pg.pg_ctl(&["start", "-w", "-t", "60", "-l"], Some(&pg.log_path())) {
                Ok(()) => {
                    pg.createdb(DATABASE)?;
                    return Ok(pg);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
    }

    /// `postgres://concord:<password>@127.0.0.1:<port>/concord`.
    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// The URL of database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// The URL of [`DATABASE`] with a wrong password.
    pub fn url_with_wrong_password(&self) -> String {
        format!("postgres://{USER}:wrong@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        self.createdb(name)?;
        Ok(self.url_for(name))
    }

    /// `pg_ctl restart -m fast`: every connection is terminated, the server comes back on the same
    /// port with everything committed.
    pub fn restart(&self) -> Result<()> {
        self.pg_ctl(
            &["restart", "-m", "fast", "-w", "-t", "60", "-l"],
            Some(&self.log_path()),
        )
    }

    /// `pg_ctl stop -m fast`: the server is down until [`TempPostgres::start_again`].
    pub fn stop(&self) -> Result<()> {
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"], None)
    }

    /// Starts a stopped server again on the same port.
    pub fn start_again(&self) -> Result<()> {
        self.pg_ctl(&["start", "-w", "-t", "60", "-l"], Some(&self.log_path()))
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// `initdb` with a password for TCP and trust on the unix socket, then the settings.
    fn init(&self, settings: &[(&str, &str)]) -> Result<()> {
        let pwfile = self.dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{}\n", self.password))?;
        std::fs::create_dir(self.socket_dir())?;
        if self.as_postgres {
            let (uid, gid) = postgres_ids()?;
            for p in [self.dir.path(), &pwfile, &self.socket_dir()] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .with_context(|| format!("chown {} to postgres", p.display()))?;
            }
        }
        let data = self.data();
        let out = self.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                USER.as_ref(),
                format!("--pwfile={}", pwfile.display()).as_ref(),
                "--auth-local=trust".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        check("initdb", &out)?;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        writeln!(conf, "\n# concord test harness")?;
        writeln!(conf, "listen_addresses = '127.0.0.1'")?;
        writeln!(
            conf,
            "unix_socket_directories = '{}'",
            self.socket_dir().display()
        )?;
        writeln!(conf, "max_connections = 200")?;
        for (k, v) in settings {
            writeln!(conf, "{k} = '{v}'")?;
        }
        Ok(())
    }

    /// A certificate authority, a server certificate it signed (for `127.0.0.1` and
    /// `localhost`), and `ssl = on`.
    fn make_certificate(&self) -> Result<()> {
        let data = self.data();
        let openssl = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&data)
                .output()
                .context("running openssl")?;
            check("openssl", &out)
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509", "-days", "2", "-subj", "/CN=concord test CA"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.crt"],
            ]
            .concat(),
        )?;
        openssl(
            &[
                &["req", "-new", "-subj", "/CN=localhost"],
                &ec[..],
                &["-keyout", "server.key", "-out", "server.csr"],
            ]
            .concat(),
        )?;
        std::fs::write(
            data.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ])?;
        let key = data.join("server.key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        if self.as_postgres {
            let (uid, gid) = postgres_ids()?;
            for f in [&key, &data.join("server.crt")] {
                std::os::unix::fs::chown(f, Some(uid), Some(gid))?;
            }
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        writeln!(conf, "ssl = on")?;
        Ok(())
    }

    /// Sets the port in `postgresql.conf` (the last setting wins).
    fn write_port(&self) -> Result<()> {
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))?;
        writeln!(conf, "port = {}", self.port)?;
        Ok(())
    }

    fn createdb(&self, name: &str) -> Result<()> {
        let port = self.port.to_string();
        let sock = self.socket_dir();
        let out = self.run(
            "createdb",
            &[
                "-h".as_ref(),
                sock.as_os_str(),
                "-p".as_ref(),
                port.as_ref(),
                "-U".as_ref(),
                USER.as_ref(),
                name.as_ref(),
            ],
        )?;
        check("createdb", &out)
    }

    /// `pg_ctl -D <data> <args> [<log>]`.
    fn pg_ctl(&self, args: &[&str], log: Option<&Path>) -> Result<()> {
        let data = self.data();
        let mut all: Vec<&std::ffi::OsStr> = vec!["-D".as_ref(), data.as_os_str()];
        all.extend(args.iter().map(std::ffi::OsStr::new));
        if let Some(log) = log {
            all.push(log.as_os_str());
        }
        let out = self.run("pg_ctl", &all)?;
        check("pg_ctl", &out).map_err(|e| e.context(self.log()))
    }

    /// Runs one of the server's binaries, as `postgres` when we are root.
    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<Output> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        // The server must not inherit the test's stdout (a test reading a child's output would
        // wait for the server to exit).
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null());
        cmd.output()
            .with_context(|| format!("running {}", exe.display()))
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        // Throwaway data: the quickest shutdown. The directory goes with `self.dir`.
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"], None);
    }
}

fn check(what: &str, out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The newest `/usr/lib/postgresql/*/bin` with `initdb` and `pg_ctl`, or `$CONCORD_PG_BIN`.
fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CONCORD_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: install Debian's postgresql package")?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .context("no initdb and pg_ctl under /usr/lib/postgresql/*/bin")
}

/// The uid and gid of the `postgres` system user.
fn postgres_ids() -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .context("no postgres user (install Debian's postgresql package)")
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
