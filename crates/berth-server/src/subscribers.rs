//! The server's own event subscribers: Prometheus counters, download analytics and the
//! audit log. Each turns [`Event`]s into its side effect; no handler or service calls
//! them directly.
//!
//! The audit log writes one durable row per change and per failed login, but not one
//! per login refused while rate-limited: a flood of bad passwords would become a flood
//! of fsyncs. The first refusal for an (account, address) in a window is written; later
//! ones are counted and written as one row with their number when the window ends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use berth_meta::{AccountStore, AuditEvent};
use berth_oci::Tag;

use crate::analytics::{Analytics, Fetch};
use crate::events::{Actor, Event, Subscriber};
use crate::metrics::Metrics;

/// Counts uploads, commits, pushes and scrub findings for `/metrics`. Downloads and
/// inspections are counted by [`Analytics`], which classifies them.
pub struct MetricsSubscriber(pub Arc<Metrics>);

impl Subscriber for MetricsSubscriber {
    fn notice(&self, event: &Event) {
        match event {
            Event::UploadStarted { .. } => self.0.upload_started(),
            Event::BlobCommitted { .. } => self.0.blob_committed(),
            Event::ManifestPushed { .. } => self.0.manifest_pushed(),
            Event::BlobChecked { .. } => self.0.scrub_checked(),
            Event::BlobCorrupt { .. } => self.0.scrub_corrupt(),
            Event::GcFinished { report, .. } => self.0.gc_finished(report),
            Event::Replicated { rule, error, .. } => self.0.replicated(rule, error.is_none()),
            _ => {}
        }
    }
}

/// Download, byte and request counters by repository (in memory, flushed in batches).
pub struct AnalyticsSubscriber(pub Arc<Analytics>);

impl Subscriber for AnalyticsSubscriber {
    fn notice(&self, event: &Event) {
        match event {
            Event::ManifestFetched {
                head,
                repo,
                tag,
                manifest,
                client,
                user_agent,
                account,
            } => {
                let fetch = Fetch {
                    repo,
                    client: *client,
                    user_agent,
                    tag: tag.as_ref().map(Tag::as_str),
                    account,
                };
                if *head {
                    self.0.manifest_checked(&fetch, manifest);
                } else {
                    self.0.manifest_served(&fetch, manifest);
                    self.0.bytes_served(repo, manifest.content.len() as u64);
                }
            }
            Event::BlobServed { repo, bytes } => self.0.bytes_served(repo, *bytes),
            Event::RepositoryRequest {
                repo,
                route,
                status,
                code,
            } => self.0.request(repo.as_ref(), route, *status, *code),
            _ => {}
        }
    }
}

/// How long refusals of one (account, address) are counted before their row is written.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// (account, address) pairs counted at once; refusals beyond go to one shared count.
const MAX_REFUSAL_KEYS: usize = 1_000;

/// Writes changes and login failures to the audit log (and the `berth::audit` log
/// target). A failed write is logged and never fails the request that caused it.
/// Rate-limited refusals are aggregated (see the module doc).
pub struct AuditSubscriber {
    inner: Arc<AuditLog>,
    flusher_started: AtomicBool,
}

/// The store and the refusals counted but not yet written.
struct AuditLog {
    store: Arc<dyn AccountStore>,
    window: Duration,
    refusals: Mutex<HashMap<(String, IpAddr), Refusals>>,
}

/// Refusals of one (account, address) since the first one, which was written.
struct Refusals {
    since: Instant,
    more: u64,
}

impl AuditLog {
    async fn record(&self, actor: &str, action: &str, target: &str, detail: &str, client: String) {
        tracing::info!(target: "berth::audit", actor, action, target, detail, %client, "audit");
        let event = AuditEvent {
            at: 0,
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
            client,
        };
        if let Err(e) = self.store.audit_append(&event).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Counts one rate-limited refusal; writes it if it is the first of its window.
    async fn refused(&self, account: &str, client: IpAddr) {
        let first = {
            let mut map = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            let mut key = (account.to_owned(), client);
            if map.len() >= MAX_REFUSAL_KEYS && !map.contains_key(&key) {
                key = ("*".to_owned(), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            }
            match map.get_mut(&key) {
                Some(r) => {
                    r.more += 1;
                    false
                }
                None => {
                    map.insert(
                        key,
                        Refusals {
                            since: Instant::now(),
                            more: 0,
                        },
                    );
                    true
                }
            }
        };
        if first {
            let detail = format!(
                "further refusals in the next {}s are counted in one row",
                self.window.as_secs()
            );
            self.record(
                account,
                "login_rate_limited",
                "",
                &detail,
                client.to_string(),
            )
            .await;
        }
    }

    /// Writes the count of every window that has ended (of all of them with `all`).
    async fn flush(&self, all: bool) {
        let ended: Vec<((String, IpAddr), Refusals)> = {
            let mut map = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<(String, IpAddr)> = map
                .iter()
                .filter(|(_, r)| all || r.since.elapsed() >= self.window)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| map.remove(&k).map(|r| (k, r)))
                .collect()
        };
        for ((account, client), r) in ended {
            if r.more > 0 {
                let detail = format!(
                    "{} more refused in {}s",
                    r.more,
                    r.since.elapsed().as_secs()
                );
                self.record(
                    &account,
                    "login_rate_limited",
                    "",
                    &detail,
                    client.to_string(),
                )
                .await;
            }
        }
    }

    /// Writes ended windows every half window until the log is dropped.
    async fn flush_forever(log: Weak<AuditLog>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(log) = log.upgrade() else {
                return;
            };
            log.flush(false).await;
        }
    }
}

impl AuditSubscriber {
    /// The audit log on `store`, aggregating refusals over [`REFUSAL_WINDOW`].
    pub fn new(store: Arc<dyn AccountStore>) -> AuditSubscriber {
        AuditSubscriber::with_window(store, REFUSAL_WINDOW)
    }

    /// The audit log on `store`, aggregating refusals over `window`.
    pub fn with_window(store: Arc<dyn AccountStore>, window: Duration) -> AuditSubscriber {
        AuditSubscriber {
            inner: Arc::new(AuditLog {
                store,
                window,
                refusals: Mutex::new(HashMap::new()),
            }),
            flusher_started: AtomicBool::new(false),
        }
    }

    /// Writes the counts of refusals not yet written, ended windows or not (at
    /// shutdown, or in tests).
    pub async fn flush_refusals(&self) {
        self.inner.flush(true).await;
    }

    /// Starts the task that writes ended windows, on the runtime of the first refusal.
    fn start_flusher(&self) {
        if self.flusher_started.load(Ordering::Relaxed) {
            return;
        }
        // Marked started only once spawned: without a runtime now, a later refusal tries again.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            if !self.flusher_started.swap(true, Ordering::Relaxed) {
                let every = (self.inner.window / 2).max(Duration::from_millis(10));
                rt.spawn(AuditLog::flush_forever(Arc::downgrade(&self.inner), every));
            }
        }
    }

    async fn record(&self, actor: &str, action: &str, target: &str, detail: &str, client: String) {
        self.inner
            .record(actor, action, target, detail, client)
            .await;
    }

    async fn by(&self, actor: &Actor, action: &str, target: &str, detail: &str) {
        self.record(
            &actor.name,
            action,
            target,
            detail,
            actor.client.to_string(),
        )
        .await;
    }
}

#[async_trait::async_trait]
impl Subscriber for AuditSubscriber {
    fn awaits(&self, event: &Event) -> bool {
        matches!(
            event,
            Event::ManifestPushed { .. }
                | Event::TagDeleted { .. }
                | Event::TagExpired { .. }
                | Event::ManifestDeleted { .. }
                | Event::BlobDeleted { .. }
                | Event::LoginFailed { .. }
                | Event::LoginRateLimited { .. }
                | Event::TokenIssued { .. }
                | Event::GcFinished { .. }
        )
    }

    async fn on(&self, event: &Event) {
        match event {
            Event::GcFinished { report, actor } => {
                let detail = format!(
                    "deleted {} blob file(s) ({} bytes), {} blob link(s), {} manifest(s) in {} ms",
                    report.blobs_deleted,
                    report.bytes_freed,
                    report.links_removed,
                    report.manifests_deleted,
                    report.duration_ms
                );
                self.by(actor, "gc", "*", &detail).await;
            }
            Event::ManifestPushed {
                repo,
                digest,
                tags,
                forced,
                actor,
                ..
            } => {
                if *forced {
                    self.by(actor, "tag_force", repo.as_str(), &digest.to_string())
                        .await;
                }
                let tags: Vec<&str> = tags.iter().map(Tag::as_str).collect();
                let detail = format!("{digest} tags={}", tags.join(","));
                self.by(actor, "push", repo.as_str(), &detail).await;
            }
            Event::TagDeleted { repo, tag, actor } => {
                self.by(actor, "tag_delete", repo.as_str(), tag.as_str())
                    .await
            }
            Event::TagExpired {
                repo,
                tag,
                rule,
                actor,
            } => {
                let detail = format!("{tag} ({rule})");
                self.by(actor, "tag_expire", repo.as_str(), &detail).await
            }
            Event::ManifestDeleted {
                repo,
                digest,
                actor,
            } => {
                self.by(actor, "manifest_delete", repo.as_str(), &digest.to_string())
                    .await
            }
            Event::BlobDeleted {
                repo,
                digest,
                actor,
            } => {
                self.by(actor, "blob_delete", repo.as_str(), &digest.to_string())
                    .await
            }
            Event::LoginFailed {
                account,
                reason,
                client,
            } => {
                self.record(account, "login_failed", "", reason, client.to_string())
                    .await
            }
            Event::LoginRateLimited { account, client } => {
                self.start_flusher();
                self.inner.refused(account, *client).await
            }
            Event::TokenIssued { account, client } => {
                self.record(account, "login", "", "token issued", client.to_string())
                    .await
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<dyn AccountStore>) {
        let dir = tempfile::tempdir().unwrap();
        let db = berth_meta::sqlite::SqliteStore::open(dir.path().join("m.db")).unwrap();
        (dir, Arc::new(db))
    }

    async fn limited_rows(store: &Arc<dyn AccountStore>) -> Vec<AuditEvent> {
        let mut rows = store.audit_list(0, 10_000).await.unwrap();
        rows.retain(|e| e.action == "login_rate_limited");
        rows
    }

    #[tokio::test]
    async fn a_refusal_flood_is_one_row_and_a_count() {
        let (_dir, store) = store();
        let audit = AuditSubscriber::with_window(store.clone(), Duration::from_millis(200));
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.9".parse().unwrap();
        for _ in 0..200 {
            audit
                .on(&Event::LoginRateLimited {
                    account: "alice".into(),
                    client: lo,
                })
                .await;
        }
        audit
            .on(&Event::LoginRateLimited {
                account: "alice".into(),
                client: other,
            })
            .await;
        let rows = limited_rows(&store).await;
        assert_eq!(rows.len(), 2, "the first refusal per address: {rows:?}");

        // The background task writes the count once the window has ended.
        let deadline = Instant::now() + Duration::from_secs(10);
        let rows = loop {
            let rows = limited_rows(&store).await;
            if rows.len() > 2 || Instant::now() > deadline {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert!(rows[2].detail.starts_with("199 more refused"), "{rows:?}");
        assert_eq!(
            (rows[2].actor.as_str(), rows[2].client.as_str()),
            ("alice", "127.0.0.1")
        );

        // A new window starts with a written row again.
        audit
            .on(&Event::LoginRateLimited {
                account: "alice".into(),
                client: lo,
            })
            .await;
        audit
            .on(&Event::LoginRateLimited {
                account: "alice".into(),
                client: lo,
            })
            .await;
        assert_eq!(limited_rows(&store).await.len(), 4);
        audit.flush_refusals().await;
        let rows = limited_rows(&store).await;
        assert_eq!(rows.len(), 5);
        assert!(rows[4].detail.starts_with("1 more refused"), "{rows:?}");
    }

    #[tokio::test]
    async fn refusal_keys_are_bounded() {
        let (_dir, store) = store();
        let audit = AuditSubscriber::with_window(store.clone(), Duration::from_secs(3600));
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for i in 0..MAX_REFUSAL_KEYS + 50 {
            audit.inner.refused(&format!("user{i}"), lo).await;
        }
        assert_eq!(
            audit.inner.refusals.lock().unwrap().len(),
            MAX_REFUSAL_KEYS + 1,
            "the keys past the bound share one count"
        );
        assert_eq!(limited_rows(&store).await.len(), MAX_REFUSAL_KEYS + 1);
    }
}
