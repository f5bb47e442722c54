//! Replication: changes of this registry pushed to other registries (`[[replication]]`),
//! from a durable queue in the metadata database.
//!
//! # The path of a change
//! 1. [`ReplicationSubscriber`] sees every [`Event`]. For each rule whose repository
//!    patterns match: a tag set (`TagMoved`, for pushes and tags the publish gate
//!    reveals) queues a copy of that tag if the rule's tag patterns match; a referrer
//!    pushed by digest (`ManifestPushed` with a subject and no tag) queues a copy of that
//!    digest; with `delete = true`, `TagDeleted`/`TagExpired` and `ManifestDeleted`
//!    queue a deletion of the tag or digest. The row is written by
//!    [`AccountStore::replication_enqueue`] (one durable transaction) before the request
//!    that caused the event is answered. One row per (rule, repository, reference): a
//!    newer change supersedes a pending one, so a tag moved ten times while the target
//!    was down is copied once.
//! 2. [`worker::replicate_forever`] claims due rows and replicates each one: a copy
//!    reads the image from this registry's own stores ([`source::LocalSource`], through
//!    [`crate::service::Registry::stored_manifest`] and `stored_blob`, no HTTP to
//!    itself) and writes it to the target with the client's copy engine
//!    ([`berth_client::copy::copy_image`]), referrers included (cosign `.sig`/`.att`/
//!    `.sbom` tags, OCI referrers; the tag schema's index on a target without the
//!    referrers API), blobs first, referrers before the root, whose write moves the tag.
//!    A manifest the target already holds under the same reference is not written
//!    again ([`source::Target`] asks with a `HEAD` first), so a retried or repeated copy
//!    writes nothing twice. On success the row is deleted; on failure it is retried with
//!    exponential backoff and jitter up to `retry_max_interval`, and after
//!    `give_up_after` it is dead: kept and shown by `berth admin replication status`
//!    until the reference changes again or a full sync queues it.
//!
//! # Guarantees
//! - A change acknowledged to a client is in the queue (the row commits before the
//!   answer; the change itself commits just before, as for webhooks and the audit log).
//! - A restart (or a crash) resumes the queue: rows leave it only once the target holds
//!   the change. A copy cut short by a crash is made again; what it already wrote is
//!   found by `HEAD` and skipped, so the target ends up with every tag and referrer with
//!   the source's exact digests, each manifest written once.
//! - Replicas sharing PostgreSQL claim rows with a lease ([`LEASE_MS`]), so one copy runs
//!   per row.
//! - Order: rows of one (rule, repository) are replicated one after another in queue
//!   order; rules and repositories in parallel.
//! - A signature or other referrer follows its subject: queued alone (a cosign tag, a
//!   referrer pushed by digest), it is copied only once its subject is at the target;
//!   otherwise it travels with the subject's copy.
//! - Deletions reach the target only when the rule says `delete = true`. A target that
//!   cannot delete a tag (CNCF Distribution 2.x) leaves the row failing with its answer.

pub mod source;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_auth::PatternSet;
use berth_client::auth::Credentials;
use berth_meta::{
    artifact_tags, AccountStore, MetaError, MetadataStore, Page, ReplicationNew, ReplicationOp,
    ReplicationStatus, ReplicationTask, TagListing,
};
use berth_oci::RepoName;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::events::{Event, Subscriber};
use crate::webhooks::{name_ok, now_ms, redact, NAME_RULE};

/// How long a claimed row is left to the replica that claimed it (PostgreSQL): longer
/// than a large copy usually takes, short enough that the rows of a replica that died
/// are soon taken over.
pub const LEASE_MS: i64 = 10 * 60 * 1000;

/// One `[[replication]]` table of the configuration.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationRule {
    /// Unique; names the rule in the queue, the admin API and the metrics
    /// (`[a-z0-9._-]`, at most 64).
    pub name: String,
    /// The target registry's base URL (`https://registry.example.com`,
    /// `http://127.0.0.1:5001`); `http://` is spoken as given.
    pub url: String,
    /// A prefix put before each repository's name at the target (`mirror` makes
    /// `team/app` `mirror/team/app`) [default: the same name].
    #[serde(default)]
    pub namespace: Option<String>,
    /// A repository pattern (`team/*`) or a list of them [default: every repository].
    #[serde(default)]
    pub repositories: berth_auth::RepoPatterns,
    /// Tag patterns (`v*`, `*-release`; `*` matches any characters) [default: every
    /// tag]. A signature's cosign tag follows its subject whatever the patterns.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `env:VAR` (a variable holding `user:password`, or a token sent as the password of
    /// the user `token`) or `file:PATH` (a file holding the same) for the target.
    #[serde(default)]
    pub credentials: Option<String>,
    /// Propagate deletions of tags and manifests [default: false].
    #[serde(default)]
    pub delete: bool,
    /// Copy signatures, attestations, SBOMs and other referrers with each image
    /// [default: true].
    #[serde(default = "yes")]
    pub referrers: bool,
    /// A PEM file of CA certificates to trust for an `https://` target besides the
    /// system's (a private CA).
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// The longest wait between two attempts of one change [default: 5m].
    #[serde(default, deserialize_with = "crate::config::duration_str::option")]
    pub retry_max_interval: Option<Duration>,
    /// A change still failing this long after it was queued is marked dead [default:
    /// 24h].
    #[serde(default, deserialize_with = "crate::config::duration_str::option")]
    pub give_up_after: Option<Duration>,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for ReplicationRule {
    // By hand, so that a URL's user information never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationRule")
            .field("name", &self.name)
            .field("url", &redact(&self.url))
            .field("namespace", &self.namespace)
            .field("repositories", &self.repositories)
            .field("tags", &self.tags)
            .field("credentials", &self.credentials.as_ref().map(|_| "<set>"))
            .field("delete", &self.delete)
            .field("referrers", &self.referrers)
            .field("ca_cert", &self.ca_cert)
            .field("retry_max_interval", &self.retry_max_interval)
            .field("give_up_after", &self.give_up_after)
            .finish()
    }
}

/// A `[[replication]]` table that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationConfigError {
    #[error("replication {name:?}: {message}")]
    Invalid { name: String, message: String },
}

/// Why an admin operation on replication failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("no replication rule named {0:?} is configured")]
    Unknown(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// One validated rule.
pub(crate) struct Rule {
    pub(crate) name: String,
    /// The target's base URL, without credentials.
    url: String,
    namespace: Option<String>,
    /// `None`: every repository.
    repositories: Option<PatternSet>,
    tags: Vec<String>,
    pub(crate) delete: bool,
    pub(crate) referrers: bool,
    /// The target's client; `None` for a rule read by `berth admin` on a data
    /// directory, which replicates nothing itself.
    pub(crate) client: Option<berth_client::Registry>,
    pub(crate) retry_max_interval: Duration,
    pub(crate) give_up_after: Duration,
}

impl Rule {
    fn parse(c: &ReplicationRule, connect: bool) -> Result<Rule, ReplicationConfigError> {
        let invalid = |message: String| ReplicationConfigError::Invalid {
            name: c.name.clone(),
            message,
        };
        if !name_ok(&c.name) {
            return Err(invalid(NAME_RULE.into()));
        }
        let url = reqwest::Url::parse(&c.url)
            .map_err(|e| invalid(format!("url {:?}: {e}", redact(&c.url))))?;
        let insecure = match url.scheme() {
            "http" => true,
            "https" => false,
            _ => return Err(invalid("the url must be http:// or https://".into())),
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(invalid(
                "the url must be a registry's base URL, without a path (put a prefix in `namespace`)"
                    .into(),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "put credentials in `credentials` (env:VAR or file:PATH), not in the url".into(),
            ));
        }
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(invalid("the url names no host".into())),
        };
        if let Some(ns) = &c.namespace {
            RepoName::parse(ns).map_err(|e| invalid(format!("namespace {ns:?}: {e}")))?;
        }
        let repositories = if c.repositories.is_empty() {
            None
        } else {
            Some(
                c.repositories
                    .compile()
                    .map_err(|e| invalid(e.to_string()))?,
            )
        };
        for t in &c.tags {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-*".contains(&b));
            if !ok {
                return Err(invalid(format!(
                    "tag pattern {t:?} is invalid: use a tag, with * for any characters"
                )));
            }
        }
        if let Some(p) = &c.ca_cert {
            if !p.is_file() {
                return Err(invalid(format!(
                    "ca_cert {} is not a readable file",
                    p.display()
                )));
            }
        }
        let client = if connect {
            let creds = c
                .credentials
                .as_deref()
                .map(credentials)
                .transpose()
                .map_err(invalid)?;
            let clients = berth_client::Clients::new(berth_client::ClientOptions {
                insecure,
                ca_certs: c.ca_cert.iter().cloned().collect(),
                // Failures are retried by the queue with backoff; a copy retries only
                // blips.
                max_retries: 2,
                ..Default::default()
            })
            .map_err(|e| invalid(e.to_string()))?;
            Some(clients.registry_with(&host, creds))
        } else {
            if let Some(spec) = &c.credentials {
                if !spec.starts_with("env:") && !spec.starts_with("file:") {
                    return Err(invalid(format!(
                        "credentials {spec:?} must be env:VARIABLE or file:PATH"
                    )));
                }
            }
            None
        };
        Ok(Rule {
            name: c.name.clone(),
            url: redact(&c.url),
            namespace: c.namespace.clone(),
            repositories,
            tags: c.tags.clone(),
            delete: c.delete,
            referrers: c.referrers,
            client,
            retry_max_interval: c
                .retry_max_interval
                .unwrap_or(Duration::from_secs(300))
                .max(Duration::from_secs(1)),
            give_up_after: c.give_up_after.unwrap_or(Duration::from_secs(24 * 3600)),
        })
    }

    /// Whether changes of `repo` go to this rule's target.
    pub(crate) fn wants_repo(&self, repo: &str) -> bool {
        self.repositories.as_ref().is_none_or(|p| p.matches(repo))
    }

    /// Whether a tag is replicated on its own: one of the tag patterns (all by
    /// default), or a cosign tag (a signature follows its subject, whatever its tag).
    /// The referrers tag schema's tags never are: the client keeps them at a target
    /// that needs them.
    pub(crate) fn wants_tag(&self, tag: &str) -> bool {
        if artifact_tags::is_tag_schema(tag) {
            return false;
        }
        artifact_tags::legacy_subject(tag).is_some()
            || self.tags.is_empty()
            || self.tags.iter().any(|p| glob(p, tag))
    }

    /// The repository's name at the target.
    pub(crate) fn target_repo(&self, repo: &str) -> Result<RepoName, String> {
        let name = match &self.namespace {
            Some(ns) => format!("{ns}/{repo}"),
            None => repo.to_owned(),
        };
        RepoName::parse(&name).map_err(|e| format!("target repository {name:?}: {e}"))
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Reads `env:VAR` or `file:PATH` credentials: `user:password`, or a bare token.
fn credentials(spec: &str) -> Result<Credentials, String> {
    let value = if let Some(var) = spec.strip_prefix("env:") {
        std::env::var(var).map_err(|_| format!("variable {var} is not set"))?
    } else if let Some(path) = spec.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map_err(|e| format!("credentials file {path}: {e}"))?
            .trim()
            .to_owned()
    } else {
        return Err(format!(
            "credentials {spec:?} must be env:VARIABLE or file:PATH"
        ));
    };
    Ok(match value.split_once(':') {
        Some((user, password)) => Credentials {
            username: user.to_owned(),
            password: password.to_owned(),
        },
        None => Credentials {
            username: "token".to_owned(),
            password: value,
        },
    })
}

/// The configured rules, the queue they are replicated from and the listings a full
/// sync reads. Shared by the subscriber, the worker and the admin API.
pub struct Replication {
    rules: Vec<Rule>,
    store: Arc<dyn AccountStore>,
    meta: Arc<dyn MetadataStore>,
    /// Woken when rows were queued, so that the worker starts without waiting for its
    /// poll.
    wake: Notify,
}

/// A rule's configuration and status, as the admin API answers it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleReport {
    pub name: String,
    /// The target's base URL (`None` for a rule no longer configured).
    pub url: Option<String>,
    pub namespace: Option<String>,
    pub repositories: Vec<String>,
    pub tags: Vec<String>,
    pub delete: bool,
    /// Changes still to replicate (failing ones included), not dead.
    pub pending: u64,
    /// Pending changes that failed at least once.
    pub failing: u64,
    /// Changes given up on (queued again by a new change or a full sync).
    pub dead: u64,
    /// Seconds since the oldest pending change was queued: how far the target lags.
    pub lag_seconds: Option<u64>,
    /// RFC 3339 times (UTC).
    pub oldest_pending: Option<String>,
    /// Changes replicated and failed attempts, ever.
    pub copied: u64,
    pub failures: u64,
    pub last_success: Option<String>,
    pub last_failure: Option<String>,
    pub last_error: Option<String>,
}

/// A queued change that failed at least once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailingChange {
    pub rule: String,
    pub repository: String,
    /// A tag, or a digest.
    pub reference: String,
    /// `copy` or `delete`.
    pub operation: String,
    pub attempts: u32,
    pub dead: bool,
    /// RFC 3339: when it was queued, and when it is retried (`None` when dead).
    pub queued: String,
    pub next_attempt: Option<String>,
    pub last_error: Option<String>,
}

/// Every configured rule, then rules that still have queued changes or a recorded
/// outcome but are no longer configured, and the most recent failing changes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicationReport {
    pub rules: Vec<RuleReport>,
    pub unconfigured: Vec<RuleReport>,
    pub failing: Vec<FailingChange>,
}

/// What a full sync queued.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncReport {
    pub rule: String,
    /// Repositories that matched the rule.
    pub repositories: u64,
    /// Tags queued for copying.
    pub queued: u64,
}

/// Failing changes shown by the report.
const FAILING_SHOWN: usize = 50;

/// Rows written per transaction by a full sync.
const SYNC_BATCH: usize = 500;

fn ms_time(ms: i64) -> String {
    berth_oci::time::rfc3339(ms.div_euclid(1000))
}

impl Replication {
    /// The rules of `configs`, replicated from `store`'s queue; `meta` lists what a full
    /// sync queues. With `connect`, each rule gets its target's client (its credentials
    /// are read now); without, the rules only describe (for `berth admin` on a data
    /// directory).
    pub fn new(
        configs: &[ReplicationRule],
        store: Arc<dyn AccountStore>,
        meta: Arc<dyn MetadataStore>,
        connect: bool,
    ) -> Result<Replication, ReplicationConfigError> {
        let rules: Vec<Rule> = configs
            .iter()
            .map(|c| Rule::parse(c, connect))
            .collect::<Result<_, _>>()?;
        for (i, r) in rules.iter().enumerate() {
            if rules[..i].iter().any(|o| o.name == r.name) {
                return Err(ReplicationConfigError::Invalid {
                    name: r.name.clone(),
                    message: "two replication rules have this name".into(),
                });
            }
        }
        Ok(Replication {
            rules,
            store,
            meta,
            wake: Notify::new(),
        })
    }

    /// Whether any rule is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub(crate) fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The queue rows `event` asks for, one per rule that wants it.
    fn changes(&self, event: &Event) -> Vec<ReplicationNew> {
        let (repo, reference, op, tag) = match event {
            Event::TagMoved { repo, tag, .. } => (repo, tag.to_string(), ReplicationOp::Copy, true),
            Event::ManifestPushed {
                repo,
                digest,
                tags,
                subject: Some(_),
                ..
            } if tags.is_empty() => (repo, digest.to_string(), ReplicationOp::Copy, false),
            Event::TagDeleted { repo, tag, .. } | Event::TagExpired { repo, tag, .. } => {
                (repo, tag.to_string(), ReplicationOp::Delete, true)
            }
            Event::ManifestDeleted { repo, digest, .. } => {
                (repo, digest.to_string(), ReplicationOp::Delete, false)
            }
            _ => return Vec::new(),
        };
        self.rules
            .iter()
            .filter(|r| r.wants_repo(repo.as_str()))
            .filter(|r| op == ReplicationOp::Copy || r.delete)
            .filter(|r| !tag || r.wants_tag(&reference))
            .map(|r| ReplicationNew {
                rule: r.name.clone(),
                repo: repo.to_string(),
                reference: reference.clone(),
                op,
            })
            .collect()
    }

    /// Queues every tag of every repository the rule `name` matches (its tag patterns
    /// apply; referrers travel with their subjects): a full sync. Tags the target
    /// already holds are found by `HEAD` and cost no transfer.
    pub async fn sync(&self, name: &str) -> Result<SyncReport, ReplicationError> {
        let rule = self
            .rule(name)
            .ok_or_else(|| ReplicationError::Unknown(name.to_owned()))?;
        let mut report = SyncReport {
            rule: name.to_owned(),
            repositories: 0,
            queued: 0,
        };
        let mut batch = Vec::new();
        let mut last_repo: Option<String> = None;
        loop {
            let page = Page {
                last: last_repo.clone(),
                n: Some(1000),
            };
            let repos = self.meta.repositories(&page).await?;
            let Some(end) = repos.last().cloned() else {
                break;
            };
            for repo in repos.iter().filter(|r| rule.wants_repo(r)) {
                let Ok(name) = RepoName::parse(repo) else {
                    continue;
                };
                report.repositories += 1;
                let mut last_tag: Option<String> = None;
                loop {
                    let page = Page {
                        last: last_tag.clone(),
                        n: Some(1000),
                    };
                    let tags = self
                        .meta
                        .tag_list(&name, &page, TagListing::Visible)
                        .await?
                        .unwrap_or_default();
                    let Some(end) = tags.last().cloned() else {
                        break;
                    };
                    for tag in tags.into_iter().filter(|t| rule.wants_tag(t)) {
                        batch.push(ReplicationNew {
                            rule: rule.name.clone(),
                            repo: repo.clone(),
                            reference: tag,
                            op: ReplicationOp::Copy,
                        });
                    }
                    if batch.len() >= SYNC_BATCH {
                        report.queued += batch.len() as u64;
                        self.store
                            .replication_enqueue(&std::mem::take(&mut batch), now_ms())
                            .await?;
                        self.wake.notify_one();
                    }
                    last_tag = Some(end);
                }
            }
            last_repo = Some(end);
        }
        report.queued += batch.len() as u64;
        self.store.replication_enqueue(&batch, now_ms()).await?;
        self.wake.notify_one();
        Ok(report)
    }

    /// Every rule's configuration and status, and the most recent failing changes.
    pub async fn report(&self) -> Result<ReplicationReport, ReplicationError> {
        let status = self.store.replication_status().await?;
        let now = now_ms();
        let row = |name: &str, rule: Option<&Rule>, s: Option<&ReplicationStatus>| {
            let s = s.cloned().unwrap_or_default();
            RuleReport {
                name: name.to_owned(),
                url: rule.map(|r| r.url.clone()),
                namespace: rule.and_then(|r| r.namespace.clone()),
                repositories: rule
                    .and_then(|r| r.repositories.as_ref())
                    .map(|p| p.iter().map(|p| p.to_string()).collect())
                    .unwrap_or_default(),
                tags: rule.map(|r| r.tags.clone()).unwrap_or_default(),
                delete: rule.is_some_and(|r| r.delete),
                pending: s.pending,
                failing: s.failing,
                dead: s.dead,
                lag_seconds: s
                    .oldest_pending_ms
                    .map(|t| (now.saturating_sub(t).max(0) / 1000) as u64),
                oldest_pending: s.oldest_pending_ms.map(ms_time),
                copied: s.copied,
                failures: s.failures,
                last_success: s.last_success_ms.map(ms_time),
                last_failure: s.last_failure_ms.map(ms_time),
                last_error: s.last_error,
            }
        };
        let failing = self
            .store
            .replication_failing(FAILING_SHOWN)
            .await?
            .into_iter()
            .map(|t: ReplicationTask| FailingChange {
                rule: t.rule,
                repository: t.repo,
                reference: t.reference,
                operation: t.op.as_str().to_owned(),
                attempts: t.attempts,
                dead: t.dead,
                queued: ms_time(t.created_ms),
                next_attempt: (!t.dead).then(|| ms_time(t.next_attempt_ms)),
                last_error: t.last_error,
            })
            .collect();
        Ok(ReplicationReport {
            rules: self
                .rules
                .iter()
                .map(|r| row(&r.name, Some(r), status.iter().find(|s| s.rule == r.name)))
                .collect(),
            unconfigured: status
                .iter()
                .filter(|s| self.rule(&s.rule).is_none())
                .map(|s| row(&s.rule, None, Some(s)))
                .collect(),
            failing,
        })
    }
}

/// Writes the changes rules want to the replication queue.
pub struct ReplicationSubscriber(pub Arc<Replication>);

#[async_trait::async_trait]
impl Subscriber for ReplicationSubscriber {
    fn awaits(&self, event: &Event) -> bool {
        matches!(
            event,
            Event::TagMoved { .. }
                | Event::ManifestPushed { .. }
                | Event::TagDeleted { .. }
                | Event::TagExpired { .. }
                | Event::ManifestDeleted { .. }
        ) && !self.0.changes(event).is_empty()
    }

    async fn on(&self, event: &Event) {
        let rows = self.0.changes(event);
        if rows.is_empty() {
            return;
        }
        if let Err(e) = self.0.store.replication_enqueue(&rows, now_ms()).await {
            tracing::error!(error = %e, repository = %rows[0].repo, reference = %rows[0].reference,
                "cannot queue a change for replication; it will not be replicated until a full sync (`berth admin replicate --all`)");
            return;
        }
        self.0.wake.notify_one();
    }
}

#[cfg(test)]
mod tests;
