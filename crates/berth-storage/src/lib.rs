//! Content-addressed blob storage.
//!
//! # Layout
//! - [`BlobStore`]: the narrow, object-store-shaped trait every backend implements:
//!   stat, ranged get, delete of committed blobs, and resumable upload sessions that
//!   are verified against their digest when committed.
//! - [`fs::FsBlobStore`]: the embedded default, blobs as files under a data directory.
//! - `testsuite` (feature `testsuite`): the conformance suite every backend must pass.
//!
//! **Architecture Invariant:** storage knows nothing about HTTP, repositories, tags or
//! accounts. It stores bytes under their digest and never makes a blob visible before
//! its digest was verified over every byte and the bytes were made durable.

pub mod fs;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

use std::ops::Range;
use std::pin::Pin;

use berth_oci::Digest;
use bytes::Bytes;
use futures_util::Stream;

/// A stream of body bytes, as received from a client or served to one.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Errors of a blob store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob {0} is not in the store")]
    BlobUnknown(Digest),
    #[error("upload {0} is not known")]
    UploadUnknown(String),
    #[error("upload is at offset {expected}, the chunk starts at {got}")]
    OffsetMismatch { expected: u64, got: u64 },
    #[error("content digest is {actual}, the client declared {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("reading the request body failed: {0}")]
    Body(std::io::Error),
    #[error("storage I/O failed while {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> StorageError {
        move |source| StorageError::Io { context, source }
    }
}

/// A committed blob opened for reading.
pub struct BlobBody {
    /// Total size of the blob (not of the range).
    pub total_size: u64,
    /// The bytes requested (the whole blob or the range).
    pub stream: ByteStream,
}

/// A committed blob, as listed by [`BlobStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// When the blob's bytes were last written: no later than the commit that made it
    /// visible, and possibly as early as the start of that upload (an object store dates
    /// a multipart object by the start of its upload). Committing the same digest again
    /// may refresh it. A garbage collector's grace period must therefore cover the
    /// longest upload, not only the time since a commit.
    pub modified: std::time::SystemTime,
}

/// One page of [`BlobStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobPage {
    /// Committed blobs in ascending order of their digest string.
    pub blobs: Vec<BlobInfo>,
    /// The cursor for the following page (the last digest considered for this one);
    /// `None` when no blob follows.
    pub next: Option<Digest>,
}

/// A committed blob opened as a local file.
#[derive(Debug)]
pub struct LocalBlob {
    /// The open file, read-only. Committed blobs are immutable: its length never changes.
    pub file: std::fs::File,
    /// Size of the blob in bytes.
    pub size: u64,
}

/// Content-addressed blob storage with resumable, verified uploads.
///
/// Upload ids are chosen by the caller (unique, URL-safe). A committed blob is immutable;
/// committing the same content twice is harmless.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size of a committed blob, or `None` when absent.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError>;

    /// The committed blob as a local file, for zero-copy serving (`sendfile`), or `None`
    /// when this store keeps no local files. `range` is the part about to be read (a
    /// read-ahead hint; `None` for the whole blob). The default says `None`; callers then
    /// use [`BlobStore::get`]. `BlobUnknown` when the blob is absent.
    async fn open_local(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Option<LocalBlob>, StorageError> {
        let _ = (digest, range);
        Ok(None)
    }

    /// Opens a committed blob, whole or the half-open byte `range`.
    async fn get(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobBody, StorageError>;

    /// Deletes a committed blob; `false` when it was absent.
    async fn delete(&self, digest: &Digest) -> Result<bool, StorageError>;

    /// Committed blobs whose digest string sorts strictly after `after` (from the first
    /// when `None`), at most `limit` of them (a `limit` of 0 is taken as 1, so that every
    /// call makes progress), in ascending order of the digest string. Upload sessions are
    /// not listed.
    ///
    /// A blob committed or deleted during a listing may or may not appear in it; every
    /// blob present from the first call to the last appears exactly once. A page may
    /// hold fewer than `limit` blobs while `next` is still `Some` (blobs deleted while
    /// it was read); only `next == None` means the end.
    async fn list(&self, after: Option<&Digest>, limit: usize) -> Result<BlobPage, StorageError>;

    /// Starts an empty upload session.
    async fn upload_create(&self, id: &str) -> Result<(), StorageError>;

    /// Appends `data` at offset `at`, which must equal the current size.
    /// Returns the new size. Bytes received before a body error are kept, so a client
    /// can resume from the size reported afterwards.
    async fn upload_append(&self, id: &str, at: u64, data: ByteStream)
        -> Result<u64, StorageError>;

    /// Current size of an upload, or `None` when unknown.
    async fn upload_size(&self, id: &str) -> Result<Option<u64>, StorageError>;

    /// Verifies the upload against `expected` and makes it the blob of that digest.
    /// Returns the blob size. On a mismatch nothing becomes visible and the upload stays.
    async fn upload_commit(&self, id: &str, expected: &Digest) -> Result<u64, StorageError>;

    /// Drops an upload session and its bytes. Unknown ids are not an error.
    async fn upload_abort(&self, id: &str) -> Result<(), StorageError>;

    /// Ids of every upload session present (for expiry and crash recovery).
    async fn upload_list(&self) -> Result<Vec<String>, StorageError>;
}
