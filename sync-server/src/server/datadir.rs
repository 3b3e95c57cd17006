//! The data directory: created 0700 when missing, refused when group or others can access it
//! (unless `--allow-insecure-data-dir`), and its files kept 0600.

use std::path::Path;

use super::ServerError;
use crate::private_fs;

/// Files of the data directory that must stay private (the database and its WAL and shared
/// memory, the revocation list, the default key file).
const PRIVATE_FILES: [&str; 5] = [
    "concord.db",
    "concord.db-wal",
    "concord.db-shm",
    "revoked.json",
    "auth-keys.json",
];

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::DataDir {
        path: path.to_owned(),
        source,
    }
}

/// Creates or checks `data`, then makes sure the database file exists with mode 0600 before
/// SQLite opens it (SQLite gives `-wal` and `-shm` the mode of the database file).
pub(super) fn prepare(data: &Path, allow_insecure: bool) -> Result<(), ServerError> {
    if data.exists() {
        let shared = private_fs::shared_bits(data).map_err(io(data))?;
        if shared != 0 {
            let mode = private_fs::mode(data).map_err(io(data))?;
            if !allow_insecure {
                return Err(ServerError::DataDirPermissions {
                    path: data.to_owned(),
                    mode,
                });
            }
            tracing::warn!(
                path = %data.display(),
                mode = format!("{mode:o}"),
                "the data directory is accessible by group or others (--allow-insecure-data-dir)"
            );
        }
    } else {
        private_fs::create_dir(data).map_err(io(data))?;
        tracing::info!(path = %data.display(), "created the data directory (mode 0700)");
    }
    for name in PRIVATE_FILES {
        let path = data.join(name);
        // A file we cannot change (say, a read-only mount) is the operator's choice: warn only.
        match private_fs::tighten(&path) {
            Ok(true) => {
                tracing::warn!(path = %path.display(), "was readable by group or others: now 0600");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "is readable by group or others and cannot be made private"
            ),
        }
    }
    let db = data.join("concord.db");
    private_fs::touch(&db).map_err(io(&db))
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_directory_is_private_and_an_open_one_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        prepare(&data, false).unwrap();
        assert_eq!(private_fs::mode(&data).unwrap(), 0o700);
        assert_eq!(private_fs::mode(&data.join("concord.db")).unwrap(), 0o600);

        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = prepare(&data, false).unwrap_err();
        assert!(
            matches!(err, ServerError::DataDirPermissions { mode: 0o755, .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("chmod 700") && text.contains("--allow-insecure-data-dir"));

        std::fs::set_permissions(
            data.join("concord.db"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        prepare(&data, true).unwrap();
        assert_eq!(
            private_fs::mode(&data.join("concord.db")).unwrap(),
            0o600,
            "files are tightened"
        );
    }
}
