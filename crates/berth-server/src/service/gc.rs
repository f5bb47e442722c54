//! Online garbage collection: frees blob files and untagged manifests nothing needs,
//! while the registry serves pushes and pulls, and explains why anything is kept.
//!
//! # What is kept (the mark)
//!
//! In each repository: every tagged manifest (cosign v2 `sha256-<hex>.sig`/`.att`/`.sbom`
//! tags are tags too), every child of a kept index, every referrer of a kept manifest
//! (recursively: signatures, SBOMs and attestations stay with their subject), every
//! manifest younger than the grace window, and every manifest of a repository that no
//! `[[gc]]` rule with an `untagged_ttl` covers; then every blob a kept manifest lists,
//! and every blob link younger than the grace window. Uploads in flight are not in the
//! blob namespace at all (their bytes live under `uploads/` until committed, and a
//! commit claims its digest first), so no sweep can reach them.
//!
//! # The sweep, and why a crash or a racing push loses nothing
//!
//! 1. **Manifests** (only under a rule with `untagged_ttl`): those the mark did not keep
//!    are deleted in batches by [`MetadataStore::gc_delete_manifests`], whose transaction
//!    deletes a manifest only if, at that moment, no tag points at it, no index of the
//!    repository lists it and its subject is not a manifest of the repository. A tag
//!    pushed or an index pushed since the mark therefore wins; parents go before their
//!    children, so the batches are repeated until one deletes nothing.
//! 2. **Links**: links no manifest of their repository references and older than the
//!    grace window are removed in batches by [`MetadataStore::gc_unlink`], which checks
//!    both again in its transaction; a manifest push that commits first keeps its blob,
//!    one that commits after is refused with `MANIFEST_BLOB_UNKNOWN` (the client pushes
//!    the blob again). Bytes are not touched: an unlinked file is now an orphan.
//! 3. **Files**: the blob store is listed ([`BlobStore::list`]); each file older than the
//!    grace window is offered to [`MetadataStore::gc_tombstone`], which records a
//!    deletion tombstone only for digests no repository links and no live claim
//!    protects. Only those files are deleted, then the tombstones ended
//!    ([`MetadataStore::gc_deletions_done`]). This is the store's claim protocol: while
//!    the tombstone stands no commit can claim the digest (it waits and retries) and no
//!    link or mount can appear, so no link ever names a deleted file.
//!
//! A crash after step 1 or 2 leaves unreferenced links or orphan files, which the next
//! run removes; after a tombstone, a file not yet deleted stays until the tombstone goes
//! stale ([`berth_meta::TOMBSTONE_STALE_SECS`]) and a later run takes it over. No step
//! removes something a link, a tag or a kept manifest needs. Every write is one short
//! transaction over at most [`WRITE_BATCH`] rows, so pushes keep going during a run.
//!
//! Every decision is a transaction of the shared metadata database, so the protocol
//! holds for several replicas over one database and one blob store, and for two
//! collectors at once (a fresh tombstone of another deleter is skipped).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use berth_auth::{PatternSet, RepoPatterns};
use berth_meta::gc::{Link, LinkCursor, ManifestNode};
use berth_meta::Page;
use berth_oci::{Digest, RepoName};
use serde::{Deserialize, Serialize};

use super::{Registry, RegistryError, Result};
use crate::events::{Actor, Event};

/// Most rows one collector write touches: small enough that its transaction holds the
/// database's write lock for milliseconds.
pub const WRITE_BATCH: usize = 250;
/// Candidate links read per query.
const LINK_PAGE: usize = 5_000;
/// Blob files listed per page. Large, because a filesystem listing reads its whole
/// directory for every page (about 40 MB of listing held at once at this size).
const FILE_PAGE: usize = 250_000;
/// Repository names read per page of the catalog.
const REPO_PAGE: usize = 500;
/// Passes over a repository's garbage manifests (each deletes the parents the previous
/// one freed); more than the deepest index → manifest → referrer chain.
const MAX_MANIFEST_PASSES: usize = 16;

/// One `[[gc]]` rule of the configuration: for repositories matching `repositories`
/// (`*` matches any characters), untagged manifests that nothing keeps are deleted once
/// older than `untagged_ttl`. The first matching rule applies; without one, or without
/// `untagged_ttl`, untagged manifests are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcRule {
    /// A repository pattern or a list of them.
    pub repositories: RepoPatterns,
    /// E.g. `"7d"`; absent: untagged manifests are kept.
    #[serde(default, deserialize_with = "crate::config::duration_str::option")]
    pub untagged_ttl: Option<Duration>,
}

/// A `[[gc]]` rule whose pattern does not parse.
#[derive(Debug, thiserror::Error)]
#[error("gc: {0}")]
pub struct GcRuleError(String);

/// The collector's standing settings: the default grace window and the rules.
#[derive(Debug, Clone)]
pub struct GcSettings {
    pub grace: Duration,
    rules: Vec<(PatternSet, Option<Duration>)>,
}

impl Default for GcSettings {
    fn default() -> GcSettings {
        GcSettings {
            grace: Duration::from_secs(3600),
            rules: Vec::new(),
        }
    }
}

impl GcSettings {
    pub fn new(grace: Duration, rules: &[GcRule]) -> std::result::Result<GcSettings, GcRuleError> {
        let rules = rules
            .iter()
            .map(|r| {
                r.repositories
                    .compile()
                    .map(|p| (p, r.untagged_ttl))
                    .map_err(|e| GcRuleError(e.to_string()))
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(GcSettings { grace, rules })
    }

    /// How long untagged manifests of `repo` live, if they are collected at all.
    pub fn untagged_ttl(&self, repo: &str) -> Option<Duration> {
        self.rules
            .iter()
            .find(|(p, _)| p.matches(repo))
            .and_then(|(_, ttl)| *ttl)
    }
}

/// How one collection runs.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Only say what would be freed.
    pub dry_run: bool,
    /// The grace window; `None` takes the configured one.
    pub grace: Option<Duration>,
    /// For crash tests: stop right after this step, leaving what a crash there would.
    pub halt_after: Option<GcStep>,
}

/// The steps of a run at which [`GcOptions::halt_after`] can stop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcStep {
    /// Garbage manifests are deleted.
    Manifests,
    /// Unreferenced links are removed.
    Links,
    /// The first batch of files has tombstones, and no file is deleted yet.
    Tombstones,
    /// The first batch of files is deleted, and its tombstones are not ended.
    FilesDeleted,
}

/// What one repository gave up (or would).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepoFreed {
    pub repository: String,
    pub manifests: u64,
    pub links: u64,
    /// Bytes of the blobs unlinked from the repository (shared blobs count in each).
    pub bytes: u64,
}

/// What a collection did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Tags deleted by `[[retention]]` rules (for a dry run: that would be).
    pub tags_deleted: u64,
    /// Retention's verdicts: for a dry run every judged tag with the rule that keeps or
    /// deletes it, for a real run the deleted tags only.
    pub retention: Vec<super::TagVerdict>,
    /// Unix seconds when the run started (RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub started_at: i64,
    pub duration_ms: u64,
    pub grace_secs: u64,
    pub manifests_deleted: u64,
    pub links_removed: u64,
    /// Blob files deleted (for a dry run: whose every link goes, plus orphan files).
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    /// Per repository with anything to free, in name order.
    pub repositories: Vec<RepoFreed>,
    /// The longest single collector write, in milliseconds (queueing and commit
    /// included): an upper bound of how long the run held the write lock at once.
    pub longest_write_ms: f64,
    /// Collector writes made.
    pub writes: u64,
    /// Milliseconds spent in each step: manifests, links, files.
    pub step_ms: [u64; 3],
}

/// Why something is kept, or that it is garbage.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub digest: Digest,
    /// `kept`, `garbage` or `unknown` (neither linked, nor a manifest, nor a file).
    pub verdict: &'static str,
    /// One entry per repository that holds it.
    pub reasons: Vec<Reason>,
}

/// Why a repository keeps (or drops) a digest.
#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    /// Empty for a file no repository links.
    pub repository: String,
    pub kept: bool,
    /// From what keeps it down to the digest: `tag v1`, `index sha256:…`,
    /// `manifest sha256:…`, `referrer sha256:…`, `blob sha256:…`.
    pub path: Vec<String>,
    /// The rule that decided, in words.
    pub why: String,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.kept { "kept" } else { "garbage" };
        if !self.repository.is_empty() {
            write!(f, "{}: ", self.repository)?;
        }
        write!(f, "{verdict}: {}", self.why)?;
        if !self.path.is_empty() {
            write!(f, " ({})", self.path.join(" -> "))?;
        }
        Ok(())
    }
}

/// Why the mark keeps a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keep {
    Tag(String),
    Young,
    /// No rule collects untagged manifests of the repository.
    NoRule,
    /// A child of this kept index.
    Child(Digest),
    /// A referrer of this kept subject.
    Referrer(Digest),
}

/// The mark of one repository: every kept manifest with why.
struct Mark {
    kept: HashMap<Digest, Keep>,
    /// Whether each manifest is an index (lists children), for the path's words.
    index: HashSet<Digest>,
}

impl Mark {
    /// Marks `nodes`: roots are tagged manifests, manifests stored after
    /// `created_before`, or everything when `collect` is off; then children of kept
    /// indexes and referrers of kept manifests.
    fn new(nodes: &[ManifestNode], created_before: i64, collect: bool) -> Mark {
        let mut kept: HashMap<Digest, Keep> = HashMap::new();
        let mut queue: VecDeque<Digest> = VecDeque::new();
        let mut referrers: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
        let by_digest: HashMap<&Digest, &ManifestNode> =
            nodes.iter().map(|n| (&n.digest, n)).collect();
        for n in nodes {
            if let Some(s) = &n.subject {
                referrers.entry(s).or_default().push(&n.digest);
            }
            let root = if let Some(t) = n.tags.first() {
                Some(Keep::Tag(t.clone()))
            } else if !collect {
                Some(Keep::NoRule)
            } else if n.created_at > created_before {
                Some(Keep::Young)
            } else {
                None
            };
            if let Some(why) = root {
                kept.insert(n.digest.clone(), why);
                queue.push_back(n.digest.clone());
            }
        }
        while let Some(d) = queue.pop_front() {
            let children = by_digest
                .get(&d)
                .map(|n| n.children.as_slice())
                .unwrap_or(&[]);
            for c in children {
                if !kept.contains_key(c) && by_digest.contains_key(c) {
                    kept.insert(c.clone(), Keep::Child(d.clone()));
                    queue.push_back(c.clone());
                }
            }
            for r in referrers.get(&d).into_iter().flatten() {
                if !kept.contains_key(*r) {
                    kept.insert((*r).clone(), Keep::Referrer(d.clone()));
                    queue.push_back((*r).clone());
                }
            }
        }
        let index = nodes
            .iter()
            .filter(|n| !n.children.is_empty())
            .map(|n| n.digest.clone())
            .collect();
        Mark { kept, index }
    }

    /// The path from what keeps `d` down to `d` (which must be kept), and the rule.
    fn path(&self, d: &Digest) -> (Vec<String>, String) {
        let mut path = Vec::new();
        let mut at = d.clone();
        let mut why = String::new();
        // The chain ends at a root; the bound only guards against a corrupt graph.
        for _ in 0..64 {
            let Some(keep) = self.kept.get(&at) else {
                break;
            };
            match keep {
                Keep::Referrer(subject) => {
                    path.push(format!("referrer {at}"));
                    at = subject.clone();
                    continue;
                }
                Keep::Child(parent) => {
                    path.push(self.word(&at));
                    at = parent.clone();
                    continue;
                }
                Keep::Tag(t) => {
                    path.push(self.word(&at));
                    path.push(format!("tag {t}"));
                    why = format!("reachable from tag {t}");
                }
                Keep::Young => {
                    path.push(self.word(&at));
                    why = "an untagged manifest younger than the grace window".to_owned();
                }
                Keep::NoRule => {
                    path.push(self.word(&at));
                    why = "untagged manifests of this repository are kept (no [[gc]] rule with untagged_ttl)".to_owned();
                }
            }
            break;
        }
        path.reverse();
        (path, why)
    }

    fn word(&self, d: &Digest) -> String {
        if self.index.contains(d) {
            format!("index {d}")
        } else {
            format!("manifest {d}")
        }
    }

    /// Garbage manifests of `nodes`, those nothing keeps.
    fn garbage(&self, nodes: &[ManifestNode]) -> Vec<Digest> {
        nodes
            .iter()
            .filter(|n| !self.kept.contains_key(&n.digest))
            .map(|n| n.digest.clone())
            .collect()
    }
}

/// Unix seconds `d` before `now`.
fn rfc3339<S: serde::Serializer>(secs: &i64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&berth_oci::time::rfc3339(*secs))
}

fn before(now: i64, d: Duration) -> i64 {
    now.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Per-repository tallies and the longest write, while a run goes.
#[derive(Default)]
struct Tally {
    repos: HashMap<String, RepoFreed>,
    longest: Duration,
    writes: u64,
}

impl Tally {
    fn repo(&mut self, name: &str) -> &mut RepoFreed {
        self.repos
            .entry(name.to_owned())
            .or_insert_with(|| RepoFreed {
                repository: name.to_owned(),
                ..RepoFreed::default()
            })
    }

    /// Times one collector write.
    async fn write<T, F>(&mut self, f: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<T, berth_meta::MetaError>>,
    {
        let started = Instant::now();
        let r = f.await;
        self.longest = self.longest.max(started.elapsed());
        self.writes += 1;
        Ok(r?)
    }
}

impl Registry {
    /// The collector's settings (grace window and `[[gc]]` rules).
    pub fn with_gc(mut self, settings: GcSettings) -> Registry {
        self.gc = settings;
        self
    }

    /// The report of the last collection this process ran (not dry runs).
    pub fn last_gc(&self) -> Option<Arc<GcReport>> {
        self.last_gc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs a collection now (see the module docs); one at a time per process. A real
    /// run is reported as [`Event::GcFinished`] by `actor`.
    pub async fn gc(&self, options: GcOptions, actor: Actor) -> Result<GcReport> {
        let _one = self.gc_running.lock().await;
        let started = Instant::now();
        let now = berth_oci::time::now();
        let grace = options.grace.unwrap_or(self.gc.grace);
        let cutoff = before(now, grace);
        let mut report = GcReport {
            dry_run: options.dry_run,
            started_at: now,
            grace_secs: grace.as_secs(),
            ..GcReport::default()
        };
        let mut tally = Tally::default();
        // Retention first, so that the mark sees the tags it deletes gone.
        let verdicts = self.apply_retention(options.dry_run, now, &actor).await?;
        let mut expired: HashMap<String, HashSet<String>> = HashMap::new();
        for v in verdicts.iter().filter(|v| v.delete) {
            expired
                .entry(v.repository.clone())
                .or_default()
                .insert(v.tag.clone());
        }
        report.tags_deleted = verdicts.iter().filter(|v| v.delete).count() as u64;
        report.retention = if options.dry_run {
            verdicts
        } else {
            verdicts.into_iter().filter(|v| v.delete).collect()
        };
        let done = self
            .gc_steps(
                &options,
                now,
                cutoff,
                grace,
                &expired,
                &mut report,
                &mut tally,
            )
            .await?;
        let mut repos: Vec<RepoFreed> = tally.repos.into_values().collect();
        repos.sort_by(|a, b| a.repository.cmp(&b.repository));
        report.repositories = repos;
        report.longest_write_ms = tally.longest.as_secs_f64() * 1000.0;
        report.writes = tally.writes;
        report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            dry_run = report.dry_run,
            halted = !done,
            tags = report.tags_deleted,
            manifests = report.manifests_deleted,
            links = report.links_removed,
            blobs = report.blobs_deleted,
            bytes = report.bytes_freed,
            ms = report.duration_ms,
            longest_write_ms = report.longest_write_ms,
            "garbage collection finished"
        );
        if !report.dry_run && done {
            let shared = Arc::new(report.clone());
            *self.last_gc.lock().unwrap_or_else(|p| p.into_inner()) = Some(shared.clone());
            self.emit(Event::GcFinished {
                report: shared,
                actor,
            })
            .await;
        }
        Ok(report)
    }

    /// The three sweeps; `false` when halted by [`GcOptions::halt_after`]. `expired`
    /// holds, by repository, the tags retention deleted (or, in a dry run, would).
    #[allow(clippy::too_many_arguments)]
    async fn gc_steps(
        &self,
        options: &GcOptions,
        now: i64,
        cutoff: i64,
        grace: Duration,
        expired: &HashMap<String, HashSet<String>>,
        report: &mut GcReport,
        tally: &mut Tally,
    ) -> Result<bool> {
        let halt = |step: GcStep| options.halt_after == Some(step);
        let ms = |since: Instant| u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
        let step = Instant::now();
        self.sweep_manifests(options.dry_run, now, cutoff, expired, report, tally)
            .await?;
        report.step_ms[0] = ms(step);
        if halt(GcStep::Manifests) {
            return Ok(false);
        }
        // Links whose removal a dry run only counts, by digest, to tell which files
        // would lose their last link.
        let step = Instant::now();
        let dead = self
            .sweep_links(options.dry_run, cutoff, report, tally)
            .await?;
        report.step_ms[1] = ms(step);
        if halt(GcStep::Links) {
            return Ok(false);
        }
        let step = Instant::now();
        let old = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut cursor: Option<Digest> = None;
        loop {
            let page = self.blobs.list(cursor.as_ref(), FILE_PAGE).await?;
            let files: Vec<(Digest, u64)> = page
                .blobs
                .iter()
                .filter(|b| b.modified <= old)
                .map(|b| (b.digest.clone(), b.size))
                .collect();
            for batch in files.chunks(WRITE_BATCH) {
                if !self
                    .sweep_files(options, batch, &dead, report, tally)
                    .await?
                {
                    return Ok(false);
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        report.step_ms[2] = ms(step);
        Ok(true)
    }

    /// Step 1: deletes the manifests the mark does not keep, in repositories whose rule
    /// has an `untagged_ttl`.
    async fn sweep_manifests(
        &self,
        dry_run: bool,
        now: i64,
        cutoff: i64,
        expired: &HashMap<String, HashSet<String>>,
        report: &mut GcReport,
        tally: &mut Tally,
    ) -> Result<()> {
        if self.gc.rules.iter().all(|(_, ttl)| ttl.is_none()) {
            return Ok(());
        }
        for repo in self.all_repositories().await? {
            let Some(ttl) = self.gc.untagged_ttl(repo.as_str()) else {
                continue;
            };
            let created_before = cutoff.min(before(now, ttl));
            let mut nodes = self.meta.gc_manifests(&repo).await?;
            // A dry run's tags are all still there: the mark ignores those retention
            // would delete, so that the manifests they alone keep count as garbage.
            if let Some(gone) = expired.get(repo.as_str()).filter(|_| dry_run) {
                for n in &mut nodes {
                    n.tags.retain(|t| !gone.contains(t));
                }
            }
            let garbage = Mark::new(&nodes, created_before, true).garbage(&nodes);
            if garbage.is_empty() {
                continue;
            }
            if dry_run {
                report.manifests_deleted += garbage.len() as u64;
                tally.repo(repo.as_str()).manifests += garbage.len() as u64;
                continue;
            }
            let mut left = garbage;
            for _ in 0..MAX_MANIFEST_PASSES {
                let mut deleted: HashSet<Digest> = HashSet::new();
                for batch in left.chunks(WRITE_BATCH) {
                    let gone = tally
                        .write(self.meta.gc_delete_manifests(&repo, batch, created_before))
                        .await?;
                    deleted.extend(gone);
                }
                if deleted.is_empty() {
                    break;
                }
                // A deleted signature stops counting at once, as with `delete_manifest`.
                self.verdicts.forget(repo.as_str(), None);
                report.manifests_deleted += deleted.len() as u64;
                tally.repo(repo.as_str()).manifests += deleted.len() as u64;
                left.retain(|d| !deleted.contains(d));
                if left.is_empty() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Step 2: removes links nothing references. Returns, for a dry run, how many links
    /// of each digest would go.
    async fn sweep_links(
        &self,
        dry_run: bool,
        cutoff: i64,
        report: &mut GcReport,
        tally: &mut Tally,
    ) -> Result<HashMap<Digest, u64>> {
        let mut dead: HashMap<Digest, u64> = HashMap::new();
        let mut cursor: Option<LinkCursor> = None;
        loop {
            let page = self
                .meta
                .gc_unreferenced_links(cursor.as_ref(), cutoff, LINK_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            cursor = Some(last.cursor());
            let mut removed: Vec<Link> = Vec::new();
            if dry_run {
                for l in &page {
                    *dead.entry(l.digest.clone()).or_default() += 1;
                }
                removed = page;
            } else {
                for batch in page.chunks(WRITE_BATCH) {
                    removed.extend(tally.write(self.meta.gc_unlink(batch, cutoff)).await?);
                }
            }
            for l in &removed {
                let r = tally.repo(&l.repo);
                r.links += 1;
                r.bytes += l.size;
            }
            report.links_removed += removed.len() as u64;
        }
        Ok(dead)
    }

    /// Step 3 for one batch of old files: tombstone the unlinked, delete them, end the
    /// tombstones (a dry run counts those whose every link would go). `false` when
    /// halted.
    async fn sweep_files(
        &self,
        options: &GcOptions,
        batch: &[(Digest, u64)],
        dead: &HashMap<Digest, u64>,
        report: &mut GcReport,
        tally: &mut Tally,
    ) -> Result<bool> {
        let digests: Vec<Digest> = batch.iter().map(|(d, _)| d.clone()).collect();
        let sizes: HashMap<&Digest, u64> = batch.iter().map(|(d, s)| (d, *s)).collect();
        if options.dry_run {
            let counts = self.meta.gc_link_counts(&digests).await?;
            for ((d, size), links) in batch.iter().zip(counts) {
                if links <= dead.get(d).copied().unwrap_or(0) {
                    report.blobs_deleted += 1;
                    report.bytes_freed += size;
                }
            }
            return Ok(true);
        }
        let taken = tally.write(self.meta.gc_tombstone(&digests)).await?;
        if taken.is_empty() {
            return Ok(true);
        }
        if options.halt_after == Some(GcStep::Tombstones) {
            return Ok(false);
        }
        for d in &taken {
            match self.blobs.delete(d).await {
                Ok(true) => {
                    report.blobs_deleted += 1;
                    report.bytes_freed += sizes.get(d).copied().unwrap_or(0);
                }
                Ok(false) => {}
                // The tombstone is ended all the same: the file stays an orphan, which
                // the next run offers again.
                Err(e) => {
                    tracing::warn!(digest = %d, error = %e, "gc: cannot delete an unlinked blob file")
                }
            }
        }
        if options.halt_after == Some(GcStep::FilesDeleted) {
            return Ok(false);
        }
        let ended = self.meta.gc_deletions_done(&taken);
        tally.write(ended).await?;
        Ok(true)
    }

    /// Every repository name, parsed (names that no longer parse hold nothing a client
    /// could pull, so the collector leaves them alone).
    pub(super) async fn all_repositories(&self) -> Result<Vec<RepoName>> {
        let mut all = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let names = self
                .meta
                .repositories(&Page {
                    last: last.clone(),
                    n: Some(REPO_PAGE),
                })
                .await?;
            all.extend(names.iter().filter_map(|n| RepoName::parse(n).ok()));
            if names.len() < REPO_PAGE {
                return Ok(all);
            }
            last = names.last().cloned();
        }
    }

    /// Says why `digest` (a blob or a manifest) is kept, repository by repository, or
    /// that the next collection with the configured grace window would delete it.
    pub async fn gc_explain(&self, digest: &Digest) -> Result<Explanation> {
        let now = berth_oci::time::now();
        let cutoff = before(now, self.gc.grace);
        let mut reasons = Vec::new();
        let mut marks: HashMap<String, (Vec<ManifestNode>, Mark)> = HashMap::new();
        for repo in self.all_repositories().await? {
            let holders = self.meta.gc_blob_holders(&repo, digest).await?;
            let is_manifest = self.meta.manifest_by_digest(&repo, digest).await?.is_some();
            if holders.is_none() && !is_manifest {
                continue;
            }
            let ttl = self.gc.untagged_ttl(repo.as_str());
            let created_before = cutoff.min(ttl.map(|t| before(now, t)).unwrap_or(cutoff));
            let name = repo.to_string();
            if !marks.contains_key(&name) {
                let nodes = self.meta.gc_manifests(&repo).await?;
                let mark = Mark::new(&nodes, created_before, ttl.is_some());
                marks.insert(name.clone(), (nodes, mark));
            }
            let Some((_, mark)) = marks.get(&name) else {
                continue;
            };
            if is_manifest {
                reasons.push(if mark.kept.contains_key(digest) {
                    let (path, why) = mark.path(digest);
                    Reason {
                        repository: name.clone(),
                        kept: true,
                        path,
                        why,
                    }
                } else {
                    Reason {
                        repository: name.clone(),
                        kept: false,
                        path: Vec::new(),
                        why: "an untagged manifest older than untagged_ttl that no tag, index or subject keeps".to_owned(),
                    }
                });
            }
            let Some(h) = holders else { continue };
            let blob = format!("blob {digest}");
            let keeper = h.manifests.iter().find(|m| mark.kept.contains_key(*m));
            reasons.push(match keeper {
                Some(m) => {
                    let (mut path, why) = mark.path(m);
                    path.push(blob);
                    Reason {
                        repository: name.clone(),
                        kept: true,
                        path,
                        why,
                    }
                }
                None if h.linked_at > cutoff => Reason {
                    repository: name.clone(),
                    kept: true,
                    path: vec![blob],
                    why: "a blob linked within the grace window".to_owned(),
                },
                None if h.manifests.is_empty() => Reason {
                    repository: name.clone(),
                    kept: false,
                    path: vec![blob],
                    why: "no manifest of the repository references the blob".to_owned(),
                },
                None => Reason {
                    repository: name.clone(),
                    kept: false,
                    path: vec![blob],
                    why: format!(
                        "only manifests that are garbage themselves reference it: {}",
                        h.manifests
                            .iter()
                            .map(Digest::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
            });
        }
        let verdict = if reasons.iter().any(|r| r.kept) {
            "kept"
        } else if !reasons.is_empty() {
            "garbage"
        } else {
            match self.blobs.stat(digest).await? {
                Some(_) => {
                    reasons.push(Reason {
                        repository: String::new(),
                        kept: false,
                        path: vec![format!("blob {digest}")],
                        why: "a stored file no repository links (deleted once older than the grace window)".to_owned(),
                    });
                    "garbage"
                }
                None => "unknown",
            }
        };
        Ok(Explanation {
            digest: digest.clone(),
            verdict,
            reasons,
        })
    }

    /// Runs a collection `interval` after the previous one ended, forever (a background
    /// task, started only when `gc_interval` is configured).
    pub async fn gc_forever(self: Arc<Self>, interval: Duration) {
        let actor = Actor {
            name: "berth".to_owned(),
            client: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        };
        loop {
            tokio::time::sleep(interval).await;
            if let Err(e) = self.gc(GcOptions::default(), actor.clone()).await {
                tracing::warn!(error = %e, "scheduled garbage collection failed; it runs again after the interval");
            }
        }
    }
}

impl From<GcRuleError> for RegistryError {
    fn from(e: GcRuleError) -> RegistryError {
        RegistryError::ParameterInvalid(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256(s.as_bytes())
    }

    fn node(
        name: &str,
        at: i64,
        tags: &[&str],
        children: &[&str],
        subject: Option<&str>,
    ) -> ManifestNode {
        ManifestNode {
            digest: d(name),
            created_at: at,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            children: children.iter().map(|c| d(c)).collect(),
            subject: subject.map(d),
        }
    }

    fn graph() -> Vec<ManifestNode> {
        vec![
            node("index", 0, &["v1"], &["amd64", "arm64"], None),
            node("amd64", 0, &[], &[], None),
            node("arm64", 0, &[], &[], None),
            node("sig", 0, &[], &[], Some("index")),
            node("sbom-of-sig", 0, &[], &[], Some("sig")),
            node("old", 0, &[], &[], None),
            node("old-child", 0, &[], &[], None),
            node("old-index", 0, &[], &["old-child"], None),
            node("young", 100, &[], &[], None),
            node("dangling-sig", 0, &[], &[], Some("gone")),
        ]
    }

    #[test]
    fn the_mark_keeps_tags_children_referrers_and_the_young() {
        let nodes = graph();
        let mark = Mark::new(&nodes, 50, true);
        let mut garbage = mark.garbage(&nodes);
        garbage.sort();
        let mut want = vec![d("old"), d("old-child"), d("old-index"), d("dangling-sig")];
        want.sort();
        assert_eq!(garbage, want);
        assert_eq!(mark.kept.get(&d("amd64")), Some(&Keep::Child(d("index"))));
        assert_eq!(
            mark.kept.get(&d("sbom-of-sig")),
            Some(&Keep::Referrer(d("sig")))
        );
        assert_eq!(mark.kept.get(&d("young")), Some(&Keep::Young));
        // Without a rule, nothing is garbage.
        assert!(Mark::new(&nodes, 50, false).garbage(&nodes).is_empty());
    }

    #[test]
    fn paths_run_from_the_tag_down() {
        let nodes = graph();
        let mark = Mark::new(&nodes, 50, true);
        let (path, why) = mark.path(&d("arm64"));
        assert_eq!(
            path,
            vec![
                "tag v1".to_owned(),
                format!("index {}", d("index")),
                format!("manifest {}", d("arm64")),
            ]
        );
        assert_eq!(why, "reachable from tag v1");
        let (path, _) = mark.path(&d("sbom-of-sig"));
        assert_eq!(
            path,
            vec![
                "tag v1".to_owned(),
                format!("index {}", d("index")),
                format!("referrer {}", d("sig")),
                format!("referrer {}", d("sbom-of-sig")),
            ]
        );
    }

    #[test]
    fn the_first_matching_rule_decides_the_ttl() {
        let rules = [
            GcRule {
                repositories: "ci/keep".into(),
                untagged_ttl: None,
            },
            GcRule {
                repositories: "ci/*".into(),
                untagged_ttl: Some(Duration::from_secs(60)),
            },
        ];
        let s = GcSettings::new(Duration::from_secs(1), &rules).unwrap();
        assert_eq!(s.untagged_ttl("ci/keep"), None);
        assert_eq!(s.untagged_ttl("ci/app"), Some(Duration::from_secs(60)));
        assert_eq!(s.untagged_ttl("prod/app"), None);
        let bad = [GcRule {
            repositories: "Bad Pattern".into(),
            untagged_ttl: None,
        }];
        assert!(GcSettings::new(Duration::ZERO, &bad).is_err());
    }

    #[test]
    fn a_reason_reads_as_a_sentence() {
        let r = Reason {
            repository: "team/app".into(),
            kept: true,
            path: vec!["tag v1".into(), "blob x".into()],
            why: "reachable from tag v1".into(),
        };
        assert_eq!(
            r.to_string(),
            "team/app: kept: reachable from tag v1 (tag v1 -> blob x)"
        );
    }
}
