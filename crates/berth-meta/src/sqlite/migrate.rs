//! Schema migrations: the files of `migrations/sqlite/`, applied in order, each in its own
//! transaction, with the number applied kept in `PRAGMA user_version`.

use rusqlite::Connection;

use super::db_err;
use crate::MetaError;

/// Every migration, in order; the n-th is applied when `user_version` is below n.
const MIGRATIONS: [&str; 16] = [
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_accounts.sql"),
    include_str!("../../migrations/sqlite/0003_manifest_version.sql"),
    include_str!("../../migrations/sqlite/0004_downloads.sql"),
    include_str!("../../migrations/sqlite/0005_requests.sql"),
    include_str!("../../migrations/sqlite/0006_blob_lifecycle.sql"),
    include_str!("../../migrations/sqlite/0007_artifact_tags.sql"),
    include_str!("../../migrations/sqlite/0008_fetch_kinds.sql"),
    include_str!("../../migrations/sqlite/0009_publish_gate.sql"),
    include_str!("../../migrations/sqlite/0010_manifest_pulls.sql"),
    include_str!("../../migrations/sqlite/0011_webhook_outbox.sql"),
    include_str!("../../migrations/sqlite/0012_image_layers.sql"),
    include_str!("../../migrations/sqlite/0013_replication.sql"),
    include_str!("../../migrations/sqlite/0014_scans.sql"),
    include_str!("../../migrations/sqlite/0015_scans_of_collected_manifests.sql"),
    include_str!("../../migrations/sqlite/0016_scan_claims.sql"),
];

/// Applies the migrations `conn`'s database has not seen yet.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), MetaError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err("reading the schema version"))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction().map_err(db_err("migrating"))?;
        tx.execute_batch(sql).map_err(db_err("migrating"))?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(db_err("migrating"))?;
        tx.commit().map_err(db_err("migrating"))?;
        tracing::info!(version = i + 1, "applied metadata migration");
    }
    Ok(())
}
