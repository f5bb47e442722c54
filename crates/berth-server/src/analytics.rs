//! Download analytics: who pulls which version on which platform, without a database
//! write per pull.
//!
//! A download is a successful manifest `GET`. It is attributed to the repository, the
//! version (the manifest's or its index's `org.opencontainers.image.version`, else a
//! release tag pointing at it), the platform (for a child of an index, the platform the
//! index gives it; for a single-platform image, the platform of its config, read at push
//! time) and the client family (from the User-Agent). An index fetched and then one of
//! its children fetched by the same client within [`INDEX_WINDOW`] is one download of
//! that platform; an index fetched alone counts as `index-only`.
//!
//! Events are counted in memory per (repository, version, platform, client, hour) and
//! flushed in one transaction every flush interval and at shutdown, so a crash loses at
//! most one interval of counts.
//!
//! Memory and the database stay bounded whatever callers send: an index waiting for its
//! child is keyed by the client address, the client family and a 64-bit hash of the
//! User-Agent (never the agent itself), and at most [`MAX_PENDING`] wait at once; request
//! counters are kept per repository only for repositories that exist (checked at flush)
//! and for at most [`MAX_REQUEST_REPOS`] of them per interval. Everything else, and every
//! request refused by access control, is counted under [`OTHER`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_meta::{DownloadKey, MetaError, MetadataStore, RequestKey, StatsStore, StoredManifest};
use berth_oci::{ParsedManifest, RepoName};

/// How long an index fetch waits for a child fetch by the same client.
pub const INDEX_WINDOW: Duration = Duration::from_secs(60);
/// Platform of a download that fetched an index and no child.
pub const INDEX_ONLY: &str = "index-only";
/// Version placeholder resolved at flush time from the release tags of a digest.
const UNRESOLVED: char = '@';
/// Index fetches waiting for a child fetch at once; beyond it an index counts as
/// `index-only` at once.
pub const MAX_PENDING: usize = 10_000;
/// Distinct repositories with request counters per flush interval.
pub const MAX_REQUEST_REPOS: usize = 1_000;
/// The request-counter bucket for refused requests, repositories that do not exist, and
/// repositories beyond [`MAX_REQUEST_REPOS`]. Not a valid repository name, so it
/// collides with none.
pub const OTHER: &str = "_other";

/// Who fetched an index: client address, client family, a hash of the full User-Agent
/// (so two tools of one family on one host stay apart) and the repository.
type PendingKey = (IpAddr, &'static str, u64, String);

fn agent_hash(user_agent: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    user_agent.hash(&mut h);
    h.finish()
}

/// The client family of a User-Agent.
pub fn client_family(ua: &str) -> &'static str {
    let lowered;
    let ua = if ua.bytes().any(|b| b.is_ascii_uppercase()) {
        lowered = ua.to_ascii_lowercase();
        lowered.as_str()
    } else {
        ua
    };
    if ua.starts_with("berth") {
        "berth"
    } else if ua.contains("containerd") {
        "containerd"
    } else if ua.starts_with("docker") || ua.contains(" docker/") {
        "docker"
    } else if [
        "podman",
        "buildah",
        "skopeo",
        "libpod",
        "containers/",
        "cri-o",
    ]
    .iter()
    .any(|k| ua.contains(k))
    {
        "podman"
    } else if ua.starts_with("helm") {
        "helm"
    } else if ua.contains("oras") {
        "oras"
    } else {
        "other"
    }
}

fn hour_now() -> i64 {
    berth_oci::time::now() / 3600
}

/// A version from a tag, when the tag is a full release version.
fn version_from_tag(tag: Option<&str>) -> Option<String> {
    match crate::policy::classify(tag?) {
        crate::policy::TagKind::Release(v) => Some(v.to_string()),
        _ => None,
    }
}

struct PendingIndex {
    at: Instant,
    hour: i64,
    repo: String,
    version: String,
    client: &'static str,
    /// child digest → platform
    children: HashMap<String, String>,
}

/// (hour, route, status class, OCI error code or "") of a request counter.
type RequestSlot = (i64, &'static str, u16, &'static str);

/// Adds `n` to `map[repo][slot]`, allocating the repository's name only the first time.
fn bump<K: std::hash::Hash + Eq>(
    map: &mut HashMap<String, HashMap<K, u64>>,
    repo: &str,
    slot: K,
    n: u64,
) {
    match map.get_mut(repo) {
        Some(inner) => *inner.entry(slot).or_default() += n,
        None => {
            map.entry(repo.to_owned()).or_default().insert(slot, n);
        }
    }
}

/// The in-memory counters and their flusher.
pub struct Analytics {
    counts: Mutex<HashMap<DownloadKey, u64>>,
    /// repository → hour → bytes served. Keyed by repository first so that counting
    /// an existing repository allocates nothing.
    bytes: Mutex<HashMap<String, HashMap<i64, u64>>>,
    /// repository → (hour, route, status class, error code) → requests.
    requests: Mutex<HashMap<String, HashMap<RequestSlot, u64>>>,
    /// (client address, User-Agent, repository) → the index it fetched last.
    pending: Mutex<HashMap<PendingKey, PendingIndex>>,
    stats: Arc<dyn StatsStore>,
    meta: Arc<dyn MetadataStore>,
    pub flush_interval: Duration,
    /// When false, downloads are not attributed (requests and bytes are still counted).
    pub enabled: bool,
}

impl Analytics {
    pub fn new(
        stats: Arc<dyn StatsStore>,
        meta: Arc<dyn MetadataStore>,
        flush_interval: Duration,
    ) -> Analytics {
        Analytics {
            counts: Mutex::new(HashMap::new()),
            bytes: Mutex::new(HashMap::new()),
            requests: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            stats,
            meta,
            flush_interval,
            enabled: true,
        }
    }

    /// The store the counters are flushed to (for queries).
    pub fn stats(&self) -> &Arc<dyn StatsStore> {
        &self.stats
    }

    fn count(&self, key: DownloadKey) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Records a successful manifest `GET`.
    pub fn manifest_served(
        &self,
        repo: &RepoName,
        client: IpAddr,
        user_agent: &str,
        tag: Option<&str>,
        m: &StoredManifest,
    ) {
        if !self.enabled {
            return;
        }
        let family = client_family(user_agent);
        let hour = hour_now();
        let version = m
            .version
            .clone()
            .or_else(|| version_from_tag(tag))
            .unwrap_or_else(|| format!("{UNRESOLVED}{}", m.digest));
        if berth_oci::media_types::is_index(&m.media_type) {
            let key = (client, family, agent_hash(user_agent), repo.to_string());
            let children = ParsedManifest::parse(&m.content, Some(&m.media_type))
                .map(|p| {
                    p.manifests
                        .iter()
                        .filter_map(|d| {
                            d.platform
                                .as_ref()
                                .map(|pl| (d.digest.to_string(), pl.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let index = PendingIndex {
                at: Instant::now(),
                hour,
                repo: repo.to_string(),
                version,
                client: family,
                children,
            };
            let (replaced, full) = {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
                    (None, Some(index))
                } else {
                    (pending.insert(key, index), None)
                }
            };
            if let Some(old) = replaced {
                self.index_only(old);
            }
            if let Some(index) = full {
                // Too many clients mid-pull: expire what is old, and count this one as
                // an index-only download rather than grow without bound.
                self.expire_pending(false);
                self.index_only(index);
            }
            return;
        }
        let digest = m.digest.to_string();
        let from_index = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            // The common case (no index waiting anywhere) builds no key at all.
            if pending.is_empty() {
                None
            } else {
                let key = (client, family, agent_hash(user_agent), repo.to_string());
                match pending.get(&key) {
                    Some(p)
                        if p.children.contains_key(&digest) && p.at.elapsed() < INDEX_WINDOW =>
                    {
                        pending.remove(&key)
                    }
                    _ => None,
                }
            }
        };
        match from_index {
            Some(idx) => {
                let platform = idx
                    .children
                    .get(&digest)
                    .cloned()
                    .unwrap_or_else(|| "unknown".into());
                // The index names the release; the child's own annotation is a fallback.
                let version = if idx.version.starts_with(UNRESOLVED) && m.version.is_some() {
                    version
                } else {
                    idx.version
                };
                self.count(DownloadKey {
                    repo: idx.repo,
                    version,
                    platform,
                    client: idx.client.to_owned(),
                    hour: idx.hour,
                });
            }
            None => self.count(DownloadKey {
                repo: repo.to_string(),
                version,
                platform: m.platform.clone().unwrap_or_else(|| "unknown".into()),
                client: family.to_owned(),
                hour,
            }),
        }
    }

    fn index_only(&self, p: PendingIndex) {
        self.count(DownloadKey {
            repo: p.repo,
            version: p.version,
            platform: INDEX_ONLY.to_owned(),
            client: p.client.to_owned(),
            hour: p.hour,
        });
    }

    /// Counts one registry request by route, status class and error code: under its
    /// repository (`None` for a request refused by access control, counted under
    /// [`OTHER`]), or under [`OTHER`] once [`MAX_REQUEST_REPOS`] repositories are counted
    /// in this interval.
    pub fn request(
        &self,
        repo: Option<&RepoName>,
        route: &'static str,
        status: u16,
        code: Option<&'static str>,
    ) {
        let slot = (hour_now(), route, status / 100, code.unwrap_or(""));
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let name = match repo {
            Some(r) if requests.contains_key(r.as_str()) || requests.len() < MAX_REQUEST_REPOS => {
                r.as_str()
            }
            _ => OTHER,
        };
        bump(&mut requests, name, slot, 1);
    }

    /// Counts bytes served for a repository.
    pub fn bytes_served(&self, repo: &RepoName, n: u64) {
        bump(
            &mut self.bytes.lock().unwrap_or_else(|p| p.into_inner()),
            repo.as_str(),
            hour_now(),
            n,
        );
    }

    /// Turns index fetches older than the window (or all, at shutdown) into
    /// `index-only` downloads.
    fn expire_pending(&self, all: bool) {
        let expired: Vec<PendingIndex> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<_> = pending
                .iter()
                .filter(|(_, p)| all || p.at.elapsed() >= INDEX_WINDOW)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| pending.remove(&k))
                .collect()
        };
        for p in expired {
            self.index_only(p);
        }
    }

    /// Writes the counters accumulated so far. `final_flush` also counts every waiting
    /// index fetch. Whatever cannot be written is kept for the next flush, never dropped.
    pub async fn flush(&self, final_flush: bool) -> Result<(), MetaError> {
        self.expire_pending(final_flush);
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        let bytes = std::mem::take(&mut *self.bytes.lock().unwrap_or_else(|p| p.into_inner()));
        let requests =
            std::mem::take(&mut *self.requests.lock().unwrap_or_else(|p| p.into_inner()));
        let written_requests = self.write_requests(requests).await;
        let written_downloads = self.write_downloads(counts, bytes).await;
        written_requests.and(written_downloads)
    }

    async fn write_requests(
        &self,
        requests: HashMap<String, HashMap<RequestSlot, u64>>,
    ) -> Result<(), MetaError> {
        if requests.is_empty() {
            return Ok(());
        }
        let requests = match self.only_existing(requests).await {
            Ok(r) => r,
            Err((e, requests)) => {
                let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
                for (repo, slots) in requests {
                    for (slot, n) in slots {
                        bump(&mut r, &repo, slot, n);
                    }
                }
                return Err(e);
            }
        };
        let rows: Vec<(RequestKey, u64)> = requests
            .iter()
            .flat_map(|(repo, slots)| {
                slots.iter().map(move |((hour, route, class, code), n)| {
                    let key = RequestKey {
                        repo: repo.clone(),
                        hour: *hour,
                        route: (*route).to_owned(),
                        class: *class,
                        code: (*code).to_owned(),
                    };
                    (key, *n)
                })
            })
            .collect();
        let result = self.stats.requests_add(rows).await;
        if result.is_err() {
            let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            for (repo, slots) in requests {
                for (slot, n) in slots {
                    bump(&mut r, &repo, slot, n);
                }
            }
        }
        result
    }

    /// Moves the counters of repositories that do not exist into [`OTHER`], so requests
    /// for made-up names write no rows of their own.
    #[allow(clippy::type_complexity)]
    async fn only_existing(
        &self,
        requests: HashMap<String, HashMap<RequestSlot, u64>>,
    ) -> Result<
        HashMap<String, HashMap<RequestSlot, u64>>,
        (MetaError, HashMap<String, HashMap<RequestSlot, u64>>),
    > {
        let mut exists: HashMap<String, bool> = HashMap::new();
        for repo in requests.keys() {
            let found = match RepoName::parse(repo) {
                Ok(r) => {
                    let probe = berth_meta::Page {
                        last: None,
                        n: Some(1),
                    };
                    match self.meta.tags(&r, &probe).await {
                        Ok(tags) => tags.is_some(),
                        Err(e) => return Err((e, requests)),
                    }
                }
                Err(_) => repo == OTHER,
            };
            exists.insert(repo.clone(), found);
        }
        let mut kept: HashMap<String, HashMap<RequestSlot, u64>> = HashMap::new();
        for (repo, slots) in requests {
            let name = if exists.get(&repo).copied().unwrap_or(false) {
                repo
            } else {
                OTHER.to_owned()
            };
            let into = kept.entry(name).or_default();
            for (slot, n) in slots {
                *into.entry(slot).or_default() += n;
            }
        }
        Ok(kept)
    }

    /// Resolves versions left for flush time from the release tags of each digest, once
    /// per digest.
    async fn resolve_versions(
        &self,
        counts: HashMap<DownloadKey, u64>,
    ) -> Result<HashMap<DownloadKey, u64>, MetaError> {
        let mut resolved: HashMap<(String, String), String> = HashMap::new();
        let mut merged: HashMap<DownloadKey, u64> = HashMap::new();
        for (mut k, n) in counts {
            if let Some(digest) = k.version.strip_prefix(UNRESOLVED) {
                let cache_key = (k.repo.clone(), digest.to_owned());
                if !resolved.contains_key(&cache_key) {
                    let v = match (RepoName::parse(&k.repo), digest.parse()) {
                        (Ok(repo), Ok(d)) => self
                            .meta
                            .tags_of(&repo, &d)
                            .await?
                            .iter()
                            .filter_map(|t| version_from_tag(Some(t)))
                            .filter_map(|v| semver::Version::parse(&v).ok())
                            .max()
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                        _ => String::new(),
                    };
                    resolved.insert(cache_key.clone(), v);
                }
                k.version = resolved.get(&cache_key).cloned().unwrap_or_default();
            }
            *merged.entry(k).or_default() += n;
        }
        Ok(merged)
    }

    async fn write_downloads(
        &self,
        counts: HashMap<DownloadKey, u64>,
        bytes: HashMap<String, HashMap<i64, u64>>,
    ) -> Result<(), MetaError> {
        if counts.is_empty() && bytes.is_empty() {
            return Ok(());
        }
        let result = match self.resolve_versions(counts.clone()).await {
            Ok(merged) => {
                let rows: Vec<(String, i64, u64)> = bytes
                    .iter()
                    .flat_map(|(repo, hours)| {
                        hours.iter().map(move |(h, n)| (repo.clone(), *h, *n))
                    })
                    .collect();
                self.stats
                    .downloads_add(merged.into_iter().collect(), rows)
                    .await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Keep the counts for the next flush rather than lose them.
            let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            for (k, n) in counts {
                *c.entry(k).or_default() += n;
            }
            let mut b = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
            for (repo, hours) in bytes {
                for (h, n) in hours {
                    bump(&mut b, &repo, h, n);
                }
            }
        }
        result
    }

    /// Flushes every interval, forever (a background task).
    pub async fn flush_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.flush(false).await {
                tracing::warn!(error = %e, "flushing download counters failed; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        assert_eq!(client_family("docker/27.0.3 go/go1.21 git-commit/abc kernel/6.1 os/linux arch/amd64 UpstreamClient(Docker-Client/27.0.3)"), "docker");
        assert_eq!(client_family("containerd/v1.7.2"), "containerd");
        assert_eq!(client_family("skopeo/1.13.3"), "podman");
        assert_eq!(
            client_family("containers/5.25.0 (github.com/containers/image)"),
            "podman"
        );
        assert_eq!(client_family("libpod/4.3.1"), "podman");
        assert_eq!(client_family("Helm/3.14.0"), "helm");
        assert_eq!(client_family("oras-py"), "oras");
        assert_eq!(client_family("berth/0.1.0"), "berth");
        assert_eq!(client_family("curl/8.0"), "other");
    }

    /// A stats store whose writes fail until told otherwise.
    struct Flaky {
        fail: std::sync::atomic::AtomicBool,
        inner: berth_meta::sqlite::SqliteStore,
    }

    #[async_trait::async_trait]
    impl StatsStore for Flaky {
        async fn downloads_add(
            &self,
            c: Vec<(DownloadKey, u64)>,
            b: Vec<(String, i64, u64)>,
        ) -> Result<(), MetaError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(MetaError::Corrupt("disk on fire".into()));
            }
            self.inner.downloads_add(c, b).await
        }
        async fn downloads(
            &self,
            r: &str,
            s: i64,
            by: berth_meta::GroupBy,
        ) -> Result<Vec<(String, u64)>, MetaError> {
            self.inner.downloads(r, s, by).await
        }
        async fn bytes_served(&self, r: &str, s: i64) -> Result<u64, MetaError> {
            self.inner.bytes_served(r, s).await
        }
        async fn requests_add(&self, c: Vec<(RequestKey, u64)>) -> Result<(), MetaError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(MetaError::Corrupt("disk on fire".into()));
            }
            self.inner.requests_add(c).await
        }
        async fn requests(&self, r: &str, s: i64) -> Result<Vec<(RequestKey, u64)>, MetaError> {
            self.inner.requests(r, s).await
        }
        async fn top_repositories(
            &self,
            s: i64,
            l: usize,
        ) -> Result<Vec<(String, u64)>, MetaError> {
            self.inner.top_repositories(s, l).await
        }
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_every_counter() {
        let dir = tempfile::tempdir().unwrap();
        let db = berth_meta::sqlite::SqliteStore::open(dir.path().join("m.db")).unwrap();
        let stats = Arc::new(Flaky {
            fail: true.into(),
            inner: db.clone(),
        });
        let a = Analytics::new(stats.clone(), Arc::new(db.clone()), Duration::from_secs(60));
        let repo = RepoName::parse("r").unwrap();
        // The repository exists (request counters are kept only for those).
        db.blob_link(&repo, &berth_oci::Digest::sha256(b"b"), 1)
            .await
            .unwrap();
        let m = StoredManifest {
            digest: berth_oci::Digest::sha256(b"m"),
            media_type: berth_oci::media_types::OCI_MANIFEST.into(),
            content: bytes::Bytes::from_static(b"{}"),
            version: Some("1.0.0".into()),
            platform: Some("linux/amd64".into()),
        };
        for _ in 0..3 {
            a.manifest_served(
                &repo,
                IpAddr::from([127, 0, 0, 1]),
                "skopeo/1",
                Some("1.0.0"),
                &m,
            );
            a.bytes_served(&repo, 100);
            a.request(Some(&repo), "manifest", 200, None);
        }
        assert!(a.flush(false).await.is_err());
        assert!(a.flush(false).await.is_err());
        stats.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        a.flush(false).await.unwrap();
        let since = 0;
        assert_eq!(
            db.downloads("r", since, berth_meta::GroupBy::Version)
                .await
                .unwrap(),
            vec![("1.0.0".to_owned(), 3)]
        );
        assert_eq!(db.bytes_served("r", since).await.unwrap(), 300);
        assert_eq!(db.requests("r", since).await.unwrap()[0].1, 3);
    }

    fn index_of(children: usize) -> StoredManifest {
        let manifests: Vec<serde_json::Value> = (0..children)
            .map(|i| {
                serde_json::json!({
                    "mediaType": berth_oci::media_types::OCI_MANIFEST,
                    "digest": berth_oci::Digest::sha256(format!("c{i}").as_bytes()).to_string(),
                    "size": 2,
                    "platform": {"os": "linux", "architecture": "amd64"}
                })
            })
            .collect();
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": berth_oci::media_types::OCI_INDEX,
            "manifests": manifests,
        })
        .to_string();
        StoredManifest {
            digest: berth_oci::Digest::sha256(body.as_bytes()),
            media_type: berth_oci::media_types::OCI_INDEX.into(),
            content: bytes::Bytes::from(body),
            version: Some("1.0.0".into()),
            platform: None,
        }
    }

    #[tokio::test]
    async fn waiting_indexes_are_bounded_and_never_keep_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let db = berth_meta::sqlite::SqliteStore::open(dir.path().join("m.db")).unwrap();
        let a = Analytics::new(Arc::new(db.clone()), Arc::new(db), Duration::from_secs(60));
        let repo = RepoName::parse("r").unwrap();
        let index = index_of(2);
        let long = "x".repeat(4 << 10);
        for i in 0..(MAX_PENDING + 500) {
            let ua = format!("{long}{i}");
            a.manifest_served(&repo, IpAddr::from([127, 0, 0, 1]), &ua, None, &index);
        }
        let pending = a.pending.lock().unwrap();
        assert_eq!(pending.len(), MAX_PENDING);
        // Keys hold the family and a hash, never the agent itself.
        assert!(pending.keys().all(|(_, family, _, _)| *family == "other"));
        drop(pending);
        // Every index fetch is still counted: the ones beyond the bound as index-only.
        let counted: u64 = a.counts.lock().unwrap().values().sum();
        assert_eq!(counted, 500);
    }

    #[tokio::test]
    async fn request_counters_only_for_existing_repositories_and_allowed_callers() {
        let dir = tempfile::tempdir().unwrap();
        let db = berth_meta::sqlite::SqliteStore::open(dir.path().join("m.db")).unwrap();
        let a = Analytics::new(
            Arc::new(db.clone()),
            Arc::new(db.clone()),
            Duration::from_secs(60),
        );
        let real = RepoName::parse("real").unwrap();
        db.blob_link(&real, &berth_oci::Digest::sha256(b"b"), 1)
            .await
            .unwrap();
        a.request(Some(&real), "tags", 200, None);
        for i in 0..(MAX_REQUEST_REPOS + 50) {
            let fake = RepoName::parse(&format!("x{i}/made/up")).unwrap();
            a.request(Some(&fake), "tags", 404, Some("NAME_UNKNOWN"));
        }
        // A refused request names no repository.
        a.request(None, "tags", 401, Some("UNAUTHORIZED"));
        assert!(a.requests.lock().unwrap().len() <= MAX_REQUEST_REPOS + 1);
        a.flush(false).await.unwrap();
        assert_eq!(db.requests("real", 0).await.unwrap()[0].1, 1);
        assert!(db.requests("x1/made/up", 0).await.unwrap().is_empty());
        let other: u64 = db
            .requests(OTHER, 0)
            .await
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum();
        assert_eq!(other, MAX_REQUEST_REPOS as u64 + 50 + 1);
    }
}
