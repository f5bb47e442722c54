//! Download analytics: who pulls which version on which platform, without a database
//! write per pull.
//!
//! This module is the one place that decides what a download is; the `berth_pulls_total`
//! and `berth_inspections_total` metrics are incremented here, at the moment a fetch is
//! classified, from the same decision that the stats API counts (see
//! [`Analytics::with_metrics`]).
//!
//! A **download** is a fetch of image content: a successful `GET` of a platform manifest
//! (anything that is not an index). It is attributed to the repository, the version (the
//! manifest's or its index's `org.opencontainers.image.version`, else a release tag
//! pointing at it), the platform (for a child of an index, the platform the index gives
//! it; for a single-platform image, the platform of its config, read at push time), the
//! client family (from the User-Agent) and the account. An index fetched and then one of
//! its children fetched by the same client within [`INDEX_WINDOW`] is one download of
//! that platform.
//!
//! An **inspection** is a metadata-only fetch: an index fetched with no child after it
//! within the window (`berth inspect`, `skopeo inspect --raw`, a bare `curl`), or a
//! `HEAD` of a manifest with no `GET` after it within the window (a client checking for
//! updates). A `HEAD` followed by a `GET` is one pull (docker and containerd resolve a
//! tag with a `HEAD`) and counts only as the download the `GET` makes.
//!
//! Events are counted in memory per (repository, kind, version, platform, client,
//! account, hour) and flushed in one transaction every flush interval and at shutdown,
//! so a crash loses at most one interval of counts.
//!
//! Memory and the database stay bounded whatever callers send: a fetch waiting for its
//! follow-up is keyed by the client address, the client family and a 64-bit hash of the
//! User-Agent (never the agent itself), and at most [`MAX_PENDING`] wait at once; request
//! counters are kept per repository only for repositories that exist (checked at flush)
//! and for at most [`MAX_REQUEST_REPOS`] of them per interval. Everything else, and every
//! request refused by access control, is counted under [`OTHER`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_meta::{
    DownloadKey, FetchKind, MetaError, MetadataStore, RequestKey, StatsStore, StoredManifest,
};
use berth_oci::{Digest, ParsedManifest, RepoName};

use crate::metrics::Metrics;

/// How long an index fetch (or a `HEAD`) waits for a follow-up fetch by the same client.
pub const INDEX_WINDOW: Duration = Duration::from_secs(60);
/// Platform of an inspection that fetched an index and no child.
pub const INDEX: &str = "index";
/// Version placeholder resolved at flush time from the release tags of a digest.
const UNRESOLVED: char = '@';
/// Fetches waiting for a follow-up at once; beyond it a fetch counts as an inspection at
/// once.
pub const MAX_PENDING: usize = 10_000;
/// Most distinct manifests whose pull time one flush interval keeps.
pub const MAX_PULLS: usize = 100_000;
/// Distinct repositories with request counters per flush interval.
pub const MAX_REQUEST_REPOS: usize = 1_000;
/// The request-counter bucket for refused requests, repositories that do not exist, and
/// repositories beyond [`MAX_REQUEST_REPOS`]. Not a valid repository name, so it
/// collides with none.
pub const OTHER: &str = "_other";

/// Who fetched an index or sent a `HEAD`: client address, client family, a hash of the
/// full User-Agent (so two tools of one family on one host stay apart) and the repository.
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

/// One manifest fetch of a client, as the analytics see it.
#[derive(Debug, Clone, Copy)]
pub struct Fetch<'a> {
    pub repo: &'a RepoName,
    pub client: IpAddr,
    pub user_agent: &'a str,
    /// The tag the manifest was asked by, if it was.
    pub tag: Option<&'a str>,
    /// The account that fetched, empty for anonymous callers and open registries.
    pub account: &'a str,
}

/// A fetch waiting for a follow-up from the same client: an index (for one of its
/// children) or a `HEAD` (for any `GET`).
struct Pending {
    at: Instant,
    hour: i64,
    repo: String,
    version: String,
    client: &'static str,
    account: String,
    /// child digest → platform (empty for a `HEAD`).
    children: HashMap<String, String>,
    /// The platform it is counted under if it ends up an inspection.
    platform: String,
    head: bool,
}

impl Pending {
    fn fresh(&self) -> bool {
        self.at.elapsed() < INDEX_WINDOW
    }
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
    /// (client address, User-Agent, repository) → the index it fetched or the manifest
    /// it checked last.
    pending: Mutex<HashMap<PendingKey, Pending>>,
    /// (repository, manifest digest) → unix seconds of its last `GET` since the last
    /// flush, for retention's `keep_pulled_within`; at most [`MAX_PULLS`] entries.
    pulls: Mutex<HashMap<(String, Digest), i64>>,
    stats: Arc<dyn StatsStore>,
    meta: Arc<dyn MetadataStore>,
    /// Where `berth_pulls_total` and `berth_inspections_total` are counted.
    metrics: Option<Arc<Metrics>>,
    pub flush_interval: Duration,
    /// When false, downloads are not stored (requests and bytes still are, and the
    /// download metrics still count).
    pub enabled: bool,
    /// Whether manifest pull times are noted: only a retention rule with
    /// `keep_pulled_within` reads them, and without one the pull path does no such work.
    pub track_pulls: bool,
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
            pulls: Mutex::new(HashMap::new()),
            stats,
            meta,
            metrics: None,
            flush_interval,
            enabled: true,
            track_pulls: true,
        }
    }

    /// Counts every classified download and inspection in `metrics` too, so that
    /// `berth_pulls_total` is the stats API's download count by construction.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Analytics {
        self.metrics = Some(metrics);
        self
    }

    /// The store the counters are flushed to (for queries).
    pub fn stats(&self) -> &Arc<dyn StatsStore> {
        &self.stats
    }

    fn count(&self, key: DownloadKey) {
        if let Some(m) = &self.metrics {
            match key.kind {
                FetchKind::Download => m.pull(&key.repo),
                FetchKind::Inspection => m.inspection(&key.repo),
            }
        }
        if !self.enabled {
            return;
        }
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// The version of `m` fetched as `f`, or a placeholder resolved at flush time.
    fn version_of(f: &Fetch<'_>, m: &StoredManifest) -> String {
        m.version
            .clone()
            .or_else(|| version_from_tag(f.tag))
            .unwrap_or_else(|| format!("{UNRESOLVED}{}", m.digest))
    }

    fn key_of(f: &Fetch<'_>, family: &'static str) -> PendingKey {
        (
            f.client,
            family,
            agent_hash(f.user_agent),
            f.repo.to_string(),
        )
    }

    /// Records a successful manifest `GET`.
    pub fn manifest_served(&self, f: &Fetch<'_>, m: &StoredManifest) {
        if self.track_pulls {
            self.pulled(f.repo, &m.digest);
        }
        let family = client_family(f.user_agent);
        let hour = hour_now();
        let version = Self::version_of(f, m);
        if berth_oci::media_types::is_index(&m.media_type) {
            let key = Self::key_of(f, family);
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
            let index = Pending {
                at: Instant::now(),
                hour,
                repo: f.repo.to_string(),
                version,
                client: family,
                account: f.account.to_owned(),
                children,
                platform: INDEX.to_owned(),
                head: false,
            };
            let (replaced, full) = {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
                    (None, Some(index))
                } else {
                    (pending.insert(key, index), None)
                }
            };
            // A fresh `HEAD` before this `GET` was the start of this pull (docker and
            // containerd resolve a tag that way); anything else was an inspection.
            if let Some(old) = replaced.filter(|o| !(o.head && o.fresh())) {
                self.inspected(old);
            }
            if let Some(index) = full {
                // Too many clients mid-pull: expire what is old, and count this one as
                // an inspection rather than grow without bound.
                self.expire_pending(false);
                self.inspected(index);
            }
            return;
        }
        let digest = m.digest.to_string();
        let followed = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            // The common case (nothing waiting anywhere) builds no key at all.
            if pending.is_empty() {
                None
            } else {
                let key = Self::key_of(f, family);
                match pending.get(&key) {
                    Some(p) if p.fresh() && (p.head || p.children.contains_key(&digest)) => {
                        pending.remove(&key)
                    }
                    _ => None,
                }
            }
        };
        match followed {
            Some(idx) if !idx.head => {
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
                    account: f.account.to_owned(),
                    kind: FetchKind::Download,
                    hour: idx.hour,
                });
            }
            // A `HEAD` followed by this `GET` is this download, and nothing more.
            _ => self.count(DownloadKey {
                repo: f.repo.to_string(),
                version,
                platform: m.platform.clone().unwrap_or_else(|| "unknown".into()),
                client: family.to_owned(),
                account: f.account.to_owned(),
                kind: FetchKind::Download,
                hour,
            }),
        }
    }

    /// Records a successful manifest `HEAD`: an inspection, unless a `GET` by the same
    /// client follows within [`INDEX_WINDOW`] (then it is part of that pull).
    pub fn manifest_checked(&self, f: &Fetch<'_>, m: &StoredManifest) {
        let family = client_family(f.user_agent);
        let platform = if berth_oci::media_types::is_index(&m.media_type) {
            INDEX.to_owned()
        } else {
            m.platform.clone().unwrap_or_else(|| "unknown".into())
        };
        let head = Pending {
            at: Instant::now(),
            hour: hour_now(),
            repo: f.repo.to_string(),
            version: Self::version_of(f, m),
            client: family,
            account: f.account.to_owned(),
            children: HashMap::new(),
            platform,
            head: true,
        };
        let key = Self::key_of(f, family);
        let (replaced, full) = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            match pending.get(&key) {
                // A `HEAD` in the middle of a pull (after its index) is part of it.
                Some(p) if !p.head && p.fresh() => (None, None),
                Some(_) => (pending.insert(key, head), None),
                None if pending.len() >= MAX_PENDING => (None, Some(head)),
                None => (pending.insert(key, head), None),
            }
        };
        // A `HEAD` after a `HEAD` (a client polling for updates) ends the first one as an
        // inspection.
        if let Some(old) = replaced {
            self.inspected(old);
        }
        if let Some(head) = full {
            self.expire_pending(false);
            self.inspected(head);
        }
    }

    fn inspected(&self, p: Pending) {
        self.count(DownloadKey {
            repo: p.repo,
            version: p.version,
            platform: p.platform,
            client: p.client.to_owned(),
            account: p.account,
            kind: FetchKind::Inspection,
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

    /// Turns fetches that waited longer than the window for a follow-up (or all, at
    /// shutdown) into inspections.
    fn expire_pending(&self, all: bool) {
        let expired: Vec<Pending> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<_> = pending
                .iter()
                .filter(|(_, p)| all || !p.fresh())
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| pending.remove(&k))
                .collect()
        };
        for p in expired {
            self.inspected(p);
        }
    }

    /// Notes that `digest` of `repo` was pulled now. Pull times are kept whether or not
    /// download analytics are on: retention rules need them (see `track_pulls`). Only served manifests get
    /// here, so entries are bounded by what is stored; [`MAX_PULLS`] bounds one
    /// interval's memory all the same (later pulls of new digests wait for the next).
    fn pulled(&self, repo: &RepoName, digest: &Digest) {
        let now = berth_oci::time::now();
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        let key = (repo.to_string(), digest.clone());
        if let Some(at) = pulls.get_mut(&key) {
            *at = now;
        } else if pulls.len() < MAX_PULLS {
            pulls.insert(key, now);
        }
    }

    /// Writes the pull times noted since the last flush; kept for the next on failure.
    async fn write_pulls(&self) -> Result<(), MetaError> {
        let pulls = std::mem::take(&mut *self.pulls.lock().unwrap_or_else(|p| p.into_inner()));
        if pulls.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, Digest, i64)> = pulls
            .iter()
            .map(|((repo, d), at)| (repo.clone(), d.clone(), *at))
            .collect();
        let result = self.stats.pulls_add(rows).await;
        if result.is_err() {
            let mut p = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
            for (k, at) in pulls {
                let e = p.entry(k).or_insert(at);
                *e = (*e).max(at);
            }
        }
        result
    }

    /// Writes the counters accumulated so far. `final_flush` also counts every waiting
    /// fetch (as an inspection). Whatever cannot be written is kept for the next flush, never dropped.
    pub async fn flush(&self, final_flush: bool) -> Result<(), MetaError> {
        self.expire_pending(final_flush);
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        let bytes = std::mem::take(&mut *self.bytes.lock().unwrap_or_else(|p| p.into_inner()));
        let requests =
            std::mem::take(&mut *self.requests.lock().unwrap_or_else(|p| p.into_inner()));
        let written_requests = self.write_requests(requests).await;
        let written_downloads = self.write_downloads(counts, bytes).await;
        let written_pulls = self.write_pulls().await;
        written_requests.and(written_downloads).and(written_pulls)
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

    fn fetch<'a>(
        repo: &'a RepoName,
        user_agent: &'a str,
        tag: Option<&'a str>,
        account: &'a str,
    ) -> Fetch<'a> {
        Fetch {
            repo,
            client: IpAddr::from([127, 0, 0, 1]),
            user_agent,
            tag,
            account,
        }
    }

    /// A stats store whose writes fail until told otherwise.
    struct Flaky {
        fail: std::sync::atomic::AtomicBool,
        inner: berth_meta::sqlite::SqliteStore,
    }

    #[async_trait::async_trait]
    impl StatsStore for Flaky {
        async fn pulls_add(&self, p: Vec<(String, Digest, i64)>) -> Result<(), MetaError> {
            self.inner.pulls_add(p).await
        }
        async fn last_pulls(&self, r: &str) -> Result<Vec<(Digest, i64)>, MetaError> {
            self.inner.last_pulls(r).await
        }
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
        async fn inspections(
            &self,
            r: &str,
            s: i64,
            by: berth_meta::GroupBy,
        ) -> Result<Vec<(String, u64)>, MetaError> {
            self.inner.inspections(r, s, by).await
        }
        async fn downloads_by_account(
            &self,
            r: &str,
            s: i64,
        ) -> Result<Vec<(String, String, u64)>, MetaError> {
            self.inner.downloads_by_account(r, s).await
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
        async fn stats_roll_up(&self, before_hour: i64) -> Result<u64, MetaError> {
            self.inner.stats_roll_up(before_hour).await
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
            a.manifest_served(&fetch(&repo, "skopeo/1", Some("1.0.0"), ""), &m);
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
            a.manifest_served(&fetch(&repo, &ua, None, ""), &index);
        }
        let pending = a.pending.lock().unwrap();
        assert_eq!(pending.len(), MAX_PENDING);
        // Keys hold the family and a hash, never the agent itself.
        assert!(pending.keys().all(|(_, family, _, _)| *family == "other"));
        drop(pending);
        // Every index fetch is still counted: the ones beyond the bound as inspections.
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

    fn image(platform: &str, seed: &str) -> StoredManifest {
        StoredManifest {
            digest: berth_oci::Digest::sha256(seed.as_bytes()),
            media_type: berth_oci::media_types::OCI_MANIFEST.into(),
            content: bytes::Bytes::from_static(b"{}"),
            version: Some("2.0.0".into()),
            platform: Some(platform.into()),
        }
    }

    /// The counters held in memory, by (kind, platform, account).
    fn held(a: &Analytics) -> Vec<(FetchKind, String, String, u64)> {
        let mut v: Vec<_> = a
            .counts
            .lock()
            .unwrap()
            .iter()
            .map(|(k, n)| (k.kind, k.platform.clone(), k.account.clone(), *n))
            .collect();
        v.sort();
        v
    }

    /// Regression (issue 18): an index fetched alone (`berth inspect`, `skopeo inspect
    /// --raw`, `curl`) was counted as an `index-only` download; a `HEAD` with nothing
    /// after it is an inspection too, and a `HEAD` then `GET` is one download.
    #[tokio::test]
    async fn metadata_only_fetches_are_inspections() {
        let dir = tempfile::tempdir().unwrap();
        let db = berth_meta::sqlite::SqliteStore::open(dir.path().join("m.db")).unwrap();
        let metrics = Arc::new(Metrics::default());
        let a = Analytics::new(Arc::new(db.clone()), Arc::new(db), Duration::from_secs(60))
            .with_metrics(metrics.clone());
        let repo = RepoName::parse("r").unwrap();
        let index = index_of(2);
        let child = image("linux/amd64", "c0");
        let single = image("linux/s390x", "single");

        // An index alone, by berth: waiting, then an inspection once the window ends.
        a.manifest_served(&fetch(&repo, "berth/0.1", None, "ann"), &index);
        assert!(held(&a).is_empty(), "still waiting for a child");
        // containerd resolves a tag with a HEAD, then GETs the image: one download.
        a.manifest_checked(
            &fetch(&repo, "containerd/1.7", Some("2.0.0"), "bob"),
            &single,
        );
        a.manifest_served(&fetch(&repo, "containerd/1.7", None, "bob"), &single);
        // skopeo: the index, then its amd64 child: one download of linux/amd64.
        a.manifest_served(&fetch(&repo, "skopeo/1", None, "carol"), &index);
        a.manifest_served(&fetch(&repo, "skopeo/1", None, "carol"), &child);
        // A client polling for updates with HEADs: each HEAD is an inspection.
        a.manifest_checked(&fetch(&repo, "watch/1", None, ""), &single);
        a.manifest_checked(&fetch(&repo, "watch/1", None, ""), &single);
        let s = |x: &str| x.to_owned();
        assert_eq!(
            held(&a),
            vec![
                (FetchKind::Download, s("linux/amd64"), s("carol"), 1),
                (FetchKind::Download, s("linux/s390x"), s("bob"), 1),
                (FetchKind::Inspection, s("linux/s390x"), s(""), 1),
            ]
        );
        a.expire_pending(true);
        assert_eq!(
            held(&a),
            vec![
                (FetchKind::Download, s("linux/amd64"), s("carol"), 1),
                (FetchKind::Download, s("linux/s390x"), s("bob"), 1),
                (FetchKind::Inspection, s("index"), s("ann"), 1),
                (FetchKind::Inspection, s("linux/s390x"), s(""), 2),
            ]
        );
        // The metrics count the same decisions.
        let text = metrics.render((0, 0));
        assert!(
            text.contains("berth_pulls_total{repository=\"r\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("berth_inspections_total{repository=\"r\"} 3"),
            "{text}"
        );
    }
}
