//! [`MetadataStore`] on SQLite: repositories, blob links, manifests, tags, referrers and
//! upload sessions.

use std::collections::HashMap;
use std::sync::Arc;

use berth_oci::{Digest, RepoName, Tag};
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};

use super::{bases, blobs, db_err, gate, gc, limit, now, parse_digest, quota, SqliteStore};
use crate::bases::{ImageBase, ImageLayers, StaleImage};
use crate::gc::{BlobHolders, Link, LinkCursor, ManifestNode};
use crate::{
    artifact_tags, BlobClaim, Gate, GateOutcome, MetaError, MetadataStore, NewManifest, Page,
    PendingTag, RecordedSignature, Referrer, RepositorySummary, StoredManifest, TagChange,
    TagDetail, TagGuard, TagListing, TagTarget, Unlinked,
};

pub(super) fn repo_id(conn: &Connection, repo: &str) -> Result<Option<i64>, MetaError> {
    conn.prepare_cached("SELECT id FROM repositories WHERE name = ?1")
        .and_then(|mut s| s.query_row([repo], |r| r.get(0)).optional())
        .map_err(db_err("looking up a repository"))
}

pub(super) fn ensure_repo(tx: &rusqlite::Transaction<'_>, repo: &str) -> Result<i64, MetaError> {
    if let Some(id) = repo_id(tx, repo)? {
        return Ok(id);
    }
    tx.execute(
        "INSERT INTO repositories (name, created_at) VALUES (?1, ?2)",
        params![repo, now()],
    )
    .map_err(db_err("creating a repository"))?;
    Ok(tx.last_insert_rowid())
}

/// The manifest `digest` as a tag policy sees it: its version and its tags.
pub(super) fn target_of(
    conn: &Connection,
    repo_id: i64,
    digest: &str,
) -> Result<TagTarget, MetaError> {
    let version: Option<String> = conn
        .prepare_cached("SELECT version FROM manifests WHERE repo_id = ?1 AND digest = ?2")
        .and_then(|mut s| {
            s.query_row(params![repo_id, digest], |r| r.get(0))
                .optional()
        })
        .map_err(db_err("reading a tag target"))?
        .flatten();
    let tags = conn
        .prepare_cached("SELECT name FROM tags WHERE repo_id = ?1 AND digest = ?2 ORDER BY name")
        .and_then(|mut s| {
            s.query_map(params![repo_id, digest], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()
        })
        .map_err(db_err("reading a tag target"))?;
    Ok(TagTarget {
        digest: digest.to_owned(),
        version,
        tags,
    })
}

/// Where `tag` points now. `seen` keeps the targets read so far in one transaction: the
/// tags being changed often share a target, and reading one lists all of its tags.
fn tag_target(
    conn: &Connection,
    repo_id: i64,
    tag: &str,
    seen: &mut HashMap<String, TagTarget>,
) -> Result<Option<TagTarget>, MetaError> {
    let digest: Option<String> = conn
        .prepare_cached("SELECT digest FROM tags WHERE repo_id = ?1 AND name = ?2")
        .and_then(|mut s| s.query_row(params![repo_id, tag], |r| r.get(0)).optional())
        .map_err(db_err("reading a tag"))?;
    let Some(digest) = digest else {
        return Ok(None);
    };
    if let Some(t) = seen.get(&digest) {
        return Ok(Some(t.clone()));
    }
    let target = target_of(conn, repo_id, &digest)?;
    seen.insert(digest, target.clone());
    Ok(Some(target))
}

/// Asks `guard` about removing every tag in `tags` of `repo`.
fn check_deletions(
    conn: &Connection,
    guard: &Option<Arc<dyn TagGuard>>,
    repo: &str,
    repo_id: i64,
    tags: &[String],
) -> Result<(), MetaError> {
    let Some(g) = guard else { return Ok(()) };
    let mut seen = HashMap::new();
    for tag in tags.iter().filter(|t| g.concerns(t)) {
        let current = tag_target(conn, repo_id, tag, &mut seen)?;
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

/// Points `tags` at `digest`, dropping pending tags of the same names (the newest push
/// of a name decides).
fn set_tags(
    tx: &Connection,
    repo_id: i64,
    digest: &str,
    tags: &[String],
    t: i64,
) -> Result<(), MetaError> {
    // `subject` and `hidden` depend on the name alone, so a tag that moves keeps them.
    let mut tag = tx
        .prepare_cached(
            "INSERT INTO tags (repo_id, name, digest, updated_at, subject, hidden)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
        )
        .map_err(db_err("tagging"))?;
    for name in tags {
        let subject = artifact_tags::legacy_subject(name).map(|d| d.to_string());
        let hidden = artifact_tags::is_hidden(name);
        tag.execute(params![repo_id, name, digest, t, subject, hidden])
            .map_err(db_err("tagging"))?;
        gate::unhold(tx, repo_id, name)?;
    }
    Ok(())
}

type ManifestRow = (String, String, Vec<u8>, Option<String>, Option<String>);

fn manifest_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ManifestRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn stored(row: ManifestRow) -> Result<StoredManifest, MetaError> {
    Ok(StoredManifest {
        digest: parse_digest(row.0)?,
        media_type: row.1,
        content: Bytes::from(row.2),
        version: row.3,
        platform: row.4,
    })
}

#[async_trait::async_trait]
impl MetadataStore for SqliteStore {
    async fn ping(&self) -> Result<(), MetaError> {
        // A reader connection and one trivial query: the file opens and answers.
        self.read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(|_| ())
                .map_err(db_err("pinging the database"))
        })
        .await
    }

    async fn blob_link(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetaError> {
        let (repo, digest) = (repo.clone(), digest.clone());
        self.write(move |tx| blobs::link(tx, &repo, &digest, size))
            .await
    }

    async fn blob_claim(&self, digest: &Digest) -> Result<BlobClaim, MetaError> {
        let (digest, claims) = (digest.clone(), self.inner.claims.clone());
        // Lazy: the claim itself is in memory; the transaction only reads (and may remove
        // a stale tombstone, which a power loss would merely leave to go stale again).
        self.write_lazy(move |tx| blobs::claim(tx, &claims, &digest))
            .await
    }

    async fn blob_link_claimed(
        &self,
        claim: &BlobClaim,
        repo: &RepoName,
        size: u64,
        upload: Option<&str>,
    ) -> Result<(), MetaError> {
        let (claim, repo, upload) = (claim.clone(), repo.clone(), upload.map(str::to_owned));
        let claims = self.inner.claims.clone();
        self.write(move |tx| {
            blobs::link_claimed(tx, &claims, &claim, &repo, size)?;
            if let Some(id) = upload {
                tx.prepare_cached("DELETE FROM uploads WHERE id = ?1")
                    .and_then(|mut s| s.execute([id]))
                    .map_err(db_err("ending an upload"))?;
            }
            Ok(())
        })
        .await
    }

    async fn blob_claim_release(&self, claim: &BlobClaim) -> Result<(), MetaError> {
        let (claim, claims) = (claim.clone(), self.inner.claims.clone());
        // On the writer thread, ordered with the unlinks and links it races.
        self.write_lazy(move |_| {
            blobs::release(&claims, &claim);
            Ok(())
        })
        .await
    }

    async fn blob_deletion_done(&self, digest: &Digest) -> Result<(), MetaError> {
        let digest = digest.clone();
        // Lazy: a tombstone left by a power loss goes stale and is then ignored.
        self.write_lazy(move |tx| blobs::deletion_done(tx, &digest))
            .await
    }

    async fn blob_mount(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, MetaError> {
        let (from, to, digest) = (from.clone(), to.clone(), digest.clone());
        self.write(move |tx| blobs::mount(tx, &from, &to, &digest))
            .await
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT b.size FROM blobs b JOIN repositories r ON r.id = b.repo_id
                 WHERE r.name = ?1 AND b.digest = ?2",
            )
            .and_then(|mut s| {
                s.query_row([repo, digest], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map(|o| o.map(|v| v as u64))
            .map_err(db_err("looking up a blob"))
        })
        .await
    }

    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<Unlinked, MetaError> {
        let (repo, digest, claims) = (repo.clone(), digest.clone(), self.inner.claims.clone());
        self.write(move |tx| blobs::unlink(tx, &claims, &repo, &digest))
            .await
    }

    async fn blob_repositories(
        &self,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<String>, MetaError> {
        let digest = digest.to_string();
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(move |c| {
            c.prepare_cached(
                "SELECT r.name FROM blobs b JOIN repositories r ON r.id = b.repo_id
                 WHERE b.digest = ?1 ORDER BY r.name LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![digest, limit], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()
            })
            .map_err(db_err("finding repositories of a blob"))
        })
        .await
    }

    async fn repository_summaries(&self) -> Result<Vec<RepositorySummary>, MetaError> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT r.name,
                        (SELECT count(*) FROM tags t WHERE t.repo_id = r.id),
                        (SELECT coalesce(sum(b.size), 0) FROM blobs b WHERE b.repo_id = r.id),
                        (SELECT max(m.created_at) FROM manifests m WHERE m.repo_id = r.id)
                 FROM repositories r ORDER BY r.name",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok(RepositorySummary {
                        name: r.get(0)?,
                        tags: r.get::<_, i64>(1)? as u64,
                        size: r.get::<_, i64>(2)? as u64,
                        last_push: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("summarising repositories"))
        })
        .await
    }

    async fn repository_usage(
        &self,
        repo: Option<&RepoName>,
    ) -> Result<Vec<crate::RepositoryUsage>, MetaError> {
        let repo = repo.map(|r| r.to_string());
        self.read(move |c| {
            // Each sum reads only the repository's rows (the primary keys start with
            // `repo_id`); `length` of a BLOB reads its size, not its bytes.
            c.prepare_cached(
                "SELECT r.name,
                        (SELECT count(*) FROM blobs b WHERE b.repo_id = r.id),
                        (SELECT coalesce(sum(b.size), 0) FROM blobs b WHERE b.repo_id = r.id),
                        (SELECT count(*) FROM manifests m WHERE m.repo_id = r.id),
                        (SELECT coalesce(sum(length(m.content)), 0) FROM manifests m WHERE m.repo_id = r.id)
                 FROM repositories r WHERE ?1 IS NULL OR r.name = ?1 ORDER BY r.name",
            )
            .and_then(|mut s| {
                s.query_map([repo], |r| {
                    Ok(crate::RepositoryUsage {
                        name: r.get(0)?,
                        blobs: r.get::<_, i64>(1)? as u64,
                        blob_bytes: r.get::<_, i64>(2)? as u64,
                        manifests: r.get::<_, i64>(3)? as u64,
                        manifest_bytes: r.get::<_, i64>(4)? as u64,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("reading repository usage"))
        })
        .await
    }

    async fn quota_reserve(
        &self,
        r: &crate::QuotaReservation,
        limit: u64,
    ) -> Result<crate::Reserved, MetaError> {
        let (r, held) = (r.clone(), self.inner.reservations.clone());
        // Lazy: the reservation itself is in memory; the transaction only reads, on the
        // writer thread so that it is ordered against every link and manifest write.
        self.write_lazy(move |tx| quota::reserve(tx, &held, &r, limit))
            .await
    }

    async fn quota_release(&self, id: &str) -> Result<(), MetaError> {
        self.inner.reservations.release(id);
        Ok(())
    }

    async fn tag_details(&self, repo: &RepoName) -> Result<Vec<TagDetail>, MetaError> {
        let repo = repo.to_string();
        self.read(move |c| {
            let rows = c
                .prepare_cached(
                    "SELECT m.digest, m.media_type, m.content, m.version, m.platform, t.name, t.updated_at
                     FROM tags t JOIN repositories r ON r.id = t.repo_id
                     JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
                     WHERE r.name = ?1 ORDER BY t.name",
                )
                .and_then(|mut s| {
                    s.query_map([repo], |r| Ok((manifest_row(r)?, r.get::<_, String>(5)?, r.get::<_, i64>(6)?)))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db_err("reading tags"))?;
            rows.into_iter()
                .map(|(m, tag, updated_at)| {
                    Ok(TagDetail {
                        tag,
                        manifest: stored(m)?,
                        updated_at,
                    })
                })
                .collect()
        })
        .await
    }

    async fn tags_of(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<String>, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.read(move |c| match repo_id(c, &repo)? {
            Some(id) => Ok(target_of(c, id, &digest)?.tags),
            None => Ok(Vec::new()),
        })
        .await
    }

    async fn stored_bytes(&self) -> Result<(u64, u64), MetaError> {
        self.read(move |c| {
            c.query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM (SELECT max(size) AS size FROM blobs GROUP BY digest)",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(db_err("summing stored bytes"))
        })
        .await
    }

    async fn manifest_put_gated(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tags: &[Tag],
        guard: Option<Arc<dyn TagGuard>>,
        gate: &Gate,
    ) -> Result<GateOutcome, MetaError> {
        let repo = repo.to_string();
        let m = m.clone();
        let gate = gate.clone();
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        self.write(move |tx| {
            let id = ensure_repo(tx, &repo)?;
            let mut missing = Vec::new();
            // A mirrored manifest's references are fetched later, when pulled.
            if !m.mirrored {
                let mut has_blob = tx
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM blobs WHERE repo_id = ?1 AND digest = ?2)")
                    .map_err(db_err("checking references"))?;
                for b in &m.blobs {
                    let ok: bool = has_blob
                        .query_row(params![id, b.to_string()], |r| r.get(0))
                        .map_err(db_err("checking references"))?;
                    if !ok {
                        missing.push(b.clone());
                    }
                }
                let mut has_manifest = tx
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM manifests WHERE repo_id = ?1 AND digest = ?2)")
                    .map_err(db_err("checking references"))?;
                for c in &m.children {
                    let ok: bool = has_manifest
                        .query_row(params![id, c.to_string()], |r| r.get(0))
                        .map_err(db_err("checking references"))?;
                    if !ok {
                        missing.push(c.clone());
                    }
                }
            }
            if !missing.is_empty() {
                return Err(MetaError::MissingReferences(missing));
            }
            let digest = m.digest.to_string();
            let t = now();
            if let Some(g) = guard.as_ref().filter(|g| tags.iter().any(|t| g.concerns(t))) {
                let mut after = target_of(tx, id, &digest)?;
                after.version = m.version.clone().or(after.version);
                for name in &tags {
                    if !after.tags.contains(name) {
                        after.tags.push(name.clone());
                    }
                }
                after.tags.sort();
                let mut seen = HashMap::new();
                for name in tags.iter().filter(|t| g.concerns(t)) {
                    let current = tag_target(tx, id, name, &mut seen)?;
                    if current.as_ref().is_some_and(|c| c.digest == digest) {
                        continue;
                    }
                    g.check(&TagChange {
                        repo: repo.clone(),
                        tag: name.clone(),
                        current,
                        new: Some(after.clone()),
                    })
                    .map_err(MetaError::TagRefused)?;
                }
            }
            tx.prepare_cached(
                "INSERT INTO manifests (repo_id, digest, media_type, content, subject, artifact_type, annotations, created_at, version, platform)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (repo_id, digest) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    digest,
                    m.media_type,
                    &m.content[..],
                    m.subject.as_ref().map(|d| d.to_string()),
                    m.artifact_type,
                    m.annotations_json,
                    t,
                    m.version,
                    m.platform
                ])
            })
            .map_err(db_err("storing a manifest"))?;
            {
                let mut r = tx
                    .prepare_cached(
                        "INSERT INTO manifest_refs (repo_id, manifest, target, kind) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT DO NOTHING",
                    )
                    .map_err(db_err("storing manifest references"))?;
                for b in &m.blobs {
                    r.execute(params![id, digest, b.to_string(), 0])
                        .map_err(db_err("storing manifest references"))?;
                }
                for c in &m.children {
                    r.execute(params![id, digest, c.to_string(), 1])
                        .map_err(db_err("storing manifest references"))?;
                }
            }
            let mut outcome = GateOutcome::default();
            let hold = match &gate.hold_unless_signed_by {
                Some(keys) if !tags.is_empty() => !gate::signed_by(tx, id, &digest, keys)?,
                _ => false,
            };
            if hold {
                gate::hold(tx, id, &digest, &tags, t)?;
                outcome.held = tags;
            } else {
                set_tags(tx, id, &digest, &tags, t)?;
            }
            if let Some(record) = &gate.signs {
                gate::record(tx, id, &digest, record, t)?;
                let subject = record.subject.to_string();
                let (revealed, dropped) = gate::reveal(tx, &guard, &repo, id, &subject)?;
                set_tags(tx, id, &subject, &revealed, t)?;
                outcome.revealed = revealed;
                outcome.dropped = dropped;
            }
            Ok(outcome)
        })
        .await
    }

    async fn pending_tags(&self, repo: &RepoName) -> Result<Vec<PendingTag>, MetaError> {
        let repo = repo.to_string();
        self.read(move |c| match repo_id(c, &repo)? {
            Some(id) => gate::pending(c, id),
            None => Ok(Vec::new()),
        })
        .await
    }

    async fn recorded_signatures(
        &self,
        repo: &RepoName,
        subject: Option<&Digest>,
    ) -> Result<Vec<RecordedSignature>, MetaError> {
        let (repo, subject) = (repo.to_string(), subject.map(Digest::to_string));
        self.read(move |c| match repo_id(c, &repo)? {
            Some(id) => gate::signatures(c, id, subject.as_deref()),
            None => Ok(Vec::new()),
        })
        .await
    }

    async fn index_parents(
        &self,
        repo: &RepoName,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<Digest>, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(move |c| {
            let Some(id) = repo_id(c, &repo)? else {
                return Ok(Vec::new());
            };
            let rows: Vec<String> = c
                .prepare_cached(
                    "SELECT manifest FROM manifest_refs
                     WHERE repo_id = ?1 AND target = ?2 AND kind = 1 AND manifest <> ?2
                     ORDER BY manifest LIMIT ?3",
                )
                .and_then(|mut q| {
                    q.query_map(params![id, digest, limit], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()
                })
                .map_err(db_err("finding indexes of a manifest"))?;
            rows.into_iter().map(parse_digest).collect()
        })
        .await
    }

    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT m.digest, m.media_type, m.content, m.version, m.platform FROM manifests m
                 JOIN repositories r ON r.id = m.repo_id WHERE r.name = ?1 AND m.digest = ?2",
            )
            .and_then(|mut s| s.query_row([repo, digest], manifest_row).optional())
            .map_err(db_err("reading a manifest"))?
            .map(stored)
            .transpose()
        })
        .await
    }

    async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<StoredManifest>, MetaError> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT m.digest, m.media_type, m.content, m.version, m.platform FROM tags t
                 JOIN repositories r ON r.id = t.repo_id
                 JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
                 WHERE r.name = ?1 AND t.name = ?2",
            )
            .and_then(|mut s| s.query_row([repo, tag], manifest_row).optional())
            .map_err(db_err("reading a manifest"))?
            .map(stored)
            .transpose()
        })
        .await
    }

    async fn manifest_delete(
        &self,
        repo: &RepoName,
        digest: &Digest,
        guard: Option<Arc<dyn TagGuard>>,
    ) -> Result<bool, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo)? else {
                return Ok(false);
            };
            let holders: Vec<String> = tx
                .prepare_cached(
                    "SELECT manifest FROM manifest_refs
                     WHERE repo_id = ?1 AND target = ?2 AND kind = 1 AND manifest <> ?2
                     ORDER BY manifest LIMIT 10",
                )
                .and_then(|mut q| {
                    q.query_map(params![id, digest], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()
                })
                .map_err(db_err("checking indexes of a manifest"))?;
            if !holders.is_empty() {
                return Err(MetaError::ManifestInUse(holders));
            }
            let tags = target_of(tx, id, &digest)?.tags;
            check_deletions(tx, &guard, &repo, id, &tags)?;
            let n = tx
                .execute(
                    "DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2",
                    params![id, digest],
                )
                .map_err(db_err("deleting a manifest"))?;
            tx.execute(
                "DELETE FROM manifest_refs WHERE repo_id = ?1 AND manifest = ?2",
                params![id, digest],
            )
            .map_err(db_err("deleting a manifest"))?;
            tx.execute(
                "DELETE FROM tags WHERE repo_id = ?1 AND digest = ?2",
                params![id, digest],
            )
            .map_err(db_err("deleting a manifest"))?;
            gate::forget_manifest(tx, id, &digest)?;
            Ok(n > 0)
        })
        .await
    }

    async fn tag_delete(
        &self,
        repo: &RepoName,
        tag: &Tag,
        guard: Option<Arc<dyn TagGuard>>,
    ) -> Result<bool, MetaError> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.write(move |tx| {
            let Some(id) = repo_id(tx, &repo)? else {
                return Ok(false);
            };
            check_deletions(tx, &guard, &repo, id, std::slice::from_ref(&tag))?;
            if let Some(subject) = artifact_tags::legacy_subject(&tag) {
                gate::forget_legacy_tag(tx, id, &tag, &subject.to_string())?;
            }
            let n = tx
                .execute(
                    "DELETE FROM tags WHERE repo_id = ?1 AND name = ?2",
                    params![id, tag],
                )
                .map_err(db_err("deleting a tag"))?;
            let pending = gate::unhold(tx, id, &tag)?;
            Ok(n > 0 || pending)
        })
        .await
    }

    async fn tag_list(
        &self,
        repo: &RepoName,
        page: &Page,
        listing: TagListing,
    ) -> Result<Option<Vec<String>>, MetaError> {
        let repo = repo.to_string();
        let page = page.clone();
        let all = listing == TagListing::All;
        self.read(move |c| {
            let Some(id) = repo_id(c, &repo)? else {
                return Ok(None);
            };
            let last = page.last.clone().unwrap_or_default();
            c.prepare_cached(
                "SELECT name FROM tags WHERE repo_id = ?1 AND name > ?2 AND (?4 OR hidden = 0)
                 ORDER BY name LIMIT ?3",
            )
            .and_then(|mut s| {
                s.query_map(params![id, last, limit(&page), all], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()
            })
            .map(Some)
            .map_err(db_err("listing tags"))
        })
        .await
    }

    async fn repositories(&self, page: &Page) -> Result<Vec<String>, MetaError> {
        let page = page.clone();
        self.read(move |c| {
            let last = page.last.clone().unwrap_or_default();
            c.prepare_cached("SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2")
                .and_then(|mut s| {
                    s.query_map(params![last, limit(&page)], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()
                })
                .map_err(db_err("listing repositories"))
        })
        .await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, MetaError> {
        let (repo, subject) = (repo.to_string(), subject.to_string());
        let artifact_type = artifact_type.map(str::to_owned);
        self.read(move |c| {
            let Some(id) = repo_id(c, &repo)? else {
                return Ok(Vec::new());
            };
            // Manifests that name the subject, then those a cosign v2 tag of the subject
            // points at; UNION lists a manifest found both ways once.
            let rows = c
                .prepare_cached(
                    "SELECT m.digest, m.media_type, length(m.content), m.artifact_type, m.annotations, m.created_at
                     FROM manifests m
                     WHERE m.repo_id = ?1 AND m.subject = ?2 AND (?3 IS NULL OR m.artifact_type = ?3)
                     UNION
                     SELECT m.digest, m.media_type, length(m.content), m.artifact_type, m.annotations, m.created_at
                     FROM tags t JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
                     WHERE t.repo_id = ?1 AND t.subject = ?2 AND (?3 IS NULL OR m.artifact_type = ?3)
                     ORDER BY 6, 1",
                )
                .and_then(|mut s| {
                    s.query_map(params![id, subject, artifact_type], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, Option<String>>(4)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db_err("listing referrers"))?;
            rows.into_iter()
                .map(|(d, media_type, size, artifact_type, ann)| {
                    Ok(Referrer {
                        digest: parse_digest(d)?,
                        media_type,
                        size: size as u64,
                        artifact_type,
                        annotations_json: ann.unwrap_or_default(),
                    })
                })
                .collect()
        })
        .await
    }

    async fn upload_create(&self, id: &str, repo: &RepoName) -> Result<(), MetaError> {
        let (id, repo) = (id.to_owned(), repo.to_string());
        self.write_lazy(move |tx| {
            let t = now();
            tx.execute(
                "INSERT INTO uploads (id, repo, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                params![id, repo, t],
            )
            .map_err(db_err("registering an upload"))?;
            Ok(())
        })
        .await
    }

    async fn upload_touch(&self, id: &str) -> Result<Option<String>, MetaError> {
        let id = id.to_owned();
        // A read first: the common case needs no write when touched within the last second.
        let row: Option<(String, i64)> = {
            let id = id.clone();
            self.read(move |c| {
                c.prepare_cached("SELECT repo, updated_at FROM uploads WHERE id = ?1")
                    .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                    .map_err(db_err("reading an upload"))
            })
            .await?
        };
        let Some((repo, updated)) = row else {
            return Ok(None);
        };
        if now() - updated >= 1 {
            self.write_lazy(move |tx| {
                tx.execute(
                    "UPDATE uploads SET updated_at = ?2 WHERE id = ?1",
                    params![id, now()],
                )
                .map_err(db_err("touching an upload"))?;
                Ok(())
            })
            .await?;
        }
        Ok(Some(repo))
    }

    async fn upload_delete(&self, id: &str) -> Result<(), MetaError> {
        let id = id.to_owned();
        self.write_lazy(move |tx| {
            tx.execute("DELETE FROM uploads WHERE id = ?1", [id])
                .map_err(db_err("deleting an upload"))?;
            Ok(())
        })
        .await
    }

    async fn uploads_idle(&self, idle_secs: u64) -> Result<Vec<String>, MetaError> {
        let cutoff = now() - idle_secs.min(i64::MAX as u64) as i64;
        self.read(move |c| {
            c.prepare_cached("SELECT id FROM uploads WHERE updated_at <= ?1")
                .and_then(|mut s| {
                    s.query_map([cutoff], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()
                })
                .map_err(db_err("listing idle uploads"))
        })
        .await
    }

    async fn upload_ids(&self) -> Result<Vec<String>, MetaError> {
        self.read(move |c| {
            c.prepare_cached("SELECT id FROM uploads")
                .and_then(|mut s| {
                    s.query_map([], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()
                })
                .map_err(db_err("listing uploads"))
        })
        .await
    }

    async fn gc_unreferenced_links(
        &self,
        after: Option<&LinkCursor>,
        linked_before: i64,
        limit: usize,
    ) -> Result<Vec<Link>, MetaError> {
        let after = after.cloned();
        self.read(move |c| gc::unreferenced_links(c, after.as_ref(), linked_before, limit))
            .await
    }

    async fn gc_unlink(&self, links: &[Link], linked_before: i64) -> Result<Vec<Link>, MetaError> {
        let links = links.to_vec();
        self.write(move |tx| gc::unlink(tx, &links, linked_before))
            .await
    }

    async fn gc_tombstone(&self, digests: &[Digest]) -> Result<Vec<Digest>, MetaError> {
        let digests = digests.to_vec();
        let claims = self.inner.claims.clone();
        self.write(move |tx| gc::tombstone(tx, &claims, &digests))
            .await
    }

    async fn gc_deletions_done(&self, digests: &[Digest]) -> Result<(), MetaError> {
        let digests = digests.to_vec();
        // Lazy, as blob_deletion_done: a tombstone a power loss brings back goes stale.
        self.write_lazy(move |tx| gc::deletions_done(tx, &digests))
            .await
    }

    async fn gc_link_counts(&self, digests: &[Digest]) -> Result<Vec<u64>, MetaError> {
        let digests = digests.to_vec();
        self.read(move |c| gc::link_counts(c, &digests)).await
    }

    async fn gc_manifests(&self, repo: &RepoName) -> Result<Vec<ManifestNode>, MetaError> {
        let repo = repo.clone();
        self.read(move |c| gc::manifests(c, &repo)).await
    }

    async fn gc_delete_manifests(
        &self,
        repo: &RepoName,
        digests: &[Digest],
        created_before: i64,
    ) -> Result<Vec<Digest>, MetaError> {
        let (repo, digests) = (repo.clone(), digests.to_vec());
        self.write(move |tx| gc::delete_manifests(tx, &repo, &digests, created_before))
            .await
    }

    async fn gc_blob_holders(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobHolders>, MetaError> {
        let (repo, digest) = (repo.clone(), digest.clone());
        self.read(move |c| gc::blob_holders(c, &repo, &digest))
            .await
    }

    async fn image_layers_put(
        &self,
        repo: &RepoName,
        image: &ImageLayers,
    ) -> Result<Option<ImageBase>, MetaError> {
        let (repo, image) = (repo.to_string(), image.clone());
        self.write(move |tx| {
            let id = ensure_repo(tx, &repo)?;
            bases::put(tx, id, &image)
        })
        .await
    }

    async fn stale_images(&self) -> Result<Vec<StaleImage>, MetaError> {
        self.read(bases::stale).await
    }
}
