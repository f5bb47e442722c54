//! Storage quotas per repository pattern (`[[quota]]`): a push that would take a
//! repository over its `max_bytes` is refused with `DENIED` before its bytes are stored,
//! whenever the size is known that early.
//!
//! # What counts
//!
//! A repository's usage is [`berth_meta::RepositoryUsage::bytes`]: each blob linked in it
//! once (however many of its manifests list the blob; a blob shared with another
//! repository counts in each) plus the exact bytes of its manifests. Uploads in flight
//! count only once committed.
//!
//! # Where a push is checked
//!
//! - A monolithic upload (`POST ?digest=`) with a `Content-Length`, and a chunk with a
//!   `Content-Range` and a `Content-Length`: before the body is read (routes call
//!   [`Registry::check_quota`] and the service checks chunks).
//! - Every commit of an upload, where the size is finally known: before the bytes enter
//!   the blob namespace; a refused upload session is ended and its bytes deleted.
//! - A cross-repository mount: before the link is made.
//! - A manifest push: its own bytes (the blobs it lists are already counted).
//!
//! A blob the repository already links adds nothing, so pushing it again is never
//! refused. Repositories no rule covers are not checked at all, which keeps the push
//! path of an unquoted registry exactly as fast as before.
//!
//! # Concurrent pushes
//!
//! The checks before a body is read are early refusals only: they read the usage, and
//! the write would follow later. What holds the limit is the check of each write that
//! adds bytes (a commit, a mount, a manifest): it *reserves* its bytes with
//! [`MetadataStore::quota_reserve`](berth_meta::MetadataStore::quota_reserve), which
//! counts the repository's usage plus every other live reservation and records this one
//! in one transaction, ordered against every other reservation of the repository (on
//! SQLite by the one writer thread, on PostgreSQL by an advisory lock of the repository,
//! so across replicas too). A reservation stops counting in the very transaction that
//! links its blob or stores its manifest, where the bytes start counting as usage; it is
//! released just after, or when the write fails ([`Hold`] releases it when dropped, so
//! a request dropped halfway releases it too). So however many uploads into one
//! repository commit at the same moment (a client pushing layers in parallel), together
//! they never take it over its quota: those that do not fit are refused and store
//! nothing. An upload's bytes in flight count only once it commits.

use std::path::Path;
use std::sync::Arc;

use berth_auth::{PatternSet, RepoPatterns};
use berth_meta::{MetadataStore, QuotaReservation, Reserved, ReservedKind};
use berth_oci::{Digest, RepoName};
use serde::{Deserialize, Deserializer, Serialize};

use super::{Registry, RegistryError, Result};
use crate::events::Event;

/// One `[[quota]]` rule of the configuration: repositories matching `repositories`
/// (`*` matches any characters) may hold at most `max_bytes`. The first matching rule
/// applies; without one, a repository has no quota.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    /// A repository pattern or a list of them.
    pub repositories: RepoPatterns,
    /// Bytes, as an integer (`1073741824`) or a size for people (`"10GiB"`, `"500MB"`).
    #[serde(deserialize_with = "byte_size")]
    pub max_bytes: u64,
}

/// The file of the data directory where a server records the `[[quota]]` rules it
/// enforces (JSON, the rules as configured), so that `berth admin usage --data-dir`,
/// which reads the data directory without the server's configuration file, shows the
/// same quotas as the admin API does.
pub const QUOTA_RULES_FILE: &str = "quotas.json";

/// Records `rules` as the quotas enforced on `data_dir` (replacing the file whole, so a
/// reader never sees half of it).
pub fn write_rules_file(data_dir: &Path, rules: &[QuotaRule]) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(rules).map_err(std::io::Error::other)?;
    let path = data_dir.join(QUOTA_RULES_FILE);
    let temp = data_dir.join(format!("{QUOTA_RULES_FILE}.tmp"));
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, &path)
}

/// The quotas a server last recorded on `data_dir`; `None` when none ever did.
pub fn read_rules_file(data_dir: &Path) -> std::result::Result<Option<Vec<QuotaRule>>, String> {
    let path = data_dir.join(QUOTA_RULES_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// A size as an integer or text that `bytesize` reads (`"10GiB"`, `"1.5 GB"`).
fn byte_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(n) => Ok(n),
        Raw::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
}

/// Parses a size for people (`"10GiB"`, `"500 MB"`, `"1024"`).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{text:?} is not a size such as \"10GiB\" or \"500MB\": {e}"))
}

/// A `[[quota]]` rule whose pattern does not parse.
#[derive(Debug, thiserror::Error)]
#[error("quota: {0}")]
pub struct QuotaRuleError(String);

/// The configured quotas, first matching rule first.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    rules: Vec<(PatternSet, u64)>,
}

impl Quotas {
    pub fn new(rules: &[QuotaRule]) -> std::result::Result<Quotas, QuotaRuleError> {
        let rules = rules
            .iter()
            .map(|r| {
                r.repositories
                    .compile()
                    .map(|p| (p, r.max_bytes))
                    .map_err(|e| QuotaRuleError(e.to_string()))
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(Quotas { rules })
    }

    /// The quota of `repo` in bytes, if a rule covers it.
    pub fn limit(&self, repo: &str) -> Option<u64> {
        self.rules
            .iter()
            .find(|(p, _)| p.matches(repo))
            .map(|(_, max)| *max)
    }

    /// Whether any rule exists (else no push is ever checked).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// What one repository stores, with its quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepositoryUsage {
    pub repository: String,
    /// What the quota counts: `blob_bytes + manifest_bytes`.
    pub bytes: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub manifests: u64,
    pub manifest_bytes: u64,
    /// The repository's quota in bytes, if a `[[quota]]` rule covers it.
    pub limit: Option<u64>,
}

/// Every repository's usage (`berth admin usage`, `/api/v1/admin/usage`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct UsageReport {
    /// In name order.
    pub repositories: Vec<RepositoryUsage>,
    /// Distinct blobs stored, each once however many repositories link it.
    pub stored_blobs: u64,
    /// Their bytes: what the blob store holds for linked blobs.
    pub stored_bytes: u64,
}

impl From<(berth_meta::RepositoryUsage, Option<u64>)> for RepositoryUsage {
    fn from((u, limit): (berth_meta::RepositoryUsage, Option<u64>)) -> RepositoryUsage {
        RepositoryUsage {
            bytes: u.bytes(),
            repository: u.name,
            blobs: u.blobs,
            blob_bytes: u.blob_bytes,
            manifests: u.manifests,
            manifest_bytes: u.manifest_bytes,
            limit,
        }
    }
}

/// A size in words and exact bytes, for refusal messages (`1.0 MiB (1048576 bytes)`).
pub(super) fn words(n: u64) -> String {
    format!("{} ({n} bytes)", bytesize::ByteSize(n).display().iec())
}

/// A quota reservation held for one write, released by [`Hold::release`] or, on any
/// other way out of the write (an error, a request dropped halfway), when dropped.
pub(super) struct Hold {
    meta: Arc<dyn MetadataStore>,
    id: Option<String>,
}

impl Hold {
    /// Releases the reservation now: after the write that stored its content (which
    /// already counts as usage) or that failed.
    pub(super) async fn release(mut self) {
        if let Some(id) = self.id.take() {
            if let Err(e) = self.meta.quota_release(&id).await {
                // It counts only until it goes stale, and not at all once its content
                // is stored.
                tracing::warn!(reservation = %id, error = %e, "cannot release a quota reservation");
            }
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        // Drop cannot wait: the release runs as a task of its own. Outside a runtime
        // (never on the request path) the reservation goes stale by itself.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let meta = self.meta.clone();
            rt.spawn(async move {
                if let Err(e) = meta.quota_release(&id).await {
                    tracing::warn!(reservation = %id, error = %e, "cannot release a quota reservation");
                }
            });
        }
    }
}

/// Releases `hold`, if there is one.
pub(super) async fn release(hold: Option<Hold>) {
    if let Some(hold) = hold {
        hold.release().await;
    }
}

impl Registry {
    /// The service with storage quotas.
    pub fn with_quotas(mut self, quotas: Quotas) -> Registry {
        self.quotas = quotas;
        self
    }

    /// The quota of `repo`, if one applies.
    pub fn quota_of(&self, repo: &RepoName) -> Option<u64> {
        self.quotas.limit(repo.as_str())
    }

    /// Refuses with [`RegistryError::QuotaExceeded`] (and emits [`Event::QuotaRefused`])
    /// when storing `attempted` more bytes would take `repo` over its quota. Free for
    /// repositories no quota covers: no store is asked.
    pub async fn check_quota(&self, repo: &RepoName, attempted: u64) -> Result<()> {
        let Some(limit) = self.quota_of(repo) else {
            return Ok(());
        };
        let used = self
            .meta
            .repository_usage(Some(repo))
            .await?
            .first()
            .map(berth_meta::RepositoryUsage::bytes)
            .unwrap_or(0);
        if used.saturating_add(attempted) <= limit {
            return Ok(());
        }
        Err(self.refuse(repo, used, limit, attempted).await)
    }

    /// Reserves `bytes` of `repo`'s quota for the write of `digest` that follows (a
    /// blob's link or a manifest): `None` when no quota covers `repo`, else the
    /// reservation to release once the write is done. Refuses like
    /// [`Registry::check_quota`] when the bytes do not fit beside what the repository
    /// stores and what concurrent writes hold; content the repository already holds is
    /// never refused.
    pub(super) async fn reserve_quota(
        &self,
        repo: &RepoName,
        kind: ReservedKind,
        digest: &Digest,
        bytes: u64,
    ) -> Result<Option<Hold>> {
        let Some(limit) = self.quota_of(repo) else {
            return Ok(None);
        };
        let r = QuotaReservation {
            id: uuid::Uuid::new_v4().simple().to_string(),
            repo: repo.clone(),
            kind,
            digest: digest.clone(),
            bytes,
        };
        // Held before asking, so that a reservation whose answer is lost is released.
        let mut hold = Hold {
            meta: self.meta.clone(),
            id: Some(r.id.clone()),
        };
        match self.meta.quota_reserve(&r, limit).await? {
            Reserved::Granted => Ok(Some(hold)),
            Reserved::Refused { used } => {
                // Nothing was recorded: there is nothing to release.
                hold.id = None;
                Err(self.refuse(repo, used, limit, bytes).await)
            }
        }
    }

    /// The refusal of `attempted` bytes into `repo`, logged and emitted.
    async fn refuse(
        &self,
        repo: &RepoName,
        used: u64,
        limit: u64,
        attempted: u64,
    ) -> RegistryError {
        tracing::info!(repo = %repo, used, limit, attempted, "push refused: over quota");
        self.emit(Event::QuotaRefused {
            repo: repo.clone(),
            used,
            limit,
            attempted,
        })
        .await;
        RegistryError::QuotaExceeded {
            repo: repo.clone(),
            used,
            limit,
            attempted,
        }
    }

    /// [`Registry::check_quota`] for a blob of `size` bytes, which adds nothing when
    /// `repo` already links it.
    pub async fn check_blob_quota(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        if self.quota_of(repo).is_none() || self.meta.blob_size(repo, digest).await?.is_some() {
            return Ok(());
        }
        self.check_quota(repo, size).await
    }

    /// What `repo` stores, with its quota (zeros for an unknown repository).
    pub async fn repository_usage(&self, repo: &RepoName) -> Result<RepositoryUsage> {
        let u = self
            .meta
            .repository_usage(Some(repo))
            .await?
            .into_iter()
            .next()
            .unwrap_or_else(|| berth_meta::RepositoryUsage {
                name: repo.to_string(),
                ..Default::default()
            });
        Ok(RepositoryUsage::from((u, self.quota_of(repo))))
    }

    /// Every repository's usage with its quota, and the distinct bytes stored.
    pub async fn usage(&self) -> Result<UsageReport> {
        let repositories = self
            .meta
            .repository_usage(None)
            .await?
            .into_iter()
            .map(|u| {
                let limit = self.quotas.limit(&u.name);
                RepositoryUsage::from((u, limit))
            })
            .collect();
        let (stored_blobs, stored_bytes) = self.meta.stored_bytes().await?;
        Ok(UsageReport {
            repositories,
            stored_blobs,
            stored_bytes,
        })
    }
}

impl From<QuotaRuleError> for RegistryError {
    fn from(e: QuotaRuleError) -> RegistryError {
        RegistryError::ParameterInvalid(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_integers_or_words() {
        let rule: QuotaRule =
            toml::from_str("repositories = \"team-a/*\"\nmax_bytes = \"10GiB\"").unwrap();
        assert_eq!(rule.max_bytes, 10 * 1024 * 1024 * 1024);
        let rule: QuotaRule = toml::from_str("repositories = \"x\"\nmax_bytes = 1234").unwrap();
        assert_eq!(rule.max_bytes, 1234);
        assert_eq!(parse_size("500 MB"), Ok(500_000_000));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(toml::from_str::<QuotaRule>("repositories = \"x\"\nmax_bytes = \"lots\"").is_err());
        assert!(
            toml::from_str::<QuotaRule>("repositories = \"x\"\nmax_bytes = 1\nmax = 2").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn recorded_rules_read_back_as_configured() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_rules_file(dir.path()).unwrap(), None);
        let rules: Vec<QuotaRule> = vec![
            toml::from_str("repositories = [\"team-a/*\", \"team-b/*\"]\nmax_bytes = \"1GiB\"")
                .unwrap(),
            toml::from_str("repositories = \"x\"\nmax_bytes = 1234").unwrap(),
        ];
        write_rules_file(dir.path(), &rules).unwrap();
        assert_eq!(read_rules_file(dir.path()).unwrap(), Some(rules));
        write_rules_file(dir.path(), &[]).unwrap();
        assert_eq!(read_rules_file(dir.path()).unwrap(), Some(vec![]));
        std::fs::write(dir.path().join(QUOTA_RULES_FILE), "not json").unwrap();
        assert!(read_rules_file(dir.path())
            .unwrap_err()
            .contains(QUOTA_RULES_FILE));
    }

    #[test]
    fn the_first_matching_rule_sets_the_limit() {
        let rules = [
            QuotaRule {
                repositories: "team-a/big".into(),
                max_bytes: 100,
            },
            QuotaRule {
                repositories: "team-a/*".into(),
                max_bytes: 10,
            },
        ];
        let q = Quotas::new(&rules).unwrap();
        assert_eq!(q.limit("team-a/big"), Some(100));
        assert_eq!(q.limit("team-a/app"), Some(10));
        assert_eq!(q.limit("team-b/app"), None);
        assert!(Quotas::default().is_empty());
        let bad = [QuotaRule {
            repositories: "Bad Pattern".into(),
            max_bytes: 1,
        }];
        assert!(Quotas::new(&bad).is_err());
    }

    #[test]
    fn a_refusal_says_used_and_limit() {
        let e = RegistryError::QuotaExceeded {
            repo: RepoName::parse("team-a/app").unwrap(),
            used: 1024 * 1024,
            limit: 1536 * 1024,
            attempted: 1024 * 1024,
        };
        let text = e.to_string();
        assert!(text.contains("team-a/app"), "{text}");
        assert!(text.contains("1.0 MiB (1048576 bytes) used"), "{text}");
        assert!(text.contains("limit 1.5 MiB (1572864 bytes)"), "{text}");
    }
}
