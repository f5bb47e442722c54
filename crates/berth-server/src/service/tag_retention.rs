//! Tag retention rules per repository pattern (`[[retention]]`): which tags a garbage
//! collection deletes before its mark, so that the sweep frees what only they held.
//!
//! # The rules, in the order they decide
//!
//! Each tag of a repository the first matching rule covers gets one verdict, the first
//! of these that applies:
//!
//! 1. `keep_semver` (default `true`): a release tag (`1.2.3`, `v2.0.0-rc.1`), a floating
//!    tag (`latest`, `1`, `1.2`) and any tag pointing where a floating tag points are
//!    kept.
//! 2. With `delete_matching` (globs, `*` any characters, `?` one), a tag matching none of
//!    them is kept: the rule does not govern it. Without it, the rule governs every tag.
//! 3. `keep_last = N`: the N most recently pushed governed tags are kept (push time is
//!    when the tag last moved; ties by name).
//! 4. `keep_pulled_within = D`: a tag whose manifest was pulled (a `GET` of its bytes,
//!    by tag or by digest) within D is kept. Pull times come from the analytics flush
//!    (`StatsStore::last_pulls`), so a pull is seen one flush interval later.
//! 5. `delete_older_than = D`: a governed tag pushed within D is kept.
//! 6. Every other governed tag is deleted.
//!
//! Hidden tags (cosign v2 `.sig`/`.att`/`.sbom`, the referrers tag schema's) are never
//! judged: they follow their subject. Tags waiting for a signature (the publish gate)
//! are not tags yet and are not judged either.
//!
//! # Deleting
//!
//! Retention runs first in every collection (scheduled, `berth admin gc`, the admin
//! API). A tag is deleted with `MetadataStore::tag_delete` without the tag policy's
//! guard (retention is the operator's own rule, like the collector) and recorded in the
//! audit log as the collection's actor (`tag_expire`). The manifest it pointed at is
//! then untagged, and the same run's manifest sweep deletes it once older than the
//! `untagged_ttl` of a `[[gc]]` rule (without one, untagged manifests are kept, so a
//! retention rule is normally paired with a `[[gc]]` rule with `untagged_ttl`). A tag
//! pushed again between the evaluation and its deletion (milliseconds) can be deleted
//! all the same; its manifest stays until the next collection's mark decides.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use berth_auth::{PatternSet, RepoPatterns};
use berth_meta::StatsStore;
use berth_oci::version::{classify, TagKind};
use berth_oci::{Digest, RepoName, Tag};
use serde::{Deserialize, Serialize};

use super::{Registry, Result};
use crate::events::{Actor, Event};

/// One `[[retention]]` rule of the configuration (see the module docs for how its keys
/// decide). The first rule whose `repositories` pattern matches applies.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// A repository pattern or a list of them.
    pub repositories: RepoPatterns,
    /// Keep the N most recently pushed tags the rule governs.
    #[serde(default)]
    pub keep_last: Option<usize>,
    /// Keep tags pulled within this long (e.g. `"30d"`).
    #[serde(default, deserialize_with = "crate::config::duration_str::option")]
    pub keep_pulled_within: Option<Duration>,
    /// Keep release tags, floating tags and what floating tags point to.
    #[serde(default = "yes")]
    pub keep_semver: bool,
    /// Only tags matching one of these globs are governed (e.g. `["sha-*", "pr-*"]`).
    #[serde(default)]
    pub delete_matching: Vec<String>,
    /// Keep governed tags pushed within this long (e.g. `"14d"`).
    #[serde(default, deserialize_with = "crate::config::duration_str::option")]
    pub delete_older_than: Option<Duration>,
}

fn yes() -> bool {
    true
}

/// A `[[retention]]` rule that cannot apply: a bad pattern, or one that would delete
/// every tag it covers.
#[derive(Debug, thiserror::Error)]
#[error("retention: {0}")]
pub struct RetentionRuleError(String);

/// A rule ready to judge tags.
#[derive(Debug, Clone)]
struct Rule {
    repositories: PatternSet,
    keep_last: Option<usize>,
    keep_pulled_within: Option<Duration>,
    keep_semver: bool,
    delete_matching: Vec<String>,
    delete_older_than: Option<Duration>,
}

/// The configured retention rules and where pull times are read.
#[derive(Clone, Default)]
pub struct TagRetention {
    rules: Vec<Rule>,
    stats: Option<Arc<dyn StatsStore>>,
}

impl std::fmt::Debug for TagRetention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TagRetention")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl TagRetention {
    /// Rules reading pull times from `stats` (`None`: no tag counts as pulled).
    pub fn new(
        rules: &[RetentionRule],
        stats: Option<Arc<dyn StatsStore>>,
    ) -> std::result::Result<TagRetention, RetentionRuleError> {
        let rules = rules
            .iter()
            .map(|r| {
                let repositories = r
                    .repositories
                    .compile()
                    .map_err(|e| RetentionRuleError(e.to_string()))?;
                if r.keep_last.is_none()
                    && r.keep_pulled_within.is_none()
                    && r.delete_matching.is_empty()
                    && r.delete_older_than.is_none()
                {
                    return Err(RetentionRuleError(format!(
                        "the rule for {} would delete every tag that is not a release: give it at least one of keep_last, keep_pulled_within, delete_matching, delete_older_than",
                        r.repositories
                    )));
                }
                Ok(Rule {
                    repositories,
                    keep_last: r.keep_last,
                    keep_pulled_within: r.keep_pulled_within,
                    keep_semver: r.keep_semver,
                    delete_matching: r.delete_matching.clone(),
                    delete_older_than: r.delete_older_than,
                })
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(TagRetention { rules, stats })
    }

    fn rule(&self, repo: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.repositories.matches(repo))
    }
}

/// What retention decided for one tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagVerdict {
    pub repository: String,
    pub tag: String,
    /// Deleted (or, in a dry run, would be).
    pub delete: bool,
    /// The rule that decided, in words.
    pub why: String,
}

/// A tag as retention sees it.
#[derive(Debug, Clone)]
struct TagFacts {
    tag: String,
    digest: Digest,
    /// Unix seconds of the tag's last move.
    pushed_at: i64,
    /// Unix seconds of the last pull of its manifest.
    pulled_at: Option<i64>,
}

/// `*` matches any characters, `?` one; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A duration in whole days from one day on (`30d`, as the configuration writes them;
/// humantime would say `1month 19days 13h`), else as humantime writes it (`3h 20m`).
fn span(d: Duration) -> String {
    match d.as_secs() / 86_400 {
        0 => humantime::format_duration(d).to_string(),
        days => format!("{days}d"),
    }
}

fn before(now: i64, d: Duration) -> i64 {
    now.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Judges every tag of one repository under `rule` at `now`; verdicts in tag order.
fn judge(rule: &Rule, repo: &str, tags: &[TagFacts], now: i64) -> Vec<TagVerdict> {
    let floating: HashMap<&Digest, &str> = if rule.keep_semver {
        tags.iter()
            .filter(|t| classify(&t.tag).is_floating())
            .map(|t| (&t.digest, t.tag.as_str()))
            .collect()
    } else {
        HashMap::new()
    };
    let governed = |t: &TagFacts| {
        rule.delete_matching.is_empty() || rule.delete_matching.iter().any(|g| glob(g, &t.tag))
    };
    // The N most recently pushed governed tags.
    let newest: HashSet<&str> = match rule.keep_last {
        Some(n) => {
            let mut g: Vec<&TagFacts> = tags.iter().filter(|t| governed(t)).collect();
            g.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then(a.tag.cmp(&b.tag)));
            g.into_iter().take(n).map(|t| t.tag.as_str()).collect()
        }
        None => HashSet::new(),
    };
    let mut verdicts: Vec<TagVerdict> = tags
        .iter()
        .map(|t| {
            let (delete, why) = verdict(rule, t, &floating, governed(t), &newest, now);
            TagVerdict {
                repository: repo.to_owned(),
                tag: t.tag.clone(),
                delete,
                why,
            }
        })
        .collect();
    verdicts.sort_by(|a, b| a.tag.cmp(&b.tag));
    verdicts
}

fn verdict(
    rule: &Rule,
    t: &TagFacts,
    floating: &HashMap<&Digest, &str>,
    governed: bool,
    newest: &HashSet<&str>,
    now: i64,
) -> (bool, String) {
    if rule.keep_semver {
        match classify(&t.tag) {
            TagKind::Release(_) => return (false, "keep_semver: a release tag".to_owned()),
            k if k.is_floating() => return (false, "keep_semver: a floating tag".to_owned()),
            _ => {}
        }
        if let Some(f) = floating.get(&t.digest) {
            return (
                false,
                format!("keep_semver: points where floating tag {f} points"),
            );
        }
    }
    if !governed {
        return (
            false,
            format!(
                "matches none of delete_matching ({})",
                rule.delete_matching.join(", ")
            ),
        );
    }
    if let Some(n) = rule.keep_last {
        if newest.contains(t.tag.as_str()) {
            return (
                false,
                format!("keep_last: one of the {n} most recently pushed"),
            );
        }
    }
    if let (Some(d), Some(at)) = (rule.keep_pulled_within, t.pulled_at) {
        if at >= before(now, d) {
            return (
                false,
                format!(
                    "keep_pulled_within: pulled {} ago, within {}",
                    span(Duration::from_secs(now.saturating_sub(at).max(0) as u64)),
                    span(d)
                ),
            );
        }
    }
    let age = span(Duration::from_secs(
        now.saturating_sub(t.pushed_at).max(0) as u64
    ));
    if let Some(d) = rule.delete_older_than {
        if t.pushed_at > before(now, d) {
            return (
                false,
                format!("delete_older_than: pushed {age} ago, within {}", span(d)),
            );
        }
        return (
            true,
            format!(
                "pushed {age} ago, older than delete_older_than {}, and no rule keeps it",
                span(d)
            ),
        );
    }
    (true, format!("pushed {age} ago and no rule keeps it"))
}

impl Registry {
    /// The service with tag retention rules.
    pub fn with_retention(mut self, retention: TagRetention) -> Registry {
        self.retention = retention;
        self
    }

    /// Judges the tags of every repository a `[[retention]]` rule covers at `now`, and
    /// unless `dry_run` deletes those judged so (each reported as
    /// [`Event::TagExpired`] by `actor`). Returns every verdict in repository then tag
    /// order.
    pub(super) async fn apply_retention(
        &self,
        dry_run: bool,
        now: i64,
        actor: &Actor,
    ) -> Result<Vec<TagVerdict>> {
        let mut all = Vec::new();
        if self.retention.rules.is_empty() {
            return Ok(all);
        }
        for repo in self.all_repositories().await? {
            let Some(rule) = self.retention.rule(repo.as_str()) else {
                continue;
            };
            let pulls: HashMap<Digest, i64> = match (&self.retention.stats, rule.keep_pulled_within)
            {
                (Some(stats), Some(_)) => {
                    stats.last_pulls(repo.as_str()).await?.into_iter().collect()
                }
                _ => HashMap::new(),
            };
            let facts: Vec<TagFacts> = self
                .meta
                .tag_details(&repo)
                .await?
                .into_iter()
                .filter(|t| !berth_meta::artifact_tags::is_hidden(&t.tag))
                .map(|t| TagFacts {
                    pulled_at: pulls.get(&t.manifest.digest).copied(),
                    digest: t.manifest.digest,
                    tag: t.tag,
                    pushed_at: t.updated_at,
                })
                .collect();
            let verdicts = judge(rule, repo.as_str(), &facts, now);
            if !dry_run {
                self.expire(&repo, &verdicts, actor).await?;
            }
            all.extend(verdicts);
        }
        Ok(all)
    }

    /// Deletes the tags `verdicts` condemn.
    async fn expire(&self, repo: &RepoName, verdicts: &[TagVerdict], actor: &Actor) -> Result<()> {
        for v in verdicts.iter().filter(|v| v.delete) {
            let Ok(tag) = Tag::parse(&v.tag) else {
                continue;
            };
            let deleted = self
                .freeing_space(|| self.meta.tag_delete(repo, &tag, None))
                .await?;
            if deleted {
                self.emit(Event::TagExpired {
                    repo: repo.clone(),
                    tag,
                    rule: v.why.clone(),
                    actor: actor.clone(),
                })
                .await;
            }
        }
        Ok(())
    }
}

impl From<RetentionRuleError> for super::RegistryError {
    fn from(e: RetentionRuleError) -> super::RegistryError {
        super::RegistryError::ParameterInvalid(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn rule(toml_text: &str) -> Rule {
        let r: RetentionRule = toml::from_str(toml_text).unwrap();
        TagRetention::new(&[r], None).unwrap().rules.remove(0)
    }

    fn facts(
        tag: &str,
        digest: &str,
        pushed_days_ago: i64,
        pulled: Option<i64>,
        now: i64,
    ) -> TagFacts {
        TagFacts {
            tag: tag.to_owned(),
            digest: Digest::sha256(digest.as_bytes()),
            pushed_at: now - pushed_days_ago * DAY,
            pulled_at: pulled.map(|d| now - d * DAY),
        }
    }

    fn deleted(v: &[TagVerdict]) -> Vec<&str> {
        v.iter()
            .filter(|v| v.delete)
            .map(|v| v.tag.as_str())
            .collect()
    }

    #[test]
    fn globs() {
        assert!(glob("sha-*", "sha-abc123"));
        assert!(glob("pr-?", "pr-1"));
        assert!(!glob("pr-?", "pr-12"));
        assert!(glob("*-rc*", "v1-rc2"));
        assert!(!glob("sha-*", "main"));
        assert!(glob("*", ""));
    }

    #[test]
    fn each_rule_keeps_what_it_says_and_explains_why() {
        let now = 1_000 * DAY;
        let r = rule(
            "repositories = \"ci/*\"\nkeep_last = 2\nkeep_pulled_within = \"30d\"\ndelete_matching = [\"sha-*\", \"pr-*\"]\ndelete_older_than = \"14d\"",
        );
        let tags = [
            facts("v1.2.3", "a", 400, None, now),
            facts("latest", "b", 300, None, now),
            facts("sha-latest", "b", 300, None, now),
            facts("main", "c", 200, None, now),
            facts("sha-new1", "d", 1, None, now),
            facts("sha-new2", "e", 2, None, now),
            facts("sha-young", "f", 10, None, now),
            facts("sha-pulled", "g", 100, Some(3), now),
            facts("pr-old", "h", 100, Some(40), now),
            facts("sha-old", "i", 50, None, now),
        ];
        let v = judge(&r, "ci/app", &tags, now);
        assert_eq!(deleted(&v), ["pr-old", "sha-old"]);
        let why = |t: &str| v.iter().find(|v| v.tag == t).unwrap().why.clone();
        assert_eq!(why("v1.2.3"), "keep_semver: a release tag");
        assert_eq!(why("latest"), "keep_semver: a floating tag");
        assert_eq!(
            why("sha-latest"),
            "keep_semver: points where floating tag latest points"
        );
        assert!(why("main").starts_with("matches none of delete_matching"));
        assert_eq!(
            why("sha-new1"),
            "keep_last: one of the 2 most recently pushed"
        );
        assert_eq!(
            why("sha-young"),
            "delete_older_than: pushed 10d ago, within 14d"
        );
        assert_eq!(
            why("sha-pulled"),
            "keep_pulled_within: pulled 3d ago, within 30d"
        );
        assert_eq!(
            why("sha-old"),
            "pushed 50d ago, older than delete_older_than 14d, and no rule keeps it"
        );
    }

    #[test]
    fn without_keep_semver_releases_are_judged_like_any_tag() {
        let now = 100 * DAY;
        let r = rule("repositories = \"*\"\nkeep_semver = false\nkeep_last = 1");
        let tags = [
            facts("1.0.0", "a", 10, None, now),
            facts("latest", "a", 10, None, now),
            facts("2.0.0", "b", 1, None, now),
        ];
        assert_eq!(deleted(&judge(&r, "x", &tags, now)), ["1.0.0", "latest"]);
    }

    #[test]
    fn a_rule_that_would_delete_everything_is_refused() {
        let r: RetentionRule = toml::from_str("repositories = \"*\"").unwrap();
        assert!(r.keep_semver, "keep_semver defaults to true");
        let e = TagRetention::new(&[r], None).unwrap_err();
        assert!(e.to_string().contains("at least one of"), "{e}");
        assert!(toml::from_str::<RetentionRule>("repositories = \"*\"\nkeep = 1").is_err());
    }

    /// 500 tags with known push and pull times: exactly the ones no rule keeps go.
    #[test]
    fn five_hundred_tags_with_known_push_and_pull_times() {
        let now = 10_000 * DAY;
        let r = rule(
            "repositories = \"ci/*\"\nkeep_last = 10\nkeep_pulled_within = \"30d\"\ndelete_matching = [\"sha-*\", \"pr-*\"]\ndelete_older_than = \"14d\"",
        );
        // Tag i: sha-<i> pushed i days ago (i = 0..400), pulled (i % 7) days ago when i
        // is a multiple of 5 and (i % 50) days ago when a multiple of 3; pr-<i> for
        // 50 tags pushed 2i days ago, never pulled; 40 release tags; 10 other tags.
        let mut tags = Vec::new();
        for i in 0..400i64 {
            let pulled = if i % 5 == 0 {
                Some(i % 7)
            } else if i % 3 == 0 {
                Some(i % 50)
            } else {
                None
            };
            tags.push(facts(
                &format!("sha-{i}"),
                &format!("sha{i}"),
                i,
                pulled,
                now,
            ));
        }
        for i in 0..50i64 {
            tags.push(facts(
                &format!("pr-{i}"),
                &format!("pr{i}"),
                2 * i,
                None,
                now,
            ));
        }
        for i in 0..40i64 {
            tags.push(facts(
                &format!("1.{i}.0"),
                &format!("rel{i}"),
                500 + i,
                None,
                now,
            ));
        }
        for i in 0..10i64 {
            tags.push(facts(
                &format!("branch-{i}"),
                &format!("br{i}"),
                900,
                None,
                now,
            ));
        }
        assert_eq!(tags.len(), 500);
        let v = judge(&r, "ci/app", &tags, now);
        assert_eq!(v.len(), 500);
        let got: HashSet<String> = deleted(&v).into_iter().map(str::to_owned).collect();

        // The expectation, from the rules' words: governed (sha-/pr-), not among the ten
        // newest governed, not pulled within 30 days, pushed 14 or more days ago.
        let mut newest: Vec<(i64, String)> = (0..400)
            .map(|i| (i, format!("sha-{i}")))
            .chain((0..50).map(|i| (2 * i, format!("pr-{i}"))))
            .collect();
        newest.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let newest: HashSet<String> = newest.into_iter().take(10).map(|(_, t)| t).collect();
        let mut want = HashSet::new();
        for i in 0..400i64 {
            let pulled = (i % 5 == 0 && i % 7 <= 30) || (i % 5 != 0 && i % 3 == 0 && i % 50 <= 30);
            let t = format!("sha-{i}");
            if i >= 14 && !pulled && !newest.contains(&t) {
                want.insert(t);
            }
        }
        for i in 0..50i64 {
            let t = format!("pr-{i}");
            if 2 * i >= 14 && !newest.contains(&t) {
                want.insert(t);
            }
        }
        assert_eq!(got, want);
        // Spot checks written out by hand.
        assert!(got.contains("sha-14") && got.contains("sha-399") && got.contains("pr-7"));
        assert!(!got.contains("sha-15"), "pulled 1 day ago (15 % 7)");
        assert!(got.contains("sha-33"), "pulled 33 days ago, longer than 30");
        assert!(!got.contains("sha-21"), "pulled 21 days ago, within 30");
        assert!(!got.contains("sha-13"), "pushed 13 days ago, within 14");
    }
}
