//! `berth migrate`: copies a whole registry from one pair of backends to another (the
//! embedded files + SQLite into S3 + PostgreSQL, and back) without changing one digest.
//!
//! Blobs are streamed from the source store into the destination through the
//! destination's own upload path, which verifies every digest before the blob becomes
//! visible; each repository link follows (a mount after the first). Manifests are
//! pushed through the destination's service with their exact bytes, children before
//! the indexes that list them, each with its visible tags (the tag policy is skipped:
//! the source already applied it). Accounts, grants, public patterns and the audit log
//! follow. Everything already present in the destination is skipped, so an interrupted
//! migration resumes where it stopped when run again.
//!
//! Not carried: download and request counters (per-hour analytics stay with the
//! source), upload sessions in flight, and tags waiting for a signature (listed in the
//! report: push their signature again, or publish again, on the destination).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use berth_meta::{AccountStore, AuditEvent, MetaError, MetadataStore, Page};
use berth_oci::{Digest, RepoName};
use berth_storage::BlobStore;
use serde::Serialize;

use crate::events::Actor;
use crate::service::{ManifestPush, Registry, RegistryError};

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Storage(#[from] berth_storage::StorageError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("stored name {0:?} is not a valid repository name")]
    BadName(String),
}

/// The source: a registry's stores, read only.
pub struct Source {
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn MetadataStore>,
    pub accounts: Arc<dyn AccountStore>,
}

/// The destination: a registry service over the new stores, and their accounts.
pub struct Destination {
    pub registry: Registry,
    pub meta: Arc<dyn MetadataStore>,
    pub accounts: Arc<dyn AccountStore>,
}

/// What a migration reports as it goes (a progress bar on a terminal).
pub trait Observer: Send + Sync {
    /// Before the blobs: how many the source holds and their bytes.
    fn plan(&self, _blobs: u64, _bytes: u64) {}
    /// A blob was handled: copied, or already present.
    fn blob(&self, _digest: &Digest, _size: u64, _copied: bool) {}
    /// A step began (manifests of a repository, accounts, ...).
    fn note(&self, _msg: &str) {}
}

/// An observer that reports nothing.
pub struct Silent;
impl Observer for Silent {}

/// What a migration did.
#[derive(Debug, Default, Serialize)]
pub struct MigrateReport {
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    pub blobs_present: u64,
    pub links_made: u64,
    pub manifests_pushed: u64,
    pub manifests_present: u64,
    pub tags: u64,
    pub repositories: u64,
    pub accounts_created: u64,
    pub public_patterns: u64,
    pub audit_entries: u64,
    /// `repository:tag` of tags waiting for a signature in the source: not carried.
    pub pending_tags_skipped: Vec<String>,
}

/// How many blobs one listing page holds.
const PAGE: usize = 1000;

/// A limit that means "all of them" to every store (SQL `LIMIT` takes a signed 64-bit
/// number).
const ALL: usize = 1 << 40;

/// Copies everything of `from` into `to` (see the module doc).
pub async fn migrate(
    from: &Source,
    to: &Destination,
    observer: &dyn Observer,
) -> Result<MigrateReport, MigrateError> {
    let mut report = MigrateReport::default();
    blobs(from, to, observer, &mut report).await?;
    manifests(from, to, observer, &mut report).await?;
    accounts(from, to, observer, &mut report).await?;
    Ok(report)
}

fn repo(name: &str) -> Result<RepoName, MigrateError> {
    RepoName::parse(name).map_err(|_| MigrateError::BadName(name.to_owned()))
}

/// Every blob with every repository link.
async fn blobs(
    from: &Source,
    to: &Destination,
    observer: &dyn Observer,
    report: &mut MigrateReport,
) -> Result<(), MigrateError> {
    let (count, bytes) = from.meta.stored_bytes().await?;
    observer.plan(count, bytes);
    let mut after: Option<Digest> = None;
    loop {
        let page = from.blobs.list(after.as_ref(), PAGE).await?;
        for blob in &page.blobs {
            let d = &blob.digest;
            let repos = from.meta.blob_repositories(d, ALL).await?;
            // A blob no repository links is garbage the source has not collected yet.
            let Some((first, rest)) = repos.split_first() else {
                continue;
            };
            let first = repo(first)?;
            let mut copied = false;
            if to.meta.blob_size(&first, d).await?.is_none() {
                // Bytes the destination already holds (linked elsewhere) are linked, not
                // copied again.
                let holder = to.meta.blob_repositories(d, 1).await?;
                let mounted = match holder.first() {
                    Some(other) => to.registry.mount(&repo(other)?, &first, d).await?,
                    None => false,
                };
                if mounted {
                    report.links_made += 1;
                } else {
                    let body = from.blobs.get(d, None).await?;
                    let size = to.registry.put_blob(&first, d, body.stream).await?;
                    report.blobs_copied += 1;
                    report.bytes_copied += size;
                    copied = true;
                }
            }
            for name in rest {
                let r = repo(name)?;
                if to.meta.blob_size(&r, d).await?.is_none() {
                    if !to.registry.mount(&first, &r, d).await? {
                        return Err(RegistryError::BlobUnknown {
                            repo: r.clone(),
                            digest: d.clone(),
                        }
                        .into());
                    }
                    report.links_made += 1;
                }
            }
            if !copied {
                report.blobs_present += 1;
            }
            observer.blob(d, blob.size, copied);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}

/// Every manifest of every repository, children first, with its visible tags.
async fn manifests(
    from: &Source,
    to: &Destination,
    observer: &dyn Observer,
    report: &mut MigrateReport,
) -> Result<(), MigrateError> {
    let mut last: Option<String> = None;
    let actor = Actor {
        name: "migrate".into(),
        client: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    };
    loop {
        let names = from
            .meta
            .repositories(&Page {
                n: Some(PAGE),
                last: last.clone(),
            })
            .await?;
        if names.is_empty() {
            return Ok(());
        }
        for name in &names {
            observer.note(&format!("manifests of {name}"));
            report.repositories += 1;
            let r = repo(name)?;
            let nodes = from.meta.gc_manifests(&r).await?;
            let order = children_first(&nodes);
            for i in order {
                let node = &nodes[i];
                let present = to
                    .meta
                    .manifest_by_digest(&r, &node.digest)
                    .await?
                    .is_some();
                let have: HashSet<String> = if present {
                    to.meta
                        .tags_of(&r, &node.digest)
                        .await?
                        .into_iter()
                        .collect()
                } else {
                    HashSet::new()
                };
                let missing: Vec<String> = node
                    .tags
                    .iter()
                    .filter(|t| !have.contains(*t))
                    .cloned()
                    .collect();
                report.tags += node.tags.len() as u64;
                if present && missing.is_empty() {
                    report.manifests_present += 1;
                    continue;
                }
                let Some(stored) = from.meta.manifest_by_digest(&r, &node.digest).await? else {
                    // Deleted in the source since the listing: nothing to carry.
                    continue;
                };
                to.registry
                    .push_manifest(
                        &r,
                        ManifestPush {
                            reference: node.digest.to_string(),
                            tags: missing,
                            content_type: Some(stored.media_type.clone()),
                            body: stored.content.clone(),
                            force: true,
                            may_force: true,
                            actor: actor.clone(),
                        },
                    )
                    .await?;
                if present {
                    report.manifests_present += 1;
                } else {
                    report.manifests_pushed += 1;
                }
            }
            for p in from.meta.pending_tags(&r).await? {
                report
                    .pending_tags_skipped
                    .push(format!("{name}:{}", p.tag));
            }
        }
        last = names.last().cloned();
    }
}

/// Indexes of `nodes` in an order where every child comes before the indexes listing it.
fn children_first(nodes: &[berth_meta::gc::ManifestNode]) -> Vec<usize> {
    let at: HashMap<&Digest, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (&n.digest, i))
        .collect();
    let mut done = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    for start in 0..nodes.len() {
        // Depth first without recursion: (node, whether its children are queued).
        let mut stack = vec![(start, false)];
        while let Some((i, expanded)) = stack.pop() {
            if done[i] {
                continue;
            }
            if expanded {
                done[i] = true;
                order.push(i);
                continue;
            }
            stack.push((i, true));
            for c in &nodes[i].children {
                if let Some(&j) = at.get(c) {
                    if !done[j] {
                        stack.push((j, false));
                    }
                }
            }
        }
    }
    order
}

/// Accounts with grants, public patterns, and the audit log.
async fn accounts(
    from: &Source,
    to: &Destination,
    observer: &dyn Observer,
    report: &mut MigrateReport,
) -> Result<(), MigrateError> {
    observer.note("accounts");
    for a in from.accounts.account_list().await? {
        match to.accounts.account_create(&a).await {
            Ok(()) => report.accounts_created += 1,
            Err(MetaError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        for g in from.accounts.grants(&a.name).await? {
            to.accounts
                .grant_set(&a.name, &g.pattern, &g.actions)
                .await?;
        }
    }
    for p in from.accounts.public_patterns().await? {
        to.accounts.public_add(&p).await?;
        report.public_patterns += 1;
    }
    observer.note("audit log");
    // Where a previous run stopped: its last entry (newest by insertion). Entries are
    // compared over an hour before its time, since times are not strictly in insertion
    // order (refusals counted over a minute are written at its end); entries found in
    // the destination are skipped one for one.
    let newest = to.accounts.audit_list(0, 1).await?;
    let since = newest
        .first()
        .map(|e| e.at.saturating_sub(AUDIT_SLACK_SECS))
        .unwrap_or(0);
    let mut present: HashMap<AuditKey, u64> = HashMap::new();
    if !newest.is_empty() {
        for e in to.accounts.audit_list(since, ALL).await? {
            *present.entry(key(&e)).or_default() += 1;
        }
    }
    // Oldest first (as `audit_list` answers), so that the destination's log keeps the
    // source's order and an interruption leaves a prefix of it. (This once reversed the
    // list, copying the log newest first.)
    let entries = from.accounts.audit_list(since, ALL).await?;
    for e in entries {
        if let Some(n) = present.get_mut(&key(&e)) {
            if *n > 0 {
                *n -= 1;
                continue;
            }
        }
        to.accounts.audit_append(&e).await?;
        report.audit_entries += 1;
    }
    Ok(())
}

/// How far before the destination's last entry a resumed run compares entries.
const AUDIT_SLACK_SECS: i64 = 3600;

/// An audit entry's fields, for finding it in the destination.
type AuditKey = (i64, String, String, String, String, String);

fn key(e: &AuditEvent) -> AuditKey {
    (
        e.at,
        e.actor.clone(),
        e.action.clone(),
        e.target.clone(),
        e.detail.clone(),
        e.client.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_meta::gc::ManifestNode;

    fn node(n: u8, children: &[u8]) -> ManifestNode {
        let d = |n: u8| Digest::sha256(&[n]);
        ManifestNode {
            digest: d(n),
            created_at: 0,
            tags: Vec::new(),
            children: children.iter().map(|c| d(*c)).collect(),
            subject: None,
        }
    }

    #[test]
    fn children_come_before_their_indexes() {
        // 0 lists 1 and 2; 3 lists 0 (an index of indexes); 4 stands alone; 5 lists a
        // child the repository does not hold.
        let nodes = vec![
            node(0, &[1, 2]),
            node(1, &[]),
            node(2, &[]),
            node(3, &[0]),
            node(4, &[]),
            node(5, &[9]),
        ];
        let order = children_first(&nodes);
        assert_eq!(order.len(), nodes.len());
        let pos = |i: usize| order.iter().position(|&x| x == i).unwrap();
        assert!(pos(1) < pos(0) && pos(2) < pos(0));
        assert!(pos(0) < pos(3));
        let unique: HashSet<_> = order.iter().collect();
        assert_eq!(unique.len(), nodes.len());
    }
}
