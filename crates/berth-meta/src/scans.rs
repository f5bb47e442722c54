//! Vulnerability scans of pushed images, and the queue of scans still to make: one row
//! per (repository, image manifest), written by the server's scanner (see its
//! `scanning` module), read by the stats API and the dashboard.
//!
//! A row starts [`ScanState::Pending`] when a push is queued ([`ScanStore::scan_enqueue`],
//! durable before the push is answered), so that a push the server has not scanned yet
//! is scanned after a restart. Scanning it records what the image holds as package URLs
//! ([`ScanRecord::packages`], one line each) with the counts of the vulnerabilities they
//! matched and which database answered; a later import of that database is applied by
//! matching the stored package URLs again ([`ScanStore::scan_rematched`]), without
//! reading the layers again. Rows are keyed by repository name, so that the access rule
//! of a repository (pulling it) is the rule of its scans.

use berth_oci::Digest;

/// Where a scan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanState {
    /// Queued, not scanned yet.
    Pending,
    /// Scanned: packages and counts are recorded.
    Done,
    /// The scan failed (a layer that cannot be read, a blob gone): `error` says why.
    Failed,
    /// Not an image with layers (an index, a signature, an SBOM): nothing to scan.
    Skipped,
}

impl ScanState {
    /// The name stored in the database and shown by the APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanState::Pending => "pending",
            ScanState::Done => "done",
            ScanState::Failed => "failed",
            ScanState::Skipped => "skipped",
        }
    }

    /// The state a stored name stands for.
    pub fn parse(s: &str) -> Option<ScanState> {
        Some(match s {
            "pending" => ScanState::Pending,
            "done" => ScanState::Done,
            "failed" => ScanState::Failed,
            "skipped" => ScanState::Skipped,
            _ => return None,
        })
    }
}

/// Vulnerabilities found, by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SeverityCounts {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub unknown: u64,
}

impl SeverityCounts {
    pub fn total(&self) -> u64 {
        self.critical + self.high + self.medium + self.low + self.unknown
    }
}

/// Which vulnerability database a match used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbStamp {
    /// Identifies the database's contents (a hash of its `meta.json`): a new import
    /// changes it.
    pub version: String,
    /// RFC 3339 time of the database's latest import.
    pub imported: String,
}

/// What a scan found, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    /// [`ScanState::Done`], [`ScanState::Failed`] or [`ScanState::Skipped`].
    pub state: ScanState,
    /// The image's packages as package URLs, in the order the SBOM lists them.
    pub packages: Vec<String>,
    pub counts: SeverityCounts,
    /// The database matched against (none for a failed or skipped scan).
    pub db: Option<DbStamp>,
    /// Unix seconds of the scan.
    pub at: i64,
    /// Why a scan failed or was skipped.
    pub error: Option<String>,
}

/// A stored scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRecord {
    pub repo: String,
    pub digest: Digest,
    pub state: ScanState,
    /// Unix seconds when the scan was queued.
    pub queued_at: i64,
    pub packages: Vec<String>,
    pub counts: SeverityCounts,
    pub db: Option<DbStamp>,
    /// Unix seconds of the scan (reading the layers).
    pub scanned_at: Option<i64>,
    /// Unix seconds of the last match against the database (the scan's own, or a
    /// re-match after an import).
    pub matched_at: Option<i64>,
    pub error: Option<String>,
}

/// The package URLs of a scan as stored: one per line (a purl never holds a newline:
/// it is percent-encoded).
pub fn packages_text(packages: &[String]) -> String {
    packages.join("\n")
}

/// The package URLs stored as [`packages_text`].
pub fn packages_from_text(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Scans and their queue. Every method is atomic.
#[async_trait::async_trait]
pub trait ScanStore: Send + Sync + 'static {
    /// Queues a scan of `digest` in `repo` as pending at `now` (unix seconds), durable
    /// when answered; `false` (and nothing changed) when the manifest already has a row
    /// (pushing the same manifest again does not scan it again).
    async fn scan_enqueue(
        &self,
        repo: &str,
        digest: &Digest,
        now: i64,
    ) -> Result<bool, crate::MetaError>;

    /// Takes up to `limit` pending scans for a scanner, oldest queued first, marking them
    /// claimed at `now`. A row another scanner (another replica) claimed less than
    /// `lease` seconds before `now` is left to it, so scanners sharing a database never
    /// take one image at once; the claim of a scanner that stopped runs out after `lease`.
    /// Recording the outcome ends the claim with the row's pending state. With a `lease`
    /// of 0 every pending row is taken, claimed or not.
    async fn scan_claim(
        &self,
        limit: usize,
        now: i64,
        lease: i64,
    ) -> Result<Vec<(String, Digest)>, crate::MetaError>;

    /// Records the outcome of the scan of `digest` in `repo`, replacing what the row
    /// held; `false` when the row is gone (the manifest was deleted meanwhile), in which
    /// case nothing is written.
    async fn scan_record(
        &self,
        repo: &str,
        digest: &Digest,
        outcome: &ScanOutcome,
    ) -> Result<bool, crate::MetaError>;

    /// The scans of `digests` in `repo` that exist, in the order of `digests`.
    async fn scan_get(
        &self,
        repo: &str,
        digests: &[Digest],
    ) -> Result<Vec<ScanRecord>, crate::MetaError>;

    /// Done scans in order of (repository, digest) after `after`, at most `limit`: the
    /// pages a re-match walks.
    async fn scan_done_page(
        &self,
        after: Option<(&str, &Digest)>,
        limit: usize,
    ) -> Result<Vec<ScanRecord>, crate::MetaError>;

    /// Replaces the counts of a done scan after matching its stored packages against
    /// database `db` at `at`; `false` when the row is gone or no longer done.
    async fn scan_rematched(
        &self,
        repo: &str,
        digest: &Digest,
        counts: &SeverityCounts,
        db: &DbStamp,
        at: i64,
    ) -> Result<bool, crate::MetaError>;

    /// Forgets the scan of a deleted manifest; `false` when there was none.
    async fn scan_forget(&self, repo: &str, digest: &Digest) -> Result<bool, crate::MetaError>;

    /// How many scans are in each state, for the metrics and the admin API.
    async fn scan_states(&self) -> Result<Vec<(ScanState, u64)>, crate::MetaError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_packages_are_lines() {
        for s in [
            ScanState::Pending,
            ScanState::Done,
            ScanState::Failed,
            ScanState::Skipped,
        ] {
            assert_eq!(ScanState::parse(s.as_str()), Some(s));
        }
        assert_eq!(ScanState::parse("later"), None);
        let p = vec!["pkg:deb/debian/a@1".to_owned(), "pkg:npm/b@2".to_owned()];
        assert_eq!(packages_from_text(&packages_text(&p)), p);
        assert!(packages_from_text("").is_empty());
    }
}
