//! Blobs and upload sessions: start, append, commit, cancel, mount, read, delete, and the
//! housekeeping of sessions (start-up reconciliation, idle expiry).

use std::collections::HashSet;
use std::ops::Range;

use berth_meta::{ReservedKind, Unlinked};
use berth_oci::{Digest, RepoName};
use berth_storage::{ByteStream, LocalBlob, StorageError};

use super::{quota, Registry, RegistryError, Result};
use crate::events::{Actor, Event};

/// How many times a commit waits for a concurrent deletion of the same digest (in this
/// process or another) to finish, and how long each wait is; then it answers busy.
const BUSY_RETRIES: u32 = 50;
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The bytes of a blob (or of a range of it) ready to be sent.
pub enum BlobContent {
    /// A local file to send from (zero-copy or copy): `range` of `file`.
    Local { file: LocalBlob, range: Range<u64> },
    /// A stream of the requested bytes.
    Stream(ByteStream),
}

impl Registry {
    /// Starts an upload session for `repo`; returns its id.
    pub async fn start_upload(&self, repo: &RepoName) -> Result<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.blobs.upload_create(&id).await?;
        if let Err(e) = self.meta.upload_create(&id, repo).await {
            // A refused session leaves no file behind.
            let _ = self.blobs.upload_abort(&id).await;
            return Err(e.into());
        }
        self.emit(Event::UploadStarted { repo: repo.clone() }).await;
        Ok(id)
    }

    /// Checks that upload `id` exists and belongs to `repo`, refreshing its idle timer,
    /// and returns its size so far.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<u64> {
        let unknown = || RegistryError::UploadUnknown {
            repo: repo.clone(),
            id: id.to_owned(),
        };
        match self.meta.upload_touch(id).await? {
            Some(r) if r == repo.as_str() => {}
            _ => return Err(unknown()),
        }
        self.blobs.upload_size(id).await?.ok_or_else(unknown)
    }

    /// Appends `body` to upload `id`. `chunk` is the client's `Content-Range` (start and
    /// end, inclusive) with the declared length, when it sent one: the chunk must start
    /// where the upload stands. Returns the new size.
    pub async fn upload_append(
        &self,
        repo: &RepoName,
        id: &str,
        chunk: Option<Chunk>,
        body: ByteStream,
    ) -> Result<u64> {
        let size = self.upload_status(repo, id).await?;
        self.append_at(repo, id, size, chunk, body).await
    }

    async fn append_at(
        &self,
        repo: &RepoName,
        id: &str,
        size: u64,
        chunk: Option<Chunk>,
        body: ByteStream,
    ) -> Result<u64> {
        let range_error = |size: u64, message: String| RegistryError::UploadRange {
            repo: repo.clone(),
            id: id.to_owned(),
            size,
            message,
        };
        if let Some(chunk) = chunk {
            let (start, end) = chunk.range.ok_or_else(|| {
                range_error(
                    size,
                    format!(
                        "Content-Range {:?} is not of the form <start>-<end>",
                        chunk.raw
                    ),
                )
            })?;
            if start != size {
                return Err(range_error(
                    size,
                    format!("chunk starts at byte {start} but the upload has {size} bytes; resume from byte {size}"),
                ));
            }
            // `end >= start` holds after parsing; `end - start + 1` overflows only for
            // `0-18446744073709551615`, which no body can match anyway.
            let expected = (end - start).checked_add(1);
            if chunk.declared_len.is_some_and(|len| Some(len) != expected) {
                return Err(range_error(
                    size,
                    format!(
                        "Content-Range {:?} does not match Content-Length",
                        chunk.raw
                    ),
                ));
            }
            // A declared chunk that would take the repository over its quota is
            // refused before its bytes are read; the session stays, as with any
            // refused chunk (its commit is checked again).
            if let Some(len) = chunk.declared_len {
                self.check_quota(repo, size.saturating_add(len)).await?;
            }
        }
        match self.blobs.upload_append(id, size, body).await {
            Ok(size) => Ok(size),
            Err(StorageError::OffsetMismatch { expected, got }) => Err(range_error(
                expected,
                format!("chunk starts at byte {got} but the upload has {expected} bytes"),
            )),
            Err(StorageError::UploadUnknown(_)) => Err(RegistryError::UploadUnknown {
                repo: repo.clone(),
                id: id.to_owned(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Appends an optional last chunk to upload `id`, verifies it against `digest` (as
    /// given in the query: the session is checked first, so a request for an ended
    /// session is always `UploadUnknown`), makes the blob visible in `repo` and ends the
    /// session. On a digest mismatch the session is cancelled and nothing is stored.
    pub async fn upload_finish(
        &self,
        repo: &RepoName,
        id: &str,
        digest: Option<&str>,
        last: Option<(Option<Chunk>, ByteStream)>,
    ) -> Result<Digest> {
        let size = self.upload_status(repo, id).await?;
        let digest: Digest = digest.ok_or(RegistryError::DigestMissing)?.parse()?;
        let digest = &digest;
        if let Some((chunk, body)) = last {
            self.append_at(repo, id, size, chunk, body).await?;
        }
        // Placing the blob ends the session in the same metadata write as the link.
        self.place_blob(repo, id, digest, true).await?;
        Ok(digest.clone())
    }

    /// Cancels upload `id` of `repo`: its bytes and its session are dropped.
    pub async fn upload_cancel(&self, repo: &RepoName, id: &str) -> Result<()> {
        self.upload_status(repo, id).await?;
        self.drop_upload(id).await
    }

    async fn drop_upload(&self, id: &str) -> Result<()> {
        self.blobs.upload_abort(id).await?;
        self.meta.upload_delete(id).await?;
        Ok(())
    }

    /// Drops upload `id` unless a request is appending to it right now; whether it did.
    async fn drop_idle_upload(&self, id: &str) -> Result<bool> {
        if !self.blobs.upload_abort_if_idle(id).await? {
            return Ok(false);
        }
        self.meta.upload_delete(id).await?;
        Ok(true)
    }

    /// Runs a metadata write that frees space (a deletion). When the database finds the
    /// disk full, the blob store's reserve is released (see
    /// [`BlobStore::release_reserve`](berth_storage::BlobStore::release_reserve)) and the
    /// write tried once more, so that space can be freed through the API on a full disk.
    pub(super) async fn freeing_space<T, F, Fut>(&self, write: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, berth_meta::MetaError>>,
    {
        match write().await {
            Err(berth_meta::MetaError::Full { .. }) if self.blobs.release_reserve().await => {
                tracing::warn!("the metadata database found the disk full; retrying a deletion with the space reserve released");
                Ok(write().await?)
            }
            r => Ok(r?),
        }
    }

    /// Stores a whole blob from one body (monolithic upload). No upload session is
    /// registered: the request is the session.
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.blobs.upload_create(&id).await?;
        if let Err(e) = self.blobs.upload_append(&id, 0, body).await {
            // The bytes received so far go (a full disk most of all needs them gone); the
            // append's error is the answer even when the cleanup fails too.
            if let Err(abort) = self.blobs.upload_abort(&id).await {
                tracing::warn!(upload = %id, error = %abort, "cannot delete a failed monolithic upload");
            }
            return Err(e.into());
        }
        match self.place_blob(repo, &id, digest, false).await {
            Ok(size) => Ok(size),
            Err(e) => {
                // Whatever failed, leave no temporary file behind.
                let _ = self.blobs.upload_abort(&id).await;
                Err(e)
            }
        }
    }

    /// Commits the bytes of `id` as `digest` and links them into `repo`, following the
    /// store's claim protocol: the claim keeps any concurrent deletion of the digest (in
    /// this process or another) from removing the bytes between their commit and the
    /// link. `session` says whether `id` is a registered upload session, which the link
    /// then ends in the same metadata write (a monolithic upload's temporary file is not
    /// one: it lives for one request, and a crash leaves only a file that start-up
    /// removes).
    async fn place_blob(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        session: bool,
    ) -> Result<u64> {
        // The bytes are reserved before they enter the blob namespace, so that commits
        // racing into one repository cannot together exceed its quota; the link below
        // turns the reservation into usage in its own transaction.
        let hold = if self.quota_of(repo).is_some() {
            let size = self.blobs.upload_size(id).await?.unwrap_or(0);
            match self
                .reserve_quota(repo, ReservedKind::Blob, digest, size)
                .await
            {
                Ok(hold) => hold,
                Err(e) => {
                    // A refused commit stores nothing: the session ends with its bytes.
                    if session {
                        self.drop_upload(id).await?;
                    } else {
                        self.blobs.upload_abort(id).await?;
                    }
                    return Err(e);
                }
            }
        } else {
            None
        };
        let placed = self.place_reserved(repo, id, digest, session).await;
        quota::release(hold).await;
        placed
    }

    /// [`Registry::place_blob`] once the quota, if any, is reserved.
    async fn place_reserved(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        session: bool,
    ) -> Result<u64> {
        let claim = self.claim(digest).await?;
        let size = match self.blobs.upload_commit(id, digest).await {
            Ok(size) => size,
            Err(e) => {
                // The commit's error is the one to report; a claim that cannot be released
                // goes stale by itself and only delays a deletion of this digest.
                if let Err(release) = self.meta.blob_claim_release(&claim).await {
                    tracing::warn!(%digest, error = %release, "cannot release a blob claim");
                }
                if matches!(e, StorageError::DigestMismatch { .. }) {
                    if session {
                        self.drop_upload(id).await?;
                    } else {
                        self.blobs.upload_abort(id).await?;
                    }
                }
                return Err(e.into());
            }
        };
        let upload = session.then_some(id);
        if let Err(e) = self
            .meta
            .blob_link_claimed(&claim, repo, size, upload)
            .await
        {
            // The bytes stay in place unlinked (an orphan file for the collector); the
            // client gets the error and pushes again.
            if let Err(release) = self.meta.blob_claim_release(&claim).await {
                tracing::warn!(%digest, error = %release, "cannot release a blob claim");
            }
            return Err(e.into());
        }
        self.emit(Event::BlobCommitted {
            repo: repo.clone(),
            digest: digest.clone(),
            size,
        })
        .await;
        Ok(size)
    }

    /// Claims `digest` for placing its bytes, waiting while a deletion of it finishes.
    async fn claim(&self, digest: &Digest) -> Result<berth_meta::BlobClaim> {
        let mut tries = 0;
        loop {
            match self.meta.blob_claim(digest).await {
                Err(berth_meta::MetaError::BlobBusy(_)) if tries < BUSY_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(BUSY_WAIT).await;
                }
                r => return Ok(r?),
            }
        }
    }

    /// Links a blob of `from` into `to` when `from` has it and its bytes are present.
    /// Returns whether it did.
    pub async fn mount(&self, from: &RepoName, to: &RepoName, digest: &Digest) -> Result<bool> {
        if self.blobs.stat(digest).await?.is_none() {
            if self.meta.blob_size(from, digest).await?.is_some() {
                tracing::warn!(%digest, repo = %from, "blob linked but missing from storage");
            }
            return Ok(false);
        }
        let hold = match self.quota_of(to) {
            Some(_) => match self.meta.blob_size(from, digest).await? {
                Some(size) => {
                    self.reserve_quota(to, ReservedKind::Blob, digest, size)
                        .await?
                }
                None => None,
            },
            None => None,
        };
        let mounted = self.meta.blob_mount(from, to, digest).await;
        quota::release(hold).await;
        if mounted?.is_none() {
            return Ok(false);
        }
        self.emit(Event::BlobMounted {
            from: from.clone(),
            repo: to.clone(),
            digest: digest.clone(),
        })
        .await;
        Ok(true)
    }

    /// Repositories that hold `digest`, for automatic content discovery of a mount.
    pub async fn blob_repositories(&self, digest: &Digest, limit: usize) -> Result<Vec<RepoName>> {
        Ok(self
            .meta
            .blob_repositories(digest, limit)
            .await?
            .iter()
            .filter_map(|r| RepoName::parse(r).ok())
            .collect())
    }

    /// The size of a blob of `repo`, or `BlobUnknown`.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        self.meta
            .blob_size(repo, digest)
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown {
                repo: repo.clone(),
                digest: digest.clone(),
            })
    }

    /// The size of a blob of `repo` whose bytes are in storage at their recorded size
    /// (for `HEAD`): a missing or truncated file is `BlobMissing`, so that a client that
    /// checks before pushing pushes it again.
    pub async fn blob_check(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        let size = self.blob_size(repo, digest).await?;
        match self.blobs.stat(digest).await? {
            Some(stored) if stored == size => Ok(size),
            _ => Err(self.missing(repo, digest)),
        }
    }

    pub(super) fn missing(&self, repo: &RepoName, digest: &Digest) -> RegistryError {
        tracing::warn!(%digest, %repo, "blob linked but missing or of the wrong size in storage");
        RegistryError::BlobMissing {
            repo: repo.clone(),
            digest: digest.clone(),
        }
    }

    /// Where the client can fetch a blob of `repo` itself, when downloads are redirected
    /// ([`Registry::with_redirect`]) and the store gives such URLs; `len` is the number of
    /// bytes the client asked for, counted as served. `BlobMissing` when the bytes are gone.
    pub async fn blob_redirect(
        &self,
        repo: &RepoName,
        digest: &Digest,
        len: u64,
    ) -> Result<Option<String>> {
        let Some(expires) = self.redirect else {
            return Ok(None);
        };
        match self.blobs.redirect_url(digest, expires).await {
            Ok(Some(url)) => {
                self.served(repo, len).await;
                Ok(Some(url))
            }
            Ok(None) => Ok(None),
            Err(StorageError::BlobUnknown(_)) => Err(self.missing(repo, digest)),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens `range` (or all) of a blob of `repo` whose size is `size` (from
    /// [`Registry::blob_size`]). With `local`, a file that can be sent from directly is
    /// preferred. A blob whose bytes are missing or not of the recorded size is
    /// `BlobMissing`, so that the client re-pushes it.
    pub async fn blob_open(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        range: Option<Range<u64>>,
        local: bool,
    ) -> Result<BlobContent> {
        let missing = || self.missing(repo, digest);
        let want = range.clone().unwrap_or(0..size);
        let len = want.end - want.start;
        if local {
            match self.blobs.open_local(digest, range.clone()).await {
                Ok(Some(file)) if file.size == size => {
                    self.served(repo, len).await;
                    return Ok(BlobContent::Local { file, range: want });
                }
                Ok(Some(_)) | Err(StorageError::BlobUnknown(_)) => return Err(missing()),
                Ok(None) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match self.blobs.get(digest, range).await {
            Ok(body) if body.total_size == size => {
                self.served(repo, len).await;
                Ok(BlobContent::Stream(body.stream))
            }
            Ok(_) | Err(StorageError::BlobUnknown(_)) => Err(missing()),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn served(&self, repo: &RepoName, bytes: u64) {
        self.emit(Event::BlobServed {
            repo: repo.clone(),
            bytes,
        })
        .await;
    }

    /// Unlinks a blob from `repo` and deletes its bytes once no repository links it and
    /// no commit of it is in flight (the store decides, in one transaction).
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest, actor: Actor) -> Result<()> {
        match self
            .freeing_space(|| self.meta.blob_unlink(repo, digest))
            .await?
        {
            Unlinked::NotLinked => {
                return Err(RegistryError::BlobUnknown {
                    repo: repo.clone(),
                    digest: digest.clone(),
                })
            }
            // The store left a tombstone: no commit of the digest can start until the
            // bytes are gone and the tombstone removed (or it goes stale after a crash,
            // leaving at most an orphan file for the collector).
            Unlinked::Removed { orphaned: true } => {
                // The link is gone, so the deletion has happened for every client. A file
                // that cannot be removed stays as an orphan for the collector; either way
                // the tombstone ends now, not after it goes stale, so that a push of the
                // same digest is not held up for minutes.
                if let Err(e) = self.blobs.delete(digest).await {
                    tracing::error!(%digest, error = %e, "cannot delete the bytes of an unlinked blob; left as an orphan file");
                }
                self.freeing_space(|| self.meta.blob_deletion_done(digest))
                    .await?;
            }
            Unlinked::Removed { orphaned: false } => {}
        }
        self.emit(Event::BlobDeleted {
            repo: repo.clone(),
            digest: digest.clone(),
            actor,
        })
        .await;
        Ok(())
    }

    /// At start-up, drops upload files without a session record and records without
    /// files (a crash between the two steps of creating or ending a session leaves one).
    /// With a `settle` time, only what still disagrees after it (replicas create uploads
    /// meanwhile; see `run`).
    pub async fn reconcile_uploads(&self, settle: std::time::Duration) -> Result<()> {
        let (bytes_only, session_only) = self.upload_disagreements().await?;
        if bytes_only.is_empty() && session_only.is_empty() {
            return Ok(());
        }
        // An upload being created (bytes' state first, then its session row) or deleted
        // disagrees for an instant: only what still disagrees after `settle` goes.
        let (bytes_now, sessions_now) = if settle.is_zero() {
            (bytes_only.clone(), session_only.clone())
        } else {
            tokio::time::sleep(settle).await;
            self.upload_disagreements().await?
        };
        for id in bytes_only.intersection(&bytes_now) {
            tracing::info!(upload = %id, "removing upload bytes without a session");
            self.blobs.upload_abort(id).await?;
        }
        for id in session_only.intersection(&sessions_now) {
            tracing::info!(upload = %id, "removing upload session without bytes");
            self.meta.upload_delete(id).await?;
        }
        Ok(())
    }

    /// Uploads whose bytes have no session, and sessions without bytes. The bytes are
    /// listed first: an upload created in between has its session by the second listing.
    async fn upload_disagreements(&self) -> Result<(HashSet<String>, HashSet<String>)> {
        let stored: HashSet<String> = self.blobs.upload_list().await?.into_iter().collect();
        let known: HashSet<String> = self.meta.upload_ids().await?.into_iter().collect();
        Ok((
            stored.difference(&known).cloned().collect(),
            known.difference(&stored).cloned().collect(),
        ))
    }

    /// Deletes upload sessions idle for longer than the configured timeout; returns how
    /// many. Expiry never waits: a session a request is appending to right now (a client
    /// stalled in the middle of a `PATCH` body, say) is skipped and tried again next
    /// period, and a session that cannot be dropped is logged and skipped, so that
    /// neither holds up the expiry of the others.
    pub async fn expire_uploads(&self) -> Result<usize> {
        let ids = self
            .meta
            .uploads_idle(self.upload_idle_timeout.as_secs())
            .await?;
        let mut expired = 0;
        for id in &ids {
            match self.drop_idle_upload(id).await {
                Ok(true) => {
                    tracing::info!(upload = %id, "expired idle upload session");
                    expired += 1;
                }
                Ok(false) => {
                    tracing::debug!(upload = %id, "upload session is receiving a body; expiry skips it this time")
                }
                Err(e) => tracing::warn!(upload = %id, error = %e, "cannot expire upload session"),
            }
        }
        Ok(expired)
    }

    /// Runs [`Registry::expire_uploads`] forever (a background task).
    pub async fn expire_uploads_forever(self: std::sync::Arc<Self>) {
        let period = (self.upload_idle_timeout / 10).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(300),
        );
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.expire_uploads().await {
                tracing::warn!(error = %e, "upload expiry failed");
            }
        }
    }
}

/// A client's `Content-Range` for an upload chunk.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The header as sent, for messages.
    pub raw: String,
    /// `(start, end)` inclusive, or `None` when the header could not be parsed.
    pub range: Option<(u64, u64)>,
    /// The request's `Content-Length`, if it declared one.
    pub declared_len: Option<u64>,
}
