//! The conformance suite (`berth_meta::testsuite`) against SQLite, and against the
//! caching wrapper over SQLite (which must answer exactly as the store it wraps).

use std::sync::Arc;
use std::time::Duration;

use berth_meta::cache::CachingStore;
use berth_meta::sqlite::SqliteStore;
use berth_meta::MetadataStore;
use tempfile::TempDir;

async fn fresh_sqlite() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteStore::open(dir.path().join("meta.db")).unwrap();
    (dir, db)
}

mod sqlite {
    use super::*;

    async fn fresh_meta() -> (TempDir, Arc<dyn MetadataStore>) {
        let (dir, db) = fresh_sqlite().await;
        (dir, Arc::new(db))
    }

    berth_meta::metadata_store_suite!(fresh_meta);
    berth_meta::account_store_suite!(fresh_sqlite);
    berth_meta::stats_store_suite!(fresh_sqlite);
    berth_meta::scan_store_suite!(fresh_sqlite);
}

mod cached_sqlite {
    use super::*;

    async fn fresh_meta() -> (TempDir, Arc<dyn MetadataStore>) {
        let (dir, db) = fresh_sqlite().await;
        let cache = CachingStore::new(Arc::new(db), 1 << 20, Duration::from_secs(60));
        (dir, Arc::new(cache))
    }

    berth_meta::metadata_store_suite!(fresh_meta);
}
