//! Builds the storage backends the configuration asks for: the one place that knows
//! which blob store and which metadata database exist, used by `berth serve`,
//! `berth admin` and the tests alike.

use std::path::PathBuf;
use std::sync::Arc;

use berth_meta::sqlite::SqliteStore;
use berth_meta::{AccountStore, MetadataStore, StatsStore};
use berth_storage::fs::FsBlobStore;
use berth_storage::BlobStore;

use crate::config::Config;

/// Why a backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no Berth registry (no metadata database); start `berth serve --data-dir {path}` once to create one, or check the path")]
    NoRegistry { path: PathBuf },
    #[error(transparent)]
    Storage(#[from] berth_storage::StorageError),
    #[error(transparent)]
    Meta(#[from] berth_meta::MetaError),
}

/// The metadata database's stores (one database behind three traits).
#[derive(Clone)]
pub struct MetaStores {
    pub meta: Arc<dyn MetadataStore>,
    pub accounts: Arc<dyn AccountStore>,
    pub stats: Arc<dyn StatsStore>,
}

/// Whether opening may create a new, empty registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// `berth serve`: create the data directory and database on first start.
    Yes,
    /// `berth admin`: refuse a path that holds no registry (a typo must not silently
    /// administer a new, empty database while the real registry stays as it was).
    No,
}

/// Opens the metadata database the configuration names.
pub fn open_meta(config: &Config, create: Create) -> Result<MetaStores, BackendError> {
    let path = config.data_dir.join("metadata.db");
    match create {
        Create::Yes => {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| BackendError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?
        }
        Create::No => {
            if !path.exists() {
                return Err(BackendError::NoRegistry {
                    path: config.data_dir.clone(),
                });
            }
        }
    }
    let sqlite = SqliteStore::open(&path)?;
    // The database holds password hashes and the audit log: owner only.
    #[cfg(unix)]
    for file in ["metadata.db", "metadata.db-wal", "metadata.db-shm"] {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(
            config.data_dir.join(file),
            std::fs::Permissions::from_mode(0o600),
        );
    }
    Ok(MetaStores {
        meta: Arc::new(sqlite.clone()),
        accounts: Arc::new(sqlite.clone()),
        stats: Arc::new(sqlite),
    })
}

/// Takes the data directory's exclusive lock for this process (`berth serve`), before
/// anything in it is read or changed: a second server on the same directory would
/// delete the first one's uploads as orphans and disagree with its caches. Released when
/// the returned lock is dropped or the process ends.
pub fn lock_data_dir(config: &Config) -> Result<berth_storage::lock::DirLock, BackendError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| BackendError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    Ok(berth_storage::lock::DirLock::acquire(&config.data_dir)?)
}

/// Opens the blob store the configuration names.
pub fn open_blobs(config: &Config) -> Result<Arc<dyn BlobStore>, BackendError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| BackendError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    Ok(Arc::new(FsBlobStore::open(&config.data_dir)?))
}
