//! A read cache in front of any [`MetadataStore`], for the hot paths of a pull: manifest
//! by tag, manifest by digest, and the blob links checked on every blob fetch.
//!
//! Every write that can change a cached answer goes through this wrapper and drops the
//! repository's entries before returning, so a single server never serves a stale tag.
//! Entries also expire after a short time. When several servers share one database,
//! the store's change notifications clear what another server changed
//! ([`CachingStore::forget_repository`], fed by `postgres::PgStore::invalidate_on_change`),
//! so the expiry only bounds staleness while those notifications are delayed. Memory is bounded in bytes; large manifests are not cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_oci::{Digest, RepoName, Tag};

use crate::{
    gc, BlobClaim, Gate, GateOutcome, MetaError, MetadataStore, NewManifest, Page, PendingTag,
    RecordedSignature, Referrer, StoredManifest, TagGuard, TagListing, Unlinked,
};

/// Manifests larger than this are always read from the store.
const MAX_CACHED_MANIFEST: usize = 256 << 10;

#[derive(Clone)]
enum Entry {
    Manifest(StoredManifest),
    BlobSize(u64),
}

impl Entry {
    fn cost(&self) -> usize {
        match self {
            Entry::Manifest(m) => m.content.len() + m.media_type.len() + 128,
            Entry::BlobSize(_) => 96,
        }
    }
}

#[derive(Default)]
struct Inner {
    /// repository → key (`t:<tag>`, `d:<digest>`, `b:<digest>`) → (entry, inserted at)
    repos: HashMap<String, HashMap<String, (Entry, Instant)>>,
    /// Bumped by every invalidation of a repository. A reader notes it before going to
    /// the store and inserts its answer only if it is unchanged, so an answer read before
    /// a concurrent write can never be cached after that write.
    generation: u64,
    bytes: usize,
}

/// A [`MetadataStore`] with a bounded, write-invalidated read cache.
pub struct CachingStore {
    inner: Arc<dyn MetadataStore>,
    cache: Mutex<Inner>,
    max_bytes: usize,
    ttl: Duration,
}

impl CachingStore {
    pub fn new(inner: Arc<dyn MetadataStore>, max_bytes: usize, ttl: Duration) -> CachingStore {
        CachingStore {
            inner,
            cache: Mutex::new(Inner::default()),
            max_bytes,
            ttl,
        }
    }

    fn get(&self, repo: &str, key: &str) -> Option<Entry> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (entry, at) = cache.repos.get(repo)?.get(key)?;
        (at.elapsed() < self.ttl).then(|| entry.clone())
    }

    fn generation(&self) -> u64 {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .generation
    }

    fn put(&self, repo: &str, key: String, entry: Entry, seen: u64) {
        let cost = entry.cost();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.generation != seen {
            return;
        }
        if cache.bytes + cost > self.max_bytes {
            // Simple and rare: start over rather than track recency on every hit.
            cache.repos.clear();
            cache.bytes = 0;
        }
        let old = cache
            .repos
            .entry(repo.to_owned())
            .or_default()
            .insert(key, (entry, Instant::now()));
        cache.bytes += cost;
        if let Some((o, _)) = old {
            cache.bytes = cache.bytes.saturating_sub(o.cost());
        }
    }

    /// Drops every entry of `repo`: another process sharing the database changed it
    /// (see `postgres::PgStore::invalidate_on_change`).
    pub fn forget_repository(&self, repo: &str) {
        self.invalidate(repo);
    }

    /// Drops every entry: changes made meanwhile by other processes may have been
    /// missed (their notifications were lost with a connection).
    pub fn forget_all(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.generation += 1;
        cache.repos.clear();
        cache.bytes = 0;
    }

    fn invalidate(&self, repo: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.generation += 1;
        if let Some(entries) = cache.repos.remove(repo) {
            let freed: usize = entries.values().map(|(e, _)| e.cost()).sum();
            cache.bytes = cache.bytes.saturating_sub(freed);
        }
    }

    /// A manifest from the cache, else from `fetch` (not polled on a hit), remembered.
    async fn cached_manifest(
        &self,
        repo: &RepoName,
        key: String,
        fetch: impl std::future::Future<Output = Result<Option<StoredManifest>, MetaError>>,
    ) -> Result<Option<StoredManifest>, MetaError> {
        if let Some(Entry::Manifest(m)) = self.get(repo.as_str(), &key) {
            return Ok(Some(m));
        }
        let seen = self.generation();
        let m = fetch.await?;
        self.remember_manifest(repo.as_str(), key, &m, seen);
        Ok(m)
    }

    fn remember_manifest(&self, repo: &str, key: String, m: &Option<StoredManifest>, seen: u64) {
        if let Some(m) = m {
            if m.content.len() <= MAX_CACHED_MANIFEST {
                self.put(repo, key, Entry::Manifest(m.clone()), seen);
            }
        }
    }
}

#[async_trait::async_trait]
impl MetadataStore for CachingStore {
    async fn ping(&self) -> Result<(), MetaError> {
        self.inner.ping().await
    }

    async fn blob_link(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetaError> {
        self.inner.blob_link(repo, digest, size).await
    }

    // Links, claims, mounts and tombstones need no invalidation: only blob sizes that
    // exist are cached, and these only add links (or change rows that are not cached).

    async fn blob_claim(&self, digest: &Digest) -> Result<BlobClaim, MetaError> {
        self.inner.blob_claim(digest).await
    }

    async fn blob_link_claimed(
        &self,
        claim: &BlobClaim,
        repo: &RepoName,
        size: u64,
        upload: Option<&str>,
    ) -> Result<(), MetaError> {
        self.inner
            .blob_link_claimed(claim, repo, size, upload)
            .await
    }

    async fn blob_claim_release(&self, claim: &BlobClaim) -> Result<(), MetaError> {
        self.inner.blob_claim_release(claim).await
    }

    async fn blob_deletion_done(&self, digest: &Digest) -> Result<(), MetaError> {
        self.inner.blob_deletion_done(digest).await
    }

    async fn blob_mount(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, MetaError> {
        self.inner.blob_mount(from, to, digest).await
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let key = format!("b:{digest}");
        if let Some(Entry::BlobSize(n)) = self.get(repo.as_str(), &key) {
            return Ok(Some(n));
        }
        let seen = self.generation();
        let size = self.inner.blob_size(repo, digest).await?;
        if let Some(n) = size {
            self.put(repo.as_str(), key, Entry::BlobSize(n), seen);
        }
        Ok(size)
    }

    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<Unlinked, MetaError> {
        let r = self.inner.blob_unlink(repo, digest).await;
        self.invalidate(repo.as_str());
        r
    }

    async fn blob_repositories(
        &self,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<String>, MetaError> {
        self.inner.blob_repositories(digest, limit).await
    }

    async fn repository_summaries(&self) -> Result<Vec<crate::RepositorySummary>, MetaError> {
        self.inner.repository_summaries().await
    }

    async fn repository_usage(
        &self,
        repo: Option<&RepoName>,
    ) -> Result<Vec<crate::RepositoryUsage>, MetaError> {
        self.inner.repository_usage(repo).await
    }

    // Reservations change no cached answer: they are only ever read by reserving.
    async fn quota_reserve(
        &self,
        r: &crate::QuotaReservation,
        limit: u64,
    ) -> Result<crate::Reserved, MetaError> {
        self.inner.quota_reserve(r, limit).await
    }

    async fn quota_release(&self, id: &str) -> Result<(), MetaError> {
        self.inner.quota_release(id).await
    }

    async fn tag_details(&self, repo: &RepoName) -> Result<Vec<crate::TagDetail>, MetaError> {
        self.inner.tag_details(repo).await
    }

    async fn tags_of(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<String>, MetaError> {
        self.inner.tags_of(repo, digest).await
    }

    async fn stored_bytes(&self) -> Result<(u64, u64), MetaError> {
        self.inner.stored_bytes().await
    }

    async fn image_layers_put(
        &self,
        repo: &RepoName,
        image: &crate::bases::ImageLayers,
    ) -> Result<Option<crate::bases::ImageBase>, MetaError> {
        self.inner.image_layers_put(repo, image).await
    }

    async fn stale_images(&self) -> Result<Vec<crate::bases::StaleImage>, MetaError> {
        self.inner.stale_images().await
    }

    async fn manifest_put_gated(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tags: &[Tag],
        guard: Option<Arc<dyn TagGuard>>,
        gate: &Gate,
    ) -> Result<GateOutcome, MetaError> {
        let r = self
            .inner
            .manifest_put_gated(repo, m, tags, guard, gate)
            .await;
        self.invalidate(repo.as_str());
        r
    }

    async fn pending_tags(&self, repo: &RepoName) -> Result<Vec<PendingTag>, MetaError> {
        self.inner.pending_tags(repo).await
    }

    async fn recorded_signatures(
        &self,
        repo: &RepoName,
        subject: Option<&Digest>,
    ) -> Result<Vec<RecordedSignature>, MetaError> {
        self.inner.recorded_signatures(repo, subject).await
    }

    async fn index_parents(
        &self,
        repo: &RepoName,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<Digest>, MetaError> {
        self.inner.index_parents(repo, digest, limit).await
    }

    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>, MetaError> {
        self.cached_manifest(
            repo,
            format!("d:{digest}"),
            self.inner.manifest_by_digest(repo, digest),
        )
        .await
    }

    async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>, MetaError> {
        self.cached_manifest(
            repo,
            format!("t:{tag}"),
            self.inner.manifest_by_tag(repo, tag),
        )
        .await
    }

    async fn manifest_delete(
        &self,
        repo: &RepoName,
        digest: &Digest,
        guard: Option<Arc<dyn TagGuard>>,
    ) -> Result<bool, MetaError> {
        let r = self.inner.manifest_delete(repo, digest, guard).await;
        self.invalidate(repo.as_str());
        r
    }

    async fn tag_delete(
        &self,
        repo: &RepoName,
        tag: &Tag,
        guard: Option<Arc<dyn TagGuard>>,
    ) -> Result<bool, MetaError> {
        let r = self.inner.tag_delete(repo, tag, guard).await;
        self.invalidate(repo.as_str());
        r
    }

    async fn tag_list(
        &self,
        repo: &RepoName,
        page: &Page,
        listing: TagListing,
    ) -> Result<Option<Vec<String>>, MetaError> {
        self.inner.tag_list(repo, page, listing).await
    }

    async fn repositories(&self, page: &Page) -> Result<Vec<String>, MetaError> {
        self.inner.repositories(page).await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, MetaError> {
        self.inner.referrers(repo, subject, artifact_type).await
    }

    async fn upload_create(&self, id: &str, repo: &RepoName) -> Result<(), MetaError> {
        self.inner.upload_create(id, repo).await
    }

    async fn upload_touch(&self, id: &str) -> Result<Option<String>, MetaError> {
        self.inner.upload_touch(id).await
    }

    async fn upload_delete(&self, id: &str) -> Result<(), MetaError> {
        self.inner.upload_delete(id).await
    }

    async fn uploads_idle(&self, idle_secs: u64) -> Result<Vec<String>, MetaError> {
        self.inner.uploads_idle(idle_secs).await
    }

    async fn upload_ids(&self) -> Result<Vec<String>, MetaError> {
        self.inner.upload_ids().await
    }

    async fn gc_unreferenced_links(
        &self,
        after: Option<&gc::LinkCursor>,
        linked_before: i64,
        limit: usize,
    ) -> Result<Vec<gc::Link>, MetaError> {
        self.inner
            .gc_unreferenced_links(after, linked_before, limit)
            .await
    }

    // The collector's writes drop the cache of every repository they touched, like the
    // deletions of the API.

    async fn gc_unlink(
        &self,
        links: &[gc::Link],
        linked_before: i64,
    ) -> Result<Vec<gc::Link>, MetaError> {
        let r = self.inner.gc_unlink(links, linked_before).await;
        let mut repos: Vec<&str> = links.iter().map(|l| l.repo.as_str()).collect();
        repos.dedup();
        for repo in repos {
            self.invalidate(repo);
        }
        r
    }

    async fn gc_tombstone(&self, digests: &[Digest]) -> Result<Vec<Digest>, MetaError> {
        self.inner.gc_tombstone(digests).await
    }

    async fn gc_deletions_done(&self, digests: &[Digest]) -> Result<(), MetaError> {
        self.inner.gc_deletions_done(digests).await
    }

    async fn gc_link_counts(&self, digests: &[Digest]) -> Result<Vec<u64>, MetaError> {
        self.inner.gc_link_counts(digests).await
    }

    async fn gc_manifests(&self, repo: &RepoName) -> Result<Vec<gc::ManifestNode>, MetaError> {
        self.inner.gc_manifests(repo).await
    }

    async fn gc_delete_manifests(
        &self,
        repo: &RepoName,
        digests: &[Digest],
        created_before: i64,
    ) -> Result<Vec<Digest>, MetaError> {
        let r = self
            .inner
            .gc_delete_manifests(repo, digests, created_before)
            .await;
        self.invalidate(repo.as_str());
        r
    }

    async fn gc_blob_holders(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<gc::BlobHolders>, MetaError> {
        self.inner.gc_blob_holders(repo, digest).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;

    #[tokio::test]
    async fn writes_invalidate_and_budget_holds() {
        let dir = tempfile::tempdir().unwrap();
        let db: Arc<dyn MetadataStore> =
            Arc::new(SqliteStore::open(dir.path().join("m.db")).unwrap());
        let cache = CachingStore::new(db.clone(), 1 << 20, Duration::from_secs(60));
        let repo = RepoName::parse("a").unwrap();
        let tag = Tag::parse("latest").unwrap();
        let m = |c: &str| NewManifest {
            digest: Digest::sha256(c.as_bytes()),
            media_type: berth_oci::media_types::OCI_MANIFEST.into(),
            content: bytes::Bytes::from(c.to_owned()),
            blobs: vec![],
            children: vec![],
            subject: None,
            artifact_type: None,
            annotations_json: String::new(),
            version: None,
            platform: None,
            mirrored: false,
        };
        cache
            .manifest_put(&repo, &m("one"), std::slice::from_ref(&tag), None)
            .await
            .unwrap();
        assert_eq!(
            cache
                .manifest_by_tag(&repo, &tag)
                .await
                .unwrap()
                .unwrap()
                .content,
            "one"
        );
        cache
            .manifest_put(&repo, &m("two"), std::slice::from_ref(&tag), None)
            .await
            .unwrap();
        assert_eq!(
            cache
                .manifest_by_tag(&repo, &tag)
                .await
                .unwrap()
                .unwrap()
                .content,
            "two"
        );
        cache.tag_delete(&repo, &tag, None).await.unwrap();
        assert!(cache.manifest_by_tag(&repo, &tag).await.unwrap().is_none());
        // A tiny budget still answers correctly.
        let small = CachingStore::new(db, 200, Duration::from_secs(60));
        for i in 0..20 {
            let t = Tag::parse(&format!("t{i}")).unwrap();
            small
                .manifest_put(&repo, &m(&format!("m{i}")), std::slice::from_ref(&t), None)
                .await
                .unwrap();
            assert_eq!(
                small
                    .manifest_by_tag(&repo, &t)
                    .await
                    .unwrap()
                    .unwrap()
                    .content,
                format!("m{i}")
            );
        }
        assert!(small.cache.lock().unwrap().bytes <= 200);
    }
}
