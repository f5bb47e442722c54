//! Builds the storage backends the configuration asks for: the one place that knows
//! which blob store and which metadata database exist, used by `berth serve`,
//! `berth admin` and the tests alike.
//!
//! Today: `storage = "fs"` (files under the data directory) or `"s3"` (a bucket, with
//! the `s3` feature), and SQLite (`database_url` unset or `sqlite://`) or PostgreSQL
//! (`postgres://`, with the `postgres` feature). The `berth` binary turns both features
//! on; a backend that is not built into this binary fails here, at start, with a
//! message that names it.
//!
//! [`MetaWatch`] notices the SQLite file being deleted or replaced under a running
//! server (the open connection would go on writing to a file no path names, and every
//! later push would be lost at the next start), so that writes are refused instead.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_meta::cache::CachingStore;
use berth_meta::sqlite::SqliteStore;
use berth_meta::{AccountStore, MetadataStore, ScanStore, StatsStore};
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
    #[error("database_url names PostgreSQL, which this build of berth does not include (built without the `postgres` feature); use SQLite (leave database_url unset) or a build with it")]
    PostgresUnavailable,
    #[error("storage = \"s3\" needs s3_bucket (or BERTH_S3_BUCKET): the bucket, which must already exist")]
    S3NoBucket,
    #[error("storage = \"s3\" is not built into this berth; rebuild with the `s3` feature (cargo build --features s3)")]
    S3Unavailable,
    #[error(transparent)]
    Storage(#[from] berth_storage::StorageError),
    #[error(transparent)]
    Meta(#[from] berth_meta::MetaError),
}

/// The metadata database's stores (one database behind four traits).
#[derive(Clone)]
pub struct MetaStores {
    pub meta: Arc<dyn MetadataStore>,
    pub accounts: Arc<dyn AccountStore>,
    pub stats: Arc<dyn StatsStore>,
    /// Vulnerability scans of pushed images and their queue.
    pub scans: Arc<dyn ScanStore>,
    /// For a database that other processes write too (PostgreSQL): keeps a cache in
    /// front of `meta` current with their writes. `None` when this process is the only
    /// writer (SQLite), whose cache sees every write itself.
    pub invalidate_on_change: Option<InvalidateOnChange>,
}

/// Subscribes a cache to the changes other processes make to the database.
pub type InvalidateOnChange =
    Arc<dyn Fn(&Arc<CachingStore>) -> Result<(), berth_meta::MetaError> + Send + Sync>;

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
        MetadataBackend::Postgres(url) => return open_postgres(&url),
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
        stats: Arc::new(sqlite.clone()),
        scans: Arc::new(sqlite),
        invalidate_on_change: None,
    })
}

/// Opens (and migrates) the PostgreSQL database `url` names. `create` does not apply:
/// the database is the operator's to create, and opening an empty one is how a new
/// registry starts.
#[cfg(feature = "postgres")]
fn open_postgres(url: &str) -> Result<MetaStores, BackendError> {
    let pg = berth_meta::postgres::PgStore::open(url)?;
    let follower = pg.clone();
    Ok(MetaStores {
        meta: Arc::new(pg.clone()),
        accounts: Arc::new(pg.clone()),
        stats: Arc::new(pg.clone()),
        scans: Arc::new(pg),
        invalidate_on_change: Some(Arc::new(move |cache: &Arc<CachingStore>| {
            follower.invalidate_on_change(cache)
        })),
    })
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(_url: &str) -> Result<MetaStores, BackendError> {
    Err(BackendError::PostgresUnavailable)
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

/// The answer to a write once the metadata database file is gone (503).
pub const META_LOST: &str = "the metadata database file was removed or replaced while the server runs: writes are refused so that nothing more is lost; restore the file or restart the server (see its log)";

/// How often [`MetaWatch::watch_forever`] looks at the database file.
pub const META_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Watches the SQLite database file: the device and inode of the file opened at start
/// against what its path names now.
#[derive(Debug)]
pub struct MetaWatch {
    /// The database path and the identity it had when opened; `None` for a backend
    /// that is not a local file.
    file: Option<(PathBuf, (u64, u64))>,
    lost: AtomicBool,
}

/// The device and inode of the file at `path`.
fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok((m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        // Without inodes, only a removal is noticed.
        std::fs::metadata(path).map(|_| (0, 0))
    }
}

impl MetaWatch {
    /// Watches the database `config` names, as it is now (call it right after
    /// [`open_meta`]).
    pub fn new(config: &Config) -> Result<MetaWatch, BackendError> {
        let file = match config.metadata_backend()? {
            MetadataBackend::Sqlite(path) => file_identity(&path).ok().map(|id| (path, id)),
            MetadataBackend::Postgres(_) => None,
        };
        Ok(MetaWatch {
            file,
            lost: AtomicBool::new(false),
        })
    }

    /// Whether the database file was found removed or replaced (then it stays so
    /// until the server restarts).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Looks at the file once; logs and remembers a removal or replacement.
    pub fn check(&self) -> bool {
        let Some((path, opened)) = &self.file else {
            return false;
        };
        if self.is_lost() {
            return true;
        }
        let now = file_identity(path);
        let lost = match &now {
            Ok(id) => id != opened,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if lost {
            self.lost.store(true, Ordering::Relaxed);
            tracing::error!(
                path = %path.display(),
                what = if now.is_ok() { "replaced" } else { "removed" },
                "the metadata database file was removed or replaced while the server runs: refusing every write from now on (503). Restore the file and restart, or restart to start from what the path holds now; once accounts were created the registry then stays closed until `berth admin user add`"
            );
        }
        lost
    }

    /// Checks every `every` until the task is dropped.
    pub async fn watch_forever(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.check() {
                return;
            }
        }
    }
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
        Storage::S3 => open_s3(config),
    }
}

#[cfg(feature = "s3")]
fn open_s3(config: &Config) -> Result<Arc<dyn BlobStore>, BackendError> {
    let bucket = config.s3_bucket.clone().ok_or(BackendError::S3NoBucket)?;
    let options = berth_storage::s3::S3Options {
        bucket,
        endpoint: config.s3_endpoint.clone(),
        region: config.s3_region.clone(),
        prefix: config.s3_prefix.clone(),
    };
    Ok(Arc::new(berth_storage::s3::S3BlobStore::open_s3(&options)?))
}

#[cfg(not(feature = "s3"))]
fn open_s3(_config: &Config) -> Result<Arc<dyn BlobStore>, BackendError> {
    Err(BackendError::S3Unavailable)
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
    fn a_removed_or_replaced_database_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Default::default()
        };
        let db = dir.path().join("metadata.db");
        open_meta(&config, Create::Yes).unwrap();
        let watch = MetaWatch::new(&config).unwrap();
        assert!(!watch.check() && !watch.is_lost());

        // Replaced: a new file under the same name.
        let moved = dir.path().join("old.db");
        std::fs::rename(&db, &moved).unwrap();
        std::fs::copy(&moved, &db).unwrap();
        assert!(watch.check() && watch.is_lost());

        // Removed.
        let watch = MetaWatch::new(&config).unwrap();
        assert!(!watch.check());
        std::fs::remove_file(&db).unwrap();
        assert!(watch.check(), "a removed file is noticed");
        assert!(watch.is_lost(), "and stays noticed");

        let pg = Config {
            database_url: Some("postgres://127.0.0.1/berth".into()),
            ..Default::default()
        };
        assert!(!MetaWatch::new(&pg).unwrap().check());
    }

    #[cfg(not(feature = "postgres"))]
    #[test]
    fn s3_needs_a_bucket_and_the_feature() {
        let config = Config {
            storage: Storage::S3,
            ..Config::default()
        };
        let err = match open_blobs(&config) {
            Ok(_) => panic!("an S3 store without a bucket"),
            Err(e) => e,
        };
        if cfg!(feature = "s3") {
            assert!(matches!(err, BackendError::S3NoBucket), "{err}");
        } else {
            assert!(matches!(err, BackendError::S3Unavailable), "{err}");
        }
        assert!(err.to_string().contains("s3"), "{err}");
    }

    /// Without the `postgres` feature, a PostgreSQL URL is refused by name (and without
    /// its password).
    #[cfg(not(feature = "postgres"))]
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

    /// A database that cannot be reached fails the start with a reason, and the URL's
    /// password is never part of it.
    #[cfg(feature = "postgres")]
    #[test]
    fn an_unreachable_postgres_fails_without_its_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = Config {
            database_url: Some(format!("postgres://u:secret@127.0.0.1:{port}/berth")),
            ..Default::default()
        };
        let err = open_meta(&config, Create::Yes).err().unwrap().to_string();
        assert!(err.contains("unavailable"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
