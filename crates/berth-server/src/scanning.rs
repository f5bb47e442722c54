//! Vulnerability scanning on push: `[[scan]]` rules name the repositories whose pushed
//! images are scanned, in the background, against the local OSV index at `scan_db`
//! (the directory `berth db update --db DIR` writes).
//!
//! # The path of a scan
//!
//! 1. [`ScanSubscriber`] sees [`Event::ManifestPushed`] for a repository a rule covers
//!    and queues the manifest: a `pending` row of [`ScanStore`], written before the push
//!    is answered (one small write, like the audit row), so that a crash or a restart
//!    never forgets it. The scan itself is not on the request path.
//! 2. [`Scanner::run_forever`] (a task of [`crate::run`]) is woken, claims pending rows
//!    oldest first (a claim keeps other replicas' scanners off them for [`CLAIM_LEASE`])
//!    and scans [`CONCURRENCY`] images at a time: each layer blob is read
//!    from the blob store as a stream into [`berth_sbom::layers::scan_layer`] on the
//!    blocking pool (nothing is unpacked to disk, memory is bounded by
//!    [`berth_sbom::layers::Limits`]), the scans are stacked with
//!    [`berth_sbom::layers::merge`], and the packages' URLs are matched with
//!    [`berth_scan::scan`]. The row then records the package URLs, the counts by
//!    severity and which database answered. An index is not scanned itself: its
//!    platform images are (each is a manifest push of its own, and the index queues
//!    those it lists, in case they were not); signatures, SBOMs and other artifacts are
//!    `skipped`.
//! 3. Every [`REMATCH_CHECK`] the scanner reads the index's `meta.json`; when it changed
//!    (an import), every stored package list is matched again against the new index,
//!    page by page, and only the counts change: the layers are not read again.
//!    `POST /api/v1/admin/scan/rematch` does the same at once.
//!
//! Without an index at `scan_db`, pushes are still queued and wait: they are scanned
//! once an import appears there (the scanner logs that it is waiting, once).
//!
//! A scan row lives as long as its manifest: a deletion through the API forgets it
//! ([`Event::ManifestDeleted`]), and the garbage collector's
//! [`MetadataStore::gc_delete_manifests`](berth_meta::MetadataStore::gc_delete_manifests)
//! deletes it, queued or done, in the transaction that deletes the manifest (no event
//! follows a collection, so no subscriber could).
//!
//! The findings of a scanned image (`GET /api/v1/scan/<name>/<reference>`) are matched
//! from its stored package URLs when asked, against the index as it is then, so they
//! never disagree with the counts after a re-match.
//!
//! Layers call one way: the subscriber and routes → [`Scanner`] → the stores,
//! `berth_sbom` and `berth_scan`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_auth::Pattern;
use berth_meta::scans::{DbStamp, ScanOutcome, ScanRecord, ScanState, ScanStore, SeverityCounts};
use berth_meta::{MetaError, MetadataStore};
use berth_oci::{media_types as mt, Digest, ParsedManifest, RepoName};
use berth_scan::{Db, Finding, Package, Severity};
use berth_storage::{BlobStore, ByteStream};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::Digest as _;

use crate::events::{Event, Subscriber};
use crate::metrics::Metrics;

/// Images scanned at the same time: layers are read and decompressed on the blocking
/// pool, so two keep a core busy without starving the requests of the other.
pub const CONCURRENCY: usize = 2;
/// How often the index's `meta.json` is checked for a new import (and pending scans
/// looked for, in case another replica queued them).
pub const REMATCH_CHECK: Duration = Duration::from_secs(60);
/// Pending rows taken per round, and stored scans re-matched per page.
const BATCH: usize = 32;
/// How long a claim on pending scans keeps other scanners (other replicas) off them: far
/// longer than a batch of scans takes; a scanner that stopped mid-batch leaves its rows
/// to the others (or to itself after a restart) once it runs out.
pub const CLAIM_LEASE: Duration = Duration::from_secs(10 * 60);

/// One `[[scan]]` rule of the configuration: pushes into repositories matching
/// `repositories` (one pattern or a list; `*` matches any characters, slashes
/// included) are scanned when `scan_on_push` is true. The first matching rule decides,
/// so a rule with `scan_on_push = false` before a broader one exempts repositories.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRule {
    #[serde(deserialize_with = "one_or_many")]
    pub repositories: Vec<String>,
    #[serde(default)]
    pub scan_on_push: bool,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::One(s) => vec![s],
        Raw::Many(v) => v,
    })
}

/// A `[[scan]]` rule whose pattern does not parse, or that names no repository.
#[derive(Debug, thiserror::Error)]
#[error("scan: {0}")]
pub struct ScanRuleError(String);

/// The configured rules, first matching rule first.
#[derive(Debug, Clone, Default)]
pub struct ScanRules {
    rules: Vec<(Vec<Pattern>, bool)>,
}

impl ScanRules {
    pub fn new(rules: &[ScanRule]) -> Result<ScanRules, ScanRuleError> {
        let rules = rules
            .iter()
            .map(|r| {
                if r.repositories.is_empty() {
                    return Err(ScanRuleError(
                        "a [[scan]] rule needs repositories = [\"pattern\", ...]".into(),
                    ));
                }
                let patterns = r
                    .repositories
                    .iter()
                    .map(|p| Pattern::parse(p).map_err(|e| ScanRuleError(e.to_string())))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((patterns, r.scan_on_push))
            })
            .collect::<Result<_, _>>()?;
        Ok(ScanRules { rules })
    }

    /// Whether a push into `repo` is scanned.
    pub fn scans_on_push(&self, repo: &str) -> bool {
        self.rules
            .iter()
            .find(|(patterns, _)| patterns.iter().any(|p| p.matches(repo)))
            .is_some_and(|(_, on)| *on)
    }

    /// Whether any rule scans anything (else no scanner runs and no push is queued).
    pub fn any(&self) -> bool {
        self.rules.iter().any(|(_, on)| *on)
    }
}

/// Why a scan could not be made or answered.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("no vulnerability database: {0}")]
    Db(#[from] berth_scan::DbError),
    #[error("the manifest is gone")]
    Gone,
    #[error("the manifest does not parse: {0}")]
    Manifest(String),
    #[error("layer {digest}: {message}")]
    Layer { digest: Digest, message: String },
    #[error("scanning stopped: {0}")]
    Join(String),
}

/// The index in use: opened once per import, shared by every scan.
pub struct LoadedDb {
    pub db: Db,
    pub stamp: DbStamp,
}

/// Counts of findings by severity (a severity of `none`, a score of 0, counts as low).
pub fn counts(findings: &[Finding]) -> SeverityCounts {
    let mut c = SeverityCounts::default();
    for f in findings {
        match f.severity {
            Severity::Critical => c.critical += 1,
            Severity::High => c.high += 1,
            Severity::Medium => c.medium += 1,
            Severity::Low | Severity::None => c.low += 1,
            Severity::Unknown => c.unknown += 1,
        }
    }
    c
}

/// Counts as the APIs show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub unknown: u64,
}

impl From<SeverityCounts> for Counts {
    fn from(c: SeverityCounts) -> Counts {
        Counts {
            critical: c.critical,
            high: c.high,
            medium: c.medium,
            low: c.low,
            unknown: c.unknown,
        }
    }
}

impl Counts {
    /// The larger count of each severity: an index shows its worst platform's.
    pub fn max(self, o: Counts) -> Counts {
        Counts {
            critical: self.critical.max(o.critical),
            high: self.high.max(o.high),
            medium: self.medium.max(o.medium),
            low: self.low.max(o.low),
            unknown: self.unknown.max(o.unknown),
        }
    }

    pub fn total(&self) -> u64 {
        self.critical + self.high + self.medium + self.low + self.unknown
    }
}

/// The scan of one image as the APIs show it.
#[derive(Debug, Clone, Serialize)]
pub struct ImageScan {
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `pending`, `done`, `failed`, `skipped`, or `none` (never queued: pushed before a
    /// rule covered the repository, or into one no rule covers).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_imported: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanned_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Only in the per-manifest answer: what `berth scan --json` lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<Vec<Finding>>,
}

impl ImageScan {
    fn of(digest: &Digest, platform: Option<String>, record: Option<&ScanRecord>) -> ImageScan {
        let time = |t: Option<i64>| t.map(berth_oci::time::rfc3339);
        match record {
            None => ImageScan {
                digest: digest.to_string(),
                platform,
                state: "none",
                counts: None,
                packages: None,
                db_imported: None,
                db_version: None,
                scanned_at: None,
                matched_at: None,
                error: None,
                findings: None,
            },
            Some(r) => ImageScan {
                digest: digest.to_string(),
                platform,
                state: r.state.as_str(),
                counts: (r.state == ScanState::Done).then(|| r.counts.into()),
                packages: (r.state == ScanState::Done).then_some(r.packages.len()),
                db_imported: r.db.as_ref().map(|d| d.imported.clone()),
                db_version: r.db.as_ref().map(|d| d.version.clone()),
                scanned_at: time(r.scanned_at),
                matched_at: time(r.matched_at),
                error: r.error.clone(),
                findings: None,
            },
        }
    }
}

/// The scans of what a tag points to: the image, or each platform of an index.
#[derive(Debug, Clone, Serialize)]
pub struct TagScan {
    pub tag: String,
    pub digest: String,
    /// The image's counts, or for an index the largest of each severity over its
    /// platforms; absent until one of them is scanned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    pub images: Vec<ImageScan>,
}

/// The scanner: rules, the index, the queue and the worker.
pub struct Scanner {
    rules: ScanRules,
    dir: PathBuf,
    scans: Arc<dyn ScanStore>,
    meta: Arc<dyn MetadataStore>,
    blobs: Arc<dyn BlobStore>,
    metrics: Arc<Metrics>,
    /// The index in use with the hash of the `meta.json` it was opened from.
    db: tokio::sync::Mutex<Option<(String, Arc<LoadedDb>)>>,
    /// Wakes the worker when a scan is queued.
    wake: tokio::sync::Notify,
    /// Held by the one re-match running.
    rematching: tokio::sync::Mutex<()>,
    /// Whether "waiting for a database" was logged (once per missing spell).
    waiting_logged: std::sync::atomic::AtomicBool,
}

/// What a re-match did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rematch {
    /// The database matched against (none when there is no index).
    pub db_version: Option<String>,
    pub db_imported: Option<String>,
    /// Stored scans matched again.
    pub rematched: u64,
    /// Of those, scans whose counts changed.
    pub changed: u64,
}

impl Scanner {
    pub fn new(
        rules: ScanRules,
        dir: PathBuf,
        scans: Arc<dyn ScanStore>,
        meta: Arc<dyn MetadataStore>,
        blobs: Arc<dyn BlobStore>,
        metrics: Arc<Metrics>,
    ) -> Scanner {
        Scanner {
            rules,
            dir,
            scans,
            meta,
            blobs,
            metrics,
            db: tokio::sync::Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            rematching: tokio::sync::Mutex::new(()),
            waiting_logged: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether any rule scans on push (else the worker is not started).
    pub fn enabled(&self) -> bool {
        self.rules.any()
    }

    pub fn rules(&self) -> &ScanRules {
        &self.rules
    }

    pub fn store(&self) -> &Arc<dyn ScanStore> {
        &self.scans
    }

    /// The index directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Queues a scan of `digest` in `repo` (durable when it returns) and wakes the worker.
    pub async fn enqueue(&self, repo: &str, digest: &Digest) -> Result<bool, MetaError> {
        let queued = self
            .scans
            .scan_enqueue(repo, digest, berth_oci::time::now())
            .await?;
        if queued {
            self.wake.notify_one();
        }
        Ok(queued)
    }

    /// The index as `meta.json` says it is now, opening it again after an import;
    /// `changed` when it differs from the one in use before (or none was).
    pub async fn current_db(&self) -> Result<(Arc<LoadedDb>, bool), ScanError> {
        let mut held = self.db.lock().await;
        let dir = self.dir.clone();
        let meta_bytes = tokio::task::spawn_blocking(move || std::fs::read(dir.join("meta.json")))
            .await
            .map_err(|e| ScanError::Join(e.to_string()))?;
        let meta_bytes = match meta_bytes {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ScanError::Db(berth_scan::DbError::Missing {
                    dir: self.dir.clone(),
                }))
            }
            Err(source) => {
                return Err(ScanError::Db(berth_scan::DbError::Read {
                    path: self.dir.join("meta.json"),
                    source,
                }))
            }
        };
        let hash = hex::encode(&sha2::Sha256::digest(&meta_bytes)[..8]);
        if let Some((h, db)) = held.as_ref() {
            if *h == hash {
                return Ok((db.clone(), false));
            }
        }
        let dir = self.dir.clone();
        let db = tokio::task::spawn_blocking(move || Db::open(&dir))
            .await
            .map_err(|e| ScanError::Join(e.to_string()))??;
        let imported = db
            .meta()
            .ecosystems
            .values()
            .map(|e| e.imported.clone())
            .max()
            .unwrap_or_default();
        let loaded = Arc::new(LoadedDb {
            db,
            stamp: DbStamp {
                version: hash.clone(),
                imported,
            },
        });
        tracing::info!(dir = %self.dir.display(), version = %hash, imported = %loaded.stamp.imported, "vulnerability database loaded");
        *held = Some((hash, loaded.clone()));
        Ok((loaded, true))
    }

    /// Scans pending images and re-matches after imports until the task is dropped:
    /// at once (what was pending at the last stop, and any import made meanwhile), then
    /// whenever a scan is queued and every [`REMATCH_CHECK`].
    pub async fn run_forever(self: Arc<Self>) {
        loop {
            self.round().await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(REMATCH_CHECK) => {}
            }
        }
    }

    /// One round: load (or reload) the index, re-match if it changed, then scan what is
    /// pending.
    async fn round(&self) {
        use std::sync::atomic::Ordering;
        let db = match self.current_db().await {
            Ok((db, changed)) => {
                self.waiting_logged.store(false, Ordering::Relaxed);
                if changed {
                    // Stored scans matched against an older index (a restart after an
                    // import included) are brought up to date.
                    if let Err(e) = self.rematch(&db, false).await {
                        tracing::warn!(error = %e, "re-matching stored scans failed");
                    }
                }
                db
            }
            Err(e) => {
                if !self.waiting_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "scans wait for a vulnerability database: import one with `berth db update --db DIR` into scan_db");
                }
                return;
            }
        };
        if let Err(e) = self.scan_pending(&db).await {
            tracing::warn!(error = %e, "cannot read pending scans");
        }
    }

    /// Scans every pending image, [`CONCURRENCY`] at a time.
    async fn scan_pending(&self, db: &Arc<LoadedDb>) -> Result<(), MetaError> {
        loop {
            let lease = CLAIM_LEASE.as_secs() as i64;
            let pending = self
                .scans
                .scan_claim(BATCH, berth_oci::time::now(), lease)
                .await?;
            if pending.is_empty() {
                return Ok(());
            }
            let results: Vec<Result<bool, MetaError>> = futures_util::stream::iter(pending)
                .map(|(repo, digest)| async move { self.scan_one(&repo, &digest, db).await })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            // A row whose outcome could not be written would be taken again at once:
            // stop the round instead (the next one retries).
            for r in results {
                r?;
            }
        }
    }

    /// Scans one image and records the outcome; `false` when its manifest was deleted
    /// meanwhile.
    async fn scan_one(
        &self,
        repo: &str,
        digest: &Digest,
        db: &Arc<LoadedDb>,
    ) -> Result<bool, MetaError> {
        let started = Instant::now();
        let at = berth_oci::time::now();
        let outcome = match self.inventory(repo, digest).await {
            Ok(Inventory::Image(purls)) => {
                let packages: Vec<Package> = purls.iter().map(Package::new).collect();
                let loaded = db.clone();
                let found = tokio::task::spawn_blocking(move || {
                    counts(&berth_scan::scan(&packages, &loaded.db))
                })
                .await
                .map_err(|e| MetaError::Database {
                    context: "matching packages",
                    message: e.to_string(),
                })?;
                ScanOutcome {
                    state: ScanState::Done,
                    packages: purls,
                    counts: found,
                    db: Some(db.stamp.clone()),
                    at,
                    error: None,
                }
            }
            Ok(Inventory::Not(why)) => ScanOutcome {
                state: ScanState::Skipped,
                packages: Vec::new(),
                counts: SeverityCounts::default(),
                db: None,
                at,
                error: Some(why),
            },
            Err(ScanError::Gone) => {
                self.scans.scan_forget(repo, digest).await?;
                return Ok(false);
            }
            Err(ScanError::Meta(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(repo, %digest, error = %e, "scan failed");
                ScanOutcome {
                    state: ScanState::Failed,
                    packages: Vec::new(),
                    counts: SeverityCounts::default(),
                    db: None,
                    at,
                    error: Some(e.to_string()),
                }
            }
        };
        let failed = outcome.state == ScanState::Failed;
        let recorded = self.scans.scan_record(repo, digest, &outcome).await?;
        if outcome.state != ScanState::Skipped {
            self.metrics.scan_finished(failed, started.elapsed());
        }
        tracing::info!(
            repo,
            %digest,
            state = outcome.state.as_str(),
            packages = outcome.packages.len(),
            critical = outcome.counts.critical,
            high = outcome.counts.high,
            ms = started.elapsed().as_millis() as u64,
            "image scanned"
        );
        Ok(recorded)
    }

    /// What the image `digest` of `repo` holds, as package URLs.
    async fn inventory(&self, repo: &str, digest: &Digest) -> Result<Inventory, ScanError> {
        let name = RepoName::parse(repo).map_err(|e| ScanError::Manifest(e.to_string()))?;
        let m = self
            .meta
            .manifest_by_digest(&name, digest)
            .await?
            .ok_or(ScanError::Gone)?;
        let parsed = ParsedManifest::parse(&m.content, Some(&m.media_type))
            .map_err(|e| ScanError::Manifest(e.to_string()))?;
        if parsed.kind.is_index() {
            // Its platforms are scanned as images of their own.
            for child in &parsed.manifests {
                if child.platform.as_ref().is_some_and(|p| p.os == "unknown") {
                    continue;
                }
                self.scans
                    .scan_enqueue(repo, &child.digest, berth_oci::time::now())
                    .await?;
            }
            return Ok(Inventory::Not(
                "an index: its platform images are scanned".into(),
            ));
        }
        let is_image = parsed
            .config
            .as_ref()
            .is_some_and(|c| c.media_type == mt::OCI_CONFIG || c.media_type == mt::DOCKER_CONFIG);
        if !is_image || parsed.artifact_type.is_some() {
            return Ok(Inventory::Not("not an image (an artifact)".into()));
        }
        let mut scans = Vec::with_capacity(parsed.layers.len());
        for layer in &parsed.layers {
            scans.push(self.scan_layer(&layer.digest).await?);
        }
        let inventory = berth_sbom::layers::merge(scans);
        let mut purls: Vec<String> = inventory
            .packages
            .into_iter()
            .map(|p| p.purl)
            .filter(|p| !p.is_empty())
            .collect();
        purls.dedup();
        Ok(Inventory::Image(purls))
    }

    /// Streams one layer blob into the SBOM scanner on the blocking pool.
    async fn scan_layer(
        &self,
        digest: &Digest,
    ) -> Result<berth_sbom::layers::LayerScan, ScanError> {
        let layer_err = |message: String| ScanError::Layer {
            digest: digest.clone(),
            message,
        };
        let body = self
            .blobs
            .get(digest, None)
            .await
            .map_err(|e| layer_err(e.to_string()))?;
        let name = digest.to_string();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut reader = StreamReader {
                stream: body.stream,
                chunk: Bytes::new(),
                handle,
            };
            berth_sbom::layers::scan_layer(
                &mut reader,
                &name,
                &berth_sbom::layers::Limits::default(),
            )
        })
        .await
        .map_err(|e| ScanError::Join(e.to_string()))?
        .map_err(|e| layer_err(e.to_string()))
    }

    /// Matches every stored package list again against `db`: all of them with `all`,
    /// else those matched against another index. Pages of [`BATCH`]; only counts change.
    pub async fn rematch(&self, db: &Arc<LoadedDb>, all: bool) -> Result<Rematch, ScanError> {
        let _one = self.rematching.lock().await;
        let mut report = Rematch {
            db_version: Some(db.stamp.version.clone()),
            db_imported: Some(db.stamp.imported.clone()),
            ..Rematch::default()
        };
        let mut after: Option<(String, Digest)> = None;
        loop {
            let page = self
                .scans
                .scan_done_page(after.as_ref().map(|(r, d)| (r.as_str(), d)), BATCH)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.repo.clone(), last.digest.clone()));
            let todo: Vec<ScanRecord> = page
                .into_iter()
                .filter(|r| all || r.db.as_ref().map(|d| &d.version) != Some(&db.stamp.version))
                .collect();
            if todo.is_empty() {
                continue;
            }
            let loaded = db.clone();
            let matched = tokio::task::spawn_blocking(move || {
                todo.into_iter()
                    .map(|r| {
                        let packages: Vec<Package> = r.packages.iter().map(Package::new).collect();
                        let c = counts(&berth_scan::scan(&packages, &loaded.db));
                        (r, c)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| ScanError::Join(e.to_string()))?;
            let at = berth_oci::time::now();
            for (r, c) in matched {
                if self
                    .scans
                    .scan_rematched(&r.repo, &r.digest, &c, &db.stamp, at)
                    .await?
                {
                    report.rematched += 1;
                    if c != r.counts {
                        report.changed += 1;
                    }
                }
            }
        }
        self.metrics.scans_rematched(report.rematched);
        if report.rematched > 0 {
            tracing::info!(
                rematched = report.rematched,
                changed = report.changed,
                version = %db.stamp.version,
                "stored scans matched against the new vulnerability database"
            );
        }
        Ok(report)
    }

    /// Reloads the index and matches every stored scan against it (the admin API); the
    /// worker is woken too, for scans that were waiting for an index.
    pub async fn rematch_now(&self) -> Result<Rematch, ScanError> {
        let (db, _) = self.current_db().await?;
        self.wake.notify_one();
        self.rematch(&db, true).await
    }

    /// The scans of `tags` (each with its manifest) of `repo`: an image's own, or each
    /// platform image's of an index.
    pub async fn tag_scans(
        &self,
        repo: &str,
        tags: &[berth_meta::TagDetail],
    ) -> Result<Vec<TagScan>, MetaError> {
        let mut wanted: Vec<Digest> = Vec::new();
        let mut shapes = Vec::with_capacity(tags.len());
        for t in tags {
            let images = images_of(&t.manifest);
            wanted.extend(images.iter().map(|(d, _)| d.clone()));
            shapes.push(images);
        }
        wanted.sort_by_key(|d| d.to_string());
        wanted.dedup();
        let records: BTreeMap<String, ScanRecord> = self
            .scans
            .scan_get(repo, &wanted)
            .await?
            .into_iter()
            .map(|r| (r.digest.to_string(), r))
            .collect();
        Ok(tags
            .iter()
            .zip(shapes)
            .map(|(t, images)| {
                let images: Vec<ImageScan> = images
                    .iter()
                    .map(|(d, p)| ImageScan::of(d, p.clone(), records.get(&d.to_string())))
                    .collect();
                let counts = images.iter().filter_map(|i| i.counts).reduce(Counts::max);
                TagScan {
                    tag: t.tag.clone(),
                    digest: t.manifest.digest.to_string(),
                    counts,
                    images,
                }
            })
            .collect())
    }

    /// The manifest `reference` (a tag or a digest) names in `repo`; `None` when there
    /// is none (a reference that cannot name anything included).
    pub async fn resolve(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<Option<berth_meta::StoredManifest>, MetaError> {
        match berth_oci::Reference::parse(reference) {
            Ok(berth_oci::Reference::Tag(t)) => self.meta.manifest_by_tag(repo, &t).await,
            Ok(berth_oci::Reference::Digest(d)) => self.meta.manifest_by_digest(repo, &d).await,
            Err(_) => Ok(None),
        }
    }

    /// The scans of `manifest` (an image, or each platform of an index) in `repo`, with
    /// their findings matched now from the stored package URLs.
    pub async fn findings(
        &self,
        repo: &str,
        manifest: &berth_meta::StoredManifest,
    ) -> Result<Vec<ImageScan>, ScanError> {
        let images = images_of(manifest);
        let digests: Vec<Digest> = images.iter().map(|(d, _)| d.clone()).collect();
        let records = self.scans.scan_get(repo, &digests).await?;
        let db = match self.current_db().await {
            Ok((db, _)) => Some(db),
            Err(ScanError::Db(_)) => None,
            Err(e) => return Err(e),
        };
        let mut out = Vec::with_capacity(images.len());
        for (d, platform) in images {
            let record = records.iter().find(|r| r.digest == d);
            let mut scan = ImageScan::of(&d, platform, record);
            if let (Some(r), Some(db)) = (record, &db) {
                if r.state == ScanState::Done {
                    let packages: Vec<Package> = r.packages.iter().map(Package::new).collect();
                    let loaded = db.clone();
                    let findings = tokio::task::spawn_blocking(move || {
                        berth_scan::scan(&packages, &loaded.db)
                    })
                    .await
                    .map_err(|e| ScanError::Join(e.to_string()))?;
                    scan.findings = Some(findings);
                }
            }
            out.push(scan);
        }
        Ok(out)
    }
}

/// What a scanned manifest turned out to be.
enum Inventory {
    /// An image, with its packages' URLs.
    Image(Vec<String>),
    /// Not an image, and why.
    Not(String),
}

/// The images a manifest stands for, with their platforms: itself, or an index's
/// platform images (attestation entries of `unknown/unknown` left out).
fn images_of(m: &berth_meta::StoredManifest) -> Vec<(Digest, Option<String>)> {
    match ParsedManifest::parse(&m.content, Some(&m.media_type)) {
        Ok(p) if p.kind.is_index() => p
            .manifests
            .iter()
            .filter(|c| c.platform.as_ref().is_none_or(|pl| pl.os != "unknown"))
            .map(|c| {
                (
                    c.digest.clone(),
                    c.platform.as_ref().map(|pl| pl.to_string()),
                )
            })
            .collect(),
        _ => vec![(m.digest.clone(), m.platform.clone())],
    }
}

/// A blocking reader over a blob's byte stream, for the SBOM scanner on the blocking
/// pool (where waiting on the runtime is allowed).
struct StreamReader {
    stream: ByteStream,
    chunk: Bytes,
    handle: tokio::runtime::Handle,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Queues pushes into repositories a rule covers, and forgets the scans of deleted
/// manifests.
pub struct ScanSubscriber(pub Arc<Scanner>);

#[async_trait::async_trait]
impl Subscriber for ScanSubscriber {
    fn awaits(&self, event: &Event) -> bool {
        match event {
            Event::ManifestPushed { repo, .. } => self.0.rules.scans_on_push(repo.as_str()),
            Event::ManifestDeleted { .. } => true,
            _ => false,
        }
    }

    async fn on(&self, event: &Event) {
        match event {
            Event::ManifestPushed { repo, digest, .. } => {
                if let Err(e) = self.0.enqueue(repo.as_str(), digest).await {
                    tracing::error!(repo = %repo, %digest, error = %e, "cannot queue the scan of a pushed manifest");
                }
            }
            Event::ManifestDeleted { repo, digest, .. } => {
                if let Err(e) = self.0.scans.scan_forget(repo.as_str(), digest).await {
                    tracing::warn!(repo = %repo, %digest, error = %e, "cannot forget the scan of a deleted manifest");
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> ScanRule {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let rules = ScanRules::new(&[
            rule("repositories = \"team/private\"\nscan_on_push = false"),
            rule("repositories = [\"team/*\", \"library/**\"]\nscan_on_push = true"),
        ])
        .unwrap();
        assert!(rules.any());
        assert!(rules.scans_on_push("team/app"));
        assert!(rules.scans_on_push("library/debian/slim"));
        assert!(!rules.scans_on_push("team/private"));
        assert!(!rules.scans_on_push("other"));
        assert!(!ScanRules::new(&[rule("repositories = \"*\"")])
            .unwrap()
            .any());
        assert!(ScanRules::new(&[rule("repositories = []")]).is_err());
        assert!(toml::from_str::<ScanRule>("repositories = \"*\"\nscan = true").is_err());
    }

    #[test]
    fn counts_group_severities() {
        let f = |severity| Finding {
            id: "X".into(),
            aliases: vec![],
            summary: None,
            purl: "pkg:npm/a@1".into(),
            package: "a".into(),
            ecosystem: "npm".into(),
            installed: "1".into(),
            fixed: None,
            severity,
            score: None,
        };
        let c = counts(&[
            f(Severity::Critical),
            f(Severity::High),
            f(Severity::High),
            f(Severity::None),
            f(Severity::Unknown),
        ]);
        assert_eq!(
            (c.critical, c.high, c.medium, c.low, c.unknown),
            (1, 2, 0, 1, 1)
        );
        let a = Counts::from(c);
        let b = Counts {
            medium: 4,
            ..Counts::default()
        };
        assert_eq!(a.max(b).medium, 4);
        assert_eq!(a.max(b).high, 2);
        assert_eq!(a.total(), 5);
    }
}
