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
//! - [`access_log`]: one structured log line per request.
//!
//! Layers call one way: routes → registry → stores. Stores never call back up, and the
//! HTTP types stop at the routes.

pub mod access_log;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod registry;
pub mod routes;

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
}

/// Builds the stores the configuration asks for (the embedded default: files + SQLite).
pub fn build_state(config: &Config) -> Result<AppState, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let blobs: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(&config.data_dir)?);
    let meta: Arc<dyn MetadataStore> =
        Arc::new(SqliteStore::open(config.data_dir.join("metadata.db"))?);
    Ok(AppState::new(blobs, meta, config))
}

/// The HTTP application (for in-process tests with `tower::ServiceExt::oneshot`).
pub fn app(state: AppState) -> Router {
    routes::router(state).layer(axum::middleware::from_fn(access_log::log_request))
}

/// Serves the registry on `listener` until `shutdown` completes, then lets in-flight
/// requests finish. Also runs upload-session housekeeping in the background.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    registry::reconcile_uploads(&state).await?;
    let janitor = tokio::spawn(registry::expire_uploads_forever(state.clone()));
    let app = app(state);
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        // Small responses (manifests, upload acknowledgements) should not wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    janitor.abort();
    result.map_err(StartError::Serve)
}

/// How often expired upload sessions are looked for, given the idle timeout.
pub(crate) fn janitor_period(idle: Duration) -> Duration {
    (idle / 10).clamp(Duration::from_secs(1), Duration::from_secs(300))
}
