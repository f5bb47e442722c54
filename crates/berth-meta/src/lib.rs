//! Registry metadata: which repositories exist, which blobs each may serve, manifests,
//! tags, referrers and upload sessions.
//!
//! # Layout
//! - [`MetadataStore`]: the trait the server talks to, one method per question it asks.
//! - [`sqlite::SqliteStore`]: the embedded default backend. SQL specific to SQLite lives
//!   only there, with its migrations under `migrations/sqlite/`.
//!
//! **Architecture Invariant:** every change that must be all-or-nothing (a manifest with
//! its references and tags, a tag move, a deletion) is one transaction of the backend.
//! The metadata store never reads or writes blob bytes and knows nothing about HTTP.

pub mod sqlite;

use berth_oci::{Digest, RepoName, Tag};
use bytes::Bytes;

/// Errors of a metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The manifest references blobs or child manifests the repository does not have.
    #[error("manifest references content unknown to the repository: {}", join(.0))]
    MissingReferences(Vec<Digest>),
    /// The blob is still referenced by manifests of the repository.
    #[error("blob is referenced by manifest(s) {}", join(.0))]
    BlobInUse(Vec<String>),
    #[error("metadata database error while {context}: {message}")]
    Database {
        context: &'static str,
        message: String,
    },
    #[error("stored metadata is corrupt: {0}")]
    Corrupt(String),
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A manifest about to be stored, with what the registry learned from parsing it.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub digest: Digest,
    pub media_type: String,
    pub content: Bytes,
    /// Blobs that must be linked in the repository.
    pub blobs: Vec<Digest>,
    /// Child manifests that must exist in the repository.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    /// Manifest annotations as a JSON object (empty string for none).
    pub annotations_json: String,
}

/// A stored manifest.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub content: Bytes,
}

/// One entry of the referrers list of a subject.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations_json: String,
}

/// What a blob unlink did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlinked {
    /// The repository had no such blob.
    NotLinked,
    /// The link is gone; `orphaned` when no repository links the digest any more.
    Removed { orphaned: bool },
}

/// A page request: entries strictly after `last`, at most `n` of them.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub last: Option<String>,
    pub n: Option<usize>,
}

/// The registry's metadata. Every method is atomic.
#[async_trait::async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Records that `repo` holds the verified blob `digest` (creating the repository).
    async fn blob_link(&self, repo: &RepoName, digest: &Digest, size: u64)
        -> Result<(), MetaError>;

    /// Size of a blob linked in `repo`, or `None`.
    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError>;

    /// Removes a blob link, refusing while manifests of the repository reference it.
    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<Unlinked, MetaError>;

    /// True when any repository links `digest` (used before deleting blob bytes).
    async fn blob_linked_anywhere(&self, digest: &Digest) -> Result<bool, MetaError>;

    /// Stores a manifest and points `tags` at it, in one transaction, after checking
    /// that every referenced blob and child manifest is in the repository.
    async fn manifest_put(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tags: &[Tag],
    ) -> Result<(), MetaError>;

    /// A manifest by digest.
    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>, MetaError>;

    /// The manifest a tag points to.
    async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>, MetaError>;

    /// Deletes a manifest and every tag pointing to it; `false` when absent.
    async fn manifest_delete(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError>;

    /// Deletes one tag; `false` when absent.
    async fn tag_delete(&self, repo: &RepoName, tag: &Tag) -> Result<bool, MetaError>;

    /// Tags of a repository in lexical order, or `None` when the repository is unknown.
    async fn tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>, MetaError>;

    /// Repository names in lexical order.
    async fn repositories(&self, page: &Page) -> Result<Vec<String>, MetaError>;

    /// Manifests of `repo` whose `subject` is `digest`, optionally of one artifact type.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, MetaError>;

    /// Registers an upload session for `repo`.
    async fn upload_create(&self, id: &str, repo: &RepoName) -> Result<(), MetaError>;

    /// The repository of an upload session, refreshing its idle timer.
    async fn upload_touch(&self, id: &str) -> Result<Option<String>, MetaError>;

    /// Forgets an upload session.
    async fn upload_delete(&self, id: &str) -> Result<(), MetaError>;

    /// Ids of upload sessions idle for at least `idle_secs` seconds.
    async fn uploads_idle(&self, idle_secs: u64) -> Result<Vec<String>, MetaError>;

    /// Ids of every registered upload session.
    async fn upload_ids(&self) -> Result<Vec<String>, MetaError>;
}
