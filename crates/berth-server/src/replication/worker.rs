//! The replication worker: claims due rows of the queue and replicates each one, then
//! records the outcome (deleted on success; retried with exponential backoff and
//! jitter, or dead after the rule's `give_up_after`, on failure).
//!
//! One task per server. It claims up to [`BATCH`] rows at once, groups them by (rule,
//! repository) and works [`CONCURRENCY`] groups at a time, the rows of one group one
//! after another in queue order (so a tag's moves and a repository's signatures never
//! race each other at the target). It sleeps until rows are queued (the subscriber
//! wakes it) or [`POLL`] passes, which is also how retries and rows queued by `berth
//! admin replicate` on a data directory are found. Outcomes are recorded without an
//! fsync: a success forgotten by a crash is replicated again and finds the target
//! holding everything (nothing written twice), a forgotten failure only retries sooner.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_client::copy::{copy_image, CopyOptions};
use berth_client::progress::Quiet;
use berth_client::ClientError;
use berth_meta::{artifact_tags, ReplicationOp, ReplicationTask};
use berth_oci::{Digest, ParsedManifest, Reference, RepoName, Tag};

use super::source::{LocalSource, Target};
use super::{Replication, Rule, LEASE_MS};
use crate::events::{Event, Events};
use crate::metrics::Metrics;
use crate::service::Registry;
use crate::webhooks::delivery::{jitter, retry_delay};
use crate::webhooks::now_ms;

/// How long the worker waits for new rows before looking for due retries again.
pub const POLL: Duration = Duration::from_secs(1);
/// Rows claimed at once.
const BATCH: usize = 64;
/// (rule, repository) groups replicated at once.
pub const CONCURRENCY: usize = 4;
/// Blobs one copy moves at once.
const JOBS: usize = 4;
/// How often the pending gauges are refreshed while the queue is idle.
const GAUGE_EVERY: Duration = Duration::from_secs(15);

/// What one replication did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// The target now holds the change: `written` manifests were written (those it
    /// held already were not).
    Replicated { written: usize },
    /// Nothing to do: the reference is gone here (a later change replaces it), or it is
    /// a referrer whose subject is not at the target yet (it travels with its subject).
    Nothing(&'static str),
}

/// Replicates due rows until the task is aborted (at shutdown; a copy in flight then is
/// made again at the next start).
pub async fn replicate_forever(
    repl: Arc<Replication>,
    registry: Arc<Registry>,
    events: Events,
    metrics: Arc<Metrics>,
) {
    let mut gauges_at: Option<Instant> = None;
    loop {
        let due = match repl
            .store
            .replication_claim(now_ms(), LEASE_MS, BATCH)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the replication queue");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        if due.is_empty() {
            if gauges_at.is_none_or(|t| t.elapsed() >= GAUGE_EVERY) {
                refresh_gauges(&repl, &metrics).await;
                gauges_at = Some(Instant::now());
            }
            let _ = tokio::time::timeout(POLL, repl.wake.notified()).await;
            continue;
        }
        let mut groups: Vec<Vec<ReplicationTask>> = Vec::new();
        for t in due {
            match groups
                .iter_mut()
                .find(|g| g[0].rule == t.rule && g[0].repo == t.repo)
            {
                Some(g) => g.push(t),
                None => groups.push(vec![t]),
            }
        }
        // Each group is a task of its own (owned handles), at most CONCURRENCY at once.
        let mut running = tokio::task::JoinSet::new();
        for group in groups {
            while running.len() >= CONCURRENCY {
                let _ = running.join_next().await;
            }
            let (repl, registry, events) = (repl.clone(), registry.clone(), events.clone());
            running.spawn(async move {
                for t in group {
                    attempt(&repl, &registry, &events, t).await;
                }
            });
        }
        while running.join_next().await.is_some() {}
        refresh_gauges(&repl, &metrics).await;
        gauges_at = Some(Instant::now());
    }
}

async fn refresh_gauges(repl: &Replication, metrics: &Metrics) {
    match repl.store.replication_status().await {
        Ok(status) => {
            for r in &repl.rules {
                let pending = status
                    .iter()
                    .find(|s| s.rule == r.name)
                    .map_or(0, |s| s.pending);
                metrics.replication_pending(&r.name, pending);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the replication status for the metrics"),
    }
}

/// One attempt of one row, with its outcome recorded and announced.
async fn attempt(
    repl: &Replication,
    registry: &Arc<Registry>,
    events: &Events,
    t: ReplicationTask,
) {
    let outcome = match repl.rule(&t.rule) {
        Some(rule) => replicate(rule, registry, &t).await,
        // Kept, dead, for when the rule is configured again.
        None => Err("no replication rule of this name is configured".to_owned()),
    };
    let now = now_ms();
    let recorded = match &outcome {
        Ok(done) => {
            tracing::debug!(rule = %t.rule, repository = %t.repo, reference = %t.reference,
                op = t.op.as_str(), outcome = ?done, "replicated");
            repl.store.replication_done(t.id, t.seq, now).await
        }
        Err(error) => {
            let retry_at = repl.rule(&t.rule).and_then(|r| {
                let delay = retry_delay(t.attempts + 1, r.retry_max_interval, jitter());
                let at = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                let give_up = i64::try_from(r.give_up_after.as_millis()).unwrap_or(i64::MAX);
                (at.saturating_sub(t.created_ms) < give_up).then_some(at)
            });
            if retry_at.is_none() {
                tracing::error!(rule = %t.rule, repository = %t.repo, reference = %t.reference,
                    op = t.op.as_str(), attempts = t.attempts + 1, %error,
                    "replication given up (dead); `berth admin replication status` shows it, `berth admin replicate --rule NAME --all` queues it again");
            } else {
                tracing::warn!(rule = %t.rule, repository = %t.repo, reference = %t.reference,
                    op = t.op.as_str(), attempts = t.attempts + 1, %error,
                    "replication failed; will retry");
            }
            repl.store
                .replication_failed(t.id, t.seq, error, retry_at, now)
                .await
        }
    };
    if let Err(e) = recorded {
        tracing::error!(error = %e, rule = %t.rule, "cannot record a replication attempt");
    }
    events
        .emit(Event::Replicated {
            rule: t.rule.clone(),
            repo: t.repo.clone(),
            reference: t.reference.clone(),
            delete: t.op == ReplicationOp::Delete,
            error: outcome.err(),
        })
        .await;
}

/// Makes the target hold the row's change; `Err` says why not, for the status.
pub(crate) async fn replicate(
    rule: &Rule,
    registry: &Arc<Registry>,
    t: &ReplicationTask,
) -> Result<Done, String> {
    let client = rule
        .client
        .as_ref()
        .ok_or_else(|| "this rule has no target client".to_owned())?;
    let repo = RepoName::parse(&t.repo).map_err(|e| format!("repository {:?}: {e}", t.repo))?;
    let target = rule.target_repo(&t.repo)?;
    let reference = if t.reference.contains(':') {
        Reference::Digest(
            t.reference
                .parse::<Digest>()
                .map_err(|e| format!("digest {:?}: {e}", t.reference))?,
        )
    } else {
        Reference::Tag(Tag::parse(&t.reference).map_err(|e| format!("tag {:?}: {e}", t.reference))?)
    };
    let shown = |e: ClientError| e.to_string();
    match t.op {
        ReplicationOp::Delete => {
            let deleted = match &reference {
                Reference::Tag(tag) => client.delete_tag(&target, tag).await,
                Reference::Digest(d) => match client.delete_manifest(&target, d).await {
                    Ok(()) => Ok(true),
                    Err(ClientError::NotFound(_)) => Ok(false),
                    Err(e) => Err(e),
                },
            }
            .map_err(shown)?;
            Ok(if deleted {
                Done::Replicated { written: 0 }
            } else {
                Done::Nothing("not at the target")
            })
        }
        ReplicationOp::Copy => {
            let Some(stored) = registry
                .stored_manifest(&repo, &reference)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Ok(Done::Nothing("no longer here"));
            };
            // A referrer queued alone follows its subject: copied once the subject is
            // there, else carried by the subject's copy.
            let subject = match &reference {
                Reference::Tag(tag) => artifact_tags::legacy_subject(tag.as_str()),
                Reference::Digest(_) => {
                    ParsedManifest::parse(&stored.content, Some(&stored.media_type))
                        .ok()
                        .and_then(|p| p.subject.map(|s| s.digest))
                }
            };
            if let Some(subject) = subject {
                let there = client
                    .head_manifest(&target, &Reference::Digest(subject))
                    .await
                    .map_err(shown)?;
                if there.is_none() {
                    return Ok(Done::Nothing("its subject is not at the target"));
                }
            }
            let tag = match &reference {
                Reference::Tag(tag) => Some(tag.clone()),
                Reference::Digest(_) => None,
            };
            let src = LocalSource::new(registry.clone(), repo, reference);
            let dst = Target::new(client.clone(), target, tag);
            let opts = CopyOptions {
                jobs: JOBS,
                referrers: rule.referrers,
                ..CopyOptions::default()
            };
            copy_image(&src, &dst, &opts, Arc::new(Quiet))
                .await
                .map_err(shown)?;
            Ok(Done::Replicated {
                written: dst.written(),
            })
        }
    }
}
