//! The registry service: every operation on repositories, blobs, uploads, manifests and
//! tags, over the blob store and the metadata store.
//!
//! Layers call one way: routes → this service → stores. The service knows nothing about
//! HTTP: it takes parsed values and byte streams, returns domain values or a
//! [`RegistryError`], and emits [`Event`]s for side effects. `crate::error` alone turns a
//! [`RegistryError`] into an OCI error answer.
//!
//! A blob is stored once per digest and made visible to a repository by a link in the
//! metadata store. Committing then linking, and unlinking then deleting bytes, follow the
//! claim protocol of [`MetadataStore::blob_claim`], which the store enforces in its
//! transactions, so two processes sharing the stores cannot link bytes a third deletes.

mod bases;
mod blobs;
mod error;
mod export;
mod gc;
mod manifests;
mod mirror;
mod quota;
mod replica;
mod scrub;
mod tag_retention;
mod trust;

use std::sync::Arc;
use std::time::Duration;

use berth_meta::{MetadataStore, Page, TagListing};
use berth_oci::{Digest, RepoName};
use berth_storage::BlobStore;

pub use blobs::{BlobContent, Chunk};
pub use error::RegistryError;
pub use export::{parse_export_target, Export, ExportFormat};
pub use gc::{
    Explanation, GcOptions, GcReport, GcRule, GcRuleError, GcSettings, GcStep, Reason, RepoFreed,
};
pub use manifests::{accepted, ManifestPush, PushedManifest};
pub use mirror::{MirrorPull, MirrorRule, MirrorRuleError, Mirrors, DEFAULT_TAG_TTL, HELD_BACK};
pub use quota::{
    parse_size, read_rules_file, write_rules_file, QuotaRule, QuotaRuleError, Quotas,
    RepositoryUsage, UsageReport, QUOTA_RULES_FILE,
};
pub use scrub::{CorruptBlob, Damage, MissingBlob, Pace, ScrubOptions, ScrubReport};
pub use tag_retention::{RetentionRule, RetentionRuleError, TagRetention, TagVerdict};
pub use trust::{ArtifactKind, AttachedArtifact, Fetch, TrustOverview};

use crate::events::{Event, Events};
use crate::policy::{Policy, TrustPolicy};

/// The result of a service operation.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// The registry service. Cheap to share (`Arc`).
pub struct Registry {
    blobs: Arc<dyn BlobStore>,
    meta: Arc<dyn MetadataStore>,
    policy: Arc<Policy>,
    /// Required signatures and the publish gate; empty unless [`Registry::with_trust`].
    trust: Arc<TrustPolicy>,
    verdicts: trust::VerdictCache,
    events: Events,
    max_manifest_bytes: usize,
    upload_idle_timeout: Duration,
    /// The garbage collector's grace window and rules ([`Registry::with_gc`]).
    gc: GcSettings,
    /// Held by the one collection running in this process.
    gc_running: tokio::sync::Mutex<()>,
    last_gc: std::sync::Mutex<Option<Arc<GcReport>>>,
    /// Storage quotas ([`Registry::with_quotas`]).
    quotas: Quotas,
    /// Tag retention rules and the pull times they read ([`Registry::with_retention`]).
    retention: TagRetention,
    /// Blob downloads are redirected to the store for this long ([`Registry::with_redirect`]).
    redirect: Option<Duration>,
    /// Pull-through mirrors by repository prefix ([`Registry::with_mirrors`]).
    mirrors: Arc<Mirrors>,
}

/// How the service is built: its stores, its policy and its limits.
pub struct RegistryParts {
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn MetadataStore>,
    pub policy: Arc<Policy>,
    pub events: Events,
    pub max_manifest_bytes: usize,
    pub upload_idle_timeout: Duration,
}

impl Registry {
    pub fn new(parts: RegistryParts) -> Registry {
        Registry {
            blobs: parts.blobs,
            meta: parts.meta,
            policy: parts.policy,
            trust: Arc::new(TrustPolicy::default()),
            verdicts: trust::VerdictCache::default(),
            events: parts.events,
            max_manifest_bytes: parts.max_manifest_bytes,
            upload_idle_timeout: parts.upload_idle_timeout,
            gc: GcSettings::default(),
            gc_running: tokio::sync::Mutex::new(()),
            last_gc: std::sync::Mutex::new(None),
            quotas: Quotas::default(),
            retention: TagRetention::default(),
            redirect: None,
            mirrors: Arc::default(),
        }
    }

    /// The service answering blob downloads with a redirect to the blob store's own URL,
    /// valid for `expires`, when the store gives one (`s3_redirect`).
    pub fn with_redirect(mut self, expires: Option<Duration>) -> Registry {
        self.redirect = expires;
        self
    }

    /// The service with a trust policy (required signatures, the publish gate).
    pub fn with_trust(mut self, trust: Arc<TrustPolicy>) -> Registry {
        self.trust = trust;
        self
    }

    /// Whether the registry can serve: its metadata database and its blob storage both
    /// answer within `within` (asked at the same time). `Err` says which does not, in
    /// words fit for a load balancer's log.
    pub async fn ready(&self, within: Duration) -> std::result::Result<(), String> {
        let meta = tokio::time::timeout(within, self.meta.ping());
        let blobs = tokio::time::timeout(within, self.blobs.ping());
        let (meta, blobs) = tokio::join!(meta, blobs);
        match meta {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the metadata database does not answer");
                return Err("metadata database unavailable".into());
            }
            Err(_) => return Err("metadata database did not answer in time".into()),
        }
        match blobs {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the blob storage does not answer");
                Err("blob storage unavailable".into())
            }
            Err(_) => Err("blob storage did not answer in time".into()),
        }
    }

    /// The largest manifest accepted, in bytes.
    pub fn max_manifest_bytes(&self) -> usize {
        self.max_manifest_bytes
    }

    /// How long an idle upload session lives.
    pub fn upload_idle_timeout(&self) -> Duration {
        self.upload_idle_timeout
    }

    /// A page of `repo`'s visible tags in lexical order; `NameUnknown` for a repository
    /// that does not exist.
    pub async fn tags(&self, repo: &RepoName, page: &Page) -> Result<Vec<String>> {
        self.tag_list(repo, page, TagListing::Visible).await
    }

    /// A page of `repo`'s tags in lexical order, with the hidden ones (cosign v2 artifact
    /// tags and the referrers tag schema's, see [`berth_meta::artifact_tags`]) when
    /// `listing` asks for all; `NameUnknown` for a repository that does not exist.
    pub async fn tag_list(
        &self,
        repo: &RepoName,
        page: &Page,
        listing: TagListing,
    ) -> Result<Vec<String>> {
        self.meta
            .tag_list(repo, page, listing)
            .await?
            .ok_or_else(|| RegistryError::NameUnknown(repo.clone()))
    }

    /// A page of repository names in lexical order.
    pub async fn repositories(&self, page: &Page) -> Result<Vec<String>> {
        Ok(self.meta.repositories(page).await?)
    }

    /// The manifests of `repo` whose subject is `subject`, and those its cosign v2 tags
    /// (`sha256-<hex>.sig`, `.att`, `.sbom`) point at, optionally of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<berth_meta::Referrer>> {
        Ok(self.meta.referrers(repo, subject, artifact_type).await?)
    }

    /// Every repository with its tag count, size and last push (for the dashboard).
    pub async fn repository_summaries(&self) -> Result<Vec<berth_meta::RepositorySummary>> {
        Ok(self.meta.repository_summaries().await?)
    }

    /// Every tag of `repo` with its manifest's details (for the dashboard).
    pub async fn tag_details(&self, repo: &RepoName) -> Result<Vec<berth_meta::TagDetail>> {
        Ok(self.meta.tag_details(repo).await?)
    }

    /// Distinct blobs and their bytes, for the metrics.
    pub async fn stored_bytes(&self) -> Result<(u64, u64)> {
        Ok(self.meta.stored_bytes().await?)
    }

    async fn emit(&self, event: Event) {
        self.events.emit(event).await;
    }
}

/// Parses a digest given in a path or query.
pub fn parse_digest(raw: &str) -> Result<Digest> {
    Ok(raw.parse::<Digest>()?)
}
