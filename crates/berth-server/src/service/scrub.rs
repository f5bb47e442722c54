//! Scrubbing: reading stored blobs back to find those a failing disk or a stray write
//! damaged after their commit verified them, and those whose bytes are gone.
//!
//! A scrub makes two walks:
//! 1. **Every blob of the store**, page by page ([`BlobStore::list`]), one at a time:
//!    re-hashed whole ([`BlobStore::verify`], bounded memory) and compared with its digest
//!    and with the size recorded when it was linked into a repository. With `repair`, a
//!    damaged blob is moved aside ([`BlobStore::quarantine`]). Its links stay, so `HEAD`
//!    and `GET` answer `BLOB_UNKNOWN` and the client's next push stores it afresh, which
//!    heals it. A blob that cannot be read at all is reported, never moved: a passing
//!    fault (out of descriptors) looks the same as a bad sector from here.
//! 2. **Every tagged manifest** of every repository, with the child manifests of tagged
//!    indexes: each config and layer they need must have bytes in storage; one that has
//!    none is reported missing (there is nothing to repair: clients that check push it
//!    again). Untagged manifests are not walked, since the metadata store lists
//!    manifests by tag only.
//!
//! A scrub only reads, except for the atomic moves of `repair`, so it may run while the
//! server serves (`berth admin scrub` from another process included). Each finding is
//! an [`Event::BlobCorrupt`] and each blob read an [`Event::BlobChecked`], which the
//! metrics subscriber counts.
//!
//! **Pace.** `berth admin scrub` reads at full speed. The background scrub
//! ([`Registry::scrub_forever`]) is gentle: one blob at a time, then a pause long enough
//! to keep its average read rate at [`Pace::BACKGROUND`]'s budget (16 MiB/s) and never
//! shorter than its pause (20 ms), so that pulls keep the disk. One blob is read at disk
//! speed; the budget holds over the pass, not within one large blob.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_meta::Page;
use berth_oci::manifest::ParsedManifest;
use berth_oci::{Digest, RepoName};
use serde::Serialize;

use super::{Registry, Result};
use crate::events::Event;

/// Blobs asked of the store per listing page. Large, because a filesystem listing reads
/// its whole directory for every page.
const BLOB_PAGE: usize = 10_000;
/// Repository names read per page of the catalog.
const REPO_PAGE: usize = 500;
/// Repositories named in one finding, at most.
const MAX_REPOS: usize = 10;

/// How a scrub runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubOptions {
    /// Move damaged blobs aside, so that clients push them again.
    pub repair: bool,
    /// Slow the scrub down; `None` reads at full speed.
    pub pace: Option<Pace>,
}

/// A read budget for a scrub that must stay out of the way of pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Average read rate over the pass, in bytes per second: after each blob the scrub
    /// rests until its reads fit the budget.
    pub bytes_per_sec: u64,
    /// Shortest rest after each blob (and each repository of the manifest walk), so that
    /// a store of many small blobs is walked gently too.
    pub pause: Duration,
}

impl Pace {
    /// The background scrub's pace: 16 MiB/s on average, at least 20 ms between blobs.
    pub const BACKGROUND: Pace = Pace {
        bytes_per_sec: 16 << 20,
        pause: Duration::from_millis(20),
    };

    /// How long to rest after reading `bytes` in `took`.
    fn rest(&self, bytes: u64, took: Duration) -> Duration {
        let budget = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec.max(1) as f64);
        budget.saturating_sub(took).max(self.pause)
    }
}

/// What a scrub found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScrubReport {
    /// Blobs read back and hashed.
    pub checked: u64,
    /// Bytes of those blobs, as stored.
    pub bytes: u64,
    /// Blobs whose bytes are damaged or unreadable, in digest order.
    pub corrupt: Vec<CorruptBlob>,
    /// Blobs that tagged manifests need and whose bytes are gone, in digest order.
    pub missing: Vec<MissingBlob>,
}

impl ScrubReport {
    /// The corrupt blobs this scrub moved aside.
    pub fn quarantined(&self) -> impl Iterator<Item = &CorruptBlob> {
        self.corrupt.iter().filter(|c| c.quarantined.is_some())
    }
}

/// A stored blob whose bytes are not what was committed.
#[derive(Debug, Clone, Serialize)]
pub struct CorruptBlob {
    pub digest: Digest,
    /// Where its bytes are (were, when quarantined), when the store names it.
    pub path: Option<String>,
    pub reason: Damage,
    /// Repositories that link it (at most ten).
    pub repositories: Vec<String>,
    /// Where the bytes were moved, when the scrub moved them aside.
    pub quarantined: Option<String>,
}

/// What is wrong with a [`CorruptBlob`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Damage {
    /// The stored size differs from the size recorded when the blob was pushed (cut
    /// short or grown).
    SizeMismatch { recorded: u64, stored: u64 },
    /// The stored bytes hash to another digest.
    DigestMismatch { actual: Digest },
    /// Reading the bytes failed.
    Unreadable { error: String },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::SizeMismatch { recorded, stored } => {
                write!(f, "{stored} bytes stored, {recorded} recorded")
            }
            Damage::DigestMismatch { actual } => write!(f, "content hashes to {actual}"),
            Damage::Unreadable { error } => write!(f, "unreadable: {error}"),
        }
    }
}

/// A blob that tagged manifests need and whose bytes are not in storage.
#[derive(Debug, Clone, Serialize)]
pub struct MissingBlob {
    pub digest: Digest,
    /// Where its bytes belong, when the store names it.
    pub path: Option<String>,
    /// Repositories whose manifests need it (at most ten).
    pub repositories: Vec<String>,
}

impl Registry {
    /// Reads every stored blob back and checks it, then checks that every blob a tagged
    /// manifest needs is stored (see the module docs). Damaged blobs are moved aside
    /// with `options.repair`. An error stops the scrub only when a listing fails; a blob
    /// that cannot be read is a finding.
    pub async fn scrub(&self, options: ScrubOptions) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let mut cursor: Option<Digest> = None;
        loop {
            let page = self.blobs.list(cursor.as_ref(), BLOB_PAGE).await?;
            for info in &page.blobs {
                let started = Instant::now();
                let bytes = self.scrub_blob(&info.digest, options, &mut report).await?;
                if let Some(pace) = options.pace {
                    // Pacing, not waiting for something: the rest is the point.
                    tokio::time::sleep(pace.rest(bytes, started.elapsed())).await;
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let damaged: HashSet<Digest> = report.corrupt.iter().map(|c| c.digest.clone()).collect();
        report.missing = self.find_missing(&damaged, options.pace).await?;
        for m in &report.missing {
            tracing::warn!(digest = %m.digest, repositories = ?m.repositories, "scrub: blob needed by a manifest is missing from storage");
            self.emit(Event::BlobCorrupt {
                digest: m.digest.clone(),
                reason: "missing from storage".to_owned(),
                quarantined: false,
            })
            .await;
        }
        tracing::info!(
            checked = report.checked,
            bytes = report.bytes,
            corrupt = report.corrupt.len(),
            quarantined = report.quarantined().count(),
            missing = report.missing.len(),
            "scrub finished"
        );
        Ok(report)
    }

    /// Checks one listed blob, adding to `report`; the bytes read.
    async fn scrub_blob(
        &self,
        digest: &Digest,
        options: ScrubOptions,
        report: &mut ScrubReport,
    ) -> Result<u64> {
        let (damage, bytes) = match self.blobs.verify(digest).await {
            // Deleted since it was listed: nothing to check.
            Ok(None) => return Ok(0),
            Ok(Some(v)) => {
                report.checked += 1;
                report.bytes += v.size;
                self.emit(Event::BlobChecked {
                    digest: digest.clone(),
                    bytes: v.size,
                })
                .await;
                let recorded = self.recorded_size(digest).await?;
                let damage = match recorded {
                    Some(recorded) if recorded != v.size => Some(Damage::SizeMismatch {
                        recorded,
                        stored: v.size,
                    }),
                    _ if !v.is_intact(digest) => Some(Damage::DigestMismatch { actual: v.actual }),
                    _ => None,
                };
                (damage, v.size)
            }
            Err(e) => (
                Some(Damage::Unreadable {
                    error: e.to_string(),
                }),
                0,
            ),
        };
        let Some(reason) = damage else {
            return Ok(bytes);
        };
        // An unreadable blob stays where it is: the failure may have been passing.
        let quarantined = if options.repair && !matches!(reason, Damage::Unreadable { .. }) {
            // A move that fails leaves the blob reported and in place; the rest of the
            // store is still worth checking.
            self.blobs.quarantine(digest).await.unwrap_or_else(|e| {
                tracing::warn!(%digest, error = %e, "scrub: cannot move a damaged blob aside");
                None
            })
        } else {
            None
        };
        let repositories = self.meta.blob_repositories(digest, MAX_REPOS).await?;
        tracing::warn!(%digest, %reason, quarantined = ?quarantined, "scrub: stored blob is damaged");
        self.emit(Event::BlobCorrupt {
            digest: digest.clone(),
            reason: reason.to_string(),
            quarantined: quarantined.is_some(),
        })
        .await;
        report.corrupt.push(CorruptBlob {
            digest: digest.clone(),
            path: self.blobs.locate(digest),
            reason,
            repositories,
            quarantined,
        });
        Ok(bytes)
    }

    /// The size recorded when `digest` was linked into a repository, if any links it.
    async fn recorded_size(&self, digest: &Digest) -> Result<Option<u64>> {
        for name in self.meta.blob_repositories(digest, 1).await? {
            if let Ok(repo) = RepoName::parse(&name) {
                return Ok(self.meta.blob_size(&repo, digest).await?);
            }
        }
        Ok(None)
    }

    /// Blobs that tagged manifests need and that have no bytes in storage, except those
    /// in `skip` (already reported as damaged, maybe just moved aside).
    async fn find_missing(
        &self,
        skip: &HashSet<Digest>,
        pace: Option<Pace>,
    ) -> Result<Vec<MissingBlob>> {
        let mut missing: BTreeMap<Digest, MissingBlob> = BTreeMap::new();
        let mut last: Option<String> = None;
        loop {
            let names = self
                .meta
                .repositories(&Page {
                    last: last.clone(),
                    n: Some(REPO_PAGE),
                })
                .await?;
            for name in &names {
                // Names in the store were valid when stored; one that no longer parses
                // has nothing a client could pull.
                if let Ok(repo) = RepoName::parse(name) {
                    self.missing_in(&repo, skip, &mut missing).await?;
                }
                if let Some(pace) = pace {
                    tokio::time::sleep(pace.pause).await;
                }
            }
            if names.len() < REPO_PAGE {
                break;
            }
            last = names.last().cloned();
        }
        Ok(missing.into_values().collect())
    }

    /// Adds to `missing` the blobs `repo`'s tagged manifests need and storage lacks.
    async fn missing_in(
        &self,
        repo: &RepoName,
        skip: &HashSet<Digest>,
        missing: &mut BTreeMap<Digest, MissingBlob>,
    ) -> Result<()> {
        let mut queue: Vec<berth_meta::StoredManifest> = self
            .meta
            .tag_details(repo)
            .await?
            .into_iter()
            .map(|t| t.manifest)
            .collect();
        let mut seen_manifests: HashSet<Digest> = HashSet::new();
        let mut seen_blobs: HashSet<Digest> = HashSet::new();
        // A mirror fetches blobs when they are pulled: one it never linked is not lost.
        let mirror = self.mirrors.covers(repo);
        while let Some(manifest) = queue.pop() {
            if !seen_manifests.insert(manifest.digest.clone()) {
                continue;
            }
            // Stored manifests were parsed when pushed; one that no longer parses names
            // no blob this walk could check.
            let Ok(parsed) = ParsedManifest::parse(&manifest.content, Some(&manifest.media_type))
            else {
                continue;
            };
            for child in &parsed.manifests {
                if !seen_manifests.contains(&child.digest) {
                    if let Some(m) = self.meta.manifest_by_digest(repo, &child.digest).await? {
                        queue.push(m);
                    }
                }
            }
            for blob in parsed.required_blobs() {
                let d = &blob.digest;
                if skip.contains(d) || !seen_blobs.insert(d.clone()) {
                    continue;
                }
                if mirror && self.meta.blob_size(repo, d).await?.is_none() {
                    continue;
                }
                if self.blobs.stat(d).await?.is_some() {
                    continue;
                }
                let entry = missing.entry(d.clone()).or_insert_with(|| MissingBlob {
                    digest: d.clone(),
                    path: self.blobs.locate(d),
                    repositories: Vec::new(),
                });
                if entry.repositories.len() < MAX_REPOS {
                    entry.repositories.push(repo.to_string());
                }
            }
        }
        Ok(())
    }

    /// Runs a gentle, repairing scrub ([`Pace::BACKGROUND`]) forever: the first
    /// `interval` after the call, then `interval` after each pass ends (a background
    /// task, started only when `scrub_interval` is configured).
    pub async fn scrub_forever(self: Arc<Self>, interval: Duration) {
        let options = ScrubOptions {
            repair: true,
            pace: Some(Pace::BACKGROUND),
        };
        loop {
            tokio::time::sleep(interval).await;
            if let Err(e) = self.scrub(options).await {
                tracing::warn!(error = %e, "background scrub failed; it runs again after the interval");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_background_pace_keeps_its_budget_and_its_pause() {
        let pace = Pace::BACKGROUND;
        // 32 MiB read in 0.5 s: two seconds of budget, 1.5 s left to rest.
        assert_eq!(
            pace.rest(32 << 20, Duration::from_millis(500)),
            Duration::from_millis(1500)
        );
        // A small blob, or a slow disk, still rests the pause.
        assert_eq!(pace.rest(100, Duration::ZERO), pace.pause);
        assert_eq!(pace.rest(16 << 20, Duration::from_secs(3)), pace.pause);
    }

    #[test]
    fn damage_reads_as_a_sentence_and_as_tagged_json() {
        let d = Damage::SizeMismatch {
            recorded: 40,
            stored: 10,
        };
        assert_eq!(d.to_string(), "10 bytes stored, 40 recorded");
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"kind": "size_mismatch", "recorded": 40, "stored": 10})
        );
        let actual = Digest::sha256(b"x");
        let d = Damage::DigestMismatch {
            actual: actual.clone(),
        };
        assert_eq!(d.to_string(), format!("content hashes to {actual}"));
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"kind": "digest_mismatch", "actual": actual.to_string()})
        );
    }
}
