//! Content-addressed blob storage.
//!
//! # Layout
//! - [`BlobStore`]: the narrow, object-store-shaped trait every backend implements:
//!   stat, ranged get, delete and paged listing of committed blobs, and resumable upload
//!   sessions that are verified against their digest when committed.
//! - [`fs::FsBlobStore`]: the embedded default, blobs as files under a data directory.
//! - `s3::S3BlobStore` (feature `s3`): blobs in an S3 bucket (GCS and Azure with the
//!   `gcs` and `azure` features), for replicas that share one store.
//! - [`lock::DirLock`]: the exclusive lock that keeps a second process off a data directory.
//! - `testsuite` (feature `testsuite`): the conformance suite every backend must pass,
//!   one named check per behaviour, run by a backend with `blob_store_conformance!`.
//!
//! **Architecture Invariant:** storage knows nothing about HTTP, repositories, tags or
//! accounts. It stores bytes under their digest and never makes a blob visible before
//! its digest was verified over every byte and the bytes were made durable.

pub mod fs;
pub mod lock;
#[cfg(feature = "s3")]
pub mod s3;
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
    /// Another process holds the data directory `path` (see [`lock::DirLock`]); `pid` is
    /// its process id when its lock file tells it.
    #[error(
        "data directory {} is in use by another berth process{}; stop it first",
        .path.display(),
        pid_note(.pid)
    )]
    Locked {
        path: std::path::PathBuf,
        pid: Option<u32>,
    },
    /// The filesystem is out of space or over quota (`ENOSPC`, `EDQUOT`): nothing more
    /// can be written until space is freed.
    #[error("storage is full while {context}: {source}")]
    Full {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The process or the system is out of file descriptors (`EMFILE`, `ENFILE`): a
    /// passing condition, the operation can be retried shortly.
    #[error("out of file descriptors while {context}: {source}")]
    Exhausted {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("storage I/O failed while {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The ` (pid N)` of a [`StorageError::Locked`] message, when the pid is known.
fn pid_note(pid: &Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

impl StorageError {
    /// The error of an I/O failure while `context`, classified: out of space or quota is
    /// [`StorageError::Full`], out of descriptors [`StorageError::Exhausted`], anything
    /// else [`StorageError::Io`].
    pub fn from_io(context: &'static str, source: std::io::Error) -> StorageError {
        use rustix::io::Errno;
        match Errno::from_io_error(&source) {
            Some(Errno::NOSPC | Errno::DQUOT) => StorageError::Full { context, source },
            Some(Errno::MFILE | Errno::NFILE) => StorageError::Exhausted { context, source },
            _ => StorageError::Io { context, source },
        }
    }

    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> StorageError {
        move |source| StorageError::from_io(context, source)
    }

    /// What the store was doing when an I/O error (of any class) happened.
    pub(crate) fn io_context(&self) -> Option<&'static str> {
        match self {
            StorageError::Full { context, .. }
            | StorageError::Exhausted { context, .. }
            | StorageError::Io { context, .. } => Some(context),
            _ => None,
        }
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

/// What [`BlobStore::verify`] found when it read a committed blob back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Bytes read: the size of the blob as it is stored now.
    pub size: u64,
    /// The digest of those bytes, computed with the algorithm of the digest asked about.
    pub actual: Digest,
}

impl Verified {
    /// Whether the bytes stored under `digest` still have that digest.
    pub fn is_intact(&self, digest: &Digest) -> bool {
        &self.actual == digest
    }
}

/// Content-addressed blob storage with resumable, verified uploads.
///
/// A committed blob is immutable and lives under its digest; committing the same content
/// twice is harmless.
///
/// # Uploads
///
/// An upload session is an append-only byte sequence under an id chosen by the caller
/// (unique; ASCII letters, digits, `-` and `_`). The contract is shaped so that an object
/// store's multipart upload can implement it as well as a file can:
///
/// - **Size.** The size of an upload is the number of bytes it holds, in the order they
///   were received: what [`upload_append`](BlobStore::upload_append) returns and
///   [`upload_size`](BlobStore::upload_size) reports, and the only offset the next append
///   may start at. It counts only bytes a restart of the process would find (after a
///   machine crash an upload may be shorter or gone: only commits are durable).
/// - **Appends only at the current size.** There are no writes at other offsets and no
///   overwrites: an append at any other offset fails with
///   [`StorageError::OffsetMismatch`] and changes nothing. An append that succeeds keeps
///   every byte of its body, so it returns `at` plus the body's length. Appends of any
///   length, including empty ones, are accepted: a backend with a minimum part size (5 MiB
///   for S3 multipart) stores the short tail on its own before returning and carries it
///   over to the next part. The store serializes the operations on one upload, so two
///   appends at the same offset never both succeed.
/// - **Failed bodies.** When the body fails midway the append returns
///   [`StorageError::Body`] and the upload keeps a prefix of the bytes received (all of
///   them, or only those the backend had made safe); the client asks for the size and
///   resumes from there.
/// - **Hash state.** The running hash is the backend's own concern and survives a
///   restart (rebuilt from the bytes, or stored beside them when, as with multipart
///   parts, they cannot be read back before completion). Uploads are hashed with SHA-256
///   as they arrive; a commit against another algorithm may cost a second pass over the
///   bytes.
/// - **Commit.** [`upload_commit`](BlobStore::upload_commit) verifies the digest over
///   every byte before anything becomes visible: only then, and once the bytes are
///   durable, does the blob appear under its digest, and the session is gone. On a
///   mismatch nothing becomes visible and the session is left as it was.
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
    ///
    /// A range is cut at the end of the blob: one reaching past it yields the bytes up to
    /// the end, and one that is empty or starts at or past the end yields no bytes. The
    /// caller checks a client's range against [`BlobBody::total_size`] (or
    /// [`BlobStore::stat`]) beforehand. `BlobUnknown` when the blob is absent.
    async fn get(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobBody, StorageError>;

    /// Deletes a committed blob; `false` when it was absent. Uploads are not affected.
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

    /// Reads a committed blob back whole and hashes it with its digest's algorithm: what
    /// is stored under `digest` now, which a failing disk or a stray write may have
    /// changed since the commit verified it. `None` when the blob is absent. Memory stays
    /// bounded whatever the size of the blob; nothing is changed.
    ///
    /// The default reads through [`BlobStore::get`]; a backend may hash closer to its
    /// bytes (the filesystem store reads and hashes on the blocking pool).
    async fn verify(&self, digest: &Digest) -> Result<Option<Verified>, StorageError> {
        let mut body = match self.get(digest, None).await {
            Ok(body) => body,
            Err(StorageError::BlobUnknown(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut hasher = berth_oci::Hasher::new(digest.algorithm());
        let mut size = 0u64;
        while let Some(chunk) = futures_util::StreamExt::next(&mut body.stream).await {
            let chunk = chunk.map_err(StorageError::io("reading a blob back"))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
        }
        Ok(Some(Verified {
            size,
            actual: hasher.finish(),
        }))
    }

    /// Where the bytes of `digest` are kept (a file path, an object key), for messages to
    /// an operator; `None`, the default, when the store has no such name to give.
    fn locate(&self, digest: &Digest) -> Option<String> {
        let _ = digest;
        None
    }

    /// Moves a committed blob aside, out of the store, in one atomic step, keeping its
    /// bytes for inspection; returns where they went (see [`BlobStore::locate`]), or
    /// `None` when the blob was absent.
    ///
    /// Meant for a blob [`BlobStore::verify`] found damaged: afterwards the store behaves
    /// as if the blob had never been committed (`stat` says `None`, `get` and `verify`
    /// find nothing, `list` omits it), so committing the same digest again stores it
    /// afresh. It moves whatever is stored under `digest` when it runs: a commit of the
    /// same digest racing with it may see its fresh copy moved aside too, which leaves
    /// the blob absent (to be pushed again), never damaged. Moving the same digest aside
    /// twice keeps only the later bytes.
    async fn quarantine(&self, digest: &Digest) -> Result<Option<String>, StorageError>;

    /// Starts an empty upload session under `id`, which must not be in use.
    async fn upload_create(&self, id: &str) -> Result<(), StorageError>;

    /// Appends every byte of `data` at offset `at`, which must equal the current size
    /// (`OffsetMismatch` otherwise, with nothing changed). Returns the new size.
    ///
    /// `Body` when `data` fails: a prefix of the received bytes is kept, and
    /// [`upload_size`](BlobStore::upload_size) says how long it is. `UploadUnknown` for an
    /// id that was never created, or was committed or aborted.
    async fn upload_append(&self, id: &str, at: u64, data: ByteStream)
        -> Result<u64, StorageError>;

    /// Current size of an upload (see the trait docs for what it counts), or `None` when
    /// the session does not exist.
    async fn upload_size(&self, id: &str) -> Result<Option<u64>, StorageError>;

    /// Verifies the upload against `expected` and makes it the blob of that digest;
    /// returns the blob size. The digest is checked over every byte before anything
    /// becomes visible, and the blob is durable when this returns; the session is then
    /// gone. `DigestMismatch` when the bytes have another digest: nothing becomes visible
    /// and the session stays as it was. Committing content already stored (even by two
    /// uploads at the same time) succeeds and leaves one blob.
    async fn upload_commit(&self, id: &str, expected: &Digest) -> Result<u64, StorageError>;

    /// Drops an upload session and its bytes. Unknown ids are not an error. Waits for an
    /// operation on the upload that is under way (an append receiving its body).
    async fn upload_abort(&self, id: &str) -> Result<(), StorageError>;

    /// Drops an upload session and its bytes unless an operation on it is under way;
    /// `false` (and nothing changed) when one is. For expiry: a client stalled in the
    /// middle of an append must not hold up the expiry of every other session, and is
    /// tried again later. Unknown ids are dropped (`true`).
    ///
    /// The default suits a backend that does not serialize the operations on an upload:
    /// its abort never waits.
    async fn upload_abort_if_idle(&self, id: &str) -> Result<bool, StorageError> {
        self.upload_abort(id).await.map(|()| true)
    }

    /// Frees the space the store keeps in reserve for a full disk, if it keeps any and
    /// has not freed it yet; whether it did. Called when another writer on the same
    /// filesystem (the metadata database) found it full, so that deletions, which free
    /// space, can still be recorded. The store takes the reserve back by itself once
    /// space is available again.
    async fn release_reserve(&self) -> bool {
        false
    }

    /// Checks that the store can be reached and used (for a readiness probe): the data
    /// directory exists, the bucket answers. The default says yes.
    async fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// A URL from which a client can fetch the committed blob directly, valid for
    /// `expires`, or `None` (the default) when this store serves its bytes itself. An
    /// object store answers with a presigned URL, so that a registry can redirect a pull
    /// and the bytes never pass through it. `BlobUnknown` when the blob is absent.
    async fn redirect_url(
        &self,
        digest: &Digest,
        expires: std::time::Duration,
    ) -> Result<Option<String>, StorageError> {
        let _ = (digest, expires);
        Ok(None)
    }

    /// Ids of every upload session present, including those from before a restart (for
    /// expiry and crash recovery).
    async fn upload_list(&self) -> Result<Vec<String>, StorageError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified_by_their_errno() {
        let class = |errno: i32| match StorageError::from_io(
            "testing",
            std::io::Error::from_raw_os_error(errno),
        ) {
            StorageError::Full { context, .. } => ("full", context),
            StorageError::Exhausted { context, .. } => ("exhausted", context),
            StorageError::Io { context, .. } => ("io", context),
            other => panic!("unexpected {other:?}"),
        };
        use rustix::io::Errno;
        assert_eq!(class(Errno::NOSPC.raw_os_error()), ("full", "testing"));
        assert_eq!(class(Errno::DQUOT.raw_os_error()), ("full", "testing"));
        assert_eq!(class(Errno::MFILE.raw_os_error()), ("exhausted", "testing"));
        assert_eq!(class(Errno::NFILE.raw_os_error()), ("exhausted", "testing"));
        assert_eq!(class(Errno::IO.raw_os_error()), ("io", "testing"));
        assert_eq!(class(Errno::ACCESS.raw_os_error()), ("io", "testing"));
        let other = StorageError::from_io("testing", std::io::Error::other("no errno"));
        assert!(matches!(other, StorageError::Io { .. }));
        assert_eq!(other.io_context(), Some("testing"));
        assert_eq!(StorageError::UploadUnknown("u".into()).io_context(), None);
    }
}
