//! What replication reads of this registry: stored manifests and blob bytes exactly as
//! they are, for [`crate::replication`]'s image source. Unlike the pull path these
//! reads are the registry's own: no trust policy applies (signatures and unsigned
//! images travel alike, the target applies its own policy), nothing is counted as a
//! pull or as bytes served, and a tag waiting at the publish gate is not visible yet.

use berth_meta::StoredManifest;
use berth_oci::{Digest, Reference, RepoName};
use berth_storage::{ByteStream, StorageError};

use super::{Registry, RegistryError, Result};

impl Registry {
    /// The manifest `reference` names in `repo`, as stored; `None` when there is none.
    pub async fn stored_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<StoredManifest>> {
        self.lookup(repo, reference).await
    }

    /// Every byte of a blob of `repo`: `BlobUnknown` when `repo` does not link it,
    /// `BlobMissing` when its bytes are gone or not of the recorded size.
    pub async fn stored_blob(&self, repo: &RepoName, digest: &Digest) -> Result<ByteStream> {
        let size = self.blob_size(repo, digest).await?;
        match self.blobs.get(digest, None).await {
            Ok(body) if body.total_size == size => Ok(body.stream),
            Ok(_) | Err(StorageError::BlobUnknown(_)) => Err(self.missing(repo, digest)),
            Err(e) => Err(RegistryError::from(e)),
        }
    }
}
