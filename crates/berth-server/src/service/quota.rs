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
//! refused. The check reads the usage and the write follows, so concurrent pushes into
//! one repository can overshoot the limit by what they push at the same moment; the
//! next push is refused. Repositories no rule covers are not checked at all, which
//! keeps the push path of an unquoted registry exactly as fast as before.

use berth_auth::{PatternSet, RepoPatterns};
use berth_oci::{Digest, RepoName};
use serde::{Deserialize, Deserializer, Serialize};

use super::{Registry, RegistryError, Result};
use crate::events::Event;

/// One `[[quota]]` rule of the configuration: repositories matching `repositories`
/// (`*` matches any characters) may hold at most `max_bytes`. The first matching rule
/// applies; without one, a repository has no quota.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    /// A repository pattern or a list of them.
    pub repositories: RepoPatterns,
    /// Bytes, as an integer (`1073741824`) or a size for people (`"10GiB"`, `"500MB"`).
    #[serde(deserialize_with = "byte_size")]
    pub max_bytes: u64,
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
        tracing::info!(repo = %repo, used, limit, attempted, "push refused: over quota");
        self.emit(Event::QuotaRefused {
            repo: repo.clone(),
            used,
            limit,
            attempted,
        })
        .await;
        Err(RegistryError::QuotaExceeded {
            repo: repo.clone(),
            used,
            limit,
            attempted,
        })
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
