//! Webhooks: registry events as CloudEvents 1.0 (structured JSON mode) POSTed to the
//! URLs of `[[webhook]]`, signed with HMAC-SHA256, from a durable outbox.
//!
//! # The path of an event
//! 1. [`WebhookSubscriber`] sees every [`Event`]. When a configured hook wants it (by
//!    type and repository), [`describe`] turns it into a CloudEvent with a fresh id, and
//!    one outbox row per wanting hook is written by [`AccountStore::outbox_add`] (one
//!    durable transaction) before the request that caused the event is answered: the
//!    subscriber `awaits` these events, as the audit log does.
//! 2. [`delivery::deliver_forever`] takes due rows from the outbox, POSTs each body with
//!    `X-Berth-Signature: sha256=<hex HMAC-SHA256 of the body, keyed by the hook's
//!    secret>`, deletes the row on a 2xx answer, and otherwise retries with exponential
//!    backoff and jitter up to the hook's `retry_max_interval`, until `give_up_after`
//!    has passed since the event: then the row is marked dead, kept and shown by the
//!    admin API until an administrator redelivers it.
//!
//! Pulls are aggregated instead of sent one by one: manifest GETs are counted in memory
//! per (repository, tag or digest) and written to the outbox as one `dev.berth.pulls`
//! event per key every [`PULL_WINDOW`] (and at shutdown), so nothing on the pull path
//! writes to the database.
//!
//! # Guarantees
//! - At least once: a row leaves the outbox only after its hook answered 2xx, so a
//!   restart, a crash or a failing receiver loses no event that reached the outbox; an
//!   answer lost to a crash is delivered again with the same CloudEvents `id`, by which
//!   receivers de-duplicate.
//! - An acknowledged change has its event in the outbox: the row is committed before
//!   the client is answered. The change itself commits just before (its own
//!   transaction), so a crash between the two commits leaves a change without an event;
//!   its client then gets no answer and, as for any unanswered request, cannot know
//!   whether it happened.
//! - Counted pulls not yet written (at most one window) are lost by a crash, not by a
//!   shutdown.
//! - No order between events is promised; the CloudEvents `time` says when each happened.
//!
//! # Adding an event
//! [`describe`] is the one place that decides what a webhook says about an [`Event`]: a
//! new variant that webhooks report needs one arm there, with a type listed in
//! [`EVENT_TYPES`].

pub mod delivery;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_auth::{PatternSet, RepoPatterns};
use berth_meta::{AccountStore, MetaError, OutboxNew, OutboxStatus};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::events::{Event, Subscriber};

/// The prefix of every event type: `dev.berth.manifest.pushed`.
pub const TYPE_PREFIX: &str = "dev.berth.";

/// Event types (without [`TYPE_PREFIX`]) a hook's `events` may name.
pub const EVENT_TYPES: &[&str] = &[
    "manifest.pushed",
    "manifest.deleted",
    "tag.moved",
    "tag.deleted",
    "blob.deleted",
    "pulls",
    "quota.refused",
    "gc.finished",
    "ping",
];

/// How long pulls are counted before they are written as `dev.berth.pulls` events.
pub const PULL_WINDOW: Duration = Duration::from_secs(60);

/// (repository, reference) pairs counted at once; pulls of further pairs are dropped
/// (and logged) until the next window.
const MAX_PULL_KEYS: usize = 10_000;

/// A `[[webhook]]` of the configuration.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique; names the hook in the outbox and the admin API (`[a-z0-9._-]`).
    pub name: String,
    /// Where events are POSTed (`http://` or `https://`).
    pub url: String,
    /// The HMAC-SHA256 key of `X-Berth-Signature`.
    pub secret: String,
    /// A repository pattern (`team/*`) or a list of them; events about other repositories
    /// are not sent. Empty (the default): every repository. Registry-wide events (`gc.finished`,
    /// `ping`) pass this filter.
    #[serde(default)]
    pub repositories: RepoPatterns,
    /// Event types (`manifest.pushed`, or `dev.berth.manifest.pushed`); empty (the
    /// default): all of them.
    #[serde(default)]
    pub events: Vec<String>,
    /// How long one POST may take [default: 10s].
    #[serde(default, deserialize_with = "crate::config::duration_str::option")]
    pub timeout: Option<Duration>,
    /// The longest wait between two attempts of one delivery [default: 10m].
    #[serde(default, deserialize_with = "crate::config::duration_str::option")]
    pub retry_max_interval: Option<Duration>,
    /// A delivery still failing this long after its event is marked dead [default: 24h].
    #[serde(default, deserialize_with = "crate::config::duration_str::option")]
    pub give_up_after: Option<Duration>,
}

impl std::fmt::Debug for WebhookConfig {
    // By hand, so that the secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &redact(&self.url))
            .field("secret", &"<redacted>")
            .field("repositories", &self.repositories)
            .field("events", &self.events)
            .field("timeout", &self.timeout)
            .field("retry_max_interval", &self.retry_max_interval)
            .field("give_up_after", &self.give_up_after)
            .finish()
    }
}

/// A `[[webhook]]` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("webhook {name:?}: {message}")]
    Invalid { name: String, message: String },
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

/// Why an admin operation on webhooks failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no webhook named {0:?} is configured")]
    Unknown(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// One validated hook.
struct Hook {
    name: String,
    url: reqwest::Url,
    secret: String,
    repositories: Option<PatternSet>,
    /// Types without the prefix; empty: all.
    events: Vec<String>,
    timeout: Duration,
    retry_max_interval: Duration,
    give_up_after: Duration,
}

impl Hook {
    fn parse(c: &WebhookConfig) -> Result<Hook, WebhookConfigError> {
        let invalid = |message: String| WebhookConfigError::Invalid {
            name: c.name.clone(),
            message,
        };
        if !name_ok(&c.name) {
            return Err(invalid(NAME_RULE.into()));
        }
        let url = reqwest::Url::parse(&c.url)
            .map_err(|e| invalid(format!("url {:?}: {e}", redact(&c.url))))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the url must be http:// or https://".into()));
        }
        if c.secret.is_empty() {
            return Err(invalid(
                "a secret is required: receivers check X-Berth-Signature with it".into(),
            ));
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
        let events = c
            .events
            .iter()
            .map(|t| {
                let short = t.strip_prefix(TYPE_PREFIX).unwrap_or(t);
                if EVENT_TYPES.contains(&short) {
                    Ok(short.to_owned())
                } else {
                    Err(invalid(format!(
                        "unknown event type {t:?}: use one of {}",
                        EVENT_TYPES.join(", ")
                    )))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Hook {
            name: c.name.clone(),
            url,
            secret: c.secret.clone(),
            repositories,
            events,
            timeout: c.timeout.unwrap_or(Duration::from_secs(10)),
            retry_max_interval: c.retry_max_interval.unwrap_or(Duration::from_secs(600)),
            give_up_after: c.give_up_after.unwrap_or(Duration::from_secs(24 * 3600)),
        })
    }

    /// Whether this hook wants an event of `kind` about `repo` (`None`: registry-wide).
    fn wants(&self, kind: &str, repo: Option<&str>) -> bool {
        (self.events.is_empty() || self.events.iter().any(|e| e == kind))
            && match repo {
                Some(r) => self.repositories.as_ref().is_none_or(|p| p.matches(r)),
                None => true,
            }
    }
}

/// What a hook's or a replication rule's name may be (it appears in admin API paths).
pub(crate) const NAME_RULE: &str = "the name must be 1 to 64 of a-z, 0-9, '.', '_' and '-'";

/// Whether `name` follows [`NAME_RULE`].
pub(crate) fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// A URL as logs and the admin API show it: without user information and query, which
/// may hold credentials.
pub(crate) fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if u.query().is_some() {
                u.set_query(Some("..."));
            }
            u.to_string()
        }
        Err(_) => "<invalid url>".into(),
    }
}

/// What a webhook says about an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// The type without [`TYPE_PREFIX`], one of [`EVENT_TYPES`].
    pub kind: &'static str,
    /// The repository the event is about; `None` for registry-wide events.
    pub repo: Option<String>,
    /// The CloudEvents `subject`: `repo:tag`, `repo@digest`, or what else it is about.
    pub subject: String,
    /// The CloudEvents `data`.
    pub data: Value,
}

/// The webhook form of `event`, or `None` for events webhooks do not report. The one
/// place to extend when a new event should be reported (see the module docs).
pub fn describe(event: &Event) -> Option<Described> {
    let described = |kind, repo: &berth_oci::RepoName, subject: String, data| Described {
        kind,
        repo: Some(repo.to_string()),
        subject,
        data,
    };
    Some(match event {
        Event::ManifestPushed {
            repo,
            digest,
            tags,
            forced,
            actor,
            ..
        } => described(
            "manifest.pushed",
            repo,
            format!("{repo}@{digest}"),
            json!({"repository": repo.as_str(), "digest": digest.to_string(),
                   "tags": tags.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                   "forced": forced, "actor": actor.name}),
        ),
        Event::TagMoved { repo, tag, digest } => described(
            "tag.moved",
            repo,
            format!("{repo}:{tag}"),
            json!({"repository": repo.as_str(), "tag": tag.as_str(), "digest": digest.to_string()}),
        ),
        Event::TagDeleted { repo, tag, actor } => described(
            "tag.deleted",
            repo,
            format!("{repo}:{tag}"),
            json!({"repository": repo.as_str(), "tag": tag.as_str(), "actor": actor.name}),
        ),
        Event::ManifestDeleted {
            repo,
            digest,
            actor,
        } => described(
            "manifest.deleted",
            repo,
            format!("{repo}@{digest}"),
            json!({"repository": repo.as_str(), "digest": digest.to_string(), "actor": actor.name}),
        ),
        Event::BlobDeleted {
            repo,
            digest,
            actor,
        } => described(
            "blob.deleted",
            repo,
            format!("{repo}@{digest}"),
            json!({"repository": repo.as_str(), "digest": digest.to_string(), "actor": actor.name}),
        ),
        Event::GcFinished { report, actor } => Described {
            kind: "gc.finished",
            repo: None,
            subject: "gc".into(),
            data: json!({"report": serde_json::to_value(&**report).unwrap_or(Value::Null),
                         "actor": actor.name}),
        },
        Event::QuotaRefused {
            repo,
            used,
            limit,
            attempted,
        } => described(
            "quota.refused",
            repo,
            repo.to_string(),
            json!({"repository": repo.as_str(), "used": used, "limit": limit,
                   "attempted": attempted}),
        ),
        // A tag a retention rule deleted is a tag deletion, saying which rule did it.
        Event::TagExpired {
            repo,
            tag,
            rule,
            actor,
        } => described(
            "tag.deleted",
            repo,
            format!("{repo}:{tag}"),
            json!({"repository": repo.as_str(), "tag": tag.as_str(), "actor": actor.name,
                   "retention_rule": rule}),
        ),
        _ => return None,
    })
}

/// Manifest GETs counted since `since` (unix seconds) for one (repository, reference).
struct PullCount {
    count: u64,
    since: i64,
}

/// Pulls counted in the current window.
#[derive(Default)]
struct Pulls {
    counts: HashMap<(String, String), PullCount>,
    /// Pulls not counted because [`MAX_PULL_KEYS`] was reached.
    dropped: u64,
}

/// The configured hooks, the outbox they are delivered from, and the pulls counted for
/// them. Shared by the subscriber, the delivery task and the admin API.
pub struct Webhooks {
    hooks: Vec<Hook>,
    /// The CloudEvents `source` of every event.
    source: String,
    store: Arc<dyn AccountStore>,
    http: reqwest::Client,
    /// Woken when rows were added, so that delivery starts without waiting for its poll.
    wake: Notify,
    pulls: Mutex<Pulls>,
}

/// A hook's configuration and delivery status, as the admin API answers it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HookReport {
    pub name: String,
    /// Without credentials (`None` for a hook no longer configured).
    pub url: Option<String>,
    pub repositories: Vec<String>,
    pub events: Vec<String>,
    /// Deliveries to be attempted (failing ones included).
    pub pending: u64,
    /// Pending deliveries that failed at least once.
    pub failing: u64,
    /// Deliveries given up on (redeliver to retry them).
    pub dead: u64,
    /// RFC 3339 times (UTC).
    pub oldest_pending: Option<String>,
    pub last_success: Option<String>,
    pub last_failure: Option<String>,
    pub last_error: Option<String>,
}

/// Every configured hook, then hooks that still have deliveries or a recorded outcome but
/// are no longer configured (their deliveries are dead until the hook is configured again
/// and redelivered).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebhookReport {
    pub webhooks: Vec<HookReport>,
    pub unconfigured: Vec<HookReport>,
}

fn ms_time(ms: i64) -> String {
    berth_oci::time::rfc3339(ms.div_euclid(1000))
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Webhooks {
    /// The hooks of `configs`, delivered from `store`'s outbox with events of `source`.
    pub fn new(
        configs: &[WebhookConfig],
        source: &str,
        store: Arc<dyn AccountStore>,
    ) -> Result<Webhooks, WebhookConfigError> {
        let hooks: Vec<Hook> = configs.iter().map(Hook::parse).collect::<Result<_, _>>()?;
        for (i, h) in hooks.iter().enumerate() {
            if hooks[..i].iter().any(|o| o.name == h.name) {
                return Err(WebhookConfigError::Invalid {
                    name: h.name.clone(),
                    message: "two webhooks have this name".into(),
                });
            }
        }
        let http = reqwest::Client::builder()
            // A redirect would send the signed body somewhere the configuration does not
            // name; it counts as a failed attempt instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("berth-webhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookConfigError::Client(e.to_string()))?;
        Ok(Webhooks {
            hooks,
            source: source.to_owned(),
            store,
            http,
            wake: Notify::new(),
            pulls: Mutex::default(),
        })
    }

    /// Whether any hook is configured.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    fn hook(&self, name: &str) -> Option<&Hook> {
        self.hooks.iter().find(|h| h.name == name)
    }

    fn wanted(&self, kind: &str, repo: Option<&str>) -> bool {
        self.hooks.iter().any(|h| h.wants(kind, repo))
    }

    /// The request body of `d` as the event `id` at `time` (unix seconds).
    fn cloud_event(&self, id: &str, d: &Described, time: i64) -> String {
        json!({
            "specversion": "1.0",
            "id": id,
            "source": self.source,
            "type": format!("{TYPE_PREFIX}{}", d.kind),
            "time": berth_oci::time::rfc3339(time),
            "subject": d.subject,
            "datacontenttype": "application/json",
            "data": d.data,
        })
        .to_string()
    }

    /// Writes `d` to the outbox for every hook that wants it (or only for `only`), with
    /// one new event id; returns the id, or `None` when no hook wants it.
    async fn enqueue(
        &self,
        d: &Described,
        time: i64,
        only: Option<&str>,
    ) -> Result<Option<String>, MetaError> {
        let id = uuid::Uuid::new_v4().to_string();
        let body = self.cloud_event(&id, d, time);
        let rows: Vec<OutboxNew> = self
            .hooks
            .iter()
            .filter(|h| match only {
                Some(name) => h.name == name,
                None => h.wants(d.kind, d.repo.as_deref()),
            })
            .map(|h| OutboxNew {
                hook: h.name.clone(),
                event_id: id.clone(),
                event_type: format!("{TYPE_PREFIX}{}", d.kind),
                body: body.clone(),
            })
            .collect();
        if rows.is_empty() {
            return Ok(None);
        }
        self.store.outbox_add(&rows, now_ms()).await?;
        self.wake.notify_one();
        Ok(Some(id))
    }

    /// Counts a manifest GET of `repo` by `reference` (a tag or digest) for the next
    /// `dev.berth.pulls` events, if a hook wants them.
    fn count_pull(&self, repo: &str, reference: String) {
        if !self.wanted("pulls", Some(repo)) {
            return;
        }
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        let key = (repo.to_owned(), reference);
        if let Some(c) = pulls.counts.get_mut(&key) {
            c.count += 1;
        } else if pulls.counts.len() >= MAX_PULL_KEYS {
            pulls.dropped += 1;
        } else {
            pulls.counts.insert(
                key,
                PullCount {
                    count: 1,
                    since: berth_oci::time::now(),
                },
            );
        }
    }

    /// Writes the pulls counted so far as one `dev.berth.pulls` event per (repository,
    /// reference) and starts a new window. Called every [`PULL_WINDOW`] and at shutdown.
    pub async fn flush_pulls(&self) {
        let (counts, dropped) = {
            let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
            let dropped = std::mem::take(&mut pulls.dropped);
            (std::mem::take(&mut pulls.counts), dropped)
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "webhook pull counts: too many repositories and references in one window; these pulls were not counted"
            );
        }
        let until = berth_oci::time::now();
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by(|a, b| a.0.cmp(&b.0));
        for ((repo, reference), c) in counts {
            let subject = if reference.contains(':') {
                format!("{repo}@{reference}")
            } else {
                format!("{repo}:{reference}")
            };
            let d = Described {
                kind: "pulls",
                repo: Some(repo.clone()),
                subject,
                data: json!({"repository": repo, "reference": reference, "count": c.count,
                             "since": berth_oci::time::rfc3339(c.since),
                             "until": berth_oci::time::rfc3339(until)}),
            };
            if let Err(e) = self.enqueue(&d, until, None).await {
                tracing::error!(error = %e, repository = %repo, "cannot write a pulls event to the webhook outbox; it is lost");
            }
        }
    }

    /// Flushes pulls every [`PULL_WINDOW`], forever.
    pub async fn flush_pulls_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PULL_WINDOW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.flush_pulls().await;
        }
    }

    /// Every hook's configuration and delivery status.
    pub async fn report(&self) -> Result<WebhookReport, WebhookError> {
        let status = self.store.outbox_status().await?;
        let row = |name: &str, hook: Option<&Hook>, s: Option<&OutboxStatus>| {
            let s = s.cloned().unwrap_or_default();
            HookReport {
                name: name.to_owned(),
                url: hook.map(|h| redact(h.url.as_str())),
                repositories: hook
                    .and_then(|h| h.repositories.as_ref())
                    .map(|p| p.iter().map(|p| p.to_string()).collect())
                    .unwrap_or_default(),
                events: hook.map(|h| h.events.clone()).unwrap_or_default(),
                pending: s.pending,
                failing: s.failing,
                dead: s.dead,
                oldest_pending: s.oldest_pending_ms.map(ms_time),
                last_success: s.last_success_ms.map(ms_time),
                last_failure: s.last_failure_ms.map(ms_time),
                last_error: s.last_error,
            }
        };
        Ok(WebhookReport {
            webhooks: self
                .hooks
                .iter()
                .map(|h| row(&h.name, Some(h), status.iter().find(|s| s.hook == h.name)))
                .collect(),
            unconfigured: status
                .iter()
                .filter(|s| self.hook(&s.hook).is_none())
                .map(|s| row(&s.hook, None, Some(s)))
                .collect(),
        })
    }

    /// Makes every delivery of the configured hook `name`, dead ones included, due now
    /// with a new retry window; returns how many.
    pub async fn redeliver(&self, name: &str) -> Result<u64, WebhookError> {
        if self.hook(name).is_none() {
            return Err(WebhookError::Unknown(name.to_owned()));
        }
        let n = self.store.outbox_redeliver(name, now_ms()).await?;
        self.wake.notify_one();
        Ok(n)
    }

    /// Queues a `dev.berth.ping` event for the hook `name` only; returns its event id.
    pub async fn ping(&self, name: &str, actor: &str) -> Result<String, WebhookError> {
        if self.hook(name).is_none() {
            return Err(WebhookError::Unknown(name.to_owned()));
        }
        let d = Described {
            kind: "ping",
            repo: None,
            subject: name.to_owned(),
            data: json!({"webhook": name, "actor": actor}),
        };
        self.enqueue(&d, berth_oci::time::now(), Some(name))
            .await?
            .ok_or_else(|| WebhookError::Unknown(name.to_owned()))
    }
}

/// Writes the events hooks want to the outbox, and counts pulls.
pub struct WebhookSubscriber(pub Arc<Webhooks>);

#[async_trait::async_trait]
impl Subscriber for WebhookSubscriber {
    fn notice(&self, event: &Event) {
        if let Event::ManifestFetched {
            head: false,
            repo,
            tag,
            manifest,
            ..
        } = event
        {
            let reference = match tag {
                Some(t) => t.to_string(),
                None => manifest.digest.to_string(),
            };
            self.0.count_pull(repo.as_str(), reference);
        }
    }

    fn awaits(&self, event: &Event) -> bool {
        describe(event).is_some_and(|d| self.0.wanted(d.kind, d.repo.as_deref()))
    }

    async fn on(&self, event: &Event) {
        let Some(d) = describe(event) else {
            return;
        };
        if let Err(e) = self.0.enqueue(&d, berth_oci::time::now(), None).await {
            tracing::error!(error = %e, subject = %d.subject, kind = d.kind,
                "cannot write an event to the webhook outbox; it will not be delivered");
        }
    }
}

#[cfg(test)]
mod tests;
