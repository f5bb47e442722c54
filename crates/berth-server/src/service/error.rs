//! The service's domain error. It says what went wrong in registry terms; `crate::error`
//! maps each variant to a row of the OCI error table.

use berth_meta::MetaError;
use berth_oci::{Digest, DigestError, NameError, RepoName};
use berth_storage::StorageError;

/// Why a registry operation did not happen. Nothing was stored when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("blob {digest} is not in repository {repo}")]
    BlobUnknown { repo: RepoName, digest: Digest },
    #[error("blob {digest} of repository {repo} is linked but missing or short in storage")]
    BlobMissing { repo: RepoName, digest: Digest },
    #[error("upload {id} is not known in repository {repo}")]
    UploadUnknown { repo: RepoName, id: String },
    /// A chunk that does not continue the upload; `size` is where it must resume.
    #[error("{message}")]
    UploadRange {
        repo: RepoName,
        id: String,
        size: u64,
        message: String,
    },
    #[error("the uploaded content has digest {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("the digest query parameter is required to complete an upload")]
    DigestMissing,
    #[error("the request body ended with an error")]
    BodyFailed(#[source] std::io::Error),
    #[error("range is outside the blob of {size} bytes")]
    RangeUnsatisfiable { size: u64 },
    #[error("manifest {reference} is not in repository {repo}")]
    ManifestUnknown { repo: RepoName, reference: String },
    #[error(
        "manifest {reference} is a {media_type}, which the request's Accept header does not allow"
    )]
    ManifestNotAcceptable {
        reference: String,
        media_type: String,
    },
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("manifest is larger than the limit of {0} bytes")]
    ManifestTooLarge(usize),
    #[error("manifest digest is {actual}, not {expected} as in the URL")]
    ManifestDigestMismatch { expected: Digest, actual: Digest },
    #[error("manifest references content the repository does not have: {}", list(.0))]
    MissingReferences(Vec<Digest>),
    #[error("blob is still referenced by manifest(s) {} of this repository; delete them first", .0.join(", "))]
    BlobInUse(Vec<String>),
    #[error("manifest is a child of index(es) {} of this repository, which would break; delete them first", .0.join(", "))]
    ManifestInUse(Vec<String>),
    #[error("{0}")]
    TagRefused(String),
    /// The trust policy requires a valid signature of the manifest by one of `keys`
    /// (fingerprints), and it has none.
    #[error("manifest {digest} of {repo} has no valid signature by a key this repository requires (key fingerprint{}: {}); sign it and push the signature (berth sign, or cosign sign --key), then pull again", if .keys.len() == 1 { "" } else { "s" }, .keys.join(", "))]
    SignatureRequired {
        repo: RepoName,
        digest: Digest,
        keys: Vec<String>,
    },
    /// Storing `attempted` more bytes would take `repo` over its `[[quota]]`.
    #[error("repository {repo} is over its storage quota: {} used + {} pushed > limit {}; delete tags or images (and let garbage collection free them) or ask for a larger quota", super::quota::words(*.used), super::quota::words(*.attempted), super::quota::words(*.limit))]
    QuotaExceeded {
        repo: RepoName,
        used: u64,
        limit: u64,
        attempted: u64,
    },
    /// A tarball download of an index of several platforms that names none.
    #[error("{reference} is an index of several platforms; name one with ?platform= (available: {})", .available.join(", "))]
    ExportNeedsPlatform {
        reference: String,
        available: Vec<String>,
    },
    /// A tarball download names a platform the image does not have.
    #[error("{reference} has no image for platform {platform} (available: {})", .available.join(", "))]
    ExportPlatformUnknown {
        reference: String,
        platform: String,
        available: Vec<String>,
    },
    /// A tarball download of an artifact (a Helm chart, a signature, an SBOM), which
    /// `docker load` and `podman load` cannot load.
    #[error("{reference} is not a container image but an artifact ({kind}); tarball downloads hold images only: pull it with oras or berth copy instead")]
    ExportNotImage { reference: String, kind: String },
    #[error("only administrators of {0} may force a tag change")]
    ForceDenied(RepoName),
    #[error("repository {0} is not known")]
    NameUnknown(RepoName),
    /// A deletion of the blob is under way (here or in another process); try again.
    #[error("blob {0} is being deleted; try again in a moment")]
    BlobBusy(Digest),
    #[error("{0}")]
    ParameterInvalid(String),
    /// The disk of the blobs or of the metadata database is full (or over quota): nothing
    /// more can be stored until space is freed. The cause is logged, never shown.
    #[error("the registry's storage is full: {0}")]
    StorageFull(Box<dyn std::error::Error + Send + Sync>),
    /// The process is out of file descriptors, a passing condition: the client may retry
    /// shortly. The cause is logged, never shown.
    #[error("the registry is out of file descriptors: {0}")]
    Exhausted(Box<dyn std::error::Error + Send + Sync>),
    /// The metadata database cannot be reached (down, restarting, failing over): a
    /// passing condition, the client may retry shortly. The cause is logged, never shown.
    #[error("the registry's database is unavailable: {0}")]
    MetaUnavailable(MetaError),
    /// A change (push, delete) of a pull-through mirror's repository.
    #[error("repository {repo} is a read-only mirror of {upstream}")]
    MirrorReadOnly { repo: RepoName, upstream: String },
    /// A mirror's upstream could not give what a client asked for (unreachable,
    /// refusing, or sending content that does not match its digest).
    #[error("{0}")]
    MirrorUpstream(String),
    /// A storage failure; logged, never shown to a client.
    #[error(transparent)]
    Storage(StorageError),
    /// A metadata store failure; logged, never shown to a client.
    #[error(transparent)]
    Meta(MetaError),
}

fn list(digests: &[Digest]) -> String {
    digests
        .iter()
        .map(Digest::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<MetaError> for RegistryError {
    fn from(e: MetaError) -> RegistryError {
        match e {
            MetaError::MissingReferences(d) => RegistryError::MissingReferences(d),
            MetaError::BlobInUse(m) => RegistryError::BlobInUse(m),
            MetaError::ManifestInUse(m) => RegistryError::ManifestInUse(m),
            MetaError::TagRefused(m) => RegistryError::TagRefused(m),
            MetaError::BlobBusy(d) => RegistryError::BlobBusy(d),
            e @ MetaError::Full { .. } => RegistryError::StorageFull(Box::new(e)),
            e @ MetaError::Unavailable { .. } => RegistryError::MetaUnavailable(e),
            e => RegistryError::Meta(e),
        }
    }
}

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> RegistryError {
        match e {
            StorageError::DigestMismatch { expected, actual } => {
                RegistryError::DigestMismatch { expected, actual }
            }
            StorageError::Body(e) => RegistryError::BodyFailed(e),
            e @ StorageError::Full { .. } => RegistryError::StorageFull(Box::new(e)),
            e @ StorageError::Exhausted { .. } => RegistryError::Exhausted(Box::new(e)),
            e => RegistryError::Storage(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os_error(errno: i32) -> std::io::Error {
        std::io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn resource_errors_keep_their_class() {
        // ENOSPC and EMFILE on Linux.
        let full = StorageError::from_io("writing", os_error(28));
        assert!(matches!(
            RegistryError::from(full),
            RegistryError::StorageFull(_)
        ));
        let exhausted = StorageError::from_io("opening", os_error(24));
        assert!(matches!(
            RegistryError::from(exhausted),
            RegistryError::Exhausted(_)
        ));
        let other = StorageError::from_io("reading", os_error(5));
        assert!(matches!(
            RegistryError::from(other),
            RegistryError::Storage(_)
        ));
        let meta_full = MetaError::Full {
            context: "committing",
            message: "database or disk is full".into(),
        };
        assert!(matches!(
            RegistryError::from(meta_full),
            RegistryError::StorageFull(_)
        ));
        let meta_other = MetaError::Corrupt("x".into());
        assert!(matches!(
            RegistryError::from(meta_other),
            RegistryError::Meta(_)
        ));
    }
}
