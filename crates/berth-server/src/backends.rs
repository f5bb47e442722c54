//! Builds the storage backends the configuration asks for: the one place that knows
//! which blob store and which metadata database exist, used by `berth serve`,
//! `berth admin` and the tests alike.
//!
//! Today: `storage = "fs"` (files under the data directory) and SQLite (`database_url`
//! unset or `sqlite://`). A backend that is not built into this binary (PostgreSQL, for
//! now) fails here, at start, with a message that names it.

use std::path::PathBuf;
use std::sync::Arc;

use berth_meta::sqlite::SqliteStore;
use berth_meta::{AccountStore, MetadataStore, StatsStore};
use berth_storage::fs::FsBlobStore;
use berth_storage::BlobStore;

use crate::config::{Config, MetadataBackend, Storage};

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
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("database_url names PostgreSQL, which this build of berth does not include yet; use SQLite (leave database_url unset)")]
    PostgresUnavailable,
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
    let path = match config.metadata_backend()? {
        MetadataBackend::Sqlite(path) => path,
        MetadataBackend::Postgres(_) => return Err(BackendError::PostgresUnavailable),
    };
    match create {
        Create::Yes => {
            let dir = path.parent().unwrap_or(&config.data_dir).to_owned();
            std::fs::create_dir_all(&dir)
                .map_err(|source| BackendError::DataDir { path: dir, source })?
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
    for suffix in ["", "-wal", "-shm"] {
        use std::os::unix::fs::PermissionsExt;
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
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
    match config.storage {
        Storage::Fs => {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| BackendError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
            Ok(Arc::new(FsBlobStore::open(&config.data_dir)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn administration_never_creates_a_registry() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("typo"),
            ..Default::default()
        };
        let err = open_meta(&config, Create::No).err().unwrap();
        assert!(err.to_string().contains("holds no Berth registry"), "{err}");
        assert!(!config.data_dir.exists(), "nothing was created");
        open_meta(&config, Create::Yes).unwrap();
        open_meta(&config, Create::No).unwrap();
    }

    #[test]
    fn postgres_is_refused_by_name() {
        let config = Config {
            database_url: Some("postgres://u:secret@127.0.0.1/berth".into()),
            ..Default::default()
        };
        let err = open_meta(&config, Create::Yes).err().unwrap().to_string();
        assert!(err.contains("PostgreSQL"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
