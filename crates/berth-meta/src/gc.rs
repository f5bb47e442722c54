//! What the garbage collector and the metadata store exchange: the candidates of a
//! sweep and the graph its mark walks.
//!
//! The collector (`berth_server::service::gc`) decides what is garbage from these
//! values, read without any lock; the store's `gc_*` writes then check each decision
//! again inside their own short transaction, so that a push, a tag move or a mount
//! that happened in between wins over the collector.

use berth_oci::Digest;

/// A blob link: `repo` may serve `digest`, of `size` bytes, linked at `linked_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub repo: String,
    pub digest: Digest,
    pub size: u64,
    /// Unix seconds when the link was made.
    pub linked_at: i64,
}

impl Link {
    /// The cursor that lists links after this one.
    pub fn cursor(&self) -> LinkCursor {
        LinkCursor {
            repo: self.repo.clone(),
            digest: self.digest.clone(),
        }
    }
}

/// Where a listing of links resumes: strictly after this (repository, digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCursor {
    pub repo: String,
    pub digest: Digest,
}

/// A manifest of a repository with what may keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestNode {
    pub digest: Digest,
    /// Unix seconds when it was stored.
    pub created_at: i64,
    /// Tags pointing at it, in lexical order (hidden ones included: a cosign v2
    /// `sha256-<hex>.sig` tag keeps its manifest like any tag).
    pub tags: Vec<String>,
    /// Child manifests it lists (an index).
    pub children: Vec<Digest>,
    /// The manifest it refers to (`subject`), if any.
    pub subject: Option<Digest>,
}

/// A blob link with the manifests that reference the blob in its repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobHolders {
    pub size: u64,
    /// Unix seconds when the link was made.
    pub linked_at: i64,
    /// Manifests of the repository listing the blob, in digest order.
    pub manifests: Vec<Digest>,
}
