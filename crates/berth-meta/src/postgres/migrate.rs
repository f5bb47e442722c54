//! Schema migrations: the files of `migrations/postgres/`, applied in order, each in its
//! own transaction, with the versions applied recorded in `schema_version`. A session
//! advisory lock serialises replicas that start together: the second waits, then finds
//! the schema current.

use tokio_postgres::NoTls;

use super::{describe, pg_err};
use crate::MetaError;

/// Every migration, in order; the n-th is applied when `schema_version` lacks n.
pub(super) const MIGRATIONS: [&str; 7] = [
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_pulls_and_outbox.sql"),
    include_str!("../../migrations/postgres/0003_image_layers.sql"),
    include_str!("../../migrations/postgres/0004_replication.sql"),
    include_str!("../../migrations/postgres/0005_scans.sql"),
    include_str!("../../migrations/postgres/0006_quota_reservations.sql"),
    include_str!("../../migrations/postgres/0007_scan_claims.sql"),
];

/// The advisory lock key held while migrating ("berth" in ASCII).
const MIGRATION_LOCK: i64 = 0x62_6572_7468;

/// Connects once to `config`'s database and applies the migrations it has not seen.
pub(super) async fn migrate(config: &tokio_postgres::Config) -> Result<(), MetaError> {
    let (mut client, connection) =
        config
            .connect(NoTls)
            .await
            .map_err(|e| MetaError::Unavailable {
                context: "connecting to the database",
                message: describe(&e),
            })?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "migration connection ended");
        }
    });
    let outcome = apply(&mut client).await;
    drop(client);
    let _ = driver.await;
    outcome
}

async fn apply(client: &mut tokio_postgres::Client) -> Result<(), MetaError> {
    let err = pg_err("migrating");
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(&err)?;
    let outcome = apply_locked(client).await;
    // Also released when the session ends, should this fail.
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(&err)?;
    outcome
}

async fn apply_locked(client: &mut tokio_postgres::Client) -> Result<(), MetaError> {
    let err = pg_err("migrating");
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version     INTEGER PRIMARY KEY,
                 applied_at  BIGINT NOT NULL
             )",
        )
        .await
        .map_err(&err)?;
    let current: i32 = client
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .map_err(&err)?
        .try_get(0)
        .map_err(&err)?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        if version <= current {
            continue;
        }
        let tx = client.transaction().await.map_err(&err)?;
        tx.batch_execute(sql).await.map_err(&err)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
            &[&version, &berth_oci::time::now()],
        )
        .await
        .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        tracing::info!(version, "applied PostgreSQL metadata migration");
    }
    if current > MIGRATIONS.len() as i32 {
        return Err(MetaError::Database {
            context: "migrating",
            message: format!(
                "the database has schema version {current}, newer than this berth knows ({}): upgrade berth",
                MIGRATIONS.len()
            ),
        });
    }
    Ok(())
}
