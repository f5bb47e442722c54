//! Registry metadata: which repositories exist, which blobs each may serve, manifests,
//! tags, referrers and upload sessions.
//!
//! # Layout
//! - [`MetadataStore`]: the trait the server talks to, one method per question it asks.
//! - [`AccountStore`]: accounts, grants, public patterns, the audit log, the webhook
//!   outbox ([`OutboxEntry`]) and the replication queue ([`ReplicationTask`]).
//! - [`StatsStore`]: download and request counters.
//! - [`cache::CachingStore`]: a read cache in front of any [`MetadataStore`].
//! - [`artifact_tags`]: the rules for tags that attach artifacts on registries without
//!   the referrers API (cosign v2's `.sig`/`.att`/`.sbom`, the referrers tag schema).
//! - [`Gate`]: the publish gate's bookkeeping (pending tags, recorded signatures).
//! - [`bases`]: the values of the stale-base report (an image's layers, its base, a
//!   stale image) and their backend-neutral rules.
//! - [`gc`]: the values the garbage collector's store methods exchange (the
//!   `gc_*` methods of [`MetadataStore`]).
//! - [`scans`]: [`ScanStore`], vulnerability scans of pushed images and the durable
//!   queue of those still to make.
//! - `testsuite` (feature `testsuite`): the conformance suite every backend must pass.
//! - [`sqlite::SqliteStore`]: the embedded default backend. SQL specific to SQLite lives
//!   only there, with its migrations under `migrations/sqlite/`.
//! - `postgres::PgStore` (feature `postgres`): the backend several replicas share, with
//!   its migrations under `migrations/postgres/`; its change notifications keep the
//!   caches of every replica current.
//!
//! **Architecture Invariant:** every change that must be all-or-nothing (a manifest with
//! its references and tags, a tag move, a deletion) is one transaction of the backend.
//! The metadata store never reads or writes blob bytes and knows nothing about HTTP.
//!
//! # Blob lifecycle across processes
//!
//! Blob bytes are stored once per digest and shared by every repository that links
//! them, possibly by several processes over one storage. Placing bytes and deleting them
//! must never interleave so that a delete removes bytes a concurrent push just linked.
//! The metadata store orders the two with *claims* and *tombstones*:
//!
//! - **Placing** bytes of `D` (committing an upload, or relying on bytes already stored):
//!   [`MetadataStore::blob_claim`], then place (or find) the bytes, then
//!   [`MetadataStore::blob_link_claimed`]; if placing fails,
//!   [`MetadataStore::blob_claim_release`]. [`MetaError::BlobBusy`] from the claim means
//!   a deletion of `D` is under way: retry shortly.
//! - **Deleting**: [`MetadataStore::blob_unlink`]; only when it answers
//!   `Removed { orphaned: true }` delete the bytes, then call
//!   [`MetadataStore::blob_deletion_done`].
//! - **Mounting** `D` from another repository: [`MetadataStore::blob_mount`], one
//!   transaction, never a size lookup followed by a link.
//!
//! Why this is safe: an unlink answers `orphaned: true` only from a transaction that saw
//! no link and no live claim of `D`, and that same transaction records a tombstone.
//! While the tombstone stands no claim can be taken and no plain link made, and a mount
//! needs an existing link, of which there is none; so no link of `D` can appear until the
//! deleter is done. A placer that claimed before the unlink makes it answer
//! `orphaned: false`; a placer that comes after is refused until the bytes are gone, and
//! only then writes its own. Both decisions are made inside transactions of the one
//! shared database, so they hold across processes, not just within one. (The SQLite
//! store, written by one process only, keeps its claims in that process's memory and
//! takes, checks and ends them inside the same writer transactions: the same order,
//! without writing a claim row per pushed blob.)
//!
//! # The publish gate
//!
//! A repository can require that release tags only ever point at signed manifests. The
//! store does not verify signatures (that needs keys and cryptography, the server's
//! job); it keeps the two facts the gate needs, and changes them in the transactions
//! that store manifests, so no interleaving of pushes can leave a tag waiting for a
//! signature that is already there:
//!
//! - **pending tags**: tags of a push that must wait for a signature of their manifest.
//!   They are absent from [`MetadataStore::tag_list`] and
//!   [`MetadataStore::manifest_by_tag`]; [`MetadataStore::pending_tags`] lists them.
//! - **recorded signatures**: "manifest `S` is a valid signature of `D` by key `K`",
//!   written by the push of `S` when the server verified it ([`Gate::signs`]).
//!
//! [`MetadataStore::manifest_put_gated`] with [`Gate::hold_unless_signed_by`] writes the
//! push's tags as pending unless a signature of the manifest by one of the keys is
//! recorded; with [`Gate::signs`] it records the signature and makes the subject's pending
//! tags visible, in the same transaction. Both run on the store's one writer (or under
//! its locks), so whichever comes second sees the first.
//!
//! A process can die holding either: a tombstone older than [`TOMBSTONE_STALE_SECS`] is
//! taken to be abandoned (deleting one file takes far less), and a claim older than
//! [`CLAIM_STALE_SECS`] no longer protects its bytes nor can be linked
//! ([`MetaError::ClaimLost`]).

pub mod artifact_tags;
pub mod bases;
pub mod cache;
pub mod gc;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod scans;
pub mod sqlite;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

use std::sync::Arc;

use berth_oci::{Digest, RepoName, Tag};
use bytes::Bytes;

pub use scans::ScanStore;

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
    /// The database's filesystem is full or over quota (SQLite's `SQLITE_FULL`): nothing
    /// more can be written until space is freed.
    #[error("metadata database is full while {context}: {message}")]
    Full {
        context: &'static str,
        message: String,
    },
    /// The database cannot be reached (down, restarting, or every pooled connection is
    /// busy past the wait limit): a passing condition, worth retrying shortly. Only
    /// networked backends (PostgreSQL) answer it.
    #[error("metadata database is unavailable while {context}: {message}")]
    Unavailable {
        context: &'static str,
        message: String,
    },
    #[error("stored metadata is corrupt: {0}")]
    Corrupt(String),
    /// A tag policy refused a tag change; the message says which tag and why.
    #[error("{0}")]
    TagRefused(String),
    /// The object to create already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The manifest is a child of index(es) of the repository (listed), which would be
    /// left pointing at nothing; delete them first.
    #[error("manifest is referenced by index(es) {}", join(.0))]
    ManifestInUse(Vec<String>),
    /// The blob's bytes are being deleted (a fresh deletion tombstone exists): it can be
    /// neither claimed nor linked until the deletion is done. Retry shortly.
    #[error("blob {0} is being deleted; try again shortly")]
    BlobBusy(Digest),
    /// The claim (by id) was released or outlived [`CLAIM_STALE_SECS`], so its bytes may
    /// have been deleted since: it cannot be linked. Release it, then place the bytes again
    /// under a new claim.
    #[error("blob claim {0} is no longer valid")]
    ClaimLost(String),
}

/// Age in seconds after which a deletion tombstone is taken to be abandoned by a
/// deleter that died, and is ignored (and removed) by claims and links.
pub const TOMBSTONE_STALE_SECS: u64 = 5 * 60;

/// Age in seconds after which a claim no longer protects its bytes from deletion and can
/// no longer be linked: its holder is taken to have died.
pub const CLAIM_STALE_SECS: u64 = 24 * 3600;

/// Age in seconds after which a quota reservation no longer counts against its
/// repository: its holder is taken to have died, or its request to have been dropped
/// before it could release it. A reservation lives from just before an upload's bytes
/// are committed (or a mount or manifest stored) until just after, seconds at most.
pub const RESERVATION_STALE_SECS: u64 = 15 * 60;

/// What a quota reservation holds bytes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservedKind {
    /// A blob about to be linked into the repository (a commit or a mount).
    Blob,
    /// A manifest about to be stored in the repository.
    Manifest,
}

/// Bytes about to be added to a repository under a `[[quota]]`, held by
/// [`MetadataStore::quota_reserve`] so that concurrent pushes cannot together exceed
/// the limit that each of them alone respects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaReservation {
    /// Unique among reservations and chosen by the caller, so that a caller can release
    /// a reservation even when the answer to reserving it was lost.
    pub id: String,
    pub repo: RepoName,
    pub kind: ReservedKind,
    pub digest: Digest,
    pub bytes: u64,
}

/// The answer of [`MetadataStore::quota_reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// The bytes fit and are held (or the repository already holds the content, which
    /// then adds nothing and holds nothing).
    Granted,
    /// The bytes do not fit: `used` is what the repository stores plus what other live
    /// reservations hold. Nothing was recorded.
    Refused { used: u64 },
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
    /// The `org.opencontainers.image.version` annotation, if any.
    pub version: Option<String>,
    /// `os/arch[/variant]` of a single-platform image, from its config.
    pub platform: Option<String>,
    /// A copy of an upstream registry's manifest in a pull-through mirror repository:
    /// its blobs and children are recorded as references (so garbage collection keeps
    /// them once they are fetched) but not required to be present, since a mirror
    /// fetches them only when a client asks for them.
    pub mirrored: bool,
}

/// What a tag points to, as a tag policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTarget {
    pub digest: String,
    /// The manifest's version annotation.
    pub version: Option<String>,
    /// Every tag of the repository pointing at this manifest (after the change, for a new
    /// target).
    pub tags: Vec<String>,
}

/// One tag about to move, appear or disappear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagChange {
    pub repo: String,
    pub tag: String,
    /// Where the tag points now, if it exists.
    pub current: Option<TagTarget>,
    /// Where it will point; `None` for a deletion.
    pub new: Option<TagTarget>,
}

/// A rule checked inside the transaction that changes tags, so that no concurrent
/// change can slip between the check and the write. Refusing any change of a request
/// refuses the whole request.
pub trait TagGuard: Send + Sync + 'static {
    /// `Err(message)` refuses the change.
    fn check(&self, change: &TagChange) -> Result<(), String>;

    /// Whether a change of `tag` can be refused at all. Stores skip [`TagGuard::check`]
    /// (and reading the targets it would need) for tags that are of no concern: a
    /// manifest may carry thousands of tags, and listing them for every tag pushed would
    /// make pushing n tags O(n²).
    fn concerns(&self, tag: &str) -> bool {
        let _ = tag;
        true
    }
}

/// How a manifest push places its tags under the publish gate (see the crate docs).
/// The default is no gate: tags are visible at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    /// Hold the push's tags as pending unless a signature of the manifest by one of these
    /// key fingerprints is recorded. `None`: no gate.
    pub hold_unless_signed_by: Option<Vec<String>>,
    /// The manifest being stored is a verified signature: record it, and reveal the
    /// subject's pending tags.
    pub signs: Option<SignatureRecord>,
}

/// A verified signature to record: the manifest being stored signs `subject` with each
/// of `keys` (fingerprints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureRecord {
    pub subject: Digest,
    pub keys: Vec<String>,
}

/// What [`MetadataStore::manifest_put_gated`] did with tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateOutcome {
    /// Tags of the push that are now pending (waiting for a signature).
    pub held: Vec<String>,
    /// Pending tags of the signed subject that became visible.
    pub revealed: Vec<String>,
    /// Pending tags of the signed subject that the tag guard refused to reveal (a newer
    /// release moved a floating tag meanwhile), with its reason: they are dropped.
    pub dropped: Vec<(String, String)>,
}

/// A tag waiting for a signature of its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTag {
    pub tag: String,
    pub digest: Digest,
    /// Unix seconds of the push.
    pub since: i64,
}

/// A signature the server verified when it was pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedSignature {
    pub subject: Digest,
    /// The signature manifest's digest.
    pub signature: Digest,
    /// The signing key's fingerprint.
    pub key: String,
    /// Unix seconds of the push.
    pub at: i64,
}

/// A stored manifest.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub content: Bytes,
    /// The `org.opencontainers.image.version` annotation, if any.
    pub version: Option<String>,
    /// `os/arch[/variant]` of a single-platform image, from its config.
    pub platform: Option<String>,
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

/// A claim on a digest: "bytes of this digest are being placed; do not delete them".
/// Ended by [`MetadataStore::blob_link_claimed`] or [`MetadataStore::blob_claim_release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobClaim {
    /// Unique among claims, chosen by the store.
    pub id: String,
    pub digest: Digest,
}

/// What a blob unlink did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlinked {
    /// The repository had no such blob.
    NotLinked,
    /// The link is gone. `orphaned` when no repository links the digest any more and no
    /// live claim protects it: the caller must then delete the bytes and call
    /// [`MetadataStore::blob_deletion_done`].
    Removed { orphaned: bool },
}

/// A repository as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySummary {
    pub name: String,
    pub tags: u64,
    /// Bytes of the blobs linked in the repository.
    pub size: u64,
    /// Unix seconds of the newest manifest, if any.
    pub last_push: Option<i64>,
}

/// What a repository stores, as quotas count it: each blob linked in it once (however
/// many manifests list it) and each manifest's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryUsage {
    pub name: String,
    /// Blobs linked in the repository.
    pub blobs: u64,
    /// Their bytes, each blob counted once.
    pub blob_bytes: u64,
    /// Manifests stored in the repository.
    pub manifests: u64,
    /// Their bytes (the exact bytes pushed).
    pub manifest_bytes: u64,
}

impl RepositoryUsage {
    /// Every byte the repository holds: blobs and manifests.
    pub fn bytes(&self) -> u64 {
        self.blob_bytes.saturating_add(self.manifest_bytes)
    }
}

/// A tag with what it points to, for the dashboard.
#[derive(Debug, Clone)]
pub struct TagDetail {
    pub tag: String,
    pub manifest: StoredManifest,
    /// Unix seconds of the tag's last move.
    pub updated_at: i64,
}

/// A page request: entries strictly after `last`, at most `n` of them.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub last: Option<String>,
    pub n: Option<usize>,
}

/// Which tags a tags listing includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagListing {
    /// Every tag but those [`artifact_tags::is_hidden`] names (cosign v2 artifact tags
    /// and the referrers tag schema's tags): what the tags API answers by default.
    #[default]
    Visible,
    /// Every tag.
    All,
}

/// The registry's metadata. Every method is atomic.
#[async_trait::async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Whether the database answers, as cheaply as it can tell (for readiness probes).
    async fn ping(&self) -> Result<(), MetaError> {
        Ok(())
    }

    /// Records that `repo` holds the verified blob `digest` (creating the repository),
    /// for callers that know the bytes are stored and need no claim. Refused with
    /// [`MetaError::BlobBusy`] while a deletion of the digest is under way; prefer the
    /// claim protocol (see the crate docs) whenever bytes are being placed.
    async fn blob_link(&self, repo: &RepoName, digest: &Digest, size: u64)
        -> Result<(), MetaError>;

    /// Claims `digest` before placing its bytes, in one transaction: refused with
    /// [`MetaError::BlobBusy`] while a deletion tombstone younger than
    /// [`TOMBSTONE_STALE_SECS`] exists (an older one is removed: its deleter died).
    /// While the claim lives, [`MetadataStore::blob_unlink`] never orphans the digest.
    /// The claim must be ended by [`MetadataStore::blob_link_claimed`] or
    /// [`MetadataStore::blob_claim_release`].
    async fn blob_claim(&self, digest: &Digest) -> Result<BlobClaim, MetaError>;

    /// Links the claimed blob into `repo` (creating the repository) and ends the claim,
    /// in one durable transaction that also ends the upload session `upload` whose bytes
    /// these are, if one is given (so a finished upload costs one write, and its session
    /// never outlives the link). [`MetaError::ClaimLost`] when the claim was released or
    /// is older than [`CLAIM_STALE_SECS`]; the session then stays.
    async fn blob_link_claimed(
        &self,
        claim: &BlobClaim,
        repo: &RepoName,
        size: u64,
        upload: Option<&str>,
    ) -> Result<(), MetaError>;

    /// Ends a claim without linking (placing the bytes failed). Releasing a claim that no
    /// longer exists does nothing.
    async fn blob_claim_release(&self, claim: &BlobClaim) -> Result<(), MetaError>;

    /// Records that the bytes of `digest`, orphaned by [`MetadataStore::blob_unlink`],
    /// are deleted: removes the deletion tombstone so the digest can be claimed again.
    async fn blob_deletion_done(&self, digest: &Digest) -> Result<(), MetaError>;

    /// Cross-repository mount, in one transaction: if `from` links `digest`, links it into
    /// `to` too (creating the repository) and returns its size; `None` otherwise. No
    /// deletion can be under way while `from` links the digest, so no claim is needed.
    async fn blob_mount(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, MetaError>;

    /// Size of a blob linked in `repo`, or `None`.
    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError>;

    /// Removes a blob link, refusing while manifests of the repository reference it.
    /// Answers `Removed { orphaned: true }` only when no link of the digest remains and no
    /// claim younger than [`CLAIM_STALE_SECS`] exists; the same transaction then records a
    /// deletion tombstone, and the caller must delete the bytes and call
    /// [`MetadataStore::blob_deletion_done`].
    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<Unlinked, MetaError>;

    /// Repositories that link `digest`, in lexical order, at most `limit` of them.
    async fn blob_repositories(
        &self,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<String>, MetaError>;

    /// Every repository with its tag count, size and last push, in lexical order.
    async fn repository_summaries(&self) -> Result<Vec<RepositorySummary>, MetaError>;

    /// What `repo` stores ([`RepositoryUsage`]); with `None`, every repository's, in
    /// lexical order. A repository that does not exist is absent from the answer. Quotas
    /// ask this on pushes into repositories a quota covers, so it must be an indexed
    /// read of the repository's own rows, never a scan of every repository.
    async fn repository_usage(
        &self,
        repo: Option<&RepoName>,
    ) -> Result<Vec<RepositoryUsage>, MetaError>;

    /// Reserves `r.bytes` of `r.repo`'s quota of `limit` bytes, in one transaction that
    /// is ordered against every other reservation of the repository, on every process
    /// sharing the store. It counts what the repository stores (as
    /// [`MetadataStore::repository_usage`]) plus the live reservations of other ids whose
    /// content the repository does not hold yet (each kind and digest once, at its
    /// largest), and records `r` unless that count plus what `r` adds to it (`r.bytes`
    /// beyond what another reservation of the same content holds) exceeds `limit`
    /// ([`Reserved::Refused`], nothing recorded). Content the repository already holds is
    /// granted without being recorded: it adds nothing.
    ///
    /// A reservation stops counting the moment its blob is linked (or its manifest
    /// stored) in the repository, in the transaction of that write, which so turns the
    /// reservation into usage atomically; the caller then releases it with
    /// [`MetadataStore::quota_release`], which it must also do when the write fails.
    /// Reservations older than [`RESERVATION_STALE_SECS`] count no longer.
    async fn quota_reserve(&self, r: &QuotaReservation, limit: u64) -> Result<Reserved, MetaError>;

    /// Ends the reservation `id`; ending one that does not exist does nothing.
    async fn quota_release(&self, id: &str) -> Result<(), MetaError>;

    /// Every tag of `repo` with its manifest, in lexical order.
    async fn tag_details(&self, repo: &RepoName) -> Result<Vec<TagDetail>, MetaError>;

    /// Tags of `repo` pointing at `digest`, in lexical order.
    async fn tags_of(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<String>, MetaError>;

    /// Distinct blobs linked anywhere and their total size in bytes.
    async fn stored_bytes(&self) -> Result<(u64, u64), MetaError>;

    /// Stores a manifest and points `tags` at it, in one transaction, after checking
    /// that every referenced blob and child manifest is in the repository and that
    /// `guard` accepts every tag change. A pending tag of the same name is dropped: the
    /// newest push of a name decides.
    async fn manifest_put(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tags: &[Tag],
        guard: Option<Arc<dyn TagGuard>>,
    ) -> Result<(), MetaError> {
        self.manifest_put_gated(repo, m, tags, guard, &Gate::default())
            .await
            .map(|_| ())
    }

    /// [`MetadataStore::manifest_put`] under the publish gate, in one transaction: with
    /// [`Gate::hold_unless_signed_by`], the tags become pending (replacing pending tags
    /// of the same names, leaving visible ones where they are) unless a signature of
    /// the manifest by one of the keys is recorded; with [`Gate::signs`], the signature
    /// is recorded and every pending tag of its subject becomes visible, each checked by
    /// `guard` (a refused one is dropped and reported, never failing the push). The
    /// guard checks held tags as if they moved, so a conflict is refused at push time.
    async fn manifest_put_gated(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tags: &[Tag],
        guard: Option<Arc<dyn TagGuard>>,
        gate: &Gate,
    ) -> Result<GateOutcome, MetaError>;

    /// Tags of `repo` waiting for a signature, in lexical order.
    async fn pending_tags(&self, repo: &RepoName) -> Result<Vec<PendingTag>, MetaError>;

    /// Signatures recorded in `repo` (of `subject` only, if given), by subject, then
    /// signature, then key.
    async fn recorded_signatures(
        &self,
        repo: &RepoName,
        subject: Option<&Digest>,
    ) -> Result<Vec<RecordedSignature>, MetaError>;

    /// Indexes of `repo` that list `digest` as a child, at most `limit` of them.
    async fn index_parents(
        &self,
        repo: &RepoName,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<Digest>, MetaError>;

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

    /// Deletes a manifest and every tag pointing to it (each checked by `guard`), its
    /// pending tags and the signatures recorded by or of it;
    /// `false` when absent. A manifest that an index of the repository lists as a child
    /// is refused with [`MetaError::ManifestInUse`] (the index would break), whatever the
    /// guard says.
    async fn manifest_delete(
        &self,
        repo: &RepoName,
        digest: &Digest,
        guard: Option<Arc<dyn TagGuard>>,
    ) -> Result<bool, MetaError>;

    /// Deletes one tag (checked by `guard`), or a pending tag of that name; `false` when
    /// neither exists. Deleting a cosign v2 `.sig` tag forgets the signatures its
    /// manifest recorded of its subject.
    async fn tag_delete(
        &self,
        repo: &RepoName,
        tag: &Tag,
        guard: Option<Arc<dyn TagGuard>>,
    ) -> Result<bool, MetaError>;

    /// Tags of a repository in lexical order, or `None` when the repository is unknown;
    /// `listing` says whether hidden tags (see [`artifact_tags`]) are included.
    async fn tag_list(
        &self,
        repo: &RepoName,
        page: &Page,
        listing: TagListing,
    ) -> Result<Option<Vec<String>>, MetaError>;

    /// The visible tags of a repository ([`TagListing::Visible`]).
    async fn tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>, MetaError> {
        self.tag_list(repo, page, TagListing::Visible).await
    }

    /// Repository names in lexical order.
    async fn repositories(&self, page: &Page) -> Result<Vec<String>, MetaError>;

    /// Manifests of `repo` whose `subject` is `digest`, and those its cosign v2 artifact
    /// tags point at (`sha256-<hex>.sig`, `.att`, `.sbom`, see [`artifact_tags`]), each
    /// once, optionally of one artifact type (a manifest's `artifactType`, else its
    /// config's media type).
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

    /// Blob links that no manifest of their repository references and that were made at
    /// or before `linked_before` (unix seconds), in order of (repository, digest) after
    /// `after`, at most `limit`. A read: the garbage collector's candidates, which
    /// [`MetadataStore::gc_unlink`] checks again.
    async fn gc_unreferenced_links(
        &self,
        after: Option<&gc::LinkCursor>,
        linked_before: i64,
        limit: usize,
    ) -> Result<Vec<gc::Link>, MetaError>;

    /// Removes each of `links` that is still unreferenced by the manifests of its
    /// repository and was made at or before `linked_before`, in one transaction; returns
    /// those removed. Never records a tombstone and never deletes bytes: the bytes of a
    /// digest left unlinked are an orphan that [`MetadataStore::gc_tombstone`] hands to
    /// the collector.
    async fn gc_unlink(
        &self,
        links: &[gc::Link],
        linked_before: i64,
    ) -> Result<Vec<gc::Link>, MetaError>;

    /// For each digest of `digests` that no repository links, that no live claim
    /// protects and that no other deleter is deleting, records a deletion tombstone, in
    /// one transaction; returns those. The caller must delete their bytes and then call
    /// [`MetadataStore::gc_deletions_done`] (see the crate docs: it is
    /// [`MetadataStore::blob_unlink`]'s `orphaned: true` for bytes no link names).
    async fn gc_tombstone(&self, digests: &[Digest]) -> Result<Vec<Digest>, MetaError>;

    /// [`MetadataStore::blob_deletion_done`] for many digests, in one transaction.
    async fn gc_deletions_done(&self, digests: &[Digest]) -> Result<(), MetaError>;

    /// How many repositories link each of `digests` (0 for none), in the same order.
    async fn gc_link_counts(&self, digests: &[Digest]) -> Result<Vec<u64>, MetaError>;

    /// Every manifest of `repo` with what keeps it: its tags, child manifests and
    /// subject (for the collector's mark and its explanations).
    async fn gc_manifests(&self, repo: &RepoName) -> Result<Vec<gc::ManifestNode>, MetaError>;

    /// Deletes each manifest of `digests` from `repo` (with its references, what the
    /// publish gate recorded of it, and its [`ScanStore`] row, done or queued) that, when
    /// the transaction runs, no tag points at, no manifest of the repository lists as a
    /// child, whose subject is not a manifest of the repository, and that was stored at
    /// or before `created_before`; in one transaction. Returns those deleted.
    async fn gc_delete_manifests(
        &self,
        repo: &RepoName,
        digests: &[Digest],
        created_before: i64,
    ) -> Result<Vec<Digest>, MetaError>;

    /// The link of `digest` in `repo` with the manifests of the repository that
    /// reference it as a blob, or `None` when the repository does not link it.
    async fn gc_blob_holders(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<gc::BlobHolders>, MetaError>;

    /// Records the ordered layers of the image manifest `image.digest` of `repo` with
    /// the base it was built on, and returns that base (an image already recorded keeps
    /// its first record, since re-tagging it does not rebuild it): the declared one when the annotations name one (its declared digest, else
    /// what its tag points at now; `None` when that tag does not exist here), else the
    /// image tagged (in any repository) whose whole layer list is the longest proper
    /// prefix of these layers, the most recently tagged one on a tie.
    async fn image_layers_put(
        &self,
        repo: &RepoName,
        image: &bases::ImageLayers,
    ) -> Result<Option<bases::ImageBase>, MetaError>;

    /// Every tagged image whose recorded base tag now points at another digest than the
    /// one it was built on, by repository then digest.
    async fn stale_images(&self) -> Result<Vec<bases::StaleImage>, MetaError>;
}

/// Whether an account is a person or a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    User,
    Robot,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Robot => "robot",
        }
    }
}

/// An account as stored. The secret is only ever stored hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub kind: AccountKind,
    pub secret_hash: String,
    pub disabled: bool,
    /// Unix seconds after which the account can no longer log in.
    pub expires_at: Option<i64>,
    /// Unix seconds; 0 means "now" when creating.
    pub created_at: i64,
}

/// A grant as stored: a repository pattern and its comma-separated actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGrant {
    pub pattern: String,
    pub actions: String,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditEvent {
    /// Unix seconds; 0 means "now" when appending.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub client: String,
}

/// Accounts and everything about who may do what, and the durable records of what
/// happened: the audit log and the webhook outbox. Every method is atomic.
#[async_trait::async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates an account; [`MetaError::Conflict`] when the name is taken.
    async fn account_create(&self, account: &Account) -> Result<(), MetaError>;
    async fn account_get(&self, name: &str) -> Result<Option<Account>, MetaError>;
    async fn account_list(&self) -> Result<Vec<Account>, MetaError>;
    async fn account_count(&self) -> Result<u64, MetaError>;
    /// Replaces the secret hash; `false` when the account does not exist.
    async fn account_set_secret(&self, name: &str, secret_hash: &str) -> Result<bool, MetaError>;
    async fn account_set_disabled(&self, name: &str, disabled: bool) -> Result<bool, MetaError>;
    /// Deletes an account and its grants.
    async fn account_delete(&self, name: &str) -> Result<bool, MetaError>;
    /// Sets the actions of `account` on `pattern` (replacing earlier ones); `false` when
    /// the account does not exist.
    async fn grant_set(
        &self,
        account: &str,
        pattern: &str,
        actions: &str,
    ) -> Result<bool, MetaError>;
    async fn grant_remove(&self, account: &str, pattern: &str) -> Result<bool, MetaError>;
    async fn grants(&self, account: &str) -> Result<Vec<StoredGrant>, MetaError>;
    async fn public_add(&self, pattern: &str) -> Result<(), MetaError>;
    async fn public_remove(&self, pattern: &str) -> Result<bool, MetaError>;
    async fn public_patterns(&self) -> Result<Vec<String>, MetaError>;
    async fn audit_append(&self, event: &AuditEvent) -> Result<(), MetaError>;
    /// Entries at or after `since` (unix seconds), newest last, at most `limit`.
    async fn audit_list(&self, since: i64, limit: usize) -> Result<Vec<AuditEvent>, MetaError>;
    /// Deletes the entries before `before` (unix seconds), in batches; returns how many.
    async fn audit_prune(&self, before: i64) -> Result<u64, MetaError>;

    // The webhook outbox (see [`OutboxEntry`]). Times are unix milliseconds.

    /// Adds `entries` to the outbox in one transaction, durable when answered, each due
    /// at `now_ms` with no attempt made and its retry window starting at `now_ms`.
    async fn outbox_add(&self, entries: &[OutboxNew], now_ms: i64) -> Result<(), MetaError>;
    /// Deliveries that are not dead and whose next attempt is at or before `now_ms`,
    /// by next attempt then id, at most `limit`. A store shared by several processes
    /// may leave out, for a while, deliveries it just gave to another process (a lease:
    /// the PostgreSQL store does), so that two do not send the same one at once.
    async fn outbox_due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEntry>, MetaError>;
    /// A delivery succeeded: deletes it and records `at_ms` as its hook's last success.
    /// `false` (and nothing recorded) when the delivery is gone. Need not be durable when
    /// answered: a success lost to a crash is delivered again, with the same event id.
    async fn outbox_delivered(&self, id: i64, at_ms: i64) -> Result<bool, MetaError>;
    /// An attempt failed with `error`: counts it and keeps the error; the next attempt is
    /// at `retry_at_ms`, or, with `None`, the delivery is dead (kept, never attempted
    /// again until [`AccountStore::outbox_redeliver`]). Records `at_ms` and `error` as
    /// the hook's last failure. `false` when the delivery is gone. Need not be durable.
    async fn outbox_failed(
        &self,
        id: i64,
        error: &str,
        retry_at_ms: Option<i64>,
        at_ms: i64,
    ) -> Result<bool, MetaError>;
    /// The delivery status of every hook that has deliveries in the outbox or a recorded
    /// success or failure, by hook name.
    async fn outbox_status(&self) -> Result<Vec<OutboxStatus>, MetaError>;
    /// Makes every delivery of `hook`, dead ones included, due at `now_ms` with no
    /// attempt counted and a retry window starting at `now_ms`; returns how many.
    async fn outbox_redeliver(&self, hook: &str, now_ms: i64) -> Result<u64, MetaError>;

    // The replication queue (see [`ReplicationTask`]). Times are unix milliseconds.

    /// Queues `tasks` in one transaction, durable when answered. A task whose (rule,
    /// repository, reference) is already queued supersedes that row instead of adding
    /// one: its operation is replaced, its `seq` raised, its attempts reset, it is due
    /// at `now_ms` and no longer dead (a dead row's lag starts again at `now_ms`; a
    /// pending one keeps its `created_ms`). A new row is due at `now_ms`.
    async fn replication_enqueue(
        &self,
        tasks: &[ReplicationNew],
        now_ms: i64,
    ) -> Result<(), MetaError>;
    /// Rows that are not dead and whose next attempt is at or before `now_ms`, by next
    /// attempt then id, at most `limit`. A store shared by several processes leases them
    /// to the caller for `lease_ms` (the PostgreSQL store does; the holder itself still
    /// gets them), so that two processes do not copy the same row at once.
    async fn replication_claim(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<ReplicationTask>, MetaError>;
    /// The row `id` was replicated as of its `seq`: deleted if no change superseded it
    /// meanwhile (else only its lease ends, so the newer change is replicated too);
    /// counts a success of its rule at `at_ms`. `false` when the row was not deleted.
    /// Need not be durable: a success lost to a crash is replicated again, which finds
    /// the target already holding it.
    async fn replication_done(&self, id: i64, seq: i64, at_ms: i64) -> Result<bool, MetaError>;
    /// An attempt of the row `id` failed with `error`: counts it (for the row and its
    /// rule), keeps the error and ends the lease; the next attempt is at `retry_at_ms`,
    /// or with `None` the row is dead (kept, not attempted until a change or a full sync
    /// queues it again). A row superseded since (another `seq`) is only released, due at
    /// once. `false` when the row is gone. Need not be durable.
    async fn replication_failed(
        &self,
        id: i64,
        seq: i64,
        error: &str,
        retry_at_ms: Option<i64>,
        at_ms: i64,
    ) -> Result<bool, MetaError>;
    /// The status of every rule that has queued rows or a recorded outcome, by rule.
    async fn replication_status(&self) -> Result<Vec<ReplicationStatus>, MetaError>;
    /// Rows that failed at least once (dead ones included), newest row
    /// first (by id, descending), at most `limit`.
    async fn replication_failing(&self, limit: usize) -> Result<Vec<ReplicationTask>, MetaError>;
}

/// What a replication row asks of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationOp {
    /// Make the target's reference what it is here (the image, its referrers).
    Copy,
    /// Delete the reference at the target.
    Delete,
}

impl ReplicationOp {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationOp::Copy => "copy",
            ReplicationOp::Delete => "delete",
        }
    }

    /// The operation stored as `name`.
    pub fn parse(name: &str) -> Result<ReplicationOp, MetaError> {
        match name {
            "copy" => Ok(ReplicationOp::Copy),
            "delete" => Ok(ReplicationOp::Delete),
            other => Err(MetaError::Corrupt(format!(
                "replication operation {other:?}"
            ))),
        }
    }
}

/// A change to queue for a replication rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationNew {
    /// The configured rule's name.
    pub rule: String,
    /// The local repository.
    pub repo: String,
    /// A tag, or a digest (`sha256:...`).
    pub reference: String,
    pub op: ReplicationOp,
}

/// A queued replication: written before the change that caused it is answered and
/// deleted once the rule's target holds the change, so it survives restarts. One row
/// per (rule, repository, reference): a newer change supersedes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationTask {
    pub id: i64,
    pub rule: String,
    pub repo: String,
    pub reference: String,
    pub op: ReplicationOp,
    /// Raised by every superseding change.
    pub seq: i64,
    /// When the oldest change not yet replicated was queued, unix milliseconds.
    pub created_ms: i64,
    /// Failed attempts since the row was last queued.
    pub attempts: u32,
    /// When the next attempt is due, unix milliseconds.
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    /// Retrying gave up; kept until queued again.
    pub dead: bool,
}

/// The replication status of one rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationStatus {
    pub rule: String,
    /// Rows still to replicate (failing ones included), not dead.
    pub pending: u64,
    /// Pending rows with at least one failed attempt.
    pub failing: u64,
    /// Rows given up on.
    pub dead: u64,
    /// When the oldest pending change was queued, unix milliseconds (the lag).
    pub oldest_pending_ms: Option<i64>,
    /// Rows replicated and failed attempts, ever.
    pub copied: u64,
    pub failures: u64,
    pub last_success_ms: Option<i64>,
    pub last_failure_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// A webhook delivery to add to the outbox: one event for one configured hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxNew {
    /// The configured hook's name.
    pub hook: String,
    /// The event's id (CloudEvents `id`), the same for every hook the event goes to, so
    /// that a receiver de-duplicates repeated deliveries by it.
    pub event_id: String,
    /// The event's type (CloudEvents `type`), for status and logs.
    pub event_type: String,
    /// The exact request body to send.
    pub body: String,
}

/// A delivery in the webhook outbox: written before the request that caused its event
/// is answered and deleted once the hook accepted it, so deliveries survive restarts
/// (at least once: a success not yet recorded when the process stops is sent again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Unique among deliveries in the outbox.
    pub id: i64,
    pub hook: String,
    pub event_id: String,
    pub event_type: String,
    pub body: String,
    /// When the current retry window began (added, or redelivered), unix milliseconds.
    pub since_ms: i64,
    /// Failed attempts in the current retry window.
    pub attempts: u32,
    /// When the next attempt is due, unix milliseconds.
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    /// Retrying gave up; kept until redelivered.
    pub dead: bool,
}

/// The delivery status of one webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStatus {
    pub hook: String,
    /// Deliveries still to be attempted (failing ones included), not dead.
    pub pending: u64,
    /// Pending deliveries with at least one failed attempt.
    pub failing: u64,
    /// Deliveries given up on.
    pub dead: u64,
    /// When the oldest pending delivery's retry window began, unix milliseconds.
    pub oldest_pending_ms: Option<i64>,
    /// The last successful delivery, unix milliseconds.
    pub last_success_ms: Option<i64>,
    /// The last failed attempt, unix milliseconds, and its error.
    pub last_failure_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// What a counted manifest fetch was: image content, or metadata only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FetchKind {
    /// Image content was fetched (a platform manifest): a download.
    #[default]
    Download,
    /// Only metadata was read (an index alone, or a `HEAD`): an inspection.
    Inspection,
}

impl FetchKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            FetchKind::Download => "download",
            FetchKind::Inspection => "inspection",
        }
    }
}

/// One aggregated download (or inspection) counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DownloadKey {
    pub repo: String,
    pub version: String,
    pub platform: String,
    pub client: String,
    /// The account that fetched, empty for anonymous callers and open registries.
    pub account: String,
    pub kind: FetchKind,
    /// Unix seconds / 3600.
    pub hour: i64,
}

/// One aggregated request counter of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestKey {
    pub repo: String,
    pub hour: i64,
    pub route: String,
    /// The status divided by 100.
    pub class: u16,
    /// The OCI error code, empty for successes.
    pub code: String,
}

/// How download counts are grouped in a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Version,
    Platform,
    Client,
    Day,
}

/// Download analytics: counters added in batches, read grouped.
#[async_trait::async_trait]
pub trait StatsStore: Send + Sync + 'static {
    /// Adds counts and served bytes in one transaction.
    async fn downloads_add(
        &self,
        counts: Vec<(DownloadKey, u64)>,
        bytes: Vec<(String, i64, u64)>,
    ) -> Result<(), MetaError>;

    /// Downloads of `repo` since `since_hour`, grouped; `(key, count)` sorted by key.
    async fn downloads(
        &self,
        repo: &str,
        since_hour: i64,
        by: GroupBy,
    ) -> Result<Vec<(String, u64)>, MetaError>;

    /// Inspections (metadata-only fetches) of `repo` since `since_hour`, grouped like
    /// [`StatsStore::downloads`].
    async fn inspections(
        &self,
        repo: &str,
        since_hour: i64,
        by: GroupBy,
    ) -> Result<Vec<(String, u64)>, MetaError>;

    /// Downloads of `repo` since `since_hour` by account and version:
    /// `(account, version, count)` sorted by account then version.
    async fn downloads_by_account(
        &self,
        repo: &str,
        since_hour: i64,
    ) -> Result<Vec<(String, String, u64)>, MetaError>;

    /// Records manifest pulls, `(repository, manifest digest, unix seconds)`, in one
    /// transaction: each (repository, digest) keeps the latest time it was ever given (an
    /// older time never moves it back). Retention rules read them to keep what is pulled.
    async fn pulls_add(&self, pulls: Vec<(String, Digest, i64)>) -> Result<(), MetaError>;

    /// When each manifest of `repo` was last pulled (unix seconds) as recorded by
    /// [`StatsStore::pulls_add`], in digest order; digests never pulled are absent.
    async fn last_pulls(&self, repo: &str) -> Result<Vec<(Digest, i64)>, MetaError>;

    /// Bytes served for `repo` since `since_hour`.
    async fn bytes_served(&self, repo: &str, since_hour: i64) -> Result<u64, MetaError>;

    /// Adds request counts: `(repo, hour, route, status class, error code)` → count.
    async fn requests_add(&self, counts: Vec<(RequestKey, u64)>) -> Result<(), MetaError>;

    /// Requests of `repo` since `since_hour` by route, status class and error code.
    async fn requests(
        &self,
        repo: &str,
        since_hour: i64,
    ) -> Result<Vec<(RequestKey, u64)>, MetaError>;

    /// Repositories with the most downloads (not inspections) since `since_hour`.
    async fn top_repositories(
        &self,
        since_hour: i64,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, MetaError>;

    /// Rolls the hourly counters (downloads and inspections, bytes served, requests) of
    /// the days that end at or before `before_hour` up into one row per day, kept at the
    /// day's first hour (UTC), one day per transaction. Totals over whole days do not
    /// change. Returns how many days were rolled up.
    async fn stats_roll_up(&self, before_hour: i64) -> Result<u64, MetaError>;
}
