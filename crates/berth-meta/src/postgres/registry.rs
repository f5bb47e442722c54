//! [`MetadataStore`] on PostgreSQL: repositories, blob links with claims and tombstones,
//! manifests, tags, referrers, upload sessions and the collector's queries.
//!
//! Each write is one transaction. Writes that change a repository's manifests, tags or
//! references take its row lock (`FOR NO KEY UPDATE`: it excludes the other writers of
//! the repository but not the foreign-key checks of blob links); writes that decide
//! whether a digest's bytes are protected take the digest's advisory lock (see the
//! module docs of `postgres`).

use std::collections::HashMap;
use std::sync::Arc;

use berth_oci::{Digest, RepoName, Tag};
use bytes::Bytes;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{
    bases, execute, gate, get, limit, lock_digests, now, parse_digest, pg_err, query, query_one,
    query_opt, PgStore,
};
use crate::bases::{ImageBase, ImageLayers, StaleImage};
use crate::gc::{BlobHolders, Link, LinkCursor, ManifestNode};
use crate::{
    artifact_tags, BlobClaim, Gate, GateOutcome, MetaError, MetadataStore, NewManifest, Page,
    PendingTag, RecordedSignature, Referrer, RepositorySummary, RepositoryUsage, StoredManifest,
    TagChange, TagDetail, TagGuard, TagListing, TagTarget, Unlinked, CLAIM_STALE_SECS,
    TOMBSTONE_STALE_SECS,
};

async fn repo_id<C: GenericClient>(c: &C, repo: &str) -> Result<Option<i64>, MetaError> {
    query_opt(
        c,
        "looking up a repository",
        "SELECT id FROM repositories WHERE name = $1",
        &[&repo],
    )
    .await?
    .map(|r| get(&r, 0))
    .transpose()
}

/// The id of `repo`, its row locked against the other writers of its manifests and tags
/// until the transaction ends; `None` when it does not exist.
async fn lock_repo<C: GenericClient>(c: &C, repo: &str) -> Result<Option<i64>, MetaError> {
    query_opt(
        c,
        "locking a repository",
        "SELECT id FROM repositories WHERE name = $1 FOR NO KEY UPDATE",
        &[&repo],
    )
    .await?
    .map(|r| get(&r, 0))
    .transpose()
}

/// The id of `repo`, creating it; locked like [`lock_repo`] when `lock`.
async fn ensure_repo<C: GenericClient>(c: &C, repo: &str, lock: bool) -> Result<i64, MetaError> {
    let existing = if lock {
        lock_repo(c, repo).await?
    } else {
        repo_id(c, repo).await?
    };
    if let Some(id) = existing {
        return Ok(id);
    }
    let inserted = query_opt(
        c,
        "creating a repository",
        "INSERT INTO repositories (name, created_at) VALUES ($1, $2)
         ON CONFLICT (name) DO NOTHING RETURNING id",
        &[&repo, &now()],
    )
    .await?;
    if let Some(row) = inserted {
        // A row this transaction inserted is its own until commit: locked already.
        return get(&row, 0);
    }
    // Another transaction created it meanwhile (and has committed: the insert waited).
    let again = if lock {
        lock_repo(c, repo).await?
    } else {
        repo_id(c, repo).await?
    };
    again.ok_or_else(|| MetaError::Database {
        context: "creating a repository",
        message: format!("repository {repo} vanished while being created"),
    })
}

/// The manifest `digest` as a tag policy sees it: its version and its tags.
pub(super) async fn target_of<C: GenericClient>(
    c: &C,
    repo_id: i64,
    digest: &str,
) -> Result<TagTarget, MetaError> {
    let version: Option<String> = match query_opt(
        c,
        "reading a tag target",
        "SELECT version FROM manifests WHERE repo_id = $1 AND digest = $2",
        &[&repo_id, &digest],
    )
    .await?
    {
        Some(r) => get(&r, 0)?,
        None => None,
    };
    let tags = query(
        c,
        "reading a tag target",
        "SELECT name FROM tags WHERE repo_id = $1 AND digest = $2 ORDER BY name",
        &[&repo_id, &digest],
    )
    .await?
    .iter()
    .map(|r| get(r, 0))
    .collect::<Result<Vec<String>, _>>()?;
    Ok(TagTarget {
        digest: digest.to_owned(),
        version,
        tags,
    })
}

/// Where `tag` points now. `seen` keeps the targets read so far in one transaction.
pub(super) async fn tag_target<C: GenericClient>(
    c: &C,
    repo_id: i64,
    tag: &str,
    seen: &mut HashMap<String, TagTarget>,
) -> Result<Option<TagTarget>, MetaError> {
    let Some(row) = query_opt(
        c,
        "reading a tag",
        "SELECT digest FROM tags WHERE repo_id = $1 AND name = $2",
        &[&repo_id, &tag],
    )
    .await?
    else {
        return Ok(None);
    };
    let digest: String = get(&row, 0)?;
    if let Some(t) = seen.get(&digest) {
        return Ok(Some(t.clone()));
    }
    let target = target_of(c, repo_id, &digest).await?;
    seen.insert(digest, target.clone());
    Ok(Some(target))
}

/// Asks `guard` about removing every tag in `tags` of `repo`.
async fn check_deletions<C: GenericClient>(
    c: &C,
    guard: &Option<Arc<dyn TagGuard>>,
    repo: &str,
    repo_id: i64,
    tags: &[String],
) -> Result<(), MetaError> {
    let Some(g) = guard else { return Ok(()) };
    let mut seen = HashMap::new();
    for tag in tags.iter().filter(|t| g.concerns(t)) {
        let current = tag_target(c, repo_id, tag, &mut seen).await?;
        if current.is_none() {
            continue;
        }
        g.check(&TagChange {
            repo: repo.to_owned(),
            tag: tag.clone(),
            current,
            new: None,
        })
        .map_err(MetaError::TagRefused)?;
    }
    Ok(())
}

/// Points `tags` at `digest`, dropping pending tags of the same names.
async fn set_tags<C: GenericClient>(
    c: &C,
    repo_id: i64,
    digest: &str,
    tags: &[String],
    t: i64,
) -> Result<(), MetaError> {
    for name in tags {
        // `subject` and `hidden` depend on the name alone, so a tag that moves keeps them.
        let subject = artifact_tags::legacy_subject(name).map(|d| d.to_string());
        let hidden = artifact_tags::is_hidden(name);
        execute(
            c,
            "tagging",
            "INSERT INTO tags (repo_id, name, digest, updated_at, subject, hidden)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            &[&repo_id, name, &digest, &t, &subject, &hidden],
        )
        .await?;
        gate::unhold(c, repo_id, name).await?;
    }
    Ok(())
}

const MANIFEST_COLUMNS: &str = "m.digest, m.media_type, m.content, m.version, m.platform";

fn stored(r: &Row) -> Result<StoredManifest, MetaError> {
    let content: Vec<u8> = get(r, 2)?;
    Ok(StoredManifest {
        digest: parse_digest(get(r, 0)?)?,
        media_type: get(r, 1)?,
        content: Bytes::from(content),
        version: get(r, 3)?,
        platform: get(r, 4)?,
    })
}

/// Refuses with [`MetaError::BlobBusy`] while a fresh deletion tombstone of `digest`
/// exists, and removes a stale one. The caller holds the digest's lock.
async fn check_not_deleting<C: GenericClient>(c: &C, digest: &Digest) -> Result<(), MetaError> {
    let d = digest.to_string();
    let Some(row) = query_opt(
        c,
        "checking blob deletions",
        "SELECT created_at FROM blob_tombstones WHERE digest = $1",
        &[&d],
    )
    .await?
    else {
        return Ok(());
    };
    let at: i64 = get(&row, 0)?;
    if now() - at < TOMBSTONE_STALE_SECS as i64 {
        return Err(MetaError::BlobBusy(digest.clone()));
    }
    tracing::warn!(digest = %d, "removing a stale blob deletion tombstone");
    execute(
        c,
        "removing a stale tombstone",
        "DELETE FROM blob_tombstones WHERE digest = $1",
        &[&d],
    )
    .await?;
    Ok(())
}

async fn insert_link<C: GenericClient>(
    c: &C,
    repo_id: i64,
    digest: &str,
    size: u64,
) -> Result<(), MetaError> {
    execute(
        c,
        "linking a blob",
        "INSERT INTO blobs (repo_id, digest, size, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (repo_id, digest) DO NOTHING",
        &[&repo_id, &digest, &(size as i64), &now()],
    )
    .await?;
    Ok(())
}

fn claim_cutoff() -> i64 {
    now() - CLAIM_STALE_SECS as i64
}

/// Rows as digests.
fn digests(rows: &[Row]) -> Result<Vec<Digest>, MetaError> {
    rows.iter().map(|r| parse_digest(get(r, 0)?)).collect()
}

fn strings(rows: &[Row]) -> Result<Vec<String>, MetaError> {
    rows.iter().map(|r| get(r, 0)).collect()
}

#[async_trait::async_trait]
impl MetadataStore for PgStore {
    async fn ping(&self) -> Result<(), MetaError> {
        let c = self.client().await?;
        query_one(&c, "pinging the database", "SELECT 1", &[]).await?;
        Ok(())
    }

    async fn blob_link(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err("linking a blob"))?;
        let d = digest.to_string();
        lock_digests(&tx, std::slice::from_ref(&d)).await?;
        check_not_deleting(&tx, digest).await?;
        let id = ensure_repo(&tx, repo.as_str(), false).await?;
        insert_link(&tx, id, &d, size).await?;
        self.notify(&tx, repo.as_str()).await?;
        tx.commit().await.map_err(pg_err("linking a blob"))
    }

    async fn blob_claim(&self, digest: &Digest) -> Result<BlobClaim, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err("claiming a blob"))?;
        let d = digest.to_string();
        lock_digests(&tx, std::slice::from_ref(&d)).await?;
        check_not_deleting(&tx, digest).await?;
        // Stale claims' holders died or hung: forget them while here (indexed by age).
        execute(
            &tx,
            "forgetting stale claims",
            "DELETE FROM blob_claims WHERE created_at <= $1",
            &[&claim_cutoff()],
        )
        .await?;
        let row = query_one(
            &tx,
            "claiming a blob",
            "INSERT INTO blob_claims (id, digest, created_at) VALUES (gen_random_uuid()::text, $1, $2)
             RETURNING id",
            &[&d, &now()],
        )
        .await?;
        let id: String = get(&row, 0)?;
        tx.commit().await.map_err(pg_err("claiming a blob"))?;
        Ok(BlobClaim {
            id,
            digest: digest.clone(),
        })
    }

    async fn blob_link_claimed(
        &self,
        claim: &BlobClaim,
        repo: &RepoName,
        size: u64,
        upload: Option<&str>,
    ) -> Result<(), MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err("linking a blob"))?;
        let d = claim.digest.to_string();
        lock_digests(&tx, std::slice::from_ref(&d)).await?;
        // A stale claim may have let a deletion through: its bytes cannot be trusted.
        let ended = query_opt(
            &tx,
            "ending a claim",
            "DELETE FROM blob_claims WHERE id = $1 AND digest = $2 RETURNING created_at",
            &[&claim.id, &d],
        )
        .await?;
        let live = match ended {
            Some(row) => get::<i64>(&row, 0)? > claim_cutoff(),
            None => false,
        };
        if !live {
            return Err(MetaError::ClaimLost(claim.id.clone()));
        }
        let id = ensure_repo(&tx, repo.as_str(), false).await?;
        insert_link(&tx, id, &d, size).await?;
        if let Some(upload) = upload {
            execute(
                &tx,
                "ending an upload",
                "DELETE FROM uploads WHERE id = $1",
                &[&upload],
            )
            .await?;
        }
        self.notify(&tx, repo.as_str()).await?;
        tx.commit().await.map_err(pg_err("linking a blob"))
    }

    async fn blob_claim_release(&self, claim: &BlobClaim) -> Result<(), MetaError> {
        let c = self.client().await?;
        execute(
            &c,
            "releasing a claim",
            "DELETE FROM blob_claims WHERE id = $1",
            &[&claim.id],
        )
        .await?;
        Ok(())
    }

    async fn blob_deletion_done(&self, digest: &Digest) -> Result<(), MetaError> {
        let c = self.client().await?;
        execute(
            &c,
            "ending a blob deletion",
            "DELETE FROM blob_tombstones WHERE digest = $1",
            &[&digest.to_string()],
        )
        .await?;
        Ok(())
    }

    async fn blob_mount(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err("mounting a blob"))?;
        let d = digest.to_string();
        lock_digests(&tx, std::slice::from_ref(&d)).await?;
        let size = query_opt(
            &tx,
            "looking up a blob",
            "SELECT b.size FROM blobs b JOIN repositories r ON r.id = b.repo_id
             WHERE r.name = $1 AND b.digest = $2",
            &[&from.as_str(), &d],
        )
        .await?;
        let Some(size) = size else {
            return Ok(None);
        };
        let size = get::<i64>(&size, 0)? as u64;
        let to_id = ensure_repo(&tx, to.as_str(), false).await?;
        insert_link(&tx, to_id, &d, size).await?;
        self.notify(&tx, to.as_str()).await?;
        tx.commit().await.map_err(pg_err("mounting a blob"))?;
        Ok(Some(size))
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let c = self.client().await?;
        query_opt(
            &c,
            "looking up a blob",
            "SELECT b.size FROM blobs b JOIN repositories r ON r.id = b.repo_id
             WHERE r.name = $1 AND b.digest = $2",
            &[&repo.as_str(), &digest.to_string()],
        )
        .await?
        .map(|r| get::<i64>(&r, 0).map(|v| v as u64))
        .transpose()
    }

    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<Unlinked, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err("unlinking a blob"))?;
        let Some(id) = lock_repo(&tx, repo.as_str()).await? else {
            return Ok(Unlinked::NotLinked);
        };
        let d = digest.to_string();
        lock_digests(&tx, std::slice::from_ref(&d)).await?;
        let users = strings(
            &query(
                &tx,
                "checking blob references",
                "SELECT manifest FROM manifest_refs WHERE repo_id = $1 AND target = $2 AND kind = 0
                 ORDER BY manifest LIMIT 5",
                &[&id, &d],
            )
            .await?,
        )?;
        if !users.is_empty() {
            let linked = query_opt(
                &tx,
                "looking up a blob",
                "SELECT 1 FROM blobs WHERE repo_id = $1 AND digest = $2",
                &[&id, &d],
            )
            .await?;
            return match linked {
                Some(_) => Err(MetaError::BlobInUse(users)),
                None => Ok(Unlinked::NotLinked),
            };
        }
        let removed = execute(
            &tx,
            "unlinking a blob",
            "DELETE FROM blobs WHERE repo_id = $1 AND digest = $2",
            &[&id, &d],
        )
        .await?;
        if removed == 0 {
            return Ok(Unlinked::NotLinked);
        }
        let protected = query_one(
            &tx,
            "checking blob links",
            "SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = $1)
                 OR EXISTS (SELECT 1 FROM blob_claims WHERE digest = $1 AND created_at > $2)",
            &[&d, &claim_cutoff()],
        )
        .await?;
        let orphaned = !get::<bool>(&protected, 0)?;
        if orphaned {
            execute(
                &tx,
                "recording a blob deletion",
                "INSERT INTO blob_tombstones (digest, created_at) VALUES ($1, $2)
                 ON CONFLICT (digest) DO UPDATE SET created_at = excluded.created_at",
                &[&d, &now()],
            )
            .await?;
        }
        self.notify(&tx, repo.as_str()).await?;
        tx.commit().await.map_err(pg_err("unlinking a blob"))?;
        Ok(Unlinked::Removed { orphaned })
    }

    async fn blob_repositories(
        &self,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<String>, MetaError> {
        let c = self.client().await?;
        let limit = limit.min(i64::MAX as usize) as i64;
        strings(
            &query(
                &c,
                "finding repositories of a blob",
                "SELECT r.name FROM blobs b JOIN repositories r ON r.id = b.repo_id
                 WHERE b.digest = $1 ORDER BY r.name LIMIT $2",
                &[&digest.to_string(), &limit],
            )
            .await?,
        )
    }

    async fn repository_summaries(&self) -> Result<Vec<RepositorySummary>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "summarising repositories",
            "SELECT r.name,
                    (SELECT count(*) FROM tags t WHERE t.repo_id = r.id),
                    (SELECT coalesce(sum(b.size), 0)::bigint FROM blobs b WHERE b.repo_id = r.id),
                    (SELECT max(m.created_at) FROM manifests m WHERE m.repo_id = r.id)
             FROM repositories r ORDER BY r.name",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(RepositorySummary {
                name: get(r, 0)?,
                tags: get::<i64>(r, 1)? as u64,
                size: get::<i64>(r, 2)? as u64,
                last_push: get(r, 3)?,
            })
        })
        .collect()
    }

    async fn repository_usage(
        &self,
        repo: Option<&RepoName>,
    ) -> Result<Vec<RepositoryUsage>, MetaError> {
        // Each sum reads only the repository's rows (the primary keys start with
        // `repo_id`); `octet_length` of a BYTEA reads its stored length. Two statements
        // rather than `$1 IS NULL OR name = $1`, whose generic plan (chosen for a prepared
        // statement after a few runs) scans every repository.
        const COLUMNS: &str = "SELECT r.name,
                (SELECT count(*) FROM blobs b WHERE b.repo_id = r.id),
                (SELECT coalesce(sum(b.size), 0)::bigint FROM blobs b WHERE b.repo_id = r.id),
                (SELECT count(*) FROM manifests m WHERE m.repo_id = r.id),
                (SELECT coalesce(sum(octet_length(m.content)), 0)::bigint
                   FROM manifests m WHERE m.repo_id = r.id)
             FROM repositories r";
        let c = self.client().await?;
        let rows = match repo {
            Some(name) => {
                query(
                    &c,
                    "reading repository usage",
                    &format!("{COLUMNS} WHERE r.name = $1"),
                    &[&name.as_str()],
                )
                .await?
            }
            None => {
                query(
                    &c,
                    "reading repository usage",
                    &format!("{COLUMNS} ORDER BY r.name"),
                    &[],
                )
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(RepositoryUsage {
                    name: get(r, 0)?,
                    blobs: get::<i64>(r, 1)? as u64,
                    blob_bytes: get::<i64>(r, 2)? as u64,
                    manifests: get::<i64>(r, 3)? as u64,
                    manifest_bytes: get::<i64>(r, 4)? as u64,
                })
            })
            .collect()
    }

    async fn quota_reserve(
        &self,
        r: &crate::QuotaReservation,
        limit: u64,
    ) -> Result<crate::Reserved, MetaError> {
        self.reserve(r, limit).await
    }

    async fn quota_release(&self, id: &str) -> Result<(), MetaError> {
        self.release(id).await
    }

    async fn tag_details(&self, repo: &RepoName) -> Result<Vec<TagDetail>, MetaError> {
        let c = self.client().await?;
        query(
            &c,
            "reading tags",
            &format!(
                "SELECT {MANIFEST_COLUMNS}, t.name, t.updated_at
                 FROM tags t JOIN repositories r ON r.id = t.repo_id
                 JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
                 WHERE r.name = $1 ORDER BY t.name"
            ),
            &[&repo.as_str()],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(TagDetail {
                manifest: stored(r)?,
                tag: get(r, 5)?,
                updated_at: get(r, 6)?,
            })
        })
        .collect()
    }

    async fn tags_of(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<String>, MetaError> {
        let c = self.client().await?;
        match repo_id(&c, repo.as_str()).await? {
            Some(id) => Ok(target_of(&c, id, &digest.to_string()).await?.tags),
            None => Ok(Vec::new()),
        }
    }

    async fn stored_bytes(&self) -> Result<(u64, u64), MetaError> {
        let c = self.client().await?;
        let r = query_one(
            &c,
            "summing stored bytes",
            "SELECT count(*), coalesce(sum(size), 0)::bigint
             FROM (SELECT max(size) AS size FROM blobs GROUP BY digest) per_digest",
            &[],
        )
        .await?;
        Ok((get::<i64>(&r, 0)? as u64, get::<i64>(&r, 1)? as u64))
    }

    async fn manifest_put_gated(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tags: &[Tag],
        guard: Option<Arc<dyn TagGuard>>,
        gate: &Gate,
    ) -> Result<GateOutcome, MetaError> {
        let repo = repo.as_str();
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        let mut c = self.client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(pg_err("storing a manifest"))?;
        // The repository's lock orders this push against every other change of its tags,
        // from any replica: the guard's check below and the write it allows are atomic.
        let id = ensure_repo(&tx, repo, true).await?;
        let blobs: Vec<String> = m.blobs.iter().map(Digest::to_string).collect();
        let children: Vec<String> = m.children.iter().map(Digest::to_string).collect();
        let have_blobs = strings(
            &query(
                &tx,
                "checking references",
                "SELECT digest FROM blobs WHERE repo_id = $1 AND digest = ANY($2)",
                &[&id, &blobs],
            )
            .await?,
        )?;
        let have_children = strings(
            &query(
                &tx,
                "checking references",
                "SELECT digest FROM manifests WHERE repo_id = $1 AND digest = ANY($2)",
                &[&id, &children],
            )
            .await?,
        )?;
        let missing: Vec<Digest> = m
            .blobs
            .iter()
            .zip(&blobs)
            .filter(|(_, s)| !have_blobs.contains(s))
            .chain(
                m.children
                    .iter()
                    .zip(&children)
                    .filter(|(_, s)| !have_children.contains(s)),
            )
            .map(|(d, _)| d.clone())
            .collect();
        // A mirrored manifest's references are fetched later, when pulled.
        if !missing.is_empty() && !m.mirrored {
            return Err(MetaError::MissingReferences(missing));
        }
        let digest = m.digest.to_string();
        let t = now();
        if let Some(g) = guard
            .as_ref()
            .filter(|g| tags.iter().any(|t| g.concerns(t)))
        {
            let mut after = target_of(&tx, id, &digest).await?;
            after.version = m.version.clone().or(after.version);
            for name in &tags {
                if !after.tags.contains(name) {
                    after.tags.push(name.clone());
                }
            }
            after.tags.sort();
            let mut seen = HashMap::new();
            for name in tags.iter().filter(|t| g.concerns(t)) {
                let current = tag_target(&tx, id, name, &mut seen).await?;
                if current.as_ref().is_some_and(|c| c.digest == digest) {
                    continue;
                }
                g.check(&TagChange {
                    repo: repo.to_owned(),
                    tag: name.clone(),
                    current,
                    new: Some(after.clone()),
                })
                .map_err(MetaError::TagRefused)?;
            }
        }
        let subject = m.subject.as_ref().map(|d| d.to_string());
        execute(
            &tx,
            "storing a manifest",
            "INSERT INTO manifests (repo_id, digest, media_type, content, subject, artifact_type, annotations, created_at, version, platform)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (repo_id, digest) DO NOTHING",
            &[
                &id,
                &digest,
                &m.media_type,
                &&m.content[..],
                &subject,
                &m.artifact_type,
                &m.annotations_json,
                &t,
                &m.version,
                &m.platform,
            ],
        )
        .await?;
        for (targets, kind) in [(&blobs, 0i16), (&children, 1i16)] {
            if targets.is_empty() {
                continue;
            }
            execute(
                &tx,
                "storing manifest references",
                "INSERT INTO manifest_refs (repo_id, manifest, target, kind)
                 SELECT $1, $2, target, $4 FROM unnest($3::text[]) AS target
                 ON CONFLICT DO NOTHING",
                &[&id, &digest, targets, &kind],
            )
            .await?;
        }
        let mut outcome = GateOutcome::default();
        let hold = match &gate.hold_unless_signed_by {
            Some(keys) if !tags.is_empty() => !gate::signed_by(&tx, id, &digest, keys).await?,
            _ => false,
        };
        if hold {
            gate::hold(&tx, id, &digest, &tags, t).await?;
            outcome.held = tags;
        } else {
            set_tags(&tx, id, &digest, &tags, t).await?;
        }
        if let Some(record) = &gate.signs {
            gate::record(&tx, id, &digest, record, t).await?;
            let subject = record.subject.to_string();
            let (revealed, dropped) = gate::reveal(&tx, &guard, repo, id, &subject).await?;
            set_tags(&tx, id, &subject, &revealed, t).await?;
            outcome.revealed = revealed;
            outcome.dropped = dropped;
        }
        self.notify(&tx, repo).await?;
        tx.commit().await.map_err(pg_err("storing a manifest"))?;
        Ok(outcome)
    }

    async fn pending_tags(&self, repo: &RepoName) -> Result<Vec<PendingTag>, MetaError> {
        let c = self.client().await?;
        match repo_id(&c, repo.as_str()).await? {
            Some(id) => gate::pending(&c, id).await,
            None => Ok(Vec::new()),
        }
    }

    async fn recorded_signatures(
        &self,
        repo: &RepoName,
        subject: Option<&Digest>,
    ) -> Result<Vec<RecordedSignature>, MetaError> {
        let c = self.client().await?;
        let subject = subject.map(Digest::to_string);
        match repo_id(&c, repo.as_str()).await? {
            Some(id) => gate::signatures(&c, id, subject.as_deref()).await,
            None => Ok(Vec::new()),
        }
    }

    async fn index_parents(
        &self,
        repo: &RepoName,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<Digest>, MetaError> {
        let c = self.client().await?;
        let Some(id) = repo_id(&c, repo.as_str()).await? else {
            return Ok(Vec::new());
        };
        let limit = limit.min(i64::MAX as usize) as i64;
        digests(
            &query(
                &c,
                "finding indexes of a manifest",
                "SELECT manifest FROM manifest_refs
                 WHERE repo_id = $1 AND target = $2 AND kind = 1 AND manifest <> $2
                 ORDER BY manifest LIMIT $3",
                &[&id, &digest.to_string(), &limit],
            )
            .await?,
        )
    }

    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>, MetaError> {
        let c = self.client().await?;
        query_opt(
            &c,
            "reading a manifest",
            &format!(
                "SELECT {MANIFEST_COLUMNS} FROM manifests m
                 JOIN repositories r ON r.id = m.repo_id WHERE r.name = $1 AND m.digest = $2"
            ),
            &[&repo.as_str(), &digest.to_string()],
        )
        .await?
        .map(|r| stored(&r))
        .transpose()
    }

    async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>, MetaError> {
        let c = self.client().await?;
        query_opt(
            &c,
            "reading a manifest",
            &format!(
                "SELECT {MANIFEST_COLUMNS} FROM tags t
                 JOIN repositories r ON r.id = t.repo_id
                 JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
                 WHERE r.name = $1 AND t.name = $2"
            ),
            &[&repo.as_str(), &tag.as_str()],
        )
        .await?
        .map(|r| stored(&r))
        .transpose()
    }

    async fn manifest_delete(
        &self,
        repo: &RepoName,
        digest: &Digest,
        guard: Option<Arc<dyn TagGuard>>,
    ) -> Result<bool, MetaError> {
        let mut c = self.client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(pg_err("deleting a manifest"))?;
        let Some(id) = lock_repo(&tx, repo.as_str()).await? else {
            return Ok(false);
        };
        let d = digest.to_string();
        let holders = strings(
            &query(
                &tx,
                "checking indexes of a manifest",
                "SELECT manifest FROM manifest_refs
                 WHERE repo_id = $1 AND target = $2 AND kind = 1 AND manifest <> $2
                 ORDER BY manifest LIMIT 10",
                &[&id, &d],
            )
            .await?,
        )?;
        if !holders.is_empty() {
            return Err(MetaError::ManifestInUse(holders));
        }
        let tags = target_of(&tx, id, &d).await?.tags;
        check_deletions(&tx, &guard, repo.as_str(), id, &tags).await?;
        let n = execute(
            &tx,
            "deleting a manifest",
            "DELETE FROM manifests WHERE repo_id = $1 AND digest = $2",
            &[&id, &d],
        )
        .await?;
        for sql in [
            "DELETE FROM manifest_refs WHERE repo_id = $1 AND manifest = $2",
            "DELETE FROM tags WHERE repo_id = $1 AND digest = $2",
        ] {
            execute(&tx, "deleting a manifest", sql, &[&id, &d]).await?;
        }
        gate::forget_manifest(&tx, id, &d).await?;
        self.notify(&tx, repo.as_str()).await?;
        tx.commit().await.map_err(pg_err("deleting a manifest"))?;
        Ok(n > 0)
    }

    async fn tag_delete(
        &self,
        repo: &RepoName,
        tag: &Tag,
        guard: Option<Arc<dyn TagGuard>>,
    ) -> Result<bool, MetaError> {
        let tag = tag.to_string();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err("deleting a tag"))?;
        let Some(id) = lock_repo(&tx, repo.as_str()).await? else {
            return Ok(false);
        };
        check_deletions(&tx, &guard, repo.as_str(), id, std::slice::from_ref(&tag)).await?;
        if let Some(subject) = artifact_tags::legacy_subject(&tag) {
            gate::forget_legacy_tag(&tx, id, &tag, &subject.to_string()).await?;
        }
        let n = execute(
            &tx,
            "deleting a tag",
            "DELETE FROM tags WHERE repo_id = $1 AND name = $2",
            &[&id, &tag],
        )
        .await?;
        let pending = gate::unhold(&tx, id, &tag).await?;
        self.notify(&tx, repo.as_str()).await?;
        tx.commit().await.map_err(pg_err("deleting a tag"))?;
        Ok(n > 0 || pending)
    }

    async fn tag_list(
        &self,
        repo: &RepoName,
        page: &Page,
        listing: TagListing,
    ) -> Result<Option<Vec<String>>, MetaError> {
        let c = self.client().await?;
        let Some(id) = repo_id(&c, repo.as_str()).await? else {
            return Ok(None);
        };
        let last = page.last.clone().unwrap_or_default();
        let all = listing == TagListing::All;
        strings(
            &query(
                &c,
                "listing tags",
                "SELECT name FROM tags WHERE repo_id = $1 AND name > $2 AND ($4 OR NOT hidden)
                 ORDER BY name LIMIT $3",
                &[&id, &last, &limit(page.n), &all],
            )
            .await?,
        )
        .map(Some)
    }

    async fn repositories(&self, page: &Page) -> Result<Vec<String>, MetaError> {
        let c = self.client().await?;
        let last = page.last.clone().unwrap_or_default();
        strings(
            &query(
                &c,
                "listing repositories",
                "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2",
                &[&last, &limit(page.n)],
            )
            .await?,
        )
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, MetaError> {
        let c = self.client().await?;
        let Some(id) = repo_id(&c, repo.as_str()).await? else {
            return Ok(Vec::new());
        };
        // Manifests that name the subject, then those a cosign v2 tag of the subject
        // points at; UNION lists a manifest found both ways once.
        query(
            &c,
            "listing referrers",
            "SELECT m.digest, m.media_type, octet_length(m.content)::bigint, m.artifact_type, m.annotations, m.created_at
             FROM manifests m
             WHERE m.repo_id = $1 AND m.subject = $2 AND ($3::text IS NULL OR m.artifact_type = $3)
             UNION
             SELECT m.digest, m.media_type, octet_length(m.content)::bigint, m.artifact_type, m.annotations, m.created_at
             FROM tags t JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
             WHERE t.repo_id = $1 AND t.subject = $2 AND ($3::text IS NULL OR m.artifact_type = $3)
             ORDER BY 6, 1",
            &[&id, &subject.to_string(), &artifact_type],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(Referrer {
                digest: parse_digest(get(r, 0)?)?,
                media_type: get(r, 1)?,
                size: get::<i64>(r, 2)? as u64,
                artifact_type: get(r, 3)?,
                annotations_json: get::<Option<String>>(r, 4)?.unwrap_or_default(),
            })
        })
        .collect()
    }

    async fn upload_create(&self, id: &str, repo: &RepoName) -> Result<(), MetaError> {
        let c = self.client().await?;
        execute(
            &c,
            "registering an upload",
            "INSERT INTO uploads (id, repo, created_at, updated_at) VALUES ($1, $2, $3, $3)",
            &[&id, &repo.as_str(), &now()],
        )
        .await?;
        Ok(())
    }

    async fn upload_touch(&self, id: &str) -> Result<Option<String>, MetaError> {
        let c = self.client().await?;
        // One statement: refreshed only when a second or more old, so that the chunks of
        // one upload in quick succession do not each write.
        let row = query_opt(
            &c,
            "touching an upload",
            "WITH touched AS (
                 UPDATE uploads SET updated_at = $2 WHERE id = $1 AND updated_at <= $2::bigint - 1
                 RETURNING repo)
             SELECT repo FROM touched
             UNION ALL
             SELECT repo FROM uploads WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM touched)",
            &[&id, &now()],
        )
        .await?;
        row.map(|r| get(&r, 0)).transpose()
    }

    async fn upload_delete(&self, id: &str) -> Result<(), MetaError> {
        let c = self.client().await?;
        execute(
            &c,
            "deleting an upload",
            "DELETE FROM uploads WHERE id = $1",
            &[&id],
        )
        .await?;
        Ok(())
    }

    async fn uploads_idle(&self, idle_secs: u64) -> Result<Vec<String>, MetaError> {
        let cutoff = now() - idle_secs.min(i64::MAX as u64) as i64;
        let c = self.client().await?;
        strings(
            &query(
                &c,
                "listing idle uploads",
                "SELECT id FROM uploads WHERE updated_at <= $1",
                &[&cutoff],
            )
            .await?,
        )
    }

    async fn upload_ids(&self) -> Result<Vec<String>, MetaError> {
        let c = self.client().await?;
        strings(&query(&c, "listing uploads", "SELECT id FROM uploads", &[]).await?)
    }

    async fn gc_unreferenced_links(
        &self,
        after: Option<&LinkCursor>,
        linked_before: i64,
        limit: usize,
    ) -> Result<Vec<Link>, MetaError> {
        let (repo, digest) = after
            .map(|a| (a.repo.clone(), a.digest.to_string()))
            .unwrap_or_default();
        let limit = limit.clamp(1, i64::MAX as usize) as i64;
        let c = self.client().await?;
        query(
            &c,
            "listing unreferenced blob links",
            "SELECT r.name, b.digest, b.size, b.created_at
             FROM repositories r JOIN blobs b ON b.repo_id = r.id
             WHERE (r.name > $1 OR (r.name = $1 AND b.digest > $2))
               AND b.created_at <= $3
               AND NOT EXISTS (SELECT 1 FROM manifest_refs m
                               WHERE m.repo_id = b.repo_id AND m.target = b.digest AND m.kind = 0)
             ORDER BY r.name, b.digest LIMIT $4",
            &[&repo, &digest, &linked_before, &limit],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(Link {
                repo: get(r, 0)?,
                digest: parse_digest(get(r, 1)?)?,
                size: get::<i64>(r, 2)? as u64,
                linked_at: get(r, 3)?,
            })
        })
        .collect()
    }

    async fn gc_unlink(&self, links: &[Link], linked_before: i64) -> Result<Vec<Link>, MetaError> {
        let mut c = self.client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(pg_err("unlinking unreferenced blobs"))?;
        // Lock the repositories first, in name order: a push into one of them cannot add
        // a reference between the check below and the delete.
        let mut repos: Vec<&str> = links.iter().map(|l| l.repo.as_str()).collect();
        repos.sort_unstable();
        repos.dedup();
        let mut ids = HashMap::new();
        for name in repos {
            if let Some(id) = lock_repo(&tx, name).await? {
                ids.insert(name, id);
            }
        }
        let mut removed = Vec::new();
        for link in links {
            let Some(id) = ids.get(link.repo.as_str()) else {
                continue;
            };
            let n = execute(
                &tx,
                "unlinking unreferenced blobs",
                "DELETE FROM blobs
                 WHERE repo_id = $1 AND digest = $2 AND created_at <= $3
                   AND NOT EXISTS (SELECT 1 FROM manifest_refs m
                                   WHERE m.repo_id = blobs.repo_id AND m.target = blobs.digest AND m.kind = 0)",
                &[id, &link.digest.to_string(), &linked_before],
            )
            .await?;
            if n > 0 {
                removed.push(link.clone());
            }
        }
        let mut changed: Vec<&str> = removed.iter().map(|l| l.repo.as_str()).collect();
        changed.dedup();
        for repo in changed {
            self.notify(&tx, repo).await?;
        }
        tx.commit()
            .await
            .map_err(pg_err("unlinking unreferenced blobs"))?;
        Ok(removed)
    }

    async fn gc_tombstone(&self, digests: &[Digest]) -> Result<Vec<Digest>, MetaError> {
        let mut c = self.client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(pg_err("recording blob deletions"))?;
        let names: Vec<String> = digests.iter().map(Digest::to_string).collect();
        lock_digests(&tx, &names).await?;
        let t = now();
        let mut taken = Vec::new();
        for (d, s) in digests.iter().zip(&names) {
            // A live claim is a commit placing these bytes right now, on some replica; a
            // tombstone younger than TOMBSTONE_STALE_SECS belongs to a deleter at work.
            let row = query_opt(
                &tx,
                "recording blob deletions",
                "INSERT INTO blob_tombstones (digest, created_at)
                 SELECT $1, $2
                 WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE digest = $1)
                   AND NOT EXISTS (SELECT 1 FROM blob_claims WHERE digest = $1 AND created_at > $4)
                 ON CONFLICT (digest) DO UPDATE SET created_at = excluded.created_at
                 WHERE blob_tombstones.created_at <= $3
                 RETURNING digest",
                &[s, &t, &(t - TOMBSTONE_STALE_SECS as i64), &claim_cutoff()],
            )
            .await?;
            if row.is_some() {
                taken.push(d.clone());
            }
        }
        tx.commit()
            .await
            .map_err(pg_err("recording blob deletions"))?;
        Ok(taken)
    }

    async fn gc_deletions_done(&self, digests: &[Digest]) -> Result<(), MetaError> {
        let names: Vec<String> = digests.iter().map(Digest::to_string).collect();
        let c = self.client().await?;
        execute(
            &c,
            "ending blob deletions",
            "DELETE FROM blob_tombstones WHERE digest = ANY($1)",
            &[&names],
        )
        .await?;
        Ok(())
    }

    async fn gc_link_counts(&self, digests: &[Digest]) -> Result<Vec<u64>, MetaError> {
        let names: Vec<String> = digests.iter().map(Digest::to_string).collect();
        let c = self.client().await?;
        let counts: HashMap<String, i64> = query(
            &c,
            "counting blob links",
            "SELECT digest, count(*) FROM blobs WHERE digest = ANY($1) GROUP BY digest",
            &[&names],
        )
        .await?
        .iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
        .collect::<Result<_, MetaError>>()?;
        Ok(names
            .iter()
            .map(|n| counts.get(n).copied().unwrap_or(0) as u64)
            .collect())
    }

    async fn gc_manifests(&self, repo: &RepoName) -> Result<Vec<ManifestNode>, MetaError> {
        let c = self.client().await?;
        let Some(id) = repo_id(&c, repo.as_str()).await? else {
            return Ok(Vec::new());
        };
        let ctx = "reading the manifest graph";
        let mut tags: HashMap<String, Vec<String>> = HashMap::new();
        for r in query(
            &c,
            ctx,
            "SELECT digest, name FROM tags WHERE repo_id = $1 ORDER BY name",
            &[&id],
        )
        .await?
        {
            tags.entry(get(&r, 0)?).or_default().push(get(&r, 1)?);
        }
        let mut children: HashMap<String, Vec<Digest>> = HashMap::new();
        for r in query(
            &c,
            ctx,
            "SELECT manifest, target FROM manifest_refs WHERE repo_id = $1 AND kind = 1
             ORDER BY manifest, target",
            &[&id],
        )
        .await?
        {
            children
                .entry(get(&r, 0)?)
                .or_default()
                .push(parse_digest(get(&r, 1)?)?);
        }
        query(
            &c,
            ctx,
            "SELECT digest, created_at, subject FROM manifests WHERE repo_id = $1 ORDER BY digest",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| {
            let digest: String = get(r, 0)?;
            Ok(ManifestNode {
                tags: tags.remove(&digest).unwrap_or_default(),
                children: children.remove(&digest).unwrap_or_default(),
                subject: get::<Option<String>>(r, 2)?.map(parse_digest).transpose()?,
                created_at: get(r, 1)?,
                digest: parse_digest(digest)?,
            })
        })
        .collect()
    }

    async fn gc_delete_manifests(
        &self,
        repo: &RepoName,
        digests: &[Digest],
        created_before: i64,
    ) -> Result<Vec<Digest>, MetaError> {
        let ctx = "deleting unreferenced manifests";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err(ctx))?;
        let Some(id) = lock_repo(&tx, repo.as_str()).await? else {
            return Ok(Vec::new());
        };
        let mut deleted = Vec::new();
        for d in digests {
            let s = d.to_string();
            let n = execute(
                &tx,
                ctx,
                "DELETE FROM manifests
                 WHERE repo_id = $1 AND digest = $2 AND created_at <= $3
                   AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = $1 AND t.digest = $2)
                   AND NOT EXISTS (SELECT 1 FROM pending_tags p WHERE p.repo_id = $1 AND p.digest = $2)
                   AND NOT EXISTS (SELECT 1 FROM manifest_refs r
                                   WHERE r.repo_id = $1 AND r.target = $2 AND r.kind = 1 AND r.manifest <> $2)
                   AND (subject IS NULL OR NOT EXISTS (SELECT 1 FROM manifests s
                                                       WHERE s.repo_id = $1 AND s.digest = manifests.subject))",
                &[&id, &s, &created_before],
            )
            .await?;
            if n > 0 {
                execute(
                    &tx,
                    ctx,
                    "DELETE FROM manifest_refs WHERE repo_id = $1 AND manifest = $2",
                    &[&id, &s],
                )
                .await?;
                // What the publish gate recorded about it goes with it, and so does its
                // scan, done or still queued: nothing else would ever remove it, since no
                // `ManifestDeleted` event follows a collection.
                gate::forget_manifest(&tx, id, &s).await?;
                execute(
                    &tx,
                    ctx,
                    "DELETE FROM scans WHERE repo = $1 AND digest = $2",
                    &[&repo.as_str(), &s],
                )
                .await?;
                deleted.push(d.clone());
            }
        }
        if !deleted.is_empty() {
            self.notify(&tx, repo.as_str()).await?;
        }
        tx.commit().await.map_err(pg_err(ctx))?;
        Ok(deleted)
    }

    async fn gc_blob_holders(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobHolders>, MetaError> {
        let c = self.client().await?;
        let Some(id) = repo_id(&c, repo.as_str()).await? else {
            return Ok(None);
        };
        let ctx = "reading what holds a blob";
        let d = digest.to_string();
        let Some(link) = query_opt(
            &c,
            ctx,
            "SELECT size, created_at FROM blobs WHERE repo_id = $1 AND digest = $2",
            &[&id, &d],
        )
        .await?
        else {
            return Ok(None);
        };
        let manifests = digests(
            &query(
                &c,
                ctx,
                "SELECT manifest FROM manifest_refs WHERE repo_id = $1 AND target = $2 AND kind = 0
                 ORDER BY manifest",
                &[&id, &d],
            )
            .await?,
        )?;
        Ok(Some(BlobHolders {
            size: get::<i64>(&link, 0)? as u64,
            linked_at: get(&link, 1)?,
            manifests,
        }))
    }

    async fn image_layers_put(
        &self,
        repo: &RepoName,
        image: &ImageLayers,
    ) -> Result<Option<ImageBase>, MetaError> {
        let mut c = self.client().await?;
        let tx = c
            .transaction()
            .await
            .map_err(pg_err("recording image layers"))?;
        let id = ensure_repo(&tx, repo.as_str(), false).await?;
        let base = bases::put(&tx, id, image).await?;
        tx.commit()
            .await
            .map_err(pg_err("recording image layers"))?;
        Ok(base)
    }

    async fn stale_images(&self) -> Result<Vec<StaleImage>, MetaError> {
        let c = self.client().await?;
        bases::stale(&c).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use berth_oci::{Digest, RepoName};

    use super::execute;
    use crate::postgres::{testing, PgStore};
    use crate::{MetaError, MetadataStore, Unlinked, CLAIM_STALE_SECS, TOMBSTONE_STALE_SECS};

    /// Moves every claim and tombstone `secs` seconds into the past.
    async fn age(db: &PgStore, secs: u64) {
        let c = db.client().await.unwrap();
        let secs = secs as i64;
        for sql in [
            "UPDATE blob_claims SET created_at = created_at - $1",
            "UPDATE blob_tombstones SET created_at = created_at - $1",
        ] {
            execute(&c, "ageing", sql, &[&secs]).await.unwrap();
        }
    }

    /// Staleness needs rows aged by hand, which only the backend can do; the rest of the
    /// protocol is in the conformance suite. Claims here are rows another replica sees:
    /// a claim taken through one store protects the bytes from an unlink through another.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_tombstones_and_claims_are_ignored_and_claims_are_shared() {
        let Some(url) = testing::fresh_url() else {
            return;
        };
        let db = PgStore::open(&url).unwrap();
        let other = PgStore::open(&url).unwrap();
        let a = RepoName::parse("a").unwrap();
        let d = Digest::sha256(b"layer");
        // A deleter that died: its tombstone blocks for a while, then no more.
        db.blob_link(&a, &d, 5).await.unwrap();
        assert_eq!(
            db.blob_unlink(&a, &d).await.unwrap(),
            Unlinked::Removed { orphaned: true }
        );
        assert!(matches!(
            other.blob_claim(&d).await,
            Err(MetaError::BlobBusy(_))
        ));
        age(&db, TOMBSTONE_STALE_SECS + 1).await;
        let claim = other.blob_claim(&d).await.unwrap();
        db.blob_link(&a, &d, 5).await.unwrap();
        // The other replica's live claim keeps the bytes when the last link goes.
        assert_eq!(
            db.blob_unlink(&a, &d).await.unwrap(),
            Unlinked::Removed { orphaned: false }
        );
        other.blob_link_claimed(&claim, &a, 5, None).await.unwrap();
        // A placer that died: its claim protects the bytes for a while, then no more, and
        // it can no longer be linked.
        let claim = other.blob_claim(&d).await.unwrap();
        age(&db, CLAIM_STALE_SECS + 1).await;
        assert_eq!(
            db.blob_unlink(&a, &d).await.unwrap(),
            Unlinked::Removed { orphaned: true }
        );
        db.blob_deletion_done(&d).await.unwrap();
        assert!(matches!(
            other.blob_link_claimed(&claim, &a, 5, None).await,
            Err(MetaError::ClaimLost(_))
        ));
        assert_eq!(db.blob_size(&a, &d).await.unwrap(), None);
    }

    /// Two stores starting together on an empty database: one migrates, the other waits
    /// for it and finds the schema current.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_starting_together_migrate_once() {
        let Some(url) = testing::fresh_url() else {
            return;
        };
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || PgStore::open(&url).map(|_| ()))
            })
            .collect();
        for o in opens {
            o.join().unwrap().unwrap();
        }
        let db = PgStore::open(&url).unwrap();
        let c = db.client().await.unwrap();
        let rows = super::query(
            &c,
            "reading versions",
            "SELECT version FROM schema_version ORDER BY version",
            &[],
        )
        .await
        .unwrap();
        let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        let every: Vec<i32> = (1..=crate::postgres::migrate::MIGRATIONS.len() as i32).collect();
        assert_eq!(versions, every);
    }
}
