//! Operations that span the blob store and the metadata store.
//!
//! A blob is stored once per digest and made visible to a repository by a link in the
//! metadata store. Linking after committing, and deleting bytes only when the last link
//! is gone, are both done under a per-digest lock so that a concurrent push of the same
//! blob can never be linked to bytes that are being deleted.

use std::collections::HashSet;
use std::hash::{Hash, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use berth_meta::{MetadataStore, Unlinked};
use berth_oci::{Digest, ErrorCode, RepoName};
use berth_storage::{BlobStore, ByteStream, StorageError};
use tokio::sync::Mutex;

use crate::auth::Auth;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};

const LOCK_STRIPES: usize = 64;

/// Shared state of the server: the stores, access control and the limits. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn MetadataStore>,
    pub auth: Arc<Auth>,
    pub max_manifest_bytes: usize,
    pub upload_idle_timeout: Duration,
    pub insecure_open: bool,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub policy: Arc<crate::policy::Policy>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub analytics: Arc<crate::analytics::Analytics>,
    pub blob_transfer: crate::config::BlobTransfer,
    digest_locks: Arc<Vec<Mutex<()>>>,
}

impl AppState {
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        meta: Arc<dyn MetadataStore>,
        auth: Arc<Auth>,
        analytics: Arc<crate::analytics::Analytics>,
        config: &Config,
    ) -> AppState {
        AppState {
            blobs,
            meta,
            auth,
            max_manifest_bytes: config.max_manifest_bytes,
            upload_idle_timeout: config.upload_idle_timeout,
            insecure_open: config.insecure_open,
            tls: None,
            policy: Arc::new(crate::policy::Policy::default()),
            metrics: Arc::new(crate::metrics::Metrics::default()),
            analytics,
            blob_transfer: config.blob_transfer,
            digest_locks: Arc::new((0..LOCK_STRIPES).map(|_| Mutex::new(())).collect()),
        }
    }

    fn lock_for(&self, digest: &Digest) -> &Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        digest.hash(&mut h);
        &self.digest_locks[(h.finish() as usize) % LOCK_STRIPES]
    }
}

/// Starts an upload session for `repo`; returns its id.
pub async fn start_upload(state: &AppState, repo: &RepoName) -> ApiResult<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    state.blobs.upload_create(&id).await?;
    state.meta.upload_create(&id, repo).await?;
    state.metrics.upload_started();
    Ok(id)
}

/// Checks that upload `id` exists and belongs to `repo`, refreshing its idle timer.
pub async fn check_upload(state: &AppState, repo: &RepoName, id: &str) -> ApiResult<()> {
    match state.meta.upload_touch(id).await? {
        Some(r) if r == repo.as_str() => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::BlobUploadUnknown,
            format!("upload {id} is not known in repository {repo}"),
        )),
    }
}

/// Drops an upload session and its bytes.
pub async fn cancel_upload(state: &AppState, id: &str) -> ApiResult<()> {
    state.blobs.upload_abort(id).await?;
    state.meta.upload_delete(id).await?;
    Ok(())
}

/// Verifies upload `id` against `digest`, makes the blob visible in `repo` and ends the
/// session. On a digest mismatch the session is cancelled and nothing is stored.
pub async fn commit_upload(
    state: &AppState,
    repo: &RepoName,
    id: &str,
    digest: &Digest,
) -> ApiResult<u64> {
    let size = place_blob(state, repo, id, digest, true).await?;
    state.meta.upload_delete(id).await?;
    Ok(size)
}

/// Commits the bytes of `id` as `digest` and links them into `repo`, under the digest's
/// lock. `session` says whether `id` is a registered upload session (a monolithic
/// upload's temporary file is not: it lives for one request, and a crash leaves only a
/// file that start-up removes).
async fn place_blob(
    state: &AppState,
    repo: &RepoName,
    id: &str,
    digest: &Digest,
    session: bool,
) -> ApiResult<u64> {
    let guard = state.lock_for(digest).lock().await;
    let size = match state.blobs.upload_commit(id, digest).await {
        Ok(size) => size,
        Err(e @ StorageError::DigestMismatch { .. }) => {
            drop(guard);
            if session {
                cancel_upload(state, id).await?;
            } else {
                state.blobs.upload_abort(id).await?;
            }
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    state.meta.blob_link(repo, digest, size).await?;
    drop(guard);
    state.metrics.blob_committed();
    Ok(size)
}

/// Stores a whole blob from one body (monolithic upload). No upload session is
/// registered: the request is the session.
pub async fn put_blob(
    state: &AppState,
    repo: &RepoName,
    digest: &Digest,
    body: ByteStream,
) -> ApiResult<u64> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    state.blobs.upload_create(&id).await?;
    if let Err(e) = state.blobs.upload_append(&id, 0, body).await {
        state.blobs.upload_abort(&id).await?;
        return Err(e.into());
    }
    match place_blob(state, repo, &id, digest, false).await {
        Ok(size) => Ok(size),
        Err(e) => {
            // Whatever failed, leave no temporary file behind.
            let _ = state.blobs.upload_abort(&id).await;
            Err(e)
        }
    }
}

/// Links a blob of `from` into `to` when `from` has it. Returns whether it did.
pub async fn mount(
    state: &AppState,
    from: &RepoName,
    to: &RepoName,
    digest: &Digest,
) -> ApiResult<bool> {
    let _guard = state.lock_for(digest).lock().await;
    let Some(size) = state.meta.blob_size(from, digest).await? else {
        return Ok(false);
    };
    if state.blobs.stat(digest).await?.is_none() {
        tracing::warn!(%digest, repo = %from, "blob linked but missing from storage");
        return Ok(false);
    }
    state.meta.blob_link(to, digest, size).await?;
    Ok(true)
}

/// Unlinks a blob from `repo` and deletes its bytes once no repository links it.
pub async fn delete_blob(state: &AppState, repo: &RepoName, digest: &Digest) -> ApiResult<()> {
    let _guard = state.lock_for(digest).lock().await;
    match state.meta.blob_unlink(repo, digest).await? {
        Unlinked::NotLinked => Err(ApiError::new(
            ErrorCode::BlobUnknown,
            format!("blob {digest} is not in repository {repo}"),
        )),
        Unlinked::Removed { orphaned } => {
            if orphaned {
                state.blobs.delete(digest).await?;
            }
            Ok(())
        }
    }
}

/// At start-up, drops upload files without a session record and records without files
/// (a crash between the two steps of creating or ending a session leaves one of them).
pub async fn reconcile_uploads(state: &AppState) -> Result<(), crate::StartError> {
    let stored: HashSet<String> = state.blobs.upload_list().await?.into_iter().collect();
    let known: HashSet<String> = state.meta.upload_ids().await?.into_iter().collect();
    for id in stored.difference(&known) {
        tracing::info!(upload = %id, "removing upload bytes without a session");
        state.blobs.upload_abort(id).await?;
    }
    for id in known.difference(&stored) {
        tracing::info!(upload = %id, "removing upload session without bytes");
        state.meta.upload_delete(id).await?;
    }
    Ok(())
}

/// Deletes idle upload sessions, forever (run as a background task).
pub async fn expire_uploads_forever(state: AppState) {
    let mut tick = tokio::time::interval(crate::janitor_period(state.upload_idle_timeout));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = expire_uploads(&state).await {
            tracing::warn!(error = %e.message, "upload expiry failed");
        }
    }
}

/// Deletes upload sessions idle for longer than the configured timeout.
pub async fn expire_uploads(state: &AppState) -> ApiResult<usize> {
    let ids = state
        .meta
        .uploads_idle(state.upload_idle_timeout.as_secs())
        .await?;
    for id in &ids {
        tracing::info!(upload = %id, "expiring idle upload session");
        cancel_upload(state, id).await?;
    }
    Ok(ids.len())
}
