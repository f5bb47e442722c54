//! The Berth registry server: the OCI Distribution Spec v1.1 over HTTP.
//!
//! # Layout
//! - [`config`]: typed configuration (file, environment) and [`build_state`], the one
//!   place that builds storage backends from it.
//! - [`endpoint`]: parses every `/v2/...` path once into an [`endpoint::Endpoint`].
//! - [`routes`]: thin handlers, one file per OCI resource.
//! - [`registry`]: operations that span the blob and metadata stores (commit an upload,
//!   mount, delete a blob) with the locking that keeps them consistent.
//! - [`error`]: the one [`error::ApiError`] type and the conversions into it.
//! - [`access_log`]: one structured log line per request, and its metrics;
//!   [`metrics`]: the Prometheus counters served at `/metrics`.
//! - [`auth`]: who is calling (open, anonymous, Basic, bearer token) and what they may do;
//!   [`accounts`]: account administration shared by `berth admin` and the server.
//! - [`analytics`]: download counters by version, platform and client, flushed in batches;
//!   [`routes`]`/stats` serves them.
//! - [`policy`]: the tag policy (immutable releases, forward-only floating tags).
//! - [`listener`]: the accept loop (plain or TLS, HTTP/1.1 and HTTP/2, graceful drain).
//!
//! Layers call one way: routes → registry → stores. Stores never call back up, and the
//! HTTP types stop at the routes.

pub mod access_log;
pub mod accounts;
pub mod analytics;
pub mod auth;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod policy;
pub mod registry;
pub mod routes;
pub mod zerocopy;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use berth_meta::sqlite::SqliteStore;
use berth_meta::MetadataStore;
use berth_storage::fs::FsBlobStore;
use berth_storage::BlobStore;
use tokio::net::TcpListener;

pub use config::Config;
pub use registry::AppState;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] berth_storage::StorageError),
    #[error(transparent)]
    Meta(#[from] berth_meta::MetaError),
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] listener::TlsError),
    #[error("cannot read or create the token signing key {path}: {source}")]
    Key {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to listen on {0} with no account: anyone could push and delete. Create one with `berth admin user add`, listen on a loopback address, or pass --insecure-open")]
    Unsafe(std::net::SocketAddr),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error("--tls-cert and --tls-key must be given together")]
    TlsHalf,
    #[error(transparent)]
    Api(#[from] ApiStartError),
}

/// A store error met while starting, reported with its message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApiStartError(String);

/// Builds the stores the configuration asks for (the embedded default: files + SQLite).
pub fn build_state(config: &Config) -> Result<AppState, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let blobs: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(&config.data_dir)?);
    let db_path = config.data_dir.join("metadata.db");
    let sqlite = SqliteStore::open(&db_path)?;
    // The database holds password hashes and the audit log: owner only.
    #[cfg(unix)]
    for file in ["metadata.db", "metadata.db-wal", "metadata.db-shm"] {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(
            config.data_dir.join(file),
            std::fs::Permissions::from_mode(0o600),
        );
    }
    // Pulls read manifests and blob links through a bounded cache; every write goes
    // through it too and invalidates what it changes.
    let meta: Arc<dyn MetadataStore> = Arc::new(berth_meta::cache::CachingStore::new(
        Arc::new(sqlite.clone()),
        64 << 20,
        Duration::from_secs(10),
    ));
    let stats: Arc<dyn berth_meta::StatsStore> = Arc::new(sqlite.clone());
    let accounts: Arc<dyn berth_meta::AccountStore> = Arc::new(sqlite);
    let key_path = config.data_dir.join("token.key");
    let key = auth::load_or_create_key(&key_path).map_err(|source| StartError::Key {
        path: key_path,
        source,
    })?;
    let auth = Arc::new(auth::Auth::new(
        accounts,
        key,
        config.token_service.clone(),
        config.token_realm.clone(),
        config.token_ttl,
        config.tls_cert.is_some(),
    ));
    let mut analytics =
        analytics::Analytics::new(stats, meta.clone(), config.analytics_flush_interval);
    analytics.enabled = config.analytics;
    let analytics = Arc::new(analytics);
    let mut state = AppState::new(blobs, meta, auth, analytics, config);
    state.policy = Arc::new(policy::Policy::new(&config.tag_policy)?);
    state.tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Some(listener::tls_acceptor(c, k)?),
        (None, None) => None,
        _ => return Err(StartError::TlsHalf),
    };
    Ok(state)
}

/// The HTTP application (for in-process tests with `tower::ServiceExt::oneshot`).
pub fn app(state: AppState) -> Router {
    routes::router(state.clone()).layer(axum::middleware::from_fn_with_state(
        state,
        access_log::log_request,
    ))
}

/// Serves the registry on `listener` until `shutdown` completes, then lets in-flight
/// requests finish. Also runs upload-session housekeeping in the background.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let addr = listener.local_addr()?;
    let accounts_exist = state
        .auth
        .accounts_exist()
        .await
        .map_err(|e| ApiStartError(e.message))?;
    if !accounts_exist && !addr.ip().is_loopback() {
        if !state.insecure_open {
            return Err(StartError::Unsafe(addr));
        }
        tracing::warn!(
            "no account exists and --insecure-open is set: anyone who can reach {addr} may push and delete"
        );
    }
    registry::reconcile_uploads(&state).await?;
    let janitor = tokio::spawn(registry::expire_uploads_forever(state.clone()));
    let flusher = tokio::spawn(state.analytics.clone().flush_forever());
    let tls = state.tls.clone();
    let analytics = state.analytics.clone();
    let transfer = state.blob_transfer;
    let app = app(state);
    let result = listener::serve(
        listener,
        tls,
        transfer,
        app,
        shutdown,
        Duration::from_secs(30),
    )
    .await;
    janitor.abort();
    flusher.abort();
    if let Err(e) = analytics.flush(true).await {
        tracing::error!(error = %e, "could not write the last download counters");
    }
    result.map_err(StartError::Serve)
}

/// How often expired upload sessions are looked for, given the idle timeout.
pub(crate) fn janitor_period(idle: Duration) -> Duration {
    (idle / 10).clamp(Duration::from_secs(1), Duration::from_secs(300))
}
