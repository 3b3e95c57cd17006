//! Files only their owner can read: the data directory is created 0700 and every file the
//! server or the CLI writes there (`concord.db` and its `-wal`/`-shm`, `revoked.json`,
//! `auth-keys.json`) 0600, whatever the umask. An existing data directory that group or others
//! can enter is refused (as PostgreSQL does) unless the operator overrides it.
//!
//! On non-Unix systems the permission bits do not exist and these functions only create.

use std::io::Write;
use std::path::Path;

/// Creates `dir` (and missing parents) with mode 0700; an existing directory is left alone.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

fn options() -> std::fs::OpenOptions {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts
}

/// Writes a new file with mode 0600; fails with `AlreadyExists` if it exists.
pub fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = options().create_new(true).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Replaces `path` atomically (a 0600 temporary file renamed over it), so readers never see half.
pub fn replace(path: &Path, text: &str) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    // A temporary file left by a crash is overwritten (its mode is tightened below).
    let mut f = options().create(true).truncate(true).open(&tmp)?;
    tighten(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Creates `path` empty with mode 0600 if it does not exist (an empty file is a valid new
/// SQLite database, and SQLite gives its `-wal` and `-shm` files the database file's mode).
pub fn touch(path: &Path) -> std::io::Result<()> {
    match options().create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The permission bits of `path` that group or others hold (0 when private, or not Unix).
pub fn shared_bits(path: &Path) -> std::io::Result<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o077)
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).map(|_| 0)
    }
}

/// The full permission bits of `path` (for messages).
pub fn mode(path: &Path) -> std::io::Result<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).map(|_| 0o700)
    }
}

/// Removes group and other permissions from an existing file (no-op when already private or
/// missing). Returns whether it changed anything.
pub fn tighten(path: &Path) -> std::io::Result<bool> {
    match shared_bits(path) {
        Ok(0) => Ok(false),
        Ok(_) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let m = mode(path)? & 0o700;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(m))?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn perm(p: &Path) -> u32 {
        mode(p).unwrap()
    }

    #[test]
    fn everything_created_is_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(perm(&dir), 0o700);
        let f = dir.join("f.json");
        write_new(&f, "{}").unwrap();
        assert_eq!(perm(&f), 0o600);
        assert_eq!(
            write_new(&f, "{}").unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists
        );
        let r = dir.join("r.json");
        replace(&r, "1").unwrap();
        replace(&r, "2").unwrap();
        assert_eq!(perm(&r), 0o600);
        assert_eq!(std::fs::read_to_string(&r).unwrap(), "2");
        let db = dir.join("db");
        touch(&db).unwrap();
        touch(&db).unwrap();
        assert_eq!(perm(&db), 0o600);
    }

    #[test]
    fn shared_files_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let f = root.path().join("open");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(shared_bits(&f).unwrap(), 0o044);
        assert!(tighten(&f).unwrap());
        assert_eq!(perm(&f), 0o600);
        assert!(!tighten(&f).unwrap());
        assert!(!tighten(&root.path().join("missing")).unwrap());
    }
}
