//! The server's own event subscribers: Prometheus counters, download analytics and the
//! audit log. Each turns [`Event`]s into its side effect; no handler or service calls
//! them directly.

use std::sync::Arc;

use berth_meta::{AccountStore, AuditEvent};
use berth_oci::Tag;

use crate::analytics::Analytics;
use crate::events::{Actor, Event, Subscriber};
use crate::metrics::Metrics;

/// Counts uploads, commits, pushes, pulls and scrub findings for `/metrics`.
pub struct MetricsSubscriber(pub Arc<Metrics>);

#[async_trait::async_trait]
impl Subscriber for MetricsSubscriber {
    async fn on(&self, event: &Event) {
        match event {
            Event::UploadStarted { .. } => self.0.upload_started(),
            Event::BlobCommitted { .. } => self.0.blob_committed(),
            Event::ManifestPushed { .. } => self.0.manifest_pushed(),
            Event::ManifestServed { repo, .. } => self.0.pull(repo.as_str()),
            Event::BlobChecked { .. } => self.0.scrub_checked(),
            Event::BlobCorrupt { .. } => self.0.scrub_corrupt(),
            _ => {}
        }
    }
}

/// Download, byte and request counters by repository (in memory, flushed in batches).
pub struct AnalyticsSubscriber(pub Arc<Analytics>);

#[async_trait::async_trait]
impl Subscriber for AnalyticsSubscriber {
    async fn on(&self, event: &Event) {
        match event {
            Event::ManifestServed {
                repo,
                tag,
                manifest,
                client,
                user_agent,
            } => {
                self.0.manifest_served(
                    repo,
                    *client,
                    user_agent,
                    tag.as_ref().map(Tag::as_str),
                    manifest,
                );
                self.0.bytes_served(repo, manifest.content.len() as u64);
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

/// Writes changes and login failures to the audit log (and the `berth::audit` log
/// target). A failed write is logged and never fails the request that caused it.
pub struct AuditSubscriber(pub Arc<dyn AccountStore>);

impl AuditSubscriber {
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
        if let Err(e) = self.0.audit_append(&event).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
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
    async fn on(&self, event: &Event) {
        match event {
            Event::ManifestPushed {
                repo,
                digest,
                tags,
                forced,
                actor,
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
                self.record(account, "login_rate_limited", "", "", client.to_string())
                    .await
            }
            Event::TokenIssued { account, client } => {
                self.record(account, "login", "", "token issued", client.to_string())
                    .await
            }
            _ => {}
        }
    }
}
