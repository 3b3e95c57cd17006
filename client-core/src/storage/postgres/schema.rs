//! Embedded migrations, each set with its own migrations table, and the explicit check that the
//! database is not newer than this binary.

use sqlx::PgPool;
use sqlx::migrate::Migrator;

use super::config::one_line;
use super::error::PgOpenError;

/// The migrations table of the storage schema.
pub const STORAGE_TABLE: &str = "concord_storage_migrations";

static STORAGE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations-postgres");

/// Applies `migrations` to the database, tracking them in `table`.
///
/// Several processes may run this at once (sqlx serialises migrators with an advisory lock). A
/// database that has a version applied that `migrations` does not know (a newer Concord migrated
/// it) is refused with [`PgOpenError::SchemaTooNew`] before anything runs.
pub async fn migrate(
    pool: &PgPool,
    table: &'static str,
    migrations: &Migrator,
) -> Result<(), PgOpenError> {
    let failed = |message: String| PgOpenError::Migration { table, message };
    let supported = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(table)
        .fetch_one(pool)
        .await
        .map_err(|e| failed(one_line(&e)))?;
    if exists.is_some() {
        let found: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT max(version) FROM {table}"
        )))
        .fetch_one(pool)
        .await
        .map_err(|e| failed(one_line(&e)))?;
        if let Some(found) = found.filter(|v| *v > supported) {
            return Err(PgOpenError::SchemaTooNew {
                table,
                found,
                supported,
            });
        }
    }
    let mut migrator = Migrator::with_migrations(migrations.iter().cloned().collect());
    migrator.dangerous_set_table_name(table);
    migrator.run(pool).await.map_err(|e| failed(one_line(&e)))
}

/// Applies the storage schema.
pub(crate) async fn migrate_storage(pool: &PgPool) -> Result<(), PgOpenError> {
    migrate(pool, STORAGE_TABLE, &STORAGE_MIGRATIONS).await
}

/// The newest storage schema version this binary knows.
pub fn storage_schema_version() -> i64 {
    STORAGE_MIGRATIONS
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}
